/**
 * The tape: one node per recorded kernel call, linked to the nodes that made its inputs.
 * A node lives while one of its outputs is undisposed or a live node consumes it (PyTorch's
 * graph lifetime, with dispose() in place of reference counting); its saved tensors are
 * buffer-sharing clones, disposed when the node is freed.
 */
import { type AssignRecord, type DisposeRecord, type KernelRecord, type RequiresGradRecord, Tensor, ValueError, keep, kernelDeclaration } from "@blocksparse/core";
import { AutogradError, describeValue } from "./errors";
import type { TensorMeta } from "./registry";
import { checkSavedInputs, getGradient } from "./registry";

/** One differentiable input of a node: where its gradient goes. */
export interface Edge {
  readonly key: string;
  /** Position inside an array input (Concat's tensors), -1 otherwise. */
  readonly index: number;
  readonly meta: TensorMeta;
  /** The node that produced the input, or null for a leaf. */
  readonly producer: TapeNode | null;
  readonly outputIndex: number;
  /** The input itself when it is a leaf that requires grad. */
  readonly leaf: Tensor | null;
  /** The input's version when this node read it: backward refuses an edge that read a producer's output after a write. */
  readonly version: number;
}


let nextNodeId = 0;

export class TapeNode {
  readonly id = nextNodeId++;
  edges: Edge[];
  saved: Record<string, Tensor | Tensor[]> = {};
  savedOutputs: (Tensor | undefined)[] = [];
  /** Undisposed output tensors. */
  liveOutputs = 0;
  /** Live nodes with an edge to this one. */
  consumers = 0;
  /** Held by a running backward. */
  pins = 0;
  freed = false;

  constructor(
    readonly kernelName: string,
    readonly attrs: Record<string, unknown>,
    readonly inputMeta: Record<string, TensorMeta | TensorMeta[]>,
    readonly outputMeta: TensorMeta[],
    /** Each output's version when the kernel made it. */
    readonly outputVersions: number[],
    edges: Edge[],
  ) {
    this.edges = edges;
  }
}

interface GradFn {
  node: TapeNode;
  outputIndex: number;
}

// Keyed by tensor id: core's dispose observer reports collected tensors by id alone.
const gradFns = new Map<number, GradFn>();
/** A leaf that requires grad, by the version its last write outside noGrad left it at (see noteLeafWrite). */
const unguardedWrites = new WeakMap<Tensor, number>();
let disabledDepth = 0;

/** True when operations on tensors that require grad are being recorded (outside noGrad and backward). */
export function isRecording(): boolean {
  return disabledDepth === 0;
}

/** Runs `fn` with recording off: nothing computed inside is differentiable. Synchronous code only. */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== "function") throw new AutogradError(`noGrad: fn must be a function, got ${describeValue(fn)}`);
  disabledDepth++;
  try {
    const result = fn();
    if (result instanceof Promise) {
      throw new AutogradError("noGrad: the function returned a Promise; noGrad only covers synchronous code");
    }
    return result;
  } finally {
    disabledDepth--;
  }
}

/** Runs `fn` with recording on, whatever noGrad or backward encloses the call (gradcheck's own forward). */
export function withRecording<T>(fn: () => T): T {
  const depth = disabledDepth;
  disabledDepth = 0;
  try {
    return fn();
  } finally {
    disabledDepth = depth;
  }
}

/** The node and output index that produced `t`, if it was recorded. */
export function gradFnOf(t: Tensor): GradFn | undefined {
  return gradFns.get(t.id);
}

/** True when gradients flow into `t`: it requires grad (a leaf) or a recorded op produced it. */
export function tracksGrad(t: Tensor): boolean {
  return t instanceof Tensor && t.dtype !== "int32" && (t.requiresGrad || gradFns.has(t.id));
}

/** A tensor sharing `t`'s buffer that no gradient flows through (PyTorch's detach): a clone left off the tape. */
export function detach(t: Tensor): Tensor {
  // Named here: clone's own errors would name clone, or be a TypeError for what is not a Tensor.
  if (!(t instanceof Tensor)) throw new AutogradError(`detach: t must be a Tensor, got ${describeValue(t)}`);
  t.throwIfDisposed("detach");
  disabledDepth++;
  try {
    return t.clone();
  } finally {
    disabledDepth--;
  }
}

const metaOf = (t: Tensor): TensorMeta => ({ shape: t.shape, dtype: t.dtype, backend: t.storage.backend });
const save = (t: Tensor): Tensor => keep(detach(t));

