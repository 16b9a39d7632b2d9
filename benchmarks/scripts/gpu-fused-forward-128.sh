#!/usr/bin/env bash
# The 128-wide fused forward below 4096 tokens (fusedForward128Rule, kernels-cuda/src/tc/tc_kernels.h), measured where
# a user sees it: the captured FFN training step with bsrLinearActivation's activation in the tile's epilogue as
# dispatched, against BLOCKSPARSE_CUDA_FUSED_ACTIVATION=0 (the product, then the activation pass), alternating, two
# rounds, at shapes with few token tiles per SM and long lines (the cases that rule added; results in
# benchmarks/results/gpu-nvidia-h100-80gb-hbm3/untuned-shapes-2026-12-07.md). On a GPU machine from a built checkout:
#   bash benchmarks/scripts/gpu-fused-forward-128.sh            (BLOCKS: default "128 128x64")
# SKIP_BUILD=1 uses the addon already built. Each stage is capped (stage, gpu-lib.sh) within DEADLINE seconds (default
# 560); the logs and each run's ffn.json are packed into $OUT/fused-forward-128.tgz, and the table of step times
# (fused / pass, best of two) prints at the end.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# shellcheck source=gpu-lib.sh
source "$root/benchmarks/scripts/gpu-lib.sh"
device_command fused-forward-128
TAIL_LINES=0
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
build_addon_unless_skipped || exit 1
read -r -a blocks <<<"${BLOCKS:-128 128x64}"
cd benchmarks
for block in "${blocks[@]}"; do
  for spec in 256:4096x16384 512:2048x4096,2048x8192,4096x4096 1024:4096x2048,8192x4096; do
    IFS=: read -r tokens widths <<<"$spec"
    run=(src/ffn.ts --backend cuda --graph --quick --models ffn --only sparse --blocks "$block" --tokens "$tokens"
      --widths "$widths" --densities 0.5,0.25,0.1)
    for round in 1 2; do
      stage "rule-$block-$tokens-$round" 60 "$tsx" "${run[@]}" --out "$OUT/rule-$block-$tokens-$round" || failed=1
      BLOCKSPARSE_CUDA_FUSED_ACTIVATION=0 stage "pass-$block-$tokens-$round" 60 "$tsx" "${run[@]}" \
        --out "$OUT/pass-$block-$tokens-$round" || failed=1
    done
  done
done
# fused / pass per case, the best of two rounds each.
node --input-type=module - "$OUT" <<'JS'
import { readFileSync, readdirSync, existsSync } from "node:fs";
const dir = process.argv[2];
const best = new Map();
for (const name of readdirSync(dir)) {
  const m = /^(rule|pass)-(.+)-(\d+)-(\d)$/.exec(name);
  const file = `${dir}/${name}/ffn.json`;
  if (!m || !existsSync(file)) continue;
  for (const row of JSON.parse(readFileSync(file, "utf8")).rows) {
    const key = `${m[2]} ${row.tokens} ${row.dModel}x${row.hidden} d=${row.density}`;
    const entry = best.get(key) ?? { rule: Infinity, pass: Infinity };
    entry[m[1]] = Math.min(entry[m[1]], row.medianMs);
    best.set(key, entry);
  }
}
console.log("| block, tokens, widths, density | as dispatched (ms) | the pass (ms) | dispatched / pass |");
console.log("| --- | --- | --- | --- |");
for (const [key, { rule, pass }] of [...best].sort()) console.log(`| ${key} | ${rule.toFixed(3)} | ${pass.toFixed(3)} | ${(rule / pass).toFixed(3)} |`);
JS
exit $failed
