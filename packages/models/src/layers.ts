import {
  add,
  DTypeError,
  encodeStorage,
  engine,
  equal,
  formatArg,
  fullOn,
  IndexError,
  matmul,
  mul,
  permute,
  randint,
  reshape,
  ShapeError,
  scaledDotProductAttention,
  sizeOf,
  sigmoid,
  softmax,
  Tensor,
  tensorOn,
  tidy,
  ValueError,
  where,
} from "@blocksparse/core";
import { BsrMatrix, SeededRandom } from "@blocksparse/format";
import { dropsNothing, Embedding, GELU, LayerNorm, Linear, Module, Parameter, ReLU } from "@blocksparse/nn";
import type { Activation } from "./config";

/** Host numbers as a tensor on `like`'s backend, in `dtype` (default: like's). */
export function uploadOn(values: ArrayLike<number>, shape: readonly number[], like: Tensor, dtype = like.dtype): Tensor {
  return engine.upload(encodeStorage("models", values, dtype), shape, dtype, like.backend);
}

/** transformers' QuickGELUActivation: x * sigmoid(1.702 x). */
export class QuickGELU extends Module {
  forward(x: Tensor): Tensor {
    return tidy(() => mul(x, sigmoid(mul(x, 1.702))));
  }
}

/**
 * The activation module a config names: gelu (erf); gelu_new, gelu_pytorch_tanh, gelu_fast and gelu_accurate (each
 * 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) in transformers, written four ways); quick_gelu; relu.
 */
export function activationModule(name: Activation): Module {
  if (name === "relu") return new ReLU();
  if (name === "quick_gelu") return new QuickGELU();
  return new GELU(name === "gelu" ? "none" : "tanh");
}

/**
 * Token ids [B, T] (or [T]) checked as int32 of 1 to maxLength positions, naming the model in the error; their
 * [B, T]. With a `vocab`, each id is in [0, vocab) or is `allowed` (an IndexError naming it before a kernel reads it),
 * read where a read is free: on backends without graphs (host memory). A device backend's gather reports an id out of
 * range itself at the next read; a host read there would stall every forward on the device. Nothing is allocated: a
 * caller outside a tidy leaks no view.
 */
export function checkTokenIds(label: string, name: string, ids: Tensor, maxLength: number, vocab = 0, kind = "tokens", allowed?: number): [number, number] {
  if (!(ids instanceof Tensor)) throw new DTypeError(`${label}: ${name} must be an int32 Tensor, got ${Array.isArray(ids) ? "an array" : `${ids}`}`);
  if (ids.dtype !== "int32") throw new DTypeError(`${label}: ${name} has dtype ${ids.dtype}, expected int32`);
  if (ids.rank !== 1 && ids.rank !== 2) throw new ShapeError(`${label}: ${name} has shape [${ids.shape}], expected [batch, length] or [length]`);
  const length = ids.shape[ids.rank - 1];
  if (length < 1 || length > maxLength) throw new ShapeError(`${label}: ${name} has length ${length}, the model takes 1 to ${maxLength} positions`);
  const bad = vocab && ids.backend.graphs === undefined ? ids.dataSync().find((id) => !(id >= 0 && id < vocab) && id !== allowed) : undefined;
  if (bad !== undefined) throw new IndexError(`${label}: ${name} holds ${bad}, outside the vocabulary of ${vocab} ${kind}`);
  return [ids.rank === 1 ? 1 : ids.shape[0], length];
}

/** [B, T, H * hd] -> [B, H, T, hd]. */
export function splitHeads(x: Tensor, heads: number): Tensor {
  const [batch, length, width] = x.shape;
  return permute(reshape(x, [batch, length, heads, width / heads]), [0, 2, 1, 3]);
}

/**
 * softmax(q k^T * scale + mask) v per head, heads merged back: q, k, v [B, H, T, hd], an
 * additive mask broadcasting to [B, H, T, T] -> [B, T, H * hd]. `causal`: each position also sees
 * only itself and the positions before it, masked inside the softmax (no mask tensor). `dropout`
 * acts on the weights. With no mask and a Dropout that drops nothing (p = 0, or eval mode) it is
 * core's fused scaledDotProductAttention: no [T, T] tensor is made or kept for the backward.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, scale: number, mask: Tensor | null, dropout: Module, causal = false): Tensor {
  return tidy(() => {
    const [batch, heads, length, headDim] = q.shape;
    const merge = (attended: Tensor) => reshape(permute(attended, [0, 2, 1, 3]), [batch, length, heads * headDim]);
    if (mask === null && dropsNothing(dropout)) return merge(scaledDotProductAttention(q, k, v, { causal, scale }));
    // Scaling the queries ([T, hd] per head) costs a pass over far less than scaling the scores ([T, T]).
    const scores = matmul(scale === 1 ? q : mul(q, scale), k, { transposeB: true });
    const weights = dropout.forward(softmax(mask === null ? scores : add(scores, mask), -1, { causal }));
    return merge(matmul(weights, v));
  });
}

/**
 * The additive mask of a padding key: the most negative finite value of each float dtype (torch.finfo(dtype).min), as
 * Hugging Face masks with, and half of it in float16, whose range is narrow: a score below -16 added to -65504 rounds
 * to -Infinity, and a fully masked row (a padding query) would turn NaN and carry it to the tokens through the next
 * layers' keys and values. exp of either is 0 (float32's value would round to -Infinity in bfloat16 and float16).
 */
