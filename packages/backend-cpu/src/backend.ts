import { BackendError, type CompleteKernelTable, JsBackend, jsKernels, productKernels } from "@blocksparse/core";
import { nativeCompute } from "./compute";
import { loadAddon } from "./loader";
import type { BuildInfo, NativeAddon } from "./native";
import { applyEnvironmentSettings } from "./settings";

/**
 * The native CPU backend. Tensors live in host memory exactly as the js backend stores them (a
 * Float32Array, Uint16Array of half bits or Int32Array per buffer), so every kernel without a native
 * version is the js backend's own, running on cpu tensors with no copy, and the native products read
 * and write the same arrays in place. Matmul, BsrLinear, BsrMatmul and SampledMatmul run in the addon:
 * packed SIMD micro-kernels on a thread pool, float32 compute (half inputs widened, outputs rounded).
 */
export class CpuBackend extends JsBackend {
  override readonly name: string = "cpu";
  override readonly kernels: CompleteKernelTable<JsBackend>;
  readonly addon: NativeAddon;
  /** Where the addon was loaded from. */
  readonly addonPath: string;

  /** Throws a BackendError with the one-line reason when the addon is not here. */
  constructor() {
    super();
    const load = loadAddon();
    if (load.addon === null) throw new BackendError(`the native CPU backend is unavailable: ${load.reason}`);
    this.addon = load.addon;
    this.addonPath = load.path;
    applyEnvironmentSettings();
    // The js kernels run on this backend's buffers directly (same storage), so no kernel needs
    // delegateToJs's copies; the products are replaced by native ones.
    this.kernels = { ...jsKernels, ...productKernels(nativeCompute(this.addon)) } satisfies CompleteKernelTable<JsBackend>;
  }

  /** The micro-kernel, its tile and the thread count in use. */
  get build(): BuildInfo {
    return this.addon.buildInfo();
  }
}
