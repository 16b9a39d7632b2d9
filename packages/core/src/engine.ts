import type { Backend, BackendFactory, BackendMemory, DataId, TensorInfo } from "./backend";
import { type BackendValues, type DType, type TensorValues, bytesPerElement, isStorageOf } from "./dtypes";
import {
  BackendError,
  GraphError,
  DisposedTensorError,
  KernelLeakError,
  KernelNotRegisteredError,
  ShapeError,
  ValueError,
} from "./errors";
import { bfloat16BitsToFloat32Array, float16BitsToFloat32Array } from "./half";
import { KERNEL_CATALOGUE, type KernelAttrs, kernelDeclaration, type KernelInputs, type KernelName, type KernelOutputs, Reshape, Slice } from "./kernel_names";
import { formatArg, kindOf } from "./ops/validate";
import { formatShape, sizeOf } from "./shape";
import { Tensor, type TensorStorage } from "./tensor";

/** A kernel's inputs with Tensors in place of TensorInfos (same keys, same arrays). */
export type TensorInputs<K extends KernelName> = { [P in keyof KernelInputs<K>]: AsTensor<KernelInputs<K>[P]> };
type AsTensor<V> = V extends readonly TensorInfo[] ? Tensor[] : V extends TensorInfo ? Tensor : V;

/** A kernel's result as Tensors: one Tensor, or a tuple of them. */
export type TensorOutputs<K extends KernelName> = AsTensors<KernelOutputs<K>>;
type AsTensors<O> = O extends readonly TensorInfo[] ? { [I in keyof O]: Tensor } : Tensor;

/** One kernel call, as observers see it (after it ran). */
export interface KernelRecord<K extends KernelName = KernelName> {
  kernelName: K;
  inputs: TensorInputs<K>;
  attrs: KernelAttrs<K>;
  /** The outputs, in order (one element for single-output kernels). */
  outputs: Tensor[];
}

/** Called after every kernel the engine runs (`Clone`, `Reshape` and `Move` included). Must not dispose the record's tensors. */
export type KernelObserver = (record: KernelRecord) => void;

/** One tensor going away, as dispose observers see it (after its buffer reference was dropped). */
export interface DisposeRecord {
  /** The tensor's `id`. */
  id: number;
  /** The tensor (now disposed), or null when the finalizer released a tensor collected undisposed. */
  tensor: Tensor | null;
}

/** Called once per tensor: on `dispose()` (explicit, `tidy`, `dispose(value)`) or by the finalizer. */
export type DisposeObserver = (record: DisposeRecord) => void;

/** A change of one tensor's `requiresGrad`, as requiresGrad observers see it (before it takes effect). */
export interface RequiresGradRecord {
  tensor: Tensor;
  /** The value being set (it differs from the current one). */
  value: boolean;
}

/** Called before a tensor's `requiresGrad` changes; one that throws refuses the change (autograd refuses it on a tensor an op made). */
export type RequiresGradObserver = (record: RequiresGradRecord) => void;

/** One `assign`, as assign observers see it (checked, before the write). */
export interface AssignRecord {
  /** The tensor written. */
  target: Tensor;
  /** The tensor whose contents it takes. */
  source: Tensor;
}

/**
 * Called before `target.assign(source)` writes; one that throws refuses the write and `target` is unchanged (autograd
 * refuses an assign that would lose a gradient path or overwrite a leaf a recorded op read).
 */
export type AssignObserver = (record: AssignRecord) => void;

/** Memory of one backend as the engine sees it, plus the backend's own figures. */
export interface BackendMemoryInfo {
  /** Live (undisposed) tensors on this backend. */
  numTensors: number;
  /** Distinct buffers those tensors use (clones and reshapes share one). */
  numBuffers: number;
  /** Bytes of those buffers. */
  numBytes: number;
  /** What the backend itself reports (includes buffers held outside tensors, caches). */
  backend: BackendMemory;
}

export interface MemoryInfo {
  numTensors: number;
  numBuffers: number;
  numBytes: number;
  /**
   * Tensors freed so far by the finalizer because nobody disposed them (each was a leak; numTensors fell when it was
   * freed), and those freed with them by dispose observers (the tensors an autograd graph saved, when its output was
   * collected): numTensors + numCollected stays put while garbage is collected.
   */
  numCollected: number;
  /** Per started backend. */
  backends: Record<string, BackendMemoryInfo>;
}

interface Registration {
  factory: BackendFactory;
  priority: number;
}

interface BufferRecord {
  backend: Backend;
  refCount: number;
  /** Of refCount, the references of captured graphs (their inputs, and what they write): not tensors. */
  graphRefs: number;
  bytes: number;
}

interface Scope {
  tensors: Set<Tensor>;
}

/**
 * The single engine: backend registry, kernel dispatch, tensor bookkeeping (reference
 * counts per buffer, scopes), kernel observers. Exported functions below wrap it.
 */
