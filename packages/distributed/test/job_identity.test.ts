import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ValueError } from "@blocksparse/core";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { Rendezvous, StoreError, StoreJobMismatchError, StoreProtocolError, StoreTimeoutError, TcpStore, TcpStoreServer } from "../src/index";
import { launch, parseLauncherArgs } from "../src/launcher";
import { encodeFrame, type Frame, FrameReader, STORE_PROTOCOL_VERSION } from "../src/wire";
import { freePort, removeOutput, runNode, runRanks } from "./helpers";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
const outputs: string[] = [];
afterAll(() => outputs.forEach(removeOutput));

/** Rejects if `promise` has not settled after `ms`: a regression that waits forever fails instead of hanging the run. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function listen(jobId?: string): Promise<TcpStoreServer> {
  const server = await TcpStoreServer.listen("127.0.0.1", 0, { jobId });
  cleanups.push(() => server.close());
  return server;
}

const env = (rank: number, worldSize: number, masterPort: number, extra: { jobId?: string; launcherStore?: boolean } = {}) => ({
  rank,
  worldSize,
  localRank: rank,
  localWorldSize: worldSize,
  masterAddr: "127.0.0.1",
  masterPort,
  launcherStore: extra.launcherStore ?? true,
  ...(extra.jobId === undefined ? {} : { jobId: extra.jobId }),
});

/** A TCP server on 127.0.0.1 whose peer handler gets every frame (or, with `raw`, every chunk): a store of another version, or another service. */
async function peerServer(onFrame: (socket: Socket, frame: Frame) => void, raw?: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => socket.destroy());
    if (raw !== undefined) return raw(socket);
    const reader = new FrameReader();
    socket.on("data", (chunk: Buffer) => {
      for (const frame of reader.push(chunk)) onFrame(socket, frame);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as { port: number }).port;
}

/** Sends `headers` as frames on a fresh connection and collects the answers until the store closes it (or `ms` pass). */
function rawExchange(port: number, headers: Record<string, unknown>[], ms = 2000): Promise<{ answers: Record<string, unknown>[]; closedByStore: boolean }> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    const reader = new FrameReader();
    const answers: Record<string, unknown>[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ answers, closedByStore: false });
    }, ms);
    socket.on("connect", () => {
      for (const header of headers) for (const part of encodeFrame(header)) socket.write(part);
    });
    socket.on("data", (chunk: Buffer) => answers.push(...reader.push(chunk).map((frame) => frame.header)));
    socket.on("error", () => {});
    socket.on("end", () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ answers, closedByStore: true });
    });
  });
}

describe("the store's handshake: one job per store", () => {
  it("a rank of another job that reaches a running store gets a StoreJobMismatchError naming the port, and does not take a rank of that job", async () => {
    const server = await listen("job-a");
    const port = server.port;
    const rank0 = Rendezvous.join(env(0, 2, port, { jobId: "job-a" }), { timeoutMs: 10_000 });
    const stranger = Rendezvous.join(env(1, 2, port, { jobId: "job-b" }), { timeoutMs: 10_000 });
    const error = await within(stranger, 5000).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StoreJobMismatchError);
    expect(error).toBeInstanceOf(StoreError);
    expect(error).toMatchObject({ name: "StoreJobMismatchError", host: "127.0.0.1", port, jobId: "job-b", storeJobId: "job-a" });
    expect((error as Error).message).toMatch(
      new RegExp(`^another job's store answered at 127\\.0\\.0\\.1:${port}: it serves job 'job-a', and this rank belongs to job 'job-b' \\(BLOCKSPARSE_JOB_ID\\)\\. Two jobs were given port ${port}; .*set MASTER_PORT \\(blocksparse-run --master-port\\) to a free one`),
    );
    // Rank 1 is still free: the job's own rank 1 joins (it used to be "RANK=1 is used by two processes").
    const [a0, a1] = await within(Promise.all([rank0, Rendezvous.join(env(1, 2, port, { jobId: "job-a" }), { timeoutMs: 10_000 })]), 5000);
    await within(Promise.all([a0.shutdown(), a1.shutdown()]), 5000);
  });

  it("ranks started by hand share a default job id made of WORLD_SIZE: a rank of a job of another size is refused", async () => {
    const port = await freePort();
    const rank0 = Rendezvous.join(env(0, 2, port, { launcherStore: false }), { timeoutMs: 10_000 });
    cleanups.push(async () => (await rank0.catch(() => null))?.close());
    await new Promise((resolve) => setTimeout(resolve, 100));
    await expect(within(Rendezvous.join(env(1, 3, port, { launcherStore: false }), { timeoutMs: 10_000 }), 5000)).rejects.toMatchObject({
      name: "StoreJobMismatchError",
      jobId: "default-world-3",
      storeJobId: "default-world-2",
    });
    const rank1 = await within(Rendezvous.join(env(1, 2, port, { launcherStore: false }), { timeoutMs: 10_000 }), 5000);
    await within(Promise.all([rank0.then((r) => r.shutdown()), rank1.shutdown()]), 5000);
  });

  it("a store or a connection given no job id takes any (the low-level API), and bad job ids are refused before connecting", async () => {
    const anyJob = await listen();
    const store = await TcpStore.connect("127.0.0.1", anyJob.port, { timeoutMs: 5000, jobId: "whatever" });
    cleanups.push(() => store.close());
    expect(await store.add("n", 1)).toBe(1);
    const jobA = await listen("job-a");
    const plain = await TcpStore.connect("127.0.0.1", jobA.port, { timeoutMs: 5000 });
    cleanups.push(() => plain.close());
    expect(await plain.add("n", 2)).toBe(2);
    await expect(TcpStore.connect("127.0.0.1", jobA.port, { jobId: "a b" })).rejects.toThrow(ValueError);
    expect(() => TcpStoreServer.listen("127.0.0.1", 0, { jobId: "" })).toThrow(/TcpStoreServer.listen: jobId must be 1 to 256 printable characters/);
  });
});

