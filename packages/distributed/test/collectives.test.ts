import { afterAll, describe, expect, it } from "vitest";
import { readRankResults, removeOutput, runJob } from "./helpers";

interface CollectiveResults {
  rank: number;
  worldSize: number;
  sum: number[];
  avg: number[];
  bfloat16Sum: number[];
  overlapped: number[];
  broadcast: number[];
  gathered: { shape: number[]; values: number[] };
}

const outputs: string[] = [];
afterAll(() => outputs.forEach(removeOutput));

/** What every rank must hold after test/children/collectives.ts, in float64 math. */
function expected(worldSize: number): Omit<CollectiveResults, "rank"> {
  const ranks = Array.from({ length: worldSize }, (_, r) => r);
  const total = (offset: number) => Array.from({ length: 5 }, (_, i) => ranks.reduce((s, r) => s + (r + 1) * (i + offset) * 0.25, 0));
  const root = worldSize - 1;
  return {
    worldSize,
    sum: total(1),
    avg: total(2).map((v) => v / worldSize),
    bfloat16Sum: total(3),
    overlapped: [ranks.reduce((s, r) => s + r, 0), ranks.reduce((s, r) => s + 10 * r, 0)],
    broadcast: [root * 100 + 1, root * 100 + 2, root * 100 + 3],
    gathered: { shape: [worldSize, 2], values: ranks.flatMap((r) => [r, r === 0 ? 0 : -r]) },
  };
}

describe("the CPU process group across processes", () => {
  for (const worldSize of [2, 3]) {
    it(`${worldSize} processes: allReduce (sum, avg, bfloat16, two in flight), broadcast from the last rank, allGather, barrier give the exact results on every rank`, async () => {
      const job = await runJob(worldSize, "collectives.ts");
      outputs.push(job.out);
      expect(job.code, job.stderr).toBe(0);
      const results = readRankResults<CollectiveResults>(job.out, worldSize);
      results.forEach((result, rank) => {
        expect(result.rank).toBe(rank);
        const { rank: _, ...got } = result;
        expect(got).toEqual(expected(worldSize));
      });
    });
  }

  it("a rank calling another collective than its peers gets a CollectiveError naming both calls, and the job fails", async () => {
    const job = await runJob(2, "misuse.ts", ["mismatch"]);
    outputs.push(job.out);
    expect(job.code).not.toBe(0);
    expect(job.stderr).toMatch(/CollectiveError/);
    // Both ranks see the mismatch, each naming the other's call; whichever exits first stops the job, so the other's
    // error may not be printed.
    expect(job.stderr).toMatch(/rank 0 called allReduce \(float32 \[4\], sum\) instead|rank 1 called broadcast \(float32 \[4\], root 0\) instead/);
    expect(job.stderr).toMatch(/blocksparse-run: rank [01] \(pid \d+\) exited with code 1/);
  });
});
