#!/usr/bin/env python3
"""check_hf_load.py — does a model folder written by dsv3 load in transformers and give dsv3's logits?

Usage: python3 tools/check_hf_load.py MODEL_DIR IDS_FILE DSV3_LOGITS.safetensors [--tol 1e-4]

Loads MODEL_DIR with DeepseekV3ForCausalLM.from_pretrained (DeepseekV2ForCausalLM when config.json says
model_type deepseek_v2) in FP32 with eager attention, runs the token ids of IDS_FILE (one sequence per
line, whitespace-separated ids, all lines the same length) and compares its logits with the tensor
`logits` [B, T, V] (or [T, V] for one sequence) of DSV3_LOGITS.safetensors (any float dtype).
Error measure: max |dsv3 - hf| / max |hf| over all elements. Prints one line; exits 0 if the error is
<= tol (default 1e-4), 1 if it is larger, 2 on bad input (missing file, bad ids, shape mismatch, NaN).
"""
import argparse
import json
import os
import sys


def fail(msg, code=2):
    print(f"check_hf_load: {msg}", file=sys.stderr)
    sys.exit(code)


def read_ids(path, vocab):
    try:
        with open(path) as f:
            lines = [ln.split() for ln in f if ln.strip()]
    except OSError as e:
        fail(f"{path}: cannot read: {e.strerror}")
    if not lines:
        fail(f"{path}: no token ids")
    rows = []
    for n, toks in enumerate(lines, start=1):
        try:
            row = [int(t) for t in toks]
        except ValueError:
            fail(f"{path}:{n}: not an integer token id")
        bad = [t for t in row if t < 0 or t >= vocab]
        if bad:
            fail(f"{path}:{n}: token id {bad[0]} outside [0, {vocab})")
        rows.append(row)
    if len({len(r) for r in rows}) != 1:
        fail(f"{path}: lines have different lengths {sorted({len(r) for r in rows})}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("ids_file")
    ap.add_argument("logits_file")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    cfg_path = os.path.join(a.model_dir, "config.json")
    try:
        with open(cfg_path) as f:
            raw = json.load(f)
    except OSError as e:
        fail(f"{cfg_path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        fail(f"{cfg_path}: invalid JSON: {e}")
    mt = raw.get("model_type")
    if mt not in ("deepseek_v3", "deepseek_v2"):
        fail(f"{cfg_path}: model_type: expected deepseek_v3 or deepseek_v2, got {mt!r}")
    vocab = raw.get("vocab_size")
    if not isinstance(vocab, int) or vocab <= 0:
        fail(f"{cfg_path}: vocab_size: missing or not a positive integer")
    rows = read_ids(a.ids_file, vocab)
    if not os.path.isfile(a.logits_file):
        fail(f"{a.logits_file}: no such file")

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    import transformers
    from transformers import DeepseekV2ForCausalLM, DeepseekV3ForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        dl = load_file(a.logits_file)
    except (SafetensorError, OSError, ValueError) as e:
        fail(f"{a.logits_file}: not a readable safetensors file: {e}")
    if "logits" in dl:
        ours = dl["logits"]
    elif len(dl) == 1:
        ours = next(iter(dl.values()))
    else:
        fail(f"{a.logits_file}: no tensor named 'logits' (has {sorted(dl)[:5]})")
    ours = ours.float()
    ids = torch.tensor(rows, dtype=torch.long)
    if ours.ndim == 2 and ids.shape[0] == 1:
        ours = ours.unsqueeze(0)
    want = (ids.shape[0], ids.shape[1], vocab)
    if tuple(ours.shape) != want:
        fail(f"{a.logits_file}: logits shape {list(ours.shape)}, expected {list(want)} (ids x vocab)")
    if not torch.isfinite(ours).all():
        fail(f"{a.logits_file}: logits contain NaN or Inf")

    cls = DeepseekV3ForCausalLM if mt == "deepseek_v3" else DeepseekV2ForCausalLM
    try:
        model = cls.from_pretrained(a.model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    except Exception as e:  # transformers raises many types; report them as one line
        fail(f"{a.model_dir}: transformers cannot load it: {type(e).__name__}: {str(e).splitlines()[0]}")
    with torch.no_grad():
        hf = model(ids, use_cache=False).logits.float()
    if not torch.isfinite(hf).all():
        fail(f"{a.model_dir}: transformers' logits contain NaN or Inf")
    err = ((ours - hf).abs().max() / hf.abs().max().clamp_min(1e-30)).item()
    where = torch.nonzero((ours - hf).abs() == (ours - hf).abs().max())[0].tolist()
    msg = f"max |dsv3-hf|/max|hf| = {err:.3e} (tol {a.tol:g}) at [b,t,v] = {where}"
    if not err <= a.tol:
        print(f"check_hf_load: FAIL {a.model_dir}: {msg}", file=sys.stderr)
        sys.exit(1)
    print(f"check_hf_load: ok {a.model_dir}: {msg}")


if __name__ == "__main__":
    main()
