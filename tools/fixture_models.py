"""fixture_models.py — tiny random DeepSeek-V3/V2 models for the dsv3 parity fixtures.

Holds the fixture configurations, the weight initialisation that exercises every path
(docs/deepseek-v3.md §12.3), a router recorder that keeps every routing decision and checks that no
decision is a near-tie, and the MTP module weights. Used by tools/make_fixtures.py.
"""
import math

import torch
from torch import nn

from transformers import DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2DecoderLayer, DeepseekV2TopkRouter
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3DecoderLayer,
    DeepseekV3RMSNorm,
    DeepseekV3TopkRouter,
)

# Smallest allowed margin between a kept and a dropped routing candidate (expert or group).
MIN_MARGIN = 1e-4

B, T = 2, 24  # batch and sequence length of every fixture

_COMMON = dict(
    hidden_size=64,
    intermediate_size=64,
    moe_intermediate_size=16,
    num_attention_heads=4,
    num_key_value_heads=4,
    kv_lora_rank=32,
    qk_nope_head_dim=16,
    qk_rope_head_dim=16,
    v_head_dim=24,  # != qk_nope_head_dim to catch split bugs
    n_routed_experts=8,
    first_k_dense_replace=1,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    attention_bias=False,
    hidden_act="silu",
)

_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
         "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}

# name -> (architecture, config kwargs, base seed)
CONFIGS = {
    # V3-like: sigmoid, noaux_tc, groups, q_lora, YaRN, 1 MTP module.
    "v3": ("v3", dict(_COMMON, vocab_size=256, num_hidden_layers=3, q_lora_rank=32,
                      n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2,
                      norm_topk_prob=True, routed_scaling_factor=2.5, rms_norm_eps=1e-6,
                      rope=_YARN, max_position_embeddings=64,
                      num_nextn_predict_layers=1, scoring_func="sigmoid", topk_method="noaux_tc"), 1000),
    # V2-Lite-like: softmax, greedy top-k, no q_lora (q_proj), 2 shared experts, no normalisation.
    "v2lite": ("v2", dict(_COMMON, vocab_size=256, num_hidden_layers=2, q_lora_rank=None,
                          n_shared_experts=2, num_experts_per_tok=3, n_group=1, topk_group=1,
                          norm_topk_prob=False, routed_scaling_factor=1.0, rms_norm_eps=1e-6,
                          rope=dict(_YARN, mscale=0.707, mscale_all_dim=0.707), max_position_embeddings=64,
                          topk_method="greedy", scoring_func="softmax"), 2000),
    # V2-like group-limited greedy: softmax, group score = max, 4 groups keep 2, q_lora set.
    "v2group": ("v2", dict(_COMMON, vocab_size=256, num_hidden_layers=2, q_lora_rank=32,
                           n_shared_experts=2, num_experts_per_tok=3, n_group=4, topk_group=2,
                           norm_topk_prob=False, routed_scaling_factor=16.0, rms_norm_eps=1e-6,
                           rope=dict(_YARN, mscale=0.707, mscale_all_dim=0.707), max_position_embeddings=64,
                           topk_method="group_limited_greedy", scoring_func="softmax"), 3000),
    # No rope scaling, eps 1e-5 (latent norms keep 1e-6), q_lora, MTP depth 2.
    "norope": ("v3", dict(_COMMON, vocab_size=288, num_hidden_layers=2, q_lora_rank=32,
                          n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2,
                          norm_topk_prob=True, routed_scaling_factor=2.5, rms_norm_eps=1e-5,
                          rope=None, max_position_embeddings=64,
                          num_nextn_predict_layers=2, scoring_func="sigmoid", topk_method="noaux_tc"), 4000),
}


