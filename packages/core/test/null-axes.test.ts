import {
  IndexError,
  type Tensor,
  argmax,
  concat,
  flatten,
  gather,
  indexCopy,
  logSoftmax,
  max,
  mean,
  min,
  scalar,
  scatterAdd,
  softmax,
  split,
  squeeze,
  stack,
  sum,
  tensor,
  tidy,
  transpose,
  zeros,
} from "@blocksparse/core";
import { describe, expect, it } from "vitest";

/** The dtype, shape and (flat) values of a tensor, for one comparison. */
const seen = (t: Tensor) => ({ dtype: t.dtype, shape: [...t.shape], values: t.toArray() });

describe("null as an optional axes or axis means the default (torch's dim=None)", () => {
  it("sum, mean, max and min over null reduce every axis, with or without keepDims", () => {
    tidy(() => {
      const x = tensor([1, -2, 3, 4, 5, -5], [2, 1, 3]);
      const expected = { sum: 6, mean: 1, max: 5, min: -5 };
      for (const reduce of [sum, mean, max, min]) {
        const value = expected[reduce.name as keyof typeof expected];
        expect(seen(reduce(x, null)), `${reduce.name}(x, null)`).toEqual({ dtype: "float32", shape: [], values: [value] });
        expect(seen(reduce(x, null, true)), `${reduce.name}(x, null, true)`).toEqual({ dtype: "float32", shape: [1, 1, 1], values: [value] });
        expect(seen(reduce(scalar(2), null)), `${reduce.name}(scalar, null)`).toEqual({ dtype: "float32", shape: [], values: [2] });
      }
      expect(seen(sum(tensor([1, 2, 3], [3], "int32"), null))).toEqual({ dtype: "int32", shape: [], values: [6] });
    });
  });

  it("argmax, softmax and logSoftmax over null work along the last axis", () => {
    tidy(() => {
      const x = tensor([1, 5, 2, 7, 0, 3], [2, 3]);
      expect(seen(argmax(x, null))).toEqual(seen(argmax(x, -1)));
      expect(argmax(x, null).toArray()).toEqual([1, 0]);
      expect(seen(argmax(x, null, true))).toEqual({ dtype: "int32", shape: [2, 1], values: [1, 0] });
      expect(seen(argmax(scalar(4), null))).toEqual({ dtype: "int32", shape: [], values: [0] });
      expect(seen(softmax(x, null))).toEqual(seen(softmax(x, -1)));
      expect(seen(logSoftmax(x, null))).toEqual(seen(logSoftmax(x, -1)));
      expect(seen(softmax(x, null, { causal: true }))).toEqual(seen(softmax(x, -1, { causal: true })));
    });
  });

  it("squeeze over null removes every dim of size 1; transpose with a null perm reverses the dims", () => {
    tidy(() => {
      const x = tensor([1, 2, 3], [1, 3, 1]);
      expect(seen(squeeze(x, null))).toEqual({ dtype: "float32", shape: [3], values: [1, 2, 3] });
      expect(seen(squeeze(scalar(5), null))).toEqual({ dtype: "float32", shape: [], values: [5] });
      const y = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
      expect(seen(transpose(y, null))).toEqual({ dtype: "float32", shape: [3, 2], values: [1, 4, 2, 5, 3, 6] });
    });
  });

  it("flatten's null start and end are its first and last axes", () => {
    tidy(() => {
      const x = zeros([2, 3, 4]);
      expect(flatten(x, null, null).shape).toEqual([24]);
      expect(flatten(x, 1, null).shape).toEqual([2, 12]);
      expect(flatten(x, null, 1).shape).toEqual([6, 4]);
      expect(flatten(scalar(1), null, null).shape).toEqual([1]);
      // The error names the axes that were resolved, not null.
      expect(() => flatten(x, 2, 1)).toThrow(new IndexError("flatten: endAxis 1 comes before startAxis 2"));
    });
  });

  it("split, concat, stack, gather, scatterAdd and indexCopy over null work along axis 0", () => {
    tidy(() => {
      const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
      expect(split(x, 2, null).map(seen)).toEqual(split(x, 2, 0).map(seen));
      expect(split(x, 2, null).map((part) => part.shape)).toEqual([[1, 3], [1, 3]]);
      expect(seen(concat([x, x], null))).toEqual(seen(concat([x, x], 0)));
      expect(concat([x, x], null).shape).toEqual([4, 3]);
      expect(stack([x, x], null).shape).toEqual([2, 2, 3]);
      const rows = tensor([1, 1, 0], [3], "int32");
      expect(seen(gather(x, rows, null))).toEqual({ dtype: "float32", shape: [3, 3], values: [4, 5, 6, 4, 5, 6, 1, 2, 3] });
      expect(seen(scatterAdd(rows, gather(x, rows), [2, 3], null))).toEqual({ dtype: "float32", shape: [2, 3], values: [1, 2, 3, 8, 10, 12] });
      const target = zeros([3, 3]);
      indexCopy(target, tensor([2], [1], "int32"), tensor([7, 8, 9], [1, 3]), null);
      expect(target.toArray()).toEqual([0, 0, 0, 0, 0, 0, 7, 8, 9]);
    });
  });

  it("null inside an axes list or a perm is still refused", () => {
    tidy(() => {
      const x = zeros([2, 3]);
      expect(() => sum(x, [0, null] as never)).toThrow(new IndexError("sum: axis must be an integer, got null"));
      expect(() => transpose(x, [null, 0] as never)).toThrow(new IndexError("transpose: axis must be an integer, got null"));
      expect(() => squeeze(zeros([1, 1]), [null] as never)).toThrow(new IndexError("squeeze: axis must be an integer, got null"));
    });
  });
});
