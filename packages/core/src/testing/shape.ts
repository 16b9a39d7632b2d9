/** The shape family: creation (Fill), Cast, Reshape, Transpose, Slice, Concat, BroadcastTo, Gather, ScatterAdd, IndexCopy, OneHot. */
import {
  IndexError,
  type Tensor,
  add,
  broadcastTo,
  cast,
  concat,
  formatShape,
  fromStorage,
  full,
  gather,
  indexCopy,
  mul,
  ones,
  oneHot,
  randint,
  randn,
  reshape,
  scatterAdd,
  slice,
  split,
  stack,
  tensor,
  transpose,
  zeros,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { describe, expect } from "vitest";
import { ALL_DTYPES, type Conformance, type Generator, expectExact, expectThrowsKeeping, expectValues, inCase, makeInput, round } from "./harness";
import * as R from "./reference";

export function declareShapeTests(suite: Conformance): void {
  const { check, rng } = suite;

  describe("creation", () => {
    for (const dtype of ALL_DTYPES) {
      check(`Fill ${dtype}: full, zeros, ones`, () => {
        inCase(`Fill ${dtype} full [2, 3] of 7`, () => expectExact(full([2, 3], 7, dtype), R.ref([2, 3], () => 7), dtype));
        inCase(`Fill ${dtype} zeros [4]`, () => expectExact(zeros([4], dtype), R.ref([4]), dtype));
        inCase(`Fill ${dtype} ones [0, 2]`, () => expectExact(ones([0, 2], dtype), R.ref([0, 2]), dtype));
        inCase(`Fill ${dtype} full [] of -3`, () => expectExact(full([], -3, dtype), R.ref([], () => -3), dtype));
      });
    }
    check("Fill rounds the value to the dtype", () => {
      inCase("Fill float16 0.1", () => expectExact(full([2], 0.1, "float16"), R.ref([2], () => round("float16", 0.1)), "float16"));
      inCase("Fill bfloat16 0.1", () => expectExact(full([2], 0.1, "bfloat16"), R.ref([2], () => round("bfloat16", 0.1)), "bfloat16"));
    });
    check("randn/randint give the seeded generator's numbers", () => {
      const normal = new SeededRandom(77);
      inCase("randn float32 [3, 4]", () => expectExact(randn([3, 4], { seed: 77 }), R.ref([3, 4], () => Math.fround(normal.normal())), "float32"));
      const normalHalf = new SeededRandom(78);
      inCase("randn bfloat16 [5]", () =>
        expectExact(randn([5], { seed: 78, dtype: "bfloat16" }), R.ref([5], () => round("bfloat16", normalHalf.normal())), "bfloat16"),
      );
      const ints = new SeededRandom(79);
      inCase("randint int32 [6]", () => expectExact(randint(-3, 9, [6], { seed: 79 }), R.ref([6], () => -3 + ints.nextInt(12)), "int32"));
    });
    check("fromStorage keeps raw half bits", () => {
      const t = fromStorage(Uint16Array.from([0x3c00, 0x7c00, 0xfc00]), [3], "float16");
      expectExact(t, { shape: [3], data: Float64Array.from([1, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) }, "float16");
    });
  });

  describe("shape ops", () => {
    for (const dtype of ALL_DTYPES) {
      const kind: Generator = dtype === "int32" ? "smallInt" : "normal";
      check(`Reshape, Transpose ${dtype}`, () => {
        const x = makeInput(rng(), [2, 3, 4], dtype, kind);
        inCase(`Reshape ${dtype} [2, 3, 4] -> [4, -1]`, () => expectExact(reshape(x.t, [4, -1]), R.reshape(x.ref, [4, 6]), dtype));
        for (const perm of [[2, 0, 1], [1, 0, 2], [0, 2, 1], [2, 1, 0]]) {
          inCase(`Transpose ${dtype} [2, 3, 4] perm [${perm}]`, () => expectExact(transpose(x.t, perm), R.transpose(x.ref, perm), dtype));
        }
        // Permutations that keep the last dim (attention's head split and merge), which a device backend may
        // copy several elements at a time, and one whose last dim allows only pairs.
        const heads = makeInput(rng(), [2, 3, 2, 16], dtype, kind);
        inCase(`Transpose ${dtype} [2, 3, 2, 16] perm [2, 0, 1, 3]`, () => expectExact(transpose(heads.t, [2, 0, 1, 3]), R.transpose(heads.ref, [2, 0, 1, 3]), dtype));
        inCase(`Transpose ${dtype} [2, 3, 2, 16] perm [0, 2, 1, 3]`, () => expectExact(transpose(heads.t, [0, 2, 1, 3]), R.transpose(heads.ref, [0, 2, 1, 3]), dtype));
        const pairs = makeInput(rng(), [3, 5, 6], dtype, kind);
        inCase(`Transpose ${dtype} [3, 5, 6] perm [1, 0, 2]`, () => expectExact(transpose(pairs.t, [1, 0, 2]), R.transpose(pairs.ref, [1, 0, 2]), dtype));
        const m = makeInput(rng(), [5, 1], dtype, kind);
        inCase(`Transpose ${dtype} [5, 1]`, () => expectExact(transpose(m.t), R.transpose(m.ref, [1, 0]), dtype));
        const empty = makeInput(rng(), [0, 3], dtype, kind);
        inCase(`Transpose ${dtype} [0, 3]`, () => expectExact(transpose(empty.t), R.transpose(empty.ref, [1, 0]), dtype));
      });
      check(`Slice ${dtype}`, () => {
        const x = makeInput(rng(), [2, 3, 4], dtype, kind);
        const cases: [number[], number[] | undefined, number[], number[]][] = [
          [[1, 1, 0], [1, 2, 3], [1, 1, 0], [1, 2, 3]],
          [[0, 2], [-1, 1], [0, 2, 0], [2, 1, 4]],
          [[0, 0, 4], [2, 3, 0], [0, 0, 4], [2, 3, 0]],
          [[0, -1, 1], undefined, [0, 2, 1], [2, 1, 3]],
        ];
        // Rows of 16 from an aligned and from an unaligned start (a device backend copies words only when aligned).
        const wide = makeInput(rng(), [4, 24], dtype, kind);
        for (const [begin, size] of [[[1, 8], [3, 16]], [[0, 3], [4, 16]]]) {
          inCase(`Slice ${dtype} [4, 24] begin [${begin}] size [${size}]`, () => expectExact(slice(wide.t, begin, size), R.slice(wide.ref, begin, size), dtype));
        }
        for (const [begin, size, refBegin, refSize] of cases) {
          inCase(`Slice ${dtype} [2, 3, 4] begin [${begin}] size [${size ?? "to the end"}]`, () =>
            expectExact(slice(x.t, begin, size), R.slice(x.ref, refBegin, refSize), dtype),
          );
        }
      });
      check(`Split ${dtype}`, () => {
        const x = makeInput(rng(), [3, 4, 6], dtype, kind);
        const cases: [number | number[], number][] = [
          [3, 0],
          [[1, 0, 3], 1],
          [2, -1],
          [[5, 1], 2],
        ];
        for (const [sizes, axis] of cases) {
          const ax = axis < 0 ? axis + 3 : axis;
          const lengths = typeof sizes === "number" ? new Array<number>(sizes).fill(x.t.shape[ax] / sizes) : sizes;
          inCase(`Split ${dtype} [3, 4, 6] into ${JSON.stringify(sizes)} along ${axis}`, () => {
            const parts = split(x.t, sizes, axis);
            expect(parts).toHaveLength(lengths.length);
            let at = 0;
            parts.forEach((part, i) => {
              const begin = [0, 0, 0];
              const size = [...x.t.shape];
              begin[ax] = at;
              size[ax] = lengths[i];
              at += lengths[i];
              expectExact(part, R.slice(x.ref, begin, size), dtype);
            });
          });
        }
      });
      check(`Concat ${dtype} (and stack)`, () => {
        const a = makeInput(rng(), [2, 3, 4], dtype, kind);
        const b = makeInput(rng(), [2, 1, 4], dtype, kind);
        const c = makeInput(rng(), [2, 0, 4], dtype, kind);
        inCase(`Concat ${dtype} [2, 3, 4] [2, 1, 4] [2, 0, 4] axis 1`, () =>
          expectExact(concat([a.t, b.t, c.t], 1), R.concat([a.ref, b.ref, c.ref], 1), dtype),
        );
        const d = makeInput(rng(), [2, 3, 2], dtype, kind);
        inCase(`Concat ${dtype} [2, 3, 4] [2, 3, 2] axis -1`, () => expectExact(concat([a.t, d.t], -1), R.concat([a.ref, d.ref], 2), dtype));
        const e = makeInput(rng(), [1, 3, 4], dtype, kind);
        inCase(`Concat ${dtype} [2, 3, 4] [1, 3, 4] axis 0`, () => expectExact(concat([a.t, e.t], 0), R.concat([a.ref, e.ref], 0), dtype));
        const s1 = makeInput(rng(), [3, 2], dtype, kind);
        const s2 = makeInput(rng(), [3, 2], dtype, kind);
        const stacked = R.concat([R.reshape(s1.ref, [3, 1, 2]), R.reshape(s2.ref, [3, 1, 2])], 1);
        inCase(`Concat ${dtype} stack of two [3, 2] axis 1`, () => expectExact(stack([s1.t, s2.t], 1), stacked, dtype));
      });
      check(`BroadcastTo ${dtype}`, () => {
        const small = makeInput(rng(), [3, 1], dtype, kind);
        inCase(`BroadcastTo ${dtype} [3, 1] -> [2, 3, 4]`, () =>
          expectExact(broadcastTo(small.t, [2, 3, 4]), R.zip([small.ref, R.ref([2, 3, 4])], (v) => v), dtype),
        );
        const scalarInput = makeInput(rng(), [], dtype, kind);
        inCase(`BroadcastTo ${dtype} [] -> [0, 2]`, () => expectExact(broadcastTo(scalarInput.t, [0, 2]), R.ref([0, 2]), dtype));
      });
      check(`Gather ${dtype}`, () => {
        const table = makeInput(rng(), [6, 6], dtype, kind);
        const ids = R.ref([2, 3], (i) => [4, 0, 4, 5, 1, 1][i]);
        const idTensor = tensor(ids.data, ids.shape, "int32");
        for (const axis of [0, 1]) {
          inCase(`Gather ${dtype} x [6, 6] indices [2, 3] axis ${axis}`, () =>
            expectExact(gather(table.t, idTensor, axis), R.gather(table.ref, ids, axis), dtype),
          );
        }
        const empty = tensor([], [0], "int32");
        inCase(`Gather ${dtype} x [6, 6] indices [0]`, () => expectExact(gather(table.t, empty, 0), R.gather(table.ref, R.ref([0]), 0), dtype));
      });
      check(`ScatterAdd ${dtype}`, () => {
        const ids = R.ref([2, 3], (i) => [4, 0, 4, 5, 1, 1][i]);
        const idTensor = tensor(ids.data, ids.shape, "int32");
        const updates = makeInput(rng(), [2, 3, 5], dtype, kind);
        inCase(`ScatterAdd ${dtype} updates [2, 3, 5] into [6, 5] axis 0`, () => {
          const want = R.map(R.scatterAdd(ids, updates.ref, [6, 5], 0), (v) => round(dtype, v));
          expectValues(scatterAdd(idTensor, updates.t, [6, 5], 0), want, dtype, "scaled");
        });
        const none = makeInput(rng(), [0, 5], dtype, kind);
        inCase(`ScatterAdd ${dtype} no updates into [6, 5]`, () =>
          expectValues(scatterAdd(tensor([], [0], "int32"), none.t, [6, 5], 0), R.ref([6, 5]), dtype),
        );
        const updates1 = makeInput(rng(), [6, 2, 3], dtype, kind);
        inCase(`ScatterAdd ${dtype} updates [6, 2, 3] into [6, 6] axis 1`, () => {
          const want1 = R.map(R.scatterAdd(ids, updates1.ref, [6, 6], 1), (v) => round(dtype, v));
          expectValues(scatterAdd(idTensor, updates1.t, [6, 6], 1), want1, dtype, "scaled");
        });
      });
    }
    for (const dtype of ALL_DTYPES) {
      const kind = dtype === "int32" ? "smallInt" : "normal";
      check(`IndexCopy ${dtype}`, () => {
        for (const axis of [0, 1, 2]) {
          const shape = [4, 5, 3];
          const indices = [[3, 0], [4, 1, 2], [2]][axis];
          const sourceShape = shape.map((d, i) => (i === axis ? indices.length : d));
          inCase(`IndexCopy ${dtype} [${indices}] into [4, 5, 3] along axis ${axis}`, () => {
            const target = makeInput(rng(), shape, dtype, kind);
            const source = makeInput(rng(), sourceShape, dtype, kind);
            // The same buffer held twice: the write must leave the other tensor's values alone (a new buffer).
            const shared = target.t.clone();
            const want = R.ref(shape, (i) => {
              const at = [Math.floor(i / 15), Math.floor(i / 3) % 5, i % 3];
              const j = indices.indexOf(at[axis]);
              if (j < 0) return target.ref.data[i];
              const from = [...at];
              from[axis] = j;
              return source.ref.data[(from[0] * sourceShape[1] + from[1]) * sourceShape[2] + from[2]];
            });
            indexCopy(shared, tensor(indices, [indices.length], "int32"), source.t, axis);
            expectExact(shared, want, dtype);
            expectExact(target.t, target.ref, dtype);
            // A buffer of its own: written in place.
            const owned = mul(target.t, 1);
            indexCopy(owned, tensor(indices, [indices.length], "int32"), source.t, axis);
            expectExact(owned, want, dtype);
          });
        }
        inCase(`IndexCopy ${dtype} no indices`, () => {
          const target = makeInput(rng(), [3, 2], dtype, kind);
          indexCopy(target.t, tensor([], [0], "int32"), zeros([0, 2], dtype), 0);
          expectExact(target.t, target.ref, dtype);
        });
      });
    }
    // Host backends throw before the op runs; device backends find the index in the kernel, skip it and throw at the
    // first read after it. Either way the op throws IndexError by the time its result is read, and nothing out of
    // bounds is read or written.
    check("IndexCopy with an out-of-range index throws IndexError, by the first read, and writes nothing out of bounds", () => {
      const target = mul(zeros([3, 2]), 1);
      const source = tensor([1, 2, 3, 4], [2, 2]);
      expectThrowsKeeping(
        () => {
          indexCopy(target, tensor([1, 3], [2], "int32"), source, 0);
          target.dataSync();
        },
        IndexError,
        "indexCopy: index 3 at position 1 is out of range [0, 3)",
      );
      const written = Array.from(target.dataSync());
      expect([[0, 0, 0, 0, 0, 0], [0, 0, 1, 2, 0, 0]], "IndexCopy float32 [1, 3] into [3, 2]: nothing written, or the valid row only").toContainEqual(written);
      expect(Array.from(add(target, 1).dataSync()), "the next op after the error").toEqual(written.map((v) => v + 1));
    });
    check("Gather with an out-of-range index throws IndexError, by the first read, and reads nothing out of bounds", () => {
      const table = ones([3, 2]);
      const ids = tensor([0, 3], [2], "int32");
      let result: Tensor | undefined;
      expectThrowsKeeping(
        () => {
          result = gather(table, ids, 0);
          result.dataSync();
        },
        IndexError,
        "gather: index 3 at position 1 is out of range [0, 3)",
      );
      if (result) expect(Array.from(result.dataSync()), "Gather float32 x [3, 2] indices [0, 3]: the out-of-range row").toEqual([1, 1, 0, 0]);
      expect(Array.from(gather(table, tensor([2, 0], [2], "int32"), 0).dataSync()), "a gather after the error").toEqual([1, 1, 1, 1]);
    });
    for (const from of ALL_DTYPES) {
      for (const to of ALL_DTYPES) {
        if (from === to) continue;
        check(`Cast ${from} -> ${to}`, () => {
          const x = makeInput(rng(), [3, 7], from, from === "int32" ? "smallInt" : "normal");
          const scaled = from === "int32" ? x : { t: mul(x.t, 4), ref: R.map(x.ref, (v) => round(from, v * 4)) };
          inCase(`Cast ${from} -> ${to} ${formatShape(x.t.shape)}`, () => expectExact(cast(scaled.t, to), R.map(scaled.ref, (v) => round(to, v)), to));
        });
      }
    }
    // The edges of cast's contract (ops/shape_ops.ts): halves round to nearest even, overflow to infinity and keep
    // subnormals, -0 and NaN; float -> int32 truncates toward zero and wraps modulo 2^32 (JavaScript's ToInt32), NaN
    // and infinities giving 0; int32 -> a half rounds through float32. Each value is first what `from` holds.
    const floatEdges = [
      -0, 0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 65504, 65519, 65520, -65520, 3.4028234663852886e38,
      1e-40, -1e-40, 6e-8, 3e-8, 2.9e-8, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 2.5, -2.5,
      2.7, -2.7, 0.9999, 3e9, -3e9, 2147483647, 2147483648, -2147483649, 4294967296 + 5, 1e20,
    ];
    const intEdges = [0, 1, -1, 2049, 2051, 65504, 65520, 16777217, 16842753, -16842753, 2147483647, -2147483648];
    const intOf = (v: number) => v | 0; // ToInt32: truncation, modulo 2^32, NaN and infinities 0
    for (const from of ALL_DTYPES) {
      for (const to of ALL_DTYPES) {
        if (from === to) continue;
        check(`Cast ${from} -> ${to}: rounding, overflow, subnormals, -0, NaN, truncation and wrapping`, () => {
          const values = from === "int32" ? intEdges : floatEdges.map((v) => round(from, v));
          const want = values.map((v) => (to === "int32" ? intOf(v) : round(to, from === "int32" ? Math.fround(v) : v)));
          inCase(`Cast ${from} -> ${to} of [${values.join(", ")}]`, () =>
            expectExact(cast(tensor(values, [values.length], from), to), R.ref([values.length], (i) => want[i]), to),
          );
        });
      }
    }
    for (const dtype of ALL_DTYPES) {
      check(`OneHot ${dtype} (out-of-range indices give zero rows)`, () => {
        const ids = R.ref([2, 3], (i) => [0, 3, 2, -1, 4, 1][i]);
        const got = oneHot(tensor(ids.data, ids.shape, "int32"), 4, dtype);
        inCase(`OneHot ${dtype} indices [2, 3] depth 4`, () =>
          expectExact(got, R.ref([2, 3, 4], (i) => (ids.data[Math.floor(i / 4)] === i % 4 ? 1 : 0)), dtype),
        );
      });
    }
  });
}
