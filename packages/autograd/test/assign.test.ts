import { add, dispose, exp, mul, multiTensorAdamUpdateInPlace, sum, tensor, tidy, zeros } from "@blocksparse/core";
import { AutogradError, InPlaceWriteError, backward, noGrad, zeroGrad } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { leaf, poisonAllocations, values } from "./helpers";

poisonAllocations();

/** The AutogradError `fn` throws (failing the test if it throws none). */
function refused(fn: () => void): AutogradError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(AutogradError);
    return error as AutogradError;
  }
  throw new Error("expected an AutogradError");
}

describe("assign from a tensor that tracks gradients, while recording", () => {
  it("is refused, naming the source and saying the gradient would be lost and how to write it; the target is unchanged", () => {
    const x = leaf([0, 1]);
    const w = zeros([2]);
    const y = exp(x);
    const error = refused(() => w.assign(y));
    expect(error.message).toBe(
      `assign: the source, tensor ${y.id} ([2] float32), is the output of Exp, recorded for autograd; assign is not differentiable, so the gradient would be lost between it and tensor ${w.id}. Use the computed tensor itself (a new tensor) where the gradient should flow, or assign inside noGrad(() => ...) if the gradient is not wanted`,
    );
    expect([values(w), w.version]).toEqual([[0, 0], 0]);
    dispose([x, w, y]);
  });

  it("copies a leaf's values: no computation's gradient is cut (a parameter copied into another)", () => {
    const x = leaf([1, 2]);
    const w = leaf([0, 0]);
    w.assign(x);
    expect(values(w)).toEqual([1, 2]);
    dispose([x, w]);
  });

  it("copies the values inside noGrad, where no gradient is wanted", () => {
    const x = leaf([0, 1]);
    const w = zeros([2]);
    noGrad(() => tidy(() => w.assign(exp(x))));
    expect(values(w)).toEqual([1, Math.fround(Math.E)]);
    expect(w.requiresGrad).toBe(false);
    dispose([x, w]);
  });
});

describe("assign into a leaf that requires grad, outside noGrad, after a recorded op read it", () => {
  it("fails backward with an InPlaceWriteError naming the leaf and the op, before anything is accumulated", () => {
    const a = leaf([1, 2]);
    const b = leaf([3, 4]);
    const loss = sum(mul(a, b));
    a.assign(tensor([9, 9]));
    let error: unknown;
    try {
      backward(loss);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(InPlaceWriteError);
    expect((error as Error).message).toBe(
      `backward: tensor ${a.id} ([2] float32), a leaf that requires grad, was written in place outside noGrad (it is at version 1; expected version 0) after 'Mul' read it as its input 'a': a leaf that requires grad cannot be written while a gradient of it is recorded. Write it inside noGrad (as an optimizer step does), or after backward`,
    );
    const { kernelName, tensorLabel, expectedVersion, foundVersion } = error as InPlaceWriteError;
    expect([kernelName, tensorLabel, expectedVersion, foundVersion]).toEqual(["Mul", "a leaf", 0, 1]);
    expect([a.grad, b.grad]).toEqual([null, null]);
    dispose([a, b, loss]);
  });

  it("is fine inside noGrad, before the forward read it and after backward: the gradient is of the values read", () => {
    const a = leaf([1, 2]);
    // A model initialized, loaded or broadcast before its forward.
    a.assign(tensor([3, 4]));
    const loss = sum(mul(a, a));
    noGrad(() => a.assign(tensor([5, 6])));
    backward(loss, null, { retainGraph: true });
    expect(values(a.grad)).toEqual([6, 8]);
    a.assign(tensor([7, 8]));
    // The retained graph read the leaf before that write: a second backward through it is refused.
    expect(() => backward(loss)).toThrow(InPlaceWriteError);
    zeroGrad([a]);
    const next = sum(mul(a, a));
    backward(next);
    expect(values(a.grad)).toEqual([14, 16]);
    zeroGrad([a]);
    dispose([a, loss, next]);
  });

  it("counts a multiTensorAdamUpdateInPlace step outside noGrad as such a write, and one inside noGrad not", () => {
    const w = leaf([1, 2]);
    const [m, v, grad] = [zeros([2]), zeros([2]), tensor([1, 1])];
    const loss = sum(add(w, 1));
    noGrad(() => multiTensorAdamUpdateInPlace([w], [grad], [m], [v], { steps: [1], lr: 0.1 }));
    backward(loss, null, { retainGraph: true });
    multiTensorAdamUpdateInPlace([w], [grad], [m], [v], { steps: [2], lr: 0.1 });
    expect(() => backward(loss)).toThrow(/^backward: tensor \d+ \(\[2\] float32\), a leaf that requires grad, was written in place outside noGrad .* after 'Add' read it/);
    zeroGrad([w]);
    dispose([w, m, v, grad, loss]);
  });
});
