// dev's decoding variants of bsrLinear by number (dev_variants.h): what TcOptions::devDecode launches for tc_bench.
#include <cuda_runtime.h>

#include "dev_variants.h"

namespace bs::tc {

namespace {

// The current device's L2 bytes (the pairs kernel's prefetch share), 0 when the runtime cannot say.
int l2BytesOfDevice() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return bytes;
}

}  // namespace

bool launchDecodeDevVariant(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                            const BsrPatternView& pattern, int variant, int numSms, cudaStream_t stream) {
  if (variant != kDecodePairsVariant) return false;
  return launchDecodePairs(dtype, x, values, bias, y, m, pattern, numSms, l2BytesOfDevice(), stream);
}

int decodeDevWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int variant, int numSms) {
  return variant == kDecodePairsVariant ? decodePairsWarps(dtype, pattern, m, numSms) : 0;
}

}  // namespace bs::tc
