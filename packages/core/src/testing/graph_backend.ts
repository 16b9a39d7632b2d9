import {
  type BackendGraphs,
  type DataId,
  type DType,
  JsBackend,
  type JsBuffer,
  jsKernels,
  type KernelTable,
  listBackends,
  POISON_BITS,
  registerBackend,
  type TensorInfo,
} from "@blocksparse/core";

interface RecordedGraph {
  steps: (() => void)[];
  /** Buffers the graph made, freed by the engine but kept (the graph reads and writes them on every replay). */
  released: JsBuffer[];
}

function poison(buffer: JsBuffer, dtype: DType): void {
  if (dtype === "int32") return;
  if (dtype === "float32") buffer.values.fill(Number.NaN);
  else buffer.values.fill(POISON_BITS[dtype]);
}

/**
 * The js backend with graphs, to check captureGraph's semantics where there is no GPU (registered by tests as
 * "js-graphs"). While capturing, each kernel runs and is recorded with its arguments, then its float outputs are
 * poisoned: as with CUDA graphs, nothing a capture computes is visible before a replay. A replay runs the
 * recorded kernels again and copies each fresh output into the buffer the captured output had (the addresses a
 * CUDA graph keeps). Buffers made during a capture are really freed only when their graph is destroyed.
 */
export class GraphRecordingBackend extends JsBackend {
  override readonly name: string = "js-graphs";
  override readonly kernels: KernelTable<JsBackend>;
  /** Replays so far. */
  launches = 0;
  private capturing: RecordedGraph | null = null;
  private readonly owners = new Map<JsBuffer, RecordedGraph>();

  readonly graphs: BackendGraphs = {
    beginCapture: () => {
      if (this.capturing) throw new Error("js-graphs: a capture is already in progress");
      this.capturing = { steps: [], released: [] };
    },
    endCapture: () => {
      const graph = this.capturing;
      if (!graph) throw new Error("js-graphs: no capture in progress");
      this.capturing = null;
      return graph;
    },
    abortCapture: () => {
      const graph = this.capturing;
      this.capturing = null;
      if (graph) this.graphs.destroy(graph);
    },
    launch: (graph: object) => {
      for (const step of (graph as RecordedGraph).steps) step();
      this.launches++;
    },
    destroy: (graph: object) => {
      const recorded = graph as RecordedGraph;
      for (const buffer of recorded.released) super.free(buffer);
      recorded.released.length = 0;
      for (const [buffer, owner] of this.owners) if (owner === recorded) this.owners.delete(buffer);
    },
    copy: (src: DataId, dst: DataId) => {
      this.buffer(dst).values.set(this.buffer(src).values);
    },
  };

  constructor() {
    super();
    const table: Record<string, unknown> = {};
    for (const [name, kernel] of Object.entries(jsKernels)) {
      if (typeof kernel !== "function") continue;
      table[name] = (args: { backend: JsBackend }) => this.run(kernel as (a: unknown) => TensorInfo | TensorInfo[], args);
    }
    this.kernels = table as KernelTable<JsBackend>;
  }

  private run(kernel: (args: unknown) => TensorInfo | TensorInfo[], args: unknown): TensorInfo | TensorInfo[] {
    const graph = this.capturing;
    // A kernel that writes its inputs (an optimizer's in-place update, a cache write) changes nothing at capture, as
    // with CUDA graphs: it runs on the inputs' values and they are put back; each replay writes them.
    const written =
      graph && (args as { attrs?: { inPlace?: boolean } }).attrs?.inPlace === true
        ? Object.values((args as { inputs: Record<string, TensorInfo | TensorInfo[] | undefined> }).inputs).flatMap((value) =>
            value === undefined ? [] : Array.isArray(value) ? value : [value],
          )
        : [];
    const saved = written.map((info) => this.buffer(info.dataId).values.slice());
    const result = kernel(args);
    for (const [i, info] of written.entries()) this.buffer(info.dataId).values.set(saved[i]);
    if (graph) {
      const outputs = Array.isArray(result) ? result : [result];
      graph.steps.push(() => {
        const fresh = kernel(args);
        (Array.isArray(fresh) ? fresh : [fresh]).forEach((info, i) => {
          this.buffer(outputs[i].dataId).values.set(this.buffer(info.dataId).values);
          super.free(info.dataId);
        });
      });
      for (const info of outputs) poison(this.buffer(info.dataId), info.dtype);
    }
    return result;
  }

  override allocate(dtype: DType, size: number): DataId {
    const dataId = super.allocate(dtype, size);
    if (this.capturing) this.owners.set(dataId as JsBuffer, this.capturing);
    return dataId;
  }

  override free(dataId: DataId): void {
    const owner = this.owners.get(this.buffer(dataId));
    if (owner) {
      this.owners.delete(dataId as JsBuffer);
      owner.released.push(dataId as JsBuffer);
      return;
    }
    super.free(dataId);
  }
}

/** Registers the js backend with graphs as "js-graphs" (once; below js, so never picked by default). */
export function registerGraphRecordingBackend(): void {
  if (!listBackends().includes("js-graphs")) registerBackend("js-graphs", () => new GraphRecordingBackend(), -1);
}
