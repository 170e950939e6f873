/*
 * tokenizer.c — load/save tokenizer.json, BPE encode and decode (see
 * tokenizer.h for the pipeline).  The BPE step follows `tokenizers`
 * (models/bpe/word.rs): the applicable merge with the lowest rank is applied
 * first, the leftmost among equal ranks.  Pre-tokens are cached per thread.
 */
#include "tokenizer/tok_internal.h"
#include "base/base.h"
#include "io/json.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- hashing and maps ------------------------------------------------------------ */
static inline uint64_t load64(const unsigned char *p) { uint64_t x; memcpy(&x, p, 8); return x; }
static inline uint64_t load32(const unsigned char *p) { uint32_t x; memcpy(&x, p, 4); return x; }

/* The first min(n, 8) bytes as a zero-padded little-endian word, without a
 * variable-length copy. */
static inline uint64_t first8(const unsigned char *s, size_t n) {
    if (n >= 8) return load64(s);
    if (n >= 4) return load32(s) | ((load32(s + n - 4) >> (8 * (8 - n))) << 32);
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x |= (uint64_t)s[i] << (8 * i);
    return x;
}

uint64_t ds_tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xff51afd7ed558ccdULL);
    if (n > 8) {
        size_t i = 0;
        for (; i + 8 < n; i += 8) {
            h = (h ^ load64(s + i)) * 0xbf58476d1ce4e5b9ULL;
            h ^= h >> 29;
        }
        h = (h ^ load64(s + n - 8)) * 0x94d049bb133111ebULL; /* the last 8, overlapping */
    } else {
        h = (h ^ first8(s, n)) * 0x94d049bb133111ebULL;
    }
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h | 1; /* 0 marks an empty slot */
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

void ds_tok_strmap_init(ds_tok_strmap *m, uint64_t expect) {
    m->cap = pow2_at_least(expect * 2 + 16);
    m->n = 0;
    m->h = ds_calloc(m->cap, sizeof *m->h);
    m->key = ds_calloc(m->cap, sizeof *m->key);
    m->klen = ds_calloc(m->cap, sizeof *m->klen);
    m->val = ds_calloc(m->cap, sizeof *m->val);
}
void ds_tok_strmap_free(ds_tok_strmap *m) {
    free(m->h); free(m->key); free(m->klen); free(m->val);
    memset(m, 0, sizeof *m);
}
static void strmap_grow(ds_tok_strmap *m) {
    ds_tok_strmap o = *m;
    m->cap *= 2;
    m->n = 0;
    m->h = ds_calloc(m->cap, sizeof *m->h);
    m->key = ds_calloc(m->cap, sizeof *m->key);
    m->klen = ds_calloc(m->cap, sizeof *m->klen);
    m->val = ds_calloc(m->cap, sizeof *m->val);
    for (uint64_t i = 0; i < o.cap; i++)
        if (o.h[i]) ds_tok_strmap_put(m, o.key[i], o.klen[i], o.val[i]);
    ds_tok_strmap_free(&o);
}
void ds_tok_strmap_put(ds_tok_strmap *m, const char *k, size_t n, int32_t v) {
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    uint64_t h = ds_tok_hash(k, n), i = h & (m->cap - 1);
    while (m->h[i]) {
        if (m->h[i] == h && m->klen[i] == n && !memcmp(m->key[i], k, n)) { m->val[i] = v; return; }
        i = (i + 1) & (m->cap - 1);
    }
    m->h[i] = h;
    m->key[i] = k;
    m->klen[i] = (uint32_t)n;
    m->val[i] = v;
    m->n++;
}
int32_t ds_tok_strmap_get(const ds_tok_strmap *m, const char *k, size_t n) {
    if (!m->cap) return -1;
    uint64_t h = ds_tok_hash(k, n), i = h & (m->cap - 1);
    while (m->h[i]) {
        if (m->h[i] == h && m->klen[i] == n && !memcmp(m->key[i], k, n)) return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

void ds_tok_pairmap_init(ds_tok_pairmap *m, uint64_t expect) {
    m->cap = pow2_at_least(expect * 2 + 16);
    m->n = 0;
    m->key = ds_calloc(m->cap, sizeof *m->key);
    m->rank = ds_calloc(m->cap, sizeof *m->rank);
    m->newid = ds_calloc(m->cap, sizeof *m->newid);
}
void ds_tok_pairmap_free(ds_tok_pairmap *m) {
    free(m->key); free(m->rank); free(m->newid);
    memset(m, 0, sizeof *m);
}
void ds_tok_pairmap_put(ds_tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t newid) {
    if ((m->n + 1) * 2 > m->cap) {
        ds_tok_pairmap o = *m;
        ds_tok_pairmap_init(m, o.cap);
        for (uint64_t i = 0; i < o.cap; i++)
            if (o.key[i]) {
                uint64_t k = o.key[i] - 1;
                ds_tok_pairmap_put(m, (int32_t)(k >> 32), (int32_t)(uint32_t)k, o.rank[i], o.newid[i]);
            }
        ds_tok_pairmap_free(&o);
    }
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t i = ds_tok_mix(k) & (m->cap - 1);
    while (m->key[i] && m->key[i] != k) i = (i + 1) & (m->cap - 1);
    if (!m->key[i]) m->n++;
    m->key[i] = k;
    m->rank[i] = rank;
    m->newid[i] = newid;
}

/* ---- string buffer / JSON writer --------------------------------------------------- */
void ds_tok_sbuf_put(ds_tok_sbuf *b, const char *s, size_t n) {
    if (!n && b->p) return;
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2 + 256;
        b->p = ds_realloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void ds_tok_sbuf_puts(ds_tok_sbuf *b, const char *s) { ds_tok_sbuf_put(b, s, strlen(s)); }
void ds_tok_sbuf_json_str(ds_tok_sbuf *b, const char *s, size_t n) {
    ds_tok_sbuf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        ds_tok_sbuf_put(b, s + run, i - run);
        run = i + 1;
        char e[8];
        switch (c) {
        case '"': ds_tok_sbuf_puts(b, "\\\""); break;
        case '\\': ds_tok_sbuf_puts(b, "\\\\"); break;
        case '\n': ds_tok_sbuf_puts(b, "\\n"); break;
        case '\r': ds_tok_sbuf_puts(b, "\\r"); break;
        case '\t': ds_tok_sbuf_puts(b, "\\t"); break;
        default: snprintf(e, sizeof e, "\\u%04x", c); ds_tok_sbuf_puts(b, e);
        }
    }
    ds_tok_sbuf_put(b, s + run, n - run);
    ds_tok_sbuf_put(b, "\"", 1);
}

/* ---- byte-level map ------------------------------------------------------------- */
static uint32_t g_b2c[256];
static int16_t g_c2b[0x144]; /* codepoint -> byte, -1 if not a mapped char */
static pthread_once_t g_map_once = PTHREAD_ONCE_INIT;
static void map_init(void) {
    int k = 0;
    for (int i = 0; i < 0x144; i++) g_c2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        g_b2c[b] = keep ? (uint32_t)b : 0x100u + (uint32_t)k++;
        g_c2b[g_b2c[b]] = (int16_t)b;
    }
}
uint32_t ds_byte_to_cp(uint8_t b) {
    pthread_once(&g_map_once, map_init);
    return g_b2c[b];
}
size_t ds_tok_bytes_to_mapped(const unsigned char *s, size_t n, char *out) {
    pthread_once(&g_map_once, map_init);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = g_b2c[s[i]];
        if (c < 0x80) out[o++] = (char)c;
        else { out[o++] = (char)(0xC0 | (c >> 6)); out[o++] = (char)(0x80 | (c & 0x3F)); }
    }
    out[o] = 0;
    return o;
}
/* Inverse map of a token string; -1 when some char is not a mapped byte (the
 * ByteLevel decoder then keeps the token's UTF-8 as it is). */
static int64_t mapped_to_bytes(const char *s, size_t n, char *out) {
    pthread_once(&g_map_once, map_init);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        if (c < 0x80) { cp = c; i++; }
        else if ((c & 0xE0) == 0xC0 && i + 1 < n && (s[i + 1] & 0xC0) == 0x80) {
            cp = ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
            i += 2;
        } else return -1;
        if (cp >= 0x144 || g_c2b[cp] < 0) return -1;
        out[o++] = (char)g_c2b[cp];
    }
    return (int64_t)o;
}

