// The register-tile micro-kernels every product runs on, one per instruction set, picked at runtime.
#pragma once
#include <cstdint>

namespace bsk {

// One run of the shared K dimension: `k` steps of packed A (mr floats a step) and packed B (nr floats a step).
struct Segment {
  const float* a;
  const float* b;
  int64_t k;
};

// C[rows x cols] (= or +=) sum over segments of A_s B_s; rows <= mr and cols <= nr, the rest is padding.
struct Tile {
  const Segment* segments;
  int64_t segmentCount;
  float* c;
  int64_t ldc;
  int rows;
  int cols;
  bool accumulate;
};

struct MicroKernel {
  const char* name;
  int mr;
  int nr;
  void (*run)(const Tile& tile);
};

MicroKernel scalarKernel();
#if defined(__x86_64__) || defined(_M_X64)
MicroKernel avx2Kernel();
MicroKernel avx512Kernel();
#endif

// The kernel in use: the fastest this CPU runs (cpuid) unless setActiveKernel chose another.
const MicroKernel& activeKernel();
// Switches kernels by name ("avx512", "avx2", "scalar"); false when this CPU cannot run it.
bool setActiveKernel(const char* name);

}  // namespace bsk
