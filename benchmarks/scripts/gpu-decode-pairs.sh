#!/usr/bin/env bash
# Dev's decoding kernel of block rows in pairs (decoding variant 6, kernels-cuda/dev/bsr_decode_pairs.cu: bsrLinear with
# 1-16 tokens in half precision, a CTA per slice of the p-th longest and p-th shortest block rows) against the shipped
# kernel (variant 0), in one device command on a GPU machine from a built checkout:
#   bash benchmarks/scripts/gpu-decode-pairs.sh
# 1. builds tc_bench with kernels-cuda/dev/;
# 2. tc_bench's decode mode, every case checked against the simple kernel and float64 first: variants 0 and 6 with
#    random patterns, then variant 0 with rows of equal length (--rows equal: what balancing the rows can gain at
#    most), at 1, 8 and 16 tokens on 4096 x 4096, 4096 <-> 16384, densities 0.25 and 0.5, 32x32 and 64x64 blocks,
#    cuBLAS's dense product beside each;
# 3. variants 0 and 6 over layer heights (K 4096, N 4096-16384: 1 to 4 pair CTAs per SM on an H100 or H200) at densities
#    0.1, 0.25 and 0.4 and 1-16 tokens, for the rule that would dispatch it (it won on an H100 at 3.9 pair CTAs per SM,
#    density 0.25, and lost under one: benchmarks/results/gpu-nvidia-h100-80gb-hbm3/decode-dev-variants-2026-12-05.md);
# 4. compute-sanitizer's memcheck of variant 6 (odd block-row counts at each block size: a row without a pair).
# Each stage is capped (stage, gpu-lib.sh) within DEADLINE seconds (default 560); the logs are packed into
# $OUT/decode-pairs.tgz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
device_command decode-pairs

stage bench-build 300 env ARCH="-gencode=arch=compute_${CUDAARCHS:-90a},code=sm_${CUDAARCHS:-90a}" DEV=1 \
  bash kernels-cuda/bench/build.sh "$bench" || failed=1
cases=(--blocks 32,64 --tokens 1,8,16 --shapes 4096x4096,4096x16384,16384x4096 --densities 0.25,0.5)
if [ -x "$bench/tc_bench" ]; then
  stage pairs 100 "$bench/tc_bench" --mode decode --paths auto,decode --variants 0,6 "${cases[@]}" || failed=1
  stage equal-rows 80 "$bench/tc_bench" --mode decode --paths auto "${cases[@]}" --rows equal || failed=1
  stage heights 150 "$bench/tc_bench" --mode decode --paths auto,decode --variants 6 --blocks 32,64 --tokens 1,8,16 \
    --shapes 4096x4096,4096x6144,4096x8192,4096x10240,4096x12288,4096x16384 --densities 0.1,0.25,0.4 || failed=1
  grep -E "decode checks" "$OUT/pairs.log" "$OUT/equal-rows.log" "$OUT/heights.log"
  stage memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$bench/tc_bench" --mode decode --paths decode \
    --variants 6 --blocks 16,32,64,128 --tokens 1,16 --shapes 2048x3200,1024x1088,1024x1056,1024x1040 --densities 0.3 || failed=1
fi
exit $failed
