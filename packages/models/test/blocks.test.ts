/**
 * The building blocks built alone, as transformers' GPT2Block(config) or BertLayer(config) are: from a config.json's
 * contents (checked, defaults taken), with an integer seed or none, and refused with typed errors naming what was wrong.
 */
import { manualSeed, randn, setBackend, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import type { Module } from "@blocksparse/nn";
import { beforeAll, describe, expect, it } from "vitest";
import {
  BertAttention,
  BertEmbeddings,
  BertEncoder,
  BertIntermediate,
  BertLayer,
  BertPooler,
  BertResidualOutput,
  BertSelfAttention,
  ConfigError,
  GPT2Attention,
  GPT2Block,
  GPT2LMHeadModel,
  GPT2MLP,
  GPT2Model,
} from "../src/index";

const GPT2 = { vocab_size: 64, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 4 };
const BERT = { vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 24 };

const values = (module: Module) => module.namedParameters().map(([name, p]) => [name, Array.from(p.value.dataSync())] as const);
const outputOf = (run: () => Tensor) => tidy(() => Array.from(run().dataSync()));

beforeAll(() => {
  setBackend("js");
});

describe("GPT-2's building blocks alone", () => {
  const builders: [string, (seed?: number) => Module][] = [
    ["GPT2Attention", (seed) => new GPT2Attention(GPT2 as never, 1, seed)],
    ["GPT2MLP", (seed) => new GPT2MLP(GPT2 as never, seed)],
    ["GPT2Block", (seed) => new GPT2Block(GPT2 as never, 1, seed)],
    ["GPT2Model", (seed) => new GPT2Model(GPT2 as never, seed)],
  ];

  it.each(builders)("%s builds from a config.json's contents: an integer seed repeats its weights, none draws from the global generator", (_, build) => {
    expect(values(build(5))).toEqual(values(build(5)));
    expect(values(build(5))).not.toEqual(values(build(6)));
    manualSeed(11);
    const drawn = values(build());
    manualSeed(11);
    expect(values(build())).toEqual(drawn);
    expect(values(build())).not.toEqual(drawn);
  });

  it("gives a model's block's output from a block built alone and loaded with its weights (dropout off)", () => {
    const model = new GPT2LMHeadModel(GPT2, { seed: 2 });
    const own = (model.transformer.h.at(1) as GPT2Block).eval();
    const alone = new GPT2Block(GPT2 as never, 1, 123).eval();
    alone.loadStateDict(own.stateDict());
    const x = randn([1, 4, GPT2.n_embd], { seed: 8 });
    expect(outputOf(() => alone.forward(x))).toEqual(outputOf(() => own.forward(x)));
    x.dispose();
  });

  it("refuses a config, a layer index or seeds that cannot be, naming them", () => {
    expect(() => new GPT2Block({ ...GPT2, n_head: 3 } as never)).toThrow(ConfigError);
    expect(() => new GPT2Block({ ...GPT2, n_head: 3 } as never)).toThrow(/n_head=3 does not divide n_embd=32/);
    expect(() => new GPT2MLP(null as never)).toThrow(/config must be an object/);
    expect(() => new GPT2Attention(GPT2 as never, 2)).toThrow(ValueError);
    expect(() => new GPT2Attention(GPT2 as never, 2)).toThrow(/GPT2Attention: layerIndex must be an integer from 0 to n_layer - 1 = 1, got 2/);
    expect(() => new GPT2Block(GPT2 as never, 0.5)).toThrow(/GPT2Block: layerIndex must be an integer .* got 0\.5/);
    expect(() => new GPT2Block(GPT2 as never, 0, 1.5)).toThrow(/GPT2Block: nextSeed must be a function giving seeds, an integer seed or omitted, got 1\.5/);
    expect(() => new GPT2MLP(GPT2 as never, "7" as never)).toThrow(ValueError);
  });
});

describe("BERT's building blocks alone", () => {
  const x = () => randn([2, 3, BERT.hidden_size], { seed: 4 });
  const builders: [string, (seed?: number) => Module, (module: Module) => Tensor][] = [
    ["BertEmbeddings", (seed) => new BertEmbeddings(BERT as never, seed), (m) => (m as BertEmbeddings).forward(tensor([1, 5, 9, 2, 0, 49], [2, 3], "int32"))],
    ["BertSelfAttention", (seed) => new BertSelfAttention(BERT as never, seed), (m) => (m as BertSelfAttention).forward(x(), null)],
    ["BertResidualOutput", (seed) => new BertResidualOutput(BERT as never, 16, seed), (m) => (m as BertResidualOutput).forward(x(), x())],
    ["BertAttention", (seed) => new BertAttention(BERT as never, seed), (m) => (m as BertAttention).forward(x(), null)],
    ["BertIntermediate", (seed) => new BertIntermediate(BERT as never, seed), (m) => (m as BertIntermediate).forward(x())],
    ["BertLayer", (seed) => new BertLayer(BERT as never, seed), (m) => (m as BertLayer).forward(x(), null)],
    ["BertEncoder", (seed) => new BertEncoder(BERT as never, seed), (m) => (m as BertEncoder).forward(x(), null)],
    ["BertPooler", (seed) => new BertPooler(BERT as never, seed), (m) => (m as BertPooler).forward(x())],
  ];

  it.each(builders)("%s builds from a config.json's contents, runs, and repeats its weights for a seed", (_, build, run) => {
    const module = build(5);
    expect(values(module)).toEqual(values(build(5)));
    expect(values(module)).not.toEqual(values(build(6)));
    expect(outputOf(() => run(module)).every(Number.isFinite)).toBe(true);
    manualSeed(2);
    const drawn = values(build());
    manualSeed(2);
    expect(values(build())).toEqual(drawn);
  });

  it("refuses a config or seeds that cannot be, naming them", () => {
    expect(() => new BertLayer({ ...BERT, num_attention_heads: 3 } as never)).toThrow(ConfigError);
    expect(() => new BertLayer({ ...BERT, num_attention_heads: 3 } as never)).toThrow(/num_attention_heads=3 does not divide hidden_size=16/);
    expect(() => new BertPooler(BERT as never, {} as never)).toThrow(/BertPooler: nextSeed must be a function giving seeds, an integer seed or omitted, got/);
  });
});
