import { add, concat, mul, randn, slice, type Tensor, tensor, tidy } from "@blocksparse/core";
import { GPT2Attention, type GPT2Block, GPT2Cache, GPT2LMHeadModel, type KeyValue } from "@blocksparse/models";
import { Module } from "@blocksparse/nn";
import { afterAll, describe, expect, it } from "vitest";
import { GPT2StaticCache } from "../src/gpt2";
import { relativeError } from "./helpers";

const CONFIG = { vocab_size: 64, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, initializer_range: 0.3 };

/** A module of one input that doubles it: what a user may put in an attention's or an MLP's place. */
class Double extends Module {
  forward(x: Tensor): Tensor {
    return mul(x, 2);
  }
}

/** A module whose forward takes one input and runs `inner` on it: no residual goes in, so none comes out. */
class OneInput extends Module {
  inner: Module;

  constructor(inner: Module) {
    super();
    this.inner = inner;
  }

  forward(x: Tensor): Tensor {
    return this.inner.forward(x);
  }
}

/** GPT-2's attention with every method overridden to take no residual, as a user's attention of one input would. */
class AttentionOfOneInput extends GPT2Attention {
  override forward(x: Tensor): Tensor {
    return super.forward(x);
  }

  override forwardCached(x: Tensor, past: KeyValue | null, _residual?: Tensor, mask: Tensor | null = null): { out: Tensor } & KeyValue {
    return super.forwardCached(x, past, undefined, mask);
  }

  override forwardStatic(x: Tensor, cache: GPT2StaticCache, index: number, positions: Tensor): Tensor {
    return super.forwardStatic(x, cache, index, positions);
  }
}

describe("GPT2Block with its attention or MLP replaced by a module of one input", () => {
  const model = new GPT2LMHeadModel(CONFIG, { seed: 7 });
  // The same weights, each block's attention and MLP replaced by ones that take no residual.
  const replaced = new GPT2LMHeadModel(CONFIG, { seed: 7 });
  replaced.transformer.h.children().forEach((child, index) => {
    const block = child as GPT2Block;
    const attention = new AttentionOfOneInput(replaced.config, index, () => 1);
    attention.loadStateDict(block.attn.stateDict());
    block.setSubmodule("attn", attention);
    block.setSubmodule("mlp", new OneInput(block.mlp));
  });
  model.eval();
  replaced.eval();
  afterAll(() => {
    for (const p of [...model.parameters(), ...replaced.parameters()]) p.dispose();
  });

  it("keeps both residual connections, x + attn(ln_1(x)) then + mlp(ln_2(.)) as Hugging Face's block (they were dropped)", () => {
    tidy(() => {
      const block = new GPT2LMHeadModel(CONFIG, { seed: 1 }).transformer.h.children()[0] as GPT2Block;
      block.setSubmodule("attn", new Double());
      block.setSubmodule("mlp", new Double());
      const x = randn([2, 3, 32], { seed: 2 });
      const afterAttention = add(x, mul(block.ln_1.forward(x), 2));
      const expected = add(afterAttention, mul(block.ln_2.forward(afterAttention), 2));
      expect(relativeError(block.forward(x), expected)).toBeLessThanOrEqual(1e-6);
    });
  });

  it("gives the model's logits on every path: the full forward, a growing cache, an attention mask, a static cache", () => {
    tidy(() => {
      const ids = tensor([5, 17, 2, 30, 11, 8, 40, 3, 57, 21, 9, 33], [2, 6], "int32");
      const full = model.forward(ids);
      expect(relativeError(replaced.forward(ids), full)).toBeLessThanOrEqual(1e-5);
      const cache = new GPT2Cache(CONFIG.n_layer);
      const staticCache = new GPT2StaticCache(8, ids);
      try {
        const growing: Tensor[] = [];
        const fixed: Tensor[] = [];
        for (const [start, size] of [[0, 4], [4, 1], [5, 1]]) {
          const part = slice(ids, [0, start], [2, size]);
          growing.push(replaced.forward(part, cache));
          fixed.push(replaced.lm_head.forward(replaced.transformer.forwardStatic(part, staticCache)));
        }
        expect(relativeError(concat(growing, 1), full)).toBeLessThanOrEqual(1e-5);
        expect(relativeError(concat(fixed, 1), full)).toBeLessThanOrEqual(1e-5);
      } finally {
        cache.dispose();
        staticCache.dispose();
      }
      const attentionMask = tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [2, 6], "int32");
      expect(relativeError(replaced.forward(ids, { attentionMask }), model.forward(ids, { attentionMask }))).toBeLessThanOrEqual(1e-5);
      expect(Array.from(replaced.generate(ids, { maxNewTokens: 4 }).dataSync())).toEqual(Array.from(model.generate(ids, { maxNewTokens: 4 }).dataSync()));
    });
  });
});
