/**
 * One rank of a data-parallel job in which one rank fails mid-training: `throw` (an exception in its
 * training loop), `kill` (SIGKILL, as the OOM killer does) or `none` (a clean run). The timeout is
 * 120 s, so a rank that learns of the failure only at its timeout makes the test time out first.
 * Each surviving rank writes what it got to <out>/rank<R>.json: the error's name, the rank it names
 * and its message, or, after a clean run, its final parameters.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DistributedDataParallel, initProcessGroup, RankFailedError } from "../../src/index";
import { buildModel, buildOptimizers, ddpStep, STEPS, snapshot } from "./ddp_model";

const [out, mode, failing] = [process.argv[2], process.argv[3], Number(process.argv[4] ?? 1)];
const FAIL_AT_STEP = 2;
const group = await initProcessGroup({ timeoutMs: 120_000 });
const report = (result: unknown) => writeFileSync(join(out, `rank${group.rank}.json`), JSON.stringify(result));
const model = buildModel(100 + group.rank);
try {
  const ddp = await DistributedDataParallel.create(model, group, { bucketBytes: 2048 });
  const optimizers = buildOptimizers(model);
  for (let step = 0; step < STEPS; step++) {
    if (group.rank === failing && step === FAIL_AT_STEP) {
      if (mode === "kill") process.kill(process.pid, "SIGKILL");
      if (mode === "throw") throw new Error(`rank ${group.rank}: failing on purpose at step ${step}`);
    }
    await ddpStep(ddp, model, optimizers, step, group);
  }
  await ddp.checkReplicas();
  await group.destroy();
  report(snapshot(model));
} catch (error) {
  if (group.rank !== failing) {
    report({ name: (error as Error).name, rank: error instanceof RankFailedError ? error.rank : null, message: (error as Error).message });
  }
  throw error;
}
