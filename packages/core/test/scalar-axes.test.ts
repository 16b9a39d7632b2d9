import { IndexError, type Tensor, ValueError, argmax, logSoftmax, max, mean, memory, min, scalar, softmax, squeeze, sum, tidy } from "@blocksparse/core";
import { describe, expect, it } from "vitest";

/** The shape and values of a tensor, for one comparison. */
const seen = (t: Tensor) => ({ dtype: t.dtype, shape: [...t.shape], values: t.toArray() });

describe("a scalar's axes are those of [1] (0 and -1), as torch's", () => {
  it("sum, mean, max and min over axis 0, -1 or [0] leave the scalar as it is, with or without keepDims", () => {
    tidy(() => {
      const x = scalar(-2.5);
      for (const reduce of [sum, mean, max, min]) {
        for (const axes of [0, -1, [0], [-1]]) {
          for (const keepDims of [false, true]) {
            expect(seen(reduce(x, axes, keepDims)), `${reduce.name}(x, ${JSON.stringify(axes)}, ${keepDims})`).toEqual({ dtype: "float32", shape: [], values: [-2.5] });
          }
        }
      }
      expect(seen(sum(scalar(7, "int32"), 0))).toEqual({ dtype: "int32", shape: [], values: [7] });
    });
  });

  it("argmax of a scalar is 0 (int32, a scalar), by default and over axis 0 or -1", () => {
    tidy(() => {
      for (const value of [3, Number.NaN]) {
        const x = scalar(value);
        expect(seen(argmax(x)), `argmax(${value})`).toEqual({ dtype: "int32", shape: [], values: [0] });
        expect(seen(argmax(x, 0, true))).toEqual({ dtype: "int32", shape: [], values: [0] });
        expect(seen(argmax(x, -1))).toEqual({ dtype: "int32", shape: [], values: [0] });
      }
    });
  });

  it("softmax of a scalar is 1 and logSoftmax 0, scalars of its dtype", () => {
    tidy(() => {
      for (const dtype of ["float32", "float16", "bfloat16"] as const) {
        const x = scalar(4, dtype);
        expect(seen(softmax(x)), dtype).toEqual({ dtype, shape: [], values: [1] });
        expect(seen(softmax(x, 0)), dtype).toEqual({ dtype, shape: [], values: [1] });
        expect(seen(logSoftmax(x, -1)), dtype).toEqual({ dtype, shape: [], values: [0] });
      }
    });
  });

  it("squeeze of a scalar over axis 0 or -1 is the scalar", () => {
    tidy(() => {
      expect(seen(squeeze(scalar(5), 0))).toEqual({ dtype: "float32", shape: [], values: [5] });
      expect(seen(squeeze(scalar(5), [-1]))).toEqual({ dtype: "float32", shape: [], values: [5] });
      expect(seen(squeeze(scalar(5)))).toEqual({ dtype: "float32", shape: [], values: [5] });
    });
  });

  it("any other axis is an IndexError naming the scalar; a repeated one or a causal mask is still refused", () => {
    tidy(() => {
      const x = scalar(1);
      const message = (op: string, axis: number) => `${op}: axis ${axis} is out of range for a scalar (axes 0 and -1)`;
      expect(() => sum(x, 1)).toThrow(new IndexError(message("sum", 1)));
      expect(() => max(x, [0, -2])).toThrow(new IndexError(message("max", -2)));
      expect(() => argmax(x, 1)).toThrow(new IndexError(message("argmax", 1)));
      expect(() => softmax(x, -2)).toThrow(new IndexError(message("softmax", -2)));
      expect(() => squeeze(x, 1)).toThrow(new IndexError(message("squeeze", 1)));
      expect(() => mean(x, [0, -1])).toThrow(IndexError);
      expect(() => sum(x, 0.5)).toThrow(new IndexError("sum: axis must be an integer, got 0.5"));
      expect(() => softmax(x, -1, { causal: true })).toThrow(/softmax: x must have rank >= 2/);
      expect(() => argmax(x, 0, 1 as unknown as boolean)).toThrow(ValueError);
    });
  });

  it("leaves no tensor behind", () => {
    const x = scalar(2);
    const before = memory().numTensors;
    for (const t of [sum(x, 0), argmax(x), softmax(x), logSoftmax(x), squeeze(x, 0)]) t.dispose();
    expect(memory().numTensors).toBe(before);
    x.dispose();
  });
});
