import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IndexError, ValueError } from "@blocksparse/core";
import { ConfigError } from "@blocksparse/models";
import { loadTokenizer } from "@blocksparse/models/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures } from "./helpers";

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "models-tokenizer-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A copy of the fixture's tokenizer.json with `files` beside it. */
async function tokenizerDir(files: Record<string, unknown>): Promise<string> {
  const dir = await mkdtemp(join(scratch, "tokenizer-"));
  await copyFile(fixtures("tokenizer/tokenizer.json"), join(dir, "tokenizer.json"));
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), typeof content === "string" ? content : JSON.stringify(content));
  return dir;
}

/** A folder holding `tokenizer` as its tokenizer.json. */
async function writtenTokenizer(tokenizer: unknown): Promise<string> {
  const dir = await mkdtemp(join(scratch, "tokenizer-"));
  await writeFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  return dir;
}

/** A BERT tokenizer.json (bert-base-uncased's normalizer, pre-tokenizer, template and decoder) over a vocabulary of 17. */
function wordPieceTokenizer(): unknown {
  const special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
  const vocab = Object.fromEntries([...special, "hello", "world", "cafe", "naive", "un", "##aff", "##able", "中", "文", "!", ",", "\u{20000}"].map((token, id) => [token, id]));
  const sequence = (id: string, type: number) => ({ Sequence: { id, type_id: type } });
  const token = (id: string, type: number) => ({ SpecialToken: { id, type_id: type } });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: special.map((content) => ({ id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [token("[CLS]", 0), sequence("A", 0), token("[SEP]", 0)],
      pair: [token("[CLS]", 0), sequence("A", 0), token("[SEP]", 0), sequence("B", 1), token("[SEP]", 1)],
      special_tokens: { "[CLS]": { id: "[CLS]", ids: [2], tokens: ["[CLS]"] }, "[SEP]": { id: "[SEP]", ids: [3], tokens: ["[SEP]"] } },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
}

describe("loadTokenizer", () => {
  it("encodes as Hugging Face's tokenizers did (the fixture's encodings) and decodes back", async () => {
    const tokenizer = await loadTokenizer(fixtures("tokenizer"));
    const encodings: { text: string; ids: number[] }[] = JSON.parse(await readFile(fixtures("tokenizer/encodings.json"), "utf8"));
    expect(encodings.length).toBeGreaterThan(0);
    for (const { text, ids } of encodings) {
      expect(tokenizer.encode(text).ids).toEqual(ids);
      expect(tokenizer.decode(ids)).toBe(text);
    }
  });

  it("names the missing file", async () => {
    await expect(loadTokenizer(fixtures("gpt2"))).rejects.toThrow(/tokenizer\.json/);
  });

  it("decode(encode(text)) gives the text back, byte-level BPE's edge cases and the empty string included", async () => {
    const tokenizer = await loadTokenizer(fixtures("tokenizer"));
    // Spaces before punctuation stay: transformers does not clean them up unless tokenizer_config.json asks.
    for (const text of ["", " ", "   x  \n\n  y  ", "a\r\nb\t\tc", "Hello , world . I 'm n't", "héllo wörld 日本語", "😀 👍🏽 \u0000\u00ff", "a<|endoftext|>b"]) {
      expect(tokenizer.decode(tokenizer.encode(text).ids)).toBe(text);
    }
    expect(tokenizer.decode([])).toBe("");
  });

  it("decodes a typed array (a generate result's dataSync()) as the same ids in a list", async () => {
    const tokenizer = await loadTokenizer(fixtures("tokenizer"));
    const { ids } = tokenizer.encode("Call me Ishmael.");
    expect(tokenizer.decode(Int32Array.from(ids))).toBe("Call me Ishmael.");
  });

  it("refuses a negative id or one that is not an integer, naming it; skips an id past the vocabulary, as transformers does", async () => {
    const tokenizer = await loadTokenizer(fixtures("tokenizer"));
    const size = tokenizer.get_vocab(true).size;
    // A model whose vocab_size is padded past the tokenizer's can emit such an id.
    expect(tokenizer.decode([35, size, 35])).toBe(tokenizer.decode([35, 35]));
    expect(() => tokenizer.decode([35, -1])).toThrow(IndexError);
    expect(() => tokenizer.decode([35, -1])).toThrow(/token id -1 \(at 1\) is negative/);
    expect(() => tokenizer.decode([35, 1.5])).toThrow(ValueError);
    expect(() => tokenizer.decode([35, Number.NaN])).toThrow(/the token id at 1 is NaN, not an integer/);
    expect(() => tokenizer.decode("35" as unknown as number[])).toThrow(/token ids must be an array of integers, got string/);
  });

  it("cleans up spaces when tokenizer_config.json says so, and not when it says null", async () => {
    const text = "Hello , world .";
    const cleaned = await loadTokenizer(await tokenizerDir({ "tokenizer_config.json": { clean_up_tokenization_spaces: true } }));
    expect(cleaned.decode(cleaned.encode(text).ids)).toBe("Hello, world.");
    const kept = await loadTokenizer(await tokenizerDir({ "tokenizer_config.json": { clean_up_tokenization_spaces: null } }));
    expect(kept.decode(kept.encode(text).ids)).toBe(text);
  });

  it("encode refuses what is not text (null and numbers encoded to nothing, undefined crashed) and a lone surrogate, naming them", async () => {
    const tokenizer = await loadTokenizer(fixtures("tokenizer"));
    for (const [text, message] of [
      [null, /text must be a string, got null/],
      [undefined, /text must be a string, got undefined/],
      [123, /text must be a string, got number/],
      [["a"], /text must be a string, got an array/],
      ["x\ud800y", /text holds a lone surrogate \(U\+D800 at 1\), which UTF-8 cannot encode/],
      ["\udfff", /lone surrogate \(U\+DFFF at 0\)/],
    ] as const) {
      expect(() => tokenizer.encode(text as string)).toThrow(ValueError);
      expect(() => tokenizer.encode(text as string)).toThrow(message);
    }
    expect(() => tokenizer.encode("a", { text_pair: 5 as unknown as string })).toThrow(/text_pair must be a string, got number/);
    // A pair of surrogates is one character, and text_pair null is none.
    expect(tokenizer.decode(tokenizer.encode("\ud83d\ude00", { text_pair: null }).ids)).toBe("😀");
  });

  it("encode and decode refuse options they would ignore (truncation, camelCase names, a pair or a flag given positionally), naming them", async () => {
    const tokenizer = await loadTokenizer(fixtures("tokenizer"));
    const text = "Call me Ishmael. Some years ago";
    const { ids } = tokenizer.encode(text);
    // Each was ignored: every token came back, the pair was dropped, the special tokens kept.
    for (const [run, message] of [
      [() => tokenizer.encode(text, { truncation: true, max_length: 3 } as never), /unknown option 'truncation' \(encode neither truncates nor pads: slice the ids\)/],
      [() => tokenizer.encode(text, { addSpecialTokens: false } as never), /unknown option 'addSpecialTokens' \(did you mean add_special_tokens\?\)/],
      [() => tokenizer.encode(text, { return_attention_mask: false } as never), /unknown option 'return_attention_mask' \(encode always returns attention_mask\)/],
      [() => tokenizer.encode("Call me", " Ishmael" as never), /Tokenizer\.encode: options must be an object, got string \(a second text is \{ text_pair \}\)/],
      [() => tokenizer.decode(ids, { skipSpecialTokens: true } as never), /unknown option 'skipSpecialTokens' \(did you mean skip_special_tokens\?\)/],
      [() => tokenizer.decode(ids, true as never), /Tokenizer\.decode: options must be an object, got boolean \(\{ skip_special_tokens: true \}\)/],
    ] as const) {
      expect(run).toThrow(ValueError);
      expect(run).toThrow(message);
    }
    // The library's own options, and null for none, still work.
    expect(tokenizer.encode("Call me", { text_pair: " Ishmael.", add_special_tokens: false, return_token_type_ids: true }).ids).toEqual(tokenizer.encode("Call me Ishmael.").ids);
    expect(tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: null })).toBe(text);
    expect(tokenizer.encode(text, null as never).ids).toEqual(ids);
    expect(tokenizer.decode(ids, null as never)).toBe(text);
  });

  it("a tokenizer.json or tokenizer_config.json it cannot read is a ConfigError naming the file", async () => {
    const noModel = await mkdtemp(join(scratch, "no-model-"));
    await writeFile(join(noModel, "tokenizer.json"), JSON.stringify({ added_tokens: [] }));
    await expect(loadTokenizer(noModel)).rejects.toThrow(ConfigError);
    await expect(loadTokenizer(noModel)).rejects.toThrow(/tokenizer\.json is not a tokenizer this library reads \(.*model/);
    const listConfig = await tokenizerDir({ "tokenizer_config.json": "[]" });
    await expect(loadTokenizer(listConfig)).rejects.toThrow(/tokenizer_config\.json does not hold a JSON object/);
    const pointer = await mkdtemp(join(scratch, "lfs-"));
    await writeFile(join(pointer, "tokenizer.json"), "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 9085657\n");
    await expect(loadTokenizer(pointer)).rejects.toThrow(/tokenizer\.json is a Git LFS pointer, not the file \(fetch it with `git lfs pull`\)/);
  });

  // Expected ids and texts: Hugging Face's tokenizers (the Rust library, 0.23) on the same tokenizer.json.
  it("WordPiece (BERT) encodes as Hugging Face's tokenizers: accents stripped by lowercasing, Chinese characters split, [UNK], pairs", async () => {
    const tokenizer = await loadTokenizer(await writtenTokenizer(wordPieceTokenizer()));
    expect(tokenizer.encode("Héllo, WORLD!").ids).toEqual([2, 5, 15, 6, 14, 3]);
    expect(tokenizer.encode("Café naïve unaffable").ids).toEqual([2, 7, 8, 9, 10, 11, 3]);
    expect(tokenizer.encode("中文字").ids).toEqual([2, 12, 13, 1, 3]);
    const pair = tokenizer.encode("hello", { text_pair: "world", return_token_type_ids: true });
    expect([pair.ids, pair.token_type_ids]).toEqual([
      [2, 5, 3, 6, 3],
      [0, 0, 0, 1, 1],
    ]);
    expect(tokenizer.decode([2, 12, 13, 1, 3])).toBe("[CLS] 中 文 [UNK] [SEP]");
    expect(tokenizer.decode([2, 5, 15, 6, 14, 3], { skip_special_tokens: true })).toBe("hello, world!");
  });

  it("an added token marked single_word matches only between non-word characters, as Hugging Face's (it was cut out of words)", async () => {
    const tokenizer = wordPieceTokenizer() as { added_tokens: unknown[] };
    tokenizer.added_tokens.push({ id: 17, content: "foo", single_word: true, lstrip: false, rstrip: false, normalized: false, special: false });
    const loaded = await loadTokenizer(await writtenTokenizer(tokenizer));
    expect(loaded.encode("hello foo").tokens).toEqual(["[CLS]", "hello", "foo", "[SEP]"]);
    expect(loaded.encode("hello,foo!").tokens).toEqual(["[CLS]", "hello", ",", "foo", "!", "[SEP]"]);
    expect(loaded.encode("foo").ids).toEqual([2, 17, 3]);
    // Inside a word (before, after, a letter outside the BMP before it), "hellofoo" is one word: "hello" then "##foo", unknown.
    expect(loaded.encode("hellofoo").tokens).toEqual(["[CLS]", "[UNK]", "[SEP]"]);
    expect(loaded.encode("foohello").tokens).toEqual(["[CLS]", "[UNK]", "[SEP]"]);
    // Left inside a word, its text reaches WordPiece, whose vocabulary lacks it (Hugging Face's added vocabulary is apart).
    expect(loaded.encode("foo_ foo").ids).toEqual([2, 1, 1, 17, 3]);
    expect(loaded.token_to_id("foo")).toBe(17);
    expect(loaded.decode([17])).toBe("foo");
    // Without the flag the same token splits the word, as Hugging Face's does too.
    tokenizer.added_tokens[tokenizer.added_tokens.length - 1] = { id: 17, content: "foo", single_word: false, lstrip: false, rstrip: false, normalized: false, special: false };
    expect((await loadTokenizer(await writtenTokenizer(tokenizer))).encode("hellofoo").tokens).toEqual(["[CLS]", "hello", "foo", "[SEP]"]);
  });

  it("a token with no id (the unknown token missing from the vocabulary) is a ConfigError naming it, where its id was null (0 in an Int32Array)", async () => {
    const tokenizer = wordPieceTokenizer() as { added_tokens: { content: string }[]; model: { vocab: Record<string, number> } };
    delete tokenizer.model.vocab["[UNK]"];
    tokenizer.added_tokens = tokenizer.added_tokens.filter((token) => token.content !== "[UNK]");
    const loaded = await loadTokenizer(await writtenTokenizer(tokenizer));
    expect(loaded.encode("hello world").ids).toEqual([2, 5, 6, 3]);
    const error = (() => {
      try {
        loaded.encode("hello zzz");
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe(
      'Tokenizer.encode: the text has a piece the vocabulary lacks (token 2), and the unknown token "[UNK]" is not in the vocabulary either: the tokenizer.json cannot encode this text',
    );
    expect(() => loaded.encode("zzz", { text_pair: "hello" })).toThrow(ConfigError);
  });

  it("a WordPiece model missing a field Hugging Face's tokenizers require is a ConfigError naming it (a missing prefix read as the text 'undefined')", async () => {
    for (const field of ["continuing_subword_prefix", "unk_token", "max_input_chars_per_word"]) {
      const tokenizer = wordPieceTokenizer() as { model: Record<string, unknown> };
      delete tokenizer.model[field];
      const dir = await writtenTokenizer(tokenizer);
      await expect(loadTokenizer(dir)).rejects.toThrow(ConfigError);
      await expect(loadTokenizer(dir)).rejects.toThrow(new RegExp(`WordPiece model has no ${field}, which Hugging Face's tokenizers require`));
    }
  });

  it("WordPiece spaces out Chinese characters outside the Basic Multilingual Plane (CJK Extension B on), as Hugging Face's BertNormalizer", async () => {
    const bert = wordPieceTokenizer() as { normalizer: Record<string, unknown> };
    const alone = await loadTokenizer(await writtenTokenizer(bert));
    const ideograph = "\u{20000}";
    // Each one a word of its own, as 中 is: the library's pass walked UTF-16 units and took "hello\u{20000}world" as one word ([UNK]).
    expect(alone.encode(`hello${ideograph}world`).ids).toEqual([2, 5, 16, 6, 3]);
    expect(alone.encode(`中${ideograph}文`).ids).toEqual([2, 12, 16, 13, 3]);
    // 101 of them are 101 words, not one word past max_input_chars_per_word.
    expect(alone.encode(ideograph.repeat(101)).ids).toEqual([2, ...new Array(101).fill(16), 3]);
    expect(alone.decode(alone.encode(`hello${ideograph}world`).ids, { skip_special_tokens: true })).toBe(`hello ${ideograph} world`);
    // Inside a Sequence too; and without handle_chinese_chars, nothing is spaced out.
    const sequence = await loadTokenizer(await writtenTokenizer({ ...bert, normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }, bert.normalizer] } }));
    expect(sequence.encode(`hello${ideograph}world`).ids).toEqual([2, 5, 16, 6, 3]);
    const off = await loadTokenizer(await writtenTokenizer({ ...bert, normalizer: { ...bert.normalizer, handle_chinese_chars: false } }));
    expect(off.encode(`hello${ideograph}world`).ids).toEqual([2, 1, 3]);
  });

  it("BERT's lowercasing maps each character alone, as Hugging Face's: a capital sigma ending a word is σ, not JavaScript's ς", async () => {
    const bert = wordPieceTokenizer() as { normalizer: Record<string, unknown>; model: { vocab: Record<string, number> } };
    const word = Object.keys(bert.model.vocab).length;
    bert.model.vocab["\u03bf\u03b4\u03bf\u03c3"] = word; // οδοσ: what Hugging Face's BertNormalizer makes of ΟΔΟΣ
    const tokenizer = await loadTokenizer(await writtenTokenizer(bert));
    expect(tokenizer.encode("\u039f\u0394\u039f\u03a3 \u039f\u03b4\u03bf\u03a3!").ids).toEqual([2, word, word, 14, 3]);
    // A word's own ς (typed lowercase) stays ς: [UNK] here, as Hugging Face's.
    expect(tokenizer.encode("\u03bf\u03b4\u03bf\u03c2").ids).toEqual([2, 1, 3]);
    // So does the Lowercase normalizer, alone or in a Sequence.
    for (const normalizer of [{ type: "Lowercase" }, { type: "Sequence", normalizers: [{ type: "NFC" }, { type: "Lowercase" }] }]) {
      const lowercase = await loadTokenizer(await writtenTokenizer({ ...bert, normalizer }));
      expect(lowercase.encode("\u039f\u0394\u039f\u03a3").ids).toEqual([2, word, 3]);
    }
  });

  it("BERT cleans, strips and splits on Hugging Face's character tables (older than the engine's Unicode), not on JavaScript's \\p classes", async () => {
    const bert = wordPieceTokenizer() as { normalizer: Record<string, unknown>; model: { vocab: Record<string, number> } };
    const { vocab } = bert.model;
    for (const token of ["ab", "a\u0890b", "x"]) vocab[token] = Object.keys(vocab).length;
    const tokenizer = await loadTokenizer(await writtenTokenizer(bert));
    const ids = (text: string) => tokenizer.encode(text).ids.slice(1, -1);
    // U+0890 became a format control after Hugging Face's tables: it keeps it (the library dropped it: "ab").
    expect(ids("a\u0890b")).toEqual([vocab["a\u0890b"]]);
    // Controls and U+FFFD go, whitespace (tab, U+2028) is a space, unassigned U+0378 stays (no word of the vocabulary).
    expect(ids("\u200dab\ufffd\u0000\tx\u2028ab\u{e0001}")).toEqual([vocab.ab, vocab.x, vocab.ab]);
    expect(ids("ab\u0378")).toEqual([1]);
    // U+1734 was a nonspacing mark there, stripped with the accents (the library kept it: [UNK]).
    expect(ids("x\u1734")).toEqual([vocab.x]);
    // U+166D was punctuation there, a word of its own; U+2E43 was none, it stays inside the word (the library did the opposite).
    expect(ids("ab\u166dab")).toEqual([vocab.ab, 1, vocab.ab]);
    expect(ids("ab\u2e43ab")).toEqual([1]);
    // Without clean_text the pre-tokenizer splits at Rust's whitespace: U+0085 is a space, U+FEFF part of a word.
    const raw = await loadTokenizer(await writtenTokenizer({ ...bert, normalizer: { ...bert.normalizer, clean_text: false } }));
    expect(raw.encode("ab\u0085ab").ids.slice(1, -1)).toEqual([vocab.ab, vocab.ab]);
    expect(raw.encode("\ufeffab").ids.slice(1, -1)).toEqual([1]);
  });

  it("byte-level BPE splits words on Hugging Face's whitespace (Oniguruma's \\s: U+0085 is a space, U+FEFF is not), as GPT-2's regex does there", async () => {
    const gpt2: { model: { vocab: Record<string, number>; merges: string[][] } } = JSON.parse(await readFile(fixtures("tokenizer/tokenizer.json"), "utf8"));
    const { vocab, merges } = gpt2.model;
    // Merges that join a space to what follows it, had the regex put them in one word: U+0085 is "Âħ", U+FEFF "ï»¿".
    const next = Object.keys(vocab).length;
    Object.assign(vocab, { "\u00c2\u0127": next, "\u0120\u00c2\u0127": next + 1, "\u0120\u00ef": next + 2 });
    merges.push(["\u00c2", "\u0127"], ["\u0120", "\u00c2\u0127"], ["\u0120", "\u00ef"]);
    const tokenizer = await loadTokenizer(await writtenTokenizer(gpt2));
    const space = vocab["\u0120"];
    const ids = (text: string) => tokenizer.encode(text).ids;
    // " \u0085" is two runs of whitespace before a letter: " " then "\u0085" (the library took U+0085 for punctuation: " \u0085" as one word).
    expect(ids("wait \u0085what")).toEqual([...ids("wait"), space, next, ...ids("what")]);
    // " \ufeff!" is one word, a space before what is neither space, letter nor digit (the library split it at U+FEFF, its whitespace).
    expect(ids("a \ufeff!")).toEqual([...ids("a"), next + 2, vocab["\u00bb"], vocab["\u00bf"], vocab["!"]]);
    expect(tokenizer.decode(ids("a \ufeff! \u0085 x\u0085\u0085"))).toBe("a \ufeff! \u0085 x\u0085\u0085");
  });

  it("decode skips an id past the vocabulary of a tokenizer with an unknown token (BERT's [UNK]), as transformers does", async () => {
    const tokenizer = await loadTokenizer(await writtenTokenizer(wordPieceTokenizer()));
    const size = tokenizer.get_vocab(true).size;
    // The library decoded each as "[UNK]": "hello [UNK] world".
    expect(tokenizer.decode([5, size, 6])).toBe("hello world");
    expect(tokenizer.decode([2, 5, 3, size + 10])).toBe("[CLS] hello [SEP]");
    expect(tokenizer.decode([size])).toBe("");
  });

  it("RobertaProcessing gives a pair's tokens type 0 throughout, as transformers' RoBERTa tokenizers (RoBERTa has one token type)", async () => {
    const tokenizer: Record<string, unknown> & { model: { vocab: Record<string, number> }; added_tokens: unknown[] } = JSON.parse(
      await readFile(fixtures("tokenizer/tokenizer.json"), "utf8"),
    );
    const { vocab } = tokenizer.model;
    for (const content of ["<s>", "</s>"]) {
      vocab[content] = Object.keys(vocab).length;
      tokenizer.added_tokens.push({ id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    }
    tokenizer.post_processor = { type: "RobertaProcessing", sep: ["</s>", vocab["</s>"]], cls: ["<s>", vocab["<s>"]], trim_offsets: true, add_prefix_space: false };
    const roberta = await loadTokenizer(await writtenTokenizer(tokenizer));
    const pair = roberta.encode("Call me", { text_pair: "Ishmael.", return_token_type_ids: true });
    // <s> A </s></s> B </s>; the library gave the second text and its separators type 1.
    expect(pair.ids.filter((id) => id === vocab["</s>"])).toHaveLength(3);
    expect(pair.ids[0]).toBe(vocab["<s>"]);
    expect(pair.token_type_ids).toEqual(new Array(pair.ids.length).fill(0));
    // BERT's pairs keep their types.
    const bert = await loadTokenizer(await writtenTokenizer(wordPieceTokenizer()));
    expect(bert.encode("hello", { text_pair: "world", return_token_type_ids: true }).token_type_ids).toEqual([0, 0, 0, 1, 1]);
  });

  it("a pair with GPT-2's ByteLevel post-processor keeps its second text, and byte-level pairs have types 0 then 1, as Hugging Face's tokenizers", async () => {
    const gpt2 = JSON.parse(await readFile(fixtures("tokenizer/tokenizer.json"), "utf8"));
    // What GPT-2's tokenizer.json on the hub holds.
    gpt2.post_processor = { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true };
    const withByteLevel = await loadTokenizer(await writtenTokenizer(gpt2));
    const withNone = await loadTokenizer(fixtures("tokenizer"));
    const ids = [258, 287, 79, 264, 286, 320, 84, 258, 277, 65, 70, 69];
    const types = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
    for (const tokenizer of [withByteLevel, withNone]) {
      // The library dropped "the cafe" with ByteLevel, and gave no token types (undefined, typed number[]) with either.
      const pair = tokenizer.encode("hello world", { text_pair: "the cafe", return_token_type_ids: true });
      expect([pair.ids, pair.token_type_ids, pair.attention_mask]).toEqual([ids, types, ids.map(() => 1)]);
      expect(pair.tokens).toHaveLength(ids.length);
      expect(tokenizer.encode("hello world", { text_pair: "the cafe" }).token_type_ids).toBeUndefined();
      expect(tokenizer.encode("hello world", { return_token_type_ids: true }).token_type_ids).toEqual([0, 0, 0, 0, 0, 0]);
      // An empty pair is none, as transformers' fast tokenizers take it.
      expect(tokenizer.encode("hello world", { text_pair: "" }).ids).toEqual(ids.slice(0, 6));
    }
  });
});
