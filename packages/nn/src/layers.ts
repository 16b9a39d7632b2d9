import { detach, noGrad, tracksGrad } from "@blocksparse/autograd";
import {
  type Activation,
  add,
  assertBoolean,
  DTypeError,
  engine,
  equal,
  formatArg,
  formatShape,
  type GeluApproximate,
  gather,
  gelu,
  IndexError,
  layerNorm,
  mul,
  ones,
  optionsArg,
  relu,
  reshape,
  ShapeError,
  shapesEqual,
  Tensor,
  tensorOn,
  tidy,
  ValueError,
  where,
  zeros,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { childSeeds, normal } from "./init";
import { checkFeatures, checkTensorInput, slotValue } from "./linear";
import { Module } from "./module";
import { Parameter } from "./parameter";

export interface EmbeddingOptions {
  seed?: number;
  /**
   * A row that no lookup sends a gradient to and a fresh init zeroes (torch's padding_idx): its value is read as it
   * is (a loaded weight keeps its own row). Negative counts from the end; null (the default) is none.
   */
  paddingIdx?: number | null;
}

/** A lookup table: int32 indices [...] -> rows of `weight` [..., embeddingDim]. weight ~ N(0, 1), as PyTorch. */
export class Embedding extends Module {
  static override readonly parameterSlots = { weight: false };
  readonly numEmbeddings: number;
  readonly embeddingDim: number;
  /** The padding row, in [0, numEmbeddings), or null. */
  readonly paddingIdx: number | null;
  weight: Parameter;

  constructor(numEmbeddings: number, embeddingDim: number, options: EmbeddingOptions = {}) {
    super();
    checkFeatures("Embedding", "numEmbeddings", numEmbeddings);
    checkFeatures("Embedding", "embeddingDim", embeddingDim);
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    const { seed, paddingIdx = null } = optionsArg("Embedding", options, ["seed", "paddingIdx"]);
    if (paddingIdx !== null && !(paddingIdx >= -numEmbeddings && paddingIdx < numEmbeddings && Number.isInteger(paddingIdx))) {
      throw new (Number.isInteger(paddingIdx) ? IndexError : ValueError)(`Embedding: paddingIdx must be an integer in [-${numEmbeddings}, ${numEmbeddings}), got ${formatArg(paddingIdx)}`);
    }
    this.paddingIdx = paddingIdx === null ? null : (paddingIdx + numEmbeddings) % numEmbeddings;
    this.weight = new Parameter(normal([numEmbeddings, embeddingDim], childSeeds("Embedding", seed, 1)[0]));
    this.zeroPaddingRow();
  }

  /** Zeroes weight's padding row (nothing without paddingIdx), as a fresh init leaves it: for initialisers that replace the weight. */
  zeroPaddingRow(): void {
    const { numEmbeddings, paddingIdx, weight } = this;
    if (paddingIdx === null) return;
    const isPadding = new Int32Array(numEmbeddings);
    isPadding[paddingIdx] = 1;
    noGrad(() => tidy(() => weight.assign(where(tensorOn(weight.value.backend, isPadding, [numEmbeddings, 1], "int32"), 0, weight.value))));
  }

  forward(indices: Tensor): Tensor {
    checkTensorInput(this.label, indices);
    if (indices.dtype !== "int32") throw new DTypeError(`${this.label}: indices have dtype ${indices.dtype}, expected int32`);
    try {
      return tidy(() => {
        const rows = gather(slotValue(this, "weight", false) as Tensor, indices, 0);
        if (this.paddingIdx === null || !tracksGrad(rows)) return rows;
        // The padding positions read a detached copy of their rows, so their gradient stops here (on any backend, captured too).
        return where(equal(reshape(indices, [...indices.shape, 1]), this.paddingIdx), detach(rows), rows);
      });
    } catch (error) {
      // Renamed, not checked before: a host backend's gather finds the index as it reads it; a device reports it at its next read.
      throw error instanceof IndexError ? new IndexError(`${this.label} of ${this.numEmbeddings} embeddings: ${error.message}`) : error;
    }
  }

  protected override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}${this.paddingIdx === null ? "" : `, paddingIdx=${this.paddingIdx}`}`;
  }
}

export interface LayerNormOptions {
  /** Added to the variance (default 1e-5). */
  eps?: number;
  /** Learn a scale (ones) and a shift (zeros) (default true). */
  elementwiseAffine?: boolean;
}

/**
 * Normalises the last dim (of size `normalizedShape`) to zero mean and unit variance, then scales and shifts.
 * `normalizedShape` is a size or, as torch's, a list of one (`[768]`); torch's longer lists (several trailing dims
 * normalised together) are refused.
 */
export class LayerNorm extends Module {
  readonly normalizedShape: number;
  readonly eps: number;
  static override readonly parameterSlots = { weight: true, bias: true };
  weight: Parameter | null;
  bias: Parameter | null;

  constructor(normalizedShape: number | readonly [number], options: LayerNormOptions = {}) {
    super();
    // torch's LayerNorm(8) and LayerNorm([8]) are one layer.
    const sizes = [normalizedShape].flat();
    if (sizes.length !== 1) throw new ValueError(`LayerNorm: normalizedShape must be one dim (n or [n]), got ${formatShape(sizes)}`);
    const size = sizes[0];
    checkFeatures("LayerNorm", "normalizedShape", size);
    const { eps = 1e-5, elementwiseAffine = true } = optionsArg("LayerNorm", options, ["eps", "elementwiseAffine"]);
    if (!Number.isFinite(eps) || eps < 0) throw new ValueError(`LayerNorm: eps must be a finite number >= 0, got ${formatArg(eps)}`);
    assertBoolean("LayerNorm", "elementwiseAffine", elementwiseAffine);
    this.normalizedShape = size;
    this.eps = eps;
    this.weight = elementwiseAffine ? new Parameter(ones([size])) : null;
    this.bias = elementwiseAffine ? new Parameter(zeros([size])) : null;
  }

  forward(x: Tensor): Tensor {
    checkTensorInput(this.label, x);
    if (x.rank === 0 || x.shape[x.rank - 1] !== this.normalizedShape) {
      throw new ShapeError(`${this.label}: input has shape [${x.shape}], expected a last dim of ${this.normalizedShape}`);
    }
    return layerNorm(x, slotValue(this, "weight", true), slotValue(this, "bias", true), this.eps);
  }

  protected override extraRepr(): string {
    return `${this.normalizedShape}, eps=${this.eps}, elementwiseAffine=${this.weight !== null}`;
  }
}

/**
 * In training mode, zeroes each element with probability p and scales the rest by
 * 1 / (1 - p); in eval mode (or p = 0), the identity. p = 1 zeroes every element (x * 0, as torch's). The mask comes
 * from the module's own seeded generator.
 */
export class Dropout extends Module {
  readonly p: number;
  #random: SeededRandom;

  constructor(p = 0.5, options: { seed?: number } = {}) {
    super();
    if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw new ValueError(`Dropout: p must be in [0, 1], got ${formatArg(p)}`);
    this.p = p;
    this.#random = new SeededRandom(childSeeds("Dropout", optionsArg("Dropout", options, ["seed"]).seed, 1)[0]);
  }

  /** Whether forward drops anything: training with p > 0 (otherwise it returns its input unchanged, as a clone). */
  get active(): boolean {
    return this.training && this.p > 0;
  }

  forward(x: Tensor): Tensor {
    checkTensorInput(this.label, x);
    if (!this.active) return x.clone();
    if (!x.isFloat) throw new DTypeError(`${this.label}: input has dtype ${x.dtype}, expected a float dtype`);
    // Every element dropped: no mask to draw, and 1 / (1 - p) would be Infinity.
    if (this.p === 1) return tidy(() => mul(x, 0));
    const scale = 1 / (1 - this.p);
    const mask = new Float32Array(x.size);
    for (let i = 0; i < mask.length; i++) mask[i] = this.#random.next() < this.p ? 0 : scale;
    return tidy(() => mul(x, tensorOn(x.backend, mask, x.shape, x.dtype)));
  }

  protected override extraRepr(): string {
    return `p=${this.p}`;
  }
}

export class ReLU extends Module {
  /** The fused kernels' name for it. */
  readonly activation: Activation = "relu";

  forward(x: Tensor): Tensor {
    checkTensorInput(this.label, x);
    return relu(x);
  }
}

/** GELU, exact (erf) by default or with the tanh approximation. */
export class GELU extends Module {
  constructor(readonly approximate: GeluApproximate = "none") {
    super();
    // Checked here: fused after a Linear (Sequential, MLP), any other value would run as the exact GELU.
    if (approximate !== "none" && approximate !== "tanh") throw new ValueError(`GELU: approximate must be "none" or "tanh", got ${JSON.stringify(approximate)}`);
  }

  /** The fused kernels' name for it. */
  get activation(): Activation {
    return this.approximate === "tanh" ? "gelu_tanh" : "gelu";
  }

  forward(x: Tensor): Tensor {
    checkTensorInput(this.label, x);
    return gelu(x, this.approximate);
  }

  protected override extraRepr(): string {
    return this.approximate === "none" ? "" : `approximate=${this.approximate}`;
  }
}

/** A layer that can apply an activation in its own epilogue (Linear, BlockSparseLinear). */
interface FusesActivation {
  forwardActivation(x: Tensor, activation: Activation): Tensor;
}

// Only a class that defines forwardActivation itself: a subclass that changes forward and inherits it is not
// fused, nor an instance whose forward was replaced on it (SparseOptimizer's gradient recording, a user's hook).
function fusesActivation(module: Module): module is Module & FusesActivation {
  return Object.hasOwn(Object.getPrototypeOf(module), "forwardActivation") && !Object.hasOwn(module, "forward");
}

/** The activation a GELU or ReLU module applies (not a subclass, whose forward may differ), or null. */
function activationOf(module: Module): Activation | null {
  return module.constructor === GELU || module.constructor === ReLU ? (module as GELU | ReLU).activation : null;
}

/**
 * `activation.forward(layer.forward(x))`, fused when `layer` is a Linear or BlockSparseLinear and
 * `activation` a GELU or ReLU: the bias and the activation then run as one kernel, and their
 * gradients as one more (no separate bias-add, activation or bias-gradient pass). Any other pair
 * runs as written.
 */
export function forwardLinearActivation(layer: Module, activation: Module, x: Tensor): Tensor {
  const fused = activationOf(activation);
  if (fused !== null && fusesActivation(layer)) return layer.forwardActivation(x, fused);
  return tidy(() => activation.forward(layer.forward(x)));
}

/**
 * Whether `module` is a Dropout that drops nothing now: the identity, which the fused paths leave out (any other module
 * runs, and so does a Dropout whose forward is not Dropout's own: a subclass's, as Monte Carlo dropout's in eval).
 */
export function dropsNothing(module: Module): boolean {
  return module instanceof Dropout && module.forward === Dropout.prototype.forward && !module.active;
}

interface FusesResidual {
  forwardResidual(x: Tensor, residual: Tensor): Tensor;
}

function fusesResidual(module: Module): module is Module & FusesResidual {
  return Object.hasOwn(Object.getPrototypeOf(module), "forwardResidual") && !Object.hasOwn(module, "forward");
}

/**
 * `residual + dropout(layer(x))`, a residual connection around a layer: one kernel (the addend in the product's
 * epilogue) where the layer is a Linear and the dropout a Dropout that drops nothing (eval, or p = 0); otherwise the
 * layer, the dropout (any module in its place) and an add. Without a residual, `dropout(layer(x))`.
 */
export function forwardResidual(layer: Module, dropout: Module, x: Tensor, residual?: Tensor): Tensor {
  if (residual == null) return tidy(() => dropout.forward(layer.forward(x)));
  // The layer's name in errors, as its own forward gives it ("Linear(mlp.fc2)"): Module's label is protected.
  const { label } = layer as unknown as { label: string };
  if (!(residual instanceof Tensor)) throw new ValueError(`${label}: residual must be a Tensor, got ${formatArg(residual)}`);
  if (dropsNothing(dropout) && fusesResidual(layer)) return layer.forwardResidual(x, residual);
  return tidy(() => {
    const branch = dropout.forward(layer.forward(x));
    // The residual has the output's shape, as the fused kernel requires: add would broadcast a [d] or [1, T, d] one.
    if (!shapesEqual(residual.shape, branch.shape)) {
      throw new ShapeError(`${label}: residual has shape ${formatShape(residual.shape)}, expected the output's ${formatShape(branch.shape)}`);
    }
    return add(residual, branch);
  });
}

