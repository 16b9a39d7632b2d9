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

  test("inside captureGraph, the step fails with that GraphError and the next capture records as before", () => {
    expect(() => captureGraph(() => backend.synchronize(), { backend })).toThrow(
      "cuda: synchronize waits for the device, which a graph capture cannot record; call it before captureGraph or after replay()",
    );
    const graph = captureGraph(() => null, { backend });
    graph.dispose();
    backend.synchronize();
  });

  test("warmUp runs with autotuning off and puts the setting back (its small shapes never reach the records or a cache file)", () => {
    let on = true;
    const setAutotune = vi.spyOn(standInAddon, "setAutotune").mockImplementation((value: boolean) => {
      const was = on;
      on = value;
      return was;
    });
    try {
      backend.warmUp();
      expect(setAutotune.mock.calls.map(([value]) => value)).toEqual([false, true]);
      expect(on).toBe(true);
    } finally {
      setAutotune.mockRestore();
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
