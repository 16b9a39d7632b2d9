/**
 * The side effects of importing @blocksparse/autograd: the gradient registry filled, the
 * tape subscribed to core's kernel observer (which sees `clone()` as the `Clone` kernel),
 * dispose observer, requiresGrad observer and assign observer, and `Tensor.prototype.backward` added.
 */
import { Tensor, addAssignObserver, addDisposeObserver, addKernelObserver, addRequiresGradObserver } from "@blocksparse/core";
import { type BackwardOptions, backward } from "./backward";
import { registerAllGradients } from "./gradients";
import { forgetTensor, recordKernel, refuseNonLeafRequiresGrad, checkAssign } from "./tape";

declare module "@blocksparse/core" {
  interface Tensor {
    /** Backpropagates from this tensor (see `backward` in @blocksparse/autograd). */
    backward(grad?: Tensor | null, options?: BackwardOptions | null): void;
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
  addDisposeObserver(forgetTensor);
  addRequiresGradObserver(refuseNonLeafRequiresGrad);
  addAssignObserver(checkAssign);
  prototype.backward = function (this: Tensor, grad?: Tensor | null, options?: BackwardOptions | null): void {
    backward(this, grad, options);
  };
}
