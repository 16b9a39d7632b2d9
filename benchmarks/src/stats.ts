/** Summary of repeated timings, in milliseconds. */
export interface Summary {
  count: number;
  median: number;
  /** First and third quartiles (linear interpolation between order statistics, as NumPy's default). */
  q1: number;
  q3: number;
  min: number;
  max: number;
  mean: number;
}

/** The q-quantile (0 <= q <= 1) of already sorted values, interpolating linearly. */
export function quantileSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) throw new RangeError("quantile: no values");
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile: q must be in [0, 1], got ${q}`);
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.ceil(position);
  return sorted[below] + (sorted[above] - sorted[below]) * (position - below);
}

/** Median, quartiles, extremes and mean of finite values. */
export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) throw new RangeError("summarize: no values");
  for (const value of values) {
    if (!Number.isFinite(value)) throw new RangeError(`summarize: values must be finite, got ${value}`);
  }
  const sorted = [...values].sort((a, b) => a - b);
  return {
    count: sorted.length,
    median: quantileSorted(sorted, 0.5),
    q1: quantileSorted(sorted, 0.25),
    q3: quantileSorted(sorted, 0.75),
    min: sorted[0],
    max: sorted[sorted.length - 1],
    mean: sorted.reduce((sum, value) => sum + value, 0) / sorted.length,
  };
}

/** The spread as a fraction of the median: (q3 - q1) / median. */
export function relativeSpread(summary: Summary): number {
  return summary.median > 0 ? (summary.q3 - summary.q1) / summary.median : 0;
}