/* ---- added-token trie --------------------------------------------------------------- */
static void trie_init(ds_trie *tr) {
    memset(tr, 0, sizeof *tr);
    ds_tok_pairmap_init(&tr->edges, 64);
    tr->cap = 64;
    tr->term = ds_malloc((size_t)tr->cap * sizeof *tr->term);
    tr->term[0] = -1;
    tr->nnodes = 1;
}
static void trie_free(ds_trie *tr) {
    ds_tok_pairmap_free(&tr->edges);
    free(tr->term);
}
static int32_t trie_child(const ds_trie *tr, int32_t node, unsigned char c) {
    int32_t r, x;
    return ds_tok_pairmap_get(&tr->edges, node, c, &r, &x) ? r : -1;
}
static void trie_add(ds_trie *tr, const char *s, size_t n, int32_t idx) {
    int32_t node = 0;
    if (!tr->first[(unsigned char)s[0]]) { tr->nfirst++; tr->first_byte = (unsigned char)s[0]; }
    tr->first[(unsigned char)s[0]] = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t ch = trie_child(tr, node, (unsigned char)s[i]);
        if (ch < 0) {
            if (tr->nnodes == tr->cap) {
                tr->cap *= 2;
                tr->term = ds_realloc(tr->term, (size_t)tr->cap * sizeof *tr->term);
            }
            ch = (int32_t)tr->nnodes++;
            tr->term[ch] = -1;
            ds_tok_pairmap_put(&tr->edges, node, (unsigned char)s[i], ch, 0);
        }
        node = ch;
    }
    tr->term[node] = idx;
}
/* Longest token starting at s[0]; returns its added[] index and length. */
static int32_t trie_longest(const ds_trie *tr, const char *s, size_t n, size_t *mlen) {
    int32_t node = 0, best = -1;
    for (size_t i = 0; i < n; i++) {
        node = trie_child(tr, node, (unsigned char)s[i]);
        if (node < 0) break;
        if (tr->term[node] >= 0) { best = tr->term[node]; *mlen = i + 1; }
    }
    return best;
}

/* ---- small Unicode helpers ------------------------------------------------------------ */
static uint32_t utf8_dec(const unsigned char *s, size_t n, size_t *k) {
    unsigned c = s[0];
    if (c < 0x80 || n < 2) { *k = 1; return c; }
    if ((c & 0xE0) == 0xC0) { *k = 2; return ((c & 0x1F) << 6) | (s[1] & 0x3F); }
    if ((c & 0xF0) == 0xE0 && n >= 3) { *k = 3; return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F); }
    if ((c & 0xF8) == 0xF0 && n >= 4) {
        *k = 4;
        return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
    *k = 1;
    return c;
}
/* Unicode White_Space (Rust char::is_whitespace) */
static int is_ws_cp(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}
/* length of the whitespace run that ends at s[n] (looking backwards) */
static size_t ws_run_before(const char *s, size_t n) {
    size_t i = n;
    while (i > 0) {
        size_t j = i - 1;
        while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80 && i - j < 4) j--;
        size_t k;
        uint32_t c = utf8_dec((const unsigned char *)s + j, i - j, &k);
        if (j + k != i || !is_ws_cp(c)) break;
        i = j;
    }
    return n - i;
}
static size_t ws_run_after(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k;
        uint32_t c = utf8_dec((const unsigned char *)s + i, n - i, &k);
        if (!is_ws_cp(c)) break;
        i += k;
    }
    return i;
}
static int is_word_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* ---- ids vector --------------------------------------------------------------------- */
void ds_ids_push(ds_ids *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 256;
        v->ids = ds_realloc(v->ids, (size_t)v->cap * sizeof *v->ids);
    }
    v->ids[v->n++] = id;
}
static void ids_append(ds_ids *v, const int32_t *a, int64_t n) {
    if (n <= 0) return;
    if (v->n + n > v->cap) {
        v->cap = (v->n + n) * 2 + 256;
        v->ids = ds_realloc(v->ids, (size_t)v->cap * sizeof *v->ids);
    }
    memcpy(v->ids + v->n, a, (size_t)n * sizeof *a);
    v->n += n;
}
void ds_ids_free(ds_ids *v) {
    free(v->ids);
    memset(v, 0, sizeof *v);
}

/* ---- BPE on one word -------------------------------------------------------------- */
int64_t ds_bpe_merge_word_ref(const struct ds_tokenizer *t, int32_t *sym, int64_t n) {
    for (;;) {
        int32_t best = INT32_MAX, bid = -1;
        int64_t bi = -1;
        for (int64_t i = 0; i + 1 < n; i++) {
            int32_t r, id;
            if (ds_tok_pairmap_get(&t->pairs, sym[i], sym[i + 1], &r, &id) && r < best) { best = r; bi = i; bid = id; }
        }
        if (bi < 0) return n;
        sym[bi] = bid;
        memmove(sym + bi + 1, sym + bi + 2, (size_t)(n - bi - 2) * sizeof *sym);
        n--;
    }
}

/* Heap version for long words: as tokenizers' Word::merge_all (min-heap on
 * (rank, pos), stale entries skipped when popped). */
