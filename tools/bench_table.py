#!/usr/bin/env python3
"""bench_table.py — the README's "Measured" table, written from bench/results/*.json (never by hand).

Reads whatever `make bench` left in bench/results/ (train_<B>x<T>.json, forward.json, generate.json,
tokenizer.json, kernels.json, pp.json, serve.json, prefix.json) and prints a Markdown table of dsv3 beside its peer (transformers,
tokenizers, tiktoken, llama.cpp) with the ratio, plus a
line with the machine's measured FMA peak and streaming bandwidth.  With --write README.md it replaces
the text between the markers <!-- measured:begin --> and <!-- measured:end --> in that file.

Usage: python3 tools/bench_table.py [--results bench/results] [--write README.md [--merge]]
"""
import argparse
import glob
import json
import os
import re
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def train_rows(res_dir):
    rows = []
    files = sorted(glob.glob(os.path.join(res_dir, "train_*x*.json")),  # small first, then base, ...
                   key=lambda p: (0 if re.match(r"train_\d", os.path.basename(p)) else 1, os.path.basename(p).split("_")[1],
                                  [int(x) for x in re.findall(r"(\d+)x(\d+)", p)[-1]]))
    if not files and os.path.exists(os.path.join(res_dir, "train.json")):
        files = [os.path.join(res_dir, "train.json")]
    for p in files:
        d = load(p)
        if not d or "dsv3" not in d:
            continue
        o = d["dsv3"]
        fl, peak = o.get("flops_per_step", 0), o.get("peak_flops", 0)
        B, T = d["batch"], d["seq"]
        cfg = "" if d.get("config", "small") == "small" else f"`{d['config']}`, "
        for key, prec, peer_key in (("dsv3", "fp32", "transformers"), ("dsv3_bf16", "bf16", "transformers_bf16"),
                                    ("dsv3_fp8", "fp8", None)):
            r = d.get(key)
            if not r:
                continue
            tps = B * T / r["mean_s"]
            gf = fl / r["mean_s"] / 1e9 if fl else 0
            mfu = f", {100 * gf * 1e9 / peak:.1f}% of the measured FP32 peak" if peak else ""
            peer = d.get(peer_key) if peer_key else None
            ptxt = f"transformers{' bf16 autocast' if prec == 'bf16' else ''} {peer['tokens_per_s']:.0f} tokens/s" \
                if peer else "no CPU peer" if prec == "fp8" else "-"
            rows.append((f"training step (fwd+bwd+clip+AdamW), {cfg}B={B} T={T}, {prec}",
                         f"{tps:.0f} tokens/s ({gf:.1f} GFLOP/s{mfu})", ptxt,
                         fmt_ratio(tps, peer["tokens_per_s"]) if peer else "-"))
        sh = d.get("phase_share")
        if sh:
            rows.append((f"step phases, {cfg}B={B} T={T}, fp32",
                         ", ".join(f"{k} {100 * v:.0f}%" for k, v in sh.items()), "", ""))
    return rows


def forward_rows(res_dir):
    d = load(os.path.join(res_dir, "forward.json"))
    if not d or "dsv3" not in d:
        return []
    o = d["dsv3"]
    tps = d["batch"] * d["seq"] / o["mean_s"]
    p = d.get("transformers")
    return [(f"prefill forward, B={d['batch']} T={d['seq']}, {d['threads']} threads",
             f"{tps:.0f} tokens/s ({o.get('gflops', 0):.1f} GFLOP/s)",
             f"transformers {p['tokens_per_s']:.0f} tokens/s" if p else "-",
             fmt_ratio(tps, p["tokens_per_s"]) if p else "-")]


