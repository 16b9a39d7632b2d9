import { type Tensor, tensor } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";

/** A seeded synthetic classification problem: x [n, features] ~ N(0, 1), labels from a fixed random linear map. */
export function syntheticClassification(n: number, features: number, classes: number, seed: number): { x: Tensor; y: Tensor } {
  const random = new SeededRandom(seed);
  const x = random.fillNormal(new Float32Array(n * features), 0, 1);
  const map = random.fillNormal(new Float32Array(features * classes), 0, 1);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (let c = 0; c < classes; c++) {
      let score = 0;
      for (let f = 0; f < features; f++) score += x[i * features + f] * map[f * classes + c];
      if (score > bestScore) {
        bestScore = score;
        best = c;
      }
    }
    labels[i] = best;
  }
  return { x: tensor(x, [n, features]), y: tensor(labels, [n], "int32") };
}

/** Host float64 copy of a tensor's values. */
export function host(t: Tensor): Float64Array {
  return Float64Array.from(t.dataSync());
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}
