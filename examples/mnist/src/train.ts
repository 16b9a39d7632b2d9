import { backward, noGrad } from "@blocksparse/autograd";
import { type FloatDType, type Tensor, argmax, cast, getBackend, setBackend, tensor, tidy } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { Adam, type Module, SparseOptimizer, crossEntropy, inverseDensity, disposeStateDict, parameterCount, weightBytes } from "@blocksparse/nn";
import type { PatchReport } from "@blocksparse/patcher";
import { type MnistData, type MnistSplit, PIXELS, loadMnist, shuffleInPlace } from "./data";
import { checkDensitiesKeepABlock, MAX_SEED } from "../../shared/flags";
import { Mlp, checkHidden, mlpPatcher } from "./model";

/** Where the block-sparse models start: the dense model's fresh initialisation, or the dense model after its first epoch. */
export type PatchFrom = "trained" | "init";

/** How the block-sparse models move their patterns while training: not at all, random regrowth, or RigL (gradient regrowth). */
export type RegrowMode = "none" | "random" | "rigl";

export interface MnistOptions {
  /** Epochs per model, the same total for every model (default 8). */
  epochs: number;
  /** Densities of the block-sparse models (default [0.5, 0.25]). */
  densities: number[];
  batchSize: number;
  /** Width of both hidden layers, a multiple of 32 (default 256). */
  hidden: number;
  seed: number;
  learningRate: number;
  trainSize: number;
  testSize: number;
  patchFrom: PatchFrom;
  /** Pattern moves of the block-sparse models (default "none": the patched pattern stays). */
  regrow: RegrowMode;
  /** Steps between pattern updates (default 50). */
  regrowEvery: number;
  /** Fraction of each layer's blocks moved at the first update, decayed by a cosine to 0 at 3/4 of training (default 0.5). */
  regrowFraction: number;
  /** A registered backend to run on ("js", "cuda"); default: the engine's choice. */
  backend?: string;
  /**
   * The dtype the models compute in: "auto" (default) is bfloat16 mixed precision on cuda (the tensor
   * cores; Adam keeps float32 master weights and state) and float32 elsewhere.
   */
  dtype: "auto" | FloatDType;
  /**
   * The block-sparse weights' learning rate: "same" as the others' (default), or "inverse-density": lr / density
   * (nn's `inverseDensity` as Adam's `lrScale`: the same step per output as a dense layer's).
   */
  sparseLr?: "same" | "inverse-density";
}

export const DEFAULT_OPTIONS: MnistOptions = {
  epochs: 8,
  densities: [0.5, 0.25],
  batchSize: 64,
  hidden: 256,
  seed: 0,
  learningRate: 1e-3,
  trainSize: 8000,
  testSize: 2000,
  patchFrom: "init",
  dtype: "auto",
  regrow: "none",
  regrowEvery: 50,
  regrowFraction: 0.5,
};

/** The dtype "auto" stands for on the active backend: bfloat16 on a GPU, float32 on a CPU. */
export function computeDtype(requested: "auto" | FloatDType): FloatDType {
  if (requested !== "auto") return requested;
  return getBackend() === "cuda" ? "bfloat16" : "float32";
}

export interface ModelResult {
  name: string;
  /** Density of the patched layers; 1 for the dense model. */
  density: number;
  parameters: number;
  weightBytes: number;
  testAccuracy: number;
  /** Test accuracy right after patching, before any sparse training (undefined for the dense model). */
  accuracyAfterPatch?: number;
  /** Mean seconds per epoch this model trained itself (null when it trained no epoch). */
  secondsPerEpoch: number | null;
  /** Each training step's loss, in order. */
  stepLosses: number[];
  patchReport?: PatchReport;
}

export interface MnistReport {
  options: MnistOptions;
  backend: string;
  /** The dtype the models computed in (options.dtype resolved). */
  dtype: FloatDType;
  trainSize: number;
  testSize: number;
  models: ModelResult[];
}

export interface EpochInfo {
  model: string;
  epoch: number;
  epochs: number;
  steps: number;
}

/** Callbacks for progress display; all optional. */
export interface TrainHooks {
  /** Once every option is checked (the densities too), before the data is read and the first model is built. */
  onStart?(): void;
  onEpochStart?(info: EpochInfo): void;
  onStep?(info: EpochInfo & { step: number; loss: number }): void;
  onEpochEnd?(info: EpochInfo & { meanLoss: number; seconds: number }): void;
  onPatched?(name: string, report: PatchReport, accuracy: number): void;
}

/** The label of a block-sparse model in the report. */
export function sparseName(density: number): string {
  return `block-sparse ${density}`;
}

/**
 * Trains the dense MLP, then one block-sparse MLP per density (patched from the dense model
 * after its first epoch, or from its initialisation), and returns each one's test accuracy,
 * size and speed. Every model sees `epochs` epochs in all.
 */
