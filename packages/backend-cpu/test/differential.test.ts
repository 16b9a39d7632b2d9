/**
 * Differential fuzz: seeded random cases of every kernel the cpu backend runs natively (and a sample of those it shares
 * with js), each run on the cpu backend and on the js reference from the same host values, the outputs compared within
 * float tolerance (js accumulates in float64, the addon in float32; halves may differ by their last bit), NaN and
 * infinities exactly; kernels the two share must agree bit for bit. Inputs reach the ops through views (transposed,
 * sliced with poisoned margins, broadcast), with size-0 and size-1 dims, odd sizes, every float dtype, large, tiny,
 * subnormal and non-finite values, on every instruction set this CPU runs and several thread counts. Block-sparse cases
 * take blocks from 1x1 to 64x64, empty block rows and columns, empty and full patterns; gradient cases run backward
 * through autograd on both backends and compare every leaf's gradient.
 *
 * BLOCKSPARSE_FUZZ_SEED and BLOCKSPARSE_FUZZ_CASES run other or more cases; a failure names its seed and case, and
 * BLOCKSPARSE_FUZZ_CASE=<case> runs that case alone.
 */
import "../src/index";
import { backward } from "@blocksparse/autograd";
import {
  type Activation,
  type Backend,
  type DType,
  type Tensor,
  BsrPattern,
  adamUpdate,
  add,
  addKernelObserver,
  argmax,
  attentionBackward,
  attentionWithStats,
  biasActivation,
  biasActivationBackward,
  broadcastTo,
  bsrLinear,
  bsrLinearActivation,
  bsrMatmul,
  bsrMatmulActivationBackward,
  cachedAttention,
  cast,
  concat,
  crossEntropy,
  gather,
  gelu,
  geluBackward,
  getBackendInstance,
  jsKernels,
  layerNorm,
  layerNormBackward,
  layerNormWithStats,
  linear,
  linearActivation,
  linearBackward,
  logSoftmax,
  matmul,
  max,
  mean,
  memory,
  mul,
  multiTensorAdamUpdate,
  multiTensorAdamUpdateInPlace,
  packedAttention,
  packedAttentionBackward,
  packedAttentionWithStats,
  reshape,
  sampledMatmul,
  scaledDotProductAttention,
  setBackend,
  slice,
  softmax,
  sub,
  sum,
  tensorOn,
  tidy,
  transpose,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { describe, expect, it } from "vitest";
import { type NativeIsa, setCpuIsa, setCpuThreads } from "../src/index";
import { cpuMissing, reportCpuAvailability, useCpuPoisoned } from "./cpu";

reportCpuAvailability("differential.test.ts");

const SEED = Number(process.env.BLOCKSPARSE_FUZZ_SEED ?? 20261205);
const CASES = Number(process.env.BLOCKSPARSE_FUZZ_CASES ?? 1500);
const FLOATS: DType[] = ["float32", "float16", "bfloat16"];
const ACTIVATIONS: Activation[] = ["relu", "gelu", "gelu_tanh"];

// ---- inputs ------------------------------------------------------------------------------------------------------

/** How an input reaches the op: as stored, or through a view made by core's ops on each backend. */
type View =
  | { kind: "plain" }
  | { kind: "transposed" } // stored with its last two dims swapped, transposed back
  | { kind: "sliced"; axis: number; before: number; after: number } // stored inside poisoned margins, sliced out
  | { kind: "broadcast"; axis: number }; // stored with dim `axis` of 1, broadcast to the shape

interface InputSpec {
  shape: number[];
  dtype: DType;
  values: Float64Array;
  view: View;
  /** Gradient cases: whether its stored tensor is a leaf that requires gradients. */
  grad: boolean;
}

const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const stridesOf = (shape: readonly number[]) => shape.map((_, i) => sizeOf(shape.slice(i + 1)));

/** How large values are, per case: each product's factors scaled so its sums stay inside the dtype. */
type Regime = "unit" | "wide" | "large" | "tiny" | "subnormal";

class Fuzz {
  readonly rng: SeededRandom;
  regime: Regime = "unit";
  /** Non-finite values to plant in this case's float inputs. */
  specials = false;
  constructor(seed: number) {
    this.rng = new SeededRandom(seed);
  }
  int(bound: number): number {
    return this.rng.nextInt(bound);
  }
  chance(p: number): boolean {
    return this.rng.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** A dim from the edges kernels treat apart: 0 (rarely), 1, small odd sizes, around 8/16/32, up to `cap`. */
  dim(cap = 33, zero = 0.06): number {
    if (this.chance(zero)) return 0;
    const sizes = [1, 1, 2, 3, 4, 5, 7, 8, 9, 13, 15, 16, 17, 24, 31, 32, 33, 47, 63, 64, 65, 100, 129].filter((d) => d <= cap);
    return this.pick(sizes);
  }
  /** Leading (token or batch) dims: none, one or two. */
  lead(cap = 9, zero = 0.06): number[] {
    return Array.from({ length: this.int(3) }, () => this.dim(cap, zero));
  }
  dtype(): DType {
    return this.pick(FLOATS);
  }
  /** The magnitude of a factor of a `factors`-fold product in this case's regime for `dtype`. */
  scale(dtype: DType, factors: number): number {
    const half = dtype === "float16";
    switch (this.regime) {
      case "unit":
      case "wide":
        return 1;
      case "large":
        return (half ? 300 : 1e30) ** (1 / factors);
      case "tiny":
        return (half ? 1e-4 : 1e-30) ** (1 / factors);
      case "subnormal":
        return dtype === "float32" && factors === 1 ? 3e-39 : 1;
    }
  }
  values(size: number, dtype: DType, factors: number): Float64Array {
    const s = this.scale(dtype, factors);
    const out = new Float64Array(size);
    for (let i = 0; i < size; i++) {
      const u = this.rng.uniform(-1, 1);
      out[i] = this.regime === "wide" ? Math.sign(u) * 10 ** this.rng.uniform(-3, dtype === "float16" ? 1.5 : 3) : u * s;
    }
    if (this.specials && size > 0) {
      for (let n = 1 + this.int(3); n > 0; n--) out[this.int(size)] = this.pick([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]);
    }
    return out;
  }
  /**
   * A float input of `shape`, values of a `factors`-fold product, reaching the op through a random view. `amplitude`
   * (of every element, or of those it gives one for) fixes the values' size whatever the regime: attention's queries
   * and keys, whose scores a float32 product rounds to about 1e-7 of |q| |k|, an error the softmax turns into P's
   * (logits of 1e15 lose every difference below 1e8). Non-finite values planted stay.
   */
  input(
    shape: number[],
    dtype: DType,
    factors = 2,
    options: { grad?: boolean; view?: boolean; broadcast?: boolean; amplitude?: number | ((i: number) => number | null) } = {},
  ): InputSpec {
    const values = this.values(sizeOf(shape), dtype, factors);
    const { amplitude } = options;
    for (let i = 0; amplitude !== undefined && i < values.length; i++) {
      const a = typeof amplitude === "number" ? amplitude : amplitude(i);
      if (a !== null && Number.isFinite(values[i])) values[i] = this.rng.uniform(-a, a);
    }
    return { shape, dtype, values, view: options.view === false ? { kind: "plain" } : this.view(shape, values, options.broadcast ?? true), grad: options.grad ?? true };
  }
  ints(shape: number[], low: number, high: number): InputSpec {
    const values = Float64Array.from({ length: sizeOf(shape) }, () => low + this.int(high - low));
    return { shape, dtype: "int32", values, view: { kind: "plain" }, grad: false };
  }
  view(shape: number[], values: Float64Array, broadcast: boolean): View {
    const roll = this.rng.next();
    if (roll < 0.5 || shape.length === 0) return { kind: "plain" };
    if (roll < 0.7 && shape.length >= 2) return { kind: "transposed" };
    if (roll < 0.9) return { kind: "sliced", axis: this.int(shape.length), before: this.int(3), after: this.int(3) };
    if (!broadcast) return { kind: "plain" };
    const axis = this.int(shape.length);
    // Values constant along the axis, as a broadcast gives them.
    const strides = stridesOf(shape);
    for (let i = 0; i < values.length; i++) {
      const along = Math.floor(i / strides[axis]) % shape[axis];
      values[i] = values[i - along * strides[axis]];
    }
    return { kind: "broadcast", axis };
  }
}

/** The input's stored tensor on `backend` (the leaf gradients reach). */
function store(spec: InputSpec, backend: Backend): Tensor {
  const { shape, dtype, values, view } = spec;
  switch (view.kind) {
    case "plain":
      return tensorOn(backend, values, shape, dtype);
    case "transposed": {
      const [r, c] = shape.slice(-2);
      const stored = new Float64Array(values.length);
      const batches = r * c === 0 ? 0 : values.length / (r * c);
      for (let b = 0; b < batches; b++) for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) stored[b * r * c + j * r + i] = values[b * r * c + i * c + j];
      return tensorOn(backend, stored, [...shape.slice(0, -2), c, r], dtype);
    }
    case "sliced": {
      const { axis, before, after } = view;
      const outer = [...shape];
      outer[axis] += before + after;
      // The margins hold NaN and huge values: a kernel that reads past the view shows them.
      const stored = new Float64Array(sizeOf(outer)).map((_, i) => (i % 2 ? Number.NaN : 3e38));
      const inner = sizeOf(shape.slice(axis + 1));
      const outerRun = outer[axis] * inner;
      for (let i = 0; i < values.length; i++) {
        const head = Math.floor(i / (shape[axis] * inner));
        const rest = i % (shape[axis] * inner);
        stored[head * outerRun + before * inner + rest] = values[i];
      }
      return tensorOn(backend, stored, outer, dtype);
    }
    case "broadcast": {
      const { axis } = view;
      const stored = [...shape];
      stored[axis] = shape[axis] === 0 ? 0 : 1;
      const strides = stridesOf(shape);
      const kept = values.filter((_, i) => Math.floor(i / strides[axis]) % shape[axis] === 0);
      return tensorOn(backend, shape[axis] === 0 ? [] : kept, stored, dtype);
    }
  }
}

/** The input as the op sees it: its stored tensor through its view. */
function viewOf(spec: InputSpec, stored: Tensor): Tensor {
  const { shape, view } = spec;
  const rank = shape.length;
  switch (view.kind) {
    case "plain":
      return stored;
    case "transposed": {
      const perm = [...Array(rank).keys()];
      [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
      return transpose(stored, perm);
    }
    case "sliced":
      return slice(stored, shape.map((_, i) => (i === view.axis ? view.before : 0)), shape);
    case "broadcast":
      return broadcastTo(stored, shape);
  }
}

// ---- cases -------------------------------------------------------------------------------------------------------

interface Case {
  /** The family drawn (for the coverage count). */
  family: string;
  /** Shapes, dtype and options, for a failure's message. */
  detail: string;
  inputs: InputSpec[];
  /** The op on one backend's tensors; every tensor returned is compared (an input written in place, read after). */
  run: (t: Tensor[]) => Tensor[];
  /** Gradient cases: backward from sum(out[0] * weight) (weight the case's last input), every leaf's gradient compared. */
  grad?: boolean;
  /** Kernels js and cpu share (the same TypeScript): bit for bit. */
  exact?: boolean;
  /** Extra slack over the default tolerance (float32 error that a longer chain of ops compounds). */
  slack?: number;
  /** An absolute error each output may have beyond the tolerance (float32 noise at the size of its terms). */
  floors?: number[];
}

/** Block shapes block-sparse layers use, and odd ones. */
const BLOCKS = [1, 2, 3, 5, 8, 16, 32, 64];

/** A random pattern: empty, full, or random with some block rows and columns emptied. */
function randomPattern(f: Fuzz): { pattern: BsrPattern; kind: string } {
  const [bh, bw] = [f.pick(BLOCKS), f.chance(0.6) ? -1 : f.pick(BLOCKS)];
  const blockHeight = bh;
  const blockWidth = bw === -1 ? bh : bw;
  const gridCap = (b: number) => (b >= 32 ? 2 : b >= 8 ? 3 : 6);
  const blockRows = 1 + f.int(gridCap(blockHeight));
  const blockCols = 1 + f.int(gridCap(blockWidth));
  const kind = f.pick(["empty", "full", "random", "random", "holes"]);
  const density = f.rng.next();
  const mask = Array.from({ length: blockRows * blockCols }, () => (kind === "empty" ? 0 : kind === "full" ? 1 : f.chance(density) ? 1 : 0));
  if (kind === "holes") {
    const row = f.int(blockRows);
    const col = f.int(blockCols);
    for (let j = 0; j < blockCols; j++) mask[row * blockCols + j] = 0;
    for (let i = 0; i < blockRows; i++) mask[i * blockCols + col] = 0;
  }
  const pattern = BsrPattern.fromMask([blockRows * blockHeight, blockCols * blockWidth], [blockHeight, blockWidth], mask);
  return { pattern, kind: `${kind} ${pattern.shape.join("x")} in ${blockHeight}x${blockWidth} blocks, ${pattern.nnzBlocks} stored` };
}

/** The gradient weight of a gradient case: one more plain input of the output's shape. */
function weightFor(f: Fuzz, shape: number[], dtype: DType): InputSpec {
  return { shape, dtype, values: Float64Array.from({ length: sizeOf(shape) }, () => f.rng.uniform(-1, 1)), view: { kind: "plain" }, grad: false };
}

/** Packed qkv's queries and keys (parts 0 and 1 of [..., 3, h, d]) of amplitude 3; its values as the regime has them. */
const packedQk = (h: number, d: number) => ({ amplitude: (i: number) => (Math.floor(i / (h * d)) % 3 < 2 ? 3 : null) });

/** The largest finite |value| of `values` (of those `part` picks, when given). */
function largest(values: ArrayLike<number>, part?: (i: number) => boolean): number {
  let scale = 0;
  for (let i = 0; i < values.length; i++) {
    if (Number.isFinite(values[i]) && (part === undefined || part(i))) scale = Math.max(scale, Math.abs(values[i]));
  }
  return scale;
}

/** The largest finite |value| of an input (of its elements `part` picks, when given). */
const largestOf = (spec: InputSpec, part?: (i: number) => boolean) => largest(spec.values, part);

/**
 * Attention's gradients dq = scale dS k and dk = scale dS^T q, dS = P (dP - Di), cancel to far below their terms where
 * the keys (or values) are alike: float32 rounding of dP, P and its sum leaves noise of about 1e-7 of
 * |scale| d |dout| |v| |k| (or |q|) where js's float64 gets 0 (all keys equal: P uniform, dP - Di = 0). The floors of
 * [dq, dk] for that noise; with `outEpsilon`, also for Di = dout . out moved by a last-bit difference of out (a
 * gradient chain in a half dtype, where each backend rounds its own forward's out).
 */
function attentionFloors(scale: number, d: number, q: number, k: number, v: number, dout: number, outEpsilon = 0): [number, number] {
  const terms = (1e-6 * Math.max(d, 1) + 2 * outEpsilon) * Math.abs(scale) * dout * v;
  return [terms * k, terms * q];
}

/** A half dtype's epsilon (0 for float32): in a gradient chain each backend's own out, a last bit apart where it rounds. */
const outEpsilon = (dtype: DType) => (dtype === "float16" ? 2 ** -10 : dtype === "bfloat16" ? 2 ** -7 : 0);

const fmt = (shape: readonly number[]) => `[${shape.join(", ")}]`;

/**
 * `op`'s outputs on the js backend as plain inputs: a backward kernel then gets the same saved forward outputs on
 * both backends (its own forward's, rounded to a half dtype, may differ in the last bit, which a backward amplifies).
 */
function fromJs(inputs: InputSpec[], op: (t: Tensor[]) => Tensor[]): InputSpec[] {
  const js = getBackendInstance("js");
  try {
    return tidy(() =>
      op(inputs.map((spec) => viewOf(spec, store(spec, js)))).map((t) => ({
        shape: [...t.shape],
        dtype: t.dtype,
        values: Float64Array.from(t.dataSync()),
        view: { kind: "plain" } as View,
        grad: false,
      })),
    );
  } catch {
    // Inputs the op refuses (attention with D = 0): no saved outputs, and the case's own call is refused on both backends.
    return [];
  }
}

type Generator = (f: Fuzz) => Case;

const GENERATORS: Record<string, Generator> = {
  matmul(f) {
    const dtype = f.dtype();
    const [m, n, k] = [f.dim(130), f.dim(130), f.dim(130)];
    const batch = f.lead(3).filter(() => m * n * k < 40_000);
    // Broadcasting: each operand keeps a batch dim or has 1 there (or lacks the leading ones).
    const aBatch = batch.map((d) => (f.chance(0.3) ? 1 : d)).slice(f.int(batch.length + 1) === 0 ? 1 : 0);
    const bBatch = batch.map((d) => (f.chance(0.3) ? 1 : d));
    const [transposeA, transposeB] = [f.chance(0.5), f.chance(0.5)];
    const a = f.input([...aBatch, ...(transposeA ? [k, m] : [m, k])], dtype);
    const b = f.input([...bBatch, ...(transposeB ? [n, k] : [k, n])], dtype);
    return { family: "matmul", detail: `${dtype} a ${fmt(a.shape)} b ${fmt(b.shape)} tA=${transposeA} tB=${transposeB}`, inputs: [a, b], run: ([x, y]) => [matmul(x, y, { transposeA, transposeB })] };
  },
  linear(f) {
    const dtype = f.dtype();
    const lead = f.lead(40);
    const [n, k] = [f.dim(65), f.dim(65)];
    const [withBias, withResidual] = [f.chance(0.6), f.chance(0.4)];
    const inputs = [f.input([...lead, k], dtype), f.input([n, k], dtype)];
    if (withBias) inputs.push(f.input([n], dtype, 1));
    if (withResidual) inputs.push(f.input([...lead, n], dtype, 1));
    return {
      family: "linear",
      detail: `${dtype} x ${fmt(inputs[0].shape)} weight ${fmt(inputs[1].shape)} bias=${withBias} residual=${withResidual}`,
      inputs,
      run: ([x, w, ...rest]) => [linear(x, w, withBias ? rest[0] : null, withResidual ? { residual: rest[withBias ? 1 : 0] } : undefined)],
    };
  },
  linearActivation(f) {
    const dtype = f.dtype();
    const lead = f.lead(40);
    const [n, k] = [f.dim(65), f.dim(65)];
    const activation = f.pick(ACTIVATIONS);
    const withBias = f.chance(0.6);
    const inputs = [f.input([...lead, k], dtype), f.input([n, k], dtype)];
    if (withBias) inputs.push(f.input([n], dtype, 1));
    return {
      family: "linearActivation",
      // The product is rounded to the dtype before the activation reads it: a last bit there moves the output too.
      slack: 2,
      detail: `${dtype} ${activation} x ${fmt(inputs[0].shape)} weight ${fmt(inputs[1].shape)} bias=${withBias}`,
      inputs,
      run: ([x, w, b]) => [linearActivation(x, w, b ?? null, activation)],
    };
  },
  linearBackward(f) {
    const dtype = f.dtype();
    const lead = f.lead(40);
    const [n, k] = [f.dim(65), f.dim(65)];
    const inputs = [f.input([...lead, n], dtype), f.input([...lead, k], dtype), f.input([n, k], dtype)];
    return {
      family: "linearBackward",
      detail: `${dtype} dy ${fmt(inputs[0].shape)} x ${fmt(inputs[1].shape)} weight ${fmt(inputs[2].shape)}`,
      inputs,
      run: ([dy, x, w]) => {
        const { dx, dweight } = linearBackward(dy, x, w);
        return [dx, dweight];
      },
    };
  },
  bsrLinear(f) {
    const dtype = f.dtype();
    const { pattern, kind } = randomPattern(f);
    const [rows, cols] = pattern.shape;
    const lead = f.lead(40);
    const withBias = f.chance(0.5);
    const inputs = [f.input([...lead, cols], dtype), f.input([pattern.nnzBlocks, ...pattern.blockShape], dtype)];
    if (withBias) inputs.push(f.input([rows], dtype, 1));
    return { family: "bsrLinear", detail: `${dtype} ${kind} x ${fmt(inputs[0].shape)} bias=${withBias}`, inputs, run: ([x, v, b]) => [bsrLinear(x, v, pattern, b ?? null)] };
  },
  bsrLinearActivation(f) {
    const dtype = f.dtype();
    const { pattern, kind } = randomPattern(f);
    const [rows, cols] = pattern.shape;
    const lead = f.lead(40);
    const activation = f.pick(ACTIVATIONS);
    const withBias = f.chance(0.5);
    const inputs = [f.input([...lead, cols], dtype), f.input([pattern.nnzBlocks, ...pattern.blockShape], dtype)];
    if (withBias) inputs.push(f.input([rows], dtype, 1));
    return {
      family: "bsrLinearActivation",
      // The product is rounded to the dtype before the activation reads it: a last bit there moves the output too.
      slack: 2,
      detail: `${dtype} ${activation} ${kind} x ${fmt(inputs[0].shape)} bias=${withBias}`,
      inputs,
      run: ([x, v, b]) => [bsrLinearActivation(x, v, pattern, b ?? null, activation)],
    };
  },
  bsrMatmul(f) {
    const dtype = f.dtype();
    const { pattern, kind } = randomPattern(f);
    const lead = f.lead(40);
    const inputs = [f.input([...lead, pattern.shape[0]], dtype), f.input([pattern.nnzBlocks, ...pattern.blockShape], dtype)];
    return { family: "bsrMatmul", detail: `${dtype} ${kind} dy ${fmt(inputs[0].shape)}`, inputs, run: ([dy, v]) => [bsrMatmul(dy, v, pattern)] };
  },
  bsrMatmulActivationBackward(f) {
    const dtype = f.dtype();
    const { pattern, kind } = randomPattern(f);
    const lead = f.lead(40);
    const activation = f.pick(ACTIVATIONS);
    const inputs = [f.input([...lead, pattern.shape[0]], dtype), f.input([pattern.nnzBlocks, ...pattern.blockShape], dtype), f.input([...lead, pattern.shape[1]], dtype, 1)];
    return {
      family: "bsrMatmulActivationBackward",
      // The product is rounded to the dtype before the activation reads it: a last bit there moves the output too.
      slack: 2,
      detail: `${dtype} ${activation} ${kind} dy ${fmt(inputs[0].shape)}`,
      inputs,
      run: ([dy, v, pre]) => bsrMatmulActivationBackward(dy, v, pattern, pre, activation),
    };
  },
  sampledMatmul(f) {
    const dtype = f.dtype();
    const { pattern, kind } = randomPattern(f);
    const lead = f.lead(60);
    const inputs = [f.input([...lead, pattern.shape[0]], dtype), f.input([...lead, pattern.shape[1]], dtype)];
    return { family: "sampledMatmul", detail: `${dtype} ${kind} dy ${fmt(inputs[0].shape)}`, inputs, run: ([dy, x]) => [sampledMatmul(dy, x, pattern)] };
  },
  biasActivation(f) {
    const dtype = f.dtype();
    const shape = [...f.lead(40), f.dim(65)];
    const activation = f.pick(ACTIVATIONS);
    const withBias = f.chance(0.6);
    const inputs = [f.input(shape, dtype, 1)];
    if (withBias) inputs.push(f.input([shape[shape.length - 1]], dtype, 1));
    return { family: "biasActivation", detail: `${dtype} ${activation} x ${fmt(shape)} bias=${withBias}`, inputs, run: ([x, b]) => [biasActivation(x, b ?? null, activation)] };
  },
  biasActivationBackward(f) {
    const dtype = f.dtype();
    const shape = [...f.lead(40), f.dim(65)];
    const activation = f.pick(ACTIVATIONS);
    const withBias = f.chance(0.6);
    const inputs = [f.input(shape, dtype, 1), f.input(shape, dtype, 1)];
    if (withBias) inputs.push(f.input([shape[shape.length - 1]], dtype, 1));
    return {
      family: "biasActivationBackward",
      detail: `${dtype} ${activation} x ${fmt(shape)} bias=${withBias}`,
      inputs,
      run: ([dy, x, b]) => biasActivationBackward(dy, x, b ?? null, activation),
    };
  },
  gelu(f) {
    const dtype = f.dtype();
    const shape = f.lead(65).concat(f.chance(0.5) ? [f.dim(65)] : []);
    const approximate = f.pick(["none", "tanh"] as const);
    const inputs = [f.input(shape, dtype, 1), f.input(shape, dtype, 1)];
    return {
      family: "gelu",
      detail: `${dtype} ${approximate} x ${fmt(shape)}`,
      inputs,
      run: ([dy, x]) => [gelu(x, approximate), geluBackward(dy, x, approximate)],
    };
  },
  layerNorm(f) {
    const dtype = f.dtype();
    const shape = [...f.lead(20), f.dim(130)];
    const d = shape[shape.length - 1];
    const [withGamma, withBeta] = [f.chance(0.7), f.chance(0.5)];
    const epsilon = f.pick([1e-5, 1e-12, 0.1]);
    // x varies around an offset (a mean large beside the spread is where one-pass variance fails).
    const offset = f.chance(0.3) ? f.pick([1, 100, -1e4]) : 0;
    const x = f.input(shape, dtype, 1);
    x.values = x.values.map((v) => v + offset);
    const [dy, gamma, beta] = [f.input(shape, dtype, 1), withGamma ? f.input([d], dtype, 1) : null, withBeta ? f.input([d], dtype, 1) : null];
    const stats = fromJs([x], ([xt]) => {
      const { mean: mu, rstd } = layerNormWithStats(xt, null, null, epsilon);
      return [mu, rstd];
    });
    const inputs = [x, dy, ...stats, gamma, beta].filter((spec) => spec !== null);
    return {
      family: "layerNorm",
      detail: `${dtype} x ${fmt(shape)} offset ${offset} gamma=${withGamma} beta=${withBeta} eps=${epsilon}`,
      inputs,
      run: ([xt, dyt, mu, rstd, ...rest]) => {
        const g = withGamma ? rest[0] : null;
        const b = withBeta ? rest[withGamma ? 1 : 0] : null;
        const forward = layerNormWithStats(xt, g, b, epsilon);
        const { dx, dgamma, dbeta } = layerNormBackward(dyt, xt, mu, rstd, g);
        return [forward.y, forward.mean, forward.rstd, dx, dgamma, dbeta];
      },
    };
  },
  reduce(f) {
    // float32 over leading axes runs in the addon; the rest is js's own kernel.
    const dtype = f.chance(0.7) ? "float32" : f.dtype();
    const shape = Array.from({ length: f.int(4) + 1 }, () => f.dim(40, 0.08));
    const leading = f.chance(0.6);
    const count = f.int(shape.length + 1);
    const axes = leading ? [...Array(count).keys()] : [...Array(shape.length).keys()].filter(() => f.chance(0.5));
    const keepDims = f.chance(0.3);
    const inputs = [f.input(shape, dtype, 1)];
    return {
      family: "sum/mean",
      detail: `${dtype} x ${fmt(shape)} axes [${axes}] keepDims=${keepDims}`,
      inputs,
      run: ([x]) => [sum(x, axes, keepDims), mean(x, axes, keepDims)],
    };
  },
  adam(f) {
    const mode = f.pick(["single", "multi", "inPlace"] as const);
    const count = 1 + f.int(3);
    const shapes = Array.from({ length: count }, () => [...f.lead(9), f.dim(65)]);
    // adamUpdate takes its gradient in the param's dtype; the multi-tensor updates any float dtype.
    const gradDType = mode === "single" || f.chance(0.7) ? "float32" : f.dtype();
    const options = {
      lr: f.pick([1e-3, 0.1, 1]),
      beta1: f.pick([0.9, 0, 0.5]),
      beta2: f.pick([0.999, 0.95, 0]),
      epsilon: f.pick([1e-8, 1e-30, 0.1]),
      weightDecay: f.pick([0, 0.01, 0.5]),
      decoupledWeightDecay: f.chance(0.5),
    };
    const steps = shapes.map(() => 1 + f.int(100));
    const inputs = shapes.flatMap((shape) => [
      f.input(shape, "float32", 1, { view: false }),
      f.input(shape, gradDType, 1),
      f.input(shape, "float32", 1, { view: false }),
      { ...f.input(shape, "float32", 2, { view: false }), values: f.values(sizeOf(shape), "float32", 2).map((v) => v * v) },
    ]);
    return {
      family: `adam ${mode}`,
      detail: `params ${shapes.map(fmt).join(" ")} grad ${gradDType} ${JSON.stringify(options)} steps ${steps}`,
      inputs,
      run: (t) => {
        const [p, g, m, v] = [0, 1, 2, 3].map((j) => t.filter((_, i) => i % 4 === j));
        if (mode === "single") {
          const s = adamUpdate(p[0], g[0], m[0], v[0], { ...options, step: steps[0] });
          return [s.param, s.m, s.v];
        }
        if (mode === "multi") {
          const s = multiTensorAdamUpdate(p, g, m, v, { ...options, steps });
          return [...s.params, ...s.m, ...s.v];
        }
        multiTensorAdamUpdateInPlace(p, g, m, v, { ...options, steps });
        return [...p, ...m, ...v];
      },
    };
  },
  attention(f) {
    const dtype = f.dtype();
    const batch = f.lead(3, 0.03);
    const [n, d] = [f.dim(40, 0.04), f.dim(40, 0.04)];
    const causal = f.chance(0.4);
    const m = causal ? Math.min(n, f.dim(40, 0.04)) : f.dim(40, 0.04);
    const scale = f.chance(0.6) ? undefined : f.pick([0, -0.5, 2, 1e-3]);
    const options = scale === undefined ? { causal } : { causal, scale };
    const qk = { amplitude: 3 };
    const inputs = [f.input([...batch, m, d], dtype, 2, qk), f.input([...batch, n, d], dtype, 2, qk), f.input([...batch, n, d], dtype, 2), f.input([...batch, m, d], dtype, 2)];
    inputs.push(
      ...fromJs(inputs.slice(0, 3), ([q, k, v]) => {
        const { out, lse } = attentionWithStats(q, k, v, options);
        return [out, lse];
      }),
    );
    const [dqFloor, dkFloor] = attentionFloors(scale ?? 1 / Math.sqrt(d), d, ...([0, 1, 2, 3].map((i) => largestOf(inputs[i])) as [number, number, number, number]));
    return {
      family: "attention",
      detail: `${dtype} q ${fmt(inputs[0].shape)} k ${fmt(inputs[1].shape)} ${JSON.stringify(options)}`,
      inputs,
      floors: [0, 0, dqFloor, dkFloor, 0],
      run: ([q, k, v, dout, savedOut, savedLse]) => {
        const { out, lse } = attentionWithStats(q, k, v, options);
        const { dq, dk, dv } = attentionBackward(dout, q, k, v, savedOut ?? out, savedLse ?? lse, options);
        return [out, lse, dq, dk, dv];
      },
    };
  },
  packedAttention(f) {
    const dtype = f.dtype();
    const batch = f.lead(3, 0.03);
    const [t, h, d] = [f.dim(33, 0.04), 1 + f.int(3), 1 + f.int(20)];
    const causal = f.chance(0.5);
    const scale = f.chance(0.6) ? undefined : f.pick([0, -0.5, 2]);
    const options = scale === undefined ? { causal } : { causal, scale };
    const inputs = [f.input([...batch, t, 3, h, d], dtype, 2, packedQk(h, d)), f.input([...batch, t, h, d], dtype, 2)];
    inputs.push(
      ...fromJs(inputs.slice(0, 1), ([qkv]) => {
        const { out, lse } = packedAttentionWithStats(qkv, options);
        return [out, lse];
      }),
    );
    const part = (p: number) => (i: number) => Math.floor(i / (h * d)) % 3 === p;
    const [q, k, v] = [0, 1, 2].map((p) => largestOf(inputs[0], part(p)));
    const packedFloor = Math.max(...attentionFloors(scale ?? 1 / Math.sqrt(d), d, q, k, v, largestOf(inputs[1])));
    return {
      family: "packedAttention",
      detail: `${dtype} qkv ${fmt(inputs[0].shape)} ${JSON.stringify(options)}`,
      inputs,
      floors: [0, 0, packedFloor],
      run: ([qkv, dout, savedOut, savedLse]) => {
        const { out, lse } = packedAttentionWithStats(qkv, options);
        return [out, lse, packedAttentionBackward(dout, qkv, savedOut ?? out, savedLse ?? lse, options)];
      },
    };
  },
  cachedAttention(f) {
    const dtype = f.dtype();
    const batch = f.lead(3, 0.03);
    const [m, n, d] = [f.dim(9, 0.03), f.dim(40, 0.03), 1 + f.int(40)];
    const writes = n > 0 && f.chance(0.4);
    const scale = f.chance(0.6) ? undefined : f.pick([0, -1, 3]);
    // Positions: with writes, inside the cache (repeats allowed); else anywhere, negative and past the end too.
    const positions = writes ? f.ints([m], 0, n) : f.ints([m], -2, n + 3);
    const inputs = [f.input([...batch, m, d], dtype, 1, { amplitude: 3 }), f.input([...batch, n, d], dtype, 1, { view: false, amplitude: 3 }), f.input([...batch, n, d], dtype, 1, { view: false }), positions];
    if (writes) inputs.push(f.input([...batch, m, d], dtype, 1, { amplitude: 3 }), f.input([...batch, m, d], dtype, 1));
    return {
      family: "cachedAttention",
      detail: `${dtype} q ${fmt(inputs[0].shape)} k ${fmt(inputs[1].shape)} positions [${Array.from(positions.values)}] writes=${writes} scale=${scale}`,
      inputs,
      run: ([q, k, v, pos, newKeys, newValues]) => {
        const options = { ...(scale === undefined ? {} : { scale }), ...(writes ? { newKeys, newValues } : {}) };
        return [cachedAttention(q, k, v, pos, options), k, v];
      },
    };
  },
  // Kernels the cpu backend takes from js unchanged, on its own (cached, poisoned, aligned) buffers: bit for bit.
  shared(f) {
    const dtype = f.dtype();
    const shape = [...f.lead(9), 1 + f.int(17)];
    const classes = shape[shape.length - 1];
    const rows = sizeOf(shape.slice(0, -1));
    const castTo = f.pick(FLOATS);
    const causal = shape.length >= 2 && shape[shape.length - 2] <= classes && f.chance(0.5);
    const inputs = [f.input(shape, dtype, 1), f.input([classes], dtype, 1), f.ints([rows], -1, classes), f.ints([rows, 3], 0, classes)];
    return {
      family: "shared (softmax, crossEntropy, reductions, elementwise, shape ops)",
      detail: `${dtype} x ${fmt(shape)} causal=${causal} cast to ${castTo}`,
      inputs,
      exact: true,
      run: ([x, b, targets, indices]) => {
        const flat = reshape(x, [rows, classes]);
        return [
          softmax(x, -1),
          logSoftmax(x, -1, { causal }),
          crossEntropy(flat, targets, { ignoreIndex: -1 }),
          max(x, -1),
          argmax(x, -1),
          sub(mul(x, b), add(x, b)),
          concat([x, x], -1),
          gather(flat, indices, 1),
          cast(x, castTo),
        ];
      },
    };
  },
  // ---- gradients through autograd ----
  gradDense(f) {
    const dtype = f.dtype();
    const lead = f.lead(20);
    const [n, k] = [f.dim(33), f.dim(33)];
    const activation = f.pick(ACTIVATIONS);
    const inputs = [f.input([...lead, k], dtype), f.input([n, k], dtype), f.input([n], dtype, 1), f.input([...lead, n], dtype, 1)];
    inputs.push(weightFor(f, [...lead, n], dtype));
    const fused = f.chance(0.5);
    return {
      family: "grad: linear, activation, residual",
      detail: `${dtype} ${activation} fused=${fused} x ${fmt(inputs[0].shape)} weight ${fmt(inputs[1].shape)}`,
      inputs,
      grad: true,
      run: ([x, w, b, r]) => [fused ? add(linearActivation(x, w, b, activation), r) : biasActivation(linear(x, w, null, { residual: r }), b, activation)],
    };
  },
  gradMatmul(f) {
    const dtype = f.dtype();
    const [m, n, k] = [f.dim(33), f.dim(33), f.dim(33)];
    const batch = f.lead(3);
    const bBatch = batch.map((d) => (f.chance(0.4) ? 1 : d));
    const [transposeA, transposeB] = [f.chance(0.5), f.chance(0.5)];
    const a = f.input([...batch, ...(transposeA ? [k, m] : [m, k])], dtype);
    const b = f.input([...bBatch, ...(transposeB ? [n, k] : [k, n])], dtype);
    return {
      family: "grad: matmul (broadcast batch)",
      detail: `${dtype} a ${fmt(a.shape)} b ${fmt(b.shape)} tA=${transposeA} tB=${transposeB}`,
      inputs: [a, b, weightFor(f, [...batch, m, n], dtype)],
      grad: true,
      run: ([x, y]) => [matmul(x, y, { transposeA, transposeB })],
    };
  },
  gradSparse(f) {
    const dtype = f.dtype();
    const first = randomPattern(f);
    const [rows, cols] = first.pattern.shape;
    const lead = f.lead(20);
    const activation = f.pick(ACTIVATIONS);
    // A second layer back to cols features whose pattern has rows = cols: a block-sparse MLP with a residual.
    const [bh, bw] = [f.pick(BLOCKS.filter((b) => cols % b === 0)), f.pick(BLOCKS.filter((b) => rows % b === 0))];
    const mask = Array.from({ length: (cols / bh) * (rows / bw) }, () => (f.chance(0.5) ? 1 : 0));
    const second = BsrPattern.fromMask([cols, rows], [bh, bw], mask);
    const withNorm = f.chance(0.5);
    const inputs = [
      // Not broadcast under layerNorm: a constant row has rstd 1 / sqrt(epsilon), and its dx, which sums to 0 over the
      // row, cancels from terms 300 times the gradient's size (float32 noise of whole units in a wide case).
      f.input([...lead, cols], dtype, 2, { broadcast: !withNorm }),
      f.input([first.pattern.nnzBlocks, ...first.pattern.blockShape], dtype),
      f.input([rows], dtype, 1),
      f.input([second.nnzBlocks, bh, bw], dtype),
      f.input([cols], dtype, 1),
      weightFor(f, [...lead, cols], dtype),
    ];
    return {
      family: "grad: block-sparse MLP (layerNorm, bsrLinearActivation, bsrLinear, residual)",
      detail: `${dtype} ${activation} first ${first.kind}, second ${second.nnzBlocks} of ${cols}x${rows} in ${bh}x${bw}, x ${fmt(inputs[0].shape)} norm=${withNorm}`,
      inputs,
      grad: true,
      // Five kernels deep, and layerNorm's dx sums to 0 along its row: a broadcast x's gradient (that sum) cancels.
      slack: 16,
      run: ([x, v1, b1, v2, gamma]) => {
        const h = withNorm ? layerNorm(x, gamma, null) : x;
        return [add(bsrLinear(bsrLinearActivation(h, v1, first.pattern, b1, activation), v2, second), x)];
      },
    };
  },
  gradAttention(f) {
    const dtype = f.dtype();
    const batch = f.lead(3, 0.03);
    const packed = f.chance(0.4);
    const causal = f.chance(0.5);
    if (packed) {
      const [t, h, d] = [f.dim(17, 0.04), 1 + f.int(3), 1 + f.int(16)];
      const qkv = f.input([...batch, t, 3, h, d], dtype, 2, packedQk(h, d));
      const [q, k, v] = [0, 1, 2].map((p) => largestOf(qkv, (i) => Math.floor(i / (h * d)) % 3 === p));
      return {
        family: "grad: packed attention",
        detail: `${dtype} qkv ${fmt([...batch, t, 3, h, d])} causal=${causal}`,
        inputs: [qkv, weightFor(f, [...batch, t, h, d], dtype)],
        grad: true,
        floors: [0, Math.max(...attentionFloors(1 / Math.sqrt(d), d, q, k, v, 1, outEpsilon(dtype)))],
        run: ([qkv]) => [packedAttention(qkv, { causal })],
      };
    }
    const [n, d] = [f.dim(24, 0.04), f.dim(24, 0.04)];
    const m = causal ? Math.min(n, f.dim(24, 0.04)) : f.dim(24, 0.04);
    const inputs = [f.input([...batch, m, d], dtype, 2, { amplitude: 3 }), f.input([...batch, n, d], dtype, 2, { amplitude: 3 }), f.input([...batch, n, d], dtype, 2), weightFor(f, [...batch, m, d], dtype)];
    return {
      family: "grad: attention",
      detail: `${dtype} q ${fmt([...batch, m, d])} k ${fmt([...batch, n, d])} causal=${causal}`,
      inputs,
      grad: true,
      floors: [0, ...attentionFloors(1 / Math.sqrt(d), d, largestOf(inputs[0]), largestOf(inputs[1]), largestOf(inputs[2]), 1, outEpsilon(dtype)), 0],
      run: ([q, k, v]) => [scaledDotProductAttention(q, k, v, { causal })],
    };
  },
  gradReduce(f) {
    const dtype = f.dtype();
    const shape = [...f.lead(20), f.dim(40)];
    const axes = [...Array(shape.length).keys()].filter(() => f.chance(0.5));
    const approximate = f.pick(["none", "tanh"] as const);
    const x = f.input(shape, dtype, 1);
    const outShape = shape.filter((_, i) => !axes.includes(i));
    return {
      family: "grad: gelu, sum, mean",
      detail: `${dtype} ${approximate} x ${fmt(shape)} axes [${axes}]`,
      inputs: [x, weightFor(f, outShape, dtype)],
      grad: true,
      run: ([xt]) => [add(sum(gelu(xt, approximate), axes), mean(xt, axes))],
    };
  },
};

// ---- comparison --------------------------------------------------------------------------------------------------

/** Half of a unit in the last place of `x` in `dtype` (the most one rounding moves a value). */
function halfUlp(x: number, dtype: DType): number {
  const bits = dtype === "float16" ? 10 : dtype === "bfloat16" ? 7 : 23;
  const minExponent = dtype === "float16" ? -14 : -126;
  const exponent = Math.max(Math.floor(Math.log2(Math.abs(x) || 2 ** minExponent)), minExponent);
  return 2 ** (exponent - bits - 1);
}

/**
 * Why `got` is not `want` within tolerance, or null: NaN where NaN is expected, infinities exact, finite values within
 * an ulp or two of the dtype plus a relative error of the output's largest value, and a floor of 1% of that error (at
 * least the dtype's epsilon) at the case's largest output (`caseScale`): an output that cancels to far below the
 * others (a sum of gradients that cancels; dq of a one-hot softmax row, dP - Di of 1e-6 |dP|) carries float32 noise of
 * its inputs' size on the other backend. `floor`: the case's own allowance for the output (see attentionFloors).
 */
function mismatch(got: ArrayLike<number>, want: ArrayLike<number>, dtype: DType, exact: boolean, chain: boolean, slack: number, caseScale: number, floor: number): string | null {
  if (got.length !== want.length) return `length ${got.length}, expected ${want.length}`;
  const scale = largest(want);
  // One kernel: float32 sums in another order, and a half output may then round the other way (one ulp of it). A
  // chain of kernels (a gradient) rounds every intermediate to its dtype: a last-bit difference there carries on.
  const epsilon = dtype === "float16" ? 2 ** -11 : dtype === "bfloat16" ? 2 ** -8 : 2 ** -24;
  const relative = slack * (chain ? Math.max(3e-5, 4 * epsilon) : 3e-5);
  for (let i = 0; i < want.length; i++) {
    const [g, w] = [got[i], want[i]];
    if (exact || !Number.isFinite(w)) {
      if (Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w)) || (exact && g === w)) continue;
      return `element ${i} is ${g}, expected ${w}`;
    }
    if (!Number.isFinite(g)) return `element ${i} is ${g}, expected ${w}`;
    const tolerance = 2 * slack * halfUlp(w, dtype) + relative * scale + 0.01 * Math.max(relative, epsilon) * caseScale + floor;
    if (Math.abs(g - w) > tolerance) return `element ${i} is ${g}, expected ${w} (difference ${Math.abs(g - w)} over ${tolerance}; largest |expected| ${scale})`;
  }
  return null;
}

