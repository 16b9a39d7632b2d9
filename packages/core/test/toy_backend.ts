import {
  type Backend,
  type BackendMemory,
  type BackendValues,
  type DataId,
  type DType,
  type KernelTable,
  POISON_BITS,
  allocStorage,
  broadcastShapes,
  bytesPerElement,
  sizeOf,
} from "@blocksparse/core";

/**
 * A minimal backend for engine tests: host memory of its own, float32 Fill and same-shape Add,
 * plus an optional leaky kernel, or a table given by the test.
 */
export class ToyBackend implements Backend {
  readonly kernels: KernelTable<ToyBackend>;
  poisonAllocations = false;
  private readonly buffers = new Map<DataId, { values: BackendValues; dtype: DType }>();

  constructor(
    readonly name: string,
    options: { leakyNeg?: boolean; kernels?: KernelTable<ToyBackend> } = {},
  ) {
    this.kernels = options.kernels ?? {
      Fill: ({ attrs, backend }) => {
        const dataId = backend.allocate(attrs.dtype, sizeOf(attrs.shape));
        backend.values(dataId).fill(attrs.value);
        return { dataId, shape: attrs.shape, dtype: attrs.dtype };
      },
      Add: ({ inputs: { a, b }, backend }) => {
        const shape = broadcastShapes(a.shape, b.shape);
        const dataId = backend.allocate(a.dtype, sizeOf(shape));
        const out = backend.values(dataId);
        const av = backend.values(a.dataId);
        const bv = backend.values(b.dataId);
        for (let i = 0; i < out.length; i++) out[i] = av[av.length === 1 ? 0 : i] + bv[bv.length === 1 ? 0 : i];
        return { dataId, shape, dtype: a.dtype };
      },
    };
    if (options.leakyNeg) {
      this.kernels.Neg = ({ inputs: { x }, backend }) => {
        backend.allocate("float32", 16); // scratch never freed: the leak check must catch it
        const dataId = backend.allocate(x.dtype, sizeOf(x.shape));
        const out = backend.values(dataId);
        const input = backend.values(x.dataId);
        for (let i = 0; i < out.length; i++) out[i] = -input[i];
        return { dataId, shape: x.shape, dtype: x.dtype };
      };
    }
  }

  values(dataId: DataId): BackendValues {
    const entry = this.buffers.get(dataId);
    if (!entry) throw new Error("toy: unknown buffer");
    return entry.values;
  }

  allocate(dtype: DType, size: number): DataId {
    const dataId = {};
    const values = allocStorage(dtype, size);
    if (this.poisonAllocations) values.fill(dtype === "float32" ? Number.NaN : POISON_BITS[dtype]);
    this.buffers.set(dataId, { values, dtype });
    return dataId;
  }

  write(dataId: DataId, values: BackendValues): void {
    this.values(dataId).set(values);
  }

  async read(dataId: DataId): Promise<BackendValues> {
    return this.readSync(dataId);
  }

  readSync(dataId: DataId): BackendValues {
    return this.values(dataId).slice();
  }

  free(dataId: DataId): void {
    this.buffers.delete(dataId);
  }

  memory(): BackendMemory {
    let bytesInUse = 0;
    for (const { values, dtype } of this.buffers.values()) bytesInUse += values.length * bytesPerElement(dtype);
    return { bytesInUse, buffers: this.buffers.size, toyFigure: 42 };
  }
}
