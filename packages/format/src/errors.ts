import type * as z from "zod/mini";

/**
 * A malformed block-sparse matrix, file or argument. `field` names what was wrong
 * (`blockRowPtr`, `blockColIdx`, `values`, `shape`, `header`, a tensor name...);
 * `position`, when present, is the offending index inside that field.
 */
export class BsrFormatError extends Error {
  override readonly name = "BsrFormatError";
  readonly field: string;
  readonly position?: number;
  /** The message without the field prefix. */
  readonly detail: string;

  constructor(field: string, message: string, position?: number) {
    super(position === undefined ? `${field}: ${message}` : `${field}[${position}]: ${message}`);
    this.field = field;
    this.detail = message;
    if (position !== undefined) this.position = position;
  }
}

/** Parses `input` with a zod schema, turning the first issue into a BsrFormatError. */
export function parseWith<T>(schema: z.ZodMiniType<T>, input: unknown, field: string): T {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.filter((key) => typeof key !== "symbol") as (string | number)[];
  const last = path.at(-1);
  const position = typeof last === "number" ? last : undefined;
  const names = [field, ...path.filter((key) => typeof key === "string")];
  return raise(names.join("."), issue.message, position);
}

/**
 * Refuses keys of an options object that the function does not take: a misspelt option (`densty`,
 * `maxShardsize`) was ignored without a word, and the call did something else. Keys among
 * `known` set to undefined are fine; null or undefined options are none; anything else that is not
 * an object is refused.
 */
export function checkOptionKeys(options: unknown, known: readonly string[], field = "options"): void {
  if (options === null || options === undefined) return;
  if (typeof options !== "object") throw new BsrFormatError(field, `expected { ${known.join("?, ")}? }, got ${String(options)}`);
  const unknown = Object.keys(options).filter((key) => !known.includes(key));
  if (unknown.length > 0) throw new BsrFormatError(field, `unknown option '${unknown.join("', '")}'; the options are ${known.join(", ")}`);
}

/** A value for a message, never serialised whole: JSON.stringify of a file's array nested 100 000 deep overflows. */
export const quoted = (value: unknown): string =>
  typeof value === "string" ? JSON.stringify(value.slice(0, 80)) : Array.isArray(value) ? `an array of length ${value.length}` : value && typeof value === "object" ? "an object" : String(value);

/** A byte count for messages: "3.00 GiB". */
export const gibibytes = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

function raise(field: string, message: string, position?: number): never {
  throw new BsrFormatError(field, message, position);
}

/**
 * A file could not be read or written. `path` is the file the caller named (never a
 * temporary file); `code` is the system error code when there is one (ENOENT, ENOSPC...).
 */
export class BsrIoError extends Error {
  override readonly name = "BsrIoError";
  readonly path: string;
  readonly operation: "read" | "write";
  readonly code?: string;

  constructor(operation: "read" | "write", path: string, message: string, options: { code?: string; cause?: unknown } = {}) {
    super(`${operation} ${path}: ${message}`, { cause: options.cause });
    this.operation = operation;
    this.path = path;
    if (options.code !== undefined) this.code = options.code;
  }
}
