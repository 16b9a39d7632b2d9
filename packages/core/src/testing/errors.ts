/** Ops reject bad arguments with typed errors naming the op, the argument and what was expected, on every backend. */
import {
  BackendError,
  BsrPattern,
  CoreError,
  DTypeError,
  type DType,
  DisposedTensorError,
  IndexError,
  ShapeError,
  OutOfMemoryError,
  ValueError,
  adamUpdate,
  arange,
  rand,
  attentionBackward,
  biasActivation,
  multiTensorAdamUpdate,
  multiTensorAdamUpdateInPlace,
  add,
  blockNorms,
  bsrLinear,
  bsrMatmul,
  cast,
  concat,
  crossEntropy,
  div,
  exp,
  full,
  gather,
  layerNorm,
  linear,
  linearActivation,
  matmul,
  max,
  neg,
  oneHot,
  ones,
  reshape,
  sampledMatmul,
  scatterAdd,
  indexCopy,
  cachedAttention,
  slice,
  split,
  stack,
  sum,
  tensor,
  tidy,
  transpose,
  where,
  linearBackward,
  packedAttention,
  packedAttentionBackward,
  scaledDotProductAttention,
  softmax,
  softmaxBackward,
  logSoftmax,
  zeros,
} from "@blocksparse/core";
import { describe, it } from "vitest";
import { type Conformance, expectThrows, inCase } from "./harness";

