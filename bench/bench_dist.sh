#!/usr/bin/env bash
# bench_dist.sh — training over several processes on this machine: tokens/s
# of `small` (seq 128, global batch 4, 6 steps) at P=1 with 2 threads
# against P=2 with 1 thread each, as pure data parallelism (ZeRO-1) and as
# EP 2; and the bytes each collective moved in a step against the analytic
# count (ZeRO-1: 4 bytes x parameters per step seen by rank 0 of 2).
# Writes bench/results/dist.json.  Needs mpirun and an MPI build (skips otherwise).
#   BENCH_STEPS (6)
set -eu
cd "$(dirname "$0")/.."
BIN=./dsv3
ST=${BENCH_STEPS:-6}
command -v mpirun >/dev/null || { echo "bench_dist: no mpirun, skipped"; exit 0; }
. bench/lib_dist.sh
dist_env
mkdir -p bench/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dist_data "$tmp"
A="train --config small --data $tmp/data --seq 128 --batch 4 --steps $ST --eval-every 0 --warmup 2"
one=$("$BIN" --threads 2 $A --out "$tmp/r1" 2>&1)
dp=$(timeout 600 mpirun --oversubscribe -np 2 "$BIN" --threads 1 $A --out "$tmp/r2" 2>&1)
ep=$(timeout 600 mpirun --oversubscribe -np 2 "$BIN" --threads 1 $A --out "$tmp/r3" --ep 2 2>&1)
ONE="$one" DP="$dp" EP="$ep" python3 - <<'PY'
import json, os, re, sys
sys.path.insert(0, "bench")
from lib_dist import tps, last
one, dp, ep = os.environ["ONE"], os.environ["DP"], os.environ["EP"]
m = re.search(r"AdamW moments of (\d+) of (\d+)", dp)
n0, n = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
res = {"bench": "dist", "config": "small", "seq": 128, "global_batch": 4,
       "p1_2threads_tokens_per_s": tps(one), "p2_dp_tokens_per_s": tps(dp), "p2_ep2_tokens_per_s": tps(ep),
       "dp_grad_mb": last(dp, "grad"), "dp_param_mb": last(dp, "param"), "dp_wait_s": last(dp, "wait"),
       "analytic_grad_mb": 4 * (n - n0) / 1e6, "analytic_param_mb": 4 * n0 / 1e6,
       "ep_dispatch_mb": last(ep, "ep MB dispatch"), "ep_combine_mb": last(ep, "combine")}
print("training over processes, small, T=128, global batch 4 (tokens/s, mean of the timed steps)")
print(f"  P=1, 2 threads        {res['p1_2threads_tokens_per_s']:8.0f}")
print(f"  P=2 DP, 1 thread each {res['p2_dp_tokens_per_s']:8.0f}  ({res['p2_dp_tokens_per_s'] / max(res['p1_2threads_tokens_per_s'], 1):.2f}x)")
print(f"  P=2 EP 2, 1 thread    {res['p2_ep2_tokens_per_s']:8.0f}  ({res['p2_ep2_tokens_per_s'] / max(res['p1_2threads_tokens_per_s'], 1):.2f}x)")
print(f"  ZeRO-1 bytes per step (rank 0): grad {res['dp_grad_mb']:.2f} MB (analytic {res['analytic_grad_mb']:.2f}), "
      f"param {res['dp_param_mb']:.2f} MB (analytic {res['analytic_param_mb']:.2f}), waiting {res['dp_wait_s']:.3f} s")
print(f"  EP 2 per step: dispatch {res['ep_dispatch_mb']:.2f} MB, combine {res['ep_combine_mb']:.2f} MB (both ranks)")
json.dump(res, open("bench/results/dist.json", "w"), indent=1)
PY
