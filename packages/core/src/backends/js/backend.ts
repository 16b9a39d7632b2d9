import type { Backend, BackendMemory, DataId, KernelTable, TensorInfo } from "../../backend";
import { type BackendValues, type DType, POISON_BITS, allocStorage, allocationError, bytesPerElement, isStorageOf } from "../../dtypes";
import { BackendError, ValueError } from "../../errors";
import { bfloat16BitsToFloat32Into, float16BitsToFloat32Into, float32ToBfloat16BitsInto, float32ToFloat16BitsInto } from "../../half";
import { sizeOf } from "../../shape";
import { jsKernels } from "./kernels";

/** One buffer of the js backend: the dtype's storage array. */
export class JsBuffer {
  freed = false;
  constructor(
    readonly values: BackendValues,
    readonly dtype: DType,
  ) {}
}

function poison(values: BackendValues, dtype: DType): void {
  if (dtype === "float32") values.fill(Number.NaN);
  else values.fill(POISON_BITS[dtype]);
}

/** A float32 view of an output: for float32 the buffer itself, for halves a scratch array stored on `commit`. */
export interface FloatOutput {
  info: TensorInfo;
  data: Float32Array;
  /** Rounds the scratch into the half buffer (no-op for float32). Call once, after writing `data`. */
  commit(): TensorInfo;
}

/**
 * The reference backend: typed arrays in JS memory, every kernel in plain TypeScript.
 * float16/bfloat16 kernels widen to float32, compute, and round once on store.
 */
export class JsBackend implements Backend {
  readonly name: string = "js";
  readonly kernels: KernelTable<JsBackend> = jsKernels;
  poisonAllocations = false;
  private bytesInUse = 0;
  private buffers = 0;
  /** Kernels running (the engine's beginKernel / endKernel), and the scratch they took, given back when none runs. */
  private kernelDepth = 0;
  private readonly kernelScratch: ArrayBuffer[] = [];

  beginKernel(): void {
    this.kernelDepth++;
  }

  endKernel(): void {
    if (--this.kernelDepth > 0) return;
    this.kernelDepth = 0;
    for (const buffer of this.kernelScratch) this.releaseScratch(buffer);
    this.kernelScratch.length = 0;
  }

  /**
   * A float32 array of `length` elements for the running kernel alone (contents unspecified), taken back when the
   * outermost kernel returns; outside a kernel, new memory. The widened halves and the half outputs' staging come from
   * here: a new array per call (page faults, and the collector's work on external memory) cost more than converting.
   */
  protected scratchFloats(length: number): Float32Array {
    if (this.kernelDepth === 0 || length === 0) return new Float32Array(length);
    const buffer = this.takeScratch(length * 4);
    this.kernelScratch.push(buffer);
    return new Float32Array(buffer, 0, length);
  }

  /** Memory for scratchFloats (at least `bytes`): new here; a subclass may hand out reused memory. */
  protected takeScratch(bytes: number): ArrayBuffer {
    return new ArrayBuffer(bytes);
  }

  /** A scratch buffer no kernel uses any more: a subclass may keep it for reuse. */
  protected releaseScratch(_buffer: ArrayBuffer): void {}

  allocate(dtype: DType, size: number): DataId {
    if (!Number.isInteger(size) || size < 0) throw new ValueError(`${this.name}: cannot allocate ${size} elements`);
    let values: BackendValues;
    try {
      values = this.createStorage(dtype, size);
    } catch (error) {
      throw allocationError(error, `${this.name}: cannot allocate ${size * bytesPerElement(dtype)} bytes for ${size} ${dtype} elements, ${this.bytesInUse} in use`);
    }
    if (this.poisonAllocations) poison(values, dtype);
    this.bytesInUse += size * bytesPerElement(dtype);
    this.buffers++;
    return new JsBuffer(values, dtype);
  }

  write(dataId: DataId, values: BackendValues): void {
    const buffer = this.buffer(dataId);
    if (!isStorageOf(buffer.dtype, values) || values.length !== buffer.values.length) {
      throw new ValueError(
        `${this.name}: write expects the ${buffer.dtype} storage array of ${buffer.values.length} elements, got ${values.constructor.name}(${values.length})`,
      );
    }
    buffer.values.set(values);
  }

  async read(dataId: DataId): Promise<BackendValues> {
    return this.readSync(dataId);
  }

  readSync(dataId: DataId): BackendValues {
    return this.buffer(dataId).values.slice();
  }

  free(dataId: DataId): void {
    const buffer = this.buffer(dataId);
    buffer.freed = true;
    this.bytesInUse -= buffer.values.length * bytesPerElement(buffer.dtype);
    this.buffers--;
    this.releaseStorage(buffer.values);
  }

  /** The storage array of a new buffer: zeroed here; a subclass may hand out reused memory (contents unspecified). */
  protected createStorage(dtype: DType, size: number): BackendValues {
    return allocStorage(dtype, size);
  }

  /** Called once per freed buffer with its storage, which no tensor uses any more: a subclass may keep it for reuse. */
  protected releaseStorage(_values: BackendValues): void {}

  memory(): BackendMemory {
    return { bytesInUse: this.bytesInUse, buffers: this.buffers };
  }

