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
// Re-exported from the package's main entry (by name: external to this entry's build) so that a backend built on these
// shares core's one copy of its classes: an error a delegated kernel throws is an instance of core's IndexError, and
// JsBackend is core's. A build of its own would carry a second copy of each.
export {
  type BlockNormsArgs,
  type BsrLinearArgs,
  type BsrMatmulArgs,
  type BsrSizes,
  type DelegatedKernel,
  type FloatOutput,
  type MatmulArgs,
  type SampledMatmulArgs,
  blockNormsF32,
  bsrLinearF32,
  bsrMatmulF32,
  delegateToJs,
  delegatedKernels,
  JsBackend,
  JsBuffer,
  jsKernels,
  matmulF32,
  sampledMatmulF32,
} from "@blocksparse/core";
