/**
 * Every kernel, declared once: its name constant, its inputs (tensor infos) and its
 * attributes. Backends implement kernels keyed by these names; ops call them through
 * the engine. Shapes in the comments use `...` for any number of leading dims.
 *
 * Conventions every backend follows (the conformance suite checks them):
 * - Inputs arrive contiguous and row-major; outputs are freshly allocated, contiguous.
 * - Ops validate shapes, dtypes and attributes before a kernel runs: a kernel may assume
 *   valid arguments, except index VALUES held in int32 tensors (see Gather).
 * - float16/bfloat16 kernels accumulate in float32 and round once on store.
 * - Binary and Where kernels broadcast NumPy-style (see `broadcastShapes`).
 * - Saved statistics (LayerNorm's mean/rstd, Attention's lse, BlockNorms) are float32 whatever the input dtype.
 */
import type { TensorInfo } from "./backend";
import type { DType, FloatDType } from "./dtypes";
import type { BsrPattern } from "@blocksparse/format";

// ---------------------------------------------------------------- creation, dtype, shape

/** No inputs. attrs {shape, dtype, value} -> tensor of `shape` filled with `value`. */
export const Fill = "Fill";
/** {x} -> x converted to attrs.dtype (float -> int32 truncates toward zero). */
export const Cast = "Cast";
/**
 * {x} -> same data viewed with attrs.shape. Implemented by the engine (metadata only,
 * the output shares x's buffer); backends never implement it.
 */
export const Reshape = "Reshape";
/**
 * {x} -> a new tensor sharing x's buffer (what `Tensor.clone()` runs). Implemented by the
 * engine (no copy); it is a kernel so that observers see every clone (autograd records it).
 */
export const Clone = "Clone";
/**
 * {x} -> x's values on the backend registered as attrs.backend (what `Tensor.to(name)` runs): a copy through the host,
 * or a new tensor sharing x's buffer when x is there already. Implemented by the engine; a kernel so that observers
 * see every move (autograd records it: the gradient goes back to x's backend).
 */
export const Move = "Move";
/** {x} -> x broadcast NumPy-style to attrs.shape. */
export const BroadcastTo = "BroadcastTo";
/** {x} -> x with dims permuted: out.shape[i] = x.shape[perm[i]]. */
export const Transpose = "Transpose";
/** {x} -> x[begin[i] : begin[i] + size[i]] along every dim (begin/size of x's rank). */
export const Slice = "Slice";
/** {tensors: [...]} -> concatenation along attrs.axis (all same dtype, same other dims). */
export const Concat = "Concat";
/**
 * {x} -> [parts]: x cut along attrs.axis into consecutive parts of attrs.sizes (summing to x.shape[axis]),
 * each a new contiguous tensor. The inverse of Concat; its gradient is one Concat of the parts' gradients
 * (where Slices would each pad theirs to x's size).
 */
export const Split = "Split";
/**
 * {x, indices: int32} -> out[..pre, ...idx, ..post] = x[..pre, indices[...idx], ..post]
 * along attrs.axis. out.shape = x.shape[:axis] + indices.shape + x.shape[axis+1:].
 * An index outside [0, x.shape[axis]) throws IndexError on backends that can check on
 * the host; device backends must never read out of bounds and write zeros instead.
 */
export const Gather = "Gather";
/**
 * The adjoint of Gather: {indices: int32, updates} -> out = zeros(attrs.shape, updates.dtype)
 * with out[..pre, indices[...idx], ..post] += updates[..pre, ...idx, ..post].
 * Out-of-range indices: as for Gather (throw, or skip on device backends).
 */
export const ScatterAdd = "ScatterAdd";
/**
 * {target, indices: int32 [n], source} -> target with target[..pre, indices[j], ..post] = source[..pre, j, ..post]
 * along attrs.axis (PyTorch's index_copy); source.shape is target.shape with n at attrs.axis. With attrs.inPlace the
 * kernel writes target's buffer and returns nothing (for a buffer no other tensor shares: `indexCopy` checks);
 * otherwise it returns the result as one new tensor. Out-of-range indices: as Gather's (host backends throw before
 * writing anything, device backends skip them). Repeated indices: one of their writes lands (the last on the host).
 * Differentiable in both forms: a call with attrs.inPlace is recorded with target as its output.
 */
export const IndexCopy = "IndexCopy";
/** {indices: int32} -> [...indices.shape, depth] of attrs.dtype, 1 at the index, 0 elsewhere (a row of zeros for an index outside [0, depth)). */
export const OneHot = "OneHot";

// ---------------------------------------------------------------- elementwise unary

/** {x} -> -x. float dtypes and int32. */
export const Neg = "Neg";
/** {x} -> |x|. float dtypes and int32. */
export const Abs = "Abs";
/** {x} -> e^x. float dtypes. */
export const Exp = "Exp";
/** {x} -> ln x. float dtypes. */
export const Log = "Log";
/** {x} -> sqrt x. float dtypes. */
export const Sqrt = "Sqrt";
/** {x} -> 1 / sqrt x. float dtypes. */
export const Rsqrt = "Rsqrt";
/** {x} -> tanh x. float dtypes. */
export const Tanh = "Tanh";
/** {x} -> 1 / (1 + e^-x). float dtypes. */
export const Sigmoid = "Sigmoid";
/** {x} -> max(x, 0). float dtypes and int32. */
export const Relu = "Relu";
/** {x} -> x^2. float dtypes and int32. */
export const Square = "Square";
/**
 * {x} -> GELU(x). attrs.approximate "none": x * Phi(x) (erf); "tanh":
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). float dtypes.
 */
