// N-API binding of the CPU kernels. Every function checks its arguments (types, sizes against the
// arrays' lengths, index ranges, an output apart from every input) before any kernel runs, and
// throws an Error with a `code`:
// ERR_CPU_INVALID_ARGUMENT, ERR_CPU_SHAPE, ERR_CPU_INDEX or ERR_CPU_OUT_OF_MEMORY.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "attention.h"
#include "attention_rows.h"
#include "half.h"
#include "microkernel.h"
#include "pointwise.h"
#include "products.h"
#include "scratch.h"
#include "threads.h"

namespace {

using bsk::BsrView;
using bsk::MatrixView;

[[noreturn]] void fail(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  throw error;
}

// A number as JavaScript prints it (-1, 1.5, 1e-7, NaN), for messages: the engine's own ToString, which runs no user code
// on a number (C's %g printed "1e-07" and "1.2345678901234568e+20").
std::string formatNumber(const Napi::Value& number) { return number.ToString().Utf8Value(); }

int64_t integerArg(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name) {
  if (!info[index].IsNumber()) fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": " + name + " must be a number");
  const double value = info[index].As<Napi::Number>().DoubleValue();
  if (!(value >= 0) || value > 9007199254740991.0 || value != static_cast<double>(static_cast<int64_t>(value))) {
    fail(info.Env(), "ERR_CPU_SHAPE", std::string(fn) + ": " + name + " must be a non-negative integer, got " + formatNumber(info[index]));
  }
  return static_cast<int64_t>(value);
}

bool boolArg(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name) {
  if (!info[index].IsBoolean()) fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": " + name + " must be a boolean");
  return info[index].As<Napi::Boolean>().Value();
}

template <typename T, napi_typedarray_type Type>
Napi::TypedArrayOf<T> typedArray(Napi::Env env, const Napi::Value& value, const char* fn, const char* name, const char* typeName) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != Type) {
    fail(env, "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": " + name + " must be " + typeName);
  }
  return value.As<Napi::TypedArrayOf<T>>();
}

Napi::Float32Array floatArg(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name) {
  return typedArray<float, napi_float32_array>(info.Env(), info[index], fn, name, "a Float32Array");
}

// a x b elements; a shape error when the count passes int64 (no array holds that many, and a wrapped
// product would let a short array through).
int64_t elementCount(Napi::Env env, const char* fn, const char* name, int64_t a, int64_t b) {
  int64_t count = 0;
  if (__builtin_mul_overflow(a, b, &count)) {
    fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": " + name + " would need " + std::to_string(a) + " x " + std::to_string(b) + " elements, more than any array holds");
  }
  return count;
}

// Throws unless `array` holds `needed` elements from `offset` (both non-negative).
void checkSpan(Napi::Env env, const char* fn, const char* name, size_t length, int64_t offset, int64_t needed) {
  if (needed > 0 && static_cast<uint64_t>(needed) > length - std::min<uint64_t>(length, static_cast<uint64_t>(offset))) {
    fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": " + name + " has " + std::to_string(length) + " elements, needs " +
                                   std::to_string(static_cast<uint64_t>(offset) + static_cast<uint64_t>(needed)) + " (" + std::to_string(needed) + " from offset " +
                                   std::to_string(offset) + ")");
  }
}

// The bytes a kernel reads or writes of one argument: `count` elements of `elementBytes` from element `offset`.
struct Span {
  const char* name;
  uintptr_t begin;
  uintptr_t end;
};

Span spanOf(const char* name, const void* data, int64_t offset, int64_t count, size_t elementBytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(offset) * elementBytes;
  return Span{name, begin, begin + static_cast<uintptr_t>(count) * elementBytes};
}

// Throws unless the output's bytes are apart from every input's: the kernels read their inputs (and the pattern's
// indices, checked once) after they start writing the output, so an output over an input is a wrong answer, or an
// index changed past its check, never an in-place product.
void checkApart(Napi::Env env, const char* fn, const Span& out, std::initializer_list<Span> inputs) {
  if (out.begin == out.end) return;
  for (const Span& in : inputs) {
    if (in.begin < in.end && in.begin < out.end && out.begin < in.end) {
      fail(env, "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": " + out.name + " shares memory with " + in.name +
                                                " (the output must not overlap an input; write it to a separate array)");
    }
  }
}

// The pattern's fields, each read once with Get, before any array's data is taken: a getter or a Proxy trap runs
// JavaScript, which could detach an array already taken (its memory freed under the kernel: a crash).
struct PatternFields {
  Napi::Value rows, cols, blockHeight, blockWidth;
  // blockRowPtr and blockColIdx, or, column-wise, blockColPtr, blockRowIdx and valueIndex.
  Napi::Value pointers, indices, valueIndex;
};

PatternFields patternFields(Napi::Env env, const Napi::Value& value, const char* fn, bool columnWise) {
  if (!value.IsObject()) fail(env, "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": pattern must be an object");
  const Napi::Object pattern = value.As<Napi::Object>();
  PatternFields fields;
  fields.rows = pattern.Get("rows");
  fields.cols = pattern.Get("cols");
  fields.blockHeight = pattern.Get("blockHeight");
  fields.blockWidth = pattern.Get("blockWidth");
  fields.pointers = pattern.Get(columnWise ? "blockColPtr" : "blockRowPtr");
  fields.indices = pattern.Get(columnWise ? "blockRowIdx" : "blockColIdx");
  if (columnWise) fields.valueIndex = pattern.Get("valueIndex");
  return fields;
}

Napi::Int32Array indexField(Napi::Env env, const Napi::Value& value, const char* fn, const char* name) {
  const Napi::Int32Array array = typedArray<int32_t, napi_int32_array>(env, value, fn, std::string("pattern.").append(name).c_str(), "an Int32Array");
  // Another thread could change an index in shared memory between its check and the kernel's read (out of bounds).
  if (!array.ArrayBuffer().IsArrayBuffer()) {
    fail(env, "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": pattern." + name + " must not be backed by a SharedArrayBuffer (another thread could change an index after its check); pass a copy");
  }
  return array;
}

int64_t sizeField(Napi::Env env, const Napi::Value& value, const char* fn, const char* name) {
  if (!value.IsNumber()) fail(env, "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": pattern." + name + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  if (!(number >= 0) || number > 2147483647.0 || number != static_cast<double>(static_cast<int64_t>(number))) {
    fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": pattern." + name + " must be an integer in [0, 2147483647], got " + formatNumber(value));
  }
  return static_cast<int64_t>(number);
}

// ptr has outer + 1 non-decreasing offsets from 0; every idx entry below ptr[outer] is in [0, inner).
int64_t checkCompressed(Napi::Env env, const char* fn, const char* ptrName, const Napi::Int32Array& ptrArray, const char* idxName,
                        const Napi::Int32Array& idxArray, int64_t outer, int64_t inner) {
  const int32_t* ptr = ptrArray.Data();
  const int32_t* idx = idxArray.Data();
  if (static_cast<int64_t>(ptrArray.ElementLength()) != outer + 1) {
    fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": " + ptrName + " must have " + std::to_string(outer + 1) + " entries, got " +
                                   std::to_string(ptrArray.ElementLength()));
  }
  if (ptr[0] != 0) fail(env, "ERR_CPU_INDEX", std::string(fn) + ": " + ptrName + "[0] must be 0");
  for (int64_t i = 0; i < outer; i++) {
    if (ptr[i + 1] < ptr[i]) fail(env, "ERR_CPU_INDEX", std::string(fn) + ": " + ptrName + " decreases at " + std::to_string(i + 1));
  }
  const int64_t nnz = ptr[outer];
  if (static_cast<int64_t>(idxArray.ElementLength()) < nnz) {
    fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": " + idxName + " has " + std::to_string(idxArray.ElementLength()) + " entries, " + ptrName +
                                   " says " + std::to_string(nnz));
  }
  for (int64_t q = 0; q < nnz; q++) {
    if (idx[q] < 0 || idx[q] >= inner) {
      fail(env, "ERR_CPU_INDEX", std::string(fn) + ": " + idxName + "[" + std::to_string(q) + "] = " + std::to_string(idx[q]) +
                                     " is outside [0, " + std::to_string(inner) + ")");
    }
  }
  return nnz;
}

