/*
 * text.c — text rules the evaluation layer must reproduce exactly: Python's str
 * semantics that lm-evaluation-harness relies on (len, rstrip, re.split(r"\s+")), the
 * HellaSwag preprocess and the WikiText detokenizer of lm-eval's task files, and the
 * answer extraction of generation tasks.  All of it works on UTF-8 codepoints.
 */
#include "eval/eval.h"
#include "base/base.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Decode one codepoint at s (n bytes left); returns its length (an invalid byte counts
 * as one codepoint of length 1, cp = 0xFFFD). */
static int u8dec(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = 0xFFFD; return -1; }
    if ((size_t)len > n) { *cp = 0xFFFD; return -1; }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = 0xFFFD; return -1; }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = 0xFFFD; return -1; }
    *cp = v;
    return len;
}

/* next codepoint; invalid bytes step by one */
static size_t u8next(const char *s, size_t n, size_t i, uint32_t *cp) {
    int l = u8dec((const unsigned char *)s + i, n - i, cp);
    return i + (l < 0 ? 1 : (size_t)l);
}

/* Python str.isspace() (= what re's \s matches in a str pattern) */
static int py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

int64_t ds_utf8_chars(const char *s, size_t n) {
    int64_t k = 0;
    uint32_t cp;
    for (size_t i = 0; i < n; k++) i = u8next(s, n, i, &cp);
    return k;
}


int64_t ds_py_word_count(const char *s, size_t n) {
    int64_t runs = 0;
    int in_ws = 0;
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        i = u8next(s, n, i, &cp);
        int w = py_isspace(cp);
        if (w && !in_ws) runs++;
        in_ws = w;
    }
    return runs + 1;
}

size_t ds_py_rstrip_len(const char *s, size_t n) {
    size_t end = 0;
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t j = u8next(s, n, i, &cp);
        if (!py_isspace(cp)) end = j;
        i = j;
    }
    return end;
}

/* [*b, *e) narrowed to Python str.strip() */
static void py_strip(const char *s, size_t *b, size_t *e) {
    uint32_t cp;
    size_t i = *b;
    while (i < *e) {
        size_t j = u8next(s, *e, i, &cp);
        if (!py_isspace(cp)) break;
        i = j;
    }
    *b = i;
    *e = i + ds_py_rstrip_len(s + i, *e - i);
}

char *ds_py_strip(const char *s) {
    size_t b = 0, e = strlen(s);
    py_strip(s, &b, &e);
    char *r = ds_malloc(e - b + 1);
    memcpy(r, s + b, e - b);
    r[e - b] = 0;
    return r;
}

/* ---- a growable string ---------------------------------------------------- */
typedef struct { char *p; size_t n, cap; } sbuf;
static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = ds_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static char *sb_done(sbuf *b) {
    if (!b->p) sb_put(b, "", 0);
    return b->p;
}

/* Python s.replace(from, to): non-overlapping, left to right.  Frees s. */
static char *replace_all(char *s, const char *from, const char *to) {
    size_t fl = strlen(from), tl = strlen(to);
    sbuf b = {0};
    const char *p = s, *q;
    while ((q = strstr(p, from))) {
        sb_put(&b, p, (size_t)(q - p));
        sb_put(&b, to, tl);
        p = q + fl;
    }
    sb_put(&b, p, strlen(p));
    free(s);
    return sb_done(&b);
}

/* HellaSwag (lm-eval tasks/hellaswag/utils.py preprocess): strip; " [title]" -> ". ";
 * re.sub(r"\[.*?\]", "") ('.' stops at a newline); "  " -> " " once. */
char *ds_hellaswag_preprocess(const char *in) {
    size_t b = 0, e = strlen(in);
    py_strip(in, &b, &e);
    char *s = ds_malloc(e - b + 1);
    memcpy(s, in + b, e - b);
    s[e - b] = 0;
    s = replace_all(s, " [title]", ". ");
    sbuf o = {0};
    for (size_t i = 0; s[i];) {
        if (s[i] == '[') {
            size_t j = i + 1;
            while (s[j] && s[j] != ']' && s[j] != '\n') j++;
            if (s[j] == ']') { i = j + 1; continue; }
        }
        sb_put(&o, s + i, 1);
        i++;
    }
    free(s);
    return replace_all(sb_done(&o), "  ", " ");
}

/* re.sub(r"<o>\s*([^<c>]*?)\s*<c>", r"<o>\1<c>"): from an opener to the next closer,
 * drop the whitespace just inside both ends.  An opener with no closer after it stays. */
static char *collapse_pair(char *s, char open, char close) {
    sbuf o = {0};
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        if (s[i] == open) {
            char *c = strchr(s + i + 1, close);
            if (c) {
                size_t b = i + 1, e = (size_t)(c - s);
                py_strip(s, &b, &e);
                sb_put(&o, &open, 1);
                sb_put(&o, s + b, e - b);
                sb_put(&o, &close, 1);
                i = (size_t)(c - s) + 1;
                continue;
            }
        }
        sb_put(&o, s + i, 1);
        i++;
    }
    free(s);
    return sb_done(&o);
}

