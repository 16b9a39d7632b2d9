import { backward } from "@blocksparse/autograd";
import { cast, full, getBackend, memory, setBackend, type Tensor, tidy } from "@blocksparse/core";
import { Adam, BlockSparseLinear, crossEntropy, disposeStateDict, Linear, pruneAndRegrow, ReLU, Sequential, SGD } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, syntheticClassification, useSecondBackend } from "./helpers";

useSecondBackend();

describe("Module.to", () => {
  it("moves every parameter; training carries on there with its optimizer state following", () => {
    setBackend("js");
    const make = () =>
      new Sequential(new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 1 }), new ReLU(), new Linear(16, 3, { seed: 2 }));
    const { x, y } = syntheticClassification(8, 16, 3, 3);
    const step = (model: Sequential, optimizer: Adam, inputs: typeof x, labels: typeof y) => {
      optimizer.zeroGrad();
      tidy(() => backward(crossEntropy(model.forward(inputs), labels)));
      optimizer.step();
    };
    const reference = make();
    const referenceOptimizer = new Adam(reference.parameters(), { lr: 1e-2 });
    const moved = make();
    const movedOptimizer = new Adam(moved.parameters(), { lr: 1e-2 });
    step(reference, referenceOptimizer, x, y);
    step(moved, movedOptimizer, x, y);

    moved.to("second");
    expect(moved.parameters().every((p) => p.value.backend.name === "second")).toBe(true);
    setBackend("second");
    const { x: x2, y: y2 } = syntheticClassification(8, 16, 3, 3);
    step(moved, movedOptimizer, x2, y2);
    expect(movedOptimizer.stateOf(moved.parameters()[0])?.m.backend.name).toBe("second");
    setBackend("js");
    step(reference, referenceOptimizer, x, y);
    expect(getBackend()).toBe("js");
    const a = reference.parameters().map((p) => host(p.value));
    const b = moved.parameters().map((p) => host(p.value));
    expect(b).toEqual(a);
  });

  it("moves each parameter's gradient with it and frees the old ones; a parameter without one stays without", () => {
    setBackend("js");
    const model = new Sequential(new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 4 }), new Linear(8, 2, { seed: 5 }));
    const { x, y } = syntheticClassification(4, 8, 2, 6);
    tidy(() => backward(crossEntropy(model.forward(x), y)));
    model.parameters()[3].zeroGrad();
    const grads = model.parameters().map((p) => (p.grad === null ? null : host(p.grad)));
    const onSecond = () => memory().backends.second?.numTensors ?? 0;
    const [live, liveOnSecond] = [memory().numTensors, onSecond()];
    model.to("second");
    model.parameters().forEach((p, i) => {
      expect(p.grad?.backend.name ?? null).toBe(grads[i] === null ? null : "second");
      if (grads[i] !== null) expect(host(p.grad as Tensor)).toEqual(grads[i]);
    });
    expect(onSecond()).toBe(liveOnSecond + 7); // 4 values, 3 gradients
    model.to({ backend: "js", dtype: "bfloat16" });
    expect(model.parameters().map((p) => p.grad && `${p.grad.backend.name} ${p.grad.dtype}`)).toEqual(["js bfloat16", "js bfloat16", "js bfloat16", null]);
    expect(onSecond()).toBe(liveOnSecond);
    expect(memory().numTensors).toBe(live);
    for (const p of model.parameters()) p.dispose();
  });

  it.each(["Adam", "SGD"])("a mixed-precision layer moved to another backend moves its pattern with its %s state and a master copy", (kind) => {
    setBackend("js");
    const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 7 });
    const model = new Sequential(layer, new Linear(16, 3, { seed: 8 })).to("bfloat16");
    const optimizer = kind === "Adam" ? new Adam(model.parameters(), { lr: 1e-2 }) : new SGD(model.parameters(), { lr: 1e-2, momentum: 0.9 });
    const { x, y } = syntheticClassification(8, 16, 3, 9);
    tidy(() => backward(crossEntropy(model.forward(cast(x, "bfloat16")), y)));
    optimizer.step();
    model.to("second");
    optimizer.zeroGrad();
    const live = memory().numTensors;
    // The master copy is still on js (it follows at the next step); the regrown blocks come from the weights on "second".
    pruneAndRegrow(layer, { fraction: 0.5, random: 1, optimizer });
    expect(memory().numTensors).toBe(live);
    const master = optimizer.masterOf(layer.weight) as Tensor;
    expect(master.shape).toEqual(layer.weight.shape);
    // Kept blocks keep their master values (the weights are them rounded), regrown ones take the weights' (zeros).
    expect(host(tidy(() => cast(master, "bfloat16")))).toEqual(host(layer.weight.value));
    setBackend("second");
    tidy(() => backward(crossEntropy(model.forward(cast(x.to("second"), "bfloat16")), y.to("second"))));
    optimizer.step();
    expect(optimizer.stepsOf(layer.weight)).toBe(2);
    expect(optimizer.masterOf(layer.weight)?.backend.name).toBe("second");
    setBackend("js");
    for (const p of model.parameters()) p.dispose();
    optimizer.dispose();
  });

  it.each(["Adam", "SGD"])("weights loaded after a move to another backend are what %s's next step starts from, not the master copy from before", (kind) => {
    setBackend("js");
    const model = new Sequential(new Linear(8, 3, { seed: 10 })).to("bfloat16");
    const optimizer = kind === "Adam" ? new Adam(model.parameters(), { lr: 1e-3 }) : new SGD(model.parameters(), { lr: 1e-3 });
    const { x, y } = syntheticClassification(4, 8, 3, 11);
    tidy(() => backward(crossEntropy(model.forward(cast(x, "bfloat16")), y)));
    optimizer.step();
    model.to("second");
    setBackend("second");
    const loaded = { "0.weight": cast(full([3, 8], 0.25), "bfloat16"), "0.bias": cast(full([3], 0.25), "bfloat16") };
    model.loadStateDict(loaded);
    // Saved before the next step, the master copy is the loaded weights too.
    const saved = optimizer.stateDict();
    expect(host(saved.tensors.get("0.master") as Tensor).every((v) => v === 0.25)).toBe(true);
    disposeStateDict(saved.tensors);
    optimizer.zeroGrad();
    tidy(() => backward(crossEntropy(model.forward(cast(x.to("second"), "bfloat16")), y.to("second"))));
    optimizer.step();
    // One step of lr 1e-3 from 0.25 stays within a bfloat16 spacing there (2^-9), whatever the weights were before the load.
    for (const p of model.parameters()) expect(host(p.value).every((v) => Math.abs(v - 0.25) <= 2 ** -9)).toBe(true);
    setBackend("js");
    for (const t of Object.values(loaded)) t.dispose();
    for (const p of model.parameters()) p.dispose();
    optimizer.dispose();
  });
});
