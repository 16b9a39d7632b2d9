/**
 * One rank of the collectives test: runs every collective on values that depend on the rank,
 * and writes what it got to <out>/rank<R>.json for the test to check against float64 math.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "@blocksparse/core";
import { initProcessGroup } from "../../src/index";

const out = process.argv[2];
const group = await initProcessGroup({ timeoutMs: 30_000 });
const { rank, worldSize } = group;
const result: Record<string, unknown> = { rank, worldSize };

// Values whose float32 sum is exact: the check can be equality.
const values = (offset: number) => Array.from({ length: 5 }, (_, i) => (rank + 1) * (i + offset) * 0.25);
const sum = tensor(values(1), [5]);
await group.allReduce(sum, "sum");
result.sum = Array.from(sum.dataSync());

const avg = tensor(values(2), [5]);
await group.allReduce(avg, "avg");
result.avg = Array.from(avg.dataSync());

const half = tensor(values(3), [5], "bfloat16");
await group.allReduce(half, "sum");
result.bfloat16Sum = Array.from(half.dataSync());

// Two collectives started before either is awaited: ordered by call, not by completion.
const first = tensor([rank], [1]);
const second = tensor([10 * rank], [1]);
await Promise.all([group.allReduce(first), group.allReduce(second)]);
result.overlapped = [first.item(), second.item()];

const root = worldSize - 1;
const shared = tensor([rank * 100 + 1, rank * 100 + 2, rank * 100 + 3], [3], "int32");
await group.broadcast(shared, root);
result.broadcast = Array.from(shared.dataSync());

const gathered = await group.allGather(tensor([rank, -rank], [2]));
result.gathered = { shape: gathered.shape, values: Array.from(gathered.dataSync()) };

await group.barrier();
writeFileSync(join(out, `rank${rank}.json`), JSON.stringify(result));
await group.destroy();
