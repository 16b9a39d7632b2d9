import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { addDisposeObserver, addKernelObserver, dispose, exp, memory, mul, sum, tensor, tidy } from "@blocksparse/core";
import { backward, detach, tracksGrad } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";

describe("autograd on core's hooks", () => {
  it("another kernel observer sees the clones the tape records, and detach's unrecorded one", () => {
    const x = tensor([1, 2, 3]);
    x.requiresGrad = true;
    const names: string[] = [];
    const stop = addKernelObserver((record) => names.push(record.kernelName));
    const [cloned, detached] = [x.clone(), detach(x)];
    stop();
    expect(names).toEqual(["Clone", "Clone"]);
    expect(tracksGrad(cloned)).toBe(true);
    expect(tracksGrad(detached)).toBe(false);
    tidy(() => backward(sum(mul(cloned, detached))));
    expect(Array.from(x.grad!.dataSync())).toEqual([1, 2, 3]);
    dispose([x, x.grad, cloned, detached]);
  });

  it("another dispose observer is told of the tensors the tape disposes when a node goes", () => {
    const x = tensor([0, 1]);
    x.requiresGrad = true;
    const made: number[] = [];
    const stopKernels = addKernelObserver((record) => made.push(...record.outputs.map((t) => t.id)));
    const y = exp(x); // Exp saves its output: a Clone the tape keeps
    stopKernels();
    expect(made).toHaveLength(2);
    const before = memory().numTensors;
    const disposedIds: number[] = [];
    const stop = addDisposeObserver((record) => disposedIds.push(record.id));
    y.dispose();
    stop();
    expect(disposedIds.sort((p, q) => p - q)).toEqual(made.sort((p, q) => p - q));
    expect(memory().numTensors).toBe(before - 2);
    x.dispose();
  });

  it("a tracked output collected without dispose() frees its node through core's finalizer report", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as (() => void) | undefined;
    if (typeof gc !== "function") {
      console.log("skipping the collected-output check: this Node exposes no gc");
      return;
    }
    const x = tensor([0, 1, 2]);
    x.requiresGrad = true;
    const made = new Map<string, number>();
    const stopKernels = addKernelObserver((record) => made.set(record.kernelName, record.outputs[0].id));
    (() => {
      exp(x); // dropped undisposed: its output and the clone its node saved
    })();
    stopKernels();
    const [output, saved] = [made.get("Exp"), made.get("Clone")];
    expect(made.size).toBe(2);
    const reports = new Map<number, boolean>();
    const stop = addDisposeObserver((record) => reports.set(record.id, record.tensor === null));
    try {
      for (let i = 0; i < 20 && reports.size < 2; i++) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      stop();
    }
    // The output was collected (no tensor); the tape then disposed its saved clone.
    expect(reports.get(output as number)).toBe(true);
    expect(reports.get(saved as number)).toBe(false);
    x.dispose();
  });
});
