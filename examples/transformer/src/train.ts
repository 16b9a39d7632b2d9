import { backward, noGrad } from "@blocksparse/autograd";
import { type FloatDType, type Tensor, div, getBackend, setBackend, softmax, tensor, tidy } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { Adam, crossEntropy, parameterCount, weightBytes } from "@blocksparse/nn";
import type { PatchReport } from "@blocksparse/patcher";
import { type CharCorpus, buildCorpus, mobyDickText, sampleBatch } from "./data";
import { checkDensitiesKeepABlock, MAX_SEED } from "../../shared/flags";
import { CharTransformer, feedForwardPatcher } from "./model";

export interface TransformerOptions {
  /** Training steps per model (default 30: a CPU smoke run; use thousands on a GPU). */
  steps: number;
  batchSize: number;
  /** Characters of context per example. */
  context: number;
  dModel: number;
  nHeads: number;
  layers: number;
  /** Densities of the block-sparse models; the feed-forward layers are patched (default [0.25]). */
  densities: number[];
  blockShape: [number, number];
  learningRate: number;
  seed: number;
  /** Validation batches averaged for the reported validation loss. */
  evalBatches: number;
  /** Characters generated after the prompt, at most MAX_SAMPLE_LENGTH. */
  sampleLength: number;
  temperature: number;
  prompt: string;
  /** Use only the first N characters of the novel (default: all of it). */
  textLimit?: number;
  /** A registered backend to run on ("js", "cuda"); default: the engine's choice. */
  backend?: string;
  /** The dtype the models compute in: "auto" (default) is bfloat16 mixed precision on cuda, float32 elsewhere. */
  dtype: "auto" | FloatDType;
}

/** The dtype "auto" stands for on the active backend: bfloat16 on a GPU, float32 on a CPU. */
export function computeDtype(requested: "auto" | FloatDType): FloatDType {
  if (requested !== "auto") return requested;
  return getBackend() === "cuda" ? "bfloat16" : "float32";
}

/**
 * The most characters `generate` writes: it runs the model once per character (sliding the last `context` characters),
 * so the sample is not bounded by the context, and a sample of a billion characters ran for days or ran out of memory.
 */
export const MAX_SAMPLE_LENGTH = 10_000;

export const DEFAULT_OPTIONS: TransformerOptions = {
  steps: 30,
  batchSize: 8,
  context: 64,
  dModel: 64,
  nHeads: 4,
  layers: 2,
  densities: [0.25],
  blockShape: [32, 32],
  learningRate: 3e-3,
  seed: 0,
  evalBatches: 8,
  sampleLength: 120,
  temperature: 0.8,
  prompt: "Call me Ishmael. ",
  dtype: "auto",
};

export interface TransformerResult {
  name: string;
  /** Density of the feed-forward layers; 1 for the dense model. */
  density: number;
  parameters: number;
  /** Parameters of the feed-forward layers alone (weights and biases). */
  feedForwardParameters: number;
  weightBytes: number;
  stepLosses: number[];
  /** Mean loss over the validation batches before and after training. */
  initialValidationLoss: number;
  validationLoss: number;
  secondsPerStep: number;
  sample: string;
  patchReport?: PatchReport;
}

export interface TransformerReport {
  options: TransformerOptions;
  backend: string;
  vocabularySize: number;
  trainCharacters: number;
  models: TransformerResult[];
}

export interface StepInfo {
  model: string;
  step: number;
  steps: number;
  loss: number;
}

export interface TransformerHooks {
  /** Once every option is checked (the densities too), before the first model is built. */
  onStart?(): void;
  onModelStart?(name: string, steps: number): void;
  onStep?(info: StepInfo): void;
  onModelEnd?(result: TransformerResult): void;
}

/** The label of a block-sparse model in the report. */
export function sparseName(density: number): string {
  return `ffn block-sparse ${density}`;
}

/**
 * Trains a dense character transformer on Moby Dick, then one per density with its
 * feed-forward layers patched to block-sparse from the same initialisation; every model
 * sees the same batches. Returns the losses, sizes, speed and a generated sample of each.
 */
