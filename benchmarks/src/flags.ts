import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, statSync, writeSync } from "node:fs";
import { totalmem } from "node:os";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";

/** A bad command-line value: the CLIs print its message alone, not a stack trace. */
export class FlagError extends Error {
  override name = "FlagError";
}

/** What a CLI prints for the error that ended it: a flag's message alone (ours or node's parseArgs'), anything else with its stack. */
export function describeFailure(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof FlagError || (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))) return (error as Error).message;
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

/** A comma-separated flag's items, trimmed; an empty list, an empty item ("1,,2") or one given twice ("32,32") is an error naming the flag. */
export function flagItems(value: string, flag: string): string[] {
  const items = value.split(",").map((item) => item.trim());
  if (items.some((item) => item === "")) throw new FlagError(`--${flag}: expected a comma-separated list with no empty item, got "${value}"`);
  return once(items, items, flag);
}

/** `values` (parsed from `items`) with none repeated: a case listed twice would be measured twice and drawn as two points. */
function once<T>(values: T[], items: string[], flag: string): T[] {
  const seen = new Map<T, string>();
  values.forEach((value, i) => {
    const earlier = seen.get(value);
    if (earlier !== undefined) throw new FlagError(`--${flag}: "${items[i]}" repeats "${earlier}" in "${items.join(",")}"; give each value once`);
    seen.set(value, items[i]);
  });
  return values;
}

