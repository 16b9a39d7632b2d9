#!/usr/bin/env bash
# Where a training step's device time goes, kernel by kernel: Nsight Compute times every kernel of a short
# ffn.ts run (the dense model and each block-sparse case profiled in separate runs), and
# src/ncu_steps.ts turns each summary into a table of microseconds per step. On a GPU machine with ncu,
# from a built checkout; tables and raw summaries go to $OUT.
#   STEP_ARGS="--widths 1024x4096 --tokens 8192" CASES="64:0.25 32:0.25" bash benchmarks/scripts/gpu-step-kernels.sh
# STEP_ARGS are passed to every ffn.ts run (default: the FFN, 1024 <-> 4096, 8192 tokens); CASES lists
# block:density pairs (default "64:0.25 32:0.25"); SKIP_BUILD=1 uses the addon already built.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
build_addon_unless_skipped || exit 1
read -r -a step_args <<<"${STEP_ARGS:---models ffn --widths 1024x4096 --tokens 8192}"
read -r -a cases <<<"${CASES:-64:0.25 32:0.25}"
cd benchmarks
# No start-up warm-up: its small products would be counted with the step's.
export BLOCKSPARSE_CUDA_WARMUP=0
profile() {
  local name=$1
  shift
  timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
    "$tsx" src/ffn.ts --backend cuda --quick "${step_args[@]}" --out "$OUT/step-$name" "$@" >"$OUT/ncu-$name.txt" 2>&1
  echo "== $name: ncu exit $?"
  "$tsx" src/ncu_steps_cli.ts "$OUT/ncu-$name.txt" | tee "$OUT/step-kernels-$name.md"
}
profile dense --only dense
for c in "${cases[@]}"; do
  profile "${c%%:*}x${c%%:*}-d${c##*:}" --only sparse --blocks "${c%%:*}" --densities "${c##*:}"
done