export function trainTransformer(partial: Partial<TransformerOptions> = {}, hooks: TransformerHooks = {}): TransformerReport {
  const options: TransformerOptions = { ...DEFAULT_OPTIONS, ...partial };
  checkOptions(options);
  if (options.backend !== undefined) setBackend(options.backend);
  const text = mobyDickText();
  const corpus = buildCorpus(options.textLimit === undefined ? text : text.slice(0, options.textLimit));
  checkDensities(options, corpus.vocabulary.size);
  hooks.onStart?.();
  const validation = Array.from({ length: options.evalBatches }, (_, i) =>
    sampleBatch(corpus.validation, options.batchSize, options.context, new SeededRandom(options.seed * 7919 + i)),
  );

  const models: TransformerResult[] = [];
  // null: the dense model, first; then one block-sparse model per density (1 included: every block kept).
  for (const density of [null, ...options.densities]) {
    const model = new CharTransformer({ vocabSize: corpus.vocabulary.size, ...options });
    const name = density === null ? "dense" : sparseName(density);
    const patchReport = density === null ? undefined : feedForwardPatcher(density, options.blockShape).patchModel(model, { disposeReplaced: true });
    // Mixed precision: the weights compute in this dtype, Adam keeps float32 master copies.
    model.to(computeDtype(options.dtype));
    const result = trainOne(name, density ?? 1, model, corpus, validation, options, hooks);
    result.patchReport = patchReport;
    // Device memory is not garbage-collected: a finished model gives its buffers back.
    for (const parameter of model.parameters()) parameter.dispose();
    models.push(result);
    hooks.onModelEnd?.(result);
  }
  return { options, backend: getBackend(), vocabularySize: corpus.vocabulary.size, trainCharacters: corpus.train.length, models };
}

/**
 * Refuses a density under which a feed-forward layer keeps no block (nn would keep one anyway, a denser layer than
 * the table names), checked on the layers the pattern patches: the patcher's dry run on the model to train.
 */
function checkDensities(options: TransformerOptions, vocabSize: number): void {
  const model = new CharTransformer({ vocabSize, ...options });
  try {
    const layersAt = (density: number) => feedForwardPatcher(density, options.blockShape).patchModel(model, { dryRun: true }).layers;
    checkDensitiesKeepABlock(options.densities, layersAt, "a larger --d-model or a smaller --block");
  } finally {
    for (const parameter of model.parameters()) parameter.dispose();
  }
}

type Batch = { inputs: Int32Array; targets: Int32Array };

function trainOne(
  name: string,
  density: number,
  model: CharTransformer,
  corpus: CharCorpus,
  validation: Batch[],
  options: TransformerOptions,
  hooks: TransformerHooks,
): TransformerResult {
  const initialValidationLoss = validationLoss(model, validation, options);
  const optimizer = new Adam(model.parameters(), { lr: options.learningRate });
  const random = new SeededRandom(options.seed + 1);
  const stepLosses: number[] = [];
  hooks.onModelStart?.(name, options.steps);
  model.train();
  const started = performance.now();
  for (let step = 0; step < options.steps; step++) {
    const batch = sampleBatch(corpus.train, options.batchSize, options.context, random);
    const loss = tidy(() => {
      const lossTensor = batchLoss(model, batch, options);
      backward(lossTensor);
      return lossTensor.item();
    });
    optimizer.step();
    optimizer.zeroGrad();
    stepLosses.push(loss);
    hooks.onStep?.({ model: name, step: step + 1, steps: options.steps, loss });
  }
  const secondsPerStep = (performance.now() - started) / 1000 / options.steps;
  optimizer.dispose();
  const feedForwardParameters = model
    .namedModules()
    .filter(([moduleName]) => /\.mlp\.fc[12]$/.test(moduleName))
    .reduce((n, [, module]) => n + parameterCount(module), 0);
  return {
    name,
    density,
    parameters: parameterCount(model),
    feedForwardParameters,
    weightBytes: weightBytes(model),
    stepLosses,
    initialValidationLoss,
    validationLoss: validationLoss(model, validation, options),
    secondsPerStep,
    sample: generate(model, corpus, options),
  };
}

function batchLoss(model: CharTransformer, batch: Batch, options: TransformerOptions): Tensor {
  const shape = [options.batchSize, options.context];
  return crossEntropy(model.forward(tensor(batch.inputs, shape, "int32")), tensor(batch.targets, shape, "int32"));
}

