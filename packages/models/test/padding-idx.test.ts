import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { backward } from "@blocksparse/autograd";
import { mul, randn, sum, tensor, tidy } from "@blocksparse/core";
import { loadSafetensors, saveSafetensors } from "@blocksparse/format/node";
import { BertModel, ConfigError, GPT2LMHeadModel, RobertaModel } from "@blocksparse/models";
import { fromPretrained } from "@blocksparse/models/node";
import { AdamW, type Embedding, type Optimizer, SGD } from "@blocksparse/nn";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures } from "./helpers";

// transformers builds BERT's and RoBERTa's word embeddings with padding_idx=pad_token_id (RoBERTa's position embeddings
// too): no gradient reaches that row, a fresh model has it zero, and a checkpoint's row loads as it is.
const CONFIG = { vocab_size: 40, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 16, hidden_dropout_prob: 0, attention_probs_dropout_prob: 0 };

const rowOf = (embedding: Embedding, r: number): number[] => {
  const width = embedding.embeddingDim;
  return Array.from(embedding.weight.value.dataSync().subarray(r * width, r * width + width));
};

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "models-padding-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("padding rows of a fresh model, as transformers' nn.Embedding(padding_idx=...)", () => {
  it("BERT: the word embeddings' row pad_token_id (default 0) is zero; position and token-type tables have none", () => {
    for (const [config, pad] of [
      [CONFIG, 0],
      [{ ...CONFIG, pad_token_id: 3 }, 3],
    ] as const) {
      const { word_embeddings, position_embeddings, token_type_embeddings } = new BertModel(config, { seed: 1 }).embeddings;
      expect(word_embeddings.paddingIdx).toBe(pad);
      expect(rowOf(word_embeddings, pad).every((v) => v === 0)).toBe(true);
      expect(rowOf(word_embeddings, pad + 1).some((v) => v !== 0)).toBe(true);
      expect(position_embeddings.paddingIdx).toBeNull();
      expect(token_type_embeddings.paddingIdx).toBeNull();
      expect(rowOf(position_embeddings, 0).some((v) => v !== 0)).toBe(true);
    }
    expect(new BertModel({ ...CONFIG, pad_token_id: null }, { seed: 1 }).embeddings.word_embeddings.paddingIdx).toBeNull();
  });

  it("RoBERTa: the word and the position embeddings' row pad_token_id (default 1) are zero", () => {
    const { word_embeddings, position_embeddings, token_type_embeddings } = new RobertaModel(CONFIG, { seed: 1 }).embeddings;
    for (const table of [word_embeddings, position_embeddings]) {
      expect(table.paddingIdx).toBe(1);
      expect(rowOf(table, 1).every((v) => v === 0)).toBe(true);
    }
    expect(token_type_embeddings.paddingIdx).toBeNull();
  });

  it("GPT-2 has none (transformers' wte and wpe take no padding_idx)", () => {
    const { wte, wpe } = new GPT2LMHeadModel({ vocab_size: 40, n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2 }, { seed: 1 }).transformer;
    expect([wte.paddingIdx, wpe.paddingIdx]).toEqual([null, null]);
    expect(rowOf(wte, 0).some((v) => v !== 0)).toBe(true);
  });

  it("a pad_token_id outside vocab_size is a ConfigError naming both (torch refuses such a padding_idx)", () => {
    expect(() => new BertModel({ ...CONFIG, pad_token_id: 40 })).toThrow(ConfigError);
    expect(() => new BertModel({ ...CONFIG, pad_token_id: 40 })).toThrow("BertModel: pad_token_id=40 is outside vocab_size=40");
  });
});

