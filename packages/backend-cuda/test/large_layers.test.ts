// Layers at the sizes models have, drawn at random: 500-16384 tokens, widths up to 8192, the tensor-core blocks (32, 64
// and 128 square, and their rectangles), densities 0.05-0.65, half precision. Here the tile rules that only fire on
// large products run (token tiles by waves per SM, the fused activation where Z outgrows half of L2, the few-tile and
// three-consumer tiles, dW's token splits and patch tile, the X-resident slabs), at points no hand-written case names.
// Each layer runs bsrLinear, bsrLinearActivation, bsrMatmul, bsrMatmulActivationBackward and sampledMatmul as
// dispatched (the fixed rules, the block kernels only, or first-use autotuning), and then again through cuBLAS (the
// dense routes forced): every output is compared in full, per 64 tokens of a block row or column (per stored block for
// dW), so that one wrong tile cannot hide in a large output. float64 sums of a few token rows and stored blocks check
// both against the math. random_layers.test.ts covers the small shapes against float64 in full. A fresh seed each
// run, printed; BLOCKSPARSE_TEST_SEED repeats one.
import { BsrPattern, bsrLinear, bsrMatmul, bsrMatmulActivationBackward, type DType, rand, runKernel, sampledMatmul, type Tensor, tidy } from "@blocksparse/core";
import type { CudaBackend } from "../src/index";
import { RELATIVE_TOLERANCE, reportCudaAvailability, useCuda } from "./cuda";
import { ACTIVATION, ACTIVATIONS, type ActivationName, DERIVATIVE, describeRandomCases, expectCloseByGroup as expectGroupsClose, pick } from "./random_cases";

reportCudaAvailability("large_layers.test.ts");

const LAYERS = 14;
// Outputs of at most this many elements (tokens x the wider side): a few seconds of host work per layer.
const ELEMENT_BUDGET = 2 ** 25;
const TOKEN_GROUP = 64;

const BLOCKS: [number, number][] = [[32, 32], [32, 32], [64, 64], [64, 64], [128, 128], [128, 128], [128, 64], [64, 128], [32, 64], [64, 32]];
const TOKENS = [500, 1000, 1024, 1536, 2048, 3000, 4095, 4096, 5000, 6144, 8192, 12288, 16384];
const WIDTHS = [512, 768, 1024, 1536, 2048, 3072, 4096, 5120, 6144, 8192];
const DTYPES: DType[] = ["bfloat16", "float16"];
// "rules": the fixed dispatch; "tiles": the dense routes refused (what the rules send to cuBLAS runs on the block
// kernels); "autotune": each route timed at first use, the fastest kept.
const MODES = ["rules", "rules", "tiles", "autotune"] as const;

type Layer = {
  rows: number;
  cols: number;
  block: [number, number];
  density: number;
  m: number;
  dtype: DType;
  mode: (typeof MODES)[number];
  bias: boolean;
  activation: ActivationName;
};

/** A width of the list, or now and then any multiple of the block's side between 4 and 64 of them. */
function drawWidth(next: () => number, side: number): number {
  return next() < 0.75 ? pick(next, WIDTHS) : side * (4 + Math.floor(next() * 61));
}

function drawLayer(next: () => number): Layer {
  for (;;) {
    const block = pick(next, BLOCKS);
    const m = pick(next, TOKENS);
    const rows = drawWidth(next, block[0]);
    const cols = drawWidth(next, block[1]);
    if (m * Math.max(rows, cols) > ELEMENT_BUDGET) continue;
    const u = next();
    const density = u < 0.2 ? 0.25 : u < 0.3 ? 0.5 : u < 0.4 ? 0.1 : 0.05 + 0.6 * next();
    return {
      rows,
      cols,
      block,
      density,
      m,
      dtype: pick(next, DTYPES),
      mode: pick(next, MODES),
      bias: next() < 0.7,
      activation: pick(next, ACTIVATIONS),
    };
  }
}

