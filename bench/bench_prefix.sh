#!/usr/bin/env bash
# bench_prefix.sh — the prefix cache of `dsv3 serve` (docs/serve.md): the time to first token of a
# conversation's later turns and of a burst of prompts sharing a system prompt, on the `small` preset
# (random init, FP32, CPU), with the cache and with --no-prefix-cache, and against llama.cpp's
# llama-server (cache_prompt) on the same model converted to GGUF, in one run (tools/bench_prefix.py).
# Writes bench/results/prefix.json.
#   BENCH_THREADS (2)  BENCH_REPS (3)  BENCH_LLAMACPP (1; 0 skips the peer)
set -eu
cd "$(dirname "$0")/.."
TH=${BENCH_THREADS:-2}
REPS=${BENCH_REPS:-3}
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=10000 # as bench_serve.sh
BIN=./dsv3
[ -x "$BIN" ] || { echo "bench_prefix: build ./dsv3 first (make)"; exit 1; }
if "$BIN" serve --model /nonexistent 2>&1 | grep -q "without libmicrohttpd"; then echo "bench_prefix: this dsv3 has no server (libmicrohttpd)"; exit 0; fi
mkdir -p bench/results
tmp=$(mktemp -d)
. bench/lib_serve.sh
serve_model
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$tmp"' EXIT
serve_start a --max-batch 8 --ctx 2048
serve_start b --max-batch 8 --ctx 2048 --no-prefix-cache
args=(--url "http://127.0.0.1:$(cat "$tmp/a.port")" --kind dsv3 --label dsv3
      --url "http://127.0.0.1:$(cat "$tmp/b.port")" --kind dsv3 --label dsv3-no-prefix-cache)
if [ "${BENCH_LLAMACPP:-1}" != 0 ] && tools/llamacpp_peer.sh find >/dev/null 2>&1 &&
   tools/llamacpp_peer.sh convert "$tmp/small" "$tmp/small.gguf" >/dev/null 2>&1; then
  lport=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  # 8 slots of 2048 positions, as dsv3's
  if lpid=$(tools/llamacpp_peer.sh serve "$tmp/small.gguf" "$lport" "$TH" 8 16384); then
    pids="$pids $lpid"
    args+=(--url "http://127.0.0.1:$lport" --kind llama --label llama-server)
  fi
else
  echo "bench_prefix: llama.cpp peer skipped (tools/llamacpp_peer.sh build makes it)"
fi
python3 tools/bench_prefix.py "${args[@]}" --reps "$REPS" > "$tmp/rows.jsonl"
R="$tmp/rows.jsonl" TH="$TH" python3 - <<'PY'
import json, os, platform
rows = [json.loads(l) for l in open(os.environ["R"]) if l.strip()]
by = {(r["impl"], r["workload"]): r for r in rows}
print("prefix cache, preset small, FP32, %s threads: time to first token (s), client-side, median of the rounds" % os.environ["TH"])
print("  turns: a 6-turn conversation from a 1000-token prompt (50 user + 32 answer tokens a turn), turns 2-6")
print("  shared: 8 prompts at once, a common 1000-token prefix + 32 tokens each, after the prefix alone")
print("  burst: the same 8 prompts at once, nothing cached before")
for w in ("turns", "shared", "burst"):
    base = by.get(("dsv3", w))
    for impl in ("dsv3", "dsv3-no-prefix-cache", "llama-server"):
        r = by.get((impl, w))
        if not r:
            continue
        extra = f", {r['tokens_per_s']:.1f} tokens/s" if "tokens_per_s" in r else f", conversation {r['seconds']:.2f} s"
        ratio = f"  (dsv3 {r['ttft_s'] / base['ttft_s']:.2f}x faster to first token)" if base and impl != "dsv3" else ""
        print(f"  {w:>6} {impl:>22}: ttft {r['ttft_s']:.3f}{extra}; cached {r['cached_tokens']}{ratio}")
json.dump({"bench": "prefix", "machine": platform.processor() or platform.machine(), "threads": int(os.environ["TH"]),
           "rows": rows}, open("bench/results/prefix.json", "w"), indent=1)
PY
