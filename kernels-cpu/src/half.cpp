#include "half.h"

#include <algorithm>

#include "clones.h"
#include "threads.h"

namespace bsk {
namespace {

// Elements per work item (64 KiB of halves): a 4096 x 4096 weight is 512 items; fewer than two items' worth runs on
// the calling thread alone, where handing out work costs more than converting.
constexpr int64_t kChunk = 32768;

BSK_CLONES void widenRun(const uint16_t* __restrict bits, int64_t n, bool bfloat, float* __restrict out) {
  uint32_t* words = reinterpret_cast<uint32_t*>(out);
  if (bfloat) {
    for (int64_t i = 0; i < n; i++) words[i] = static_cast<uint32_t>(bits[i]) << 16;
  } else {
    for (int64_t i = 0; i < n; i++) words[i] = float16ToFloat32Bits(bits[i]);
  }
}

BSK_CLONES void roundRun(const float* __restrict values, int64_t n, bool bfloat, uint16_t* __restrict out) {
  const uint32_t* words = reinterpret_cast<const uint32_t*>(values);
  if (bfloat) {
    for (int64_t i = 0; i < n; i++) out[i] = bfloat16FromFloat32Bits(words[i]);
  } else {
    for (int64_t i = 0; i < n; i++) out[i] = static_cast<uint16_t>(float16FromFloat32Bits(words[i]));
  }
}

template <typename Run>
void inChunks(int64_t n, Run run) {
  if (n < 2 * kChunk) {
    run(0, n);
    return;
  }
  parallelFor((n + kChunk - 1) / kChunk, [&](int64_t chunk) {
    const int64_t begin = chunk * kChunk;
    run(begin, std::min(kChunk, n - begin));
  });
}

}  // namespace

void widenHalf(const uint16_t* bits, int64_t n, bool bfloat, float* out) {
  inChunks(n, [&](int64_t begin, int64_t count) { widenRun(bits + begin, count, bfloat, out + begin); });
}

void widenHalfSerial(const uint16_t* bits, int64_t n, bool bfloat, float* out) { widenRun(bits, n, bfloat, out); }

void roundToHalf(const float* values, int64_t n, bool bfloat, uint16_t* out) {
  inChunks(n, [&](int64_t begin, int64_t count) { roundRun(values + begin, count, bfloat, out + begin); });
}

}  // namespace bsk
