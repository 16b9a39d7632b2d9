import Table from "cli-table3";
import { plural } from "../../shared/text";
import type { CurvePoint, ResultRow } from "./experiment";

const HEAD = ["experiment", "model", "steps", "validation loss", "vs dense", "RigL closes", "seconds", "ms/step", "status"];

/**
 * The dense model's row, by its name (runExperiments calls it "dense"): a block-sparse model at density 1
 * (`--density 1`, `--distil-density 1`) is not the dense model, and was left with no gap and no verdict.
 */
function isDense(row: ResultRow): boolean {
  return row.model === "dense";
}

/** The dense row of `experiment`, when it ran. */
function denseOf(rows: ResultRow[], experiment: ResultRow["experiment"]): ResultRow | undefined {
  return rows.find((r) => r.experiment === experiment && isDense(r) && r.validationLoss !== null);
}

/** Validation loss of `row` minus the dense model's (null when either is missing). */
function gapToDense(rows: ResultRow[], row: ResultRow): number | null {
  const dense = denseOf(rows, row.experiment);
  if (dense === undefined || isDense(row) || row.validationLoss === null || dense.validationLoss === null) return null;
  return row.validationLoss - dense.validationLoss;
}

/** The share of the static model's gap to dense that the RigL model at the same density removes (null when not both ran, or static has no gap). */
export function riglClosedShare(rows: ResultRow[], density: number): number | null {
  const find = (suffix: string) => rows.find((r) => r.experiment === "sparse" && r.density === density && r.model.endsWith(suffix));
  const [staticRow, riglRow] = [find("static"), find("rigl")];
  if (staticRow === undefined || riglRow === undefined) return null;
  const [staticGap, riglGap] = [gapToDense(rows, staticRow), gapToDense(rows, riglRow)];
  if (staticGap === null || riglGap === null || !(staticGap > 0)) return null;
  return (staticGap - riglGap) / staticGap;
}

/** "gap" is the validation loss above the dense model's; "RigL closes" is the share of the static model's gap RigL removes at that density. */
export function reportRows(rows: ResultRow[]): string[][] {
  return rows.map((row) => {
    const dense = denseOf(rows, row.experiment);
    const gap = gapToDense(rows, row);
    const closed = row.experiment === "sparse" && row.model.endsWith("rigl") ? riglClosedShare(rows, row.density) : null;
    const status = row.status === "stopped" ? `stopped at ${row.completedSteps}` : row.status;
    return [
      row.experiment,
      row.model,
      String(row.steps),
      row.validationLoss === null ? "" : row.validationLoss.toFixed(4),
      gap === null || dense?.validationLoss == null ? "" : `${gap >= 0 ? "+" : ""}${gap.toFixed(4)} (${((gap / dense.validationLoss) * 100).toFixed(1)}%)`,
      closed === null ? "" : `${(closed * 100).toFixed(0)}%`,
      row.seconds.toFixed(1),
      row.msPerStep === null ? "" : row.msPerStep.toFixed(1),
      status,
    ];
  });
}

export function formatTable(rows: ResultRow[]): string {
  const table = new Table({
    head: HEAD,
    colAligns: ["left", "left", "right", "right", "right", "right", "right", "right", "left"],
    style: { head: [], border: [] },
  });
  table.push(...reportRows(rows));
  return table.toString();
}

/** The rows as a markdown table (the experiment column left out: one table per experiment reads better). */
export function formatMarkdown(rows: ResultRow[]): string {
  const lines = [`| ${HEAD.slice(1).join(" | ")} |`, `| ${HEAD.slice(1).map(() => "---").join(" | ")} |`];
  for (const cells of reportRows(rows)) lines.push(`| ${cells.slice(1).join(" | ")} |`);
  return lines.join("\n");
}

/** A run's lowest validation loss along its curve (its end included), or null without one. */
function bestPoint(row: ResultRow): CurvePoint | null {
  if (row.curve.length === 0) return null;
  return row.curve.reduce((a, b) => (b.validationLoss < a.validationLoss ? b : a));
}

/**
 * Where the dense model of `experiment` over-fitted: its best point when its final validation loss is
 * more than 2% above it (the baseline was getting worse when it stopped), else null.
 */
export function overfitted(rows: ResultRow[], experiment: ResultRow["experiment"]): CurvePoint | null {
  const dense = denseOf(rows, experiment);
  const best = dense === undefined ? null : bestPoint(dense);
  if (dense?.validationLoss == null || best === null) return null;
  return dense.validationLoss > best.validationLoss * 1.02 ? best : null;
}

/** riglClosedShare with every model taken at its best checkpoint (early stopping). */
export function riglClosedShareAtBest(rows: ResultRow[], density: number): number | null {
  const atBest = rows.map((r) => ({ ...r, validationLoss: bestPoint(r)?.validationLoss ?? r.validationLoss }));
  return riglClosedShare(atBest, density);
}

