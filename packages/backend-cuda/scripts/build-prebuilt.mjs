#!/usr/bin/env node
// Builds the prebuilt binary of the platform package (@blocksparse/backend-cuda-linux-x64): machine code
// for sm_80, sm_86, sm_89 and sm_90a plus compute_90 PTX for newer GPUs, cudart linked statically, cuBLAS
// opened at run time. Needs nvcc and CMake (no GPU, no cuBLAS). Checks the result and removes its build folder.
//   node packages/backend-cuda/scripts/build-prebuilt.mjs           build into packages/backend-cuda-linux-x64/, then check it
//   node packages/backend-cuda/scripts/build-prebuilt.mjs --check   only check the binary (prepack): there, no CUDA library
//                                                                   linked, exactly the five targets above
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const scriptsDir = dirname(fileURLToPath(import.meta.url));
const platformDir = resolve(scriptsDir, "../../backend-cuda-linux-x64");
const binary = join(platformDir, "blocksparse_cuda.node");
const PREBUILT_ARCHITECTURES = "80-real;86-real;89-real;90a-real;90-virtual";
/** What the binary must hold, as cuobjdump names it: machine code (sm_) and PTX (compute_). */
const EXPECTED_TARGETS = ["compute_90", "sm_80", "sm_86", "sm_89", "sm_90a"];
const prefix = "@blocksparse/backend-cuda-linux-x64:";

function fail(line) {
  console.error(`${prefix} ${line}`);
  process.exit(1);
}

/**
 * The GPU targets embedded in an ELF file's .nv_fatbin section, named as cuobjdump names them; read
 * here so that the check needs no cuobjdump (not every nvcc install has it). A fatbin is a list of
 * containers (magic 0xBA55ED50, u16 version, u16 header size, u64 size), each a list of entries
 * (u16 kind: 1 PTX, 2 machine code; u32 header size at 4; u64 size at 8; u32 arch at 28; u64 flags at
 * 40, where 0x100000 marks an arch-specific "a" target).
 */
function fatbinTargets(file) {
  const bytes = readFileSync(file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const sectionsAt = Number(view.getBigUint64(0x28, true));
  const sectionSize = view.getUint16(0x3a, true);
  const sectionCount = view.getUint16(0x3c, true);
  const namesAt = Number(view.getBigUint64(sectionsAt + view.getUint16(0x3e, true) * sectionSize + 0x18, true));
  const targets = new Set();
  for (let index = 0; index < sectionCount; index++) {
    const header = sectionsAt + index * sectionSize;
    const nameAt = namesAt + view.getUint32(header, true);
    if (bytes.toString("latin1", nameAt, nameAt + 11) !== ".nv_fatbin\0") continue;
    const start = Number(view.getBigUint64(header + 0x18, true));
    const end = start + Number(view.getBigUint64(header + 0x20, true));
    for (let container = start; container + 16 <= end; ) {
      if (view.getUint32(container, true) !== 0xba55ed50) {
        container += 8; // containers are 8-byte aligned, with padding between them
        continue;
      }
      const entriesEnd = container + view.getUint16(container + 6, true) + Number(view.getBigUint64(container + 8, true));
      for (let entry = container + view.getUint16(container + 6, true); entry < entriesEnd; ) {
        const kind = view.getUint16(entry, true);
        const arch = view.getUint32(entry + 28, true);
        const specific = (view.getBigUint64(entry + 40, true) & 0x100000n) !== 0n ? "a" : "";
        targets.add(`${kind === 1 ? "compute" : "sm"}_${arch}${specific}`);
        entry += view.getUint32(entry + 4, true) + Number(view.getBigUint64(entry + 8, true));
      }
      container = entriesEnd;
    }
  }
  return [...targets].sort();
}

/** Fails unless the binary is there, links no CUDA library and holds exactly the expected GPU targets. */
function checkBinary() {
  if (!existsSync(binary)) fail("blocksparse_cuda.node is missing: build it with `node packages/backend-cuda/scripts/build-prebuilt.mjs` first");
  // It must need nothing from the toolkit at run time: no shared cudart, no cuBLAS link.
  const needed = spawnSync("readelf", ["-d", binary], { encoding: "utf8" }).stdout ?? "";
  const toolkitLibraries = [...needed.matchAll(/\(NEEDED\).*\[(lib(?:cudart|cublas|cublasLt)\.so[^\]]*)\]/g)].map((match) => match[1]);
  if (toolkitLibraries.length > 0) fail(`the binary links ${toolkitLibraries.join(", ")}; it must link cudart statically and open cuBLAS at run time`);
  const targets = fatbinTargets(binary);
  if (targets.join(" ") !== EXPECTED_TARGETS.join(" ")) fail(`the binary holds ${targets.join(", ") || "no GPU code"}; expected ${EXPECTED_TARGETS.join(", ")}`);
  console.log(`${prefix} ${(statSync(binary).size / 2 ** 20).toFixed(1)} MiB, holds ${targets.join(", ")}; links no CUDA library`);
}

function build() {
  if (process.platform !== "linux" || process.arch !== "x64") fail(`builds on linux-x64 only, this is ${process.platform}-${process.arch}`);
  const buildDir = mkdtempSync(join(tmpdir(), "blocksparse-prebuilt-"));
  try {
    const started = Date.now();
    console.log(`${prefix} compiling for ${PREBUILT_ARCHITECTURES} (several minutes; progress below)`);
    const compile = spawnSync(process.execPath, [join(scriptsDir, "build-native.mjs"), "--build-dir", buildDir], {
      stdio: "inherit",
      // --threads 0: nvcc compiles a file's five targets in parallel (CUDAFLAGS seeds the fresh build folder).
      env: { ...process.env, CMAKE_CUDA_ARCHITECTURES: PREBUILT_ARCHITECTURES, CUDAFLAGS: `${process.env.CUDAFLAGS ?? ""} --threads 0`.trim(), BLOCKSPARSE_SKIP_CUDA_BUILD: "" },
    });
    const built = join(buildDir, "Release", "blocksparse_cuda.node");
    if (compile.status !== 0 || !existsSync(built)) fail("the build failed (see above)");
    copyFileSync(built, binary);
    console.log(`${prefix} built in ${((Date.now() - started) / 1000).toFixed(0)} s: ${(statSync(binary).size / 2 ** 20).toFixed(1)} MiB`);
  } finally {
    rmSync(buildDir, { recursive: true, force: true });
  }
}

if (!process.argv.includes("--check")) build();
checkBinary();
