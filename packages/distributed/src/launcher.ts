/**
 * blocksparse-run: starts the ranks of a data-parallel job on this host, like torchrun. Each rank
 * is `node <script> <args>` with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT and BLOCKSPARSE_JOB_ID set; the launcher of node 0 hosts the rendezvous store. Signals go to every rank;
 * when one rank fails, the others are stopped and the launcher exits with its code.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { constants } from "node:os";
import { optionsArg, ValueError } from "@blocksparse/core";
import { defaultJobId, isJobId, JOB_ID_RULE, parseMasterAddr } from "./env";
import { TcpStoreServer } from "./store";

export interface LaunchOptions {
  /** Processes started on this host (one per GPU, usually). */
  nprocPerNode: number;
  /** Hosts in the job (default 1). */
  nnodes?: number;
  /** This host's index in [0, nnodes) (default 0); node 0 hosts the store. */
  nodeRank?: number;
  /** Address of node 0, where the store listens (default 127.0.0.1). */
  masterAddr?: string;
  /** Port of the store (default: a free port on one host; required with several hosts). */
  masterPort?: number;
  /**
   * The job's id, given to every rank as BLOCKSPARSE_JOB_ID and checked by the store's handshake
   * (torchrun's --rdzv-id). Default: BLOCKSPARSE_JOB_ID of `env` or of this process; else a random
   * id on one host, and with several hosts (which must agree) the ranks' default, "default-world-<WORLD_SIZE>".
   */
  jobId?: string;
  /** The script every rank runs, and its arguments. */
  script: string;
  args?: readonly string[];
  /** Node options for every rank (default: this process's, e.g. --import tsx or --enable-source-maps; not -e, -p, -i or -c). */
  nodeOptions?: readonly string[];
  /** Extra environment for every rank. */
  env?: NodeJS.ProcessEnv;
  /** How long ranks get to exit after SIGTERM before SIGKILL, when the job is stopped (default 5 s). */
  killGraceMs?: number;
  /** Where the launcher's own messages go (default: stderr). */
  log?: (line: string) => void;
}

export const LAUNCHER_USAGE = `usage: blocksparse-run --nproc-per-node N [--nnodes M --node-rank K --master-addr ADDR --master-port PORT --job-id ID] [--] script.js [script args]
       blocksparse-run --help

  --nproc-per-node N   processes to start on this host (one per GPU)
  --nnodes M           hosts in the job (default 1)
  --node-rank K        this host's index, 0 to M-1 (default 0); node 0 hosts the rendezvous store
  --master-addr ADDR   address of node 0 that every host can reach (default 127.0.0.1)
  --master-port PORT   port of the store on node 0 (default: a free port; required when M > 1)
  --job-id ID          the job's id, the same on every host (default: $BLOCKSPARSE_JOB_ID, else random on one host);
                       a rank that reaches the store of a job with another id fails instead of joining it

Each rank runs \`node script.js args\` with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and BLOCKSPARSE_JOB_ID set.`;

const OPTION_NAMES: Record<string, keyof LaunchOptions> = {
  "nproc-per-node": "nprocPerNode",
  nnodes: "nnodes",
  "node-rank": "nodeRank",
  "master-addr": "masterAddr",
  "master-port": "masterPort",
  "job-id": "jobId",
};

/**
 * Whether the launcher's options (those before the script or `--`) ask for its usage: `--help` or `-h`, as torchrun's.
 * One after the script is the script's own.
 */
function asksForHelp(argv: readonly string[]): boolean {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") return true;
    if (arg === "--" || !arg.startsWith("--")) return false;
    // An option without `=` takes the next argument as its value.
    if (!arg.includes("=")) i++;
  }
  return false;
}

/**
 * blocksparse-run's command line, run to its end: resolves with the exit code. `--help` or `-h` prints the usage to
 * `stdout` and exits 0 (as torchrun's); bad options print their error and the usage to `stderr` and exit 2.
 */
