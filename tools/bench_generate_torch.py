#!/usr/bin/env python3
"""bench_generate_torch.py — PyTorch/transformers peer for dsv3's decode benchmark (bench/bench_generate.sh).

Builds DeepseekV3ForCausalLM from a config with random weights (FP32, eager attention, eval), then times
model.generate (greedy, KV cache, no EOS stop) of --new tokens after a random prompt of --seq tokens and of
1 token (the prefill alone); decode tokens/s = (new - 1) / (t_new - t_1). Prints one JSON line:
{"impl":"transformers","tokens_per_s":..,"seconds_per_iter":..,"threads":N,"batch":1,"seq":T,"new_tokens":N}

Usage: python3 tools/bench_generate_torch.py --config CONFIG.json --seq T --new N --threads N [--iters K] [--batch B]
BENCH_DEVICE=cuda runs it on the GPU; --batch B decodes B sequences at once (tokens/s counts all B).
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import build_model, device, sync  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    if a.seq < 1 or a.new < 2 or a.threads < 1 or a.iters < 1 or a.batch < 1:
        ap.error("--seq, --threads, --iters, --batch must be >= 1 and --new >= 2")
    torch.set_num_threads(a.threads)
    model, cfg = build_model(a.config, a.seed)
    model.eval()
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), generator=g).to(device())
    mask = torch.ones_like(ids)

    def gen(n):
        with torch.no_grad():
            sync()
            t0 = time.perf_counter()
            model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           use_cache=True, eos_token_id=None, pad_token_id=0)
            sync()
            return time.perf_counter() - t0

    gen(2)  # warm-up
    t1 = min(gen(1) for _ in range(a.iters))
    tn = min(gen(a.new) for _ in range(a.iters))
    dt = max(tn - t1, 1e-9)
    print(json.dumps({"impl": "transformers", "tokens_per_s": a.batch * (a.new - 1) / dt,
                      "seconds_per_iter": dt / (a.new - 1), "threads": a.threads, "batch": a.batch, "seq": a.seq,
                      "new_tokens": a.new, "device": device()}))


if __name__ == "__main__":
    main()
