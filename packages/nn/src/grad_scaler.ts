import { noGrad } from "@blocksparse/autograd";
import { assertBoolean, cast, concat, formatArg, GraphError, isCapturing, keep, mul, optionsArg, reshape, sum, Tensor, tidy, ValueError } from "@blocksparse/core";
import { NnError } from "./errors";
import { Optimizer } from "./optim";
import { describeValue } from "./serialization";

export interface GradScalerOptions {
  /** The first scale (default 2^16). */
  initScale?: number;
  /** Factor the scale grows by after `growthInterval` steps without inf/NaN (default 2). */
  growthFactor?: number;
  /** Factor the scale shrinks by after a step with inf/NaN gradients (default 0.5). */
  backoffFactor?: number;
  /** Steps without inf/NaN before the scale grows (default 2000). */
  growthInterval?: number;
  /** false: every method passes through (scale 1, no checks), so one script serves float32 and float16 (default true). */
  enabled?: boolean;
}

/** What a GradScaler carries between runs (save it with the optimizer state), as torch's `scaler.state_dict()`. */
export interface GradScalerState {
  scale: number;
  growthTracker: number;
  /** The schedule of the scale, restored by loadStateDict as torch's; a state without them keeps the scaler's own. */
  growthFactor?: number;
  backoffFactor?: number;
  growthInterval?: number;
}

/**
 * Dynamic loss scaling for float16 training, as torch.amp.GradScaler: `scale(loss)` before
 * backward keeps small gradients above float16's underflow; `step(optimizer)` divides the
 * gradients by the scale (into float32, so small values survive) and skips the update when
 * any is inf or NaN; `update()` then shrinks the scale after a skipped step and grows it
 * after `growthInterval` clean ones. bfloat16 has float32's range and needs none of this.
 *
 *     const loss = crossEntropy(model.forward(x), y);
 *     backward(scaler.scale(loss));
 *     scaler.step(optimizer);   // or scaler.unscale(optimizer); clipGradNorm(...); scaler.step(optimizer)
 *     scaler.update();
 */
export class GradScaler {
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  readonly enabled: boolean;
  #scale: number;
  #growthTracker = 0;
  /** Optimizers unscaled since the last update with at least one gradient, and whether their gradients held inf/NaN. */
  readonly #unscaled = new Map<Optimizer, boolean>();
  /** Optimizers stepped (or skipped) since the last update: a second step would reuse stale unscaling. */
  readonly #stepped = new Set<Optimizer>();

  constructor(options?: GradScalerOptions | null) {
    // null means the defaults; an unknown option (torch's init_scale, a typo) is refused, as ignored it would train at another scale than asked.
    const { initScale = 2 ** 16, growthFactor = 2, backoffFactor = 0.5, growthInterval = 2000, enabled = true } = optionsArg("GradScaler", options, [
      "initScale",
      "growthFactor",
      "backoffFactor",
      "growthInterval",
      "enabled",
    ]);
    this.#scale = checkPositive("initScale", initScale);
    [this.growthFactor, this.backoffFactor, this.growthInterval] = checkSchedule("GradScaler", growthFactor, backoffFactor, growthInterval);
    assertBoolean("GradScaler", "enabled", enabled);
    this.enabled = enabled;
  }

  /** The current scale (1 when disabled). */
  get scaleFactor(): number {
    return this.enabled ? this.#scale : 1;
  }

