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
  const pattern = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 1, seed: 1 });
  const compute = () => nativeCompute(cpuBackend().addon);

  it("short arrays are a ShapeError naming the argument", () => {
    const a = new Float32Array(6);
    expect(() => compute().matmulF32(a, 0, new Float32Array(5), 0, new Float32Array(4), 0, 2, 2, 3, false, false)).toThrow(ShapeError);
    expect(() => compute().matmulF32(a, 0, new Float32Array(6), 0, new Float32Array(4), 1, 2, 2, 3, false, false)).toThrow(/c has 4 elements, needs 5/);
    const values = new Float32Array(4 * 32 * 32);
    expect(() => compute().bsrLinearF32(new Float32Array(64), values, null, new Float32Array(63), 1, pattern)).toThrow(/y has 63 elements/);
    expect(() => compute().bsrMatmulF32(new Float32Array(64), values.subarray(1), new Float32Array(64), 1, pattern)).toThrow(/values/);
    expect(() => compute().sampledMatmulF32(new Float32Array(64), new Float32Array(64), new Float32Array(10), 1, pattern)).toThrow(/dw/);
  });

  it("an index out of range is an IndexError, a wrong type a ValueError", () => {
    const { addon } = cpuBackend();
    // A pattern object as a corrupted one would look (BsrPattern itself refuses to build it).
    const corrupt = {
      shape: [64, 64],
      blockShape: [32, 32],
      blockRowPtr: Int32Array.of(0, 1, 2),
      blockColIdx: Int32Array.of(0, 2),
      columnIndex: { blockColPtr: Int32Array.of(0, 1, 2), blockRowIdx: Int32Array.of(0, 1), valueIndex: Int32Array.of(0, 1) },
    } as unknown as BsrPattern;
    expect(() => nativeCompute(addon).bsrLinearF32(new Float32Array(64), new Float32Array(2048), null, new Float32Array(64), 1, corrupt)).toThrow(IndexError);
    expect(() => nativeCompute(addon).bsrLinearF32(new Float32Array(64), new Float32Array(2048), null, new Float32Array(64), 1, corrupt)).toThrow(
      /blockColIdx\[1\] = 2 is outside \[0, 2\)/,
    );
    expect(() => addon.matmul(new Float64Array(4) as unknown as Float32Array, 0, new Float32Array(4), 0, new Float32Array(4), 0, 2, 2, 2, false, false)).toThrow(
      /a must be a Float32Array/,
    );
    expect(() => nativeCompute(addon).matmulF32(new Float64Array(4) as unknown as Float32Array, 0, new Float32Array(4), 0, new Float32Array(4), 0, 2, 2, 2, false, false)).toThrow(
      ValueError,
    );
  });
});