export const Gelu = "Gelu";
/** {dy, x} -> dy * GELU'(x), same approximate attr as Gelu. float dtypes. */
export const GeluBackward = "GeluBackward";
/**
 * {x [..., N], bias? [N]} -> act(x + bias), the bias broadcast along the last axis and the sum kept
 * in float32 (not rounded) before the activation; attrs.activation "relu", "gelu" (erf) or
 * "gelu_tanh". The epilogue of a Linear layer and its activation in one pass. float dtypes.
 */
export const BiasActivation = "BiasActivation";
/**
 * {dy, x [..., N], bias? [N]} -> [dx = dy * act'(x + bias), dbias [N] = dx summed over every axis
 * but the last (float32 sums, in x's dtype)]: BiasActivation's gradients in one pass over dy and
 * x. ReLU's derivative at 0 is 0. float dtypes.
 */
export const BiasActivationBackward = "BiasActivationBackward";

// ---------------------------------------------------------------- elementwise binary (broadcasting)

/** {a, b} -> a + b. Same dtype (float or int32). */
export const Add = "Add";
/** {a, b} -> a - b. Same dtype (float or int32). */
export const Sub = "Sub";
/** {a, b} -> a * b. Same dtype (float or int32). */
export const Mul = "Mul";
/** {a, b} -> a / b. Same float dtype. */
export const Div = "Div";
/** {a, b} -> max(a, b) (NaN if either is NaN). Same dtype (float or int32). */
export const Maximum = "Maximum";
/** {a, b} -> min(a, b) (NaN if either is NaN). Same dtype (float or int32). */
export const Minimum = "Minimum";
/** {a, b} -> a ^ b. Same float dtype. */
export const Pow = "Pow";

/** {a, b} -> int32 (1 where a == b, else 0). Same dtype (float or int32). */
export const Equal = "Equal";
/** {a, b} -> int32 (1 where a != b, else 0). */
export const NotEqual = "NotEqual";
/** {a, b} -> int32 (1 where a < b, else 0). */
export const Less = "Less";
/** {a, b} -> int32 (1 where a <= b, else 0). */
export const LessEqual = "LessEqual";
/** {a, b} -> int32 (1 where a > b, else 0). */
export const Greater = "Greater";
/** {a, b} -> int32 (1 where a >= b, else 0). */
export const GreaterEqual = "GreaterEqual";
/** {condition: int32, a, b} -> condition != 0 ? a : b, all three broadcast together. */
export const Where = "Where";

// ---------------------------------------------------------------- reductions

/** {x} -> sum over attrs.axes (sorted, unique, non-negative; may be empty). float or int32. */
export const Sum = "Sum";
/** {x} -> mean over attrs.axes (NaN over an empty extent). float dtypes. */
export const Mean = "Mean";
/** {x} -> max over attrs.axes (each reduced dim has size >= 1; NaN where the group holds a NaN). float or int32. */
export const Max = "Max";
/** {x} -> min over attrs.axes (each reduced dim has size >= 1; NaN where the group holds a NaN). float or int32. */
export const Min = "Min";
/** {x} -> int32 index of the first maximum along attrs.axis (size >= 1), or of the first NaN where there is one. float or int32. */
export const Argmax = "Argmax";

// ---------------------------------------------------------------- normalisation, losses

/**
 * {x} -> softmax along the LAST axis (max-subtracted). float dtypes. attrs.causal (x of rank >= 2,
 * x.shape[-2] = m <= x.shape[-1] = n): row i of each trailing [m, n] matrix keeps only the entries
 * j <= i + n - m (the queries are the last m of n positions, as when decoding with a cache) and
 * writes exactly 0 (log-softmax: -Infinity) at the others, as if they held -Infinity.
 */
export const Softmax = "Softmax";
/** {x} -> log-softmax along the LAST axis (max-subtracted, log-sum-exp). float dtypes. attrs.causal as Softmax. */
export const LogSoftmax = "LogSoftmax";
/**
 * {dy, y} -> dx from the output y of Softmax (attrs.log false: dx = y * (dy - sum(dy * y))) or LogSoftmax (log
 * true: dx = dy - exp(y) * sum(dy)) along the LAST axis, sums in float32, in one pass over each row. attrs.causal
 * as the forward's: the masked entries get dx = 0, and neither their dy nor their y is read. float dtypes.
 */
export const SoftmaxBackward = "SoftmaxBackward";
/**
 * {x [..., D], gamma? [D], beta? [D]} -> [y, mean, rstd]: y = (x - mean) * rstd * gamma + beta
 * over the last axis, rstd = 1 / sqrt(var + epsilon) (biased variance). mean and rstd have
 * shape x.shape[:-1] and dtype float32. gamma/beta, when given, have x's dtype.
 */
export const LayerNorm = "LayerNorm";
/**
 * {dy, x, mean, rstd, gamma?} -> [dx, dgamma [D], dbeta [D]] from LayerNorm's saved
 * statistics (no recomputation). dgamma = sum(dy * xhat), dbeta = sum(dy) over leading dims,
 * computed even when gamma is absent (gamma absent means gamma = 1). All of x's dtype.
 */
export const LayerNormBackward = "LayerNormBackward";
/**
 * {logits [N, C] float, targets [N] int32} -> per-row loss [N] float32 whatever the logits' dtype (half logits are
 * read as they are and summed in float32, as torch.autocast runs cross_entropy, with no float32 copy of them):
 * logsumexp(logits[n]) - logits[n, targets[n]]. Targets outside [0, C): as for Gather.
 */
