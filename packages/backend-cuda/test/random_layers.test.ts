// Layers drawn at random, each through bsrLinear, bsrMatmul and sampledMatmul against float64 math: shapes, block
// shapes, token counts, densities, dtypes, leading dims and the dense routes' modes, so that the dispatch's rules (the
// decoding kernel up to 64 tokens, the tile kernels, the dense GEMM's route from a density and a token count, the
// float32 register tiles, the simple kernel) are crossed at points no hand-written case names. A fresh seed each run,
// printed; BLOCKSPARSE_TEST_SEED repeats one. Each output is checked per block row or column (per stored block for dW),
// so a single wrong block cannot hide in the norm of a large output.
import { BsrPattern, bsrLinear, bsrMatmul, bsrMatmulActivationBackward, type DType, runKernel, sampledMatmul, tidy } from "@blocksparse/core";
import { expect } from "vitest";
import { RELATIVE_TOLERANCE, randomTensor, reportCudaAvailability, useCuda } from "./cuda";
import { ACTIVATION, ACTIVATIONS, type ActivationName, DERIVATIVE, describeRandomCases, expectCloseByGroup as expectGroups, pick } from "./random_cases";
import { denseWeight, linearReference, matmulReference, sampledReference } from "./reference_math";

reportCudaAvailability("random_layers.test.ts");

const LAYERS = 48;
// float64 multiply-adds of one reference product (m x rows x cols) at most: about 50 ms each on the host.
const REFERENCE_BUDGET = 3e7;

// Every kind of block: the tensor-core squares, the rectangles of their tiles, the mma.sync shapes with a side of 16,
// blocks that are not 16-byte words, a block as wide as a 32-column tile is not.
const BLOCKS: [number, number][] = [
  [32, 32], [32, 32], [64, 64], [64, 64], [128, 128], [16, 16], [16, 32], [32, 16], [32, 64], [64, 32], [64, 128],
  [128, 64], [48, 80], [8, 32], [3, 70], [2, 3], [1, 1],
];
// Token counts around every boundary the dispatch has (decoding 16 / 32 / 64, token tiles of 64-256, the route's 128,
// 1000, 2048 and 8192 rules), and between them.
const TOKENS = [1, 2, 5, 8, 13, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 80, 100, 127, 128, 129, 200, 255, 256, 257, 300, 511, 512, 513, 700, 999, 1000, 1025, 1500, 2048, 2100];
const DTYPES: DType[] = ["float32", "float16", "bfloat16"];
const MODES = ["auto", "auto", "never", "always"] as const;

type Layer = {
  shape: [number, number];
  block: [number, number];
  density: number;
  m: number;
  lead: number[];
  dtype: DType;
  productMode: (typeof MODES)[number];
  sampledMode: (typeof MODES)[number];
  bias: boolean;
  activation: ActivationName;
};

function drawLayer(next: () => number): Layer {
  for (;;) {
    const block = pick(next, BLOCKS);
    const m = pick(next, TOKENS);
    const rows = block[0] * (1 + Math.floor(next() * 10));
    const cols = block[1] * (1 + Math.floor(next() * 10));
    if (m * rows * cols > REFERENCE_BUDGET) continue;
    const u = next();
    const density = u < 0.05 ? 0 : u < 0.15 ? 1 : 0.02 + 0.98 * next();
    const lead = m % 2 === 0 && next() < 0.3 ? [2, m / 2] : [m];
    return {
      shape: [rows, cols],
      block,
      density,
      m,
      lead,
      dtype: pick(next, DTYPES),
      productMode: pick(next, MODES),
      sampledMode: pick(next, MODES),
      bias: next() < 0.6,
      activation: pick(next, ACTIVATIONS),
    };
  }
}

/** expectCloseByGroup (random_cases.ts) at the dtype's tolerance. */
const expectCloseByGroup = (out: ArrayLike<number>, ref: ArrayLike<number>, dtype: DType, what: string, ...rest: [number, (i: number) => number, ArrayLike<number>?]) =>
  expectGroups(out, ref, RELATIVE_TOLERANCE[dtype], what, ...rest);

/** Per group, the sum of `squares` over its elements: the floor expectCloseByGroup measures a group's error against. */
function groupSums(squares: ArrayLike<number>, groups: number, group: (i: number) => number): Float64Array {
  const sums = new Float64Array(groups);
  for (let i = 0; i < squares.length; i++) sums[group(i)] += squares[i];
  return sums;
}

const square = (values: ArrayLike<number>): Float64Array => Float64Array.from(values, (v) => v * v);