// The pattern's sizes and its row-wise (or, for bsrMatmul, column-wise) indices, all checked.
struct CheckedPattern {
  BsrView view{};
  int64_t nnz = 0;
  // The index entries the kernels read: the pointer array and the nnz entries of each index array.
  Span pointers{};
  Span indices{};
  Span valueIndices{};
};

CheckedPattern checkPattern(Napi::Env env, const PatternFields& pattern, const char* fn, bool columnWise) {
  CheckedPattern checked;
  BsrView& w = checked.view;
  w.rows = sizeField(env, pattern.rows, fn, "rows");
  w.cols = sizeField(env, pattern.cols, fn, "cols");
  w.blockHeight = sizeField(env, pattern.blockHeight, fn, "blockHeight");
  w.blockWidth = sizeField(env, pattern.blockWidth, fn, "blockWidth");
  if (w.blockHeight == 0 || w.blockWidth == 0 || w.rows % w.blockHeight != 0 || w.cols % w.blockWidth != 0) {
    fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": shape " + std::to_string(w.rows) + "x" + std::to_string(w.cols) +
                                   " is not a whole number of " + std::to_string(w.blockHeight) + "x" + std::to_string(w.blockWidth) + " blocks");
  }
  const int64_t blockRows = w.rows / w.blockHeight;
  const int64_t blockCols = w.cols / w.blockWidth;
  if (!columnWise) {
    const Napi::Int32Array rowPtr = indexField(env, pattern.pointers, fn, "blockRowPtr");
    const Napi::Int32Array colIdx = indexField(env, pattern.indices, fn, "blockColIdx");
    checked.nnz = checkCompressed(env, fn, "blockRowPtr", rowPtr, "blockColIdx", colIdx, blockRows, blockCols);
    w.blockRowPtr = rowPtr.Data();
    w.blockColIdx = colIdx.Data();
    checked.pointers = spanOf("pattern.blockRowPtr", w.blockRowPtr, 0, blockRows + 1, sizeof(int32_t));
    checked.indices = spanOf("pattern.blockColIdx", w.blockColIdx, 0, checked.nnz, sizeof(int32_t));
  }
  if (columnWise) {
    const Napi::Int32Array colPtr = indexField(env, pattern.pointers, fn, "blockColPtr");
    const Napi::Int32Array rowIdx = indexField(env, pattern.indices, fn, "blockRowIdx");
    const Napi::Int32Array valueIndexArray = indexField(env, pattern.valueIndex, fn, "valueIndex");
    const int32_t* valueIndex = valueIndexArray.Data();
    checked.nnz = checkCompressed(env, fn, "blockColPtr", colPtr, "blockRowIdx", rowIdx, blockCols, blockRows);
    if (static_cast<int64_t>(valueIndexArray.ElementLength()) < checked.nnz) {
      fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": valueIndex has " + std::to_string(valueIndexArray.ElementLength()) + " entries, blockColPtr says " +
                                     std::to_string(checked.nnz));
    }
    // Each block named once: a repeated entry read one block twice and another never (a wrong product, not an error).
    std::vector<int32_t> namedAt(static_cast<size_t>(checked.nnz), -1);
    for (int64_t p = 0; p < checked.nnz; p++) {
      if (valueIndex[p] < 0 || valueIndex[p] >= checked.nnz) {
        fail(env, "ERR_CPU_INDEX", std::string(fn) + ": valueIndex[" + std::to_string(p) + "] = " + std::to_string(valueIndex[p]) + " is outside [0, " +
                                       std::to_string(checked.nnz) + ")");
      }
      int32_t& first = namedAt[static_cast<size_t>(valueIndex[p])];
      if (first >= 0) {
        fail(env, "ERR_CPU_INDEX", std::string(fn) + ": valueIndex[" + std::to_string(p) + "] = " + std::to_string(valueIndex[p]) + " repeats valueIndex[" +
                                       std::to_string(first) + "] (it must name each block once)");
      }
      first = static_cast<int32_t>(p);
    }
    w.blockColPtr = colPtr.Data();
    w.blockRowIdx = rowIdx.Data();
    w.valueIndex = valueIndex;
    checked.pointers = spanOf("pattern.blockColPtr", w.blockColPtr, 0, blockCols + 1, sizeof(int32_t));
    checked.indices = spanOf("pattern.blockRowIdx", w.blockRowIdx, 0, checked.nnz, sizeof(int32_t));
    checked.valueIndices = spanOf("pattern.valueIndex", w.valueIndex, 0, checked.nnz, sizeof(int32_t));
  }
  return checked;
}

// The pattern's blocks' elements (nnz x R x C), checked as elementCount.
int64_t blockElements(Napi::Env env, const char* fn, const char* name, const CheckedPattern& pattern) {
  return elementCount(env, fn, name, elementCount(env, fn, name, pattern.nnz, pattern.view.blockHeight), pattern.view.blockWidth);
}

// The thread pool, the packed-operand scratch and the kernel choice are process-wide, but each
// worker_threads Worker that loads the addon calls it from its own thread: one call runs at a time.
std::mutex& callMutex() {
  static std::mutex mutex;
  return mutex;
}

// Whether setThreads, and whether a successful setIsa, has run in this process (any thread): a backend starting later (the
// first op after setCpuThreads, or one in another worker) keeps that setting, and applies the environment's to the other
// only (one flag for both had left the thread count at the hardware's, BLOCKSPARSE_CPU_THREADS unread, after setCpuIsa).
std::atomic<bool> threadsChosen{false};
std::atomic<bool> isaChosen{false};

// Runs a kernel, turning an allocation failure into a typed error.
template <typename Body>
void runKernel(Napi::Env env, const char* fn, Body body) {
  const std::lock_guard<std::mutex> lock(callMutex());
  try {
    body();
  } catch (const std::bad_alloc&) {
    fail(env, "ERR_CPU_OUT_OF_MEMORY", std::string(fn) + ": out of memory for the packed operands");
  }
}

void expectArgs(const Napi::CallbackInfo& info, size_t count, const char* fn) {
  if (info.Length() != count) {
    fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": expected " + std::to_string(count) + " arguments, got " + std::to_string(info.Length()));
  }
}

// A typed array argument and its element offset, the pair each product takes per operand (`name`, `nameOffset`):
// float32 (ArrayArg) or half bits (HalfArrayArg).
template <typename T>
struct TypedArg {
  const char* name;
  Napi::TypedArrayOf<T> array;
  int64_t offset;
  T* at() { return array.Data() + offset; }
  // Throws unless `count` elements from the offset lie inside the array.
  void require(Napi::Env env, const char* fn, int64_t count) const { checkSpan(env, fn, name, array.ElementLength(), offset, count); }
  Span span(int64_t count) const { return spanOf(name, array.Data(), offset, count, sizeof(T)); }
};
using ArrayArg = TypedArg<float>;
using HalfArrayArg = TypedArg<uint16_t>;

ArrayArg arrayArg(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name) {
  const std::string offsetName = std::string(name) + "Offset";
  return {name, floatArg(info, index, fn, name), integerArg(info, index + 1, fn, offsetName.c_str())};
}

HalfArrayArg halfArrayArg(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name) {
  const std::string offsetName = std::string(name) + "Offset";
  return {name, typedArray<uint16_t, napi_uint16_array>(info.Env(), info[index], fn, name, "a Uint16Array"), integerArg(info, index + 1, fn, offsetName.c_str())};
}

// matmul(a, aOffset, b, bOffset, c, cOffset, m, n, k, transposeA, transposeB): C = op(A) op(B).
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  const char* fn = "matmul";
  expectArgs(info, 11, fn);
  Napi::Env env = info.Env();
  ArrayArg a = arrayArg(info, 0, fn, "a"), b = arrayArg(info, 2, fn, "b"), c = arrayArg(info, 4, fn, "c");
  const int64_t m = integerArg(info, 6, fn, "m");
  const int64_t n = integerArg(info, 7, fn, "n");
  const int64_t k = integerArg(info, 8, fn, "k");
  const bool transposeA = boolArg(info, 9, fn, "transposeA");
  const bool transposeB = boolArg(info, 10, fn, "transposeB");
  a.require(env, fn, elementCount(env, fn, "a", m, k));
  b.require(env, fn, elementCount(env, fn, "b", k, n));
  c.require(env, fn, elementCount(env, fn, "c", m, n));
  checkApart(env, fn, c.span(m * n), {a.span(m * k), b.span(k * n)});
  const MatrixView av = transposeA ? MatrixView{a.at(), 1, m} : MatrixView{a.at(), k, 1};
  const MatrixView bv = transposeB ? MatrixView{b.at(), 1, k} : MatrixView{b.at(), n, 1};
  runKernel(env, fn, [&] { bsk::gemm(av, bv, c.at(), n, m, n, k, false); });
  return env.Undefined();
}

