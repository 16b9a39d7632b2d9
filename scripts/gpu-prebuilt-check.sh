#!/usr/bin/env bash
# Checks that an app installed from the packed tarballs runs on the GPU from the prebuilt binary of
# @blocksparse/backend-cuda-linux-x64, with no nvcc on PATH and no package registry. Two steps:
#   bash scripts/gpu-prebuilt-check.sh prepare   where the registry is reachable, after `pnpm build` and
#                                                `node packages/backend-cuda/scripts/build-prebuilt.mjs`:
#                                                packs what a GPU app installs into gpu-check/tarballs, fills
#                                                gpu-check/npm-cache with their dependencies, proves an offline
#                                                install from them works, and keeps a copy of npm (a GPU
#                                                machine may have Node alone)
#   bash scripts/gpu-prebuilt-check.sh run       on the GPU machine (Node >= 20): installs the tarballs with npm
#                                                offline into a fresh app with nvcc hidden, then checks there
#                                                that the backend loads the prebuilt binary, that a block-sparse
#                                                product matches float64 math and that training matches js.
#                                                Logs go to $OUT (else gpu-check/logs); the last line says PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/gpu-check
# What an app on a GPU installs: the layers and the cuda backend, with their dependencies.
PACKAGES=(format core autograd nn backend-cuda backend-cuda-linux-x64)
# What backend-cuda's install script says when it finds the platform package (and compiles nothing).
PREBUILT_TAKEN="using the prebuilt binary from @blocksparse/backend-cuda-linux-x64"

tarball_paths() {
  local name
  for name in "${PACKAGES[@]}"; do ls "$dir"/tarballs/blocksparse-"$name"-[0-9]*.tgz; done
}

# A fresh install (no node_modules) of the app in gpu-check/app from its lockfile, with npm offline:
# the tarballs and gpu-check/npm-cache (their dependencies) and nothing else. Fails unless backend-cuda's
# install script took the prebuilt binary.
offline_install() {
  rm -rf "$dir/app/node_modules"
  (cd "$dir/app" && $npm ci --offline --cache "$dir/npm-cache" --no-audit --no-fund --foreground-scripts) | tee "$1"
  grep -q "$PREBUILT_TAKEN" "$1" || { echo "the install did not take the prebuilt binary (see $1)" >&2; return 1; }
}

case "${1:-}" in
prepare)
  node packages/backend-cuda/scripts/build-prebuilt.mjs --check
  rm -rf "$dir" && mkdir -p "$dir/tarballs" "$dir/app"
  npx --yes pnpm@10.34.9 -r $(printf -- '--filter ./packages/%s ' "${PACKAGES[@]}") pack --pack-destination "$dir/tarballs"
  npm=npm
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  # The app and its lockfile, as a user makes them (the lockfile's file: paths are relative: the app stays
  # in gpu-check/); then a cache holding only what that lockfile needs (the first install's cache also
  # holds packuments of optional peers, tens of megabytes).
  cd "$dir/app"
  printf '{ "name": "gpu-check-app", "version": "1.0.0", "private": true, "type": "module" }\n' >package.json
  npm install --cache "$scratch/cache" --no-audit --no-fund --package-lock-only $(tarball_paths)
  npm ci --cache "$dir/npm-cache" --no-audit --no-fund
  cd "$root"
  echo "== an offline install from gpu-check/ alone, as the GPU machine will make it"
  offline_install "$scratch/install.log"
  rm -rf "$dir/app/node_modules" "$dir/npm-cache/_logs"
  # The cache's copies of the tarballs (they lie beside it) would double what the GPU machine is sent.
  for key in $(npm cache ls --cache "$dir/npm-cache" | grep '^pacote:tarball:file:'); do npm cache clean "$key" --cache "$dir/npm-cache" >/dev/null; done
  npm cache verify --cache "$dir/npm-cache" >/dev/null
  # npm itself: lib/node_modules/npm of the Node that runs here.
  cp -r "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$dir/npm"
  du -sh "$dir"/*
  echo "gpu-check/ is ready: $(du -sh "$dir" | cut -f1)"
  ;;
run)
  logs=${OUT:-$dir/logs}
  mkdir -p "$logs"
  exec > >(tee "$logs/gpu-prebuilt-check.log") 2>&1
  step="setup"
  trap 'status=$?; [ $status -eq 0 ] || echo "gpu-prebuilt-check: FAIL ($step, exit $status); the log is $logs/gpu-prebuilt-check.log"' EXIT
  test -d "$dir/tarballs" || { echo "gpu-check/ is missing: run 'bash scripts/gpu-prebuilt-check.sh prepare' where the registry is reachable" >&2; exit 1; }
  # No compiler: PATH without any folder holding nvcc, and none of the variables that point at one.
  PATH=$(tr ':' '\n' <<<"$PATH" | while read -r p; do [ -n "$p" ] && [ ! -x "$p/nvcc" ] && printf '%s:' "$p"; done)
  export PATH=${PATH%:}
  unset CUDACXX CUDA_HOME CUDA_PATH BLOCKSPARSE_SKIP_CUDA_BUILD BLOCKSPARSE_FORCE_CUDA_BUILD BLOCKSPARSE_CUDA_ADDON
  if command -v nvcc >/dev/null; then echo "nvcc is still on PATH" >&2; exit 1; fi
  if command -v npm >/dev/null; then npm=npm; else npm="node $dir/npm/bin/npm-cli.js"; fi
  echo "== node $(node --version), npm $($npm --version), nvcc on PATH: none; GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo "no nvidia-smi")"
  step="offline npm install of $(tarball_paths | xargs -n1 basename | tr '\n' ' ')"
  echo "== $step"
  offline_install "$logs/install.log"
  step="the app on the GPU"
  echo "== $step"
  cp scripts/gpu-check-app/check.mjs "$dir/app/"
  (cd "$dir/app" && BLOCKSPARSE_REQUIRE_CUDA=1 node check.mjs)
  echo "gpu-prebuilt-check: PASS: an app installed offline from the tarballs, with no nvcc, runs on the GPU from the prebuilt binary"
  ;;
*)
  echo "usage: bash scripts/gpu-prebuilt-check.sh prepare|run" >&2
  exit 2
  ;;
esac
