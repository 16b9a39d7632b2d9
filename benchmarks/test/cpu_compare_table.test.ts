import { describe, expect, it } from "vitest";
import { COMPARISON_HEAD, vsOurDense } from "../src/cpu_compare_table";

describe("cpu_compare.ts's table against our dense product", () => {
  it("gives the speed-up in time, not the ratio of GFLOP/s counted on the non-zero work", () => {
    // 256x1024x1024 at density 0.25: dense 1.506 ms, bsrLinear 0.374 ms, four times as fast (the GFLOP/s ratio is 1.01).
    expect(vsOurDense({ what: "bsrLinear b32 d0.25", ms: 0.374 }, { ms: 1.506 })).toBe("4.03x");
    // Batch 1 with cold caches: the line under the table says 2.92x faster; the column said 0.73x.
    expect(vsOurDense({ what: "bsrLinear b32 d0.25, batch 1, cold cache", ms: 0.532 }, { ms: 1.555 })).toBe("2.92x");
    expect(vsOurDense({ what: "sampledMatmul b32 d0.25", ms: 2 }, { ms: 1 })).toBe("0.50x");
  });

  it("leaves the cell empty for a dense row or without a dense product to compare", () => {
    expect(vsOurDense({ what: "dense matmul", ms: 1.5 }, { ms: 1.5 })).toBe("");
    expect(vsOurDense({ what: "bsrMatmul b32 d0.25", ms: 0.4 }, undefined)).toBe("");
  });

  it("labels the column as a speed and keeps one alignment cell per column", () => {
    const columns = (line: string) => line.split("|").slice(1, -1).map((cell) => cell.trim());
    const [head, align] = COMPARISON_HEAD;
    expect(columns(head)[5]).toBe("vs our dense (speed)");
    expect(columns(align)).toHaveLength(columns(head).length);
  });
});
