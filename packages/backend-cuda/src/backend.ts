import { resolve } from "node:path";
import {
  type Backend,
  BackendError,
  type BackendMemory,
  type BackendValues,
  BsrPattern,
  type BackendGraphs,
  type DataId,
  type DType,
  GraphError,
  type KernelTable,
  POISON_BITS,
  type TensorInfo,
  ValueError,
  allocStorage,
  bytesPerElement,
  formatArg,
  isDType,
  isFloatDType,
  isStorageOf,
  sizeOf,
} from "@blocksparse/core";
import {
  type AutotuneCache,
  EPILOGUES,
  PRODUCTS,
  TC_PATHS,
  inspectAutotuneCache,
  readAutotuneCache,
  sameDevice,
  serializeAutotuneCache,
  updateAutotuneCache,
  writeAutotuneCache,
} from "./autotune_cache";
import { environmentSwitch } from "./environment";
import { CudaError, CudaOutOfMemoryError, translateNativeError } from "./errors";
import { cudaKernels } from "./kernels";
import { startCuda } from "./loader";
import { type AutotuneRecord, type BuildInfo, DTYPE_CODE, type DeviceInfo, type GraphHandle, type NativeAddon, type PatternHandle } from "./native";
import { applyTf32Setting } from "./tf32";
import { warmUp } from "./warmup";

/** One device buffer of the cuda backend (the engine's DataId). */
export class CudaBuffer {
  freed = false;
  constructor(
    readonly handle: number,
    readonly dtype: DType,
    readonly size: number,
  ) {}
}

/**
 * How a block-sparse product may use the dense GEMM: sampledMatmul (CudaBackend.setDenseSampledMode), bsrLinear and
 * bsrMatmul (setDenseProductMode); index = the addon's code.
 */
export const DENSE_SAMPLED_MODES = ["auto", "never", "always"] as const;
export type DenseSampledMode = (typeof DENSE_SAMPLED_MODES)[number];

/** Memory figures of the cuda backend. */
export interface CudaMemory extends BackendMemory {
  /** Bytes of live tensor buffers (as asked for). */
  bytesInUse: number;
  /** Live tensor buffers. */
  buffers: number;
  /** What the device holds for live buffers, tensors and pattern indices both, in allocator blocks (512-byte multiples). */
  deviceBytesInUse: number;
  /** Freed blocks the allocator keeps for reuse, at any size that fits (not those of graph pools). */
  cachedBytes: number;
  cachedBuffers: number;
  /** Memory held from CUDA in segments (live, cached and graph pools' blocks). */
  reservedBytes: number;
  segments: number;
  /** Segments wholly free, which `releaseCache()` returns to CUDA. */
  releasableBytes: number;
  /** Patterns whose indices are on the device. */
  patterns: number;
  cudaMallocCalls: number;
  cacheHits: number;
  /** Freed memory kept for live captured graphs (their own temporaries, reused only by them). */
  graphPoolBytes: number;
  /** Captured graphs not yet disposed. */
  graphs: number;
  deviceFreeBytes: number;
  deviceTotalBytes: number;
}

/** Signals whose default action ends the process without an "exit" event: the autotune cache is written on them too. */
const EXIT_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** A CUDA graph of this backend (captureGraph). */
class CudaGraph {
  destroyed = false;
  /**
   * @param patterns the block-sparse patterns whose device indices the graph's kernels read: freed only once no live
   *   graph holds them (a replay reads them by the addresses recorded at capture).
   */
  constructor(
    readonly handle: GraphHandle,
    readonly patterns: ReadonlySet<PatternHandle>,
  ) {}
}

/**
 * The CUDA backend: buffers live in device memory behind the addon's caching allocator, every kernel
 * runs on one stream, and reads wait for the work queued before them.
 */
