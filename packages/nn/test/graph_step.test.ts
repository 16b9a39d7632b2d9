import { backward } from "@blocksparse/autograd";
import { captureGraph, cast, GraphError, memory, randn, sum, type Tensor, tidy } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, GELU, GradScaler, type Module, Sequential, SGD, TransformerBlock } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { onJsGraphs } from "./helpers";

// A training step recorded with captureGraph (forward and backward; AdamW after each replay) against the same
// model trained eagerly: same batches, same updates, on the js backend with recorded graphs (cuda: ffn.ts --graph).

/** Gives the step's inputs a new batch's values (as a training loop does between replays) and frees the batch. */
function loadBatch(inputs: Tensor[], batch: Tensor[]): void {
  inputs.forEach((t, i) => {
    t.assign(batch[i]);
    batch[i].dispose();
  });
}

describe("a captured training step", () => {
  onJsGraphs();

  // A block-sparse FFN, and a TransformerBlock (causal attention: its mask lives inside the softmax, so
  // nothing is uploaded during the step) whose MLP is block-sparse.
  const models: { name: string; input: number[]; make: () => Module }[] = [
    {
      name: "block-sparse FFN",
      input: [8, 16],
      make: () =>
        new Sequential(
          new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [4, 4], seed: 11 }),
          new GELU("tanh"),
          new BlockSparseLinear(32, 16, { density: 0.5, blockShape: [4, 4], seed: 12 }),
        ),
    },
    {
      name: "TransformerBlock with a block-sparse MLP",
      input: [2, 5, 16],
      make: () => {
        const block = new TransformerBlock({ dModel: 16, nHeads: 2, seed: 13 });
        block.setSubmodule("mlp.fc1", new BlockSparseLinear(16, 64, { density: 0.5, blockShape: [4, 4], seed: 14 }));
        return block.setSubmodule("mlp.fc2", new BlockSparseLinear(64, 16, { density: 0.5, blockShape: [4, 4], seed: 15 }));
      },
    },
  ];

  for (const { name, input, make } of models) {
    for (const dtype of ["float32", "bfloat16"] as const) {
      it(`${name}, ${dtype}: replay + optimizer.step() trains exactly as the eager step (new batches, master weights)`, () => {
        const eager = make().to(dtype);
        const captured = make().to(dtype);
        const optEager = new AdamW(eager.parameters(), { lr: 1e-2, weightDecay: 0.01 });
        const optCaptured = new AdamW(captured.parameters(), { lr: 1e-2, weightDecay: 0.01 });
        const batch = (seed: number): [Tensor, Tensor] =>
          tidy(() => [cast(randn(input, { seed }), dtype), cast(randn(input, { seed: seed + 1 }), dtype)]);
        const [x, dy] = batch(1);
        const eagerStep = () => {
          optEager.zeroGrad();
          const out = eager.forward(x);
          backward(out, dy);
          optEager.step();
          return out;
        };
        const recorded = () => {
          optCaptured.zeroGrad();
          const out = captured.forward(x);
          backward(out, dy);
          return out;
        };
        // One eager step each, then record the second model's forward and backward.
        eagerStep().dispose();
        const warm = recorded();
        optCaptured.step();
        warm.dispose();
        const tensorsBefore = memory().numTensors;
        const graph = captureGraph(recorded);
        const buffers = captured.parameters().map((p) => p.value.dataId);
        try {
          for (let k = 0; k < 4; k++) {
            loadBatch([x, dy], batch(10 + 2 * k));
            const expected = eagerStep();
            const got = graph.replay();
            optCaptured.step();
            expect(Array.from(got.dataSync())).toEqual(Array.from(expected.dataSync()));
            expected.dispose();
            const pe = eager.parameters();
            for (const [i, p] of captured.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(Array.from(pe[i].value.dataSync()));
          }
          // The eager update wrote the parameters where the graph reads them: no new storage, nothing copied in.
          expect(captured.parameters().map((p) => p.value.dataId)).toEqual(buffers);
          // What the graph made and the step left behind: its output (yours to dispose) and the gradients.
          graph.dispose();
          graph.result.dispose();
          expect(memory().numTensors).toBe(tensorsBefore);
        } finally {
          graph.dispose();
          x.dispose();
          dy.dispose();
        }
      });
    }
  }
});

