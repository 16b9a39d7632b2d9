import { CoreError } from "@blocksparse/core";

/** Misuse of autograd: backward from a tensor that does not track gradients, a freed graph, a bad seed. */
export class AutogradError extends CoreError {
  override name = "AutogradError";
}

/** Backward reached a kernel that has no gradient registered. */
export class GradientNotRegisteredError extends AutogradError {
  override name = "GradientNotRegisteredError";
  constructor(readonly kernelName: string) {
    super(
      `No gradient is registered for kernel '${kernelName}': register one with registerGradient('${kernelName}', ...) or compute it inside noGrad`,
    );
  }
}