/** How an error names a kernel input: `name`, or `name[index]` for an entry of a list input (index >= 0). */
function inputLabel(name: string, index: number): string {
  return index < 0 ? name : `${name}[${index}]`;
}

/** Tensors waiting to be registered with the finalizer before they are registered at once (see Engine.nursery). */
const kNurseryLimit = 256;

export class Engine {
  private readonly registry = new Map<string, Registration>();
  private readonly instances = new Map<string, Backend>();
  private readonly failures = new Map<string, string>();
  private activeName: string | null = null;
  private readonly buffers = new Map<DataId, BufferRecord>();
  private readonly tensorCounts = new Map<Backend, number>();
  private readonly scopes: Scope[] = [];
  private readonly observers = new Set<KernelObserver>();
  /** Above 0 while writeThroughNewBuffers runs the out-of-place call that observers are not told of. */
  private observersMuted = 0;
  private readonly disposeObservers = new Set<DisposeObserver>();
  private readonly requiresGradObservers = new Set<RequiresGradObserver>();
  private readonly assignObservers = new Set<AssignObserver>();
  private readonly finalizer = new FinalizationRegistry<TensorStorage>((storage) => this.releaseCollected(storage));
  /**
   * Tensors that can outlive every scope, not yet registered with the finalizer: registration and unregistration
   * cost more than the rest of a small op, and most such tensors are disposed right after they are made. They are
   * registered at the end of the current task (a microtask) or when kNurseryLimit of them wait, whichever comes
   * first; one disposed before then never is. A tensor dropped undisposed is collectable once registered.
   */
  private readonly nursery = new Set<Tensor>();
  private nurseryFlushQueued = false;
  /** When true, each kernel must leave exactly its new outputs allocated (see setKernelLeakCheck). */
  kernelLeakCheck = false;
  /** Tensors freed by the finalizer because nobody disposed them, with those the dispose observers freed as it did. */
  collectedTensors = 0;
  /** Above 0 while dispose observers hear of a tensor the finalizer freed. */
  private releasingCollected = 0;
  /** The capture in progress (captureGraph), told of every kernel's inputs and outputs. */
  capture: {
    backend: Backend;
    kernel(kernelName: string, inputs: Record<string, Tensor | Tensor[] | undefined>, attrs: object): void;
    made(outputs: Tensor[]): void;
  } | null = null;
  /** Debug hooks (the leak guard): each new tensor, and each exit of an outermost tidy scope. */
  debugHooks: { tensorCreated(tensor: Tensor): void; outermostScopeExited(): void } | null = null;

  // ------------------------------------------------------------------ registry

  registerBackend(name: string, factory: BackendFactory, priority = 1): boolean {
    // Checked here, where the caller is: a factory that is not a function failed at the first op ("registration.factory
    // is not a function"), a number name could not be removed by its string, and a NaN priority made the order arbitrary.
    if (typeof name !== "string" || name === "") throw new ValueError(`registerBackend: name must be a non-empty string, got ${formatArg(name)}`);
    if (typeof factory !== "function") throw new ValueError(`registerBackend: factory of '${name}' must be a function returning the backend, got ${kindOf(factory)}`);
    if (typeof priority !== "number" || !Number.isFinite(priority)) throw new ValueError(`registerBackend: priority of '${name}' must be a finite number, got ${formatArg(priority)}`);
    if (this.registry.has(name)) {
      console.warn(`registerBackend: backend '${name}' is already registered; keeping the first one`);
      return false;
    }
    this.registry.set(name, { factory, priority });
    return true;
  }

  removeBackend(name: string): void {
    const instance = this.instances.get(name);
    if (instance) {
      for (const [dataId, record] of this.buffers) if (record.backend === instance) this.buffers.delete(dataId);
      instance.dispose?.();
      this.tensorCounts.delete(instance);
    }
    this.instances.delete(name);
    this.failures.delete(name);
    this.registry.delete(name);
    if (this.activeName === name) this.activeName = null;
  }

  /** Registered names, highest priority first. */
  listBackends(): string[] {
    return [...this.registry.entries()].sort((a, b) => b[1].priority - a[1].priority).map(([name]) => name);
  }

