/**
 * The cpu addon's products called directly on preallocated arrays (no op layer, no allocation):
 * what the kernels themselves reach on this machine, best of N calls. Separates kernel speed from
 * the op layer's costs (allocation, first-touch page faults) that cpu_compare.ts includes.
 *
 *   tsx src/cpu_addon.ts [--repeats N] [--threads T] [--only NAME]
 */
import { cpuBackend, setCpuThreads } from "@blocksparse/backend-cpu";
import { BsrPattern, setBackend } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { DECODE_BATCHES, decodeName, parseCpuAddonFlags, PRODUCT_SHAPES, productName } from "./cpu_addon_flags";
import { describeFailure } from "./flags";
import { plural } from "./report";

const [args, repeats, threads] = (() => {
  try {
    return parseCpuAddonFlags();
  } catch (error) {
    process.stderr.write(`${describeFailure(error)}\n`);
    return process.exit(1);
  }
})();
setBackend("cpu");
if (threads !== undefined) setCpuThreads(threads);
const addon = cpuBackend().addon;

/** A Float32Array starting on a cache line, as the backend's tensors do (an ArrayBuffer's data is only 16-byte aligned). */
function aligned(length: number): Float32Array {
  const buffer = new ArrayBuffer(length * 4 + 64);
  return new Float32Array(buffer, addon.alignmentOffset(buffer), length);
}

function random(length: number, seed: number): Float32Array {
  return new SeededRandom(seed).fillNormal(aligned(length));
}

/** Best wall time of N calls, and the best CPU time (all threads of this process) of one call. */
interface Timing {
  ms: number;
  cpuMs: number;
}

function best(run: () => void): Timing {
  run();
  const timing = { ms: Number.POSITIVE_INFINITY, cpuMs: Number.POSITIVE_INFINITY };
  for (let i = 0; i < repeats; i++) {
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    run();
    timing.ms = Math.min(timing.ms, performance.now() - start);
    const cpu = process.cpuUsage(cpuStart);
    timing.cpuMs = Math.min(timing.cpuMs, (cpu.user + cpu.system) / 1e3);
  }
  return timing;
}

// GFLOP/s per CPU-second: what one core does while it runs, however much other load shares the machine.
// Exact with --threads 1 only: Linux adds the time of the process's other running threads at scheduler ticks.
function report(what: string, flop: number, { ms, cpuMs }: Timing): void {
  const perCore = flop / (cpuMs * 1e6);
  console.log(`${what.padEnd(44)} ${ms.toFixed(3).padStart(10)} ms ${(flop / (ms * 1e6)).toFixed(1).padStart(8)} GFLOP/s wall ${perCore.toFixed(1).padStart(8)} GFLOP/s per CPU-second`);
}

const wanted = (what: string) => !args.only || what.includes(args.only);
const build = cpuBackend().build;
console.log(`micro-kernel ${build.isa} (${build.tileRows}x${build.tileCols}), ${plural(build.threads, "thread")}, best of ${repeats}`);
// The names --only is matched against are the names printed (the two differed: "--only b32" timed nothing).
for (const [M, K, N] of PRODUCT_SHAPES) {
  const a = random(M * K, 1);
  const b = random(K * N, 2);
  const c = aligned(M * N);
  const name = (product: "dense" | "bsrLinear" | "bsrMatmul" | "sampledMatmul") => productName(product, [M, K, N]);
  if (wanted(name("dense"))) report(name("dense"), 2 * M * N * K, best(() => addon.matmul(a, 0, b, 0, c, 0, M, N, K, false, false)));
  const pattern = BsrPattern.random([N, K], { blockShape: [32, 32], density: 0.25, seed: 3 });
  const values = random(pattern.nnzBlocks * 1024, 4);
  const dy = random(M * N, 5);
  const y = aligned(M * N);
  const dx = aligned(M * K);
  const dw = aligned(pattern.nnzBlocks * 1024);
  const sizes = { rows: N, cols: K, blockHeight: 32, blockWidth: 32 };
  const rowIndex = { ...sizes, blockRowPtr: pattern.blockRowPtr, blockColIdx: pattern.blockColIdx };
  const columnIndex = { ...sizes, ...pattern.columnIndex };
  const flop = 2 * M * pattern.nnzBlocks * 1024;
  if (wanted(name("bsrLinear"))) report(name("bsrLinear"), flop, best(() => addon.bsrLinear(a, 0, values, 0, null, 0, y, 0, M, rowIndex)));
  if (wanted(name("bsrMatmul"))) report(name("bsrMatmul"), flop, best(() => addon.bsrMatmul(dy, 0, values, 0, dx, 0, M, columnIndex)));
  if (wanted(name("sampledMatmul"))) report(name("sampledMatmul"), flop, best(() => addon.sampledMatmul(dy, 0, a, 0, dw, 0, M, rowIndex)));
}
const D = 4096;
for (const batch of DECODE_BATCHES) {
  const x = random(batch * D, 6);
  const w = random(D * D, 7);
  const y = aligned(batch * D);
  if (wanted(decodeName("dense", batch))) report(decodeName("dense", batch), 2 * batch * D * D, best(() => addon.matmul(x, 0, w, 0, y, 0, batch, D, D, false, true)));
  const pattern = BsrPattern.random([D, D], { blockShape: [32, 32], density: 0.25, seed: 8 });
  const values = random(pattern.nnzBlocks * 1024, 9);
  const rowIndex = { rows: D, cols: D, blockHeight: 32, blockWidth: 32, blockRowPtr: pattern.blockRowPtr, blockColIdx: pattern.blockColIdx };
  if (wanted(decodeName("bsrLinear", batch))) {
    const timing = best(() => addon.bsrLinear(x, 0, values, 0, null, 0, y, 0, batch, rowIndex));
    report(decodeName("bsrLinear", batch), 2 * batch * pattern.nnzBlocks * 1024, timing);
    console.log(`  weights ${(values.byteLength / 2 ** 20).toFixed(1)} MiB read at ${(values.byteLength / (timing.ms * 1e6)).toFixed(1)} GB/s`);
  }
}
