import { open, readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { FLOAT_DTYPES, type FloatDType, IndexError, ValueError } from "@blocksparse/core";
import { MAX_HEADER_BYTES, parseSafetensorsHeader } from "@blocksparse/format";
import { loadSafetensors } from "@blocksparse/format/node";
import { skipInit } from "@blocksparse/nn";
import {
  BertNormalizer,
  BertPreTokenizer,
  ByteLevelPreTokenizer,
  type Encoding,
  LowercaseNormalizer,
  type Normalizer,
  type PreTokenizer,
  SequenceNormalizer,
  SequencePreTokenizer,
  Tokenizer,
} from "@huggingface/tokenizers";
import { BertModel, RobertaModel } from "./bert";
import { CONTROL_RANGES, NONSPACING_MARK_RANGES, PUNCTUATION_RANGES, WHITESPACE_RANGES } from "./bert-unicode";
import {
  CHECKPOINT_OPTIONS,
  type CheckpointOptions,
  checkCheckpointModel,
  type HuggingFaceModel,
  loadPlannedTensors,
  planCheckpoint,
  type TensorHeader,
} from "./checkpoint";
import { isRecord, modelTypeOf } from "./config";
import { CheckpointError, ConfigError } from "./errors";
import { GPT2LMHeadModel } from "./gpt2";
import { checkOptions, dtypeHint } from "./layers";

/** Node.js file helpers: checkpoint folders, sharded indexes, tokenizers. The main entry stays free of `node:` imports. */

export interface LoadCheckpointResult {
  /** The safetensors files read, in order. */
  files: string[];
  /** Parameters the checkpoint lacked (with strict, only those the model lets a file lack: BERT's pooler). */
  missingKeys: string[];
  /** Checkpoint keys the model has no place for (with strict, only heads the model lets pass: BERT's cls.*, a fine-tune's classifier.*). */
  unexpectedKeys: string[];
}

const SINGLE_FILE = "model.safetensors";
const SHARDED_INDEX = "model.safetensors.index.json";

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The dtype and shape of every tensor of a safetensors file, from its header alone. */
export async function readSafetensorsHeader(path: string): Promise<Map<string, TensorHeader>> {
  const fail = (why: string) => new CheckpointError("readSafetensorsHeader", [], [], [], [`${path}: ${why}`]);
  const file = await open(path, "r").catch((error: Error) => {
    throw fail(`cannot be opened (${error.message})`);
  });
  try {
    const info = await file.stat();
    // A directory opens, then fails the read with the system's EISDIR: named here (an index's shard "..", a folder).
    if (!info.isFile()) throw fail(info.isDirectory() ? "is a directory, not a safetensors file" : "is not a regular file");
    const { size } = info;
    const prefix = Buffer.alloc(8);
    if (size < 8 || (await file.read(prefix, 0, 8, 0)).bytesRead !== 8) throw fail("is shorter than a safetensors header");
    // A clone without git-lfs leaves a small text file in the weights' place.
    if (prefix.toString("latin1") === "version ") throw fail("is a Git LFS pointer, not the weights (fetch them with `git lfs pull`)");
    const length = Number(prefix.readBigUInt64LE(0));
    if (length > MAX_HEADER_BYTES || 8 + length > size) throw fail(`declares a header of ${length} bytes in a file of ${size} bytes`);
    const bytes = Buffer.alloc(length);
    await file.read(bytes, 0, length, 8);
    // The whole layout (byte ranges against the file's size included): a truncated shard is refused before any file loads.
    let layout: ReturnType<typeof parseSafetensorsHeader>;
    try {
      layout = parseSafetensorsHeader(bytes, size);
    } catch (error) {
      throw fail((error as Error).message);
    }
    const out = new Map<string, TensorHeader>();
    for (const { name, dtype, shape } of layout.entries) out.set(name, { dtype, shape });
    return out;
  } finally {
    await file.close();
  }
}

/** file -> the keys it holds, from model.safetensors.index.json; checked against the shards' own headers. */
async function readShardedIndex(indexPath: string): Promise<{ files: string[]; headers: Map<string, TensorHeader> }> {
  const fail = (why: string) => new CheckpointError("loadCheckpoint", [], [], [], [`${indexPath}: ${why}`]);
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, "utf8"));
  } catch (error) {
    throw fail(`cannot be read as JSON (${(error as Error).message})`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== "object" || Array.isArray(weightMap)) throw fail("has no weight_map object");
  const entries = Object.entries(weightMap as Record<string, unknown>);
  const files = [...new Set(entries.map(([, file]) => file))];
  const bad = files.filter((file) => typeof file !== "string" || file === "" || basename(file) !== file);
  if (bad.length > 0) throw fail(`weight_map names files that are not plain file names: ${bad.map(String).join(", ")}`);
  const headers = new Map<string, TensorHeader>();
  const problems: string[] = [];
  for (const file of files as string[]) {
    const path = join(dirname(indexPath), file);
    if (!(await exists(path))) {
      problems.push(`shard ${file} (named by ${SHARDED_INDEX}) does not exist`);
      continue;
    }
    const shard = await readSafetensorsHeader(path);
    for (const [key, owner] of entries) {
      if (owner === file && !shard.has(key)) problems.push(`${SHARDED_INDEX} puts '${key}' in ${file}, which does not hold it`);
    }
    for (const [key, header] of shard) {
      if ((weightMap as Record<string, unknown>)[key] !== file) problems.push(`${file} holds '${key}', which ${SHARDED_INDEX} does not place there`);
      else headers.set(key, header);
    }
  }
  if (problems.length > 0) throw new CheckpointError("loadCheckpoint", [], [], [], problems);
  return { files: (files as string[]).map((file) => join(dirname(indexPath), file)), headers };
}

