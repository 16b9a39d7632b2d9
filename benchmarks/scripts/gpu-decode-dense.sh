#!/usr/bin/env bash
# Why our dense decoding block (LayerNorm, Linear 4096 -> 16384, GELU, Linear back, residual) trails PyTorch's at
# 40-64 tokens, in one device command on a GPU machine from a built checkout:
#   bash benchmarks/scripts/gpu-decode-dense.sh
# 1. cuBLASLt's candidates at the block's product shapes (kernels-cuda/bench/lt_probe.cu: the heuristic's first answer
#    under workspace limits of 0, 4 and 32 MiB, and the best of eight);
# 2. PyTorch's captured dense stack timed (python/decode_torch.py);
# 3. every kernel of both stacks at 40 tokens under Nsight Compute (python/ncu_table.py): ours
#    (decode_graph.ts, dense and 32x32 at density 0.5) and PyTorch's.
# Each stage is capped (stage, gpu-lib.sh) within DEADLINE seconds (default 560); the logs are packed into
# $OUT/decode-dense.tgz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
device_command decode-dense

nvcc -O3 -std=c++17 -arch=sm_${CUDAARCHS:-90a} -I kernels-cuda/src kernels-cuda/bench/lt_probe.cu kernels-cuda/src/cublas.cpp \
  -o /tmp/lt_probe -ldl || failed=1
[ -x /tmp/lt_probe ] && { stage lt 90 /tmp/lt_probe --rows 1,8,40,64 --features 4096,16384 --widths 16384,4096 --bias 0,1 || failed=1; }
cd benchmarks
stage torch-time 60 python3 python/decode_torch.py --model ffn --layers 4 --tokens 1,40,64 || failed=1
export BLOCKSPARSE_CUDA_WARMUP=0  # no start-up warm-up: its small kernels would be counted
metrics=(ncu --csv --clock-control none --metrics gpu__time_duration.sum)
stage ours-ncu 150 "${metrics[@]}" "$tsx" src/decode_graph.ts --backend cuda --model ffn --width 4096 --hidden 16384 \
  --layers 2 --tokens 40 --blocks 32 --densities 0.5 --iterations 3 --out "$OUT/decode-graph" || failed=1
python3 python/ncu_table.py "$OUT/ours-ncu.log" 30 | tee "$OUT/ours-kernels.txt"
stage torch-ncu 120 "${metrics[@]}" python3 python/decode_torch.py --model ffn --layers 2 --tokens 40 --iterations 3 || failed=1
python3 python/ncu_table.py "$OUT/torch-ncu.log" 14 | tee "$OUT/torch-kernels.txt"
exit $failed
