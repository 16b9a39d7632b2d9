#!/usr/bin/env node
// Copies a native addon's CMake project (CMakeLists.txt, package.json and src/, Python helpers left out) into
// native/ of the package being packed, so that the published package can build the addon on install. Run
// from the package's folder on `prepack`; `postpack` removes the copy.
//   node ../../scripts/vendor-native.mjs kernels-cuda [outDir]   (default: ./native)
//   node ../../scripts/vendor-native.mjs --clean                 removes ./native
import { cpSync, existsSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const packageDir = process.cwd();
const defaultOut = join(packageDir, "native");

if (process.argv[2] === "--clean") {
  rmSync(defaultOut, { recursive: true, force: true });
  process.exit(0);
}
const { name } = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8"));
const project = process.argv[2];
if (!project) {
  console.error(`${name}: vendor-native needs the addon's project folder (e.g. kernels-cuda)`);
  process.exit(2);
}
const sourceDir = resolve(repoRoot, project);
if (!existsSync(join(sourceDir, "CMakeLists.txt"))) {
  console.error(`${name}: ${project}/ not found at ${sourceDir}; cannot vendor the native sources`);
  process.exit(1);
}
const outDir = resolve(process.argv[3] ?? defaultOut);
rmSync(outDir, { recursive: true, force: true });
cpSync(join(sourceDir, "CMakeLists.txt"), join(outDir, "CMakeLists.txt"));
// package.json declares the addon Node-API only, so cmake-js needs no Node headers download.
cpSync(join(sourceDir, "package.json"), join(outDir, "package.json"));
cpSync(join(sourceDir, "src"), join(outDir, "src"), { recursive: true, filter: (path) => !path.endsWith(".py") });
console.log(`${name}: native sources copied to ${outDir}`);
