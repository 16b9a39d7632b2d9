/**
 * The native addon's interface (kernels-cpu/src/addon.cpp), typed end to end. Every function checks
 * its arguments (types, sizes against the arrays' lengths, index ranges, an output apart from every
 * input) before any kernel runs and throws a `NativeError` (an Error with a `code`) when one is
 * wrong. Products are float32; the backend widens half inputs and rounds half outputs around them.
 */

/** How the addon was built and what it runs on. */
export interface BuildInfo {
  /** The micro-kernel in use: "avx512", "avx2" or "scalar". */
  isa: NativeIsa;
  /** Its register tile, rows x columns of C. */
  tileRows: number;
  tileCols: number;
  /** Threads the pool runs on (the calling thread included). */
  threads: number;
  hardwareThreads: number;
  /** Whether idle threads poll for the next job before sleeping: only while the pool has no more threads than the process has cores. */
  polling: boolean;
  /** Whether setThreads or setIsa has run in this process (any thread): threadsChosen || isaChosen. */
  settingsChosen: boolean;
  /** Whether setThreads has run in this process (any thread; a backend's start runs it): a backend starting then keeps the thread count. */
  threadsChosen: boolean;
  /** Whether setIsa has chosen a micro-kernel in this process (any thread; a backend's start runs it): a backend starting then keeps it. */
  isaChosen: boolean;
  arch: "x64" | "arm64" | "other";
}

export type NativeIsa = "avx512" | "avx2" | "scalar";

/** A block-sparse matrix's sizes, as the addon reads them. */
export interface NativeBsrSizes {
  rows: number;
  cols: number;
  blockHeight: number;
  blockWidth: number;
}

/** The row-wise index (CSR of blocks): bsrLinear and sampledMatmul. */
export interface NativeRowIndex extends NativeBsrSizes {
  blockRowPtr: Int32Array;
  blockColIdx: Int32Array;
}

/** The column-wise index and each entry's block: bsrMatmul. */
export interface NativeColumnIndex extends NativeBsrSizes {
  blockColPtr: Int32Array;
  blockRowIdx: Int32Array;
  valueIndex: Int32Array;
}

/** An error thrown by the addon. */
export interface NativeError extends Error {
  code: "ERR_CPU_INVALID_ARGUMENT" | "ERR_CPU_SHAPE" | "ERR_CPU_INDEX" | "ERR_CPU_OUT_OF_MEMORY";
}

