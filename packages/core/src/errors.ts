/** Base class of every error thrown by @blocksparse/core. */
export class CoreError extends Error {
  override name = "CoreError";
}

/** A shape does not fit: wrong rank, mismatched dims, broadcasting failure. */
export class ShapeError extends CoreError {
  override name = "ShapeError";
}

/** An argument has a dtype the op does not accept. */
export class DTypeError extends CoreError {
  override name = "DTypeError";
}

/** An index (axis, gather index, target class) is out of range. */
export class IndexError extends CoreError {
  override name = "IndexError";
}

/** A value is not acceptable (bad attribute, wrong kind of argument). */
export class ValueError extends CoreError {
  override name = "ValueError";
}

/** A tensor was used after `dispose()`. */
export class DisposedTensorError extends CoreError {
  override name = "DisposedTensorError";
}

/**
 * captureGraph / CapturedGraph: the step does something a replay cannot repeat (a host read or upload, an
 * optimizer update), the backend cannot capture, or a replay's inputs are gone.
 */
export class GraphError extends CoreError {
  override name = "GraphError";
}

/** Backend registry problems: unknown backend, failed start, mixed backends. */
export class BackendError extends CoreError {
  override name = "BackendError";
}

/** A backend could not allocate a tensor's memory (the message names the bytes, the element count and the dtype). */
export class OutOfMemoryError extends BackendError {
  override name = "OutOfMemoryError";
}

/** The backend that holds the inputs has no kernel of that name. */
export class KernelNotRegisteredError extends BackendError {
  override name = "KernelNotRegisteredError";
  constructor(
    readonly kernelName: string,
    readonly backendName: string,
  ) {
    super(`Kernel '${kernelName}' is not registered for backend '${backendName}'`);
  }
}

/** In leak-check mode, a kernel left buffers allocated beyond its outputs. */
export class KernelLeakError extends CoreError {
  override name = "KernelLeakError";
}

/** A second copy of @blocksparse/core was loaded in this process; tensors and backends of one are invisible to the other. */
export class DuplicateCoreError extends CoreError {
  override name = "DuplicateCoreError";
}
