import Table from "cli-table3";
import type { TransformerReport } from "./train";

export const TABLE_HEAD = ["model", "val loss (start)", "val loss", "last train loss", "parameters", "ffn parameters", "weight bytes", "ms / step"];

/** One row of cells per model, dense first. */
export function reportRows(report: TransformerReport): string[][] {
  return report.models.map((model) => [
    model.name,
    model.initialValidationLoss.toFixed(3),
    model.validationLoss.toFixed(3),
    model.stepLosses[model.stepLosses.length - 1].toFixed(3),
    model.parameters.toLocaleString("en-US"),
    model.feedForwardParameters.toLocaleString("en-US"),
    formatBytes(model.weightBytes),
    (model.secondsPerStep * 1000).toFixed(0),
  ]);
}

export function formatTable(report: TransformerReport): string {
  const table = new Table({
    head: TABLE_HEAD,
    colAligns: ["left", "right", "right", "right", "right", "right", "right", "right"],
    style: { head: [], border: [] },
  });
  table.push(...reportRows(report));
  return table.toString();
}

function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(2)} MiB`;
}
