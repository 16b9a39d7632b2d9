import { type BackendValues, type DType, engine, type Tensor, tensorOn } from "@blocksparse/core";
import { CollectiveError, RankFailedError, StoreTimeoutError } from "./errors";
import { checkReduceOp, checkRoot, checkTensor, type ProcessGroup, type ReduceOp } from "./process_group";
import { explainStoreFailure, type Rendezvous } from "./rendezvous";
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

/** The `kind` of what a rank publishes in place of its call when it gave that collective up (it timed out). */
const WITHDRAWN = "withdrawn";

/** How long a rank that timed out waits for the store to take its withdrawal, at most. */
const WITHDRAW_WAIT_MS = 10_000;

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
  /**
   * Per tensor, this group's last collective still to write it (an allReduce, a broadcast's non-root rank). A later
   * collective on that tensor reads it once that one has written it, in call order as on NCCL's stream (and in
   * torch): two allReduces of one tensor in flight give the sum of the sums, not each the sum of the first values.
   */
  readonly #pendingWrites = new WeakMap<Tensor, Promise<void>>();

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
    return this.#writes(tensor, async () => {
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
    });
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
    return this.rank === root ? run() : this.#writes(tensor, run);
  }

  async allGather(tensor: Tensor): Promise<Tensor> {
    checkTensor("allGather", tensor, false);
    const call: CallDescription = { kind: "allGather", dtype: tensor.dtype, shape: tensor.shape };
    const sequence = this.#reserve(call);
    const earlier = this.#pendingWrites.get(tensor);
    if (earlier !== undefined) await earlier.catch(() => {});
    const own = storageOf(tensor, "allGather");
    const received = await this.#exchange(call, sequence, bytesOf(own));
    const all = tensor.dtype === "int32" ? new Int32Array(own.length * this.worldSize) : tensor.dtype === "float32" ? new Float32Array(own.length * this.worldSize) : new Uint16Array(own.length * this.worldSize);
    for (let r = 0; r < this.worldSize; r++) all.set(r === this.rank ? own : storageFrom(received.get(r) as Uint8Array, tensor.dtype), r * own.length);
    return engine.upload(all, [this.worldSize, ...tensor.shape], tensor.dtype, tensor.backend, "allGather");
  }

  async barrier(): Promise<void> {
    const call: CallDescription = { kind: "barrier" };
    await this.#exchange(call, this.#reserve(call), new Uint8Array(0));
  }

  async destroy(): Promise<void> {
    const call: CallDescription = { kind: "destroy" };
    const sequence = this.#reserve(call);
    // Set first: the connection is closed even when the shutdown handshake fails.
    this.#destroyed = true;
    // Said where a peer still in a collective looks for this rank's call (a rank that ran out of data first): that peer
    // fails at once, naming this call, instead of both waiting out timeoutMs. Nothing waits for it here.
    // One deadline for the marker and the shutdown: given a full timeout each, a store that stopped answering made destroy take two.
    const wait = this.#rendezvous.shutdownWait();
    const others = this.#rendezvous.others();
    await this.#rendezvous.publish(`cpu/${sequence}`, packMessage({ ...call }), others.length, wait).catch(() => {});
    await this.#rendezvous.shutdown([`cpu/${sequence}`], wait);
  }

  /** The collective's sequence number, taken when it is called (every rank numbers its calls alike), once the group is known to be live. */
  #reserve(call: CallDescription): number {
    this.#throwIfDestroyed(describeCall(call));
    return this.#sequence++;
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
   * One collective through the store: publishes this rank's call and payload and collects every
   * other rank's, checking that each called the same collective. Every rank reads every other
   * rank's call, a broadcast's too (its non-root ranks send only their call), so a mismatch, a
   * root that differs included, fails on every rank instead of hanging some or feeding them
   * another rank's data. A payload larger than one store value goes in parts under their own keys.
   */
  async #exchange(call: CallDescription, sequence: number, payload: Uint8Array): Promise<Map<number, Uint8Array>> {
    const label = `${describeCall(call)}, collective #${sequence} of rank ${this.rank}`;
    const key = `cpu/${sequence}`;
    const others = this.#rendezvous.others();
    const wait = this.#rendezvous.wait();
    const parts = packedBytes({ ...call }, payload.byteLength) <= wireLimits.maxPayloadBytes ? [] : splitParts(payload, wireLimits.maxPayloadBytes);
    let messages: Map<number, Uint8Array>;
    try {
      const header: CallHeader = parts.length === 0 ? { ...call } : { ...call, parts: parts.length };
      await this.#rendezvous.publish(key, packMessage({ ...header }, parts.length === 0 ? payload : new Uint8Array(0)), others.length, wait);
      for (const [index, part] of parts.entries()) await this.#rendezvous.publish(`${key}/part${index}`, part, others.length, wait);
      messages = await this.#rendezvous.collect(key, others, wait);
    } catch (error) {
      throw await this.#giveUp(error, label, key, call, others.length);
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
      if (header.kind === WITHDRAWN) {
        throw new CollectiveError(
          `${label}: rank ${peer} gave up on ${String(header.call)}, its collective #${sequence}, before this rank called it (${String(header.reason)}), so this rank fails it too: the ranks agree that it failed and their later collectives still pair up; a rank that is much slower than the others needs a longer timeoutMs`,
        );
      }
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
        for (let index = 0; index < count; index++) pieces.push((await this.#rendezvous.collect(`${key}/part${index}`, [peer], wait)).get(peer) as Uint8Array);
        payloads.set(peer, joinParts(pieces));
      }
    } catch (error) {
      throw await this.#giveUp(error, label, key, call, others.length);
    }
    for (const [peer, payload] of payloads) {
      const expected = payloadBytes(call, peer);
      if (payload.byteLength !== expected) throw malformed(peer, `a payload of ${payload.byteLength} bytes, expected ${expected}`);
    }
    return payloads;
  }

  /**
   * A collective that failed on this rank, as the caller sees it. After a timeout this rank's values under `key` are
   * replaced by a withdrawal first: a peer that comes late would otherwise read them and succeed where this rank failed,
   * leaving the two with different tensors (a silent divergence, the replicas then training apart).
   */
  async #giveUp(error: unknown, label: string, key: string, call: CallDescription, readers: number): Promise<unknown> {
    if (error instanceof StoreTimeoutError && readers > 0) {
      const withdrawal = { kind: WITHDRAWN, call: describeCall(call), reason: `it timed out after ${this.#rendezvous.timeoutMs / 1000} s` };
      const wait = Math.min(this.#rendezvous.timeoutMs, WITHDRAW_WAIT_MS);
      // Best effort: a store that does not answer this either fails every rank's collectives anyway.
      await this.#rendezvous.publish(key, packMessage(withdrawal), readers, wait).catch(() => {});
    }
    return this.#explain(error, label);
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
