/**
 * Products whose float32 terms overflow (3e38 x 1e38): the js backend sums each output in float64 and rounds once,
 * so an output is +-inf with the sign of its true sum (or finite where the terms cancel, NaN where an input is NaN or
 * inf - inf). The native kernels sum in float32 over lanes, tiles and K slices, where a +inf partial sum and a -inf one
 * made NaN; the outputs must equal the js backend's, bit for bit where not finite, on every micro-kernel and path.
 */
import { BsrPattern, type Tensor, bsrLinear, bsrMatmul, matmul, sampledMatmul, setBackend, tensor } from "@blocksparse/core";
import { type NativeIsa, cpuIsa, setCpuIsa } from "../src/index";
import { afterAll, describe, expect, it } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("overflow.test.ts");

/** The op's output on `backend`, its inputs made there. */
function on(backend: "js" | "cpu", op: () => Tensor): Float32Array {
  setBackend(backend);
  return op().dataSync() as Float32Array;
}

/** cpu's output equals js's: identical where js's is not finite (inf of the same sign, NaN), close elsewhere. */
function expectLikeJs(op: () => Tensor, what: string): void {
  const js = on("js", op);
  const cpu = on("cpu", op);
  expect(cpu.length, what).toBe(js.length);
  let nonFinite = 0;
  for (let i = 0; i < js.length; i++) {
    if (Number.isFinite(js[i])) {
      if (!(Math.abs(cpu[i] - js[i]) <= 1e-5 * Math.abs(js[i]) + 1e32)) expect.fail(`${what}: element ${i} is ${cpu[i]}, js ${js[i]}`);
    } else {
      nonFinite++;
      if (!Object.is(cpu[i], js[i])) expect.fail(`${what}: element ${i} is ${cpu[i]}, js ${js[i]}`);
    }
  }
  expect(nonFinite, `${what}: the case overflows`).toBeGreaterThan(0);
}

/** length values: +big on the first (length - negative), -big on the rest. */
function signs(length: number, big: number, negative: number): number[] {
  return Array.from({ length }, (_, i) => (i < length - negative ? big : -big));
}

const ISAS: NativeIsa[] = ["avx512", "avx2", "scalar"];

describe.skipIf(cpuMissing)("float32 overflow in the native products, against the js backend", () => {
  const startIsa = cpuMissing ? "scalar" : cpuIsa();
  afterAll(() => {
    setCpuIsa(startIsa);
    setBackend("cpu");
  });
  for (const isa of ISAS) {
    it(`${isa}: matmul, bsrLinear, bsrMatmul and sampledMatmul give js's +-inf, not NaN`, () => {
      try {
        setCpuIsa(isa);
      } catch {
        return; // this CPU cannot run it
      }
      // A = 3e38 everywhere; column j of B holds k/2 + 1 terms of s 1e38 and k/2 - 1 of -s 1e38 (s = +-1 by column):
      // every true sum overflows with sign s, while the float32 lanes hold +inf and -inf. Also NaN (a NaN in B) and
      // inf - inf (an infinity of each sign in B) where js gives NaN, and a column whose terms cancel to 0.
      for (const m of [1, 4, 8, 9, 33]) {
        for (const k of [40, 600]) {
          for (const [transposeA, transposeB] of [[false, false], [false, true], [true, false]]) {
            const n = 21;
            const column = signs(k, 1e38, k / 2 - 1);
            const b = new Float32Array(k * n);
            for (let p = 0; p < k; p++) {
              for (let j = 0; j < n; j++) {
                let value = column[p] * (j % 2 === 0 ? 1 : -1);
                if (j === 5 && p === 3) value = Number.NaN;
                if (j === 6) value = p === 0 ? Number.POSITIVE_INFINITY : p === 1 ? Number.NEGATIVE_INFINITY : value;
                if (j === 7) value = p % 2 === 0 ? 1e38 : -1e38;
                b[transposeB ? j * k + p : p * n + j] = value;
              }
            }
            expectLikeJs(
              () => matmul(tensor(new Float32Array(m * k).fill(3e38), transposeA ? [k, m] : [m, k]), tensor(b, transposeB ? [n, k] : [k, n]), { transposeA, transposeB }),
              `${isa} matmul m=${m} k=${k} transposeA=${transposeA} transposeB=${transposeB}`,
            );
          }
        }
      }
      for (const tokens of [1, 5, 9, 40]) {
        for (const [R, C] of [[1, 1], [3, 5], [4, 4], [16, 16], [8, 32]]) {
          const [rows, cols] = [R * 3, C * 5];
          const pattern = BsrPattern.random([rows, cols], { blockShape: [R, C], density: 0.8, seed: 7 });
          const nnz = pattern.nnzBlocks;
          const x = new Float32Array(tokens * cols).fill(3e38);
          // bsrLinear sums along a block's rows (c), bsrMatmul down its columns (r): 55% +1e38, 45% -1e38.
          const byColumn = Float32Array.from({ length: nnz * R * C }, (_, i) => (i % C < 0.55 * C ? 1e38 : -1e38));
          const byRow = Float32Array.from({ length: nnz * R * C }, (_, i) => (Math.floor(i / C) % R < 0.55 * R ? -1e38 : 1e38));
          // A bias of -inf on some rows: js's float64 sum is finite, so those outputs are -inf (NaN in float32).
          const bias = Float32Array.from({ length: rows }, (_, i) => (i % 3 === 0 ? Number.NEGATIVE_INFINITY : i % 3 === 1 ? -3e38 : 0));
          const what = `${isa} tokens=${tokens} block ${R}x${C}`;
          expectLikeJs(() => bsrLinear(tensor(x, [tokens, cols]), tensor(byColumn, [nnz, R, C]), pattern), `bsrLinear ${what}`);
          expectLikeJs(() => bsrLinear(tensor(x, [tokens, cols]), tensor(byColumn, [nnz, R, C]), pattern, tensor(bias, [rows])), `bsrLinear with bias ${what}`);
          expectLikeJs(() => bsrMatmul(tensor(new Float32Array(tokens * rows).fill(3e38), [tokens, rows]), tensor(byRow, [nnz, R, C]), pattern), `bsrMatmul ${what}`);
          const dy = Float32Array.from({ length: tokens * rows }, (_, i) => (Math.floor(i / rows) < Math.max(1, Math.ceil(tokens * 0.55)) ? 3e38 : -3e38));
          expectLikeJs(() => sampledMatmul(tensor(dy, [tokens, rows]), tensor(new Float32Array(tokens * cols).fill(1e38), [tokens, cols]), pattern), `sampledMatmul ${what}`);
        }
      }
    });
  }
});
