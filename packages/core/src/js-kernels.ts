/**
 * The js reference kernels, for reuse by other backends (`@blocksparse/core/js-kernels`):
 * - `delegateToJs("Name")`: a table entry for a kernel a backend does not implement; it copies
 *   the inputs out through the backend's own `readSync`, runs the js kernel, and writes the
 *   outputs back through its `allocate`/`write`. Works for host and device backends alike.
 * - `jsKernels` and `JsBackend`: a host backend whose memory is plain typed arrays can extend
 *   `JsBackend` and spread `jsKernels` into its table, replacing entries it speeds up.
 * - The compute functions (`matmulF32`, `bsrLinearF32`, ...): the cache-blocked float32 loops
 *   behind the js product kernels, on plain arrays with explicit sizes and offsets.
 */
export { JsBackend, JsBuffer, type FloatOutput } from "./backends/js/backend";
export { type DelegatedKernel, delegateToJs, delegatedKernels } from "./backends/js/delegate";
export { jsKernels } from "./backends/js/kernels";
export {
  type BlockNormsArgs,
  type BsrLinearArgs,
  type BsrMatmulArgs,
  type BsrSizes,
  type MatmulArgs,
  type SampledMatmulArgs,
  blockNormsF32,
  bsrLinearF32,
  bsrMatmulF32,
  matmulF32,
  sampledMatmulF32,
} from "./backends/js/compute";
