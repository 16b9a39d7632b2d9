#!/usr/bin/env bash
# For a machine with an NVIDIA GPU, run from anywhere in the repository:
#   bash kernels-cuda/bench/gpu_run.sh decode   the decoding path: builds the addon and tc_bench (sm_90a + sm_80);
#                                               checks it in bf16/f16/f32 (also under compute-sanitizer memcheck)
#                                               and quick-checks the tile kernels while the backend-cuda suite
#                                               runs; then, alone on the GPU, times decoding against cuBLAS and
#                                               the copy bandwidth (bf16 in full, f16/f32 at 1 and 16 tokens)
#   bash kernels-cuda/bench/gpu_run.sh tc       the tensor-core kernels: build, SASS counts, quick checks (the
#                                               squares, and the other block shapes with tiles), memcheck, full
#                                               checks per product, timings
#   bash kernels-cuda/bench/gpu_run.sh xr       the X-resident bsrLinear/bsrMatmul (wgmma variant 6, and dev's
#                                               21-26 at 32x32; also gpu_xr.sh): tc_bench for sm_90a
#                                               alone, quick and edge checks in bf16/f16, memcheck, timings
#                                               against what is dispatched (auto) and cuBLAS, a profile by SASS
#                                               line (Nsight Compute), then checks at the timed shapes
#   bash kernels-cuda/bench/gpu_run.sh fused    the forward tile with its activation fused into the epilogue
#                                               (tcBsrLinearActivation): builds tc_bench, checks Z and
#                                               activation(Z) for every activation in bf16/f16 (also under
#                                               memcheck), then times each dispatched route fused beside the same
#                                               route followed by the separate biasActivation pass
# STAGES overrides the stage list; each stage gets what is left of BUDGET seconds (a stage cut short
# reports exit 124). Logs and tables go to $LOG (default $OUT/gpu-logs when $OUT is set, else
# bench/build/gpu-logs); a short summary prints last.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mode=${1:-tc}
LOG=${LOG:-${OUT:+$OUT/gpu-logs}}
LOG=${LOG:-$here/build/gpu-logs}
BUILD=${BUILD:-/tmp/tc_bench_build}
case "$mode" in
  decode) BUDGET=${BUDGET:-450}; STAGES=${STAGES-"build checks decode"} ;;
  tc) BUDGET=${BUDGET:-400}; STAGES=${STAGES-"bench quick memcheck check time"} ;;
  xr) BUDGET=${BUDGET:-480}; STAGES=${STAGES-"bench xr_quick xr_memcheck xr_time xr_profile xr_check"} ;;
  fused) BUDGET=${BUDGET:-300}; STAGES=${STAGES-"bench fused_check fused_memcheck fused_time"} ;;
  *) echo "usage: gpu_run.sh decode|tc|xr|fused" >&2; exit 2 ;;
esac
TIME_ARGS=${TIME_ARGS:-}
CHECK_ARGS=${CHECK_ARGS:-}
mkdir -p "$LOG"
bin="$BUILD/tc_bench"
export PATH="/usr/local/cuda/bin:$PATH"
if command -v pnpm >/dev/null 2>&1; then pnpm=(pnpm); else pnpm=(npx -y pnpm@10.34.9); fi
left() { echo $((BUDGET - SECONDS > 5 ? BUDGET - SECONDS : 5)); }
# At most $1 seconds, and no more than what is left.
cap() { local l; l=$(left); echo $((l < $1 ? l : $1)); }
summary=()
checks() { grep -hE "^(decode )?checks:" "$@" | tr '\n' ' '; }

