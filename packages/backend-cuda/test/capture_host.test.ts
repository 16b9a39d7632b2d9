import { BsrPattern, GraphError, captureGraph } from "@blocksparse/core";
import { describe, expect, test, vi } from "vitest";
import { CudaBackend } from "../src/backend";
import { standInAddon, standInCalls } from "./stand_in_addon";

// No GPU needed: the backend runs on a stand-in addon that launches nothing (test/stand_in_addon.ts).
vi.mock("../src/loader", async (importOriginal) => {
  const { standInStart } = await import("./stand_in_addon");
  return { ...(await importOriginal<typeof import("../src/loader")>()), startCuda: standInStart };
});

describe("the host side on a stand-in addon: calls that wait for the device during a graph capture, and the warm-up", () => {
  const backend = new CudaBackend();

  test("synchronize and warmUp throw a GraphError naming themselves, before anything reaches the stream", () => {
    backend.graphs.beginCapture();
    try {
      standInCalls.length = 0;
      expect(() => backend.synchronize()).toThrow(GraphError);
      expect(() => backend.synchronize()).toThrow("cuda: synchronize waits for the device, which a graph capture cannot record");
      expect(() => backend.warmUp()).toThrow("cuda: warmUp waits for the device, which a graph capture cannot record");
      // Nothing was recorded into the capture or synchronised (which would end it).
      expect(standInCalls).toEqual([]);
    } finally {
      backend.graphs.abortCapture();
    }
    backend.synchronize();
    expect(standInCalls).toEqual(["abortCapture", "synchronize"]);
  });

  test("a pattern first used inside a capture is a GraphError before its upload; one uploaded before is used there", () => {
    const fresh = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 1 });
    const known = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 2 });
    const handle = backend.pattern(known);
    backend.graphs.beginCapture();
    try {
      standInCalls.length = 0;
      expect(() => backend.pattern(fresh)).toThrow(
        "cuda: a block-sparse pattern is first used inside a graph capture, and its upload waits for the device, which a capture cannot record; run the step once before captureGraph",
      );
      expect(backend.pattern(known)).toBe(handle);
      expect(standInCalls).toEqual([]);
    } finally {
      backend.graphs.abortCapture();
    }
    backend.pattern(fresh);
    expect(standInCalls).toEqual(["abortCapture", "createPattern"]);
  });

  /** Patterns freed on the device since standInCalls was last cleared. */
  const frees = () => standInCalls.filter((name) => name === "freePattern").length;
  /** Two patterns, uploaded. */
  const uploaded = (seed: number): [BsrPattern, BsrPattern] => {
    const patterns = [seed, seed + 1].map((s) => BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: s }));
    for (const pattern of patterns) backend.pattern(pattern);
    return patterns as [BsrPattern, BsrPattern];
  };

  test("a pattern released while a graph or the capture in progress reads it is freed when the last such graph is destroyed", () => {
    const [shared, other] = uploaded(3);
    // Two graphs read `shared`; the first also reads `other`, and `shared` is released during the second's capture.
    backend.graphs.beginCapture();
    backend.pattern(shared);
    backend.pattern(other);
    const first = backend.graphs.endCapture();
    backend.graphs.beginCapture();
    backend.pattern(shared);
    standInCalls.length = 0;
    backend.releasePattern(shared);
    const second = backend.graphs.endCapture();
    backend.releasePattern(other);
    expect(frees()).toBe(0);
    expect(backend.memory().patterns).toBeGreaterThanOrEqual(2);
    backend.graphs.launch(first);
    backend.graphs.destroy(first);
    // `other` was held by the first graph alone; `shared` by the second as well.
    expect(frees()).toBe(1);
    backend.graphs.launch(second);
    backend.graphs.destroy(second);
    expect(frees()).toBe(2);
    // A released pattern used again is uploaded again.
    standInCalls.length = 0;
    backend.pattern(shared);
    expect(standInCalls).toEqual(["createPattern"]);
  });

  test("a pattern released during a capture that is aborted, or not used by any graph, is freed at once or at the abort", () => {
    const [unused, used] = uploaded(5);
    backend.graphs.beginCapture();
    backend.pattern(used);
    standInCalls.length = 0;
    backend.releasePattern(unused);
    expect(frees()).toBe(1);
    backend.releasePattern(used);
    expect(frees()).toBe(1);
    backend.graphs.abortCapture();
    expect(frees()).toBe(2);
  });

  test("inside captureGraph, the step fails with that GraphError and the next capture records as before", () => {
    expect(() => captureGraph(() => backend.synchronize(), { backend })).toThrow(
      "cuda: synchronize waits for the device, which a graph capture cannot record; call it before captureGraph or after replay()",
    );
    const graph = captureGraph(() => null, { backend });
    graph.dispose();
    backend.synchronize();
  });

  /** The addon's autotuning switch, on, as a spy that keeps its state: `on()` reads it. */
  const autotuneSwitch = () => {
    let on = true;
    const spy = vi.spyOn(standInAddon, "setAutotune").mockImplementation((value: boolean) => {
      const was = on;
      on = value;
      return was;
    });
    return { spy, on: () => on };
  };

  test("warmUp runs with autotuning off and puts the setting back (its small shapes never reach the records or a cache file)", () => {
    const setAutotune = autotuneSwitch();
    try {
      backend.warmUp();
      expect(setAutotune.spy.mock.calls.map(([value]) => value)).toEqual([false, true]);
      expect(setAutotune.on()).toBe(true);
    } finally {
      setAutotune.spy.mockRestore();
    }
  });

  test("warmUp releases everything and puts autotuning back when a release fails, then throws that failure", () => {
    const setAutotune = autotuneSwitch();
    const free = vi.spyOn(standInAddon, "free").mockImplementationOnce(() => {
      throw Object.assign(new Error("free failed: an illegal memory access was encountered"), { code: "ERR_CUDA" });
    });
    const before = backend.memory();
    try {
      expect(() => backend.warmUp()).toThrow("an illegal memory access was encountered");
      expect(setAutotune.on()).toBe(true);
      const after = backend.memory();
      expect(after.buffers).toBe(before.buffers);
      expect(after.patterns).toBe(before.patterns);
      expect(free.mock.calls.length).toBeGreaterThan(1);
    } finally {
      free.mockRestore();
      setAutotune.spy.mockRestore();
    }
  });

  test("a capture ended by endCapture, even one whose graph fails to instantiate, allows synchronize again", () => {
    backend.graphs.beginCapture();
    backend.graphs.destroy(backend.graphs.endCapture());
    backend.synchronize();
    const endCapture = vi.spyOn(standInAddon, "endCapture").mockImplementationOnce(() => {
      throw Object.assign(new Error("endCapture failed: operation would make the legacy stream depend on a capturing blocking stream"), { code: "ERR_CUDA" });
    });
    backend.graphs.beginCapture();
    expect(() => backend.graphs.endCapture()).toThrow("endCapture failed");
    endCapture.mockRestore();
    backend.synchronize();
  });
});
