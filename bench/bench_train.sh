#!/usr/bin/env bash
# bench_train.sh — one FP32 training step (forward, CE loss, backward,
# gradient clipping, AdamW) of the `small` and `base` presets on CPU, MTP off:
# dsv3 (`dsv3 bench-train`) vs transformers' DeepseekV3ForCausalLM in train
# mode (tools/bench_train_torch.py, same config, same thread count) when
# torch is importable; also dsv3 with --precision bf16 (BF16 GEMM inputs, FP32
# sums), --precision fp8 (E4M3 attention/MLP/expert GEMMs, docs/fp8.md) and
# fp8 with --fp8-cache (linear inputs for the weight gradients kept in E4M3),
# with the activation arena each one allocates.  Prints tokens/s, GFLOP/s (3 x forward FLOPs: 6 x activated params x
# tokens + attention) and MFU against the FP32 peak measured at start-up (FMA chains, backend/cpu/peak.h),
# and each step phase's share.  The transformers peer runs FP32 and BF16 (autocast); FP8 has no CPU peer.
# One run per preset of BENCH_TRAIN_CONFIGS (default "small base") and shape of
# BENCH_SHAPES ("B,T ..."; default "1,256 8,512"); writes
# bench/results/train_<B>x<T>.json for small (and train.json, the first shape's,
# as before) and train_<preset>_<B>x<T>.json for the others.
#   BENCH_TRAIN_CONFIGS  BENCH_SHAPES  BENCH_THREADS (nproc)  BENCH_ITERS (3)  BENCH_PEER_ITERS (3)
#   BENCH_KEEP_BLAS_CORE=1  keep an inherited OPENBLAS_CORETYPE (default: dropped, so dsv3 picks
#   OpenBLAS's kernel family by the CPU's vectors; Haswell's AVX2 sgemm on an AVX-512 CPU made the
#   FP32 step 1.3-2x slower).  The row "FP32 GEMM" names the kernel family used.
set -eu
[ "${BENCH_KEEP_BLAS_CORE:-0}" = 1 ] || unset OPENBLAS_CORETYPE
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=10000  # both sides: see bench_generate.sh
cd "$(dirname "$0")/.."
SHAPES=${BENCH_SHAPES:-"${BENCH_B:-1},${BENCH_T:-256} 8,512"}
[ -n "${BENCH_B:-}" ] && SHAPES="${BENCH_B},${BENCH_T:-256}"
TH=${BENCH_THREADS:-$(nproc)}
IT=${BENCH_ITERS:-3}
PIT=${BENCH_PEER_ITERS:-3}
BIN=./dsv3
[ -x "$BIN" ] || { echo "bench_train: build ./dsv3 first (make)"; exit 1; }
mkdir -p bench/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
first=1
for CFG in ${BENCH_TRAIN_CONFIGS:-small base}; do
"$BIN" init --config "$CFG" --out "$tmp/$CFG" --config-only
for shape in $SHAPES; do
B=${shape%,*}
T=${shape#*,}
# the FP32 run also times each ops entry (--profile: its table on stderr, "profile" in the
# JSON; measured within the noise of the step, 0.98-1.06x in three alternating pairs at B=1)
ours=$("$BIN" --threads "$TH" bench-train --config "$CFG" --random "$B,$T" --iters "$IT" --profile)
ours16=$("$BIN" --threads "$TH" bench-train --config "$CFG" --random "$B,$T" --iters "$IT" --precision bf16) || ours16=""
ours8=$("$BIN" --threads "$TH" bench-train --config "$CFG" --random "$B,$T" --iters "$IT" --precision fp8) || ours8=""
ours8c=$("$BIN" --threads "$TH" bench-train --config "$CFG" --random "$B,$T" --iters "$IT" --precision fp8 --fp8-cache) || ours8c=""
peer=""
peer16=""
if python3 -c "import torch, transformers" 2>/dev/null; then
  peer=$(python3 tools/bench_train_torch.py --config "$tmp/$CFG/config.json" --batch "$B" --seq "$T" \
           --threads "$TH" --iters "$PIT" --warmup 1 2>/dev/null | tail -1) || peer=""
  peer16=$(BENCH_AUTOCAST=bf16 python3 tools/bench_train_torch.py --config "$tmp/$CFG/config.json" --batch "$B" \
           --seq "$T" --threads "$TH" --iters "$PIT" --warmup 1 2>/dev/null | tail -1) || peer16=""
fi
OUT="bench/results/train_${B}x${T}.json"
[ "$CFG" = small ] || OUT="bench/results/train_${CFG}_${B}x${T}.json"
CFG="$CFG" OUT="$OUT" OURS="$ours" OURS16="$ours16" OURS8="$ours8" OURS8C="$ours8c" PEER="$peer" PEER16="${peer16:-}" python3 - <<'PY' || { echo "$ours" > "$OUT"; cat "$OUT"; }
import json, os
ours = json.loads(os.environ["OURS"])
peer = json.loads(os.environ["PEER"]) if os.environ.get("PEER") else None
peer16 = json.loads(os.environ["PEER16"]) if os.environ.get("PEER16") else None
ours16 = json.loads(os.environ["OURS16"]) if os.environ.get("OURS16") else None
ours8 = json.loads(os.environ["OURS8"]) if os.environ.get("OURS8") else None
ours8c = json.loads(os.environ["OURS8C"]) if os.environ.get("OURS8C") else None
res = {"bench": "train", "config": os.environ["CFG"], "batch": ours["batch"], "seq": ours["seq"],
       "threads": ours["threads"], "dsv3": ours}
print(f"training step (fwd+bwd+clip+AdamW), preset {res['config']}, B={ours['batch']} T={ours['seq']} threads={ours['threads']}")
# FLOPs per step: 3 x forward (6 x activated matmul params x tokens + causal attention)
fl = ours.get("flops_per_step", 0.0)
peak = ours.get("peak_flops", 0.0)
if fl and peak:
    print(f"  FLOPs per step {fl / 1e9:.2f} G (6 x activated params x tokens + attention); "
          f"FP32 peak {peak / 1e9:.0f} GFLOP/s (measured: FMA chains on every thread)")
print(f"  FP32 GEMM: {ours.get('blas', '?')}")
print(f"  {'impl':<14}{'tokens/s (mean)':>16}{'tokens/s (best)':>16}{'GFLOP/s (mean)':>16}{'MFU':>8}")
def row(label, r, note):
    """print one dsv3 row; returns (mean tokens/s, mean GFLOP/s)"""
    t = r["batch"] * r["seq"] / r["mean_s"]
    g = fl / r["mean_s"] / 1e9 if fl else 0.0
    mfu = 100 * g * 1e9 / peak if peak else 0.0
    print(f"  {label:<14}{t:>16.1f}{r['tokens_per_s']:>16.1f}{g:>16.2f}{mfu:>7.1f}%   ({note})")
    return t, g


tps_mean, gf = row("dsv3", ours, f"best step: forward {ours['forward_s']:.3f}s, backward {ours['backward_s']:.3f}s, "
                   f"optimizer {ours['optimizer_s']:.3f}s")
res["gflops_mean"] = gf
ph = {k: ours.get(k + "_s", 0.0) for k in ("forward", "backward", "optimizer")}
tot = sum(ph.values())
if tot > 0:
    res["phase_share"] = {k: v / tot for k, v in ph.items()}
    print("  step phases (best step): " + ", ".join(f"{k} {100 * v / tot:.1f}%" for k, v in ph.items()))
prof = ours.get("profile") or {}
if prof:
    mean_ms = 1e3 * ours["mean_s"]
    top = sorted(prof.items(), key=lambda kv: -kv[1]["ms_per_step"])
    res["entry_share"] = {k: v["ms_per_step"] / mean_ms for k, v in top}
    print("  ops entries (mean step): " + ", ".join(f"{k} {100 * v['ms_per_step'] / mean_ms:.1f}%" for k, v in top[:6]))
res["mfu_mean"] = gf * 1e9 / peak if peak else 0.0
if ours16:
    res["dsv3_bf16"] = ours16
    t16, _ = row("dsv3 bf16", ours16, "BF16 GEMM inputs, FP32 sums; MFU against the FP32 peak")
    res["bf16_tokens_per_s_mean"] = t16
if ours8:
    res["dsv3_fp8"] = ours8
    t8, _ = row("dsv3 fp8", ours8, "E4M3 attention/MLP GEMMs, 1x128/128x128 scales; MFU against the FP32 peak")
    res["fp8_tokens_per_s_mean"] = t8
    if ours16:
        print(f"  ratio fp8/bf16 (mean tokens/s): {t8 / t16:.2f}x; fp8/fp32: {t8 / tps_mean:.2f}x")
if ours8 and ours8c:
    res["dsv3_fp8_cache"] = ours8c
    t8c = ours8c["batch"] * ours8c["seq"] / ours8c["mean_s"]
    row("dsv3 fp8 cache", ours8c, f"--fp8-cache; {t8c / t8:.2f}x fp8")
    res["fp8_cache_tokens_per_s_mean"] = t8c
    mb = lambda k: ours8c.get(k, 0) / 2**20
    print(f"  activation arena: {mb('mem_acts_fp32'):.1f} MiB, with --fp8-cache {mb('mem_acts_fp8_cache'):.1f} MiB "
          f"({mb('mem_acts_fp32') - mb('mem_acts_fp8_cache'):.1f} MiB saved)")
if peer:
    res["transformers"] = peer
    res["ratio_tokens_per_s_mean"] = tps_mean / peer["tokens_per_s"]
    pgf = fl * peer["tokens_per_s"] / (ours["batch"] * ours["seq"]) / 1e9 if fl else 0.0
    print(f"  {'transformers':<14}{peer['tokens_per_s']:>16.1f}{'':>16}{pgf:>16.2f}{100 * pgf * 1e9 / peak if peak else 0:>7.1f}%")
    print(f"  ratio dsv3/transformers (mean tokens/s): {res['ratio_tokens_per_s_mean']:.2f}x")
else:
    print("  transformers: not available (torch not importable), no ratio")
if peer16 and ours16:
    res["transformers_bf16"] = peer16
    res["ratio_bf16_tokens_per_s_mean"] = res["bf16_tokens_per_s_mean"] / peer16["tokens_per_s"]
    print(f"  {'transformers bf16':<18}{peer16['tokens_per_s']:>12.1f}   (torch.autocast bf16); "
          f"ratio dsv3 bf16 / transformers bf16: {res['ratio_bf16_tokens_per_s_mean']:.2f}x")
json.dump(res, open(os.environ["OUT"], "w"), indent=1)
PY
[ "$first" = 1 ] && [ "$CFG" = small ] && cp "$OUT" bench/results/train.json
first=0
done
done
