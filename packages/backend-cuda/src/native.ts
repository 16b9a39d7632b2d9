/**
 * The native addon's interface (kernels-cuda/src/addon.cpp), typed end to end: buffer and pattern
 * handles are plain numbers, dtypes and operations are the numeric codes below (mirroring
 * kernels-cuda/src/common.h and ops.h). Every function validates its arguments before any launch and
 * throws a `NativeError` (an Error with a `code`) on a bad argument or a CUDA failure.
 * test/native_interface.test.ts checks the codes and NATIVE_FUNCTIONS against the C++ sources.
 */
import type { DType } from "@blocksparse/core";

/** A device buffer of the addon's caching allocator. */
export type BufferHandle = number;
/** An uploaded, validated block-sparse pattern. */
export type PatternHandle = number;
/** An instantiated CUDA graph. */
export type GraphHandle = number;

/** Element type codes (common.h `DType`). */
export const DTYPE_CODE: Readonly<Record<DType, number>> = { float32: 0, float16: 1, bfloat16: 2, int32: 3 };

/** Unary operation codes (ops.h `UnaryOp`). */
export const UnaryOp = {
  Neg: 0,
  Abs: 1,
  Exp: 2,
  Log: 3,
  Sqrt: 4,
  Rsqrt: 5,
  Tanh: 6,
  Sigmoid: 7,
  Relu: 8,
  Square: 9,
  Gelu: 10,
  GeluTanh: 11,
} as const;

/** Binary operation codes (ops.h `BinaryOp`); comparisons write int32. GeluBackward* take (dy, x). */
export const BinaryOp = {
  Add: 0,
  Sub: 1,
  Mul: 2,
  Div: 3,
  Maximum: 4,
  Minimum: 5,
  Pow: 6,
  Equal: 7,
  NotEqual: 8,
  Less: 9,
  LessEqual: 10,
  Greater: 11,
  GreaterEqual: 12,
  GeluBackward: 13,
  GeluTanhBackward: 14,
} as const;

/** Reduction codes (ops.h `ReduceOp`); Argmax writes int32. */
export const ReduceOp = { Sum: 0, Mean: 1, Max: 2, Min: 3, Argmax: 4 } as const;
/** The activation codes of biasActivation (core's names: "relu", "gelu", "gelu_tanh"). */
export const ActivationOp = { Relu: 0, Gelu: 1, GeluTanh: 2 } as const;
export type ActivationOpCode = (typeof ActivationOp)[keyof typeof ActivationOp];

export type UnaryOpCode = (typeof UnaryOp)[keyof typeof UnaryOp];
export type BinaryOpCode = (typeof BinaryOp)[keyof typeof BinaryOp];
export type ReduceOpCode = (typeof ReduceOp)[keyof typeof ReduceOp];

/** The GPU the addon runs on. */
export interface DeviceInfo {
  index: number;
  name: string;
  /** "major.minor", e.g. "9.0" for Hopper. */
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  /** Device memory's peak rate in bytes per second (two transfers per memory clock over the bus); 0 where CUDA does not say. */
  memoryBandwidth: number;
  /** CUDA runtime and driver versions as CUDA encodes them (13000 = 13.0). */
  runtimeVersion: number;
  driverVersion: number;
}

/**
 * Rows of source [outer, count, inner] into y [outer, axisSize, inner] at int32 indices [count] along the middle axis
 * (the addon's one binding for scatterAdd and indexCopy).
 */
export type IndexedRows = (dtype: Dt, source: Buf, indices: Buf, y: Buf, outer: number, axisSize: number, inner: number, count: number) => void;

/** How the addon was built. */
export interface BuildInfo {
  /** Dense matmul goes through cuBLAS, opened at run time (else the addon's own tiled kernel). */
  cublas: boolean;
  /** The cuBLAS library opened (libcublas.so.13, ...), or why none was. */
  cublasLibrary: string;
  /** The cuBLASLt library opened (Linear's fused bias and residual), or why none was. */
  cublasLtLibrary: string;
  cudaVersion: number;
  /** The CUDA architectures compiled in, e.g. "80,90a". */
  architectures: string;
}

