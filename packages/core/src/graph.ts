import type { Backend, DataId } from "./backend";
import { type Engine, engine } from "./engine";
import { BackendError, GraphError } from "./errors";
import { assertBackendArg, optionsArg } from "./ops/validate";
import { type KernelDeclaration, kernelDeclaration } from "./kernel_names";
import { formatShape } from "./shape";
import { Tensor } from "./tensor";

/**
 * Whether a kernel call can be replayed, as its declaration says: an optimizer update whose step counts are
 * attributes (host numbers) cannot, since a replay would repeat the captured step; one given its step counts as
 * device tensors (`stepCounts`: an optimizer made with `capturable: true`) counts its replays on the device.
 */
function capturable(declaration: KernelDeclaration | undefined, inputs: Record<string, Tensor | Tensor[] | undefined>): boolean {
  const capture = declaration?.capture;
  if (capture === undefined) return true;
  return capture !== "never" && inputs[capture.requires] !== undefined;
}

/** Whether a captureGraph recording is in progress (code that must not be recorded, or must be recorded only in a capturable form, checks it). */
export function isCapturing(): boolean {
  return engine.capture !== null;
}

/**
 * Adds `check` to the capture in progress: each replay of the graph calls it first, before anything runs, and what it
 * throws stops the replay. For code whose recorded kernels hold host values as constants (an optimizer's betas, its
 * parameter groups), to refuse a replay that would no longer do what that code now says.
 */
export function addReplayCheck(check: () => void): void {
  const capture = engine.capture;
  if (!(capture instanceof Recorder)) throw new GraphError("addReplayCheck: no capture in progress");
  if (typeof check !== "function") throw new GraphError("addReplayCheck: check must be a function");
  capture.checks.push(check);
}

/** A step recorded once and replayed with one launch (see captureGraph). */
export interface CapturedGraph<T> {
  /**
   * Runs the recorded kernels again on the current contents of every tensor the step read (a tensor given new
   * storage since, by an optimizer's update or `assign`, is copied to where the graph reads it first); returns
   * what the captured function returned, its tensors now holding this replay's values. Queued like any kernel.
   */
  replay(): T;
  /** What the captured function returned: the same tensors every replay writes (and returns). */
  readonly result: T;
  /**
   * Frees the graph. The tensors it made stay valid and stay yours to dispose: `result`'s, and those the step left
   * elsewhere (gradients on parameters).
   */
  dispose(): void;
  readonly disposed: boolean;
  /** Tensors made before the capture that the step reads (refreshed on each replay). */
  readonly inputCount: number;
}

interface Input {
  tensor: Tensor;
  /** The buffer the graph reads. */
  dataId: DataId;
  /** Where the step left the tensor when it gave it new storage (`acc.assign(add(acc, x))`): the graph writes it. */
  end?: DataId;
  /**
   * The step writes this buffer in place (an optimizer's update): after each replay the tensor holds what the replay
   * wrote there, even if it was given other storage since the capture (`assign`, an eager update).
   */
  written?: boolean;
}

class Recorder {
  readonly inputs: Input[] = [];
  /** Run before each replay (addReplayCheck). */
  readonly checks: (() => void)[] = [];
  private readonly seen = new Set<DataId>();
  private readonly produced = new Set<DataId>();

  constructor(
    readonly backend: Backend,
    private readonly owner: Engine,
  ) {}

  kernel(kernelName: string, inputs: Record<string, Tensor | Tensor[] | undefined>, attrs: object): void {
    const declaration = kernelDeclaration(kernelName);
    if (!capturable(declaration, inputs)) {
      throw new GraphError(
        `captureGraph: ${kernelName} (an optimizer update) with its step count and learning rate on the host cannot be captured: a replay would repeat the captured ones; make the optimizer with { capturable: true } (Adam, AdamW) to capture the whole step, or call optimizer.step() after each replay()`,
      );
    }
    for (const value of Object.values(inputs)) {
      for (const t of Array.isArray(value) ? value : value === undefined ? [] : [value]) {
        const dataId = t.dataId;
        if (this.produced.has(dataId) || this.seen.has(dataId)) continue;
        this.seen.add(dataId);
        // Made before the capture: the graph reads this buffer on every replay, so it keeps it alive.
        this.owner.retainBuffer(dataId, true);
        this.inputs.push({ tensor: t, dataId });
      }
    }
    if ((attrs as { inPlace?: boolean }).inPlace === true) {
      for (const key of declaration?.inPlaceInputs ?? []) {
        const value = inputs[key];
        for (const t of Array.isArray(value) ? value : value === undefined ? [] : [value]) {
          const input = this.inputs.find((candidate) => candidate.dataId === t.dataId);
          if (input) input.written = true;
        }
      }
    }
  }

  made(outputs: Tensor[]): void {
    for (const t of outputs) if (!this.seen.has(t.dataId)) this.produced.add(t.dataId);
  }

  releaseInputs(): void {
    for (const input of this.inputs) {
      this.owner.releaseRetained(input.dataId, this.backend, true);
      if (input.end) this.owner.releaseRetained(input.end, this.backend, true);
    }
    this.inputs.length = 0;
  }
}

function tensorsIn(value: unknown, out: Tensor[] = [], depth = 0): Tensor[] {
  if (value instanceof Tensor) out.push(value);
  else if (depth < 4 && Array.isArray(value)) for (const v of value) tensorsIn(v, out, depth + 1);
  else if (depth < 4 && value !== null && typeof value === "object") for (const v of Object.values(value)) tensorsIn(v, out, depth + 1);
  return out;
}

