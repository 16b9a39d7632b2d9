import { backward, noGrad, reachableLeaves } from "@blocksparse/autograd";
import {
  type Activation,
  add,
  BsrPattern,
  biasActivation,
  blockNorms,
  formatArg,
  formatShape,
  keep,
  optionsArg,
  ShapeError,
  sampledMatmul,
  seedArg,
  shapesEqual,
  Tensor,
  tensorOn,
  tidy,
  ValueError,
  zerosLike,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { BlockSparseLinear, movingOptimizers } from "./block_sparse_linear";
import { StateDictError, type StateDictMismatch } from "./errors";
import { childSeeds } from "./init";
import { requiredOptions } from "./linear";
import { Module } from "./module";
import { Optimizer } from "./optim";
import type { Parameter } from "./parameter";

export interface PruneAndRegrowOptions {
  /** Fraction of the stored blocks to move, in [0, 1]. */
  fraction: number;
  /** Generator (or seed) choosing the regrown blocks (default: core's global generator). */
  random?: SeededRandom | number;
  /** Values of regrown blocks: "zeros" (default) or "normal" (mean 0, std = scale x the std of the kept values). */
  newBlocks?: "zeros" | "normal";
  /** For "normal" (default 0.1). */
  scale?: number;
  /**
   * Its state for the weight follows: kept blocks keep theirs, regrown blocks start fresh (Optimizer.freshBlocks). A list
   * (a model split across optimizers): those holding the weight follow. One, or a list, holding none of the layer's parameters is refused.
   */
  optimizer?: Optimizer | readonly Optimizer[];
  /** How the new blocks are chosen: "random" (default) or "gradient" (RigL: the largest gradient norms; needs `gradient`). */
  regrow?: Regrowth;
  /** For "gradient": the layer's input x [..., in] and output gradient dy [..., out] over a batch (several pairs are summed). */
  gradient?: LayerGradient | readonly LayerGradient[];
}

/** "random": uniformly among the blocks a layer lacks; "gradient": those whose dense gradient dL/dW has the largest L2 norm (RigL). */
export type Regrowth = "random" | "gradient";

/** What a layer saw in one forward and backward: its input and the gradient of its output, from which dW = dy^T x. */
export interface LayerGradient {
  x: Tensor;
  dy: Tensor;
}

export interface PatternMove {
  /** Flat block positions (blockRow * blockCols + blockCol) that were dropped, ascending. */
  pruned: Int32Array;
  /** Flat block positions that were added, ascending. */
  regrown: Int32Array;
}

/**
 * Drops the `fraction` of `layer`'s blocks with the lowest L2 norm (ties: lower position
 * first) and grows as many among the positions it did not hold (all of them, and the pruned
 * ones for the rest, when too few are free), keeping the density: at random, or (regrow "gradient", RigL)
 * those where the dense gradient dW = dy^T x has the largest L2 norm (ties: lower position
 * first), dW computed with sampledMatmul on the candidate blocks only. Surviving blocks
 * keep their values.
 */
export function pruneAndRegrow(layer: BlockSparseLinear, options: PruneAndRegrowOptions): PatternMove {
  if (!(layer instanceof BlockSparseLinear)) throw new ValueError("pruneAndRegrow: layer must be a BlockSparseLinear");
  requiredOptions("pruneAndRegrow", options, ["fraction", "random", "newBlocks", "scale", "optimizer", "regrow", "gradient"], 1);
  const { fraction, newBlocks = "zeros", scale = 0.1, regrow = "random" } = options;
  if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) {
    throw new ValueError(`pruneAndRegrow: fraction must be in [0, 1], got ${formatArg(fraction)}`);
  }
  checkNewBlocks("pruneAndRegrow", newBlocks, scale);
  // Refused also when no block moves, where setPattern (which checks it) is not called.
  movingOptimizers("pruneAndRegrow", layer, options.optimizer);
  if (regrow !== "random" && regrow !== "gradient") throw new ValueError(`pruneAndRegrow: regrow must be "random" or "gradient", got ${JSON.stringify(regrow)}`);
  const gradients = regrow === "gradient" ? checkGradients(options.gradient, layer) : [];
  const random =
    options.random instanceof SeededRandom
      ? options.random
      : new SeededRandom(options.random === undefined ? childSeeds("pruneAndRegrow", undefined, 1)[0] : seedArg("pruneAndRegrow", "random", options.random));
  const pattern = layer.pattern;
  const count = blocksMoved(fraction, pattern.nnzBlocks);
  const { blockRow, blockCol } = pattern.coordinates;
  const flatOf = (k: number) => blockRow[k] * pattern.blockCols + blockCol[k];
  const norms = noGrad(() => tidy(() => blockNorms(layer.weight.value).dataSync()));
  // A NaN block counts as strongest, so that it is never silently dropped.
  const strength = (k: number) => (Number.isNaN(norms[k]) ? Number.POSITIVE_INFINITY : norms[k]);
  const order = Array.from({ length: pattern.nnzBlocks }, (_, k) => k).sort((a, b) => strength(a) - strength(b) || a - b);
  const prunedBlocks = new Set(order.slice(0, count));
  const held = pattern.blockMask();
  const free: number[] = [];
  for (let flat = 0; flat < held.length; flat++) if (!held[flat]) free.push(flat);
  const pick = (candidates: number[], n: number) =>
    regrow === "gradient" ? largestGradients(layer, gradients, candidates, n) : Int32Array.from(random.sample(candidates.length, n), (i) => candidates[i]);
  // Every free position before any just-pruned one: those only fill the blocks the free ones cannot.
  const short = count - free.length;
  const regrown = (short > 0 ? Int32Array.from([...free, ...pick([...prunedBlocks].map(flatOf).sort((a, b) => a - b), short)]) : pick(free, count)).sort();
  const kept: number[] = [];
  for (let k = 0; k < pattern.nnzBlocks; k++) if (!prunedBlocks.has(k)) kept.push(flatOf(k));
  const next = BsrPattern.fromFlatBlocks(pattern.shape, pattern.blockShape, Int32Array.from([...kept, ...regrown]).sort());
  // Regrown positions the layer held (pruned ones taken back when too few were free) keep their values: only the others are new.
  const added = regrown.reduce((n, flat) => (held[flat] ? n : n + 1), 0);
  const newValues = newBlocks === "normal" && added > 0 ? normalBlocks(layer, prunedBlocks, added, scale, random) : undefined;
  // A move of no block (a fraction that rounds to 0, or every pruned block taken back) leaves the layer as it is: a new
  // pattern object would restart the state of an optimizer that is not passed here, for nothing.
  if (!next.equals(pattern)) {
    try {
      layer.setPattern(next, { newValues, optimizer: options.optimizer });
    } finally {
      newValues?.dispose();
    }
  }
  return { pruned: Int32Array.from([...prunedBlocks].map(flatOf)).sort(), regrown };
}

