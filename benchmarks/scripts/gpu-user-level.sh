#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and PyTorch, from a built checkout: builds the CUDA addon,
# then measures what a user's own code gets: host time per op, start-up and first calls
# (overhead.ts), and the FFN / TransformerBlock training steps in mixed precision beside
# our dense model and PyTorch's dense step (ffn.ts --torch). Logs and tables go to $OUT.
#   FFN_ARGS="--widths 1024x4096 --tokens 8192" bash benchmarks/scripts/gpu-user-level.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
build_addon_unless_skipped || exit 1
cd benchmarks
timeout 120 "$tsx" src/overhead.ts --backend cuda --dtype bfloat16 --out "$OUT" 2>&1 | tee "$OUT/overhead.log" | tail -25
CUDA_MODULE_LOADING=EAGER timeout 60 "$tsx" src/overhead.ts --backend cuda --dtype bfloat16 --out "$OUT/eager" >"$OUT/overhead-eager.log" 2>&1 && tail -9 "$OUT/eager/overhead-cuda.md"
# shellcheck disable=SC2086
timeout "${FFN_TIMEOUT:-300}" "$tsx" src/ffn.ts --backend cuda --torch --out "$OUT" ${FFN_ARGS:-} 2>"$OUT/ffn.log"
echo "== ffn exit $?"; tail -5 "$OUT/ffn.log"
