/*
 * pretok.c — the pre-tokenizer chain of a tokenizer.json (Split, Digits,
 * ByteLevel inside an optional Sequence), run with PCRE2 (JIT, UTF, Unicode
 * properties).  Each step is applied to every piece the previous step made,
 * as in Hugging Face `tokenizers`, so a regex never sees across an earlier
 * split boundary.
 *
 * Hugging Face compiles its regexes with Oniguruma (Ruby syntax).  Where that
 * dialect differs from PCRE2 the pattern is translated (ds_tok_regex_compile):
 *   \s \S   Oniguruma: [\t-\r\x85\p{Z}]; PCRE2's \s also has U+180E
 *   \w      Oniguruma: letters, marks, decimal digits, connector punctuation
 *   \d \D   Oniguruma: \p{Nd} (Unicode 16.0, below)
 *   \p{L} \p{M} \p{N} \p{P} \p{S} \p{Nd} (and \P, \p{^..})
 *           explicit code point ranges from ucat_tables.h: tokenizers' Oniguruma
 *           has Unicode 16.0's categories, PCRE2 10.42 has 14.0's
 *   \h \H   Oniguruma: hex digit (PCRE2: horizontal space)
 *   \uHHHH  Ruby escape -> \x{HHHH}
 *   $ ^     Ruby: always line anchors -> PCRE2_MULTILINE
 * Invalid UTF-8 in the subject is allowed (PCRE2_MATCH_INVALID_UTF): such
 * bytes never match and end up in the gaps, which the model encodes as bytes.
 * DeepSeek-V3's, GPT-2's, Llama-3's and Qwen2's regexes are recognized and
 * run by the hand-written matchers of pretok_fast.c (PCRE2 is their reference).
 */
#define _GNU_SOURCE
#include "tokenizer/tok_internal.h"
#include "base/base.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- regex dialect translation ---------------------------------------------- */
#define WS_CLASS "\\t-\\r\\x{85}\\p{Z}"

/* The code points whose ucat_tables.h bits meet mask (or, negated, do not),
 * as the inside of a PCRE2 class: "\x{41}-\x{5A}\x{61}-\x{7A}...".  Built once
 * per (mask, negation); surrogates end a range (PCRE2 rejects them in UTF mode). */
enum { NCLS = 8 };
/* the Digits pre-tokenizer's class (Rust's char::is_numeric), a name of dsv3's own */
#define DIGITS_PROP "dsv3_rust_is_numeric"
static const int cls_masks[NCLS] = {DS_UC_L, DS_UC_M, DS_UC_N, DS_UC_P, DS_UC_S, DS_UC_ND,
                                    DS_UC_L | DS_UC_M | DS_UC_ND, DS_UC_NUM};
static char *cls_ranges[NCLS][2];
static pthread_once_t cls_once = PTHREAD_ONCE_INIT;
static void cls_build(void) {
    for (int k = 0; k < NCLS; k++)
        for (int neg = 0; neg < 2; neg++) {
            ds_tok_sbuf b = {0};
            int64_t start = -1;
            for (uint32_t cp = 0; cp <= 0x110000; cp++) {
                int in = cp < 0x110000 && !(cp >= 0xD800 && cp <= 0xDFFF) &&
                         (((ds_tok_ucat_bits(cp) & cls_masks[k]) != 0) != neg);
                if (in && start < 0) start = cp;
                if (!in && start >= 0) {
                    char e[48];
                    if ((uint32_t)start == cp - 1) snprintf(e, sizeof e, "\\x{%X}", (unsigned)start);
                    else snprintf(e, sizeof e, "\\x{%X}-\\x{%X}", (unsigned)start, cp - 1);
                    ds_tok_sbuf_puts(&b, e);
                    start = -1;
                }
            }
            ds_tok_sbuf_put(&b, "", 1);
            cls_ranges[k][neg] = b.p;
        }
}
static const char *cls_of(int k, int neg) {
    pthread_once(&cls_once, cls_build);
    return cls_ranges[k][neg];
}
/* the class of a property name in \p{...}, or -1 (left to PCRE2) */
static int cls_index(const char *name, size_t n) {
    static const char *names[] = {"L", "M", "N", "P", "S", "Nd", "", DIGITS_PROP};
    for (int k = 0; k < NCLS; k++)
        if (strlen(names[k]) == n && !memcmp(names[k], name, n)) return k;
    return -1;
}
#define ND_K 5
#define WORD_K 6

