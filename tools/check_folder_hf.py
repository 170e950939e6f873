#!/usr/bin/env python3
"""check_folder_hf.py — does a folder written by dsv3 work in transformers as in dsv3?

Usage: python3 tools/check_folder_hf.py DIR [--prompt-ids "1 2 3"] [--expect-ids "4 5 6"]
                                             [--text TEXT --text-ids "0 41 429"]

- With tokenizer files in DIR (a model folder, or a tokenizer folder alone): AutoTokenizer.from_pretrained(DIR) loads, and its bos/eos ids equal
  generation_config.json's (and config.json's); with --text, tokenizer(TEXT).input_ids (special
  tokens added as tokenizer.json / tokenizer_config.json say) equals --text-ids.
- With --prompt-ids: AutoModelForCausalLM.from_pretrained(DIR) greedy generate() with the folder's
  own generation_config (its EOS), max_new_tokens = len(expect) + 8, must return exactly --expect-ids
  (so it stops where dsv3 stopped, at the EOS when the last expected id is one).
Prints one line; exit 0 when everything matches, 1 when something differs, 2 on bad input.
"""
import argparse
import json
import os
import sys


def ids(s):
    return [int(x) for x in s.replace(",", " ").split()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--prompt-ids")
    ap.add_argument("--expect-ids")
    ap.add_argument("--text")
    ap.add_argument("--text-ids")
    a = ap.parse_args()
    if a.prompt_ids and not os.path.isfile(os.path.join(a.dir, "config.json")):
        print(f"check_folder_hf: {a.dir}: no config.json", file=sys.stderr)
        return 2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    bad = []
    cpath = os.path.join(a.dir, "config.json")
    cfg = json.load(open(cpath)) if os.path.isfile(cpath) else {}
    gpath = os.path.join(a.dir, "generation_config.json")
    gen = json.load(open(gpath)) if os.path.isfile(gpath) else {}
    notes = []
    if os.path.isfile(os.path.join(a.dir, "tokenizer.json")):
        tok = AutoTokenizer.from_pretrained(a.dir)
        for key, tid in (("bos_token_id", tok.bos_token_id), ("eos_token_id", tok.eos_token_id)):
            for name, src in (("generation_config.json", gen), ("config.json", cfg)):
                if key in src and src[key] != tid:
                    bad.append(f"tokenizer {key} {tid} != {name} {src[key]}")
        notes.append(f"tokenizer bos {tok.bos_token_id} eos {tok.eos_token_id}")
        if a.text is not None:
            got = tok(a.text)["input_ids"]
            if got != ids(a.text_ids):
                bad.append(f"tokenizer({a.text!r}) = {got}, dsv3 {ids(a.text_ids)}")
    if a.prompt_ids:
        torch.set_num_threads(1)
        model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32).eval()
        p = torch.tensor([ids(a.prompt_ids)])
        want = ids(a.expect_ids or "")
        with torch.no_grad():
            out = model.generate(p, attention_mask=torch.ones_like(p), do_sample=False,
                                 max_new_tokens=len(want) + 8)
        got = out[0, p.shape[1]:].tolist()
        if got != want:
            bad.append(f"generate: transformers {got}, dsv3 {want}")
        notes.append(f"generate: {len(got)} new tokens, eos {model.generation_config.eos_token_id}")
    if bad:
        print(f"check_folder_hf: {a.dir}: " + "; ".join(bad))
        return 1
    print(f"check_folder_hf: ok {a.dir}: " + "; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
