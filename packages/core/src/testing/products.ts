/** The products family: Matmul, Linear, LinearActivation, BsrLinear, BsrLinearActivation, BsrMatmul, BsrMatmulActivationBackward, SampledMatmul, BlockNorms. */
import {
  BsrPattern,
  type FloatDType,
  FLOAT_DTYPES,
  biasActivation,
  biasActivationBackward,
  blockNorms,
  bsrLinear,
  bsrLinearActivation,
  bsrMatmul,
  bsrMatmulActivationBackward,
  add,
  formatShape,
  linear,
  linearActivation,
  linearBackward,
  matmul,
  reshape,
  sampledMatmul,
  tidy,
} from "@blocksparse/core";
import { describe } from "vitest";
import { type Conformance, type Input, expectValues, inCase, makeInput } from "./harness";
import * as R from "./reference";
import type { Ref } from "./reference";

const MATMUL_SHAPES: { a: number[]; b: number[] }[] = [
  { a: [3, 5], b: [5, 4] },
  { a: [1, 1], b: [1, 1] },
  { a: [1, 7], b: [7, 1] },
  { a: [4, 0], b: [0, 3] },
  { a: [0, 3], b: [3, 2] },
  { a: [17, 33], b: [33, 9] },
  { a: [2, 3, 4], b: [2, 4, 5] },
  { a: [2, 1, 3, 4], b: [3, 4, 2] },
  { a: [3, 4], b: [2, 4, 6] },
];

/** Block shapes: square 16/32/64, rectangular, and small odd ones. */
const BLOCK_SHAPES: [number, number][] = [
  [16, 16],
  [32, 32],
  [64, 64],
  [16, 32],
  [32, 8],
  [2, 3],
];
const DENSITIES = [0, 0.25, 0.5, 1];
/** Leading dims of x and dy: batched, one token, none, and no leading dims at all. */
const LEADING_DIMS = [[2, 3], [1], [0], []];

/** One block-sparse weight: its pattern, stored values and the dense W they make. */
interface SparseWeight {
  pattern: BsrPattern;
  values: Input;
  dense: Ref;
}

