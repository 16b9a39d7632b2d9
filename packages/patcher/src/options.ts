import * as z from "zod/mini";
import { PatchError } from "./errors";

const blockSize = z.number().check(
  z.refine((size) => Number.isSafeInteger(size) && size >= 1, {
    error: (issue) => `must be a positive integer, got ${describe(issue.input)}`,
  }),
);

export const PatternOptionsSchema = z.strictObject({
  density: z
    .number({ error: (issue) => `must be a number in (0, 1], got ${describe(issue.input)}` })
    .check(z.refine((density) => density > 0 && density <= 1, { error: (issue) => `must be in (0, 1], got ${describe(issue.input)}` })),
  blockShape: z.optional(
    z.tuple([blockSize, blockSize], { error: (issue) => `must be [R, C] of positive integers, got ${describe(issue.input)}` }),
  ),
});

export const PatchOptionsSchema = z.optional(
  z.strictObject({
    /** Report what would change without changing the model. */
    dryRun: z.optional(z.boolean()),
    /** Return an empty report instead of throwing when no layer matches. */
    allowNoMatch: z.optional(z.boolean()),
    /** Dispose the parameters of the Linear layers replaced. */
    disposeReplaced: z.optional(z.boolean()),
  }),
);

export interface PatternOptions {
  /** Fraction of blocks kept, in (0, 1]. */
  density: number;
  /** [R, C], default [32, 32]: R must divide outFeatures, C inFeatures. */
  blockShape?: readonly [number, number];
}

export interface PatchOptions {
  /** Report what would change without changing the model (default false). */
  dryRun?: boolean;
  /** Return an empty report instead of throwing when no layer matches (default false). */
  allowNoMatch?: boolean;
  /**
   * Dispose the parameters of the Linear layers that were replaced (default false: they are left to their owner).
   * Their dense weights are no longer the model's, and device memory is not garbage-collected: without this, or a
   * dispose of your own, patching a model on a GPU keeps every patched layer's dense weight alive. The new layers'
   * biases share the old ones' buffers, which stay alive through them. Nothing is disposed in a dry run.
   */
  disposeReplaced?: boolean;
}

function describe(value: unknown): string {
  if (typeof value === "number" || value === undefined) return String(value);
  // JSON.stringify throws on a BigInt, and String(1n) reads as the number 1, a valid density.
  if (typeof value === "bigint") return `${value}n (a BigInt)`;
  try {
    // A BigInt inside ([8n, 8n]) is written 8n too: String() of the array would read "8,8", a valid block shape.
    const json = JSON.stringify(value, (_key, item) => (typeof item === "bigint" ? `${BIGINT_MARK}${item}` : item));
    if (json !== undefined) return json.replace(BIGINT_JSON, "$1n");
  } catch {
    // A cycle: String() below.
  }
  try {
    return String(value);
  } catch {
    // An object without a prototype (Object.create(null)) has no toString.
    return Object.prototype.toString.call(value);
  }
}

/** Marks a BigInt in describe's JSON ("\u0000bigint:8" once escaped), so that it can be written as 8n. */
const BIGINT_MARK = "\u0000bigint:";
const BIGINT_JSON = /"\\u0000bigint:(-?\d+)"/g;

/** The option names a schema takes (an object's keys, through an optional), for the message on an unknown one. */
function optionNames(schema: z.ZodMiniType): string[] {
  const def = schema._zod.def as { innerType?: z.ZodMiniType; shape?: Record<string, unknown> };
  if (def.shape !== undefined) return Object.keys(def.shape);
  return def.innerType === undefined ? [] : optionNames(def.innerType);
}

/**
 * zod/mini carries no locale: the messages for the issues these schemas leave to zod. An unknown key names the options
 * there are (as nn's and format's option checks do), and the one it differs from only in case or separators.
 */
function defaultMessage(names: string[]): (issue: z.core.$ZodRawIssue) => string | undefined {
  const plain = (name: string) => name.toLowerCase().replace(/[-_]/g, "");
  return (issue) => {
    if (issue.code === "unrecognized_keys") {
      const near = issue.keys.map((key) => names.find((name) => plain(name) === plain(key))).filter((name) => name !== undefined);
      return (
        `Unrecognized key${issue.keys.length > 1 ? "s" : ""}: ${issue.keys.map((key) => JSON.stringify(key)).join(", ")}` +
        `${near.length > 0 ? ` (did you mean ${near.join(", ")}?)` : ""}; the options are ${names.join(", ")}`
      );
    }
    if (issue.code === "invalid_type") return `Invalid input: expected ${issue.expected}, received ${describe(issue.input)}`;
    return undefined;
  };
}

/** Parses `value` with `schema`, or throws a PatchError listing each problem with its path. */
export function parseOptions<T>(where: string, schema: z.ZodMiniType<T>, value: unknown): T {
  const result = schema.safeParse(value, { error: defaultMessage(optionNames(schema)) });
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
    return `${path}${issue.message}`;
  });
  throw new PatchError(where, problems);
}
