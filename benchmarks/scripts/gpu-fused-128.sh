#!/usr/bin/env bash
# Whether bsrLinearActivation at 128 wide should fuse the activation where Z fits in half of L2 too (today it runs
# the product, then the activation pass, unless the three-consumer rule takes it: tc_kernels.h,
# kFusedActivationMinShareOfL2), in one short device command (DEADLINE, default 450 s), on a GPU machine from a built
# checkout:
#   bash benchmarks/scripts/gpu-fused-128.sh
# - first the user's figure: the captured FFN training step at 128x128 as dispatched and with
#   BLOCKSPARSE_CUDA_FUSED_ACTIVATION=1 (fused whatever Z's size), alternating, two rounds, at 1024 and 2048 tokens over
#   layers whose first forward the ping-pong tile's rule takes (pingPongTile128Rule: 2 or more of its 128-token tiles
#   per SM, lines of 4-16 blocks) with Z inside half of an H100's or H200's L2 (25 MiB): 2048 <-> 8192 and
#   3072 <-> 12288 at 1024 tokens, 2048 <-> 4096 and 4096 <-> 4096 at 2048, densities 0.5 / 0.25 / 0.1. (The targets'
#   layer, 1024 <-> 4096, has lines of at most 4 blocks up to density 0.5: the three-consumer tile fuses it already.)
#   The switch fuses every forward that can fuse, so only layers with Z inside half of L2 differ between the two;
# - then the forward alone with tc_bench: auto (the product then the pass) beside the default (0), ping-pong (14) and
#   three-consumer (34) tiles fused, inputs kept in L2 between launches (--sets 1) as the pass finds Z in a step.
# SKIP_BUILD=1 uses the addon already built; tc_bench is built with the shipped kernels only (DEV=0). The logs are
# packed into $OUT/fused-128.tgz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
DEADLINE=${DEADLINE:-450}
device_command fused-128
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
build_addon_unless_skipped || exit 1
(
  cd benchmarks || exit 1
  ffn=(src/ffn.ts --backend cuda --graph --quick --models ffn --only sparse --blocks 128 --densities 0.5,0.25,0.1)
  for round in 1 2; do
    for tokens in 1024 2048; do
      widths=2048x4096,4096x4096
      [ "$tokens" = 1024 ] && widths=2048x8192,3072x12288
      stage "ffn-rule-$tokens-$round" 35 "$tsx" "${ffn[@]}" --tokens "$tokens" --widths "$widths" \
        --out "$OUT/ffn-rule-$tokens-$round"
      BLOCKSPARSE_CUDA_FUSED_ACTIVATION=1 stage "ffn-fused-$tokens-$round" 35 "$tsx" "${ffn[@]}" --tokens "$tokens" \
        --widths "$widths" --out "$OUT/ffn-fused-$tokens-$round"
    done
  done
)
stage bench-build 120 env ARCH="-gencode=arch=compute_90a,code=sm_90a" DEV=0 bash kernels-cuda/bench/build.sh "$bench" ||
  exit 1
stage forward-128-in-l2 60 "$bench/tc_bench" --mode time --sets 1 --ops linear --activation gelu_tanh \
  --paths auto,wgmma --variants 0,14,34 --blocks 128 --tokens 1024,2048 --shapes 2048x8192,3072x12288,2048x4096,4096x4096 \
  --densities 0.5,0.25,0.1
exit $failed
