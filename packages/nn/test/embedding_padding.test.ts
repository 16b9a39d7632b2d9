import { backward, gradcheck, noGrad } from "@blocksparse/autograd";
import { add, concat, IndexError, matmul, mul, randn, slice, sum, type Tensor, tanh, tensor, tidy, ValueError } from "@blocksparse/core";
import { Embedding, functionalCall } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { maxAbsDiff } from "./helpers";

// torch.nn.Embedding's padding_idx: the row's value is read as it is, no lookup sends it a gradient, a fresh init zeroes it.
const ROWS = 6;
const DIM = 3;
const PAD = 2;
// The padding id three times, and rows 0 and 5 twice.
const ids = () => tensor([2, 0, 5, 2, 1, 0, 2, 5], [2, 4], "int32");

/** The weight's gradient of sum(embedding(ids) * upstream) with the weight set to `weight` (its padding row non-zero, as a loaded one may be). */
function weightGrad(embedding: Embedding, weight: Tensor, upstream: Tensor): Float32Array {
  embedding.weight.assign(weight);
  embedding.weight.grad = null;
  backward(tidy(() => sum(mul(embedding.forward(ids()), upstream))));
  return Float32Array.from(embedding.weight.grad!.dataSync());
}

const row = (values: ArrayLike<number>, r: number): number[] => Array.from(values).slice(r * DIM, r * DIM + DIM);

