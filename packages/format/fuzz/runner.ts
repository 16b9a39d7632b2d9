import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { FuzzReader, FuzzResult } from "./cases.js";

export interface FuzzOptions {
  reader: FuzzReader;
  cases: number;
  seed?: number;
  /** Child processes running cases at once (default 2). */
  workers?: number;
  /** A case taking longer is a hang (default 10 s). */
  caseTimeoutMs?: number;
  /** Cases sent to a child at a time (default 200). */
  batch?: number;
}

export interface FuzzSummary {
  reader: FuzzReader;
  cases: number;
  accepted: number;
  rejected: number;
  /** Cases whose reader threw something other than a BsrFormatError, or killed its process. */
  crashes: FuzzResult[];
  /** Cases that ran past the timeout. */
  hangs: number[];
  /** .npz cases that decoded to a different matrix without an error. */
  silentlyAccepted: FuzzResult[];
  milliseconds: number;
}

const childScript = fileURLToPath(new URL("./child.ts", import.meta.url));
const packageDir = fileURLToPath(new URL("..", import.meta.url));

/**
 * Runs `cases` mutated files through a reader, each batch in a child process: a case that
 * kills its process counts as a crash and one that stops answering as a hang; either way
 * the child is replaced and the run goes on with the next case.
 */
export async function runFuzz(options: FuzzOptions): Promise<FuzzSummary> {
  const { reader, cases, seed = 1, workers = 2, caseTimeoutMs = 10_000, batch = 200 } = options;
  const started = Date.now();
  const summary: FuzzSummary = { reader, cases, accepted: 0, rejected: 0, crashes: [], hangs: [], silentlyAccepted: [], milliseconds: 0 };
  let next = 0;
  const take = (): [number, number] | null => {
    if (next >= cases) return null;
    const range: [number, number] = [next, Math.min(cases, next + batch)];
    next = range[1];
    return range;
  };
  const record = (result: FuzzResult) => {
    if (result.outcome === "accepted") summary.accepted++;
    else if (result.outcome === "rejected") summary.rejected++;
    else if (result.outcome === "crash") summary.crashes.push(result);
    else summary.silentlyAccepted.push(result);
  };

  /** A child process that runs ranges of cases, one result message per case. */
  const spawnChild = () => {
    const child: ChildProcess = fork(childScript, [], { cwd: packageDir, execArgv: ["--import", "tsx"], stdio: ["ignore", "ignore", "pipe", "ipc"] });
    let stderr = "";
    child.stderr?.on("data", (chunk) => (stderr = (stderr + chunk).slice(-2000)));
    return { child, fresh: true, stderr: () => stderr.trim() };
  };

  /**
   * Runs cases [from, to) in `worker`'s child; resolves with the first index it did not
   * finish (`to` when all did) and whether the child is still usable.
   */
  const runRange = (worker: ReturnType<typeof spawnChild>, from: number, to: number): Promise<{ next: number; alive: boolean }> =>
    new Promise((resolve) => {
      const { child } = worker;
      let expected = from;
      let finished = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (failure: "crash" | "hang" | null, detail?: string) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        child.off("message", onMessage);
        child.off("exit", onExit);
        if (failure === null) return resolve({ next: to, alive: true });
        if (failure === "hang") summary.hangs.push(expected);
        else summary.crashes.push({ index: expected, outcome: "crash", detail });
        child.kill("SIGKILL");
        resolve({ next: expected + 1, alive: false });
      };
      const arm = (ms: number) => {
        clearTimeout(timer);
        timer = setTimeout(() => finish("hang"), ms);
      };
      const onMessage = (message: FuzzResult | { done: true }) => {
        if ("done" in message) return finish(null);
        record(message);
        expected = message.index + 1;
        arm(caseTimeoutMs);
      };
      const onExit = (code: number | null, signal: string | null) => finish("crash", `the process exited (${signal ?? code}) ${worker.stderr()}`);
      child.on("message", onMessage);
      child.on("exit", onExit);
      // A fresh child first has to start (tsx compiles the sources), so its first case gets longer.
      arm(worker.fresh ? caseTimeoutMs + 60_000 : caseTimeoutMs);
      worker.fresh = false;
      child.send({ reader, seed, from, to });
    });

  const lane = async () => {
    let worker = spawnChild();
    for (let range = take(); range !== null; range = take()) {
      let from = range[0];
      while (from < range[1]) {
        const { next: after, alive } = await runRange(worker, from, range[1]);
        if (!alive) worker = spawnChild();
        from = after;
      }
    }
    worker.child.disconnect();
  };
  await Promise.all(Array.from({ length: workers }, lane));
  summary.milliseconds = Date.now() - started;
  return summary;
}

/** One line per reader: counts and the first failures. */
export function describeSummary(summary: FuzzSummary): string {
  const head =
    `${summary.reader}: ${summary.cases} cases in ${(summary.milliseconds / 1000).toFixed(1)} s: ` +
    `${summary.accepted} accepted, ${summary.rejected} rejected with BsrFormatError, ` +
    `${summary.crashes.length} crashes, ${summary.hangs.length} hangs, ${summary.silentlyAccepted.length} silently accepted`;
  const failures = [...summary.crashes, ...summary.silentlyAccepted].slice(0, 5).map((r) => `\n  case ${r.index}: ${r.outcome} ${r.detail ?? ""}`);
  return head + failures.join("") + (summary.hangs.length > 0 ? `\n  hangs: ${summary.hangs.slice(0, 10).join(", ")}` : "");
}
