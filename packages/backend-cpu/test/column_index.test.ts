/**
 * bsrMatmul's column view on the cpu backend: the addon refuses a valueIndex that names a block twice, and the kernel
 * layer one that no longer matches the pattern's row view.
 */
import { BsrPattern, bsrMatmul, getBackendInstance, IndexError, tensorOn } from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import { nativeCompute } from "../src/compute";
import { cpuBackend } from "../src/index";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("column_index.test.ts");

describe.skipIf(cpuMissing)("cpu bsrMatmul column view", () => {
  it("the addon refuses a valueIndex entry that repeats another", () => {
    const compute = nativeCompute(cpuBackend().addon);
    const { blockColPtr, blockRowIdx } = BsrPattern.dense([4, 4], [2, 2]).columnIndex;
    const args = { rows: 4, cols: 4, blockHeight: 2, blockWidth: 2, blockColPtr, blockRowIdx, dy: new Float32Array(4).fill(1), values: new Float32Array(16).fill(1), dx: new Float32Array(4), tokens: 1 };
    expect(() => compute.bsrMatmulF32({ ...args, valueIndex: Int32Array.of(0, 2, 1, 3) })).not.toThrow();
    expect(() => compute.bsrMatmulF32({ ...args, valueIndex: Int32Array.of(0, 2, 0, 3) })).toThrow(IndexError);
    expect(() => compute.bsrMatmulF32({ ...args, valueIndex: Int32Array.of(0, 2, 0, 3) })).toThrow(/valueIndex\[2\] = 0 repeats valueIndex\[0\]/);
  });

  it("bsrMatmul refuses a column view written into after the pattern was built", () => {
    const cpu = getBackendInstance("cpu");
    const pattern = BsrPattern.dense([4, 4], [2, 2]);
    const values = tensorOn(cpu, Array.from({ length: 16 }, (_, i) => i + 1), [4, 2, 2]);
    const dy = tensorOn(cpu, [1, 2, 3, 4], [1, 4]);
    expect(Array.from(bsrMatmul(dy, values, pattern).dataSync())).toEqual([78, 88, 118, 128]);
    pattern.columnIndex.valueIndex.set([2, 0], 0);
    expect(() => bsrMatmul(dy, values, pattern)).toThrow(/bsrMatmul: pattern\.columnIndex places block 2/);
  });
});
