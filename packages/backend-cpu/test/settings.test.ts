import { spawnSync } from "node:child_process";
import { availableParallelism } from "node:os";
import { BackendError, BsrPattern, IndexError, ShapeError, ValueError, matmul, ones, setBackend } from "@blocksparse/core";
import { CpuBackend, cpuBackend, cpuIsa, cpuThreads, defaultCpuThreads, nativeCompute, setCpuIsa, setCpuThreads } from "../src/index";
import { applyEnvironmentSettings } from "../src/settings";
import type { NativeIsa } from "../src/native";
import { SeededRandom } from "@blocksparse/core/testing";
import { afterEach, describe, expect, it, vi } from "vitest";
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

  it("with more threads than cores, idle threads sleep instead of polling (a polling thread takes a working one's core), and products stay right", () => {
    setBackend("cpu");
    const cores = availableParallelism();
    setCpuThreads(cores);
    expect(cpuBackend().build.polling).toBe(true);
    setCpuThreads(cores * 4 + 1);
    expect(cpuBackend().build.polling).toBe(false);
    // Jobs of fewer items than threads wake only as many sleepers as they need; every item still runs.
    for (const [m, k, n] of [[64, 64, 64], [3, 40, 600], [300, 20, 9]]) {
      expect(Array.from(matmul(ones([m, k]), ones([k, n])).dataSync())).toEqual(new Array(m * n).fill(k));
    }
    setCpuThreads(1);
    expect(cpuBackend().build.polling).toBe(true);
  });

  it("defaults to BLOCKSPARSE_CPU_THREADS, and rejects a bad count", () => {
    process.env.BLOCKSPARSE_CPU_THREADS = "3";
    expect(defaultCpuThreads()).toBe(3);
    expect(setCpuThreads()).toBe(3);
    process.env.BLOCKSPARSE_CPU_THREADS = "two";
    expect(() => defaultCpuThreads()).toThrow(ValueError);
    // More than the pool runs on: the variable named, not a setCpuThreads the user never called.
    process.env.BLOCKSPARSE_CPU_THREADS = "5000";
    expect(() => defaultCpuThreads()).toThrow(/BLOCKSPARSE_CPU_THREADS must be an integer in \[1, 4096\], got '5000'/);
    expect(() => setCpuThreads()).toThrow(/BLOCKSPARSE_CPU_THREADS/);
    expect(() => setCpuThreads(0)).toThrow(/threads must be an integer/);
    expect(() => setCpuThreads(1.5)).toThrow(ValueError);
  });

  it("reads BLOCKSPARSE_CPU_THREADS as decimal digits only: hex, binary and exponent forms are a ValueError naming it, not another count", () => {
    for (const text of ["0x10", "0b11", "1e1", "3.0", "+3", "Infinity"]) {
      process.env.BLOCKSPARSE_CPU_THREADS = text;
      expect(() => defaultCpuThreads(), text).toThrow(ValueError);
      expect(() => defaultCpuThreads(), text).toThrow(`BLOCKSPARSE_CPU_THREADS must be an integer in [1, 4096], got '${text}'`);
    }
    process.env.BLOCKSPARSE_CPU_THREADS = " 3 ";
    expect(defaultCpuThreads()).toBe(3);
  });

  it("when the system refuses threads, setCpuThreads keeps the previous count and throws a BackendError", { timeout: 60_000 }, () => {
    const addon = cpuBackend().addon;
    const previous = setCpuThreads(2);
    const setThreads = addon.setThreads.bind(addon);
    // As the addon answers when only 5 of the threads started.
    const refusing = vi.spyOn(addon, "setThreads").mockImplementation((n) => (n === 64 ? setThreads(5) : setThreads(n)));
    try {
      expect(() => setCpuThreads(64)).toThrow(BackendError);
      expect(() => setCpuThreads(64)).toThrow(/started only 5 of the 64 threads/);
    } finally {
      refusing.mockRestore();
    }
    expect(cpuThreads()).toBe(previous);
  });

  it.skipIf(process.platform !== "linux")("the addon runs on the threads the system starts, and does not abort, when it refuses more", () => {
    // A child whose address space has room for about 100 more thread stacks (8 MiB each) asks for 4096 threads.
    const script = `
      const addon = require(${JSON.stringify(cpuBackend().addonPath)});
      const size = Number(require("fs").readFileSync("/proc/self/status", "utf8").match(/VmSize:\\s+(\\d+)/)[1]);
      if (process.argv[1] === "measure") { console.log(size); process.exit(0); }
      const started = addon.setThreads(4096);
      const threads = addon.buildInfo().threads;
      // Back to 2 threads (their stacks' room returned) before anything allocates: the pool still works.
      addon.setThreads(2);
      const a = new Float32Array(64 * 64).fill(1);
      const c = new Float32Array(64 * 64);
      addon.matmul(a, 0, a, 0, c, 0, 64, 64, 64, false, false);
      console.log(JSON.stringify({ started, threads, c0: c[0], c1: c[64 * 64 - 1] }));`;
    const measured = spawnSync(process.execPath, ["-e", script, "measure"], { encoding: "utf8" });
    expect(measured.status, measured.stderr).toBe(0);
    const limitKiB = Number(measured.stdout.trim()) + 800 * 1024;
    const child = spawnSync("bash", ["-c", `ulimit -v ${limitKiB} && exec "$0" -e "$1" run`, process.execPath, script], { encoding: "utf8" });
    expect(child.signal, child.stderr).toBeNull();
    expect(child.status, child.stderr).toBe(0);
    const result = JSON.parse(child.stdout.trim().split("\n").at(-1) as string);
    expect(result.started).toBeGreaterThanOrEqual(1);
    expect(result.started).toBeLessThan(4096);
    expect(result.threads).toBe(result.started);
    expect([result.c0, result.c1]).toEqual([64, 64]);
  });

  it("a bad BLOCKSPARSE_CPU_ISA is a ValueError naming the variable", () => {
    const savedIsa = process.env.BLOCKSPARSE_CPU_ISA;
    const isa = cpuIsa();
    try {
      process.env.BLOCKSPARSE_CPU_ISA = "sse9";
      expect(() => applyEnvironmentSettings()).toThrow(/BLOCKSPARSE_CPU_ISA must be one of avx512, avx2, scalar, got 'sse9'/);
      expect(cpuIsa()).toBe(isa);
    } finally {
      if (savedIsa === undefined) delete process.env.BLOCKSPARSE_CPU_ISA;
      else process.env.BLOCKSPARSE_CPU_ISA = savedIsa;
    }
  });

  it("setCpuThreads and setCpuIsa called before the backend starts are kept when it starts, whatever the environment says", () => {
    // The constructor applied BLOCKSPARSE_CPU_THREADS (or the core count) and BLOCKSPARSE_CPU_ISA over them: a
    // setCpuThreads(1) made before the first op was undone by that op.
    const savedIsa = process.env.BLOCKSPARSE_CPU_ISA;
    const isa = cpuIsa();
    try {
      setCpuIsa("scalar");
      setCpuThreads(1);
      process.env.BLOCKSPARSE_CPU_THREADS = "3";
      process.env.BLOCKSPARSE_CPU_ISA = isa;
      const started = new CpuBackend();
      started.dispose();
      expect(cpuThreads()).toBe(1);
      expect(cpuIsa()).toBe("scalar");
    } finally {
      if (savedIsa === undefined) delete process.env.BLOCKSPARSE_CPU_ISA;
      else process.env.BLOCKSPARSE_CPU_ISA = savedIsa;
      setCpuIsa(isa);
    }
  });

  it("setCpuIsa alone before the backend starts keeps the instruction set, and the thread count still comes from BLOCKSPARSE_CPU_THREADS", () => {
    // One flag for both settings: after setCpuIsa the backend applied neither, so the pool kept the hardware's thread
    // count (all the host's CPUs, whatever the process's affinity) and BLOCKSPARSE_CPU_THREADS went unread.
    const savedIsa = process.env.BLOCKSPARSE_CPU_ISA;
    const isa = cpuIsa();
    const addon = cpuBackend().addon;
    const buildInfo = addon.buildInfo.bind(addon);
    const spy = vi.spyOn(addon, "buildInfo").mockImplementation(() => ({ ...buildInfo(), threadsChosen: false, isaChosen: true, settingsChosen: true }));
    try {
      setCpuThreads(1);
      process.env.BLOCKSPARSE_CPU_THREADS = "3";
      process.env.BLOCKSPARSE_CPU_ISA = isa === "scalar" ? "avx2" : "scalar";
      new CpuBackend().dispose();
      expect(cpuThreads()).toBe(3);
      expect(cpuIsa()).toBe(isa);
    } finally {
      spy.mockRestore();
      if (savedIsa === undefined) delete process.env.BLOCKSPARSE_CPU_ISA;
      else process.env.BLOCKSPARSE_CPU_ISA = savedIsa;
      setCpuIsa(isa);
    }
  });

  it("the addon says which setting was chosen: setIsa leaves the thread count unchosen, setThreads the instruction set", { timeout: 60_000 }, () => {
    const script = `
      const addon = require(${JSON.stringify(cpuBackend().addonPath)});
      const chosen = () => { const { threadsChosen, isaChosen, settingsChosen } = addon.buildInfo(); return { threadsChosen, isaChosen, settingsChosen }; };
      const steps = [chosen()];
      addon.setIsa("scalar");
      steps.push(chosen());
      addon.setThreads(1);
      steps.push(chosen());
      console.log(JSON.stringify(steps));`;
    const child = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout.trim())).toEqual([
      { threadsChosen: false, isaChosen: false, settingsChosen: false },
      { threadsChosen: false, isaChosen: true, settingsChosen: true },
      { threadsChosen: true, isaChosen: true, settingsChosen: true },
    ]);
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

  it("a short array after a non-zero offset reports its whole length and the offset, as js does (the bsr products read it through a view from the offset)", () => {
    const values = new Float32Array(4 * 32 * 32);
    // x holds 100 floats; from offset 50 it has 50 of the 64 one token needs: "x has 50 elements, needs 64 (64 from offset 0)" before.
    expect(() => compute().bsrLinearF32({ ...rowWise, x: new Float32Array(100), xOffset: 50, values, y: new Float32Array(64), tokens: 1 })).toThrow(
      "bsrLinear: x has 100 elements, needs 114 (64 from offset 50)",
    );
    expect(() => compute().bsrLinearF32({ ...rowWise, x: new Float32Array(64), values, bias: new Float32Array(70), biasOffset: 10, y: new Float32Array(64), tokens: 1 })).toThrow(
      "bias has 70 elements, needs 74 (64 from offset 10)",
    );
    expect(() => compute().bsrMatmulF32({ ...index, ...pattern.columnIndex, dy: new Float32Array(64), values, valuesOffset: 1, dx: new Float32Array(64), tokens: 1 })).toThrow(
      "bsrMatmul: values has 4096 elements, needs 4097 (4096 from offset 1)",
    );
    expect(() => compute().sampledMatmulF32({ ...rowWise, dy: new Float32Array(64), x: new Float32Array(64), dw: new Float32Array(4100), dwOffset: 5, tokens: 1 })).toThrow(
      "sampledMatmul: dw has 4100 elements, needs 4101 (4096 from offset 5)",
    );
  });

  it("the bsr products read and write from their offsets", () => {
    const rng = new SeededRandom(5);
    const random = (length: number) => Float32Array.from({ length }, () => rng.uniform(-1, 1));
    const [x, values, bias, dy] = [random(64), random(4 * 32 * 32), random(64), random(64)];
    const pad = (array: Float32Array, before: number) => {
      const padded = random(before + array.length + 3);
      padded.set(array, before);
      return padded;
    };
    const y = new Float32Array(64);
    compute().bsrLinearF32({ ...rowWise, x, values, bias, y, tokens: 1 });
    const yAt = new Float32Array(70);
    compute().bsrLinearF32({ ...rowWise, x: pad(x, 7), xOffset: 7, values: pad(values, 1), valuesOffset: 1, bias: pad(bias, 2), biasOffset: 2, y: yAt, yOffset: 5, tokens: 1 });
    expect(yAt.subarray(5, 69)).toEqual(y);
    const dx = new Float32Array(64);
    compute().bsrMatmulF32({ ...index, ...pattern.columnIndex, dy, values, dx, tokens: 1 });
    const dxAt = new Float32Array(66);
    compute().bsrMatmulF32({ ...index, ...pattern.columnIndex, dy: pad(dy, 3), dyOffset: 3, values: pad(values, 4), valuesOffset: 4, dx: dxAt, dxOffset: 2, tokens: 1 });
    expect(dxAt.subarray(2)).toEqual(dx);
    const dw = new Float32Array(4096);
    compute().sampledMatmulF32({ ...rowWise, dy, x, dw, tokens: 1 });
    const dwAt = new Float32Array(4097);
    compute().sampledMatmulF32({ ...rowWise, dy: pad(dy, 9), dyOffset: 9, x: pad(x, 1), xOffset: 1, dw: dwAt, dwOffset: 1, tokens: 1 });
    expect(dwAt.subarray(1)).toEqual(dw);
  });

  it("a bad number is printed as JavaScript prints it, and a bad pattern field is named with what it got", () => {
    const square = { a: new Float32Array(4), b: new Float32Array(4), c: new Float32Array(4), m: 2, n: 2, k: 1 };
    // std::to_string printed "got -1.000000" and "got nan".
    expect(() => compute().matmulF32({ ...square, aOffset: -1 })).toThrow(/matmul: aOffset must be a non-negative integer, got -1$/);
    expect(() => compute().matmulF32({ ...square, m: 1.5 })).toThrow(/matmul: m must be a non-negative integer, got 1.5$/);
    expect(() => compute().matmulF32({ ...square, k: Number.NaN })).toThrow(/got NaN$/);
    const linear = (fields: object) => compute().bsrLinearF32({ ...rowWise, ...fields, x: new Float32Array(64), values: new Float32Array(4096), y: new Float32Array(64), tokens: 1 });
    expect(() => linear({ rows: 64.5 })).toThrow(ShapeError);
    expect(() => linear({ rows: 64.5 })).toThrow("bsrLinear: pattern.rows must be an integer in [0, 2147483647], got 64.5");
    expect(() => linear({ cols: "64" })).toThrow(ValueError);
    expect(() => linear({ cols: "64" })).toThrow("bsrLinear: pattern.cols must be a number");
    expect(() => linear({ blockRowPtr: Uint32Array.of(0, 2, 4) })).toThrow("bsrLinear: pattern.blockRowPtr must be an Int32Array");
    expect(() =>
      compute().bsrMatmulF32({ ...index, ...pattern.columnIndex, valueIndex: Int32Array.of(0, 1), dy: new Float32Array(64), values: new Float32Array(4096), dx: new Float32Array(64), tokens: 1 }),
    ).toThrow("bsrMatmul: valueIndex has 2 entries, blockColPtr says 4");
  });

  it("numbers in exponent or long forms are printed as JavaScript prints them, not as C's %g", () => {
    const square = { a: new Float32Array(4), b: new Float32Array(4), c: new Float32Array(4), m: 2, n: 2, k: 1 };
    // %g printed "1e-07", "1e-06" and "1.2345678901234568e+20".
    expect(() => compute().matmulF32({ ...square, aOffset: 1e-7 })).toThrow(/matmul: aOffset must be a non-negative integer, got 1e-7$/);
    expect(() => compute().matmulF32({ ...square, n: 0.000001 })).toThrow(/matmul: n must be a non-negative integer, got 0.000001$/);
    expect(() => compute().matmulF32({ ...square, k: 123456789012345680000 })).toThrow(/matmul: k must be a non-negative integer, got 123456789012345680000$/);
    const linear = (fields: object) => compute().bsrLinearF32({ ...rowWise, ...fields, x: new Float32Array(64), values: new Float32Array(4096), y: new Float32Array(64), tokens: 1 });
    expect(() => linear({ blockWidth: 3e-8 })).toThrow("bsrLinear: pattern.blockWidth must be an integer in [0, 2147483647], got 3e-8");
    expect(() => linear({ rows: 5e21 })).toThrow("bsrLinear: pattern.rows must be an integer in [0, 2147483647], got 5e+21");
  });

  it("setIsa refuses a name with anything after a NUL, instead of reading only the part before it", () => {
    const { addon } = cpuBackend();
    const isa = cpuIsa();
    // "scalar\0..." was read as "scalar": the kernel switched and setIsa said true.
    expect(addon.setIsa("scalar\0avx2" as NativeIsa)).toBe(false);
    expect(cpuIsa()).toBe(isa);
  });

  it("sizes whose element counts pass int64 are a ShapeError, not a wrapped count that lets short arrays through", () => {
    const tiny = () => new Float32Array(16);
    // m x n = 2^64 wrapped to 0: the zeroing of C (k = 0) ran over 2^64 floats and crashed the process.
    expect(() => compute().matmulF32({ a: tiny(), b: tiny(), c: tiny(), m: 2 ** 32, n: 2 ** 32, k: 0 })).toThrow(ShapeError);
    expect(() => compute().matmulF32({ a: tiny(), b: tiny(), c: tiny(), m: 2 ** 32, n: 2 ** 32, k: 2 ** 32 })).toThrow(/more than any array holds/);
    const huge = { rows: 2 ** 31 - 1, cols: 2 ** 31 - 1, blockHeight: 2 ** 31 - 1, blockWidth: 2 ** 31 - 1, blockRowPtr: Int32Array.of(0, 0), blockColIdx: new Int32Array(0) };
    expect(() => compute().bsrLinearF32({ ...huge, x: tiny(), values: tiny(), y: tiny(), tokens: 2 ** 33 })).toThrow(ShapeError);
    expect(() => compute().sampledMatmulF32({ ...huge, dy: tiny(), x: tiny(), dw: tiny(), tokens: 2 ** 33 })).toThrow(/more than any array holds/);
  });

  it("an offset that is not a non-negative integer, or is past the array's end, is a ShapeError naming it, not a view from the end or an empty one", () => {
    const x = new Float32Array(128).fill(1);
    const values = new Float32Array(4 * 32 * 32);
    const linear = (xOffset: number) => compute().bsrLinearF32({ ...rowWise, x, xOffset, values, y: new Float32Array(64), tokens: 1 });
    expect(() => linear(-64)).toThrow(ShapeError);
    expect(() => linear(-64)).toThrow(/bsrLinearF32: xOffset must be a non-negative integer, got -64/);
    expect(() => linear(1.5)).toThrow(ShapeError);
    const dy = new Float32Array(128);
    expect(() => compute().sampledMatmulF32({ ...rowWise, dy, dyOffset: -64, x, dw: values, tokens: 1 })).toThrow(/dyOffset/);
    expect(() => compute().bsrMatmulF32({ ...index, ...pattern.columnIndex, dy, values, dx: x, dxOffset: Number.NaN, tokens: 1 })).toThrow(/dxOffset/);
    // Past the end: subarray gave an empty view, reported as "x has 0 elements" whatever x held.
    expect(() => linear(1000)).toThrow(ShapeError);
    expect(() => linear(1000)).toThrow("bsrLinearF32: xOffset 1000 is past the end of x (128 elements)");
    expect(() => compute().sampledMatmulF32({ ...rowWise, dy, x, dw: values, dwOffset: values.length + 1, tokens: 1 })).toThrow(/dwOffset 4097 is past the end of dw/);
  });

  it("an output that shares memory with an input is a ValueError naming both, not a wrong answer; arrays side by side in one buffer are fine", () => {
    const rng = new SeededRandom(3);
    const random = (length: number) => Float32Array.from({ length }, () => rng.uniform(-1, 1));
    // In place: C over A, with A read again for each panel and K slice after C's first rows were written.
    const [m, k] = [300, 600];
    const a = random(m * k);
    const b = random(k * k);
    expect(() => compute().matmulF32({ a, b, c: a, m, n: k, k })).toThrow(ValueError);
    expect(() => compute().matmulF32({ a, b, c: a, m, n: k, k })).toThrow(/matmul: c shares memory with a/);
    // C overlapping the end of B, through another view of B's buffer.
    const shared = random(2 * 64 * 64);
    const tail = new Float32Array(shared.buffer, 4 * 64 * 64 - 4);
    expect(() => compute().matmulF32({ a: random(64 * 64), b: shared, c: tail, m: 64, n: 64, k: 64 })).toThrow(/c shares memory with b/);
    // A and C side by side in one array: no overlap, and the product is right.
    const both = random(2 * 16 * 16);
    const square = random(16 * 16);
    const expected = new Float32Array(16 * 16);
    compute().matmulF32({ a: both.slice(0, 16 * 16), b: square, c: expected, m: 16, n: 16, k: 16 });
    compute().matmulF32({ a: both, b: square, c: both, cOffset: 16 * 16, m: 16, n: 16, k: 16 });
    expect(both.subarray(16 * 16)).toEqual(expected);

    const x = random(64 * 64);
    expect(() => compute().bsrLinearF32({ ...rowWise, x, values: random(4 * 32 * 32), y: x, tokens: 64 })).toThrow(/bsrLinear: y shares memory with x/);
    const values = random(4 * 32 * 32);
    const dxOverValues = new Float32Array(values.buffer, 0, 16 * 64);
    expect(() => compute().bsrMatmulF32({ ...index, ...pattern.columnIndex, dy: random(16 * 64), values, dx: dxOverValues, tokens: 16 })).toThrow(
      /bsrMatmul: dx shares memory with values/,
    );
    const dy = random(64 * 64);
    const dwOverDy = new Float32Array(dy.buffer, 0, 4 * 32 * 32);
    expect(() => compute().sampledMatmulF32({ ...rowWise, dy, x: random(64 * 64), dw: dwOverDy, tokens: 64 })).toThrow(/sampledMatmul: dw shares memory with dy/);
  });

  it("an output over the pattern's indices is a ValueError: an index cannot change after its check", () => {
    // y's floats would land on blockColIdx while the kernel still reads it.
    const blockColIdx = Int32Array.from(pattern.blockColIdx);
    const over = { ...rowWise, blockColIdx, x: new Float32Array(64), values: new Float32Array(4 * 32 * 32), y: new Float32Array(blockColIdx.buffer), tokens: 1 };
    expect(() => compute().bsrLinearF32({ ...over, rows: 4, cols: 64, blockHeight: 2, blockWidth: 32, blockRowPtr: Int32Array.of(0, 2, 4) })).toThrow(
      /y shares memory with pattern.blockColIdx/,
    );
  });

  it("index arrays in a SharedArrayBuffer are a ValueError: another thread could change an index after its check", () => {
    // A worker writing 2^28 into a shared blockColIdx between the check and the kernel's read crashed the process (SIGSEGV).
    const shared = (array: Int32Array) => {
      const copy = new Int32Array(new SharedArrayBuffer(array.byteLength));
      copy.set(array);
      return copy;
    };
    const rowArgs = { x: new Float32Array(64), values: new Float32Array(4096), y: new Float32Array(64), tokens: 1 };
    expect(() => compute().bsrLinearF32({ ...rowWise, ...rowArgs, blockColIdx: shared(pattern.blockColIdx) })).toThrow(ValueError);
    expect(() => compute().bsrLinearF32({ ...rowWise, ...rowArgs, blockRowPtr: shared(pattern.blockRowPtr) })).toThrow(
      "bsrLinear: pattern.blockRowPtr must not be backed by a SharedArrayBuffer",
    );
    const sampled = { dy: new Float32Array(64), x: new Float32Array(64), dw: new Float32Array(4096), tokens: 1 };
    expect(() => compute().sampledMatmulF32({ ...rowWise, ...sampled, blockColIdx: shared(pattern.blockColIdx) })).toThrow(/sampledMatmul: pattern.blockColIdx must not/);
    const { blockColPtr, blockRowIdx, valueIndex } = pattern.columnIndex;
    const columnArgs = { ...index, blockColPtr, blockRowIdx, valueIndex, dy: new Float32Array(64), values: new Float32Array(4096), dx: new Float32Array(64), tokens: 1 };
    expect(() => compute().bsrMatmulF32({ ...columnArgs, blockColPtr: shared(blockColPtr) })).toThrow(/bsrMatmul: pattern.blockColPtr must not/);
    expect(() => compute().bsrMatmulF32({ ...columnArgs, blockRowIdx: shared(blockRowIdx) })).toThrow(/bsrMatmul: pattern.blockRowIdx must not/);
    expect(() => compute().bsrMatmulF32({ ...columnArgs, valueIndex: shared(valueIndex) })).toThrow(/bsrMatmul: pattern.valueIndex must not/);
    // The same indices in ordinary memory run (float arrays in shared memory are only values: no index to go out of bounds).
    const sharedX = new Float32Array(new SharedArrayBuffer(64 * 4)).fill(1);
    compute().bsrLinearF32({ ...rowWise, ...rowArgs, x: sharedX, blockColIdx: Int32Array.from(pattern.blockColIdx) });
    compute().bsrMatmulF32(columnArgs);
  });

  it("a pattern getter that detaches an array already passed is a ShapeError, not a read of freed memory", { timeout: 60_000 }, () => {
    // The addon took each array's data before reading the pattern, whose getters run JavaScript: a getter that detached
    // x (or an index array) left the kernel on freed memory, and the process died (SIGSEGV). A child runs it for that.
    const script = `
      const addon = require(${JSON.stringify(cpuBackend().addonPath)});
      const detach = (array) => structuredClone(array.buffer, { transfer: [array.buffer] });
      const messages = [];
      const attempt = (call) => { try { call(); messages.push("returned"); } catch (error) { messages.push(error.code + ": " + error.message); } };
      const tokens = 4096, width = 4096, height = 64;
      const x = new Float32Array(tokens * width), values = new Float32Array(height * width), y = new Float32Array(tokens * height);
      const sizes = { cols: width, blockHeight: height, blockWidth: width };
      attempt(() => addon.bsrLinear(x, 0, values, 0, null, 0, y, 0, tokens, { ...sizes, get rows() { detach(x); return height; }, blockRowPtr: Int32Array.of(0, 1), blockColIdx: Int32Array.of(0) }));
      const dy = new Float32Array(tokens * height), dx = new Float32Array(tokens * width);
      attempt(() => addon.bsrMatmul(dy, 0, values, 0, dx, 0, tokens, { ...sizes, rows: height, get blockColPtr() { detach(dy); return Int32Array.of(0, 1); }, blockRowIdx: Int32Array.of(0), valueIndex: Int32Array.of(0) }));
      const blockRowPtr = Int32Array.of(0, 1);
      const rowWise = { ...sizes, rows: height, blockRowPtr, get blockColIdx() { detach(blockRowPtr); return Int32Array.of(0); } };
      attempt(() => addon.sampledMatmul(new Float32Array(tokens * height), 0, new Float32Array(tokens * width), 0, values, 0, tokens, rowWise));
      console.log(JSON.stringify(messages));`;
    const child = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
    expect(child.signal, child.stderr).toBeNull();
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout.trim())).toEqual([
      "ERR_CPU_SHAPE: bsrLinear: x has 0 elements, needs 16777216 (16777216 from offset 0)",
      "ERR_CPU_SHAPE: bsrMatmul: dy has 0 elements, needs 262144 (262144 from offset 0)",
      "ERR_CPU_SHAPE: sampledMatmul: blockRowPtr must have 2 entries, got 0",
    ]);
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
