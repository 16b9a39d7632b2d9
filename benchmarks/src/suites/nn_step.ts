import { backward } from "@blocksparse/autograd";
import { type Tensor, memory, randn, tidy } from "@blocksparse/core";
import { Adam, BlockSparseLinear, Linear, weightBytes } from "@blocksparse/nn";
import { measure } from "../measure";
import { StepRecords } from "./step_record";
import { adamStep, bsrLinearRows, bsrMatmulRows, pickRows, rowsTimes, rowsTimesTransposed, sampledMatmulBlocks, transposedTimesRows } from "../reference";
import { type Check, TOLERANCE, compareToReference, spreadIndices } from "../validate";
import type { BenchCase, CaseGroup, SuiteConfig } from "./types";

const BLOCK = 32;
const LR = 1e-3;

/**
 * The training step as a user writes it: `BlockSparseLinear` (or `Linear`) forward, backward
 * through the tape with a fixed loss gradient dY, and `Adam.step()`. Validated on the first
 * step from float64 references of y, dW and Adam's first update (m = v = 0).
 */
export function nnStepGroup(config: SuiteConfig, M: number, K: number, N: number, densities: number[], seed: number): CaseGroup {
  const tolerance = TOLERANCE.float32;
  const rows = spreadIndices(M, Math.max(2, Math.min(8, Math.floor(1e8 / (K * N)))));
  let inputs: { x: Tensor; dy: Tensor; xHost: Float32Array; dyHost: Float32Array } | undefined;
  const getInputs = () => {
    if (!inputs) {
      const x = randn([M, K], { seed });
      // The input asks for its gradient too, so that backward computes both dX and dW.
      x.requiresGrad = true;
      const dy = randn([M, N], { seed: seed + 1, std: 1 / Math.sqrt(M) });
      inputs = { x, dy, xHost: Float32Array.from(x.dataSync()), dyHost: Float32Array.from(dy.dataSync()) };
    }
    return inputs;
  };
  const records = new StepRecords();

  const caseFor = (density: number): BenchCase => {
    const isDense = density === 1;
    const name = isDense ? "nn Linear + Adam (autograd)" : "nn BlockSparseLinear + Adam (autograd)";
    const params = { M, K, N, dtype: "float32", blockSize: isDense ? 0 : BLOCK, density };
    return {
      suite: "train",
      name,
      params,
      execute: () => {
        const { x, dy, xHost, dyHost } = getInputs();
        const layer = isDense
          ? new Linear(K, N, { bias: false, seed: seed + 2 })
          : new BlockSparseLinear(K, N, { density, blockShape: [BLOCK, BLOCK], bias: false, seed: seed + 2 });
        const optimizer = new Adam(layer.parameters(), { lr: LR });
        try {
          const weight = layer.weight;
          const initial = Float32Array.from(weight.value.dataSync());
          const before = memory().numBytes;
          let stepEndBytes = 0;
          const run = (): Tensor => {
            optimizer.zeroGrad();
            x.grad?.dispose();
            x.grad = null;
            const y = tidy(() => {
              const out = layer.forward(x);
              backward(out, dy);
              return out;
            });
            optimizer.step();
            // Weights, gradients, Adam's moments and y are all alive here: the step's peak.
            stepEndBytes = Math.max(stepEndBytes, memory().numBytes - before + weightBytes(layer));
            return y;
          };
          const validate = (y: Tensor): Check[] => {
            const pattern = layer instanceof BlockSparseLinear ? layer.pattern : undefined;
            const yRef = pattern ? bsrLinearRows(xHost, pattern, initial, rows) : rowsTimesTransposed(xHost, K, initial, N, rows);
            const dxRef = pattern ? bsrMatmulRows(dyHost, pattern, initial, rows) : rowsTimes(dyHost, N, initial, K, rows);
            const grad = weight.grad;
            if (!grad) return [{ what: "weight gradient", relError: Number.POSITIVE_INFINITY, tolerance, ok: false, detail: "backward left no gradient" }];
            const unit = pattern ? BLOCK * BLOCK : K;
            const units = spreadIndices(pattern ? pattern.nnzBlocks : N, Math.max(2, Math.min(8, Math.floor(5e7 / (M * unit)))));
            const gradRef = pattern ? sampledMatmulBlocks(dyHost, xHost, M, pattern, units) : transposedTimesRows(dyHost, N, xHost, K, M, units);
            const gradHost = grad.dataSync();
            const zeros = new Float64Array(units.length * unit);
            const paramRef = adamStep(pickRows(initial, unit, units), pickRows(gradHost, unit, units), zeros, zeros, { lr: LR, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, step: 1 });
            return [
              compareToReference(`y rows ${rows.length} of ${M}`, pickRows(y.dataSync(), N, rows), yRef, tolerance),
              x.grad
                ? compareToReference(`dX rows ${rows.length} of ${M}`, pickRows(x.grad.dataSync(), K, rows), dxRef, tolerance)
                : { what: "input gradient", relError: Number.POSITIVE_INFINITY, tolerance, ok: false, detail: "backward left no gradient for x" },
              compareToReference(`dW ${units.length} ${pattern ? "blocks" : "rows"}`, pickRows(gradHost, unit, units), gradRef, tolerance),
              compareToReference("weight after Adam's first step", pickRows(weight.value.dataSync(), unit, units), paramRef, tolerance),
            ];
          };
          const measured = measure({ name, run, validate, dispose: (y) => y.dispose(), synchronize: config.synchronize, setPoison: config.setPoison }, config.plan);
          const optimizerBytes = optimizer.stateSize(weight) * 4;
          const stateBytes = weightBytes(layer) + optimizerBytes;
          return records.record(name, params, measured, isDense, { weightBytes: weightBytes(layer), optimizerBytes, stateBytes, stepEndBytes });
        } finally {
          optimizer.dispose();
          for (const p of layer.parameters()) p.dispose();
        }
      },
    };
  };
  return {
    cases: [1, ...densities].map(caseFor),
    dispose: () => {
      if (inputs) {
        inputs.x.grad?.dispose();
        for (const t of [inputs.x, inputs.dy]) t.dispose();
      }
    },
  };
}
