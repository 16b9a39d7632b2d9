import { addKernelObserver, randint, type Tensor, tidy } from "@blocksparse/core";
import type { BertModel, GPT2LMHeadModel } from "@blocksparse/models";
import { fromPretrained } from "@blocksparse/models/node";
import { Dropout, Module } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { fixtures, relativeError } from "./helpers";

/** Drops nothing, but is no Dropout: attention then makes its weights explicitly. */
class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x.clone();
  }
}

/** The kernels a call runs. */
function kernelsOf(run: () => unknown): string[] {
  const kernels: string[] = [];
  const stop = addKernelObserver((record) => kernels.push(record.kernelName));
  tidy(() => {
    run();
  });
  stop();
  return kernels;
}

/** The attention kernels a call runs: [Attention or PackedAttention (the fused kernels), Softmax]. */
function attentionKernels(run: () => unknown): [number, number] {
  const kernels = kernelsOf(run);
  return [kernels.filter((k) => k === "Attention" || k === "PackedAttention").length, kernels.filter((k) => k === "Softmax").length];
}

describe("the models' attention", () => {
  it("GPT-2 runs the fused kernel with no active dropout, the explicit weights with it, the same logits either way", async () => {
    const model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const ids = randint(0, 96, [2, 9], { seed: 5 });
    expect(attentionKernels(() => model.forward(ids))).toEqual([2, 0]);
    // The heads come from c_attn's packed rows and go out in c_proj's: no per-head copies.
    const kernels = kernelsOf(() => model.forward(ids));
    expect(kernels.filter((k) => k === "PackedAttention").length).toBe(2);
    expect(kernels.filter((k) => k === "Transpose" || k === "Split" || k === "Concat")).toEqual([]);
    const fused = model.forward(ids);
    for (const block of model.transformer.h) block.setSubmodule("attn.attn_dropout", new Identity());
    expect(attentionKernels(() => model.forward(ids))).toEqual([0, 2]);
    expect(relativeError(fused, model.forward(ids))).toBeLessThanOrEqual(1e-5);
    for (const block of model.transformer.h) block.setSubmodule("attn.attn_dropout", new Dropout(0.1, { seed: 1 }));
    model.eval();
    expect(attentionKernels(() => model.forward(ids)), "eval mode: dropout inactive").toEqual([2, 0]);
    model.train();
    expect(attentionKernels(() => model.forward(ids)), "training with attention dropout 0.1").toEqual([0, 2]);
  });

  it("BERT runs the fused kernel without an attention mask, the explicit weights with one", async () => {
    const model = (await fromPretrained(fixtures("bert"))) as BertModel;
    const ids = randint(0, 96, [2, 7], { seed: 6 });
    const noMask = () => model.encode(ids).lastHiddenState;
    expect(attentionKernels(noMask)).toEqual([model.encoder.layer.length, 0]);
    const allOnes = randint(1, 2, [2, 7], { seed: 7 });
    const masked = () => model.encode(ids, { attentionMask: allOnes }).lastHiddenState;
    expect(attentionKernels(masked)).toEqual([0, model.encoder.layer.length]);
    expect(relativeError(noMask(), masked())).toBeLessThanOrEqual(1e-5);
  });
});
