#!/usr/bin/env python3
"""fuzz_serve.py: random OpenAI requests against a running `dsv3 serve` (best under `make SAN=1`: the server then
aborts on a memory error). Each request mixes plausible and wrong values for every field the server reads (prompt
batches, echo with logprobs, n, penalties, logit_bias, stop, stream, messages, tools and tool calls in the history); the
server must answer every one with
200 or 400 (503 when its queue is full) and stay up.  Give the server a long context (tool-call prompts are long
under a byte-level tokenizer) and a template that names a tool-call format, or the tool requests all get 400.

    ASAN_OPTIONS=detect_leaks=0 build-san/dsv3 serve --model DIR --port 8080 --max-batch 4 [--speculative mtp|ngram] &
    python3 tools/fuzz_serve.py --url http://127.0.0.1:8080 --requests 2000 --seed 1 [--clients 4]

Prints the status counts; exit 1 on a 5xx other than 503 or a dropped connection (the server died).
"""
import argparse
import json
import random
import sys
import threading
import urllib.error
import urllib.request

FIELDS = ["prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
          "frequency_penalty", "logit_bias", "echo", "logprobs", "n", "stop", "seed", "stream", "ignore_eos",
          "return_token_ids", "top_logprobs", "messages", "max_completion_tokens", "stream_options", "tools", "tool_choice",
          "parallel_tool_calls", "min_tokens", "stop_token_ids", "response_format", "guided_regex", "guided_choice",
          "guided_json", "structured_outputs", "include_stop_str_in_output", "add_generation_prompt",
          "continue_final_message", "chat_template_kwargs", "include"]


