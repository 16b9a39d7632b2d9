import { CudaOutOfMemoryError } from "../src/index";
import { BsrPattern, GraphError, add, bsrLinear, captureGraph, cast, gelu, randn, slice, sum, tidy, zeros } from "@blocksparse/core";
import { declareGraphTests } from "@blocksparse/core/testing";
import { describe, expect, test } from "vitest";
import { cudaMissing, expectClose, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("graphs.test.ts");

// core's shared captureGraph suite on CUDA graphs (bf16 runs the tensor-core block-sparse kernels).
describe.skipIf(cudaMissing)("cuda", () => {
  declareGraphTests("cuda", ["float32", "bfloat16", "float16"]);

  test("a graph's temporaries stay in its pool until it is disposed, then return to the cache", () => {
    const backend = useCuda();
    const pattern = BsrPattern.random([256, 512], { blockShape: [64, 64], density: 0.25, seed: 3 });
    const x = tidy(() => cast(randn([512, 512], { seed: 1 }), "bfloat16"));
    const w = tidy(() => cast(randn([pattern.nnzBlocks, 64, 64], { seed: 2 }), "bfloat16"));
    const step = () => sum(gelu(bsrLinear(x, w, pattern)));
    tidy(() => void step().dataSync());
    const before = backend.memory();
    const graph = captureGraph(step);
    const during = backend.memory();
    expect(during.graphs).toBe(before.graphs + 1);
    // The product and the activation were freed inside the step: kept for the graph, not handed to others.
    expect(during.graphPoolBytes).toBeGreaterThanOrEqual(2 * 512 * 256 * 2);
    const eager = tidy(() => step().dataSync()[0]);
    expect(graph.replay().dataSync()[0]).toBe(eager);
    graph.replay().dispose();
    graph.dispose();
    const after = backend.memory();
    expect(after.graphs).toBe(before.graphs);
    expect(after.graphPoolBytes).toBe(0);
    expect(after.buffers).toBe(before.buffers);
    x.dispose();
    w.dispose();
  });

  test("a capture that reads on the host fails with a GraphError and leaves no graph or pool behind", () => {
    const backend = useCuda();
    const x = tidy(() => randn([64], { seed: 4 }));
    const before = backend.memory();
    expect(() => captureGraph(() => sum(x).dataSync())).toThrow(/dataSync moves data between host and device/);
    const after = backend.memory();
    expect(after.graphs).toBe(before.graphs);
    expect(after.graphPoolBytes).toBe(0);
    expect(after.buffers).toBe(before.buffers);
    // The stream is usable again, eagerly and for a new capture.
    const graph = captureGraph(() => sum(x));
    expect(graph.replay().dataSync()[0]).toBeCloseTo(tidy(() => sum(x).dataSync()[0]), 5);
    graph.replay().dispose();
    graph.dispose();
    x.dispose();
  });

  test("synchronize inside a capture is a GraphError naming it, and the stream records and runs as before", () => {
    const backend = useCuda();
    const x = tidy(() => randn([64], { seed: 6 }));
    expect(() => captureGraph(() => backend.synchronize())).toThrow("cuda: synchronize waits for the device, which a graph capture cannot record");
    const graph = captureGraph(() => sum(x));
    expect(graph.replay().dataSync()[0]).toBeCloseTo(tidy(() => sum(x).dataSync()[0]), 5);
    graph.replay().dispose();
    graph.dispose();
    x.dispose();
  });

  test("inside a capture the cache is kept: releaseCache records nothing, and a miss past the memory limit is out of memory", () => {
    const backend = useCuda();
    const x = tidy(() => randn([1024], { seed: 5 }));
    // A wholly free 64 MiB segment in the cache: releasing it would synchronise the stream, which a capture cannot.
    tidy(() => void zeros([16 << 20]));
    const graph = captureGraph(() => {
      const y = add(x, x);
      backend.releaseCache();
      return y;
    });
    expect(graph.replay().dataSync()).toEqual(tidy(() => add(x, x).dataSync()));
    graph.dispose();
    // Only that segment cached (no block that holds 128 MiB), and no room for a new segment under the limit.
    backend.releaseCache();
    tidy(() => void zeros([16 << 20]));
    const previous = backend.setMemoryLimit(backend.memory().reservedBytes);
    try {
      let error: unknown;
      try {
        captureGraph(() => zeros([32 << 20]));
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(GraphError);
      expect((error as Error).cause).toBeInstanceOf(CudaOutOfMemoryError);
      expect(((error as Error).cause as Error).message).toMatch(/during a graph capture, which keeps the cache/);
    } finally {
      backend.setMemoryLimit(previous);
    }
    x.dispose();
  });

  test("with autotuning on, a shape first met inside a capture runs its fixed route there and tunes at its first eager call", () => {
    const backend = useCuda();
    const pattern = BsrPattern.random([512, 256], { blockShape: [64, 64], density: 0.5, seed: 7 });
    const x = tidy(() => cast(randn([1000, 256], { seed: 8 }), "bfloat16"));
    const w = tidy(() => cast(randn([pattern.nnzBlocks, 64, 64], { seed: 9 }), "bfloat16"));
    // The pattern uploaded first (an upload inside a capture is refused), by a call of another token count.
    const previous = backend.setAutotune(false);
    tidy(() => bsrLinear(slice(x, [0, 0], [10, 256]), w, pattern).dataSync());
    backend.setAutotune(true);
    backend.clearAutotune();
    try {
      // Timing the routes there would record each of them into the graph and wait on events the capture holds.
      const graph = captureGraph(() => bsrLinear(x, w, pattern));
      expect(backend.autotuneRecords()).toEqual([]);
      const replayed = graph.replay().dataSync();
      graph.dispose();
      const eager = tidy(() => bsrLinear(x, w, pattern).dataSync());
      expect(backend.autotuneRecords().map((r) => [r.product, r.m])).toEqual([["bsrLinear", 1000]]);
      expectClose(replayed, eager, "bfloat16", "captured bsrLinear against the tuned eager one");
    } finally {
      backend.setAutotune(previous);
      backend.clearAutotune();
      x.dispose();
      w.dispose();
    }
  });
});
