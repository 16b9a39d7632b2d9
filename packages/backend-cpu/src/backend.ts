import {
  BackendError,
  type BackendMemory,
  type BackendValues,
  type CompleteKernelTable,
  type DType,
  type DataId,
  JsBackend,
  type JsBuffer,
  bytesPerElement,
  jsKernels,
  productKernels,
} from "@blocksparse/core";
import { ATTENTION_SCRATCH_FLOATS, attentionKernels, cachedAttentionKernels } from "./attention";
import { BufferCache, type BufferCacheStats } from "./buffer_cache";
import { native, nativeAttentionHeads, nativeAttentionRows, nativeCachedAttention, nativeCompute } from "./compute";
import { CpuOutOfMemoryError } from "./errors";
import { loadAddon } from "./loader";
import { pointwiseKernels } from "./pointwise";
import type { BuildInfo, NativeAddon } from "./native";
import { applyEnvironmentSettings } from "./settings";

/** Half tensors of fewer elements convert in TypeScript: below it, the call into the addon costs more than the loop. */
const NATIVE_CONVERSION_MIN = 256;

/** Buffers of at least this many bytes are advised to use huge pages (a first touch then faults once per 2 MiB). */
const HUGE_PAGE_MIN_BYTES = 4 * 2 ** 20;

/** Bytes a buffer holds beyond its storage, so the storage can start on a cache line. */
const CACHE_LINE_BYTES = 64;

/** A typed array of the dtype's storage type over `length` elements of `buffer` from `byteOffset`. */
function storageOver(dtype: DType, buffer: ArrayBuffer, byteOffset: number, length: number): BackendValues {
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer, byteOffset, length);
    case "int32":
      return new Int32Array(buffer, byteOffset, length);
    default:
      return new Uint16Array(buffer, byteOffset, length);
  }
}

/** The cpu backend's memory figures: the live buffers, plus the caching allocator's. */
export interface CpuMemory extends BackendMemory, BufferCacheStats {}

/**
 * The native CPU backend. Tensors live in host memory exactly as the js backend stores them (a
 * Float32Array, Uint16Array of half bits or Int32Array per buffer), so every kernel without a native
 * version is the js backend's own, running on cpu tensors with no copy, and the native products read
 * and write the same arrays in place. Matmul, BsrLinear, BsrMatmul and SampledMatmul run in the addon:
 * packed SIMD micro-kernels on a thread pool, float32 compute (half inputs widened, outputs rounded); so do the
 * bias-and-activation kernels (GELU, ReLU, their backward) and the Adam/AdamW updates (pointwise.ts).
 */
export class CpuBackend extends JsBackend {
  override readonly name: string = "cpu";
  override readonly kernels: CompleteKernelTable<JsBackend>;
  readonly addon: NativeAddon;
  /** Where the addon was loaded from. */
  readonly addonPath: string;
  /** Freed buffers kept for reuse by size class (see buffer_cache.ts); `releaseCache()` drops them. */
  readonly cache: BufferCache;
  /** The handles this instance allocated: a js backend's are of the same class, and must not pass for its own. */
  private readonly owned = new WeakSet<DataId>();

  /** Throws a BackendError with the one-line reason when the addon is not here. */
  constructor() {
    super();
    const load = loadAddon();
    if (load.addon === null) throw new BackendError(`the native CPU backend is unavailable: ${load.reason}`);
    this.addon = load.addon;
    this.addonPath = load.path;
    this.cache = new BufferCache((bytes) => this.newArrayBuffer(bytes), undefined, CACHE_LINE_BYTES);
    // The settings are process-wide: the environment's are the defaults, applied once, each never over setCpuThreads or
    // setCpuIsa called before the first op (or by another worker's backend).
    const { threadsChosen, isaChosen } = this.addon.buildInfo();
    applyEnvironmentSettings({ threads: !threadsChosen, isa: !isaChosen });
    // The js kernels run on this backend's buffers directly (same storage), so no kernel needs
    // delegateToJs's copies; the products are replaced by native ones, and attention runs through them.
    const compute = nativeCompute(this.addon);
    const { activations, ...pointwise } = pointwiseKernels(this.addon);
    this.kernels = { ...jsKernels, ...productKernels(compute, activations), ...attentionKernels(compute, nativeAttentionRows(this.addon), ATTENTION_SCRATCH_FLOATS, nativeAttentionHeads(this.addon)), ...cachedAttentionKernels(nativeCachedAttention(this.addon)), ...pointwise } satisfies CompleteKernelTable<JsBackend>;
  }