export class CudaBackend implements Backend {
  readonly name: string = "cuda";
  readonly kernels: KernelTable<this> = cudaKernels;
  poisonAllocations = false;
  readonly addon: NativeAddon;
  readonly device: DeviceInfo;
  readonly build: BuildInfo;
  /** Where the addon was loaded from. */
  readonly addonPath: string;
  private tensorBytes = 0;
  private readonly live = new Set<CudaBuffer>();
  private readonly patternHandles = new WeakMap<BsrPattern, PatternHandle>();
  private readonly livePatterns = new Set<PatternHandle>();
  private readonly patternFinalizer = new FinalizationRegistry<PatternHandle>((handle) => this.freePattern(handle));
  /** Buffers allocated by the kernel now running, freed if it throws. */
  private kernelAllocations: CudaBuffer[] | null = null;
  private disposed = false;
  /**
   * Milliseconds the start-up warm-up took (it runs the step's kernels once so that no first call pays
   * for lazy loading), or null when BLOCKSPARSE_CUDA_WARMUP=0 turned it off.
   */
  readonly warmUpMs: number | null = null;

  /** Throws a CudaError with the one-line reason when CUDA cannot run here. */
  constructor() {
    const start = startCuda();
    if (start.addon === null) throw new CudaError(`CUDA is unavailable: ${start.reason}`);
    this.addon = start.addon;
    this.device = start.device;
    this.addonPath = start.path;
    this.build = this.addon.buildInfo();
    applyTf32Setting(this.addon);
    if (environmentSwitch("BLOCKSPARSE_CUDA_AUTOTUNE", false)) this.addon.setAutotune(true);
    const cacheFile = process.env.BLOCKSPARSE_CUDA_AUTOTUNE_CACHE;
    if (cacheFile) this.useAutotuneCache(cacheFile);
    // Said once per process (one backend instance): dense matmul is slower without cuBLAS, never wrong.
    if (!this.build.cublas) {
      process.emitWarning(`${this.build.cublasLibrary}; dense matmul runs on the built-in tiled kernel (install cuBLAS for faster dense layers)`, {
        code: "BLOCKSPARSE_CUDA_NO_CUBLAS",
      });
    }
    if (environmentSwitch("BLOCKSPARSE_CUDA_WARMUP", true)) this.warmUpMs = warmUp(this);
  }

  /**
   * Runs each kernel of a training or inference step once on small inputs, so that its first real call
   * does not pay for loading it (done at start unless BLOCKSPARSE_CUDA_WARMUP=0). Returns milliseconds.
   */
  warmUp(): number {
    this.checkAlive();
    this.checkNotCapturing("warmUp");
    return warmUp(this);
  }

  // ---------------------------------------------------------------- Backend

  allocate(dtype: DType, size: number): DataId {
    this.checkAlive();
    if (!isDType(dtype)) throw new ValueError(`cuda: cannot allocate elements of dtype ${formatArg(dtype)}`);
    if (!Number.isInteger(size) || size < 0) throw new ValueError(`cuda: cannot allocate ${size} elements`);
    const bytes = size * bytesPerElement(dtype);
    // Past 2^53 bytes the addon cannot take the count (it would refuse it as a malformed argument): no device holds it.
    if (bytes > Number.MAX_SAFE_INTEGER) throw new CudaOutOfMemoryError(`cuda: cannot allocate ${size} ${dtype} elements (${bytes} bytes): out of memory`);
    const handle = this.native(() => this.addon.alloc(bytes));
    if (this.poisonAllocations && size > 0) {
      try {
        this.native(() => this.addon.fillBits(bytesPerElement(dtype) as 2 | 4, handle, size, POISON_BITS[dtype]));
      } catch (error) {
        // Nobody holds the buffer yet: give it back (a failure there too leaves the first error to report).
        try {
          this.addon.free(handle);
        } catch {}
        throw error;
      }
    }
    const buffer = new CudaBuffer(handle, dtype, size);
    this.live.add(buffer);
    this.tensorBytes += bytes;
    this.kernelAllocations?.push(buffer);
    return buffer;
  }

  write(dataId: DataId, values: BackendValues): void {
    const buffer = this.buffer(dataId);
    if (!isStorageOf(buffer.dtype, values) || values.length !== buffer.size) {
      throw new ValueError(
        `cuda: write expects the ${buffer.dtype} storage array of ${buffer.size} elements, got ${ArrayBuffer.isView(values) ? `${values.constructor.name}(${values.length})` : formatArg(values)}`,
      );
    }
    this.native(() => this.addon.write(buffer.handle, values));
  }

