/**
 * Products over a long K against the js backend, which sums each output in float64: the native kernels sum in float32,
 * so one float32 chain over all of K drifts from js's result (a million steps of 0.1 had drifted 1%, a block row or
 * column of 65536 steps 6e-4). K is summed in slices added to the float32 output, as the tiled dense product does.
 */
import { BsrPattern, type Tensor, bsrLinear, bsrMatmul, matmul, setBackend, tensor } from "@blocksparse/core";
import { type NativeIsa, cpuIsa, setCpuIsa } from "../src/index";
import { afterAll, describe, expect, it } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("accumulation.test.ts");

function on(backend: "js" | "cpu", op: () => Tensor): Float32Array {
  setBackend(backend);
  return op().dataSync() as Float32Array;
}

/** The largest |cpu - js| / |js| over the outputs. */
function worstRelative(op: () => Tensor): number {
  const js = on("js", op);
  const cpu = on("cpu", op);
  expect(cpu.length).toBe(js.length);
  let worst = 0;
  for (let i = 0; i < js.length; i++) worst = Math.max(worst, Math.abs(cpu[i] - js[i]) / Math.abs(js[i]));
  return worst;
}

const ISAS: NativeIsa[] = ["avx512", "avx2", "scalar"];

describe.skipIf(cpuMissing)("long K sums stay close to the js backend's float64 sums", () => {
  const startIsa = cpuMissing ? "scalar" : cpuIsa();
  afterAll(() => {
    setCpuIsa(startIsa);
    setBackend("cpu");
  });
  for (const isa of ISAS) {
    it(`${isa}: few-row matmul (B not transposed), bsrLinear and bsrMatmul over K = 2^20 and 2^16`, { timeout: 60_000 }, () => {
      try {
        setCpuIsa(isa);
      } catch {
        return; // this CPU cannot run it
      }
      // [m, 2^20] ones times [2^20, 5] of 0.1: the few-row path summed each output in one float32 chain (1% off).
      const k = 2 ** 20;
      const b = new Float32Array(k * 5).fill(0.1);
      for (const m of [1, 8]) {
        const a = new Float32Array(m * k).fill(1);
        expect.soft(worstRelative(() => matmul(tensor(a, [m, k]), tensor(b, [k, 5]))), `${isa} matmul m=${m}`).toBeLessThan(1e-4);
      }
      // One block row (bsrLinear) or block column (bsrMatmul) of 2048 blocks of 32 x 32: K = 65536 (6e-4 off).
      const [R, C, blocks] = [32, 32, 2048];
      const wide = BsrPattern.random([R, C * blocks], { blockShape: [R, C], density: 1, seed: 1 });
      const tall = BsrPattern.random([R * blocks, C], { blockShape: [R, C], density: 1, seed: 1 });
      const values = new Float32Array(blocks * R * C).fill(0.1);
      for (const tokens of [1, 8, 9, 40]) {
        const ones = new Float32Array(tokens * C * blocks).fill(1);
        expect.soft(worstRelative(() => bsrLinear(tensor(ones, [tokens, C * blocks]), tensor(values, [blocks, R, C]), wide)), `${isa} bsrLinear tokens=${tokens}`).toBeLessThan(5e-5);
        expect.soft(worstRelative(() => bsrMatmul(tensor(ones, [tokens, R * blocks]), tensor(values, [blocks, R, C]), tall)), `${isa} bsrMatmul tokens=${tokens}`).toBeLessThan(5e-5);
      }
    });

    it(`${isa}: few-row matmul with B transposed (a Linear's decode) and few-token bsrLinear over one block row, K = 2^20`, { timeout: 60_000 }, () => {
      try {
        setCpuIsa(isa);
      } catch {
        return; // this CPU cannot run it
      }
      // Both summed K in float32 lanes from end to end: a dot product's 64 lanes drifted 1.5e-4, a block row's 16 lanes 6e-4.
      const k = 2 ** 20;
      const ones = new Float32Array(8 * k).fill(1);
      const tenths = new Float32Array(5 * k).fill(0.1);
      for (const m of [1, 8]) {
        const a = ones.subarray(0, m * k);
        expect.soft(worstRelative(() => matmul(tensor(a, [m, k]), tensor(tenths, [5, k]), { transposeB: true })), `${isa} matmul transposeB m=${m}`).toBeLessThan(1e-4);
      }
      const row = BsrPattern.dense([1, k], [1, 16]);
      for (const tokens of [1, 8]) {
        const x = ones.subarray(0, tokens * k);
        expect.soft(worstRelative(() => bsrLinear(tensor(x, [tokens, k]), tensor(tenths.subarray(0, k), [k / 16, 1, 16]), row)), `${isa} bsrLinear tokens=${tokens}`).toBeLessThan(5e-5);
      }
    });
  }
});
