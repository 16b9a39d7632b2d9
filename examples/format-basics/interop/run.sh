#!/usr/bin/env bash
# Round trip between blocksparse and PyTorch/SciPy (needs python3 with torch and safetensors; SciPy optional).
#   bash examples/format-basics/interop/run.sh [dir]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$(mktemp -d)}"
mkdir -p "$dir"
# Absolute before the cd below: a relative folder was made here and then written to under examples/format-basics/.
dir="$(cd "$dir" && pwd)"
cd "$here/.."
npx tsx interop/write.ts "$dir"
python3 interop/check.py "$dir"
npx tsx interop/read.ts "$dir"
