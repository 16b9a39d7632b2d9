/**
 * bsrLinear with few tokens, where the cuda backend dispatches to its decoding kernel (each stored block
 * read once; from 33 tokens X staged in shared memory, over ranges of K summed by a second pass): 1-16 tokens in
 * every float dtype and up to 64 in bfloat16 and float16, block shapes 16-128 wide
 * (square and not), with and without bias, on random patterns with empty block rows. Checked against the js backend's result
 * and float64 math; outputs are poisoned, so an element the kernel skips fails. On sm_90+ the kernel may start
 * before the kernel ahead of it in the stream ends (programmatic dependent launch): a chain of layers whose inputs
 * and weights other kernels have just written checks that it never reads them early.
 */
import { type Activation, BsrPattern, type DType, type Tensor, add, biasActivation, bsrLinear, gelu, mul, runKernel, setBackend, tensor, tidy } from "@blocksparse/core";
import { reference } from "@blocksparse/core/testing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { FLOAT_DTYPES, cudaMissing, expectClose, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("decode.test.ts");

/** A pattern with each block present with probability `density`, and block rows 0 and 2 left empty. */
function patternWithEmptyRows(shape: [number, number], block: [number, number], density: number, next: () => number): BsrPattern {
  const blockRows = shape[0] / block[0];
  const blockCols = shape[1] / block[1];
  const mask = new Uint8Array(blockRows * blockCols);
  for (let row = 0; row < blockRows; row++) {
    if (row === 0 || row === 2) continue;
    for (let col = 0; col < blockCols; col++) mask[row * blockCols + col] = next() < density ? 1 : 0;
  }
  return BsrPattern.fromMask(shape, block, mask);
}

/** Y = X W^T + b in float64 from the values the tensors hold. */
function linearReference(pattern: BsrPattern, x: Float64Array, values: Float64Array, bias: Float64Array | undefined, m: number): Float64Array {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const y = new Float64Array(m * rows);
  if (bias) for (let i = 0; i < m; i++) for (let o = 0; o < rows; o++) y[i * rows + o] = bias[o];
  for (let p = 0; p < pattern.nnzBlocks; p++)
    for (let r = 0; r < R; r++) {
      const row = blockRow[p] * R + r;
      for (let c = 0; c < C; c++) {
        const w = values[(p * R + r) * C + c];
        const col = blockCol[p] * C + c;
        for (let i = 0; i < m; i++) y[i * rows + row] += x[i * cols + col] * w;
      }
    }
  return y;
}

/** The js backend's bsrLinear on the same values. */
function jsLinear(pattern: BsrPattern, dtype: DType, x: Float64Array, xShape: number[], values: Float64Array, bias: Float64Array | undefined): Float64Array {
  setBackend("js");
  try {
    return tidy(() => {
      const [R, C] = pattern.blockShape;
      const out = bsrLinear(
        tensor(x, xShape, dtype),
        tensor(values, [pattern.nnzBlocks, R, C], dtype),
        pattern,
        bias ? tensor(bias, [pattern.shape[0]], dtype) : undefined,
      );
      return Float64Array.from(out.dataSync());
    });
  } finally {
    setBackend("cuda");
  }
}

/** A layer of the epilogue tests: its pattern, random inputs for m tokens in dtype, and a label. */
interface EpilogueCase {
  pattern: BsrPattern;
  rows: number;
  m: number;
  dtype: DType;
  x: ReturnType<typeof randomTensor>;
  values: ReturnType<typeof randomTensor>;
  bias: ReturnType<typeof randomTensor>;
  label: string;
}

/**
 * Calls `check` inside a tidy for each block shape (32 and 64 square, 16 x 64 and 128 x 16), every float dtype and
 * token counts across the decoding path's kernels (1-64: variant 0, the staged variant past 32 where it runs, float32's
 * simple kernel past 16), on four block rows (two empty). The square blocks' layers are wider than one of the staged
 * variant's ranges of K (2240 columns: three ranges, the last short; 1088: two), so that with the variant forced its
 * sum pass writes the outputs; 16 x 64's one range has its partials summed by that pass alone.
 */