  /** The started backend of that name, starting it if needed. Throws BackendError if it cannot start. */
  backendInstance(name: string): Backend {
    // A symbol (or another non-string) failed as a bare TypeError while the message below was built.
    if (typeof name !== "string") throw new BackendError(`a backend name must be a string, got ${formatArg(name)}`);
    const existing = this.instances.get(name);
    if (existing) return existing;
    const registration = this.registry.get(name);
    if (!registration) {
      throw new BackendError(`Backend '${name}' is not registered (registered: ${this.listBackends().join(", ") || "none"})`);
    }
    const failure = this.failures.get(name);
    if (failure !== undefined) throw new BackendError(`Backend '${name}' failed to start: ${failure}`);
    try {
      const backend = registration.factory();
      checkBackendObject(backend);
      // Code that follows a tensor's backend moves to `tensor.backend.name`: another name reaches another backend.
      if (backend.name !== name) throw new BackendError(`its factory returned a backend named '${backend.name}'; a backend's name must be the one it is registered under`);
      this.instances.set(name, backend);
      return backend;
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.failures.set(name, reason);
      throw new BackendError(`Backend '${name}' failed to start: ${reason}`);
    }
  }

  setBackend(name: string): void {
    this.backendInstance(name);
    this.activeName = name;
  }

  /** The active backend, choosing the highest-priority one that starts if none is set. */
  activeBackend(): Backend {
    if (this.activeName !== null) return this.backendInstance(this.activeName);
    const tried: string[] = [];
    for (const name of this.listBackends()) {
      const wasFailed = this.failures.has(name);
      try {
        this.setBackend(name);
        return this.backendInstance(name);
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        tried.push(message);
        if (!wasFailed) console.warn(`${message}; falling back to the next backend`);
      }
    }
    throw new BackendError(`No backend could start. ${tried.join("; ") || "No backend is registered."}`);
  }

  /** The active backend's registered name, choosing the default if none is set. */
  activeBackendName(): string {
    this.activeBackend();
    return this.activeName as string;
  }

  // ------------------------------------------------------------------ kernels

  /**
   * Runs a kernel on the backend holding its inputs; a kernel without tensor inputs (Fill) runs on
   * `backend` when given, else on the active backend.
   */
  runKernel<K extends KernelName>(
    kernelName: K,
    inputs: TensorInputs<K>,
    attrs: KernelAttrs<K>,
    backend: Backend = this.activeBackend(),
  ): TensorOutputs<K> {
    backend = this.backendOfInputs(kernelName, inputs as Record<string, Tensor | Tensor[] | undefined>, backend);
    const capture = this.capture;
    if (capture) {
      if (backend !== capture.backend) {
        throw new GraphError(`captureGraph: kernel '${kernelName}' runs on backend '${backend.name}', the capture is on '${capture.backend.name}'`);
      }
      capture.kernel(kernelName, inputs as Record<string, Tensor | Tensor[] | undefined>, attrs as object);
    }
    let outputs: Tensor[];
    if (kernelName === "Reshape") {
      const x = (inputs as unknown as { x: Tensor }).x;
      outputs = [this.shareTensor(x, (attrs as KernelAttrs<"Reshape">).shape)];
    } else if (kernelName === "Clone") {
      const x = (inputs as unknown as { x: Tensor }).x;
      outputs = [this.shareTensor(x, x.shape)];
    } else if (kernelName === "Move") {
      outputs = [this.moveTensor((inputs as unknown as { x: Tensor }).x, (attrs as KernelAttrs<"Move">).backend)];
    } else {
      const kernel = backend.kernels[kernelName];
      if (!kernel) throw new KernelNotRegisteredError(kernelName, backend.name);
      const infos = this.inputInfos(inputs as Record<string, Tensor | Tensor[] | undefined>);
      const buffersBefore = this.kernelLeakCheck ? backend.memory().buffers : 0;
      backend.beginKernel?.();
      let result: TensorInfo | TensorInfo[];
      try {
        result = (kernel as (args: object) => TensorInfo | TensorInfo[])({ inputs: infos, attrs, backend });
      } finally {
        backend.endKernel?.();
      }
      const infosOut = Array.isArray(result) ? result : [result];
      // Counted before makeTensor registers them; only the leak check needs it.
      const freshCount = this.kernelLeakCheck ? new Set(infosOut.filter((info) => !this.buffers.has(info.dataId)).map((info) => info.dataId)).size : 0;
      outputs = infosOut.map((info) => this.makeTensor(info, backend));
      if (this.kernelLeakCheck) {
        const leaked = backend.memory().buffers - buffersBefore - freshCount;
        if (leaked !== 0) {
          for (const t of outputs) t.dispose();
          throw new KernelLeakError(
            `Kernel '${kernelName}' on backend '${backend.name}' left ${leaked} buffer(s) allocated beyond its ${freshCount} new output(s)`,
          );
        }
      }
    }
    if (capture) capture.made(outputs);
    // The inputs the kernel wrote (canWriteInPlace made sure each is the only tensor on its buffer) count a write.
    if ((attrs as { inPlace?: boolean }).inPlace === true) countInPlaceWrites(kernelName, inputs as Record<string, Tensor | Tensor[] | undefined>);
    if (this.observers.size > 0 && this.observersMuted === 0) this.notifyKernel({ kernelName, inputs, attrs, outputs } as KernelRecord);
    return (outputs.length === 1 && !isMultiOutput(kernelName) ? outputs[0] : outputs) as TensorOutputs<K>;
  }

