#!/usr/bin/env python3
"""bench_tokenizer.py — dsv3's tokenizer side by side with Hugging Face `tokenizers`
and `tiktoken`, on the same machine, the same text, in one run.

    python3 tools/bench_tokenizer.py [--dsv3 ./dsv3] [--out bench/results/tokenizer.json] [--quick]

1. Encode MB/s of WikiText-2 test + TinyShakespeare (2.4 MB), 1 and 2 threads:
   - DeepSeek-V3 tokenizer.json: dsv3 vs tokenizers (and the ids are compared)
   - GPT-2 (built from the cs336 vocab/merges): dsv3 vs tiktoken vs tokenizers
   Each figure is the best of 3 runs (the pre-token caches are warm after the
   first); the first (cold) run is reported as well.  tokenizers encodes a batch
   of ~64 KiB chunks (cut where no pre-token crosses, so the ids are those of the
   whole text); tiktoken encodes the whole text with 1 thread and the chunks with
   encode_ordinary_batch with 2.
2. Training time to vocab 32,000 with the DeepSeek-V3 pre-tokenizer on all text of
   ../shared/data (~13 MB: HellaSwag, LAMBADA, PIQA, ARC-Easy, WikiText-2,
   TinyShakespeare), 2 threads: dsv3 vs BpeTrainer (same special tokens and byte
   alphabet); the merge lists are compared.
Peers run in subprocesses so that their thread count is fixed before import.
"""
import argparse, json, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D = os.path.join(ROOT, "..", "shared", "data")
DS = os.path.join(D, "deepseek_v3_tokenizer", "tokenizer.json")
TEXT = [os.path.join(D, "wikitext2", "wiki.test.raw"), os.path.join(D, "tinyshakespeare", "input.txt")]
TRAIN = [os.path.join(D, p) for p in ["hellaswag/hellaswag_val_full.txt", "llm_foundry_icl/lambada_openai.jsonl",
                                      "llm_foundry_icl/piqa.jsonl", "llm_foundry_icl/arc_easy.jsonl",
                                      "wikitext2/wiki.test.raw", "tinyshakespeare/input.txt"]]
SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"]


def chunks(text, size=1 << 16):
    """~64 KiB pieces cut where no pre-token can cross (the cut points dsv3 uses:
    after a "\n" that follows a non-space and precedes an ASCII letter or digit),
    so that encoding the pieces gives the ids of the whole text"""
    out, i = [], 0
    while i < len(text):
        j = i + size
        while True:
            j = text.find("\n", j)
            if j < 0:
                j = len(text)
                break
            if j + 1 < len(text) and text[j - 1] > " " and text[j - 1] < "\x80" and text[j + 1].isascii() and text[j + 1].isalnum():
                j += 1
                break
            j += 1
        out.append(text[i:j])
        i = j
    return out


def peer_encode(kind, tokpath, threads, repeat):
    """runs in a subprocess: prints one JSON line"""
    text = "".join(open(p, encoding="utf-8").read() for p in TEXT)
    nbytes = len(text.encode("utf-8"))
    if kind == "tiktoken":
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        from make_tokenizer_fixtures import gpt2_tokenizer, tiktoken_gpt2
        _, vocab = gpt2_tokenizer()
        enc = tiktoken_gpt2(vocab)
        if threads == 1:
            f = lambda: enc.encode_ordinary(text)
        else:
            cs = chunks(text)
            f = lambda: [i for c in enc.encode_ordinary_batch(cs, num_threads=threads) for i in c]
    else:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tokpath)
        # tokenizers is slow on one 2.4 MB string (offset bookkeeping); a batch of
        # chunks is its fast path, with 1 thread as with 2
        cs = chunks(text)
        f = lambda: [i for e in tok.encode_batch(cs, add_special_tokens=False) for i in e.ids]
    times, cpus, ids = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        ids = f()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    print(json.dumps({"bytes": nbytes, "tokens": len(ids), "seconds": min(times), "mb_s": nbytes / 1e6 / min(times),
                      "first_mb_s": nbytes / 1e6 / times[0], "cpu_mb_s": nbytes / 1e6 / min(cpus), "ids": ids}))


def peer_train(out):
    from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from make_tokenizer_fixtures import dsv3_pretok
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = dsv3_pretok()
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=32000, special_tokens=SPECIALS,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t0 = time.perf_counter()
    tok.train(TRAIN, tr)
    dt = time.perf_counter() - t0
    tok.save(out)
    print(json.dumps({"seconds": dt}))


