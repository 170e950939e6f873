#!/usr/bin/env python3
"""fuzz_cli.py: random command lines for every dsv3 command (best with an ASan + UBSan build: make SAN=1).
The options of each command come from its --help; each run gets a few of them with plausible or wrong values
(out-of-range and non-numbers, NaN, empty, a missing path, a real fixture folder or file, a directory where a file
is expected) plus sometimes a stray positional. Every run must exit 0, 1 or 2 within the time limit (a run still
busy at the limit is fine: it was doing work), print no sanitizer report, and, when it fails, say why on stderr
starting with "dsv3" (one error line).

    python3 tools/fuzz_cli.py --bin build-san/dsv3 --runs 600 --seed 1

Prints counts per exit status; exit 1 with the offending command lines when a run crashed, printed a sanitizer
report, exited with another status, or failed silently.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["ablate", "bench-decode", "bench-train", "chat", "convert", "data prepare", "eval", "forward", "fp8 study",
            "fp8 bench", "fp8 analyze", "generate", "init", "inspect", "plan", "report", "serve", "tokenizer encode",
            "tokenizer decode", "tokenizer info", "tokenizer train", "train"]


def options(binary, cmd):
    out = subprocess.run([binary] + cmd.split() + ["--help"], capture_output=True, text=True, timeout=30).stdout
    return re.findall(r"^\s+(--[a-z0-9-]+)", out, re.M)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-san", "dsv3"))
    ap.add_argument("--runs", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=8)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="dsv3-fuzz-cli-")
    v3 = os.path.join(ROOT, "tests/fixtures/model/v3")
    evm = os.path.join(ROOT, "tests/fixtures/eval/model")
    values = ["0", "1", "-1", "2", "3.5", "1e309", "nan", "-inf", "", "x", "9999999999999999999", "0x10", "1,2",
              "4,8", "tiny", "small", "fp8", "bf16", "mtp", "cuda", "cpu", "/nonexistent", tmp, v3, evm,
              os.path.join(v3, "config.json"), os.path.join(v3, "model.safetensors"), os.path.join(evm, "tokenizer.json"),
              os.path.join(ROOT, "tests/fixtures/model/v3/ids.txt"), "piqa", "hello world", "7:2.5", "3:x",
              os.path.join(tmp, "out")]
    opts = {c: options(a.bin, c) for c in COMMANDS}
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1", OMP_NUM_THREADS="1")
    counts, bad = {}, []
    for i in range(a.runs):
        cmd = rnd.choice(COMMANDS)
        args = [a.bin, "--threads", "1"] + cmd.split()
        for o in rnd.sample(opts[cmd], min(len(opts[cmd]), rnd.randint(0, 5))):
            args.append(o)
            if rnd.random() < 0.85:
                args.append(rnd.choice(values))
        if rnd.random() < 0.15:
            args.append(rnd.choice(values + ["--", "-x", "--bogus"]))
        try:
            p = subprocess.run(args, capture_output=True, timeout=a.timeout, env=env, stdin=subprocess.DEVNULL, cwd=tmp)
            rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:
            rc, err = "busy", (e.stderr or b"").decode("utf-8", "replace")
        counts[str(rc)] = counts.get(str(rc), 0) + 1
        why = None
        if "Sanitizer" in err or "runtime error" in err:
            why = "sanitizer"
        elif rc not in (0, 1, 2, "busy"):
            why = f"exit {rc}"
        elif rc in (1, 2) and not re.search(r"^dsv3", err, re.M):
            why = "failed without a 'dsv3 ...' line"
        if why:
            bad.append({"why": why, "args": args[1:], "stderr": err[-600:]})
    print(json.dumps({"runs": a.runs, "exit": counts, "bad": bad[:8], "n_bad": len(bad)}, indent=1))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
