#!/usr/bin/env bash
# bench_serve.sh — serving throughput (generated tokens/s) and time to first
# token of `dsv3 serve` at concurrency 1, 8 and 32 on the `small` preset
# (random init, FP32, CPU), against transformers generating the same requests
# as one batch (tools/bench_serve.py).  The model folder gets a small byte-level
# tokenizer (prompts are token ids below 256).  Writes bench/results/serve.json.
#   BENCH_CONC ("1 8 32")  BENCH_PROMPT (32)  BENCH_NEW (32)  BENCH_THREADS (2)
# llama.cpp's llama-server is not compared (no GGUF conversion of this architecture here).
set -eu
cd "$(dirname "$0")/.."
CONC=${BENCH_CONC:-"1 8 32"}
P=${BENCH_PROMPT:-32}
NEW=${BENCH_NEW:-32}
TH=${BENCH_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
BIN=./dsv3
[ -x "$BIN" ] || { echo "bench_serve: build ./dsv3 first (make)"; exit 1; }
if "$BIN" serve --model /nonexistent 2>&1 | grep -q "without libmicrohttpd"; then echo "bench_serve: this dsv3 has no server (libmicrohttpd)"; exit 0; fi
mkdir -p bench/results
tmp=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
"$BIN" init --config small --out "$tmp/small" --seed 1 >/dev/null 2>&1
printf 'the quick brown fox jumps over the lazy dog\n%.0s' $(seq 20) > "$tmp/c.txt"
"$BIN" --quiet tokenizer train --input "$tmp/c.txt" --vocab-size 300 --no-special-tokens --out "$tmp/tok/tokenizer.json" >/dev/null 2>&1
maxb=$(echo $CONC | tr ' ' '\n' | sort -n | tail -1)
"$BIN" --threads "$TH" serve --model "$tmp/small" --tokenizer "$tmp/tok" --port 0 --max-batch "$maxb" --ctx 256 \
  2> "$tmp/log" & pid=$!
for _ in $(seq 100); do grep -q listening "$tmp/log" && break; sleep 0.1; done
port=$(grep -o '127.0.0.1:[0-9]*' "$tmp/log" | cut -d: -f2)
[ -n "$port" ] || { cat "$tmp/log"; exit 1; }
python3 tools/bench_serve.py --url "http://127.0.0.1:$port" --conc $CONC --seq "$P" --new "$NEW" > "$tmp/dsv3.jsonl"
kill $pid; wait $pid 2>/dev/null || true; pid=""
# a single stream against `dsv3 generate` on the same model (decode tokens/s, prefill excluded)
prompt=$(python3 -c "import random; random.seed(0); print(' '.join(str(random.randrange(256)) for _ in range($P)))")
"$BIN" --threads "$TH" generate --model "$tmp/small" --ids --prompt "$prompt" --max-new-tokens "$NEW" --ignore-eos --json \
  2>/dev/null | tail -1 > "$tmp/gen.json" || : > "$tmp/gen.json"
: > "$tmp/tf.jsonl"
if python3 -c "import torch, transformers" 2>/dev/null; then
  python3 tools/bench_serve.py --config "$tmp/small/config.json" --conc $CONC --seq "$P" --new "$NEW" --threads "$TH" \
    > "$tmp/tf.jsonl" 2>/dev/null || : > "$tmp/tf.jsonl"
fi
D="$tmp/dsv3.jsonl" T="$tmp/tf.jsonl" G="$tmp/gen.json" python3 - <<'PY'
import json, os
d = [json.loads(l) for l in open(os.environ["D"]) if l.strip()]
t = {r["concurrency"]: r for r in (json.loads(l) for l in open(os.environ["T"]) if l.strip())}
rows = []
print("serving, preset small, FP32: generated tokens/s and time to first token")
print(f"  {'conc':>4} {'dsv3':>9} {'batch':>6} {'ttft':>8} {'transformers':>13} {'ttft':>8} {'dsv3/tf':>8}")
for r in d:
    c = r["concurrency"]
    tf = t.get(c)
    row = {"concurrency": c, "dsv3": r}
    if tf:
        row["transformers"] = tf
        row["ratio_tokens_per_s"] = r["tokens_per_s"] / tf["tokens_per_s"]
    rows.append(row)
    print(f"  {c:>4} {r['tokens_per_s']:>9.1f} {r['mean_batch']:>6.1f} {r['ttft_s']:>8.3f} "
          f"{(tf['tokens_per_s'] if tf else float('nan')):>13.1f} {(tf['ttft_s'] if tf else float('nan')):>8.3f} "
          f"{(str(round(row['ratio_tokens_per_s'], 2)) + 'x') if tf else 'n/a':>8}")
g = open(os.environ["G"]).read().strip()
g = json.loads(g) if g else None
if g:
    print(f"  dsv3 generate (one stream, decode only): {g['tokens_per_s']:.1f} tokens/s; serve at concurrency 1 "
          f"(prefill + HTTP included): {d[0]['tokens_per_s']:.1f}")
json.dump({"bench": "serve", "config": "small", "rows": rows, "generate": g}, open("bench/results/serve.json", "w"), indent=1)
PY
