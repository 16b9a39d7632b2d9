import type { CudaBackend } from "@blocksparse/backend-cuda";
import { fullOn, type Tensor, ValueError } from "@blocksparse/core";
import type { DistributedEnv } from "./env";
import { DistributedError, NcclError, StoreTimeoutError } from "./errors";
import { checkReduceOp, checkRoot, checkTensor, type ProcessGroup, type ReduceOp } from "./process_group";
import { Rendezvous } from "./rendezvous";
import type { StoreTimeout } from "./store";
import { packMessage, unpackMessage } from "./wire";

/** The addon's dtype and reduction codes, from the cuda backend's module. */
interface CudaCodes {
  dtype: typeof import("@blocksparse/backend-cuda").DTYPE_CODE;
  reduce: typeof import("@blocksparse/backend-cuda").NcclReduceOp;
}

/** Runs one addon call, turning its failure into an NcclError that names what was being done. */
function native<T>(what: string, call: () => T): T {
  try {
    return call();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === "ERR_CUDA_INVALID_ARGUMENT") throw new ValueError(`${what}: ${(error as Error).message}`);
    const wrapped = new NcclError(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    (wrapped as Error & { cause?: unknown }).cause = error;
    throw wrapped;
  }
}

/** What a rank of the NCCL group's setup publishes: rank 0's unique id or its word to go, a rank's receipt, or that it failed. */
type SetupWord = { kind: "id" | "go" | "received" } | { kind: "failed"; reason: string; error: string };

/** How long a rank that failed in the setup waits for the store to take its word (its own timeout may have passed). */
const SAY_FAILED_MS = 5000;

/**
 * Hands rank 0's NCCL unique id (made by `uniqueId`) to every rank, before each enters ncclCommInitRank, which blocks its
 * thread until every rank has entered it: rank 0 publishes the id, every other rank confirms receipt, and rank 0 then
 * says "go" (it may host the store, which answers nothing once it is inside). Every other rank waits for that word
 * before it enters: a rank that entered on the id alone would block for good when rank 0 then failed (a peer that
 * never received the id). A rank that fails in the setup says so where its peers wait for it, so that they fail at once
 * instead of at their timeout, and every rank gives back its rank (the caller aborts the rendezvous).
 */
async function handOutUniqueId(rendezvous: Rendezvous, uniqueId: () => Uint8Array): Promise<Uint8Array> {
  const { rank } = rendezvous;
  const others = rendezvous.others();
  const wait = rendezvous.wait();
  // Where the peers wait for this rank's word at each step, and how many read it: null once nothing more is said.
  let saying: { key: string; readers: number } | null = rank === 0 ? { key: "nccl/id", readers: others.length } : { key: "nccl/received", readers: 1 };
  try {
    if (rank === 0) {
      const id = uniqueId();
      await rendezvous.publish("nccl/id", packWord({ kind: "id" }, id), others.length, wait);
      saying = { key: "nccl/go", readers: others.length };
      await collectWords(rendezvous, "nccl/received", others, wait, "to receive the NCCL unique id");
      saying = null;
      await rendezvous.publish("nccl/go", packWord({ kind: "go" }), others.length, wait);
      return id;
    }
    const id = (await collectWords(rendezvous, "nccl/id", [0], wait, "to publish the NCCL unique id")).get(0) as Uint8Array;
    // Asked before the receipt is sent: once rank 0 holds every receipt it says go and blocks, and the store it may host
    // then answers nothing more (this get is waiting in it by then). Rank 0's own wait for the receipts started before
    // this rank had the id: this one ends later, by the time rank 0 may take to say that it failed, so that it is heard.
    const grace = Math.min(rendezvous.timeoutMs, SAY_FAILED_MS);
    const goWait: StoreTimeout = { timeoutMs: rendezvous.timeoutMs, deadline: Date.now() + rendezvous.timeoutMs + grace };
    const go = collectWords(rendezvous, "nccl/go", [0], goWait, "to say that every rank has the NCCL unique id");
    go.catch(() => {});
    await rendezvous.publish("nccl/received", packWord({ kind: "received" }), 1, wait);
    saying = null;
    await go;
    return id;
  } catch (error) {
    // Rank 0 told that a peer failed tells the others; a rank told that rank 0 failed has no one to tell.
    if (saying !== null && (rank === 0 || !TOLD_BY_PEER.has(error as object))) {
      const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      const said = packWord({ kind: "failed", reason, error: error instanceof NcclError ? "NcclError" : "DistributedError" });
      const grace = Math.min(rendezvous.timeoutMs, SAY_FAILED_MS);
      await rendezvous.publish(saying.key, said, saying.readers, { timeoutMs: grace, deadline: Date.now() + grace }).catch(() => {});
    }
    throw error;
  }
}

