/*
 * tok_internal.h — the tokenizer's private structures, shared by tokenizer.c
 * (load/save/encode/decode), pretok.c (pre-tokenizer chain over PCRE2) and
 * bpe_train.c (trainer).  Not for use outside src/tokenizer/ (tests may use
 * the reference functions at the bottom).
 */
#ifndef DS_TOK_INTERNAL_H
#define DS_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stddef.h>

#include "tokenizer/tokenizer.h"

/* ---- hashing ---------------------------------------------------------------- */
static inline uint64_t ds_tok_mix(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}
uint64_t ds_tok_hash(const void *p, size_t n);

/* Bytes -> id map (open addressing; keys point into caller-owned storage). */
typedef struct {
    uint64_t *h;          /* hash per slot (0 = empty) */
    const char **key;
    uint32_t *klen;
    int32_t *val;
    uint64_t cap, n;      /* cap is a power of two */
} ds_tok_strmap;
void ds_tok_strmap_init(ds_tok_strmap *m, uint64_t expect);
void ds_tok_strmap_free(ds_tok_strmap *m);
/* Insert or overwrite. */
void ds_tok_strmap_put(ds_tok_strmap *m, const char *k, size_t n, int32_t v);
int32_t ds_tok_strmap_get(const ds_tok_strmap *m, const char *k, size_t n); /* -1 if absent */

/* (id_a, id_b) -> (rank, new id) for BPE merges. */
typedef struct {
    uint64_t *key;        /* (a << 32 | b) + 1; 0 = empty */
    int32_t *rank, *newid;
    uint64_t cap, n;
} ds_tok_pairmap;
void ds_tok_pairmap_init(ds_tok_pairmap *m, uint64_t expect);
void ds_tok_pairmap_free(ds_tok_pairmap *m);
void ds_tok_pairmap_put(ds_tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t newid);
static inline int ds_tok_pairmap_get(const ds_tok_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *newid) {
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t i = ds_tok_mix(k) & (m->cap - 1);
    for (;;) {
        uint64_t s = m->key[i];
        if (s == k) { *rank = m->rank[i]; *newid = m->newid[i]; return 1; }
        if (s == 0) return 0;
        i = (i + 1) & (m->cap - 1);
    }
}

/* ---- pre-tokenizer chain ------------------------------------------------------ */
enum { DS_PS_SPLIT_REGEX, DS_PS_SPLIT_STRING, DS_PS_DIGITS, DS_PS_PREFIX_SPACE };
enum { DS_BH_REMOVED, DS_BH_ISOLATED, DS_BH_MERGED_PREV, DS_BH_MERGED_NEXT, DS_BH_CONTIGUOUS };
typedef struct {
    int kind, behavior, invert;
    int individual_digits;   /* Digits */
    pcre2_code *re;          /* SPLIT_REGEX (JIT compiled) */
    char *lit;               /* SPLIT_STRING literal, or the original regex */
    size_t litlen;
    int known;               /* regex is one whose pieces never cross "\n<alnum>" */
    int fast;                /* DS_FAST_*: a hand-written matcher for this regex (pretok_fast.c) */
} ds_pstep;
#define DS_MAX_PSTEPS 16

/* pretok_fast.c: the matches of a known regex, as PCRE2 finds them. */
enum { DS_FAST_NONE = 0, DS_FAST_DEEPSEEK = 1, DS_FAST_GPT2 = 2, DS_FAST_LLAMA3 = 3, DS_FAST_QWEN2 = 4 };
void ds_tok_fast_matches(int kind, const char *s, int64_t n, void (*push)(void *, int64_t, int64_t), void *ctx);
/* Unicode classes of a codepoint (ucat_tables.h, Unicode 16.0 as tokenizers' Oniguruma):
 * White_Space is Oniguruma's \s (U+0009..U+000D, U+0085, Z*), ND is Nd; NUM is Unicode
 * 17.0's N, the Rust char::is_numeric of tokenizers' Digits pre-tokenizer */
enum { DS_UC_L = 1, DS_UC_M = 2, DS_UC_N = 4, DS_UC_P = 8, DS_UC_S = 16, DS_UC_WS = 32, DS_UC_ND = 64,
       DS_UC_NUM = 128 };
int ds_tok_ucat_bits(uint32_t cp);
/* 1: use the PCRE2 reference even where a fast matcher exists (tests) */
extern int ds_tok_no_fast;

/* Compile a Hugging Face (Oniguruma dialect) regex for PCRE2; NULL + ds_err. */
pcre2_code *ds_tok_regex_compile(const char *pat, size_t len, const char *where);

/* ---- the tokenizer ------------------------------------------------------------ */
typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
} ds_added;

/* byte trie of added tokens: node i's children in a hash on (i << 8 | byte) */
typedef struct {
    ds_tok_pairmap edges;        /* key (node, byte) -> child in rank field */
    int32_t *term;           /* node -> index into added[] or -1 */
    int64_t nnodes, cap;
    uint8_t first[256];      /* first byte can start a token */
    int nfirst;              /* how many bytes can */
    unsigned char first_byte;
} ds_trie;