export async function trainMnist(partial: Partial<MnistOptions> = {}, hooks: TrainHooks = {}): Promise<MnistReport> {
  const options: MnistOptions = { ...DEFAULT_OPTIONS, ...partial };
  checkOptions(options);
  if (options.backend !== undefined) setBackend(options.backend);
  checkDensities(options);
  hooks.onStart?.();
  const dtype = computeDtype(options.dtype);
  const data = loadMnist(options);

  const dense = new Mlp(options.hidden, options.seed);
  const denseResult = emptyResult("dense", 1);
  // The sparse models start from the float32 initialisation, as the dense one does.
  let patchSource = options.patchFrom === "init" ? dense.stateDict() : null;
  dense.to(dtype);
  trainEpochs(dense, denseResult, data, options, hooks, 0, (epoch) => {
    if (epoch === 1 && options.patchFrom === "trained") patchSource = dense.stateDict();
  });
  finishResult(denseResult, dense, data.test, options);
  disposeParameters(dense);
  const models = [denseResult];
  if (patchSource === null) throw new Error("trainMnist: the dense model trained no epoch to patch from");

  for (const density of options.densities) {
    const model = new Mlp(options.hidden, options.seed);
    model.loadStateDict(patchSource);
    const report = mlpPatcher(density).patchModel(model, { disposeReplaced: true });
    model.to(dtype);
    const result = emptyResult(sparseName(density), density);
    result.patchReport = report;
    result.accuracyAfterPatch = evaluate(model, data.test, options.batchSize, dtype);
    hooks.onPatched?.(result.name, report, result.accuracyAfterPatch);
    const firstEpoch = options.patchFrom === "trained" ? 1 : 0;
    trainEpochs(model, result, data, options, hooks, firstEpoch, undefined, patternMover(model, data, options, firstEpoch));
    finishResult(result, model, data.test, options);
    disposeParameters(model);
    models.push(result);
  }
  disposeStateDict(patchSource);
  return { options, backend: getBackend(), dtype, trainSize: data.train.count, testSize: data.test.count, models };
}

