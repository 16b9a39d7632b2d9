#!/usr/bin/env node
// Turns Nsight Compute's per-kernel summary of a training-step run into a table of device time per step.
//   ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
//     tsx src/ffn.ts --backend cuda --quick --only sparse ... > ncu.txt
//   node scripts/ncu-step-table.mjs ncu.txt [--steps N]
// Kernels are grouped by what they do (the block-sparse tiles by path and product, cuBLAS's GEMMs together,
// the rest by kernel name); each group's total time is divided by the number of steps, which is the number of
// multi-tensor Adam launches unless --steps says otherwise (one launch per step for up to 24 tensors).
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith("--"));
const stepsFlag = args.indexOf("--steps");
if (!file) {
  console.error("usage: ncu-step-table.mjs NCU_OUTPUT [--steps N]");
  process.exit(2);
}
const text = readFileSync(file, "utf8");
const UNIT = { ns: 1e-3, us: 1, usecond: 1, ms: 1e3, msecond: 1e3, s: 1e6, second: 1e6 };
const PRODUCTS = ["forward (bsrLinear)", "dX (bsrMatmul)", "dW (sampledMatmul)"];

function group(name) {
  const tile = name.match(/(bsrWgmmaPersistentKernel|bsrWgmmaKernel|bsrMmaKernel)<[^<]*<[^,]+,\s*(\d)/);
  if (tile) {
    const path = tile[1] === "bsrWgmmaPersistentKernel" ? "wgmma persistent" : tile[1] === "bsrWgmmaKernel" ? "wgmma tile" : "mma.sync tile";
    return `${PRODUCTS[Number(tile[2])] ?? "block-sparse product"}, ${path}`;
  }
  if (/bsrDecodeLinearKernel/.test(name)) return "forward (bsrLinear), decoding kernel";
  if (/fillKernel/.test(name)) return "fillKernel (mostly the poisoned outputs of the checked first step)";
  if (/^(void )?(cublasLt::|cutlass|nvjet|sm\d+_xmma|.*gemm)/i.test(name)) return "cuBLAS (GEMM and its split-K reduction)";
  const base = name.replace(/^void /, "").replaceAll("<unnamed>::", "").replace(/\(.*$/, "").replace(/<.*$/, "");
  return base.split("::").pop();
}

const totals = new Map();
let adamLaunches = 0;
let current = null;
for (const line of text.split("\n")) {
  const head = line.match(/^ {2}(\S.*), Device \d+, CC [\d.]+, Invocations (\d+)/);
  if (head) {
    current = { name: head[1], invocations: Number(head[2]) };
    if (/multiTensorAdam/.test(current.name)) adamLaunches += current.invocations;
    continue;
  }
  const metric = line.match(/gpu__time_duration\.sum\s+(\S+)\s+([\d.,]+)\s+([\d.,]+)\s+([\d.,]+)/);
  if (metric && current) {
    const scale = UNIT[metric[1]];
    if (scale === undefined) throw new Error(`unknown unit '${metric[1]}' for ${current.name}`);
    const average = Number(metric[4].replaceAll(",", "")) * scale;
    const key = group(current.name);
    const entry = totals.get(key) ?? { us: 0, launches: 0 };
    entry.us += average * current.invocations;
    entry.launches += current.invocations;
    totals.set(key, entry);
    current = null;
  }
}
const steps = stepsFlag >= 0 ? Number(args[stepsFlag + 1]) : adamLaunches;
if (!(steps > 0)) {
  console.error("no multi-tensor Adam launch found: pass --steps N");
  process.exit(1);
}
const rows = [...totals.entries()].sort((a, b) => b[1].us - a[1].us);
const sum = rows.reduce((s, [, e]) => s + e.us, 0);
console.log(`Device time per step over ${steps} steps (${sum.toFixed(0)} us in all, ${(sum / steps).toFixed(1)} us per step):\n`);
console.log("| kernels | launches per step | us per step | share |");
console.log("| --- | --- | --- | --- |");
for (const [key, e] of rows) console.log(`| ${key} | ${(e.launches / steps).toFixed(2)} | ${(e.us / steps).toFixed(1)} | ${((100 * e.us) / sum).toFixed(1)}% |`);
