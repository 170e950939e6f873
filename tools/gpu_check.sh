#!/usr/bin/env bash
# gpu_check.sh — the GPU check of dsv3 in one script, at most 8 minutes on
# one H200 from a bare checkout (build included), every step with its own
# time limit inside one overall budget (GPU_CHECK_BUDGET seconds, default
# 460): a step gets min(its limit, what is left), a step with under 15 s
# left is skipped and recorded so, so one hang cannot eat the run.
#   0. the machine (env.log: nvidia-smi, CPU, CUDA libraries, torch)
#   1. build with CUDA: make all build-tests cuda-bench (nvcc from PATH or
#      /usr/local/cuda/bin; sm_90a + compute_80 PTX); no package installs
#      (the GPU machine has no network) unless GPU_CHECK_DEPS=1.
#      GPU_CHECK_PREBUILT=FILE.tar.xz (tools/gpu_bundle.sh) instead unpacks
#      binaries built elsewhere with the libraries they need, for a machine
#      without dsv3's build dependencies; it builds only if they cannot load
#   2. detect the GPU (build/gemm_cuda --probe); without one, write
#      gpu_check.json {"gpu": false, ...} and exit 0 (the dry run)
#   3. the CUDA tests, in groups with their own limits (test_dsv3 on the GPU
#      against the CPU; tolerances below and in tests/test_backend_cuda.c):
#        ops      every ops entry on odd shapes (cuda_ops_*: NMSE ≤ 1e-10 FP32,
#                 the CPU's bits where the arithmetic is the same, FP8 1e-6;
#                 moe_sort / balance_loss / sampling kernels: cuda_ops_select),
#                 FP8 block-scaled GEMM on DeepSeek-V3 shapes vs the CPU's FP8
#                 linear (cuda_ops_gemm_fp8_deepseek_shapes, NMSE ≤ 1e-6)
#        models   forward + backward of `tiny` (FP32/BF16/FP8, host-staged and
#                 device-resident) and `small` (104M, device-resident) vs the
#                 CPU: FP32 logits ≤ 1e-5, gradients ≤ 1e-4, loss ≤ 1e-5
#                 (largest difference over largest magnitude); BF16 logits
#                 ≤ 2e-2, loss ≤ 2.5e-4; FP8 loss ≤ 2.5e-3
#        train    `train --device cuda` vs the CPU: FP32 20 steps, losses within
#                 1e-4; BF16 and FP8 150 steps, seeds 7, 8, 9: seed means within
#                 0.25% of the CPU's BF16 (last-10 train loss) and 0.4% (val),
#                 each seed's val within 1%; generate --device cuda tokens
#                 equal the CPU's
#        cli      bench-decode, bench-train, eval, train (validation,
#                 checkpoints, resume, samples) and serve with --device cuda
#                 vs --device cpu (cuda_cli_*, serve_cuda_device_resident):
#                 ids and text equal, real numbers within 1e-4 (BF16 1e-3)
#        staged   the host-staged table and the fakedev device-resident paths
#                 (CPU only, the same as make test)
#   4. GEMM TFLOPS: FP8 block-scaled (cuBLASLt, dsv3's CUDA-core kernel and
#      its tensor-core kernel) vs cuBLASLt BF16 and FP32 on DeepSeek-V3
#      shapes, M = 4096; the routed experts' FP8 products (32 experts), one
#      cuBLASLt GEMM each vs one launch of the tensor-core kernel
#   5. training tokens/s of `small` on the GPU: fp32, bf16, fp8
#      (bench-train --device cuda, batch 8 x 512, device-resident), and of
#      PyTorch transformers on the same GPU (tools/bench_train_torch.py,
#      BENCH_DEVICE=cuda: FP32 with TF32 off, and BF16 autocast) when torch is there;
#      A/B runs: FP8 experts one by one, FP8 experts one cuBLASLt GEMM each
#      instead of the tensor-core kernel (DSV3_CUDA_FP8_MMA=0), BF16 experts without the batched
#      cuBLASLt calls (DSV3_CUDA_BATCHED=0), BF16 attention on the FP32 kernels
#      instead of the tensor cores (DSV3_CUDA_ATTN=fp32)
#   6. decode tokens/s of `small` at batch 1 (generate --device cuda,
#      device-resident: weights and latent KV cache in device memory) and at
#      batch 32 (bench-decode: serve's batching engine), and of transformers'
#      generate on the same GPU at both
#   7. training tokens/s of the ~1B-parameter config bench/configs/v3-1b.json
#      (BF16, FP8; BF16 with DSV3_CUDA_BATCHED=0 and with DSV3_CUDA_ATTN=fp32,
#      FP8 with DSV3_CUDA_FP8_MMA=0),
#      batch 8 x 512
#   8. bench-train --profile (each entry's share of the timed steps) with
#      DSV3_CUDA_PROFILE=1 on BF16 and FP8 steps of it (profile1b_bf16.log,
#      profile1b_fp8.log), and on FP32 and BF16 steps of `small`
#      (profile_small_fp32.log, profile_small_bf16.log)
#   9. compute-sanitizer's racecheck over the FP8 tensor-core kernel (race_fp8mma)
#      and the tensor-core attention's kernels (race_attention)
# Results: JSON under $OUT (or the folder given as the first argument;
# default ./gpu_check), summarised in gpu_check.json; each step's log and
# exit status beside it (NAME.log, NAME.rc; 124: its time limit).
# GPU_CHECK_SKIP="peer_* gemm": steps (by log name, glob patterns) left out.
#   bash tools/gpu_check.sh [OUTDIR]
set -u
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-gpu_check}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-460}
NP=$(nproc 2>/dev/null || echo 4)
TH=$(( NP < 8 ? NP : 8 ))
export PATH="$PATH:/usr/local/cuda/bin"
BUILD=build
log() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*" >&2; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# run NAME LIMIT CMD...: output in $OUTDIR/NAME.log, status in $OUTDIR/NAME.rc;
# the limit is cut to what is left of the budget (less 10 s for the summary)
run() {
  local name=$1 lim=$2; shift 2
  local pat pats
  set -f; pats=(${GPU_CHECK_SKIP:-}); set +f
  for pat in "${pats[@]}"; do
    # shellcheck disable=SC2254
    case "$name" in $pat)
      log "$name: skipped (GPU_CHECK_SKIP)"
      echo "skipped: GPU_CHECK_SKIP=$GPU_CHECK_SKIP" > "$OUTDIR/$name.log"
      echo 126 > "$OUTDIR/$name.rc"
      return 126 ;;
    esac
  done
  local l; l=$(( $(left) - 10 ))
  [ "$l" -lt "$lim" ] && lim=$l
  if [ "$lim" -lt 15 ]; then
    log "$name: skipped (budget spent)"
    echo "skipped: the ${BUDGET}s budget was spent" > "$OUTDIR/$name.log"
    echo 125 > "$OUTDIR/$name.rc"
    return 125
  fi
  log "$name (limit ${lim}s)"
  timeout --kill-after=5 "$lim" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$OUTDIR/$name.rc"
  [ "$rc" = 0 ] || log "$name: exit $rc: $(tail -2 "$OUTDIR/$name.log" | tr '\n' ' ')"
  return "$rc"
}
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))' 2>/dev/null ||
         sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n' ' ' | sed 's/^/"/; s/$/"/'; }
