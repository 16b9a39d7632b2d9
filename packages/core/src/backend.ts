import type { BackendValues, DType } from "./dtypes";
import type { BackendKernelName, KernelAttrs, KernelInputs, KernelName, KernelOutputs } from "./kernel_names";

/**
 * An opaque handle to one buffer a backend owns. The engine uses it only as a Map key;
 * a backend picks its own representation (a JS object wrapping a typed array, a native
 * pointer wrapper, ...). Must be an object so identity is stable.
 */
export type DataId = object;

/** What kernels see of a tensor: its buffer, shape and dtype. Never a Tensor. */
export interface TensorInfo {
  readonly dataId: DataId;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** Memory figures of one backend. */
export interface BackendMemory {
  /** Bytes held by live buffers (those allocated and not yet freed). */
  bytesInUse: number;
  /** Number of live buffers. */
  buffers: number;
  /** Backend-specific figures, e.g. `cachedBytes` of a caching allocator. */
  [figure: string]: number;
}

/** Arguments every kernel function receives. */
export interface KernelArgs<K extends KernelName, B extends Backend = Backend> {
  inputs: KernelInputs<K>;
  attrs: KernelAttrs<K>;
  backend: B;
}

/**
 * A kernel: reads input buffers, allocates its outputs through its backend, returns their
 * infos. Declared through a method so a table written for a concrete backend class
 * (`KernelTable<MyBackend>`) is still a `KernelTable` (parameters compare bivariantly).
 */
export type KernelFunc<K extends KernelName, B extends Backend = Backend> = {
  kernel(args: KernelArgs<K, B>): KernelOutputs<K>;
}["kernel"];

/** A backend's kernels keyed by kernel name. Absent keys are kernels it lacks. */
export type KernelTable<B extends Backend = Backend> = { [K in KernelName]?: KernelFunc<K, B> };

/**
 * A table holding every backend kernel: write a backend's table as
 * `{ ... } satisfies CompleteKernelTable<MyBackend>` so that a kernel it forgets (or one
 * added to the catalogue later) fails typecheck. A kernel it does not implement itself
 * is an explicit `delegateToJs("Name")` entry.
 */
export type CompleteKernelTable<B extends Backend = Backend> = { [K in BackendKernelName]: KernelFunc<K, B> };

/**
 * A kernel backend: memory plus a table of kernels. Everything is synchronous except
 * `read`, so a native addon can implement it over N-API without threads.
 */
export interface Backend {
  /** The name it was registered under ("js", "cuda", ...): a backend that names itself otherwise fails to start. */
  readonly name: string;
  /** Its kernels keyed by kernel name (see kernel_names.ts). */
  readonly kernels: KernelTable;
  /**
   * When true, every buffer `allocate` returns (fresh or reused) is filled with the
   * dtype's POISON_BITS (a quiet NaN for float dtypes: 0x7fc00000 float32, 0x7e00 float16,
   * 0x7fc0 bfloat16; 0x7fffffff for int32), so an output element a kernel forgets to write
   * shows up. The conformance suite turns it on.
   */
  poisonAllocations: boolean;
  /** A new buffer for `size` elements of `dtype`; its contents are unspecified unless poisoned. */
  allocate(dtype: DType, size: number): DataId;
  /** Copies `values` (the dtype's storage array, exactly the buffer's size) into the buffer. */
  write(dataId: DataId, values: BackendValues): void;
  /** The buffer's contents as a new storage array of its dtype. */
  read(dataId: DataId): Promise<BackendValues>;
  /** As `read`, blocking until the data is available. */
  readSync(dataId: DataId): BackendValues;
  /** Releases the buffer. The engine calls it once, when no tensor uses the buffer any more. */
  free(dataId: DataId): void;
  /** Bytes in use and live buffers, plus backend-specific figures. */
  memory(): BackendMemory;
  /** Releases everything the backend holds (caches, device context). Optional. */
  dispose?(): void;
  /**
   * Called by the engine before and after each kernel it runs (after also when the kernel throws), nested calls
   * included. Optional: the js backend (and the cpu backend over it) gives back the scratch arrays a kernel took
   * (its half inputs widened to float32, its half outputs' float32 staging) when the outermost kernel returns.
   */
  beginKernel?(): void;
  endKernel?(): void;
  /** Recording kernels once and replaying them with one launch (captureGraph); absent where unsupported. */
  readonly graphs?: BackendGraphs;
}

/**
 * What captureGraph needs of a backend (CUDA graphs on cuda). Between `beginCapture` and `endCapture` kernels
 * are recorded for later replay, and buffers allocated meanwhile belong to the graph: the backend never hands
 * them to another allocation while the graph lives (the graph writes them on every replay).
 */
export interface BackendGraphs {
  beginCapture(): void;
  /** Stops recording; returns the replayable graph, or throws when the recorded work cannot be replayed. */
  endCapture(): object;
  /** Stops a capture after an error, keeping nothing. */
  abortCapture(): void;
  /** Queues one replay of the recorded kernels, in order with every other kernel. */
  launch(graph: object): void;
  /** Frees the graph; its buffers' memory returns to the backend once no tensor holds them. */
  destroy(graph: object): void;
  /** Queues a copy of `src`'s contents into `dst` (same dtype and size). */
  copy(src: DataId, dst: DataId): void;
}

/** Creates a backend; throws (with the reason) when it cannot start here. */
export type BackendFactory = () => Backend;
