/**
 * One rank that starts collectives without awaiting them and destroys its group at once: an allReduce of a large
 * tensor, an allGather and a barrier, then destroy. Writes to <out>/rank<R>.json how each collective ended and the
 * reduced tensor's first and last values: every rank must complete every one of them, with the same sum.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "@blocksparse/core";
import { initProcessGroup } from "../../src/index";

const out = process.argv[2];
const group = await initProcessGroup({ timeoutMs: 20_000 });
const { rank } = group;
const n = 200_000;
const values = tensor(new Float32Array(n).fill(rank + 1), [n]);
const outcome = (promise: Promise<unknown>) => promise.then(
  () => "ok",
  (error) => `${(error as Error).name}: ${(error as Error).message}`,
);
const reduced = outcome(group.allReduce(values));
const gathered = outcome(group.allGather(tensor([rank])));
const barrier = outcome(group.barrier());
const destroyed = outcome(group.destroy());
const result = { rank, reduced: await reduced, gathered: await gathered, barrier: await barrier, destroyed: await destroyed };
const data = values.dataSync();
writeFileSync(join(out, `rank${rank}.json`), JSON.stringify({ ...result, first: data[0], last: data[n - 1] }));