tailj() { tail -c 600 "$1" 2>/dev/null | jstr; }
rcof() { cat "$OUTDIR/$1.rc" 2>/dev/null || echo null; }
# a test group as JSON: status, the runner's summary line, failed tests, and
# the tests' measurement lines (two-space indented: the figures behind each bound)
testj() {
  local f="$OUTDIR/$1.log"
  printf '{"rc": %s, "summary": %s, "failed": %s, "skipped": %s, "measured": %s}' "$(rcof "$1")" \
    "$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$f" 2>/dev/null | tail -1 | jstr)" \
    "$(grep -E '^failed:' "$f" 2>/dev/null | tail -1 | jstr)" \
    "$(grep -E 'skip: ' "$f" 2>/dev/null | sed 's/  */ /g' | head -20 | jstr)" \
    "$(grep -E '^  [a-zA-Z]' "$f" 2>/dev/null | head -60 | jstr)"
}

# ---- 0. the machine --------------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)  nproc: $NP  kernel: $(uname -r)"
  grep -m1 'model name' /proc/cpuinfo
  grep -o -w -m1 -E 'avx512f|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  timeout 20 nvidia-smi 2>&1 | head -20
  echo "nvcc: $(command -v nvcc) $(nvcc --version 2>/dev/null | tail -1)"
  ls /usr/local/cuda/lib64/ 2>&1 | grep -E 'libcublasLt|libcudart' | head -4
  timeout 60 python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)' 2>&1 | tail -1
} > "$OUTDIR/env.log" 2>&1

