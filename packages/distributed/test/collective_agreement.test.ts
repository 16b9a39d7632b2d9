import { type Tensor, tensor } from "@blocksparse/core";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { CpuProcessGroup } from "../src/cpu_group";
import { CollectiveError } from "../src/errors";
import { Rendezvous } from "../src/rendezvous";
import { TcpStoreServer } from "../src/store";
import { packMessage } from "../src/wire";
import { readRankResults, removeOutput, runJob, type StoreProxy, storeProxy } from "./helpers";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
const outputs: string[] = [];
afterAll(() => outputs.forEach(removeOutput));

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Rejects if `promise` has not settled after `ms`: a regression that waits forever fails instead of hanging the run. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A proxy to the store at `port` (helpers.ts, storeProxy: `cut` stops it both ways), closed after the test. */
async function proxyTo(port: number): Promise<StoreProxy> {
  const proxy = await storeProxy(port);
  cleanups.push(proxy.close);
  return proxy;
}

/** `worldSize` ranks in this process on a store the test hosts (as the launcher does); `throughProxy` ranks reach it through a proxy each. */
async function ranksInProcess(worldSize: number, timeoutMs: number, throughProxy: number[] = []) {
  const server = await TcpStoreServer.listen("127.0.0.1", 0);
  cleanups.push(() => server.close());
  const proxies = new Map<number, Awaited<ReturnType<typeof proxyTo>>>();
  for (const rank of throughProxy) proxies.set(rank, await proxyTo(server.port));
  const env = (rank: number) => ({ rank, worldSize, localRank: rank, localWorldSize: worldSize, masterAddr: "127.0.0.1", masterPort: proxies.get(rank)?.port ?? server.port, launcherStore: true });
  const rendezvous = await within(Promise.all(Array.from({ length: worldSize }, (_, rank) => Rendezvous.join(env(rank), { timeoutMs }))), 10_000);
  cleanups.push(() => Promise.all(rendezvous.map((r) => r.close())).then(() => undefined));
  return { server, proxies, rendezvous, groups: rendezvous.map((r) => new CpuProcessGroup(r)) };
}

type Outcome = { ok: true; result: number[] } | { ok: false; error: unknown };

/** One collective of each kind, on values that depend on the rank: what it leaves on the rank is `result`. */
const COLLECTIVES: Record<string, (group: CpuProcessGroup, rank: number) => Promise<number[]>> = {
  allReduce: async (group, rank) => {
    const values = tensor([rank + 1, 10 * (rank + 1)]);
    await group.allReduce(values).catch((error: unknown) => {
      // A failed allReduce leaves the tensor as it was: the values are part of what the ranks must agree on.
      expect(Array.from(values.dataSync())).toEqual([rank + 1, 10 * (rank + 1)]);
      throw error;
    });
    return Array.from(values.dataSync());
  },
  broadcast: async (group, rank) => {
    const values = tensor([rank + 1, 10 * (rank + 1)]);
    await group.broadcast(values, 0).catch((error: unknown) => {
      expect(Array.from(values.dataSync())).toEqual([rank + 1, 10 * (rank + 1)]);
      throw error;
    });
    return Array.from(values.dataSync());
  },
  allGather: async (group, rank) => {
    const gathered: Tensor = await group.allGather(tensor([rank + 1]));
    return Array.from(gathered.dataSync());
  },
  barrier: async (group) => {
    await group.barrier();
    return [];
  },
};

function settle(promise: Promise<number[]>): Promise<Outcome> {
  return promise.then(
    (result) => ({ ok: true, result }),
    (error: unknown) => ({ ok: false, error }),
  );
}

