import { z } from "zod";
import { PatchError } from "./errors";

const blockSize = z.number().refine((size) => Number.isSafeInteger(size) && size >= 1, {
  error: (issue) => `must be a positive integer, got ${describe(issue.input)}`,
});

export const PatternOptionsSchema = z.strictObject({
  density: z
    .number({ error: (issue) => `must be a number in (0, 1], got ${describe(issue.input)}` })
    .refine((density) => density > 0 && density <= 1, { error: (issue) => `must be in (0, 1], got ${describe(issue.input)}` }),
  blockShape: z
    .tuple([blockSize, blockSize], { error: (issue) => `must be [R, C] of positive integers, got ${describe(issue.input)}` })
    .optional(),
});

export const PatchOptionsSchema = z
  .strictObject({
    /** Report what would change without changing the model. */
    dryRun: z.boolean().optional(),
    /** Return an empty report instead of throwing when no layer matches. */
    allowNoMatch: z.boolean().optional(),
  })
  .optional();

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
}

function describe(value: unknown): string {
  if (typeof value === "number" || value === undefined) return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Parses `value` with `schema`, or throws a PatchError listing each problem with its path. */
export function parseOptions<T>(where: string, schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
    return `${path}${issue.message}`;
  });
  throw new PatchError(where, problems);
}
