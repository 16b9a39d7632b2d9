/**
 * One rank of a job that meets another job's store, for the tests. "hold": joins, writes
 * <out>/ready<R>.json (its BLOCKSPARSE_JOB_ID), waits until <out>/release exists, runs an
 * allReduce and leaves, writing <out>/done<R>.json with the sum. "stranger": tries to join and
 * writes <out>/rank<R>.json: the error's name, message and fields (or `joined`, the bug).
 */
import { existsSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "@blocksparse/core";
import { initProcessGroup } from "../../src/index";

const [out, mode] = [process.argv[2], process.argv[3]];
const rank = Number(process.env.RANK);
if (mode === "stranger") {
  try {
    const group = await initProcessGroup({ timeoutMs: 20_000 });
    writeFileSync(join(out, `rank${rank}.json`), JSON.stringify({ joined: true }));
    await group.destroy();
    process.exit(2);
  } catch (error) {
    const { name, message, port, jobId, storeJobId } = error as Error & Record<string, unknown>;
    writeFileSync(join(out, `rank${rank}.json`), JSON.stringify({ name, message, port, jobId, storeJobId }));
    process.exit(1);
  }
}
const group = await initProcessGroup({ timeoutMs: 40_000 });
// Written whole, then renamed into place: the test polls for the file while this rank runs, and a plain write let it
// read the file between its creation and its contents (an empty file, a JSON syntax error).
const ready = join(out, `ready${group.rank}.json`);
writeFileSync(`${ready}.tmp`, JSON.stringify({ jobId: process.env.BLOCKSPARSE_JOB_ID }));
renameSync(`${ready}.tmp`, ready);
const deadline = Date.now() + 40_000;
while (!existsSync(join(out, "release")) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
const t = tensor([group.rank + 1], [1]);
await group.allReduce(t);
writeFileSync(join(out, `done${group.rank}.json`), JSON.stringify({ sum: t.dataSync()[0] }));
await group.destroy();
