import { add, captureGraph, dispose, exp, getBackend, indexCopy, mul, multiTensorAdamUpdateInPlace, setBackend, sum, tensor, tidy, zeros } from "@blocksparse/core";
import { registerGraphRecordingBackend } from "@blocksparse/core/testing";
import { AutogradError, InPlaceWriteError, backward, detach, noGrad, zeroGrad } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { leaf, poisonAllocations, values } from "./helpers";

poisonAllocations();


/** The error `fn` throws (failing the test if it throws none). */
function thrownBy(fn: () => void): InPlaceWriteError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InPlaceWriteError);
    expect(error).toBeInstanceOf(AutogradError);
    return error as InPlaceWriteError;
  }
  throw new Error("expected an InPlaceWriteError");
}

describe("writes after the forward recorded a tensor", () => {
  it("an op's output overwritten by assign, then read, fails backward naming the op and its output", () => {
    const x = leaf([1, 2, 3]);
    const y = mul(x, 2);
    y.assign(tensor([5, 6, 7]));
    const loss = sum(y);
    const error = thrownBy(() => backward(loss));
    expect(error.message).toMatch(/output 0 of 'Mul' \(\[3\] float32\) was written in place \(it is at version 1; expected version 0\) before 'Sum' read it/);
    expect([error.kernelName, error.tensorLabel, error.expectedVersion, error.foundVersion]).toEqual(["Mul", "output 0", 0, 1]);
    // Refused before the walk: nothing accumulated, and the graph is still there.
    expect(x.grad).toBeNull();
    dispose([x, y, loss]);
  });

  it("an op's output overwritten and then used as the loss itself fails backward", () => {
    const x = leaf([1, 2]);
    const y = exp(x);
    y.assign(tensor([1, 1]));
    expect(() => backward(y, tensor([1, 1]))).toThrow(/output 0 of 'Exp' .* before backward started from it as the loss/);
    dispose([x, y]);
  });

  it("a tensor written in place by a kernel (indexCopy) counts as written, and is differentiated through the write", () => {
    const x = leaf([1, 2, 3]);
    const y = add(x, 1);
    const before = y.version;
    // y is the only tensor on its buffer: indexCopy writes it in place, without assign.
    indexCopy(y, tensor([0], [1], "int32"), tensor([9]));
    expect(y.version).toBe(before + 1);
    expect(values(y)).toEqual([9, 3, 4]);
    // Recorded as PyTorch's index_copy_: the overwritten element gets no gradient, the others Mul's 3.
    tidy(() => backward(sum(mul(y, 3))));
    expect(values(x.grad)).toEqual([0, 3, 3]);
    dispose([x, y]);
  });
});

describe("a forward captured with captureGraph, replayed, then differentiated eagerly", () => {
  it("fails backward saying that the replay wrote the output and that backward belongs in the captured step", () => {
    registerGraphRecordingBackend();
    const previous = getBackend();
    setBackend("js-graphs");
    try {
      const x = leaf([1, 2, 3]);
      const graph = captureGraph(() => sum(mul(x, x)));
      graph.replay();
      const error = thrownBy(() => backward(graph.result));
      expect(error.message).toMatch(/output 0 of 'Sum' .* before backward started from it as the loss/);
      expect(error.message).toMatch(/A captureGraph replay writes what its step made: capture backward in the same step as the forward\.$/);
      graph.dispose();
      dispose([x, graph.result]);
    } finally {
      setBackend(previous);
    }
  });
});

