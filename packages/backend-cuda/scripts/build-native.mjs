#!/usr/bin/env node
// Builds the CUDA addon (kernels-cuda/) with cmake-js when nvcc is available; never downloads anything.
//   node scripts/build-native.mjs            build: skips without nvcc, FAILS if nvcc is there and the build fails
//   node scripts/build-native.mjs --install  install: skips without nvcc, and a failed build only warns
// BLOCKSPARSE_SKIP_CUDA_BUILD=1 skips it; CUDAARCHS / CMAKE_CUDA_ARCHITECTURES pick the GPU architectures.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// The workspace's kernels-cuda/, or the copy a published package carries in native/.
const projectDir = [resolve(packageDir, "../../kernels-cuda"), join(packageDir, "native")].find((dir) =>
  existsSync(join(dir, "CMakeLists.txt")),
);
const installMode = process.argv.includes("--install");
const prefix = "@blocksparse/backend-cuda:";

function say(line) {
  console.log(`${prefix} ${line}`);
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

function findNvcc() {
  if (process.env.CUDACXX && existsSync(process.env.CUDACXX)) return process.env.CUDACXX;
  const found = onPath("nvcc");
  if (found) return found;
  for (const root of [process.env.CUDA_PATH, process.env.CUDA_HOME, "/usr/local/cuda"]) {
    if (root && existsSync(join(root, "bin", "nvcc"))) return join(root, "bin", "nvcc");
  }
  return null;
}

function main() {
  if (process.env.BLOCKSPARSE_SKIP_CUDA_BUILD === "1") {
    say("BLOCKSPARSE_SKIP_CUDA_BUILD=1, CUDA addon not built (the js backend will be used)");
    return 0;
  }
  const nvcc = findNvcc();
  if (!nvcc) {
    say("nvcc not found, CUDA addon not built (the js backend will be used)");
    return 0;
  }
  if (!projectDir) {
    say("neither kernels-cuda/ nor native/ sources beside this package, CUDA addon not built");
    return 0;
  }
  if (!onPath("cmake")) {
    say("nvcc found but CMake is not on PATH: install CMake >= 3.24 to build the CUDA addon");
    return installMode ? 0 : 1;
  }
  const require = createRequire(join(packageDir, "package.json"));
  const cmakeJs = join(dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
  const nodeAddonApi = dirname(require.resolve("node-addon-api/package.json"));
  const common = [
    "--log-level",
    "warn",
    "--directory",
    projectDir,
    "--out",
    join(projectDir, "build"),
    `--CDNODE_ADDON_API_DIR=${nodeAddonApi}`,
    `--CDCMAKE_CUDA_COMPILER=${nvcc}`,
  ];
  if (process.env.CMAKE_CUDA_ARCHITECTURES) common.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.CMAKE_CUDA_ARCHITECTURES}`);
  say(`building the CUDA addon with ${nvcc}`);
  // Configure every time (fast when nothing changed) so that changed options reach the cache; the
  // build itself is incremental.
  const run = (command, extra = []) =>
    spawnSync(process.execPath, [cmakeJs, command, ...common, ...extra], { stdio: "inherit" }).status;
  const status = run("configure") || run("build", ["--parallel", String(availableParallelism())]);
  if (status === 0) return 0;
  if (installMode) {
    say("the CUDA addon failed to build (see above); the js backend will be used. `pnpm build` retries and fails loudly");
    return 0;
  }
  say("the CUDA addon failed to build");
  return status ?? 1;
}

process.exit(main());
