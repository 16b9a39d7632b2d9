import { type Tensor, add, arange, reshape, slice, tidy } from "@blocksparse/core";
import { Embedding, LayerNorm, Linear, Module, Sequential, TransformerBlock } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";

export interface CharTransformerOptions {
  vocabSize: number;
  /** Longest input the position table covers. */
  context: number;
  dModel: number;
  nHeads: number;
  layers: number;
  seed: number;
}

/**
 * A GPT-style character model: token + position embeddings, `layers` pre-norm
 * TransformerBlocks (named blocks.0, blocks.1, ...), a final LayerNorm and a linear head.
 */
export class CharTransformer extends Module {
  readonly context: number;
  tokens: Embedding;
  positions: Embedding;
  blocks: Sequential;
  lnF: LayerNorm;
  head: Linear;

  constructor(options: CharTransformerOptions) {
    super();
    const { vocabSize, context, dModel, nHeads, layers, seed } = options;
    this.context = context;
    this.tokens = new Embedding(vocabSize, dModel, { seed });
    this.positions = new Embedding(context, dModel, { seed: seed + 1 });
    const blocks = Array.from({ length: layers }, (_, i) => new TransformerBlock({ dModel, nHeads, seed: seed + 10 + i }));
    this.blocks = new Sequential(...blocks);
    this.lnF = new LayerNorm(dModel);
    this.head = new Linear(dModel, vocabSize, { seed: seed + 2 });
  }

  /** ids: int32 [B, T] (or one sequence, [T]) with T <= context -> logits [B, T, vocabSize] (or [T, vocabSize]). */
  forward(ids: Tensor): Tensor {
    if (ids.rank !== 1 && ids.rank !== 2) throw new RangeError(`CharTransformer: ids have shape [${ids.shape}], expected [B, T] or [T]`);
    const length = ids.shape[ids.rank - 1];
    if (length > this.context) throw new RangeError(`CharTransformer: input has ${length} positions, the model covers ${this.context}`);
    return tidy(() => {
      const x = add(this.tokens.forward(ids), this.positions.forward(arange(0, length, 1, "int32")));
      return this.head.forward(this.lnF.forward(this.blocks.forward(x)));
    });
  }

  /** The logits of the last position only: [B, vocabSize] for ids [B, T], [vocabSize] for ids [T]. */
  lastLogits(ids: Tensor): Tensor {
    return tidy(() => {
      const logits = this.forward(ids);
      // [B] for batched ids, [] for one sequence: the positions and the vocabulary come after it.
      const batch = logits.shape.slice(0, -2);
      const [length, vocab] = logits.shape.slice(-2);
      return reshape(slice(logits, [...batch.map(() => 0), length - 1, 0], [...batch, 1, vocab]), [...batch, vocab]);
    });
  }
}

/** The feed-forward layers of every block: blocks.0.mlp.fc1, blocks.0.mlp.fc2, ... */
export const FEED_FORWARD_PATTERN = /^blocks\.\d+\.mlp\.fc[12]$/;

export function feedForwardPatcher(density: number, blockShape: [number, number]): BlockSparseModelPatcher {
  return new BlockSparseModelPatcher().addPattern(FEED_FORWARD_PATTERN, { density, blockShape });
}
