import { tensor } from "@blocksparse/core";
import { afterEach, describe, expect, it } from "vitest";
import { CpuProcessGroup } from "../src/cpu_group";
import { CollectiveError } from "../src/errors";
import { Rendezvous } from "../src/rendezvous";
import { TcpStoreServer } from "../src/store";
import { packMessage } from "../src/wire";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Rank 0's CPU group and rank 1's bare rendezvous, through which the test writes rank 1's messages by hand. */
async function rankZeroAndAHandWrittenPeer(): Promise<{ group: CpuProcessGroup; peer: Rendezvous }> {
  const server = await TcpStoreServer.listen("127.0.0.1", 0);
  cleanups.push(() => server.close());
  const env = (rank: number) => ({ rank, worldSize: 2, localRank: rank, localWorldSize: 2, masterAddr: "127.0.0.1", masterPort: server.port, launcherStore: true });
  const [zero, one] = await Promise.all([0, 1].map((rank) => Rendezvous.join(env(rank), { timeoutMs: 5000 })));
  cleanups.push(() => Promise.all([zero.close(), one.close()]).then(() => undefined));
  return { group: new CpuProcessGroup(zero), peer: one };
}

describe("a peer's malformed collective message", () => {
  it("is a CollectiveError naming the collective, the peer's rank and what was malformed, never a plain Error, a TypeError or values read short", async () => {
    const { group, peer } = await rankZeroAndAHandWrittenPeer();
    const call = { kind: "allReduce", dtype: "float32", shape: [2], op: "sum" };
    const cases: [Uint8Array, RegExp][] = [
      // Not a frame of this protocol: unpackMessage threw a plain Error.
      [Uint8Array.of(1, 2, 3), /expected one message of 3 bytes, found none whole/],
      // A shape that is not an array: describing the call threw a TypeError.
      [packMessage({ ...call, shape: 2 }, new Uint8Array(8)), /shape 2/],
      // One float32 where two are due: the sum read past the peer's values and gave NaN.
      [packMessage(call, new Uint8Array(4)), /a payload of 4 bytes, expected 8/],
    ];
    for (const [sequence, [bytes, what]] of cases.entries()) {
      const values = tensor([1, 2]);
      const reduced = group.allReduce(values);
      await peer.publish(`cpu/${sequence}`, bytes, 1);
      const error = await reduced.catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(CollectiveError);
      expect((error as Error).message).toMatch(new RegExp(`^allReduce \\(float32 \\[2\\], sum\\), collective #${sequence} of rank 0: rank 1 sent a malformed message \\(`));
      expect((error as Error).message).toMatch(what);
      expect(Array.from(values.dataSync())).toEqual([1, 2]);
    }
  });
});