# ---- 1. build ------------------------------------------------------------------
command -v nvcc >/dev/null || log "nvcc not found: the build has no CUDA backend"
# binaries built elsewhere: unpack, find the CUDA libraries, use them if every library resolves
prebuilt_ok() {
  local b miss
  for b in ./dsv3 "./$BUILD/test_dsv3" "./$BUILD/gemm_cuda"; do
    miss=$(ldd "$b" 2>&1 | grep 'not found')
    [ -z "$miss" ] || { echo "$b: $miss"; return 1; }
  done
}
PREBUILT=""
if [ -n "${GPU_CHECK_PREBUILT:-}" ] && [ -f "$GPU_CHECK_PREBUILT" ]; then
  P=$(pwd)/.gpu/prebuilt
  rm -rf "$P" && mkdir -p "$P" "$BUILD" && tar -C "$P" -xJf "$GPU_CHECK_PREBUILT"
  cp "$P/bin/dsv3" ./dsv3 && cp "$P/bin/test_dsv3" "$P/bin/gemm_cuda" "$BUILD/"
  LDP="$P/lib"
  for l in libcublasLt.so.13 libcublas.so.13 libcudart.so.13; do
    [ -e "/usr/local/cuda/lib64/$l" ] && continue
    d=$(find /usr /opt -name "$l" 2>/dev/null | head -1)
    [ -n "$d" ] && LDP="$LDP:$(dirname "$d")"
  done
  export LD_LIBRARY_PATH="$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ! prebuilt_ok >/dev/null; then   # the compiler runtimes of the bundle, for what the machine lacks
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$P/lib/fallback"
  fi
  if prebuilt_ok > "$OUTDIR/build.log" 2>&1; then
    PREBUILT=$(head -1 "$P/COMMIT")
    echo "dsv3 build: prebuilt $GPU_CHECK_PREBUILT ($(tr '\n' ' ' < "$P/COMMIT")); LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$OUTDIR/build.log"
    echo 0 > "$OUTDIR/build.rc"
    log "prebuilt binaries from $GPU_CHECK_PREBUILT"
  else
    log "prebuilt binaries do not load ($(tail -1 "$OUTDIR/build.log")); building"
    rm -f ./dsv3 "$BUILD/test_dsv3" "$BUILD/gemm_cuda"
  fi
fi
if [ -z "$PREBUILT" ]; then
  if [ "${GPU_CHECK_DEPS:-0}" = 1 ] && ! make -s check-deps >/dev/null 2>&1; then
    run deps 90 bash .ci/install-deps.sh
  fi
  run build 270 make -j"$NP" all build-tests cuda-bench
fi
BUILD_RC=$(rcof build)
BANNER=$(grep -m1 '^dsv3 build:' "$OUTDIR/build.log" | jstr)
if [ "$BUILD_RC" != 0 ]; then
  printf '{"gpu": null, "build": {"rc": %s, "banner": %s, "tail": %s}, "seconds": %s}\n' "$BUILD_RC" "$BANNER" \
    "$(tailj "$OUTDIR/build.log")" "$(( $(date +%s) - T0 ))" > "$OUTDIR/gpu_check.json"
  log "build failed; $OUTDIR/gpu_check.json"
  exit 1
