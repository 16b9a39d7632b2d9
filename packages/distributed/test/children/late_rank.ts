/**
 * One rank of a job whose last rank comes late to an allReduce: rank 0 calls it at once, the ranks between call it
 * half a timeout later, and the last rank calls it after rank 0's timeout has passed but before the others' has. Each
 * rank writes to <out>/rank<R>.json what the allReduce did on it (its error, or the sum) and the tensor's values after
 * it, then the sum of a second allReduce that every rank calls on time: they must agree on both.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "@blocksparse/core";
import { initProcessGroup } from "../../src/index";

const out = process.argv[2];
const timeoutMs = Number(process.argv[3]);
// The ranks start seconds apart on a loaded machine: the join waits for them longer than the collectives do.
const group = await initProcessGroup({ timeoutMs, joinTimeoutMs: 60_000 });
const { rank, worldSize } = group;
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

// Every rank leaves the barrier within a few milliseconds of the others: the delays below count from there.
await group.barrier();
if (rank === worldSize - 1) await sleep(timeoutMs * 1.3);
else if (rank > 0) await sleep(timeoutMs * 0.5);
const values = tensor([rank + 1, 10 * (rank + 1)]);
let first: { ok: true } | { ok: false; name: string; message: string };
try {
  await group.allReduce(values);
  first = { ok: true };
} catch (error) {
  first = { ok: false, name: (error as Error).name, message: (error as Error).message };
}
const after = Array.from(values.dataSync());
// The later ranks' next call comes after their error: the next collective must pair up all the same.
const second = tensor([rank + 1]);
await group.allReduce(second);
writeFileSync(join(out, `rank${rank}.json`), JSON.stringify({ rank, first, after, second: second.item() }));
await group.destroy();
