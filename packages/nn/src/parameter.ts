import { assertBoolean, type BsrPattern, type DType, fullOn, keep, optionsArg, Tensor, ValueError } from "@blocksparse/core";

/**
 * A trainable tensor owned by a module. It holds its tensor (`value`) rather than being
 * one, so that its identity survives what a Tensor cannot do in place: moving to another
 * backend, or a block-sparse weight taking a pattern with another number of blocks.
 * Optimizers key their state by the Parameter and update `value` in place with `assign`.
 */
export class Parameter {
  #value: Tensor;
  /** Set when `value` holds the blocks [nnzBlocks, R, C] of a block-sparse weight with this pattern. */
  pattern: BsrPattern | null;

  constructor(value: Tensor, options: { requiresGrad?: boolean; pattern?: BsrPattern | null } = {}) {
    if (!(value instanceof Tensor)) throw new ValueError("Parameter: value must be a Tensor");
    value.throwIfDisposed("Parameter");
    options = optionsArg("Parameter", options, ["requiresGrad", "pattern"]);
    // Set before keep: an int32 tensor refuses requiresGrad, and nothing is kept then.
    value.requiresGrad = options.requiresGrad ?? true;
    this.#value = keep(value);
    this.pattern = options.pattern ?? null;
  }

  /** The tensor itself: pass it to ops. */
  get value(): Tensor {
    return this.#value;
  }

  /**
   * Replaces the tensor (any shape or backend), keeping `requiresGrad`. The old tensor and
   * its gradient are disposed: the parameter owns its tensor.
   */
  set value(next: Tensor) {
    if (!(next instanceof Tensor)) throw new ValueError("Parameter: value must be a Tensor");
    next.throwIfDisposed("Parameter");
    if (next === this.#value) return;
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
    const had = this.#value.grad != null;
    this.#value.grad?.dispose();
    this.#value.grad = had && !setToNone ? keep(fullOn(this.#value.backend, this.#value.shape, 0, this.#value.dtype)) : null;
  }

  /** Frees the tensor and its gradient. */
  dispose(): void {
    this.zeroGrad();
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