export const CrossEntropy = "CrossEntropy";
/**
 * {logits [N, C], targets [N] int32, dy [N] float32} -> dlogits [N, C] in the logits' dtype =
 * (softmax(logits[n]) - onehot(targets[n])) * dy[n]. dy carries the scale (1/N for a mean).
 */
export const CrossEntropyBackward = "CrossEntropyBackward";
/**
 * {q [...batch, M, D], k [...batch, N, D], v [...batch, N, D]} -> [out [...batch, M, D] in q's dtype, lse float32
 * [...batch, M]], per [M, D] matrix: out = softmax(attrs.scale * q k^T) v over each row's kept keys, and lse the
 * natural-log log-sum-exp of row i's kept scores attrs.scale * q_i . k_j (max-subtracted), what the backward reads
 * instead of the scores. attrs.causal: row i keeps only the keys j <= i + N - M (M <= N; Softmax's causal rule), so
 * every row keeps key 0; otherwise all N. No [M, N] tensor is returned or needs to be stored (flash attention).
 * Same float dtype, identical batch dims (none for rank 2), N >= 1, D >= 1; M = 0 gives empty outputs. Half types
 * compute in float32 and round out once.
 */
export const Attention = "Attention";
/**
 * {dout, q, k, v, out, lse} -> [dq, dk, dv] (q's, k's and v's shapes, q's dtype): Attention's gradients from its
 * saved out and lse, the scores recomputed. With P = exp(scale * q k^T - lse) (0 at the masked entries):
 * dv = P^T dout, dP = dout v^T, Di = sum_d dout[i, d] * out[i, d], dS = P * (dP - Di), dq = scale * dS k,
 * dk = scale * dS^T q. attrs as the forward's; dout and out have out's shape and dtype, lse is float32. Sums in
 * float32 (half types). M = 0: dq is empty, dk and dv are zeros.
 */
export const AttentionBackward = "AttentionBackward";
/**
 * {qkv [...batch, T, 3, H, D]} -> [out [...batch, T, H, D] in qkv's dtype, lse float32 [...batch, H, T]]: Attention
 * of every sequence and head h with q = qkv[..., 0, h, :], k = qkv[..., 1, h, :], v = qkv[..., 2, h, :] (each
 * [T, D], M = N = T), read in place from the packed rows a fused query/key/value projection writes, and out written
 * in the rows an output projection reads: no [...batch, H, T, D] copies either way. attrs, rules and lse as
 * Attention's (lse per head and position). Float dtypes, T >= 1 unless the batch is empty, H >= 1, D >= 1.
 */
export const PackedAttention = "PackedAttention";
/**
 * {dout [...batch, T, H, D], qkv, out, lse} -> dqkv (qkv's shape and dtype): PackedAttention's gradients, dq, dk and
 * dv written into their places of one packed tensor, as AttentionBackward computes them.
 */
export const PackedAttentionBackward = "PackedAttentionBackward";
/**
 * {q [...batch, M, D], k [...batch, N, D], v [...batch, N, D], positions int32 [M]} -> out [...batch, M, D] in q's
 * dtype: row i of every [M, D] matrix is softmax(attrs.scale * q_i k^T) v over the keys j <= positions[i] (and j < N):
 * attention of new positions over a key/value cache of fixed length whose later entries are not written yet. A row
 * with no key (positions[i] < 0) is zeros. Sums in float32. No gradient (decoding, not training: gradient
 * "unsupported", so a backward through it throws). With newKeys and
 * newValues ([...batch, M, D] each, both or neither) the kernel first writes them into k and v in place at the
 * positions along N, as IndexCopy in place would (positions within [0, N)), then attends: a decoding step's cache
 * writes and its attention in one launch. Called so with attrs.inPlace true, when k and v may be written
 * (cachedAttention checks).
 */
export const CachedAttention = "CachedAttention";

// ---------------------------------------------------------------- dense and block-sparse products

/**
 * {a [...A, M, K], b [...B, K, N]} -> [...broadcast(A, B), M, N]; with transposeA a is
 * [..., K, M], with transposeB b is [..., N, K]. Rank >= 2 both, same float dtype.
 */
export const Matmul = "Matmul";
/**
 * {x [..., K], weight [N, K], bias? [N], residual? [..., N]} -> y [..., N] = x weight^T + bias + residual: a dense
 * layer (torch.nn.functional.linear) with an optional addend of the output's shape (a residual connection), in one
 * kernel where the backend can fuse them (the GEMM's epilogue). Sums in float32. Same float dtype.
 */
export const Linear = "Linear";
/**
 * {dy [..., N], x [..., K], weight [N, K]} -> [dx [..., K] (x's shape) = dy weight, dweight [N, K] = dy^T x summed
 * over the leading dims]: a dense layer's input and weight gradients in one kernel, which a backend may run as one
 * (cuda: the output gradient copied once to an aligned pitch for both products, where its width needs it). Sums in
 * float32. Same float dtype.
 */
export const LinearBackward = "LinearBackward";
/**
 * {x [..., K], weight [N, K], bias? [N]} -> [y = act(z), z = x weight^T + bias], both [..., N]: Linear and
 * BiasActivation (attrs.activation) in one kernel where the backend fuses them (the GEMM's epilogue), z kept for the
 * gradient. Sums in float32; y is the activation of z as stored. Same float dtype.
 */
