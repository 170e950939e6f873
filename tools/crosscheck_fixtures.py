"""crosscheck_fixtures.py — independent checks of the fixture oracles (not needed to regenerate them).

1. tools/mtp_reference.py against transformers' own generic MtpLayer (modeling_layers.py), which uses
   RoPE positions i+k instead of i (equal up to rounding since attention sees only position differences).
2. tools/aux_losses.py against a plain loop in float64.
Run: python3 tools/crosscheck_fixtures.py  (prints the max differences)
"""
import sys, torch, math
import os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_models as fm, make_fixtures as mf
from mtp_reference import mtp_forward
from transformers.modeling_layers import MtpLayer
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RMSNorm
from transformers.masking_utils import create_causal_mask
torch.set_num_threads(1)
for name in ["v3", "norope"]:
    info = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "model", name, "fixture_info.json")
    import json
    res = mf.build(name, json.load(open(info))["seed"])  # the committed seed
    model, mtp, ids, cfg = res["model"], res["mtp"], res["ids"], res["cfg"]
    B, T = ids.shape
    with torch.no_grad():
        h = res["ref"]["hidden_states.%d" % cfg.num_hidden_layers]
        for k, m in enumerate(mtp, start=1):
            # HF MtpLayer (generic), positions shifted (i+k), post_norm = shared_head.norm
            ml = MtpLayer(cfg, DeepseekV3DecoderLayer, DeepseekV3RMSNorm, m.layer_idx, use_post_norm=True).eval()
            ml.enorm.weight.copy_(m.enorm.weight); ml.hnorm.weight.copy_(m.hnorm.weight)
            ml.eh_proj.weight.copy_(m.eh_proj.weight); ml.post_norm.weight.copy_(m.head_norm.weight)
            ml.mtp_block.load_state_dict(m.block.state_dict())
            Tk = T - k
            pos = (torch.arange(Tk) + k).unsqueeze(0)
            e = model.model.embed_tokens(ids[:, k:])
            mask = create_causal_mask(config=cfg, inputs_embeds=e, attention_mask=None, cache=None, position_ids=pos)
            assert mask is not None
            hk = ml(e, h[:, :Tk], position_embeddings=model.model.rotary_emb(e, pos), attention_mask=mask, position_ids=pos, cache=None)
            lg = model.lm_head(hk)
            ref = res["ref"]["mtp_logits.%d" % k]
            print(name, k, "max|HF MtpLayer - ref| =", (lg - ref).abs().max().item(), "rel", ((lg-ref).abs().max()/ref.abs().max()).item())
            # next module input: HF feeds post-normed output; the agreed spec feeds pre-norm -> recompute pre-norm
            h = ml.mtp_block(ml.eh_proj(torch.cat([ml.enorm(e), ml.hnorm(h[:, :Tk])], -1)), attention_mask=mask, position_embeddings=model.model.rotary_emb(e, pos), position_ids=pos)
    # aux losses: loop implementation in float64
    if name == "v3":
        import aux_losses
        rec = fm.RouterRecorder(fm.routers_by_layer(model), cfg)
        with torch.no_grad(): model(ids)
        E, K, G, M = 8, 3, cfg.n_group, cfg.topk_group
        bal = 0.0; exp=dev=comm=0.0
        for l, z, idx in rec.calls:
            z = z.double().view(B, T, E); idx = idx.view(B, T, K)
            for b in range(B):
                s = torch.sigmoid(z[b]); sp = s / s.sum(-1, keepdim=True)
                f = [0.0]*E; fd=[0.0]*G
                for t in range(T):
                    for j in idx[b, t].tolist(): f[j] += E/(K*T)
                    for d in set(j // (E//G) for j in idx[b,t].tolist()): fd[d] += G/(M*T)
                P = sp.mean(0).tolist()
                bal += 0.01 * sum(f[i]*P[i] for i in range(E)) / B
                exp += 0.01 * sum(f[i]*P[i] for i in range(E)) / B
                dev += 0.05 * sum((sum(f[d*2:d*2+2])/2) * sum(P[d*2:d*2+2]) for d in range(G)) / B
                comm += 0.02 * sum(fd[d] * sum(P[d*2:d*2+2]) for d in range(G)) / B
        print("seqaux loop", bal, "fixture", res["grads_seqaux"]["loss_bal"].item())
        print("v2aux loop", exp, dev, comm, "fixture", res["grads_v2aux"]["loss_expert"].item(), res["grads_v2aux"]["loss_device"].item(), res["grads_v2aux"]["loss_comm"].item())