export const MASKED: Record<string, number> = { float32: -3.4028234663852886e38, bfloat16: -3.3895313892515355e38, float16: -32752 };

/**
 * A padding mask (1 = attend, 0 = padding) [B, T] (its shape checked by the caller) as the additive mask [B, 1, 1, T]
 * in `like`'s dtype. A mask on `like`'s backend is turned into it there (nothing read back: no wait for the device, and
 * a step can be captured); one on another backend is read and uploaded.
 */
export function paddingMask(attentionMask: Tensor, batch: number, length: number, like: Tensor): Tensor {
  if (attentionMask.backend === like.backend) {
    return tidy(() => {
      const additive = where(equal(attentionMask, 0), fullOn(like.backend, [], MASKED[like.dtype], like.dtype), fullOn(like.backend, [], 0, like.dtype));
      return reshape(additive, [batch, 1, 1, length]);
    });
  }
  const flags = attentionMask.dataSync();
  const additive = Float32Array.from(flags, (flag) => (flag === 0 ? MASKED[like.dtype] : 0));
  return uploadOn(additive, [batch, 1, 1, length], like);
}

/**
 * Hugging Face's initialisation: N(0, std), seeded, on the parameter's backend and in its dtype (a model moved with
 * to() keeps its place). Drawn and scaled on the host, then uploaded once: the bits of `mul(randn(shape, { seed }), std)`
 * on the js backend (each normal rounded to float32, times std, rounded again), without a device tensor of N(0, 1) and
 * a Mul kernel over it (GPT-2 small's 124M of them: seconds on the cpu backend).
 */
function normalInit(parameter: Parameter, std: number, seed: number): void {
  const { pattern } = parameter;
  const values = new SeededRandom(seed).fillNormal(new Float32Array(pattern ? pattern.shape[0] * pattern.shape[1] : sizeOf(parameter.shape)));
  const scale = Math.fround(std);
  for (let i = 0; i < values.length; i++) values[i] *= scale;
  const { backend, dtype } = parameter.value;
  // A block-sparse weight takes its kept blocks of the dense weight drawn from the same seed: the values the Linear it
  // stands for would hold there.
  parameter.value = tensorOn(backend, pattern ? BsrMatrix.fromDense(values, pattern.shape, { blockShape: pattern.blockShape, mask: pattern.blockMask() }).values : values, parameter.shape, dtype);
}

/** `value` everywhere, on the parameter's backend and in its dtype. */
function constantInit(parameter: Parameter, value: number): void {
  const { backend, dtype } = parameter.value;
  parameter.value = fullOn(backend, parameter.shape, value, dtype);
}

/**
 * initWeights' `only`: a function of a parameter's name, or undefined or null for every parameter; anything else (a
 * name given as a string, a list of them) is a ValueError naming it.
 */
export function onlyArg(label: string, only: unknown): (name: string) => boolean {
  if (only == null) return () => true;
  if (typeof only !== "function") {
    throw new ValueError(`${label}.initWeights: only must be a function of a parameter's name (e.g. (name) => name.startsWith("pooler.")), got ${shown(only)}`);
  }
  return (name) => Boolean(only(name));
}

/**
 * A module holding a block-sparse weight (a Parameter with a pattern) and a bias or null: nn's BlockSparseLinear, found by
 * its parameters rather than its class, which would bring the layer's construction and pattern drawing into the bundle.
 */
function isBlockSparseLinear(module: Module): module is Module & { weight: Parameter; bias: Parameter | null } {
  const { weight, bias } = module as { weight?: unknown; bias?: unknown };
  return weight instanceof Parameter && weight.pattern !== null && (bias === null || bias instanceof Parameter);
}

/**
 * Hugging Face's _init_weights over a tree (the constructors skip it inside nn's skipInit: a checkpoint is about to be
 * loaded): Linear weights and embeddings N(0, std) (a
 * Linear's std as `linearStd` gives it by name; a BlockSparseLinear, a patched Linear, the same on its kept blocks), an embedding's padding row zero, biases zero, LayerNorms' weights one.
 * With `only`, just the parameters it names (by their path under `root`: "h.0.attn.c_proj.weight"), a seed drawn from
 * `nextSeed` for each of them only.
 */
