/**
 * A job that goes wrong on purpose, for the tests: "mismatch" (rank 1 calls broadcast where
 * rank 0 calls allReduce) or "crash" (rank 1 exits with code 3 while the others wait for it).
 */
import { tensor } from "@blocksparse/core";
import { initProcessGroup } from "../../src/index";

const mode = process.argv[3];
const group = await initProcessGroup({ timeoutMs: 30_000 });
const t = tensor([1, 2, 3, 4], [4]);
if (mode === "crash" && group.rank === 1) {
  process.stderr.write("rank 1: exiting on purpose\n");
  process.exit(3);
}
if (mode === "mismatch" && group.rank === 1) await group.broadcast(t, 0);
else await group.allReduce(t);
await group.destroy();
