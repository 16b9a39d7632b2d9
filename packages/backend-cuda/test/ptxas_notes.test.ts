import { describe, expect, it } from "vitest";
import { ptxasNotes as notes } from "../scripts/ptxas-notes.mjs";

// Lines as ptxas 13.0 prints them while building the addon (kernel names shortened).
const serialized =
  "ptxas info    : (C7514) Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma instructions reading accumulator registers of  a wgmma between start and end of the pipeline stage in the function '_ZN2bs2tc4sm9011bsrXrKernelILi32EEEvv'";
const divergent =
  "ptxas info    : (C7518) Potential Performance Loss: wgmma.mma_async instructions are serialized due to program dependence on compiler-inserted WG.DP in divergent path in the function '_ZN2bs2tc4sm9011bsrXrKernelILi64EEEvv'";
const ordinary = [
  "ptxas info    : Compiling entry function '_ZN2bs2tc4sm9011bsrXrKernelILi32EEEvv' for 'sm_90a'",
  "ptxas info    : Function properties for _ZN2bs2tc4sm9011bsrXrKernelILi32EEEvv",
  "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads",
  "ptxas info    : Used 72 registers, used 1 barriers",
  "[17/20] Building CUDA object CMakeFiles/blocksparse_cuda.dir/src/tc/bsr_wgmma_xr.cu.o",
];

describe("ptxas's notes on kernels that lose their wgmma overlap (build-native.mjs fails a developer's build on them)", () => {
  it("finds each note with its code and kernel among the build's other output", () => {
    const found = notes([ordinary[0], serialized, ...ordinary.slice(1), divergent].join("\n"));
    expect(found.map((note) => note.code)).toEqual(["C7514", "C7518"]);
    expect(found[0]?.kernel).toBe("_ZN2bs2tc4sm9011bsrXrKernelILi32EEEvv");
    expect(found[1]?.kernel).toBe("_ZN2bs2tc4sm9011bsrXrKernelILi64EEEvv");
    expect(found[1]?.text).toContain("divergent path");
  });

  it("reports a note once however often the build prints it (one per architecture or source including it)", () => {
    expect(notes([serialized, serialized, divergent, serialized].join("\r\n"))).toHaveLength(2);
  });

  it("finds nothing in a clean build's output", () => {
    expect(notes(ordinary.join("\n"))).toEqual([]);
    expect(notes("")).toEqual([]);
  });

  it("keeps a note that names no function", () => {
    const found = notes("ptxas warning : (C7508) Potential Performance Loss: setmaxnreg ignored; unable to determine register count at entry");
    expect(found).toEqual([{ code: "C7508", text: "Potential Performance Loss: setmaxnreg ignored; unable to determine register count at entry", kernel: null }]);
  });
});
