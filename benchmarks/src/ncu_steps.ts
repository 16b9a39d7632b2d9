/**
 * Device time per training step from Nsight Compute's per-kernel summary
 * (`ncu --metrics gpu__time_duration.sum --print-summary per-kernel`): kernels grouped by what they do (the
 * block-sparse tiles by path and product, cuBLAS's GEMMs together, the rest by kernel name), each group's total
 * divided by the number of steps, which is the number of multi-tensor Adam launches unless given (one launch per
 * step for up to 24 tensors).
 */

import { plural } from "./report";

export interface StepGroup {
  group: string;
  launchesPerStep: number;
  usPerStep: number;
  share: number;
}

export interface StepTable {
  steps: number;
  usPerStep: number;
  groups: StepGroup[];
}

const UNIT_US: Record<string, number> = { ns: 1e-3, nsecond: 1e-3, us: 1, usecond: 1, ms: 1e3, msecond: 1e3, s: 1e6, second: 1e6 };
const PRODUCTS = ["forward (bsrLinear)", "dX (bsrMatmul)", "dW (sampledMatmul)"];

/** The group a kernel's demangled name belongs to. */
export function kernelGroup(name: string): string {
  const tile = name.match(/(bsrWgmmaPersistentKernel|bsrWgmmaKernel|bsrMmaKernel)<[^<]*<[^,]+,\s*(\d)/);
  if (tile) {
    const path = tile[1] === "bsrWgmmaPersistentKernel" ? "wgmma persistent" : tile[1] === "bsrWgmmaKernel" ? "wgmma tile" : "mma.sync tile";
    return `${PRODUCTS[Number(tile[2])] ?? "block-sparse product"}, ${path}`;
  }
  if (/bsrDecodeLinearKernel/.test(name)) return "forward (bsrLinear), decoding kernel";
  if (/fillKernel/.test(name)) return "fillKernel (the checked first step's poisoned outputs, and zeros)";
  if (/scatterBandKernel|copyBlocksKernel<[^>]*false>/.test(name)) return "the dense route's scratch (W's blocks and zeros)";
  if (/^(void )?(cublasLt::|cutlass|nvjet|sm\d+_xmma)|gemm/i.test(name)) return "cuBLAS (GEMM and its split-K reduction)";
  const base = name.replace(/^void /, "").replaceAll("<unnamed>::", "").replace(/\(.*$/, "").replace(/<.*$/, "");
  return base.split("::").pop() || name;
}

/** A summary that cannot give a step table (no kernel timed, no step count, an unknown unit): the CLI prints its message alone. */
export class NcuSummaryError extends Error {
  override name = "NcuSummaryError";
}

/** Parses the summary text; `steps` overrides the count of multi-tensor Adam launches. */
export function stepTable(text: string, steps?: number): StepTable {
  const totals = new Map<string, { us: number; launches: number }>();
  let adamLaunches = 0;
  let current: { name: string; invocations: number } | null = null;
  for (const line of text.split("\n")) {
    const head = line.match(/^ {2}(\S.*), Device \d+, CC [\d.]+, Invocations (\d+)/);
    if (head) {
      current = { name: head[1], invocations: Number(head[2]) };
      if (/multiTensorAdam/.test(current.name)) adamLaunches += current.invocations;
      continue;
    }
    const metric = line.match(/gpu__time_duration\.sum\s+(\S+)\s+([\d.,]+)\s+([\d.,]+)\s+([\d.,]+)/);
    if (metric && current) {
      const scale = UNIT_US[metric[1]];
      if (scale === undefined) throw new NcuSummaryError(`unknown unit '${metric[1]}' for ${current.name}`);
      const average = Number(metric[4].replaceAll(",", "")) * scale;
      const key = kernelGroup(current.name);
      const entry = totals.get(key) ?? { us: 0, launches: 0 };
      entry.us += average * current.invocations;
      entry.launches += current.invocations;
      totals.set(key, entry);
      current = null;
    }
  }
  if (steps !== undefined && !(Number.isSafeInteger(steps) && steps > 0)) throw new RangeError(`stepTable: steps must be a positive integer, got ${steps}`);
  // Any other file (or ncu run without the metric) printed an empty table over the steps given.
  if (totals.size === 0) throw new NcuSummaryError("no kernel with gpu__time_duration.sum in the summary (ncu --metrics gpu__time_duration.sum --print-summary per-kernel)");
  const count = steps ?? adamLaunches;
  if (!(count > 0)) throw new NcuSummaryError("no multi-tensor Adam launch in the summary: give the number of steps (--steps)");
  const sum = [...totals.values()].reduce((s, e) => s + e.us, 0);
  const groups = [...totals.entries()]
    .sort((a, b) => b[1].us - a[1].us)
    .map(([group, e]) => ({ group, launchesPerStep: e.launches / count, usPerStep: e.us / count, share: sum > 0 ? e.us / sum : 0 }));
  return { steps: count, usPerStep: sum / count, groups };
}

/** The table as markdown. */
export function stepTableMarkdown(table: StepTable): string {
  const lines = [
    `Device time per step over ${plural(table.steps, "step")} (${table.usPerStep.toFixed(1)} us per step):`,
    "",
    "| kernels | launches per step | us per step | share |",
    "| --- | --- | --- | --- |",
    ...table.groups.map((g) => `| ${g.group} | ${g.launchesPerStep.toFixed(2)} | ${g.usPerStep.toFixed(1)} | ${(100 * g.share).toFixed(1)}% |`),
  ];
  return `${lines.join("\n")}\n`;
}
