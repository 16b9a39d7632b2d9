import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ReferenceLine, type Series, lineChart } from "./chart";
import type { BenchRecord, RunRecord } from "./record";

export interface RenderedReport {
  markdown: string;
  /** File name (relative to the report's folder) -> SVG document. */
  charts: Map<string, string>;
}

/** `count` and its noun, singular for one: "1 core", "2 cores" (`pluralNoun` for a noun not made with an s). */
export function plural(count: number, noun: string, pluralNoun = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : pluralNoun}`;
}

function ms(value: number): string {
  if (!Number.isFinite(value)) return "–";
  if (value >= 100) return value.toFixed(0);
  if (value >= 1) return value.toFixed(2);
  return value.toPrecision(3);
}

/** `digits` decimals; a value too small for them keeps two significant digits (0.0042 GFLOP/s, not 0.00). */
function num(value: number | undefined, digits = 2): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  return value !== 0 && Math.abs(value) < 10 ** -digits ? value.toPrecision(2) : value.toFixed(digits);
}

/** The points a chart can draw: a timing or rate that is missing, NaN or infinite is left out (the table shows "–"). */
function finitePoints(points: Array<[number, number | undefined]>): Array<[number, number]> {
  return points.filter((p): p is [number, number] => Number.isFinite(p[0]) && Number.isFinite(p[1]));
}

function finiteReferences(references: ReferenceLine[]): ReferenceLine[] {
  return references.filter((r) => Number.isFinite(r.y));
}

function mib(bytes: number | undefined): string {
  return bytes === undefined ? "–" : (bytes / 2 ** 20).toFixed(2);
}

function spread(r: BenchRecord): string {
  if (!Number.isFinite(r.timing.q1Ms) || !Number.isFinite(r.timing.q3Ms)) return "–";
  return `${ms(r.timing.q1Ms)}–${ms(r.timing.q3Ms)}`;
}

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const list = groups.get(k);
    if (list) list.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

function fileSafe(text: string): string {
  return text.replace(/[^a-zA-Z0-9]+/g, "-").replace(/^-|-$/g, "");
}

function kernelSection(run: RunRecord, records: BenchRecord[], charts: Map<string, string>): string[] {
  const lines: string[] = ["## Kernels", ""];
  lines.push(
    "GFLOP/s count the non-zero work only (2·M·nnz·R·C); ×dense is the dense product's median time over this one's, measured in the same run at the same shape. Times are medians; the spread is the interquartile range.",
    "",
  );
  const byShape = groupBy(records, (r) => `${r.params.M}x${r.params.K}x${r.params.N} ${r.params.dtype}`);
  for (const [shapeKey, shapeRecords] of byShape) {
    const { M, K, N, dtype } = shapeRecords[0].params;
    lines.push(`### M=${M}, K=${K}, N=${N}, ${dtype}`, "");
    const byOp = groupBy(shapeRecords, (r) => String(r.params.op));
    for (const [op, opRecords] of byOp) {
      const dense = opRecords.find((r) => r.params.blockSize === 0);
      const sparse = opRecords.filter((r) => r.params.blockSize !== 0);
      const bySize = groupBy(sparse, (r) => String(r.params.blockSize));
      const references: ReferenceLine[] = [];
      const timeSeries: Series[] = [];
      const flopSeries: Series[] = [];
      for (const [size, list] of bySize) {
        timeSeries.push({ name: `block ${size}`, points: finitePoints(list.map((r) => [Number(r.params.density), r.timing.medianMs])) });
        flopSeries.push({ name: `block ${size}`, points: finitePoints(list.map((r) => [Number(r.params.density), r.metrics.gflops])) });
      }
      const base = `${fileSafe(run.backend)}-${fileSafe(shapeKey)}-${fileSafe(op)}`;
      const timeFile = `charts/${base}-time.svg`;
      const flopFile = `charts/${base}-gflops.svg`;
      charts.set(
        timeFile,
        lineChart({
          title: `${op}: time vs density (M=${M}, K=${K}, N=${N}, ${dtype})`,
          xLabel: "density",
          yLabel: "median ms per call",
          series: timeSeries,
          references: finiteReferences(dense ? [{ name: dense.name, y: dense.timing.medianMs }, ...references] : references),
        }),
      );
      charts.set(
        flopFile,
        lineChart({
          title: `${op}: throughput vs density (M=${M}, K=${K}, N=${N}, ${dtype})`,
          xLabel: "density",
          yLabel: "GFLOP/s (non-zero work)",
          series: flopSeries,
          references: finiteReferences(dense ? [{ name: dense.name, y: dense.metrics.gflops }] : []),
        }),
      );
      lines.push(`#### ${op}`, "", `![${op} time](${timeFile}) ![${op} GFLOP/s](${flopFile})`, "");
      lines.push("| block | density | median ms | IQR ms | GFLOP/s | ×dense | checked |", "| ---: | ---: | ---: | ---: | ---: | ---: | --- |");
      if (dense) lines.push(`| ${dense.name} | 1 | ${ms(dense.timing.medianMs)} | ${spread(dense)} | ${num(dense.metrics.gflops)} | 1.00 | ${checkSummary(dense)} |`);
      for (const r of sparse) {
        lines.push(
          `| ${r.params.blockSize} | ${keptDensity(r)} | ${ms(r.timing.medianMs)} | ${spread(r)} | ${num(r.metrics.gflops)} | ${num(r.metrics.speedupVsDense)} | ${checkSummary(r)} |`,
        );
      }
      lines.push("");
    }
  }
  return lines;
}

