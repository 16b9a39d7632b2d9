/**
 * The rendezvous store: a small key/value server (run by rank 0, or by the launcher) that every
 * rank reaches over TCP. Ranks publish and fetch bytes under string keys; `get` waits until the
 * key exists. A value set with `reads: n` is dropped after n gets, so data exchanged through the
 * store does not pile up over a long run.
 *
 * A connection may say which rank it belongs to (`join`). If it closes before that rank said it is
 * leaving (`leave`: the end of an orderly shutdown), the rank is gone (it exited, threw, crashed or
 * was killed): every get that waits, now or later, fails at once naming it, since a collective
 * needs every rank and would otherwise wait until its timeout.
 *
 * Every connection opens with a hello naming the protocol version and the client's job: a store
 * answers nothing else before it, and refuses (then closes) a client of another version or,
 * when both name one, of another job. Two jobs given the same port on one host thus fail with a
 * StoreJobMismatchError instead of mixing their ranks.
 */
import { createServer, isIPv4, isIPv6, type Server, type Socket, connect as connectSocket } from "node:net";
import { optionsArg, ValueError } from "@blocksparse/core";
import { isJobId, JOB_ID_RULE } from "./env";
import { RankFailedError, StoreError, StoreJobMismatchError, StoreProtocolError, StoreTimeoutError } from "./errors";
import { encodeFrame, type Frame, FrameReader, MAX_HEADER_BYTES, STORE_PROTOCOL_VERSION, wireLimits } from "./wire";

interface StoredValue {
  value: Uint8Array;
  /** Gets left before the value is dropped (null: kept until the store closes). */
  readsLeft: number | null;
}

interface Waiter {
  socket: Socket;
  id: number;
}

function send(socket: Socket, header: Record<string, unknown>, payload?: Uint8Array): void {
  // writableEnded: a connection refused at its hello gets nothing after the refusal.
  if (socket.destroyed || socket.writableEnded) return;
  for (const part of encodeFrame(header, payload)) socket.write(part);
}

export interface StoreListenOptions {
  /**
   * The job this store serves: a client naming another job is refused with a
   * StoreJobMismatchError. Without it, the store takes clients of any job.
   */
  jobId?: string;
}

/** The server side: holds the keys in memory for as long as it runs. */
export class TcpStoreServer {
  readonly #server: Server;
  readonly #jobId: string | undefined;
  /** Connections whose hello was accepted: the only ones whose requests are answered. */
  readonly #greeted = new WeakSet<Socket>();
  readonly #values = new Map<string, StoredValue>();
  readonly #counters = new Map<string, number>();
  readonly #waiters = new Map<string, Waiter[]>();
  readonly #sockets = new Set<Socket>();
  /** The rank each joined connection belongs to, until it leaves. */
  readonly #members = new Map<Socket, number>();
  /** The first rank whose connection closed before it left, and why. */
  #lostRank: { rank: number; reason: string } | null = null;

