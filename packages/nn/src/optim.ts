import { detach, noGrad } from "@blocksparse/autograd";
import {
  adamUpdate,
  add,
  addReplayCheck,
  assertBoolean,
  type BsrPattern,
  cast,
  type DataId,
  type DType,
  DTypeError,
  formatArg,
  formatShape,
  fullOn,
  GraphError,
  gather,
  isCapturing,
  keep,
  mean,
  mul,
  multiTensorAdamUpdateInPlace,
  optionsArg,
  ShapeError,
  shapesEqual,
  sub,
  Tensor,
  tensorOn,
  tidy,
  ValueError,
} from "@blocksparse/core";
import { blockSources, remapBlocks } from "./blocks";
import { StateDictError, type StateDictMismatch } from "./errors";
import { clearGrad, disposedParameterError, Parameter } from "./parameter";
import { BlockSparseWeight, type StateDict } from "./state_dict";

/** One parameter's optimizer state: named tensors of the parameter's shape, and its step count. */
interface ParameterState {
  tensors: Record<string, Tensor>;
  /** Updates applied so far (by eager step() calls: a captured step's replays count on the device, in `count`). */
  step: number;
  /** With steps counted on the device (capturable): a float32 [1] of the updates applied so far, else null. */
  count: Tensor | null;
  /** The pattern the tensors follow (block-sparse weights), to notice a pattern that moved. */
  pattern: BsrPattern | null;
  /** The float32 master copy of a float16/bfloat16 parameter (null when the parameter is updated directly). */
  master: Tensor | null;
  /** The parameter's buffer as the last step left it: another buffer means the weights were replaced (loaded, cast), so the master is taken again from them. */
  syncedDataId: DataId | null;
  /** The parameter's version then: a later one means a write into that buffer (indexCopy), which the master takes as a load. */
  syncedVersion: number;
  /** The dtype the update runs in (float32 with a master, else the parameter's): the state tensors follow it when it changes. */
  updateDType: DType;
  /** Names of the state tensors made since the last step: zeros that no update has written yet. */
  fresh: Set<string>;
}

/** One parameter's part of a step, as `updateAll` receives it. */
export interface ParameterUpdate<H extends object = object> {
  parameter: Parameter;
  /** Its parameter group (its hyperparameters). */
  group: ParamGroup<H>;
  /** Its gradient, in any float dtype. */
  grad: Tensor;
  /** This update's number, counted from 1. */
  step: number;
  /** The float32 master copy to update (then round into the parameter), or null to update the parameter itself. */
  master: Tensor | null;
  /** The optimizer's state tensors for it (assign to update them). */
  state: Readonly<Record<string, Tensor>>;
  /** Its learning rate at this step: its group's lr times lrScale(parameter). */
  lr: number;
  /** lrScale(parameter) (1 without an lrScale). */
  lrScale: number;
  /** With steps counted on the device (a capturable optimizer): its float32 [1] count of the updates before this one; else null. */
  count: Tensor | null;
  /**
   * Names of the state tensors no update has written yet (all of them at the first step; SGD's momentum buffer when
   * momentum was turned on since), which PyTorch's optimizers start from the gradient rather than from zeros.
   */
  fresh: ReadonlySet<string>;
}

/**
 * When the optimizer keeps float32 master weights: "auto" (the default) for float16 and
 * bfloat16 parameters, true for every low-precision parameter too, false never (the
 * half-precision values are updated directly, which loses small updates to rounding).
 */
export type MasterWeights = "auto" | boolean;

/** A hyperparameter's value in a state dict. */
export type Hyperparameter = number | boolean | readonly number[];

/**
 * An optimizer's state (Optimizer.stateDict), as torch's `optimizer.state_dict()`, keyed by parameter index.
 * saveOptimizerState / loadOptimizerState (and saveOptimizer / loadOptimizer from `@blocksparse/nn/node`) keep it
 * in a safetensors file: the tensors as a state dict, the rest as metadata.
 */
export interface OptimizerStateDict {
  /** The optimizer's kind ("SGD", "Adam", "AdamW"): a state dict loads only into the same kind. */
  optimizer: string;
  /**
   * lr and the kind's own (SGD: momentum, dampening, weightDecay, nesterov; Adam: betas, eps, weightDecay): the first
   * parameter group's (every parameter's in a state dict without paramGroups).
   */
  hyperparameters: Record<string, Hyperparameter>;
  /**
   * Each parameter group's hyperparameters and parameter indices, as torch's `param_groups`. Absent (a state dict
   * saved before optimizers had groups): one group of every parameter, with `hyperparameters`.
   */
  paramGroups?: OptimizerParamGroupState[];
  /** Updates applied to params[i] so far; 0: it has no state. */
  steps: number[];
  /**
   * params[i]'s state tensors by "<i>.<name>": "m" and "v" (Adam), "momentumBuffer" (SGD with momentum), and
   * "master", the float32 copy of a float16/bfloat16 parameter. A block-sparse parameter's are BlockSparseWeights
   * carrying the pattern they follow.
   */
  tensors: StateDict;
  /**
   * Keys "<i>.<name>" of state tensors that no update has written yet (SGD's momentum buffer turned on since the
   * last step), left out of `tensors` as PyTorch leaves out such a momentum_buffer: loaded, they start from the
   * gradient at the next step, as they would have. Absent: none.
   */
  fresh?: string[];
}

export interface OptimizerOptions {
  /** float32 master copies of low-precision parameters (default "auto": yes for float16/bfloat16). */
  masterWeights?: MasterWeights;
  /**
   * Each parameter's learning rate as a multiple of `lr`, asked at every step (default: 1 for all), as
   * PyTorch's parameter groups with their own lr. `inverseDensity` gives block-sparse weights lr / density
   * (docs/nn.md, "Learning rate of block-sparse layers").
   */
  lrScale?: (parameter: Parameter) => number;
}

/**
 * An lrScale for Adam and AdamW: a block-sparse weight at density d learns at lr / d, every other parameter at lr.
 * Adam moves each weight by about lr per step, so a layer's output moves with the fan-in each output sees; at
 * density d an output sees d of it, and at the same lr the layer's function changes d times as fast as a dense
 * layer's. lr / d restores the dense layer's step per output (the fan-in rule for Adam's learning rate, applied to
 * the fan-in that sparsity removes). Measured on GPT-2 on Moby Dick (benchmarks/results/gpu-nvidia-h200/
 * quality.md): FFN layers at density 0.25 stop trailing dense (+0.54 nats -> -0.02 on the mean of three seeds).
 */
export function inverseDensity(parameter: Parameter): number {
  // A weight without blocks has no values to scale: 1 keeps its learning rate finite.
  return parameter.pattern === null || parameter.pattern.nnzBlocks === 0 ? 1 : 1 / parameter.pattern.density;
}

function checkNumber(where: string, name: string, value: unknown, low: number, high = Number.POSITIVE_INFINITY, highOpen = false): number {
  const ok = typeof value === "number" && Number.isFinite(value) && value >= low && (highOpen ? value < high : value <= high);
  if (!ok) {
    const range = high === Number.POSITIVE_INFINITY ? `>= ${low}` : `in [${low}, ${high}${highOpen ? ")" : "]"}`;
    throw new ValueError(`${where}: ${name} must be a finite number ${range}, got ${formatArg(value)}`);
  }
  return value as number;
}

/**
 * A parameter group given to an optimizer, as an entry of torch's param_groups: its parameters, and any of the
 * optimizer's own options for them (lr, weightDecay, betas, ...); the options it leaves out are the constructor's.
 */
export type ParamGroupOptions<H extends object = object> = { params: Parameter | Iterable<Parameter>; lr?: number } & { [K in keyof H]?: H[K] };

/**
 * A parameter group as `optimizer.paramGroups` holds it: its parameters, its lr and the optimizer's own options.
 * lr and the options may be changed between steps: lr is checked when set, the others at the next step, as the
 * constructor checks them.
 */
