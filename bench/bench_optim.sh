#!/usr/bin/env bash
# bench_optim.sh — the optimizer step (bench/optim.c): the global gradient
# norm (`sumsq`) and AdamW with the clip coefficient folded in (`adamw`) over
# BENCH_PARAMS million parameters, in GB/s against the copy and triad
# bandwidth measured in the same run (target: fused >= 0.8 x triad), and the
# step time of the previous kernels (norm, clip and AdamW as separate OpenMP
# passes) in the same run.  Writes bench/results/optim.json.
#   BENCH_PARAMS (32)  BENCH_REPS (5)  BENCH_THREADS ("1 2")
set -eu
cd "$(dirname "$0")/.."
NP=${BENCH_PARAMS:-32}
REPS=${BENCH_REPS:-5}
THREADS=${BENCH_THREADS:-"1 2"}
BUILD=${BUILD:-build}
[ -f "$BUILD/libdsv3.a" ] || { echo "bench_optim: build first (make)"; exit 1; }
mkdir -p bench/results
PKG="libcjson libpcre2-8 openblas"
cc -std=gnu11 -O2 -march=native -fopenmp -Isrc $(pkg-config --cflags $PKG 2>/dev/null) bench/optim.c \
   "$BUILD/libdsv3.a" -o "$BUILD/optim_bench" $(make -s --no-print-directory print-ldlibs)
lines=""
for th in $THREADS; do
  lines="$lines$(OMP_NUM_THREADS=$th "$BUILD/optim_bench" "$NP" "$REPS")"$'\n'
done
LINES="$lines" python3 - <<'PY'
import json, os
rows = [json.loads(l) for l in os.environ["LINES"].strip().split("\n")]
print(f"optimizer step over {rows[0]['params'] / 1e6:.1f}M parameters ({rows[0]['segments']} segments), best of {rows[0]['reps']}")
print(f"  {'threads':>7} {'copy':>7} {'triad':>7} | {'fused fp32':>10} {'x triad':>7} {'bf16 mom.':>9} | {'before':>7} | {'step ms: before':>15} {'fused':>7} {'speedup':>7}")
for r in rows:
    print(f"  {r['threads']:>7} {r['copy_gb_per_s']:>7.1f} {r['triad_gb_per_s']:>7.1f} | {r['fused_gb_per_s']:>10.1f} "
          f"{r['fused_vs_triad']:>7.2f} {r['fused_bf16_gb_per_s']:>9.1f} | {r['before_gb_per_s']:>7.1f} | "
          f"{1e3 * r['before_s']:>15.2f} {1e3 * r['fused_s']:>7.2f} {r['speedup']:>6.2f}x")
print("  (GB/s; fused = sumsq + adamw, 32 B/param FP32 moments, 24 B/param BF16; before = the previous norm,")
print("   clip and AdamW passes, 40 B/param; all measured in the same process)")
json.dump({"bench": "optim", "rows": rows}, open("bench/results/optim.json", "w"), indent=1)
PY
