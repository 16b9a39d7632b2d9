import * as z from "zod/mini";
import { ConfigError } from "./errors";

// zod/mini (tree-shakes, no `new Function`, as format's schemas): each schema says what it expects.
const positive = { error: "expected a positive integer" };
const positiveInt = z.int(positive).check(z.positive(positive));
const nonNegative = { error: "expected a non-negative number" };
const nonNegativeNumber = z.number(nonNegative).check(z.nonnegative(nonNegative));
// An id, or a non-empty list of them (transformers' eos_token_id: [50256, 198] ends at either), or null. A predicate,
// not z.union of z.array: those would add a kilobyte to the browser bundle.
const isTokenId = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0;
const tokenIdOrNull = z.nullable(z.custom<number>(isTokenId, { error: "expected a non-negative integer or null" }));
const tokenIdsOrNull = z.nullable(
  z.custom<number | number[]>((value) => isTokenId(value) || (Array.isArray(value) && value.length > 0 && value.every(isTokenId)), {
    error: "expected a non-negative integer, a non-empty list of them, or null",
  }),
);
// Below 1, as nn's Dropout takes (torch's p = 1 zeroes everything in training).
const probabilityRange = { error: "expected a probability in [0, 1)" };
const probability = z.number(probabilityRange).check(z.minimum(0, probabilityRange), z.lt(1, probabilityRange));
/** The one value a field may hold here (other values describe models this package does not build). */
const only = <const T extends string | boolean>(value: T) => z.literal(value, { error: `expected ${JSON.stringify(value)}` });
/** `schema`, or `value` when the field is absent. */
const orDefault = <S extends z.ZodMiniType>(schema: S, value: z.output<S>) => z._default(schema, value as z.core.util.NoUndefined<z.output<S>>);
const trueOrFalse = z.boolean({ error: "expected true or false" });
/** A feature this package does not build: false or absent. */
const absentFeature = orDefault(only(false), false);

const ACTIVATIONS = ["gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_accurate", "quick_gelu", "relu"] as const;
/** The activations Hugging Face names in configs (keys of transformers' ACT2FN) that this package builds. */
export type Activation = (typeof ACTIVATIONS)[number];
const activation = z.enum(ACTIVATIONS, { error: `expected one of ${ACTIVATIONS.map((name) => `"${name}"`).join(", ")}` });

/** The fields of GPT2Config that shape the model (other fields of config.json are ignored). */
const Gpt2ConfigSchema = z.object({
  model_type: z.optional(only("gpt2")),
  vocab_size: orDefault(positiveInt, 50257),
  n_positions: orDefault(positiveInt, 1024),
  n_embd: orDefault(positiveInt, 768),
  n_layer: orDefault(positiveInt, 12),
  n_head: orDefault(positiveInt, 12),
  n_inner: orDefault(z.nullable(positiveInt), null),
  activation_function: orDefault(activation, "gelu_new"),
  resid_pdrop: orDefault(probability, 0.1),
  embd_pdrop: orDefault(probability, 0.1),
  attn_pdrop: orDefault(probability, 0.1),
  layer_norm_epsilon: orDefault(nonNegativeNumber, 1e-5),
  initializer_range: orDefault(nonNegativeNumber, 0.02),
  scale_attn_weights: orDefault(trueOrFalse, true),
  scale_attn_by_inverse_layer_idx: orDefault(trueOrFalse, false),
  tie_word_embeddings: orDefault(trueOrFalse, true),
  add_cross_attention: absentFeature,
  // generate's end token (or tokens: a list, any of which ends a sequence) when its options give none (transformers'
  // GPT2Config default, GPT-2's <|endoftext|>); null: none.
  eos_token_id: orDefault(tokenIdsOrNull, 50256),
});
export type Gpt2Config = z.output<typeof Gpt2ConfigSchema>;

/** The fields of BertConfig / RobertaConfig that shape the model. */
const BertConfigSchema = z.object({
  model_type: z.optional(z.enum(["bert", "roberta"], { error: 'expected "bert" or "roberta"' })),
  vocab_size: orDefault(positiveInt, 30522),
  hidden_size: orDefault(positiveInt, 768),
  num_hidden_layers: orDefault(positiveInt, 12),
  num_attention_heads: orDefault(positiveInt, 12),
  intermediate_size: orDefault(positiveInt, 3072),
  hidden_act: orDefault(activation, "gelu"),
  hidden_dropout_prob: orDefault(probability, 0.1),
  attention_probs_dropout_prob: orDefault(probability, 0.1),
  max_position_embeddings: orDefault(positiveInt, 512),
  type_vocab_size: orDefault(positiveInt, 2),
  layer_norm_eps: orDefault(nonNegativeNumber, 1e-12),
  initializer_range: orDefault(nonNegativeNumber, 0.02),
  pad_token_id: orDefault(tokenIdOrNull, 0),
  position_embedding_type: orDefault(only("absolute"), "absolute"),
  is_decoder: absentFeature,
  add_cross_attention: absentFeature,
});
export type BertConfig = z.output<typeof BertConfigSchema>;

