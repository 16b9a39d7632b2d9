import { getBackendInstance, memory, setBackend } from "@blocksparse/core";
import { beforeAll, describe, expect, it } from "vitest";
import { nnStepGroup } from "../src/suites/nn_step";
import type { SuiteConfig } from "../src/suites/types";

beforeAll(() => setBackend("js"));

const config: SuiteConfig = {
  backend: "js",
  quick: true,
  large: false,
  dtypes: ["float32"],
  plan: { warmup: 0, minRepeats: 2, maxRepeats: 2, budgetMs: 0, minSampleMs: 0 },
  synchronize: () => {},
  setPoison: (enabled) => {
    getBackendInstance().poisonAllocations = enabled;
  },
};

describe("nn training step", () => {
  it("validates a real BlockSparseLinear + Adam step against float64, times it and frees what it made", () => {
    const tensorsBefore = memory().numTensors;
    const group = nnStepGroup(config, 16, 64, 96, [0.25], 5);
    const [dense, sparse] = group.cases.map((c) => c.execute());
    group.dispose?.();
    for (const record of [dense, sparse]) {
      expect(record.checks.map((c) => c.what)).toEqual([expect.stringMatching(/^y rows/), expect.stringMatching(/^dX rows/), expect.stringMatching(/^dW/), "weight after Adam's first step"]);
      expect(record.checks.every((c) => c.ok)).toBe(true);
      expect(record.timing.samples).toBe(2);
    }
    // [96, 64] in 32x32 blocks: 6 blocks, a quarter of them kept -> 2 blocks
    expect(sparse.metrics.weightBytes).toBe(2 * 32 * 32 * 4 + 4 * (3 + 1 + 2));
    expect(sparse.metrics.optimizerBytes).toBe(2 * 2 * 32 * 32 * 4);
    expect(dense.metrics.stateBytes).toBe(3 * 96 * 64 * 4);
    expect(sparse.metrics.speedupVsDense).toBeGreaterThan(0);
    expect(memory().numTensors).toBe(tensorsBefore);
  });
});
