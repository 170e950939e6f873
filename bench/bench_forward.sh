#!/usr/bin/env bash
# bench_forward.sh — prefill forward (FP32, CPU) of the `small` preset
# (~104M parameters total, 49M activated per token; MTP off on both sides):
# dsv3 vs transformers' DeepseekV3ForCausalLM (eager, same config, same
# thread count) when torch is importable.  Writes bench/results/forward.json.
#   BENCH_B (1)  BENCH_T (256)  BENCH_THREADS (nproc)  BENCH_ITERS (5)  BENCH_PEER_ITERS (3)
# GFLOP/s = (2 · activated matmul parameters · tokens + causal attention
# FLOPs) / time; the input embedding (a gather) is not counted.
set -eu
cd "$(dirname "$0")/.."
B=${BENCH_B:-1}
T=${BENCH_T:-256}
TH=${BENCH_THREADS:-$(nproc)}
IT=${BENCH_ITERS:-5}
PIT=${BENCH_PEER_ITERS:-3}
BIN=./dsv3
[ -x "$BIN" ] || { echo "bench_forward: build ./dsv3 first (make)"; exit 1; }
mkdir -p bench/results
# both sides with sleeping (not spinning) idle OpenMP threads, as dsv3 sets by default
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" init --config small --out "$tmp/small" --config-only
ours=$("$BIN" --threads "$TH" forward --config small --random "$B,$T" --iters "$IT" --no-mtp)
peer=""
if python3 -c "import torch, transformers" 2>/dev/null; then
  peer=$(python3 tools/bench_forward_torch.py --config "$tmp/small/config.json" --batch "$B" --seq "$T" \
           --threads "$TH" --iters "$PIT" --warmup 1 2>/dev/null | tail -1) || peer=""
fi
OURS="$ours" PEER="$peer" python3 - <<'PY' || { echo "$ours" > bench/results/forward.json; cat bench/results/forward.json; }
import json, os
ours = json.loads(os.environ["OURS"])
peer = json.loads(os.environ["PEER"]) if os.environ.get("PEER") else None
res = {"bench": "forward", "config": "small", "batch": ours["batch"], "seq": ours["seq"],
       "threads": ours["threads"], "dsv3": ours}
print(f"forward prefill, preset small, B={ours['batch']} T={ours['seq']} threads={ours['threads']}")
print(f"  {'impl':<14}{'tokens/s (mean)':>16}{'tokens/s (best)':>16}{'GFLOP/s (best)':>16}")
tps_mean = ours["batch"] * ours["seq"] / ours["mean_s"]
print(f"  {'dsv3':<14}{tps_mean:>16.1f}{ours['tokens_per_s']:>16.1f}{ours['gflops']:>16.2f}")
if peer:
    pg = ours["flops"] / peer["seconds_per_iter"] / 1e9
    peer["gflops"] = pg
    res["transformers"] = peer
    res["ratio_tokens_per_s_mean"] = tps_mean / peer["tokens_per_s"]
    print(f"  {'transformers':<14}{peer['tokens_per_s']:>16.1f}{'':>16}{pg:>16.2f}")
    print(f"  ratio dsv3/transformers (mean tokens/s): {res['ratio_tokens_per_s_mean']:.1f}x")
else:
    print("  transformers: not available (torch not importable), no ratio")
json.dump(res, open("bench/results/forward.json", "w"), indent=1)
PY
