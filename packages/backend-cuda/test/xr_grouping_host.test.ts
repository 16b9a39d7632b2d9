import { describe, test } from "vitest";
import { expectHostCheckPasses, nvcc, nvccMissing } from "./host_check";

// The X-resident tile's line grouping (kernels-cuda/src/tc/tc_kernels.h, xResidentGroupLines: how many block rows or
// columns each CTA takes, by a model of its waves) on the host (kernels-cuda/test/xr_grouping_host.cpp): it runs
// wherever nvcc is, GPU or not.
if (nvccMissing) console.log(`[xr_grouping_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the grouping's host check`);

describe.skipIf(nvccMissing)("the X-resident tile's line grouping on the host (no GPU needed)", () => {
  test("every group size is valid, none cheaper under the wave model, the H200's measured cases as chosen", () => {
    expectHostCheckPasses("xr_grouping_host.cpp");
  }, 180_000);
});
