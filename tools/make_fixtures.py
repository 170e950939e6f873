#!/usr/bin/env python3
"""make_fixtures.py — regenerate the dsv3 model parity fixtures with PyTorch + transformers.

For each configuration in tools/fixture_models.py (v3, v2lite, v2group, norope) it builds a tiny random
DeepSeek model in FP32 with eager attention, and writes tests/fixtures/model/<name>/:
  config.json, generation_config.json, model.safetensors (per-expert HF names + MTP layers),
  ids.txt, reference.safetensors, grads.safetensors, generate.safetensors, fixture_info.json
and for v3 also grads_seqaux.safetensors, grads_v2aux.safetensors, grads_mtp.safetensors,
adamw.safetensors (v2group: grads_v2aux; v2lite: grads_ignore; norope: grads_mtp).  The format is documented in tests/fixtures/model/README.md.

Usage: python3 tools/make_fixtures.py [--out tests/fixtures/model] [--only NAME ...]
"""
import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import aux_losses  # noqa: E402
import fixture_models as fm  # noqa: E402
from mtp_reference import mtp_forward, mtp_loss  # noqa: E402

SEQAUX_ALPHA = 0.01
V2AUX = (0.01, 0.05, 0.02)  # alpha1 expert, alpha2 device, alpha3 communication
MTP_LAMBDA = 0.3
ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
ADAMW_STEPS = 3
CLIP = 1.0
MAX_TRIES = 40
GEN_TOKENS = 8


class NearTie(Exception):
    pass


def grads_dict(model, prefix="grad."):
    out = {}
    for n, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        for dn, dg in fm.expert_grads_per_expert(n, g.detach()).items():
            out[prefix + dn] = dg.float().contiguous().clone()
    return out


def params_dict(model, prefix):
    out = {}
    for n, t in fm.block_state_per_expert(model).items():
        if n.startswith("model.rotary_emb") or n.endswith("e_score_correction_bias"):
            continue
        out[prefix + n] = t.detach().float().contiguous().clone()
    return out


def build(name, seed):
    """Build everything for one configuration and seed; raise NearTie if a routing decision is too close."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = fm.build_config(name)
    model = fm.model_class(cfg)(cfg).float().eval()
    fm.init_module(model, gen)
    L, D = cfg.num_hidden_layers, fm.mtp_depth(cfg)
    mtp = [fm.MTPModule(cfg, L + k - 1).float().eval() for k in range(1, D + 1)]
    for m in mtp:
        fm.init_module(m, gen)
    ids = torch.randint(0, cfg.vocab_size, (fm.B, fm.T), generator=gen)
    B, T = fm.B, fm.T
    moe_layers = [l for l in range(L) if fm.layer_is_moe(cfg, l)]
    rec = fm.RouterRecorder(fm.routers_by_layer(model, mtp), cfg)
    res = {"cfg": cfg, "model": model, "mtp": mtp, "ids": ids, "seed": seed}

    # ---- forward reference -------------------------------------------------------------------
    sub, sub_handles = fm.sublayer_outputs(model, mtp)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        h0 = out.hidden_states[-1]
        assert torch.equal(h0, model.model(ids).last_hidden_state), "hidden_states[-1] is not model.norm output"
        assert torch.equal(out.hidden_states[0], model.model.embed_tokens(ids)), "hidden_states[0] is not the embedding"
        mtp_logits, _ = mtp_forward(model, mtp, ids, h0)
    for h in sub_handles:
        h.remove()
    ref = {"logits": out.logits.float().contiguous()}
    for i, h in enumerate(out.hidden_states):
        ref[f"hidden_states.{i}"] = h.float().contiguous()
    for k, lg in enumerate(mtp_logits, start=1):
        ref[f"mtp_logits.{k}"] = lg.float().contiguous()
    for (l, z, idx), w in zip(rec.calls, rec.weights):
        Tl = idx.shape[0] // B
        order = idx.view(B, Tl, -1).argsort(-1)
        ref[f"routed_experts.{l}"] = idx.view(B, Tl, -1).gather(-1, order).to(torch.int64).contiguous()
        ref[f"routed_weights.{l}"] = w.view(B, Tl, -1).gather(-1, order).float().contiguous()
        ref[f"router_logits.{l}"] = z.view(B, Tl, -1).float().contiguous()
    ref.update(sub)
    res["ref"] = ref

    # ---- CE gradients (HF loss) -----------------------------------------------------------------
    model.zero_grad(set_to_none=True)
    loss = model(ids, labels=ids).loss
    loss.backward()
    g = {"loss": loss.detach().reshape(1).float()}
    g.update(grads_dict(model))
    res["grads"] = g

    res["generate"] = greedy(model, ids)
    if name == "v2lite":
        res["grads_ignore"] = ignore_grads(model, ids)
    if name == "norope":
        res["grads_mtp"] = mtp_grads(model, mtp, rec, ids)
    if name == "v3":
        res.update(extra_v3(model, mtp, rec, cfg, ids, moe_layers))
    elif name == "v2group":
        res["grads_v2aux"] = v2aux_grads(model, rec, cfg, ids, moe_layers, "softmax")

    rec.remove()
    if rec.min_margin <= fm.MIN_MARGIN:
        raise NearTie(f"{name} seed {seed}: routing margin {rec.min_margin:.3g} at layer {rec.where}")
    res["min_margin"] = rec.min_margin
    return res


def greedy(model, ids):
    """Greedy continuation of GEN_TOKENS tokens with HF's KV cache (incremental decode path)."""
    with torch.no_grad():
        # explicit all-ones mask: otherwise generate() may treat a token equal to pad_token_id as padding
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GEN_TOKENS,
                             min_new_tokens=GEN_TOKENS, do_sample=False, use_cache=True, eos_token_id=None,
                             pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    logits = torch.stack(out.logits, 1).float().contiguous()           # (B, N, V)
    top2 = logits.topk(2, dim=-1).values
    m = (top2[..., 0] - top2[..., 1]).min().item()
    if m <= fm.MIN_MARGIN:
        raise NearTie(f"greedy argmax margin {m:.3g}")
    return {"greedy_ids": out.sequences.to(torch.int64).contiguous(), "greedy_logits": logits}


