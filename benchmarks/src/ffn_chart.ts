/**
 * Charts of training-step results (ffn.ts's ffn.json): one SVG per model, width pair and token count, the speed-up
 * over our dense step against density, one line per block size, with our dense step (1.0) and, when measured,
 * PyTorch's dense step as reference lines.
 *
 *   tsx src/ffn_chart.ts results/gpu-nvidia-h200/ffn-step.json [more.json ...] --out results/gpu-nvidia-h200/charts
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { lineChart, type ReferenceLine, type Series } from "./chart";
import { describeFailure, FlagError, outputDirectory, parseFlags } from "./flags";
import { plural } from "./report";

/** The fields of an ffn.ts row the charts read. */
export interface StepRow {
  model: string;
  dModel: number;
  hidden: number;
  tokens: number;
  dtype?: string;
  block: number;
  /** The block's columns where they differ from its rows (`block`). */
  blockCols?: number;
  density: number;
  medianMs: number;
  vsTorchDense?: number;
}

/** "RxC" of a block-sparse row's blocks. */
function blockName(row: StepRow): string {
  return `${row.block}x${row.blockCols ?? row.block}`;
}

export interface StepChart {
  /** File name, e.g. "ffn-1024x4096-8192-speedup.svg". */
  file: string;
  title: string;
  svg: string;
}

/**
 * One chart per (model, dModel x hidden, tokens) that has a dense row and at least one block-sparse row. `label`
 * (e.g. "captured") goes into the titles and file names.
 */
export function stepCharts(rows: readonly StepRow[], label = ""): StepChart[] {
  const groups = new Map<string, StepRow[]>();
  for (const row of rows) {
    const key = `${row.model}-${row.dModel}x${row.hidden}-${row.tokens}`;
    groups.set(key, [...(groups.get(key) ?? []), row]);
  }
  const charts: StepChart[] = [];
  for (const [key, group] of groups) {
    const dense = group.find((r) => r.block === 0);
    const sparse = group.filter((r) => r.block !== 0);
    if (!dense || sparse.length === 0 || !(dense.medianMs > 0)) continue;
    const series: Series[] = [...new Map(sparse.map((r) => [blockName(r), r.block * (r.blockCols ?? r.block)])).entries()]
      .sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))
      .map(([name]) => ({
        name: `${name} blocks`,
        points: sparse
          .filter((r) => blockName(r) === name && r.medianMs > 0)
          .map((r): [number, number] => [r.density, dense.medianMs / r.medianMs])
          .sort((a, b) => a[0] - b[0]),
      }))
      .filter((s) => s.points.length > 0);
    const references: ReferenceLine[] = [{ name: "our dense step", y: 1 }];
    // vsTorchDense = PyTorch's step / ours, so PyTorch's speed relative to our dense step is its inverse.
    if (dense.vsTorchDense !== undefined && dense.vsTorchDense > 0) references.push({ name: "PyTorch dense step", y: 1 / dense.vsTorchDense });
    const what = label === "" ? "" : `, ${label}`;
    const title = `${dense.model} ${dense.dModel}<->${dense.hidden}, ${plural(dense.tokens, "token")}${dense.dtype ? `, ${dense.dtype}` : ""}${what}: speed-up over dense`;
    const file = `${key}${label === "" ? "" : `-${label.replace(/[^A-Za-z0-9]+/g, "-")}`}-speedup.svg`;
    charts.push({ file, title, svg: lineChart({ title, xLabel: "density", yLabel: "dense step time / this step", series, references }) });
  }
  return charts;
}

/** Writes each chart into `dir` (created); returns the file names. */
export function writeStepCharts(rows: readonly StepRow[], dir: string, label = ""): string[] {
  const charts = stepCharts(rows, label);
  if (charts.length > 0) mkdirSync(dir, { recursive: true });
  for (const chart of charts) writeFileSync(join(dir, chart.file), chart.svg);
  return charts.map((c) => c.file);
}

/**
 * The rows and capture flag of a saved ffn.json, checked: a file that is not JSON, or not ffn.ts's (no rows array, a
 * row without its numbers), is an error naming the file and the row, not a TypeError or a chart of coerced strings.
 */
export function readStepFile(file: string): { rows: StepRow[]; graph: boolean } {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new FlagError(`${file}: cannot read it: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new FlagError(`${file}: not JSON (${(error as Error).message}); expected ffn.ts's ffn.json`);
  }
  const rows = (parsed as { rows?: unknown } | null)?.rows;
  if (!Array.isArray(rows)) throw new FlagError(`${file}: no "rows" array (expected ffn.ts's ffn.json)`);
  rows.forEach((row: unknown, i) => {
    const r = row as Record<string, unknown> | null;
    const bad =
      typeof r !== "object" || r === null
        ? "not an object"
        : typeof r.model !== "string"
          ? '"model" is not a string'
          : ["dModel", "hidden", "tokens", "block", "density", "medianMs"].map((key) => (typeof r[key] === "number" ? undefined : `"${key}" is not a number`)).find((why) => why !== undefined);
    if (bad !== undefined) throw new FlagError(`${file}: row ${i} is not an ffn.ts row: ${bad}`);
  });
  return { rows: rows as StepRow[], graph: (parsed as { graph?: unknown }).graph === true };
}

function main(): void {
  const { values, positionals } = parseFlags({
    usage: "tsx src/ffn_chart.ts FILE.json [...] --out DIR",
    summary: "Charts of ffn.ts results: the speed-up over the dense step against density, one SVG per model, widths and tokens.",
    positionals: "FILE.json: ffn.ts's ffn.json, one or more",
    flags: { out: { type: "string", description: "directory the SVG charts are written to", defaultText: "none, required" } },
  });
  if (positionals.length === 0 || !values.out) throw new FlagError("usage: tsx src/ffn_chart.ts FILE.json [...] --out DIR");
  const given = new Set<string>();
  for (const file of positionals) {
    if (given.has(resolve(file))) throw new FlagError(`${file}: given twice; give each file once`);
    given.add(resolve(file));
  }
  const outDir = outputDirectory(values.out);
  // Every file read and checked before any chart is written.
  const files = positionals.map((file) => ({ file, ...readStepFile(file) }));
  // Charts are named by model, widths and tokens alone: two files with one such case (a float32 and a bfloat16 run of
  // it, or one file given twice) wrote the same chart, the second over the first, and both were listed as written.
  const owners = new Map<string, string>();
  for (const { file, rows, graph } of files) {
    for (const chart of stepCharts(rows, graph ? "captured" : "")) {
      const earlier = owners.get(chart.file);
      if (earlier !== undefined) {
        throw new FlagError(`${file}: its chart ${chart.file} is also ${earlier}'s, and would overwrite it; chart the two into separate --out directories`);
      }
      owners.set(chart.file, file);
    }
  }
  for (const { file, rows, graph } of files) {
    const written = writeStepCharts(rows, outDir, graph ? "captured" : "");
    process.stdout.write(`${basename(file)}: ${written.length > 0 ? written.join(", ") : "no dense + block-sparse group"}\n`);
  }
}

if (process.argv[1] && basename(process.argv[1]).startsWith("ffn_chart")) {
  try {
    main();
  } catch (error) {
    process.stderr.write(`${describeFailure(error)}\n`);
    process.exit(1);
  }
}
