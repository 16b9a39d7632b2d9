import { backward, noGrad } from "@blocksparse/autograd";
import { type FloatDType, type Tensor, tensor, tidy } from "@blocksparse/core";
import { GPT2_ATTENTION_LAYERS, GPT2_FFN_LAYERS, GPT2LMHeadModel } from "@blocksparse/models";
import { AdamW, crossEntropy, distillationLoss, inverseDensity, type Module, SparseOptimizer } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { checkDensitiesKeepABlock } from "../../shared/flags";
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
  /** Training steps of every model trained from scratch; "auto" fills `budgetSeconds` (see plan.ts). */
  steps: number | "auto";
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
  /** Peak learning rate of the recovery runs (distillation and fine-tuning; default: learningRate). */
  recoveryLearningRate?: number;
  context?: number;
  batchSize?: number;
  /** Validation windows averaged for each validation loss. */
  evalBatches: number;
  /** Validation losses taken along each run (evenly spaced, the last at its end): the curve shows over-fitting. */
  curvePoints: number;
  /** The models' parameters: bfloat16 is mixed precision (AdamW keeps float32 master weights and moments). */
  dtype: FloatDType;
  /** Wall-clock seconds for everything from `startedAt`: a run that would not fit is skipped, one that reaches the end stops. */
  budgetSeconds?: number;
  /** RigL's schedule (default DEFAULT_RIGL; see riglOptimizer). */
  rigl?: RiglSchedule;
  /** The block-sparse layers' learning rate: the same as the others', or it divided by their density (see SparseLr). */
  sparseLr: SparseLr;
  seed: number;
}

/** "same": every parameter at lr. "inverse-density": each block-sparse weight at lr / density (nn's `inverseDensity`). */
export type SparseLr = "same" | "inverse-density";

/**
 * How RigL moves the patterns: `fraction` of each layer's blocks at the first update, cosine-decayed to 0 at
 * `end` of the training steps, an update every `every` steps (undefined: steps / 40).
 */
export interface RiglSchedule {
  fraction: number;
  every?: number;
  end: number;
}

export const DEFAULT_RIGL: RiglSchedule = { fraction: 0.3, end: 0.75 };

export type RunStatus = "done" | "stopped" | "skipped" | "failed";

export interface CurvePoint {
  step: number;
  validationLoss: number;
}

export interface ResultRow {
  experiment: "sparse" | "distil";
  model: string;
  density: number;
  /** Steps the run was planned for. */
  steps: number;
  /** Steps it ran: fewer when the budget stopped it ("stopped"), 0 when it did not start ("skipped"). */
  completedSteps: number;
  /** "failed": the run threw, or its validation loss is not finite; `error` says which. */
  status: RunStatus;
  error?: string;
  /** The validation loss after its last step (null when skipped). */
  validationLoss: number | null;
  curve: CurvePoint[];
  /** Wall-clock seconds of the run, validation included. */
  seconds: number;
  /** Milliseconds per training step, validation excluded (null without steps). */
  msPerStep: number | null;
}

export type Progress = (model: string, step: number, steps: number, loss: number) => void;