export const LinearActivation = "LinearActivation";
/**
 * {x [..., cols], values [nnzBlocks, R, C], bias? [rows], residual? [..., rows]} -> y [..., rows] = x W^T + bias +
 * residual, W the [rows, cols] block-sparse matrix of attrs.pattern (blocks row-major), with an optional addend of
 * the output's shape (a residual connection) as Linear takes, in one kernel where the backend can fuse it. Sums in
 * float32. Same float dtype.
 */
export const BsrLinear = "BsrLinear";
/**
 * {x [..., cols], values [nnzBlocks, R, C], bias? [rows]} -> [y = act(z), z = x W^T + bias], both [..., rows]:
 * BsrLinear and BiasActivation (attrs.activation) in one kernel, z kept for the gradient. y is the activation
 * of z as stored (rounded to the dtype), in float32, as BiasActivation over BsrLinear's output computes it.
 * Same float dtype.
 */
export const BsrLinearActivation = "BsrLinearActivation";
/**
 * {dy [..., rows], values [nnzBlocks, R, C]} -> dx [..., cols] = dy W. Same float dtype.
 * Backends typically walk pattern.columnIndex.
 */
export const BsrMatmul = "BsrMatmul";
/**
 * {dy [..., rows], values [nnzBlocks, R, C], pre [..., cols]} -> [dpre [..., cols], dbias [cols]]: the input
 * gradient of a BsrLinear whose input was act(pre) (attrs.activation), taken on through the activation:
 * dpre = (dy W) act'(pre) and dbias = dpre summed over the leading dims (float32 sums, in the dtype), the same
 * values as BiasActivationBackward(BsrMatmul(dy, values), pre) with no bias: dy W rounded to the dtype first.
 * Backends that fuse it never store dy W. Backward-only (autograd runs it for a BsrLinear fed by a
 * BsrLinearActivation). Same float dtype.
 */
export const BsrMatmulActivationBackward = "BsrMatmulActivationBackward";
/**
 * {dy [..., rows], x [..., cols]} -> dW [nnzBlocks, R, C] = (dy^T x) on W's blocks only
 * (leading dims of dy and x flattened together and summed over). Same float dtype.
 */
export const SampledMatmul = "SampledMatmul";
/** {values [nnzBlocks, R, C]} -> float32 [nnzBlocks], the L2 (Frobenius) norm of each block. */
export const BlockNorms = "BlockNorms";

// ---------------------------------------------------------------- optimizer

/**
 * {param, grad, m, v} -> [param', m', v'] (one Adam/AdamW step, step counted from 1):
 *   g = grad + weightDecay * param                     (when !decoupledWeightDecay, L2)
 *   p = param * (1 - lr * weightDecay)                 (when decoupledWeightDecay, AdamW)
 *   m' = beta1 m + (1 - beta1) g;  v' = beta2 v + (1 - beta2) g^2
 *   param' = p - lr * (m' / (1 - beta1^step)) / (sqrt(v' / (1 - beta2^step)) + epsilon)
 * All four of one shape; grad has param's dtype; m and v are any float dtype (kept).
 */
export const AdamUpdate = "AdamUpdate";
/**
 * {params[], grads[], m[], v[]} (n tensors each) -> [params'..., m'..., v'..., copies'...]:
 * AdamUpdate on every tensor of a list in one call (one launch on a GPU), tensor i at step
 * attrs.steps[i]. grads[i] has params[i]'s shape and any float dtype (widened inside), so a
 * half-precision gradient needs no cast; each tensor keeps its own dtypes. When attrs.copyDType
 * is set, the kernel also returns every new param rounded to it (the half-precision weights of
 * float32 masters), n more outputs.
 */
export const MultiTensorAdamUpdate = "MultiTensorAdamUpdate";

// ---------------------------------------------------------------- typed inputs and attributes

type Unary = { x: TensorInfo };
type Binary = { a: TensorInfo; b: TensorInfo };
type NoAttrs = Record<string, never>;
/**
 * CrossEntropy / CrossEntropyBackward: `ignoreIndex` (a negative integer: the ops move a class given as ignoreIndex out
 * of range first) marks rows whose target equals it as left out: loss and gradient 0. Any other target out of range
 * is an IndexError (a device backend's kernel reports it at the next read).
 */
export interface CrossEntropyAttrs {
  ignoreIndex?: number;
}
type Reduce = { axes: number[]; keepDims: boolean };
type One = TensorInfo;
type Three = [TensorInfo, TensorInfo, TensorInfo];
type Spec<I, A, O> = { inputs: I; attrs: A; outputs: O };

