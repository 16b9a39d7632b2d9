import { randn, scalar, tensor, ValueError, zeros } from "@blocksparse/core";
import {
  BlockSparseLinear,
  CausalSelfAttention,
  Dropout,
  distillationLoss,
  Embedding,
  klDivergence,
  LayerNorm,
  Linear,
  MLP,
  Parameter,
  pruneAndRegrow,
  SparseOptimizer,
  stateDictFromSafetensors,
  TransformerBlock,
} from "@blocksparse/nn";
import { load, save, saveSafetensorsFile } from "@blocksparse/nn/node";
import { afterAll, describe, expect, it } from "vitest";

const layer = new BlockSparseLinear(4, 4, { density: 0.5, blockShape: [2, 2], seed: 1 });
const linear = new Linear(4, 4, { seed: 1 });
const logits = randn([3, 3], { seed: 1 });
const targets = tensor([0, 1, 2], [3], "int32");
const value = zeros([2]);
const aTensor = scalar(1);
afterAll(() => {
  for (const t of [logits, targets, value, aTensor]) t.dispose();
  for (const module of [layer, linear]) for (const parameter of module.parameters()) parameter.value.dispose();
});

interface EntryPoint {
  /** The name its errors start with. */
  op: string;
  /** Its documented option names, in the order the error lists them. */
  names: string[];
  /** Options it accepts (required ones included). */
  valid: object;
  /** A PyTorch-style snake_case name it does not take. */
  snakeCase: string;
  call: (options: object) => unknown;
}

// Every entry point of nn (main and Node entries) that takes an options object; SGD, Adam, AdamW and GradScaler are in optim.test.ts.
const entryPoints: EntryPoint[] = [
  { op: "Linear", names: ["bias", "seed"], valid: { bias: false, seed: 1 }, snakeCase: "bias_init", call: (o) => new Linear(4, 4, o) },
  {
    op: "BlockSparseLinear",
    names: ["density", "blockShape", "bias", "seed"],
    valid: { density: 0.5, blockShape: [2, 2], bias: false, seed: 1 },
    snakeCase: "block_shape",
    call: (o) => new BlockSparseLinear(4, 4, o as never),
  },
  {
    op: "BlockSparseLinear.fromLinear",
    names: ["density", "blockShape"],
    valid: { density: 0.5, blockShape: [2, 2] },
    snakeCase: "block_shape",
    call: (o) => BlockSparseLinear.fromLinear(linear, o as never),
  },
  {
    op: "BlockSparseLinear.setPattern",
    names: ["newValues", "optimizer"],
    valid: {},
    snakeCase: "new_values",
    call: (o) => layer.setPattern(layer.pattern, o),
  },
  { op: "Embedding", names: ["seed", "paddingIdx"], valid: { seed: 1, paddingIdx: -1 }, snakeCase: "padding_idx", call: (o) => new Embedding(4, 2, o) },
  { op: "LayerNorm", names: ["eps", "elementwiseAffine"], valid: { eps: 1e-6, elementwiseAffine: false }, snakeCase: "elementwise_affine", call: (o) => new LayerNorm(4, o) },
  { op: "Dropout", names: ["seed"], valid: { seed: 1 }, snakeCase: "random_seed", call: (o) => new Dropout(0.1, o) },
  {
    op: "CausalSelfAttention",
    names: ["dModel", "nHeads", "dropout", "seed"],
    valid: { dModel: 4, nHeads: 2, dropout: 0.1, seed: 1 },
    snakeCase: "n_heads",
    call: (o) => new CausalSelfAttention(o as never),
  },
  { op: "MLP", names: ["dModel", "hidden", "dropout", "seed"], valid: { dModel: 4, hidden: 8, dropout: 0.1, seed: 1 }, snakeCase: "d_model", call: (o) => new MLP(o as never) },
  {
    op: "TransformerBlock",
    names: ["dModel", "nHeads", "mlpRatio", "dropout", "seed"],
    valid: { dModel: 4, nHeads: 2, mlpRatio: 2, dropout: 0.1, seed: 1 },
    snakeCase: "mlp_ratio",
    call: (o) => new TransformerBlock(o as never),
  },
  { op: "Parameter", names: ["requiresGrad", "pattern"], valid: { requiresGrad: false, pattern: null }, snakeCase: "requires_grad", call: (o) => new Parameter(value, o) },
  {
    op: "klDivergence",
    names: ["temperature", "reduction"],
    valid: { temperature: 2, reduction: "sum" },
    snakeCase: "log_target",
    call: (o) => klDivergence(logits, logits, o).dispose(),
  },
  {
    op: "distillationLoss",
    names: ["temperature", "alpha", "ignoreIndex"],
    valid: { temperature: 2, alpha: 0.5, ignoreIndex: -100 },
    snakeCase: "ignore_index",
    call: (o) => distillationLoss(logits, logits, targets, o).dispose(),
  },
  {
    op: "pruneAndRegrow",
    names: ["fraction", "random", "newBlocks", "scale", "optimizer", "regrow", "gradient"],
    valid: { fraction: 0, random: 1, newBlocks: "normal", scale: 0.1, regrow: "random" },
    snakeCase: "new_blocks",
    call: (o) => pruneAndRegrow(layer, o as never),
  },
  {
    op: "SparseOptimizer",
    names: ["fraction", "every", "seed", "newBlocks", "scale", "regrow", "schedule", "totalSteps"],
    valid: { fraction: 0.2, every: 2, seed: 1, newBlocks: "normal", scale: 0.1, regrow: "gradient", schedule: "cosine", totalSteps: 10 },
    snakeCase: "total_steps",
    call: (o) => new SparseOptimizer(layer, o),
  },
  { op: "BlockSparseLinear.loadStateDict", names: ["strict"], valid: { strict: false }, snakeCase: "assign_strict", call: (o) => layer.loadStateDict(new Map(), o) },
  { op: "Module.to", names: ["backend", "dtype"], valid: { backend: "js", dtype: "float32" }, snakeCase: "non_blocking", call: (o) => linear.to(o) },
  {
    op: "stateDictFromSafetensors",
    names: ["consume"],
    valid: { consume: true },
    snakeCase: "keep_files",
    call: (o) => stateDictFromSafetensors({ tensors: new Map(), metadata: {} }, o),
  },
];

