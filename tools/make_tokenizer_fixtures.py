#!/usr/bin/env python3
"""make_tokenizer_fixtures.py — expected outputs for dsv3's tokenizer tests,
computed with Hugging Face `tokenizers` and `tiktoken` (the oracles).

    python3 tools/make_tokenizer_fixtures.py            # writes tests/fixtures/tokenizer/

Writes:
  llama3_style.json         a Llama-3-style tokenizer.json (Llama-3 regex, ignore_merges,
                            BOS template) trained here with tokenizers on TinyShakespeare +
                            WikiText-2 at vocab 3000
  cases_deepseek_v3.json    ids of the DeepSeek-V3 tokenizer (../shared/data/deepseek_v3_tokenizer)
  cases_gpt2.json           ids of GPT-2 (tokenizers, from the cs336 vocab/merges) and tiktoken's
                            gpt2 encoding built from the same files (no download)
  cases_llama3_style.json   ids of llama3_style.json (without and with the BOS template)
  cases_variants.json       llama3_style.json with other pre-tokenizer chains (Split String/Regex with
                            every behavior and invert, Digits, ByteLevel add_prefix_space/use_regex)
                            and added tokens with lstrip/rstrip/single_word/normalized: the
                            patch ("pre_tokenizer", "added_tokens") and the ids of the short texts
  cases_byte_fallback.json  a non-byte-level BPE (chars, trained here) with <0xXX> tokens: byte_fallback
                            on, and off with unk + fuse_unk; the whole tokenizer.json and ids
  nfc_cases.json            NFC (tokenizers' normalizers.NFC) of decomposed/mixed strings, of every
                            character with a canonical decomposition and of every combining mark
                            (Unicode 17.0's lists), and of the Unicode 15/16/17 texts
  ucat_oniguruma.json       which codepoints tokenizers' regex engine puts in \p{L} \p{M} \p{N} \p{P}
                            \p{S} \p{Nd} \s (inversion lists), and the Unicode version they equal
  train_ts1000_gpt2.json    BpeTrainer merges: TinyShakespeare, vocab 1000, GPT-2 pre-tokenizer
  train_ts8000_dsv3.json    BpeTrainer merges: TinyShakespeare, vocab 8000, DeepSeek-V3 pre-tokenizer
Each cases file: [{"name", "text" | ("file", "off", "len"), "ids", ["ids_special"]}].
Text slices of shared corpora are stored by offset to keep the fixtures small.

The Unicode 15.0 / 15.1 / 16.0 / 17.0 texts and the version probe need the unicodedata2
package at those versions, each in its own folder:
    for v in 15.0.0 15.1.0 16.0.0 17.0.0; do pip install --target /tmp/ud2-$v unicodedata2==$v; done
(UD2_DIR=/tmp/ud2- is the prefix).
"""
import importlib, json, os, sys, random, unicodedata

from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, processors, trainers
import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
DS = os.path.join(SHARED, "data", "deepseek_v3_tokenizer", "tokenizer.json")
CS = os.path.join(SHARED, "data", "cs336_bpe_fixtures")
TS = os.path.join(SHARED, "data", "tinyshakespeare", "input.txt")
WT = os.path.join(SHARED, "data", "wikitext2", "wiki.test.raw")

GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
DSV3_SPLITS = [
    r"\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
]

UD2_DIR = os.environ.get("UD2_DIR", "/tmp/ud2-")
_UCD = {}


def ucd(version):
    """unicodedata2 at `version` (from UD2_DIR + version), or Python's own unicodedata"""
    if version == unicodedata.unidata_version:
        return unicodedata
    if version not in _UCD:
        sys.path.insert(0, UD2_DIR + version)
        for m in [m for m in sys.modules if m.startswith("unicodedata2")]:
            del sys.modules[m]
        mod = importlib.import_module("unicodedata2")
        sys.path.pop(0)
        if mod.unidata_version != version:
            sys.exit("need unicodedata2==%s in %s%s (found %s)" % (version, UD2_DIR, version, mod.unidata_version))
        _UCD[version] = mod
    return _UCD[version]