static void put_class(ds_tok_sbuf *b, int in_class, int k, int neg, const char *extra) {
    if (!in_class) ds_tok_sbuf_puts(b, "[");
    ds_tok_sbuf_puts(b, cls_of(k, neg));
    if (extra) ds_tok_sbuf_puts(b, extra);
    if (!in_class) ds_tok_sbuf_puts(b, "]");
}

static char *translate_regex(const char *p, size_t n) {
    ds_tok_sbuf b = {0};
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            i++;
            switch (d) {
            case 's': ds_tok_sbuf_puts(&b, in_class ? WS_CLASS : "[" WS_CLASS "]"); break;
            case 'S':
                if (in_class) ds_tok_sbuf_puts(&b, "\\S"); /* rare; PCRE2's own \S */
                else ds_tok_sbuf_puts(&b, "[^" WS_CLASS "]");
                break;
            case 'w': put_class(&b, in_class, WORD_K, 0, "\\p{Pc}"); break;
            case 'd': put_class(&b, in_class, ND_K, 0, NULL); break;
            case 'D': put_class(&b, in_class, ND_K, 1, NULL); break;
            case 'p':
            case 'P': {
                /* \pL, \p{L}, \p{^L}, \P{L} */
                const char *name = p + i + 1;
                size_t nl = 0, skip = 0;
                int neg = d == 'P';
                if (i + 1 < n && p[i + 1] == '{') {
                    const char *e = memchr(p + i + 2, '}', n - i - 2);
                    if (e) {
                        name = p + i + 2;
                        if (name < e && *name == '^') { neg = !neg; name++; }
                        nl = (size_t)(e - name);
                        skip = (size_t)(e - (p + i));
                    }
                } else if (i + 1 < n) {
                    nl = 1;
                    skip = 1;
                }
                int k = nl ? cls_index(name, nl) : -1;
                if (k >= 0) {
                    put_class(&b, in_class, k, neg, NULL);
                    i += skip;
                } else {
                    char e2[2] = {'\\', d};
                    ds_tok_sbuf_put(&b, e2, 2);
                }
                break;
            }
            case 'W':
                if (in_class) ds_tok_sbuf_puts(&b, "\\W");
                else {
                    ds_tok_sbuf_puts(&b, "[^");
                    put_class(&b, 1, WORD_K, 0, "\\p{Pc}]");
                }
                break;
            case 'h': ds_tok_sbuf_puts(&b, in_class ? "0-9a-fA-F" : "[0-9a-fA-F]"); break;
            case 'H': ds_tok_sbuf_puts(&b, in_class ? "\\H" : "[^0-9a-fA-F]"); break;
            case 'u':
                if (i + 4 < n) {
                    ds_tok_sbuf_puts(&b, "\\x{");
                    ds_tok_sbuf_put(&b, p + i + 1, 4);
                    ds_tok_sbuf_puts(&b, "}");
                    i += 4;
                } else {
                    ds_tok_sbuf_puts(&b, "\\u");
                }
                break;
            default: {
                char e[2] = {'\\', d};
                ds_tok_sbuf_put(&b, e, 2);
            }
            }
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            ds_tok_sbuf_put(&b, &c, 1);
            /* a leading ']' or '^]' is literal */
            if (i + 1 < n && p[i + 1] == '^') { ds_tok_sbuf_put(&b, "^", 1); i++; }
            if (i + 1 < n && p[i + 1] == ']') { ds_tok_sbuf_puts(&b, "\\]"); i++; }
            continue;
        }
        if (c == '[' && in_class) { in_class++; ds_tok_sbuf_put(&b, &c, 1); continue; }
        if (c == ']' && in_class) { in_class--; ds_tok_sbuf_put(&b, &c, 1); continue; }
        ds_tok_sbuf_put(&b, &c, 1);
    }
    ds_tok_sbuf_put(&b, "", 1);
    return b.p;
}

