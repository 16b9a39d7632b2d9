# Sourced by the GPU scripts (gpu.sh, gpu-ddp.sh, gpu-quality.sh, gpu-user-level.sh, gpu-step-kernels.sh, gpu-tests.sh,
# gpu-patch-dw.sh, gpu-decode-staged.sh, gpu-decode-pairs.sh, gpu-decode-dense.sh, gpu-epilogue-rules.sh,
# gpu-few-tiles.sh, gpu-fused-forward-128.sh), with
# $root set to the checkout: what they share. Sourcing sets OUT (default $root/gpu-results, created) and tsx
# (benchmarks' tsx unless the script set its own).
OUT=${OUT:-$root/gpu-results}
mkdir -p "$OUT"
tsx=${tsx:-$root/benchmarks/node_modules/.bin/tsx}

# stage NAME CAP COMMAND...: runs COMMAND with its output in $OUT/NAME.log, capped at CAP seconds and at
# DEADLINE seconds after the script's start (so one slow stage cannot eat the others' time); prints its
# exit status and the log's last TAIL_LINES lines (default 4); returns COMMAND's status.
stage() {
  local name=$1 cap=$2
  shift 2
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -le 5 ]; then echo "== $name: skipped, no time left"; return 1; fi
  local start=$SECONDS
  timeout --kill-after=10 "$cap" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - start)) s (cap $cap s)"
  tail -n "${TAIL_LINES:-4}" "$OUT/$name.log"
  return $rc
}

# Builds the addon for the architecture of the GPU present only (keeps the build short), unless
# CUDAARCHS says otherwise.
build_for_this_gpu() {
  [ -n "${CUDAARCHS:-}" ] && return
  local cap
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
  case "$cap" in 90) export CUDAARCHS=90a ;; "") ;; *) export CUDAARCHS=$cap ;; esac
}

# Builds the CUDA addon in the checkout at $root unless SKIP_BUILD=1; the log goes to $OUT/build.log and its last
# lines print when the build fails (then returns 1).
build_addon_unless_skipped() {
  [ "${SKIP_BUILD:-0}" = 1 ] && return 0
  (cd "$root/packages/backend-cuda" && node scripts/build-native.mjs) >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; return 1; }
  echo "== addon built"
}

# pack_logs_at_exit NAME: the stages' logs go to a scratch folder from here on (OUT, exported), packed into
# $OUT/NAME.tgz when the script exits (a device call brings back a few files only).
pack_logs_at_exit() {
  local packed="$OUT/$1.tgz"
  OUT=$(mktemp -d)
  export OUT
  # shellcheck disable=SC2064  # expanded now: the paths of this call
  trap "tar czf '$packed' -C '$OUT' . && echo '== logs in $packed'" EXIT
}

# device_command NAME: how the one-device-command scripts (gpu-patch-dw.sh, gpu-decode-staged.sh, gpu-decode-pairs.sh,
# gpu-decode-dense.sh, gpu-epilogue-rules.sh, gpu-few-tiles.sh, gpu-fused-forward-128.sh)
# begin: DEADLINE (default 560 s) and TAIL_LINES (default 12) unless set, CUDA required (BLOCKSPARSE_REQUIRE_CUDA=1),
# builds for this GPU's architecture, `bench` the tc_bench build folder, `failed` 0, and the stages' logs packed into
# $OUT/NAME.tgz when the script exits.
device_command() {
  DEADLINE=${DEADLINE:-560}
  TAIL_LINES=${TAIL_LINES:-12}
  export BLOCKSPARSE_REQUIRE_CUDA=1
  build_for_this_gpu
  bench="$root/kernels-cuda/bench/build"
  failed=0
  pack_logs_at_exit "$1"
}