/** `wrote`: the call wrote `t` in place, a write counted once before the observers ran: the edge read the version before. */
function edgeTo(key: string, index: number, t: Tensor, wrote: boolean): Edge | null {
  if (!tracksGrad(t)) return null;
  const fn = gradFns.get(t.id);
  const version = wrote ? t.storage.version - 1 : t.storage.version;
  if (fn) return { key, index, meta: metaOf(t), producer: fn.node, outputIndex: fn.outputIndex, leaf: null, version };
  return { key, index, meta: metaOf(t), producer: null, outputIndex: 0, leaf: t, version };
}

/**
 * Records one call if recording is on and an input tracks gradients. A call that wrote inputs in place
 * (attrs.inPlace, its declaration's inPlaceInputs) is recorded with those inputs as its first outputs, as PyTorch
 * rebases a tensor written in place (`index_copy_`) onto the write: later reads differentiate through it. Outputs
 * the call also returned (CachedAttention's attention, beside its cache writes) follow them.
 */
export function record(
  kernelName: string,
  inputs: Record<string, Tensor | Tensor[] | undefined>,
  attrs: Record<string, unknown>,
  outputs: Tensor[],
): void {
  if (disabledDepth > 0) return;
  const declaration = kernelDeclaration(kernelName);
  const written = attrs.inPlace === true ? declaration?.inPlaceInputs : undefined;
  if (declaration?.gradient === "none") {
    // An optimizer step written in place outside noGrad, as its out-of-place path's assign is noted.
    if (written) for (const key of written) for (const t of [inputs[key] ?? []].flat()) noteLeafWrite(t, t.storage.version);
    return;
  }
  if (written) {
    const targets = written.map((key) => inputs[key]).filter((t): t is Tensor => t instanceof Tensor);
    outputs = outputs.length === 0 ? targets : [...targets, ...outputs.filter((t) => !targets.includes(t))];
  }
  // Every op of a forward pass runs this: plain loops, no entries arrays or per-element closures.
  const edges: Edge[] = [];
  const inputMeta: Record<string, TensorMeta | TensorMeta[]> = {};
  for (const key in inputs) {
    const value = inputs[key];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      const metas: TensorMeta[] = new Array(value.length);
      for (let i = 0; i < value.length; i++) {
        metas[i] = metaOf(value[i]);
        const edge = edgeTo(key, i, value[i], written !== undefined && outputs.includes(value[i]));
        if (edge) edges.push(edge);
      }
      inputMeta[key] = metas;
    } else {
      inputMeta[key] = metaOf(value);
      // By tensor, not key: a tensor written and also read under another key (its own source) was read before the write.
      const edge = edgeTo(key, -1, value, written !== undefined && outputs.includes(value));
      if (edge) edges.push(edge);
    }
  }
  if (edges.length === 0) return;
  let differentiable = false;
  for (const o of outputs) if (o.dtype !== "int32") differentiable = true;
  if (!differentiable) return;
  if (written) refuseLeafWrites(kernelName, outputs);
  const outputMeta: TensorMeta[] = new Array(outputs.length);
  const outputVersions: number[] = new Array(outputs.length);
  for (let i = 0; i < outputs.length; i++) {
    outputMeta[i] = metaOf(outputs[i]);
    outputVersions[i] = outputs[i].storage.version;
  }
  const node = new TapeNode(kernelName, attrs, inputMeta, outputMeta, outputVersions, edges);
  const config = getGradient(kernelName);
  // Before anything is saved (kept): a "list" kernel's call may make fewer outputs than its rule names.
  for (const index of config?.outputsToSave ?? []) {
    if (index >= outputs.length) {
      throw new AutogradError(`${kernelName}: its registered gradient saves output ${index}, but the call made ${outputs.length} output${outputs.length === 1 ? "" : "s"}`);
    }
  }
  if (config?.inputsToSave) {
    checkSavedInputs(kernelName, config, inputs);
    for (const key of config.inputsToSave) {
      const value = inputs[key];
      if (value !== undefined) node.saved[key] = Array.isArray(value) ? value.map(save) : save(value);
    }
  }
  if (config?.outputsToSave) for (const index of config.outputsToSave) node.savedOutputs[index] = save(outputs[index]);
  for (const edge of edges) if (edge.producer) edge.producer.consumers++;
  for (let outputIndex = 0; outputIndex < outputs.length; outputIndex++) {
    const output = outputs[outputIndex];
    if (output.dtype === "int32") continue;
    // A tensor written in place leaves the node that made it (which this node's edge now holds) for this one.
    const previous = gradFns.get(output.id);
    if (previous) previous.node.liveOutputs--;
    gradFns.set(output.id, { node, outputIndex });
    output.requiresGrad = true;
    node.liveOutputs++;
  }
}

/**
 * Throws for a leaf that requires grad among the tensors a call wrote in place, as PyTorch does: its gradient would be
 * that of values it no longer holds. Core ran the write already; the tape is left as it was.
 */