  async read(dataId: DataId): Promise<BackendValues> {
    return this.readSync(dataId);
  }

  readSync(dataId: DataId): BackendValues {
    const buffer = this.buffer(dataId);
    const out = allocStorage(buffer.dtype, buffer.size);
    this.native(() => this.addon.read(buffer.handle, out));
    return out;
  }

  free(dataId: DataId): void {
    const buffer = this.buffer(dataId);
    buffer.freed = true;
    this.live.delete(buffer);
    this.tensorBytes -= buffer.size * bytesPerElement(buffer.dtype);
    this.native(() => this.addon.free(buffer.handle));
  }

  memory(): CudaMemory {
    const native = this.disposed ? undefined : this.native(() => this.addon.memory());
    return {
      bytesInUse: this.tensorBytes,
      buffers: this.live.size,
      deviceBytesInUse: native?.bytesInUse ?? 0,
      cachedBytes: native?.bytesCached ?? 0,
      cachedBuffers: native?.buffersCached ?? 0,
      reservedBytes: native?.bytesReserved ?? 0,
      segments: native?.segments ?? 0,
      releasableBytes: native?.bytesReleasable ?? 0,
      patterns: this.livePatterns.size,
      cudaMallocCalls: native?.cudaMallocCalls ?? 0,
      cacheHits: native?.cacheHits ?? 0,
      graphPoolBytes: native?.bytesInGraphPools ?? 0,
      graphs: this.liveGraphs.size,
      deviceFreeBytes: native?.deviceFreeBytes ?? 0,
      deviceTotalBytes: native?.deviceTotalBytes ?? 0,
    };
  }

  /**
   * CUDA graphs for core's captureGraph: one capture at a time on the backend's stream (relaxed mode), the
   * allocations made meanwhile from the graph's own pool, a replay queued with one cudaGraphLaunch.
   */
  readonly graphs: BackendGraphs = {
    beginCapture: () => {
      this.checkAlive();
      this.native(() => this.addon.beginCapture());
      this.capturing = true;
      this.capturedPatterns = new Set();
    },
    endCapture: () => {
      this.checkAlive();
      // The addon ends the capture whether or not the graph instantiates.
      this.capturing = false;
      const patterns = this.capturedPatterns;
      this.capturedPatterns = new Set();
      let graph: CudaGraph;
      try {
        graph = new CudaGraph(this.native(() => this.addon.endCapture()), patterns);
      } catch (error) {
        this.freeDeferredPatterns(patterns);
        throw error;
      }
      this.liveGraphs.add(graph);
      return graph;
    },
    abortCapture: () => {
      this.capturing = false;
      const patterns = this.capturedPatterns;
      this.capturedPatterns = new Set();
      if (!this.disposed) this.native(() => this.addon.abortCapture());
      this.freeDeferredPatterns(patterns);
    },
    launch: (graph: object) => {
      this.checkAlive();
      this.native(() => this.addon.launchGraph(this.graph(graph).handle));
    },
    destroy: (graph: object) => {
      if (graph instanceof CudaGraph && graph.destroyed) return; // already gone with the backend's dispose()
      const g = this.graph(graph);
      g.destroyed = true;
      this.liveGraphs.delete(g);
      if (!this.disposed) this.native(() => this.addon.destroyGraph(g.handle));
      this.freeDeferredPatterns(g.patterns);
    },
    copy: (src: DataId, dst: DataId) => {
      this.native(() => this.addon.copyBuffer(this.buffer(src).handle, this.buffer(dst).handle));
    },
  };
  private readonly liveGraphs = new Set<CudaGraph>();
  /** Between beginCapture and endCapture or abortCapture: the stream records instead of running. */
  private capturing = false;
  /** The patterns the capture in progress has used (they become its graph's). */
  private capturedPatterns = new Set<PatternHandle>();
  /** Patterns released (or collected) while a live graph or the capture in progress held them: freed when none does. */
  private readonly deferredPatterns = new Set<PatternHandle>();