def new_in(version, prev, lo, hi):
    """codepoints of [lo, hi] assigned in `version` but not in `prev`, by category"""
    a, b = ucd(version), ucd(prev)
    out = {}
    for c in range(lo, hi + 1):
        if b.category(chr(c)) == "Cn" and a.category(chr(c)) != "Cn":
            out.setdefault(a.category(chr(c))[0] if a.category(chr(c)) != "Nd" else "Nd", []).append(chr(c))
    return out


def script_text(label, version, prev, lo, hi, rnd):
    """words of the letters and marks of a block new in `version`, its digits and punctuation,
    between ASCII words, spaces, newlines and Latin punctuation"""
    g = new_in(version, prev, lo, hi)
    letters, marks = g.get("L", []), g.get("M", [])
    parts = [label + ":"]
    for k in range(24):
        w = []
        for _ in range(rnd.randint(1, 6)):
            if letters:
                w.append(rnd.choice(letters))
            if marks and rnd.random() < 0.4:
                w.append(rnd.choice(marks))
        if marks and rnd.random() < 0.15:
            w.insert(0, rnd.choice(marks))  # a mark after a space or at the start
        parts.append("".join(w))
        r = rnd.random()
        if r < 0.2 and g.get("Nd"):
            parts.append("".join(rnd.choice(g["Nd"]) for _ in range(rnd.randint(1, 5))))
        elif r < 0.3 and g.get("N"):
            parts.append("".join(rnd.choice(g["N"]) for _ in range(rnd.randint(1, 4))))
        elif r < 0.45 and g.get("P"):
            parts[-1] += rnd.choice(g["P"])
        elif r < 0.55 and g.get("S"):
            parts.append(rnd.choice(g["S"]) * rnd.randint(1, 3))
        elif r < 0.65:
            parts[-1] += rnd.choice([",", ".", "!", "'s", "\n", "-x", "12", "\u00a0"])
        elif r < 0.75:
            parts.append(rnd.choice(["the", "word", "42", "(a)"]))
    return " ".join(parts)


def compositions_new_in(version, prev):
    """canonical pairs whose composite is new in `version`, as decomposed and composed text"""
    a, b = ucd(version), ucd(prev)
    out = []
    for c in range(0x80, 0x30000):
        ch = chr(c)
        if b.category(ch) != "Cn" or a.category(ch) == "Cn":
            continue
        d = a.decomposition(ch)
        if d and not d.startswith("<") and len(d.split()) == 2:
            out.append(a.normalize("NFD", ch) + " " + ch)
    return " ".join(out)


def codepoint_soup(cps, rnd):
    """The codepoints in order, with a space, 'a', a newline or '1' after some (rnd draws one
    number per codepoint, so the same rnd state gives the same text)."""
    s = []
    for c in cps:
        k = rnd.random()
        s.append(chr(c))
        if k < 0.15:
            s.append(" ")
        elif k < 0.2:
            s.append("a")
        elif k < 0.23:
            s.append("\n")
        elif k < 0.26:
            s.append("1")
    return "".join(s)


