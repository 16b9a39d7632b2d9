#!/usr/bin/env bash
# The quality tables of GPT-2 on Moby Dick (examples/distil), within one wall-clock budget:
#   (a) dense vs FFN block-sparse at densities 0.25 and 0.1, static vs RigL, same steps and seed
#       (GPT-2 'small': 4 layers, width 256);
#   (b) GPT-2 small's shape (12 layers, width 768) trained dense, patched at density 0.5 and
#       recovered for a tenth of its steps by distillation (and by fine-tuning, if time is left).
# Each part measures its step times first and takes the most steps that fit its share of the
# budget; a run that would not fit is skipped and one still going at the end stops (the tables
# say which). Tables (markdown) and every figure (JSON) go to $OUT, and are printed.
#
#   bash benchmarks/scripts/gpu-quality.sh           on a GPU, from a built checkout: builds the CUDA
#                                                    addon (SKIP_BUILD=1: use the one built), then
#                                                    (a) and (b) in bfloat16 mixed precision on cuda
#   bash benchmarks/scripts/gpu-quality.sh --quick   anywhere: tiny models on the js backend, 10 steps
#                                                    each: the same pipeline end to end
# DEADLINE (seconds, default 400: 7 minutes less the unpacking before and the exit after) bounds
# everything, the build included: after the build, (a) gets 4/7 of what is left, shared by its
# seeds, and (b) the rest (SPARSE_BUDGET / DISTIL_BUDGET set them instead).
# Over-fitting: models this size over-fit the book's 510k training tokens in a few passes (a dense
# 4 x 256 model was best after ~9, GPT-2 small's shape before ~16), so every model is capped at
# EPOCHS passes over the training tokens (default 8); (a) runs once per seed in SEEDS (default
# "0 1 2") and src/summary.ts judges RigL on the mean losses. RIGL (default empty) passes RigL's schedule
# to (a), e.g. RIGL="--rigl-fraction 0.1 --rigl-every 50 --rigl-end 0.5". SPARSE_LR (default inverse-density, the
# rule for layers trained from their initialisation) is the block-sparse weights' learning rate in (a): same, or
# inverse-density (lr / density); DISTIL_SPARSE_LR (default
# same: a patched trained model recovers best at one learning rate) is (b)'s. RECOVERY_LR (default empty: (b)'s
# --lr) is the peak learning rate of (b)'s recovery runs.
# Files: the summary and the two parts' pages in $OUT, every run's page, JSON and log in
# $OUT/quality-runs.tar.gz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-$root/gpu-results}
mkdir -p "$OUT"
quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/scripts/gpu-quality.sh [--quick]" >&2; exit 2 ;;
esac
tsx="$root/examples/distil/node_modules/.bin/tsx"
DEADLINE=${DEADLINE:-400}
EPOCHS=${EPOCHS:-8}
read -r -a seeds <<<"${SEEDS:-$([ "$quick" = 1 ] && echo 0 1 || echo 0 1 2)}"
runs="$OUT/quality-runs"
mkdir -p "$runs"

if [ "$quick" = 1 ]; then
  backend=(--backend js --dtype bfloat16 --max-chars 30000 --context 16 --batch-size 4 --eval-batches 1 --curve-points 2)
  # Fixed steps: the step times are still measured and every run checked against the budget.
  steps=(--steps 10)
  sparse_args=(--size tiny)
  distil_args=(--size tiny)
  sparse_budget=${SPARSE_BUDGET:-60}
  distil_budget=${DISTIL_BUDGET:-60}
