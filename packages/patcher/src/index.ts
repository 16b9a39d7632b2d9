export const version = "0.1.0";

export { PatchError } from "./errors";
export { type PatchOptions, PatchOptionsSchema, type PatternOptions, PatternOptionsSchema } from "./options";
export { type PatchedLayer, PatchReport, type PatchTotals } from "./report";
export { BlockSparseModelPatcher, type PatchableLayer } from "./patcher";
