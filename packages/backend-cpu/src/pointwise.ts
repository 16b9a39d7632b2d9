/**
 * The pointwise kernels of a training step in the addon: a bias and an activation and their backward (BiasActivation,
 * BiasActivationBackward, Gelu, GeluBackward, and the activations of the fused products), LayerNorm and its backward,
 * and the Adam/AdamW update (AdamUpdate, MultiTensorAdamUpdate) in place. float32 math on float32 arrays, vectorized and threaded; half inputs
 * are widened and outputs rounded as the products' are. The js kernels computed these one float64 element at a time,
 * GELU through a float64 erfc: a GELU pass or an optimizer step over a layer took longer than its products.
 */
import {
  type Activation,
  type ActivationKernels,
  adamKernels,
  type JsBackend,
  jsAdamStep,
  jsKernels,
  type KernelArgs,
  type KernelTable,
  reduceShape,
  type TensorInfo,
  sizeOf,
} from "@blocksparse/core";
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
  Pick<
    KernelTable<JsBackend>,
    "BiasActivation" | "BiasActivationBackward" | "Gelu" | "GeluBackward" | "LayerNorm" | "LayerNormBackward" | "AdamUpdate" | "MultiTensorAdamUpdate" | "Sum" | "Mean"
  >
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

  /**
   * Sum or Mean of a float tensor over its leading axes (a bias gradient's column sums) in the addon: each column's
   * float64 sum in the rows' order, as the js kernel adds, rounded to float32 and then to a half dtype as its output
   * is, so the same bits; anything else is the js kernel's.
   */
  function leadingSums(backend: JsBackend, x: TensorInfo, axes: readonly number[], keepDims: boolean, mean: boolean): TensorInfo | null {
    const leading = [...axes].sort((a, b) => a - b).every((axis, i) => axis === i);
    if (x.dtype === "int32" || axes.length === 0 || !leading || sizeOf(x.shape) === 0) return null;
    const [rows, width] = [sizeOf(x.shape.slice(0, axes.length)), sizeOf(x.shape.slice(axes.length))];
    const out = backend.floatOutput(reduceShape(x.shape, axes, keepDims), x.dtype);
    native(() => addon.sumLeading(backend.floats(x), 0, rows, width, mean, out.data, 0));
    return out.commit();
  }

  return {
    activations,
    ...activations,
    Sum: (args) => leadingSums(args.backend, args.inputs.x, args.attrs.axes, args.attrs.keepDims, false) ?? jsKernels.Sum(args),
    Mean: (args) => leadingSums(args.backend, args.inputs.x, args.attrs.axes, args.attrs.keepDims, true) ?? jsKernels.Mean(args),
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

    ...adamKernels(
      // Into new float32 outputs, the inputs copied there first; the js step for other dtypes.
      (backend, param, grad, m, v, h, count) => {
        if (!allFloat32(param, m, v)) return jsAdamStep(backend, param, grad, m, v, h, count);
        const [pOut, mOut, vOut] = [param, m, v].map((input) => {
          const out = backend.floatOutput(input.shape, "float32");
          out.data.set(backend.floats(input));
          return out;
        });
        step(pOut.data, backend.floats(grad), mOut.data, vOut.data, h, count);
        return { pOut, mOut, vOut };
      },
      // In place, where the storage lies: params and state float32 (the master weights of mixed precision are; a half
      // gradient is widened).
      (backend, param, grad, m, v, h, count) => {
        if (!allFloat32(param, m, v)) return false;
        const [p, ms, vs] = [param, m, v].map((t) => backend.storage(t) as Float32Array);
        step(p, backend.floats(grad), ms, vs, h, count);
        return true;
      },
    ),
  };
}