def unicode_new_texts():
    """texts with characters added in Unicode 15.0, 15.1, 16.0 and 17.0"""
    rnd = random.Random(1515)
    t = [
        ("unicode15_0_kawi", script_text("Kawi", "15.0.0", "14.0.0", 0x11F00, 0x11F5F, rnd)),
        ("unicode15_0_nag_mundari", script_text("Nag Mundari", "15.0.0", "14.0.0", 0x1E4D0, 0x1E4FF, rnd)),
        ("unicode15_0_misc", script_text("Kaktovik", "15.0.0", "14.0.0", 0x1D2C0, 0x1D2DF, rnd) + " "
         + script_text("Cyrillic Ext-D", "15.0.0", "14.0.0", 0x1E030, 0x1E08F, rnd) + " "
         + script_text("Devanagari Ext-A", "15.0.0", "14.0.0", 0x11B00, 0x11B5F, rnd)
         + " \u0cf3\u0cb8\u0cf3 \u0ece\u0e81\u0ece \U00031350\U00031351\U000323af \U00010efd\u0628\U00010eff"),
        ("unicode15_1_cjk_ext_i", "CJK I: " + "".join(chr(c) for c in range(0x2EBF0, 0x2EC10)) + " \u4e2d\U0002ebf0\u6587 "
         + "\u2ffc\u2ffd\u2ffe\u2fff\u31ef \u2ffc\u4e00\u4e8c 1\U0002ee5d2"),
        ("unicode16_0_garay", script_text("Garay", "16.0.0", "15.1.0", 0x10D40, 0x10D8F, rnd)),
        ("unicode16_0_todhri", script_text("Todhri", "16.0.0", "15.1.0", 0x105C0, 0x105FF, rnd)),
        ("unicode16_0_kirat_rai", script_text("Kirat Rai", "16.0.0", "15.1.0", 0x16D40, 0x16D7F, rnd)),
        ("unicode16_0_tulu_tigalari", script_text("Tulu-Tigalari", "16.0.0", "15.1.0", 0x11380, 0x113FF, rnd)),
        ("unicode16_0_gurung_khema", script_text("Gurung Khema", "16.0.0", "15.1.0", 0x16100, 0x1613F, rnd)),
        ("unicode16_0_misc", script_text("Sunuwar", "16.0.0", "15.1.0", 0x11BC0, 0x11BFF, rnd) + " "
         + script_text("Ol Onal", "16.0.0", "15.1.0", 0x1E5D0, 0x1E5FF, rnd) + " "
         + script_text("Myanmar Ext-C", "16.0.0", "15.1.0", 0x116D0, 0x116FF, rnd) + " "
         + script_text("Legacy Computing", "16.0.0", "15.1.0", 0x1CC00, 0x1CEBF, rnd)
         + " \u0897\u0628 \u1c89\u1c8a \u1c89x \ua7cb\ua7cc\ua7cd\ua7da\ua7db\ua7dc \u2427\u2428\u2429 a\u2427b"
         + " \U00013460\U00013461 \U0001ccf0\U0001ccf9"),
        ("unicode16_0_compositions", compositions_new_in("16.0.0", "15.1.0")),
        ("unicode17_0", script_text("Sidetic", "17.0.0", "16.0.0", 0x10940, 0x1095F, rnd) + " "
         + script_text("Tolong Siki", "17.0.0", "16.0.0", 0x11DB0, 0x11DEF, rnd) + " "
         + script_text("Beria Erfe", "17.0.0", "16.0.0", 0x16EA0, 0x16EDF, rnd) + " \u20c1100 \u0c5c\u0cdc"),
    ]
    # codepoints whose category differs between Unicode 14.0 and 16.0 or 17.0 (all of the
    # non-Lo ones, every 8th Lo), so that a table of the wrong version fails
    u14, u16, u17 = ucd("14.0.0"), ucd("16.0.0"), ucd("17.0.0")
    ch = [c for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000
          and (u14.category(chr(c)) != u16.category(chr(c)) or u14.category(chr(c)) != u17.category(chr(c)))]
    ch = [c for i, c in enumerate(ch) if u17.category(chr(c)) != "Lo" or i % 8 == 0]
    for i in range(0, len(ch), 2048):
        t.append(("newcodepoints_%05x" % ch[i], codepoint_soup(ch[i:i + 2048], rnd)))
    return t


