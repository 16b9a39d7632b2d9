#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, from anywhere in a built checkout: builds the CUDA addon,
# runs our side of the PyTorch comparison, PyTorch's side (cuBLAS dense and PyTorch's BSR
# kernels on the same inputs), then the bench suites on the cuda backend. Everything lands
# under $OUT (default ./gpu-results); each stage is time-capped so one slow stage cannot
# starve the others. Needs python3 with torch and safetensors. Set BENCH_COMMIT to the
# commit checked out when the checkout was copied without its .git.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# Every stage also ends by DEADLINE seconds after the start (default 320).
DEADLINE=${DEADLINE:-320}
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"

build_for_this_gpu
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/env.log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee -a "$OUT/env.log"

stage build "${BUILD_CAP:-150}" node packages/backend-cuda/scripts/build-native.mjs || exit 1
stage ours "${OURS_CAP:-130}" "$tsx" benchmarks/src/compare.ts --out "$OUT/compare-data"
TAIL_LINES=60 stage torch "${TORCH_CAP:-100}" python3 benchmarks/torch_compare.py "$OUT/compare-data" --out "$OUT"
# The exchanged inputs are hundreds of MB; compare.json keeps every figure.
cp "$OUT/compare-data/ours.json" "$OUT/ours.json" 2>/dev/null
rm -rf "$OUT/compare-data"
stage bench "${BENCH_CAP:-150}" "$tsx" benchmarks/src/cli.ts --backend cuda --quick --out "$OUT/results"
# One archive for the reports, charts and logs: fewer files to carry back.
tar -C "$OUT" -czf "$OUT/gpu-results.tar.gz" --exclude=gpu-results.tar.gz --exclude=gpu.log . && echo "results: $OUT/gpu-results.tar.gz"