  private constructor(server: Server, jobId: string | undefined) {
    this.#server = server;
    this.#jobId = jobId;
    // The store lives as long as its host wants it: it never keeps the process alive by itself.
    server.unref();
    server.on("connection", (socket) => this.#serve(socket));
  }

  /** Listens on host:port (port 0 picks a free port; read it from `port`), for the job `options.jobId` if given. */
  static listen(host: string, port: number, options: StoreListenOptions = {}): Promise<TcpStoreServer> {
    if (typeof host !== "string" || host === "") throw new ValueError(`TcpStoreServer.listen: host must be a host name or address, got ${String(host)}`);
    return TcpStoreServer.#open(host, hostAndPort(host, port), port, options);
  }

  /**
   * @internal The store of a job whose ranks connect to `masterAddr`: listening on that address when it is a loopback
   * one (a job of one host), else on every interface, as torch's TCPStore does. The name given as MASTER_ADDR may
   * resolve on node 0 itself to another address than the other hosts reach it by (a host name that /etc/hosts maps
   * to 127.0.1.1, a cluster service's address): a store listening there alone would leave the other hosts' ranks
   * retrying until their timeout.
   */
  static listenForJob(masterAddr: string, port: number, options: StoreListenOptions = {}): Promise<TcpStoreServer> {
    if (isLoopback(masterAddr)) return TcpStoreServer.listen(masterAddr, port, options);
    return TcpStoreServer.#open(undefined, `port ${port} of every interface (MASTER_ADDR ${masterAddr})`, port, options);
  }

  static #open(host: string | undefined, where: string, port: number, options: StoreListenOptions): Promise<TcpStoreServer> {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ValueError(`TcpStoreServer.listen: port must be in [0, 65535], got ${String(port)}`);
    options = optionsArg("TcpStoreServer.listen", options, ["jobId"]);
    if (options.jobId !== undefined && !isJobId(options.jobId)) {
      throw new ValueError(`TcpStoreServer.listen: jobId must be ${JOB_ID_RULE}, got ${JSON.stringify(options.jobId)}`);
    }
    const server = createServer({ noDelay: true });
    return new Promise((resolve, reject) => {
      server.once("error", (error: NodeJS.ErrnoException) => {
        reject(new StoreError(`the store could not listen on ${where}: ${error.code === "EADDRINUSE" ? "the port is in use, perhaps by another job's store (choose another MASTER_PORT)" : error.message}`));
      });
      // Without a host, Node listens on every interface (IPv6 and IPv4, or IPv4 alone where IPv6 is off).
      server.listen(port, host, () => resolve(new TcpStoreServer(server, options.jobId)));
    });
  }

  /** The port it listens on. */
  get port(): number {
    const address = this.#server.address();
    return typeof address === "object" && address !== null ? address.port : 0;
  }