describe("the store's handshake: protocol versions end in an error, never a hang", () => {
  it("a store of an older version (no hello) answers it as an unknown operation: a StoreProtocolError naming the address", async () => {
    const port = await peerServer((socket, { header }) => {
      for (const part of encodeFrame({ id: header.id, ok: false, error: `unknown operation ${JSON.stringify(header.op)}` })) socket.write(part);
    });
    const connecting = TcpStore.connect("127.0.0.1", port, { timeoutMs: 5000, jobId: "job-a" });
    await expect(within(connecting, 2000)).rejects.toThrow(StoreProtocolError);
    await expect(connecting).rejects.toThrow(
      new RegExp(`the store at 127\\.0\\.0\\.1:${port} speaks another version of the store protocol \\(this rank speaks version ${STORE_PROTOCOL_VERSION} .*; it answered: unknown operation "hello"\\): every rank and the launcher must run the same`),
    );
  });

  it("a store refuses, then closes, a hello of another protocol version, and a client of a version before the hello (its first request answered with an error)", async () => {
    const server = await listen("job-a");
    const newer = await rawExchange(server.port, [{ op: "hello", id: 1, protocol: STORE_PROTOCOL_VERSION + 1, jobId: "job-a" }]);
    expect(newer.closedByStore).toBe(true);
    expect(newer.answers).toEqual([expect.objectContaining({ id: 1, ok: false, reason: "protocol", protocol: STORE_PROTOCOL_VERSION })]);
    const older = await rawExchange(server.port, [
      { op: "add", id: 1, key: "rendezvous/rank/1", delta: 1 },
      { op: "add", id: 2, key: "rendezvous/rank/1", delta: 1 },
    ]);
    expect(older.closedByStore).toBe(true);
    expect(older.answers).toEqual([expect.objectContaining({ id: 1, ok: false, error: expect.stringMatching(/answers a connection only after its hello: the client speaks an older version/) })]);
    // Neither request reached the store's keys.
    const store = await TcpStore.connect("127.0.0.1", server.port, { timeoutMs: 5000, jobId: "job-a" });
    cleanups.push(() => store.close());
    expect(await store.add("rendezvous/rank/1", 1)).toBe(1);
  });

  it("a request whose refusal would echo a field too long for a frame drops that connection alone: the process hosting the store goes on serving", async () => {
    const server = await listen("job-a");
    // Each '"' is 2 bytes in the request's header, 4 in the refusal that quotes it: past the 64 KiB a header holds.
    const long = '"'.repeat(30_000);
    const hello = { op: "hello", id: 1, protocol: STORE_PROTOCOL_VERSION, jobId: "job-a" };
    for (const headers of [[{ op: "hello", id: 1, protocol: long }], [hello, { op: long, id: 2 }], [hello, { op: "join", id: 2, rank: long }]]) {
      const refused = await rawExchange(server.port, headers);
      expect(refused.answers.filter((answer) => answer.id === 2 || answer.ok === false)).toEqual([]);
    }
    const store = await TcpStore.connect("127.0.0.1", server.port, { timeoutMs: 5000, jobId: "job-a" });
    cleanups.push(() => store.close());
    await store.set("still", new Uint8Array([7]));
    expect(Array.from(await store.get("still", 5000))).toEqual([7]);
  });

  it("a service that is not a store (an HTTP server) fails the connect at once with a StoreProtocolError, not at the timeout", async () => {
    const port = await peerServer(
      () => {},
      (socket) => socket.once("data", () => socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")),
    );
    const connecting = TcpStore.connect("127.0.0.1", port, { timeoutMs: 20_000 });
    await expect(within(connecting, 2000)).rejects.toThrow(StoreProtocolError);
    await expect(connecting).rejects.toThrow(new RegExp(`the peer at 127\\.0\\.0\\.1:${port} does not speak the store's protocol .*is another service listening on port ${port}\\?`));
  });

  it("a peer that accepts and closes at once fails the connect at once with a StoreError saying so", async () => {
    const port = await peerServer(
      () => {},
      (socket) => socket.once("data", () => socket.end()),
    );
    const connecting = TcpStore.connect("127.0.0.1", port, { timeoutMs: 20_000, hostRank: 0 });
    const error = await within(connecting, 2000).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StoreError);
    expect(error).not.toBeInstanceOf(StoreTimeoutError);
    expect((error as Error).message).toMatch(new RegExp(`the store at 127\\.0\\.0\\.1:${port} closed the connection during the handshake`));
  });
});

