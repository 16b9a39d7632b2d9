import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeStorage, memory, tensor, ValueError } from "@blocksparse/core";
import type { SafetensorsTensor } from "@blocksparse/format";
import { loadSafetensors, saveSafetensors } from "@blocksparse/format/node";
import {
  type BertLayer,
  BertModel,
  CheckpointError,
  ConfigError,
  type GPT2Block,
  GPT2LMHeadModel,
  GPT2Model,
  loadCheckpointTensors,
  parseGpt2Config,
  RobertaModel,
} from "@blocksparse/models";
import { fromPretrained, loadCheckpoint, readConfig } from "@blocksparse/models/node";
import { Linear, Sequential } from "@blocksparse/nn";
import { load, save } from "@blocksparse/nn/node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { fixtures, readReference, relativeError } from "./helpers";

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "models-checkpoint-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A copy of a fixture folder whose model.safetensors tensors went through `edit`. */
async function editedCopy(name: string, edit: (tensors: Map<string, SafetensorsTensor>) => void): Promise<string> {
  const dir = await mkdtemp(join(scratch, `${name}-`));
  await copyFile(fixtures(`${name}/config.json`), join(dir, "config.json"));
  const content = await loadSafetensors(fixtures(`${name}/model.safetensors`));
  edit(content.tensors);
  await saveSafetensors(join(dir, "model.safetensors"), content.tensors, content.metadata);
  return dir;
}

async function gpt2Config(): Promise<Record<string, unknown>> {
  return readConfig(fixtures("gpt2"));
}

/**
 * Live tensors plus those the finalizer has freed: a tensor an earlier test left undisposed may be collected while a
 * test runs, which lowers the live count alone (537 at once in a full run) and would hide or fake a leak.
 */
function heldTensors(): number {
  const { numTensors, numCollected } = memory();
  return numTensors + numCollected;
}