/**
 * Runs its modules in order, each on the previous one's output. Children are named "0", "1", ...
 * A Linear or BlockSparseLinear followed by GELU or ReLU runs fused (forwardLinearActivation).
 */
export class Sequential extends Module {
  constructor(...modules: Module[]) {
    super();
    modules.forEach((module, i) => {
      if (!(module instanceof Module)) throw new ValueError(`Sequential: argument ${i} is not a Module`);
      this.registerModule(String(i), module);
    });
  }

  get length(): number {
    return this.childSlots().length;
  }

  /** The i-th module (negative counts from the end). */
  at(index: number): Module {
    const children = this.childSlots().map(([, module]) => module);
    // Array's at() would truncate 1.5 to 1 and read NaN, undefined or "x" as 0.
    if (!Number.isInteger(index)) throw new ValueError(`Sequential.at: index must be an integer, got ${formatArg(index)}`);
    const module = children.at(index);
    if (module === undefined) throw new ValueError(`Sequential.at: index ${index} is out of range for ${children.length} modules`);
    return module;
  }

  forward(x: Tensor): Tensor {
    checkTensorInput(this.label, x);
    const children = this.childSlots().map(([, module]) => module);
    // A scope of its own: an output made in it is freed once the next module has read it (all of them when a module
    // throws), while one a module holds (a parameter's value, a kept cache) or the input is not this forward's to free.
    return tidy(() => {
      let out = x;
      for (let i = 0; i < children.length; i++) {
        const module = children[i];
        const following = children[i + 1];
        const fuse = following !== undefined && activationOf(following) !== null && fusesActivation(module);
        const next = fuse ? forwardLinearActivation(module, following, out) : module.forward(out);
        if (fuse) i++;
        if (next !== out && engine.ownedByScope(out)) out.dispose();
        out = next;
      }
      return out === x ? x.clone() : out;
    });
  }
}