def run_peer(args, threads):
    env = dict(os.environ, RAYON_RS_NUM_CPUS=str(threads), RAYON_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="true", OMP_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "peer failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def dsv3_bench(dsv3, tok, threads, repeat):
    r = subprocess.run([dsv3, "--threads", str(threads), "tokenizer", "bench", "--repeat", str(repeat),
                        "--tokenizer", tok] + TEXT, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr.strip())
    return json.loads(r.stdout)


def dsv3_ids(dsv3, tok):
    r = subprocess.run([dsv3, "tokenizer", "encode", "--tokenizer", tok] + TEXT, capture_output=True, text=True)
    ids = []
    for line in r.stdout.splitlines():
        ids += [int(x) for x in line.split()]
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsv3", default=os.path.join(ROOT, "dsv3"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "tokenizer.json"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--peer-encode", nargs=3)  # internal: kind tokpath threads
    ap.add_argument("--peer-train")            # internal: output path
    a = ap.parse_args()
    if a.peer_encode:
        return peer_encode(a.peer_encode[0], a.peer_encode[1], int(a.peer_encode[2]), a.repeat)
    if a.peer_train:
        return peer_train(a.peer_train)
    for p in TEXT + [DS]:
        if not os.path.exists(p):
            print("bench_tokenizer: %s absent, skipped" % p)
            return
    res = {"machine": os.uname().nodename, "nproc": os.cpu_count(), "encode": [], "train": None}
    tmp = tempfile.mkdtemp()
    # GPT-2 tokenizer.json for dsv3 and tokenizers
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from make_tokenizer_fixtures import gpt2_tokenizer
    g2, _ = gpt2_tokenizer()
    g2path = os.path.join(tmp, "gpt2.json")
    g2.save(g2path)
    print("%-28s %7s %8s %9s %8s %8s  %s" % ("encode (2.4 MB)", "threads", "MB/s", "cold MB/s", "CPU MB/s", "dsv3 is",
                                          "(MB/s: wall clock, best run; CPU MB/s: MB per CPU-second)"))
    for name, tokp, peers in [("deepseek-v3", DS, ["tokenizers"]), ("gpt2", g2path, ["tiktoken", "tokenizers"])]:
        ref_ids = dsv3_ids(a.dsv3, tokp)
        for th in (1, 2):
            d = dsv3_bench(a.dsv3, tokp, th, a.repeat)
            row = {"tokenizer": name, "threads": th, "dsv3_mb_s": d["mb_s"], "dsv3_cold_mb_s": d["first_mb_s"],
                   "dsv3_cpu_mb_s": d["cpu_mb_s"], "tokens": d["tokens"]}
            print("%-28s %7d %8.2f %9.2f %8.2f %8s" % ("dsv3 " + name, th, d["mb_s"], d["first_mb_s"], d["cpu_mb_s"], ""))
            for p in peers:
                try:
                    r = run_peer(["--peer-encode", p, tokp, str(th), "--repeat", str(a.repeat)], th)
                except Exception as e:  # peer not installed
                    print("%-34s %8d  unavailable: %s" % (p + " " + name, th, e))
                    continue
                same = r["ids"] == ref_ids
                row[p + "_mb_s"] = r["mb_s"]
                row[p + "_cold_mb_s"] = r["first_mb_s"]
                row[p + "_cpu_mb_s"] = r["cpu_mb_s"]
                row[p + "_ids_identical"] = same
                row["ratio_vs_" + p] = d["mb_s"] / r["mb_s"]
                print("%-28s %7d %8.2f %9.2f %8.2f %7.2fx%s" % (p + " " + name, th, r["mb_s"], r["first_mb_s"], r["cpu_mb_s"],
                                                            d["mb_s"] / r["mb_s"], "" if same else "  (ids differ!)"))
            res["encode"].append(row)
    if not a.no_train:
        out = os.path.join(tmp, "dsv3_train.json")
        cmd = [a.dsv3, "--quiet", "--threads", "2", "tokenizer", "train", "--input"] + TRAIN + [
            "--vocab-size", "32000", "--pretokenizer", "deepseek-v3", "--special-tokens"] + SPECIALS + ["--out", out]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode:
            print("dsv3 train failed:", r.stderr.strip())
        else:
            mb = sum(os.path.getsize(p) for p in TRAIN) / 1e6
            row = {"mb": mb, "vocab": 32000, "dsv3_s": dt}
            print("%-28s %7s %8s" % ("train to 32000 (%.1f MB)" % mb, "threads", "seconds"))
            print("%-28s %7d %8.2f" % ("dsv3", 2, dt))
            try:
                hout = os.path.join(tmp, "hf_train.json")
                h = run_peer(["--peer-train", hout], 2)
                mine = json.load(open(out))["model"]["merges"]
                theirs = [m if isinstance(m, list) else m.split(" ") for m in json.load(open(hout))["model"]["merges"]]
                same = mine == theirs
                row.update({"tokenizers_s": h["seconds"], "merges_identical": same, "speedup": h["seconds"] / dt})
                print("%-28s %7d %8.2f   dsv3 %.2fx faster%s" % ("tokenizers BpeTrainer", 2, h["seconds"], h["seconds"] / dt,
                                                              ", merges identical" if same else "  (merges differ!)"))
                # the trained file loads in tokenizers and encodes as dsv3 does
                from tokenizers import Tokenizer
                ht = Tokenizer.from_file(out)
                txt = open(TEXT[1], encoding="utf-8").read()[:200000]
                hid = ht.encode(txt, add_special_tokens=False).ids
                p = subprocess.run([a.dsv3, "tokenizer", "encode", "--tokenizer", out], input=txt.encode(),
                                   capture_output=True)
                row["trained_file_encodes_same_in_tokenizers"] = [int(x) for x in p.stdout.split()] == hid
                print("trained tokenizer.json encodes the same in tokenizers:", row["trained_file_encodes_same_in_tokenizers"])
            except Exception as e:
                print("tokenizers BpeTrainer unavailable:", e)
            res["train"] = row
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(res, open(a.out, "w"), indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