describe("blocksparse-run gives each job an id", () => {
  it("parses --job-id; launch refuses one with spaces before starting any rank", async () => {
    expect(parseLauncherArgs(["--nproc-per-node", "2", "--job-id", "run-7", "train.js"])).toMatchObject({ jobId: "run-7", script: "train.js" });
    await expect(launch({ nprocPerNode: 1, script: "does-not-exist.js", nodeOptions: [], log: () => {}, jobId: "run 7" })).rejects.toThrow(
      /blocksparse-run: --job-id must be 1 to 256 printable characters without spaces, got "run 7"/,
    );
  });

  it("two jobs on one port: the running job is untouched, the second's launcher and hand-started ranks fail naming the port, rank 1 with a StoreJobMismatchError", async () => {
    const port = await freePort();
    const outA = mkdtempSync(join(tmpdir(), "blocksparse-distributed-"));
    outputs.push(outA);
    const jobA = runNode(["--import", "tsx", "src/cli.ts", "--nproc-per-node", "2", "--master-port", String(port), join("test", "children", "job_identity.ts"), outA, "hold"]);
    const ready = [0, 1].map((rank) => join(outA, `ready${rank}.json`));
    const deadline = Date.now() + 30_000;
    while (!ready.every((file) => existsSync(file)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    const [idA, idA1] = ready.map((file) => (JSON.parse(readFileSync(file, "utf8")) as { jobId: string }).jobId);
    // A random id per launch, the same on every rank.
    expect(idA).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(idA1).toBe(idA);

    // A second launcher on the port cannot host its store.
    const launcherB = await runNode(["--import", "tsx", "src/cli.ts", "--nproc-per-node", "2", "--master-port", String(port), "x.js"]);
    expect(launcherB.code).toBe(2);
    expect(launcherB.stderr).toMatch(new RegExp(`the store could not listen on 127\\.0\\.0\\.1:${port}: the port is in use, perhaps by another job's store \\(choose another MASTER_PORT\\)`));

    // Ranks started by hand on the port: rank 0 cannot host its store, rank 1 reaches job A's.
    const { out: outB, ranks } = await runRanks(2, "job_identity.ts", ["stranger"], { port, timeoutMs: 30_000 });
    outputs.push(outB);
    expect(ranks.map((rank) => rank.code)).toEqual([1, 1]);
    const [b0, b1] = [0, 1].map((rank) => JSON.parse(readFileSync(join(outB, `rank${rank}.json`), "utf8")) as Record<string, unknown>);
    expect(b0).toMatchObject({ name: "StoreError" });
    expect(b0.message).toMatch(/the port is in use/);
    expect(b1).toMatchObject({ name: "StoreJobMismatchError", port, jobId: "default-world-2", storeJobId: idA });
    expect(b1.message).toMatch(new RegExp(`another job's store answered at 127\\.0\\.0\\.1:${port}`));

    writeFileSync(join(outA, "release"), "");
    const resultA = await jobA;
    expect(resultA.code, resultA.stderr).toBe(0);
    for (const rank of [0, 1]) expect(JSON.parse(readFileSync(join(outA, `done${rank}.json`), "utf8"))).toEqual({ sum: 3 });
  });
});