/** The safetensors files of a checkpoint folder or path, and every tensor's header. */
async function checkpointFiles(path: string): Promise<{ files: string[]; headers: Map<string, TensorHeader> }> {
  const info = await stat(path).catch(() => null);
  if (info === null) throw new CheckpointError("loadCheckpoint", [], [], [], [`${path} does not exist`]);
  if (info.isDirectory()) {
    if (await exists(join(path, SINGLE_FILE))) return checkpointFiles(join(path, SINGLE_FILE));
    if (await exists(join(path, SHARDED_INDEX))) return readShardedIndex(join(path, SHARDED_INDEX));
    const pickle = (await exists(join(path, "pytorch_model.bin"))) ? " (pytorch_model.bin is not read: convert it to model.safetensors)" : "";
    throw new CheckpointError("loadCheckpoint", [], [], [], [`${path} holds neither ${SINGLE_FILE} nor ${SHARDED_INDEX}${pickle}`]);
  }
  if (path.endsWith(".index.json")) return readShardedIndex(path);
  return { files: [path], headers: await readSafetensorsHeader(path) };
}

/**
 * Loads a Hugging Face checkpoint into `model` by name: a folder (model.safetensors, or the
 * shards of model.safetensors.index.json), a .safetensors file or an index file. Every
 * header is checked against the model first (CheckpointError lists missing, unexpected
 * and mis-shaped keys); then the files are read one at a time.
 */
export async function loadCheckpoint(model: HuggingFaceModel, path: string, options: CheckpointOptions | null = {}): Promise<LoadCheckpointResult> {
  // A model without checkpoint names and an unknown option (torch_dtype) are refused before any file is read, not ignored.
  checkCheckpointModel(model);
  checkOptions("loadCheckpoint", options, CHECKPOINT_OPTIONS, dtypeHint);
  const { files, headers } = await checkpointFiles(path);
  const plan = planCheckpoint(model, headers, options);
  for (const file of files) loadPlannedTensors(model, plan, (await loadSafetensors(file)).tensors);
  return { files, missingKeys: plan.missingKeys, unexpectedKeys: plan.unexpectedKeys };
}

