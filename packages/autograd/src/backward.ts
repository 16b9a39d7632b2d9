import { type Activation, Tensor, add, engine, formatShape, fullOn, keep, kernelDeclaration, optionsArg, shapesEqual, tidy } from "@blocksparse/core";
import { AutogradError, GradientNotRegisteredError, InPlaceWriteError, describeValue } from "./errors";
import { type GradContext, type TensorMeta, getGradient } from "./registry";
import { type Edge, type TapeNode, detach, freeIfUnused, freeNode, gradFnOf, leafWrittenAfter, noGrad } from "./tape";

export interface BackwardOptions {
  /** Keep the graph (and its saved tensors) for another backward through it. Default false: freed as the walk goes. */
  retainGraph?: boolean;
}

const describe = (meta: TensorMeta): string => `${formatShape(meta.shape)} ${meta.dtype}`;

/** Told of a leaf whose `.grad` is final for the backward now running (every contribution added). */
export type GradReadyObserver = (leaf: Tensor) => void;

const gradReadyObservers = new Set<GradReadyObserver>();

/**
 * Calls `observer` during every backward, once per leaf that received a gradient, as soon as
 * the walk has added the leaf's last contribution to `.grad` (leaves nearer the loss come
 * first): what data-parallel training uses to start reducing gradients before backward ends.
 * Returns the function that removes it. An observer must not change the graph; its error
 * stops the backward.
 */
export function addGradReadyObserver(observer: GradReadyObserver): () => void {
  if (typeof observer !== "function") throw new AutogradError("addGradReadyObserver: observer must be a function");
  gradReadyObservers.add(observer);
  return () => {
    gradReadyObservers.delete(observer);
  };
}

/** For each leaf, the index in `order` of the last node that sends it a gradient. */
function lastUses(order: readonly TapeNode[]): Map<number, Tensor[]> {
  const last = new Map<Tensor, number>();
  order.forEach((node, i) => {
    for (const edge of node.edges) if (edge.leaf) last.set(edge.leaf, i);
  });
  const byNode = new Map<number, Tensor[]>();
  // Pushed, not copied: a node fed by many leaves (concat of 10^4 parameters) must not cost their square.
  for (const [leaf, i] of last) {
    const leaves = byNode.get(i);
    if (leaves) leaves.push(leaf);
    else byNode.set(i, [leaf]);
  }
  return byNode;
}

/** Nodes reachable from `root`, each before the nodes that produced its inputs. */
function reverseTopologicalOrder(root: TapeNode): TapeNode[] {
  const order: TapeNode[] = [];
  const visited = new Set<TapeNode>([root]);
  const stack: [TapeNode, number][] = [[root, 0]];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [node, next] = top;
    if (node.freed) {
      throw new AutogradError(
        `backward: the graph through '${node.kernelName}' was already freed by an earlier backward; pass { retainGraph: true } to that backward to go through it twice, or run the forward again`,
      );
    }
    if (next < node.edges.length) {
      top[1]++;
      const producer = node.edges[next].producer;
      if (producer && !visited.has(producer)) {
        visited.add(producer);
        stack.push([producer, 0]);
      }
    } else {
      stack.pop();
      order.push(node);
    }
  }
  return order.reverse();
}

function accumulate<K>(into: Map<K, Tensor>, key: K, grad: Tensor): void {
  const existing = into.get(key);
  if (existing === undefined) {
    into.set(key, grad);
    return;
  }
  into.set(key, add(existing, grad));
  existing.dispose();
  grad.dispose();
}

function checkGrad(node: TapeNode, edge: Edge, grad: unknown): Tensor {
  const label = edge.index >= 0 ? `${edge.key}[${edge.index}]` : edge.key;
  if (!(grad instanceof Tensor)) {
    throw new AutogradError(`backward: the gradient of '${node.kernelName}' gave no tensor for input '${label}'`);
  }
  if (!shapesEqual(grad.shape, edge.meta.shape) || grad.dtype !== edge.meta.dtype) {
    throw new AutogradError(
      `backward: the gradient of '${node.kernelName}' for input '${label}' is ${describe(grad)}, expected ${describe(edge.meta)}`,
    );
  }
  if (grad.backend !== edge.meta.backend) {
    throw new AutogradError(`backward: the gradient of '${node.kernelName}' for input '${label}' is on backend '${grad.backend.name}', expected '${edge.meta.backend.name}'`);
  }
  return grad;
}