// The Node entry's file helpers check their options before touching any file.
const nodeEntryPoints: EntryPoint[] = [
  { op: "save", names: ["maxShardSize"], valid: {}, snakeCase: "max_shard_size", call: (o) => save(linear, "/nonexistent/model.safetensors", {}, o) },
  { op: "saveSafetensorsFile", names: ["maxShardSize"], valid: {}, snakeCase: "max_shard_size", call: (o) => saveSafetensorsFile(new Map(), "/nonexistent/x.safetensors", {}, o) },
  { op: "load", names: ["strict"], valid: {}, snakeCase: "map_location", call: (o) => load(linear, "/nonexistent/model.safetensors", o) },
];

const nonPlainObjects: [string, () => object][] = [
  ["a Tensor", () => aTensor],
  ["an array", () => []],
  ["a Map", () => new Map([["seed", 1]])],
];

describe("options of nn's layers, losses, sparse training and loading", () => {
  it.each(entryPoints)("$op accepts its documented options", ({ call, valid }) => {
    expect(() => call(valid)).not.toThrow();
  });

  it.each(entryPoints)("$op refuses an unknown option, listing its options", ({ op, names, valid, call }) => {
    expect(() => call({ ...valid, sede: 1 })).toThrow(ValueError);
    expect(() => call({ ...valid, sede: 1 })).toThrow(`${op}: unknown option 'sede'; the options are ${names.join(", ")}`);
  });

  it.each(entryPoints)("$op refuses a PyTorch-style snake_case name", ({ op, valid, snakeCase, call }) => {
    expect(() => call({ ...valid, [snakeCase]: 1 })).toThrow(`${op}: unknown option '${snakeCase}'`);
  });

  it.each(entryPoints)("$op refuses a non-plain object as its options", ({ op, call }) => {
    for (const [kind, make] of nonPlainObjects) expect(() => call(make())).toThrow(`${op}: options must be an object or null, got ${kind}`);
  });

  it.each(nodeEntryPoints)("$op (Node entry) refuses an unknown option, a snake_case name and a non-plain object", async ({ op, names, snakeCase, call }) => {
    await expect(call({ sede: 1 })).rejects.toThrow(`${op}: unknown option 'sede'; the options are ${names.join(", ")}`);
    await expect(call({ [snakeCase]: 1 })).rejects.toThrow(`${op}: unknown option '${snakeCase}'`);
    for (const [kind, make] of nonPlainObjects) await expect(call(make())).rejects.toThrow(`${op}: options must be an object or null, got ${kind}`);
  });
});
