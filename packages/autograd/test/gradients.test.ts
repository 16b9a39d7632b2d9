import {
  type Tensor,
  abs,
  biasActivation,
  add,
  broadcastTo,
  cast,
  concat,
  crossEntropy,
  div,
  exp,
  expandDims,
  flatten,
  gather,
  gelu,
  layerNorm,
  layerNormWithStats,
  linear,
  linearActivation,
  log,
  logSoftmax,
  matmul,
  max,
  maximum,
  mean,
  min,
  minimum,
  mul,
  neg,
  permute,
  pow,
  relu,
  reshape,
  ShapeError,
  rsqrt,
  packedAttention,
  scaledDotProductAttention,
  scatterAdd,
  sigmoid,
  slice,
  softmax,
  split,
  sqrt,
  square,
  squeeze,
  stack,
  sub,
  sum,
  tanh,
  tensor,
  tidy,
  transpose,
  where,
  zeros,
} from "@blocksparse/core";
import { backward, noGrad, reduceToShape } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { distinctTensor, expectGradients, poisonAllocations, randomTensor, uniformTensor } from "./helpers";

poisonAllocations();

const x34 = () => randomTensor([3, 4], 11);

describe("unary elementwise", () => {
  it("neg, exp, tanh, sigmoid, square, gelu (both variants)", () => {
    for (const fn of [neg, exp, tanh, sigmoid, square, (x: Tensor) => gelu(x), (x: Tensor) => gelu(x, "tanh")]) {
      expectGradients(fn, [x34()]);
    }
  });

  it("abs and relu, away from their kink at 0", () => {
    for (const fn of [abs, relu]) expectGradients(fn, [randomTensor([3, 4], 12, { gap: 0.1 })]);
  });

  it("relu passes the gradient at NaN and zeroes it at 0, as torch's threshold_backward (result <= 0 ? 0 : grad)", () => {
    const x = tensor([Number.NaN, -1, 0, 2]);
    x.requiresGrad = true;
    tidy(() => backward(sum(mul(relu(x), tensor([2, 3, 4, 5])))));
    expect(Array.from(x.grad!.dataSync())).toEqual([2, 0, 0, 5]);
  });

  it("abs passes NaN on as its gradient at NaN, as torch's grad * sgn(x); 0 at 0, the sign elsewhere (infinities too)", () => {
    const x = tensor([Number.NaN, -2, 0, 3, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY]);
    x.requiresGrad = true;
    tidy(() => backward(sum(mul(abs(x), tensor([2, 3, 4, 5, 6, 7])))));
    expect(Array.from(x.grad!.dataSync())).toEqual([Number.NaN, -3, 0, 5, -6, 7]);
  });

  it("biasActivation: x and bias, with each activation, rank 2 and 3 (relu away from its kink)", () => {
    for (const activation of ["gelu", "gelu_tanh"] as const) {
      expectGradients((x, b) => biasActivation(x, b, activation), [x34(), randomTensor([4], 14)]);
      expectGradients((x) => biasActivation(x, null, activation), [randomTensor([2, 3, 4], 15)]);
    }
    // x + b away from 0: x spaced off zero, a bias far smaller than that gap.
    expectGradients((x, b) => biasActivation(x, b, "relu"), [randomTensor([3, 4], 16, { gap: 0.2 }), uniformTensor([4], 17, -0.05, 0.05)]);
  });

  it("log, sqrt and rsqrt on positive inputs", () => {
    for (const fn of [log, sqrt, rsqrt]) expectGradients(fn, [uniformTensor([3, 4], 13, 0.5, 2)]);
  });

  it("rsqrt's gradient stays in range where y^3 does not (float16 y past 40.3, float32 y near 1e15), and is not rounded to a subnormal where y^3 is", () => {
    // -dy x^-1.5 / 2, all in range: [-1.25e3, -1.98e1] in float16; [-5e34, -5e-36] in float32.
    const cases = [
      { dtype: "float16", x: [1 / 2500, 1 / 1600], dy: [1e-3, 1e-3] },
      { dtype: "float32", x: [1e-30, 1e30], dy: [1e-10, 1e10] },
    ] as const;
    for (const { dtype, x, dy } of cases) {
      const input = cast(tensor([...x]), dtype);
      input.requiresGrad = true;
      tidy(() => backward(rsqrt(input), cast(tensor([...dy]), dtype)));
      const read = tidy(() => Array.from(cast(input, "float32").dataSync()));
      const expected = read.map((xi, i) => (-dy[i] * xi ** -1.5) / 2);
      const ratios = tidy(() => Array.from(cast(input.grad!, "float32").dataSync(), (g, i) => g / expected[i]));
      for (const ratio of ratios) expect(ratio, dtype).toBeCloseTo(1, 2);
    }
  });
});

