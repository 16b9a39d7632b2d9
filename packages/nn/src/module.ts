import { detach, noGrad } from "@blocksparse/autograd";
import { assertBoolean, cast, DTypeError, FLOAT_DTYPES, type FloatDType, formatArg, getBackendInstance, keep, listBackends, optionsArg, shapesEqual, Tensor, tidy, ValueError } from "@blocksparse/core";
import { StateDictError, type StateDictMismatch } from "./errors";
import { clearGrad, Parameter } from "./parameter";
import { BlockSparseWeight, describeEntry, type StateDict, type StateDictEntry } from "./state_dict";

export interface LoadStateDictOptions {
  /** Refuse missing and unexpected keys (default true). Entries that do not fit are refused either way. */
  strict?: boolean;
}

/** Where `Module.to` moves a model: a backend name, a floating-point dtype, or both. */
export interface ModuleTarget {
  backend?: string;
  dtype?: FloatDType;
}

function isFloatDTypeName(value: unknown): value is FloatDType {
  return typeof value === "string" && (FLOAT_DTYPES as readonly string[]).includes(value);
}

/**
 * A string `Module.to` takes for a dtype: ours and torch's sized names ("float64", "int64", "uint8", "float8_e4m3fn"), so
 * one this library lacks is refused as a dtype rather than looked up as a backend (torch casts to torch.float64 etc.).
 */
const DTYPE_NAME = /^(u?int|b?float|complex)\d/;
/** Other names users give dtypes (torch's module.half(), bf16 in configs): not backends, so the error says which dtype. */
const DTYPE_ALIASES: Record<string, FloatDType> = { half: "float16", fp16: "float16", f16: "float16", bf16: "bfloat16", float: "float32", fp32: "float32", f32: "float32", single: "float32" };

function checkTarget(target: ModuleTarget): ModuleTarget {
  if (target === null || typeof target !== "object") {
    throw new ValueError(`Module.to: expected a backend name, a dtype or { backend, dtype }, got ${formatArg(target)}`);
  }
  const { backend, dtype } = optionsArg("Module.to", target, ["backend", "dtype"]);
  if (backend !== undefined && typeof backend !== "string") throw new ValueError(`Module.to: backend must be a backend name, got ${formatArg(backend)}`);
  if (dtype !== undefined && !isFloatDTypeName(dtype)) {
    throw new DTypeError(`Module.to: dtype must be one of ${FLOAT_DTYPES.join(", ")}, got ${JSON.stringify(dtype)}`);
  }
  return { backend, dtype };
}

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

/**
 * The base of every layer and model, as in PyTorch: children and parameters are the
 * module's own properties holding a `Module` or a `Parameter` (in the order they were
 * assigned), so `this.fc1 = new Linear(4, 8)` registers `fc1`. Names are dotted paths,
 * "" for the root.
 */
export abstract class Module {
  /**
   * The parameter slots this class declares, each with whether null (no parameter) may stand there, e.g. Linear's
   * `{ weight: false, bias: true }`. parameters(), namedParameters(), stateDict(), loadStateDict() and functionalCall()
   * refuse anything but a Parameter, null or undefined in them, as torch refuses assigning a plain tensor to a
   * parameter: a Tensor there would silently be left out of the model's parameters, its optimizers and its checkpoints.
   */
  static readonly parameterSlots: Readonly<Record<string, boolean>> = Object.freeze({});

  /** Training mode (Dropout is active); set with train() / eval(). */
  training = true;
  /** The dotted name this module last had in a walk from a root (for error messages). */
  #path = "";

  abstract forward(...inputs: unknown[]): Tensor;

  /** Adds (or replaces) a child under `name`, like assigning `this[name] = module`. */
  registerModule(name: string, module: Module): this {
    checkSlot(this, "registerModule", name);
    if (!(module instanceof Module)) throw new ValueError(`registerModule: '${name}' must be a Module`);
    (this as Record<string, unknown>)[name] = module;
    return this;
  }