/**
 * Holds modules by index ("0", "1", ...) so that they are registered (a plain array of
 * modules is not); has no forward of its own, as torch.nn.ModuleList.
 */
export class ModuleList extends Module {
  constructor(modules: Iterable<Module> = []) {
    super();
    // A Module or null (torch's ModuleList(layer)) was a TypeError from the loop.
    if (typeof (modules as Partial<Iterable<Module>> | null)?.[Symbol.iterator] !== "function") {
      throw new ValueError(`ModuleList: modules must be an iterable of Modules, got ${formatArg(modules)}`);
    }
    for (const module of modules) this.append(module);
  }

  get length(): number {
    return this.childSlots().length;
  }

  /** Adds `module` at the end. */
  append(module: Module): this {
    if (!(module instanceof Module)) throw new ValueError(`ModuleList.append: item ${this.length} is not a Module`);
    return this.registerModule(String(this.length), module);
  }

  /** The i-th module (negative counts from the end). */
  at(index: number): Module {
    const children = this.childSlots().map(([, module]) => module);
    // Array's at() would truncate 1.5 to 1 and read NaN, undefined or "x" as 0.
    if (!Number.isInteger(index)) throw new ValueError(`ModuleList.at: index must be an integer, got ${formatArg(index)}`);
    const module = children.at(index);
    if (module === undefined) throw new ValueError(`ModuleList.at: index ${index} is out of range for ${children.length} modules`);
    return module;
  }