describe("binary elementwise, broadcasting reduced back to each input's shape", () => {
  const shapePairs: [number[], number[]][] = [
    [[3, 4], [3, 4]],
    [[3, 4], [4]],
    [[2, 1, 4], [3, 1]],
    [[1], [2, 3]],
  ];

  it("add, sub, mul", () => {
    for (const [sa, sb] of shapePairs) {
      for (const fn of [add, sub, mul]) {
        expectGradients((a, b) => fn(a, b), [randomTensor(sa, 21), randomTensor(sb, 22)]);
      }
    }
  });

  it("div with a denominator away from 0", () => {
    for (const [sa, sb] of shapePairs) {
      expectGradients(div, [randomTensor(sa, 23), randomTensor(sb, 24, { gap: 0.5 })]);
    }
  });

  it("div's denominator gradient stays in range where b^2 does not (float16 b past 256, float32 b near 1e-25), as torch's -dy (a / b) / b", () => {
    const cases = [
      { dtype: "float16", a: [1000, 3e4], b: [300, 1000], expected: [-1000 / 300 ** 2, -3e4 / 1000 ** 2] },
      { dtype: "float32", a: [1e-25], b: [1e-25], expected: [-1e25] },
    ] as const;
    for (const { dtype, a, b, expected } of cases) {
      const denominator = cast(tensor([...b]), dtype);
      denominator.requiresGrad = true;
      tidy(() => backward(sum(div(cast(tensor([...a]), dtype), denominator))));
      const ratios = tidy(() => Array.from(cast(denominator.grad!, "float32").dataSync(), (g, i) => g / expected[i]));
      for (const ratio of ratios) expect(ratio, dtype).toBeCloseTo(1, 2);
    }
  });

  it("maximum and minimum on distinct values", () => {
    for (const fn of [maximum, minimum]) {
      expectGradients((a, b) => fn(a, b), [distinctTensor([3, 4], 25), add(distinctTensor([3, 4], 26), 0.05)]);
      expectGradients((a, b) => fn(a, b), [distinctTensor([3, 4], 27), add(distinctTensor([4], 28), 0.05)]);
    }
  });

  it("maximum and minimum give the whole gradient to both operands where either is NaN, half on ties, as torch", () => {
    // torch: where(a == b, grad / 2, grad).masked_fill_(a < b, 0) for max's a (a > b for min's); NaN compares false.
    const dy = tensor([2, 3, 4, 5, 6, 7]);
    const expected = {
      maximum: { a: [2, 3, 4, 2.5, 6, 0], b: [2, 3, 4, 2.5, 0, 7] },
      minimum: { a: [2, 3, 4, 2.5, 0, 7], b: [2, 3, 4, 2.5, 6, 0] },
    };
    for (const [name, fn] of [["maximum", maximum], ["minimum", minimum]] as const) {
      const a = tensor([Number.NaN, 1, Number.NaN, 2, 3, 1]);
      const b = tensor([1, Number.NaN, Number.NaN, 2, 1, 3]);
      a.requiresGrad = true;
      b.requiresGrad = true;
      tidy(() => backward(sum(mul(fn(a, b), dy))));
      expect(Array.from(a.grad!.dataSync()), `${name} a`).toEqual(expected[name].a);
      expect(Array.from(b.grad!.dataSync()), `${name} b`).toEqual(expected[name].b);
    }
  });

  it("pow with a positive base, with respect to base and exponent", () => {
    expectGradients(pow, [uniformTensor([3, 4], 29, 0.5, 2), randomTensor([3, 4], 30)]);
    expectGradients(pow, [uniformTensor([3, 4], 31, 0.5, 2), randomTensor([4], 32)]);
  });

  it("pow's base gradient is 0 where the exponent is 0, at a zero base too (b a^(b-1) is 0 * inf there)", () => {
    const a = tensor([0, 0, 0.5, 2, 0]);
    a.requiresGrad = true;
    // b a^(b-1): 0 (constant a^0), 2 * 0, 0, 3 * 2^2, 1 * 0^0.
    tidy(() => backward(sum(pow(a, tensor([0, 2, 0, 3, 1])))));
    expect(Array.from(a.grad!.dataSync())).toEqual([0, 0, 0, 12, 1]);
    a.grad = null;
    tidy(() => backward(sum(pow(a, 0))));
    expect(Array.from(a.grad!.dataSync())).toEqual([0, 0, 0, 0, 0]);
  });

  it("a number operand (a scalar the op makes and disposes itself)", () => {
    expectGradients((a) => mul(sub(3, a), 2.5), [x34()]);
    expectGradients((a) => div(1.5, a), [randomTensor([3, 4], 33, { gap: 0.5 })]);
    expectGradients((a) => pow(a, 3), [uniformTensor([3, 4], 34, 0.5, 2)]);
  });

  it("where, condition and branches broadcast together", () => {
    const condition = tensor(new Int32Array([1, 0, 1]), [3, 1]);
    expectGradients((a, b) => where(condition, a, b), [randomTensor([3, 4], 35), randomTensor([4], 36)]);
    const mask = tensor(new Int32Array([1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1]), [3, 4]);
    expectGradients((a, b) => where(mask, a, b), [randomTensor([3, 4], 37), randomTensor([3, 4], 38)]);
  });

  it("reduceToShape refuses a target shape that does not broadcast to the gradient with a ShapeError naming both shapes, not its reshape", () => {
    tidy(() => {
      const grad = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
      expect(Array.from(reduceToShape(grad, [1, 3]).dataSync())).toEqual([5, 7, 9]);
      expect(Array.from(reduceToShape(grad, [3]).dataSync())).toEqual([5, 7, 9]);
      for (const target of [[4], [2], [3, 2, 3], [2, 2]]) {
        expect(() => reduceToShape(grad, target)).toThrow(ShapeError);
        expect(() => reduceToShape(grad, target)).toThrow(`reduceToShape: a gradient of shape [2, 3] cannot be reduced to shape [${target.join(", ")}]`);
      }
      expect(() => reduceToShape(grad, [1.5] as number[])).toThrow("reduceToShape: shape must be an array of non-negative integers, got [1.5]");
    });
  });
});

