#!/usr/bin/env bash
# bench_gemm.sh — FP8 (block-scaled E4M3, promotion every 128), BF16 and FP32
# GEMM GFLOP/s on the shapes of a ~100M-parameter model (M=512 tokens, H=768,
# expert inner 256..512) and of DeepSeek-V3 (7168x2048 experts, 7168x18432
# dense), side by side with the peer: torch CPU matmul (FP32 and BF16), when
# torch is installed.  Writes bench/results/gemm.json.
#   BENCH_THREADS=2 BENCH_REPS=2 BENCH_PRESET=all|small|deepseek bash bench/bench_gemm.sh
set -u
cd "$(dirname "$0")/.."
BIN=${DSV3:-./dsv3}
[ -x "$BIN" ] || make -j2 dsv3 >/dev/null || exit 1
T=${BENCH_THREADS:-2}
REPS=${BENCH_REPS:-2}
PRESET=${BENCH_PRESET:-all}
mkdir -p bench/results
"$BIN" --threads "$T" fp8 bench --preset "$PRESET" --reps "$REPS" --json bench/results/gemm.dsv3.json || exit 1
SMALL="512,768,768;512,512,768;512,768,512;512,256,768"
DS="256,2048,7168;1024,2048,7168;256,7168,2048;256,18432,7168"
case "$PRESET" in small) SH="$SMALL" ;; deepseek) SH="$DS" ;; *) SH="$SMALL;$DS" ;; esac
PEER=bench/results/gemm.torch.json
rm -f "$PEER"
if python3 -c "import torch" 2>/dev/null; then
  python3 tools/bench_gemm_torch.py "$PEER" "$T" 1 "$SH" || rm -f "$PEER"
else
  echo "(torch not installed: no peer)"
fi
python3 - "$PEER" <<'PY'
import json, os, sys
d = json.load(open("bench/results/gemm.dsv3.json"))
peer = {}
if os.path.exists(sys.argv[1]):
    p = json.load(open(sys.argv[1]))
    d["peer"] = p["peer"]
    peer = {(r["M"], r["N"], r["K"]): r for r in p["results"]}
print(f"\nGEMM GFLOP/s, {d['threads']} threads ({d['isa']}); peer: {d.get('peer', 'none')}")
print(f"{'M':>5} {'N':>6} {'K':>5} | {'dsv3 fp8':>8} {'dsv3 bf16':>9} {'blas fp32':>9} | {'torch fp32':>10} {'torch bf16':>10} | {'fp8/t.bf16':>10} {'bf16/t.bf16':>11}")
for r in d["results"]:
    q = peer.get((r["M"], r["N"], r["K"]), {})
    r.update({k: v for k, v in q.items() if k.startswith("torch")})
    tb = q.get("torch_bf16", 0)
    ratio = lambda x: f"{x / tb:.2f}" if tb else "-"  # 0: peer skipped
    print(f"{r['M']:>5} {r['N']:>6} {r['K']:>5} | {r['fp8']:>8.1f} {r['bf16']:>9.1f} {r['fp32_blas']:>9.1f} | "
          f"{q.get('torch_fp32', 0):>10.1f} {tb:>10.1f} | {ratio(r['fp8']):>10} {ratio(r['bf16']):>11}")
json.dump(d, open("bench/results/gemm.json", "w"), indent=1)
PY
rm -f bench/results/gemm.dsv3.json "$PEER"
