/*
 * bpe_train.c — byte-level BPE training, the algorithm of `tokenizers`'
 * BpeTrainer (models/bpe/trainer.rs; docs/tokenizer-eval-data.md §1.1):
 *   1. pre-tokenize every sequence and count words (OpenMP, per-thread maps)
 *   2. ids: special tokens 0..k-1, then the 256 byte symbols (HF: sorted by the
 *      codepoint of their byte-level char; lex: in byte order)
 *   3. pair counts over all words, with the set of words holding each pair
 *   4. a max-heap of (count, pair, words) with lazy invalidation: a popped
 *      entry whose count is stale is pushed back with the fresh count
 *   5. a merge touches only the words in its set; each change of a
 *      neighbouring pair (Word::merge) is weighted by the word count, and the
 *      new pairs are pushed with the words that gained them
 * Tie-break on equal counts: DS_TIE_HF, the smaller (id_a, id_b) as BpeTrainer;
 * DS_TIE_LEX, the lexicographically greater (bytes_a, bytes_b) as the CS336
 * reference.  Special tokens in the text are cut out before pre-tokenization
 * (BpeTrainer would pre-tokenize them like any text).
 */
#include "tokenizer/tok_internal.h"
#include "base/base.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

static const char *PRETOK_JSON[] = {
    [DS_PRETOK_DEEPSEEK_V3] =
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[一-龥぀-ゟ゠-ヿ]+\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[!\\\"#$%&'()*+,\\\\-./:;<=>?@\\\\[\\\\\\\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\\\p{L}\\\\p{P}\\\\p{S}]?[\\\\p{L}\\\\p{M}]+| ?[\\\\p{P}\\\\p{S}]+[\\r\\n]*|\\\\s*[\\r\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}",
    [DS_PRETOK_GPT2] = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}",
    [DS_PRETOK_LLAMA3] =
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}",
};
static const char *DECODER_JSON = "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}";

/* ---- word counting ----------------------------------------------------------------- */
typedef struct {
    ds_tok_strmap map;      /* word bytes -> index into cnt */
    int64_t *cnt;
    int64_t n, cap;
} wcount;

static void wc_add(void *ctx, const char *s, size_t n) {
    wcount *w = ctx;
    int32_t i = ds_tok_strmap_get(&w->map, s, n);
    if (i >= 0) { w->cnt[i]++; return; }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 1024;
        w->cnt = ds_realloc(w->cnt, (size_t)w->cap * sizeof *w->cnt);
    }
    w->cnt[w->n] = 1;
    ds_tok_strmap_put(&w->map, s, n, (int32_t)w->n);
    w->n++;
}

/* Special tokens to cut out of the text: lengths and possible first bytes. */
typedef struct {
    const char *const *tok;
    size_t len[64];
    int n;
    uint8_t first[256];
} specials_t;

/* A sequence: cut at special tokens, then pre-tokenize each part. */
static int count_seq(const ds_tokenizer *pt, const specials_t *sp, const char *s, size_t n, wcount *w) {
    size_t i = 0, done = 0;
    while (i < n && sp->n) {
        if (!sp->first[(unsigned char)s[i]]) { i++; continue; }
        int hit = 0;
        for (int k = 0; k < sp->n; k++) {
            size_t l = sp->len[k];
            if (l && i + l <= n && !memcmp(s + i, sp->tok[k], l)) {
                if (i > done && ds_pretok_run(pt, s + done, i - done, wc_add, w)) return -1;
                i += l;
                done = i;
                hit = 1;
                break;
            }
        }
        if (!hit) i++;
    }
    if (n > done && ds_pretok_run(pt, s + done, n - done, wc_add, w)) return -1;
    return 0;
}

