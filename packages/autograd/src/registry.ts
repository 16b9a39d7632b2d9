import {
  type Activation,
  type Backend,
  type DType,
  type KernelAttrs,
  type KernelInputs,
  type KernelName,
  type Tensor,
  type TensorInputs,
  ValueError,
  kernelDeclaration,
} from "@blocksparse/core";
import { AutogradError, describeValue } from "./errors";

/** Shape, dtype and backend of a tensor, recorded for every input and output (no data kept; PyTorch's InputMetadata). */
export interface TensorMeta {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Where the tensor lives: its gradient must be there too (a `Move`'s goes back). */
  readonly backend: Backend;
}

/** A kernel's inputs as Tensors, keyed like its spec (a name outside core's kernels takes any record). */
export type InputsOf<K extends string> = K extends KernelName ? TensorInputs<K> : Record<string, Tensor | Tensor[] | undefined>;
/** A kernel's attributes. */
export type AttrsOf<K extends string> = K extends KernelName ? KernelAttrs<K> : Record<string, unknown>;
// Not distributive: an optional input (Tensor | undefined) maps to one TensorMeta.
type MetaOf<V> = [NonNullable<V>] extends [Tensor[]] ? TensorMeta[] : [NonNullable<V>] extends [Tensor] ? TensorMeta : TensorMeta | TensorMeta[];
type GradOf<V> = [NonNullable<V>] extends [Tensor[]] ? Tensor[] : [NonNullable<V>] extends [Tensor] ? Tensor : Tensor | Tensor[];

/** What a gradient function knows about the forward call. */
export interface GradContext<K extends string = string> {
  attrs: AttrsOf<K>;
  /** The inputs named in `inputsToSave` (absent optional inputs stay absent). */
  saved: Partial<InputsOf<K>>;
  /** The outputs named in `outputsToSave`, by output index. */
  savedOutputs: (Tensor | undefined)[];
  /** Shape and dtype of every input, by key (arrays for array inputs such as Concat's). */
  inputs: { [P in keyof InputsOf<K>]: MetaOf<InputsOf<K>[P]> };
  /** Shape and dtype of every output. */
  outputs: TensorMeta[];
  /**
   * False for outputs no gradient reached: their `dys` entry reads as zeros, made on first read (so read it only
   * when this is true, and do not destructure it).
   */
  outputHasGrad: boolean[];
  /**
   * The inputs whose gradients backward will ask for (their thunks are called, the others' not): for gradients that
   * compute several inputs' at once where all of them are wanted (Linear's dx and dweight in one kernel).
   */
  needsGrad: ReadonlySet<string>;
  /**
   * With `activationOutput`: the gradient of the pre-activation output and its sums over all axes but the last, which
   * the one consumer of the activation output computed through the activation (its `throughActivation`); the
   * activation output's own `dys` entry then holds only what other consumers sent (none: `outputHasGrad` false).
   */
  preActivationGrad?: { grad: Tensor; sums: Tensor };
}

/** A kernel output that is an activation of another output of the same call (BsrLinearActivation's y = act(z)). */
export interface ActivationOutput<K extends string = string> {
  /** The activation's output index. */
  output: number;
  /** The pre-activation's output index (it must be in `outputsToSave`). */
  pre: number;
  activation(attrs: AttrsOf<K>): Activation;
}

/**
 * A consumer's gradient for an input taken on through the activation that produced it, in one step (a fused
 * kernel): returns [dpre, dpre summed over all axes but the last] for the producer's pre-activation `pre`.
 */
export interface ThroughActivation<K extends string = string> {
  input: keyof InputsOf<K> & string;
  gradFunc(dys: Tensor[], context: GradContext<K>, pre: Tensor, activation: Activation): [Tensor, Tensor];
}

/**
 * The gradient of each input as a thunk, called only for inputs that need it. Every thunk
 * returns a tensor of its input's shape and dtype (an array of them for array inputs).
 */
export type GradFuncs<K extends string = string> = { [P in keyof InputsOf<K>]?: () => GradOf<InputsOf<K>[P]> };

/** How to differentiate one kernel (TensorFlow.js's GradConfig, keyed by kernel name). */
export interface GradConfig<K extends string = string> {
  /** Inputs the gradient reads; they are kept alive (buffer shared, no copy) until backward is done with them. */
  inputsToSave?: readonly (keyof InputsOf<K> & string)[];
  /** Indices of the outputs the gradient reads, kept the same way. */
  outputsToSave?: readonly number[];
  /**
   * `dys[i]` is the gradient flowing into output i, of that output's shape and dtype. Runs
   * with recording off inside a scope: temporaries are freed, only the returned tensors survive.
   */
  gradFunc(dys: Tensor[], context: GradContext<K>): GradFuncs<K>;
  /**
   * This kernel's output `activationOutput.output` is an activation of its output `activationOutput.pre`. When the only
   * node that sends that output a gradient has a `throughActivation` for the input it feeds, backward runs that
   * instead, never making the activation output's gradient, and passes its result here as `preActivationGrad`.
   */
  activationOutput?: ActivationOutput<K>;
  /** How this kernel's gradient for one input is taken on through an activation output that feeds it (above). */
  throughActivation?: ThroughActivation<K>;
}

const registry = new Map<string, GradConfig>();

/**
 * Registers (or replaces) the gradient of a kernel. Backends never write gradients: every
 * backend's kernels are differentiated by these rules, composed from ops.
 */
export function registerGradient<K extends KernelName>(kernelName: K, config: GradConfig<K>): void;
export function registerGradient(kernelName: string, config: GradConfig): void;
export function registerGradient(kernelName: string, config: GradConfig): void {
  if (typeof kernelName !== "string" || kernelName.length === 0) {
    throw new ValueError(`registerGradient: kernelName must be a non-empty string, got ${JSON.stringify(kernelName)}`);
  }
  if (config === null || typeof config !== "object" || typeof config.gradFunc !== "function") {
    throw new ValueError(`registerGradient('${kernelName}'): config must be an object with a gradFunc function`);
  }
  checkSaved(kernelName, config);
  registry.set(kernelName, config);
}

/**
 * inputsToSave and outputsToSave are read by every forward call the tape records: checked here, a string (iterated as
 * its characters) or a missing output would otherwise fail or save nothing inside the forward op, after its kernel ran.
 */
function checkSaved(kernelName: string, config: GradConfig): void {
  const where = `registerGradient('${kernelName}')`;
  const { inputsToSave, outputsToSave } = config;
  if (inputsToSave != null) {
    if (!Array.isArray(inputsToSave)) throw new ValueError(`${where}: inputsToSave must be an array of input names, got ${describeValue(inputsToSave)}`);
    for (const key of inputsToSave) {
      if (typeof key !== "string" || key.length === 0) throw new ValueError(`${where}: inputsToSave holds ${describeValue(key)}, expected an input name`);
    }
  }
  if (outputsToSave != null) {
    if (!Array.isArray(outputsToSave)) throw new ValueError(`${where}: outputsToSave must be an array of output indices, got ${describeValue(outputsToSave)}`);
    // A catalogue kernel with a fixed output count bounds the indices ("list" kernels have as many as their call makes).
    const count = kernelDeclaration(kernelName)?.outputs;
    for (const index of outputsToSave) {
      if (!Number.isSafeInteger(index) || index < 0 || (typeof count === "number" && index >= count)) {
        const bound = typeof count === "number" ? ` in [0, ${count}) (${kernelName} has ${count} output${count === 1 ? "" : "s"})` : " >= 0";
        throw new ValueError(`${where}: outputsToSave holds ${describeValue(index)}, expected an output index${bound}`);
      }
    }
  }
}

// A kernel without inputs (Fill) takes Record<string, never>: its string index is no optional input.
type OptionalKeys<T> = string extends keyof T ? never : { [P in keyof T]-?: Partial<Pick<T, P>> extends Pick<T, P> ? P : never }[keyof T] & string;
type KernelsWithOptionalInputs = { [K in KernelName]: [OptionalKeys<KernelInputs<K>>] extends [never] ? never : K }[KernelName];

/**
 * The optional inputs of core's kernels, which a call may leave out (`biasActivation` without a bias passes `{ x }`).
 * Core declares input names only as types: this table is typed from them, so a kernel or optional input added to
 * KernelSpecs without its entry here, or a name here that is not one, does not compile.
 */
const OPTIONAL_INPUTS: { readonly [K in KernelsWithOptionalInputs]: { readonly [P in OptionalKeys<KernelInputs<K>>]: true } } = {
  BiasActivation: { bias: true },
  BiasActivationBackward: { bias: true },
  LayerNorm: { gamma: true, beta: true },
  LayerNormBackward: { gamma: true },
  CachedAttention: { newKeys: true, newValues: true },
  Linear: { bias: true, residual: true },
  LinearActivation: { bias: true },
  BsrLinear: { bias: true, residual: true },
  BsrLinearActivation: { bias: true },
  MultiTensorAdamUpdate: { copies: true, stepCounts: true, lrValue: true },
};

/** Configs whose inputsToSave were found to name inputs of their kernel: checked once, not on every call. */
const savedInputsChecked = new WeakSet<GradConfig>();

/**
 * Throws when `config.inputsToSave` names an input its kernel does not take (a misspelling saved nothing, and the
 * gradFunc then failed reading it in backward). A name the call holds, or an optional input of a core kernel, passes;
 * once all pass the verdict is kept, so the tape's record() pays one WeakSet lookup per call. A kernel outside core's
 * catalogue declares no inputs: a name its call leaves out may be an optional input, so it is not refused.
 */
export function checkSavedInputs(kernelName: string, config: GradConfig, inputs: Readonly<Record<string, unknown>>): void {
  if (savedInputsChecked.has(config)) return;
  if (config.inputsToSave && kernelDeclaration(kernelName)) {
    const optional: Readonly<Record<string, true>> = Object.hasOwn(OPTIONAL_INPUTS, kernelName) ? OPTIONAL_INPUTS[kernelName as KernelsWithOptionalInputs] : {};
    for (const key of config.inputsToSave) {
      if (Object.hasOwn(inputs, key) || Object.hasOwn(optional, key)) continue;
      const names = [...Object.keys(inputs), ...Object.keys(optional).filter((name) => !Object.hasOwn(inputs, name)).map((name) => `${name}?`)];
      throw new AutogradError(
        `${kernelName}: its registered gradient saves input '${key}', which ${kernelName} does not take (its inputs: ${names.join(", ")}); fix inputsToSave in registerGradient('${kernelName}', ...)`,
      );
    }
  }
  savedInputsChecked.add(config);
}

/** The gradient registered for a kernel, if any. */
export function getGradient(kernelName: string): GradConfig | undefined {
  return registry.get(kernelName);
}

/** Kernel names that have a gradient, in registration order. */
export function listGradients(): string[] {
  return [...registry.keys()];
}