  /** `loss` times the scale, in float32 (the loss itself when disabled). Enabled, it is refused inside captureGraph (a GraphError). */
  scale(loss: Tensor): Tensor {
    // Checked when disabled too, so that a float32 run catches what a float16 run would.
    if (!(loss instanceof Tensor)) throw new ValueError(`GradScaler.scale: loss must be a Tensor, got ${describeValue(loss)}`);
    loss.throwIfDisposed("GradScaler.scale: loss");
    if (!this.enabled) return loss;
    // Recorded, the scale would be a constant of the graph (every replay multiplying by this step's, whatever update()
    // sets since), and unscale() replaces the gradients a replay writes: replays would train on stale, misscaled ones.
    if (isCapturing()) {
      throw new GraphError(
        "GradScaler.scale inside captureGraph: the scale would be a constant of the graph; capture bfloat16 steps (no loss scaling) or run float16 ones eagerly",
      );
    }
    return tidy(() => mul(loss.dtype === "float32" ? loss : cast(loss, "float32"), this.#scale));
  }

  /**
   * Divides the gradients of `optimizer`'s parameters by the scale, in place, as float32
   * tensors; records whether any was inf or NaN. At most once per optimizer between updates
   * (call it before clipping gradients). Returns true when every gradient was finite; with no gradient
   * it records nothing, so a later step() or update() throws, as torch's.
   */
  unscale(optimizer: Optimizer): boolean {
    checkOptimizer("unscale", optimizer);
    if (!this.enabled) return true;
    if (this.#unscaled.has(optimizer)) {
      throw new ValueError("GradScaler.unscale: already called for this optimizer since the last update()");
    }
    optimizer.checkParams("GradScaler.unscale");
    const parameters = optimizer.params.filter((p) => p.grad !== null);
    const inverse = 1 / this.#scale;
    const finite = noGrad(() => {
      // Kept, as backward keeps the gradients it writes: an enclosing tidy() would free them before step() reads them.
      const unscaled = parameters.map((p) => keep(tidy(() => mul(cast(p.grad as Tensor, "float32"), inverse))));
      for (const [i, p] of parameters.entries()) {
        p.grad?.dispose();
        p.grad = unscaled[i];
      }
      return allFinite(unscaled);
    });
    // As torch's: no gradient is no inf check, which step() and update() refuse.
    if (parameters.length > 0) this.#unscaled.set(optimizer, !finite);
    return finite;
  }

  /**
   * Unscales (unless done already) and runs `optimizer.step()` when every gradient is finite. Returns whether it stepped.
   * Throws an NnError when no parameter of `optimizer` has a gradient (torch: "No inf checks were recorded for this optimizer").
   * A closure (optimizer.step(closure)) runs only when disabled; enabled, it is a ValueError, as torch's.
   */
  step(optimizer: Optimizer, closure?: () => unknown): boolean {
    checkOptimizer("step", optimizer);
    if (!this.enabled) {
      optimizer.step(closure);
      return true;
    }
    // Its backward would give gradients no unscale() saw.
    if (closure !== undefined) throw new ValueError("GradScaler.step: no closure while enabled (as torch)");
    // Without update() in between, the unscaling recorded for the last step would be taken for new (still scaled) gradients.
    if (this.#stepped.has(optimizer)) {
      throw new ValueError("GradScaler.step: already called for this optimizer since the last update()");
    }
    if (!this.#unscaled.has(optimizer)) this.unscale(optimizer);
    const skip = this.#unscaled.get(optimizer);
    if (skip === undefined) throw new NnError("GradScaler.step: no parameter of this optimizer has a gradient; call backward(scaler.scale(loss)) first");
    if (!skip) optimizer.step();
    this.#stepped.add(optimizer);
    return !skip;
  }

  /**
   * Adjusts the scale after a step: back off when any unscaled optimizer saw inf/NaN, grow after `growthInterval` clean steps.
   * Throws an NnError when no step() or unscale() found a gradient since the last update (torch: "No inf checks were recorded prior to update").
   * `newScale` (torch's update(new_scale)) sets the scale instead, the growth tracker left as it is.
   */
  update(newScale?: number | null): void {
    const scale = newScale == null ? null : checkPositive("newScale", newScale, "GradScaler.update");
    if (!this.enabled) return;
    if (scale === null && this.#unscaled.size === 0) throw new NnError("GradScaler.update: no step(optimizer) since the last update()");
    const foundInf = [...this.#unscaled.values()].includes(true);
    this.#unscaled.clear();
    this.#stepped.clear();
    if (scale !== null) {
      this.#scale = scale;
      return;
    }
    if (foundInf) {
      // The scale multiplies a float32 loss: below float32's smallest value it is 0, and every later step would be skipped.
      if (Math.fround(this.#scale * this.backoffFactor) === 0) {
        throw new NnError(`GradScaler.update: inf/NaN gradients at every scale down to ${this.#scale}; check the loss and weights`);
      }
      this.#scale *= this.backoffFactor;
      this.#growthTracker = 0;
      return;
    }
    this.#growthTracker++;
    // >=: a loaded growthTracker may exceed this scaler's growthInterval.
    if (this.#growthTracker >= this.growthInterval) {
      // As torch's: the scale grows only while it stays a finite float32 (an infinite one could never back off).
      if (Number.isFinite(Math.fround(this.#scale * this.growthFactor))) this.#scale *= this.growthFactor;
      this.#growthTracker = 0;
    }
  }

  /** The scale, its growth tracker and its schedule; `{}` when disabled, as torch's state_dict(). */
  stateDict(): GradScalerState | Record<string, never> {
    if (!this.enabled) return {};
    const { growthFactor, backoffFactor, growthInterval } = this;
    return { scale: this.#scale, growthTracker: this.#growthTracker, growthFactor, backoffFactor, growthInterval };
  }

  /**
   * Restores stateDict()'s state: the scale, its growth tracker and (when saved) its schedule; all checked before any is
   * set. A disabled scaler takes any state and keeps nothing, as torch's.
   */
  loadStateDict(state: GradScalerState | Record<string, never>): void {
    if (state === null || typeof state !== "object") throw new ValueError("GradScaler.loadStateDict: state must be { scale, growthTracker }");
    if (!this.enabled) return;
    const missing = (["scale", "growthTracker"] as const).filter((key) => state[key] === undefined);
    if (missing.length > 0) throw new ValueError(`GradScaler.loadStateDict: no ${missing.join(" or ")} in the state (a disabled scaler saves {})`);
    const scale = checkPositive("scale", state.scale);
    if (!Number.isSafeInteger(state.growthTracker) || state.growthTracker < 0) {
      throw new ValueError(`GradScaler.loadStateDict: growthTracker must be an integer >= 0, got ${formatArg(state.growthTracker)}`);
    }
    const { growthFactor = this.growthFactor, backoffFactor = this.backoffFactor, growthInterval = this.growthInterval } = state;
    const schedule = checkSchedule("GradScaler.loadStateDict", growthFactor, backoffFactor, growthInterval);
    // Read-only to users: only a loaded state replaces the schedule.
    Object.assign(this, { growthFactor: schedule[0], backoffFactor: schedule[1], growthInterval: schedule[2] });
    this.#scale = scale;
    this.#growthTracker = state.growthTracker;
  }
}

/** True when no element of any tensor is inf or NaN: x * 0 is 0 for finite x and NaN otherwise; one read for all. */
export function allFinite(tensors: readonly Tensor[]): boolean {
  if (tensors.length === 0) return true;
  const probe = tidy(() => concat(tensors.map((t) => reshape(cast(sum(mul(t, 0)), "float32"), [1])), 0).dataSync());
  return probe.every((value) => value === 0);
}

function checkOptimizer(method: string, optimizer: unknown): void {
  if (!(optimizer instanceof Optimizer)) throw new ValueError(`GradScaler.${method}: expected an Optimizer, got ${describeValue(optimizer)}`);
}

/** [growthFactor, backoffFactor, growthInterval], checked: growthFactor > 1, backoffFactor < 1, both > 0, growthInterval a positive integer. */
function checkSchedule(where: string, growthFactor: unknown, backoffFactor: unknown, growthInterval: unknown): [number, number, number] {
  const growth = checkPositive("growthFactor", growthFactor, where);
  if (!(growth > 1)) throw new ValueError(`${where}: growthFactor must be > 1, got ${formatArg(growth)}`);
  const backoff = checkPositive("backoffFactor", backoffFactor, where);
  if (!(backoff < 1)) throw new ValueError(`${where}: backoffFactor must be < 1, got ${formatArg(backoff)}`);
  if (!Number.isSafeInteger(growthInterval) || (growthInterval as number) < 1) {
    throw new ValueError(`${where}: growthInterval must be a positive integer, got ${formatArg(growthInterval)}`);
  }
  return [growth, backoff, growthInterval as number];
}

function checkPositive(name: string, value: unknown, where = "GradScaler"): number {
  // The scale multiplies a float32 loss: one that float32 rounds to 0 or inf would skip every step.
  if (typeof value !== "number" || !(Math.fround(value) > 0 && Number.isFinite(Math.fround(value)))) {
    throw new ValueError(`${where}: ${name} must be > 0 in float32's range, got ${formatArg(value)}`);
  }
  return value;
}