describe("Embedding's paddingIdx", () => {
  it("gives the padding row a gradient of exactly zero and every other row the gradient it has without paddingIdx", () => {
    const weight = randn([ROWS, DIM], { seed: 3 });
    const upstream = randn([2, 4, DIM], { seed: 4 });
    const padded = weightGrad(new Embedding(ROWS, DIM, { seed: 1, paddingIdx: PAD }), weight, upstream);
    const plain = weightGrad(new Embedding(ROWS, DIM, { seed: 1 }), weight, upstream);
    expect(row(padded, PAD)).toEqual([0, 0, 0]);
    expect(row(plain, PAD).every((g) => g !== 0)).toBe(true);
    for (const r of [0, 1, 3, 4, 5]) expect(row(padded, r)).toEqual(row(plain, r));
    // The gradient of a row is the sum of the upstream rows at its ids (the finite differences of a linear loss).
    const up = upstream.dataSync();
    expect(maxAbsDiff(row(padded, 5), [0, 1, 2].map((j) => up[2 * DIM + j] + up[7 * DIM + j]))).toBeLessThan(1e-6);
  });

  it("gives the other rows the gradient finite differences give (a non-linear loss, the padding row held fixed)", () => {
    const embedding = new Embedding(ROWS, DIM, { seed: 1, paddingIdx: PAD });
    const weight = randn([ROWS, DIM], { seed: 3 });
    const [before, padRow, after] = [0, PAD, PAD + 1].map((begin, i) => slice(weight, [begin, 0], [[PAD, 1, ROWS - PAD - 1][i], DIM]));
    const lookup = (rowsBefore: Tensor, rowsAfter: Tensor) =>
      functionalCall(embedding, { weight: concat([rowsBefore, padRow, rowsAfter], 0) }, () => tanh(embedding.forward(ids())));
    const result = gradcheck(lookup, [before, after]);
    expect(result.ok, `abs ${result.maxAbsError} rel ${result.maxRelError}`).toBe(true);
  });

  it("reads the padding row as it is: a loaded weight's non-zero row comes out of forward", () => {
    const embedding = new Embedding(ROWS, DIM, { seed: 1, paddingIdx: PAD });
    const weight = randn([ROWS, DIM], { seed: 3 });
    embedding.weight.assign(weight);
    const out = embedding.forward(ids()).dataSync();
    expect(row(out, 0)).toEqual(row(weight.dataSync(), PAD));
    expect(row(noGrad(() => embedding.forward(ids())).dataSync(), 3)).toEqual(row(weight.dataSync(), PAD));
  });

  it("stops only the lookup's gradient: a weight also used elsewhere (a tied head) gets that use's gradient in its padding row", () => {
    const embedding = new Embedding(ROWS, DIM, { seed: 1, paddingIdx: PAD });
    const hidden = randn([4, DIM], { seed: 5 });
    backward(tidy(() => add(sum(embedding.forward(ids())), sum(matmul(hidden, embedding.weight.value, { transposeB: true })))));
    const expected = [0, 1, 2].map((j) => [0, 1, 2, 3].reduce((total, i) => total + hidden.dataSync()[i * DIM + j], 0));
    expect(maxAbsDiff(row(embedding.weight.grad!.dataSync(), PAD), expected)).toBeLessThan(1e-6);
  });

  it("zeroes the padding row of a fresh init and leaves the others as the same seed draws them", () => {
    const padded = new Embedding(ROWS, DIM, { seed: 7, paddingIdx: PAD }).weight.value.dataSync();
    const plain = new Embedding(ROWS, DIM, { seed: 7 }).weight.value.dataSync();
    expect(row(padded, PAD)).toEqual([0, 0, 0]);
    for (const r of [0, 1, 3, 4, 5]) expect(row(padded, r)).toEqual(row(plain, r));
  });

  it("zeroPaddingRow zeroes the row again after an initialiser replaced the weight, and does nothing without paddingIdx", () => {
    const embedding = new Embedding(ROWS, DIM, { seed: 1, paddingIdx: PAD });
    const weight = embedding.weight.value;
    embedding.weight.assign(randn([ROWS, DIM], { seed: 8 }));
    embedding.zeroPaddingRow();
    expect(embedding.weight.value).toBe(weight);
    expect(row(weight.dataSync(), PAD)).toEqual([0, 0, 0]);
    expect(row(weight.dataSync(), 0).every((v) => v !== 0)).toBe(true);
    const plain = new Embedding(ROWS, DIM, { seed: 1 });
    const before = Array.from(plain.weight.value.dataSync());
    plain.zeroPaddingRow();
    expect(Array.from(plain.weight.value.dataSync())).toEqual(before);
  });

  it("counts a negative index from the end, as torch: -1 is the last row, -numEmbeddings the first", () => {
    const last = new Embedding(ROWS, DIM, { seed: 1, paddingIdx: -1 });
    expect(last.paddingIdx).toBe(ROWS - 1);
    expect(row(last.weight.value.dataSync(), ROWS - 1)).toEqual([0, 0, 0]);
    const upstream = randn([2, 4, DIM], { seed: 4 });
    expect(row(weightGrad(last, randn([ROWS, DIM], { seed: 3 }), upstream), ROWS - 1)).toEqual([0, 0, 0]);
    expect(new Embedding(ROWS, DIM, { paddingIdx: -ROWS }).paddingIdx).toBe(0);
    expect(new Embedding(ROWS, DIM, { paddingIdx: null }).paddingIdx).toBeNull();
    expect(new Embedding(ROWS, DIM).paddingIdx).toBeNull();
    expect(last.toString()).toBe(`Embedding(${ROWS}, ${DIM}, paddingIdx=${ROWS - 1})`);
  });

  it("refuses an index outside [-numEmbeddings, numEmbeddings) with an IndexError naming it, and a non-integer with a ValueError", () => {
    for (const paddingIdx of [ROWS, -ROWS - 1]) {
      expect(() => new Embedding(ROWS, DIM, { paddingIdx })).toThrow(IndexError);
      expect(() => new Embedding(ROWS, DIM, { paddingIdx })).toThrow(`Embedding: paddingIdx must be an integer in [-6, 6), got ${paddingIdx}`);
    }
    for (const paddingIdx of [1.5, Number.NaN, "0"]) {
      expect(() => new Embedding(ROWS, DIM, { paddingIdx: paddingIdx as number })).toThrow(ValueError);
      expect(() => new Embedding(ROWS, DIM, { paddingIdx: paddingIdx as number })).toThrow("Embedding: paddingIdx must be an integer in [-6, 6), got ");
    }
  });
});