pcre2_code *ds_tok_regex_compile(const char *pat, size_t len, const char *where) {
    char *tr = translate_regex(pat, len);
    int err;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)tr, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_MATCH_INVALID_UTF |
                                       PCRE2_NEVER_BACKSLASH_C,
                                   &err, &eoff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        ds_err("%s: regex does not compile at offset %zu: %s", where, (size_t)eoff, (char *)msg);
        free(tr);
        return NULL;
    }
    free(tr);
    /* JIT is an optimization; the interpreter is used when it is unavailable */
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

/* ---- per-thread match state -------------------------------------------------- */
typedef struct {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *js;
} tls_pcre;
static pthread_key_t g_pcre_key;
static pthread_once_t g_pcre_once = PTHREAD_ONCE_INIT;
static void tls_pcre_free(void *p) {
    tls_pcre *t = p;
    if (!t) return;
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->js);
    free(t);
}
static void pcre_key_make(void) { pthread_key_create(&g_pcre_key, tls_pcre_free); }
static tls_pcre *tls_get(void) {
    pthread_once(&g_pcre_once, pcre_key_make);
    tls_pcre *t = pthread_getspecific(g_pcre_key);
    if (!t) {
        t = ds_calloc(1, sizeof *t);
        t->md = pcre2_match_data_create(1, NULL);
        t->mctx = pcre2_match_context_create(NULL);
        t->js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
        if (!t->md || !t->mctx) ds_die(1, "out of memory creating PCRE2 match data");
        if (t->js) pcre2_jit_stack_assign(t->mctx, NULL, t->js);
        pthread_setspecific(g_pcre_key, t);
    }
    return t;
}
pcre2_match_data *ds_tok_tls_match_data(void) { return tls_get()->md; }
pcre2_match_context *ds_tok_tls_match_ctx(void) { return tls_get()->mctx; }

/* ---- running the chain ----------------------------------------------------------- */
typedef struct { int64_t a, b; int m; } split_t; /* [a, b), is match */
typedef struct { split_t *v; int64_t n, cap; char *buf; size_t bcap; } level_t;

static void push_split(level_t *l, int64_t a, int64_t b, int m) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = ds_realloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (split_t){a, b, m};
}

static size_t utf8_len_at(const unsigned char *s, size_t n, size_t i) {
    unsigned c = s[i];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (c >= 0x80 && c < 0xC0) k = 1;
    if (i + k > n) k = n - i;
    for (size_t j = 1; j < k; j++)
        if ((s[i + j] & 0xC0) != 0x80) return j;
    return k;
}

int ds_tok_no_fast = 0;

typedef struct { level_t *l; int64_t prev; } fast_ctx;
static void fast_push(void *vc, int64_t ms, int64_t me) {
    fast_ctx *fc = vc;
    if (fc->prev != ms) push_split(fc->l, fc->prev, ms, 0);
    push_split(fc->l, ms, me, 1);
    fc->prev = me;
}