/**
 * A kernel case's density, and the one its pattern kept where whole blocks moved it by more than 5% (0.1 of the 4x4
 * blocks of 64 at --quick's 256x256 keeps 2: 0.125 ran, and its GFLOP/s count those 2).
 */
function keptDensity(r: BenchRecord): string {
  const { density, blockSize, K, N } = r.params;
  const nnzBlocks = r.metrics.nnzBlocks;
  if (nnzBlocks === undefined || typeof blockSize !== "number" || blockSize === 0) return String(density);
  const kept = nnzBlocks / ((Number(N) / blockSize) * (Number(K) / blockSize));
  return Math.abs(kept - Number(density)) > 0.05 * Number(density) ? `${density} (${kept.toPrecision(3)} ran)` : String(density);
}

function checkSummary(r: BenchRecord): string {
  if (r.checks.length === 0) return "not checked";
  const worst = Math.max(...r.checks.map((c) => c.relError));
  return `rel. err ≤ ${worst === 0 ? "0" : worst.toExponential(1)}`;
}

function trainSection(records: BenchRecord[]): string[] {
  const lines = [
    "## Training step",
    "",
    "One linear layer: forward, the input and weight gradients, Adam. The kernel-level step calls the four kernels directly; the nn step is `BlockSparseLinear`/`Linear`, backward through the tape and `Adam.step()`. State is the weights (with the block index) plus Adam's two moments in float32; \"after step\" is everything alive when a step ends (for the kernel-level step, which frees nothing before its end, that is its peak).",
    "",
    "| layer | M×K→N | dtype | density | median ms | IQR ms | ×dense | state MiB | after step MiB |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of records) {
    const { M, K, N, dtype, density } = r.params;
    lines.push(
      `| ${r.name} | ${M}×${K}→${N} | ${dtype} | ${density} | ${ms(r.timing.medianMs)} | ${spread(r)} | ${num(r.metrics.speedupVsDense ?? (density === 1 ? 1 : undefined))} | ${mib(r.metrics.stateBytes)} | ${mib(r.metrics.stepEndBytes)} |`,
    );
  }
  lines.push("");
  return lines;
}

function formatSection(records: BenchRecord[]): string[] {
  const lines = ["## Format (host)", "", "| what | size | median ms | IQR ms | throughput |", "| --- | --- | ---: | ---: | ---: |"];
  for (const r of records) {
    const { rows, cols, blockSize, density } = r.params;
    // Neither rate recorded is a dash, not "0.0 M blocks/s".
    const throughput =
      r.metrics.mbPerSecond !== undefined ? `${num(r.metrics.mbPerSecond, 0)} MB/s` : r.metrics.blocksPerSecond !== undefined ? `${num(r.metrics.blocksPerSecond / 1e6, 1)} M blocks/s` : "–";
    lines.push(`| ${r.name} | ${rows}×${cols}, ${blockSize}×${blockSize} blocks, density ${density} | ${ms(r.timing.medianMs)} | ${spread(r)} | ${throughput} |`);
  }
  lines.push("");
  return lines;
}