interface Output {
  shape: number[];
  dtype: DType;
  values: ArrayLike<number>;
}

interface Result {
  outputs: Output[];
  error: string | null;
}

/** The case on one backend: its outputs (and leaf gradients) read back, or the error class it threw. */
function runOn(name: "js" | "cpu", c: Case): Result {
  setBackend(name);
  const backend = getBackendInstance(name);
  try {
    return tidy(() => {
      const stored = c.inputs.map((spec) => store(spec, backend));
      const leaves = c.grad ? stored.filter((_, i) => c.inputs[i].grad) : [];
      for (const leaf of leaves) leaf.requiresGrad = true;
      const tensors = stored.map((t, i) => viewOf(c.inputs[i], t));
      const outs = c.run(c.grad ? tensors.slice(0, -1) : tensors);
      if (c.grad) backward(sum(mul(outs[0], tensors[tensors.length - 1])));
      const read = (t: Tensor): Output => ({ shape: [...t.shape], dtype: t.dtype, values: t.dataSync() });
      const outputs = outs.map(read);
      for (const leaf of leaves) {
        outputs.push(leaf.grad ? read(leaf.grad) : { shape: [-1], dtype: leaf.dtype, values: [] });
        leaf.grad?.dispose();
      }
      return { outputs, error: null };
    });
  } catch (error) {
    return { outputs: [], error: error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error) };
  }
}

