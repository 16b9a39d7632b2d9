// Text helpers shared by the examples' printed output.

/** `count` and its noun, singular for one: "1 epoch", "3 epochs", "0 epochs" (`plural` for a noun not made with an s). */
export function plural(count: number, noun: string, pluralNoun = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : pluralNoun}`;
}
