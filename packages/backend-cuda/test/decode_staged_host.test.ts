import { describe, test } from "vitest";
import { expectHostCheckPasses, nvcc, nvccMissing } from "./host_check";

// The staged decoding variant's grid (kernels-cuda/src/tc/tc_kernels.h: decodeStagedRangesOf, decodeStagedGroupRows,
// decodeStagedWarps: the ranges of K, the block rows each CTA takes and its warps), the default rule that takes it
// (decodeStagedTakes) and the row order of dev's kernel of rows in pairs (bsr_pattern.h), on the host
// (kernels-cuda/test/decode_staged_host.cpp): it runs wherever nvcc is, GPU or not.
if (nvccMissing) console.log(`[decode_staged_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the grid's host check`);

describe.skipIf(nvccMissing)("the staged decoding variant's grid on the host (no GPU needed)", () => {
  test("ranges cover K once, groups cover the rows once in one wave with the fewest rows, a warp per slice up to the cap, the rule at its density bound (and the pairs' row order)", () => {
    expectHostCheckPasses("decode_staged_host.cpp");
  }, 180_000);
});