describe("reductions", () => {
  const x = () => randomTensor([2, 3, 4], 41);

  it("sum and mean over all, one and several axes, with and without keepDims", () => {
    for (const fn of [sum, mean]) {
      expectGradients((t) => fn(t), [x()]);
      expectGradients((t) => fn(t, 1), [x()]);
      expectGradients((t) => fn(t, [0, 2], true), [x()]);
      expectGradients((t) => fn(t, -1, false), [x()]);
    }
  });

  it("max and min over distinct values", () => {
    for (const fn of [max, min]) {
      expectGradients((t) => fn(t), [distinctTensor([2, 3, 4], 42)]);
      expectGradients((t) => fn(t, 1), [distinctTensor([2, 3, 4], 43)]);
      expectGradients((t) => fn(t, [0, 2], true), [distinctTensor([2, 3, 4], 44)]);
    }
  });

  it("max and min of a group holding NaN give its gradient to the NaN elements, as torch.max does (not NaN to all)", () => {
    for (const fn of [max, min]) {
      const x = tensor([1, Number.NaN, 3, Number.NaN, 5, 6, 7, 8], [2, 4]);
      x.requiresGrad = true;
      tidy(() => backward(sum(mul(fn(x, 1), tensor([2, 3])))));
      // Row 0 holds two NaNs: they share its gradient 2; row 1 holds none: its extremum gets 3.
      expect(Array.from(x.grad!.dataSync()), fn.name).toEqual(fn === max ? [0, 1, 0, 1, 0, 0, 0, 3] : [0, 1, 0, 1, 3, 0, 0, 0]);
      const y = tensor([1, Number.NaN, 3]);
      y.requiresGrad = true;
      tidy(() => backward(fn(y)));
      expect(Array.from(y.grad!.dataSync()), `${fn.name} over all`).toEqual([0, 1, 0]);
    }
  });

  it("max and min of a half tensor share the gradient by the exact count of ties, as torch's integer mask.sum()", () => {
    // The ties were counted in the half dtype: 70000 in float16 is Infinity (every share 0), 257 in bfloat16 is 256.
    const cases = [
      { dtype: "float16", size: 70000, share: 1 / 70000 },
      { dtype: "bfloat16", size: 257, share: 1 / 257 },
    ] as const;
    for (const fn of [max, min]) {
      for (const { dtype, size, share } of cases) {
        const x = cast(zeros([size]), dtype);
        x.requiresGrad = true;
        tidy(() => backward(fn(x)));
        const grads = tidy(() => Array.from(cast(x.grad!, "float32").dataSync()));
        const rounded = tidy(() => cast(cast(tensor([share]), dtype), "float32").item());
        expect(grads[0], `${fn.name} ${dtype}`).toBe(rounded);
        expect(grads.every((g) => g === rounded), `${fn.name} ${dtype}: one share for every tie`).toBe(true);
        x.grad!.dispose();
        x.dispose();
      }
    }
  });
});

