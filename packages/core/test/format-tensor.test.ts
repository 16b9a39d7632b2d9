import { cast, scalar, tensor, tidy } from "@blocksparse/core";
import { describe, expect, it } from "vitest";

describe("Tensor.toString", () => {
  it("keeps the sign of -0, as torch prints -0.", () => {
    tidy(() => {
      expect(scalar(-0).toString()).toBe("Tensor(float32, [], js) [-0.0]");
      expect(cast(tensor([-0, 0]), "float16").toString()).toBe("Tensor(float16, [2], js) [-0.0, 0.0]");
      expect(tensor([Number.NaN, -Infinity, -3]).toString()).toBe("Tensor(float32, [3], js) [NaN, -Infinity, -3.0]");
    });
  });

  it("writes large integer-valued floats with 4 significant digits, not every digit of their float64 widening", () => {
    tidy(() => {
      expect(tensor([3, 12345678, 1e20, -1e21, 3.3895313892515355e38]).toString()).toBe(
        "Tensor(float32, [5], js) [3.0, 12345678.0, 1.000e+20, -1.000e+21, 3.390e+38]",
      );
    });
  });
});
