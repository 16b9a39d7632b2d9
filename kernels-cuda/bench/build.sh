#!/usr/bin/env bash
# Builds tc_bench with nvcc, one object per source compiled in parallel, and keeps each ptxas report
# (registers, spills) beside its object. ARCH overrides the targets (default sm_90a and sm_80).
# Without cuBLAS in the toolkit it still builds, with the dense timings reading n/a (TC_BENCH_NO_CUBLAS).
# DEV=0 leaves out the variants kept for measurement (kernels-cuda/dev/, TC_BENCH_NO_DEV): a faster build
# that checks and times only what the entry points dispatch to.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../src"
dev="$here/../dev"
out="${1:-$here/build}"
arch="${ARCH:--gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80}"
flags="-O3 -std=c++17 --expt-relaxed-constexpr $arch -Xptxas -v"
cuda_root="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
libs="-lcublas"
have_cublas=0
for header in "$cuda_root"/include/cublas_v2.h "$cuda_root"/targets/*/include/cublas_v2.h \
  /usr/local/cuda/include/cublas_v2.h /usr/local/cuda/targets/*/include/cublas_v2.h /usr/include/cublas_v2.h; do
  [ -f "$header" ] && have_cublas=1
done
if [ "$have_cublas" -eq 0 ]; then
  echo "cuBLAS not found under $cuda_root: building without dense timings"
  flags="$flags -DTC_BENCH_NO_CUBLAS"
  libs=""
fi
dev_sources=("$dev"/*.cu "$dev"/*.cpp)
if [ "${DEV:-1}" = 0 ]; then
  flags="$flags -DTC_BENCH_NO_DEV"
  dev_sources=()
fi
mkdir -p "$out"
rm -f "$out"/*.o
pids=()
# reduce.cu holds the split-sum pass of dW, activation.cu the unfused bias+activation pass (--activation); it allocates through memory.cpp, which reports through device.cpp
# and cublas.cpp (cuBLAS opened at run time, so no link to it).
for file in "$here/tc_bench.cu" "$src/tc/dispatch.cu" "$src/tc/bsr_mma.cu" "$src/tc/bsr_mma_shapes.cu" "$src/tc/bsr_wgmma.cu" \
  "$src/tc/bsr_wgmma_shapes.cu" "$src/tc/bsr_wgmma_xr.cu" "$src/tc/bsr_wgmma_patch_dw.cu" \
  "$src/tc/bsr_decode.cu" "$src/kernels/bsr.cu" "$src/kernels/bsr_simt.cu" "$src/kernels/elementwise.cu" \
  "$src/kernels/reduce.cu" "$src/kernels/activation.cu" \
  "$src/memory.cpp" "$src/device.cpp" "$src/cublas.cpp" "${dev_sources[@]}"; do
  [ -f "$file" ] || continue
  name="$(basename "${file%.*}")"
  nvcc $flags -I"$src" -c "$file" -o "$out/$name.o" 2>"$out/$name.ptxas.log" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ "$status" -ne 0 ]; then
  grep -h -B2 -A8 "error" "$out"/*.ptxas.log | head -60
  exit 1
fi
nvcc $arch "$out"/*.o $libs -ldl -o "$out/tc_bench"
# host_probe: the host's time per call of the entry points and of the CUDA calls their launches make.
nvcc $flags -I"$src" "$here/host_probe.cu" $(ls "$out"/*.o | grep -v '/tc_bench\.o$') $libs -ldl -o "$out/host_probe" \
  2>"$out/host_probe.ptxas.log"
grep -h "spill stores" "$out"/*.ptxas.log | sort | uniq -c
echo "built $out/tc_bench and $out/host_probe"
