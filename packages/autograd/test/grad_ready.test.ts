import { add, matmul, mul, randn, sum, type Tensor, tensor, tidy } from "@blocksparse/core";
import { AutogradError, addGradReadyObserver, backward, reachableLeaves } from "@blocksparse/autograd";
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

describe("reachableLeaves", () => {
  it("names exactly the leaves a backward from the loss sends a gradient to, reads nothing, and does not throw on a freed graph", () => {
    const a = randn([3, 4], { seed: 1 });
    const b = randn([4, 2], { seed: 2 });
    const unused = randn([2], { seed: 3 });
    const constant = randn([3, 2], { seed: 4 });
    for (const t of [a, b, unused]) t.requiresGrad = true;
    const loss = tidy(() => sum(add(matmul(a, b), constant)));
    const reached = reachableLeaves(loss);
    expect(reached).toEqual(new Set([a, b]));
    // What backward then fills agrees.
    backward(loss);
    expect([a.grad !== null, b.grad !== null, unused.grad]).toEqual([true, true, null]);
    // The graph is freed now: the walk reaches nothing past it instead of throwing (backward would refuse it).
    expect(() => reachableLeaves(loss)).not.toThrow();
    // A leaf as its own loss; a tensor that tracks nothing reaches nothing.
    expect(reachableLeaves(unused)).toEqual(new Set([unused]));
    expect(reachableLeaves(constant)).toEqual(new Set());
    for (const t of [a.grad, b.grad]) t?.dispose();
    for (const t of [a, b, unused, constant, loss]) t.dispose();
  });

  it("refuses what backward refuses (a non-Tensor, a disposed loss) and leaves out a leaf disposed since the forward, as backward does", () => {
    expect(() => reachableLeaves(undefined as unknown as Tensor)).toThrow(AutogradError);
    expect(() => reachableLeaves(undefined as unknown as Tensor)).toThrow(/reachableLeaves: loss must be a Tensor/);
    const a = randn([3], { seed: 5 });
    const b = randn([3], { seed: 6 });
    for (const t of [a, b]) t.requiresGrad = true;
    const loss = tidy(() => sum(mul(a, b)));
    b.dispose();
    expect(reachableLeaves(loss)).toEqual(new Set([a]));
    backward(loss);
    expect(a.grad).not.toBeNull();
    a.grad?.dispose();
    const disposed = tidy(() => sum(a));
    disposed.dispose();
    expect(() => reachableLeaves(disposed)).toThrow(/reachableLeaves: loss/);
    a.dispose();
  });
});