  /** A call that waits for the device cannot be recorded: refused before it reaches the stream (which it would break). */
  private checkNotCapturing(what: string): void {
    if (this.capturing) {
      throw new GraphError(`cuda: ${what} waits for the device, which a graph capture cannot record; call it before captureGraph or after replay()`);
    }
  }

  private graph(graph: object): CudaGraph {
    if (!(graph instanceof CudaGraph)) throw new BackendError("cuda: not a graph of the cuda backend");
    if (graph.destroyed) throw new BackendError("cuda: the graph was destroyed");
    return graph;
  }

  /**
   * Frees every buffer and pattern index still held and releases the allocator's cache. Every release is attempted
   * even when one fails (a device fault), and the backend counts as disposed after it: a second call does nothing,
   * never frees a buffer twice. The first failure is thrown at the end, with the number of others in its message.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const failures: unknown[] = [];
    const attempt = (release: () => void) => {
      try {
        release();
      } catch (error) {
        failures.push(error);
      }
    };
    for (const graph of this.liveGraphs) {
      graph.destroyed = true;
      attempt(() => this.addon.destroyGraph(graph.handle));
    }
    this.liveGraphs.clear();
    for (const buffer of this.live) {
      buffer.freed = true;
      attempt(() => this.addon.free(buffer.handle));
    }
    this.live.clear();
    this.tensorBytes = 0;
    for (const handle of this.livePatterns) {
      this.patternFinalizer.unregister(this.unregisterToken(handle));
      attempt(() => this.addon.freePattern(handle));
    }
    this.livePatterns.clear();
    this.deferredPatterns.clear();
    attempt(() => this.addon.releaseCache());
    if (failures.length === 0) return;
    const first = failures[0];
    const message = first instanceof Error ? first.message : String(first);
    const others = failures.length - 1;
    throw new BackendError(
      `cuda: dispose released everything it could, but ${failures.length} release${failures.length === 1 ? "" : "s"} failed; the first: ${message}${others > 0 ? ` (and ${others} more)` : ""}`,
      { cause: first },
    );
  }

  // ---------------------------------------------------------------- CUDA specifics

  /** Gives the allocator's cached (freed) device memory back to CUDA (nothing during a graph capture, which cannot synchronise). */
  releaseCache(): void {
    this.checkAlive();
    this.native(() => this.addon.releaseCache());
  }

  /**
   * Caps the device memory this process's allocator holds from CUDA, in bytes (`null`: no cap, the default), as
   * PyTorch's `set_per_process_memory_fraction` does: a request that would take the allocator past it, after its cache
   * is released, throws a CudaOutOfMemoryError naming the cap, as running out of device memory does. Memory already
   * held is not freed; the cap applies from the next request. Products that would take extra scratch for speed (the
   * padded copies of a product at an odd width) run their slower route instead when the scratch does not fit. Returns
   * the previous cap.
   */
  setMemoryLimit(bytes: number | null): number | null {
    this.checkAlive();
    if (bytes !== null && !(Number.isSafeInteger(bytes) && bytes > 0))
      throw new ValueError(`setMemoryLimit: expected a positive whole number of bytes or null, got ${formatArg(bytes)}`);
    const previous = this.native(() => this.addon.setMemoryLimit(bytes ?? 0));
    return previous === 0 ? null : previous;
  }

  /** Waits until all queued device work has finished (a GraphError during a graph capture, which cannot wait). */
  synchronize(): void {
    this.checkAlive();
    this.checkNotCapturing("synchronize");
    this.native(() => this.addon.synchronize());
  }

