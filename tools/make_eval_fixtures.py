#!/usr/bin/env python3
"""make_eval_fixtures.py: oracle fixtures for the dsv3 evaluation layer (tests/test_eval_parity.c).

Builds a tiny random DeepseekV3ForCausalLM (FP32, vocab 512) with a byte-level BPE
tokenizer trained by Hugging Face `tokenizers` on TinyShakespeare, saves it as a model
folder, and scores slices of PIQA, ARC-Easy, HellaSwag, LAMBADA and WikiText-2 with
lm-evaluation-harness itself (lm_eval.models.huggingface.HFLM, model type "hf"): its
loglikelihood / loglikelihood_rolling / generate_until requests and its metric functions.
Prompts are built exactly as lm-eval's task configs build them (see
docs/tokenizer-eval-data.md section 3); dataset rows come from ../shared/data (the
lm-eval datasets cannot be downloaded here), with --limit N = the first N rows.

Made with (lm-eval is not a project dependency; a venv is enough):
    python3 -m venv --system-site-packages /tmp/eval-venv && /tmp/eval-venv/bin/pip install lm-eval
    /tmp/eval-venv/bin/python tools/make_eval_fixtures.py
(lm-eval 0.4.13, transformers 5.24, tokenizers 0.23, torch 2.15 CPU; scores_dsv3tok.json:
lm-eval 0.4.13, transformers 5.25; lm-eval's HFLM also imports accelerate and psutil)

Writes tests/fixtures/eval/: model/ (config.json, model.safetensors, tokenizer.json, ...),
scores.json (per-example token ids, log-likelihoods, is_greedy, and the metrics per task),
greedy_mc.jsonl and greedy_gen.jsonl (hand-checkable tasks built from the model's own
greedy continuations: the model must get every answer right by construction),
text_cases.json (text rules through lm-eval's functions) and positional_oracle.json (whole
datasets through lm-eval's TemplateLM with an analytic byte model, see positional_oracle),
and scores_dsv3tok.json + dsv3tok/ (DeepSeek-V3's 129,280-token tokenizer, both BOS settings
of HFLM, see dsv3_vocab_fixtures; --dsv3tok-only makes just these).
"""
import argparse
import json
import math
import os
import random
import re
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("DS_SHARED", os.path.join(ROOT, "..", "shared"))
OUT = os.path.join(ROOT, "tests", "fixtures", "eval")
MAX_LENGTH = 128  # context window used by both sides; small so that truncation and rolling windows happen
EOT = "<|endoftext|>"


def build_tokenizer(model_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([os.path.join(SHARED, "data/tinyshakespeare/input.txt")], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT)
    fast.save_pretrained(model_dir)
    return fast


def build_model(model_dir, vocab):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    cfg = DeepseekV3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
        routed_scaling_factor=2.5, norm_topk_prob=True, q_lora_rank=32, kv_lora_rank=16,
        qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, head_dim=8,
        max_position_embeddings=MAX_LENGTH, bos_token_id=0, eos_token_id=0,
        initializer_range=0.2,  # sharper than 0.02, so choices are far from ties
        tie_word_embeddings=False, num_nextn_predict_layers=0)
    torch.manual_seed(1234)
    model = DeepseekV3ForCausalLM(cfg).to(torch.float32).eval()
    # the router's correction bias is a buffer initialised to zero; give it values so it is exercised
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.randn_like(buf) * 0.1)
    model.save_pretrained(model_dir, safe_serialization=True)
    return model


def wikitext_documents(raw):
    """Split wiki.test.raw into articles: a document starts at a top-level heading line
    ' = Title = ' and runs to the next one; text before the first heading is dropped.
    (Stands in for EleutherAI/wikitext_document_level, which cannot be downloaded here;
    dsv3's lm task with docs=wikitext splits the same way.)"""
    lines = raw.split("\n")
    docs, cur = [], None
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if last and line == "":
            break
        piece = line if last else line + "\n"
        if re.fullmatch(r" = [^=].* = ", line):
            if cur is not None:
                docs.append("".join(cur))
            cur = [piece]
        elif cur is not None:
            cur.append(piece)
    if cur is not None:
        docs.append("".join(cur))
    return docs


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for c in b:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def wikitext_digest(page):
    """sizes and FNV-1a 64 hashes of an article and of its detokenized text (the text itself stays in ../shared)"""
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer
    d = wikitext_detokenizer({"page": page}).encode("utf-8")
    return {"bytes": len(page.encode("utf-8")), "words": len(re.split(r"\s+", page)), "fnv1a64": fnv1a64(page.encode("utf-8")),
            "detok_bytes": len(d), "detok_fnv1a64": fnv1a64(d)}


def hellaswag_items(path, limit):
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    for k in range(limit):
        b = lines[6 * k: 6 * k + 6]
        out.append({"query": b[0], "gold": int(b[1]), "endings": b[2:6]})
    return out


