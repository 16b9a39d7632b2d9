import { addKernelObserver, linear, linearActivation, type Tensor, tidy } from "@blocksparse/core";
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