  /**
   * How the tensor-core weight-gradient kernels split the tokens of sampledMatmul over `pattern` with `tokens` rows in
   * `dtype` (what they run when the dense GEMM does not): "1 split", "3 splits", or "264 whole groups, then 15 in 8
   * pieces each" (whole waves of column groups, then the rest split into one short wave; docs/kernels.md); "declined"
   * where they do not run (float32 without TF32, shapes without tensor-core kernels, a GPU before sm_80).
   */
  sampledPlan(pattern: BsrPattern, tokens: number, dtype: DType): string {
    this.checkAlive();
    if (!(pattern instanceof BsrPattern)) throw new ValueError(`sampledPlan: pattern must be a BsrPattern, got ${formatArg(pattern)}`);
    if (!Number.isSafeInteger(tokens) || tokens < 1) throw new ValueError(`sampledPlan: tokens must be a positive whole number, got ${formatArg(tokens)}`);
    if (!isDType(dtype) || !isFloatDType(dtype)) throw new ValueError(`sampledPlan: dtype must be float32, float16 or bfloat16, got ${formatArg(dtype)}`);
    const handle = this.pattern(pattern);
    return this.native(() => this.addon.sampledPlan(handle, tokens, this.code(dtype)));
  }

  /**
   * How sampledMatmul (the weight gradient) runs: "auto" (default) takes the dense GEMM and copies the
   * pattern's blocks out when that is faster than the block kernels (float16/bfloat16, density above the
   * block shape's break-even, a dense product of at least 2^28 FLOPs, cuBLAS present; see docs/kernels.md);
   * "never" always runs the block kernels;
   * "always" takes the dense GEMM whenever cuBLAS is there. Returns the previous mode (process-wide).
   */
  setDenseSampledMode(mode: DenseSampledMode): DenseSampledMode {
    return this.setDenseMode("setDenseSampledMode", mode, (code) => this.addon.setDenseSampledMode(code));
  }

  /**
   * How bsrLinear (also fused with an activation) and bsrMatmul run: "auto" (default) takes the dense GEMM over W's
   * blocks scattered into a dense scratch where that is faster than the block kernels (float16/bfloat16, cuBLAS
   * present, not autotuning, the density at or above the block shape's break-even: 32x32 from 0.4 with at least 8192
   * tokens, never 64x64 or 128x128, the other tensor-core shapes from 0.08-0.4 with at least 2048 tokens, shapes with
   * no tensor-core tile from 0.05; see docs/kernels.md);
   * "never" always runs the block kernels; "always" takes the dense GEMM whenever cuBLAS is there. The scratch is W's
   * dense size, for the call. Returns the previous mode (process-wide).
   */
  setDenseProductMode(mode: DenseSampledMode): DenseSampledMode {
    return this.setDenseMode("setDenseProductMode", mode, (code) => this.addon.setDenseProductMode(code));
  }

  /** Checks `mode`, hands its code to the addon's setter, returns the previous mode. */
  private setDenseMode(what: string, mode: DenseSampledMode, set: (code: 0 | 1 | 2) => number): DenseSampledMode {
    const code = DENSE_SAMPLED_MODES.indexOf(mode);
    // formatArg, not JSON.stringify: a BigInt or a cyclic object made a TypeError of the ValueError.
    if (code < 0) throw new ValueError(`${what}: mode must be one of ${DENSE_SAMPLED_MODES.join(", ")}, got ${formatArg(mode)}`);
    this.checkAlive();
    return DENSE_SAMPLED_MODES[this.native(() => set(code as 0 | 1 | 2))] ?? "auto";
  }

  /**
   * First-use autotuning of the block-sparse products (off by default; `BLOCKSPARSE_CUDA_AUTOTUNE=1` turns it
   * on at start). When on, the first bsrLinear, bsrMatmul or sampledMatmul call with a given shape (dtype, block
   * shape, tokens, W's shape, stored blocks) in bfloat16 or float16 times every route it can take on this GPU
   * (each tensor-core tile; for the weight gradient a few token splits; cuBLAS's dense product) and keeps the
   * fastest for every later call of that shape. That first call synchronizes the device once and costs a few
   * milliseconds; its output, like every later one, comes from the chosen route. A setDenseSampledMode or
   * setDenseProductMode other than "auto" still decides that product's route. Returns the previous setting
   * (process-wide).
   */
  setAutotune(on: boolean): boolean {
    if (typeof on !== "boolean") throw new ValueError(`setAutotune: on must be a boolean, got ${formatArg(on)}`);
    this.checkAlive();
    return this.native(() => this.addon.setAutotune(on));
  }

