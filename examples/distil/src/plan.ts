import { GPT2_FFN_LAYERS, GPT2LMHeadModel } from "@blocksparse/models";
import { SparseOptimizer } from "@blocksparse/nn";
import { copyOf, disposeModel, type ExperimentContext, type ExperimentOptions, type RunKind, recoveryPatterns, sparsify, type TrainRun, train, validationLoss } from "./experiment";

/** Milliseconds measured on throwaway models of the experiment's shape, after a few warm-up steps (first calls compile and allocate). */
export interface StepTimes {
  /** One dense training step. */
  dense: number;
  /** One training step with the feed-forward layers at a density, and one RigL pattern update on top of it. */
  sparse: Record<string, { step: number; update: number }>;
  /** One distillation step (student step + teacher forward) and one fine-tuning step at the recovery's density. */
  distil?: number;
  fineTune?: number;
  /** One validation batch. */
  evalBatch: number;
  /** Making one model (a copy, patched and cast). */
  setup: number;
}

/** Pattern updates of one RigL run (every steps/40 steps until 3/4 of training). */
const RIGL_UPDATES = 30;

function msPerStep(model: GPT2LMHeadModel, setup: ExperimentContext, run: Partial<TrainRun>, warmup: number, timed: number): number {
  const base = { name: "timing", learningRate: 1e-4, context: setup.context, batchSize: setup.batchSize, seed: 1, ...run };
  train(model, setup.corpus, { ...base, steps: warmup });
  const start = performance.now();
  train(model, setup.corpus, { ...base, steps: timed }); // the last step reads the loss: the device has finished
  return (performance.now() - start) / timed;
}

/** Times each kind of step the experiments of `options.mode` will run (a few seconds on a GPU). */
export function measureStepTimes(setup: ExperimentContext, options: ExperimentOptions, warmup = 5, timed = 5): StepTimes {
  const dense = new GPT2LMHeadModel(setup.config, { seed: options.seed + 1 }).to(options.dtype);
  const times: StepTimes = { dense: msPerStep(dense, setup, {}, warmup, timed), sparse: {}, evalBatch: 0, setup: 0 };
  const evalStart = performance.now();
  validationLoss(dense, setup.corpus, setup.context, setup.batchSize, 2, options.seed);
  times.evalBatch = (performance.now() - evalStart) / 2;
  const patched = (density: number, patterns: RegExp[]) => {
    const start = performance.now();
    const model = copyOf(dense, "float32");
    sparsify(model, density, patterns);
    model.to(options.dtype);
    times.setup = Math.max(times.setup, performance.now() - start);
    return model;
  };
  if (options.mode !== "distil") {
    for (const density of options.densities) {
      const model = patched(density, [GPT2_FFN_LAYERS]);
      const step = msPerStep(model, setup, {}, warmup, timed);
      const sparse = new SparseOptimizer(model, { regrow: "gradient", fraction: 0.3, every: 1, seed: options.seed });
      const withUpdates = msPerStep(model, setup, { sparse }, 1, timed);
      times.sparse[String(density)] = { step, update: Math.max(0, withUpdates - step) };
      disposeModel(model);
    }
  }
  if (options.mode !== "sparse") {
    const model = patched(options.distilDensity, recoveryPatterns(options.patch));
    dense.eval();
    times.fineTune = msPerStep(model, setup, {}, warmup, timed);
    times.distil = msPerStep(model, setup, { teacher: dense }, warmup, timed);
    disposeModel(model);
  }
  disposeModel(dense);
  return times;
}

/** Estimated seconds of one run of `steps` steps, its validation losses and its setup included. */
export function estimateSeconds(times: StepTimes, options: ExperimentOptions, run: RunKind, steps: number): number {
  const evaluations = Math.min(options.curvePoints, Math.max(1, steps)) * options.evalBatches * times.evalBatch;
  const sparse = run.kind === "dense" ? undefined : times.sparse[String(run.density)];
  const perStep =
    run.kind === "dense"
      ? times.dense
      : run.kind === "distil"
        ? (times.distil ?? times.dense)
        : run.kind === "fine-tune"
          ? (times.fineTune ?? times.dense)
          : (sparse?.step ?? times.dense);
  const updates = run.kind === "rigl" ? Math.min(RIGL_UPDATES, steps) * (sparse?.update ?? times.dense) : 0;
  return (steps * perStep + updates + evaluations + times.setup) / 1000;
}

