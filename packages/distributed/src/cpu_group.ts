import { type BackendValues, type DType, engine, type Tensor, tensorOn } from "@blocksparse/core";
import { CollectiveError, RankFailedError, StoreTimeoutError } from "./errors";
import { checkReduceOp, checkRoot, checkTensor, type ProcessGroup, type ReduceOp } from "./process_group";
import { CollectTimeoutError, explainStoreFailure, type Rendezvous } from "./rendezvous";
import type { StoreTimeout } from "./store";
import { packedBytes, packMessage, unpackMessage, wireLimits } from "./wire";

/** What a rank says it is calling; every rank must say the same for the same collective. */
interface CallDescription {
  kind: "allReduce" | "broadcast" | "allGather" | "barrier" | "destroy";
  dtype?: DType;
  shape?: readonly number[];
  op?: ReduceOp;
  root?: number;
}

/** The header a rank publishes: its call, and how many parts its payload follows in when it is larger than one store value. */
interface CallHeader extends CallDescription {
  parts?: number;
}

/**
 * How long a step of a collective's vote may wait for the store, at most (or timeoutMs where shorter): the vote comes
 * after the exchange, whose timeout may have passed already.
 */
const VOTE_WAIT_MS = 10_000;

/** The longest delay Node's timers take (about 24.8 days); a longer one would fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How collective #n ended, as every rank reads it under `cpu/<n>/outcome`: set once, by the rank whose vote decided it
 * (see `CpuProcessGroup#exchange`), and read once by every rank. `rank` is the rank that gave it up, `call` what it had
 * called, `reason` why (a timeout names the ranks it waited for), `lostRank` a rank the store found gone.
 */
type Outcome = { ok: true } | FailedOutcome;
interface FailedOutcome {
  ok: false;
  rank: number;
  call: string;
  reason: string;
  timedOut: boolean;
  lostRank?: number;
}

/** This rank's read of a collective's outcome, settled: the outcome, or why the read failed (a rank gone, the store closed). */
type Told = { outcome: Outcome } | { error: unknown };

function encodeOutcome(outcome: Outcome): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(outcome));
}

function decodeOutcome(bytes: Uint8Array): Outcome {
  const outcome = JSON.parse(new TextDecoder().decode(bytes)) as Outcome;
  if (outcome.ok === true || (outcome.ok === false && Number.isInteger(outcome.rank) && typeof outcome.reason === "string")) return outcome;
  throw new CollectiveError(`a collective's outcome in the store is malformed: ${JSON.stringify(outcome)}`);
}

/**
 * A collective's vote count as one number: every rank's vote adds 1, and a vote that the collective failed (or a rank
 * that gives it up while waiting for the others' votes) adds worldSize + 1 more, so the count reads as both numbers.
 */
function tally(count: number, worldSize: number): { votes: number; failures: number } {
  return { votes: count % (worldSize + 1), failures: Math.floor(count / (worldSize + 1)) };
}

function ranksOf(ranks: readonly number[]): string {
  return `rank${ranks.length > 1 ? "s" : ""} ${ranks.join(", ")}`;
}

/** `promise`'s value, or null once `ms` have passed first. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), Math.min(Math.max(ms, 0), MAX_TIMER_MS));
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

function describeCall(call: CallDescription): string {
  const parts = [call.dtype === undefined ? "" : `${call.dtype} [${call.shape?.join(", ")}]`, call.op ?? "", call.root === undefined ? "" : `root ${call.root}`].filter(Boolean);
  return parts.length === 0 ? call.kind : `${call.kind} (${parts.join(", ")})`;
}

/** The payload bytes `peer` sends for `call`: its values (allReduce, a float32 or int32 each) or storage (broadcast's root, allGather). */
function payloadBytes(call: CallDescription, peer: number): number {
  const size = (call.shape ?? []).reduce((n, d) => n * d, 1);
  if (call.kind === "allReduce") return size * 4;
  if (call.kind === "allGather" || (call.kind === "broadcast" && call.root === peer)) return size * (call.dtype === "float16" || call.dtype === "bfloat16" ? 2 : 4);
  return 0;
}

