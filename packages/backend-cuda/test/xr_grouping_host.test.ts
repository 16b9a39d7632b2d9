import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

// The X-resident tile's line grouping (kernels-cuda/src/tc/tc_kernels.h, xResidentGroupLines: how many block rows or
// columns each CTA takes, by a model of its waves) on the host (kernels-cuda/test/xr_grouping_host.cpp): it runs
// wherever nvcc is, GPU or not.
const kernels = resolve(dirname(fileURLToPath(import.meta.url)), "../../../kernels-cuda");
const nvcc = process.env.CUDACXX ?? (process.env.CUDA_HOME ? join(process.env.CUDA_HOME, "bin", "nvcc") : "nvcc");
const found = spawnSync(nvcc, ["--version"], { encoding: "utf8" });
const missing = found.status !== 0;
if (missing) console.log(`[xr_grouping_host.test.ts] skipped: nvcc was not found (${nvcc}); it compiles the grouping's host check`);

describe.skipIf(missing)("the X-resident tile's line grouping on the host (no GPU needed)", () => {
  test("every group size is valid, none cheaper under the wave model, the H200's measured cases as chosen", () => {
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-xr-grouping-"));
    try {
      const binary = join(dir, "xr_grouping_host");
      const build = spawnSync(nvcc, ["-O2", "-std=c++17", "-x", "cu", "-I", join(kernels, "src"), join(kernels, "test", "xr_grouping_host.cpp"), "-o", binary], {
        encoding: "utf8",
      });
      expect(build.status, build.stderr).toBe(0);
      const run = spawnSync(binary, [], { encoding: "utf8" });
      expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/^ok: \d+ checks/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
