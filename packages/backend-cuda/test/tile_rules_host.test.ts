import { describe, test } from "vitest";
import { expectHostCheckPasses, nvcc, nvccMissing } from "./host_check";

// The tile rules that take counts only (kernels-cuda/src/tc/tc_kernels.h: persistentTileRule, pingPong3ForwardTileRule)
// on the host (kernels-cuda/test/tile_rules_host.cpp): it runs wherever nvcc is, GPU or not.
if (nvccMissing) console.log(`[tile_rules_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the rules' host check`);

describe.skipIf(nvccMissing)("the wgmma tile rules on the host (no GPU needed)", () => {
  test("each rule's bounds where tc_kernels.h sets them, and the H100's measured cases as the measurements chose", () => {
    expectHostCheckPasses("tile_rules_host.cpp");
  }, 180_000);
});
