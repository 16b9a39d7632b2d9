import { formatArg, formatShape, optionsArg, Tensor, ValueError } from "@blocksparse/core";
import { StateDictError } from "./errors";
import { Optimizer } from "./optim";

/** An option's value in a scheduler's state dict (JSON data). */
export type SchedulerOption = number | string | boolean | readonly number[];

/**
 * A scheduler's state (LRScheduler.stateDict), as torch's `scheduler.state_dict()`: plain JSON data that loads only
 * into a scheduler of the same kind.
 */
export interface LRSchedulerState {
  /** The scheduler's kind ("StepLR", "OneCycleLR", ...). */
  scheduler: string;
  /** Steps taken since construction (torch's last_epoch). */
  lastEpoch: number;
  /** The learning rate the schedule multiplies (torch's base_lrs / initial_lr): the first parameter group's. */
  baseLr: number;
  /** The learning rate the last step set (torch's _last_lr): the first parameter group's. */
  lastLr: number;
  /** With several parameter groups: each group's base lr and last lr (absent with one). */
  baseLrs?: number[];
  lastLrs?: number[];
  /** The options the schedule runs with (LambdaLR's function and SequentialLR's schedulers are not data: left out). */
  options: Record<string, SchedulerOption>;
  /** SequentialLR: its schedulers' states, in order. */
  schedulers?: LRSchedulerState[];
  /** ReduceLROnPlateau: the best metric so far (null before the first), the steps without improvement since, the cooldown steps left. */
  best?: number | null;
  numBadEpochs?: number;
  cooldownCounter?: number;
}

// torch's group["initial_lr"], set once per parameter group (setdefault): every scheduler made on an optimizer, the
// parts of a SequentialLR included, multiplies the lr each group had before the first of them changed it.
const initialLrs = new WeakMap<object, number>();

/** The one value of `values` (a scheduler's per-group lrs), or a ValueError telling to read `plural` when the groups differ. */
function single(where: string, values: readonly number[], plural: string): number {
  if (values.some((value) => value !== values[0])) throw new ValueError(`${where}: the parameter groups have different learning rates (${values.join(", ")}); read ${plural}`);
  return values[0];
}

function fail(where: string, name: string, what: string, value: unknown): never {
  throw new ValueError(`${where}: ${name} must be ${what}, got ${formatArg(value)}`);
}

/** A finite number in [low, high] (an end excluded when open). */
function num(where: string, name: string, value: unknown, low = 0, high = Number.POSITIVE_INFINITY, lowOpen = false, highOpen = false): number {
  const ok = typeof value === "number" && Number.isFinite(value) && (lowOpen ? value > low : value >= low) && (highOpen ? value < high : value <= high);
  if (!ok) fail(where, name, `a finite number ${high === Number.POSITIVE_INFINITY ? `${lowOpen ? ">" : ">="} ${low}` : `in ${lowOpen ? "(" : "["}${low}, ${high}${highOpen ? ")" : "]"}`}`, value);
  return value as number;
}

function int(where: string, name: string, value: unknown, low: number): number {
  if (!Number.isSafeInteger(value) || (value as number) < low) fail(where, name, `an integer >= ${low}`, value);
  return value as number;
}

function oneOf<T extends string>(where: string, name: string, value: unknown, choices: readonly T[]): T {
  if (!choices.includes(value as T)) fail(where, name, choices.map((c) => JSON.stringify(c)).join(" or "), value);
  return value as T;
}

function intList(where: string, name: string, value: unknown, low: number, increasing: boolean): number[] {
  if (!Array.isArray(value)) fail(where, name, "an array of integers", value);
  const list = value.map((v, i) => int(where, `${name}[${i}]`, v, low));
  list.forEach((v, i) => {
    if (increasing && i > 0 && v <= list[i - 1]) throw new ValueError(`${where}: ${name} must be increasing, got [${list}]`);
  });
  return list;
}

/**
 * Sets an optimizer's learning rate at every step, as torch.optim.lr_scheduler. Made on an optimizer, it takes each
 * parameter group's lr as that group's base (torch's initial_lr: the lr before the optimizer's first scheduler changed
 * it) and sets each group's lr for step 0; `step()`, called after `optimizer.step()`, advances `lastEpoch` and sets
 * the next lrs, each group's from its own base.
 * Each lr is computed from the base and the step count (closed forms), so long runs do not drift, and a schedule
 * replaces an lr set by hand at its next step: combine schedules with SequentialLR or LambdaLR, not by stacking.
 */
export abstract class LRScheduler<O extends object = object> {
  readonly optimizer: Optimizer;
  /** The kind, as state dicts name it ("StepLR"). */
  readonly kind: string;
  #options: O;
  #baseLrs: number[];
  #lastEpoch = 0;
  #lastLrs: number[];

  protected constructor(kind: string, optimizer: Optimizer, options: O | undefined, names: readonly string[]) {
    if (!(optimizer instanceof Optimizer)) throw new ValueError(`${kind}: expected an Optimizer (SGD, Adam, AdamW), got ${formatArg(optimizer)}`);
    this.kind = kind;
    this.optimizer = optimizer;
    this.#options = this.checkOptions(kind, { ...optionsArg(kind, options as Record<string, unknown> | undefined, names as string[]) });
    this.#baseLrs = optimizer.paramGroups.map((group, i) => this.initialLr(group, this.#options, i));
    this.#lastLrs = optimizer.paramGroups.map((group) => group.lr);
    this.goTo(0);
  }

