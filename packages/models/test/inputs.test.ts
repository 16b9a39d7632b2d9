import { cast, DTypeError, engine, IndexError, memory, randint, reshape, ShapeError, slice, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import { loadSafetensors } from "@blocksparse/format/node";
import { BertModel, ConfigError, GPT2Cache, GPT2LMHeadModel, type GenerateOptions, loadCheckpointTensors, RobertaModel } from "@blocksparse/models";
import { fromPretrained, loadCheckpoint, readConfig } from "@blocksparse/models/node";
import { describe, expect, it, vi } from "vitest";
import { fixtures, leftBehind, relativeError } from "./helpers";

/** Whether every value is finite. */
const finite = (t: Tensor) => t.dataSync().every(Number.isFinite);

describe("inputs nobody tuned for", () => {
  for (const dtype of ["bfloat16", "float16"] as const) {
    it(`a fully masked row attends to every position, as in float32, without NaN (${dtype})`, async () => {
      const model = (await fromPretrained(fixtures("bert"), { dtype })) as BertModel;
      const ids = randint(3, 96, [2, 5], { seed: 61 });
      const mask = tensor([0, 0, 0, 0, 0, 1, 1, 1, 0, 0], [2, 5], "int32");
      const masked = model.forward(ids, { attentionMask: mask });
      expect(finite(masked)).toBe(true);
      // A row with no position to attend to weighs them all alike (Hugging Face's finfo(dtype).min mask): no mask at all.
      const firstRow = (t: Tensor) => tidy(() => cast(slice(t, [0, 0, 0], [1, 5, 32]), "float32"));
      expect(relativeError(firstRow(masked), firstRow(model.forward(ids)))).toBeLessThanOrEqual(2e-2);
    });
  }

  it("an encoder refuses inputs it would ignore: a mask tensor in the inputs' place, snake_case names", async () => {
    const model = (await fromPretrained(fixtures("bert"))) as BertModel;
    const ids = randint(3, 96, [1, 4], { seed: 62 });
    const mask = tensor([1, 1, 0, 0], [1, 4], "int32");
    expect(() => model.forward(ids, mask as never)).toThrow(ValueError);
    expect(() => model.forward(ids, mask as never)).toThrow(/BertModel: options must be an object, got a Tensor/);
    expect(() => model.encode(ids, { attention_mask: mask } as never)).toThrow(/unknown option 'attention_mask' \(did you mean attentionMask\?\)/);
    expect(() => model.encode(ids, { token_type_ids: mask } as never)).toThrow(/did you mean tokenTypeIds\?/);
    // null inputs are none.
    expect(model.forward(ids, null as never).toArray()).toEqual(model.forward(ids).toArray());
    const gpt2 = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    expect(() => gpt2.generate(ids, mask as unknown as GenerateOptions)).toThrow(/generate: options must be an object, got a Tensor/);
  });

  it("an encoder's attentionMask holding other than 0 and 1 is a ValueError naming it, not a token attended to", async () => {
    const model = (await fromPretrained(fixtures("bert"))) as BertModel;
    const ids = randint(3, 96, [1, 4], { seed: 63 });
    for (const [flags, dtype, bad] of [[[1, 1, 2, 0], "int32", 2], [[1, 1, 0.5, 0], "float32", 0.5], [[1, -1, 1, 0], "int32", -1]] as const) {
      const attentionMask = tensor([...flags], [1, 4], dtype);
      expect(leftBehind(() => model.forward(ids, { attentionMask }))).toBe(0);
      expect(() => model.encode(ids, { attentionMask })).toThrow(ValueError);
      expect(() => model.encode(ids, { attentionMask })).toThrow(`BertModel: attentionMask holds ${bad}, expected only 0 (padding) and 1 (token)`);
    }
  });

  it("a dropout probability of 1 in a config is a ConfigError naming the field, and nothing is left allocated", async () => {
    const gpt2 = await readConfig(fixtures("gpt2"));
    const bert = await readConfig(fixtures("bert"));
    for (const field of ["resid_pdrop", "embd_pdrop", "attn_pdrop"]) {
      expect(() => new GPT2LMHeadModel({ ...gpt2, [field]: 1 })).toThrow(new RegExp(`${field}: expected a probability in \\[0, 1\\)`));
      expect(leftBehind(() => new GPT2LMHeadModel({ ...gpt2, [field]: 1 }))).toBe(0);
    }
    for (const field of ["hidden_dropout_prob", "attention_probs_dropout_prob"]) {
      expect(() => new BertModel({ ...bert, [field]: 1 })).toThrow(ConfigError);
      expect(leftBehind(() => new BertModel({ ...bert, [field]: 1 }))).toBe(0);
    }
  });

  it("RoBERTa refuses a pad_token_id that leaves no position, when it is built", async () => {
    const config = await readConfig(fixtures("roberta"));
    expect(() => new RobertaModel({ ...config, pad_token_id: 40 })).toThrow(ConfigError);
    expect(() => new RobertaModel({ ...config, pad_token_id: 33 })).toThrow(/pad_token_id=33 leaves no position of max_position_embeddings=34/);
    expect(leftBehind(() => new RobertaModel({ ...config, pad_token_id: 40 }))).toBe(0);
    // The last pad_token_id that leaves one.
    const one = new RobertaModel({ ...config, pad_token_id: 32 }, { seed: 1 });
    expect(one.forward(tensor([5], [1, 1], "int32")).shape).toEqual([1, 1, 32]);
  });

  it("RoBERTa refuses pad_token_id: null with a ConfigError naming the field, rather than guessing a padding index", async () => {
    const config = await readConfig(fixtures("roberta"));
    expect(() => new RobertaModel({ ...config, pad_token_id: null })).toThrow(ConfigError);
    expect(() => new RobertaModel({ ...config, pad_token_id: null })).toThrow(/RobertaModel: pad_token_id=null leaves no position/);
    expect(leftBehind(() => new RobertaModel({ ...config, pad_token_id: null }))).toBe(0);
    // BERT reads no padding index: null is fine there.
    expect(new BertModel({ ...(await readConfig(fixtures("bert"))), pad_token_id: null }, { seed: 1 }).config.pad_token_id).toBeNull();
  });

  it("RoBERTa's positions are padding_idx + cumsum(mask) * mask, mask = (ids != padding_idx)", async () => {
    class Positions extends RobertaModel {
      of(ids: Tensor): Int32Array {
        return this.positionIds(ids);
      }
    }
    const model = new Positions(await readConfig(fixtures("roberta")), { seed: 2 });
    const ids = tensor([1, 1, 5, 7, 9, 5, 1, 8, 4, 1, 1, 1, 2, 3, 1, 1, 1, 1, 1, 6], [4, 5], "int32");
    const flat = ids.toArray();
    const want = [0, 1, 2, 3].flatMap((b) => {
      let count = 0;
      return flat.slice(b * 5, b * 5 + 5).map((id) => (id === 1 ? 1 : 1 + ++count));
    });
    expect(Array.from(model.of(ids))).toEqual(want);
  });

  it("model seeds that are not integers and null options are named or taken as the defaults", async () => {
    const gpt2 = await readConfig(fixtures("gpt2"));
    expect(() => new GPT2LMHeadModel(gpt2, { seed: 1.5 })).toThrow(ValueError);
    expect(() => new GPT2LMHeadModel(gpt2, { seed: 1.5 })).toThrow(/GPT2LMHeadModel: seed must be an integer, got 1.5/);
    expect(() => new BertModel({ num_hidden_layers: 1 }, { seed: "0" as never })).toThrow(/BertModel: seed must be an integer, got "0"/);
    const model = new GPT2LMHeadModel(gpt2, null as never);
    const ids = randint(0, 96, [1, 6], { seed: 63 });
    expect(model.loss(ids, ids, null as never).item()).toBeCloseTo(model.loss(ids, ids).item(), 6);
    const content = await loadSafetensors(fixtures("gpt2/model.safetensors"));
    expect(loadCheckpointTensors(model, content.tensors, null as never).missingKeys).toEqual([]);
    const loaded = await fromPretrained(fixtures("gpt2"), null as never);
    expect(loaded.forward(ids).toArray()).toEqual(model.forward(ids).toArray());
  });

  it("generate refuses an end token outside the vocabulary (it could never end a sequence)", async () => {
    const model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const ids = randint(0, 96, [1, 3], { seed: 64 });
    expect(() => model.generate(ids, { maxNewTokens: 2, eosTokenId: 96 })).toThrow(ValueError);
    expect(() => model.generate(ids, { maxNewTokens: 2, eosTokenId: 50256 })).toThrow(/eosTokenId 50256 is outside the vocabulary of 96 tokens/);
    expect(model.generate(ids, { maxNewTokens: 2, eosTokenId: 95 }).shape[1]).toBeLessThanOrEqual(5);
    // maxNewTokens may reach the model's positions exactly.
    expect(model.generate(reshape(ids, [3]), { maxNewTokens: 29 }).shape).toEqual([32]);
  });

  it("generate refuses prompt ids outside the vocabulary, naming the token (a GPU's gather reads zeros for them)", async () => {
    const model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const cases: [number[], RegExp][] = [
      [[5, 96, 7], /generate: inputIds' token 96 is outside the vocabulary of 96 tokens/],
      [[5, 50256, 7], /inputIds' token 50256 is outside the vocabulary/],
      [[5, -1, 7], /generate: inputIds' token must be an integer >= 0, got -1/],
    ];
    for (const [values, message] of cases) {
      const ids = tensor(values, [1, 3], "int32");
      const mask = tensor([1, 1, 1], [1, 3], "int32");
      expect(() => model.generate(ids, { maxNewTokens: 2 })).toThrow(ValueError);
      expect(() => model.generate(ids, { maxNewTokens: 2 })).toThrow(message);
      expect(() => model.generate(ids, { maxNewTokens: 0, attentionMask: mask })).toThrow(message);
      expect(leftBehind(() => model.generate(ids, { maxNewTokens: 2 }))).toBe(0);
      for (const t of [ids, mask]) t.dispose();
    }
  });

  it("a forward's token id outside the vocabulary is an IndexError naming inputIds, the id and the vocabulary, before any kernel runs", async () => {
    const gpt2 = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const bert = (await fromPretrained(fixtures("bert"))) as BertModel;
    const roberta = (await fromPretrained(fixtures("roberta"))) as RobertaModel;
    const calls: [string, number, (ids: Tensor) => unknown][] = [
      ["GPT2Model\\(transformer\\)", 96, (ids) => gpt2.forward(ids)],
      ["GPT2LMHeadModel\\.loss", 96, (ids) => gpt2.loss(ids, ids)],
      ["GPT2Model\\(transformer\\)", 96, (ids) => gpt2.transformer.forward(ids, new GPT2Cache(2))],
      ["BertModel", bert.config.vocab_size, (ids) => bert.forward(ids)],
      ["RobertaModel", roberta.config.vocab_size, (ids) => roberta.encode(ids)],
    ];
    const runKernel = vi.spyOn(engine, "runKernel");
    try {
      for (const [label, vocab, call] of calls) {
        for (const bad of [vocab, vocab + 1000, -1]) {
          const ids = tensor([5, bad, 7], [1, 3], "int32");
          runKernel.mockClear();
          expect(() => call(ids)).toThrow(IndexError);
          expect(() => call(ids)).toThrow(new RegExp(`^${label}: inputIds holds ${bad}, outside the vocabulary of ${vocab} tokens$`));
          expect(runKernel).not.toHaveBeenCalled();
          expect(leftBehind(() => call(ids))).toBe(0);
          ids.dispose();
        }
      }
    } finally {
      runKernel.mockRestore();
    }
    // The last id of the vocabulary is a token.
    expect(gpt2.forward(tensor([95], [1, 1], "int32")).shape).toEqual([1, 1, 96]);
  });

  it("a BERT token type outside type_vocab_size is an IndexError naming tokenTypeIds", async () => {
    const bert = (await fromPretrained(fixtures("bert"))) as BertModel;
    const ids = tensor([5, 9, 2], [1, 3], "int32");
    const types = bert.config.type_vocab_size;
    for (const bad of [types, -1]) {
      const tokenTypeIds = tensor([0, bad, 1], [1, 3], "int32");
      expect(() => bert.forward(ids, { tokenTypeIds })).toThrow(IndexError);
      expect(() => bert.forward(ids, { tokenTypeIds })).toThrow(`BertModel: tokenTypeIds holds ${bad}, outside the vocabulary of ${types} token types`);
      expect(leftBehind(() => bert.forward(ids, { tokenTypeIds }))).toBe(0);
    }
  });

  it("checkpoint loading's strict is true or false: the string \"false\" would have loaded strictly", async () => {
    const model = new GPT2LMHeadModel(await readConfig(fixtures("gpt2")), { seed: 1 });
    const content = await loadSafetensors(fixtures("gpt2/model.safetensors"));
    expect(() => loadCheckpointTensors(model, content.tensors, { strict: "false" } as never)).toThrow(ValueError);
    expect(() => loadCheckpointTensors(model, content.tensors, { strict: 0 } as never)).toThrow('loadCheckpoint: strict must be true or false, got 0');
    await expect(loadCheckpoint(model, fixtures("gpt2"), { strict: "no" } as never)).rejects.toThrow('loadCheckpoint: strict must be true or false, got "no"');
    await expect(fromPretrained(fixtures("gpt2"), { strict: "false" } as never)).rejects.toThrow('fromPretrained: strict must be true or false, got "false"');
    // null is the default (strict), as for the other options.
    expect(loadCheckpointTensors(model, content.tensors, { strict: null } as never).missingKeys).toEqual([]);
  });

  it("ids given as [T] leave no tensor behind: the trunk's forward, loss and generate, with a mask and a cache", async () => {
    const model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const ids = tensor([3, 1, 4, 1], [4], "int32");
    const mask = tensor([0, 1, 1, 1], [4], "int32");
    const short = tensor([1, 1], [2], "int32");
    const before = memory().numTensors;
    model.transformer.forward(ids).dispose();
    model.transformer.forward(ids, { attentionMask: mask }).dispose();
    model.loss(ids, ids).dispose();
    model.generate(ids, { maxNewTokens: 2 }).dispose();
    model.generate(ids, { maxNewTokens: 2, attentionMask: mask, temperature: 1 }).dispose();
    model.generate(ids, { maxNewTokens: 0 }).dispose();
    model.generate(ids, { maxNewTokens: 2, staticCache: true }).dispose();
    expect(memory().numTensors).toBe(before);
    // Refused inputs leave nothing either.
    expect(leftBehind(() => model.transformer.forward(ids, { attentionMask: short }))).toBe(0);
    expect(leftBehind(() => model.loss(ids, ids, { attentionMask: short }))).toBe(0);
    expect(leftBehind(() => model.generate(ids, { maxNewTokens: 30 }))).toBe(0);
    for (const t of [ids, mask, short]) t.dispose();
  });

  it("an encoder takes null inputs as absent (transformers' None), and a mask and token types of [T] for ids of [T]", async () => {
    const model = (await fromPretrained(fixtures("bert"))) as BertModel;
    const ids = tensor([5, 9, 2, 7], [4], "int32");
    const mask = tensor([1, 1, 1, 0], [4], "int32");
    const types = tensor([0, 0, 1, 1], [4], "int32");
    const plain = model.forward(ids).toArray();
    expect(model.forward(ids, { attentionMask: null, tokenTypeIds: null }).toArray()).toEqual(plain);
    const batched = model.forward(reshape(ids, [1, 4]), { attentionMask: reshape(mask, [1, 4]), tokenTypeIds: reshape(types, [1, 4]) }).toArray();
    expect(model.forward(ids, { attentionMask: mask, tokenTypeIds: types }).toArray()).toEqual(batched);
    const before = memory().numTensors;
    const { lastHiddenState, poolerOutput } = model.encode(ids, { attentionMask: mask, tokenTypeIds: types });
    for (const t of [lastHiddenState, poolerOutput]) t.dispose();
    expect(memory().numTensors).toBe(before);
    // What is not a Tensor of the ids' shape is named.
    expect(() => model.forward(ids, { attentionMask: [1, 1, 1, 0] as never })).toThrow(DTypeError);
    expect(() => model.forward(ids, { attentionMask: [1, 1, 1, 0] as never })).toThrow(/BertModel: attentionMask must be a Tensor, got an array/);
    expect(() => model.forward(ids, { tokenTypeIds: tensor([0, 0], [2], "int32") })).toThrow(ShapeError);
    expect(() => model.forward(ids, { tokenTypeIds: tensor([0, 0], [2], "int32") })).toThrow(/tokenTypeIds has shape \[2\], expected \[4\] like the token ids/);
    expect(() => model.forward(ids, { tokenTypeIds: tensor([0, 0, 1, 1], [4], "float32") })).toThrow(/tokenTypeIds has dtype float32, expected int32/);
  });

  it("generate takes a null eosTokenId and seed (config.json's eos_token_id: null) as none and the default", async () => {
    const model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const ids = randint(0, 96, [2, 3], { seed: 65 });
    expect(model.generate(ids, { maxNewTokens: 3, eosTokenId: null }).toArray()).toEqual(model.generate(ids, { maxNewTokens: 3 }).toArray());
    const sampled = { maxNewTokens: 3, temperature: 1 };
    expect(model.generate(ids, { ...sampled, seed: null }).toArray()).toEqual(model.generate(ids, sampled).toArray());
  });

  it("token ids that are not a Tensor (null, a plain array as in transformers' lists) are a DTypeError naming them, nothing left allocated", async () => {
    const gpt2 = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const bert = (await fromPretrained(fixtures("bert"))) as BertModel;
    const calls: [string, (ids: never) => unknown][] = [
      ["GPT2Model\\(transformer\\)", (ids) => gpt2.forward(ids)],
      ["GPT2LMHeadModel.loss", (ids) => gpt2.loss(ids, ids)],
      ["GPT2LMHeadModel.generate", (ids) => gpt2.generate(ids)],
      ["BertModel", (ids) => bert.forward(ids)],
    ];
    for (const [label, call] of calls) {
      for (const [ids, got] of [[null, "null"], [undefined, "undefined"], [[[15, 40, 3]], "an array"]] as const) {
        expect(() => call(ids as never)).toThrow(DTypeError);
        expect(() => call(ids as never)).toThrow(new RegExp(`${label}: inputIds must be an int32 Tensor, got ${got}`));
        expect(leftBehind(() => call(ids as never))).toBe(0);
      }
    }
    // A Tensor of another dtype is still named by its dtype.
    expect(() => gpt2.forward(tensor([1, 2], [1, 2], "float32"))).toThrow(/inputIds has dtype float32, expected int32/);
  });

  it("BertModel refuses a RoBERTa config.json and RobertaModel a BERT one (the checkpoint would load, with the other's positions)", async () => {
    const roberta = await readConfig(fixtures("roberta"));
    const bert = await readConfig(fixtures("bert"));
    expect(() => new BertModel(roberta)).toThrow(ConfigError);
    expect(() => new BertModel(roberta)).toThrow(/BertModel: config.json's model_type is "roberta", use RobertaModel/);
    expect(() => new RobertaModel(bert)).toThrow(/RobertaModel: config.json's model_type is "bert", use BertModel/);
    expect(leftBehind(() => new BertModel(roberta))).toBe(0);
    // Without model_type, each builds its own; fromPretrained still picks the class config.json names.
    const { model_type: _, ...untyped } = roberta;
    expect(new BertModel(untyped, { seed: 1 }).config.model_type).toBeUndefined();
    expect(new RobertaModel(roberta, { seed: 1 }).config.model_type).toBe("roberta");
    expect(await fromPretrained(fixtures("roberta"))).toBeInstanceOf(RobertaModel);
  });

  it("model constructors, fromPretrained and loadCheckpoint refuse options they would ignore (torch_dtype loaded float32)", async () => {
    const config = await readConfig(fixtures("gpt2"));
    const refused = (run: () => unknown, message: RegExp) => {
      expect(run).toThrow(ValueError);
      expect(run).toThrow(message);
    };
    refused(() => new GPT2LMHeadModel(config, { dtype: "bfloat16" } as never), /GPT2LMHeadModel: unknown option 'dtype' \(fromPretrained takes dtype; a model built by hand is cast with model.to\(dtype\)\)/);
    refused(() => new BertModel({}, { sed: 1 } as never), /BertModel: unknown option 'sed'; the options are seed/);
    await expect(fromPretrained(fixtures("gpt2"), { torch_dtype: "bfloat16" } as never)).rejects.toThrow(/fromPretrained: unknown option 'torch_dtype' \(did you mean dtype\?\)/);
    await expect(fromPretrained(fixtures("gpt2"), { strict: true, local_files_only: true } as never)).rejects.toThrow(ValueError);
    const model = new GPT2LMHeadModel(config, { seed: 1 });
    await expect(loadCheckpoint(model, fixtures("gpt2"), { torch_dtype: "float16" } as never)).rejects.toThrow(/loadCheckpoint: unknown option 'torch_dtype'/);
    const content = await loadSafetensors(fixtures("gpt2/model.safetensors"));
    refused(() => loadCheckpointTensors(model, content.tensors, { Strict: false } as never), /loadCheckpoint: unknown option 'Strict'; the options are strict/);
    // The options they know still work.
    const cast16 = (await fromPretrained(fixtures("gpt2"), { dtype: "bfloat16", strict: true })) as GPT2LMHeadModel;
    expect(cast16.transformer.wte.weight.value.dtype).toBe("bfloat16");
  });

  it("fromPretrained takes dtype: null (transformers' torch_dtype=None) as the default, float32, as null is every other option's default", async () => {
    const model = (await fromPretrained(fixtures("gpt2"), { dtype: null })) as GPT2LMHeadModel;
    expect(model.transformer.wte.weight.value.dtype).toBe("float32");
  });
});
