import { backward, noGrad } from "@blocksparse/autograd";
import { type Tensor, tensor, tidy } from "@blocksparse/core";
import { GPT2_ATTENTION_LAYERS, GPT2_FFN_LAYERS, GPT2LMHeadModel } from "@blocksparse/models";
import { AdamW, crossEntropy, distillationLoss, type Module, SparseOptimizer } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { type TokenCorpus, WindowSampler } from "./data";

/** Model sizes: tiny runs on a CPU in seconds; small and gpt2 (GPT-2 small's shape) want a GPU. */
export const SIZES = {
  tiny: { n_embd: 64, n_layer: 2, n_head: 4, context: 32, batchSize: 8 },
  small: { n_embd: 256, n_layer: 4, n_head: 8, context: 128, batchSize: 32 },
  gpt2: { n_embd: 768, n_layer: 12, n_head: 12, context: 256, batchSize: 16 },
} as const;
export type Size = keyof typeof SIZES;

export type Mode = "sparse" | "distil" | "all";

export interface ExperimentOptions {
  size: Size;
  /** Training steps of every model trained from scratch. */
  steps: number;
  /** Densities of the static / RigL comparison. */
  densities: number[];
  /** Density of the model patched from the trained dense one and recovered. */
  distilDensity: number;
  /** Recovery steps (default: a tenth of `steps`). */
  recoverySteps?: number;
  /** Layers patched for the recovery: the feed-forward ones, or attention too. */
  patch: "ffn" | "ffn+attn";
  mode: Mode;
  learningRate: number;
  context?: number;
  batchSize?: number;
  /** Validation windows averaged for each validation loss. */
  evalBatches: number;
  seed: number;
}

export interface ResultRow {
  experiment: "sparse" | "distil";
  model: string;
  density: number;
  steps: number;
  validationLoss: number;
}

export type Progress = (model: string, step: number, steps: number, loss: number) => void;

