#!/usr/bin/env python3
"""llamacpp_check.py — is a GGUF made by tools/llamacpp_peer.sh convert the same model as its dsv3 folder?

Starts llama-server on GGUF (tools/llamacpp_peer.sh serve), sends the prompt as token ids to /completion
(greedy, top log-probabilities per generated token), and compares with dsv3 on MODEL_DIR:
  - the greedy tokens against `dsv3 generate --ids` (same prompt, same count);
  - llama.cpp's log-probabilities of its top-K tokens against log_softmax of `dsv3 forward`'s logits
    (FP32, over prompt + generated ids).
llama-server runs with an FP32 KV cache and flash attention off (LLAMACPP_SERVER_ARGS overrides).
Prints one JSON line {"same_tokens", "n", "first_mismatch", "max_abs_logprob_diff", ...}; exit 0 when the
tokens agree and the log-probabilities are within --tol (default 1e-4), 1 otherwise, 2 on bad usage.

Usage: python3 tools/llamacpp_check.py MODEL_DIR GGUF [--prompt "ids"] [--new N] [--port P] [--top K]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("gguf")
    ap.add_argument("--prompt", default="0 17 42 7 99 3 250 12 5 64 31 8")
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--port", type=int, default=18431)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    prompt = [int(x) for x in a.prompt.split()]
    dsv3 = os.path.join(ROOT, "dsv3")

    # FP32 KV cache and no flash attention: llama.cpp's CPU flash attention rounds through F16
    # (log-probabilities then differ by up to ~2e-3; without it by ~1e-5)
    env = dict(os.environ, LLAMACPP_SERVER_ARGS=os.environ.get("LLAMACPP_SERVER_ARGS", "-ctk f32 -ctv f32 -fa off"))
    pid = subprocess.run(["bash", os.path.join(ROOT, "tools", "llamacpp_peer.sh"), "serve", a.gguf, str(a.port),
                          str(a.threads), "1", "2048"], capture_output=True, text=True, env=env)
    if pid.returncode != 0:
        sys.stderr.write(pid.stderr)
        return pid.returncode
    pid = int(pid.stdout.strip())
    # one token per request, so that EOS is an ordinary greedy token as in `dsv3 generate --ignore-eos`
    # (llama.cpp's ignore_eos would forbid it instead)
    lc_tokens, probs, evaluated = [], [], None
    try:
        for _ in range(a.new):
            r = post(a.port, "/completion", {"prompt": prompt + lc_tokens, "n_predict": 1, "temperature": 0.0,
                                              "n_probs": a.top, "return_tokens": True, "cache_prompt": False})
            evaluated = evaluated or r.get("tokens_evaluated")
            lc_tokens.append(r["tokens"][0])
            # the server leaves out the probabilities of a token that ends inside a UTF-8 character
            probs.append((r.get("completion_probabilities") or [{}])[0])
    finally:
        os.kill(pid, 15)
    g = subprocess.run([dsv3, "--threads", str(a.threads), "generate", "--model", a.model, "--ids", "--prompt",
                        " ".join(map(str, prompt)), "--max-new-tokens", str(a.new), "--ignore-eos"],
                       capture_output=True, text=True, check=True)
    ds_tokens = [int(x) for x in g.stdout.split()][:a.new]
    n = min(len(lc_tokens), len(ds_tokens))
    mism = next((i for i in range(n) if lc_tokens[i] != ds_tokens[i]), None)

    import torch
    from safetensors.torch import load_file
    with tempfile.TemporaryDirectory() as tmp:
        ids = os.path.join(tmp, "ids.txt")
        with open(ids, "w") as f:
            f.write(" ".join(map(str, prompt + lc_tokens[:-1])) + "\n")
        out = os.path.join(tmp, "logits.safetensors")
        subprocess.run([dsv3, "--threads", str(a.threads), "forward", "--model", a.model, "--ids", ids, "--out", out,
                        "--no-mtp"], capture_output=True, text=True, check=True)
        lp = torch.log_softmax(load_file(out)["logits"][0].double(), dim=-1)
    diff, compared = 0.0, 0
    for i, pos in enumerate(probs):
        row = lp[len(prompt) - 1 + i]
        for t in pos.get("top_logprobs", []):
            diff = max(diff, abs(row[t["id"]].item() - t["logprob"]))
            compared += 1
    res = {"same_tokens": mism is None and n == a.new, "n": n, "first_mismatch": mism,
           "max_abs_logprob_diff": diff, "logprobs_compared": compared,
           "prompt_tokens_evaluated": evaluated, "llamacpp": lc_tokens, "dsv3": ds_tokens}
    print(json.dumps(res))
    return 0 if res["same_tokens"] and diff <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
