import { BsrPattern, concat, formatArg, formatShape, fullOn, gather, shapesEqual, Tensor, tensorOn, tidy, ValueError } from "@blocksparse/core";

/**
 * For each block of `next`, its index in `previous` (same block row and column), or -1
 * where `next` has a block that `previous` lacks. Another shape or block shape is a ValueError naming `where`.
 */
export function blockSources(previous: BsrPattern, next: BsrPattern, where = "blockSources"): Int32Array {
  if (!(previous instanceof BsrPattern && next instanceof BsrPattern)) throw new ValueError(`${where}: previous and next must be BsrPatterns`);
  if (!shapesEqual(next.shape, previous.shape) || !shapesEqual(next.blockShape, previous.blockShape)) {
    throw new ValueError(
      `${where}: the pattern is [${next.shape}] with ${next.blockShape.join("x")} blocks, expected [${previous.shape}] with ${previous.blockShape.join("x")} blocks`,
    );
  }
  const slotOf = new Int32Array(previous.blockRows * previous.blockCols).fill(-1);
  const { blockRow, blockCol } = previous.coordinates;
  for (let k = 0; k < previous.nnzBlocks; k++) slotOf[blockRow[k] * previous.blockCols + blockCol[k]] = k;
  const sources = new Int32Array(next.nnzBlocks);
  const coordinates = next.coordinates;
  for (let k = 0; k < next.nnzBlocks; k++) sources[k] = slotOf[coordinates.blockRow[k] * next.blockCols + coordinates.blockCol[k]];
  return sources;
}

/**
 * Blocks [sources.length, R, C] taken from `values` [n, R, C] where sources[k] >= 0, and
 * from `fresh` (one block per -1, in order; zeros when absent) elsewhere. Runs on the
 * values' backend with two kernels (concat, gather), whatever the number of blocks. A source
 * other than -1 or an index of `values`, or `fresh` of another count, block shape or dtype, is a ValueError.
 */
export function remapBlocks(values: Tensor, sources: Int32Array, fresh?: Tensor): Tensor {
  if (!(values instanceof Tensor && values.rank === 3 && values.isFloat)) throw new ValueError("remapBlocks: values must be float blocks [n, R, C]");
  const [count, blockHeight, blockWidth] = values.shape;
  let newBlocks = 0;
  // -1 marks a new block; anything else (-2, 1.5 in a plain array, which the index array would truncate) is not an index.
  for (const source of sources instanceof Int32Array || Array.isArray(sources) ? sources : [Number.NaN]) {
    if (!(Number.isInteger(source) && source >= -1 && source < count)) throw new ValueError(`remapBlocks: source ${source} is not -1 or one of the ${count} blocks`);
    if (source < 0) newBlocks++;
  }
  const freshShape = [newBlocks, blockHeight, blockWidth];
  if (fresh !== undefined && !(fresh instanceof Tensor && shapesEqual(fresh.shape, freshShape) && fresh.dtype === values.dtype)) {
    throw new ValueError(`remapBlocks: fresh must be ${values.dtype} blocks ${formatShape(freshShape)} (one per new block)`);
  }
  return tidy(() => {
    const indices = new Int32Array(sources.length);
    let next = count;
    for (let k = 0; k < sources.length; k++) indices[k] = sources[k] >= 0 ? sources[k] : next++;
    const extra = newBlocks === 0 ? null : (fresh ?? fullOn(values.backend, [newBlocks, blockHeight, blockWidth], 0, values.dtype));
    const pool = extra ? concat([values, extra], 0) : values;
    return gather(pool, tensorOn(values.backend, indices, [indices.length], "int32"), 0);
  });
}

/** A pattern of exactly max(1, round(density * blocks)) blocks chosen uniformly (seeded). */
export function randomPattern(shape: readonly [number, number], blockShape: readonly [number, number], density: number, seed: number): BsrPattern {
  const total = (shape[0] / blockShape[0]) * (shape[1] / blockShape[1]);
  const count = blockCountFor(density, total);
  return BsrPattern.random(shape, { blockShape, density: count / total, seed });
}

/** Blocks kept at `density` (in (0, 1]) out of `total`: round(density * total), at least one (none of none). */
export function blockCountFor(density: number, total: number): number {
  if (!(density > 0 && density <= 1 && Number.isSafeInteger(total) && total >= 0)) {
    throw new ValueError(`blockCountFor: density must be in (0, 1] and total a block count, got ${formatArg(density)}, ${formatArg(total)}`);
  }
  return Math.min(total, Math.max(1, Math.round(density * total)));
}