def positional_oracle(out_path):
    """Whole-dataset check of dsv3's data handling (prompts, HellaSwag preprocess, pair encoding,
    left truncation, rolling and strided windows, metrics) against lm-eval's own TemplateLM code
    path, with a byte tokenizer and an analytic "positional" model that both sides compute
    exactly: the token t at position p of the (truncated) sequence has log-probability
    float32(-ln 256 - 0.01 * ((p + t) % 5)); it is greedy when t is the smallest id with
    (p + t) % 5 == 0.  tests/test_eval_oracle.c implements the same model in C."""
    from lm_eval.api.instance import Instance
    from lm_eval.api.model import TemplateLM
    from lm_eval.api import metrics as M
    from lm_eval import utils
    from lm_eval.tasks.hellaswag.utils import preprocess as hs_preprocess
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer, process_results as wt_results

    class PositionalLM(TemplateLM):
        def __init__(self, max_length, context_len=1):
            super().__init__()
            self.max_length, self.context_len = max_length, context_len

        @property
        def eot_token_id(self):
            return 0

        def tok_encode(self, string, add_special_tokens=None, **kw):
            return list(string.encode("utf-8"))

        def _loglikelihood_tokens(self, requests, **kw):
            out = []
            for _, ctx, cont in requests:
                seq = (ctx + cont)[-(self.max_length + 1):]
                base = len(seq) - len(cont)
                ll, greedy = 0.0, True
                for j, t in enumerate(cont):
                    p = base + j
                    ll += float(np.float32(-math.log(256.0) - 0.01 * ((p + t) % 5)))
                    greedy = greedy and t == (5 - p % 5) % 5
                out.append((ll, greedy))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            res = []
            for (string,) in [r.args for r in requests]:
                windows = list(map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=self.context_len)))
                res.append(sum(ll for ll, _ in self._loglikelihood_tokens([(None,) + w for w in windows])))
            return res

        def generate_until(self, requests, disable_tqdm=False):
            raise NotImplementedError

    icl = os.path.join(SHARED, "data/llm_foundry_icl")

    def mc(lm, docs):
        preds = ["", "", ""]
        acc = [[], [], []]
        for ctx, choices, gold in docs:
            res = lm.loglikelihood([Instance("loglikelihood", {}, (ctx, " " + c), 0) for c in choices], disable_tqdm=True)
            lls = np.array([r[0] for r in res])
            for k, norm in enumerate((None, [float(len(c)) for c in choices], [float(len(c.encode())) for c in choices])):
                pr = int(np.argmax(lls if norm is None else lls / np.array(norm)))
                preds[k] += str(pr)
                acc[k].append(1.0 if pr == gold else 0.0)
        return {"preds": preds[0], "preds_norm": preds[1], "preds_bytes": preds[2],
                "metrics": {k: {"value": M.mean(a), "stderr": M.mean_stderr(a)} for k, a in zip(("acc", "acc_norm", "acc_bytes"), acc)}}

    res = {"tool": "tools/make_eval_fixtures.py (positional_oracle)", "tasks": {}}
    lm = PositionalLM(1100)
    for name in ("piqa", "arc_easy"):
        rows = [json.loads(l) for l in open(os.path.join(icl, name + ".jsonl"), encoding="utf-8")]
        res["tasks"][name] = dict(max_length=1100, **mc(lm, [(r["query"].rstrip("\n") + "\nAnswer:", r["choices"], r["gold"]) for r in rows]))
    lines = open(os.path.join(SHARED, "data/hellaswag/hellaswag_val_full.txt"), encoding="utf-8").read().split("\n")
    items = [(hs_preprocess(lines[6 * k]), [hs_preprocess(e) for e in lines[6 * k + 2: 6 * k + 6]], int(lines[6 * k + 1]))
             for k in range(len(lines) // 6)]
    res["tasks"]["hellaswag"] = dict(max_length=1100, **mc(lm, items))
    lm = PositionalLM(256)
    rows = [json.loads(l) for l in open(os.path.join(icl, "lambada_openai.jsonl"), encoding="utf-8")]
    r = lm.loglikelihood([Instance("loglikelihood", {}, (x["context"], " " + x["continuation"]), 0) for x in rows], disable_tqdm=True)
    lls, gr = [a for a, _ in r], [1.0 if b else 0.0 for _, b in r]
    res["tasks"]["lambada"] = {"max_length": 256, "ll_sum": math.fsum(lls), "metrics": {
        "perplexity": {"value": M.perplexity(lls), "stderr": None}, "acc": {"value": M.mean(gr), "stderr": M.mean_stderr(gr)}}}
    raw = open(os.path.join(SHARED, "data/wikitext2/wiki.test.raw"), encoding="utf-8").read()
    pages = wikitext_documents(raw)
    for key, L, stride in (("wikitext2", 1100, 1100), ("wikitext2_stride", 256, 64)):
        lm = PositionalLM(L, context_len=L - stride + 1)
        rl = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (wikitext_detokenizer({"page": p}),), 0) for p in pages])
        per = [wt_results({"page": p}, (l,)) for p, l in zip(pages, rl)]
        res["tasks"][key] = {"max_length": L, "stride": stride, "doc_ll": rl, "metrics": {
            "word_perplexity": {"value": M.weighted_perplexity([d["word_perplexity"] for d in per]), "stderr": None},
            "byte_perplexity": {"value": M.weighted_perplexity([d["byte_perplexity"] for d in per]), "stderr": None},
            "bits_per_byte": {"value": M.bits_per_byte([d["bits_per_byte"] for d in per]), "stderr": None}}}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    for name, t in res["tasks"].items():
        print("positional %-16s %s" % (name, ", ".join("%s=%.6g" % (k, v["value"]) for k, v in t["metrics"].items())))


