#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, from a built checkout: builds the CUDA addon, then runs backend-cuda's whole suite
# with BLOCKSPARSE_REQUIRE_CUDA=1 in parallel processes: sparse.test.ts in parts chosen by test name (its float64
# references are CPU-bound: one process took over 330 s; in these six parts 199 s on an H100, the "64x64, 128x128 and
# the rectangles" test split by dtype over two of them), the conformance suite in one more process and the other files
# in another (together they did not finish in 260 s on an H100).
# dW's tests run once more with the patch tile dispatched (BLOCKSPARSE_CUDA_PATCH_DW=1: by default only where memory peaks at
# 4.5 TB/s or more), and @blocksparse/models's CUDA tests beside. Each part's log lands in $OUT;
# the script fails if a part fails or the parts do not run every sparse test once.
#   bash benchmarks/scripts/gpu-tests.sh            (CAP: seconds per process, default 400)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
export BLOCKSPARSE_REQUIRE_CUDA=1
build_for_this_gpu
build_addon_unless_skipped || exit 1
CAP=${CAP:-400}
T=packages/backend-cuda/test
PARTS=(
  "blocks at density|bsrLinearActivation, W|bsrLinearActivation with Z|float32 register|setDense|single input|more tokens than one launch"
  "dense route|bsrLinearActivation at 64 wide|bsrLinearActivation at 128 wide|bsrLinear, bsrLinearActivation and bsrMatmul with fewer"
  "sampledMatmul with split|sampledMatmul with a tail|sampledMatmul over uneven|sampledMatmul on the patch tile"
  "64x64, 128x128 and the rectangles.*\(bfloat16\)"
  "64x64, 128x128 and the rectangles.*\(float16\)"
  "bsrMatmulActivationBackward on lines|X-resident tile"
)
start=$SECONDS
for i in "${!PARTS[@]}"; do
  timeout "$CAP" npx vitest run "$T/sparse.test.ts" -t "${PARTS[$i]}" >"$OUT/sparse-$i.log" 2>&1 &
done
# The conformance suite (the longest of the other files) in a process of its own, beside the rest.
timeout "$CAP" npx vitest run "$T/conformance.test.ts" >"$OUT/conformance.log" 2>&1 &
timeout "$CAP" npx vitest run packages/backend-cuda --exclude '**/sparse.test.ts' --exclude '**/conformance.test.ts' \
  >"$OUT/rest.log" 2>&1 &
# dW's tests once more with the patch tile dispatched (BLOCKSPARSE_CUDA_PATCH_DW=1; by default only on GPUs whose memory
# peaks at 4.5 TB/s or more, so that the tile is tested on the others too).
BLOCKSPARSE_CUDA_PATCH_DW=1 timeout "$CAP" npx vitest run "$T/sparse.test.ts" -t "${PARTS[2]}" >"$OUT/sparse-patch-dw.log" 2>&1 &
# The decoding tests once more with the staged variant wherever it covers a call (by default only on large layers).
BLOCKSPARSE_CUDA_DECODE_STAGED=1 timeout "$CAP" npx vitest run "$T/decode.test.ts" >"$OUT/decode-staged.log" 2>&1 &
# The other packages' CUDA tests on one GPU: GPT-2 generation and training in @blocksparse/models (the NCCL tests need
# two GPUs: gpu-ddp.sh).
timeout "$CAP" npx vitest run packages/models/test/generate-cuda.test.ts packages/models/test/train-cuda.test.ts \
  >"$OUT/models-cuda.log" 2>&1 &
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
echo "== parts done in $((SECONDS - start)) s"
# "Tests  N passed | M skipped (T)": every part lists all T tests of the file; the parts' passed must add up to T.
strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
passed=0
total=0
for i in "${!PARTS[@]}"; do
  line=$(strip "$OUT/sparse-$i.log" | grep -E "^ +Tests " | tail -1)
  echo "sparse part $i: ${line:-no summary (see sparse-$i.log)}"
  n=$(grep -oE "[0-9]+ passed" <<<"$line" | grep -oE "[0-9]+" || echo 0)
  passed=$((passed + ${n:-0}))
  t=$(grep -oE "\(([0-9]+)\)" <<<"$line" | tr -d '()')
  [ -n "$t" ] && total=$t
done
echo "conformance: $(strip "$OUT/conformance.log" | grep -E "^ +Tests " | tail -1)"
echo "rest: $(strip "$OUT/rest.log" | grep -E "^ +Tests " | tail -1)"
echo "sampled with the patch tile dispatched: $(strip "$OUT/sparse-patch-dw.log" | grep -E "^ +Tests " | tail -1)"
echo "decoding with the staged variant forced: $(strip "$OUT/decode-staged.log" | grep -E "^ +Tests " | tail -1)"
echo "models on cuda: $(strip "$OUT/models-cuda.log" | grep -E "^ +Tests " | tail -1)"
if [ "$total" -eq 0 ] || [ "$passed" -ne "$total" ]; then
  echo "sparse.test.ts: the parts passed $passed of $total tests: a test failed, or PARTS misses or repeats one (new test names need a part)"
  failed=1
fi
exit $failed
