import { memory } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { describe, expect, it } from "vitest";
import { Vocabulary, buildCorpus, mobyDickText, sampleBatch } from "../src/data";
import { TABLE_HEAD, formatTable, reportRows } from "../src/report";
import { MAX_SAMPLE_LENGTH, type TransformerOptions, sparseName, trainTransformer } from "../src/train";

const TINY: Partial<TransformerOptions> = {
  steps: 8,
  batchSize: 4,
  context: 16,
  dModel: 32,
  nHeads: 2,
  layers: 1,
  densities: [0.5, 0.25],
  blockShape: [32, 32],
  learningRate: 1e-2,
  seed: 1,
  evalBatches: 2,
  sampleLength: 12,
  textLimit: 50_000,
  backend: "js",
};

/** Parameters of the model written out independently: embeddings, one block, final norm, head. */
function denseParameters(vocab: number, d: number, context: number): number {
  const block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d);
  return vocab * d + context * d + block + 2 * d + (d * vocab + vocab);
}

describe("moby dick data", () => {
  it("reads the novel and encodes it with a round-tripping character vocabulary", () => {
    const text = mobyDickText();
    expect(text.length).toBeGreaterThan(1_000_000);
    expect(text).toContain("Call me Ishmael.");
    const corpus = buildCorpus(text.slice(0, 50_000));
    const head = corpus.vocabulary.decode(corpus.train.subarray(0, 200));
    expect(corpus.vocabulary.encode(head)).toEqual(corpus.train.subarray(0, 200));
    expect(corpus.train.length + corpus.validation.length).toBeLessThanOrEqual(50_000);
    expect(() => new Vocabulary("ab").decode([2])).toThrow(/id 2 is outside the vocabulary of 2/);
  });

  it("samples windows whose targets are the inputs shifted by one", () => {
    const ids = Int32Array.from({ length: 100 }, (_, i) => i);
    const { inputs, targets } = sampleBatch(ids, 3, 5, new SeededRandom(4));
    for (let i = 0; i < inputs.length; i++) expect(targets[i]).toBe(inputs[i] + 1);
    expect(() => sampleBatch(ids.subarray(0, 4), 1, 5, new SeededRandom(0))).toThrow(/fewer than context \+ 1 = 6/);
  });
});

describe("trainTransformer", () => {
  it("lowers the loss of dense and block-sparse models, with exact parameter counts and a sample", () => {
    const report = trainTransformer(TINY);
    expect(report.models.map((model) => model.name)).toEqual(["dense", sparseName(0.5), sparseName(0.25)]);
    const vocab = report.vocabularySize;
    const dense = denseParameters(vocab, 32, 16);
    // Feed-forward 32 -> 128 -> 32 in 32x32 blocks: 4 blocks each; 0.5 keeps 2, 0.25 keeps 1.
    const feedForward = (kept: number) => kept * 32 * 32 + 128 + kept * 32 * 32 + 32;
    const expected = [
      [dense, feedForward(4)],
      [dense - feedForward(4) + feedForward(2), feedForward(2)],
      [dense - feedForward(4) + feedForward(1), feedForward(1)],
    ];
    report.models.forEach((model, i) => {
      expect([model.parameters, model.feedForwardParameters]).toEqual(expected[i]);
      expect(model.stepLosses).toHaveLength(8);
      expect(model.validationLoss).toBeLessThan(model.initialValidationLoss - 0.3);
      expect(model.sample.startsWith("Call me Ishmael. ")).toBe(true);
      expect(model.sample).toHaveLength("Call me Ishmael. ".length + 12);
    });
    expect(report.models[1].patchReport?.layers.map((layer) => layer.name)).toEqual(["blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]);
    expect(report.models[2].weightBytes).toBeLessThan(report.models[0].weightBytes);

    const rows = reportRows(report);
    expect(rows.map((row) => row[0])).toEqual(["dense", "ffn block-sparse 0.5", "ffn block-sparse 0.25"]);
    expect(rows[0][4]).toBe(dense.toLocaleString("en-US"));
    for (const head of TABLE_HEAD) expect(formatTable(report)).toContain(head);
    // Training two small models takes a few seconds; room for a loaded machine.
  }, 30_000);

  it("gives every tensor back when it is done (models, optimizer state, the replaced dense layers)", () => {
    const before = memory().numTensors;
    trainTransformer({ ...TINY, steps: 2, densities: [0.5], sampleLength: 2 });
    expect(memory().numTensors).toBe(before);
  });

  it("rejects a width the block shape does not divide, and bad densities", () => {
    expect(() => trainTransformer({ ...TINY, dModel: 48 })).toThrow(/dModel: 48 .* not divisible by the block shape 32x32 \(blockShape\); use a multiple of 32/);
    expect(() => trainTransformer({ ...TINY, densities: [1.5] })).toThrow(/densities: expected numbers in \(0, 1\], got 1.5/);
    // seed x 7919 + i seeds the validation batches: this failed with another number in its message.
    expect(() => trainTransformer({ ...TINY, seed: 2 ** 40 })).toThrow(/seed: expected an integer from -4294967295 to 4294967295, got 1099511627776$/);
  });

  // The CLI refused it, but trainTransformer called directly trained the feed-forward layers at 0.25 under the name 0.1.
  it("refuses a density under which a patched layer keeps no block before it trains, as the CLI does, and gives its tensors back", () => {
    const calls: string[] = [];
    const before = memory().numTensors;
    expect(() => trainTransformer({ ...TINY, densities: [0.25, 0.1] }, { onStart: () => calls.push("start"), onModelStart: () => calls.push("model") })).toThrow(
      new RangeError(
        "--density: 0.1 keeps no block of blocks.0.mlp.fc1 (128x32 in 4 blocks of 32x32); nn keeps one anyway, so blocks.0.mlp.fc1 would run at density 0.25, not 0.1: give at least 0.25, or a larger --d-model or a smaller --block",
      ),
    );
    expect(calls).toEqual([]);
    expect(memory().numTensors).toBe(before);
  });

  it("refuses a sample longer than MAX_SAMPLE_LENGTH before it trains: generation slides past the context, one pass a character", () => {
    expect(() => trainTransformer({ ...TINY, sampleLength: MAX_SAMPLE_LENGTH + 1 })).toThrow(
      new RangeError(`sampleLength: expected an integer from 0 to ${MAX_SAMPLE_LENGTH} (characters generated), got ${MAX_SAMPLE_LENGTH + 1}`),
    );
  });
});
