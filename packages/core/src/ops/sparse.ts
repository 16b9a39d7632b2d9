import { BsrPattern } from "@blocksparse/format";
import { engine } from "../engine";
import { ShapeError, ValueError } from "../errors";
import {
  type Activation,
  BlockNorms,
  BsrLinear,
  BsrLinearActivation,
  BsrMatmul,
  BsrMatmulActivationBackward,
  SampledMatmul,
} from "../kernel_names";
import { formatShape, shapesEqual } from "../shape";
import type { Tensor } from "../tensor";
import { assertActivation, assertFloat, assertMinRank, assertSameBackend, assertSameDType, assertTensor, formatArg, optionsArg } from "./validate";

/** `pattern` is a BsrPattern, else a ValueError naming what it got, and the order when `second` (the argument before it) is the pattern. */
function assertPattern(op: string, pattern: unknown, second: unknown): asserts pattern is BsrPattern {
  if (pattern instanceof BsrPattern) return;
  const swapped = second instanceof BsrPattern ? " (the pattern is the third argument; it came second)" : "";
  throw new ValueError(`${op}: pattern must be a BsrPattern from @blocksparse/format, got ${formatArg(pattern)}${swapped}`);
}

function assertValues(op: string, values: Tensor, pattern: BsrPattern): void {
  assertTensor(op, "values", values);
  assertFloat(op, "values", values);
  const expected = [pattern.nnzBlocks, pattern.blockShape[0], pattern.blockShape[1]];
  if (!shapesEqual(values.shape, expected)) {
    throw new ShapeError(`${op}: values has shape ${formatShape(values.shape)}, the pattern expects ${formatShape(expected)} ([nnzBlocks, R, C])`);
  }
}

function assertSameLeadingDims(op: string, [aName, a]: [string, Tensor], [bName, b]: [string, Tensor]): void {
  // The shapes without their last dim, compared in place (this runs for every product).
  const leading = Math.max(a.rank - 1, 0);
  let same = leading === Math.max(b.rank - 1, 0);
  for (let i = 0; same && i < leading; i++) same = a.shape[i] === b.shape[i];
  if (!same) {
    throw new ShapeError(`${op}: ${aName} ${formatShape(a.shape)} and ${bName} ${formatShape(b.shape)} must have the same leading dims`);
  }
}

function assertFeatures(op: string, name: string, t: Tensor, expected: number, what: string): void {
  assertTensor(op, name, t);
  assertMinRank(op, name, t, 1);
  const got = t.shape[t.rank - 1];
  if (got !== expected) throw new ShapeError(`${op}: ${name} has ${got} features, the weight expects ${expected} (${what})`);
}

export interface BsrLinearOptions {
  /** Added to the output (a residual connection): a tensor of the output's shape [..., rows], in x's dtype. */
  residual?: Tensor;
}

/**
 * Y = X W^T + bias with W [rows, cols] block-sparse (pattern + values [nnzBlocks, R, C]):
 * x [..., cols] -> [..., rows], plus `options.residual` when given (as `linear` takes it: one kernel where the backend
 * fuses the addend into the product). No bias: leave it out or pass null (as `linear`).
 */
export function bsrLinear(x: Tensor, values: Tensor, pattern: BsrPattern, bias?: Tensor | null, options?: BsrLinearOptions | null): Tensor {
  const { residual } = optionsArg("bsrLinear", options, ["residual"]);
  checkLinear("bsrLinear", x, values, pattern, bias ?? undefined, residual);
  return engine.runKernel(BsrLinear, { x, values, bias: bias ?? undefined, residual }, { pattern });
}

function checkLinear(op: string, x: Tensor, values: Tensor, pattern: BsrPattern, bias: Tensor | undefined, residual?: Tensor): void {
  assertPattern(op, pattern, values);
  const [rows, cols] = pattern.shape;
  assertFeatures(op, "x", x, cols, "its columns");
  assertValues(op, values, pattern);
  // Before the backend check, which reads bias.backend: a bias that is not a tensor is named, not a TypeError.
  if (bias !== undefined) assertTensor(op, "bias", bias);
  if (residual !== undefined) assertTensor(op, "options.residual", residual);
  assertSameBackend(op, [["x", x], ["values", values], ["bias", bias], ["residual", residual]]);
  assertSameDType(op, ["x", "values"], x, values);
  if (bias !== undefined) {
    assertSameDType(op, ["bias", "x"], bias, x);
    if (!shapesEqual(bias.shape, [rows])) throw new ShapeError(`${op}: bias has shape ${formatShape(bias.shape)}, expected [${rows}]`);
  }
  if (residual !== undefined) {
    assertSameDType(op, ["residual", "x"], residual, x);
    const outShape = [...x.shape.slice(0, -1), rows];
    if (!shapesEqual(residual.shape, outShape)) {
      throw new ShapeError(`${op}: residual has shape ${formatShape(residual.shape)}, expected the output's ${formatShape(outShape)}`);
    }
  }
}

