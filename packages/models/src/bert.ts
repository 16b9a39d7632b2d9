import { add, DTypeError, reshape, ShapeError, slice, Tensor, tanh, tidy, ValueError } from "@blocksparse/core";
import { Dropout, Embedding, forwardLinearActivation, forwardResidual, initSkipped, LayerNorm, Linear, Module, ModuleList, skipInit } from "@blocksparse/nn";
import type { CheckpointRules } from "./checkpoint";
import { type BertConfig, isRecord, parseBertConfig } from "./config";
import { ConfigError } from "./errors";
import type { ModelOptions } from "./gpt2";
import { activationModule, attention, blockSeeds, checkOptions, checkTokenIds, dtypeHint, initLikeHuggingFace, onlyArg, paddingMask, seedStream, splitHeads, uploadOn } from "./layers";

/** BertModel / RobertaModel feed-forward layers, for the patcher: encoder.layer.N.intermediate.dense and .output.dense. */
export const BERT_FFN_LAYERS = /^encoder\.layer\.\d+\.(intermediate|output)\.dense$/;
/** Their attention projections: attention.self.query / key / value and attention.output.dense. */
export const BERT_ATTENTION_LAYERS = /^encoder\.layer\.\d+\.attention\.(self\.(query|key|value)|output\.dense)$/;

/** Optional inputs of an encoder beside the token ids, of the ids' shape ([B, T], or [T] for ids given as [T]); null is absent. */
export interface EncoderInputs {
  /** 1 where a token is attended to, 0 for padding, int32 or float (default: all ones). */
  attentionMask?: Tensor | null;
  /** Segment of each token, int32 (default: all zeros). */
  tokenTypeIds?: Tensor | null;
}

const ENCODER_INPUTS: readonly string[] = ["attentionMask", "tokenTypeIds"];

/** What BertModel / RobertaModel return, as Hugging Face's BaseModelOutputWithPooling. */
export interface EncoderOutput {
  /** [B, T, hidden_size]. */
  lastHiddenState: Tensor;
  /** tanh(dense(first token's state)): [B, hidden_size]. */
  poolerOutput: Tensor;
}

/**
 * Word, position and token-type embeddings, summed, then LayerNorm and dropout. As transformers', the word embeddings'
 * padding row is pad_token_id (nn's paddingIdx: no gradient, zero when fresh), and so is the position embeddings' with
 * `positionPaddingIdx` (RoBERTa's).
 */
export class BertEmbeddings extends Module {
  word_embeddings: Embedding;
  position_embeddings: Embedding;
  token_type_embeddings: Embedding;
  LayerNorm: LayerNorm;
  dropout: Dropout;

  constructor(config: BertConfig, nextSeed?: (() => number) | number, positionPaddingIdx: number | null = null) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.word_embeddings = new Embedding(config.vocab_size, config.hidden_size, { seed: nextSeed(), paddingIdx: config.pad_token_id });
    this.position_embeddings = new Embedding(config.max_position_embeddings, config.hidden_size, { seed: nextSeed(), paddingIdx: positionPaddingIdx });
    this.token_type_embeddings = new Embedding(config.type_vocab_size, config.hidden_size, { seed: nextSeed() });
    this.LayerNorm = new LayerNorm(config.hidden_size, { eps: config.layer_norm_eps });
    this.dropout = new Dropout(config.hidden_dropout_prob, { seed: nextSeed() });
  }

  /**
   * ids, positions and token types int32 [B, T] -> [B, T, hidden_size]. Without `positions`, every row's positions
   * are 0 .. T-1 (the first T rows of position_embeddings); without `tokenTypes`, every token is of type 0. Both
   * defaults read rows of the tables with nothing uploaded, so a forward and backward can be captured (captureGraph).
   */
  forward(ids: Tensor, positions?: Tensor, tokenTypes?: Tensor): Tensor {
    return tidy(() => {
      const [, length] = ids.shape;
      const width = this.word_embeddings.weight.value.shape[1];
      const positionRows = positions === undefined ? slice(this.position_embeddings.weight.value, [0, 0], [length, width]) : this.position_embeddings.forward(positions);
      const typeRows = tokenTypes === undefined ? slice(this.token_type_embeddings.weight.value, [0, 0], [1, width]) : this.token_type_embeddings.forward(tokenTypes);
      const summed = add(add(this.word_embeddings.forward(ids), positionRows), typeRows);
      return this.dropout.forward(this.LayerNorm.forward(summed));
    });
  }
}

export class BertSelfAttention extends Module {
  readonly heads: number;
  query: Linear;
  key: Linear;
  value: Linear;
  dropout: Dropout;

