import { describe, expect, it } from "vitest";
import { SeededRandom } from "../src/index.js";

describe("SeededRandom", () => {
  it("is xoshiro128** (the reference sequence from state 1, 2, 3, 4)", () => {
    const random = SeededRandom.fromState([1, 2, 3, 4]);
    const outputs = Array.from({ length: 6 }, () => random.nextUint32());
    expect(outputs).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  });

  it("seeds through SplitMix32: pinned outputs, so every platform agrees", () => {
    const random = new SeededRandom(42);
    expect(Array.from({ length: 4 }, () => random.nextUint32())).toEqual([
      2837322924, 544945897, 479756282, 3500138142,
    ]);
    const large = new SeededRandom(2 ** 40 + 7);
    expect([large.nextUint32(), large.nextUint32()]).toEqual([3880397790, 2122851780]);
  });

  it("uses every bit of a seed: seeds that differ only above bit 31 give different sequences", () => {
    const first = (seed: number) => {
      const random = new SeededRandom(seed);
      return [random.nextUint32(), random.nextUint32(), random.nextUint32()];
    };
    // These shared one generator when the high word was folded into 32 bits with the low one.
    expect(first(-1)).not.toEqual(first(2654435768));
    expect(first(2 ** 32)).not.toEqual(first(0));
    expect(first(-(2 ** 32))).not.toEqual(first(0));
    expect(first(Number.MAX_SAFE_INTEGER)).not.toEqual(first(Number.MIN_SAFE_INTEGER));
    // A seed below 2^32 keeps the generator it always had (pinned above), so seeded patterns do not move.
    const seen = new Set<string>();
    for (let high = -3; high <= 3; high++) for (let low = 0; low < 4; low++) seen.add(first(high * 2 ** 32 + low).join());
    expect(seen.size).toBe(28);
  });

  it("repeats for one seed and differs between seeds", () => {
    const draw = (seed: number) => {
      const random = new SeededRandom(seed);
      return [random.next(), random.normal(), random.uniform(-3, 5), random.nextInt(1000), random.normal()];
    };
    expect(draw(5)).toEqual(draw(5));
    expect(draw(5)).not.toEqual(draw(6));
  });

  it("gives uniforms in [0, 1) and integers in [0, bound)", () => {
    const random = new SeededRandom(1);
    let sum = 0;
    const counts = new Array(7).fill(0);
    for (let i = 0; i < 20000; i++) {
      const u = random.next();
      expect(u >= 0 && u < 1).toBe(true);
      sum += u;
      counts[random.nextInt(7)]++;
    }
    expect(Math.abs(sum / 20000 - 0.5)).toBeLessThan(0.01);
    for (const count of counts) expect(Math.abs(count / 20000 - 1 / 7)).toBeLessThan(0.01);
  });

  it("gives standard normals (moments of 40000 draws)", () => {
    const random = new SeededRandom(3);
    const n = 40000;
    let sum = 0;
    let squares = 0;
    let within1 = 0;
    for (let i = 0; i < n; i++) {
      const x = random.normal();
      sum += x;
      squares += x * x;
      if (Math.abs(x) < 1) within1++;
    }
    expect(Math.abs(sum / n)).toBeLessThan(0.02);
    expect(Math.abs(squares / n - 1)).toBeLessThan(0.03);
    expect(Math.abs(within1 / n - 0.6827)).toBeLessThan(0.01);
    const scaled = new SeededRandom(3);
    const first = new SeededRandom(3).normal();
    expect(scaled.normal(10, 2)).toBeCloseTo(10 + 2 * first, 12);
  });

  it("samples distinct sorted positions, every one equally likely", () => {
    const random = new SeededRandom(9);
    const hits = new Array(10).fill(0);
    for (let t = 0; t < 5000; t++) {
      const chosen = random.sample(10, 3);
      expect(chosen.length).toBe(3);
      expect(chosen[0] < chosen[1] && chosen[1] < chosen[2]).toBe(true);
      for (const i of chosen) hits[i]++;
    }
    for (const count of hits) expect(Math.abs(count / 5000 - 0.3)).toBeLessThan(0.03);
    expect(Array.from(random.sample(4, 4))).toEqual([0, 1, 2, 3]);
    expect(random.sample(4, 0).length).toBe(0);
  });

  it("sample keeps its pinned draws; sampleWide gives the same ones and reaches totals past 2^32", () => {
    // Pinned before the dense-table path existed: both paths must keep every pattern a seed gave.
    expect(Array.from(new SeededRandom(5).sample(1000, 8))).toEqual([58, 106, 199, 218, 418, 804, 808, 985]);
    expect(Array.from(new SeededRandom(5).sample(2 ** 20, 8))).toEqual([106720, 300979, 422630, 443434, 484249, 577285, 687133, 879235]);
    for (const [total, count] of [[1000, 8], [70_000, 5000], [2 ** 20, 8], [5, 5]]) {
      expect(Array.from(new SeededRandom(3).sampleWide(total, count))).toEqual(Array.from(new SeededRandom(3).sample(total, count)));
    }
    const wide = new SeededRandom(7).sampleWide(5e9, 1000);
    expect(wide.every((value, i) => Number.isInteger(value) && value >= 0 && value < 5e9 && (i === 0 || value > wide[i - 1]))).toBe(true);
    expect(wide.filter((value) => value >= 2 ** 32).length).toBeGreaterThan(100);
    const bounds = Array.from({ length: 2000 }, () => new SeededRandom(0).nextInt(2 ** 53));
    expect(bounds.every((value) => Number.isInteger(value) && value >= 0 && value < 2 ** 53)).toBe(true);
    expect(() => new SeededRandom(1).sample(3e9, 2)).toThrow(/total.*sampleWide/);
  });

  it("rejects bad seeds and bounds", () => {
    expect(() => new SeededRandom(1.5)).toThrow(/seed/);
    expect(() => new SeededRandom(2 ** 60)).toThrow(/seed/);
    expect(() => new SeededRandom(1).nextInt(0)).toThrow(/bound/);
    expect(() => new SeededRandom(1).sample(3, 4)).toThrow(/count/);
    expect(() => SeededRandom.fromState([0, 0, 0, 0])).toThrow(/state/);
  });

  it("fillNormal gives normal()'s values one by one, and leaves the state (its spare deviate too) where they leave it", () => {
    for (const seed of [0, 1, 7, 2 ** 40 + 3, -5]) {
      for (const [mean, std] of [
        [0, 1],
        [1.5, 0.02],
        [-3, 7.25],
      ]) {
        const filled = new SeededRandom(seed);
        const drawn = new SeededRandom(seed);
        // Odd and even lengths in turn: a spare deviate carried into the next fill, and out of the last one.
        for (const n of [0, 1, 2, 3, 1000, 1, 5, 8]) {
          const got = filled.fillNormal(new Float64Array(n), mean, std);
          const want = Float64Array.from({ length: n }, () => drawn.normal(mean, std));
          expect(Array.from(got)).toEqual(Array.from(want));
        }
        expect(filled.normal()).toBe(drawn.normal());
        expect(filled.nextUint32()).toBe(drawn.nextUint32());
      }
    }
  });
});