/** The GPT-2 config of a size for a vocabulary (dropout off: every run sees the same computation). */
export function gpt2Config(size: Size, vocabSize: number, context: number): Record<string, unknown> {
  const { n_embd, n_layer, n_head } = SIZES[size];
  return { model_type: "gpt2", vocab_size: vocabSize, n_positions: context, n_embd, n_layer, n_head, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
}

/** The patcher of the block-sparse models: the Linear layers matching `patterns` at `density`, 32x32 blocks, strongest kept. */
function sparsePatcher(density: number, patterns: RegExp[]): BlockSparseModelPatcher {
  const patcher = new BlockSparseModelPatcher();
  for (const pattern of patterns) patcher.addPattern(pattern, { density });
  return patcher;
}

/** Replaces the matching Linear layers by block-sparse ones (32x32 blocks, strongest kept) and frees the dense weights. */
export function sparsify(model: Module, density: number, patterns: RegExp[]): void {
  sparsePatcher(density, patterns).patchModel(model, { disposeReplaced: true });
}

/** The layers `--patch` names for the recovery: the feed-forward ones, or attention too. */
export function recoveryPatterns(patch: ExperimentOptions["patch"]): RegExp[] {
  return patch === "ffn" ? [GPT2_FFN_LAYERS] : [GPT2_FFN_LAYERS, GPT2_ATTENTION_LAYERS];
}

/**
 * Refuses a density under which a patched layer keeps no block (nn would keep one anyway, a denser layer than the
 * table names): the sparse experiment's feed-forward layers at each of `densities`, and the layers `patch` names at
 * `distilDensity`. Checked on the layers' real shapes: the patcher's dry run on one block of the models (every block
 * has the same layers).
 */
export function checkDensities(setup: ExperimentContext, options: ExperimentOptions): void {
  const model = new GPT2LMHeadModel({ ...setup.config, n_layer: 1 }, { seed: options.seed });
  try {
    const layersAt = (patterns: RegExp[]) => (density: number) => sparsePatcher(density, patterns).patchModel(model, { dryRun: true }).layers;
    if (options.mode !== "distil") checkDensitiesKeepABlock(options.densities, layersAt([GPT2_FFN_LAYERS]), "a larger --size");
    if (options.mode !== "sparse") checkDensitiesKeepABlock([options.distilDensity], layersAt(recoveryPatterns(options.patch)), "a larger --size", "distil-density");
  } finally {
    disposeModel(model);
  }
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
  /** The block-sparse weights' learning rate (default "same"). */
  sparseLr?: SparseLr;
  /** Distils from this model's logits instead of the labels alone. */
  teacher?: GPT2LMHeadModel;
  /** performance.now() after which no step starts (the run then ends early, stopped). */
  deadline?: number;
  /** Steps after which `evaluate` runs (the last step's is added when the run stops early). */
  evaluateAt?: ReadonlySet<number>;
  evaluate?: () => number;
  /** The training loss is read (a device synchronisation) every this many steps and on the last (default 1). */
  lossEvery?: number;
  onStep?: Progress;
}

export interface TrainResult {
  completedSteps: number;
  curve: CurvePoint[];
  /** Milliseconds of the training steps alone (validation excluded). */
  trainingMs: number;
}

/** Trains with AdamW (linear warm-up over 5% of the steps, cosine decay to a tenth); every run with the same seed sees the same batches. */
export function train(model: GPT2LMHeadModel, corpus: TokenCorpus, run: TrainRun): TrainResult {
  const lrScale = (run.sparseLr ?? "same") === "inverse-density" ? inverseDensity : undefined;
  const optimizer = new AdamW(model.parameters(), { lr: run.learningRate, weightDecay: 0.01, lrScale });
  run.sparse?.attachOptimizer(optimizer);
  const sampler = new WindowSampler(corpus.train, run.batchSize, run.context, run.seed);
  const warmup = Math.max(1, Math.round(0.05 * run.steps));
  const shape = [run.batchSize, run.context];
  const lossEvery = run.lossEvery ?? 1;
  const curve: CurvePoint[] = [];
  const started = performance.now();
  let evaluationMs = 0;
  const evaluate = (step: number) => {
    if (run.evaluate === undefined) return;
    const start = performance.now();
    curve.push({ step, validationLoss: run.evaluate() });
    evaluationMs += performance.now() - start;
  };
  let step = 0;
  model.train();
  try {
    for (; step < run.steps && !(run.deadline !== undefined && performance.now() > run.deadline); step++) {
      const progress = step < warmup ? (step + 1) / warmup : 0.1 + 0.45 * (1 + Math.cos((Math.PI * (step - warmup)) / Math.max(1, run.steps - warmup)));
      optimizer.lr = run.learningRate * Math.min(1, progress);
      const { inputs, targets } = sampler.next();
      const [x, y] = [tensor(inputs, shape), tensor(targets, shape)];
      const readLoss = (step + 1) % lossEvery === 0 || step + 1 === run.steps;
      optimizer.zeroGrad();
      const loss = tidy(() => {
        const logits = model.forward(x);
        const teacher = run.teacher;
        const value = teacher ? distillationLoss(logits, noGrad(() => teacher.forward(x)), y, { temperature: 2, alpha: 0.5 }) : crossEntropy(logits, y);
        backward(value);
        return readLoss ? value.item() : Number.NaN;
      });
      optimizer.step();
      run.sparse?.step(() => crossEntropy(model.forward(x), y));
      disposeAll([x, y]);
      if (readLoss) run.onStep?.(run.name, step + 1, run.steps, loss);
      if (run.evaluateAt?.has(step + 1)) evaluate(step + 1);
    }
    // A run stopped early, or one of no steps (a patched model as it is), ends with a validation loss too.
    if (curve.at(-1)?.step !== step && (step > 0 || run.steps === 0)) evaluate(step);
  } finally {
    optimizer.zeroGrad();
    optimizer.dispose();
  }
  return { completedSteps: step, curve, trainingMs: performance.now() - started - evaluationMs };
}

function disposeAll(tensors: Tensor[]): void {
  for (const t of tensors) t.dispose();
}

/** A new model with `model`'s config and values, in `dtype`. */
export function copyOf(model: GPT2LMHeadModel, dtype: FloatDType): GPT2LMHeadModel {
  const copy = new GPT2LMHeadModel(model.config, { seed: 0 }).to(dtype);
  const state = model.stateDict();
  copy.loadStateDict(state);
  for (const entry of state.values()) entry.dispose();
  return copy;
}

/** Steps after which a run of `steps` takes its validation losses: `points` of them, evenly spaced, the last at the end. */
export function curveSteps(steps: number, points: number): Set<number> {
  const count = Math.max(1, Math.min(points, steps));
  return new Set(Array.from({ length: count }, (_, i) => Math.round(((i + 1) * steps) / count)));
}

/** The RigL schedule of the comparison: 30% of the blocks moved every steps/40 steps, cosine-decayed to 0 at 3/4 of training. */
export function riglOptimizer(model: Module, steps: number, seed: number, schedule: RiglSchedule = DEFAULT_RIGL): SparseOptimizer {
  return new SparseOptimizer(model, {
    regrow: "gradient",
    fraction: schedule.fraction,
    every: schedule.every ?? Math.max(1, Math.round(steps / 40)),
    schedule: "cosine",
    totalSteps: Math.max(1, Math.floor(schedule.end * steps)),
    seed,
  });
}

/** Frees every parameter of `model` (a tied parameter once). */
export function disposeModel(model: Module): void {
  for (const parameter of new Set(model.parameters())) parameter.dispose();
}

/** What one experiment needs besides the options: the data, its shapes and the models' config. */
export interface ExperimentContext {
  corpus: TokenCorpus;
  config: Record<string, unknown>;
  context: number;
  batchSize: number;
}

export function experimentContext(corpus: TokenCorpus, options: ExperimentOptions): ExperimentContext {
  const size = SIZES[options.size];
  const context = options.context ?? size.context;
  return { corpus, context, batchSize: options.batchSize ?? size.batchSize, config: gpt2Config(options.size, corpus.vocabSize, context) };
}

/** The kinds of run whose step times differ. */
export type RunKind = { kind: "dense" } | { kind: "static" | "rigl" | "fine-tune" | "distil"; density: number };

export interface RunHooks {
  onStep?: Progress;
  /** Called with each row as soon as it is known (a skipped run too). */
  onRow?: (row: ResultRow) => void;
  /** Estimated seconds of a run, validation included (plan.ts): with a budget, a run that would end past it is skipped. */
  estimateSeconds?: (run: RunKind, steps: number) => number;
}

/** One run to make: its row's labels, the model it trains (built only if it starts) and what it trains with. */
interface RunSpec {
  experiment: ResultRow["experiment"];
  name: string;
  run: RunKind;
  steps: number;
  /** Its peak learning rate (default: options.learningRate). */
  learningRate?: number;
  make: () => GPT2LMHeadModel;
  with?: (model: GPT2LMHeadModel) => Partial<TrainRun>;
}

/**
 * Runs the experiments of `options.mode` for `steps` steps and returns one row per model:
 * - sparse: dense, then per density the feed-forward layers patched at initialisation and
 *   trained the same steps with a static pattern and with RigL;
 * - distil: the trained dense model patched at distilDensity, then recovered for a tenth of
 *   its steps by distillation from the dense model and by fine-tuning (labels only).
 * With a budget (from `startedAt`, a performance.now() time), a run whose estimate would end
 * past it is skipped and one still running at the end stops there; its row says which.
 */
export function runExperiments(setup: ExperimentContext, options: ExperimentOptions, steps: number, startedAt: number, hooks: RunHooks = {}): ResultRow[] {
  const { corpus, config, context, batchSize } = setup;
  const deadline = options.budgetSeconds === undefined ? undefined : startedAt + options.budgetSeconds * 1000;
  const rows: ResultRow[] = [];
  const record = (row: ResultRow) => {
    rows.push(row);
    hooks.onRow?.(row);
    return row;
  };
  /** Trains the spec's model and records its row; returns the model when the run started (the caller disposes it). */
  const runOne = (spec: RunSpec): { row: ResultRow; model?: GPT2LMHeadModel } => {
    const density = spec.run.kind === "dense" ? 1 : spec.run.density;
    const row: ResultRow = { experiment: spec.experiment, model: spec.name, density, steps: spec.steps, completedSteps: 0, status: "skipped", validationLoss: null, curve: [], seconds: 0, msPerStep: null };
    const estimate = hooks.estimateSeconds?.(spec.run, spec.steps);
    if (deadline !== undefined && estimate !== undefined && performance.now() + 1000 * estimate > deadline) return { row: record(row) };
    const start = performance.now();
    let model: GPT2LMHeadModel | undefined;
    try {
      const trained = spec.make();
      model = trained;
      const result = train(trained, corpus, {
        learningRate: spec.learningRate ?? options.learningRate,
        sparseLr: options.sparseLr,
        context,
        batchSize,
        seed: options.seed,
        deadline,
        lossEvery: 25,
        onStep: hooks.onStep,
        ...spec.with?.(trained),
        name: spec.name,
        steps: spec.steps,
        evaluate: () => validationLoss(trained, corpus, context, batchSize, options.evalBatches, options.seed),
        evaluateAt: curveSteps(spec.steps, options.curvePoints),
      });
      const validation = result.curve.at(-1)?.validationLoss ?? null;
      Object.assign(row, {
        completedSteps: result.completedSteps,
        status: result.completedSteps === spec.steps ? "done" : result.completedSteps > 0 ? "stopped" : "skipped",
        validationLoss: validation,
        curve: result.curve,
        msPerStep: result.completedSteps > 0 ? result.trainingMs / result.completedSteps : null,
      });
      if (validation !== null && !Number.isFinite(validation)) Object.assign(row, { status: "failed", error: `validation loss ${validation}: training diverged` });
    } catch (error) {
      // One failed run (a kernel error, memory) leaves the others to run; its row carries the error.
      Object.assign(row, { status: "failed", error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
      if (model !== undefined) disposeModel(model);
      model = undefined;
    }
    row.seconds = (performance.now() - start) / 1000;
    return { row: record(row), model };
  };
  const initial = new GPT2LMHeadModel(config, { seed: options.seed });
  /** A copy of `from` with `patterns` patched at `density` (strongest blocks kept), in the run's dtype. */
  const patchedCopy = (from: GPT2LMHeadModel, density: number, patterns: RegExp[]) => () => {
    const model = copyOf(from, "float32");
    sparsify(model, density, patterns);
    return model.to(options.dtype);
  };

  const { row: denseRow, model: dense } = runOne({
    experiment: options.mode === "distil" ? "distil" : "sparse",
    name: "dense",
    run: { kind: "dense" },
    steps,
    make: () => copyOf(initial, options.dtype),
  });
  if (options.mode !== "distil") {
    for (const density of options.densities) {
      for (const kind of ["static", "rigl"] as const) {
        const { model } = runOne({
          experiment: "sparse",
          name: `FFN ${density} ${kind}`,
          run: { kind, density },
          steps,
          make: patchedCopy(initial, density, [GPT2_FFN_LAYERS]),
          with: (model) => (kind === "rigl" ? { sparse: riglOptimizer(model, steps, options.seed, options.rigl) } : {}),
        });
        if (model !== undefined) disposeModel(model);
      }
    }
  }
  disposeModel(initial);
  if (options.mode !== "sparse" && dense !== undefined && denseRow.status !== "skipped" && denseRow.status !== "failed") {
    if (options.mode === "all") record({ ...denseRow, experiment: "distil" });
    const recoverySteps = options.recoverySteps ?? Math.max(1, Math.round(steps / 10));
    const learningRate = options.recoveryLearningRate;
    const density = options.distilDensity;
    const patch = patchedCopy(dense, density, recoveryPatterns(options.patch));
    const label = `${options.patch === "ffn" ? "FFN" : "FFN+attn"} ${density}`;
    dense.eval();
    // Distillation before fine-tuning: the row the target is about comes first when the budget is short.
    const recoveries: RunSpec[] = [
      { experiment: "distil", name: `${label} patched`, run: { kind: "fine-tune", density }, steps: 0, make: patch },
      { experiment: "distil", name: `${label} distil`, run: { kind: "distil", density }, steps: recoverySteps, learningRate, make: patch, with: () => ({ teacher: dense }) },
      { experiment: "distil", name: `${label} fine-tune`, run: { kind: "fine-tune", density }, steps: recoverySteps, learningRate, make: patch },
    ];
    for (const spec of recoveries) {
      const { model } = runOne(spec);
      if (model !== undefined) disposeModel(model);
    }
  }
  if (dense !== undefined) disposeModel(dense);
  return rows;
}
