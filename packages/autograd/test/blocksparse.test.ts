import {
  BsrPattern,
  type KernelRecord,
  type Tensor,
  add,
  addKernelObserver,
  biasActivation,
  blockNorms,
  bsrLinear,
  bsrLinearActivation,
  bsrMatmul,
  cast,
  gelu,
  mul,
  sampledMatmul,
  sum,
  tensor,
  tidy,
} from "@blocksparse/core";
import { backward } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { expectGradients, poisonAllocations, randomTensor } from "./helpers";

poisonAllocations();

const cases: { blockShape: [number, number]; shape: [number, number]; density: number }[] = [
  { blockShape: [2, 2], shape: [6, 8], density: 0.5 },
  { blockShape: [2, 2], shape: [4, 6], density: 1 },
  { blockShape: [4, 4], shape: [8, 12], density: 0.34 },
  { blockShape: [2, 3], shape: [6, 9], density: 0.5 },
  { blockShape: [2, 3], shape: [8, 6], density: 0.25 },
  { blockShape: [3, 2], shape: [6, 4], density: 0.75 },
];

function patternOf(c: (typeof cases)[number], seed: number): BsrPattern {
  return BsrPattern.random(c.shape, { blockShape: c.blockShape, density: c.density, seed });
}

const label = (c: (typeof cases)[number]) => `${c.blockShape.join("x")} blocks, ${c.shape.join("x")}, density ${c.density}`;

describe("bsrLinear gradients (gradcheck with respect to x, values and bias)", () => {
  for (const [k, c] of cases.entries()) {
    it(label(c), () => {
      const pattern = patternOf(c, 100 + k);
      expect(pattern.nnzBlocks).toBeGreaterThan(0);
      const [rows, cols] = c.shape;
      const x = randomTensor([3, cols], 200 + k);
      const values = randomTensor([pattern.nnzBlocks, ...c.blockShape], 300 + k);
      const bias = randomTensor([rows], 400 + k);
      expectGradients((a, v, b) => bsrLinear(a, v, pattern, b), [x, values, bias]);
    });
  }

  it("inputs with several leading dims, without bias, inside a small network", () => {
    const pattern = BsrPattern.random([6, 4], { blockShape: [2, 2], density: 0.5, seed: 7 });
    const second = BsrPattern.random([4, 6], { blockShape: [2, 3], density: 0.5, seed: 8 });
    const x = randomTensor([2, 3, 4], 9);
    const w1 = randomTensor([pattern.nnzBlocks, 2, 2], 10);
    const w2 = randomTensor([second.nnzBlocks, 2, 3], 11);
    expectGradients((a, v1, v2) => bsrLinear(gelu(bsrLinear(a, v1, pattern)), v2, second), [x, w1, w2]);
  });
});

// ReLU shares the gradient's code; finite differences across its kink would not check it (the conformance
// suite checks its derivative through BiasActivationBackward).
describe("bsrLinearActivation gradients (gradcheck with respect to x, values and bias)", () => {
  for (const activation of ["gelu", "gelu_tanh"] as const) {
    for (const [k, c] of cases.slice(0, 4).entries()) {
      it(`${activation}, ${label(c)}`, () => {
        const pattern = patternOf(c, 500 + k);
        const [rows, cols] = c.shape;
        const x = randomTensor([2, 3, cols], 600 + k);
        const values = randomTensor([pattern.nnzBlocks, ...c.blockShape], 700 + k);
        const bias = randomTensor([rows], 800 + k);
        expectGradients((a, v, b) => bsrLinearActivation(a, v, pattern, b, activation), [x, values, bias]);
        // Without a bias, and feeding a second layer.
        const second = BsrPattern.random([cols, rows], { blockShape: [c.blockShape[1], c.blockShape[0]], density: 0.5, seed: 900 + k });
        const w2 = randomTensor([second.nnzBlocks, c.blockShape[1], c.blockShape[0]], 1000 + k);
        expectGradients((a, v, v2) => bsrLinear(bsrLinearActivation(a, v, pattern, null, activation), v2, second), [x, values, w2]);
      });
    }
  }
});

/** Runs `forward` in a scope, then backward of its sum: the kernels backward ran, and how many times each. */
function backwardKernels(forward: () => Tensor): { records: KernelRecord[]; count: (name: string) => number } {
  const records: KernelRecord[] = [];
  tidy(() => {
    const y = forward();
    const stop = addKernelObserver((record) => records.push(record));
    try {
      backward(sum(y));
    } finally {
      stop();
    }
  });
  return { records, count: (name) => records.filter((r) => r.kernelName === name).length };
}

