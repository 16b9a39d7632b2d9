import type { Backend } from "@blocksparse/core";

/** Milliseconds and calls per kernel name. */
export type KernelProfile = Map<string, { calls: number; ms: number }>;

/**
 * Runs `fn` with every kernel of `backend` wrapped: the device is synchronized before and
 * after each kernel, so each entry is that kernel's own time (host and device) plus one
 * synchronization. For finding where a step's time goes, not for headline figures.
 */
export function profileKernels<T>(backend: Backend, synchronize: () => void, fn: () => T): { result: T; profile: KernelProfile } {
  const original = backend.kernels;
  const profile: KernelProfile = new Map();
  const wrapped: Record<string, unknown> = {};
  for (const [name, kernel] of Object.entries(original)) {
    if (typeof kernel !== "function") continue;
    wrapped[name] = (args: unknown) => {
      synchronize();
      const start = performance.now();
      const out = (kernel as (a: unknown) => unknown)(args);
      synchronize();
      const entry = profile.get(name) ?? { calls: 0, ms: 0 };
      entry.calls++;
      entry.ms += performance.now() - start;
      profile.set(name, entry);
      return out;
    };
  }
  Object.defineProperty(backend, "kernels", { value: wrapped, configurable: true, writable: true });
  try {
    return { result: fn(), profile };
  } finally {
    Object.defineProperty(backend, "kernels", { value: original, configurable: true, writable: true });
  }
}

/** `run` called `runs` times under profileKernels (each result disposed): milliseconds and calls per run. */
export function profilePerRun(backend: Backend, synchronize: () => void, runs: number, run: () => { dispose(): void }): KernelProfile {
  // Zero runs would divide every entry by zero.
  if (!Number.isSafeInteger(runs) || runs < 1) throw new RangeError(`profilePerRun: runs must be a positive integer, got ${runs}`);
  const { profile } = profileKernels(backend, synchronize, () => {
    for (let i = 0; i < runs; i++) run().dispose();
  });
  for (const entry of profile.values()) {
    entry.ms /= runs;
    entry.calls /= runs;
  }
  return profile;
}

/** The profile as a markdown table, heaviest first. */
export function profileTable(profile: KernelProfile, title: string): string {
  const rows = [...profile.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((s, [, e]) => s + e.ms, 0);
  const lines = [`${title}: ${total.toFixed(3)} ms in kernels (each synchronized)`, "", "| kernel | calls | ms | share |", "| --- | --- | --- | --- |"];
  // No time at all (kernels under the clock's resolution) has no shares: a dash, not 0/0's NaN%.
  for (const [name, e] of rows) lines.push(`| ${name} | ${e.calls} | ${e.ms.toFixed(3)} | ${total > 0 ? `${((100 * e.ms) / total).toFixed(1)}%` : "–"} |`);
  return `${lines.join("\n")}\n`;
}
