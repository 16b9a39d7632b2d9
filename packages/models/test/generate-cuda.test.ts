/**
 * generate on the cuda backend: the static cache and the captured step against the eager paths. Without CUDA the
 * file skips with the loader's reason, unless BLOCKSPARSE_REQUIRE_CUDA=1, where it fails instead.
 */
import { cudaAvailability } from "@blocksparse/backend-cuda";
import { concat, memory, randint, setBackend, slice, type Tensor, tidy } from "@blocksparse/core";
import type { GPT2LMHeadModel } from "@blocksparse/models";
import { fromPretrained } from "@blocksparse/models/node";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GPT2StaticCache } from "../src/gpt2";
import { fixtures, relativeError } from "./helpers";

const availability = cudaAvailability();
const required = process.env.BLOCKSPARSE_REQUIRE_CUDA === "1";
if (!availability.available && !required) console.log(`[generate-cuda.test.ts] CUDA tests skipped: ${availability.reason}`);

function rowsOf(t: Tensor): number[][] {
  const values = t.dataSync();
  const [batch, width] = t.shape;
  return Array.from({ length: batch }, (_, b) => Array.from(values.subarray(b * width, (b + 1) * width)));
}

describe.skipIf(!availability.available && !required)("GPT-2 generation on cuda", () => {
  let model: GPT2LMHeadModel;
  beforeAll(async () => {
    if (!availability.available) throw new Error(`CUDA is required but unavailable: ${availability.reason}`);
    setBackend("cuda");
    model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
  });
  afterAll(() => setBackend("js"));

  it("a static cache gives the full forward's logits, position by position (float32)", () => {
    const ids = randint(0, 96, [2, 12], { seed: 5 });
    const full = model.forward(ids);
    const cache = new GPT2StaticCache(14, ids);
    try {
      const parts: Tensor[] = [];
      for (const [start, size] of [[0, 7], [7, 2], [9, 1], [10, 1], [11, 1]]) {
        parts.push(model.lm_head.forward(model.transformer.forwardStatic(slice(ids, [0, start], [2, size]), cache)));
      }
      expect(Array.from(cache.position.dataSync())).toEqual([12]);
      expect(relativeError(concat(parts, 1), full)).toBeLessThanOrEqual(1e-5);
    } finally {
      cache.dispose();
    }
  });

  for (const dtype of ["float32", "bfloat16"] as const) {
    it(`the captured step makes the static cache's tokens, greedy and sampled, and frees everything (${dtype})`, async () => {
      const m = (await fromPretrained(fixtures("gpt2"), { dtype })) as GPT2LMHeadModel;
      const ids = randint(0, 96, [3, 5], { seed: 13 });
      const before = memory().numTensors;
      tidy(() => {
        for (const options of [{ maxNewTokens: 20 }, { maxNewTokens: 20, temperature: 0.9, topK: 8, seed: 4 }, { maxNewTokens: 20, temperature: 0.9, topK: 8, topP: 0.7, seed: 4 }]) {
          const eager = rowsOf(m.generate(ids, { ...options, graph: false, staticCache: true }));
          // The captured step is the default on cuda.
          expect(rowsOf(m.generate(ids, options))).toEqual(eager);
          if (dtype === "float32") expect(rowsOf(m.generate(ids, { ...options, graph: false }))).toEqual(eager);
        }
        // An end token part-way: the graph's steps stop with the eager ones.
        const greedy = rowsOf(m.generate(ids, { maxNewTokens: 12, graph: false, staticCache: true }));
        const eos = greedy[1][8];
        expect(rowsOf(m.generate(ids, { maxNewTokens: 12, eosTokenId: eos, graph: true }))).toEqual(rowsOf(m.generate(ids, { maxNewTokens: 12, eosTokenId: eos, graph: false, staticCache: true })));
        // The config's eos_token_id when no eosTokenId is given (the fixture's 50256 is outside its vocabulary): the
        // graph's steps stop there too, and eosTokenId: null still runs them all.
        m.config.eos_token_id = eos;
        expect(rowsOf(m.generate(ids, { maxNewTokens: 12, graph: true }))).toEqual(rowsOf(m.generate(ids, { maxNewTokens: 12, eosTokenId: eos, graph: false, staticCache: true })));
        expect(rowsOf(m.generate(ids, { maxNewTokens: 12, eosTokenId: null, graph: true }))).toEqual(greedy);
        // A list (transformers' eos_token_id: [a, b]): the graph's steps stop at any of its ids, padded with the first, as
        // the eager ones; as the option and as the config's.
        const list = [greedy[0][10], eos];
        const listed = rowsOf(m.generate(ids, { maxNewTokens: 12, eosTokenId: list, graph: false, staticCache: true }));
        expect(rowsOf(m.generate(ids, { maxNewTokens: 12, eosTokenId: list, graph: true }))).toEqual(listed);
        m.config.eos_token_id = list;
        expect(rowsOf(m.generate(ids, { maxNewTokens: 12, graph: true }))).toEqual(listed);
      });
      expect(memory().numTensors).toBe(before);
    });
  }

  it("block-sparse feed-forward layers (the decoding kernel) in the captured step (bfloat16)", async () => {
    const m = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    new BlockSparseModelPatcher().addPattern(/mlp\.c_(fc|proj)$/, { density: 0.5, blockShape: [16, 16] }).patchModel(m, { disposeReplaced: true });
    m.to("bfloat16");
    const ids = randint(0, 96, [2, 6], { seed: 17 });
    tidy(() => {
      expect(rowsOf(m.generate(ids, { maxNewTokens: 16, graph: true }))).toEqual(rowsOf(m.generate(ids, { maxNewTokens: 16, graph: false, staticCache: true })));
    });
  });
});
