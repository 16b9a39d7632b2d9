import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { backward, noGrad } from "@blocksparse/autograd";
import { randint, type Tensor, tidy } from "@blocksparse/core";
import { BERT_ATTENTION_LAYERS, BERT_FFN_LAYERS, type BertModel, GPT2_ATTENTION_LAYERS, GPT2_FFN_LAYERS, type GPT2LMHeadModel } from "@blocksparse/models";
import { fromPretrained } from "@blocksparse/models/node";
import { AdamW, BlockSparseLinear, crossEntropy, distillationLoss, klDivergence } from "@blocksparse/nn";
import { load, save } from "@blocksparse/nn/node";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures, relativeError } from "./helpers";

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "models-recipes-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const patcher = (density: number, patterns: RegExp[]) => {
  const p = new BlockSparseModelPatcher();
  for (const pattern of patterns) p.addPattern(pattern, { density, blockShape: [16, 16] });
  return p;
};

describe("sparsify a loaded GPT-2, fine-tune or distil it, save and reload it", () => {
  it("patches exactly the feed-forward and attention layers, distils from the dense teacher, and reloads to the same logits", async () => {
    const teacher = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const student = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    const report = patcher(0.25, [GPT2_FFN_LAYERS, GPT2_ATTENTION_LAYERS]).patchModel(student);
    expect(report.layers.map((l) => l.name)).toEqual([0, 1].flatMap((i) => [`transformer.h.${i}.attn.c_attn`, `transformer.h.${i}.attn.c_proj`, `transformer.h.${i}.mlp.c_fc`, `transformer.h.${i}.mlp.c_proj`]));
    expect(student.lm_head.weight).toBe(student.transformer.wte.weight);
    const ids = randint(0, 96, [2, 12], { seed: 3 });
    const targets = randint(0, 96, [2, 12], { seed: 4 });
    const distance = () => noGrad(() => tidy(() => klDivergence(student.forward(ids), teacher.forward(ids)).item()));
    const before = distance();
    student.train();
    const optimizer = new AdamW(student.parameters(), { lr: 2e-4, weightDecay: 0 });
    for (let step = 0; step < 8; step++) {
      optimizer.zeroGrad();
      tidy(() => {
        const teacherLogits = noGrad(() => teacher.forward(ids));
        backward(distillationLoss(student.forward(ids), teacherLogits, targets, { temperature: 1, alpha: 1 }));
      });
      optimizer.step();
    }
    optimizer.dispose();
    student.eval();
    expect(distance()).toBeLessThan(0.5 * before);

    const path = join(scratch, "gpt2-sparse.safetensors");
    await save(student, path);
    const reloaded = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    patcher(0.25, [GPT2_FFN_LAYERS, GPT2_ATTENTION_LAYERS]).patchModel(reloaded);
    await load(reloaded, path);
    const layer = reloaded.transformer.h.at(1).getSubmodule("mlp.c_fc") as BlockSparseLinear;
    expect(layer).toBeInstanceOf(BlockSparseLinear);
    expect(layer.pattern.equals((student.transformer.h.at(1).getSubmodule("mlp.c_fc") as BlockSparseLinear).pattern)).toBe(true);
    expect(relativeError(reloaded.forward(ids), student.forward(ids))).toBe(0);
  }, 60_000);

  it("fine-tunes a patched BERT (feed-forward and attention) on a task loss", async () => {
    const model = (await fromPretrained(fixtures("bert"))) as BertModel;
    const report = patcher(0.25, [BERT_FFN_LAYERS, BERT_ATTENTION_LAYERS]).patchModel(model);
    expect(report.layers).toHaveLength(12);
    expect(report.layers.filter((l) => l.name.includes("attention.self"))).toHaveLength(6);
    const ids = randint(3, 96, [2, 8], { seed: 5 });
    const labels = randint(0, 32, [2], { seed: 6 });
    const taskLoss = (): Tensor => crossEntropy(model.encode(ids).poolerOutput, labels);
    model.train();
    const optimizer = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0 });
    const losses: number[] = [];
    for (let step = 0; step < 10; step++) {
      optimizer.zeroGrad();
      losses.push(
        tidy(() => {
          const loss = taskLoss();
          backward(loss);
          return loss.item();
        }),
      );
      optimizer.step();
    }
    optimizer.dispose();
    expect(losses.at(-1)!).toBeLessThan(losses[0]);
  }, 60_000);
});
