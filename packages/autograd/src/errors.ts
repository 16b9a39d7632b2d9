import { CoreError } from "@blocksparse/core";

/** Misuse of autograd: backward from a tensor that does not track gradients, a freed graph, a bad seed. */
export class AutogradError extends CoreError {
  override name = "AutogradError";
}

/**
 * Backward reached a kernel that has no gradient registered, or one declared without a gradient (`"unsupported"`:
 * an inference-only kernel such as CachedAttention, as PyTorch's "derivative not implemented").
 */
export class GradientNotRegisteredError extends AutogradError {
  override name = "GradientNotRegisteredError";
  constructor(
    readonly kernelName: string,
    unsupported = false,
  ) {
    super(
      unsupported
        ? `Kernel '${kernelName}' has no gradient (it is for inference), and backward reached it: run it inside noGrad, or train through a differentiable op (see its op's documentation)`
        : `No gradient is registered for kernel '${kernelName}': register one with registerGradient('${kernelName}', ...) or compute it inside noGrad`,
    );
  }
}

/**
 * A recorded op's output was written in place (`assign`, a kernel writing it) before another op, or backward as the
 * loss, read it: its `version` is not the one the tape recorded, so its history no longer describes its contents and
 * backward would not differentiate what the forward computed (PyTorch records such a write as an op of its own).
 * Also a leaf that requires grad written outside noGrad after a recorded op read it (PyTorch refuses that write).
 */
export class InPlaceWriteError extends AutogradError {
  override name = "InPlaceWriteError";
  constructor(
    message: string,
    /** The recorded kernel that made the tensor; for a leaf, the one that read it. */
    readonly kernelName: string,
    /** Which of its outputs: `output 0`; `a leaf` for a leaf. */
    readonly tensorLabel: string,
    readonly expectedVersion: number,
    readonly foundVersion: number,
  ) {
    super(message);
  }
}

/** A value a caller passed, for a message: a primitive as written (strings quoted), "an array", "a Map". */
export function describeValue(value: unknown): string {
  if (value === null || (typeof value !== "object" && typeof value !== "function")) return typeof value === "string" ? JSON.stringify(value) : String(value);
  return Array.isArray(value) ? "an array" : `a ${(value as object).constructor?.name ?? "Object"}`;
}
