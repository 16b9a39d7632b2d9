import { captureGraph, type Tensor, tidy } from "@blocksparse/core";

/**
 * A captured graph's replay where the backend records graphs (cuda); the eager call elsewhere (js, cpu). `dispose`
 * frees the graph and what it returned.
 */
export function replayable(fn: () => Tensor, capture: boolean): { run: () => void; dispose: () => void } {
  if (!capture) return { run: () => tidy(fn).dispose(), dispose: () => {} };
  const graph = captureGraph(fn);
  return {
    run: () => void graph.replay(),
    dispose: () => {
      graph.dispose();
      graph.result.dispose();
    },
  };
}

/** Microseconds per call of `run`: `warmup` calls, then `iterations` timed between two synchronizations. */
export function timeUs(run: () => void, synchronize: () => void, iterations: number, warmup = 5): number {
  for (let i = 0; i < warmup; i++) run();
  synchronize();
  const start = performance.now();
  for (let i = 0; i < iterations; i++) run();
  synchronize();
  return ((performance.now() - start) * 1000) / iterations;
}
