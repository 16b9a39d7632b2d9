/**
 * The addon's thread pool, packed-operand scratch and kernel choice are process-wide, and every worker_threads Worker
 * that imports the backend loads the same addon: calls from several threads at once must each get their own answer.
 */
import { Worker } from "node:worker_threads";
import { cpuBackend } from "../src/index";
import { describe, expect, it } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("workers.test.ts");

/** Each worker multiplies an n x n matrix of its own value v by itself, checking every element is v^2 n. */
const WORKER = `
  const { parentPort, workerData } = require("node:worker_threads");
  const addon = require(workerData.path);
  const { n, value, repeats } = workerData;
  const a = new Float32Array(n * n).fill(value);
  const c = new Float32Array(n * n);
  let wrong = 0;
  for (let i = 0; i < repeats; i++) {
    c.fill(0);
    addon.matmul(a, 0, a, 0, c, 0, n, n, n, false, false);
    if (c.some((x) => x !== value * value * n)) wrong++;
  }
  parentPort.postMessage(wrong);`;

function runWorker(path: string, value: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER, { eval: true, workerData: { path, n: 96, value, repeats: 400 } });
    worker.once("message", (wrong: number) => {
      resolve(wrong);
      void worker.terminate();
    });
    worker.once("error", reject);
  });
}

describe.skipIf(cpuMissing)("the addon called from several threads", () => {
  it("products running at once in two workers each give their own right answer", async () => {
    const path = cpuBackend().addonPath;
    expect(await Promise.all([runWorker(path, 1), runWorker(path, 2)])).toEqual([0, 0]);
  }, 60_000);
});
