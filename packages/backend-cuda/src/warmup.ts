import { BsrPattern, type FloatDType, type KernelArgs, type KernelName, type TensorInfo } from "@blocksparse/core";
import type { CudaBackend } from "./backend";

type Kernel<K extends KernelName> = (args: KernelArgs<K, CudaBackend>) => TensorInfo | TensorInfo[];

/**
 * Runs, once, the kernels a training or inference step calls, on small inputs, so that their first real
 * call does not pay for what CUDA and cuBLAS load lazily (cuBLAS's handle and kernels, each of this
 * addon's kernels, the caching allocator's first segments). Inputs hold whatever the allocator
 * gives: only the loading matters, never the values. Returns the milliseconds it took.
 */
export function warmUp(backend: CudaBackend): number {
  const started = performance.now();
  const made: TensorInfo[] = [];
  const patterns: BsrPattern[] = [];
  const input = (shape: number[], dtype: FloatDType | "int32"): TensorInfo => {
    const info = backend.output(shape, dtype);
    made.push(info);
    return info;
  };
  const run = <K extends KernelName>(name: K, inputs: KernelArgs<K, CudaBackend>["inputs"], attrs: KernelArgs<K, CudaBackend>["attrs"]) => {
    const kernel = backend.kernels[name] as unknown as Kernel<K>;
    const out = kernel({ inputs, attrs, backend });
    made.push(...(Array.isArray(out) ? out : [out]));
  };
  // Not tuned: its small shapes would time every route, and land in the records and any autotune cache file.
  const tuning = backend.setAutotune(false);
  // Every release is attempted, and the autotuning setting put back, even when one fails (a device fault); returns the
  // first failure.
  const releaseAll = (): unknown => {
    let failure: unknown;
    const attempt = (release: () => void) => {
      try {
        release();
      } catch (error) {
        failure ??= error;
      }
    };
    for (const info of made) attempt(() => backend.free(info.dataId));
    for (const pattern of patterns) attempt(() => backend.releasePattern(pattern));
    attempt(() => backend.setAutotune(tuning));
    return failure;
  };
  try {
  for (const dtype of ["bfloat16", "float16", "float32"] as const) {
    // Dense products as Linear's gradients run them: x W^T, dY W and dY^T X. cuBLAS creates its
    // handle here; it still loads a kernel (a few ms) the first time a new shape picks one.
    const a = input([256, 256], dtype);
    const b = input([256, 256], dtype);
    for (const [transposeA, transposeB] of [[false, true], [false, false], [true, false]]) run("Matmul", { a, b }, { transposeA, transposeB });
    // Linear's forward through cuBLASLt (its handle's first matmul), with the bias and with a residual too.
    const bias = input([256], dtype);
    run("Linear", { x: a, weight: b, bias }, {});
    run("Linear", { x: a, weight: b, bias, residual: b }, {});
    run("LinearActivation", { x: a, weight: b, bias }, { activation: "gelu_tanh" });
    // Block-sparse products at the block sizes the tensor-core kernels cover: many tokens, a decoding batch,
    // and a weight gradient long enough to be split.
    for (const block of [32, 64, 128]) {
      const pattern = BsrPattern.random([256, 256], { blockShape: [block, block], density: 0.5, seed: block });
      patterns.push(pattern);
      const values = input([pattern.nnzBlocks, block, block], dtype);
      const bias = input([256], dtype);
      for (const tokens of [8, 512]) {
        const x = input([tokens, 256], dtype);
        run("BsrLinear", { x, values, bias }, { pattern });
        run("BsrMatmul", { dy: x, values }, { pattern });
        run("BsrMatmulActivationBackward", { dy: x, values, pre: x }, { pattern, activation: "gelu" });
      }
      const long = input([4096, 256], dtype);
      run("SampledMatmul", { dy: long, x: long }, { pattern });
    }
    // The elementwise and reduction kernels of a step, over a vector width and a bias-shaped broadcast.
    const x = input([64, 256], dtype);
    const row = input([256], dtype);
    run("Add", { a: x, b: row }, {});
    run("Mul", { a: x, b: x }, {});
    run("Gelu", { x }, { approximate: "none" });
    run("GeluBackward", { dy: x, x }, { approximate: "none" });
    run("Sum", { x }, { axes: [0], keepDims: false });
    run("BiasActivation", { x, bias: row }, { activation: "gelu" });
    run("BiasActivationBackward", { dy: x, x, bias: row }, { activation: "gelu" });
    run("LayerNorm", { x, gamma: row, beta: row }, { epsilon: 1e-5 });
    run("Softmax", { x }, { causal: false });
    run("SoftmaxBackward", { dy: x, y: x }, { log: false, causal: false });
    // Attention at the head dims of the flash kernels (float32 and other dims run the products above).
    for (const d of [32, 64, 128]) {
      const heads = input([2, 64, d], dtype);
      const [out, lse] = [input([2, 64, d], dtype), input([2, 64], "float32")];
      run("Attention", { q: heads, k: heads, v: heads }, { causal: true, scale: 0.125 });
      run("AttentionBackward", { dout: heads, q: heads, k: heads, v: heads, out, lse }, { causal: true, scale: 0.125 });
    }
    for (const to of ["bfloat16", "float16", "float32"] as const) if (to !== dtype) run("Cast", { x }, { dtype: to });
  }
  const p = input([4096], "float32");
  const adam = { lr: 0, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0, decoupledWeightDecay: false };
  run("MultiTensorAdamUpdate", { params: [p], grads: [input([4096], "bfloat16")], m: [p], v: [p] }, { ...adam, steps: [1], copyDType: "bfloat16" });
  // The same with the step count and learning rate on the device (a capturable optimizer), in place.
  const count = input([1], "float32");
  run(
    "MultiTensorAdamUpdate",
    { params: [p], grads: [input([4096], "float32")], m: [p], v: [p], stepCounts: [count], lrValue: count },
    { ...adam, steps: [], copyDType: null, inPlace: true },
  );
  backend.synchronize();
  } catch (error) {
    // The warm-up's own error goes on, not a release's after it.
    releaseAll();
    throw error;
  }
  const failure = releaseAll();
  if (failure !== undefined) throw failure;
  return performance.now() - started;
}
