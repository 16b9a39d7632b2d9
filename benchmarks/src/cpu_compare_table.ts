/** The parts of cpu_compare.ts's table that do not need a backend: its header and its column against our dense product. */

/** The table's header and alignment rows. */
export const COMPARISON_HEAD = [
  "| product | M×K×N | ms | ms, each round | GFLOP/s | vs our dense (speed) | NumPy / SciPy ms | NumPy ms, each round | NumPy / SciPy GFLOP/s | ours ÷ theirs (speed) | each round | vs js |",
  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
];

/**
 * "vs our dense (speed)": our dense product's time at the same shape and condition over this product's, as "4.03x"
 * (above 1: faster than dense); empty for a dense row or without a dense one. It was the ratio of the two GFLOP/s,
 * which count only the non-zero work: 1.01x for a product four times as fast as dense at density 0.25, and 0.73x
 * beside a line saying the same product was 2.92x faster.
 */
export function vsOurDense(row: { what: string; ms: number }, dense: { ms: number } | undefined): string {
  if (row.what.startsWith("dense") || dense === undefined || !(row.ms > 0) || !Number.isFinite(dense.ms)) return "";
  return `${(dense.ms / row.ms).toFixed(2)}x`;
}