export type ParamGroup<H extends object = object> = { readonly params: readonly Parameter[]; lr: number } & H;

/** One group's part of an optimizer's state dict (torch's state_dict()["param_groups"][i]). */
export interface OptimizerParamGroupState {
  /** Its lr and the kind's own hyperparameters. */
  hyperparameters: Record<string, Hyperparameter>;
  /** Indices of its parameters in `steps` (the optimizer's params, group after group). */
  params: number[];
}

/** Whether `value` is given as a parameter group ({ params, ... }) rather than as a Parameter. */
function isGroupInput(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !(value instanceof Tensor) && !Array.isArray(value) && "params" in value;
}

/** Whether two hyperparameter values are the same (betas element by element). */
function sameValue(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
  return Object.is(a, b);
}

/**
 * Updates parameters in place from their `.grad`, as torch.optim does. State is created
 * on a parameter's first step with the parameter's shape: for a block-sparse weight that is
 * its values [nnzBlocks, R, C], never the dense size. Parameters without a gradient are
 * skipped. State follows a parameter to another backend, and restarts from zero when a
 * block-sparse weight's pattern changed without `remapBlocks`.
 *
 * `params` is model.parameters() (one group with the constructor's options) or an array of parameter groups
 * `{ params, ...options }`, as torch's param_groups: each group's options left out are the constructor's.
 * A parameter disposed since (patchModel's disposeReplaced, parameter.dispose()) makes step, zeroGrad, stateDict and
 * loadStateDict throw a DisposedTensorError naming it, where they would train nothing for it in silence: create the
 * optimizer after patching.
 */
export abstract class Optimizer<H extends object = object> {
  #params: readonly Parameter[] = [];
  readonly #groups: ParamGroup<H>[] = [];
  readonly #groupOf = new Map<Parameter, ParamGroup<H>>();
  /** With steps counted on the device: each group's learning rate as a float32 [1] on the parameters' backend (made at its first step). */
  readonly #lrValues = new Map<ParamGroup<H>, Tensor>();
  /** The constructor's lr and own options: what a group leaves out (checked once the subclass calls checkGroups). */
  #defaults: Record<string, unknown>;
  /** The names of the kind's own hyperparameters (besides lr). */
  readonly #names: readonly string[];
  readonly #state = new Map<Parameter, ParameterState>();

  /** Whether low-precision parameters get float32 master copies (see MasterWeights). */
  readonly masterWeights: MasterWeights;

  /** Each parameter's learning rate as a multiple of its group's lr (see OptimizerOptions.lrScale), or null for 1. */
  readonly lrScale: ((parameter: Parameter) => number) | null;
  readonly #where: string;

