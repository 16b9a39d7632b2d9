/**
 * Gradients of the block-sparse ops and of crossEntropy at the edges a random pattern or batch rarely reaches: block
 * rows and columns without blocks, no stored block at all, blocks one element wide or high, and zero, one or a few
 * tokens (the few-token loops and the tiled ones); every target of a batch ignored.
 */
import { BsrPattern, add, bsrLinear, bsrLinearActivation, bsrMatmul, crossEntropy, sampledMatmul, sum, tensor, tidy, zeros } from "@blocksparse/core";
import { backward } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { expectGradients, poisonAllocations, randomTensor, uniformTensor } from "./helpers";

poisonAllocations();

const patterns: [string, BsrPattern][] = [
  ["an empty block row and an empty block column", BsrPattern.fromMask([6, 9], [2, 3], [1, 0, 0, 0, 0, 0, 0, 1, 0])],
  ["no stored block", BsrPattern.fromMask([4, 6], [2, 3], [0, 0, 0, 0])],
  ["1x3 blocks", BsrPattern.fromMask([2, 6], [1, 3], [1, 0, 0, 1])],
  ["3x1 blocks, the first block row empty", BsrPattern.fromMask([6, 2], [3, 1], [0, 0, 1, 1])],
];

// No leading dim (one token as a vector), one token, no token, and five (past the few-token loops).
const tokenShapes = [[], [1], [0], [5]];

/** The transposed layout of every third block of `pattern`'s grid: a second layer reading the first one's output. */
function nextLayer(pattern: BsrPattern): BsrPattern {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  return BsrPattern.fromMask([cols, rows], [C, R], Array.from({ length: pattern.blockRows * pattern.blockCols }, (_, i) => (i % 3 === 0 ? 1 : 0)));
}

describe("block-sparse gradients at edge patterns and token counts (finite differences)", () => {
  for (const [name, pattern] of patterns) {
    it(name, () => {
      const [rows, cols] = pattern.shape;
      const [R, C] = pattern.blockShape;
      const second = nextLayer(pattern);
      for (const lead of tokenShapes) {
        const x = randomTensor([...lead, cols], 1);
        const values = randomTensor([pattern.nnzBlocks, R, C], 2);
        const bias = randomTensor([rows], 3);
        const dy = randomTensor([...lead, rows], 4);
        expect(() => expectGradients((a, v, b) => bsrLinear(a, v, pattern, b), [x, values, bias]), `bsrLinear, x [${x.shape}]`).not.toThrow();
        // The second layer takes its input gradient on through the first one's activation (one fused kernel).
        const w2 = randomTensor([second.nnzBlocks, C, R], 5);
        expect(
          () => expectGradients((a, v, b, v2) => bsrLinear(bsrLinearActivation(a, v, pattern, b, "gelu"), v2, second), [x, values, bias, w2]),
          `bsrLinearActivation into bsrLinear, x [${x.shape}]`,
        ).not.toThrow();
        expect(() => expectGradients((d, v) => bsrMatmul(d, v, pattern), [dy, values]), `bsrMatmul, dy [${dy.shape}]`).not.toThrow();
        expect(() => expectGradients((d, a) => sampledMatmul(d, a, pattern), [dy, x]), `sampledMatmul, dy [${dy.shape}]`).not.toThrow();
      }
    });
  }
});

describe("crossEntropy with every target ignored", () => {
  it("gives the logits (and class weights) a zero gradient for each reduction, with and without labelSmoothing, as torch", () => {
    const targets = tensor(new Int32Array([-100, -100, -100]), [3]);
    for (const reduction of ["mean", "sum", "none"] as const) {
      for (const labelSmoothing of [0, 0.2]) {
        for (const weighted of [false, true]) {
          const label = `${reduction}, labelSmoothing ${labelSmoothing}${weighted ? ", weight" : ""}`;
          const logits = randomTensor([3, 4], 6);
          const weight = uniformTensor([4], 7, 0.5, 2);
          logits.requiresGrad = true;
          weight.requiresGrad = true;
          const loss = crossEntropy(logits, targets, { reduction, labelSmoothing, ignoreIndex: -100, weight: weighted ? weight : null });
          const value = Array.from(loss.dataSync());
          expect(value, label).toEqual(reduction === "mean" ? [Number.NaN] : reduction === "sum" ? [0] : [0, 0, 0]);
          tidy(() => backward(sum(loss)));
          expect(Array.from(logits.grad!.dataSync()), label).toEqual(new Array(12).fill(0));
          if (weighted) expect(Array.from(weight.grad!.dataSync()), label).toEqual([0, 0, 0, 0]);
          for (const t of [logits, weight, logits.grad, weight.grad, loss]) t?.dispose();
        }
      }
    }
  });

  it("gives zero gradients on an empty batch too (mean NaN, sum 0)", () => {
    for (const reduction of ["mean", "sum"] as const) {
      const logits = zeros([0, 4]);
      const weight = uniformTensor([4], 8, 0.5, 2);
      logits.requiresGrad = true;
      weight.requiresGrad = true;
      const loss = add(crossEntropy(logits, tensor(new Int32Array([]), [0]), { reduction, weight, labelSmoothing: 0.1 }), 0);
      expect(Number.isNaN(loss.item()), reduction).toBe(reduction === "mean");
      tidy(() => backward(loss));
      expect(logits.grad!.shape, reduction).toEqual([0, 4]);
      expect(Array.from(weight.grad!.dataSync()), reduction).toEqual([0, 0, 0, 0]);
    }
  });
});

