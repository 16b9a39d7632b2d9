#!/usr/bin/env bash
# What decides where the staged decoding variant (bsrLinear with 33-64 tokens in half precision, X copied into shared
# memory per range of K: decoding variant 5, kDecodeStagedVariant) is the default, in one device command (600 s), on a
# GPU machine from a built checkout:
#   bash benchmarks/scripts/gpu-decode-staged.sh
# 1. builds tc_bench beside decode.test.ts, run twice: with the default rule and with BLOCKSPARSE_CUDA_DECODE_STAGED=1
#    (the variant wherever it covers a call);
# 2. tc_bench's decode mode: every case checked against the simple kernel and float64, then what the default
#    dispatches (auto), variant 0 and variant 5 beside cuBLAS's dense product (33-64 tokens; 4096 x 4096,
#    4096 <-> 16384, 8192 <-> 8192; densities 0.2-0.5; 32x32 and 64x64), and compute-sanitizer's memcheck of variant 5;
# 3. the user's level: a captured stack of 4096 <-> 16384 feed-forward blocks (decode_graph.ts --model ffn) at 40 and 64
#    tokens with the default, the variant off (BLOCKSPARSE_CUDA_DECODE_STAGED=0) and on (=1) about the rule's density
#    bound, PyTorch's dense stack beside.
# Each stage is capped (stage, gpu-lib.sh) within DEADLINE seconds (default 560); the logs and tables are packed into
# $OUT/decode-staged.tgz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
device_command decode-staged

stage bench-build 300 env ARCH="-gencode=arch=compute_${CUDAARCHS:-90a},code=sm_${CUDAARCHS:-90a}" DEV=0 \
  bash kernels-cuda/bench/build.sh "$bench" &
bench_job=$!
T=packages/backend-cuda/test
stage tests-default 200 npx vitest run "$T/decode.test.ts" &
tests_job=$!
BLOCKSPARSE_CUDA_DECODE_STAGED=1 stage tests-staged 200 npx vitest run "$T/decode.test.ts" || failed=1
wait "$tests_job" || failed=1
wait "$bench_job" || failed=1

if [ -x "$bench/tc_bench" ]; then
  stage decode 200 "$bench/tc_bench" --mode decode --paths auto,decode --variants 0,5 --blocks 32,64 --tokens 33,40,48,64 \
    --shapes 4096x4096,4096x16384,16384x4096,8192x8192 --densities 0.2,0.25,0.35,0.5 || failed=1
  grep -E "decode checks" "$OUT/decode.log"
  stage memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$bench/tc_bench" --mode decode --paths decode \
    --variants 5 --blocks 32,64,128 --tokens 40,64 --shapes 2048x3072,1152x16384 --densities 0.5 || failed=1
fi

# Densities about the rule's bound (0.35; an H100's stack broke even near 0.27): the default (variant 0 below 0.35),
# the variant off, and the variant on where the default leaves it off.
graph=(src/decode_graph.ts --backend cuda --model ffn --width 4096 --hidden 16384 --layers 4 --tokens 40,64 --blocks 32,64)
(cd benchmarks && stage graph-default 100 "$tsx" "${graph[@]}" --densities 0.25,0.3,0.35 --torch --out "$OUT/graph-default")
(cd benchmarks && BLOCKSPARSE_CUDA_DECODE_STAGED=0 stage graph-variant-0 60 "$tsx" "${graph[@]}" --densities 0.35 \
  --out "$OUT/graph-variant-0")
(cd benchmarks && BLOCKSPARSE_CUDA_DECODE_STAGED=1 stage graph-staged 80 "$tsx" "${graph[@]}" --densities 0.25,0.3 \
  --out "$OUT/graph-staged")
exit $failed