DSV3_TOK = os.path.join(SHARED, "data", "deepseek_v3_tokenizer")
DSV3_DIR = os.path.join(OUT, "dsv3tok")


def make_encode_pair(lm):
    """lm-eval's (context, continuation) split, with its empty-context rule (prefix token first)."""
    def encode_pair(ctx, cont):
        if ctx == "":
            c = lm.tok_encode(cont, add_special_tokens=False)
            return ([lm.prefix_token_id], c) if lm.prefix_token_id != c[0] else (c[:1], c[1:])
        return lm._encode_pair(ctx, cont)
    return encode_pair


def ll_task_record(rows, res, encode_pair):
    """A LAMBADA-style task: loglikelihood(context, " " + continuation); perplexity, acc = is_greedy."""
    from lm_eval.api import metrics as M
    lls, gr = [float(r[0]) for r in res], [1.0 if r[1] else 0.0 for r in res]
    return {
        "kind": "ll", "n": len(rows),
        "examples": [{"ids": list(map(list, encode_pair(r["context"], " " + r["continuation"]))), "ll": l, "greedy": bool(g)}
                     for r, l, g in zip(rows, lls, gr)],
        "metrics": {"perplexity": {"value": M.perplexity(lls), "stderr": None},
                    "acc": {"value": M.mean(gr), "stderr": M.mean_stderr(gr)}}}


def lm_task_record(rl, ntok, per):
    """A rolling-loglikelihood task (WikiText): per-page ll, tokens, words, bytes; lm-eval's aggregates."""
    from lm_eval.api import metrics as M
    return {
        "kind": "lm", "n": len(rl),
        "examples": [{"ll": float(l), "tokens": n, "words": d["word_perplexity"][1], "bytes": d["byte_perplexity"][1]}
                     for l, n, d in zip(rl, ntok, per)],
        "metrics": {"word_perplexity": {"value": M.weighted_perplexity([d["word_perplexity"] for d in per]), "stderr": None},
                    "byte_perplexity": {"value": M.weighted_perplexity([d["byte_perplexity"] for d in per]), "stderr": None},
                    "bits_per_byte": {"value": M.bits_per_byte([d["bits_per_byte"] for d in per]), "stderr": None},
                    "token_perplexity": {"value": math.exp(-sum(rl) / sum(ntok)), "stderr": None}}}


