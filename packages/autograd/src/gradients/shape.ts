import {
  type Tensor,
  fullOn,
  cast,
  concat,
  equal,
  gather,
  indexCopy,
  IndexCopy,
  mul,
  reshape,
  runKernel,
  scatterAdd,
  slice,
  tensorOn,
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

/**
 * Which of IndexCopy's source rows (along `axis`, as 1s and 0s of dy's dtype, shaped to broadcast against them) are
 * the writes that landed: of rows copied to the same index, the kernel keeps one (the last on host backends). Asked
 * of the same kernel, copying each row's position: a device backend that keeps any of them may keep another here
 * than in the forward, where the result is undefined anyway (as PyTorch's index_copy_ with repeated indices).
 */
function landedRows(indices: Tensor, dy: Tensor, axis: number): Tensor {
  const count = indices.shape[0];
  const positions = tensorOn(dy.backend, Int32Array.from({ length: count }, (_, j) => j), [count], "int32");
  const writers = fullOn(dy.backend, [dy.shape[axis]], -1, "int32");
  indexCopy(writers, indices, positions);
  const landed = cast(equal(gather(writers, indices, 0), positions), dy.dtype);
  return reshape(landed, dy.shape.map((_, i) => (i === axis ? count : 1)));
}

export function registerShapeGradients(): void {
  registerGradient("Clone", { gradFunc: ([dy]) => ({ x: () => dy }) });
  // PyTorch's .to(device): the gradient goes back where x is.
  registerGradient("Move", { gradFunc: ([dy], { inputs }) => ({ x: () => dy.to(inputs.x.backend.name) }) });
  // Target keeps dy where it was not written; each source row gets dy at its index if its write is the one that landed.
  registerGradient("IndexCopy", {
    inputsToSave: ["indices"],
    gradFunc: ([dy], { attrs, inputs, saved }) => ({
      target: () => {
        const [out] = runKernel(IndexCopy, { target: dy, indices: saved.indices!, source: fullOn(dy.backend, inputs.source.shape, 0, dy.dtype) }, { axis: attrs.axis });
        return out;
      },
      source: () => mul(gather(dy, saved.indices!, attrs.axis), landedRows(saved.indices!, dy, attrs.axis)),
    }),
  });
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