def ignore_grads(model, ids):
    """CE with some targets ignored (label -100): HF's loss is the mean over the non-ignored targets."""
    labels = ids.clone()
    B, T = ids.shape
    for b in range(B):
        for t in range(T):
            if (t + b) % 4 == 0:
                labels[b, t] = -100
    model.zero_grad(set_to_none=True)
    loss = model(ids, labels=labels).loss
    loss.backward()
    g = {"labels": labels.contiguous(), "loss": loss.detach().reshape(1).float()}
    g.update(grads_dict(model))
    return g


def v2aux_grads(model, rec, cfg, ids, moe_layers, scoring):
    B, T = ids.shape
    model.zero_grad(set_to_none=True)
    rec.clear()
    ce = model(ids, labels=ids).loss
    exp, dev, comm = aux_losses.v2_aux_losses(rec.calls, cfg, B, T, *V2AUX, scoring, moe_layers)
    total = ce + exp + dev + comm
    total.backward()
    g = {"loss": total.detach().reshape(1), "loss_ce": ce.detach().reshape(1),
         "loss_expert": exp.detach().reshape(1), "loss_device": dev.detach().reshape(1),
         "loss_comm": comm.detach().reshape(1)}
    g.update(grads_dict(model))
    return g


def mtp_grads(model, mtp, rec, ids):
    """CE + MTP loss (lambda / D) * sum_k CE_k; gradients of the main and the MTP parameters."""
    model.zero_grad(set_to_none=True)
    for m in mtp:
        m.zero_grad(set_to_none=True)
    rec.clear()
    out = model(ids, labels=ids, output_hidden_states=True)
    ce = out.loss
    lg, _ = mtp_forward(model, mtp, ids, out.hidden_states[-1])
    lm = mtp_loss(lg, ids, MTP_LAMBDA)
    (ce + lm).backward()
    g = {"loss": (ce + lm).detach().reshape(1), "loss_ce": ce.detach().reshape(1), "loss_mtp": lm.detach().reshape(1)}
    for k, x in enumerate(lg, start=1):
        tgt = ids[:, k + 1:]
        xk = x[:, : tgt.shape[1]]
        g[f"loss_mtp.{k}"] = torch.nn.functional.cross_entropy(
            xk.reshape(-1, xk.shape[-1]), tgt.reshape(-1)).detach().reshape(1)
    g.update(grads_dict(model))
    for m in mtp:
        for dn, (n, p) in zip(m.param_names_ds(), m.named_parameters()):
            gp = p.grad if p.grad is not None else torch.zeros_like(p)
            for dn2, dg in fm.expert_grads_per_expert(dn, gp.detach()).items():
                g["grad." + dn2] = dg.float().contiguous().clone()
    return g


