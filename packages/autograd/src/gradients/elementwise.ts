import {
  type BinaryKernelName,
  type Tensor,
  biasActivationBackward,
  cast,
  div,
  equal,
  geluBackward,
  greater,
  greaterEqual,
  less,
  lessEqual,
  log,
  mul,
  neg,
  pow,
  square,
  sub,
  where,
} from "@blocksparse/core";
import { type GradContext, registerGradient } from "../registry";
import { reduceToShape, sign } from "./helpers";

type Binary = GradContext<BinaryKernelName>;

/** Gradients of a binary kernel: each computed at the output shape, then summed back to its input's shape. */
function binaryGrads(context: Binary, da: () => Tensor, db: () => Tensor) {
  return {
    a: () => reduceToShape(da(), context.inputs.a.shape),
    b: () => reduceToShape(db(), context.inputs.b.shape),
  };
}

/**
 * Weight of `a` in max(a, b) (min with `loses = greater`), PyTorch's rule: 0 where it loses, 1/2 on ties, else 1.
 * Comparisons with NaN are false, so where either operand is NaN both get the whole gradient, as in torch.
 */
function winnerWeight(a: Tensor, b: Tensor, loses: typeof less): Tensor {
  return sub(sub(1, cast(loses(a, b), a.dtype)), mul(cast(equal(a, b), a.dtype), 0.5));
}

export function registerElementwiseGradients(): void {
  registerGradient("Neg", { gradFunc: ([dy]) => ({ x: () => neg(dy) }) });
  registerGradient("Abs", {
    inputsToSave: ["x"],
    gradFunc: ([dy], { saved }) => ({ x: () => mul(dy, sign(saved.x!)) }),
  });
  registerGradient("Exp", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y] }) => ({ x: () => mul(dy, y!) }),
  });
  registerGradient("Log", {
    inputsToSave: ["x"],
    gradFunc: ([dy], { saved }) => ({ x: () => div(dy, saved.x!) }),
  });
  registerGradient("Sqrt", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y] }) => ({ x: () => div(dy, mul(y!, 2)) }),
  });
  // -dy y^3 / 2, one factor of y at a time: y^3 alone overflows (float16 past y = 40.3) or goes subnormal where it is not.
  registerGradient("Rsqrt", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y] }) => ({ x: () => mul(mul(mul(mul(dy, -0.5), y!), y!), y!) }),
  });
  // In float32, rounded once to dy's dtype (torch's tanh_backward): a half y^2 cancelled against 1 near |y| = 1 (float16
  // y = 1 - 2^-6 gave 2^-5 for 2^-5 - 2^-12). For float32 the casts are clones sharing the buffers.
  registerGradient("Tanh", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y] }) => ({ x: () => cast(mul(cast(dy, "float32"), sub(1, square(cast(y!, "float32")))), dy.dtype) }),
  });
  registerGradient("Sigmoid", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y] }) => ({ x: () => mul(dy, mul(y!, sub(1, y!))) }),
  });
  // The output is saved rather than x: the next op usually saves it too, so the buffer is shared. Zeroed where
  // y <= 0 (torch's threshold_backward), not kept where y > 0: at y = NaN the gradient passes, as in torch.
  registerGradient("Relu", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y] }) => ({ x: () => where(lessEqual(y!, 0), 0, dy) }),
  });
  registerGradient("Square", {
    inputsToSave: ["x"],
    gradFunc: ([dy], { saved }) => ({ x: () => mul(dy, mul(saved.x!, 2)) }),
  });
  registerGradient("Gelu", {
    inputsToSave: ["x"],
    gradFunc: ([dy], { saved, attrs }) => ({ x: () => geluBackward(dy, saved.x!, attrs.approximate) }),
  });

  // One fused kernel gives both gradients; the thunks share its call.
  registerGradient("BiasActivation", {
    inputsToSave: ["x", "bias"],
    gradFunc: ([dy], { saved, attrs }) => {
      let both: [Tensor, Tensor] | undefined;
      const grads = () => {
        both ??= biasActivationBackward(dy, saved.x!, saved.bias ?? null, attrs.activation);
        return both;
      };
      return { x: () => grads()[0], bias: () => grads()[1] };
    },
  });

  registerGradient("Add", { gradFunc: ([dy], c) => binaryGrads(c, () => dy, () => dy) });
  registerGradient("Sub", { gradFunc: ([dy], c) => binaryGrads(c, () => dy, () => neg(dy)) });
  registerGradient("Mul", {
    inputsToSave: ["a", "b"],
    gradFunc: ([dy], c) => binaryGrads(c, () => mul(dy, c.saved.b!), () => mul(dy, c.saved.a!)),
  });
  // d/db a/b = -(a / b) / b, as torch: b^2 leaves the dtype's range first (float16 past |b| = 256), giving 0 or inf.
  registerGradient("Div", {
    inputsToSave: ["a", "b"],
    gradFunc: ([dy], c) => {
      const { a, b } = c.saved as { a: Tensor; b: Tensor };
      return binaryGrads(c, () => div(dy, b), () => mul(neg(dy), div(div(a, b), b)));
    },
  });
  registerGradient("Maximum", {
    inputsToSave: ["a", "b"],
    gradFunc: ([dy], c) => {
      const { a, b } = c.saved as { a: Tensor; b: Tensor };
      return binaryGrads(c, () => mul(dy, winnerWeight(a, b, less)), () => mul(dy, winnerWeight(b, a, less)));
    },
  });
  registerGradient("Minimum", {
    inputsToSave: ["a", "b"],
    gradFunc: ([dy], c) => {
      const { a, b } = c.saved as { a: Tensor; b: Tensor };
      return binaryGrads(c, () => mul(dy, winnerWeight(a, b, greater)), () => mul(dy, winnerWeight(b, a, greater)));
    },
  });
  // d/da a^b = b a^(b-1), taken as 0 where b = 0 (not 0 * inf at a = 0); d/db a^b = a^b ln a, taken as 0 where a = 0
  // and b >= 0 (PyTorch's conventions).
  registerGradient("Pow", {
    inputsToSave: ["a", "b"],
    outputsToSave: [0],
    gradFunc: ([dy], c) => {
      const { a, b } = c.saved as { a: Tensor; b: Tensor };
      const y = c.savedOutputs[0]!;
      return binaryGrads(
        c,
        () => mul(dy, where(equal(b, 0), 0, mul(b, pow(a, sub(b, 1))))),
        () => {
          const zeroBase = mul(cast(equal(a, 0), "int32"), cast(greaterEqual(b, 0), "int32"));
          return mul(dy, where(zeroBase, 0, mul(y, log(a))));
        },
      );
    },
  });
  registerGradient("Where", {
    inputsToSave: ["condition"],
    gradFunc: ([dy], c) => {
      const condition = c.saved.condition!;
      return {
        a: () => reduceToShape(where(condition, dy, 0), c.inputs.a.shape),
        b: () => reduceToShape(where(condition, 0, dy), c.inputs.b.shape),
      };
    },
  });
}
