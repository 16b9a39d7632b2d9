import {
  addDisposeObserver,
  BsrPattern,
  type Tensor,
  bsrLinear,
  crossEntropy,
  dispose,
  gelu,
  geluBackward,
  layerNorm,
  matmul,
  memory,
  mul,
  scalar,
  softmax,
  sum,
  tanh,
  tensor,
  tidy,
} from "@blocksparse/core";
import { backward, getGradient, gradcheck, registerGradient, zeroGrad } from "@blocksparse/autograd";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { poisonAllocations, randomTensor } from "./helpers";

poisonAllocations();

/** A tiny network: block-sparse linear, GELU, layer norm, dense head, cross-entropy. */
function makeModel() {
  const pattern = BsrPattern.random([8, 12], { blockShape: [4, 4], density: 0.5, seed: 1 });
  const params = {
    values: randomTensor([pattern.nnzBlocks, 4, 4], 2, { scale: 0.3 }),
    bias: randomTensor([8], 3),
    gamma: randomTensor([8], 4),
    beta: randomTensor([8], 5),
    head: randomTensor([8, 3], 6, { scale: 0.3 }),
  };
  for (const p of Object.values(params)) p.requiresGrad = true;
  const x = randomTensor([5, 12], 7);
  const targets = tensor(new Int32Array([0, 2, 1, 1, 0]));
  const loss = () => {
    const hidden = layerNorm(gelu(bsrLinear(x, params.values, pattern, params.bias)), params.gamma, params.beta);
    return crossEntropy(matmul(hidden, params.head), targets);
  };
  return { params, loss, dispose: () => dispose([x, targets, params]) };
}

const live = () => memory().numTensors;
const liveBuffers = () => memory().numBuffers;

describe("memory", () => {
  it("forward + backward inside tidy leaves only the .grads", () => {
    const model = makeModel();
    const params = Object.values(model.params);
    const [tensors, buffers] = [live(), liveBuffers()];
    tidy(() => backward(model.loss()));
    expect(live() - tensors).toBe(params.length);
    expect(liveBuffers() - buffers).toBe(params.length);
    // A second step accumulates into the same grads: nothing new.
    tidy(() => backward(model.loss()));
    expect(live() - tensors).toBe(params.length);
    zeroGrad(params);
    expect([live(), liveBuffers()]).toEqual([tensors, buffers]);
    model.dispose();
  });

  it("a forward without backward frees its tape when its tensors are disposed", () => {
    const model = makeModel();
    const [tensors, buffers] = [live(), liveBuffers()];
    tidy(() => {
      model.loss();
    });
    expect([live(), liveBuffers()]).toEqual([tensors, buffers]);
    // The loss keeps the tape (and the tensors it saved) alive until it is disposed.
    const kept = tidy(() => model.loss());
    expect(live()).toBeGreaterThan(tensors + 1);
    kept.dispose();
    expect([live(), liveBuffers()]).toEqual([tensors, buffers]);
    model.dispose();
  });

  it("a graph kept with retainGraph is freed once its output is disposed", () => {
    const model = makeModel();
    const tensors = live();
    tidy(() => backward(model.loss(), undefined, { retainGraph: true }));
    expect(live() - tensors).toBe(Object.values(model.params).length);
    zeroGrad(Object.values(model.params));
    expect(live()).toBe(tensors);
    model.dispose();
  });

  it("saved tensors are freed as the walk passes each node", () => {
    const x = randomTensor([4], 1);
    x.requiresGrad = true;
    const original = getGradient("Tanh")!;
    const liveAtEachNode: number[] = [];
    registerGradient("Tanh", {
      ...original,
      gradFunc: (dys, context) => {
        liveAtEachNode.push(live());
        return original.gradFunc(dys, context);
      },
    });
    try {
      tidy(() => {
        let y: Tensor = x;
        for (let i = 0; i < 6; i++) y = tanh(y);
        backward(sum(y));
      });
    } finally {
      registerGradient("Tanh", original);
    }
    expect(liveAtEachNode).toHaveLength(6);
    // Each node saved its output; one fewer is alive at each step back.
    for (let i = 1; i < 6; i++) expect(liveAtEachNode[i]).toBe(liveAtEachNode[i - 1] - 1);
  });

  it("a failed backward leaks nothing", () => {
    const x = randomTensor([3], 2);
    x.requiresGrad = true;
    const tensors = live();
    expect(() => tidy(() => backward(sum(softmax(geluBackward(tensor([1, 2, 3]), x)))))).toThrow(/GeluBackward/);
    expect(live()).toBe(tensors);
    expect(x.grad).toBeNull();
  });

  it("a rule's gradient of the wrong shape for one input leaks none it made for the others, outside any tidy", () => {
    const [a, b] = [randomTensor([2], 8), randomTensor([2], 9)];
    a.requiresGrad = true;
    b.requiresGrad = true;
    const loss = sum(mul(a, b));
    const original = getGradient("Mul")!;
    registerGradient("Mul", { ...original, gradFunc: ([dy], { saved }) => ({ a: () => mul(dy, saved.b as Tensor), b: () => scalar(1) }) });
    try {
      const tensors = live();
      expect(() => backward(loss)).toThrow(/gradient of 'Mul' for input 'b' is \[\] float32, expected \[2\] float32/);
      expect(live()).toBe(tensors);
    } finally {
      registerGradient("Mul", original);
    }
    dispose([loss, a, b]);
  });

  it("a graph whose output is collected undisposed leaves numTensors + numCollected as it was: the saved tensors the tape frees with it count as collected", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const model = makeModel();
    const counted = () => memory().numTensors + memory().numCollected;
    let lossId = -1;
    (() => {
      const loss = tidy(() => model.loss()); // dropped undisposed, with the tensors its nodes saved
      lossId = loss.id;
    })();
    const before = counted();
    const collected = new Set<number>();
    const stop = addDisposeObserver((record) => {
      if (record.tensor === null) collected.add(record.id);
    });
    try {
      for (let i = 0; i < 20 && !collected.has(lossId); i++) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      stop();
    }
    expect(collected.has(lossId)).toBe(true);
    expect(counted()).toBe(before);
    model.dispose();
  });

  it("gradcheck leaks nothing and leaves inputs as they were", () => {
    const a = randomTensor([2, 3], 3);
    const b = randomTensor([3, 2], 4);
    const tensors = live();
    expect(gradcheck((p, q) => matmul(p, q), [a, b]).ok).toBe(true);
    expect(live()).toBe(tensors);
    expect([a.requiresGrad, b.requiresGrad, a.grad, b.grad]).toEqual([false, false, null, null]);
  });
});
