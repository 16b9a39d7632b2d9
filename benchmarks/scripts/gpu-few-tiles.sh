#!/usr/bin/env bash
# The products with few token tiles (a few hundred tokens over narrow layers), measured on the GPU present (the rule was
# set on an H100: tc_kernels.h, threeConsumerFewTilesRule), in one device command, on a GPU machine from a built checkout:
#   bash benchmarks/scripts/gpu-few-tiles.sh
# - tc_bench's check of what auto dispatches there (bsrLinear plain and fused, bsrMatmul), 70-1000 tokens;
# - bsrLinear with GELU(tanh) fused and then the pass, at 64 and 128 wide, auto beside every dispatched wgmma tile, 256-2048
#   tokens over eight shapes and densities 0.5 / 0.25 / 0.1, and at 128 wide plain (no activation) too;
# - dX (bsrMatmul) the same, at 64 and 128 wide, the three-consumer tile (34) checked first against float64 at 70-2085
#   tokens and under compute-sanitizer's memcheck at 70 and 300;
# - bsrLinear and dX at 128 wide with many tiles (4096 and 8192 tokens), auto beside the default, wide and ping-pong tiles:
#   on an H100, for plain dX at 1024-2048 tokens with 1.45-15.5 of its 128-token tiles per SM where auto took another
#   tile (36 cases), the ping-pong tile ran 0.78-0.90x auto in 14 (lines of 0.8-16 blocks, past the rule's 4, set on an
#   H200) and at most 1.03x in any (gpu-nvidia-h100-80gb-hbm3/dx-three-consumers-few-tiles-2026-12-06.md);
# - the audit of those timings: where auto was slower than a tile timed beside it (src/tc_audit_cli.ts);
# - the FFN and TransformerBlock training steps at 512 and 1024 tokens, the FFN beside our dense model and PyTorch.
# SKIP_BUILD=1 uses the addon already built; tc_bench is built with the variants kept for measurement (DEV=1). Each stage is
# capped (stage, gpu-lib.sh) within DEADLINE seconds (default 560); the logs are packed into $OUT/few-tiles.tgz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
device_command few-tiles
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
build_addon_unless_skipped || exit 1
stage bench-build 150 env ARCH="-gencode=arch=compute_90a,code=sm_90a" DEV=1 bash kernels-cuda/bench/build.sh "$bench" ||
  exit 1
B="$bench/tc_bench"
few=(--paths auto --blocks 64,128 --tokens 70,300,1000 --shapes 4096x1024,2048x768,1024x2048 --densities 0.5,0.25)
stage check 60 "$B" --mode check --ops linear,matmul "${few[@]}" || failed=1
stage check-fused 60 "$B" --mode check --ops linear --activation gelu_tanh "${few[@]}" || failed=1
# dX on the three-consumer tiles, named (34).
stage check-dx 60 "$B" --mode check --ops matmul --paths wgmma --variants 34 --blocks 64,128 --tokens 70,300,1000,2085 \
  --shapes 4096x1024,2048x768,1024x2048 --densities 0.5,0.25 || failed=1
stage memcheck-dx 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$B" --mode check --ops matmul --paths wgmma \
  --variants 34 --blocks 64,128 --tokens 70,300 --shapes 4096x1024,1024x2048 --densities 0.5,0.25 || failed=1
shapes=4096x1024,3072x768,8192x2048,2048x2048,1024x1024,1024x4096,4096x4096,16384x4096
time_args=(--tokens 256,512,1024,2048 --shapes "$shapes" --densities 0.5,0.25,0.1)
stage linear-128 90 "$B" --mode time --ops linear --activation gelu_tanh --paths auto,wgmma --variants 0,14,34 --blocks 128 \
  "${time_args[@]}"
# Plain bsrLinear at 128 wide (no activation): auto beside the tiles, the ping-pong tile taking 1.5-2 of its tiles per
# SM on lines of at most 4 (pingPongTile128Rule; set on an H100: results/gpu-nvidia-h100-80gb-hbm3/
# linear-ping-pong-few-tiles-2026-12-07.md).
stage linear-128-plain 60 "$B" --mode time --ops linear --paths auto,wgmma --variants 0,14,34 --blocks 128 "${time_args[@]}"
stage linear-64 90 "$B" --mode time --ops linear --activation gelu_tanh --paths auto,wgmma --variants 0,7,14,34 --blocks 64 \
  "${time_args[@]}"
stage dx-64 60 "$B" --mode time --ops matmul --paths auto,wgmma --variants 0,7,14,34 --blocks 64 "${time_args[@]}"
stage dx-128 60 "$B" --mode time --ops matmul --paths auto,wgmma --variants 0,1,14,34 --blocks 128 "${time_args[@]}"
stage many-128 90 "$B" --mode time --ops linear,matmul --paths auto,wgmma --variants 0,1,14 --blocks 128 --tokens 4096,8192 \
  --shapes "$shapes" --densities 0.5,0.25,0.1
# Where auto was slower than a tile timed beside it, per case (src/tc_audit_cli.ts).
TAIL_LINES=8 stage audit 30 "$tsx" benchmarks/src/tc_audit_cli.ts "$OUT/linear-128.log" "$OUT/linear-128-plain.log" \
  "$OUT/linear-64.log" "$OUT/dx-64.log" "$OUT/dx-128.log" "$OUT/many-128.log"
cd benchmarks
stage ffn 90 "$tsx" src/ffn.ts --backend cuda --graph --quick --models ffn --widths 1024x4096,768x3072 --tokens 512,1024 \
  --blocks 32,64,128 --densities 0.5,0.25 --torch --out "$OUT/ffn"
stage block 60 "$tsx" src/ffn.ts --backend cuda --graph --quick --models block --widths 1024x4096 --tokens 512,1024 \
  --blocks 64,128 --densities 0.25 --out "$OUT/block"
exit $failed