describe("bsrLinearActivation backward", () => {
  it("runs one activation backward and the two products, and makes no zeros for the unread pre-activation", () => {
    const pattern = BsrPattern.random([16, 24], { blockShape: [4, 4], density: 0.5, seed: 5 });
    const x = randomTensor([2, 5, 24], 41);
    const values = randomTensor([pattern.nnzBlocks, 4, 4], 42);
    const bias = randomTensor([16], 43);
    for (const t of [x, values, bias]) t.requiresGrad = true;
    const { records, count } = backwardKernels(() => bsrLinearActivation(x, values, pattern, bias, "gelu"));
    expect(count("BiasActivationBackward")).toBe(1);
    expect(count("BsrMatmul")).toBe(1);
    expect(count("SampledMatmul")).toBe(1);
    // The pre-activation output [2, 5, 16] gets no gradient: a Fill of its shape would be a wasted pass.
    const fills = records.filter((r) => r.kernelName === "Fill").flatMap((r) => r.outputs.map((t) => t.shape));
    expect(fills).not.toContainEqual([2, 5, 16]);
    expect(x.grad?.shape).toEqual([2, 5, 24]);
    expect(bias.grad?.shape).toEqual([16]);
  });
});

describe("a block-sparse layer fed by bsrLinearActivation", () => {
  const pattern = BsrPattern.random([16, 24], { blockShape: [4, 4], density: 0.5, seed: 15 });
  const second = BsrPattern.random([8, 16], { blockShape: [4, 4], density: 0.5, seed: 16 });
  const inputs = () => {
    const x = randomTensor([2, 5, 24], 51);
    const values = randomTensor([pattern.nnzBlocks, 4, 4], 52);
    const bias = randomTensor([16], 53);
    const w2 = randomTensor([second.nnzBlocks, 4, 4], 54);
    for (const t of [x, values, bias, w2]) t.requiresGrad = true;
    return [x, values, bias, w2];
  };
  /** Runs backward of `fn` over fresh inputs; returns the kernels backward ran and the inputs' gradients. */
  const run = (fn: (x: Tensor, values: Tensor, bias: Tensor, w2: Tensor) => Tensor) => {
    const [x, values, bias, w2] = inputs();
    const { count } = backwardKernels(() => fn(x, values, bias, w2));
    return { count, grads: [x, values, bias, w2].map((t) => Float64Array.from(t.grad!.dataSync())) };
  };

  it("takes its input gradient on through the activation in one kernel, with the same gradients as the unfused layers", () => {
    const fused = run((x, v, b, w2) => bsrLinear(bsrLinearActivation(x, v, pattern, b, "gelu"), w2, second));
    expect(fused.count("BsrMatmulActivationBackward")).toBe(1);
    expect(fused.count("BiasActivationBackward")).toBe(0);
    expect(fused.count("BsrMatmul")).toBe(1);
    const unfused = run((x, v, b, w2) => bsrLinear(biasActivation(bsrLinear(x, v, pattern, b), null, "gelu"), w2, second));
    expect(unfused.count("BsrMatmulActivationBackward")).toBe(0);
    for (const [i, grad] of fused.grads.entries()) expectClose(tensor(grad), unfused.grads[i], 1e-5);
  });

  it("leaves the activation output's gradient to the activation backward when another op reads it too", () => {
    const shared = run((x, v, b, w2) => {
      const h = bsrLinearActivation(x, v, pattern, b, "gelu");
      return add(sum(bsrLinear(h, w2, second)), sum(mul(h, h)));
    });
    expect(shared.count("BsrMatmulActivationBackward")).toBe(0);
    expect(shared.count("BiasActivationBackward")).toBe(1);
    const [x, values, bias, w2] = inputs();
    expectGradients(
      (a, v, b, v2) => {
        const h = bsrLinearActivation(a, v, pattern, b, "gelu");
        return add(sum(bsrLinear(h, v2, second)), sum(mul(h, h)));
      },
      [x, values, bias, w2],
    );
  });
});

/** Dense float64 references: W from the pattern, then dX = dY W, dW = dY^T X on the blocks, db = sum dY. */
function denseReference(pattern: BsrPattern, values: Float32Array, x: Float32Array, dy: Float32Array, n: number) {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const w = new Float64Array(rows * cols);
  const { blockRow, blockCol } = pattern.coordinates;
  for (let k = 0; k < pattern.nnzBlocks; k++) {
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) w[(blockRow[k] * R + r) * cols + blockCol[k] * C + c] = values[(k * R + r) * C + c];
  }
  const dx = new Float64Array(n * cols);
  const db = new Float64Array(rows);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < rows; o++) {
      db[o] += dy[i * rows + o];
      for (let j = 0; j < cols; j++) dx[i * cols + j] += dy[i * rows + o] * w[o * cols + j];
    }
  }
  const dValues = new Float64Array(values.length);
  for (let k = 0; k < pattern.nnzBlocks; k++) {
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        let acc = 0;
        for (let i = 0; i < n; i++) acc += dy[i * rows + blockRow[k] * R + r] * x[i * cols + blockCol[k] * C + c];
        dValues[(k * R + r) * C + c] = acc;
      }
    }
  }
  return { dx, dValues, db };
}

function expectClose(actual: Tensor, expected: Float64Array, tolerance = 1e-5): void {
  const got = actual.dataSync();
  expect(got.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - expected[i]) / (1 + Math.abs(expected[i])));
  expect(worst).toBeLessThan(tolerance);
}