/** The errors a rank throws because a peer said that it failed in the setup. */
const TOLD_BY_PEER = new WeakSet<object>();

function packWord(word: SetupWord, payload?: Uint8Array): Uint8Array {
  return packMessage({ ...word }, payload);
}

/**
 * What each of `ranks` published under `key` in the setup (the payload of its word), failing at the first word that a
 * rank failed, and past the timeout with a StoreTimeoutError naming every rank still waited for and `forWhat`.
 */
async function collectWords(rendezvous: Rendezvous, key: string, ranks: readonly number[], wait: StoreTimeout, forWhat: string): Promise<Map<number, Uint8Array>> {
  const waiting = new Set(ranks);
  const words = new Map<number, Uint8Array>();
  try {
    await Promise.all(
      ranks.map(async (peer) => {
        const bytes = (await rendezvous.collect(key, [peer], wait)).get(peer) as Uint8Array;
        waiting.delete(peer);
        let frame: ReturnType<typeof unpackMessage>;
        try {
          frame = unpackMessage(bytes);
        } catch (error) {
          throw new DistributedError(`initProcessGroup: rank ${peer} sent a malformed word in the NCCL group's setup (${(error as Error).message}), so rank ${rendezvous.rank} gives the setup up: is every rank running the same @blocksparse/distributed version?`);
        }
        const { header, payload } = frame;
        const word = header as SetupWord;
        if (word.kind === "failed") {
          const message = `initProcessGroup: rank ${peer} failed in the NCCL group's setup (${word.reason}), so rank ${rendezvous.rank} gives the setup up too and leaves the job: call initProcessGroup again on every rank to retry`;
          const told = word.error === "NcclError" ? new NcclError(message) : new DistributedError(message);
          TOLD_BY_PEER.add(told);
          throw told;
        }
        words.set(peer, payload);
      }),
    );
  } catch (error) {
    if (!(error instanceof StoreTimeoutError)) throw error;
    const missing = [...waiting].sort((a, b) => a - b);
    throw new StoreTimeoutError(
      `initProcessGroup: rank ${rendezvous.rank} of WORLD_SIZE=${rendezvous.worldSize} waited ${rendezvous.timeoutMs / 1000} s for rank${missing.length > 1 ? "s" : ""} ${missing.join(", ")} ${forWhat} (${error.message})`,
      { cause: error },
    );
  }
  return words;
}

/**
 * The process group on NCCL: one communicator per rank, its unique id handed out by rank 0
 * through the rendezvous store, every collective enqueued on the cuda backend's stream (so it
 * is ordered with the kernels before and after it, and the host never waits for it). Results
 * go to new device buffers that the tensors then take (`assign`), since a buffer may be shared
 * by tensors that must not change; a broadcast's root keeps its own buffer.
 */
export class NcclProcessGroup implements ProcessGroup {
  readonly backend = "nccl" as const;
  readonly rank: number;
  readonly worldSize: number;
  /** The NCCL library opened, with its version. */
  readonly library: string;
  readonly #rendezvous: Rendezvous;
  readonly #cuda: CudaBackend;
  readonly #codes: CudaCodes;
  #communicator: number | null;