function forEachEpilogueCase(seed: number, check: (c: EpilogueCase, next: () => number) => void): void {
  const next = random(seed);
  const blocks: [number, number][] = [[32, 32], [64, 64], [16, 64], [128, 16]];
  const widths: Record<number, number> = { 32: 2240, 64: 1088 };
  for (const block of blocks) {
    const shape: [number, number] = [4 * block[0], block[0] === block[1] ? widths[block[0]] : Math.max(4 * block[1], 192)];
    const pattern = patternWithEmptyRows(shape, block, 0.6, next);
    const [rows, cols] = shape;
    for (const dtype of FLOAT_DTYPES) {
      for (const m of [1, 3, 8, 16, 24, 40, 64]) {
        tidy(() => {
          const x = randomTensor(next, [m, cols], dtype);
          const values = randomTensor(next, [pattern.nnzBlocks, ...block], dtype);
          const bias = randomTensor(next, [rows], dtype);
          check({ pattern, rows, m, dtype, x, values, bias, label: `${block.join("x")} ${dtype} M=${m}` }, next);
        });
      }
    }
  }
}

const BLOCKS: [number, number][] = [
  [16, 16],
  [32, 32],
  [64, 64],
  [128, 128],
  [16, 64],
  [64, 32],
  [128, 16],
];
// Past 16 tokens the decoding kernel takes bfloat16 and float16 only (float32 runs the simple kernel there).
const TOKENS = [1, 2, 3, 8, 9, 16, 17, 24, 32, 33, 48, 64];
// The js backend is slow on large blocks: it is the second reference on two token counts (float64 on all).
const JS_TOKENS = [1, 9];
const TIMEOUT_MS = 120_000;