fi
BUILD_S=$(( $(date +%s) - T0 ))

# ---- 2. the GPU ------------------------------------------------------------------
PROBE=$(timeout 30 "./$BUILD/gemm_cuda" --probe 2>/dev/null)
PROBE_RC=$?
[ -n "$PROBE" ] || PROBE='{"gpu": false, "error": "gemm_cuda printed nothing"}'
SMI=$( (timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null ||
        echo none) | head -1 | jstr)
if [ "$PROBE_RC" != 0 ]; then
  printf '{"gpu": false, "probe": %s, "nvidia_smi": %s, "build": {"rc": 0, "banner": %s, "seconds": %s},\n "budget_s": %s, "note": "no GPU: nothing ran on a device; the CUDA tests skip"}\n' \
    "$PROBE" "$SMI" "$BANNER" "$BUILD_S" "$BUDGET" > "$OUTDIR/gpu_check.json"
  log "no GPU ($PROBE); wrote $OUTDIR/gpu_check.json"
  exit 0
fi
log "GPU: $PROBE"
# the shared data the tests read: ../shared, else the copy gpu_bundle.sh put beside the bundle
if [ -z "${DS_SHARED:-}" ] && [ ! -d ../shared/data ] && [ -d .gpu/shared/data ]; then
  export DS_SHARED=$(pwd)/.gpu/shared
fi
TEST="env DSV3=./dsv3 OMP_NUM_THREADS=$TH ./$BUILD/test_dsv3"

# ---- 3a. every ops entry against the CPU (incl. FP8 GEMM on DeepSeek shapes) ----------
run tests_ops 75 $TEST cuda_ops cuda_table

# ---- 4. GEMMs ------------------------------------------------------------------------
# the JSON in its own file: the progress lines on stderr (and any self-check
# line) would otherwise land inside it once stdout's buffer flushes mid-run
run gemm 60 "./$BUILD/gemm_cuda" --iters 20 --json "$OUTDIR/gemm.json"
python3 -c "import json; json.load(open('$OUTDIR/gemm.json'))" 2>/dev/null || echo "{\"error\": $(tailj "$OUTDIR/gemm.log")}" > "$OUTDIR/gemm.json"

# ---- 3b. whole models against the CPU --------------------------------------------------
run tests_models 90 $TEST cuda_model
# a failure there: the device-resident model once more under compute-sanitizer (the first bad access)
if [ "$(rcof tests_models)" != 0 ] && command -v compute-sanitizer >/dev/null; then
  run sanitize_resident 60 compute-sanitizer --tool memcheck --print-limit 4 $TEST cuda_model_resident_vs_cpu
fi

# ---- 5. training tokens/s ----------------------------------------------------------------
# lastj NAME: the last JSON line of a step's log, or its status and tail
lastj() {
  local line; line=$(grep '^{' "$OUTDIR/$1.log" 2>/dev/null | tail -1)
  [ -n "$line" ] || line="{\"rc\": $(rcof "$1"), \"error\": $(tailj "$OUTDIR/$1.log")}"
  echo "$line"
}
TRAIN=""
for p in fp32 bf16 fp8; do
  run "train_$p" 40 ./dsv3 --threads "$TH" bench-train --config small --random 8,512 --iters 3 --device cuda --precision "$p"
  TRAIN="$TRAIN${TRAIN:+, }\"$p\": $(lastj "train_$p")"