export async function runLauncherCommand(argv: readonly string[], output: { stdout: (text: string) => void; stderr: (text: string) => void } = { stdout: (text) => process.stdout.write(text), stderr: (text) => process.stderr.write(text) }): Promise<number> {
  if (asksForHelp(argv)) {
    output.stdout(`${LAUNCHER_USAGE}\n`);
    return 0;
  }
  let options: LaunchOptions;
  try {
    options = parseLauncherArgs(argv);
    // Checked here too, so that a value out of range (--nproc-per-node 0, --master-port 70000) comes with the usage as
    // a parse error does; launch checks them again for callers of its own.
    checkLaunchOptions(options);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    output.stderr(`${message.includes(LAUNCHER_USAGE) ? message : `${message}\n${LAUNCHER_USAGE}`}\n`);
    return 2;
  }
  try {
    return await launch(options);
  } catch (error) {
    output.stderr(`${error instanceof Error ? error.message : String(error)}\n`);
    return 2;
  }
}

/** The launcher's options from its command line: options up to the script, then the script's own arguments untouched. */
export function parseLauncherArgs(argv: readonly string[]): LaunchOptions {
  const values: Record<string, string> = {};
  let i = 0;
  while (i < argv.length && argv[i].startsWith("--")) {
    // `--` ends the launcher's options (as in most command lines): the script and its arguments follow.
    if (argv[i] === "--") {
      i++;
      break;
    }
    const [flag, inline] = argv[i].slice(2).split(/=(.*)/s, 2);
    const name = flag.replaceAll("_", "-");
    // Its own names only: `in` also found Object's ("--constructor 2" was taken, and dropped, without a word).
    if (!Object.hasOwn(OPTION_NAMES, name)) throw new ValueError(`blocksparse-run: unknown option --${flag}\n${LAUNCHER_USAGE}`);
    const value = inline ?? argv[++i];
    if (value === undefined) throw new ValueError(`blocksparse-run: --${flag} needs a value\n${LAUNCHER_USAGE}`);
    values[name] = value;
    i++;
  }
  if (i >= argv.length) throw new ValueError(`blocksparse-run: no script given\n${LAUNCHER_USAGE}`);
  // Node would take it for one of its own options (`-n 2`: "bad option", exit code 9 on every rank), not for the script.
  if (argv[i].startsWith("-")) {
    throw new ValueError(`blocksparse-run: unknown option ${argv[i]} (the launcher's options are spelt with two dashes; a script whose name starts with '-' is given as ./${argv[i]})\n${LAUNCHER_USAGE}`);
  }
  const integer = (name: string): number | undefined => {
    const text = values[name];
    if (text === undefined) return undefined;
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new ValueError(`blocksparse-run: --${name} must be a non-negative integer, got '${text}'`);
    return Number(text);
  };
  const nprocPerNode = integer("nproc-per-node");
  if (nprocPerNode === undefined) throw new ValueError(`blocksparse-run: --nproc-per-node is required\n${LAUNCHER_USAGE}`);
  return {
    nprocPerNode,
    nnodes: integer("nnodes"),
    nodeRank: integer("node-rank"),
    masterAddr: values["master-addr"],
    masterPort: integer("master-port"),
    jobId: values["job-id"],
    script: argv[i],
    args: argv.slice(i + 1),
  };
}

