import { IndexError, ShapeError, ValueError, broadcastTo, importBackendModules, ones, randn, reshape, slice, split, squeeze, sum, tensor, tidy, transpose, zeros } from "@blocksparse/core";
import { describe, expect, it } from "vitest";

// Array literals with holes: every, forEach, map, filter and some skip a hole, so checks built on them let it through.
const holed = (...entries: (number | undefined)[]): number[] => {
  const out = new Array<number>(entries.length);
  entries.forEach((entry, i) => {
    if (entry !== undefined) out[i] = entry;
  });
  return out;
};

describe("a hole in an array of numbers is the op's typed error naming the argument", () => {
  it("sizes, perms, axes and slice bounds", () => {
    tidy(() => {
      const x = ones([2, 2]);
      expect(() => split(x, holed(undefined, 2))).toThrow(new ValueError("split: sizes[0] must be a non-negative integer, got undefined"));
      expect(() => transpose(x, holed(undefined, 0))).toThrow(new IndexError("transpose: axis must be an integer, got undefined"));
      expect(() => sum(x, holed(undefined, 0))).toThrow(new IndexError("sum: axis must be an integer, got undefined"));
      expect(() => squeeze(ones([1, 1]), holed(undefined, 0))).toThrow(new IndexError("squeeze: axis must be an integer, got undefined"));
      // A hole was read as the default (from 0, take the rest).
      expect(() => slice(x, holed(undefined, 1))).toThrow(new IndexError("slice: begin[0] must be an integer, got undefined"));
      expect(() => slice(x, [0, 0], holed(undefined, 1))).toThrow(new IndexError("slice: size[0] must be -1 or a non-negative integer, got undefined"));
      expect(() => slice(x, [null as never, 0])).toThrow(new IndexError("slice: begin[0] must be an integer, got null"));
      // Shorter bounds still take the rest whole.
      expect(slice(x, [1]).shape).toEqual([1, 2]);
      expect(slice(x, [0, 1], [1]).shape).toEqual([1, 1]);
    });
  });

  it("shapes", () => {
    tidy(() => {
      const x = ones([2, 2]);
      const shapeError = (op: string) => new ShapeError(`${op}: shape must be an array of non-negative integers, got [undefined, 2]`);
      expect(() => reshape(x, holed(undefined, 2))).toThrow(shapeError("reshape"));
      expect(() => reshape(x, holed(-1, undefined, 2))).toThrow(shapeError("reshape"));
      expect(() => zeros(holed(undefined, 2))).toThrow(shapeError("full"));
      expect(() => tensor([1, 2], holed(undefined, 2))).toThrow(shapeError("tensor"));
      expect(() => randn(holed(undefined, 2))).toThrow(shapeError("randn"));
      expect(() => broadcastTo(x, holed(undefined, 2))).toThrow(shapeError("broadcastTo"));
    });
  });

  it("backend module specifiers", async () => {
    await expect(importBackendModules(holed(undefined) as never, async () => ({}))).rejects.toThrow(
      new ValueError("importBackendModules: specifiers must be an array of non-empty strings, got [undefined]"),
    );
  });
});
