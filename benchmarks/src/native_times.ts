/**
 * Host time per native function: wraps each function of an addon's exports in place with a clock, so that a run can
 * say where its host time goes among the addon's calls (validation, cuBLAS's host path, the launches themselves, and
 * any call that waits for the GPU). A benchmark tool: the wrapper adds about a tenth of a microsecond per call.
 */

/** One function's calls: how many, their total and longest time (microseconds), and how many took over 50 us. */
export interface NativeTime {
  name: string;
  calls: number;
  totalUs: number;
  maxUs: number;
  over50Us: number;
}

export interface NativeTimer {
  /** Starts counting (calls before this are not timed) or restarts from zero. */
  reset(): void;
  /** The functions called since the last reset, most total time first. */
  times(): NativeTime[];
  /** Puts the addon's own functions back. */
  restore(): void;
}

/**
 * Wraps the functions `names` of `addon` (default: its own enumerable ones) in place; `now` (microseconds) is
 * injectable for tests.
 */
export function timeNativeCalls(
  addon: Record<string, unknown>,
  names: readonly string[] = Object.keys(addon),
  now: () => number = () => Number(process.hrtime.bigint()) / 1000,
): NativeTimer {
  const originals = new Map<string, (...args: unknown[]) => unknown>();
  const stats = new Map<string, NativeTime>();
  let counting = false;
  for (const name of names) {
    const value = addon[name];
    if (typeof value !== "function") continue;
    const original = value as (...args: unknown[]) => unknown;
    originals.set(name, original);
    addon[name] = function (this: unknown, ...args: unknown[]) {
      if (!counting) return original.apply(this, args);
      const start = now();
      try {
        return original.apply(this, args);
      } finally {
        const us = now() - start;
        let entry = stats.get(name);
        if (entry === undefined) {
          entry = { name, calls: 0, totalUs: 0, maxUs: 0, over50Us: 0 };
          stats.set(name, entry);
        }
        entry.calls++;
        entry.totalUs += us;
        if (us > entry.maxUs) entry.maxUs = us;
        if (us > 50) entry.over50Us++;
      }
    };
  }
  return {
    reset() {
      stats.clear();
      counting = true;
    },
    times: () => [...stats.values()].sort((a, b) => b.totalUs - a.totalUs),
    restore() {
      for (const [name, original] of originals) addon[name] = original;
      counting = false;
    },
  };
}

/** A markdown table of `times` per step (`steps` steps ran since the reset). */
export function nativeTimesTable(times: NativeTime[], steps: number): string {
  const total = times.reduce((sum, t) => sum + t.totalUs, 0);
  const lines = [
    `native calls: ${(total / steps).toFixed(1)} us of host time per step`,
    "",
    "| function | calls per step | us per call (mean) | longest us | calls over 50 us | us per step |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const t of times) {
    lines.push(`| ${t.name} | ${(t.calls / steps).toFixed(2)} | ${(t.totalUs / t.calls).toFixed(2)} | ${t.maxUs.toFixed(0)} | ${t.over50Us} | ${(t.totalUs / steps).toFixed(1)} |`);
  }
  return lines.join("\n");
}
