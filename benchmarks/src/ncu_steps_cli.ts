/**
 * Prints the device time per training step from an Nsight Compute per-kernel summary (see ncu_steps.ts):
 *   tsx src/ncu_steps_cli.ts NCU_OUTPUT [--steps N]
 */
import { readFileSync } from "node:fs";
import { NcuSummaryError, type StepTable, stepTable, stepTableMarkdown } from "./ncu_steps";
import { describeFailure, FlagError } from "./flags";
import { parseNcuStepsFlags } from "./ncu_steps_flags";

try {
  const { file, steps } = parseNcuStepsFlags();
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new FlagError(`${file}: cannot read it: ${(error as Error).message}`);
  }
  let table: StepTable;
  try {
    table = stepTable(text, steps);
  } catch (error) {
    if (error instanceof NcuSummaryError) throw new FlagError(`${file}: ${error.message}`);
    throw error;
  }
  process.stdout.write(stepTableMarkdown(table));
} catch (error) {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
}