  /** Adds (or replaces) a parameter under `name`; null leaves the slot empty (like an absent bias). */
  registerParameter(name: string, parameter: Parameter | null): this {
    checkSlot(this, "registerParameter", name);
    if (parameter !== null && !(parameter instanceof Parameter)) throw new ValueError(`registerParameter: '${name}' must be a Parameter or null`);
    (this as Record<string, unknown>)[name] = parameter;
    return this;
  }

  /** The descendant at a dotted name ("encoder.fc1"; "" is this module); throws naming the missing part. */
  getSubmodule(dottedName: string): Module {
    if (typeof dottedName !== "string") throw new ValueError("getSubmodule: name must be a string");
    let module: Module = this;
    if (dottedName === "") return module;
    const parts = dottedName.split(".");
    parts.forEach((part, i) => {
      const child = (module as unknown as Record<string, unknown>)[part];
      if (!(child instanceof Module)) {
        const where = i === 0 ? "the model" : `'${parts.slice(0, i).join(".")}'`;
        throw new ValueError(`getSubmodule: ${where} has no child module '${part}' (looking up '${dottedName}')`);
      }
      module = child;
    });
    return module;
  }

  /**
   * Replaces the descendant at a dotted name ("encoder.fc1") with `module`, as PyTorch's
   * set_submodule: the parent must exist and already hold a module under the last name.
   */
  setSubmodule(dottedName: string, module: Module): this {
    if (typeof dottedName !== "string" || dottedName === "") throw new ValueError("setSubmodule: name must be a non-empty dotted name");
    if (!(module instanceof Module)) throw new ValueError(`setSubmodule: the replacement for '${dottedName}' must be a Module`);
    const parts = dottedName.split(".");
    const last = parts.pop() as string;
    const parent = this.getSubmodule(parts.join("."));
    if (!((parent as unknown as Record<string, unknown>)[last] instanceof Module)) {
      throw new ValueError(`setSubmodule: '${dottedName}' is not a child module, so there is nothing to replace`);
    }
    parent.registerModule(last, module);
    return this;
  }

  /**
   * Every property holding a child module, by name, in order: a child held under two names is listed under each, as
   * torch's `_modules`. Sequential's forward, ModuleList, ModuleDict, stateDict() and toString() walk this.
   */
  childSlots(): [string, Module][] {
    // Every forward of a container walks this: no [key, value] pair is made for a property that is not a module.
    const slots: [string, Module][] = [];
    for (const key of Object.keys(this)) {
      const value = (this as Record<string, unknown>)[key];
      if (value instanceof Module) slots.push([key, value]);
    }
    return slots;
  }

  /** Direct children, each once under its first name, as torch's named_children (childSlots() lists every name). */
  namedChildren(): [string, Module][] {
    const seen = new Set<Module>();
    return this.childSlots().filter(([, child]) => !seen.has(child) && !!seen.add(child));
  }

  /** Direct children, each once, as torch's children(). */
  children(): Module[] {
    return this.namedChildren().map(([, m]) => m);
  }

