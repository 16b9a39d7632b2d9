/**
 * Prints the device time per training step from an Nsight Compute per-kernel summary (see ncu_steps.ts):
 *   tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N]
 */
import { readFileSync } from "node:fs";
import { stepTable, stepTableMarkdown } from "./ncu_steps";
import { parseFlags } from "./flags";

const { values, positionals } = parseFlags({
  usage: "tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N]",
  summary: "Prints the device time per training step from an Nsight Compute per-kernel summary.",
  positionals: "NCU_OUTPUT: the summary ncu printed (see scripts/gpu-step-kernels.sh)",
  flags: { steps: { type: "string", description: "steps the profile covers", defaultText: "the number of multi-tensor Adam launches" } },
});
if (positionals.length !== 1) {
  process.stderr.write("usage: tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N]\n");
  process.exit(2);
}
const steps = values.steps === undefined ? undefined : Number(values.steps);
if (steps !== undefined && !(Number.isInteger(steps) && steps > 0)) throw new Error(`--steps: expected a positive integer, got "${values.steps}"`);
process.stdout.write(stepTableMarkdown(stepTable(readFileSync(positionals[0], "utf8"), steps)));
