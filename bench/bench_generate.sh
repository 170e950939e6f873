#!/usr/bin/env bash
# bench_generate.sh — batch-1 decode speed of the `small` preset (random init,
# FP32, CPU): dsv3 plain greedy and MTP-speculative (`dsv3 generate --ids`)
# at 1 and 2 threads, and transformers' model.generate (greedy, KV cache,
# eager, same config and threads) with the ratio, and llama.cpp (llama-bench on
# the same folder converted to F32 GGUF: prefill of the prompt, decode after it)
# when tools/llamacpp_peer.sh finds it or builds it within BENCH_LLAMACPP_BUILD_S
# (900; BENCH_LLAMACPP=0 leaves it out).  Decode tokens/s counts the
# tokens after the first (which comes from the prefill).  A random model's MTP
# module rarely guesses right, so its acceptance rate (printed) is near 0 and
# speculative decoding is slower here; it pays off on a trained model.
# Then decode of BENCH_BATCH (32) sequences at once on all cores: dsv3 bench-decode
# (serve's batching engine) against transformers' generate with that batch.
# Writes bench/results/generate.json.
#   BENCH_PROMPT (32)  BENCH_NEW (32)  BENCH_THREADS ("1 <all cores>")  BENCH_BATCH (32; 0: none)
#   BENCH_GEN_REPS (3: dsv3's runs per thread count, medians kept)
# Both sides wait the way dsv3 picks on an idle machine (src/cli/main.c): an
# idle OpenMP worker spins a bounded while (GOMP_SPINCOUNT=10000, ~0.1 ms)
# before it sleeps, unless the caller set OMP_WAIT_POLICY or GOMP_SPINCOUNT.
# A decode step is ~150 short parallel regions; sleeping at once made 2
# threads slower than 1.  On a busy machine dsv3 itself sleeps at once, since a
# spinning worker then waits on a descheduled peer; run the benches idle.
set -eu
cd "$(dirname "$0")/.."
P=${BENCH_PROMPT:-32}
NEW=${BENCH_NEW:-32}
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=10000
NP=$(nproc)
THREADS=${BENCH_THREADS:-"1$([ "$NP" -gt 1 ] && echo " $NP")"}
BIN=./dsv3
[ -x "$BIN" ] || { echo "bench_generate: build ./dsv3 first (make)"; exit 1; }
mkdir -p bench/results
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" init --config small --out "$tmp/small" --seed 1 >/dev/null 2>&1
prompt=$(python3 -c "import random; random.seed(0); print(' '.join(str(random.randrange(32000)) for _ in range($P)))")
have_torch=0
python3 -c "import torch, transformers" 2>/dev/null && have_torch=1
gguf=""
if [ "${BENCH_LLAMACPP:-1}" != 0 ] && tools/llamacpp_peer.sh build "${BENCH_LLAMACPP_BUILD_S:-900}" >/dev/null &&
   tools/llamacpp_peer.sh convert "$tmp/small" "$tmp/small.gguf"; then
  gguf="$tmp/small.gguf"
fi
# dsv3 generate BENCH_GEN_REPS (3) times: the median prefill time and decode
# tokens/s, as llama-bench reports over its 3 repetitions (a single prefill of
# 32 tokens, ~20 ms of reading the weights from memory, moved 1.2x between runs)
gen() { # threads, extra generate options...: one JSON line
  local th=$1 runs="" i
  shift
  for i in $(seq "${BENCH_GEN_REPS:-3}"); do
    runs="$runs$("$BIN" --threads "$th" generate --model "$tmp/small" --ids --prompt "$prompt" --max-new-tokens "$NEW" \
      --ignore-eos --json "$@" 2>/dev/null | tail -1)"$'\n'
  done
  RUNS="$runs" python3 -c 'import json, os, statistics as st
r = [json.loads(l) for l in os.environ["RUNS"].split("\n") if l.strip()]
m = dict(r[0])
m["prefill_s"] = st.median(x["prefill_s"] for x in r)
m["tokens_per_s"] = st.median(x["tokens_per_s"] for x in r)
m["reps"] = len(r)
print(json.dumps(m))'
}
lines=""
for th in $THREADS; do
  a=$(gen "$th")
  b=$(gen "$th" --speculative mtp)
  c=""
  if [ "$have_torch" = 1 ]; then
    c=$(python3 tools/bench_generate_torch.py --config "$tmp/small/config.json" --seq "$P" --new "$NEW" --threads "$th" 2>/dev/null | tail -1) || c=""
  fi
  d=""
  if [ -n "$gguf" ]; then
    d=$(tools/llamacpp_peer.sh bench "$gguf" "$th" "$P" "$NEW") || d=""
  fi
  lines="$lines$th|$a|$b|$c|$d"$'\n'