// linearHalf(x, xOffset, bits, bitsOffset, bfloat16, y, yOffset, m, n, k): Y [m, n] = X [m, k] W^T with W [n, k] as
// float16 (bfloat16) bits, read without a widened copy at few rows.
Napi::Value LinearHalf(const Napi::CallbackInfo& info) {
  const char* fn = "linearHalf";
  expectArgs(info, 10, fn);
  Napi::Env env = info.Env();
  ArrayArg x = arrayArg(info, 0, fn, "x");
  HalfArrayArg bits = halfArrayArg(info, 2, fn, "bits");
  const bool bfloat = boolArg(info, 4, fn, "bfloat16");
  ArrayArg y = arrayArg(info, 5, fn, "y");
  const int64_t m = integerArg(info, 7, fn, "m");
  const int64_t n = integerArg(info, 8, fn, "n");
  const int64_t k = integerArg(info, 9, fn, "k");
  const int64_t xCount = elementCount(env, fn, "x", m, k);
  const int64_t wCount = elementCount(env, fn, "bits", n, k);
  const int64_t yCount = elementCount(env, fn, "y", m, n);
  x.require(env, fn, xCount);
  bits.require(env, fn, wCount);
  y.require(env, fn, yCount);
  checkApart(env, fn, y.span(yCount), {x.span(xCount), bits.span(wCount)});
  runKernel(env, fn, [&] { bsk::linearHalf(x.at(), bits.at(), bfloat, y.at(), m, n, k); });
  return env.Undefined();
}

// bsrLinear(x, xOffset, values, valuesOffset, bias | null, biasOffset, y, yOffset, tokens, pattern): Y = X W^T (+ bias).
// bsrLinearHalf(x, xOffset, bits, bitsOffset, bfloat16, bias | null, biasOffset, y, yOffset, tokens, pattern): the same
// with W's values as float16 (bfloat16) bits, read without a widened copy at few tokens.
Napi::Value BsrLinearWith(const Napi::CallbackInfo& info, bool half) {
  const char* fn = half ? "bsrLinearHalf" : "bsrLinear";
  const size_t shift = half ? 1 : 0;
  expectArgs(info, 10 + shift, fn);
  Napi::Env env = info.Env();
  // Read first: its getters run JavaScript (see PatternFields).
  const PatternFields fields = patternFields(env, info[9 + shift], fn, false);
  ArrayArg x = arrayArg(info, 0, fn, "x");
  ArrayArg values{"values", Napi::Float32Array(), 0};
  HalfArrayArg bits{"bits", Napi::Uint16Array(), 0};
  if (half) bits = halfArrayArg(info, 2, fn, "bits");
  else values = arrayArg(info, 2, fn, "values");
  const bool bfloat = half && boolArg(info, 4, fn, "bfloat16");
  const bool hasBias = !info[4 + shift].IsNull() && !info[4 + shift].IsUndefined();
  ArrayArg bias{"bias", hasBias ? floatArg(info, 4 + shift, fn, "bias") : Napi::Float32Array(), integerArg(info, 5 + shift, fn, "biasOffset")};
  ArrayArg y = arrayArg(info, 6 + shift, fn, "y");
  const int64_t tokens = integerArg(info, 8 + shift, fn, "tokens");
  CheckedPattern pattern = checkPattern(env, fields, fn, false);
  BsrView& w = pattern.view;
  const int64_t valueCount = blockElements(env, fn, half ? "bits" : "values", pattern);
  x.require(env, fn, elementCount(env, fn, "x", tokens, w.cols));
  if (half) bits.require(env, fn, valueCount);
  else values.require(env, fn, valueCount);
  if (hasBias) bias.require(env, fn, w.rows);
  y.require(env, fn, elementCount(env, fn, "y", tokens, w.rows));
  checkApart(env, fn, y.span(tokens * w.rows),
             {x.span(tokens * w.cols), half ? bits.span(valueCount) : values.span(valueCount),
              spanOf("bias", hasBias ? bias.array.Data() : nullptr, bias.offset, hasBias ? w.rows : 0, sizeof(float)), pattern.pointers, pattern.indices});
  if (half) {
    w.values = nullptr;
    w.halfValues = bits.at();
    w.bfloat = bfloat;
  } else {
    w.values = values.at();
  }
  runKernel(env, fn, [&] { bsk::bsrLinear(x.at(), w, hasBias ? bias.at() : nullptr, y.at(), tokens); });
  return env.Undefined();
}

Napi::Value BsrLinear(const Napi::CallbackInfo& info) { return BsrLinearWith(info, false); }
Napi::Value BsrLinearHalf(const Napi::CallbackInfo& info) { return BsrLinearWith(info, true); }

// bsrMatmul(dy, dyOffset, values, valuesOffset, dx, dxOffset, tokens, pattern): dX = dY W.
Napi::Value BsrMatmul(const Napi::CallbackInfo& info) {
  const char* fn = "bsrMatmul";
  expectArgs(info, 8, fn);
  Napi::Env env = info.Env();
  // Read first: its getters run JavaScript (see PatternFields).
  const PatternFields fields = patternFields(env, info[7], fn, true);
  ArrayArg dy = arrayArg(info, 0, fn, "dy"), values = arrayArg(info, 2, fn, "values"), dx = arrayArg(info, 4, fn, "dx");
  const int64_t tokens = integerArg(info, 6, fn, "tokens");
  CheckedPattern pattern = checkPattern(env, fields, fn, true);
  BsrView& w = pattern.view;
  const int64_t valueCount = blockElements(env, fn, "values", pattern);
  dy.require(env, fn, elementCount(env, fn, "dy", tokens, w.rows));
  values.require(env, fn, valueCount);
  dx.require(env, fn, elementCount(env, fn, "dx", tokens, w.cols));
  checkApart(env, fn, dx.span(tokens * w.cols),
             {dy.span(tokens * w.rows), values.span(valueCount), pattern.pointers, pattern.indices, pattern.valueIndices});
  w.values = values.at();
  runKernel(env, fn, [&] { bsk::bsrMatmul(dy.at(), w, dx.at(), tokens); });
  return env.Undefined();
}

// sampledMatmul(dy, dyOffset, x, xOffset, dw, dwOffset, tokens, pattern): dW = (dY^T X) on W's blocks.
Napi::Value SampledMatmul(const Napi::CallbackInfo& info) {
  const char* fn = "sampledMatmul";
  expectArgs(info, 8, fn);
  Napi::Env env = info.Env();
  // Read first: its getters run JavaScript (see PatternFields).
  const PatternFields fields = patternFields(env, info[7], fn, false);
  ArrayArg dy = arrayArg(info, 0, fn, "dy"), x = arrayArg(info, 2, fn, "x"), dw = arrayArg(info, 4, fn, "dw");
  const int64_t tokens = integerArg(info, 6, fn, "tokens");
  CheckedPattern pattern = checkPattern(env, fields, fn, false);
  BsrView& w = pattern.view;
  const int64_t dwCount = blockElements(env, fn, "dw", pattern);
  dy.require(env, fn, elementCount(env, fn, "dy", tokens, w.rows));
  x.require(env, fn, elementCount(env, fn, "x", tokens, w.cols));
  dw.require(env, fn, dwCount);
  checkApart(env, fn, dw.span(dwCount), {dy.span(tokens * w.rows), x.span(tokens * w.cols), pattern.pointers, pattern.indices});
  runKernel(env, fn, [&] { bsk::sampledMatmul(dy.at(), x.at(), w, dw.at(), tokens); });
  return env.Undefined();
}

// A number argument (any double; the caller checks its range).
double numberArg(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name) {
  if (!info[index].IsNumber()) fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": " + name + " must be a number");
  return info[index].As<Napi::Number>().DoubleValue();
}

// An activation's code: 0 relu, 1 gelu (erf), 2 gelu_tanh.
bsk::Activation activationArg(const Napi::CallbackInfo& info, size_t index, const char* fn) {
  const int64_t code = integerArg(info, index, fn, "activation");
  if (code > 2) fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": activation must be 0 (relu), 1 (gelu) or 2 (gelu_tanh), got " + std::to_string(code));
  return static_cast<bsk::Activation>(code);
}

