// Which kernels backward runs: a dense layer's gradients in one kernel, and no clone of a gradient its rule made.
import { add, addKernelObserver, linear, linearActivation, mul, reshape, sum, type Tensor, tidy } from "@blocksparse/core";
import { backward, zeroGrad } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { poisonAllocations, randomTensor } from "./helpers";

poisonAllocations();

/** The product kernels a forward and backward of `run` launch, and which inputs got gradients. */
function productKernels(run: () => Tensor, dy: Tensor): string[] {
  const kernels: string[] = [];
  const stop = addKernelObserver((record) => kernels.push(record.kernelName));
  tidy(() => backward(run(), dy));
  stop();
  return kernels.filter((name) => name === "Matmul" || name === "LinearBackward");
}

describe("a dense layer's gradients", () => {
  it("come from one LinearBackward when the input and the weight both need them, from one Matmul each otherwise", () => {
    const x = randomTensor([2, 3, 4], 501);
    const weight = randomTensor([5, 4], 502);
    const bias = randomTensor([5], 503);
    const dy = randomTensor([2, 3, 5], 504);
    const cases: [boolean, boolean, string[]][] = [
      [true, true, ["LinearBackward"]],
      [false, true, ["Matmul"]],
      [true, false, ["Matmul"]],
    ];
    for (const [xGrad, weightGrad, want] of cases) {
      x.requiresGrad = xGrad;
      weight.requiresGrad = weightGrad;
      bias.requiresGrad = true;
      expect(productKernels(() => linear(x, weight, bias), dy), `x ${xGrad}, weight ${weightGrad}`).toEqual(want);
      expect(productKernels(() => linearActivation(x, weight, bias, "gelu"), dy), `activation, x ${xGrad}, weight ${weightGrad}`).toEqual(want);
      expect([x.grad === null, weight.grad === null, bias.grad === null]).toEqual([!xGrad, !weightGrad, false]);
      zeroGrad([x, weight, bias]);
    }
  });
});

describe("backward's handles on the gradients", () => {
  /** The Clone kernels backward runs for `forward`'s result (the forward's own saves not counted). */
  function backwardClones(forward: () => Tensor): number {
    return tidy(() => {
      const y = forward();
      const kernels: string[] = [];
      const stop = addKernelObserver((record) => kernels.push(record.kernelName));
      backward(y);
      stop();
      return kernels.filter((name) => name === "Clone").length;
    });
  }

  it("takes the gradients a rule makes as they are, and clones only those passed through", () => {
    const a = randomTensor([3, 4], 511);
    const b = randomTensor([3, 4], 512);
    a.requiresGrad = true;
    b.requiresGrad = true;
    // Sum's broadcast, Reshape's reshape and Mul's two products are each made by their rule: no clone.
    expect(backwardClones(() => sum(reshape(mul(a, b), [12])))).toBe(0);
    const made = [a.grad, b.grad].map((g) => Array.from((g as Tensor).dataSync()));
    expect(made).toEqual([Array.from(b.dataSync()), Array.from(a.dataSync())]);
    zeroGrad([a, b]);
    // Add passes its output's gradient through to both inputs: one handle each.
    expect(backwardClones(() => sum(add(a, b)))).toBe(2);
    expect(Array.from((a.grad as Tensor).dataSync())).toEqual(new Array(12).fill(1));
    zeroGrad([a, b]);
  });
});