/* Matches of step st over s[0..n) as (range, is_match) splits covering all of s. */
static int find_matches(const ds_pstep *st, const char *s, int64_t n, level_t *l) {
    int64_t prev = 0;
    if (st->fast && !ds_tok_no_fast) {
        fast_ctx fc = {l, 0};
        ds_tok_fast_matches(st->fast, s, n, fast_push, &fc);
        prev = fc.prev;
    } else if (st->kind == DS_PS_SPLIT_STRING) {
        if (st->litlen == 0) { push_split(l, 0, n, 0); return 0; }
        int64_t off = 0;
        while (off < n) {
            const char *f = memmem(s + off, (size_t)(n - off), st->lit, st->litlen);
            if (!f) break;
            int64_t ms = f - s, me = ms + (int64_t)st->litlen;
            if (prev != ms) push_split(l, prev, ms, 0);
            push_split(l, ms, me, 1);
            prev = off = me;
        }
    } else {
        tls_pcre *tp = tls_get();
        PCRE2_SIZE off = 0;
        while ((int64_t)off <= n) {
            int rc = pcre2_match(st->re, (PCRE2_SPTR)s, (PCRE2_SIZE)n, off, 0, tp->md, tp->mctx);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return ds_err("pre-tokenizer regex: %s", (char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(tp->md);
            int64_t ms = (int64_t)ov[0], me = (int64_t)ov[1];
            if (prev != ms) push_split(l, prev, ms, 0);
            push_split(l, ms, me, 1);
            prev = me;
            if (me == ms) {
                if (me >= n) break;
                off = (PCRE2_SIZE)(me + (int64_t)utf8_len_at((const unsigned char *)s, (size_t)n, (size_t)me));
            } else {
                off = (PCRE2_SIZE)me;
            }
        }
    }
    if (prev != n) push_split(l, prev, n, 0);
    if (st->invert)
        for (int64_t i = 0; i < l->n; i++) l->v[i].m = !l->v[i].m;
    return 0;
}

/* Apply the split behavior in place (fold as in tokenizers' NormalizedString::split);
 * afterwards m = 1 means "remove". */
static void apply_behavior(int bh, level_t *l) {
    int64_t k = 0;
    int prevm = 0;
    switch (bh) {
    case DS_BH_ISOLATED:
        for (int64_t i = 0; i < l->n; i++) l->v[i].m = 0;
        return;
    case DS_BH_REMOVED:
        return;
    case DS_BH_MERGED_PREV:
        for (int64_t i = 0; i < l->n; i++) {
            split_t x = l->v[i];
            if (x.m && !prevm && k > 0) l->v[k - 1].b = x.b;
            else l->v[k++] = (split_t){x.a, x.b, 0};
            prevm = x.m;
        }
        l->n = k;
        return;
    case DS_BH_MERGED_NEXT: {
        /* fold from the right, then the result is in reverse order */
        split_t *tmp = ds_malloc((size_t)(l->n + 1) * sizeof *tmp);
        for (int64_t i = l->n - 1; i >= 0; i--) {
            split_t x = l->v[i];
            if (x.m && !prevm && k > 0) tmp[k - 1].a = x.a;
            else tmp[k++] = (split_t){x.a, x.b, 0};
            prevm = x.m;
        }
        for (int64_t i = 0; i < k; i++) l->v[i] = tmp[k - 1 - i];
        l->n = k;
        free(tmp);
        return;
    }
    case DS_BH_CONTIGUOUS:
        for (int64_t i = 0; i < l->n; i++) {
            split_t x = l->v[i];
            if (x.m == prevm && k > 0) l->v[k - 1].b = x.b;
            else l->v[k++] = (split_t){x.a, x.b, 0};
            prevm = x.m;
        }
        l->n = k;
        return;
    }
}

typedef struct {
    const struct ds_tokenizer *t;
    level_t lv[DS_MAX_PSTEPS];
    ds_pretok_fn fn;
    ds_pretok_batch_fn bfn;
    void *ctx;
    ds_tok_piece *pc;
    int64_t npc, pccap;
} run_state;

static int run_level(run_state *rs, int k, const char *s, int64_t n) {
    if (n <= 0) return 0;
    if (k == rs->t->nsteps) {
        if (rs->bfn) {
            ds_tok_piece one = {s, (size_t)n};
            rs->bfn(rs->ctx, &one, 1);
        } else {
            rs->fn(rs->ctx, s, (size_t)n);
        }
        return 0;
    }
    const ds_pstep *st = &rs->t->steps[k];
    level_t *l = &rs->lv[k];
    if (st->kind == DS_PS_PREFIX_SPACE) {
        if (s[0] == ' ') return run_level(rs, k + 1, s, n);
        if (l->bcap < (size_t)n + 1) {
            l->bcap = (size_t)n + 64;
            l->buf = ds_realloc(l->buf, l->bcap);
        }
        l->buf[0] = ' ';
        memcpy(l->buf + 1, s, (size_t)n);
        /* the buffer of level k stays valid while deeper levels run */
        return run_level(rs, k + 1, l->buf, n + 1);
    }
    l->n = 0;
    if (find_matches(st, s, n, l)) return -1;
    apply_behavior(st->behavior, l);
    /* deeper levels reuse their own vectors, so copy ours out of the way of
     * re-entrancy: level k's vector is not touched by level k+1 */
    int64_t cnt = l->n;
    if (rs->bfn && k + 1 == rs->t->nsteps) { /* last level: hand the pieces over together */
        if (rs->pccap < cnt) {
            rs->pccap = cnt + 64;
            rs->pc = ds_realloc(rs->pc, (size_t)rs->pccap * sizeof *rs->pc);
        }
        int64_t m = 0;
        for (int64_t i = 0; i < cnt; i++) {
            split_t x = l->v[i];
            if (x.m || x.b <= x.a) continue;
            rs->pc[m++] = (ds_tok_piece){s + x.a, (size_t)(x.b - x.a)};
        }
        if (m) rs->bfn(rs->ctx, rs->pc, m);
        return 0;
    }
    for (int64_t i = 0; i < cnt; i++) {
        split_t x = l->v[i];
        if (x.m || x.b <= x.a) continue;
        if (run_level(rs, k + 1, s + x.a, x.b - x.a)) return -1;
    }
    return 0;
}

/* Per-thread run state (levels are reused between calls). */
static pthread_key_t g_rs_key;
static pthread_once_t g_rs_once = PTHREAD_ONCE_INIT;
static void rs_free(void *p) {
    run_state *rs = p;
    if (!rs) return;
    for (int i = 0; i < DS_MAX_PSTEPS; i++) { free(rs->lv[i].v); free(rs->lv[i].buf); }
    free(rs->pc);
    free(rs);
}
static void rs_key_make(void) { pthread_key_create(&g_rs_key, rs_free); }

static int pretok_run(const struct ds_tokenizer *t, const char *s, size_t n, ds_pretok_fn fn,
                      ds_pretok_batch_fn bfn, void *ctx) {
    pthread_once(&g_rs_once, rs_key_make);
    run_state *rs = pthread_getspecific(g_rs_key);
    int nested = 0;
    if (!rs || rs->t) { /* none yet, or in use by an outer call on this thread */
        if (rs) nested = 1;
        rs = ds_calloc(1, sizeof *rs);
        if (!nested) pthread_setspecific(g_rs_key, rs);
    }
    rs->t = t;
    rs->fn = fn;
    rs->bfn = bfn;
    rs->ctx = ctx;
    int rc = run_level(rs, 0, s, (int64_t)n);
    rs->t = NULL;
    if (nested) rs_free(rs);
    return rc;
}
int ds_pretok_run(const struct ds_tokenizer *t, const char *s, size_t n, ds_pretok_fn fn, void *ctx) {
    return pretok_run(t, s, n, fn, NULL, ctx);
}
int ds_pretok_run_batch(const struct ds_tokenizer *t, const char *s, size_t n, ds_pretok_batch_fn fn, void *ctx) {
    return pretok_run(t, s, n, NULL, fn, ctx);
}

/* ---- parsing the pre_tokenizer JSON ---------------------------------------------- */
/* Regexes whose pieces never contain "\n" followed by an ASCII letter or digit
 * when the "\n" follows a non-space: DeepSeek-V3's three, GPT-2's, Llama-3's. */
static const char *const known_regex[] = {
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    "\\p{N}",
    "\\p{N}+",
};
#define GPT2_REGEX "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static int add_regex_step(struct ds_tokenizer *t, const char *pat, size_t len, int bh, int invert, const char *where) {
    if (t->nsteps >= DS_MAX_PSTEPS) return ds_err("%s: too many pre-tokenizer steps (max %d)", where, DS_MAX_PSTEPS);
    ds_pstep *st = &t->steps[t->nsteps];
    memset(st, 0, sizeof *st);
    st->kind = DS_PS_SPLIT_REGEX;
    st->behavior = bh;
    st->invert = invert;
    st->re = ds_tok_regex_compile(pat, len, where);
    if (!st->re) return -1;
    st->lit = ds_malloc(len + 1);
    memcpy(st->lit, pat, len);
    st->lit[len] = 0;
    st->litlen = len;
    for (size_t i = 0; i < sizeof known_regex / sizeof *known_regex; i++)
        if (strlen(known_regex[i]) == len && !memcmp(known_regex[i], pat, len)) {
            st->known = 1;
            st->fast = i == 2 ? DS_FAST_DEEPSEEK : i == 3 ? DS_FAST_GPT2 : i == 4 ? DS_FAST_LLAMA3 : i == 5 ? DS_FAST_QWEN2 : 0;
        }
    t->nsteps++;
    return 0;
}

static int parse_behavior(const cJSON *j, const char *where) {
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "behavior");
    if (!cJSON_IsString(b)) return ds_err("%s: behavior: missing", where);
    const char *s = b->valuestring;
    if (!strcmp(s, "Removed")) return DS_BH_REMOVED;
    if (!strcmp(s, "Isolated")) return DS_BH_ISOLATED;
    if (!strcmp(s, "MergedWithPrevious")) return DS_BH_MERGED_PREV;
    if (!strcmp(s, "MergedWithNext")) return DS_BH_MERGED_NEXT;
    if (!strcmp(s, "Contiguous")) return DS_BH_CONTIGUOUS;
    return ds_err("%s: behavior %s is not supported", where, ds_quote(s));
}