// An optional float32 bias (null or undefined: none) and its offset.
ArrayArg optionalArrayArg(const Napi::CallbackInfo& info, size_t index, const char* fn, const char* name, bool& present) {
  present = !info[index].IsNull() && !info[index].IsUndefined();
  const std::string offsetName = std::string(name) + "Offset";
  return {name, present ? floatArg(info, index, fn, name) : Napi::Float32Array(), integerArg(info, index + 1, fn, offsetName.c_str())};
}

Span optionalSpan(const ArrayArg& arg, bool present, int64_t count) {
  return spanOf(arg.name, present ? arg.array.Data() : nullptr, arg.offset, present ? count : 0, sizeof(float));
}

// biasActivation(x, xOffset, bias | null, biasOffset, out, outOffset, rows, width, activation):
// out = act(x + bias), rows x width, bias along the rows.
Napi::Value BiasActivation(const Napi::CallbackInfo& info) {
  const char* fn = "biasActivation";
  expectArgs(info, 9, fn);
  Napi::Env env = info.Env();
  ArrayArg x = arrayArg(info, 0, fn, "x");
  bool hasBias = false;
  ArrayArg bias = optionalArrayArg(info, 2, fn, "bias", hasBias);
  ArrayArg out = arrayArg(info, 4, fn, "out");
  const int64_t rows = integerArg(info, 6, fn, "rows");
  const int64_t width = integerArg(info, 7, fn, "width");
  const bsk::Activation activation = activationArg(info, 8, fn);
  const int64_t count = elementCount(env, fn, "x", rows, width);
  x.require(env, fn, count);
  if (hasBias) bias.require(env, fn, width);
  out.require(env, fn, count);
  checkApart(env, fn, out.span(count), {x.span(count), optionalSpan(bias, hasBias, width)});
  runKernel(env, fn, [&] { bsk::biasActivation(x.at(), hasBias ? bias.at() : nullptr, rows, width, activation, out.at()); });
  return env.Undefined();
}

// biasActivationBackward(dy, dyOffset, x, xOffset, bias | null, biasOffset, dx, dxOffset, dbias: Float64Array | null,
// rows, width, activation): dx = dy act'(x + bias); dbias = the column sums of dx (float64), when given.
Napi::Value BiasActivationBackward(const Napi::CallbackInfo& info) {
  const char* fn = "biasActivationBackward";
  expectArgs(info, 12, fn);
  Napi::Env env = info.Env();
  ArrayArg dy = arrayArg(info, 0, fn, "dy"), x = arrayArg(info, 2, fn, "x");
  bool hasBias = false;
  ArrayArg bias = optionalArrayArg(info, 4, fn, "bias", hasBias);
  ArrayArg dx = arrayArg(info, 6, fn, "dx");
  const bool hasSums = !info[8].IsNull() && !info[8].IsUndefined();
  Napi::Float64Array dbias = hasSums ? typedArray<double, napi_float64_array>(env, info[8], fn, "dbias", "a Float64Array") : Napi::Float64Array();
  const int64_t rows = integerArg(info, 9, fn, "rows");
  const int64_t width = integerArg(info, 10, fn, "width");
  const bsk::Activation activation = activationArg(info, 11, fn);
  const int64_t count = elementCount(env, fn, "dy", rows, width);
  dy.require(env, fn, count);
  x.require(env, fn, count);
  if (hasBias) bias.require(env, fn, width);
  dx.require(env, fn, count);
  if (hasSums) checkSpan(env, fn, "dbias", dbias.ElementLength(), 0, width);
  const Span inputs[] = {dy.span(count), x.span(count), optionalSpan(bias, hasBias, width)};
  checkApart(env, fn, dx.span(count), {inputs[0], inputs[1], inputs[2]});
  if (hasSums) {
    const Span sums = spanOf("dbias", dbias.Data(), 0, width, sizeof(double));
    checkApart(env, fn, sums, {inputs[0], inputs[1], inputs[2], dx.span(count)});
  }
  runKernel(env, fn, [&] {
    bsk::biasActivationBackward(dy.at(), x.at(), hasBias ? bias.at() : nullptr, rows, width, activation, dx.at(), hasSums ? dbias.Data() : nullptr);
  });
  return env.Undefined();
}

// layerNorm(x, xOffset, gamma | null, gammaOffset, beta | null, betaOffset, y, yOffset, mean, meanOffset, rstd, rstdOffset,
// rows, d, epsilon): LayerNorm over the last dim of rows x d, its mean and rstd per row.
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  const char* fn = "layerNorm";
  expectArgs(info, 15, fn);
  Napi::Env env = info.Env();
  ArrayArg x = arrayArg(info, 0, fn, "x");
  bool hasGamma = false, hasBeta = false;
  ArrayArg gamma = optionalArrayArg(info, 2, fn, "gamma", hasGamma);
  ArrayArg beta = optionalArrayArg(info, 4, fn, "beta", hasBeta);
  ArrayArg y = arrayArg(info, 6, fn, "y"), mean = arrayArg(info, 8, fn, "mean"), rstd = arrayArg(info, 10, fn, "rstd");
  const int64_t rows = integerArg(info, 12, fn, "rows");
  const int64_t d = integerArg(info, 13, fn, "d");
  // As given (a float32 epsilon is 0 below 1.4e-45: a constant row's rstd became inf and its output NaN).
  const double epsilon = numberArg(info, 14, fn, "epsilon");
  const int64_t count = elementCount(env, fn, "x", rows, d);
  x.require(env, fn, count);
  if (hasGamma) gamma.require(env, fn, d);
  if (hasBeta) beta.require(env, fn, d);
  y.require(env, fn, count);
  mean.require(env, fn, rows);
  rstd.require(env, fn, rows);
  const Span inputs[] = {x.span(count), optionalSpan(gamma, hasGamma, d), optionalSpan(beta, hasBeta, d)};
  checkApart(env, fn, y.span(count), {inputs[0], inputs[1], inputs[2], mean.span(rows), rstd.span(rows)});
  checkApart(env, fn, mean.span(rows), {inputs[0], inputs[1], inputs[2], rstd.span(rows)});
  checkApart(env, fn, rstd.span(rows), {inputs[0], inputs[1], inputs[2]});
  runKernel(env, fn, [&] {
    bsk::layerNorm(x.at(), hasGamma ? gamma.at() : nullptr, hasBeta ? beta.at() : nullptr, rows, d, epsilon, y.at(), mean.at(), rstd.at());
  });
  return env.Undefined();
}

// layerNormBackward(dy, dyOffset, x, xOffset, mean, meanOffset, rstd, rstdOffset, gamma | null, gammaOffset, dx, dxOffset,
// dgamma: Float64Array, dbeta: Float64Array, rows, d): LayerNorm's gradients, dgamma and dbeta summed in float64.
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  const char* fn = "layerNormBackward";
  expectArgs(info, 16, fn);
  Napi::Env env = info.Env();
  ArrayArg dy = arrayArg(info, 0, fn, "dy"), x = arrayArg(info, 2, fn, "x"), mean = arrayArg(info, 4, fn, "mean"), rstd = arrayArg(info, 6, fn, "rstd");
  bool hasGamma = false;
  ArrayArg gamma = optionalArrayArg(info, 8, fn, "gamma", hasGamma);
  ArrayArg dx = arrayArg(info, 10, fn, "dx");
  Napi::Float64Array dgamma = typedArray<double, napi_float64_array>(env, info[12], fn, "dgamma", "a Float64Array");
  Napi::Float64Array dbeta = typedArray<double, napi_float64_array>(env, info[13], fn, "dbeta", "a Float64Array");
  const int64_t rows = integerArg(info, 14, fn, "rows");
  const int64_t d = integerArg(info, 15, fn, "d");
  const int64_t count = elementCount(env, fn, "dy", rows, d);
  dy.require(env, fn, count);
  x.require(env, fn, count);
  mean.require(env, fn, rows);
  rstd.require(env, fn, rows);
  if (hasGamma) gamma.require(env, fn, d);
  dx.require(env, fn, count);
  checkSpan(env, fn, "dgamma", dgamma.ElementLength(), 0, d);
  checkSpan(env, fn, "dbeta", dbeta.ElementLength(), 0, d);
  const Span inputs[] = {dy.span(count), x.span(count), mean.span(rows), rstd.span(rows), optionalSpan(gamma, hasGamma, d)};
  const Span gammaSums = spanOf("dgamma", dgamma.Data(), 0, d, sizeof(double));
  const Span betaSums = spanOf("dbeta", dbeta.Data(), 0, d, sizeof(double));
  checkApart(env, fn, dx.span(count), {inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]});
  checkApart(env, fn, gammaSums, {inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], dx.span(count), betaSums});
  checkApart(env, fn, betaSums, {inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], dx.span(count)});
  runKernel(env, fn, [&] {
    bsk::layerNormBackward(dy.at(), x.at(), mean.at(), rstd.at(), hasGamma ? gamma.at() : nullptr, rows, d, dx.at(), dgamma.Data(), dbeta.Data());
  });
  return env.Undefined();
}

