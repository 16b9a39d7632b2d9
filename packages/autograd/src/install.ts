/**
 * The side effects of importing @blocksparse/autograd: the tape's kernel observer, the
 * gradient registry filled, and three Tensor methods (backward added; clone and dispose
 * wrapped so the tape sees the no-copy results ops return and the tensors that go away).
 */
import { Tensor, addKernelObserver } from "@blocksparse/core";
import { type BackwardOptions, backward } from "./backward";
import { registerAllGradients } from "./gradients";
import { CLONE, coreClone, coreDispose, forgetTensor, record, recordKernel } from "./tape";

declare module "@blocksparse/core" {
  interface Tensor {
    /** Backpropagates from this tensor (see `backward` in @blocksparse/autograd). */
    backward(grad?: Tensor, options?: BackwardOptions): void;
  }
}

const INSTALLED = Symbol.for("@blocksparse/autograd");
const prototype = Tensor.prototype as Tensor & { [INSTALLED]?: boolean };

if (prototype[INSTALLED]) {
  console.warn(
    "@blocksparse/autograd is loaded twice (two copies or both its ESM and CJS builds); only the first records gradients. Deduplicate the package.",
  );
} else {
  Object.defineProperty(prototype, INSTALLED, { value: true });
  registerAllGradients();
  addKernelObserver(recordKernel);
  prototype.backward = function (this: Tensor, grad?: Tensor, options?: BackwardOptions): void {
    backward(this, grad, options);
  };
  // Ops return x.clone() for no-op calls (identity transpose, full slice, same-dtype cast): as in PyTorch, clone is differentiable.
  prototype.clone = function (this: Tensor): Tensor {
    const out = coreClone.call(this);
    record(CLONE, { x: this }, {}, [out]);
    return out;
  };
  prototype.dispose = function (this: Tensor): void {
    const wasLive = !this.isDisposed;
    coreDispose.call(this);
    if (wasLive) forgetTensor(this);
  };
}