/** The blocks a move of `fraction` drops (and grows) in a layer of `nnzBlocks`: round(fraction x nnzBlocks). */
function blocksMoved(fraction: number, nnzBlocks: number): number {
  return Math.round(fraction * nnzBlocks);
}

function checkNewBlocks(where: string, newBlocks: unknown, scale: number): void {
  if (newBlocks !== "zeros" && newBlocks !== "normal") throw new ValueError(`${where}: newBlocks must be "zeros" or "normal", got ${JSON.stringify(newBlocks)}`);
  // A NaN or infinite scale would write NaN or inf into every regrown block.
  if (!Number.isFinite(scale) || scale < 0) throw new ValueError(`${where}: scale must be a finite number >= 0, got ${formatArg(scale)}`);
}

function checkGradients(gradient: PruneAndRegrowOptions["gradient"], layer: BlockSparseLinear): readonly LayerGradient[] {
  const pairs = gradient === undefined ? [] : Array.isArray(gradient) ? gradient : [gradient as LayerGradient];
  if (pairs.length === 0) throw new ValueError('pruneAndRegrow: regrow "gradient" needs gradient { x, dy } (the layer\'s input and output gradient)');
  const [outFeatures, inFeatures] = layer.pattern.shape;
  for (const [i, pair] of pairs.entries()) {
    if (!(pair?.x instanceof Tensor) || !(pair?.dy instanceof Tensor)) throw new ValueError("pruneAndRegrow: gradient must be { x, dy } of Tensors");
    // Checked here, before any block moves, so that the message names this call and not sampledMatmul inside it.
    const { x, dy } = pair;
    const name = pairs.length > 1 ? `gradient[${i}]` : "gradient";
    if (x.rank < 1 || x.shape[x.rank - 1] !== inFeatures) {
      throw new ShapeError(`pruneAndRegrow: ${name}.x has shape ${formatShape(x.shape)}, expected [..., ${inFeatures}] (the layer's inFeatures)`);
    }
    if (dy.rank < 1 || dy.shape[dy.rank - 1] !== outFeatures) {
      throw new ShapeError(`pruneAndRegrow: ${name}.dy has shape ${formatShape(dy.shape)}, expected [..., ${outFeatures}] (the layer's outFeatures)`);
    }
    if (!shapesEqual(x.shape.slice(0, -1), dy.shape.slice(0, -1))) {
      throw new ShapeError(
        `pruneAndRegrow: ${name}.x ${formatShape(x.shape)} and ${name}.dy ${formatShape(dy.shape)} must have the same leading (batch) dims`,
      );
    }
  }
  return pairs;
}

