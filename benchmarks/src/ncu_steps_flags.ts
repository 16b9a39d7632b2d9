/** ncu_steps_cli.ts's flags, parsed and checked before the file is read. */
import { type CliSpec, FlagError, parseFlags, positiveInteger } from "./flags";

export const NCU_STEPS_CLI = {
  usage: "tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N]",
  summary: "Prints the device time per training step from an Nsight Compute per-kernel summary.",
  positionals: "NCU_OUTPUT: the summary ncu printed (see scripts/gpu-step-kernels.sh)",
  flags: { steps: { type: "string", description: "steps the profile covers", defaultText: "the number of multi-tensor Adam launches" } },
} as const satisfies CliSpec;

/** The file to read and the steps it covers (FlagError naming the flag for a bad one). */
export function parseNcuStepsFlags(args: string[] = process.argv.slice(2)): { file: string; steps: number | undefined } {
  const { values, positionals } = parseFlags(NCU_STEPS_CLI, args);
  if (positionals.length !== 1) throw new FlagError(`usage: tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N] (got ${positionals.length} files)`);
  // Decimal digits only ("0x10" is not 16), and a bad value is the flag's message, not a stack trace.
  const steps = values.steps === undefined ? undefined : positiveInteger(values.steps, "steps");
  return { file: positionals[0], steps };
}