  private constructor(rendezvous: Rendezvous, cuda: CudaBackend, codes: CudaCodes, communicator: number, library: string) {
    this.#rendezvous = rendezvous;
    this.#cuda = cuda;
    this.#codes = codes;
    this.#communicator = communicator;
    this.rank = rendezvous.rank;
    this.worldSize = rendezvous.worldSize;
    this.library = library;
  }

  /**
   * Starts CUDA on device LOCAL_RANK (unless BLOCKSPARSE_CUDA_DEVICE chose one), joins the
   * rendezvous, and creates the communicator.
   */
  static async create(env: DistributedEnv, options: { timeoutMs?: number; joinTimeoutMs?: number } = {}): Promise<NcclProcessGroup> {
    // Empty counts as unset, as the cuda backend reads it: every rank would start on device 0 ("Duplicate GPU detected").
    const deviceChosen = process.env.BLOCKSPARSE_CUDA_DEVICE !== undefined && process.env.BLOCKSPARSE_CUDA_DEVICE !== "";
    if (!deviceChosen) process.env.BLOCKSPARSE_CUDA_DEVICE = String(env.localRank);
    let module: typeof import("@blocksparse/backend-cuda");
    try {
      // Imported here, so that the package loads (and the CPU group runs) where the cuda backend is not installed.
      module = await import("@blocksparse/backend-cuda");
    } catch (error) {
      throw new NcclError(`the NCCL process group needs @blocksparse/backend-cuda, which could not be loaded (${error instanceof Error ? error.message : String(error)}); install it, or use backend "cpu"`);
    }
    const codes: CudaCodes = { dtype: module.DTYPE_CODE, reduce: module.NcclReduceOp };
    let cuda: CudaBackend;
    try {
      cuda = module.cudaBackend();
    } catch (error) {
      throw new NcclError(`the NCCL process group needs the cuda backend: ${error instanceof Error ? error.message : String(error)}`);
    }
    // CUDA starts once per process: used before this (a model moved to "cuda" first), it runs on the device it chose then.
    if (!deviceChosen && cuda.device.index !== env.localRank) {
      throw new NcclError(
        `LOCAL_RANK=${env.localRank} gives this rank CUDA device ${env.localRank}, but CUDA had already started on device ${cuda.device.index} (the cuda backend was used before initProcessGroup), ` +
          "so ranks would share a GPU: call initProcessGroup before moving anything to the GPU, or set BLOCKSPARSE_CUDA_DEVICE to each rank's device before it starts",
      );
    }
    const info = cuda.addon.ncclInfo();
    if (!info.available) throw new NcclError(`the NCCL process group cannot start: ${info.library}`);
    const rendezvous = await Rendezvous.join(env, options);
    try {
      const uniqueId = await handOutUniqueId(rendezvous, () => native("ncclGetUniqueId", () => cuda.addon.ncclGetUniqueId()));
      const communicator = native(`ncclCommInitRank (rank ${env.rank} of ${env.worldSize}, device ${cuda.device.index})`, () =>
        cuda.addon.ncclCommInitRank(env.worldSize, uniqueId, env.rank),
      );
      return new NcclProcessGroup(rendezvous, cuda, codes, communicator, info.library);
    } catch (error) {
      // Left, not gone: the rank and its place in the store are given back, so that every rank may call initProcessGroup again.
      await rendezvous.abort();
      throw error;
    }
  }

  async allReduce(tensor: Tensor, op: ReduceOp = "sum"): Promise<void> {
    this.#check("allReduce", tensor, true);
    checkReduceOp("allReduce", op);
    const result = this.#fresh(tensor.shape, tensor);
    try {
      native("ncclAllReduce", () =>
        this.#cuda.addon.ncclAllReduce(this.#comm("allReduce"), this.#codes.dtype[tensor.dtype], this.#handle(tensor), this.#handle(result), tensor.size, op === "avg" ? this.#codes.reduce.Avg : this.#codes.reduce.Sum),
      );
      tensor.assign(result);
    } finally {
      result.dispose();
    }
  }

