#!/usr/bin/env node
// Copies the addon's CMake project (kernels-cpu/: CMakeLists.txt, package.json and src/) into native/ so that the
// published package can build the addon on install. Runs on `prepack`; `postpack` removes the copy.
//   node scripts/vendor-native.mjs [outDir]   (default: native/ beside this package's package.json)
//   node scripts/vendor-native.mjs --clean    removes native/
import { cpSync, existsSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const sourceDir = resolve(packageDir, "../../kernels-cpu");
const defaultOut = join(packageDir, "native");

if (process.argv[2] === "--clean") {
  rmSync(defaultOut, { recursive: true, force: true });
  process.exit(0);
}
const outDir = resolve(process.argv[2] ?? defaultOut);
if (!existsSync(join(sourceDir, "CMakeLists.txt"))) {
  console.error(`@blocksparse/backend-cpu: kernels-cpu/ not found at ${sourceDir}; cannot vendor the native sources`);
  process.exit(1);
}
rmSync(outDir, { recursive: true, force: true });
cpSync(join(sourceDir, "CMakeLists.txt"), join(outDir, "CMakeLists.txt"));
// package.json declares the addon Node-API only, so cmake-js needs no Node headers download.
cpSync(join(sourceDir, "package.json"), join(outDir, "package.json"));
cpSync(join(sourceDir, "src"), join(outDir, "src"), { recursive: true });
console.log(`@blocksparse/backend-cpu: native sources copied to ${outDir}`);
