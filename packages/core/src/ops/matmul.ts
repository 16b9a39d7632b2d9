import { engine } from "../engine";
import { ShapeError } from "../errors";
import { type Activation, Linear, LinearActivation, LinearBackward, Matmul } from "../kernel_names";
import { broadcastShapes, formatShape, shapesEqual } from "../shape";
import type { Tensor } from "../tensor";
import { assertActivation, assertBoolean, assertFloat, assertMinRank, assertRank, assertSameBackend, assertSameDType, assertShape, assertTensor, optionsArg } from "./validate";

export interface MatmulOptions {
  transposeA?: boolean;
  transposeB?: boolean;
}

/**
 * Batched matrix product op(a) op(b): a [..., M, K], b [..., K, N] (or transposed with the
 * flags), batch dims broadcast. Both of rank >= 2 and of one float dtype.
 */
export function matmul(a: Tensor, b: Tensor, options?: MatmulOptions | null): Tensor {
  const op = "matmul";
  const { transposeA = false, transposeB = false } = optionsArg(op, options, ["transposeA", "transposeB"]);
  assertBoolean(op, "transposeA", transposeA);
  assertBoolean(op, "transposeB", transposeB);
  assertTensor(op, "a", a);
  assertTensor(op, "b", b);
  assertMinRank(op, "a", a, 2);
  assertMinRank(op, "b", b, 2);
  assertFloat(op, "a", a);
  assertSameBackend(op, [["a", a], ["b", b]]);
  assertSameDType(op, ["a", "b"], a, b);
  const kA = transposeA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  const kB = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2];
  if (kA !== kB) {
    throw new ShapeError(
      `${op}: inner dims differ: a ${formatShape(a.shape)}${transposeA ? "^T" : ""} has ${kA} columns, b ${formatShape(b.shape)}${transposeB ? "^T" : ""} has ${kB} rows`,
    );
  }
  broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), `${op} (batch dims)`);
  return engine.runKernel(Matmul, { a, b }, { transposeA, transposeB });
}

export interface LinearOptions {
  /** Added to the output (a residual connection): a tensor of the output's shape [..., N], in x's dtype. */
  residual?: Tensor;
}

/**
 * A dense layer, as torch.nn.functional.linear: x [..., K], weight [N, K], bias [N] (or null) -> x weight^T + bias,
 * [..., N], plus `options.residual` when given. One kernel where the backend fuses the bias and the addend into the
 * product (cuda: cuBLASLt's epilogue), so a layer costs one launch; the same values as matmul, add and add up to
 * rounding (the fused sum is rounded once). One float dtype for all.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null, options?: LinearOptions | null): Tensor {
  const { residual } = optionsArg("linear", options, ["residual"]);
  checkLinear("linear", x, weight, bias, residual);
  return engine.runKernel(Linear, { x, weight, bias: bias ?? undefined, residual }, {});
}

/**
 * activation(x weight^T + bias) (a dense layer and its activation, as a transformer's FFN runs them): x [..., K] ->
 * [..., N]. The same values as biasActivation(linear(x, weight, bias), null, activation); backends that fuse it (cuda:
 * cuBLASLt's GELU epilogue for "gelu_tanh") write the pre-activation and the activation from the product's epilogue,
 * and the gradient reuses the saved pre-activation.
 */
export function linearActivation(x: Tensor, weight: Tensor, bias: Tensor | null, activation: Activation): Tensor {
  const op = "linearActivation";
  checkLinear(op, x, weight, bias, undefined);
  assertActivation(op, activation);
  const [y, preActivation] = engine.runKernel(LinearActivation, { x, weight, bias: bias ?? undefined }, { activation });
  // Kept by autograd's tape when it records (the gradient needs it), else not needed.
  preActivation.dispose();
  return y;
}

/** linearBackward's result: the input's and the weight's gradients. */
export interface LinearGrads {
  dx: Tensor;
  dweight: Tensor;
}

/**
 * A dense layer's input and weight gradients from its output's gradient dy [..., N], its input x [..., K] and weight
 * [N, K]: dx = dy weight (x's shape) and dweight = dy^T x (summed over the leading dims), in one kernel. The same values
 * as the two matmuls; a backend may share work between them (cuda copies dy once where its width is off the 16-byte
 * alignment cuBLAS's fast kernels need, instead of once per product). What autograd runs for a Linear whose input and
 * weight both need gradients.
 */
export function linearBackward(dy: Tensor, x: Tensor, weight: Tensor): LinearGrads {
  const op = "linearBackward";
  checkLinear(op, x, weight, null, undefined);
  assertTensor(op, "dy", dy);
  assertSameBackend(op, [["x", x], ["dy", dy]]);
  assertSameDType(op, ["dy", "x"], dy, x);
  assertShape(op, "dy", dy, [...x.shape.slice(0, -1), weight.shape[0]]);
  const [dx, dweight] = engine.runKernel(LinearBackward, { dy, x, weight }, {});
  return { dx, dweight };
}

function checkLinear(op: string, x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor | undefined): void {
  assertTensor(op, "x", x);
  assertTensor(op, "weight", weight);
  assertMinRank(op, "x", x, 1);
  assertRank(op, "weight", weight, 2);
  assertFloat(op, "x", x);
  if (bias !== null) assertTensor(op, "bias", bias);
  if (residual !== undefined) assertTensor(op, "options.residual", residual);
  assertSameBackend(op, [["x", x], ["weight", weight], ["bias", bias ?? undefined], ["residual", residual]]);
  assertSameDType(op, ["weight", "x"], weight, x);
  const [outFeatures, inFeatures] = weight.shape;
  const features = x.shape[x.rank - 1];
  if (features !== inFeatures) {
    throw new ShapeError(`${op}: x has ${features} features (shape ${formatShape(x.shape)}), weight ${formatShape(weight.shape)} expects ${inFeatures}`);
  }
  if (bias !== null) {
    assertSameDType(op, ["bias", "x"], bias, x);
    if (!shapesEqual(bias.shape, [outFeatures])) throw new ShapeError(`${op}: bias has shape ${formatShape(bias.shape)}, expected [${outFeatures}]`);
  }
  if (residual !== undefined) {
    assertSameDType(op, ["residual", "x"], residual, x);
    const outShape = [...x.shape.slice(0, -1), outFeatures];
    if (!shapesEqual(residual.shape, outShape)) {
      throw new ShapeError(`${op}: residual has shape ${formatShape(residual.shape)}, expected the output's ${formatShape(outShape)}`);
    }
  }
}
