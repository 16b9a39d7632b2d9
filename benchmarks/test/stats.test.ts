import { describe, expect, it } from "vitest";
import { quantileSorted, relativeSpread, summarize } from "../src/stats";

describe("summarize", () => {
  it("gives the median, quartiles and extremes the way NumPy's linear quantile does", () => {
    // numpy.percentile([7, 1, 3, 5, 9, 2], [25, 50, 75]) == [2.25, 4.0, 6.5]
    const s = summarize([7, 1, 3, 5, 9, 2]);
    expect(s.median).toBeCloseTo(4, 12);
    expect(s.q1).toBeCloseTo(2.25, 12);
    expect(s.q3).toBeCloseTo(6.5, 12);
    expect([s.min, s.max, s.count]).toEqual([1, 9, 6]);
    expect(s.mean).toBeCloseTo(27 / 6, 12);
  });

  it("takes the middle value of an odd count and does not reorder its input", () => {
    const values = [5, 1, 3];
    expect(summarize(values).median).toBe(3);
    expect(values).toEqual([5, 1, 3]);
  });

  it("refuses no values and non-finite values", () => {
    expect(() => summarize([])).toThrow(/no values/);
    expect(() => summarize([1, Number.NaN])).toThrow(/finite/);
    expect(() => quantileSorted([1, 2], 1.5)).toThrow(/q must be/);
  });

  it("measures the spread relative to the median", () => {
    expect(relativeSpread(summarize([1, 2, 3, 4, 5]))).toBeCloseTo(2 / 3, 12);
  });
});
