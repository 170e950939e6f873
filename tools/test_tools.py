#!/usr/bin/env python3
"""test_tools.py — tests of the Python tools in tools/ (needs torch + transformers; not part of `make test`).

check_hf_load.py: passes on every committed fixture (the fixture's own logits), fails (exit 1) on
perturbed logits, and answers bad input with one line and exit 2 (missing folder, bad ids, id out of
range, ragged ids, wrong logits shape, NaN logits, truncated safetensors, truncated model weights).
bench_*_torch.py: print one JSON line with the agreed keys; bad arguments exit non-zero.
The committed fixtures: per-expert key names, MTP copies equal the shared tensors, shapes as documented.
bench_table.py: generate.json rows with a llama.cpp peer give decode and prefill rows with the ratio.
llamacpp_peer.sh: without llama.cpp it skips (exit 3, one line saying why); bad usage exits 2; with
llama.cpp built, a `tiny` folder converted to GGUF gives dsv3's greedy tokens and log-probabilities, and
bench_serve_llamacpp.py measures llama-server on it.
Run: python3 tools/test_tools.py
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures", "model")
failures = []


def run(*args):
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def test_check_hf_load(tmp):
    tool = os.path.join(HERE, "check_hf_load.py")
    for n in sorted(os.listdir(FIX)):
        d = os.path.join(FIX, n)
        if os.path.isdir(d):
            rc, out = run(tool, d, os.path.join(d, "ids.txt"), os.path.join(d, "reference.safetensors"))
            check(rc == 0, f"check_hf_load passes on fixture {n}")
    d = os.path.join(FIX, "v3")
    ids = os.path.join(d, "ids.txt")
    ref = load_file(os.path.join(d, "reference.safetensors"))["logits"]

    def write(name, t):
        p = os.path.join(tmp, name)
        save_file({"logits": t.contiguous()}, p)
        return p

    pert = ref.clone()
    pert[1, 5, 7] += 1e-2
    rc, out = run(tool, d, ids, write("pert.safetensors", pert))
    check(rc == 1 and "FAIL" in out, "check_hf_load fails (exit 1) on perturbed logits")
    nan = ref.clone()
    nan[0, 0, 0] = float("nan")
    rc, out = run(tool, d, ids, write("nan.safetensors", nan))
    check(rc == 2 and "NaN" in out, "NaN logits -> exit 2 with message")
    rc, out = run(tool, d, ids, write("short.safetensors", ref[:, :10]))
    check(rc == 2 and "shape" in out, "wrong logits shape -> exit 2")
    bad = {"x.txt": "1 2 x\n", "range.txt": "1 2 99999\n", "ragged.txt": "1 2 3\n4 5\n", "empty.txt": "\n"}
    for fn, text in bad.items():
        p = os.path.join(tmp, fn)
        with open(p, "w") as f:
            f.write(text)
        rc, out = run(tool, d, p, os.path.join(d, "reference.safetensors"))
        check(rc == 2 and len(out.strip().splitlines()) == 1, f"bad ids file {fn} -> exit 2, one line")
    rc, out = run(tool, os.path.join(tmp, "nope"), ids, os.path.join(d, "reference.safetensors"))
    check(rc == 2 and "config.json" in out, "missing model folder -> exit 2")
    tr = os.path.join(tmp, "trunc.safetensors")
    with open(os.path.join(d, "reference.safetensors"), "rb") as f, open(tr, "wb") as g:
        g.write(f.read(100))
    rc, out = run(tool, d, ids, tr)
    check(rc == 2 and len(out.strip().splitlines()) == 1, "truncated logits file -> exit 2, one line")
    broken = os.path.join(tmp, "broken")
    os.makedirs(broken)
    shutil.copy(os.path.join(d, "config.json"), broken)
    with open(os.path.join(d, "model.safetensors"), "rb") as f, open(os.path.join(broken, "model.safetensors"), "wb") as g:
        g.write(f.read(5000))
    rc, out = run(tool, broken, ids, os.path.join(d, "reference.safetensors"))
    check(rc == 2 and len(out.strip().splitlines()) == 1, "truncated model.safetensors -> exit 2, one line")


def test_bench():
    cfg = os.path.join(FIX, "v3", "config.json")
    for tool in ("bench_forward_torch.py", "bench_train_torch.py"):
        rc, out = run(os.path.join(HERE, tool), "--config", cfg, "--batch", "1", "--seq", "8",
                      "--threads", "1", "--iters", "1", "--warmup", "0")
        line = [ln for ln in out.splitlines() if ln.startswith("{")]
        ok = rc == 0 and len(line) == 1
        if ok:
            j = json.loads(line[0])
            ok = (set(j) == {"impl", "tokens_per_s", "seconds_per_iter", "threads", "batch", "seq", "device"}
                  and j["tokens_per_s"] > 0 and j["device"] == "cpu")
        check(ok, f"{tool} prints one JSON line")
        rc, out = run(os.path.join(HERE, tool), "--config", cfg, "--batch", "0")
        check(rc != 0, f"{tool} rejects --batch 0")
        rc, out = run(os.path.join(HERE, tool), "--config", "/nonexistent/config.json")
        check(rc != 0 and "cannot read" in out, f"{tool} missing config -> message")


def test_bench_table(tmp):
    res = os.path.join(tmp, "results")
    os.makedirs(res)
    a = {"impl": "dsv3", "threads": 2, "prompt_tokens": 32, "new_tokens": 32, "prefill_s": 0.1,
         "decode_s": 0.5, "tokens_per_s": 300.0}
    q = {"impl": "llama.cpp", "threads": 2, "prompt_tokens": 32, "new_tokens": 32,
         "prefill_tokens_per_s": 640.0, "tokens_per_s": 200.0, "build": "x"}
    with open(os.path.join(res, "generate.json"), "w") as f:
        json.dump({"bench": "generate", "rows": [{"threads": 2, "dsv3": a, "llamacpp": q}]}, f)
    rc, out = run(os.path.join(HERE, "bench_table.py"), "--results", res)
    check(rc == 0 and "| greedy decode, batch 1, 2 threads, vs llama.cpp (F32 GGUF) | 300 tokens/s | "
          "llama.cpp 200 tokens/s | 1.50x |" in out
          and "| prefill of 32 tokens, 2 threads, vs llama.cpp (F32 GGUF) | 320 tokens/s | "
          "llama.cpp 640 tokens/s | 0.50x |" in out, "bench_table: llama.cpp decode and prefill rows")


def test_llamacpp_peer(tmp):
    sh = os.path.join(HERE, "llamacpp_peer.sh")
    env = dict(os.environ, DSV3_LLAMACPP_DIR=os.path.join(tmp, "none"), LLAMACPP_BIN="", LLAMACPP_SRC="",
               PATH="/usr/bin:/bin")

    def peer(*args):
        p = subprocess.run(["bash", sh, *args], capture_output=True, text=True, env=env)
        return p.returncode, p.stdout + p.stderr

    for args in (("find",), ("bench", "/nonexistent.gguf", "1", "8", "8"), ("serve", "/nonexistent.gguf", "1")):
        rc, out = peer(*args)
        check(rc == 3 and len(out.strip().splitlines()) == 1 and out.startswith("llama.cpp peer: skipped: "),
              f"llamacpp_peer.sh {args[0]} without llama.cpp: skipped, one line")
    rc, out = peer("convert", os.path.join(FIX, "v3"), os.path.join(tmp, "x.gguf"))
    check(rc == 3 and "convert_hf_to_gguf.py" in out, "llamacpp_peer.sh convert without the source: skipped")
    rc, out = run(os.path.join(HERE, "bench_serve_llamacpp.py"), "--url", "http://127.0.0.1:9", "--conc", "0")
    check(rc == 2 and len(out.strip().splitlines()) == 1, "bench_serve_llamacpp.py --conc 0: exit 2, one line")
    for args in ((), ("bench", "x.gguf"), ("convert", tmp, os.path.join(tmp, "x.gguf"))):
        rc, out = peer(*args)
        check(rc == 2 and len(out.strip().splitlines()) == 1, f"llamacpp_peer.sh {' '.join(args)}: exit 2, one line")


def test_llamacpp_same_model(tmp):
    sh = os.path.join(HERE, "llamacpp_peer.sh")
    if subprocess.run(["bash", sh, "find"], capture_output=True).returncode != 0:
        print("skip llamacpp_peer.sh: no llama.cpp here (tools/llamacpp_peer.sh build)")
        return
    dsv3, d, g = os.path.join(HERE, "..", "dsv3"), os.path.join(tmp, "tiny"), os.path.join(tmp, "tiny.gguf")
    subprocess.run([dsv3, "init", "--config", "tiny", "--out", d, "--seed", "3"], capture_output=True, check=True)
    p = subprocess.run(["bash", sh, "convert", d, g], capture_output=True, text=True)
    check(p.returncode == 0 and os.path.getsize(g) > 0, "llamacpp_peer.sh convert: tiny folder -> GGUF")
    rc, out = run(os.path.join(HERE, "llamacpp_check.py"), d, g, "--new", "16", "--prompt", "5 17 300 42 8000 1 9")
    check(rc == 0 and '"same_tokens": true' in out, "llama.cpp on the GGUF: dsv3's greedy tokens and log-probs")
    p = subprocess.run(["bash", sh, "serve", g, "18437", "1", "2"], capture_output=True, text=True)
    if p.returncode != 0:
        check(False, "llamacpp_peer.sh serve starts llama-server: " + p.stderr.strip())
        return
    try:
        rc, out = run(os.path.join(HERE, "bench_serve_llamacpp.py"), "--url", "http://127.0.0.1:18437",
                      "--conc", "1", "2", "--seq", "8", "--new", "4")
    finally:
        os.kill(int(p.stdout.strip()), 15)
    rows = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    check(rc == 0 and [r["concurrency"] for r in rows] == [1, 2] and [r["tokens"] for r in rows] == [4, 8],
          "bench_serve_llamacpp.py: one JSON line per concurrency, every token counted")


def test_fixture_files():
    for n in ("v3", "v2lite", "v2group", "norope"):
        d = os.path.join(FIX, n)
        with open(os.path.join(d, "config.json")) as f:
            c = json.load(f)
        w = load_file(os.path.join(d, "model.safetensors"))
        check(not any("gate_up_proj" in k or k.endswith("experts.down_proj") for k in w), f"{n}: per-expert keys only")
        check(all(v.dtype == torch.float32 for v in w.values()), f"{n}: FP32 weights")
        L, D = c["num_hidden_layers"], c.get("num_nextn_predict_layers", 0)
        for k in range(1, D + 1):
            p = f"model.layers.{L + k - 1}."
            check(torch.equal(w[p + "embed_tokens.weight"], w["model.embed_tokens.weight"])
                  and torch.equal(w[p + "shared_head.head.weight"], w["lm_head.weight"])
                  and w[p + "eh_proj.weight"].shape == (c["hidden_size"], 2 * c["hidden_size"]),
                  f"{n}: MTP module {k} tensors")
        r = load_file(os.path.join(d, "reference.safetensors"))
        with open(os.path.join(d, "ids.txt")) as f:
            ids = [list(map(int, ln.split())) for ln in f]
        B, T, V = len(ids), len(ids[0]), c["vocab_size"]
        check(r["logits"].shape == (B, T, V) and len([k for k in r if k.startswith("hidden_states.")]) == L + 1
              and all(r[f"mtp_logits.{k}"].shape == (B, T - k, V) for k in range(1, D + 1)),
              f"{n}: reference shapes")
        g = load_file(os.path.join(d, "grads.safetensors"))
        names = {k[len("grad."):] for k in g if k.startswith("grad.")}
        own = {k for k in w if not k.endswith("e_score_correction_bias")
               and not any(k.startswith(f"model.layers.{L + j}.") for j in range(D))}
        check(names == own, f"{n}: grads cover exactly the main-model parameters")


def main():
    tmp = tempfile.mkdtemp(prefix="dsv3-tools-test-")
    try:
        test_fixture_files()
        test_check_hf_load(tmp)
        test_bench()
        test_bench_table(tmp)
        test_llamacpp_peer(tmp)
        test_llamacpp_same_model(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