/** The runs of `options.mode` in the order runExperiments makes them, with their steps for `steps` training steps. */
export function plannedRuns(options: ExperimentOptions, steps: number): { run: RunKind; steps: number }[] {
  const recovery = options.recoverySteps ?? Math.max(1, Math.round(steps / 10));
  const density = options.distilDensity;
  const runs: { run: RunKind; steps: number }[] = [{ run: { kind: "dense" }, steps }];
  if (options.mode !== "distil") for (const d of options.densities) runs.push({ run: { kind: "static", density: d }, steps }, { run: { kind: "rigl", density: d }, steps });
  if (options.mode !== "sparse") {
    runs.push({ run: { kind: "fine-tune", density }, steps: 0 }, { run: { kind: "distil", density }, steps: recovery }, { run: { kind: "fine-tune", density }, steps: recovery });
  }
  return runs;
}

/**
 * The most training steps (a multiple of 10) for which every planned run fits `seconds`
 * with `margin` of it left over (the estimates are per-step averages of a few steps);
 * at least 10.
 */
export function planSteps(times: StepTimes, options: ExperimentOptions, seconds: number, margin = 0.15): number {
  const total = (steps: number) => plannedRuns(options, steps).reduce((sum, { run, steps: s }) => sum + estimateSeconds(times, options, run, s), 0);
  const target = seconds * (1 - margin);
  const fits = (steps: number) => steps <= Number.MAX_SAFE_INTEGER && total(steps) <= target;
  // The first stride is the largest power of two that still fits, found by doubling: a walk in strides of 2^20 from 10
  // took a stride per 2^20 steps, and `--steps auto --budget 1e20` never finished planning.
  let stride = 1;
  while (fits(10 + 2 * stride)) stride *= 2;
  let steps = 10;
  for (let step = stride; step >= 1; step = Math.floor(step / 2)) while (fits(steps + step)) steps += step;
  return Math.max(10, Math.floor(steps / 10) * 10);
}

/**
 * Throws, naming --budget, when even `steps` (planSteps' least, 10) steps per model would not fit the `secondsLeft` of the
 * `budgetSeconds` budget: --steps auto then planned 10 steps "that fit" the budget, skipped every run and exited 0.
 */
export function checkBudgetFits(times: StepTimes, options: ExperimentOptions, steps: number, budgetSeconds: number, secondsLeft: number, margin = 0.15): void {
  const needed = plannedRuns(options, steps).reduce((sum, { run, steps: s }) => sum + estimateSeconds(times, options, run, s), 0);
  if (needed <= secondsLeft * (1 - margin)) return;
  const least = Math.ceil(budgetSeconds - secondsLeft + needed / (1 - margin));
  throw new RangeError(
    `--budget ${budgetSeconds}: ${Math.max(0, secondsLeft).toFixed(0)} s are left after measuring the step times, and ${steps} steps per model (the fewest --steps auto plans) ` +
      `need about ${needed.toFixed(1)} s (${(needed / (1 - margin)).toFixed(1)} s with the ${Math.round(margin * 100)}% margin the plan keeps); give --budget ${least} or more, or --steps N`,
  );
}

/**
 * Throws, naming --budget, when not one run of `steps` steps fits on its own in the `secondsLeft` of the `budgetSeconds`
 * budget (a fixed --steps: --steps auto has checkBudgetFits): every run was skipped, the table said "skipped" in every
 * row and the process exited 0. The recovery runs start from the trained dense model, so only the dense run and the
 * sparse experiment's count.
 */
export function checkSomeRunFits(times: StepTimes, options: ExperimentOptions, steps: number, budgetSeconds: number, secondsLeft: number): void {
  const first = plannedRuns(options, steps).filter(({ run }) => run.kind === "dense" || run.kind === "static" || run.kind === "rigl");
  const quickest = Math.min(...first.map(({ run, steps: s }) => estimateSeconds(times, options, run, s)));
  if (quickest <= secondsLeft) return;
  throw new RangeError(
    `--budget ${budgetSeconds}: ${Math.max(0, secondsLeft).toFixed(0)} s are left after measuring the step times, and the quickest run of ${steps} steps needs about ` +
      `${quickest.toFixed(1)} s, so every run would be skipped; give --budget ${Math.ceil(budgetSeconds - secondsLeft + quickest)} or more, or fewer --steps`,
  );
}