done
# A/B runs against the defaults above: the FP8 expert GEMMs one by one (DSV3_CUDA_GROUPED=0: each
# expert quantized and multiplied on its own); the FP8 experts' products one cuBLASLt GEMM each
# instead of one launch of the tensor-core kernel (DSV3_CUDA_FP8_MMA=0);
# the BF16 experts without the strided-batched cuBLASLt calls (DSV3_CUDA_BATCHED=0: cuBLAS's
# grouped call on the CUDA cores); the BF16 table's attention on the FP32 kernels instead of the
# tensor cores (DSV3_CUDA_ATTN=fp32); the tensor-core attention at a key (query) tile of 64 in every
# kernel (DSV3_CUDA_ATTN_TILE=64; `small`'s dk/dv kernel picks 32, the ~1B config's forward too); for
# the ~1B config also the backward's accumulators in shared memory (DSV3_CUDA_ATTN_REGS=0)
ab() { # NAME KEY ENV...
  local name=$1 key=$2 p=$3; shift 3
  run "$name" 40 env "$@" ./dsv3 --threads "$TH" bench-train --config small --random 8,512 --iters 3 --device cuda \
    --precision "$p"
  TRAIN="$TRAIN, \"$key\": $(lastj "$name")"
}
ab train_fp8_loop fp8_experts_one_by_one fp8 DSV3_CUDA_GROUPED=0
ab train_fp8_nomma fp8_experts_cublaslt fp8 DSV3_CUDA_FP8_MMA=0
ab train_bf16_unbatched bf16_experts_not_batched bf16 DSV3_CUDA_BATCHED=0
ab train_bf16_attn32 bf16_attention_fp32 bf16 DSV3_CUDA_ATTN=fp32
ab train_bf16_tile64 bf16_attention_tile64 bf16 DSV3_CUDA_ATTN_TILE=64
TMPM=$(mktemp -d)
trap 'rm -rf "$TMPM"' EXIT
./dsv3 init --config small --out "$TMPM/cfg" --config-only >/dev/null 2>&1
HAVE_TORCH=0
grep -q 'cuda True' "$OUTDIR/env.log" && HAVE_TORCH=1
PEER=""
if [ "$HAVE_TORCH" = 1 ]; then
  run peer_train_fp32 45 env BENCH_DEVICE=cuda python3 tools/bench_train_torch.py --config "$TMPM/cfg/config.json" \
    --batch 8 --seq 512 --iters 3 --threads "$TH"
  run peer_train_bf16 45 env BENCH_DEVICE=cuda BENCH_AUTOCAST=bf16 python3 tools/bench_train_torch.py \
    --config "$TMPM/cfg/config.json" --batch 8 --seq 512 --iters 3 --threads "$TH"
  PEER="\"fp32\": $(lastj peer_train_fp32), \"bf16_autocast\": $(lastj peer_train_bf16)"
fi

# ---- 6. decode tokens/s --------------------------------------------------------------------
run init_small 30 ./dsv3 init --config small --out "$TMPM/small" --seed 1
PROMPT=$(seq 11 43 | tr '\n' ' ')
run decode 40 ./dsv3 --threads "$TH" generate --model "$TMPM/small" --ids --prompt "$PROMPT" --max-new-tokens 32 \
  --ignore-eos --json --device cuda
DEC=$(lastj decode)
run decode_b32 40 ./dsv3 --threads "$TH" bench-decode --config small --batch 32 --prompt 33 --new 32 --device cuda
DEC32=$(lastj decode_b32)
# A/B: the decode-sized expert products one cuBLASLt call each instead of one few-rows launch
run decode_loop 40 env DSV3_CUDA_FEWROWS=0 ./dsv3 --threads "$TH" generate --model "$TMPM/small" --ids \
  --prompt "$PROMPT" --max-new-tokens 32 --ignore-eos --json --device cuda
run decode_b32_loop 40 env DSV3_CUDA_FEWROWS=0 ./dsv3 --threads "$TH" bench-decode --config small --batch 32 \
  --prompt 33 --new 32 --device cuda
