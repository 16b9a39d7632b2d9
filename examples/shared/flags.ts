// Flag parsing shared by the examples' CLIs (mnist, transformer, distil): numbers as a user writes them, a flag
// given twice with different values refused, and an unknown flag's error naming the flag it is closest to.

/** A number as a user writes one ("64", "-1", "0.25", "1e-3"), else NaN: not Number()'s hex, binary, octal, "Infinity" or "". */
export function decimal(text: string): number {
  return /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i.test(text.trim()) ? Number(text) : Number.NaN;
}

/** A flag of one value given twice with different values is an error: parseArgs would keep the last without a word. */
export function rejectRepeated(tokens: readonly { kind: string; name?: string; value?: string }[], flags: Record<string, { type: string; multiple?: boolean }>): void {
  const given = new Map<string, string>();
  for (const { kind, name, value } of tokens) {
    if (kind !== "option" || name === undefined || value === undefined || flags[name]?.multiple) continue;
    const earlier = given.get(name);
    if (earlier !== undefined && earlier !== value) throw new RangeError(`--${name}: given twice ('${earlier}' and '${value}'); give it once`);
    given.set(name, value);
  }
}

/** Runs node's parseArgs; an unknown flag's error also names the flag it is closest to, and --help. */
export function withFlagHelp<T>(flags: string[], parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    const unknown = (error as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" ? /'(-[^']*)'/.exec((error as Error).message) : null;
    if (unknown === null) throw error;
    const typed = unknown[1].replace(/[-_]/g, "");
    const near = flags.find((flag) => flag.replace(/-/g, "").startsWith(typed) || typed.startsWith(flag.replace(/-/g, "")));
    throw new TypeError(`Unknown option '${unknown[1]}'${near === undefined ? "" : ` (did you mean --${near}?)`}; --help lists the flags`);
  }
}

/**
 * The largest seed magnitude the examples take: they derive further seeds from it (mnist seed x 1000 + epoch, the
 * transformer's seed x 7919 + batch, distil's seed + 7919), which must stay safe integers; a larger one passed the
 * flag's check and failed after the header was printed, with "seed: expected a safe integer" naming another number.
 */
export const MAX_SEED = 2 ** 32 - 1;

/** --seed's value: an integer of magnitude at most MAX_SEED, else an error naming the flag. */
export function seedFlag(text: string | undefined, flag = "seed"): number | undefined {
  if (text === undefined) return undefined;
  const value = decimal(text);
  if (!Number.isSafeInteger(value) || Math.abs(value) > MAX_SEED) throw new RangeError(`--${flag}: expected an integer from -${MAX_SEED} to ${MAX_SEED}, got '${text}'`);
  return value;
}

/**
 * `values` (parsed from `items`) with none given twice: a density listed twice ("0.5,.5") trained the same model
 * twice and printed two identical rows.
 */
export function rejectRepeatedValues<T>(values: T[], items: readonly string[], flag: string): T[] {
  const seen = new Map<T, string>();
  values.forEach((value, i) => {
    const earlier = seen.get(value);
    if (earlier !== undefined) throw new RangeError(`--${flag}: '${items[i]}' repeats '${earlier}'; give each value once`);
    seen.set(value, items[i]);
  });
  return values;
}
