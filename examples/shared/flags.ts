// Flag parsing shared by the examples' CLIs (mnist, transformer, distil): numbers as a user writes them, a flag
// given twice with different values refused, and an unknown flag's error naming the flag it is closest to.

import { plural } from "./text";

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

type FlagTypes = Record<string, { type: string; short?: string; multiple?: boolean }>;

/** A value that reads as a negative number ("-1", "-0.5", "-.5", "-1e3"): never a flag, as no flag's name starts with a digit. */
const NEGATIVE = /^-(?:\d|\.\d)/;

/**
 * `argv` with `--flag -1` written as `--flag=-1` for each flag that takes a value: parseArgs reads a value starting with
 * a dash as a flag and refused `--lr -0.5` as "ambiguous". Stops at `--`; a flag's ordinary value is skipped over, so a
 * later `-1` is joined only to the flag right before it.
 */
export function joinNegativeValues(argv: readonly string[], flags: FlagTypes): string[] {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      args.push(...argv.slice(i));
      break;
    }
    const name = arg.startsWith("--") && !arg.includes("=") ? arg.slice(2) : undefined;
    const next = argv[i + 1];
    if (name !== undefined && flags[name]?.type === "string" && next !== undefined && (NEGATIVE.test(next) || !next.startsWith("-"))) {
      // The flag's value, negative or not: not itself a flag to look at.
      if (NEGATIVE.test(next)) args.push(`${arg}=${next}`);
      else args.push(arg, next);
      i++;
      continue;
    }
    args.push(arg);
  }
  return args;
}

/**
 * Runs node's parseArgs (through `parse`) on `argv` with `--flag -1` read as `--flag=-1`, and turns its errors into
 * ones that name the flag: an unknown flag's names the flag it is closest to and --help; a flag without its value
 * says how to write one, also one starting with a dash (`--flag=-x`).
 */
export function withFlagHelp<T>(flags: FlagTypes, argv: readonly string[], parse: (args: string[]) => T): T {
  const args = joinNegativeValues(argv, flags);
  try {
    return parse(args);
  } catch (error) {
    const { code, message } = error as { code?: string; message?: string };
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      const flag = /Option '(?:-\w, )?(--[^' ]+)/.exec(message ?? "")?.[1];
      if (flag === undefined) throw error;
      if (flags[flag.slice(2)]?.type === "boolean") throw new TypeError(`${flag} takes no value; write ${flag} alone`);
      const at = args.indexOf(flag);
      const next = at >= 0 ? args[at + 1] : undefined;
      throw new TypeError(
        `${flag}: missing its value${next === undefined ? "" : ` ('${next}' after it is read as a flag)`}; ` +
          `write ${flag} VALUE, or ${flag}=VALUE for a value starting with a dash`,
      );
    }
    const unknown = code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" ? /'(-[^']*)'/.exec(message ?? "") : null;
    if (unknown === null) throw error;
    const typed = unknown[1].replace(/[-_]/g, "");
    const near = typed === "" ? undefined : Object.keys(flags).find((flag) => flag.replace(/-/g, "").startsWith(typed) || typed.startsWith(flag.replace(/-/g, "")));
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
 * --backend's value, refused when blank: an empty name failed only once the backend started, over two lines
 * ("--backend : Backend '' is not registered"). `names` says what it may be ("cuda, cpu or js").
 */
export function backendFlag(text: string | undefined, names: string): string | undefined {
  if (text?.trim() === "") throw new RangeError(`--backend: expected a backend's name (${names}), got '${text}'`);
  return text;
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

/** A layer a density patches, as the patcher's dry run reports it: its weight [out, in] in `totalBlocks` blocks of `blockShape`. */
export interface PatchedShape {
  name: string;
  shape: readonly [number, number];
  blockShape: readonly [number, number];
  totalBlocks: number;
}

/**
 * Refuses a density under which a patched layer keeps none of its blocks (round(density x blocks) is 0): nn keeps one
 * anyway, so a denser layer would train than the density the table names. `layersAt` gives the layers each density
 * patches. Once none is refused, a note on stderr says which density runs where whole blocks move it by more than 5%.
 * `remedy` ends the error ("a larger --hidden").
 */
export function checkDensitiesKeepABlock(densities: readonly number[], layersAt: (density: number) => readonly PatchedShape[], remedy: string, flag = "density"): void {
  const notes: string[] = [];
  for (const density of densities) {
    for (const { name, shape, blockShape, totalBlocks } of layersAt(density)) {
      const kept = Math.round(density * totalBlocks);
      const runs = Number((Math.max(1, kept) / totalBlocks).toPrecision(2));
      const where = `${name} (${shape.join("x")} in ${plural(totalBlocks, "block")} of ${blockShape.join("x")})`;
      if (kept < 1) {
        throw new RangeError(`--${flag}: ${density} keeps no block of ${where}; nn keeps one anyway, so ${name} would run at density ${runs}, not ${density}: give at least ${runs}, or ${remedy}`);
      }
      if (Math.abs(kept / totalBlocks - density) > 0.05 * density) notes.push(`note: --${flag} ${density} keeps ${plural(kept, "block")} of ${where}: ${name} runs at density ${runs}\n`);
    }
  }
  for (const note of notes) process.stderr.write(note);
}