describe("a checkpoint's padding rows", () => {
  it("load as they are (transformers zeroes them only in a fresh model)", async () => {
    for (const [name, keys, pad] of [
      ["bert", ["embeddings.word_embeddings.weight"], 0],
      ["roberta", ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"], 1],
    ] as const) {
      const dir = await mkdtemp(join(scratch, `${name}-`));
      const content = await loadSafetensors(fixtures(`${name}/model.safetensors`));
      for (const key of keys) {
        const t = content.tensors.get(key)!;
        (t.data as Float32Array).subarray(pad * t.shape[1], (pad + 1) * t.shape[1]).fill(0.25);
      }
      await saveSafetensors(join(dir, "model.safetensors"), content.tensors, content.metadata);
      await copyFile(fixtures(`${name}/config.json`), join(dir, "config.json"));
      const model = (await fromPretrained(dir)) as BertModel;
      const tables = keys.map((key) => (key.includes("word") ? model.embeddings.word_embeddings : model.embeddings.position_embeddings));
      for (const table of tables) {
        expect(table.paddingIdx).toBe(pad);
        expect(rowOf(table, pad).every((v) => v === 0.25)).toBe(true);
      }
    }
  });
});

describe("a training step with padding", () => {
  // Two sequences, the second padded with pad_token_id (0) behind an attention mask; the loss reads every position,
  // the padding's included, so without padding_idx the pad row would get a gradient.
  const ids = () => tensor([5, 9, 12, 7, 3, 8, 0, 0], [2, 4], "int32");
  const attentionMask = () => tensor([1, 1, 1, 1, 1, 1, 0, 0], [2, 4], "int32");

  /** One step of `optimizer` on a fresh BERT whose word embeddings hold a non-zero pad row (as a checkpoint may); the pad row and row 5 before and after. */
  function step(makeOptimizer: (model: BertModel) => Optimizer): { padBefore: number[]; padAfter: number[]; tokenBefore: number[]; tokenAfter: number[]; padGrad: number[] } {
    const model = new BertModel(CONFIG, { seed: 2 });
    const words = model.embeddings.word_embeddings;
    words.weight.assign(randn(words.weight.shape, { seed: 3 }));
    const [padBefore, tokenBefore] = [rowOf(words, 0), rowOf(words, 5)];
    const optimizer = makeOptimizer(model);
    const upstream = randn([2, 4, CONFIG.hidden_size], { seed: 4 });
    const loss = tidy(() => sum(mul(model.forward(ids(), { attentionMask: attentionMask() }), upstream)));
    backward(loss);
    const width = CONFIG.hidden_size;
    const padGrad = Array.from(words.weight.grad!.dataSync().subarray(0, width));
    optimizer.step();
    return { padBefore, padAfter: rowOf(words, 0), tokenBefore, tokenAfter: rowOf(words, 5), padGrad };
  }

  const optimizers: [string, (model: BertModel) => Optimizer][] = [
    ["SGD with momentum", (model) => new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 })],
    ["AdamW with weight decay 0", (model) => new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0 })],
  ];

  it.each(optimizers)("%s leaves the pad row unchanged and moves the tokens' rows", (_, makeOptimizer) => {
    const { padBefore, padAfter, tokenBefore, tokenAfter, padGrad } = step(makeOptimizer);
    expect(padGrad.every((g) => g === 0)).toBe(true);
    expect(padBefore.some((v) => v !== 0)).toBe(true);
    expect(padAfter).toEqual(padBefore);
    expect(tokenAfter).not.toEqual(tokenBefore);
  });

  it("AdamW with weight decay still decays the pad row, as torch's (only its gradient is zero): p * (1 - lr * weightDecay)", () => {
    const { padBefore, padAfter } = step((model) => new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0.1 }));
    for (const [i, v] of padBefore.entries()) expect(padAfter[i]).toBeCloseTo(v * (1 - 1e-2 * 0.1), 6);
    expect(padAfter).not.toEqual(padBefore);
  });

  it("RoBERTa with SGD leaves the pad rows of its word and position embeddings unchanged (padding sits at position pad_token_id)", () => {
    const model = new RobertaModel(CONFIG, { seed: 2 });
    const { word_embeddings: words, position_embeddings: positions } = model.embeddings;
    for (const table of [words, positions]) table.weight.assign(randn(table.weight.shape, { seed: 3 }));
    const before = [rowOf(words, 1), rowOf(positions, 1), rowOf(positions, 2)];
    const optimizer = new SGD(model.parameters(), { lr: 0.1 });
    const upstream = randn([2, 4, CONFIG.hidden_size], { seed: 4 });
    const paddedIds = tensor([5, 9, 12, 7, 3, 8, 1, 1], [2, 4], "int32");
    backward(tidy(() => sum(mul(model.forward(paddedIds, { attentionMask: attentionMask() }), upstream))));
    optimizer.step();
    expect(rowOf(words, 1)).toEqual(before[0]);
    expect(rowOf(positions, 1)).toEqual(before[1]);
    expect(rowOf(positions, 2)).not.toEqual(before[2]);
  });
});
