/**
 * A job in which rank 1 exits with code 0 while rank 0 still needs it: "before-join" (rank 1 never calls
 * initProcessGroup) or "after-destroy" (both run a group to its end, then rank 0 alone starts a second one).
 * Rank 0 waits with a 120 s timeout and writes what it got to <out>/rank0.json.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "@blocksparse/core";
import { RankFailedError } from "../../src/errors";
import { initProcessGroup } from "../../src/init";

const [out, mode] = [process.argv[2], process.argv[3]];
const rank = Number(process.env.RANK);
const report = (result: unknown) => writeFileSync(join(out, `rank${rank}.json`), JSON.stringify(result));
try {
  if (mode === "after-destroy") {
    const group = await initProcessGroup({ timeoutMs: 120_000 });
    await group.allReduce(tensor([1, 2]));
    await group.destroy();
  }
  if (rank === 1) process.exit(0);
  const group = await initProcessGroup({ timeoutMs: 120_000 });
  await group.barrier();
  report({ name: "none" });
} catch (error) {
  report({ name: (error as Error).name, rank: error instanceof RankFailedError ? error.rank : null, message: (error as Error).message });
  throw error;
}