/**
 * `dys` for a gradient function: an output no gradient reached reads as zeros of its shape, made the first time
 * the entry is read (inside the node's scope). A multi-output kernel whose other outputs are only kept for the
 * backward (BsrLinearActivation's pre-activation, LayerNorm's statistics) pays nothing for them.
 */
function lazyZeros(dys: (Tensor | null)[], node: TapeNode): Tensor[] {
  // Every output has its gradient (most nodes): a plain array. A getter turns an array's storage into a slow one.
  if (!dys.includes(null)) return dys as Tensor[];
  // A proxy that makes an entry's zeros when it is read (about 0.3 us to set up, against 2.5 for getters).
  const zeros: (Tensor | undefined)[] = [];
  return new Proxy(dys, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (value !== null || typeof key !== "string") return value;
      const i = Number(key);
      const { backend, shape, dtype } = node.outputMeta[i];
      zeros[i] ??= fullOn(backend, shape, 0, dtype);
      return zeros[i];
    },
  }) as Tensor[];
}

/** A pre-activation's gradient and its sums over all axes but the last (GradContext.preActivationGrad). */
interface PreActivationGrad {
  grad: Tensor;
  sums: Tensor;
}

/** An edge whose gradient backward takes on through its producer's activation (GradConfig.throughActivation). */
interface Fusion {
  edge: number;
  producer: TapeNode;
  pre: Tensor;
  activation: Activation;
}

/**
 * Throws InPlaceWriteError if a node's output was written in place before a later op (or backward, as the loss) read
 * it: its history then no longer describes its contents, and a gradient through it would be wrong. (The tensors a
 * gradient saved need no check: they are clones holding the buffer the forward read, which a write never changes,
 * since assign rebinds a tensor and an in-place kernel declines a buffer another tensor shares.) Runs before the
 * walk, so nothing is freed or accumulated yet. Number compares only.
 */
function checkVersions(order: readonly TapeNode[], origin: { node: TapeNode; outputIndex: number }, loss: Tensor): void {
  const made = origin.node.outputVersions[origin.outputIndex];
  if (loss.storage.version !== made) throw outputWritten(origin.node, origin.outputIndex, made, loss.storage.version, "backward started from it as the loss");
  for (const node of order) {
    for (const edge of node.edges) {
      const producer = edge.producer;
      if (producer === null) {
        const written = edge.leaf && leafWrittenAfter(edge.leaf, edge.version);
        if (written) throw leafWritten(node, edge, written);
        continue;
      }
      if (edge.version === producer.outputVersions[edge.outputIndex]) continue;
      const label = edge.index >= 0 ? `${edge.key}[${edge.index}]` : edge.key;
      throw outputWritten(producer, edge.outputIndex, producer.outputVersions[edge.outputIndex], edge.version, `'${node.kernelName}' read it as its input '${label}'`);
    }
  }
}

/** PyTorch refuses the write itself ("a leaf Variable that requires grad is being used in an in-place operation"). */
function leafWritten(node: TapeNode, edge: Edge, found: number): InPlaceWriteError {
  const leaf = edge.leaf as Tensor;
  return new InPlaceWriteError(
    `backward: tensor ${leaf.id} (${describe(leaf)}), a leaf that requires grad, was written in place outside noGrad (it is at version ${found}; expected version ${edge.version}) after '${node.kernelName}' read it as its input '${edge.index >= 0 ? `${edge.key}[${edge.index}]` : edge.key}': a leaf that requires grad cannot be written while a gradient of it is recorded. Write it inside noGrad (as an optimizer step does), or after backward`,
    node.kernelName,
    "a leaf",
    edge.version,
    found,
  );
}