export type GeluApproximate = "none" | "tanh";
/** The activations BiasActivation fuses: ReLU, GELU (erf) and GELU's tanh approximation. */
export type Activation = "relu" | "gelu" | "gelu_tanh";
export type BiasActivationAttrs = { activation: Activation };
export type FillAttrs = { shape: number[]; dtype: DType; value: number };
export type CastAttrs = { dtype: DType };
export type ShapeAttrs = { shape: number[] };
/** The registered name of the backend to move to. */
export type MoveAttrs = { backend: string };
export type TransposeAttrs = { perm: number[] };
export type SliceAttrs = { begin: number[]; size: number[] };
export type SplitAttrs = { axis: number; sizes: number[] };
export type AxisAttrs = { axis: number };
export type ScatterAddAttrs = { axis: number; shape: number[] };
export type IndexCopyAttrs = { axis: number; inPlace?: boolean };
export type OneHotAttrs = { depth: number; dtype: DType };
export type GeluAttrs = { approximate: GeluApproximate };
export type ReduceAttrs = Reduce;
export type ArgmaxAttrs = { axis: number; keepDims: boolean };
export type LayerNormAttrs = { epsilon: number };
export type SoftmaxAttrs = { causal: boolean };
export type SoftmaxBackwardAttrs = { log: boolean; causal: boolean };
/** Attention's and AttentionBackward's: causal masking (Softmax's rule) and the factor of the scores q k^T. */
export type AttentionAttrs = { causal: boolean; scale: number };
/** inPlace: newKeys and newValues are given and written into k and v (the op checks they may be). */
export type CachedAttentionAttrs = { scale: number; inPlace?: boolean };
export type MatmulAttrs = { transposeA: boolean; transposeB: boolean };
/** The BsrPattern object itself: never a copy of its arrays. */
export type PatternAttrs = { pattern: BsrPattern };
export type AdamUpdateAttrs = {
  lr: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  decoupledWeightDecay: boolean;
  step: number;
};
export type MultiTensorAdamUpdateAttrs = Omit<AdamUpdateAttrs, "step"> & {
  /**
   * Each tensor's step, counted from 1 (parameters skipped at some step count their own); empty when the
   * `stepCounts` input holds them on the device.
   */
  steps: number[];
  /** A float dtype to also return every new param in, or null. */
  copyDType: DType | null;
  /**
   * Write the new params, m and v into the input buffers (and each param rounded to copyDType into `copies[i]`)
   * and return nothing. Only for buffers no other tensor shares (multiTensorAdamUpdateInPlace checks).
   */
  inPlace?: boolean;
};

/** Inputs, attributes and outputs of every kernel, keyed by kernel name. */
export interface KernelSpecs {
  Fill: Spec<NoAttrs, FillAttrs, One>;
  Cast: Spec<Unary, CastAttrs, One>;
  Reshape: Spec<Unary, ShapeAttrs, One>;
  Clone: Spec<Unary, NoAttrs, One>;
  Move: Spec<Unary, MoveAttrs, One>;
  BroadcastTo: Spec<Unary, ShapeAttrs, One>;
  Transpose: Spec<Unary, TransposeAttrs, One>;
  Slice: Spec<Unary, SliceAttrs, One>;
  Split: Spec<Unary, SplitAttrs, TensorInfo[]>;
  Concat: Spec<{ tensors: TensorInfo[] }, AxisAttrs, One>;
  Gather: Spec<{ x: TensorInfo; indices: TensorInfo }, AxisAttrs, One>;
  ScatterAdd: Spec<{ indices: TensorInfo; updates: TensorInfo }, ScatterAddAttrs, One>;
  IndexCopy: Spec<{ target: TensorInfo; indices: TensorInfo; source: TensorInfo }, IndexCopyAttrs, TensorInfo[]>;
  OneHot: Spec<{ indices: TensorInfo }, OneHotAttrs, One>;

  Neg: Spec<Unary, NoAttrs, One>;
  Abs: Spec<Unary, NoAttrs, One>;
  Exp: Spec<Unary, NoAttrs, One>;
  Log: Spec<Unary, NoAttrs, One>;
  Sqrt: Spec<Unary, NoAttrs, One>;
  Rsqrt: Spec<Unary, NoAttrs, One>;
  Tanh: Spec<Unary, NoAttrs, One>;
  Sigmoid: Spec<Unary, NoAttrs, One>;
  Relu: Spec<Unary, NoAttrs, One>;
  Square: Spec<Unary, NoAttrs, One>;
  Gelu: Spec<Unary, GeluAttrs, One>;
  GeluBackward: Spec<{ dy: TensorInfo; x: TensorInfo }, GeluAttrs, One>;
  BiasActivation: Spec<{ x: TensorInfo; bias?: TensorInfo }, BiasActivationAttrs, One>;
  BiasActivationBackward: Spec<{ dy: TensorInfo; x: TensorInfo; bias?: TensorInfo }, BiasActivationAttrs, [TensorInfo, TensorInfo]>;

  Add: Spec<Binary, NoAttrs, One>;
  Sub: Spec<Binary, NoAttrs, One>;
  Mul: Spec<Binary, NoAttrs, One>;
  Div: Spec<Binary, NoAttrs, One>;
  Maximum: Spec<Binary, NoAttrs, One>;
  Minimum: Spec<Binary, NoAttrs, One>;
  Pow: Spec<Binary, NoAttrs, One>;
  Equal: Spec<Binary, NoAttrs, One>;
  NotEqual: Spec<Binary, NoAttrs, One>;
  Less: Spec<Binary, NoAttrs, One>;
  LessEqual: Spec<Binary, NoAttrs, One>;
  Greater: Spec<Binary, NoAttrs, One>;
  GreaterEqual: Spec<Binary, NoAttrs, One>;
  Where: Spec<{ condition: TensorInfo; a: TensorInfo; b: TensorInfo }, NoAttrs, One>;

  Sum: Spec<Unary, Reduce, One>;
  Mean: Spec<Unary, Reduce, One>;
  Max: Spec<Unary, Reduce, One>;
  Min: Spec<Unary, Reduce, One>;
  Argmax: Spec<Unary, ArgmaxAttrs, One>;

