#!/usr/bin/env python3
"""Fixture for duplicate keys in config.json (tests/test_config.c, config_duplicate_keys_last_wins).

Writes tests/fixtures/io/config_dup_keys.json: config_v3_tiny.json with keys repeated (at the top
level and inside rope_parameters) with different values, and config_dup_keys.expected.txt: the
values transformers reads from it (AutoConfig.from_pretrained, which uses Python's json module:
the last of repeated keys wins), as "field value" lines with dsv3's field names.

Run from the project root: python3 tools/make_dup_keys_fixture.py
"""
import json
import os

from transformers import AutoConfig

OUT = "tests/fixtures/io"
with open(os.path.join(OUT, "config_v3_tiny.json")) as f:
    body = f.read().strip()
assert body.startswith("{") and body.endswith("}")
inner = body[1:-1].strip()
text = ("{\n  \"hidden_size\": 48,\n  \"num_hidden_layers\": 7,\n" + "  " + inner + ",\n"
        "  \"num_hidden_layers\": 2,\n"
        "  \"eos_token_id\": 7,\n"
        "  \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 1000.0, \"factor\": 4.0,\n"
        "                      \"rope_theta\": 5000.0, \"factor\": 2.0, \"original_max_position_embeddings\": 64}\n}\n")
path = os.path.join(OUT, "config_dup_keys.json")
with open(path, "w") as f:
    f.write(text)
c = AutoConfig.from_pretrained(path)
rp = c.rope_parameters
eos = c.eos_token_id
e = {
    "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
    "eos_token_id": eos[0] if isinstance(eos, list) else eos,
    "rope_type": rp["rope_type"], "rope_theta": float(rp["rope_theta"]), "rope_factor": float(rp["factor"]),
    "rope_original_max_position_embeddings": rp["original_max_position_embeddings"],
    "vocab_size": c.vocab_size,
}
with open(os.path.join(OUT, "config_dup_keys.expected.txt"), "w") as f:
    for k, v in e.items():
        f.write(f"{k} {v!r}\n" if isinstance(v, float) else f"{k} {v}\n")
print("wrote", path)