/** The caching allocator's figures (block bytes: what the device actually holds). */
export interface NativeMemory {
  bytesInUse: number;
  bytesCached: number;
  buffersInUse: number;
  buffersCached: number;
  cudaMallocCalls: number;
  cacheHits: number;
  /** Segment bytes held from CUDA (in use, cached and in graph pools). */
  bytesReserved: number;
  segments: number;
  /** Bytes of segments wholly free, which releaseCache gives back. */
  bytesReleasable: number;
  /** Block bytes freed into the pools of live graphs (kept for them). */
  bytesInGraphPools: number;
  /** cudaMemGetInfo, once the device is initialised. */
  deviceFreeBytes?: number;
  deviceTotalBytes?: number;
}

/** What createPattern validates and uploads (all index arrays of a BsrPattern). */
export interface PatternDescription {
  rows: number;
  cols: number;
  blockHeight: number;
  blockWidth: number;
  blockRows: number;
  blockCols: number;
  nnzBlocks: number;
  blockRowPtr: Int32Array;
  blockColIdx: Int32Array;
  blockColPtr: Int32Array;
  blockRowIdx: Int32Array;
  valueIndex: Int32Array;
  coordBlockRow: Int32Array;
  coordBlockCol: Int32Array;
}

export interface AdamHyperparameters {
  lr: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  decoupledWeightDecay: boolean;
  step: number;
}

/** An error thrown by the addon. */
export interface NativeError extends Error {
  code: "ERR_CUDA" | "ERR_CUDA_OUT_OF_MEMORY" | "ERR_CUDA_INVALID_ARGUMENT" | "ERR_CUDA_INDEX" | "ERR_NCCL";
}

/** An NCCL communicator of the addon. */
export type CommunicatorHandle = number;

/** NCCL's reduction codes (ncclRedOp_t) the addon accepts. */
export const NcclReduceOp = { Sum: 0, Avg: 4 } as const;
export type NcclReduceOpCode = (typeof NcclReduceOp)[keyof typeof NcclReduceOp];

/** Whether NCCL (opened at run time, libnccl.so.2) can be used here. */
export interface NcclInfo {
  available: boolean;
  /** The library opened, with NCCL's version ("libnccl.so.2 (NCCL 2.28.3)"), or why none was. */
  library: string;
}

type Buf = BufferHandle;
type Dt = number;
type Dims = readonly number[];

/** One shape's autotuning: the route chosen for it and each candidate's time per call. */
export interface AutotuneRecord {
  product: "bsrLinear" | "bsrMatmul" | "sampledMatmul";
  dtype: string;
  blockShape: [number, number];
  /** Tokens (rows of x or dy). */
  m: number;
  /** W's shape. */
  rows: number;
  cols: number;
  nnzBlocks: number;
  bias: boolean;
  /**
   * What the call fuses after the product, timed with each route (a key of its own): nothing, the activation
   * (bsrLinearActivation) or the activation's backward (bsrMatmulActivationBackward).
   */
  epilogue: AutotuneEpilogue;
  route: string;
  /** The chosen route as importAutotune takes it back (what an autotune cache file stores). */
  choice: AutotuneChoice;
  timings: { route: string; ms: number }[];
}

export type AutotuneEpilogue = "none" | "activation" | "activationBackward";

/** A route: the dense product with the blocks sampled out (dW only), or a tensor-core path, tile variant and token splits. */
export interface AutotuneChoice {
  dense: boolean;
  path: "auto" | "mma" | "wgmma" | "decode";
  /** The tile variant; -1: the path's default for the shape. */
  variant: number;
  /** dW's token splits; 0: the dispatch's rule. */
  splits: number;
}

export interface NativeAddon {
  /** Starts CUDA on a device; throws the reason (no driver, no GPU, ...) when it cannot. */
  init(deviceIndex: number): DeviceInfo;
  buildInfo(): BuildInfo;