/**
 * The `count` candidate positions whose block of dW = sum dy^T x has the largest L2 norm
 * (ties and NaN norms: lower position first), ascending. dW is computed on the candidate
 * blocks only (SDDMM), never densely.
 */
function largestGradients(layer: BlockSparseLinear, gradients: readonly LayerGradient[], candidates: number[], count: number): Int32Array {
  if (count === 0) return new Int32Array(0);
  const pattern = layer.pattern;
  const sampled = BsrPattern.fromFlatBlocks(pattern.shape, pattern.blockShape, Int32Array.from(candidates).sort());
  const norms = noGrad(() =>
    tidy(() => {
      let dW = sampledMatmul(gradients[0].dy, gradients[0].x, sampled);
      for (const { dy, x } of gradients.slice(1)) dW = add(dW, sampledMatmul(dy, x, sampled));
      return blockNorms(dW).dataSync();
    }),
  );
  const { blockRow, blockCol } = sampled.coordinates;
  const flatOf = (k: number) => blockRow[k] * pattern.blockCols + blockCol[k];
  const strength = (k: number) => (Number.isNaN(norms[k]) ? Number.NEGATIVE_INFINITY : norms[k]);
  const order = Array.from({ length: sampled.nnzBlocks }, (_, k) => k).sort((a, b) => strength(b) - strength(a) || flatOf(a) - flatOf(b));
  return Int32Array.from(order.slice(0, count), flatOf).sort();
}

function normalBlocks(layer: BlockSparseLinear, pruned: Set<number>, count: number, scale: number, random: SeededRandom): Tensor {
  const [blockHeight, blockWidth] = layer.blockShape;
  const blockSize = blockHeight * blockWidth;
  const values = layer.weight.value.dataSync();
  let sum = 0;
  let sumSquares = 0;
  let n = 0;
  for (let k = 0; k < layer.nnzBlocks; k++) {
    if (pruned.has(k)) continue;
    for (let i = k * blockSize; i < (k + 1) * blockSize; i++) {
      sum += values[i];
      sumSquares += values[i] * values[i];
      n++;
    }
  }
  const std = n > 1 ? Math.sqrt(Math.max(0, (sumSquares - (sum * sum) / n) / (n - 1))) : 0;
  const fresh = random.fillNormal(new Float32Array(count * blockSize), 0, scale * std);
  return tensorOn(layer.weight.value.backend, fresh, [count, blockHeight, blockWidth], layer.weight.value.dtype);
}

export interface SparseOptimizerOptions {
  /** Fraction of each layer's blocks moved per pattern update (default 0.1); with the cosine schedule, the fraction at step 0. */
  fraction?: number;
  /** Update the patterns every `every` calls of step() (default 1). */
  every?: number;
  /** Seed of the regrowth (default: drawn from core's global generator). */
  seed?: number;
  newBlocks?: "zeros" | "normal";
  scale?: number;
  /** "random" (default) or "gradient" (RigL: step() then needs a closure computing the loss). */
  regrow?: Regrowth;
  /** "constant" (default) or "cosine": fraction / 2 * (1 + cos(pi * t / totalSteps)) at call t, as RigL. */
  schedule?: "constant" | "cosine";
  /** For "cosine" (required): the call after which the patterns stop moving. Optional for "constant" (default: never stop). */
  totalSteps?: number;
}

