// The products the addon runs natively, on float32 arrays whose sizes the binding has checked.
#pragma once
#include <cstdint>

namespace bsk {

// Element (i, j) of a matrix at data[i * rowStride + j * colStride] (a transpose swaps the strides).
struct MatrixView {
  const float* data;
  int64_t rowStride;
  int64_t colStride;
};

// Products of at most this many rows take the streaming (decode) paths.
constexpr int64_t kDecodeMaxRows = 8;

// C[m x n] (row-major, ldc) = A[m x k] B[k x n], or += when accumulate.
void gemm(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate);
// The same product (the same bits) on the calling thread alone: what a pool's item runs (the pool runs one job at a time).
void gemmSerial(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate);

// Y [m, n] = X [m, k] W^T with W [n, k] as float16 (bfloat16 when `bfloat`) bits, row-major: at most kDecodeMaxRows
// rows stream W once, each row widened in cache (half the bytes of float32 read from memory); more widen W once into
// scratch. The sums are the float32 product's of the widened weights.
void linearHalf(const float* x, const uint16_t* w, bool bfloat, float* y, int64_t m, int64_t n, int64_t k);

// A block-sparse W [rows, cols] of R x C blocks, row-wise (CSR of blocks) and column-wise indices.
struct BsrView {
  int64_t rows;
  int64_t cols;
  int64_t blockHeight;
  int64_t blockWidth;
  const float* values;
  // Set instead of values by bsrLinear's half path: float16 bits, or bfloat16 when `bfloat` (see bsrLinear).
  const uint16_t* halfValues = nullptr;
  bool bfloat = false;
  const int32_t* blockRowPtr;
  const int32_t* blockColIdx;
  const int32_t* blockColPtr;
  const int32_t* blockRowIdx;
  const int32_t* valueIndex;
};

// Y [tokens, rows] = X [tokens, cols] W^T (+ bias). With w.halfValues (and values null), W's values are half bits:
// at few tokens each block is widened in cache as it streams (half the bytes of float32 read from memory), else the
// values are widened once into scratch; the result is the float32 product of the widened values either way.
void bsrLinear(const float* x, const BsrView& w, const float* bias, float* y, int64_t tokens);
// dX [tokens, cols] = dY [tokens, rows] W.
void bsrMatmul(const float* dy, const BsrView& w, float* dx, int64_t tokens);
// dW [nnz, R, C] = (dY^T X) on W's blocks.
void sampledMatmul(const float* dy, const float* x, const BsrView& w, float* dw, int64_t tokens);

}  // namespace bsk
