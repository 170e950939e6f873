#!/usr/bin/env python3
"""make_convert_fixtures.py — a tiny DeepSeek-V3 model folder and torch oracles
for `dsv3 convert` (tests/test_convert.c).

    python3 tools/make_convert_fixtures.py tests/fixtures/convert

Writes into OUT:
  model/             config.json + generation_config.json from transformers'
                     DeepseekV3Config (hidden 136, dense intermediate 264: several
                     128x128 blocks with ragged edges), model.safetensors in FP32
                     with random weights, an MTP layer (index 2: enorm, hnorm,
                     eh_proj, shared_head, a full MoE decoder layer), and planted
                     cases: an all-zero 128x128 block, a block with amax < 1e-4,
                     an outlier, a row of values that flush to zero
  expected_fp8.safetensors        DeepSeek's FP8 format made by torch: every
                     linear weight W -> per 128x128 block s = max(amax, 1e-4)/448,
                     q = (W / s).to(float8_e4m3fn) (blocks zero-padded, as
                     DeepGEMM's per_block_cast_to_fp8), W_scale_inv = s; other
                     weights .to(bfloat16); e_score_correction_bias float32
  expected_fp8_ue8m0.safetensors  the same with s rounded up to a power of two
  expected_fp32.safetensors       expected_fp8 converted back to float32: linear
                     weights by DeepSeek's weight_dequant (q.float() * s per block),
                     the rest .float()
  expected_bf16.safetensors       the FP32 model .to(bfloat16), bias float32
  expected_{fp8,fp8_ue8m0,bf16}_config.json  model/config.json with quantization_config
                     added and dtype bfloat16, written as transformers writes configs
                     (json.dumps(indent=2, sort_keys=True) + newline)
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/convert"
mdir = os.path.join(out, "model")
os.makedirs(mdir, exist_ok=True)
torch.manual_seed(1234)

cfg = DeepseekV3Config(
    vocab_size=32, hidden_size=136, intermediate_size=264, moe_intermediate_size=8,
    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1,
    n_routed_experts=4, n_group=1, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1,
    kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8,
    num_nextn_predict_layers=1, max_position_embeddings=64, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
model = DeepseekV3ForCausalLM(cfg)
model.save_pretrained(mdir)  # config.json, generation_config.json (weights replaced below)
sd = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
# DeepSeek's per-expert names (transformers 5 holds the experts fused as
# mlp.experts.gate_up_proj (E, 2I, H) and down_proj (E, H, I); it splits them
# back on save and fuses them on load)
for k in [k for k in sd if k.endswith("mlp.experts.gate_up_proj")]:
    pre = k[: -len("gate_up_proj")]
    gu, dn = sd.pop(k), sd.pop(pre + "down_proj")
    I = gu.shape[1] // 2
    for e in range(gu.shape[0]):
        sd[f"{pre}{e}.gate_proj.weight"] = gu[e, :I].clone()
        sd[f"{pre}{e}.up_proj.weight"] = gu[e, I:].clone()
        sd[f"{pre}{e}.down_proj.weight"] = dn[e].clone()
# the MTP layer: a copy of layer 1's structure plus DeepSeek's extra modules
H, V = cfg.hidden_size, cfg.vocab_size
for k in list(sd):
    if k.startswith("model.layers.1."):
        sd["model.layers.2." + k[len("model.layers.1."):]] = torch.empty_like(sd[k])
for k, shape in {"embed_tokens.weight": (V, H), "enorm.weight": (H,), "hnorm.weight": (H,),
                 "eh_proj.weight": (H, 2 * H), "shared_head.norm.weight": (H,),
                 "shared_head.head.weight": (V, H)}.items():
    sd["model.layers.2." + k] = torch.empty(shape)
# random values everywhere, of varied magnitude per tensor
g = torch.Generator().manual_seed(99)
for k in sorted(sd):
    sd[k] = torch.randn(sd[k].shape, generator=g) * (0.02 + 0.5 * torch.rand(1, generator=g).item())
# planted cases in the dense MLP of layer 0
gp = sd["model.layers.0.mlp.gate_proj.weight"]        # (264, 136)
gp[:128, :128] = 0.0                                   # all-zero block
up = sd["model.layers.0.mlp.up_proj.weight"]
up[128:256, 128:] *= 1e-6                              # amax < 1e-4: the clamp decides the scale
dp = sd["model.layers.0.mlp.down_proj.weight"]        # (136, 264)
dp[5, 200] = 40.0                                      # outlier: the rest of its block flushes
dp[130, :] = torch.linspace(-1e-9, 1e-9, dp.shape[1]) # underflows to zero / subnormals
sd = {k: v.contiguous() for k, v in sd.items()}
for f in os.listdir(mdir):
    if f.endswith(".safetensors") or f.endswith(".index.json"):
        os.remove(os.path.join(mdir, f))
save_file(sd, os.path.join(mdir, "model.safetensors"), metadata={"format": "pt"})

LINEAR = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj",
          "gate_proj", "up_proj", "down_proj")


def is_linear(k):
    parts = k.split(".")
    return (k.startswith("model.layers.") and k.endswith(".weight") and len(parts) >= 5
            and parts[-2] in LINEAR and parts[3] in ("self_attn", "mlp"))


def ue8m0(s):
    def one(v):
        m, e = math.frexp(v)
        return 2.0 ** (e - 1) if m == 0.5 else 2.0 ** e
    return torch.tensor([one(v) for v in s.double().flatten().tolist()], dtype=torch.float32).view(s.shape)


def per_block_cast(x, pow2):
    m, n = x.shape
    xp = torch.zeros(-(-m // 128) * 128, -(-n // 128) * 128)
    xp[:m, :n] = x
    v = xp.view(xp.shape[0] // 128, 128, xp.shape[1] // 128, 128)
    amax = v.abs().amax(dim=(1, 3), keepdim=True).clamp(min=1e-4)
    s = amax / 448.0
    if pow2:
        s = ue8m0(s)
    q = (v / s).clamp(-448, 448).to(torch.float8_e4m3fn)
    return q.view_as(xp)[:m, :n].contiguous(), s.view(v.shape[0], v.shape[2]).contiguous()


def weight_dequant(q, s):
    m, n = q.shape
    return q.float() * s.repeat_interleave(128, 0)[:m].repeat_interleave(128, 1)[:, :n]


def keep_dtype(k, v, dt):
    return v.float() if k.endswith("e_score_correction_bias") else v.to(dt)


for pow2, name in ((0, "expected_fp8"), (1, "expected_fp8_ue8m0")):
    fp8 = {}
    for k, v in sd.items():
        if is_linear(k):
            fp8[k], fp8[k + "_scale_inv"] = per_block_cast(v, pow2)
        else:
            fp8[k] = keep_dtype(k, v, torch.bfloat16)
    save_file(fp8, os.path.join(out, name + ".safetensors"), metadata={"format": "pt"})
    if not pow2:
        back = {k: (weight_dequant(v, fp8[k + "_scale_inv"]) if v.dtype == torch.float8_e4m3fn else v.float())
                for k, v in fp8.items() if not k.endswith("_scale_inv")}
        save_file(back, os.path.join(out, "expected_fp32.safetensors"), metadata={"format": "pt"})
        # how many codes DeepGEMM's multiply-by-reciprocal form would change
        diff = 0
        for k, v in sd.items():
            if is_linear(k):
                q, s = fp8[k], fp8[k + "_scale_inv"]
                m, n = v.shape
                r = (448.0 / (s * 448.0)).repeat_interleave(128, 0)[:m].repeat_interleave(128, 1)[:, :n]
                diff += int(((v * r).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8) != q.view(torch.uint8)).sum())
        print(f"codes that x * (448/amax) would change vs x / (amax/448): {diff}")
save_file({k: keep_dtype(k, v, torch.bfloat16) for k, v in sd.items()},
          os.path.join(out, "expected_bf16.safetensors"), metadata={"format": "pt"})
base = json.load(open(os.path.join(mdir, "config.json")))
qc = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
for name, q in (("fp8", qc), ("fp8_ue8m0", dict(qc, scale_fmt="ue8m0")), ("bf16", None)):
    c = dict(base, dtype="bfloat16")
    if q:
        c["quantization_config"] = q
    with open(os.path.join(out, f"expected_{name}_config.json"), "w") as f:
        f.write(json.dumps(c, indent=2, sort_keys=True) + "\n")
print("wrote", out, f"(torch {torch.__version__})")
