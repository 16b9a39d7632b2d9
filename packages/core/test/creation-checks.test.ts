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
  });
});
