/**
 * Gradients against finite differences on seeded random shapes nobody tuned for: broadcasting either way (size-1
 * dims, rank differences), zero-size dims, negative axes, keepDims, repeated indices and ignored rows.
 */
import {
  add,
  crossEntropy,
  div,
  gather,
  max,
  maximum,
  mean,
  min,
  minimum,
  mul,
  pow,
  scaledDotProductAttention,
  scatterAdd,
  sub,
  sum,
  tensor,
  tidy,
  where,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { backward } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { distinctTensor, expectGradients, poisonAllocations, randomTensor, uniformTensor } from "./helpers";

poisonAllocations();

const TRIALS = 12;

/** A shape of rank 0 to 3 with dims in [0, 3] (a zero only where `allowZero`). */
function randomShape(random: SeededRandom, allowZero: boolean): number[] {
  const rank = random.nextInt(4);
  return Array.from({ length: rank }, () => (allowZero && random.uniform(0, 1) < 0.15 ? 0 : 1 + random.nextInt(3)));
}

/** Two shapes that broadcast together: b drops some leading dims of a and has 1s where a has sizes, or the reverse. */
function broadcastPair(random: SeededRandom, allowZero: boolean): [number[], number[]] {
  const full = randomShape(random, allowZero);
  const lead = random.nextInt(full.length + 1);
  const other = full.slice(lead).map((d) => (random.uniform(0, 1) < 0.4 ? 1 : d));
  // Half the time the 1s go into the longer shape instead: both directions of broadcasting.
  if (random.uniform(0, 1) < 0.5) return [full, other];
  const stretched = full.map((d, i) => (i >= lead && other[i - lead] !== 1 && random.uniform(0, 1) < 0.5 ? 1 : d));
  return [other, stretched];
}

const describeShapes = (...shapes: number[][]) => shapes.map((s) => `[${s.join(", ")}]`).join(" and ");

describe("binary ops on random broadcast shapes, zero-size dims included", () => {
  it("add, sub, mul, div", () => {
    const random = new SeededRandom(101);
    for (let trial = 0; trial < TRIALS; trial++) {
      const [sa, sb] = broadcastPair(random, true);
      for (const fn of [add, sub, mul, div]) {
        expect(() => expectGradients((a, b) => fn(a, b), [randomTensor(sa, trial), randomTensor(sb, 50 + trial, { gap: 0.5 })]), `${fn.name} ${describeShapes(sa, sb)}`).not.toThrow();
      }
    }
  });

  it("maximum, minimum (distinct values) and pow (positive base)", () => {
    const random = new SeededRandom(102);
    for (let trial = 0; trial < TRIALS; trial++) {
      const [sa, sb] = broadcastPair(random, true);
      const label = describeShapes(sa, sb);
      for (const fn of [maximum, minimum]) {
        // Values 0.1 apart, offset by 0.05 between a and b: no ties within gradcheck's step.
        expect(() => expectGradients((a, b) => fn(a, b), [distinctTensor(sa, trial), add(distinctTensor(sb, 60 + trial), 0.05)]), `${fn.name} ${label}`).not.toThrow();
      }
      expect(() => expectGradients(pow, [uniformTensor(sa, trial, 0.5, 2), uniformTensor(sb, 70 + trial, -1.5, 1.5)]), `pow ${label}`).not.toThrow();
    }
  });

  it("where with the condition broadcast against both branches", () => {
    const random = new SeededRandom(103);
    for (let trial = 0; trial < TRIALS; trial++) {
      const [sa, sb] = broadcastPair(random, false);
      const sc = [...(sa.length >= sb.length ? sa : sb)].map((d) => (random.uniform(0, 1) < 0.5 ? 1 : d));
      const size = sc.reduce((p, d) => p * d, 1);
      const condition = tensor(Int32Array.from({ length: size }, () => random.nextInt(2)), sc, "int32");
      expect(() => expectGradients((a, b) => where(condition, a, b), [randomTensor(sa, trial), randomTensor(sb, 80 + trial)]), describeShapes(sc, sa, sb)).not.toThrow();
    }
  });
});

/** Random axes of a rank-`rank` shape, each written as itself or its negative. */
function randomAxes(random: SeededRandom, rank: number): number[] {
  const axes: number[] = [];
  for (let axis = 0; axis < rank; axis++) if (random.uniform(0, 1) < 0.5) axes.push(random.uniform(0, 1) < 0.5 ? axis - rank : axis);
  return axes.length > 0 ? axes : [-1];
}

describe("reductions over random negative and positive axes, with and without keepDims", () => {
  it("sum and mean (zero-size dims included), max and min (distinct values)", () => {
    const random = new SeededRandom(104);
    for (let trial = 0; trial < TRIALS; trial++) {
      const shape = [1 + random.nextInt(3), ...randomShape(random, false)];
      const axes = randomAxes(random, shape.length);
      const keepDims = random.uniform(0, 1) < 0.5;
      const label = `[${shape.join(", ")}] over [${axes.join(", ")}], keepDims ${keepDims}`;
      for (const fn of [sum, mean, max, min]) {
        expect(() => expectGradients((t) => fn(t, axes, keepDims), [distinctTensor(shape, trial)]), `${fn.name} ${label}`).not.toThrow();
      }
      const empty = [...shape];
      empty[random.nextInt(empty.length)] = 0;
      for (const fn of [sum, mean]) {
        expect(() => expectGradients((t) => fn(t, axes, keepDims), [randomTensor(empty, trial)]), `${fn.name} [${empty.join(", ")}]`).not.toThrow();
      }
    }
  });

  it("max and min share the gradient evenly between tied extrema of each reduced group (PyTorch's amax/amin)", () => {
    const random = new SeededRandom(105);
    for (let trial = 0; trial < TRIALS; trial++) {
      const shape = [2 + random.nextInt(2), 1 + random.nextInt(3), 2 + random.nextInt(2)];
      const axis = random.nextInt(3) - 3;
      // Values from {0, 1, 2}: most groups hold ties.
      const data = Float32Array.from({ length: shape[0] * shape[1] * shape[2] }, () => random.nextInt(3));
      const dy = Float32Array.from({ length: data.length }, () => random.uniform(0.5, 1.5));
      for (const [fn, better] of [
        [max, (a: number, b: number) => a > b],
        [min, (a: number, b: number) => a < b],
      ] as const) {
        const x = tensor(data, shape);
        x.requiresGrad = true;
        const kept = shape.map((d, i) => (i === axis + 3 ? 1 : d));
        const weights = tensor(dy.slice(0, kept.reduce((p, d) => p * d, 1)), kept);
        tidy(() => backward(sum(mul(fn(x, axis, true), weights))));
        // Expected from the data: each group's extremum count, and its weight split between them.
        const strides = [shape[1] * shape[2], shape[2], 1];
        const keptStrides = [kept[1] * kept[2], kept[2], 1];
        const expected = new Float64Array(data.length);
        const groupOf = (i: number) => {
          const index = strides.map((s, k) => Math.floor(i / s) % shape[k]);
          index[axis + 3] = 0;
          return index.reduce((p, v, k) => p + v * keptStrides[k], 0);
        };
        const best = new Map<number, number>();
        for (let i = 0; i < data.length; i++) {
          const g = groupOf(i);
          if (!best.has(g) || better(data[i], best.get(g)!)) best.set(g, data[i]);
        }
        const ties = new Map<number, number>();
        for (let i = 0; i < data.length; i++) if (data[i] === best.get(groupOf(i))) ties.set(groupOf(i), (ties.get(groupOf(i)) ?? 0) + 1);
        for (let i = 0; i < data.length; i++) if (data[i] === best.get(groupOf(i))) expected[i] = dy[groupOf(i)] / ties.get(groupOf(i))!;
        const got = x.grad!.dataSync();
        for (let i = 0; i < data.length; i++) expect(got[i], `${fn.name} [${shape.join(", ")}] axis ${axis}, element ${i}`).toBeCloseTo(expected[i], 6);
      }
    }
  });
});

describe("indexing with random repeated indices and axes written either way", () => {
  it("gather and scatterAdd", () => {
    const random = new SeededRandom(106);
    for (let trial = 0; trial < TRIALS; trial++) {
      const shape = [1 + random.nextInt(3), 1 + random.nextInt(3), 1 + random.nextInt(3)];
      const axis = random.nextInt(3);
      const written = random.uniform(0, 1) < 0.5 ? axis - 3 : axis;
      const count = random.nextInt(5);
      const indices = tensor(Int32Array.from({ length: count }, () => random.nextInt(shape[axis])), [count], "int32");
      const label = `[${shape.join(", ")}] axis ${written}, indices [${Array.from(indices.dataSync()).join(", ")}]`;
      expect(() => expectGradients((t) => gather(t, indices, written), [randomTensor(shape, trial)]), `gather ${label}`).not.toThrow();
      const updates = shape.map((d, i) => (i === axis ? count : d));
      expect(() => expectGradients((u) => scatterAdd(indices, u, shape, written), [randomTensor(updates, trial)]), `scatterAdd ${label}`).not.toThrow();
    }
  });
});

describe("crossEntropy and attention on random shapes", () => {
  it("crossEntropy with random rows left out by ignoreIndex, each reduction", () => {
    const random = new SeededRandom(107);
    for (let trial = 0; trial < TRIALS; trial++) {
      const rows = 1 + random.nextInt(5);
      const classes = 1 + random.nextInt(4);
      const targets = Int32Array.from({ length: rows }, () => (random.uniform(0, 1) < 0.3 ? -100 : random.nextInt(classes)));
      // The mean over no kept rows is NaN (0 / 0): keep one.
      if (targets.every((t) => t === -100)) targets[0] = 0;
      const t = tensor(targets, [rows], "int32");
      for (const reduction of ["mean", "sum", "none"] as const) {
        expect(
          () => expectGradients((l) => crossEntropy(l, t, { reduction, ignoreIndex: -100 }), [randomTensor([rows, classes], trial)]),
          `${reduction} [${rows}, ${classes}] targets [${targets.join(", ")}]`,
        ).not.toThrow();
      }
    }
  });

  it("scaledDotProductAttention with M queries and N keys, causal (M <= N) or not, batch dims", () => {
    const random = new SeededRandom(108);
    for (let trial = 0; trial < TRIALS / 2; trial++) {
      const causal = random.uniform(0, 1) < 0.5;
      const keys = 1 + random.nextInt(4);
      const queries = causal ? 1 + random.nextInt(keys) : 1 + random.nextInt(4);
      const batch = random.uniform(0, 1) < 0.5 ? [] : [1 + random.nextInt(2)];
      const headDim = 1 + random.nextInt(3);
      const label = `M ${queries}, N ${keys}, batch [${batch.join(", ")}], head ${headDim}, causal ${causal}`;
      expect(
        () =>
          expectGradients((q, k, v) => scaledDotProductAttention(q, k, v, { causal }), [
            randomTensor([...batch, queries, headDim], trial),
            randomTensor([...batch, keys, headDim], 20 + trial),
            randomTensor([...batch, keys, headDim], 40 + trial),
          ]),
        label,
      ).not.toThrow();
    }
  });
});
