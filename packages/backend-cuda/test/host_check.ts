import { type SpawnSyncReturns, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

// The host checks of kernels-cuda/test/ (native logic with CUDA's calls replaced, or none needed): compiled by nvcc
// with kernels-cuda/src on the include path and run, wherever nvcc is, GPU or not.
const kernels = resolve(dirname(fileURLToPath(import.meta.url)), "../../../kernels-cuda");
export const nvcc = process.env.CUDACXX ?? (process.env.CUDA_HOME ? join(process.env.CUDA_HOME, "bin", "nvcc") : "nvcc");
export const nvccMissing = spawnSync(nvcc, ["--version"], { encoding: "utf8" }).status !== 0;

/** Compiles kernels-cuda/test/`source` (a .cpp compiled as CUDA) and runs it with `args`; the build's and run's results. */
export function buildAndRunHostCheck(
  source: string,
  args: string[],
): { build: SpawnSyncReturns<string>; run: SpawnSyncReturns<string> | undefined } {
  const dir = mkdtempSync(join(tmpdir(), "blocksparse-host-check-"));
  try {
    const binary = join(dir, basename(source, ".cpp"));
    const build = spawnSync(nvcc, ["-O2", "-std=c++17", "-x", "cu", "-I", join(kernels, "src"), join(kernels, "test", source), "-o", binary], {
      encoding: "utf8",
    });
    const run = build.status === 0 ? spawnSync(binary, args, { encoding: "utf8" }) : undefined;
    return { build, run };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Builds and runs kernels-cuda/test/`source` with `args`, expecting the build and the run to succeed and the run's
 * output to match `says` (by default the checks' "ok: N checks"). */
export function expectHostCheckPasses(source: string, args: string[] = [], says: RegExp = /^ok: \d+ checks/): void {
  const { build, run } = buildAndRunHostCheck(source, args);
  expect(build.status, build.stderr).toBe(0);
  expect(run?.status, `${run?.stdout}\n${run?.stderr}`).toBe(0);
  expect(run?.stdout).toMatch(says);
}
