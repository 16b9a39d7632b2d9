import { describe, expect, it } from "vitest";
import { BsrPattern, bsrLinear, bsrMatmul, tensor } from "../src/index";

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
