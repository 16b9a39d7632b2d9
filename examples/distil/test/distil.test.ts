import { tensor } from "@blocksparse/core";
import { GPT2_FFN_LAYERS, GPT2LMHeadModel } from "@blocksparse/models";
import { BlockSparseLinear, SparseOptimizer } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { BUNDLED_TOKENIZER, loadCorpus, WindowSampler } from "../src/data";
import { gpt2Config, runExperiments, sparsify, train, validationLoss } from "../src/experiment";
import { formatTable } from "../src/report";

const corpus = await loadCorpus(BUNDLED_TOKENIZER, 20_000);

describe("the Moby Dick corpus", () => {
  it("is the BPE tokens of the text, split 90/10, windows shifted by one", () => {
    expect(corpus.vocabSize).toBe(512);
    expect(corpus.train.length).toBeGreaterThan(4000);
    expect(corpus.validation.length).toBe(Math.ceil((corpus.train.length + corpus.validation.length) * 0.1));
    const { inputs, targets } = new WindowSampler(corpus.train, 2, 8, 1).next();
    expect(Array.from(inputs.subarray(1, 8))).toEqual(Array.from(targets.subarray(0, 7)));
  });
});

describe("training GPT-2 on it", () => {
  const run = { learningRate: 3e-3, context: 16, batchSize: 4, seed: 0 };

  it("lowers the validation loss of a tiny dense model, and RigL moves the feed-forward patterns while it trains", () => {
    const config = gpt2Config("tiny", corpus.vocabSize, 16);
    const dense = new GPT2LMHeadModel(config, { seed: 1 });
    const before = validationLoss(dense, corpus, 16, 4, 2, 0);
    train(dense, corpus, { ...run, name: "dense", steps: 12 });
    expect(validationLoss(dense, corpus, 16, 4, 2, 0)).toBeLessThan(before - 0.2);

    const sparse = new GPT2LMHeadModel(config, { seed: 1 });
    sparsify(sparse, 0.25, [GPT2_FFN_LAYERS]);
    const layers = sparse.modules().filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear);
    expect(layers).toHaveLength(4);
    const patterns = layers.map((layer) => layer.pattern);
    const mover = new SparseOptimizer(sparse, { regrow: "gradient", fraction: 0.5, every: 2, schedule: "cosine", totalSteps: 6 });
    train(sparse, corpus, { ...run, name: "rigl", steps: 6, sparse: mover });
    expect(layers.some((layer, i) => !layer.pattern.equals(patterns[i]))).toBe(true);
    expect(layers.map((layer) => layer.nnzBlocks)).toEqual(patterns.map((p) => p.nnzBlocks));
    expect(Number.isFinite(sparse.forward(tensor(corpus.validation.slice(0, 16), [1, 16])).dataSync()[0])).toBe(true);
  }, 120_000);

  it("runs every experiment and prints one row per model", () => {
    const rows = runExperiments(corpus, { size: "tiny", steps: 4, densities: [0.25], distilDensity: 0.5, patch: "ffn+attn", mode: "all", learningRate: 3e-3, context: 16, batchSize: 4, evalBatches: 1, seed: 0 });
    expect(rows.map((r) => `${r.experiment}: ${r.model} (${r.steps})`)).toEqual([
      "sparse: dense (4)",
      "sparse: FFN 0.25 static (4)",
      "sparse: FFN 0.25 rigl (4)",
      "distil: dense (teacher) (4)",
      "distil: FFN+attn 0.5 patched (0)",
      "distil: FFN+attn 0.5 fine-tune (1)",
      "distil: FFN+attn 0.5 distil (1)",
    ]);
    for (const row of rows) expect(row.validationLoss).toBeGreaterThan(0);
    expect(formatTable(rows)).toContain("FFN+attn 0.5 distil");
  }, 120_000);
});
