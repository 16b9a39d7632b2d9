/**
 * The small model, data and training schedule shared by the data-parallel job's ranks and the
 * single-process reference the test runs: two BlockSparseLinear layers (8x8 blocks, half the
 * blocks) and a Linear head, Adam, and a RigL pattern move every second step.
 */
import { backward } from "@blocksparse/autograd";
import { randint, randn, slice, type Tensor, tidy } from "@blocksparse/core";
import { Adam, BlockSparseLinear, crossEntropy, Linear, type Module, type PatternMove, ReLU, Sequential, SparseOptimizer } from "@blocksparse/nn";
import type { DistributedDataParallel } from "../../src/index";

export const STEPS = 4;
/** Rows each rank trains on per step; the combined batch is this times the world size. */
export const ROWS_PER_RANK = 4;

export function buildModel(seed: number): Sequential {
  return new Sequential(
    new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [8, 8], seed }),
    new ReLU(),
    new BlockSparseLinear(32, 16, { density: 0.5, blockShape: [8, 8], seed: seed + 1 }),
    new ReLU(),
    new Linear(16, 4, { seed: seed + 2 }),
  );
}

export function buildOptimizers(model: Sequential): { adam: Adam; sparse: SparseOptimizer } {
  const adam = new Adam(model.parameters(), { lr: 0.02 });
  const sparse = new SparseOptimizer(model, { fraction: 0.25, every: 2, seed: 7, regrow: "gradient" }).attachOptimizer(adam);
  return { adam, sparse };
}

/** The combined batch of a step: x [rows, 16], class targets [rows]. */
export function combinedBatch(step: number, worldSize: number): { x: Tensor; y: Tensor } {
  const rows = ROWS_PER_RANK * worldSize;
  return { x: randn([rows, 16], { seed: 1000 + step }), y: randint(0, 4, [rows], { seed: 2000 + step }) };
}

/** Rank `rank`'s rows of the combined batch. */
export function localBatch(batch: { x: Tensor; y: Tensor }, rank: number): { x: Tensor; y: Tensor } {
  return { x: slice(batch.x, [rank * ROWS_PER_RANK, 0], [ROWS_PER_RANK, 16]), y: slice(batch.y, [rank * ROWS_PER_RANK], [ROWS_PER_RANK]) };
}

export function lossOf(model: Module, batch: { x: Tensor; y: Tensor }): Tensor {
  return crossEntropy(model.forward(batch.x), batch.y);
}

/** One data-parallel training step of a rank: its rows' loss, the all-reduced backward, Adam, the pattern move. */
export async function ddpStep(
  ddp: DistributedDataParallel,
  model: Sequential,
  { adam, sparse }: { adam: Adam; sparse: SparseOptimizer },
  step: number,
  group: { rank: number; worldSize: number },
): Promise<Map<BlockSparseLinear, PatternMove>> {
  const batch = combinedBatch(step, group.worldSize);
  const loss = tidy(() => lossOf(ddp, localBatch(batch, group.rank)));
  await ddp.backward(loss);
  loss.dispose();
  adam.step();
  adam.zeroGrad();
  const moves = await ddp.movePatterns(sparse, () => lossOf(model, batch));
  batch.x.dispose();
  batch.y.dispose();
  return moves;
}

export interface ModelSnapshot {
  parameters: Record<string, number[]>;
  patterns: Record<string, number[]>;
}

export function snapshot(model: Sequential): ModelSnapshot {
  const parameters: Record<string, number[]> = {};
  const patterns: Record<string, number[]> = {};
  for (const [name, parameter] of model.namedParameters()) {
    parameters[name] = Array.from(parameter.value.dataSync());
    if (parameter.pattern !== null) {
      const { blockRow, blockCol } = parameter.pattern.coordinates;
      patterns[name] = Array.from(blockRow, (row, k) => row * parameter.pattern!.blockCols + blockCol[k]);
    }
  }
  return { parameters, patterns };
}

/** One process training on the combined batches: what the data-parallel job must reproduce. */
export function trainReference(worldSize: number): ModelSnapshot {
  const model = buildModel(100);
  const { adam, sparse } = buildOptimizers(model);
  for (let step = 0; step < STEPS; step++) {
    const batch = combinedBatch(step, worldSize);
    tidy(() => backward(lossOf(model, batch)));
    adam.step();
    adam.zeroGrad();
    sparse.step(() => lossOf(model, batch));
    batch.x.dispose();
    batch.y.dispose();
  }
  return snapshot(model);
}
