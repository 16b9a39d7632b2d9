import { type Tensor, relu } from "@blocksparse/core";
import { Linear, Module } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { CLASSES, IMAGE_SIZE, PIXELS } from "./data";

/**
 * 784 -> hidden -> hidden -> 10 with ReLU. `fc1` and `fc2` are the layers the patcher
 * makes block-sparse; `fc3` (10 outputs, 0.5% of the weights at hidden = 256) stays dense.
 */
export class Mlp extends Module {
  fc1: Module;
  fc2: Module;
  fc3: Module;

  constructor(hidden: number, seed: number) {
    super();
    this.fc1 = new Linear(PIXELS, hidden, { seed });
    this.fc2 = new Linear(hidden, hidden, { seed: seed + 1 });
    this.fc3 = new Linear(hidden, CLASSES, { seed: seed + 2 });
  }

  forward(images: Tensor): Tensor {
    return this.fc3.forward(relu(this.fc2.forward(relu(this.fc1.forward(images)))));
  }
}

/**
 * fc1's block is 32 hidden units x one 28-pixel image row (784 = 28 x 28 has no factor of
 * 32), so a kept block wires 32 units to one row of the digit; fc2 uses the default 32x32.
 */
export const FIRST_LAYER_BLOCK: [number, number] = [32, IMAGE_SIZE];
export const HIDDEN_LAYER_BLOCK: [number, number] = [32, 32];

/** The patcher that makes fc1 and fc2 block-sparse at `density`. */
export function mlpPatcher(density: number): BlockSparseModelPatcher {
  return new BlockSparseModelPatcher()
    .addPattern(/^fc1$/, { density, blockShape: FIRST_LAYER_BLOCK })
    .addPattern(/^fc2$/, { density, blockShape: HIDDEN_LAYER_BLOCK });
}

/** `hidden` must be a positive multiple of 32 so that both block shapes divide the hidden layers. */
export function checkHidden(hidden: number): void {
  if (!Number.isInteger(hidden) || hidden < 32 || hidden % 32 !== 0) {
    const lower = Math.max(32, Math.floor(hidden / 32) * 32);
    throw new RangeError(`hidden: expected a positive multiple of 32 (the block height), got ${hidden}; try ${lower} or ${lower + 32}`);
  }
}