/**
 * SparseOptimizer.stateDict(): plain data that JSON gives back exactly. A resumed run loads it to
 * continue the schedule and the random draws where they stopped.
 */
export interface SparseOptimizerState {
  kind: "SparseOptimizer";
  /** Calls of step() and skipStep() so far. */
  calls: number;
  /** The regrowth's seed, an integer in [0, 2^32): the update at call t draws from a generator seeded from (seed, t). */
  seed: number;
  /** The options it was made with (totalSteps null: never stops); a state loads only into one made with the same. */
  options: {
    fraction: number;
    every: number;
    newBlocks: "zeros" | "normal";
    scale: number;
    regrow: Regrowth;
    schedule: "constant" | "cosine";
    totalSteps: number | null;
  };
}

/** A function that runs the forward pass on a batch and returns the scalar loss (the caller's usual loss computation). */
export type LossClosure = () => Tensor;

/**
 * Moves the patterns of a model's BlockSparseLinear layers during training, as
 * pytorch_block_sparse's SparseOptimizer or RigL: each update prunes the weakest blocks of
 * every layer (by L2 norm) and regrows as many, at random or where the gradient is largest,
 * resetting their state in the attached optimizer. Call step() after the optimizer's step;
 * with regrow "gradient", pass it a closure computing the loss on a batch: on update steps
 * it runs one extra forward and backward that only records each layer's input and output
 * gradient (no parameter gradient is accumulated), and grows the blocks of dW = dy^T x with
 * the largest norms, computed on the absent blocks only.
 */
export class SparseOptimizer {
  readonly fraction: number;
  readonly every: number;
  readonly newBlocks: "zeros" | "normal";
  readonly scale: number;
  readonly regrow: Regrowth;
  readonly schedule: "constant" | "cosine";
  readonly totalSteps: number;
  #target: Module | readonly BlockSparseLinear[];
  #optimizers: readonly Optimizer[] = [];
  #seed: number;
  #calls = 0;

