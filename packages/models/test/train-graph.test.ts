import { backward } from "@blocksparse/autograd";
import { captureGraph, getBackend, randint, setBackend, type Tensor, tensor, tidy } from "@blocksparse/core";
import { registerGraphRecordingBackend } from "@blocksparse/core/testing";
import { BertModel, GPT2LMHeadModel } from "@blocksparse/models";
import { AdamW, crossEntropy, type Module } from "@blocksparse/nn";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// A model's whole training step (forward, loss, backward, a capturable AdamW) recorded once with captureGraph and
// replayed, against the same model trained eagerly: the forward must read nothing from the host (position
// embeddings, token types and padding masks included), on the js backend with recorded graphs (cuda: benchmarks'
// gpt2_train.ts --graph).
registerGraphRecordingBackend();

/**
 * Trains two copies of a model for `steps` steps of `lossOf`, one eagerly and one by replaying its step recorded
 * once; after every step the losses and every parameter must be equal. Returns the eager losses.
 */
function expectReplaysAsEager<M extends Module>(make: () => M, lossOf: (model: M) => Tensor, steps: number): number[] {
  const eager = make();
  const captured = make();
  // Both capturable: the same update arithmetic (bias corrections on the device).
  const optEager = new AdamW(eager.parameters(), { lr: 1e-2, weightDecay: 0.01, capturable: true });
  const optCaptured = new AdamW(captured.parameters(), { lr: 1e-2, weightDecay: 0.01, capturable: true });
  const step = (model: M, optimizer: AdamW) => (): Tensor => {
    optimizer.zeroGrad();
    const loss = lossOf(model);
    backward(loss);
    optimizer.step();
    return loss;
  };
  // One eager step each (the optimizers' state), then record the second model's step.
  tidy(step(eager, optEager)).dispose();
  tidy(step(captured, optCaptured)).dispose();
  const graph = captureGraph(step(captured, optCaptured));
  try {
    const losses: number[] = [];
    for (let k = 0; k < steps; k++) {
      const expected = tidy(step(eager, optEager));
      expect(graph.replay().item()).toBe(expected.item());
      losses.push(expected.item());
      expected.dispose();
      const pe = eager.parameters();
      for (const [i, p] of captured.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(Array.from(pe[i].value.dataSync()));
    }
    return losses;
  } finally {
    graph.dispose();
    graph.result.dispose();
    optEager.dispose();
    optCaptured.dispose();
  }
}

describe("a captured training step of a model", () => {
  let previous: string;
  beforeAll(() => {
    previous = getBackend();
    setBackend("js-graphs");
  });
  afterAll(() => setBackend(previous));

  it("GPT2LMHeadModel: replays train exactly as eager steps (loss, every parameter)", () => {
    const config = { model_type: "gpt2", vocab_size: 37, n_positions: 12, n_embd: 16, n_layer: 2, n_head: 2, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
    // Fewer positions than the model holds: the step reads rows 0..9 of the position table.
    const ids = randint(0, config.vocab_size, [2, 10], { seed: 5 });
    const targets = randint(0, config.vocab_size, [2, 10], { seed: 6 });
    try {
      const losses = expectReplaysAsEager(() => new GPT2LMHeadModel(config, { seed: 3 }), (model) => crossEntropy(model.forward(ids), targets), 3);
      // It trains: the loss on the same batch goes down step after step.
      expect(losses[2]).toBeLessThan(losses[0]);
    } finally {
      ids.dispose();
      targets.dispose();
    }
  });

  it("BertModel with a padding mask: replays train exactly as eager steps (positions, token types and the mask made on the device)", () => {
    const bert = { model_type: "bert", vocab_size: 41, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 16, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
    const labels = randint(0, bert.hidden_size, [3], { seed: 10 });
    // The second sequence is 6 tokens long, padded to 9 with pad_token_id 0 (the word embeddings' padding row: its
    // gradient is stopped on the device too).
    const padded = (i: number) => i >= 15 && i < 18;
    const attentionMask = tensor(Array.from({ length: 27 }, (_, i) => (padded(i) ? 0 : 1)), [3, 9], "int32");
    const drawn = randint(1, bert.vocab_size, [3, 9], { seed: 9 });
    const ids = tensor(Array.from(drawn.dataSync(), (id, i) => (padded(i) ? 0 : id)), [3, 9], "int32");
    drawn.dispose();
    const lossOf = (model: BertModel): Tensor => {
      const { lastHiddenState, poolerOutput } = model.encode(ids, { attentionMask });
      lastHiddenState.dispose();
      return crossEntropy(poolerOutput, labels);
    };
    try {
      expectReplaysAsEager(() => new BertModel(bert, { seed: 7 }), lossOf, 2);
    } finally {
      ids.dispose();
      labels.dispose();
      attentionMask.dispose();
    }
  });
});