describe("mean of a half tensor", () => {
  it("gives each element dy / count rounded once to its dtype, as torch (the count is not rounded to the dtype first)", () => {
    // 257 in bfloat16 is 256 and 2049 in float16 is 2048: the shares were 1/256 and 1/2048.
    const cases = [
      { dtype: "bfloat16", size: 257 },
      { dtype: "bfloat16", size: 3000 },
      { dtype: "float16", size: 2049 },
    ] as const;
    for (const { dtype, size } of cases) {
      const x = cast(zeros([2, size]), dtype);
      x.requiresGrad = true;
      tidy(() => backward(sum(mean(x, -1))));
      const grads = tidy(() => Array.from(cast(x.grad!, "float32").dataSync()));
      const rounded = tidy(() => cast(cast(tensor([1 / size]), dtype), "float32").item());
      expect(grads.every((g) => g === rounded), `${dtype} over ${size}: ${grads[0]}, expected ${rounded}`).toBe(true);
      x.grad!.dispose();
      x.dispose();
    }
  });
});

describe("split", () => {
  it("every part used, and a part no gradient reaches (zeros in the joined gradient)", () => {
    expectGradients((t) => {
      const [a, b, c] = split(t, [1, 2, 1], 1);
      return add(mul(a, c), sum(b, 1, true));
    }, [randomTensor([2, 4, 3], 64)]);
    expectGradients((t) => {
      const [a, , c] = split(t, 3, -1);
      return mul(a, c);
    }, [randomTensor([2, 6], 65)]);
  });
});

