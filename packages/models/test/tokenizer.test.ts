import { readFile } from "node:fs/promises";
import { loadTokenizer } from "@blocksparse/models/node";
import { describe, expect, it } from "vitest";
import { fixtures } from "./helpers";

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
});