/* lm-eval tasks/wikitext/preprocess_wikitext.py wikitext_detokenizer, step by step. */
char *ds_wikitext_detokenize(const char *in) {
    char *s = ds_strdup(in);
    s = replace_all(s, "s '", "s'");
    { /* re.sub(r"/' [0-9]/", r"/'[0-9]/"): the replacement is literal text in lm-eval */
        sbuf o = {0};
        for (size_t i = 0; s[i];) {
            if (!strncmp(s + i, "/' ", 3) && s[i + 3] >= '0' && s[i + 3] <= '9' && s[i + 4] == '/') {
                sb_put(&o, "/'[0-9]/", 8);
                i += 5;
                continue;
            }
            sb_put(&o, s + i, 1);
            i++;
        }
        free(s);
        s = sb_done(&o);
    }
    static const char *rep1[][2] = {
        {" @-@ ", "-"}, {" @,@ ", ","}, {" @.@ ", "."}, {" : ", ": "}, {" ; ", "; "},
        {" . ", ". "}, {" ! ", "! "}, {" ? ", "? "}, {" , ", ", "}};
    for (size_t k = 0; k < sizeof rep1 / sizeof *rep1; k++) s = replace_all(s, rep1[k][0], rep1[k][1]);
    s = collapse_pair(s, '(', ')');
    s = collapse_pair(s, '[', ']');
    s = collapse_pair(s, '{', '}');
    s = collapse_pair(s, '"', '"');
    s = collapse_pair(s, '\'', '\'');
    static const char *rep2[][2] = {
        {"= = = =", "===="}, {"= = =", "==="}, {"= =", "=="}, {" \xC2\xB0 ", "\xC2\xB0"},
        {" \n", "\n"}, {"\n ", "\n"}, {" N ", " 1 "}, {" 's", "'s"}};
    for (size_t k = 0; k < sizeof rep2 / sizeof *rep2; k++) s = replace_all(s, rep2[k][0], rep2[k][1]);
    return s;
}

/* The last match of lm-eval's GSM8K "flexible-extract" regex
 * (-?[$0-9.,]{2,})|(-?[0-9]+), scanning left to right without overlap. */
char *ds_extract_last_number(const char *s) {
    size_t n = strlen(s), best_b = 0, best_e = 0;
    int found = 0;
#define NUMCH(c) (((c) >= '0' && (c) <= '9') || (c) == '$' || (c) == '.' || (c) == ',')
    for (size_t i = 0; i < n;) {
        size_t j = i + (s[i] == '-');
        size_t k = j;
        while (k < n && NUMCH(s[k])) k++;
        if (k - j >= 2) { best_b = i; best_e = k; found = 1; i = k; continue; }
        k = j;
        while (k < n && s[k] >= '0' && s[k] <= '9') k++;
        if (k > j) { best_b = i; best_e = k; found = 1; i = k; continue; }
        i++;
    }
#undef NUMCH
    if (!found) return NULL;
    char *r = ds_malloc(best_e - best_b + 1);
    memcpy(r, s + best_b, best_e - best_b);
    r[best_e - best_b] = 0;
    return r;
}

/* Exact-match normalization (lm-eval gsm8k: regexes_to_ignore [",", "\$", "(?s).*#### ",
 * "\.$"], ignore_case), then strip. */
char *ds_normalize_answer(const char *in) {
    const char *p = in, *q;
    while ((q = strstr(p, "#### "))) p = q + 5;
    sbuf o = {0};
    for (; *p; p++)
        if (*p != ',' && *p != '$') {
            char c = (char)tolower((unsigned char)*p);
            sb_put(&o, &c, 1);
        }
    char *s = sb_done(&o);
    size_t n = strlen(s);
    if (n && s[n - 1] == '.') s[--n] = 0;
    size_t b = 0, e = n;
    py_strip(s, &b, &e);
    memmove(s, s + b, e - b);
    s[e - b] = 0;
    return s;
}

/* The first word of a generation (LAMBADA by generation): skip leading whitespace, take the
 * run up to the next whitespace, drop trailing ASCII punctuation (LAMBADA targets are bare
 * words; a model may go on with "." or ","). */
char *ds_extract_first_word(const char *s) {
    size_t n = strlen(s), b = 0, e;
    uint32_t cp;
    while (b < n) {
        size_t j = u8next(s, n, b, &cp);
        if (!py_isspace(cp)) break;
        b = j;
    }
    e = b;
    while (e < n) {
        size_t j = u8next(s, n, e, &cp);
        if (py_isspace(cp)) break;
        e = j;
    }
    while (e > b && ispunct((unsigned char)s[e - 1])) e--;
    char *r = ds_malloc(e - b + 1);
    memcpy(r, s + b, e - b);
    r[e - b] = 0;
    return r;
}