/* ---- pairs, heap ------------------------------------------------------------------------ */
typedef struct { int32_t *v; int64_t n, cap; } ivec;
static void ivec_push(ivec *a, int32_t x) {
    if (a->n && a->v[a->n - 1] == x) return; /* consecutive duplicates come from one word */
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 4;
        a->v = ds_realloc(a->v, (size_t)a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

typedef struct { int64_t count; int32_t pi; int32_t pos; } hitem; /* pos: index into the pos-list pool */

typedef struct {
    /* tokens */
    char **tb;            /* bytes of each id */
    uint32_t *tl;
    int64_t ntok, tcap;
    ds_tok_strmap tmap;       /* bytes -> id */
    /* pairs */
    ds_tok_pairmap pmap;      /* (a, b) -> pair index (in rank field) */
    int32_t (*pair)[2];
    int64_t *pcount;
    int32_t *newpos;      /* pair -> pos list being filled in this merge, or -1 */
    int64_t npair, pcap;
    /* pos lists */
    ivec *pool;
    int32_t *freel;
    int64_t npool, poolcap, nfree;
    /* heap */
    hitem *h;
    int64_t hn, hcap;
    ds_tie_break tie;
} trainer;

static int32_t pair_index(trainer *T, int32_t a, int32_t b) {
    int32_t r, x;
    if (ds_tok_pairmap_get(&T->pmap, a, b, &r, &x)) return r;
    if (T->npair == T->pcap) {
        T->pcap = T->pcap ? 2 * T->pcap : 1 << 16;
        T->pair = ds_realloc(T->pair, (size_t)T->pcap * sizeof *T->pair);
        T->pcount = ds_realloc(T->pcount, (size_t)T->pcap * sizeof *T->pcount);
        T->newpos = ds_realloc(T->newpos, (size_t)T->pcap * sizeof *T->newpos);
    }
    int32_t i = (int32_t)T->npair++;
    T->pair[i][0] = a;
    T->pair[i][1] = b;
    T->pcount[i] = 0;
    T->newpos[i] = -1;
    ds_tok_pairmap_put(&T->pmap, a, b, i, 0);
    return i;
}

static int32_t pool_new(trainer *T) {
    if (T->nfree) return T->freel[--T->nfree];
    if (T->npool == T->poolcap) {
        T->poolcap = T->poolcap ? 2 * T->poolcap : 1 << 16;
        T->pool = ds_realloc(T->pool, (size_t)T->poolcap * sizeof *T->pool);
        T->freel = ds_realloc(T->freel, (size_t)T->poolcap * sizeof *T->freel);
    }
    T->pool[T->npool] = (ivec){0};
    return (int32_t)T->npool++;
}
static void pool_release(trainer *T, int32_t i) {
    free(T->pool[i].v);
    T->pool[i] = (ivec){0};
    T->freel[T->nfree++] = i;
}

static int bytes_cmp(const char *a, uint32_t al, const char *b, uint32_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}
/* x ranks above y */
static int better(const trainer *T, const hitem *x, const hitem *y) {
    if (x->count != y->count) return x->count > y->count;
    const int32_t *px = T->pair[x->pi], *py = T->pair[y->pi];
    if (T->tie == DS_TIE_HF) return px[0] != py[0] ? px[0] < py[0] : px[1] < py[1];
    int c = bytes_cmp(T->tb[px[0]], T->tl[px[0]], T->tb[py[0]], T->tl[py[0]]);
    if (!c) c = bytes_cmp(T->tb[px[1]], T->tl[px[1]], T->tb[py[1]], T->tl[py[1]]);
    return c > 0;
}
static void heap_push(trainer *T, hitem e) {
    if (T->hn == T->hcap) {
        T->hcap = T->hcap ? 2 * T->hcap : 1 << 16;
        T->h = ds_realloc(T->h, (size_t)T->hcap * sizeof *T->h);
    }
    int64_t i = T->hn++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!better(T, &e, &T->h[p])) break;
        T->h[i] = T->h[p];
        i = p;
    }
    T->h[i] = e;
}
static hitem heap_pop(trainer *T) {
    hitem top = T->h[0], e = T->h[--T->hn];
    int64_t i = 0, n = T->hn;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && better(T, &T->h[c + 1], &T->h[c])) c++;
        if (!better(T, &T->h[c], &e)) break;
        T->h[i] = T->h[c];
        i = c;
    }
    if (n) T->h[i] = e;
    return top;
}