  constructor(config: BertConfig, nextSeed?: (() => number) | number) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    const width = config.hidden_size;
    this.heads = config.num_attention_heads;
    this.query = new Linear(width, width, { seed: nextSeed() });
    this.key = new Linear(width, width, { seed: nextSeed() });
    this.value = new Linear(width, width, { seed: nextSeed() });
    this.dropout = new Dropout(config.attention_probs_dropout_prob, { seed: nextSeed() });
  }

  /** x [B, T, width], an additive mask [B, 1, 1, T] or null -> [B, T, width]. */
  forward(x: Tensor, mask: Tensor | null): Tensor {
    return tidy(() => {
      const project = (linear: Linear) => splitHeads(linear.forward(x), this.heads);
      const scale = 1 / Math.sqrt(x.shape[2] / this.heads);
      return attention(project(this.query), project(this.key), project(this.value), scale, mask, this.dropout);
    });
  }
}

/**
 * dense, dropout, then LayerNorm of the sum with the residual (post-norm); Hugging Face's BertSelfOutput and BertOutput.
 * The residual rides in the dense product where it can (nn's forwardResidual).
 */
export class BertResidualOutput extends Module {
  dense: Linear;
  LayerNorm: LayerNorm;
  dropout: Dropout;

  constructor(config: BertConfig, inFeatures: number, nextSeed?: (() => number) | number) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.dense = new Linear(inFeatures, config.hidden_size, { seed: nextSeed() });
    this.LayerNorm = new LayerNorm(config.hidden_size, { eps: config.layer_norm_eps });
    this.dropout = new Dropout(config.hidden_dropout_prob, { seed: nextSeed() });
  }

  forward(x: Tensor, residual: Tensor): Tensor {
    return tidy(() => this.LayerNorm.forward(forwardResidual(this.dense, this.dropout, x, residual)));
  }
}

export class BertAttention extends Module {
  self: BertSelfAttention;
  output: BertResidualOutput;

  constructor(config: BertConfig, nextSeed?: (() => number) | number) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.self = new BertSelfAttention(config, nextSeed);
    this.output = new BertResidualOutput(config, config.hidden_size, nextSeed);
  }

  forward(x: Tensor, mask: Tensor | null): Tensor {
    return tidy(() => this.output.forward(this.self.forward(x, mask), x));
  }
}

/** The feed-forward up-projection and its activation. */
export class BertIntermediate extends Module {
  dense: Linear;
  intermediate_act_fn: Module;

  constructor(config: BertConfig, nextSeed?: (() => number) | number) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.dense = new Linear(config.hidden_size, config.intermediate_size, { seed: nextSeed() });
    this.intermediate_act_fn = activationModule(config.hidden_act);
  }

  forward(x: Tensor): Tensor {
    return forwardLinearActivation(this.dense, this.intermediate_act_fn, x);
  }
}

/** One post-norm encoder layer: attention, then intermediate + output (the FFN). */
export class BertLayer extends Module {
  attention: BertAttention;
  intermediate: BertIntermediate;
  output: BertResidualOutput;

  constructor(config: BertConfig, nextSeed?: (() => number) | number) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.attention = new BertAttention(config, nextSeed);
    this.intermediate = new BertIntermediate(config, nextSeed);
    this.output = new BertResidualOutput(config, config.intermediate_size, nextSeed);
  }

  forward(x: Tensor, mask: Tensor | null): Tensor {
    return tidy(() => {
      const attended = this.attention.forward(x, mask);
      return this.output.forward(this.intermediate.forward(attended), attended);
    });
  }
}

export class BertEncoder extends Module {
  layer: ModuleList;

  constructor(config: BertConfig, nextSeed?: (() => number) | number) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.layer = new ModuleList(Array.from({ length: config.num_hidden_layers }, () => new BertLayer(config, nextSeed)));
  }

  forward(x: Tensor, mask: Tensor | null): Tensor {
    return tidy(() => {
      let hidden = x;
      for (const layer of this.layer) hidden = (layer as BertLayer).forward(hidden, mask);
      return hidden;
    });
  }
}

/** tanh(dense(hidden state of the first token)). */
export class BertPooler extends Module {
  dense: Linear;

  constructor(config: BertConfig, nextSeed?: (() => number) | number) {
    super();
    config = parseBertConfig(config);
    nextSeed = blockSeeds(this.label, nextSeed);
    this.dense = new Linear(config.hidden_size, config.hidden_size, { seed: nextSeed() });
  }

