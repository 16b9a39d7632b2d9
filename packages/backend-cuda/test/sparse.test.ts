import {
  BsrPattern,
  biasActivation,
  biasActivationBackward,
  blockNorms,
  bsrLinear,
  bsrMatmul,
  bsrMatmulActivationBackward,
  full,
  runKernel,
  sampledMatmul,
  tensor,
  tidy,
} from "@blocksparse/core";
import { reference } from "@blocksparse/core/testing";
import { beforeAll, describe, expect, test } from "vitest";
import {
  FLOAT_DTYPES,
  cudaMissing,
  expectClose,
  random,
  randomTensor,
  reportCudaAvailability,
  useCuda,
} from "./cuda";
import { denseWeight, linearReference, matmulReference, sampledOutput, sampledReference } from "./reference_math";

reportCudaAvailability("sparse.test.ts");

/** The rows of `data` [m, width] at `tokens`, in that order: [tokens.length, width]. */
function pickTokens(data: ArrayLike<number>, tokens: readonly number[], width: number): Float64Array {
  const out = new Float64Array(tokens.length * width);
  tokens.forEach((t, k) => {
    for (let c = 0; c < width; c++) out[k * width + c] = data[t * width + c];
  });
  return out;
}

/**
 * Y = X W^T + bias and dX = dY W in float64 at the given tokens only ([tokens.length, rows] and [.., cols]), from the
 * stored blocks: block by block, then token by token, so that a block's values stay in cache while every token's
 * slices of x, dy and the references pass over them. Without dY (null) dX is left at zeros.
 */
function sampledProducts(
  pattern: BsrPattern,
  w: Float64Array,
  bias: Float64Array,
  xs: ArrayLike<number>,
  gs: ArrayLike<number> | null,
  tokens: readonly number[],
): { yRef: Float64Array; dxRef: Float64Array } {
  const [rows, cols] = pattern.shape;
  const [br, bc] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const yRef = new Float64Array(tokens.length * rows);
  const dxRef = new Float64Array(tokens.length * cols);
  for (let k = 0; k < tokens.length; k++) yRef.set(bias, k * rows);
  for (let p = 0; p < pattern.nnzBlocks; p++) {
    const rowBase = blockRow[p] * br, colBase = blockCol[p] * bc;
    tokens.forEach((i, k) => {
      for (let r = 0; r < br; r++) {
        const wRow = (p * br + r) * bc;
        let y = 0;
        for (let c = 0; c < bc; c++) y += xs[i * cols + colBase + c] * w[wRow + c];
        if (gs !== null) {
          const g = gs[i * rows + rowBase + r];
          for (let c = 0; c < bc; c++) dxRef[k * cols + colBase + c] += g * w[wRow + c];
        }
        yRef[k * rows + rowBase + r] += y;
      }
    });
  }
  return { yRef, dxRef };
}

/** One random token of every `every` before the last `tail` tokens of m, then those: the tokens a check samples. */
function spreadTokens(next: () => number, m: number, every: number, tail = 37): number[] {
  const tokens: number[] = [];
  for (let i0 = 0; i0 < m - tail; i0 += every) tokens.push(i0 + Math.floor(next() * every));
  for (let i = m - tail; i < m; i++) tokens.push(i);
  return tokens;
}

/** A random pattern of `block` blocks at `density` with the given block rows and columns left empty. */
function patternWithEmptyLines(
  next: () => number,
  shape: readonly [number, number],
  block: readonly [number, number],
  density: number,
  emptyRows: readonly number[],
  emptyCols: readonly number[],
): BsrPattern {
  const blockRows = shape[0] / block[0], blockCols = shape[1] / block[1];
  const mask = Array.from({ length: blockRows * blockCols }, (_, k) => {
    const r = Math.floor(k / blockCols), c = k % blockCols;
    return !emptyRows.includes(r) && !emptyCols.includes(c) && next() < density;
  });
  return BsrPattern.fromMask([shape[0], shape[1]], [block[0], block[1]], mask);
}

/** Runs `fn` with the dense route off (the block kernels run), then gives the backend its mode back. */
function withoutDenseRoute(fn: () => void): void {
  const backend = useCuda();
  const previous = backend.setDenseProductMode("never");
  try {
    fn();
  } finally {
    backend.setDenseProductMode(previous);
  }
}

// Block shapes of every kind: 1x1, odd, rectangular both ways, larger than one 32-wide tile, 64x64, and the shapes
// besides the squares that the tensor-core tiles take in float16/bfloat16 (16x16 and the 1:2 and 2:1 rectangles),
// each with lines of several blocks.
const CASES: { shape: [number, number]; block: [number, number] }[] = [
  { shape: [5, 7], block: [1, 1] },
  { shape: [6, 9], block: [2, 3] },
  { shape: [9, 140], block: [3, 70] },
  { shape: [48, 64], block: [16, 16] },
  { shape: [96, 128], block: [32, 32] },
  { shape: [64, 40], block: [32, 8] },
  { shape: [40, 64], block: [8, 32] },
  { shape: [96, 160], block: [48, 80] },
  { shape: [128, 192], block: [64, 64] },
  { shape: [64, 160], block: [16, 32] },
  { shape: [96, 80], block: [32, 16] },
  { shape: [96, 192], block: [32, 64] },
  { shape: [192, 96], block: [64, 32] },
  { shape: [128, 384], block: [64, 128] },
  { shape: [384, 128], block: [128, 64] },
];

