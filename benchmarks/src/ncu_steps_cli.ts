/**
 * Prints the device time per training step from an Nsight Compute per-kernel summary (see ncu_steps.ts):
 *   tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N]
 */
import { readFileSync } from "node:fs";
import { stepTable, stepTableMarkdown } from "./ncu_steps";
import { describeFailure, FlagError, parseFlags, positiveInteger } from "./flags";

try {
  const { values, positionals } = parseFlags({
    usage: "tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N]",
    summary: "Prints the device time per training step from an Nsight Compute per-kernel summary.",
    positionals: "NCU_OUTPUT: the summary ncu printed (see scripts/gpu-step-kernels.sh)",
    flags: { steps: { type: "string", description: "steps the profile covers", defaultText: "the number of multi-tensor Adam launches" } },
  });
  if (positionals.length !== 1) throw new FlagError(`usage: tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N] (got ${positionals.length} files)`);
  // Decimal digits only ("0x10" is not 16), and a bad value is the flag's message, not a stack trace.
  const steps = values.steps === undefined ? undefined : positiveInteger(values.steps, "steps");
  let text: string;
  try {
    text = readFileSync(positionals[0], "utf8");
  } catch (error) {
    throw new FlagError(`${positionals[0]}: cannot read it: ${(error as Error).message}`);
  }
  process.stdout.write(stepTableMarkdown(stepTable(text, steps)));
} catch (error) {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
}
