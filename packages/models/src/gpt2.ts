import { add, split, type Tensor, tidy } from "@blocksparse/core";
import { Dropout, Embedding, forwardLinearActivation, LayerNorm, Linear, Module, ModuleList } from "@blocksparse/nn";
import type { CheckpointRules } from "./checkpoint";
import { type Gpt2Config, parseGpt2Config } from "./config";
import { activationModule, attention, checkTokenIds, initLikeHuggingFace, seedStream, splitHeads, uploadOn } from "./layers";

/** GPT2LMHeadModel's feed-forward layers, for the patcher: transformer.h.N.mlp.c_fc and .c_proj. */
export const GPT2_FFN_LAYERS = /^transformer\.h\.\d+\.mlp\.c_(fc|proj)$/;
/** GPT2LMHeadModel's attention projections: transformer.h.N.attn.c_attn (q, k, v) and .c_proj. */
export const GPT2_ATTENTION_LAYERS = /^transformer\.h\.\d+\.attn\.c_(attn|proj)$/;

export interface ModelOptions {
  /** Seed of the initial values (default: core's global generator). */
  seed?: number;
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

  constructor(config: Gpt2Config, layerIndex: number, nextSeed: () => number) {
    super();
    const width = config.n_embd;
    this.nHead = config.n_head;
    const headDim = width / config.n_head;
    this.scale = (config.scale_attn_weights ? 1 / Math.sqrt(headDim) : 1) / (config.scale_attn_by_inverse_layer_idx ? layerIndex + 1 : 1);
    this.c_attn = new Linear(width, 3 * width, { seed: nextSeed() });
    this.c_proj = new Linear(width, width, { seed: nextSeed() });
    this.attn_dropout = new Dropout(config.attn_pdrop, { seed: nextSeed() });
    this.resid_dropout = new Dropout(config.resid_pdrop, { seed: nextSeed() });
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const qkv = this.c_attn.forward(x);
      const [q, k, v] = split(qkv, 3, 2).map((part) => splitHeads(part, this.nHead));
      const merged = attention(q, k, v, this.scale, null, this.attn_dropout, true);
      return this.resid_dropout.forward(this.c_proj.forward(merged));
    });
  }
}

/** GPT-2's feed-forward part: c_fc, the activation, c_proj, dropout. */
export class GPT2MLP extends Module {
  c_fc: Linear;
  act: Module;
  c_proj: Linear;
  dropout: Dropout;

  constructor(config: Gpt2Config, nextSeed: () => number) {
    super();
    const inner = config.n_inner ?? 4 * config.n_embd;
    this.c_fc = new Linear(config.n_embd, inner, { seed: nextSeed() });
    this.act = activationModule(config.activation_function);
    this.c_proj = new Linear(inner, config.n_embd, { seed: nextSeed() });
    this.dropout = new Dropout(config.resid_pdrop, { seed: nextSeed() });
  }

  forward(x: Tensor): Tensor {
    return tidy(() => this.dropout.forward(this.c_proj.forward(forwardLinearActivation(this.c_fc, this.act, x))));
  }
}

/** One pre-norm block: x + attn(ln_1(x)), then + mlp(ln_2(x)). */
export class GPT2Block extends Module {
  ln_1: LayerNorm;
  attn: GPT2Attention;
  ln_2: LayerNorm;
  mlp: GPT2MLP;

  constructor(config: Gpt2Config, layerIndex: number, nextSeed: () => number) {
    super();
    this.ln_1 = new LayerNorm(config.n_embd, { eps: config.layer_norm_epsilon });
    this.attn = new GPT2Attention(config, layerIndex, nextSeed);
    this.ln_2 = new LayerNorm(config.n_embd, { eps: config.layer_norm_epsilon });
    this.mlp = new GPT2MLP(config, nextSeed);
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const afterAttention = add(x, this.attn.forward(this.ln_1.forward(x)));
      return add(afterAttention, this.mlp.forward(this.ln_2.forward(afterAttention)));
    });
  }
}