  /** The options, checked and with their defaults. */
  get options(): Readonly<O> {
    return this.#options;
  }

  /** The lr the schedule multiplies (torch's base_lrs), when every parameter group has the same (else a ValueError: read baseLrs). */
  get baseLr(): number {
    return single(`${this.kind}.baseLr`, this.#baseLrs, "baseLrs");
  }

  /** Parameter group `group`'s base lr. */
  protected baseLrOf(group: number): number {
    return this.#baseLrs[group];
  }

  /** Each parameter group's base lr (torch's base_lrs). */
  get baseLrs(): readonly number[] {
    return [...this.#baseLrs];
  }

  /** Steps taken since construction (torch's last_epoch; 0 after the constructor). */
  get lastEpoch(): number {
    return this.#lastEpoch;
  }

  /** The lr the last step (or the constructor) set, when every parameter group has the same (else a ValueError: read lastLrs). */
  get lastLr(): number {
    return single(`${this.kind}.lastLr`, this.#lastLrs, "lastLrs");
  }

  /** The lr the last step (or the constructor) set in each parameter group (torch's get_last_lr()). */
  get lastLrs(): readonly number[] {
    return [...this.#lastLrs];
  }

  /** torch's get_last_lr() for an optimizer whose groups share one learning rate (lastLrs for each group's). */
  getLastLr(): number {
    return this.lastLr;
  }

  /** Advances one step and sets each parameter group's lr; call it after optimizer.step(). (ReduceLROnPlateau takes the metric.) */
  step(metric?: number): void {
    if (metric !== undefined) throw new ValueError(`${this.kind}.step takes no argument, got ${formatArg(metric)} (torch's step(epoch) is left out)`);
    this.goTo(this.#lastEpoch + 1);
  }

  /** Parameter group `group`'s lr at step `epoch`, from its base lr (baseLrs[group]) and the options. */
  protected abstract lrAt(epoch: number, group: number): number;

  /** `options` checked as the constructor checks them (and loadStateDict those it loads), defaults filled in. */
  protected abstract checkOptions(where: string, options: Record<string, unknown>): O;

  /** Parameter group `index`'s base lr: torch's initial_lr of the group. */
  protected initialLr(group: { lr: number }, _options: O, _index: number): number {
    const lr = initialLrs.get(group) ?? group.lr;
    initialLrs.set(group, lr);
    return lr;
  }

  /** The options as JSON data, for stateDict. */
  protected optionsState(): Record<string, SchedulerOption> {
    return { ...(this.#options as Record<string, SchedulerOption>) };
  }

  /** Fields of the state besides the common ones. */
  protected extraState(): Partial<LRSchedulerState> {
    return {};
  }

  /** Checks the extra fields of a state to load; the function returned sets them. */
  protected loadExtra(_where: string, _state: LRSchedulerState): () => void {
    return () => {};
  }

  /** The optimizer's parameter groups, as many as when this scheduler was made (a group added since has no base lr). */
  protected groups(): readonly { lr: number }[] {
    const groups = this.optimizer.paramGroups;
    if (groups.length !== this.#baseLrs.length) {
      throw new ValueError(`${this.kind}: the optimizer has ${groups.length} parameter groups, ${this.#baseLrs.length} when this scheduler was made; make schedulers after addParamGroup`);
    }
    return groups;
  }

  /** Sets step `epoch` with each parameter group's learning rate `lrs[i]`. */
  protected commit(epoch: number, lrs: readonly number[]): void {
    this.groups().forEach((group, i) => {
      group.lr = lrs[i];
    });
    this.#lastEpoch = epoch;
    this.#lastLrs = [...lrs];
  }

  /** Sets step `epoch` with its scheduled lrs (checked before anything changes). */
  protected goTo(epoch: number): void {
    const lrs = this.groups().map((_, i) => this.lrAt(epoch, i));
    lrs.forEach((lr, i) => {
      if (!(Number.isFinite(lr) && lr >= 0)) {
        throw new ValueError(`${this.kind}.step: the learning rate at step ${epoch} is ${formatArg(lr)}${lrs.length > 1 ? ` (paramGroups[${i}])` : ""}, expected a finite number >= 0`);
      }
    });
    this.commit(epoch, lrs);
  }

  /** `child`'s lr at `epoch` for parameter group `group` (SequentialLR). */
  protected lrOf(child: LRScheduler, epoch: number, group: number): number {
    return child.lrAt(epoch, group);
  }

  /** Sets `child` at step `epoch` (SequentialLR). */
  protected move(child: LRScheduler, epoch: number): void {
    child.goTo(epoch);
  }

  /** The state a resumed run needs, as JSON data: `loadStateDict(JSON.parse(JSON.stringify(s.stateDict())))` restores it exactly. */
  stateDict(): LRSchedulerState {
    const [baseLr, lastLr] = [this.#baseLrs[0], this.#lastLrs[0]];
    const perGroup = this.#baseLrs.length > 1 ? { baseLrs: [...this.#baseLrs], lastLrs: [...this.#lastLrs] } : {};
    return { scheduler: this.kind, lastEpoch: this.#lastEpoch, baseLr, lastLr, ...perGroup, options: this.optionsState(), ...this.extraState() };
  }

  /**
   * Restores stateDict()'s state: the next step() sets the lr the saved run's next step would have, and each parameter
   * group's lr takes the saved lastLr (lastLrs[i] with several groups). Everything is checked before anything changes: a state of another kind, missing or
   * unknown fields are a StateDictError naming them, a field's bad value a ValueError naming it ("options.gamma").
   */
  loadStateDict(state: LRSchedulerState): void {
    const where = `${this.kind}.loadStateDict`;
    if (state === null || typeof state !== "object" || Array.isArray(state)) fail(where, "state", "an object (stateDict())", state);
    const own = this.stateDict();
    if (state.scheduler !== this.kind) {
      throw new StateDictError([], [], [{ key: "scheduler", expected: JSON.stringify(this.kind), got: formatArg(state.scheduler), reason: "type" }], where);
    }
    const options = state.options as Record<string, unknown>;
    if (options === null || typeof options !== "object" || Array.isArray(options)) fail(where, "options", "an object", options);
    const keys = (o: object, prefix = "") => Object.keys(o).map((k) => prefix + k);
    const ownKeys = [...keys(own), ...keys(own.options, "options.")];
    const savedKeys = [...keys(state), ...keys(options, "options.")];
    const missing = ownKeys.filter((k) => !savedKeys.includes(k));
    const unexpected = savedKeys.filter((k) => !ownKeys.includes(k));
    if (missing.length + unexpected.length > 0) throw new StateDictError(missing, unexpected, [], where);
    const lastEpoch = int(where, "lastEpoch", state.lastEpoch, 0);
    const baseLr = num(where, "baseLr", state.baseLr);
    const lastLr = num(where, "lastLr", state.lastLr);
    // Several groups: each group's lists (their presence is checked with the keys above).
    const count = this.#baseLrs.length;
    const list = (name: "baseLrs" | "lastLrs", first: number) => {
      if (count === 1) return [first];
      const values = state[name];
      if (!Array.isArray(values) || values.length !== count) fail(where, name, `an array of ${count} learning rates (one per parameter group)`, values);
      return values.map((value, i) => num(where, `${name}[${i}]`, value));
    };
    const baseLrs = list("baseLrs", baseLr);
    const lastLrs = list("lastLrs", lastLr);
    const checked = this.checkOptions(where, { ...this.#options, ...Object.fromEntries(Object.entries(options).map(([k, v]) => [`options.${k}`, v])) });
    this.loadExtra(where, state)();
    this.#options = checked;
    this.#baseLrs = baseLrs;
    this.commit(lastEpoch, lastLrs);
  }
}

/** An option read from `o` by name, or from "options.<name>" (loadStateDict), with its name for messages. */
function opt(o: Record<string, unknown>, name: string, fallback?: unknown): [string, unknown] {
  const key = `options.${name}`;
  return key in o ? [key, o[key]] : [name, o[name] === undefined ? fallback : o[name]];
}

function getNum(where: string, o: Record<string, unknown>, name: string, fallback: unknown, low = 0, high = Number.POSITIVE_INFINITY, lowOpen = false, highOpen = false): number {
  const [label, value] = opt(o, name, fallback);
  return num(where, label, value, low, high, lowOpen, highOpen);
}

function getInt(where: string, o: Record<string, unknown>, name: string, fallback: unknown, low: number): number {
  const [label, value] = opt(o, name, fallback);
  return int(where, label, value, low);
}

/**
 * An option given once for every parameter group or as an array of one per group (torch's lists per group): a length
 * other than the optimizer's number of groups is a ValueError naming both counts.
 */
function perGroup<T>(where: string, label: string, value: unknown, groups: number, check: (label: string, item: unknown) => T): T | T[] {
  if (!Array.isArray(value)) return check(label, value);
  if (value.length !== groups) {
    throw new ValueError(`${where}: ${label} has ${value.length} ${value.length === 1 ? "entry" : "entries"}, but the optimizer has ${groups} parameter ${groups === 1 ? "group" : "groups"} (give one, or one per group)`);
  }
  return value.map((item, i) => check(`${label}[${i}]`, item));
}

/** Parameter group `group`'s value of an option given once or per group. */
function ofGroup<T>(value: T | readonly T[], group: number): T {
  return Array.isArray(value) ? value[group] : (value as T);
}

export interface LambdaLROptions {
  /** The lr at step `epoch` as a multiple of the base lr: one function for every parameter group, or an array of one per group. */
  lrLambda: ((epoch: number) => number) | readonly ((epoch: number) => number)[];
}

/**
 * lr = baseLr * lrLambda(epoch), as torch's LambdaLR; with an array of functions, group i's lr uses lrLambda[i]. Its
 * state dict leaves out the functions: the loading scheduler keeps its own.
 */
export class LambdaLR extends LRScheduler<LambdaLROptions> {
  constructor(optimizer: Optimizer, options: LambdaLROptions) {
    super("LambdaLR", optimizer, options, ["lrLambda"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): LambdaLROptions {
    const lrLambda = perGroup(where, "lrLambda", o.lrLambda, this.optimizer.paramGroups.length, (label, value) => {
      if (typeof value !== "function") fail(where, label, "a function of the step", value);
      return value as (epoch: number) => number;
    });
    return { lrLambda: Array.isArray(lrLambda) ? Object.freeze(lrLambda) : lrLambda };
  }
  protected override optionsState(): Record<string, SchedulerOption> {
    return {};
  }
  protected lrAt(epoch: number, group: number): number {
    const lambdas = this.options.lrLambda;
    const factor = ofGroup(lambdas, group)(epoch);
    if (typeof factor !== "number" || !Number.isFinite(factor)) {
      throw new ValueError(`LambdaLR: lrLambda${Array.isArray(lambdas) ? `[${group}]` : ""}(${epoch}) gave ${formatArg(factor)}, expected a finite number`);
    }
    return this.baseLrOf(group) * factor;
  }
}

export interface StepLROptions {
  /** Steps between decays (an integer >= 1). */
  stepSize: number;
  /** The factor of each decay (default 0.1). */
  gamma?: number;
}

/** lr = baseLr * gamma^floor(epoch / stepSize), as torch's StepLR. */
export class StepLR extends LRScheduler<Required<StepLROptions>> {
  constructor(optimizer: Optimizer, options: StepLROptions) {
    super("StepLR", optimizer, options as Required<StepLROptions>, ["stepSize", "gamma"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<StepLROptions> {
    return { stepSize: getInt(where, o, "stepSize", undefined, 1), gamma: getNum(where, o, "gamma", 0.1) };
  }
  protected lrAt(epoch: number, group: number): number {
    return this.baseLrOf(group) * this.options.gamma ** Math.floor(epoch / this.options.stepSize);
  }
}

export interface MultiStepLROptions {
  /** Steps at which the lr decays (integers >= 0, any order; one given twice decays twice, as torch's Counter). */
  milestones: readonly number[];
  /** The factor of each decay (default 0.1). */
  gamma?: number;
}

/** lr = baseLr * gamma^(milestones <= epoch), as torch's MultiStepLR. */
export class MultiStepLR extends LRScheduler<Required<MultiStepLROptions>> {
  constructor(optimizer: Optimizer, options: MultiStepLROptions) {
    super("MultiStepLR", optimizer, options as Required<MultiStepLROptions>, ["milestones", "gamma"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<MultiStepLROptions> {
    const [label, value] = opt(o, "milestones");
    return { milestones: intList(where, label, value, 0, false).sort((a, b) => a - b), gamma: getNum(where, o, "gamma", 0.1) };
  }
  protected override optionsState(): Record<string, SchedulerOption> {
    return { milestones: [...this.options.milestones], gamma: this.options.gamma };
  }
  protected lrAt(epoch: number, group: number): number {
    return this.baseLrOf(group) * this.options.gamma ** this.options.milestones.filter((m) => m <= epoch).length;
  }
}

export interface ExponentialLROptions {
  /** The factor of each step's decay. */
  gamma: number;
}

/** lr = baseLr * gamma^epoch, as torch's ExponentialLR. */
export class ExponentialLR extends LRScheduler<ExponentialLROptions> {
  constructor(optimizer: Optimizer, options: ExponentialLROptions) {
    super("ExponentialLR", optimizer, options, ["gamma"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): ExponentialLROptions {
    return { gamma: getNum(where, o, "gamma", undefined) };
  }
  protected lrAt(epoch: number, group: number): number {
    return this.baseLrOf(group) * this.options.gamma ** epoch;
  }
}

export interface ConstantLROptions {
  /** The lr's multiple until totalIters (in [0, 1], default 1/3). */
  factor?: number;
  /** Steps at the reduced lr (an integer >= 1, default 5). */
  totalIters?: number;
}

/** lr = baseLr * factor before step totalIters, baseLr from then on, as torch's ConstantLR. */
export class ConstantLR extends LRScheduler<Required<ConstantLROptions>> {
  constructor(optimizer: Optimizer, options?: ConstantLROptions | null) {
    super("ConstantLR", optimizer, (options ?? undefined) as Required<ConstantLROptions>, ["factor", "totalIters"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<ConstantLROptions> {
    return { factor: getNum(where, o, "factor", 1 / 3, 0, 1), totalIters: getInt(where, o, "totalIters", 5, 1) };
  }
  protected lrAt(epoch: number, group: number): number {
    return epoch >= this.options.totalIters ? this.baseLrOf(group) : this.baseLrOf(group) * this.options.factor;
  }
}

export interface LinearLROptions {
  /** The lr's multiple at step 0 (in (0, 1], default 1/3). */
  startFactor?: number;
  /** The lr's multiple from totalIters on (in [0, 1], default 1). */
  endFactor?: number;
  /** Steps of the ramp (an integer >= 1, default 5). */
  totalIters?: number;
}

/** lr = baseLr * (startFactor + (endFactor - startFactor) * min(epoch, totalIters) / totalIters), as torch's LinearLR (a warm-up). */
export class LinearLR extends LRScheduler<Required<LinearLROptions>> {
  constructor(optimizer: Optimizer, options?: LinearLROptions | null) {
    super("LinearLR", optimizer, (options ?? undefined) as Required<LinearLROptions>, ["startFactor", "endFactor", "totalIters"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<LinearLROptions> {
    return {
      startFactor: getNum(where, o, "startFactor", 1 / 3, 0, 1, true),
      endFactor: getNum(where, o, "endFactor", 1, 0, 1),
      totalIters: getInt(where, o, "totalIters", 5, 1),
    };
  }
  protected lrAt(epoch: number, group: number): number {
    const { startFactor, endFactor, totalIters } = this.options;
    return this.baseLrOf(group) * (startFactor + ((endFactor - startFactor) * Math.min(epoch, totalIters)) / totalIters);
  }
}

export interface CosineAnnealingLROptions {
  /** Steps from the base lr down to etaMin (an integer >= 1); the schedule then rises again, with period 2 * tMax, as torch's. */
  tMax: number;
  /** The lowest lr (default 0). */
  etaMin?: number;
}

/** lr = etaMin + (baseLr - etaMin) * (1 + cos(pi * epoch / tMax)) / 2, as torch's CosineAnnealingLR. */
export class CosineAnnealingLR extends LRScheduler<Required<CosineAnnealingLROptions>> {
  constructor(optimizer: Optimizer, options: CosineAnnealingLROptions) {
    super("CosineAnnealingLR", optimizer, options as Required<CosineAnnealingLROptions>, ["tMax", "etaMin"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<CosineAnnealingLROptions> {
    return { tMax: getInt(where, o, "tMax", undefined, 1), etaMin: getNum(where, o, "etaMin", 0) };
  }
  protected lrAt(epoch: number, group: number): number {
    const { tMax, etaMin } = this.options;
    return cosine(this.baseLrOf(group), etaMin, epoch % (2 * tMax), tMax);
  }
}

function cosine(high: number, low: number, t: number, period: number): number {
  return low + ((high - low) * (1 + Math.cos((Math.PI * t) / period))) / 2;
}

export interface CosineAnnealingWarmRestartsOptions {
  /** Steps of the first cycle (an integer >= 1). */
  t0: number;
  /** Each cycle's length as a multiple of the one before (an integer >= 1, default 1). */
  tMult?: number;
  /** The lowest lr (default 0). */
  etaMin?: number;
}

/**
 * Cosine cycles from baseLr to etaMin, restarting at baseLr after t0, then t0 * tMult, ... steps (SGDR), as torch's
 * CosineAnnealingWarmRestarts stepped once a step (torch's fractional step(epoch) is left out).
 */
export class CosineAnnealingWarmRestarts extends LRScheduler<Required<CosineAnnealingWarmRestartsOptions>> {
  constructor(optimizer: Optimizer, options: CosineAnnealingWarmRestartsOptions) {
    super("CosineAnnealingWarmRestarts", optimizer, options as Required<CosineAnnealingWarmRestartsOptions>, ["t0", "tMult", "etaMin"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<CosineAnnealingWarmRestartsOptions> {
    return { t0: getInt(where, o, "t0", undefined, 1), tMult: getInt(where, o, "tMult", 1, 1), etaMin: getNum(where, o, "etaMin", 0) };
  }
  protected lrAt(epoch: number, group: number): number {
    const { t0, tMult, etaMin } = this.options;
    // Whole cycles in integers (exact where torch's log-based closed form rounds); at most log2(epoch) of them when tMult >= 2.
    let [t, period] = [tMult === 1 ? epoch % t0 : epoch, t0];
    while (t >= period) [t, period] = [t - period, period * tMult];
    return cosine(this.baseLrOf(group), etaMin, t, period);
  }
}

export interface PolynomialLROptions {
  /** Steps of the decay to 0 (an integer >= 1, default 5). */
  totalIters?: number;
  /** The polynomial's power (>= 0, default 1: linear). */
  power?: number;
}

/** lr = baseLr * (1 - min(epoch, totalIters) / totalIters)^power, as torch's PolynomialLR. */
export class PolynomialLR extends LRScheduler<Required<PolynomialLROptions>> {
  constructor(optimizer: Optimizer, options?: PolynomialLROptions | null) {
    super("PolynomialLR", optimizer, (options ?? undefined) as Required<PolynomialLROptions>, ["totalIters", "power"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<PolynomialLROptions> {
    return { totalIters: getInt(where, o, "totalIters", 5, 1), power: getNum(where, o, "power", 1) };
  }
  protected lrAt(epoch: number, group: number): number {
    const { totalIters, power } = this.options;
    return this.baseLrOf(group) * (1 - Math.min(epoch, totalIters) / totalIters) ** power;
  }
}

export interface SequentialLROptions {
  /** The schedules, made on the same optimizer, each in turn. */
  schedulers: readonly LRScheduler[];
  /** The steps at which the next schedule starts from its step 0 (increasing integers >= 1, one fewer than schedulers). */
  milestones: readonly number[];
}

/**
 * Runs schedulers[i] from milestones[i - 1] on, restarted at its step 0, as torch's SequentialLR: warm-up then decay
 * is `new SequentialLR(opt, { schedulers: [new LinearLR(opt, ...), new CosineAnnealingLR(opt, ...)], milestones: [w] })`.
 */
export class SequentialLR extends LRScheduler<SequentialLROptions> {
  constructor(optimizer: Optimizer, options: SequentialLROptions) {
    super("SequentialLR", optimizer, options, ["schedulers", "milestones"]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): SequentialLROptions {
    const schedulers = o.schedulers;
    if (!Array.isArray(schedulers) || schedulers.length === 0) fail(where, "schedulers", "a non-empty array of LRSchedulers", schedulers);
    schedulers.forEach((s, i) => {
      if (!(s instanceof LRScheduler) || s instanceof ReduceLROnPlateau) fail(where, `schedulers[${i}]`, "an LRScheduler other than ReduceLROnPlateau", s);
      if (s.optimizer !== this.optimizer) throw new ValueError(`${where}: schedulers[${i}] was made on another optimizer`);
    });
    const [label, value] = opt(o, "milestones");
    const milestones = intList(where, label, value, 1, true);
    if (milestones.length !== schedulers.length - 1) {
      throw new ValueError(`${where}: ${label} must have ${schedulers.length - 1} entries (one fewer than schedulers), got [${milestones}]`);
    }
    return { schedulers: [...schedulers], milestones };
  }
  protected override optionsState(): Record<string, SchedulerOption> {
    return { milestones: [...this.options.milestones] };
  }
  protected override extraState(): Partial<LRSchedulerState> {
    return { schedulers: this.options.schedulers.map((s) => s.stateDict()) };
  }
  protected override loadExtra(where: string, state: LRSchedulerState): () => void {
    const states = state.schedulers;
    const children = this.options.schedulers;
    if (!Array.isArray(states) || states.length !== children.length) fail(where, "schedulers", `an array of ${children.length} scheduler states`, states);
    // Each part checks its state by loading it; a later part's refusal puts the earlier ones back.
    const before = children.map((s) => s.stateDict());
    return () => {
      // Each load sets the optimizer's lrs to that part's: a refusal puts them back too (they stayed the first part's).
      const lrs = this.groups().map((group) => group.lr);
      let i = 0;
      try {
        for (; i < children.length; i++) children[i].loadStateDict(states[i]);
      } catch (error) {
        for (let j = 0; j < i; j++) children[j].loadStateDict(before[j]);
        this.groups().forEach((group, g) => {
          group.lr = lrs[g];
        });
        throw error;
      }
    };
  }
  protected lrAt(epoch: number, group: number): number {
    return this.lrOf(...runningAt(this.options, epoch), group);
  }
  override step(metric?: number): void {
    super.step(metric);
    this.move(...runningAt(this.options, this.lastEpoch));
  }
}

/** SequentialLR's running scheduler at `epoch` and its own step (a function: the constructor's step 0 runs before private methods exist). */
function runningAt({ schedulers, milestones }: SequentialLROptions, epoch: number): [LRScheduler, number] {
  const index = milestones.filter((m) => m <= epoch).length;
  return [schedulers[index], index === 0 ? epoch : epoch - milestones[index - 1]];
}

export interface OneCycleLROptions {
  /** The peak lr: one for every parameter group, or an array of one per group (torch's list of max_lr). */
  maxLr: number | readonly number[];
  /** Steps of the cycle (an integer >= 1), or give epochs and stepsPerEpoch. */
  totalSteps?: number;
  epochs?: number;
  stepsPerEpoch?: number;
  /** The part of the cycle spent rising (in [0, 1], default 0.3). */
  pctStart?: number;
  /** "cos" (the default) or "linear". */
  annealStrategy?: "cos" | "linear";
  /** The first lr is maxLr / divFactor (default 25). */
  divFactor?: number;
  /** The last lr is maxLr / divFactor / finalDivFactor (default 1e4). */
  finalDivFactor?: number;
  /** Rise, fall back to the first lr, then anneal to the last (default false: rise, then anneal), as torch's. */
  threePhase?: boolean;
}

type OneCycleResolved = Required<Omit<OneCycleLROptions, "epochs" | "stepsPerEpoch">>;

/**
 * The 1cycle policy, as torch's OneCycleLR: from maxLr / divFactor up to maxLr over pctStart of totalSteps, then down
 * to maxLr / divFactor / finalDivFactor. It sets its own base lr (the optimizer's lr is replaced); a step past
 * totalSteps is a ValueError, as torch's. torch's momentum cycling (cycleMomentum) is left out: momentum stays.
 */
export class OneCycleLR extends LRScheduler<OneCycleResolved> {
  constructor(optimizer: Optimizer, options: OneCycleLROptions) {
    super("OneCycleLR", optimizer, options as unknown as OneCycleResolved, [
      "maxLr",
      "totalSteps",
      "epochs",
      "stepsPerEpoch",
      "pctStart",
      "annealStrategy",
      "divFactor",
      "finalDivFactor",
      "threePhase",
    ]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): OneCycleResolved {
    let totalSteps: number;
    if ("options.totalSteps" in o || o.totalSteps !== undefined) {
      if (o.epochs !== undefined || o.stepsPerEpoch !== undefined) throw new ValueError(`${where}: give totalSteps, or epochs and stepsPerEpoch, not both`);
      totalSteps = getInt(where, o, "totalSteps", undefined, 1);
    } else {
      if (o.epochs === undefined && o.stepsPerEpoch === undefined) throw new ValueError(`${where}: totalSteps (or epochs and stepsPerEpoch) is needed`);
      totalSteps = int(where, "epochs", o.epochs, 1) * int(where, "stepsPerEpoch", o.stepsPerEpoch, 1);
    }
    const [label, threePhase] = opt(o, "threePhase", false);
    if (typeof threePhase !== "boolean") fail(where, label, "a boolean", threePhase);
    const [strategyLabel, strategy] = opt(o, "annealStrategy", "cos");
    const [maxLrLabel, maxLr] = opt(o, "maxLr");
    return {
      maxLr: perGroup(where, maxLrLabel, maxLr, this.optimizer.paramGroups.length, (label, value) => num(where, label, value)),
      totalSteps,
      pctStart: getNum(where, o, "pctStart", 0.3, 0, 1),
      annealStrategy: oneOf(where, strategyLabel, strategy, ["cos", "linear"] as const),
      divFactor: getNum(where, o, "divFactor", 25, 0, Number.POSITIVE_INFINITY, true),
      finalDivFactor: getNum(where, o, "finalDivFactor", 1e4, 0, Number.POSITIVE_INFINITY, true),
      threePhase,
    };
  }
  protected override optionsState(): Record<string, SchedulerOption> {
    const { maxLr } = this.options;
    return { ...super.optionsState(), maxLr: Array.isArray(maxLr) ? [...maxLr] : maxLr };
  }
  protected override initialLr(group: { lr: number }, options: OneCycleResolved, index: number): number {
    const lr = ofGroup(options.maxLr, index) / options.divFactor;
    initialLrs.set(group, lr);
    return lr;
  }
  protected lrAt(epoch: number, group: number): number {
    const { totalSteps, pctStart, annealStrategy, finalDivFactor, threePhase } = this.options;
    const maxLr = ofGroup(this.options.maxLr, group);
    if (epoch > totalSteps) throw new ValueError(`OneCycleLR.step: tried to step ${epoch} times; totalSteps is ${totalSteps}`);
    const initial = this.baseLrOf(group);
    const min = initial / finalDivFactor;
    const rise = pctStart * totalSteps - 1;
    // [end step, start lr, end lr] of each phase, as torch's _schedule_phases.
    const phases: [number, number, number][] = threePhase
      ? [
          [rise, initial, maxLr],
          [2 * pctStart * totalSteps - 2, maxLr, initial],
          [totalSteps - 1, initial, min],
        ]
      : [
          [rise, initial, maxLr],
          [totalSteps - 1, maxLr, min],
        ];
    let start = 0;
    for (let i = 0; i < phases.length; i++) {
      const [end, from, to] = phases[i];
      if (epoch <= end || i === phases.length - 1) {
        // torch divides by zero here (ZeroDivisionError) for a phase of no length.
        if (end === start) throw new ValueError(`OneCycleLR: pctStart ${pctStart} with totalSteps ${totalSteps} leaves phase ${i + 1} without steps`);
        // torch takes steps up to totalSteps, one past the last phase's end: linear annealing then passes the final lr
        // (negative where it is small), so it stops there; cos at pct > 1 turns back up as torch's does.
        const through = (epoch - start) / (end - start);
        const pct = annealStrategy === "linear" ? Math.min(1, through) : through;
        return annealStrategy === "cos" ? to + ((from - to) / 2) * (Math.cos(Math.PI * pct) + 1) : (to - from) * pct + from;
      }
      start = end;
    }
    return Number.NaN;
  }
}

export interface ReduceLROnPlateauOptions {
  /** "min" (the default: the metric should fall, as a loss) or "max" (rise, as an accuracy). */
  mode?: "min" | "max";
  /** The lr's factor at each reduction (in [0, 1), default 0.1). */
  factor?: number;
  /** Steps without improvement tolerated before a reduction (an integer >= 0, default 10). */
  patience?: number;
  /** The improvement that counts (>= 0, default 1e-4), relative to the best or absolute (thresholdMode). */
  threshold?: number;
  /** "rel" (the default) or "abs". */
  thresholdMode?: "rel" | "abs";
  /** Steps after a reduction before counting again (an integer >= 0, default 0). */
  cooldown?: number;
  /** The lowest lr (>= 0, default 0): one for every parameter group, or an array of one per group (torch's list of min_lr). */
  minLr?: number | readonly number[];
  /** A reduction smaller than this is skipped (>= 0, default 1e-8). */
  eps?: number;
}

/**
 * Reduces the lr by `factor` when a metric stops improving for `patience` steps, as torch's ReduceLROnPlateau:
 * `scheduler.step(validationLoss)`. It reads each parameter group's lr when it reduces, so an lr set by hand is reduced from.
 * A NaN metric counts as no improvement, as torch's.
 */
export class ReduceLROnPlateau extends LRScheduler<Required<ReduceLROnPlateauOptions>> {
  #best: number | null = null;
  #numBadEpochs = 0;
  #cooldownCounter = 0;

  constructor(optimizer: Optimizer, options?: ReduceLROnPlateauOptions | null) {
    super("ReduceLROnPlateau", optimizer, (options ?? undefined) as Required<ReduceLROnPlateauOptions>, [
      "mode",
      "factor",
      "patience",
      "threshold",
      "thresholdMode",
      "cooldown",
      "minLr",
      "eps",
    ]);
  }
  protected checkOptions(where: string, o: Record<string, unknown>): Required<ReduceLROnPlateauOptions> {
    const [modeLabel, mode] = opt(o, "mode", "min");
    const [thresholdLabel, thresholdMode] = opt(o, "thresholdMode", "rel");
    const [minLrLabel, minLr] = opt(o, "minLr", 0);
    return {
      mode: oneOf(where, modeLabel, mode, ["min", "max"] as const),
      factor: getNum(where, o, "factor", 0.1, 0, 1, false, true),
      patience: getInt(where, o, "patience", 10, 0),
      threshold: getNum(where, o, "threshold", 1e-4),
      thresholdMode: oneOf(where, thresholdLabel, thresholdMode, ["rel", "abs"] as const),
      cooldown: getInt(where, o, "cooldown", 0, 0),
      minLr: perGroup(where, minLrLabel, minLr, this.optimizer.paramGroups.length, (label, value) => num(where, label, value)),
      eps: getNum(where, o, "eps", 1e-8),
    };
  }
  protected override optionsState(): Record<string, SchedulerOption> {
    const { minLr } = this.options;
    return { ...super.optionsState(), minLr: Array.isArray(minLr) ? [...minLr] : minLr };
  }
  protected override initialLr(group: { lr: number }): number {
    return group.lr;
  }
  protected lrAt(_epoch: number, group: number): number {
    return this.optimizer.paramGroups[group].lr;
  }

  /** The best metric so far (null before the first step). */
  get best(): number | null {
    return this.#best;
  }

  /** Steps since the best metric (torch's num_bad_epochs). */
  get numBadEpochs(): number {
    return this.#numBadEpochs;
  }

  #isBetter(value: number): boolean {
    const { mode, threshold, thresholdMode } = this.options;
    const best = this.#best ?? (mode === "min" ? Number.POSITIVE_INFINITY : Number.NEGATIVE_INFINITY);
    const rel = thresholdMode === "rel";
    return mode === "min" ? value < (rel ? best * (1 - threshold) : best - threshold) : value > (rel ? best * (threshold + 1) : best + threshold);
  }

  /**
   * Takes this step's metric (a loss in mode "min"), and reduces each group's lr after `patience` steps without
   * improvement. The metric is a number or a one-element Tensor (`step(valLoss)`, as torch's float(metric)): a tensor's
   * value is read back from its device, which waits for the work queued there (a synchronization, as in torch).
   */
  override step(metric?: number | Tensor): void {
    const { mode, patience, cooldown, factor, minLr, eps } = this.options;
    if (metric instanceof Tensor && metric.size !== 1) {
      throw new ValueError(`ReduceLROnPlateau.step: metric must be a number or a one-element Tensor, got a Tensor ${formatShape(metric.shape)} ${metric.dtype} (${metric.size} elements)`);
    }
    const value = metric instanceof Tensor ? metric.item() : metric;
    if (typeof value !== "number") fail("ReduceLROnPlateau.step", "metric", "a number or a one-element Tensor", value);
    // An infinitely good metric would be a best that JSON cannot hold, and no later value could improve on it.
    if (value === (mode === "min" ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY)) fail("ReduceLROnPlateau.step", "metric", `finite in mode "${mode}"`, value);
    if (this.#isBetter(value)) {
      this.#best = value;
      this.#numBadEpochs = 0;
    } else {
      this.#numBadEpochs++;
    }
    if (this.#cooldownCounter > 0) {
      this.#cooldownCounter--;
      this.#numBadEpochs = 0;
    }
    const reduce = this.#numBadEpochs > patience;
    // Each group's lr is reduced from its own, as torch's.
    const lrs = this.groups().map(({ lr }, i) => {
      const reduced = Math.max(lr * factor, ofGroup(minLr, i));
      return reduce && lr - reduced > eps ? reduced : lr;
    });
    if (reduce) {
      this.#cooldownCounter = cooldown;
      this.#numBadEpochs = 0;
    }
    this.commit(this.lastEpoch + 1, lrs);
  }

  protected override extraState(): Partial<LRSchedulerState> {
    return { best: this.#best, numBadEpochs: this.#numBadEpochs, cooldownCounter: this.#cooldownCounter };
  }
  protected override loadExtra(where: string, state: LRSchedulerState): () => void {
    const best = state.best;
    if (best !== null && (typeof best !== "number" || !Number.isFinite(best))) fail(where, "best", "a finite number or null", best);
    const numBadEpochs = int(where, "numBadEpochs", state.numBadEpochs, 0);
    const cooldownCounter = int(where, "cooldownCounter", state.cooldownCounter, 0);
    return () => {
      [this.#best, this.#numBadEpochs, this.#cooldownCounter] = [best as number | null, numBadEpochs, cooldownCounter];
    };
  }
}
