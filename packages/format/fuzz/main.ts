import { describeSummary, runFuzz } from "./runner.js";

/**
 * The long fuzz run: `pnpm -F @blocksparse/format fuzz [cases per reader] [seed]`
 * (default 10000 cases, seed 1). Exits 1 on any crash, hang or silently accepted file.
 */
const cases = Number(process.argv[2] ?? process.env.BLOCKSPARSE_FUZZ_CASES ?? 10_000);
const seed = Number(process.argv[3] ?? 1);
let failed = false;
for (const reader of ["safetensors", "npz"] as const) {
  const summary = await runFuzz({ reader, cases, seed });
  console.log(describeSummary(summary));
  failed ||= summary.crashes.length + summary.hangs.length + summary.silentlyAccepted.length > 0;
}
process.exitCode = failed ? 1 : 0;