  /** What autotuning chose so far: one record per shape, with each candidate route's time per call. */
  autotuneRecords(): AutotuneRecord[] {
    this.checkAlive();
    return this.native(() => this.addon.autotuneRecords());
  }

  /**
   * Writes every autotuning choice so far to `file` (JSON, written whole: a reader never sees half of it), with
   * the GPU they were measured on. Returns the number of shapes written.
   */
  saveAutotune(file: string): number {
    if (typeof file !== "string" || file.length === 0) throw new ValueError("saveAutotune: file must be a non-empty path");
    const records = this.autotuneRecords();
    writeAutotuneCache(file, serializeAutotuneCache(this.device, records));
    return records.length;
  }

  /**
   * Takes the choices a saveAutotune file holds, so that those shapes run their chosen route without timing
   * anything; a shape this process has already tuned keeps its own choice. A file measured on another kind of GPU
   * (name or compute capability) is left out whole: `sameDevice` false, nothing imported. Throws
   * AutotuneCacheError when the file cannot be read or is not such a file (the message names the field). Does not
   * turn autotuning on: shapes the file lacks tune only when it is on.
   */
  loadAutotune(file: string): { imported: number; records: number; sameDevice: boolean } {
    if (typeof file !== "string" || file.length === 0) throw new ValueError("loadAutotune: file must be a non-empty path");
    this.checkAlive();
    return this.importAutotuneCache(readAutotuneCache(file));
  }

  /** Hands a parsed cache's choices to the addon when it was measured on this kind of GPU. */
  private importAutotuneCache(cache: AutotuneCache): { imported: number; records: number; sameDevice: boolean } {
    if (!sameDevice(cache, this.device)) return { imported: 0, records: cache.records.length, sameDevice: false };
    let imported = 0;
    for (const r of cache.records) {
      const added = this.native(() =>
        this.addon.importAutotune(
          PRODUCTS.indexOf(r.product),
          DTYPE_CODE[r.dtype],
          r.blockShape[0],
          r.blockShape[1],
          r.m,
          r.rows,
          r.cols,
          r.nnzBlocks,
          r.bias,
          r.choice.dense,
          TC_PATHS.indexOf(r.choice.path),
          r.choice.variant + 1,
          r.choice.splits,
          EPILOGUES.indexOf(r.epilogue ?? "none"),
        ),
      );
      if (added) imported++;
    }
    return { imported, records: cache.records.length, sameDevice: true };
  }