  Softmax: Spec<Unary, SoftmaxAttrs, One>;
  LogSoftmax: Spec<Unary, SoftmaxAttrs, One>;
  SoftmaxBackward: Spec<{ dy: TensorInfo; y: TensorInfo }, SoftmaxBackwardAttrs, One>;
  LayerNorm: Spec<{ x: TensorInfo; gamma?: TensorInfo; beta?: TensorInfo }, LayerNormAttrs, Three>;
  LayerNormBackward: Spec<
    { dy: TensorInfo; x: TensorInfo; mean: TensorInfo; rstd: TensorInfo; gamma?: TensorInfo },
    NoAttrs,
    Three
  >;
  CrossEntropy: Spec<{ logits: TensorInfo; targets: TensorInfo }, CrossEntropyAttrs, One>;
  CrossEntropyBackward: Spec<{ logits: TensorInfo; targets: TensorInfo; dy: TensorInfo }, CrossEntropyAttrs, One>;
  Attention: Spec<{ q: TensorInfo; k: TensorInfo; v: TensorInfo }, AttentionAttrs, [TensorInfo, TensorInfo]>;
  AttentionBackward: Spec<
    { dout: TensorInfo; q: TensorInfo; k: TensorInfo; v: TensorInfo; out: TensorInfo; lse: TensorInfo },
    AttentionAttrs,
    Three
  >;
  PackedAttention: Spec<{ qkv: TensorInfo }, AttentionAttrs, [TensorInfo, TensorInfo]>;
  PackedAttentionBackward: Spec<{ dout: TensorInfo; qkv: TensorInfo; out: TensorInfo; lse: TensorInfo }, AttentionAttrs, One>;
  CachedAttention: Spec<
    { q: TensorInfo; k: TensorInfo; v: TensorInfo; positions: TensorInfo; newKeys?: TensorInfo; newValues?: TensorInfo },
    CachedAttentionAttrs,
    One
  >;

  Matmul: Spec<Binary, MatmulAttrs, One>;
  Linear: Spec<{ x: TensorInfo; weight: TensorInfo; bias?: TensorInfo; residual?: TensorInfo }, NoAttrs, One>;
  LinearActivation: Spec<{ x: TensorInfo; weight: TensorInfo; bias?: TensorInfo }, BiasActivationAttrs, [TensorInfo, TensorInfo]>;
  LinearBackward: Spec<{ dy: TensorInfo; x: TensorInfo; weight: TensorInfo }, NoAttrs, [TensorInfo, TensorInfo]>;
  BsrLinear: Spec<{ x: TensorInfo; values: TensorInfo; bias?: TensorInfo; residual?: TensorInfo }, PatternAttrs, One>;
  BsrLinearActivation: Spec<{ x: TensorInfo; values: TensorInfo; bias?: TensorInfo }, PatternAttrs & BiasActivationAttrs, [TensorInfo, TensorInfo]>;
  BsrMatmul: Spec<{ dy: TensorInfo; values: TensorInfo }, PatternAttrs, One>;
  BsrMatmulActivationBackward: Spec<
    { dy: TensorInfo; values: TensorInfo; pre: TensorInfo },
    PatternAttrs & BiasActivationAttrs,
    [TensorInfo, TensorInfo]
  >;
  SampledMatmul: Spec<{ dy: TensorInfo; x: TensorInfo }, PatternAttrs, One>;
  BlockNorms: Spec<{ values: TensorInfo }, NoAttrs, One>;

  AdamUpdate: Spec<
    { param: TensorInfo; grad: TensorInfo; m: TensorInfo; v: TensorInfo },
    AdamUpdateAttrs,
    Three
  >;
  MultiTensorAdamUpdate: Spec<
    {
      params: TensorInfo[];
      grads: TensorInfo[];
      m: TensorInfo[];
      v: TensorInfo[];
      copies?: TensorInfo[];
      /**
       * float32 scalars, one per tensor: the steps each has taken. The update takes step = count + 1 and returns
       * the new counts (in place: writes them), so a captured step counts its replays.
       */
      stepCounts?: TensorInfo[];
      /** A float32 scalar read when the kernel runs: each tensor's learning rate is attrs.lr times its value. */
      lrValue?: TensorInfo;
    },
    MultiTensorAdamUpdateAttrs,
    TensorInfo[]
  >;
}

export type KernelName = keyof KernelSpecs;
export type KernelInputs<K extends KernelName> = KernelSpecs[K]["inputs"];
export type KernelAttrs<K extends KernelName> = KernelSpecs[K]["attrs"];
export type KernelOutputs<K extends KernelName> = KernelSpecs[K]["outputs"];

// ---------------------------------------------------------------- the catalogue

/**
 * How a kernel's outputs get gradients: "rule" (autograd registers a gradient for it),
 * "none" (its outputs never carry one: integer results, creation, optimizer steps),
 * "backward-only" (it only runs inside other kernels' gradients),
 * "unsupported" (a float result of its float inputs with no gradient, for inference: autograd records it, so its
 * outputs track their inputs' gradients, and a backward that reaches it throws, as PyTorch's "derivative not
 * implemented"; under noGrad it is not recorded).
 */
export type GradientKind = "rule" | "none" | "backward-only" | "unsupported";

/** Where a kernel is documented, tested and implemented (one file per family in each place). */
export type KernelFamily = "shape" | "elementwise" | "reduction" | "nn" | "products" | "optimizer";

/**
 * Kernels of one uniform signature that a backend can implement with one parameterised
 * function: "unary" {x} no attrs, "binary" {a, b} broadcasting, "comparison" {a, b} -> int32 0/1.
 */
export type KernelForm = "unary" | "binary" | "comparison";