  /**
   * `names`: the kind's own hyperparameters (besides lr), which a group may set and the constructor's `options`
   * give for the groups that leave them out. A subclass calls checkGroups() once it can check them.
   */
  constructor(
    where: string,
    params: Iterable<Parameter> | Iterable<ParamGroupOptions<H>>,
    lr: number,
    options: OptimizerOptions = {},
    names: readonly string[] = [],
  ) {
    if (params === null || typeof params !== "object" || !(Symbol.iterator in params)) {
      throw new ValueError(`${where}: params must be an array of Parameters (model.parameters()) or of parameter groups { params, ...options }`);
    }
    const list: unknown[] = [...params];
    const grouped = list.some(isGroupInput);
    list.forEach((p, i) => {
      if (grouped && !isGroupInput(p)) {
        throw new ValueError(`${where}: params[${i}] is not a parameter group { params, ...options }: pass Parameters or groups, not both`);
      }
      if (!grouped && !(p instanceof Parameter)) throw new ValueError(`${where}: params[${i}] is not a Parameter (pass model.parameters())`);
    });
    if (list.length === 0) throw new ValueError(`${where}: params is empty`);
    this.#where = where;
    this.#names = names;
    this.#defaults = { lr: checkNumber(where, "lr", lr, 0), ...Object.fromEntries(names.map((name) => [name, (options as Record<string, unknown>)[name]])) };
    const masterWeights = options.masterWeights ?? "auto";
    if (masterWeights !== "auto" && typeof masterWeights !== "boolean") {
      throw new ValueError(`${where}: masterWeights must be "auto", true or false, got ${JSON.stringify(masterWeights)}`);
    }
    this.masterWeights = masterWeights;
    if (options.lrScale !== undefined && typeof options.lrScale !== "function") {
      throw new ValueError(`${where}: lrScale must be a function of a Parameter (such as inverseDensity), got ${typeof options.lrScale}`);
    }
    this.lrScale = options.lrScale ?? null;
    if (!grouped) this.#addGroup(where, { params: list }, false);
    else list.forEach((group, i) => {
      this.#addGroup(`${where}: paramGroups[${i}]`, group as Record<string, unknown>, false);
    });
    if (this.#params.length === 0) throw new ValueError(`${where}: params is empty (no parameter group has parameters)`);
  }

  /** Every parameter, group after group (the indices of stateDict's `steps`). */
  get params(): readonly Parameter[] {
    return this.#params;
  }

  /**
   * The parameter groups, as torch's `optimizer.param_groups`: each with its params, lr and the kind's own options,
   * which may be changed between steps (`optimizer.paramGroups[1].lr = 1e-4`; lr is checked when set, the others at
   * the next step). Schedulers set each group's lr.
   */
  get paramGroups(): readonly ParamGroup<H>[] {
    return this.#groups;
  }

  /** The constructor's lr and own options, as torch's `optimizer.defaults`: what a group leaves out takes these. */
  get defaults(): Readonly<{ lr: number } & H> {
    return { ...this.#defaults } as { lr: number } & H;
  }

  /**
   * Adds a parameter group, as torch's `add_param_group` (to train layers unfrozen later at their own lr): the
   * options it leaves out are the constructor's. A parameter already in a group is a ValueError, as torch's. A
   * scheduler made before it refuses to step: make schedulers once the groups are set. A step captured before it
   * (captureGraph) does not update the new group: its replays throw a GraphError, so capture the step again.
   */
  addParamGroup(group: ParamGroupOptions<H>): void {
    const where = `${this.#where}.addParamGroup`;
    if (!isGroupInput(group)) throw new ValueError(`${where}: expected a parameter group { params, ...options }, got ${formatArg(group)}`);
    this.#addGroup(where, group, true);
  }

  /** Checks a group's parameters and options (the options too when `check`, else checkGroups does), then adds it. */
  #addGroup(where: string, input: Record<string, unknown>, check: boolean): void {
    const given = optionsArg(where, input, ["params", "lr", ...this.#names]) as Record<string, unknown>;
    const raw = given.params;
    if (!(raw instanceof Parameter) && (raw === null || typeof raw !== "object" || !(Symbol.iterator in raw))) {
      throw new ValueError(`${where}: params must be a Parameter or an array of Parameters, got ${formatArg(raw)}`);
    }
    const members: unknown[] = raw instanceof Parameter ? [raw] : [...(raw as Iterable<unknown>)];
    members.forEach((p, j) => {
      if (!(p instanceof Parameter)) throw new ValueError(`${where}: params[${j}] is not a Parameter`);
      if (p.value.isDisposed) throw disposedParameterError(where, `params[${j}]`, p);
      const owner = this.#groupOf.get(p);
      if (owner !== undefined) {
        throw new ValueError(`${where}: params[${j}] (shape [${p.shape}]) is already in paramGroups[${this.#groups.indexOf(owner)}]; a parameter can be in one group only`);
      }
    });
    const params = Object.freeze([...new Set(members as Parameter[])]);
    let lr = given.lr == null ? (this.#defaults.lr as number) : checkNumber(where, "lr", given.lr, 0);
    const own: Record<string, unknown> = {};
    for (const name of this.#names) own[name] = given[name] ?? this.#defaults[name];
    const group = { params } as unknown as ParamGroup<H>;
    Object.defineProperty(group, "lr", {
      enumerable: true,
      get: () => lr,
      set: (value: number) => {
        lr = checkNumber(this.#where, `paramGroups[${this.#groups.indexOf(group)}].lr`, value, 0);
        const held = this.#lrValues.get(group);
        if (held !== undefined) {
          const next = tensorOn(held.backend, [lr], [1], "float32");
          held.assign(next);
          next.dispose();
        }
      },
    });
    Object.assign(group, check ? this.checkHyperparameters(where, own) : own);
    this.#groups.push(group);
    for (const p of params) this.#groupOf.set(p, group);
    this.#params = [...this.#params, ...params];
  }

  /**
   * Checks the constructor's options and every group's as the constructor checks them (defaults filled in): a
   * subclass calls it at the end of its constructor, once its checkHyperparameters can run.
   */
  protected checkGroups(): void {
    const where = this.#where;
    this.#defaults = { lr: this.#defaults.lr, ...this.checkHyperparameters(where, this.#defaults) };
    this.#groups.forEach((group, i) => {
      const own = this.#ownOf(group);
      for (const name of this.#names) own[name] ??= this.#defaults[name];
      Object.assign(group, this.checkHyperparameters(this.#groups.length === 1 ? where : `${where}: paramGroups[${i}]`, own));
    });
  }

  /** The kind's own hyperparameters of `group` (besides lr). */
  #ownOf(group: ParamGroup<H>): Record<string, unknown> {
    return Object.fromEntries(this.#names.map((name) => [name, (group as Record<string, unknown>)[name]]));
  }

  /**
   * The value of `name` that every group has (lr and the kind's options, as `optimizer.lr`): with groups that differ,
   * a ValueError telling to read `paramGroups[i]` (a single number would be one group's, wrong for the others).
   */
  protected sharedOption(name: string): unknown {
    const values = this.#groups.map((group) => (group as Record<string, unknown>)[name]);
    if (values.some((value) => !sameValue(value, values[0]))) {
      throw new ValueError(`${this.#where}.${name}: the parameter groups have different values (${values.map((v) => JSON.stringify(v)).join(", ")}); read optimizer.paramGroups[i].${name}`);
    }
    return values[0];
  }

  /** Sets `name` in every group (lr checked now, the kind's options at the next step). */
  protected setOption(name: string, value: unknown): void {
    if (name === "lr") checkNumber(this.#where, "lr", value, 0);
    for (const group of this.#groups) (group as Record<string, unknown>)[name] = value;
  }

  /**
   * The learning rate every group has; may be changed between steps (schedules). Setting it sets every group's
   * lr; reading it with groups of different lrs is a ValueError (read `paramGroups[i].lr`). With steps counted on
   * the device (Adam's `capturable`), setting it also writes it where a captured step reads it, so replays follow
   * the schedule.
   */
  get lr(): number {
    return this.sharedOption("lr") as number;
  }

  set lr(value: number) {
    this.setOption("lr", value);
  }

  /** The group that holds `parameter`. */
  #groupFor(where: string, parameter: Parameter): ParamGroup<H> {
    const group = this.#groupOf.get(parameter);
    if (group === undefined) throw new ValueError(`${this.#where}.${where}: the parameter (shape [${parameter?.shape}]) is not one of this optimizer's`);
    return group;
  }

  /** `parameter`'s learning rate at this step: its group's lr times lrScale(parameter). */
  lrOf(parameter: Parameter): number {
    return this.#groupFor("lrOf", parameter).lr * this.lrScaleOf(parameter);
  }

  /** lrScale(parameter), checked (1 without an lrScale). */
  lrScaleOf(parameter: Parameter): number {
    if (this.lrScale === null) return 1;
    const scale = this.lrScale(parameter);
    if (typeof scale !== "number" || !Number.isFinite(scale) || scale < 0) {
      const index = this.params.indexOf(parameter);
      throw new ValueError(`${this.#where}: lrScale gave ${formatArg(scale)} for params[${index}] (shape [${parameter.shape}]); expected a finite number >= 0`);
    }
    return scale;
  }

  /**
   * Whether this optimizer counts steps and reads its learning rate on the device, so that a captured training
   * step (captureGraph) can include its update. Adam and AdamW with `capturable: true`.
   */
  get capturable(): boolean {
    return false;
  }

  /** `group`'s learning rate as a float32 [1] on `backend`, for an update that reads it when it runs (capturable optimizers). */
  protected lrValueOn(backend: Tensor["backend"], group: ParamGroup<H>): Tensor {
    const held = this.#lrValues.get(group);
    if (held !== undefined && held.backend === backend) return held;
    if (isCapturing()) throw new GraphError(`${this.#where}: run one step eagerly before capturing (the learning rate is not on the device yet)`);
    const next = keep(tensorOn(backend, [group.lr], [1], "float32"));
    held?.dispose();
    this.#lrValues.set(group, next);
    return next;
  }

  /**
   * Names of the state tensors each parameter gets (e.g. ["m", "v"]) and their dtype, given the dtype the update runs
   * in and the hyperparameters of the parameter's group (loadStateDict passes those it loads).
   */
  protected abstract stateSpec(dtype: DType, hyperparameters: Readonly<Record<string, unknown>>): { names: string[]; dtype: DType };

  /** `values` (the kind's own hyperparameters) checked as the constructor checks its options, defaults filled in; loadStateDict assigns the result to a group. */
  protected checkHyperparameters(_where: string, _values: Readonly<Record<string, unknown>>): Record<string, unknown> {
    return {};
  }

  /**
   * One update: the new value of `param` (same shape and dtype) from `grad` (param's dtype),
   * writing `state`'s tensors with assign; `step` counts from 1, `lr` is this parameter's learning rate,
   * `fresh` names the state tensors no update has written yet, `group` is the parameter's group (its options).
   * `param` is the master copy when there is one.
   */
  protected abstract update(
    param: Tensor,
    grad: Tensor,
    state: Readonly<Record<string, Tensor>>,
    step: number,
    lr: number,
    fresh: ReadonlySet<string>,
    group: ParamGroup<H>,
  ): Tensor;

  /**
   * Applies one update to every parameter that has a gradient. A float16/bfloat16 parameter
   * with a master copy is updated in float32 and then takes the rounded master values.
   * `closure` (torch's step(closure)) runs first, to compute the gradients this step uses; its result is returned.
   */
  step<T = undefined>(closure?: () => T): T | undefined {
    if (!this.capturable && isCapturing()) {
      throw new GraphError(
        `${this.#where}.step() inside captureGraph: its step count and learning rate live on the host, so a replay would repeat this step's; make the optimizer with { capturable: true } (Adam, AdamW), or call step() after each replay()`,
      );
    }
    // Hyperparameters set since (optimizer.weightDecay = ...) are checked as the constructor checks them: NaN would reach every weight.
    // The checked values are the ones the step runs with: one set to undefined (or null) takes its default, as an option
    // left out of the constructor's does (it reached the update as undefined: NaN weights, or a TypeError).
    this.#groups.forEach((group, i) => {
      const where = this.#groups.length === 1 ? `${this.#where}.step` : `${this.#where}.step: paramGroups[${i}]`;
      Object.assign(group, this.checkHyperparameters(where, this.#ownOf(group)));
    });
    if (isCapturing()) addReplayCheck(this.#replayCheck());
    if (closure !== undefined && typeof closure !== "function") throw new ValueError(`${this.#where}.step: closure must be a function`);
    const loss = closure?.();
    noGrad(() => {
      // Every learning rate first: a bad lrScale throws before any state changes.
      const due: Parameter[] = [];
      const scales: number[] = [];
      for (let i = 0; i < this.params.length; i++) {
        const parameter = this.params[i];
        // The flag the engine keeps: a disposed parameter has no gradient, and would be skipped in silence.
        if (parameter.value.isDisposed) this.#throwDisposed(`${this.#where}.step`, i);
        const grad = parameter.grad;
        if (grad === null) continue;
        // A gradient set by hand may not fit: refused here, where SGD's arithmetic would broadcast it.
        if (!shapesEqual(grad.shape, parameter.shape)) {
          throw new ShapeError(`${this.#where}.step: params[${i}] has a gradient of shape ${formatShape(grad.shape)}, expected its shape ${formatShape(parameter.shape)}`);
        }
        if (!grad.isFloat) throw new DTypeError(`${this.#where}.step: params[${i}] has a gradient of dtype ${grad.dtype}, expected a float dtype`);
        due.push(parameter);
        scales.push(this.lrScaleOf(parameter));
      }
      const updates: ParameterUpdate<H>[] = [];
      const states: ParameterState[] = [];
      for (let i = 0; i < due.length; i++) {
        const parameter = due[i];
        const group = this.#groupOf.get(parameter) as ParamGroup<H>;
        const state = this.stateFor(parameter, group);
        state.step++;
        states.push(state);
        updates.push({
          parameter,
          group,
          grad: parameter.grad as Tensor,
          step: state.step,
          master: state.master,
          state: state.tensors,
          lr: group.lr * scales[i],
          lrScale: scales[i],
          count: state.count,
          fresh: state.fresh,
        });
      }
      tidy(() => this.updateAll(updates));
      for (let i = 0; i < due.length; i++) {
        markSynced(states[i], due[i].value);
        states[i].fresh.clear();
      }
    });
    return loss;
  }

  /**
   * What each replay of a captured step checks first: the recorded update holds the groups and their options (all
   * but lr, read on the device) as constants, so a replay after a group was added would never update it, and one
   * after an option was set would not use it. Refused with a GraphError saying to capture again.
   */
  #replayCheck(): () => void {
    const groups = this.#groups.slice();
    const recorded = groups.map((group) => this.#ownOf(group));
    return () => {
      this.checkParams(`${this.#where} (a replay of the captured step)`);
      if (this.#groups.length > groups.length) {
        throw new GraphError(
          `${this.#where}: paramGroups[${groups.length}] was added after the step was captured, so replays would not update it: capture the step again after one eager step`,
        );
      }
      groups.forEach((group, i) => {
        for (const name of this.#names) {
          const now = (group as Record<string, unknown>)[name];
          if (sameValue(now, recorded[i][name])) continue;
          throw new GraphError(
            `${this.#where}: ${groups.length === 1 ? "" : `paramGroups[${i}].`}${name} is ${JSON.stringify(now)}, the captured step holds ${JSON.stringify(recorded[i][name])} (only lr is read on the device): capture the step again`,
          );
        }
      });
    };
  }

  /**
   * Updates every parameter of one step. The default runs `update` per parameter (the master
   * copy from the gradient widened to float32, then the parameter from the rounded master);
   * an optimizer with a multi-tensor kernel overrides it to update them all in one call.
   */
  protected updateAll(updates: readonly ParameterUpdate<H>[]): void {
    for (const { parameter, group, grad, step, master, state, lr, fresh } of updates) {
      if (master === null) {
        const value = parameter.value;
        parameter.assign(this.update(value, grad.dtype === value.dtype ? grad : cast(grad, value.dtype), state, step, lr, fresh, group));
      } else {
        master.assign(this.update(master, cast(grad, master.dtype), state, step, lr, fresh, group));
        parameter.assign(cast(master, parameter.dtype));
      }
    }
  }

  /**
   * @internal Throws a DisposedTensorError naming the first of `params` that was disposed (patchModel's
   * disposeReplaced, parameter.dispose()): it can never be trained again, so an optimizer holding it would train
   * nothing in its place, in silence. One flag read per parameter.
   */
  checkParams(where: string): void {
    const params = this.#params;
    for (let i = 0; i < params.length; i++) if (params[i].value.isDisposed) this.#throwDisposed(where, i);
  }

  #throwDisposed(where: string, i: number): never {
    const parameter = this.#params[i];
    const group = this.#groupOf.get(parameter) as ParamGroup<H>;
    const others = this.#params.filter((p) => p.value.isDisposed).length - 1;
    throw disposedParameterError(where, `params[${i}] (paramGroups[${this.#groups.indexOf(group)}].params[${group.params.indexOf(parameter)}])`, parameter, others);
  }

  /** The float32 master copy of `parameter` (undefined when it has none, or before its first step). */
  masterOf(parameter: Parameter): Tensor | undefined {
    return this.#state.get(parameter)?.master ?? undefined;
  }

  /**
   * Clears the gradient of every parameter, as torch's `zero_grad()`. `setToNone: false` (torch's set_to_none=False)
   * leaves zeros of the parameter's dtype instead, so that the next step updates every parameter that had a gradient
   * (momentum, weight decay), also one that the next backward leaves out.
   */
  zeroGrad(setToNone = true): void {
    assertBoolean(`${this.#where}.zeroGrad`, "setToNone", setToNone);
    this.checkParams(`${this.#where}.zeroGrad`);
    for (const parameter of this.params) clearGrad(parameter, setToNone);
  }

  /** The state tensors of `parameter` (undefined before its first step). */
  stateOf(parameter: Parameter): Readonly<Record<string, Tensor>> | undefined {
    return this.#state.get(parameter)?.tensors;
  }

  /** Steps taken for `parameter` (read from the device when they are counted there, so not inside a capture). */
  stepsOf(parameter: Parameter): number {
    const state = this.#state.get(parameter);
    if (state === undefined) return 0;
    return state.count === null ? state.step : state.count.dataSync()[0];
  }

  /** Elements held as state for `parameter`, its master copy included (0 before its first step). */
  stateSize(parameter: Parameter): number {
    const state = this.#state.get(parameter);
    return state ? Object.values(state.tensors).reduce((n, t) => n + t.size, state.master?.size ?? 0) : 0;
  }

  /**
   * Follows a block-sparse weight to a new pattern: block k of the new state is block
   * sources[k] of the old one; where sources[k] = -1 (a new block) it is what `freshBlocks`
   * gives (zeros by default; Adam's second moment starts from its mean over the old blocks).
   * Call it once the parameter holds the new pattern's values: a master copy takes its
   * new blocks from them. State that does not follow the blocks `sources` indexes (the
   * pattern moved since without this optimizer) is left as it is: the next step restarts it.
   */
  remapBlocks(parameter: Parameter, sources: Int32Array, pattern: BsrPattern): void {
    const state = this.#state.get(parameter);
    if (!state) return;
    // State that follows another pattern than the one `sources` indexes (moved since without this optimizer) is left
    // as it is, so that the next step restarts it: remapped, it would give kept blocks the state of other blocks.
    if (!followsMove(state.pattern, sources, pattern)) return;
    const added = Int32Array.from(sources.keys()).filter((k) => sources[k] < 0);
    noGrad(() => {
      for (const [name, t] of Object.entries(state.tensors)) {
        if (t.rank !== 3) throw new ValueError(`remapBlocks: state '${name}' has shape [${t.shape}], expected block values [n, R, C]`);
        state.tensors[name] = keep(
          tidy(() => {
            const fresh = added.length === 0 ? undefined : this.freshBlocks(name, t, added.length);
            return remapBlocks(t, sources, fresh);
          }),
        );
        t.dispose();
      }
      const master = state.master;
      if (master !== null) {
        state.master = keep(
          tidy(() => {
            const value = parameter.value;
            // The weights may have moved to another backend since the last step (the master follows at the next).
            const fresh = added.length === 0 ? undefined : cast(gather(value, tensorOn(value.backend, added, [added.length], "int32"), 0), master.dtype).to(master.backend.name);
            return remapBlocks(master, sources, fresh);
          }),
        );
        master.dispose();
        markSynced(state, parameter.value);
      }
    });
    state.pattern = pattern;
  }

  /**
   * @internal Takes `parameter`'s master copy again from its weights when these were replaced since the last step
   * (loaded, assigned), as the next step would: setPattern calls it before the weights move, so that the master's
   * kept blocks are the weights', not the copy's from before they were replaced.
   */
  syncMaster(parameter: Parameter): void {
    const state = this.#state.get(parameter);
    const value = parameter.value;
    if (state?.master == null || state.pattern !== parameter.pattern || masterInSync(state, value) || !shapesEqual(state.master.shape, value.shape)) return;
    const next = keep(noGrad(() => tidy(() => cast(value, "float32"))));
    state.master.dispose();
    state.master = next;
    markSynced(state, value);
  }

  /**
   * The state `name` of `count` blocks that a pattern move adds, from that state's old blocks
   * [n, R, C] (same dtype and backend), or undefined for zeros (the default).
   */
  protected freshBlocks(_name: string, _old: Tensor, _count: number): Tensor | undefined {
    return undefined;
  }

  /**
   * The optimizer's state, as torch's `optimizer.state_dict()`: hyperparameters, each parameter's step count, and
   * its state tensors and master copy (sharing their buffers, as Module.stateDict; dispose them with
   * disposeStateDict(sd.tensors)). They are saved as the next step will see them, this optimizer's own left as they
   * are: after module.to(dtype) (or weights loaded) cast to the dtype the update now runs in, the master copy dropped
   * or taken again from the weights. State that no longer fits its parameter (a pattern moved without remapBlocks)
   * is left out, as the next step would restart it. A state tensor no update has written yet is named in `fresh`
   * instead (PyTorch saves no momentum_buffer then).
   */
  stateDict(): OptimizerStateDict {
    this.checkParams(`${this.#where}.stateDict`);
    const tensors: StateDict = new Map();
    const fresh: string[] = [];
    const steps = this.params.map((parameter, i) => {
      const state = this.#state.get(parameter);
      if (state === undefined || state.pattern !== parameter.pattern) return 0;
      const value = parameter.value;
      const wantsMaster = this.wantsMaster(parameter);
      const { names, dtype } = this.stateSpec(wantsMaster ? "float32" : parameter.dtype, this.#groupOf.get(parameter) as ParamGroup<H>);
      const master = wantsMaster ? (masterInSync(state, value) ? (state.master as Tensor) : value) : null;
      if (![...names.map((name) => state.tensors[name]), master].every((t) => t == null || shapesEqual(t.shape, parameter.shape))) return 0;
      // Named as the next step will hold them (SGD's momentum set to or from 0 since: a new buffer is listed in `fresh`).
      const put = (name: string, t: Tensor, to: DType) => {
        const values = t.dtype === to ? detach(t) : noGrad(() => cast(t, to));
        tensors.set(`${i}.${name}`, state.pattern === null ? values : new BlockSparseWeight(state.pattern, values));
      };
      for (const name of names) {
        // Not written yet (new since the last step): saved as a name, so that the loaded one starts as this one would.
        if (state.tensors[name] === undefined || state.fresh.has(name)) fresh.push(`${i}.${name}`);
        else put(name, state.tensors[name], dtype);
      }
      if (master) put("master", master, "float32");
      return this.stepsOf(parameter);
    });
    let start = 0;
    const paramGroups = this.#groups.map((group) => {
      const params = group.params.map((_, j) => start + j);
      start += params.length;
      return { hyperparameters: this.#hyperparametersOf(group), params };
    });
    return { optimizer: this.#where, hyperparameters: paramGroups[0].hyperparameters, paramGroups, steps, tensors, fresh };
  }

  /** `group`'s lr and own hyperparameters, as a state dict holds them. */
  #hyperparametersOf(group: ParamGroup<H>): Record<string, Hyperparameter> {
    return { lr: group.lr, ...this.#ownOf(group) } as Record<string, Hyperparameter>;
  }

  /**
   * Restores a state dict from stateDict(), as torch's `load_state_dict`: its hyperparameters replace this
   * optimizer's, and each parameter's state is replaced by the saved one (none where its step count is 0). Load
   * the model first: a block-sparse parameter's state must follow its current pattern (the model's state dict
   * brings the saved pattern), and a master copy is kept only while the parameter holds the weights it was loaded
   * beside. Everything is checked before anything changes: the kind of optimizer, the number of parameters and
   * the hyperparameters (ValueError); missing, unexpected, misshapen, mistyped or mispatterned tensors
   * (StateDictError, each named "<i>.<name>" with params[i]). A key in `fresh` loads as a state tensor no update
   * has written yet (SGD's momentum buffer then starts from the gradient). The state dict's tensors stay the caller's.
   */
  loadStateDict(stateDict: OptimizerStateDict): void {
    const where = `${this.#where}.loadStateDict`;
    this.checkParams(where);
    if (stateDict === null || typeof stateDict !== "object") throw new ValueError(`${where}: expected optimizer.stateDict()'s { optimizer, hyperparameters, steps, tensors }`);
    const { optimizer, hyperparameters, paramGroups, steps, tensors, fresh = [] } = stateDict;
    if (optimizer !== this.#where) throw new ValueError(`${where}: the state dict is of ${JSON.stringify(optimizer)}, not ${this.#where}`);
    if (!Array.isArray(steps) || steps.length !== this.params.length) {
      throw new ValueError(`${where}: the state dict has steps for ${Array.isArray(steps) ? steps.length : "no"} parameters, this optimizer has ${this.params.length}`);
    }
    steps.forEach((step, i) => {
      if (!Number.isSafeInteger(step) || step < 0) throw new ValueError(`${where}: steps[${i}] (params[${i}]) must be an integer >= 0, got ${formatArg(step)}`);
    });
    if (hyperparameters === null || typeof hyperparameters !== "object" || !(tensors instanceof Map)) {
      throw new ValueError(`${where}: expected hyperparameters as an object and tensors as a state dict (a Map)`);
    }
    if (!Array.isArray(fresh) || fresh.some((key) => typeof key !== "string")) {
      throw new ValueError(`${where}: fresh must be an array of "<i>.<name>" keys, got ${JSON.stringify(fresh)}`);
    }
    // Loaded hyperparameters replace each group's; any not saved keep their value. A state dict without paramGroups
    // (saved before there were groups) holds one group's.
    const groupCount = this.#groups.length;
    if (paramGroups !== undefined && !Array.isArray(paramGroups)) throw new ValueError(`${where}: paramGroups must be an array, got ${formatArg(paramGroups)}`);
    const savedGroups: unknown[] = paramGroups ?? [{ hyperparameters, params: steps.map((_, i) => i) }];
    if (savedGroups.length !== groupCount) {
      throw new ValueError(`${where}: the state dict has ${savedGroups.length} parameter group${savedGroups.length === 1 ? "" : "s"}, this optimizer has ${groupCount}`);
    }
    const loadGroup = (label: string, current: Record<string, unknown>, saved: unknown) => {
      if (saved === null || typeof saved !== "object" || Array.isArray(saved)) throw new ValueError(`${where}: ${label} must be an object of hyperparameters, got ${formatArg(saved)}`);
      for (const name of Object.keys(saved)) {
        if (!Object.hasOwn(current, name)) throw new ValueError(`${where}: unknown hyperparameter '${name}' in ${label} (${this.#where} has ${Object.keys(current).join(", ")})`);
      }
      const values: Record<string, unknown> = { ...current, ...saved };
      return { lr: checkNumber(`${where}: ${label}`, "lr", values.lr, 0), ...this.checkHyperparameters(`${where}: ${label}`, values) };
    };
    loadGroup("hyperparameters", this.#hyperparametersOf(this.#groups[0]), hyperparameters);
    let start = 0;
    const loaded = this.#groups.map((group, g) => {
      const saved = savedGroups[g] as OptimizerParamGroupState;
      const label = `paramGroups[${g}]`;
      if (saved === null || typeof saved !== "object" || !Array.isArray(saved.params)) throw new ValueError(`${where}: ${label} must be { hyperparameters, params }, got ${formatArg(saved)}`);
      const size = group.params.length;
      if (saved.params.length !== size || saved.params.some((index, j) => index !== start + j)) {
        throw new ValueError(
          `${where}: ${label} holds parameters [${saved.params.join(", ")}], this optimizer's holds ${size === 0 ? "none" : `[${start}..${start + size - 1}]`} (${size} parameter${size === 1 ? "" : "s"})`,
        );
      }
      start += size;
      return loadGroup(`${label}.hyperparameters`, this.#hyperparametersOf(group), saved.hyperparameters);
    });
    // What each parameter with steps needs: its stateSpec's tensors in the dtype its update runs in, and a master copy if it wants one.
    const expected = new Map<string, [number, DType]>();
    const names = steps.map((step, i) => {
      const master = this.wantsMaster(this.params[i]);
      const spec = this.stateSpec(master ? "float32" : this.params[i].dtype, loaded[this.#groups.indexOf(this.#groupOf.get(this.params[i]) as ParamGroup<H>)]);
      if (step === 0) return spec.names;
      for (const name of spec.names) expected.set(`${i}.${name}`, [i, spec.dtype]);
      if (master) expected.set(`${i}.master`, [i, "float32"]);
      return spec.names;
    });
    const mismatches: StateDictMismatch[] = [];
    for (const [key, [i, dtype]] of expected) {
      const entry: unknown = tensors.get(key);
      if (entry === undefined) continue;
      const { pattern, shape } = this.params[i];
      const has = `${formatShape(shape)} ${dtype} (params[${i}]${pattern === null ? "" : `, block-sparse with ${pattern.nnzBlocks} blocks`})`;
      const values = entry instanceof BlockSparseWeight ? entry.values : entry;
      if (!(values instanceof Tensor) || values.isDisposed || (pattern !== null) !== (entry instanceof BlockSparseWeight)) {
        const got = values instanceof Tensor && values.isDisposed ? "a disposed tensor" : entry instanceof BlockSparseWeight ? "a block-sparse entry" : "another kind of entry";
        mismatches.push({ key, expected: has, got, reason: "type" });
      } else if (!shapesEqual(values.shape, shape)) {
        mismatches.push({ key, expected: has, got: formatShape(values.shape) });
      } else if (entry instanceof BlockSparseWeight && !entry.pattern.equals(pattern as BsrPattern)) {
        mismatches.push({ key, expected: `${has}: load the model's state dict first, it brings the pattern`, got: "state that follows another pattern", reason: "pattern" });
      } else if (values.dtype !== dtype) {
        mismatches.push({ key, expected: has, got: `dtype ${values.dtype}`, reason: "dtype" });
      }
    }
    // A key in `fresh` stands for its tensor: a state tensor no update has written yet (a master copy never is one).
    const freshKeys = new Set(fresh.filter((key) => !key.endsWith(".master") && expected.has(key)));
    const unexpected = [...[...tensors.keys()].filter((key) => !expected.has(key)), ...fresh.filter((key) => !freshKeys.has(key))];
    for (const key of freshKeys) {
      if (tensors.has(key)) mismatches.push({ key, expected: "a tensor or a key in fresh", got: "both", reason: "type" });
    }
    const missing = [...expected.keys()].filter((key) => !tensors.has(key) && !freshKeys.has(key));
    if (mismatches.length > 0 || missing.length > 0 || unexpected.length > 0) throw new StateDictError(missing, unexpected, mismatches, where);
    noGrad(() => {
      this.params.forEach((parameter, i) => {
        const previous = this.#state.get(parameter);
        if (previous !== undefined) disposeState(previous);
        this.#state.delete(parameter);
        if (steps[i] === 0) return;
        const value = parameter.value;
        // A clone shares the caller's buffer: the first step writes the state elsewhere, leaving the caller's tensors as they were.
        const copy = (key: string) => {
          if (freshKeys.has(key)) return keep(fullOn(value.backend, value.shape, 0, (expected.get(key) as [number, DType])[1]));
          const entry = tensors.get(key) as Tensor | BlockSparseWeight;
          const t = entry instanceof BlockSparseWeight ? entry.values : entry;
          return keep(t.backend === value.backend ? t.clone() : t.to(value.backend.name));
        };
        const master = this.wantsMaster(parameter);
        this.#state.set(parameter, {
          tensors: Object.fromEntries(names[i].map((name) => [name, copy(`${i}.${name}`)])),
          step: steps[i],
          count: this.capturable ? keep(tensorOn(value.backend, [steps[i]], [1], "float32")) : null,
          pattern: parameter.pattern,
          master: master ? copy(`${i}.master`) : null,
          syncedDataId: value.dataId,
          syncedVersion: value.version,
          updateDType: master ? "float32" : parameter.dtype,
          fresh: new Set(names[i].filter((name) => freshKeys.has(`${i}.${name}`))),
        });
      });
    });
    this.#groups.forEach((group, g) => {
      Object.assign(group, loaded[g]);
    });
  }

  /** Frees every state tensor and master copy. */
  dispose(): void {
    for (const state of this.#state.values()) disposeState(state);
    this.#state.clear();
    for (const held of this.#lrValues.values()) held.dispose();
    this.#lrValues.clear();
  }

  /** Whether `parameter` is updated through a float32 master copy. */
  private wantsMaster(parameter: Parameter): boolean {
    return this.masterWeights !== false && parameter.dtype !== "float32";
  }

  private stateFor(parameter: Parameter, group: ParamGroup<H>): ParameterState {
    const existing = this.#state.get(parameter);
    const value = parameter.value;
    const wantsMaster = this.wantsMaster(parameter);
    if (existing) {
      // Every step passes here: plain loops over the state, no arrays made.
      let fits = existing.pattern === parameter.pattern;
      let elsewhere = false;
      for (const name in existing.tensors) {
        if (!fits) break;
        const t = existing.tensors[name];
        fits = shapesEqual(t.shape, value.shape);
        if (t.backend !== value.backend) elsewhere = true;
      }
      if (fits && existing.count !== null && existing.count.backend !== value.backend) elsewhere = true;
      if (fits) {
        const moved = existing.master !== null && existing.master.backend !== value.backend;
        // Cast between float32 and float16/bfloat16 (module.to(dtype)): the state is kept, in the dtype the update now runs in.
        const updateDType: DType = wantsMaster ? "float32" : parameter.dtype;
        const masterChanged = (existing.master !== null) !== wantsMaster;
        const recast = existing.updateDType !== updateDType;
        if ((elsewhere || moved || masterChanged || recast || (existing.master !== null && existing.syncedDataId !== value.dataId)) && isCapturing()) {
          throw new GraphError(`${this.#where}: a parameter was moved, cast or replaced since the last step; run one step eagerly before capturing`);
        }
        if (elsewhere && existing.count !== null && existing.count.backend !== value.backend) {
          const count = keep(existing.count.to(value.backend.name));
          existing.count.dispose();
          existing.count = count;
        }
        if (elsewhere) {
          for (const [name, t] of Object.entries(existing.tensors)) {
            if (t.backend !== value.backend) {
              existing.tensors[name] = keep(t.to(value.backend.name));
              t.dispose();
            }
          }
        }
        if (recast) {
          const { dtype } = this.stateSpec(updateDType, group);
          for (const [name, t] of Object.entries(existing.tensors)) {
            if (t.dtype === dtype) continue;
            existing.tensors[name] = keep(noGrad(() => tidy(() => cast(t, dtype))));
            t.dispose();
          }
          existing.updateDType = updateDType;
        }
        if (masterChanged) {
          // Now low precision: a master is taken from the cast weights. Now float32: the parameter is its own master.
          existing.master?.dispose();
          existing.master = wantsMaster ? keep(noGrad(() => tidy(() => cast(value, "float32")))) : null;
          markSynced(existing, value);
        } else if (existing.master !== null && (moved || !masterInSync(existing, value))) {
          // Moved to another backend: the master follows. Replaced (loaded, cast): the master is taken again.
          const next = keep(masterInSync(existing, value) ? existing.master.to(value.backend.name) : tidy(() => cast(value, "float32")));
          existing.master.dispose();
          existing.master = next;
          markSynced(existing, value);
        }
        // The state's names follow the hyperparameters (SGD's momentum set to or from 0 since): new ones start fresh, at 0.
        const { names, dtype } = this.stateSpec(updateDType, group);
        for (const name in existing.tensors) {
          if (names.includes(name)) continue;
          existing.tensors[name].dispose();
          delete existing.tensors[name];
          existing.fresh.delete(name);
        }
        for (const name of names) {
          if (name in existing.tensors) continue;
          existing.tensors[name] = keep(fullOn(value.backend, value.shape, 0, dtype));
          existing.fresh.add(name);
        }
        return existing;
      }
      if (isCapturing()) throw new GraphError(`${this.#where}: a parameter's state no longer fits it (pattern, dtype or shape changed); run one step eagerly before capturing`);
      disposeState(existing);
    }
    if (isCapturing()) {
      // Made inside a capture, the zeros and the master's cast would be recorded and run again by every replay.
      throw new GraphError(`${this.#where}: run one step eagerly before capturing (params[${this.params.indexOf(parameter)}] has no optimizer state yet)`);
    }
    const updateDType: DType = wantsMaster ? "float32" : parameter.dtype;
    const { names, dtype } = this.stateSpec(updateDType, group);
    const state: ParameterState = {
      tensors: Object.fromEntries(names.map((name) => [name, keep(fullOn(parameter.value.backend, parameter.value.shape, 0, dtype))])),
      step: 0,
      count: this.capturable ? keep(fullOn(parameter.value.backend, [1], 0, "float32")) : null,
      pattern: parameter.pattern,
      master: wantsMaster ? keep(noGrad(() => tidy(() => cast(value, "float32")))) : null,
      syncedDataId: value.dataId,
      syncedVersion: value.version,
      updateDType,
      fresh: new Set(names),
    };
    this.#state.set(parameter, state);
    return state;
  }
}

/**
 * Whether the next step keeps the values of `state`'s master copy: the parameter still holds the weights the last
 * step rounded from it, unwritten since (a captured step's replay writes both), or they moved to another backend
 * together and were not written since (a move makes a tensor at version 0; a load into it counts a write). Else
 * (cast, loaded, written in place, replaced) it is taken again from `value`, the parameter's weights.
 */
function masterInSync(state: ParameterState, value: Tensor): boolean {
  const master = state.master;
  if (master === null) return false;
  if (master.backend !== value.backend) return state.syncedDataId !== null && value.version === 0;
  return state.syncedDataId === value.dataId && (state.count !== null || state.syncedVersion === value.version);
}

/** Records the parameter's buffer and version as the master copy's (see masterInSync). */
function markSynced(state: ParameterState, value: Tensor): void {
  state.syncedDataId = value.dataId;
  state.syncedVersion = value.version;
}

/** Whether state following `previous` fits a move to `next` whose block k was block sources[k] (-1: new): each kept one at the same position. */
function followsMove(previous: BsrPattern | null, sources: Int32Array, next: BsrPattern): boolean {
  if (previous === null || sources.length !== next.nnzBlocks) return false;
  const own = blockSources(previous, next);
  return sources.every((j, k) => j < 0 || j === own[k]);
}

function disposeState(state: ParameterState): void {
  for (const t of Object.values(state.tensors)) t.dispose();
  state.master?.dispose();
  state.master = null;
  state.count?.dispose();
  state.count = null;
}

/** SGD's own hyperparameters, which each parameter group may set (the constructor's options for those it leaves out). */
export type SGDHyperparameters = {
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
};

export interface SGDOptions extends OptimizerOptions {
  /** Default 1e-3, as torch.optim.SGD's (and Adam's): groups that set their own lr need none. */
  lr?: number;
  /** Momentum factor (default 0: plain SGD). */
  momentum?: number;
  /** Dampening of the momentum (default 0). */
  dampening?: number;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay?: number;
  nesterov?: boolean;
}

/**
 * Stochastic gradient descent with momentum, as torch.optim.SGD:
 * g = grad + weightDecay * p; buf = momentum * buf + (1 - dampening) * g (buf = g, undamped, at the
 * buffer's first step: the parameter's first, or the first since momentum was turned on);
 * g = nesterov ? g + momentum * buf : buf; p -= lr * g.
 */
export class SGD extends Optimizer<SGDHyperparameters> {
  constructor(params: Iterable<Parameter> | Iterable<ParamGroupOptions<SGDHyperparameters>>, options?: SGDOptions | null) {
    // Only the documented options: another (torch's weight_decay, a typo, an inherited toString), ignored, would train
    // otherwise than asked. null means the defaults, as Adam's.
    options = optionsArg("SGD", options, ["lr", "momentum", "dampening", "weightDecay", "nesterov", "masterWeights", "lrScale"]);
    super("SGD", params, options.lr ?? 1e-3, options, ["momentum", "dampening", "weightDecay", "nesterov"]);
    this.checkGroups();
  }

  // The value every parameter group has (a ValueError when they differ: read paramGroups[i]); setting one sets every group's.
  get momentum(): number {
    return this.sharedOption("momentum") as number;
  }
  set momentum(value: number) {
    this.setOption("momentum", value);
  }
  get dampening(): number {
    return this.sharedOption("dampening") as number;
  }
  set dampening(value: number) {
    this.setOption("dampening", value);
  }
  get weightDecay(): number {
    return this.sharedOption("weightDecay") as number;
  }
  set weightDecay(value: number) {
    this.setOption("weightDecay", value);
  }
  get nesterov(): boolean {
    return this.sharedOption("nesterov") as boolean;
  }
  set nesterov(value: boolean) {
    this.setOption("nesterov", value);
  }

  protected override checkHyperparameters(where: string, values: Readonly<Record<string, unknown>>) {
    const momentum = checkNumber(where, "momentum", values.momentum ?? 0, 0);
    const dampening = checkNumber(where, "dampening", values.dampening ?? 0, 0, 1);
    const nesterov = values.nesterov ?? false;
    assertBoolean(where, "nesterov", nesterov);
    if (nesterov && (momentum === 0 || dampening !== 0)) throw new ValueError(`${where}: nesterov needs momentum > 0 and dampening 0`);
    return { momentum, dampening, weightDecay: checkNumber(where, "weightDecay", values.weightDecay ?? 0, 0), nesterov };
  }

  protected stateSpec(dtype: DType, { momentum }: Readonly<Record<string, unknown>>): { names: string[]; dtype: DType } {
    return { names: momentum === 0 ? [] : ["momentumBuffer"], dtype };
  }

  protected update(
    p: Tensor,
    grad: Tensor,
    state: Readonly<Record<string, Tensor>>,
    _step: number,
    lr: number,
    fresh: ReadonlySet<string>,
    { momentum, dampening, weightDecay, nesterov }: ParamGroup<SGDHyperparameters>,
  ): Tensor {
    let g = weightDecay === 0 ? grad : add(grad, mul(p, weightDecay));
    if (momentum !== 0) {
      const previous = state.momentumBuffer;
      const buffer = fresh.has("momentumBuffer") ? g : add(mul(previous, momentum), dampening === 0 ? g : mul(g, 1 - dampening));
      previous.assign(buffer);
      g = nesterov ? add(g, mul(buffer, momentum)) : buffer;
    }
    return sub(p, mul(g, lr));
  }
}

/** Adam's and AdamW's own hyperparameters, which each parameter group may set (the constructor's options for those it leaves out). */
export type AdamHyperparameters = {
  betas: readonly [number, number];
  eps: number;
  weightDecay: number;
};

export interface AdamOptions extends OptimizerOptions {
  /** Default 1e-3. */
  lr?: number;
  /** [beta1, beta2] (default [0.9, 0.999]). */
  betas?: readonly [number, number];
  /** Default 1e-8. */
  eps?: number;
  /** Adam: L2 added to the gradient; AdamW: decoupled decay of the weights. Default 0 (Adam), 0.01 (AdamW). */
  weightDecay?: number;
  /**
   * Count each parameter's steps and read the learning rate on the device (default false), as PyTorch's
   * `capturable`: then the update can be recorded with the forward and backward in one captureGraph and replayed
   * as a whole training step. Run one step eagerly first (it makes the state); `optimizer.lr = x` between replays
   * takes effect at the next one. betas, eps, weightDecay and the groups are constants of the captured step: a replay
   * after one changed (or addParamGroup) throws a GraphError, so capture the step again.
   */
  capturable?: boolean;
}

/** Adam (torch.optim.Adam): one multi-tensor kernel call updates every parameter of a step; m and v in float32. */
export class Adam extends Optimizer<AdamHyperparameters> {
  protected readonly decoupled: boolean;
  readonly #capturable: boolean;

  constructor(params: Iterable<Parameter> | Iterable<ParamGroupOptions<AdamHyperparameters>>, options?: AdamOptions | null, where = "Adam", decoupled = false) {
    // Only the documented options, as SGD; null means the defaults, as for core's ops.
    options = optionsArg(where, options, ["lr", "betas", "eps", "weightDecay", "capturable", "masterWeights", "lrScale"]);
    super(where, params, options.lr ?? 1e-3, options, ["betas", "eps", "weightDecay"]);
    const { capturable = false } = options;
    if (typeof capturable !== "boolean") throw new ValueError(`${where}: capturable must be true or false, got ${JSON.stringify(capturable)}`);
    this.#capturable = capturable;
    this.decoupled = decoupled;
    this.checkGroups();
  }

  // The value every parameter group has (a ValueError when they differ: read paramGroups[i]); setting one sets every group's.
  get betas(): readonly [number, number] {
    return this.sharedOption("betas") as readonly [number, number];
  }
  set betas(value: readonly [number, number]) {
    this.setOption("betas", value);
  }
  get eps(): number {
    return this.sharedOption("eps") as number;
  }
  set eps(value: number) {
    this.setOption("eps", value);
  }
  get weightDecay(): number {
    return this.sharedOption("weightDecay") as number;
  }
  set weightDecay(value: number) {
    this.setOption("weightDecay", value);
  }

  protected override checkHyperparameters(where: string, values: Readonly<Record<string, unknown>>) {
    const betas = values.betas ?? [0.9, 0.999];
    if (!Array.isArray(betas) || betas.length !== 2) throw new ValueError(`${where}: betas must be [beta1, beta2], got ${JSON.stringify(betas)}`);
    return {
      betas: [checkNumber(where, "betas[0]", betas[0], 0, 1, true), checkNumber(where, "betas[1]", betas[1], 0, 1, true)] as const,
      eps: checkNumber(where, "eps", values.eps ?? 1e-8, 0),
      weightDecay: checkNumber(where, "weightDecay", values.weightDecay ?? (this.decoupled ? 1e-2 : 0), 0),
    };
  }

  override get capturable(): boolean {
    return this.#capturable;
  }

  protected stateSpec(): { names: string[]; dtype: DType } {
    return { names: ["m", "v"], dtype: "float32" };
  }

  /**
   * A block that a pattern move adds starts with m = 0 and v = the mean of v over the weight's old blocks.
   * With v = 0, Adam's first steps on it would be (1 - beta1^k) / sqrt(1 - beta2^k) times lr: 3.2x at the
   * first, up to 6.5x around the tenth and still 3x at the hundredth (beta2's correction is about 1 once the
   * step count is large), so every block RigL grows would take its largest steps while it is new. From the
   * mean v its steps start near lr / 10 and reach about lr as m fills, as a block that had been there would.
   */
  protected override freshBlocks(name: string, old: Tensor, count: number): Tensor | undefined {
    if (name !== "v" || old.shape[0] === 0) return undefined;
    const [, blockHeight, blockWidth] = old.shape;
    return mul(fullOn(old.backend, [count, blockHeight, blockWidth], 1, old.dtype), mean(old));
  }

  /** The hyperparameters of `group` at this step (lr may have changed since the last). */
  private hyperparameters({ lr, betas, eps, weightDecay }: ParamGroup<AdamHyperparameters>) {
    return { lr, beta1: betas[0], beta2: betas[1], epsilon: eps, weightDecay, decoupledWeightDecay: this.decoupled };
  }

  protected update(
    param: Tensor,
    grad: Tensor,
    state: Readonly<Record<string, Tensor>>,
    step: number,
    lr: number,
    _fresh: ReadonlySet<string>,
    group: ParamGroup<AdamHyperparameters>,
  ): Tensor {
    const { m, v } = state;
    const next = adamUpdate(param, grad, m, v, { ...this.hyperparameters(group), lr, step });
    m.assign(next.m);
    v.assign(next.v);
    return next.param;
  }

  /**
   * Every parameter in one multi-tensor kernel call per parameter group and kind (one launch on a GPU): master
   * copies updated from their half-precision gradients and rounded back into the parameters inside the kernel,
   * with no cast of their own; parameters without a master updated directly.
   */
  protected override updateAll(updates: readonly ParameterUpdate<AdamHyperparameters>[]): void {
    // One launch per parameter group, kind of copy and learning rate (one in all for one group unless lrScale tells
    // parameters apart): a few launches, found by comparing fields (no keys built), each filling its lists as it goes.
    // Capturable: the steps are counted on the device and each group's learning rate read there (lr x lrScale, the
    // scale a fixed factor of the launch), so the same launches serve every replay of a captured step.
    const onDevice = this.#capturable;
    const launches: AdamLaunch[] = [];
    for (const u of updates) {
      const copyDType = u.master === null ? null : u.parameter.dtype;
      const lr = onDevice ? u.lrScale : u.lr;
      let launch: AdamLaunch | undefined;
      for (const l of launches) if (l.group === u.group && l.copyDType === copyDType && l.lr === lr) launch = l;
      if (launch === undefined) {
        launch = { group: u.group, copyDType, lr, updates: [], params: [], grads: [], m: [], v: [], steps: [], counts: [] };
        launches.push(launch);
      }
      launch.updates.push(u);
      launch.params.push(u.master ?? u.parameter.value);
      launch.grads.push(u.grad);
      launch.m.push(u.state.m);
      launch.v.push(u.state.v);
      launch.steps.push(u.step);
      if (onDevice) launch.counts.push(u.count as Tensor);
    }
    // In place: each parameter, master and moment is updated in its own buffer (multiTensorAdamUpdateInPlace runs
    // out of place and assigns where a clone or a graph not being recorded shares one).
    for (const launch of launches) {
      const hyperparameters = { ...this.hyperparameters(launch.group), lr: launch.lr };
      const lrValue = onDevice ? this.lrValueOn(launch.params[0].backend, launch.group) : null;
      const copies = launch.copyDType === null ? null : launch.updates.map((u) => u.parameter.value);
      const steps = onDevice ? launch.counts : launch.steps;
      multiTensorAdamUpdateInPlace(launch.params, launch.grads, launch.m, launch.v, { ...hyperparameters, steps, lrValue, copyDType: launch.copyDType, copies });
    }
  }
}

/** Parameters updated by one multi-tensor launch: the same parameter group, kind of copy and learning rate. */
interface AdamLaunch {
  group: ParamGroup<AdamHyperparameters>;
  copyDType: DType | null;
  lr: number;
  updates: ParameterUpdate<AdamHyperparameters>[];
  params: Tensor[];
  grads: Tensor[];
  m: Tensor[];
  v: Tensor[];
  steps: number[];
  /** The device step counts (capturable). */
  counts: Tensor[];
}

/** AdamW (torch.optim.AdamW): Adam with decoupled weight decay, default 0.01. */
export class AdamW extends Adam {
  constructor(params: Iterable<Parameter> | Iterable<ParamGroupOptions<AdamHyperparameters>>, options?: AdamOptions | null) {
    super(params, options, "AdamW", true);
  }
}
