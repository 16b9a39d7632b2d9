// BSK_CLONES: a function built for several x86-64 levels (AVX-512, AVX2, baseline) and picked at load time where the
// toolchain supports it (GCC/Clang target_clones on Linux x86-64); a plain function elsewhere. For the loops the
// compiler vectorizes itself (the micro-kernels pick their instruction set at runtime instead).
#pragma once

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define BSK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BSK_CLONES
#endif
