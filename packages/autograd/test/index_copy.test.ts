import { IndexCopy, type Tensor, dispose, exp, indexCopy, memory, mul, runKernel, sum, tanh, tensor, tidy, zeros } from "@blocksparse/core";
import { AutogradError, backward, noGrad, tracksGrad } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { expectGradients, leaf, poisonAllocations, randomTensor, values } from "./helpers";

poisonAllocations();

const int32 = (values: number[]) => tensor(new Int32Array(values));

/** indexCopy as a function of target and source: target is first made a recorded op's output (a leaf cannot be written). */
function copied(indices: Tensor, axis: number, sharedTarget: boolean) {
  return (target: Tensor, source: Tensor): Tensor => {
    // Exp saves its output (a clone on the buffer): the write then goes to a new buffer; Mul's output is written in place.
    const written = sharedTarget ? exp(target) : mul(target, 1);
    indexCopy(written, indices, source, axis);
    return tanh(written);
  };
}

describe("indexCopy is differentiable, as PyTorch's index_copy_", () => {
  it.each([
    ["in place", false],
    ["into a buffer another tensor shares", true],
  ])("target keeps dy where it was not written, source gets dy's rows at the indices (%s)", (_, shared) => {
    const indices = int32([3, 0]);
    expectGradients(copied(indices, 0, shared), [randomTensor([4, 3], 1), randomTensor([2, 3], 2)]);
    expectGradients(copied(indices, 1, shared), [randomTensor([2, 4, 3], 3), randomTensor([2, 2, 3], 4)]);
    expectGradients(copied(indices, -1, shared), [randomTensor([3, 4], 5), randomTensor([3, 2], 6)]);
    indices.dispose();
  });

  it("with repeated indices only the source row whose write landed (the last, on js) gets the row's gradient", () => {
    const indices = int32([1, 1, 2, 1]);
    expectGradients(copied(indices, 0, false), [randomTensor([3, 2], 7), randomTensor([4, 2], 8)]);
    const target = tidy(() => mul(zeros([3]), 1));
    const source = leaf([10, 20, 30, 40]);
    indexCopy(target, indices, source);
    expect(values(target)).toEqual([0, 40, 30]);
    tidy(() => backward(sum(mul(target, tensor([1, 2, 3])))));
    expect(values(source.grad)).toEqual([0, 0, 3, 2]);
    dispose([indices, target, source]);
  });

  it("a target that tracked no gradient carries source's after the write", () => {
    const target = zeros([3]);
    const source = leaf([5]);
    const index = int32([1]);
    expect(tracksGrad(target)).toBe(false);
    indexCopy(target, index, source);
    expect(tracksGrad(target)).toBe(true);
    tidy(() => backward(sum(mul(target, 4))));
    expect(values(source.grad)).toEqual([4]);
    dispose([target, source, index]);
  });

  it("a tensor copied into itself (rows swapped) is differentiated from the values it held before the write", () => {
    const x = leaf([1, 2, 3, 4], [2, 2]);
    const index = int32([1, 0]);
    const y = tidy(() => mul(x, 1));
    indexCopy(y, index, y);
    expect(values(y)).toEqual([3, 4, 1, 2]);
    tidy(() => backward(sum(mul(y, tensor([1, 2, 3, 4], [2, 2])))));
    expect(values(x.grad)).toEqual([3, 4, 1, 2]);
    dispose([x, index, y]);
  });

  it("the out-of-place kernel call is differentiated by the same rule", () => {
    const indices = int32([2, 0]);
    expectGradients((target, source) => runKernel(IndexCopy, { target, indices, source }, { axis: 0 })[0], [randomTensor([3, 2], 9), randomTensor([2, 2], 10)]);
    indices.dispose();
  });

  it("writing into a leaf that requires grad is refused, as PyTorch refuses it; under noGrad it is not recorded", () => {
    const target = leaf([1, 2, 3]);
    const [index, source] = [int32([0]), tensor([9])];
    expect(() => indexCopy(target, index, source)).toThrow(AutogradError);
    expect(() => indexCopy(target, index, source)).toThrow(/IndexCopy: tensor \d+ \(\[3\] float32\) is a leaf that requires grad, written in place/);
    noGrad(() => indexCopy(target, index, tensor([7])));
    expect(values(target)).toEqual([7, 2, 3]);
    dispose([target, index, source]);
  });

  it("frees the write's node and its saved indices with the target", () => {
    const before = memory().numTensors;
    const x = leaf([1, 2, 3]);
    const source = leaf([4]);
    const index = int32([2]);
    const target = tidy(() => mul(x, 2));
    indexCopy(target, index, source);
    const loss = tidy(() => sum(mul(target, target)));
    backward(loss);
    expect([values(x.grad), values(source.grad)]).toEqual([[8, 16, 0], [8]]);
    dispose([x.grad, source.grad, x, source, index, target, loss]);
    expect(memory().numTensors).toBe(before);
  });
});
