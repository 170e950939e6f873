#!/usr/bin/env bash
# bench_forward.sh — prefill forward (FP32, CPU) of the `small` preset
# (~104M parameters total, 49M activated per token; MTP off on both sides):
# dsv3 vs transformers' DeepseekV3ForCausalLM (eager, same config, same
# thread count) when torch is importable.  Writes bench/results/forward.json.
#   BENCH_B (1)  BENCH_T (256)  BENCH_THREADS (nproc)  BENCH_ITERS (5)  BENCH_PEER_ITERS (3)
#   BENCH_ROUNDS (3): dsv3 and the peer run alternately, round after round, and
#   each side reports its best round (mean over its iterations), so a load spike
#   from other jobs on a shared machine does not fall on one side only.
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
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=10000  # both sides: see bench_generate.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" init --config small --out "$tmp/small" --config-only
ROUNDS=${BENCH_ROUNDS:-3}
havepeer=0
python3 -c "import torch, transformers" 2>/dev/null && havepeer=1
: > "$tmp/ours.jsonl"
: > "$tmp/peer.jsonl"
for r in $(seq "$ROUNDS"); do
  "$BIN" --threads "$TH" forward --config small --random "$B,$T" --iters "$IT" --no-mtp >> "$tmp/ours.jsonl"
  if [ $havepeer = 1 ]; then
    python3 tools/bench_forward_torch.py --config "$tmp/small/config.json" --batch "$B" --seq "$T" \
      --threads "$TH" --iters "$PIT" --warmup 1 2>/dev/null | tail -1 >> "$tmp/peer.jsonl" || true
  fi
done
OURS="$tmp/ours.jsonl" PEER="$tmp/peer.jsonl" python3 - <<'PY' || { tail -1 "$tmp/ours.jsonl" > bench/results/forward.json; cat bench/results/forward.json; }
import json, os
def rows(p):
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")]
runs = rows(os.environ["OURS"])
ours = min(runs, key=lambda r: r["mean_s"])
peers = rows(os.environ["PEER"])
peer = min(peers, key=lambda r: r["seconds_per_iter"]) if peers else None
res = {"bench": "forward", "config": "small", "batch": ours["batch"], "seq": ours["seq"],
       "threads": ours["threads"], "rounds": len(runs), "dsv3": ours}
print(f"forward prefill, preset small, B={ours['batch']} T={ours['seq']} threads={ours['threads']}, "
      f"best of {len(runs)} alternating rounds")
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