describe("loadCheckpoint", () => {
  it("accepts hub GPT-2 names (no 'transformer.' prefix, attn.bias buffers, a stored lm_head.weight) with the same logits", async () => {
    const dir = await editedCopy("gpt2", (tensors) => {
      for (const [key, t] of [...tensors]) {
        tensors.delete(key);
        tensors.set(key.replace(/^transformer\./, ""), t);
      }
      tensors.set("h.0.attn.bias", { dtype: "F32", shape: [1, 1, 32, 32], data: new Float32Array(32 * 32) });
      tensors.set("lm_head.weight", tensors.get("wte.weight")!);
    });
    const reference = await readReference("gpt2");
    const model = await fromPretrained(dir);
    expect(relativeError(model.forward(reference.get("input_ids")!), reference.get("logits")!)).toBeLessThanOrEqual(1e-4);
  });

  it("lists every missing, unexpected and mis-shaped key by its file name, and loads nothing", async () => {
    const dir = await editedCopy("gpt2", (tensors) => {
      tensors.delete("transformer.h.1.mlp.c_fc.bias");
      tensors.delete("transformer.ln_f.weight");
      tensors.set("transformer.h.9.attn.c_attn.weight", tensors.get("transformer.h.0.attn.c_attn.weight")!);
      tensors.set("transformer.h.0.attn.c_proj.weight", { dtype: "F32", shape: [32, 16], data: new Float32Array(512) });
    });
    const model = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 });
    const before = model.transformer.wte.weight.value.dataSync().slice();
    const error = await loadCheckpoint(model, dir).catch((e) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.missingKeys).toEqual(["transformer.ln_f.weight", "transformer.h.1.mlp.c_fc.bias"].sort((a, b) => keyOrder(model, a) - keyOrder(model, b)));
    expect(error.unexpectedKeys).toEqual(["transformer.h.9.attn.c_attn.weight"]);
    expect(error.mismatches).toEqual([
      { key: "transformer.h.0.attn.c_proj.weight", expected: "[32, 32] F32, F16, BF16 or F64 (Conv1D layout [in, out])", got: "[32, 16] F32" },
    ]);
    expect(error.message).toMatch(/missing keys: .*transformer\.ln_f\.weight/);
    expect(model.transformer.wte.weight.value.dataSync()).toEqual(before);
  });

  it("with strict: false, loads what fits and reports the rest", async () => {
    const dir = await editedCopy("bert", (tensors) => {
      tensors.delete("pooler.dense.bias");
      tensors.set("cls.predictions.bias", { dtype: "F32", shape: [96], data: new Float32Array(96) });
    });
    const model = new BertModel(await readConfig(fixtures("bert")), { seed: 1 });
    const result = await loadCheckpoint(model, dir, { strict: false });
    expect(result.missingKeys).toEqual(["pooler.dense.bias"]);
    expect(result.unexpectedKeys).toEqual(["cls.predictions.bias"]);
  });

  it("loads hub BERT / RoBERTa files with pre-training heads (cls.*, lm_head.*) and no pooler, reporting both, as transformers does", async () => {
    const reference = await readReference("bert");
    const dir = await editedCopy("bert", (tensors) => {
      for (const [key, t] of [...tensors]) {
        tensors.delete(key);
        tensors.set(`bert.${key}`, t);
      }
      tensors.set("cls.predictions.bias", { dtype: "F32", shape: [96], data: new Float32Array(96) });
      tensors.set("cls.seq_relationship.weight", { dtype: "F32", shape: [2, 32], data: new Float32Array(64) });
      tensors.set("lm_head.dense.weight", { dtype: "F32", shape: [32, 32], data: new Float32Array(1024) });
    });
    const ids = reference.get("input_ids")!;
    const inputs = { attentionMask: reference.get("attention_mask")!, tokenTypeIds: reference.get("token_type_ids")! };
    const noPooler = await editedCopy("bert", (tensors) => {
      tensors.delete("pooler.dense.weight");
      tensors.delete("pooler.dense.bias");
    });
    const result = await loadCheckpoint(new BertModel(await readConfig(fixtures("bert")), { seed: 1 }), noPooler);
    expect(result.missingKeys).toEqual(["pooler.dense.weight", "pooler.dense.bias"]);
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const model = await fromPretrained(dir);
      expect(relativeError((model as BertModel).forward(ids, inputs), reference.get("last_hidden_state")!)).toBeLessThanOrEqual(1e-4);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/holds cls\.predictions\.bias, cls\.seq_relationship\.weight, lm_head\.dense\.weight, .*they are not loaded/));
      const loaded = (await fromPretrained(noPooler)) as BertModel;
      expect(relativeError(loaded.forward(ids, inputs), reference.get("last_hidden_state")!)).toBeLessThanOrEqual(1e-4);
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/does not hold pooler\.dense\.weight, pooler\.dense\.bias; they are newly initialized/));
      // The pooler as transformers initializes a missing layer: N(0, initializer_range) weights, a zero bias; the
      // loaded weights untouched.
      const pooler = loaded.pooler.dense;
      const weights = pooler.weight.value.toArray().flat() as number[];
      const std = Math.sqrt(weights.reduce((a, w) => a + w * w, 0) / weights.length);
      expect(std).toBeGreaterThan(0.5 * loaded.config.initializer_range);
      expect(std).toBeLessThan(1.5 * loaded.config.initializer_range);
      expect(Array.from(pooler.bias!.value.dataSync()).every((x) => x === 0)).toBe(true);
    } finally {
      warn.mockRestore();
    }
    // A key of no transformers head, or a missing layer, is still refused.
    const head = await editedCopy("bert", (tensors) => tensors.set("classifier.weights", { dtype: "F32", shape: [2, 32], data: new Float32Array(64) }));
    await expect(fromPretrained(head)).rejects.toThrow(/unexpected keys: classifier\.weights/);
    const layer = await editedCopy("bert", (tensors) => tensors.delete("encoder.layer.1.output.dense.bias"));
    await expect(fromPretrained(layer)).rejects.toThrow(/missing keys: encoder\.layer\.1\.output\.dense\.bias/);
  });

  it("loads the encoder of a fine-tune's file (classifier.*, qa_outputs.*) under strict loading, reporting the head, as transformers does", async () => {
    const head = (key: string, shape: number[]): [string, SafetensorsTensor] => [key, { dtype: "F32", shape, data: new Float32Array(shape[0] * (shape[1] ?? 1)) }];
    const cases: [string, (key: string) => string, [string, SafetensorsTensor][]][] = [
      // BertForSequenceClassification / ForTokenClassification / ForMultipleChoice, and ForQuestionAnswering.
      ["bert", (key) => `bert.${key}`, [head("classifier.weight", [2, 32]), head("classifier.bias", [2]), head("qa_outputs.weight", [2, 32]), head("qa_outputs.bias", [2])]],
      // RobertaForSequenceClassification's two-layer head.
      ["roberta", (key) => `roberta.${key}`, [head("classifier.dense.weight", [32, 32]), head("classifier.dense.bias", [32]), head("classifier.out_proj.weight", [3, 32]), head("classifier.out_proj.bias", [3])]],
    ];
    for (const [name, rename, heads] of cases) {
      const dir = await editedCopy(name, (tensors) => {
        for (const [key, t] of [...tensors]) {
          tensors.delete(key);
          tensors.set(rename(key), t);
        }
        for (const [key, t] of heads) tensors.set(key, t);
      });
      const model = name === "bert" ? new BertModel(await readConfig(dir), { seed: 1 }) : new RobertaModel(await readConfig(dir), { seed: 1 });
      const result = await loadCheckpoint(model, dir);
      expect(result.missingKeys).toEqual([]);
      expect(result.unexpectedKeys.sort()).toEqual(heads.map(([key]) => key).sort());
      const reference = await readReference(name);
      const inputs = { attentionMask: reference.get("attention_mask")!, tokenTypeIds: reference.get("token_type_ids") };
      expect(relativeError(model.forward(reference.get("input_ids")!, inputs), reference.get("last_hidden_state")!)).toBeLessThanOrEqual(1e-4);
      const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
      try {
        await fromPretrained(dir);
        expect(warn).toHaveBeenCalledWith(expect.stringMatching(new RegExp(`holds .*${heads[0][0].replace(/\./g, "\\.")}.*; they are not loaded`)));
      } finally {
        warn.mockRestore();
      }
    }
    // GPT2ForSequenceClassification's score (tied lm_head absent, as that class saves no head of its own).
    const gpt2 = await editedCopy("gpt2", (tensors) => tensors.set(...head("score.weight", [2, 32])));
    const reference = await readReference("gpt2");
    const model = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 });
    expect((await loadCheckpoint(model, gpt2)).unexpectedKeys).toEqual(["score.weight"]);
    expect(relativeError(model.forward(reference.get("input_ids")!), reference.get("logits")!)).toBeLessThanOrEqual(1e-4);
  });

  it("still refuses under strict loading a key of no transformers head: a typo, a prefixed head, another architecture's weights", async () => {
    const layer = (key: string): [string, SafetensorsTensor] => [key, { dtype: "F32", shape: [2, 32], data: new Float32Array(64) }];
    for (const [key, t] of [layer("classifier.weight.orig"), layer("bert.classifier.weight"), layer("classifer.weight"), layer("transformer.h.0.attn.c_attn.weight")]) {
      const dir = await editedCopy("bert", (tensors) => {
        tensors.set(key, t);
        tensors.set("classifier.weight", t);
      });
      const error = await loadCheckpoint(new BertModel(await readConfig(dir), { seed: 1 }), dir).catch((e) => e);
      expect(error).toBeInstanceOf(CheckpointError);
      expect(error.unexpectedKeys).toContain(key);
    }
  });

  it("refuses non-float tensors as mismatches", async () => {
    const dir = await editedCopy("bert", (tensors) => {
      tensors.set("pooler.dense.bias", { dtype: "I32", shape: [32], data: new Int32Array(32) });
    });
    const model = new BertModel(await readConfig(fixtures("bert")), { seed: 1 });
    await expect(loadCheckpoint(model, dir)).rejects.toThrow(/pooler\.dense\.bias: the checkpoint has \[32\] I32, the model expects \[32\] F32, F16, BF16 or F64/);
  });

  it("refuses a model that names no checkpoint keys (GPT-2's trunk, a Module of one's own) with a ValueError naming it, not a TypeError", async () => {
    const trunk = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 }).transformer;
    await expect(loadCheckpoint(trunk as never, fixtures("gpt2"))).rejects.toThrow(ValueError);
    await expect(loadCheckpoint(trunk as never, fixtures("gpt2"))).rejects.toThrow(/loadCheckpoint: model must be a GPT2LMHeadModel, BertModel or RobertaModel, got a GPT2Model \(no checkpointRules\); GPT-2's trunk loads as a GPT2LMHeadModel's transformer/);
    await expect(loadCheckpoint(null as never, fixtures("gpt2"))).rejects.toThrow(/loadCheckpoint: model must be .*got null/);
    const content = await loadSafetensors(fixtures("gpt2/model.safetensors"));
    expect(() => loadCheckpointTensors(new Sequential(new Linear(4, 4)) as never, content.tensors)).toThrow(ValueError);
    expect(() => loadCheckpointTensors(new Sequential(new Linear(4, 4)) as never, content.tensors)).toThrow(/got a Sequential/);
  });

  it("checks a sharded index against its shards", async () => {
    const dir = await mkdtemp(join(scratch, "sharded-"));
    for (const file of ["config.json", "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors"]) {
      await copyFile(fixtures(`gpt2-sharded/${file}`), join(dir, file));
    }
    const index = JSON.parse(await readFile(fixtures("gpt2-sharded/model.safetensors.index.json"), "utf8"));
    index.weight_map["transformer.ln_f.bias"] = "model-00001-of-00004.safetensors";
    await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    const model = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 });
    const error = await loadCheckpoint(model, dir).catch((e) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toContain("shard model-00004-of-00004.safetensors (named by model.safetensors.index.json) does not exist");
    expect(error.message).toContain("puts 'transformer.ln_f.bias' in model-00001-of-00004.safetensors, which does not hold it");
  });

  it("loads a file that stores the tied head as lm_head.weight without transformer.wte.weight (safetensors' save_model)", async () => {
    const dir = await editedCopy("gpt2", (tensors) => {
      tensors.set("lm_head.weight", tensors.get("transformer.wte.weight")!);
      tensors.delete("transformer.wte.weight");
    });
    const reference = await readReference("gpt2");
    const model = (await fromPretrained(dir)) as GPT2LMHeadModel;
    expect(model.lm_head.weight).toBe(model.transformer.wte.weight);
    expect(relativeError(model.forward(reference.get("input_ids")!), reference.get("logits")!)).toBeLessThanOrEqual(1e-4);
  });

  it("refuses a sharded checkpoint with a truncated shard before loading any shard", async () => {
    const dir = await mkdtemp(join(scratch, "truncated-shard-"));
    for (const file of await readdir(fixtures("gpt2-sharded"))) await copyFile(fixtures(`gpt2-sharded/${file}`), join(dir, file));
    const last = join(dir, "model-00004-of-00004.safetensors");
    await truncate(last, (await stat(last)).size - 4);
    const model = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 });
    const before = model.parameters().map((p) => p.value.dataSync().slice());
    const error = await loadCheckpoint(model, dir).catch((e) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/model-00004-of-00004\.safetensors: .*past the \d+-byte data buffer/);
    expect(model.parameters().map((p) => p.value.dataSync())).toEqual(before);
  });

  it("names a folder without a checkpoint and a truncated file", async () => {
    const empty = await mkdtemp(join(scratch, "empty-"));
    const model = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 });
    await expect(loadCheckpoint(model, empty)).rejects.toThrow(/holds neither model\.safetensors nor model\.safetensors\.index\.json/);
    const truncated = join(empty, "model.safetensors");
    await writeFile(truncated, (await readFile(fixtures("gpt2/model.safetensors"))).subarray(0, 100));
    await expect(loadCheckpoint(model, truncated)).rejects.toThrow(CheckpointError);
  });
  it("names a shard that is a directory (weight_map's \"..\" or a folder's name) with a CheckpointError, not the system's EISDIR", async () => {
    const dir = await mkdtemp(join(scratch, "shard-directory-"));
    await mkdir(join(dir, "shards"));
    const model = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 });
    for (const shard of ["..", "shards"]) {
      await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ weight_map: { "transformer.wte.weight": shard } }));
      const error = await loadCheckpoint(model, dir).catch((e) => e);
      expect(error).toBeInstanceOf(CheckpointError);
      expect(error.message).toContain(`${join(dir, shard)}: is a directory, not a safetensors file`);
    }
  });

  it("names a Git LFS pointer in a weight file's place and a folder holding only pytorch_model.bin", async () => {
    const dir = await mkdtemp(join(scratch, "lfs-"));
    await copyFile(fixtures("gpt2/config.json"), join(dir, "config.json"));
    const pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d5f2b6e6c5f1b0c0a1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c\nsize 548105171\n";
    await writeFile(join(dir, "model.safetensors"), pointer);
    const error = await fromPretrained(dir).catch((e) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.message).toMatch(/model\.safetensors: is a Git LFS pointer, not the weights \(fetch them with `git lfs pull`\)/);
    await rm(join(dir, "model.safetensors"));
    await writeFile(join(dir, "pytorch_model.bin"), "");
    await expect(fromPretrained(dir)).rejects.toThrow(/holds neither model\.safetensors nor model\.safetensors\.index\.json \(pytorch_model\.bin is not read: convert it to model\.safetensors\)/);
  });
});