/**
 * The most steps (a multiple of 10) in which a model sees its `trainTokens` at most `epochs` times, `tokensPerStep` per
 * step. Fewer than 10 is a RangeError naming --max-epochs and the least that allows 10: the cap was raised to 10 steps,
 * which broke the "at most" (0.001 passes ran 10 steps, 0.03 passes).
 */
export function maxStepsForEpochs(epochs: number, trainTokens: number, tokensPerStep: number): number {
  const steps = Math.floor((epochs * trainTokens) / tokensPerStep / 10) * 10;
  if (steps < 10) {
    // The least value for 10 steps, rounded up to three significant digits.
    const least = (10 * tokensPerStep) / trainTokens;
    const unit = 10 ** (Math.floor(Math.log10(least)) - 2);
    const shown = Number((Math.ceil(least / unit) * unit).toPrecision(3));
    throw new RangeError(`--max-epochs: ${epochs} passes over the ${trainTokens} training tokens are fewer than 10 steps of ${tokensPerStep} tokens; 10 steps need --max-epochs ${shown} or more`);
  }
  return steps;
}

/**
 * Throws, naming the flags behind them, when a model of `size` trained at `batchSize` x `context` cannot fit in
 * `availableBytes`: `--batch-size 100000000` printed its setup and then ran for minutes towards the memory's end, and a
 * larger one failed every run with "Invalid typed array length". A lower bound: one model's parameters with their
 * gradients and AdamW's moments (12 bytes each at least), and one batch's logits, feed-forward activations and
 * attention scores (2 bytes each at least).
 */
export function checkMemoryFits(
  model: { n_embd: number; n_layer: number; n_head: number; vocab_size: number },
  batchSize: number,
  context: number,
  availableBytes: number,
): void {
  const { n_embd, n_layer, n_head, vocab_size } = model;
  const parameterBytes = 12 * (n_layer * 12 * n_embd * n_embd + vocab_size * n_embd + context * n_embd);
  const activationBytes = 2 * batchSize * context * (vocab_size + n_layer * (4 * n_embd + n_head * context));
  if (parameterBytes + activationBytes <= availableBytes) return;
  const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes < 10 * 2 ** 30 ? 1 : 0)} GiB`;
  throw new RangeError(
    `--batch-size ${batchSize}, --context ${context}: training needs at least ${gib(parameterBytes + activationBytes)} ` +
      `(${gib(parameterBytes)} for the parameters, their gradients and AdamW's moments; ${gib(activationBytes)} for one batch's activations), ` +
      `and this machine has ${gib(availableBytes)}; use a smaller ${parameterBytes >= activationBytes ? "--size" : "--batch-size or --context"}`,
  );
}

/**
 * Throws, naming the flags, when RigL's schedule makes no pattern update in `steps` steps: updates fall at calls
 * every, 2 x every, ... before floor(end x steps) (SparseOptimizer's totalSteps). `--rigl-every 50 --steps 20` (or
 * `--steps 2` with the defaults) trained every RigL model as its static twin and reported "RigL closes 0%".
 */
export function checkRiglMoves(steps: number, schedule: { every?: number; end: number }, everyGiven: boolean): void {
  const every = schedule.every ?? Math.max(1, Math.round(steps / 40));
  const stop = Math.max(1, Math.floor(schedule.end * steps));
  if (every < stop) return;
  throw new RangeError(
    `--rigl-every ${every}${everyGiven ? "" : " (the default, steps / 40)"}: RigL's patterns stop moving at step ${stop} (--rigl-end ${schedule.end} of the ${steps} steps), ` +
      `before its first update, so every RigL model would train as its static twin; ` +
      (stop > 1 ? `use --rigl-every ${stop - 1} or less, or more --steps` : "use more --steps, a larger --rigl-end, or --mode distil"),
  );
}