  forward(hidden: Tensor): Tensor {
    return tidy(() => {
      const [batch, , width] = hidden.shape;
      return tanh(this.dense.forward(reshape(slice(hidden, [0, 0, 0], [batch, 1, width]), [batch, width])));
    });
  }
}

/**
 * Hugging Face's BertModel with its pooler and its parameter names (embeddings.*,
 * encoder.layer.N.attention.self.query, ..., pooler.dense), built from config.json's
 * contents. forward() gives the last hidden state; encode() gives the pooler output too.
 */
export class BertModel extends Module {
  readonly config: BertConfig;
  embeddings: BertEmbeddings;
  encoder: BertEncoder;
  pooler: BertPooler;

  constructor(config: unknown, options: ModelOptions | null = {}) {
    super();
    this.config = parseBertConfig(config);
    // The other's config.json would build a model that loads its checkpoint and counts positions the other way.
    const type = this.config.model_type;
    if (type === (this instanceof RobertaModel ? "bert" : "roberta")) throw new ConfigError(`${this.label}: config.json's model_type is "${type}", use ${type === "bert" ? "BertModel" : "RobertaModel"}`);
    const padding = this.config.pad_token_id;
    if (!(this.maxLength() >= 1)) {
      throw new ConfigError(`${this.label}: pad_token_id=${padding} leaves no position of max_position_embeddings=${this.config.max_position_embeddings}`);
    }
    // transformers' word embeddings take it as their padding_idx, which torch refuses outside the table.
    if (padding !== null && padding >= this.config.vocab_size) throw new ConfigError(`${this.label}: pad_token_id=${padding} is outside vocab_size=${this.config.vocab_size}`);
    const nextSeed = seedStream(this.label, checkOptions<ModelOptions>(this.label, options, ["seed"], dtypeHint).seed);
    // The layers' own random initialization is skipped (Hugging Face's below replaces every value it would draw), the
    // same seeds drawn: the model built before, in a third of the host's time.
    const [embeddings, encoder, pooler] = skipInit(
      () =>
        [
          new BertEmbeddings(this.config, nextSeed, this instanceof RobertaModel ? padding : null),
          new BertEncoder(this.config, nextSeed),
          new BertPooler(this.config, nextSeed),
        ] as const,
    );
    this.embeddings = embeddings;
    this.encoder = encoder;
    this.pooler = pooler;
    // Inside a caller's skipInit (fromPretrained's), Hugging Face's initialization is skipped too: nothing is drawn.
    if (!initSkipped()) initLikeHuggingFace(this, this.config.initializer_range, nextSeed);
  }

  /**
   * Hugging Face's initialization (N(0, initializer_range), biases zero, the padding row zero, LayerNorms ones and
   * zeros), as the constructor gives
   * it, of the parameters `only` names (all by default; by their names in namedParameters(), e.g.
   * "pooler.dense.weight"), from `seed` (else drawn from core's global generator). What fromPretrained runs for the
   * parameters a checkpoint does not hold, as transformers initializes its missing weights. Each value keeps its
   * parameter's backend and dtype; an explicit call draws even inside nn's skipInit.
   */
  initWeights(only?: ((name: string) => boolean) | null, seed?: number): void {
    const filter = onlyArg(this.label, only);
    initLikeHuggingFace(this, this.config.initializer_range, seedStream(this.label, seed), undefined, filter);
  }

  /** Token ids [B, T] (int32) -> the last hidden state [B, T, hidden_size]. */
  forward(inputIds: Tensor, inputs: EncoderInputs | null = {}): Tensor {
    const { lastHiddenState, poolerOutput } = this.encode(inputIds, inputs);
    poolerOutput.dispose();
    return lastHiddenState;
  }

