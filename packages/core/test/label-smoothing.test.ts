/** crossEntropy's labelSmoothing against torch's formula computed here in float64. */
import { describe, expect, it } from "vitest";
import { ValueError, cast, crossEntropy, tensor } from "../src";

const logits = [
  [2.0, -1.0, 0.5, 0.0],
  [-0.3, 0.8, 1.7, -2.2],
  [1.0, 1.0, 1.0, 1.0],
];
const targets = [2, 0, 3];

/** torch: (1 - e) * nll + e * (-mean_c log softmax), each row; rows whose target is `ignore` are 0. */
function expectedRows(e: number, ignore?: number): number[] {
  return logits.map((row, i) => {
    if (targets[i] === ignore) return 0;
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    const logp = row.map((v) => v - lse);
    return (1 - e) * -logp[targets[i]] + e * -(logp.reduce((s, v) => s + v, 0) / row.length);
  });
}

describe("crossEntropy's labelSmoothing", () => {
  const x = () => tensor(logits.flat(), [3, 4]);
  const t = () => tensor(targets, [3], "int32");
  it("gives torch's loss for each reduction, and 0 smoothing the plain loss", () => {
    for (const e of [0, 0.1, 1]) {
      const rows = expectedRows(e);
      const none = Array.from(crossEntropy(x(), t(), { reduction: "none", labelSmoothing: e }).dataSync());
      for (const [i, v] of none.entries()) expect(v).toBeCloseTo(rows[i], 5);
      expect(crossEntropy(x(), t(), { reduction: "sum", labelSmoothing: e }).dataSync()[0]).toBeCloseTo(rows[0] + rows[1] + rows[2], 5);
      expect(crossEntropy(x(), t(), { labelSmoothing: e }).dataSync()[0]).toBeCloseTo((rows[0] + rows[1] + rows[2]) / 3, 5);
    }
  });
  it("leaves ignored rows at 0 and averages over the rows kept, in half dtypes too", () => {
    const rows = expectedRows(0.2, 0);
    expect(rows[1]).toBe(0);
    for (const dtype of ["float32", "bfloat16"] as const) {
      const got = crossEntropy(cast(x(), dtype), t(), { ignoreIndex: 0, labelSmoothing: 0.2 }).dataSync()[0];
      expect(got).toBeCloseTo((rows[0] + rows[2]) / 2, dtype === "float32" ? 5 : 1);
    }
  });
  it("refuses a value outside [0, 1]", () => {
    for (const bad of [-0.1, 1.5, Number.NaN, "0.1"]) {
      expect(() => crossEntropy(x(), t(), { labelSmoothing: bad as number })).toThrow(ValueError);
    }
    expect(() => crossEntropy(x(), t(), { labelSmoothing: 2 })).toThrow("crossEntropy: labelSmoothing must be a number in [0, 1], got 2");
  });
});
