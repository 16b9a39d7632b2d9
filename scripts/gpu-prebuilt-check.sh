#!/usr/bin/env bash
# Checks on a GPU machine that an app installed with npm from packed tarballs alone (no registry, no
# cache), with no nvcc on PATH, runs on the GPU from the prebuilt binary of
# @blocksparse/backend-cuda-linux-x64. Needs the workspace installed and built (node_modules, dist/).
#   bash scripts/gpu-prebuilt-check.sh prepare   where npm is (once): keeps a copy of npm in gpu-check/npm
#                                                for a GPU machine that has Node alone
#   bash scripts/gpu-prebuilt-check.sh run       on the GPU machine:
#     1. builds the prebuilt binary from kernels-cuda/ (build-prebuilt.mjs, every core; skipped when
#        the binary there is newer than every source);
#     2. packs format, core, autograd, nn, backend-cuda and the platform package with pnpm, and their
#        dependencies from the workspace's installed copies (scripts/gpu-check-app/pack-deps.mjs);
#     3. hides every folder holding nvcc from PATH, installs all the tarballs with npm --offline and an
#        empty cache into a fresh app (the install script must take the prebuilt binary);
#     4. runs scripts/gpu-check-app/check.mjs there: the addon comes from the platform package, a
#        block-sparse product matches float64 math, five Adam steps match the js backend.
#   Logs go to $OUT (else gpu-check/logs); the last line says PASS or FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PACKAGES=(format core autograd nn backend-cuda backend-cuda-linux-x64)
# What backend-cuda's install script says when it finds the platform package (and compiles nothing).
PREBUILT_TAKEN="using the prebuilt binary from @blocksparse/backend-cuda-linux-x64"
binary=packages/backend-cuda-linux-x64/blocksparse_cuda.node

case "${1:-}" in
prepare)
  rm -rf gpu-check/npm && mkdir -p gpu-check
  # lib/node_modules/npm of the Node that runs here.
  cp -r "$(dirname "$(readlink -f "$(command -v npm)")")/.." gpu-check/npm
  echo "gpu-check/npm: npm $(node gpu-check/npm/bin/npm-cli.js --version), $(du -sh gpu-check/npm | cut -f1)"
  ;;
run)
  logs=${OUT:-$root/gpu-check/logs}
  mkdir -p "$logs"
  exec > >(tee "$logs/gpu-prebuilt-check.log") 2>&1
  step="setup"
  work=$(mktemp -d)
  trap 'status=$?; cd "$root"; rm -rf "$work"; [ $status -eq 0 ] || echo "gpu-prebuilt-check: FAIL ($step, exit $status); logs in $logs"' EXIT
  if command -v npm >/dev/null; then npm=(npm); elif [ -f gpu-check/npm/bin/npm-cli.js ]; then npm=(node "$root/gpu-check/npm/bin/npm-cli.js"); else
    echo "no npm here: run 'bash scripts/gpu-prebuilt-check.sh prepare' where npm is, so that gpu-check/npm travels with the checkout" >&2
    exit 1
  fi
  if command -v pnpm >/dev/null; then pnpm=(pnpm); else pnpm=(npx --yes pnpm@10.34.9); fi
  echo "== node $(node --version), npm $("${npm[@]}" --version), GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || echo "no nvidia-smi")"

  step="the prebuilt binary"
  if [ -f "$binary" ] && [ -z "$(find kernels-cuda/src kernels-cuda/CMakeLists.txt -newer "$binary" | head -1)" ]; then
    echo "== $step: kept, newer than every kernels-cuda source"
  else
    echo "== $step: building (build-prebuilt.mjs; log in build-prebuilt.log)"
    node packages/backend-cuda/scripts/build-prebuilt.mjs >"$logs/build-prebuilt.log" 2>&1 || { tail -30 "$logs/build-prebuilt.log"; exit 1; }
    grep -E "built in|holds" "$logs/build-prebuilt.log"
  fi

  step="packing"
  echo "== $step ${PACKAGES[*]} and their dependencies"
  "${pnpm[@]}" -r $(printf -- '--filter ./packages/%s ' "${PACKAGES[@]}") pack --pack-destination "$work/tarballs" >"$logs/pack.log" 2>&1 || { tail -30 "$logs/pack.log"; exit 1; }
  node scripts/gpu-check-app/pack-deps.mjs "$work/deps" $(printf -- 'packages/%s ' "${PACKAGES[@]}")

  step="hiding nvcc"
  # PATH without any folder holding nvcc, and none of the variables that point at one.
  PATH=$(tr ':' '\n' <<<"$PATH" | while read -r p; do [ -n "$p" ] && [ ! -x "$p/nvcc" ] && printf '%s:' "$p"; done)
  export PATH=${PATH%:}
  unset CUDACXX CUDA_HOME CUDA_PATH BLOCKSPARSE_SKIP_CUDA_BUILD BLOCKSPARSE_FORCE_CUDA_BUILD BLOCKSPARSE_CUDA_ADDON
  if command -v nvcc >/dev/null; then echo "nvcc is still on PATH" >&2; exit 1; fi

  step="offline npm install"
  echo "== $step of $(ls "$work/tarballs" | wc -l) package tarballs and $(ls "$work/deps" | wc -l) dependency tarballs (no nvcc on PATH, empty npm cache)"
  mkdir -p "$work/app"
  cd "$work/app"
  printf '{ "name": "gpu-check-app", "version": "1.0.0", "private": true, "type": "module" }\n' >package.json
  "${npm[@]}" install --offline --cache "$work/npm-cache" --no-audit --no-fund --foreground-scripts "$work"/deps/*.tgz "$work"/tarballs/*.tgz 2>&1 | tee "$logs/install.log"
  grep -q "$PREBUILT_TAKEN" "$logs/install.log" || { echo "the install did not take the prebuilt binary (see install.log)" >&2; exit 1; }

  step="the app on the GPU"
  echo "== $step"
  cp "$root/scripts/gpu-check-app/check.mjs" .
  BLOCKSPARSE_REQUIRE_CUDA=1 node check.mjs
  echo "gpu-prebuilt-check: PASS: an app installed offline from the tarballs, with no nvcc, runs on the GPU from the prebuilt binary"
  ;;
*)
  echo "usage: bash scripts/gpu-prebuilt-check.sh prepare|run" >&2
  exit 2
  ;;
esac
