import { describe, expect, it } from "vitest";
import { BsrPattern, biasActivationBackward, bsrLinear, bsrMatmul, tensor } from "../src/index";

/** A 4 x 6 weight with 2 x 2 blocks storing only block column 0 (input columns 0 and 1). */
const pattern = BsrPattern.fromMask([4, 6], [2, 2], [1, 0, 0, 1, 0, 0]);
const values = tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2]);

describe("NaN semantics of sparse products", () => {
  it("a NaN in an input column no block reads does not reach the output", () => {
    const x = tensor([1, 1, Number.NaN, Number.POSITIVE_INFINITY, Number.NaN, 2], [1, 6]);
    const y = Array.from(bsrLinear(x, values, pattern).dataSync());
    expect(y).toEqual([3, 7, 11, 15]);
  });

  it("a NaN in a column a block reads does reach the rows of that block", () => {
    const x = tensor([Number.NaN, 1, 0, 0, 0, 0], [1, 6]);
    const y = Array.from(bsrLinear(x, values, pattern).dataSync());
    expect(y.map(Number.isNaN)).toEqual([true, true, true, true]);
  });

  it("dX = dY W: a NaN in dY reaches only the input columns its block row stores", () => {
    const dy = tensor([Number.NaN, Number.NaN, 1, 1], [1, 4]);
    const dx = Array.from(bsrMatmul(dy, values, pattern).dataSync());
    expect(dx.map(Number.isNaN)).toEqual([true, true, false, false, false, false]);
  });
});

describe("NaN semantics of the fused relu backward", () => {
  // torch's threshold_backward zeroes the gradient only where the pre-activation is <= 0; a comparison with NaN is
  // false, so the gradient passes there, as autograd's unfused relu passes it.
  it("passes the gradient at a NaN pre-activation and zeroes it at 0 and below", () => {
    for (const dtype of ["float32", "float16", "bfloat16"] as const) {
      const x = tensor([Number.NaN, -1, 0, 2, 1, -3, 0.5, Number.NaN], [2, 4], dtype);
      const bias = tensor([0, 0, 0, -3], [4], dtype);
      const dy = tensor([2, 2, 2, 2, 3, 3, 3, 3], [2, 4], dtype);
      const [dx, dbias] = biasActivationBackward(dy, x, bias, "relu");
      // Pre-activations: [NaN, -1, 0, -1] and [1, -3, 0.5, NaN].
      expect(dx.toArray()).toEqual([2, 0, 0, 0, 3, 0, 3, 3]);
      expect(dbias.toArray()).toEqual([5, 0, 3, 3]);
    }
  });
});
