/** cpu_addon.ts's flags, parsed and checked before the addon is called. */
import { type CliSpec, parseFlags, positiveInteger } from "./flags";

export const CPU_ADDON_CLI = {
  usage: "tsx src/cpu_addon.ts [flags]",
  summary: "The cpu addon's products called directly on preallocated arrays: the kernels' own speed, best of N calls.",
  flags: {
    repeats: { type: "string", default: "9", description: "calls per product (the best is kept)" },
    threads: { type: "string", description: "threads of the cpu backend", defaultText: "the backend's default (defaultCpuThreads)" },
    only: { type: "string", description: "run only the products whose name contains this text", defaultText: "all" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one). */
export function parseCpuAddonFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(CPU_ADDON_CLI, args);
  // Checked here: Number("abc") made zero calls and reported Infinity ms and 0 GFLOP/s.
  const threadCount = values.threads === undefined ? undefined : positiveInteger(values.threads, "threads");
  return [values, positiveInteger(values.repeats, "repeats"), threadCount] as const;
}