def generate_rows(res_dir):
    d = load(os.path.join(res_dir, "generate.json"))
    rows = []
    for r in (d or {}).get("rows", []):
        a, c = r["dsv3"], r.get("transformers")
        pre = a["prompt_tokens"] / a["prefill_s"] if a.get("prefill_s") else 0
        rows.append((f"greedy decode, batch 1, {r['threads']} thread{'s' if r['threads'] > 1 else ''}",
                     f"{a['tokens_per_s']:.0f} tokens/s (prefill of {a['prompt_tokens']}: {pre:.0f} tokens/s)",
                     f"transformers {c['tokens_per_s']:.0f} tokens/s" if c else "-",
                     fmt_ratio(a["tokens_per_s"], c["tokens_per_s"]) if c else "-"))
        q = r.get("llamacpp")
        if q:
            ths = f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}"
            rows.append((f"greedy decode, batch 1, {ths}, vs llama.cpp (F32 GGUF)", f"{a['tokens_per_s']:.0f} tokens/s",
                         f"llama.cpp {q['tokens_per_s']:.0f} tokens/s", fmt_ratio(a["tokens_per_s"], q["tokens_per_s"])))
            rows.append((f"prefill of {a['prompt_tokens']} tokens, {ths}, vs llama.cpp (F32 GGUF)", f"{pre:.0f} tokens/s",
                         f"llama.cpp {q['prefill_tokens_per_s']:.0f} tokens/s", fmt_ratio(pre, q["prefill_tokens_per_s"])))
    b = (d or {}).get("batched")
    if b:
        a, c = b["dsv3"], b.get("transformers")
        rows.append((f"greedy decode, batch {a['batch']}, {a['threads']} threads", f"{a['tokens_per_s']:.0f} tokens/s",
                     f"transformers {c['tokens_per_s']:.0f} tokens/s" if c else "-",
                     fmt_ratio(a["tokens_per_s"], c["tokens_per_s"]) if c else "-"))
    return rows


def serve_rows(res_dir):
    d = load(os.path.join(res_dir, "serve.json"))
    rows = []
    for r in (d or {}).get("rows", []):
        a, c = r["dsv3"], r.get("transformers")
        if a.get("impl", "dsv3-serve") != "dsv3-serve":  # a peer's row (another server) is not dsv3's
            continue
        rows.append((f"serve, {d.get('config', 'small')} preset, concurrency {r['concurrency']}",
                     f"{a['tokens_per_s']:.0f} tokens/s, first token {1000 * a['ttft_s']:.0f} ms",
                     f"transformers {c['tokens_per_s']:.0f} tokens/s, first token {1000 * c['ttft_s']:.0f} ms" if c else "-",
                     fmt_ratio(a["tokens_per_s"], c["tokens_per_s"]) if c else "-"))
        x = r.get("llama_cpp")
        if x:
            rows.append((f"serve, {d.get('config', 'small')} preset, concurrency {r['concurrency']}",
                         f"{a['tokens_per_s']:.0f} tokens/s, first token {1000 * a['ttft_s']:.0f} ms",
                         f"llama-server {x['tokens_per_s']:.0f} tokens/s, first token {1000 * x['ttft_s']:.0f} ms",
                         fmt_ratio(a["tokens_per_s"], x["tokens_per_s"])))
    return rows


def prefix_rows(res_dir):
    d = load(os.path.join(res_dir, "prefix.json"))
    by = {(r["impl"], r["workload"]): r for r in (d or {}).get("rows", [])}
    what = {"turns": "serve, small preset, prefix cache: turns 2-6 of a conversation (1000+ tokens cached)",
            "shared": "serve, small preset, prefix cache: 8 prompts sharing a 1000-token prefix",
            "burst": "serve, small preset, prefix cache: 8 prompts sharing a 1000-token prefix, arriving together"}
    rows = []
    for w, label in what.items():
        a, x = by.get(("dsv3", w)), by.get(("llama-server", w))
        if not a or not x:
            continue
        rows.append((label, f"first token {1000 * a['ttft_s']:.0f} ms",
                     f"llama-server (cache_prompt) first token {1000 * x['ttft_s']:.0f} ms",
                     fmt_ratio(x["ttft_s"], a["ttft_s"])))
    return rows