describe("configs", () => {
  it("refuses a config that does not describe the model, naming the field", async () => {
    const config = { ...(await gpt2Config()), n_head: 5 };
    expect(() => new GPT2LMHeadModel(config)).toThrow(/n_head=5 does not divide n_embd=32/);
    expect(() => new GPT2LMHeadModel({ ...config, n_head: 4, activation_function: "swish" })).toThrow(ConfigError);
    expect(() => new GPT2LMHeadModel({ ...config, n_head: 4, activation_function: "swish" })).toThrow(/activation_function: expected one of "gelu", "gelu_new"/);
    expect(() => new GPT2LMHeadModel({ ...config, n_head: 4, resid_pdrop: 2 })).toThrow(/resid_pdrop: expected a probability in \[0, 1\)/);
    expect(() => new BertModel({ position_embedding_type: "relative_key" })).toThrow(/position_embedding_type: expected "absolute"/);
    expect(() => new BertModel({ num_hidden_layers: 0 })).toThrow(/num_hidden_layers: expected a positive integer/);
  });

  it("reads GPT2Config's aliases (hidden_size, max_position_embeddings, num_attention_heads, num_hidden_layers) as transformers does, not as fields to ignore", async () => {
    const aliased = { vocab_size: 64, hidden_size: 32, max_position_embeddings: 16, num_attention_heads: 4, num_hidden_layers: 2 };
    const { n_embd, n_positions, n_head, n_layer } = new GPT2LMHeadModel(aliased, { seed: 1 }).config;
    expect({ n_embd, n_positions, n_head, n_layer }).toEqual({ n_embd: 32, n_positions: 16, n_head: 4, n_layer: 2 });
    // An alias that agrees with its field is the field; one that disagrees, or is no size, is a ConfigError naming it.
    expect(parseGpt2Config({ hidden_size: 32, n_embd: 32, n_head: 4 }).n_embd).toBe(32);
    expect(() => parseGpt2Config({ hidden_size: 64, n_embd: 32 })).toThrow(ConfigError);
    expect(() => parseGpt2Config({ hidden_size: 64, n_embd: 32 })).toThrow(/hidden_size=64 and n_embd=32 disagree \(transformers reads hidden_size as n_embd\)/);
    expect(() => parseGpt2Config({ num_hidden_layers: 0 })).toThrow(/n_layer \(given as num_hidden_layers\): expected a positive integer/);
  });

  it("builds GPT2Model alone from a config.json's contents, with or without seeds, and refuses seeds of another kind with a ValueError", async () => {
    const config = await gpt2Config();
    // As transformers' GPT2Model(config): no seeds draws them from core's global generator; a seed repeats the weights.
    expect(new GPT2Model(parseGpt2Config(config)).h.length).toBe(config.n_layer);
    const weights = (model: GPT2Model) => model.wte.weight.value.toArray();
    expect(weights(new GPT2Model(parseGpt2Config(config), 3))).toEqual(weights(new GPT2Model(parseGpt2Config(config), 3)));
    expect(() => new GPT2Model(parseGpt2Config(config), "3" as never)).toThrow(ValueError);
    expect(() => new GPT2Model(parseGpt2Config(config), "3" as never)).toThrow(/GPT2Model: nextSeed must be a function giving seeds, an integer seed or omitted, got "3"/);
    // The contents are checked and take their defaults (n_layer absent: transformers' 12 blocks, not none).
    const { n_layer: _, ...noLayers } = config;
    expect(new GPT2Model(noLayers as never, () => 1).h.length).toBe(12);
    expect(() => new GPT2Model({ ...config, n_head: 3 } as never, () => 1)).toThrow(/n_head=3 does not divide n_embd=32/);
  });

  it("takes gelu_fast (transformers' FastGELUActivation) as the tanh approximation gelu_new is", async () => {
    const config = { ...(await gpt2Config()), n_head: 4 };
    const ids = tensor([1, 5, 9, 2], [1, 4], "int32");
    const logits = (activation: string) => {
      const model = new GPT2LMHeadModel({ ...config, activation_function: activation }, { seed: 3 });
      model.eval();
      return Array.from(model.forward(ids).dataSync());
    };
    const fast = logits("gelu_fast");
    expect(fast).toEqual(logits("gelu_new"));
    expect(fast).not.toEqual(logits("gelu"));
  });

  it("fromPretrained refuses a config.json that is not an object and a dtype that is not a float dtype, as ConfigError / ValueError", async () => {
    const dir = await mkdtemp(join(scratch, "null-config-"));
    await writeFile(join(dir, "config.json"), "null");
    await expect(fromPretrained(dir)).rejects.toThrow(ConfigError);
    await expect(fromPretrained(dir)).rejects.toThrow(/config\.json holds null, expected a JSON object/);
    await expect(fromPretrained(fixtures("gpt2"), { dtype: "float64" as "float32" })).rejects.toThrow(ValueError);
    await expect(fromPretrained(fixtures("gpt2"), { dtype: "float64" as "float32" })).rejects.toThrow(/dtype must be one of float32, float16, bfloat16, got "float64"/);
  });

  it("fromPretrained names an unsupported model_type", async () => {
    const dir = await mkdtemp(join(scratch, "llama-"));
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "config.json"), JSON.stringify({ model_type: "llama" }));
    await expect(fromPretrained(dir)).rejects.toThrow(/model_type "llama"; supported: gpt2, bert, roberta/);
    // A name of Object.prototype is no builder.
    await writeFile(join(dir, "config.json"), JSON.stringify({ model_type: "toString" }));
    await expect(fromPretrained(dir)).rejects.toThrow(/model_type "toString"; supported: gpt2, bert, roberta/);
  });
});