describe.skipIf(cudaMissing)("block-sparse kernels on cuda against float64 math", () => {
  beforeAll(() => {
    useCuda();
  });

  for (const { shape, block } of CASES) {
    for (const density of [0, 0.4, 1]) {
      test(`W ${shape.join("x")} in ${block.join("x")} blocks at density ${density}`, () => {
        const next = random(shape[0] * 1000 + block[1] * 10 + density * 7);
        const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: shape[1] + block[0] });
        const [rows, cols] = shape;
        const [R, C] = block;
        for (const dtype of FLOAT_DTYPES) {
          tidy(() => {
            // Leading dims [2, 35] flatten to 70 rows: more than one 64-row tile, not a multiple of it.
            const lead = [2, 35];
            const m = 70;
            const x = randomTensor(next, [...lead, cols], dtype);
            const values = randomTensor(next, [pattern.nnzBlocks, R, C], dtype);
            const bias = randomTensor(next, [rows], dtype);
            const dy = randomTensor(next, [...lead, rows], dtype);
            const w = denseWeight(pattern, values.values);

            const y = bsrLinear(x.t, values.t, pattern, bias.t);
            expect(y.shape).toEqual([...lead, rows]);
            const yRef = linearReference(x.values, w, m, rows, cols, bias.values);
            expectClose(y.dataSync(), yRef, dtype, `bsrLinear ${dtype}`);

            const yNoBias = bsrLinear(x.t, values.t, pattern);
            const yNoBiasRef = yRef.map((v, i) => v - bias.values[i % rows]);
            expectClose(yNoBias.dataSync(), yNoBiasRef, dtype, `bsrLinear without bias ${dtype}`);

            const dx = bsrMatmul(dy.t, values.t, pattern);
            expect(dx.shape).toEqual([...lead, cols]);
            const dxRef = matmulReference(dy.values, w, m, rows, cols);
            expectClose(dx.dataSync(), dxRef, dtype, `bsrMatmul ${dtype}`);

            const dw = sampledMatmul(dy.t, x.t, pattern);
            expect(dw.shape).toEqual([pattern.nnzBlocks, R, C]);
            const dwRef = sampledReference(pattern, dy.values, x.values, m);
            expectClose(dw.dataSync(), dwRef, dtype, `sampledMatmul ${dtype}`);

            const norms = blockNorms(values.t);
            expect(norms.dtype).toBe("float32");
            const normsRef = new Float64Array(pattern.nnzBlocks);
            for (let p = 0; p < pattern.nnzBlocks; p++) {
              let sum = 0;
              for (let e = 0; e < R * C; e++) sum += values.values[p * R * C + e] ** 2;
              normsRef[p] = Math.sqrt(sum);
            }
            expectClose(norms.dataSync(), normsRef, "float32", `blockNorms ${dtype}`);
          });
        }
      });
    }
  }

  // BsrLinearActivation at tile-kernel sizes (more than 16 tokens): z and activation(z) against float64 math, every
  // element written (outputs poisoned). In float16/bfloat16 the activation runs on the MUFU's exponential and
  // reciprocal (erf by Abramowitz-Stegun), float32 on erff/tanhf.
  const ACTIVATIONS = {
    relu: reference.relu,
    gelu: (v: number) => reference.gelu(v, "none"),
    gelu_tanh: (v: number) => reference.gelu(v, "tanh"),
  } as const;
  for (const { shape, block } of [
    { shape: [96, 128] as [number, number], block: [32, 32] as [number, number] },
    { shape: [128, 192] as [number, number], block: [64, 64] as [number, number] },
    { shape: [256, 384] as [number, number], block: [128, 128] as [number, number] },
    { shape: [48, 64] as [number, number], block: [16, 16] as [number, number] },
  ]) {
    test(`bsrLinearActivation, W ${shape.join("x")} in ${block.join("x")} blocks: z and activation(z) against float64`, () => {
      useCuda();
      const next = random(shape[0] * 31 + block[0]);
      const [rows, cols] = shape;
      for (const density of [0.4, 1]) {
        const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: shape[1] + block[0] + density * 10 });
        for (const dtype of FLOAT_DTYPES) {
          tidy(() => {
            const m = 150;
            // Inputs of scale 0.25: pre-activations of order 1-3, where the GELUs bend and their tails are small.
            const x = randomTensor(next, [3, 50, cols], dtype, 0.25);
            const values = randomTensor(next, [pattern.nnzBlocks, ...block], dtype, 0.25);
            const bias = randomTensor(next, [rows], dtype);
            const w = denseWeight(pattern, values.values);
            for (const withBias of [false, true]) {
              const zRef = linearReference(x.values, w, m, rows, cols, withBias ? bias.values : undefined);
              for (const activation of ["relu", "gelu", "gelu_tanh"] as const) {
                const what = `${dtype} density ${density} ${activation}${withBias ? " + bias" : ""}`;
                const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: withBias ? bias.t : undefined }, { pattern, activation });
                expect(a.shape).toEqual([3, 50, rows]);
                expectClose(z.dataSync(), zRef, dtype, `z ${what}`);
                expectClose(a.dataSync(), zRef.map(ACTIVATIONS[activation]), dtype, `activation ${what}`);
              }
            }
          });
        }
      }
    });
  }

  // float32 with sides that are multiples of 16 runs the register-tiled CUDA-core kernels (bsr_simt.cu): 128-token tiles
  // of 16, 32 or 64 features, and dW's 16/32 x 16/32 tiles with 64-token steps. 300 tokens: three token tiles, the last
  // part empty; five dW steps, the last part empty. Block sides of 16-128 and 48, 80, 96 (three 32-wide output tiles per
  // line), outputs poisoned, against float64.
  test("float32 register-tiled kernels: bsrLinear, bsrMatmul and sampledMatmul over several token tiles against float64", () => {
    useCuda();
    const next = random(4099);
    const m = 300;
    const shapes: { shape: [number, number]; block: [number, number] }[] = [
      { shape: [96, 128], block: [32, 32] },
      { shape: [192, 128], block: [64, 64] },
      { shape: [256, 384], block: [128, 128] },
      { shape: [48, 64], block: [16, 16] },
      { shape: [64, 96], block: [16, 48] },
      { shape: [64, 160], block: [16, 32] },
      { shape: [96, 80], block: [32, 16] },
      { shape: [96, 160], block: [48, 80] },
      { shape: [192, 96], block: [96, 32] },
      { shape: [96, 192], block: [32, 96] },
      { shape: [128, 384], block: [64, 128] },
      { shape: [384, 128], block: [128, 64] },
    ];
    for (const { shape, block } of shapes) {
      for (const density of [0, 0.4, 1]) {
        const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: shape[0] + block[1] * 5 });
        const [rows, cols] = shape;
        const [R, C] = block;
        tidy(() => {
          const what = `${shape.join("x")} in ${block.join("x")} blocks, density ${density}`;
          const x = randomTensor(next, [3, 100, cols], "float32");
          const dy = randomTensor(next, [3, 100, rows], "float32");
          const values = randomTensor(next, [pattern.nnzBlocks, R, C], "float32");
          const bias = randomTensor(next, [rows], "float32");
          const w = denseWeight(pattern, values.values);
          const yRef = linearReference(x.values, w, m, rows, cols, bias.values);
          expectClose(bsrLinear(x.t, values.t, pattern, bias.t).dataSync(), yRef, "float32", `bsrLinear ${what}`);
          const dxRef = matmulReference(dy.values, w, m, rows, cols);
          expectClose(bsrMatmul(dy.t, values.t, pattern).dataSync(), dxRef, "float32", `bsrMatmul ${what}`);
          const dwRef = sampledReference(pattern, dy.values, x.values, m);
          expectClose(sampledMatmul(dy.t, x.t, pattern).dataSync(), dwRef, "float32", `sampledMatmul ${what}`);
        });
      }
    }
  }, 120_000);

  // The block shapes both dense routes are checked on: every shape of CASES from 16x16 on, and 128x128.
  // From 3x70 on: the copies between the dense scratch and the blocks move 3x70's blocks (rows of 140 half bytes)
  // element by element, a CTA per block, the others in 16-byte words.
  const ROUTE_CASES = [...CASES.slice(2), { shape: [256, 384] as [number, number], block: [128, 128] as [number, number] }];

  // sampledMatmul may run as a dense GEMM plus a copy of the blocks: both routes must give the same function.
  for (const mode of ["never", "always", "auto"] as const) {
    test(`sampledMatmul with the dense route ${mode}: every block shape, density and dtype against float64`, () => {
      const backend = useCuda();
      const previous = backend.setDenseSampledMode(mode);
      try {
        const next = random(mode.length * 7919);
        for (const { shape, block } of ROUTE_CASES) {
          for (const density of [0.15, 0.6]) {
            const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: shape[0] + block[1] });
            const [rows, cols] = shape;
            for (const dtype of FLOAT_DTYPES) {
              tidy(() => {
                const m = 77;
                const x = randomTensor(next, [m, cols], dtype);
                const dy = randomTensor(next, [m, rows], dtype);
                const dw = sampledMatmul(dy.t, x.t, pattern);
                const dwRef = sampledReference(pattern, dy.values, x.values, m);
                expectClose(dw.dataSync(), dwRef, dtype, `sampledMatmul (${mode}) ${shape.join("x")} ${block.join("x")} d=${density} ${dtype}`);
              });
            }
          }
        }
      } finally {
        backend.setDenseSampledMode(previous);
      }
      // The float64 reference loops dominate: give them room on a busy host.
    }, 120_000);
  }

  // bsrLinear (with and without a bias, and fused with an activation), bsrMatmul and bsrMatmulActivationBackward may run
  // as a dense GEMM over W's blocks scattered into a dense scratch: both routes must give the same function, float32
  // included when forced.
  for (const mode of ["never", "always"] as const) {
    test(`bsrLinear, bsrLinearActivation, bsrMatmul and bsrMatmulActivationBackward with the dense route ${mode}: every block shape and dtype against float64`, () => {
      const backend = useCuda();
      const previous = backend.setDenseProductMode(mode);
      try {
        const next = random(mode.length * 104729);
        for (const { shape, block } of ROUTE_CASES) {
          for (const density of [0.15, 0.6]) {
            const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: shape[1] + block[0] * 3 });
            const [rows, cols] = shape;
            const [R, C] = block;
            for (const dtype of FLOAT_DTYPES) {
              tidy(() => {
                const m = 77;
                const what = `(${mode}) ${shape.join("x")} ${block.join("x")} d=${density} ${dtype}`;
                const x = randomTensor(next, [m, cols], dtype);
                const dy = randomTensor(next, [m, rows], dtype);
                const values = randomTensor(next, [pattern.nnzBlocks, R, C], dtype);
                const bias = randomTensor(next, [rows], dtype);
                const w = denseWeight(pattern, values.values);
                const zRef = linearReference(x.values, w, m, rows, cols);
                const withBias = zRef.map((v, i) => v + bias.values[i % rows]);
                expectClose(bsrLinear(x.t, values.t, pattern).dataSync(), zRef, dtype, `bsrLinear ${what}`);
                expectClose(bsrLinear(x.t, values.t, pattern, bias.t).dataSync(), withBias, dtype, `bsrLinear + bias ${what}`);
                // GELU's tanh form takes cuBLASLt's epilogue on the dense route where the rows are a multiple of 8 (9 rows:
                // the product, then the pass), with and without a bias; the erf form always the product and the pass.
                for (const [activation, withB] of [["gelu", true], ["gelu_tanh", true], ["gelu_tanh", false]] as const) {
                  const zExpected = withB ? withBias : zRef;
                  const inputs = { x: x.t, values: values.t, bias: withB ? bias.t : undefined };
                  const [a, z] = runKernel("BsrLinearActivation", inputs, { pattern, activation });
                  const which = `${activation}${withB ? " + bias" : ""} ${what}`;
                  expectClose(z.dataSync(), zExpected, dtype, `bsrLinearActivation z ${which}`);
                  expectClose(a.dataSync(), zExpected.map(ACTIVATIONS[activation]), dtype, `bsrLinearActivation a ${which}`);
                }
                const dxRef = matmulReference(dy.values, w, m, rows, cols);
                expectClose(bsrMatmul(dy.t, values.t, pattern).dataSync(), dxRef, dtype, `bsrMatmul ${what}`);
                // dX through the activation of the layer before: dX by the route, then the activation backward.
                const pre = randomTensor(next, [m, cols], dtype);
                const [dpre, dbias] = bsrMatmulActivationBackward(dy.t, values.t, pattern, pre.t, "gelu");
                const dpreRef = dxRef.map((g, i) => g * reference.geluGrad(pre.values[i], "none"));
                const dbiasRef = new Float64Array(cols);
                for (let i = 0; i < dpreRef.length; i++) dbiasRef[i % cols] += dpreRef[i];
                expectClose(dpre.dataSync(), dpreRef, dtype, `bsrMatmulActivationBackward ${what}`);
                expectClose(dbias.dataSync(), dbiasRef, dtype, `bsrMatmulActivationBackward dbias ${what}`);
              });
            }
          }
        }
      } finally {
        backend.setDenseProductMode(previous);
      }
    }, 120_000);
  }

  // The dense route writes all of its W-sized scratch (the stored blocks, zeros elsewhere) over memory the allocator
  // hands back holding NaN, so that an element the zeroing or the copy missed shows: 32x32 over 1024 columns, wide
  // blocks (4x300), blocks whose rows are not 16-byte words (3x70, 2x3, 1x1), and a block row with no blocks.
  test("the dense route's scatter writes every element of its scratch over NaN-filled memory", () => {
    const backend = useCuda();
    const previous = backend.setDenseProductMode("always");
    try {
      const next = random(4099);
      const patterns = [
        BsrPattern.random([96, 1024], { blockShape: [32, 32], density: 0.3, seed: 1 }),
        BsrPattern.random([8, 900], { blockShape: [4, 300], density: 0.5, seed: 2 }),
        BsrPattern.random([9, 140], { blockShape: [3, 70], density: 0.5, seed: 3 }),
        BsrPattern.random([6, 9], { blockShape: [2, 3], density: 0.4, seed: 4 }),
        BsrPattern.random([5, 7], { blockShape: [1, 1], density: 0.3, seed: 5 }),
        // Bands of 6 or 12 rows (by the dtype's width) over blocks of 40 rows: the last band of each block row short.
        BsrPattern.random([80, 640], { blockShape: [40, 40], density: 0.5, seed: 6 }),
        // More block columns than the one-pass scatter lays out in shared memory: the fill and the block copy.
        BsrPattern.random([3, 9000], { blockShape: [1, 1], density: 0.01, seed: 7 }),
        // The middle block row empty; the last one full.
        BsrPattern.fromMask([192, 320], [64, 64], [1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]),
      ];
      for (const pattern of patterns) {
        const [rows, cols] = pattern.shape;
        const block = pattern.blockShape;
        for (const dtype of FLOAT_DTYPES) {
          const what = `${pattern.shape.join("x")} in ${block.join("x")} blocks, ${dtype}`;
          // Buffers of W's size (and a few sizes around it) filled with NaN and freed: the scratch reuses them.
          tidy(() => {
            for (const extra of [0, 0, 0, 8, 64]) full([rows * cols + extra], Number.NaN, dtype);
          });
          tidy(() => {
            const m = 5;
            const x = randomTensor(next, [m, cols], dtype);
            const dy = randomTensor(next, [m, rows], dtype);
            const values = randomTensor(next, [pattern.nnzBlocks, block[0], block[1]], dtype);
            const w = denseWeight(pattern, values.values);
            expectClose(bsrLinear(x.t, values.t, pattern).dataSync(), linearReference(x.values, w, m, rows, cols), dtype, `bsrLinear ${what}`);
            tidy(() => {
              for (const extra of [0, 0, 8]) full([rows * cols + extra], Number.NaN, dtype);
            });
            expectClose(bsrMatmul(dy.t, values.t, pattern).dataSync(), matmulReference(dy.values, w, m, rows, cols), dtype, `bsrMatmul ${what}`);
          });
        }
      }
    } finally {
      backend.setDenseProductMode(previous);
    }
  }, 60_000);

  // Enough tokens that the tensor-core dW splits them (two splits at these sizes) over enough blocks (1 M values)
  // that the float32 partials are summed eight outputs per thread: 4096 sampled outputs against float64 dot
  // products over all tokens, every output finite, on the block kernels.
  test("sampledMatmul with split tokens over a million values, half precision, against float64", () => {
    const backend = useCuda();
    const previous = backend.setDenseSampledMode("never");
    try {
      const next = random(9001);
      const m = 4096;
      const [rows, cols] = [2048, 1024];
      for (const block of [32, 64]) {
        const pattern = BsrPattern.random([rows, cols], { blockShape: [block, block], density: 0.5, seed: block });
        const { blockRow, blockCol } = pattern.coordinates;
        for (const dtype of ["bfloat16", "float16"] as const) {
          tidy(() => {
            const x = randomTensor(next, [m, cols], dtype);
            const dy = randomTensor(next, [m, rows], dtype);
            const dw = sampledMatmul(dy.t, x.t, pattern).dataSync();
            expect(dw.length).toBe(pattern.nnzBlocks * block * block);
            for (let i = 0; i < dw.length; i++) if (!Number.isFinite(dw[i])) expect.fail(`${dtype} ${block}: dW[${i}] is ${dw[i]}`);
            const rounding = dtype === "float16" ? 2 ** -10 : 2 ** -7;
            for (let k = 0; k < 4096; k++) {
              const index = Math.floor(next() * dw.length);
              const p = Math.floor(index / (block * block));
              const r = Math.floor(index / block) % block;
              const c = index % block;
              const { ref, magnitude } = sampledOutput(dy.values, x.values, m, rows, cols, blockRow[p] * block + r, blockCol[p] * block + c);
              const bound = Math.abs(ref) * rounding + magnitude * 2 ** -16;
              if (!(Math.abs(dw[index] - ref) <= bound))
                expect.fail(`${dtype} ${block}x${block}: dW[${index}] (block ${p}, ${r}, ${c}) is ${dw[index]}, expected ${ref}`);
            }
          });
        }
      }
    } finally {
      backend.setDenseSampledMode(previous);
    }
  }, 120_000);

  // dW whose column groups (a CTA's share: two 64x64 blocks or one 128x128 block of a column) fill whole waves of the
  // GPU and a few more: on sm_90 the whole waves run whole groups and the rest run as a tail of pieces of the tokens,
  // summed by a second pass (docs/kernels.md, "dW's last wave"). One group past one wave (its only block alone: a
  // half-full group), nine past two, five past one at 128x128, three past one at 32x32 (four blocks a group, density
  // 0.125: the wgmma tile there too). Each output sampled against float64 in every block, the product run twice on
  // different inputs (a block left unwritten would keep the first run's values).
  test("sampledMatmul with a tail of pieces after whole waves of groups, bfloat16, every block sampled against float64", () => {
    const backend = useCuda();
    const previous = backend.setDenseSampledMode("never");
    try {
      const next = random(7373);
      const wave = backend.device.multiprocessors;
      const m = 4096;
      for (const [block, groups] of [
        [64, wave + 1],
        [64, 2 * wave + 9],
        [128, wave + 5],
        [32, wave + 3],
      ] as const) {
        // Four groups per full column (16 blocks of 32, 8 of 64, 4 of 128), then one column with the remaining groups.
        const rows = block === 32 ? 4096 : 1024;
        const perGroup = 128 / block;
        const counts = new Array<number>(Math.floor(groups / 4)).fill(4 * perGroup);
        if (groups % 4 > 0) counts.push((groups % 4) * perGroup - (perGroup - 1));
        const cols = counts.length * block;
        const blockRows = rows / block;
        const mask = new Uint8Array(blockRows * counts.length);
        counts.forEach((count, col) => {
          for (let k = 0; k < count; k++) mask[((col + k * 3) % blockRows) * counts.length + col] = 1;
        });
        const pattern = BsrPattern.fromMask([rows, cols], [block, block], mask);
        const plan = backend.sampledPlan(pattern, m, "bfloat16");
        if (backend.device.computeCapability === "9.0")
          expect(plan, `${block}x${block}, ${groups} groups on ${wave} SMs`).toMatch(/^\d+ whole groups, then \d+ in \d+ pieces each$/);
        const { blockRow, blockCol } = pattern.coordinates;
        tidy(() => {
          sampledMatmul(randomTensor(next, [m, rows], "bfloat16").t, randomTensor(next, [m, cols], "bfloat16").t, pattern).dataSync();
        });
        tidy(() => {
          const x = randomTensor(next, [m, cols], "bfloat16");
          const dy = randomTensor(next, [m, rows], "bfloat16");
          const dw = sampledMatmul(dy.t, x.t, pattern).dataSync();
          const size = block * block;
          expect(dw.length).toBe(pattern.nnzBlocks * size);
          for (let i = 0; i < dw.length; i++) if (!Number.isFinite(dw[i])) expect.fail(`${block}: dW[${i}] is ${dw[i]}`);
          for (let p = 0; p < pattern.nnzBlocks; p++) {
            for (let k = 0; k < 6; k++) {
              const r = Math.floor(next() * block);
              const c = Math.floor(next() * block);
              const { ref, magnitude } = sampledOutput(dy.values, x.values, m, rows, cols, blockRow[p] * block + r, blockCol[p] * block + c);
              const got = dw[p * size + r * block + c];
              if (!(Math.abs(got - ref) <= Math.abs(ref) * 2 ** -7 + magnitude * 2 ** -16))
                expect.fail(`${block}x${block} (${plan}): block ${p} (${r}, ${c}) is ${got}, expected ${ref}`);
            }
          }
        });
      }
    } finally {
      backend.setDenseSampledMode(previous);
    }
  }, 180_000);

  // dW at 32x32 where the patch tile takes it (sm_90a, from 4096 tokens at densities 0.15-0.28: tc_kernels.h's
  // kPatchPair*): dispatched by default on GPUs whose memory peaks at 4.5 TB/s or more (an H200, not an H100),
  // BLOCKSPARSE_CUDA_PATCH_DW=1 / 0 forces it on / off (gpu-tests.sh runs this test once more with 1): each record's
  // blocks paired within columns (a column's odd block alone in its product), its slices copied by bulk tensor copies,
  // the tokens split with float32 partials. Random patterns with an empty block column and a full block row, token
  // counts that end inside a 64-token step, both half dtypes: every block sampled against float64, each product run
  // twice on different inputs (a block left unwritten would keep the first run's values). sampledPlan must name the
  // tile exactly where it is dispatched.
  const patchDwForced = process.env.BLOCKSPARSE_CUDA_PATCH_DW;
  const patchDwDispatched = (device: { computeCapability: string; memoryBandwidth: number }) =>
    device.computeCapability === "9.0" && (patchDwForced === "1" || (patchDwForced !== "0" && device.memoryBandwidth >= 4.5e12));
  test("sampledMatmul on the patch tile's band (32x32, densities 0.16-0.27, ragged token steps), half precision, every block sampled against float64", () => {
    const backend = useCuda();
    const previous = backend.setDenseSampledMode("never");
    try {
      const next = random(3131);
      for (const { rows, cols, density, m, dtype } of [
        { rows: 1024, cols: 768, density: 0.25, m: 4100, dtype: "bfloat16" },
        { rows: 768, cols: 2048, density: 0.17, m: 8191, dtype: "float16" },
        { rows: 2048, cols: 1024, density: 0.26, m: 4160, dtype: "bfloat16" },
      ] as const) {
        const blockRows = rows / 32;
        const blockCols = cols / 32;
        // Exactly round(density * blocks) blocks drawn (a partial shuffle), so that the pattern stays inside the band
        // whatever the draw; then an empty block column and a full block row.
        const mask = new Uint8Array(blockRows * blockCols);
        const order = Array.from(mask, (_, i) => i);
        const kept = Math.round(density * mask.length);
        for (let i = 0; i < kept; i++) {
          const j = i + Math.floor(next() * (order.length - i));
          [order[i], order[j]] = [order[j] as number, order[i] as number];
          mask[order[i] as number] = 1;
        }
        for (let r = 0; r < blockRows; r++) mask[r * blockCols + 3] = 0;
        for (let c = 0; c < blockCols; c++) mask[5 * blockCols + c] = c === 3 ? 0 : 1;
        const pattern = BsrPattern.fromMask([rows, cols], [32, 32], mask);
        const actual = pattern.nnzBlocks / (blockRows * blockCols);
        expect(actual > 0.15 && actual < 0.28, `density ${actual}`).toBe(true);
        const plan = backend.sampledPlan(pattern, m, dtype);
        expect(backend.device.memoryBandwidth, "the device's memory bandwidth, which the rule reads").toBeGreaterThan(1e11);
        const onPatchTile = patchDwDispatched(backend.device);
        expect(plan, `${rows}x${cols} d=${actual}`).toMatch(onPatchTile ? /^\d+ splits? on the patch tile$/ : /^\d+ splits?$/);
        const { blockRow, blockCol } = pattern.coordinates;
        tidy(() => {
          sampledMatmul(randomTensor(next, [m, rows], dtype).t, randomTensor(next, [m, cols], dtype).t, pattern).dataSync();
        });
        tidy(() => {
          const x = randomTensor(next, [m, cols], dtype);
          const dy = randomTensor(next, [m, rows], dtype);
          const dw = sampledMatmul(dy.t, x.t, pattern).dataSync();
          expect(dw.length).toBe(pattern.nnzBlocks * 1024);
          for (let i = 0; i < dw.length; i++) if (!Number.isFinite(dw[i])) expect.fail(`${plan}: dW[${i}] is ${dw[i]}`);
          for (let p = 0; p < pattern.nnzBlocks; p++) {
            for (let k = 0; k < 4; k++) {
              const r = Math.floor(next() * 32);
              const c = Math.floor(next() * 32);
              const { ref, magnitude } = sampledOutput(dy.values, x.values, m, rows, cols, blockRow[p] * 32 + r, blockCol[p] * 32 + c);
              const got = dw[p * 1024 + r * 32 + c];
              if (!(Math.abs(got - ref) <= Math.abs(ref) * 2 ** -7 + magnitude * 2 ** -16))
                expect.fail(`${rows}x${cols} ${dtype} (${plan}): block ${p} (${r}, ${c}) is ${got}, expected ${ref}`);
            }
          }
        });
      }
    } finally {
      backend.setDenseSampledMode(previous);
    }
  }, 180_000);

  // dW over uneven block columns (a full one, odd counts, empty ones, a single block), patterns of one or two groups
  // (where the rule splits the tokens most) and token counts that end inside a 64-token step (65, 700, 4100), at 64x64,
  // 128x128 and the rectangles whose output tile is 64 or more wide (the wgmma dW tile on sm_90): every block against
  // float64, each output computed twice from different inputs (a block left unwritten would keep the first run's).
  test("sampledMatmul over uneven block columns, one-group patterns and ragged token steps, half precision, every block against float64", () => {
    const backend = useCuda();
    const previous = backend.setDenseSampledMode("never");
    try {
      const next = random(4242);
      // [rows, cols] of W, its block shape, and the block columns' counts (the rest of each column empty).
      const cases: { shape: [number, number]; block: [number, number]; counts: number[] }[] = [
        { shape: [1024, 512], block: [64, 64], counts: [16, 3, 1, 0, 5, 2, 0, 7] },
        { shape: [512, 1024], block: [128, 128], counts: [4, 0, 1, 3, 0, 0, 2, 1] },
        { shape: [256, 256], block: [64, 64], counts: [0, 0, 1, 0] },
        { shape: [512, 512], block: [64, 128], counts: [8, 1, 0, 3] },
        { shape: [512, 256], block: [32, 64], counts: [16, 5, 0, 9] },
      ];
      for (const { shape, block, counts } of cases) {
        const [rows, cols] = shape;
        const [R, C] = block;
        const blockRows = rows / R;
        const mask = new Uint8Array(blockRows * (cols / C));
        counts.forEach((count, col) => {
          // `count` block rows of the column, spread from a column-dependent start.
          for (let k = 0; k < count; k++) mask[((col * 5 + k * 3) % blockRows) * (cols / C) + col] = 1;
        });
        const pattern = BsrPattern.fromMask(shape, block, mask);
        expect(pattern.nnzBlocks).toBe(counts.reduce((a, b) => a + b, 0));
        for (const m of [65, 700, 4100]) {
          for (const dtype of ["bfloat16", "float16"] as const) {
            tidy(() => {
              const first = sampledMatmul(randomTensor(next, [m, rows], dtype).t, randomTensor(next, [m, cols], dtype).t, pattern);
              first.dataSync();
              first.dispose();
              const x = randomTensor(next, [m, cols], dtype);
              const dy = randomTensor(next, [m, rows], dtype);
              const dw = sampledMatmul(dy.t, x.t, pattern).dataSync();
              const dwRef = sampledReference(pattern, dy.values, x.values, m);
              const what = `sampledMatmul ${shape.join("x")} ${R}x${C} m=${m} ${dtype}`;
              expectClose(dw, dwRef, dtype, what);
              // Block by block: a missing or doubled share of one block's steps shows there alone.
              const size = R * C;
              for (let p = 0; p < pattern.nnzBlocks; p++)
                expectClose(dw.subarray(p * size, (p + 1) * size), dwRef.subarray(p * size, (p + 1) * size), dtype, `${what} block ${p}`);
            });
          }
        }
      }
    } finally {
      backend.setDenseSampledMode(previous);
    }
  }, 180_000);

  // Many tiles with short reduction lines, where half-precision products go to the persistent tile at 64x64 blocks
  // (at most 16 blocks per line with at least 3 tiles of 256 tokens per SM, at most 8 with fewer) and to the ping-pong
  // tile at 128x128 (at least 2 tiles of 128 tokens per SM, at most 4 blocks per line) on sm_90, and dX with the
  // activation's backward to the ping-pong tile at both (at 64x64: 2 tiles of 256 tokens per SM, at most 16 blocks per
  // line, its three-consumer form at most 4, as here): 1000 tokens (the last tile ragged) x 128 block rows (columns) of
  // 64, or 64 of 128, one or two blocks per line, some lines empty.
  // The rectangles 64x128 and 128x64 take the tiles of the square of their output's width (Linear: R, Matmul: C) on
  // sm_90, so each shape below sends one product to the persistent tile and the other to the ping-pong tile. The last
  // two of them take 4100 tokens over few lines: the 256-token wide tile at width 128 (Linear at 128x64, Matmul at
  // 64x128). 64x32 and 32x64 take the default 64-wide wgmma tile, 32 deep, for the product whose output tile is 64 wide
  // (64x32's bsrLinear, 32x64's bsrMatmul and dW) and mma.sync's for the other. Elsewhere these shapes take the other
  // tiles, checked the same way. The 128x128 layer 3200 -> 1280 sends dX to the ping-pong tile by plain dX's own rule
  // below 4096 tokens (pingPongTile128Rule: 1.94 tiles of 128 tokens per SM on a 132-SM GPU, lines of 5 blocks), its
  // float64 references on a sample of the tokens as the rectangles'.
  const DERIVATIVES = {
    relu: (v: number) => (v > 0 ? 1 : 0),
    gelu: (v: number) => reference.geluGrad(v, "none"),
    gelu_tanh: (v: number) => reference.geluGrad(v, "tanh"),
  };
  const SHORT_LINES = [
    { block: [64, 64], m: 1000, shapes: [[8192, 128], [128, 8192]] },
    { block: [128, 128], m: 1000, shapes: [[8192, 256], [256, 8192]] },
    { block: [64, 128], m: 1000, shapes: [[8192, 128], [128, 8192]] },
    { block: [128, 64], m: 1000, shapes: [[8192, 128], [256, 8192]] },
    { block: [128, 64], m: 4100, shapes: [[512, 256]] },
    { block: [64, 128], m: 4100, shapes: [[256, 512]] },
    { block: [64, 32], m: 1000, shapes: [[512, 256]] },
    { block: [32, 64], m: 1000, shapes: [[256, 512]] },
    { block: [128, 128], m: 1000, shapes: [[1280, 3200]], sampled: true },
  ] as const;
  // One test per dtype, so that the suite's parallel parts (benchmarks/scripts/gpu-tests.sh) can take them apart: each
  // takes minutes of float64 references.
  test.each(["bfloat16", "float16"] as const)("64x64, 128x128 and the rectangles of sides 32-128 over many tiles with short lines (the persistent, ping-pong, wide and default wgmma tiles), against float64 (%s)", (dtype) => {
    const next = random(dtype === "bfloat16" ? 4242 : 4243);
    for (const entry of SHORT_LINES) {
      const { block: [br, bc], m, shapes } = entry;
      for (const [rows, cols] of shapes) {
        const pattern = BsrPattern.random([rows, cols], { blockShape: [br, bc], density: 0.5, seed: rows + br + bc + 7 });
        const { blockRow, blockCol } = pattern.coordinates;
        // The float64 references of the squares cover every token. Those of the rectangles, to keep the test's time,
        // a sample: two random tokens of every eight (every warp's row group of every tile is in it, a different
        // lane's rows each time). dW covers every fourth block; the fused outputs are compared with the unfused ones
        // on every element.
        const tokens: number[] = [];
        if (br === bc && !("sampled" in entry)) for (let i = 0; i < m; i++) tokens.push(i);
        else
          for (let i0 = 0; i0 < m; i0 += 8) {
            const a = i0 + Math.floor(next() * Math.min(8, m - i0));
            const b = i0 + Math.floor(next() * Math.min(8, m - i0));
            tokens.push(...new Set([Math.min(a, b), Math.max(a, b)]));
          }
        const pick = (data: ArrayLike<number>, width: number) => pickTokens(data, tokens, width);
        tidy(() => {
          const values = randomTensor(next, [pattern.nnzBlocks, br, bc], dtype);
          const bias = randomTensor(next, [rows], dtype);
          const x = randomTensor(next, [m, cols], dtype);
          const dy = randomTensor(next, [m, rows], dtype);
          const xs = x.values, gs = dy.values;
          const { yRef, dxRef } = sampledProducts(pattern, values.values, bias.values, xs, gs, tokens);
          const y = bsrLinear(x.t, values.t, pattern, bias.t).dataSync();
          expectClose(pick(y, rows), yRef, dtype, `bsrLinear ${rows}x${cols} ${br}x${bc} ${dtype}`);
          const dx = bsrMatmul(dy.t, values.t, pattern);
          expectClose(pick(dx.dataSync(), cols), dxRef, dtype, `bsrMatmul ${rows}x${cols} ${br}x${bc} ${dtype}`);
          // With an activation (one addon call): the pre-activation is bsrLinear's output bit for bit, the activation
          // the activation pass's over it, and both match float64.
          for (const activation of ["relu", "gelu", "gelu_tanh"] as const) {
            const what = `bsrLinearActivation ${rows}x${cols} ${br}x${bc} ${dtype} ${activation}`;
            const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: bias.t }, { pattern, activation });
            const zs = z.dataSync();
            const as = a.dataSync();
            for (let i = 0; i < y.length; i++) if (zs[i] !== y[i]) expect.fail(`${what}: z[${i}] is ${zs[i]}, bsrLinear gave ${y[i]}`);
            const pass = biasActivation(z, null, activation).dataSync();
            for (let i = 0; i < pass.length; i++) if (as[i] !== pass[i]) expect.fail(`${what}: a[${i}] is ${as[i]}, the activation pass gave ${pass[i]}`);
            expectClose(pick(as, rows), yRef.map(ACTIVATIONS[activation]), dtype, what);
          }
          // dX taken on through the activation of the layer before (dX's epilogue on these tiles): dpre against
          // float64 and the unfused pair (bsrMatmul, then the activation backward; every element), dbias against the
          // column sums in float64 of the float64 dpre where it covers every token, else of the unfused pair's.
          const pre = randomTensor(next, [m, cols], dtype);
          const preSample = pick(pre.values, cols);
          for (const activation of ["relu", "gelu", "gelu_tanh"] as const) {
            const what = `bsrMatmulActivationBackward ${rows}x${cols} ${br}x${bc} ${dtype} ${activation}`;
            const [dpre, dbias] = bsrMatmulActivationBackward(dy.t, values.t, pattern, pre.t, activation);
            const dpreRef = dxRef.map((g, i) => g * DERIVATIVES[activation](preSample[i]));
            const dpres = dpre.dataSync();
            expectClose(pick(dpres, cols), dpreRef, dtype, what);
            const unfused = biasActivationBackward(dx, pre.t, null, activation)[0].dataSync();
            expectClose(dpres, unfused, dtype, `${what} against the unfused pair`);
            const dbiasRef = new Float64Array(cols);
            const summed = tokens.length === m ? dpreRef : unfused;
            for (let i = 0; i < summed.length; i++) dbiasRef[i % cols] += summed[i];
            expectClose(dbias.dataSync(), dbiasRef, dtype, `${what} dbias`);
          }
          // dW on the block kernels (the dense route would take these densities): tiles of 128 rows of blocks, the
          // tokens split at 4100. Every fourth block (and the last) against float64 over all tokens.
          const backend = useCuda();
          const previous = backend.setDenseSampledMode("never");
          try {
            const dw = sampledMatmul(dy.t, x.t, pattern).dataSync();
            const blocks: number[] = [];
            for (let p = 0; p < pattern.nnzBlocks; p += 4) blocks.push(p);
            if (blocks.at(-1) !== pattern.nnzBlocks - 1) blocks.push(pattern.nnzBlocks - 1);
            const size = br * bc;
            const dwRef = new Float64Array(blocks.length * size);
            const dwPicked = new Float64Array(blocks.length * size);
            blocks.forEach((p, k) => {
              for (let e = 0; e < size; e++) dwPicked[k * size + e] = dw[p * size + e];
              const rowBase = blockRow[p] * br, colBase = blockCol[p] * bc;
              for (let i = 0; i < m; i++)
                for (let r = 0; r < br; r++) {
                  const g = gs[i * rows + rowBase + r];
                  const at = k * size + r * bc;
                  for (let c = 0; c < bc; c++) dwRef[at + c] += g * xs[i * cols + colBase + c];
                }
            });
            expectClose(dwPicked, dwRef, dtype, `sampledMatmul ${rows}x${cols} ${br}x${bc} ${dtype}`);
          } finally {
            backend.setDenseSampledMode(previous);
          }
        });
      }
    }
  }, 480_000);

  // bsrLinearActivation where the addon fuses the activation because Z outgrows half of L2 (32.8 MB here, L2 50 MB on
  // an H100 or H200), on lines of about 8 blocks of 128 deep with 16 tiles of 128 tokens per block row (1024 tiles):
  // at 128 wide the ping-pong tile fused on sm_90 (pingPongTile128Rule), the square and the 128x64 rectangle on its
  // tiles; elsewhere (another L2, another GPU) whatever route the rules take, checked the same way. 2000 tokens leave
  // the last tile ragged. z against float64 on four random tokens of every 128-token tile (every tile, a different
  // consumer's rows each time), a = activation(z) against the activation pass over z on every element.
  test("bsrLinearActivation with Z past half of L2 on lines of 4-16 blocks (the 128-wide ping-pong tile fused), half precision, against float64", () => {
    const next = random(9090);
    const m = 2000, rows = 8192, cols = 2048;
    const tokens: number[] = [];
    for (let t0 = 0; t0 < m; t0 += 128) {
      const picked = new Set<number>();
      while (picked.size < Math.min(4, m - t0)) picked.add(t0 + Math.floor(next() * Math.min(128, m - t0)));
      tokens.push(...[...picked].sort((a, b) => a - b));
    }
    for (const [br, bc] of [[128, 128], [128, 64]] as const) {
      const pattern = BsrPattern.random([rows, cols], { blockShape: [br, bc], density: 0.5, seed: 77 + bc });
      for (const dtype of ["bfloat16", "float16"] as const) {
        tidy(() => {
          const values = randomTensor(next, [pattern.nnzBlocks, br, bc], dtype);
          const bias = randomTensor(next, [rows], dtype);
          const x = randomTensor(next, [m, cols], dtype);
          const { yRef } = sampledProducts(pattern, values.values, bias.values, x.values, null, tokens);
          for (const activation of ["gelu_tanh", "relu", "gelu"] as const) {
            const what = `bsrLinearActivation ${rows}x${cols} ${br}x${bc} m=${m} ${dtype} ${activation}`;
            const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: bias.t }, { pattern, activation });
            const zs = z.dataSync();
            expectClose(pickTokens(zs, tokens, rows), yRef, dtype, `${what}: z`);
            const as = a.dataSync();
            const pass = biasActivation(z, null, activation).dataSync();
            for (let i = 0; i < pass.length; i++) if (as[i] !== pass[i]) expect.fail(`${what}: a[${i}] is ${as[i]}, the activation pass gave ${pass[i]}`);
          }
        });
      }
    }
  }, 240_000);

  // dX through the activation, half precision: dpre against the unfused pair (bsrMatmul, then the activation's backward)
  // on every element and against float64 on every eighth token; dbias against the float64 column sums of the unfused
  // pair's dpre.
  function checkActivationBackward(
    cases: readonly { block: readonly [number, number]; rows: number; cols: number; density: number }[],
    m: number,
    seed: number,
  ): void {
    const next = random(seed);
    const tokens: number[] = [];
    for (let i = next() < 0.5 ? 0 : 1; i < m; i += 8) tokens.push(i);
    for (const dtype of ["bfloat16", "float16"] as const) {
      for (const { block: [br, bc], rows, cols, density } of cases) {
        const pattern = BsrPattern.random([rows, cols], { blockShape: [br, bc], density, seed: rows + br + bc });
        const { blockRow, blockCol } = pattern.coordinates;
        tidy(() => {
          const values = randomTensor(next, [pattern.nnzBlocks, br, bc], dtype);
          const dy = randomTensor(next, [m, rows], dtype);
          const pre = randomTensor(next, [m, cols], dtype);
          const w = values.values, gs = dy.values;
          const dxRef = new Float64Array(tokens.length * cols);
          for (let p = 0; p < pattern.nnzBlocks; p++) {
            const rowBase = blockRow[p] * br, colBase = blockCol[p] * bc;
            tokens.forEach((i, k) => {
              for (let r = 0; r < br; r++) {
                const g = gs[i * rows + rowBase + r];
                const wRow = (p * br + r) * bc;
                for (let c = 0; c < bc; c++) dxRef[k * cols + colBase + c] += g * w[wRow + c];
              }
            });
          }
          const dx = bsrMatmul(dy.t, values.t, pattern);
          for (const activation of ["gelu_tanh", "gelu", "relu"] as const) {
            const what = `bsrMatmulActivationBackward ${rows}x${cols} ${br}x${bc} ${dtype} ${activation}`;
            const [dpre, dbias] = bsrMatmulActivationBackward(dy.t, values.t, pattern, pre.t, activation);
            const dpres = dpre.dataSync();
            const unfused = biasActivationBackward(dx, pre.t, null, activation)[0].dataSync();
            expectClose(dpres, unfused, dtype, `${what} against the unfused pair`);
            const picked = new Float64Array(tokens.length * cols);
            const dpreRef = new Float64Array(tokens.length * cols);
            tokens.forEach((i, k) => {
              for (let c = 0; c < cols; c++) {
                picked[k * cols + c] = dpres[i * cols + c];
                dpreRef[k * cols + c] = dxRef[k * cols + c] * DERIVATIVES[activation](pre.values[i * cols + c]);
              }
            });
            expectClose(picked, dpreRef, dtype, what);
            const dbiasRef = new Float64Array(cols);
            for (let i = 0; i < unfused.length; i++) dbiasRef[i % cols] += unfused[i];
            expectClose(dbias.dataSync(), dbiasRef, dtype, `${what} dbias`);
          }
        });
      }
    }
  }

  // The lines each rule takes (tc_kernels.h), where there are at least two of the tile's tiles per SM:
  // - 6-12 blocks, the ping-pong tiles (kPingPongBackwardMaxLine64 / 128: up to 64 blocks at 64x64, 16 at 128x128): 1000
  //   tokens, 4 tiles of 256 at 64x64 and 8 of 128 at 128x128 over 68 and 36 block columns, 1536 rows at density 0.5;
  // - 16-32 blocks, taken to the fused epilogue from 2026-12-06: the same with 4096 rows;
  // - at most 4 blocks (kPingPong3MaxLine), the 64-wide ping-pong tile with three consumers of 128 tokens each: 2000
  //   tokens (8 tiles of 256, the last of 208; 16 of 128, the last of 80) over 40 block columns, lines of 4 blocks
  //   (64x64 at density 0.5 over 8 block rows) and of 2 blocks of 128x64 (4 in 64-deep steps) at density 0.25.
  const PING_PONG = "the ping-pong tiles' fused epilogue";
  const FUSED_DX_LINES = [
    { lines: `6-12 blocks (${PING_PONG})`, m: 1000, seed: 977, rows: [1536, 1536], cols: [4352, 4608], blocks: [[64, 64], [128, 128]], density: 0.5 },
    { lines: `16-32 blocks (${PING_PONG})`, m: 1000, seed: 1632, rows: [4096, 4096], cols: [4352, 4608], blocks: [[64, 64], [128, 128]], density: 0.5 },
    { lines: "up to 4 blocks (the three-consumer ping-pong tile)", m: 2000, seed: 2027, rows: [512, 1024], cols: [2560, 2560], blocks: [[64, 64], [128, 64]], density: [0.5, 0.25] },
  ] as const;
  for (const { lines, m, seed, rows, cols, blocks, density } of FUSED_DX_LINES) {
    test(`bsrMatmulActivationBackward on lines of ${lines}, half precision, against the unfused pair and float64`, () => {
      const cases = blocks.map((block, i) => ({ block, rows: rows[i], cols: cols[i], density: typeof density === "number" ? density : density[i] }));
      checkActivationBackward(cases, m, seed);
    }, 240_000);
  }

  type Operand = ReturnType<typeof randomTensor>;
  /**
   * bsrLinearActivation for each activation: Z and activation(Z) against float64 at `tokens`, and activation(Z) against
   * the activation pass over Z on every element.
   */
  function checkLinearActivations(pattern: BsrPattern, values: Operand, bias: Operand, x: Operand, tokens: readonly number[], dtype: "bfloat16" | "float16", label: string): void {
    const rows = pattern.shape[0];
    const yRef = sampledProducts(pattern, values.values, bias.values, x.values, null, tokens).yRef;
    for (const activation of ["gelu_tanh", "gelu", "relu"] as const) {
      const what = `bsrLinearActivation ${label} ${dtype} ${activation}`;
      const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: bias.t }, { pattern, activation });
      const as = a.dataSync();
      expectClose(pickTokens(z.dataSync(), tokens, rows), yRef, dtype, `${what} z`);
      expectClose(pickTokens(as, tokens, rows), yRef.map(ACTIVATIONS[activation]), dtype, what);
      expectClose(as, biasActivation(z, null, activation).dataSync(), dtype, `${what} against the pass`);
    }
  }

  // bsrLinearActivation where Z outgrows half of L2 (tcFusesActivation): the 64- and 128-wide wgmma tiles write Z and
  // activation(Z) from their epilogue on sm_90 (a 50 MB L2: Z of 6000 x 4096 half-precision values is 49 MB), the
  // rectangles on the tiles of the square of their R. At density 0.25 (lines of 4 blocks of 64 deep, 2 of 128) the
  // three-consumer tiles; at 0.6 (9.6 and 4.8) the two-consumer tiles: the persistent tile at 64 wide, the 256-token
  // tile at 128. Z and activation(Z) against float64 on every sixteenth token and the last, and activation(Z) against
  // the activation pass over Z on every element.
  test("bsrLinearActivation with Z larger than half of L2 (the wgmma tiles' fused epilogue), half precision, against float64 and the pass", () => {
    const next = random(6000);
    const m = 6000;
    const tokens: number[] = [];
    for (let i = Math.floor(next() * 16); i < m; i += 16) tokens.push(i);
    if (tokens.at(-1) !== m - 1) tokens.push(m - 1);
    for (const dtype of ["bfloat16", "float16"] as const) {
      for (const [br, bc] of [
        [64, 64],
        [128, 128],
        [64, 128],
        [128, 64],
      ] as const) {
        for (const density of [0.25, 0.6]) {
          const [rows, cols] = [4096, 1024];
          const pattern = BsrPattern.random([rows, cols], { blockShape: [br, bc], density, seed: br + 11 });
          tidy(() => {
            const values = randomTensor(next, [pattern.nnzBlocks, br, bc], dtype, 0.25);
            const bias = randomTensor(next, [rows], dtype);
            const x = randomTensor(next, [m, cols], dtype, 0.25);
            checkLinearActivations(pattern, values, bias, x, tokens, dtype, `${rows}x${cols} ${br}x${bc} density ${density}`);
          });
        }
      }
    }
  }, 240_000);

  // bsrLinearActivation at 64 wide on either side of kPingPong3ForwardMaxLine (tc_kernels.h), with the dense route kept
  // off: lines of 8 blocks (64x64 at density 0.5 over 1024 columns; 64x128 at 0.25 over 2048, 4 blocks of 128 deep)
  // take the three-consumer tile fused, Z in L2 or not; lines of 16 (64x64 at 0.5 over 2048 columns, Z of 34 MB)
  // the other fused tiles. 2085 tokens (a last 128-token tile of 37, a last 256-token tile of 37), block rows and
  // columns left empty (the bias alone). Z and activation(Z) against float64 on a random token of every 8 and the last
  // 37, activation(Z) against the pass over Z on every element.
  const FUSED_FORWARD_LINES = [
    { rows: 4096, cols: 1024, block: [64, 64], density: 0.5 },
    { rows: 4096, cols: 2048, block: [64, 128], density: 0.25 },
    { rows: 8192, cols: 2048, block: [64, 64], density: 0.5 },
  ] as const;
  type FusedForwardCase = { rows: number; cols: number; block: readonly [number, number]; density: number };
  /** checkLinearActivations at 2085 tokens for each case, with the dense route off and block rows and columns left empty. */
  function checkFusedForwardLines(seed: number, cases: readonly FusedForwardCase[], emptyRows: (blockRows: number) => number[], emptyCols: number[]): void {
    const next = random(seed);
    withoutDenseRoute(() => {
      const m = 2085;
      const tokens = spreadTokens(next, m, 8);
      for (const dtype of ["bfloat16", "float16"] as const) {
        for (const { rows, cols, block, density } of cases) {
          const [br, bc] = block;
          const pattern = patternWithEmptyLines(next, [rows, cols], block, density, emptyRows(rows / br), emptyCols);
          tidy(() => {
            const values = randomTensor(next, [pattern.nnzBlocks, br, bc], dtype, 0.25);
            const bias = randomTensor(next, [rows], dtype);
            const x = randomTensor(next, [m, cols], dtype, 0.25);
            checkLinearActivations(pattern, values, bias, x, tokens, dtype, `${rows}x${cols} ${br}x${bc} density ${density}`);
          });
        }
      }
    });
  }
  test("bsrLinearActivation at 64 wide on lines of 8 blocks (the three-consumer tile) and of 16, empty lines, partial token tiles, half precision, against float64 and the pass", () => {
    checkFusedForwardLines(3034, FUSED_FORWARD_LINES, (blockRows) => [1, blockRows - 1], [2]);
  }, 240_000);

  // The same at 128 wide on either side of kPingPong3ForwardMaxLine128: lines of 4 blocks of 128 deep (128x128 at
  // density 0.5 over 1024 columns; 128x64 at 0.25 over 2048, 8 blocks of 64 deep) take three consumers of 64 tokens
  // fused; lines of about 7 (128x128 at 0.5 over 2048 columns) the two-consumer tiles (the ping-pong tile, with 2 or more
  // of its tiles per SM). 8 block rows of about 7 blocks (1024 x 2048 at 0.5) or 19 (1024 x 4096 at 0.6), about one
  // ping-pong tile per SM on the GPUs measured: the default 128-token tile, fused there since fusedForward128Rule (any
  // 128-wide tile below 4096 tokens). 2085 tokens (a last 64-token tile of 37), block rows and columns left empty.
  const FUSED_FORWARD_LINES_128 = [
    { rows: 2048, cols: 1024, block: [128, 128], density: 0.5 },
    { rows: 2048, cols: 2048, block: [128, 64], density: 0.25 },
    { rows: 2048, cols: 2048, block: [128, 128], density: 0.5 },
    { rows: 1024, cols: 2048, block: [128, 128], density: 0.5 },
    { rows: 1024, cols: 4096, block: [128, 128], density: 0.6 },
  ] as const;
  test("bsrLinearActivation at 128 wide on lines of 4 blocks (three consumers of 64 tokens), of 7, and of 7-19 with few tiles (the default tile), empty lines, partial token tiles, half precision, against float64 and the pass", () => {
    checkFusedForwardLines(3035, FUSED_FORWARD_LINES_128, (blockRows) => [0, blockRows - 2], [1]);
  }, 240_000);

  // bsrLinear and bsrLinearActivation with fewer three-consumer tiles than SMs (tc_kernels.h, threeConsumerFewTilesRule:
  // tiles of 128 tokens at 64 wide, of 64 at 128, fewer than the SMs of the GPUs measured) take that tile, plain and
  // fused, whatever the lines' length, and so does bsrMatmul (dX) at either width: 70 tokens (one partial tile of either)
  // and 300 (a last tile of 44). bsrLinear over 1024 or 768 outputs: lines of 32 blocks (64x64 at density 0.5 over 4096
  // columns), 16 (128x128 at 0.5), 8 blocks of 64 deep (the rectangles at 0.25); bsrMatmul over its block columns: 64x64
  // at 0.5 over 4096 rows (16 lines of 32 blocks) and over 1024 (64 of 8), 128x128 (32 lines), 64x128 (16) and 128x64
  // (32); at 300 tokens the 64x64 pattern of 64 block columns has more tiles than SMs. Block rows and a block column left
  // empty, the dense route kept off. bsrLinear with and without its bias and bsrMatmul against float64 on every token;
  // bsrLinearActivation's Z and activation(Z) as above.
  const FEW_TILES = [
    { rows: 1024, cols: 4096, block: [64, 64], density: 0.5 },
    { rows: 4096, cols: 1024, block: [64, 64], density: 0.5 },
    { rows: 1024, cols: 4096, block: [128, 128], density: 0.5 },
    { rows: 1024, cols: 2048, block: [64, 128], density: 0.25 },
    { rows: 768, cols: 2048, block: [128, 64], density: 0.25 },
  ] as const;
  test("bsrLinear, bsrLinearActivation and bsrMatmul with fewer three-consumer tiles than SMs (70 and 300 tokens, lines of up to 32 blocks, 64 and 128 wide, empty lines), half precision, against float64 and the pass", () => {
    const next = random(3036);
    withoutDenseRoute(() => {
      for (const m of [70, 300]) {
        const tokens = Array.from({ length: m }, (_, i) => i);
        for (const dtype of ["bfloat16", "float16"] as const) {
          for (const { rows, cols, block, density } of FEW_TILES) {
            const [br, bc] = block;
            const pattern = patternWithEmptyLines(next, [rows, cols], block, density, [1, rows / br - 1], [0]);
            tidy(() => {
              const values = randomTensor(next, [pattern.nnzBlocks, br, bc], dtype, 0.25);
              const bias = randomTensor(next, [rows], dtype);
              const x = randomTensor(next, [m, cols], dtype, 0.25);
              const dy = randomTensor(next, [m, rows], dtype, 0.25);
              const what = `${rows}x${cols} ${br}x${bc} density ${density} at ${m} tokens`;
              const { yRef, dxRef } = sampledProducts(pattern, values.values, bias.values, x.values, dy.values, tokens);
              expectClose(bsrLinear(x.t, values.t, pattern, bias.t).dataSync(), yRef, dtype, `bsrLinear ${what} ${dtype}`);
              const noBias = yRef.map((v, i) => v - bias.values[i % rows]);
              expectClose(bsrLinear(x.t, values.t, pattern).dataSync(), noBias, dtype, `bsrLinear ${what} ${dtype} without a bias`);
              expectClose(bsrMatmul(dy.t, values.t, pattern).dataSync(), dxRef, dtype, `bsrMatmul ${what} ${dtype}`);
              checkLinearActivations(pattern, values, bias, x, tokens, dtype, what);
            });
          }
        }
      }
    });
  }, 240_000);

  // 32x32 bsrLinear and bsrMatmul where the dispatch takes the X-resident tile (tc_kernels.h: a slab of at most 1408, K
  // for bsrLinear and N for bsrMatmul, lines of at least 1.5 blocks, at least 128 tokens, and each CTA's lines holding
  // at least 0.6 times the slab's elements): bsrLinear over 2048 x 1024 (a slab of 1024: 16 boxes of 64, four
  // consumers) and bsrMatmul over 992 x 2048 (a slab of 992: a half box at the end), each also checked the other way
  // round (mma.sync's tile), and both over 1408 x 1248 (slabs of 1248, a half box at the end: two consumers of four stages;
  // and 1408: two consumers of three).
  // At 150 tokens (three token tiles, the last of 22: groups of a few lines, one wave) with lines of about 16 blocks
  // (density 0.5), at 2085 tokens (a last token tile of 37) with lines of about 22 blocks (density 0.7), and at 8229
  // tokens with lines of about 3 (density 0.1: one group of all 64 lines per token tile), block rows and columns left
  // empty (the bias alone, zeros), and the dense route kept off so that the block kernels run. Every token of the last
  // tile and one random token of every 4 (150), 8 (2085) or 64 (8229) before it against float64. The same products with
  // the activation fused, which the tile writes from its epilogue: bsrLinearActivation's z and activation(z), and
  // bsrMatmulActivationBackward's dZ = dX act'(Z) (against float64 at those tokens) and its column sums (against the
  // unfused bsrMatmul then biasActivationBackward, whose sums run over every token).
  const X_RESIDENT = [
    { rows: 2048, cols: 1024, emptyRows: [3, 40], emptyCols: [5] },
    { rows: 992, cols: 2048, emptyRows: [0, 30], emptyCols: [0, 63] },
    { rows: 1408, cols: 1248, emptyRows: [7], emptyCols: [38] },
  ] as const;
  test("32x32 bsrLinear and bsrMatmul on the X-resident tile (slabs up to 1408 wide, lines of 22 and of 3 blocks, empty lines, a partial token tile), alone and with the activation fused, half precision, against float64", () => {
    const next = random(2085);
    withoutDenseRoute(() => {
      for (const { m, density, every } of [
        { m: 150, density: 0.5, every: 4 },
        { m: 2085, density: 0.7, every: 8 },
        { m: 8229, density: 0.1, every: 64 },
      ]) {
        const tokens = spreadTokens(next, m, every);
        for (const dtype of ["bfloat16", "float16"] as const) {
          for (const { rows, cols, emptyRows, emptyCols } of X_RESIDENT) {
            const pattern = patternWithEmptyLines(next, [rows, cols], [32, 32], density, emptyRows, emptyCols);
            tidy(() => {
              const values = randomTensor(next, [pattern.nnzBlocks, 32, 32], dtype);
              const bias = randomTensor(next, [rows], dtype);
              const x = randomTensor(next, [m, cols], dtype);
              const dy = randomTensor(next, [m, rows], dtype);
              const { yRef, dxRef } = sampledProducts(pattern, values.values, bias.values, x.values, dy.values, tokens);
              const pick = (data: ArrayLike<number>, width: number) => pickTokens(data, tokens, width);
              const what = `${rows}x${cols} ${dtype} at ${m} tokens, density ${density}`;
              expectClose(pick(bsrLinear(x.t, values.t, pattern, bias.t).dataSync(), rows), yRef, dtype, `bsrLinear ${what}`);
              expectClose(pick(bsrLinear(x.t, values.t, pattern).dataSync(), rows), yRef.map((v, i) => v - bias.values[i % rows]), dtype, `bsrLinear ${what} without a bias`);
              const dx = bsrMatmul(dy.t, values.t, pattern);
              expectClose(pick(dx.dataSync(), cols), dxRef, dtype, `bsrMatmul ${what}`);
              const activation = (["gelu", "relu", "gelu_tanh"] as const)[(m + rows + (dtype === "float16" ? 1 : 0)) % 3];
              const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: bias.t }, { pattern, activation });
              expectClose(pick(z.dataSync(), rows), yRef, dtype, `bsrLinearActivation z ${what}`);
              expectClose(pick(a.dataSync(), rows), yRef.map(ACTIVATIONS[activation]), dtype, `bsrLinearActivation ${activation} ${what}`);
              const pre = randomTensor(next, [m, cols], dtype);
              const [dpre, dbias] = bsrMatmulActivationBackward(dy.t, values.t, pattern, pre.t, activation);
              const picked = pickTokens(pre.values, tokens, cols);
              const dpreRef = dxRef.map((g, i) => g * DERIVATIVES[activation](picked[i]));
              expectClose(pick(dpre.dataSync(), cols), dpreRef, dtype, `bsrMatmulActivationBackward ${activation} ${what}`);
              const unfused = biasActivationBackward(dx, pre.t, null, activation)[1];
              expectClose(dbias.dataSync(), unfused.dataSync(), dtype, `bsrMatmulActivationBackward ${activation} dbias ${what}`);
            });
          }
        }
      }
    });
  }, 240_000);

  test("setDenseSampledMode and setDenseProductMode refuse an unknown mode", () => {
    const backend = useCuda();
    expect(() => backend.setDenseSampledMode("sometimes" as "auto")).toThrow(/setDenseSampledMode/);
    expect(backend.setDenseSampledMode("auto")).toBe("auto");
    expect(() => backend.setDenseProductMode("sometimes" as "auto")).toThrow(/setDenseProductMode/);
    expect(backend.setDenseProductMode("auto")).toBe("auto");
  });

  // A launch of the simple kernel (block sides that are not multiples of 16, or the dense route declined) holds 65535
  // token tiles of 64, one of the float32 register tiles (sides multiples of 16) 65535 of 128: more tokens run as
  // several launches. Outputs checked against float64 at the tokens on both sides of each launch's edge and at random
  // ones; the inputs are multiples of 1/8 and 1/4 (exact in every dtype), made without a float64 copy of the whole.
  test("bsrLinear and bsrMatmul with more tokens than one launch holds (the simple kernel, the float32 register tiles), against float64", () => {
    withoutDenseRoute(() => {
      const next = random(4321);
      const cases = [
        { block: [2, 3], shape: [4, 6], launch: 65535 * 64, dtypes: ["float32", "bfloat16"] },
        { block: [16, 16], shape: [16, 16], launch: 65535 * 128, dtypes: ["float32"] },
      ] as const;
      for (const { block, shape, launch, dtypes } of cases) {
        const [rows, cols] = shape;
        const m = launch + 70;
        const pattern = BsrPattern.random([rows, cols], { blockShape: [block[0], block[1]], density: 1, seed: 5 });
        const xs = new Float32Array(m * cols);
        for (let i = 0; i < xs.length; i++) xs[i] = (((i * 7919) % 17) - 8) / 8;
        const gs = new Float32Array(m * rows);
        for (let i = 0; i < gs.length; i++) gs[i] = (((i * 104729) % 13) - 6) / 4;
        const tokens = [0, 1, 63, 64, 127, 128, launch - 1, launch, launch + 1, m - 1];
        for (let k = 0; k < 20; k++) tokens.push(Math.floor(next() * m));
        for (const dtype of dtypes) {
          tidy(() => {
            const values = randomTensor(next, [pattern.nnzBlocks, block[0], block[1]], dtype);
            const bias = randomTensor(next, [rows], dtype);
            const { yRef, dxRef } = sampledProducts(pattern, values.values, bias.values, xs, gs, tokens);
            const y = bsrLinear(tensor(xs, [m, cols], dtype), values.t, pattern, bias.t).dataSync();
            expectClose(pickTokens(y, tokens, rows), yRef, dtype, `bsrLinear ${m} tokens ${block.join("x")} ${dtype}`);
            const dx = bsrMatmul(tensor(gs, [m, rows], dtype), values.t, pattern).dataSync();
            expectClose(pickTokens(dx, tokens, cols), dxRef, dtype, `bsrMatmul ${m} tokens ${block.join("x")} ${dtype}`);
          });
        }
      }
    });
  }, 120_000);

  test("a single input row and an empty batch", () => {
    const next = random(99);
    const pattern = BsrPattern.random([64, 96], { blockShape: [32, 32], density: 0.5, seed: 3 });
    tidy(() => {
      const values = randomTensor(next, [pattern.nnzBlocks, 32, 32], "float32");
      const w = denseWeight(pattern, values.values);
      const x = randomTensor(next, [1, 96], "float32");
      const y = bsrLinear(x.t, values.t, pattern);
      const yRef = Array.from({ length: 64 }, (_, o) => {
        let sum = 0;
        for (let j = 0; j < 96; j++) sum += x.values[j] * w[o * 96 + j];
        return sum;
      });
      expectClose(y.dataSync(), yRef, "float32", "bsrLinear, one row");
      const empty = randomTensor(next, [0, 96], "float32");
      expect(bsrLinear(empty.t, values.t, pattern).shape).toEqual([0, 64]);
      const dyEmpty = randomTensor(next, [0, 64], "float32");
      const dwEmpty = sampledMatmul(dyEmpty.t, empty.t, pattern);
      // No rows to sum over: the weight gradient is exactly zero.
      expect(Array.from(dwEmpty.dataSync()).every((v) => v === 0)).toBe(true);
    });
  });
});
