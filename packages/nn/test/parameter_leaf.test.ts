import { backward, noGrad, tracksGrad } from "@blocksparse/autograd";
import { memory, mul, randn, sum, tensor, tidy } from "@blocksparse/core";
import { Linear, Parameter, SGD } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

// `weight.value = mul(weight.value, 2)` outside noGrad made the parameter an op's output: backward sent its gradient to
// the tensor it was computed from (already freed), `grad` stayed null and the optimizer skipped the weight, silently.
// torch's nn.Parameter(w * 2) is a leaf; so is ours now.
describe("a parameter holds a leaf", () => {
  it("the setter takes an op's recorded output as a leaf of the same values, which backward and the optimizer then reach", () => {
    const layer = new Linear(2, 1, { seed: 1 });
    const optimizer = new SGD(layer.parameters(), { lr: 0.1 });
    const doubled = Array.from(layer.weight.value.dataSync(), (v) => 2 * v);
    const scaled = mul(layer.weight.value, 2);
    layer.weight.value = scaled;
    expect(scaled.isDisposed).toBe(true);
    expect(Array.from(layer.weight.value.dataSync())).toEqual(doubled);
    expect(layer.weight.requiresGrad).toBe(true);
    backward(sum(layer.forward(tensor([1, 2], [1, 2]))));
    expect(Array.from(layer.weight.grad?.dataSync() ?? [])).toEqual([1, 2]);
    optimizer.step();
    const trained = Array.from(layer.weight.value.dataSync());
    for (let i = 0; i < trained.length; i++) expect(trained[i]).toBeCloseTo(doubled[i] - 0.1 * (i + 1), 6);
    optimizer.dispose();
  });

  it("the constructor does the same, keeping requiresGrad as asked, and leaves no tensor or graph behind", () => {
    const source = new Parameter(randn([3], { seed: 2 }));
    const before = memory().numTensors;
    const parameter = new Parameter(tidy(() => mul(source.value, 3)));
    expect(memory().numTensors).toBe(before + 1);
    backward(sum(mul(parameter.value, parameter.value)));
    const values = Array.from(parameter.value.dataSync());
    expect(Array.from(parameter.grad?.dataSync() ?? [])).toEqual(values.map((v) => 2 * v));
    expect(source.grad).toBeNull();
    const frozen = new Parameter(mul(source.value, 2), { requiresGrad: false });
    expect([frozen.requiresGrad, tracksGrad(frozen.value)]).toEqual([false, false]);
    // Values made under noGrad are leaves already: held as they are.
    const plain = noGrad(() => mul(source.value, 2));
    expect(new Parameter(plain).value).toBe(plain);
  });
});