  constructor(target: Module | readonly BlockSparseLinear[], options: SparseOptimizerOptions = {}) {
    if (!(target instanceof Module) && !(Array.isArray(target) && target.every((l) => l instanceof BlockSparseLinear))) {
      throw new ValueError("SparseOptimizer: target must be a Module or an array of BlockSparseLinear layers");
    }
    const { fraction = 0.1, every = 1, newBlocks = "zeros", scale = 0.1, regrow = "random", schedule = "constant", seed, totalSteps: lastStep } = optionsArg("SparseOptimizer", options, [
      "fraction",
      "every",
      "seed",
      "newBlocks",
      "scale",
      "regrow",
      "schedule",
      "totalSteps",
    ]);
    if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) throw new ValueError(`SparseOptimizer: fraction must be in [0, 1], got ${formatArg(fraction)}`);
    if (!Number.isInteger(every) || every < 1) throw new ValueError(`SparseOptimizer: every must be a positive integer, got ${formatArg(every)}`);
    checkNewBlocks("SparseOptimizer", newBlocks, scale);
    if (regrow !== "random" && regrow !== "gradient") throw new ValueError(`SparseOptimizer: regrow must be "random" or "gradient", got ${JSON.stringify(regrow)}`);
    if (schedule !== "constant" && schedule !== "cosine") throw new ValueError(`SparseOptimizer: schedule must be "constant" or "cosine", got ${JSON.stringify(schedule)}`);
    const totalSteps = lastStep ?? Number.POSITIVE_INFINITY;
    if (schedule === "cosine" && lastStep === undefined) throw new ValueError('SparseOptimizer: schedule "cosine" needs totalSteps (the call after which patterns stop moving)');
    if (!(totalSteps === Number.POSITIVE_INFINITY || (Number.isInteger(totalSteps) && totalSteps >= 1))) {
      throw new ValueError(`SparseOptimizer: totalSteps must be a positive integer, got ${formatArg(lastStep)}`);
    }
    this.fraction = fraction;
    this.every = every;
    this.newBlocks = newBlocks;
    this.scale = scale;
    this.regrow = regrow;
    this.schedule = schedule;
    this.totalSteps = totalSteps;
    this.#target = target;
    this.#seed = childSeeds("SparseOptimizer", seed, 1)[0];
  }

  /**
   * The optimizer whose state follows every move, or a list of them (a model split across optimizers: each follows the
   * layers it holds). A step then refuses, before any pattern moves, a layer that none of them holds (freeze it instead).
   */
  attachOptimizer(optimizer: Optimizer | readonly Optimizer[]): this {
    const list: readonly unknown[] = Array.isArray(optimizer) ? optimizer : [optimizer];
    if (list.length === 0 || !list.every((o) => o instanceof Optimizer)) throw new ValueError(`SparseOptimizer.attachOptimizer: expected an Optimizer or a non-empty array of them, got ${formatArg(optimizer)}`);
    this.#optimizers = [...new Set(list as Optimizer[])];
    return this;
  }

  /** The attached optimizer (undefined when none is, or several are: read `optimizers`). */
  get optimizer(): Optimizer | undefined {
    return this.#optimizers.length === 1 ? this.#optimizers[0] : undefined;
  }

  /** The attached optimizers (empty when none is). */
  get optimizers(): readonly Optimizer[] {
    return this.#optimizers;
  }

  /**
   * The layers it moves (found again at each update, so patched models are covered): each once, and
   * only those whose weight requires gradients (a frozen layer keeps its pattern and values).
   */
  layers(): BlockSparseLinear[] {
    const target = this.#target;
    return [...new Set(target instanceof Module ? target.modules() : target)].filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear && m.weight.requiresGrad);
  }

  /** Calls of step() and skipStep() so far (a loaded state's count included). */
  get calls(): number {
    return this.#calls;
  }

  /** The fraction moved by an update at call `t` (1-based, as step() counts): 0 from totalSteps on. */
  fractionAt(t: number): number {
    callArg("SparseOptimizer.fractionAt", "t", t);
    if (t >= this.totalSteps) return 0;
    if (this.schedule === "constant") return this.fraction;
    return (this.fraction / 2) * (1 + Math.cos((Math.PI * t) / this.totalSteps));
  }

  /** Whether the next call of step() moves the patterns; or the call after `calls` calls (a replica's agreed count). */
  willUpdate(calls = this.#calls): boolean {
    callArg("SparseOptimizer.willUpdate", "calls", calls);
    const t = calls + 1;
    return t % this.every === 0 && t < this.totalSteps;
  }

  /**
   * Counts a call of step() without moving any pattern: for a replica whose patterns are moved
   * by another process (data-parallel training, where one rank decides), so that its schedule
   * (every, the cosine fraction, totalSteps) stays in step with the deciding rank's.
   */
  skipStep(): void {
    this.#calls++;
  }

  /** The state a resumed run needs (the call count and the seed) and the options it goes with; JSON keeps it exactly. */
  stateDict(): SparseOptimizerState {
    const { fraction, every, newBlocks, scale, regrow, schedule, totalSteps } = this;
    const options = { fraction, every, newBlocks, scale, regrow, schedule, totalSteps: Number.isFinite(totalSteps) ? totalSteps : null };
    return { kind: "SparseOptimizer", calls: this.#calls, seed: this.#seed, options };
  }

  /**
   * Restores stateDict()'s state: the next step() moves the patterns as the saved run's next one would have. Everything
   * is checked before anything changes, and every problem is named in one StateDictError: missing and unexpected fields
   * ("options.every" for an option), a kind other than "SparseOptimizer" or calls and seed out of range (reason
   * "type"), and options other than this one's (reason "option").
   */
  loadStateDict(state: SparseOptimizerState): void {
    const own = fields(this.stateDict());
    const saved = fields(state);
    const mismatches: StateDictMismatch[] = [];
    for (const [key, value] of saved) {
      const bound = key === "calls" ? 2 ** 53 : key === "seed" ? 2 ** 32 : 0;
      const fits = bound > 0 ? Number.isInteger(value) && (value as number) >= 0 && (value as number) < bound : key === "options" ? isObject(value) : value === own.get(key);
      if (own.has(key) && !fits) {
        const expected = bound > 0 ? `an integer in [0, 2^${Math.log2(bound)})` : key === "options" ? "an object" : formatArg(own.get(key));
        mismatches.push({ key, expected, got: formatArg(value), reason: key.startsWith("options.") ? "option" : "type" });
      }
    }
    const missing = [...own.keys()].filter((key) => !saved.has(key));
    const unexpected = [...saved.keys()].filter((key) => !own.has(key));
    if (missing.length + unexpected.length + mismatches.length > 0) throw new StateDictError(missing, unexpected, mismatches, "SparseOptimizer.loadStateDict");
    this.#calls = state.calls;
    this.#seed = state.seed;
  }

  /**
   * Counts a call; every `every` calls (before totalSteps), moves each layer's pattern.
   * `loss` (required with regrow "gradient" on update steps) computes the loss on a batch.
   * Returns the moves made (empty when it waited).
   */
  step(loss?: LossClosure): Map<BlockSparseLinear, PatternMove> {
    const moves = new Map<BlockSparseLinear, PatternMove>();
    const update = this.willUpdate();
    // Every layer checked before the call counts or any moves: one that no attached optimizer holds would lose its state in silence.
    if (update && this.#optimizers.length > 0) for (const layer of this.layers()) movingOptimizers("SparseOptimizer.step", layer, this.#optimizers);
    this.#calls++;
    if (!update) return moves;
    const fraction = this.fractionAt(this.#calls);
    // Each update draws from its own generator, seeded from (seed, call): resuming exactly needs only these two integers.
    const random = new SeededRandom((this.#seed ^ Math.imul(this.#calls, 0x9e3779b9)) >>> 0);
    const layers = this.layers();
    // Nothing to move (a model without block-sparse layers): the closure's loss would track no gradient.
    if (layers.length === 0) return moves;
    if (this.regrow === "gradient" && typeof loss !== "function") throw new ValueError('SparseOptimizer.step: regrow "gradient" needs a closure computing the loss, step(() => loss)');
    // A fraction that moves no block of any layer (a cosine schedule's last updates): no gradient pass is spent on it.
    if (layers.every((layer) => blocksMoved(fraction, layer.nnzBlocks) === 0)) {
      for (const layer of layers) moves.set(layer, { pruned: new Int32Array(0), regrown: new Int32Array(0) });
      return moves;
    }
    const gradients = this.regrow === "gradient" && loss ? recordLayerGradients(this.#target, layers, loss) : new Map<BlockSparseLinear, LayerGradient[]>();
    try {
      // Layers sharing one weight (tied by the model, kept tied by the patcher) share its pattern: it moves once, regrown
      // by the tied weight's gradient (the sum of every layer's dy^T x), and each of them reports that move.
      for (const tied of tiedGroups(layers)) {
        const move = pruneAndRegrow(tied[0], {
          fraction,
          random,
          newBlocks: this.newBlocks,
          scale: this.scale,
          optimizer: this.#optimizers.length > 0 ? this.#optimizers : undefined,
          regrow: this.regrow,
          gradient: gradients.size > 0 ? tied.flatMap((layer) => gradients.get(layer) ?? []) : undefined,
        });
        for (const layer of tied) moves.set(layer, move);
      }
    } finally {
      for (const pairs of gradients.values()) disposeGradients(pairs);
    }
    return moves;
  }
}

/** The layers grouped by their weight Parameter, in the order of each group's first layer. */
function tiedGroups(layers: readonly BlockSparseLinear[]): BlockSparseLinear[][] {
  const groups = new Map<Parameter, BlockSparseLinear[]>();
  for (const layer of layers) {
    const group = groups.get(layer.weight);
    if (group) group.push(layer);
    else groups.set(layer.weight, [layer]);
  }
  return [...groups.values()];
}

/**
 * Runs `loss` once with every layer's forward (and forwardActivation, forwardResidual) wrapped so that its input is kept and a zero
 * "probe" is added to its output: after backward, the probe's gradient is the layer's output
 * gradient dy. Parameters stop requiring gradients meanwhile, so none is accumulated (and no
 * weight gradient is computed).
 */
function recordLayerGradients(owner: Module | readonly BlockSparseLinear[], layers: readonly BlockSparseLinear[], loss: LossClosure): Map<BlockSparseLinear, LayerGradient[]> {
  const records = new Map<BlockSparseLinear, { x: Tensor; probe: Tensor }[]>(layers.map((layer) => [layer, []]));
  const parameters = owner instanceof Module ? owner.parameters() : layers.flatMap((layer) => layer.parameters());
  const requiresGrad = parameters.map((p) => p.requiresGrad);
  for (const p of parameters) p.requiresGrad = false;
  for (const layer of layers) {
    const forward = layer.forward;
    const probed = (x: Tensor) => {
      const y = forward.call(layer, x);
      const probe = keep(zerosLike(y));
      probe.requiresGrad = true;
      records.get(layer)?.push({ x: keep(noGrad(() => x.clone())), probe });
      return add(y, probe);
    };
    // Own properties shadow the class's entry points for this one pass (the activation and the residual then run apart); deleted in finally.
    Object.assign(layer, {
      forward: probed,
      forwardActivation: (x: Tensor, activation: Activation) => biasActivation(probed(x), null, activation),
      forwardResidual: (x: Tensor, residual: Tensor) => add(probed(x), residual),
    });
  }
  try {
    tidy(() => {
      const value = loss();
      if (!(value instanceof Tensor) || value.size !== 1) throw new ValueError("SparseOptimizer.step: the loss closure must return a scalar Tensor");
      // Leaves it does not freeze (parameters outside the target, an input) get this pass's gradient: theirs are put back after.
      const probes = [...records.values()].flat().map((r) => r.probe);
      const others = [...reachableLeaves(value)].filter((t) => !probes.includes(t)).map((t) => [t, t.grad] as const);
      for (const [t] of others) t.grad = null;
      try {
        backward(value);
      } finally {
        for (const [t, grad] of others) {
          t.grad?.dispose();
          t.grad = grad;
        }
      }
    });
  } catch (error) {
    for (const pairs of records.values()) disposeGradients(pairs.map(({ x, probe }) => ({ x, dy: probe })));
    throw error;
  } finally {
    for (const layer of layers) {
      delete (layer as { forward?: unknown }).forward;
      delete (layer as { forwardActivation?: unknown }).forwardActivation;
      delete (layer as { forwardResidual?: unknown }).forwardResidual;
    }
    parameters.forEach((p, i) => {
      p.requiresGrad = requiresGrad[i];
    });
  }
  const out = new Map<BlockSparseLinear, LayerGradient[]>();
  for (const [layer, pairs] of records) {
    const gradients: LayerGradient[] = [];
    for (const { x, probe } of pairs) {
      // An output that did not reach the loss has a zero gradient.
      const dy = probe.grad ?? keep(zerosLike(probe));
      probe.grad = null;
      probe.dispose();
      gradients.push({ x, dy });
    }
    out.set(layer, gradients);
  }
  // A layer the loss did not call is fine where another layer tied to its weight was called: that weight's gradient is theirs.
  const called = new Set(layers.filter((layer) => (out.get(layer)?.length ?? 0) > 0).map((layer) => layer.weight));
  const unused = layers.filter((layer) => !called.has(layer.weight));
  if (unused.length > 0) {
    for (const pairs of out.values()) disposeGradients(pairs);
    const names = owner instanceof Module ? new Map(owner.namedModules().map(([name, m]) => [m, name])) : new Map();
    throw new ValueError(
      `SparseOptimizer.step: the loss closure did not call forward, forwardActivation or forwardResidual of ${unused.map((l) => names.get(l) || (Array.isArray(owner) ? `layer ${owner.indexOf(l)}` : "the layer")).join(", ")}; gradient regrowth needs every layer it moves (a frozen one is left out)`,
    );
  }
  return out;
}

/** A count of step() calls: an integer >= 0 (NaN or a negative count would give a NaN or a wrong fraction). */
function callArg(where: string, name: string, value: unknown): void {
  if (!Number.isSafeInteger(value) || (value as number) < 0) throw new ValueError(`${where}: ${name} must be an integer >= 0, got ${formatArg(value)}`);
}

const isObject = (value: unknown): value is object => value !== null && typeof value === "object";

/** A state's fields by dotted name, its options' too ("options.every"); none when it is not an object. */
function fields(value: unknown, prefix = ""): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [key, field] of isObject(value) ? Object.entries(value) : []) {
    out.set(prefix + key, field);
    if (prefix === "" && key === "options") for (const entry of fields(field, "options.")) out.set(...entry);
  }
  return out;
}

function disposeGradients(pairs: readonly LayerGradient[]): void {
  for (const { x, dy } of pairs) {
    x.dispose();
    dy.dispose();
  }
}
