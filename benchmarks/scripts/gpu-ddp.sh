#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (one is enough) and NCCL 2 (libnccl.so.2), from a checkout whose
# node_modules are installed: builds the CUDA addon and the packages the check needs, then runs the
# NCCL process group with NPROC ranks (default 2) on ONE device through blocksparse-run
# (benchmarks/src/ddp_nccl.ts): exact collectives, a data-parallel training run whose replicas must
# stay identical (compared with one process on the combined batch), and all-reduce bus bandwidth
# over sizes. Results under $OUT (default ./gpu-results): ddp-nccl.json, ddp-nccl.md and the logs.
# NCCL refuses two ranks on one GPU in some versions ("Duplicate GPU detected"): the script then
# says so and runs one rank, which still checks the binding, the wrapper on the GPU and NCCL's copy speed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
NPROC=${NPROC:-2}
DEADLINE=${DEADLINE:-560}
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"

build_for_this_gpu
# NCCL from the system, else the one PyTorch's wheels carry (nvidia-nccl-*). NVLink multicast stays off.
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
if ! ldconfig -p | grep -q libnccl.so.2; then
  wheel_lib=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0] + '/lib')" 2>/dev/null)
  [ -n "$wheel_lib" ] && [ -e "$wheel_lib/libnccl.so.2" ] && export LD_LIBRARY_PATH="$wheel_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  ldconfig -p | grep -m1 libnccl.so.2 || echo "libnccl.so.2 not in the linker cache; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} | tee "$OUT/env.log"

TAIL_LINES=5 stage build 200 node packages/backend-cuda/scripts/build-native.mjs || exit 1
# The dist/ builds the launcher and the rank script import (tsup only: no network needed).
build_packages() {
  for pkg in format core autograd nn backend-cuda distributed; do
    (cd "packages/$pkg" && "$root/node_modules/.bin/tsup") || return 1
  done
}
export root OUT
export -f build_packages
TAIL_LINES=3 stage packages 200 bash -c build_packages || exit 1

# Every rank on device 0; NCCL says why it refuses anything.
export BLOCKSPARSE_CUDA_DEVICE=0 NCCL_DEBUG=${NCCL_DEBUG:-WARN}
run_ranks() {
  cd "$root/benchmarks" && node --import tsx ../packages/distributed/dist/cli.js --nproc-per-node "$1" src/ddp_nccl.ts "$OUT"
}
export -f run_ranks
if ! TAIL_LINES=30 stage "ddp-${NPROC}ranks" 150 bash -c 'run_ranks "$0"' "$NPROC"; then
  if grep -q "Duplicate GPU" "$OUT/ddp-${NPROC}ranks.log"; then
    echo "== NCCL refused ${NPROC} ranks on one GPU (Duplicate GPU detected); running 1 rank instead"
    TAIL_LINES=30 stage ddp-1rank 120 bash -c 'run_ranks 1'
  fi
fi
tar -C "$OUT" -czf "$OUT/gpu-ddp-results.tar.gz" --exclude=gpu-ddp-results.tar.gz . && echo "results: $OUT/gpu-ddp-results.tar.gz"
