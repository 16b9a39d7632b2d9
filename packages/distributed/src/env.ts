import { isIP } from "node:net";
import { ValueError } from "@blocksparse/core";
import { DistributedEnvError } from "./errors";

/** What a launcher (blocksparse-run, torchrun, a cluster's job script) tells each rank through its environment. */
export interface DistributedEnv {
  /** This process's rank in [0, worldSize). RANK. */
  rank: number;
  /** The number of processes of the job. WORLD_SIZE. */
  worldSize: number;
  /** The rank among the processes of this host (picks the GPU). LOCAL_RANK, default 0. */
  localRank: number;
  /** Processes on this host. LOCAL_WORLD_SIZE, default worldSize (at most worldSize). */
  localWorldSize: number;
  /** Host of the rendezvous store (rank 0's host). MASTER_ADDR, default 127.0.0.1. */
  masterAddr: string;
  /** Port of the rendezvous store. MASTER_PORT. */
  masterPort: number;
  /** The launcher hosts the store itself (rank 0 then connects to it like every rank). BLOCKSPARSE_LAUNCHER_STORE=1. */
  launcherStore: boolean;
  /**
   * The job's identity, checked in the store's handshake: a rank that reaches another job's store
   * (two jobs given one MASTER_PORT) fails with a StoreJobMismatchError instead of joining it.
   * BLOCKSPARSE_JOB_ID (blocksparse-run sets a random one); without it, defaultJobId(worldSize).
   */
  jobId?: string;
}

/**
 * The job id of ranks started without one (no launcher, no BLOCKSPARSE_JOB_ID): made of what
 * every rank of the job shares, so they agree without being told; jobs of another world size
 * are told apart, two such jobs of one size are not (set BLOCKSPARSE_JOB_ID for that).
 */
export function defaultJobId(worldSize: number): string {
  return `default-world-${worldSize}`;
}

/** What isJobId takes, as the errors say it. */
export const JOB_ID_RULE = "1 to 256 printable characters without spaces";

/** A job id: what BLOCKSPARSE_JOB_ID and --job-id take (printable ASCII, no spaces, at most 256 characters). */
export function isJobId(value: unknown): value is string {
  return typeof value === "string" && /^[\x21-\x7e]{1,256}$/.test(value);
}

/**
 * The host a master address names (trimmed; an IPv6 address's brackets taken off, "[::1]" is
 * "::1"), or why it names none. Node would fail to resolve a port ("10.0.0.1:29500") or a URL
 * ("tcp://10.0.0.1") in it, and the ranks would retry until their timeout.
 */
export function parseMasterAddr(text: string, whereThePortGoes: string): { host: string } | { problem: string } {
  const trimmed = text.trim();
  if (trimmed === "" || /\s/.test(trimmed)) return { problem: "one host name or address" };
  if (trimmed.includes("://")) return { problem: `a host name or address, not a URL (give the port, if any, ${whereThePortGoes})` };
  const bracketed = /^\[([^\]]*)\](.*)$/.exec(trimmed);
  if (bracketed !== null) {
    if (bracketed[2] !== "") return { problem: `a host name or address without a port (give the port ${whereThePortGoes})` };
    return bracketed[1].includes(":") ? { host: bracketed[1] } : { problem: "an IPv6 address inside its brackets" };
  }
  // One colon is host:port (an IPv6 address has two or more).
  if (trimmed.split(":").length === 2) return { problem: `a host name or address without a port (give the port ${whereThePortGoes})` };
  // A scheduler's node list ("node[01-04]", "node1,node2") or a path never resolves either.
  if (isIP(trimmed) === 0 && /[^\w.\-\u0080-\uffff]/.test(trimmed)) return { problem: "one host name (letters, digits, '-', '.' and '_') or IP address" };
  return { host: trimmed };
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number | undefined, min: number): number {
  const text = env[name];
  if (text === undefined || text === "") {
    if (fallback !== undefined) return fallback;
    throw new DistributedEnvError(
      `${name} is not set: run the script through a launcher (blocksparse-run --nproc-per-node N script.js) or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT`,
    );
  }
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min) {
    throw new DistributedEnvError(`${name} must be an integer >= ${min}, got '${text}'`);
  }
  return value;
}

