#!/usr/bin/env python3
"""make_io_fixtures.py — fixtures for the dsv3 I/O layer tests (tests/test_safetensors.c,
tests/test_config.c), written by the reference libraries, never by dsv3.

    python3 tools/make_io_fixtures.py [OUT_DIR]        (default tests/fixtures/io)

Writes:
  all_dtypes.safetensors     every dtype dsv3 reads, written by the Python `safetensors`
                             package (torch.save_file), metadata {"format": "pt"}; includes
                             special values (nan, inf, -0, subnormals), a 0-d and an empty tensor
  sharded/                   model.safetensors.index.json + 2 shards (huggingface_hub
                             save_torch_state_dict, the routine transformers' save_pretrained uses),
                             with an FP8 E4M3 weight [130, 260] and its 128x128 weight_scale_inv [2, 3]
  expected.f32 + expected.txt  what each tensor is as FP32, computed by torch (x.float(); for the
                             FP8 weight: fp8 -> float times the block scale), one line per tensor:
                             "<file> <name> <dtype> <ndim> <dims...> <offset in expected.f32 (floats)>"
  config_*.json              configs saved by transformers' save_pretrained (v5 format) and the
                             DeepSeek-V3 hub config as DeepSeek wrote it (v4 rope_scaling spelling)
  config_*.expected.txt      the values transformers reads from each ("field value" lines)

Needs torch, safetensors, huggingface_hub, transformers.  Deterministic (fixed seeds).
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "io")
os.makedirs(OUT, exist_ok=True)
g = torch.Generator().manual_seed(1234)

ST_NAME = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2", torch.float64: "F64", torch.int8: "I8", torch.uint8: "U8",
    torch.int16: "I16", torch.int32: "I32", torch.int64: "I64", torch.bool: "BOOL",
}


def floats(n, scale=3.0):
    return torch.randn(n, generator=g, dtype=torch.float64) * scale


def special(dtype):
    # values every float dtype must decode exactly: zeros, signs, subnormals, extremes, inf/nan
    fi = torch.finfo(dtype)
    vals = [0.0, -0.0, 1.0, -2.5, fi.max, -fi.max, fi.tiny, fi.tiny / 2 if dtype != torch.bfloat16 else fi.tiny,
            fi.smallest_normal * 0.25, float("nan")]
    if dtype not in (torch.float8_e4m3fn,):
        vals += [float("inf"), float("-inf")]
    return torch.tensor(vals, dtype=torch.float64)


tensors = {}
for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float64):
    name = ST_NAME[dt].lower()
    tensors[f"{name}.random"] = floats(2 * 3 * 5).reshape(2, 3, 5).to(dt)
    tensors[f"{name}.special"] = special(dt).to(dt)
# every E4M3 / E5M2 bit pattern once (a full decode table)
tensors["f8_e4m3.all_bits"] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)
tensors["f8_e5m2.all_bits"] = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e5m2)
tensors["f16.all_bits"] = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16)[::7].clone()
tensors["bf16.all_bits"] = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)[::7].clone()
tensors["i8"] = torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int8)
tensors["u8"] = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
tensors["i16"] = torch.tensor([-32768, -1, 0, 32767], dtype=torch.int16)
tensors["i32"] = torch.tensor([[-2147483648, -7], [0, 2147483647]], dtype=torch.int32)
tensors["i64"] = torch.tensor([-(2 ** 40), -1, 0, 2 ** 24 + 1, 2 ** 53], dtype=torch.int64)
tensors["bool"] = torch.tensor([True, False, True], dtype=torch.bool)
tensors["scalar"] = torch.tensor(3.25, dtype=torch.float32)
tensors["empty"] = torch.zeros(0, 4, dtype=torch.float32)
tensors["model.layers.0.self_attn.q_a_proj.weight"] = floats(6 * 4).reshape(6, 4).to(torch.float32)
save_file(tensors, os.path.join(OUT, "all_dtypes.safetensors"), metadata={"format": "pt"})

# ---- sharded folder with an FP8 block-scaled weight ---------------------------------------
sdir = os.path.join(OUT, "sharded")
shutil.rmtree(sdir, ignore_errors=True)
os.makedirs(sdir)
M, N = 130, 260  # ragged: 2 x 3 blocks of 128x128, last ones partial
w = (torch.randn(M, N, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
s = (torch.rand(2, 3, generator=g) * 0.01 + 0.001).to(torch.float32)
shard_tensors = {
    "model.embed_tokens.weight": floats(40 * 16).reshape(40, 16).to(torch.bfloat16),
    "model.layers.0.mlp.gate_proj.weight": w,
    "model.layers.0.mlp.gate_proj.weight_scale_inv": s,
    "model.layers.0.input_layernorm.weight": floats(16).to(torch.float32),
    "model.norm.weight": floats(16).to(torch.float32),
    "lm_head.weight": floats(40 * 16).reshape(40, 16).to(torch.float32),
}
from huggingface_hub import save_torch_state_dict  # noqa: E402

save_torch_state_dict(shard_tensors, sdir, max_shard_size=20000, metadata={"format": "pt"})
assert os.path.exists(os.path.join(sdir, "model.safetensors.index.json")), "expected a sharded save"
# the dequantized weight, from torch: W[i, j] = fp8(W8[i, j]) * S[i // 128, j // 128]
S_full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:M, :N]
dequant = w.to(torch.float32) * S_full

# ---- expected FP32 values -----------------------------------------------------------------
lines, blob = [], []
off = 0


def add(file, name, t, values=None):
    global off
    v = (t.to(torch.float32) if values is None else values).contiguous().reshape(-1)
    shape = list(t.shape)
    lines.append(" ".join([file, name, ST_NAME[t.dtype], str(len(shape))] + [str(d) for d in shape] + [str(off)]))
    blob.append(v.numpy().astype("<f4").tobytes())
    off += v.numel()


for k in sorted(tensors):
    add("all_dtypes.safetensors", k, tensors[k])
for k in sorted(shard_tensors):
    if k == "model.layers.0.mlp.gate_proj.weight":
        add("sharded", k + "@dequant", w, dequant)
    add("sharded", k, shard_tensors[k])
with open(os.path.join(OUT, "expected.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
with open(os.path.join(OUT, "expected.f32"), "wb") as f:
    f.write(b"".join(blob))

# ---- configs -------------------------------------------------------------------------------
from transformers import AutoConfig, DeepseekV2Config, DeepseekV3Config  # noqa: E402

HUB_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                 "AutoModel": "modeling_deepseek.DeepseekV3Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
    "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu",
    "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": True,
    "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "tie_word_embeddings": False,
    "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.46.3",
    "use_cache": True, "v_head_dim": 128, "vocab_size": 129280,
}


def expected(c, path):
    """The values transformers holds after loading; keys are ds_config field names."""
    rp = dict(c.rope_parameters or {})
    rt = rp.get("rope_type", rp.get("type", "default"))
    q = getattr(c, "quantization_config", None) or {}
    if not isinstance(q, dict):
        q = q.to_dict()
    eos = c.eos_token_id
    none = lambda v, d: d if v is None else v  # noqa: E731
    e = {
        "model_type": c.model_type, "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "moe_intermediate_size": c.moe_intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "n_shared_experts": c.n_shared_experts,
        "n_routed_experts": c.n_routed_experts, "num_experts_per_tok": c.num_experts_per_tok,
        "n_group": none(c.n_group, 1), "topk_group": none(c.topk_group, 1),
        "first_k_dense_replace": c.first_k_dense_replace, "moe_layer_freq": getattr(c, "moe_layer_freq", 1),
        "q_lora_rank": none(c.q_lora_rank, 0), "kv_lora_rank": c.kv_lora_rank,
        "qk_nope_head_dim": c.qk_nope_head_dim, "qk_rope_head_dim": c.qk_rope_head_dim,
        "v_head_dim": c.v_head_dim, "max_position_embeddings": c.max_position_embeddings,
        "num_nextn_predict_layers": getattr(c, "num_nextn_predict_layers", 0),
        "routed_scaling_factor": c.routed_scaling_factor, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": rp.get("rope_theta", 10000.0), "initializer_range": c.initializer_range,
        "attention_dropout": c.attention_dropout,
        "scoring_func": getattr(c, "scoring_func", "sigmoid" if c.model_type == "deepseek_v3" else "softmax"),
        "topk_method": getattr(c, "topk_method", "noaux_tc"),
        "norm_topk_prob": int(bool(c.norm_topk_prob)), "tie_word_embeddings": int(bool(c.tie_word_embeddings)),
        "attention_bias": int(bool(c.attention_bias)), "use_cache": int(bool(c.use_cache)),
        "bos_token_id": none(c.bos_token_id, -1), "eos_token_id": none(eos[0] if isinstance(eos, list) else eos, -1),
        "pad_token_id": none(c.pad_token_id, -1), "hidden_act": c.hidden_act,
        "rope_interleave": int(bool(getattr(c, "rope_interleave", True))),
        "rope_type": rt,
        "quant_fp8": int(q.get("quant_method") == "fp8"),
        "output_router_logits": int(bool(getattr(c, "output_router_logits", False))),
        "pretraining_tp": getattr(c, "pretraining_tp", 1),
        "aux_loss_alpha": float(getattr(c, "aux_loss_alpha", 0.001)),
        "seq_aux": int(bool(getattr(c, "seq_aux", True))),
    }
    if rt == "yarn":
        e.update({"rope_factor": rp["factor"],
                  "rope_original_max_position_embeddings": rp.get("original_max_position_embeddings", 0),
                  "rope_beta_fast": rp.get("beta_fast", 32.0), "rope_beta_slow": rp.get("beta_slow", 1.0),
                  "rope_mscale": rp.get("mscale") or 0.0, "rope_mscale_all_dim": rp.get("mscale_all_dim") or 0.0})
    if e["quant_fp8"]:
        e.update({"quant_block0": q["weight_block_size"][0], "quant_block1": q["weight_block_size"][1],
                  "quant_fmt": q.get("fmt", "e4m3")})
    with open(path, "w") as f:
        for k, v in e.items():
            f.write(f"{k} {v!r}\n" if isinstance(v, float) else f"{k} {v}\n")


def save(c, name):
    d = os.path.join(OUT, "_tmp")
    c.save_pretrained(d)
    shutil.move(os.path.join(d, "config.json"), os.path.join(OUT, name + ".json"))
    shutil.rmtree(d)
    c2 = AutoConfig.from_pretrained(os.path.join(OUT, name + ".json"))
    expected(c2, os.path.join(OUT, name + ".expected.txt"))


# DeepSeek's own hub file (v4 spelling), and the same re-saved by transformers (v5 spelling)
with open(os.path.join(OUT, "config_v3_hub.json"), "w") as f:
    json.dump(HUB_V3, f, indent=2, sort_keys=True)
expected(AutoConfig.from_pretrained(os.path.join(OUT, "config_v3_hub.json")),
         os.path.join(OUT, "config_v3_hub.expected.txt"))
save(DeepseekV3Config.from_dict(HUB_V3), "config_v3_resaved")
# tiny V3: no q_lora, no rope scaling, tied embeddings, no MTP
save(DeepseekV3Config(vocab_size=96, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=2,
                      n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2,
                      first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16,
                      qk_rope_head_dim=8, v_head_dim=24, max_position_embeddings=128, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, num_mtp_layers=0, pad_token_id=2, eos_token_id=[1, 5],
                      dtype="float32"), "config_v3_tiny")
# DeepSeek-V2-Lite as transformers writes it (docs/deepseek-v3.md §1.4)
save(DeepseekV2Config(vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
                      num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16,
                      n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1,
                      n_group=1, topk_group=1, topk_method="greedy", norm_topk_prob=False,
                      routed_scaling_factor=1.0, q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=128,
                      qk_rope_head_dim=64, v_head_dim=128, rms_norm_eps=1e-6, max_position_embeddings=163840,
                      bos_token_id=100000, eos_token_id=100001,
                      rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                       "original_max_position_embeddings": 4096, "beta_fast": 32.0,
                                       "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707},
                      scoring_func="softmax", aux_loss_alpha=0.001, seq_aux=True), "config_v2_lite")
print("wrote", OUT)

# ---- Python's float repr (json.dumps of floats), the oracle for dsv3's JSON number printing ----
import random  # noqa: E402

rnd = random.Random(5)
fl = [0.0, -0.0, 1.0, 2.5, 0.1, 1e-06, 1e-05, 0.0001, 0.001, 1e15, 1e16, 1e17, 123456789012345678.0,
      9007199254740993.0, 0.02, 0.707, 40.0, 10000.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e+308,
      1 / 3, 2 / 3, 1e22, 1e21, 1e-7, 12345.678]
fl += [rnd.uniform(-1, 1) * 10 ** rnd.randint(-30, 30) for _ in range(300)]
fl += [struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0] for _ in range(200)]
with open(os.path.join(OUT, "float_repr.txt"), "w") as f:
    for v in fl:
        if v != v or v in (float("inf"), float("-inf")):
            continue
        f.write(f"{struct.unpack('<Q', struct.pack('<d', v))[0]:016x} {json.dumps(v)}\n")