static int32_t add_token(trainer *T, const char *b, size_t n) {
    int32_t id = ds_tok_strmap_get(&T->tmap, b, n);
    if (id >= 0) return id;
    if (T->ntok == T->tcap) {
        T->tcap = T->tcap ? 2 * T->tcap : 1024;
        T->tb = ds_realloc(T->tb, (size_t)T->tcap * sizeof *T->tb);
        T->tl = ds_realloc(T->tl, (size_t)T->tcap * sizeof *T->tl);
    }
    id = (int32_t)T->ntok++;
    T->tb[id] = ds_malloc(n + 1);
    memcpy(T->tb[id], b, n);
    T->tb[id][n] = 0;
    T->tl[id] = (uint32_t)n;
    ds_tok_strmap_put(&T->tmap, T->tb[id], n, id);
    return id;
}

/* one change of Word::merge, weighted by the word count */
typedef struct { int32_t *touched; int64_t nt, cap; } touch_t;
static void change(trainer *T, touch_t *tt, int32_t a, int32_t b, int delta, int64_t cnt, int32_t w) {
    int32_t pi = pair_index(T, a, b);
    T->pcount[pi] += delta * cnt;
    if (delta > 0) {
        if (T->newpos[pi] < 0) {
            T->newpos[pi] = pool_new(T);
            if (tt->nt == tt->cap) {
                tt->cap = tt->cap ? 2 * tt->cap : 1024;
                tt->touched = ds_realloc(tt->touched, (size_t)tt->cap * sizeof *tt->touched);
            }
            tt->touched[tt->nt++] = pi;
        }
        ivec_push(&T->pool[T->newpos[pi]], w);
    }
}

