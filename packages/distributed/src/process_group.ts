import { DTypeError, Tensor, ValueError } from "@blocksparse/core";

/** How allReduce combines the ranks' tensors: their sum, or their mean (sum / worldSize). */
export type ReduceOp = "sum" | "avg";

/**
 * A group of processes that run the same program on different data, and the collectives they
 * call together. Every rank must call the same collectives, with tensors of the same shape and
 * dtype, in the same order (as with NCCL or torch.distributed). A collective reads the tensor's
 * values when called (or, when an earlier collective of the group is still to write that tensor,
 * once it has: in call order, as on a stream), so the caller may go on (and start further
 * collectives) before it resolves; its result is in place once the promise resolves.
 */
export interface ProcessGroup {
  /** "cpu" (the TCP store, for tests and CPU runs) or "nccl" (GPUs). */
  readonly backend: "cpu" | "nccl";
  /** This process's rank, in [0, worldSize). */
  readonly rank: number;
  readonly worldSize: number;
  /** Replaces `tensor`'s contents (a float tensor) by the sum or mean of every rank's tensor. */
  allReduce(tensor: Tensor, op?: ReduceOp): Promise<void>;
  /** Replaces `tensor`'s contents on every rank by rank `root`'s (default 0); any dtype. */
  broadcast(tensor: Tensor, root?: number): Promise<void>;
  /** Every rank's `tensor` stacked in rank order: a new tensor [worldSize, ...shape] (the caller disposes it). */
  allGather(tensor: Tensor): Promise<Tensor>;
  /** Resolves once every rank has called it. */
  barrier(): Promise<void>;
  /** Waits for every rank to get here, then closes the group's connections (and the store it hosts). */
  destroy(): Promise<void>;
}

const REDUCE_OPS: readonly ReduceOp[] = ["sum", "avg"];

/** Checks a collective's tensor before anything is sent: live, and a float dtype where `floatOnly`. */
export function checkTensor(where: string, tensor: unknown, floatOnly: boolean): asserts tensor is Tensor {
  if (!(tensor instanceof Tensor)) throw new ValueError(`${where}: expected a Tensor, got ${tensor === null ? "null" : typeof tensor}`);
  tensor.throwIfDisposed(where);
  if (floatOnly && !tensor.isFloat) throw new DTypeError(`${where}: the tensor has dtype ${tensor.dtype}; allReduce takes float32, float16 or bfloat16`);
}

export function checkReduceOp(where: string, op: unknown): asserts op is ReduceOp {
  if (!REDUCE_OPS.includes(op as ReduceOp)) throw new ValueError(`${where}: op must be "sum" or "avg", got ${JSON.stringify(op)}`);
}

export function checkRoot(where: string, root: unknown, worldSize: number): asserts root is number {
  if (!Number.isInteger(root) || (root as number) < 0 || (root as number) >= worldSize) {
    throw new ValueError(`${where}: root must be a rank in [0, ${worldSize - 1}], got ${String(root)}`);
  }
}
