import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

// The caching allocator's logic (kernels-cuda/src/memory.cpp) on the host, with CUDA's allocation calls replaced
// by the host heap (kernels-cuda/test/memory_host.cpp): it runs wherever nvcc is, GPU or not.
const kernels = resolve(dirname(fileURLToPath(import.meta.url)), "../../../kernels-cuda");
const nvcc = process.env.CUDACXX ?? (process.env.CUDA_HOME ? join(process.env.CUDA_HOME, "bin", "nvcc") : "nvcc");
const found = spawnSync(nvcc, ["--version"], { encoding: "utf8" });
const missing = found.status !== 0;
if (missing) console.log(`[allocator_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the allocator's host check`);

describe.skipIf(missing)("the caching allocator on the host (no GPU needed)", () => {
  test("random allocations, frees, graph pools and cache releases keep every invariant", () => {
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-allocator-"));
    try {
      const binary = join(dir, "memory_host");
      const build = spawnSync(nvcc, ["-O2", "-std=c++17", "-x", "cu", "-I", join(kernels, "src"), join(kernels, "test", "memory_host.cpp"), "-o", binary], {
        encoding: "utf8",
      });
      expect(build.status, build.stderr).toBe(0);
      const run = spawnSync(binary, ["20000"], { encoding: "utf8" });
      expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/^ok: 20000 steps, 0 segments/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
