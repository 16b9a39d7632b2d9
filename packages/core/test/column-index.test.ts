import { BsrPattern } from "@blocksparse/format";
import { describe, expect, it } from "vitest";
import { IndexError } from "../src/errors";
import { bsrLinear, bsrMatmul, bsrMatmulActivationBackward, tensor } from "../src/index";

// The column view's arrays are plain Int32Arrays: a caller can write into them after the pattern is built.
function fixture() {
  const pattern = BsrPattern.dense([4, 4], [2, 2]);
  const values = tensor(Array.from({ length: 16 }, (_, i) => i + 1), [4, 2, 2]);
  const dy = tensor([1, 2, 3, 4], [1, 4]);
  return { pattern, values, dy, columnIndex: pattern.columnIndex };
}

describe("bsrMatmul checks the pattern's column view against its row view", () => {
  it("computes through an intact column view", () => {
    const { pattern, values, dy } = fixture();
    expect(Array.from(bsrMatmul(dy, values, pattern).dataSync())).toEqual([78, 88, 118, 128]);
  });

  it("refuses a valueIndex that names one block twice", () => {
    const { pattern, values, dy, columnIndex } = fixture();
    columnIndex.valueIndex[1] = columnIndex.valueIndex[0];
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(IndexError);
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(/bsrMatmul: pattern\.columnIndex\.valueIndex\[1\] = 0 repeats valueIndex\[0\]/);
    const pre = tensor([0, 0, 0, 0], [1, 4]);
    expect(() => bsrMatmulActivationBackward(dy, values, pattern, pre, "relu")).toThrow(/repeats valueIndex\[0\]/);
  });

  it("refuses a permutation that places blocks where the row view does not hold them", () => {
    const { pattern, values, dy, columnIndex } = fixture();
    // Blocks 0 and 2 swapped: still a permutation, but block 2 is at (1, 0), not (0, 0).
    columnIndex.valueIndex.set([2, 0], 0);
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(/places block 2 \(valueIndex\[0\]\) at block \(0, 0\); the row-wise index holds it at \(1, 0\)/);
  });

  it("refuses a column view whose pointers no longer cover the blocks", () => {
    const { pattern, values, dy, columnIndex } = fixture();
    columnIndex.blockColPtr[1] = 3;
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(IndexError);
  });

  it("refuses a row view written into after the pattern was built, as bsrLinear does", () => {
    const { pattern, values, dy } = fixture();
    // Row 1's blocks end past nnzBlocks: the column view still matches every block it names.
    pattern.blockRowPtr[2] = 5;
    const x = tensor([1, 2, 3, 4], [1, 4]);
    expect(() => bsrLinear(x, values, pattern)).toThrow(/blockColIdx has 4 entries, blockRowPtr says 5/);
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(/bsrMatmul: pattern\.blockColIdx has 4 entries, pattern\.blockRowPtr says 5/);
    pattern.blockRowPtr[2] = 4;
    pattern.blockRowPtr[1] = 5;
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(IndexError);
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(/pattern\.blockRowPtr decreases at 2 \(5 then 4\)/);
  });
});