describe("softmax, logSoftmax, layerNorm, crossEntropy", () => {
  it("softmax and logSoftmax along the last and an inner axis", () => {
    for (const fn of [softmax, logSoftmax]) {
      expectGradients((t) => fn(t), [randomTensor([3, 5], 51)]);
      expectGradients((t) => fn(t, 1), [randomTensor([2, 3, 4], 52)]);
      expectGradients((t) => fn(t, 0), [randomTensor([3, 4], 53)]);
    }
  });

  it("causal softmax: the masked entries get no gradient, the kept ones softmax's", () => {
    expectGradients((t) => softmax(t, -1, { causal: true }), [randomTensor([4, 4], 61)]);
    expectGradients((t) => softmax(t, -1, { causal: true }), [randomTensor([2, 3, 5], 62)]);
  });

  it("causal logSoftmax: the masked outputs (-Infinity) are constants, the kept ones logSoftmax's", () => {
    // The loss reads the kept outputs only (a -Infinity output cannot enter a finite loss).
    const kept = tensor([1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1], [3, 4], "int32");
    expectGradients((t) => where(kept, logSoftmax(t, -1, { causal: true }), zeros([3, 4])), [randomTensor([2, 3, 4], 63)]);
  });

  it("layerNorm with respect to x, gamma and beta, and without them", () => {
    const x = () => randomTensor([2, 3, 8], 54, { scale: 2 });
    expectGradients((t, g, b) => layerNorm(t, g, b), [x(), randomTensor([8], 55), randomTensor([8], 56)]);
    expectGradients((t) => layerNorm(t), [x()]);
    expectGradients((t, g) => layerNorm(t, g, undefined, 1e-3), [x(), randomTensor([8], 57)]);
  });

  it("layerNorm's mean and rstd outputs carry gradients too", () => {
    expectGradients(
      (t, g) => {
        const { y, mean: m, rstd } = layerNormWithStats(t, g);
        return add(y, expandDims(add(mul(m, 0.7), rstd), -1));
      },
      [randomTensor([4, 6], 58, { scale: 2 }), randomTensor([6], 59)],
    );
    expectGradients((t) => layerNormWithStats(t).rstd, [randomTensor([4, 6], 60, { scale: 2 })]);
  });

  it("rstd's gradient stays in range where rstd^3 does not (rstd near 1e13 with epsilon 0), and is not rounded to a subnormal where rstd^3 is (rstd near 3e-15)", () => {
    // d rstd / dx = -rstd^3 (x - mean) / D: about -+2.5e25 and -+2.8e-30, both normal float32 numbers.
    for (const scale of [1e-13, 3e14]) {
      const x = tensor([1, -1, 1, -1].map((v) => v * scale));
      x.requiresGrad = true;
      const rstd = tidy(() => {
        const stats = layerNormWithStats(x, null, null, 0);
        backward(stats.rstd);
        return stats.rstd.dataSync()[0];
      });
      const read = x.dataSync();
      const ratios = Array.from(x.grad!.dataSync(), (g, i) => g / ((-(rstd ** 3) * read[i]) / 4));
      for (const ratio of ratios) expect(ratio, `scale ${scale}`).toBeCloseTo(1, 3);
    }
  });

  it("crossEntropy with mean, sum and no reduction, on 2-D and 3-D logits", () => {
    const targets = tensor(new Int32Array([2, 0, 4, 1]), [4]);
    for (const reduction of ["mean", "sum", "none"] as const) {
      expectGradients((l) => crossEntropy(l, targets, reduction), [randomTensor([4, 5], 61)]);
    }
    const targets3 = tensor(new Int32Array([1, 3, 0, 2, 2, 4]), [2, 3]);
    expectGradients((l) => crossEntropy(l, targets3), [randomTensor([2, 3, 5], 62)]);
  });

  it("crossEntropy with labelSmoothing, alone and with rows left out (finite differences)", () => {
    const targets = tensor(new Int32Array([2, 0, 4, 1]), [4]);
    for (const reduction of ["mean", "sum", "none"] as const) {
      expectGradients((l) => crossEntropy(l, targets, { reduction, labelSmoothing: 0.3 }), [randomTensor([4, 5], 63)]);
    }
    const withPad = tensor(new Int32Array([2, -100, 4, 1]), [4]);
    expectGradients((l) => crossEntropy(l, withPad, { ignoreIndex: -100, labelSmoothing: 0.1 }), [randomTensor([4, 5], 64)]);
  });

  /**
   * Rows 1 and 3 of a [5, 5] batch carry `ignoreIndex`, the others classes 2, 4 and 1: the gradients match finite
   * differences for each reduction, the mean is the 3 kept rows' mean, and the rows left out get exactly zero gradient.
   */
  function expectRowsLeftOut(ignoreIndex: number, seed: number): Tensor {
    const targets = tensor(new Int32Array([2, ignoreIndex, 4, ignoreIndex, 1]), [5]);
    for (const reduction of ["mean", "sum", "none"] as const) {
      expectGradients((l) => crossEntropy(l, targets, { reduction, ignoreIndex }), [randomTensor([5, 5], seed)]);
    }
    const logits = randomTensor([5, 5], seed + 1);
    logits.requiresGrad = true;
    const loss = crossEntropy(logits, targets, { ignoreIndex });
    const kept = noGrad(() => crossEntropy(gather(logits, tensor(new Int32Array([0, 2, 4]), [3]), 0), tensor(new Int32Array([2, 4, 1]), [3])));
    expect(loss.item()).toBeCloseTo(kept.item(), 6);
    backward(loss);
    const g = logits.grad!.dataSync();
    for (const row of [1, 3]) for (let c = 0; c < 5; c++) expect(g[row * 5 + c]).toBe(0);
    expect(g.some((v) => v !== 0)).toBe(true);
    return logits;
  }

  it("crossEntropy with rows left out by ignoreIndex: the mean over the rows kept, no gradient to the others", () => {
    const logits = expectRowsLeftOut(-100, 63);
    // Every row left out: the mean is NaN (0 / 0), as torch's.
    expect(Number.isNaN(crossEntropy(logits, tensor(new Int32Array([-100, -100, -100, -100, -100]), [5]), { ignoreIndex: -100 }).item())).toBe(true);
  });

  it("crossEntropy with a class as ignoreIndex (a pad id): its rows left out of the loss and the gradient", () => {
    expectRowsLeftOut(0, 65);
  });
});

