/**
 * The pointwise kernels of a training step in the addon: a bias and an activation and their backward (BiasActivation,
 * BiasActivationBackward, Gelu, GeluBackward, and the activations of the fused products), LayerNorm and its backward,
 * and the Adam/AdamW update (AdamUpdate, MultiTensorAdamUpdate) in place. float32 math on float32 arrays, vectorized and threaded; half inputs
 * are widened and outputs rounded as the products' are. The js kernels computed these one float64 element at a time,
 * GELU through a float64 erfc: a GELU pass or an optimizer step over a layer took longer than its products.
 */
import { type Activation, type ActivationKernels, type JsBackend, type KernelArgs, type KernelTable, type TensorInfo, jsKernels, sizeOf } from "@blocksparse/core";
import { translateNativeError } from "./errors";
import type { NativeAddon } from "./native";

/** The addon's activation codes. */
const ACTIVATION_CODES: Readonly<Record<Activation, number>> = { relu: 0, gelu: 1, gelu_tanh: 2 };

function native(call: () => void): void {
  try {
    call();
  } catch (error) {
    throw translateNativeError(error);
  }
}

/** A tensor as rows of its last dim: [rows, width]; a scalar is one row of one. */
function rowsOf(shape: readonly number[]): { rows: number; width: number } {
  const width = shape.length === 0 ? 1 : shape[shape.length - 1];
  let size = 1;
  for (const d of shape) size *= d;
  return { rows: width === 0 ? 0 : size / width, width };
}

type PointwiseKernels = Required<
  Pick<KernelTable<JsBackend>, "BiasActivation" | "BiasActivationBackward" | "Gelu" | "GeluBackward" | "LayerNorm" | "LayerNormBackward" | "AdamUpdate" | "MultiTensorAdamUpdate">
>;

type AdamHyperparameters = Pick<KernelArgs<"AdamUpdate", JsBackend>["attrs"], "lr" | "beta1" | "beta2" | "epsilon" | "weightDecay" | "decoupledWeightDecay">;