/** config.json of a checkpoint folder, parsed. */
export async function readConfig(dir: string): Promise<Record<string, unknown>> {
  const path = join(dir, "config.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new ConfigError(`readConfig: cannot read ${path} (${(error as Error).message})`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`readConfig: ${path} is not JSON (${(error as Error).message})`);
  }
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new ConfigError(`readConfig: ${path} holds ${config === null ? "null" : Array.isArray(config) ? "an array" : typeof config}, expected a JSON object`);
  }
  return config as Record<string, unknown>;
}

export type PretrainedModel = GPT2LMHeadModel | BertModel | RobertaModel;

export interface FromPretrainedOptions extends CheckpointOptions {
  /** Cast the loaded model to this dtype (default, and null as transformers' torch_dtype=None: float32). */
  dtype?: FloatDType | null;
}

/**
 * The model a Hugging Face folder holds, built from its config.json (model_type gpt2,
 * bert or roberta; without one, the type its `architectures` name) and loaded from its
 * safetensors checkpoint, in eval mode.
 */
export async function fromPretrained(dir: string, fromOptions: FromPretrainedOptions | null = {}): Promise<PretrainedModel> {
  // An unknown option is refused, not ignored: transformers' torch_dtype would otherwise load float32 without a word.
  const options = checkOptions<FromPretrainedOptions>("fromPretrained", fromOptions, [...CHECKPOINT_OPTIONS, "dtype"], (camel) =>
    camel === "torchDtype" ? " (did you mean dtype?)" : "",
  );
  // Checked before loading: Module.to would take any other string for a backend's name.
  if (options.dtype != null && !FLOAT_DTYPES.includes(options.dtype)) {
    throw new ValueError(`fromPretrained: dtype must be one of ${FLOAT_DTYPES.join(", ")}, got ${JSON.stringify(options.dtype)}`);
  }
  const config = await readConfig(dir);
  const builders: Record<string, (c: unknown) => PretrainedModel> = {
    gpt2: (c) => new GPT2LMHeadModel(c),
    bert: (c) => new BertModel(c),
    roberta: (c) => new RobertaModel(c),
  };
  const where = `fromPretrained: ${join(dir, "config.json")}`;
  const modelType = modelTypeOf(where, config);
  const build = typeof modelType === "string" && Object.hasOwn(builders, modelType) ? builders[modelType] : undefined;
  if (build === undefined) {
    const has = modelType === undefined ? "no model_type nor architectures" : `model_type ${JSON.stringify(modelType)}`;
    throw new ConfigError(`${where} has ${has}; supported: ${Object.keys(builders).join(", ")}`);
  }
  // Built without drawing its weights (the checkpoint replaces them; GPT-2 small's took seconds of the host's time):
  // the parameters the checkpoint does not hold are then initialized as the constructor would, as transformers does.
  const model = skipInit(() => build(config));
  try {
    const { missingKeys, unexpectedKeys } = await loadCheckpoint(model, dir, { strict: options.strict });
    // As transformers warns: these parameters are newly initialized (a masked-LM file has no pooler), and a fine-tune's head is left out.
    if (missingKeys.length > 0) {
      const missing = new Set(missingKeys);
      model.initWeights((name) => missing.has(name));
      console.warn(`fromPretrained: ${dir} does not hold ${missingKeys.join(", ")}; they are newly initialized`);
    }
    if (unexpectedKeys.length > 0) console.warn(`fromPretrained: ${dir} holds ${unexpectedKeys.join(", ")}, which the model has no place for; they are not loaded`);
    if (options.dtype != null && options.dtype !== "float32") model.to(options.dtype);
  } catch (error) {
    // The caller never gets the model: its tensors are freed here, not left allocated by a refused checkpoint.
    for (const parameter of model.parameters()) parameter.dispose();
    throw error;
  }
  return model.eval();
}

