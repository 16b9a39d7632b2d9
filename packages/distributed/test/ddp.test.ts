import { existsSync } from "node:fs";
import { join } from "node:path";
import { load } from "@blocksparse/nn/node";
import { afterAll, describe, expect, it } from "vitest";
import { buildModel, type ModelSnapshot, snapshot, trainReference } from "./children/ddp_model";
import { readRankResults, removeOutput, runJob } from "./helpers";

const outputs: string[] = [];
afterAll(() => outputs.forEach(removeOutput));

type RankResult = ModelSnapshot & { moved: number[] };

/** Largest |a - b| over every parameter. */
function maxDifference(a: ModelSnapshot, b: ModelSnapshot): number {
  let worst = 0;
  for (const [name, values] of Object.entries(a.parameters)) {
    const other = b.parameters[name];
    expect(other?.length, `${name}: length`).toBe(values.length);
    values.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - other[i]));
    });
  }
  return worst;
}

describe("DistributedDataParallel on the CPU group", () => {
  for (const [worldSize, mode] of [
    [2, "overlap"],
    [3, "no-overlap"],
  ] as const) {
    it(`${worldSize} ranks (${mode === "overlap" ? "buckets reduced during backward" : "reduced after backward"}) train to the parameters and patterns of one process on the combined batch, replicas bit-identical, checkpoint from rank 0 only`, async () => {
      const job = await runJob(worldSize, "ddp_train.ts", [mode]);
      outputs.push(job.out);
      expect(job.code, job.stderr).toBe(0);
      const ranks = readRankResults<RankResult>(job.out, worldSize);
      // Replicas: exactly the same values and patterns (each rank also passed checkReplicas).
      for (const other of ranks.slice(1)) expect(other).toEqual(ranks[0]);
      // The patterns did move (RigL every second step), and as the single process moved them.
      expect(ranks[0].moved.filter((n) => n > 0)).toHaveLength(2);
      const reference = trainReference(worldSize);
      const initial = snapshot(buildModel(100));
      expect(ranks[0].patterns).toEqual(reference.patterns);
      expect(reference.patterns).not.toEqual(initial.patterns);
      // Same training within rounding (the mean of per-rank means vs one mean over the batch).
      expect(maxDifference(ranks[0], reference)).toBeLessThan(1e-6);
      expect(maxDifference(ranks[0], initial)).toBeGreaterThan(1e-2);
      // The checkpoint: written by rank 0 alone, and it holds the trained model.
      expect(existsSync(join(job.out, "model-rank0.safetensors"))).toBe(true);
      for (let rank = 1; rank < worldSize; rank++) expect(existsSync(join(job.out, `model-rank${rank}.safetensors`))).toBe(false);
      const restored = buildModel(999);
      await load(restored, join(job.out, "model-rank0.safetensors"));
      expect(snapshot(restored)).toEqual({ parameters: ranks[0].parameters, patterns: ranks[0].patterns });
    });
  }

  it("checkReplicas names the parameter that differs and the rank that holds it", async () => {
    const job = await runJob(2, "diverge.ts");
    outputs.push(job.out);
    expect(job.code, job.stderr).toBe(0);
    for (const { error } of readRankResults<{ error: string }>(job.out, 2)) {
      expect(error).toBe("the replicas diverged: 4.weight differs from rank 0's on rank(s) 1");
    }
  });

  for (const mode of ["overlap", "no-overlap"] as const) {
    it(`a parameter frozen on rank 1 only is a GradientMismatchError naming it on every rank (${mode}), not a collective of other sizes; frozen on every rank, it is left out alike`, async () => {
      const worldSize = 3;
      const job = await runJob(worldSize, "frozen.ts", [mode], { timeoutMs: 40_000 });
      outputs.push(job.out);
      expect(job.code, job.stderr).toBe(0);
      type Mismatch = { name: string; message: string; parameters?: string[] };
      const ranks = readRankResults<{ mismatch: Record<"backward" | "allReduceGradients", Mismatch | null>; grads: Record<string, number[] | null> }>(job.out, worldSize);
      for (const { mismatch } of ranks) {
        for (const where of ["backward", "allReduceGradients"] as const) {
          expect(mismatch[where]).toEqual({
            name: "GradientMismatchError",
            parameters: ["4.weight"],
            message:
              `DistributedDataParallel.${where}: the ranks disagree on which parameters take gradients, so they would reduce different gradient buckets: ` +
              "parameter '4.weight' (#4 of 6, float32 [4, 16]) takes gradients on rank(s) 0, 2 but is frozen (requiresGrad false) on rank(s) 1. " +
              "Freeze or unfreeze parameters alike on every rank (a parameter that takes gradients but gets none in backward need not be frozen: it counts as zeros where other ranks have one, and keeps none where no rank has one)",
          });
        }
      }
      // Frozen on every rank: no gradient for it anywhere, the others averaged alike.
      for (const { grads } of ranks) {
        expect(grads["4.weight"]).toBeNull();
        expect(grads).toEqual(ranks[0].grads);
      }
      expect(ranks[0].grads["4.bias"]?.some((v) => v !== 0)).toBe(true);
    });
  }
});
