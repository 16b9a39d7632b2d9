import { BsrPattern, type Tensor, bsrLinear, bsrMatmul, matmul, randn, sampledMatmul } from "@blocksparse/core";
import { type TimingPlan, measure, timingRecord } from "../measure";
import type { BenchRecord } from "../record";
import { bsrLinearRows, bsrMatmulRows, pickRows, rowsTimes, rowsTimesTransposed, sampledMatmulBlocks, transposedTimesRows } from "../reference";
import { type BenchDType, type Check, TOLERANCE, compareToReference, spreadIndices } from "../validate";
import type { BenchCase, CaseGroup, Suite, SuiteConfig } from "./types";

/** The three block-sparse products of a layer step, and the dense product each replaces. */
export const SPARSE_OPS = ["bsrLinear", "bsrMatmul", "sampledMatmul"] as const;
export type SparseOp = (typeof SPARSE_OPS)[number];
export const DENSE_EQUIVALENT: Record<SparseOp, string> = {
  bsrLinear: "dense x·Wᵀ",
  bsrMatmul: "dense dY·W",
  sampledMatmul: "dense dYᵀ·X",
};

export const DENSITIES = [1, 0.5, 0.25, 0.1];

export interface KernelShape {
  M: number;
  K: number;
  N: number;
}

/** Sizes: on a CPU small enough for minutes on two cores; on a GPU the sizes. */
export function kernelSizes(config: Pick<SuiteConfig, "quick" | "large" | "dtypes">): { shapes: Array<KernelShape & { dtypes: BenchDType[] }>; blockSizes: number[] } {
  if (config.large) {
    const blockSizes = config.quick ? [32, 64, 128] : [16, 32, 64, 128];
    const first = config.dtypes[0];
    return {
      shapes: [
        { M: 8192, K: 4096, N: 4096, dtypes: config.dtypes },
        // The small-batch (inference-like) shape in one dtype keeps the run short.
        ...(config.quick || first === undefined ? [] : [{ M: 512, K: 4096, N: 4096, dtypes: [first] }]),
      ],
      blockSizes,
    };
  }
  return {
    shapes: [config.quick ? { M: 64, K: 256, N: 256, dtypes: config.dtypes } : { M: 256, K: 1024, N: 1024, dtypes: config.dtypes }],
    blockSizes: [16, 32, 64],
  };
}

interface KernelInputs {
  x: Tensor;
  w: Tensor;
  dy: Tensor;
  /** The inputs as the kernels see them (rounded to the dtype), for the references. */
  xHost: Float32Array;
  wHost: Float32Array;
  dyHost: Float32Array;
}

function lazy<T>(create: () => T): { get: () => T; created: () => T | undefined } {
  let value: T | undefined;
  return { get: () => (value ??= create()), created: () => value };
}

function hostValues(t: Tensor): Float32Array {
  return Float32Array.from(t.dataSync());
}

/** Rows checked against the float64 reference: enough to catch a wrong tile, cheap enough for GPU sizes. */
function checkRowCount(shape: KernelShape): number {
  return Math.max(2, Math.min(16, Math.floor(2e8 / (shape.K * shape.N))));
}

function record(suite: string, name: string, params: Record<string, number | string>, checks: Check[], measured: ReturnType<typeof measure>, metrics: Record<string, number>): BenchRecord {
  return {
    suite,
    name,
    params,
    checks,
    timing: timingRecord(measured),
    metrics,
  };
}

function gflops(flop: number, ms: number): number {
  return flop / (ms * 1e6);
}

