#!/usr/bin/env bash
# bench_serve.sh — serving throughput (generated tokens/s) and time to first
# token of `dsv3 serve` at concurrency 1, 8 and 32 on the `small` preset
# (random init, FP32, CPU), against transformers generating the same requests
# as one batch (tools/bench_serve.py).  The model folder gets a small byte-level
# tokenizer (prompts are token ids below 256).  In the same run, dsv3 serve also
# with --prefill-batch 1 (prompts prefilled one at a time: the time to first token
# batched prefill saves) and with --speculative mtp (the small preset's MTP module
# is untrained, so nearly every draft is rejected: its cost, not its gain).
# Writes bench/results/serve.json.
#   BENCH_CONC ("1 8 32")  BENCH_PROMPT (32)  BENCH_NEW (32)  BENCH_THREADS (2)  BENCH_REPS (5)
# and against llama.cpp's llama-server on the same model converted to GGUF (tools/llamacpp_peer.sh finds
# or builds it within BENCH_LLAMACPP_BUILD_S, default 900 s; BENCH_LLAMACPP=0 skips it).
set -eu
cd "$(dirname "$0")/.."
CONC=${BENCH_CONC:-"1 8 32"}
P=${BENCH_PROMPT:-32}
NEW=${BENCH_NEW:-32}
REPS=${BENCH_REPS:-5}
TH=${BENCH_THREADS:-2}
# both sides: the bounded spin dsv3 picks on an idle machine (bench_generate.sh);
# with the load-generating client on the same 2 cores it measured as fast as
# sleeping at once (dsv3 at concurrency 1/8/32: 270/685/1379 against
# 263/673/1359 tokens/s)
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=10000
BIN=./dsv3
[ -x "$BIN" ] || { echo "bench_serve: build ./dsv3 first (make)"; exit 1; }
if "$BIN" serve --model /nonexistent 2>&1 | grep -q "without libmicrohttpd"; then echo "bench_serve: this dsv3 has no server (libmicrohttpd)"; exit 0; fi
mkdir -p bench/results
tmp=$(mktemp -d)
. bench/lib_serve.sh
serve_model
maxb=$(echo $CONC | tr ' ' '\n' | sort -n | tail -1)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$tmp"' EXIT
# three servers up at once, measured in turn (interleaved rounds, medians): the machine's load drifts alike for all
serve_start a --max-batch "$maxb" --ctx 256 --no-prefix-cache
serve_start b --max-batch "$maxb" --ctx 256 --no-prefix-cache --prefill-batch 1
serve_start c --max-batch "$maxb" --ctx 256 --no-prefix-cache --speculative mtp
u() { echo "http://127.0.0.1:$(cat "$tmp/$1.port")"; }
python3 tools/bench_serve.py --conc $CONC --seq "$P" --new "$NEW" --reps "$REPS" \
  --url "$(u a)" --label dsv3-serve --url "$(u b)" --label dsv3-serve-prefill1 --url "$(u c)" --label dsv3-serve-mtp \
  > "$tmp/dsv3.jsonl"
for p in $pids; do kill $p 2>/dev/null; wait $p 2>/dev/null || true; done; pids=""
# a single stream against `dsv3 generate` on the same model (decode tokens/s, prefill excluded)
prompt=$(python3 -c "import random; random.seed(0); print(' '.join(str(random.randrange(256)) for _ in range($P)))")
"$BIN" --threads "$TH" generate --model "$tmp/small" --ids --prompt "$prompt" --max-new-tokens "$NEW" --ignore-eos --json \
  2>/dev/null | tail -1 > "$tmp/gen.json" || : > "$tmp/gen.json"
: > "$tmp/tf.jsonl"
if python3 -c "import torch, transformers" 2>/dev/null; then
  python3 tools/bench_serve.py --config "$tmp/small/config.json" --conc $CONC --seq "$P" --new "$NEW" --threads "$TH" \
    > "$tmp/tf.jsonl" 2>/dev/null || : > "$tmp/tf.jsonl"
