#!/usr/bin/env python3
"""make_folder_fixtures.py — tests/fixtures/model/nomtp: a model folder exactly as transformers'
save_pretrained writes it for DeepseekV3ForCausalLM with its default num_nextn_predict_layers (1),
which holds no MTP weights, plus transformers' greedy generation on it (the oracle of
tests/test_folders.c):

  config.json, generation_config.json, model.safetensors   save_pretrained's output, untouched
  ids.txt                the prompt (for dsv3 forward / tools/check_hf_load.py)
  reference.safetensors
    prompt_ids  (1, P)   the prompt
    logits      (1, P, V) transformers' logits of the reloaded folder on the prompt
    free_ids    (1, N)   greedy continuation with eos_token_id=None (min_new_tokens = N)
    eos_ids     (1, K)   greedy continuation of the reloaded folder with its own generation_config:
                         it stops at the EOS (the K-th token), which was chosen as a token the free
                         run emits at step >= 5 and not before; only generation_config.json names
                         it (config.json keeps eos_token_id 1, which the free run never emits)

The model is the `v3` fixture configuration (tools/fixture_models.py) without the MTP keyword, so
the transformers default applies.  Usage: python3 tools/make_folder_fixtures.py [--out DIR]
"""
import argparse
import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

import fixture_models as fm

P, N = 8, 20


def greedy(model, ids, **kw):
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, use_cache=True,
                             output_logits=True, return_dict_in_generate=True, **kw)
    lg = torch.stack(out.logits, 1)
    top2 = lg.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    assert margin > fm.MIN_MARGIN, f"greedy argmax margin {margin:.3g}"
    return out.sequences[:, ids.shape[1]:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "model", "nomtp"))
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    _, kw, seed = fm.CONFIGS["v3"]
    kw = dict(kw)
    kw.pop("num_nextn_predict_layers")
    rope, theta = kw.pop("rope"), kw.pop("rope_theta")
    kw["rope_parameters"] = dict(rope, rope_theta=theta)
    cfg = DeepseekV3Config(**kw, bos_token_id=0, eos_token_id=1)
    assert cfg.num_nextn_predict_layers == 1, cfg.num_nextn_predict_layers
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DeepseekV3ForCausalLM(cfg).float().eval()
    fm.init_module(model, gen)
    ids = torch.randint(2, cfg.vocab_size, (1, P), generator=gen)
    free = greedy(model, ids, max_new_tokens=N, min_new_tokens=N, eos_token_id=None, pad_token_id=0)
    seq = free[0].tolist()
    k = next(i for i in range(4, N) if seq[i] not in seq[:i] and seq[i] not in (0, 1))
    eos = seq[k]
    # config.json keeps eos_token_id 1 (never emitted): the stop comes from generation_config.json
    assert 1 not in seq
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = 0
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out)
    names = load_file(os.path.join(a.out, "model.safetensors")).keys()
    L = cfg.num_hidden_layers
    assert not any(n.startswith(f"model.layers.{L}.") for n in names), "MTP weights were saved"
    with open(os.path.join(a.out, "config.json")) as f:
        assert json.load(f).get("num_nextn_predict_layers") == 1
    back = AutoModelForCausalLM.from_pretrained(a.out).float().eval()
    stopped = greedy(back, ids, max_new_tokens=N)
    assert stopped[0].tolist() == seq[:k + 1], (stopped[0].tolist(), seq)
    with torch.no_grad():
        logits = back(ids).logits.float().contiguous()
    with open(os.path.join(a.out, "ids.txt"), "w") as f:
        f.write(" ".join(map(str, ids[0].tolist())) + "\n")
    save_file({"prompt_ids": ids.to(torch.int64).contiguous(), "free_ids": free.to(torch.int64).contiguous(),
               "eos_ids": stopped.to(torch.int64).contiguous(), "logits": logits},
              os.path.join(a.out, "reference.safetensors"), metadata={"format": "pt"})
    import transformers
    with open(os.path.join(a.out, "fixture_info.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__, "seed": seed,
                   "eos_token_id": eos, "eos_step": k + 1}, f, indent=2)
        f.write("\n")
    print(f"{a.out}: free run {seq}, EOS {eos} at step {k + 1}")


if __name__ == "__main__":
    main()