function outputWritten(producer: TapeNode, outputIndex: number, expected: number, found: number, reader: string): InPlaceWriteError {
  return new InPlaceWriteError(
    `backward: output ${outputIndex} of '${producer.kernelName}' (${describe(producer.outputMeta[outputIndex])}) was written in place (it is at version ${found}; expected version ${expected}) before ${reader}: no gradient flows through a write. Read a new tensor instead of writing into this one, or write under noGrad into a tensor no recorded op reads. A captureGraph replay writes what its step made: capture backward in the same step as the forward.`,
    producer.kernelName,
    `output ${outputIndex}`,
    expected,
    found,
  );
}

/**
 * How many edges of the walk's nodes (and the seed) send a gradient to each output of each node, counted before the
 * walk frees any node's edges.
 */
function gradientSenders(order: readonly TapeNode[], origin: { node: TapeNode; outputIndex: number }): Map<TapeNode, number[]> {
  const senders = new Map<TapeNode, number[]>();
  const count = (node: TapeNode, output: number): void => {
    const counts = senders.get(node) ?? node.outputMeta.map(() => 0);
    counts[output]++;
    senders.set(node, counts);
  };
  count(origin.node, origin.outputIndex);
  for (const node of order) for (const edge of node.edges) if (edge.producer) count(edge.producer, edge.outputIndex);
  return senders;
}

/**
 * The edge of `node` whose gradient goes through its producer's activation in one step: the node has a
 * throughActivation for the input, the producer declares that output an activation of a saved pre-activation, and
 * this edge is the only sender of that output's gradient. Null otherwise.
 */
function fusionOf(node: TapeNode, senders: Map<TapeNode, number[]>): Fusion | null {
  const through = getGradient(node.kernelName)?.throughActivation;
  const edge = through ? node.edges.findIndex((e) => e.key === through.input && e.index === -1) : -1;
  const producer = edge >= 0 ? node.edges[edge].producer : null;
  const output = producer && getGradient(producer.kernelName)?.activationOutput;
  const outputIndex = node.edges[edge]?.outputIndex;
  if (!producer || !output || output.output !== outputIndex || senders.get(producer)?.[outputIndex] !== 1) return null;
  const pre = producer.savedOutputs[output.pre];
  if (!pre || pre.isDisposed) return null;
  return { edge, producer, pre, activation: output.activation(producer.attrs) };
}

/**
 * Runs one node's gradient; returns each edge's gradient, in edge order (null for the fused edge), and the fused
 * edge's pre-activation gradient.
 */
