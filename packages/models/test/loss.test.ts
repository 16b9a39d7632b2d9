import { backward } from "@blocksparse/autograd";
import { DTypeError, engine, IndexError, ShapeError, slice, type Tensor, tensor, tidy } from "@blocksparse/core";
import { GPT2LMHeadModel } from "@blocksparse/models";
import { fromPretrained } from "@blocksparse/models/node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { fixtures, leftBehind, readReference } from "./helpers";

/** Hugging Face's loss from `labels`, in float64 from logits [B, T, V]: mean over t < T - 1 of CE(logits[t], labels[t + 1]), -100 left out. */
function shiftedLoss(logits: Tensor, labels: number[][]): number {
  const [batch, length, vocab] = logits.shape;
  const values = Float64Array.from(logits.dataSync());
  let total = 0;
  let count = 0;
  for (let b = 0; b < batch; b++)
    for (let t = 0; t + 1 < length; t++) {
      const label = labels[b][t + 1];
      if (label === -100) continue;
      const row = values.subarray((b * length + t) * vocab, (b * length + t + 1) * vocab);
      const max = row.reduce((m, v) => Math.max(m, v), Number.NEGATIVE_INFINITY);
      const lse = Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) + max;
      total += lse - row[label];
      count++;
    }
  return total / count;
}

describe("GPT2LMHeadModel.loss: Hugging Face's loss from labels", () => {
  let model: GPT2LMHeadModel;
  let reference: Map<string, Tensor>;
  beforeAll(async () => {
    model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    model.eval();
    reference = await readReference("gpt2");
  });
  afterAll(() => {
    for (const t of reference.values()) t.dispose();
  });

  it("shifts the labels inside: labels = inputIds gives the next-token loss of PyTorch's logits", () => {
    const ids = reference.get("input_ids")!;
    const [batch, length] = ids.shape;
    const rows = Array.from({ length: batch }, (_, b) => Array.from(ids.dataSync().subarray(b * length, (b + 1) * length)));
    const want = shiftedLoss(reference.get("logits")!, rows);
    const got = tidy(() => model.loss(ids, ids).item());
    expect(Math.abs(got - want) / want).toBeLessThan(1e-4);
  });

  it("leaves out the positions labelled -100, and only those", () => {
    const ids = tensor([5, 17, 2, 30, 11, 8, 21, 3], [2, 4], "int32");
    const labels = [
      [5, -100, 2, 30],
      [11, 8, -100, -100],
    ];
    const logits = tidy(() => model.forward(ids));
    const want = shiftedLoss(logits, labels);
    logits.dispose();
    const got = tidy(() => model.loss(ids, tensor(labels.flat(), [2, 4], "int32")).item());
    expect(got).toBeCloseTo(want, 5);
    // Causality: labelling the last positions -100 is the loss of the sequence cut before them.
    const cut = tidy(() => model.loss(slice(ids, [0, 0], [2, 2]), slice(ids, [0, 0], [2, 2])).item());
    const padded = tidy(() => model.loss(ids, tensor([5, 17, -100, -100, 11, 8, -100, -100], [2, 4], "int32")).item());
    expect(padded).toBeCloseTo(cut, 5);
  });

  it("trains: the gradient reaches the tied embedding, and a [T] sequence is a batch of one", () => {
    const ids = tensor([5, 17, 2, 30, 11], [5], "int32");
    const loss = model.loss(ids, ids);
    const asBatch = tidy(() => model.loss(tensor([5, 17, 2, 30, 11], [1, 5], "int32"), tensor([5, 17, 2, 30, 11], [1, 5], "int32")).item());
    expect(loss.item()).toBeCloseTo(asBatch, 6);
    backward(loss);
    const grad = model.transformer.wte.weight.grad;
    expect(grad).not.toBeNull();
    expect(grad!.dataSync().some((v) => v !== 0)).toBe(true);
    loss.dispose();
    model.zeroGrad();
  });

  it("names what is wrong with labels", () => {
    const ids = tensor([1, 2, 3], [1, 3], "int32");
    expect(() => model.loss(ids, tensor([1, 2], [1, 2], "int32"))).toThrow(ShapeError);
    expect(() => model.loss(ids, tensor([1, 2], [1, 2], "int32"))).toThrow("GPT2LMHeadModel.loss: labels has shape [1,2], expected inputIds' [1,3]");
    expect(() => model.loss(ids, tensor([1, 2, 3], [1, 3]))).toThrow(DTypeError);
  });

  it("a label outside the vocabulary, or negative and not ignoreIndex, is an IndexError naming labels before any kernel runs", () => {
    const ids = tensor([1, 2, 3], [1, 3], "int32");
    const runKernel = vi.spyOn(engine, "runKernel");
    try {
      for (const [bad, options] of [[96, {}], [96 + 1000, {}], [-1, {}], [-100, { ignoreIndex: -1 }], [-2, { ignoreIndex: -1 }]] as const) {
        const labels = tensor([1, bad, 3], [1, 3], "int32");
        runKernel.mockClear();
        expect(() => model.loss(ids, labels, options)).toThrow(IndexError);
        expect(() => model.loss(ids, labels, options)).toThrow(new RegExp(`^GPT2LMHeadModel\\.loss: labels holds ${bad}, outside the vocabulary of 96 tokens$`));
        expect(runKernel).not.toHaveBeenCalled();
        expect(leftBehind(() => model.loss(ids, labels, options))).toBe(0);
        labels.dispose();
      }
    } finally {
      runKernel.mockRestore();
    }
    // The last token, -100 (the default ignoreIndex) and another ignoreIndex are labels.
    expect(Number.isFinite(tidy(() => model.loss(ids, tensor([1, 95, -100], [1, 3], "int32")).item()))).toBe(true);
    expect(Number.isFinite(tidy(() => model.loss(ids, tensor([1, 95, -1], [1, 3], "int32"), { ignoreIndex: -1 }).item()))).toBe(true);
    ids.dispose();
  });
});

describe("GPT2LMHeadModel.loss on a fresh model", () => {
  it("is about ln(vocab) at initialisation", () => {
    const config = { vocab_size: 64, n_positions: 16, n_embd: 32, n_layer: 1, n_head: 4 };
    const model = new GPT2LMHeadModel(config, { seed: 3 });
    const ids = tensor([1, 5, 9, 13, 2, 6, 10, 14], [2, 4], "int32");
    const loss = tidy(() => model.loss(ids, ids).item());
    expect(Math.abs(loss - Math.log(64))).toBeLessThan(0.5);
    for (const p of model.parameters()) p.dispose();
  });
});
