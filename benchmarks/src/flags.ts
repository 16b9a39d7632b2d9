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

/** A comma-separated flag's items, trimmed; an empty list or an empty item ("1,,2") is an error naming the flag. */
export function flagItems(value: string, flag: string): string[] {
  const items = value.split(",").map((item) => item.trim());
  if (items.some((item) => item === "")) throw new FlagError(`--${flag}: expected a comma-separated list with no empty item, got "${value}"`);
  return items;
}

/** A comma-separated flag of positive numbers ("1,8,64"), naming the flag and the item in the error. */
export function positiveNumbers(value: string, flag: string): number[] {
  return flagItems(value, flag).map((item) => {
    const n = Number(item);
    if (!Number.isFinite(n) || n <= 0) throw new FlagError(`--${flag}: "${item}" is not a positive number`);
    return n;
  });
}

/** A comma-separated flag of positive integers ("1,8,64"). */
export function positiveIntegers(value: string, flag: string): number[] {
  return flagItems(value, flag).map((item) => {
    const n = Number(item);
    if (!Number.isSafeInteger(n) || n <= 0) throw new FlagError(`--${flag}: "${item}" is not a positive integer`);
    return n;
  });
}

/** A comma-separated flag of densities, each in (0, 1]. */
export function densities(value: string, flag: string): number[] {
  return flagItems(value, flag).map((item) => {
    const n = Number(item);
    if (!(n > 0 && n <= 1)) throw new FlagError(`--${flag}: "${item}" is not a density in (0, 1]`);
    return n;
  });
}
