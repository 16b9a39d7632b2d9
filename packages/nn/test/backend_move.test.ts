import { backward } from "@blocksparse/autograd";
import { getBackend, JsBackend, registerBackend, removeBackend, setBackend, tidy } from "@blocksparse/core";
import { Adam, BlockSparseLinear, crossEntropy, Linear, ReLU, Sequential } from "@blocksparse/nn";
import { afterAll, describe, expect, it } from "vitest";
import { host, syntheticClassification } from "./helpers";

// A second, independent backend instance: tensors on it live in another store, so moves are real.
class SecondBackend extends JsBackend {
  override readonly name = "second";
}
registerBackend("second", () => new SecondBackend(), 0);
afterAll(() => {
  setBackend("js");
  removeBackend("second");
});

describe("Module.to", () => {
  it("moves every parameter; training carries on there with its optimizer state following", () => {
    setBackend("js");
    const make = () =>
      new Sequential(new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 1 }), new ReLU(), new Linear(16, 3, { seed: 2 }));
    const { x, y } = syntheticClassification(8, 16, 3, 3);
    const step = (model: Sequential, optimizer: Adam, inputs: typeof x, labels: typeof y) => {
      optimizer.zeroGrad();
      tidy(() => backward(crossEntropy(model.forward(inputs), labels)));
      optimizer.step();
    };
    const reference = make();
    const referenceOptimizer = new Adam(reference.parameters(), { lr: 1e-2 });
    const moved = make();
    const movedOptimizer = new Adam(moved.parameters(), { lr: 1e-2 });
    step(reference, referenceOptimizer, x, y);
    step(moved, movedOptimizer, x, y);

    moved.to("second");
    expect(moved.parameters().every((p) => p.value.backend.name === "second")).toBe(true);
    setBackend("second");
    const { x: x2, y: y2 } = syntheticClassification(8, 16, 3, 3);
    step(moved, movedOptimizer, x2, y2);
    expect(movedOptimizer.stateOf(moved.parameters()[0])?.m.backend.name).toBe("second");
    setBackend("js");
    step(reference, referenceOptimizer, x, y);
    expect(getBackend()).toBe("js");
    const a = reference.parameters().map((p) => host(p.value));
    const b = moved.parameters().map((p) => host(p.value));
    expect(b).toEqual(a);
  });
});