  /**
   * What BLOCKSPARSE_CUDA_AUTOTUNE_CACHE=file does at start: autotuning on, the file's choices taken when it exists,
   * and every choice written back to it when the process exits (or a signal ends it: EXIT_SIGNALS), with the choices
   * another process wrote there meanwhile for shapes this one did not tune (updateAutotuneCache, under a lock file beside
   * it). A file that cannot be used is reported as a warning (code BLOCKSPARSE_CUDA_AUTOTUNE_CACHE), not thrown: the
   * cache only saves time. A file that is not a cache of this version (not JSON, another format or version) is never
   * written over: it may be another program's data, or the cache of a newer version of this package.
   */
  useAutotuneCache(file: string): void {
    if (typeof file !== "string" || file.length === 0) throw new ValueError("useAutotuneCache: file must be a non-empty path");
    this.checkAlive();
    // Written at exit where it was read: a relative path went to the working directory of that moment.
    const path = resolve(file);
    this.addon.setAutotune(true);
    const found = inspectAutotuneCache(path);
    if (found.kind === "foreign") {
      process.emitWarning(`${found.error.message}; tuning from scratch, and the file is left as it is (no choices are saved to it)`, {
        code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE",
      });
    } else if (found.kind === "damaged" || found.kind === "outdated") {
      process.emitWarning(`${found.error.message}; tuning from scratch, and the file is rewritten with this process's choices at exit`, {
        code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE",
      });
    } else if (found.kind === "cache") {
      try {
        if (!this.importAutotuneCache(found.cache).sameDevice) {
          process.emitWarning(
            `autotune cache ${path}: measured on another kind of GPU than this ${this.device.name} (compute capability ${this.device.computeCapability}); tuning from scratch, and the file is rewritten with this GPU's choices at exit`,
            { code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE" },
          );
        }
      } catch (error) {
        process.emitWarning(`autotune cache ${path}: ${(error as Error).message}; tuning from scratch`, { code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE" });
      }
    }
    // One exit listener writes every file named so far (one per call would pass Node's limit of ten and warn).
    this.autotuneFiles.add(path);
    if (!process.listeners("exit").includes(this.writeAutotuneFiles)) {
      process.once("exit", this.writeAutotuneFiles);
      // Node emits no "exit" when a signal ends the process (Ctrl-C, a scheduler's SIGTERM): those write too.
      for (const signal of EXIT_SIGNALS) process.once(signal, this.writeAutotuneFilesOnSignal);
    }
  }

  /**
   * A signal that would end the process: the files are written, then the signal takes its course. Its default action
   * (ending the process) is raised again unless the program listens for it itself, in which case that listener decides,
   * as it would have without this one.
   */
  private readonly writeAutotuneFilesOnSignal = (signal: NodeJS.Signals): void => {
    process.removeListener("exit", this.writeAutotuneFiles);
    for (const other of EXIT_SIGNALS) process.removeListener(other, this.writeAutotuneFilesOnSignal);
    this.writeAutotuneFiles();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };

  private readonly autotuneFiles = new Set<string>();
  private readonly writeAutotuneFiles = (): void => {
    for (const file of this.autotuneFiles) {
      try {
        // The records are the addon's, process-wide: they outlive a disposed backend.
        const update = updateAutotuneCache(file, this.device, this.addon.autotuneRecords());
        if (!update.written) {
          process.emitWarning(`${update.error.message}; the file is left as it is, and this process's autotuning choices are not saved`, {
            code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE",
          });
        } else if (update.unlocked !== undefined) {
          process.emitWarning(
            `autotune cache ${file}: written without its lock (${update.unlocked}); choices another process wrote at the same moment may be lost`,
            { code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE" },
          );
        }
      } catch (error) {
        process.emitWarning((error as Error).message, { code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE" });
      }
    }
  };

  /** Forgets every autotuning choice: the next call of each shape tunes again (after a GPU clock change, say). */
  clearAutotune(): void {
    this.checkAlive();
    this.native(() => this.addon.clearAutotune());
  }

  /** Dense matmul through cuBLAS (when built with it) or the built-in kernel. Returns whether cuBLAS is used. */
  setCublasEnabled(enabled: boolean): boolean {
    if (typeof enabled !== "boolean") throw new ValueError(`setCublasEnabled: enabled must be a boolean, got ${formatArg(enabled)}`);
    this.checkAlive();
    return this.native(() => this.addon.setCublasEnabled(enabled));
  }

  // ---------------------------------------------------------------- helpers for kernels

  /** The live buffer behind a handle. */
  buffer(dataId: DataId): CudaBuffer {
    this.checkAlive();
    if (!(dataId instanceof CudaBuffer)) throw new BackendError("cuda: the handle does not belong to the cuda backend");
    if (dataId.freed) throw new BackendError("cuda: the buffer was freed");
    return dataId;
  }

  /** The device buffer handle of an input. */
  handle(info: TensorInfo): number {
    return this.buffer(info.dataId).handle;
  }

  /** A new output tensor info. */
  output(shape: readonly number[], dtype: DType): TensorInfo {
    return { dataId: this.allocate(dtype, sizeOf(shape)), shape: [...shape], dtype };
  }

  /** Scratch memory for one kernel: freed when `use` returns or throws. */
  withScratch<T>(dtype: DType, size: number, use: (scratch: CudaBuffer) => T): T {
    const scratch = this.allocate(dtype, size) as CudaBuffer;
    try {
      return use(scratch);
    } finally {
      this.free(scratch);
    }
  }

  code(dtype: DType): number {
    return DTYPE_CODE[dtype];
  }

  /** The pattern's indices on the device: validated and uploaded once, freed when the pattern is collected. */
  pattern(pattern: BsrPattern): PatternHandle {
    // After dispose() a known handle is freed, and a new upload would be held by no one (dispose has run).
    this.checkAlive();
    const known = this.patternHandles.get(pattern);
    if (known !== undefined) {
      if (this.capturing) this.capturedPatterns.add(known);
      return known;
    }
    // Its upload waits for the device: inside a capture that was a generic CudaError, and the capture broken.
    if (this.capturing) {
      throw new GraphError("cuda: a block-sparse pattern is first used inside a graph capture, and its upload waits for the device, which a capture cannot record; run the step once before captureGraph");
    }
    const { blockColPtr, blockRowIdx, valueIndex } = pattern.columnIndex;
    const { blockRow, blockCol } = pattern.coordinates;
    const handle = this.native(() =>
      this.addon.createPattern({
        rows: pattern.shape[0],
        cols: pattern.shape[1],
        blockHeight: pattern.blockShape[0],
        blockWidth: pattern.blockShape[1],
        blockRows: pattern.blockRows,
        blockCols: pattern.blockCols,
        nnzBlocks: pattern.nnzBlocks,
        blockRowPtr: pattern.blockRowPtr,
        blockColIdx: pattern.blockColIdx,
        blockColPtr,
        blockRowIdx,
        valueIndex,
        coordBlockRow: blockRow,
        coordBlockCol: blockCol,
      }),
    );
    this.patternHandles.set(pattern, handle);
    this.livePatterns.add(handle);
    this.patternFinalizer.register(pattern, handle, this.unregisterToken(handle));
    return handle;
  }

  /** Frees a pattern's device indices now, instead of when the pattern is collected (a later use uploads them again). */
  releasePattern(pattern: BsrPattern): void {
    const handle = this.patternHandles.get(pattern);
    if (handle === undefined) return;
    this.patternHandles.delete(pattern);
    this.patternFinalizer.unregister(this.unregisterToken(handle));
    this.freePattern(handle);
  }

  /** Runs a kernel: native errors become typed errors, and outputs it allocated are freed if it throws. */
  runKernel<T>(run: () => T): T {
    const outer = this.kernelAllocations;
    const mine: CudaBuffer[] = [];
    this.kernelAllocations = mine;
    try {
      return run();
    } catch (error) {
      for (const buffer of mine) if (!buffer.freed) this.free(buffer);
      throw translateNativeError(error);
    } finally {
      this.kernelAllocations = outer;
    }
  }

  /** Calls the addon, turning its errors into typed errors. */
  native<T>(call: () => T): T {
    try {
      return call();
    } catch (error) {
      throw translateNativeError(error);
    }
  }

  private readonly tokens = new Map<PatternHandle, object>();

  private unregisterToken(handle: PatternHandle): object {
    let token = this.tokens.get(handle);
    if (!token) {
      token = { handle };
      this.tokens.set(handle, token);
    }
    return token;
  }

  /**
   * Frees a pattern's device indices, or (while a live graph or the capture in progress holds them: a replay reads them
   * at the addresses its capture recorded) puts that off until the last such graph is destroyed.
   */
  private freePattern(handle: PatternHandle): void {
    this.tokens.delete(handle);
    if (this.disposed || !this.livePatterns.has(handle)) return;
    if (this.patternInUse(handle)) {
      this.deferredPatterns.add(handle);
      return;
    }
    this.deferredPatterns.delete(handle);
    this.livePatterns.delete(handle);
    this.addon.freePattern(handle);
  }

  private patternInUse(handle: PatternHandle): boolean {
    if (this.capturedPatterns.has(handle)) return true;
    for (const graph of this.liveGraphs) if (graph.patterns.has(handle)) return true;
    return false;
  }

  /** Frees those of `handles` whose release was put off and that no live graph holds any more. */
  private freeDeferredPatterns(handles: ReadonlySet<PatternHandle>): void {
    if (this.disposed) return;
    for (const handle of handles) if (this.deferredPatterns.has(handle)) this.freePattern(handle);
  }

  private checkAlive(): void {
    if (this.disposed) throw new BackendError("cuda: the backend was disposed");
  }
}
