/*
 * pretok_fast.c — a hand-written matcher for DeepSeek-V3's main pre-tokenizer
 * regex (docs/deepseek-v3.md §9.2, step 3):
 *   a) [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
 *   b) [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
 *   c)  ?[\p{P}\p{S}]+[\r\n]*
 *   d) \s*[\r\n]+      e) \s+(?!\S)      f) \s+
 * Also GPT-2's and Llama-3's / Qwen2's regexes (see the functions below).
 * It gives the same matches as the PCRE2 path (the reference, compared in
 * tests/test_tokenizer.c on every fixture text and on random text), without a
 * regex call per pre-token.  Classes come from ucat_tables.h (Unicode 16.0, as
 * tokenizers' Oniguruma; the PCRE2 path uses the same table); bytes that are not valid UTF-8 match nothing, as with
 * PCRE2_MATCH_INVALID_UTF, and end a lookahead like the end of the subject.
 */
#include "tokenizer/tok_internal.h"
#include "tokenizer/ucat_tables.h"

#define UC_INVALID 0x100 /* not valid UTF-8: in no class, and not \S either */

/* class bits and length of the character at s[i] (i < n) */
static inline int char_at(const unsigned char *s, int64_t n, int64_t i, uint32_t *cpo, int *len) {
    unsigned c = s[i];
    if (c < 0x80) {
        *len = 1;
        *cpo = c;
        return ds_ucat_stage2[(size_t)ds_ucat_stage1[0] * 256 + c];
    }
    uint32_t cp;
    int k;
    if (c >= 0xC2 && c <= 0xDF) { k = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { k = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { k = 4; cp = c & 0x07; }
    else { *len = 1; *cpo = 0xFFFFFFFFu; return UC_INVALID; }
    if (i + k > n) { *len = 1; *cpo = 0xFFFFFFFFu; return UC_INVALID; }
    for (int j = 1; j < k; j++) {
        unsigned d = s[i + j];
        if ((d & 0xC0) != 0x80) { *len = 1; *cpo = 0xFFFFFFFFu; return UC_INVALID; }
        cp = (cp << 6) | (d & 0x3F);
    }
    if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
        *len = 1;
        *cpo = 0xFFFFFFFFu;
        return UC_INVALID;
    }
    *len = k;
    *cpo = cp;
    return ds_ucat_stage2[(size_t)ds_ucat_stage1[cp >> 8] * 256 + (cp & 0xFF)];
}

static inline int is_ascii_punct(unsigned c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
}
static inline int is_ascii_alpha(unsigned c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }

/* end of a run of characters whose class has any of the bits in mask, from i */
static inline int64_t run_of(const unsigned char *s, int64_t n, int64_t i, int mask) {
    while (i < n) {
        uint32_t cp;
        int l, b = char_at(s, n, i, &cp, &l);
        if (!(b & mask)) break;
        i += l;
    }
    return i;
}

/* Whitespace alternatives at p (s[p] is whitespace):
 *   with_nl: \s*[\r\n]+ first (up to the last CR/LF of the run), then
 *   \s+(?!\S) (the run, less its last char when a non-space follows), then \s+. */
static int64_t ws_tail(const unsigned char *s, int64_t n, int64_t p, int with_nl) {
    int64_t e = p, last_nl = -1, last_start = p;
    while (e < n) {
        uint32_t c;
        int l, b = char_at(s, n, e, &c, &l);
        if (!(b & DS_UC_WS)) break;
        if (c == '\r' || c == '\n') last_nl = e + l;
        last_start = e;
        e += l;
    }
    if (with_nl && last_nl > 0) return last_nl;
    if (e >= n) return e;
    uint32_t cn;
    int ln, bn = char_at(s, n, e, &cn, &ln);
    if (bn == UC_INVALID) return e;        /* (?!\S) holds before an invalid byte */
    if (last_start > p) return last_start; /* give back the last space */
    return e;                              /* \s+: a single space before a non-space */
}

/* DeepSeek-V3: the match starting exactly at p, if any: returns its end, or -1. */
static int64_t match_at(const unsigned char *s, int64_t n, int64_t p) {
    uint32_t c0;
    int l0, b0 = char_at(s, n, p, &c0, &l0);
    if (b0 == UC_INVALID) return -1;
    /* a) ASCII punctuation + ASCII letters */
    if (c0 < 0x80 && is_ascii_punct(c0) && p + 1 < n && is_ascii_alpha(s[p + 1])) {
        int64_t e = p + 1;
        while (e < n && is_ascii_alpha(s[e])) e++;
        return e;
    }
    /* b) optional prefix char, then letters/marks */
    if (!(b0 & (DS_UC_L | DS_UC_P | DS_UC_S)) && c0 != '\r' && c0 != '\n' && p + l0 < n) {
        uint32_t c1;
        int l1, b1 = char_at(s, n, p + l0, &c1, &l1);
        if (b1 & (DS_UC_L | DS_UC_M)) return run_of(s, n, p + l0 + l1, DS_UC_L | DS_UC_M);
    }
    if (b0 & (DS_UC_L | DS_UC_M)) return run_of(s, n, p + l0, DS_UC_L | DS_UC_M);
    /* c) optional space, punctuation/symbols, then CR/LF */
    int64_t q = -1;
    if (c0 == ' ' && p + 1 < n) {
        uint32_t c1;
        int l1, b1 = char_at(s, n, p + 1, &c1, &l1);
        if (b1 & (DS_UC_P | DS_UC_S)) q = p + 1;
    }
    if (q < 0 && (b0 & (DS_UC_P | DS_UC_S))) q = p;
    if (q >= 0) {
        int64_t e = run_of(s, n, q, DS_UC_P | DS_UC_S);
        while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
        return e;
    }
    if (!(b0 & DS_UC_WS)) return -1;
    return ws_tail(s, n, p, 1);
}

/* 's 't 're 've 'm 'll 'd after the apostrophe at p; caseless: also
 * uppercase ASCII and U+017F (long s, which folds to s) */
static int64_t contraction(const unsigned char *s, int64_t n, int64_t p, int caseless) {
    if (s[p] != '\'' || p + 1 >= n) return -1;
    unsigned a = s[p + 1], b = p + 2 < n ? s[p + 2] : 0;
    if (caseless) {
        if (a == 0xC5 && b == 0xBF) return p + 3; /* 'ſ */
        if (a < 0x80) a |= 0x20;
        if (b < 0x80 && b) b |= 0x20;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return p + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return p + 3;
    return -1;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static int64_t match_at_gpt2(const unsigned char *s, int64_t n, int64_t p) {
    uint32_t c0;
    int l0, b0 = char_at(s, n, p, &c0, &l0);
    if (b0 == UC_INVALID) return -1;
    int64_t e = contraction(s, n, p, 0);
    if (e > 0) return e;
    int b1 = 0, l1 = 0;
    uint32_t c1 = 0;
    if (c0 == ' ' && p + 1 < n) b1 = char_at(s, n, p + 1, &c1, &l1);
    if (c0 == ' ' && (b1 & DS_UC_L)) return run_of(s, n, p + 1, DS_UC_L);
    if (b0 & DS_UC_L) return run_of(s, n, p, DS_UC_L);
    if (c0 == ' ' && (b1 & DS_UC_N)) return run_of(s, n, p + 1, DS_UC_N);
    if (b0 & DS_UC_N) return run_of(s, n, p, DS_UC_N);
    int64_t q = -1;
    if (c0 == ' ' && p + 1 < n && b1 != UC_INVALID && !(b1 & (DS_UC_WS | DS_UC_L | DS_UC_N))) q = p + 1;
    else if (!(b0 & (DS_UC_WS | DS_UC_L | DS_UC_N))) q = p;
    if (q >= 0) {
        e = q;
        while (e < n) {
            uint32_t c;
            int l, b = char_at(s, n, e, &c, &l);
            if (b == UC_INVALID || (b & (DS_UC_WS | DS_UC_L | DS_UC_N))) break;
            e += l;
        }
        return e;
    }
    return ws_tail(s, n, p, 0);
}

/* Llama-3 (digits = 3) and Qwen2 (digits = 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static int64_t match_at_llama3(const unsigned char *s, int64_t n, int64_t p, int digits) {
    uint32_t c0;
    int l0, b0 = char_at(s, n, p, &c0, &l0);
    if (b0 == UC_INVALID) return -1;
    int64_t e = contraction(s, n, p, 1);
    if (e > 0) return e;
    if (!(b0 & (DS_UC_L | DS_UC_N)) && c0 != '\r' && c0 != '\n' && p + l0 < n) {
        uint32_t c1;
        int l1, b1 = char_at(s, n, p + l0, &c1, &l1);
        if (b1 & DS_UC_L) return run_of(s, n, p + l0, DS_UC_L);
    }
    if (b0 & DS_UC_L) return run_of(s, n, p, DS_UC_L);
    if (b0 & DS_UC_N) {
        e = p;
        for (int k = 0; k < digits && e < n; k++) {
            uint32_t c;
            int l, b = char_at(s, n, e, &c, &l);
            if (!(b & DS_UC_N)) break;
            e += l;
        }
        return e;
    }
    int64_t q = -1;
    if (c0 == ' ' && p + 1 < n) {
        uint32_t c1;
        int l1, b1 = char_at(s, n, p + 1, &c1, &l1);
        if (b1 != UC_INVALID && !(b1 & (DS_UC_WS | DS_UC_L | DS_UC_N))) q = p + 1;
    }
    if (q < 0 && !(b0 & (DS_UC_WS | DS_UC_L | DS_UC_N))) q = p;
    if (q >= 0) {
        e = q;
        while (e < n) {
            uint32_t c;
            int l, b = char_at(s, n, e, &c, &l);
            if (b == UC_INVALID || (b & (DS_UC_WS | DS_UC_L | DS_UC_N))) break;
            e += l;
        }
        while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
        return e;
    }
    return ws_tail(s, n, p, 1);
}

/* All matches in s[0..n) of fast matcher `kind` (DS_FAST_*) as (start, end)
 * pairs appended through push. */
void ds_tok_fast_matches(int kind, const char *str, int64_t n, void (*push)(void *, int64_t, int64_t), void *ctx) {
    const unsigned char *s = (const unsigned char *)str;
    int64_t p = 0;
    while (p < n) {
        int64_t e = kind == DS_FAST_DEEPSEEK ? match_at(s, n, p)
                    : kind == DS_FAST_GPT2   ? match_at_gpt2(s, n, p)
                                             : match_at_llama3(s, n, p, kind == DS_FAST_LLAMA3 ? 3 : 1);
        if (e > p) { push(ctx, p, e); p = e; continue; }
        uint32_t cp;
        int l;
        char_at(s, n, p, &cp, &l);
        p += l;
    }
}

/* Class bits of a codepoint (for the test that compares them with PCRE2). */
int ds_tok_ucat_bits(uint32_t cp) {
    if (cp > 0x10FFFF) return 0;
    return ds_ucat_stage2[(size_t)ds_ucat_stage1[cp >> 8] * 256 + (cp & 0xFF)];
}
