"""mtp_reference.py — reference forward of DeepSeek-V3 multi-token prediction (MTP) for the dsv3 fixtures.

transformers' DeepseekV3ForCausalLM ignores the MTP weights, so this is written from the equations
agreed for dsv3 (tests/fixtures/model/README.md, docs/deepseek-v3.md §7):

  h^0_i      = output of the main model's final norm (model.norm) at position i
  x_i        = eh_proj( concat( enorm(Emb(t_{i+k})), hnorm(h^{k-1}_i) ) )      i = 0 .. T-1-k
  h^k        = DecoderLayer_k(x)   causal attention over the T-k positions, RoPE positions 0 .. T-1-k
  logits^k_i = shared_head.head( shared_head.norm(h^k_i) )                    predicts t_{i+k+1}

enorm / hnorm / eh_proj / shared_head are plain torch ops here; the decoder block is transformers'
own DeepseekV3DecoderLayer (or DeepseekV2DecoderLayer) holding the MTP layer's weights — it is the
oracle for one decoder layer. Emb and shared_head.head are the main model's embed_tokens / lm_head.
"""
import torch
import torch.nn.functional as F

from transformers.masking_utils import create_causal_mask


def rms_norm(x, w, eps):
    # Same op order as HF's RMSNorm: normalise in FP32, cast back, multiply by the weight.
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * y.to(x.dtype)


def mtp_forward(model, modules, ids, h0):
    """model: the main *ForCausalLM; modules: list of fixture_models.MTPModule (k = 1..D);
    ids (B, T) int64; h0 (B, T, H) = main model output after model.norm.
    Returns (logits, hidden): lists over k of (B, T-k, V) and (B, T-k, H) (h^k before shared_head.norm)."""
    cfg = model.config
    eps = cfg.rms_norm_eps
    emb = model.model.embed_tokens.weight
    head = model.lm_head.weight
    T = ids.shape[1]
    hprev = h0
    logits_out, hidden_out = [], []
    for k, m in enumerate(modules, start=1):
        Tk = T - k
        e = F.embedding(ids[:, k:], emb)                                  # (B, Tk, H) = Emb(t_{i+k})
        x = torch.cat([rms_norm(e, m.enorm.weight, eps),                  # embedding first,
                       rms_norm(hprev[:, :Tk], m.hnorm.weight, eps)], -1) # hidden second: (B, Tk, 2H)
        x = F.linear(x, m.eh_proj.weight)                                 # (B, Tk, H)
        pos = torch.arange(Tk).unsqueeze(0)
        pos_emb = model.model.rotary_emb(x, pos)
        mask = create_causal_mask(config=cfg, inputs_embeds=x, attention_mask=None, cache=None,
                                  position_ids=pos)
        h = m.block(x, attention_mask=mask, position_ids=pos, position_embeddings=pos_emb)
        logits_out.append(F.linear(rms_norm(h, m.head_norm.weight, eps), head))
        hidden_out.append(h)
        hprev = h
    return logits_out, hidden_out


def mtp_loss(logits, ids, lam):
    """L_MTP = (lam / D) * sum_k CE_k, CE_k = mean over the B*(T-1-k) positions i = 0..T-2-k of
    -log softmax(logits^k_i)[t_{i+k+1}] (the last position of each depth has no target)."""
    D = len(logits)
    total = 0.0
    for k, lg in enumerate(logits, start=1):
        tgt = ids[:, k + 1:]                                              # (B, T-1-k)
        lg = lg[:, : tgt.shape[1]]
        total = total + F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), tgt.reshape(-1))
    return lam / D * total
