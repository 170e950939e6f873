#!/usr/bin/env bash
# bench_pp.sh — pipeline parallelism on this machine: tokens/s of `small`
# (seq 128, batch 8, 6 steps) at PP 2 (2 processes, `train --pp 2
# --micro-batches M`) against one process with 2 threads and against DP 2
# (2 processes, 1 thread each, no --pp), in the same run; the measured 1F1B
# bubble (train_log.jsonl "pp_bubble", steps after the first) against the
# analytic (S-1)/(M+S-1), the schedule model with the stages' measured
# forward and backward times ("pp_bubble_model") and with their estimated
# costs (`dsv3 plan --pp` on the run's config); the bytes sent between the
# stages per step ("pp_bytes") against one micro-batch's boundary activation
# ("pp_act_bytes") and the count 2 x B x T x H x 4 x (S-1) (each micro-batch's
# activation forward and its gradient backward, FP32).
# Writes bench/results/pp.json.  Needs mpirun (skips otherwise); a dsv3
# whose `train` has no --pp yet gets the one-process and DP rows only and a
# "pp_skipped" reason.
#   BENCH_STEPS (6)  BENCH_PP_MB (micro-batches, 4)  BENCH_BATCH (8)
set -eu
cd "$(dirname "$0")/.."
BIN=./dsv3
ST=${BENCH_STEPS:-6}
MB=${BENCH_PP_MB:-4}
BB=${BENCH_BATCH:-8}
command -v mpirun >/dev/null || { echo "bench_pp: no mpirun, skipped"; exit 0; }
. bench/lib_dist.sh
dist_env
export PYTHONDONTWRITEBYTECODE=1
mkdir -p bench/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dist_data "$tmp"
A="train --config small --data $tmp/data --seq 128 --batch $BB --steps $ST --eval-every 0 --warmup 2"
one=$("$BIN" --threads 2 $A --out "$tmp/r1" 2>&1)
dp=$(timeout 600 mpirun --oversubscribe -np 2 "$BIN" --threads 1 $A --out "$tmp/r2" 2>&1)
pp="" skip="" plan=""
if ! "$BIN" train --help 2>&1 | grep -q -- '^ *--pp '; then
  skip="this dsv3's train has no --pp"
  echo "bench_pp: PP rows skipped: $skip"
else
  pp=$(timeout 600 mpirun --oversubscribe -np 2 "$BIN" --threads 1 $A --out "$tmp/r3" --pp 2 --micro-batches "$MB" 2>&1) ||
    { echo "$pp" | tail -5; skip="train --pp 2 failed (see above)"; pp=""; }
  # the plan's schedule model for the same layout, on the run's own config (its vocabulary)
  cfg=$(ls "$tmp"/r3/latest/config.json 2>/dev/null || true)
  # (the bubble depends on the stages' cost ratio and M only, not on the micro-batch size)
  [ -n "$cfg" ] &&
    { "$BIN" plan --config "$cfg" --gpus 2 --gpus-per-node 2 --ep 1 --pp 2 --micro-batches "$MB" --seq 128 \
      --global-batch "$BB" --json "$tmp/plan.json" >/dev/null 2>&1 && plan="$tmp/plan.json"; } || true
fi
ONE="$one" DP="$dp" PP="$pp" SKIP="$skip" PLAN="$plan" RUN3="$tmp/r3" MB="$MB" BB="$BB" python3 - <<'PY'
import json, os, sys
sys.path.insert(0, "bench")
from lib_dist import tps, tokens_per_step, log_steps
e = os.environ
one, dp, pp, skip, plan = e["ONE"], e["DP"], e["PP"], e["SKIP"], e["PLAN"]
M, B, T, H, S = int(e["MB"]), int(e["BB"]), 128, 512, 2  # H: small's hidden size
res = {"bench": "pp", "config": "small", "seq": T, "batch": B, "stages": S, "micro_batches": M,
       "p1_2threads_tokens_per_s": tps(one), "p2_dp_tokens_per_s": tps(dp),
       "p1_tokens_per_step": tokens_per_step(one), "p2_dp_tokens_per_step": tokens_per_step(dp),
       "bubble_analytic": (S - 1) / (M + S - 1), "boundary_bytes_count": 2 * B * T * H * 4 * (S - 1)}