/** Reads and checks the launcher's variables (default: this process's environment). */
export function readDistributedEnv(env: NodeJS.ProcessEnv = process.env): DistributedEnv {
  if (env === null || typeof env !== "object") throw new ValueError(`readDistributedEnv: env must be an object of environment variables, got ${describeValue(env)}`);
  const worldSize = integer(env, "WORLD_SIZE", undefined, 1);
  const rank = integer(env, "RANK", undefined, 0);
  if (rank >= worldSize) throw new DistributedEnvError(`RANK=${rank} is out of range for WORLD_SIZE=${worldSize} (ranks are 0 to ${worldSize - 1})`);
  const localWorldSize = integer(env, "LOCAL_WORLD_SIZE", worldSize, 1);
  // A host cannot hold more of the job's processes than the job has: one of the two variables is wrong.
  if (localWorldSize > worldSize) throw new DistributedEnvError(`LOCAL_WORLD_SIZE=${localWorldSize} is more than WORLD_SIZE=${worldSize}: a host runs at most the job's processes`);
  const localRank = integer(env, "LOCAL_RANK", 0, 0);
  if (localRank >= localWorldSize) {
    throw new DistributedEnvError(`LOCAL_RANK=${localRank} is out of range for LOCAL_WORLD_SIZE=${localWorldSize}`);
  }
  const masterPort = integer(env, "MASTER_PORT", undefined, 1);
  if (masterPort > 65535) throw new DistributedEnvError(`MASTER_PORT must be a TCP port (1 to 65535), got ${masterPort}`);
  // Trimmed like the numbers: a host name with a stray space would not resolve, and the ranks would retry until the timeout.
  const address = env.MASTER_ADDR === undefined || env.MASTER_ADDR === "" ? { host: "127.0.0.1" } : parseMasterAddr(env.MASTER_ADDR, "in MASTER_PORT");
  if ("problem" in address) {
    throw new DistributedEnvError(`MASTER_ADDR must be ${address.problem} (of rank 0's host), got '${env.MASTER_ADDR}'`);
  }
  const masterAddr = address.host;
  const jobIdText = env.BLOCKSPARSE_JOB_ID?.trim() ?? "";
  if (jobIdText !== "" && !isJobId(jobIdText)) {
    throw new DistributedEnvError(`BLOCKSPARSE_JOB_ID must be ${JOB_ID_RULE} (the same on every rank of the job), got '${env.BLOCKSPARSE_JOB_ID}'`);
  }
  const jobId = jobIdText === "" ? defaultJobId(worldSize) : jobIdText;
  // "true" read as not set: rank 0 then hosted a store of its own on the launcher's port and failed with the port in use.
  const launcherStoreText = env.BLOCKSPARSE_LAUNCHER_STORE?.trim() ?? "";
  if (launcherStoreText !== "" && launcherStoreText !== "0" && launcherStoreText !== "1") {
    throw new DistributedEnvError(`BLOCKSPARSE_LAUNCHER_STORE must be 1 (the launcher hosts the store) or 0, got '${env.BLOCKSPARSE_LAUNCHER_STORE}'`);
  }
  return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort, launcherStore: launcherStoreText === "1", jobId };
}

function describeValue(value: unknown): string {
  return typeof value === "string" ? `the string '${value}'` : value === null ? "null" : typeof value === "object" ? "an object" : String(value);
}

/**
 * Checks an environment a caller built (initProcessGroup's `env` option) by the rules
 * readDistributedEnv applies to the variables: a rank given as a string or out of range would
 * otherwise hang the rendezvous instead of failing.
 */
export function checkDistributedEnv(where: string, env: unknown): asserts env is DistributedEnv {
  if (env === null || typeof env !== "object") throw new ValueError(`${where}: env must be an object like readDistributedEnv() returns, got ${describeValue(env)}`);
  const fields = env as Record<string, unknown>;
  const integer = (name: string, min: number, max: number): number => {
    const value = fields[name];
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new ValueError(`${where}: env.${name} must be an integer in [${min}, ${max}], got ${describeValue(value)}`);
    }
    return value;
  };
  const worldSize = integer("worldSize", 1, Number.MAX_SAFE_INTEGER);
  integer("rank", 0, worldSize - 1);
  const localWorldSize = integer("localWorldSize", 1, worldSize);
  integer("localRank", 0, localWorldSize - 1);
  integer("masterPort", 1, 65535);
  if (typeof fields.masterAddr !== "string" || fields.masterAddr === "" || /\s/.test(fields.masterAddr)) {
    throw new ValueError(`${where}: env.masterAddr must be a host name or address, got ${describeValue(fields.masterAddr)}`);
  }
  // As readDistributedEnv returns it: the bare host, without a port, a scheme or brackets.
  const address = parseMasterAddr(fields.masterAddr, "as env.masterPort");
  if ("problem" in address || address.host !== fields.masterAddr) {
    const problem = "problem" in address ? address.problem : "an IPv6 address without its brackets";
    throw new ValueError(`${where}: env.masterAddr must be ${problem}, got ${describeValue(fields.masterAddr)}`);
  }
  if (typeof fields.launcherStore !== "boolean") throw new ValueError(`${where}: env.launcherStore must be true or false, got ${describeValue(fields.launcherStore)}`);
  if (fields.jobId !== undefined && !isJobId(fields.jobId)) {
    throw new ValueError(`${where}: env.jobId must be ${JOB_ID_RULE}, or left out, got ${describeValue(fields.jobId)}`);
  }
}