  alloc(byteLength: number): Buf;
  free(buffer: Buf): void;
  /** Copies the whole array to the start of the buffer (ordered on the stream). */
  write(buffer: Buf, values: ArrayBufferView): void;
  /** Fills `out` from the start of the buffer, waiting for all queued work. */
  read(buffer: Buf, out: ArrayBufferView): void;
  memory(): NativeMemory;
  /** Gives every cached (freed) allocation back to CUDA. */
  releaseCache(): void;
  /** Caps the segment bytes the allocator holds from CUDA (0: no cap); returns the previous cap. */
  setMemoryLimit(bytes: number): number;
  synchronize(): void;
  /** Routes dense matmul through cuBLAS (true) or the built-in kernel; returns whether cuBLAS is now used. */
  setCublasEnabled(enabled: boolean): boolean;
  /** Lets float32 block-sparse products run on the tensor cores in TF32; returns the setting (process-wide). */
  setAllowTf32(allow: boolean): boolean;
  allowTf32(): boolean;
  /** How sampledMatmul may run through the dense GEMM: 0 auto (when it is faster), 1 never, 2 always; returns the previous mode. */
  setDenseSampledMode(mode: 0 | 1 | 2): number;
  /** How the tensor-core dW kernels split the tokens of sampledMatmul over this pattern (the default options). */
  sampledPlan(pattern: number, m: number, dtype: number): string;
  setDenseProductMode(mode: 0 | 1 | 2): number;
  /** First-use autotuning of the block-sparse products (process-wide); returns the previous setting. */
  setAutotune(on: boolean): boolean;
  /** Forgets every autotuning record. */
  clearAutotune(): void;
  /** What autotuning chose for each shape so far, with every candidate's time. */
  autotuneRecords(): AutotuneRecord[];
  /**
   * One choice an earlier process saved, for the current device (kept unless this process already tuned the shape);
   * product 0-2 (bsrLinear, bsrMatmul, sampledMatmul), path 0-3 (auto, mma, wgmma, decode), epilogue 0-2 (none,
   * activation with bsrLinear, activationBackward with bsrMatmul). Returns whether it was added.
   */
  importAutotune(
    product: number,
    dtype: Dt,
    blockHeight: number,
    blockWidth: number,
    m: number,
    rows: number,
    cols: number,
    nnzBlocks: number,
    bias: boolean,
    dense: boolean,
    path: number,
    variantPlusOne: number,
    splits: number,
    epilogue: number,
  ): boolean;

  createPattern(description: PatternDescription): PatternHandle;
  freePattern(pattern: PatternHandle): void;

  fillBits(elementBytes: 2 | 4, out: Buf, n: number, bits: number): void;
  /** Starts recording the stream's work into a CUDA graph; allocations meanwhile come from the graph's pool. */
  beginCapture(): void;
  /** Stops recording and instantiates the graph (throws when the capture was invalidated). */
  endCapture(): GraphHandle;
  /** Ends a capture in progress without a graph; no-op if none. */
  abortCapture(): void;
  launchGraph(graph: GraphHandle): void;
  destroyGraph(graph: GraphHandle): void;
  /** dst's bytes = src's (same length), ordered on the stream. */
  copyBuffer(src: Buf, dst: Buf): void;
  unary(op: UnaryOpCode, dtype: Dt, x: Buf, y: Buf, n: number): void;
  binary(op: BinaryOpCode, dtype: Dt, a: Buf, aStrides: Dims, b: Buf, bStrides: Dims, y: Buf, shape: Dims): void;
  where(
    dtype: Dt,
    condition: Buf,
    conditionStrides: Dims,
    a: Buf,
    aStrides: Dims,
    b: Buf,
    bStrides: Dims,
    y: Buf,
    shape: Dims,
  ): void;
  cast(from: Dt, to: Dt, x: Buf, y: Buf, n: number): void;
  copyStrided(
    dtype: Dt,
    src: Buf,
    srcOffset: number,
    srcStrides: Dims,
    dst: Buf,
    dstOffset: number,
    dstStrides: Dims,
    shape: Dims,
  ): void;

