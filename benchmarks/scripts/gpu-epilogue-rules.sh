#!/usr/bin/env bash
# The dispatch rules for products whose epilogue writes a second output, measured on the GPU present (they were set on
# an H100: tc_kernels.h), in one device command (600 s), on a GPU machine from a built checkout:
#   bash benchmarks/scripts/gpu-epilogue-rules.sh
# - bsrLinearActivation (the activation written from the tile's epilogue beside Z): the dispatched route (auto: fused,
#   or the product then the pass) beside each 64- and 128-wide wgmma tile fused and unfused (kPingPong3ForwardMaxLine,
#   kPingPong3ForwardMaxLine128, kPingPongForwardMaxLine128, kFusedActivationMinShareOfL2);
#   and at 128 wide with Z inside half of L2 (inputs kept in L2: a lead for the ping-pong tile fused there);
# - bsrMatmulActivationBackward (the activation's backward in dX's epilogue): the same for dX (kPingPong3MaxLine,
#   kPingPongBackwardMaxLine64 and 128);
# - the captured FFN step with the fused forward as dispatched and with BLOCKSPARSE_CUDA_FUSED_ACTIVATION=0 (the product
#   then the pass everywhere), twice each, alternating;
# - and, not an epilogue's, the 64-wide persistent tile's rule with few tiles (kPersistentFewTilesMaxLine): plain
#   bsrLinear and bsrMatmul on the persistent and default tiles beside auto at 1024-4096 tokens.
# tc_bench's check of what auto dispatches runs first, then that of the 128-wide ping-pong tile fused (dispatched on
# lines of 4-16: docs/kernels.md, "The 128-wide ping-pong tile fused"). SKIP_BUILD=1 uses the addon already built; tc_bench is built
# with the shipped kernels only (DEV=0). Each stage is capped (stage, gpu-lib.sh) within DEADLINE seconds (default
# 560); the logs are packed into $OUT/epilogue-rules.tgz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
device_command epilogue-rules
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
build_addon_unless_skipped || exit 1
stage bench-build 120 env ARCH="-gencode=arch=compute_90a,code=sm_90a" DEV=0 bash kernels-cuda/bench/build.sh "$bench" ||
  exit 1
B="$bench/tc_bench"
stage check 60 "$B" --mode check --ops linear,matmul --paths auto --activation gelu_tanh --dtype bf16 --blocks 64,128 \
  --tokens 2000,8192 --shapes 1024x4096,4096x1024 --densities 0.5,0.25 || failed=1
# The 128-wide ping-pong tile with the activation fused (variant 14), which the rule takes with Z above half of L2 on
# lines of 4-16 blocks (kPingPongForwardMaxLine128), checked against the simple kernel and float64, and under memcheck,
# at shapes inside and outside the rule.
stage check-pingpong-fused 60 "$B" --mode check --ops linear --paths wgmma --variants 14 --activation gelu_tanh \
  --dtype bf16 --blocks 128 --tokens 300,2000,8192 --shapes 2048x8192,4096x4096,8192x2048 --densities 0.5,0.25,0.1 ||
  failed=1
stage memcheck-pingpong-fused 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$B" --mode check --ops linear \
  --paths wgmma --variants 14 --activation gelu_tanh --dtype bf16 --blocks 128 --tokens 300 --shapes 2048x8192 \
  --densities 0.5 || failed=1
shapes=1024x4096,768x3072,2048x8192,4096x4096,4096x1024,3072x768,8192x2048
stage forward 150 "$B" --mode time --ops linear --activation gelu_tanh --paths auto,wgmma --variants 1,7,14,34 \
  --blocks 64,128 --tokens 2048,8192 --shapes "$shapes" --densities 0.5,0.25,0.1
# The 128-wide fused forward where Z fits in half of L2 (not fused today unless the three-consumer rule takes it): inputs
# kept in L2 between launches (--sets 1), as the activation pass finds Z in a training step; the ping-pong tile (14)
# fused beside the product then the pass where pingPongTile128Rule holds (2 or more tiles per SM, lines of 4-16).
stage forward-128-in-l2 70 "$B" --mode time --sets 1 --ops linear --activation gelu_tanh --paths auto,wgmma \
  --variants 0,14,34 --blocks 128 --tokens 1024,2048 --shapes 1024x4096,2048x8192,4096x4096,3072x12288,8192x2048,2048x2048 \
  --densities 0.5,0.25,0.1
stage dx 150 "$B" --mode time --ops matmul --activation gelu_tanh --paths auto,wgmma --variants 0,1,14,34 \
  --blocks 64,128 --tokens 2048,8192 --shapes "$shapes" --densities 0.5,0.25,0.1
stage persistent 60 "$B" --mode time --ops linear,matmul --paths auto,wgmma --variants 0,7 --blocks 64 \
  --tokens 1024,2048,4096 --shapes 768x3072,3072x768,1024x1024,1024x4096,4096x1024 --densities 0.5,0.25,0.1
cd benchmarks
ffn=(src/ffn.ts --backend cuda --graph --quick --models ffn --only sparse --widths 1024x4096,768x3072 --tokens 2048,8192
  --blocks 64,128 --densities 0.5,0.25,0.1)
for round in 1 2; do
  stage "ffn-rules-$round" 60 "$tsx" "${ffn[@]}" --out "$OUT/ffn-rules-$round"
  BLOCKSPARSE_CUDA_FUSED_ACTIVATION=0 stage "ffn-pass-$round" 60 "$tsx" "${ffn[@]}" --out "$OUT/ffn-pass-$round"
done
exit $failed
