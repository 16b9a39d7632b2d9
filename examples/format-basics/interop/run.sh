#!/usr/bin/env bash
# Round trip between blocksparse and PyTorch/SciPy (needs python3 with torch and safetensors; SciPy optional).
#   bash examples/format-basics/interop/run.sh [dir]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$(mktemp -d)}"
mkdir -p "$dir"
cd "$here/.."
npx tsx interop/write.ts "$dir"
python3 interop/check.py "$dir"
npx tsx interop/read.ts "$dir"