def client(url, n, seed, out):
    rnd = random.Random(seed)
    wrong = [None, True, False, -5, 300, 1e300, -2.5, "", "abc", [], {}, [1, 2], {"5": 2}, [[1, 2], [3]]]
    good = {"temperature": lambda: rnd.choice([0, 0.7, 1.5]), "top_p": lambda: rnd.choice([0.5, 1]),
            "top_k": lambda: rnd.randint(0, 50), "min_p": lambda: rnd.choice([0, 0.05, 0.5, 1]),
            "repetition_penalty": lambda: rnd.choice([1, 1.3, 0.5, 50]),
            "presence_penalty": lambda: rnd.uniform(-2, 2), "frequency_penalty": lambda: rnd.uniform(-2, 2),
            "n": lambda: rnd.randint(1, 4), "stop": lambda: rnd.choice(["a", ["b", "c"], []]),
            "seed": lambda: rnd.randint(0, 9), "stream": lambda: rnd.random() < 0.3,
            "logprobs": lambda: rnd.randint(0, 5), "echo": lambda: rnd.random() < 0.5,
            "return_token_ids": lambda: True, "ignore_eos": lambda: True, "parallel_tool_calls": lambda: rnd.random() < 0.5}
    good["min_tokens"] = lambda: rnd.randint(0, 6)
    good["include_stop_str_in_output"] = lambda: rnd.random() < 0.5
    good["add_generation_prompt"] = lambda: rnd.random() < 0.5
    good["continue_final_message"] = lambda: rnd.random() < 0.5
    good["include"] = lambda: rnd.choice([["message.output_text.logprobs"], [], ["x"], "message.output_text.logprobs", [3]])
    good["top_logprobs"] = lambda: rnd.randint(0, 21)
    good["chat_template_kwargs"] = lambda: rnd.choice([{}, {"thinking": True}, {"bos_token": "<x>"}, {"messages": []},
                                                       {"tools": None}, {"a": [1, {"b": None}]}])
    schema = lambda: rnd.choice([{"type": "object", "properties": {"a": {"enum": ["x", 1, None]}, "b": {"type": "integer"}},  # noqa: E731
                                                   "required": ["a"], "additionalProperties": rnd.random() < 0.5},
                                  {"properties": {"p": {"items": {"type": "string"}}}}, {"pattern": "x"}, {"type": "string"},
                                  {"properties": {"c": {"type": "string", "pattern": rnd.choice(["^[A-Z]{2}-\\d+$", "(a", "b"]),
                                                        "maxLength": rnd.randint(0, 6)}}, "required": ["c"]},
                                  {"properties": {"a": 3}}, True, None,
                                  {"properties": {"u": {"type": "array", "items": {"enum": ["x", "xy", 1, 12]},
                                                        "uniqueItems": rnd.choice([True, False, 1]),
                                                        "minItems": rnd.randint(0, 5)}}, "required": ["u"]},
                                  {"properties": {"n": {"type": "number", "minimum": rnd.choice([-1e300, -3, 0.5, 2]),
                                                        "exclusiveMaximum": rnd.choice([0, 2, 1e300])},
                                                  "s": {"type": "string", "maxLength": rnd.randint(0, 3),
                                                        "minLength": rnd.randint(0, 3)},
                                                  "a": {"items": {"type": "integer", "maximum": -5}, "minItems": rnd.randint(0, 2),
                                                        "maxItems": rnd.randint(0, 2)}},
                                   "required": ["n", "s", "a"], "minProperties": rnd.randint(0, 4), "maxProperties": 3},
                                  {"properties": {"x": {"allOf": [{"type": "integer", "minimum": rnd.choice([-1.5, 7, "3"])}]}}}])
    good["response_format"] = lambda: rnd.choice([{"type": "json_object"}, {"type": "text"}, {"type": "json_schema"},
                                                  {"type": "json_schema", "json_schema": {"name": "s", "schema": schema()}},
                                                  {"type": 3}, {}])
    good["stop_token_ids"] = lambda: [rnd.randint(-1, 300) for _ in range(rnd.randint(0, 4))]
    regex = lambda: rnd.choice(["[0-9]{3}-[a-z]{2}", "(yes|no)!?", "", "a.{12}", "(a", "\\d+(\\.\\d+)?", "[^\\s]{1,4}",  # noqa: E731
                                "(?=x)", "é+|\\u00e8", ".*", "x{2,", "[ab]*a[ab]{12}", 7])
    good["guided_regex"] = regex
    good["guided_choice"] = lambda: rnd.choice([["a", "b.c", "d|e"], [], ["x"], ["é", 3], "ab"])
    good["guided_json"] = lambda: rnd.choice([schema(), '{"type": "object"}', "{", {"properties": {"s": {"pattern": regex()}}}])
    good["structured_outputs"] = lambda: rnd.choice([{"regex": regex()}, {"choice": ["p", "q"]}, {"json": schema()},
                                                     {"grammar": "x"}, {}, 3, {"regex": "a", "choice": ["b"]}])
    fn = lambda: rnd.choice(["f", "get_weather", "", "x\ny", "é" * 3, 5])  # noqa: E731
    tool = lambda: rnd.choice([{"type": "function", "function": {"name": fn(), "parameters": rnd.choice(  # noqa: E731
        [{"type": "object"}, None, 3, {}])}}, {"type": "function", "function": {"name": fn()}}, {"type": "fn"}, []])
    good["tools"] = lambda: [tool() for _ in range(rnd.randint(0, 3))]
    good["tool_choice"] = lambda: rnd.choice(["none", "auto", "required", "some", {"type": "function", "function": {
        "name": fn()}}, {"function": {}}])
    call = lambda: rnd.choice([{"id": "c1", "type": "function", "function": {"name": fn(), "arguments": rnd.choice(  # noqa: E731
        ['{"a": 1}', "not json", "", {"a": [1, {"b": None}]}, 3])}}, {"function": None}, "x"])
    codes, kept = {}, []
    for _ in range(n):
        body = {"prompt": rnd.choice([[1, 2, 3], "ab", [[1, 2], [3, 4, 5]], ["a", "b"], [[5]]]),
                "max_tokens": rnd.randint(0, 4)}
        for f in rnd.sample(FIELDS, rnd.randint(0, 6)):
            body[f] = good[f]() if f in good and rnd.random() < 0.85 else rnd.choice(wrong)
        if rnd.random() < 0.3:
            body["logit_bias"] = {str(rnd.randint(-2, 300)): rnd.uniform(-150, 150) for _ in range(rnd.randint(0, 4))}
        if rnd.random() < 0.3:
            body["echo"], body["logprobs"] = True, rnd.randint(0, 5)
        path = rnd.choice(["/v1/completions", "/v1/chat/completions", "/v1/completions", "/v1/chat/completions",
                           "/tokenize", "/detokenize", "/v1/responses"])
        if path == "/detokenize":
            body = {"tokens": rnd.choice([[1, 2], [], [-1], [1e9], "ab", None, [[1]], [0.5]])}
        if path.endswith("chat/completions") and rnd.random() < 0.7:
            body["messages"] = [{"role": "user", "content": rnd.choice(["hi", "", None, 3, [{"type": "text", "text": "x"}]])}]
            if rnd.random() < 0.3:  # a turn of tool calls and their results
                body["messages"] += [{"role": "assistant", "content": rnd.choice([None, "ok"]),
                                      "tool_calls": rnd.choice([[call() for _ in range(rnd.randint(0, 3))], {}, None])},
                                     {"role": "tool", "tool_call_id": "c1", "content": rnd.choice(["18C", None])}]
            if rnd.random() < 0.3:  # a final assistant message to continue
                body["messages"].append({"role": "assistant", "content": rnd.choice(["The answer is", "", " \n", None])})
                body["continue_final_message"] = rnd.random() < 0.8
            if rnd.random() < 0.4:
                body["tools"] = good["tools"]()
        if path == "/v1/responses":  # the Responses API's fields around the same sampling ones
            body.pop("prompt", None)
            body["input"] = rnd.choice(["hi", "", None, 3, [], [{"role": "user", "content": "x"}],
                                        [{"role": "user", "content": [{"type": "input_text", "text": "x"}, {"type": "x"}]}],
                                        [{"type": "function_call", "call_id": "c1", "name": fn(), "arguments": "{}"},
                                         {"type": "function_call_output", "call_id": "c1", "output": rnd.choice(["1", None, 2])}],
                                        [{"type": "reasoning"}, {"type": "bogus"}, "s"]])
            for k, v in [("instructions", rnd.choice(["Be brief.", 3, None])), ("max_output_tokens", rnd.choice([0, 3, -1, "x"])),
                         ("text", rnd.choice([{"format": {"type": "json_object"}}, {"format": {"type": "json_schema", "name": "s",
                                                                                             "schema": schema()}}, {"format": 3}, 5])),
                         ("tools", rnd.choice([[{"type": "function", "name": fn(), "parameters": {"type": "object"}}],
                                               [{"type": "web_search"}], [{"type": "function"}], {}])),
                         ("tool_choice", rnd.choice(["auto", "required", {"type": "function", "name": "f"}, {"x": 1}, 7])),
                         ("previous_response_id", rnd.choice([None, "resp_1", 5] + kept[-3:])),
                         ("store", rnd.choice([True, False, "x"])), ("truncation", rnd.choice(["auto", "disabled"]))]:
                if rnd.random() < 0.35:
                    body[k] = v
        data = json.dumps(body).encode()
        method = "POST"
        if path == "/v1/responses" and kept and rnd.random() < 0.2:  # a kept response: get it or drop it
            path, method, data = "/v1/responses/" + rnd.choice(kept + ["resp_x", "%2e%2e"]), rnd.choice(["GET", "DELETE", "PUT"]), None
        req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                got = r.read()
                code = r.status
                if path == "/v1/responses" and got.startswith(b"{"):
                    kept.append(json.loads(got)["id"])
        except urllib.error.HTTPError as e:
            e.read()
            code = e.code
        except (urllib.error.URLError, ConnectionError) as e:
            out.append(("dropped", str(e), data[:300]))
            return
        codes[code] = codes.get(code, 0) + 1
        if code >= 500 and code != 503:
            out.append((code, "", data[:300]))
    out.append(("codes", codes, b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--requests", type=int, default=2000, help="per client")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", type=int, default=1)
    a = ap.parse_args()
    out = []
    th = [threading.Thread(target=client, args=(a.url.rstrip("/"), a.requests, a.seed * 1000 + i, out))
          for i in range(a.clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    total, bad = {}, [o for o in out if o[0] != "codes"]
    for o in out:
        if o[0] == "codes":
            for k, v in o[1].items():
                total[k] = total.get(k, 0) + v
    print(json.dumps({"status": {str(k): v for k, v in sorted(total.items())}, "bad": [[str(x) for x in b] for b in bad[:5]]}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