describeRandomCases(
  "random_layers.test.ts",
  "random layers on cuda against float64 math",
  LAYERS,
  drawLayer,
  ({ shape, block, density, m, lead, dtype, productMode, sampledMode, bias, activation }, index) =>
    `layer ${index}: W ${shape.join("x")} in ${block.join("x")} blocks, density ${density.toFixed(3)}, ${m} tokens as [${lead.join(", ")}], ${dtype}, dense route ${productMode} / dW ${sampledMode}${bias ? ", bias" : ""}, ${activation}`,
  (layer, _index, draw) => {
    const { shape, block, density, lead, m, dtype, productMode, sampledMode } = layer;
    const backend = useCuda();
    const [rows, cols] = shape;
    const [R, C] = block;
    const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: Math.floor(draw() * 1e9) });
    const previousProduct = backend.setDenseProductMode(productMode);
    const previousSampled = backend.setDenseSampledMode(sampledMode);
    try {
      tidy(() => {
        const x = randomTensor(draw, [...lead, cols], dtype);
        const dy = randomTensor(draw, [...lead, rows], dtype);
        const values = randomTensor(draw, [pattern.nnzBlocks, R, C], dtype);
        const bias = randomTensor(draw, [rows], dtype);
        const w = denseWeight(pattern, values.values);

        const y = bsrLinear(x.t, values.t, pattern, layer.bias ? bias.t : undefined);
        expect(y.shape).toEqual([...lead, rows]);
        const yRef = linearReference(x.values, w, m, rows, cols, layer.bias ? bias.values : undefined);
        // Each output's terms' squares (the same products of the squared inputs): a float32 sum of a thousand terms
        // that cancel can sit past 1e-5 of a tenth of the output's root mean square and still be rounded right.
        const byRow = (i: number) => Math.floor((i % rows) / R);
        const byCol = (i: number) => Math.floor((i % cols) / C);
        const yFloor = groupSums(linearReference(square(x.values), square(w), m, rows, cols), rows / R, byRow);
        expectCloseByGroup(y.dataSync(), yRef, dtype, "bsrLinear", rows / R, byRow, yFloor);

        const dx = bsrMatmul(dy.t, values.t, pattern);
        expect(dx.shape).toEqual([...lead, cols]);
        const dxRef = matmulReference(dy.values, w, m, rows, cols);
        const dxSquares = matmulReference(square(dy.values), square(w), m, rows, cols);
        const dxFloor = groupSums(dxSquares, cols / C, byCol);
        expectCloseByGroup(dx.dataSync(), dxRef, dtype, "bsrMatmul", cols / C, byCol, dxFloor);

        // The fused forms nn runs for Linear -> activation and for dX through the activation of the layer before.
        const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: layer.bias ? bias.t : undefined }, { pattern, activation: layer.activation });
        expectCloseByGroup(z.dataSync(), yRef, dtype, "bsrLinearActivation z", rows / R, byRow, yFloor);
        // The activation's slope is at most 1.13 (GELU's), so z's rounding floor bounds a's too.
        expectCloseByGroup(a.dataSync(), yRef.map(ACTIVATION[layer.activation]), dtype, `bsrLinearActivation ${layer.activation}(z)`, rows / R, byRow, yFloor);
        const pre = randomTensor(draw, [...lead, cols], dtype);
        const [dpre, dbias] = bsrMatmulActivationBackward(dy.t, values.t, pattern, pre.t, layer.activation);
        const dpreRef = dxRef.map((g, i) => g * DERIVATIVE[layer.activation](pre.values[i]));
        const dbiasRef = new Float64Array(cols);
        for (let i = 0; i < dpreRef.length; i++) dbiasRef[i % cols] += dpreRef[i];
        // dbias sums dZ over the tokens, each term rounded to the dtype (dX is, before act' scales it), and terms of
        // both signs can cancel far below them: its error is measured against the terms' sum of squares too (what
        // rounding each once leaves in the sum), as well as against its own size. A wrong or missing block still
        // moves it by the order of the terms.
        const termSquares = [dpreRef.reduce((sum, term) => sum + term * term, 0)];
        const dpreFloor = groupSums(dxSquares.map((t, i) => t * DERIVATIVE[layer.activation](pre.values[i]) ** 2), cols / C, byCol);
        expectCloseByGroup(dpre.dataSync(), dpreRef, dtype, "bsrMatmulActivationBackward dpre", cols / C, byCol, dpreFloor);
        expectCloseByGroup(dbias.dataSync(), dbiasRef, dtype, "bsrMatmulActivationBackward dbias", 1, () => 0, termSquares);

        const dw = sampledMatmul(dy.t, x.t, pattern);
        expect(dw.shape).toEqual([pattern.nnzBlocks, R, C]);
        const dwRef = sampledReference(pattern, dy.values, x.values, m);
        const byBlock = (i: number) => Math.floor(i / (R * C));
        const dwGroups = Math.max(1, pattern.nnzBlocks);
        const dwFloor = groupSums(sampledReference(pattern, square(dy.values), square(x.values), m), dwGroups, byBlock);
        expectCloseByGroup(dw.dataSync(), dwRef, dtype, "sampledMatmul", dwGroups, byBlock, dwFloor);
      });
    } finally {
      backend.setDenseProductMode(previousProduct);
      backend.setDenseSampledMode(previousSampled);
    }
  },
  60_000,
);
