import { ShapeError, ValueError, arange, memory, tensor } from "@blocksparse/core";
import { describe, expect, it } from "vitest";

describe("arange's direction", () => {
  it("a step that moves away from stop is a ValueError, as torch.arange's (it was an empty tensor)", () => {
    const before = memory().numTensors;
    expect(() => arange(5, 0)).toThrow(new ValueError("arange: step 1 moves away from stop 0 (start 5); use a negative step to count down"));
    expect(() => arange(-3)).toThrow(ValueError);
    expect(() => arange(0, 5, -1)).toThrow(new ValueError("arange: step -1 moves away from stop 5 (start 0); use a positive step to count up"));
    expect(() => arange(0, 1e-300, -1)).toThrow(ValueError);
    expect(memory().numTensors).toBe(before);
  });

  it("start == stop is empty in either direction, and the counts up and down stay", () => {
    for (const t of [arange(0), arange(3, 3), arange(3, 3, -1)]) {
      expect(t.shape).toEqual([0]);
      expect(Object.is(t.shape[0], 0)).toBe(true);
      t.dispose();
    }
    const down = arange(5, 0, -2);
    expect(down.toArray()).toEqual([5, 3, 1]);
    down.dispose();
    const up = arange(1, 2.5, 0.5);
    expect(up.toArray()).toEqual([1, 1.5, 2]);
    up.dispose();
  });
});

describe("arange's range", () => {
  it("a value past a float dtype's finite range is a ValueError, as full's (it was stored as Infinity)", () => {
    const before = memory().numTensors;
    expect(() => arange(65000, 70000, 1000, "float16")).toThrow(new ValueError("arange: value 69000 is outside float16's range"));
    // The first value is the extreme when counting down from it.
    expect(() => arange(-70000, 0, 10000, "float16")).toThrow(new ValueError("arange: value -70000 is outside float16's range"));
    expect(() => arange(3e38, 3.5e38, 2e37, "bfloat16")).toThrow(new ValueError("arange: value 3.4e+38 is outside bfloat16's range"));
    expect(() => arange(0, 1e39, 1e38)).toThrow(new ValueError("arange: value 9e+38 is outside float32's range"));
    expect(memory().numTensors).toBe(before);
    // Up to the largest finite value (65000 rounds to 64992 in float16), and past it in a wider dtype, still stored.
    const fits = [arange(65000, 65505, 504, "float16"), arange(65000, 70000, 1000), arange(3e38, 3.3e38, 2e37, "bfloat16")];
    expect(fits[0].toArray()).toEqual([64992, 65504]);
    expect(fits[1].toArray()).toEqual([65000, 66000, 67000, 68000, 69000]);
    expect(fits[2].toArray().every(Number.isFinite)).toBe(true);
    for (const t of fits) t.dispose();
  });
});

describe("tensor()'s nested arrays", () => {
  it("an entry that is not a number is a ValueError naming where it is and what it holds", () => {
    expect(() => tensor([1, true] as never)).toThrow(new ValueError("tensor: data[1] must be a number, got true (a boolean; there is no bool dtype, give 1 or 0)"));
    expect(() => tensor([[1, 2], [3, 2n]] as never)).toThrow(new ValueError("tensor: data[1][1] must be a number, got 2n (a BigInt; convert it with Number())"));
    expect(() => tensor([[1], [null]] as never)).toThrow(new ValueError("tensor: data[1][0] must be a number, got null"));
    expect(() => tensor(new Array(3).fill(1, 0, 1) as never)).toThrow(new ValueError("tensor: data[1] must be a number, got undefined (a hole or a missing entry)"));
    expect(() => tensor(["1"] as never)).toThrow(new ValueError('tensor: data[0] must be a number, got "1"'));
    expect(() => tensor(5n as never)).toThrow(new ValueError("tensor: data must be a number, nested arrays or a typed array of numbers, got 5n (a BigInt; convert it with Number())"));
  });

  it("ragged arrays are a ShapeError naming the entry that does not fit", () => {
    expect(() => tensor([[1, 2], [3]])).toThrow(new ShapeError("tensor: nested arrays are ragged: data[1] has 1 entries, expected 2 (as data[0])"));
    expect(() => tensor([[1, 2], 3] as never)).toThrow(new ShapeError("tensor: nested arrays are ragged: data[1] is 3 where an array of 2 entries was expected"));
    expect(() => tensor([1, [2, 3]] as never)).toThrow(new ShapeError("tensor: nested arrays are ragged: data[1] is an array, but data[0] is a number"));
    expect(() => tensor([[[1]], [[2], [3]]])).toThrow(new ShapeError("tensor: nested arrays are ragged: data[1] has 2 entries, expected 1 (as data[0])"));
    expect(() => tensor([[[1, 2]], [[3]]])).toThrow(new ShapeError("tensor: nested arrays are ragged: data[1][0] has 1 entries, expected 2 (as data[0][0])"));
    // With a shape given too: the values are not filled in to make up the given size.
    expect(() => tensor([[1, 2], [3]], [3])).toThrow(new ShapeError("tensor: nested arrays are ragged: data[1] has 1 entries, expected 2 (as data[0])"));
    expect(() => tensor([[1, 2], [3]], [2, 2])).toThrow(ShapeError);
    expect(() => tensor([[], [1]], [2, 0])).toThrow(new ShapeError("tensor: nested arrays are ragged: data[1] has 1 entries, expected 0 (as data[0])"));
  });

  it("a shape given with nested arrays must be theirs, as tfjs's (they were silently reshaped); flat values take any shape of their size", () => {
    const before = memory().numTensors;
    expect(() => tensor([[1, 2], [3, 4]], [4])).toThrow(
      new ShapeError("tensor: nested arrays of shape [2, 2] do not match the given shape [4]; give flat values to fill another shape, or reshape"),
    );
    expect(() => tensor([[1, 2], [3, 4]], [1, 4])).toThrow(ShapeError);
    expect(() => tensor([[[1, 2, 3, 4]]], [2, 2])).toThrow(ShapeError);
    expect(() => tensor([[1, 2, 3, 4]], [4, 1])).toThrow(new ShapeError("tensor: nested arrays of shape [1, 4] do not match the given shape [4, 1]; give flat values to fill another shape, or reshape"));
    // Empty nested arrays: [[], []] is [2, 0], not [0] nor [0, 2].
    expect(() => tensor([[], []], [0])).toThrow(new ShapeError("tensor: nested arrays of shape [2, 0] do not match the given shape [0]; give flat values to fill another shape, or reshape"));
    expect(() => tensor([[], []], [0, 2])).toThrow(ShapeError);
    expect(() => tensor([[]], [0])).toThrow(ShapeError);
    expect(memory().numTensors).toBe(before);
    const kept = [
      tensor([[1, 2], [3, 4]], [2, 2]),
      tensor([1, 2, 3, 4], [2, 2]),
      tensor([1, 2, 3, 4], [4, 1]),
      tensor(new Float32Array(4), [1, 2, 2]),
      tensor(5, [1, 1]),
      tensor([[], []], [2, 0]),
      tensor([], [3, 0]),
      tensor([[], []]),
    ];
    expect(kept.map((t) => t.shape)).toEqual([[2, 2], [2, 2], [4, 1], [1, 2, 2], [1, 1], [2, 0], [3, 0], [2, 0]]);
    expect(kept[0].toArray()).toEqual([1, 2, 3, 4]);
    expect(kept[2].toArray()).toEqual([1, 2, 3, 4]);
    for (const t of kept) t.dispose();
  });
});