/** transformers' model classes (config.json's `architectures`) of each model_type this package builds. */
const ARCHITECTURES: readonly [RegExp, string][] = [
  [/^GPT2(Model|LMHeadModel|DoubleHeadsModel|For[A-Za-z]+)$/, "gpt2"],
  [/^Bert(Model|ForPreTraining|LMHeadModel|For[A-Za-z]+)$/, "bert"],
  [/^Roberta(Model|ForCausalLM|For[A-Za-z]+)$/, "roberta"],
];

/**
 * A config's model_type, or, where it has none, the one its `architectures` name (["GPT2LMHeadModel"] -> "gpt2");
 * undefined when neither says. Architectures of other types, or of more than one, are a ConfigError naming them
 * (`where`: the caller and the file).
 */
export function modelTypeOf(where: string, config: Record<string, unknown>): unknown {
  if (config.model_type !== undefined || config.architectures == null) return config.model_type;
  const names = config.architectures;
  if (!Array.isArray(names) || names.length === 0) throw new ConfigError(`${where}: architectures must be a list of model class names, got ${JSON.stringify(names)}`);
  const types = names.map((name: unknown) => ARCHITECTURES.find(([pattern]) => typeof name === "string" && pattern.test(name))?.[1]);
  const unknown = names.filter((_, i) => types[i] === undefined);
  const distinct = [...new Set(types)];
  if (unknown.length === 0 && distinct.length === 1) return distinct[0];
  const why = unknown.length > 0 ? `${JSON.stringify(unknown)} ${unknown.length > 1 ? "are" : "is"} not a GPT-2, BERT or RoBERTa class` : `they are of more than one type (${distinct.join(", ")})`;
  throw new ConfigError(`${where} has no model_type, and its architectures ${JSON.stringify(names)} say none: ${why}`);
}

/** Whether `value` is an object that is not an array (what config.json holds). */
export const isRecord = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === "object" && !Array.isArray(value);

function parse<S extends z.ZodMiniType>(where: string, schema: S, config: unknown, aliases: Record<string, string> = {}): z.output<S> {
  if (!isRecord(config)) throw new ConfigError(`${where}: config must be an object (config.json's contents)`);
  const result = schema.safeParse(config);
  if (result.success) return result.data;
  const fields = result.error.issues.map(({ path, message }) => {
    const field = path.join(".");
    return `${field || "(root)"}${aliases[field] ? ` (given as ${aliases[field]})` : ""}: ${message}`;
  });
  throw new ConfigError(`${where}: config.json does not describe a supported model: ${fields.join("; ")}`);
}

/**
 * GPT2Config's attribute_map, alias -> field: transformers reads these names as GPT-2's own (GPT2Config(hidden_size=64).n_embd
 * is 64), so a config that uses them must not silently get the default sizes.
 */
const GPT2_ALIASES: Record<string, string> = { hidden_size: "n_embd", max_position_embeddings: "n_positions", num_attention_heads: "n_head", num_hidden_layers: "n_layer" };

/** A GPT-2 config from config.json's contents (Hugging Face's defaults for absent fields; GPT2Config's aliases, hidden_size..., read as its fields). */
export function parseGpt2Config(config: unknown): Gpt2Config {
  let resolved = config;
  // field -> the alias it was given as, for the messages.
  const given: Record<string, string> = {};
  for (const [alias, field] of isRecord(config) ? Object.entries(GPT2_ALIASES) : []) {
    const value = (config as Record<string, unknown>)[alias];
    if (value === undefined) continue;
    const own = (config as Record<string, unknown>)[field];
    if (own !== undefined && own !== value) throw new ConfigError(`parseGpt2Config: ${alias}=${JSON.stringify(value)} and ${field}=${JSON.stringify(own)} disagree (transformers reads ${alias} as ${field})`);
    resolved = { ...(resolved as object), [field]: value };
    given[field] = alias;
  }
  const parsed = parse("parseGpt2Config", Gpt2ConfigSchema, resolved, given);
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
