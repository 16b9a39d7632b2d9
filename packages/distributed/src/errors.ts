import { CoreError } from "@blocksparse/core";

/** Base class of the errors @blocksparse/distributed throws itself (bad arguments use core's ValueError, DTypeError, ShapeError). */
export class DistributedError extends CoreError {
  override name = "DistributedError";
}

/** The launcher's environment is missing or malformed (RANK, WORLD_SIZE, MASTER_ADDR, ...): the message names the variable. */
export class DistributedEnvError extends DistributedError {
  override name = "DistributedEnvError";
}

/** The rendezvous store could not be reached, refused a request, or closed (its host process exited). */
export class StoreError extends DistributedError {
  override name = "StoreError";
}

/** A wait on the store ran past its timeout: connecting, or a request no rank answered; the message names what it waited for. */
export class StoreTimeoutError extends StoreError {
  override name = "StoreTimeoutError";
}

/**
 * The store answering at `host:port` belongs to another job: its job id (`storeJobId`) is not
 * this rank's (`jobId`). Two jobs were given the same MASTER_PORT on one host; the rank did not
 * join that store, and the message says how to pick another port.
 */
export class StoreJobMismatchError extends StoreError {
  override name = "StoreJobMismatchError";
  constructor(
    readonly host: string,
    readonly port: number,
    readonly jobId: string,
    readonly storeJobId: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * What answers at the store's address does not speak this store's protocol version: a store of
 * another @blocksparse/distributed version, or another service on that port. Found in the
 * connection's first exchange (the hello), so that neither side misreads the other's requests.
 */
export class StoreProtocolError extends StoreError {
  override name = "StoreProtocolError";
}

/** A collective failed: a peer did not take part in time, called a different collective, or the transport broke. */
export class CollectiveError extends DistributedError {
  override name = "CollectiveError";
}

/**
 * A rank of the job is gone: its connection to the store closed before it destroyed its process
 * group (the process exited, threw, crashed or was killed). The store then fails every wait at
 * once, naming the rank, instead of letting the others wait until their timeout. `rank` is the
 * rank that is gone.
 */
export class RankFailedError extends CollectiveError {
  override name = "RankFailedError";
  constructor(
    readonly rank: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An NCCL call failed or NCCL is unavailable; the message names the call and NCCL's reason. */
export class NcclError extends DistributedError {
  override name = "NcclError";
}

/** The replicas of a data-parallel model no longer hold the same parameters or patterns. */
export class ReplicaDivergenceError extends DistributedError {
  override name = "ReplicaDivergenceError";
}

/** One setting of a SparseOptimizer's schedule that differs between ranks: its value on each rank, by rank. */
export interface ScheduleDifference {
  /** Which SparseOptimizer: its place among those given to `movePatterns` (0 for movePatterns' own). */
  optimizer: number;
  /** "calls" (made so far) or an option of SparseOptimizer ("every", "totalSteps", "fraction", ...). */
  setting: string;
  /** The setting on rank 0, 1, ...: totalSteps null where it never stops. */
  values: readonly (number | string | null)[];
}

/**
 * The ranks' SparseOptimizers have different schedules (options or calls so far), so they would decide
 * differently when to move the patterns (one rank would wait forever in a move the others skip) or move them
 * by rank 0's settings alone. Thrown on every rank by `DistributedDataParallel.movePatterns`, before any
 * rank moves or counts the call, and by `backward` and `allReduceGradients` when the counts have drifted
 * apart since (a state loaded, or `sparse.step` called, on some ranks only). `differences` names each setting.
 */
export class ScheduleMismatchError extends ReplicaDivergenceError {
  override name = "ScheduleMismatchError";
  constructor(
    readonly differences: readonly ScheduleDifference[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The ranks disagree on which parameters take gradients (a parameter frozen, `requiresGrad`
 * false, on some ranks only), so they would all-reduce different gradient buckets. Found by
 * `DistributedDataParallel` before any bucket is reduced, and thrown on every rank. Also thrown by
 * `movePatterns`, before any pattern moves, when the ranks' SparseOptimizers would move different layers
 * (a layer frozen on some ranks only). `parameters` names each parameter that differs (its name in the wrapped model).
 */
export class GradientMismatchError extends DistributedError {
  override name = "GradientMismatchError";
  constructor(
    readonly parameters: readonly string[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
