import { BackendError, concat, memory, randint, reshape, ShapeError, slice, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import { ConfigError, GPT2Cache, type GenerateOptions, GPT2LMHeadModel, ModelsError } from "@blocksparse/models";
import { GPT2StaticCache } from "../src/gpt2";
import { fromPretrained } from "@blocksparse/models/node";
import { beforeAll, describe, expect, it } from "vitest";
import { fixtures, leftBehind, relativeError } from "./helpers";

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
    // One sequence given as [T] continues as a batch of one and comes back as [T + steps], as it went in.
    const prompt = reshape(slice(ids, [1, 0], [1, 5]), [5]);
    const single = model.generate(prompt, { maxNewTokens: 8 });
    expect(single.shape).toEqual([13]);
    expect(Array.from(single.dataSync())).toEqual(want[1]);
    expect(model.generate(prompt, { maxNewTokens: 0 }).shape).toEqual([5]);
  });

  it("runs up to the context's last position: the last new token is chosen, never run, as transformers' generate", () => {
    // 32 positions (n_positions): the prompt fills the context and still gets its next token.
    const full = randint(0, 96, [2, 32], { seed: 17 });
    expect(rowsOf(model.generate(full, { maxNewTokens: 1 }))).toEqual(greedyByFullForward(model, full, 1));
    // 30 + 3: the third new token comes from position 31's logits, with the growing cache and the static one.
    const ids = slice(full, [0, 0], [2, 30]);
    const want = greedyByFullForward(model, ids, 3);
    expect(rowsOf(model.generate(ids, { maxNewTokens: 3 }))).toEqual(want);
    expect(rowsOf(model.generate(ids, { maxNewTokens: 3, staticCache: true }))).toEqual(want);
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
    expect(() => model.generate(ids, { maxNewTokens: 4 })).toThrow(ShapeError);
    expect(() => model.generate(ids, { maxNewTokens: 4 })).toThrow(/30 positions and 4 new tokens run 33 positions, past the model's 32/);
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

  it("a number option given as a string or a list is named as one, not printed as the number it reads like", () => {
    const ids = randint(0, 96, [1, 4], { seed: 54 });
    const refused = (options: object) => () => model.generate(ids, options as GenerateOptions);
    // Each read "got 3", "got 1", "got 0.5", "got 7": the value looked valid.
    expect(refused({ maxNewTokens: "3" })).toThrow(`generate: maxNewTokens must be an integer >= 0, got "3"`);
    expect(refused({ temperature: "1" })).toThrow('generate: temperature must be a finite number >= 0, got "1"');
    expect(refused({ temperature: 1, topK: "5" })).toThrow('generate: topK must be an integer >= 0, got "5"');
    expect(refused({ temperature: 1, topP: "0.5" })).toThrow('generate: topP must be a number in (0, 1], got "0.5"');
    expect(refused({ temperature: 1, seed: "7" })).toThrow('generate: seed must be an integer, got "7"');
    expect(refused({ eosTokenId: [[5]] })).toThrow("generate: eosTokenId must be an integer >= 0, got [5]");
    expect(refused({ temperature: 1, seed: 2n })).toThrow("generate: seed must be an integer, got 2n");
    expect(refused({ temperature: Number.NaN })).toThrow("generate: temperature must be a finite number >= 0, got NaN");
    expect(() => new GPT2LMHeadModel(model.config, { seed: "1" as never })).toThrow('GPT2LMHeadModel: seed must be an integer, got "1"');
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
    // A flag is true or false (or null: the default); the string "false" would have turned it on.
    for (const flag of ["staticCache", "graph"]) {
      for (const [value, shown] of [["false", '"false"'], [1, "1"], [{}, "{}"]] as const) {
        expect(unknown({ [flag]: value })).toThrow(ValueError);
        expect(unknown({ [flag]: value })).toThrow(`generate: ${flag} must be true or false, got ${shown}`);
      }
    }
    expect(model.generate(ids, { maxNewTokens: 2, staticCache: null, graph: null } as never).toArray()).toEqual(model.generate(ids, { maxNewTokens: 2 }).toArray());
    // Every known option with its default value is accepted.
    const all = model.generate(ids, { maxNewTokens: 2, temperature: 0, topK: 0, seed: 0, staticCache: false, graph: false });
    expect(all.toArray()).toEqual(model.generate(ids, { maxNewTokens: 2 }).toArray());
  });
});

/** The tokens transformers' warpers leave to draw from: temperature, then top-k (ties kept), then top-p (its code). */
function transformersCandidates(logits: number[], temperature: number, topK: number, topP: number): number[] {
  let scores = logits.map((v) => v / temperature);
  if (topK > 0) {
    // TopKLogitsWarper: scores < the k-th largest are removed.
    const kth = [...scores].sort((a, b) => b - a)[Math.min(topK, scores.length) - 1];
    scores = scores.map((v) => (v < kth ? -Infinity : v));
  }
  if (topP < 1) {
    // TopPLogitsWarper: ascending order, cumulative softmax; cumulative <= 1 - top_p is removed, the last token kept.
    const best = Math.max(...scores);
    const weights = scores.map((v) => Math.exp(v - best));
    const total = weights.reduce((a, b) => a + b, 0);
    const ascending = weights.map((_, i) => i).sort((a, b) => weights[a] - weights[b]);
    let cumulative = 0;
    ascending.forEach((i, rank) => {
      cumulative += weights[i] / total;
      if (cumulative <= 1 - topP && rank < ascending.length - 1) scores[i] = -Infinity;
    });
  }
  return scores.flatMap((v, i) => (v === -Infinity ? [] : [i]));
}

describe("generate as transformers' generate: the config's end token, top-p, top-k's ties", () => {
  /** A tiny GPT-2 whose larger initial weights make varied, well-separated next tokens. */
  const CONFIG = { vocab_size: 64, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, initializer_range: 0.3 };
  /**
   * A model whose hidden states are ones (ln_f's weight 0, bias 1), so that each token's logit is the sum of its head
   * row, and `head(rowValue)` that sets every element of row r of lm_head to rowValue(r).
   */
  function modelWithSettableLogits(): { model: GPT2LMHeadModel; head: (rowValue: (row: number) => number) => void } {
    const model = new GPT2LMHeadModel({ ...CONFIG, tie_word_embeddings: false }, { seed: 3 });
    const set = (parameter: { value: Tensor }, values: Float32Array, shape: number[]) => {
      const old = parameter.value;
      parameter.value = tensor(values, shape);
      old.dispose();
    };
    set(model.transformer.ln_f.weight as { value: Tensor }, new Float32Array(32), [32]);
    set(model.transformer.ln_f.bias as { value: Tensor }, new Float32Array(32).fill(1), [32]);
    const head = (rowValue: (row: number) => number) => set(model.lm_head.weight, Float32Array.from({ length: 64 * 32 }, (_, i) => rowValue(Math.floor(i / 32))), [64, 32]);
    return { model, head };
  }
  const ids = tensor([5, 17, 2, 30], [1, 4], "int32");
  const seeds = Array.from({ length: 60 }, (_, seed) => seed);
  /** The first new token of each seed's draw. */
  const firstTokens = (model: GPT2LMHeadModel, options: GenerateOptions) =>
    seeds.map((seed) => model.generate(ids, { ...options, maxNewTokens: 1, seed }).dataSync()[4]);
  /** The logits of the prompt's last position, in eval mode (no dropout), as generate runs. */
  const lastLogits = (model: GPT2LMHeadModel) => tidy(() => Array.from(slice(model.eval().forward(ids), [0, 3, 0], [1, 1, 64]).dataSync()));

  it("without eosTokenId a sequence stops at the config's eos_token_id; eosTokenId: null is no end token", () => {
    // Absent from config.json: transformers' default, 50256 (outside this vocabulary, so no end token here).
    const plain = new GPT2LMHeadModel(CONFIG, { seed: 7 });
    expect(plain.config.eos_token_id).toBe(50256);
    const full = rowsOf(plain.generate(ids, { maxNewTokens: 8 }));
    expect(full).toEqual(rowsOf(plain.generate(ids, { maxNewTokens: 8, eosTokenId: null })));
    // The first new token as the config's end token (the run goes on to other tokens after it without one).
    const eos = full[0][4];
    expect(full[0].slice(5).some((token) => token !== eos)).toBe(true);
    const withEos = new GPT2LMHeadModel({ ...CONFIG, eos_token_id: eos }, { seed: 7 });
    expect(withEos.config.eos_token_id).toBe(eos);
    const stopped = rowsOf(withEos.generate(ids, { maxNewTokens: 8 }));
    // The steps end once the only sequence has finished: the prompt and the end token.
    expect(stopped).toEqual([[...full[0].slice(0, 4), eos]]);
    expect(rowsOf(withEos.generate(ids, { maxNewTokens: 8, eosTokenId: undefined }))).toEqual(stopped);
    expect(rowsOf(withEos.generate(ids, { maxNewTokens: 8, eosTokenId: eos }))).toEqual(stopped);
    // null overrides the config: no end token; another id overrides it too.
    expect(rowsOf(withEos.generate(ids, { maxNewTokens: 8, eosTokenId: null }))).toEqual(full);
    expect(rowsOf(withEos.generate(ids, { maxNewTokens: 8, eosTokenId: 63 - eos }))).toEqual(rowsOf(plain.generate(ids, { maxNewTokens: 8, eosTokenId: 63 - eos })));
    // The same with the static cache and when sampling.
    expect(rowsOf(withEos.generate(ids, { maxNewTokens: 8, staticCache: true }))).toEqual(stopped);
    const sampled = { maxNewTokens: 8, temperature: 1, seed: 3 };
    const drawn = rowsOf(plain.generate(ids, sampled))[0];
    const drawnEos = new GPT2LMHeadModel({ ...CONFIG, eos_token_id: drawn[5] }, { seed: 7 });
    expect(rowsOf(drawnEos.generate(ids, sampled))).toEqual(rowsOf(plain.generate(ids, { ...sampled, eosTokenId: drawn[5] })));
    expect(rowsOf(drawnEos.generate(ids, sampled))[0].length).toBeLessThanOrEqual(6);
    // config.json's eos_token_id: null is no end token; one that is not a token id is a ConfigError.
    expect(new GPT2LMHeadModel({ ...CONFIG, eos_token_id: null }).config.eos_token_id).toBeNull();
    expect(() => new GPT2LMHeadModel({ ...CONFIG, eos_token_id: -1 })).toThrow(ConfigError);
    expect(() => new GPT2LMHeadModel({ ...CONFIG, eos_token_id: "50256" })).toThrow(/eos_token_id: expected a non-negative integer, a non-empty list of them, or null/);
  });

  describe("a list of end tokens (transformers' eos_token_id: [50256, 198])", () => {
    const pair = tensor([5, 17, 2, 30, 9, 40, 11, 3], [2, 4], "int32");
    /**
     * Greedy rows `full` (no end token) as generate ends them with the end tokens `list`: each row cut at its first
     * token of the list and padded with the list's first, the steps ending once every row has ended.
     */
    const endedAt = (full: number[][], length: number, list: number[]) => {
      const ends = full.map((row) => row.findIndex((token, t) => t >= length && list.includes(token)));
      const width = ends.includes(-1) ? full[0].length : Math.max(...ends) + 1;
      return full.map((row, b) => row.slice(0, width).map((token, t) => (ends[b] !== -1 && t > ends[b] ? list[0] : token)));
    };
    const plain = new GPT2LMHeadModel(CONFIG, { seed: 7 });
    const full = rowsOf(plain.generate(pair, { maxNewTokens: 8, eosTokenId: null }));
    const emitted = new Set(full.flatMap((row) => row.slice(4)));
    /** A token neither row emits (the list's first id: it only shows as padding). */
    const unused = Array.from({ length: 64 }, (_, id) => id).find((id) => !emitted.has(id)) as number;
    /** Row 0's second new token, which row 1 never emits: row 0 ends there, row 1 runs all its steps. */
    const second = full[0][5];

    it("a sequence stops at the list's second id and is padded with its first, from the option", () => {
      expect(full[1].slice(4)).not.toContain(second);
      expect(full[0].slice(4, 5)).not.toContain(second);
      const stopped = rowsOf(plain.generate(pair, { maxNewTokens: 8, eosTokenId: [unused, second] }));
      expect(stopped).toEqual(endedAt(full, 4, [unused, second]));
      expect(stopped[0]).toEqual([...full[0].slice(0, 6), ...new Array(6).fill(unused)]);
      expect(stopped[1]).toEqual(full[1]);
      // A list of one id is that id; the static cache stops as the growing one does; alone, row 0 stops after 2 steps.
      expect(rowsOf(plain.generate(pair, { maxNewTokens: 8, eosTokenId: [second] }))).toEqual(rowsOf(plain.generate(pair, { maxNewTokens: 8, eosTokenId: second })));
      expect(rowsOf(plain.generate(pair, { maxNewTokens: 8, eosTokenId: [unused, second], staticCache: true }))).toEqual(stopped);
      expect(rowsOf(plain.generate(slice(pair, [0, 0], [1, 4]), { maxNewTokens: 8, eosTokenId: [unused, second] }))).toEqual([full[0].slice(0, 6)]);
    });

    it("config.json's list loads and is generate's default, ids outside the vocabulary left out; an explicit option overrides it", () => {
      const listed = new GPT2LMHeadModel({ ...CONFIG, eos_token_id: [50256, unused, second] }, { seed: 7 });
      expect(listed.config.eos_token_id).toEqual([50256, unused, second]);
      // 50256 is outside the 64 tokens: the list is [unused, second], padded with unused.
      const stopped = rowsOf(listed.generate(pair, { maxNewTokens: 8 }));
      expect(stopped).toEqual(endedAt(full, 4, [unused, second]));
      expect(rowsOf(listed.generate(pair, { maxNewTokens: 8, staticCache: true }))).toEqual(stopped);
      // Sampling stops at the list too.
      const sampled = { maxNewTokens: 8, temperature: 1, seed: 3 };
      const drawn = rowsOf(plain.generate(pair, { ...sampled, eosTokenId: null }));
      const drawnList = new GPT2LMHeadModel({ ...CONFIG, eos_token_id: [unused, drawn[1][6]] }, { seed: 7 });
      expect(rowsOf(drawnList.generate(pair, sampled))).toEqual(rowsOf(plain.generate(pair, { ...sampled, eosTokenId: [unused, drawn[1][6]] })));
      // An explicit option, a list, an id or null, overrides the config's list.
      const other = [unused, full[1][6]];
      expect(rowsOf(listed.generate(pair, { maxNewTokens: 8, eosTokenId: other }))).toEqual(endedAt(full, 4, other));
      expect(rowsOf(listed.generate(pair, { maxNewTokens: 8, eosTokenId: other }))).not.toEqual(stopped);
      expect(rowsOf(listed.generate(pair, { maxNewTokens: 8, eosTokenId: full[1][6] }))).toEqual(endedAt(full, 4, [full[1][6]]));
      expect(rowsOf(listed.generate(pair, { maxNewTokens: 8, eosTokenId: null }))).toEqual(full);
      // A list with no id in the vocabulary is no end token.
      expect(rowsOf(new GPT2LMHeadModel({ ...CONFIG, eos_token_id: [50256, 50257] }, { seed: 7 }).generate(pair, { maxNewTokens: 8 }))).toEqual(full);
    });

    it("refuses an empty list or a list with an entry that is not a token id: a ConfigError in config.json, a ValueError as the option", () => {
      for (const bad of [[], [unused, -1], [unused, 1.5], [unused, "5"], [[unused]], {}]) {
        expect(() => new GPT2LMHeadModel({ ...CONFIG, eos_token_id: bad })).toThrow(ConfigError);
        expect(() => new GPT2LMHeadModel({ ...CONFIG, eos_token_id: bad })).toThrow(/eos_token_id[.0-9]*: expected a non-negative integer, a non-empty list of them, or null/);
      }
      const refused = (eosTokenId: unknown) => () => plain.generate(pair, { maxNewTokens: 2, eosTokenId: eosTokenId as number[] });
      expect(refused([])).toThrow(ValueError);
      expect(refused([])).toThrow(/eosTokenId is an empty list \(null: no end token\)/);
      expect(refused([unused, 64])).toThrow(ValueError);
      expect(refused([unused, 64])).toThrow(/eosTokenId 64 is outside the vocabulary of 64 tokens/);
      expect(refused([unused, 50256])).toThrow(/eosTokenId 50256 is outside the vocabulary of 64 tokens/);
      for (const bad of [-1, 1.5, "5", null, [unused]]) {
        expect(refused([unused, bad])).toThrow(ValueError);
        expect(refused([unused, bad])).toThrow(`eosTokenId must be an integer >= 0, got ${JSON.stringify(bad)}`);
      }
    });
  });

  it("the fixture's config.json end token (50256, outside its 96 tokens) is no end token", async () => {
    const model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    expect(model.config.eos_token_id).toBe(50256);
    const prompt = randint(0, 96, [2, 4], { seed: 61 });
    const generated = model.generate(prompt, { maxNewTokens: 6 });
    expect(generated.shape).toEqual([2, 10]);
    expect(rowsOf(generated)).toEqual(rowsOf(model.generate(prompt, { maxNewTokens: 6, eosTokenId: null })));
  });

  it("topP draws from the smallest most probable set reaching topP, after the temperature and topK, as transformers", () => {
    const model = new GPT2LMHeadModel(CONFIG, { seed: 3 });
    const logits = lastLogits(model);
    for (const [temperature, topK, topP] of [
      [1, 0, 0.45],
      [0.5, 0, 0.55],
      [1, 3, 0.6],
      [1, 10, 0.9],
    ]) {
      const want = transformersCandidates(logits, temperature, topK, topP);
      // Each case keeps a few tokens: fewer than topK or top-p alone would, so the order matters.
      expect(want.length).toBeGreaterThan(1);
      expect(want.length).toBeLessThan(transformersCandidates(logits, 1, topK, 1).length);
      expect(want.length).toBeLessThan(transformersCandidates(logits, temperature, 0, 1).length);
      const drawn = new Set(firstTokens(model, { temperature, topK, topP }));
      expect([...drawn].sort((a, b) => a - b)).toEqual(want);
    }
    // topP after topK: top-p over the 3 most likely tokens' renormalised probabilities, not top-p, then the 3.
    expect(transformersCandidates(logits, 1, 3, 0.6).length).toBe(2);
    // At least one token, whatever topP: the most likely, as greedy decoding (over several steps too).
    const greedy = rowsOf(model.generate(ids, { maxNewTokens: 6 }));
    expect(rowsOf(model.generate(ids, { maxNewTokens: 6, temperature: 2, topP: 1e-9, seed: 5 }))).toEqual(greedy);
    expect(rowsOf(model.generate(ids, { maxNewTokens: 6, temperature: 2, topK: 4, topP: 1e-9, seed: 5 }))).toEqual(greedy);
    // topP 1 is all tokens: the draws of no topP.
    const sampled = { maxNewTokens: 6, temperature: 0.9, topK: 8, seed: 4 };
    expect(rowsOf(model.generate(ids, { ...sampled, topP: 1 }))).toEqual(rowsOf(model.generate(ids, sampled)));
    // Greedy decoding (temperature 0) ignores topP, as topK.
    expect(rowsOf(model.generate(ids, { maxNewTokens: 6, topP: 0.3 }))).toEqual(greedy);
    // The same draws with the static cache.
    const nucleus = { maxNewTokens: 6, temperature: 1, topK: 10, topP: 0.8, seed: 9 };
    expect(rowsOf(model.generate(ids, { ...nucleus, staticCache: true }))).toEqual(rowsOf(model.generate(ids, nucleus)));
  });

  it("topP outside (0, 1] is a ValueError naming it", () => {
    const model = new GPT2LMHeadModel(CONFIG, { seed: 3 });
    for (const topP of [0, -0.5, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "0.5"]) {
      expect(() => model.generate(ids, { temperature: 1, topP } as GenerateOptions)).toThrow(ValueError);
      expect(() => model.generate(ids, { temperature: 1, topP } as GenerateOptions)).toThrow(`generate: topP must be a number in (0, 1], got ${typeof topP === "string" ? `"${topP}"` : topP}`);
    }
    expect(() => model.generate(ids, { top_p: 0.9 } as GenerateOptions)).toThrow(/unknown option 'top_p' \(did you mean topP\?\)/);
    // Checked before anything runs, greedy too.
    expect(() => model.generate(ids, { topP: 2 })).toThrow(/topP must be a number in \(0, 1\], got 2/);
  });

  it("sampling from logits with a NaN or no finite value is a ModelsError naming the sequence, not an arbitrary token", () => {
    const { model, head } = modelWithSettableLogits();
    const sampled = { maxNewTokens: 3, temperature: 1, topK: 5, topP: 0.9 };
    for (const [what, value] of [["NaN", Number.NaN], ["all -Infinity", -Infinity], ["+Infinity", Infinity]] as const) {
      head((row) => (row === 7 || what === "all -Infinity" ? value : 0.01 * row));
      expect(() => model.generate(ids, sampled), what).toThrow(ModelsError);
      expect(() => model.generate(ids, { ...sampled, topK: 0, topP: 1 }), what).toThrow(/generate: sequence 0's logits hold NaN or no finite value \(new token 0\): nothing to sample/);
      expect(leftBehind(() => model.generate(ids, sampled)), what).toBe(0);
    }
    expect(model.training).toBe(true);
    // Some -Infinity logits (tokens ruled out) are no problem: only the others are drawn.
    head((row) => (row < 60 ? -Infinity : 0.01 * row));
    const drawn = new Set(rowsOf(model.generate(ids, { maxNewTokens: 8, temperature: 1 }))[0].slice(4));
    expect([...drawn].every((token) => token >= 60)).toBe(true);
  });

  it("greedy decoding on a host backend refuses logits with a NaN or no finite value as sampling does, not token 0 or the NaN's", () => {
    const { model, head } = modelWithSettableLogits();
    for (const [what, value] of [["NaN", Number.NaN], ["all -Infinity", -Infinity], ["+Infinity", Infinity]] as const) {
      head((row) => (row === 7 || what === "all -Infinity" ? value : 0.01 * row));
      for (const staticCache of [false, true]) {
        expect(() => model.generate(ids, { maxNewTokens: 3, staticCache }), what).toThrow(ModelsError);
        expect(() => model.generate(ids, { maxNewTokens: 3, staticCache }), what).toThrow(/generate: sequence 0's logits hold NaN or no finite value \(new token 0\)/);
        expect(leftBehind(() => model.generate(ids, { maxNewTokens: 3, staticCache })), what).toBe(0);
      }
    }
    expect(model.training).toBe(true);
    // Finite logits: the largest, the first of a tie (argmax's), as before; -Infinity logits only rule tokens out.
    head((row) => (row < 60 ? -Infinity : row === 62 || row === 63 ? 1 : 0));
    expect(rowsOf(model.generate(ids, { maxNewTokens: 2 }))[0].slice(4)).toEqual([62, 62]);
  });

  it("topK keeps every token tied with the k-th largest logit, as transformers' top_k", () => {
    // An untied head whose rows a+1 and a+2 are row a's, a the most likely token: three logits tied at the top.
    const model = new GPT2LMHeadModel({ ...CONFIG, tie_word_embeddings: false }, { seed: 3 });
    const before = lastLogits(model);
    const a = before.indexOf(Math.max(...before));
    const width = CONFIG.n_embd;
    const weight = model.lm_head.weight.value.dataSync().slice();
    for (const row of [a + 1, a + 2]) weight.set(weight.subarray(a * width, (a + 1) * width), (row % 64) * width);
    const old = model.lm_head.weight.value;
    model.lm_head.weight.value = tensor(weight, [64, width]);
    old.dispose();
    const logits = lastLogits(model);
    const tied = [a, (a + 1) % 64, (a + 2) % 64].sort((x, y) => x - y);
    expect(tied.map((i) => logits[i])).toEqual([logits[a], logits[a], logits[a]]);
    for (const topK of [1, 2, 3]) {
      expect(transformersCandidates(logits, 1, topK, 1)).toEqual(tied);
      expect([...new Set(firstTokens(model, { temperature: 1, topK }))].sort((x, y) => x - y)).toEqual(tied);
    }
    // The next token below them joins at topK 4.
    expect(new Set(firstTokens(model, { temperature: 1, topK: 4 })).size).toBe(4);
  });
});
