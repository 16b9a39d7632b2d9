import Table from "cli-table3";
import type { ResultRow } from "./experiment";

/** "gap" is the validation loss above the dense model's; "RigL closes" is the share of the static model's gap RigL removes at that density. */
export function reportRows(rows: ResultRow[]): string[][] {
  const dense = (experiment: ResultRow["experiment"]) => rows.find((r) => r.experiment === experiment && r.density === 1);
  return rows.map((row) => {
    const reference = dense(row.experiment);
    const gap = reference === undefined || row === reference ? null : row.validationLoss - reference.validationLoss;
    let closed = "";
    if (row.experiment === "sparse" && row.model.endsWith("rigl") && reference !== undefined) {
      const staticRow = rows.find((r) => r.experiment === "sparse" && r.density === row.density && r.model.endsWith("static"));
      const staticGap = staticRow === undefined ? 0 : staticRow.validationLoss - reference.validationLoss;
      if (staticGap > 0 && gap !== null) closed = `${(((staticGap - gap) / staticGap) * 100).toFixed(0)}%`;
    }
    return [
      row.experiment,
      row.model,
      String(row.steps),
      row.validationLoss.toFixed(4),
      gap === null ? "" : `${gap >= 0 ? "+" : ""}${gap.toFixed(4)} (${((gap / reference!.validationLoss) * 100).toFixed(1)}%)`,
      closed,
    ];
  });
}

export function formatTable(rows: ResultRow[]): string {
  const table = new Table({
    head: ["experiment", "model", "steps", "validation loss", "vs dense", "RigL closes"],
    colAligns: ["left", "left", "right", "right", "right", "right"],
    style: { head: [], border: [] },
  });
  table.push(...reportRows(rows));
  return table.toString();
}
