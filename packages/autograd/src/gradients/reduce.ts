import { type Tensor, add, broadcastTo, cast, div, equal, mul, notEqual, reshape, sizeOf, sum } from "@blocksparse/core";
import { registerGradient } from "../registry";
import { keptShape } from "./helpers";

export function registerReduceGradients(): void {
  registerGradient("Sum", {
    gradFunc: ([dy], { attrs, inputs }) => ({
      x: () => broadcastTo(reshape(dy, keptShape(inputs.x.shape, attrs.axes)), inputs.x.shape),
    }),
  });
  // A half dy is divided in float32 and rounded once, as torch divides by its integer numel: the count as a scalar of
  // dy's dtype rounds (bfloat16 past 256, float16 past 2048), giving 1/256 for a mean over 257 elements.
  registerGradient("Mean", {
    gradFunc: ([dy], { attrs, inputs }) => ({
      x: () => {
        const { shape } = inputs.x;
        const count = sizeOf(attrs.axes.map((axis) => shape[axis]));
        const kept = reshape(dy, keptShape(shape, attrs.axes));
        const share = dy.dtype === "float32" ? div(kept, count) : cast(div(cast(kept, "float32"), count), dy.dtype);
        return broadcastTo(share, shape);
      },
    }),
  });
  // The gradient is shared evenly between tied extrema (PyTorch's amax/amin rule). A group holding NaN has NaN as its
  // extremum, which equals nothing: its gradient goes to its NaN elements, shared evenly, as torch.max and torch.min
  // give it (x == y alone gave 0 / 0 = NaN to every element of the group). The ties are counted in int32 and each share
  // taken in float32, rounded once to x's dtype, as torch divides by its integer mask.sum(): a count in a half dtype
  // rounds (bfloat16 past 256, float16 past 2048) and overflows (float16 past 65504: every share 0).
  for (const kernel of ["Max", "Min"] as const) {
    registerGradient(kernel, {
      inputsToSave: ["x"],
      outputsToSave: [0],
      gradFunc: ([dy], { attrs, saved, savedOutputs }) => ({
        x: () => {
          const x = saved.x as Tensor;
          const kept = keptShape(x.shape, attrs.axes);
          const hits = add(equal(x, reshape(savedOutputs[0]!, kept)), notEqual(x, x));
          const ties = cast(sum(hits, attrs.axes, true), "float32");
          const share = div(cast(reshape(dy, kept), "float32"), ties);
          return cast(mul(cast(hits, "float32"), share), x.dtype);
        },
      }),
    });
  }
}
