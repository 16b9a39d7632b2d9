/**
 * One rank of the data-parallel training test: each rank starts from its own random model (the
 * wrapper must copy rank 0's), trains on its rows of each combined batch, moves the patterns
 * (rank 0 decides with RigL on the combined batch), checks the replicas, saves a checkpoint
 * (rank 0 only) and writes its final parameters to <out>/rank<R>.json.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DistributedDataParallel, initProcessGroup } from "../../src/index";
import { buildModel, buildOptimizers, ddpStep, STEPS, snapshot } from "./ddp_model";

const out = process.argv[2];
const overlap = process.argv[3] !== "no-overlap";
const group = await initProcessGroup({ timeoutMs: 30_000 });
const model = buildModel(100 + group.rank);
// Small buckets: several all-reduces per step, started during backward.
const ddp = await DistributedDataParallel.create(model, group, { bucketBytes: 2048, overlap });
const optimizers = buildOptimizers(model);
const moved: number[] = [];
for (let step = 0; step < STEPS; step++) {
  const moves = await ddpStep(ddp, model, optimizers, step, group);
  moved.push([...moves.values()].reduce((n, move) => n + move.regrown.length, 0));
}
await ddp.checkReplicas();
await ddp.save(join(out, `model-rank${group.rank}.safetensors`));
writeFileSync(join(out, `rank${group.rank}.json`), JSON.stringify({ ...snapshot(model), moved }));
await group.destroy();