# tc_bench for sm_90a and sm_80, with the tensor-core instruction counts of each object's SASS; in decode
# mode without the variants kept for measurement (a faster build).
build_bench() {
  local dev=1 arch=${ARCH:-}
  [ "$mode" = decode ] && dev=0
  [ "$mode" = xr ] && arch=${ARCH:-"-gencode=arch=compute_90a,code=sm_90a -lineinfo"}
  ARCH=$arch DEV=$dev "$here/build.sh" "$BUILD" >"$LOG/build-bench.log" 2>&1
  local status=$?
  # ptxas's notes on kernels that lose their overlap (C7500-C7599: wgmma serialized, fences injected, setmaxnreg
  # ignored). The addon's build fails on them (build-native.mjs); here, where dev's variants build too, they are listed.
  grep -h "C75[0-9][0-9]" "$BUILD"/*.ptxas.log >>"$LOG/build-bench.log" 2>/dev/null
  summary+=("ptxas notes on lost overlap (C75xx): $(cat "$BUILD"/*.ptxas.log 2>/dev/null | grep -c "C75[0-9][0-9]")")
  for object in bsr_wgmma bsr_mma bsr_decode bsr_wgmma_xr bsr_wgmma_xr_dev; do
    echo "== $object SASS instructions" >>"$LOG/build-bench.log"
    cuobjdump -sass "$BUILD/$object.o" 2>/dev/null | grep -oE "(HGMMA|HMMA|UTMALDG|LDSM|LDG\.E\.128|LDG\.E\.64)[.A-Z0-9_]*" |
      sort | uniq -c >>"$LOG/build-bench.log"
  done
  return $status
}

# The addon from scratch (no cache from another checkout), sm_80 and sm_90a, and the package's JS.
# The native addon alone: the TypeScript packages come built (a GPU machine may have no TypeScript toolchain).
build_addon() {
  rm -rf "$root/kernels-cuda/build"
  (cd "$root/packages/backend-cuda" && CMAKE_CUDA_ARCHITECTURES="80;90a" node scripts/build-native.mjs) \
    >"$LOG/build-addon.log" 2>&1
}

stage_build() {
  {
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total,temperature.gpu --format=csv,noheader
    nvcc --version | tail -2
    node --version
  } >"$LOG/env.log" 2>&1
  build_addon &
  local addon=$!
  build_bench
  local bench=$?
  wait $addon
  local status=$?
  summary+=("build: addon exit $status, tc_bench exit $bench at ${SECONDS}s")
  [ $status -eq 0 ] || tail -30 "$LOG/build-addon.log"
  [ $bench -eq 0 ] || tail -30 "$LOG/build-bench.log"
}

stage_bench() {
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader >"$LOG/env.log" 2>&1
  build_bench
  summary+=("build: tc_bench exit $? at ${SECONDS}s")
}

# The decoding kernel against the simple kernel and float64 in every dtype: token counts on both sides of
# the mma tiles (8, 16), every block side, small and real widths, sparse to dense.
stage_decode_check() {
  : >"$LOG/decode-check.log"
  for dtype in bf16 f16 f32; do
    timeout "$(cap 60)" "$bin" --mode check --ops linear --paths auto,decode --dtype $dtype --tokens 1,3,8,9,16 \
      --blocks 16,32,64,128 --shapes 256x384,512x256,4096x4096 --densities 0.1,1 $CHECK_ARGS \
      >>"$LOG/decode-check.log" 2>&1
    summary+=("decode check $dtype: exit $? at ${SECONDS}s")
  done
  summary+=("decode checks: $(checks "$LOG/decode-check.log"); $(grep -c FAIL "$LOG/decode-check.log") FAIL lines")
}

# The block shapes besides the squares that have mma.sync tiles (tc_kernels.h's mmaShapeSupported).
SHAPE_BLOCKS=16,16x32,32x16,32x64,64x32,64x128,128x64

stage_quick() {
  local paths=()
  [ "$mode" = decode ] && paths=(--paths auto)  # the bench is built without dev/ there: what is dispatched
  timeout "$(cap 60)" "$bin" --mode check --quick "${paths[@]}" $CHECK_ARGS >"$LOG/quick.log" 2>&1
  local q1=$?
  timeout "$(cap 40)" "$bin" --mode check --quick --dtype f16 --blocks 32,64,128 "${paths[@]}" $CHECK_ARGS \
    >>"$LOG/quick.log" 2>&1
  local q2=$?
  timeout "$(cap 60)" "$bin" --mode check --quick --paths auto,mma --variants 0 --blocks $SHAPE_BLOCKS $CHECK_ARGS \
    >>"$LOG/quick.log" 2>&1
  summary+=("quick checks: bf16 exit $q1, f16 exit $q2, other block shapes exit $? at ${SECONDS}s; $(checks "$LOG/quick.log"); $(grep -c FAIL "$LOG/quick.log") FAIL lines")
}

stage_memcheck() {
  local args=(--mode check --quick --blocks 32,128,16,32x64 $CHECK_ARGS)
  [ "$mode" = decode ] && args=(--mode check --ops linear --paths decode --tokens 1,9,16 --blocks 16,32,128
    --shapes 256x384 --densities 0.1,1 $CHECK_ARGS)
  : >"$LOG/memcheck.log"
  for dtype in bf16 f32; do
    timeout "$(cap 60)" compute-sanitizer --tool memcheck --error-exitcode 86 --print-limit 20 \
      "$bin" "${args[@]}" --dtype $dtype >>"$LOG/memcheck.log" 2>&1
    summary+=("memcheck $dtype: exit $? at ${SECONDS}s; $(grep -E 'ERROR SUMMARY' "$LOG/memcheck.log" | tail -1)")
    [ "$mode" = decode ] || break
  done
}

stage_check() {
  for op in linear matmul sampled; do
    timeout "$(cap ${CHECK_CAP:-90})" "$bin" --mode check --ops "$op" $CHECK_ARGS >"$LOG/check-$op.log" 2>&1
    summary+=("check $op: exit $? at ${SECONDS}s; $(checks "$LOG/check-$op.log")")
  done
}

stage_time() {
  timeout "$(left)" "$bin" --mode time $TIME_ARGS >"$LOG/time.log" 2>&1
  summary+=("time: exit $? at ${SECONDS}s")
}

# X-resident products (wgmma/v6; at 32x32 also dev's variants, dev_variants.h, each the addon's tile with one change:
# 21 the outputs stored from the accumulators' layout, 22 the tile the addon ran before (those stores, lines grouped
# for two CTAs per SM), 25 and 26 lines grouped for two and one CTAs per SM instead of by the wave model) beside what
# is dispatched (auto), 32 and 64 blocks. The slab is K wide for
# bsrLinear and N wide for bsrMatmul, up to 1536 each: bsrLinear at K in {768, 1024, 1536} x N in {1024, 3072,
# 4096}, bsrMatmul at the transposed shapes (the layer whose forward pass cannot keep its slab, its backward can).
# The widths of tc-xr.md's dispatch table (the rule's cases and their neighbours); the earlier 3 x 3 grid of K in {768,
# 1024, 1536} and N in {1024, 3072, 4096} at 512 tokens too is one setting away (XR_LINEAR_SHAPES and friends).
XR_LINEAR_SHAPES=${XR_LINEAR_SHAPES:-1024x4096,768x3072,1024x1024,512x2048}
XR_MATMUL_SHAPES=${XR_MATMUL_SHAPES:-4096x1024,3072x768,1024x1024,2048x512}
XR_TOKENS=${XR_TOKENS:-2048,8192}
xr_args=(--blocks 32,64 --paths wgmma --variants "${XR_VARIANTS:-6,21,22,25,26}")

# Small shapes and the edges: 1 and 65 tokens (a partial 64-token tile), a slab 96 wide (half a box) and 1536
# wide (the largest), single block lines, empty lines (density 0.1 over 3 blocks).
stage_xr_quick() {
  : >"$LOG/quick.log"
  for dtype in bf16 f16; do
    timeout "$(cap 40)" "$bin" --mode check --quick --ops linear,matmul "${xr_args[@]}" --paths auto,wgmma \
      --dtype $dtype >>"$LOG/quick.log" 2>&1
    local q=$?
    timeout "$(cap 40)" "$bin" --mode check --ops linear,matmul "${xr_args[@]}" --dtype $dtype --tokens 1,65,130 \
      --shapes 96x160,160x96,64x64,1536x192,192x1536,128x32,32x128 --densities 0.1,0.5,1 >>"$LOG/quick.log" 2>&1
    summary+=("xr quick + edge checks $dtype: exit $q, $? at ${SECONDS}s")
  done
  summary+=("xr quick: $(checks "$LOG/quick.log"); $(grep -c FAIL "$LOG/quick.log") FAIL lines")
}

stage_xr_memcheck() {
  timeout "$(cap 60)" compute-sanitizer --tool memcheck --error-exitcode 86 --print-limit 20 \
    "$bin" --mode check --ops linear,matmul "${xr_args[@]}" --tokens 1,65,200 \
    --shapes 96x160,160x96,1536x192,192x1536 --densities 0.1,1 >"$LOG/memcheck.log" 2>&1
  summary+=("xr memcheck: exit $? at ${SECONDS}s; $(grep -E 'ERROR SUMMARY' "$LOG/memcheck.log" | tail -1)")
}

stage_xr_time() {
  : >"$LOG/time.log"
  timeout "$(cap 120)" "$bin" --mode time --ops linear "${xr_args[@]}" --paths auto,wgmma --tokens "$XR_TOKENS" \
    --shapes "$XR_LINEAR_SHAPES" --densities 0.5,0.25,0.1 $TIME_ARGS >>"$LOG/time.log" 2>&1
  local linear=$?
  timeout "$(cap 120)" "$bin" --mode time --ops matmul "${xr_args[@]}" --paths auto,wgmma --tokens "$XR_TOKENS" \
    --shapes "$XR_MATMUL_SHAPES" --densities 0.5,0.25,0.1 $TIME_ARGS >>"$LOG/time.log" 2>&1
  summary+=("xr time: linear exit $linear, matmul exit $? at ${SECONDS}s")
}

# Where the X-resident tile's time goes, by SASS line (Nsight Compute's warp-state samples, all of them): bsrMatmul
# 4096 x 1024 at 8192 tokens, 32x32, at density 0.1 (where the part of its time that does not grow with the density
# dominates) and 0.25. Writes xr-profile.txt: each run's 40 SASS lines with the most samples, and the samples summed
# by stall reason over the kernel.
stage_xr_profile() {
  if ! command -v ncu >/dev/null 2>&1; then
    summary+=("xr profile: ncu not found"); return
  fi
  : >"$LOG/xr-profile.txt"
  local density
  for density in 0.1 0.25; do
    timeout "$(cap 120)" ncu --set full --import-source yes -k regex:bsrXrKernel -c 1 -f -o "$BUILD/xr-$density" \
      "$bin" --mode time --sets 1 --ops matmul --blocks 32 --paths wgmma --variants 6 --tokens 8192 --shapes 4096x1024 \
      --densities $density >"$BUILD/xr-profile-$density.log" 2>&1
    local status=$?
    ncu -i "$BUILD/xr-$density.ncu-rep" --page source --csv --print-source sass >"$BUILD/xr-$density.csv" 2>/dev/null
    { echo "== density $density (ncu exit $status)"; python3 - "$BUILD/xr-$density.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
head = next((i for i, r in enumerate(rows) if any("Warp Stall Sampling (All" in c for c in r)), None)
if head is None:
    sys.exit("no warp-sampling column in the source page")
names = rows[head]
col = next(i for i, c in enumerate(names) if "Warp Stall Sampling (All" in c)
src = next((i for i, c in enumerate(names) if c.strip() == "Source"), 1)
reasons = [i for i, c in enumerate(names) if c.startswith("stall_") or "Stall" in c and i != col and "Sampling" not in c]
def num(x):
    try:
        return float(x.replace(",", ""))
    except ValueError:
        return 0.0
body = [r for r in rows[head + 1:] if len(r) > col]
total = sum(num(r[col]) for r in body) or 1.0
print(f"samples: {total:.0f} over {len(body)} SASS lines")
for r in sorted(body, key=lambda r: -num(r[col]))[:40]:
    print(f"{num(r[col]) / total:6.1%}  {r[src].strip()[:110]}")
sums = sorted(((sum(num(r[i]) for r in body), names[i]) for i in reasons), reverse=True)[:12]
for v, n in sums:
    if v > 0:
        print(f"{v / total:6.1%}  {n}")
PY
    } >>"$LOG/xr-profile.txt" 2>&1
    summary+=("xr profile d=$density: ncu exit $status at ${SECONDS}s")
  done
}

# The timed shapes, last so that a short budget cuts these first: bf16 at 512 and 2048 tokens, f16 at 2048,
# and 8192 tokens at the first shape (the FFN's, 1024 <-> 4096).
stage_xr_check() {
  : >"$LOG/check-xr.log"
  local op shapes
  for op in linear matmul; do
    shapes=$XR_LINEAR_SHAPES
    [ $op = matmul ] && shapes=$XR_MATMUL_SHAPES
    for run in "bf16 512,2048 $shapes" "f16 2048 $shapes" "bf16 8192 ${shapes%%,*}"; do
      set -- $run
      timeout "$(cap 40)" "$bin" --mode check --ops $op "${xr_args[@]}" --dtype "$1" --tokens "$2" --shapes "$3" \
        --densities 0.5,0.25,0.1 >>"$LOG/check-xr.log" 2>&1
      summary+=("xr check $op $1 M=$2: exit $? at ${SECONDS}s")
    done
  done
  summary+=("xr checks: $(checks "$LOG/check-xr.log"); $(grep -c FAIL "$LOG/check-xr.log") FAIL lines")
}

# Decoding against cuBLAS dense and the copy bandwidth; what bsrLinear dispatches to (auto), checked first.
stage_decode() {
  for dtype in bf16 f16 f32; do
    # bf16: every case, with the decoding kernel's alternatives (warps per CTA, no overlap) beside what is dispatched.
    local args=(--paths auto,decode --variants 1,2,3,4)
    [ $dtype = bf16 ] || args=(--paths auto --tokens 1,16)
    timeout "$(cap 100)" "$bin" --mode decode --dtype $dtype "${args[@]}" $TIME_ARGS \
      >"$LOG/decode-$dtype.log" 2>&1
    summary+=("decode timing $dtype: exit $? at ${SECONDS}s; $(checks "$LOG/decode-$dtype.log")")
  done
}

vitest_run() {
  # The addon just built, not a prebuilt binary the loader would try first.
  (cd "$root" && BLOCKSPARSE_REQUIRE_CUDA=1 BLOCKSPARSE_CUDA_ADDON="$root/kernels-cuda/build/Release/blocksparse_cuda.node" \
    timeout "$(cap 200)" "${pnpm[@]}" -F @blocksparse/backend-cuda test) \
    >"$LOG/vitest.log" 2>&1
}
vitest_summary() {
  summary+=("backend-cuda vitest: exit $1 at ${SECONDS}s; $(grep -E "Tests +[0-9]" "$LOG/vitest.log" | tail -1 | tr -s ' ')")
}

stage_vitest() {
  vitest_run
  vitest_summary $?
}

# Correctness only, so they share the GPU: the backend-cuda suite beside the bench's checks.
stage_checks() {
  vitest_run &
  local vitest=$!
  stage_decode_check
  stage_memcheck
  stage_quick
  wait $vitest
  vitest_summary $?
}

# The fused activation: every activation on the quick shapes, GELU at the FFN's shapes (ragged token counts
# included), on what is dispatched and on each path's tiles.
stage_fused_check() {
  : >"$LOG/check-fused.log"
  for dtype in bf16 f16; do
    for act in gelu gelu_tanh relu; do
      timeout "$(cap 40)" "$bin" --mode check --quick --ops linear --paths auto,mma,wgmma --variants 0,1,7 --dtype $dtype \
        --activation $act $CHECK_ARGS >>"$LOG/check-fused.log" 2>&1
    done
    timeout "$(cap 90)" "$bin" --mode check --ops linear --paths auto --dtype $dtype --activation gelu --blocks 32,64,128 \
      --tokens 1000,2048,8192 --shapes 1024x4096,4096x1024,768x3072 --densities 0.5,0.25,0.1 $CHECK_ARGS \
      >>"$LOG/check-fused.log" 2>&1
    summary+=("fused check $dtype: exit $? at ${SECONDS}s")
  done
  summary+=("fused checks: $(checks "$LOG/check-fused.log"); $(grep -c FAIL "$LOG/check-fused.log") FAIL lines")
}

stage_fused_memcheck() {
  timeout "$(cap 60)" compute-sanitizer --tool memcheck --error-exitcode 86 --print-limit 20 "$bin" --mode check --quick \
    --ops linear --paths auto,mma,wgmma --variants 0,1,7 --activation gelu $CHECK_ARGS >"$LOG/memcheck.log" 2>&1
  summary+=("fused memcheck: exit $? at ${SECONDS}s; $(grep -E 'ERROR SUMMARY' "$LOG/memcheck.log" | tail -1)")
}

stage_fused_time() {
  timeout "$(left)" "$bin" --mode time --ops linear --paths auto --activation gelu --blocks 32,64,128 --tokens 2048,8192 \
    --shapes 1024x4096,4096x1024,768x3072 --densities 0.5,0.25,0.1 $TIME_ARGS >"$LOG/time.log" 2>&1
  summary+=("fused time: exit $? at ${SECONDS}s")
}

for stage in $STAGES; do "stage_$stage"; done

if [ -f "$LOG/build-bench.log" ]; then
  echo "== registers and spills (tc_bench objects)"
  grep -h "spill stores" "$LOG/build-bench.log" | sort | uniq -c | sort -rn | head -4
  grep -A8 "bsr_decode SASS" "$LOG/build-bench.log" | head -9
fi
for f in "$LOG"/quick.log "$LOG"/check-*.log "$LOG"/decode-check.log; do
  [ -f "$f" ] || continue
  echo "== $(basename "$f"): worst errors and failures"
  grep -E "^\| [a-z]" "$f" | head -40
  grep -E "FAIL|CUDA error" "$f" | head -8
  checks "$f"; echo
done
[ -f "$LOG/memcheck.log" ] && grep -E "Invalid|ERROR SUMMARY|out of bounds" "$LOG/memcheck.log" | head -8
if [ -f "$LOG/vitest.log" ]; then
  echo "== backend-cuda vitest"
  grep -E "FAIL|Test Files|Tests  |AssertionError|Error:" "$LOG/vitest.log" | head -20
fi
if [ -f "$LOG/time.log" ]; then
  echo "== timing: mean ratio to cuBLAS over densities and shapes (product block M variant ratio min..max)"
  awk -F'|' '/^\| (linear|matmul|sampled) \| [0-9]/ {
      gsub(/ /, "", $2); gsub(/ /, "", $3); gsub(/ /, "", $5); gsub(/ /, "", $8); r = $12 + 0
      key = $2 " " $3 " M=" $5 " " $8
      if (!(key in n)) { order[++count] = key; lo[key] = r; hi[key] = r }
      n[key]++; sum[key] += r; if (r < lo[key]) lo[key] = r; if (r > hi[key]) hi[key] = r
    }
    END { for (i = 1; i <= count; i++) { k = order[i]; printf "%s %.2f %.2f..%.2f\n", k, sum[k] / n[k], lo[k], hi[k] } }' \
    <(awk '/^\| product/ {table = 1} table' "$LOG/time.log")
  grep -E "^cuBLAS" "$LOG/time.log" | head -20
  if [ "$mode" = xr ]; then
    # One row per problem: auto, v6 and each other wgmma variant timed (TFLOP/s), cuBLAS, then v6 / auto,
    # v6 / cuBLAS and each other variant / v6.
    awk -F'|' '/^\| (linear|matmul) \| [0-9]/ {
        for (i = 2; i <= 12; i++) gsub(/ /, "", $i)
        key = $2 " " $3 " " $4 " " $5 " " $6 "x" $7
        if (!(key in seen)) { seen[key] = 1; order[++count] = key }
        if ($8 ~ /^wgmma\/v/ && $8 != "wgmma/v6" && !($8 in isVariant)) { isVariant[$8] = 1; variants[++nv] = $8 }
        tf[key, $8] = $10; dense[key] = $11
      }
      END {
        head = "== xr: product block density M KxN | auto | v6"
        for (j = 1; j <= nv; j++) head = head " | " substr(variants[j], 7)
        head = head " | cuBLAS (TFLOP/s) | v6/auto | v6/cuBLAS"
        for (j = 1; j <= nv; j++) head = head " | " substr(variants[j], 7) "/v6"
        print head
        for (i = 1; i <= count; i++) {
          k = order[i]; a = tf[k, "auto"]; v = tf[k, "wgmma/v6"]; line = k " | " a " | " v
          for (j = 1; j <= nv; j++) line = line " | " tf[k, variants[j]]
          line = line sprintf(" | %s | %.2f | %.2f", dense[k], (a > 0 ? v / a : 0), (dense[k] > 0 ? v / dense[k] : 0))
          for (j = 1; j <= nv; j++) line = line sprintf(" | %.2f", (v > 0 ? tf[k, variants[j]] / v : 0))
          print line
        }
      }' \
      <(awk '/^\| product/ {table = 1} table' "$LOG/time.log")
  fi
fi
printf '%s\n' "${summary[@]}"
decode_logs=$(ls "$LOG"/decode-{bf16,f16,f32}.log 2>/dev/null)
if [ -n "$decode_logs" ]; then
  # Full tables: decode-<dtype>.log and decode-tables.md. The short form, last: the model (weight bytes at
  # the copy bandwidth), the measured time, cuBLAS dense, the speedup and the fraction of the copy bandwidth.
  grep -h "^copy bandwidth" $decode_logs | head -1
  awk 'FNR == 1 {table = 0} /^\| dtype/ {table = 1} table' $decode_logs >"$LOG/decode-tables.md"
  echo "== decode paths, over all cases: path cases mean-speedup-vs-dense mean-fraction-of-copy-bw min..max FAIL"
  awk -F'|' '/^\| (bf16|f16|f32) \| [0-9]/ {
      for (i = 2; i <= 18; i++) gsub(/ /, "", $i)
      key = $2 " " $8; if (!(key in n)) { order[++count] = key; lo[key] = $16; hi[key] = $16 }
      n[key]++; s[key] += $13; f[key] += $16; if ($16 < lo[key]) lo[key] = $16; if ($16 > hi[key]) hi[key] = $16
      if ($18 != "PASS") bad[key]++
    }
    END { for (i = 1; i <= count; i++) { k = order[i]; printf "%s %d %.2f %.2f %.2f..%.2f %d\n", k, n[k], s[k] / n[k], f[k] / n[k], lo[k], hi[k], bad[k] } }' \
    "$LOG/decode-tables.md"
  echo "== decode (auto = what bsrLinear dispatches): dtype block density M KxN | model us | us | dense us | speedup | fraction of copy bw | check"
  awk -F'|' '/^\| (bf16|f16|f32) \| [0-9]/ {
      for (i = 2; i <= 18; i++) gsub(/ /, "", $i)
      if ($8 == "auto")
        printf "%-4s %3s %s M=%-2s %sx%-5s | %6s | %6s | %6s | %5sx | %s | %s\n", $2, $3, $4, $5, $6, $7, $10, $11, $12, $13, $16, $18
    }' "$LOG/decode-tables.md"
fi
