import {
  type Tensor,
  fullOn,
  cast,
  concat,
  gather,
  reshape,
  scatterAdd,
  slice,
  transpose,
} from "@blocksparse/core";
import { registerGradient } from "../registry";
import { reduceToShape } from "./helpers";

/** `dy` placed at `begin` inside zeros of `shape` (the adjoint of Slice). */
function padInto(dy: Tensor, begin: readonly number[], shape: readonly number[]): Tensor {
  let out = dy;
  for (let axis = 0; axis < shape.length; axis++) {
    const before = begin[axis];
    const after = shape[axis] - begin[axis] - out.shape[axis];
    if (before === 0 && after === 0) continue;
    const parts: Tensor[] = [];
    const zerosOf = (size: number) =>
      fullOn(out.backend, out.shape.map((d, i) => (i === axis ? size : d)), 0, out.dtype);
    if (before > 0) parts.push(zerosOf(before));
    parts.push(out);
    if (after > 0) parts.push(zerosOf(after));
    out = concat(parts, axis);
  }
  return out;
}

export function registerShapeGradients(): void {
  registerGradient("Clone", { gradFunc: ([dy]) => ({ x: () => dy }) });
  registerGradient("Reshape", { gradFunc: ([dy], { inputs }) => ({ x: () => reshape(dy, inputs.x.shape) }) });
  registerGradient("BroadcastTo", { gradFunc: ([dy], { inputs }) => ({ x: () => reduceToShape(dy, inputs.x.shape) }) });
  registerGradient("Transpose", {
    gradFunc: ([dy], { attrs }) => ({
      x: () => {
        const inverse: number[] = [];
        attrs.perm.forEach((axis, i) => {
          inverse[axis] = i;
        });
        return transpose(dy, inverse);
      },
    }),
  });
  registerGradient("Slice", { gradFunc: ([dy], { attrs, inputs }) => ({ x: () => padInto(dy, attrs.begin, inputs.x.shape) }) });
  // The parts' gradients (zeros for a part no gradient reached) joined once, where Slices would pad each.
  registerGradient("Split", { gradFunc: (dys, { attrs }) => ({ x: () => concat([...dys] as Tensor[], attrs.axis) }) });
  registerGradient("Concat", {
    gradFunc: ([dy], { attrs, inputs }) => ({
      tensors: () => {
        let offset = 0;
        return inputs.tensors.map(({ shape }) => {
          const begin = shape.map((_, i) => (i === attrs.axis ? offset : 0));
          offset += shape[attrs.axis];
          return slice(dy, begin, shape);
        });
      },
    }),
  });
  registerGradient("Gather", {
    inputsToSave: ["indices"],
    gradFunc: ([dy], { attrs, inputs, saved }) => ({
      x: () => scatterAdd(saved.indices!, dy, inputs.x.shape, attrs.axis),
    }),
  });
  registerGradient("ScatterAdd", {
    inputsToSave: ["indices"],
    gradFunc: ([dy], { attrs, saved }) => ({ updates: () => gather(dy, saved.indices!, attrs.axis) }),
  });
  registerGradient("Cast", { gradFunc: ([dy], { inputs }) => ({ x: () => cast(dy, inputs.x.dtype) }) });
}