export function declareErrorTests(suite: Conformance): void {
  const { check } = suite;

  describe("errors name the op, the argument and what was expected", () => {
    const cases: { name: string; run: () => unknown; type: new (...args: never[]) => Error; message: string }[] = [
      { name: "Add: shape mismatch", run: () => add(zeros([2, 3]), zeros([4])), type: ShapeError, message: "add: shapes [2, 3] and [4] cannot be broadcast" },
      { name: "Add: dtype mismatch", run: () => add(zeros([2]), zeros([2], "float16")), type: DTypeError, message: "add: a has dtype float32 but b has float16" },
      { name: "Exp: int32 input", run: () => exp(zeros([2], "int32")), type: DTypeError, message: "exp: x has dtype int32" },
      { name: "Div: int32 inputs", run: () => div(zeros([2], "int32"), ones([2], "int32")), type: DTypeError, message: "div: a has dtype int32" },
      { name: "Where: condition dtype", run: () => where(zeros([2]), zeros([2]), zeros([2])), type: DTypeError, message: "where: condition has dtype float32, expected int32" },
      { name: "Sum: axis out of range", run: () => sum(zeros([2, 3]), 2), type: IndexError, message: "sum: axis 2 is out of range for rank 2" },
      { name: "Max: over empty axis", run: () => max(zeros([2, 0]), 1), type: ShapeError, message: "max: cannot reduce over axis 1 of size 0" },
      { name: "Reshape: size mismatch", run: () => reshape(zeros([2, 3]), [4, 2]), type: ShapeError, message: "reshape: cannot view [2, 3]" },
      { name: "Transpose: bad perm", run: () => transpose(zeros([2, 3]), [0, 0]), type: ShapeError, message: "transpose: perm [0,0]" },
      { name: "Slice: out of range", run: () => slice(zeros([2, 3]), [0, 2], [1, 2]), type: IndexError, message: "slice: size[1] = 2 from 2 exceeds dim 3" },
      { name: "Split: sizes do not sum to the dim", run: () => split(zeros([2, 5]), [2, 2], 1), type: ShapeError, message: "split: sizes [2, 2] sum to 4, but dim 1 of x [2, 5] is 5" },
      { name: "Split: parts do not divide the dim", run: () => split(zeros([2, 5]), 2, 1), type: ValueError, message: "split: 2 equal parts do not divide dim 1" },
      { name: "Concat: dims differ", run: () => concat([zeros([2, 3]), zeros([3, 3])], 1), type: ShapeError, message: "concat: tensors[1] has shape [3, 3]" },
      { name: "Gather: float indices", run: () => gather(zeros([3, 2]), zeros([2])), type: DTypeError, message: "gather: indices has dtype float32, expected int32" },
      { name: "ScatterAdd: updates shape", run: () => scatterAdd(tensor([0, 1], [2], "int32"), zeros([3, 4]), [5, 4]), type: ShapeError, message: "scatterAdd: updates has shape [3, 4], expected [2, 4]" },
      { name: "IndexCopy: source shape", run: () => indexCopy(zeros([4, 3]), tensor([0, 1], [2], "int32"), zeros([2, 2])), type: ShapeError, message: "indexCopy: source has shape [2, 2], expected [2, 3]" },
      { name: "IndexCopy: source dtype", run: () => indexCopy(zeros([4, 3]), tensor([0], [1], "int32"), zeros([1, 3], "int32")), type: DTypeError, message: "indexCopy: source has dtype int32" },
      // Indices out of range: host backends throw before they run; device backends find them in the kernel and throw at
      // the next read, so each case reads its result.
      { name: "Gather: an index out of range", run: () => gather(zeros([3, 2]), tensor([0, 3], [2], "int32")).dataSync(), type: IndexError, message: "gather: index 3 at position 1 is out of range [0, 3)" },
      {
        name: "ScatterAdd: an index out of range",
        run: () => scatterAdd(tensor([-1, 2], [2], "int32"), ones([2, 2]), [3, 2]).dataSync(),
        type: IndexError,
        message: "scatterAdd: index -1 at position 0 is out of range [0, 3)",
      },
      {
        name: "IndexCopy: an index out of range",
        run: () => {
          const target = zeros([4, 3]);
          indexCopy(target, tensor([1, 4], [2], "int32"), ones([2, 3]));
          return target.dataSync();
        },
        type: IndexError,
        message: "indexCopy: index 4 at position 1 is out of range [0, 4)",
      },
      {
        name: "CrossEntropy: a target out of range that is not ignoreIndex",
        run: () => crossEntropy(zeros([3, 5]), tensor([0, -100, -1], [3], "int32"), { ignoreIndex: -100, reduction: "none" }).dataSync(),
        type: IndexError,
        message: "crossEntropy: target -1 at row 2 is out of range [0, 5)",
      },
      {
        // A class as ignoreIndex is moved to -2^31 for the kernels: a target of -2^31 itself was left out with it.
        name: "CrossEntropy: a target of -2^31 where ignoreIndex is a class",
        run: () => crossEntropy(zeros([3, 5]), tensor([0, 1, -(2 ** 31)], [3], "int32"), { ignoreIndex: 0 }).dataSync(),
        type: IndexError,
        message: "at row 2 is out of range [0, 5)",
      },
      {
        name: "CrossEntropy: a target past the classes",
        run: () => crossEntropy(zeros([2, 5]), tensor([5, 0], [2], "int32"), "none").dataSync(),
        type: IndexError,
        message: "crossEntropy: target 5 at row 0 is out of range [0, 5)",
      },
      { name: "IndexCopy: indices rank", run: () => indexCopy(zeros([4, 3]), tensor([0, 1], [1, 2], "int32"), zeros([2, 3])), type: ShapeError, message: "indexCopy: indices" },
      { name: "CachedAttention: positions shape", run: () => cachedAttention(zeros([2, 4]), zeros([3, 4]), zeros([3, 4]), tensor([0], [1], "int32")), type: ShapeError, message: "cachedAttention: positions has shape [1], expected [2]" },
      { name: "CachedAttention: positions dtype", run: () => cachedAttention(zeros([2, 4]), zeros([3, 4]), zeros([3, 4]), zeros([2])), type: DTypeError, message: "cachedAttention: positions has dtype float32, expected int32" },
      { name: "CachedAttention: key dims", run: () => cachedAttention(zeros([2, 4]), zeros([3, 5]), zeros([3, 5]), tensor([0, 1], [2], "int32")), type: ShapeError, message: "cachedAttention: q [2, 4] and k [3, 5] must have the same last dim" },
      { name: "CachedAttention: newKeys alone", run: () => cachedAttention(zeros([1, 4]), zeros([3, 4]), zeros([3, 4]), tensor([0], [1], "int32"), { newKeys: zeros([1, 4]) }), type: ValueError, message: "cachedAttention: newKeys and newValues go together, got only newKeys" },
      { name: "CachedAttention: newKeys shape", run: () => cachedAttention(zeros([1, 4]), zeros([3, 4]), zeros([3, 4]), tensor([0], [1], "int32"), { newKeys: zeros([2, 4]), newValues: zeros([1, 4]) }), type: ShapeError, message: "cachedAttention: newKeys has shape [2, 4], expected [1, 4]" },
      { name: "CachedAttention: newValues dtype", run: () => cachedAttention(zeros([1, 4]), zeros([3, 4]), zeros([3, 4]), tensor([0], [1], "int32"), { newKeys: zeros([1, 4]), newValues: zeros([1, 4], "int32") }), type: DTypeError, message: "cachedAttention: newValues has dtype int32" },
      { name: "Linear: features", run: () => linear(zeros([2, 3]), zeros([4, 5])), type: ShapeError, message: "linear: x has 3 features (shape [2, 3]), weight [4, 5] expects 5" },
      { name: "Linear: weight rank", run: () => linear(zeros([2, 3]), zeros([3])), type: ShapeError, message: "linear: weight" },
      { name: "Linear: bias shape", run: () => linear(zeros([2, 3]), zeros([4, 3]), zeros([3])), type: ShapeError, message: "linear: bias has shape [3], expected [4]" },
      { name: "Linear: residual shape", run: () => linear(zeros([2, 3]), zeros([4, 3]), null, { residual: zeros([4, 2]) }), type: ShapeError, message: "linear: residual has shape [4, 2], expected the output's [2, 4]" },
      { name: "Linear: dtype mismatch", run: () => linear(zeros([2, 3]), zeros([4, 3], "float16")), type: DTypeError, message: "linear: weight has dtype float16 but x has float32" },
      { name: "Linear: int32 input", run: () => linear(zeros([2, 3], "int32"), zeros([4, 3], "int32")), type: DTypeError, message: "linear: x has dtype int32" },
      { name: "LinearActivation: activation", run: () => linearActivation(zeros([2, 3]), zeros([4, 3]), null, "tanh" as never), type: ValueError, message: "linearActivation: activation" },
      { name: "LinearActivation: bias shape", run: () => linearActivation(zeros([2, 3]), zeros([4, 3]), zeros([5]), "relu"), type: ShapeError, message: "linearActivation: bias has shape [5], expected [4]" },
      { name: "Matmul: inner dims", run: () => matmul(zeros([2, 3]), zeros([4, 5])), type: ShapeError, message: "matmul: inner dims differ" },
      { name: "Matmul: rank 1", run: () => matmul(zeros([3]), zeros([3, 2])), type: ShapeError, message: "matmul: a must have rank >= 2" },
      { name: "Softmax: causal with more rows than columns", run: () => softmax(zeros([3, 2]), -1, { causal: true }), type: ShapeError, message: "softmax: causal masking needs no more rows than columns in x's last two axes, got x [3, 2]" },
      { name: "Softmax: causal along an inner axis", run: () => softmax(zeros([3, 3]), 0, { causal: true }), type: ValueError, message: "softmax: causal masking works along the last axis" },
      { name: "LogSoftmax: causal on rank 1", run: () => logSoftmax(zeros([3]), -1, { causal: true }), type: ShapeError, message: "logSoftmax: x" },
      { name: "SoftmaxBackward: dy shape", run: () => softmaxBackward(zeros([2, 4]), zeros([2, 3])), type: ShapeError, message: "softmaxBackward: dy has shape [2, 4], expected [2, 3]" },
      { name: "LayerNorm: gamma size", run: () => layerNorm(zeros([2, 4]), ones([3])), type: ShapeError, message: "layerNorm: gamma has shape [3], expected [4]" },
      { name: "CrossEntropy: targets shape", run: () => crossEntropy(zeros([4, 3]), zeros([3], "int32")), type: ShapeError, message: "crossEntropy: targets has shape [3], expected [4]" },
      { name: "CrossEntropy: targets dtype", run: () => crossEntropy(zeros([4, 3]), zeros([4])), type: DTypeError, message: "crossEntropy: targets has dtype float32, expected int32" },
      { name: "CrossEntropy: ignoreIndex not an int32", run: () => crossEntropy(zeros([4, 3]), zeros([4], "int32"), { ignoreIndex: 0.5 }), type: ValueError, message: "crossEntropy: ignoreIndex must be an int32 (e.g. -100, or a pad id), got 0.5" },
      { name: "CrossEntropy: ignoreIndex past int32", run: () => crossEntropy(zeros([4, 3]), zeros([4], "int32"), { ignoreIndex: 2 ** 31 }), type: ValueError, message: "crossEntropy: ignoreIndex must be an int32" },
      { name: "CrossEntropy: reduction", run: () => crossEntropy(zeros([4, 3]), zeros([4], "int32"), { reduction: "avg" as "mean" }), type: ValueError, message: 'crossEntropy: reduction must be "mean", "sum" or "none", got "avg"' },
      {
        name: "Attention: causal with more queries than keys",
        run: () => scaledDotProductAttention(zeros([3, 4]), zeros([2, 4]), zeros([2, 4]), { causal: true }),
        type: ShapeError,
        message: "scaledDotProductAttention: causal masking needs no more queries than keys (rows than columns of the scores), got q [3, 4] and k [2, 4] (3 > 2)",
      },
      {
        name: "Attention: head dims differ",
        run: () => scaledDotProductAttention(zeros([2, 3, 8]), zeros([2, 5, 4]), zeros([2, 5, 4])),
        type: ShapeError,
        message: "scaledDotProductAttention: q [2, 3, 8] and k [2, 5, 4] must have the same last dim (the head dim D), got 8 and 4",
      },
      {
        name: "AttentionBackward: lse dtype",
        run: () => attentionBackward(zeros([3, 4]), zeros([3, 4]), zeros([5, 4]), zeros([5, 4]), zeros([3, 4]), zeros([3], "float16")),
        type: DTypeError,
        message: "attentionBackward: lse has dtype float16, expected float32",
      },
      {
        name: "PackedAttention: qkv without its 3 parts",
        run: () => packedAttention(zeros([2, 5, 2, 4, 8])),
        type: ShapeError,
        message: "packedAttention: qkv [2, 5, 2, 4, 8] must be [...batch, T, 3, H, D] (each position's queries, keys and values side by side), got 2 at dim -3 where 3 belongs",
      },
      { name: "PackedAttention: rank below 4", run: () => packedAttention(zeros([3, 4, 8])), type: ShapeError, message: "packedAttention: qkv" },
      { name: "PackedAttention: scale", run: () => packedAttention(zeros([2, 3, 2, 8]), { scale: Number.NaN }), type: ValueError, message: "packedAttention: scale must be a finite number, got NaN" },
      {
        name: "PackedAttentionBackward: out shape",
        run: () => packedAttentionBackward(zeros([5, 2, 8]), zeros([5, 3, 2, 8]), zeros([5, 16]), zeros([2, 5])),
        type: ShapeError,
        message: "packedAttentionBackward: out has shape [5, 16], expected [5, 2, 8]",
      },
      {
        name: "PackedAttentionBackward: lse shape",
        run: () => packedAttentionBackward(zeros([5, 2, 8]), zeros([5, 3, 2, 8]), zeros([5, 2, 8]), zeros([5, 2])),
        type: ShapeError,
        message: "packedAttentionBackward: lse has shape [5, 2], expected [2, 5]",
      },
      {
        name: "LinearBackward: dy's features",
        run: () => linearBackward(zeros([4, 6]), zeros([4, 3]), zeros([5, 3])),
        type: ShapeError,
        message: "linearBackward: dy has shape [4, 6], expected [4, 5]",
      },
      // stack checked these through concat, whose name the errors carried.
      { name: "Stack: dtypes differ", run: () => stack([zeros([2]), zeros([2], "int32")]), type: DTypeError, message: "stack: tensors[1] has dtype int32, expected float32" },
      // arange made its tensor through tensor(), whose name the errors carried.
      { name: "Arange: an int32 value that is not an integer", run: () => arange(0, 2, 0.5, "int32"), type: ValueError, message: "arange: value 0.5 at index 1 is not a 32-bit integer" },
      { name: "Arange: an int32 value past int32's range", run: () => arange(2 ** 31 - 1, 2 ** 31 + 1, 1, "int32"), type: ValueError, message: "arange: value 2147483648 at index 1 is not a 32-bit integer" },
      { name: "Arange: unknown dtype", run: () => arange(3, undefined, 1, "float64" as DType), type: DTypeError, message: "arange: unknown dtype" },
      { name: "Arange: a step away from stop", run: () => arange(5, 0), type: ValueError, message: "arange: step 1 moves away from stop 0 (start 5)" },
      { name: "Fill: an int32 value past int32's range", run: () => full([2], 3e9, "int32"), type: ValueError, message: "full: value 3000000000 is outside int32's range" },
      { name: "Add: a number past int32's range with an int32 tensor", run: () => add(zeros([2], "int32"), 2 ** 31), type: ValueError, message: "add: b = 2147483648 is outside int32's range" },
      { name: "Reshape: shape not an array", run: () => reshape(zeros([2, 3]), 6 as unknown as number[]), type: ValueError, message: "reshape: shape must be an array, got number" },
      { name: "Slice: begin not an array", run: () => slice(zeros([2, 3]), 1 as unknown as number[]), type: ValueError, message: "slice: begin must be an array, got number" },
      { name: "Transpose: perm not an array", run: () => transpose(zeros([2, 3]), 1 as unknown as number[]), type: ValueError, message: "transpose: perm must be an array, got number" },
      { name: "OneHot: depth", run: () => oneHot(zeros([2], "int32"), 0), type: ValueError, message: "oneHot: depth must be a positive integer" },
      { name: "Cast: unknown dtype", run: () => cast(zeros([2]), "float64" as DType), type: DTypeError, message: "cast: unknown dtype" },
      {
        name: "BsrLinear: features",
        run: () => {
          const pattern = BsrPattern.dense([32, 32], [16, 16]);
          return bsrLinear(zeros([2, 30]), zeros([4, 16, 16]), pattern);
        },
        type: ShapeError,
        message: "bsrLinear: x has 30 features, the weight expects 32",
      },
      {
        name: "BsrLinear: residual shape",
        run: () => bsrLinear(zeros([2, 32]), zeros([4, 16, 16]), BsrPattern.dense([32, 32], [16, 16]), null, { residual: zeros([32, 2]) }),
        type: ShapeError,
        message: "bsrLinear: residual has shape [32, 2], expected the output's [2, 32]",
      },
      {
        name: "BsrLinear: residual dtype",
        run: () => bsrLinear(zeros([2, 32]), zeros([4, 16, 16]), BsrPattern.dense([32, 32], [16, 16]), null, { residual: zeros([2, 32], "float16") }),
        type: DTypeError,
        message: "bsrLinear: residual has dtype float16 but x has float32",
      },
      {
        name: "BsrLinear: values shape",
        run: () => bsrLinear(zeros([2, 32]), zeros([3, 16, 16]), BsrPattern.dense([32, 32], [16, 16])),
        type: ShapeError,
        message: "bsrLinear: values has shape [3, 16, 16], the pattern expects [4, 16, 16]",
      },
      {
        name: "BsrLinear: pattern type",
        run: () => bsrLinear(zeros([2, 32]), zeros([4, 16, 16]), {} as BsrPattern),
        type: ValueError,
        message: "bsrLinear: pattern must be a BsrPattern",
      },
      {
        name: "BsrLinear: bias not a tensor",
        run: () => bsrLinear(zeros([2, 32]), zeros([4, 16, 16]), BsrPattern.dense([32, 32], [16, 16]), 1 as unknown as null),
        type: ValueError,
        message: "bsrLinear: bias must be a Tensor, got number",
      },
      {
        name: "BsrMatmul: dtype",
        run: () => bsrMatmul(zeros([2, 32], "float16"), zeros([4, 16, 16]), BsrPattern.dense([32, 32], [16, 16])),
        type: DTypeError,
        message: "bsrMatmul: dy has dtype float16 but values has float32",
      },
      {
        name: "SampledMatmul: leading dims",
        run: () => sampledMatmul(zeros([2, 32]), zeros([3, 32]), BsrPattern.dense([32, 32], [16, 16])),
        type: ShapeError,
        message: "sampledMatmul: dy [2, 32] and x [3, 32] must have the same leading dims",
      },
      { name: "BlockNorms: rank", run: () => blockNorms(zeros([4, 16])), type: ShapeError, message: "blockNorms: values must be [nnzBlocks, R, C]" },
      { name: "AdamUpdate: shapes", run: () => adamUpdate(zeros([3]), zeros([3]), zeros([4]), zeros([3]), { lr: 0.1, step: 1 }), type: ShapeError, message: "adamUpdate: m has shape [4], expected [3]" },
      { name: "AdamUpdate: step", run: () => adamUpdate(zeros([3]), zeros([3]), zeros([3]), zeros([3]), { lr: 0.1, step: 0 }), type: IndexError, message: "adamUpdate: step must be an integer >= 1" },
      {
        name: "BiasActivation: bias shape",
        run: () => biasActivation(zeros([2, 4]), zeros([3]), "gelu"),
        type: ShapeError,
        message: "biasActivation: bias has shape [3], expected [4]",
      },
      {
        name: "BiasActivation: activation",
        run: () => biasActivation(zeros([2, 4]), null, "swish" as "gelu"),
        type: ValueError,
        message: 'biasActivation: activation must be one of "relu", "gelu", "gelu_tanh", got "swish"',
      },
      {
        name: "MultiTensorAdamUpdate: list lengths",
        run: () => multiTensorAdamUpdate([zeros([3])], [zeros([3])], [], [zeros([3])], { lr: 0.1, steps: [1] }),
        type: ValueError,
        message: "multiTensorAdamUpdate: m has 0 entries, params has 1",
      },
      {
        name: "MultiTensorAdamUpdate: shapes",
        run: () => multiTensorAdamUpdate([zeros([3]), zeros([2])], [zeros([3]), zeros([3])], [zeros([3]), zeros([2])], [zeros([3]), zeros([2])], { lr: 0.1, steps: [1, 1] }),
        type: ShapeError,
        message: "multiTensorAdamUpdate: grads[1] has shape [3], expected [2]",
      },
      {
        name: "MultiTensorAdamUpdate: step",
        run: () => multiTensorAdamUpdate([zeros([3])], [zeros([3])], [zeros([3])], [zeros([3])], { lr: 0.1, steps: [1.5] }),
        type: IndexError,
        message: "multiTensorAdamUpdate: steps[0] must be an integer >= 1",
      },
      {
        name: "MultiTensorAdamUpdate: a step count that is not a float32 scalar",
        run: () => multiTensorAdamUpdate([zeros([3])], [zeros([3])], [zeros([3])], [zeros([3])], { lr: 0.1, steps: [zeros([2])] }),
        type: ValueError,
        message: "multiTensorAdamUpdate: steps[0] must be a step count (float32, one element), got float32 [2]",
      },
      {
        name: "MultiTensorAdamUpdate: an int32 lrValue",
        run: () => multiTensorAdamUpdate([zeros([3])], [zeros([3])], [zeros([3])], [zeros([3])], { lr: 0.1, steps: [zeros([1])], lrValue: zeros([1], "int32") }),
        type: ValueError,
        message: "multiTensorAdamUpdate: lrValue must be the learning rate (float32, one element), got int32 [1]",
      },
      {
        name: "MultiTensorAdamUpdate: copyDType",
        run: () => multiTensorAdamUpdate([zeros([3])], [zeros([3])], [zeros([3])], [zeros([3])], { lr: 0.1, steps: [1], copyDType: "int32" }),
        type: ValueError,
        message: "multiTensorAdamUpdate: copyDType must be a float dtype",
      },
      {
        name: "MultiTensorAdamUpdate: int32 gradient",
        run: () => multiTensorAdamUpdate([zeros([3]), zeros([2])], [zeros([3]), zeros([2], "int32")], [zeros([3]), zeros([2])], [zeros([3]), zeros([2])], { lr: 0.1, steps: [1, 1] }),
        type: DTypeError,
        message: "multiTensorAdamUpdate: grads[1] has dtype int32",
      },
      {
        name: "MultiTensorAdamUpdate: disposed state",
        run: () => {
          const v = zeros([3]);
          v.dispose();
          return multiTensorAdamUpdate([zeros([3])], [zeros([3])], [zeros([3])], [v], { lr: 0.1, steps: [1] });
        },
        type: DisposedTensorError,
        message: "multiTensorAdamUpdate: v[0]",
      },
      {
        name: "MultiTensorAdamUpdateInPlace: copies without copyDType",
        run: () => multiTensorAdamUpdateInPlace([zeros([3])], [zeros([3])], [zeros([3])], [zeros([3])], { lr: 0.1, steps: [1], copies: [zeros([3])] }),
        type: ValueError,
        message: "multiTensorAdamUpdateInPlace: copies must be given exactly when copyDType is",
      },
      {
        name: "MultiTensorAdamUpdateInPlace: copy dtype",
        run: () => multiTensorAdamUpdateInPlace([zeros([3])], [zeros([3])], [zeros([3])], [zeros([3])], { lr: 0.1, steps: [1], copyDType: "bfloat16", copies: [zeros([3])] }),
        type: DTypeError,
        message: "multiTensorAdamUpdateInPlace: copies[0] has dtype float32, expected bfloat16",
      },
      { name: "Matmul: options a number", run: () => matmul(zeros([2, 3]), zeros([3, 2]), 1 as never), type: ValueError, message: "matmul: options must be an object or null, got number" },
      { name: "Softmax: options a string", run: () => softmax(zeros([2, 3]), -1, "causal" as never), type: ValueError, message: "softmax: options must be an object or null, got string" },
      {
        name: "Attention: options a number",
        run: () => scaledDotProductAttention(zeros([2, 4]), zeros([2, 4]), zeros([2, 4]), 0.5 as never),
        type: ValueError,
        message: "scaledDotProductAttention: options must be an object or null, got number",
      },
      { name: "CrossEntropy: options a number", run: () => crossEntropy(zeros([4, 3]), zeros([4], "int32"), 1 as never), type: ValueError, message: "crossEntropy: options must be an object" },
      { name: "AdamUpdate: options null", run: () => adamUpdate(zeros([3]), zeros([3]), zeros([3]), zeros([3]), null as never), type: ValueError, message: "adamUpdate: lr must be a finite number, got undefined" },
      { name: "Rand: low above high", run: () => rand([2], { low: 1, high: 0 }), type: ValueError, message: "rand: low 1 is above high 0" },
      { name: "Rand: infinite bound", run: () => rand([2], { high: Number.POSITIVE_INFINITY }), type: ValueError, message: "rand: high must be a finite number, got Infinity" },
      { name: "Rand: NaN bound", run: () => rand([2], { low: Number.NaN }), type: ValueError, message: "rand: low must be a finite number, got NaN" },
      { name: "Zeros: more elements than 2^53 - 1", run: () => zeros([2 ** 31, 2 ** 31]), type: ShapeError, message: "full: shape [2147483648, 2147483648] has 4611686018427388000 elements, over 2^53 - 1" },
      { name: "Arange: more values than 2^53 - 1", run: () => arange(0, 1e300), type: ShapeError, message: "arange: [0, 1e+300) has 1e+300 elements" },
      { name: "Arange: values past the host's memory", run: () => arange(0, 1e12), type: OutOfMemoryError, message: "arange: cannot allocate 1000000000000 float32 values on the host: out of memory" },
      // Each backend's own out-of-memory error (js: OutOfMemoryError; cpu, cuda: theirs), all BackendErrors.
      { name: "Full: a tensor past the backend's memory", run: () => full([2 ** 44], 1), type: BackendError, message: "" },
      {
        name: "Neg: disposed input",
        run: () => {
          const t = zeros([2]);
          t.dispose();
          return neg(t);
        },
        type: DisposedTensorError,
        message: "was disposed",
      },
    ];
    for (const c of cases) {
      check(c.name, () => {
        inCase(c.name, () => expectThrows(c.run, c.type, c.message));
      });
    }
    check("every error is a CoreError (or the format's own)", () => {
      expectThrows(() => add(zeros([2]), zeros([3])), CoreError);
    });
    it.skipIf(suite.backendName === "js")("mixing backends is refused (needs a second backend: skipped on js itself)", () => {
      const here = zeros([2]);
      const onJs = tidy(() => zeros([2]).to("js"));
      try {
        expectThrows(() => add(here, onJs), BackendError, `add: b is on backend 'js' but a is on '${suite.backend.name}'`);
        expectThrows(() => stack([here, onJs]), BackendError, `stack: tensors[1] is on backend 'js' but tensors[0] is on '${suite.backend.name}'`);
      } finally {
        here.dispose();
        onJs.dispose();
      }
    });
  });
}
