#!/usr/bin/env python3
"""make_fp8_infer_fixtures.py — torch oracle for FP8-resident inference
(tests/test_fp8_infer.c): the logits of an FP8 checkpoint run as DeepSeek's
inference code runs it.

    python3 tools/make_fp8_infer_fixtures.py tests/fixtures/fp8infer

Model: the DeepSeek-V3 FP8 folder of the convert fixtures
(tests/fixtures/convert/expected_fp8.safetensors + expected_fp8_config.json:
hidden 136, dense intermediate 264, so 128x128 blocks with ragged edges, 4
routed experts, BF16 embeddings/norms/router/head).  Every linear whose
checkpoint weight is F8_E4M3 (attention q_a/q_b/kv_a/kv_b/o, dense and shared
MLP, routed experts) runs DeepSeek's inference `linear()` for FP8 weights:

    x_q, x_s = act_quant(x, 128)      1x128 tiles along K, s = max(amax, 1e-4)/448,
                                      q = (x / s).clamp(-448, 448).to(float8_e4m3fn)
    y = fp8_gemm(x_q, x_s, w_q, w_s)  y[m, n] = sum_kb (sum_{k in kb} x_q[m,k] w_q[n,k])
                                                 * x_s[m, kb] * w_s[n//128, kb]

computed here in float64 (the FP8 products and their block sums are exact in
float64), then rounded to float32.  The 1e-4 amax floor is dsv3's quantizer
convention (DeepSeek's training casts; its inference kernel has none — the
floor only matters for all-zero rows).  Everything else (RMSNorm, RoPE,
attention, routing) is transformers' DeepseekV3ForCausalLM in float32 with the
non-FP8 weights widened from BF16.

Writes into OUT:
  ids.txt               2 sequences of 12 token ids
  logits.safetensors    logits F32 [2, 12, 32] (the oracle above)
                        logits_dequant F32 [2, 12, 32] (the same model with the
                        weights dequantized to float32 and no activation
                        quantization: what `--dequant` computes)
Byte-identical on rerun (fixed seed).
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Experts

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/fp8infer"
here = os.path.dirname(os.path.abspath(__file__))
conv = os.path.join(here, "..", "tests", "fixtures", "convert")
os.makedirs(out, exist_ok=True)

sd8 = load_file(os.path.join(conv, "expected_fp8.safetensors"))
cfg = DeepseekV3Config.from_pretrained(os.path.join(conv, "expected_fp8_config.json"))
cfg.quantization_config = None
if hasattr(cfg, "_experts_implementation"):
    cfg._experts_implementation = "eager"
torch.manual_seed(0)
model = DeepseekV3ForCausalLM(cfg).float().eval()

BLK = 128


def dequant(q, s):
    """DeepSeek's weight_dequant: q.float() * s per 128x128 block."""
    n, k = q.shape
    sf = s.repeat_interleave(BLK, 0)[:n].repeat_interleave(BLK, 1)[:, :k]
    return q.float() * sf


def act_quant(x):
    """(M, K) float32 -> codes (M, K) float8_e4m3fn, scales (M, ceil(K/128)) float32."""
    M, K = x.shape
    nb = (K + BLK - 1) // BLK
    q = torch.empty(M, K, dtype=torch.float8_e4m3fn)
    s = torch.empty(M, nb, dtype=torch.float32)
    for b in range(nb):
        t = x[:, b * BLK:(b + 1) * BLK]
        amax = t.abs().amax(dim=1, keepdim=True).clamp(min=1e-4)
        sc = amax / 448.0
        q[:, b * BLK:(b + 1) * BLK] = (t / sc).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
        s[:, b:b + 1] = sc
    return q, s


def fp8_linear(x, wq, ws):
    """DeepSeek's linear() for an FP8 weight: act_quant + block-scaled GEMM, float64 sums."""
    shp = x.shape
    x2 = x.reshape(-1, shp[-1]).float()
    xq, xs = act_quant(x2)
    N, K = wq.shape
    xd, wd = xq.double(), wq.double()
    y = torch.zeros(x2.shape[0], N, dtype=torch.float64)
    for b in range((K + BLK - 1) // BLK):
        part = xd[:, b * BLK:(b + 1) * BLK] @ wd[:, b * BLK:(b + 1) * BLK].T   # exact block sums
        wsc = ws[:, b].double().repeat_interleave(BLK)[:N]
        y += part * xs[:, b:b + 1].double() * wsc[None, :]
    return y.float().reshape(*shp[:-1], N)


# weights: FP8 linears dequantized (for the dequant run), the rest widened
hf = {}
for k, v in sd8.items():
    if k.endswith("_scale_inv") or k.startswith("model.layers.2."):
        continue  # the MTP layer is not part of transformers' model
    hf[k] = dequant(v, sd8[k + "_scale_inv"]) if v.dtype == torch.float8_e4m3fn else v.float()
E, I = cfg.n_routed_experts, cfg.moe_intermediate_size
for l in range(cfg.num_hidden_layers):
    pre = f"model.layers.{l}.mlp.experts."
    if pre + "0.gate_proj.weight" not in hf:
        continue
    hf[pre + "gate_up_proj"] = torch.stack([torch.cat([hf.pop(f"{pre}{e}.gate_proj.weight"),
                                                       hf.pop(f"{pre}{e}.up_proj.weight")]) for e in range(E)])
    hf[pre + "down_proj"] = torch.stack([hf.pop(f"{pre}{e}.down_proj.weight") for e in range(E)])
missing, unexpected = model.load_state_dict(hf, strict=False)
assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)

g = torch.Generator().manual_seed(7)
B, T = 2, 12
ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
with torch.no_grad():
    logits_deq = model(ids).logits.float()

# FP8 mode: patch every linear whose checkpoint weight is F8_E4M3
for name, mod in model.named_modules():
    if isinstance(mod, torch.nn.Linear) and sd8.get(name + ".weight") is not None \
            and sd8[name + ".weight"].dtype == torch.float8_e4m3fn:
        assert mod.bias is None
        wq, ws = sd8[name + ".weight"], sd8[name + ".weight_scale_inv"]
        mod.forward = (lambda wq, ws: (lambda x: fp8_linear(x, wq, ws)))(wq, ws)
    if isinstance(mod, DeepseekV3Experts):
        pre = name + "."

        def experts_fwd(hidden, top_k_index, top_k_weights, pre=pre):
            outp = torch.zeros_like(hidden)
            for e in range(E):
                tok, kpos = torch.where(top_k_index == e)
                if tok.numel() == 0:
                    continue
                x = hidden[tok]
                w = lambda p: (sd8[f"{pre}{e}.{p}.weight"], sd8[f"{pre}{e}.{p}.weight_scale_inv"])
                h = torch.nn.functional.silu(fp8_linear(x, *w("gate_proj"))) * fp8_linear(x, *w("up_proj"))
                y = fp8_linear(h, *w("down_proj")) * top_k_weights[tok, kpos, None]
                outp.index_add_(0, tok, y)
            return outp
        mod.forward = experts_fwd
with torch.no_grad():
    logits = model(ids).logits.float()

with open(os.path.join(out, "ids.txt"), "w") as f:
    for b in range(B):
        f.write(" ".join(str(int(t)) for t in ids[b]) + "\n")
save_file({"logits": logits.contiguous(), "logits_dequant": logits_deq.contiguous()},
          os.path.join(out, "logits.safetensors"), metadata={"format": "pt"})
d = (logits - logits_deq).abs().max().item() / logits_deq.abs().max().item()
print(f"fp8 vs dequant: max |diff| / max |logit| = {d:.3e}")