def build_config(name):
    arch, kw, _ = CONFIGS[name]
    kw = dict(kw)
    rope = kw.pop("rope")
    theta = kw.pop("rope_theta")
    rope_parameters = {"rope_type": "default", "rope_theta": theta} if rope is None else dict(rope, rope_theta=theta)
    kw["rope_parameters"] = rope_parameters
    if arch == "v3":
        cfg = DeepseekV3Config(**kw)
    else:
        kw.pop("num_nextn_predict_layers", None)
        cfg = DeepseekV2Config(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def model_class(cfg):
    return DeepseekV3ForCausalLM if cfg.model_type == "deepseek_v3" else DeepseekV2ForCausalLM


def decoder_layer_class(cfg):
    return DeepseekV3DecoderLayer if cfg.model_type == "deepseek_v3" else DeepseekV2DecoderLayer


def mtp_depth(cfg):
    return int(getattr(cfg, "num_nextn_predict_layers", 0) or 0)


def layer_is_moe(cfg, l):
    # HF: every layer >= first_k_dense_replace is MoE (moe_layer_freq ignored, §12.2 item 7).
    return cfg.n_routed_experts and l >= cfg.first_k_dense_replace


@torch.no_grad()
def init_module(module, gen):
    """Weights that exercise every path (§12.3): norms 1+0.2·N, linear N/sqrt(fan_in), embeddings N,
    correction bias uniform in [0, 0.1) (non-negative, §5.4)."""
    for name, p in module.named_parameters():
        leaf = name.split(".")[-1]
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if p.ndim == 1:  # every 1-D parameter is an RMSNorm weight in these models
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
        elif "embed_tokens" in owner:
            p.copy_(torch.randn(p.shape, generator=gen))
        else:  # [out, in] or fused experts [E, out, in]: fan_in = last dim
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        del leaf
    for name, b in module.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.copy_(0.1 * torch.rand(b.shape, generator=gen))


class MTPModule(nn.Module):
    """One MTP module k (layer index L+k-1): enorm, hnorm, eh_proj [H, 2H], a decoder layer, shared_head.norm.
    The embedding and the output head are the main model's (shared)."""

    def __init__(self, cfg, layer_idx):
        super().__init__()
        H = cfg.hidden_size
        self.enorm = DeepseekV3RMSNorm(H, eps=cfg.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(H, eps=cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * H, H, bias=False)
        self.block = decoder_layer_class(cfg)(cfg, layer_idx)
        self.head_norm = DeepseekV3RMSNorm(H, eps=cfg.rms_norm_eps)
        self.layer_idx = layer_idx

    def named_tensors_ds(self, model):
        """(DeepSeek checkpoint name, tensor) for every weight of this module, incl. the shared copies."""
        p = f"model.layers.{self.layer_idx}."
        out = [(p + "embed_tokens.weight", model.model.embed_tokens.weight),
               (p + "enorm.weight", self.enorm.weight),
               (p + "hnorm.weight", self.hnorm.weight),
               (p + "eh_proj.weight", self.eh_proj.weight),
               (p + "shared_head.norm.weight", self.head_norm.weight),
               (p + "shared_head.head.weight", model.lm_head.weight)]
        for n, t in block_state_per_expert(self.block).items():
            out.append((p + n, t))
        return out

    def param_names_ds(self):
        """DeepSeek name for every own (non-shared) parameter, in named_parameters order."""
        p = f"model.layers.{self.layer_idx}."
        m = {"enorm.weight": "enorm.weight", "hnorm.weight": "hnorm.weight", "eh_proj.weight": "eh_proj.weight",
             "head_norm.weight": "shared_head.norm.weight"}
        names = []
        for n, _ in self.named_parameters():
            names.append(p + (m[n] if n in m else n[len("block."):]))
        return names


def block_state_per_expert(block):
    """A decoder layer's tensors with the fused v5 expert tensors split into DeepSeek per-expert names
    (gate_up_proj [E, 2Im, H]: gate rows first, then up rows; down_proj [E, H, Im])."""
    out = {}
    for n, t in block.state_dict(keep_vars=True).items():
        if n.endswith("mlp.experts.gate_up_proj"):
            pre = n[: -len("gate_up_proj")]
            im = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{pre}{e}.gate_proj.weight"] = t[e, :im]
                out[f"{pre}{e}.up_proj.weight"] = t[e, im:]
        elif n.endswith("mlp.experts.down_proj"):
            pre = n[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{pre}{e}.down_proj.weight"] = t[e]
        else:
            out[n] = t
    return out


def expert_grads_per_expert(name, g):
    """Split the gradient of a fused expert parameter into per-expert DeepSeek names."""
    if name.endswith("mlp.experts.gate_up_proj"):
        pre = name[: -len("gate_up_proj")]
        im = g.shape[1] // 2
        out = {}
        for e in range(g.shape[0]):
            out[f"{pre}{e}.gate_proj.weight"] = g[e, :im]
            out[f"{pre}{e}.up_proj.weight"] = g[e, im:]
        return out
    if name.endswith("mlp.experts.down_proj"):
        pre = name[: -len("down_proj")]
        return {f"{pre}{e}.down_proj.weight": g[e] for e in range(g.shape[0])}
    return {name: g}


class RouterRecorder:
    """Forward hooks on every router: keeps (layer, router_logits, topk_indices) of each call and the
    smallest selection margin seen (K-th vs (K+1)-th candidate expert, Gk-th vs (Gk+1)-th group)."""

    def __init__(self, modules_by_layer, cfg):
        self.cfg = cfg
        self.calls = []
        self.weights = []  # topk_weights of each call, parallel to self.calls
        self.min_margin = float("inf")
        self.where = None
        self.handles = []
        for l, router in modules_by_layer.items():
            self.handles.append(router.register_forward_hook(self._hook(l)))

    def clear(self):
        self.calls = []
        self.weights = []

    def remove(self):
        for h in self.handles:
            h.remove()

    def _hook(self, l):
        def fn(mod, inp, out):
            logits, w, idx = out
            self.calls.append((l, logits, idx))
            self.weights.append(w.detach())
            m = routing_margin(mod, logits.detach(), idx)
            if m < self.min_margin:
                self.min_margin, self.where = m, l
        return fn


def routing_margin(router, logits, idx):
    """Recompute the router's selection from its logits and return the smallest margin between a
    selected and a rejected candidate; also check the recomputed selection equals the router's."""
    K, E = router.top_k, router.num_experts
    G, Gk = router.num_group, router.topk_group
    margins = []
    if isinstance(router, DeepseekV3TopkRouter):
        s = logits.sigmoid()
        sb = s + router.e_score_correction_bias
        gs = sb.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)
        group_key = gs
    else:
        sb = logits.softmax(dim=-1, dtype=torch.float32)
        if router.topk_method == "greedy":
            G, Gk = 1, 1
        group_key = sb.view(-1, G, E // G).max(dim=-1).values
    if Gk < G:
        gsorted = group_key.sort(dim=-1, descending=True).values
        margins.append((gsorted[:, Gk - 1] - gsorted[:, Gk]).min().item())
        keep = group_key.topk(Gk, dim=-1).indices
        gmask = torch.zeros_like(group_key, dtype=torch.bool).scatter_(1, keep, True)
        emask = gmask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
        cand = sb.masked_fill(~emask, float("-inf"))
    else:
        cand = sb
    csorted = cand.sort(dim=-1, descending=True).values
    assert torch.isfinite(csorted[:, K]).all(), "fewer than K+1 candidate experts in the kept groups"
    margins.append((csorted[:, K - 1] - csorted[:, K]).min().item())
    mine = cand.topk(K, dim=-1).indices.sort(-1).values
    assert torch.equal(mine, idx.sort(-1).values), "router selection differs from the recomputed one"
    return min(margins)


def routers_by_layer(model, mtp_modules=()):
    out = {}
    for l, layer in enumerate(model.model.layers):
        if hasattr(layer.mlp, "gate"):
            out[l] = layer.mlp.gate
    for m in mtp_modules:
        if hasattr(m.block.mlp, "gate"):
            out[m.layer_idx] = m.block.mlp.gate
    return out


def sublayer_outputs(model, mtp_modules=()):
    """Forward hooks capturing each decoder layer's attention output (before the residual add) and
    MLP/MoE output (before the residual add). Returns (store dict, handles)."""
    store = {}
    handles = []
    layers = [(l, layer) for l, layer in enumerate(model.model.layers)] + [(m.layer_idx, m.block) for m in mtp_modules]
    for l, layer in layers:
        def attn_hook(mod, inp, out, l=l):
            store[f"attn_out.{l}"] = out[0].detach().float().contiguous().clone()

        def mlp_hook(mod, inp, out, l=l):
            store[f"mlp_out.{l}"] = out.detach().float().contiguous().clone()
        handles.append(layer.self_attn.register_forward_hook(attn_hook))
        handles.append(layer.mlp.register_forward_hook(mlp_hook))
    return store, handles
