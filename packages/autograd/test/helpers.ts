import { type Tensor, getBackendInstance, tensor } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { type GradcheckOptions, gradcheck } from "@blocksparse/autograd";
import { beforeAll, expect } from "vitest";

/** Every js allocation starts as NaN, so an element a kernel or gradient forgets to write shows up. */
export function poisonAllocations(): void {
  beforeAll(() => {
    getBackendInstance("js").poisonAllocations = true;
  });
}

/** Normal values; with `awayFrom`, pushed at least `gap` away from that point (to keep clear of kinks). */
export function randomTensor(shape: number[], seed: number, options: { gap?: number; awayFrom?: number; scale?: number } = {}): Tensor {
  const { gap = 0, awayFrom = 0, scale = 1 } = options;
  const random = new SeededRandom(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const v = random.normal() * scale;
    const offset = v - awayFrom;
    values[i] = Math.abs(offset) < gap ? awayFrom + Math.sign(offset || 1) * (gap + Math.abs(offset)) : v;
  }
  return tensor(values, shape);
}

/** Uniform values in [low, high). */
export function uniformTensor(shape: number[], seed: number, low: number, high: number): Tensor {
  const random = new SeededRandom(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  return tensor(Float32Array.from({ length: size }, () => random.uniform(low, high)), shape);
}

/** Distinct values 0.1 apart in random order: no ties within 2 * gradcheck's eps. */
export function distinctTensor(shape: number[], seed: number): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const order = new SeededRandom(seed).sample(size, size);
  const random = new SeededRandom(seed + 1);
  for (let i = size - 1; i > 0; i--) {
    const j = random.nextInt(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return tensor(Float32Array.from(order, (k) => (k - size / 2) * 0.1), shape);
}

/** Asserts that gradcheck passes, printing the worst element of each failing input otherwise. */
export function expectGradients(fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], options?: GradcheckOptions): void {
  const result = gradcheck(fn, inputs, options);
  const failures = result.details
    .filter((d) => !d.ok)
    .map((d) => `input ${d.input}: element ${d.worstIndex} analytic ${d.analytic[d.worstIndex]} numeric ${d.numeric[d.worstIndex]}`);
  expect(failures).toEqual([]);
  expect(result.ok).toBe(true);
}

/** A tensor that requires grad (a leaf of the tape). */
export function leaf(values: number[], shape = [values.length]): Tensor {
  const t = tensor(values, shape);
  t.requiresGrad = true;
  return t;
}

/** A tensor's values (a gradient's, say) as numbers. */
export const values = (t: Tensor | null): number[] => Array.from(t!.dataSync());
