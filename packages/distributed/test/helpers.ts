import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect as connectSocket, createServer, type Server, type Socket } from "node:net";
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

/** A TCP port free on 127.0.0.1 a moment ago, for a job whose store listens on a port given in advance. */
export function freePort(): Promise<number> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface RankResult extends JobResult {
  signal: NodeJS.Signals | null;
}

/**
 * Runs `test/children/<script>` as `worldSize` ranks started without the launcher, as a cluster's job
 * script would: RANK, WORLD_SIZE and MASTER_PORT (`port`, default a free one) set, rank 0 hosting
 * the store. Every rank still running after `timeoutMs` is killed, so a hang fails the test instead
 * of blocking the run.
 */
export async function runRanks(worldSize: number, script: string, args: string[] = [], options: { timeoutMs?: number; port?: number } = {}): Promise<{ out: string; ranks: RankResult[] }> {
  const out = mkdtempSync(join(tmpdir(), "blocksparse-distributed-"));
  const port = options.port ?? (await freePort());
  const ranks = Array.from({ length: worldSize }, (_, rank) => {
    const child = spawn(process.execPath, ["--import", "tsx", join("test", "children", script), out, ...args], {
      cwd: PACKAGE,
      env: {
        ...process.env,
        BLOCKSPARSE_LAUNCHER_STORE: undefined,
        BLOCKSPARSE_JOB_ID: undefined,
        RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(port),
        TSX_TSCONFIG_PATH: join(PACKAGE, "test", "children", "tsconfig.json"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 50_000);
    return new Promise<RankResult>((done) => {
      // "close", not "exit": the rank's output is all read by then.
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        done({ code, signal, stdout, stderr });
      });
    });
  });
  return { out, ranks: await Promise.all(ranks) };
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

/** A TCP proxy to a store: what `storeProxy` gives. */
export interface StoreProxy {
  port: number;
  /** Holds back the store's answers to the client, from now on. */
  hold: () => void;
  /** Lets the held answers through, and the next ones as they come. */
  release: () => void;
  /** Nothing more goes either way on the connections open now, as when the network between a rank and the store fails. */
  cut: () => void;
  /** Closes the proxy and its connections. */
  close: () => Promise<void>;
}

/**
 * A TCP proxy on 127.0.0.1 to the store at `port`, whose answers to the client can be held back (`hold`) and let through
 * later (`release`): a rank whose store answers come late, as on a loaded host, without waiting out real seconds; or cut
 * (`cut`), both ways, with both ends still up.
 */
export async function storeProxy(port: number): Promise<StoreProxy> {
  let holding = false;
  const held: (() => void)[] = [];
  const sockets = new Set<Socket>();
  const cutOff = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connectSocket(port, "127.0.0.1");
    sockets.add(client).add(upstream);
    client.on("data", (chunk) => cutOff.has(client) || upstream.write(chunk));
    upstream.on("data", (chunk) => cutOff.has(client) || (holding ? held.push(() => client.write(chunk)) : client.write(chunk)));
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    port: (server.address() as { port: number }).port,
    hold: () => {
      holding = true;
    },
    release: () => {
      holding = false;
      for (const write of held.splice(0)) write();
    },
    cut: () => {
      for (const socket of sockets) cutOff.add(socket);
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((done) => server.close(() => done()));
    },
  };
}
