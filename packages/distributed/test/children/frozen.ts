/**
 * Rank 1 freezes the head's weight (requiresGrad false) and the others do not: every rank's
 * `backward` and `allReduceGradients` must throw a GradientMismatchError naming it, and leave the
 * group in step. Then every rank freezes it: the step runs, the weight is left out on every rank.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { backward } from "@blocksparse/autograd";
import { tidy } from "@blocksparse/core";
import { DistributedDataParallel, GradientMismatchError, initProcessGroup } from "../../src/index";
import { buildModel, combinedBatch, localBatch, lossOf } from "./ddp_model";

const out = process.argv[2];
const overlap = process.argv[3] !== "no-overlap";
const group = await initProcessGroup({ timeoutMs: 30_000 });
const model = buildModel(100);
const ddp = await DistributedDataParallel.create(model, group, { overlap });
const head = model.getSubmodule("4").parameters()[0];

function describe(caught: unknown): { name: string; message: string; parameters?: readonly string[] } {
  if (caught instanceof GradientMismatchError) return { name: caught.name, message: caught.message, parameters: caught.parameters };
  return { name: caught instanceof Error ? caught.name : typeof caught, message: String(caught) };
}

async function step(reduce: "backward" | "allReduceGradients"): Promise<ReturnType<typeof describe> | null> {
  const batch = combinedBatch(0, group.worldSize);
  const loss = tidy(() => lossOf(ddp, localBatch(batch, group.rank)));
  try {
    if (reduce === "backward") await ddp.backward(loss);
    else {
      backward(loss);
      await ddp.allReduceGradients();
    }
    return null;
  } catch (caught) {
    return describe(caught);
  } finally {
    loss.dispose();
    batch.x.dispose();
    batch.y.dispose();
    for (const parameter of model.parameters()) {
      parameter.grad?.dispose();
      parameter.grad = null;
    }
  }
}

if (group.rank === 1) head.requiresGrad = false;
const mismatch = { backward: await step("backward"), allReduceGradients: await step("allReduceGradients") };
// Frozen on every rank: left out of the buckets alike, the step runs.
head.requiresGrad = false;
const batch = combinedBatch(0, group.worldSize);
const loss = tidy(() => lossOf(ddp, localBatch(batch, group.rank)));
await ddp.backward(loss);
const grads = Object.fromEntries(model.namedParameters().map(([name, parameter]) => [name, parameter.grad === null ? null : Array.from(parameter.grad.dataSync())]));
writeFileSync(join(out, `rank${group.rank}.json`), JSON.stringify({ mismatch, grads }));
await group.destroy();