/**
 * How many tensors a kernel returns: 1 for a single output, the tuple's length otherwise, or
 * "list" for a kernel whose output count follows its inputs (always returned as an array).
 */
export type OutputCount<K extends KernelName> = K extends KernelName
  ? KernelOutputs<K> extends readonly TensorInfo[]
    ? number extends KernelOutputs<K>["length"]
      ? "list"
      : KernelOutputs<K>["length"]
    : 1
  : never;

/** One kernel's declaration: everything but its typed inputs/attributes (those are in KernelSpecs). */
export interface KernelDeclaration<K extends KernelName = KernelName> {
  readonly family: KernelFamily;
  readonly form?: KernelForm;
  /** Tensors returned; more than one means the op receives an array. */
  readonly outputs: OutputCount<K>;
  readonly gradient: GradientKind;
  /** The dtypes the kernel's main (first float-or-any) input takes; its ops reject the others. */
  readonly dtypes: readonly DType[];
  /** "engine": the engine runs it itself (metadata only); backends leave it out of their table. */
  readonly implementedBy: "engine" | "backend";
  /** The inputs the kernel writes when its attrs say `inPlace: true` (it then returns no tensors). */
  readonly inPlaceInputs?: readonly string[];
  /**
   * Whether captureGraph may record a call (default: always). "never": its attributes carry per-call state (an
   * optimizer's step count and learning rate) that a replay would repeat; `{ requires }`: only when that input is
   * given (the state then lives on the device).
   */
  readonly capture?: "never" | { readonly requires: string };
}

const ANY: readonly DType[] = ["float32", "float16", "bfloat16", "int32"];
const FLOAT: readonly DType[] = ["float32", "float16", "bfloat16"];

const shape = (gradient: GradientKind, dtypes = ANY) =>
  ({ family: "shape", outputs: 1, gradient, dtypes, implementedBy: "backend" }) as const;
const unary = (dtypes: readonly DType[]) =>
  ({ family: "elementwise", form: "unary", outputs: 1, gradient: "rule", dtypes, implementedBy: "backend" }) as const;
const binary = (dtypes: readonly DType[]) =>
  ({ family: "elementwise", form: "binary", outputs: 1, gradient: "rule", dtypes, implementedBy: "backend" }) as const;
const comparison = { family: "elementwise", form: "comparison", outputs: 1, gradient: "none", dtypes: ANY, implementedBy: "backend" } as const;
const reduction = (gradient: GradientKind, dtypes: readonly DType[]) =>
  ({ family: "reduction", outputs: 1, gradient, dtypes, implementedBy: "backend" }) as const;
const nn = <N extends 1 | 2 | 3>(outputs: N, gradient: GradientKind) =>
  ({ family: "nn", outputs, gradient, dtypes: FLOAT, implementedBy: "backend" }) as const;
const product = { family: "products", outputs: 1, gradient: "rule", dtypes: FLOAT, implementedBy: "backend" } as const;

/**
 * Every kernel, declared once, in declaration order. Every list of kernels (the backend
 * table's keys, multi-output kernels, autograd's non-differentiable and backward-only sets,
 * the uniform forms) is derived from it; `satisfies` makes a kernel added to KernelSpecs
 * without an entry here (or with the wrong output count) a compile error.
 */
export const KERNEL_CATALOGUE = {
  Fill: shape("none"),
  Cast: shape("rule"),
  Reshape: { ...shape("rule"), implementedBy: "engine" },
  Clone: { ...shape("rule"), implementedBy: "engine" },
  Move: { ...shape("rule"), implementedBy: "engine" },
  BroadcastTo: shape("rule"),
  Transpose: shape("rule"),
  Slice: shape("rule"),
  Concat: shape("rule"),
  Split: { family: "shape", outputs: "list", gradient: "rule", dtypes: ANY, implementedBy: "backend" },
  Gather: shape("rule"),
  ScatterAdd: shape("rule"),
  IndexCopy: { family: "shape", outputs: "list", gradient: "rule", dtypes: ANY, implementedBy: "backend", inPlaceInputs: ["target"] },
  OneHot: shape("none"),

  Neg: unary(ANY),
  Abs: unary(ANY),
  Exp: unary(FLOAT),
  Log: unary(FLOAT),
  Sqrt: unary(FLOAT),
  Rsqrt: unary(FLOAT),
  Tanh: unary(FLOAT),
  Sigmoid: unary(FLOAT),
  Relu: unary(ANY),
  Square: unary(ANY),
  Gelu: { family: "elementwise", outputs: 1, gradient: "rule", dtypes: FLOAT, implementedBy: "backend" },
  GeluBackward: { family: "elementwise", outputs: 1, gradient: "backward-only", dtypes: FLOAT, implementedBy: "backend" },
  BiasActivation: { family: "elementwise", outputs: 1, gradient: "rule", dtypes: FLOAT, implementedBy: "backend" },
  BiasActivationBackward: { family: "elementwise", outputs: 2, gradient: "backward-only", dtypes: FLOAT, implementedBy: "backend" },

  Add: binary(ANY),
  Sub: binary(ANY),
  Mul: binary(ANY),
  Div: binary(FLOAT),
  Maximum: binary(ANY),
  Minimum: binary(ANY),
  Pow: binary(FLOAT),
  Equal: comparison,
  NotEqual: comparison,
  Less: comparison,
  LessEqual: comparison,
  Greater: comparison,
  GreaterEqual: comparison,
  Where: { family: "elementwise", outputs: 1, gradient: "rule", dtypes: ANY, implementedBy: "backend" },

  Sum: reduction("rule", ANY),
  Mean: reduction("rule", FLOAT),
  Max: reduction("rule", ANY),
  Min: reduction("rule", ANY),
  Argmax: reduction("none", ANY),

  Softmax: nn(1, "rule"),
  LogSoftmax: nn(1, "rule"),
  SoftmaxBackward: nn(1, "backward-only"),
  LayerNorm: nn(3, "rule"),
  LayerNormBackward: nn(3, "backward-only"),
  CrossEntropy: nn(1, "rule"),
  CrossEntropyBackward: nn(1, "backward-only"),
  Attention: nn(2, "rule"),
  AttentionBackward: nn(3, "backward-only"),
  PackedAttention: nn(2, "rule"),
  PackedAttentionBackward: nn(1, "backward-only"),
  // With newKeys and newValues (attrs.inPlace), k and v are written in place.
  CachedAttention: { ...nn(1, "unsupported"), inPlaceInputs: ["k", "v"] },

  Matmul: product,
  Linear: product,
  LinearActivation: { ...product, outputs: 2 },
  LinearBackward: { ...product, outputs: 2, gradient: "backward-only" },
  BsrLinear: product,
  BsrLinearActivation: { ...product, outputs: 2 },
  BsrMatmul: product,
  BsrMatmulActivationBackward: { ...product, outputs: 2, gradient: "backward-only" },
  SampledMatmul: product,
  BlockNorms: product,

  AdamUpdate: { family: "optimizer", outputs: 3, gradient: "none", dtypes: FLOAT, implementedBy: "backend", capture: "never" },
  MultiTensorAdamUpdate: {
    family: "optimizer",
    outputs: "list",
    gradient: "none",
    dtypes: FLOAT,
    implementedBy: "backend",
    inPlaceInputs: ["params", "m", "v", "copies", "stepCounts"],
    capture: { requires: "stepCounts" },
  },
} as const satisfies { readonly [K in KernelName]: KernelDeclaration<K> };