/** Groups of an [m, width] output: 64 tokens of one block of `side` columns. */
function tokenBlockGroups(m: number, width: number, side: number): { groups: number; group: (i: number) => number } {
  const perRow = width / side;
  return { groups: Math.ceil(m / TOKEN_GROUP) * perRow, group: (i) => Math.floor(Math.floor(i / width) / TOKEN_GROUP) * perRow + Math.floor((i % width) / side) };
}

type Outputs = { y: Float32Array; z: Float32Array; a: Float32Array; dx: Float32Array; dpre: Float32Array; dbias: Float32Array; dw: Float32Array };

/** The five products of one layer on its inputs, read back. */
function products(layer: Layer, pattern: BsrPattern, x: Tensor, dy: Tensor, values: Tensor, bias: Tensor | undefined, pre: Tensor): Outputs {
  return tidy(() => {
    const y = bsrLinear(x, values, pattern, bias).dataSync() as Float32Array;
    const [a, z] = runKernel("BsrLinearActivation", { x, values, bias }, { pattern, activation: layer.activation });
    const dx = bsrMatmul(dy, values, pattern).dataSync() as Float32Array;
    const [dpre, dbias] = bsrMatmulActivationBackward(dy, values, pattern, pre, layer.activation);
    const dw = sampledMatmul(dy, x, pattern).dataSync() as Float32Array;
    return {
      y,
      z: z.dataSync() as Float32Array,
      a: a.dataSync() as Float32Array,
      dx,
      dpre: dpre.dataSync() as Float32Array,
      dbias: dbias.dataSync() as Float32Array,
      dw,
    };
  });
}

/** Runs `body` with the backend's routes set for `mode` (or for cuBLAS's dense routes), then puts them back. */
function withRoutes<T>(backend: CudaBackend, mode: (typeof MODES)[number] | "cublas", body: () => T): T {
  const product = backend.setDenseProductMode(mode === "cublas" ? "always" : mode === "tiles" ? "never" : "auto");
  const sampled = backend.setDenseSampledMode(mode === "cublas" ? "always" : mode === "tiles" ? "never" : "auto");
  const autotune = backend.setAutotune(mode === "autotune");
  try {
    return body();
  } finally {
    backend.setDenseProductMode(product);
    backend.setDenseSampledMode(sampled);
    backend.setAutotune(autotune);
  }
}

