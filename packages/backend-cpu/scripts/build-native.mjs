#!/usr/bin/env node
// Builds the CPU addon (kernels-cpu/) with cmake-js when a C++ compiler and CMake are available;
// never downloads anything.
//   node scripts/build-native.mjs            build: skips without a compiler, FAILS if one is there and the build fails
//   node scripts/build-native.mjs --install  install: skips without a compiler, and a failed build only warns
// BLOCKSPARSE_SKIP_CPU_BUILD=1 skips it; CXX picks the compiler.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { delimiter, dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// The workspace's kernels-cpu/, or the copy a published package carries in native/.
const projectDir = [resolve(packageDir, "../../kernels-cpu"), join(packageDir, "native")].find((dir) =>
  existsSync(join(dir, "CMakeLists.txt")),
);
const installMode = process.argv.includes("--install");

function say(line) {
  console.log(`@blocksparse/backend-cpu: ${line}`);
}

function onPath(name) {
  if (isAbsolute(name)) return existsSync(name) ? name : null;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

function findCompiler() {
  const names = process.env.CXX ? [process.env.CXX] : ["c++", "g++", "clang++"];
  for (const name of names) {
    const found = onPath(name);
    if (found) return found;
  }
  return null;
}

function main() {
  if (process.env.BLOCKSPARSE_SKIP_CPU_BUILD === "1") {
    say("BLOCKSPARSE_SKIP_CPU_BUILD=1, CPU addon not built (the js backend will be used)");
    return 0;
  }
  if (!projectDir) {
    say("neither kernels-cpu/ nor native/ sources beside this package, CPU addon not built (the js backend will be used)");
    return 0;
  }
  const compiler = findCompiler();
  const cmake = onPath("cmake");
  if (!compiler || !cmake) {
    const missing = [compiler ? null : "a C++17 compiler", cmake ? null : "CMake >= 3.18"].filter(Boolean).join(" and ");
    say(`${missing} not found, CPU addon not built (the js backend will be used)`);
    return 0;
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
    `--CDCMAKE_CXX_COMPILER=${compiler}`,
  ];
  say(`building the CPU addon with ${compiler}`);
  // Configure every time (fast when nothing changed) so that changed options reach the cache; the
  // build itself is incremental.
  const run = (command, extra = []) =>
    spawnSync(process.execPath, [cmakeJs, command, ...common, ...extra], { stdio: "inherit" }).status;
  const status = run("configure") || run("build", ["--parallel", String(availableParallelism())]);
  if (status === 0) return 0;
  if (installMode) {
    say("the CPU addon failed to build (see above); the js backend will be used. `pnpm build` retries and fails loudly");
    return 0;
  }
  say("the CPU addon failed to build");
  return status ?? 1;
}

process.exit(main());