/**
 * activation(x W^T + bias) in one kernel (a Linear layer and its activation, as a transformer's FFN runs them):
 * x [..., cols] -> [..., rows]. The same values as biasActivation(bsrLinear(x, values, pattern, bias), null,
 * activation); backends that fuse it write the pre-activation and the activation from one tile, and the gradient
 * reuses the saved pre-activation.
 */
export function bsrLinearActivation(x: Tensor, values: Tensor, pattern: BsrPattern, bias: Tensor | null | undefined, activation: Activation): Tensor {
  const op = "bsrLinearActivation";
  checkLinear(op, x, values, pattern, bias ?? undefined);
  assertActivation(op, activation);
  const [y, preActivation] = engine.runKernel(BsrLinearActivation, { x, values, bias: bias ?? undefined }, { pattern, activation });
  // Kept by autograd's tape when it records (the gradient needs it), else not needed.
  preActivation.dispose();
  return y;
}

/** dX = dY W: dy [..., rows] -> [..., cols] (the input gradient of bsrLinear). */
export function bsrMatmul(dy: Tensor, values: Tensor, pattern: BsrPattern): Tensor {
  const op = "bsrMatmul";
  assertPattern(op, pattern, values);
  assertFeatures(op, "dy", dy, pattern.shape[0], "its rows");
  assertValues(op, values, pattern);
  assertSameBackend(op, [["dy", dy], ["values", values]]);
  assertSameDType(op, ["dy", "values"], dy, values);
  return engine.runKernel(BsrMatmul, { dy, values }, { pattern });
}

/**
 * The input gradient of `bsrLinear(activation(pre), values, pattern)` taken on through the activation, in one kernel:
 * [dpre = bsrMatmul(dy, values, pattern) * activation'(pre), dbias = dpre summed over the leading dims]. dy [..., rows],
 * pre [..., cols] -> [dpre [..., cols], dbias [cols]]: the same values as biasActivationBackward(bsrMatmul(dy, values,
 * pattern), pre, null, activation), which backends that fuse it compute without storing bsrMatmul's output (autograd
 * runs it for a block-sparse layer fed by bsrLinearActivation's output).
 */
export function bsrMatmulActivationBackward(dy: Tensor, values: Tensor, pattern: BsrPattern, pre: Tensor, activation: Activation): [Tensor, Tensor] {
  const op = "bsrMatmulActivationBackward";
  assertPattern(op, pattern, values);
  assertFeatures(op, "dy", dy, pattern.shape[0], "its rows");
  assertValues(op, values, pattern);
  assertFeatures(op, "pre", pre, pattern.shape[1], "its columns");
  assertActivation(op, activation);
  assertSameBackend(op, [["dy", dy], ["values", values], ["pre", pre]]);
  assertSameDType(op, ["dy", "values"], dy, values);
  assertSameDType(op, ["pre", "dy"], pre, dy);
  assertSameLeadingDims(op, ["dy", dy], ["pre", pre]);
  return engine.runKernel(BsrMatmulActivationBackward, { dy, values, pre }, { pattern, activation });
}

/**
 * dW = dY^T X on W's blocks only (SDDMM): dy [..., rows], x [..., cols] with the same
 * leading dims -> [nnzBlocks, R, C], laid out like W's values.
 */
export function sampledMatmul(dy: Tensor, x: Tensor, pattern: BsrPattern): Tensor {
  const op = "sampledMatmul";
  assertPattern(op, pattern, x);
  assertFeatures(op, "dy", dy, pattern.shape[0], "its rows");
  assertFeatures(op, "x", x, pattern.shape[1], "its columns");
  assertFloat(op, "dy", dy);
  assertSameBackend(op, [["dy", dy], ["x", x]]);
  assertSameDType(op, ["dy", "x"], dy, x);
  assertSameLeadingDims(op, ["dy", dy], ["x", x]);
  return engine.runKernel(SampledMatmul, { dy, x }, { pattern });
}

/** The L2 norm of each block: values [nnzBlocks, R, C] -> float32 [nnzBlocks]. */
export function blockNorms(values: Tensor): Tensor {
  const op = "blockNorms";
  assertTensor(op, "values", values);
  assertFloat(op, "values", values);
  if (values.rank !== 3) throw new ShapeError(`${op}: values must be [nnzBlocks, R, C], got ${formatShape(values.shape)}`);
  return engine.runKernel(BlockNorms, { values }, {});
}