export function initLikeHuggingFace(
  root: Module,
  std: number,
  nextSeed: () => number,
  linearStd: (name: string) => number = () => std,
  only: (parameter: string) => boolean = () => true,
): void {
  for (const [name, module] of root.namedModules()) {
    const path = (parameter: string) => (name === "" ? parameter : `${name}.${parameter}`);
    if (module instanceof Linear || isBlockSparseLinear(module)) {
      if (only(path("weight"))) normalInit(module.weight, linearStd(name), nextSeed());
      if (module.bias && only(path("bias"))) normalInit(module.bias, 0, nextSeed());
    } else if (module instanceof Embedding && only(path("weight"))) {
      normalInit(module.weight, std, nextSeed());
      module.zeroPaddingRow();
    } else if (module instanceof LayerNorm) {
      // Ones and zeros, no seed drawn: a trained model's LayerNorms are reset too, as Hugging Face's _init_weights does.
      if (module.weight && only(path("weight"))) constantInit(module.weight, 1);
      if (module.bias && only(path("bias"))) constantInit(module.bias, 0);
    }
  }
}

/** max |got - want| / max |want|: the normwise relative error the PyTorch comparisons report (elementwise ones blow up near zero). */
export function maxRelativeError(got: Tensor, want: Tensor): number {
  const a = got.dataSync();
  const b = want.dataSync();
  if (a.length !== b.length) throw new ShapeError(`maxRelativeError: ${a.length} values against ${b.length}`);
  let error = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    error = Math.max(error, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return error / scale;
}

/**
 * A wrong option's value as a message shows it: core's formatArg (strings quoted, so "5" is not read as the number 5),
 * with a list's contents ([5], where formatArg says "an array") and a BigInt's n (5n).
 */
export function shown(value: unknown): string {
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) {
    try {
      return JSON.stringify(value);
    } catch {
      return formatArg(value);
    }
  }
  return formatArg(value);
}

/** A stream of seeds: from `seed` when given, else from core's global generator (so manualSeed makes models reproducible). */
export function seedStream(label: string, seed: number | undefined): () => number {
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw new ValueError(`${label}: seed must be an integer, got ${shown(seed)}`);
  let start = seed;
  if (start === undefined) {
    const drawn = randint(0, 2 ** 31 - 1, [1]);
    start = drawn.toArray()[0] as number;
    drawn.dispose();
  }
  const random = new SeededRandom(start);
  return () => random.nextUint32();
}

/**
 * The seeds of a building block (GPT2Block, BertLayer...): the stream its model hands it, or, built alone as
 * transformers' `GPT2Block(config)` is, an integer seed to start a stream from, or none (drawn from core's global
 * generator, as a model built without a seed draws). Anything else is a ValueError naming it.
 */
export function blockSeeds(label: string, nextSeed: unknown): () => number {
  if (typeof nextSeed === "function") return nextSeed as () => number;
  if (nextSeed === undefined || nextSeed === null) return seedStream(label, undefined);
  if (typeof nextSeed === "number" && Number.isSafeInteger(nextSeed)) return seedStream(label, nextSeed);
  throw new ValueError(`${label}: nextSeed must be a function giving seeds, an integer seed or omitted, got ${shown(nextSeed)}`);
}

/** The options that are flags, wherever they appear (generate's staticCache and graph, checkpoint loading's strict). */
const FLAGS: readonly string[] = ["staticCache", "graph", "strict"];

/**
 * An options object (null: none) whose keys are all `names`, a flag (FLAGS) true, false or null. An unknown key is
 * refused rather than ignored, naming the option it may stand for (Hugging Face's snake_case names), so that
 * `max_new_tokens` or `attention_mask` does not silently change nothing; so is a Tensor in the object's place (its keys are none). `hint` speaks to other keys.
 */
export function checkOptions<T>(label: string, options: unknown, names: readonly string[], hint = (_camel: string) => ""): T {
  if (options === null || options === undefined) return {} as T;
  if (typeof options !== "object" || Array.isArray(options) || options instanceof Tensor) {
    throw new ValueError(`${label}: options must be an object, got ${options instanceof Tensor ? "a Tensor" : typeof options}`);
  }
  for (const [key, value] of Object.entries(options)) {
    if (names.includes(key)) {
      // A flag given a truthy non-boolean ("false") would turn on; null is the default, as for every option.
      if (FLAGS.includes(key) && value != null && typeof value !== "boolean") throw new ValueError(`${label}: ${key} must be true or false, got ${JSON.stringify(value)}`);
      continue;
    }
    const camel = key.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase());
    throw new ValueError(`${label}: unknown option '${key}'${names.includes(camel) ? ` (did you mean ${camel}?)` : hint(camel)}; the options are ${names.join(", ")}`);
  }
  return options as T;
}

/** checkOptions' hint where a dtype is asked for (transformers' torch_dtype): only fromPretrained casts. */
export const dtypeHint = (camel: string): string =>
  camel === "torchDtype" || camel === "dtype" ? " (fromPretrained takes dtype; a model built by hand is cast with model.to(dtype))" : "";