typedef struct { int32_t rank; int32_t newid; int64_t pos; } hent;
static int hless(hent a, hent b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }
static void hpush(hent *h, int64_t *n, hent e) {
    int64_t i = (*n)++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!hless(e, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}
static hent hpop(hent *h, int64_t *n) {
    hent top = h[0], e = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(h[c + 1], h[c])) c++;
        if (!hless(h[c], e)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = e;
    return top;
}
int64_t ds_bpe_merge_word_heap(const struct ds_tokenizer *t, int32_t *sym, int64_t n) {
    if (n < 2) return n;
    int64_t *prv = ds_malloc((size_t)n * sizeof *prv), *nxt = ds_malloc((size_t)n * sizeof *nxt);
    uint8_t *dead = ds_calloc((size_t)n, 1);
    hent *h = ds_malloc((size_t)(2 * n + 4) * sizeof *h);
    int64_t hn = 0;
    for (int64_t i = 0; i < n; i++) { prv[i] = i - 1; nxt[i] = i + 1 < n ? i + 1 : -1; }
    for (int64_t i = 0; i + 1 < n; i++) {
        int32_t r, id;
        if (ds_tok_pairmap_get(&t->pairs, sym[i], sym[i + 1], &r, &id)) hpush(h, &hn, (hent){r, id, i});
    }
    while (hn) {
        hent top = hpop(h, &hn);
        int64_t p = top.pos;
        if (dead[p] || nxt[p] < 0) continue;
        int64_t q = nxt[p];
        int32_t r, id;
        if (!ds_tok_pairmap_get(&t->pairs, sym[p], sym[q], &r, &id) || id != top.newid) continue;
        sym[p] = id;
        dead[q] = 1;
        nxt[p] = nxt[q];
        if (nxt[q] >= 0) prv[nxt[q]] = p;
        if (prv[p] >= 0 && ds_tok_pairmap_get(&t->pairs, sym[prv[p]], sym[p], &r, &id)) {
            if (hn + 2 > 2 * n + 4) { /* cannot happen: at most one push per merge side */ }
            hpush(h, &hn, (hent){r, id, prv[p]});
        }
        if (nxt[p] >= 0 && ds_tok_pairmap_get(&t->pairs, sym[p], sym[nxt[p]], &r, &id)) hpush(h, &hn, (hent){r, id, p});
    }
    int64_t m = 0;
    for (int64_t i = 0; i >= 0; i = nxt[i]) sym[m++] = sym[i];
    free(prv); free(nxt); free(dead); free(h);
    return m;
}

/* Fast path: ranks of adjacent pairs kept in an array; after a merge only the
 * two neighbouring ranks are looked up again. */
int64_t ds_bpe_merge_word(const struct ds_tokenizer *t, int32_t *sym, int64_t n) {
    if (n < 2) return n;
    if (n > 256) return ds_bpe_merge_word_heap(t, sym, n);
    int32_t rank[256], nid[256];
    for (int64_t i = 0; i + 1 < n; i++)
        if (!ds_tok_pairmap_get(&t->pairs, sym[i], sym[i + 1], &rank[i], &nid[i])) rank[i] = INT32_MAX;
    for (;;) {
        int32_t best = INT32_MAX;
        int64_t bi = -1;
        for (int64_t i = 0; i + 1 < n; i++)
            if (rank[i] < best) { best = rank[i]; bi = i; }
        if (bi < 0) return n;
        sym[bi] = nid[bi];
        memmove(sym + bi + 1, sym + bi + 2, (size_t)(n - bi - 2) * sizeof *sym);
        memmove(rank + bi + 1, rank + bi + 2, (size_t)(n > bi + 3 ? n - bi - 3 : 0) * sizeof *rank);
        memmove(nid + bi + 1, nid + bi + 2, (size_t)(n > bi + 3 ? n - bi - 3 : 0) * sizeof *nid);
        n--;
        if (bi > 0 && !ds_tok_pairmap_get(&t->pairs, sym[bi - 1], sym[bi], &rank[bi - 1], &nid[bi - 1]))
            rank[bi - 1] = INT32_MAX;
        if (bi + 1 < n && !ds_tok_pairmap_get(&t->pairs, sym[bi], sym[bi + 1], &rank[bi], &nid[bi]))
            rank[bi] = INT32_MAX;
    }
}

/* ---- per-thread pre-token cache ------------------------------------------------------ */
#define CACHE_SLOTS (1u << 18)
#define CACHE_MAX_KEY 128
/* One slot, 32 bytes: a hit on a key of <= 8 bytes with <= 2 ids reads only
 * the slot (one cache line); longer keys / more ids live in the arenas. */
typedef struct {
    uint64_t h;
    uint64_t k8;          /* the first 8 key bytes, zero padded */
    uint16_t klen, vn;
    uint32_t koff;        /* key bytes 8.. in keys[] when klen > 8 */
    union {
        int32_t ids[2];   /* vn <= 2 */
        uint32_t voff;    /* vn > 2: ids in vals[] */
    } v;
} centry;
typedef struct {
    uint64_t serial;
    centry *slot;
    uint32_t used;
    char *keys;
    size_t kn, kcap;
    int32_t *vals;
    size_t vn, vcap;
    int32_t *sym;
    int64_t symcap;
} tcache;
static pthread_key_t g_cache_key;
static pthread_once_t g_cache_once = PTHREAD_ONCE_INIT;
static void tcache_free(void *p) {
    tcache *c = p;
    if (!c) return;
    free(c->slot); free(c->keys); free(c->vals); free(c->sym);
    free(c);
}
static void cache_key_make(void) { pthread_key_create(&g_cache_key, tcache_free); }
static void tcache_clear(tcache *c) {
    memset(c->slot, 0, CACHE_SLOTS * sizeof *c->slot);
    c->used = 0;
    c->kn = c->vn = 0;
}
static tcache *tcache_get(const struct ds_tokenizer *t) {
    pthread_once(&g_cache_once, cache_key_make);
    tcache *c = pthread_getspecific(g_cache_key);
    if (!c) {
        c = ds_calloc(1, sizeof *c);
        c->slot = ds_calloc(CACHE_SLOTS, sizeof *c->slot);
        c->kcap = 1 << 22;
        c->keys = ds_malloc(c->kcap);
        c->vcap = 1 << 20;
        c->vals = ds_malloc(c->vcap * sizeof *c->vals);
        pthread_setspecific(g_cache_key, c);
    }
    if (c->serial != t->serial) { tcache_clear(c); c->serial = t->serial; }
    return c;
}

static _Atomic uint64_t g_serial = 1;

/* Initial symbols of a pre-token, then merges; appends ids to out. */
static void bpe_word(const struct ds_tokenizer *t, tcache *c, const char *s, size_t n, ds_ids *out) {
    if (t->ignore_merges) {
        int32_t id = ds_tok_strmap_get(&t->vbytes, s, n);
        if (id >= 0) { ds_ids_push(out, id); return; }
    }
    if ((int64_t)n * 4 + 8 > c->symcap) {
        c->symcap = (int64_t)n * 4 + 64;
        c->sym = ds_realloc(c->sym, (size_t)c->symcap * sizeof *c->sym);
    }
    int32_t *sym = c->sym;
    int64_t m = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_id[(unsigned char)s[i]];
            if (id >= 0) sym[m++] = id;
            else if (t->unk_id >= 0 && !(t->fuse_unk && m > 0 && sym[m - 1] == t->unk_id)) sym[m++] = t->unk_id;
        }
    } else {
        for (size_t i = 0; i < n;) {
            size_t k;
            (void)utf8_dec((const unsigned char *)s + i, n - i, &k);
            int32_t id = ds_tok_strmap_get(&t->vbytes, s + i, k);
            if (id >= 0) sym[m++] = id;
            else if (t->byte_fallback && t->bytefb_id[(unsigned char)s[i]] >= 0) {
                for (size_t j = 0; j < k; j++) {
                    int32_t b = t->bytefb_id[(unsigned char)s[i + j]];
                    sym[m++] = b >= 0 ? b : t->unk_id;
                }
            } else if (t->unk_id >= 0 && !(t->fuse_unk && m > 0 && sym[m - 1] == t->unk_id)) {
                sym[m++] = t->unk_id;
            }
            i += k;
        }
        /* unk from a missing <0xXX> is -1 when there is no unk token: drop */
        int64_t w = 0;
        for (int64_t i = 0; i < m; i++) if (sym[i] >= 0) sym[w++] = sym[i];
        m = w;
    }
    m = ds_bpe_merge_word(t, sym, m);
    ids_append(out, sym, m);
}

/* h: ds_tok_hash(s, n) when the caller has it, else 0 */
static void encode_piece_h(const struct ds_tokenizer *t, tcache *c, const char *s, size_t n, uint64_t h, ds_ids *out) {
    if (n > CACHE_MAX_KEY) { bpe_word(t, c, s, n, out); return; }
    if (!h) h = ds_tok_hash(s, n);
    uint64_t k8 = first8((const unsigned char *)s, n);
    uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);
    for (;;) {
        centry *e = &c->slot[i];
        if (!e->h) break;
        if (e->h == h && e->k8 == k8 && e->klen == n && (n <= 8 || !memcmp(c->keys + e->koff, s + 8, n - 8))) {
            if (e->vn <= 2) ids_append(out, e->v.ids, e->vn);
            else ids_append(out, c->vals + e->v.voff, e->vn);
            return;
        }
        i = (i + 1) & (CACHE_SLOTS - 1);
    }
    int64_t before = out->n;
    bpe_word(t, c, s, n, out);
    int64_t cnt = out->n - before;
    if (cnt > 65535) return; /* not cached */
    if (c->used * 4 > CACHE_SLOTS * 3 || c->kn + n > c->kcap || c->vn + (size_t)cnt > c->vcap) {
        tcache_clear(c);
        i = (uint32_t)h & (CACHE_SLOTS - 1);
    }
    centry *e = &c->slot[i];
    e->h = h;
    e->k8 = k8;
    e->klen = (uint16_t)n;
    e->vn = (uint16_t)cnt;
    e->koff = (uint32_t)c->kn;
    if (n > 8) {
        memcpy(c->keys + c->kn, s + 8, n - 8);
        c->kn += n - 8;
    }
    if (cnt <= 2) {
        memcpy(e->v.ids, out->ids + before, (size_t)cnt * sizeof *out->ids);
    } else {
        e->v.voff = (uint32_t)c->vn;
        memcpy(c->vals + c->vn, out->ids + before, (size_t)cnt * sizeof *out->ids);
        c->vn += (size_t)cnt;
    }
    c->used++;
}

static void encode_piece(const struct ds_tokenizer *t, tcache *c, const char *s, size_t n, ds_ids *out) {
    encode_piece_h(t, c, s, n, 0, out);
}

/* ---- encode ---------------------------------------------------------------------------- */
typedef struct {
    const struct ds_tokenizer *t;
    tcache *c;
    ds_ids *out;
    const ds_encode_opts *o;
    const char *text;   /* the text given to encode */
    int64_t doc_off;    /* its offset in the whole document (chunks of encode_parallel) */
    const char *seg;    /* the segment being pre-tokenized (NFC output or inside text) */
    int64_t seg_off;    /* its offset in the document */
} enc_ctx;

/* The split decision of the token-boundary bias for the piece at document
 * offset off: a hash of (seed, off), so it does not depend on how the text was
 * cut into chunks or threads. */
static int bias_split(const enc_ctx *e, const char *piece) {
    uint64_t off = (uint64_t)(e->seg_off + (piece - e->seg));
    uint64_t x = ds_tok_mix(e->o->seed ^ ds_tok_mix(off + 0x9E3779B97F4A7C15ULL));
    return (double)(x >> 11) * 0x1.0p-53 < e->o->split_punct_nl_p;
}

