import type { CudaBackend } from "@blocksparse/backend-cuda";
import { fullOn, type Tensor, ValueError } from "@blocksparse/core";
import type { DistributedEnv } from "./env";
import { NcclError } from "./errors";
import { checkReduceOp, checkRoot, checkTensor, type ProcessGroup, type ReduceOp } from "./process_group";
import { Rendezvous } from "./rendezvous";

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
  static async create(env: DistributedEnv, options: { timeoutMs?: number } = {}): Promise<NcclProcessGroup> {
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
      let uniqueId: Uint8Array;
      if (env.rank === 0) {
        uniqueId = native("ncclGetUniqueId", () => cuda.addon.ncclGetUniqueId());
        await rendezvous.publish("nccl/id", uniqueId, env.worldSize - 1);
        // ncclCommInitRank blocks this thread: wait until every rank has the id (this rank may host the store).
        await rendezvous.collect("nccl/received", rendezvous.others());
      } else {
        uniqueId = (await rendezvous.collect("nccl/id", [0])).get(0) as Uint8Array;
        await rendezvous.publish("nccl/received", new Uint8Array(0), 1);
      }
      const communicator = native(`ncclCommInitRank (rank ${env.rank} of ${env.worldSize}, device ${cuda.device.index})`, () =>
        cuda.addon.ncclCommInitRank(env.worldSize, uniqueId, env.rank),
      );
      return new NcclProcessGroup(rendezvous, cuda, codes, communicator, info.library);
    } catch (error) {
      await rendezvous.close();
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

  async destroy(): Promise<void> {
    const communicator = this.#comm("destroy");
    await this.#rendezvous.shutdown();
    this.#communicator = null;
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