def tokenizer_rows(res_dir):
    d = load(os.path.join(res_dir, "tokenizer.json"))
    rows = []
    for r in (d or {}).get("encode", []):
        if r.get("threads") != 1:
            continue
        for peer in ("tokenizers", "tiktoken"):
            if peer + "_mb_s" in r and (r["tokenizer"] != "gpt2" or peer == "tiktoken"):
                rows.append((f"{r['tokenizer']} tokenizer encode, 1 thread", f"{r['dsv3_mb_s']:.1f} MB/s",
                             f"{peer} {r[peer + '_mb_s']:.1f} MB/s", fmt_ratio(r["dsv3_mb_s"], r[peer + "_mb_s"])))
    t = (d or {}).get("train")
    if t and t.get("tokenizers_s"):
        rows.append((f"BPE training to {t['vocab'] // 1000}K on {t['mb']:.0f} MB", f"{t['dsv3_s']:.2f} s",
                     f"tokenizers BpeTrainer {t['tokenizers_s']:.1f} s", f"{t['tokenizers_s'] / t['dsv3_s']:.1f}x"))
    return rows


def pp_rows(res_dir):
    d = load(os.path.join(res_dir, "pp.json"))
    if not d or "p2_pp_tokens_per_s" not in d:
        return []
    return [(f"training over 2 processes, PP 2 (1F1B, M={d['micro_batches']}), small B={d['batch']} T={d['seq']}",
             f"{d['p2_pp_tokens_per_s']:.0f} tokens/s; bubble {d['pp_bubble']:.2f} measured, "
             f"{d['bubble_analytic']:.2f} analytic (1F1B), {d.get('pp_bubble_model', 0):.2f} "
             f"1F1B with the measured stage times",
             f"DP 2 {d['p2_dp_tokens_per_s']:.0f} tokens/s (1 process, 2 threads: {d['p1_2threads_tokens_per_s']:.0f})",
             fmt_ratio(d["p2_pp_tokens_per_s"], d["p2_dp_tokens_per_s"]))]


def machine_line(res_dir):
    k = load(os.path.join(res_dir, "kernels.json"))
    if not k:
        return ""
    avx2 = f" (AVX2 path {k['fma_peak_avx2_gflops']:.0f})" if "fma_peak_avx2_gflops" in k else ""
    return (f"Machine: {k['threads']} threads, {k['isa']} kernels; measured FP32 FMA peak {k['fma_peak_gflops']:.0f} "
            f"GFLOP/s{avx2}, streaming triad {k['stream_gbps']:.1f} GB/s (bench/results/kernels.json).")


def table(res_dir):
    rows = forward_rows(res_dir) + train_rows(res_dir) + generate_rows(res_dir) + serve_rows(res_dir) + \
        prefix_rows(res_dir) + \
        tokenizer_rows(res_dir) + pp_rows(res_dir)
    out = ["| what | dsv3 | peer | ratio |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    m = machine_line(res_dir)
    text = "\n".join(out) + "\n"
    if m:
        text += "\n" + m + "\n"
    return text, len(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--write", metavar="README.md")
    ap.add_argument("--merge", action="store_true",
                    help="with --write: replace the rows these results give (same first cell), add the new ones, "
                         "keep the others and the machine line (results from one bench of a later run)")
    a = ap.parse_args()
    text, n = table(a.results)
    if n == 0:
        print(f"bench_table: no results in {a.results} (run make bench first)", file=sys.stderr)
        return 1
    if not a.write:
        sys.stdout.write(text)
        return 0
    src = open(a.write).read()
    b, e = "<!-- measured:begin -->", "<!-- measured:end -->"
    if b not in src or e not in src:
        print(f"bench_table: {a.write}: markers {b} ... {e} not found", file=sys.stderr)
        return 1
    i, j = src.index(b) + len(b), src.index(e)
    if a.merge:
        old = src[i:j].strip("\n").split("\n")
        new = [ln for ln in text.split("\n") if ln.startswith("| ") and not ln.startswith("| what |")]
        key = lambda ln: ln.split(" | ")[0]
        fresh = {}
        for ln in new:
            fresh.setdefault(key(ln), []).append(ln)
        out, done = [], set()
        for ln in old:
            k = key(ln)
            if ln.startswith("| ") and k in fresh:
                if k not in done:
                    out += fresh[k]
                    done.add(k)
                continue
            out.append(ln)
        last = max(n for n, ln in enumerate(out) if ln.startswith("|"))
        out[last + 1:last + 1] = [ln for k, lns in fresh.items() if k not in done for ln in lns]
        text = "\n".join(out) + "\n"
    open(a.write, "w").write(src[:i] + "\n" + text + src[j:])
    print(f"bench_table: {a.write}: {n} rows written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