/* Token-boundary bias: "<punct...>\n..." -> "<punct...>" + "\n..." */
static int punct_nl_split(const char *s, size_t n, size_t *cut) {
    size_t k = n;
    while (k > 0 && (s[k - 1] == '\n' || s[k - 1] == '\r')) k--;
    if (k == n || k == 0) return 0;
    size_t i = s[0] == ' ' ? 1 : 0;
    if (i >= k) return 0;
    for (size_t j = i; j < k; j++) {
        unsigned char c = (unsigned char)s[j];
        if (c <= ' ' || (c < 0x80 && is_word_byte(c))) return 0;
    }
    *cut = k;
    return 1;
}

static void on_piece(void *vctx, const char *s, size_t n) {
    enc_ctx *e = vctx;
    size_t cut;
    if (e->o && e->o->split_punct_nl_p > 0 && punct_nl_split(s, n, &cut) &&
        bias_split(e, s)) {
        encode_piece(e->t, e->c, s, cut, e->out);
        encode_piece(e->t, e->c, s + cut, n - cut, e->out);
        return;
    }
    encode_piece(e->t, e->c, s, n, e->out);
}

/* Pieces in groups of 16: hash all and prefetch their cache slots, then encode
 * (the slot loads overlap instead of stalling one after the other). */
static void on_batch(void *vctx, const ds_tok_piece *pc, int64_t np) {
    enc_ctx *e = vctx;
    if (e->o && e->o->split_punct_nl_p > 0) {
        for (int64_t i = 0; i < np; i++) on_piece(e, pc[i].p, pc[i].n);
        return;
    }
    uint64_t h[16];
    for (int64_t i0 = 0; i0 < np; i0 += 16) {
        int64_t m = np - i0 < 16 ? np - i0 : 16;
        for (int64_t j = 0; j < m; j++) {
            const ds_tok_piece *q = &pc[i0 + j];
            h[j] = q->n <= CACHE_MAX_KEY ? ds_tok_hash(q->p, q->n) : 0;
            if (h[j]) __builtin_prefetch(&e->c->slot[(uint32_t)h[j] & (CACHE_SLOTS - 1)]);
        }
        for (int64_t j = 0; j < m; j++) encode_piece_h(e->t, e->c, pc[i0 + j].p, pc[i0 + j].n, h[j], e->out);
    }
}

static int encode_plain(enc_ctx *e, const char *s, size_t n) {
    if (!n) return 0;
    return ds_pretok_run_batch(e->t, s, n, on_batch, e);
}

/* Split s at added tokens of trie tr (leftmost-longest, non-overlapping, as
 * tokenizers' AddedVocabulary::find_matches), encoding the gaps with next(). */
static int split_added(enc_ctx *e, const ds_trie *tr, const char *s, size_t n, int allow_special,
                       int (*next)(enc_ctx *, const char *, size_t)) {
    const struct ds_tokenizer *t = e->t;
    size_t done = 0;     /* text before this is consumed */
    size_t i = 0;
    while (i < n) {
        if (tr->nfirst == 1) { /* one possible first byte (DeepSeek: '<') */
            const char *f = memchr(s + i, tr->first_byte, n - i);
            if (!f) break;
            i = (size_t)(f - s);
        } else if (!tr->first[(unsigned char)s[i]]) { i++; continue; }
        size_t mlen = 0;
        int32_t ai = trie_longest(tr, s + i, n - i, &mlen);
        if (ai < 0) { i++; continue; }
        const ds_added *a = &t->added[ai];
        size_t start = i, stop = i + mlen;
        i = stop; /* the automaton moves past a match even when it is skipped */
        if (a->special && !allow_special) continue;
        if (a->single_word) {
            int sb = start == 0 || !is_word_byte((unsigned char)s[start - 1]);
            int se = stop == n || !is_word_byte((unsigned char)s[stop]);
            if (!sb || !se) continue;
        }
        if (a->lstrip) {
            size_t ns = start - ws_run_before(s, start);
            start = ns > done ? ns : done;
        }
        if (a->rstrip) stop += ws_run_after(s + stop, n - stop);
        if (start > done && next(e, s + done, start - done)) return -1;
        ds_ids_push(e->out, a->id);
        done = stop;
        i = stop;
    }
    if (done < n && next(e, s + done, n - done)) return -1;
    return 0;
}
static int allow_special_of(const enc_ctx *e) { return e->o ? e->o->allow_special : 1; }
/* a gap between raw-matched added tokens: normalize, match normalized added
 * tokens, pre-tokenize the rest */
static int encode_normalized(enc_ctx *e, const char *s, size_t n) {
    const struct ds_tokenizer *t = e->t;
    char *ns = NULL;
    e->seg_off = e->doc_off + (s - e->text);
    if (t->nfc) s = ns = ds_tok_nfc(s, n, &n);
    e->seg = s;
    int rc = t->has_norm_added ? split_added(e, &t->trie_norm, s, n, allow_special_of(e), encode_plain)
                               : encode_plain(e, s, n);
    free(ns);
    return rc;
}

static int64_t encode_at(const ds_tokenizer *t, const char *text, size_t len, const ds_encode_opts *o,
                         ds_ids *out, int64_t doc_off) {
    enc_ctx e = {.t = t, .c = tcache_get(t), .out = out, .o = o, .text = text, .doc_off = doc_off};
    int64_t before = out->n;
    int add = o && o->add_special;
    if (add) {
        if (t->has_template) ids_append(out, t->post_pre, t->npost_pre);
        else if (t->add_bos && t->bos >= 0) ds_ids_push(out, t->bos);
    }
    int rc = t->nadded ? split_added(&e, &t->trie_raw, text, len, o ? o->allow_special : 1, encode_normalized)
                       : encode_normalized(&e, text, len);
    if (rc) { out->n = before; return -1; }
    if (add) {
        if (t->has_template) ids_append(out, t->post_suf, t->npost_suf);
        else if (t->add_eos && t->eos >= 0) ds_ids_push(out, t->eos);
    }
    return out->n - before;
}

int64_t ds_tokenizer_encode_ex(const ds_tokenizer *t, const char *text, size_t len,
                               const ds_encode_opts *o, ds_ids *out) {
    return encode_at(t, text, len, o, out, 0);
}

int64_t ds_tokenizer_encode(const ds_tokenizer *t, const char *text, size_t len, int allow_special,
                            int32_t **ids_out) {
    ds_ids v = {0};
    ds_encode_opts o = {.allow_special = allow_special};
    int64_t n = ds_tokenizer_encode_ex(t, text, len, &o, &v);
    if (n < 0) { ds_ids_free(&v); *ids_out = NULL; return -1; }
    if (!v.ids) v.ids = ds_malloc(sizeof(int32_t));
    *ids_out = v.ids;
    return n;
}

int ds_tokenizer_pretokenize(const ds_tokenizer *t, const char *text, size_t len, ds_pretok_fn fn, void *ctx) {
    return ds_pretok_run(t, text, len, fn, ctx);
}

/* ---- parallel encode ---------------------------------------------------------------- */
int ds_tokenizer_encode_batch(const ds_tokenizer *t, int64_t ndocs, const char *const *texts,
                              const size_t *lens, const ds_encode_opts *o, ds_ids *out) {
    int fail = 0;
    char msg[512] = {0};
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < ndocs; i++) {
        ds_encode_opts oi = o ? *o : (ds_encode_opts){.allow_special = 1};
        oi.seed = (o ? o->seed : 0) + (uint64_t)i * 0x9E3779B97F4A7C15ULL;
        if (ds_tokenizer_encode_ex(t, texts[i], lens[i], &oi, &out[i]) < 0) {
#pragma omp critical
            {
                if (!fail) snprintf(msg, sizeof msg, "%s", ds_errmsg());
                fail = 1;
            }
        }
    }
    if (fail) return ds_err("%s", msg);
    return 0;
}

/* Cut points where the serial result is unchanged: after "\n" preceded by a
 * non-space byte and followed by an ASCII letter or digit (see chunk_safe). */
