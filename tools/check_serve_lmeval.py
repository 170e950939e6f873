#!/usr/bin/env python3
"""check_serve_lmeval.py: lm-evaluation-harness's own OpenAI-completions client (LocalCompletionsAPI, what
`lm_eval --model local-completions` runs) scoring through a running `dsv3 serve`, against the log-likelihoods and
greedy flags lm-eval's HF model gave on the same tokens (tests/fixtures/eval/scores.json, tools/make_eval_fixtures.py).

    dsv3 serve --model tests/fixtures/eval/model --port 8080 &
    python3 tools/check_serve_lmeval.py --url http://127.0.0.1:8080     # needs lm-eval (pip install lm-eval)

Every choice of piqa, arc_easy, hellaswag and greedy_mc whose context + continuation fits the model's 128 positions
with the one generated token goes through LocalCompletionsAPI._loglikelihood_tokens (lm-eval's batching, payload --
prompt as token-id lists, echo, logprobs 1, max_tokens 1 -- and its parse_logprobs). Prints one JSON line; exit 1
when a log-likelihood differs by more than max(1e-3, 1e-5 |ll|) or a greedy flag differs where the fixture's
argmax margin is above 1e-3; and the greedy_gen prompts through its generate_until payload and parser (stop
sequences, max_tokens) must give the text lm-eval's HF model generated.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--scores", default=os.path.join(ROOT, "tests/fixtures/eval/scores.json"))
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "tests/fixtures/eval/model"))
    ap.add_argument("--batch-size", type=int, default=4)
    a = ap.parse_args()
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    import lm_eval
    lm = LocalCompletionsAPI(model="dsv3", base_url=a.url.rstrip("/") + "/v1/completions", tokenizer=a.model_dir,
                             tokenizer_backend="huggingface", max_length=127, batch_size=a.batch_size,
                             num_concurrent=1, max_retries=1)
    with open(a.scores) as f:
        sc = json.load(f)
    reqs, want = [], []
    for task in ("piqa", "arc_easy", "hellaswag", "greedy_mc"):
        for e in sc["tasks"][task]["examples"]:
            for k, (cx, ct) in enumerate(e["ids"]):
                if len(cx) + len(ct) <= 126:
                    reqs.append(((e["context"], e["choices"][k]), cx, ct))
                    want.append((task, e["ll"][k], e["greedy"][k], e["margin"]))
    got = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    # generate_until: the greedy_gen prompts (token ids) through lm-eval's payload (stop = until + EOS, max_tokens,
    # seed) and its parse_generations; the text lm-eval's HF model generated
    gtask = sc["tasks"]["greedy_gen"]
    gen_bad = []
    for e in gtask["examples"]:
        out = lm.model_call(messages=[e["prompt_ids"]], generate=True,
                            gen_kwargs={"until": list(gtask["until"]), "max_gen_toks": gtask["max_new"]})
        text = lm.parse_generations(outputs=out, contexts=[""])[0]
        for u in gtask["until"]:  # lm-eval cuts at the first stop sequence after the call too
            text = text.split(u)[0]
        if text != e["generated"]:
            gen_bad.append({"got": text, "lm_eval_hf": e["generated"]})
    bad, maxerr, greedy = [], 0.0, 0
    for (task, ll, g, margin), (gl, gg) in zip(want, got):
        err = abs(gl - ll)
        maxerr = max(maxerr, err)
        greedy += bool(gg)
        if err > max(1e-3, 1e-5 * abs(ll)) or (margin > 1e-3 and bool(gg) != bool(g)):
            bad.append({"task": task, "ll": gl, "lm_eval_hf": ll, "greedy": gg, "hf_greedy": g})
    print(json.dumps({"tool": "lm-eval " + lm_eval.__version__ + " LocalCompletionsAPI", "choices": len(got),
                      "greedy": greedy, "max_abs_err": maxerr, "bad": bad[:5], "n_bad": len(bad),
                      "generations": len(gtask["examples"]), "gen_bad": gen_bad}))
    sys.exit(1 if bad or gen_bad or len(got) != len(want) else 0)


if __name__ == "__main__":
    main()