function checkLaunchOptions(options: LaunchOptions): Required<Pick<LaunchOptions, "nprocPerNode" | "nnodes" | "nodeRank" | "masterAddr" | "jobId">> {
  options = optionsArg("launch", options, ["nprocPerNode", "nnodes", "nodeRank", "masterAddr", "masterPort", "jobId", "script", "args", "nodeOptions", "env", "killGraceMs", "log"]);
  const { nprocPerNode, nnodes = 1, nodeRank = 0, masterAddr = "127.0.0.1", masterPort } = options;
  // A number given as a string ("2", from an argument parser) is named as one: "must be at least 1, got 2" would puzzle.
  if (!Number.isSafeInteger(nprocPerNode) || nprocPerNode < 1) throw new ValueError(`blocksparse-run: --nproc-per-node must be at least 1, got ${shown(nprocPerNode)}`);
  if (!Number.isSafeInteger(nnodes) || nnodes < 1) throw new ValueError(`blocksparse-run: --nnodes must be at least 1, got ${shown(nnodes)}`);
  if (!Number.isSafeInteger(nnodes * nprocPerNode)) throw new ValueError(`blocksparse-run: --nnodes x --nproc-per-node is too large (${nnodes} x ${nprocPerNode})`);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new ValueError(`blocksparse-run: --node-rank must be in [0, ${nnodes - 1}], got ${shown(nodeRank)}`);
  // An empty address would reach the ranks as MASTER_ADDR="", which they read as 127.0.0.1: another host than node 0.
  // One with a port or a scheme would not resolve: node 1's ranks would retry it until their timeout.
  const parsed = typeof masterAddr === "string" ? parseMasterAddr(masterAddr, "with --master-port") : { problem: "one host name or address" };
  if ("problem" in parsed) {
    throw new ValueError(`blocksparse-run: --master-addr must be ${parsed.problem}, got ${JSON.stringify(masterAddr)}`);
  }
  const address = parsed.host;
  if (nnodes > 1 && masterPort === undefined) throw new ValueError("blocksparse-run: --master-port is required with --nnodes > 1 (every host must name the same port)");
  if (masterPort !== undefined && !(Number.isInteger(masterPort) && masterPort >= 1 && masterPort <= 65535)) {
    throw new ValueError(`blocksparse-run: --master-port must be a TCP port (1 to 65535), got ${shown(masterPort)}`);
  }
  if (typeof options.script !== "string" || options.script === "") throw new ValueError("blocksparse-run: no script given");
  if (options.script.startsWith("-")) throw new ValueError(`launch: script ${JSON.stringify(options.script)} would be read by node as an option: give it as ./${options.script}`);
  // A string would be spread into one argument per character; a NaN or negative grace would SIGKILL the ranks at once.
  for (const name of ["args", "nodeOptions"] as const) {
    const list = options[name];
    if (list !== undefined && !(Array.isArray(list) && list.every((item) => typeof item === "string"))) {
      throw new ValueError(`launch: ${name} must be an array of strings, got ${shown(list)}`);
    }
  }
  const { killGraceMs } = options;
  if (killGraceMs !== undefined && !(typeof killGraceMs === "number" && killGraceMs >= 0 && killGraceMs <= MAX_TIMER_MS)) {
    throw new ValueError(`launch: killGraceMs must be a number of milliseconds in [0, ${MAX_TIMER_MS}], got ${shown(killGraceMs)}`);
  }
  // A string would be spread into variables named "0", "1", ...: none of what was meant would reach the ranks.
  if (options.env !== undefined && (options.env === null || typeof options.env !== "object" || Array.isArray(options.env))) {
    throw new ValueError(`launch: env must be an object of environment variables, got ${shown(options.env)}`);
  }
  if (options.log !== undefined && typeof options.log !== "function") throw new ValueError(`launch: log must be a function, got ${shown(options.log)}`);
  // The variable as the ranks read it: trimmed, and unset when blank.
  const fromEnv = (options.env?.BLOCKSPARSE_JOB_ID ?? process.env.BLOCKSPARSE_JOB_ID)?.trim() || undefined;
  const given = options.jobId ?? fromEnv;
  if (given !== undefined && !isJobId(given)) throw new ValueError(`blocksparse-run: --job-id must be ${JOB_ID_RULE}, got ${JSON.stringify(given)}`);
  // One host: a fresh id per launch. Several hosts must agree without talking: the ranks' own default, unless given.
  const jobId = given ?? (nnodes === 1 ? randomUUID() : defaultJobId(nnodes * nprocPerNode));
  return { nprocPerNode, nnodes, nodeRank, masterAddr: address, jobId };
}