  /** This module ("") and every descendant, depth first, each once. */
  namedModules(): [string, Module][] {
    const seen = new Set<Module>();
    const out: [string, Module][] = [];
    const visit = (module: Module, path: string): void => {
      if (seen.has(module)) return;
      seen.add(module);
      module.#path = path;
      out.push([path, module]);
      for (const [name, child] of module.namedChildren()) visit(child, path === "" ? name : `${path}.${name}`);
    };
    visit(this, "");
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  /**
   * This module's own parameters (not its children's), by property name; empty slots skipped. It lists what the module
   * holds and refuses nothing; the tree's walks (namedParameters, stateDict, ...) check the declared parameterSlots.
   */
  namedOwnParameters(): [string, Parameter][] {
    return Object.entries(this).filter((entry): entry is [string, Parameter] => entry[1] instanceof Parameter);
  }

  /** Every parameter of the tree, each once, with dotted names ("fc1.weight"). */
  namedParameters(): [string, Parameter][] {
    const seen = new Set<Parameter>();
    const out: [string, Parameter][] = [];
    for (const [path, module] of this.namedModules()) {
      checkParameterSlots(module, path);
      for (const [name, parameter] of module.namedOwnParameters()) {
        if (seen.has(parameter)) continue;
        seen.add(parameter);
        out.push([path === "" ? name : `${path}.${name}`, parameter]);
      }
    }
    return out;
  }

  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /**
   * Calls `fn` on every module of the tree, each once, children before their parent and this module last, as torch's
   * `apply` (`model.apply(initWeights)`); returns this module.
   */
  apply(fn: (module: Module) => void): this {
    if (typeof fn !== "function") throw new ValueError(`${this.label}.apply: fn must be a function of a module, got ${formatArg(fn)}`);
    const seen = new Set<Module>();
    const visit = (module: Module): void => {
      if (seen.has(module)) return;
      seen.add(module);
      for (const child of module.children()) visit(child);
      fn(module);
    };
    visit(this);
    return this;
  }

  /**
   * Sets training mode on this module, then calls each child's train(mode), as torch's: a child that overrides train
   * (to keep a part frozen in eval) is obeyed when its parent's mode is set. A module held by its own descendant is not
   * entered again.
   */
  train(mode = true): this {
    assertBoolean("train", "mode", mode);
    if (settingMode.has(this)) return this;
    settingMode.add(this);
    try {
      this.training = mode;
      for (const child of this.children()) child.train(mode);
    } finally {
      settingMode.delete(this);
    }
    return this;
  }

  /** Evaluation mode (Dropout off). */
  eval(): this {
    return this.train(false);
  }

  /**
   * Moves every parameter to a backend and/or casts every floating-point parameter to a
   * dtype, as torch's `module.to`: `to("cuda")`, `to("bfloat16")`, `to({ backend, dtype })`.
   * A string is a dtype when it names one ("float32", "float16", "bfloat16"; "int32" and the dtypes this library
   * lacks, "float64", "int64", ..., are refused), else a backend. Each parameter's gradient goes with it (a
   * parameter without one stays so).
   * Optimizer state follows at its next step; an optimizer keeps float32 master
   * copies of float16/bfloat16 parameters (see Optimizer's `masterWeights`).
   */
  to(target: string | ModuleTarget): this {
    // A dtype's name we cannot cast to ("int32", as torch refuses torch.int32; "float64", which we lack) is refused as a dtype.
    const { backend, dtype } = typeof target === "string" ? (DTYPE_NAME.test(target) ? checkTarget({ dtype: target as FloatDType }) : { backend: target }) : checkTarget(target);
    if (typeof target === "string" && Object.hasOwn(DTYPE_ALIASES, target.toLowerCase()) && !listBackends().includes(target)) {
      // Looked up as a backend, "half" was "Backend 'half' is not registered", which does not say what to write instead.
      throw new DTypeError(`Module.to: "${target}" is not a dtype's name here: write "${DTYPE_ALIASES[target.toLowerCase()]}" (dtypes: ${FLOAT_DTYPES.join(", ")})`);
    }
    const backendInstance = backend === undefined ? undefined : getBackendInstance(backend);
    // The tensor on the target (`t` itself when it is there already); a moved copy cast after is freed.
    const convert = (t: Tensor): Tensor => {
      let value = t;
      if (backendInstance !== undefined && value.backend !== backendInstance) value = value.to(backendInstance.name);
      if (dtype !== undefined && value.isFloat && value.dtype !== dtype) {
        const moved = value;
        value = tidy(() => cast(moved, dtype));
        if (moved !== t) moved.dispose();
      }
      return value;
    };
    noGrad(() => {
      for (const parameter of this.parameters()) {
        // The gradient goes along, as torch's: taken off first, since the value setter frees the old value's gradient.
        const grad = parameter.grad;
        parameter.grad = null;
        const next = grad && convert(grad);
        if (next !== grad) grad?.dispose();
        parameter.value = convert(parameter.value);
        parameter.grad = next && keep(next);
      }
    });
    return this;
  }

  /** The dtype of the floating-point parameters when they share one, else null (also for a module without any). */
  get dtype(): FloatDType | null {
    const dtypes = new Set(this.parameters().map((p) => p.dtype).filter(isFloatDTypeName));
    return dtypes.size === 1 ? ([...dtypes][0] as FloatDType) : null;
  }

  /** Clears every parameter's gradient; `setToNone: false` leaves zeros instead, as torch's zero_grad(set_to_none=False). */
  zeroGrad(setToNone = true): void {
    assertBoolean(`${this.constructor.name}.zeroGrad`, "setToNone", setToNone);
    for (const parameter of this.parameters()) clearGrad(parameter, setToNone);
  }

  /**
   * Every entry of the tree by dotted name: dense parameters as tensors, block-sparse
   * weights as BlockSparseWeight. Tensors share the parameters' buffers (no copy); later
   * updates of the model do not change them. As torch's, a parameter or module held in two places
   * (tied weights, `this.b = this.a`) has an entry under each name.
   */
  stateDict(): StateDict {
    const out: StateDict = new Map();
    for (const [path, module] of statePaths(this)) {
      for (const [name, entry] of module.ownStateEntries()) out.set(path === "" ? name : `${path}.${name}`, entry);
    }
    return out;
  }

  /**
   * Loads entries by dotted name. Everything is checked before anything changes: with
   * `strict` (default), missing and unexpected keys throw a StateDictError listing them;
   * entries whose shape does not fit throw in any case. Values are cast to the parameter's
   * dtype and moved to its backend. The state dict's tensors stay the caller's.
   */
  loadStateDict(stateDict: StateDict | Record<string, StateDictEntry>, options: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = optionsArg(`${this.label}.loadStateDict`, options, ["strict"]).strict ?? true;
    // A truthy non-boolean ("false", 0 read as torch's False) would load strictly, or the other way round.
    assertBoolean(`${this.label}.loadStateDict`, "strict", strict);
    // Anything else (null, a Promise not awaited, an array) read as no entries: a non-strict load then loaded nothing, silently.
    const proto = stateDict instanceof Map || stateDict === null || typeof stateDict !== "object" ? undefined : Object.getPrototypeOf(stateDict);
    if (!(stateDict instanceof Map || proto === Object.prototype || proto === null)) {
      throw new ValueError(`${this.label}.loadStateDict: expected a state dict (a Map or an object of name to entry), got ${formatArg(stateDict)}`);
    }
    const entries: StateDict = stateDict instanceof Map ? stateDict : new Map(Object.entries(stateDict));
    const targets = new Map<string, [Module, string]>();
    for (const [path, module] of statePaths(this)) {
      for (const name of module.ownStateKeys()) targets.set(path === "" ? name : `${path}.${name}`, [module, name]);
    }
    const missingKeys = [...targets.keys()].filter((key) => !entries.has(key));
    const unexpectedKeys = [...entries.keys()].filter((key) => !targets.has(key));
    const mismatches: StateDictMismatch[] = [];
    for (const [key, entry] of entries) {
      const target = targets.get(key);
      if (!target) continue;
      if (!(entry instanceof Tensor || entry instanceof BlockSparseWeight)) {
        mismatches.push({ key, expected: "a Tensor or a BlockSparseWeight", got: typeof entry, reason: "type" });
        continue;
      }
      const values = entry instanceof BlockSparseWeight ? entry.values : entry;
      if (values.isDisposed) {
        mismatches.push({ key, expected: "a live tensor", got: "a disposed tensor", reason: "type" });
        continue;
      }
      const expected = target[0].checkOwnEntry(target[1], entry);
      const parameter = (target[0] as unknown as Record<string, unknown>)[target[1]];
      if (expected !== null) {
        // A block-sparse entry of a dense parameter's shape differs in layout only: the model was not patched as the saved one was.
        const layout = entry instanceof BlockSparseWeight && parameter instanceof Parameter && parameter.pattern === null && shapesEqual(entry.shape, parameter.shape);
        mismatches.push(layout ? { key, expected: `dense ${describeEntry(parameter.value)}`, got: describeEntry(entry), reason: "layout" } : { key, expected, got: describeEntry(entry) });
        continue;
      }
      // Float entries are cast to the parameter's dtype; an int32 one in a float slot is not a weight.
      if (parameter instanceof Parameter && parameter.value.isFloat !== values.isFloat) {
        mismatches.push({ key, expected: `dtype ${parameter.dtype}`, got: `dtype ${values.dtype}`, reason: "dtype" });
      }
    }
    if (mismatches.length > 0 || (strict && (missingKeys.length > 0 || unexpectedKeys.length > 0))) {
      throw new StateDictError(strict ? missingKeys : [], strict ? unexpectedKeys : [], mismatches);
    }
    noGrad(() => {
      for (const [key, [module, name]] of targets) {
        const entry = entries.get(key);
        if (entry !== undefined) module.loadOwnEntry(name, entry);
      }
    });
    return { missingKeys, unexpectedKeys };
  }

  /** This module's own state entries (not its children's). Override with the three methods below. */
  protected ownStateEntries(): [string, StateDictEntry][] {
    return this.namedOwnParameters().map(([name, parameter]) => [name, detach(parameter.value)]);
  }

  /** The keys ownStateEntries() gives, without making tensors. */
  protected ownStateKeys(): string[] {
    return this.namedOwnParameters().map(([name]) => name);
  }

  /** null when `entry` fits own entry `name`; otherwise what would fit, for the error message. */
  protected checkOwnEntry(name: string, entry: StateDictEntry): string | null {
    const parameter = (this as Record<string, unknown>)[name];
    if (!(parameter instanceof Parameter)) return "no such parameter";
    // A block-sparse weight would load densified, its pattern lost (a model not patched as the saved one was).
    if (!(entry instanceof BlockSparseWeight) && shapesEqual(entry.shape, parameter.shape)) return null;
    return `${describeEntry(parameter.value)}`;
  }

  /** Loads a checked entry into own entry `name`. */
  protected loadOwnEntry(name: string, entry: StateDictEntry): void {
    const parameter = (this as Record<string, unknown>)[name] as Parameter;
    const loaded = denseOn(entry as Tensor, parameter.value);
    parameter.assign(loaded);
    loaded.dispose(); // the parameter now holds the buffer
  }

  /** Extra text for toString() (e.g. "in=4, out=8"). */
  protected extraRepr(): string {
    return "";
  }

  /** "BlockSparseLinear(encoder.fc1)" once a walk named it, else "BlockSparseLinear": for error messages. */
  protected get label(): string {
    return labelAt(this, this.#path);
  }

  /**
   * PyTorch-style tree: the class, its extra text, and its children indented. A module held by one of its own
   * descendants (a child's reference back to its parent) is printed there as `Model(...)`, not entered again.
   */
  toString(): string {
    // A back-reference was entered again and again, until a RangeError (the stack) ended the print.
    if (printing.has(this)) return `${this.constructor.name}(...)`;
    printing.add(this);
    try {
      const children = this.childSlots();
      const head = `${this.constructor.name}(${this.extraRepr()}`;
      if (children.length === 0) return `${head})`;
      const lines = children.map(([name, child]) => `  (${name}): ${child.toString().split("\n").join("\n  ")}`);
      return `${head}\n${lines.join("\n")}\n)`;
    } finally {
      printing.delete(this);
    }
  }
}

/**
 * Runs `fn` with some parameters of `module` replaced by the given tensors (by dotted name,
 * same shapes), then puts the parameters' own tensors back; like torch.func.functional_call.
 * Gradients flow into the given tensors, so `gradcheck` can differentiate a whole model.
 */
export function functionalCall<T>(module: Module, tensors: Map<string, Tensor> | Record<string, Tensor>, fn: () => T): T {
  // Checked here: a missing fn was a TypeError from inside the swap, null tensors one from Object.entries.
  if (!(module instanceof Module)) throw new ValueError(`functionalCall: module must be a Module, got ${formatArg(module)}`);
  if (tensors === null || typeof tensors !== "object") throw new ValueError(`functionalCall: tensors must be a Map or an object of name to Tensor, got ${formatArg(tensors)}`);
  if (typeof fn !== "function") throw new ValueError(`functionalCall: fn must be a function that runs the module (() => module.forward(x)), got ${formatArg(fn)}`);
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  // Every name of every parameter, as torch's: a tied parameter (or one in a module held twice) answers to each of its
  // names, and replacing it under one replaces it everywhere (torch's tie_weights).
  const byName = new Map<string, Parameter>();
  for (const [path, owner] of statePaths(module)) {
    for (const [name, parameter] of owner.namedOwnParameters()) byName.set(path === "" ? name : `${path}.${name}`, parameter);
  }
  const given = new Map<Parameter, [string, Tensor]>();
  for (const [name, t] of entries) {
    const parameter = byName.get(name);
    if (!parameter) throw new ValueError(`functionalCall: the module has no parameter '${name}' (it has: ${[...byName.keys()].join(", ")})`);
    if (!(t instanceof Tensor) || !shapesEqual(t.shape, parameter.shape)) {
      throw new ValueError(`functionalCall: '${name}' must be a Tensor of shape [${parameter.shape}]`);
    }
    const other = given.get(parameter);
    if (other !== undefined && other[1] !== t) {
      throw new ValueError(`functionalCall: '${other[0]}' and '${name}' name one tied parameter: give one tensor`);
    }
    given.set(parameter, [name, t]);
  }
  const previous = [...given].map(([parameter, [, t]]) => [parameter, Parameter.exchange(parameter, t)] as const);
  try {
    return fn();
  } finally {
    for (const [parameter, t] of previous.reverse()) Parameter.exchange(parameter, t);
  }
}

/** The modules whose train() is running (a cycle of modules, or a child's override calling its parent's, ends there). */
const settingMode = new Set<Module>();

/** The modules whose toString() is running: a module held by its own descendant is printed there without its children. */
const printing = new Set<Module>();

/** "Linear(encoder.fc1)" for a module at `path`, "Linear" for the root: how errors name a layer. */
function labelAt(module: Module, path: string): string {
  return path === "" ? module.constructor.name : `${module.constructor.name}(${path})`;
}

/** The error for `value` standing in the parameter slot `name` of the layer `label` (optional: null may stand there). */
export function notParameterError(label: string, name: string, value: unknown, optional: boolean): ValueError {
  return new ValueError(`${label}: '${name}' is ${formatArg(value)}, not a Parameter; assign new Parameter(tensor)${optional ? ` (or null for no ${name})` : ""}`);
}

/** Refuses a value other than a Parameter, null or undefined in one of the module's declared parameter slots. */
function checkParameterSlots(module: Module, path: string): void {
  const slots = (module.constructor as typeof Module).parameterSlots;
  for (const name in slots) {
    const value = (module as unknown as Record<string, unknown>)[name];
    if (value != null && !(value instanceof Parameter)) throw notParameterError(labelAt(module, path), name, value, slots[name] as boolean);
  }
}

/**
 * Every path to a module of `root`'s tree, as torch's state_dict walks it: a module held in two places (`this.b = this.a`)
 * is listed under both names, unlike namedModules(); a module held by one of its own descendants is not entered again.
 * A module's declared parameter slots are checked as it is reached.
 */
function statePaths(root: Module): [string, Module][] {
  const out: [string, Module][] = [];
  const ancestors = new Set<Module>();
  const visit = (module: Module, path: string): void => {
    if (ancestors.has(module)) return;
    ancestors.add(module);
    checkParameterSlots(module, path);
    out.push([path, module]);
    for (const [name, child] of module.childSlots()) visit(child, path === "" ? name : `${path}.${name}`);
    ancestors.delete(module);
  };
  visit(root, "");
  return out;
}

function checkSlot(module: Module, where: string, name: string): void {
  if (typeof name !== "string" || name === "" || name.includes(".")) {
    throw new ValueError(`${where}: name must be a non-empty string without dots, got ${JSON.stringify(name)}`);
  }
  // A new name or a slot (a module, a parameter, null): assigning over a method, a field or __proto__ would break the module.
  const current = (module as unknown as Record<string, unknown>)[name];
  if (name in module && !(Object.hasOwn(module, name) && (current == null || current instanceof Module || current instanceof Parameter))) {
    throw new ValueError(`${where}: '${name}' is a property of ${module.constructor.name}, not a module or parameter slot`);
  }
}

/** The entry on `like`'s backend with `like`'s dtype. */
export function denseOn(entry: Tensor, like: Tensor): Tensor {
  return tidy(() => cast(entry.backend === like.backend ? entry : entry.to(like.backend.name), like.dtype));
}