struct ds_tokenizer {
    uint64_t serial;              /* unique per load, keys the per-thread caches */
    int64_t nids;                 /* max id + 1 */
    char **tok;                   /* (nids) token string as in tokenizer.json, or NULL */
    char **tbytes;                /* (nids) decoded bytes of each token */
    uint32_t *tblen;              /* (nids) */
    uint8_t *is_special;          /* (nids) */
    char **mtok, **mbytes;        /* (nids) model.vocab string and its bytes (maps point here) */
    uint32_t *mblen;
    int64_t nvocab;               /* entries of model.vocab */
    ds_tok_strmap vocab;              /* token string -> id (model vocab and added tokens) */
    ds_tok_strmap vbytes;             /* raw bytes -> id (model vocab only) */
    int64_t nmerges;
    int32_t (*merges)[2];         /* (nmerges, 2) in rank order */
    ds_tok_pairmap pairs;
    int32_t byte_id[256];         /* id of the single-byte token, -1 if none */
    int byte_level, ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;
    int32_t bytefb_id[256];       /* <0xXX> tokens for byte_fallback */
    ds_added *added;
    int64_t nadded;
    ds_trie trie_raw, trie_norm;  /* added tokens with normalized false / true */
    int has_norm_added;
    int nfc;                      /* normalizer NFC */
    ds_pstep steps[DS_MAX_PSTEPS];
    int nsteps;
    int chunk_safe;               /* encode_parallel may cut after "\n" */
    int32_t *post_pre, *post_suf; /* TemplateProcessing single: ids before / after $A */
    int npost_pre, npost_suf, has_template;
    int32_t bos, eos;
    int add_bos, add_eos;
    /* original JSON (unformatted) of the parts that save writes back */
    char *j_normalizer, *j_pretok, *j_post, *j_decoder;
    char *model_unk;              /* unk_token string or NULL */
};

/* Apply the pre-tokenizer chain to one segment of text; fn gets each piece. */
int ds_pretok_run(const struct ds_tokenizer *t, const char *s, size_t n, ds_pretok_fn fn, void *ctx);
/* The same, with the pieces of each last-level split handed over together
 * (lets encode hash them and prefetch their cache slots ahead of use). */
typedef struct { const char *p; size_t n; } ds_tok_piece;
typedef void (*ds_pretok_batch_fn)(void *ctx, const ds_tok_piece *pieces, int64_t n);
int ds_pretok_run_batch(const struct ds_tokenizer *t, const char *s, size_t n, ds_pretok_batch_fn fn, void *ctx);
int ds_pretok_parse(struct ds_tokenizer *t, const void *cjson_pretok);
void ds_pretok_free(struct ds_tokenizer *t);
/* per-thread PCRE2 match state */
pcre2_match_data *ds_tok_tls_match_data(void);
pcre2_match_context *ds_tok_tls_match_ctx(void);

/* NFC normalization (nfc.c); invalid UTF-8 bytes pass through. Returns a
 * malloc'd buffer. */
char *ds_tok_nfc(const char *s, size_t n, size_t *outlen);

/* ---- references kept for tests ---------------------------------------------------- */
/* BPE of one pre-token given its initial symbol ids: the fast path (rank array
 * for short words, heap for long ones) and the plain reference that scans for
 * the lowest (rank, position) pair each step.  Both rewrite sym, return n. */
int64_t ds_bpe_merge_word(const struct ds_tokenizer *t, int32_t *sym, int64_t n);
int64_t ds_bpe_merge_word_ref(const struct ds_tokenizer *t, int32_t *sym, int64_t n);
int64_t ds_bpe_merge_word_heap(const struct ds_tokenizer *t, int32_t *sym, int64_t n);

/* JSON string writer used by save and by the trainer. */
typedef struct { char *p; size_t n, cap; } ds_tok_sbuf;
void ds_tok_sbuf_put(ds_tok_sbuf *b, const char *s, size_t n);
void ds_tok_sbuf_puts(ds_tok_sbuf *b, const char *s);
void ds_tok_sbuf_json_str(ds_tok_sbuf *b, const char *s, size_t n);
/* Write a complete tokenizer.json: vocab toks[0..nvocab) (NULL = hole),
 * merges as pairs of token strings. */
void ds_tok_write_json(ds_tok_sbuf *b, const char *const *toks, int64_t ntoks,
                       const char *const *ma, const char *const *mb, int64_t nmerges,
                       const ds_added *added, int64_t nadded, const char *normalizer,
                       const char *pretok, const char *post, const char *decoder,
                       const char *unk, int byte_fallback, int ignore_merges);
/* byte-level map: UTF-8 of the mapped string of bytes s[0..n) into out
 * (needs 2n+1 bytes); returns the length. */
size_t ds_tok_bytes_to_mapped(const unsigned char *s, size_t n, char *out);

#endif
