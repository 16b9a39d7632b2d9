import type { Backend, DataId, TensorInfo } from "./backend";
import { type DType, type TensorValues, isFloatDType } from "./dtypes";
import { engine } from "./engine";
import { DisposedTensorError, ShapeError, DTypeError, BackendError, ValueError } from "./errors";
import { EDGE_VALUES, formatTensor } from "./format_tensor";
import { formatArg } from "./ops/validate";
import { Clone, Move } from "./kernel_names";
import { sizeOf } from "./shape";

/**
 * The buffer a tensor uses, shared by reference with the engine's finalizer so that a
 * collected, undisposed tensor can still release it. `assign` swaps the dataId.
 */
export interface TensorStorage {
  /** The owning tensor's id, for the finalizer's dispose notification. */
  readonly tensorId: number;
  dataId: DataId;
  backend: Backend;
  disposed: boolean;
  /**
   * Counts the writes into this tensor since it was made (`assign`, a kernel writing it in place, a graph replay
   * pointing it at what it wrote): autograd compares it with the count it recorded to refuse a stale gradient.
   * It lives here, per tensor, because that is where writes are seen: `assign` changes one tensor's buffer, never one
   * another tensor shares, and a kernel writes a buffer in place only when one tensor uses it.
   */
  version: number;
  /** Whether the engine's finalizer watches the tensor (it is not until it can outlive every scope). */
  finalized?: boolean;
  /** Whether the tensor waits in the engine's nursery to be registered with the finalizer. */
  waiting?: boolean;
}

let nextTensorId = 0;

/**
 * An n-dimensional array held by a backend. Contiguous, row-major and immutable: ops
 * return new tensors; `assign` replaces a tensor's contents by another's.
 */
export class Tensor {
  /** Unique, increasing: identifies the tensor (e.g. on an autograd tape). */
  readonly id: number = nextTensorId++;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
  #requiresGrad = false;
  /** The accumulated gradient, written by autograd. Core itself never writes it. */
  grad: Tensor | null = null;
  /** @internal engine-managed storage cell. */
  readonly storage: TensorStorage;
  /** @internal true once `keep` exempted it from scope cleanup. */
  kept = false;

  /** @internal Tensors are made by ops and the engine, not with `new`. */
  constructor(info: TensorInfo, backend: Backend) {
    // A frozen shape (another tensor's, as most outputs are made) is shared; anything else is copied.
    this.shape = Object.isFrozen(info.shape) ? info.shape : Object.freeze([...info.shape]);
    this.dtype = info.dtype;
    this.size = sizeOf(info.shape);
    this.storage = { tensorId: this.id, dataId: info.dataId, backend, disposed: false, version: 0 };
  }

  /**
   * Set by users (or nn's Parameter); read by autograd. Core itself never reads it. Only floating-point tensors can
   * require gradients (PyTorch's rule): setting it on an int32 tensor throws DTypeError. A change is first shown to
   * the requiresGrad observers (addRequiresGradObserver), which can refuse it: autograd refuses false on an op's output.
   */
  get requiresGrad(): boolean {
    return this.#requiresGrad;
  }