describe("scaledDotProductAttention", () => {
  it("with respect to q, k and v: plain, causal, causal with fewer queries than keys, batch dims", () => {
    const attention = (options: { causal?: boolean; scale?: number }) => (q: Tensor, k: Tensor, v: Tensor) => scaledDotProductAttention(q, k, v, options);
    expectGradients(attention({}), [randomTensor([4, 3], 71), randomTensor([5, 3], 72), randomTensor([5, 3], 73)]);
    expectGradients(attention({ causal: true }), [randomTensor([2, 4, 3], 74), randomTensor([2, 4, 3], 75), randomTensor([2, 4, 3], 76)]);
    expectGradients(attention({ causal: true, scale: 0.8 }), [randomTensor([2, 1, 3, 4], 77), randomTensor([2, 1, 5, 4], 78), randomTensor([2, 1, 5, 4], 79)]);
  });

  it("packedAttention with respect to its packed qkv: causal with batch dims, plain without", () => {
    expectGradients((qkv) => packedAttention(qkv, { causal: true }), [randomTensor([2, 4, 3, 2, 3], 80)]);
    expectGradients((qkv) => packedAttention(qkv, { scale: 0.7 }), [randomTensor([3, 3, 1, 4], 81)]);
  });
});

describe("shape ops", () => {
  it("reshape, flatten, expandDims, squeeze", () => {
    expectGradients((t) => mul(reshape(t, [4, 3]), randomTensor([4, 3], 71)), [x34()]);
    expectGradients((t) => flatten(t), [randomTensor([2, 3, 2], 72)]);
    expectGradients((t) => squeeze(expandDims(t, 1), 1), [x34()]);
  });

  it("transpose and permute, including the no-copy identity permutation", () => {
    expectGradients((t) => transpose(t), [randomTensor([2, 3, 4], 73)]);
    expectGradients((t) => permute(t, [1, 2, 0]), [randomTensor([2, 3, 4], 74)]);
    expectGradients((t) => transpose(t, [0, 1]), [x34()]);
    expectGradients((t) => transpose(t), [randomTensor([5], 75)]);
    // Only axes of size 1 move: a reshape, no kernel (one decoded token's heads).
    expectGradients((t) => permute(t, [0, 2, 1, 3]), [randomTensor([2, 1, 3, 4], 76)]);
  });

  it("slice: interior, negative begin, several axes, and the whole tensor", () => {
    const x = () => randomTensor([3, 4, 5], 76);
    expectGradients((t) => slice(t, [1, 1, 2], [2, 2, 2]), [x()]);
    expectGradients((t) => slice(t, [-2], [1]), [x()]);
    expectGradients((t) => slice(t, [0, 0, 1], [-1, 3, -1]), [x()]);
    expectGradients((t) => slice(t, [0]), [x()]);
  });

  it("concat along each axis, of one tensor, and with a constant among the inputs", () => {
    expectGradients((a, b, c) => concat([a, b, c], 0), [randomTensor([1, 4], 77), x34(), randomTensor([2, 4], 78)]);
    expectGradients((a, b) => concat([a, b], 1), [x34(), randomTensor([3, 2], 79)]);
    expectGradients((a) => concat([a]), [x34()]);
    const constant = randomTensor([3, 2], 80);
    expectGradients((a) => concat([constant, a, constant], -1), [x34()]);
  });

  it("stack along a new first and inner axis, and of one tensor", () => {
    expectGradients((a, b) => stack([a, b]), [x34(), randomTensor([3, 4], 81)]);
    expectGradients((a, b) => stack([a, b, a], 2), [x34(), randomTensor([3, 4], 82)]);
    expectGradients((a) => stack([a], 1), [x34()]);
  });

  it("broadcastTo, including to its own shape", () => {
    expectGradients((t) => broadcastTo(t, [2, 3, 4]), [randomTensor([3, 1], 83)]);
    expectGradients((t) => broadcastTo(t, [3, 4]), [x34()]);
  });

  it("gather (scatter-add back, repeated indices accumulate) along the first and an inner axis", () => {
    const rows = tensor(new Int32Array([2, 0, 2, 3, 2]), [5]);
    expectGradients((t) => gather(t, rows), [randomTensor([4, 3], 84)]);
    const grid = tensor(new Int32Array([1, 1, 0, 3]), [2, 2]);
    expectGradients((t) => gather(t, grid, 1), [randomTensor([2, 4, 3], 85)]);
  });

  it("scatterAdd with respect to its updates", () => {
    const indices = tensor(new Int32Array([1, 3, 1]), [3]);
    expectGradients((u) => scatterAdd(indices, u, [5, 2]), [randomTensor([3, 2], 86)]);
  });

  it("cast to the same dtype (a no-copy clone)", () => {
    expectGradients((t) => cast(t, "float32"), [x34()]);
  });
});