/** The pointwise kernels over `addon`, and the activations the fused products take from them. */
export function pointwiseKernels(addon: NativeAddon): PointwiseKernels & { activations: ActivationKernels } {
  function forward(backend: JsBackend, x: TensorInfo, bias: TensorInfo | undefined, activation: Activation): TensorInfo {
    const { rows, width } = rowsOf(x.shape);
    const out = backend.floatOutput(x.shape, x.dtype);
    const b = bias ? backend.floats(bias) : null;
    native(() => addon.biasActivation(backend.floats(x), 0, b, 0, out.data, 0, rows, width, ACTIVATION_CODES[activation]));
    return out.commit();
  }

  function backward(backend: JsBackend, dy: TensorInfo, x: TensorInfo, bias: TensorInfo | undefined, activation: Activation, sums: Float64Array | null): TensorInfo {
    const { rows, width } = rowsOf(x.shape);
    const dx = backend.floatOutput(x.shape, x.dtype);
    const b = bias ? backend.floats(bias) : null;
    // Widened one after the other: a half input's floats() lives until the kernel ends, each in its own scratch.
    const g = backend.floats(dy);
    const input = backend.floats(x);
    native(() => addon.biasActivationBackward(g, 0, input, 0, b, 0, dx.data, 0, sums, rows, width, ACTIVATION_CODES[activation]));
    return dx.commit();
  }

  /** One step into float32 arrays in place. */
  function step(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, h: AdamHyperparameters, count: number): void {
    const { lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay } = h;
    native(() =>
      addon.adamUpdate(p, 0, g, 0, m, 0, v, 0, p.length, lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay, 1 - beta1 ** count, 1 - beta2 ** count),
    );
  }

  // The tensors written in place must be float32 storage; a gradient is read through floats() (halves widened).
  const allFloat32 = (...infos: TensorInfo[]) => infos.every((info) => info.dtype === "float32");

  const activations: ActivationKernels = {
    BiasActivation: ({ inputs: { x, bias }, attrs: { activation }, backend }) => forward(backend, x, bias, activation),
    BiasActivationBackward: ({ inputs: { dy, x, bias }, attrs: { activation }, backend }) => {
      const { width } = rowsOf(x.shape);
      const sums = new Float64Array(width);
      const dx = backward(backend, dy, x, bias, activation, sums);
      const dbias = backend.floatOutput([width], x.dtype);
      dbias.data.set(sums);
      return [dx, dbias.commit()];
    },
  };

  return {
    activations,
    ...activations,
    Gelu: ({ inputs: { x }, attrs: { approximate }, backend }) => forward(backend, x, undefined, approximate === "tanh" ? "gelu_tanh" : "gelu"),
    GeluBackward: ({ inputs: { dy, x }, attrs: { approximate }, backend }) => backward(backend, dy, x, undefined, approximate === "tanh" ? "gelu_tanh" : "gelu", null),

    LayerNorm({ inputs: { x, gamma, beta }, attrs: { epsilon }, backend }) {
      const statShape = x.shape.slice(0, -1);
      // Rows of the statistics, also where d is 0 (each row's mean 0 and rstd 1 / sqrt(epsilon), as js gives).
      const [rows, d] = [sizeOf(statShape), x.shape[x.shape.length - 1]];
      const y = backend.floatOutput(x.shape, x.dtype);
      const mean = backend.floatOutput(statShape, "float32");
      const rstd = backend.floatOutput(statShape, "float32");
      const [g, b] = [gamma, beta].map((t) => (t ? backend.floats(t) : null));
      native(() => addon.layerNorm(backend.floats(x), 0, g, 0, b, 0, y.data, 0, mean.data, 0, rstd.data, 0, rows, d, epsilon));
      return [y.commit(), mean.commit(), rstd.commit()];
    },

    LayerNormBackward({ inputs: { dy, x, mean, rstd, gamma }, backend }) {
      const [rows, d] = [sizeOf(x.shape.slice(0, -1)), x.shape[x.shape.length - 1]];
      const dx = backend.floatOutput(x.shape, x.dtype);
      const [gammaSums, betaSums] = [new Float64Array(d), new Float64Array(d)];
      // Widened one after the other, each into its own scratch (halves), as backward() does.
      const grad = backend.floats(dy);
      const input = backend.floats(x);
      const g = gamma ? backend.floats(gamma) : null;
      native(() =>
        addon.layerNormBackward(grad, 0, input, 0, backend.floats(mean), 0, backend.floats(rstd), 0, g, 0, dx.data, 0, gammaSums, betaSums, rows, d),
      );
      const dgamma = backend.floatOutput([d], x.dtype);
      const dbeta = backend.floatOutput([d], x.dtype);
      dgamma.data.set(gammaSums);
      dbeta.data.set(betaSums);
      return [dx.commit(), dgamma.commit(), dbeta.commit()];
    },

    AdamUpdate(args) {
      const { inputs: { param, grad, m, v }, attrs, backend } = args;
      if (!allFloat32(param, m, v)) return jsKernels.AdamUpdate(args);
      const outputs = [param, m, v].map((input) => {
        const out = backend.floatOutput(input.shape, "float32");
        out.data.set(backend.floats(input));
        return out;
      });
      step(outputs[0].data, backend.floats(grad), outputs[1].data, outputs[2].data, attrs, attrs.step);
      return [outputs[0].commit(), outputs[1].commit(), outputs[2].commit()];
    },

    // Natively where every param and state is float32 (the master weights of mixed precision are; a half gradient is
    // widened), the js kernel otherwise. In place, each tensor's storage is updated where it lies.
    MultiTensorAdamUpdate(args) {
      const { inputs, attrs, backend } = args;
      const n = inputs.params.length;
      for (let i = 0; i < n; i++) {
        if (!allFloat32(inputs.params[i], inputs.m[i], inputs.v[i])) return jsKernels.MultiTensorAdamUpdate(args);
      }
      const counts = inputs.stepCounts;
      // Step counts and the learning rate on the device (capturable): read here, when the kernel runs, as the js kernel does.
      const stepOf = (i: number) => (counts === undefined ? attrs.steps[i] : backend.floats(counts[i])[0] + 1);
      const h = inputs.lrValue === undefined ? attrs : { ...attrs, lr: attrs.lr * backend.floats(inputs.lrValue)[0] };
      const copyOf = (stored: Float32Array, shape: readonly number[]): TensorInfo => {
        const copy = backend.floatOutput(shape, attrs.copyDType as "float32" | "float16" | "bfloat16");
        copy.data.set(stored);
        return copy.commit();
      };
      const countOf = (i: number): TensorInfo => {
        const out = backend.floatOutput([...(counts as TensorInfo[])[i].shape], "float32");
        out.data[0] = stepOf(i);
        return out.commit();
      };
      if (attrs.inPlace) {
        const into = (target: TensorInfo, result: TensorInfo) => {
          backend.write(target.dataId, backend.storage(result));
          backend.free(result.dataId);
        };
        for (let i = 0; i < n; i++) {
          const p = backend.storage(inputs.params[i]) as Float32Array;
          step(p, backend.floats(inputs.grads[i]), backend.storage(inputs.m[i]) as Float32Array, backend.storage(inputs.v[i]) as Float32Array, h, stepOf(i));
          if (attrs.copyDType !== null) into((inputs.copies as TensorInfo[])[i], copyOf(p, inputs.params[i].shape));
          if (counts !== undefined) into(counts[i], countOf(i));
        }
        return [];
      }
      const params: TensorInfo[] = [];
      const ms: TensorInfo[] = [];
      const vs: TensorInfo[] = [];
      const copies: TensorInfo[] = [];
      const steps: TensorInfo[] = [];
      for (let i = 0; i < n; i++) {
        const [p, m, v] = [inputs.params[i], inputs.m[i], inputs.v[i]].map((input) => {
          const out = backend.floatOutput(input.shape, "float32");
          out.data.set(backend.floats(input));
          return out;
        });
        step(p.data, backend.floats(inputs.grads[i]), m.data, v.data, h, stepOf(i));
        params.push(p.commit());
        ms.push(m.commit());
        vs.push(v.commit());
        if (attrs.copyDType !== null) copies.push(copyOf(p.data, inputs.params[i].shape));
        if (counts !== undefined) steps.push(countOf(i));
      }
      return [...params, ...ms, ...vs, ...copies, ...steps];
    },
  };
}