// Attention's rows `rows` x n from query row `first` of an m x n batch matrix: first + rows must not pass m. The flags
// (one per row, a Uint8Array from 0) are written.
struct AttentionRows {
  int64_t rows, n, first, m, count;
  bool causal;
  double scale;
  Napi::Uint8Array flags;
};

AttentionRows attentionRowsArgs(const Napi::CallbackInfo& info, size_t at, const char* fn) {
  Napi::Env env = info.Env();
  AttentionRows args{};
  args.flags = typedArray<uint8_t, napi_uint8_array>(env, info[at], fn, "flags", "a Uint8Array");
  args.rows = integerArg(info, at + 1, fn, "rows");
  args.n = integerArg(info, at + 2, fn, "n");
  args.first = integerArg(info, at + 3, fn, "first");
  args.m = integerArg(info, at + 4, fn, "m");
  args.causal = boolArg(info, at + 5, fn, "causal");
  args.scale = numberArg(info, at + 6, fn, "scale");
  if (args.first > args.m || args.rows > args.m - args.first) {
    fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": rows " + std::to_string(args.first) + " to " + std::to_string(args.first + args.rows) +
                                   " pass the batch matrix's " + std::to_string(args.m) + " query rows");
  }
  args.count = elementCount(env, fn, "scores", args.rows, args.n);
  checkSpan(env, fn, "flags", args.flags.ElementLength(), 0, args.rows);
  return args;
}

Span flagsSpan(const AttentionRows& args) { return spanOf("flags", args.flags.Data(), 0, args.rows, sizeof(uint8_t)); }

// attentionSoftmax(s, sOffset, lse | null, lseOffset, flags, rows, n, first, m, causal, scale): each row of scores whose
// kept keys are finite becomes its softmax (lse[r] its log-sum-exp), flags[r] 0, or 1 where a probability underflowed
// in float32; a row with a non-finite kept score is left as it is, flags[r] 2.
Napi::Value AttentionSoftmax(const Napi::CallbackInfo& info) {
  const char* fn = "attentionSoftmax";
  expectArgs(info, 11, fn);
  Napi::Env env = info.Env();
  ArrayArg s = arrayArg(info, 0, fn, "s");
  bool hasLse = false;
  ArrayArg lse = optionalArrayArg(info, 2, fn, "lse", hasLse);
  AttentionRows args = attentionRowsArgs(info, 4, fn);
  s.require(env, fn, args.count);
  if (hasLse) lse.require(env, fn, args.rows);
  checkApart(env, fn, s.span(args.count), {optionalSpan(lse, hasLse, args.rows), flagsSpan(args)});
  checkApart(env, fn, optionalSpan(lse, hasLse, args.rows), {flagsSpan(args)});
  runKernel(env, fn, [&] {
    bsk::attentionSoftmax(s.at(), hasLse ? lse.at() : nullptr, args.flags.Data(), args.rows, args.n, args.first, args.m, args.causal, args.scale);
  });
  return env.Undefined();
}

// attentionScoreGradients(p, pOffset, ds, dsOffset, flags, rows, n, first, m, causal, scale, shift: Float64Array | null):
// dS = P (dP - Di) scale in place over dP, Di = sum_j P dP (+ shift[r] when given), flags[r] 2 where the row's dS sums to
// a non-finite value, else 0.
Napi::Value AttentionScoreGradients(const Napi::CallbackInfo& info) {
  const char* fn = "attentionScoreGradients";
  expectArgs(info, 12, fn);
  Napi::Env env = info.Env();
  ArrayArg p = arrayArg(info, 0, fn, "p"), ds = arrayArg(info, 2, fn, "ds");
  AttentionRows args = attentionRowsArgs(info, 4, fn);
  const bool hasShift = !info[11].IsNull() && !info[11].IsUndefined();
  Napi::Float64Array shift = hasShift ? typedArray<double, napi_float64_array>(env, info[11], fn, "shift", "a Float64Array") : Napi::Float64Array();
  p.require(env, fn, args.count);
  ds.require(env, fn, args.count);
  if (hasShift) checkSpan(env, fn, "shift", shift.ElementLength(), 0, args.rows);
  const Span shiftSpan = spanOf("shift", hasShift ? shift.Data() : nullptr, 0, hasShift ? args.rows : 0, sizeof(double));
  checkApart(env, fn, ds.span(args.count), {p.span(args.count), flagsSpan(args), shiftSpan});
  checkApart(env, fn, flagsSpan(args), {p.span(args.count), shiftSpan});
  runKernel(env, fn, [&] {
    bsk::attentionScoreGradients(p.at(), ds.at(), hasShift ? shift.Data() : nullptr, args.flags.Data(), args.rows, args.n, args.first, args.m, args.causal,
                                 args.scale);
  });
  return env.Undefined();
}

// The sizes of attentionForward and attentionBackward from `at`: heads, m, n, d, causal, scale, blockRows; and the
// per-head flags (a Uint8Array of at least `heads`, written).
struct AttentionHeadsArgs {
  bsk::AttentionShape shape;
  int64_t queries, keys;
  Napi::Uint8Array exact;
};

AttentionHeadsArgs attentionHeadsArgs(const Napi::CallbackInfo& info, size_t exactAt, size_t at, const char* fn) {
  Napi::Env env = info.Env();
  AttentionHeadsArgs args{};
  args.exact = typedArray<uint8_t, napi_uint8_array>(env, info[exactAt], fn, "exact", "a Uint8Array");
  bsk::AttentionShape& shape = args.shape;
  shape.heads = integerArg(info, at, fn, "heads");
  shape.m = integerArg(info, at + 1, fn, "m");
  shape.n = integerArg(info, at + 2, fn, "n");
  shape.d = integerArg(info, at + 3, fn, "d");
  shape.causal = boolArg(info, at + 4, fn, "causal");
  shape.scale = numberArg(info, at + 5, fn, "scale");
  shape.blockRows = integerArg(info, at + 6, fn, "blockRows");
  if (shape.blockRows < 1) fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": blockRows must be at least 1, got 0");
  args.queries = elementCount(env, fn, "q", elementCount(env, fn, "q", shape.heads, shape.m), shape.d);
  args.keys = elementCount(env, fn, "k", elementCount(env, fn, "k", shape.heads, shape.n), shape.d);
  // A block's scores (and the backward's second buffer) must be countable.
  elementCount(env, fn, "scores", std::min(shape.blockRows, std::max<int64_t>(shape.m, 1)), shape.n);
  checkSpan(env, fn, "exact", args.exact.ElementLength(), 0, shape.heads);
  return args;
}

Span exactSpan(const AttentionHeadsArgs& args) { return spanOf("exact", args.exact.Data(), 0, args.shape.heads, sizeof(uint8_t)); }

