import { describe, test } from "vitest";
import { expectHostCheckPasses, nvcc, nvccMissing } from "./host_check";

// The caching allocator's logic (kernels-cuda/src/memory.cpp) on the host, with CUDA's allocation calls replaced
// by the host heap (kernels-cuda/test/memory_host.cpp): it runs wherever nvcc is, GPU or not.
if (nvccMissing) console.log(`[allocator_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the allocator's host check`);

describe.skipIf(nvccMissing)("the caching allocator on the host (no GPU needed)", () => {
  test("random allocations, frees, graph pools and cache releases keep every invariant", () => {
    expectHostCheckPasses("memory_host.cpp", ["20000"], /^ok: 20000 steps, 0 segments/);
  }, 180_000);
});