  /**
   * Runs a kernel that writes its declaration's inPlaceInputs out of place, for a write into a buffer another tensor
   * shares: each written input then takes the output of its position (as `assign`, counting a write). Observers see
   * the in-place call the write stands for (attrs.inPlace true, no outputs), as when the kernel writes in place.
   */
  writeThroughNewBuffers<K extends KernelName>(kernelName: K, inputs: TensorInputs<K>, attrs: KernelAttrs<K>): void {
    this.observersMuted++;
    let outputs: Tensor[];
    try {
      outputs = this.runKernel(kernelName, inputs, attrs) as unknown as Tensor[];
    } finally {
      this.observersMuted--;
    }
    const written = kernelDeclaration(kernelName)?.inPlaceInputs ?? [];
    for (let i = 0; i < written.length; i++) this.assignStorage((inputs as Record<string, Tensor>)[written[i]], outputs[i]);
    for (const output of outputs) output.dispose();
    if (this.observers.size > 0 && this.observersMuted === 0) {
      this.notifyKernel({ kernelName, inputs, attrs: { ...attrs, inPlace: true }, outputs: [] } as KernelRecord);
    }
  }

  /**
   * The first and last `count` values of `t` (row-major), read without copying the rest to the host: two slices of a
   * flat view, run unseen by observers (autograd records nothing) and freed. What toString shows of a large tensor.
   * Outside a capture only: during one, reads are refused anyway, and the slices would join the graph.
   */
  readEnds(t: Tensor, count: number): { head: TensorValues; tail: TensorValues } {
    if (this.capture || 2 * count >= t.size) {
      const values = t.dataSync();
      return { head: values.subarray(0, count), tail: values.subarray(Math.max(count, values.length - count)) };
    }
    this.observersMuted++;
    const made: Tensor[] = [];
    try {
      const flat = this.runKernel(Reshape, { x: t }, { shape: [t.size] });
      made.push(flat);
      const head = this.runKernel(Slice, { x: flat }, { begin: [0], size: [count] });
      made.push(head);
      const tail = this.runKernel(Slice, { x: flat }, { begin: [t.size - count], size: [count] });
      made.push(tail);
      return { head: head.dataSync(), tail: tail.dataSync() };
    } finally {
      this.observersMuted--;
      for (const m of made) m.dispose();
    }
  }

  private notifyKernel(record: KernelRecord): void {
    for (const observer of [...this.observers]) observer(record);
  }

  addKernelObserver(observer: KernelObserver): () => void {
    checkObserver("addKernelObserver", observer);
    this.observers.add(observer);
    return () => {
      this.observers.delete(observer);
    };
  }

  addDisposeObserver(observer: DisposeObserver): () => void {
    checkObserver("addDisposeObserver", observer);
    this.disposeObservers.add(observer);
    return () => {
      this.disposeObservers.delete(observer);
    };
  }

  addRequiresGradObserver(observer: RequiresGradObserver): () => void {
    checkObserver("addRequiresGradObserver", observer);
    this.requiresGradObservers.add(observer);
    return () => {
      this.requiresGradObservers.delete(observer);
    };
  }

  addAssignObserver(observer: AssignObserver): () => void {
    checkObserver("addAssignObserver", observer);
    this.assignObservers.add(observer);
    return () => {
      this.assignObservers.delete(observer);
    };
  }

  /** @internal Called by Tensor's assign before it writes; an observer's error propagates and nothing is written. */
  notifyAssign(target: Tensor, source: Tensor): void {
    if (this.assignObservers.size === 0) return;
    const record: AssignRecord = { target, source };
    for (const observer of [...this.assignObservers]) observer(record);
  }

  /** @internal Called by Tensor's requiresGrad setter before a change; an observer's error propagates and the change is not made. */
  notifyRequiresGrad(tensor: Tensor, value: boolean): void {
    if (this.requiresGradObservers.size === 0) return;
    const record: RequiresGradRecord = { tensor, value };
    for (const observer of [...this.requiresGradObservers]) observer(record);
  }

  private notifyDisposed(id: number, tensor: Tensor | null): void {
    const record: DisposeRecord = { id, tensor };
    for (const observer of [...this.disposeObservers]) observer(record);
  }