done
BB=${BENCH_BATCH:-32}
batched=""
batched_peer=""
if [ "$BB" -gt 0 ]; then
  batched=$("$BIN" --threads "$NP" bench-decode --config small --batch "$BB" --prompt "$P" --new "$NEW" 2>/dev/null | tail -1) || batched=""
  if [ "$have_torch" = 1 ]; then
    batched_peer=$(python3 tools/bench_generate_torch.py --config "$tmp/small/config.json" --seq "$P" --new "$NEW" \
                     --threads "$NP" --batch "$BB" 2>/dev/null | tail -1) || batched_peer=""
  fi
fi
LINES="$lines" BATCHED="$batched" BATCHED_PEER="$batched_peer" python3 - <<'PY'
import json, os
rows = []
print("decode (batch 1, greedy), preset small, FP32")
print(f"  {'threads':>7} {'dsv3':>10} {'dsv3 mtp':>10} {'accept':>8} {'transformers':>13} {'dsv3/tf':>8}")
for line in os.environ["LINES"].strip().split("\n"):
    th, a, b, c, d = line.split("|")
    a, b = json.loads(a), json.loads(b)
    c = json.loads(c) if c else None
    d = json.loads(d) if d else None
    acc = b["accepted"] / b["drafted"] if b["drafted"] else 0.0
    r = {"threads": int(th), "dsv3": a, "dsv3_mtp": b, "mtp_acceptance": acc}
    ratio = ""
    if c:
        r["transformers"] = c
        r["ratio_tokens_per_s"] = a["tokens_per_s"] / c["tokens_per_s"]
        ratio = f"{r['ratio_tokens_per_s']:.1f}x"
    if d:
        r["llamacpp"] = d
        r["ratio_llamacpp_tokens_per_s"] = a["tokens_per_s"] / d["tokens_per_s"]
        r["ratio_llamacpp_prefill"] = a["prompt_tokens"] / a["prefill_s"] / d["prefill_tokens_per_s"]
    rows.append(r)
    tf = f"{c['tokens_per_s']:.1f}" if c else "n/a"
    print(f"  {th:>7} {a['tokens_per_s']:>10.1f} {b['tokens_per_s']:>10.1f} {acc:>8.2f} {tf:>13} {ratio:>8}")
if any("llamacpp" in r for r in rows):
    build = next(r["llamacpp"]["build"] for r in rows if "llamacpp" in r)
    print(f"dsv3 vs llama.cpp ({build}, F32 GGUF of the same folder), tokens/s in the same run")
    print(f"  {'threads':>7} {'decode':>10} {'llama.cpp':>10} {'dsv3/l.c':>8} {'prefill':>10} {'llama.cpp':>10} {'dsv3/l.c':>8}")
    for r in rows:
        d = r.get("llamacpp")
        if d:
            a = r["dsv3"]
            print(f"  {r['threads']:>7} {a['tokens_per_s']:>10.1f} {d['tokens_per_s']:>10.1f} "
                  f"{r['ratio_llamacpp_tokens_per_s']:>7.2f}x {a['prompt_tokens'] / a['prefill_s']:>10.1f} "
                  f"{d['prefill_tokens_per_s']:>10.1f} {r['ratio_llamacpp_prefill']:>7.2f}x")
res = {"bench": "generate", "config": "small", "rows": rows}
bt = json.loads(os.environ["BATCHED"]) if os.environ.get("BATCHED") else None
bp = json.loads(os.environ["BATCHED_PEER"]) if os.environ.get("BATCHED_PEER") else None
if bt:
    res["batched"] = {"dsv3": bt}
    line = f"decode of {bt['batch']} sequences at once, {bt['threads']} threads: dsv3 {bt['tokens_per_s']:.1f} tokens/s"
    if bp:
        res["batched"]["transformers"] = bp
        res["batched"]["ratio_tokens_per_s"] = bt["tokens_per_s"] / bp["tokens_per_s"]
        line += f", transformers {bp['tokens_per_s']:.1f} ({res['batched']['ratio_tokens_per_s']:.2f}x)"
    print(line)
json.dump(res, open("bench/results/generate.json", "w"), indent=1)
PY