// attentionForward(q, qOffset, k, kOffset, v, vOffset, out, outOffset, lse, lseOffset, exact, heads, m, n, d, causal,
// scale, blockRows): out [heads, m, d] and lse [heads, m] of heads batch matrices q [m, d] against k and v [n, d], all
// contiguous; exact[b] 1 where head b is left to the caller (a non-finite input or score), else 0.
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  const char* fn = "attentionForward";
  expectArgs(info, 18, fn);
  Napi::Env env = info.Env();
  ArrayArg q = arrayArg(info, 0, fn, "q"), k = arrayArg(info, 2, fn, "k"), v = arrayArg(info, 4, fn, "v");
  ArrayArg out = arrayArg(info, 6, fn, "out"), lse = arrayArg(info, 8, fn, "lse");
  AttentionHeadsArgs args = attentionHeadsArgs(info, 10, 11, fn);
  const int64_t lseCount = elementCount(env, fn, "lse", args.shape.heads, args.shape.m);
  q.require(env, fn, args.queries);
  k.require(env, fn, args.keys);
  v.require(env, fn, args.keys);
  out.require(env, fn, args.queries);
  lse.require(env, fn, lseCount);
  const std::initializer_list<Span> inputs = {q.span(args.queries), k.span(args.keys), v.span(args.keys)};
  checkApart(env, fn, out.span(args.queries), inputs);
  checkApart(env, fn, out.span(args.queries), {lse.span(lseCount), exactSpan(args)});
  checkApart(env, fn, lse.span(lseCount), inputs);
  checkApart(env, fn, lse.span(lseCount), {exactSpan(args)});
  checkApart(env, fn, exactSpan(args), inputs);
  const bsk::HeadLayout queries = bsk::HeadLayout::contiguous(args.shape.m, args.shape.d), keys = bsk::HeadLayout::contiguous(args.shape.n, args.shape.d);
  runKernel(env, fn, [&] {
    bsk::attentionForward({q.at(), queries}, {k.at(), keys}, {v.at(), keys}, {out.at(), queries}, lse.at(), args.exact.Data(), args.shape);
  });
  return env.Undefined();
}

// attentionBackward(dout, doutOffset, q, qOffset, k, kOffset, v, vOffset, out | null, outOffset, dq, dqOffset, dk,
// dkOffset, dv, dvOffset, exact, heads, m, n, d, causal, scale, blockRows): dq [heads, m, d], dk and dv [heads, n, d] of
// attentionForward's heads from the output gradient dout [heads, m, d]; with out (the saved output [heads, m, d], rounded
// to a half dtype) Di is dout . out (see bsk::attentionBackward); exact as attentionForward's.
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  const char* fn = "attentionBackward";
  expectArgs(info, 24, fn);
  Napi::Env env = info.Env();
  ArrayArg dout = arrayArg(info, 0, fn, "dout"), q = arrayArg(info, 2, fn, "q"), k = arrayArg(info, 4, fn, "k"), v = arrayArg(info, 6, fn, "v");
  bool hasOut = false;
  ArrayArg out = optionalArrayArg(info, 8, fn, "out", hasOut);
  ArrayArg dq = arrayArg(info, 10, fn, "dq"), dk = arrayArg(info, 12, fn, "dk"), dv = arrayArg(info, 14, fn, "dv");
  AttentionHeadsArgs args = attentionHeadsArgs(info, 16, 17, fn);
  dout.require(env, fn, args.queries);
  q.require(env, fn, args.queries);
  k.require(env, fn, args.keys);
  v.require(env, fn, args.keys);
  if (hasOut) out.require(env, fn, args.queries);
  dq.require(env, fn, args.queries);
  dk.require(env, fn, args.keys);
  dv.require(env, fn, args.keys);
  const std::initializer_list<Span> inputs = {dout.span(args.queries), q.span(args.queries), k.span(args.keys), v.span(args.keys),
                                              optionalSpan(out, hasOut, args.queries)};
  for (const Span& output : {dq.span(args.queries), dk.span(args.keys), dv.span(args.keys), exactSpan(args)}) checkApart(env, fn, output, inputs);
  checkApart(env, fn, dq.span(args.queries), {dk.span(args.keys), dv.span(args.keys), exactSpan(args)});
  checkApart(env, fn, dk.span(args.keys), {dv.span(args.keys), exactSpan(args)});
  checkApart(env, fn, dv.span(args.keys), {exactSpan(args)});
  const bsk::HeadLayout queries = bsk::HeadLayout::contiguous(args.shape.m, args.shape.d), keys = bsk::HeadLayout::contiguous(args.shape.n, args.shape.d);
  runKernel(env, fn, [&] {
    bsk::attentionBackward({dout.at(), queries}, {q.at(), queries}, {k.at(), keys}, {v.at(), keys}, {hasOut ? out.at() : nullptr, queries}, {dq.at(), queries},
                           {dk.at(), keys}, {dv.at(), keys}, args.exact.Data(), args.shape);
  });
  return env.Undefined();
}

// Packed attention's sizes from `at`: sequences, t, h, d, causal, scale, blockRows (heads = sequences h, m = n = t);
// the per-head flags at exactAt. `rows` is sequences t h d (the output's and dout's elements), `packed` 3 rows (qkv's).
struct PackedAttentionArgs {
  bsk::AttentionShape shape;
  int64_t h, rows, packed, lseCount;
  Napi::Uint8Array exact;
};

PackedAttentionArgs packedAttentionArgs(const Napi::CallbackInfo& info, size_t exactAt, size_t at, const char* fn) {
  Napi::Env env = info.Env();
  PackedAttentionArgs args{};
  args.exact = typedArray<uint8_t, napi_uint8_array>(env, info[exactAt], fn, "exact", "a Uint8Array");
  const int64_t sequences = integerArg(info, at, fn, "sequences");
  const int64_t t = integerArg(info, at + 1, fn, "t");
  args.h = integerArg(info, at + 2, fn, "h");
  const int64_t d = integerArg(info, at + 3, fn, "d");
  bsk::AttentionShape& shape = args.shape;
  shape.causal = boolArg(info, at + 4, fn, "causal");
  shape.scale = numberArg(info, at + 5, fn, "scale");
  shape.blockRows = integerArg(info, at + 6, fn, "blockRows");
  if (shape.blockRows < 1) fail(env, "ERR_CPU_SHAPE", std::string(fn) + ": blockRows must be at least 1, got 0");
  shape.heads = elementCount(env, fn, "heads", sequences, args.h);
  shape.m = shape.n = t;
  shape.d = d;
  args.lseCount = elementCount(env, fn, "lse", shape.heads, t);
  args.rows = elementCount(env, fn, "out", args.lseCount, d);
  args.packed = elementCount(env, fn, "qkv", args.rows, 3);
  elementCount(env, fn, "scores", std::min(shape.blockRows, std::max<int64_t>(t, 1)), t);
  checkSpan(env, fn, "exact", args.exact.ElementLength(), 0, shape.heads);
  return args;
}

// The layouts of packed attention's qkv part `part` (0 q, 1 k, 2 v) and of its output rows.
bsk::HeadLayout packedPart(const PackedAttentionArgs& args) {
  const int64_t hd = args.h * args.shape.d;
  return bsk::HeadLayout{std::max<int64_t>(args.h, 1), args.shape.m * 3 * hd, args.shape.d, 3 * hd};
}
bsk::HeadLayout packedRows(const PackedAttentionArgs& args) {
  const int64_t hd = args.h * args.shape.d;
  return bsk::HeadLayout{std::max<int64_t>(args.h, 1), args.shape.m * hd, args.shape.d, hd};
}

// packedAttentionForward(qkv, qkvOffset, out, outOffset, lse, lseOffset, exact, sequences, t, h, d, causal, scale,
// blockRows): attention of each head of qkv [sequences, t, 3, h, d] read from its rows, out [sequences, t, h, d] written
// in its rows, lse [sequences, h, t]; exact as attentionForward's (one per head, sequence-major).
Napi::Value PackedAttentionForward(const Napi::CallbackInfo& info) {
  const char* fn = "packedAttentionForward";
  expectArgs(info, 14, fn);
  Napi::Env env = info.Env();
  ArrayArg qkv = arrayArg(info, 0, fn, "qkv"), out = arrayArg(info, 2, fn, "out"), lse = arrayArg(info, 4, fn, "lse");
  PackedAttentionArgs args = packedAttentionArgs(info, 6, 7, fn);
  qkv.require(env, fn, args.packed);
  out.require(env, fn, args.rows);
  lse.require(env, fn, args.lseCount);
  const Span exact = spanOf("exact", args.exact.Data(), 0, args.shape.heads, sizeof(uint8_t));
  checkApart(env, fn, out.span(args.rows), {qkv.span(args.packed), lse.span(args.lseCount), exact});
  checkApart(env, fn, lse.span(args.lseCount), {qkv.span(args.packed), exact});
  checkApart(env, fn, exact, {qkv.span(args.packed)});
  const bsk::HeadLayout part = packedPart(args), rows = packedRows(args);
  const int64_t hd = args.h * args.shape.d;
  runKernel(env, fn, [&] {
    bsk::attentionForward({qkv.at(), part}, {qkv.at() + hd, part}, {qkv.at() + 2 * hd, part}, {out.at(), rows}, lse.at(), args.exact.Data(), args.shape);
  });
  return env.Undefined();
}

