import { memory, ones, type Tensor, tensor } from "@blocksparse/core";
import { Linear, Module, noGrad, Parameter, ReLU, Sequential } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

/** A module whose output is a tensor it holds: its parameter's value (a learned constant, as a learned query or position table). */
class LearnedConstant extends Module {
  table = new Parameter(tensor([1, 2], [1, 2]));
  forward(_x: Tensor): Tensor {
    return this.table.value;
  }
}

class Fails extends Module {
  forward(_x: Tensor): Tensor {
    throw new Error("fails");
  }
}

describe("Sequential frees only the outputs its forward made", () => {
  it("keeps a child's output that the child holds (a parameter's value) when the next child has read it", () => {
    const constant = new LearnedConstant();
    const model = new Sequential(constant, new Linear(2, 3, { seed: 1 }));
    const y = model.forward(ones([1, 2]));
    expect(y.shape).toEqual([1, 3]);
    expect(constant.table.value.isDisposed).toBe(false);
    expect(Array.from(constant.table.value.dataSync())).toEqual([1, 2]);
    y.dispose();
  });

  it("still frees the intermediate outputs, also when a module throws", () => {
    const model = new Sequential(new Linear(2, 4, { seed: 1 }), new ReLU(), new Linear(4, 2, { seed: 2 }));
    const failing = new Sequential(new Linear(2, 4, { seed: 1 }), new Linear(4, 4, { seed: 2 }), new Fails());
    const x = ones([3, 2]);
    const before = memory().numTensors;
    noGrad(() => {
      const y = model.forward(x);
      expect(memory().numTensors).toBe(before + 1);
      y.dispose();
      expect(() => failing.forward(x)).toThrow("fails");
    });
    expect(memory().numTensors).toBe(before);
  });
});
