/**
 * How the models initialize: Hugging Face's N(0, std) drawn and scaled on the host gives the bits of
 * mul(randn(shape, { seed }), std); each model's construction draws nothing for the layers' own initialization
 * (skipped, then replaced) and ends with the global generator where it did; initWeights re-initializes just the
 * parameters it is given.
 */
import { manualSeed, mul, randn, setBackend, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import { BlockSparseLinear, Dropout, Linear, Module, skipInit } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { beforeAll, describe, expect, it } from "vitest";
import { BERT_ATTENTION_LAYERS, BERT_FFN_LAYERS, BertModel, GPT2_ATTENTION_LAYERS, GPT2_FFN_LAYERS, GPT2LMHeadModel } from "../src/index";
import { initLikeHuggingFace, seedStream } from "../src/layers";

const GPT2 = { vocab_size: 64, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 4 };
const BERT = { vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 24 };

const values = (model: Module) => new Map(model.namedParameters().map(([name, p]) => [name, Array.from(p.value.dataSync())]));

class Pair extends Module {
  a = new Linear(6, 5, { seed: 1 });
  b = new Linear(5, 3, { seed: 2 });
  forward(x: Tensor): Tensor {
    return this.b.forward(this.a.forward(x));
  }
}

describe("models' initialization", () => {
  beforeAll(() => setBackend("js"));

  it("a weight's N(0, std) has the bits of mul(randn(shape, { seed }), std), seeds drawn in the modules' order", () => {
    const pair = new Pair();
    const std = 0.02 / Math.sqrt(6);
    initLikeHuggingFace(pair, std, seedStream("test", 5));
    const seeds = seedStream("test", 5);
    const [aWeight, aBias, bWeight, bBias] = [seeds(), seeds(), seeds(), seeds()];
    const want = (shape: number[], seed: number, s: number) => tidy(() => Array.from(mul(randn(shape, { seed }), s).dataSync()));
    expect(Array.from(pair.a.weight.value.dataSync())).toEqual(want([5, 6], aWeight, std));
    expect(Array.from(pair.a.bias!.value.dataSync())).toEqual(want([5], aBias, 0));
    expect(Array.from(pair.b.weight.value.dataSync())).toEqual(want([3, 5], bWeight, std));
    expect(Array.from(pair.b.bias!.value.dataSync())).toEqual(want([3], bBias, 0));
  });

  it("initWeights re-initializes just the named parameters, the same values from the same seed", () => {
    const cases: [string, () => GPT2LMHeadModel | BertModel, string[]][] = [
      ["GPT-2", () => new GPT2LMHeadModel(GPT2, { seed: 3 }), ["transformer.h.1.mlp.c_proj.weight", "transformer.wpe.weight"]],
      ["BERT", () => new BertModel(BERT, { seed: 3 }), ["pooler.dense.weight", "encoder.layer.0.attention.self.query.bias"]],
    ];
    for (const [name, build, only] of cases) {
      const built = values(build());
      const [first, second] = [build(), build()];
      first.initWeights(() => true, 8);
      second.initWeights(() => true, 8);
      expect(values(first), `${name}: the same seed`).toEqual(values(second));
      const partial = build();
      partial.initWeights((key) => only.includes(key), 99);
      for (const [key, value] of values(partial)) {
        if (!only.includes(key)) expect(value, `${name}: ${key} untouched`).toEqual(built.get(key));
        else if (key.endsWith("weight")) expect(value, `${name}: ${key} re-initialized`).not.toEqual(built.get(key));
        else expect(value.every((x) => x === 0), `${name}: ${key} zero`).toBe(true);
      }
    }
  });

  it("initWeights keeps each parameter's dtype (a model moved with to()), draws inside a caller's skipInit, and names an `only` that is not a function", () => {
    for (const dtype of ["float16", "bfloat16"] as const) {
      const model = new GPT2LMHeadModel(GPT2, { seed: 3 }).to(dtype);
      model.initWeights((name) => name === "transformer.wpe.weight", 5);
      expect(model.transformer.wpe.weight.value.dtype, dtype).toBe(dtype);
      const bert = new BertModel(BERT, { seed: 3 }).to(dtype);
      bert.initWeights(null, 5);
      expect(new Set(bert.parameters().map((p) => p.value.dtype)), dtype).toEqual(new Set([dtype]));
    }
    // Asked for explicitly, the initialization is drawn even while a skipInit builds the caller's own modules.
    const built = skipInit(() => {
      const model = new BertModel(BERT, { seed: 3 });
      model.initWeights(undefined, 4);
      return model;
    });
    expect(built.pooler.dense.weight.value.dataSync().some((x) => x !== 0)).toBe(true);
    const bert = new BertModel(BERT, { seed: 3 });
    for (const only of ["pooler.dense.weight", ["pooler.dense.weight"], 3]) {
      expect(() => bert.initWeights(only as never), JSON.stringify(only)).toThrow(ValueError);
      expect(() => bert.initWeights(only as never)).toThrow(/BertModel\.initWeights: only must be a function/);
      expect(() => new GPT2LMHeadModel(GPT2).initWeights(only as never)).toThrow(/GPT2LMHeadModel\.initWeights: only must be a function/);
    }
    const before = values(bert);
    bert.initWeights(null, 11);
    expect(values(bert).get("pooler.dense.weight")).not.toEqual(before.get("pooler.dense.weight"));
  });

  it("initWeights re-initializes a patched model's block-sparse layers: the dense draw's kept blocks (N(0, std), c_proj's scaled), biases zero, `only` obeyed", () => {
    const patch = <M extends Module>(model: M, layers: RegExp[]): M => {
      const patcher = new BlockSparseModelPatcher();
      for (const layer of layers) patcher.addPattern(layer, { density: 0.5, blockShape: [8, 8] });
      patcher.patchModel(model);
      return model;
    };
    const cases: [string, () => GPT2LMHeadModel | BertModel, RegExp[], string, number][] = [
      ["GPT-2", () => new GPT2LMHeadModel(GPT2, { seed: 3 }), [GPT2_FFN_LAYERS, GPT2_ATTENTION_LAYERS], "transformer.h.1.mlp.c_proj", 0.02 / Math.sqrt(2 * GPT2.n_layer)],
      ["BERT", () => new BertModel(BERT, { seed: 3 }), [BERT_FFN_LAYERS, BERT_ATTENTION_LAYERS], "encoder.layer.0.attention.self.query", 0.02],
    ];
    for (const [name, build, layers, probe, std] of cases) {
      const dense = build();
      dense.initWeights(null, 8);
      const sparse = patch(build(), layers);
      // Values the initialization must replace: ones in every block and every bias of the block-sparse layers.
      for (const [, module] of sparse.namedModules()) {
        if (!(module instanceof BlockSparseLinear)) continue;
        for (const p of [module.weight, module.bias!]) p.value = tensor(new Array(p.size).fill(1), [...p.shape]);
      }
      sparse.initWeights(null, 8);
      const layer = sparse.getSubmodule(probe) as BlockSparseLinear;
      expect(layer, name).toBeInstanceOf(BlockSparseLinear);
      // The same seeds as the dense model's: each kept block holds the dense initialization's values there.
      const want = Array.from((dense.getSubmodule(probe) as Linear).weight.value.dataSync());
      const got = Array.from(layer.toDense().dataSync());
      const mask = layer.pattern.blockMask();
      const blockCols = layer.inFeatures / 8;
      got.forEach((value, i) => {
        const block = Math.floor(i / layer.inFeatures / 8) * blockCols + Math.floor((i % layer.inFeatures) / 8);
        if (value !== (mask[block] ? want[i] : 0)) expect.fail(`${name}: ${probe}'s value ${i} is ${value}, expected ${mask[block] ? want[i] : 0}`);
      });
      const blocks = Array.from(layer.weight.value.dataSync());
      const spread = Math.sqrt(blocks.reduce((sum, x) => sum + x * x, 0) / blocks.length);
      expect(spread, `${name}: std`).toBeGreaterThan(std * 0.8);
      expect(spread, `${name}: std`).toBeLessThan(std * 1.2);
      expect(Array.from(layer.bias!.value.dataSync()).every((x) => x === 0), `${name}: bias zero`).toBe(true);
      // Everything else initialized as the dense model: the seed stream is drawn the same way.
      const denseValues = values(dense);
      for (const [key, value] of values(sparse)) if (!(sparse.getSubmodule(key.replace(/\.(weight|bias)$/, "")) instanceof BlockSparseLinear)) expect(value, `${name}: ${key}`).toEqual(denseValues.get(key));

      // `only` filters block-sparse parameters as it does dense ones.
      const partial = patch(build(), layers);
      const before = values(partial);
      partial.initWeights((key) => key === `${probe}.weight`, 99);
      for (const [key, value] of values(partial)) {
        if (key === `${probe}.weight`) expect(value, `${name}: ${key} re-initialized`).not.toEqual(before.get(key));
        else expect(value, `${name}: ${key} untouched`).toEqual(before.get(key));
      }
    }
  });

  it("initWeights resets LayerNorms to ones and zeros, as Hugging Face's _init_weights, drawing no seed for them", () => {
    const cases: [string, () => GPT2LMHeadModel | BertModel, string][] = [
      ["GPT-2", () => new GPT2LMHeadModel(GPT2, { seed: 3 }), "transformer.ln_f"],
      ["BERT", () => new BertModel(BERT, { seed: 3 }), "encoder.layer.0.output.LayerNorm"],
    ];
    for (const [name, build, probe] of cases) {
      const fresh = build();
      fresh.initWeights(null, 6);
      const trained = build();
      // A trained model's LayerNorms hold other values than ones and zeros.
      for (const [key, p] of trained.namedParameters()) if (/(ln_\w+|LayerNorm)\.(weight|bias)$/.test(key)) p.value = tensor(new Array(p.size).fill(0.5), [...p.shape]);
      trained.initWeights(null, 6);
      expect(values(trained), `${name}: every parameter as a fresh model's, from the same seeds`).toEqual(values(fresh));
      const ln = trained.getSubmodule(probe) as unknown as { weight: { value: Tensor }; bias: { value: Tensor } };
      expect(Array.from(ln.weight.value.dataSync()).every((x) => x === 1), `${name}: ${probe}.weight ones`).toBe(true);
      // `only` names a LayerNorm's parameter like any other.
      ln.weight.value = tensor(new Array(ln.weight.value.size).fill(0.5), [...ln.weight.value.shape]);
      ln.bias.value = tensor(new Array(ln.bias.value.size).fill(0.5), [...ln.bias.value.shape]);
      trained.initWeights((key) => key === `${probe}.weight`, 6);
      expect(Array.from(ln.weight.value.dataSync()).every((x) => x === 1), `${name}: ${probe}.weight named`).toBe(true);
      expect(Array.from(ln.bias.value.dataSync()).every((x) => x === 0.5), `${name}: ${probe}.bias not named`).toBe(true);
    }
  });

  it("building a model leaves the global generator where it did: one seed drawn", () => {
    for (const build of [() => new GPT2LMHeadModel(GPT2), () => new BertModel(BERT)]) {
      manualSeed(21);
      build();
      const after = Array.from(randn([3]).dataSync());
      manualSeed(21);
      seedStream("test", undefined);
      expect(after).toEqual(Array.from(randn([3]).dataSync()));
    }
  });
});

describe("a Dropout subclass in a model's attention", () => {
  it("runs its own forward in eval mode (Monte Carlo dropout), where a plain Dropout is left out of the fused path", () => {
    setBackend("js");
    let calls = 0;
    class Counting extends Dropout {
      override forward(x: Tensor): Tensor {
        calls++;
        return super.forward(x);
      }
    }
    const gpt2 = new GPT2LMHeadModel(GPT2, { seed: 4 });
    (gpt2.transformer.h.at(0) as unknown as { attn: { attn_dropout: Dropout } }).attn.attn_dropout = new Counting(0.1);
    gpt2.eval();
    tidy(() => gpt2.forward(tensor([[1, 2, 3]], [1, 3], "int32")));
    expect(calls, "GPT-2").toBeGreaterThan(0);
    calls = 0;
    const bert = new BertModel(BERT, { seed: 4 });
    (bert.encoder.layer.at(0) as unknown as { attention: { self: { dropout: Dropout } } }).attention.self.dropout = new Counting(0.1);
    bert.eval();
    tidy(() => bert.forward(tensor([[1, 2, 3]], [1, 3], "int32")));
    expect(calls, "BERT").toBeGreaterThan(0);
  });
});