type EncodeOptions = NonNullable<Parameters<Tokenizer["encode"]>[1]>;
type DecodeOptions = Parameters<Tokenizer["decode"]>[1];

/** A half of a UTF-16 surrogate pair without its other half: no UTF-8 bytes encode it. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Text to encode: a string (null or a number would encode to no tokens, undefined crash inside the library) of whole
 * characters (a lone surrogate would be encoded as U+FFFD's bytes; transformers refuses it, as UTF-8 cannot hold it).
 */
function checkText(name: string, text: unknown): void {
  if (typeof text !== "string") throw new ValueError(`Tokenizer.encode: ${name} must be a string, got ${text === null ? "null" : Array.isArray(text) ? "an array" : typeof text}`);
  const lone = LONE_SURROGATE.exec(text);
  if (lone !== null) {
    const code = lone[0].charCodeAt(0).toString(16);
    throw new ValueError(`Tokenizer.encode: ${name} holds a lone surrogate (U+${code.toUpperCase()} at ${lone.index}), which UTF-8 cannot encode`);
  }
}

/**
 * Hugging Face's Chinese characters (the Rust tokenizers' is_chinese_char): the CJK Unified Ideographs, Extensions A to F
 * and both compatibility blocks (the library's pass walked UTF-16 units, so it never saw one outside the Basic Multilingual
 * Plane: "a\u{20000}b" stayed one word, [UNK]).
 */
const CHINESE =
  /[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B920}-\u{2CEAF}\u{2F800}-\u{2FA1F}]/gu;
const CONTROL = new RegExp(`[${CONTROL_RANGES}]`, "gu");
const WHITESPACE = new RegExp(`[${WHITESPACE_RANGES}]`, "gu");
const NONSPACING_MARK = new RegExp(`[${NONSPACING_MARK_RANGES}]`, "gu");

/**
 * Hugging Face lowercases character by character (Rust's char::to_lowercase): a capital sigma is always σ. JavaScript's
 * toLowerCase makes one that ends a word ς (Unicode's Final_Sigma, its only context-dependent mapping), another token.
 */
const bySingleCharacter = (text: string) => text.replaceAll("\u03a3", "\u03c3");

/**
 * BertNormalizer as Hugging Face's, pass for pass and in its order (clean_text, handle_chinese_chars, strip_accents, then
 * lowercase), on its own character classes (./bert-unicode): the library's \p{Cf} and \p{Mn} follow a newer Unicode,
 * so it dropped format controls Hugging Face keeps and kept or stripped marks unlike it.
 */
class HuggingFaceBertNormalizer extends BertNormalizer {
  override normalize(text: string): string {
    const { clean_text, handle_chinese_chars, strip_accents, lowercase } = this.config;
    let out = text;
    if (clean_text) out = out.replace(CONTROL, "").replace(WHITESPACE, " ");
    if (handle_chinese_chars) out = out.replace(CHINESE, " $& ");
    // strip_accents null follows lowercase, as Hugging Face's.
    if (strip_accents ?? lowercase) out = this.strip_accents(out);
    return lowercase ? bySingleCharacter(out).toLowerCase() : out;
  }

  override strip_accents(text: string): string {
    return text.normalize("NFD").replace(NONSPACING_MARK, "");
  }
}

/**
 * BertPreTokenizer as Hugging Face's: words split at Rust's whitespace (U+0085 is one, U+FEFF is not; the library trimmed
 * and split on JavaScript's \s) with each punctuation character of Hugging Face's table a word of its own.
 */
class HuggingFaceBertPreTokenizer extends BertPreTokenizer {
  constructor() {
    super();
    this.pattern = new RegExp(`[^${WHITESPACE_RANGES}${PUNCTUATION_RANGES}]+|[${PUNCTUATION_RANGES}]`, "gu");
  }

