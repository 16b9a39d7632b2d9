/** The outcome of comparing one result with its reference. */
export interface Check {
  /** What was compared, e.g. "y rows 0, 37, ... (16 of 256)". */
  what: string;
  /** ||actual - reference|| / ||reference|| (Infinity when actual holds NaN or infinity). */
  relError: number;
  tolerance: number;
  ok: boolean;
  /** Why it failed, when it did. */
  detail?: string;
}

/** Float dtypes the benches run in. */
export type BenchDType = "float32" | "float16" | "bfloat16";

/**
 * Relative error bounds for a product accumulated in float32 from inputs of this dtype,
 * compared with float64 math on the same (rounded) inputs: the output's own rounding
 * dominates for the half types; float32 leaves room for TF32 tensor cores.
 */
export const TOLERANCE: Record<BenchDType, number> = {
  float32: 2e-3,
  float16: 5e-3,
  bfloat16: 2e-2,
};

/**
 * The first element that is NaN or infinite in `actual`, then in `reference`, as a failed check; undefined when all are
 * finite. A NaN compares false with any bound, so an error computed from one would pass `error > tolerance` unnoticed.
 */
function firstNonFinite(what: string, actual: ArrayLike<number>, reference: ArrayLike<number>, tolerance: number): Check | undefined {
  for (const [values, whose] of [
    [actual, "element"],
    [reference, "the reference's element"],
  ] as const) {
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) {
        return { what, relError: Number.POSITIVE_INFINITY, tolerance, ok: false, detail: `${whose} ${i} is ${values[i]} (unwritten or overflowed)` };
      }
    }
  }
  return undefined;
}

/** Compares element by element (relative L2 error); NaN or infinity in `actual` or in `reference` always fails. */
export function compareToReference(what: string, actual: ArrayLike<number>, reference: ArrayLike<number>, tolerance: number): Check {
  if (actual.length !== reference.length) {
    return { what, relError: Number.POSITIVE_INFINITY, tolerance, ok: false, detail: `${actual.length} values, the reference has ${reference.length}` };
  }
  const nonFinite = firstNonFinite(what, actual, reference, tolerance);
  if (nonFinite) return nonFinite;
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < actual.length; i++) {
    const value = actual[i];
    const delta = value - reference[i];
    diff += delta * delta;
    norm += reference[i] * reference[i];
  }
  const relError = norm > 0 ? Math.sqrt(diff / norm) : Math.sqrt(diff);
  const ok = relError <= tolerance;
  return ok ? { what, relError, tolerance, ok } : { what, relError, tolerance, ok, detail: `relative error ${relError.toExponential(2)} > ${tolerance}` };
}

/**
 * max |actual - reference| / max |reference| (the largest error against the largest value, as a kernel against another
 * backend's on the same inputs); NaN or infinity on either side always fails.
 */
export function compareMaxRelative(what: string, actual: ArrayLike<number>, reference: ArrayLike<number>, tolerance: number): Check {
  if (actual.length !== reference.length) {
    return { what, relError: Number.POSITIVE_INFINITY, tolerance, ok: false, detail: `${actual.length} values, the reference has ${reference.length}` };
  }
  const nonFinite = firstNonFinite(what, actual, reference, tolerance);
  if (nonFinite) return nonFinite;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < actual.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - reference[i]));
    scale = Math.max(scale, Math.abs(reference[i]));
  }
  const relError = diff / (scale || 1);
  const ok = relError <= tolerance;
  return ok ? { what, relError, tolerance, ok } : { what, relError, tolerance, ok, detail: `max relative error ${relError.toExponential(2)} > ${tolerance}` };
}

/** Exactly the same values, every one finite: two routes to one result (a replay against the eager calls), where NaN in both is no agreement. */
export function checkIdentical(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>): Check {
  if (actual.length !== expected.length) {
    return { what, relError: Number.POSITIVE_INFINITY, tolerance: 0, ok: false, detail: `${actual.length} values, expected ${expected.length}` };
  }
  return firstNonFinite(what, actual, expected, 0) ?? checkEqual(what, actual, expected);
}

/** Fails when any value is NaN or infinite (an unwritten element of a poisoned output). */
export function checkAllFinite(what: string, values: ArrayLike<number>): Check {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      return { what, relError: Number.POSITIVE_INFINITY, tolerance: 0, ok: false, detail: `element ${i} of ${values.length} is ${values[i]}` };
    }
  }
  return { what, relError: 0, tolerance: 0, ok: true };
}

/** Exact equality of two arrays (copies, encodings). */
export function checkEqual(what: string, actual: ArrayLike<number>, expected: ArrayLike<number>): Check {
  if (actual.length !== expected.length) {
    return { what, relError: Number.POSITIVE_INFINITY, tolerance: 0, ok: false, detail: `${actual.length} values, expected ${expected.length}` };
  }
  for (let i = 0; i < actual.length; i++) {
    if (!Object.is(actual[i], expected[i])) {
      return { what, relError: Number.POSITIVE_INFINITY, tolerance: 0, ok: false, detail: `element ${i} is ${actual[i]}, expected ${expected[i]}` };
    }
  }
  return { what, relError: 0, tolerance: 0, ok: true };
}

/**
 * `count` distinct indices in [0, total), evenly spread, always holding the first and the
 * last (where unwritten tails and off-by-one tiles show up).
 */
export function spreadIndices(total: number, count: number): number[] {
  if (!Number.isInteger(total) || total < 1) throw new RangeError(`spreadIndices: total must be a positive integer, got ${total}`);
  const n = Math.min(total, Math.max(1, Math.floor(count)));
  if (n === 1) return [0];
  const picked = new Set<number>();
  for (let i = 0; i < n; i++) picked.add(Math.round((i * (total - 1)) / (n - 1)));
  return [...picked].sort((a, b) => a - b);
}
