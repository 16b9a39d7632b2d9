import { tensor } from "@blocksparse/core";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { CpuProcessGroup } from "../src/cpu_group";
import { RankFailedError } from "../src/errors";
import { Rendezvous } from "../src/rendezvous";
import { TcpStore, TcpStoreServer } from "../src/store";
import { readRankResults, removeOutput, runJob } from "./helpers";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
const outputs: string[] = [];
afterAll(() => outputs.forEach(removeOutput));

async function launcherStore(): Promise<TcpStoreServer> {
  const server = await TcpStoreServer.listen("127.0.0.1", 0);
  cleanups.push(() => server.close());
  return server;
}

const envOf = (server: TcpStoreServer, worldSize: number) => (rank: number) => ({
  rank,
  worldSize,
  localRank: rank,
  localWorldSize: worldSize,
  masterAddr: "127.0.0.1",
  masterPort: server.port,
  launcherStore: true,
});

function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms))]);
}

describe("the store a launcher hosts, across process groups", () => {
  it("deleteKey removes a value or a counter and says whether there was one", async () => {
    const server = await launcherStore();
    const store = await TcpStore.connect("127.0.0.1", server.port, { timeoutMs: 2000 });
    cleanups.push(() => store.close());
    await store.set("a", new Uint8Array([1]));
    await store.add("n", 2);
    expect(server.numKeys()).toBe(2);
    expect(await store.deleteKey("a")).toBe(true);
    expect(await store.deleteKey("n")).toBe(true);
    expect(await store.deleteKey("a")).toBe(false);
    expect(server.numKeys()).toBe(0);
    expect(await store.add("n", 1)).toBe(1);
  });

  it("groups created and destroyed in turn leave no destroy marker behind: the store holds as many keys after the third as after the first", async () => {
    const server = await launcherStore();
    const env = envOf(server, 3);
    const counts: number[] = [];
    for (let round = 0; round < 3; round++) {
      const groups = (await Promise.all([0, 1, 2].map((rank) => Rendezvous.join(env(rank), { timeoutMs: 5000 })))).map((r) => new CpuProcessGroup(r));
      const values = groups.map((_, rank) => tensor([rank + round]));
      await Promise.all(groups.map((group, rank) => group.allReduce(values[rank])));
      expect(values.map((t) => t.item())).toEqual([3 + 3 * round, 3 + 3 * round, 3 + 3 * round]);
      await within(Promise.all(groups.map((group) => group.destroy())), 5000);
      counts.push(server.numKeys());
    }
    // What is left is the per-rank counters of the joins, one set for the whole run.
    expect(counts).toEqual([counts[0], counts[0], counts[0]]);
    expect(counts[0]).toBe(6);
  });

  it("a rank the launcher saw exit outside any group fails a rendezvous waiting for it at once, naming it; a joined rank is left to its connection", async () => {
    const server = await launcherStore();
    const env = envOf(server, 2);
    const joining = Rendezvous.join(env(0), { timeoutMs: 60_000 });
    joining.then((r) => cleanups.push(() => r.close())).catch(() => {});
    await new Promise((done) => setTimeout(done, 100));
    server.rankExited(1, 0);
    const error = await within(joining, 5000).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RankFailedError);
    expect((error as RankFailedError).rank).toBe(1);
    expect((error as Error).message).toMatch(/rank 1 exited \(with code 0\) without taking part: it never joined this process group, or it destroyed its group and left/);
  });

  it("a joined rank's exit is not taken from the launcher's word: its connection closing names it (or its leaving clears it)", async () => {
    const server = await launcherStore();
    const env = envOf(server, 2);
    const [a, b] = await Promise.all([0, 1].map((rank) => Rendezvous.join(env(rank), { timeoutMs: 10_000 })));
    cleanups.push(() => Promise.all([a.close(), b.close()]).then(() => undefined));
    server.rankExited(1, 0);
    const groups = [new CpuProcessGroup(a), new CpuProcessGroup(b)];
    const sums = [tensor([1]), tensor([2])];
    await within(Promise.all(groups.map((group, rank) => group.allReduce(sums[rank]))), 5000);
    expect(sums.map((t) => t.item())).toEqual([3, 3]);
  });
});

describe("destroy after collectives started and not awaited", () => {
  for (const worldSize of [2, 3]) {
    it(`${worldSize} processes: destroy waits for the rank's own collectives, each completes on every rank with the same result`, async () => {
      const job = await runJob(worldSize, "inflight_destroy.ts", [], { timeoutMs: 40_000 });
      outputs.push(job.out);
      expect(job.code, job.stderr).toBe(0);
      const sum = (worldSize * (worldSize + 1)) / 2;
      const results = readRankResults<Record<string, unknown>>(job.out, worldSize);
      // The connection closed under a collective still reading its outcome: it failed on that rank and completed on the others.
      for (const [rank, result] of results.entries()) {
        expect(result).toEqual({ rank, reduced: "ok", gathered: "ok", barrier: "ok", destroyed: "ok", first: sum, last: sum });
      }
    });
  }
});

describe("blocksparse-run: a rank that exits with code 0 while the others still wait for it", () => {
  for (const mode of ["before-join", "after-destroy"]) {
    it(`${mode}: the waiting rank fails at once with a RankFailedError naming it (not at its 120 s timeout), and the launcher says so`, async () => {
      const job = await runJob(2, "early_exit.ts", [mode], { timeoutMs: 30_000 });
      outputs.push(job.out);
      expect(job.code, job.stderr).toBe(1);
      const [report] = readRankResults<{ name: string; rank: number | null; message: string }>(job.out, 1);
      expect(report).toMatchObject({ name: "RankFailedError", rank: 1 });
      expect(report.message).toMatch(/rank 1 exited \(with code 0\) without taking part/);
      expect(job.stderr).toMatch(/blocksparse-run: the job failed: rank 0 exited with code 1 \(before it, rank 1 exited with code 0\)/);
    });
  }
});