/** A number as a user writes one ("64", "0.25", ".5", "1e3"): not Number()'s hex, binary, octal or "Infinity". */
const DECIMAL = /^(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

/** An item's value when written in decimal, else NaN (which every caller rejects with the flag's own message). */
export function decimal(item: string): number {
  return DECIMAL.test(item) ? Number(item) : Number.NaN;
}

/** A comma-separated flag of positive numbers ("1,8,64"), naming the flag and the item in the error. */
export function positiveNumbers(value: string, flag: string): number[] {
  const items = flagItems(value, flag);
  const numbers = items.map((item) => {
    const n = decimal(item);
    if (!Number.isFinite(n) || n <= 0) throw new FlagError(`--${flag}: "${item}" is not a positive number`);
    return n;
  });
  return once(numbers, items, flag);
}

/** A comma-separated flag of positive integers ("1,8,64"). */
export function positiveIntegers(value: string, flag: string): number[] {
  const items = flagItems(value, flag);
  const numbers = items.map((item) => {
    const n = decimal(item);
    if (!Number.isSafeInteger(n) || n <= 0) throw new FlagError(`--${flag}: "${item}" is not a positive integer`);
    return n;
  });
  return once(numbers, items, flag);
}

/**
 * Refuses, naming the flags, a run whose values held on the host (`elements` of `bytes` each: a lower bound of what
 * it allocates, the inputs and weights the bench draws there whatever the backend) pass this machine's memory or
 * 2^53: they failed inside randn with an out-of-memory stack trace that named no flag, after the backend started.
 */
export function checkHostMemory(subject: string, what: string, elements: number, bytes: number, advice: string): void {
  if (Number.isSafeInteger(elements) && bytes * elements <= totalmem()) return;
  const need = Number.isSafeInteger(elements) ? `${((bytes * elements) / 2 ** 30).toFixed(1)} GiB` : "more than 2^53 values";
  throw new FlagError(`${subject} needs ${need} for ${what}, and this machine has ${(totalmem() / 2 ** 30).toFixed(1)} GiB; ${advice}`);
}

/** A flag of one positive integer ("512"): a list ("512,1024") is an error naming the flag, not its first item taken. */
export function positiveInteger(value: string, flag: string): number {
  const items = positiveIntegers(value, flag);
  if (items.length !== 1) throw new FlagError(`--${flag}: expected one positive integer, got the list "${value}"`);
  return items[0];
}

/** A comma-separated flag of densities, each in (0, 1]. */
export function densities(value: string, flag: string): number[] {
  const items = flagItems(value, flag);
  const numbers = items.map((item) => {
    const n = decimal(item);
    if (!(n > 0 && n <= 1)) throw new FlagError(`--${flag}: "${item}" is not a density in (0, 1]`);
    return n;
  });
  return once(numbers, items, flag);
}

/**
 * Refuses a density that keeps no block of a weight: patterns keep round(density x blocks) of them, and nn's layers
 * then keep one anyway, so the run would time a denser layer than the table says (or, on a bare pattern, fail). Where
 * the rounding moves the density by more than 5%, a note on stderr says which density runs.
 * `rows` x `cols` blocks of `block`; `what` names the weight for the message.
 */
export function checkKeepsABlock(density: number, rows: number, cols: number, block: string, what: string, flag = "densities"): void {
  const total = rows * cols;
  const kept = Math.round(density * total);
  if (kept >= 1) {
    // Few blocks: the density that runs can be far from the one asked for (0.1 of 8 blocks keeps 1, 0.125).
    if (Math.abs(kept / total - density) > 0.05 * density) {
      process.stderr.write(`note: --${flag} ${density} keeps ${kept} of the ${rows}x${cols} blocks of ${block} in ${what}: density ${(kept / total).toPrecision(3)} runs\n`);
    }
    return;
  }
  throw new FlagError(
    `--${flag}: ${density} keeps none of the ${rows}x${cols} blocks of ${block} in ${what}; one block is density ${(1 / total).toPrecision(2)}: give at least that, or smaller blocks`,
  );
}

/**
 * Refuses a --torch-like flag where python3 cannot import what its script needs: checked before the run, not found
 * when the script is spawned after every case of ours was timed. `python` is the interpreter (for tests).
 */
export function checkPythonImports(flag: string, modules: string[], python = "python3"): void {
  const result = spawnSync(python, ["-c", `import ${modules.join(", ")}`], { encoding: "utf8", timeout: 120_000 });
  if (result.error !== undefined) throw new FlagError(`--${flag}: cannot run ${python} (${result.error.message}); it runs the PyTorch side of --${flag}`);
  if (result.status !== 0) {
    const why = result.stderr.trim().split("\n").pop() || `exit ${result.status ?? result.signal}`;
    throw new FlagError(`--${flag}: ${python} cannot import ${modules.join(" and ")} (${why}); install ${modules.join(" and ")} for ${python}, or leave out --${flag}`);
  }
}

/**
 * The output directory a flag names, made (with its parents) and resolved; a path that is a file, lies under one or
 * cannot be written is an error naming the flag, raised before the run rather than when its first result is saved.
 */
export function outputDirectory(path: string, flag = "out"): string {
  const dir = resolve(path);
  try {
    makeDirectory(dir);
    accessSync(dir, constants.W_OK);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const why = code === "EEXIST" || code === "ENOTDIR" ? "it or a folder above it is a file" : (error as Error).message;
    throw new FlagError(`--${flag}: cannot make the output directory "${path}": ${why}`);
  }
  return dir;
}

/**
 * mkdirSync(dir, { recursive: true }) one level at a time: node's recursive mode retries forever where mkdir answers
 * ENOENT below a folder that exists (anywhere under /proc on Linux), so `--out /proc/x` hung instead of failing.
 */
function makeDirectory(dir: string): void {
  const missing: string[] = [];
  for (let at = dir; !existsSync(at); at = dirname(at)) {
    missing.push(at);
    if (dirname(at) === at) break;
  }
  for (const path of missing.reverse()) {
    try {
      mkdirSync(path);
    } catch (error) {
      // Made meanwhile by another process: fine when it is a folder.
      if ((error as { code?: unknown }).code !== "EEXIST" || !statSync(path).isDirectory()) throw error;
    }
  }
  if (!statSync(dir).isDirectory()) throw Object.assign(new Error(`${dir} is a file`), { code: "ENOTDIR" });
}

/** One flag a CLI accepts: node's parseArgs option, plus the line --help prints for it. */
export type FlagSpec = (
  | { type: "string"; default?: string; multiple?: false }
  | { type: "string"; default?: string[]; multiple: true }
  | { type: "boolean"; default?: boolean }
) & {
  /** One line: what the flag does (and the values it takes). */
  description: string;
  /** The default as --help words it, where `default` alone would mislead (computed, or depends on other flags). */
  defaultText?: string;
};

/** A CLI's flags and usage line: parseFlags parses with the table and prints --help from it, so the two cannot drift. */
export interface CliSpec<Flags extends Record<string, FlagSpec> = Record<string, FlagSpec>> {
  /** How it is run, e.g. "tsx src/ffn.ts [flags]". */
  usage: string;
  /** What it does, in a line. */
  summary: string;
  /** Its positional arguments and what they are, when it takes any. */
  positionals?: string;
  flags: Flags;
}

const HELP_FLAG = { type: "boolean", short: "h", description: "print this help and exit" } as const;

/** The flags most CLIs share, one wording for all: the backend (default cuda) and the dtype (default bfloat16). */
export const BACKEND_FLAG = { type: "string", default: "cuda", description: "backend to run on: cuda, cpu, js or auto" } as const;
export const DTYPE_FLAG = { type: "string", default: "bfloat16", description: "float32, float16 or bfloat16" } as const;

/** The default a usage line shows: `defaultText`, else a value given, else nothing (a switch is off unless given). */
function defaultOf(spec: FlagSpec): string | undefined {
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (spec.default === undefined || spec.default === false) return undefined;
  if (spec.default === true) return "on";
  return Array.isArray(spec.default) ? spec.default.join(" ") : spec.default;
}

/** The --help text: usage, summary, positionals, then one line per flag with its default. */
export function usageText(cli: CliSpec): string {
  const rows = Object.entries(cli.flags).map(([name, spec]) => {
    const fallback = defaultOf(spec);
    const flag = `--${name}${spec.type === "string" ? " VALUE" : ""}${spec.type === "string" && spec.multiple ? " (repeatable)" : ""}`;
    return [flag, `${spec.description}${fallback === undefined ? "" : ` (default: ${fallback})`}`];
  });
  rows.push(["-h, --help", HELP_FLAG.description]);
  const width = Math.max(...rows.map(([flag]) => flag.length));
  const lines = [`usage: ${cli.usage}`, cli.summary];
  if (cli.positionals !== undefined) lines.push(cli.positionals);
  lines.push("", "flags (a switch is off unless given):", ...rows.map(([flag, text]) => `  ${flag.padEnd(width)}  ${text}`));
  return `${lines.join("\n")}\n`;
}

type FlagValue<Spec extends FlagSpec> = Spec extends { type: "boolean" } ? boolean : Spec extends { multiple: true } ? string[] : string;

/** What parseFlags returns for a table: a flag with a default is always set, one without may be undefined. */
export type FlagValues<Flags extends Record<string, FlagSpec>> = {
  [Name in keyof Flags]: Flags[Name] extends { default: unknown } ? FlagValue<Flags[Name]> : FlagValue<Flags[Name]> | undefined;
};

/**
 * Parses `args` with the CLI's flag table (unknown flags are errors, as parseArgs' strict mode makes them; so is a
 * flag of one value given twice with different values, which parseArgs would settle silently by keeping the last).
 * With --help or -h it prints usageText and exits 0 before the CLI does anything else. A leading "--" is skipped.
 */
export function parseFlags<const Flags extends Record<string, FlagSpec>>(
  cli: CliSpec<Flags>,
  args: string[] = process.argv.slice(2),
): { values: FlagValues<Flags>; positionals: string[] } {
  // `pnpm bench -- --flag` hands the script a literal "--" first; parseArgs would read every flag after it as a positional.
  if (args[0] === "--") args = args.slice(1);
  const parsed = parseArgs({ args, options: { ...cli.flags, help: HELP_FLAG }, allowPositionals: cli.positionals !== undefined, strict: true, tokens: true });
  const given = new Map<string, string>();
  for (const token of parsed.tokens) {
    if (token.kind !== "option" || token.value === undefined) continue;
    const spec: FlagSpec | undefined = cli.flags[token.name];
    if (spec?.type !== "string" || spec.multiple) continue;
    const earlier = given.get(token.name);
    if (earlier !== undefined && earlier !== token.value) throw new FlagError(`--${token.name}: given twice ("${earlier}" and "${token.value}"); give it once`);
    given.set(token.name, token.value);
  }
  if ((parsed.values as { help?: boolean }).help) {
    // Written synchronously: process.exit would cut an asynchronous write to a pipe short.
    writeSync(process.stdout.fd, usageText(cli));
    process.exit(0);
  }
  return { values: parsed.values as unknown as FlagValues<Flags>, positionals: parsed.positionals };
}