  reduce(op: ReduceOpCode, dtype: Dt, x: Buf, y: Buf, outer: number, size: number, inner: number): void;
  /** causalRows: 0, or m for causal masking over each trailing [m, size] matrix. */
  softmax(log: boolean, dtype: Dt, x: Buf, y: Buf, rows: number, size: number, causalRows: number): void;
  /** dx from a softmax's (log false) or log-softmax's output y and its gradient dy; causalRows as softmax's. */
  softmaxBackward(log: boolean, dtype: Dt, dy: Buf, y: Buf, dx: Buf, rows: number, size: number, causalRows: number): void;
  /**
   * Attention over `batch` matrices: q [M, D], k and v [N, D] -> out [M, D] and lse (float32 [M], each row's
   * log-sum-exp of scale q k^T over the kept keys); causal keeps keys j <= i + N - M.
   */
  attention(dtype: Dt, q: Buf, k: Buf, v: Buf, out: Buf, lse: Buf, batch: number, m: number, n: number, d: number, scale: number, causal: boolean): void;
  /**
   * Each query row i over the keys 0..positions[i] (int32 [m]): decoding over a key/value cache. newK and newV (both or
   * null): written into k and v at the positions first, in place.
   */
  cachedAttention(
    dtype: Dt,
    q: Buf,
    k: Buf,
    v: Buf,
    positions: Buf,
    out: Buf,
    batch: number,
    m: number,
    n: number,
    d: number,
    scale: number,
    newK: Buf | null,
    newV: Buf | null,
  ): void;
  /**
   * Self-attention of `batch` sequences of t positions whose queries, keys and values lie side by side in qkv
   * [batch, t, 3, heads, d] -> out [batch, t, heads, d] and lse (float32 [batch, heads, t]).
   */
  packedAttention(dtype: Dt, qkv: Buf, out: Buf, lse: Buf, batch: number, heads: number, t: number, d: number, scale: number, causal: boolean): void;
  /** dqkv [batch, t, 3, heads, d] of packedAttention from dout, qkv, out and lse. */
  packedAttentionBackward(
    dtype: Dt,
    dout: Buf,
    qkv: Buf,
    out: Buf,
    lse: Buf,
    dqkv: Buf,
    batch: number,
    heads: number,
    t: number,
    d: number,
    scale: number,
    causal: boolean,
  ): void;
  /** dq, dk and dv of attention from dout and the forward's inputs, out and lse. */
  attentionBackward(
    dtype: Dt,
    dout: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
    out: Buf,
    lse: Buf,
    dq: Buf,
    dk: Buf,
    dv: Buf,
    batch: number,
    m: number,
    n: number,
    d: number,
    scale: number,
    causal: boolean,
  ): void;
  layerNorm(
    dtype: Dt,
    x: Buf,
    gamma: Buf | null,
    beta: Buf | null,
    y: Buf,
    mean: Buf,
    rstd: Buf,
    rows: number,
    width: number,
    epsilon: number,
  ): void;
  layerNormBackward(
    dtype: Dt,
    dy: Buf,
    x: Buf,
    mean: Buf,
    rstd: Buf,
    gamma: Buf | null,
    dx: Buf,
    dgamma: Buf,
    dbeta: Buf,
    rows: number,
    width: number,
  ): void;
  /**
   * loss: float32 [rows] whatever `dtype` (the logits') is; crossEntropyBackward's dy too. A target outside
   * [0, classes) gives a row of 0; one other than `ignoreIndex` (negative, or 0 for none) is also reported as an
   * ERR_CUDA_INDEX error by the next read or synchronize.
   */
  crossEntropy(dtype: Dt, logits: Buf, targets: Buf, loss: Buf, rows: number, classes: number, ignoreIndex: number): void;
  crossEntropyBackward(
    dtype: Dt,
    logits: Buf,
    targets: Buf,
    dy: Buf,
    dlogits: Buf,
    rows: number,
    classes: number,
    ignoreIndex: number,
  ): void;

  gather(dtype: Dt, x: Buf, indices: Buf, y: Buf, outer: number, axisSize: number, inner: number, count: number): void;
  /** y[o, indices[j], k] += updates[o, j, k]. */
  scatterAdd: IndexedRows;
  /** y[o, indices[j], k] = source[o, j, k] in y's own buffer (the rest of y kept). */
  indexCopy: IndexedRows;
  oneHot(dtype: Dt, indices: Buf, y: Buf, count: number, depth: number): void;

