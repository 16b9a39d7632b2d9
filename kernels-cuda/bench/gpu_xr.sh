#!/usr/bin/env bash
# The X-resident bsrLinear and bsrMatmul (wgmma variant 6, kernels-cuda/src/tc/bsr_wgmma_xr.cuh; dispatched at 32x32;
# and dev's variants 21-26 of it, kernels-cuda/dev/dev_variants.h: direct stores, the tile the addon ran before,
# other line groupings) on a machine with an H100/H200, run from the repository root: builds tc_bench
# for sm_90a, checks the variants in bf16 and f16 (quick, edges, the timed shapes), runs compute-sanitizer memcheck on
# a quick check, and times them beside what bsrLinear dispatches to (auto) and cuBLAS at the widths of tc-xr.md's
# dispatch table (bsrLinear 1024x4096, 768x3072, 1024x1024, 512x2048 and bsrMatmul at the transposes), M in {2048,
# 8192}, 32x32 and 64x64 blocks, densities 0.5/0.25/0.1; then profiles variant 6 by SASS line under Nsight Compute
# (xr-profile.txt). Logs and tables go to $OUT/gpu-logs (seven files); a summary prints last. The stages and their
# order are gpu_run.sh's xr mode (STAGES, BUDGET and XR_VARIANTS, default 6,21,22,25,26, override them). dev's wide-slab
# tile (variants 27-29, any slab width) at the widths it was built for:
#   XR_VARIANTS=27,28,29 XR_LINEAR_SHAPES=4096x1024,3072x768,4096x4096 XR_MATMUL_SHAPES=1024x4096,768x3072,4096x4096 \
#     STAGES="bench xr_quick xr_memcheck xr_time" bash kernels-cuda/bench/gpu_xr.sh
exec bash "$(cd "$(dirname "$0")" && pwd)/gpu_run.sh" xr "$@"
