import { backward } from "@blocksparse/autograd";
import { cast, DTypeError, memory, mul, ShapeError, slice, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import { type GenerateOptions, type GPT2Block, GPT2Cache, type GPT2Inputs, GPT2LMHeadModel } from "@blocksparse/models";
import { fromPretrained } from "@blocksparse/models/node";
import { afterAll, describe, expect, it } from "vitest";
import { fixtures, leftBehind, relativeError } from "./helpers";

/** A tiny GPT-2 whose larger initial weights make varied, well-separated next tokens (greedy ties would be luck). */
const CONFIG = { vocab_size: 64, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, initializer_range: 0.3 };

/** Prompts of lengths 6, 3 and 4. */
const PROMPTS = [
  [5, 17, 2, 30, 11, 8],
  [40, 3, 57],
  [21, 9, 33, 12],
];
const PAD = 63;

/** The prompts padded on the left to one length (with `pad`), and their mask, int32 [B, T]. */
function leftPadded(prompts: number[][], pad = PAD): { ids: Tensor; mask: Tensor } {
  const length = Math.max(...prompts.map((p) => p.length));
  const rows = prompts.map((p) => [...new Array<number>(length - p.length).fill(pad), ...p]);
  const flags = prompts.map((p) => rows[0].map((_, t) => (t < length - p.length ? 0 : 1)));
  return { ids: tensor(rows.flat(), [prompts.length, length], "int32"), mask: tensor(flags.flat(), [prompts.length, length], "int32") };
}

function rowsOf(t: Tensor): number[][] {
  const values = t.dataSync();
  const [batch, width] = t.shape;
  return Array.from({ length: batch }, (_, b) => Array.from(values.subarray(b * width, (b + 1) * width)));
}

/** Positions start..start+count-1 of row b of logits [B, T, V]. */
const positionsOf = (logits: Tensor, b: number, start: number, count: number) => slice(logits, [b, start, 0], [1, count, logits.shape[2]]);

describe("GPT-2 with an attention mask (left-padded batches)", () => {
  const model = new GPT2LMHeadModel(CONFIG, { seed: 7 });
  model.eval();
  afterAll(() => {
    for (const p of model.parameters()) p.dispose();
  });

  it("a left-padded batch gives each prompt's logits alone at its tokens, whatever the padding's ids", () => {
    tidy(() => {
      const { ids, mask } = leftPadded(PROMPTS);
      const padded = model.forward(ids, { attentionMask: mask });
      expect(padded.shape).toEqual([3, 6, 64]);
      PROMPTS.forEach((prompt, b) => {
        const alone = model.forward(tensor(prompt, [1, prompt.length], "int32"));
        expect(relativeError(positionsOf(padded, b, 6 - prompt.length, prompt.length), alone)).toBeLessThanOrEqual(1e-5);
      });
      // Other padding ids, and a float mask: the tokens' logits do not move.
      const other = model.forward(leftPadded(PROMPTS, 0).ids, { attentionMask: tensor(mask.toArray(), [3, 6], "float32") });
      PROMPTS.forEach((prompt, b) => {
        const start = 6 - prompt.length;
        expect(relativeError(positionsOf(other, b, start, prompt.length), positionsOf(padded, b, start, prompt.length))).toBeLessThanOrEqual(1e-6);
      });
      // GPT2Model takes it too, and so does a [T] sequence with a [T] mask.
      const hidden = model.transformer.forward(ids, { attentionMask: mask });
      expect(hidden.shape).toEqual([3, 6, 32]);
      const one = model.forward(tensor([PAD, PAD, ...PROMPTS[1]], [5], "int32"), { attentionMask: tensor([0, 0, 1, 1, 1], [5], "int32") });
      expect(relativeError(positionsOf(one, 0, 2, 3), model.forward(tensor(PROMPTS[1], [1, 3], "int32")))).toBeLessThanOrEqual(1e-5);
    });
  });

  for (const dtype of ["bfloat16", "float16"] as const) {
    it(`in ${dtype}, padding is masked with the dtype's most negative value: finite logits, those of the prompt alone`, async () => {
      const half = (await fromPretrained(fixtures("gpt2"), { dtype })) as GPT2LMHeadModel;
      tidy(() => {
        const { ids, mask } = leftPadded(PROMPTS);
        const padded = cast(half.forward(ids, { attentionMask: mask }), "float32");
        expect(padded.dataSync().every(Number.isFinite)).toBe(true);
        const alone = cast(half.forward(tensor(PROMPTS[1], [1, 3], "int32")), "float32");
        expect(relativeError(slice(padded, [1, 3, 0], [1, 3, 96]), alone)).toBeLessThanOrEqual(2e-2);
      });
      for (const p of half.parameters()) p.dispose();
    });
  }

  it("in float16, a padding query whose scores are far below zero stays finite: the prompts' logits and the loss are not NaN", () => {
    // Large query-key products (real checkpoints have them) put a padding query's scores below -16, where adding
    // float16's most negative value overflowed to -Infinity: the fully masked row's softmax was NaN, and the NaN
    // reached the tokens through the next layers' keys and values.
    const half = new GPT2LMHeadModel({ ...CONFIG, initializer_range: 0.02, n_layer: 4 }, { seed: 5 });
    for (const block of half.transformer.h) {
      const qkv = (block as GPT2Block).attn.c_attn.weight;
      qkv.value = tidy(() => mul(qkv.value, 300));
    }
    half.to("float16").eval();
    try {
      tidy(() => {
        const { ids, mask } = leftPadded(PROMPTS);
        const padded = cast(half.forward(ids, { attentionMask: mask }), "float32");
        expect(padded.dataSync().every(Number.isFinite)).toBe(true);
        PROMPTS.forEach((prompt, b) => {
          const alone = cast(half.forward(tensor(prompt, [1, prompt.length], "int32")), "float32");
          expect(relativeError(positionsOf(padded, b, 6 - prompt.length, prompt.length), alone)).toBeLessThanOrEqual(2e-2);
        });
        const labels = tensor(rowsOf(ids).flatMap((row, b) => row.map((id, t) => (rowsOf(mask)[b][t] ? id : -100))), [3, 6], "int32");
        expect(Number.isFinite(half.loss(ids, labels, { attentionMask: mask }).dataSync()[0])).toBe(true);
      });
    } finally {
      for (const p of half.parameters()) p.dispose();
    }
  });

  it("with a cache: a padded prompt, then one token with the mask extended by 1, gives the unpadded sequence's logits", () => {
    tidy(() => {
      const { ids, mask } = leftPadded(PROMPTS);
      const next = [7, 44, 19];
      const cache = new GPT2Cache(model.transformer.h.length);
      try {
        const prompt = model.forward(ids, { cache, attentionMask: mask });
        const extended = tensor(
          rowsOf(mask).flatMap((row) => [...row, 1]),
          [3, 7],
          "int32",
        );
        const step = model.forward(tensor(next, [3, 1], "int32"), { cache, attentionMask: extended });
        expect(cache.length).toBe(7);
        PROMPTS.forEach((tokens, b) => {
          const alone = model.forward(tensor([...tokens, next[b]], [1, tokens.length + 1], "int32"));
          expect(relativeError(positionsOf(step, b, 0, 1), positionsOf(alone, 0, tokens.length, 1))).toBeLessThanOrEqual(1e-5);
          expect(relativeError(positionsOf(prompt, b, 6 - tokens.length, tokens.length), positionsOf(alone, 0, 0, tokens.length))).toBeLessThanOrEqual(1e-5);
        });
      } finally {
        cache.dispose();
      }
    });
  });

  it("the loss with a mask is each prompt's loss alone, weighted by its labels", () => {
    tidy(() => {
      const { ids, mask } = leftPadded(PROMPTS);
      // Padding, and each prompt's first token (nothing of its own predicts it), labelled -100.
      const labels = rowsOf(ids).map((row, b) => row.map((id, t) => (t <= 6 - PROMPTS[b].length ? -100 : id)));
      const got = model.loss(ids, tensor(labels.flat(), [3, 6], "int32"), { attentionMask: mask }).item();
      let total = 0;
      for (const prompt of PROMPTS) {
        const alone = tensor(prompt, [1, prompt.length], "int32");
        total += model.loss(alone, alone).item() * (prompt.length - 1);
      }
      expect(got).toBeCloseTo(total / PROMPTS.reduce((n, p) => n + p.length - 1, 0), 5);
      // It trains: the gradient reaches the position table through the positions the mask gives.
      backward(model.loss(ids, tensor(labels.flat(), [3, 6], "int32"), { attentionMask: mask }));
      const grad = model.transformer.wpe.weight.grad!.dataSync();
      expect(grad.subarray(0, 6 * 32).some((v) => v !== 0)).toBe(true);
      expect(grad.subarray(6 * 32).every((v) => v === 0)).toBe(true);
      model.zeroGrad();
    });
  });

  it("greedy generate continues each padded prompt with the tokens it gets alone", () => {
    tidy(() => {
      const { ids, mask } = leftPadded(PROMPTS);
      const generated = rowsOf(model.generate(ids, { maxNewTokens: 6, attentionMask: mask }));
      const padded = rowsOf(ids);
      PROMPTS.forEach((prompt, b) => {
        const alone = rowsOf(model.generate(tensor(prompt, [1, prompt.length], "int32"), { maxNewTokens: 6 }))[0];
        expect(generated[b]).toEqual([...padded[b], ...alone.slice(prompt.length)]);
      });
      // The new tokens are not all one token (a test that padding moved nothing would pass on that by luck).
      expect(new Set(generated.flatMap((row) => row.slice(6))).size).toBeGreaterThan(3);
    });
  });

  it("sampling with a mask repeats with the seed, and an end token stops a padded prompt", () => {
    tidy(() => {
      const { ids, mask } = leftPadded(PROMPTS);
      const sampled = { maxNewTokens: 8, temperature: 0.9, topK: 10, seed: 5, attentionMask: mask };
      const first = rowsOf(model.generate(ids, sampled));
      expect(rowsOf(model.generate(ids, sampled))).toEqual(first);
      expect(rowsOf(model.generate(ids, { ...sampled, seed: 6 }))).not.toEqual(first);
      // topK 1 is the greedy choice.
      const greedy = rowsOf(model.generate(ids, { maxNewTokens: 6, attentionMask: mask }));
      expect(rowsOf(model.generate(ids, { ...sampled, maxNewTokens: 6, topK: 1 }))).toEqual(greedy);
      // Prompt 1 (padded) ends at its first new token, and is padded with it; the others go on as before.
      const eos = greedy[1][6];
      const stopped = rowsOf(model.generate(ids, { maxNewTokens: 6, attentionMask: mask, eosTokenId: eos }));
      expect(stopped[1].slice(6).every((token) => token === eos)).toBe(true);
      for (const b of [0, 2]) {
        const end = greedy[b].indexOf(eos, 6);
        if (end === -1) expect(stopped[b]).toEqual(greedy[b]);
        else expect(stopped[b].slice(0, end + 1)).toEqual(greedy[b].slice(0, end + 1));
      }
    });
  });

  it("a mask of ones is no mask: the same values, in forward, the cache and every generate path", () => {
    tidy(() => {
      const ids = tensor(PROMPTS[0], [2, 3], "int32");
      const ones = tensor([1, 1, 1, 1, 1, 1], [2, 3], "int32");
      expect(model.forward(ids, { attentionMask: ones }).toArray()).toEqual(model.forward(ids).toArray());
      expect(model.forward(ids, { attentionMask: tensor([1, 1, 1, 1, 1, 1], [2, 3]) }).toArray()).toEqual(model.forward(ids).toArray());
      expect(model.forward(ids, { attentionMask: null }).toArray()).toEqual(model.forward(ids).toArray());
      expect(model.loss(ids, ids, { attentionMask: ones }).item()).toBe(model.loss(ids, ids).item());
      for (const options of [{ maxNewTokens: 5 }, { maxNewTokens: 5, staticCache: true }, { maxNewTokens: 5, temperature: 1, seed: 3 }]) {
        expect(model.generate(ids, { ...options, attentionMask: ones }).toArray()).toEqual(model.generate(ids, options).toArray());
      }
      const cache = new GPT2Cache(model.transformer.h.length);
      const other = new GPT2Cache(model.transformer.h.length);
      try {
        model.forward(ids, { cache, attentionMask: ones });
        model.forward(ids, other);
        const step = tensor([4, 5], [2, 1], "int32");
        expect(model.forward(step, { cache, attentionMask: tensor([1, 1, 1, 1, 1, 1, 1, 1], [2, 4], "int32") }).toArray()).toEqual(
          model.forward(step, other).toArray(),
        );
      } finally {
        cache.dispose();
        other.dispose();
      }
    });
  });

  it("names what is wrong with a mask, with typed errors, and leaves nothing allocated", () => {
    const { ids, mask } = leftPadded(PROMPTS);
    const generate = (options: object) => () => model.generate(ids, { maxNewTokens: 2, ...options } as GenerateOptions);
    const forward = (inputs: object) => () => model.forward(ids, inputs as GPT2Inputs);
    const short = tensor([1, 1], [1, 2], "int32");
    const cases: [() => unknown, new (...args: never[]) => Error, RegExp][] = [
      [generate({ attentionMask: tensor([1, 1, 1, 1, 1], [1, 5], "int32") }), ShapeError, /generate: attentionMask has shape \[1,5\], expected \[3,6\]/],
      [forward({ attentionMask: tensor(new Array(15).fill(1), [3, 5], "int32") }), ShapeError, /GPT2Model\(transformer\): attentionMask has shape \[3,5\], expected \[3,6\]/],
      [generate({ attentionMask: tensor([...mask.toArray().slice(0, 17), 2], [3, 6], "int32") }), ValueError, /attentionMask holds 2, expected only 0 \(padding\) and 1 \(token\)/],
      [forward({ attentionMask: tensor([...mask.toArray().slice(0, 17), 0.5], [3, 6]) }), ValueError, /attentionMask holds 0.5/],
      [generate({ attentionMask: tensor([...mask.toArray().slice(0, 6), 0, 0, 0, 0, 0, 0, ...mask.toArray().slice(12)], [3, 6], "int32") }), ValueError, /attentionMask's row 1 is all padding/],
      [generate({ attentionMask: tensor([...mask.toArray().slice(0, 11), 0, ...mask.toArray().slice(12)], [3, 6], "int32") }), ValueError, /attentionMask's row 1 ends in padding: pad the prompts on the left/],
      [generate({ attentionMask: mask, graph: true }), ValueError, /an attentionMask with padding needs the growing cache \(the static cache and the graph attend to every position\): leave graph and staticCache off/],
      [generate({ attentionMask: mask, staticCache: true }), ValueError, /the static cache and the graph attend to every position/],
      [generate({ attentionMask: [[1, 1, 1, 1, 1, 1]] }), DTypeError, /attentionMask must be an int32 or float Tensor, got object/],
      [forward({ attentionMask: "ones" }), DTypeError, /attentionMask must be an int32 or float Tensor, got string/],
      [generate({ attention_mask: mask }), ValueError, /unknown option 'attention_mask' \(did you mean attentionMask\?\)/],
      [forward({ attention_mask: mask }), ValueError, /GPT2Model\(transformer\): unknown option 'attention_mask' \(did you mean attentionMask\?\)/],
      [forward({ past_key_values: null }), ValueError, /unknown option 'past_key_values'; the options are attentionMask, cache/],
      [() => model.forward(ids, mask as never), ValueError, /GPT2Model\(transformer\): options must be an object, got a Tensor/],
      [() => model.loss(ids, ids, { attention_mask: mask } as never), ValueError, /loss: unknown option 'attention_mask' \(did you mean attentionMask\?\)/],
      [() => model.loss(ids, ids, { attentionMask: short }), ShapeError, /attentionMask has shape \[1,2\], expected \[3,6\]/],
      [forward({ cache: new GPT2Cache(5), attentionMask: mask }), ValueError, /cache must be a GPT2Cache of 2 blocks/],
    ];
    for (const [run, type, message] of cases) {
      expect(run).toThrow(type);
      expect(run).toThrow(message);
      expect(leftBehind(run)).toBe(0);
    }
    // With a cache the mask covers the cached positions and the new ones.
    const cache = new GPT2Cache(model.transformer.h.length);
    try {
      model.forward(ids, { cache, attentionMask: mask });
      const step = tensor([1, 2, 3], [3, 1], "int32");
      expect(() => model.forward(step, { cache, attentionMask: tensor([1, 1, 1], [3, 1], "int32") })).toThrow(/attentionMask has shape \[3,1\], expected \[3,7\]/);
      step.dispose();
    } finally {
      cache.dispose();
    }
    for (const t of [ids, mask, short]) t.dispose();
  });

  it("leaves no tensor behind: forward, the cache, loss and generate with a mask, greedy and sampled", () => {
    const { ids, mask } = leftPadded(PROMPTS);
    const before = memory().numTensors;
    model.forward(ids, { attentionMask: mask }).dispose();
    model.loss(ids, ids, { attentionMask: mask }).dispose();
    const cache = new GPT2Cache(model.transformer.h.length);
    model.forward(ids, { cache, attentionMask: mask }).dispose();
    cache.dispose();
    model.generate(ids, { maxNewTokens: 4, attentionMask: mask }).dispose();
    model.generate(ids, { maxNewTokens: 4, attentionMask: mask, temperature: 1, seed: 2, eosTokenId: 3 }).dispose();
    expect(memory().numTensors).toBe(before);
    for (const t of [ids, mask]) t.dispose();
  });
});