describe("linear", () => {
  it("x, weight, bias and residual, with leading dims", () => {
    const x = randomTensor([2, 3, 4], 81);
    const weight = randomTensor([5, 4], 82);
    const bias = randomTensor([5], 83);
    const residual = randomTensor([2, 3, 5], 84);
    expectGradients((p, w, b, r) => linear(p, w, b, { residual: r }), [x, weight, bias, residual]);
  });

  it("with its activation fused (linearActivation): each activation, with and without bias", () => {
    for (const activation of ["gelu", "gelu_tanh"] as const) {
      expectGradients((p, w, b) => linearActivation(p, w, b, activation), [randomTensor([2, 3, 4], 71), randomTensor([5, 4], 72), randomTensor([5], 73)]);
      expectGradients((p, w) => linearActivation(p, w, null, activation), [randomTensor([3, 4], 74), randomTensor([2, 4], 75)]);
    }
    // relu away from its kink: a bias of at least 0.2 in size against products under 0.04.
    expectGradients((p, w, b) => linearActivation(p, w, b, "relu"), [
      uniformTensor([2, 3, 4], 76, -0.1, 0.1),
      uniformTensor([5, 4], 77, -0.1, 0.1),
      randomTensor([5], 78, { gap: 0.2 }),
    ]);
  });

  it("without bias or residual, x of rank 1", () => {
    expectGradients((p, w) => linear(p, w), [randomTensor([4], 85), randomTensor([3, 4], 86)]);
    expectGradients((p, w, b) => linear(p, w, b), [randomTensor([6, 4], 87), randomTensor([3, 4], 88), randomTensor([3], 89)]);
  });
});

describe("matmul", () => {
  it("every combination of transpose flags", () => {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        const a = randomTensor(transposeA ? [4, 3] : [3, 4], 91);
        const b = randomTensor(transposeB ? [5, 4] : [4, 5], 92);
        expectGradients((p, q) => matmul(p, q, { transposeA, transposeB }), [a, b]);
      }
    }
  });

  it("batched, with broadcast batch dims reduced back", () => {
    expectGradients((p, q) => matmul(p, q), [randomTensor([2, 3, 4], 93), randomTensor([4, 2], 94)]);
    expectGradients((p, q) => matmul(p, q, { transposeA: true, transposeB: true }), [
      randomTensor([2, 1, 4, 3], 95),
      randomTensor([3, 2, 4], 96),
    ]);
  });
});
