/**
 * The addon under a memory limit: each case runs in a child process whose address space has a fixed room past what its
 * arrays take (`ulimit -v`), so an allocation inside a kernel fails there and nowhere else.
 */
import { spawnSync } from "node:child_process";
import { cpuBackend } from "../src/index";
import { describe, expect, it } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("limits.test.ts");

/**
 * Runs `script` (CommonJS, `addon` in scope, its arrays made first) in a child whose address space has `roomMiB` beyond
 * the size it reaches before its last line: the script prints that size and exits when argv[1] is "measure".
 */
function runWithRoom(setup: string, body: string, roomMiB: number): { status: number | null; signal: string | null; stdout: string; stderr: string } {
  const script = `
    const addon = require(${JSON.stringify(cpuBackend().addonPath)});
    addon.setThreads(2);
    ${setup}
    if (process.argv[1] === "measure") {
      console.log(require("fs").readFileSync("/proc/self/status", "utf8").match(/VmSize:\\s+(\\d+)/)[1]);
      process.exit(0);
    }
    ${body}`;
  const measured = spawnSync(process.execPath, ["-e", script, "measure"], { encoding: "utf8" });
  expect(measured.status, measured.stderr).toBe(0);
  const limitKiB = Number(measured.stdout.trim()) + roomMiB * 1024;
  const child = spawnSync("bash", ["-c", `ulimit -v ${limitKiB} && exec "$0" -e "$1" run`, process.execPath, script], { encoding: "utf8" });
  return { status: child.status, signal: child.signal, stdout: child.stdout, stderr: child.stderr };
}

// Each case runs two children that fill hundreds of MiB: several seconds on a busy 2-core machine, past vitest's 5 s default.
describe.skipIf(cpuMissing || process.platform !== "linux")("the kernels under a memory limit", () => {
  it("few-token bsrLinear over blocks of 2^22 x 1 needs no memory per block height, and is right", { timeout: 60_000 }, () => {
    // Its partial sums took tokens x R x 16 floats per thread (2 GiB each here): under the limit the process aborted.
    const setup = `
      const R = 2 ** 22, tokens = 8;
      const pattern = { rows: 2 * R, cols: 1, blockHeight: R, blockWidth: 1, blockRowPtr: Int32Array.of(0, 1, 2), blockColIdx: Int32Array.of(0, 0) };
      const values = new Float32Array(2 * R).map((_, i) => (i % 7) - 3);
      const x = Float32Array.from({ length: tokens }, (_, t) => t + 1);
      const bias = new Float32Array(2 * R).map((_, i) => i % 5);
      const y = new Float32Array(tokens * 2 * R);`;
    const body = `
      addon.bsrLinear(x, 0, values, 0, bias, 0, y, 0, tokens, pattern);
      let wrong = 0;
      for (let t = 0; t < tokens; t++) for (let r = 0; r < 2 * R; r++) if (y[t * 2 * R + r] !== x[t] * values[r] + bias[r]) wrong++;
      console.log(JSON.stringify({ wrong }));`;
    const child = runWithRoom(setup, body, 512);
    expect(child.signal, child.stderr).toBeNull();
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout.trim().split("\n").at(-1) as string)).toEqual({ wrong: 0 });
  });

  it("an allocation that fails on a pool thread is ERR_CPU_OUT_OF_MEMORY, not an abort, and the pool runs the next product", { timeout: 60_000 }, () => {
    // bsrMatmul's few-token path takes tokens x C floats per thread (256 MiB here) for each block column: both threads
    // fail. A worker's std::bad_alloc used to terminate the process, and the caller's left the worker calling its body.
    const setup = `
      const C = 2 ** 26;
      const pattern = { rows: 1, cols: 2 * C, blockHeight: 1, blockWidth: C, blockColPtr: Int32Array.of(0, 1, 2), blockRowIdx: Int32Array.of(0, 0), valueIndex: Int32Array.of(0, 1) };
      const values = new Float32Array(2 * C).fill(1);
      const dy = Float32Array.of(2);
      const dx = new Float32Array(2 * C);
      const a = new Float32Array(64 * 64).fill(1);
      const c = new Float32Array(64 * 64);`;
    const body = `
      let code = "none";
      try {
        addon.bsrMatmul(dy, 0, values, 0, dx, 0, 1, pattern);
      } catch (error) {
        code = error.code;
      }
      addon.matmul(a, 0, a, 0, c, 0, 64, 64, 64, false, false);
      console.log(JSON.stringify({ code, c0: c[0], c1: c[64 * 64 - 1] }));`;
    // 200 MiB of room: below each thread's 256 MiB, which must fail, and enough for V8 to grow its own heap (with 128 MiB
    // a busy run's child once died of V8's own out-of-memory before the product ran).
    const child = runWithRoom(setup, body, 200);
    expect(child.signal, child.stderr).toBeNull();
    expect(child.status, child.stderr).toBe(0);
    expect(JSON.parse(child.stdout.trim().split("\n").at(-1) as string)).toEqual({ code: "ERR_CPU_OUT_OF_MEMORY", c0: 64, c1: 64 });
  });
});
