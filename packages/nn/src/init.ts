import { formatArg, rand, randint, randn, seedArg, type Tensor, ValueError, zeros } from "@blocksparse/core";
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

/** How many skipInit calls are running (nested). */
let skipping = 0;

/**
 * Builds modules with their random initialization skipped, as torch.nn.utils.skip_init: inside `build`, the weights
 * and biases the layers would draw at random (Linear, BlockSparseLinear, Embedding) start at zero, for a caller that
 * overwrites them anyway: a checkpoint about to be loaded, or an initialization of its own. Nothing else changes: the
 * layers' seeds are drawn as without it (the global generator ends where it would), a BlockSparseLinear still draws
 * its pattern, LayerNorm keeps its ones and zeros. Building GPT-2 small's weights at random took seconds of the host's
 * time, on every backend, before they were replaced. `build` runs synchronously: one that returns a Promise (an async
 * function) is refused, as the layers it builds after its first await would draw their weights.
 */
export function skipInit<T>(build: () => T): T {
  if (typeof build !== "function") throw new ValueError(`skipInit: build must be a function that builds the modules, got ${formatArg(build)}`);
  let built: T;
  skipping++;
  try {
    built = build();
  } finally {
    skipping--;
  }
  if (built instanceof Promise || (typeof built === "object" && built !== null && typeof (built as { then?: unknown }).then === "function")) {
    // Its rejection, if any, is this error's to report: not left unhandled.
    Promise.resolve(built).catch(() => {});
    throw new ValueError("skipInit: build returned a Promise: only what it builds before its first await skips its initialization; build the modules synchronously and await the rest outside");
  }
  return built;
}

/** Whether a skipInit is running: a module's own initialization of its weights should draw nothing then. */
export function initSkipped(): boolean {
  return skipping > 0;
}

/** U(-bound, bound), float32, seeded; zeros inside skipInit. */
export function uniform(shape: readonly number[], bound: number, seed: number): Tensor {
  return skipping > 0 ? zeros(shape) : rand(shape, { low: -bound, high: bound, seed });
}

/** N(0, 1), float32, seeded; zeros inside skipInit. */
export function normal(shape: readonly number[], seed: number): Tensor {
  return skipping > 0 ? zeros(shape) : randn(shape, { seed });
}
