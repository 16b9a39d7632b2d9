#!/usr/bin/env bash
# For a machine with an NVIDIA GPU: builds the addon from scratch, then runs the cuda tests (core's
# conformance suite included) with CUDA required, the 10,000-step soak, and compute-sanitizer memcheck
# over the tests. Full logs go to $LOG_DIR (default ./gpu-logs); a summary is printed last.
# Needs the workspace installed and built (`pnpm install && pnpm build`); run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG_DIR=${LOG_DIR:-gpu-logs}
mkdir -p "$LOG_DIR"
vitest_entry=../../node_modules/vitest/vitest.mjs
export BLOCKSPARSE_REQUIRE_CUDA=1

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -1
  cmake --version | head -1
  echo "node $(node --version)"
} 2>&1 | tee "$LOG_DIR/env.log"

rm -rf ../../kernels-cuda/build
start=$SECONDS
node scripts/build-native.mjs >"$LOG_DIR/build.log" 2>&1
build=$?
echo "== build: exit $build in $((SECONDS - start)) s"
grep -E "cuBLAS|dense matmul|error|warning" "$LOG_DIR/build.log" | head -20

start=$SECONDS
timeout "${TEST_TIMEOUT:-120}" node "$vitest_entry" run >"$LOG_DIR/test.log" 2>&1
tests=$?
echo "== tests: exit $tests in $((SECONDS - start)) s"
grep -E "FAIL|Test Files|Tests  |AssertionError|Error:" "$LOG_DIR/test.log" | head -40

start=$SECONDS
timeout "${SOAK_TIMEOUT:-150}" node scripts/soak.mjs "${SOAK_STEPS:-10000}" >"$LOG_DIR/soak.log" 2>&1
soak=$?
echo "== soak: exit $soak in $((SECONDS - start)) s"
grep -E "soak: (baseline|end|after|[0-9]+ steps|OK|FAILED|CUDA)" "$LOG_DIR/soak.log"

# API errors are not reported: the out-of-memory test makes cudaMalloc fail on purpose. Every memory
# access, hardware exception and leak of device memory still counts.
start=$SECONDS
timeout "${MEMCHECK_TIMEOUT:-280}" compute-sanitizer --tool memcheck --report-api-errors no --print-limit 50 \
  --error-exitcode 86 node "$vitest_entry" run --no-file-parallelism >"$LOG_DIR/memcheck.log" 2>&1
memcheck=$?
echo "== memcheck: exit $memcheck in $((SECONDS - start)) s"
grep -E "ERROR SUMMARY|Invalid|Test Files|Tests  |FAIL" "$LOG_DIR/memcheck.log" | head -30

echo "== summary: build $build, tests $tests, soak $soak, memcheck $memcheck"
[ "$build" -eq 0 ] && [ "$tests" -eq 0 ] && [ "$soak" -eq 0 ] && [ "$memcheck" -eq 0 ]