/**
 * Records `fn` (a training or inference step) on the active backend (or `backend`) as one graph, replayed
 * by `replay()` with a single launch instead of one host call per kernel: what a step costs the host when its
 * kernels are small (few tokens, decoding). Nothing runs while recording: call `replay()` for each step.
 *
 * - Run the step eagerly at least once first (kernels load, block-sparse patterns upload, the allocator fills).
 * - Inside `fn`: no host reads or uploads (`dataSync`, `tensor(...)`), the same shapes on every replay, and an
 *   optimizer update only from an optimizer that keeps its step counts and learning rate on the device (Adam and
 *   AdamW with `capturable: true`; others are refused). Tensors made before the capture are its inputs; give them
 *   new values between replays with `assign` (or let an eager optimizer update parameters): each replay copies
 *   their current contents in. Those the step writes in place (a captured optimizer's parameters and state) hold
 *   what each replay wrote afterwards.
 * - What `fn` returns (and leaves behind, such as the gradients backward puts on parameters) is written by
 *   every replay: read it after `replay()`; do not dispose it or clear it (`zeroGrad`) while the graph is used.
 *   A captured backward overwrites gradients when `fn` clears them first (`optimizer.zeroGrad()` inside `fn`).
 * - Backends without graphs (js, cpu) throw a BackendError: run the step eagerly there.
 */
export function captureGraph<T>(fn: () => T, options?: { backend?: Backend } | null): CapturedGraph<T> {
  if (typeof fn !== "function") throw new GraphError("captureGraph: fn must be a function");
  // null is none, as for every option.
  const given = optionsArg("captureGraph", options, ["backend"]).backend ?? undefined;
  assertBackendArg("captureGraph", given);
  const backend = given ?? engine.activeBackend();
  const graphs = backend.graphs;
  if (!graphs) {
    throw new BackendError(`captureGraph: backend '${backend.name}' cannot record graphs; run the step eagerly on it`);
  }
  if (engine.capture) throw new GraphError("captureGraph: a capture is already in progress (captures do not nest)");
  const recorder = new Recorder(backend, engine);
  let result: T;
  let graph: object;
  graphs.beginCapture();
  engine.capture = recorder;
  try {
    result = engine.tidy(fn);
    if ((result as unknown) instanceof Promise) throw new GraphError("captureGraph: fn returned a Promise; a step is synchronous");
  } catch (error) {
    engine.capture = null;
    graphs.abortCapture();
    recorder.releaseInputs();
    if (error instanceof GraphError) throw error;
    throw new GraphError(`captureGraph: the step failed while recording: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  engine.capture = null;
  try {
    graph = graphs.endCapture();
  } catch (error) {
    recorder.releaseInputs();
    throw new GraphError(
      `captureGraph: the recorded step cannot be replayed (${error instanceof Error ? error.message : String(error)}); did it read values on the host or synchronise?`,
      { cause: error },
    );
  }
  const outputs = tensorsIn(result);
  const inputs = recorder.inputs;
  // An input given new storage inside the step (`acc.assign(add(acc, x))`) points at memory the graph writes,
  // which holds nothing yet (recording runs nothing): it gets the value it had, so the first replay starts from
  // it as eager execution would. An input disposed inside the step is a constant from now on.
  const liveAtEnd = inputs.map((input) => !input.tensor.isDisposed);
  inputs.forEach((input, i) => {
    if (!liveAtEnd[i] || input.tensor.dataId === input.dataId) return;
    input.end = input.tensor.dataId;
    engine.retainBuffer(input.end, true);
    graphs.copy(input.dataId, input.end);
  });
  let disposed = false;
  return {
    get disposed() {
      return disposed;
    },
    get inputCount() {
      return inputs.length;
    },
    result,
    replay(): T {
      if (disposed) throw new GraphError("replay: the graph was disposed");
      if (engine.capture) throw new GraphError("replay: not inside a capture");
      for (const check of recorder.checks) check();
      for (const output of outputs) {
        if (output.isDisposed) throw new GraphError(`replay: a tensor the step returned (${formatShape(output.shape)} ${output.dtype}) was disposed; the graph writes it on every replay`);
      }
      for (const [i, input] of inputs.entries()) {
        const t = input.tensor;
        if (!liveAtEnd[i]) continue;
        if (t.isDisposed) {
          throw new GraphError(`replay: an input of the captured step (${formatShape(t.shape)} ${t.dtype}) was disposed; keep the step's inputs alive while the graph is used`);
        }
        if (t.dataId !== input.dataId) graphs.copy(t.dataId, input.dataId);
      }
      graphs.launch(graph);
      // A tensor the step gives new storage, or writes in place, holds what this replay wrote, wherever it pointed
      // before.
      for (const input of inputs) {
        if (input.end) {
          if (input.tensor.dataId !== input.end) engine.pointAt(input.tensor, input.end);
          else input.tensor.storage.version++;
        } else if (input.written && !input.tensor.isDisposed) {
          if (input.tensor.dataId !== input.dataId) engine.pointAt(input.tensor, input.dataId);
          else input.tensor.storage.version++;
        }
      }
      // What the step returned was written again (a write, for autograd's version check, as pointAt's are).
      for (const output of outputs) output.storage.version++;
      return result;
    },
    dispose(): void {
      if (disposed) return;
      disposed = true;
      graphs.destroy(graph);
      recorder.releaseInputs();
      recorder.checks.length = 0;
    },
  };
}
