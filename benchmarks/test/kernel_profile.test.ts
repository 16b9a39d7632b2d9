import type { Backend } from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import { type KernelProfile, profilePerRun, profileTable } from "../src/kernel_profile";

describe("kernel profiles", () => {
  it("print shares of the total, and a dash where no time was measured (0/0 printed NaN%)", () => {
    const timed: KernelProfile = new Map([
      ["matmul", { calls: 2, ms: 3 }],
      ["add", { calls: 1, ms: 1 }],
    ]);
    expect(profileTable(timed, "step")).toContain("| matmul | 2 | 3.000 | 75.0% |");
    const untimed = profileTable(new Map([["add", { calls: 1, ms: 0 }]]), "step");
    expect(untimed).toContain("| add | 1 | 0.000 | – |");
    expect(untimed).not.toContain("NaN");
  });

  it("refuse a number of runs that divides by zero or is no count", () => {
    const backend = { kernels: {} } as unknown as Backend;
    for (const runs of [0, -1, 1.5, Number.NaN]) {
      expect(() => profilePerRun(backend, () => {}, runs, () => ({ dispose() {} }))).toThrow(`profilePerRun: runs must be a positive integer, got ${runs}`);
    }
  });
});