def texts():
    t = [
        ("empty", ""),
        ("hello", "Hello, world!"),
        ("published_vector", "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ"),
        ("prose", "The quick brown fox jumps over the lazy dog. It's 5 o'clock; don't you've I'm we'll they'd."),
        ("contractions_case", "DON'T I'M WE'LL You'Re THEY'D it'S"),
        ("numbers", "1234567 + 89 = 1234656; pi=3.14159265358979; 1,000,000 and 0.5e-10 -42 ٣٤٥ ①②③ ½"),
        ("whitespace_runs", "a  b   c    d\t\te\n\nf \n g  \n\n  h   \r\n i\u00a0\u00a0j\u3000k \u2028 l\u0085m\u180en \u200b o"),
        ("trailing_spaces", "end with spaces   "),
        ("leading_newlines", "\n\n\nstart"),
        ("only_spaces", "     "),
        ("code_c", "int main(int argc, char **argv) {\n    for (int i = 0; i < argc; i++) {\n        printf(\"%s\\n\", argv[i]);\n    }\n    return 0;\n}\n"),
        ("code_py", "def f(x):\n\treturn {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\n\nclass A(object):\n    pass\n"),
        ("punct_newlines", "Hello.\nWorld!\n\nNext?\r\nYes...\n\n\n--\n;;\n)\n"),
        ("cjk", "你好，世界！这是一个测试。中文分词和标点符号：“引号”与（括号）。"),
        ("kana", "こんにちは、世界。カタカナとひらがな、ｶﾀｶﾅ（半角）。東京タワー"),
        ("korean", "안녕하세요 세계! 한국어 텍스트입니다."),
        ("arabic", "مرحبا بالعالم! هذا نص عربي، مع أرقام ١٢٣ و 456."),
        ("hebrew_greek_cyrillic", "שלום עולם. Γειά σου Κόσμε. Привет, мир! Ёжик в тумане."),
        ("devanagari_thai", "नमस्ते दुनिया। สวัสดีชาวโลก ภาษาไทย"),
        ("emoji", "I ❤️ 🤖 and 👨‍👩‍👧‍👦! 🇯🇵🇺🇸 👍🏽 ✨✨✨"),
        ("mixed_scripts", "Mix: English中文日本語한국어العربيةРусский123abc！？…—–·•"),
        ("combining_marks", "e\u0301 a\u0308 n\u0303 Ω\u0342 ḁ̴̢̛ Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇"),
        ("symbols", "€100 £50 ¥1000 $5 © ® ™ ° ± × ÷ ∑ ∫ √ ∞ ≠ ≤ ≥ → ← ↑ ↓ ♠ ♣ ♥ ♦ ♪ ☺"),
        ("urls", "See https://example.com/path?q=1&r=two#frag and mail@host.org or C:\\Windows\\System32."),
        ("specials_in_text", "<｜begin▁of▁sentence｜>Hi<｜User｜>question<｜Assistant｜>answer<｜end▁of▁sentence｜><|endoftext|> <|begin_of_text|>x"),
        ("fim", "<｜fim▁begin｜>def f():<｜fim▁hole｜>\n    return 1<｜fim▁end｜>"),
        ("tool_tokens", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
        ("long_line", ("lorem ipsum dolor sit amet " * 60).strip()),
        ("long_word", "a" * 3000),
        ("long_digits", "9" * 1000),
        ("long_spaces", " " * 500 + "x" + "\n" * 300 + "y"),
        ("long_mixed_word", "ab" * 700 + "ĠÑĤÐ²" * 200),
        ("control_chars", "a\x01b\x02\x1fc\x7fd\tfoo\x0bbar\x0cbaz"),
        ("private_use_and_rare", "\ue000\uf8ff \U0001F600 \U00020000\U0002A6D6 \U000E0001 \u2060\ufeff"),
        ("json_like", '{"key": "value", "list": [1, 2.5, null, true], "nested": {"a": "b"}}'),
        ("markdown", "# Title\n\n* item one\n* item two\n\n```python\nprint('x')\n```\n\n| a | b |\n|---|---|\n"),
    ]
    # every BMP codepoint class, in groups (catches \s, \p{L}, \p{N}, \p{P}, \p{S}, \p{M} differences).
    # Codepoints unassigned in Unicode 14 are left out here (they keep the fixtures of earlier
    # releases unchanged); unicode_new_texts() covers those of 15.0 .. 17.0.
    rnd = random.Random(1234)
    def assigned(c):
        return unicodedata.category(chr(c)) not in ("Cn", "Cs")
    cps = [c for c in range(1, 0x3400) if assigned(c)]
    cps += [c for c in range(0xA000, 0x10000) if assigned(c)]
    cps += [c for c in range(0x1F300, 0x1F700) if assigned(c)]
    for i in range(0, len(cps), 2048):
        t.append(("codepoints_%05x" % cps[i], codepoint_soup(cps[i:i + 2048], rnd)))
    # random soup of ASCII-ish characters
    alphabet = "ab c\n\t .,;!?'\"()[]{}0123456789xyz\r-_/\\#@ é中あ😀"
    for k in range(8):
        t.append(("soup_%d" % k, "".join(rnd.choice(alphabet) for _ in range(800))))
    return t + unicode_new_texts()


def corpus_slices():
    out = []
    for path, rel in [(WT, "data/wikitext2/wiki.test.raw"), (TS, "data/tinyshakespeare/input.txt")]:
        data = open(path, "rb").read()
        for off, ln in [(0, 30000), (len(data) // 2, 30000)]:
            # move both ends to character boundaries
            while off < len(data) and (data[off] & 0xC0) == 0x80:
                off += 1
            end = min(len(data), off + ln)
            while end < len(data) and (data[end] & 0xC0) == 0x80:
                end += 1
            out.append((rel, off, end - off, data[off:end].decode("utf-8")))
    return out


def make_cases(encode, encode_special=None):
    cases = []
    for name, text in texts():
        c = {"name": name, "text": text, "ids": encode(text)}
        if encode_special and len(text) < 2000:  # the template is checked on the short texts
            c["ids_special"] = encode_special(text)
        cases.append(c)
    for rel, off, ln, text in corpus_slices():
        c = {"name": "%s[%d:+%d]" % (rel, off, ln), "file": rel, "off": off, "len": ln, "ids": encode(text)}
        cases.append(c)
    return cases


def dump(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")


def gpt2_tokenizer():
    vocab = json.load(open(os.path.join(CS, "gpt2_vocab.json"), encoding="utf-8"))
    merges = []
    for line in open(os.path.join(CS, "gpt2_merges.txt"), encoding="utf-8"):
        line = line.rstrip("\n")
        if not line or line.startswith("#version"):
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok, vocab


def tiktoken_gpt2(vocab):
    b2u = {}
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    u2b = {chr(c): b for b, c in zip(bs, cs)}
    ranks = {}
    for tokstr, i in vocab.items():
        if tokstr == "<|endoftext|>":
            continue
        ranks[bytes(u2b[ch] for ch in tokstr)] = i
    return tiktoken.Encoding(name="gpt2_local", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def train_llama3_style():
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([TS, WT], tr)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return tok


def dsv3_pretok():
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in DSV3_SPLITS]
                                   + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_merges(pretok, vocab_size, files, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pretok
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(files, tr)
    m = json.loads(tok.to_str())["model"]
    merges = [x if isinstance(x, list) else x.split(" ") for x in m["merges"]]
    return {"vocab_size": vocab_size, "special_tokens": specials, "nvocab": len(m["vocab"]), "merges": merges}


def nfc_strings():
    """decomposed, precomposed, reordered and Hangul text for the NFC tests"""
    rnd = random.Random(99)
    marks = [c for c in range(0x300, 0x370)] + [0x1DC0, 0x20D0, 0x302A, 0x3099, 0x309A, 0x05B0, 0x0951, 0x093C]
    bases = [ord(c) for c in "aeiouAEIOUnNcCsSzZyYkKwWgGhH"] + [0x3B1, 0x3B7, 0x3C9, 0x41, 0x304B, 0x30AB, 0x0915]
    jamo = list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3))
    out = ["e\u0301", "\u00e9", "A\u030a\u0301", "\u1e9b\u0323", "\u0958\u0959", "\u212b\u2126",
           "\u1100\u1161\u11a8 \uac00\u11a8", "q\u0307\u0323", "\u0344", "\u0f73\u0f75", "a\u0328\u0301\u0300\u0316",
           "\u3071\u304b\u3099 \u30cf\u309a", "\u00c5\u0301x", "\ufb2c\u05bc", "i\u0307\u0301"]
    for k in range(45):
        sb = []
        for _ in range(rnd.randint(5, 40)):
            r = rnd.random()
            if r < 0.35:
                sb.append(chr(rnd.choice(bases)))
            elif r < 0.65:
                sb.append(chr(rnd.choice(marks)))
            elif r < 0.8:
                sb.append(chr(rnd.choice(jamo)))
            elif r < 0.9:
                sb.append(unicodedata.normalize("NFD", chr(rnd.choice([0xE9, 0x1EA5, 0xAC01, 0x1E0B, 0x212B, 0x3060]))))
            else:
                sb.append(" ")
        out.append("".join(sb))
    # every character that has a canonical decomposition (Unicode 14), alone and decomposed
    for cp in range(0xC0, 0x30000):
        c = chr(cp)
        if unicodedata.category(c) in ("Cn", "Cs") or not unicodedata.decomposition(c) or unicodedata.decomposition(c).startswith("<"):
            continue
        out.append(c + unicodedata.normalize("NFD", c) + "\u0301" + c)
    return out


def nfc_strings_new():
    """the characters that Unicode 15.0 .. 17.0 gave a canonical decomposition or a combining
    class (and every combining mark), composed and decomposed, and around U+0316 (class 220)
    so that a wrong class reorders differently"""
    u17 = ucd("17.0.0")
    out = []
    for cp in range(0x80, 0x110000):
        c = chr(cp)
        if 0xD800 <= cp < 0xE000:
            continue
        d = u17.decomposition(c)
        if d and not d.startswith("<") and (unicodedata.category(c) == "Cn" or unicodedata.decomposition(c) != d):
            out.append(c + " " + u17.normalize("NFD", c) + "\u0301")
        if u17.combining(c):
            out.append("a" + c + "\u0316 a\u0316" + c + " " + c + "\u0345")
    return out


def oniguruma_classes():
    """inversion lists of the codepoints that tokenizers' regex engine (Oniguruma) matches with
    \p{L} \p{M} \p{N} \p{P} \p{S} \p{Nd} \s, and which Unicode version's categories they equal"""
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    allstr = "".join(chr(c) for c in cps)
    pats = {"L": r"\p{L}", "M": r"\p{M}", "N": r"\p{N}", "P": r"\p{P}", "S": r"\p{S}", "Nd": r"\p{Nd}", "s": r"\s"}
    sets = {}
    for k, p in pats.items():
        pieces = pre_tokenizers.Split(Regex(p), behavior="removed").pre_tokenize_str(allstr)
        rest = set("".join(x for x, _ in pieces))
        sets[k] = set(c for c in cps if chr(c) not in rest)
    def expect(ud, k):
        if k == "s":
            return set(c for c in cps if 9 <= c <= 13 or c == 0x85 or ud.category(chr(c))[0] == "Z")
        if k == "Nd":
            return set(c for c in cps if ud.category(chr(c)) == "Nd")
        return set(c for c in cps if ud.category(chr(c))[0] == k)
    equal = [v for v in ["14.0.0", "15.0.0", "15.1.0", "16.0.0", "17.0.0"]
             if all(expect(ucd(v), k) == sets[k] for k in pats)]
    print("tokenizers' regex classes equal Unicode", equal, file=sys.stderr)
    out = {"unicode": equal}
    for k in pats:
        inv, prev = [], False
        for c in range(0x110001):
            cur = c in sets[k]
            if cur != prev:
                inv.append(c)
                prev = cur
        out[k] = inv
    return out


def variants(base_path):
    from tokenizers import AddedToken
    P = pre_tokenizers
    chains = {
        "string_merged_prev": P.Sequence([P.Split(" ", behavior="merged_with_previous"),
                                          P.ByteLevel(add_prefix_space=False, use_regex=False)]),
        "ws_merged_next_digits_prefix": P.Sequence([P.Split(Regex(r"\s+"), behavior="merged_with_next"),
                                                    P.Digits(individual_digits=True),
                                                    P.ByteLevel(add_prefix_space=True, use_regex=True)]),
        "vowels_contiguous_invert": P.Sequence([P.Split(Regex("[aeiou]"), behavior="contiguous", invert=True),
                                                P.Digits(individual_digits=False),
                                                P.ByteLevel(add_prefix_space=False, use_regex=False)]),
        "punct_removed_prefix": P.Sequence([P.Split(Regex(r"\p{P}"), behavior="removed"),
                                            P.ByteLevel(add_prefix_space=True, use_regex=False)]),
        "word_digit_eol": P.Sequence([P.Split(Regex(r"\w+|\d+| $"), behavior="isolated"),
                                      P.ByteLevel(add_prefix_space=False, use_regex=False)]),
        "string_isolated_invert": P.Sequence([P.Split("ab", behavior="isolated", invert=True),
                                              P.ByteLevel(add_prefix_space=False, use_regex=True)]),
        "bytelevel_only_prefix": P.ByteLevel(add_prefix_space=True, use_regex=True),
        "qwen2_style": P.Sequence([P.Split(Regex(QWEN2_PAT), behavior="isolated"),
                                   P.ByteLevel(add_prefix_space=False, use_regex=False)]),
    }
    names = [n for n, _ in texts() if not n.startswith(("codepoints", "newcodepoints", "long"))]
    tx = dict(texts())
    extra = ["<mask> x <mask>", "a [R]   b [R]\nc", "cat concat cat_ cat. (cat)", "the cat sat", "  <mask>lead",
             "x<|end_of_text|>  y", "<mask><mask>[R][R]cat"]
    out = []
    for name, pre in chains.items():
        tok = Tokenizer.from_file(base_path)
        tok.pre_tokenizer = pre
        patch = {"pre_tokenizer": json.loads(tok.to_str())["pre_tokenizer"]}
        if name == "qwen2_style":  # Qwen2: NFC normalizer, single digits
            tok.normalizer = __import__("tokenizers").normalizers.NFC()
            patch["normalizer"] = json.loads(tok.to_str())["normalizer"]
        out.append({"name": name, "patch": patch,
                    "cases": [{"text": tx[n], "ids": tok.encode(tx[n], add_special_tokens=False).ids} for n in names]})
    # NFC normalizer, on decomposed and mixed text
    from tokenizers import normalizers
    nfc_texts = nfc_strings()[:60]
    for nname, norm in [("nfc", normalizers.NFC()), ("nfc_in_sequence", normalizers.Sequence([normalizers.NFC()]))]:
        tok = Tokenizer.from_file(base_path)
        tok.normalizer = norm
        cs = [tx[n] for n in names] + nfc_texts
        out.append({"name": nname, "patch": {"normalizer": json.loads(tok.to_str())["normalizer"]},
                    "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in cs]})
    tok = Tokenizer.from_file(base_path)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.add_tokens([AddedToken("[R]", rstrip=True, normalized=False), AddedToken("cat", single_word=True),
                    AddedToken("the cat", normalized=True)])
    d = json.loads(tok.to_str())
    out.append({"name": "added_token_flags", "patch": {"added_tokens": d["added_tokens"]},
                "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in extra + [tx[n] for n in names]]})
    return out


def byte_fallback_tokenizers():
    """non-byte-level BPE (chars as symbols) trained on TinyShakespeare with a small
    alphabet, then given <0xXX> byte tokens: byte_fallback on, and off with an
    unk token (fuse_unk on)"""
    P = pre_tokenizers
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.pre_tokenizer = P.Split(Regex(r"\s+|[^\s\w]+"), behavior="isolated")
    tr = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>"], limit_alphabet=40, show_progress=False)
    base.train([TS], tr)
    m = json.loads(base.to_str())["model"]
    vocab = dict(m["vocab"])
    for b in range(256):
        vocab.setdefault("<0x%02X>" % b, len(vocab))
    merges = [tuple(x) if isinstance(x, list) else tuple(x.split(" ")) for x in m["merges"]]
    out = []
    for name, bf, fuse in [("byte_fallback_on", True, False), ("byte_fallback_off_unk_fused", False, True)]:
        tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=bf, fuse_unk=fuse))
        tok.pre_tokenizer = base.pre_tokenizer
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
        cs = [t for n, t in texts() if not n.startswith(("codepoints", "newcodepoints", "long"))]
        out.append({"name": name, "tokenizer": json.loads(tok.to_str()),
                    "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in cs]})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    # DeepSeek-V3
    ds = Tokenizer.from_file(DS)
    dump("cases_deepseek_v3.json", make_cases(lambda s: ds.encode(s, add_special_tokens=False).ids))
    # GPT-2: tokenizers and tiktoken must agree (checked here), the C side is compared to both
    g2, vocab = gpt2_tokenizer()
    tk = tiktoken_gpt2(vocab)
    def g2enc(s):
        a = g2.encode(s, add_special_tokens=False).ids
        b = tk.encode(s, allowed_special="all")
        if a != b:
            print("note: tokenizers and tiktoken differ on GPT-2 for %r..." % s[:40], file=sys.stderr)
        return b
    cases = make_cases(g2enc)
    for f in ["address.txt", "german.txt", "tinystories_sample.txt"]:
        text = open(os.path.join(CS, f), encoding="utf-8").read()
        cases.append({"name": "cs336/" + f, "file": "data/cs336_bpe_fixtures/" + f, "off": 0,
                      "len": len(text.encode("utf-8")), "ids": tk.encode(text, allowed_special="all")})
    dump("cases_gpt2.json", cases)
    # Llama-3 style
    l3 = train_llama3_style()
    l3.save(os.path.join(OUT, "llama3_style.json"))
    print("wrote llama3_style.json", os.path.getsize(os.path.join(OUT, "llama3_style.json")))
    dump("cases_llama3_style.json", make_cases(lambda s: l3.encode(s, add_special_tokens=False).ids,
                                               lambda s: l3.encode(s, add_special_tokens=True).ids))
    dump("cases_variants.json", variants(os.path.join(OUT, "llama3_style.json")))
    dump("cases_byte_fallback.json", byte_fallback_tokenizers())
    # NFC: tokenizers' normalizer is the oracle (its tables are older than Python's, see
    # tools/gen_nfc_tables.py)
    nfc = __import__("tokenizers").normalizers.NFC()
    nts = nfc_strings() + nfc_strings_new() + [t for n, t in unicode_new_texts() if not n.startswith("newcodepoints")]
    dump("nfc_cases.json", [{"in": t, "out": nfc.normalize_str(t)} for t in nts])
    dump("ucat_oniguruma.json", oniguruma_classes())
    # trainer parity
    dump("train_ts1000_gpt2.json", train_merges(pre_tokenizers.ByteLevel(add_prefix_space=False), 1000, [TS], ["<|endoftext|>"]))
    dump("train_ts8000_dsv3.json", train_merges(dsv3_pretok(), 8000, [TS], ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"]))


if __name__ == "__main__":
    main()
