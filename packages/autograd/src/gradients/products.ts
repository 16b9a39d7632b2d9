import {
  type Tensor,
  add,
  biasActivationBackward,
  bsrLinear,
  bsrMatmul,
  bsrMatmulActivationBackward,
  cast,
  div,
  greater,
  type LinearGrads,
  linearBackward,
  matmul,
  mul,
  reshape,
  sampledMatmul,
  sizeOf,
  where,
} from "@blocksparse/core";
import { registerGradient } from "../registry";
import { reduceToShape } from "./helpers";

/** [..., width] as [rows, width], the leading dims flattened: a dense layer's operands as matrices. */
function rows(t: Tensor): Tensor {
  return reshape(t, [sizeOf(t.shape.slice(0, -1)), t.shape[t.rank - 1]]);
}

/**
 * A dense layer's input and weight gradient thunks from its output's gradient `dy` (a tensor, or a thunk for one):
 * both from one linearBackward kernel when backward wants both, else each from its own matmul.
 */
function denseGradients(dy: Tensor | (() => Tensor), x: Tensor, weight: Tensor, needsGrad: ReadonlySet<string>): [() => Tensor, () => Tensor] {
  const grad = typeof dy === "function" ? dy : () => dy;
  if (needsGrad.has("x") && needsGrad.has("weight")) {
    let both: LinearGrads | undefined;
    const pair = () => {
      both ??= linearBackward(grad(), x, weight);
      return both;
    };
    return [() => pair().dx, () => pair().dweight];
  }
  return [() => reshape(matmul(rows(grad()), weight), x.shape), () => matmul(rows(grad()), rows(x), { transposeA: true })];
}

