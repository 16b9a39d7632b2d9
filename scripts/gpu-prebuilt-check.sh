#!/usr/bin/env bash
# Checks that an app installed from the packed tarballs runs on the GPU from the prebuilt binary of
# @blocksparse/backend-cuda-linux-x64, with no nvcc on PATH and no registry. Two steps:
#   bash scripts/gpu-prebuilt-check.sh prepare   where the registry is reachable, after `pnpm build` and
#                                                `node packages/backend-cuda/scripts/build-prebuilt.mjs`:
#                                                packs every package into gpu-check/tarballs and fills
#                                                gpu-check/npm-cache with their dependencies
#   bash scripts/gpu-prebuilt-check.sh run       on the GPU machine (Node >= 20 and npm only): installs the
#                                                tarballs offline into a fresh app with nvcc hidden, checks
#                                                the backend loads the prebuilt binary and trains as js does
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/gpu-check

case "${1:-}" in
prepare)
  test -f packages/backend-cuda-linux-x64/blocksparse_cuda.node || {
    echo "build the binary first: node packages/backend-cuda/scripts/build-prebuilt.mjs" >&2
    exit 1
  }
  rm -rf "$dir" && mkdir -p "$dir/tarballs"
  npx --yes pnpm@10.34.9 -r --filter "./packages/*" pack --pack-destination "$dir/tarballs"
  scratch=$(mktemp -d)
  (cd "$scratch" && npm init -y >/dev/null &&
    BLOCKSPARSE_SKIP_CUDA_BUILD=1 npm install --cache "$dir/npm-cache" --no-audit --no-fund "$dir"/tarballs/*.tgz)
  rm -rf "$scratch"
  du -sh "$dir"
  ;;
run)
  test -d "$dir/tarballs" || { echo "gpu-check/ is missing: run 'bash scripts/gpu-prebuilt-check.sh prepare' where the registry is reachable" >&2; exit 1; }
  # No compiler: PATH without any folder holding nvcc, and none of the variables that point at one.
  PATH=$(tr ':' '\n' <<<"$PATH" | while read -r p; do [ -n "$p" ] && [ ! -x "$p/nvcc" ] && printf '%s:' "$p"; done)
  export PATH=${PATH%:}
  unset CUDACXX CUDA_HOME CUDA_PATH BLOCKSPARSE_SKIP_CUDA_BUILD BLOCKSPARSE_FORCE_CUDA_BUILD BLOCKSPARSE_CUDA_ADDON
  if command -v nvcc >/dev/null; then echo "nvcc is still on PATH" >&2; exit 1; fi
  app=$(mktemp -d)/app
  mkdir -p "$app"
  cp scripts/gpu-check-app/check.mjs "$app/"
  cd "$app"
  npm init -y >/dev/null
  npm install --offline --cache "$dir/npm-cache" --no-audit --no-fund --foreground-scripts "$dir"/tarballs/*.tgz
  node check.mjs
  ;;
*)
  echo "usage: bash scripts/gpu-prebuilt-check.sh prepare|run" >&2
  exit 2
  ;;
esac