  /** Stops listening and drops every connection. */
  close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #serve(socket: Socket): void {
    this.#sockets.add(socket);
    socket.unref();
    const reader = new FrameReader();
    socket.on("data", (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      try {
        for (const frame of frames) this.#handle(socket, frame);
      } catch {
        // A request it cannot answer (an error echoing a field too long for a frame) drops its connection, as bytes that
        // are not frames do: thrown here, it ended the process hosting the store, and with it the job.
        socket.destroy();
      }
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      this.#sockets.delete(socket);
      for (const [key, waiters] of this.#waiters) {
        const left = waiters.filter((w) => w.socket !== socket);
        if (left.length === 0) this.#waiters.delete(key);
        else this.#waiters.set(key, left);
      }
      const rank = this.#members.get(socket);
      if (rank !== undefined) {
        this.#members.delete(socket);
        this.#rankLost(rank);
      }
    });
  }

  /** The number of keys the store holds (values and counters), as torch's `Store.num_keys()`. */
  numKeys(): number {
    return this.#values.size + this.#counters.size;
  }

  /**
   * @internal The launcher saw rank `rank`'s process exit (with `code`, 0 included). A rank that is not joined now (it
   * never joined, or it destroyed its group and left) has no connection whose closing would tell the store: from now
   * on every get that waits, now or later, fails at once with a RankFailedError naming it, since the rendezvous or
   * collective it waits in needs every rank. A joined rank is left to its connection's closing, which says the same.
   */
  rankExited(rank: number, code: number | string): void {
    if ([...this.#members.values()].includes(rank)) return;
    this.#rankLost(rank, `rank ${rank} exited (${typeof code === "number" ? `with code ${code}` : `killed by ${code}`}) without taking part: it never joined this process group, or it destroyed its group and left, so no rendezvous or collective waiting for it can complete`);
  }

  /** Records the first rank lost and fails every waiting get with it: the ranks still waiting cannot complete. */
  #rankLost(rank: number, reason = `rank ${rank} is gone: its connection to the store closed before it destroyed its process group (it exited, threw, crashed or was killed)`): void {
    if (this.#lostRank !== null) return;
    this.#lostRank = { rank, reason };
    const waiters = [...this.#waiters.values()].flat();
    this.#waiters.clear();
    for (const waiter of waiters) this.#refuseGet(waiter);
    // Every connection learns it too (id 0 answers no request), before a rank that fails on it can exit: a rank whose
    // next request then finds the store closed (its host was that rank) is told which rank the job lost.
    for (const socket of this.#sockets) send(socket, { id: 0, ok: false, error: this.#lostRank.reason, lostRank: rank });
  }

  #refuseGet({ socket, id }: Waiter): void {
    const lost = this.#lostRank as { rank: number; reason: string };
    send(socket, { id, ok: false, error: lost.reason, lostRank: lost.rank });
  }

  /** Answers a hello: accepted when the client speaks this protocol version and, if both name one, belongs to this store's job. */
  #hello(socket: Socket, id: number, header: Record<string, unknown>): void {
    const refuse = (reason: "protocol" | "job", error: string) => {
      send(socket, { id, ok: false, protocol: STORE_PROTOCOL_VERSION, reason, jobId: this.#jobId ?? null, error });
      // Ended, not destroyed: the refusal is flushed first. Nothing it sends after this is read.
      socket.end();
    };
    if (header.protocol !== STORE_PROTOCOL_VERSION) {
      refuse("protocol", `this store speaks protocol version ${STORE_PROTOCOL_VERSION}, the client ${JSON.stringify(header.protocol ?? null)}`);
      return;
    }
    const jobId = header.jobId;
    if (jobId !== undefined && jobId !== null && !isJobId(jobId)) {
      refuse("protocol", `hello: jobId must be ${JOB_ID_RULE}, got ${JSON.stringify(jobId)}`);
      return;
    }
    if (this.#jobId !== undefined && typeof jobId === "string" && jobId !== this.#jobId) {
      refuse("job", `this store serves job '${this.#jobId}', not job '${jobId}'`);
      return;
    }
    this.#greeted.add(socket);
    send(socket, { id, ok: true, protocol: STORE_PROTOCOL_VERSION, jobId: this.#jobId ?? null });
  }

  #handle(socket: Socket, { header, payload }: Frame): void {
    // A connection refused at its hello: what it still sends is not read.
    if (socket.writableEnded) return;
    const id = Number(header.id);
    const key = String(header.key);
    if (header.op === "hello") {
      this.#hello(socket, id, header);
      return;
    }
    if (!this.#greeted.has(socket)) {
      // A client of a version before the hello: refused in words, not served under rules it does not know.
      send(socket, { id, ok: false, error: `this store (protocol version ${STORE_PROTOCOL_VERSION}) answers a connection only after its hello: the client speaks an older version of the store protocol` });
      socket.end();
      return;
    }
    switch (header.op) {
      case "set": {
        const reads = header.reads === undefined ? null : Number(header.reads);
        this.#values.set(key, { value: payload, readsLeft: reads });
        send(socket, { id, ok: true });
        const waiters = this.#waiters.get(key) ?? [];
        this.#waiters.delete(key);
        for (const waiter of waiters) this.#answerGet(waiter, key);
        return;
      }
      case "get":
        if (this.#values.has(key)) this.#answerGet({ socket, id }, key);
        else if (this.#lostRank !== null) this.#refuseGet({ socket, id });
        else this.#waiters.set(key, [...(this.#waiters.get(key) ?? []), { socket, id }]);
        return;
      case "join": {
        const rank = Number(header.rank);
        if (!Number.isSafeInteger(rank) || rank < 0) {
          send(socket, { id, ok: false, error: `join: rank must be a non-negative integer, got ${JSON.stringify(header.rank)}` });
          return;
        }
        this.#members.set(socket, rank);
        send(socket, { id, ok: true });
        return;
      }
      case "leave":
        this.#members.delete(socket);
        send(socket, { id, ok: true });
        return;
      case "delete":
      {
        const deletedValue = this.#values.delete(key);
        const deletedCounter = this.#counters.delete(key);
        send(socket, { id, ok: true, deleted: deletedValue || deletedCounter });
        return;
      }
      case "add": {
        const value = (this.#counters.get(key) ?? 0) + Number(header.delta);
        this.#counters.set(key, value);
        send(socket, { id, ok: true, value });
        return;
      }
      default:
        send(socket, { id, ok: false, error: `unknown operation ${JSON.stringify(header.op)}` });
    }
  }

  #answerGet(waiter: Waiter, key: string): void {
    const stored = this.#values.get(key);
    if (stored === undefined) {
      // An earlier waiter took the last read: this one waits for the next set (none may come once a rank is gone).
      if (this.#lostRank !== null) this.#refuseGet(waiter);
      else this.#waiters.set(key, [...(this.#waiters.get(key) ?? []), waiter]);
      return;
    }
    send(waiter.socket, { id: waiter.id, ok: true }, stored.value);
    if (stored.readsLeft !== null && --stored.readsLeft <= 0) this.#values.delete(key);
  }
}

/** The longest delay Node's timers take (about 24.8 days); a longer one would fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
  what: string;
  /** Resolve with the answer even when it is a refusal (the hello reads the refusal's fields). */
  raw: boolean;
}

export interface StoreConnectOptions {
  /** How long to keep trying while the server is not up yet (default 60 s), or what is left of a longer wait. */
  timeoutMs?: StoreTimeout;
  /**
   * The rank whose process hosts the store (rank 0 when no launcher hosts it): when the store then
   * closes the connection, its requests fail with a RankFailedError naming that rank, since the
   * store closing means its host is gone.
   */
  hostRank?: number;
  /**
   * The job this connection belongs to, sent in the hello: a store serving another job refuses it
   * with a StoreJobMismatchError (no request of it reaches that store). Without it, any store takes it.
   */
  jobId?: string;
}

/**
 * How long a store request may wait: milliseconds from now, or the part left of an overall
 * timeout (`deadline` a Date.now() time; `timeoutMs`, the whole, is what the error names).
 */
export type StoreTimeout = number | { timeoutMs: number; deadline: number };

/** The deadline and the timeout to name of a StoreTimeout. */
function resolveTimeout(timeout: StoreTimeout): { timeoutMs: number; deadline: number } {
  return typeof timeout === "number" ? { timeoutMs: timeout, deadline: Date.now() + timeout } : timeout;
}

function checkTimeout(where: string, timeout: StoreTimeout | undefined): void {
  const ms = typeof timeout === "object" && timeout !== null ? timeout.timeoutMs : timeout;
  const valid = timeout === undefined || (typeof ms === "number" && ms > 0 && (typeof timeout === "number" || Number.isFinite(timeout?.deadline)));
  if (!valid) throw new ValueError(`TcpStore.${where}: timeoutMs must be a positive number of milliseconds, got ${String(ms)}`);
}

/** Keys travel in a frame's header; this leaves the rest of the header room. */
const MAX_KEY_BYTES = MAX_HEADER_BYTES / 2;

/** One TCP connection attempt, given up (the socket destroyed) after `waitMs`. */
function connectOnce(host: string, port: number, waitMs: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = connectSocket({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("the connection attempt did not complete in time"));
    }, Math.min(Math.max(waitMs, 1), MAX_TIMER_MS));
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      // TCP's simultaneous open: with nothing listening yet, a local port picked equal to the store's connects to itself.
      if (socket.localPort === socket.remotePort && socket.localAddress === socket.remoteAddress) {
        socket.destroy();
        reject(new Error("the connection reached itself: nothing listens on the port yet"));
        return;
      }
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
  });
}

/** A connection to the store. Requests may overlap; each resolves with its own answer. */
export class TcpStore {
  readonly host: string;
  readonly port: number;
  readonly #socket: Socket;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closedReason: string | null = null;
  readonly #hostRank: number | undefined;
  // Set when the store end closed the connection (not this side's close): its host is gone.
  #storeClosed = false;
  // The rank the store said the job lost (its frame of id 0), if it did.
  #lostRank: { rank: number; reason: string } | null = null;
  // Set when the peer sent bytes that are not this protocol's frames.
  #malformed = false;

  private constructor(socket: Socket, host: string, port: number, hostRank: number | undefined) {
    this.#socket = socket;
    this.host = host;
    this.port = port;
    this.#hostRank = hostRank;
    const reader = new FrameReader();
    socket.on("data", (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(chunk);
      } catch (error) {
        this.#malformed = true;
        this.#fail(`the store at ${hostAndPort(host, port)} sent a malformed answer (${(error as Error).message})`);
        socket.destroy();
        return;
      }
      for (const frame of frames) {
        if (Number(frame.header.id) === 0 && typeof frame.header.lostRank === "number") {
          this.#lostRank ??= { rank: frame.header.lostRank, reason: String(frame.header.error) };
          continue;
        }
        const pending = this.#pending.get(Number(frame.header.id));
        if (pending === undefined) continue;
        this.#pending.delete(Number(frame.header.id));
        if (this.#pending.size === 0) socket.unref();
        clearTimeout(pending.timer);
        const lostRank = frame.header.lostRank;
        if (frame.header.ok === true || pending.raw) pending.resolve(frame);
        else if (typeof lostRank === "number") pending.reject(new RankFailedError(lostRank, `store ${pending.what}: ${String(frame.header.error)}`));
        else pending.reject(new StoreError(`store ${pending.what}: ${String(frame.header.error)}`));
      }
    });
    // An idle connection does not keep the process alive; a pending request does.
    socket.unref();
    const closed = `the store at ${hostAndPort(host, port)} closed the connection (the process hosting it, rank 0 or the launcher, may have exited)`;
    socket.on("error", (error: NodeJS.ErrnoException) => {
      const reset = error.code === "ECONNRESET" || error.code === "EPIPE";
      this.#fail(reset ? closed : `the connection to the store at ${hostAndPort(host, port)} failed: ${error.message}`, reset);
    });
    socket.on("close", () => this.#fail(closed, true));
  }

  /**
   * Connects to host:port, retrying while the server is not listening yet; a StoreTimeoutError
   * once `timeoutMs` has passed, however long a single attempt (or name lookup) would take.
   */
  static async connect(host: string, port: number, options: StoreConnectOptions = {}): Promise<TcpStore> {
    if (typeof host !== "string" || host === "") throw new ValueError(`TcpStore.connect: host must be a host name or address, got ${String(host)}`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ValueError(`TcpStore.connect: port must be in [1, 65535], got ${String(port)}`);
    options = optionsArg("TcpStore.connect", options, ["timeoutMs", "hostRank", "jobId"]);
    if (options.hostRank !== undefined && !(Number.isSafeInteger(options.hostRank) && options.hostRank >= 0)) {
      throw new ValueError(`TcpStore.connect: hostRank must be a non-negative integer, got ${String(options.hostRank)}`);
    }
    if (options.jobId !== undefined && !isJobId(options.jobId)) {
      throw new ValueError(`TcpStore.connect: jobId must be ${JOB_ID_RULE}, got ${JSON.stringify(options.jobId)}`);
    }
    checkTimeout("connect", options.timeoutMs);
    const { timeoutMs, deadline } = resolveTimeout(options.timeoutMs ?? 60_000);
    let last = "no attempt started before the deadline";
    for (let left = deadline - Date.now(); left > 0; left = deadline - Date.now()) {
      let socket: Socket;
      try {
        socket = await connectOnce(host, port, left);
      } catch (error) {
        last = (error as Error).message;
        const pause = Math.min(100, deadline - Date.now());
        if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
        continue;
      }
      // Connected: the hello decides, within what is left of the same timeout; a refusal is not retried.
      const store = new TcpStore(socket, host, port, options.hostRank);
      await store.#hello(options.jobId, { timeoutMs, deadline });
      return store;
    }
    throw new StoreTimeoutError(`could not reach the store at ${hostAndPort(host, port)} within ${timeoutMs / 1000} s (last error: ${last}); is rank 0 running, and are MASTER_ADDR and MASTER_PORT the same on every rank?`);
  }

  /**
   * Stores `value` under `key` (replacing any); with `reads`, it is dropped after that many gets.
   * A value larger than one frame holds (4 GiB - 1) is a ValueError before anything is sent; with
   * `timeoutMs`, a StoreTimeoutError when the store does not answer in time.
   */
  async set(key: string, value: Uint8Array, options: { reads?: number; timeoutMs?: StoreTimeout } = {}): Promise<void> {
    checkKey("set", key);
    // Unknown names refused, as connect's: `{ read: 1 }` kept the value until the store closed, `{ timeout }` waited forever.
    options = optionsArg("TcpStore.set", options, ["reads", "timeoutMs"]);
    if (!(value instanceof Uint8Array)) throw new ValueError(`TcpStore.set: value must be a Uint8Array, got ${String(value)}`);
    if (value.byteLength > wireLimits.maxPayloadBytes) {
      throw new ValueError(`TcpStore.set '${key}': a value of ${value.byteLength} bytes is more than the store's frame holds (at most ${wireLimits.maxPayloadBytes}); split it over several keys`);
    }
    if (options.reads !== undefined && !(Number.isInteger(options.reads) && options.reads >= 1)) {
      throw new ValueError(`TcpStore.set: reads must be a positive integer, got ${String(options.reads)}`);
    }
    checkTimeout("set", options.timeoutMs);
    await this.#request({ op: "set", key, ...(options.reads === undefined ? {} : { reads: options.reads }) }, value, `set '${key}'`, options.timeoutMs, "the store did not answer");
  }

  /**
   * The value under `key`, waiting until some rank sets it; a StoreTimeoutError after `timeoutMs`
   * (default: wait forever), a RankFailedError at once when a rank that joined is gone. `signal`
   * gives the wait up on this side (a StoreError at once); the store still counts the get among a
   * later set's readers, so give up only gets of keys no one else reads.
   */
  async get(key: string, timeoutMs?: StoreTimeout, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    checkKey("get", key);
    checkTimeout("get", timeoutMs);
    options = optionsArg("TcpStore.get", options, ["signal"]);
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw new ValueError(`TcpStore.get: signal must be an AbortSignal, got ${String(options.signal)}`);
    return (await this.#request({ op: "get", key }, undefined, `get '${key}'`, timeoutMs, "no rank set it", false, options.signal)).payload;
  }

  /**
   * Adds `delta` to the counter `key` (starting from 0) and returns the new value; with `timeoutMs`, a StoreTimeoutError
   * when the store does not answer in time. Counters and values are kept apart: `get(key)` waits for a `set` of the key,
   * not for an `add` (torch's store returns the counter there), so read a counter with `add(key, 0)`.
   */
  async add(key: string, delta: number, options: { timeoutMs?: StoreTimeout } = {}): Promise<number> {
    checkKey("add", key);
    if (!Number.isSafeInteger(delta)) throw new ValueError(`TcpStore.add: delta must be an integer, got ${String(delta)}`);
    options = optionsArg("TcpStore.add", options, ["timeoutMs"]);
    checkTimeout("add", options.timeoutMs);
    return Number((await this.#request({ op: "add", key, delta }, undefined, `add '${key}'`, options.timeoutMs, "the store did not answer")).header.value);
  }

  /**
   * Removes the value or counter under `key`, as torch's `Store.delete_key`: resolves with whether there was one. A get
   * waiting for the key keeps waiting for a later set.
   */
  async deleteKey(key: string, options: { timeoutMs?: StoreTimeout } = {}): Promise<boolean> {
    checkKey("deleteKey", key);
    options = optionsArg("TcpStore.deleteKey", options, ["timeoutMs"]);
    checkTimeout("deleteKey", options.timeoutMs);
    return (await this.#request({ op: "delete", key }, undefined, `delete '${key}'`, options.timeoutMs, "the store did not answer")).header.deleted === true;
  }

  /**
   * Says this connection is rank `rank`'s. If it then closes before `leave`, the store takes the
   * rank for gone: every get that waits, on any connection, fails at once with a RankFailedError
   * naming it.
   */
  async join(rank: number, options: { timeoutMs?: StoreTimeout } = {}): Promise<void> {
    if (!Number.isSafeInteger(rank) || rank < 0) throw new ValueError(`TcpStore.join: rank must be a non-negative integer, got ${String(rank)}`);
    options = optionsArg("TcpStore.join", options, ["timeoutMs"]);
    checkTimeout("join", options.timeoutMs);
    await this.#request({ op: "join", rank }, undefined, `join as rank ${rank}`, options.timeoutMs, "the store did not answer");
  }

  /** Says this connection's rank is leaving in order: closing it afterwards is not a failure. */
  async leave(options: { timeoutMs?: StoreTimeout } = {}): Promise<void> {
    options = optionsArg("TcpStore.leave", options, ["timeoutMs"]);
    checkTimeout("leave", options.timeoutMs);
    await this.#request({ op: "leave" }, undefined, "leave", options.timeoutMs, "the store did not answer");
  }

  /**
   * The connection's first exchange: this side's protocol version and job. On any failure the
   * connection is closed and a typed error thrown: StoreJobMismatchError (another job's store),
   * StoreProtocolError (another version, or not a store), StoreTimeoutError (no answer in time).
   */
  async #hello(jobId: string | undefined, wait: StoreTimeout): Promise<void> {
    const where = hostAndPort(this.host, this.port);
    const speaks = `this rank speaks version ${STORE_PROTOCOL_VERSION} of the store protocol`;
    let answer: Frame;
    try {
      const hello = { op: "hello", protocol: STORE_PROTOCOL_VERSION, ...(jobId === undefined ? {} : { jobId }) };
      answer = await this.#request(hello, undefined, "hello", wait, `the peer at ${where} did not answer the store's handshake`, true);
    } catch (error) {
      this.close();
      if (this.#malformed) {
        throw new StoreProtocolError(`the peer at ${where} does not speak the store's protocol (${speaks}; ${(error as Error).message}): is another service listening on port ${this.port}?`, { cause: error });
      }
      if (error instanceof StoreTimeoutError) throw new StoreTimeoutError(`${error.message}; is another service listening on port ${this.port}?`, { cause: error });
      throw new StoreError(`the store at ${where} closed the connection during the handshake (${(error as Error).message})`, { cause: error });
    }
    const { ok, reason, protocol } = answer.header;
    if (ok === true && protocol === STORE_PROTOCOL_VERSION) return;
    this.close();
    if (reason === "job") {
      const storeJobId = String(answer.header.jobId);
      throw new StoreJobMismatchError(
        this.host,
        this.port,
        String(jobId),
        storeJobId,
        `another job's store answered at ${where}: it serves job '${storeJobId}', and this rank belongs to job '${String(jobId)}' (BLOCKSPARSE_JOB_ID). ` +
          `Two jobs were given port ${this.port}; this rank did not join that store. Give each job its own port: set MASTER_PORT (blocksparse-run --master-port) to a free one, ` +
          "or, on one host, leave --master-port out and blocksparse-run picks a free port; if this rank does belong to that job, start it with that job's BLOCKSPARSE_JOB_ID",
      );
    }
    const said = ok === true ? `it answered with protocol version ${JSON.stringify(protocol ?? null)}` : `it answered: ${String(answer.header.error)}`;
    throw new StoreProtocolError(
      `the store at ${where} speaks another version of the store protocol (${speaks}; ${said}): every rank and the launcher must run the same @blocksparse/distributed version, or another service listens on port ${this.port}`,
    );
  }

  /** Closes the connection; pending requests fail. */
  close(): void {
    this.#fail("the store connection was closed");
    this.#socket.destroy();
  }

  #request(header: Record<string, unknown>, payload: Uint8Array | undefined, what: string, timeout: StoreTimeout | undefined, late: string, raw = false, signal?: AbortSignal): Promise<Frame> {
    if (this.#closedReason !== null) return Promise.reject(this.#closedError(what));
    if (signal?.aborted) return Promise.reject(new StoreError(`store ${what}: given up before it was sent`));
    const id = this.#nextId++;
    // Encoded before anything is registered or sent: a frame too large fails here, leaving the connection as it was.
    const frame = encodeFrame({ ...header, id }, payload);
    const limit = timeout === undefined ? undefined : resolveTimeout(timeout);
    return new Promise<Frame>((resolve, reject) => {
      // Ends the wait on this side: the answer, if one comes, is dropped as one whose request timed out.
      const giveUp = (error: Error) => {
        const pending = this.#pending.get(id);
        if (pending === undefined) return;
        this.#pending.delete(id);
        clearTimeout(pending.timer);
        if (this.#pending.size === 0) this.#socket.unref();
        pending.reject(error);
      };
      const expire = () => giveUp(new StoreTimeoutError(`store ${what}: ${late} within ${(limit as { timeoutMs: number }).timeoutMs / 1000} s`));
      const timer = limit === undefined ? undefined : setTimeout(expire, Math.min(Math.max(limit.deadline - Date.now(), 0), MAX_TIMER_MS));
      const onAbort = () => giveUp(new StoreError(`store ${what}: given up`));
      const settle = <T>(done: (value: T) => void) => (value: T) => {
        signal?.removeEventListener("abort", onAbort);
        done(value);
      };
      this.#pending.set(id, { resolve: settle(resolve), reject: settle(reject), timer, what, raw });
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#socket.ref();
      if (!this.#socket.destroyed) for (const part of frame) this.#socket.write(part);
    });
  }

  #fail(reason: string, byStore = false): void {
    if (this.#closedReason === null) {
      this.#closedReason = reason;
      this.#storeClosed = byStore;
    }
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(this.#closedError(pending.what));
    }
  }

  /** A request's error on a closed connection: a RankFailedError when the store had said which rank the job lost. */
  #closedError(what: string): StoreError | RankFailedError {
    const lost = this.#lostRank;
    if (lost !== null) return new RankFailedError(lost.rank, `store ${what}: ${lost.reason}; then ${this.#closedReason}`);
    if (this.#storeClosed && this.#hostRank !== undefined) {
      const rank = this.#hostRank;
      return new RankFailedError(rank, `store ${what}: rank ${rank} is gone: the store it hosted at ${hostAndPort(this.host, this.port)} closed the connection (rank ${rank} exited, threw, crashed or was killed)`);
    }
    return new StoreError(`store ${what}: ${this.#closedReason}`);
  }
}

function checkKey(where: string, key: unknown): void {
  if (typeof key !== "string" || key === "") throw new ValueError(`TcpStore.${where}: key must be a non-empty string, got ${String(key)}`);
  // A longer header makes the store drop the connection as another protocol, failing every request on it.
  const bytes = Buffer.byteLength(key, "utf8");
  if (bytes > MAX_KEY_BYTES) throw new ValueError(`TcpStore.${where}: a key of ${bytes} bytes is longer than the store takes (at most ${MAX_KEY_BYTES})`);
}

/** `host:port` as an address is written: an IPv6 address in brackets ("[::1]:29500", not "::1:29500", which reads as one address). */
function hostAndPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A loopback host as written: "localhost", an IPv4 address in 127.0.0.0/8, or "::1". */
function isLoopback(host: string): boolean {
  const name = host.toLowerCase();
  return name === "localhost" || name.endsWith(".localhost") || (isIPv4(name) && name.startsWith("127.")) || (isIPv6(name) && /^(0{0,4}:){2,7}0{0,3}1$/.test(name.replace(/^::/, "0::")));
}
