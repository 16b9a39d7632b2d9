/** Rank 1 changes one weight behind the wrapper's back; checkReplicas must say which and where. */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { noGrad } from "@blocksparse/autograd";
import { mul } from "@blocksparse/core";
import { DistributedDataParallel, initProcessGroup, ReplicaDivergenceError } from "../../src/index";
import { buildModel } from "./ddp_model";

const out = process.argv[2];
const group = await initProcessGroup({ timeoutMs: 30_000 });
const model = buildModel(100);
const ddp = await DistributedDataParallel.create(model, group);
await ddp.checkReplicas();
if (group.rank === 1) {
  const weight = model.getSubmodule("4").parameters()[0];
  noGrad(() => weight.assign(mul(weight.value, 2)));
}
let error = "";
try {
  await ddp.checkReplicas();
} catch (caught) {
  error = caught instanceof ReplicaDivergenceError ? caught.message : `not a ReplicaDivergenceError: ${String(caught)}`;
}
writeFileSync(join(out, `rank${group.rank}.json`), JSON.stringify({ error }));
await group.destroy();