describe("a collective that times out on some ranks has one outcome on every rank", () => {
  for (const worldSize of [3, 4]) {
    for (const kind of Object.keys(COLLECTIVES)) {
      it(`${worldSize} ranks, ${kind}: the last rank calls it after rank 0 timed out but before the others did; every rank fails it with a CollectiveError, and the next collective pairs up`, async () => {
        const timeoutMs = 600;
        const { server, groups } = await ranksInProcess(worldSize, timeoutMs);
        const last = worldSize - 1;
        const run = COLLECTIVES[kind];
        const outcomes: Promise<Outcome>[] = [];
        outcomes[0] = settle(run(groups[0], 0));
        await sleep(timeoutMs / 2);
        for (let rank = 1; rank < last; rank++) outcomes[rank] = settle(run(groups[rank], rank));
        // Rank 0 has given up when the last rank comes; the ranks between are still within their timeout.
        const first = await within(outcomes[0], 5000);
        expect(first.ok).toBe(false);
        outcomes[last] = settle(run(groups[last], last));
        const settled = await within(Promise.all(outcomes), 10_000);
        settled.forEach((outcome, rank) => {
          expect({ rank, ok: outcome.ok }).toEqual({ rank, ok: false });
          const error = (outcome as { error: unknown }).error;
          expect(error).toBeInstanceOf(CollectiveError);
          // Every rank names the collective and its number; those that did not time out themselves say who gave up and why.
          expect((error as Error).message).toMatch(new RegExp(`^${kind}.*, collective #0 of rank ${rank}: `));
          if (rank !== 0) expect((error as Error).message).toMatch(/rank \d gave up on .*, its collective #0 \(it timed out after 0\.6 s waiting for ranks? [\d, ]*\)|store get 'cpu\/0\/\d': no rank set it within 0\.6 s/);
        });
        expect((settled[last] as { error: Error }).error.message).toMatch(new RegExp(`rank 0 gave up on ${kind}.*its collective #0 \\(it timed out after 0\\.6 s waiting for ranks? [\\d, ]*${last}\\)`));
        // The ranks agree that #0 failed: their next collective is #1 on every rank, and gives the same result everywhere.
        const next = await within(Promise.all(groups.map((group, rank) => settle(COLLECTIVES.allReduce(group, rank)))), 10_000);
        const sum = (worldSize * (worldSize + 1)) / 2;
        for (const outcome of next) expect(outcome).toEqual({ ok: true, result: [sum, 10 * sum] });
        // Nothing of the failed collective is left in the store (values, vote count, outcome): once the groups are
        // destroyed it holds the per-rank join counters alone, as after a clean run.
        await within(Promise.all(groups.map((group) => group.destroy())), 10_000);
        expect(server.numKeys()).toBe(2 * worldSize);
      });
    }
  }

  it("3 ranks: a rank that sent its values and then lost the store (its network cut) does not let the others complete without it: all three fail", async () => {
    const timeoutMs = 500;
    const { server, proxies, groups } = await ranksInProcess(3, timeoutMs, [2]);
    const keys = server.numKeys();
    const outcomes: Promise<Outcome>[] = [];
    outcomes[2] = settle(COLLECTIVES.allReduce(groups[2], 2));
    // Rank 2's values are in the store once the key count grows: then its connection goes dead, both ways.
    while (server.numKeys() === keys) await sleep(5);
    (proxies.get(2) as { cut: () => void }).cut();
    outcomes[0] = settle(COLLECTIVES.allReduce(groups[0], 0));
    outcomes[1] = settle(COLLECTIVES.allReduce(groups[1], 1));
    const settled = await within(Promise.all(outcomes), 10_000);
    settled.forEach((outcome, rank) => {
      expect({ rank, ok: outcome.ok }).toEqual({ rank, ok: false });
      expect((outcome as { error: unknown }).error).toBeInstanceOf(CollectiveError);
    });
    // Ranks 0 and 1 had every value: one of them gave the collective up for both, saying why.
    const messages = [0, 1].map((rank) => ((settled[rank] as { error: Error }).error as Error).message).join("\n");
    expect(messages).toMatch(/had every rank's values, but 1 of the 3 ranks had not finished the collective within 0\.5 s more/);
    // And the next collective of ranks 0 and 1 fails too (rank 2 is cut off) rather than pairing with anything stale.
    const next = await within(Promise.all([0, 1].map((rank) => settle(COLLECTIVES.allReduce(groups[rank], rank)))), 10_000);
    for (const outcome of next) expect(outcome.ok).toBe(false);
  });
});

describe("a rank that cannot learn a collective's outcome", () => {
  it("throws a CollectiveError saying so, and its group is broken: its later collectives fail at once, naming the collective that broke it", async () => {
    const timeoutMs = 400;
    // Ranks 0 and 1 are CPU groups, rank 0's store connection through a proxy; rank 2's part is written by hand.
    const { proxies, groups, rendezvous } = await ranksInProcess(3, timeoutMs, [0]);
    const peer = rendezvous[2];
    const values = [tensor([1, 10]), tensor([2, 20])];
    const outcomes = [0, 1].map((rank) => settle(groups[rank].allReduce(values[rank]).then(() => [])));
    // Rank 2 asks for the outcome, as every rank does first, then sends its values.
    const told = peer.read("cpu/0/outcome");
    await peer.publish("cpu/0", packMessage({ kind: "allReduce", dtype: "float32", shape: [2], op: "sum" }, new Uint8Array(new Float32Array([3, 30]).buffer)), 2);
    // Ranks 0 and 1 have every value and have voted: then rank 0 loses the store (its answers too).
    while ((await peer.count("cpu/0/votes", 0)) < 2) await sleep(5);
    await sleep(100);
    (proxies.get(0) as { cut: () => void }).cut();
    // Rank 2 votes the last: the collective completed, as rank 1 learns.
    expect(await peer.count("cpu/0/votes", 1)).toBe(3);
    await peer.share("cpu/0/outcome", new TextEncoder().encode(JSON.stringify({ ok: true })), 3);
    await told;
    const [zero, one] = await within(Promise.all(outcomes), 10_000);
    expect(one).toEqual({ ok: true, result: [] });
    expect(Array.from(values[1].dataSync())).toEqual([6, 60]);
    // Rank 0 cannot tell: it says so, and does not carry on as if it knew.
    expect(zero.ok).toBe(false);
    const error = (zero as { error: unknown }).error;
    expect(error).toBeInstanceOf(CollectiveError);
    expect((error as Error).message).toMatch(
      /^allReduce \(float32 \[2\], sum\), collective #0 of rank 0: this rank could not learn whether the other ranks completed it \((its vote did not reach the store|the others had not voted within 0\.4 s, and this rank could not reach the store to give it up): .*\), so its tensors may no longer match theirs: the process group of rank 0 is broken, and its later collectives fail at once/,
    );
    expect(Array.from(values[0].dataSync())).toEqual([1, 10]);
    const started = Date.now();
    await expect(groups[0].barrier()).rejects.toThrow(/^barrier: the process group of rank 0 is broken: allReduce \(float32 \[2\], sum\), collective #0 could not be settled: /);
    await expect(groups[0].allReduce(tensor([1]))).rejects.toThrow(CollectiveError);
    await expect(groups[0].allGather(tensor([1]))).rejects.toThrow(/is broken/);
    // At once, not after a timeout.
    expect(Date.now() - started).toBeLessThan(timeoutMs);
  });
});

describe("a collective that times out across processes has one outcome on every rank", () => {
  for (const worldSize of [3, 4]) {
    it(`${worldSize} processes: the last rank calls allReduce after rank 0 timed out but before the others did; every rank fails it, no tensor changes, and the next allReduce gives every rank the same sum`, async () => {
      const timeoutMs = 1500;
      const job = await runJob(worldSize, "late_rank.ts", [String(timeoutMs)], { timeoutMs: 40_000 });
      outputs.push(job.out);
      expect(job.code, job.stderr).toBe(0);
      const results = readRankResults<{ rank: number; first: { ok: boolean; name?: string; message?: string }; after: number[]; second: number }>(job.out, worldSize);
      const sum = (worldSize * (worldSize + 1)) / 2;
      results.forEach((result, rank) => {
        expect({ rank, ok: result.first.ok, name: result.first.name }).toEqual({ rank, ok: false, name: "CollectiveError" });
        expect(result.first.message).toMatch(new RegExp(`^allReduce \\(float32 \\[2\\], sum\\), collective #1 of rank ${rank}: `));
        expect(result.after).toEqual([rank + 1, 10 * (rank + 1)]);
        expect(result.second).toBe(sum);
      });
    });
  }
});
