import { noGrad } from "@blocksparse/autograd";
import { BsrPattern, blockNorms, type Tensor, tensorOn, tidy, ValueError } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { BlockSparseLinear } from "./block_sparse_linear";
import { childSeeds } from "./init";
import { Module } from "./module";
import type { Optimizer } from "./optim";

export interface PruneAndRegrowOptions {
  /** Fraction of the stored blocks to move, in [0, 1]. */
  fraction: number;
  /** Generator (or seed) choosing the regrown blocks (default: core's global generator). */
  random?: SeededRandom | number;
  /** Values of regrown blocks: "zeros" (default) or "normal" (mean 0, std = scale x the std of the kept values). */
  newBlocks?: "zeros" | "normal";
  /** For "normal" (default 0.1). */
  scale?: number;
  /** Its state for the weight follows: kept blocks keep theirs, regrown blocks start from zero. */
  optimizer?: Optimizer;
}

export interface PatternMove {
  /** Flat block positions (blockRow * blockCols + blockCol) that were dropped, ascending. */
  pruned: Int32Array;
  /** Flat block positions that were added, ascending. */
  regrown: Int32Array;
}

/**
 * Drops the `fraction` of `layer`'s blocks with the lowest L2 norm (ties: lower position
 * first) and grows as many at random among the positions it did not hold (the pruned ones
 * too when nothing else is left), keeping the density. Surviving blocks keep their values.
 */
export function pruneAndRegrow(layer: BlockSparseLinear, options: PruneAndRegrowOptions): PatternMove {
  if (!(layer instanceof BlockSparseLinear)) throw new ValueError("pruneAndRegrow: layer must be a BlockSparseLinear");
  const { fraction, newBlocks = "zeros", scale = 0.1 } = options;
  if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) {
    throw new ValueError(`pruneAndRegrow: fraction must be in [0, 1], got ${String(fraction)}`);
  }
  if (newBlocks !== "zeros" && newBlocks !== "normal") {
    throw new ValueError(`pruneAndRegrow: newBlocks must be "zeros" or "normal", got ${JSON.stringify(newBlocks)}`);
  }
  const random = options.random instanceof SeededRandom ? options.random : new SeededRandom(options.random ?? childSeeds(undefined, 1)[0]);
  const pattern = layer.pattern;
  const count = Math.round(fraction * pattern.nnzBlocks);
  const { blockRow, blockCol } = pattern.coordinates;
  const flatOf = (k: number) => blockRow[k] * pattern.blockCols + blockCol[k];
  const norms = noGrad(() => tidy(() => blockNorms(layer.weight.value).dataSync()));
  // A NaN block counts as strongest, so that it is never silently dropped.
  const strength = (k: number) => (Number.isNaN(norms[k]) ? Number.POSITIVE_INFINITY : norms[k]);
  const order = Array.from({ length: pattern.nnzBlocks }, (_, k) => k).sort((a, b) => strength(a) - strength(b) || a - b);
  const prunedBlocks = new Set(order.slice(0, count));
  const held = pattern.blockMask();
  const total = held.length;
  let candidates: number[] = [];
  for (let flat = 0; flat < total; flat++) if (!held[flat]) candidates.push(flat);
  if (candidates.length < count) candidates = candidates.concat([...prunedBlocks].map(flatOf));
  const regrown = Int32Array.from(random.sample(candidates.length, count), (i) => candidates[i]).sort();
  const kept: number[] = [];
  for (let k = 0; k < pattern.nnzBlocks; k++) if (!prunedBlocks.has(k)) kept.push(flatOf(k));
  const next = BsrPattern.fromFlatBlocks(pattern.shape, pattern.blockShape, Int32Array.from([...kept, ...regrown]).sort());
  const newValues = newBlocks === "normal" && count > 0 ? normalBlocks(layer, prunedBlocks, next.nnzBlocks - kept.length, scale, random) : undefined;
  try {
    layer.setPattern(next, { newValues, optimizer: options.optimizer });
  } finally {
    newValues?.dispose();
  }
  return { pruned: Int32Array.from([...prunedBlocks].map(flatOf)).sort(), regrown };
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
  /** Fraction of each layer's blocks moved per pattern update (default 0.1). */
  fraction?: number;
  /** Update the patterns every `every` calls of step() (default 1). */
  every?: number;
  /** Seed of the regrowth (default: core's global generator). */
  seed?: number;
  newBlocks?: "zeros" | "normal";
  scale?: number;
}

/**
 * Moves the patterns of a model's BlockSparseLinear layers during training, as
 * pytorch_block_sparse's SparseOptimizer: each update prunes the weakest blocks of every
 * layer and regrows as many at random, resetting their state in the attached optimizer.
 * Call step() after the optimizer's step.
 */
export class SparseOptimizer {
  readonly fraction: number;
  readonly every: number;
  readonly newBlocks: "zeros" | "normal";
  readonly scale: number;
  #target: Module | readonly BlockSparseLinear[];
  #optimizer: Optimizer | undefined;
  #random: SeededRandom;
  #calls = 0;

  constructor(target: Module | readonly BlockSparseLinear[], options: SparseOptimizerOptions = {}) {
    if (!(target instanceof Module) && !(Array.isArray(target) && target.every((l) => l instanceof BlockSparseLinear))) {
      throw new ValueError("SparseOptimizer: target must be a Module or an array of BlockSparseLinear layers");
    }
    const { fraction = 0.1, every = 1, newBlocks = "zeros", scale = 0.1 } = options;
    if (typeof fraction !== "number" || !(fraction >= 0 && fraction <= 1)) throw new ValueError(`SparseOptimizer: fraction must be in [0, 1], got ${String(fraction)}`);
    if (!Number.isInteger(every) || every < 1) throw new ValueError(`SparseOptimizer: every must be a positive integer, got ${String(every)}`);
    this.fraction = fraction;
    this.every = every;
    this.newBlocks = newBlocks;
    this.scale = scale;
    this.#target = target;
    this.#random = new SeededRandom(childSeeds(options.seed, 1)[0]);
  }

  /** The optimizer whose state follows every move. */
  attachOptimizer(optimizer: Optimizer): this {
    this.#optimizer = optimizer;
    return this;
  }

  /** The layers it moves (found again at each update, so patched models are covered). */
  layers(): BlockSparseLinear[] {
    const target = this.#target;
    if (target instanceof Module) return target.modules().filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear);
    return [...target];
  }

  /** Counts a call; every `every` calls, moves each layer's pattern. Returns the moves made (empty when it waited). */
  step(): Map<BlockSparseLinear, PatternMove> {
    const moves = new Map<BlockSparseLinear, PatternMove>();
    this.#calls++;
    if (this.#calls % this.every !== 0) return moves;
    for (const layer of this.layers()) {
      moves.set(
        layer,
        pruneAndRegrow(layer, {
          fraction: this.fraction,
          random: this.#random,
          newBlocks: this.newBlocks,
          scale: this.scale,
          optimizer: this.#optimizer,
        }),
      );
    }
    return moves;
  }
}