  /** Storage starts on a cache line (an ArrayBuffer's data is only 16-byte aligned), so the kernels' vector loads never straddle two lines. */
  protected override createStorage(dtype: DType, size: number): BackendValues {
    const buffer = this.cache.take(size * bytesPerElement(dtype));
    return storageOver(dtype, buffer, this.addon.alignmentOffset(buffer), size);
  }

  override allocate(dtype: DType, size: number): DataId {
    const dataId = super.allocate(dtype, size);
    this.owned.add(dataId);
    return dataId;
  }

  /** The buffer behind one of this instance's handles; a js backend's or another cpu instance's throws, as cuda's does here. */
  override buffer(dataId: DataId): JsBuffer {
    if (!this.owned.has(dataId)) throw new BackendError(`${this.name}: the handle does not belong to the ${this.name} backend`);
    return super.buffer(dataId);
  }

  protected override releaseStorage(values: BackendValues): void {
    this.cache.give(values.buffer as ArrayBuffer);
  }

  /** A kernel's scratch (half inputs widened, half outputs' staging) comes from the cache and goes back to it. */
  protected override takeScratch(bytes: number): ArrayBuffer {
    return this.cache.take(bytes);
  }

  protected override releaseScratch(buffer: ArrayBuffer): void {
    this.cache.give(buffer);
  }

  /** Half inputs widened in the addon (vectorized, over the thread pool): the same bits as the js backend's loop, 5-20x sooner. */
  protected override widenHalf(dtype: "float16" | "bfloat16", bits: Uint16Array, out: Float32Array): Float32Array {
    if (bits.length < NATIVE_CONVERSION_MIN) return super.widenHalf(dtype, bits, out);
    native(() => this.addon.widenHalf(bits, 0, out, 0, bits.length, dtype === "bfloat16"));
    return out;
  }

  /** Half outputs rounded in the addon, as widenHalf. */
  protected override roundHalf(dtype: "float16" | "bfloat16", data: Float32Array, bits: Uint16Array): void {
    if (bits.length < NATIVE_CONVERSION_MIN) {
      super.roundHalf(dtype, data, bits);
      return;
    }
    native(() => this.addon.roundHalf(data, 0, bits, 0, bits.length, dtype === "bfloat16"));
  }

  /** A copy of the buffer in new memory (huge pages when large, so the copy does not fault per 4 KiB page). */
  override readSync(dataId: DataId): BackendValues {
    const { values, dtype } = this.buffer(dataId);
    const out = storageOver(dtype, this.newArrayBuffer(values.byteLength), 0, values.length);
    out.set(values);
    return out;
  }

  override memory(): CpuMemory {
    return { ...super.memory(), ...this.cache.stats() };
  }

  /**
   * Drops the freed buffers the allocator keeps for reuse (the garbage collector returns their memory) and frees the
   * addon's packed-operand scratch, which otherwise keeps the largest size a product asked for (a packed copy of the
   * largest block-sparse weight multiplied) for the life of the process; the next product allocates it again.
   */
  releaseCache(): void {
    this.cache.release();
    this.addon.releaseScratch();
  }

  dispose(): void {
    this.releaseCache();
  }

  /** The micro-kernel, its tile and the thread count in use. */
  get build(): BuildInfo {
    return this.addon.buildInfo();
  }

  /** New zeroed memory; when the allocation fails the cache is released and it is tried once more. */
  private newArrayBuffer(bytes: number): ArrayBuffer {
    let buffer: ArrayBuffer;
    try {
      buffer = new ArrayBuffer(bytes);
    } catch (first) {
      if (!(first instanceof RangeError)) throw first;
      this.releaseCache();
      try {
        buffer = new ArrayBuffer(bytes);
      } catch (error) {
        const cause = error instanceof Error ? error.message : String(error);
        throw new CpuOutOfMemoryError(`cpu: cannot allocate ${bytes} bytes after releasing the cache (${cause}); ${this.memory().bytesInUse} bytes in use by live tensors`);
      }
    }
    if (bytes >= HUGE_PAGE_MIN_BYTES) this.addon.adviseHugePages(buffer);
    return buffer;
  }
}