  [Symbol.iterator](): Iterator<Module> {
    return this.childSlots().map(([, module]) => module)[Symbol.iterator]();
  }

  forward(): Tensor {
    throw new ValueError(`${this.label}: a ModuleList has no forward; call its modules`);
  }
}

/** What ModuleDict's constructor and update take: a ModuleDict, a Map, an object of key to module, or [key, module] pairs. */
export type ModuleDictInput = ModuleDict | ReadonlyMap<string, Module> | Readonly<Record<string, Module>> | Iterable<readonly [string, Module]>;

/** A value for a message: a module by its class ("ReLU"), anything else as formatArg. */
function describeValue(value: unknown): string {
  return value instanceof Module ? value.constructor.name : formatArg(value);
}

/**
 * Holds modules by string key, in insertion order, so that they are registered (a plain object or Map of modules is
 * not), as torch.nn.ModuleDict: `parameters()` and `stateDict()` name them "<key>.weight", and a model holding one
 * under `heads` names them "heads.<key>.weight". Map-like: get, set, delete, has, keys, values, entries, size,
 * iteration over [key, module]; update and pop as torch's. Replacing a key keeps its place. A key must be a
 * non-empty string without "." that is not a property of the ModuleDict ("train", "forward", "size"). No forward of
 * its own.
 */
export class ModuleDict extends Module {
  /** The keys in insertion order (a key stays where it was first set; see #keys for modules assigned directly). */
  #order: string[] = [];

  constructor(modules: ModuleDictInput = []) {
    super();
    this.#update("ModuleDict", modules);
  }