fi
: > "$tmp/ll.jsonl"
if [ "${BENCH_LLAMACPP:-1}" != 0 ]; then
  if tools/llamacpp_peer.sh build "${BENCH_LLAMACPP_BUILD_S:-900}" >/dev/null &&
     tools/llamacpp_peer.sh convert "$tmp/small" "$tmp/small.gguf" >/dev/null 2>&1; then
    lport=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    if lpid=$(tools/llamacpp_peer.sh serve "$tmp/small.gguf" "$lport" "$TH" "$maxb"); then
      pids="$pids $lpid"
      python3 tools/bench_serve_llamacpp.py --url "http://127.0.0.1:$lport" --conc $CONC --seq "$P" --new "$NEW" \
        > "$tmp/ll.jsonl" 2>/dev/null || : > "$tmp/ll.jsonl"
      kill "$lpid" 2>/dev/null || :
    fi
  else
    echo "bench_serve: llama.cpp peer skipped (not built or the conversion failed)"
  fi
fi
D="$tmp/dsv3.jsonl" T="$tmp/tf.jsonl" G="$tmp/gen.json" LL="$tmp/ll.jsonl" python3 - <<'PY'
import json, os
all_d = [json.loads(l) for l in open(os.environ["D"]) if l.strip()]
by = {(r["impl"], r["concurrency"]): r for r in all_d}
d = [r for r in all_d if r["impl"] == "dsv3-serve"]
t = {r["concurrency"]: r for r in (json.loads(l) for l in open(os.environ["T"]) if l.strip())}
ll = {r["concurrency"]: r for r in (json.loads(l) for l in open(os.environ["LL"]) if l.strip())}
nan = float("nan")
rows = []
print("serving, preset small, FP32: generated tokens/s and time to first token (s); same run, same machine")
print("  ttft: mean (p90) over the round; '1-by-1': --prefill-batch 1; mtp: --speculative mtp tokens/s (acceptance)")
print(f"  {'conc':>4} {'dsv3':>8} {'batch':>6} {'ttft':>15} {'ttft 1-by-1':>15} {'mtp':>8} {'accept':>7}"
      f" {'transformers':>13} {'ttft':>7} {'dsv3/tf':>8}")
for r in d:
    c = r["concurrency"]
    tf, p1, mtp = t.get(c), by.get(("dsv3-serve-prefill1", c)), by.get(("dsv3-serve-mtp", c))
    row = {"concurrency": c, "dsv3": r}
    if p1:
        row["dsv3_prefill_one_by_one"] = p1
    if mtp:
        row["dsv3_speculative_mtp"] = mtp
    if tf:
        row["transformers"] = tf
        row["ratio_tokens_per_s"] = r["tokens_per_s"] / tf["tokens_per_s"]
    if ll.get(c):
        row["llama_cpp"] = ll[c]
        row["ratio_tokens_per_s_llama_cpp"] = r["tokens_per_s"] / ll[c]["tokens_per_s"]
    rows.append(row)
    tt = lambda x: f"{x['ttft_s']:.3f} ({x.get('ttft_p90_s', nan):.3f})" if x else "n/a"
    print(f"  {c:>4} {r['tokens_per_s']:>8.1f} {r['mean_batch']:>6.1f} {tt(r):>15} "
          f"{tt(p1):>15} {(mtp['tokens_per_s'] if mtp else nan):>8.1f} "
          f"{(mtp.get('spec_acceptance', 0) if mtp else nan):>7.2f} "
          f"{(tf['tokens_per_s'] if tf else nan):>13.1f} {(tf['ttft_s'] if tf else nan):>7.3f} "
          f"{(str(round(row['ratio_tokens_per_s'], 2)) + 'x') if tf else 'n/a':>8}")
for row in rows:
    if "llama_cpp" in row:
        x = row["llama_cpp"]
        print(f"  conc {row['concurrency']:>3}: llama-server {x['tokens_per_s']:.1f} tokens/s, ttft {x['ttft_s']:.3f} s; "
              f"dsv3/llama.cpp {row['ratio_tokens_per_s_llama_cpp']:.2f}x")
g = open(os.environ["G"]).read().strip()
g = json.loads(g) if g else None
if g and d:
    print(f"  one stream: dsv3 generate decodes {g['tokens_per_s']:.1f} tokens/s; serve at concurrency 1 decodes "
          f"{d[0].get('decode_tokens_per_s', nan):.1f} tokens/s after its first token ({d[0]['tokens_per_s']:.1f} with "
          f"prefill + HTTP)")
json.dump({"bench": "serve", "config": "small", "rows": rows, "generate": g}, open("bench/results/serve.json", "w"), indent=1)
PY