// packedAttentionBackward(dout, doutOffset, qkv, qkvOffset, out | null, outOffset, dqkv, dqkvOffset, exact, sequences,
// t, h, d, causal, scale, blockRows): dqkv [sequences, t, 3, h, d] (dq, dk and dv in qkv's places) from dout [sequences,
// t, h, d]; out (the saved output, dout's layout) and exact as attentionBackward's.
Napi::Value PackedAttentionBackward(const Napi::CallbackInfo& info) {
  const char* fn = "packedAttentionBackward";
  expectArgs(info, 16, fn);
  Napi::Env env = info.Env();
  ArrayArg dout = arrayArg(info, 0, fn, "dout"), qkv = arrayArg(info, 2, fn, "qkv");
  bool hasOut = false;
  ArrayArg out = optionalArrayArg(info, 4, fn, "out", hasOut);
  ArrayArg dqkv = arrayArg(info, 6, fn, "dqkv");
  PackedAttentionArgs args = packedAttentionArgs(info, 8, 9, fn);
  dout.require(env, fn, args.rows);
  qkv.require(env, fn, args.packed);
  if (hasOut) out.require(env, fn, args.rows);
  dqkv.require(env, fn, args.packed);
  const Span exact = spanOf("exact", args.exact.Data(), 0, args.shape.heads, sizeof(uint8_t));
  checkApart(env, fn, dqkv.span(args.packed), {dout.span(args.rows), qkv.span(args.packed), optionalSpan(out, hasOut, args.rows), exact});
  checkApart(env, fn, exact, {dout.span(args.rows), qkv.span(args.packed), optionalSpan(out, hasOut, args.rows)});
  const bsk::HeadLayout part = packedPart(args), rows = packedRows(args);
  const int64_t hd = args.h * args.shape.d;
  runKernel(env, fn, [&] {
    bsk::attentionBackward({dout.at(), rows}, {qkv.at(), part}, {qkv.at() + hd, part}, {qkv.at() + 2 * hd, part}, {hasOut ? out.at() : nullptr, rows},
                           {dqkv.at(), part}, {dqkv.at() + hd, part}, {dqkv.at() + 2 * hd, part}, args.exact.Data(), args.shape);
  });
  return env.Undefined();
}

// cachedAttention(q, qOffset, k, kOffset, v, vOffset, positions, out, outOffset, heads, m, n, d, scale): out [heads, m,
// d], each query row i of q [heads, m, d] over the keys [0, positions[i]] of k and v [heads, n, d] (clamped to [0, n);
// none: zeros), softmax(scale q k^T) v in float64. positions: an Int32Array of at least m.
Napi::Value CachedAttention(const Napi::CallbackInfo& info) {
  const char* fn = "cachedAttention";
  expectArgs(info, 14, fn);
  Napi::Env env = info.Env();
  ArrayArg q = arrayArg(info, 0, fn, "q"), k = arrayArg(info, 2, fn, "k"), v = arrayArg(info, 4, fn, "v");
  Napi::Int32Array positions = typedArray<int32_t, napi_int32_array>(env, info[6], fn, "positions", "an Int32Array");
  // The kernel reads each position twice (the call's longest row sizes the rows' scores): another thread changing one in
  // between made a row longer than its buffer (a heap overflow), as for the pattern's indices (indexField).
  if (!positions.ArrayBuffer().IsArrayBuffer()) {
    fail(env, "ERR_CPU_INVALID_ARGUMENT", std::string(fn) + ": positions must not be backed by a SharedArrayBuffer (another thread could change a position during the call); pass a copy");
  }
  ArrayArg out = arrayArg(info, 7, fn, "out");
  const int64_t heads = integerArg(info, 9, fn, "heads");
  const int64_t m = integerArg(info, 10, fn, "m");
  const int64_t n = integerArg(info, 11, fn, "n");
  const int64_t d = integerArg(info, 12, fn, "d");
  const double scale = numberArg(info, 13, fn, "scale");
  const int64_t queries = elementCount(env, fn, "q", elementCount(env, fn, "q", heads, m), d);
  const int64_t keys = elementCount(env, fn, "k", elementCount(env, fn, "k", heads, n), d);
  q.require(env, fn, queries);
  k.require(env, fn, keys);
  v.require(env, fn, keys);
  out.require(env, fn, queries);
  checkSpan(env, fn, "positions", positions.ElementLength(), 0, m);
  checkApart(env, fn, out.span(queries), {q.span(queries), k.span(keys), v.span(keys), spanOf("positions", positions.Data(), 0, m, sizeof(int32_t))});
  runKernel(env, fn, [&] { bsk::cachedAttention(q.at(), k.at(), v.at(), positions.Data(), out.at(), heads, m, n, d, scale); });
  return env.Undefined();
}

// sumLeading(x, xOffset, rows, width, mean, out, outOffset): out [width] = the column sums of x [rows, width] in
// float64, divided by rows when mean (NaN for no rows), rounded once.
Napi::Value SumLeading(const Napi::CallbackInfo& info) {
  const char* fn = "sumLeading";
  expectArgs(info, 7, fn);
  Napi::Env env = info.Env();
  ArrayArg x = arrayArg(info, 0, fn, "x");
  const int64_t rows = integerArg(info, 2, fn, "rows");
  const int64_t width = integerArg(info, 3, fn, "width");
  const bool mean = boolArg(info, 4, fn, "mean");
  ArrayArg out = arrayArg(info, 5, fn, "out");
  const int64_t count = elementCount(env, fn, "x", rows, width);
  x.require(env, fn, count);
  out.require(env, fn, width);
  checkApart(env, fn, out.span(width), {x.span(count)});
  runKernel(env, fn, [&] { bsk::sumLeading(x.at(), rows, width, mean ? static_cast<double>(rows) : 1.0, out.at()); });
  return env.Undefined();
}

// adamUpdate(p, pOffset, g, gOffset, m, mOffset, v, vOffset, n, lr, beta1, beta2, epsilon, weightDecay, decoupled,
// correction1, correction2): one Adam/AdamW step, p, m and v written in place.
Napi::Value AdamUpdate(const Napi::CallbackInfo& info) {
  const char* fn = "adamUpdate";
  expectArgs(info, 17, fn);
  Napi::Env env = info.Env();
  ArrayArg p = arrayArg(info, 0, fn, "p"), g = arrayArg(info, 2, fn, "g"), m = arrayArg(info, 4, fn, "m"), v = arrayArg(info, 6, fn, "v");
  const int64_t n = integerArg(info, 8, fn, "n");
  bsk::AdamStep step{};
  step.lr = numberArg(info, 9, fn, "lr");
  step.beta1 = numberArg(info, 10, fn, "beta1");
  step.beta2 = numberArg(info, 11, fn, "beta2");
  step.epsilon = numberArg(info, 12, fn, "epsilon");
  step.weightDecay = numberArg(info, 13, fn, "weightDecay");
  step.decoupled = boolArg(info, 14, fn, "decoupled");
  step.correction1 = numberArg(info, 15, fn, "correction1");
  step.correction2 = numberArg(info, 16, fn, "correction2");
  for (ArrayArg* a : {&p, &g, &m, &v}) a->require(env, fn, n);
  // Each written array apart from every other array: an element is read and written by the same thread, but two
  // names for one buffer would update it twice.
  checkApart(env, fn, p.span(n), {g.span(n), m.span(n), v.span(n)});
  checkApart(env, fn, m.span(n), {g.span(n), v.span(n)});
  checkApart(env, fn, v.span(n), {g.span(n)});
  runKernel(env, fn, [&] { bsk::adamUpdate(p.at(), g.at(), m.at(), v.at(), n, step); });
  return env.Undefined();
}