  /** The keys of the modules held, in insertion order; a module assigned or removed as a plain property is followed too. */
  #keys(): string[] {
    const own = this as unknown as Record<string, unknown>;
    const live = this.#order.filter((key) => Object.hasOwn(own, key) && own[key] instanceof Module);
    const known = new Set(live);
    for (const key of Object.keys(own)) if (!known.has(key) && own[key] instanceof Module) live.push(key);
    this.#order = live;
    return live;
  }

  #held(where: string, key: unknown): Module | undefined {
    if (typeof key !== "string") throw new ValueError(`${where}: key must be a string, got ${formatArg(key)}`);
    const value = Object.hasOwn(this, key) ? (this as unknown as Record<string, unknown>)[key] : undefined;
    return value instanceof Module ? value : undefined;
  }

  /** Refuses a key torch's ModuleDict refuses (and one that would overwrite a property of this object). */
  #checkKey(where: string, key: unknown): asserts key is string {
    if (typeof key !== "string") throw new ValueError(`${where}: key must be a string, got ${formatArg(key)}`);
    if (key === "") throw new ValueError(`${where}: key must not be empty`);
    if (key.includes(".")) throw new ValueError(`${where}: key ${JSON.stringify(key)} must not contain "." (a module's name is a dotted path)`);
    if (key in this && this.#held(where, key) === undefined) {
      throw new ValueError(`${where}: key ${JSON.stringify(key)} would shadow ${this.constructor.name}'s property ${JSON.stringify(key)}; choose another key`);
    }
  }

  #update(where: string, modules: ModuleDictInput): void {
    let pairs: unknown[];
    if (modules instanceof ModuleDict || modules instanceof Map) {
      pairs = [...modules.entries()];
    } else if (modules !== null && typeof modules === "object" && typeof (modules as Partial<Iterable<unknown>>)[Symbol.iterator] === "function") {
      pairs = [...(modules as Iterable<unknown>)];
    } else if (modules !== null && typeof modules === "object" && [Object.prototype, null].includes(Object.getPrototypeOf(modules)) && !(modules instanceof Module)) {
      pairs = Object.entries(modules);
    } else {
      throw new ValueError(`${where}: expected a ModuleDict, a Map, an object of key to Module or [key, Module] pairs, got ${describeValue(modules)}`);
    }
    // Every pair is checked before any is set: a refused update leaves the dict as it was.
    const checked = pairs.map((pair, i): [string, Module] => {
      if (!Array.isArray(pair) || pair.length !== 2) throw new ValueError(`${where}: entry ${i} must be a [key, Module] pair, got ${describeValue(pair)}`);
      const [key, module] = pair as [unknown, unknown];
      this.#checkKey(where, key);
      if (!(module instanceof Module)) throw new ValueError(`${where}: the value for key ${JSON.stringify(key)} must be a Module, got ${describeValue(module)}`);
      return [key, module];
    });
    for (const [key, module] of checked) this.#set(key, module);
  }

  #set(key: string, module: Module): void {
    this.#keys();
    this.registerModule(key, module);
    if (!this.#order.includes(key)) this.#order.push(key);
  }

  /** The number of modules held (torch's len()). */
  get size(): number {
    return this.#keys().length;
  }

  /** The module under `key`, or undefined. */
  get(key: string): Module | undefined {
    return this.#held("ModuleDict.get", key);
  }

  /** Holds `module` under `key` (a key held already keeps its place, as torch's). */
  set(key: string, module: Module): this {
    this.#checkKey("ModuleDict.set", key);
    if (!(module instanceof Module)) throw new ValueError(`ModuleDict.set: the value for key ${JSON.stringify(key)} must be a Module, got ${describeValue(module)}`);
    this.#set(key, module);
    return this;
  }

  has(key: string): boolean {
    return this.#held("ModuleDict.has", key) !== undefined;
  }

  /** Removes the module under `key`; false when none was held. */
  delete(key: string): boolean {
    if (this.#held("ModuleDict.delete", key) === undefined) return false;
    delete (this as unknown as Record<string, unknown>)[key];
    this.#keys();
    return true;
  }

  /** Removes the module under `key` and returns it (undefined when none was held), as torch's pop. */
  pop(key: string): Module | undefined {
    const module = this.#held("ModuleDict.pop", key);
    if (module !== undefined) this.delete(key);
    return module;
  }

  /** Removes every module. */
  clear(): void {
    for (const key of this.#keys()) delete (this as unknown as Record<string, unknown>)[key];
    this.#order = [];
  }

  /** Sets each [key, module] of `modules` (a ModuleDict, a Map, an object or pairs), in order, as torch's update; all are checked first. */
  update(modules: ModuleDictInput): this {
    this.#update("ModuleDict.update", modules);
    return this;
  }

  keys(): string[] {
    return [...this.#keys()];
  }

  values(): Module[] {
    return this.childSlots().map(([, module]) => module);
  }

  entries(): [string, Module][] {
    return this.childSlots();
  }

  [Symbol.iterator](): Iterator<[string, Module]> {
    return this.entries()[Symbol.iterator]();
  }

  /** The modules held, in insertion order (not Object.keys order, which puts integer-like keys first). */
  override childSlots(): [string, Module][] {
    const own = this as unknown as Record<string, Module>;
    return this.#keys().map((key) => [key, own[key]]);
  }

  forward(): Tensor {
    throw new ValueError(`${this.label}: a ModuleDict has no forward; call its modules (get(key))`);
  }
}