int64_t ds_tokenizer_encode_parallel(const ds_tokenizer *t, const char *text, size_t len,
                                     const ds_encode_opts *o, ds_ids *out) {
    int nth = ds_threads();
    /* fixed-size chunks: the cut points do not depend on the thread count */
    const size_t target = 1u << 18;
    if (!t->chunk_safe || nth <= 1 || len < 2 * target || (o && o->add_special)) {
        return ds_tokenizer_encode_ex(t, text, len, o, out);
    }
    int64_t cap = (int64_t)(len / target) + 2, nc = 0;
    size_t *off = ds_malloc((size_t)(cap + 1) * sizeof *off);
    size_t start = 0;
    while (start < len) {
        size_t end = start + target;
        if (end >= len) end = len;
        else {
            while (end < len) {
                const char *nl = memchr(text + end, '\n', len - end);
                if (!nl) { end = len; break; }
                size_t p = (size_t)(nl - text);
                unsigned char pc = p > 0 ? (unsigned char)text[p - 1] : ' ';
                unsigned char nc2 = p + 1 < len ? (unsigned char)text[p + 1] : ' ';
                if (pc > ' ' && pc < 0x80 && nc2 < 0x80 && is_word_byte(nc2) && nc2 != '_') { end = p + 1; break; }
                end = p + 1;
            }
        }
        off[nc++] = start;
        start = end;
    }
    off[nc] = len;
    ds_ids *parts = ds_calloc((size_t)nc, sizeof *parts);
    ds_encode_opts oo = o ? *o : (ds_encode_opts){.allow_special = 1};
    int fail = 0;
    char msg[512] = {0};
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < nc; i++) {
        if (encode_at(t, text + off[i], off[i + 1] - off[i], &oo, &parts[i], (int64_t)off[i]) < 0) {
#pragma omp critical
            {
                if (!fail) snprintf(msg, sizeof msg, "%s", ds_errmsg());
                fail = 1;
            }
        }
    }
    int64_t before = out->n;
    for (int64_t i = 0; i < nc; i++) {
        if (!fail) ids_append(out, parts[i].ids, parts[i].n);
        ds_ids_free(&parts[i]);
    }
    free(parts);
    free(off);
    if (fail) return ds_err("%s", msg);
    return out->n - before;
}

/* ---- decode ------------------------------------------------------------------------------ */
const char *ds_tokenizer_token_bytes(const ds_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->nids || !t->tok[id]) return NULL;
    *len = t->tblen[id];
    return t->tbytes[id];
}

char *ds_tokenizer_decode(const ds_tokenizer *t, const int32_t *ids, int64_t n, int skip_special, size_t *len) {
    ds_tok_sbuf b = {0};
    ds_tok_sbuf_put(&b, "", 0);
    for (int64_t i = 0; i < n; i++) {
        size_t l;
        const char *s = ds_tokenizer_token_bytes(t, ids[i], &l);
        if (!s) {
            free(b.p);
            ds_err("decode: id %d at position %lld is out of range (vocab %lld)", ids[i], (long long)i,
                   (long long)t->nids);
            return NULL;
        }
        if (skip_special && t->is_special[ids[i]]) continue;
        ds_tok_sbuf_put(&b, s, l);
    }
    if (len) *len = b.n;
    return b.p;
}

void ds_decode_stream_init(ds_decode_stream *s, const ds_tokenizer *t, int skip_special) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->skip_special = skip_special;
}
/* Length of a UTF-8 sequence by its lead byte (0 for a continuation byte). */
static int seq_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xC0 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 0;
}
const char *ds_decode_stream_next(ds_decode_stream *s, int32_t id, size_t *len) {
    size_t l;
    const char *b = ds_tokenizer_token_bytes(s->t, id, &l);
    *len = 0;
    if (!b) { ds_err("decode: id %d is out of range (vocab %lld)", id, (long long)s->t->nids); return NULL; }
    if (s->skip_special && s->t->is_special[id]) l = 0;
    /* pending bytes + token, then hold back an incomplete character at the end */
    static __thread char *big;
    static __thread size_t bigcap;
    char *o = s->out;
    size_t need = (size_t)s->npend + l;
    if (need > 4096) {
        if (bigcap < need + 8) { bigcap = need + 8; big = ds_realloc(big, bigcap); }
        o = big;
    }
    memcpy(o, s->pend, (size_t)s->npend);
    memcpy(o + s->npend, b, l);
    size_t n = need, keep = 0;
    /* look back at most 3 bytes for a lead byte whose sequence is not complete */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)o[n - k];
        int sl = seq_len(c);
        if (sl == 0) continue;        /* continuation byte: keep looking */
        if (sl > (int)k) {
            /* complete only if the bytes after the lead are continuations */
            int ok = 1;
            for (size_t j = n - k + 1; j < n; j++) if (((unsigned char)o[j] & 0xC0) != 0x80) ok = 0;
            if (ok) keep = k;
        }
        break;
    }
    s->npend = (int)keep;
    memcpy(s->pend, o + n - keep, keep);
    *len = n - keep;
    return o;
}
const char *ds_decode_stream_flush(ds_decode_stream *s, size_t *len) {
    memcpy(s->out, s->pend, (size_t)s->npend);
    *len = (size_t)s->npend;
    s->npend = 0;
    return s->out;
}

/* ---- vocabulary queries ------------------------------------------------------------------ */
int64_t ds_tokenizer_vocab_size(const ds_tokenizer *t) { return t->nids; }
const char *ds_tokenizer_id_to_token(const ds_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->nids ? t->tok[id] : NULL;
}
int32_t ds_tokenizer_token_to_id(const ds_tokenizer *t, const char *token) {
    return ds_tok_strmap_get(&t->vocab, token, strlen(token));
}
int32_t ds_tokenizer_bos_id(const ds_tokenizer *t) { return t->bos; }
int32_t ds_tokenizer_eos_id(const ds_tokenizer *t) { return t->eos; }
int ds_tokenizer_add_bos(const ds_tokenizer *t) { return t->add_bos || (t->has_template && t->npost_pre > 0); }
int ds_tokenizer_has_template(const ds_tokenizer *t) { return t->has_template; }
int ds_tokenizer_is_special(const ds_tokenizer *t, int32_t id) { return id >= 0 && id < t->nids && t->is_special[id]; }

void ds_tokenizer_byte_lengths(const ds_tokenizer *t, int64_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        size_t len = 0;
        out[i] = i <= INT32_MAX && !ds_tokenizer_is_special(t, (int32_t)i) && ds_tokenizer_token_bytes(t, (int32_t)i, &len)
                     ? (int64_t)len
                     : 0;
    }
}
int64_t ds_tokenizer_num_merges(const ds_tokenizer *t) { return t->nmerges; }
int64_t ds_tokenizer_num_added(const ds_tokenizer *t) { return t->nadded; }
int32_t ds_tokenizer_added_id(const ds_tokenizer *t, int64_t i) { return t->added[i].id; }
int ds_tokenizer_merge(const ds_tokenizer *t, int64_t i, const char **a, const char **b) {
    if (i < 0 || i >= t->nmerges) return ds_err("merge %lld out of range", (long long)i);
    *a = t->mtok[t->merges[i][0]];
    *b = t->mtok[t->merges[i][1]];
    return 0;
}

