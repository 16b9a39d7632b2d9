/**
 * Sum and Mean over leading axes (bias gradients) in the addon: the js kernel's bits (each column's float64 sum in the
 * rows' order, rounded once) at 1, 2 and 3 threads, keepDims or not, one or two leading axes, widths past one block of
 * columns, NaN and infinities where they fall; other axes, dtypes and empty tensors through the js kernel.
 */
import { getBackendInstance, mean, sum, tensorOn, tidy } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { afterAll, describe, expect, it } from "vitest";
import { cpuBackend, cpuThreads, setCpuThreads } from "../src/index";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("sum_leading.test.ts");

function reduce(backend: string, values: number[], shape: number[], axes: number[], keepDims: boolean, op: "sum" | "mean", dtype: "float32" | "float16" | "bfloat16" = "float32") {
  return tidy(() => {
    const x = tensorOn(getBackendInstance(backend), values, shape, dtype);
    const out = op === "sum" ? sum(x, axes, keepDims) : mean(x, axes, keepDims);
    return { shape: out.shape, values: Array.from(out.dataSync()) };
  });
}

describe.skipIf(cpuMissing)("cpu Sum and Mean over leading axes", () => {
  const startThreads = cpuMissing ? 1 : cpuThreads();
  afterAll(() => {
    if (!cpuMissing) setCpuThreads(startThreads);
  });

  it("runs in the addon (a kernel of its own)", () => {
    expect(cpuBackend().kernels.Sum).not.toBe(getBackendInstance("js").kernels.Sum);
  });

  const cases: [number[], number[]][] = [
    [[300, 1300], [0]],
    [[7, 5, 600], [0, 1]],
    [[4, 9, 3], [1, 0]],
    [[1000, 3], [0]],
    [[6, 4], [0, 1]],
    [[2, 3, 4], [0]],
  ];
  for (const [shape, axes] of cases) {
    for (const op of ["sum", "mean"] as const) {
      it(`${op} of [${shape}] over axes [${axes}]: the js kernel's bits at 1, 2 and 3 threads`, () => {
        const rng = new SeededRandom(shape.reduce((a, b) => a * 3 + b, 0));
        // Values of many magnitudes: float64 sums in another order would round differently.
        const values = Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.uniform(-1, 1) * 10 ** rng.nextInt(8));
        for (const keepDims of [false, true]) {
          const js = reduce("js", values, shape, axes, keepDims, op);
          for (const threads of [1, 2, 3]) {
            setCpuThreads(threads);
            expect(reduce("cpu", values, shape, axes, keepDims, op), `${threads} threads, keepDims ${keepDims}`).toEqual(js);
          }
        }
      });
    }
  }

  it("NaN and infinities land where the js kernel puts them; other axes, bfloat16 and empty tensors match too", () => {
    const values = [1, Number.NaN, 3, Number.POSITIVE_INFINITY, 5, 6, Number.NEGATIVE_INFINITY, 8, 9, Number.POSITIVE_INFINITY, 11, 12];
    for (const [shape, axes, dtype] of [
      [[4, 3], [0], "float32"],
      [[4, 3], [1], "float32"],
      [[2, 2, 3], [0, 2], "float32"],
      [[4, 3], [0], "bfloat16"],
      [[0, 3], [0], "float32"],
    ] as const) {
      const data = values.slice(0, shape.reduce((a, b) => a * b, 1));
      for (const op of ["sum", "mean"] as const) {
        expect(reduce("cpu", data, [...shape], [...axes], false, op, dtype), `${op} [${shape}] over [${axes}] ${dtype}`).toEqual(reduce("js", data, [...shape], [...axes], false, op, dtype));
      }
    }
  });

  it("half tensors' column sums (a half model's bias gradients) take the addon and give the js kernel's bits", () => {
    // float64 sums rounded to float32, then to the half: past float16's range for some columns, many rows (several items).
    const data = Array.from({ length: 600 * 33 }, (_, i) => (i % 33 === 5 ? 200 : Math.sin(i * 0.37) + (i % 7) * 0.125));
    for (const dtype of ["float16", "bfloat16"] as const) {
      for (const op of ["sum", "mean"] as const) {
        const [got, want] = ["cpu", "js"].map((backend) => reduce(backend, data, [20, 30, 33], [0, 1], false, op, dtype));
        expect(got, `${op} ${dtype}`).toEqual(want);
        expect(got.values.some((v) => !Number.isFinite(v)), `${op} ${dtype}: a column past the dtype's range`).toBe(dtype === "float16" && op === "sum");
      }
    }
  });

  it("checks its arguments before it runs", () => {
    const addon = cpuBackend().addon;
    expect(() => addon.sumLeading(new Float32Array(11), 0, 3, 4, false, new Float32Array(4), 0)).toThrow(/x has 11 elements, needs 12/);
    expect(() => addon.sumLeading(new Float32Array(12), 0, 3, 4, false, new Float32Array(3), 0)).toThrow(/out has 3 elements, needs 4/);
    const shared = new Float32Array(16);
    expect(() => addon.sumLeading(shared, 0, 3, 4, true, shared, 8)).toThrow(/out shares memory with x/);
  });
});
