/**
 * The compute core of the js backend's heavy kernels: pure functions on float32 arrays
 * with explicit sizes and offsets (no tensors, no engine), cache-blocked and register-tiled.
 */
export { type BlockNormsArgs, blockNormsF32 } from "./block_norms";
export { type BsrLinearArgs, bsrLinearF32 } from "./bsr_linear";
export { type BsrMatmulArgs, bsrMatmulF32 } from "./bsr_matmul";
export { type MatmulArgs, matmulF32 } from "./matmul";
export { type SampledMatmulArgs, sampledMatmulF32 } from "./sampled_matmul";
export type { BsrSizes } from "./validate";