DECLOOP="\"batch1\": $(lastj decode_loop), \"batch32\": $(lastj decode_b32_loop)"
PEERDEC=""
if [ "$HAVE_TORCH" = 1 ]; then
  run peer_decode 45 env BENCH_DEVICE=cuda python3 tools/bench_generate_torch.py --config "$TMPM/cfg/config.json" \
    --seq 33 --new 32 --threads "$TH" --iters 2
  run peer_decode_b32 45 env BENCH_DEVICE=cuda python3 tools/bench_generate_torch.py --config "$TMPM/cfg/config.json" \
    --seq 33 --new 32 --threads "$TH" --iters 2 --batch 32
  PEERDEC="\"batch1\": $(lastj peer_decode), \"batch32\": $(lastj peer_decode_b32)"
fi

# ---- 3c. training and generation against the CPU --------------------------------------------
run tests_train 150 $TEST cuda_train_vs_cpu cuda_generate_vs_cpu
# the command line with --device cuda vs --device cpu: bench-decode, bench-train, eval, train with a
# resume, serve (token ids and text equal; losses, log-probabilities, metrics within 1e-4)
run tests_cli 75 $TEST cuda_cli serve_cuda_

# ---- 7. the ~1B config ------------------------------------------------------------------------
BIG=""
for p in bf16 fp8; do
  run "train1b_$p" 60 ./dsv3 --threads "$TH" bench-train --config bench/configs/v3-1b.json --random 8,512 --iters 2 \
    --device cuda --precision "$p"
  BIG="$BIG${BIG:+, }\"$p\": $(lastj "train1b_$p")"
done
# the A/B runs of `small` above, and cuBLASLt's algorithms tuned (the fastest of the heuristic's
# first 8 timed on each class of problems, DSV3_CUDA_LT_TUNE=1) against its first (the default)
for ab in "bf16 unbatched DSV3_CUDA_BATCHED=0" "bf16 attn32 DSV3_CUDA_ATTN=fp32" "bf16 tile64 DSV3_CUDA_ATTN_TILE=64" "bf16 smemacc DSV3_CUDA_ATTN_REGS=0" "fp8 nomma DSV3_CUDA_FP8_MMA=0" \
          "bf16 tuned DSV3_CUDA_LT_TUNE=1" "fp8 tuned DSV3_CUDA_LT_TUNE=1"; do
  set -- $ab
  run "train1b_$1_$2" 60 env "$3" ./dsv3 --threads "$TH" bench-train --config bench/configs/v3-1b.json \
    --random 8,512 --iters 2 --device cuda --precision "$1"
  BIG="$BIG, \"$1_$2\": $(lastj "train1b_$1_$2")"
done
if [ "$HAVE_TORCH" = 1 ]; then
  run peer1b_bf16 75 env BENCH_DEVICE=cuda BENCH_AUTOCAST=bf16 python3 tools/bench_train_torch.py \
    --config bench/configs/v3-1b.json --batch 8 --seq 512 --iters 2 --threads "$TH"
  BIG="$BIG, \"peer_bf16_autocast\": $(lastj peer1b_bf16)"
fi

# ---- 8. where the time goes: each entry's time in the timed steps (bench-train --profile: the
# warm-up step, with its cuBLASLt searches, left out; each outermost entry synchronised), BF16 and
# FP8 steps of the ~1B config, then FP32 and BF16 steps of `small` (batch 8 x 512: the step the
# peer comparison is made on); DSV3_CUDA_PROFILE=1 adds the backend's own table over both steps
# (cuBLASLt searches, batched expert calls, FP8 GEMMs on cuBLASLt and on the own kernel)
for p in bf16 fp8; do
  run "profile1b_$p" 60 env DSV3_CUDA_PROFILE=1 ./dsv3 --threads "$TH" bench-train \
    --config bench/configs/v3-1b.json --random 8,512 --iters 2 --device cuda --precision "$p" --profile
done
for p in fp32 bf16; do
  run "profile_small_$p" 40 env DSV3_CUDA_PROFILE=1 ./dsv3 --threads "$TH" bench-train --config small \
    --random 8,512 --iters 2 --device cuda --precision "$p" --profile