  override pre_tokenize_text(text: string): string[] {
    return text.match(this.pattern) ?? [];
  }
}

/** The Lowercase normalizer as Hugging Face's: each character alone. */
class HuggingFaceLowercaseNormalizer extends LowercaseNormalizer {
  override normalize(text: string): string {
    return super.normalize(bySingleCharacter(text));
  }
}

/** `normalizer` with each BertNormalizer and Lowercase (alone or in a Sequence) made Hugging Face's. */
function asHuggingFace(normalizer: Normalizer | null): Normalizer | null {
  if (normalizer instanceof BertNormalizer) return new HuggingFaceBertNormalizer(normalizer.config);
  if (normalizer instanceof LowercaseNormalizer) return new HuggingFaceLowercaseNormalizer(normalizer.config);
  if (normalizer instanceof SequenceNormalizer) normalizer.normalizers = normalizer.normalizers.map(asHuggingFace);
  return normalizer;
}

/**
 * Whitespace as Oniguruma's \s matches it in Hugging Face's Rust regexes: U+0009 to U+000D, U+0085 and the Z categories.
 * JavaScript's \s leaves out U+0085 (NEL) and takes U+FEFF (the byte order mark, which Oniguruma does not).
 */
const SPACE = "\\t-\\r\\x85\\p{Z}";

