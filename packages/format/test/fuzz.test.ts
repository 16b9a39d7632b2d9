import { describe, expect, it } from "vitest";
import { fuzzCase, runCase } from "../fuzz/cases.js";
import { describeSummary, runFuzz } from "../fuzz/runner.js";

/** CI's bounded run; `pnpm -F @blocksparse/format fuzz` runs 10,000 cases per reader. */
const CASES = Number(process.env.BLOCKSPARSE_FUZZ_CASES ?? 2500);

describe("mutation fuzzing of the file readers", () => {
  it("cases are deterministic in the seed and actually corrupt the files", () => {
    expect(fuzzCase("npz", 1, 7).bytes).toEqual(fuzzCase("npz", 1, 7).bytes);
    expect(fuzzCase("npz", 1, 7).bytes).not.toEqual(fuzzCase("npz", 2, 7).bytes);
    const outcomes = Array.from({ length: 200 }, (_, i) => runCase("safetensors", 1, i).outcome);
    expect(outcomes.filter((o) => o === "rejected").length).toBeGreaterThan(50);
  });

  it("the runner counts a case that kills its process as a crash and one that never returns as a hang, then goes on", async () => {
    const summary = await runFuzz({ reader: "harness-check", cases: 10, workers: 1, caseTimeoutMs: 1500 });
    expect(summary.crashes.map((c) => c.index)).toEqual([3]);
    expect(summary.crashes[0].detail).toMatch(/exited \(70\)/);
    expect(summary.hangs).toEqual([5]);
    expect(summary.accepted).toBe(8);
  }, 120_000);

  it.each(["safetensors", "npz"] as const)(
    "%s: no crash, no hang, nothing corrupt silently accepted, each case in a child process",
    async (reader) => {
      const summary = await runFuzz({ reader, cases: CASES, seed: 20261129 });
      console.log(describeSummary(summary));
      expect(summary.accepted + summary.rejected).toBe(CASES);
      expect(summary.crashes).toEqual([]);
      expect(summary.hangs).toEqual([]);
      expect(summary.silentlyAccepted).toEqual([]);
    },
    120_000,
  );
});
