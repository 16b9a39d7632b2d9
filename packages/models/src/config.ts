import { z } from "zod";
import { ConfigError } from "./errors";

const positiveInt = z.number().int().positive();
const probability = z.number().min(0).max(1);

/** The activations Hugging Face names in configs, as core's gelu approximations (or relu). */
export type Activation = "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu";
const activation = z.enum(["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"]);

/** The fields of GPT2Config that shape the model (other fields of config.json are ignored). */
const Gpt2ConfigSchema = z.object({
  model_type: z.literal("gpt2").optional(),
  vocab_size: positiveInt.default(50257),
  n_positions: positiveInt.default(1024),
  n_embd: positiveInt.default(768),
  n_layer: positiveInt.default(12),
  n_head: positiveInt.default(12),
  n_inner: positiveInt.nullable().default(null),
  activation_function: activation.default("gelu_new"),
  resid_pdrop: probability.default(0.1),
  embd_pdrop: probability.default(0.1),
  attn_pdrop: probability.default(0.1),
  layer_norm_epsilon: z.number().nonnegative().default(1e-5),
  initializer_range: z.number().nonnegative().default(0.02),
  scale_attn_weights: z.boolean().default(true),
  scale_attn_by_inverse_layer_idx: z.boolean().default(false),
  tie_word_embeddings: z.literal(true).default(true),
  add_cross_attention: z.literal(false).default(false),
});
export type Gpt2Config = z.output<typeof Gpt2ConfigSchema>;

/** The fields of BertConfig / RobertaConfig that shape the model. */
const BertConfigSchema = z.object({
  model_type: z.enum(["bert", "roberta"]).optional(),
  vocab_size: positiveInt.default(30522),
  hidden_size: positiveInt.default(768),
  num_hidden_layers: positiveInt.default(12),
  num_attention_heads: positiveInt.default(12),
  intermediate_size: positiveInt.default(3072),
  hidden_act: activation.default("gelu"),
  hidden_dropout_prob: probability.default(0.1),
  attention_probs_dropout_prob: probability.default(0.1),
  max_position_embeddings: positiveInt.default(512),
  type_vocab_size: positiveInt.default(2),
  layer_norm_eps: z.number().nonnegative().default(1e-12),
  initializer_range: z.number().nonnegative().default(0.02),
  pad_token_id: z.number().int().nonnegative().nullable().default(0),
  position_embedding_type: z.literal("absolute").default("absolute"),
  is_decoder: z.literal(false).default(false),
  add_cross_attention: z.literal(false).default(false),
});
export type BertConfig = z.output<typeof BertConfigSchema>;

function parse<S extends z.ZodType>(where: string, schema: S, config: unknown): z.output<S> {
  if (config === null || typeof config !== "object" || Array.isArray(config)) throw new ConfigError(`${where}: config must be an object (config.json's contents)`);
  const result = schema.safeParse(config);
  if (result.success) return result.data;
  const fields = result.error.issues.map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`);
  throw new ConfigError(`${where}: config.json does not describe a supported model: ${fields.join("; ")}`);
}

/** A GPT-2 config from config.json's contents (Hugging Face's defaults for absent fields). */
export function parseGpt2Config(config: unknown): Gpt2Config {
  const parsed = parse("parseGpt2Config", Gpt2ConfigSchema, config);
  if (parsed.n_embd % parsed.n_head !== 0) throw new ConfigError(`parseGpt2Config: n_head=${parsed.n_head} does not divide n_embd=${parsed.n_embd}`);
  return parsed;
}

/** A BERT or RoBERTa config from config.json's contents. */
export function parseBertConfig(config: unknown): BertConfig {
  const parsed = parse("parseBertConfig", BertConfigSchema, config);
  if (parsed.hidden_size % parsed.num_attention_heads !== 0) {
    throw new ConfigError(`parseBertConfig: num_attention_heads=${parsed.num_attention_heads} does not divide hidden_size=${parsed.hidden_size}`);
  }
  return parsed;
}
