/**
 * The dispatch audit of tc_bench's timings: for every case `tc_bench --mode time --paths auto,...` timed, what the
 * dispatch ran ("auto") against the fastest route it timed beside it, in each form of the product (plain, with the
 * activation or its backward fused, or the product then the activation's pass or its backward's). The cases where auto
 * is more than a margin slower than another route are where a dispatch rule misses; the summary per product, form and
 * block says how often and by how much (docs/kernels.md's rules were set from such tables).
 */

/** A case tc_bench timed: the product, its block, density and shape, and the form it took. */
export interface TcCase {
  op: string;
  block: string;
  density: number;
  m: number;
  k: number;
  n: number;
  /**
   * "plain", "fused activation" or "then biasActivation" (bsrLinear with `--activation`), "fused backward" or "then its
   * backward" (bsrMatmul with `--activation`).
   */
  form: string;
}

/** One row of tc_bench's time table: a route's time on one case. */
export interface TcTime extends TcCase {
  /** "auto", or the path and variant ("wgmma/v14", "mma/v0"). */
  route: string;
  ms: number;
}

/** A case of the audit: auto's time beside the fastest route timed in the same form. */
export interface AuditCase extends TcCase {
  autoMs: number;
  best: string;
  bestMs: number;
  /** autoMs / bestMs: 1 where auto is the fastest. */
  ratio: number;
}

/** The cases of one product, form and block. */
export interface AuditGroup {
  op: string;
  form: string;
  block: string;
  cases: number;
  /** Geometric mean of auto / best. */
  geoMean: number;
  /** Cases where auto took more than the margin over the best. */
  missed: number;
  worst: AuditCase;
}

export interface Audit {
  within: number;
  cases: AuditCase[];
  groups: AuditGroup[];
}

/** A line of tc_bench's output that looks like a time row and does not read as one. */
export class TcBenchParseError extends Error {
  override name = "TcBenchParseError";
}

const FORMS = ["fused activation", "then biasActivation", "fused backward", "then its backward"] as const;

function finite(cell: string, what: string, line: number): number {
  const value = Number(cell);
  if (cell === "" || !Number.isFinite(value)) throw new TcBenchParseError(`line ${line}: ${what} "${cell}" is not a number`);
  return value;
}

/**
 * The time rows of tc_bench's output (`| op | block | density | M | K | N | route | ms | TFLOP/s | cuBLAS TFLOP/s |
 * ratio |`); other lines (headers, the cuBLAS lines, check tables) are skipped. A case and route printed twice keep the
 * last row. Throws TcBenchParseError naming the line for a time row whose numbers do not read.
 */
export function parseTcBenchTimes(text: string): TcTime[] {
  const rows = new Map<string, TcTime>();
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (!line.startsWith("|") || !line.endsWith("|")) return;
    const cells = line
      .slice(1, -1)
      .split("|")
      .map((cell) => cell.trim());
    if (cells.length !== 11 || !/^[a-z]+$/.test(cells[0]) || !/^\d+(x\d+)?$/.test(cells[1])) return;
    const at = index + 1;
    const [op, block] = cells;
    const routeText = cells[6];
    const form = FORMS.find((name) => routeText.endsWith(` ${name}`));
    const route = form === undefined ? routeText : routeText.slice(0, -form.length - 1);
    if (!/^(auto|[a-z]+\/v\d+)$/.test(route)) throw new TcBenchParseError(`line ${at}: route "${routeText}" is not auto or path/vN, with or without a form`);
    const time: TcTime = {
      op,
      block,
      density: finite(cells[2], "density", at),
      m: finite(cells[3], "M", at),
      k: finite(cells[4], "K", at),
      n: finite(cells[5], "N", at),
      route,
      form: form ?? "plain",
      ms: finite(cells[7], "ms", at),
    };
    if (!(time.ms > 0)) throw new TcBenchParseError(`line ${at}: ms ${cells[7]} is not positive`);
    rows.set(JSON.stringify([op, block, time.density, time.m, time.k, time.n, time.form, route]), time);
  });
  return [...rows.values()];
}

/**
 * Auto against the fastest route of its case and form, for every case that has auto and at least one other route;
 * `within` is the margin (0.03: auto more than 3% slower than the best counts as missed).
 */
export function auditDispatch(times: readonly TcTime[], within = 0.03): Audit {
  if (!(within >= 0)) throw new RangeError(`auditDispatch: within must be a number >= 0, got ${within}`);
  const byCase = new Map<string, TcTime[]>();
  for (const time of times) {
    const key = JSON.stringify([time.op, time.block, time.density, time.m, time.k, time.n, time.form]);
    const list = byCase.get(key);
    if (list === undefined) byCase.set(key, [time]);
    else list.push(time);
  }
  const cases: AuditCase[] = [];
  for (const list of byCase.values()) {
    const auto = list.find((time) => time.route === "auto");
    const others = list.filter((time) => time.route !== "auto");
    if (auto === undefined || others.length === 0) continue;
    const best = others.reduce((a, b) => (b.ms < a.ms ? b : a));
    const { op, block, density, m, k, n, form } = auto;
    const bestMs = Math.min(best.ms, auto.ms);
    cases.push({ op, block, density, m, k, n, form, autoMs: auto.ms, best: best.ms < auto.ms ? best.route : "auto", bestMs, ratio: auto.ms / bestMs });
  }
  const byGroup = new Map<string, AuditCase[]>();
  for (const c of cases) {
    const key = JSON.stringify([c.op, c.form, c.block]);
    const list = byGroup.get(key);
    if (list === undefined) byGroup.set(key, [c]);
    else list.push(c);
  }
  const groups: AuditGroup[] = [...byGroup.values()].map((list) => ({
    op: list[0].op,
    form: list[0].form,
    block: list[0].block,
    cases: list.length,
    geoMean: Math.exp(list.reduce((sum, c) => sum + Math.log(c.ratio), 0) / list.length),
    missed: list.filter((c) => c.ratio > 1 + within).length,
    worst: list.reduce((a, b) => (b.ratio > a.ratio ? b : a)),
  }));
  return { within, cases, groups };
}

function caseName(c: AuditCase): string {
  return `${c.m} tokens, ${c.k} -> ${c.n}, density ${c.density}`;
}

/** The audit as markdown: the summary per product, form and block, then every missed case, worst first. */
export function auditMarkdown(audit: Audit): string {
  const percent = `${Math.round(audit.within * 1000) / 10}%`;
  const out = [
    `Auto against the fastest route timed beside it (a case is missed where auto took more than ${percent} over it).`,
    "",
    "| product | form | block | cases | auto / best (geometric mean) | missed | worst |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const g of audit.groups) {
    out.push(`| ${g.op} | ${g.form} | ${g.block} | ${g.cases} | ${g.geoMean.toFixed(3)} | ${g.missed} | ${g.worst.ratio.toFixed(2)}x (${caseName(g.worst)}: ${g.worst.best}) |`);
  }
  const missed = audit.cases.filter((c) => c.ratio > 1 + audit.within).sort((a, b) => b.ratio - a.ratio);
  out.push("");
  if (missed.length === 0) {
    out.push("No case missed.");
  } else {
    out.push("| product | form | block | tokens | K -> N | density | auto (ms) | best | best (ms) | auto / best |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (const c of missed) {
      out.push(`| ${c.op} | ${c.form} | ${c.block} | ${c.m} | ${c.k} -> ${c.n} | ${c.density} | ${c.autoMs.toFixed(4)} | ${c.best} | ${c.bestMs.toFixed(4)} | ${c.ratio.toFixed(2)} |`);
    }
  }
  return `${out.join("\n")}\n`;
}