// The whole step (forward, backward and a capturable AdamW) recorded once: each replay is one training step, the
// optimizer's step counts and learning rate on the device.
describe("a whole training step captured with a capturable optimizer", () => {
  onJsGraphs();

  const makeModel = () =>
    new Sequential(
      new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [4, 4], seed: 21 }),
      new GELU("tanh"),
      new BlockSparseLinear(32, 16, { density: 0.5, blockShape: [4, 4], seed: 22 }),
    );
  // One training step of `model` on the batch (x, dy), the update included: what is run eagerly and recorded.
  const trainingStep = (model: Module, optimizer: AdamW, x: Tensor, dy: Tensor) => () => {
    optimizer.zeroGrad();
    const out = model.forward(x);
    backward(out, dy);
    optimizer.step();
    return out;
  };
  const release = (graph: { dispose(): void; result: Tensor }, optimizers: AdamW[], tensors: Tensor[]) => {
    graph.dispose();
    graph.result.dispose();
    for (const o of optimizers) o.dispose();
    for (const t of tensors) t.dispose();
  };
  const expectSameParameters = (a: Module, b: Module) => {
    const pb = b.parameters();
    for (const [i, p] of a.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(Array.from(pb[i].value.dataSync()));
  };

  for (const dtype of ["float32", "bfloat16"] as const) {
    it(`${dtype}: replays train exactly as eager steps, through a learning-rate schedule, and count their steps`, () => {
      const eager = makeModel().to(dtype);
      const captured = makeModel().to(dtype);
      const options = { lr: 1e-2, weightDecay: 0.01, capturable: true, lrScale: (p: { pattern: unknown }) => (p.pattern === null ? 1 : 2) };
      const optEager = new AdamW(eager.parameters(), options);
      const optCaptured = new AdamW(captured.parameters(), options);
      const batch = (seed: number): [Tensor, Tensor] => tidy(() => [cast(randn([8, 16], { seed }), dtype), cast(randn([8, 16], { seed: seed + 1 }), dtype)]);
      const [x, dy] = batch(1);
      const eagerStep = trainingStep(eager, optEager, x, dy);
      const wholeStep = trainingStep(captured, optCaptured, x, dy);
      // The first step eagerly (it makes the optimizer's state), then the whole step recorded.
      eagerStep().dispose();
      wholeStep().dispose();
      const values = captured.parameters().map((p) => Array.from(p.value.dataSync()));
      const graph = captureGraph(wholeStep);
      try {
        // Recording ran nothing.
        for (const [i, p] of captured.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(values[i]);
        for (let k = 0; k < 4; k++) {
          loadBatch([x, dy], batch(10 + 2 * k));
          // A schedule: the learning rate changes before every step, on both.
          optEager.lr = 1e-2 * (1 - k / 8);
          optCaptured.lr = optEager.lr;
          const expected = eagerStep();
          const got = graph.replay();
          expect(Array.from(got.dataSync())).toEqual(Array.from(expected.dataSync()));
          expected.dispose();
          expectSameParameters(captured, eager);
        }
        // One eager step and four replays: the recording took none.
        for (const p of captured.parameters()) expect(optCaptured.stepsOf(p)).toBe(5);
      } finally {
        release(graph, [optEager, optCaptured], [x, dy]);
      }
    });
  }

  it("an eager optimizer step between replays is kept: it writes where the graph reads, and the next replay starts from it", () => {
    const eager = makeModel().to("bfloat16");
    const captured = makeModel().to("bfloat16");
    const optEager = new AdamW(eager.parameters(), { lr: 1e-2, capturable: true });
    const optCaptured = new AdamW(captured.parameters(), { lr: 1e-2, capturable: true });
    const x = tidy(() => cast(randn([8, 16], { seed: 31 }), "bfloat16"));
    const eagerStep = trainingStep(eager, optEager, x, x);
    const wholeStep = trainingStep(captured, optCaptured, x, x);
    eagerStep().dispose();
    wholeStep().dispose();
    const graph = captureGraph(wholeStep);
    try {
      for (let k = 0; k < 4; k++) {
        eagerStep().dispose();
        graph.replay();
        if (k === 1) {
          // One more update from the same gradients, outside the graph: in place, in the buffers the graph reads.
          const buffers = captured.parameters().map((p) => p.value.dataId);
          optEager.step();
          optCaptured.step();
          expect(captured.parameters().map((p) => p.value.dataId)).toEqual(buffers);
        }
        expectSameParameters(captured, eager);
      }
      for (const p of captured.parameters()) expect(optCaptured.stepsOf(p)).toBe(6);
    } finally {
      release(graph, [optEager, optCaptured], [x]);
    }
  });

  it("betas, eps and weightDecay are constants of the captured update: set since, a replay refuses with a GraphError before running anything; captured again, replays use them", () => {
    const eager = makeModel();
    const captured = makeModel();
    const optEager = new AdamW(eager.parameters(), { lr: 1e-2, capturable: true });
    const optCaptured = new AdamW(captured.parameters(), { lr: 1e-2, capturable: true });
    const x = randn([8, 16], { seed: 41 });
    const eagerStep = trainingStep(eager, optEager, x, x);
    const wholeStep = trainingStep(captured, optCaptured, x, x);
    eagerStep().dispose();
    wholeStep().dispose();
    let graph = captureGraph(wholeStep);
    try {
      const changes: [() => void, () => void, RegExp][] = [
        [() => (optCaptured.weightDecay = 0.1), () => (optCaptured.weightDecay = 0.01), /^AdamW: weightDecay is 0\.1, the captured step holds 0\.01 /],
        [() => (optCaptured.eps = 1e-6), () => (optCaptured.eps = 1e-8), /^AdamW: eps is 0\.000001, the captured step holds 1e-8 /],
        [() => (optCaptured.paramGroups[0].betas = [0.8, 0.99]), () => (optCaptured.betas = [0.9, 0.999]), /^AdamW: betas is \[0\.8,0\.99\], the captured step holds \[0\.9,0\.999\] /],
      ];
      for (const [change, undo, message] of changes) {
        change();
        const held = captured.parameters().map((p) => Array.from(p.value.dataSync()));
        const steps = optCaptured.stepsOf(captured.parameters()[0]);
        expect(() => graph.replay()).toThrow(GraphError);
        expect(() => graph.replay()).toThrow(message);
        expect(() => graph.replay()).toThrow(/\(only lr is read on the device\): capture the step again$/);
        // Nothing ran: the parameters and step counts are as they were.
        for (const [i, p] of captured.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(held[i]);
        expect(optCaptured.stepsOf(captured.parameters()[0])).toBe(steps);
        // Set back, the captured values are the group's again: replays run.
        undo();
        eagerStep().dispose();
        graph.replay();
        expectSameParameters(captured, eager);
        eagerStep().dispose();
        graph.replay();
      }
      expectSameParameters(captured, eager);
      // An eager step takes new values while the graph lives (only its replays are refused) ...
      for (const o of [optEager, optCaptured]) {
        o.weightDecay = 0.1;
        o.betas = [0.8, 0.99];
        o.step();
      }
      expectSameParameters(captured, eager);
      expect(() => graph.replay()).toThrow(GraphError);
      // ... and the step captured again replays with them.
      graph.dispose();
      graph.result.dispose();
      graph = captureGraph(wholeStep);
      for (let k = 0; k < 2; k++) {
        eagerStep().dispose();
        graph.replay();
        expectSameParameters(captured, eager);
      }
      // One eager step, six replays, one eager step, two replays.
      expect(optCaptured.stepsOf(captured.parameters()[0])).toBe(10);
    } finally {
      release(graph, [optEager, optCaptured], [x]);
    }
  });

  it("matches the host-counted optimizer's training (the learning rate read as a float32)", () => {
    const a = makeModel();
    const b = makeModel();
    const optA = new AdamW(a.parameters(), { lr: 3e-3 });
    const optB = new AdamW(b.parameters(), { lr: 3e-3, capturable: true });
    const x = randn([8, 16], { seed: 5 });
    for (let k = 0; k < 3; k++) {
      for (const [model, optimizer] of [[a, optA], [b, optB]] as const) {
        optimizer.zeroGrad();
        const out = model.forward(x);
        backward(out, x);
        optimizer.step();
        out.dispose();
      }
    }
    const pb = b.parameters();
    for (const [i, p] of a.parameters().entries()) {
      const want = p.value.dataSync();
      const got = pb[i].value.dataSync();
      for (let j = 0; j < want.length; j++) expect(Math.abs(got[j] - want[j])).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(want[j])));
      expect(optB.stepsOf(pb[i])).toBe(3);
    }
    optA.dispose();
    optB.dispose();
    x.dispose();
  });

  it("refuses what a replay could not repeat, with a GraphError that says what to do", () => {
    const model = makeModel();
    const x = randn([8, 16], { seed: 6 });
    const stepWith = (optimizer: { zeroGrad(): void; step(): void }) => () => {
      optimizer.zeroGrad();
      const out = model.forward(x);
      backward(out, x);
      optimizer.step();
      return out;
    };
    const sgd = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
    expect(() => captureGraph(stepWith(sgd))).toThrow(/SGD\.step\(\) inside captureGraph.*capturable: true/);
    const plain = new AdamW(model.parameters(), { lr: 1e-3 });
    expect(() => captureGraph(stepWith(plain))).toThrow(/AdamW\.step\(\) inside captureGraph/);
    const fresh = new AdamW(model.parameters(), { lr: 1e-3, capturable: true });
    expect(() => captureGraph(stepWith(fresh))).toThrow(/run one step eagerly before capturing/);
    expect(() => new AdamW(model.parameters(), { capturable: "yes" as unknown as boolean })).toThrow(/capturable must be true or false/);
    for (const o of [sgd, plain, fresh]) o.dispose();
    for (const p of model.parameters()) p.zeroGrad();
    x.dispose();
  });

  it("refuses GradScaler.scale inside a capture (replays trained on stale gradients at a stale scale); disabled, it records", () => {
    const model = makeModel();
    const x = randn([8, 16], { seed: 7 });
    const recordWith = (scaler: GradScaler) => () => {
      for (const p of model.parameters()) p.zeroGrad();
      const loss = sum(model.forward(x));
      backward(scaler.scale(loss));
      return loss;
    };
    const scaler = new GradScaler({ initScale: 8 });
    // Eagerly it scales; recorded, every replay would multiply by 8 whatever update() set since, and unscale() replaced
    // the gradients the replays write (the model stopped following the eager one after the first replay).
    recordWith(scaler)().dispose();
    expect(() => captureGraph(recordWith(scaler))).toThrow(/GradScaler\.scale inside captureGraph/);
    const graph = captureGraph(recordWith(new GradScaler({ enabled: false })));
    graph.replay();
    graph.dispose();
    graph.result.dispose();
    for (const p of model.parameters()) p.zeroGrad();
    x.dispose();
  });
});