  /** Token ids [B, T] (int32) -> the last hidden state and the pooler output. Unknown inputs (attention_mask) are refused, not ignored. */
  encode(inputIds: Tensor, encoderInputs: EncoderInputs | null = {}): EncoderOutput {
    const inputs = checkOptions<EncoderInputs>(this.label, encoderInputs, ENCODER_INPUTS);
    const [lastHiddenState, poolerOutput] = tidy(() => {
      const [batch, length] = checkTokenIds(this.label, "inputIds", inputIds, this.maxLength(), this.config.vocab_size);
      const ids = reshape(inputIds, [batch, length]);
      const attentionMask = optionalInput(this.label, "attentionMask", inputs.attentionMask, inputIds);
      // Only 0 and 1, as GPT-2's mask (a 2 or 0.5 would be attended as a token), read where a read is free (checkTokenIds').
      const badFlag = attentionMask?.backend.graphs === undefined ? attentionMask?.dataSync().find((flag) => flag !== 0 && flag !== 1) : undefined;
      if (badFlag !== undefined) throw new ValueError(`${this.label}: attentionMask holds ${badFlag}, expected only 0 (padding) and 1 (token)`);
      const tokenTypeIds = optionalInput(this.label, "tokenTypeIds", inputs.tokenTypeIds, inputIds);
      if (tokenTypeIds !== undefined) checkTokenIds(this.label, "tokenTypeIds", tokenTypeIds, length, this.config.type_vocab_size, "token types");
      const weights = this.embeddings.word_embeddings.weight.value;
      const positionIds = this.positionIds(ids);
      const positions = positionIds === undefined ? undefined : uploadOn(positionIds, [batch, length], ids, "int32");
      const mask = attentionMask === undefined ? null : paddingMask(attentionMask, batch, length, weights);
      const hidden = this.encoder.forward(this.embeddings.forward(ids, positions, tokenTypeIds), mask);
      return [hidden, this.pooler.forward(hidden)];
    });
    return { lastHiddenState, poolerOutput };
  }

  /**
   * Checkpoint names: as the model's, or under "bert." / "roberta." (files of the task
   * models); the position_ids buffer is skipped; LayerNorm.gamma / .beta of older files
   * are LayerNorm.weight / .bias. A masked-LM file lacks the pooler (it keeps its initial values) and a pre-training
   * file holds heads (cls.*, lm_head.*): both load, as transformers' BertModel loads them.
   */
  checkpointRules(): CheckpointRules {
    return {
      modelKey: (fileKey) => {
        if (fileKey.endsWith("embeddings.position_ids")) return null;
        return fileKey
          .replace(/^(bert|roberta)\./, "")
          .replace(/\.LayerNorm\.gamma$/, ".LayerNorm.weight")
          .replace(/\.LayerNorm\.beta$/, ".LayerNorm.bias");
      },
      transposed: () => false,
      optional: /^(pooler|cls|lm_head)\./,
    };
  }

  /**
   * The position of each token, [B * T] row-major, or undefined for 0, 1, 2, ... in every row (BERT's, read as the
   * first T rows of the position table, nothing uploaded).
   */
  protected positionIds(_ids: Tensor): Int32Array | undefined {
    return undefined;
  }

  /** The longest input the position embeddings cover. */
  protected maxLength(): number {
    return this.config.max_position_embeddings;
  }
}

/**
 * Hugging Face's RobertaModel: BERT's tree with positions counted from padding_idx + 1
 * over the non-padding tokens (padding tokens sit at padding_idx).
 */
export class RobertaModel extends BertModel {
  /** As BertModel's, with RobertaConfig's defaults where config.json has no value: pad_token_id 1 and vocab_size 50265 (BertConfig's are 0 and 30522). */
  constructor(config: unknown, options?: ModelOptions | null) {
    super(isRecord(config) ? { vocab_size: 50265, pad_token_id: 1, ...config } : config, options);
  }

  protected override positionIds(ids: Tensor): Int32Array {
    const [batch, length] = ids.shape;
    const padding = this.config.pad_token_id as number;
    const tokens = ids.dataSync();
    const positions = new Int32Array(batch * length);
    for (let b = 0; b < batch; b++) {
      let count = 0;
      for (let t = 0; t < length; t++) {
        const i = b * length + t;
        positions[i] = tokens[i] === padding ? padding : ++count + padding;
      }
    }
    return positions;
  }

  /** NaN for pad_token_id: null, refused when built: RoBERTa counts positions from the padding id (transformers' padding_idx). */
  protected override maxLength(): number {
    return this.config.max_position_embeddings - (this.config.pad_token_id ?? Number.NaN) - 1;
  }
}

/**
 * An encoder input beside the token ids as [B, T] (a view of a [T] input for ids given as [T]), or undefined when
 * absent (undefined or null, as Hugging Face's None); a value that is not a Tensor of the ids' shape is named.
 */
function optionalInput(label: string, name: string, value: unknown, inputIds: Tensor): Tensor | undefined {
  if (value == null) return undefined;
  if (!(value instanceof Tensor)) throw new DTypeError(`${label}: ${name} must be a Tensor, got ${Array.isArray(value) ? "an array" : typeof value}`);
  if (`${value.shape}` !== `${inputIds.shape}`) throw new ShapeError(`${label}: ${name} has shape [${value.shape}], expected [${inputIds.shape}] like the token ids`);
  return inputIds.rank === 1 ? reshape(value, [1, inputIds.shape[0]]) : value;
}