static ds_tokenizer *train_words(const wcount *wc, const ds_bpe_train_opts *o) {
    trainer T = {.tie = o->tie};
    ds_tok_strmap_init(&T.tmap, (uint64_t)o->vocab_size + 512);
    ds_tok_pairmap_init(&T.pmap, 1 << 16);
    /* ids: specials, then the alphabet */
    for (int k = 0; k < o->nspecial; k++) add_token(&T, o->special[k], strlen(o->special[k]));
    int32_t byte_id[256];
    int order[256];
    for (int b = 0; b < 256; b++) order[b] = b;
    if (o->tie == DS_TIE_HF) /* by the codepoint of the mapped char */
        for (int i = 1; i < 256; i++)
            for (int j = i; j > 0 && ds_byte_to_cp((uint8_t)order[j]) < ds_byte_to_cp((uint8_t)order[j - 1]); j--) {
                int x = order[j]; order[j] = order[j - 1]; order[j - 1] = x;
            }
    for (int i = 0; i < 256; i++) {
        char c = (char)order[i];
        byte_id[order[i]] = add_token(&T, &c, 1);
    }
    /* words as symbol ids */
    int64_t nw = wc->n, nsym = 0;
    const ds_tok_strmap *m = &wc->map;
    int64_t *woff = ds_malloc((size_t)(nw + 1) * sizeof *woff), *cnt = ds_malloc((size_t)(nw + 1) * sizeof *cnt);
    int32_t *wlen = ds_malloc((size_t)(nw + 1) * sizeof *wlen);
    for (uint64_t i = 0; i < m->cap; i++) if (m->h[i]) nsym += m->klen[i];
    int32_t *sym = ds_malloc((size_t)(nsym + 1) * sizeof *sym);
    int64_t off = 0, w = 0;
    for (uint64_t i = 0; i < m->cap; i++) {
        if (!m->h[i]) continue;
        woff[w] = off;
        wlen[w] = (int32_t)m->klen[i];
        cnt[w] = wc->cnt[m->val[i]];
        for (uint32_t k = 0; k < m->klen[i]; k++) sym[off++] = byte_id[(unsigned char)m->key[i][k]];
        w++;
    }
    /* initial pair counts and word sets */
    touch_t tt = {0};
    for (w = 0; w < nw; w++) {
        const int32_t *s = sym + woff[w];
        for (int32_t k = 0; k + 1 < wlen[w]; k++) change(&T, &tt, s[k], s[k + 1], 1, cnt[w], (int32_t)w);
    }
    for (int64_t i = 0; i < tt.nt; i++) {
        int32_t pi = tt.touched[i];
        if (T.pcount[pi] > 0) heap_push(&T, (hitem){T.pcount[pi], pi, T.newpos[pi]});
        else pool_release(&T, T.newpos[pi]);
        T.newpos[pi] = -1;
    }
    tt.nt = 0;
    /* merge loop */
    int32_t (*merges)[2] = ds_malloc((size_t)(o->vocab_size + 1) * sizeof *merges);
    int64_t nm = 0;
    char *cat = NULL;
    size_t catcap = 0;
    while (T.ntok < o->vocab_size && T.hn) {
        hitem top = heap_pop(&T);
        if (top.count != T.pcount[top.pi]) {
            top.count = T.pcount[top.pi];
            heap_push(&T, top);
            continue;
        }
        if (top.count < 1 || top.count < o->min_frequency) { pool_release(&T, top.pos); break; }
        int32_t a = T.pair[top.pi][0], b = T.pair[top.pi][1];
        size_t l = T.tl[a] + T.tl[b];
        if (l > catcap) { catcap = 2 * l; cat = ds_realloc(cat, catcap); }
        memcpy(cat, T.tb[a], T.tl[a]);
        memcpy(cat + T.tl[a], T.tb[b], T.tl[b]);
        int32_t nid = add_token(&T, cat, l);
        merges[nm][0] = a;
        merges[nm][1] = b;
        nm++;
        if (nm > o->vocab_size) break; /* only with ids reused over and over */
        /* a copy: change() may grow the pool (this list itself is not written) */
        ivec pos = T.pool[top.pos];
        for (int64_t k = 0; k < pos.n; k++) {
            int32_t wi = pos.v[k];
            int32_t *s = sym + woff[wi];
            int32_t n = wlen[wi];
            int64_t c = cnt[wi];
            for (int32_t i = 0; i < n; i++) {
                if (s[i] != a || i + 1 >= n || s[i + 1] != b) continue;
                if (i > 0) {
                    change(&T, &tt, s[i - 1], a, -1, c, wi);
                    change(&T, &tt, s[i - 1], nid, 1, c, wi);
                }
                s[i] = nid;
                memmove(s + i + 1, s + i + 2, (size_t)(n - i - 2) * sizeof *s);
                n--;
                if (i < n - 1) {
                    change(&T, &tt, b, s[i + 1], -1, c, wi);
                    change(&T, &tt, nid, s[i + 1], 1, c, wi);
                }
            }
            wlen[wi] = n;
        }
        pool_release(&T, top.pos);
        for (int64_t i = 0; i < tt.nt; i++) {
            int32_t pi = tt.touched[i];
            if (T.pcount[pi] > 0) heap_push(&T, (hitem){T.pcount[pi], pi, T.newpos[pi]});
            else pool_release(&T, T.newpos[pi]);
            T.newpos[pi] = -1;
        }
        tt.nt = 0;
        if (o->verbose && nm % 1000 == 0) ds_log(DS_LOG_INFO, "train: %lld merges", (long long)nm);
    }
    /* tokenizer.json text, then load it */
    char **toks = ds_malloc((size_t)T.ntok * sizeof *toks);
    for (int64_t i = 0; i < T.ntok; i++) {
        if (i < o->nspecial) { toks[i] = ds_strdup(T.tb[i]); continue; }
        toks[i] = ds_malloc(2 * T.tl[i] + 1);
        ds_tok_bytes_to_mapped((const unsigned char *)T.tb[i], T.tl[i], toks[i]);
    }
    const char **ma = ds_malloc((size_t)(nm + 1) * sizeof *ma), **mb = ds_malloc((size_t)(nm + 1) * sizeof *mb);
    for (int64_t i = 0; i < nm; i++) { ma[i] = toks[merges[i][0]]; mb[i] = toks[merges[i][1]]; }
    ds_added *added = ds_calloc((size_t)o->nspecial + 1, sizeof *added);
    for (int k = 0; k < o->nspecial; k++)
        added[k] = (ds_added){.content = (char *)o->special[k], .len = strlen(o->special[k]), .id = k, .special = 1};
    ds_tok_sbuf js = {0}, post = {0};
    if (o->bos) {
        /* "<bos> $A" (and "<bos> $A <bos> $B" for pairs), as transformers writes for add_bos_token */
        int32_t bid = 0;
        for (int k = 0; k < o->nspecial; k++)
            if (!strcmp(o->special[k], o->bos)) { bid = k; break; }
        char num[32];
        ds_tok_sbuf_puts(&post, "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":");
        ds_tok_sbuf_json_str(&post, o->bos, strlen(o->bos));
        ds_tok_sbuf_puts(&post, ",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[{\"SpecialToken\":{\"id\":");
        ds_tok_sbuf_json_str(&post, o->bos, strlen(o->bos));
        ds_tok_sbuf_puts(&post, ",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":");
        ds_tok_sbuf_json_str(&post, o->bos, strlen(o->bos));
        ds_tok_sbuf_puts(&post, ",\"type_id\":1}},{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],\"special_tokens\":{");
        ds_tok_sbuf_json_str(&post, o->bos, strlen(o->bos));
        ds_tok_sbuf_puts(&post, ":{\"id\":");
        ds_tok_sbuf_json_str(&post, o->bos, strlen(o->bos));
        snprintf(num, sizeof num, ",\"ids\":[%d],\"tokens\":[", bid);
        ds_tok_sbuf_puts(&post, num);
        ds_tok_sbuf_json_str(&post, o->bos, strlen(o->bos));
        ds_tok_sbuf_puts(&post, "]}}}");
    }
    ds_tok_write_json(&js, (const char *const *)toks, T.ntok, ma, mb, nm, added, o->nspecial, "null",
                      PRETOK_JSON[o->pretok], o->bos ? post.p : "null", DECODER_JSON, NULL, 0, 0);
    free(post.p);
    ds_tokenizer *t = ds_tokenizer_load_mem(js.p, js.n, "trained tokenizer");
    free(js.p);
    free(added); free(ma); free(mb);
    for (int64_t i = 0; i < T.ntok; i++) { free(toks[i]); free(T.tb[i]); }
    free(toks); free(T.tb); free(T.tl);
    free(cat); free(merges); free(tt.touched);
    for (int64_t i = 0; i < T.npool; i++) free(T.pool[i].v);
    free(T.pool); free(T.freel); free(T.h);
    free(T.pair); free(T.pcount); free(T.newpos);
    ds_tok_strmap_free(&T.tmap);
    ds_tok_pairmap_free(&T.pmap);
    free(woff); free(cnt); free(wlen); free(sym);
    return t;
}

static ds_tokenizer *pretok_only(ds_pretok_kind k) {
    ds_tok_sbuf b = {0};
    ds_tok_sbuf_puts(&b, "{\"pre_tokenizer\":");
    ds_tok_sbuf_puts(&b, PRETOK_JSON[k]);
    ds_tok_sbuf_puts(&b, ",\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}");
    ds_tokenizer *t = ds_tokenizer_load_mem(b.p, b.n, "pre-tokenizer");
    free(b.p);
    return t;
}

ds_tokenizer *ds_bpe_train_texts(const char *const *texts, const size_t *lens, int ntexts, const ds_bpe_train_opts *o) {
    if (o->vocab_size < 256 + o->nspecial) {
        ds_err("train: vocab size %lld is smaller than 256 bytes + %d special tokens", (long long)o->vocab_size, o->nspecial);
        return NULL;
    }
    if ((int)o->pretok < 0 || o->pretok > DS_PRETOK_LLAMA3) { ds_err("train: unknown pre-tokenizer %d", (int)o->pretok); return NULL; }
    if (o->nspecial > 64) { ds_err("train: at most 64 special tokens"); return NULL; }
    specials_t sps = {.tok = o->special, .n = o->nspecial};
    for (int k = 0; k < o->nspecial; k++) {
        sps.len[k] = strlen(o->special[k]);
        if (sps.len[k]) sps.first[(unsigned char)o->special[k][0]] = 1;
    }
    ds_tokenizer *pt = pretok_only(o->pretok);
    if (!pt) return NULL;
    double t0 = ds_now();
    /* sequences: lines (with "\n") or whole texts; grouped into chunks for the threads */
    int64_t nseq = 0, cap = 1024;
    const char **sp = ds_malloc((size_t)cap * sizeof *sp);
    size_t *sl = ds_malloc((size_t)cap * sizeof *sl);
    for (int i = 0; i < ntexts; i++) {
        size_t pos = 0;
        while (pos < lens[i]) {
            size_t end = lens[i];
            if (o->split_lines) {
                /* chunk of ~256 KiB ending at a line end: lines are independent */
                size_t want = pos + (1u << 18);
                if (want < lens[i]) {
                    const char *nl = memchr(texts[i] + want, '\n', lens[i] - want);
                    end = nl ? (size_t)(nl - texts[i]) + 1 : lens[i];
                }
            }
            if (nseq == cap) {
                cap *= 2;
                sp = ds_realloc(sp, (size_t)cap * sizeof *sp);
                sl = ds_realloc(sl, (size_t)cap * sizeof *sl);
            }
            sp[nseq] = texts[i] + pos;
            sl[nseq] = end - pos;
            nseq++;
            pos = end;
        }
    }
    int nth = omp_get_max_threads();
    wcount *wcs = ds_calloc((size_t)nth, sizeof *wcs);
    for (int i = 0; i < nth; i++) ds_tok_strmap_init(&wcs[i].map, 1 << 16);
    int fail = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < nseq; i++) {
        wcount *w = &wcs[omp_get_thread_num()];
        if (!o->split_lines) { if (count_seq(pt, &sps, sp[i], sl[i], w)) fail = 1; continue; }
        const char *s = sp[i];
        size_t n = sl[i], p = 0;
        while (p < n && !fail) {
            const char *nl = memchr(s + p, '\n', n - p);
            size_t e = nl ? (size_t)(nl - s) + 1 : n;
            if (count_seq(pt, &sps, s + p, e - p, w)) fail = 1;
            p = e;
        }
    }
    ds_tokenizer *t = NULL;
    if (!fail) {
        /* merge the per-thread counts into the first */
        wcount *w0 = &wcs[0];
        for (int k = 1; k < nth; k++) {
            const ds_tok_strmap *m = &wcs[k].map;
            for (uint64_t i = 0; i < m->cap; i++) {
                if (!m->h[i]) continue;
                int32_t j = ds_tok_strmap_get(&w0->map, m->key[i], m->klen[i]);
                if (j < 0) {
                    wc_add(w0, m->key[i], m->klen[i]);
                    j = (int32_t)w0->n - 1;
                    w0->cnt[j] = 0;
                }
                w0->cnt[j] += wcs[k].cnt[m->val[i]];
            }
        }
        if (o->verbose)
            ds_log(DS_LOG_INFO, "train: %lld distinct words counted in %.2f s", (long long)w0->n, ds_now() - t0);
        if (w0->n == 0) ds_err("train: the input has no text to learn merges from (empty, or only special tokens)");
        else t = train_words(w0, o);
    } else {
        ds_err_prefix("train");
    }
    for (int i = 0; i < nth; i++) { ds_tok_strmap_free(&wcs[i].map); free(wcs[i].cnt); }
    free(wcs); free(sp); free(sl);
    ds_tokenizer_free(pt);
    return t;
}

ds_tokenizer *ds_bpe_train(const char *const *files, int nfiles, const ds_bpe_train_opts *o) {
    if (nfiles <= 0) { ds_err("train: no input files"); return NULL; }
    char **texts = ds_calloc((size_t)nfiles, sizeof *texts);
    size_t *lens = ds_calloc((size_t)nfiles, sizeof *lens);
    ds_tokenizer *t = NULL;
    int i;
    for (i = 0; i < nfiles; i++)
        if (!(texts[i] = ds_read_file(files[i], &lens[i]))) break;
    size_t total = 0;
    for (int k = 0; k < i; k++) total += lens[k];
    if (i == nfiles && total == 0)
        ds_err("%s%s: empty, nothing to train on", files[0], nfiles > 1 ? " and the other input files" : "");
    else if (i == nfiles) t = ds_bpe_train_texts((const char *const *)texts, lens, nfiles, o);
    for (i = 0; i < nfiles; i++) free(texts[i]);
    free(texts);
    free(lens);
    return t;
}
