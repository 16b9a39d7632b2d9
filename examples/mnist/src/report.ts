import Table from "cli-table3";
import type { MnistReport } from "./train";

export const TABLE_HEAD = ["model", "test accuracy", "vs dense", "parameters", "weight bytes", "s / epoch"];

/** One row of cells per model, in the order trained (dense first). */
export function reportRows(report: MnistReport): string[][] {
  const dense = report.models[0];
  return report.models.map((model) => [
    model.name,
    percent(model.testAccuracy),
    model === dense ? "" : `${signed((model.testAccuracy - dense.testAccuracy) * 100)} pts`,
    `${model.parameters.toLocaleString("en-US")}${model === dense ? "" : ` (${percent(model.parameters / dense.parameters, 0)})`}`,
    formatBytes(model.weightBytes),
    model.secondsPerEpoch === null ? "-" : model.secondsPerEpoch.toFixed(1),
  ]);
}

/** The final table, plain text (no colours, so it reads the same in a log). */
export function formatTable(report: MnistReport): string {
  const table = new Table({
    head: TABLE_HEAD,
    colAligns: ["left", "right", "right", "right", "right", "right"],
    style: { head: [], border: [] },
  });
  table.push(...reportRows(report));
  return table.toString();
}

export function percent(fraction: number, digits = 2): string {
  return `${(fraction * 100).toFixed(digits)}%`;
}

function signed(value: number): string {
  return `${value >= 0 ? "+" : ""}${value.toFixed(2)}`;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(2)} MiB`;
}