function checkOptions(options: MnistOptions): void {
  checkHidden(options.hidden);
  for (const name of ["epochs", "batchSize", "trainSize", "testSize"] as const) {
    const value = options[name];
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name}: expected a positive integer, got ${value}`);
  }
  for (const density of options.densities) {
    if (!(density > 0 && density <= 1)) throw new RangeError(`density: expected numbers in (0, 1], got ${density}`);
  }
  // Each epoch's batch order is seeded with seed x 1000 + epoch, which must stay a safe integer.
  if (!Number.isSafeInteger(options.seed) || Math.abs(options.seed) > MAX_SEED) throw new RangeError(`seed: expected an integer from -${MAX_SEED} to ${MAX_SEED}, got ${options.seed}`);
  if (!(options.learningRate > 0)) throw new RangeError(`learningRate: expected a positive number, got ${options.learningRate}`);
  if (options.dtype !== "auto" && options.dtype !== "float32" && options.dtype !== "bfloat16" && options.dtype !== "float16") {
    throw new RangeError(`dtype: expected auto, float32, bfloat16 or float16, got ${String(options.dtype)}`);
  }
  if (options.patchFrom !== "trained" && options.patchFrom !== "init") {
    throw new RangeError(`patchFrom: expected "trained" or "init", got ${String(options.patchFrom)}`);
  }
  if (!["none", "random", "rigl"].includes(options.regrow)) throw new RangeError(`regrow: expected "none", "random" or "rigl", got ${String(options.regrow)}`);
  if (!Number.isInteger(options.regrowEvery) || options.regrowEvery < 1) throw new RangeError(`regrowEvery: expected a positive integer, got ${options.regrowEvery}`);
  if (!(options.regrowFraction > 0 && options.regrowFraction <= 1)) throw new RangeError(`regrowFraction: expected a number in (0, 1], got ${options.regrowFraction}`);
}

/**
 * Refuses a density under which fc1 or fc2 keeps no block (nn would keep one anyway, a denser layer than the table
 * names), checked on the layers' real shapes: the patcher's dry run on a model of `hidden` units.
 */
function checkDensities(options: MnistOptions): void {
  const model = new Mlp(options.hidden, options.seed);
  try {
    checkDensitiesKeepABlock(options.densities, (density) => mlpPatcher(density).patchModel(model, { dryRun: true }).layers, "a larger --hidden");
  } finally {
    for (const parameter of model.parameters()) parameter.dispose();
  }
}

function emptyResult(name: string, density: number): ModelResult {
  return { name, density, parameters: 0, weightBytes: 0, testAccuracy: 0, secondsPerEpoch: null, stepLosses: [] };
}

/** Trains epochs firstEpoch..epochs-1 with Adam, recording losses and time into `result`. */
function trainEpochs(
  model: Mlp,
  result: ModelResult,
  data: MnistData,
  options: MnistOptions,
  hooks: TrainHooks,
  firstEpoch: number,
  afterEpoch?: (epochsDone: number) => void,
  sparse?: SparseOptimizer,
): void {
  const optimizer = new Adam(model.parameters(), { lr: options.learningRate, lrScale: options.sparseLr === "inverse-density" ? inverseDensity : undefined });
  sparse?.attachOptimizer(optimizer);
  const { train } = data;
  const steps = Math.ceil(train.count / options.batchSize);
  const order = Int32Array.from({ length: train.count }, (_, i) => i);
  let seconds = 0;
  model.train();
  for (let epoch = firstEpoch; epoch < options.epochs; epoch++) {
    const info: EpochInfo = { model: result.name, epoch: epoch + 1, epochs: options.epochs, steps };
    // The same batches for every model in a given epoch.
    shuffleInPlace(order, new SeededRandom(options.seed * 1000 + epoch));
    hooks.onEpochStart?.(info);
    const started = performance.now();
    let lossSum = 0;
    for (let step = 0; step < steps; step++) {
      const batch = order.subarray(step * options.batchSize, (step + 1) * options.batchSize);
      const loss = tidy(() => {
        const [images, labels] = batchTensors(train, batch, computeDtype(options.dtype));
        const lossTensor = crossEntropy(model.forward(images), labels);
        backward(lossTensor);
        return lossTensor.item();
      });
      optimizer.step();
      optimizer.zeroGrad();
      // RigL's extra forward/backward (update steps only) sees the batch just trained on.
      sparse?.step(() => {
        const [images, labels] = batchTensors(train, batch, computeDtype(options.dtype));
        return crossEntropy(model.forward(images), labels);
      });
      lossSum += loss;
      result.stepLosses.push(loss);
      hooks.onStep?.({ ...info, step: step + 1, loss });
    }
    const epochSeconds = (performance.now() - started) / 1000;
    seconds += epochSeconds;
    hooks.onEpochEnd?.({ ...info, meanLoss: lossSum / steps, seconds: epochSeconds });
    afterEpoch?.(epoch + 1);
  }
  optimizer.dispose();
  const epochsTrained = options.epochs - firstEpoch;
  result.secondsPerEpoch = epochsTrained > 0 ? seconds / epochsTrained : null;
}

/** The step at which the patterns stop moving, of `sparseSteps` training steps: 3/4 of them (updates happen only before it). */
export function regrowStopStep(sparseSteps: number): number {
  return Math.max(1, Math.floor(0.75 * sparseSteps));
}

/** The SparseOptimizer for `regrow` (none: undefined): updates every regrowEvery steps, cosine-decayed to 0 at 3/4 of the sparse steps. */
function patternMover(model: Mlp, data: MnistData, options: MnistOptions, firstEpoch: number): SparseOptimizer | undefined {
  if (options.regrow === "none") return undefined;
  const steps = Math.ceil(data.train.count / options.batchSize) * (options.epochs - firstEpoch);
  return new SparseOptimizer(model, {
    regrow: options.regrow === "rigl" ? "gradient" : "random",
    fraction: options.regrowFraction,
    every: options.regrowEvery,
    schedule: "cosine",
    totalSteps: regrowStopStep(steps),
    seed: options.seed,
  });
}

function finishResult(result: ModelResult, model: Mlp, test: MnistSplit, options: MnistOptions): void {
  result.testAccuracy = evaluate(model, test, options.batchSize, computeDtype(options.dtype));
  result.parameters = parameterCount(model);
  result.weightBytes = weightBytes(model);
}

/** Images [batch, PIXELS] in the model's dtype and int32 labels. */
function batchTensors(split: MnistSplit, batch: Int32Array, dtype: FloatDType): [Tensor, Tensor] {
  const images = new Float32Array(batch.length * PIXELS);
  const labels = new Int32Array(batch.length);
  for (let i = 0; i < batch.length; i++) {
    images.set(split.images.subarray(batch[i] * PIXELS, (batch[i] + 1) * PIXELS), i * PIXELS);
    labels[i] = split.labels[batch[i]];
  }
  const pixels = tensor(images, [batch.length, PIXELS]);
  return [dtype === "float32" ? pixels : cast(pixels, dtype), tensor(labels, [batch.length], "int32")];
}

/** Fraction of `split` the model classifies correctly. */
export function evaluate(model: Mlp, split: MnistSplit, batchSize: number, dtype: FloatDType = model.dtype ?? "float32"): number {
  model.eval();
  let correct = 0;
  const evalBatch = Math.max(batchSize, 500);
  for (let start = 0; start < split.count; start += evalBatch) {
    const indices = Int32Array.from({ length: Math.min(evalBatch, split.count - start) }, (_, i) => start + i);
    const predicted = noGrad(() =>
      tidy(() => {
        const [images] = batchTensors(split, indices, dtype);
        return argmax(model.forward(images), -1).dataSync();
      }),
    );
    for (let i = 0; i < indices.length; i++) if (predicted[i] === split.labels[indices[i]]) correct++;
  }
  model.train();
  return correct / split.count;
}

/** Device memory is not garbage-collected: a finished model gives its buffers back. */
function disposeParameters(model: Module): void {
  for (const parameter of model.parameters()) parameter.dispose();
}

