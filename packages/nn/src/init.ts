import { rand, randint, type Tensor, ValueError } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";

/**
 * `count` independent seeds: derived from `seed` when given, else drawn from core's global
 * generator (so `manualSeed` makes unseeded layers reproducible too). `where` names the
 * caller in the error for a seed that is not a safe integer.
 */
export function childSeeds(where: string, seed: number | undefined, count: number): number[] {
  if (seed === undefined) {
    const drawn = randint(0, 2 ** 31 - 1, [count]);
    const seeds = drawn.toArray();
    drawn.dispose();
    return seeds;
  }
  const random = new SeededRandom(checkSeed(where, "seed", seed));
  return Array.from({ length: count }, () => random.nextUint32());
}

/** U(-bound, bound), float32, seeded. */
export function uniform(shape: readonly number[], bound: number, seed: number): Tensor {
  return rand(shape, { low: -bound, high: bound, seed });
}

/** `value` as a seed, named in the error as `${where}: ${name}`: SeededRandom's own RangeError names neither. */
export function checkSeed(where: string, name: string, value: unknown): number {
  if (!Number.isSafeInteger(value)) {
    throw new ValueError(`${where}: ${name} must be a safe integer (|seed| <= 2^53 - 1), got ${typeof value === "string" ? JSON.stringify(value) : String(value)}`);
  }
  return value as number;
}
