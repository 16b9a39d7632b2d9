// Data-parallel training of a block-sparse classifier, one process per rank:
//   blocksparse-run --nproc-per-node 2 src/train.mjs [--steps 60] [--backend cpu|nccl] [--save model.safetensors]
// Each rank trains on its own shard of every batch; DistributedDataParallel averages the gradients,
// rank 0 decides the pattern moves, and the replicas stay identical (checked at the end).
import { parseArgs } from "node:util";
import { DistributedDataParallel, initProcessGroup } from "@blocksparse/distributed";
import { Adam, BlockSparseLinear, crossEntropy, Linear, ReLU, Sequential, SparseOptimizer, argmax, randn, tensor, tidy } from "@blocksparse/nn";

const { values: options } = parseArgs({
  options: { steps: { type: "string", default: "60" }, backend: { type: "string", default: "cpu" }, save: { type: "string" } },
});
const steps = Number(options.steps);
if (options.backend === "nccl") await import("@blocksparse/backend-cuda");
const group = await initProcessGroup({ backend: options.backend === "nccl" ? "nccl" : "cpu" });
const { rank, worldSize } = group;
const say = (line) => rank === 0 && console.log(line);

// Four Gaussian clusters in 32 dimensions. Row i of batch `step` is the same on every rank: each rank
// makes only the rows of its shard.
const CLASSES = 4;
const centers = randn([CLASSES, 32], { seed: 1 }).dataSync();
function rows(step, first, count) {
  const labels = Array.from({ length: count }, (_, i) => (step * 7 + (first + i) * 3) % CLASSES);
  const x = new Float32Array(count * 32);
  labels.forEach((label, i) => {
    const noise = tidy(() => randn([32], { seed: step * 100_003 + first + i, std: 0.8 }).dataSync());
    for (let d = 0; d < 32; d++) x[i * 32 + d] = centers[label * 32 + d] + noise[d];
  });
  return { x: tensor(x, [count, 32]), y: tensor(labels, [count], "int32") };
}

const model = new Sequential(
  new BlockSparseLinear(32, 64, { density: 0.25, blockShape: [8, 8], seed: 10 + rank }),
  new ReLU(),
  new BlockSparseLinear(64, 64, { density: 0.25, blockShape: [8, 8], seed: 20 + rank }),
  new ReLU(),
  new Linear(64, CLASSES, { seed: 30 + rank }),
);
if (options.backend === "nccl") model.to("cuda");
// Rank 0's weights and patterns go to every rank (each rank above started from its own seed).
const ddp = await DistributedDataParallel.create(model, group);
const optimizer = new Adam(model.parameters(), { lr: 0.01 });
const sparse = new SparseOptimizer(model, { fraction: 0.2, every: 10, seed: 3, totalSteps: steps }).attachOptimizer(optimizer);

const ROWS_PER_RANK = 16;
for (let step = 0; step < steps; step++) {
  const { x, y } = rows(step, rank * ROWS_PER_RANK, ROWS_PER_RANK);
  const loss = tidy(() => crossEntropy(ddp.forward(x), y));
  await ddp.backward(loss);
  optimizer.step();
  optimizer.zeroGrad();
  await ddp.movePatterns(sparse);
  if (step % 10 === 0 || step === steps - 1) say(`step ${step}: loss on rank 0's shard ${loss.item().toFixed(4)}`);
  for (const t of [loss, x, y]) t.dispose();
}

const test = rows(1_000_000, 0, 256);
const accuracy = tidy(() => {
  const predicted = argmax(model.forward(test.x), -1).dataSync();
  const labels = test.y.dataSync();
  return predicted.filter((p, i) => p === labels[i]).length / labels.length;
});
await ddp.checkReplicas();
say(`accuracy on 256 held-out points: ${(100 * accuracy).toFixed(1)}%; ${worldSize} replicas identical`);
if (options.save !== undefined) {
  await ddp.save(options.save);
  say(`saved ${options.save} (from rank 0)`);
}
await group.destroy();