def dsv3_vocab_fixtures(limit, wikitext_docs):
    """The lm-eval oracle on a model with DeepSeek-V3's 129,280-token vocabulary and its
    tokenizer (../shared/data/deepseek_v3_tokenizer), in both BOS settings of lm-eval's HFLM:
    "default" (HFLM(pretrained=DIR): with transformers 5.x the tokenizer applies only
    tokenizer.json's post-processor, which here adds nothing, so no BOS although
    tokenizer_config.json says add_bos_token: true) and "add_bos" (HFLM(..., add_bos_token=True):
    every encoded context, pair and rolling document starts with BOS).  Tasks under lm-eval's
    names, on rows of ../shared/data and on tests/fixtures/eval/{arc_challenge,winogrande}.jsonl,
    with prompts and choices from lm-eval's own task functions (arc yaml templates, hellaswag
    preprocess, winogrande partial scoring, wikitext detokenizer).

    Writes tests/fixtures/eval/dsv3tok/{config.json,model.safetensors} (BF16, hidden size 8)
    and tests/fixtures/eval/scores_dsv3tok.json.  The tokenizer files are not copied: the
    test assembles the model folder from these and ../shared/data."""
    import shutil
    import tempfile
    import yaml
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
    from lm_eval.api.instance import Instance
    from lm_eval.api import metrics as M
    from lm_eval.models.huggingface import HFLM
    from lm_eval import utils as lm_utils
    import lm_eval
    import lm_eval.tasks as lm_tasks
    from lm_eval.tasks.hellaswag.utils import preprocess as hs_preprocess
    from lm_eval.tasks.winogrande import preprocess_winogrande as wg
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer, process_results as wt_results

    torch.set_num_threads(2)
    os.makedirs(DSV3_DIR, exist_ok=True)
    cfg = DeepseekV3Config(
        vocab_size=129280, hidden_size=8, intermediate_size=16, moe_intermediate_size=8,
        num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=2, num_key_value_heads=2,
        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
        routed_scaling_factor=2.5, norm_topk_prob=True, q_lora_rank=8, kv_lora_rank=8,
        qk_nope_head_dim=4, qk_rope_head_dim=4, v_head_dim=4, head_dim=4,
        max_position_embeddings=MAX_LENGTH, bos_token_id=0, eos_token_id=1,
        initializer_range=0.3, tie_word_embeddings=False, num_nextn_predict_layers=0)
    torch.manual_seed(4321)
    model = DeepseekV3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.randn_like(buf) * 0.1)
    model = model.to(torch.bfloat16)
    tmp = tempfile.mkdtemp(prefix="dsv3tok-")
    model.save_pretrained(tmp, safe_serialization=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tmp, f), os.path.join(DSV3_DIR, f))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(DSV3_TOK, f), os.path.join(tmp, f))

    arc_yaml = open(os.path.join(os.path.dirname(lm_tasks.__file__), "arc", "arc_easy.yaml"), encoding="utf-8").read()
    arc_cfg = yaml.safe_load("\n".join(l for l in arc_yaml.split("\n") if "!function" not in l))
    icl = os.path.join(SHARED, "data/llm_foundry_icl")

    def arc_docs(path):
        out = []
        for l in open(path, encoding="utf-8").read().split("\n")[:limit]:
            if not l.strip():
                continue
            r = json.loads(l)
            labels = [chr(65 + i) for i in range(len(r["choices"]))]
            doc = {"question": r["query"][len("Question: "):] if r["query"].startswith("Question: ") else r["query"],
                   "choices": {"text": r["choices"], "label": labels}, "answerKey": labels[r["gold"]]}
            ctx = lm_utils.apply_template(arc_cfg["doc_to_text"], doc)
            choices = r["choices"]  # doc_to_choice "{{choices.text}}"
            gold = int(lm_utils.apply_template(arc_cfg["doc_to_target"], doc))
            out.append(([(ctx, " " + c) for c in choices], choices, gold))
        return out

    settings = {}
    for key, add_bos in (("default", None), ("add_bos", True)):
        kw = {} if add_bos is None else {"add_bos_token": add_bos}
        lm = HFLM(pretrained=tmp, tokenizer=tmp, max_length=MAX_LENGTH, batch_size=1, device="cpu", dtype="float32", **kw)
        assert lm.prefix_token_id == 0
        probe = lm.tok_encode("Hello world")
        assert (probe[0] == 0) == (add_bos is True), probe

        encode_pair = make_encode_pair(lm)

        def mc(docs, norms=True):
            """docs: ([(context, continuation) per choice], [choice strings for the normalizers], gold)"""
            ex, acc, accn, accb = [], [], [], []
            for reqs, choices, gold in docs:
                res = lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)], disable_tqdm=True)
                lls = np.array([r[0] for r in res])
                pred = int(np.argmax(lls))
                pn = int(np.argmax(lls / np.array([float(len(c)) for c in choices])))
                pb = int(np.argmax(lls / np.array([float(len(c.encode("utf-8"))) for c in choices])))
                acc.append(1.0 if pred == gold else 0.0)
                accn.append(1.0 if pn == gold else 0.0)
                accb.append(1.0 if pb == gold else 0.0)
                s = np.sort(lls)[::-1]
                ex.append({"requests": [list(r) for r in reqs], "gold": gold,
                           "ids": [list(map(list, encode_pair(*r))) for r in reqs],
                           "ll": [float(r[0]) for r in res], "greedy": [bool(r[1]) for r in res],
                           "pred": pred, "pred_norm": pn, "pred_bytes": pb, "margin": float(s[0] - s[1])})
            met = {"acc": {"value": M.mean(acc), "stderr": M.mean_stderr(acc)}}
            if norms:
                met["acc_norm"] = {"value": M.mean(accn), "stderr": M.mean_stderr(accn)}
                met["acc_bytes"] = {"value": M.mean(accb), "stderr": M.mean_stderr(accb)}
            return {"kind": "mc", "n": len(docs), "examples": ex, "metrics": met}

        tasks = {}
        rows = [json.loads(l) for l in open(os.path.join(icl, "piqa.jsonl"), encoding="utf-8")][:limit]
        tasks["piqa"] = mc([([(r["query"].rstrip("\n") + "\nAnswer:", " " + c) for c in r["choices"]], r["choices"], r["gold"])
                            for r in rows])
        tasks["arc_easy"] = mc(arc_docs(os.path.join(icl, "arc_easy.jsonl")))
        tasks["arc_challenge"] = mc(arc_docs(os.path.join(OUT, "arc_challenge.jsonl")))
        items = hellaswag_items(os.path.join(SHARED, "data/hellaswag/hellaswag_val_full.txt"), limit)
        hs = []
        for it in items:
            ends = [hs_preprocess(e) for e in it["endings"]]
            hs.append(([(hs_preprocess(it["query"]), " " + e) for e in ends], ends, it["gold"]))
        tasks["hellaswag"] = mc(hs)
        # winogrande: lm-eval's partial scoring through its own doc_to_text / doc_to_choice / doc_to_target
        wdocs = [json.loads(l) for l in open(os.path.join(OUT, "winogrande.jsonl"), encoding="utf-8") if l.strip()][:limit]
        wt = []
        for d in wdocs:
            target = wg.doc_to_target(d)
            wt.append(([(c, " " + target) for c in wg.doc_to_choice(d)], [target, target], wg.doc_to_text(d)))
        tasks["winogrande"] = mc(wt, norms=False)
        # lambada_openai: loglikelihood(context, " " + last word); perplexity, acc = is_greedy
        rows = [json.loads(l) for l in open(os.path.join(icl, "lambada_openai.jsonl"), encoding="utf-8")][:limit]
        res = lm.loglikelihood([Instance("loglikelihood", {}, (r["context"], " " + r["continuation"]), i)
                                for i, r in enumerate(rows)], disable_tqdm=True)
        tasks["lambada_openai"] = ll_task_record(rows, res, encode_pair)
        # wikitext: rolling log-likelihood of the detokenized article
        raw = open(os.path.join(SHARED, "data/wikitext2/wiki.test.raw"), encoding="utf-8").read()
        pages = wikitext_documents(raw)[:wikitext_docs]
        rl = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (wikitext_detokenizer({"page": p}),), i)
                                       for i, p in enumerate(pages)], disable_tqdm=True)
        per = [wt_results({"page": p}, (l,)) for p, l in zip(pages, rl)]
        ntok = [len(lm.tok_encode(wikitext_detokenizer({"page": p}))) for p in pages]
        tasks["wikitext"] = lm_task_record(rl, ntok, per)
        settings[key] = {"hflm_args": kw, "first_ids_of_hello_world": probe, "tasks": tasks}
        for name, t in tasks.items():
            ms = ", ".join("%s=%.6g" % (k, v["value"]) for k, v in t["metrics"].items())
            margins = [e["margin"] for e in t["examples"] if e.get("margin") is not None]
            print("dsv3tok %-8s %-15s n=%-3d %s%s" % (key, name, t["n"], ms, " (min margin %.3g)" % min(margins) if margins else ""))
        del lm
    # how far the two settings are apart (the reason both are fixtures)
    d = [abs(a - b) for a, b in zip(settings["default"]["tasks"]["piqa"]["examples"][0]["ll"],
                                   settings["add_bos"]["tasks"]["piqa"]["examples"][0]["ll"])]
    print("dsv3tok: piqa example 0, |ll(default) - ll(add_bos)| per choice:", ["%.3f" % x for x in d])
    with open(os.path.join(OUT, "scores_dsv3tok.json"), "w", encoding="utf-8") as f:
        json.dump({"tool": "tools/make_eval_fixtures.py (dsv3_vocab_fixtures)",
                   "oracle": "lm-evaluation-harness %s HFLM" % lm_eval.__version__,
                   "max_length": MAX_LENGTH, "prefix_id": 0, "limit": limit, "wikitext_docs": wikitext_docs,
                   "settings": settings}, f, indent=1)
    shutil.rmtree(tmp)