describe("writes autograd does not need to refuse", () => {
  // A gradient's saved tensors are clones holding the buffer the forward read; assign rebinds the tensor and an in-place
  // kernel declines a shared buffer, so the gradient is of the values the forward used, as it ran.
  it("an input a gradient saved, overwritten by assign after the forward: the gradient is of the values the forward read", () => {
    const a = leaf([1, 2, 3]);
    const b = leaf([4, 5, 6]);
    const loss = sum(mul(a, b));
    // Under noGrad, as an optimizer writes: outside it, backward refuses a leaf written after an op read it.
    noGrad(() => a.assign(tensor([0, 0, 0])));
    backward(loss);
    expect(values(a.grad)).toEqual([4, 5, 6]);
    expect(values(b.grad)).toEqual([1, 2, 3]);
    zeroGrad([a, b]);
    dispose([a, b, loss]);
  });

  it("with retainGraph, an optimizer's write between two backwards leaves the second the forward's gradients", () => {
    const a = leaf([1, 2]);
    const b = leaf([3, 4]);
    const loss = sum(mul(a, b));
    backward(loss, null, { retainGraph: true });
    noGrad(() => a.assign(tensor([10, 20])));
    backward(loss);
    expect(values(a.grad)).toEqual([6, 8]);
    expect(values(b.grad)).toEqual([2, 4]);
    zeroGrad([a, b]);
    dispose([a, b, loss]);
  });

  it("a training loop with an in-place optimizer between steps keeps working and gives the analytic gradients", () => {
    // loss = sum(w * w * c): d/dw = 2 w c, with w the values the forward read.
    const w = leaf([0.5, -1, 2]);
    const c = tensor([1, 2, 3]);
    const m = zeros([3]);
    const v = zeros([3]);
    for (let step = 1; step <= 4; step++) {
      const read = values(w);
      tidy(() => backward(sum(mul(mul(w, w), c))));
      const grad = values(w.grad);
      for (const [i, wi] of read.entries()) expect(grad[i]).toBeCloseTo(2 * wi * [1, 2, 3][i], 5);
      const version = w.version;
      noGrad(() => multiTensorAdamUpdateInPlace([w], [w.grad!], [m], [v], { steps: [step], lr: 0.1 }));
      expect(w.version).toBe(version + 1);
      zeroGrad([w]);
    }
    dispose([w, c, m, v]);
  });

  it("gradient accumulation over several backwards, then an assign (SGD), works as before", () => {
    const w = leaf([1, 2]);
    for (let step = 0; step < 3; step++) {
      const read = values(w);
      for (let micro = 0; micro < 2; micro++) tidy(() => backward(sum(mul(w, w))));
      expect(values(w.grad)).toEqual(read.map((wi) => 4 * wi));
      noGrad(() => tidy(() => w.assign(add(w, mul(w.grad!, -0.1)))));
      zeroGrad([w]);
    }
    dispose(w);
  });

  it("a write under noGrad to a tensor no recorded gradient saved is fine (KV-cache style)", () => {
    const x = leaf([1, 2, 3]);
    const cache = zeros([4, 3]);
    const shift = tensor([1, 1, 1]);
    // Add saves neither input: writing `shift` after the forward changes no gradient.
    const loss = sum(mul(add(x, shift), 2));
    noGrad(() => {
      indexCopy(cache, tensor([2], [1], "int32"), tensor([[7, 8, 9]]));
      shift.assign(tensor([5, 5, 5]));
    });
    backward(loss);
    expect(values(x.grad)).toEqual([2, 2, 2]);
    expect(values(cache).slice(6, 9)).toEqual([7, 8, 9]);
    zeroGrad([x]);
    dispose([x, cache, shift, loss]);
  });

  it("an output written after every op that reads it was recorded changes nothing: the gradient is of what was read", () => {
    const x = leaf([1, 2, 3]);
    const y = mul(x, 2);
    const loss = sum(y);
    y.assign(tensor([0, 0, 0]));
    backward(loss);
    expect(values(x.grad)).toEqual([2, 2, 2]);
    zeroGrad([x]);
    dispose([x, y, loss]);
  });

  it("writing a detached tensor leaves the tensor it came from, and its gradient, alone", () => {
    const x = leaf([1, 2]);
    const y = mul(x, x);
    const d = detach(y);
    d.assign(tensor([0, 0]));
    expect(y.version).toBe(0);
    backward(sum(mul(y, 1)));
    expect(values(x.grad)).toEqual([2, 4]);
    zeroGrad([x]);
    dispose([x, y, d]);
  });
});