/** The longest delay Node's timers take (about 24.8 days); a longer one would fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Node options that run other code than a script (`-e`, `-p`, the REPL, a syntax check), with whether they take the next argument. */
const ENTRY_OPTIONS: Readonly<Record<string, boolean>> = { "-e": true, "--eval": true, "-p": true, "--print": true, "-pe": true, "-i": false, "--interactive": false, "-c": false, "--check": false };

/**
 * The launcher's own Node options as the ranks get them by default: all but ENTRY_OPTIONS. Passed on, `node -e` code
 * that calls launch() ran in every rank instead of its script, each rank launching the job again, without end.
 */
function inheritedNodeOptions(execArgv: readonly string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const [flag, value] = execArgv[i].split(/=(.*)/s, 2);
    if (!Object.hasOwn(ENTRY_OPTIONS, flag)) kept.push(execArgv[i]);
    else if (ENTRY_OPTIONS[flag] && value === undefined) i++;
  }
  return kept;
}

/** An option's value as an error shows it: a string quoted and called one, so that "2" is not read as 2. */
function shown(value: unknown): string {
  if (typeof value === "string") return `the string ${JSON.stringify(value)}`;
  if (Array.isArray(value)) return "an array";
  return value === null ? "null" : typeof value === "object" ? "an object" : String(value);
}