describe("checkpoints transformers loads that differ from the fixtures", () => {
  it("loads an untied GPT-2 head (tie_word_embeddings: false) from lm_head.weight, and saves it back as its own tensor", async () => {
    const config = { ...(await gpt2Config()), tie_word_embeddings: false };
    const dir = await editedCopy("gpt2", (tensors) => {
      const wte = tensors.get("transformer.wte.weight")!;
      tensors.set("lm_head.weight", { dtype: "F32", shape: wte.shape, data: (wte.data as Float32Array).map((v) => -v) });
    });
    await writeFile(join(dir, "config.json"), JSON.stringify(config));
    const model = (await fromPretrained(dir)) as GPT2LMHeadModel;
    expect(model.lm_head.weight).not.toBe(model.transformer.wte.weight);
    const reference = await readReference("gpt2");
    const tiedLogits = reference.get("logits")!.dataSync();
    const logits = model.forward(reference.get("input_ids")!).dataSync();
    // The negated head negates the tied model's logits; the embedding is still the file's wte.
    expect(relativeError(tensor(Array.from(logits, (v) => -v), [logits.length]), tensor(Array.from(tiedLogits), [tiedLogits.length]))).toBeLessThanOrEqual(1e-4);

    const saved = join(dir, "saved.safetensors");
    await save(model, saved);
    expect((await loadSafetensors(saved)).tensors.get("lm_head.weight")!.data).toEqual(model.lm_head.weight.value.dataSync());
    const again = new GPT2LMHeadModel(config, { seed: 5 });
    expect(again.lm_head.weight).not.toBe(again.transformer.wte.weight);
    await load(again, saved);
    expect(again.lm_head.weight.value.dataSync()).toEqual(model.lm_head.weight.value.dataSync());
    expect(again.transformer.wte.weight.value.dataSync()).toEqual(model.transformer.wte.weight.value.dataSync());
  });

  it("refuses an untied GPT-2 checkpoint without lm_head.weight with a CheckpointError naming it (strict: false keeps the initial head)", async () => {
    const config = { ...(await gpt2Config()), tie_word_embeddings: false };
    const model = new GPT2LMHeadModel(config, { seed: 1 });
    const initial = model.lm_head.weight.value.dataSync().slice();
    const error = await loadCheckpoint(model, fixtures("gpt2")).catch((e) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect(error.missingKeys).toEqual(["lm_head.weight"]);
    expect(error.message).toMatch(/lm_head\.weight: config\.json sets tie_word_embeddings: false/);
    const result = await loadCheckpoint(model, fixtures("gpt2"), { strict: false });
    expect(result.missingKeys).toEqual(["lm_head.weight"]);
    expect(model.lm_head.weight.value.dataSync()).toEqual(initial);
    expect(() => new GPT2LMHeadModel({ ...config, tie_word_embeddings: "no" })).toThrow(/tie_word_embeddings: expected true or false/);
  });

  it("builds quick_gelu (x sigmoid(1.702 x)) and gelu_accurate (the tanh approximation) as float64 math gives them", async () => {
    const x = Array.from({ length: 97 }, (_, i) => -8 + i / 6);
    const quick = (v: number) => v / (1 + Math.exp(-1.702 * v));
    const accurate = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    const config = { ...(await gpt2Config()), n_head: 4 };
    for (const [name, want] of [["quick_gelu", quick], ["gelu_accurate", accurate]] as const) {
      const gpt2 = new GPT2LMHeadModel({ ...config, activation_function: name }, { seed: 1 });
      const bert = new BertModel({ ...(await readConfig(fixtures("bert"))), hidden_act: name }, { seed: 1 });
      const acts = [(gpt2.transformer.h.at(0) as GPT2Block).mlp.act, (bert.encoder.layer.at(0) as BertLayer).intermediate.intermediate_act_fn];
      for (const act of acts) {
        const got = act.forward(tensor(x, [x.length])).dataSync();
        const error = Math.max(...x.map((v, i) => Math.abs(got[i] - want(v)) / Math.max(1, Math.abs(want(v)))));
        expect(error, `${name} in ${act.constructor.name}`).toBeLessThanOrEqual(1e-6);
      }
    }
  });

  it("loads F64 tensors rounded to float32, and to the dtype asked for", async () => {
    const dir = await editedCopy("gpt2", (tensors) => {
      for (const [key, t] of tensors) tensors.set(key, { dtype: "F64", shape: t.shape, data: Float64Array.from(t.data as Float32Array) });
      const bias = tensors.get("transformer.ln_f.bias")!;
      (bias.data as Float64Array)[0] = 0.1;
    });
    const model = (await fromPretrained(dir)) as GPT2LMHeadModel;
    expect(model.transformer.ln_f.bias!.value.dtype).toBe("float32");
    expect(model.transformer.ln_f.bias!.value.dataSync()[0]).toBe(Math.fround(0.1));
    const fromF32 = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    expect(model.transformer.h.parameters().map((p) => Array.from(p.value.dataSync()))).toEqual(fromF32.transformer.h.parameters().map((p) => Array.from(p.value.dataSync())));
    const half = (await fromPretrained(dir, { dtype: "bfloat16" })) as GPT2LMHeadModel;
    expect(half.transformer.wte.weight.value.dtype).toBe("bfloat16");
  });

  it("fromPretrained takes the model type from architectures when config.json has no model_type", async () => {
    const cases = [
      ["gpt2", ["GPT2LMHeadModel"], GPT2LMHeadModel],
      ["bert", ["BertForMaskedLM"], BertModel],
      ["roberta", ["RobertaForMaskedLM"], RobertaModel],
    ] as const;
    for (const [name, architectures, kind] of cases) {
      const dir = await mkdtemp(join(scratch, `${name}-architectures-`));
      const { model_type: _, ...config } = await readConfig(fixtures(name));
      await writeFile(join(dir, "config.json"), JSON.stringify({ ...config, architectures }));
      await copyFile(fixtures(`${name}/model.safetensors`), join(dir, "model.safetensors"));
      const model = await fromPretrained(dir);
      expect(model.constructor).toBe(kind);
    }
    const dir = await mkdtemp(join(scratch, "no-model-type-"));
    const { model_type: _, ...config } = await gpt2Config();
    const refused = async (architectures: unknown) => {
      await writeFile(join(dir, "config.json"), JSON.stringify({ ...config, architectures }));
      return fromPretrained(dir).catch((e) => e);
    };
    const llama = await refused(["LlamaForCausalLM"]);
    expect(llama).toBeInstanceOf(ConfigError);
    expect(llama.message).toMatch(/has no model_type, and its architectures \["LlamaForCausalLM"\] say none: \["LlamaForCausalLM"\] is not a GPT-2, BERT or RoBERTa class/);
    expect((await refused(["GPT2LMHeadModel", "BertModel"])).message).toMatch(/more than one type \(gpt2, bert\)/);
    expect((await refused("GPT2LMHeadModel")).message).toMatch(/architectures must be a list of model class names/);
    expect((await refused(undefined)).message).toMatch(/has no model_type nor architectures; supported: gpt2, bert, roberta/);
    // The model class says which model it builds: neither field is needed there.
    expect(new GPT2LMHeadModel(config, { seed: 1 }).config.n_layer).toBe(2);
  });

  it("fills RoBERTa's own config defaults where config.json has none (pad_token_id 1, vocab_size 50265), not BERT's", async () => {
    const { pad_token_id: _, ...config } = await readConfig(fixtures("roberta"));
    const dir = await mkdtemp(join(scratch, "roberta-defaults-"));
    await writeFile(join(dir, "config.json"), JSON.stringify(config));
    await copyFile(fixtures("roberta/model.safetensors"), join(dir, "model.safetensors"));
    const model = (await fromPretrained(dir)) as RobertaModel;
    expect(model.config.pad_token_id).toBe(1);
    // Padding (id 1) sits at position 1 and the tokens count from 2, as transformers' RobertaConfig() gives them.
    const reference = await readReference("roberta");
    const inputs = { attentionMask: reference.get("attention_mask")!, tokenTypeIds: reference.get("token_type_ids")! };
    expect(relativeError(model.forward(reference.get("input_ids")!, inputs), reference.get("last_hidden_state")!)).toBeLessThanOrEqual(1e-4);
    const { vocab_size: __, ...noVocab } = config;
    expect(new RobertaModel(noVocab, { seed: 1 }).config.vocab_size).toBe(50265);
    // BERT keeps BertConfig's (of a config without RoBERTa's model_type, which BertModel refuses), and a value config.json gives is kept.
    const { model_type: ___, ...untyped } = noVocab;
    expect(new BertModel(untyped, { seed: 1 }).config).toMatchObject({ pad_token_id: 0, vocab_size: 30522 });
    expect(new RobertaModel({ ...noVocab, pad_token_id: 0, vocab_size: 64 }, { seed: 1 }).config).toMatchObject({ pad_token_id: 0, vocab_size: 64 });
  });

  it("takes model.safetensors when a folder also holds a sharded index, as transformers does", async () => {
    const dir = await editedCopy("gpt2", (tensors) => {
      (tensors.get("transformer.ln_f.bias")!.data as Float32Array).fill(7);
    });
    for (const file of await readdir(fixtures("gpt2-sharded"))) {
      if (file !== "config.json") await copyFile(fixtures(`gpt2-sharded/${file}`), join(dir, file));
    }
    const model = new GPT2LMHeadModel(await gpt2Config(), { seed: 1 });
    const { files } = await loadCheckpoint(model, dir);
    expect(files).toEqual([join(dir, "model.safetensors")]);
    expect(Array.from(model.transformer.ln_f.bias!.value.dataSync())).toEqual(new Array(32).fill(7));
  });
});

describe("memory", () => {
  it("a checkpoint fromPretrained refuses leaves none of the model's tensors allocated (missing keys, a shape, a missing shard)", async () => {
    const config = await gpt2Config();
    const deeper = await editedCopy("gpt2", () => {});
    await writeFile(join(deeper, "config.json"), JSON.stringify({ ...config, n_layer: 3 }));
    const shorter = await editedCopy("gpt2", () => {});
    await writeFile(join(shorter, "config.json"), JSON.stringify({ ...config, n_positions: 16 }));
    const sharded = await mkdtemp(join(scratch, "sharded-"));
    for (const file of await readdir(fixtures("gpt2-sharded"))) if (!file.startsWith("model-00004")) await copyFile(fixtures(`gpt2-sharded/${file}`), join(sharded, file));
    for (const [dir, message] of [
      [deeper, /missing keys: transformer\.h\.2\./],
      [shorter, /transformer\.wpe\.weight: the checkpoint has \[32, 32\] F32, the model expects \[16, 32\]/],
      [sharded, /shard model-00004-of-00004\.safetensors .* does not exist/],
    ] as const) {
      const before = heldTensors();
      await expect(fromPretrained(dir)).rejects.toThrow(message);
      expect(heldTensors()).toBe(before);
    }
  });

  it("a float16 or bfloat16 checkpoint loads into float32 within its rounding, and disposing the model frees every tensor", async () => {
    const reference = await readReference("gpt2");
    for (const [fileDType, dtype, tolerance] of [
      ["F16", "float16", 2 ** -10],
      ["BF16", "bfloat16", 2 ** -7],
    ] as const) {
      const dir = await editedCopy("gpt2", (tensors) => {
        for (const [key, t] of tensors) tensors.set(key, { ...t, dtype: fileDType, data: encodeStorage("test", t.data as Float32Array, dtype) as Uint16Array });
      });
      const before = heldTensors();
      const model = (await fromPretrained(dir)) as GPT2LMHeadModel;
      expect(model.transformer.wte.weight.value.dtype).toBe("float32");
      const logits = model.forward(reference.get("input_ids")!);
      expect(relativeError(logits, reference.get("logits")!)).toBeLessThanOrEqual(tolerance);
      logits.dispose();
      for (const parameter of model.parameters()) parameter.dispose();
      expect(heldTensors()).toBe(before);
    }
    for (const t of reference.values()) t.dispose();
  });
});

function keyOrder(model: GPT2LMHeadModel, key: string): number {
  return model.namedParameters().findIndex(([name]) => name === key);
}