if skip:
    res["pp_skipped"] = skip
else:
    steps = log_steps(e["RUN3"])
    timed = [d for d in steps[1:] if "pp_bubble" in d] or [d for d in steps if "pp_bubble" in d]
    mean = lambda k: sum(float(d[k]) for d in timed if k in d) / max(1, sum(1 for d in timed if k in d))
    busy = [d["pp_stage_busy_s"] for d in timed if "pp_stage_busy_s" in d]
    res.update({"p2_pp_tokens_per_s": tps(pp), "p2_pp_tokens_per_step": tokens_per_step(pp),
                "pp_steps_logged": len(timed), "pp_bubble": mean("pp_bubble"),
                "pp_bubble_analytic_logged": mean("pp_bubble_analytic"), "pp_bubble_model": mean("pp_bubble_model"),
                "pp_stage_busy_s": [sum(b[s] for b in busy) / len(busy) for s in range(len(busy[0]))] if busy else [],
                "pp_bytes": mean("pp_bytes"), "pp_act_bytes": mean("pp_act_bytes")})
    if plan:
        res["plan_bubble_sim"] = json.load(open(plan))["pipeline"]["bubble_simulated"]
r = res
print(f"pipeline parallelism, small, T={T}, batch {B} (tokens/s, mean of the timed steps; same machine, same run)")
print(f"  P=1, 2 threads           {r['p1_2threads_tokens_per_s']:8.0f}")
print(f"  P=2 DP, 1 thread each    {r['p2_dp_tokens_per_s']:8.0f}  ({r['p2_dp_tokens_per_s'] / max(r['p1_2threads_tokens_per_s'], 1):.2f}x)")
if skip:
    print(f"  P=2 PP 2: skipped: {skip}")
else:
    p1 = max(r["p1_2threads_tokens_per_s"], 1)
    print(f"  {'P=2 PP 2, M=' + str(M):25s}{r['p2_pp_tokens_per_s']:8.0f}  ({r['p2_pp_tokens_per_s'] / p1:.2f}x of P=1, "
          f"{r['p2_pp_tokens_per_s'] / max(r['p2_dp_tokens_per_s'], 1):.2f}x of DP 2)")
    if len({r["p1_tokens_per_step"], r["p2_dp_tokens_per_step"], r["p2_pp_tokens_per_step"]}) > 1:
        print(f"  note: tokens per step differ: P=1 {r['p1_tokens_per_step']:.0f}, DP {r['p2_dp_tokens_per_step']:.0f}, "
              f"PP {r['p2_pp_tokens_per_step']:.0f}")
    print(f"  bubble: measured {r['pp_bubble']:.3f} (mean of {r['pp_steps_logged']} steps), analytic (S-1)/(M+S-1) "
          f"{r['bubble_analytic']:.3f}, schedule model with the measured stage times "
          f"{r['pp_bubble_model']:.3f}" + (f", with the estimated costs (dsv3 plan) {r['plan_bubble_sim']:.3f}"
                                             if "plan_bubble_sim" in r else ""))
    print(f"  stage busy s per step: {', '.join(f'{x:.3f}' for x in r['pp_stage_busy_s'])}")
    print(f"  bytes between stages per step {r['pp_bytes'] / 1e6:.2f} MB; one micro-batch's activation {r['pp_act_bytes'] / 1e6:.2f} MB "
          f"(x 2 directions x M = {2 * M * r['pp_act_bytes'] / 1e6:.2f} MB); count 2 x B x T x H x 4 = "
          f"{r['boundary_bytes_count'] / 1e6:.2f} MB")
json.dump(res, open("bench/results/pp.json", "w"), indent=1)
PY
