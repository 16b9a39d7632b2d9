import { noGrad } from "@blocksparse/autograd";
import {
  add,
  argmax,
  BackendError,
  cachedAttention,
  captureGraph,
  type CapturedGraph,
  concat,
  crossEntropy,
  DTypeError,
  fullOn,
  GraphError,
  indexCopy,
  keep,
  packedAttention,
  permute,
  reshape,
  ShapeError,
  slice,
  split,
  Tensor,
  tidy,
  ValueError,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { Dropout, dropsNothing, Embedding, forwardLinearActivation, forwardResidual, initSkipped, LayerNorm, Linear, Module, ModuleList, skipInit } from "@blocksparse/nn";
import type { CheckpointRules } from "./checkpoint";
import { type Gpt2Config, parseGpt2Config } from "./config";
import { ModelsError } from "./errors";
import { activationModule, attention, blockSeeds, checkOptions, checkTokenIds, dtypeHint, initLikeHuggingFace, MASKED, onlyArg, seedStream, shown, splitHeads, uploadOn } from "./layers";

/** GPT2LMHeadModel's feed-forward layers, for the patcher: transformer.h.N.mlp.c_fc and .c_proj. */
export const GPT2_FFN_LAYERS = /^transformer\.h\.\d+\.mlp\.c_(fc|proj)$/;
/** GPT2LMHeadModel's attention projections: transformer.h.N.attn.c_attn (q, k, v) and .c_proj. */
export const GPT2_ATTENTION_LAYERS = /^transformer\.h\.\d+\.attn\.c_(attn|proj)$/;

export interface ModelOptions {
  /** Seed of the initial values (default: core's global generator). */
  seed?: number;
}

/** One block's keys and values of the positions seen so far, [batch, heads, positions, headDim] each. */
export interface KeyValue {
  key: Tensor;
  value: Tensor;
}

/**
 * The keys and values of the positions a GPT-2 model has seen, one pair per block: pass the same cache to
 * successive `forward` calls of GPT2Model or GPT2LMHeadModel and each call takes only the new positions, attending
 * to the cached ones (what `generate` does). The cache owns its tensors: `dispose()` frees them.
 */
export class GPT2Cache {
  readonly layers: (KeyValue | null)[];

  constructor(layers: number) {
    this.layers = Array.from({ length: layers }, () => null);
  }

  /** Positions held (0 before the first call). */
  get length(): number {
    return this.layers[0]?.key.shape[2] ?? 0;
  }

  /** Sequences held (0 before the first call). */
  get batch(): number {
    return this.layers[0]?.key.shape[0] ?? 0;
  }

  /** Replaces block `index`'s pair, disposing the one it held. */
  set(index: number, pair: KeyValue): void {
    const old = this.layers[index];
    this.layers[index] = { key: keep(pair.key), value: keep(pair.value) };
    old?.key.dispose();
    old?.value.dispose();
  }

  dispose(): void {
    for (const pair of this.layers) {
      pair?.key.dispose();
      pair?.value.dispose();
    }
    this.layers.fill(null);
  }
}

/**
 * Keys and values of a fixed number of positions, [batch, heads, length, headDim] per block (zeros until written),
 * for `generate`'s static and captured paths. A forward with it writes its new positions' keys and values in place
 * (indexCopy) at `position` (an int32 [1] device tensor) and after, attends to the positions up to each of its own
 * (cachedAttention), and advances `position` on the device: every decoding step has the same
 * shapes and reads nothing on the host, so one step can be recorded (captureGraph) and replayed. Writes past
 * `length` are skipped on a GPU: the caller keeps count.
 */
export class GPT2StaticCache {
  readonly keys: Tensor[] = [];
  readonly values: Tensor[] = [];
  /** int32 [1]: the first position the next forward writes. */
  readonly position: Tensor;
  /** int32 [1]: 0, where `position` is written. */
  readonly #first: Tensor;

  /** `length` positions; the tensors live on `like`'s backend (the blocks' pairs are made at their first write). */
  constructor(
    readonly length: number,
    like: Tensor,
  ) {
    this.position = keep(uploadOn([0], [1], like, "int32"));
    this.#first = keep(uploadOn([0], [1], like, "int32"));
  }

  /** Block `index`'s keys and values, made (zeros of k's dtype) on first use. */
  pair(index: number, k: Tensor): KeyValue {
    if (this.keys[index] === undefined) {
      const [batch, heads, , headDim] = k.shape;
      // Made inside a forward's tidy: kept until dispose().
      this.keys[index] = keep(fullOn(k.backend, [batch, heads, this.length, headDim], 0, k.dtype));
      this.values[index] = keep(fullOn(k.backend, [batch, heads, this.length, headDim], 0, k.dtype));
    }
    return { key: this.keys[index], value: this.values[index] };
  }

  /** Moves `position` on by `count`, on the device. */
  advance(count: number): void {
    const next = add(this.position, count);
    indexCopy(this.position, this.#first, next);
    next.dispose();
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values, this.position, this.#first]) t.dispose();
    this.keys.length = 0;
    this.values.length = 0;
  }
}

/**
 * GPT-2's attention with Hugging Face's names: c_attn (queries, keys and values in one
 * product) and c_proj. Hugging Face stores them as Conv1D ([in, out]); here they are
 * Linear layers ([out, in]) so the patcher can replace them, and the checkpoint loader
 * transposes.
 */
export class GPT2Attention extends Module {
  readonly nHead: number;
  readonly scale: number;
  c_attn: Linear;
  c_proj: Linear;
  attn_dropout: Dropout;
  resid_dropout: Dropout;

  /** Built alone (as transformers' GPT2Attention(config, layer_idx=...)), `config` is parsed and `nextSeed` may be a seed or omitted (blockSeeds). */
  constructor(config: Gpt2Config, layerIndex = 0, nextSeed?: (() => number) | number) {
    super();
    config = parseGpt2Config(config);
    checkLayerIndex(this.label, layerIndex, config);
    nextSeed = blockSeeds(this.label, nextSeed);
    const width = config.n_embd;
    this.nHead = config.n_head;
    const headDim = width / config.n_head;
    this.scale = (config.scale_attn_weights ? 1 / Math.sqrt(headDim) : 1) / (config.scale_attn_by_inverse_layer_idx ? layerIndex + 1 : 1);
    this.c_attn = new Linear(width, 3 * width, { seed: nextSeed() });
    this.c_proj = new Linear(width, width, { seed: nextSeed() });
    this.attn_dropout = new Dropout(config.attn_pdrop, { seed: nextSeed() });
    this.resid_dropout = new Dropout(config.resid_pdrop, { seed: nextSeed() });
  }

  /**
   * Attention over x [B, T, width] (plus `residual` when given). Without attention dropout the heads are read from
   * c_attn's packed rows and written in the rows c_proj reads (packedAttention): no per-head copies either way.
   */
  forward(x: Tensor, residual?: Tensor): Tensor {
    return tidy(() => {
      // A dropout that acts (or a module put in its place) needs the attention weights made: the explicit path.
      const dropout: Module = this.attn_dropout;
      if (!dropsNothing(dropout)) return this.forwardCached(x, null, residual).out;
      const [batch, length, width] = x.shape;
      const qkv = reshape(this.c_attn.forward(x), [batch, length, 3, this.nHead, width / this.nHead]);
      const attended = packedAttention(qkv, { causal: true, scale: this.scale });
      return forwardResidual(this.c_proj, this.resid_dropout, reshape(attended, [batch, length, width]), residual);
    });
  }

  /**
   * The forward of new positions x [B, T, width] that follow `past` (the keys and values of the positions before
   * them, or null): each new position attends to the past ones and to the new ones up to itself, `mask` (additive,
   * [B, 1, 1, past + T], or null) added to its scores. Returns the output (plus `residual` when given: the block's
   * connection around it) and the keys and values of all the positions.
   */
  forwardCached(x: Tensor, past: KeyValue | null, residual?: Tensor, mask: Tensor | null = null): { out: Tensor } & KeyValue {
    return tidy(() => {
      const qkv = this.c_attn.forward(x);
      const [q, k, v] = split(qkv, 3, 2).map((part) => splitHeads(part, this.nHead));
      const key = past === null ? k : concat([past.key, k], 2);
      const value = past === null ? v : concat([past.value, v], 2);
      const merged = attention(q, key, value, this.scale, mask, this.attn_dropout, true);
      return { out: forwardResidual(this.c_proj, this.resid_dropout, merged, residual), key, value };
    });
  }

  /**
   * The forward of new positions x [B, T, width] at `positions` (int32 [T], on the device) with a static cache: their
   * keys and values are written into block `index`'s pair, and each attends to the cached positions up to its own.
   * No gradient (decoding).
   */
  forwardStatic(x: Tensor, cache: GPT2StaticCache, index: number, positions: Tensor, residual?: Tensor): Tensor {
    return tidy(() => {
      const qkv = this.c_attn.forward(x);
      const [q, k, v] = split(qkv, 3, 2).map((part) => splitHeads(part, this.nHead));
      const { key, value } = cache.pair(index, k);
      const [batch, heads, length, headDim] = q.shape;
      // The new positions' keys and values go into the cache inside the attention's kernel (one launch on cuda).
      const attended = cachedAttention(q, key, value, positions, { scale: this.scale, newKeys: k, newValues: v });
      const merged = reshape(permute(attended, [0, 2, 1, 3]), [batch, length, heads * headDim]);
      return forwardResidual(this.c_proj, this.resid_dropout, merged, residual);
    });
  }
}

/** A block's index in its model (what scale_attn_by_inverse_layer_idx divides by, plus one): an integer from 0 to n_layer - 1. */
function checkLayerIndex(label: string, layerIndex: unknown, config: Gpt2Config): void {
  if (!Number.isSafeInteger(layerIndex) || (layerIndex as number) < 0 || (layerIndex as number) >= config.n_layer) {
    throw new ValueError(`${label}: layerIndex must be an integer from 0 to n_layer - 1 = ${config.n_layer - 1}, got ${shown(layerIndex)}`);
  }
}

/** GPT-2's feed-forward part: c_fc, the activation, c_proj, dropout. */
export class GPT2MLP extends Module {
  c_fc: Linear;
  act: Module;
  c_proj: Linear;
  dropout: Dropout;

  /** Built alone, `config` is parsed and `nextSeed` may be a seed or omitted (blockSeeds). */
  constructor(config: Gpt2Config, nextSeed?: (() => number) | number) {
    super();
    config = parseGpt2Config(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    const inner = config.n_inner ?? 4 * config.n_embd;
    this.c_fc = new Linear(config.n_embd, inner, { seed: nextSeed() });
    this.act = activationModule(config.activation_function);
    this.c_proj = new Linear(inner, config.n_embd, { seed: nextSeed() });
    this.dropout = new Dropout(config.resid_pdrop, { seed: nextSeed() });
  }

  /** dropout(c_proj(act(c_fc(x)))), plus `residual` when given (GPT2Block's connection around it). */
  forward(x: Tensor, residual?: Tensor): Tensor {
    return tidy(() => forwardResidual(this.c_proj, this.dropout, forwardLinearActivation(this.c_fc, this.act, x), residual));
  }
}

/**
 * `residual + run()`, where `run` calls `module[method]`: GPT-2's own attention and MLP methods take the residual (fused
 * in their last product); a replaced module or an overridden method may take one input, so the residual is added to
 * what it returns.
 */
function withResidual(module: Module, method: "forward" | "forwardCached" | "forwardStatic", residual: Tensor, run: (residual?: Tensor) => Tensor): Tensor {
  const own = (module as unknown as Partial<GPT2Attention>)[method];
  return own === GPT2Attention.prototype[method] || own === GPT2MLP.prototype.forward ? run(residual) : add(residual, run());
}

/**
 * One pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x)). The block keeps both residual connections when attn or
 * mlp is replaced by a module whose forward takes one input (the cached paths need attn's forwardCached / forwardStatic).
 */
export class GPT2Block extends Module {
  ln_1: LayerNorm;
  attn: GPT2Attention;
  ln_2: LayerNorm;
  mlp: GPT2MLP;

  /** Built alone (as transformers' GPT2Block(config, layer_idx=...)), `config` is parsed and `nextSeed` may be a seed or omitted (blockSeeds). */
  constructor(config: Gpt2Config, layerIndex = 0, nextSeed?: (() => number) | number) {
    super();
    config = parseGpt2Config(config);
    checkLayerIndex(this.label, layerIndex, config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.ln_1 = new LayerNorm(config.n_embd, { eps: config.layer_norm_epsilon });
    this.attn = new GPT2Attention(config, layerIndex, nextSeed);
    this.ln_2 = new LayerNorm(config.n_embd, { eps: config.layer_norm_epsilon });
    this.mlp = new GPT2MLP(config, nextSeed);
  }

  forward(x: Tensor): Tensor {
    return tidy(() => this.feedForward(withResidual(this.attn, "forward", x, (residual) => this.attn.forward(this.ln_1.forward(x), residual))));
  }

  /** The forward of new positions after `past` (GPT2Attention.forwardCached): the output and all keys and values. */
  forwardCached(x: Tensor, past: KeyValue | null, mask: Tensor | null = null): { out: Tensor } & KeyValue {
    return tidy(() => {
      let step!: KeyValue;
      const attended = withResidual(this.attn, "forwardCached", x, (residual) => {
        const result = this.attn.forwardCached(this.ln_1.forward(x), past, residual, mask);
        step = result;
        return result.out;
      });
      return { out: this.feedForward(attended), key: step.key, value: step.value };
    });
  }

  /** The forward of new positions with a static cache (GPT2Attention.forwardStatic). */
  forwardStatic(x: Tensor, cache: GPT2StaticCache, index: number, positions: Tensor): Tensor {
    return tidy(() =>
      this.feedForward(withResidual(this.attn, "forwardStatic", x, (residual) => this.attn.forwardStatic(this.ln_1.forward(x), cache, index, positions, residual))),
    );
  }

  /** x + mlp(ln_2(x)). */
  private feedForward(x: Tensor): Tensor {
    return withResidual(this.mlp, "forward", x, (residual) => this.mlp.forward(this.ln_2.forward(x), residual));
  }
}

/** Inputs of a GPT-2 forward beside the token ids. */
export interface GPT2Inputs {
  /**
   * 1 for a token, 0 for padding (int32 or float, on any backend), [B, cached + new positions] (Hugging Face's
   * attention_mask; [positions] for ids given as [T]). The keys of padding get the dtype's most negative value,
   * and the positions count the tokens only (Hugging Face generate's position_ids: cumsum(mask) - 1, padding at 1),
   * so a left-padded sequence gives the logits of the sequence alone. Read on the host (not in a captured graph);
   * a mask of ones is no mask.
   */
  attentionMask?: Tensor | null;
  /** Keys and values of the positions before the ids (see GPT2Cache). */
  cache?: GPT2Cache | null;
}

const GPT2_INPUTS: readonly string[] = ["attentionMask", "cache"];

/**
 * An attention mask's flags, read back and checked: a Tensor of [batch, width] (or [width] for ids given as [T]), only
 * 0 and 1. Null for none, and for a mask of ones (no padding: no mask).
 */
function maskFlags(label: string, mask: unknown, inputIds: Tensor, batch: number, width: number): Float32Array | Int32Array | null {
  if (mask == null) return null;
  if (!(mask instanceof Tensor)) throw new DTypeError(`${label}: attentionMask must be an int32 or float Tensor, got ${typeof mask}`);
  const want = inputIds.rank === 1 ? [width] : [batch, width];
  if (`${mask.shape}` !== `${want}`) {
    throw new ShapeError(`${label}: attentionMask has shape [${mask.shape}], expected [${want}] (the cached and new positions)`);
  }
  const flags = mask.dataSync();
  const bad = flags.find((flag) => flag !== 0 && flag !== 1);
  if (bad !== undefined) throw new ValueError(`${label}: attentionMask holds ${bad}, expected only 0 (padding) and 1 (token)`);
  return flags.includes(0) ? flags : null;
}

/** The GPT-2 trunk (Hugging Face's GPT2Model): token and position embeddings, blocks h.N, ln_f. */
export class GPT2Model extends Module {
  readonly config: Gpt2Config;
  wte: Embedding;
  wpe: Embedding;
  drop: Dropout;
  h: ModuleList;
  ln_f: LayerNorm;

  /**
   * Built alone (as transformers' GPT2Model(config)), `nextSeed` may be a seed or omitted (blockSeeds); a config.json's
   * contents are checked and take their defaults here too (one already parsed parses to itself).
   */
  constructor(config: Gpt2Config, nextSeed?: (() => number) | number) {
    super();
    nextSeed = blockSeeds(this.label, nextSeed);
    const parsed = parseGpt2Config(config);
    this.config = parsed;
    this.wte = new Embedding(parsed.vocab_size, parsed.n_embd, { seed: nextSeed() });
    this.wpe = new Embedding(parsed.n_positions, parsed.n_embd, { seed: nextSeed() });
    this.drop = new Dropout(parsed.embd_pdrop, { seed: nextSeed() });
    this.h = new ModuleList(Array.from({ length: parsed.n_layer }, (_, i) => new GPT2Block(parsed, i, nextSeed)));
    this.ln_f = new LayerNorm(parsed.n_embd, { eps: parsed.layer_norm_epsilon });
  }

  /**
   * Token ids [B, T] (int32) -> hidden states [B, T, n_embd]. With a `cache` (`forward(ids, cache)` or
   * `forward(ids, { cache })`), the ids are the positions after those the cache holds (positions cache.length to
   * cache.length + T - 1, attending to the cached ones), and the cache takes the new positions' keys and values.
   * With an `attentionMask` (GPT2Inputs), padding is not attended to and does not count as a position:
   * `forward(ids, { attentionMask })`, or with a cache `forward(next, { cache, attentionMask })`, the mask then
   * [B, cache.length + T] as Hugging Face's with past_key_values. Unknown inputs (attention_mask) are refused.
   */
  forward(inputIds: Tensor, inputs?: GPT2Cache | GPT2Inputs | null): Tensor {
    const { cache, attentionMask }: GPT2Inputs = inputs instanceof GPT2Cache ? { cache: inputs } : checkOptions(this.label, inputs, GPT2_INPUTS);
    const [batch, length] = checkTokenIds(this.label, "inputIds", inputIds, this.config.n_positions, this.config.vocab_size);
    const past = cache?.length ?? 0;
    const width = past + length;
    if (cache != null) {
      if (!(cache instanceof GPT2Cache) || cache.layers.length !== this.h.length) {
        throw new ValueError(`${this.label}: cache must be a GPT2Cache of ${this.h.length} blocks`);
      }
      if (past > 0 && cache.batch !== batch) {
        throw new ShapeError(`${this.label}: inputIds has ${batch} sequences, the cache holds ${cache.batch}`);
      }
      if (width > this.config.n_positions) {
        throw new ShapeError(`${this.label}: ${past} cached and ${length} new positions exceed the model's ${this.config.n_positions}`);
      }
    }
    const flags = maskFlags(this.label, attentionMask, inputIds, batch, width);
    // With padding, each token's position is the count of tokens before it (padding's is 1), as Hugging Face's
    // generate makes them: a left-padded sequence's tokens keep the positions they have alone.
    let positionIds: Int32Array | undefined;
    if (flags) {
      positionIds = new Int32Array(batch * length);
      for (let b = 0; b < batch; b++) {
        for (let t = 0, count = 0; t < width; t++) {
          const flag = flags[b * width + t];
          count += flag;
          if (t >= past) positionIds[b * length + t - past] = flag ? count - 1 : 1;
        }
      }
    }
    return tidy(() => {
      // Without padding, positions past .. past + length - 1 are consecutive rows of wpe: a slice, nothing uploaded,
      // so a whole training step (forward, backward, optimizer) can be captured (captureGraph) and replayed.
      const positions = positionIds
        ? this.wpe.forward(uploadOn(positionIds, [batch, length], inputIds))
        : slice(this.wpe.weight.value, [past, 0], [length, this.config.n_embd]);
      let x = this.drop.forward(add(this.wte.forward(reshape(inputIds, [batch, length])), positions));
      const mask = positionIds ? uploadOn(Float32Array.from(flags as Int32Array, (flag) => (flag ? 0 : MASKED[x.dtype])), [batch, 1, 1, width], x) : null;
      let index = 0;
      for (const block of this.h) {
        let next: Tensor;
        if (!cache && !mask) {
          next = block.forward(x);
        } else {
          const step = (block as GPT2Block).forwardCached(x, cache?.layers[index] ?? null, mask);
          cache?.set(index, step);
          next = step.out;
        }
        x.dispose();
        x = next;
        index++;
      }
      return this.ln_f.forward(x);
    });
  }

  /**
   * Token ids [B, T] at the positions after those `cache` holds (its device `position`): their hidden states
   * [B, T, n_embd]; the cache takes their keys and values and moves its position on by T. Reads nothing on the
   * host, so a step of one token can be captured (captureGraph) and replayed.
   */
  forwardStatic(ids: Tensor, cache: GPT2StaticCache): Tensor {
    const [, length] = ids.shape;
    const out = tidy(() => {
      const positions = length === 1 ? cache.position : add(cache.position, uploadOn(Int32Array.from({ length }, (_, i) => i), [length], ids, "int32"));
      let x = this.drop.forward(add(this.wte.forward(ids), this.wpe.forward(positions)));
      let index = 0;
      for (const block of this.h) {
        const next = (block as GPT2Block).forwardStatic(x, cache, index, positions);
        x.dispose();
        x = next;
        index++;
      }
      return this.ln_f.forward(x);
    });
    cache.advance(length);
    return out;
  }
}

/** Options of GPT2LMHeadModel.generate. */
export interface GenerateOptions {
  /** Tokens added to each sequence (default 20; 0 returns the input). */
  maxNewTokens?: number;
  /**
   * 0 (the default): the most likely token at each step (logits with a NaN or no finite value are a ModelsError, as
   * when sampling, on host backends; a device's argmax reads back only the tokens). Above 0: a token drawn from
   * softmax(logits / temperature).
   */
  temperature?: number;
  /**
   * When sampling, only among the topK most likely tokens (default 0: all of them); every token whose logit ties the
   * k-th largest is kept too, as transformers' top_k.
   */
  topK?: number;
  /**
   * Nucleus sampling, as transformers' top_p (0 < topP <= 1; default 1: all tokens): when sampling, only among the
   * smallest set of most probable tokens whose probabilities add up to topP (at least one token). Applied after the
   * temperature and topK, as transformers orders them: the probabilities are those of softmax(logits / temperature)
   * over the topK tokens.
   */
  topP?: number;
  /** Seed of the draws when sampling (default 0; null too): the same seed gives the same tokens. */
  seed?: number | null;
  /**
   * A sequence that emits this token (below vocab_size) stops there, and is padded with it while the others go on. A
   * non-empty list of ids (transformers' `eos_token_id: [50256, 198]`): a sequence stops at any of them and is padded
   * with the first. Default (absent or undefined): the config's `eos_token_id` (an id or a list), as transformers'
   * generate takes it from the generation config (50256, GPT-2's `<|endoftext|>`, in GPT-2's config.json and where
   * config.json has none); a config's ids outside the vocabulary (a small test model's 50256) are tokens the model
   * never emits and are left out (none left: no end token). null: no end token, whatever the config says.
   */
  eosTokenId?: number | readonly number[] | null;
  /**
   * 1 for a token, 0 for padding, [B, T] like inputIds: prompts of different lengths padded on the left (Hugging Face's
   * attention_mask). Padding is not attended to and does not count as a position, so each prompt continues as it
   * would alone; every new token is a token. With padding the steps run eagerly over the growing cache (the static
   * cache and the graph attend to every position: graph or staticCache true with padding throws); a mask of ones is
   * no mask.
   */
  attentionMask?: Tensor | null;
  /**
   * Keep the keys and values in a cache of fixed length (the prompt's and maxNewTokens' positions), written in place,
   * so every step has the same shapes (default: as `graph`; false with graph off grows the cache by a position a step).
   */
  staticCache?: boolean;
  /**
   * Record one decoding step (the model on one token per sequence, over the static cache) as a graph the first time,
   * and replay it for every later token: one launch per token instead of one per op, which is what bounds a model's
   * generation on a GPU. Default: on where the backend records graphs (cuda) and no prompt is padded, off elsewhere;
   * true on a backend without graphs throws.
   */
  graph?: boolean;
}

const GENERATE_OPTIONS: readonly string[] = ["maxNewTokens", "temperature", "topK", "topP", "seed", "eosTokenId", "attentionMask", "staticCache", "graph"];

function checkCount(label: string, name: string, value: number, least: number): number {
  if (!Number.isInteger(value) || value < least) throw new ValueError(`${label}: ${name} must be an integer >= ${least}, got ${shown(value)}`);
  return value;
}

/**
 * The next token from one row of logits: the largest, or a draw from the temperature's softmax over the topK largest
 * (ties at the k-th kept), then over the smallest most probable set of them whose probability reaches topP
 * (transformers' temperature, top-k and top-p warpers, in that order). -1 for a row with a NaN or no finite largest
 * logit (all -Infinity, or +Infinity): its softmax is NaN, and a draw from it would be any token.
 */
function pickToken(logits: ArrayLike<number>, temperature: number, topK: number, topP: number, random: () => number): number {
  let best = 0;
  let nan = false;
  // The pass that finds the largest logit also spots a NaN (it compares false, so lands in the else).
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > logits[best]) best = i;
    else nan ||= Number.isNaN(logits[i]);
  }
  if (nan || !Number.isFinite(logits[best])) return -1;
  if (temperature === 0) return best;
  let candidates = Array.from({ length: logits.length }, (_, i) => i);
  if (topK > 0 && topK < logits.length) {
    // The k-th largest logit by a numeric typed-array sort; every token at or above it stays (ties too, as transformers).
    const threshold = Float64Array.from(logits).sort()[logits.length - topK];
    candidates = candidates.filter((i) => logits[i] >= threshold);
  }
  let weights = candidates.map((i) => Math.exp((logits[i] - logits[best]) / temperature));
  if (topP < 1) {
    // Most probable first (ties by index), taken until their mass reaches topP of the total: at least the first.
    const order = candidates.map((_, j) => j).sort((a, b) => weights[b] - weights[a] || a - b);
    const total = weights.reduce((a, b) => a + b, 0);
    let kept = 0;
    for (let mass = 0; kept < order.length && mass < topP * total; kept++) mass += weights[order[kept]];
    // Back in index order, so the draw walks the tokens as without topP.
    const keep = order.slice(0, kept).sort((a, b) => a - b);
    candidates = keep.map((j) => candidates[j]);
    weights = keep.map((j) => weights[j]);
  }
  let draw = random() * weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < candidates.length; i++) {
    draw -= weights[i];
    if (draw < 0) return candidates[i];
  }
  return candidates[candidates.length - 1];
}

/**
 * Hugging Face's GPT2LMHeadModel: `transformer` (GPT2Model) and `lm_head`, whose weight is
 * the same Parameter as `transformer.wte.weight` (tied, as in the checkpoints, which
 * store it once), or a Parameter of its own with `tie_word_embeddings: false`. Built from
 * config.json's contents, initialised as Hugging Face does (N(0, initializer_range), c_proj
 * scaled by 1/sqrt(2 n_layer)).
 */
export class GPT2LMHeadModel extends Module {
  readonly config: Gpt2Config;
  transformer: GPT2Model;
  lm_head: Linear;

  constructor(config: unknown, options: ModelOptions | null = {}) {
    super();
    this.config = parseGpt2Config(config);
    const nextSeed = seedStream(this.label, checkOptions<ModelOptions>(this.label, options, ["seed"], dtypeHint).seed);
    // The layers' own random initialization is skipped (Hugging Face's below replaces every value it would draw): the
    // same seeds are drawn, so the model is the one built before, in a third of the host's time.
    this.transformer = skipInit(() => new GPT2Model(this.config, nextSeed));
    this.lm_head = skipInit(() => new Linear(this.config.n_embd, this.config.vocab_size, { bias: false, seed: nextSeed() }));
    // Inside a caller's skipInit (fromPretrained's), Hugging Face's initialization is skipped too: nothing is drawn.
    const skipped = initSkipped();
    this.#initWeights(nextSeed, () => !skipped, true);
  }

  /**
   * Hugging Face's initialization (N(0, initializer_range), c_proj scaled by 1/sqrt(2 n_layer), biases zero, LayerNorms
   * ones and zeros), as the
   * constructor gives it, of the parameters `only` names (all by default; by their names in namedParameters(), e.g.
   * "transformer.h.0.attn.c_proj.weight"), from `seed` (else drawn from core's global generator). What fromPretrained
   * runs for the parameters a checkpoint does not hold, as transformers initializes its missing weights. Each value
   * keeps its parameter's backend and dtype; an explicit call draws even inside nn's skipInit.
   */
  initWeights(only?: ((name: string) => boolean) | null, seed?: number): void {
    const filter = onlyArg(this.label, only);
    this.#initWeights(seedStream(this.label, seed), filter, false);
  }

  #initWeights(nextSeed: () => number, only: (name: string) => boolean, tie: boolean): void {
    const std = this.config.initializer_range;
    const linearStd = (name: string) => (name.endsWith("c_proj") ? std / Math.sqrt(2 * this.config.n_layer) : std);
    initLikeHuggingFace(this.transformer, std, nextSeed, linearStd, (name) => only(`transformer.${name}`));
    if (this.config.tie_word_embeddings) {
      if (tie) {
        this.lm_head.weight.dispose();
        this.lm_head.weight = this.transformer.wte.weight;
      }
    } else {
      initLikeHuggingFace(this.lm_head, std, nextSeed, () => std, (name) => only(`lm_head.${name}`));
    }
  }

  /**
   * Token ids [B, T] (int32) -> logits [B, T, vocab_size]. With a `cache` and an `attentionMask`, as
   * GPT2Model.forward's: `forward(ids, { attentionMask })`, `forward(next, { cache, attentionMask })`.
   */
  forward(inputIds: Tensor, inputs?: GPT2Cache | GPT2Inputs | null): Tensor {
    return tidy(() => this.lm_head.forward(this.transformer.forward(inputIds, inputs)));
  }

  /**
   * The language-modeling loss from `labels`, as Hugging Face's `GPT2LMHeadModel(input_ids, labels=labels).loss`:
   * position t's logits predict label t + 1 (the shift is inside, so `labels` may be `inputIds` itself), positions
   * whose label is `ignoreIndex` (-100, Hugging Face's padding mark) are left out, and the cross-entropy is averaged
   * over the rest (float32 scalar; NaN when none is left). inputIds and labels [B, T] or [T], int32; a label that is
   * neither a token id nor ignoreIndex is an IndexError naming labels (on host backends, as inputIds'). The vocabulary
   * head runs on the first T - 1 positions only: the last one has no label to predict. An `attentionMask` is
   * GPT2Model.forward's (padding's labels are for the caller to set to -100).
   */
  loss(inputIds: Tensor, labels: Tensor, lossOptions: { ignoreIndex?: number; attentionMask?: Tensor | null } | null = {}): Tensor {
    const options = checkOptions<{ ignoreIndex?: number; attentionMask?: Tensor }>("GPT2LMHeadModel.loss", lossOptions, ["ignoreIndex", "attentionMask"]);
    // The ids' vocabulary first: labels = inputIds with a bad id names inputIds.
    const [batch, length] = checkTokenIds("GPT2LMHeadModel.loss", "inputIds", inputIds, this.config.n_positions, this.config.vocab_size);
    // Token ids too, or ignoreIndex: an int32 Tensor of inputIds' shape (named here, not by crossEntropy's shifted rows).
    const ignoreIndex = options.ignoreIndex ?? -100;
    checkTokenIds("GPT2LMHeadModel.loss", "labels", labels, this.config.n_positions, this.config.vocab_size, undefined, ignoreIndex);
    if (`${labels.shape}` !== `${inputIds.shape}`) throw new ShapeError(`GPT2LMHeadModel.loss: labels has shape [${labels.shape}], expected inputIds' [${inputIds.shape}]`);
    return tidy(() => {
      const hidden = this.transformer.forward(inputIds, { attentionMask: options.attentionMask });
      const predicting = slice(hidden, [0, 0, 0], [batch, length - 1, this.config.n_embd]);
      const targets = slice(reshape(labels, [batch, length]), [0, 1], [batch, length - 1]);
      return crossEntropy(this.lm_head.forward(predicting), targets, { ignoreIndex });
    });
  }

  /**
   * Continues each sequence of `inputIds` ([B, T] or [T], int32) by up to `maxNewTokens` tokens, one position per
   * step, the keys and values of the positions before kept in a cache (so a step runs the model on B tokens, the
   * block-sparse layers' decoding path on a GPU). On a backend that records graphs (cuda) the cache has a fixed length
   * and the one-token step is recorded once and replayed for each token (`graph`); elsewhere the cache grows a
   * position per step (GPT2Cache). Runs in eval mode without recording gradients (each module's mode
   * is restored after). Returns the sequences with their new tokens, [B, T + steps] int32 ([T + steps] for a prompt
   * given as [T]), on the input's backend;
   * all sequences get the same number of steps (with end tokens, `eosTokenId` or by default the config's
   * `eos_token_id`, a finished sequence is padded with the first, and the steps end once every sequence has finished).
   */
  generate(inputIds: Tensor, generateOptions: GenerateOptions | null = {}): Tensor {
    const label = `${this.label}.generate`;
    const options = checkOptions<GenerateOptions>(label, generateOptions, GENERATE_OPTIONS);
    const steps = checkCount(label, "maxNewTokens", options.maxNewTokens ?? 20, 0);
    const topK = checkCount(label, "topK", options.topK ?? 0, 0);
    const temperature = options.temperature ?? 0;
    if (!Number.isFinite(temperature) || temperature < 0) throw new ValueError(`${label}: temperature must be a finite number >= 0, got ${shown(temperature)}`);
    const topP = options.topP ?? 1;
    if (!Number.isFinite(topP) || topP <= 0 || topP > 1) throw new ValueError(`${label}: topP must be a number in (0, 1], got ${shown(topP)}`);
    if (options.seed != null && !Number.isSafeInteger(options.seed)) throw new ValueError(`${label}: seed must be an integer, got ${shown(options.seed)}`);
    const vocab = this.config.vocab_size;
    // A token: an integer below vocab_size, checked before the first step (on a GPU the embedding would only report an
    // id outside the vocabulary at the next read, after the step ran).
    const checkToken = (name: string, id: number) => {
      if (checkCount(label, name, id, 0) >= vocab) throw new ValueError(`${label}: ${name} ${id} is outside the vocabulary of ${vocab} tokens`);
    };
    // The end tokens (none: []); a finished sequence is padded with the first. Absent: the config's end token or tokens,
    // as transformers' generation config, less those the model cannot emit (outside the vocabulary: a small test model's
    // 50256). null is no end token, as transformers' eos_token_id=None.
    const fromConfig = options.eosTokenId === undefined;
    const ids = fromConfig ? this.config.eos_token_id : options.eosTokenId;
    let eos: readonly number[] = ids == null ? [] : Array.isArray(ids) ? [...ids] : [ids as number];
    if (fromConfig) eos = eos.filter((id) => id < vocab);
    else if (ids !== null && eos.length === 0) throw new ValueError(`${label}: eosTokenId is an empty list (null: no end token)`);
    for (const id of eos) checkToken("eosTokenId", id);
    const [batch, length] = checkTokenIds(label, "inputIds", inputIds, this.config.n_positions);
    // The last new token is chosen, never run: the steps run positions up to length + steps - 2, as transformers' generate
    // (a prompt filling the context still gets its next token).
    if (length + steps - 1 > this.config.n_positions) {
      throw new ShapeError(`${label}: ${length} positions and ${steps} new tokens run ${length + steps - 1} positions, past the model's ${this.config.n_positions}`);
    }
    // The mask's flags when some prompt is padded (a mask of ones is none).
    const flags = maskFlags(label, options.attentionMask, inputIds, batch, length);
    // Each row's last position is the one continued: a token (the prompts padded on the left).
    for (let b = 0; flags && b < batch; b++) {
      const row = flags.subarray(b * length, (b + 1) * length);
      if (!row[length - 1]) throw new ValueError(`${label}: attentionMask's row ${b} ${row.includes(1) ? "ends in padding: pad the prompts on the left" : "is all padding: no token to continue"}`);
    }
    if (flags && (options.graph || options.staticCache)) {
      throw new ValueError(`${label}: an attentionMask with padding needs the growing cache (the static cache and the graph attend to every position): leave graph and staticCache off`);
    }
    const graph = options.graph ?? (!flags && inputIds.backend.graphs !== undefined);
    const isStatic = graph || (options.staticCache ?? false);
    if (graph && inputIds.backend.graphs === undefined) {
      throw new BackendError(`${label}: graph needs a backend that records graphs (cuda); '${inputIds.backend.name}' does not (use staticCache, or leave graph off)`);
    }
    const given = inputIds.dataSync();
    for (const id of given) checkToken("inputIds' token", id);
    const rows = Array.from({ length: batch }, (_, b) => Array.from(given.subarray(b * length, (b + 1) * length)));
    const modes = [...this.modules()].map((module) => [module, module.training] as const);
    this.eval();
    const cache = isStatic ? new GPT2StaticCache(length + steps, inputIds) : new GPT2Cache(this.transformer.h.length);
    const generator = new SeededRandom(options.seed ?? 0);
    const random = () => generator.next();
    const done = new Array<boolean>(batch).fill(false);
    // Greedy decoding takes the argmax [B] on a device (one small read-back a step); a host backend reads the logits,
    // free there, and picks from them as sampling does, so that NaN logits are refused rather than a token chosen.
    const deviceArgmax = !temperature && inputIds.backend.graphs !== undefined;
    // The last position's logits [B, vocab], or their argmax [B] (int32): what is read back.
    const scores = (next: Tensor): Tensor =>
      tidy(() => {
        // With padding, the mask of every position so far: the prompts', then 1 for each new token.
        const attentionMask =
          flags && uploadOn(rows.flatMap((row, b) => row.map((_, t) => (t < length ? flags[b * length + t] : 1))), [batch, rows[0].length], inputIds);
        const hidden = cache instanceof GPT2StaticCache ? this.transformer.forwardStatic(next, cache) : this.transformer.forward(next, { cache, attentionMask });
        const last = hidden.shape[1] === 1 ? hidden : slice(hidden, [0, hidden.shape[1] - 1, 0], [batch, 1, hidden.shape[2]]);
        const logits = reshape(this.lm_head.forward(last), [batch, vocab]);
        return deviceArgmax ? argmax(logits, -1) : logits;
      });
    let step: CapturedGraph<Tensor> | null = null;
    let stepInput: Tensor | null = null;
    const owned: Tensor[] = [];
    const record = (fn: () => Tensor): CapturedGraph<Tensor> => {
      try {
        return captureGraph(fn);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        throw new GraphError(`${label}: the decoding step could not be recorded (${reason}); pass graph: false to run it eagerly`, { cause: error });
      }
    };
    // Sequence b's next token: `chosen` unless it has finished (then the first end token, as padding).
    const push = (b: number, chosen: number): number => {
      const token = done[b] ? eos[0] : chosen;
      rows[b].push(token);
      if (eos.includes(token)) done[b] = true;
      return token;
    };
    try {
      noGrad(() => {
        // A view of the prompt as [B, T], disposed after the first step as each step's tokens are.
        let next = reshape(inputIds, [batch, length]);
        for (let index = 0; index < steps && !done.every(Boolean); index++) {
          if (graph && deviceArgmax && index >= 2) {
            // Greedy with a graph: each replay also writes its tokens, on the device, into the next replay's input and
            // into column `column` of `generated`, so replays queue without a read-back; the host reads the tokens
            // every few steps with an end token (to stop), once at the end without.
            const remaining = steps - index;
            const generated = fullOn(inputIds.backend, [batch, remaining], 0, "int32");
            const column = uploadOn([0], [1], inputIds, "int32");
            const first = uploadOn([0], [1], inputIds, "int32");
            owned.push(generated, column, first);
            stepInput = next;
            const input = next;
            step = record(() => {
              const tokens = reshape(scores(input), [batch, 1]);
              indexCopy(input, first, tokens, 1);
              indexCopy(generated, column, tokens, 1);
              const moved = add(column, 1);
              indexCopy(column, first, moved);
              moved.dispose();
              return tokens;
            });
            const chunk = eos.length === 0 ? remaining : 8;
            for (let read = 0; read < remaining && !done.every(Boolean); read += chunk) {
              const count = Math.min(chunk, remaining - read);
              for (let i = 0; i < count; i++) step.replay();
              const values = generated.dataSync();
              for (let c = read; c < read + count && !done.every(Boolean); c++) for (let b = 0; b < batch; b++) push(b, values[b * remaining + c]);
            }
            break;
          }
          let result: Tensor;
          // The prompt, then one eager step of one token (kernels load, patterns upload) before it is recorded.
          if (!graph || index < 2) {
            result = scores(next);
          } else {
            if (step === null) {
              stepInput = next;
              const input = stepInput;
              step = record(() => scores(input));
            } else {
              (stepInput as Tensor).assign(next);
              next.dispose();
            }
            next = stepInput as Tensor;
            result = step.replay();
          }
          const values = result.dataSync();
          if (result !== step?.result) result.dispose();
          if (next !== stepInput) next.dispose();
          const tokens = rows.map((_, b) => {
            const token = done[b] ? eos[0] : deviceArgmax ? values[b] : pickToken(values.subarray(b * vocab, (b + 1) * vocab), temperature, topK, topP, random);
            if (token < 0) throw new ModelsError(`${label}: sequence ${b}'s logits hold NaN or no finite value (new token ${index}): nothing to sample`);
            return push(b, token);
          });
          next = uploadOn(tokens, [batch, 1], inputIds, "int32");
        }
        if (next !== stepInput) next.dispose();
      });
    } finally {
      if (step !== null) {
        const captured = step as CapturedGraph<Tensor>;
        captured.dispose();
        captured.result.dispose();
      }
      (stepInput as Tensor | null)?.dispose();
      for (const t of owned) t.dispose();
      cache.dispose();
      for (const [module, training] of modes) module.training = training;
    }
    const width = batch === 0 ? length : rows[0].length;
    return uploadOn(rows.flat(), inputIds.rank === 1 ? [width] : [batch, width], inputIds, "int32");
  }

  /**
   * Checkpoint names: with or without the "transformer." prefix (transformers 5 writes it,
   * hub files often do not); a tied lm_head.weight is wte's (skipped when a file has wte, read into it when not),
   * an untied one is read as itself (a file must hold it); the causal-mask buffers attn.bias / attn.masked_bias
   * of older files are skipped; Conv1D weights are [in, out] in the file.
   */
  checkpointRules(): CheckpointRules {
    const tied = this.config.tie_word_embeddings;
    return {
      modelKey: (fileKey) => {
        if (fileKey === "lm_head.weight") return tied ? null : fileKey;
        if (/\.attn\.(bias|masked_bias)$/.test(fileKey)) return null;
        return fileKey.startsWith("transformer.") ? fileKey : `transformer.${fileKey}`;
      },
      transposed: (modelKey) => /\.(c_attn|c_proj|c_fc)\.weight$/.test(modelKey),
      // safetensors' save_model keeps the tied pair's first name in sorted order: lm_head.weight, without wte's.
      tiedFallbacks: tied ? new Map([["lm_head.weight", "transformer.wte.weight"]]) : undefined,
      missingNotes: tied ? undefined : new Map([["lm_head.weight", "config.json sets tie_word_embeddings: false, so the head is not the embedding's weight and the file must hold it"]]),
    };
  }
}