function nodeGradients(
  node: TapeNode,
  dys: (Tensor | null)[],
  fusion: Fusion | null,
  preActivationGrad: PreActivationGrad | undefined,
): { grads: (Tensor | null)[]; fused: PreActivationGrad | null } {
  const config = getGradient(node.kernelName);
  if (!config) throw new GradientNotRegisteredError(node.kernelName, kernelDeclaration(node.kernelName)?.gradient === "unsupported");
  const fusedKey = fusion ? node.edges[fusion.edge].key : null;
  const keys = [...new Set(node.edges.map((edge) => edge.key))].filter((key) => key !== fusedKey);
  // One scope for the whole node: thunks may share work (LayerNorm's three gradients come from one kernel).
  const { results, fused } = tidy(() => {
    const filled = lazyZeros(dys, node);
    const context: GradContext = {
      attrs: node.attrs,
      saved: node.saved,
      savedOutputs: node.savedOutputs,
      inputs: node.inputMeta,
      outputs: node.outputMeta,
      outputHasGrad: dys.map((dy) => dy !== null),
      needsGrad: new Set(keys),
      ...(preActivationGrad ? { preActivationGrad } : {}),
    };
    let fusedGrad: PreActivationGrad | null = null;
    if (fusion) {
      // Of the pre-activation's shape and dtype (the same as the input's): the fused kernels' op checks them.
      const [grad, sums] = config.throughActivation!.gradFunc(filled, context, fusion.pre, fusion.activation);
      fusedGrad = { grad: detach(grad), sums: detach(sums) };
    }
    const thunks = config.gradFunc(filled, context);
    const out = new Map<string, Tensor | Tensor[]>();
    // A result the thunks made in this scope survives it as is (once); one passed through from outside (an output's
    // gradient, a saved tensor) or returned twice is cloned, so that each result is a handle of backward's own.
    const taken = new Set<Tensor>();
    const own = (t: Tensor): Tensor => {
      if (taken.has(t) || !engine.ownedByScope(t)) return detach(t);
      taken.add(t);
      return t;
    };
    for (const key of keys) {
      // Optional: a registered rule that returns nothing (a missing return) is named below, not a TypeError.
      const thunk = thunks?.[key];
      if (typeof thunk !== "function") {
        throw new AutogradError(`backward: the gradient of '${node.kernelName}' does not cover input '${key}'`);
      }
      const value = thunk();
      out.set(key, Array.isArray(value) ? value.map(own) : own(value));
    }
    // The clones (and the fused gradient's) survive the scope as its result.
    return { results: out, fused: fusedGrad };
  });
  const used = new Set<Tensor>();
  const taken: Tensor[] = [];
  try {
    const grads = node.edges.map((edge, i) => {
      if (i === fusion?.edge) return null;
      const value = results.get(edge.key);
      const grad = checkGrad(node, edge, Array.isArray(value) ? value[edge.index] : value);
      // The same tensor may feed two edges (mul(x, x)); each edge gets its own handle.
      const own = used.has(grad) ? detach(grad) : grad;
      used.add(grad);
      taken.push(own);
      return own;
    });
    return { grads, fused };
  } catch (error) {
    // The handles of the edges checked before the one that failed go too.
    for (const t of taken) t.dispose();
    if (fused) for (const t of [fused.grad, fused.sums]) t.dispose();
    throw error;
  } finally {
    for (const value of results.values()) {
      for (const t of Array.isArray(value) ? value : [value]) if (!used.has(t)) t.dispose();
    }
  }
}

function seedOf(loss: Tensor, grad: Tensor | null | undefined): Tensor {
  // Null too (PyTorch's backward(None)): ones for a one-element loss.
  if (grad == null) {
    if (loss.size !== 1) {
      throw new AutogradError(
        `backward: the loss has shape ${formatShape(loss.shape)} (${loss.size} elements); pass a gradient of that shape, or reduce the loss to one element`,
      );
    }
    return fullOn(loss.backend, loss.shape, 1, loss.dtype);
  }
  if (!(grad instanceof Tensor)) {
    // backward(loss, { retainGraph: true }) is the usual slip: options go third.
    const hint = typeof grad === "object" ? "; options go third: backward(loss, null, { retainGraph: true })" : "";
    throw new AutogradError(`backward: grad must be a Tensor, null or undefined, got ${describeValue(grad)}${hint}`);
  }
  grad.throwIfDisposed("backward: grad");
  if (!shapesEqual(grad.shape, loss.shape) || grad.dtype !== loss.dtype) {
    throw new AutogradError(`backward: grad is ${describe(grad)}, expected the loss's ${describe(loss)}`);
  }
  if (grad.backend !== loss.backend) {
    throw new AutogradError(`backward: grad is on backend '${grad.backend.name}' but the loss is on '${loss.backend.name}'`);
  }
  return detach(grad);
}

/**
 * Adds `grad` into `leaf.grad` in place (the grad tensor keeps its identity across backward calls). A leaf disposed
 * since the forward gets nothing: a gradient written on it could never be used, and would stay allocated.
 */