/** The GPT-2 trunk (Hugging Face's GPT2Model): token and position embeddings, blocks h.N, ln_f. */
export class GPT2Model extends Module {
  readonly config: Gpt2Config;
  wte: Embedding;
  wpe: Embedding;
  drop: Dropout;
  h: ModuleList;
  ln_f: LayerNorm;

  constructor(config: Gpt2Config, nextSeed: () => number) {
    super();
    this.config = config;
    this.wte = new Embedding(config.vocab_size, config.n_embd, { seed: nextSeed() });
    this.wpe = new Embedding(config.n_positions, config.n_embd, { seed: nextSeed() });
    this.drop = new Dropout(config.embd_pdrop, { seed: nextSeed() });
    this.h = new ModuleList(Array.from({ length: config.n_layer }, (_, i) => new GPT2Block(config, i, nextSeed)));
    this.ln_f = new LayerNorm(config.n_embd, { eps: config.layer_norm_epsilon });
  }

  /** Token ids [B, T] (int32) -> hidden states [B, T, n_embd]. */
  forward(inputIds: Tensor): Tensor {
    const ids = checkTokenIds(this.label, "inputIds", inputIds, this.config.n_positions);
    return tidy(() => {
      const length = ids.shape[1];
      const positions = uploadOn(Int32Array.from({ length }, (_, i) => i), [length], ids, "int32");
      let x = this.drop.forward(add(this.wte.forward(ids), this.wpe.forward(positions)));
      for (const block of this.h) {
        const next = block.forward(x);
        x.dispose();
        x = next;
      }
      return this.ln_f.forward(x);
    });
  }
}

/**
 * Hugging Face's GPT2LMHeadModel: `transformer` (GPT2Model) and `lm_head`, whose weight is
 * the same Parameter as `transformer.wte.weight` (tied, as in the checkpoints, which
 * store it once). Built from config.json's contents, initialised as Hugging Face does
 * (N(0, initializer_range), c_proj scaled by 1/sqrt(2 n_layer)).
 */
export class GPT2LMHeadModel extends Module {
  readonly config: Gpt2Config;
  transformer: GPT2Model;
  lm_head: Linear;

  constructor(config: unknown, options: ModelOptions = {}) {
    super();
    this.config = parseGpt2Config(config);
    const nextSeed = seedStream(options.seed);
    this.transformer = new GPT2Model(this.config, nextSeed);
    this.lm_head = new Linear(this.config.n_embd, this.config.vocab_size, { bias: false, seed: nextSeed() });
    const std = this.config.initializer_range;
    initLikeHuggingFace(this.transformer, std, nextSeed, (name) => (name.endsWith("c_proj") ? std / Math.sqrt(2 * this.config.n_layer) : std));
    this.lm_head.weight.dispose();
    this.lm_head.weight = this.transformer.wte.weight;
  }

  /** Token ids [B, T] (int32) -> logits [B, T, vocab_size]. */
  forward(inputIds: Tensor): Tensor {
    return tidy(() => this.lm_head.forward(this.transformer.forward(inputIds)));
  }

  /**
   * Checkpoint names: with or without the "transformer." prefix (transformers 5 writes it,
   * hub files often do not); lm_head.weight is wte's (skipped when a file has it); the
   * causal-mask buffers attn.bias / attn.masked_bias of older files are skipped; Conv1D
   * weights are [in, out] in the file.
   */
  checkpointRules(): CheckpointRules {
    return {
      modelKey: (fileKey) => {
        if (fileKey === "lm_head.weight" || /\.attn\.(bias|masked_bias)$/.test(fileKey)) return null;
        return fileKey.startsWith("transformer.") ? fileKey : `transformer.${fileKey}`;
      },
      transposed: (modelKey) => /\.(c_attn|c_proj|c_fc)\.weight$/.test(modelKey),
    };
  }
}