export function registerProductGradients(): void {
  // C = op(A) op(B): each case's adjoint is again one matmul with transpose flags (no explicit transposes).
  registerGradient("Matmul", {
    inputsToSave: ["a", "b"],
    gradFunc: ([dc], { attrs, saved, inputs }) => {
      const { a, b } = saved as { a: Tensor; b: Tensor };
      const { transposeA, transposeB } = attrs;
      const da = (): Tensor => {
        if (!transposeA) return matmul(dc, b, { transposeB: !transposeB });
        return transposeB ? matmul(b, dc, { transposeA: true, transposeB: true }) : matmul(b, dc, { transposeB: true });
      };
      const db = (): Tensor => {
        if (!transposeB) return matmul(a, dc, { transposeA: !transposeA });
        return transposeA ? matmul(dc, a, { transposeA: true, transposeB: true }) : matmul(dc, a, { transposeA: true });
      };
      return { a: () => reduceToShape(da(), inputs.a.shape), b: () => reduceToShape(db(), inputs.b.shape) };
    },
  });
  // Y = X W^T + b + R (dense): dX = dY W, dW = dY^T X over the leading dims flattened, db = dY summed over them, dR = dY.
  registerGradient("Linear", {
    inputsToSave: ["x", "weight"],
    gradFunc: ([dy], { saved, inputs, needsGrad }) => {
      const [dx, dweight] = denseGradients(dy, saved.x!, saved.weight!, needsGrad);
      return {
        x: dx,
        weight: dweight,
        bias: () => reduceToShape(dy, inputs.bias!.shape),
        residual: () => dy,
      };
    },
  });
  // Y = act(Z), Z = X W^T + b (dense): dZ = dY act'(Z) from the saved Z (one BiasActivationBackward, which also sums
  // db), then Linear's gradients from dZ. A gradient reaching Z itself (its output 1) adds to dZ.
  registerGradient("LinearActivation", {
    inputsToSave: ["x", "weight"],
    outputsToSave: [1],
    // dys[0] and dys[1] are read only when a gradient reached them: unread, no zeros are made for them.
    gradFunc: (dys, { attrs: { activation }, saved, savedOutputs, inputs, outputHasGrad, needsGrad }) => {
      const x = saved.x!;
      const weight = saved.weight!;
      let both: [Tensor, Tensor] | undefined;
      const grads = (): [Tensor, Tensor] => {
        if (both === undefined) {
          const parts: [Tensor, Tensor][] = [];
          if (outputHasGrad[0]) parts.push(biasActivationBackward(dys[0], savedOutputs[1]!, null, activation));
          if (outputHasGrad[1]) parts.push([dys[1], reduceToShape(dys[1], [weight.shape[0]])]);
          both = parts.reduce((sum, part): [Tensor, Tensor] => [add(sum[0], part[0]), add(sum[1], part[1])]);
        }
        return both;
      };
      const [dx, dweight] = denseGradients(() => grads()[0], x, weight, needsGrad);
      return {
        x: dx,
        weight: dweight,
        bias: () => reduceToShape(grads()[1], inputs.bias!.shape),
      };
    },
  });
  // Y = X W^T + b + R: dX = dY W, dW = dY^T X on W's blocks only, db = dY summed over leading dims, dR = dY. When X is the
  // activation output of a BsrLinearActivation and this is its only consumer, backward takes dX on through the
  // activation in one kernel (bsrMatmulActivationBackward: dZ and its sums, dX never stored).
  registerGradient("BsrLinear", {
    inputsToSave: ["x", "values"],
    gradFunc: ([dy], { attrs: { pattern }, saved, inputs }) => ({
      x: () => bsrMatmul(dy, saved.values!, pattern),
      values: () => sampledMatmul(dy, saved.x!, pattern),
      bias: () => reduceToShape(dy, inputs.bias!.shape),
      residual: () => dy,
    }),
    throughActivation: {
      input: "x",
      gradFunc: ([dy], { attrs: { pattern }, saved }, pre, activation) => bsrMatmulActivationBackward(dy, saved.values!, pattern, pre, activation),
    },
  });
  // Y = act(Z), Z = X W^T + b: dZ = dY act'(Z) from the saved Z (one BiasActivationBackward, which also sums
  // db), then BsrLinear's gradients from dZ. A gradient reaching Z itself (its output 1) adds to dZ, and so does
  // one that the consumer of Y took on through the activation itself (preActivationGrad, with its sums).
  registerGradient("BsrLinearActivation", {
    inputsToSave: ["x", "values"],
    outputsToSave: [1],
    activationOutput: { output: 0, pre: 1, activation: (attrs) => attrs.activation },
    // dys[0] and dys[1] are read only when a gradient reached them: unread, no zeros are made for them.
    gradFunc: (dys, { attrs: { pattern, activation }, saved, savedOutputs, inputs, outputHasGrad, preActivationGrad }) => {
      let both: [Tensor, Tensor] | undefined;
      const grads = (): [Tensor, Tensor] => {
        if (both === undefined) {
          const parts: [Tensor, Tensor][] = [];
          if (preActivationGrad) parts.push([preActivationGrad.grad, preActivationGrad.sums]);
          if (outputHasGrad[0] || !preActivationGrad) parts.push(biasActivationBackward(dys[0], savedOutputs[1]!, null, activation));
          if (outputHasGrad[1]) parts.push([dys[1], reduceToShape(dys[1], [pattern.shape[0]])]);
          both = parts.reduce((sum, part): [Tensor, Tensor] => [add(sum[0], part[0]), add(sum[1], part[1])]);
        }
        return both;
      };
      return {
        x: () => bsrMatmul(grads()[0], saved.values!, pattern),
        values: () => sampledMatmul(grads()[0], saved.x!, pattern),
        bias: () => reduceToShape(grads()[1], inputs.bias!.shape),
      };
    },
  });
  // dX = dY W is linear in dY and in W: d(dY) = G W^T applied as bsrLinear, dW = dY^T G on the blocks.
  registerGradient("BsrMatmul", {
    inputsToSave: ["dy", "values"],
    gradFunc: ([g], { attrs: { pattern }, saved }) => ({
      dy: () => bsrLinear(g, saved.values!, pattern),
      values: () => sampledMatmul(saved.dy!, g, pattern),
    }),
  });
  // dW = P o (dY^T X): d(dY) = X G^T (bsrLinear with G as the weight), dX = dY G (bsrMatmul).
  registerGradient("SampledMatmul", {
    inputsToSave: ["dy", "x"],
    gradFunc: ([g], { attrs: { pattern }, saved }) => ({
      dy: () => bsrLinear(saved.x!, g, pattern),
      x: () => bsrMatmul(saved.dy!, g, pattern),
    }),
  });
  // d|v|/dv = v / |v| per block; 0 for an all-zero block (a subgradient). The direction v / |v| (each element at most 1)
  // is taken first, in float32 as the norms: dy / |v| first left the dtype's range for a block of small norm (float16
  // below 1.5e-5 for dy = 1, float32 subnormal), giving inf and, for its zeros, NaN.
  registerGradient("BlockNorms", {
    inputsToSave: ["values"],
    outputsToSave: [0],
    gradFunc: ([dy], { saved, savedOutputs: [norms] }) => ({
      values: () => {
        const values = saved.values!;
        const perBlock = (t: Tensor) => reshape(t, [values.shape[0], 1, 1]);
        const nonzero = greater(norms!, 0);
        const direction = div(cast(values, "float32"), perBlock(where(nonzero, norms!, 1)));
        return cast(mul(direction, perBlock(where(nonzero, dy, 0))), values.dtype);
      },
    }),
  });
}