function sameCall(a: CallDescription, b: CallDescription): boolean {
  return describeCall(a) === describeCall(b);
}

/** The values of a tensor as summed: float32 for the float dtypes (exact for float16/bfloat16), int32 for int32. */
function valuesOf(tensor: Tensor): Float32Array | Int32Array {
  const values = tensor.dataSync();
  return values instanceof Int32Array ? values : Float32Array.from(values);
}

/**
 * A tensor's storage as it is (float16/bfloat16 as their bits), for the collectives that copy values: widened to float32
 * and narrowed back, a NaN's payload came out with its quiet bit set, so the ranks held different bits.
 */
function storageOf(tensor: Tensor, where: string): BackendValues {
  engine.checkHostTransfer(where);
  return tensor.backend.readSync(tensor.dataId);
}

function bytesOf(values: BackendValues): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function valuesFrom(payload: Uint8Array, dtype: DType): Float32Array | Int32Array {
  return dtype === "int32" ? new Int32Array(payload.buffer, payload.byteOffset, payload.byteLength / 4) : new Float32Array(payload.buffer, payload.byteOffset, payload.byteLength / 4);
}

/** A payload of storageOf's bytes, in the dtype's storage layout. */
function storageFrom(payload: Uint8Array, dtype: DType): BackendValues {
  const { buffer, byteOffset, byteLength } = payload;
  if (dtype === "float16" || dtype === "bfloat16") return new Uint16Array(buffer, byteOffset, byteLength / 2);
  return valuesFrom(payload, dtype);
}

/**
 * float64 values as float32 rounded to odd (an inexact result gets its last bit set): rounding that to a half dtype to
 * nearest even then rounds the float64 value once. Rounded to nearest float32 first, a sum just past a half dtype's
 * tie (1 + 2^-8 + 2^-30 in bfloat16) became the tie itself, and then rounded the wrong way.
 */
function roundToOddFloat32(values: Float64Array): Float32Array {
  const out = new Float32Array(values.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    out[i] = value;
    if (out[i] === value || Number.isNaN(value)) continue;
    // Toward zero first (an inexact float32 is never zero in magnitude when it rounded up), then the sticky last bit.
    if (Math.abs(out[i]) > Math.abs(value)) bits[i] -= 1;
    bits[i] |= 1;
  }
  return out;
}

/** Puts `storage` (the dtype's layout) into `tensor` in place: a new buffer on the tensor's backend. */
function replaceStorage(tensor: Tensor, storage: BackendValues, where: string): void {
  const result = engine.upload(storage, tensor.shape, tensor.dtype, tensor.backend, where);
  try {
    tensor.assign(result);
  } finally {
    result.dispose();
  }
}

/** Puts float64 `values` into `tensor` in place (a new buffer on the tensor's backend, rounded once to its dtype). */
function replaceContents(tensor: Tensor, values: Float64Array): void {
  const half = tensor.dtype === "float16" || tensor.dtype === "bfloat16";
  const result = tensorOn(tensor.backend, half ? roundToOddFloat32(values) : values, tensor.shape, tensor.dtype);
  try {
    tensor.assign(result);
  } finally {
    result.dispose();
  }
}

/**
 * The process group on the CPU: every collective goes through the rendezvous store (each rank
 * publishes its values, the others read them), which is simple and exact rather than fast. It
 * is what the tests run on, with the same interface as the NCCL group. allReduce sums in rank
 * order in float64 and rounds once to the tensor's dtype, so every rank gets the same bits.
 */
export class CpuProcessGroup implements ProcessGroup {
  readonly backend = "cpu" as const;
  readonly rank: number;
  readonly worldSize: number;
  readonly #rendezvous: Rendezvous;
  #sequence = 0;
  #destroyed = false;
  /** Why the group is broken (a collective whose outcome this rank could not learn), or null while it is not. */
  #broken: string | null = null;
  /**
   * Per tensor, this group's last collective still to write it (an allReduce, a broadcast's non-root rank). A later
   * collective on that tensor reads it once that one has written it, in call order as on NCCL's stream (and in
   * torch): two allReduces of one tensor in flight give the sum of the sums, not each the sum of the first values.
   */
  readonly #pendingWrites = new WeakMap<Tensor, Promise<void>>();
  /** This rank's collectives still running: destroy waits for them, as a later call in the group's order. */
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(rendezvous: Rendezvous) {
    this.#rendezvous = rendezvous;
    this.rank = rendezvous.rank;
    this.worldSize = rendezvous.worldSize;
  }

