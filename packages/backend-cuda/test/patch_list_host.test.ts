import { describe, test } from "vitest";
import { expectHostCheckPasses, nvcc, nvccMissing } from "./host_check";

// The dW patch tiles' records (kernels-cuda/src/tc/patch_list.h: the pair records the addon's bulk-copy patch tile
// reads, the block records of dev's mma.sync patch tile) checked on the host over random 32x32 patterns
// (kernels-cuda/test/patch_list_host.cpp): it runs wherever nvcc is, GPU or not.
if (nvccMissing) console.log(`[patch_list_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the records' host check`);

describe.skipIf(nvccMissing)("the dW patch tiles' records on the host (no GPU needed)", () => {
  test("every block in exactly one record at its place, every slice a product reads inside the record's stage", () => {
    expectHostCheckPasses("patch_list_host.cpp");
  }, 180_000);
});
