import { describe, expect, test } from "vitest";
import { buildAndRunHostCheck, nvcc, nvccMissing } from "./host_check";

// The staged decoding variant's grid (kernels-cuda/src/tc/tc_kernels.h: decodeStagedRangesOf, decodeStagedGroupRows:
// the ranges of K and the block rows each CTA takes) on the host (kernels-cuda/test/decode_staged_host.cpp): it runs
// wherever nvcc is, GPU or not.
if (nvccMissing) console.log(`[decode_staged_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the grid's host check`);

describe.skipIf(nvccMissing)("the staged decoding variant's grid on the host (no GPU needed)", () => {
  test("ranges cover K once, groups fit the warps and cover the rows once, the largest group that fills the SMs", () => {
    const { build, run } = buildAndRunHostCheck("decode_staged_host.cpp", []);
    expect(build.status, build.stderr).toBe(0);
    expect(run?.status, `${run?.stdout}\n${run?.stderr}`).toBe(0);
    expect(run?.stdout).toMatch(/^ok: \d+ checks/);
  }, 180_000);
});
