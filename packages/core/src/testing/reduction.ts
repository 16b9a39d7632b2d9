/** The reduction family: Sum, Mean, Max, Min, Argmax. */
import { FLOAT_DTYPES, argmax, formatShape, max, mean, min, splitAt, sum, tensor, zeros } from "@blocksparse/core";
import { describe } from "vitest";
import { ALL_DTYPES, type Conformance, type Mode, expectValues, inCase, makeInput, round } from "./harness";
import * as R from "./reference";

const CASES: { shape: number[]; axes: number[] | undefined }[] = [
  { shape: [2, 3, 4], axes: [1] },
  { shape: [2, 3, 4], axes: [0, 2] },
  { shape: [2, 3, 4], axes: undefined },
  { shape: [2, 3, 4], axes: [] },
  { shape: [5, 1], axes: [1] },
  { shape: [7], axes: [0] },
  { shape: [3, 70], axes: [-1] },
  // Long axes with outputs side by side (a bias gradient): device backends split these and read the outputs
  // in packs, with a ragged last pack tile (264 outputs), several outer slices, and outputs that do not pack (13).
  { shape: [1200, 264], axes: [0] },
  { shape: [3, 700, 40], axes: [1] },
  { shape: [900, 13], axes: [0] },
  { shape: [256, 24], axes: [0] },
];

const REDUCTIONS = [
  { kernel: "Sum", op: sum, init: 0, combine: (a: number, x: number) => a + x, finish: (a: number) => a, int32: true, mode: "scaled" as Mode },
  { kernel: "Mean", op: mean, init: 0, combine: (a: number, x: number) => a + x, finish: (a: number, n: number) => a / n, int32: false, mode: "scaled" as Mode },
  { kernel: "Max", op: max, init: Number.NEGATIVE_INFINITY, combine: Math.max, finish: (a: number) => a, int32: true, mode: "elementwise" as Mode },
  { kernel: "Min", op: min, init: Number.POSITIVE_INFINITY, combine: Math.min, finish: (a: number) => a, int32: true, mode: "elementwise" as Mode },
];

const axesOf = (shape: number[], axes: number[] | undefined) =>
  axes === undefined ? shape.map((_, i) => i) : axes.map((a) => (a < 0 ? a + shape.length : a)).sort();

export function declareReductionTests(suite: Conformance): void {
  const { check, rng } = suite;

  describe("reductions", () => {
    for (const c of REDUCTIONS) {
      for (const dtype of [...FLOAT_DTYPES, ...(c.int32 ? (["int32"] as const) : [])]) {
        check(`${c.kernel} ${dtype} over axes, with and without keepDims`, () => {
          for (const { shape, axes } of CASES) {
            for (const keepDims of [false, true]) {
              inCase(`${c.kernel} ${dtype} x ${formatShape(shape)} axes ${axes === undefined ? "all" : `[${axes}]`} keepDims ${keepDims}`, () => {
                const x = makeInput(rng(), shape, dtype, dtype === "int32" ? "smallInt" : "normal");
                const want = R.reduce(x.ref, axesOf(shape, axes), keepDims, c.init, c.combine, c.finish);
                const rounded = R.map(want, (v) => round(dtype, v));
                expectValues(c.op(x.t, axes, keepDims), rounded, dtype, c.mode);
              });
            }
          }
        });
      }
    }
    check("Sum over a size-0 axis is 0, Mean is NaN", () => {
      const x = zeros([2, 0, 3]);
      inCase("Sum float32 x [2, 0, 3] axis 1", () => expectValues(sum(x, 1), R.ref([2, 3]), "float32"));
      inCase("Mean float32 x [2, 0, 3] axis 1", () => expectValues(mean(x, [1]), R.ref([2, 3], () => Number.NaN), "float32"));
      inCase("Sum float32 x [2, 0, 3] all axes", () => expectValues(sum(x), R.ref([]), "float32"));
    });
    // As torch.amax/amin and torch.argmax: NaN is the extremum of any group holding it (autograd's Max/Min gradient
    // relies on it), and Argmax picks the first NaN. Long axes and many outputs reach device backends' split paths.
    for (const dtype of FLOAT_DTYPES) {
      check(`Max, Min ${dtype} propagate NaN and Argmax ${dtype} picks the first NaN`, () => {
        for (const [shape, axis] of [[[2, 5], 1], [[5, 3], 0], [[3, 700, 40], 1], [[1200, 264], 0], [[3, 1000], 1]] as [number[], number][]) {
          const x = makeInput(rng(), shape, dtype);
          // NaN at a position of every fifth group, and a second NaN in every tenth, so each lands in a different
          // slot of the reduced axis; the other groups keep their finite extrema.
          const [outer, dim, inner] = splitAt(shape, axis);
          const data = Float64Array.from(x.ref.data);
          for (let o = 0; o < outer; o++) {
            for (let k = 0; k < inner; k++) {
              const group = o * inner + k;
              if (group % 5 !== 0) continue;
              data[(o * dim + ((group * 7) % dim)) * inner + k] = Number.NaN;
              if (group % 10 === 0) data[(o * dim + ((group * 3 + 1) % dim)) * inner + k] = Number.NaN;
            }
          }
          const nan = tensor(data, shape, dtype);
          const along = (i: number) => Array.from({ length: dim }, (_, j) => data[(Math.floor(i / inner) * dim + j) * inner + (i % inner)]);
          const outShape = shape.filter((_, i) => i !== axis);
          inCase(`Max, Min ${dtype} x ${formatShape(shape)} axis ${axis} with NaN`, () => {
            // Math.max and Math.min return NaN when any argument is NaN.
            expectValues(max(nan, axis), R.ref(outShape, (i) => Math.max(...along(i))), dtype);
            expectValues(min(nan, axis), R.ref(outShape, (i) => Math.min(...along(i))), dtype);
          });
          inCase(`Argmax ${dtype} x ${formatShape(shape)} axis ${axis} with NaN`, () => {
            const want = R.ref(outShape, (i) => {
              const values = along(i);
              const at = values.findIndex((v) => Number.isNaN(v));
              return at >= 0 ? at : values.indexOf(Math.max(...values));
            });
            expectValues(argmax(nan, axis), want, "int32");
          });
          inCase(`Max ${dtype} x ${formatShape(shape)} over all axes with NaN`, () => {
            expectValues(max(nan), R.ref([], () => Number.NaN), dtype);
          });
        }
      });
    }
    for (const dtype of ALL_DTYPES) {
      check(`Argmax ${dtype} picks the first maximum`, () => {
        for (const [shape, axis] of [[[4, 6], 1], [[4, 6], 0], [[2, 3, 5], 1], [[1], 0]] as [number[], number][]) {
          for (const keepDims of [false, true]) {
            inCase(`Argmax ${dtype} x ${formatShape(shape)} axis ${axis} keepDims ${keepDims}`, () => {
              const x = makeInput(rng(), shape, dtype, "smallInt");
              expectValues(argmax(x.t, axis, keepDims), R.argmax(x.ref, axis, keepDims), "int32");
            });
          }
        }
      });
    }
  });
}
