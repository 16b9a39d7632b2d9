/** Gradients of core's crossEntropy with class weights and class-probability targets, by finite differences. */
import { cast, crossEntropy, tensor } from "@blocksparse/core";
import { backward } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { expectGradients, poisonAllocations, randomTensor, uniformTensor } from "./helpers";

poisonAllocations();

describe("crossEntropy's weight and class probabilities (finite differences)", () => {
  const weight = () => uniformTensor([5], 71, 0.25, 2);
  it("weight with each reduction, with ignoreIndex and labelSmoothing: gradients of logits and weight", () => {
    const targets = tensor(new Int32Array([2, 0, 4, 1]), [4]);
    for (const reduction of ["mean", "sum", "none"] as const) {
      expectGradients((l, w) => crossEntropy(l, targets, { reduction, weight: w }), [randomTensor([4, 5], 72), weight()]);
      expectGradients((l, w) => crossEntropy(l, targets, { reduction, weight: w, labelSmoothing: 0.3 }), [randomTensor([4, 5], 73), weight()]);
    }
    const withPad = tensor(new Int32Array([2, -100, 4, 1]), [4]);
    expectGradients((l, w) => crossEntropy(l, withPad, { ignoreIndex: -100, weight: w, labelSmoothing: 0.1 }), [randomTensor([4, 5], 74), weight()]);
    const padClass = tensor(new Int32Array([2, 0, 4, 0]), [4]);
    expectGradients((l, w) => crossEntropy(l, padClass, { ignoreIndex: 0, weight: w }), [randomTensor([4, 5], 75), weight()]);
  });

  it("class probabilities with each reduction, with weight and labelSmoothing: gradients of logits, targets and weight", () => {
    const probs = () => uniformTensor([2, 3, 5], 76, 0, 1);
    for (const reduction of ["mean", "sum", "none"] as const) {
      expectGradients((l, p) => crossEntropy(l, p, { reduction }), [randomTensor([2, 3, 5], 77), probs()]);
      expectGradients((l, p, w) => crossEntropy(l, p, { reduction, weight: w, labelSmoothing: 0.2 }), [randomTensor([2, 3, 5], 78), probs(), weight()]);
    }
  });

  it("half logits get their gradient in their own dtype", () => {
    const logits = cast(randomTensor([3, 5], 79), "bfloat16");
    logits.requiresGrad = true;
    const w = weight();
    w.requiresGrad = true;
    backward(crossEntropy(logits, tensor(new Int32Array([1, 4, 0]), [3]), { weight: w, labelSmoothing: 0.1 }));
    expect(logits.grad?.dtype).toBe("bfloat16");
    expect(w.grad?.dtype).toBe("float32");
    const p = uniformTensor([3, 5], 80, 0, 1);
    const logitsP = cast(randomTensor([3, 5], 81), "float16");
    logitsP.requiresGrad = true;
    backward(crossEntropy(logitsP, p, { weight: w }));
    expect(logitsP.grad?.dtype).toBe("float16");
  });
});
