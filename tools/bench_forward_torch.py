#!/usr/bin/env python3
"""bench_forward_torch.py — PyTorch/transformers peer for dsv3's prefill forward benchmark.

Builds DeepseekV3ForCausalLM (or V2) from a config with random weights (FP32, eager attention, eval,
no_grad), times the prefill forward over (batch, seq) random tokens and prints one JSON line:
{"impl":"transformers","tokens_per_s":..,"seconds_per_iter":..,"threads":N,"batch":B,"seq":T}

Usage: python3 tools/bench_forward_torch.py --config CONFIG.json --batch B --seq T --threads N --iters K [--warmup W]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import build_model, parse_args, report, time_iters  # noqa: E402


def main():
    a = parse_args(__doc__.split("\n")[1])
    torch.set_num_threads(a.threads)
    model, cfg = build_model(a.config, a.seed)
    model.eval()
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), generator=g)

    def step():
        with torch.no_grad():
            model(ids, use_cache=False)

    report("transformers", time_iters(step, a.iters, a.warmup), a)


if __name__ == "__main__":
    main()
