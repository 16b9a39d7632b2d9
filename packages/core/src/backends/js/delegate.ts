import type { Backend, KernelArgs, KernelFunc, TensorInfo } from "../../backend";
import { type BackendKernelName, type KernelOutputs, kernelDeclaration } from "../../kernel_names";
import { sizeOf } from "../../shape";
import { JsBackend } from "./backend";
import { jsKernels } from "./kernels";

/** A kernel entry that runs the js reference kernel in place of the backend's own. */
export type DelegatedKernel<K extends BackendKernelName, B extends Backend = Backend> = KernelFunc<K, B> & {
  /** The backend whose kernel runs instead ("js"). */
  readonly delegatedTo: "js";
};

/**
 * A typed table entry for a kernel a backend does not implement itself: it reads the inputs
 * through the backend's own `readSync`, runs the js reference kernel on host copies, and
 * writes the outputs into buffers from the backend's own `allocate`/`write`. Correct on any
 * backend, never fast: use it to complete a table, then replace entries one by one.
 *
 *   const kernels = { ..., Gather: delegateToJs("Gather") } satisfies CompleteKernelTable<MyBackend>;
 */
export function delegateToJs<K extends BackendKernelName>(kernelName: K): DelegatedKernel<K> {
  const kernel = jsKernels[kernelName] as KernelFunc<K, JsBackend>;
  const delegated = ({ inputs, attrs, backend }: KernelArgs<K, Backend>): KernelOutputs<K> => {
    // A host backend of its own per call: nothing it holds outlives the call.
    const host = new JsBackend();
    const toHost = (info: TensorInfo): TensorInfo => {
      const dataId = host.allocate(info.dtype, sizeOf(info.shape));
      host.write(dataId, backend.readSync(info.dataId));
      return { dataId, shape: info.shape, dtype: info.dtype };
    };
    const hostInputs: Record<string, TensorInfo | TensorInfo[] | undefined> = {};
    for (const [key, value] of Object.entries(inputs as Record<string, TensorInfo | TensorInfo[] | undefined>)) {
      hostInputs[key] = value === undefined ? undefined : Array.isArray(value) ? value.map(toHost) : toHost(value);
    }
    const result: TensorInfo | TensorInfo[] = kernel({ inputs: hostInputs as KernelArgs<K>["inputs"], attrs, backend: host });
    // An in-place call wrote the host copies of some inputs: they go back to the backend's buffers.
    if ((attrs as { inPlace?: boolean }).inPlace === true) {
      for (const key of kernelDeclaration(kernelName)?.inPlaceInputs ?? []) {
        const device = (inputs as Record<string, TensorInfo | TensorInfo[] | undefined>)[key];
        const onHost = hostInputs[key];
        if (device === undefined || onHost === undefined) continue;
        const pairs: [TensorInfo, TensorInfo][] = Array.isArray(device) ? device.map((d, i) => [d, (onHost as TensorInfo[])[i]]) : [[device, onHost as TensorInfo]];
        for (const [d, h] of pairs) backend.write(d.dataId, host.readSync(h.dataId));
      }
    }
    const written: TensorInfo[] = [];
    try {
      for (const info of Array.isArray(result) ? result : [result]) {
        const dataId = backend.allocate(info.dtype, sizeOf(info.shape));
        written.push({ dataId, shape: info.shape, dtype: info.dtype });
        backend.write(dataId, host.readSync(info.dataId));
      }
    } catch (error) {
      for (const info of written) backend.free(info.dataId);
      throw error;
    }
    return (Array.isArray(result) ? written : written[0]) as KernelOutputs<K>;
  };
  return Object.assign(delegated, { delegatedTo: "js" as const });
}

/** The kernels of a table that are delegated to the js backend (what a backend still lacks). */
export function delegatedKernels(kernels: object): BackendKernelName[] {
  return Object.entries(kernels)
    .filter(([, kernel]) => typeof kernel === "function" && (kernel as Partial<DelegatedKernel<BackendKernelName>>).delegatedTo === "js")
    .map(([name]) => name as BackendKernelName);
}
