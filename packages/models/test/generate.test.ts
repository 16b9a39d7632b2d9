import { BackendError, concat, memory, randint, reshape, ShapeError, slice, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import { GPT2Cache, type GenerateOptions, type GPT2LMHeadModel } from "@blocksparse/models";
import { GPT2StaticCache } from "../src/gpt2";
import { fromPretrained } from "@blocksparse/models/node";
import { beforeAll, describe, expect, it } from "vitest";
import { fixtures, relativeError } from "./helpers";

/** Greedy decoding by the full forward, recomputed over all positions at each step (no cache): the rows it ends with. */
function greedyByFullForward(model: GPT2LMHeadModel, ids: Tensor, steps: number): number[][] {
  const rows = rowsOf(ids);
  for (let step = 0; step < steps; step++) {
    const width = rows[0].length;
    const values = tidy(() => {
      const logits = model.forward(tensor(rows.flat(), [rows.length, width], "int32"));
      const vocab = logits.shape[2];
      return slice(logits, [0, width - 1, 0], [rows.length, 1, vocab]).dataSync();
    });
    const vocab = values.length / rows.length;
    rows.forEach((row, b) => {
      let best = 0;
      for (let v = 1; v < vocab; v++) if (values[b * vocab + v] > values[b * vocab + best]) best = v;
      row.push(best);
    });
  }
  return rows;
}

function rowsOf(t: Tensor): number[][] {
  const values = t.dataSync();
  const [batch, width] = t.shape;
  return Array.from({ length: batch }, (_, b) => Array.from(values.subarray(b * width, (b + 1) * width)));
}

describe("GPT-2 with a key/value cache", () => {
  let model: GPT2LMHeadModel;
  beforeAll(async () => {
    model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    model.eval();
  });

  it("forward over cached positions gives the logits of the full forward, position by position", () => {
    const ids = randint(0, 96, [2, 12], { seed: 3 });
    const full = model.forward(ids);
    const cache = new GPT2Cache(model.transformer.h.length);
    try {
      // A prompt of 7 positions, then 2, then one at a time.
      const parts: Tensor[] = [];
      for (const [start, size] of [[0, 7], [7, 2], [9, 1], [10, 1], [11, 1]]) {
        parts.push(model.forward(slice(ids, [0, start], [2, size]), cache));
        expect(cache.length).toBe(start + size);
        expect(cache.batch).toBe(2);
      }
      expect(relativeError(concat(parts, 1), full)).toBeLessThanOrEqual(1e-5);
    } finally {
      cache.dispose();
    }
    expect(cache.length).toBe(0);
  });

  it("greedy generate continues each sequence as the full forward's most likely tokens do", () => {
    const ids = randint(0, 96, [3, 5], { seed: 11 });
    const generated = model.generate(ids, { maxNewTokens: 8 });
    expect(generated.shape).toEqual([3, 13]);
    expect(generated.dtype).toBe("int32");
    const want = greedyByFullForward(model, ids, 8);
    expect(rowsOf(generated)).toEqual(want);
    expect(rowsOf(model.generate(ids, { maxNewTokens: 0 }))).toEqual(rowsOf(ids));
    // One sequence given as [T] is a batch of one.
    const single = model.generate(reshape(slice(ids, [1, 0], [1, 5]), [5]), { maxNewTokens: 8 });
    expect(rowsOf(single)).toEqual([want[1]]);
  });

  it("sampling repeats with the seed, top-k 1 is the greedy choice, and a sequence stops at the end token", () => {
    const ids = randint(0, 96, [2, 4], { seed: 21 });
    const options = { maxNewTokens: 10, temperature: 0.8, topK: 5, seed: 7 };
    const first = rowsOf(model.generate(ids, options));
    expect(rowsOf(model.generate(ids, options))).toEqual(first);
    expect(rowsOf(model.generate(ids, { ...options, seed: 8 }))).not.toEqual(first);
    // topK 1 is the greedy choice whatever the temperature.
    expect(rowsOf(model.generate(ids, { maxNewTokens: 6, temperature: 2, topK: 1, seed: 3 }))).toEqual(rowsOf(model.generate(ids, { maxNewTokens: 6 })));
    // The greedy run's first new token of sequence 0 as the end token: sequence 0 stops at once and is padded with it.
    const greedy = rowsOf(model.generate(ids, { maxNewTokens: 6 }));
    const eos = greedy[0][4];
    const stopped = rowsOf(model.generate(ids, { maxNewTokens: 6, eosTokenId: eos }));
    expect(stopped[0].slice(4).every((token) => token === eos)).toBe(true);
    if (!greedy[1].slice(4).includes(eos)) {
      expect(stopped[1]).toEqual(greedy[1]);
    }
  });

  it("leaves no tensor behind and each module's mode as it was", () => {
    const ids = randint(0, 96, [2, 6], { seed: 31 });
    model.train();
    model.transformer.h.children()[0].eval();
    const before = memory().numTensors;
    const out = model.generate(ids, { maxNewTokens: 5, temperature: 1, seed: 1 });
    out.dispose();
    expect(memory().numTensors).toBe(before);
    expect(model.training).toBe(true);
    expect(model.transformer.h.children()[0].training).toBe(false);
    expect(model.transformer.h.children()[1].training).toBe(true);
    model.eval();
  });

  it("a static cache: forward writes positions in place and gives the full forward's logits, position by position", () => {
    const ids = randint(0, 96, [2, 12], { seed: 5 });
    const full = model.forward(ids);
    // Longer than the positions written: the unwritten ones are masked.
    const cache = new GPT2StaticCache(16, ids);
    try {
      const parts: Tensor[] = [];
      for (const [start, size] of [[0, 7], [7, 2], [9, 1], [10, 1], [11, 1]]) {
        parts.push(model.lm_head.forward(model.transformer.forwardStatic(slice(ids, [0, start], [2, size]), cache)));
        expect(Array.from(cache.position.dataSync())).toEqual([start + size]);
      }
      expect(relativeError(concat(parts, 1), full)).toBeLessThanOrEqual(1e-5);
      // The keys of positions never written stay zero.
      const keys = cache.keys[0];
      expect(Array.from(slice(keys, [0, 0, 12, 0], [2, keys.shape[1], 4, keys.shape[3]]).dataSync()).every((v) => v === 0)).toBe(true);
    } finally {
      cache.dispose();
    }
  });

  it("generate with a static cache makes the tokens of the growing cache, greedy and sampled", () => {
    const ids = randint(0, 96, [3, 5], { seed: 13 });
    const before = memory().numTensors;
    tidy(() => {
      expect(rowsOf(model.generate(ids, { maxNewTokens: 8, staticCache: true }))).toEqual(rowsOf(model.generate(ids, { maxNewTokens: 8 })));
      const sampled = { maxNewTokens: 9, temperature: 0.9, topK: 8, seed: 4 };
      expect(rowsOf(model.generate(ids, { ...sampled, staticCache: true }))).toEqual(rowsOf(model.generate(ids, sampled)));
      const greedy = rowsOf(model.generate(ids, { maxNewTokens: 6 }));
      const eos = greedy[2][5];
      const stopped = rowsOf(model.generate(ids, { maxNewTokens: 6, eosTokenId: eos, staticCache: true }));
      expect(stopped[2].slice(5).every((token) => token === eos)).toBe(true);
      expect(stopped).toEqual(rowsOf(model.generate(ids, { maxNewTokens: 6, eosTokenId: eos })));
    });
    // The cache, its positions and masks are all freed.
    expect(memory().numTensors).toBe(before);
  });

  it("graph needs a backend that records graphs, and says so", () => {
    const ids = randint(0, 96, [1, 4], { seed: 51 });
    expect(() => model.generate(ids, { maxNewTokens: 3, graph: true })).toThrow(BackendError);
    expect(() => model.generate(ids, { maxNewTokens: 3, graph: true })).toThrow(/graph needs a backend that records graphs \(cuda\); 'js' does not/);
  });

  it("names what was wrong: options, lengths past the model's positions, a cache of another batch", () => {
    const ids = randint(0, 96, [2, 30], { seed: 41 });
    expect(() => model.generate(ids, { maxNewTokens: -1 })).toThrow(ValueError);
    expect(() => model.generate(ids, { maxNewTokens: 1.5 })).toThrow(/maxNewTokens must be an integer/);
    expect(() => model.generate(ids, { temperature: -1 })).toThrow(/temperature/);
    expect(() => model.generate(ids, { topK: -2 })).toThrow(/topK/);
    expect(() => model.generate(ids, { maxNewTokens: 3 })).toThrow(ShapeError);
    expect(() => model.generate(ids, { maxNewTokens: 3 })).toThrow(/30 positions and 3 new tokens exceed the model's 32/);
    const cache = new GPT2Cache(model.transformer.h.length);
    try {
      model.forward(slice(ids, [0, 0], [2, 30]), cache);
      expect(() => model.forward(slice(ids, [0, 0], [2, 3]), cache)).toThrow(/30 cached and 3 new positions exceed the model's 32/);
      expect(() => model.forward(slice(ids, [0, 0], [1, 1]), cache)).toThrow(/inputIds has 1 sequences, the cache holds 2/);
      expect(() => model.forward(slice(ids, [0, 0], [2, 1]), new GPT2Cache(5))).toThrow(/cache must be a GPT2Cache of 2 blocks/);
    } finally {
      cache.dispose();
    }
  });

  it("a batch of no sequences gives no sequences, null options are the defaults, and a seed that is not an integer is named", () => {
    const none = model.generate(tensor([], [0, 3], "int32"), { maxNewTokens: 2 });
    expect(none.shape).toEqual([0, 3]);
    none.dispose();
    const ids = randint(0, 96, [1, 4], { seed: 52 });
    expect(model.generate(ids, null).toArray()).toEqual(model.generate(ids).toArray());
    expect(() => model.generate(ids, { temperature: 1, seed: Number.NaN })).toThrow(ValueError);
    expect(() => model.generate(ids, { temperature: 1, seed: 1.5 })).toThrow(/generate: seed must be an integer, got 1.5/);
  });

  it("an unknown option is refused, naming the option it may stand for, not ignored", () => {
    const ids = randint(0, 96, [1, 4], { seed: 53 });
    const unknown = (options: object) => () => model.generate(ids, options as GenerateOptions);
    expect(unknown({ max_new_tokens: 2 })).toThrow(ValueError);
    expect(unknown({ max_new_tokens: 2 })).toThrow(/unknown option 'max_new_tokens' \(did you mean maxNewTokens\?\)/);
    expect(unknown({ top_k: 3 })).toThrow(/did you mean topK\?/);
    expect(unknown({ attention_mask: [[1, 1, 1, 1]] })).toThrow(/unknown option 'attention_mask' \(did you mean attentionMask\?\)/);
    expect(unknown({ doSample: true })).toThrow(/unknown option 'doSample'; the options are maxNewTokens, temperature/);
    expect(() => model.generate(ids, 3 as unknown as GenerateOptions)).toThrow(/generate: options must be an object, got number/);
    // Every known option with its default value is accepted.
    const all = model.generate(ids, { maxNewTokens: 2, temperature: 0, topK: 0, seed: 0, staticCache: false, graph: false });
    expect(all.toArray()).toEqual(model.generate(ids, { maxNewTokens: 2 }).toArray());
  });
});
