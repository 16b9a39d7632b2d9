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

/**
 * A tensor that a recorded gradient depends on was written in place after the forward recorded it (PyTorch's "one of
 * the variables needed for gradient computation has been modified by an inplace operation"): the tensor's `version`
 * is not the one the tape recorded, so backward would not differentiate what the forward computed.
 */
export class InPlaceWriteError extends AutogradError {
  override name = "InPlaceWriteError";
  constructor(
    message: string,
    /** The recorded kernel whose gradient depends on the tensor. */
    readonly kernelName: string,
    /** Which of its tensors: `input 'a'`, `input 'tensors[1]'` or `output 0`. */
    readonly tensorLabel: string,
    readonly expectedVersion: number,
    readonly foundVersion: number,
  ) {
    super(message);
  }
}
