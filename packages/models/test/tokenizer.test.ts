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
});
