#!/usr/bin/env python3
"""llamacpp_convert.py — a dsv3 model folder to GGUF with llama.cpp's own converter.

Runs LLAMA_SRC/convert_hf_to_gguf.py (DeepseekV3ForCausalLM -> llama.cpp's `deepseek2` architecture,
MTP layers dropped) on MODEL_DIR.  The converter identifies a BPE tokenizer's pre-tokenizer by hashing
the ids of a fixed text, so a tokenizer trained by `dsv3 tokenizer train` (its own merges) is never in
its list.  When the hash is unknown and the folder's tokenizer.json has exactly DeepSeek-V3's
pre-tokenizer chain (`--pretokenizer deepseek-v3`, compared by the sha256 of its canonical JSON),
the pre-tokenizer is declared "deepseek-v3" (llama.cpp implements that regex chain); any other unknown
tokenizer still fails as the converter does.  The model's weights are written as F32 by default.

Usage: python3 tools/llamacpp_convert.py LLAMA_SRC MODEL_DIR OUT.gguf [--outtype f32|bf16|f16|q8_0]
"""
import hashlib
import json
import os
import runpy
import sys

# sha256 of json.dumps(pre_tokenizer, sort_keys=True, ensure_ascii=False) of DeepSeek-V3's tokenizer.json
DEEPSEEK_V3_PRETOK_SHA256 = "eb5c348de6004a90b41ce5f28e968a9f97df0b552cff4086596d610a5e8d68da"


def pretok_sha(model_dir):
    try:
        with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
            pre = json.load(f).get("pre_tokenizer")
    except (OSError, ValueError):
        return None
    return hashlib.sha256(json.dumps(pre, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def main():
    args = sys.argv[1:]
    outtype = "f32"
    if "--outtype" in args:
        i = args.index("--outtype")
        if i + 1 >= len(args):
            print("llamacpp_convert: --outtype needs a value", file=sys.stderr)
            return 2
        outtype = args[i + 1]
        del args[i:i + 2]
    if len(args) != 3:
        print(__doc__.strip().split("\n")[-1], file=sys.stderr)
        return 2
    src, model_dir, out = args
    conv = os.path.join(src, "convert_hf_to_gguf.py")
    if not os.path.isfile(conv):
        print(f"llamacpp_convert: {conv}: no such file (LLAMA_SRC is llama.cpp's source tree)", file=sys.stderr)
        return 2
    if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
        print(f"llamacpp_convert: {model_dir}: no tokenizer.json (the converter needs one)", file=sys.stderr)
        return 2
    sys.path.insert(0, src)
    sys.path.insert(1, os.path.join(src, "gguf-py"))
    import conversion.base as base  # llama.cpp's converter package

    orig = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return orig(self, tokenizer)
        except NotImplementedError:
            if pretok_sha(model_dir) != DEEPSEEK_V3_PRETOK_SHA256:
                raise
            print("llamacpp_convert: tokenizer hash unknown to llama.cpp; its pre-tokenizer is DeepSeek-V3's "
                  "chain, so tokenizer.ggml.pre = deepseek-v3", file=sys.stderr)
            return "deepseek-v3"

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [conv, model_dir, "--outfile", out, "--outtype", outtype]
    runpy.run_path(conv, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
