#!/usr/bin/env bash
# Builds tc_bench with nvcc, one object per source compiled in parallel, and keeps each ptxas report
# (registers, spills) beside its object. Needs cuBLAS. ARCH overrides the target (default sm_90a).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../src"
out="${1:-$here/build}"
arch="${ARCH:--gencode=arch=compute_90a,code=sm_90a}"
flags="-O3 -std=c++17 --expt-relaxed-constexpr $arch -Xptxas -v"
mkdir -p "$out"
pids=()
for file in "$here/tc_bench.cu" "$src/tc/dispatch.cu" "$src/tc/bsr_mma.cu" "$src/tc/bsr_wgmma.cu" \
  "$src/kernels/bsr.cu" "$src/kernels/elementwise.cu"; do
  name="$(basename "$file" .cu)"
  nvcc $flags -c "$file" -o "$out/$name.o" 2>"$out/$name.ptxas.log" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if [ "$status" -ne 0 ]; then
  grep -h -B2 -A8 "error" "$out"/*.ptxas.log | head -60
  exit 1
fi
nvcc $arch "$out"/*.o -lcublas -o "$out/tc_bench"
grep -h "spill stores" "$out"/*.ptxas.log | sort | uniq -c
echo "built $out/tc_bench"