done

# ---- 9. shared-memory hazards of the FP8 tensor-core kernel (two cp.async stages, ldmatrix):
# racecheck over its self-check and the C = 300 fallback products (its exit code 9 on a hazard)
if command -v compute-sanitizer >/dev/null; then
  run race_fp8mma 45 compute-sanitizer --tool racecheck --error-exitcode 9 --print-limit 4 $TEST cuda_ops_linear_fp8w
  # the attention's tiles reused across iterations behind barriers: its op test (every variant)
  run race_attention 45 compute-sanitizer --tool racecheck --error-exitcode 9 --print-limit 4 $TEST \
    'cuda_ops_attention_bf16$'
fi

# ---- 3d. the staged table and the device-resident paths on the CPU (last: no GPU figures) ----
run tests_staged 60 $TEST cuda_staged backend_tables backend_device_cli device_resident

# ---- summary -----------------------------------------------------------------------------------
{
  printf '{"gpu": true, "probe": %s, "nvidia_smi": %s,\n' "$PROBE" "$SMI"
  printf ' "build": {"rc": 0, "banner": %s, "seconds": %s},\n' "$BANNER" "$BUILD_S"
  printf ' "tests": {"ops": %s,\n  "models": %s,\n  "train": %s,\n  "cli": %s,\n  "staged": %s,\n  "racecheck_fp8mma_rc": %s,\n  "racecheck_attention_rc": %s},\n' \
    "$(testj tests_ops)" "$(testj tests_models)" "$(testj tests_train)" "$(testj tests_cli)" "$(testj tests_staged)" \
    "$(rcof race_fp8mma)" "$(rcof race_attention)"
  printf ' "tolerances": "ops: NMSE <= 1e-10 FP32 (CPU bits where the arithmetic is the same), FP8 GEMM NMSE <= 1e-6; models FP32: logits <= 1e-5, gradients <= 1e-4, loss <= 1e-5 (max diff / max magnitude); BF16 logits <= 2e-2, loss <= 2.5e-4; FP8 loss <= 2.5e-3; train FP32 20 steps losses <= 1e-4 relative, BF16/FP8 over seeds 7, 8, 9: mean last-10 train loss within 0.25%% of the CPU BF16 run, mean val within 0.4%%, each seed val within 1%%",\n'
  printf ' "gemm": %s,\n' "$(cat "$OUTDIR/gemm.json")"
  printf ' "train_small_8x512": {%s},\n' "$TRAIN"
  printf ' "peer_train_small_8x512": {%s},\n' "$PEER"
  printf ' "train_1b_8x512": {%s},\n' "$BIG"
  printf ' "decode_small_batch1": %s,\n' "$DEC"
  printf ' "decode_small_batch32": %s,\n' "$DEC32"
  printf ' "decode_small_experts_loop": {%s},\n' "$DECLOOP"
  printf ' "peer_decode_small": {%s},\n' "$PEERDEC"
  # the tensor-core paths that turned themselves off (fp8mma.cu, attention.cu: "failed its self-check")
  printf ' "self_check_failures": %s,\n' "$(grep -h 'failed its self-check' "$OUTDIR"/*.log 2>/dev/null | sort -u | head -8 | jstr)"
  printf ' "prebuilt": "%s",\n' "$PREBUILT"
  printf ' "note": "bench-train and generate --device cuda run device-resident (the CUDA table itself, device memory; docs/engine.md 2.5): the figures are the device kernels plus the per-MoE-layer count copies; moe_sort, balance_loss and sampling are device kernels",\n'
  printf ' "budget_s": %s, "seconds": %s}\n' "$BUDGET" "$(( $(date +%s) - T0 ))"
} > "$OUTDIR/gpu_check.json"
python3 -c "import json; json.load(open('$OUTDIR/gpu_check.json'))" 2>/dev/null || log "warning: gpu_check.json is not valid JSON"
log "done: $OUTDIR/gpu_check.json"
