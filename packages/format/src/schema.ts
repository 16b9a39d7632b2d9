import * as z from "zod/mini";
import { BSR_DTYPES } from "./dtype.js";

/**
 * zod schemas for plain objects that arrive from outside (users, files). `zod/mini`: its
 * functions tree-shake, and its objects parse without the `new Function` fast path (and
 * without probing for it), so a browser bundle stays small and a strict CSP stays quiet.
 */

const positiveInteger = { error: "expected a positive integer" };
export const dimensionSchema = z.int(positiveInteger).check(z.positive(positiveInteger));

const nonNegativeInteger = { error: "expected a non-negative integer" };
export const countSchema = z.int(nonNegativeInteger).check(z.nonnegative(nonNegativeInteger));

export const shapeSchema = z.tuple([dimensionSchema, dimensionSchema], {
  error: "expected [rows, cols] of positive integers",
});

export const blocksShapeSchema = z.tuple([countSchema, dimensionSchema, dimensionSchema], {
  error: "expected [nnzBlocks, R, C]",
});

export const bsrDTypeSchema = z.enum(BSR_DTYPES as [string, ...string[]], {
  error: 'expected "float32", "float16" or "bfloat16"',
});

function isNumericView(value: unknown): boolean {
  return ArrayBuffer.isView(value) && !(value instanceof DataView);
}

export const indexArraySchema = z.custom<Int32Array | BigInt64Array | ArrayLike<number>>(
  (value) => Array.isArray(value) || isNumericView(value),
  { error: "expected an Int32Array, a BigInt64Array or an array of integers" },
);

export const valuesArraySchema = z.custom<Float32Array | Uint16Array | ArrayLike<number>>(
  (value) => Array.isArray(value) || (isNumericView(value) && !(value instanceof BigInt64Array || value instanceof BigUint64Array)),
  { error: "expected a Float32Array, a Uint16Array of 16-bit patterns or an array of numbers" },
);

export const torchBsrInputSchema = z.object({
  crowIndices: indexArraySchema,
  colIndices: indexArraySchema,
  values: valuesArraySchema,
  valuesShape: blocksShapeSchema,
  size: shapeSchema,
  dtype: z.optional(bsrDTypeSchema),
});

export const scipyBsrInputSchema = z.object({
  indptr: indexArraySchema,
  indices: indexArraySchema,
  data: valuesArraySchema,
  dataShape: blocksShapeSchema,
  shape: shapeSchema,
  dtype: z.optional(bsrDTypeSchema),
});