function refuseLeafWrites(kernelName: string, written: readonly Tensor[]): void {
  for (const t of written) {
    if (t.requiresGrad && !gradFns.has(t.id)) {
      throw new AutogradError(`${kernelName}: tensor ${t.id} ([${t.shape}] ${t.dtype}) is a leaf that requires grad, written in place; write into a copy or under noGrad`);
    }
  }
}

/**
 * Notes a write outside noGrad into a leaf that requires grad, at the version it leaves the leaf: backward refuses a
 * recorded op that read the leaf before it (leafWrittenAfter), as PyTorch refuses an in-place write into such a leaf.
 * Only then: a leaf written before its forward (initialized, loaded, broadcast) or after its backward is fine, and a
 * write inside noGrad (an optimizer step) leaves the gradient of the values the forward read.
 */
function noteLeafWrite(t: Tensor, version: number): void {
  if (disabledDepth === 0 && t.requiresGrad && !gradFns.has(t.id)) unguardedWrites.set(t, version);
}

/** The version a write outside noGrad left `leaf` at, if one came after a read at `version`; undefined otherwise. */
export function leafWrittenAfter(leaf: Tensor, version: number): number | undefined {
  const written = unguardedWrites.get(leaf);
  return written !== undefined && written > version ? written : undefined;
}

/**
 * Core's assign observer, while recording: `assign` copies values and records no gradient, so an assign from an op's
 * recorded output would silently cut the gradient path through it (PyTorch's `copy_` is differentiable; `assign` is
 * not). A leaf's values may be copied: no computation's gradient is cut. A write into a leaf that requires grad is noted.
 */
export function checkAssign({ target, source }: AssignRecord): void {
  if (disabledDepth > 0) return;
  const fn = gradFns.get(source.id);
  if (fn) {
    throw new AutogradError(
      `assign: the source, tensor ${source.id} ([${source.shape}] ${source.dtype}), is the output of ${fn.node.kernelName}, recorded for autograd; assign is not differentiable, so the gradient would be lost between it and tensor ${target.id}. Use the computed tensor itself (a new tensor) where the gradient should flow, or assign inside noGrad(() => ...) if the gradient is not wanted`,
    );
  }
  // The write bumps the version once, unless target already holds source's buffer.
  if (target.dataId !== source.dataId) noteLeafWrite(target, target.storage.version + 1);
}

/** Records a kernel call as core's observers see it. */
export function recordKernel(kernelRecord: KernelRecord): void {
  record(
    kernelRecord.kernelName,
    kernelRecord.inputs as Record<string, Tensor | Tensor[] | undefined>,
    kernelRecord.attrs as Record<string, unknown>,
    kernelRecord.outputs,
  );
}

/** Core's dispose observer: a disposed (or collected) output no longer holds its node. */
export function forgetTensor(record: DisposeRecord): void {
  const fn = gradFns.get(record.id);
  if (!fn) return;
  gradFns.delete(record.id);
  fn.node.liveOutputs--;
  freeIfUnused(fn.node);
}

/**
 * Core's requiresGrad observer: an op's recorded output keeps requiring grad, as PyTorch's "you can only change
 * requires_grad flags of leaf variables"; cleared, the tape would still send gradients through it.
 */
export function refuseNonLeafRequiresGrad({ tensor, value }: RequiresGradRecord): void {
  const fn = value ? undefined : gradFns.get(tensor.id);
  if (fn) {
    throw new ValueError(
      `requiresGrad: tensor ${tensor.id} ([${tensor.shape}] ${tensor.dtype}) is the output of ${fn.node.kernelName}, recorded for autograd; only a leaf's requiresGrad can be set to false. For a copy that no gradient flows through, use detach(t)`,
    );
  }
}

export function freeIfUnused(node: TapeNode): void {
  if (!node.freed && node.liveOutputs <= 0 && node.consumers <= 0 && node.pins <= 0) freeNode(node);
}

/** Disposes a node's saved tensors and drops its edges; producers nobody needs any more go too. */
export function freeNode(start: TapeNode): void {
  const pending = [start];
  while (pending.length > 0) {
    const node = pending.pop() as TapeNode;
    if (node.freed) continue;
    node.freed = true;
    for (const value of Object.values(node.saved)) {
      for (const t of Array.isArray(value) ? value : [value]) t.dispose();
    }
    for (const t of node.savedOutputs) if (t) t.dispose();
    node.saved = {};
    node.savedOutputs = [];
    for (const edge of node.edges) {
      const producer = edge.producer;
      if (!producer) continue;
      producer.consumers--;
      if (!producer.freed && producer.liveOutputs <= 0 && producer.consumers <= 0 && producer.pins <= 0) pending.push(producer);
    }
    node.edges = [];
  }
}
