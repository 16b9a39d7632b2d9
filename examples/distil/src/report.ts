import Table from "cli-table3";
import type { CurvePoint, ResultRow } from "./experiment";

const HEAD = ["experiment", "model", "steps", "validation loss", "vs dense", "RigL closes", "seconds", "ms/step", "status"];

/** The dense row of `experiment` (density 1), when it ran. */
function denseOf(rows: ResultRow[], experiment: ResultRow["experiment"]): ResultRow | undefined {
  return rows.find((r) => r.experiment === experiment && r.density === 1 && r.validationLoss !== null);
}

/** Validation loss of `row` minus the dense model's (null when either is missing). */
function gapToDense(rows: ResultRow[], row: ResultRow): number | null {
  const dense = denseOf(rows, row.experiment);
  if (dense === undefined || dense === row || row.density === 1 || row.validationLoss === null || dense.validationLoss === null) return null;
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
  const densities = [...new Set(rows.filter((r) => r.experiment === "sparse" && r.density < 1).map((r) => r.density))];
  for (const density of densities) {
    const share = riglClosedShare(rows, density);
    const ran = rows.filter((r) => r.experiment === "sparse" && r.density === density && r.status === "done").length === 2;
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
      lines.push(`- distillation: ${(relative * 100).toFixed(1)}% from the dense model's validation loss after ${distilled.steps} steps (target within 3%): ${relative <= 0.03 ? "met" : "not met"}.`);
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
