#!/usr/bin/env python3
"""make_sampling_fixtures.py: oracle fixtures for the sampler's penalties, logit bias and min-p
(tests/test_sampling_penalties.c).

The model is tests/fixtures/model/v3 (a tiny random DeepseekV3ForCausalLM, FP32, vocab 256),
loaded by transformers. Writes tests/fixtures/sampling/penalties.safetensors:

- prompt (P,): the first 8 ids of the v3 fixture's ids.txt;
- rep_ids (P+N,): transformers' generate, greedy, repetition_penalty=1.5
  (RepetitionPenaltyLogitsProcessor over prompt and output);
- pen_ids (P+N,): greedy through transformers' generate with one LogitsProcessor written here
  from vLLM's documented order: logit_bias added, then the repetition penalty (prompt and output
  tokens: a positive logit divided by it, another multiplied), then frequency_penalty x count and
  presence_penalty x (count > 0) subtracted for the output tokens (OpenAI's formula);
  the parameters are in the file's metadata;
- minp_logits (V,): the model's last-position logits for the prompt; minp_probs (C, V): for each
  case of minp_cases (C, 4: temperature, top_k, top_p, min_p) transformers' warpers in generate's
  order (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper), then a
  softmax;
- stop_ids (P+n,), minlen_ids (P+m,): transformers' greedy generate with eos_token_id = [1, X, Y]
  without and with min_new_tokens=MIN_NEW (MinNewTokensLengthLogitsProcessor: the stop ids'
  logits -inf until MIN_NEW new tokens).  X: the first token of the plain greedy run, from the
  third on, that did not come before it; the first run ends there.  Y: a token of the run with X
  held back, past MIN_NEW, that did not come before it; the second run ends there.  stop_cfg (3,):
  X, Y, MIN_NEW.

Every greedy step's top-2 margin of the processed scores is above 1e-4, and no min-p case has a
probability within 1e-4 (relative) of its threshold, so float reassociation cannot flip a choice.

    python3 tools/make_sampling_fixtures.py        # torch + transformers (pip)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "fixtures", "model", "v3")
OUT = os.path.join(ROOT, "tests", "fixtures", "sampling")
N_NEW = 24
MIN_MARGIN = 1e-4

PEN = {"logit_bias": {"7": 2.5, "105": -100.0, "200": 1.25}, "repetition_penalty": 1.3,
       "presence_penalty": 0.4, "frequency_penalty": 0.6}
MINP_CASES = [(1.0, 0, 1.0, 0.1), (0.7, 0, 1.0, 0.05), (1.3, 40, 1.0, 0.2), (1.0, 0, 0.9, 0.1),
              (2.0, 0, 1.0, 0.5), (0.9, 60, 0.95, 0.02), (1.0, 0, 1.0, 1.0)]


class VllmPenalties:
    """logit_bias, repetition, frequency and presence penalties in vLLM's order (an oracle written
    from vLLM's sampler: apply_logits_processors, then apply_penalties)."""

    def __init__(self, prompt_len, p):
        self.P = prompt_len
        self.p = p

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for k, v in self.p["logit_bias"].items():
            scores[:, int(k)] += v
        r = self.p["repetition_penalty"]
        for b in range(scores.shape[0]):
            seen = torch.zeros(scores.shape[1], dtype=torch.bool)
            seen[input_ids[b]] = True
            s = scores[b]
            s[seen & (s > 0)] /= r
            s[seen & (s <= 0)] *= r
            counts = torch.bincount(input_ids[b, self.P:], minlength=scores.shape[1]).to(s.dtype)
            s -= self.p["frequency_penalty"] * counts
            s -= self.p["presence_penalty"] * (counts > 0).to(s.dtype)
        return scores