describe.skipIf(cudaMissing)("bsrLinear with few tokens on cuda (the decoding path)", () => {
  beforeAll(() => {
    useCuda();
  });
  afterAll(() => {
    setBackend("cuda");
  });

  for (const block of BLOCKS) {
    test(`${block.join("x")} blocks, 1-64 tokens, every float dtype, with and without bias`, () => {
      const next = random(block[0] * 131 + block[1]);
      // Four block rows (two empty) and enough columns for several blocks per row.
      const shape: [number, number] = [4 * block[0], Math.max(4 * block[1], 192)];
      const pattern = patternWithEmptyRows(shape, block, 0.6, next);
      const [rows, cols] = shape;
      for (const dtype of FLOAT_DTYPES) {
        for (const m of TOKENS) {
          tidy(() => {
            const x = randomTensor(next, [m, cols], dtype);
            const values = randomTensor(next, [pattern.nnzBlocks, ...block], dtype);
            const bias = randomTensor(next, [rows], dtype);
            for (const withBias of [true, false]) {
              const what = `${dtype} M=${m} ${withBias ? "with" : "without"} bias`;
              const y = bsrLinear(x.t, values.t, pattern, withBias ? bias.t : undefined);
              expect(y.shape).toEqual([m, rows]);
              const out = y.dataSync();
              const biasValues = withBias ? bias.values : undefined;
              expectClose(out, linearReference(pattern, x.values, values.values, biasValues, m), dtype, `${what} vs float64`);
              if (withBias && JS_TOKENS.includes(m)) expectClose(out, jsLinear(pattern, dtype, x.values, [m, cols], values.values, biasValues), dtype, `${what} vs js`);
            }
          });
        }
      }
    }, TIMEOUT_MS);
  }

  test("a chain of layers, each input and some weights written by the kernel just before, no sync between", () => {
    const next = random(2024);
    // Past one 1024-column range of K: where the staged variant runs (BLOCKSPARSE_CUDA_DECODE_STAGED=1, gpu-tests.sh),
    // its float32 partials' pass is in the chain too.
    const width = 1056;
    const layers = 8;
    const patterns = Array.from({ length: layers }, () => patternWithEmptyRows([width, width], [32, 32], 0.5, next));
    for (const dtype of FLOAT_DTYPES) {
      for (const m of [1, 8, 16, 40]) {
        tidy(() => {
          // Values scaled so that a layer keeps its input's size (uniform, variance scale^2 / 3, over the ~0.5 width
          // stored columns of a row).
          const scale = Math.sqrt(3 / (0.5 * width));
          const stored = patterns.map((p) => randomTensor(next, [p.nnzBlocks, 32, 32], dtype, scale));
          const biases = patterns.map(() => randomTensor(next, [width], dtype, 0.1));
          const inputs: Tensor[] = [randomTensor(next, [m, width], dtype).t];
          const weights: Tensor[] = [];
          const outputs: Tensor[] = [];
          // Three passes over the stack, so that launches queue up behind each other; every other layer's
          // weights come fresh from a kernel (a scale by 1), every other output goes through a GELU.
          for (let pass = 0; pass < 3; pass++)
            for (let i = 0; i < layers; i++) {
              const w = i % 2 === 0 ? mul(stored[i].t, 1) : stored[i].t;
              const y = bsrLinear(inputs[inputs.length - 1], w, patterns[i], biases[i].t);
              weights.push(w);
              outputs.push(y);
              inputs.push(i % 2 === 1 ? gelu(y) : y);
            }
          for (let k = 0; k < outputs.length; k++) {
            const i = k % layers;
            const x = Float64Array.from(inputs[k].dataSync());
            const values = Float64Array.from(weights[k].dataSync());
            const want = linearReference(patterns[i], x, values, biases[i].values, m);
            expectClose(outputs[k].dataSync(), want, dtype, `${dtype} M=${m} layer ${k} of the chain`);
          }
        });
      }
    }
  }, TIMEOUT_MS);

  // From 33 tokens in half precision the staged variant covers blocks 32-128 columns wide: each CTA copies X's columns
  // of one range of K (1024) into shared memory for a group of block rows, its warps take the group's 16-row slices in
  // turn, and with more than one range it writes float32 partials that a second pass sums (the first range adds the
  // bias). The default options take it on large layers at density 0.35 or more (the 8192-row case);
  // BLOCKSPARSE_CUDA_DECODE_STAGED=1 takes it for every case (gpu-tests.sh runs this file so too): widths past one range
  // (the last one short), empty block rows, and on a GPU of 132 SMs groups of 7 block rows with the last one cut short
  // (405 rows over two ranges; 10 and 6 for the 8192-row case) and 64x64 groups of 16 slices for 12 warps, so that
  // warps take a second slice in turn.
  test("33-64 tokens over several ranges of K and groups of block rows (the staged variant), half precision", () => {
    const next = random(5151);
    const cases: { shape: [number, number]; block: [number, number]; tokens: number[]; density: number; dtypes: ("bfloat16" | "float16")[] }[] = [
      { shape: [512, 2304], block: [32, 32], tokens: [33, 40, 57, 64], density: 0.3, dtypes: ["bfloat16", "float16"] },
      { shape: [384, 1088], block: [64, 64], tokens: [48], density: 0.3, dtypes: ["bfloat16", "float16"] },
      { shape: [256, 1152], block: [128, 128], tokens: [64], density: 0.3, dtypes: ["bfloat16", "float16"] },
      { shape: [192, 2112], block: [64, 32], tokens: [36], density: 0.3, dtypes: ["bfloat16", "float16"] },
      { shape: [12960, 1088], block: [32, 32], tokens: [40], density: 0.3, dtypes: ["bfloat16"] },
      { shape: [8192, 4608], block: [32, 32], tokens: [44], density: 0.5, dtypes: ["float16"] },
      { shape: [16384, 1088], block: [64, 64], tokens: [48], density: 0.3, dtypes: ["bfloat16"] },
    ];
    for (const { shape, block, tokens, density, dtypes } of cases) {
      const pattern = patternWithEmptyRows(shape, block, density, next);
      const [rows, cols] = shape;
      for (const dtype of dtypes) {
        for (const m of tokens) {
          tidy(() => {
            const x = randomTensor(next, [m, cols], dtype);
            const values = randomTensor(next, [pattern.nnzBlocks, ...block], dtype);
            const bias = randomTensor(next, [rows], dtype);
            for (const withBias of rows >= 8192 ? [true] : [true, false]) {
              const y = bsrLinear(x.t, values.t, pattern, withBias ? bias.t : undefined);
              expect(y.shape).toEqual([m, rows]);
              const want = linearReference(pattern, x.values, values.values, withBias ? bias.values : undefined, m);
              expectClose(y.dataSync(), want, dtype, `${rows}x${cols} ${block.join("x")} ${dtype} M=${m} ${withBias ? "with" : "without"} bias`);
            }
          });
        }
      }
    }
  }, TIMEOUT_MS);

  // bsrLinearActivation (what nn runs for BlockSparseLinear -> GELU or ReLU) with few tokens: the decoding kernel writes
  // Z and A = activation(Z) from its epilogue, where the activation pass used to follow it as a kernel of its own (the
  // staged variant, 33-64 tokens on large layers or BLOCKSPARSE_CUDA_DECODE_STAGED=1: from its sum pass). float32 past
  // 16 tokens keeps the product and the pass; either way Z must equal bsrLinear's output and A the pass over it, bit for
  // bit, and both float64 math. Outputs are fresh buffers each call, so an element the epilogue skips shows as the allocator's poison.
  test("bsrLinearActivation with few tokens: Z and activation(Z) from the decoding kernel's epilogue", () => {
    const activations: Record<Activation, (v: number) => number> = {
      relu: reference.relu,
      gelu: (v) => reference.gelu(v, "none"),
      gelu_tanh: (v) => reference.gelu(v, "tanh"),
    };
    forEachEpilogueCase(4242, ({ pattern, rows, m, dtype, x, values, bias, label }) => {
      for (const [activation, act] of Object.entries(activations) as [Activation, (v: number) => number][]) {
        for (const withBias of [true, false]) {
          const what = `${label} ${activation} ${withBias ? "with" : "without"} bias`;
          const b = withBias ? bias.t : undefined;
          const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: b }, { pattern, activation });
          expect(z.shape).toEqual([m, rows]);
          expect(a.shape).toEqual([m, rows]);
          const zOut = z.dataSync();
          expect(Array.from(zOut), `${what}: Z against bsrLinear`).toEqual(Array.from(bsrLinear(x.t, values.t, pattern, b).dataSync()));
          expect(Array.from(a.dataSync()), `${what}: A against the activation pass`).toEqual(Array.from(biasActivation(z, null, activation).dataSync()));
          expectClose(zOut, linearReference(pattern, x.values, values.values, withBias ? bias.values : undefined, m), dtype, `${what}: Z vs float64`);
          expectClose(a.dataSync(), Float64Array.from(zOut, act), dtype, `${what}: A vs float64 of Z`);
        }
      }
    });
  }, TIMEOUT_MS);

  // bsrLinear with a residual (what nn's BlockSparseLinear.forwardResidual runs for a residual connection): the decoding
  // kernel, or the staged variant's sum pass, adds it to the float32 sums before Y is rounded, where the other routes
  // (float32 past 16 tokens) add it after the product. Against float64 math, and the written-out add within its
  // rounding.
  test("bsrLinear with a residual, few tokens: the decoding kernel's epilogue adds it", () => {
    forEachEpilogueCase(4343, ({ pattern, rows, m, dtype, x, values, bias, label }, next) => {
      const residual = randomTensor(next, [m, rows], dtype);
      for (const withBias of [true, false]) {
        const what = `${label} ${withBias ? "with" : "without"} bias`;
        const b = withBias ? bias.t : undefined;
        const y = bsrLinear(x.t, values.t, pattern, b, { residual: residual.t });
        expect(y.shape).toEqual([m, rows]);
        const want = linearReference(pattern, x.values, values.values, withBias ? bias.values : undefined, m).map((v, i) => v + residual.values[i]);
        expectClose(y.dataSync(), want, dtype, `${what}: Y + residual vs float64`);
        expectClose(y.dataSync(), Float64Array.from(add(residual.t, bsrLinear(x.t, values.t, pattern, b)).dataSync()), dtype, `${what}: against the written-out add`);
      }
    });
  }, TIMEOUT_MS);

  test("leading dims, 65 tokens (past the decoding path) and an empty pattern", () => {
    const next = random(7);
    const pattern = patternWithEmptyRows([128, 256], [32, 32], 0.5, next);
    for (const dtype of FLOAT_DTYPES) {
      tidy(() => {
        const values = randomTensor(next, [pattern.nnzBlocks, 32, 32], dtype);
        const bias = randomTensor(next, [128], dtype);
        for (const lead of [[2, 3], [5, 7], [65]]) {
          const m = lead.reduce((a, b) => a * b, 1);
          const x = randomTensor(next, [...lead, 256], dtype);
          const y = bsrLinear(x.t, values.t, pattern, bias.t);
          expect(y.shape).toEqual([...lead, 128]);
          expectClose(y.dataSync(), linearReference(pattern, x.values, values.values, bias.values, m), dtype, `${dtype} [${lead}] tokens`);
        }
        // No stored block: Y is the bias alone.
        const empty = BsrPattern.fromMask([64, 96], [16, 16], new Uint8Array(24));
        const x = randomTensor(next, [4, 96], dtype);
        const emptyBias = randomTensor(next, [64], dtype);
        const y = bsrLinear(x.t, randomTensor(next, [0, 16, 16], dtype).t, empty, emptyBias.t);
        expectClose(y.dataSync(), linearReference(empty, x.values, new Float64Array(0), emptyBias.values, 4), dtype, `${dtype} empty pattern`);
      });
    }
  }, TIMEOUT_MS);
});