/** Runs the job's ranks of this host to the end; resolves with the exit code the launcher should exit with. */
export async function launch(options: LaunchOptions): Promise<number> {
  const { nprocPerNode, nnodes, nodeRank, masterAddr, jobId } = checkLaunchOptions(options);
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const killGraceMs = options.killGraceMs ?? 5000;
  // Node 0's launcher hosts the store: it lives as long as the job, whichever rank exits first.
  const store = nodeRank === 0 ? await TcpStoreServer.listenForJob(masterAddr, options.masterPort ?? 0, { jobId }) : null;
  const masterPort = store?.port ?? (options.masterPort as number);
  const worldSize = nnodes * nprocPerNode;
  const children: { rank: number; child: ChildProcess; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }[] = [];
  let stopping = false;
  let failure: { rank: number; code: number; reason: string } | null = null;
  // Ranks that exited with code 0 while the job ran: a rank failing later may have failed for want of them.
  const exitedEarly: number[] = [];

  // Each rank leads a process group of its own (POSIX), so that stopping it also stops what it started (a data loader,
  // a compiler): the whole group is signalled, also after the rank itself has exited, as its subprocesses may not have.
  const ownGroups = process.platform !== "win32";
  const signalRank = (child: ChildProcess, signal: NodeJS.Signals) => {
    if (ownGroups && child.pid !== undefined) {
      try {
        process.kill(-child.pid, signal);
      } catch {
        // ESRCH: nothing of the group is left.
      }
    } else if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
    }
  };
  // When the grace ends, SIGKILL for what is left. Only while launch() runs: once it has resolved, a group id may be
  // another process's (reused), so the last wait below does this itself and the timer is cleared.
  let killDeadline: number | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  const stopAll = (signal: NodeJS.Signals) => {
    for (const { child } of children) signalRank(child, signal);
    killDeadline ??= Date.now() + killGraceMs;
    killTimer ??= setTimeout(() => {
      for (const { child } of children) signalRank(child, "SIGKILL");
    }, killGraceMs);
    killTimer.unref();
  };
  // Whether anything of a rank's group is still running (its own subprocesses, after the rank exited).
  const groupAlive = (child: ChildProcess): boolean => {
    if (!ownGroups || child.pid === undefined) return false;
    try {
      process.kill(-child.pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const forward = (signal: NodeJS.Signals) => {
    if (failure === null) failure = { rank: -1, code: 128 + (constants.signals[signal] ?? 15), reason: `received ${signal}` };
    stopping = true;
    stopAll(signal);
  };
  // Every signal whose default would end the launcher alone: the ranks run in sessions of their own, so a launcher
  // killed by one (Ctrl-\'s SIGQUIT, a scheduler's SIGUSR2) left every rank running with no parent. torchrun's agent
  // stops its workers on SIGINT, SIGTERM, SIGHUP and SIGQUIT.
  const handled: NodeJS.Signals[] = ownGroups ? ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR2"] : ["SIGINT", "SIGTERM"];
  const handlers = new Map(handled.map((signal) => [signal, () => forward(signal)]));
  for (const [signal, handler] of handlers) process.on(signal, handler);

  try {
    for (let localRank = 0; localRank < nprocPerNode; localRank++) {
      const rank = nodeRank * nprocPerNode + localRank;
      const child = spawn(process.execPath, [...(options.nodeOptions ?? inheritedNodeOptions(process.execArgv)), options.script, ...(options.args ?? [])], {
        stdio: "inherit",
        // A new process group (and session) led by the rank; its output still goes to the launcher's. A terminal's
        // Ctrl-C, or its hangup, then reaches the launcher alone, which forwards it to every rank's group (above).
        detached: ownGroups,
        env: {
          ...process.env,
          ...options.env,
          RANK: String(rank),
          WORLD_SIZE: String(worldSize),
          LOCAL_RANK: String(localRank),
          LOCAL_WORLD_SIZE: String(nprocPerNode),
          GROUP_RANK: String(nodeRank),
          MASTER_ADDR: masterAddr,
          MASTER_PORT: String(masterPort),
          BLOCKSPARSE_JOB_ID: jobId,
          BLOCKSPARSE_LAUNCHER_STORE: "1",
        },
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
        child.once("error", (error) => {
          log(`blocksparse-run: rank ${rank} could not start: ${error.message}`);
          resolve({ code: 1, signal: null });
        });
        child.once("exit", (code, signal) => resolve({ code, signal }));
      });
      children.push({ rank, child, exited });
      exited.then(({ code, signal }) => {
        // A rank outside any process group when it exits (it never joined one, or destroyed it) has no connection to the
        // store whose closing would tell the others: the store is told here, and fails whatever waits for it at once.
        store?.rankExited(rank, signal ?? code ?? 1);
        if (code === 0 && !stopping) exitedEarly.push(rank);
        if (code === 0 || stopping) return;
        const reason = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
        failure = { rank, code: signal !== null ? 128 + (constants.signals[signal] ?? 1) : (code ?? 1), reason };
        stopping = true;
        log(
          `blocksparse-run: rank ${rank} (pid ${child.pid}) ${reason}; stopping the other ${worldSize > 1 ? `${children.length - 1} rank(s) of this host` : "ranks"}`,
        );
        stopAll("SIGTERM");
      });
    }
    await Promise.all(children.map(({ exited }) => exited));
    // A stopped job's ranks are gone; what they started gets the rest of the grace, then SIGKILL, before launch returns.
    if (killDeadline !== null) {
      while (Date.now() < killDeadline && children.some(({ child }) => groupAlive(child))) await new Promise((done) => setTimeout(done, 50));
      for (const { child } of children) if (groupAlive(child)) signalRank(child, "SIGKILL");
    }
  } finally {
    if (killTimer !== null) clearTimeout(killTimer);
    for (const [signal, handler] of handlers) process.off(signal, handler);
    await store?.close();
  }
  const failed = failure as { rank: number; code: number; reason: string } | null;
  if (failed === null) return 0;
  if (failed.rank >= 0) {
    const before = exitedEarly.filter((rank) => rank !== failed.rank);
    const early = before.length === 0 ? "" : ` (before it, rank${before.length > 1 ? "s" : ""} ${before.join(", ")} exited with code 0)`;
    log(`blocksparse-run: the job failed: rank ${failed.rank} ${failed.reason}${early}`);
  }
  return failed.code === 0 ? 1 : failed.code;
}
