import { backward } from "@blocksparse/autograd";
import { type Tensor, captureGraph, cast, getBackend, memory, randn, setBackend, tidy } from "@blocksparse/core";
import { registerGraphRecordingBackend } from "@blocksparse/core/testing";
import { AdamW, BlockSparseLinear, GELU, type Module, Sequential, TransformerBlock } from "@blocksparse/nn";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// A training step recorded with captureGraph (forward and backward; AdamW after each replay) against the same
// model trained eagerly: same batches, same updates, on the js backend with recorded graphs (cuda: ffn.ts --graph).
registerGraphRecordingBackend();

describe("a captured training step", () => {
  let previous: string;
  beforeAll(() => {
    previous = getBackend();
    setBackend("js-graphs");
  });
  afterAll(() => setBackend(previous));

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
        try {
          for (let k = 0; k < 4; k++) {
            const [nx, ndy] = batch(10 + 2 * k);
            x.assign(nx);
            dy.assign(ndy);
            nx.dispose();
            ndy.dispose();
            const expected = eagerStep();
            const got = graph.replay();
            optCaptured.step();
            expect(Array.from(got.dataSync())).toEqual(Array.from(expected.dataSync()));
            expected.dispose();
            const pe = eager.parameters();
            for (const [i, p] of captured.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(Array.from(pe[i].value.dataSync()));
          }
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