/** One line per quality target the rows can speak to: RigL closing half the static gap at each density, the distilled model within 3% of dense. */
export function targetLines(rows: ResultRow[]): string[] {
  const lines: string[] = [];
  const densities = [...new Set(rows.filter((r) => r.experiment === "sparse" && !isDense(r)).map((r) => r.density))];
  for (const density of densities) {
    const share = riglClosedShare(rows, density);
    const ran = rows.filter((r) => r.experiment === "sparse" && !isDense(r) && r.density === density && r.status === "done").length === 2;
    if (!ran) lines.push(`- density ${density}: static and RigL did not both complete; no verdict.`);
    else if (share === null) lines.push(`- density ${density}: the static model is not worse than dense here; RigL has no gap to close.`);
    else lines.push(`- density ${density}: RigL closes ${(share * 100).toFixed(0)}% of the static model's gap to dense (target at least 50%): ${share >= 0.5 ? "met" : "not met"}.`);
  }
  const sparseDense = overfitted(rows, "sparse");
  if (sparseDense !== null) {
    const dense = denseOf(rows, "sparse") as ResultRow;
    const verdicts = densities.map((density) => {
      const share = riglClosedShareAtBest(rows, density);
      return share === null ? `density ${density}: no gap to close` : `density ${density}: RigL closes ${(share * 100).toFixed(0)}% (${share >= 0.5 ? "met" : "not met"})`;
    });
    lines.push(
      `- the dense model over-fitted (validation loss ${sparseDense.validationLoss.toFixed(4)} at step ${sparseDense.step}, ${(dense.validationLoss as number).toFixed(4)} at its end), so the lines above compare with a degrading baseline; with every model at its best checkpoint: ${verdicts.join("; ")}.`,
    );
  }
  const distilled = rows.find((r) => r.experiment === "distil" && r.model.endsWith(" distil"));
  if (distilled === undefined && rows.some((r) => r.experiment === "distil")) lines.push("- distillation: the dense model did not complete; no verdict.");
  if (distilled !== undefined) {
    const gap = gapToDense(rows, distilled);
    const dense = denseOf(rows, "distil");
    if (distilled.status !== "done" || gap === null || dense?.validationLoss == null) lines.push("- distillation: the recovery run did not complete; no verdict.");
    else {
      const relative = gap / dense.validationLoss;
      lines.push(`- distillation: ${(relative * 100).toFixed(1)}% from the dense model's validation loss after ${plural(distilled.steps, "step")} (target within 3%): ${relative <= 0.03 ? "met" : "not met"}.`);
    }
    const teacher = overfitted(rows, "distil");
    if (teacher !== null) {
      lines.push(
        `- the dense teacher over-fitted (validation loss ${teacher.validationLoss.toFixed(4)} at step ${teacher.step}, higher at its end): the distillation line is no evidence of recovery; train the dense model to its best checkpoint (fewer steps or more text) and run again.`,
      );
    }
  }
  return lines;
}

/**
 * The sparse experiment over several seeds (one list of rows per seed): each model's final validation
 * loss per seed and their mean, the gap of the means to dense, and the share of the static model's
 * gap RigL closes on the means (and per seed, which shows how much a single seed can say).
 */
export function seedSummary(runs: ResultRow[][], labels: string[] = runs.map((_, i) => `seed ${i}`)): string {
  const sparseRuns = runs.map((rows) => rows.filter((r) => r.experiment === "sparse"));
  const models = [...new Set(sparseRuns.flatMap((rows) => rows.map((r) => r.model)))];
  const done = (rows: ResultRow[], model: string) => rows.find((r) => r.model === model && r.status === "done" && r.validationLoss !== null);
  const means = new Map<string, ResultRow>();
  const lines = [
    `| model | ${labels.join(" | ")} | mean | vs dense | RigL closes (mean; per seed) |`,
    `| --- | ${runs.map(() => "---").join(" | ")} | --- | --- | --- |`,
  ];
  const lossesOf = new Map(models.map((model) => [model, sparseRuns.map((rows) => done(rows, model)?.validationLoss ?? null)]));
  for (const [model, losses] of lossesOf) {
    const template = sparseRuns.map((rows) => rows.find((r) => r.model === model)).find((r) => r !== undefined) as ResultRow;
    if (losses.every((l) => l !== null)) means.set(model, { ...template, validationLoss: (losses as number[]).reduce((a, b) => a + b, 0) / losses.length, status: "done" });
  }
  const meanRows = [...means.values()];
  for (const [model, losses] of lossesOf) {
    const mean = means.get(model);
    const gap = mean === undefined ? null : gapToDense(meanRows, mean);
    let closes = "";
    if (mean !== undefined && model.endsWith("rigl")) {
      const share = riglClosedShare(meanRows, mean.density);
      const perSeed = sparseRuns.map((rows) => riglClosedShare(rows, mean.density));
      const percent = (s: number | null) => (s === null ? "n/a" : `${(s * 100).toFixed(0)}%`);
      closes = `${percent(share)}; ${perSeed.map(percent).join(", ")}`;
    }
    lines.push(
      `| ${model} | ${losses.map((l) => (l === null ? "-" : l.toFixed(4))).join(" | ")} | ${mean?.validationLoss?.toFixed(4) ?? "-"} | ${gap === null ? "" : `${gap >= 0 ? "+" : ""}${gap.toFixed(4)}`} | ${closes} |`,
    );
  }
  const verdicts: string[] = [];
  for (const density of [...new Set(meanRows.filter((r) => !isDense(r)).map((r) => r.density))]) {
    const share = riglClosedShare(meanRows, density);
    verdicts.push(
      share === null
        ? `- density ${density}: static and RigL not both complete in every seed, or the static model is not worse than dense on the mean; no verdict.`
        : `- density ${density}, mean of ${plural(runs.length, "seed")}: RigL closes ${(share * 100).toFixed(0)}% of the static model's gap to dense (target at least 50%): ${share >= 0.5 ? "met" : "not met"}.`,
    );
  }
  const overfit = sparseRuns.map((rows, i) => ({ label: labels[i], point: overfitted(rows, "sparse") })).filter((o) => o.point !== null);
  if (overfit.length > 0) verdicts.push(`- the dense model over-fitted in ${overfit.map((o) => o.label).join(", ")}: the comparison there is with a degrading baseline.`);
  return `${lines.join("\n")}\n\n${verdicts.join("\n")}\n`;
}
