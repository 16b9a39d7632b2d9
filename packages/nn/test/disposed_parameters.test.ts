import { captureGraph, getBackend, memory, randn, setBackend, type Tensor } from "@blocksparse/core";
import { registerGraphRecordingBackend } from "@blocksparse/core/testing";
import {
  Adam,
  AdamW,
  BlockSparseLinear,
  backward,
  clipGradNorm,
  clipGradValue,
  DisposedTensorError,
  GradScaler,
  Linear,
  mseLoss,
  type Optimizer,
  type Parameter,
  Sequential,
  SGD,
  StepLR,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, thrown } from "./helpers";

// An optimizer made before its model's layers were replaced and disposed (patchModel with disposeReplaced) holds
// parameters that can never be trained again: each of its uses over them throws, naming the first, where it trained
// nothing (a disposed parameter has no gradient, so it was skipped) in silence.

registerGraphRecordingBackend();

const kinds: Record<string, (params: Parameter[]) => Optimizer> = {
  SGD: (params) => new SGD(params, { lr: 0.1 }),
  "SGD with momentum": (params) => new SGD(params, { lr: 0.1, momentum: 0.9 }),
  Adam: (params) => new Adam(params, { lr: 1e-2 }),
  AdamW: (params) => new AdamW(params, { lr: 1e-2 }),
  "Adam (capturable)": (params) => new Adam(params, { lr: 1e-2, capturable: true }),
};

const makeModel = () =>
  new Sequential(new Linear(8, 8, { seed: 1 }), new BlockSparseLinear(8, 4, { density: 0.5, blockShape: [4, 4], seed: 2 }));

/** One forward and backward of `model` on a fixed batch. */
function gradients(model: Sequential): void {
  const x = randn([4, 8], { seed: 3 });
  const y = randn([4, 4], { seed: 4 });
  backward(mseLoss(model.forward(x), y));
  x.dispose();
  y.dispose();
}

/** What the patcher does with disposeReplaced: the first layer replaced by a new one, the old one's parameters disposed. */
function replaceFirstLayer(model: Sequential): Linear {
  const old = model.getSubmodule("0") as Linear;
  model.setSubmodule("0", new Linear(8, 8, { seed: 5 }));
  for (const parameter of old.parameters()) parameter.dispose();
  return old;
}

const advice = "it can never be trained again; create the optimizer after patching (after replacing the parameters), from model.parameters()";

