import { backward } from "@blocksparse/autograd";
import { type Tensor, captureGraph, getBackend, randint, setBackend, tensor, tidy } from "@blocksparse/core";
import { registerGraphRecordingBackend } from "@blocksparse/core/testing";
import { BertModel, GPT2LMHeadModel } from "@blocksparse/models";
import { AdamW, crossEntropy } from "@blocksparse/nn";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// A language model's whole training step (forward, cross-entropy, backward, a capturable AdamW) recorded once with
// captureGraph and replayed, against the same model trained eagerly: the forward must read nothing from the host
// (position embeddings included), on the js backend with recorded graphs (cuda: benchmarks' gpt2_train.ts --graph).
registerGraphRecordingBackend();

describe("GPT2LMHeadModel: a captured training step", () => {
  let previous: string;
  beforeAll(() => {
    previous = getBackend();
    setBackend("js-graphs");
  });
  afterAll(() => setBackend(previous));

  const config = { model_type: "gpt2", vocab_size: 37, n_positions: 12, n_embd: 16, n_layer: 2, n_head: 2, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };

  it("replays train exactly as eager steps (loss, every parameter)", () => {
    const eager = new GPT2LMHeadModel(config, { seed: 3 });
    const captured = new GPT2LMHeadModel(config, { seed: 3 });
    const optEager = new AdamW(eager.parameters(), { lr: 1e-2, weightDecay: 0.01, capturable: true });
    const optCaptured = new AdamW(captured.parameters(), { lr: 1e-2, weightDecay: 0.01, capturable: true });
    // Fewer positions than the model holds: the step reads rows 0..9 of the position table.
    const ids = randint(0, config.vocab_size, [2, 10], { seed: 5 });
    const targets = randint(0, config.vocab_size, [2, 10], { seed: 6 });
    const step = (model: GPT2LMHeadModel, optimizer: AdamW) => (): Tensor => {
      optimizer.zeroGrad();
      const loss = crossEntropy(model.forward(ids), targets);
      backward(loss);
      optimizer.step();
      return loss;
    };
    const eagerStep = () => tidy(step(eager, optEager));
    // One eager step each (the optimizers' state), then record the second model's step.
    eagerStep().dispose();
    tidy(step(captured, optCaptured)).dispose();
    const graph = captureGraph(step(captured, optCaptured));
    try {
      const losses: number[] = [];
      for (let k = 0; k < 3; k++) {
        const expected = eagerStep();
        const got = graph.replay();
        expect(got.item()).toBe(expected.item());
        losses.push(expected.item());
        expected.dispose();
        const pe = eager.parameters();
        for (const [i, p] of captured.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(Array.from(pe[i].value.dataSync()));
      }
      // It trains: the loss on the same batch goes down step after step.
      expect(losses[2]).toBeLessThan(losses[0]);
    } finally {
      graph.dispose();
      graph.result.dispose();
      optEager.dispose();
      optCaptured.dispose();
      ids.dispose();
      targets.dispose();
    }
  });

  it("BertModel with a padding mask: replays train exactly as eager steps (positions, token types and the mask made on the device)", () => {
    const bert = { model_type: "bert", vocab_size: 41, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 16, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };
    const eager = new BertModel(bert, { seed: 7 });
    const captured = new BertModel(bert, { seed: 7 });
    const optEager = new AdamW(eager.parameters(), { lr: 1e-2, capturable: true });
    const optCaptured = new AdamW(captured.parameters(), { lr: 1e-2, capturable: true });
    const ids = randint(0, bert.vocab_size, [3, 9], { seed: 9 });
    const labels = randint(0, bert.hidden_size, [3], { seed: 10 });
    // The second sequence is 6 tokens long, padded to 9.
    const attentionMask = tensor(Array.from({ length: 27 }, (_, i) => (i >= 15 && i < 18 ? 0 : 1)), [3, 9], "int32");
    const step = (model: BertModel, optimizer: AdamW) => (): Tensor => {
      optimizer.zeroGrad();
      const { lastHiddenState, poolerOutput } = model.encode(ids, { attentionMask });
      lastHiddenState.dispose();
      const loss = crossEntropy(poolerOutput, labels);
      backward(loss);
      optimizer.step();
      return loss;
    };
    tidy(step(eager, optEager)).dispose();
    tidy(step(captured, optCaptured)).dispose();
    const graph = captureGraph(step(captured, optCaptured));
    try {
      for (let k = 0; k < 2; k++) {
        const expected = tidy(step(eager, optEager));
        expect(graph.replay().item()).toBe(expected.item());
        expected.dispose();
        const pe = eager.parameters();
        for (const [i, p] of captured.parameters().entries()) expect(Array.from(p.value.dataSync())).toEqual(Array.from(pe[i].value.dataSync()));
      }
    } finally {
      graph.dispose();
      graph.result.dispose();
      optEager.dispose();
      optCaptured.dispose();
      ids.dispose();
      labels.dispose();
      attentionMask.dispose();
    }
  });
});