def greedy(model, prompt, stop=None, min_new=N_NEW, **kw):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_NEW, min_new_tokens=min_new,
                             do_sample=False, use_cache=True, eos_token_id=stop, pad_token_id=0,
                             output_scores=True, return_dict_in_generate=True, **kw)
    scores = torch.stack(out.scores, 1)[0]
    top2 = scores.topk(2, dim=-1).values
    m = (top2[:, 0] - top2[:, 1]).min().item()
    if m <= MIN_MARGIN:
        sys.exit(f"greedy margin {m:.3g} too small for a fixture ({kw})")
    return out.sequences[0].to(torch.int64).contiguous(), m


def minp_probs(logits, T, k, p, mp):
    from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)
    s = logits[None].clone()
    ids = torch.zeros((1, 1), dtype=torch.long)
    s = TemperatureLogitsWarper(T)(ids, s)
    if k > 0:
        s = TopKLogitsWarper(k)(ids, s)
    if p < 1:
        s = TopPLogitsWarper(p)(ids, s)
    # the threshold the warper uses, for the margin check
    pr = torch.softmax(s, -1)
    thr = mp * pr.max().item()
    close = ((pr - thr).abs() <= 1e-4 * thr) & (pr > 0) & (pr < pr.max())  # the top token always stays
    if close.any():
        sys.exit(f"min-p case {(T, k, p, mp)}: a probability within 1e-4 of the threshold")
    s = MinPLogitsWarper(mp)(ids, s)
    return torch.softmax(s, -1)[0]


def main():
    import transformers
    from transformers import AutoModelForCausalLM, LogitsProcessorList
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with open(os.path.join(MODEL, "ids.txt")) as f:
        prompt = [int(x) for x in f.read().split()[:8]]
    rep_ids, m1 = greedy(model, prompt, repetition_penalty=1.5)
    pen_ids, m2 = greedy(model, prompt, logits_processor=LogitsProcessorList([VllmPenalties(len(prompt), PEN)]))
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].float()
    probs = torch.stack([minp_probs(logits, *c) for c in MINP_CASES])
    plain = greedy(model, prompt)[0][len(prompt):].tolist()
    k = next(i for i in range(2, N_NEW) if plain[i] not in plain[:i] and plain[i] != 1)
    X, MIN_NEW = plain[k], k + 4
    held = greedy(model, prompt, stop=[1, X], min_new=MIN_NEW)[0][len(prompt):].tolist()
    j = next(i for i in range(MIN_NEW, N_NEW) if held[i] not in held[:i] and held[i] not in plain[:k + 1])
    Y = held[j]
    stop_ids, m3 = greedy(model, prompt, stop=[1, X, Y], min_new=0)
    minlen_ids, m4 = greedy(model, prompt, stop=[1, X, Y], min_new=MIN_NEW)
    assert stop_ids[-1].item() == X and len(stop_ids) == len(prompt) + k + 1, stop_ids
    assert minlen_ids[-1].item() == Y and len(minlen_ids) == len(prompt) + j + 1, minlen_ids
    os.makedirs(OUT, exist_ok=True)
    meta = {"penalties": json.dumps(PEN), "rep_ids_repetition_penalty": "1.5",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "min_margin": f"{min(m1, m2, m3, m4):.4g}"}
    save_file({"prompt": torch.tensor(prompt, dtype=torch.int64), "rep_ids": rep_ids, "pen_ids": pen_ids,
               "minp_logits": logits.contiguous(), "minp_probs": probs.float().contiguous(),
               "minp_cases": torch.tensor(MINP_CASES, dtype=torch.float64), "stop_ids": stop_ids,
               "minlen_ids": minlen_ids, "stop_cfg": torch.tensor([X, Y, MIN_NEW], dtype=torch.int64)},
              os.path.join(OUT, "penalties.safetensors"), metadata=meta)
    print(f"wrote {OUT}/penalties.safetensors (greedy margins {m1:.3g}, {m2:.3g})")
    print("rep_ids", rep_ids.tolist())
    print("pen_ids", pen_ids.tolist())
    print("stop X", X, "Y", Y, "min_new", MIN_NEW, "stop_ids", stop_ids.tolist(), "minlen_ids", minlen_ids.tolist())


if __name__ == "__main__":
    main()