  private backendOfInputs(kernelName: string, inputs: Record<string, Tensor | Tensor[] | undefined>, none: Backend): Backend {
    // The hot path of every op: plain loops, no per-call arrays or closures; labels are built only for an error.
    let found: Tensor | undefined;
    let foundName = "";
    for (const name in inputs) {
      const value = inputs[name];
      if (value === undefined) continue;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          this.checkInput(kernelName, value[i], name, i, found, foundName);
          if (found === undefined) {
            found = value[i];
            foundName = inputLabel(name, i);
          }
        }
      } else {
        this.checkInput(kernelName, value, name, -1, found, foundName);
        if (found === undefined) {
          found = value;
          foundName = name;
        }
      }
    }
    return found === undefined ? none : found.backend;
  }

  /** Throws unless `t` is a live Tensor on `found`'s backend (when there is one). `index` < 0: not in a list. */
  private checkInput(kernelName: string, t: unknown, name: string, index: number, found: Tensor | undefined, foundName: string): void {
    if (!(t instanceof Tensor)) throw new ValueError(`${kernelName}: ${inputLabel(name, index)} is not a Tensor`);
    if (t.isDisposed) {
      throw new DisposedTensorError(`${kernelName}: ${inputLabel(name, index)} (tensor ${t.id}, ${formatShape(t.shape)}) was disposed`);
    }
    if (found !== undefined && t.backend !== found.backend) {
      throw new BackendError(
        `${kernelName}: ${inputLabel(name, index)} is on backend '${t.backend.name}' but ${foundName} is on '${found.backend.name}'; move one with tensor.to(name)`,
      );
    }
  }

  private inputInfos(inputs: Record<string, Tensor | Tensor[] | undefined>): object {
    const infos: Record<string, TensorInfo | TensorInfo[]> = {};
    for (const name in inputs) {
      const value = inputs[name];
      if (value === undefined) continue;
      infos[name] = Array.isArray(value) ? value.map((t) => t.info) : value.info;
    }
    return infos;
  }

  // ------------------------------------------------------------------ tensors and buffers

  /** Wraps a buffer into a new tracked Tensor (taking a reference on the buffer). */
  makeTensor(info: TensorInfo, backend: Backend): Tensor {
    const record = this.buffers.get(info.dataId);
    if (record) {
      if (record.backend !== backend) throw new BackendError("makeTensor: buffer belongs to another backend");
      record.refCount++;
    } else {
      this.buffers.set(info.dataId, { backend, refCount: 1, graphRefs: 0, bytes: sizeOf(info.shape) * bytesPerElement(info.dtype) });
    }
    const tensor = new Tensor(info, backend);
    this.tensorCounts.set(backend, (this.tensorCounts.get(backend) ?? 0) + 1);
    // A tensor made inside a scope is disposed when the scope ends unless it escapes (returned or kept):
    // the finalizer starts watching it then, which spares the hot path of every op a weak registration.
    const scope = this.scopes.at(-1);
    if (scope) scope.tensors.add(tensor);
    else this.watch(tensor);
    this.debugHooks?.tensorCreated(tensor);
    return tensor;
  }

  /** A new tensor on `values`, uploaded to `backend` (default: the active one); `op` names the caller in errors. */
  upload(values: BackendValues, shape: readonly number[], dtype: DType, backend: Backend = this.activeBackend(), op = "upload"): Tensor {
    if (!isStorageOf(dtype, values)) throw new ValueError(`${op}: values are not the storage array of ${dtype}`);
    if (values.length !== sizeOf(shape)) {
      throw new ShapeError(`${op}: ${values.length} values do not fill shape ${formatShape(shape)}`);
    }
    this.checkHostTransfer("upload");
    const dataId = backend.allocate(dtype, values.length);
    backend.write(dataId, values);
    return this.makeTensor({ dataId, shape, dtype }, backend);
  }

  /** A new tensor over `source`'s buffer, possibly with another shape of the same size. */
  shareTensor(source: Tensor, shape: readonly number[]): Tensor {
    if (sizeOf(shape) !== source.size) {
      throw new ShapeError(`reshape: cannot view ${formatShape(source.shape)} (${source.size} elements) as ${formatShape(shape)}`);
    }
    return this.makeTensor({ dataId: source.dataId, shape, dtype: source.dtype }, source.backend);
  }

  /**
   * The finalizer frees `tensor`'s buffer if it is collected undisposed (a safety net, once per tensor), from
   * the end of the current task on (see `nursery`).
   */
  private watch(tensor: Tensor): void {
    const storage = tensor.storage;
    if (storage.finalized || storage.waiting || storage.disposed) return;
    storage.waiting = true;
    this.nursery.add(tensor);
    if (this.nursery.size >= kNurseryLimit) this.flushNursery();
    else if (!this.nurseryFlushQueued) {
      this.nurseryFlushQueued = true;
      queueMicrotask(() => this.flushNursery());
    }
  }

  /** Registers every waiting tensor that is still alive with the finalizer. */
  private flushNursery(): void {
    this.nurseryFlushQueued = false;
    for (const tensor of this.nursery) {
      const storage = tensor.storage;
      storage.waiting = false;
      if (storage.finalized || storage.disposed) continue;
      storage.finalized = true;
      this.finalizer.register(tensor, storage, storage);
    }
    this.nursery.clear();
  }

  disposeTensor(tensor: Tensor): void {
    const storage = tensor.storage;
    if (storage.disposed) return;
    if (storage.finalized) this.finalizer.unregister(storage);
    else if (storage.waiting) {
      storage.waiting = false;
      this.nursery.delete(tensor);
    }
    this.release(storage);
    const count = this.tensorCounts.get(storage.backend);
    if (count !== undefined) this.tensorCounts.set(storage.backend, count - 1);
    // An observer freeing what hung off a collected tensor (autograd's saved tensors) frees part of the same leak.
    if (this.releasingCollected > 0) this.collectedTensors++;
    if (this.disposeObservers.size > 0) this.notifyDisposed(tensor.id, tensor);
  }

  assignStorage(target: Tensor, source: Tensor): void {
    if (target.dataId === source.dataId) return;
    const record = this.buffers.get(source.dataId);
    if (record) record.refCount++;
    this.releaseBuffer(target.storage.dataId, target.storage.backend);
    target.storage.dataId = source.dataId;
    target.storage.version++;
  }

  /** The `Move` kernel: `tensor`'s values on another backend, or a tensor sharing its buffer on its own. */
  private moveTensor(tensor: Tensor, backendName: string): Tensor {
    const target = this.backendInstance(backendName);
    if (target === tensor.backend) return this.shareTensor(tensor, tensor.shape);
    return this.upload(tensor.backend.readSync(tensor.dataId), tensor.shape, tensor.dtype, target);
  }

  /** Host reads and uploads cannot be recorded into a graph: a replay would not repeat them. */
  checkHostTransfer(what: string): void {
    if (this.capture) {
      throw new GraphError(
        `captureGraph: ${what} moves data between host and device inside the captured step, which a replay cannot repeat; make inputs before capturing and read results after replay()`,
      );
    }
  }

  /**
   * Whether a kernel may write `written` in place: each is the only tensor on its buffer (no clone or reshape shares
   * it), and no buffer appears twice among `written` and `read`. Captured graphs' references do not count: a graph
   * reads its inputs' current contents at each replay, so an input written in place (by a kernel recorded in the
   * graph, or eagerly between replays) is updated where the next replay reads it.
   */
  canWriteInPlace(written: readonly Tensor[], read: readonly Tensor[]): boolean {
    const seen = new Set<DataId>();
    for (const t of written) {
      const dataId = t.dataId;
      const record = this.buffers.get(dataId);
      if (record === undefined || record.refCount - record.graphRefs !== 1 || seen.has(dataId)) return false;
      seen.add(dataId);
    }
    for (const t of read) if (seen.has(t.dataId)) return false;
    return true;
  }

  /** One more reference on a buffer: a tensor pointed at it, or a captured graph (`forGraph`) keeping it alive. */
  retainBuffer(dataId: DataId, forGraph = false): void {
    const record = this.buffers.get(dataId);
    if (!record) return;
    record.refCount++;
    if (forGraph) record.graphRefs++;
  }

  /** Points `target` at a buffer of its backend that another reference keeps alive (as `assign` does). */
  pointAt(target: Tensor, dataId: DataId): void {
    if (target.dataId === dataId) return;
    this.retainBuffer(dataId);
    this.releaseBuffer(target.storage.dataId, target.storage.backend);
    target.storage.dataId = dataId;
    target.storage.version++;
  }

  /** Drops a reference taken with retainBuffer (the same `forGraph`). */
  releaseRetained(dataId: DataId, backend: Backend, forGraph = false): void {
    const record = this.buffers.get(dataId);
    if (forGraph && record) record.graphRefs--;
    this.releaseBuffer(dataId, backend);
  }

  /** Storage values as the user-facing array: half types widened to float32. */
  readValues(tensor: Tensor, values: BackendValues): TensorValues {
    if (tensor.dtype === "float16") return float16BitsToFloat32Array(values as Uint16Array);
    if (tensor.dtype === "bfloat16") return bfloat16BitsToFloat32Array(values as Uint16Array);
    return values as TensorValues;
  }

  private release(storage: TensorStorage): void {
    storage.disposed = true;
    this.releaseBuffer(storage.dataId, storage.backend);
  }

  private releaseBuffer(dataId: DataId, backend: Backend): void {
    const record = this.buffers.get(dataId);
    if (!record) return;
    record.refCount--;
    if (record.refCount === 0) {
      this.buffers.delete(dataId);
      backend.free(dataId);
    }
  }

  private releaseCollected(storage: TensorStorage): void {
    if (storage.disposed) return;
    this.collectedTensors++;
    this.release(storage);
    const count = this.tensorCounts.get(storage.backend);
    if (count !== undefined) this.tensorCounts.set(storage.backend, count - 1);
    if (this.disposeObservers.size === 0) return;
    this.releasingCollected++;
    try {
      this.notifyDisposed(storage.tensorId, null);
    } finally {
      this.releasingCollected--;
    }
  }

  // ------------------------------------------------------------------ scopes

  tidy<T>(fn: () => T): T {
    if (typeof fn !== "function") throw new ValueError(`tidy: expected a function, got ${kindOf(fn)}`);
    this.scopes.push({ tensors: new Set() });
    let result: T;
    try {
      result = fn();
    } catch (error) {
      this.endScope(undefined);
      throw error;
    }
    if (result instanceof Promise) {
      this.endScope(undefined);
      throw new ValueError("tidy: the function returned a Promise; tidy only tracks synchronous code");
    }
    this.endScope(result);
    if (this.scopes.length === 0) this.debugHooks?.outermostScopeExited();
    return result;
  }

  /** Ends the innermost scope: disposes its tensors except kept ones and those in `result`. */
  private endScope(result: unknown): void {
    const scope = this.scopes.pop();
    if (!scope) return;
    const survivors = new Set<unknown>();
    collectTensors(result, survivors);
    const parent = this.scopes.at(-1);
    for (const tensor of scope.tensors) {
      if (tensor.kept) continue;
      if (!survivors.has(tensor)) tensor.dispose();
      else if (parent) parent.tensors.add(tensor);
      else this.watch(tensor);
    }
  }

  /**
   * Whether `tensor` belongs to the innermost tidy scope: made there (or returned into it by a nested scope) and not
   * kept. Such a tensor, returned from the scope, is the caller's own handle; one from outside is shared.
   */
  ownedByScope(tensor: Tensor): boolean {
    return this.scopes.at(-1)?.tensors.has(tensor) ?? false;
  }

  keep<T extends Tensor>(tensor: T): T {
    if (!(tensor instanceof Tensor)) throw new ValueError(`keep: expected a Tensor, got ${kindOf(tensor)}`);
    tensor.kept = true;
    for (const scope of this.scopes) scope.tensors.delete(tensor);
    this.watch(tensor);
    return tensor;
  }

  // ------------------------------------------------------------------ memory

  memory(): MemoryInfo {
    const backends: Record<string, BackendMemoryInfo> = {};
    let numTensors = 0;
    let numBuffers = 0;
    let numBytes = 0;
    for (const [name, backend] of this.instances) {
      let buffers = 0;
      let bytes = 0;
      for (const record of this.buffers.values()) {
        if (record.backend !== backend) continue;
        buffers++;
        bytes += record.bytes;
      }
      const tensors = this.tensorCounts.get(backend) ?? 0;
      backends[name] = { numTensors: tensors, numBuffers: buffers, numBytes: bytes, backend: backend.memory() };
      numTensors += tensors;
      numBuffers += buffers;
      numBytes += bytes;
    }
    return { numTensors, numBuffers, numBytes, numCollected: this.collectedTensors, backends };
  }
}