else
  # shellcheck source=gpu-lib.sh
  source "$root/benchmarks/scripts/gpu-lib.sh"
  build_for_this_gpu
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/quality-env.log"
  echo "commit ${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" | tee -a "$OUT/quality-env.log"
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    start=$SECONDS
    (cd packages/backend-cuda && timeout "${BUILD_CAP:-150}" node scripts/build-native.mjs) >"$OUT/quality-build.log" 2>&1 || { tail -30 "$OUT/quality-build.log"; exit 1; }
    echo "== addon built in $((SECONDS - start)) s"
  fi
  # The addon just built, not a prebuilt binary the loader would try first.
  addon="$root/kernels-cuda/build/Release/blocksparse_cuda.node"
  [ -f "$addon" ] && export BLOCKSPARSE_CUDA_ADDON="$addon"
  backend=(--backend cuda --dtype bfloat16)
  steps=(--steps auto --max-epochs "$EPOCHS")
  sparse_args=(--size small --eval-batches 16 --curve-points 8)
  # GPT-2 small's usual peak learning rate (the example's 1e-3 suits the 4 x 256 model).
  distil_args=(--size gpt2 --lr 6e-4 --eval-batches 8 --curve-points 8)
  # 4/7 of what is left after the build, less the 10 s margin each part keeps for its exit.
  sparse_budget=${SPARSE_BUDGET:-$(((DEADLINE - SECONDS - 20) * 4 / 7))}
fi

# One part: its own process with its budget (counted from the process's start), killed 10 s after
# it if still there (it stops its own runs at the budget; the margin is for the last validation
# loss and writing the files). Its page, JSON and log go to $runs/NAME.
part() {
  local name=$1 budget=$2
  shift 2
  if [ "$budget" -le 10 ]; then echo "== $name: skipped, ${budget} s left"; return 1; fi
  echo "== $name: budget $budget s"
  local start=$SECONDS
  mkdir -p "$runs/$name"
  (cd examples/distil && timeout --kill-after=5 $((budget + 10)) "$tsx" src/main.ts "${backend[@]}" "${steps[@]}" --budget "$budget" --out "$runs/$name" "$@") 2>&1 | tee "$runs/$name/quality-$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc in $((SECONDS - start)) s"
  return "$rc"
}

sparse_rc=0
sparse_start=$SECONDS
for i in "${!seeds[@]}"; do
  # Each seed gets an equal share of what (a) has left.
  left=$((sparse_budget - (SECONDS - sparse_start)))
  read -r -a rigl_args <<<"${RIGL:-}"
  part "sparse-seed${seeds[$i]}" $((left / (${#seeds[@]} - i))) "${sparse_args[@]}" "${rigl_args[@]}" --sparse-lr "${SPARSE_LR:-inverse-density}" --mode sparse --density 0.25,0.1 --seed "${seeds[$i]}" || sparse_rc=1
done
summary="$OUT/quality-sparse-summary.md"
jsons=()
for seed in "${seeds[@]}"; do
  json="$runs/sparse-seed$seed/gpt2-moby-dick-sparse.json"
  [ -f "$json" ] && jsons+=("$json")
done
if [ "${#jsons[@]}" -gt 0 ]; then
  (cd examples/distil && "$tsx" src/summary.ts "${jsons[@]}") >"$summary" 2>&1 || sparse_rc=1
  cat "$summary"
else
  echo "no seed of (a) wrote its results" | tee "$summary"
  sparse_rc=1
fi
# (b) gets what (a) left, so that the total holds whatever (a) took.
[ "$quick" = 1 ] || distil_budget=${DISTIL_BUDGET:-$((DEADLINE - SECONDS - 15))}
recovery_args=()
[ -n "${RECOVERY_LR:-}" ] && recovery_args=(--recovery-lr "$RECOVERY_LR")
part distil "$distil_budget" "${distil_args[@]}" "${recovery_args[@]}" --sparse-lr "${DISTIL_SPARSE_LR:-same}" --mode distil --distil-density 0.5 --patch ffn
distil_rc=$?
echo
for seed in "${seeds[@]}"; do
  page="$runs/sparse-seed$seed/gpt2-moby-dick-sparse.md"
  [ -f "$page" ] && { cat "$page"; echo; }
done
[ -f "$runs/distil/gpt2-moby-dick-distil.md" ] && { cat "$runs/distil/gpt2-moby-dick-distil.md"; echo; cp "$runs/distil/gpt2-moby-dick-distil.md" "$OUT/"; }
# One archive for every run's files: the GPU machine returns a handful of files.
tar -czf "$OUT/quality-runs.tar.gz" -C "$OUT" quality-runs && rm -rf "$runs"
echo "== total $SECONDS s (deadline $DEADLINE s); tables and JSON in $OUT"
[ "$sparse_rc" = 0 ] && [ "$distil_rc" = 0 ]