/** Plans the dense and block-sparse cases of one shape and dtype. */
function shapeGroup(config: SuiteConfig, shape: KernelShape, dtype: BenchDType, blockSizes: number[], seed: number): CaseGroup {
  const { M, K, N } = shape;
  const plan: TimingPlan = config.plan;
  const tolerance = TOLERANCE[dtype];
  const rows = spreadIndices(M, checkRowCount(shape));
  const inputs = lazy<KernelInputs>(() => {
    const x = randn([M, K], { seed, dtype });
    const w = randn([N, K], { seed: seed + 1, dtype, std: 1 / Math.sqrt(K) });
    const dy = randn([M, N], { seed: seed + 2, dtype });
    return { x, w, dy, xHost: hostValues(x), wHost: hostValues(w), dyHost: hostValues(dy) };
  });
  const denseMs: Partial<Record<SparseOp, number>> = {};
  const base = { M, K, N, dtype };
  const common = { synchronize: config.synchronize, setPoison: config.setPoison, dispose: (t: Tensor) => t.dispose() };
  const cases: BenchCase[] = [];
  const denseFlop = 2 * M * N * K;

  const dense: Record<SparseOp, { run: (i: KernelInputs) => Tensor; check: (i: KernelInputs, out: Tensor) => Check }> = {
    bsrLinear: {
      run: (i) => matmul(i.x, i.w, { transposeB: true }),
      check: (i, out) => compareToReference(`y rows ${rows.length} of ${M}`, pickRows(out.dataSync(), N, rows), rowsTimesTransposed(i.xHost, K, i.wHost, N, rows), tolerance),
    },
    bsrMatmul: {
      run: (i) => matmul(i.dy, i.w),
      check: (i, out) => compareToReference(`dX rows ${rows.length} of ${M}`, pickRows(out.dataSync(), K, rows), rowsTimes(i.dyHost, N, i.wHost, K, rows), tolerance),
    },
    sampledMatmul: {
      run: (i) => matmul(i.dy, i.x, { transposeA: true }),
      check: (i, out) => {
        const wRows = spreadIndices(N, Math.max(1, Math.floor(rows.length / 2)));
        return compareToReference(`dW rows ${wRows.length} of ${N}`, pickRows(out.dataSync(), K, wRows), transposedTimesRows(i.dyHost, N, i.xHost, K, M, wRows), tolerance);
      },
    },
  };
  for (const op of SPARSE_OPS) {
    const params = { ...base, op, blockSize: 0, density: 1 };
    cases.push({
      suite: "kernels",
      name: DENSE_EQUIVALENT[op],
      params,
      execute: () => {
        const i = inputs.get();
        const measured = measure({ name: DENSE_EQUIVALENT[op], run: () => dense[op].run(i), validate: (out) => [dense[op].check(i, out)], ...common }, plan);
        denseMs[op] = measured.summary.median;
        return record("kernels", DENSE_EQUIVALENT[op], params, measured.checks, measured, { gflops: gflops(denseFlop, measured.summary.median), flop: denseFlop });
      },
    });
  }

  for (const blockSize of blockSizes) {
    if (K % blockSize !== 0 || N % blockSize !== 0) continue;
    for (const density of DENSITIES) {
      const sparse = lazy(() => {
        const pattern = BsrPattern.random([N, K], { blockShape: [blockSize, blockSize], density, seed: seed + 10 + blockSize });
        const values = randn([pattern.nnzBlocks, blockSize, blockSize], { seed: seed + 3, dtype, std: 1 / Math.sqrt(K * density) });
        return { pattern, values, valuesHost: hostValues(values) };
      });
      for (const op of SPARSE_OPS) {
        const params = { ...base, op, blockSize, density };
        const name = op;
        cases.push({
          suite: "kernels",
          name,
          params,
          execute: () => {
            const i = inputs.get();
            const { pattern, values, valuesHost } = sparse.get();
            const flop = 2 * M * pattern.nnzBlocks * blockSize * blockSize;
            let run: () => Tensor;
            let validate: (out: Tensor) => Check[];
            if (op === "bsrLinear") {
              run = () => bsrLinear(i.x, values, pattern);
              validate = (out) => [compareToReference(`y rows ${rows.length} of ${M}`, pickRows(out.dataSync(), N, rows), bsrLinearRows(i.xHost, pattern, valuesHost, rows), tolerance)];
            } else if (op === "bsrMatmul") {
              run = () => bsrMatmul(i.dy, values, pattern);
              validate = (out) => [compareToReference(`dX rows ${rows.length} of ${M}`, pickRows(out.dataSync(), K, rows), bsrMatmulRows(i.dyHost, pattern, valuesHost, rows), tolerance)];
            } else {
              const blockCount = Math.max(2, Math.min(32, Math.floor(1e8 / (M * blockSize * blockSize))));
              const blocks = spreadIndices(pattern.nnzBlocks, blockCount);
              run = () => sampledMatmul(i.dy, i.x, pattern);
              validate = (out) => [
                compareToReference(
                  `dW blocks ${blocks.length} of ${pattern.nnzBlocks}`,
                  pickRows(out.dataSync(), blockSize * blockSize, blocks),
                  sampledMatmulBlocks(i.dyHost, i.xHost, M, pattern, blocks),
                  tolerance,
                ),
              ];
            }
            const measured = measure({ name: `${op} b${blockSize} d${density}`, run, validate, ...common }, plan);
            const median = measured.summary.median;
            const metrics: Record<string, number> = { gflops: gflops(flop, median), flop, nnzBlocks: pattern.nnzBlocks };
            const reference = denseMs[op];
            if (reference !== undefined) {
              metrics.speedupVsDense = reference / median;
              metrics.denseEquivalentGflops = gflops(denseFlop, median);
            }
            return record("kernels", name, params, measured.checks, measured, metrics);
          },
        });
      }
      const last = cases[cases.length - 1];
      const execute = last.execute;
      // The pattern's values are freed once its last op was timed.
      last.execute = () => {
        try {
          return execute();
        } finally {
          sparse.created()?.values.dispose();
        }
      };
    }
  }
  return {
    cases,
    dispose: () => {
      const i = inputs.created();
      if (i) for (const t of [i.x, i.w, i.dy]) t.dispose();
    },
  };
}

export const kernelsSuite: Suite = {
  name: "kernels",
  description: "dense matmul against bsrLinear, bsrMatmul and sampledMatmul at every block size and density",
  plan: (config) => {
    const { shapes, blockSizes } = kernelSizes(config);
    const groups: CaseGroup[] = [];
    for (const shape of shapes) {
      for (const dtype of shape.dtypes) groups.push(shapeGroup(config, shape, dtype, blockSizes, 100 * (groups.length + 1)));
    }
    return groups;
  },
};