/** Bumps the version of every tensor a kernel called with `inPlace: true` wrote (its declaration's inPlaceInputs). */
function countInPlaceWrites(kernelName: string, inputs: Record<string, Tensor | Tensor[] | undefined>): void {
  for (const key of kernelDeclaration(kernelName)?.inPlaceInputs ?? []) {
    const value = inputs[key];
    if (value instanceof Tensor) value.storage.version++;
    else if (Array.isArray(value)) for (const t of value) t.storage.version++;
  }
}

/** An observer must be a function: anything else was called by every later kernel or disposal, which then threw. */
function checkObserver(op: string, observer: unknown): void {
  if (typeof observer !== "function") throw new ValueError(`${op}: observer must be a function, got ${kindOf(observer)}`);
}

const BACKEND_METHODS = ["allocate", "write", "read", "readSync", "free", "memory"] as const;

/**
 * Throws unless a factory's result has what the engine calls: a kernels table and the memory methods. Without them the
 * first op failed with a TypeError ("Cannot read properties of undefined (reading 'Fill')") instead of the backend
 * failing to start, which the registry reports and falls back from.
 */
function checkBackendObject(backend: unknown): asserts backend is Backend {
  if (backend === null || typeof backend !== "object") throw new BackendError(`its factory returned ${kindOf(backend)}, not a Backend object`);
  const candidate = backend as Record<string, unknown>;
  const missing: string[] = BACKEND_METHODS.filter((method) => typeof candidate[method] !== "function");
  if (candidate.kernels === null || typeof candidate.kernels !== "object") missing.unshift("kernels (an object)");
  if (missing.length > 0) throw new BackendError(`its factory returned an object that is not a Backend: it lacks ${missing.join(", ")}`);
}