describeRandomCases(
  "large_layers.test.ts",
  "large random layers on cuda: as dispatched against cuBLAS's dense routes, spot rows against float64",
  LAYERS,
  drawLayer,
  ({ rows, cols, block, density, m, dtype, mode, bias, activation }, index) =>
    `layer ${index}: W ${rows}x${cols} in ${block.join("x")} blocks, density ${density.toFixed(3)}, ${m} tokens, ${dtype}, ${mode}${bias ? ", bias" : ""}, ${activation}`,
  (layer, index, draw) => {
    const { rows, cols, block, density, m, dtype, mode } = layer;
    const name = `layer ${index}`;
    const backend = useCuda();
    const seed = () => Math.floor(draw() * 2 ** 31);
    const [R, C] = block;
    const pattern = BsrPattern.random([rows, cols], { blockShape: block, density, seed: seed() });
    tidy(() => {
      const uniform = (shape: number[]) => rand(shape, { low: -1, high: 1, dtype, seed: seed() });
      const x = uniform([m, cols]);
      const dy = uniform([m, rows]);
      const values = uniform([pattern.nnzBlocks, R, C]);
      const bias = layer.bias ? uniform([rows]) : undefined;
      const pre = uniform([m, cols]);
      const out = withRoutes(backend, mode, () => products(layer, pattern, x, dy, values, bias, pre));
      const tolerance = RELATIVE_TOLERANCE[dtype];

      // float64 for a few token rows and stored blocks: the outputs as dispatched against the math.
      const xs = x.dataSync();
      const dys = dy.dataSync();
      const vs = values.dataSync();
      const bs = bias?.dataSync();
      const pres = pre.dataSync();
      const { blockRow, blockCol } = pattern.coordinates;
      const tokens = [0, m - 1, Math.floor(draw() * m), Math.floor(draw() * m)];
      for (const t of tokens) {
        const yRef = new Float64Array(rows);
        const dxRef = new Float64Array(cols);
        if (bs) for (let r = 0; r < rows; r++) yRef[r] = bs[r];
        for (let p = 0; p < pattern.nnzBlocks; p++)
          for (let r = 0; r < R; r++) {
            const row = blockRow[p] * R + r;
            let sum = 0;
            for (let c = 0; c < C; c++) {
              const v = vs[(p * R + r) * C + c];
              sum += xs[t * cols + blockCol[p] * C + c] * v;
              dxRef[blockCol[p] * C + c] += dys[t * rows + row] * v;
            }
            yRef[row] += sum;
          }
        const slice = (data: Float32Array, width: number) => data.subarray(t * width, (t + 1) * width);
        expectGroupsClose(slice(out.y, rows), yRef, tolerance, `bsrLinear, token ${t} against float64`, rows / R, (i) => Math.floor(i / R));
        expectGroupsClose(slice(out.z, rows), yRef, tolerance, `bsrLinearActivation z, token ${t} against float64`, rows / R, (i) => Math.floor(i / R));
        const aRef = yRef.map(ACTIVATION[layer.activation]);
        expectGroupsClose(slice(out.a, rows), aRef, tolerance, `bsrLinearActivation a, token ${t} against float64`, rows / R, (i) => Math.floor(i / R));
        expectGroupsClose(slice(out.dx, cols), dxRef, tolerance, `bsrMatmul, token ${t} against float64`, cols / C, (i) => Math.floor(i / C));
        const dpreRef = dxRef.map((g, j) => g * DERIVATIVE[layer.activation](pres[t * cols + j]));
        expectGroupsClose(slice(out.dpre, cols), dpreRef, tolerance, `bsrMatmulActivationBackward dpre, token ${t} against float64`, cols / C, (i) => Math.floor(i / C));
      }
      const checked = [0, pattern.nnzBlocks - 1, Math.floor(draw() * pattern.nnzBlocks)].filter((p) => p >= 0 && p < pattern.nnzBlocks);
      for (const p of new Set(checked)) {
        const dwRef = new Float64Array(R * C);
        for (let t = 0; t < m; t++)
          for (let r = 0; r < R; r++) {
            const g = dys[t * rows + blockRow[p] * R + r];
            for (let c = 0; c < C; c++) dwRef[r * C + c] += g * xs[t * cols + blockCol[p] * C + c];
          }
        expectGroupsClose(out.dw.subarray(p * R * C, (p + 1) * R * C), dwRef, tolerance, `sampledMatmul, stored block ${p} against float64`, 1, () => 0);
      }

      // Every output in full against cuBLAS's dense routes (the blocks scattered into W, or dY^T X sampled).
      if (!backend.build.cublas) {
        console.log(`large_layers.test.ts: ${name}: cuBLAS is missing, so only the float64 rows above were compared`);
        return;
      }
      const ref = withRoutes(backend, "cublas", () => products(layer, pattern, x, dy, values, bias, pre));
      // Two roundings to the dtype, each of float32 sums: the outputs may differ by the dtype's unit in the last place.
      const byRow = tokenBlockGroups(m, rows, R);
      const byCol = tokenBlockGroups(m, cols, C);
      expectGroupsClose(out.y, ref.y, tolerance, "bsrLinear", byRow.groups, byRow.group);
      expectGroupsClose(out.z, ref.z, tolerance, "bsrLinearActivation z", byRow.groups, byRow.group);
      expectGroupsClose(out.a, ref.a, tolerance, "bsrLinearActivation a", byRow.groups, byRow.group);
      expectGroupsClose(out.dx, ref.dx, tolerance, "bsrMatmul", byCol.groups, byCol.group);
      expectGroupsClose(out.dpre, ref.dpre, tolerance, "bsrMatmulActivationBackward dpre", byCol.groups, byCol.group);
      expectGroupsClose(out.dbias, ref.dbias, tolerance, "bsrMatmulActivationBackward dbias", cols / C, (i) => Math.floor(i / C));
      expectGroupsClose(out.dw, ref.dw, tolerance, "sampledMatmul", Math.max(1, pattern.nnzBlocks), (i) => Math.floor(i / (R * C)));
    });
  },
  120_000,
);
