import { BsrPattern, IndexError, ShapeError, ValueError, matmul, ones, setBackend } from "@blocksparse/core";
import { cpuBackend, cpuThreads, defaultCpuThreads, nativeCompute, setCpuIsa, setCpuThreads } from "../src/index";
import type { NativeIsa } from "../src/native";
import { afterEach, describe, expect, it } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("settings.test.ts");

describe.skipIf(cpuMissing)("thread count and instruction set", () => {
  const saved = process.env.BLOCKSPARSE_CPU_THREADS;
  afterEach(() => {
    if (saved === undefined) delete process.env.BLOCKSPARSE_CPU_THREADS;
    else process.env.BLOCKSPARSE_CPU_THREADS = saved;
    setCpuThreads();
  });

  it("resizes the pool, and work posted right after a resize runs on every new thread", () => {
    setBackend("cpu");
    for (const threads of [1, 4, 2, 7, 3]) {
      expect(setCpuThreads(threads)).toBe(threads);
      expect(cpuThreads()).toBe(threads);
      // Many small products right after the resize: a worker that missed its first job would hang here.
      for (let i = 0; i < 20; i++) expect(matmul(ones([64, 64]), ones([64, 64])).dataSync()[0]).toBe(64);
    }
  });

  it("defaults to BLOCKSPARSE_CPU_THREADS, and rejects a bad count", () => {
    process.env.BLOCKSPARSE_CPU_THREADS = "3";
    expect(defaultCpuThreads()).toBe(3);
    expect(setCpuThreads()).toBe(3);
    process.env.BLOCKSPARSE_CPU_THREADS = "two";
    expect(() => defaultCpuThreads()).toThrow(ValueError);
    expect(() => setCpuThreads(0)).toThrow(/threads must be an integer/);
    expect(() => setCpuThreads(1.5)).toThrow(ValueError);
  });

  it("rejects an instruction set it does not know", () => {
    expect(() => setCpuIsa("sse9" as NativeIsa)).toThrow(/isa must be one of/);
    expect(cpuBackend().build.isa).toMatch(/^(avx512|avx2|scalar)$/);
  });
});

describe.skipIf(cpuMissing)("the addon checks its arguments before any kernel runs", () => {
  const index = { rows: 64, cols: 64, blockHeight: 32, blockWidth: 32 };
  const pattern = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 1, seed: 1 });
  const rowWise = { ...index, blockRowPtr: pattern.blockRowPtr, blockColIdx: pattern.blockColIdx };
  const compute = () => nativeCompute(cpuBackend().addon);

  it("short arrays are a ShapeError naming the argument", () => {
    const a = new Float32Array(6);
    expect(() => compute().matmulF32({ a, b: new Float32Array(5), c: new Float32Array(4), m: 2, n: 2, k: 3 })).toThrow(ShapeError);
    expect(() => compute().matmulF32({ a, b: new Float32Array(6), c: new Float32Array(4), cOffset: 1, m: 2, n: 2, k: 3 })).toThrow(/c has 4 elements, needs 5/);
    const values = new Float32Array(4 * 32 * 32);
    expect(() => compute().bsrLinearF32({ ...rowWise, x: new Float32Array(64), values, y: new Float32Array(63), tokens: 1 })).toThrow(/y has 63 elements/);
    expect(() =>
      compute().bsrMatmulF32({ ...index, ...pattern.columnIndex, dy: new Float32Array(64), values: values.subarray(1), dx: new Float32Array(64), tokens: 1 }),
    ).toThrow(/values/);
    expect(() => compute().sampledMatmulF32({ ...rowWise, dy: new Float32Array(64), x: new Float32Array(64), dw: new Float32Array(10), tokens: 1 })).toThrow(/dw/);
  });

  it("an index out of range is an IndexError, a wrong type or an unsupported option a ValueError", () => {
    // Index arrays as a corrupted pattern would hold them (BsrPattern itself refuses to build one).
    const corrupt = { ...index, blockRowPtr: Int32Array.of(0, 1, 2), blockColIdx: Int32Array.of(0, 2) };
    const linear = () => compute().bsrLinearF32({ ...corrupt, x: new Float32Array(64), values: new Float32Array(2048), y: new Float32Array(64), tokens: 1 });
    expect(linear).toThrow(IndexError);
    expect(linear).toThrow(/blockColIdx\[1\] = 2 is outside \[0, 2\)/);
    const wrongType = new Float64Array(4) as unknown as Float32Array;
    expect(() => compute().matmulF32({ a: wrongType, b: new Float32Array(4), c: new Float32Array(4), m: 2, n: 2, k: 2 })).toThrow(ValueError);
    expect(() => compute().matmulF32({ a: wrongType, b: new Float32Array(4), c: new Float32Array(4), m: 2, n: 2, k: 2 })).toThrow(/a must be a Float32Array/);
    expect(() => compute().matmulF32({ a: new Float32Array(4), b: new Float32Array(4), c: new Float32Array(4), m: 2, n: 2, k: 2, accumulate: true })).toThrow(/accumulate/);
  });
});