  /** dx [m, k] = dy [m, n] w [n, k] and dw [n, k] = dy^T x [m, k]: a dense layer's input and weight gradients. */
  linearBackward(dtype: Dt, dy: Buf, x: Buf, w: Buf, dx: Buf, dw: Buf, m: number, n: number, k: number): void;
  matmul(
    dtype: Dt,
    a: Buf,
    b: Buf,
    c: Buf,
    batch: number,
    m: number,
    n: number,
    k: number,
    transposeA: boolean,
    transposeB: boolean,
    strideA: number,
    strideB: number,
  ): void;
  /**
   * y [m, n] = x [m, k] w [n, k]^T + bias [n] + residual [m, n] in one cuBLASLt call (the adds in its epilogue).
   * Returns false, launching nothing, where cuBLASLt cannot run it (not found, cuBLAS switched off, an empty
   * dimension, no algorithm for the shape): the caller composes matmul and the adds.
   */
  linear(dtype: Dt, x: Buf, w: Buf, bias: Buf | null, residual: Buf | null, y: Buf, m: number, n: number, k: number): boolean;
  /**
   * pre = x w^T + bias and y = activation(pre), [m, n] each, from one cuBLASLt call (its GELU epilogue: the tanh form,
   * n a multiple of 8). Returns false, launching nothing, where it cannot: the caller composes linear and the activation.
   */
  linearActivation(activation: ActivationOpCode, dtype: Dt, x: Buf, w: Buf, bias: Buf | null, y: Buf, pre: Buf, m: number, n: number, k: number): boolean;
  /** y = x W^T + bias + residual (residual [m, rows], or null), [m, rows]: the residual in the decoding kernel's epilogue, else added after. */
  bsrLinear(dtype: Dt, pattern: PatternHandle, x: Buf, values: Buf, bias: Buf | null, y: Buf, m: number, residual: Buf | null): void;
  /** z = x W^T + bias (bsrLinear's route) and a = activation(z) (the activation pass), in one call. */
  bsrLinearActivation(
    activation: ActivationOpCode,
    dtype: Dt,
    pattern: PatternHandle,
    x: Buf,
    values: Buf,
    bias: Buf | null,
    z: Buf,
    a: Buf,
    m: number,
  ): void;
  bsrMatmul(dtype: Dt, pattern: PatternHandle, dy: Buf, values: Buf, dx: Buf, m: number): void;
  /**
   * dpre = (dy W) act'(pre) and dbias = its column sums, in one call: fused into dX's epilogue on the wgmma tiles, else
   * bsrMatmul's route into a scratch and the activation's backward pass.
   */
  bsrMatmulActivationBackward(
    activation: ActivationOpCode,
    dtype: Dt,
    pattern: PatternHandle,
    dy: Buf,
    values: Buf,
    pre: Buf,
    dpre: Buf,
    dbias: Buf,
    m: number,
  ): void;
  sampledMatmul(dtype: Dt, pattern: PatternHandle, dy: Buf, x: Buf, dw: Buf, m: number): void;
  blockNorms(dtype: Dt, values: Buf, norms: Buf, nnzBlocks: number, blockSize: number): void;
  adamUpdate(
    dtype: Dt,
    param: Buf,
    grad: Buf,
    mDtype: Dt,
    m: Buf,
    vDtype: Dt,
    v: Buf,
    paramOut: Buf,
    mOut: Buf,
    vOut: Buf,
    n: number,
    hyperparameters: AdamHyperparameters,
  ): void;
  biasActivation(activation: ActivationOpCode, dtype: Dt, x: Buf, bias: Buf | null, y: Buf, rows: number, width: number): void;
  biasActivationBackward(
    activation: ActivationOpCode,
    dtype: Dt,
    dy: Buf,
    x: Buf,
    bias: Buf | null,
    dx: Buf,
    dbias: Buf,
    rows: number,
    width: number,
  ): void;
  /**
   * One Adam step on many tensors: `table` holds ADAM_TABLE_ENTRY numbers per tensor (n, step, the
   * param/grad/m/v dtype codes, then the buffers param, grad, m, v, paramOut, mOut, vOut, copyOut: 0
   * when copyDtype is null, then stepIn and stepOut: float32 step counts on the device, 0 when step is given).
   * With `lrValue` (a float32 scalar buffer) each tensor's learning rate is hyperparameters.lr times its value.
   */
  multiTensorAdamUpdate(table: Float64Array, copyDtype: Dt | null, hyperparameters: Omit<AdamHyperparameters, "step">, lrValue: Buf | null): void;

