#!/usr/bin/env python3
"""The official openai client against a running `dsv3 serve` (tests/test_serve.c).

  python3 tests/serve_openai_check.py PORT API_KEY '[prompt ids]' 'want,ids'

Completions and chat, streaming and not, n = 2; the greedy ids of the completion
equal transformers' (passed in by the test from the fixture); a tool call forced
by tool_choice reads as one through the client, whole and streamed (the client's
own accumulation), and goes back into the conversation with its result; the
client's structured output (a Pydantic model as response_format) parses the
answers into the model; a wrong key raises AuthenticationError and a bad
request BadRequestError.
Prints "openai client: ok" at the end."""
import json
import re
import sys

from typing import Literal, Optional

import openai
from openai.lib.streaming.chat import ChatCompletionStreamState
from pydantic import BaseModel, Field

port, key, prompt, want = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")]
c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)
extra = {"ignore_eos": True, "return_token_ids": True}

models = c.models.list()
assert [m.id for m in models.data] == ["m"], models

r = c.completions.create(model="m", prompt=prompt, max_tokens=len(want), temperature=0, logprobs=2, extra_body=extra)
ch = r.choices[0]
assert ch.model_extra["token_ids"] == want, (ch.model_extra, want)
assert ch.finish_reason == "length" and r.usage.completion_tokens == len(want) and r.usage.prompt_tokens == len(prompt)
assert len(ch.logprobs.token_logprobs) == len(want) and len(ch.logprobs.top_logprobs[0]) == 2

ids = []
for ev in c.completions.create(model="m", prompt=prompt, max_tokens=len(want), temperature=0, stream=True,
                               stream_options={"include_usage": True}, extra_body=extra):
    if ev.choices:
        ids += ev.choices[0].model_extra.get("token_ids", [])
    else:
        assert ev.usage.completion_tokens == len(want)
assert ids == want, (ids, want)

msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
r = c.chat.completions.create(model="m", messages=msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
text, n1 = r.choices[0].message.content, r.usage.completion_tokens
assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason in ("stop", "length")
assert len(r.choices[0].logprobs.content) == r.usage.completion_tokens
parts = []
for ev in c.chat.completions.create(model="m", messages=msgs, max_tokens=6, temperature=0, stream=True):
    if ev.choices and ev.choices[0].delta.content:
        parts.append(ev.choices[0].delta.content)
assert "".join(parts) == text, (parts, text)

# n = 2: two choices, greedy, so both are the greedy text; usage counts both
r = c.chat.completions.create(model="m", messages=msgs, max_tokens=6, temperature=0, n=2)
assert [x.index for x in r.choices] == [0, 1] and all(x.message.content == text for x in r.choices), r.choices
assert r.usage.completion_tokens == 2 * n1 and r.usage.prompt_tokens > 0, r.usage

# tools: a forced call, as the client reads it; streamed, the client's accumulator gives the same call
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ask = [{"role": "user", "content": "Weather in Oslo?"}]
choice = {"type": "function", "function": {"name": "get_weather"}}
r = c.chat.completions.create(model="m", messages=ask, tools=tools, tool_choice=choice, max_tokens=5, temperature=0)
m = r.choices[0].message
assert m.content is None and len(m.tool_calls) == 1, m
call = m.tool_calls[0]
assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_"), call
state = ChatCompletionStreamState()  # what the client's stream() helper accumulates with (it refuses "length")
for ev in c.chat.completions.create(model="m", messages=ask, tools=tools, tool_choice=choice, max_tokens=5, temperature=0,
                                    stream=True):
    state.handle_chunk(ev)
fm = state.current_completion_snapshot.choices[0].message
assert len(fm.tool_calls) == 1 and fm.tool_calls[0].function.name == "get_weather", fm
assert fm.tool_calls[0].function.arguments == call.function.arguments, (fm.tool_calls[0], call)
# tool_choice "required": the call's name, then its arguments as they grow; the accumulator gives the same call
kw = dict(model="m", messages=ask, tools=tools, tool_choice="required", max_tokens=60, temperature=0,
          extra_body={"ignore_eos": True, "logit_bias": {"1": 4, "92": 3}})
call = c.chat.completions.create(**kw).choices[0].message.tool_calls[0]
state, deltas = ChatCompletionStreamState(), 0
for ev in c.chat.completions.create(stream=True, **kw):
    state.handle_chunk(ev)
    deltas += bool(ev.choices and ev.choices[0].delta.tool_calls)
fm = state.current_completion_snapshot.choices[0].message
assert len(fm.tool_calls) == 1 and fm.tool_calls[0].function.name == call.function.name == "get_weather", fm
assert fm.tool_calls[0].function.arguments == call.function.arguments and deltas > 2, (fm.tool_calls[0], call, deltas)
# the call and its result go back as the next turn's history
r = c.chat.completions.create(model="m", messages=ask + [m, {"role": "tool", "tool_call_id": call.id, "content": "-3C"}],
                              tools=tools, max_tokens=3, temperature=0)
assert r.choices[0].message.role == "assistant" and r.usage.prompt_tokens > 0, r

# structured output: the client sends a Pydantic model's strict schema ($defs, $ref, anyOf for Optional,
# enum; bounds: maxLength, minimum / maximum, multipleOf, maxItems; pattern) and Pydantic validates the answer it parses and parses the answer into the model; a bias on '"', '}' and ']' (ids 1, 92, 60 of this byte-level
# vocabulary) lets the random model close what it opens
class Step(BaseModel):
    explanation: str = Field(max_length=40)
    code: str = Field(pattern=r"^[A-Z]{2}-\d{2,3}$")


class Weather(BaseModel):
    unit: Literal["C", "F"]
    days: int = Field(ge=1, le=14)
    hours: int = Field(multiple_of=6, ge=0, le=48)
    ok: bool
    note: Optional[int]
    steps: list[Step] = Field(max_length=3)
    days_off: set[Literal["mon", "tue", "wed"]]  # uniqueItems over an enum


for seed in range(3):
    r = c.chat.completions.parse(model="m", messages=ask, response_format=Weather, max_tokens=600, temperature=1, seed=seed,
                                 extra_body={"ignore_eos": True, "logit_bias": {"1": 4, "92": 3, "60": 3}})
    w = r.choices[0].message.parsed
    assert isinstance(w, Weather) and r.choices[0].finish_reason == "stop", r
    raw = json.loads(r.choices[0].message.content)["days_off"]  # the list as written: no member twice
    assert len(raw) == len(set(raw)), raw

# vLLM's guided decoding through extra_body: a regex and a choice hold the whole answer
r = c.chat.completions.create(model="m", messages=ask, max_tokens=20, temperature=1, seed=1,
                              extra_body={"ignore_eos": True, "guided_regex": r"[0-9]{3}-[a-z]{2}"})
assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", r.choices[0].message.content), r
r = c.completions.create(model="m", prompt="Where: ", max_tokens=20, temperature=1, seed=2,
                         extra_body={"ignore_eos": True, "structured_outputs": {"choice": ["Paris", "a.b"]}})
assert r.choices[0].text in ("Paris", "a.b"), r

# the Responses API: the client's create, stream and parse; the same greedy answers as chat
chat = c.chat.completions.create(model="m", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                 max_tokens=6, temperature=0)
r = c.responses.create(model="m", instructions="Be brief.", input="Hi", max_output_tokens=6, temperature=0)
assert r.output_text == chat.choices[0].message.content and r.usage.input_tokens == chat.usage.prompt_tokens, (r, chat)
kw = dict(model="m", input=[{"role": "user", "content": "Where?"}], max_output_tokens=20, temperature=1,
          extra_body={"ignore_eos": True, "guided_choice": ["Paris", "Lyon"]})
with c.responses.stream(**kw) as st:
    deltas = [ev.delta for ev in st if ev.type == "response.output_text.delta"]
    f = st.get_final_response()
assert f.status == "completed" and f.output_text in ("Paris", "Lyon") and "".join(deltas) == f.output_text, (f, deltas)
rt = [{"type": "function", "name": "get_weather", "description": "Weather in a city.",
       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
r = c.responses.create(model="m", input="Weather in Oslo?", tools=rt, tool_choice="required", max_output_tokens=60, temperature=0,
                       extra_body={"ignore_eos": True, "logit_bias": {"1": 4, "92": 3}})
fc = r.output[0]
assert fc.type == "function_call" and fc.name == "get_weather" and fc.call_id.startswith("call_"), r.output
assert fc.arguments == call.function.arguments, (fc, call)  # the call chat made for the same conversation above
r = c.responses.create(model="m", input=[{"role": "user", "content": "Weather in Oslo?"}, fc,
                                         {"type": "function_call_output", "call_id": fc.call_id, "output": "-3C"}],
                       tools=rt, max_output_tokens=3, temperature=0)
assert r.output[0].type == "message" and r.usage.input_tokens > 0, r
# output_text logprobs: the tokens of the text, each with its top alternatives (values: the server's test)
r = c.responses.create(model="m", input="Hi", max_output_tokens=5, temperature=0, include=["message.output_text.logprobs"],
                       top_logprobs=2)
lp = r.output[0].content[0].logprobs
assert len(lp) == 5 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lp), lp
# kept responses: chained by previous_response_id as the whole conversation sent again; retrieve, delete
first = c.responses.create(model="m", input="Hi", max_output_tokens=4, temperature=0)
nxt = c.responses.create(model="m", previous_response_id=first.id, input="More?", max_output_tokens=4, temperature=0)
again = c.responses.create(model="m", input=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": first.output_text},
                                             {"role": "user", "content": "More?"}], max_output_tokens=4, temperature=0)
assert nxt.output_text == again.output_text and nxt.usage.input_tokens == again.usage.input_tokens, (nxt, again)
assert c.responses.retrieve(first.id).output_text == first.output_text
c.responses.delete(first.id)
try:
    c.responses.retrieve(first.id)
    raise SystemExit("a deleted response retrieved")
except openai.NotFoundError:
    pass


class City(BaseModel):
    city: str = Field(max_length=12)


for seed in range(2):
    r = c.responses.parse(model="m", input="A city in JSON.", text_format=City, max_output_tokens=300, temperature=1,
                          extra_body={"ignore_eos": True, "seed": seed, "logit_bias": {"1": 4, "92": 3}})
    assert isinstance(r.output_parsed, City), r

try:
    c.chat.completions.create(model="m", messages=[], max_tokens=2)
    raise SystemExit("empty messages accepted")
except openai.BadRequestError as e:
    assert "'messages' is empty" in str(e), e
try:
    openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
    raise SystemExit("wrong key accepted")
except openai.AuthenticationError:
    pass
print("openai client: ok")
