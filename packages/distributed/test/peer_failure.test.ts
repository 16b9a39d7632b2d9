import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { ModelSnapshot } from "./children/ddp_model";
import { freePort, readRankResults, removeOutput, runNode, runRanks } from "./helpers";

interface FailureReport {
  name: string;
  rank: number | null;
  message: string;
}

const outputs: string[] = [];
afterAll(() => outputs.forEach(removeOutput));

// The ranks run with a 120 s timeout and the tests time out at 60 s (vitest.config.ts): a rank that learnt
// of the failure only at its timeout would fail the test.
describe("a rank that dies mid-training fails the job at once, naming it, not at the timeout", () => {
  it("ranks started without the launcher (rank 0 hosts the store): rank 2 killed by SIGKILL, ranks 0 and 1 fail with a RankFailedError naming rank 2", async () => {
    const { out, ranks } = await runRanks(3, "peer_failure.ts", ["kill", "2"], { timeoutMs: 55_000 });
    outputs.push(out);
    expect(ranks[2].signal).toBe("SIGKILL");
    for (const rank of [0, 1]) {
      expect(ranks[rank].code, ranks[rank].stderr).toBe(1);
      expect(ranks[rank].stderr).toMatch(/RankFailedError/);
    }
    const reports = readRankResults<FailureReport>(out, 2);
    for (const report of reports) {
      expect(report).toMatchObject({ name: "RankFailedError", rank: 2 });
      // A get the store refuses, or (the host, rank 0, having exited on its own refusal) a request that found the store
      // closed after it had said rank 2 was gone.
      expect(report.message).toMatch(/, collective #\d+ of rank [01]: store (get|set) '[^']+': rank 2 is gone: its connection to the store closed before it destroyed its process group/);
    }
  });

  it("two hosts' launchers: a rank of node 1 throws, node 1's launcher exits with its code and node 0's rank fails at once, naming it", async () => {
    const port = await freePort();
    const out = mkdtempSync(join(tmpdir(), "blocksparse-distributed-"));
    outputs.push(out);
    const node = (nodeRank: number) =>
      runNode(
        ["--import", "tsx", "src/cli.ts", "--nproc-per-node", "1", "--nnodes", "2", "--node-rank", String(nodeRank), "--master-port", String(port), join("test", "children", "peer_failure.ts"), out, "throw", "1"],
        { timeoutMs: 55_000 },
      );
    const [node0, node1] = await Promise.all([node(0), node(1)]);
    expect(node1.code).toBe(1);
    expect(node1.stderr).toMatch(/rank 1: failing on purpose at step 2/);
    expect(node1.stderr).toMatch(/blocksparse-run: the job failed: rank 1 exited with code 1/);
    expect(node0.code).toBe(1);
    expect(node0.stderr).toMatch(/RankFailedError/);
    expect(node0.stderr).toMatch(/blocksparse-run: the job failed: rank 0 exited with code 1/);
    const [report] = readRankResults<FailureReport>(out, 1);
    expect(report).toMatchObject({ name: "RankFailedError", rank: 1 });
    expect(report.message).toMatch(/rank 1 is gone/);
  });

  it("a clean run of the same job, without the launcher, ends on every rank with identical replicas", async () => {
    const { out, ranks } = await runRanks(3, "peer_failure.ts", ["none"], { timeoutMs: 55_000 });
    outputs.push(out);
    for (const rank of ranks) expect(rank.code, rank.stderr).toBe(0);
    const [first, ...rest] = readRankResults<ModelSnapshot>(out, 3);
    expect(Object.keys(first.parameters).length).toBeGreaterThan(0);
    for (const other of rest) expect(other).toEqual(first);
  });
});