// ---- the fuzz ------------------------------------------------------------------------------------------------------

/** Case `index`'s own seed (a hash of both: seeds next to each other share no cases). */
function caseSeed(seed: number, index: number): number {
  let x = (Math.imul(seed, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca77)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

const GRAD_FAMILIES = Object.keys(GENERATORS).filter((name) => name.startsWith("grad"));

describe.skipIf(cpuMissing)("cpu against js: differential fuzz", () => {
  useCpuPoisoned();

  it(`${CASES} seeded cases (seed ${SEED}) of every native kernel agree with js`, { timeout: 600_000 }, () => {
    const cpu = getBackendInstance("cpu");
    getBackendInstance("js").poisonAllocations = true;
    // The kernels the cpu backend does not take from js: each must be drawn.
    const native = Object.keys(cpu.kernels).filter((name) => cpu.kernels[name as keyof typeof cpu.kernels] !== jsKernels[name as keyof typeof jsKernels]);
    const isas = (["avx512", "avx2", "scalar"] as NativeIsa[]).filter((isa) => {
      try {
        setCpuIsa(isa);
        return true;
      } catch {
        return false;
      }
    });
    const kernelsRun = new Map<string, number>();
    const families = new Map<string, { cases: number; refused: number }>();
    let active = false;
    const stop = addKernelObserver(({ kernelName }) => {
      if (active) kernelsRun.set(kernelName, (kernelsRun.get(kernelName) ?? 0) + 1);
    });
    const names = Object.keys(GENERATORS);
    const failures: string[] = [];
    const start = memory().numTensors;
    try {
      const only = process.env.BLOCKSPARSE_FUZZ_CASE === undefined ? null : Number(process.env.BLOCKSPARSE_FUZZ_CASE);
      for (let index = only ?? 0; index < (only === null ? CASES : only + 1) && failures.length < Number(process.env.BLOCKSPARSE_FUZZ_FAILURES ?? 10); index++) {
        const f = new Fuzz(caseSeed(SEED, index));
        const name = index < names.length ? names[index] : f.pick(f.chance(0.2) ? GRAD_FAMILIES : names);
        f.regime = f.pick<Regime>(["unit", "unit", "unit", "wide", "large", "tiny", "subnormal"]);
        f.specials = !name.startsWith("grad") && f.chance(0.2);
        const c = GENERATORS[name](f);
        const [isa, threads] = [f.pick(isas), 1 + f.int(3)];
        setCpuIsa(isa);
        setCpuThreads(threads);
        const want = runOn("js", c);
        active = true;
        const got = runOn("cpu", c);
        active = false;
        const counted = families.get(c.family) ?? { cases: 0, refused: 0 };
        families.set(c.family, { cases: counted.cases + 1, refused: counted.refused + (want.error ? 1 : 0) });
        const where = `case ${index} (seed ${SEED}): ${c.family}, ${c.detail}, ${f.regime}${f.specials ? " with NaN/inf" : ""}, ${isa} x${threads}`;
        if (want.error && process.env.BLOCKSPARSE_FUZZ_REPORT === "1") console.log(`${where}: refused: ${want.error}`);
        if (want.error || got.error) {
          // Both refuse, with the same error class (the message may name the backend).
          if (want.error?.split(":")[0] !== got.error?.split(":")[0]) failures.push(`${where}: js ${want.error ?? "ran"}, cpu ${got.error ?? "ran"}`);
          continue;
        }
        const caseScale = Math.max(...want.outputs.map((w) => largest(w.values)));
        want.outputs.forEach((w, i) => {
          const g = got.outputs[i];
          if (g.dtype !== w.dtype || fmt(g.shape) !== fmt(w.shape)) {
            failures.push(`${where}: output ${i} is ${g.dtype} ${fmt(g.shape)}, expected ${w.dtype} ${fmt(w.shape)}`);
            return;
          }
          const why = mismatch(g.values, w.values, w.dtype, c.exact ?? false, c.grad ?? false, c.slack ?? 1, caseScale, c.floors?.[i] ?? 0);
          if (why) failures.push(`${where}: output ${i} ${fmt(w.shape)}: ${why}`);
        });
      }
    } finally {
      stop();
      getBackendInstance("js").poisonAllocations = false;
      setBackend("cpu");
    }
    if (process.env.BLOCKSPARSE_FUZZ_REPORT === "1") {
      console.log([...families].map(([family, { cases, refused }]) => `${family}: ${cases} cases (${refused} refused by both)`).join("\n"));
      console.log(native.map((k) => `${k}: ${kernelsRun.get(k) ?? 0}`).join(", "));
    }
    expect(failures).toEqual([]);
    expect(native.filter((k) => !kernelsRun.has(k)), "native kernels no case reached").toEqual([]);
    expect(memory().numTensors, "tensors left alive").toBe(start);
  });
});
