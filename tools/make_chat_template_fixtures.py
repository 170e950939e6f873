#!/usr/bin/env python3
"""Chat-template fixtures: strings rendered by transformers' apply_chat_template
for a set of conversations under the DeepSeek-V3, Llama-3, Qwen2 (ChatML) and
Mistral chat templates.  dsv3's Jinja subset (src/tokenizer/jinja.c) must
render each one byte for byte, or fail with the same kind of error where
the template raises one.

The templates are carried in the fixture as strings.  Sources:
  deepseek_v3   the chat_template of deepseek-ai/DeepSeek-V3 tokenizer_config.json,
                read from ../shared/data/deepseek_v3_tokenizer/tokenizer_config.json
  llama3        meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json chat_template
  qwen2         Qwen/Qwen2-7B-Instruct tokenizer_config.json chat_template (ChatML)
  qwen25        Qwen2.5-Instruct's chat template: tools listed in the system turn, calls as
                <tool_call>{json}</tool_call>, results as <tool_response> in a user turn
  mistral       mistralai/Mistral-7B-Instruct-v0.1 tokenizer_config.json chat_template
  mistral_v3    mistralai/Mistral-7B-Instruct-v0.3 chat_template (optional system
                message, written across lines with {%- -%} whitespace control)
  subset, cycles  written here: the rest of the subset; values that contain themselves
The last five are written here from those files (this machine cannot download
them); whatever their exact provenance, the expected strings are jinja2's
rendering through transformers, so they test the renderer either way.

Also continue_final_message (with and without add_generation_prompt) and
chat_template_kwargs cases under some of them, into options.json beside it.

  python3 tools/make_chat_template_fixtures.py   # writes tests/fixtures/chat/templates.json, options.json
"""
import json
import os
import sys

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
         "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
           "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
           "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
           "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
           "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
           "roles are supported!') }}{% endif %}{% endfor %}")

MISTRAL_V3 = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.last and system_message is defined %}
            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# A template exercising the rest of the subset (lstrip/trim_blocks, filters,
# tests, loop.*, slices, namespace, dict literals, tojson, break/continue,
# select/reject/selectattr/rejectattr/map/dictsort as Llama-3.1-style templates use them).
SUBSET = """{# dsv3 subset check #}
{% set ns = namespace(n=0, names=[]) %}
  {% for m in messages if m.role != 'system' %}
    {% set ns.n = ns.n + 1 %}
{{ loop.index }}/{{ loop.length }} {{ m.role | upper }}: {{ m.content | trim | replace('  ', ' ') }}{% if not loop.last %} | {% endif %}
    {% if loop.index > 3 %}{% break %}{% endif %}
  {% endfor %}
n={{ ns.n }} first={{ (messages | first).role }} last={{ messages[-1]['role'] }} len={{ messages | length }}
{{ messages[1:] | length }} {{ messages[::-1][0].role }} {{ 7 // 2 }} {{ 7 % 3 }} {{ -7 // 2 }} {{ 2 ** 5 }} {{ 1.5 + 1 }}
{{ 'x' ~ 3 ~ none }} {{ 'abc'[1:] }} {{ 'a,b,c'.split(',') | join('+') }} {{ '  pad '.strip() }}|{{ 'Hi'.lower() }}
{{ {'k': [1, 'two', true, none]} | tojson }} {{ 'yes' if messages | length > 2 else 'no' }} {{ 3 is odd }} {{ undefined_var is defined }}
{%- for k, v in {'a': 1, 'b': 2}.items() %} {{ k }}={{ v }}{% endfor %}
{% for i in range(5) %}{% if i == 2 %}{% continue %}{% endif %}{{ i }}{% else %}empty{% endfor %}
{% for i in [] %}{{ i }}{% else %}empty{% endfor %}
{{ messages[0].get('name', 'anon') }} {{ 'content' in messages[0] }} {{ 'zz' not in 'abc' }} {{ messages[0]['content'].startswith('You') }}
{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('|') }} {{ messages | rejectattr('role', 'equalto', 'user') | list | length }}
{{ [1, 2, 3, 4] | select('odd') | list }} {{ ['a', 'code_interpreter', 'b'] | reject('equalto', 'code_interpreter') | join(", ") }} {{ ['x', 'y'] | map('upper') | join }} {{ messages | selectattr('name') | list | length }}
{%- for k, v in {'b': 1, 'A': 2, 'c': 3} | dictsort %} {{ k }}{{ v }}{% endfor %}
{%+ if true %}kept  {% endif +%}
{{- '  dash-trimmed  ' -}}
  end
tools={{ tools | map(attribute='function') | map(attribute='name') | join(',') if tools else tools }} {{ tools is defined }} {{ documents is none }} {{ (tools or [{}])[0] | tojson }}
"""

