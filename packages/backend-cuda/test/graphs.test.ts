import "../src/index";
import { BsrPattern, bsrLinear, captureGraph, cast, gelu, randn, sum, tidy } from "@blocksparse/core";
import { declareGraphTests } from "@blocksparse/core/testing";
import { describe, expect, test } from "vitest";
import { cudaMissing, reportCudaAvailability, useCuda } from "./cuda";

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
});
