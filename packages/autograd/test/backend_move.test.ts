import { JsBackend, add, dispose, exp, memory, mul, registerBackend, removeBackend, split, sum, tanh, tensor, tidy } from "@blocksparse/core";
import { AutogradError, backward, getGradient, gradcheck, registerGradient, tracksGrad, zeroGrad } from "@blocksparse/autograd";
import { afterAll, describe, expect, it } from "vitest";
import { expectGradients, leaf, poisonAllocations, randomTensor, values } from "./helpers";

poisonAllocations();

// A second, independent backend instance: tensors on it live in another store, so moves are real copies.
class SecondBackend extends JsBackend {
  override readonly name = "second";
}
registerBackend("second", () => new SecondBackend(), 0);
afterAll(() => removeBackend("second"));

const liveTensors = () => {
  const { numTensors, backends } = memory();
  return [numTensors, backends.js?.numTensors ?? 0, backends.second?.numTensors ?? 0];
};

describe("Tensor.to(backend) is differentiable, as PyTorch's .to(device)", () => {
  it("sends the gradient back to the input's backend: the same as without the move", () => {
    const x = leaf([0.5, -1, 2]);
    const reference = leaf([0.5, -1, 2]);
    const y = x.to("second");
    expect(tracksGrad(y)).toBe(true);
    tidy(() => backward(sum(mul(exp(y), y))));
    tidy(() => backward(sum(mul(exp(reference), reference))));
    expect(x.grad!.backend.name).toBe("js");
    expect(values(x.grad)).toEqual(values(reference.grad));
    dispose([x, y, reference]);
  });

  it("matches finite differences there and back", () => {
    expectGradients((t) => tanh(mul(tanh(t.to("second")), 3).to("js")), [randomTensor([2, 3], 1)]);
    expectGradients((t) => mul(t.to("second"), t.to("second")), [randomTensor([4], 2)]);
  });

  it("a multi-output node on the first backend gets zeros for an output the loss on the second never used", () => {
    const x = leaf([1, 2, 3, 4]);
    tidy(() => {
      const [head] = split(x, [1, 3]);
      backward(sum(mul(head.to("second"), 5)));
    });
    expect(values(x.grad)).toEqual([5, 0, 0, 0]);
    dispose(x);
  });

  it("on the tensor's own backend passes the gradient through", () => {
    const x = leaf([1, 2]);
    tidy(() => backward(sum(mul(x.to("js"), 2))));
    expect(values(x.grad)).toEqual([2, 2]);
    dispose(x);
  });

  it("leaves nothing behind on either backend once the forward's tensors and the gradient are disposed", () => {
    const before = liveTensors();
    const x = leaf([1, 2, 3]);
    const y = x.to("second");
    const loss = tidy(() => sum(mul(add(y, 1), 2)));
    backward(loss);
    expect(values(x.grad)).toEqual([2, 2, 2]);
    dispose([x.grad, x, y, loss]);
    expect(liveTensors()).toEqual(before);
  });

  it("a gradient computed on the wrong backend is refused, naming both", () => {
    const original = getGradient("Move")!;
    registerGradient("Move", { gradFunc: ([dy]) => ({ x: () => dy }) });
    try {
      const x = leaf([1]);
      expect(() => tidy(() => backward(sum(x.to("second"))))).toThrow(AutogradError);
      expect(() => tidy(() => backward(sum(x.to("second"))))).toThrow(/'Move' for input 'x' is on backend 'second', expected 'js'/);
      dispose(x);
    } finally {
      registerGradient("Move", original);
    }
  });

  it("a .grad on another backend than its leaf is an AutogradError naming the tensor and both backends, and leaks nothing", () => {
    const x = leaf([1, 2]);
    x.grad = tidy(() => tensor([5, 5]).to("second"));
    const before = liveTensors();
    const loss = tidy(() => sum(exp(x)));
    expect(() => backward(loss)).toThrow(new RegExp(`tensor ${x.id} has a \\.grad of \\[2\\] float32 on 'second', expected \\[2\\] float32 on 'js'; reset it with zeroGrad`));
    // A leaf as the loss, with its seed, goes the same way.
    const seed = tensor([1, 1]);
    expect(() => backward(x, seed)).toThrow(AutogradError);
    dispose([loss, seed]);
    expect(liveTensors()).toEqual(before);
    expect(values(x.grad)).toEqual([5, 5]);
    zeroGrad([x]);
    tidy(() => backward(sum(mul(x, 3))));
    expect(values(x.grad)).toEqual([3, 3]);
    dispose([x, x.grad]);
  });

  it("gradcheck sees the move (a sanity check of the harness on two backends)", () => {
    const result = gradcheck((t) => t.to("second"), [tensor([1, 2])]);
    expect(result.ok).toBe(true);
  });
});
