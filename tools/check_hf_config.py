#!/usr/bin/env python3
"""check_hf_config.py — check that config.json files written by dsv3 (ds_config_save) load in
Hugging Face transformers with the values the file states, and that a small one builds a model
with the parameter shapes the config implies.

    python3 tools/check_hf_config.py CONFIG.json [CONFIG.json ...]

Used by tests/test_config.c (written_config_loads_in_transformers).  Exits 1 on any mismatch.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")
from transformers import AutoConfig  # noqa: E402
from transformers.utils import logging  # noqa: E402

logging.set_verbosity_error()

SKIP = {"architectures", "dtype", "torch_dtype", "rope_parameters", "quantization_config", "transformers_version"}
bad = 0


def fail(path, msg):
    global bad
    bad += 1
    print(f"{path}: {msg}")


for path in sys.argv[1:]:
    raw = json.load(open(path))
    c = AutoConfig.from_pretrained(path)
    if c.model_type != raw["model_type"]:
        fail(path, f"model_type {c.model_type}")
    for k, v in raw.items():
        if k in SKIP or not hasattr(c, k):
            continue
        got = getattr(c, k)
        if got != v:
            fail(path, f"{k}: transformers has {got!r}, file says {v!r}")
    rp = c.rope_parameters or {}
    for k, v in raw["rope_parameters"].items():
        if rp.get(k) != v:
            fail(path, f"rope_parameters.{k}: transformers has {rp.get(k)!r}, file says {v!r}")
    if "quantization_config" in raw:
        q = c.quantization_config
        q = q if isinstance(q, dict) else q.to_dict()
        for k, v in raw["quantization_config"].items():
            if q.get(k) != v:
                fail(path, f"quantization_config.{k}: {q.get(k)!r} vs {v!r}")
    if raw.get("dtype") and str(getattr(c, "dtype", "")).replace("torch.", "") != raw["dtype"]:
        fail(path, f"dtype: {getattr(c, 'dtype', None)} vs {raw['dtype']}")
    # a small config builds a model whose weights have the shapes the config implies
    if c.hidden_size <= 256 and c.model_type == "deepseek_v3":
        import torch
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_config(c, dtype=torch.float32)
        sd = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        H, nh = raw["hidden_size"], raw["num_attention_heads"]
        dq = raw["qk_nope_head_dim"] + raw["qk_rope_head_dim"]
        a = "model.layers.0.self_attn."
        if raw["q_lora_rank"] is None:
            want = {a + "q_proj.weight": (nh * dq, H)}
        else:
            want = {a + "q_a_proj.weight": (raw["q_lora_rank"], H), a + "q_b_proj.weight": (nh * dq, raw["q_lora_rank"])}
        want[a + "kv_a_proj_with_mqa.weight"] = (raw["kv_lora_rank"] + raw["qk_rope_head_dim"], H)
        want[a + "kv_b_proj.weight"] = (nh * (raw["qk_nope_head_dim"] + raw["v_head_dim"]), raw["kv_lora_rank"])
        want[a + "o_proj.weight"] = (H, nh * raw["v_head_dim"])
        for k, s in want.items():
            if sd.get(k) != s:
                fail(path, f"{k}: transformers builds {sd.get(k)}, config implies {s}")
        L = raw["num_hidden_layers"]
        for li in range(L):
            moe = li >= raw["first_k_dense_replace"]
            has = f"model.layers.{li}.mlp.gate.weight" in sd
            if has != moe:
                fail(path, f"layer {li}: MoE in transformers = {has}, dsv3 rule = {moe}")
        if raw["tie_word_embeddings"] != (m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()):
            fail(path, "tie_word_embeddings not honoured")
    print(f"{path}: ok" if not bad else f"{path}: checked")
sys.exit(1 if bad else 0)