/** The GPT-2 config of a size for a vocabulary (dropout off: every run sees the same computation). */
export function gpt2Config(size: Size, vocabSize: number, context: number): Record<string, unknown> {
  const { n_embd, n_layer, n_head } = SIZES[size];
  return { model_type: "gpt2", vocab_size: vocabSize, n_positions: context, n_embd, n_layer, n_head, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
}

/** Replaces the matching Linear layers by block-sparse ones (32x32 blocks, strongest kept) and frees the dense weights. */
export function sparsify(model: Module, density: number, patterns: RegExp[]): void {
  const before = new Map(model.namedModules());
  const patcher = new BlockSparseModelPatcher();
  for (const pattern of patterns) patcher.addPattern(pattern, { density });
  const report = patcher.patchModel(model);
  for (const layer of report.layers) for (const [name, parameter] of before.get(layer.name)?.namedParameters() ?? []) if (name === "weight") parameter.dispose();
}

/** Mean cross-entropy over `batches` validation windows (the same windows for every model). */
export function validationLoss(model: GPT2LMHeadModel, corpus: TokenCorpus, context: number, batchSize: number, batches: number, seed: number): number {
  const sampler = new WindowSampler(corpus.validation, batchSize, context, seed + 7919);
  model.eval();
  let total = 0;
  for (let b = 0; b < batches; b++) {
    const { inputs, targets } = sampler.next();
    total += noGrad(() => tidy(() => crossEntropy(model.forward(tensor(inputs, [batchSize, context])), tensor(targets, [batchSize, context])).item()));
  }
  model.train();
  return total / batches;
}

export interface TrainRun {
  name: string;
  steps: number;
  learningRate: number;
  context: number;
  batchSize: number;
  seed: number;
  /** Moves the patterns (RigL) after each step. */
  sparse?: SparseOptimizer;
  /** Distils from this model's logits instead of the labels alone. */
  teacher?: GPT2LMHeadModel;
  onStep?: Progress;
}

/** Trains with AdamW (linear warm-up over 5% of the steps, cosine decay to a tenth); every run with the same seed sees the same batches. */
export function train(model: GPT2LMHeadModel, corpus: TokenCorpus, run: TrainRun): void {
  const optimizer = new AdamW(model.parameters(), { lr: run.learningRate, weightDecay: 0.01 });
  run.sparse?.attachOptimizer(optimizer);
  const sampler = new WindowSampler(corpus.train, run.batchSize, run.context, run.seed);
  const warmup = Math.max(1, Math.round(0.05 * run.steps));
  const shape = [run.batchSize, run.context];
  model.train();
  for (let step = 0; step < run.steps; step++) {
    const progress = step < warmup ? (step + 1) / warmup : 0.1 + 0.45 * (1 + Math.cos((Math.PI * (step - warmup)) / Math.max(1, run.steps - warmup)));
    optimizer.lr = run.learningRate * Math.min(1, progress);
    const { inputs, targets } = sampler.next();
    const [x, y] = [tensor(inputs, shape), tensor(targets, shape)];
    optimizer.zeroGrad();
    const loss = tidy(() => {
      const logits = model.forward(x);
      const teacher = run.teacher;
      const value = teacher ? distillationLoss(logits, noGrad(() => teacher.forward(x)), y, { temperature: 2, alpha: 0.5 }) : crossEntropy(logits, y);
      backward(value);
      return value.item();
    });
    optimizer.step();
    run.sparse?.step(() => crossEntropy(model.forward(x), y));
    disposeAll([x, y]);
    run.onStep?.(run.name, step + 1, run.steps, loss);
  }
  optimizer.zeroGrad();
  optimizer.dispose();
}

function disposeAll(tensors: Tensor[]): void {
  for (const t of tensors) t.dispose();
}

function copyOf(model: GPT2LMHeadModel): GPT2LMHeadModel {
  const copy = new GPT2LMHeadModel(model.config, { seed: 0 });
  const state = model.stateDict();
  copy.loadStateDict(state);
  for (const entry of state.values()) entry.dispose();
  return copy;
}

/**
 * Runs the experiments of `options.mode` and returns one row per model:
 * - sparse: dense, then per density the feed-forward layers patched at initialisation and
 *   trained the same steps with a static pattern and with RigL;
 * - distil: the trained dense model patched at distilDensity, then recovered for a tenth of
 *   its steps by fine-tuning (labels only) and by distillation from the dense model.
 */
export function runExperiments(corpus: TokenCorpus, options: ExperimentOptions, onStep?: Progress): ResultRow[] {
  const size = SIZES[options.size];
  const context = options.context ?? size.context;
  const batchSize = options.batchSize ?? size.batchSize;
  const config = gpt2Config(options.size, corpus.vocabSize, context);
  const base = { learningRate: options.learningRate, context, batchSize, seed: options.seed, onStep };
  const evaluate = (model: GPT2LMHeadModel) => validationLoss(model, corpus, context, batchSize, options.evalBatches, options.seed);
  const rows: ResultRow[] = [];
  const initial = new GPT2LMHeadModel(config, { seed: options.seed });
  const dense = copyOf(initial);
  train(dense, corpus, { ...base, name: "dense", steps: options.steps });
  const denseRow = { model: "dense", density: 1, steps: options.steps, validationLoss: evaluate(dense) };
  if (options.mode !== "distil") {
    rows.push({ experiment: "sparse", ...denseRow });
    for (const density of options.densities) {
      for (const regrow of ["static", "rigl"] as const) {
        const model = copyOf(initial);
        sparsify(model, density, [GPT2_FFN_LAYERS]);
        const sparse =
          regrow === "rigl"
            ? new SparseOptimizer(model, {
                regrow: "gradient",
                fraction: 0.3,
                every: Math.max(1, Math.round(options.steps / 40)),
                schedule: "cosine",
                totalSteps: Math.max(1, Math.floor(0.75 * options.steps)),
                seed: options.seed,
              })
            : undefined;
        const name = `FFN ${density} ${regrow}`;
        train(model, corpus, { ...base, name, steps: options.steps, sparse });
        rows.push({ experiment: "sparse", model: name, density, steps: options.steps, validationLoss: evaluate(model) });
      }
    }
  }
  if (options.mode !== "sparse") {
    const recoverySteps = options.recoverySteps ?? Math.max(1, Math.round(options.steps / 10));
    const patterns = options.patch === "ffn" ? [GPT2_FFN_LAYERS] : [GPT2_FFN_LAYERS, GPT2_ATTENTION_LAYERS];
    const density = options.distilDensity;
    rows.push({ experiment: "distil", ...denseRow, model: "dense (teacher)" });
    dense.eval();
    for (const recovery of ["none", "fine-tune", "distil"] as const) {
      const model = copyOf(dense);
      sparsify(model, density, patterns);
      const label = options.patch === "ffn" ? "FFN" : "FFN+attn";
      const name = recovery === "none" ? `${label} ${density} patched` : `${label} ${density} ${recovery}`;
      const steps = recovery === "none" ? 0 : recoverySteps;
      if (steps > 0) train(model, corpus, { ...base, name, steps, teacher: recovery === "distil" ? dense : undefined });
      rows.push({ experiment: "distil", model: name, density, steps, validationLoss: evaluate(model) });
    }
  }
  return rows;
}