function validationLoss(model: CharTransformer, batches: Batch[], options: TransformerOptions): number {
  model.eval();
  const total = noGrad(() => batches.reduce((sum, batch) => sum + tidy(() => batchLoss(model, batch, options).item()), 0));
  model.train();
  return total / batches.length;
}

/** Continues the prompt one character at a time, sampling at `temperature` with a seeded generator. */
export function generate(model: CharTransformer, corpus: CharCorpus, options: TransformerOptions): string {
  const { vocabulary } = corpus;
  const ids = Array.from(vocabulary.encode(options.prompt));
  if (ids.length === 0) throw new RangeError("prompt: none of its characters is in the vocabulary");
  const random = new SeededRandom(options.seed + 2);
  model.eval();
  for (let i = 0; i < options.sampleLength; i++) {
    const window = ids.slice(-options.context);
    const probabilities = noGrad(() =>
      tidy(() => {
        const logits = model.lastLogits(tensor(Int32Array.from(window), [1, window.length], "int32"));
        return softmax(div(logits, options.temperature), -1).dataSync();
      }),
    );
    ids.push(pick(probabilities, random.next()));
  }
  model.train();
  return vocabulary.decode(ids);
}

/** The index where the cumulative probability passes `u`. */
function pick(probabilities: ArrayLike<number>, u: number): number {
  let cumulative = 0;
  for (let i = 0; i < probabilities.length; i++) {
    cumulative += probabilities[i];
    if (u < cumulative) return i;
  }
  return probabilities.length - 1;
}

/** Throws a RangeError naming the first option out of range, or the pair that does not fit together. */
export function checkOptions(options: TransformerOptions, label: (option: keyof TransformerOptions) => string = (option) => option): void {
  if (!["auto", "float32", "bfloat16", "float16"].includes(options.dtype)) {
    throw new RangeError(`${label("dtype")}: expected auto, float32, bfloat16 or float16, got ${String(options.dtype)}`);
  }
  for (const name of ["steps", "batchSize", "context", "dModel", "nHeads", "layers", "evalBatches"] as const) {
    const value = options[name];
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${label(name)}: expected a positive integer, got ${value}`);
  }
  if (!Number.isInteger(options.sampleLength) || options.sampleLength < 0 || options.sampleLength > MAX_SAMPLE_LENGTH) {
    throw new RangeError(`${label("sampleLength")}: expected an integer from 0 to ${MAX_SAMPLE_LENGTH} (characters generated), got ${options.sampleLength}`);
  }
  for (const density of options.densities) {
    if (!(density > 0 && density <= 1)) throw new RangeError(`${label("densities")}: expected numbers in (0, 1], got ${density}`);
  }
  const [blockRows, blockCols] = options.blockShape;
  const hidden = 4 * options.dModel;
  if (options.dModel % blockRows !== 0 || options.dModel % blockCols !== 0 || hidden % blockRows !== 0 || hidden % blockCols !== 0) {
    // dModel itself must be a multiple of both sides (4 x dModel then is too): of their least common multiple.
    const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
    const multiple = (blockRows / gcd(blockRows, blockCols)) * blockCols;
    const lower = Math.floor(options.dModel / multiple) * multiple;
    throw new RangeError(
      `${label("dModel")}: ${options.dModel} (feed-forward ${options.dModel} x ${hidden}) is not divisible by the block shape ${blockRows}x${blockCols} (${label("blockShape")}); ` +
        `use a multiple of ${multiple} (${lower > 0 ? `${lower} or ${lower + multiple}` : `${multiple} is the smallest`})`,
    );
  }
  if (options.dModel % options.nHeads !== 0) throw new RangeError(`${label("nHeads")}: ${options.nHeads} heads do not divide ${label("dModel")} ${options.dModel}`);
  // The validation batches are seeded with seed x 7919 + i, which must stay a safe integer.
  if (!Number.isSafeInteger(options.seed) || Math.abs(options.seed) > MAX_SEED) {
    throw new RangeError(`${label("seed")}: expected an integer from -${MAX_SEED} to ${MAX_SEED}, got ${options.seed}`);
  }
  if (!(options.learningRate > 0)) throw new RangeError(`${label("learningRate")}: expected a positive number, got ${options.learningRate}`);
  if (!(options.temperature > 0)) throw new RangeError(`${label("temperature")}: expected a positive number, got ${options.temperature}`);
}