  async broadcast(tensor: Tensor, root = 0): Promise<void> {
    this.#check("broadcast", tensor, false);
    checkRoot("broadcast", root, this.worldSize);
    if (this.rank === root) {
      native("ncclBroadcast", () => this.#cuda.addon.ncclBroadcast(this.#comm("broadcast"), this.#codes.dtype[tensor.dtype], this.#handle(tensor), this.#handle(tensor), tensor.size, root));
      return;
    }
    const result = this.#fresh(tensor.shape, tensor);
    try {
      native("ncclBroadcast", () => this.#cuda.addon.ncclBroadcast(this.#comm("broadcast"), this.#codes.dtype[tensor.dtype], this.#handle(result), this.#handle(result), tensor.size, root));
      tensor.assign(result);
    } finally {
      result.dispose();
    }
  }

  async allGather(tensor: Tensor): Promise<Tensor> {
    this.#check("allGather", tensor, false);
    const result = this.#fresh([this.worldSize, ...tensor.shape], tensor);
    try {
      native("ncclAllGather", () => this.#cuda.addon.ncclAllGather(this.#comm("allGather"), this.#codes.dtype[tensor.dtype], this.#handle(tensor), this.#handle(result), tensor.size));
    } catch (error) {
      result.dispose();
      throw error;
    }
    return result;
  }

  /** An all-reduce of one element, then a wait for the stream: every rank's earlier work is done. */
  async barrier(): Promise<void> {
    const token = fullOn(this.#cuda, [1], 1, "float32");
    try {
      await this.allReduce(token);
      native("barrier", () => this.#cuda.addon.synchronize());
    } finally {
      token.dispose();
    }
  }

  /** Runs `launch` (which starts collectives without awaiting them) inside ncclGroupStart/End, so NCCL launches them together. */
  aggregate<T>(launch: () => T): T {
    native("ncclGroupStart", () => this.#cuda.addon.ncclGroupStart());
    try {
      return launch();
    } finally {
      native("ncclGroupEnd", () => this.#cuda.addon.ncclGroupEnd());
    }
  }

  /**
   * Waits for every rank, then destroys the communicator. When the wait fails (a peer did not call destroy in time), the
   * rank still leaves the job (initProcessGroup may be called again) and the group counts as destroyed, but the
   * communicator is left as it is: a peer may still have collectives on it that would never complete.
   */
  async destroy(): Promise<void> {
    const communicator = this.#comm("destroy");
    this.#communicator = null;
    await this.#rendezvous.shutdown();
    native("ncclCommDestroy", () => this.#cuda.addon.ncclCommDestroy(communicator));
  }

  /** The addon's communicator handle: for calling NCCL through the addon directly (the bench measures it in place). */
  get communicator(): number {
    return this.#comm("communicator");
  }

  #comm(where: string): number {
    if (this.#communicator === null) throw new NcclError(`${where}: the NCCL process group was destroyed`);
    return this.#communicator;
  }

  #check(where: string, tensor: unknown, floatOnly: boolean): asserts tensor is Tensor {
    checkTensor(where, tensor, floatOnly);
    if (tensor.backend !== this.#cuda) {
      throw new ValueError(`${where}: the tensor is on backend '${tensor.backend.name}'; the NCCL group reduces cuda tensors (move it with .to("cuda"))`);
    }
  }

  #fresh(shape: readonly number[], like: Tensor): Tensor {
    return fullOn(this.#cuda, shape, 0, like.dtype);
  }

  #handle(tensor: Tensor): number {
    return (tensor.dataId as { handle: number }).handle;
  }
}