void ds_tokenizer_describe(const ds_tokenizer *t, char *buf, size_t cap) {
    static const char *bh[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    ds_tok_sbuf b = {0};
    ds_tok_sbuf_put(&b, "", 0);
    for (int i = 0; i < t->nsteps; i++) {
        const ds_pstep *st = &t->steps[i];
        if (i) ds_tok_sbuf_puts(&b, " > ");
        if (st->kind == DS_PS_PREFIX_SPACE) { ds_tok_sbuf_puts(&b, "PrefixSpace"); continue; }
        ds_tok_sbuf_puts(&b, st->kind == DS_PS_SPLIT_REGEX ? "Split(Regex " : "Split(String ");
        /* the pattern as a JSON string: control characters escaped, one line */
        ds_tok_sbuf_json_str(&b, st->lit, st->litlen);
        ds_tok_sbuf_puts(&b, ", ");
        ds_tok_sbuf_puts(&b, bh[st->behavior]);
        ds_tok_sbuf_puts(&b, st->invert ? ", invert)" : ")");
    }
    if (t->byte_level) ds_tok_sbuf_puts(&b, b.n ? " > ByteLevel" : "ByteLevel");
    snprintf(buf, cap, "%s", b.p);
    free(b.p);
}

/* ---- load ----------------------------------------------------------------------------------- */
void ds_tokenizer_free(ds_tokenizer *t) {
    if (!t) return;
    for (int64_t i = 0; i < t->nids; i++) {
        free(t->tok[i]);
        free(t->tbytes[i]);
        free(t->mtok[i]);
        free(t->mbytes[i]);
    }
    free(t->tok); free(t->tbytes); free(t->tblen); free(t->is_special);
    free(t->mtok); free(t->mbytes); free(t->mblen);
    ds_tok_strmap_free(&t->vocab);
    ds_tok_strmap_free(&t->vbytes);
    free(t->merges);
    ds_tok_pairmap_free(&t->pairs);
    for (int64_t i = 0; i < t->nadded; i++) free(t->added[i].content);
    free(t->added);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    ds_pretok_free(t);
    free(t->post_pre); free(t->post_suf);
    free(t->j_normalizer); free(t->j_pretok); free(t->j_post); free(t->j_decoder);
    free(t->model_unk);
    free(t);
}

static void ensure_ids(ds_tokenizer *t, int64_t n) {
    if (n <= t->nids) return;
    t->tok = ds_realloc(t->tok, (size_t)n * sizeof *t->tok);
    t->tbytes = ds_realloc(t->tbytes, (size_t)n * sizeof *t->tbytes);
    t->tblen = ds_realloc(t->tblen, (size_t)n * sizeof *t->tblen);
    t->is_special = ds_realloc(t->is_special, (size_t)n);
    t->mtok = ds_realloc(t->mtok, (size_t)n * sizeof *t->mtok);
    t->mbytes = ds_realloc(t->mbytes, (size_t)n * sizeof *t->mbytes);
    t->mblen = ds_realloc(t->mblen, (size_t)n * sizeof *t->mblen);
    for (int64_t i = t->nids; i < n; i++) {
        t->tok[i] = NULL; t->tbytes[i] = NULL; t->tblen[i] = 0; t->is_special[i] = 0;
        t->mtok[i] = NULL; t->mbytes[i] = NULL; t->mblen[i] = 0;
    }
    t->nids = n;
}

static void set_token(ds_tokenizer *t, int32_t id, const char *s, size_t n) {
    free(t->tok[id]);
    free(t->tbytes[id]);
    t->tok[id] = ds_malloc(n + 1);
    memcpy(t->tok[id], s, n);
    t->tok[id][n] = 0;
    char *b = ds_malloc(n + 1);
    int64_t bl = t->byte_level ? mapped_to_bytes(s, n, b) : -1;
    if (bl < 0) { memcpy(b, s, n); bl = (int64_t)n; }
    b[bl] = 0;
    t->tbytes[id] = b;
    t->tblen[id] = (uint32_t)bl;
}

static char *json_dup(const cJSON *j) {
    if (!j) return ds_strdup("null");
    char *p = cJSON_PrintUnformatted(j);
    if (!p) ds_die(1, "out of memory printing JSON");
    char *r = ds_strdup(p);
    cJSON_free(p);
    return r;
}

static int parse_post(ds_tokenizer *t, const cJSON *j, const char *where) {
    if (!j || cJSON_IsNull(j)) return 0;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(ty)) return ds_err("%s: type: missing", where);
    const char *type = ty->valuestring;
    if (!strcmp(type, "ByteLevel")) return 0;
    if (!strcmp(type, "Sequence")) {
        const cJSON *e, *arr = cJSON_GetObjectItemCaseSensitive(j, "processors");
        if (!cJSON_IsArray(arr)) return ds_err("%s: processors: missing", where);
        int i = 0;
        cJSON_ArrayForEach(e, arr) {
            char w[128];
            snprintf(w, sizeof w, "%s.processors[%d]", where, i++);
            if (parse_post(t, e, w)) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        if (!cJSON_IsArray(single)) return ds_err("%s: single: missing", where);
        int seen_a = 0;
        const cJSON *it;
        t->has_template = 1;
        cJSON_ArrayForEach(it, single) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) { seen_a = 1; continue; }
            const cJSON *idj = st ? cJSON_GetObjectItemCaseSensitive(st, "id") : NULL;
            if (!cJSON_IsString(idj)) return ds_err("%s: single: item is neither SpecialToken nor Sequence", where);
            const cJSON *def = sp ? cJSON_GetObjectItemCaseSensitive(sp, idj->valuestring) : NULL;
            const cJSON *ids = def ? cJSON_GetObjectItemCaseSensitive(def, "ids") : NULL;
            if (!cJSON_IsArray(ids)) return ds_err("%s: special_tokens: %s missing", where, ds_quote(idj->valuestring));
            const cJSON *x;
            cJSON_ArrayForEach(x, ids) {
                if (!cJSON_IsNumber(x)) return ds_err("%s: special_tokens: %s: bad id", where, ds_quote(idj->valuestring));
                int32_t **arr = seen_a ? &t->post_suf : &t->post_pre;
                int *cnt = seen_a ? &t->npost_suf : &t->npost_pre;
                *arr = ds_realloc(*arr, (size_t)(*cnt + 1) * sizeof **arr);
                (*arr)[(*cnt)++] = (int32_t)x->valuedouble;
            }
        }
        return 0;
    }
    return ds_err("%s: post-processor type %s is not supported", where, ds_quote(type));
}

static const char *cfg_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static int utf8_ok(const char *s) { return ds_utf8_valid((const unsigned char *)s, strlen(s), NULL); }

