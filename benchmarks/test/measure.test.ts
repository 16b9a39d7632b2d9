import { BsrPattern, type Tensor, bsrLinear, getBackendInstance, randn, setBackend } from "@blocksparse/core";
import { beforeAll, describe, expect, it } from "vitest";
import { type TimingPlan, ValidationError, measure } from "../src/measure";
import { bsrLinearRows, pickRows } from "../src/reference";
import { TOLERANCE, compareToReference, spreadIndices } from "../src/validate";

const plan: TimingPlan = { warmup: 1, minRepeats: 3, maxRepeats: 3, budgetMs: 0, minSampleMs: 0 };

beforeAll(() => setBackend("js"));

describe("measure", () => {
  it("refuses to time a result that does not match its reference, after one call", () => {
    let calls = 0;
    const run = () => {
      calls++;
      return Float64Array.of(1, 2, 3.5);
    };
    const attempt = () => measure({ name: "wrong", run, validate: (out) => [compareToReference("out", out, [1, 2, 3], 1e-6)] }, plan);
    expect(attempt).toThrow(ValidationError);
    expect(calls).toBe(1);
    try {
      attempt();
    } catch (error) {
      expect((error as ValidationError).failed[0].what).toBe("out");
      expect((error as Error).message).toMatch(/not timed/);
    }
  });

  it("refuses a benchmark that made no check at all", () => {
    expect(() => measure({ name: "unchecked", run: () => 1, validate: () => [] }, plan)).toThrow(/no check was made/);
  });

  it("validates with poisoned allocations, then times warm-up and repeats", () => {
    const poisonStates: boolean[] = [];
    let calls = 0;
    const m = measure(
      {
        name: "ok",
        run: () => {
          calls++;
          return [1, 2];
        },
        validate: (out) => [compareToReference("out", out, [1, 2], 0)],
        setPoison: (enabled) => poisonStates.push(enabled),
      },
      plan,
    );
    expect(poisonStates).toEqual([true, false]);
    expect(m.samplesMs).toHaveLength(3);
    expect(m.summary.count).toBe(3);
    // validation + warm-up + calibration + three samples of one call
    expect(calls).toBe(1 + 1 + 1 + 3 * m.callsPerSample);
  });

  it("catches an unwritten output element of a real kernel through the poison", () => {
    const pattern = BsrPattern.random([64, 64], { blockShape: [16, 16], density: 0.5, seed: 3 });
    const x = randn([8, 64], { seed: 1 });
    const values = randn([pattern.nnzBlocks, 16, 16], { seed: 2 });
    const rows = spreadIndices(8, 4);
    const reference = bsrLinearRows(x.dataSync(), pattern, values.dataSync(), rows);
    const backend = getBackendInstance();
    const spec = {
      name: "bsrLinear",
      validate: (out: Tensor) => [compareToReference("y", pickRows(out.dataSync(), 64, rows), reference, TOLERANCE.float32)],
      dispose: (out: Tensor) => out.dispose(),
      setPoison: (enabled: boolean) => {
        backend.poisonAllocations = enabled;
      },
    };
    expect(measure({ ...spec, run: () => bsrLinear(x, values, pattern) }, plan).checks[0].ok).toBe(true);
    // A "kernel" whose first output row stays poisoned (unwritten).
    const forgetful = () => {
      const y = bsrLinear(x, values, pattern);
      const partial = Float32Array.from(y.dataSync());
      y.dispose();
      partial.fill(Number.NaN, 0, 64);
      return partial;
    };
    expect(() => measure({ name: "forgetful", run: forgetful, validate: (out) => [compareToReference("y", pickRows(out, 64, rows), reference, 1e-3)] }, plan)).toThrow(
      /element 0 is NaN/,
    );
    for (const t of [x, values]) t.dispose();
  });
});