function isMultiOutput(kernelName: KernelName): boolean {
  const { outputs } = KERNEL_CATALOGUE[kernelName];
  return outputs === "list" || outputs > 1;
}

/**
 * Adds to `into` every tensor in `value` (a tensor, or arrays, Maps, Sets and objects of them, at any depth) and every
 * object walked: each is walked once (a cycle ends), with a stack of its own (a deep one cannot overflow the call
 * stack), and typed arrays are skipped (a tidy returning dataSync()'s values holds no tensor).
 */
function collectTensors(value: unknown, into: Set<unknown>): void {
  const stack = [value];
  while (stack.length > 0) {
    const item = stack.pop();
    if (item instanceof Tensor) into.add(item);
    else if (item !== null && typeof item === "object" && !into.has(item) && !ArrayBuffer.isView(item)) {
      into.add(item);
      for (const entry of item instanceof Map || item instanceof Set || Array.isArray(item) ? item : Object.values(item)) stack.push(entry);
    }
  }
}

/** The engine every op and tensor uses. */
export const engine = new Engine();

// ---------------------------------------------------------------------------- public API

/**
 * Registers a backend factory. The highest-priority backend that starts becomes the default;
 * one whose factory throws is skipped with one warning. Returns false if the name is taken.
 */
export function registerBackend(name: string, factory: BackendFactory, priority = 1): boolean {
  return engine.registerBackend(name, factory, priority);
}

