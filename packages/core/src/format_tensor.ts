import type { DType, TensorValues } from "./dtypes";

const EDGE = 3;

function formatNumber(value: number, dtype: DType): string {
  if (dtype === "int32") return String(value);
  // toFixed drops -0's sign (the one integer below 1e8 whose reciprocal is below -1) and writes every digit of a large
  // float (1e20 as 100000002004087734272.0): torch prints -0. and uses exponents past 1e8. NaN and infinities fall to toPrecision.
  return Number.isInteger(value) && Math.abs(value) < 1e8 ? (1 / value < -1 ? "-0.0" : value.toFixed(1)) : value.toPrecision(4);
}

/** How many values toString shows at each end of a tensor longer than twice that. */
export const EDGE_VALUES = EDGE;

/**
 * `Tensor(float32, [2, 3], js) [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]`: `head` is every value of a tensor of at most 2 * EDGE
 * values; of a longer one, its first EDGE values, with its last EDGE in `tail` and "..." between them.
 */
export function formatTensor(shape: readonly number[], dtype: DType, head: TensorValues, backend: string, tail?: TensorValues): string {
  const picked = Array.from(head, (v) => formatNumber(v, dtype));
  if (tail !== undefined) picked.push("...", ...Array.from(tail, (v) => formatNumber(v, dtype)));
  return `Tensor(${dtype}, [${shape.join(", ")}], ${backend}) [${picked.join(", ")}]`;
}