static int load_json(ds_tokenizer *t, const cJSON *root, const char *name) {
    if (!cJSON_IsObject(root)) return ds_err("%s: not a JSON object", name);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return ds_err("%s: model: missing", name);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (ty && !cJSON_IsString(ty)) return ds_err("%s: model.type: not a string", name);
    if (ty && strcmp(ty->valuestring, "BPE")) return ds_err("%s: model.type %s is not supported (only BPE)", name, ds_quote(ty->valuestring));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab)) return ds_err("%s: model.vocab: missing", name);
    if (merges && !cJSON_IsArray(merges)) return ds_err("%s: model.merges: not an array", name);
    if (!ty && !merges) return ds_err("%s: model: not a BPE model (no type, no merges)", name);
    const cJSON *x;
    x = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(x) && x->valuedouble > 0) return ds_err("%s: model.dropout: BPE dropout is not supported", name);
    x = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    if (cJSON_IsString(x) && x->valuestring[0]) return ds_err("%s: model.continuing_subword_prefix: not supported", name);
    x = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if (cJSON_IsString(x) && x->valuestring[0]) return ds_err("%s: model.end_of_word_suffix: not supported", name);
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    t->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    t->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));

    /* normalizer: null, NFC, or a Sequence of those */
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(norm, "type");
        if (!cJSON_IsString(nt)) return ds_err("%s: normalizer.type: missing", name);
        if (!strcmp(nt->valuestring, "Sequence")) {
            const cJSON *nl = cJSON_GetObjectItemCaseSensitive(norm, "normalizers"), *e;
            if (!cJSON_IsArray(nl)) return ds_err("%s: normalizer.normalizers: missing", name);
            cJSON_ArrayForEach(e, nl) {
                const cJSON *et = cJSON_GetObjectItemCaseSensitive(e, "type");
                if (!cJSON_IsString(et)) return ds_err("%s: normalizer.normalizers: type missing", name);
                if (strcmp(et->valuestring, "NFC")) return ds_err("%s: normalizer %s is not supported (only NFC)", name, ds_quote(et->valuestring));
                t->nfc = 1;
            }
        } else if (!strcmp(nt->valuestring, "NFC")) {
            t->nfc = 1;
        } else {
            return ds_err("%s: normalizer %s is not supported (only NFC)", name, ds_quote(nt->valuestring));
        }
    }
    /* pre-tokenizer (sets byte_level) */
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (ds_pretok_parse(t, pre)) return ds_err_prefix("%s", name);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    int dec_bytefallback = 0;
    if (dec && !cJSON_IsNull(dec)) {
        /* ByteLevel, or ByteFallback / Fuse (alone or in a Sequence) */
        const cJSON *one = dec, *list = NULL, *dt = cJSON_GetObjectItemCaseSensitive(dec, "type");
        if (!cJSON_IsString(dt)) return ds_err("%s: decoder.type: missing", name);
        if (!strcmp(dt->valuestring, "Sequence")) {
            list = cJSON_GetObjectItemCaseSensitive(dec, "decoders");
            if (!cJSON_IsArray(list)) return ds_err("%s: decoder.decoders: missing", name);
            one = list->child;
        }
        for (; one; one = list ? one->next : NULL) {
            const cJSON *ot = cJSON_GetObjectItemCaseSensitive(one, "type");
            const char *ty = cJSON_IsString(ot) ? ot->valuestring : "?";
            if (!strcmp(ty, "ByteLevel")) t->byte_level = 1; /* decode by the inverse byte map */
            else if (!strcmp(ty, "ByteFallback")) dec_bytefallback = 1;
            else if (strcmp(ty, "Fuse")) return ds_err("%s: decoder %s is not supported (ByteLevel, ByteFallback, Fuse)", name, ds_quote(ty));
            if (!list) break;
        }
    }

    /* vocab */
    int64_t nv = cJSON_GetArraySize(vocab), maxid = -1;
    cJSON_ArrayForEach(x, vocab) {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 16777216 || x->valuedouble != (double)(int64_t)x->valuedouble)
            return ds_err("%s: model.vocab[%s]: id is not an integer in [0, 2^24]", name, ds_quote(x->string));
        if (!utf8_ok(x->string)) return ds_err("%s: model.vocab[%s]: token is not valid UTF-8", name, ds_quote(x->string));
        if ((int64_t)x->valuedouble > maxid) maxid = (int64_t)x->valuedouble;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) return ds_err("%s: added_tokens: not an array", name);
    int64_t na = added && cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0;
    int i = 0;
    if (na) cJSON_ArrayForEach(x, added) {
        const cJSON *idj = cJSON_GetObjectItemCaseSensitive(x, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(x, "content");
        if (!cJSON_IsNumber(idj) || idj->valuedouble < 0 || idj->valuedouble > 16777216)
            return ds_err("%s: added_tokens[%d].id: missing or out of range", name, i);
        if (!cJSON_IsString(c) || !c->valuestring[0]) return ds_err("%s: added_tokens[%d].content: missing or empty", name, i);
        if (!utf8_ok(c->valuestring))
            return ds_err("%s: added_tokens[%d].content %s: not valid UTF-8", name, i, ds_quote(c->valuestring));
        if ((int64_t)idj->valuedouble > maxid) maxid = (int64_t)idj->valuedouble;
        i++;
    }
    ensure_ids(t, maxid + 1);
    t->nvocab = nv;
    ds_tok_strmap_init(&t->vocab, (uint64_t)(nv + na));
    ds_tok_strmap_init(&t->vbytes, (uint64_t)nv);
    cJSON_ArrayForEach(x, vocab) {
        int32_t id = (int32_t)x->valuedouble;
        set_token(t, id, x->string, strlen(x->string));
    }
    /* the maps point into t->mtok / t->mbytes, which stay fixed from here on */
    cJSON_ArrayForEach(x, vocab) {
        int32_t id = (int32_t)x->valuedouble;
        if (strcmp(t->tok[id], x->string) || t->mtok[id]) continue; /* two strings for one id: the later wins */
        t->mtok[id] = ds_strdup(t->tok[id]);
        t->mbytes[id] = ds_malloc(t->tblen[id] + 1);
        memcpy(t->mbytes[id], t->tbytes[id], t->tblen[id] + 1);
        t->mblen[id] = t->tblen[id];
        ds_tok_strmap_put(&t->vocab, t->mtok[id], strlen(t->mtok[id]), id);
        ds_tok_strmap_put(&t->vbytes, t->mbytes[id], t->mblen[id], id);
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = t->byte_level ? ds_tok_strmap_get(&t->vbytes, &c, 1) : -1;
        char fb[8];
        snprintf(fb, sizeof fb, "<0x%02X>", b);
        int32_t id = t->bytefb_id[b] = ds_tok_strmap_get(&t->vocab, fb, strlen(fb));
        if (id >= 0 && dec_bytefallback) { /* the ByteFallback decoder turns <0xXX> into the byte */
            t->tbytes[id][0] = c;
            t->tblen[id] = 1;
        }
    }
    t->unk_id = -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) {
        t->model_unk = ds_strdup(unk->valuestring);
        t->unk_id = ds_tok_strmap_get(&t->vocab, unk->valuestring, strlen(unk->valuestring));
        if (t->unk_id < 0) return ds_err("%s: model.unk_token %s is not in the vocab", name, ds_quote(unk->valuestring));
    }

    /* merges: "a b" or ["a", "b"] */
    int64_t nm = merges ? cJSON_GetArraySize(merges) : 0;
    t->merges = ds_malloc((size_t)(nm + 1) * sizeof *t->merges);
    ds_tok_pairmap_init(&t->pairs, (uint64_t)nm);
    char *cat = NULL;
    size_t catcap = 0;
    i = 0;
    if (nm) cJSON_ArrayForEach(x, merges) {
        const char *a, *b;
        size_t al, bl;
        char *sp = NULL;
        if (cJSON_IsString(x)) {
            a = x->valuestring;
            sp = strchr(a, ' ');
            if (!sp || sp == a || !sp[1]) { free(cat); return ds_err("%s: model.merges[%d]: %s is not \"a b\"", name, i, ds_quote(a)); }
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = strlen(b);
        } else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 && cJSON_IsString(cJSON_GetArrayItem(x, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(x, 1))) {
            a = cJSON_GetArrayItem(x, 0)->valuestring;
            b = cJSON_GetArrayItem(x, 1)->valuestring;
            al = strlen(a);
            bl = strlen(b);
        } else {
            free(cat);
            return ds_err("%s: model.merges[%d]: neither \"a b\" nor [\"a\", \"b\"]", name, i);
        }
        if (!ds_utf8_valid((const unsigned char *)a, al, NULL) || !ds_utf8_valid((const unsigned char *)b, bl, NULL)) {
            free(cat);
            return ds_err("%s: model.merges[%d]: %s %s: not valid UTF-8", name, i, ds_quote_n(a, al), ds_quote_n(b, bl));
        }
        int32_t ia = ds_tok_strmap_get(&t->vocab, a, al), ib = ds_tok_strmap_get(&t->vocab, b, bl);
        if (ia < 0 || ib < 0) {
            free(cat);
            return ds_err("%s: model.merges[%d]: unknown token %s", name, i, ia < 0 ? ds_quote_n(a, al) : ds_quote_n(b, bl));
        }
        if (al + bl + 1 > catcap) { catcap = (al + bl) * 2 + 64; cat = ds_realloc(cat, catcap); }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int32_t nid = ds_tok_strmap_get(&t->vocab, cat, al + bl);
        if (nid < 0) {
            ds_err("%s: model.merges[%d]: merged token %s is not in the vocab", name, i, ds_quote_n(cat, al + bl));
            free(cat);
            return -1;
        }
        t->merges[i][0] = ia;
        t->merges[i][1] = ib;
        ds_tok_pairmap_put(&t->pairs, ia, ib, i, nid);
        i++;
    }
    free(cat);
    t->nmerges = nm;

    /* added tokens */
    t->added = ds_calloc((size_t)(na + 1), sizeof *t->added);
    trie_init(&t->trie_raw);
    trie_init(&t->trie_norm);
    i = 0;
    if (na) cJSON_ArrayForEach(x, added) {
        ds_added *a = &t->added[i];
        a->content = ds_strdup(cJSON_GetObjectItemCaseSensitive(x, "content")->valuestring);
        a->len = strlen(a->content);
        a->id = (int32_t)cJSON_GetObjectItemCaseSensitive(x, "id")->valuedouble;
        a->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "special"));
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "rstrip"));
        a->single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "single_word"));
        a->normalized = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "normalized"));
        /* an added token's text decodes as itself (tokenizers: the ByteLevel
         * decoder maps it back only when every char is a mapped byte) */
        set_token(t, a->id, a->content, a->len);
        t->is_special[a->id] = (uint8_t)a->special;
        /* a leading ' ' plus lstrip is fine; chunking must not cut before an lstrip token */
        if (a->lstrip && a->len && is_word_byte((unsigned char)a->content[0])) t->chunk_safe = -1;
        if (memchr(a->content, '\n', a->len)) t->chunk_safe = -1;
        i++;
    }
    t->nadded = na;
    for (int64_t k = 0; k < na; k++) {
        ds_added *a = &t->added[k];
        /* added tokens with normalized=true are matched on normalized text */
        if (a->normalized) { trie_add(&t->trie_norm, a->content, a->len, (int32_t)k); t->has_norm_added = 1; }
        else trie_add(&t->trie_raw, a->content, a->len, (int32_t)k);
        ds_tok_strmap_put(&t->vocab, a->content, a->len, a->id);
    }

    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (parse_post(t, post, "post_processor")) return ds_err_prefix("%s", name);
    t->j_normalizer = json_dup(norm);
    t->j_pretok = json_dup(pre);
    t->j_post = json_dup(post);
    t->j_decoder = json_dup(dec);

    int known = 1;
    for (int s = 0; s < t->nsteps; s++) if (!t->steps[s].known) known = 0;
    t->chunk_safe = t->chunk_safe == 0 && known && t->nsteps > 0;
    return 0;
}

