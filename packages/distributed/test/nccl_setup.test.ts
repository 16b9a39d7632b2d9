/**
 * The NCCL group's setup after the rendezvous (the unique id handed out, the communicator created) and its destroy, with
 * the cuda backend replaced by a stand-in NCCL whose calls can be made to fail: a setup or destroy that fails must leave
 * every rank able to call initProcessGroup again, and a rank must not enter ncclCommInitRank (which blocks its thread
 * until every rank has entered it) unless rank 0 is about to.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { DistributedEnv } from "../src/env";
import { DistributedError, NcclError, StoreTimeoutError } from "../src/errors";
import { initProcessGroup } from "../src/init";
import type { NcclProcessGroup } from "../src/nccl_group";
import { Rendezvous } from "../src/rendezvous";
import { TcpStoreServer } from "../src/store";

const nccl = vi.hoisted(() => ({ failUniqueId: 0, failInit: 0, calls: [] as string[], ids: 0, onBackend: [] as (() => void)[] }));

/** The stand-in NCCL: its unique ids are 128 bytes of 1, 2, ... in turn; its communicators are 100 + rank. */
const addon = {
  ncclInfo: () => ({ available: true, library: "a stand-in NCCL" }),
  ncclGetUniqueId: () => {
    if (nccl.failUniqueId > 0) {
      nccl.failUniqueId--;
      throw new Error("unhandled system error");
    }
    return new Uint8Array(128).fill(++nccl.ids);
  },
  ncclCommInitRank: (worldSize: number, uniqueId: Uint8Array, rank: number) => {
    nccl.calls.push(`init rank ${rank} of ${worldSize}, id ${uniqueId[0]}`);
    if (nccl.failInit > 0) {
      nccl.failInit--;
      throw new Error("remote process exited or there was a network error");
    }
    return 100 + rank;
  },
  ncclCommDestroy: (communicator: number) => {
    nccl.calls.push(`destroy ${communicator}`);
  },
};

vi.mock("@blocksparse/backend-cuda", () => ({
  DTYPE_CODE: {},
  NcclReduceOp: {},
  cudaBackend: () => {
    nccl.onBackend.shift()?.();
    return { device: { index: 0 }, addon };
  },
}));

const cleanups: (() => Promise<void> | void)[] = [];
const device = process.env.BLOCKSPARSE_CUDA_DEVICE;
beforeEach(() => {
  // Every rank of these in-process jobs starts CUDA on the stand-in's device 0.
  process.env.BLOCKSPARSE_CUDA_DEVICE = "0";
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  if (device === undefined) delete process.env.BLOCKSPARSE_CUDA_DEVICE;
  else process.env.BLOCKSPARSE_CUDA_DEVICE = device;
  Object.assign(nccl, { failUniqueId: 0, failInit: 0, calls: [], ids: 0, onBackend: [] });
});

function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms))]);
}

async function launcherStore(): Promise<{ server: TcpStoreServer; env: (rank: number) => DistributedEnv }> {
  const server = await TcpStoreServer.listen("127.0.0.1", 0);
  cleanups.push(() => server.close());
  const env = (rank: number) => ({ rank, worldSize: 2, localRank: rank, localWorldSize: 2, masterAddr: "127.0.0.1", masterPort: server.port, launcherStore: true });
  return { server, env };
}

/**
 * Starts each rank's call once the rank before it has started its backend (or failed first): of two imports of a mocked
 * module made at the same moment, vitest hands the stand-in to one only, and the real cuda backend to the other.
 */
async function inTurn<T>(ranks: readonly number[], start: (rank: number) => Promise<T>): Promise<Promise<T>[]> {
  const calls: Promise<T>[] = [];
  for (const rank of ranks) {
    const started = new Promise<void>((done) => nccl.onBackend.push(done));
    const call = start(rank);
    calls.push(call);
    const settled = call.then(
      () => {},
      () => {},
    );
    await Promise.race([started, settled]);
  }
  return calls;
}