def bos_cases(out_path):
    """lm-eval's HFLM.tok_encode (its own code, on a bare HFLM with only a tokenizer) for the
    tokenizer of tests/fixtures/eval/model under four post-processor / tokenizer_config.json
    variants, with add_bos_token unset and True, tokenizers loaded as HFLM loads them
    (AutoTokenizer.from_pretrained(DIR[, add_bos_token=True])).  tests/test_eval_batch.c
    rebuilds each variant and requires the same ids from the model binding."""
    import shutil
    import tempfile
    from transformers import AutoTokenizer
    from lm_eval.models.huggingface import HFLM
    src = os.path.join(OUT, "model")
    base = json.load(open(os.path.join(src, "tokenizer.json"), encoding="utf-8"))
    bos_tok = {"SpecialToken": {"id": EOT, "type_id": 0}}
    seq = {"Sequence": {"id": "A", "type_id": 0}}
    specials = {EOT: {"id": EOT, "ids": [0], "tokens": [EOT]}}
    variants = {
        "template_plain": ({"type": "TemplateProcessing", "single": [seq], "pair": [seq], "special_tokens": {}}, {}),
        "template_plain_config_add_bos": ({"type": "TemplateProcessing", "single": [seq], "pair": [seq], "special_tokens": {}},
                                          {"add_bos_token": True}),
        "bytelevel_config_add_bos": ({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
                                     {"add_bos_token": True}),
        "template_bos": ({"type": "TemplateProcessing", "single": [bos_tok, seq], "pair": [bos_tok, seq], "special_tokens": specials}, {}),
        "template_bos_eos": ({"type": "TemplateProcessing", "single": [bos_tok, seq, {"SpecialToken": {"id": EOT, "type_id": 0}}],
                              "pair": [bos_tok, seq], "special_tokens": specials}, {"add_bos_token": False}),
    }
    texts = ["Hello world", " leading space", EOT + "Hello", "a" + EOT]
    out = {"tool": "tools/make_eval_fixtures.py (bos_cases)", "texts": texts, "variants": {}}
    for name, (pp, cfg_extra) in variants.items():
        tmp = tempfile.mkdtemp(prefix="bos-")
        t = dict(base)
        t["post_processor"] = pp
        json.dump(t, open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8"))
        cfg = json.load(open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8"))
        cfg.update(cfg_extra)
        json.dump(cfg, open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8"))
        v = {"post_processor": pp, "tokenizer_config": cfg}
        for key, add_bos in (("default", None), ("add_bos", True)):
            lm = HFLM.__new__(HFLM)
            lm.tokenizer = AutoTokenizer.from_pretrained(tmp, **({} if add_bos is None else {"add_bos_token": True}))
            lm.add_bos_token = add_bos
            lm.custom_prefix_token_id = None
            v[key] = [HFLM.tok_encode(lm, x) for x in texts]
        out["variants"][name] = v
        shutil.rmtree(tmp)
        print("bos %-30s default %s  add_bos %s" % (name, v["default"][0], v["add_bos"][0]))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--wikitext-docs", type=int, default=2)
    ap.add_argument("--positional-only", action="store_true", help="only tests/fixtures/eval/positional_oracle.json")
    ap.add_argument("--dsv3tok-only", action="store_true",
                    help="only the DeepSeek-V3-vocabulary fixtures (tests/fixtures/eval/dsv3tok, scores_dsv3tok.json)")
    ap.add_argument("--dsv3tok-limit", type=int, default=8)
    args = ap.parse_args()
    if args.dsv3tok_only:
        bos_cases(os.path.join(OUT, "bos_cases.json"))
        dsv3_vocab_fixtures(args.dsv3tok_limit, 1)
        return
    positional_oracle(os.path.join(OUT, "positional_oracle.json"))
    if args.positional_only:
        return

    from lm_eval.api.instance import Instance
    from lm_eval.api import metrics as M
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks.hellaswag.utils import preprocess as hs_preprocess
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer, process_results as wt_results
    import lm_eval
    from lm_eval import utils as lm_utils

    torch.set_num_threads(2)
    model_dir = os.path.join(OUT, "model")
    os.makedirs(model_dir, exist_ok=True)
    tok = build_tokenizer(model_dir)
    model = build_model(model_dir, len(tok))

    lm = HFLM(pretrained=model_dir, tokenizer=model_dir, max_length=MAX_LENGTH, batch_size=1,
              device="cpu", dtype="float32")
    assert lm.prefix_token_id == 0

    def ll_requests(pairs):
        inst = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]
        return lm.loglikelihood(inst, disable_tqdm=True)

    # replay: what a correct dsv3 binding of this model would answer, request by request
    # (tokenizer.encode of every string dsv3 encodes, per-position log-probabilities and argmax
    # flags of every scored sequence from the model in transformers, greedy continuations and
    # decodes); tests/test_eval_parity.c drives the whole eval pipeline with it.
    replay = {"encode": {}, "seq": {}, "decode": {}, "generate": {}}

    def rec_encode(text):
        replay["encode"][text] = lm.tok_encode(text)

    def rec_seq(seq):
        seq = list(seq)
        if len(seq) < 2 or tuple(seq) in replay["seq"]:
            return
        with torch.no_grad():
            logits = model(torch.tensor([seq[:-1]])).logits[0].float()
        lsm = torch.log_softmax(logits, dim=-1)
        tgt = torch.tensor(seq[1:])
        lp = lsm.gather(1, tgt[:, None])[:, 0].tolist()
        gr = (logits.argmax(dim=-1) == tgt).tolist()
        replay["seq"][tuple(seq)] = (lp, gr)

    def rec_pair(ctx, cont):
        rec_encode(ctx.rstrip())
        rec_encode(ctx + cont)
        c, k = encode_pair(ctx, cont)
        rec_seq((c + k)[-(MAX_LENGTH + 1):])

    encode_pair = make_encode_pair(lm)

    def mc_task(docs, delim=" "):
        """docs: list of (context, [choice strings], gold); continuation = delim + choice (target_delimiter)."""
        examples, accs, norms, bytess = [], [], [], []
        for ctx, choices, gold in docs:
            for c in choices:
                rec_pair(ctx, delim + c)
            res = ll_requests([(ctx, delim + c) for c in choices])
            lls = np.array([r[0] for r in res])
            completion_len = np.array([float(len(c)) for c in choices])
            byte_len = np.array([float(len(c.encode("utf-8"))) for c in choices])
            pred, pn, pb = int(np.argmax(lls)), int(np.argmax(lls / completion_len)), int(np.argmax(lls / byte_len))
            accs.append(1.0 if pred == gold else 0.0)
            norms.append(1.0 if pn == gold else 0.0)
            bytess.append(1.0 if pb == gold else 0.0)
            s = np.sort(lls)[::-1]
            examples.append({
                "context": ctx, "choices": choices, "gold": gold,
                "ids": [list(map(list, encode_pair(ctx, delim + c))) for c in choices],
                "ll": [float(r[0]) for r in res], "greedy": [bool(r[1]) for r in res],
                "pred": pred, "pred_norm": pn, "pred_bytes": pb,
                "margin": float(s[0] - s[1]) if len(s) > 1 else None})
        met = {}
        for k, v in (("acc", accs), ("acc_norm", norms), ("acc_bytes", bytess)):
            met[k] = {"value": M.mean(v), "stderr": M.mean_stderr(v)}
        return {"kind": "mc", "n": len(docs), "examples": examples, "metrics": met}

    fix = {"tool": "tools/make_eval_fixtures.py", "oracle": "lm-evaluation-harness %s HFLM" % lm_eval.__version__,
           "max_length": MAX_LENGTH, "prefix_id": lm.prefix_token_id, "limit": args.limit, "tasks": {}}
    icl = os.path.join(SHARED, "data/llm_foundry_icl")

    # PIQA and ARC-Easy: lm-eval prompt "Question: {q}\nAnswer:", choices with target_delimiter " "
    for name in ("piqa", "arc_easy"):
        rows = [json.loads(l) for l in open(os.path.join(icl, name + ".jsonl"), encoding="utf-8")][:args.limit]
        docs = [(r["query"].rstrip("\n") + "\nAnswer:", r["choices"], r["gold"]) for r in rows]
        fix["tasks"][name] = mc_task(docs)

    # HellaSwag (6-line file): query and endings through lm-eval's preprocess
    items = hellaswag_items(os.path.join(SHARED, "data/hellaswag/hellaswag_val_full.txt"), args.limit)
    fix["tasks"]["hellaswag"] = mc_task([(hs_preprocess(it["query"]), [hs_preprocess(e) for e in it["endings"]], it["gold"]) for it in items])

    # LAMBADA (OpenAI): loglikelihood(context, " " + last word); perplexity and acc (= is_greedy)
    rows = [json.loads(l) for l in open(os.path.join(icl, "lambada_openai.jsonl"), encoding="utf-8")][:args.limit]
    for r in rows:
        rec_pair(r["context"], " " + r["continuation"])
    res = ll_requests([(r["context"], " " + r["continuation"]) for r in rows])
    fix["tasks"]["lambada"] = ll_task_record(rows, res, encode_pair)

    # WikiText-2: rolling log-likelihood of the detokenized article; words and bytes of the original page
    raw = open(os.path.join(SHARED, "data/wikitext2/wiki.test.raw"), encoding="utf-8").read()
    pages = wikitext_documents(raw)[:args.wikitext_docs]
    inst = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(wikitext_detokenizer({"page": p}),), idx=i)
            for i, p in enumerate(pages)]
    for p in pages:
        text = wikitext_detokenizer({"page": p})
        rec_encode(text)
        for a, b in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                token_list=lm.tok_encode(text), prefix_token=lm.prefix_token_id, max_seq_len=MAX_LENGTH, context_len=1)):
            rec_seq(a + b)
    rl = lm.loglikelihood_rolling(inst, disable_tqdm=True)
    per = [wt_results({"page": p}, (l,)) for p, l in zip(pages, rl)]
    ntok = [len(lm.tok_encode(wikitext_detokenizer({"page": p}))) for p in pages]
    fix["tasks"]["wikitext2"] = lm_task_record(rl, ntok, per)

    # Hand-checkable tasks from the model's own greedy continuations (TinyShakespeare lines as contexts)
    lines = [l for l in open(os.path.join(SHARED, "data/tinyshakespeare/input.txt"), encoding="utf-8").read().split("\n")
             if len(l) > 30][:200]
    rng = random.Random(7)
    greedy = []
    for ctx in lines:
        ids = lm.tok_encode(ctx)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=0)
        new = out[0, len(ids):].tolist()
        text = tok.decode(new)
        if 0 in new or len(text.strip()) < 3 or lm.tok_encode(ctx + text) != ids + new:
            continue
        greedy.append((ctx, text))
        if len(greedy) == 12:
            break
    mc_rows = []
    for i, (ctx, ans) in enumerate(greedy):
        others = [a for j, (_, a) in enumerate(greedy) if j != i]
        choices = rng.sample(others, 3)
        gold = rng.randrange(4)
        choices.insert(gold, ans)
        mc_rows.append({"query": ctx, "choices": choices, "gold": gold})
    with open(os.path.join(OUT, "greedy_mc.jsonl"), "w", encoding="utf-8") as f:
        for r in mc_rows:
            f.write(json.dumps(r) + "\n")
    t = mc_task([(r["query"], r["choices"], r["gold"]) for r in mc_rows], delim="")
    assert t["metrics"]["acc"]["value"] == 1.0, "greedy_mc: the model must pick its own greedy continuation"
    assert all(e["greedy"][e["gold"]] for e in t["examples"])
    fix["tasks"]["greedy_mc"] = t

    # generation: prompt -> greedy until "\n" (max 8 new tokens); the answer is the model's own output for
    # even rows and a wrong string for odd rows, so exact_match is 0.5 by construction
    inst = [Instance(request_type="generate_until", doc={}, idx=i,
                     arguments=(p, {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}))
            for i, p in enumerate(lines[:40])]
    # keep outputs that decode to whole characters (no U+FFFD from a cut multi-byte sequence)
    kept = [(r.arguments[0], o) for r, o in zip(inst, lm.generate_until(inst, disable_tqdm=True)) if "\ufffd" not in o][:8]
    prompts, outs = [k[0] for k in kept], [k[1] for k in kept]
    gen_rows = [{"prompt": p, "answer": o.strip() if i % 2 == 0 else "not this"} for i, (p, o) in enumerate(zip(prompts, outs))]
    em = [1.0 if o.strip() == r["answer"].strip() else 0.0 for o, r in zip(outs, gen_rows)]
    with open(os.path.join(OUT, "greedy_gen.jsonl"), "w", encoding="utf-8") as f:
        for r in gen_rows:
            f.write(json.dumps(r) + "\n")
    fix["tasks"]["greedy_gen"] = {
        "kind": "gen", "n": len(gen_rows), "until": ["\n"], "max_new": 8,
        "examples": [{"prompt_ids": lm.tok_encode(r["prompt"]), "generated": o, "exact_match": e} for r, o, e in zip(gen_rows, outs, em)],
        "metrics": {"exact_match": {"value": M.mean(em), "stderr": M.mean_stderr(em)}}}
    assert M.mean(em) == 0.5

    # text rules, evaluated by lm-eval's own functions (and Python's str/re semantics)
    samples = ["  Hello [title] World  [step] done  ", "a [b\nc] d [e] f", "Tab\tsep\u00a0nbsp  end \n",
               "", "   ", "x", " lead and trail ", "\u3000ideographic\u2003space",
               "He said \" hi there \" and ( a , b ) [ c ] { d } ' e ' ok", "= = Section = =\n Text @-@ like @,@ 1 @.@ 5 .\n",
               "The dogs ' bone N 's 5 \u00b0 C ; x : y ! z ? w , v", "( open only", "\" one quote", "Pay $1,234.50 now, or -7 later.",
               "no digits here", "1 2 3", "x-5y", "#### 42", "It is 3.", "caf\u00e9 na\u00efve \U0001F600 end"]
    num_re = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
    cases = []
    for t in samples:
        nums = [m.group(0) for m in num_re.finditer(t)]
        cases.append({"text": t, "chars": len(t), "rstrip_chars": len(t.rstrip()),
                      "words": len(re.split(r"\s+", t)), "hellaswag": hs_preprocess(t),
                      "wikitext": wikitext_detokenizer({"page": t}), "last_number": nums[-1] if nums else None})
    with open(os.path.join(OUT, "text_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"tool": "tools/make_eval_fixtures.py", "wikitext_docs": len(wikitext_documents(raw)),
                   "wikitext_first": [wikitext_digest(p) for p in wikitext_documents(raw)[:5]], "cases": cases}, f, indent=1)

    for r in gen_rows:
        ids = lm.tok_encode(r["prompt"])[-(MAX_LENGTH - 8):]
        rec_encode(r["prompt"])
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=0)
        new = out[0, len(ids):].tolist()
        if 0 in new:
            new = new[:new.index(0)]
        replay["generate"][tuple(ids)] = new
        for k in range(len(new) + 1):
            replay["decode"][tuple(new[:k])] = tok.decode(new[:k], skip_special_tokens=True)
    with open(os.path.join(OUT, "replay.json"), "w", encoding="utf-8") as f:
        json.dump({"tool": "tools/make_eval_fixtures.py", "max_length": MAX_LENGTH, "prefix_id": lm.prefix_token_id,
                   "encode": [[t, ids] for t, ids in replay["encode"].items()],
                   # per position i: log p(seq[i+1] | seq[:i+1]) as float32 in %.9g (exact), argmax flags as 0/1
                   "seq": [[list(k), " ".join("%.9g" % x for x in v[0]), "".join("1" if g else "0" for g in v[1])]
                           for k, v in replay["seq"].items()],
                   "decode": [[list(k), v] for k, v in replay["decode"].items()],
                   "generate": [[list(k), v] for k, v in replay["generate"].items()]}, f, separators=(",", ":"))

    with open(os.path.join(OUT, "scores.json"), "w", encoding="utf-8") as f:
        json.dump(fix, f, indent=1)
    for name, t in fix["tasks"].items():
        ms = ", ".join("%s=%.6g" % (k, v["value"]) for k, v in t["metrics"].items())
        margins = [e["margin"] for e in t["examples"] if e.get("margin") is not None]
        extra = " (min choice margin %.3g)" % min(margins) if margins else ""
        print("%-10s n=%-3d %s%s" % (name, t["n"], ms, extra))
    bos_cases(os.path.join(OUT, "bos_cases.json"))
    if os.path.exists(os.path.join(DSV3_TOK, "tokenizer.json")):
        dsv3_vocab_fixtures(args.dsv3tok_limit, 1)
    else:
        print("make_eval_fixtures: %s not found; scores_dsv3tok.json left as it is" % DSV3_TOK)


if __name__ == "__main__":
    main()
