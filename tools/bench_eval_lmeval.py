#!/usr/bin/env python3
"""bench_eval_lmeval.py: the peer side of bench/bench_eval.sh.

Scores the first N PIQA documents of an llm-foundry JSONL file with lm-evaluation-harness's
HFLM (model type "hf", transformers, FP32, CPU) on a local model folder, exactly as
tools/make_eval_fixtures.py builds the requests (lm-eval's PIQA prompt
"Question: {goal}\\nAnswer:", continuation " " + choice), and prints one JSON line:
examples/s over the HFLM.loglikelihood call only (model loading excluded), the process CPU
time of that call, and the per-choice log-likelihoods (to check both sides scored alike).

    python3 tools/bench_eval_lmeval.py --model DIR --data piqa.jsonl --limit N --threads T [--batch B]
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1, help="HFLM batch_size (lm-eval's default is 1)")
    ap.add_argument("--max-length", type=int, default=4096)
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    import lm_eval
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    rows = [json.loads(l) for l in open(args.data, encoding="utf-8")][:args.limit]
    docs = [(r["query"].rstrip("\n") + "\nAnswer:", r["choices"], r["gold"]) for r in rows]
    pairs = [(ctx, " " + c) for ctx, choices, _ in docs for c in choices]
    inst = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]

    lm = HFLM(pretrained=args.model, tokenizer=args.model, max_length=args.max_length, batch_size=args.batch,
              device="cpu", dtype="float32")
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        res = lm.loglikelihood(inst, disable_tqdm=True)
    sec, cpu = time.perf_counter() - t0, time.process_time() - c0

    lls, k, correct = [], 0, 0
    for ctx, choices, gold in docs:
        ll = [float(r[0]) for r in res[k:k + len(choices)]]
        k += len(choices)
        lls.append(ll)
        correct += int(max(range(len(ll)), key=lambda i: ll[i]) == gold)
    print(json.dumps({"impl": "lm-eval %s HFLM (transformers, fp32)" % lm_eval.__version__,
                      "examples": len(docs), "requests": len(pairs), "threads": args.threads,
                      "batch": args.batch, "seconds": sec, "cpu_seconds": cpu,
                      "examples_per_s": len(docs) / sec, "acc": correct / len(docs), "ll": lls}))


if __name__ == "__main__":
    sys.exit(main())
