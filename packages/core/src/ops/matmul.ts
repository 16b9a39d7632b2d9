import { engine } from "../engine";
import { ShapeError } from "../errors";
import { Matmul } from "../kernel_names";
import { broadcastShapes, formatShape } from "../shape";
import type { Tensor } from "../tensor";
import { assertFloat, assertMinRank, assertSameBackend, assertSameDType, assertTensor } from "./validate";

export interface MatmulOptions {
  transposeA?: boolean;
  transposeB?: boolean;
}

/**
 * Batched matrix product op(a) op(b): a [..., M, K], b [..., K, N] (or transposed with the
 * flags), batch dims broadcast. Both of rank >= 2 and of one float dtype.
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const op = "matmul";
  const { transposeA = false, transposeB = false } = options;
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