# Values that contain themselves (a namespace holding itself), printed and
# compared as Python does; tojson's indent forms; tojson of a namespace raises.
CYCLES = """{% set ns = namespace(n=messages | length, me=none) %}{% set ns.me = ns %}{{ ns }}
{{ ns == ns }} {{ [ns] == [ns] }} {{ ns.me.me.n }} {{ ns in [ns] }} {{ [ns, ns] | unique | list | length }}
{{ messages[0] | tojson(indent=0) }}|{{ [1, [2, []], {}] | tojson(indent=2) }}|{{ [messages | length] | tojson(indent=-1) }}
{% if messages | length > 3 %}{{ ns | tojson }}{% endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "  And 3+3?  \n"}],
    [{"role": "user", "content": "Écris un haïku sur la mer.\nMerci 🌊"}, {"role": "assistant", "content": "Vagues\nsel"},
     {"role": "user", "content": "Encore, avec des \"guillemets\" et {{ accolades }}."}],
    [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}, {"role": "user", "content": "two systems"}],
    [{"role": "user", "content": "one"}, {"role": "user", "content": "two users in a row"}],
    [{"role": "tool", "content": "a tool result"}],
]

# Tool definitions and conversations with tool calls and results (OpenAI's
# shapes: arguments as a JSON string), rendered with tools=TOOLS under the
# templates that know tools; the template sees `tools` as given.
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers «exactly».",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer", "minimum": -2.5}},
                       "required": ["a", "b"]}}},
]


def call(name, args):
    return {"id": "call_" + name, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


TOOL_CONVERSATIONS = [
    [{"role": "user", "content": "What's the weather in Paris?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Paris"})]},
     {"role": "tool", "tool_call_id": "call_get_weather", "content": "18°C, clear"}],
    [{"role": "user", "content": "Paris weather, and 2+3?"},
     {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Paris", "unit": "celsius"}),
                                                           call("add", {"a": 2, "b": 3})]},
     {"role": "tool", "tool_call_id": "call_get_weather", "content": "18°C"},
     {"role": "tool", "tool_call_id": "call_add", "content": "5"},
     {"role": "assistant", "content": "18°C in Paris; 2+3 = 5."}, {"role": "user", "content": "Thanks!"}],
    [{"role": "user", "content": "Add 1 and 1"},
     {"role": "assistant", "content": "Let me add them.", "tool_calls": [call("add", {"a": 1, "b": 1})]},
     {"role": "tool", "tool_call_id": "call_add", "content": "2"}],
    # arguments as an object, as templates that print them with tojson want them
    # (DeepSeek-V3's concatenates strings and raises on it)
    [{"role": "user", "content": "Weather in Oslo?"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": [1, 2.5]}}}]},
     {"role": "tool", "tool_call_id": "call_1", "content": "-3°C"}],
]
TOOL_TEMPLATES = ("deepseek_v3", "qwen25", "subset")
# KEEP_NONE: the tool conversations are rendered by render_jinja_template, the
# renderer apply_chat_template calls, with the messages as given.  transformers
# 5's apply_chat_template first drops every key whose value is None, and
# DeepSeek-V3's own template tells a tool-call turn by `content is none`: with
# the key dropped it fails on OpenAI-shaped turns (content: null).  dsv3
# renders the messages as given, as the template was written for (and as
# transformers 4 did).

SPECIALS = {
    "qwen25": (None, "<|im_end|>"),
    "deepseek_v3": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen2": (None, "<|im_end|>"),
    "mistral": ("<s>", "</s>"),
    "mistral_v3": ("<s>", "</s>"),
    "subset": ("<s>", "</s>"),
    "cycles": ("<s>", "</s>"),
}


# continue_final_message (the answer goes on from the final message, as
# vLLM's chat requests ask with it) and chat_template_kwargs (more template
# variables): tests/fixtures/chat/options.json
KWARGS = """{%- for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>
{% endfor %}{% if add_generation_prompt %}<assistant>{% if thinking %}<think>{% endif %}{% endif %}
{{- greeting | default('') }}{% if extra is defined %}{{ extra | tojson }}{% endif %}{{ bos_token }}"""

# drops the assistant's turns: a final assistant message cannot be continued
DROPS = "{% for m in messages if m.role != 'assistant' %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"

CONTINUE_CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "The answer is"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "List three colours."},
     {"role": "assistant", "content": "  Sure, here:\n1."}],
    [{"role": "user", "content": "Écris un haïku."}, {"role": "assistant", "content": "Vagues 🌊 "}],
    [{"role": "user", "content": "Say something."}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}, {"role": "user", "content": "three"},
     {"role": "assistant", "content": "four, and then\n\n"}],
    [{"role": "user", "content": "Complete my sentence: the quick brown"}],
    [],
    [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": None}],
]

KWARGS_CASES = [
    {},
    {"thinking": True},
    {"thinking": False, "greeting": "Hi «there»!"},
    {"extra": {"a": [1, 2.5, None], "b": "x"}, "greeting": ""},
    {"bos_token": "<B>"},
]


def options_fixture(ds_template):
    """continue_final_message and chat_template_kwargs rendered by apply_chat_template"""
    templates = {"deepseek_v3": ds_template, "llama3": LLAMA3, "qwen2": QWEN2, "mistral_v3": MISTRAL_V3,
                 "kwargs": KWARGS, "drops": DROPS}
    specials = dict(SPECIALS, kwargs=("<s>", "</s>"), drops=("<s>", "</s>"))
    result = []
    for name, tmpl in templates.items():
        bos, eos = specials[name]
        tok = tokenizer(bos, eos)
        cases = []
        for conv in CONTINUE_CONVERSATIONS:
            for agp in (False, True) if conv is CONTINUE_CONVERSATIONS[0] else (False,):
                case = {"messages": conv, "add_generation_prompt": agp, "continue_final_message": True}
                try:
                    case["rendered"] = tok.apply_chat_template(conv, chat_template=tmpl, tokenize=False,
                                                               add_generation_prompt=agp, continue_final_message=True)
                except Exception as e:
                    case["error"] = type(e).__name__ + ": " + str(e).split("\n")[0]
                cases.append(case)
        for kw in KWARGS_CASES if name in ("kwargs", "deepseek_v3") else []:
            for conv, cfm in ((CONVERSATIONS[1], False), (CONTINUE_CONVERSATIONS[0], True)):
                case = {"messages": conv, "add_generation_prompt": not cfm, "continue_final_message": cfm,
                        "chat_template_kwargs": kw}
                case["rendered"] = tok.apply_chat_template(conv, chat_template=tmpl, tokenize=False,
                                                           add_generation_prompt=not cfm, continue_final_message=cfm, **kw)
                cases.append(case)
        result.append({"name": name, "template": tmpl, "bos_token": bos, "eos_token": eos, "cases": cases})
    return result


def tokenizer(bos, eos):
    vocab = {"<unk>": 0}
    for t in (bos, eos):
        if t:
            vocab[t] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    kw = {}
    if bos:
        kw["bos_token"] = bos
    if eos:
        kw["eos_token"] = eos
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **kw)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/fixtures/chat/templates.json")
    cfg = os.path.join(ROOT, "../shared/data/deepseek_v3_tokenizer/tokenizer_config.json")
    with open(cfg, encoding="utf-8") as f:
        ds = json.load(f)["chat_template"]
    templates = {"deepseek_v3": ds, "llama3": LLAMA3, "qwen2": QWEN2, "qwen25": QWEN25, "mistral": MISTRAL, "mistral_v3": MISTRAL_V3,
                 "subset": SUBSET, "cycles": CYCLES}
    result = []
    for name, tmpl in templates.items():
        bos, eos = SPECIALS[name]
        tok = tokenizer(bos, eos)
        cases = []
        for conv in CONVERSATIONS:
            for agp in (False, True):
                case = {"messages": conv, "add_generation_prompt": agp}
                try:
                    case["rendered"] = tok.apply_chat_template(conv, chat_template=tmpl, tokenize=False,
                                                               add_generation_prompt=agp)
                except Exception as e:  # raise_exception or an undefined value
                    case["error"] = type(e).__name__ + ": " + str(e)
                cases.append(case)
        for conv in TOOL_CONVERSATIONS if name in TOOL_TEMPLATES else []:
            for agp in (False, True):
                case = {"messages": conv, "tools": TOOLS, "add_generation_prompt": agp}
                try:  # transformers' renderer on the messages as given (see KEEP_NONE)
                    case["rendered"] = render_jinja_template([conv], tools=TOOLS, chat_template=tmpl,
                                                             add_generation_prompt=agp, **tok.special_tokens_map)[0][0]
                except Exception as e:
                    case["error"] = type(e).__name__ + ": " + str(e)
                cases.append(case)
        result.append({"name": name, "template": tmpl, "bos_token": bos, "eos_token": eos, "cases": cases})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(t["cases"]) for t in result)
    print(f"wrote {out}: {len(result)} templates, {n} cases "
          f"({sum(1 for t in result for c in t['cases'] if 'error' in c)} raise)")
    out2 = os.path.join(os.path.dirname(out), "options.json")
    opts = options_fixture(ds)
    with open(out2, "w", encoding="utf-8") as f:
        json.dump(opts, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(t["cases"]) for t in opts)
    print(f"wrote {out2}: {len(opts)} templates, {n} cases "
          f"({sum(1 for t in opts for c in t['cases'] if 'error' in c)} raise)")


if __name__ == "__main__":
    main()
