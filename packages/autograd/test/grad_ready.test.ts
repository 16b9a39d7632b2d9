import { add, matmul, mul, sum, tensor, tidy } from "@blocksparse/core";
import { AutogradError, addGradReadyObserver, backward } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";

function leaf(values: number[], shape: number[]) {
  const t = tensor(values, shape);
  t.requiresGrad = true;
  return t;
}

describe("addGradReadyObserver", () => {
  it("tells of each leaf once, with its complete .grad, nearest the loss first", () => {
    // loss = sum(relu-free two-layer chain): w2 is used last in the forward, so its gradient is ready first.
    const x = tensor([1, 2, 3, 4], [2, 2]);
    const w1 = leaf([1, 0, 0, 1], [2, 2]);
    const w2 = leaf([2, 1, 1, 2], [2, 2]);
    const seen: { name: string; grad: number[] }[] = [];
    const names = new Map([
      [w1, "w1"],
      [w2, "w2"],
    ]);
    const stop = addGradReadyObserver((t) => seen.push({ name: names.get(t) ?? "?", grad: Array.from(t.grad!.dataSync()) }));
    try {
      tidy(() => backward(sum(matmul(matmul(x, w1), w2))));
    } finally {
      stop();
    }
    expect(seen.map((s) => s.name)).toEqual(["w2", "w1"]);
    expect(seen[0].grad).toEqual(Array.from(w2.grad!.dataSync()));
    expect(seen[1].grad).toEqual(Array.from(w1.grad!.dataSync()));
    for (const t of [x, w1, w2, w1.grad!, w2.grad!]) t.dispose();
  });

  it("waits for every contribution of a leaf used twice (the sum, not a part)", () => {
    const a = leaf([1, 2], [2]);
    const b = leaf([3, 4], [2]);
    const grads: number[][] = [];
    const stop = addGradReadyObserver((t) => {
      if (t === a) grads.push(Array.from(t.grad!.dataSync()));
    });
    try {
      // d/da of sum(a*b + a*a) = b + 2a, assembled from two branches.
      tidy(() => backward(sum(add(mul(a, b), mul(a, a)))));
    } finally {
      stop();
    }
    expect(grads).toEqual([[5, 8]]);
    for (const t of [a, b, a.grad!, b.grad!]) t.dispose();
  });

  it("tells of the loss itself when backward starts from a leaf", () => {
    const a = leaf([3], [1]);
    const seen: number[][] = [];
    const stop = addGradReadyObserver((t) => {
      if (t === a) seen.push(Array.from(t.grad!.dataSync()));
    });
    try {
      backward(a);
    } finally {
      stop();
    }
    expect(seen).toEqual([[1]]);
    for (const t of [a, a.grad!]) t.dispose();
  });

  it("is not called after removal, and refuses a non-function", () => {
    const a = leaf([1], [1]);
    let calls = 0;
    const stop = addGradReadyObserver(() => calls++);
    stop();
    tidy(() => backward(sum(mul(a, a))));
    expect(calls).toBe(0);
    expect(() => addGradReadyObserver(42 as never)).toThrow(AutogradError);
    a.grad!.dispose();
    a.dispose();
  });
});
