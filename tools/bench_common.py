"""bench_common.py — shared helpers of the PyTorch peer benchmarks (tools/bench_*_torch.py).

Builds a randomly initialised DeepSeek model (FP32, eager attention) from a config.json file or a model
folder, and times a callable. The JSON line each benchmark prints is what bench/*.sh compares against
the dsv3 run of the same configuration.
"""
import argparse
import json
import os
import time

import torch


def parse_args(desc, train=False):
    ap = argparse.ArgumentParser(description=desc)
    ap.add_argument("--config", required=True, help="config.json, or a model folder holding one")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    if train:
        ap.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    a = ap.parse_args()
    for k in ("batch", "seq", "threads", "iters"):
        if getattr(a, k) < 1:
            ap.error(f"--{k} must be >= 1")
    if a.warmup < 0:
        ap.error("--warmup must be >= 0")
    return a


def device():
    """BENCH_DEVICE in the environment: "cpu" (default) or "cuda" (the GPU peer of --device cuda)."""
    d = os.environ.get("BENCH_DEVICE", "cpu")
    if d not in ("cpu", "cuda"):
        raise SystemExit(f"BENCH_DEVICE: expected cpu or cuda, got {d!r}")
    if d == "cuda" and not torch.cuda.is_available():
        raise SystemExit("BENCH_DEVICE=cuda: torch sees no CUDA device")
    return d


def sync():
    if device() == "cuda":
        torch.cuda.synchronize()


def build_model(path, seed):
    """Random-init *ForCausalLM (deepseek_v3 or deepseek_v2) from a config; FP32, eager attention,
    on BENCH_DEVICE."""
    from transformers import AutoConfig, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM

    cfg_path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(cfg_path) as f:
            raw = json.load(f)
    except OSError as e:
        raise SystemExit(f"{cfg_path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        raise SystemExit(f"{cfg_path}: invalid JSON: {e}")
    mt = raw.get("model_type")
    if mt not in ("deepseek_v3", "deepseek_v2"):
        raise SystemExit(f"{cfg_path}: model_type: expected deepseek_v3 or deepseek_v2, got {mt!r}")
    raw.pop("quantization_config", None)  # benchmark the FP32 model, never quantised weights
    cfg = AutoConfig.for_model(**raw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    cls = DeepseekV3ForCausalLM if mt == "deepseek_v3" else DeepseekV2ForCausalLM
    return cls(cfg).float().to(device()), cfg


def time_iters(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def report(impl, sec, a):
    print(json.dumps({"impl": impl, "tokens_per_s": a.batch * a.seq / sec, "seconds_per_iter": sec,
                      "threads": a.threads, "batch": a.batch, "seq": a.seq, "device": device()}))
