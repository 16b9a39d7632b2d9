import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ValueError } from "@blocksparse/core";
import { afterAll, describe, expect, it } from "vitest";
import { LAUNCHER_USAGE, launch, parseLauncherArgs, runLauncherCommand } from "../src/launcher";
import { LAUNCHER_SOURCE, removeOutput, runJob, runNode } from "./helpers";

const outputs: string[] = [];
afterAll(() => outputs.forEach(removeOutput));

/** Whether process `pid` still exists (signal 0 checks without signalling). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("blocksparse-run", () => {
  it("parses its options up to the script and leaves the script's arguments alone", () => {
    expect(parseLauncherArgs(["--nproc-per-node", "2", "--master_port=1234", "train.js", "--nproc-per-node", "9", "x"])).toEqual({
      nprocPerNode: 2,
      nnodes: undefined,
      nodeRank: undefined,
      masterAddr: undefined,
      masterPort: 1234,
      script: "train.js",
      args: ["--nproc-per-node", "9", "x"],
    });
  });

  it("takes -- as the end of its options: what follows is the script and its arguments", () => {
    expect(parseLauncherArgs(["--nproc-per-node", "2", "--", "train.js", "--lr", "1"])).toMatchObject({ nprocPerNode: 2, script: "train.js", args: ["--lr", "1"] });
    expect(() => parseLauncherArgs(["--nproc-per-node", "2", "--"])).toThrow(/no script given/);
  });

  it("refuses a missing script, an unknown option, a non-integer count, each with the usage", () => {
    expect(() => parseLauncherArgs(["--nproc-per-node", "2"])).toThrow(/no script given[\s\S]*usage: blocksparse-run/);
    expect(() => parseLauncherArgs(["--nprocs", "2", "a.js"])).toThrow(/unknown option --nprocs/);
    expect(() => parseLauncherArgs(["--nproc-per-node", "two", "a.js"])).toThrow(ValueError);
    expect(() => parseLauncherArgs(["a.js"])).toThrow(/--nproc-per-node is required/);
  });

  it("refuses names of Object's prototype and single-dash options, which it took silently or handed to node as the script", async () => {
    for (const name of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
      expect(() => parseLauncherArgs([`--${name}`, "2", "--nproc-per-node", "1", "a.js"])).toThrow(new RegExp(`unknown option --${name}\\n`));
    }
    expect(() => parseLauncherArgs(["-nproc-per-node", "2", "a.js"])).toThrow(/^blocksparse-run: unknown option -nproc-per-node \(the launcher's options are spelt with two dashes/);
    expect(() => parseLauncherArgs(["--nproc-per-node", "2", "-n", "a.js"])).toThrow(/unknown option -n /);
    expect(() => parseLauncherArgs(["--nproc-per-node", "2", "--", "-x.js"])).toThrow(/a script whose name starts with '-' is given as \.\/-x\.js/);
    expect(parseLauncherArgs(["--nproc-per-node", "2", "./-x.js", "-n"])).toMatchObject({ script: "./-x.js", args: ["-n"] });
    const job = { nprocPerNode: 1, script: "does-not-exist.js", nodeOptions: [], log: () => {} };
    await expect(launch({ ...job, script: "-e" })).rejects.toThrow('launch: script "-e" would be read by node as an option: give it as ./-e');
    await expect(launch({ ...job, env: "A=1" as never })).rejects.toThrow('launch: env must be an object of environment variables, got the string "A=1"');
  });

  it("--help or -h among its options prints the usage on stdout and exits 0, as torchrun's (it was an unknown option, exit code 2); after the script it is the script's", async () => {
    const run = async (argv: string[]) => {
      const printed = { stdout: "", stderr: "" };
      const code = await runLauncherCommand(argv, { stdout: (text) => (printed.stdout += text), stderr: (text) => (printed.stderr += text) });
      return { code, ...printed };
    };
    for (const argv of [["--help"], ["-h"], ["--nproc-per-node", "2", "--help"], ["--nproc-per-node=2", "-h", "train.js"]]) {
      expect(await run(argv)).toEqual({ code: 0, stdout: `${LAUNCHER_USAGE}\n`, stderr: "" });
    }
    expect(parseLauncherArgs(["--nproc-per-node", "2", "train.js", "--help"])).toMatchObject({ script: "train.js", args: ["--help"] });
    const unknown = await run(["--nprocs", "2", "a.js"]);
    expect(unknown).toMatchObject({ code: 2, stdout: "" });
    expect(unknown.stderr).toMatch(/^blocksparse-run: unknown option --nprocs\nusage: blocksparse-run/);
    // Values out of range print the usage too (only their one-line error was printed), and a non-integer's error once.
    for (const argv of [["--nproc-per-node", "0", "a.js"], ["--nproc-per-node", "1", "--master-port", "70000", "a.js"], ["--nproc-per-node", "1", "--node-rank", "1", "a.js"], ["--nproc-per-node", "x", "a.js"]]) {
      const refused = await run(argv);
      expect(refused).toMatchObject({ code: 2, stdout: "" });
      expect(refused.stderr, argv.join(" ")).toMatch(/^[^\n]*--(nproc-per-node|master-port|node-rank)[^\n]*\nusage: blocksparse-run/);
      expect(refused.stderr.split("usage: blocksparse-run").length).toBe(2);
    }
  });

  it("refuses a count too large to be an integer (it would start processes until the host gives out)", () => {
    expect(() => parseLauncherArgs(["--nproc-per-node", "99999999999999999999999", "a.js"])).toThrow(/--nproc-per-node must be a non-negative integer, got '99999999999999999999999'/);
    expect(() => parseLauncherArgs(["--nproc-per-node", "1", "--master-port", "18446744073709551617", "a.js"])).toThrow(ValueError);
  });

  it("launch refuses a negative node rank and an empty master address before starting any rank", async () => {
    // Were a rank started, it would fail on its missing script: the job would exit with code 1 instead of refusing.
    const job = { nprocPerNode: 1, script: "does-not-exist.js", nodeOptions: [], log: () => {} };
    await expect(launch({ ...job, nnodes: 2, nodeRank: -1, masterPort: 29500 })).rejects.toThrow(/--node-rank must be in \[0, 1\], got -1/);
    // Node 1 would give its ranks MASTER_ADDR="", which they read as 127.0.0.1: not node 0.
    await expect(launch({ ...job, nnodes: 2, nodeRank: 1, masterPort: 29500, masterAddr: "" })).rejects.toThrow(/--master-addr must be one host name or address, got ""/);
    await expect(launch({ ...job, masterAddr: " " })).rejects.toThrow(ValueError);
    // Node 1's ranks could not resolve these: they would retry them until their timeout.
    await expect(launch({ ...job, nnodes: 2, nodeRank: 1, masterPort: 29500, masterAddr: "10.0.0.1:29500" })).rejects.toThrow(
      'blocksparse-run: --master-addr must be a host name or address without a port (give the port with --master-port), got "10.0.0.1:29500"',
    );
    await expect(launch({ ...job, nnodes: 2, nodeRank: 1, masterPort: 29500, masterAddr: "tcp://10.0.0.1" })).rejects.toThrow(/--master-addr must be a host name or address, not a URL/);
    await expect(launch({ ...job, nproc: 2 } as never)).rejects.toThrow(/launch: unknown option 'nproc'/);
  });

  it("launch names a count given as a string, and refuses args that are not an array and a grace that would SIGKILL at once, before starting any rank", async () => {
    // Were a rank started, it would fail on its missing script: the job would exit with code 1 instead of refusing.
    const job = { nprocPerNode: 1, script: "does-not-exist.js", nodeOptions: [], log: () => {} };
    await expect(launch({ ...job, nprocPerNode: "2" as never })).rejects.toThrow('blocksparse-run: --nproc-per-node must be at least 1, got the string "2"');
    await expect(launch({ ...job, nnodes: "2" as never, masterPort: 29500 })).rejects.toThrow('--nnodes must be at least 1, got the string "2"');
    await expect(launch({ ...job, nnodes: 2, nodeRank: "1" as never, masterPort: 29500 })).rejects.toThrow('--node-rank must be in [0, 1], got the string "1"');
    await expect(launch({ ...job, masterPort: "29500" as never })).rejects.toThrow('--master-port must be a TCP port (1 to 65535), got the string "29500"');
    // A string would reach the script as one argument per character.
    await expect(launch({ ...job, args: "--lr" as never })).rejects.toThrow('launch: args must be an array of strings, got the string "--lr"');
    await expect(launch({ ...job, nodeOptions: [1] as never })).rejects.toThrow("launch: nodeOptions must be an array of strings, got an array");
    // NaN or a negative grace: setTimeout would fire at once, SIGKILLing ranks that were given SIGTERM to save and exit.
    await expect(launch({ ...job, killGraceMs: Number.NaN })).rejects.toThrow(/launch: killGraceMs must be a number of milliseconds in \[0, 2147483647\], got NaN/);
    await expect(launch({ ...job, killGraceMs: -1 })).rejects.toThrow(/killGraceMs must be a number of milliseconds/);
    await expect(launch({ ...job, log: "stderr" as never })).rejects.toThrow('launch: log must be a function, got the string "stderr"');
  });

  it("asks for --master-port when the job spans several hosts", async () => {
    const result = await runNode(["--import", "tsx", "src/cli.ts", "--nproc-per-node", "1", "--nnodes", "2", "x.js"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--master-port is required with --nnodes > 1/);
  });

  it("launch() called from `node -e` code gives the ranks the launcher's Node options but not its code: each rank runs the script, not the code (which launched the job again, without end)", async () => {
    const out = mkdtempSync(join(tmpdir(), "blocksparse-distributed-"));
    outputs.push(out);
    const script = join(out, "rank.mjs");
    writeFileSync(script, 'console.log("rank " + process.env.RANK + " ran its script");\n');
    // A rank that runs this code again says so and stops, instead of launching a job of its own.
    const code = `if (process.env.LAUNCHED_BY_EVAL) { console.log("rank " + process.env.RANK + " ran the launcher's code"); process.exit(3); }
      process.env.LAUNCHED_BY_EVAL = "1";
      import("./src/launcher.ts").then(({ launch }) => launch({ nprocPerNode: 2, script: ${JSON.stringify(script)}, log: () => {} })).then((code) => process.exit(code));`;
    for (const evaluate of [["-e", code], [`--eval=${code}`]]) {
      const result = await runNode(["--import", "tsx", ...evaluate]);
      expect(result.stdout.split("\n").filter(Boolean).sort(), result.stderr).toEqual(["rank 0 ran its script", "rank 1 ran its script"]);
      expect(result.code).toBe(0);
    }
  });

  it("when one rank dies, stops the others and exits non-zero, naming the rank and its exit code", async () => {
    const job = await runJob(3, "misuse.ts", ["crash"]);
    outputs.push(job.out);
    expect(job.code).toBe(3);
    expect(job.stderr).toMatch(/blocksparse-run: rank 1 \(pid \d+\) exited with code 3; stopping the other 2 rank\(s\) of this host/);
    expect(job.stderr).toMatch(/blocksparse-run: the job failed: rank 1 exited with code 3/);
  });

  it.skipIf(process.platform === "win32")("a signal that would end the launcher alone (SIGQUIT, SIGUSR2, as SIGTERM) stops every rank, and the job exits 128 + its number", async () => {
    // The ranks run in sessions of their own: a launcher killed by SIGQUIT (Ctrl-\\) or SIGUSR2 left them running, parentless.
    for (const [signal, number] of [["SIGQUIT", 3], ["SIGUSR2", 12], ["SIGTERM", 15]] as const) {
      const out = mkdtempSync(join(tmpdir(), "blocksparse-distributed-"));
      outputs.push(out);
      const launcher = spawn(process.execPath, ["--import", "tsx", LAUNCHER_SOURCE, "--nproc-per-node", "2", join("test", "children", "idle.ts"), out], {
        cwd: resolve(import.meta.dirname, ".."),
        env: { ...process.env, TSX_TSCONFIG_PATH: join(import.meta.dirname, "children", "tsconfig.json") },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      launcher.stderr.on("data", (chunk) => (stderr += chunk));
      const exited = new Promise<number | null>((done) => launcher.on("exit", (code) => done(code)));
      const files = [0, 1].map((rank) => join(out, `rank${rank}.pid`));
      const deadline = Date.now() + 30_000;
      while (!files.every((file) => existsSync(file) && readFileSync(file, "utf8") !== "") && Date.now() < deadline) await new Promise((done) => setTimeout(done, 50));
      const pids = files.map((file) => Number(readFileSync(file, "utf8")));
      launcher.kill(signal);
      const code = await exited;
      const left = pids.filter(alive);
      for (const pid of left) process.kill(pid, "SIGKILL");
      expect({ signal, code, left }, stderr).toEqual({ signal, code: 128 + number, left: [] });
    }
  });

  it.skipIf(process.platform === "win32")("stops what the ranks started too: each rank leads a process group, which is signalled, also after the rank has exited", async () => {
    const job = await runJob(2, "subprocesses.ts");
    outputs.push(job.out);
    expect(job.code).toBe(3);
    const pids = [0, 1].map((rank) => Number(readFileSync(join(job.out, `subprocess-${rank}.pid`), "utf8")));
    // SIGTERM is delivered at once; give the subprocesses a moment to be reaped.
    const deadline = Date.now() + 5000;
    while (pids.some(alive) && Date.now() < deadline) await new Promise((done) => setTimeout(done, 50));
    const left = pids.filter(alive);
    for (const pid of left) process.kill(pid, "SIGKILL");
    expect(left).toEqual([]);
  });

  it.skipIf(process.platform === "win32")("gives what the ranks started the grace, then SIGKILL, before launch returns: never after, when a group id may be another's", async () => {
    const out = mkdtempSync(join(tmpdir(), "blocksparse-distributed-"));
    outputs.push(out);
    const lines: string[] = [];
    // Absolute paths: the ranks start in this process's folder, which is the repository's when the suite runs from there.
    const children = resolve(import.meta.dirname, "children");
    const code = await launch({
      nprocPerNode: 2,
      script: join(children, "subprocesses.ts"),
      args: [out, "stubborn"],
      nodeOptions: ["--import", pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href],
      env: { TSX_TSCONFIG_PATH: join(children, "tsconfig.json"), BLOCKSPARSE_LAUNCHER_STORE: undefined },
      killGraceMs: 300,
      log: (line) => lines.push(line),
    });
    expect(code, lines.join("\n")).toBe(3);
    expect(lines.join("\n")).toMatch(/rank 1 \(pid \d+\) exited with code 3/);
    const pids = [0, 1].map((rank) => Number(readFileSync(join(out, `subprocess-${rank}.pid`), "utf8")));
    // Running and not dying: not a zombie waiting to be reaped, and not a process the launcher SIGKILLed just before
    // returning that the kernel is still tearing down (longer on a loaded machine: its SIGKILL still pending, or
    // PF_EXITING in its flags). Such a process never runs its own code again; one never sent SIGKILL keeps running.
    const running = (pid: number): boolean => {
      if (!alive(pid)) return false;
      let stat: string;
      let status: string;
      try {
        stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        status = readFileSync(`/proc/${pid}/status`, "utf8");
      } catch {
        // No /proc (macOS): kill(0) succeeding is all there is to go on; gone since then on Linux.
        return process.platform !== "linux";
      }
      // After the command's closing parenthesis: state, ppid, pgrp, session, tty_nr, tpgid, flags, ...
      const [state, , , , , , flags] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const PF_EXITING = 0x4;
      if (state === "Z" || state === "X" || (Number(flags) & PF_EXITING) !== 0) return false;
      const pending = (field: string) => BigInt(`0x${new RegExp(`^${field}:\\s*([0-9a-f]+)`, "m").exec(status)?.[1] ?? "0"}`);
      const SIGKILL_BIT = 1n << 8n;
      return ((pending("SigPnd") | pending("ShdPnd")) & SIGKILL_BIT) === 0n;
    };
    const left = pids.filter(running);
    for (const pid of left) process.kill(pid, "SIGKILL");
    expect(left).toEqual([]);
  });
});
