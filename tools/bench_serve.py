#!/usr/bin/env python3
"""bench_serve.py — serving throughput of `dsv3 serve` against transformers (bench/bench_serve.sh).

dsv3 side (--url): C concurrent clients (threads, urllib) each send one /v1/completions request with a
prompt of --seq random token ids and max_tokens --new (greedy, ignore_eos); throughput = generated
tokens / wall time of the whole round; time to first token = the server's own
dsv3_time_to_first_token_seconds (sum / count over the round, from /metrics).
transformers side (--config): the same C prompts as one padded batch to model.generate (greedy, KV
cache, eager, random weights of the same config); throughput = C·new / time; time to first token =
the time of generate with max_new_tokens=1 (the batched prefill).
Prints one JSON line per concurrency.

  python3 tools/bench_serve.py --url http://127.0.0.1:PORT --conc 1 8 32 --seq 32 --new 32
  python3 tools/bench_serve.py --config CONFIG.json --conc 1 8 32 --seq 32 --new 32 --threads 2
"""
import argparse
import json
import random
import threading
import time
import urllib.request


def metrics(url):
    out = {}
    for line in urllib.request.urlopen(url + "/metrics", timeout=60).read().decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def post(url, body):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())


def prompts(c, seq, vocab, seed=0):
    rnd = random.Random(seed)
    return [[rnd.randrange(vocab) for _ in range(seq)] for _ in range(c)]


def bench_dsv3(a):
    for c in a.conc:
        ps = prompts(c, a.seq, a.vocab)
        post(a.url, {"prompt": ps[0], "max_tokens": 2, "temperature": 0, "ignore_eos": True})  # warm-up
        m0 = metrics(a.url)
        got = [0] * c

        def one(i):
            r = post(a.url, {"prompt": ps[i], "max_tokens": a.new, "temperature": 0, "ignore_eos": True})
            got[i] = r["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        th = [threading.Thread(target=one, args=(i,)) for i in range(c)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        dt = time.perf_counter() - t0
        m1 = metrics(a.url)
        n = m1["dsv3_time_to_first_token_seconds_count"] - m0["dsv3_time_to_first_token_seconds_count"]
        ttft = (m1["dsv3_time_to_first_token_seconds_sum"] - m0["dsv3_time_to_first_token_seconds_sum"]) / max(n, 1)
        steps = m1["dsv3_decode_steps_total"] - m0["dsv3_decode_steps_total"]
        bsum = m1["dsv3_decode_batch_sum"] - m0["dsv3_decode_batch_sum"]
        print(json.dumps({"impl": "dsv3-serve", "concurrency": c, "tokens": sum(got), "seconds": dt,
                          "tokens_per_s": sum(got) / dt, "ttft_s": ttft, "mean_batch": bsum / max(steps, 1)}), flush=True)


def bench_torch(a):
    import os
    import sys

    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_common import build_model
    torch.set_num_threads(a.threads)
    model, cfg = build_model(a.config, 0)
    model.eval()
    for c in a.conc:
        ids = torch.tensor(prompts(c, a.seq, min(a.vocab, cfg.vocab_size)))
        mask = torch.ones_like(ids)
        kw = dict(attention_mask=mask, do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
        with torch.no_grad():
            model.generate(ids[:1], max_new_tokens=2, min_new_tokens=2, **dict(kw, attention_mask=mask[:1]))  # warm-up
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
            ttft = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=a.new, min_new_tokens=a.new, **kw)
            dt = time.perf_counter() - t0
        n = (out.shape[1] - ids.shape[1]) * c
        print(json.dumps({"impl": "transformers", "concurrency": c, "tokens": n, "seconds": dt, "tokens_per_s": n / dt,
                          "ttft_s": ttft}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--config")
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=256, help="prompt ids are drawn below this")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if bool(a.url) == bool(a.config):
        ap.error("give one of --url or --config")
    bench_dsv3(a) if a.url else bench_torch(a)


if __name__ == "__main__":
    main()
