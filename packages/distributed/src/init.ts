import { optionsArg, ValueError } from "@blocksparse/core";
import { CpuProcessGroup } from "./cpu_group";
import { checkDistributedEnv, type DistributedEnv, readDistributedEnv } from "./env";
import { NcclProcessGroup } from "./nccl_group";
import type { ProcessGroup } from "./process_group";
import { Rendezvous } from "./rendezvous";

export interface InitProcessGroupOptions {
  /** "cpu" (through the TCP store) or "nccl" (GPUs; needs @blocksparse/backend-cuda and libnccl.so.2). Default "cpu". */
  backend?: "cpu" | "nccl";
  /** How long a rank waits for its peers at the rendezvous and in each collective (default 5 minutes). */
  timeoutMs?: number;
  /**
   * How long a rank waits for its peers at the rendezvous alone (default `timeoutMs`), as torchrun's
   * `join_timeout`: ranks that start minutes apart (a slow node, a large import) need not make every
   * collective wait as long.
   */
  joinTimeoutMs?: number;
  /** The launcher's variables (default: read from process.env with readDistributedEnv). */
  env?: DistributedEnv;
}

/**
 * Joins the job the launcher started (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
 * and returns this rank's process group. Every rank of the job must call it; it resolves once
 * all have joined.
 */
export async function initProcessGroup(options: InitProcessGroupOptions = {}): Promise<ProcessGroup> {
  // Unknown names refused (`timeout` for timeoutMs kept the 5-minute default), as every other package's options.
  options = optionsArg("initProcessGroup", options, ["backend", "timeoutMs", "joinTimeoutMs", "env"]);
  const backend = options.backend ?? "cpu";
  if (backend !== "cpu" && backend !== "nccl") throw new ValueError(`initProcessGroup: backend must be "cpu" or "nccl", got ${JSON.stringify(backend)}`);
  const env = options.env ?? readDistributedEnv();
  checkDistributedEnv("initProcessGroup", env);
  const timeouts = { timeoutMs: options.timeoutMs, joinTimeoutMs: options.joinTimeoutMs };
  if (backend === "nccl") return NcclProcessGroup.create(env, timeouts);
  return new CpuProcessGroup(await Rendezvous.join(env, timeouts));
}
