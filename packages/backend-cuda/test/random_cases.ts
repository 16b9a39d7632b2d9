/**
 * Shared by the tests that draw their cases at random (random_layers.test.ts, large_layers.test.ts): the seed (fresh
 * each run, printed; BLOCKSPARSE_TEST_SEED repeats one), the activations and their derivatives in float64, a group-wise
 * comparison, and the describe block that draws the cases and names a test after each.
 */
import { reference } from "@blocksparse/core/testing";
import { beforeAll, describe, expect, test } from "vitest";
import { cudaMissing, random, useCuda } from "./cuda";

export const SEED =
  process.env.BLOCKSPARSE_TEST_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.BLOCKSPARSE_TEST_SEED);

export const ACTIVATIONS = ["relu", "gelu", "gelu_tanh"] as const;
export type ActivationName = (typeof ACTIVATIONS)[number];
export const ACTIVATION: Record<ActivationName, (v: number) => number> = {
  relu: reference.relu,
  gelu: (v) => reference.gelu(v, "none"),
  gelu_tanh: (v) => reference.gelu(v, "tanh"),
};
export const DERIVATIVE: Record<ActivationName, (v: number) => number> = {
  relu: (v) => (v > 0 ? 1 : 0),
  gelu: (v) => reference.geluGrad(v, "none"),
  gelu_tanh: (v) => reference.geluGrad(v, "tanh"),
};

export function pick<T>(next: () => number, items: readonly T[]): T {
  return items[Math.floor(next() * items.length)];
}

/**
 * Asserts out matches ref group by group (group(i) in [0, groups)): every element finite where ref is, and each group's
 * error norm within `tolerance` of the group's norm. A group whose reference is small next to the output's root mean
 * square (a sum that cancels, a group of one element) is measured against a tenth of that instead, and against `floor`
 * where given (per group: the sum over its elements of their terms' squares, what rounding each term of the sums
 * leaves), so rounding that is right cannot fail it while a wrong or missing block, of the order of the output, still
 * does.
 */
export function expectCloseByGroup(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
  tolerance: number,
  what: string,
  groups: number,
  group: (i: number) => number,
  floor?: ArrayLike<number>,
): void {
  expect(out.length, `${what}: length`).toBe(ref.length);
  const diff = new Float64Array(groups);
  const norm = new Float64Array(groups);
  const size = new Float64Array(groups);
  let total = 0;
  for (let i = 0; i < ref.length; i++) {
    if (Number.isFinite(ref[i]) && !Number.isFinite(out[i])) expect.fail(`${what}: element ${i} is ${out[i]}, expected ${ref[i]}`);
    const g = group(i);
    diff[g] += (out[i] - ref[i]) ** 2;
    norm[g] += ref[i] ** 2;
    size[g] += 1;
    total += ref[i] ** 2;
  }
  const meanSquare = ref.length === 0 ? 0 : total / ref.length;
  for (let g = 0; g < groups; g++) {
    const scale = Math.max(norm[g], 0.01 * size[g] * meanSquare, floor?.[g] ?? 0);
    const relative = scale === 0 ? Math.sqrt(diff[g]) : Math.sqrt(diff[g] / scale);
    const bound = tolerance + (scale === 0 ? 1e-6 : 0);
    if (!(relative <= bound)) expect.fail(`${what}: group ${g} of ${groups} has relative error ${relative} (bound ${bound})`);
  }
}

/**
 * A describe block (skipped without CUDA) of `count` cases drawn from SEED by `draw`, one test each, named by `name`;
 * `body` gets the case, its index and a generator seeded for that case alone, so that one case repeats on its own.
 */
export function describeRandomCases<Case>(
  file: string,
  title: string,
  count: number,
  draw: (next: () => number) => Case,
  name: (testCase: Case, index: number) => string,
  body: (testCase: Case, index: number, next: () => number) => void,
  timeout: number,
): void {
  describe.skipIf(cudaMissing)(title, () => {
    beforeAll(() => {
      useCuda();
      console.log(`${file}: seed ${SEED} (BLOCKSPARSE_TEST_SEED=${SEED} repeats these cases)`);
    });
    const next = random(SEED);
    const cases = Array.from({ length: count }, () => draw(next));
    cases.forEach((testCase, index) => {
      test(name(testCase, index), () => body(testCase, index, random(SEED + 7919 * (index + 1))), timeout);
    });
  });
}
