/** cpu_compare.ts's flags, parsed and checked before minutes of timing. */
import { type CliSpec, parseFlags, positiveInteger } from "./flags";

export const CPU_COMPARE_CLI = {
  usage: "tsx src/cpu_compare.ts [flags]",
  summary: "The native cpu backend against NumPy's and SciPy's BLAS, side by side; writes DIR/<machine>/cpu-comparison.{json,md}.",
  flags: {
    repeats: { type: "string", default: "7", description: "calls per figure in each round (the best is kept)" },
    rounds: { type: "string", default: "3", description: "rounds of ours then NumPy's" },
    out: { type: "string", description: "directory DIR for <machine>/cpu-comparison.{json,md}", defaultText: "benchmarks/results" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one); --out is made by the caller, under the machine's name. */
export function parseCpuCompareFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(CPU_COMPARE_CLI, args);
  return { out: values.out, repeats: positiveInteger(values.repeats, "repeats"), rounds: positiveInteger(values.rounds, "rounds") };
}