def extra_v3(model, mtp, rec, cfg, ids, moe_layers):
    B, T = ids.shape
    res = {}
    # CE + complementary sequence-wise balance loss
    model.zero_grad(set_to_none=True)
    rec.clear()
    ce = model(ids, labels=ids).loss
    bal, per_layer = aux_losses.seq_balance_loss(rec.calls, cfg, B, T, SEQAUX_ALPHA, "sigmoid", moe_layers)
    total = ce + bal
    total.backward()
    g = {"loss": total.detach().reshape(1), "loss_ce": ce.detach().reshape(1), "loss_bal": bal.detach().reshape(1)}
    for l, v in per_layer.items():
        g[f"loss_bal.{l}"] = v.detach().reshape(1)
    g.update(grads_dict(model))
    res["grads_seqaux"] = g

    # CE + V2 auxiliary losses (on the sigmoid router: s' = normalised sigmoid affinities)
    res["grads_v2aux"] = v2aux_grads(model, rec, cfg, ids, moe_layers, "sigmoid")

    res["grads_mtp"] = mtp_grads(model, mtp, rec, ids)

    # AdamW: 3 steps on the same batch, global-norm clipping 1.0, decay only tensors with ndim >= 2.
    am = copy.deepcopy(model)
    decay = [p for p in am.parameters() if p.ndim >= 2]
    no_decay = [p for p in am.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"], foreach=False)
    a = {}
    for s in range(1, ADAMW_STEPS + 1):
        opt.zero_grad(set_to_none=True)
        loss = am(ids, labels=ids).loss
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(am.parameters(), CLIP)
        opt.step()
        a[f"loss.{s}"] = loss.detach().reshape(1)
        a[f"grad_norm.{s}"] = gn.detach().reshape(1).float()
        a.update(params_dict(am, f"step{s}."))
    # the deep copy kept the recorder's hooks, so steps 2 and 3 were margin-checked too
    res["adamw"] = a
    return res


def write_model_folder(res, d):
    model, mtp, cfg = res["model"], res["mtp"], res["cfg"]
    model.save_pretrained(d)
    st = os.path.join(d, "model.safetensors")
    tensors = {k: v.contiguous().clone() for k, v in load_file(st).items()}
    for k in tensors:
        assert "gate_up_proj" not in k and not k.endswith("experts.down_proj"), f"fused expert key {k} saved"
    for m in mtp:
        for n, t in m.named_tensors_ds(model):
            assert n not in tensors, n
            tensors[n] = t.detach().float().contiguous().clone()
    save_file(tensors, st, metadata={"format": "pt"})
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    if cfg.model_type == "deepseek_v2":
        # DeepseekV2Config has no such fields; written so that readers need not guess (HF ignores them).
        c.setdefault("scoring_func", "softmax")
        c.setdefault("num_nextn_predict_layers", 0)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")


def check_reload(res, d):
    """from_pretrained of the written folder gives bit-identical logits and identical tensors."""
    cls = fm.model_class(res["cfg"])
    m2 = cls.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        l2 = m2(res["ids"]).logits
    if not torch.equal(l2, res["ref"]["logits"]):
        raise SystemExit(f"{d}: reloaded logits differ (max {(l2 - res['ref']['logits']).abs().max().item()})")
    s1, s2 = res["model"].state_dict(), m2.state_dict()
    for k in s1:
        if not torch.equal(s1[k], s2[k]):
            raise SystemExit(f"{d}: reloaded tensor {k} differs")


def write_all(name, res, outdir):
    tmp = tempfile.mkdtemp(prefix=f"fixture-{name}-", dir=os.path.dirname(os.path.abspath(outdir)) or ".")
    try:
        write_model_folder(res, tmp)
        check_reload(res, tmp)
        with open(os.path.join(tmp, "ids.txt"), "w") as f:
            for row in res["ids"].tolist():
                f.write(" ".join(str(x) for x in row) + "\n")
        meta = {"format": "pt"}
        save_file(res["ref"], os.path.join(tmp, "reference.safetensors"), metadata=meta)
        save_file(res["grads"], os.path.join(tmp, "grads.safetensors"), metadata=meta)
        for extra in ("generate", "grads_ignore", "grads_seqaux", "grads_v2aux", "grads_mtp", "adamw"):
            if extra in res:
                save_file(res[extra], os.path.join(tmp, f"{extra}.safetensors"), metadata=meta)
        info = {"name": name, "seed": res["seed"], "min_routing_margin": res["min_margin"],
                "torch": torch.__version__, "transformers": transformers.__version__,
                "batch": fm.B, "seq": fm.T}
        with open(os.path.join(tmp, "fixture_info.json"), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        final = os.path.join(outdir, name)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "tests", "fixtures", "model"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for name in (args.only or list(fm.CONFIGS)):
        base = fm.CONFIGS[name][2]
        for attempt in range(MAX_TRIES):
            try:
                res = build(name, base + attempt)
                break
            except NearTie as e:
                print(f"near-tie, next seed: {e}", file=sys.stderr)
        else:
            raise SystemExit(f"{name}: no tie-free seed in {MAX_TRIES} tries")
        write_all(name, res, args.out)
        print(f"{name}: seed {res['seed']} (try {res['seed'] - base + 1}), min routing margin "
              f"{res['min_margin']:.3g}, loss {res['grads']['loss'].item():.6f}")


if __name__ == "__main__":
    main()
