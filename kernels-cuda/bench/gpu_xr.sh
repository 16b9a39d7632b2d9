#!/usr/bin/env bash
# The X-resident bsrLinear (wgmma variant 6, kernels-cuda/src/tc/bsr_wgmma_xr.cu; dispatched at 32x32) on a machine with an H100/H200,
# run from the repository root: builds tc_bench for sm_90a, checks the variant in bf16 and f16 (quick, edges,
# the timed shapes), runs compute-sanitizer memcheck on a quick check, and times it beside what bsrLinear
# dispatches to (auto) and cuBLAS at K in {768, 1024, 1536}, N in {1024, 3072, 4096}, M in {512, 2048, 8192},
# 32x32 and 64x64 blocks, densities 0.5/0.25/0.1. Logs and tables go to $OUT/gpu-logs (six files); a summary
# prints last. The stages and their order are gpu_run.sh's xr mode (STAGES, BUDGET override them).
exec bash "$(cd "$(dirname "$0")" && pwd)/gpu_run.sh" xr "$@"
