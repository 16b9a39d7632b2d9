import type { DType, TensorValues } from "./dtypes";

const EDGE = 3;

function formatNumber(value: number, dtype: DType): string {
  if (dtype === "int32" || !Number.isFinite(value)) return String(value);
  return Number.isInteger(value) ? value.toFixed(1) : value.toPrecision(4);
}

/** `Tensor(float32, [2, 3], js) [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]`, eliding the middle of long data. */
export function formatTensor(shape: readonly number[], dtype: DType, values: TensorValues, backend: string): string {
  const n = values.length;
  const picked =
    n <= 2 * EDGE
      ? Array.from(values, (v) => formatNumber(v, dtype))
      : [
          ...Array.from(values.subarray(0, EDGE), (v) => formatNumber(v, dtype)),
          "...",
          ...Array.from(values.subarray(n - EDGE), (v) => formatNumber(v, dtype)),
        ];
  return `Tensor(${dtype}, [${shape.join(", ")}], ${backend}) [${picked.join(", ")}]`;
}
