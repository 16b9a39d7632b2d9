import { type BsrPattern, formatShape, Tensor, ValueError } from "@blocksparse/core";
import { BsrMatrix } from "@blocksparse/format";

/** A block-sparse weight in a state dict: its pattern and its blocks [nnzBlocks, R, C]. */
export class BlockSparseWeight {
  constructor(
    readonly pattern: BsrPattern,
    readonly values: Tensor,
  ) {
    const expected = [pattern.nnzBlocks, pattern.blockShape[0], pattern.blockShape[1]];
    if (!(values instanceof Tensor)) throw new ValueError("BlockSparseWeight: values must be a Tensor");
    if (values.shape.length !== 3 || values.shape.some((d, i) => d !== expected[i])) {
      throw new ValueError(
        `BlockSparseWeight: values has shape ${formatShape(values.shape)}, the pattern expects ${formatShape(expected)} ([nnzBlocks, R, C])`,
      );
    }
  }

  /** [rows, cols] of the whole weight. */
  get shape(): readonly [number, number] {
    return this.pattern.shape;
  }

  /** The host copy as a format BsrMatrix (float32 values). */
  toMatrix(): BsrMatrix {
    return BsrMatrix.fromPattern(this.pattern, Float32Array.from(this.values.dataSync()));
  }

  /** Disposes the values tensor. */
  dispose(): void {
    this.values.dispose();
  }
}

/** One entry: a dense tensor, or a block-sparse weight. */
export type StateDictEntry = Tensor | BlockSparseWeight;

/**
 * Names (dotted, as `namedParameters()` gives them) to entries. The tensors share the
 * parameters' buffers (no copy) but later optimizer steps do not change them; dispose them
 * (or create the dict inside `tidy`) when done.
 */
export type StateDict = Map<string, StateDictEntry>;

/** "[10, 4] float32", "block-sparse [64, 32] with 32x32 blocks (nnzBlocks 1)". */
export function describeEntry(entry: StateDictEntry): string {
  if (entry instanceof BlockSparseWeight) {
    const { shape, blockShape, nnzBlocks } = entry.pattern;
    return `block-sparse ${formatShape(shape)} with ${blockShape[0]}x${blockShape[1]} blocks (${nnzBlocks} stored)`;
  }
  return `${formatShape(entry.shape)} ${entry.dtype}`;
}

/** Disposes every tensor of a state dict. */
export function disposeStateDict(stateDict: StateDict): void {
  for (const entry of stateDict.values()) entry.dispose();
}
