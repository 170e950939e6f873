"""lib_dist.py — what the multi-process benchmarks (bench_dist.sh, bench_pp.sh) read from a
`dsv3 train` run: its printed summary and its train_log.jsonl."""
import json
import re


def tps(s):
    """tokens/s of the run's 'mean step S s: N tokens/s' line, 0 when absent"""
    m = re.search(r"mean step ([0-9.]+) s: ([0-9.]+) tokens/s", s)
    return float(m.group(2)) if m else 0.0


def tokens_per_step(s):
    """from the 'done: N steps, T tokens in ...' line, 0 when absent"""
    m = re.search(r"done: (\d+) steps, ([0-9]+) tokens", s)
    return int(m.group(2)) / int(m.group(1)) if m and int(m.group(1)) else 0


def last(s, key):
    """the last number after `key ` in the output, 0 when absent"""
    v = re.findall(key + r" ([0-9.]+)", s)
    return float(v[-1]) if v else 0.0


def log_steps(run):
    """the step records of RUN/train_log.jsonl (lines with "step" and "loss")"""
    out = []
    try:
        with open(run + "/train_log.jsonl") as f:
            for line in f:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if "step" in d and "loss" in d:
                    out.append(d)
    except OSError:
        pass
    return out
