// Runtime choice of the micro-kernel: cpuid (through the compiler's builtin) on x86-64, scalar elsewhere.
#include <cstring>
#include <initializer_list>

#include "microkernel.h"

namespace bsk {
namespace {

bool cpuRuns(const char* name) {
  if (std::strcmp(name, "scalar") == 0) return true;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (std::strcmp(name, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (std::strcmp(name, "avx512") == 0) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
  return false;
}

MicroKernel kernelNamed(const char* name) {
#if defined(__x86_64__) || defined(_M_X64)
  if (std::strcmp(name, "avx512") == 0) return avx512Kernel();
  if (std::strcmp(name, "avx2") == 0) return avx2Kernel();
#endif
  (void)name;
  return scalarKernel();
}

MicroKernel& current() {
  static MicroKernel kernel = [] {
    for (const char* name : {"avx512", "avx2"}) {
      if (cpuRuns(name)) return kernelNamed(name);
    }
    return scalarKernel();
  }();
  return kernel;
}

}  // namespace

const MicroKernel& activeKernel() { return current(); }

bool setActiveKernel(const char* name) {
  if (!cpuRuns(name)) return false;
  current() = kernelNamed(name);
  return true;
}

}  // namespace bsk
