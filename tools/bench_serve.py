#!/usr/bin/env python3
"""bench_serve.py — serving throughput of `dsv3 serve` against transformers (bench/bench_serve.sh).

dsv3 side (--url, repeated with --label for several servers, whose rounds are interleaved --reps
times and the medians kept): C concurrent clients (threads, urllib) each send one /v1/completions
request with a prompt of --seq random token ids and max_tokens --new (greedy, ignore_eos);
throughput = generated tokens / wall time of the whole round; time to first token = the server's
own dsv3_time_to_first_token_seconds (sum / count over the round, from /metrics).
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
    """the server's /metrics as {name: value}; {} when it cannot be read"""
    out = {}
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=60).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
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


def run_clients(c, one):
    """c threads calling one(i) at once; the round's wall seconds"""
    t0 = time.perf_counter()
    th = [threading.Thread(target=one, args=(i,)) for i in range(c)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    return time.perf_counter() - t0


def quantile(d, q):
    """q-quantile of the time-to-first-token histogram deltas d (as Prometheus' histogram_quantile)"""
    pre = "dsv3_time_to_first_token_seconds_bucket{le=\""
    b = sorted((float(k[len(pre):-2]), v) for k, v in d.items() if k.startswith(pre))
    if not b or b[-1][1] <= 0:
        return float("nan")
    want, lo, clo = q * b[-1][1], 0.0, 0.0
    for le, cum in b:
        if cum >= want:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * ((want - clo) / (cum - clo) if cum > clo else 1)
        lo, clo = le, cum
    return lo


def round_dsv3(url, label, c, ps, new):
    """one round: c concurrent requests; the row of this round"""
    post(url, {"prompt": ps[0], "max_tokens": 2, "temperature": 0, "ignore_eos": True})  # warm-up
    m0 = metrics(url)
    got = [0] * c

    def one(i):
        r = post(url, {"prompt": ps[i], "max_tokens": new, "temperature": 0, "ignore_eos": True})
        got[i] = r["usage"]["completion_tokens"]

    dt = run_clients(c, one)
    m1 = metrics(url)
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1}
    n = d["dsv3_time_to_first_token_seconds_count"]
    ttft = d["dsv3_time_to_first_token_seconds_sum"] / max(n, 1)
    row = {"impl": label, "concurrency": c, "tokens": sum(got), "seconds": dt, "tokens_per_s": sum(got) / dt,
           "ttft_s": ttft, "ttft_p90_s": quantile(d, 0.9), "mean_batch": d["dsv3_decode_batch_sum"] / max(d["dsv3_decode_steps_total"], 1)}
    if c == 1 and dt > ttft:  # one stream: tokens after the first over the time after it (decode only)
        row["decode_tokens_per_s"] = (sum(got) - 1) / (dt - ttft)
    if d.get("dsv3_prefill_steps_total"):
        row["prefill_mean_batch"] = d["dsv3_prefill_batch_sum"] / d["dsv3_prefill_steps_total"]
    if d.get("dsv3_spec_drafts_total"):
        row["spec_acceptance"] = d["dsv3_spec_accepted_total"] / d["dsv3_spec_drafts_total"]
    return row


def bench_dsv3(a):
    """each concurrency: --reps rounds against every server in turn (interleaved, so the
    machine's load drifts alike for all); the round with the median tokens/s of each"""
    labels = a.label or ["dsv3-serve"] * len(a.url)
    for c in a.conc:
        ps = prompts(c, a.seq, a.vocab)
        runs = {lb: [] for lb in labels}
        for _ in range(a.reps):
            for url, lb in zip(a.url, labels):
                runs[lb].append(round_dsv3(url, lb, c, ps, a.new))
        for lb in labels:
            rs = sorted(runs[lb], key=lambda r: r["tokens_per_s"])
            row = dict(rs[len(rs) // 2])
            for k in ("ttft_s", "ttft_p90_s"):  # medians of their own
                row[k] = sorted(r[k] for r in rs)[len(rs) // 2]
            row["rounds"] = len(rs)
            print(json.dumps(row), flush=True)


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
    ap.add_argument("--url", action="append", help="a dsv3 serve (repeat for several, measured interleaved)")
    ap.add_argument("--config")
    ap.add_argument("--conc", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=256, help="prompt ids are drawn below this")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", action="append", help="the impl name of each --url's rows")
    ap.add_argument("--reps", type=int, default=1, help="rounds per server and concurrency (the median is kept)")
    a = ap.parse_args()
    if bool(a.url) == bool(a.config):
        ap.error("give one of --url or --config")
    bench_dsv3(a) if a.url else bench_torch(a)


if __name__ == "__main__":
    main()
