export const version = "0.1.0";

export { CpuProcessGroup } from "./cpu_group";
export { type DistributedEnv, defaultJobId, readDistributedEnv } from "./env";
export { CollectiveError, DistributedEnvError, DistributedError, GradientMismatchError, NcclError, RankFailedError, ReplicaDivergenceError, type ScheduleDifference, ScheduleMismatchError, StoreError, StoreJobMismatchError, StoreProtocolError, StoreTimeoutError } from "./errors";
export { type InitProcessGroupOptions, initProcessGroup } from "./init";
export { NcclProcessGroup } from "./nccl_group";
export { LAUNCHER_USAGE, type LaunchOptions, launch, parseLauncherArgs } from "./launcher";
export type { ProcessGroup, ReduceOp } from "./process_group";
export { CollectTimeoutError, DEFAULT_TIMEOUT_MS, Rendezvous } from "./rendezvous";
export { type StoreConnectOptions, type StoreListenOptions, type StoreTimeout, TcpStore, TcpStoreServer } from "./store";
export { DistributedDataParallel, type DistributedDataParallelOptions } from "./ddp";
