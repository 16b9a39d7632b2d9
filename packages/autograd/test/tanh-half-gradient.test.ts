import { tanh, tensor } from "@blocksparse/core";
import { backward } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";

/** tanh's gradient 1 - y^2 near |y| = 1, where y^2 rounded to a half dtype cancels against 1. */
describe("tanh's gradient in half precision", () => {
  // y = tanh(x) stored as 1 - 32 * 2^-11 (float16) and 1 - 8 * 2^-8 (bfloat16): y^2 rounds by half a spacing below 1.
  const cases = [
    { dtype: "float16", y: 1 - 32 * 2 ** -11 },
    { dtype: "bfloat16", y: 1 - 8 * 2 ** -8 },
  ] as const;
  for (const { dtype, y } of cases) {
    it(`is 1 - y^2 rounded once, as torch's tanh_backward (${dtype})`, () => {
      const x = tensor([Math.atanh(y)], [1], dtype);
      x.requiresGrad = true;
      const out = tanh(x);
      const stored = out.dataSync()[0];
      expect(stored).toBe(y);
      backward(out);
      // 1 - y^2 is exact in either dtype here (2^-5 - 2^-12 and 2^-4 - 2^-10); the half product y * y gave 2^-5 and 2^-4.
      expect(x.grad!.dataSync()[0]).toBe(1 - stored * stored);
    });
  }
});
