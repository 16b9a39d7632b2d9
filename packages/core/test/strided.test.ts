import { describe, expect, it } from "vitest";
import { mergeDims, stridedCopy, stridedOffsets } from "../src/backends/js/kernels/util";
import { add, broadcastTo, slice, tensor, transpose } from "../src/index";
import { broadcastStrides, sizeOf, stridesOf } from "../src/shape";
import { seededRandom } from "./compute-helpers";

/** out[i] = input[base + offset of element i], the offsets by the per-element walk (the definition). */
function referenceCopy(input: Float32Array, base: number, shape: number[], strides: number[]): Float32Array {
  const offsets = stridedOffsets(shape, strides);
  return Float32Array.from(offsets, (o) => input[base + o]);
}

function randomShape(next: () => number, rank: number): number[] {
  // Sizes 0-5 with 1s common (the dims mergeDims drops) and a 0 now and then (an empty walk).
  return Array.from({ length: rank }, () => {
    const r = next();
    return r < 0.05 ? 0 : r < 0.3 ? 1 : 2 + Math.floor(next() * 4);
  });
}

describe("strided walks of the js kernels", () => {
  it("stridedCopy reads what the per-element offsets read, for sliced, permuted and broadcast strides", () => {
    const next = seededRandom(7);
    for (let trial = 0; trial < 600; trial++) {
      const rank = Math.floor(next() * 5);
      const shape = randomShape(next, rank);
      let source: number[];
      let strides: number[];
      let base = 0;
      if (trial % 3 === 0) {
        // a window of a larger matrix
        source = shape.map((d) => d + Math.floor(next() * 3));
        strides = stridesOf(source);
        base = source.reduce((sum, d, i) => sum + Math.floor(next() * (d - shape[i] + 1)) * strides[i], 0);
      } else if (trial % 3 === 1) {
        // a permutation: element i of the output reads the source at the permuted index
        const perm = Array.from({ length: rank }, (_, i) => i).sort(() => next() - 0.5);
        source = new Array<number>(rank);
        perm.forEach((p, i) => {
          source[p] = shape[i];
        });
        const sourceStrides = stridesOf(source);
        strides = perm.map((p) => sourceStrides[p]);
      } else {
        // a broadcast of a source with some dims 1
        source = shape.map((d) => (next() < 0.4 ? 1 : d));
        strides = broadcastStrides(source, shape);
      }
      const input = Float32Array.from({ length: sizeOf(source) }, () => next());
      const want = referenceCopy(input, base, shape, strides);
      const got = new Float32Array(sizeOf(shape)).fill(Number.NaN);
      stridedCopy(got, input, base, shape, strides);
      expect(Array.from(got), `shape ${shape} strides ${strides} base ${base}`).toEqual(Array.from(want));
      expect(got.every((v) => !Number.isNaN(v))).toBe(true);
    }
  });

  it("mergeDims keeps the walk and merges only dims every stride list steps through as one", () => {
    expect(mergeDims([2, 3, 4], [stridesOf([2, 3, 4])])).toEqual({ shape: [24], strides: [[1]] });
    // A transposed pair does not merge; size-1 dims go.
    expect(mergeDims([3, 1, 2], [[1, 7, 3]])).toEqual({ shape: [3, 2], strides: [[1, 3]] });
    // Broadcast over rows: the row dim merges for the full operand, not for the bias.
    expect(mergeDims([4, 5], [stridesOf([4, 5]), broadcastStrides([5], [4, 5])])).toEqual({ shape: [4, 5], strides: [[5, 1], [0, 1]] });
    expect(mergeDims([], [[]])).toEqual({ shape: [], strides: [[]] });
  });

  it("transpose, slice, broadcastTo and broadcasting add match the definition on random shapes", () => {
    const next = seededRandom(11);
    for (let trial = 0; trial < 60; trial++) {
      const rank = 1 + Math.floor(next() * 4);
      const shape = randomShape(next, rank).map((d) => Math.max(d, 1));
      const values = Array.from({ length: sizeOf(shape) }, () => Math.round(next() * 100));
      const x = tensor(values, shape);
      const strides = stridesOf(shape);
      const at = (index: number[]) => values[index.reduce((o, v, d) => o + v * strides[d], 0)];
      const indices = (dims: number[]) => {
        const out: number[][] = [];
        const walk = (prefix: number[]) => {
          if (prefix.length === dims.length) out.push(prefix);
          else for (let i = 0; i < dims[prefix.length]; i++) walk([...prefix, i]);
        };
        walk([]);
        return out;
      };
      // transpose by a random permutation
      const perm = Array.from({ length: rank }, (_, i) => i).sort(() => next() - 0.5);
      const t = transpose(x, perm);
      expect(Array.from(t.dataSync())).toEqual(indices(perm.map((p) => shape[p])).map((ix) => at(perm.map((_, d) => ix[perm.indexOf(d)]))));
      // slice a random window
      const begin = shape.map((d) => Math.floor(next() * d));
      const size = shape.map((d, i) => 1 + Math.floor(next() * (d - begin[i])));
      const s = slice(x, begin, size);
      expect(Array.from(s.dataSync())).toEqual(indices(size).map((ix) => at(ix.map((v, d) => v + begin[d]))));
      // broadcast: a leading dim of 3 and every size-1 dim to 2
      const target = [3, ...shape.map((d) => (d === 1 ? 2 : d))];
      const b = broadcastTo(x, target);
      expect(Array.from(b.dataSync())).toEqual(indices(target).map((ix) => at(ix.slice(1).map((v, d) => (shape[d] === 1 ? 0 : v)))));
      // add with a row operand broadcast over the rest
      const row = tensor(Array.from({ length: shape[rank - 1] }, (_, i) => i * 1000), [shape[rank - 1]]);
      const sum = add(x, row);
      expect(Array.from(sum.dataSync())).toEqual(indices(shape).map((ix) => at(ix) + ix[rank - 1] * 1000));
      for (const y of [x, t, s, b, row, sum]) y.dispose();
    }
  });
});
