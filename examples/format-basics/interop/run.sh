#!/usr/bin/env bash
# Round trip between blocksparse and PyTorch/SciPy (needs python3 with torch and safetensors; SciPy optional).
#   bash examples/format-basics/interop/run.sh [dir]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ $# -ge 1 ]; then
  dir=$1
else
  # A folder of our own: removed at the end, whether the check passes or not.
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
fi
mkdir -p "$dir"
# Absolute before the cd below: a relative folder was made here and then written to under examples/format-basics/.
dir="$(cd "$dir" && pwd)"
cd "$here/.."
npx tsx interop/write.ts "$dir"
python3 interop/check.py "$dir"
npx tsx interop/read.ts "$dir"
