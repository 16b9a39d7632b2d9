import { describe, expect, it } from "vitest";
import { checkIdentical, compareMaxRelative, compareToReference } from "../src/validate";

describe("correctness checks refuse NaN and infinity on either side", () => {
  it("compareToReference fails a NaN or infinite reference (a NaN error is never above the bound)", () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const check = compareToReference("y", [1, 2, 3], [1, bad, 3], 2e-2);
      expect(check.ok).toBe(false);
      expect(check.relError).toBe(Number.POSITIVE_INFINITY);
      expect(check.detail).toBe(`the reference's element 1 is ${bad} (unwritten or overflowed)`);
    }
    expect(compareToReference("y", [1, Number.NaN], [1, Number.NaN], 2e-2).ok).toBe(false);
    expect(compareToReference("y", [1, 2.01], [1, 2], 2e-2).ok).toBe(true);
  });

  it("compareMaxRelative: the largest error against the largest value, within the bound, finite on both sides", () => {
    expect(compareMaxRelative("y", [1, -4, 2], [1, -4.0001, 2], 1e-4)).toMatchObject({ ok: true });
    expect(compareMaxRelative("y", [1, -4, 2], [1, -4.0001, 2], 1e-4).relError).toBeCloseTo(0.0001 / 4.0001, 12);
    expect(compareMaxRelative("y", [1, -4, 2.1], [1, -4, 2], 1e-4)).toMatchObject({ ok: false, detail: "max relative error 2.50e-2 > 0.0001" });
    expect(compareMaxRelative("y", [0, 0], [0, 0], 1e-4).ok).toBe(true);
    expect(compareMaxRelative("y", [1, Number.NaN], [1, 2], 1e-4)).toMatchObject({ ok: false, relError: Number.POSITIVE_INFINITY, detail: "element 1 is NaN (unwritten or overflowed)" });
    expect(compareMaxRelative("y", [1, 2], [Number.NEGATIVE_INFINITY, 2], 1e-4)).toMatchObject({ ok: false, detail: "the reference's element 0 is -Infinity (unwritten or overflowed)" });
    expect(compareMaxRelative("y", [1], [1, 2], 1e-4)).toMatchObject({ ok: false, detail: "1 values, the reference has 2" });
  });

  it("checkIdentical: the same bits, and NaN in both is no agreement", () => {
    expect(checkIdentical("replay", [1, -0.5], [1, -0.5]).ok).toBe(true);
    expect(checkIdentical("replay", [1, Number.NaN], [1, Number.NaN])).toMatchObject({ ok: false, detail: "element 1 is NaN (unwritten or overflowed)" });
    expect(checkIdentical("replay", [1, 2], [1, 2.5])).toMatchObject({ ok: false, detail: "element 1 is 2, expected 2.5" });
    expect(checkIdentical("replay", [1], [1, 2]).ok).toBe(false);
  });
});
