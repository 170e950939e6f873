#!/usr/bin/env bash
# gpu_check.sh — the GPU check of dsv3 in one script, at most ~8 minutes on
# one H200 from a bare checkout (build included):
#   1. build with CUDA (make all build-tests cuda-bench; nvcc from PATH or
#      /usr/local/cuda/bin)
#   2. detect the GPU (build/gemm_cuda --probe); without one, write
#      gpu_check.json {"gpu": false, ...} and exit 0
#   3. the CUDA tests: test_dsv3 cuda backend (every ops entry on the GPU
#      against the CPU, whole models, training vs the CPU)
#   4. GEMM TFLOPS: FP8 block-scaled (cuBLASLt, and dsv3's own kernel) vs
#      cuBLASLt BF16 and FP32 on DeepSeek-V3 shapes, M = 4096
#   5. training tokens/s of `small` on the GPU: fp32, bf16, fp8
#      (dsv3 bench-train --device cuda, batch 8 x 512: device-resident, the
#      model, gradients and moments in device memory, no host staging)
#   6. decode tokens/s of `small` at batch 1 (dsv3 generate --device cuda:
#      device-resident, weights and latent KV cache in device memory)
# Results: JSON files under $OUT (or the folder given as the first argument;
# default ./gpu_check), summarised in gpu_check.json; logs beside them.
# Every step has a time limit, so the script ends in time whatever happens;
# a failed step is recorded (its exit status and log tail), not fatal.
#   bash tools/gpu_check.sh [OUTDIR]
set -u
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-gpu_check}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
T0=$(date +%s)
NP=$(nproc 2>/dev/null || echo 4)
export PATH="$PATH:/usr/local/cuda/bin"
BUILD=build
log() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*" >&2; }
# run NAME LIMIT CMD...: output in $OUTDIR/NAME.log, status in $OUTDIR/NAME.rc
run() {
  local name=$1 lim=$2; shift 2
  log "$name (limit ${lim}s)"
  timeout --kill-after=10 "$lim" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$OUTDIR/$name.rc"
  [ "$rc" = 0 ] || log "$name: exit $rc: $(tail -2 "$OUTDIR/$name.log" | tr '\n' ' ')"
  return "$rc"
}
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))' 2>/dev/null ||
         sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n' ' ' | sed 's/^/"/; s/$/"/'; }
tailj() { tail -c 600 "$1" 2>/dev/null | jstr; }

# ---- 1. build ------------------------------------------------------------------
command -v nvcc >/dev/null || log "nvcc not found: the build has no CUDA backend"
# the Debian packages the build needs, when missing (a machine without a
# network keeps what it has; the build then says what is missing)
make -s check-deps >/dev/null 2>&1 || run deps 150 bash .ci/install-deps.sh
run build 300 make -j"$NP" all build-tests cuda-bench
BUILD_RC=$(cat "$OUTDIR/build.rc")
BANNER=$(grep -m1 '^dsv3 build:' "$OUTDIR/build.log" | jstr)
if [ "$BUILD_RC" != 0 ]; then
  printf '{"gpu": null, "build": {"rc": %s, "banner": %s, "tail": %s}}\n' "$BUILD_RC" "$BANNER" \
    "$(tailj "$OUTDIR/build.log")" > "$OUTDIR/gpu_check.json"
  log "build failed; $OUTDIR/gpu_check.json"
  exit 1
fi

# ---- 2. the GPU ------------------------------------------------------------------
PROBE=$("./$BUILD/gemm_cuda" --probe 2>/dev/null)
PROBE_RC=$?
[ -n "$PROBE" ] || PROBE='{"gpu": false, "error": "gemm_cuda printed nothing"}'
SMI=$( (nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || echo none) | head -1 | jstr)
if [ "$PROBE_RC" != 0 ]; then
  printf '{"gpu": false, "probe": %s, "nvidia_smi": %s, "build": {"rc": 0, "banner": %s, "seconds": %s},\n "note": "no GPU: nothing ran on a device; the CUDA tests skip"}\n' \
    "$PROBE" "$SMI" "$BANNER" "$(( $(date +%s) - T0 ))" > "$OUTDIR/gpu_check.json"
  log "no GPU ($PROBE); wrote $OUTDIR/gpu_check.json"
  exit 0
fi
log "GPU: $PROBE"

# ---- 3. tests ----------------------------------------------------------------------
run tests 170 env DSV3=./dsv3 OMP_NUM_THREADS=$(( NP < 8 ? NP : 8 )) "./$BUILD/test_dsv3" cuda backend device_resident
TESTS_LINE=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$OUTDIR/tests.log" | tail -1 | jstr)
FAILED=$(grep -E '^failed:' "$OUTDIR/tests.log" | tail -1 | jstr)

# ---- 4. GEMMs ------------------------------------------------------------------------
run gemm 70 "./$BUILD/gemm_cuda" --iters 20
sed -n '/^{/,$p' "$OUTDIR/gemm.log" | grep -v '^M=' > "$OUTDIR/gemm.json"
python3 -c "import json; json.load(open('$OUTDIR/gemm.json'))" 2>/dev/null || echo '{"error": "no result"}' > "$OUTDIR/gemm.json"

# ---- 5. training tokens/s ----------------------------------------------------------------
TRAIN=""
for p in fp32 bf16 fp8; do
  run "train_$p" 45 ./dsv3 --threads 8 bench-train --config small --random 8,512 --iters 3 --device cuda --precision "$p"
  line=$(grep '^{' "$OUTDIR/train_$p.log" | tail -1)
  [ -n "$line" ] || line="{\"error\": $(tailj "$OUTDIR/train_$p.log")}"
  TRAIN="$TRAIN${TRAIN:+, }\"$p\": $line"
done

# ---- 6. decode tokens/s --------------------------------------------------------------------
TMPM=$(mktemp -d)
trap 'rm -rf "$TMPM"' EXIT
./dsv3 init --config small --out "$TMPM/small" --seed 1 >/dev/null 2>&1
PROMPT=$(seq 11 43 | tr '\n' ' ')
run decode 40 ./dsv3 --threads 8 generate --model "$TMPM/small" --ids --prompt "$PROMPT" --max-new-tokens 32 \
  --ignore-eos --json --device cuda
DEC=$(grep '^{' "$OUTDIR/decode.log" | tail -1)
[ -n "$DEC" ] || DEC="{\"error\": $(tailj "$OUTDIR/decode.log")}"

# ---- summary -----------------------------------------------------------------------------------
{
  printf '{"gpu": true, "probe": %s, "nvidia_smi": %s,\n' "$PROBE" "$SMI"
  printf ' "build": {"rc": 0, "banner": %s},\n' "$BANNER"
  printf ' "tests": {"rc": %s, "summary": %s, "failed": %s},\n' "$(cat "$OUTDIR/tests.rc")" "$TESTS_LINE" "$FAILED"
  printf ' "gemm": %s,\n' "$(cat "$OUTDIR/gemm.json")"
  printf ' "train_small_8x512": {%s},\n' "$TRAIN"
  printf ' "decode_small_batch1": %s,\n' "$DEC"
  printf ' "note": "bench-train and generate --device cuda run device-resident (the CUDA table itself, device memory; docs/engine.md 2.5): the train/decode figures are the device kernels plus the per-MoE-layer count copies and the host-side entries (moe_sort, balance_loss, sampling)",\n'
  printf ' "seconds": %s}\n' "$(( $(date +%s) - T0 ))"
} > "$OUTDIR/gpu_check.json"
log "done: $OUTDIR/gpu_check.json"
