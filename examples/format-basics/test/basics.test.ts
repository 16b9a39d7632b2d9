import { describe, expect, it } from "vitest";
import { runFormatBasics } from "../src/basics.js";

describe("format-basics example", () => {
  it("keeps the strongest quarter of the blocks and round-trips them exactly", async () => {
    const lines: string[] = [];
    const result = await runFormatBasics((line) => lines.push(line));
    // 64 x 96 with 16 x 32 blocks is a 4 x 3 grid: 25% is 3 blocks.
    expect(result.nnzBlocks).toBe(3);
    expect(result.density).toBe(0.25);
    expect(result.keptBlocksError).toBe(0);
    expect(result.torchValuesShape).toEqual([3, 16, 32]);
    expect(result.scipyIndptr).toHaveLength(5);
    expect(result.scipyIndptr[4]).toBe(3);
    expect(result.bytesRoundTripExact).toBe(true);
    expect(result.fileRoundTripExact).toBe(true);
    expect(result.float16MaxError).toBeGreaterThan(0);
    expect(result.float16MaxError).toBeLessThan(1e-3);
    expect(result.transposeShape).toEqual([96, 64]);
    expect(result.fileBytes).toBeGreaterThan(3 * 16 * 32 * 6);
    expect(lines.some((line) => line.includes("torch.sparse_bsr_tensor"))).toBe(true);
  });
});
