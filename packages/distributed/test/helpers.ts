import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const PACKAGE = resolve(import.meta.dirname, "..");

export interface JobResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `test/children/<script>` on `nproc` ranks through the launcher (from source, with tsx),
 * passing a fresh output folder as the script's first argument. The whole job is killed after
 * `timeoutMs`, so a hang fails the test instead of blocking the run.
 */
export async function runJob(nproc: number, script: string, args: string[] = [], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<JobResult & { out: string }> {
  const out = mkdtempSync(join(tmpdir(), "blocksparse-distributed-"));
  const result = await runNode(["--import", "tsx", "src/cli.ts", "--nproc-per-node", String(nproc), join("test", "children", script), out, ...args], options);
  return { ...result, out };
}

/** The launcher's entry, from source (run it with `--import tsx`). */
export const LAUNCHER_SOURCE = join(PACKAGE, "src", "cli.ts");

/** `node <args>` in the package folder (or `cwd`), workspace packages resolving to their sources. */
export function runNode(args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<JobResult> {
  const child = spawn(process.execPath, args, {
    cwd: options.cwd ?? PACKAGE,
    env: { ...process.env, ...options.env, TSX_TSCONFIG_PATH: join(PACKAGE, "test", "children", "tsconfig.json") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  return new Promise((done) => {
    // The launcher forwards SIGTERM to its ranks and SIGKILLs them after its grace period.
    const timer = setTimeout(() => child.kill("SIGTERM"), options.timeoutMs ?? 50_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

export function readRankResults<T>(out: string, worldSize: number): T[] {
  return Array.from({ length: worldSize }, (_, rank) => JSON.parse(readFileSync(join(out, `rank${rank}.json`), "utf8")) as T);
}

export function removeOutput(out: string): void {
  rmSync(out, { recursive: true, force: true });
}