  /** NCCL, opened at run time: whether it is there (never throws). */
  ncclInfo(): NcclInfo;
  /** The 128-byte id rank 0 creates and every rank passes to ncclCommInitRank. */
  ncclGetUniqueId(): Uint8Array;
  /** Joins the communicator (blocks until every rank has called it); on the initialised device. */
  ncclCommInitRank(worldSize: number, uniqueId: Uint8Array, rank: number): CommunicatorHandle;
  /** Waits for the stream, then frees the communicator. */
  ncclCommDestroy(comm: CommunicatorHandle): void;
  /** Enqueued on the backend's stream; `send` and `receive` may be the same buffer. */
  ncclAllReduce(comm: CommunicatorHandle, dtype: Dt, send: Buf, receive: Buf, count: number, op: NcclReduceOpCode): void;
  /** `send` is read on the root only; `receive` is written on every rank. */
  ncclBroadcast(comm: CommunicatorHandle, dtype: Dt, send: Buf, receive: Buf, count: number, root: number): void;
  /** `receive` holds worldSize x sendCount elements, in rank order. */
  ncclAllGather(comm: CommunicatorHandle, dtype: Dt, send: Buf, receive: Buf, sendCount: number): void;
  ncclGroupStart(): void;
  ncclGroupEnd(): void;
}

/** Numbers per tensor in multiTensorAdamUpdate's table. */
export const ADAM_TABLE_ENTRY = 16;

// Keyed by the interface so that a function added to NativeAddon and left out here fails typecheck.
const NATIVE_FUNCTION_SET = {
  init: true,
  buildInfo: true,
  alloc: true,
  free: true,
  write: true,
  read: true,
  memory: true,
  releaseCache: true,
  setMemoryLimit: true,
  synchronize: true,
  setCublasEnabled: true,
  setAllowTf32: true,
  allowTf32: true,
  setDenseSampledMode: true,
  sampledPlan: true,
  setDenseProductMode: true,
  setAutotune: true,
  clearAutotune: true,
  autotuneRecords: true,
  importAutotune: true,
  createPattern: true,
  freePattern: true,
  fillBits: true,
  beginCapture: true,
  endCapture: true,
  abortCapture: true,
  launchGraph: true,
  destroyGraph: true,
  copyBuffer: true,
  unary: true,
  binary: true,
  where: true,
  cast: true,
  copyStrided: true,
  reduce: true,
  softmax: true,
  softmaxBackward: true,
  attention: true,
  attentionBackward: true,
  packedAttention: true,
  packedAttentionBackward: true,
  cachedAttention: true,
  layerNorm: true,
  layerNormBackward: true,
  crossEntropy: true,
  crossEntropyBackward: true,
  gather: true,
  scatterAdd: true,
  indexCopy: true,
  oneHot: true,
  matmul: true,
  linearBackward: true,
  linear: true,
  linearActivation: true,
  bsrLinear: true,
  bsrLinearActivation: true,
  bsrMatmul: true,
  bsrMatmulActivationBackward: true,
  sampledMatmul: true,
  blockNorms: true,
  adamUpdate: true,
  multiTensorAdamUpdate: true,
  biasActivation: true,
  biasActivationBackward: true,
  ncclInfo: true,
  ncclGetUniqueId: true,
  ncclCommInitRank: true,
  ncclCommDestroy: true,
  ncclAllReduce: true,
  ncclBroadcast: true,
  ncclAllGather: true,
  ncclGroupStart: true,
  ncclGroupEnd: true,
} satisfies Record<keyof NativeAddon, true>;

/** The functions every addon build exports; the loader checks them before trusting the module. */
export const NATIVE_FUNCTIONS = Object.keys(NATIVE_FUNCTION_SET) as readonly (keyof NativeAddon)[];