/** The markdown report and its charts for one run. */
export function renderReport(run: RunRecord): RenderedReport {
  const charts = new Map<string, string>();
  const m = run.machine;
  const lines: string[] = [
    `# Benchmarks: ${run.backend} backend on ${m.gpu ? m.gpu.name : m.cpuModel}`,
    "",
    `- Machine: ${m.cpuModel}, ${plural(m.cpuCores, "core")}, ${(m.memoryBytes / 2 ** 30).toFixed(0)} GiB, ${m.platform}/${m.arch}, Node ${m.node}${m.gpu ? `; GPU ${m.gpu.name}${m.gpu.computeCapability ? ` (sm ${m.gpu.computeCapability})` : ""}` : ""}`,
    `- Commit ${run.commit.slice(0, 12)}${run.dirty ? " (with uncommitted changes)" : ""}, ${run.date}, ${run.mode} mode, ${run.durationSeconds.toFixed(0)} s`,
    `- Versions: ${Object.entries(run.versions)
      .map(([name, version]) => `${name} ${version}`)
      .join(", ")}`,
    "- Every result was checked against a float64 reference before it was timed.",
    "",
  ];
  const bySuite = groupBy(run.results, (r) => r.suite);
  if (bySuite.has("kernels")) lines.push(...kernelSection(run, bySuite.get("kernels") ?? [], charts));
  if (bySuite.has("train")) lines.push(...trainSection(bySuite.get("train") ?? []));
  if (bySuite.has("format")) lines.push(...formatSection(bySuite.get("format") ?? []));
  if (run.failures.length > 0) {
    lines.push("## Not measured", "", "| suite | what | params | why |", "| --- | --- | --- | --- |");
    for (const f of run.failures) {
      lines.push(`| ${f.suite} | ${f.name} | ${Object.entries(f.params).map(([k, v]) => `${k}=${v}`).join(" ")} | ${f.error.replace(/\|/g, "\\|").replace(/\n/g, " ")} |`);
    }
    lines.push("");
  }
  return { markdown: lines.join("\n"), charts };
}

/** Writes `<backend>.json`, `<backend>.md` and the charts under `dir`; returns the report's path. */
export function writeRun(run: RunRecord, dir: string): string {
  const { markdown, charts } = renderReport(run);
  mkdirSync(join(dir, "charts"), { recursive: true });
  writeFileSync(join(dir, `${run.backend}.json`), `${JSON.stringify(run, null, 2)}\n`);
  for (const [file, svg] of charts) writeFileSync(join(dir, file), svg);
  const reportPath = join(dir, `${run.backend}.md`);
  writeFileSync(reportPath, markdown);
  return reportPath;
}

const INDEX_TITLE = "# Benchmark results";

/** The first line of a run's report (`renderReport`): the reports an index already there gains a link to. */
const REPORT_TITLE = "# Benchmarks: ";

function lastIndex(lines: readonly string[], matches: (line: string) => boolean): number {
  for (let i = lines.length - 1; i >= 0; i--) if (matches(lines[i])) return i;
  return -1;
}

function indexLine(machine: string, report: string): string {
  return `- [${machine}: ${report.replace(/\.md$/, "")}](${machine}/${report})`;
}

/**
 * Writes results/README.md: one link per machine and report found. An index already there keeps every line it has (the
 * descriptions written beside its links, their order, the reports it leaves out) and gains a link to each run report
 * (`writeRun`'s) it does not link yet, after its other links into that machine's folder: rewriting it from the folders
 * dropped every description. A README.md this did not write (its first line is not the index's title: `--out` pointed
 * at a folder of the user's own) is left alone and false returned.
 */
export function writeIndex(resultsDir: string): boolean {
  const indexPath = join(resultsDir, "README.md");
  const existing = existsSync(indexPath) ? readFileSync(indexPath, "utf8") : undefined;
  if (existing !== undefined && existing.split("\n", 1)[0] !== INDEX_TITLE) return false;
  const found: Array<[machine: string, report: string]> = [];
  for (const machine of readdirSync(resultsDir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort()) {
    for (const report of readdirSync(join(resultsDir, machine)).filter((f) => f.endsWith(".md")).sort()) found.push([machine, report]);
  }
  if (existing === undefined) {
    const lines = [INDEX_TITLE, "", "One folder per machine; each report says how it was measured.", ""];
    for (const [machine, report] of found) lines.push(indexLine(machine, report));
    writeFileSync(indexPath, `${lines.join("\n")}\n`);
    return true;
  }
  const lines = existing.replace(/\n$/, "").split("\n");
  const links = (line: string, target: string) => line.startsWith("- [") && line.includes(`](${target})`);
  for (const [machine, report] of found) {
    if (lines.some((line) => links(line, `${machine}/${report}`))) continue;
    if (!readFileSync(join(resultsDir, machine, report), "utf8").split("\n", 1)[0].startsWith(REPORT_TITLE)) continue;
    const sameMachine = lastIndex(lines, (line) => line.startsWith("- [") && line.includes(`](${machine}/`));
    const anyLink = lastIndex(lines, (line) => line.startsWith("- ["));
    const at = sameMachine >= 0 ? sameMachine + 1 : anyLink >= 0 ? anyLink + 1 : lines.length;
    lines.splice(at, 0, indexLine(machine, report));
  }
  writeFileSync(indexPath, `${lines.join("\n")}\n`);
  return true;
}
