#!/usr/bin/env node
// Builds the prebuilt binary of the platform package (@blocksparse/backend-cuda-linux-x64): machine code
// for sm_80, sm_86, sm_89 and sm_90a plus compute_90 PTX for newer GPUs, cudart linked statically, cuBLAS
// opened at run time. Needs nvcc and CMake (no GPU, no cuBLAS). Checks the result and removes its build folder.
//   node packages/backend-cuda/scripts/build-prebuilt.mjs           build into packages/backend-cuda-linux-x64/
//   node packages/backend-cuda/scripts/build-prebuilt.mjs --check   only check the binary is there (prepack)
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const scriptsDir = dirname(fileURLToPath(import.meta.url));
const platformDir = resolve(scriptsDir, "../../backend-cuda-linux-x64");
const binary = join(platformDir, "blocksparse_cuda.node");
export const PREBUILT_ARCHITECTURES = "80-real;86-real;89-real;90a-real;90-virtual";
const prefix = "@blocksparse/backend-cuda-linux-x64:";

function fail(line) {
  console.error(`${prefix} ${line}`);
  process.exit(1);
}

if (process.argv.includes("--check")) {
  if (!existsSync(binary)) fail("blocksparse_cuda.node is missing: build it with `node packages/backend-cuda/scripts/build-prebuilt.mjs` first");
  process.exit(0);
}
if (process.platform !== "linux" || process.arch !== "x64") fail(`builds on linux-x64 only, this is ${process.platform}-${process.arch}`);

const buildDir = mkdtempSync(join(tmpdir(), "blocksparse-prebuilt-"));
try {
  const started = Date.now();
  console.log(`${prefix} compiling for ${PREBUILT_ARCHITECTURES} (several minutes; progress below)`);
  const build = spawnSync(process.execPath, [join(scriptsDir, "build-native.mjs"), "--build-dir", buildDir], {
    stdio: "inherit",
    env: { ...process.env, CMAKE_CUDA_ARCHITECTURES: PREBUILT_ARCHITECTURES, BLOCKSPARSE_SKIP_CUDA_BUILD: "" },
  });
  const built = join(buildDir, "Release", "blocksparse_cuda.node");
  if (build.status !== 0 || !existsSync(built)) fail("the build failed (see above)");
  copyFileSync(built, binary);
  console.log(`${prefix} built in ${((Date.now() - started) / 1000).toFixed(0)} s: ${(statSync(binary).size / 2 ** 20).toFixed(1)} MiB`);
} finally {
  rmSync(buildDir, { recursive: true, force: true });
}

// The binary must need nothing from the toolkit at run time: no shared cudart, no cuBLAS link.
const needed = spawnSync("readelf", ["-d", binary], { encoding: "utf8" }).stdout ?? "";
const toolkitLibraries = [...needed.matchAll(/\(NEEDED\).*\[(lib(?:cudart|cublas|cublasLt)\.so[^\]]*)\]/g)].map((match) => match[1]);
if (toolkitLibraries.length > 0) fail(`the binary links ${toolkitLibraries.join(", ")}; it must link cudart statically and open cuBLAS at run time`);
// Every architecture is in it (cuobjdump comes with nvcc).
const listing = spawnSync("cuobjdump", ["--list-elf", "--list-ptx", binary], { encoding: "utf8" });
if (listing.status === 0) {
  for (const arch of ["sm_80", "sm_86", "sm_89", "sm_90a"]) if (!listing.stdout.includes(`.${arch}.`)) fail(`no ${arch} machine code in the binary`);
  if (!/compute_90\b|sm_90\.ptx/.test(listing.stdout)) fail("no compute_90 PTX in the binary");
  console.log(`${prefix} holds sm_80, sm_86, sm_89, sm_90a machine code and compute_90 PTX; no shared CUDA library needed`);
} else {
  console.log(`${prefix} cuobjdump not found: architectures not listed`);
}