/** Unregisters a backend, disposing its instance (its tensors become unusable). */
export function removeBackend(name: string): void {
  engine.removeBackend(name);
}

/** Makes `name` the active backend, starting it if needed; throws BackendError with the reason if it cannot start. */
export function setBackend(name: string): void {
  engine.setBackend(name);
}

/** The active backend's name (choosing and starting the default if none was set). */
export function getBackend(): string {
  return engine.activeBackendName();
}

/** The backend object of that name (default: the active one), started if needed. */
export function getBackendInstance(name?: string): Backend {
  return name === undefined ? engine.activeBackend() : engine.backendInstance(name);
}

/** Registered backend names, highest priority first. */
export function listBackends(): string[] {
  return engine.listBackends();
}

/** Runs a kernel by name on the backend holding the inputs (the active one when there are none). */
export function runKernel<K extends KernelName>(
  kernelName: K,
  inputs: TensorInputs<K>,
  attrs: KernelAttrs<K>,
): TensorOutputs<K> {
  return engine.runKernel(kernelName, inputs, attrs);
}

/** Subscribes to every kernel call (after it ran; `clone()` shows up as `Clone`); returns the unsubscribe function. */
export function addKernelObserver(observer: KernelObserver): () => void {
  return engine.addKernelObserver(observer);
}

/**
 * Subscribes to tensors going away: each tensor is reported once, when disposed (by
 * `dispose()`, `tidy` or `dispose(value)`) or when the finalizer frees it; returns the
 * unsubscribe function.
 */
export function addDisposeObserver(observer: DisposeObserver): () => void {
  return engine.addDisposeObserver(observer);
}

/**
 * Subscribes to changes of a tensor's `requiresGrad`: `fn` runs before each change (not
 * when the value set is the current one) and can refuse it by throwing; returns the
 * unsubscribe function.
 */
export function addRequiresGradObserver(observer: RequiresGradObserver): () => void {
  return engine.addRequiresGradObserver(observer);
}

/**
 * Subscribes to `assign`: `fn` runs before each write (after its arguments were checked) and can refuse it by
 * throwing, leaving the target unchanged; returns the unsubscribe function. Kernels that write in place are seen by
 * kernel observers (attrs.inPlace).
 */
export function addAssignObserver(observer: AssignObserver): () => void {
  return engine.addAssignObserver(observer);
}

/** Runs `fn`, then disposes every tensor created inside except those it returns (at any depth, as `dispose` finds them) or that were kept. */
export function tidy<T>(fn: () => T): T {
  return engine.tidy(fn);
}

/** Exempts a tensor from the cleanup of every enclosing and future `tidy` scope. */
export function keep<T extends Tensor>(tensor: T): T {
  return engine.keep(tensor);
}

/** Disposes every tensor found in `value` (a tensor, or arrays, Maps, Sets and objects of them, at any depth). */
export function dispose(value: unknown): void {
  const found = new Set<unknown>();
  collectTensors(value, found);
  for (const t of found) if (t instanceof Tensor) t.dispose();
}

/** Live tensors, buffers and bytes, in total and per started backend. */
export function memory(): MemoryInfo {
  return engine.memory();
}

/**
 * Test mode: each kernel must leave allocated exactly the new buffers it returns; any
 * other buffer left behind throws KernelLeakError. Returns the previous setting.
 */
export function setKernelLeakCheck(enabled: boolean): boolean {
  const previous = engine.kernelLeakCheck;
  engine.kernelLeakCheck = enabled;
  return previous;
}

export type { KernelOutputs };