/** GPT-2's pre-tokenizer regex (ByteLevel's use_regex) with Oniguruma's whitespace. */
const byteLevelPattern = () =>
  new RegExp(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${SPACE}\\p{L}\\p{N}]+|[${SPACE}]+(?![^${SPACE}])|[${SPACE}]+`, "gu");

/** `preTokenizer` with each ByteLevel and BertPreTokenizer (alone or in a Sequence) splitting as Hugging Face's. */
function withHuggingFaceSplits(preTokenizer: PreTokenizer | null): PreTokenizer | null {
  if (preTokenizer instanceof ByteLevelPreTokenizer) preTokenizer.pattern = byteLevelPattern();
  if (preTokenizer instanceof BertPreTokenizer) return new HuggingFaceBertPreTokenizer();
  if (preTokenizer instanceof SequencePreTokenizer) preTokenizer.tokenizers = preTokenizer.tokenizers.map(withHuggingFaceSplits);
  return preTokenizer;
}

/** A word character as the Rust regex crate's Unicode `\w`, which Hugging Face's added tokens test for `single_word`. */
const WORD_CHARACTER = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;

/** The last character of `text` (a surrogate pair whole). */
const lastCharacter = (text: string) => [...text].at(-1) ?? "";

/** The library's trie of added-token contents (DictionarySplitter's): a node per UTF-16 unit, `end` where a content ends. */
interface TrieNode {
  [unit: string]: TrieNode | string | undefined;
  end?: string;
}

/**
 * The library's added-token splitter with Hugging Face's `single_word`: a token so marked matches only where neither
 * side touches a word character (`cat` stays inside "concatenate"). As Hugging Face's leftmost-longest scan, a match
 * refused so is passed over whole, and the text it covered stays the plain text's.
 */
function wholeWordSplit(trie: TrieNode, singleWord: (content: string) => boolean, text: string): string[] {
  const result: string[] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    let node: TrieNode | undefined = trie;
    let match: string | null = null;
    for (let j = i; j < text.length; j++) {
      node = node[text[j]] as TrieNode | undefined;
      if (node === undefined) break;
      if (node.end !== undefined) match = node.end;
    }
    if (match === null) {
      i++;
      continue;
    }
    const end = i + match.length;
    const before = i > 0 && WORD_CHARACTER.test(lastCharacter(text.slice(Math.max(0, i - 2), i)));
    const after = end < text.length && WORD_CHARACTER.test(String.fromCodePoint(text.codePointAt(end) as number));
    if (singleWord(match) && (before || after)) {
      i = end;
      continue;
    }
    if (i > start) result.push(text.slice(start, i));
    result.push(match);
    i = end;
    start = end;
  }
  if (start < text.length) result.push(text.slice(start));
  return result;
}

/** encode's and decode's options: the library's, named as transformers' keyword arguments. */
const ENCODE_OPTIONS: readonly string[] = ["text_pair", "add_special_tokens", "return_token_type_ids"];
const DECODE_OPTIONS: readonly string[] = ["skip_special_tokens", "clean_up_tokenization_spaces"];

/**
 * encode's or decode's options (null: none), each one of `names`: the library ignored any other key (truncation, a
 * camelCase name) and a value that is no object (transformers' positional text_pair or skip_special_tokens, which
 * `positional` names), so that they changed nothing without a word.
 */
function checkTokenizerOptions(label: string, options: unknown, names: readonly string[], positional: string): void {
  if (options != null && typeof options !== "object") throw new ValueError(`${label}: options must be an object, got ${typeof options} (${positional})`);
  checkOptions(label, options, names, (camel) => {
    const snake = camel.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
    if (names.includes(snake)) return ` (did you mean ${snake}?)`;
    if (snake === "return_attention_mask") return " (encode always returns attention_mask)";
    return ["truncation", "max_length", "padding"].includes(snake) ? " (encode neither truncates nor pads: slice the ids)" : "";
  });
}

/** How a token id list to decode is described in an error. */
const describeIds = (ids: unknown) => (ids === null ? "null" : ArrayBuffer.isView(ids) ? ids.constructor.name : Array.isArray(ids) ? "an array" : typeof ids);

/** Whether a tokenizer.json post_processor is RobertaProcessing, alone or in a Sequence. */
function isRobertaProcessing(processor: unknown): boolean {
  if (!isRecord(processor)) return false;
  return processor.type === "RobertaProcessing" || (processor.type === "Sequence" && Array.isArray(processor.processors) && processor.processors.some(isRobertaProcessing));
}

/**
 * Whether a tokenizer.json post_processor adds nothing to a pair (none, or ByteLevel as GPT-2's, or a Sequence ending
 * in one): the library gives such a processor's encodings no token types, and ByteLevel's pairs without their second text.
 */
function concatenatesPairs(processor: unknown): boolean {
  if (!isRecord(processor)) return true;
  if (processor.type === "ByteLevel") return true;
  const processors = processor.type === "Sequence" && Array.isArray(processor.processors) ? processor.processors : null;
  return processors !== null && (processors.length === 0 || concatenatesPairs(processors[processors.length - 1]));
}

/**
 * Hugging Face's tokenizers (`@huggingface/tokenizers`) with transformers' decode: an empty list decodes to "", ids may
 * come as a typed array (a generate result's dataSync()), a negative or non-integer id is named (it decoded to nothing),
 * and an id past the vocabulary is skipped, as transformers skips it. Encoding a pair gives Hugging Face's token types:
 * 0 then 1 where the post-processor adds nothing (GPT-2's: the texts concatenated), 0 throughout for RobertaProcessing.
 */
class PretrainedTokenizer extends Tokenizer {
  /** RoBERTa does not use token types: the library gives a pair's second text type 1, which RoBERTa's type_vocab_size of 1 has no row for. */
  readonly #typesAllZero: boolean;
  /** The post-processor adds nothing: a pair is the two texts' tokens, types 0 then 1 (the library dropped ByteLevel's second text). */
  readonly #concatenatesPairs: boolean;

  constructor(tokenizer: Record<string, unknown>, config: Record<string, unknown>) {
    super(tokenizer, config);
    this.normalizer = asHuggingFace(this.normalizer);
    this.pre_tokenizer = withHuggingFaceSplits(this.pre_tokenizer);
    this.#typesAllZero = isRobertaProcessing(tokenizer.post_processor);
    this.#concatenatesPairs = concatenatesPairs(tokenizer.post_processor);
    // The library reads no added token's single_word: "cat" so marked was cut out of "concatenate".
    const library = this as unknown as {
      added_tokens_map: Map<string, { single_word?: boolean }>;
      splitter_unnormalized: { trie: TrieNode; split(text: string): string[] };
      splitter_normalized: { trie: TrieNode; split(text: string): string[] };
    };
    if ([...library.added_tokens_map.values()].some((token) => token.single_word)) {
      const singleWord = (content: string) => library.added_tokens_map.get(content)?.single_word === true;
      for (const splitter of [library.splitter_unnormalized, library.splitter_normalized]) {
        splitter.split = (text: string) => wholeWordSplit(splitter.trie, singleWord, text);
      }
      // Such a token's text left inside a word reaches the model, which must not know it unless its vocabulary does (as
      // Hugging Face's added vocabulary stays out of the model's): the library had put every added token in the model's.
      const model = (this as unknown as { model: { tokens_to_ids: Map<string, number> } }).model;
      const vocab = isRecord(tokenizer.model) && isRecord(tokenizer.model.vocab) ? tokenizer.model.vocab : null;
      for (const [content, token] of library.added_tokens_map) {
        if (token.single_word && vocab !== null && !Object.hasOwn(vocab, content)) {
          this.#addedOnly.set(content, model.tokens_to_ids.get(content) as number);
          model.tokens_to_ids.delete(content);
        }
      }
    }
  }

  /** Added single_word tokens kept out of the model's vocabulary: still tokens of the tokenizer's. */
  readonly #addedOnly = new Map<string, number>();

  override token_to_id(token: string): number | undefined {
    return this.#addedOnly.get(token) ?? super.token_to_id(token);
  }

  override encode(text: string, options: EncodeOptions & { return_token_type_ids: true }): Encoding & { token_type_ids: number[] };
  override encode(text: string, options?: EncodeOptions): Encoding;
  override encode(text: string, options?: EncodeOptions): Encoding {
    checkTokenizerOptions("Tokenizer.encode", options, ENCODE_OPTIONS, "a second text is { text_pair }");
    checkText("text", text);
    const pair = options?.text_pair;
    if (pair != null) checkText("text_pair", pair);
    if (!this.#concatenatesPairs) {
      const encoding = this.#known(super.encode(text, options ?? {}));
      if (this.#typesAllZero) encoding.token_type_ids?.fill(0);
      return encoding;
    }
    // "" is no pair, as transformers' fast tokenizers take it.
    const parts = [text, ...(pair ? [pair] : [])].map((part) => this.#known(super.encode(part, { ...options, text_pair: null })));
    const encoding: Encoding = {
      ids: parts.flatMap((part) => part.ids),
      tokens: parts.flatMap((part) => part.tokens),
      attention_mask: parts.flatMap((part) => part.attention_mask),
    };
    if (options?.return_token_type_ids) encoding.token_type_ids = parts.flatMap((part, type) => part.ids.map(() => type));
    return encoding;
  }

  /**
   * `encoding`, refused where a token has no id: one the vocabulary lacks, in a tokenizer whose unknown token is not in it
   * either, had the id null (0 once in an Int32Array), where Hugging Face's tokenizers fail ("Missing [UNK] token from
   * the vocabulary").
   */
  #known(encoding: Encoding): Encoding {
    const at = encoding.ids.findIndex((id) => !Number.isInteger(id));
    if (at >= 0) {
      const unk = (this as unknown as { model: { unk_token?: unknown } }).model.unk_token;
      const token = encoding.tokens[at];
      // The model gives its unknown token for a piece it lacks: that token missing is the whole story.
      const what = token === unk ? `the text has a piece the vocabulary lacks (token ${at}), and the unknown token ${JSON.stringify(unk)} is not in the vocabulary either` : `the token ${JSON.stringify(token)} (at ${at}) is not in the vocabulary, and ${typeof unk === "string" ? `the unknown token ${JSON.stringify(unk)} is not either` : "the model has no unknown token"}`;
      throw new ConfigError(`Tokenizer.encode: ${what}: the tokenizer.json cannot encode this text`);
    }
    return encoding;
  }

  override decode(tokenIds: ArrayLike<number | bigint>, options?: DecodeOptions): string {
    checkTokenizerOptions("Tokenizer.decode", options, DECODE_OPTIONS, "{ skip_special_tokens: true }");
    if (!Array.isArray(tokenIds) && !(ArrayBuffer.isView(tokenIds) && !(tokenIds instanceof DataView))) {
      throw new ValueError(`Tokenizer.decode: token ids must be an array of integers, got ${describeIds(tokenIds)}`);
    }
    const ids = Array.from(tokenIds as ArrayLike<number | bigint>, Number);
    if (ids.length === 0) return "";
    for (const [i, id] of ids.entries()) {
      if (!Number.isSafeInteger(id)) throw new ValueError(`Tokenizer.decode: the token id at ${i} is ${tokenIds[i]}, not an integer`);
      if (id < 0) throw new IndexError(`Tokenizer.decode: token id ${id} (at ${i}) is negative`);
    }
    // An id past the vocabulary (a model's padded vocab_size) is skipped, as transformers' decode skips it: the library
    // decoded it as the unknown token (BERT's "[UNK]").
    const known = ids.filter((id) => this.id_to_token(id) !== undefined);
    return known.length === 0 ? "" : super.decode(known, options ?? {});
  }
}

/**
 * The tokenizer of tokenizer.json (and tokenizer_config.json when present) in `dir`, read from local files only. As
 * transformers 5's tokenizers, decode leaves spaces as the ids give them unless tokenizer_config.json sets
 * clean_up_tokenization_spaces (so decode(encode("a , b").ids) is "a , b").
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer & { decode(tokenIds: ArrayLike<number | bigint>, options?: DecodeOptions): string }> {
  const read = async (name: string, required: boolean): Promise<Record<string, unknown>> => {
    const path = join(dir, name);
    if (!required && !(await exists(path))) return {};
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      throw new ConfigError(`loadTokenizer: cannot read ${path} (${(error as Error).message})`);
    }
    // A clone without git-lfs leaves a small text file in a large tokenizer.json's place.
    if (text.startsWith("version https://git-lfs")) throw new ConfigError(`loadTokenizer: ${path} is a Git LFS pointer, not the file (fetch it with \`git lfs pull\`)`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new ConfigError(`loadTokenizer: ${path} is not JSON (${(error as Error).message})`);
    }
    if (!isRecord(parsed)) throw new ConfigError(`loadTokenizer: ${path} does not hold a JSON object`);
    return parsed;
  };
  const tokenizer = await read("tokenizer.json", true);
  // The library cleans up when the config says nothing (or null), which transformers does not.
  const config = await read("tokenizer_config.json", false);
  config.clean_up_tokenization_spaces ??= false;
  // Hugging Face's tokenizers refuse a WordPiece model missing any of these ("missing field"); the library read a missing
  // continuing_subword_prefix as the text "undefined" before each piece.
  const model = tokenizer.model;
  if (isRecord(model) && model.type === "WordPiece") {
    const missing = ["unk_token", "continuing_subword_prefix", "max_input_chars_per_word", "vocab"].filter((field) => model[field] === undefined || model[field] === null);
    if (missing.length > 0) throw new ConfigError(`loadTokenizer: ${join(dir, "tokenizer.json")}'s WordPiece model has no ${missing.join(", ")}, which Hugging Face's tokenizers require`);
  }
  try {
    return new PretrainedTokenizer(tokenizer, config);
  } catch (error) {
    throw new ConfigError(`loadTokenizer: ${join(dir, "tokenizer.json")} is not a tokenizer this library reads (${(error as Error).message})`);
  }
}
