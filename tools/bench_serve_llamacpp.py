#!/usr/bin/env python3
"""bench_serve_llamacpp.py — llama-server's serving throughput and time to first token, as tools/bench_serve.py
measures `dsv3 serve`: at each concurrency C, C clients at once send a prompt of --seq random token ids
(the same ids as bench_serve.py: random.Random(0), below --vocab) to /v1/completions with max_tokens --new,
greedy, ignore_eos, streamed; throughput = generated tokens / wall time of the round; time to first token
is measured by each client (request sent -> first streamed token), averaged.  mean_batch is generated
tokens per llama.cpp decode call over the round (from /metrics; prompt batches count as calls).
Start the server with `tools/llamacpp_peer.sh serve GGUF PORT THREADS PARALLEL` (PARALLEL >= the largest C).
Prints one JSON line per concurrency: {"impl": "llama.cpp-server", "concurrency", "tokens", "seconds",
"tokens_per_s", "ttft_s", "mean_batch"}.

Usage: python3 tools/bench_serve_llamacpp.py --url http://127.0.0.1:PORT --conc 1 8 32 --seq 32 --new 32
"""
import argparse
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serve import metrics, prompts, run_clients  # noqa: E402  (the same prompts and rounds)


def stream(url, body):
    """-> (completion tokens, seconds to the first token)"""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    ttft, n, usage = None, 0, None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                usage = ev["usage"]
            if ev.get("choices"):
                if ttft is None:
                    ttft = time.perf_counter() - t0
                n += 1
    return (usage["completion_tokens"] if usage else n), (ttft or 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=256, help="prompt ids are drawn below this")
    a = ap.parse_args()
    if a.seq < 1 or a.new < 1 or any(c < 1 for c in a.conc):
        print("bench_serve_llamacpp: --seq, --new and --conc must be >= 1", file=sys.stderr)
        return 2
    for c in a.conc:
        ps = prompts(c, a.seq, a.vocab)
        stream(a.url, {"prompt": ps[0], "max_tokens": 2, "temperature": 0, "ignore_eos": True})  # warm-up
        m0 = metrics(a.url)
        got, ttft = [0] * c, [0.0] * c

        def one(i):
            got[i], ttft[i] = stream(a.url, {"prompt": ps[i], "max_tokens": a.new, "temperature": 0,
                                             "ignore_eos": True, "cache_prompt": False})

        dt = run_clients(c, one)
        m1 = metrics(a.url)
        calls = m1.get("llamacpp:n_decode_total", 0) - m0.get("llamacpp:n_decode_total", 0)
        print(json.dumps({"impl": "llama.cpp-server", "concurrency": c, "tokens": sum(got), "seconds": dt,
                          "tokens_per_s": sum(got) / dt, "ttft_s": sum(ttft) / c,
                          "mean_batch": sum(got) / calls if calls else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
