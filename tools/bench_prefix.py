#!/usr/bin/env python3
"""bench_prefix.py — what a prefix cache saves a server: the time to first token of prompts that repeat a
prefix the server has seen, measured by the client (request sent -> first streamed token), greedy, EOS
ignored, prompts of random token ids below --vocab.  Two workloads:

  turns   one conversation of --turns turns: the first prompt has --first tokens; each next prompt is
          the previous prompt, the server's own answer (--new tokens, its ids) and --user new tokens,
          as a chat client sends the history back.  Reported: the mean over turns 2.. (turn 1 has
          nothing to reuse) and the whole conversation's wall time.
  shared  --conc clients at once, each prompt a common --shared-token prefix (a system prompt) and
          --tail tokens of its own, after one request of the prefix alone (as a first user would).
          Reported: mean time to first token and generated tokens/s of the burst.
  burst   the same without the prefix alone first: all --conc prompts arrive at once into an empty cache.

Each server (--url with --kind dsv3 or llama, a --label each) runs every workload --reps times in turn
(interleaved rounds, medians), each round with new random ids.  dsv3: /v1/completions with
return_token_ids; llama: llama-server's /completion with cache_prompt and return_tokens.
Prints one JSON line per (label, workload).

Usage: python3 tools/bench_prefix.py --url http://127.0.0.1:P --kind dsv3 --label dsv3 [--url ... --kind ... --label ...]
"""
import argparse
import json
import random
import statistics
import threading
import time
import urllib.request


def stream(url, kind, prompt, new):
    """-> (generated ids, seconds to the first token, cached prompt tokens the server reports or None)"""
    if kind == "dsv3":
        path, body = "/v1/completions", {"prompt": prompt, "max_tokens": new, "temperature": 0, "ignore_eos": True,
                                         "stream": True, "return_token_ids": True,
                                         "stream_options": {"include_usage": True}}
    else:
        path, body = "/completion", {"prompt": prompt, "n_predict": new, "temperature": 0, "ignore_eos": True,
                                     "stream": True, "return_tokens": True, "cache_prompt": True}
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    ttft, ids, cached = None, [], None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if kind == "dsv3":
                if ev.get("usage"):
                    cached = ev["usage"].get("prompt_tokens_details", {}).get("cached_tokens")
                got = [t for c in ev.get("choices", []) for t in c.get("token_ids", [])]
            else:
                got = ev.get("tokens", [])
                if ev.get("timings"):
                    cached = ev["timings"].get("cache_n")
            if got and ttft is None:
                ttft = time.perf_counter() - t0
            ids += got
    return ids, ttft or 0.0, cached


def turns(url, kind, a, rnd):
    p = [rnd.randrange(a.vocab) for _ in range(a.first)]
    ttft, cached = [], []
    t0 = time.perf_counter()
    for t in range(a.turns):
        ids, tt, c = stream(url, kind, p, a.new)
        if t:
            ttft.append(tt)
            cached.append(c)
        p = p + ids + [rnd.randrange(a.vocab) for _ in range(a.user)]
    return {"ttft_s": statistics.mean(ttft), "seconds": time.perf_counter() - t0, "cached_tokens": cached,
            "last_prompt_tokens": len(p)}


def shared(url, kind, a, rnd, warm=True):
    pre = [rnd.randrange(a.vocab) for _ in range(a.shared)]
    if warm:
        stream(url, kind, pre, 1)
    ps = [pre + [rnd.randrange(a.vocab) for _ in range(a.tail)] for _ in range(a.conc)]
    out = [None] * a.conc

    def one(i):
        out[i] = stream(url, kind, ps[i], a.new)

    th = [threading.Thread(target=one, args=(i,)) for i in range(a.conc)]
    t0 = time.perf_counter()
    for x in th:
        x.start()
    for x in th:
        x.join()
    dt = time.perf_counter() - t0
    n = sum(len(o[0]) for o in out)
    return {"ttft_s": statistics.mean(o[1] for o in out), "seconds": dt, "tokens_per_s": n / dt,
            "cached_tokens": [o[2] for o in out]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("--kind", action="append", required=True, choices=["dsv3", "llama"])
    ap.add_argument("--label", action="append", required=True)
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--first", type=int, default=1000)
    ap.add_argument("--user", type=int, default=50)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--shared", type=int, default=1000)
    ap.add_argument("--tail", type=int, default=32)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=256, help="prompt ids are drawn below this")
    a = ap.parse_args()
    if not (len(a.url) == len(a.kind) == len(a.label)):
        ap.error("one --kind and one --label per --url")
    burst = lambda url, kind, a, rnd: shared(url, kind, a, rnd, warm=False)  # noqa: E731
    for w, (name, fn) in enumerate((("turns", turns), ("shared", shared), ("burst", burst))):
        runs = {lb: [] for lb in a.label}
        for rep in range(a.reps):
            for url, kind, lb in zip(a.url, a.kind, a.label):
                runs[lb].append(fn(url, kind, a, random.Random(1000 * rep + w)))
        for lb, rs in runs.items():
            rs.sort(key=lambda r: r["ttft_s"])
            row = dict(rs[len(rs) // 2], impl=lb, workload=name, reps=a.reps)
            row["ttft_all_s"] = [r["ttft_s"] for r in rs]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