function accumulateLeaf(leaf: Tensor, grad: Tensor): boolean {
  // As torch's AccumulateGrad: a leaf that stopped requiring grad since the forward gets none.
  if (leaf.isDisposed || !leaf.requiresGrad) {
    grad.dispose();
    return false;
  }
  const current: unknown = leaf.grad;
  // Undefined too: a plain-JS caller's `t.grad = undefined` resets it like null.
  if (current == null || (current instanceof Tensor && current.isDisposed)) {
    leaf.grad = keep(grad);
    return true;
  }
  if (!(current instanceof Tensor)) {
    grad.dispose();
    throw new AutogradError(`backward: tensor ${leaf.id} has a .grad that is not a Tensor (${describeValue(current)}); reset it with zeroGrad`);
  }
  // The backend too: add's error named neither the tensor nor .grad, and left the gradient undisposed.
  if (!shapesEqual(current.shape, leaf.shape) || current.dtype !== leaf.dtype || current.backend !== leaf.backend) {
    grad.dispose();
    throw new AutogradError(
      `backward: tensor ${leaf.id} has a .grad of ${describe(current)} on '${current.backend.name}', expected ${describe(leaf)} on '${leaf.backend.name}'; reset it with zeroGrad`,
    );
  }
  const sum = add(current, grad);
  current.assign(sum);
  sum.dispose();
  grad.dispose();
  return true;
}

function checkOptions(options: unknown): boolean {
  if (options == null) return false;
  if (typeof options !== "object") throw new AutogradError(`backward: options must be an object such as { retainGraph: true }, got ${describeValue(options)}`);
  // An unknown name (torch's retain_graph, a typo) is refused as core's options are: ignored, the graph would be freed.
  const { retainGraph } = optionsArg("backward", options as BackwardOptions, ["retainGraph"]);
  if (retainGraph !== undefined && typeof retainGraph !== "boolean") {
    throw new AutogradError(`backward: options.retainGraph must be a boolean, got ${describeValue(retainGraph)}`);
  }
  return retainGraph === true;
}

/**
 * The leaves (tensors that require grad) the graph of `loss` reaches: those a `backward(loss)`
 * would send a gradient to (torch's DDP walks its graph the same way for
 * find_unused_parameters). Reads the tape only: nothing is computed, pinned or freed, and a graph
 * an earlier backward freed counts as reaching nothing past it (backward itself refuses it).
 */
export function reachableLeaves(loss: Tensor): Set<Tensor> {
  const leaves = new Set<Tensor>();
  if (!(loss instanceof Tensor)) throw new AutogradError("reachableLeaves: loss must be a Tensor");
  loss.throwIfDisposed("reachableLeaves: loss");
  const origin = gradFnOf(loss);
  if (!origin) {
    if (loss.requiresGrad) leaves.add(loss);
    return leaves;
  }
  const visited = new Set<TapeNode>([origin.node]);
  const stack = [origin.node];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    if (node.freed) continue;
    for (const { leaf, producer } of node.edges) {
      // A leaf disposed since the forward gets no gradient from backward (as there): not reached.
      if (leaf?.requiresGrad && !leaf.isDisposed) leaves.add(leaf);
      if (producer && !visited.has(producer)) {
        visited.add(producer);
        stack.push(producer);
      }
    }
  }
  return leaves;
}

/**
 * Backpropagates from `loss` (one element, or any shape with an explicit `grad` seed) and
 * accumulates `.grad` on every leaf that requires grad. Walks the tape in reverse
 * topological order, summing the gradients that flow into one tensor, and frees saved
 * tensors and intermediate gradients as soon as the walk is done with them. A leaf disposed since
 * the forward gets no gradient (nothing could read it, and it would stay allocated).
 */
