// The sparse experiment's JSON files of several seeds (`--out` of `main.ts --mode sparse --seed N`)
// summarised as one markdown table: every model's loss per seed and mean, and RigL's share on the means.
//   tsx src/summary.ts DIR1/gpt2-moby-dick-sparse.json DIR2/gpt2-moby-dick-sparse.json ...
import { readFileSync } from "node:fs";
import type { ResultRow } from "./experiment";
import { seedSummary } from "./report";

const files = process.argv.slice(2).filter((arg) => arg !== "--");
if (files.length === 0) {
  console.error("usage: tsx src/summary.ts RUN.json [RUN.json ...]");
  process.exit(2);
}
const runs = files.map((file) => {
  const parsed = JSON.parse(readFileSync(file, "utf8")) as { rows?: ResultRow[]; options?: { seed?: number } };
  if (!Array.isArray(parsed.rows)) throw new TypeError(`${file}: not a result file of main.ts (no 'rows' array)`);
  return { seed: parsed.options?.seed, rows: parsed.rows };
});
console.log(`Seeds: ${runs.map((r) => r.seed ?? "?").join(", ")} (files: ${files.join(", ")})\n`);
process.stdout.write(seedSummary(runs.map((r) => r.rows), runs.map((r, i) => `seed ${r.seed ?? `#${i + 1}`}`)));