// widenHalf(bits, bitsOffset, out, outOffset, count, bfloat16): out = the float32 values of `count` float16 (or
// bfloat16) bit patterns, exactly. roundHalf(values, valuesOffset, out, outOffset, count, bfloat16): out = the float16
// (or bfloat16) bits of `count` float32 values, rounded to nearest, ties to even.
template <bool Widen>
Napi::Value ConvertHalf(const Napi::CallbackInfo& info) {
  const char* fn = Widen ? "widenHalf" : "roundHalf";
  expectArgs(info, 6, fn);
  Napi::Env env = info.Env();
  HalfArrayArg bits = halfArrayArg(info, Widen ? 0 : 2, fn, Widen ? "bits" : "out");
  ArrayArg floats = arrayArg(info, Widen ? 2 : 0, fn, Widen ? "out" : "values");
  const int64_t count = integerArg(info, 4, fn, "count");
  const bool bfloat = boolArg(info, 5, fn, "bfloat16");
  // In argument order, so the first one short is named first.
  if (Widen) bits.require(env, fn, count);
  floats.require(env, fn, count);
  if (!Widen) bits.require(env, fn, count);
  if (Widen) checkApart(env, fn, floats.span(count), {bits.span(count)});
  else checkApart(env, fn, bits.span(count), {floats.span(count)});
  runKernel(env, fn, [&] {
    if (Widen) bsk::widenHalf(bits.at(), count, bfloat, floats.at());
    else bsk::roundToHalf(floats.at(), count, bfloat, bits.at());
  });
  return env.Undefined();
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::lock_guard<std::mutex> lock(callMutex());
  Napi::Object out = Napi::Object::New(env);
  const bsk::MicroKernel& kernel = bsk::activeKernel();
  out.Set("isa", kernel.name);
  out.Set("tileRows", kernel.mr);
  out.Set("tileCols", kernel.nr);
  out.Set("threads", bsk::threadCount());
  out.Set("hardwareThreads", bsk::hardwareThreads());
  out.Set("polling", bsk::threadsPoll());
  out.Set("threadsChosen", threadsChosen.load());
  out.Set("isaChosen", isaChosen.load());
  out.Set("settingsChosen", threadsChosen.load() || isaChosen.load());
#if defined(__x86_64__) || defined(_M_X64)
  out.Set("arch", "x64");
#elif defined(__aarch64__)
  out.Set("arch", "arm64");
#else
  out.Set("arch", "other");
#endif
  return out;
}

// setThreads(n): resizes the pool (n < 1: the hardware's count); returns the count in use.
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  expectArgs(info, 1, "setThreads");
  const int64_t n = integerArg(info, 0, "setThreads", "n");
  const std::lock_guard<std::mutex> lock(callMutex());
  bsk::setThreadCount(static_cast<int>(n > 4096 ? 4096 : n));
  threadsChosen = true;
  return Napi::Number::New(info.Env(), bsk::threadCount());
}

// setIsa(name): picks the micro-kernel ("avx512", "avx2", "scalar"); false when this CPU lacks it.
Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  expectArgs(info, 1, "setIsa");
  if (!info[0].IsString()) fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", "setIsa: name must be a string");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const std::lock_guard<std::mutex> lock(callMutex());
  // Checked whole: as a C string, "scalar\0avx2" would read as "scalar".
  const bool chosen = name.find('\0') == std::string::npos && bsk::setActiveKernel(name.c_str());
  if (chosen) isaChosen = true;
  return Napi::Boolean::New(info.Env(), chosen);
}

// adviseHugePages(buffer): asks Linux to back the buffer's whole 2 MiB pages with transparent huge
// pages when first touched (one fault per 2 MiB instead of 512); returns the bytes advised (0 elsewhere).
Napi::Value AdviseHugePages(const Napi::CallbackInfo& info) {
  expectArgs(info, 1, "adviseHugePages");
  if (!info[0].IsArrayBuffer()) fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", "adviseHugePages: buffer must be an ArrayBuffer");
  Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
  double advised = 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(2) << 20;
  const uintptr_t start = reinterpret_cast<uintptr_t>(buffer.Data());
  const uintptr_t first = (start + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t last = (start + buffer.ByteLength()) & ~(kHugePage - 1);
  // A refusal (THP off, "never") only costs the speed-up, so its result is reported, not thrown.
  if (last > first && madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE) == 0) advised = static_cast<double>(last - first);
#endif
  return Napi::Number::New(info.Env(), advised);
}

// alignmentOffset(buffer): bytes from the buffer's start to its first 64-byte (cache line) boundary,
// where storage should start: a vector load that straddles two lines costs both (a weight streamed
// from 16 bytes past a line ran about 30% slower). 0 when the buffer is not 4-byte aligned.
Napi::Value AlignmentOffset(const Napi::CallbackInfo& info) {
  expectArgs(info, 1, "alignmentOffset");
  if (!info[0].IsArrayBuffer()) fail(info.Env(), "ERR_CPU_INVALID_ARGUMENT", "alignmentOffset: buffer must be an ArrayBuffer");
  constexpr uintptr_t kLine = 64;
  const uintptr_t start = reinterpret_cast<uintptr_t>(info[0].As<Napi::ArrayBuffer>().Data());
  const uintptr_t offset = (kLine - start % kLine) % kLine;
  return Napi::Number::New(info.Env(), offset % 4 == 0 ? static_cast<double>(offset) : 0.0);
}

// scratchBytes(): bytes the products' packed-operand scratch holds now, all threads' together. Each buffer is kept
// for the next product and grows to the largest it was asked for: a product's own need is the growth it causes.
Napi::Value ScratchBytes(const Napi::CallbackInfo& info) {
  expectArgs(info, 0, "scratchBytes");
  const std::lock_guard<std::mutex> lock(callMutex());
  return Napi::Number::New(info.Env(), static_cast<double>(bsk::scratchBytesHeld().load()));
}

// releaseScratch(): frees the products' scratch, packed operands and per-thread sums (scratchBytes() is then 0); the
// next product allocates what it needs again. Each buffer otherwise stays at the largest it was asked for: a product
// over a large weight had kept a packed copy of it for the life of the process.
Napi::Value ReleaseScratch(const Napi::CallbackInfo& info) {
  expectArgs(info, 0, "releaseScratch");
  const std::lock_guard<std::mutex> lock(callMutex());
  bsk::Scratch::releaseAll();
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("adviseHugePages", Napi::Function::New(env, AdviseHugePages, "adviseHugePages"));
  exports.Set("alignmentOffset", Napi::Function::New(env, AlignmentOffset, "alignmentOffset"));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa, "setIsa"));
  exports.Set("matmul", Napi::Function::New(env, Matmul, "matmul"));
  exports.Set("linearHalf", Napi::Function::New(env, LinearHalf, "linearHalf"));
  exports.Set("biasActivation", Napi::Function::New(env, BiasActivation, "biasActivation"));
  exports.Set("biasActivationBackward", Napi::Function::New(env, BiasActivationBackward, "biasActivationBackward"));
  exports.Set("layerNorm", Napi::Function::New(env, LayerNorm, "layerNorm"));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward, "layerNormBackward"));
  exports.Set("attentionSoftmax", Napi::Function::New(env, AttentionSoftmax, "attentionSoftmax"));
  exports.Set("attentionScoreGradients", Napi::Function::New(env, AttentionScoreGradients, "attentionScoreGradients"));
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward, "attentionForward"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
  exports.Set("packedAttentionForward", Napi::Function::New(env, PackedAttentionForward, "packedAttentionForward"));
  exports.Set("packedAttentionBackward", Napi::Function::New(env, PackedAttentionBackward, "packedAttentionBackward"));
  exports.Set("cachedAttention", Napi::Function::New(env, CachedAttention, "cachedAttention"));
  exports.Set("sumLeading", Napi::Function::New(env, SumLeading, "sumLeading"));
  exports.Set("adamUpdate", Napi::Function::New(env, AdamUpdate, "adamUpdate"));
  exports.Set("widenHalf", Napi::Function::New(env, ConvertHalf<true>, "widenHalf"));
  exports.Set("roundHalf", Napi::Function::New(env, ConvertHalf<false>, "roundHalf"));
  exports.Set("bsrLinear", Napi::Function::New(env, BsrLinear, "bsrLinear"));
  exports.Set("bsrLinearHalf", Napi::Function::New(env, BsrLinearHalf, "bsrLinearHalf"));
  exports.Set("bsrMatmul", Napi::Function::New(env, BsrMatmul, "bsrMatmul"));
  exports.Set("sampledMatmul", Napi::Function::New(env, SampledMatmul, "sampledMatmul"));
  exports.Set("scratchBytes", Napi::Function::New(env, ScratchBytes, "scratchBytes"));
  exports.Set("releaseScratch", Napi::Function::New(env, ReleaseScratch, "releaseScratch"));
  return exports;
}

}  // namespace

NODE_API_MODULE(blocksparse_cpu, Init)
