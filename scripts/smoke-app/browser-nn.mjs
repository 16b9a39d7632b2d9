import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { BlockSparseLinear, saveStateDict } from "@blocksparse/nn";

console.log(BlockSparseLinear, saveStateDict, BlockSparseModelPatcher);