static void guess_bos_eos(ds_tokenizer *t) {
    static const char *bos_names[] = {"<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<s>", "<|endoftext|>", "<|im_start|>"};
    static const char *eos_names[] = {"<｜end▁of▁sentence｜>", "<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>"};
    if (t->bos < 0 && t->has_template && t->npost_pre > 0) t->bos = t->post_pre[0];
    if (t->eos < 0 && t->has_template && t->npost_suf > 0) t->eos = t->post_suf[t->npost_suf - 1];
    for (size_t k = 0; k < sizeof bos_names / sizeof *bos_names && t->bos < 0; k++)
        t->bos = ds_tok_strmap_get(&t->vocab, bos_names[k], strlen(bos_names[k]));
    for (size_t k = 0; k < sizeof eos_names / sizeof *eos_names && t->eos < 0; k++)
        t->eos = ds_tok_strmap_get(&t->vocab, eos_names[k], strlen(eos_names[k]));
}

static ds_tokenizer *tok_new(void) {
    ds_tokenizer *t = ds_calloc(1, sizeof *t);
    t->serial = atomic_fetch_add(&g_serial, 1);
    t->bos = t->eos = -1;
    t->unk_id = -1;
    return t;
}

ds_tokenizer *ds_tokenizer_load_mem(const char *json, size_t len, const char *name) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        ds_err("%s: malformed JSON near byte %zu", name, off);
        return NULL;
    }
    ds_tokenizer *t = tok_new();
    if (load_json(t, root, name)) {
        cJSON_Delete(root);
        ds_tokenizer_free(t);
        return NULL;
    }
    cJSON_Delete(root);
    guess_bos_eos(t);
    return t;
}

ds_tokenizer *ds_tokenizer_load(const char *path) {
    char *file = NULL, *dir = NULL;
    size_t pl = strlen(path);
    struct stat st;
    int is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (!is_dir && (ds_file_exists(path) || (pl > 5 && !strcmp(path + pl - 5, ".json")))) {
        file = ds_strdup(path);
        const char *sl = strrchr(path, '/');
        dir = sl ? ds_strdup(path) : ds_strdup(".");
        if (sl) dir[sl - path] = 0;
    } else {
        file = ds_path_join(path, "tokenizer.json");
        dir = ds_strdup(path);
    }
    size_t n;
    char *text = ds_read_file(file, &n);
    if (!text) { free(file); free(dir); return NULL; }
    ds_tokenizer *t = ds_tokenizer_load_mem(text, n, file);
    free(text);
    if (t) {
        /* tokenizer_config.json (optional): bos/eos and add_bos_token */
        char *cfgp = ds_path_join(dir, "tokenizer_config.json");
        if (ds_file_exists(cfgp)) {
            char *ct = ds_read_file(cfgp, &n);
            cJSON *cfg = ct ? cJSON_ParseWithLength(ct, n) : NULL;
            if (!cfg) {
                ds_err("%s: malformed JSON", cfgp);
                ds_tokenizer_free(t);
                t = NULL;
            } else {
                const char *b = cfg_token(cfg, "bos_token"), *e = cfg_token(cfg, "eos_token");
                int32_t id;
                if (b && (id = ds_tok_strmap_get(&t->vocab, b, strlen(b))) >= 0) t->bos = id;
                if (e && (id = ds_tok_strmap_get(&t->vocab, e, strlen(e))) >= 0) t->eos = id;
                t->add_bos = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token"));
                t->add_eos = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token"));
            }
            cJSON_Delete(cfg);
            free(ct);
        }
        free(cfgp);
    }
    free(file);
    free(dir);
    return t;
}

/* ---- save ----------------------------------------------------------------------------------- */
void ds_tok_write_json(ds_tok_sbuf *b, const char *const *toks, int64_t ntoks,
                       const char *const *ma, const char *const *mb, int64_t nmerges,
                       const ds_added *added, int64_t nadded, const char *normalizer,
                       const char *pretok, const char *post, const char *decoder,
                       const char *unk, int byte_fallback, int ignore_merges) {
    char num[64];
    ds_tok_sbuf_puts(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (int64_t i = 0; i < nadded; i++) {
        const ds_added *a = &added[i];
        snprintf(num, sizeof num, "%s\n    {\"id\": %d, \"content\": ", i ? "," : "", a->id);
        ds_tok_sbuf_puts(b, num);
        ds_tok_sbuf_json_str(b, a->content, a->len);
        snprintf(num, sizeof num, ", \"single_word\": %s, ", a->single_word ? "true" : "false");
        ds_tok_sbuf_puts(b, num);
        snprintf(num, sizeof num, "\"lstrip\": %s, ", a->lstrip ? "true" : "false");
        ds_tok_sbuf_puts(b, num);
        snprintf(num, sizeof num, "\"rstrip\": %s, ", a->rstrip ? "true" : "false");
        ds_tok_sbuf_puts(b, num);
        snprintf(num, sizeof num, "\"normalized\": %s, ", a->normalized ? "true" : "false");
        ds_tok_sbuf_puts(b, num);
        snprintf(num, sizeof num, "\"special\": %s}", a->special ? "true" : "false");
        ds_tok_sbuf_puts(b, num);
    }
    ds_tok_sbuf_puts(b, nadded ? "\n  ],\n" : "],\n");
    ds_tok_sbuf_puts(b, "  \"normalizer\": ");
    ds_tok_sbuf_puts(b, normalizer ? normalizer : "null");
    ds_tok_sbuf_puts(b, ",\n  \"pre_tokenizer\": ");
    ds_tok_sbuf_puts(b, pretok ? pretok : "null");
    ds_tok_sbuf_puts(b, ",\n  \"post_processor\": ");
    ds_tok_sbuf_puts(b, post ? post : "null");
    ds_tok_sbuf_puts(b, ",\n  \"decoder\": ");
    ds_tok_sbuf_puts(b, decoder ? decoder : "null");
    ds_tok_sbuf_puts(b, ",\n  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": ");
    if (unk) ds_tok_sbuf_json_str(b, unk, strlen(unk));
    else ds_tok_sbuf_puts(b, "null");
    ds_tok_sbuf_puts(b, ",\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
                    "    \"fuse_unk\": false,\n    \"byte_fallback\": ");
    ds_tok_sbuf_puts(b, byte_fallback ? "true" : "false");
    ds_tok_sbuf_puts(b, ",\n    \"ignore_merges\": ");
    ds_tok_sbuf_puts(b, ignore_merges ? "true" : "false");
    ds_tok_sbuf_puts(b, ",\n    \"vocab\": {");
    int first = 1;
    for (int64_t i = 0; i < ntoks; i++) {
        if (!toks[i]) continue;
        ds_tok_sbuf_puts(b, first ? "\n      " : ",\n      ");
        first = 0;
        ds_tok_sbuf_json_str(b, toks[i], strlen(toks[i]));
        snprintf(num, sizeof num, ": %lld", (long long)i);
        ds_tok_sbuf_puts(b, num);
    }
    ds_tok_sbuf_puts(b, "\n    },\n    \"merges\": [");
    for (int64_t i = 0; i < nmerges; i++) {
        ds_tok_sbuf_puts(b, i ? ",\n      [" : "\n      [");
        ds_tok_sbuf_json_str(b, ma[i], strlen(ma[i]));
        ds_tok_sbuf_puts(b, ", ");
        ds_tok_sbuf_json_str(b, mb[i], strlen(mb[i]));
        ds_tok_sbuf_puts(b, "]");
    }
    ds_tok_sbuf_puts(b, "\n    ]\n  }\n}\n");
}

int ds_tokenizer_save(const ds_tokenizer *t, const char *path) {
    /* the model vocab only: added tokens that are not in model.vocab stay out */
    const char **ma = ds_malloc((size_t)(t->nmerges + 1) * sizeof *ma);
    const char **mb = ds_malloc((size_t)(t->nmerges + 1) * sizeof *mb);
    for (int64_t i = 0; i < t->nmerges; i++) { ma[i] = t->mtok[t->merges[i][0]]; mb[i] = t->mtok[t->merges[i][1]]; }
    ds_tok_sbuf b = {0};
    const char *const *toks = (const char *const *)t->mtok;
    ds_tok_write_json(&b, toks, t->nids, ma, mb, t->nmerges, t->added, t->nadded, t->j_normalizer, t->j_pretok,
                      t->j_post, t->j_decoder, t->model_unk, t->byte_fallback, t->ignore_merges);
    int rc = ds_write_file_atomic(path, b.p, b.n);
    free(b.p); free(ma); free(mb);
    return rc;
}