const ncclGroups = async (env: (rank: number) => DistributedEnv, timeoutMs = 5000) =>
  Promise.allSettled(await inTurn([0, 1], (rank) => initProcessGroup({ backend: "nccl", env: env(rank), timeoutMs }) as Promise<NcclProcessGroup>));

describe("an NCCL group whose setup fails after the rendezvous", () => {
  it("ncclGetUniqueId failing on rank 0 fails every rank at once (rank 1 naming rank 0's error), and every rank can call initProcessGroup again", async () => {
    const { env } = await launcherStore();
    nccl.failUniqueId = 1;
    const started = Date.now();
    const [zero, one] = await within(ncclGroups(env), 4000);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(zero.status === "rejected" && zero.reason).toBeInstanceOf(NcclError);
    expect(zero.status === "rejected" && (zero.reason as Error).message).toBe("ncclGetUniqueId: unhandled system error");
    expect(one.status === "rejected" && one.reason).toBeInstanceOf(NcclError);
    expect(one.status === "rejected" && (one.reason as Error).message).toMatch(
      /^initProcessGroup: rank 0 failed in the NCCL group's setup \(NcclError: ncclGetUniqueId: unhandled system error\), so rank 1 gives the setup up too/,
    );
    // The retry used to be "RANK=0 is used by two processes", or a RankFailedError: the store took rank 0 for gone.
    const again = await within(ncclGroups(env), 4000);
    expect(again.map((result) => result.status)).toEqual(["fulfilled", "fulfilled"]);
    const groups = again.map((result) => (result as PromiseFulfilledResult<NcclProcessGroup>).value);
    expect(groups.map((group) => group.communicator)).toEqual([100, 101]);
    await within(Promise.all(groups.map((group) => group.destroy())), 4000);
    expect(nccl.calls.filter((call) => call.startsWith("init")).sort()).toEqual(["init rank 0 of 2, id 1", "init rank 1 of 2, id 1"]);
  });

  it("ncclCommInitRank failing gives the rank back: the ranks form the group again", async () => {
    const { env } = await launcherStore();
    nccl.failInit = 2;
    const failed = await within(ncclGroups(env), 4000);
    for (const result of failed) expect(result.status === "rejected" && (result.reason as Error).message).toMatch(/^ncclCommInitRank \(rank \d of 2, device 0\): remote process exited/);
    const again = await within(ncclGroups(env), 4000);
    expect(again.map((result) => result.status)).toEqual(["fulfilled", "fulfilled"]);
    await within(Promise.all(again.map((result) => (result as PromiseFulfilledResult<NcclProcessGroup>).value.destroy())), 4000);
  });

  it("leaves the store no larger: after three failed setups and one that succeeds it holds as many keys as after one that succeeded at once", async () => {
    const clean = await launcherStore();
    const first = (await within(ncclGroups(clean.env), 4000)).map((result) => (result as PromiseFulfilledResult<NcclProcessGroup>).value);
    const keysOfACleanSetup = clean.server.numKeys();
    await within(Promise.all(first.map((group) => group.destroy())), 4000);

    const { server, env } = await launcherStore();
    for (let round = 0; round < 3; round++) {
      nccl.failUniqueId = 1;
      expect((await within(ncclGroups(env), 4000)).map((result) => result.status)).toEqual(["rejected", "rejected"]);
    }
    const groups = (await within(ncclGroups(env), 4000)).map((result) => (result as PromiseFulfilledResult<NcclProcessGroup>).value);
    // Each failed setup leaves its formation's keys (its attempt number and count) until the next group forms.
    expect(server.numKeys()).toBe(keysOfACleanSetup);
    await within(Promise.all(groups.map((group) => group.destroy())), 4000);
  });

  it("a rank enters ncclCommInitRank only once rank 0 has every receipt: rank 0 timing out on a rank that never took the id fails the others at once, none blocked in NCCL", async () => {
    const server = await TcpStoreServer.listen("127.0.0.1", 0);
    cleanups.push(() => server.close());
    const env = (rank: number) => ({ rank, worldSize: 3, localRank: rank, localWorldSize: 3, masterAddr: "127.0.0.1", masterPort: server.port, launcherStore: true });
    // Rank 2 joins the rendezvous and then never takes part in the setup (its process hangs before it).
    const stuck = Rendezvous.join(env(2), { timeoutMs: 5000 });
    cleanups.push(async () => void (await (await stuck).abort()));
    const setups = await inTurn([0, 1], (rank) => initProcessGroup({ backend: "nccl", env: env(rank), timeoutMs: 500 }).catch((error: unknown) => error));
    const [zero, one] = await within(Promise.all(setups), 4000);
    expect(zero).toBeInstanceOf(StoreTimeoutError);
    expect((zero as Error).message).toMatch(/^initProcessGroup: rank 0 of WORLD_SIZE=3 waited 0\.5 s for rank 2 to receive the NCCL unique id \(/);
    expect(one).toBeInstanceOf(DistributedError);
    expect((one as Error).message).toMatch(/^initProcessGroup: rank 0 failed in the NCCL group's setup \(StoreTimeoutError: initProcessGroup: rank 0 of WORLD_SIZE=3 waited 0\.5 s for rank 2/);
    // Rank 1 had the id: it used to enter ncclCommInitRank on it, there to wait for good for a rank 0 that never came.
    expect(nccl.calls).toEqual([]);
  });
});

describe("a setup word no rank of this version sends", () => {
  it("fails the rank that reads it with a DistributedError naming the peer (a plain Error before), none entering NCCL", async () => {
    const { env } = await launcherStore();
    const one = initProcessGroup({ backend: "nccl", env: env(1), timeoutMs: 2000 }).catch((error: unknown) => error);
    // Rank 0 joins as a rank of another version would, and publishes six bytes where the unique id's word belongs.
    const zero = await Rendezvous.join(env(0), { timeoutMs: 5000 });
    cleanups.push(async () => void (await zero.abort()));
    await zero.publish("nccl/id", new Uint8Array([0, 0, 0, 9, 0, 0]), 1);
    const error = await within(one, 4000);
    expect(error).toBeInstanceOf(DistributedError);
    expect((error as Error).message).toMatch(
      /^initProcessGroup: rank 0 sent a malformed word in the NCCL group's setup \(expected one message of 6 bytes, found none whole\), so rank 1 gives the setup up/,
    );
    expect(nccl.calls).toEqual([]);
  });
});

describe("an NCCL group whose destroy fails", () => {
  it("leaves the job all the same: a timeout naming the rank it waited for, the group destroyed, and initProcessGroup again forms a new one", async () => {
    const { env } = await launcherStore();
    const groups = (await within(ncclGroups(env, 300), 4000)).map((result) => (result as PromiseFulfilledResult<NcclProcessGroup>).value);
    const error = await within(groups[0].destroy(), 4000).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StoreTimeoutError);
    expect((error as Error).message).toMatch(
      /^destroy: rank 0 of WORLD_SIZE=2 waited 0\.3 s for the other ranks to call destroy: .*still waiting for rank 1.*; this rank left the job and gave its rank back: initProcessGroup may be called again/,
    );
    // A peer may still have collectives on the communicator: it is left, and the group says it was destroyed.
    expect(nccl.calls.filter((call) => call.startsWith("destroy"))).toEqual([]);
    await expect(groups[0].destroy()).rejects.toThrow(/^destroy: the NCCL process group was destroyed/);
    // Rank 1 destroys later: rank 0 had said it arrived, and had left rather than gone.
    await within(groups[1].destroy(), 4000);
    const again = (await within(ncclGroups(env, 2000), 4000)).map((result) => (result as PromiseFulfilledResult<NcclProcessGroup>).value);
    await within(Promise.all(again.map((group) => group.destroy())), 4000);
    // Rank 1's first communicator, then both of the new group's.
    expect(nccl.calls.filter((call) => call.startsWith("destroy")).sort()).toEqual(["destroy 100", "destroy 101", "destroy 101"]);
  });
});
