#!/usr/bin/env bash
# Everything that decides whether dW's patch tile (32x32 blocks, half precision, sm_90: kPatchPairTile) is dispatched
# by default, on a GPU machine from a built checkout, in two calls that each fit one device command (600 s):
#   STEP=tests bash benchmarks/scripts/gpu-patch-dw.sh
#       builds the addon and tc_bench (DEV=0: the shipped kernels only), then runs backend-cuda's whole suite
#       (gpu-tests.sh, which runs dW's tests once more with BLOCKSPARSE_CUDA_PATCH_DW=1).
#   STEP=measure bash benchmarks/scripts/gpu-patch-dw.sh            (the same machine: the builds are reused)
#       tc_bench's check of the dispatch with the tile on (ragged token counts, densities across its band) and
#       compute-sanitizer's memcheck of it; the FFN step at 32x32 and 8192 tokens (the tile starts at 4096) with the
#       tile on and off beside our dense model and PyTorch's, captured, in one run each; then tc_bench's dW timings
#       with the tile on, off, and on mma.sync, over densities across the band's edges (0.15 and 0.28).
#   STEP=all bash benchmarks/scripts/gpu-patch-dw.sh
#       both in one call (the suite's processes capped at TESTS_CAP, default 340 s: at 260 on an H100 two of its seven
#       processes were cut), the user's step before the checks, the kernel timings only if DEADLINE leaves time.
# Each stage is capped (stage, gpu-lib.sh) within DEADLINE seconds (default 560); the logs and tables are packed into
# $OUT/patch-dw-$STEP.tgz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
step=${STEP:-tests}
device_command "patch-dw-$step"

run_tests() {
  # The addon (gpu-tests.sh builds it unless SKIP_BUILD=1) and tc_bench side by side.
  stage bench-build 300 env ARCH="-gencode=arch=compute_90a,code=sm_90a" DEV=0 bash kernels-cuda/bench/build.sh "$bench" &
  local bench_job=$!
  SKIP_BUILD=${SKIP_BUILD:-0} CAP=${TESTS_CAP:-$((DEADLINE - SECONDS - 20))} bash benchmarks/scripts/gpu-tests.sh || failed=1
  wait "$bench_job" || failed=1
}

run_checks() {
  [ -x "$bench/tc_bench" ] || { echo "no $bench/tc_bench: run STEP=tests first"; failed=1; return; }
  local check=(--mode check --ops sampled --paths auto --blocks 32 --tokens 4100,8192 --densities 0.16,0.2,0.25,0.27
    --shapes 1024x4096,4096x1024,768x3072)
  BLOCKSPARSE_CUDA_PATCH_DW=1 stage check 120 "$bench/tc_bench" "${check[@]}" || failed=1
  BLOCKSPARSE_CUDA_PATCH_DW=1 stage memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$bench/tc_bench" "${check[@]/4100,8192/4100}" || failed=1
}

# The user's step with the tile on and off, in one run each: what decides the switch.
run_ffn() {
  local ffn=(src/ffn.ts --backend cuda --graph --quick --torch --models ffn --widths 1024x4096 --tokens 8192 --blocks 32
    --densities 0.2,0.25)
  (cd benchmarks && BLOCKSPARSE_CUDA_PATCH_DW=1 stage ffn-on 90 "$tsx" "${ffn[@]}" --out "$OUT/ffn-on")
  (cd benchmarks && BLOCKSPARSE_CUDA_PATCH_DW=0 stage ffn-off 90 "$tsx" "${ffn[@]}" --out "$OUT/ffn-off")
}

run_times() {
  [ -x "$bench/tc_bench" ] || return
  local time_args=(--mode time --ops sampled --blocks 32 --tokens 4096,8192,16384 --shapes 1024x4096,4096x1024,4096x4096
    --densities 0.12,0.15,0.18,0.22,0.25,0.28,0.31,0.35)
  BLOCKSPARSE_CUDA_PATCH_DW=1 stage time-on 120 "$bench/tc_bench" "${time_args[@]}" --paths auto,mma
  BLOCKSPARSE_CUDA_PATCH_DW=0 stage time-off 100 "$bench/tc_bench" "${time_args[@]}" --paths auto
}

case "$step" in
tests) run_tests ;;
measure)
  run_checks
  run_ffn
  run_times
  ;;
all)
  TESTS_CAP=${TESTS_CAP:-340} run_tests
  run_ffn
  run_checks
  run_times
  ;;
*)
  echo "STEP: expected tests, measure or all, got '$step'"
  exit 2
  ;;
esac
exit $failed
