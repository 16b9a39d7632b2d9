/** A comma-separated flag of positive numbers ("1,8,64"), naming the flag and the item in the error. */
export function positiveNumbers(value: string, flag: string): number[] {
  return value.split(",").map((item) => {
    const n = Number(item);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${flag}: "${item}" is not a positive number`);
    return n;
  });
}