  async allReduce(tensor: Tensor, op: ReduceOp = "sum"): Promise<void> {
    checkTensor("allReduce", tensor, true);
    checkReduceOp("allReduce", op);
    const call: CallDescription = { kind: "allReduce", dtype: tensor.dtype, shape: tensor.shape, op };
    const sequence = this.#reserve(call);
    const earlier = this.#pendingWrites.get(tensor);
    return this.#running(this.#writes(tensor, async () => {
      if (earlier !== undefined) await earlier.catch(() => {});
      const own = valuesOf(tensor);
      const received = await this.#exchange(call, sequence, bytesOf(own));
      // Rank 0's values start the sum (not zeros): 0 + -0 is +0, so ranks that all hold -0 got +0 where NCCL keeps -0.
      const total = new Float64Array(own.length);
      for (let r = 0; r < this.worldSize; r++) {
        const values = r === this.rank ? own : valuesFrom(received.get(r) as Uint8Array, tensor.dtype);
        if (r === 0) total.set(values);
        else for (let i = 0; i < total.length; i++) total[i] += values[i];
      }
      if (op === "avg") for (let i = 0; i < total.length; i++) total[i] /= this.worldSize;
      if (this.worldSize > 1 || op === "avg") replaceContents(tensor, total);
    }));
  }

  async broadcast(tensor: Tensor, root = 0): Promise<void> {
    checkTensor("broadcast", tensor, false);
    checkRoot("broadcast", root, this.worldSize);
    const call: CallDescription = { kind: "broadcast", dtype: tensor.dtype, shape: tensor.shape, root };
    const sequence = this.#reserve(call);
    const earlier = this.#pendingWrites.get(tensor);
    const run = async () => {
      if (earlier !== undefined) await earlier.catch(() => {});
      const received = await this.#exchange(call, sequence, this.rank === root ? bytesOf(storageOf(tensor, "broadcast")) : new Uint8Array(0));
      if (this.rank !== root) replaceStorage(tensor, storageFrom(received.get(root) as Uint8Array, tensor.dtype), "broadcast");
    };
    // The root only reads its tensor: it waits for an earlier write, and a later collective need not wait for it.
    return this.#running(this.rank === root ? run() : this.#writes(tensor, run));
  }

  async allGather(tensor: Tensor): Promise<Tensor> {
    checkTensor("allGather", tensor, false);
    const call: CallDescription = { kind: "allGather", dtype: tensor.dtype, shape: tensor.shape };
    const sequence = this.#reserve(call);
    const earlier = this.#pendingWrites.get(tensor);
    return this.#running(
      (async () => {
        if (earlier !== undefined) await earlier.catch(() => {});
        const own = storageOf(tensor, "allGather");
        const received = await this.#exchange(call, sequence, bytesOf(own));
        const all = tensor.dtype === "int32" ? new Int32Array(own.length * this.worldSize) : tensor.dtype === "float32" ? new Float32Array(own.length * this.worldSize) : new Uint16Array(own.length * this.worldSize);
        for (let r = 0; r < this.worldSize; r++) all.set(r === this.rank ? own : storageFrom(received.get(r) as Uint8Array, tensor.dtype), r * own.length);
        return engine.upload(all, [this.worldSize, ...tensor.shape], tensor.dtype, tensor.backend, "allGather");
      })(),
    );
  }

  async barrier(): Promise<void> {
    const call: CallDescription = { kind: "barrier" };
    await this.#running(this.#exchange(call, this.#reserve(call), new Uint8Array(0)));
  }

  async destroy(): Promise<void> {
    const call: CallDescription = { kind: "destroy" };
    const sequence = this.#reserve(call);
    // Set first: the connection is closed even when the shutdown handshake fails.
    this.#destroyed = true;
    // This rank's collectives called before destroy come first, as in the group's order: closing the connection under
    // one (started, not awaited) failed it on this rank while the peers completed it, and the replicas differed.
    await Promise.allSettled([...this.#inFlight]);
    // Said where a peer still in a collective looks for this rank's call (a rank that ran out of data first): that peer
    // fails at once, naming this call, instead of both waiting out timeoutMs. Nothing waits for it here.
    // One deadline for the marker and the shutdown: given a full timeout each, a store that stopped answering made destroy take two.
    const wait = this.#rendezvous.shutdownWait();
    const others = this.#rendezvous.others();
    await this.#rendezvous.publish(`cpu/${sequence}`, packMessage({ ...call }), others.length, wait).catch(() => {});
    await this.#rendezvous.shutdown([`cpu/${sequence}`], wait);
  }

  /**
   * The collective's sequence number, taken when it is called (every rank numbers its calls alike), once the group is
   * known to be live: not destroyed, and not broken (a collective whose outcome this rank could not learn; destroy is
   * still allowed then, to leave the job).
   */
  #reserve(call: CallDescription): number {
    this.#throwIfDestroyed(describeCall(call));
    if (this.#broken !== null && call.kind !== "destroy") {
      throw new CollectiveError(`${describeCall(call)}: the process group of rank ${this.rank} is broken: ${this.#broken}; destroy it (on every rank) and call initProcessGroup again`);
    }
    return this.#sequence++;
  }

  /** `collective`, counted among this rank's collectives in flight until it settles. */
  #running<T>(collective: Promise<T>): Promise<T> {
    this.#inFlight.add(collective);
    const settled = () => this.#inFlight.delete(collective);
    collective.then(settled, settled);
    return collective;
  }

  /** Runs `write` (a collective that replaces `tensor`'s contents) as the tensor's pending write until it settles. */
  #writes(tensor: Tensor, write: () => Promise<void>): Promise<void> {
    const written = write();
    this.#pendingWrites.set(tensor, written);
    const settled = () => {
      if (this.#pendingWrites.get(tensor) === written) this.#pendingWrites.delete(tensor);
    };
    written.then(settled, settled);
    return written;
  }

  /** After destroy the connection is closed: say so, rather than blame a peer (or, in a group of one, do nothing). */
  #throwIfDestroyed(where: string): void {
    if (this.#destroyed) throw new CollectiveError(`${where}: the process group of rank ${this.rank} was destroyed`);
  }

  /**
   * One collective through the store, with one outcome on every rank: the payloads of every other rank, on every rank,
   * or an error on every rank. Each rank first exchanges (`#gather`), then votes under `cpu/<n>/votes` (a counter the
   * store adds to atomically): whether it got every rank's call and payload, checked. The collective completes if every
   * rank votes that it did before any rank votes that it failed; once one rank has voted a failure (its timeout passed,
   * a call differs, a peer is gone), it fails on every rank. The rank whose vote decides (the last vote of a complete
   * count, or the first failure) says so under `cpu/<n>/outcome`, which every rank asked for before publishing anything:
   * a rank still waiting for a peer's values then fails at once, as does one that comes later. Deciding on each rank by
   * its own timeout let ranks disagree: with three ranks, rank 0 timing out while rank 1 still waited, a rank 2 that
   * came in between failed (rank 0 had withdrawn its values) while rank 1 took rank 2's values and completed.
   *
   * A rank that has voted that it has every value waits up to timeoutMs more for the others' votes (each rank votes by
   * its own timeout, so they come unless a rank stalled, or lost the store, after sending its values), then gives the
   * collective up for every rank by adding a failure to the count, unless the count says it completed meanwhile.
   *
   * What cannot be agreed on: a rank gone (a RankFailedError; every later collective fails on every rank too), or a rank
   * that cannot reach the store for its vote or the outcome; that rank then throws and its group is broken (its later
   * collectives fail at once), as it cannot tell whether the others completed the collective.
   */
  async #exchange(call: CallDescription, sequence: number, payload: Uint8Array): Promise<Map<number, Uint8Array>> {
    const label = `${describeCall(call)}, collective #${sequence} of rank ${this.rank}`;
    const key = `cpu/${sequence}`;
    const others = this.#rendezvous.others();
    // A group of one has no one to exchange with, nor to agree with.
    if (others.length === 0) return new Map();
    const parts = packedBytes({ ...call }, payload.byteLength) <= wireLimits.maxPayloadBytes ? [] : splitParts(payload, wireLimits.maxPayloadBytes);
    // Asked before anything is published: the store answers it once the collective is decided, one read for each rank.
    const hearing = new AbortController();
    const told: Promise<Told> = this.#rendezvous.read(`${key}/outcome`, undefined, hearing.signal).then(
      (bytes) => ({ outcome: decodeOutcome(bytes) }),
      (error: unknown) => ({ error }),
    );
    const gathering = new AbortController();
    const gathered = this.#gather(call, label, key, others, payload, parts, gathering.signal);
    gathered.catch(() => {});
    const first = await Promise.race([gathered.then((payloads) => ({ payloads }), (error: unknown) => ({ error })), told.then((settled) => ({ told: settled }))]);
    const done: VoteContext = { hearing, told, label, key, parts: parts.length, call, sequence };
    if ("payloads" in first) return this.#voteCompleted(done, first.payloads);
    if ("error" in first) throw await this.#voteFailed(done, first.error, this.#outcomeOf(first.error, label, call));
    const settled = first.told;
    if ("error" in settled) {
      // The store refused this rank's read of the outcome (a rank is gone, or the store closed): it refuses the gather's
      // reads alike, at once, and their error says what this rank waited for. This rank votes that it failed.
      const own = await gathered.then(
        () => this.#explain(settled.error, label),
        (error: unknown) => error,
      );
      throw await this.#voteFailed(done, own, this.#outcomeOf(own, label, call));
    }
    // Decided before this rank had every value: only a failure can be (a completion needs this rank's vote).
    gathering.abort();
    // Its publishes are not given up: they land before this rank's values are deleted, not after.
    await gathered.catch(() => {});
    if (settled.outcome.ok) throw await this.#voteFailed(done, new CollectiveError(`${label}: the store said that it completed before this rank voted`), undefined);
    throw await this.#voteFailed(done, this.#agreedFailure(label, sequence, settled.outcome), undefined);
  }

  /**
   * Publishes this rank's call and payload and collects every other rank's, checking that each called the same
   * collective. Every rank reads every other rank's call, a broadcast's too (its non-root ranks send only their call),
   * so a mismatch, a root that differs included, fails on every rank instead of hanging some or feeding them another
   * rank's data. A payload larger than one store value goes in `parts` under their own keys. Throws what failed, as the
   * caller reads it; `signal` gives up the reads.
   */
  async #gather(call: CallDescription, label: string, key: string, others: number[], payload: Uint8Array, parts: Uint8Array[], signal: AbortSignal): Promise<Map<number, Uint8Array>> {
    const wait = this.#rendezvous.wait();
    let messages: Map<number, Uint8Array>;
    try {
      const header: CallHeader = parts.length === 0 ? { ...call } : { ...call, parts: parts.length };
      await this.#rendezvous.publish(key, packMessage({ ...header }, parts.length === 0 ? payload : new Uint8Array(0)), others.length, wait);
      for (const [index, part] of parts.entries()) await this.#rendezvous.publish(`${key}/part${index}`, part, others.length, wait);
      messages = await this.#rendezvous.collect(key, others, wait, signal);
    } catch (error) {
      throw this.#explain(error, label);
    }
    const payloads = new Map<number, Uint8Array>();
    const split: [number, number][] = [];
    // What a peer sent that this rank cannot read (not this protocol's frame, a payload of the wrong size) names the peer.
    const malformed = (peer: number, what: string) => new CollectiveError(`${label}: rank ${peer} sent a malformed message (${what})`);
    for (const [peer, bytes] of messages) {
      let frame: ReturnType<typeof unpackMessage>;
      try {
        frame = unpackMessage(bytes);
      } catch (error) {
        throw malformed(peer, error instanceof Error ? error.message : String(error));
      }
      const { header, payload: theirs } = frame;
      // describeCall joins the shape: any other value there threw a TypeError.
      if (header.shape !== undefined && !Array.isArray(header.shape)) throw malformed(peer, `shape ${JSON.stringify(header.shape)}`);
      const theirCall = header as unknown as CallHeader;
      if (!sameCall(theirCall, call)) {
        const roots = call.kind === "broadcast" && theirCall.kind === "broadcast" && theirCall.root !== call.root ? ` (the ranks disagree on the broadcast's root: ${theirCall.root} on rank ${peer}, ${call.root} on rank ${this.rank})` : "";
        throw new CollectiveError(`${label}: rank ${peer} called ${describeCall(theirCall)} instead${roots}; every rank must call the same collectives, on tensors of the same shape and dtype, in the same order`);
      }
      if (theirCall.parts === undefined) payloads.set(peer, theirs);
      else if (Number.isSafeInteger(theirCall.parts) && theirCall.parts > 0) split.push([peer, theirCall.parts]);
      else throw malformed(peer, `parts ${String(theirCall.parts)}`);
    }
    try {
      for (const [peer, count] of split) {
        const pieces: Uint8Array[] = [];
        for (let index = 0; index < count; index++) pieces.push((await this.#rendezvous.collect(`${key}/part${index}`, [peer], wait, signal)).get(peer) as Uint8Array);
        payloads.set(peer, joinParts(pieces));
      }
    } catch (error) {
      throw this.#explain(error, label);
    }
    for (const [peer, payload] of payloads) {
      const expected = payloadBytes(call, peer);
      if (payload.byteLength !== expected) throw malformed(peer, `a payload of ${payload.byteLength} bytes, expected ${expected}`);
    }
    return payloads;
  }

  /** A wait for a step of the vote, starting now: timeoutMs, or VOTE_WAIT_MS where shorter. */
  #voteWait(): StoreTimeout {
    const ms = Math.min(this.#rendezvous.timeoutMs, VOTE_WAIT_MS);
    return { timeoutMs: ms, deadline: Date.now() + ms };
  }

  /**
   * Votes that this rank has every value (`payloads`), and returns them once the collective completed on every rank;
   * throws if it failed on any, or if this rank cannot learn which (its group is then broken).
   */
  async #voteCompleted(done: VoteContext, payloads: Map<number, Uint8Array>): Promise<Map<number, Uint8Array>> {
    const { hearing, told, label, key } = done;
    const votesKey = `${key}/votes`;
    const failed = async (error: Error) => {
      hearing.abort();
      this.#unpublish(key, done.parts);
      return error;
    };
    let count: number;
    try {
      count = await this.#rendezvous.count(votesKey, 1, this.#voteWait());
    } catch (error) {
      hearing.abort();
      // Whether the vote reached the store is unknown (its answer may be what was lost): the others may complete without this rank knowing.
      throw this.#break(label, `its vote did not reach the store: ${errorMessage(error)}`);
    }
    const { votes, failures } = tally(count, this.worldSize);
    if (failures === 0 && votes === this.worldSize) {
      // This vote completed the count: the collective completed, on every rank. Said to the ranks waiting for it; the
      // count is dropped only once said, so that a rank waiting in vain reads the completion from the count itself.
      const said = await this.#rendezvous.share(`${key}/outcome`, encodeOutcome({ ok: true }), this.worldSize, this.#voteWait()).then(
        () => true,
        () => false,
      );
      if (said) this.#drop(votesKey);
      hearing.abort();
      return payloads;
    }
    // The last vote of a count that a failure came into first: the failure was said by the rank that voted it.
    if (votes === this.worldSize) this.#drop(votesKey);
    if (failures > 0) throw await failed(await this.#heardFailure(done));
    const settled = await within(told, this.#rendezvous.timeoutMs);
    if (settled !== null && "outcome" in settled) {
      if (settled.outcome.ok) return payloads;
      throw await failed(this.#agreedFailure(label, done.sequence, settled.outcome));
    }
    // No outcome: none came within timeoutMs more (a rank that sent its values has not voted), or the store refused this
    // rank's read (a rank is gone, and the store fails every wait). The count decides: this rank adds a failure to it,
    // which gives the collective up for every rank, unless the count says that it was decided meanwhile.
    const refused = settled === null ? null : this.#explain(settled.error, label);
    let forced: number;
    try {
      forced = await this.#rendezvous.count(votesKey, this.worldSize + 1, this.#voteWait());
    } catch (error) {
      hearing.abort();
      if (refused !== null) throw refused;
      throw this.#break(label, `the others had not voted within ${this.#seconds()} s, and this rank could not reach the store to give it up: ${errorMessage(error)}`);
    }
    const before = tally(forced - (this.worldSize + 1), this.worldSize);
    if (before.votes === 0) {
      // The count was gone: every rank had voted, and the rank whose vote decided dropped it once it had said the
      // outcome. The outcome is on its way, or (this rank's read refused) still in the store for this rank to read.
      this.#drop(votesKey);
      const late: Told | null =
        refused === null
          ? await within(told, Math.min(this.#rendezvous.timeoutMs, VOTE_WAIT_MS))
          : await this.#rendezvous.read(`${key}/outcome`, this.#voteWait()).then(
              (bytes) => ({ outcome: decodeOutcome(bytes) }),
              (error: unknown) => ({ error }),
            );
      if (late !== null && "outcome" in late) {
        if (late.outcome.ok) return payloads;
        throw await failed(this.#agreedFailure(label, done.sequence, late.outcome));
      }
      hearing.abort();
      throw this.#break(label, `every rank had voted, but this rank could not read the outcome${late === null ? "" : `: ${errorMessage(late.error)}`}`);
    }
    if (before.votes === this.worldSize && before.failures === 0) {
      // Completed just before: the count's last vote was cast without a failure in it.
      hearing.abort();
      return payloads;
    }
    if (before.failures > 0) throw await failed(refused instanceof Error ? refused : await this.#heardFailure(done));
    // This rank's failure is the first: it says why to the others.
    const missing = this.worldSize - before.votes;
    const stalled = `${missing} of the ${this.worldSize} ranks had not finished the collective within ${this.#seconds()} s more (they sent their values, then stalled or lost the store)`;
    const error = refused ?? new CollectiveError(`${label}: this rank had every rank's values, but ${stalled}, so it gave the collective up for every rank`);
    const outcome = refused === null ? { ok: false as const, rank: this.rank, call: describeCall(done.call), reason: `it had every rank's values, but ${stalled}`, timedOut: true } : this.#outcomeOf(refused, label, done.call);
    await this.#rendezvous.share(`${key}/outcome`, encodeOutcome(outcome), this.worldSize, this.#voteWait()).catch(() => {});
    throw await failed(error as Error);
  }

  /**
   * Votes that the collective failed on this rank (`error`, what the caller gets), and returns `error`. The collective
   * then fails on every rank; the first rank to vote so says why (`outcome`) to the others.
   */
  async #voteFailed(done: VoteContext, error: unknown, outcome: FailedOutcome | undefined): Promise<unknown> {
    const { hearing, key } = done;
    const votesKey = `${key}/votes`;
    // A vote the store did not take changes nothing: the collective cannot complete without this rank's vote.
    const count = await this.#rendezvous.count(votesKey, 1 + this.worldSize + 1, this.#voteWait()).catch(() => null);
    if (count !== null) {
      const { votes, failures } = tally(count, this.worldSize);
      let said = true;
      if (failures === 1 && outcome !== undefined) said = await this.#rendezvous.share(`${key}/outcome`, encodeOutcome(outcome), this.worldSize, this.#voteWait()).then(() => true, () => false);
      // Kept when the failure could not be said: a rank waiting for the outcome then reads it from the count.
      if (votes === this.worldSize && said) this.#drop(votesKey);
    }
    hearing.abort();
    this.#unpublish(key, done.parts);
    return error;
  }

  /** The error of a collective that the count says failed before this rank's vote: why, as the rank that failed it said. */
  async #heardFailure(done: VoteContext): Promise<Error> {
    const settled = await within(done.told, Math.min(this.#rendezvous.timeoutMs, VOTE_WAIT_MS));
    if (settled !== null && "outcome" in settled && !settled.outcome.ok) return this.#agreedFailure(done.label, done.sequence, settled.outcome);
    return new CollectiveError(`${done.label}: another rank gave it up (the store did not say why in time), so this rank fails it too: the ranks agree that it failed, and their later collectives still pair up`);
  }

  /** The error of a collective that another rank gave up, on a rank that had not failed it itself (or not first). */
  #agreedFailure(label: string, sequence: number, outcome: FailedOutcome): Error {
    const slow = outcome.timedOut ? "; a rank that is much slower than the others needs a longer timeoutMs" : "";
    const message = `${label}: rank ${outcome.rank} gave up on ${outcome.call}, its collective #${sequence} (${outcome.reason}), so this rank fails it too: the ranks agree that it failed, and their later collectives still pair up${slow}`;
    return outcome.lostRank === undefined ? new CollectiveError(message) : new RankFailedError(outcome.lostRank, message);
  }

  /** What this rank says to the others when its failure (`error`, as the caller reads it) is the first: who, what, and why. */
  #outcomeOf(error: unknown, label: string, call: CallDescription): FailedOutcome {
    const base = { ok: false as const, rank: this.rank, call: describeCall(call) };
    const cause = error instanceof Error ? error.cause : undefined;
    if (cause instanceof CollectTimeoutError) return { ...base, reason: `it timed out after ${this.#seconds()} s waiting for ${ranksOf(cause.ranks)}`, timedOut: true };
    if (cause instanceof StoreTimeoutError) return { ...base, reason: `it timed out after ${this.#seconds()} s: ${cause.message}`, timedOut: true };
    const message = errorMessage(error);
    const reason = message.startsWith(`${label}: `) ? message.slice(label.length + 2) : message;
    return { ...base, reason, timedOut: false, ...(error instanceof RankFailedError ? { lostRank: error.rank } : {}) };
  }

  /** Marks the group broken (its later collectives fail at once) and returns the error of the collective that broke it. */
  #break(label: string, why: string): CollectiveError {
    this.#broken = `${label.replace(` of rank ${this.rank}`, "")} could not be settled: ${why}, so this rank cannot tell whether the others completed it`;
    return new CollectiveError(
      `${label}: this rank could not learn whether the other ranks completed it (${why}), so its tensors may no longer match theirs: the process group of rank ${this.rank} is broken, and its later collectives fail at once; destroy it (on every rank) and call initProcessGroup again`,
    );
  }

  /** Deletes what this rank published for a collective that failed (its call, its payload's parts): no rank reads them now. Best effort. */
  #unpublish(key: string, parts: number): void {
    const wait = this.#voteWait();
    const keys = [key, ...Array.from({ length: parts }, (_, index) => `${key}/part${index}`)];
    for (const published of keys) this.#rendezvous.unpublish(published, wait).catch(() => {});
  }

  /** Deletes a collective's shared key once no rank uses it. Best effort: left behind, it is never read again. */
  #drop(key: string): void {
    this.#rendezvous.drop(key, this.#voteWait()).catch(() => {});
  }

  #seconds(): number {
    return this.#rendezvous.timeoutMs / 1000;
  }

  #explain(error: unknown, label: string): unknown {
    if (error instanceof RankFailedError) return new RankFailedError(error.rank, `${label}: ${error.message}`, { cause: error });
    return explainStoreFailure(
      error,
      (message) => new CollectiveError(`${message} (a peer may have exited, hung, or skipped this collective: every rank must call the same collectives in the same order)`),
      label,
    );
  }
}

/** What the vote of one collective needs to know of it. */
interface VoteContext {
  /** Gives up this rank's read of the outcome (the store still counts it among the outcome's reads). */
  hearing: AbortController;
  told: Promise<Told>;
  label: string;
  key: string;
  /** How many parts this rank's payload was published in. */
  parts: number;
  call: CallDescription;
  sequence: number;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** `payload` cut into views of at most `size` bytes. */
function splitParts(payload: Uint8Array, size: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let start = 0; start < payload.byteLength; start += size) parts.push(payload.subarray(start, Math.min(start + size, payload.byteLength)));
  return parts;
}

/** The parts joined into one array (aligned for typed arrays, as unpackMessage's payloads are). */
function joinParts(parts: Uint8Array[]): Uint8Array {
  const whole = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    whole.set(part, offset);
    offset += part.byteLength;
  }
  return whole;
}
