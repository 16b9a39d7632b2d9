import { BsrPattern, type Tensor, adamUpdate, bsrLinear, bsrMatmul, bytesPerElement, matmul, memory, rand, randn, sampledMatmul } from "@blocksparse/core";
import { measure } from "../measure";
import { StepRecords } from "./step_record";
import { adamStep, bsrLinearRows, bsrMatmulRows, pickRows, rowsTimes, rowsTimesTransposed, sampledMatmulBlocks, transposedTimesRows } from "../reference";
import { type BenchDType, type Check, TOLERANCE, compareToReference, spreadIndices } from "../validate";
import { nnStepGroup } from "./nn_step";
import type { BenchCase, CaseGroup, Suite, SuiteConfig } from "./types";

const ADAM = { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, step: 3 };
const BLOCK = 32;

interface StepOutputs {
  y: Tensor;
  dx: Tensor;
  grad: Tensor;
  param: Tensor;
  m: Tensor;
  v: Tensor;
}

function disposeAll(out: StepOutputs): void {
  for (const t of Object.values(out)) t.dispose();
}

function host(t: Tensor): Float32Array {
  return Float32Array.from(t.dataSync());
}

/**
 * One training step of a linear layer made of the kernels a layer uses: the forward
 * product, the input gradient, the weight gradient (sampled at the pattern when sparse)
 * and a fused Adam update. The loss gradient dY is fixed, so every call does the same work.
 */
function stepGroup(config: SuiteConfig, M: number, K: number, N: number, dtype: BenchDType, densities: number[], seed: number): CaseGroup {
  const tolerance = TOLERANCE[dtype];
  const rows = spreadIndices(M, Math.max(2, Math.min(8, Math.floor(1e8 / (K * N)))));
  let inputs: { x: Tensor; dy: Tensor; xHost: Float32Array; dyHost: Float32Array } | undefined;
  const getInputs = () => {
    if (!inputs) {
      const x = randn([M, K], { seed, dtype });
      const dy = randn([M, N], { seed: seed + 1, dtype, std: 1 / Math.sqrt(M) });
      inputs = { x, dy, xHost: host(x), dyHost: host(dy) };
    }
    return inputs;
  };
  const records = new StepRecords();
  const common = { synchronize: config.synchronize, setPoison: config.setPoison, dispose: disposeAll };

  const caseFor = (density: number): BenchCase => {
    const isDense = density === 1;
    const name = isDense ? "dense step (kernels)" : "block-sparse step (kernels)";
    const params = { M, K, N, dtype, blockSize: isDense ? 0 : BLOCK, density };
    return {
      suite: "train",
      name,
      params,
      execute: () => {
        const { x, dy, xHost, dyHost } = getInputs();
        const pattern = isDense ? undefined : BsrPattern.random([N, K], { blockShape: [BLOCK, BLOCK], density, seed: seed + 7 });
        const weightShape = pattern ? [pattern.nnzBlocks, BLOCK, BLOCK] : [N, K];
        const before = memory().numBytes;
        const w = randn(weightShape, { seed: seed + 2, dtype, std: 1 / Math.sqrt(K * density) });
        const m = randn(weightShape, { seed: seed + 3, std: 1e-3 });
        const v = rand(weightShape, { seed: seed + 4, low: 1e-7, high: 1e-6 });
        const indexBytes = pattern ? (pattern.blockRowPtr.length + pattern.blockColIdx.length) * 4 : 0;
        const weightBytes = w.size * bytesPerElement(dtype) + indexBytes;
        const optimizerBytes = (m.size + v.size) * 4;
        const stateBytes = memory().numBytes - before + indexBytes;
        try {
          const wHost = host(w);
          const mHost = host(m);
          const vHost = host(v);
          let stepEndBytes = 0;
          const run = (): StepOutputs => {
            const start = memory().numBytes;
            const y = pattern ? bsrLinear(x, w, pattern) : matmul(x, w, { transposeB: true });
            const dx = pattern ? bsrMatmul(dy, w, pattern) : matmul(dy, w);
            const grad = pattern ? sampledMatmul(dy, x, pattern) : matmul(dy, x, { transposeA: true });
            const next = adamUpdate(w, grad, m, v, ADAM);
            // Nothing is freed inside a step, so its end is its peak.
            stepEndBytes = Math.max(stepEndBytes, stateBytes + memory().numBytes - start);
            return { y, dx, grad, ...next };
          };
          const validate = (out: StepOutputs): Check[] => {
            const yRef = pattern ? bsrLinearRows(xHost, pattern, wHost, rows) : rowsTimesTransposed(xHost, K, wHost, N, rows);
            const dxRef = pattern ? bsrMatmulRows(dyHost, pattern, wHost, rows) : rowsTimes(dyHost, N, wHost, K, rows);
            const checks = [
              compareToReference(`y rows ${rows.length} of ${M}`, pickRows(out.y.dataSync(), N, rows), yRef, tolerance),
              compareToReference(`dX rows ${rows.length} of ${M}`, pickRows(out.dx.dataSync(), K, rows), dxRef, tolerance),
            ];
            // The weight gradient and the Adam update on a few blocks (dense: rows of W).
            const unit = pattern ? BLOCK * BLOCK : K;
            const units = spreadIndices(pattern ? pattern.nnzBlocks : N, Math.max(2, Math.min(8, Math.floor(5e7 / (M * unit)))));
            const gradRef = pattern ? sampledMatmulBlocks(dyHost, xHost, M, pattern, units) : transposedTimesRows(dyHost, N, xHost, K, M, units);
            checks.push(compareToReference(`dW ${units.length} ${pattern ? "blocks" : "rows"}`, pickRows(out.grad.dataSync(), unit, units), gradRef, tolerance));
            // Adam is checked from the kernel's own gradient, so that one error is not counted twice.
            const paramRef = adamStep(pickRows(wHost, unit, units), pickRows(out.grad.dataSync(), unit, units), pickRows(mHost, unit, units), pickRows(vHost, unit, units), ADAM);
            checks.push(compareToReference(`W after Adam, ${units.length} ${pattern ? "blocks" : "rows"}`, pickRows(out.param.dataSync(), unit, units), paramRef, tolerance));
            return checks;
          };
          const measured = measure({ name: `${name} d${density}`, run, validate, ...common }, config.plan);
          return records.record(name, params, measured, isDense, { weightBytes, optimizerBytes, stateBytes, stepEndBytes });
        } finally {
          for (const t of [w, m, v]) t.dispose();
        }
      },
    };
  };
  return {
    cases: [1, ...densities].map(caseFor),
    dispose: () => {
      if (inputs) for (const t of [inputs.x, inputs.dy]) t.dispose();
    },
  };
}

export const trainSuite: Suite = {
  name: "train",
  description: "a linear layer's training step (forward, both gradients, Adam): BlockSparseLinear against dense Linear, with the memory of weights and optimizer state",
  plan: (config) => {
    const [M, K, N] = config.large ? [8192, 4096, 4096] : config.quick ? [64, 256, 256] : [256, 1024, 1024];
    const densities = config.large && config.quick ? [0.25] : [0.5, 0.25, 0.1];
    const groups = config.dtypes.map((dtype, i) => stepGroup(config, M, K, N, dtype, densities, 9000 + 100 * i));
    // nn's layers hold float32 parameters.
    if (config.dtypes.includes("float32")) groups.push(nnStepGroup(config, M, K, N, densities.slice(-2), 9900));
    return groups;
  },
};