export function backward(loss: Tensor, grad?: Tensor | null, options?: BackwardOptions | null): void {
  if (!(loss instanceof Tensor)) throw new AutogradError("backward: loss must be a Tensor");
  loss.throwIfDisposed("backward: loss");
  if (loss.dtype === "int32") throw new AutogradError("backward: the loss has dtype int32; gradients need a float dtype");
  const retainGraph = checkOptions(options);
  const origin = gradFnOf(loss);
  if (!origin) {
    if (!loss.requiresGrad) {
      throw new AutogradError(
        "backward: the loss does not track gradients: no input of its computation requires grad, or it was computed inside noGrad",
      );
    }
    noGrad(() => accumulateLeaf(loss, seedOf(loss, grad)));
    for (const observer of gradReadyObservers) observer(loss);
    return;
  }
  const order = reverseTopologicalOrder(origin.node);
  checkVersions(order, origin, loss);
  const leavesDoneAt = lastUses(order);
  const senders = gradientSenders(order, origin);
  const pending = new Map<TapeNode, (Tensor | null)[]>();
  const preActivationGrads = new Map<TapeNode, PreActivationGrad>();
  const leafGrads = new Map<Tensor, Tensor>();
  for (const node of order) node.pins++;
  let done = 0;
  try {
    noGrad(() => {
      const seed = seedOf(loss, grad);
      const rootGrads: (Tensor | null)[] = origin.node.outputMeta.map(() => null);
      rootGrads[origin.outputIndex] = seed;
      pending.set(origin.node, rootGrads);
      for (const node of order) {
        const dys = pending.get(node);
        const preActivationGrad = preActivationGrads.get(node);
        pending.delete(node);
        preActivationGrads.delete(node);
        if (dys || preActivationGrad) {
          try {
            const fusion = fusionOf(node, senders);
            const { grads, fused } = nodeGradients(node, dys ?? node.outputMeta.map(() => null), fusion, preActivationGrad);
            if (fusion && fused) preActivationGrads.set(fusion.producer, fused);
            node.edges.forEach((edge, i) => {
              const grad = grads[i];
              if (grad === null) return;
              if (edge.leaf) {
                accumulate(leafGrads, edge.leaf, grad);
              } else if (edge.producer) {
                const slots = pending.get(edge.producer) ?? edge.producer.outputMeta.map(() => null);
                const existing = slots[edge.outputIndex];
                slots[edge.outputIndex] = existing ? add(existing, grad) : grad;
                if (existing) {
                  existing.dispose();
                  grad.dispose();
                }
                pending.set(edge.producer, slots);
              }
            });
          } finally {
            for (const dy of dys ?? []) if (dy) dy.dispose();
            if (preActivationGrad) for (const t of [preActivationGrad.grad, preActivationGrad.sums]) t.dispose();
          }
        }
        if (!retainGraph) freeNode(node);
        node.pins--;
        freeIfUnused(node);
        done++;
        // A leaf's gradient is complete after the last node that feeds it: add it to .grad now.
        for (const leaf of leavesDoneAt.get(done - 1) ?? []) {
          const leafGrad = leafGrads.get(leaf);
          if (leafGrad === undefined) continue;
          leafGrads.delete(leaf);
          if (!accumulateLeaf(leaf, leafGrad)) continue;
          for (const observer of gradReadyObservers) observer(leaf);
        }
      }
    });
  } finally {
    for (const slots of pending.values()) for (const t of slots) if (t) t.dispose();
    for (const { grad, sums } of preActivationGrads.values()) for (const t of [grad, sums]) t.dispose();
    for (const t of leafGrads.values()) t.dispose();
    for (const node of order.slice(done)) {
      node.pins--;
      freeIfUnused(node);
    }
  }
}

/** Disposes and clears `.grad` on each tensor (PyTorch's zero_grad(set_to_none=True)). */
export function zeroGrad(tensors: Iterable<Tensor>): void {
  if (tensors == null || typeof (tensors as Partial<Iterable<Tensor>>)[Symbol.iterator] !== "function") {
    throw new AutogradError(`zeroGrad: tensors must be an iterable of Tensors (an array, a Set), got ${describeValue(tensors)}`);
  }
  const list = [...tensors];
  // All checked first: a bad entry leaves every .grad as it was.
  list.forEach((t, i) => {
    if (!(t instanceof Tensor)) throw new AutogradError(`zeroGrad: tensors[${i}] is not a Tensor (${describeValue(t)})`);
  });
  for (const t of list) {
    if (t.grad instanceof Tensor) t.grad.dispose();
    t.grad = null;
  }
}
