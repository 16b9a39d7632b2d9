import { detach, reachableLeaves, tracksGrad } from "@blocksparse/autograd";
import { assertBoolean, BsrPattern, DisposedTensorError, type DType, formatArg, formatShape, fullOn, keep, optionsArg, ShapeError, shapesEqual, Tensor, ValueError } from "@blocksparse/core";

/**
 * `value` as a leaf, as torch's nn.Parameter(t) is: an op's recorded output (mul(p.value, 2) outside noGrad) would send
 * its gradient to the tensors it was computed from, leave `grad` null and be skipped by every optimizer. Such an output
 * is replaced by a detached handle of its buffer, and disposed with its graph (the parameter owns what it is given).
 */
function asLeaf(value: Tensor): Tensor {
  if (!tracksGrad(value) || reachableLeaves(value).has(value)) return value;
  const leaf = detach(value);
  value.dispose();
  return leaf;
}

export class Parameter {
  #value: Tensor;
  /** Set when `value` holds the blocks [nnzBlocks, R, C] of a block-sparse weight with this pattern. */
  pattern: BsrPattern | null;

  constructor(value: Tensor, options: { requiresGrad?: boolean; pattern?: BsrPattern | null } = {}) {
    if (!(value instanceof Tensor)) throw new ValueError("Parameter: value must be a Tensor");
    value.throwIfDisposed("Parameter");
    options = optionsArg("Parameter", options, ["requiresGrad", "pattern"]);
    const pattern = options.pattern ?? null;
    // Checked here, before anything is kept: blocks that do not fit the pattern would fail later, far from here (forward, stateDict, an optimizer's step).
    if (pattern !== null) {
      if (!(pattern instanceof BsrPattern)) throw new ValueError(`Parameter: pattern must be a BsrPattern or null, got ${formatArg(pattern)}`);
      const blocks = [pattern.nnzBlocks, ...pattern.blockShape];
      if (!shapesEqual(value.shape, blocks)) {
        throw new ShapeError(`Parameter: value has shape ${formatShape(value.shape)}, expected the pattern's blocks ${formatShape(blocks)} ([nnzBlocks, R, C])`);
      }
    }
    value = asLeaf(value);
    // Set before keep: an int32 tensor refuses requiresGrad, and nothing is kept then.
    value.requiresGrad = options.requiresGrad ?? true;
    this.#value = keep(value);
    this.pattern = pattern;
  }

  /** The tensor itself: pass it to ops. */
  get value(): Tensor {
    return this.#value;
  }

  /**
   * Replaces the tensor (any shape or backend), keeping `requiresGrad`. The old tensor and
   * its gradient are disposed: the parameter owns its tensor. An op's recorded output is taken as a leaf (a detached
   * handle of its buffer; the one passed is disposed), so that backward gives this parameter its gradient.
   */
  set value(next: Tensor) {
    if (!(next instanceof Tensor)) throw new ValueError("Parameter: value must be a Tensor");
    next.throwIfDisposed("Parameter");
    if (next === this.#value) return;
    next = asLeaf(next);
    const previous = this.#value;
    keep(next);
    next.requiresGrad = previous.requiresGrad;
    previous.grad?.dispose();
    previous.grad = null;
    previous.dispose();
    this.#value = next;
  }

  get requiresGrad(): boolean {
    return this.#value.requiresGrad;
  }

  set requiresGrad(flag: boolean) {
    this.#value.requiresGrad = flag;
  }

  /** The gradient accumulated by backward, or null. */
  get grad(): Tensor | null {
    const grad = this.#value.grad;
    return grad && !grad.isDisposed ? grad : null;
  }

  set grad(grad: Tensor | null) {
    this.#value.grad = grad;
  }

  get shape(): readonly number[] {
    return this.#value.shape;
  }

  get dtype(): DType {
    return this.#value.dtype;
  }

  /** Number of elements (for a block-sparse weight: the stored values only). */
  get size(): number {
    return this.#value.size;
  }

  /** Copies `other`'s contents in (same shape, dtype and backend; the buffer is shared, not copied). */
  assign(other: Tensor): void {
    this.#value.assign(other);
  }

  /**
   * Disposes the gradient and clears it. `setToNone: false` (torch's set_to_none=False) leaves zeros of the parameter's
   * dtype where there was a gradient, so that the next step still updates it (momentum, weight decay) if backward leaves it out.
   */
  zeroGrad(setToNone = true): void {
    assertBoolean("zeroGrad", "setToNone", setToNone);
    clearGrad(this, setToNone);
  }

  /** Frees the tensor and its gradient. */
  dispose(): void {
    clearGrad(this, true);
    this.#value.dispose();
  }

  /** @internal Puts `t` in place without keeping, casting or disposing anything; returns the previous tensor. */
  static exchange(parameter: Parameter, t: Tensor): Tensor {
    const previous = parameter.#value;
    parameter.#value = t;
    return previous;
  }

  toString(): string {
    return `Parameter(${this.#value.toString()})`;
  }
}

/**
 * @internal Parameter.zeroGrad without checking `setToNone`, for callers that checked it once for all their
 * parameters (Module.zeroGrad, Optimizer.zeroGrad). A gradient disposed since it was set counts as none, as the
 * `grad` getter says: zeros would make the next step update a parameter that has no gradient.
 */
export function clearGrad(parameter: Parameter, setToNone: boolean): void {
  const value = parameter.value;
  const had = parameter.grad !== null;
  value.grad?.dispose();
  value.grad = had && !setToNone ? keep(fullOn(value.backend, value.shape, 0, value.dtype)) : null;
}

/**
 * @internal The error for `parameter`, disposed (patchModel's disposeReplaced, parameter.dispose()), in a list of parameters
 * to train (an optimizer's, clipGradNorm's): having no gradient, it would be skipped, training nothing in silence.
 * `place` names it in the list (`params[2] (paramGroups[1].params[0])`); `others`: how many more were disposed.
 */
export function disposedParameterError(where: string, place: string, parameter: Parameter, others = 0): DisposedTensorError {
  return new DisposedTensorError(
    `${where}: ${place}, ${formatShape(parameter.shape)} ${parameter.dtype}, was disposed${others > 0 ? ` (and ${others} more)` : ""}: it can never be trained again; create the optimizer after patching (after replacing the parameters), from model.parameters()`,
  );
}