export interface NativeAddon {
  buildInfo(): BuildInfo;
  /** Resizes the thread pool (n < 1: the hardware's thread count); returns the count in use, fewer than asked when the system refuses threads. */
  setThreads(n: number): number;
  /** Picks the micro-kernel; false when this CPU cannot run it. */
  setIsa(isa: NativeIsa): boolean;
  /** Asks Linux to back the buffer's untouched whole 2 MiB pages with huge pages; returns the bytes advised (0 where unsupported). */
  adviseHugePages(buffer: ArrayBuffer): number;
  /** Bytes from the buffer's start to its first 64-byte boundary (a multiple of 4, below 64), where storage starts. */
  alignmentOffset(buffer: ArrayBuffer): number;
  /** C[cOffset..] (m x n) = op(A[aOffset..]) op(B[bOffset..]), row-major. */
  matmul(
    a: Float32Array,
    aOffset: number,
    b: Float32Array,
    bOffset: number,
    c: Float32Array,
    cOffset: number,
    m: number,
    n: number,
    k: number,
    transposeA: boolean,
    transposeB: boolean,
  ): void;
  /** out = act(x + bias) over rows x width (bias along each row; null: none); activation 0 relu, 1 gelu, 2 gelu_tanh. */
  biasActivation(
    x: Float32Array,
    xOffset: number,
    bias: Float32Array | null,
    biasOffset: number,
    out: Float32Array,
    outOffset: number,
    rows: number,
    width: number,
    activation: number,
  ): void;
  /** dx = dy act'(x + bias); dbias (when given) = the column sums of dx in float64. */
  biasActivationBackward(
    dy: Float32Array,
    dyOffset: number,
    x: Float32Array,
    xOffset: number,
    bias: Float32Array | null,
    biasOffset: number,
    dx: Float32Array,
    dxOffset: number,
    dbias: Float64Array | null,
    rows: number,
    width: number,
    activation: number,
  ): void;
  /** LayerNorm over the last dim of rows x d (gamma, beta null: 1, 0): y, and each row's mean and rstd (float32). */
  layerNorm(
    x: Float32Array,
    xOffset: number,
    gamma: Float32Array | null,
    gammaOffset: number,
    beta: Float32Array | null,
    betaOffset: number,
    y: Float32Array,
    yOffset: number,
    mean: Float32Array,
    meanOffset: number,
    rstd: Float32Array,
    rstdOffset: number,
    rows: number,
    d: number,
    epsilon: number,
  ): void;
  /** LayerNorm's gradients from the saved mean and rstd: dx, and dgamma and dbeta summed in float64. */
  layerNormBackward(
    dy: Float32Array,
    dyOffset: number,
    x: Float32Array,
    xOffset: number,
    mean: Float32Array,
    meanOffset: number,
    rstd: Float32Array,
    rstdOffset: number,
    gamma: Float32Array | null,
    gammaOffset: number,
    dx: Float32Array,
    dxOffset: number,
    dgamma: Float64Array,
    dbeta: Float64Array,
    rows: number,
    d: number,
  ): void;
  /**
   * Attention's softmax over the scores s (rows x n from sOffset) of query rows [first, first + rows) of an m x n batch
   * matrix, in place, each row over its kept keys (all n, or under causal masking j <= i + n - m): P = exp(scale s -
   * max) / sum in float64, rounded once, 0 past the kept keys, and lse[r] (lse not null) = max + log(sum). flags[r]: 0
   * done, 1 done with a probability that rounds to 0 in float32 but not in float64, 2 a NaN or infinite kept score (the
   * row and its lse left as they were).
   */
  attentionSoftmax(
    s: Float32Array,
    sOffset: number,
    lse: Float32Array | null,
    lseOffset: number,
    flags: Uint8Array,
    rows: number,
    n: number,
    first: number,
    m: number,
    causal: boolean,
    scale: number,
  ): void;
  /**
   * dS = P (dP - Di) scale over each row's kept keys, Di = sum_j P dP (float64) plus shift[r] when shift is given (one
   * per row: the saved output's rounding, dout . (out - P v)), 0 past them, in place over dP (ds); flags[r] 2 where the
   * float64 sum of the row's dS is not finite, else 0. Rows and keys as attentionSoftmax's.
   */
  attentionScoreGradients(
    p: Float32Array,
    pOffset: number,
    ds: Float32Array,
    dsOffset: number,
    flags: Uint8Array,
    rows: number,
    n: number,
    first: number,
    m: number,
    causal: boolean,
    scale: number,
    shift: Float64Array | null,
  ): void;
  /**
   * Attention over `heads` contiguous batch matrices, q [heads, m, d] against k and v [heads, n, d] (each from its
   * offset): out [heads, m, d] and lse [heads, m], the products and rows of attentionSoftmax's path, `blockRows` query
   * rows at a time (at least 1). exact[b] (from 0, one per head) is 1 where head b holds a NaN or an infinity among its
   * inputs, or a score whose float32 product is not finite: its outputs are left to the caller; else 0.
   */
  attentionForward(
    q: Float32Array,
    qOffset: number,
    k: Float32Array,
    kOffset: number,
    v: Float32Array,
    vOffset: number,
    out: Float32Array,
    outOffset: number,
    lse: Float32Array,
    lseOffset: number,
    exact: Uint8Array,
    heads: number,
    m: number,
    n: number,
    d: number,
    causal: boolean,
    scale: number,
    blockRows: number,
  ): void;
  /**
   * dq [heads, m, d], dk and dv [heads, n, d] of attentionForward's heads from the output gradient dout [heads, m, d];
   * P recomputed from q and k. Di = sum_j P dP over the float32 dP (dout . out for the forward's float32 out = P v); with
   * `out` (the saved output [heads, m, d], rounded to a half dtype) Di is dout . out, P v recomputed for the difference.
   * exact as attentionForward's (a dS row whose float32 values sum to a non-finite value, or an out holding one, too).
   */
  attentionBackward(
    dout: Float32Array,
    doutOffset: number,
    q: Float32Array,
    qOffset: number,
    k: Float32Array,
    kOffset: number,
    v: Float32Array,
    vOffset: number,
    out: Float32Array | null,
    outOffset: number,
    dq: Float32Array,
    dqOffset: number,
    dk: Float32Array,
    dkOffset: number,
    dv: Float32Array,
    dvOffset: number,
    exact: Uint8Array,
    heads: number,
    m: number,
    n: number,
    d: number,
    causal: boolean,
    scale: number,
    blockRows: number,
  ): void;
  /**
   * attentionForward over packed attention's heads where they lie: qkv [sequences, t, 3, h, d] (from qkvOffset) read
   * in its rows, out [sequences, t, h, d] written in its rows, lse [sequences, h, t]; exact one per head
   * (sequence-major).
   */
  packedAttentionForward(
    qkv: Float32Array,
    qkvOffset: number,
    out: Float32Array,
    outOffset: number,
    lse: Float32Array,
    lseOffset: number,
    exact: Uint8Array,
    sequences: number,
    t: number,
    h: number,
    d: number,
    causal: boolean,
    scale: number,
    blockRows: number,
  ): void;
  /**
   * attentionBackward over packed attention's heads: dqkv [sequences, t, 3, h, d] from dout [sequences, t, h, d] and qkv;
   * out (dout's layout) as attentionBackward's.
   */
  packedAttentionBackward(
    dout: Float32Array,
    doutOffset: number,
    qkv: Float32Array,
    qkvOffset: number,
    out: Float32Array | null,
    outOffset: number,
    dqkv: Float32Array,
    dqkvOffset: number,
    exact: Uint8Array,
    sequences: number,
    t: number,
    h: number,
    d: number,
    causal: boolean,
    scale: number,
    blockRows: number,
  ): void;
  /**
   * out [heads, m, d] (from outOffset): each query row i of q [heads, m, d] over keys [0, positions[i]] of k and v
   * [heads, n, d] (clamped to [0, n); none: zeros), softmax(scale q k^T) v with float64 scores and sums. positions must
   * not be backed by a SharedArrayBuffer (another thread could change one during the call).
   */
  cachedAttention(
    q: Float32Array,
    qOffset: number,
    k: Float32Array,
    kOffset: number,
    v: Float32Array,
    vOffset: number,
    positions: Int32Array,
    out: Float32Array,
    outOffset: number,
    heads: number,
    m: number,
    n: number,
    d: number,
    scale: number,
  ): void;
  /** out [width] (from outOffset) = the column sums of x [rows, width] in float64 in the rows' order, / rows when mean, rounded once. */
  sumLeading(x: Float32Array, xOffset: number, rows: number, width: number, mean: boolean, out: Float32Array, outOffset: number): void;
  /** One Adam (L2) or AdamW (decoupled) step over n elements: p, m and v updated in place from g. */
  adamUpdate(
    p: Float32Array,
    pOffset: number,
    g: Float32Array,
    gOffset: number,
    m: Float32Array,
    mOffset: number,
    v: Float32Array,
    vOffset: number,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    epsilon: number,
    weightDecay: number,
    decoupled: boolean,
    correction1: number,
    correction2: number,
  ): void;
  /** out = the float32 values of `count` float16 (bfloat16 when `bfloat16`) bit patterns, exactly (a NaN keeps its payload). */
  widenHalf(bits: Uint16Array, bitsOffset: number, out: Float32Array, outOffset: number, count: number, bfloat16: boolean): void;
  /** out = the float16 (bfloat16) bits of `count` float32 values, rounded to nearest, ties to even, as @blocksparse/format rounds them. */
  roundHalf(values: Float32Array, valuesOffset: number, out: Uint16Array, outOffset: number, count: number, bfloat16: boolean): void;
  /** Y [tokens, rows] = X [tokens, cols] W^T (+ bias), each array read or written from its offset. */
  bsrLinear(
    x: Float32Array,
    xOffset: number,
    values: Float32Array,
    valuesOffset: number,
    bias: Float32Array | null,
    biasOffset: number,
    y: Float32Array,
    yOffset: number,
    tokens: number,
    pattern: NativeRowIndex,
  ): void;
  /** Y [m, n] = X [m, k] W^T with W [n, k] as float16 (bfloat16 when `bfloat16`) bits, streamed at few rows as bsrLinearHalf. */
  linearHalf(x: Float32Array, xOffset: number, bits: Uint16Array, bitsOffset: number, bfloat16: boolean, y: Float32Array, yOffset: number, m: number, n: number, k: number): void;
  /**
   * bsrLinear with W's values as float16 (bfloat16 when `bfloat16`) bits: at few tokens each block is widened in cache as
   * it is streamed, else all are widened once into scratch; the sums are bsrLinear's on the widened values.
   */
  bsrLinearHalf(
    x: Float32Array,
    xOffset: number,
    bits: Uint16Array,
    bitsOffset: number,
    bfloat16: boolean,
    bias: Float32Array | null,
    biasOffset: number,
    y: Float32Array,
    yOffset: number,
    tokens: number,
    pattern: NativeRowIndex,
  ): void;
  /** dX [tokens, cols] = dY [tokens, rows] W, each array read or written from its offset. */
  bsrMatmul(dy: Float32Array, dyOffset: number, values: Float32Array, valuesOffset: number, dx: Float32Array, dxOffset: number, tokens: number, pattern: NativeColumnIndex): void;
  /** dW [nnz, R, C] = (dY^T X) on W's blocks, each array read or written from its offset. */
  sampledMatmul(dy: Float32Array, dyOffset: number, x: Float32Array, xOffset: number, dw: Float32Array, dwOffset: number, tokens: number, pattern: NativeRowIndex): void;
  /**
   * Bytes the products' scratch (packed operands, few-token sums, attention's rows of float64 scores) holds now, all
   * threads' together. Each buffer is kept for the next product and grows to the largest it was asked for (until
   * releaseScratch), so a product's own need is the growth it causes; a row of scores is given back once a call needs a
   * quarter of what it holds.
   */
  scratchBytes(): number;
  /** Frees the products' scratch (scratchBytes() is then 0); the next product allocates what it needs again. */
  releaseScratch(): void;
}

/** Every function the addon must export (checked when it is loaded). */
export const NATIVE_FUNCTIONS = [
  "buildInfo",
  "setThreads",
  "setIsa",
  "adviseHugePages",
  "alignmentOffset",
  "matmul",
  "linearHalf",
  "bsrLinear",
  "bsrLinearHalf",
  "bsrMatmul",
  "sampledMatmul",
  "biasActivation",
  "biasActivationBackward",
  "layerNorm",
  "layerNormBackward",
  "attentionSoftmax",
  "attentionScoreGradients",
  "attentionForward",
  "attentionBackward",
  "packedAttentionForward",
  "packedAttentionBackward",
  "cachedAttention",
  "sumLeading",
  "adamUpdate",
  "widenHalf",
  "roundHalf",
  "scratchBytes",
  "releaseScratch",
] as const satisfies readonly (keyof NativeAddon)[];
