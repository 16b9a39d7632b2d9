// ptxas's notes on Hopper kernels that lose their overlap (codes C7500-C7599): wgmma serialized (C7518, C7520),
// fences it injected (C7519), setmaxnreg ignored (C7508). Each one is a kernel that still runs correctly but
// without the asynchrony it was written for, so a developer's build (and CI's) fails on them; a user's install
// only warns (build-native.mjs).

const NOTE = /\((C75\d\d)\)\s*([^\n]*)/g;
const FUNCTION = /in the function '([^']+)'/;

/**
 * The distinct notes in a compiler log: { code, text, kernel } (kernel: the mangled name ptxas gives, or null).
 * @param {string} log
 * @returns {{ code: string, text: string, kernel: string | null }[]}
 */
export function ptxasNotes(log) {
  const seen = new Set();
  const notes = [];
  for (const match of log.matchAll(NOTE)) {
    const text = match[2].trim();
    const key = `${match[1]} ${text}`;
    if (seen.has(key)) continue;
    seen.add(key);
    notes.push({ code: match[1], text, kernel: FUNCTION.exec(text)?.[1] ?? null });
  }
  return notes;
}
