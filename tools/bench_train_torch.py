#!/usr/bin/env python3
"""bench_train_torch.py — PyTorch/transformers peer for dsv3's training-step benchmark.

Builds DeepseekV3ForCausalLM (or V2) from a config with random weights (FP32, eager attention, train
mode) and times one training step over (batch, seq) random tokens: forward with labels = ids (causal-LM
cross-entropy), backward, global grad-norm clipping at 1.0, AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-8,
weight decay 0.1 on tensors with ndim >= 2). Prints one JSON line:
{"impl":"transformers"|"transformers+compile","tokens_per_s":..,"seconds_per_iter":..,"threads":N,"batch":B,"seq":T}

Usage: python3 tools/bench_train_torch.py --config CONFIG.json --batch B --seq T --threads N --iters K [--warmup W] [--compile]
BENCH_AUTOCAST=bf16 in the environment runs the forward under torch.autocast(device, torch.bfloat16)
(BF16 matmuls, FP32 master weights), the peer of dsv3's --precision bf16.  BENCH_DEVICE=cuda runs it
on the GPU (the peer of bench-train --device cuda; FP32 runs with TF32 off, as dsv3's FP32 GEMMs).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import build_model, device, parse_args, report, time_iters  # noqa: E402


def main():
    a = parse_args(__doc__.split("\n")[1], train=True)
    torch.set_num_threads(a.threads)
    model, cfg = build_model(a.config, a.seed)
    model.train()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    fwd = torch.compile(model) if a.compile else model
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), generator=g).to(device())
    torch.backends.cuda.matmul.allow_tf32 = False

    bf16 = os.environ.get("BENCH_AUTOCAST") == "bf16"

    def step():
        opt.zero_grad(set_to_none=True)
        if bf16:
            with torch.autocast(device(), dtype=torch.bfloat16):
                loss = fwd(ids, labels=ids, use_cache=False).loss
        else:
            loss = fwd(ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    # with --compile the first warmup iterations include compilation; use --warmup >= 1
    name = "transformers+compile" if a.compile else "transformers"
    report(name + (" bf16-autocast" if bf16 else ""), time_iters(step, a.iters, a.warmup), a)


if __name__ == "__main__":
    main()