static int parse_one(struct ds_tokenizer *t, const cJSON *j, const char *where, int last) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(ty)) return ds_err("%s: type: missing", where);
    const char *type = ty->valuestring;
    if (t->byte_level) return ds_err("%s: %s after ByteLevel is not supported (ByteLevel must be last)", where, ds_quote(type));
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        if (!cJSON_IsArray(arr)) return ds_err("%s: pretokenizers: missing", where);
        int i = 0, n = cJSON_GetArraySize(arr);
        const cJSON *e;
        cJSON_ArrayForEach(e, arr) {
            char w[160];
            snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i);
            if (parse_one(t, e, w, last && i == n - 1)) return -1;
            i++;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        int bh = parse_behavior(j, where);
        if (bh < 0) return -1;
        const cJSON *inv = cJSON_GetObjectItemCaseSensitive(j, "invert");
        int invert = cJSON_IsTrue(inv);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const cJSON *rx = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
        const cJSON *str = pat ? cJSON_GetObjectItemCaseSensitive(pat, "String") : NULL;
        char w[200];
        snprintf(w, sizeof w, "%s.pattern", where);
        if (cJSON_IsString(rx)) return add_regex_step(t, rx->valuestring, strlen(rx->valuestring), bh, invert, w);
        if (cJSON_IsString(str)) {
            if (t->nsteps >= DS_MAX_PSTEPS) return ds_err("%s: too many steps", where);
            ds_pstep *st = &t->steps[t->nsteps++];
            memset(st, 0, sizeof *st);
            st->kind = DS_PS_SPLIT_STRING;
            st->behavior = bh;
            st->invert = invert;
            st->lit = ds_strdup(str->valuestring);
            st->litlen = strlen(st->lit);
            return 0;
        }
        return ds_err("%s: pattern: missing (needs Regex or String)", where);
    }
    if (!strcmp(type, "Digits")) {
        const cJSON *ind = cJSON_GetObjectItemCaseSensitive(j, "individual_digits");
        /* tokenizers splits on Rust's char::is_numeric, i.e. \p{N} of Unicode 17.0 */
        if (add_regex_step(t, "\\p{" DIGITS_PROP "}", strlen("\\p{" DIGITS_PROP "}"), cJSON_IsTrue(ind) ? DS_BH_ISOLATED : DS_BH_CONTIGUOUS, 0, where)) return -1;
        t->steps[t->nsteps - 1].known = 1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(j, "use_regex");
        if (cJSON_IsTrue(aps)) {
            if (t->nsteps >= DS_MAX_PSTEPS) return ds_err("%s: too many steps", where);
            ds_pstep *st = &t->steps[t->nsteps++];
            memset(st, 0, sizeof *st);
            st->kind = DS_PS_PREFIX_SPACE;
            st->known = 0; /* a chunk cut would add a space: no chunked encoding */
        }
        /* use_regex defaults to true */
        if (!ur || cJSON_IsTrue(ur))
            if (add_regex_step(t, GPT2_REGEX, strlen(GPT2_REGEX), DS_BH_ISOLATED, 0, where)) return -1;
        t->byte_level = 1;
        return 0;
    }
    return ds_err("%s: pre-tokenizer type %s is not supported", where, ds_quote(type));
}

int ds_pretok_parse(struct ds_tokenizer *t, const void *cj) {
    const cJSON *j = cj;
    t->nsteps = 0;
    if (!j || cJSON_IsNull(j)) return 0;
    if (!cJSON_IsObject(j)) return ds_err("pre_tokenizer: not an object");
    return parse_one(t, j, "pre_tokenizer", 1);
}

void ds_pretok_free(struct ds_tokenizer *t) {
    for (int i = 0; i < t->nsteps; i++) {
        if (t->steps[i].re) pcre2_code_free(t->steps[i].re);
        free(t->steps[i].lit);
    }
    t->nsteps = 0;
}