type Catalogue = typeof KERNEL_CATALOGUE;
type NamesWhere<P> = { [K in KernelName]: Catalogue[K] extends P ? K : never }[KernelName];

/** Kernels the engine implements itself (Reshape, Clone, Move). */
export type EngineKernelName = NamesWhere<{ implementedBy: "engine" }>;
/** Kernels every backend's table holds: all of them but the engine's own. */
export type BackendKernelName = Exclude<KernelName, EngineKernelName>;
export type UnaryKernelName = NamesWhere<{ form: "unary" }>;
export type BinaryKernelName = NamesWhere<{ form: "binary" }>;
export type ComparisonKernelName = NamesWhere<{ form: "comparison" }>;

/** The kernel's declaration, or undefined for a name that is not a kernel. */
export function kernelDeclaration(kernelName: string): KernelDeclaration | undefined {
  return Object.hasOwn(KERNEL_CATALOGUE, kernelName) ? KERNEL_CATALOGUE[kernelName as KernelName] : undefined;
}

/** Every kernel name, in declaration order. */
export const KERNEL_NAMES = Object.keys(KERNEL_CATALOGUE) as readonly KernelName[];

function kernelsWhere<N extends KernelName>(test: (declaration: KernelDeclaration) => boolean): readonly N[] {
  return KERNEL_NAMES.filter((name) => test(KERNEL_CATALOGUE[name])) as N[];
}

/** Kernels the engine implements itself; a backend's table leaves them out. */
export const ENGINE_KERNELS = kernelsWhere<EngineKernelName>((k) => k.implementedBy === "engine");
/** Kernels every backend must implement: all of them but the engine's own. */
export const BACKEND_KERNELS = kernelsWhere<BackendKernelName>((k) => k.implementedBy === "backend");
/** The unary elementwise kernels taking {x} and no attrs. */
export const UNARY_KERNELS = kernelsWhere<UnaryKernelName>((k) => k.form === "unary");
/** The arithmetic binary kernels taking {a, b} (broadcasting) and no attrs. */
export const BINARY_KERNELS = kernelsWhere<BinaryKernelName>((k) => k.form === "binary");
/** The comparison kernels taking {a, b} (broadcasting) and returning int32 0/1. */
export const COMPARISON_KERNELS = kernelsWhere<ComparisonKernelName>((k) => k.form === "comparison");
/** Unary and binary kernels that also accept int32 (the rest are float only). */
export const INT32_ELEMENTWISE = kernelsWhere(
  (k) => (k.form === "unary" || k.form === "binary") && k.dtypes.includes("int32"),
);
/** Kernels returning more than one tensor (the op receives an array). */
export const MULTI_OUTPUT_KERNELS = kernelsWhere((k) => k.outputs === "list" || k.outputs > 1);
/** Kernels whose outputs never carry a gradient (integer results, creation, optimizer steps). */
export const NON_DIFFERENTIABLE_KERNELS = kernelsWhere((k) => k.gradient === "none");
/** Kernels that only run inside other kernels' gradients (they need no gradient of their own). */
export const BACKWARD_ONLY_KERNELS = kernelsWhere((k) => k.gradient === "backward-only");
/** Kernels recorded without a gradient: a backward that reaches one throws (inference-only kernels). */
export const GRADIENT_UNSUPPORTED_KERNELS = kernelsWhere((k) => k.gradient === "unsupported");
/** Kernels autograd must hold a gradient rule for. */
export const DIFFERENTIABLE_KERNELS = kernelsWhere((k) => k.gradient === "rule");

export type { FloatDType };
