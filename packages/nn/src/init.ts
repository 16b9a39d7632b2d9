import { rand, randint, seedArg, type Tensor } from "@blocksparse/core";
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
  const random = new SeededRandom(seedArg(where, "seed", seed));
  return Array.from({ length: count }, () => random.nextUint32());
}

/** U(-bound, bound), float32, seeded. */
export function uniform(shape: readonly number[], bound: number, seed: number): Tensor {
  return rand(shape, { low: -bound, high: bound, seed });
}