export function declareProductTests(suite: Conformance): void {
  const { check, rng } = suite;

  describe("matmul", () => {
    for (const dtype of FLOAT_DTYPES) {
      check(`Matmul ${dtype}, batched, broadcast and transposed`, () => {
        for (const { a: sa, b: sb } of MATMUL_SHAPES) {
          for (const transposeA of [false, true]) {
            for (const transposeB of [false, true]) {
              const swap = (s: number[], flag: boolean) => (flag ? [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]] : s);
              const a = makeInput(rng(), swap(sa, transposeA), dtype);
              const b = makeInput(rng(), swap(sb, transposeB), dtype);
              inCase(`Matmul ${dtype} a ${formatShape(a.t.shape)} b ${formatShape(b.t.shape)} transposeA ${transposeA} transposeB ${transposeB}`, () => {
                const want = R.matmul(a.ref, b.ref, transposeA, transposeB);
                expectValues(matmul(a.t, b.t, { transposeA, transposeB }), want, dtype, "scaled", 2);
              });
            }
          }
        }
      });
    }
  });

  describe("linear", () => {
    // [N, K]: odd widths (operands off the GEMM's vector alignment), one feature, an empty sum (K = 0), wide ones.
    const WEIGHTS: [number, number][] = [
      [5, 3],
      [1, 1],
      [9, 33],
      [4, 0],
      [64, 48],
      [70, 136],
    ];
    for (const dtype of FLOAT_DTYPES) {
      check(`Linear ${dtype}, with and without bias and residual, against float64 and the unfused ops`, () => {
        for (const [n, k] of WEIGHTS) {
          const weight = makeInput(rng(), [n, k], dtype);
          const bias = makeInput(rng(), [n], dtype);
          for (const lead of LEADING_DIMS) {
            const x = makeInput(rng(), [...lead, k], dtype);
            const residual = makeInput(rng(), [...lead, n], dtype);
            const product = R.reshape(R.matmul(R.reshape(x.ref, [R.size(lead), k]), weight.ref, false, true), [...lead, n]);
            // The terms' size, which roundings of the sum before it cancels scale with (fused: once; unfused: per op).
            const absolute = R.matmul(R.map(R.reshape(x.ref, [R.size(lead), k]), Math.abs), R.map(weight.ref, Math.abs), false, true);
            const magnitude = Math.max(0, ...absolute.data, ...bias.ref.data.map(Math.abs), ...residual.ref.data.map(Math.abs));
            for (const withBias of [false, true]) {
              for (const withResidual of [false, true]) {
                const label = `Linear ${dtype}, x ${formatShape(x.t.shape)}, weight [${n}, ${k}]${withBias ? " + bias" : ""}${withResidual ? " + residual" : ""}`;
                inCase(label, () => {
                  let want = product;
                  if (withBias) want = { shape: want.shape, data: want.data.map((y, i) => y + bias.ref.data[i % n]) };
                  if (withResidual) want = R.zip([want, residual.ref], (y, r) => y + r);
                  const got = linear(x.t, weight.t, withBias ? bias.t : null, withResidual ? { residual: residual.t } : {});
                  expectValues(got, want, dtype, "scaled", 2, magnitude);
                  const unfused = tidy(() => {
                    let y = reshape(matmul(reshape(x.t, [R.size(lead), k]), weight.t, { transposeB: true }), [...lead, n]);
                    if (withBias) y = add(y, bias.t);
                    return withResidual ? add(y, residual.t) : y;
                  });
                  expectValues(got, { shape: [...unfused.shape], data: Float64Array.from(unfused.dataSync()) }, dtype, "scaled", 4, magnitude);
                  got.dispose();
                  unfused.dispose();
                });
              }
            }
          }
        }
      });
    }
  });

  describe("linearBackward", () => {
    // [N, K]: widths off the GEMM's vector alignment, one feature, empty sums (K = 0, no rows), aligned ones. (cuda's
    // one copy of dy for both products, at sizes where it pays, is checked in backend-cuda's dense tests.)
    const WEIGHTS: [number, number][] = [
      [5, 3],
      [1, 1],
      [4, 0],
      [64, 48],
      [33, 40],
    ];
    const LEADS: number[][] = [[7], [2, 30], [0]];
    for (const dtype of FLOAT_DTYPES) {
      check(`LinearBackward ${dtype}: dx = dy weight and dweight = dy^T x against float64`, () => {
        for (const [n, k] of WEIGHTS) {
          const weight = makeInput(rng(), [n, k], dtype);
          for (const lead of LEADS) {
            const x = makeInput(rng(), [...lead, k], dtype);
            const dy = makeInput(rng(), [...lead, n], dtype);
            const rows = R.size(lead);
            const dyRows = R.reshape(dy.ref, [rows, n]);
            const xRows = R.reshape(x.ref, [rows, k]);
            inCase(`LinearBackward ${dtype}, dy ${formatShape(dy.t.shape)}, x ${formatShape(x.t.shape)}, weight [${n}, ${k}]`, () => {
              const { dx, dweight } = linearBackward(dy.t, x.t, weight.t);
              const wantDx = R.reshape(R.matmul(dyRows, weight.ref, false, false), [...lead, k]);
              const largest = (a: Ref) => a.data.reduce((most, v) => Math.max(most, v), 0);
              const magnitudeDx = largest(R.matmul(R.map(dyRows, Math.abs), R.map(weight.ref, Math.abs), false, false));
              expectValues(dx, wantDx, dtype, "scaled", 2, magnitudeDx);
              const wantDw = R.matmul(dyRows, xRows, true, false);
              const magnitudeDw = largest(R.matmul(R.map(dyRows, Math.abs), R.map(xRows, Math.abs), true, false));
              expectValues(dweight, wantDw, dtype, "scaled", 2, magnitudeDw);
              dx.dispose();
              dweight.dispose();
            });
          }
        }
      });
    }
  });

  describe("linearActivation", () => {
    // Widths the GEMM's epilogue takes (N a multiple of 8) and ones it does not, one feature, K = 0.
    const WEIGHTS: [number, number][] = [
      [64, 48],
      [24, 33],
      [9, 16],
      [1, 1],
      [8, 0],
    ];
    const activations = { relu: R.relu, gelu: (v: number) => R.gelu(v, "none"), gelu_tanh: (v: number) => R.gelu(v, "tanh") };
    for (const dtype of FLOAT_DTYPES) {
      check(`LinearActivation ${dtype}: relu, gelu and gelu_tanh, with and without bias, against float64 and the unfused ops`, () => {
        for (const [n, k] of WEIGHTS) {
          const weight = makeInput(rng(), [n, k], dtype);
          const bias = makeInput(rng(), [n], dtype);
          for (const lead of [[2, 3], [5], [0], []]) {
            const x = makeInput(rng(), [...lead, k], dtype);
            const z = R.reshape(R.matmul(R.reshape(x.ref, [R.size(lead), k]), weight.ref, false, true), [...lead, n]);
            for (const activation of ["relu", "gelu", "gelu_tanh"] as const) {
              for (const withBias of [false, true]) {
                inCase(`LinearActivation ${dtype}, ${activation}, x ${formatShape(x.t.shape)}, weight [${n}, ${k}]${withBias ? " + bias" : ""}`, () => {
                  const pre = withBias ? { shape: z.shape, data: z.data.map((v, i) => v + bias.ref.data[i % n]) } : z;
                  const got = linearActivation(x.t, weight.t, withBias ? bias.t : null, activation);
                  expectValues(got, R.map(pre, activations[activation]), dtype, "scaled", 2);
                  const unfused = tidy(() => biasActivation(linear(x.t, weight.t, withBias ? bias.t : null), null, activation));
                  expectValues(got, { shape: [...unfused.shape], data: Float64Array.from(unfused.dataSync()) }, dtype, "scaled", 2);
                  got.dispose();
                  unfused.dispose();
                });
              }
            }
          }
        }
      });
    }
  });

  describe("block-sparse", () => {
    const weight = (shape: [number, number], blockShape: [number, number], density: number, dtype: FloatDType): SparseWeight => {
      const pattern = BsrPattern.random(shape, { blockShape, density, seed: suite.nextSeed() });
      const values = makeInput(rng(), [pattern.nnzBlocks, ...blockShape], dtype);
      return { pattern, values, dense: R.denseWeight(pattern, values.ref) };
    };

    for (const [blockHeight, blockWidth] of BLOCK_SHAPES) {
      const blockRows = blockHeight >= 64 ? 2 : 3;
      const blockCols = blockWidth >= 64 ? 2 : blockHeight === 2 ? 4 : 2;
      const shape: [number, number] = [blockHeight * blockRows, blockWidth * blockCols];
      const [rows, cols] = shape;
      for (const density of DENSITIES) {
        for (const dtype of FLOAT_DTYPES) {
          const where = `${dtype}, block ${blockHeight}x${blockWidth}, density ${density}, W [${rows}, ${cols}]`;

          check(`BsrLinear ${where}`, () => {
            const { pattern, values, dense } = weight(shape, [blockHeight, blockWidth], density, dtype);
            const bias = makeInput(rng(), [rows], dtype);
            for (const lead of LEADING_DIMS) {
              const x = makeInput(rng(), [...lead, cols], dtype);
              const tokens = R.size(lead);
              const yRef = R.matmul(R.reshape(x.ref, [tokens, cols]), dense, false, true);
              inCase(`BsrLinear ${where}, x ${formatShape(x.t.shape)}, no bias`, () =>
                expectValues(bsrLinear(x.t, values.t, pattern), R.reshape(yRef, [...lead, rows]), dtype, "scaled", 2),
              );
              // null is no bias, as linear's and bsrLinearActivation's (it used to reach bias.backend: a TypeError).
              inCase(`BsrLinear ${where}, x ${formatShape(x.t.shape)}, null bias`, () =>
                expectValues(bsrLinear(x.t, values.t, pattern, null), R.reshape(yRef, [...lead, rows]), dtype, "scaled", 2),
              );
              inCase(`BsrLinear ${where}, x ${formatShape(x.t.shape)}, with bias`, () => {
                const yBias = R.zip([yRef, bias.ref], (y, b) => y + b);
                expectValues(bsrLinear(x.t, values.t, pattern, bias.t), R.reshape(yBias, [...lead, rows]), dtype, "scaled", 2);
              });
              // A residual of the output's shape added in (one kernel where the backend fuses it), with and without bias.
              const residual = makeInput(rng(), [...lead, rows], dtype);
              for (const withBias of [false, true]) {
                inCase(`BsrLinear ${where}, x ${formatShape(x.t.shape)}${withBias ? " + bias" : ""} + residual`, () => {
                  const y = withBias ? R.zip([yRef, bias.ref], (v, b) => v + b) : yRef;
                  const want = R.zip([R.reshape(y, [...lead, rows]), residual.ref], (v, r) => v + r);
                  expectValues(bsrLinear(x.t, values.t, pattern, withBias ? bias.t : null, { residual: residual.t }), want, dtype, "scaled", 2);
                });
              }
            }
          });

          // The fused Linear + activation: against float64 math and against the unfused pair on this backend.
          if (density === 0.5 || density === 1) {
            check(`BsrLinearActivation ${where}`, () => {
              const { pattern, values, dense } = weight(shape, [blockHeight, blockWidth], density, dtype);
              const bias = makeInput(rng(), [rows], dtype);
              const activations = { relu: R.relu, gelu: (v: number) => R.gelu(v, "none"), gelu_tanh: (v: number) => R.gelu(v, "tanh") };
              for (const lead of [[2, 3], [0]]) {
                const x = makeInput(rng(), [...lead, cols], dtype);
                const zRef = R.matmul(R.reshape(x.ref, [R.size(lead), cols]), dense, false, true);
                for (const activation of ["relu", "gelu", "gelu_tanh"] as const) {
                  for (const withBias of [false, true]) {
                    const label = `BsrLinearActivation ${where}, ${activation}, x ${formatShape(x.t.shape)}${withBias ? " + bias" : ""}`;
                    inCase(label, () => {
                      const pre = withBias ? R.zip([zRef, bias.ref], (z, b) => z + b) : zRef;
                      const want = R.reshape(R.map(pre, activations[activation]), [...lead, rows]);
                      const got = bsrLinearActivation(x.t, values.t, pattern, withBias ? bias.t : null, activation);
                      expectValues(got, want, dtype, "scaled", 2);
                      const z = bsrLinear(x.t, values.t, pattern, withBias ? bias.t : undefined);
                      const unfused = biasActivation(z, null, activation);
                      expectValues(got, { shape: [...unfused.shape], data: Float64Array.from(unfused.dataSync()) }, dtype, "scaled", 2);
                      for (const t of [got, z, unfused]) t.dispose();
                    });
                  }
                }
              }
            });
          }

          check(`BsrMatmul ${where}`, () => {
            const { pattern, values, dense } = weight(shape, [blockHeight, blockWidth], density, dtype);
            for (const lead of LEADING_DIMS) {
              const dy = makeInput(rng(), [...lead, rows], dtype);
              inCase(`BsrMatmul ${where}, dy ${formatShape(dy.t.shape)}`, () => {
                const dxRef = R.matmul(R.reshape(dy.ref, [R.size(lead), rows]), dense, false, false);
                expectValues(bsrMatmul(dy.t, values.t, pattern), R.reshape(dxRef, [...lead, cols]), dtype, "scaled", 2);
              });
            }
          });

          // dX taken on through the activation of the layer before: against float64 math and the unfused pair.
          if (density === 0.5 || density === 1) {
            check(`BsrMatmulActivationBackward ${where}`, () => {
              const { pattern, values, dense } = weight(shape, [blockHeight, blockWidth], density, dtype);
              const derivatives = { relu: (v: number) => (v > 0 ? 1 : 0), gelu: (v: number) => R.geluGrad(v, "none"), gelu_tanh: (v: number) => R.geluGrad(v, "tanh") };
              for (const lead of [[2, 3], [0], []]) {
                const dy = makeInput(rng(), [...lead, rows], dtype);
                const pre = makeInput(rng(), [...lead, cols], dtype);
                const dx = R.reshape(R.matmul(R.reshape(dy.ref, [R.size(lead), rows]), dense, false, false), [...lead, cols]);
                for (const activation of ["relu", "gelu", "gelu_tanh"] as const) {
                  inCase(`BsrMatmulActivationBackward ${where}, ${activation}, dy ${formatShape(dy.t.shape)}`, () => {
                    const dpre = R.zip([dx, pre.ref], (g, v) => g * derivatives[activation](v));
                    const dbias = R.ref([cols], (j) => {
                      let total = 0;
                      for (let i = j; i < dpre.data.length; i += cols) total += dpre.data[i];
                      return total;
                    });
                    const [gotPre, gotBias] = bsrMatmulActivationBackward(dy.t, values.t, pattern, pre.t, activation);
                    expectValues(gotPre, dpre, dtype, "scaled", 2);
                    expectValues(gotBias, dbias, dtype, "scaled", 2);
                    const unfusedDx = bsrMatmul(dy.t, values.t, pattern);
                    const [wantPre, wantBias] = biasActivationBackward(unfusedDx, pre.t, null, activation);
                    for (const [got, want] of [[gotPre, wantPre], [gotBias, wantBias]] as const) {
                      expectValues(got, { shape: [...want.shape], data: Float64Array.from(want.dataSync()) }, dtype, "scaled", 2);
                    }
                    for (const t of [gotPre, gotBias, unfusedDx, wantPre, wantBias]) t.dispose();
                  });
                }
              }
            });
          }

          check(`SampledMatmul ${where}`, () => {
            const { pattern } = weight(shape, [blockHeight, blockWidth], density, dtype);
            const { blockRow, blockCol } = pattern.coordinates;
            for (const lead of LEADING_DIMS) {
              const x = makeInput(rng(), [...lead, cols], dtype);
              const dy = makeInput(rng(), [...lead, rows], dtype);
              inCase(`SampledMatmul ${where}, dy ${formatShape(dy.t.shape)}, x ${formatShape(x.t.shape)}`, () => {
                const tokens = R.size(lead);
                const dwDense = R.matmul(R.reshape(dy.ref, [tokens, rows]), R.reshape(x.ref, [tokens, cols]), true, false);
                const dwRef = R.ref([pattern.nnzBlocks, blockHeight, blockWidth], (i) => {
                  const k = Math.floor(i / (blockHeight * blockWidth));
                  const r = Math.floor(i / blockWidth) % blockHeight;
                  const c = i % blockWidth;
                  return dwDense.data[(blockRow[k] * blockHeight + r) * cols + blockCol[k] * blockWidth + c];
                });
                expectValues(sampledMatmul(dy.t, x.t, pattern), dwRef, dtype, "scaled", 2);
              });
            }
          });

          check(`BlockNorms ${where}`, () => {
            const { pattern, values } = weight(shape, [blockHeight, blockWidth], density, dtype);
            const blockSize = blockHeight * blockWidth;
            const normsRef = R.ref([pattern.nnzBlocks], (k) => {
              let s = 0;
              for (let i = 0; i < blockSize; i++) s += values.ref.data[k * blockSize + i] ** 2;
              return Math.sqrt(s);
            });
            inCase(`BlockNorms ${where}, values ${formatShape(values.t.shape)}`, () => expectValues(blockNorms(values.t), normsRef, "float32", "elementwise"));
          });
        }
      }
    }
    check("BsrLinear and BsrMatmul float32 on a pattern with empty block rows and columns", () => {
      const pattern = BsrPattern.fromMask([48, 64], [16, 16], [0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]);
      const values = makeInput(rng(), [pattern.nnzBlocks, 16, 16], "float32");
      const w = R.denseWeight(pattern, values.ref);
      const x = makeInput(rng(), [5, 64], "float32");
      inCase("BsrLinear float32, block 16x16, W [48, 64] with empty rows, x [5, 64]", () =>
        expectValues(bsrLinear(x.t, values.t, pattern), R.matmul(x.ref, w, false, true), "float32", "scaled"),
      );
      const dy = makeInput(rng(), [5, 48], "float32");
      inCase("BsrMatmul float32, block 16x16, W [48, 64] with empty columns, dy [5, 48]", () =>
        expectValues(bsrMatmul(dy.t, values.t, pattern), R.matmul(dy.ref, w, false, false), "float32", "scaled"),
      );
    });
  });
}
