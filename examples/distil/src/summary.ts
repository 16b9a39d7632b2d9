// The sparse experiment's JSON files of several seeds (`--out` of `main.ts --mode sparse --seed N`)
// summarised as one markdown table: every model's loss per seed and mean, and RigL's share on the means.
//   tsx src/summary.ts DIR1/gpt2-moby-dick-sparse.json DIR2/gpt2-moby-dick-sparse.json ...
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { ResultRow } from "./experiment";
import { seedSummary } from "./report";

const USAGE = "usage: tsx src/summary.ts RUN.json [RUN.json ...]  (the .json files main.ts --out writes, one per seed)";

const args = process.argv.slice(2).filter((arg) => arg !== "--");
if (args.includes("--help") || args.includes("-h")) {
  console.log(USAGE);
  process.exit(0);
}
const flag = args.find((arg) => arg.startsWith("-"));
if (args.length === 0 || flag !== undefined) {
  console.error(`${flag === undefined ? "" : `Unknown option '${flag}'; `}${USAGE}`);
  process.exit(2);
}

/** One result file's rows and seed; a file that cannot be read or is not main.ts's JSON ends the process with its name. */
function readRun(file: string): { seed?: number; rows: ResultRow[] } {
  let parsed: { rows?: ResultRow[]; options?: { seed?: number } };
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    console.error(`${file}: cannot read it as JSON (${error instanceof Error ? error.message : String(error)})`);
    process.exit(1);
  }
  if (!Array.isArray(parsed?.rows)) {
    console.error(`${file}: not a result file of main.ts (no 'rows' array)`);
    process.exit(1);
  }
  return { seed: parsed.options?.seed, rows: parsed.rows };
}

const runs = args.map(readRun);
// A file given twice, or two of one seed, counted as two seeds in the means and in "mean of N seeds"; a file of
// --mode distil has no row of the sparse experiment, and the table came out empty.
args.forEach((file, i) => {
  const earlier = args.findIndex((other, j) => j < i && (resolve(other) === resolve(file) || (runs[j].seed !== undefined && runs[j].seed === runs[i].seed)));
  if (earlier >= 0) {
    console.error(`${file}: ${resolve(args[earlier]) === resolve(file) ? "given twice" : `seed ${runs[i].seed} again (${args[earlier]} has it too)`}; give one file per seed`);
    process.exit(1);
  }
  if (!runs[i].rows.some((row) => row?.experiment === "sparse")) {
    console.error(`${file}: no rows of the sparse experiment (a run of --mode distil?); give the files of --mode sparse or all runs`);
    process.exit(1);
  }
});
console.log(`Seeds: ${runs.map((r) => r.seed ?? "?").join(", ")} (files: ${args.join(", ")})\n`);
process.stdout.write(seedSummary(runs.map((r) => r.rows), runs.map((r, i) => `seed ${r.seed ?? `#${i + 1}`}`)));