describe("bsrLinear backward uses the sparse kernels only", () => {
  it("matches dense float64 math and never materialises a dense weight or its gradient", () => {
    const pattern = BsrPattern.random([16, 24], { blockShape: [4, 4], density: 0.25, seed: 3 });
    const [rows, cols] = pattern.shape;
    const x = randomTensor([2, 5, cols], 31);
    const values = randomTensor([pattern.nnzBlocks, 4, 4], 32);
    const bias = randomTensor([rows], 33);
    const dy = randomTensor([2, 5, rows], 34);
    for (const t of [x, values, bias]) t.requiresGrad = true;
    const kernels: KernelRecord[] = [];
    tidy(() => {
      const y = bsrLinear(x, values, pattern, bias);
      const stop = addKernelObserver((record) => kernels.push(record));
      try {
        backward(y, dy);
      } finally {
        stop();
      }
    });
    const names = kernels.map((k) => k.kernelName);
    expect(names).toContain("BsrMatmul");
    expect(names).toContain("SampledMatmul");
    expect(names).not.toContain("Matmul");
    const denseSize = rows * cols;
    expect(kernels.flatMap((k) => k.outputs).filter((t) => t.size >= denseSize)).toEqual([]);

    const expected = denseReference(pattern, values.dataSync() as Float32Array, x.dataSync() as Float32Array, dy.dataSync() as Float32Array, 10);
    expect(values.grad?.shape).toEqual([pattern.nnzBlocks, 4, 4]);
    expectClose(x.grad!, expected.dx);
    expectClose(values.grad!, expected.dValues);
    expectClose(bias.grad!, expected.db);
  });
});

describe("gradients of the backward kernels themselves", () => {
  const pattern = BsrPattern.random([6, 9], { blockShape: [2, 3], density: 0.5, seed: 5 });

  it("bsrMatmul with respect to dy and values", () => {
    expectGradients((d, v) => bsrMatmul(d, v, pattern), [randomTensor([4, 6], 51), randomTensor([pattern.nnzBlocks, 2, 3], 52)]);
  });

  it("sampledMatmul with respect to dy and x", () => {
    expectGradients((d, a) => sampledMatmul(d, a, pattern), [randomTensor([4, 6], 53), randomTensor([4, 9], 54)]);
  });

  it("blockNorms, and a zero block gets a zero gradient", () => {
    expectGradients((v) => blockNorms(v), [randomTensor([5, 2, 3], 55)]);
    const data = Float32Array.from(randomTensor([3, 2, 2], 56).dataSync());
    data.fill(0, 4, 8);
    const values = tensor(data, [3, 2, 2]);
    values.requiresGrad = true;
    tidy(() => backward(sum(blockNorms(values))));
    const grad = values.grad!.dataSync();
    for (let k = 0; k < 3; k++) {
      const block = data.slice(k * 4, k * 4 + 4);
      const norm = Math.hypot(...block);
      for (let i = 0; i < 4; i++) expect(grad[k * 4 + i]).toBeCloseTo(norm === 0 ? 0 : block[i] / norm, 6);
    }
  });

  it("blockNorms' gradient v / |v| stays finite for a block of small norm, where dy / |v| leaves the dtype's range", () => {
    // A float16 block of norm 5e-6 (dy / |v| = 2e5, past 65504) and a float32 block of subnormal norm (dy / |v| past 3.4e38).
    const cases = [
      { dtype: "float16", data: [3e-6, 4e-6, 0, 0, 1, 2, 2, 4] },
      { dtype: "float32", data: [3e-41, 4e-41, 0, 0, 1, 2, 2, 4] },
    ] as const;
    for (const { dtype, data } of cases) {
      const values = cast(tensor([...data], [2, 2, 2]), dtype);
      values.requiresGrad = true;
      tidy(() => backward(sum(blockNorms(values))));
      const read = tidy(() => Array.from(cast(values, "float32").dataSync()));
      const grad = tidy(() => Array.from(cast(values.grad!, "float32").dataSync()));
      for (let k = 0; k < 2; k++) {
        const block = read.slice(k * 4, k * 4 + 4);
        const norm = Math.hypot(...block);
        for (let i = 0; i < 4; i++) expect(grad[k * 4 + i], `${dtype} element ${k * 4 + i}`).toBeCloseTo(block[i] / norm, 2);
      }
    }
  });
});

describe("sum of a block-sparse layer's output", () => {
  it("gives db = the number of rows of x, per output", () => {
    const pattern = BsrPattern.random([4, 4], { blockShape: [2, 2], density: 0.5, seed: 1 });
    const bias = randomTensor([4], 2);
    bias.requiresGrad = true;
    tidy(() => backward(sum(bsrLinear(randomTensor([7, 4], 3), randomTensor([pattern.nnzBlocks, 2, 2], 4), pattern, bias))));
    expect(Array.from(bias.grad!.dataSync())).toEqual([7, 7, 7, 7]);
  });
});