describe("an optimizer holding disposed parameters", () => {
  for (const [kind, make] of Object.entries(kinds)) {
    it(`${kind}: step, zeroGrad, stateDict and loadStateDict throw a DisposedTensorError naming the parameter, changing nothing`, () => {
      const model = makeModel();
      const optimizer = make(model.parameters());
      gradients(model);
      optimizer.step();
      const saved = optimizer.stateDict();
      replaceFirstLayer(model);
      gradients(model);
      // The kept layer has its gradient: before, the step updated it alone and skipped the disposed ones.
      const kept = model.parameters().slice(2);
      const values = kept.map((p) => [...host(p.value)]);
      const grads = kept.map((p) => p.grad);
      const where = kind.startsWith("SGD") ? "SGD" : kind.startsWith("AdamW") ? "AdamW" : "Adam";
      const message = (method: string) =>
        `${where}.${method}: params[0] (paramGroups[0].params[0]), [8, 8] float32, was disposed (and 1 more): ${advice}`;
      expect(thrown(() => optimizer.step())).toEqual(["DisposedTensorError", message("step")]);
      expect(() => optimizer.step()).toThrow(DisposedTensorError);
      expect(kept.map((p) => [...host(p.value)])).toEqual(values);
      for (const p of kept) expect(optimizer.stepsOf(p)).toBe(1);
      expect(thrown(() => optimizer.zeroGrad())).toEqual(["DisposedTensorError", message("zeroGrad")]);
      expect(kept.map((p) => p.grad)).toEqual(grads);
      // The disposed parameters' state (moments, momentum) is not saved as if they were still trained.
      expect(thrown(() => optimizer.stateDict())).toEqual(["DisposedTensorError", message("stateDict")]);
      expect(thrown(() => optimizer.loadStateDict(saved))).toEqual(["DisposedTensorError", message("loadStateDict")]);
      // Disposing the optimizer frees the state it holds for them too.
      const before = memory().numTensors;
      const held = optimizer.params.reduce((n, p) => n + Object.keys(optimizer.stateOf(p) ?? {}).length, 0);
      optimizer.dispose();
      expect(memory().numTensors).toBeLessThanOrEqual(before - held);
      // One made now trains every layer.
      const fresh = make(model.parameters());
      const first = [...host(model.parameters()[0].value)];
      fresh.step();
      expect([...host(model.parameters()[0].value)]).not.toEqual(first);
      fresh.dispose();
    });
  }

  it("names a parameter by its group and its place in it, and says one when only one was disposed", () => {
    const model = makeModel();
    const [weight, bias, blocks, blocksBias] = model.parameters();
    const optimizer = new AdamW([{ params: [blocks, blocksBias] }, { params: [weight, bias], lr: 1e-3 }]);
    weight.dispose();
    expect(thrown(() => optimizer.step())).toEqual([
      "DisposedTensorError",
      `AdamW.step: params[2] (paramGroups[1].params[0]), [8, 8] float32, was disposed: ${advice}`,
    ]);
    optimizer.dispose();
  });

  it("the constructor and addParamGroup refuse a disposed parameter", () => {
    const model = makeModel();
    const [weight, bias, blocks] = model.parameters();
    bias.dispose();
    expect(thrown(() => new SGD([weight, bias]))).toEqual(["DisposedTensorError", `SGD: params[1], [8] float32, was disposed: ${advice}`]);
    const optimizer = new Adam([blocks]);
    expect(thrown(() => optimizer.addParamGroup({ params: [weight, bias] }))).toEqual([
      "DisposedTensorError",
      `Adam.addParamGroup: params[1], [8] float32, was disposed: ${advice}`,
    ]);
    expect(optimizer.paramGroups.length).toBe(1);
  });

  it("clipGradNorm, clipGradValue and GradScaler.unscale refuse disposed parameters; schedulers, which set learning rates only, still step", () => {
    const model = makeModel();
    const optimizer = new SGD(model.parameters(), { lr: 0.1 });
    const old = replaceFirstLayer(model);
    gradients(model);
    expect(thrown(() => clipGradNorm(optimizer.params, 1))).toEqual([
      "DisposedTensorError",
      `clipGradNorm: parameters[0], [8, 8] float32, was disposed: ${advice}`,
    ]);
    expect(thrown(() => clipGradValue(old.parameters(), 1))).toEqual([
      "DisposedTensorError",
      `clipGradValue: parameters[0], [8, 8] float32, was disposed: ${advice}`,
    ]);
    expect(clipGradNorm(model.parameters(), 1e9)).toBeGreaterThan(0);
    // Every parameter of this optimizer disposed: "no gradient, call backward first" would point elsewhere.
    const lone = new Linear(8, 8, { seed: 6 });
    const stale = new SGD(lone.parameters(), { lr: 0.1 });
    for (const p of lone.parameters()) p.dispose();
    const scaler = new GradScaler({ initScale: 2 });
    expect(thrown(() => scaler.unscale(stale))[0]).toBe("DisposedTensorError");
    expect(thrown(() => scaler.step(stale))[1]).toBe(`GradScaler.unscale: params[0] (paramGroups[0].params[0]), [8, 8] float32, was disposed (and 1 more): ${advice}`);
    const scheduler = new StepLR(optimizer, { stepSize: 1, gamma: 0.5 });
    scheduler.step();
    expect(optimizer.lr).toBe(0.05);
    optimizer.dispose();
  });

  it("a replay of a captured step whose parameter was disposed since throws naming it, before anything runs", () => {
    const previous = getBackend();
    setBackend("js-graphs");
    try {
      const model = new Sequential(new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 1 }), new Linear(8, 8, { seed: 2 }));
      const optimizer = new AdamW(model.parameters(), { lr: 1e-2, capturable: true });
      const x = randn([4, 8], { seed: 3 });
      const step = (): Tensor => {
        optimizer.zeroGrad();
        const out = model.forward(x);
        backward(out, x);
        optimizer.step();
        return out;
      };
      step().dispose();
      step().dispose();
      const graph = captureGraph(step);
      graph.replay();
      model.parameters()[3].dispose();
      const values = model.parameters().slice(0, 3).map((p) => [...host(p.value)]);
      const [name, message] = thrown(() => graph.replay());
      expect(name).toBe("DisposedTensorError");
      expect(message).toBe(
        `AdamW (a replay of the captured step): params[3] (paramGroups[0].params[3]), [8] float32, was disposed: ${advice}`,
      );
      expect(model.parameters().slice(0, 3).map((p) => [...host(p.value)])).toEqual(values);
      graph.dispose();
      graph.result.dispose();
      optimizer.dispose();
      x.dispose();
    } finally {
      setBackend(previous);
    }
  });
});
