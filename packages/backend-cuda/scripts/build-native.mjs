#!/usr/bin/env node
// Builds the CUDA addon (kernels-cuda/) with cmake-js when nvcc is available; never downloads anything.
//   node scripts/build-native.mjs            build: skips without nvcc, FAILS if nvcc is there and the build fails
//   node scripts/build-native.mjs --build-dir DIR   build in DIR (kept) instead of <sources>/build
//   node scripts/build-native.mjs --install  install: skips when the prebuilt platform package is there, without
//                                            nvcc, or without an NVIDIA driver; a failed build only warns
// BLOCKSPARSE_SKIP_CUDA_BUILD=1 skips it; BLOCKSPARSE_FORCE_CUDA_BUILD=1 builds on install even with a prebuilt
// binary or no driver; CUDAARCHS / CMAKE_CUDA_ARCHITECTURES pick the GPU architectures.
// An installed package builds in native/build, keeps native/blocksparse_cuda.node and removes the build folder.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ptxasNotes } from "./ptxas-notes.mjs";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// The workspace's kernels-cuda/, or the copy a published package carries in native/.
const projectDir = [resolve(packageDir, "../../kernels-cuda"), join(packageDir, "native")].find((dir) =>
  existsSync(join(dir, "CMakeLists.txt")),
);
const installMode = process.argv.includes("--install");
const forced = process.env.BLOCKSPARSE_FORCE_CUDA_BUILD === "1";
const prefix = "@blocksparse/backend-cuda:";
const ADDON_FILE = "blocksparse_cuda.node";
const PLATFORM_PACKAGE = `@blocksparse/backend-cuda-${process.platform}-${process.arch}`;

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

/** Whether an NVIDIA driver is installed: its tool, its kernel module or libcuda. */
function driverPresent() {
  if (onPath("nvidia-smi") || existsSync("/proc/driver/nvidia/version")) return true;
  const libraryDirs = [...(process.env.LD_LIBRARY_PATH ?? "").split(delimiter), "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/lib/wsl/lib"];
  return libraryDirs.some((dir) => dir && existsSync(join(dir, "libcuda.so.1")));
}

/** The prebuilt binary of the optional platform package, when npm or pnpm installed it. */
function prebuiltBinary() {
  try {
    const manifest = createRequire(join(packageDir, "package.json")).resolve(`${PLATFORM_PACKAGE}/package.json`);
    const binary = join(dirname(manifest), ADDON_FILE);
    return existsSync(binary) ? binary : null;
  } catch {
    return null;
  }
}

/** Runs cmake-js, its output passed through as it comes and kept: the exit status and the output. */
function runCmakeJs(args) {
  return new Promise((done) => {
    const child = spawn(process.execPath, args, { stdio: ["inherit", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk) => {
      process.stdout.write(chunk);
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      process.stderr.write(chunk);
      output += chunk;
    });
    child.on("error", (error) => done({ status: 1, output: `${output}${error.message}` }));
    child.on("close", (status) => done({ status: status ?? 1, output }));
  });
}

/** Every file under a folder (none if it is missing). */
function filesUnder(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath ?? entry.path, entry.name));
}

/** A mangled kernel name demangled by c++filt where it is on PATH. */
function demangle(name) {
  const filt = onPath("c++filt");
  if (!filt) return name;
  const result = spawnSync(filt, [name], { encoding: "utf8" });
  return result.status === 0 ? result.stdout.trim() : name;
}

async function main() {
  if (process.env.BLOCKSPARSE_SKIP_CUDA_BUILD === "1") {
    say("BLOCKSPARSE_SKIP_CUDA_BUILD=1, CUDA addon not built (the js backend will be used)");
    return 0;
  }
  if (installMode && !forced && prebuiltBinary()) {
    say(`using the prebuilt binary from ${PLATFORM_PACKAGE}; nothing to compile (BLOCKSPARSE_FORCE_CUDA_BUILD=1 builds from source)`);
    return 0;
  }
  if (installMode && !forced && !driverPresent()) {
    say("no NVIDIA driver here (no nvidia-smi, no libcuda): CUDA addon not built, the js backend will be used (BLOCKSPARSE_FORCE_CUDA_BUILD=1 builds anyway)");
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
  const buildDirFlag = process.argv.indexOf("--build-dir");
  const buildDir = buildDirFlag > 0 ? resolve(process.argv[buildDirFlag + 1]) : join(projectDir, "build");
  // A published package keeps only the binary: the build folder is tens of megabytes.
  const vendored = projectDir === join(packageDir, "native") && buildDirFlag < 0;
  const common = [
    "--log-level",
    "warn",
    "--directory",
    projectDir,
    "--out",
    buildDir,
    `--CDNODE_ADDON_API_DIR=${nodeAddonApi}`,
    `--CDCMAKE_CUDA_COMPILER=${nvcc}`,
  ];
  if (process.env.CMAKE_CUDA_ARCHITECTURES) common.push(`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.CMAKE_CUDA_ARCHITECTURES}`);
  say(`compiling the CUDA addon with ${nvcc} for ${process.env.CMAKE_CUDA_ARCHITECTURES ?? process.env.CUDAARCHS ?? "sm_80 and sm_90a"}; about a minute, progress below`);
  // Configure every time (fast when nothing changed) so that changed options reach the cache; the
  // build itself is incremental.
  const run = (command, extra = []) => runCmakeJs([cmakeJs, command, ...common, ...extra]);
  const started = Date.now();
  const configured = await run("configure");
  const built = configured.status === 0 ? await run("build", ["--parallel", String(availableParallelism())]) : configured;
  let status = built.status;
  const notes = ptxasNotes(built.output);
  if (notes.length > 0) {
    for (const note of notes) {
      const kernel = note.kernel ? `${demangle(note.kernel).replace(/\([^()]*\)$/, "")}: ` : "";
      say(`ptxas ${note.code}: ${kernel}${note.text.replace(/^Potential Performance Loss: /, "").replace(/ in the function '[^']+'/, "")}`);
    }
    // A kernel that lost its overlap still runs, so a user's install keeps it; a developer's build stops here, and
    // drops the addon and the CUDA objects so that the next build compiles (and reports) them again.
    if (!installMode && status === 0) {
      say(
        `ptxas found ${notes.length === 1 ? "a kernel" : `${notes.length} kernels`} losing the wgmma overlap it was written for (above): fix ${notes.length === 1 ? "it" : "them"} before this build is used (docs/kernels.md, "What limits it now", says what raised these before)`,
      );
      for (const file of filesUnder(buildDir)) if (file.endsWith(".cu.o") || file.endsWith(ADDON_FILE)) rmSync(file, { force: true });
      status = 1;
    }
  }
  if (status === 0) {
    if (vendored) {
      copyFileSync(join(buildDir, "Release", ADDON_FILE), join(projectDir, ADDON_FILE));
      rmSync(buildDir, { recursive: true, force: true });
    }
    say(`CUDA addon built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return 0;
  }
  if (vendored) rmSync(buildDir, { recursive: true, force: true });
  if (installMode) {
    say("the CUDA addon failed to build (see above); the js backend will be used. `npm rebuild @blocksparse/backend-cuda --foreground-scripts` retries and shows why");
    return 0;
  }
  say("the CUDA addon failed to build");
  return status ?? 1;
}

process.exit(await main());