  set requiresGrad(value: boolean) {
    // A truthy non-boolean ("no", 1) would turn gradients on, and the getter would return it; torch raises a TypeError.
    if (typeof value !== "boolean") {
      throw new ValueError(`requiresGrad: tensor ${this.id} ([${this.shape}] ${this.dtype}): requiresGrad must be a boolean, got ${formatArg(value)}`);
    }
    if (value && this.dtype === "int32") {
      throw new DTypeError(`requiresGrad: tensor ${this.id} ([${this.shape}] int32) cannot require gradients: only float tensors can`);
    }
    // Requiring grad already is no change: autograd sets it on every output it records.
    if (value !== this.#requiresGrad) engine.notifyRequiresGrad(this, value);
    this.#requiresGrad = value;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** The backend holding the data. */
  get backend(): Backend {
    return this.storage.backend;
  }

  /** The opaque handle of the current buffer (changes on `assign`). */
  get dataId(): DataId {
    return this.storage.dataId;
  }

  /** How many times the tensor was written in place since it was made (PyTorch's `_version`); see TensorStorage.version. */
  get version(): number {
    return this.storage.version;
  }

  get isDisposed(): boolean {
    return this.storage.disposed;
  }

  /** What a kernel sees of this tensor. */
  get info(): TensorInfo {
    this.throwIfDisposed("info");
    return { dataId: this.storage.dataId, shape: this.shape, dtype: this.dtype };
  }

  /** The values, half types widened to float32. */
  async data(): Promise<TensorValues> {
    this.throwIfDisposed("data");
    engine.checkHostTransfer("data");
    return engine.readValues(this, await this.backend.read(this.dataId));
  }

  /** As `data()`, blocking. */
  dataSync(): TensorValues {
    this.throwIfDisposed("dataSync");
    engine.checkHostTransfer("dataSync");
    return engine.readValues(this, this.backend.readSync(this.dataId));
  }

  /** The values as a plain number array (row-major). */
  toArray(): number[] {
    return Array.from(this.dataSync());
  }

  /** The single value of a one-element tensor. */
  item(): number {
    this.throwIfDisposed("item");
    if (this.size !== 1) throw new ShapeError(`item: tensor has ${this.size} elements, expected exactly 1`);
    return this.dataSync()[0];
  }

  /** A short readable view: dtype, shape and the first and last values (only those are read from the device). */
  toString(): string {
    if (this.isDisposed) return `Tensor(disposed, ${this.dtype}, [${this.shape.join(", ")}])`;
    if (this.size <= 2 * EDGE_VALUES) return formatTensor(this.shape, this.dtype, this.dataSync(), this.backend.name);
    const { head, tail } = engine.readEnds(this, EDGE_VALUES);
    return formatTensor(this.shape, this.dtype, head, this.backend.name, tail);
  }

  /** Frees the tensor's claim on its buffer; the buffer goes when no tensor uses it. Idempotent. */
  dispose(): void {
    engine.disposeTensor(this);
  }

  /** A new tensor sharing this one's buffer (reference-counted, no copy), made by the engine's `Clone` kernel so observers see it. */
  clone(): Tensor {
    this.throwIfDisposed("clone");
    return engine.runKernel(Clone, { x: this }, {});
  }

  /**
   * Replaces this tensor's contents by `other`'s (same shape and dtype, same backend):
   * the buffer is shared, not copied. `other` stays valid. Used for in-place parameter updates. Counts as a write
   * (`version`): a gradient recorded before it that needs this tensor's old contents is refused by backward. Not
   * differentiable: the assign observers (addAssignObserver) see it first and may refuse it, as autograd does while it
   * records for a source that a recorded op made (the gradient path through it would be lost).
   */
  assign(other: Tensor): void {
    this.throwIfDisposed("assign");
    if (!(other instanceof Tensor)) throw new ValueError(`assign: other must be a Tensor, got ${other === null ? "null" : typeof other}`);
    other.throwIfDisposed("assign");
    if (other.dtype !== this.dtype) {
      throw new DTypeError(`assign: other has dtype ${other.dtype}, expected ${this.dtype}`);
    }
    if (other.shape.length !== this.shape.length || other.shape.some((d, i) => d !== this.shape[i])) {
      throw new ShapeError(`assign: other has shape [${other.shape}], expected [${this.shape}]`);
    }
    if (other.backend !== this.backend) {
      throw new BackendError(`assign: other is on backend '${other.backend.name}', expected '${this.backend.name}'`);
    }
    engine.notifyAssign(this, other);
    engine.assignStorage(this, other);
  }

  /**
   * This tensor's values on another backend (a new tensor; this one is unchanged), made by the engine's `Move` kernel
   * so observers see it (autograd records it, as PyTorch's `.to(device)`). The dtype stays: `cast` changes it.
   */
  to(backendName: string): Tensor {
    this.throwIfDisposed("to");
    return engine.runKernel(Move, { x: this }, { backend: backendName });
  }

  /** True for float32, float16 and bfloat16. */
  get isFloat(): boolean {
    return isFloatDType(this.dtype);
  }

  /** @internal */
  throwIfDisposed(where: string): void {
    if (this.storage.disposed) {
      throw new DisposedTensorError(`${where}: tensor ${this.id} ([${this.shape}] ${this.dtype}) was disposed`);
    }
  }
}
