#!/usr/bin/env python3
"""make_regex_fixtures.py — the oracle for dsv3's regex guide (src/tokenizer/rx.c):
Python's re.  For each pattern, every string over a small alphabet up to a
length, in shortlex order (lengths 0, 1, ...; within one length, the alphabet's
order), and whether a JSON Schema validator takes it under {"type": "string",
"pattern": P} (re.search, and minLength / maxLength where given) and whether
re.fullmatch takes it (vLLM's guided_regex).  Written as bitmaps (bit i of the
hex string, little-endian in each byte: string i) to
tests/fixtures/regex/cases.json.

`slack`: the test checks that the guide refuses a prefix no listed string
extends only for prefixes at least this much shorter than max_len (a longer
one may need a longer completion than the listing holds).
"""
import itertools
import json
import os
import re
import sys

CASES = [
    # pattern, alphabet, max_len, slack, minLength, maxLength
    (r"^[a-z]+$", "ab0-", 5, 0, None, None),
    (r"^\d{3}-\d{2}$", "01-a", 7, 6, None, None),
    (r"ab", "abc", 5, 2, None, None),
    (r"^(foo|ba[rz])?$", "fobarz", 4, 3, None, None),
    (r"^\S+@\S+\.\S+$", "a@. ", 7, 4, None, None),
    (r'^[^"\\]*$', 'a"\\\n', 4, 0, None, None),
    (r"x$", "x\ny", 5, 2, None, None),
    (r"^[é-ë]\s[^a]$", "éa \u3000\u2028", 3, 3, None, None),
    (r"^[ab]*$", "abc", 6, 0, 2, 4),
    (r"^(aa)*$", "ab", 7, 2, 1, 5),
    (r"(aa)+", "ab", 6, 2, 3, None),
    (r"^a{2,3}b?$", "ab", 5, 3, None, None),
    (r"(?:x|y){2}z*", "xyz", 5, 2, None, None),
    (r"[^\d]", "01a", 4, 1, None, None),
    (r"^\D\W\s$", "a0 -_", 3, 3, None, None),
    (r"^.{2}$", "a\né", 4, 2, None, None),
    (r"^(?P<y>\d{4})-(?:0[1-9]|1[0-2])$", "0129-", 7, 7, None, None),
    (r"", "a\n", 3, 0, None, None),
    (r"^$", "a\n", 3, 1, None, None),
    (r"yes|no|maybe", "yesnomab", 4, 4, None, None),
    (r"a|^b", "abc", 3, 1, None, None),
    (r"^(ab|a)*c$", "abc", 6, 1, None, None),
    (r"\u00e9\x41", "éAa", 4, 2, None, None),
    (r"^[\w.-]+\.[a-z]{2,3}$", "a.-_ Z", 5, 4, 3, 5),
    (r"^(?:[01]\d|2[0-3]):[0-5]\d$", "0125:9", 6, 5, None, None),
    (r'^\\"?\t?$', '\\"\ta', 4, 2, None, None),
    (r"^[^\W_]+$", "a_ -", 4, 0, None, None),
    (r"^a+?b{1,}?c??$", "abc", 5, 2, None, None),
    (r"a{,2}b{2,}$", "ab", 5, 2, None, None),
    (r"[]a]x{}", "]ax{}", 5, 4, None, None),
]


def bitmap(bits):
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return out.hex()


def main():
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "regex", "cases.json")
    cases = []
    for pat, alpha, max_len, slack, mn, mx in CASES:
        cre = re.compile(pat)
        srch, full = [], []
        for n in range(max_len + 1):
            for t in itertools.product(alpha, repeat=n):
                s = "".join(t)
                ok = cre.search(s) is not None and (mn is None or len(s) >= mn) and (mx is None or len(s) <= mx)
                srch.append(ok)
                full.append(cre.fullmatch(s) is not None)
        c = {"pattern": pat, "alphabet": list(alpha), "max_len": max_len, "slack": slack, "search": bitmap(srch)}
        if mn is not None:
            c["minLength"] = mn
        if mx is not None:
            c["maxLength"] = mx
        if mn is None and mx is None:
            c["full"] = bitmap(full)
        c["n_search"], c["n_full"] = sum(srch), sum(full)
        cases.append(c)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"python": sys.version.split()[0], "cases": cases}, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {out}: {len(cases)} patterns")


if __name__ == "__main__":
    main()
