/** One Linear that was (or, in a dry run, would be) replaced by a BlockSparseLinear. */
export interface PatchedLayer {
  /** Dotted module name: of a layer reachable under several names, the first its pattern matched. */
  name: string;
  /** The pattern that claimed the layer (the first one added that matches its name, or any of its names). */
  pattern: string;
  /** The weight's shape [outFeatures, inFeatures]. */
  shape: [number, number];
  /** The density asked for. */
  density: number;
  blockShape: [number, number];
  /** Blocks kept: round(density * totalBlocks), at least one. */
  keptBlocks: number;
  totalBlocks: number;
  /** The density kept, keptBlocks / totalBlocks: the asked one rounded to whole blocks (a layer of few blocks keeps more or less). */
  keptDensity: number;
  bias: boolean;
  /** Weight and bias elements of the dense layer. */
  paramsBefore: number;
  /** Stored block values and bias elements of the block-sparse layer. */
  paramsAfter: number;
}

export interface PatchTotals {
  /** Number of layers patched. */
  layers: number;
  /** Parameters of the patched layers, before and after, each once (a weight tied between two layers counts once). */
  paramsBefore: number;
  paramsAfter: number;
  /** Parameters of the whole model, before and after (its Parameters: a plain Tensor left in a parameter slot is not one). */
  modelParamsBefore: number;
  modelParamsAfter: number;
}

/** What patchModel did (or, with `dryRun`, would do). `toString()` renders it as a table. */
export class PatchReport {
  constructor(
    readonly layers: readonly PatchedLayer[],
    readonly totals: PatchTotals,
    /** Patterns that matched no module at all. */
    readonly unmatchedPatterns: readonly string[],
    /** Patterns that matched only layers an earlier pattern had already claimed. */
    readonly shadowedPatterns: readonly string[],
    readonly dryRun: boolean,
    /**
     * Why a pattern that matched nothing may have been meant otherwise: a string that matches only the start of some
     * layers' names (a string must match the whole name; Python's re.match takes a prefix), or one written like a regex literal.
     */
    readonly hints: readonly string[] = [],
  ) {}

  /** The report as rows of cells, a header first: for printing or for console.table. */
  toRows(): string[][] {
    const rows = [["layer", "pattern", "shape", "block", "density", "blocks", "params before", "params after"]];
    for (const layer of this.layers) {
      rows.push([
        layer.name,
        layer.pattern,
        `${layer.shape[0]}x${layer.shape[1]}`,
        `${layer.blockShape[0]}x${layer.blockShape[1]}`,
        String(layer.density),
        `${layer.keptBlocks}/${layer.totalBlocks}`,
        count(layer.paramsBefore),
        count(layer.paramsAfter),
      ]);
    }
    return rows;
  }

  toString(): string {
    const { totals } = this;
    const title = `${this.dryRun ? "Dry run: would patch" : "Patched"} ${totals.layers} Linear layer${totals.layers === 1 ? "" : "s"} to BlockSparseLinear`;
    const rows = this.toRows();
    rows.push(["total", "", "", "", "", "", count(totals.paramsBefore), count(totals.paramsAfter)]);
    const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
    const numeric = new Set([4, 5, 6, 7]);
    const render = (row: string[]) =>
      row
        .map((cell, column) => (numeric.has(column) ? cell.padStart(widths[column]) : cell.padEnd(widths[column])))
        .join("  ")
        .trimEnd();
    const lines = [title, render(rows[0]), ...rows.slice(1, -1).map(render), render(rows[rows.length - 1])];
    lines.push(
      `model parameters: ${count(totals.modelParamsBefore)} -> ${count(totals.modelParamsAfter)} (${percent(totals.modelParamsAfter, totals.modelParamsBefore)} of before)`,
    );
    if (this.unmatchedPatterns.length > 0) lines.push(`patterns that matched nothing: ${this.unmatchedPatterns.join(", ")}`);
    for (const hint of this.hints) lines.push(`  ${hint}`);
    if (this.shadowedPatterns.length > 0) lines.push(`patterns whose matches an earlier pattern claimed: ${this.shadowedPatterns.join(", ")}`);
    const far = this.layers.filter(keepsFarFromAsked);
    if (far.length > 0) {
      const shown = far.slice(0, 4).map((layer) => `${layer.name} ${layer.keptBlocks}/${layer.totalBlocks} = ${round(layer.keptDensity)} for ${layer.density}`);
      lines.push(
        `layers that keep a density more than ${100 * FAR}% from the one asked (too few blocks to round to it; a smaller blockShape gives finer steps): ${shown.join(", ")}${far.length > 4 ? `, and ${far.length - 4} more` : ""}`,
      );
    }
    return lines.join("\n");
  }
}

/** The relative distance from the asked density past which toString names a layer. */
const FAR = 0.1;

/** Whether a layer keeps a density more than FAR (relative) from the one asked: whole blocks cannot get nearer, or the one block a layer keeps at least. */
function keepsFarFromAsked(layer: PatchedLayer): boolean {
  return Math.abs(layer.keptDensity - layer.density) > FAR * layer.density;
}

function round(value: number): string {
  return String(Number(value.toPrecision(3)));
}

function count(n: number): string {
  return n.toLocaleString("en-US");
}

function percent(part: number, whole: number): string {
  return whole === 0 ? "-" : `${((100 * part) / whole).toFixed(1)}%`;
}
