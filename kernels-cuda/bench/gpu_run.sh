#!/usr/bin/env bash
# For a machine with an NVIDIA GPU (sm_90a by default): builds tc_bench, counts the tensor-core
# instructions in the SASS, runs the quick checks (also under compute-sanitizer memcheck), the full
# checks one product per process, and the timings, in the order STAGES names them. Each stage gets
# what is left of BUDGET seconds.
# Logs go to $LOG (default bench/build/tc-logs); a short summary prints last.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
LOG=${LOG:-$here/build/tc-logs}
BUILD=${BUILD:-/tmp/tc_bench_build}
BUDGET=${BUDGET:-400}
STAGES=${STAGES-"build quick memcheck check time"}
TIME_ARGS=${TIME_ARGS:-}
CHECK_ARGS=${CHECK_ARGS:-}
mkdir -p "$LOG"
bin="$BUILD/tc_bench"
export PATH="/usr/local/cuda/bin:$PATH"
left() { echo $((BUDGET - SECONDS > 5 ? BUDGET - SECONDS : 5)); }
# At most $1 seconds, and no more than what is left.
cap() { local l; l=$(left); echo $((l < $1 ? l : $1)); }
summary=()

stage_build() {
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader >"$LOG/build.log" 2>&1
  "$here/build.sh" "$BUILD" >>"$LOG/build.log" 2>&1
  summary+=("build: exit $? at ${SECONDS}s")
  cat "$BUILD"/*.ptxas.log >>"$LOG/build.log" 2>/dev/null
  for object in bsr_wgmma bsr_mma; do
    echo "== $object SASS tensor-core instructions" >>"$LOG/build.log"
    cuobjdump -sass "$BUILD/$object.o" 2>/dev/null | grep -oE "(HGMMA|HMMA|UTMALDG|LDSM)[.A-Z0-9_]*" | sort | uniq -c >>"$LOG/build.log"
  done
}

stage_quick() {
  timeout "$(cap 60)" "$bin" --mode check --quick $CHECK_ARGS >"$LOG/quick.log" 2>&1
  q1=$?
  timeout "$(cap 40)" "$bin" --mode check --quick --dtype f16 --blocks 32,64,128 $CHECK_ARGS >>"$LOG/quick.log" 2>&1
  summary+=("quick checks: bf16 exit $q1, f16 exit $? at ${SECONDS}s; $(grep -c FAIL "$LOG/quick.log") FAIL lines")
}

stage_memcheck() {
  timeout "$(cap 90)" compute-sanitizer --tool memcheck --error-exitcode 86 --print-limit 20 \
    "$bin" --mode check --quick --blocks 32,128 $CHECK_ARGS >"$LOG/memcheck.log" 2>&1
  summary+=("memcheck: exit $? at ${SECONDS}s; $(grep -E 'ERROR SUMMARY' "$LOG/memcheck.log" | tail -1)")
}

stage_check() {
  for op in linear matmul sampled; do
    timeout "$(cap ${CHECK_CAP:-90})" "$bin" --mode check --ops "$op" $CHECK_ARGS >"$LOG/check-$op.log" 2>&1
    summary+=("check $op: exit $? at ${SECONDS}s; $(grep -E '^checks:' "$LOG/check-$op.log")")
  done
}

stage_time() {
  timeout "$(left)" "$bin" --mode time $TIME_ARGS >"$LOG/time.log" 2>&1
  summary+=("time: exit $? at ${SECONDS}s")
}

for stage in $STAGES; do "stage_$stage"; done

echo "== tensor-core instructions"
grep -A6 "SASS tensor-core" "$LOG/build.log" 2>/dev/null | grep -vE "^--" | head -20
for f in "$LOG"/quick.log "$LOG"/check-*.log; do
  [ -f "$f" ] || continue
  echo "== $(basename "$f"): worst errors and failures"
  grep -E "^\| [a-z]" "$f" | head -40
  grep -E "FAIL|CUDA error|declined" "$f" | head -8
  grep -E "^checks:" "$f"
done
if [ -f "$LOG/time.log" ]; then
  echo "== timing: mean ratio to cuBLAS over densities and shapes (product block M variant ratio min..max)"
  awk -F'|' '/^\| (linear|matmul|sampled) \| [0-9]/ {
      gsub(/ /, "", $2); gsub(/ /, "", $3); gsub(/ /, "", $5); gsub(/ /, "", $8); r = $12 + 0
      key = $2 " " $3 " M=" $5 " " $8
      if (!(key in n)) { order[++count] = key; lo[key] = r; hi[key] = r }
      n[key]++; sum[key] += r; if (r < lo[key]) lo[key] = r; if (r > hi[key]) hi[key] = r
    }
    END { for (i = 1; i <= count; i++) { k = order[i]; printf "%s %.2f %.2f..%.2f\n", k, sum[k] / n[k], lo[k], hi[k] } }' \
    <(awk '/^\| product/ {table = 1} table' "$LOG/time.log")
  grep -E "^cuBLAS" "$LOG/time.log" | head -20
fi
[ -f "$LOG/memcheck.log" ] && grep -E "Invalid|ERROR SUMMARY|out of bounds" "$LOG/memcheck.log" | head -8
printf '%s\n' "${summary[@]}"
