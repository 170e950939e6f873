#!/usr/bin/env bash
# bench_fp8_infer.sh — resident inference on the `small` preset (random init,
# seed 1): the FP32 folder (fp32), the same model after `dsv3 convert --to
# bf16` (bf16: every matmul weight BF16-resident) and after `dsv3 convert --to
# fp8` (fp8: E4M3 linears + 128x128 scales FP8-resident, the BF16 embedding,
# lm_head and router BF16-resident), each loaded the default (resident) way.
# Prefill forward tokens/s (`dsv3 forward --random 1,T`), batch-1 greedy
# decode tokens/s (`dsv3 generate --ids`, tokens after the first), and the
# resident weight memory (the line dsv3 prints: FP8 codes, scales, BF16,
# FP32); and the decode matmul alone (bench/gemv_fp8.c: one row x (OC, C)
# weights streamed from memory, FP32 vs FP8 vs BF16 gemv, at the small
# preset's shapes).  Writes bench/results/fp8_infer.json.
#   BENCH_T (256)  BENCH_PROMPT (32)  BENCH_NEW (32)  BENCH_THREADS ("1 2")
set -eu
cd "$(dirname "$0")/.."
T=${BENCH_T:-256}
P=${BENCH_PROMPT:-32}
NEW=${BENCH_NEW:-32}
THREADS=${BENCH_THREADS:-"1 2"}
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=10000  # both sides: see bench_generate.sh
BIN=./dsv3
[ -x "$BIN" ] || { echo "bench_fp8_infer: build ./dsv3 first (make)"; exit 1; }
BUILD=${BUILD:-build}
mkdir -p bench/results
PKG="libcjson libpcre2-8 openblas"
cc -std=gnu11 -O2 -march=native -fopenmp -Isrc $(pkg-config --cflags $PKG 2>/dev/null) bench/gemv_fp8.c \
   "$BUILD/libdsv3.a" -o "$BUILD/gemv_fp8" $(make -s --no-print-directory print-ldlibs)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" init --config small --out "$tmp/fp32" --seed 1 >/dev/null 2>&1
"$BIN" convert --to fp8 "$tmp/fp32" "$tmp/fp8" >/dev/null 2>&1
"$BIN" convert --to bf16 "$tmp/fp32" "$tmp/bf16" >/dev/null 2>&1
prompt=$(python3 -c "import random; random.seed(0); print(' '.join(str(random.randrange(32000)) for _ in range($P)))")
memline() { "$BIN" --verbose forward --model "$tmp/$1" --random 1,8 --iters 1 --no-mtp 2>&1 >/dev/null | grep "resident weights" | tail -1; }
mem8=$(memline fp8)
mem16=$(memline bf16)
mem32=$(memline fp32)
gemv=""
for shape in "1536 512" "512 1536" "32000 512"; do
  gemv="$gemv$(OMP_NUM_THREADS=1 "$BUILD/gemv_fp8" $shape 5)"$'\n'
done
lines=""
for th in $THREADS; do
  for m in fp8 bf16 fp32; do
    f=$("$BIN" --threads "$th" forward --model "$tmp/$m" --random 1,"$T" --iters 3 --no-mtp 2>/dev/null | tail -1)
    g=$("$BIN" --threads "$th" generate --model "$tmp/$m" --ids --prompt "$prompt" --max-new-tokens "$NEW" --ignore-eos --json 2>/dev/null | tail -1)
    lines="$lines$th|$m|$f|$g"$'\n'
  done
done
GEMV="$gemv" LINES="$lines" MEM8="$mem8" MEM16="$mem16" MEM32="$mem32" T="$T" python3 - <<'PY'
import json, os, re
def mem(line):
    nums = [float(x) for x in re.findall(r"([0-9.]+) (?:MiB|KiB)", line)]
    keys = ["fp8_mib", "scales_kib", "bf16_mib", "fp32_mib", "total_mib", "all_fp32_mib", "all_bf16_mib"]
    return dict(zip(keys, nums)) if len(nums) == 7 else {"line": line}
m8, m16, m32 = mem(os.environ["MEM8"]), mem(os.environ["MEM16"]), mem(os.environ["MEM32"])
print("FP8- and BF16-resident vs FP32 inference, preset small (random init)")
print(f"  resident weights  fp8 folder:  {os.environ['MEM8'].split(': ', 1)[-1]}")
print(f"                    bf16 folder: {os.environ['MEM16'].split(': ', 1)[-1]}")
print(f"                    fp32 folder: {m32.get('total_mib', '?')} MiB")
print(f"  {'threads':>7} {'weights':>8} {'prefill T=' + os.environ['T']:>14} {'decode':>10}   (tokens/s)")
rows = []
for line in os.environ["LINES"].strip().split("\n"):
    th, m, f, g = line.split("|")
    f, g = json.loads(f), json.loads(g)
    rows.append({"threads": int(th), "weights": m, "forward": f, "generate": g})
    print(f"  {th:>7} {m:>8} {f['tokens_per_s']:>14.1f} {g['tokens_per_s']:>10.1f}")
for th in sorted({r["threads"] for r in rows}):
    a = {r["weights"]: r for r in rows if r["threads"] == th}
    for m in ("fp8", "bf16"):
        if m in a and "fp32" in a:
            print(f"  {th:>7} {m + '/fp32':>9} {a[m]['forward']['tokens_per_s'] / a['fp32']['forward']['tokens_per_s']:>12.2f}x "
                  f"{a[m]['generate']['tokens_per_s'] / a['fp32']['generate']['tokens_per_s']:>9.2f}x")
gemv = [json.loads(l) for l in os.environ["GEMV"].strip().split("\n")]
print("  decode matmul, 1 row, 1 thread (giga-weights/s; weights from memory)")
for g in gemv:
    print(f"  {g['oc']:>6}x{g['c']:<5} fp32 {g['fp32_gweights_per_s']:.2f} ({g['fp32_gb_per_s']:.1f} GB/s)  "
          f"fp8 {g['fp8_gweights_per_s']:.2f} ({g['fp8_gb_per_s']:.1f} GB/s) {g['speedup']:.2f}x  "
          f"bf16 {g['bf16_gweights_per_s']:.2f} ({g['bf16_gb_per_s']:.1f} GB/s) {g['bf16_speedup']:.2f}x")
json.dump({"bench": "fp8_infer", "config": "small", "memory": {"fp8": m8, "bf16": m16, "fp32": m32}, "rows": rows,
           "gemv": gemv},
          open("bench/results/fp8_infer.json", "w"), indent=1)
PY