  // ---------------------------------------------------------------- helpers for kernels

  /** The buffer behind a handle (throws on a foreign or freed handle). */
  buffer(dataId: DataId): JsBuffer {
    if (!(dataId instanceof JsBuffer)) throw new BackendError(`${this.name}: the handle does not belong to the ${this.name} backend`);
    if (dataId.freed) throw new BackendError(`${this.name}: the buffer was freed`);
    return dataId;
  }

  /** The raw storage of an input (no copy; never write to it). */
  storage(info: TensorInfo): BackendValues {
    return this.buffer(info.dataId).values;
  }

  /** An input's values as float32: the buffer itself for float32 (do not write), a widened copy for halves, a copy for int32. */
  floats(info: TensorInfo): Float32Array {
    const values = this.storage(info);
    switch (info.dtype) {
      case "float32":
        return values as Float32Array;
      case "float16":
      case "bfloat16":
        return this.widenHalf(info.dtype, values as Uint16Array, this.scratchFloats(values.length));
      default:
        return Float32Array.from(values);
    }
  }

  /** An int32 input's values (no copy). */
  ints(info: TensorInfo): Int32Array {
    return this.storage(info) as Int32Array;
  }

  /** Values of any dtype as numbers (float32 view for floats, Int32Array for int32). */
  numbers(info: TensorInfo): Float32Array | Int32Array {
    return info.dtype === "int32" ? this.ints(info) : this.floats(info);
  }

  /** A new output buffer and its raw storage. */
  output(shape: readonly number[], dtype: DType): { info: TensorInfo; values: BackendValues } {
    const dataId = this.allocate(dtype, sizeOf(shape));
    return { info: { dataId, shape: [...shape], dtype }, values: (dataId as JsBuffer).values };
  }

  /** A new float output written through a float32 array (see FloatOutput). */
  floatOutput(shape: readonly number[], dtype: DType): FloatOutput {
    const { info, values } = this.output(shape, dtype);
    if (dtype === "float32") return { info, data: values as Float32Array, commit: () => info };
    if (dtype === "int32") throw new ValueError(`${this.name}: floatOutput needs a float dtype`);
    // Zeroed, as a new array was: a kernel may add into its output.
    const data = this.scratchFloats(values.length).fill(this.poisonAllocations ? Number.NaN : 0);
    const bits = values as Uint16Array;
    return {
      info,
      data,
      commit: () => {
        this.roundHalf(dtype, data, bits);
        return info;
      },
    };
  }

  /** A half input's values widened into `out` (as long as the tensor): floats() into an array the caller holds. */
  floatsInto(info: TensorInfo, out: Float32Array): Float32Array {
    const storage = this.storage(info);
    if (out.length !== storage.length) throw new ValueError(`${this.name}: floatsInto got ${out.length} slots for ${storage.length} elements`);
    if (info.dtype !== "float16" && info.dtype !== "bfloat16") throw new ValueError(`${this.name}: floatsInto needs a float16 or bfloat16 tensor, got ${info.dtype}`);
    return this.widenHalf(info.dtype, storage as Uint16Array, out);
  }

  /**
   * `values` (one float32 per element) written into a float tensor's own buffer, rounded to its dtype as a half output's
   * commit rounds it: for kernels that write a result over an input (an optimizer's low-precision copies of its params).
   */
  storeFloats(info: TensorInfo, values: Float32Array): void {
    const storage = this.storage(info);
    if (values.length !== storage.length) throw new ValueError(`${this.name}: storeFloats got ${values.length} values for ${storage.length} elements`);
    if (info.dtype === "float32") (storage as Float32Array).set(values);
    else if (info.dtype === "float16" || info.dtype === "bfloat16") this.roundHalf(info.dtype, values, storage as Uint16Array);
    else throw new ValueError(`${this.name}: storeFloats needs a float tensor, got ${info.dtype}`);
  }

  /**
   * `out` = the float32 values of the half bits (as long as `bits`): what every kernel reads a float16 or bfloat16 input
   * through. Here @blocksparse/format's conversion; a subclass may convert faster, bit for bit the same.
   */
  protected widenHalf(dtype: "float16" | "bfloat16", bits: Uint16Array, out: Float32Array): Float32Array {
    return dtype === "float16" ? float16BitsToFloat32Into(bits, out) : bfloat16BitsToFloat32Into(bits, out);
  }

  /** `bits` = `data` rounded to the half dtype, nearest, ties to even: how a half output is stored (see widenHalf). */
  protected roundHalf(dtype: "float16" | "bfloat16", data: Float32Array, bits: Uint16Array): void {
    if (dtype === "float16") float32ToFloat16BitsInto(data, bits);
    else float32ToBfloat16BitsInto(data, bits);
  }

  /** A new output of any dtype written through numbers (int32 directly, floats via FloatOutput). */
  numberOutput(shape: readonly number[], dtype: DType): { info: TensorInfo; data: Float32Array | Int32Array; commit(): TensorInfo } {
    if (dtype !== "int32") return this.floatOutput(shape, dtype);
    const { info, values } = this.output(shape, dtype);
    return { info, data: values as Int32Array, commit: () => info };
  }
}
