/*
 * fakedev.c — a test device (docs/engine.md §4.1): the cpu kernels over
 * memory the host cannot touch.  Its alloc hands out whole pages that stay
 * PROT_NONE except while one of its entries runs, so code above the
 * backend that reads or writes device memory directly (instead of through
 * copy_d2h / copy_h2d or an entry) faults at once.  host_visible = 0.
 * ds_backend_get("fakedev") returns it (tests only; not a --device choice);
 * FP32 only.  Every entry of struct ds_ops needs its wrapper here: a NULL
 * entry would crash the first test that reaches it.
 *
 * Entries nest (grouped_linear_* call self->linear_* from several threads):
 * a depth count under a mutex unprotects on the way in to depth 1 and
 * protects on the way out of it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/cpu/backward.h"
#include "backend/cpu/balance_loss.h"
#include "backend/ops.h"
#include "base/base.h"

/* Device memory: one reserved span of address space, handed out bottom up
 * (page-rounded, never reused: tests are short), so protecting it all is one
 * mprotect of the used part — a multi-threaded process pays a TLB shootdown
 * per call, and entries are called thousands of times per step. */
#define SPAN ((size_t)1 << 36)
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *base;
static size_t used;
static int depth;
static struct { void *p; size_t n; } *live; /* allocations, for fd_free's size */
static size_t nlive, caplive;

static void enter(void) {
    pthread_mutex_lock(&mu);
    if (depth++ == 0 && used) DS_ASSERT(mprotect(base, used, PROT_READ | PROT_WRITE) == 0);
    pthread_mutex_unlock(&mu);
}

static void leave(void) {
    pthread_mutex_lock(&mu);
    if (--depth == 0 && used) DS_ASSERT(mprotect(base, used, PROT_NONE) == 0);
    pthread_mutex_unlock(&mu);
}

static void *fd_alloc(size_t bytes) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = ((bytes ? bytes : 1) + pg - 1) / pg * pg;
    pthread_mutex_lock(&mu);
    if (!base) {
        void *p = mmap(NULL, SPAN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        base = p == MAP_FAILED ? NULL : p;
    }
    void *p = NULL;
    if (base && n <= SPAN - used) {
        p = base + used;
        used += n;
        if (depth) DS_ASSERT(mprotect(p, n, PROT_READ | PROT_WRITE) == 0);
        if (nlive == caplive) live = ds_realloc(live, (caplive = caplive ? 2 * caplive : 64) * sizeof *live);
        live[nlive].p = p, live[nlive].n = n, nlive++;
    }
    pthread_mutex_unlock(&mu);
    if (!p) ds_err("fakedev: cannot allocate %zu bytes", bytes);
    return p; /* fresh anonymous pages: zero-filled */
}

/* the pages go back to the system; the addresses are not handed out again */
static void fd_free(void *p) {
    pthread_mutex_lock(&mu);
    for (size_t i = 0; p && i < nlive; i++)
        if (live[i].p == p) {
            madvise(p, live[i].n, MADV_DONTNEED);
            live[i] = live[--nlive];
            break;
        }
    pthread_mutex_unlock(&mu);
}

/* p is memory this table handed out */
static int in_span(const void *p) {
    const unsigned char *q = p;
    return base && q >= base && q < base + used;
}
/* the copies check their direction, as a device's copy engine does: h2d
 * from host to this table's memory, d2h back, d2d within it */
static void need_side(const void *p, int dev, const char *what, const char *which) {
    if (in_span(p) == dev) return;
    fprintf(stderr, "fakedev: %s: the %s (%p) is %s memory\n", what, which, p, dev ? "host" : "the table's");
    abort();
}
static void fd_copy(void *dst, const void *src, size_t n) {
    enter();
    if (n && dst != src) memcpy(dst, src, n);
    leave();
}
static void fd_copy_h2d(void *dst, const void *src, size_t n) {
    if (n) need_side(dst, 1, "copy_h2d", "destination"), need_side(src, 0, "copy_h2d", "source");
    fd_copy(dst, src, n);
}
static void fd_copy_d2h(void *dst, const void *src, size_t n) {
    if (n) need_side(dst, 0, "copy_d2h", "destination"), need_side(src, 1, "copy_d2h", "source");
    fd_copy(dst, src, n);
}
static void fd_copy_d2d(void *dst, const void *src, size_t n) {
    if (n) need_side(dst, 1, "copy_d2d", "destination"), need_side(src, 1, "copy_d2d", "source");
    fd_copy(dst, src, n);
}

static void fd_memset(void *dst, int byte, size_t n) {
    enter();
    if (n) memset(dst, byte, n);
    leave();
}

static void fd_sync(void) {}

/* Operands a device kernel reads: every data pointer (float, int, byte,
 * void) an entry is handed must be this table's memory or NULL — a host
 * buffer passed to a real device's kernel is an illegal address there —
 * except the host operands of the entry's contract (ops.h, docs/engine.md
 * §2.5 "what still reads the host"), listed here by entry and operand index.
 * Pointers to structs and to pointer arrays are host by contract and not
 * checked.  FAKEDEV_OPERANDS=report prints each offence once instead of
 * aborting. */
static const struct { const char *entry; unsigned mask; } host_operands[] = {
    {"moe_sort", 1u << 0 | 1u << 1},           /* counts, offsets: written to the host (grouped GEMM sizes) */
    {"bias_update", 1u << 1},                  /* loads */
    {"gather_rows", 1u << 2},                  /* idx, uploaded */
    {"rope_pos_forward", 1u << 3},             /* per-sequence positions */
    {"kv_append", 1u << 10 | 1u << 11},        /* pos_b, row_b */
    {"mla_absorbed_attention", 1u << 15 | 1u << 16},
    {"argmax_rows", 1u << 0},                  /* the ids, copied back */
    {"token_logprobs", 1u << 0 | 1u << 1 | 1u << 3}, /* log-probs and greedy flags back; targets uploaded */
    {"cross_entropy", 1u << 2},                /* the count of counted rows */
    {"rope_tables", 1u << 2},                  /* inverse frequencies (host), tables into device memory */
};
static void operand(const char *entry, int i, const void *p) {
    if (!p || in_span(p)) return;
    for (size_t k = 0; k < sizeof host_operands / sizeof host_operands[0]; k++)
        if (!strcmp(host_operands[k].entry, entry) && (host_operands[k].mask >> i & 1u)) return;
    const char *e = getenv("FAKEDEV_OPERANDS");
    if (e && !strcmp(e, "report")) {
        static char seen[64][48];
        static int nseen;
        char key[48];
        snprintf(key, sizeof key, "%s/%d", entry, i);
        pthread_mutex_lock(&mu);
        int dup = 0;
        for (int k = 0; k < nseen; k++) dup |= !strcmp(seen[k], key);
        if (!dup && nseen < 64) snprintf(seen[nseen++], sizeof seen[0], "%s", key);
        pthread_mutex_unlock(&mu);
        if (!dup) fprintf(stderr, "fakedev: %s: operand %d (%p) is host memory, not the table's\n", entry, i, p);
        return;
    }
    fprintf(stderr, "fakedev: %s: operand %d (%p) is host memory, not the table's (a device kernel cannot read it)\n",
            entry, i, p);
    abort();
}
static void not_operand(const char *entry, int i, const void *p) { (void)entry, (void)i, (void)p; }
#define OPERAND(e, i, x)                                                                                          \
    _Generic((x), float *: operand, const float *: operand, int32_t *: operand, const int32_t *: operand,          \
             int64_t *: operand, const int64_t *: operand, uint8_t *: operand, const uint8_t *: operand,            \
             uint16_t *: operand, const uint16_t *: operand, void *: operand, const void *: operand,                \
             default: not_operand)(e, i, _Generic((x), float: NULL, double: NULL, default: (const void *)(uintptr_t)(x)))
#define OP1(e, i, x) OPERAND(e, i, x);
#define OP2(e, i, x, ...) OPERAND(e, i, x); OP1(e, i + 1, __VA_ARGS__)
#define OP3(e, i, x, ...) OPERAND(e, i, x); OP2(e, i + 1, __VA_ARGS__)
#define OP4(e, i, x, ...) OPERAND(e, i, x); OP3(e, i + 1, __VA_ARGS__)
#define OP5(e, i, x, ...) OPERAND(e, i, x); OP4(e, i + 1, __VA_ARGS__)
#define OP6(e, i, x, ...) OPERAND(e, i, x); OP5(e, i + 1, __VA_ARGS__)
#define OP7(e, i, x, ...) OPERAND(e, i, x); OP6(e, i + 1, __VA_ARGS__)
#define OP8(e, i, x, ...) OPERAND(e, i, x); OP7(e, i + 1, __VA_ARGS__)
#define OP9(e, i, x, ...) OPERAND(e, i, x); OP8(e, i + 1, __VA_ARGS__)
#define OP10(e, i, x, ...) OPERAND(e, i, x); OP9(e, i + 1, __VA_ARGS__)
#define OP11(e, i, x, ...) OPERAND(e, i, x); OP10(e, i + 1, __VA_ARGS__)
#define OP12(e, i, x, ...) OPERAND(e, i, x); OP11(e, i + 1, __VA_ARGS__)
#define OP13(e, i, x, ...) OPERAND(e, i, x); OP12(e, i + 1, __VA_ARGS__)
#define OP14(e, i, x, ...) OPERAND(e, i, x); OP13(e, i + 1, __VA_ARGS__)
#define OP15(e, i, x, ...) OPERAND(e, i, x); OP14(e, i + 1, __VA_ARGS__)
#define OP16(e, i, x, ...) OPERAND(e, i, x); OP15(e, i + 1, __VA_ARGS__)
#define OP17(e, i, x, ...) OPERAND(e, i, x); OP16(e, i + 1, __VA_ARGS__)
#define OP18(e, i, x, ...) OPERAND(e, i, x); OP17(e, i + 1, __VA_ARGS__)
#define OP_N(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18, N, ...) N
#define OPERANDS_(e, ...)                                                                                          \
    OP_N(__VA_ARGS__, OP18, OP17, OP16, OP15, OP14, OP13, OP12, OP11, OP10, OP9, OP8, OP7, OP6, OP5, OP4, OP3, OP2, \
         OP1)(e, 0, __VA_ARGS__)
#define OPERANDS(e, args) EXPAND(OPERANDS_(e, UNPAREN args))
#define EXPAND(x) x
#define UNPAREN(...) __VA_ARGS__

/* a wrapper per entry: V for void entries, R for entries returning a value */
#define V(name, params, args)                                                                                  \
    static void fd_##name params {                                                                             \
        OPERANDS(#name, args)                                                                                  \
        enter();                                                                                               \
        ds_ops_cpu.name args;                                                                                  \
        leave();                                                                                               \
    }
#define R(type, name, params, args)                                                                            \
    static type fd_##name params {                                                                             \
        OPERANDS(#name, args)                                                                                  \
        enter();                                                                                               \
        type r_ = ds_ops_cpu.name args;                                                                        \
        leave();                                                                                               \
        return r_;                                                                                             \
    }

V(matmul_forward, (float *o, const float *i, const float *w, const float *b, int64_t N, int64_t C, int64_t OC),
  (o, i, w, b, N, C, OC))
V(linear_forward, (float *o, const float *i, const float *w, const float *b, int64_t N, int64_t C, int64_t OC),
  (o, i, w, b, N, C, OC))
V(rmsnorm_forward,
  (float *o, float *r, const float *i, const float *w, int64_t N, int64_t C, int64_t lo, int64_t li, float e),
  (o, r, i, w, N, C, lo, li, e))
V(rope_forward,
  (float *x, const float *c, const float *s, int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr,
   int h),
  (x, c, s, B, T, nv, ld, off, dr, h))
V(attention_forward,
  (float *o, float *l, const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t nh, int64_t dq,
   int64_t dv, float sc),
  (o, l, q, k, v, B, T, nh, dq, dv, sc))
V(swiglu_forward, (float *o, const float *g, const float *u, int64_t N, int64_t I), (o, g, u, N, I))
V(embedding_forward, (float *o, const int32_t *ids, const float *w, int64_t N, int64_t C), (o, ids, w, N, C))
V(residual_forward, (float *o, const float *a, const float *b, int64_t n), (o, a, b, n))
V(moe_route_forward,
  (float *w, int32_t *idx, float *s, const float *l, const float *b, const ds_route_params *p, int64_t N),
  (w, idx, s, l, b, p, N))
V(matmul_backward,
  (float *di, float *dw, float *db, const float *d, const float *i, const float *w, int64_t N, int64_t C, int64_t OC,
   int acc),
  (di, dw, db, d, i, w, N, C, OC, acc))
V(linear_backward,
  (float *di, float *dw, float *db, const float *d, const float *i, const float *w, int64_t N, int64_t C, int64_t OC,
   int acc),
  (di, dw, db, d, i, w, N, C, OC, acc))
V(rmsnorm_backward,
  (float *di, float *dw, const float *d, const float *i, const float *w, const float *r, int64_t N, int64_t C,
   int64_t l1, int64_t l2, int64_t l3, float e),
  (di, dw, d, i, w, r, N, C, l1, l2, l3, e))
V(rope_backward,
  (float *x, const float *c, const float *s, int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr,
   int h),
  (x, c, s, B, T, nv, ld, off, dr, h))
V(attention_backward,
  (float *dq, float *dk, float *dv, const float *d, const float *o, const float *l, const float *q, const float *k,
   const float *v, int64_t B, int64_t T, int64_t nh, int64_t DQ, int64_t DV, float sc),
  (dq, dk, dv, d, o, l, q, k, v, B, T, nh, DQ, DV, sc))
V(swiglu_backward, (float *dg, float *du, const float *d, const float *g, const float *u, int64_t N, int64_t I),
  (dg, du, d, g, u, N, I))
V(embedding_backward, (float *dw, const float *d, const int32_t *ids, int64_t N, int64_t C), (dw, d, ids, N, C))
R(double, cross_entropy,
  (float *dl, float *ls, int64_t *cnt, const float *l, const int32_t *t, int64_t N, int64_t V, int32_t ig, float ds),
  (dl, ls, cnt, l, t, N, V, ig, ds))
V(moe_route_backward,
  (float *dl, const float *dw, const float *ds, const float *s, const int32_t *idx, const ds_route_params *p,
   int64_t N),
  (dl, dw, ds, s, idx, p, N))
V(moe_combine_backward,
  (float *de, float *dw, const float *dy, const float *e, const float *w, const int32_t *pos, int64_t N, int64_t K,
   int64_t H),
  (de, dw, dy, e, w, pos, N, K, H))
V(linear_fp8w_forward, (float *o, const float *i, const ds_fp8w *w, const float *b, int64_t N, int64_t C, int64_t OC),
  (o, i, w, b, N, C, OC))
V(moe_permute, (float *xs, const float *x, const int32_t *o, int64_t N, int64_t K, int64_t H), (xs, x, o, N, K, H))
V(moe_combine_forward, (float *y, const float *e, const float *w, const int32_t *pos, int64_t N, int64_t K, int64_t H),
  (y, e, w, pos, N, K, H))
V(mla_kv_assemble,
  (float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh, int64_t dn, int64_t dv, int64_t rkv,
   int64_t dr),
  (k, v, kv, kva, N, nh, dn, dv, rkv, dr))
V(rope_tables, (float *c, float *s, const float *f, float af, int64_t T, int64_t h2), (c, s, f, af, T, h2))
V(moe_sort, (int64_t *c, int64_t *o, int32_t *ord, int32_t *pos, const int32_t *idx, int64_t N, int64_t K, int64_t E),
  (c, o, ord, pos, idx, N, K, E))
V(embedding_bf16_forward, (float *o, const int32_t *ids, const uint16_t *w, int64_t N, int64_t C), (o, ids, w, N, C))
V(act_quant_1x128, (uint8_t *q, float *s, const float *x, int64_t R, int64_t C), (q, s, x, R, C))
V(act_dequant_1x128, (float *x, const uint8_t *q, const float *s, int64_t R, int64_t C), (x, q, s, R, C))
V(mla_kv_assemble_backward,
  (float *dkv, float *dkva, const float *dk, const float *dv, int64_t N, int64_t nh, int64_t dn, int64_t dv_,
   int64_t rkv, int64_t dr),
  (dkv, dkva, dk, dv, N, nh, dn, dv_, rkv, dr))
V(moe_permute_backward, (float *dx, const float *dxs, const int32_t *pos, int64_t N, int64_t K, int64_t H),
  (dx, dxs, pos, N, K, H))
V(balance_loss,
  (float *ds, float *coef, uint8_t *sel, const float *s, const int32_t *idx, int64_t T, int64_t E, int64_t K,
   int64_t G, int64_t M, int nz, double a1, double a2, double a3, double sc, ds_balance_terms *t),
  (ds, coef, sel, s, idx, T, E, K, G, M, nz, a1, a2, a3, sc, t))
R(double, sumsq, (const float *x, int64_t n), (x, n))
V(gather_rows, (float *d, const float *s, const int32_t *idx, int64_t n, int64_t H), (d, s, idx, n, H))
V(cast_f32_bf16, (uint16_t *d, const float *s, int64_t n), (d, s, n))
V(cast_bf16_f32, (float *d, const uint16_t *s, int64_t n), (d, s, n))
V(rope_pos_forward,
  (float *x, const float *c, const float *s, const int64_t *p, int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off,
   int64_t dr, int h),
  (x, c, s, p, B, T, nv, ld, off, dr, h))
V(token_logprobs, (float *lp, uint8_t *g, const float *x, const int32_t *t, int64_t N, int64_t V), (lp, g, x, t, N, V))
/* decode, sampling, optimizer */
V(mla_absorbed_attention,
  (float *att, const float *q, const float *ckv, const float *kpe, const float *kvb, int64_t B, int64_t n, int64_t pos,
   int64_t L, int64_t nh, int64_t dn, int64_t dv, int64_t dr, int64_t rkv, float sc, const int64_t *pb, const int64_t *rb),
  (att, q, ckv, kpe, kvb, B, n, pos, L, nh, dn, dv, dr, rkv, sc, pb, rb))
V(argmax_rows, (int32_t *o, const float *x, int64_t N, int64_t V), (o, x, N, V))
/* the sampler's [dev] operands must be this table's memory (a host buffer
 * passed here would be one a real device cannot reach) */
static void need_dev(const void *p, const char *what) {
    if (!in_span(p)) {
        fprintf(stderr, "fakedev: %s: %p is not device memory\n", what, p);
        abort();
    }
}
static void fd_sample_probs(float *p, int32_t *s, const float *l, int64_t V, double t, int64_t k, double tp) {
    need_dev(p, "sample_probs prob"), need_dev(s, "sample_probs scratch"), need_dev(l, "sample_probs logits");
    enter();
    ds_ops_cpu.sample_probs(p, s, l, V, t, k, tp);
    leave();
}
static int32_t fd_sample_pick(const float *p, int64_t V, double u) {
    need_dev(p, "sample_pick prob");
    enter();
    int32_t r = ds_ops_cpu.sample_pick(p, V, u);
    leave();
    return r;
}
static void fd_logits_adjust(float *x, int64_t V, const int32_t *ids, const float *pre, const float *rep,
                             const float *post, int64_t n) {
    need_dev(x, "logits_adjust logits");
    if (n) { /* the ids and their terms are [host]: the backend uploads them */
        need_side(ids, 0, "logits_adjust", "ids"), need_side(pre, 0, "logits_adjust", "pre");
        need_side(rep, 0, "logits_adjust", "rep"), need_side(post, 0, "logits_adjust", "post");
    }
    enter();
    ds_ops_cpu.logits_adjust(x, V, ids, pre, rep, post, n);
    leave();
}
static void fd_probs_min_p(float *p, int64_t V, double min_p) {
    need_dev(p, "probs_min_p prob");
    enter();
    ds_ops_cpu.probs_min_p(p, V, min_p);
    leave();
}
/* the latent cache too: a host cache beside a device model is one a real device cannot reach */
static void fd_kv_append(float *ckv, float *kpe, const float *c, const float *kva, int64_t B, int64_t n, int64_t pos,
                         int64_t L, int64_t rkv, int64_t dr, const int64_t *pb, const int64_t *rb) {
    need_dev(ckv, "kv_append cache"), need_dev(kpe, "kv_append rope cache");
    enter();
    ds_ops_cpu.kv_append(ckv, kpe, c, kva, B, n, pos, L, rkv, dr, pb, rb);
    leave();
}
V(adamw,
  (float *p, const float *g, void *m, void *v, int bf, const ds_optim_seg *seg, int64_t ns, int64_t t,
   const ds_adamw_hparams *h, float gs),
  (p, g, m, v, bf, seg, ns, t, h, gs))
V(bias_update, (float *b, const int64_t *load, int64_t E, float g), (b, load, E, g))
static size_t fd_linear_workspace(int64_t N, int64_t C, int64_t OC) { return ds_ops_cpu.linear_workspace(N, C, OC); }

/* the grouped entries run the cpu loop over experts with `self` (the calls
 * nest: each expert's linear entry enters again) */
static void fd_grouped_linear_forward(const struct ds_ops *self, float *out, const float *inp, const float *const *w,
                                      const ds_fp8w *const *w8, const int64_t *cnt, const int64_t *off, int64_t E,
                                      int64_t C, int64_t OC) {
    operand("grouped_linear_forward", 1, out), operand("grouped_linear_forward", 2, inp);
    enter();
    ds_ops_cpu.grouped_linear_forward(self, out, inp, w, w8, cnt, off, E, C, OC);
    leave();
}

static void fd_grouped_linear_backward(const struct ds_ops *self, float *dinp, float *const *dw, const float *dout,
                                       const float *inp, const float *const *w, const int64_t *cnt, const int64_t *off,
                                       int64_t E, int64_t C, int64_t OC, int acc) {
    operand("grouped_linear_backward", 1, dinp), operand("grouped_linear_backward", 3, dout);
    operand("grouped_linear_backward", 4, inp);
    enter();
    ds_ops_cpu.grouped_linear_backward(self, dinp, dw, dout, inp, w, cnt, off, E, C, OC, acc);
    leave();
}

#define E_(name) .name = fd_##name
const struct ds_ops ds_ops_fakedev = {
    .name = "fakedev",
    E_(matmul_forward), E_(rmsnorm_forward), E_(rope_forward), E_(attention_forward), E_(swiglu_forward),
    E_(embedding_forward), E_(residual_forward), E_(moe_route_forward), E_(matmul_backward), E_(rmsnorm_backward),
    E_(rope_backward), E_(attention_backward), E_(swiglu_backward), E_(embedding_backward), E_(cross_entropy),
    E_(moe_route_backward), E_(moe_combine_backward), E_(linear_forward), E_(linear_backward),
    E_(linear_fp8w_forward), E_(moe_permute), E_(moe_combine_forward), E_(mla_kv_assemble), E_(rope_tables),
    .host_visible = 0,
    .alloc = fd_alloc, .free = fd_free, .memset = fd_memset, .copy_h2d = fd_copy_h2d, .copy_d2h = fd_copy_d2h,
    .copy_d2d = fd_copy_d2d, .sync = fd_sync,
    E_(moe_sort), E_(grouped_linear_forward), E_(embedding_bf16_forward), E_(act_quant_1x128),
    E_(act_dequant_1x128), E_(grouped_linear_backward), E_(mla_kv_assemble_backward), E_(moe_permute_backward),
    E_(balance_loss), E_(sumsq),
    /* expert parallelism (dist/ep.c) */
    E_(gather_rows), E_(cast_f32_bf16), E_(cast_bf16_f32),
    E_(rope_pos_forward),
    /* evaluation scoring */
    E_(token_logprobs),
    /* decode, sampling, optimizer */
    E_(kv_append), E_(mla_absorbed_attention), E_(argmax_rows), E_(sample_probs), E_(sample_pick), E_(logits_adjust), E_(probs_min_p), E_(adamw),
    E_(bias_update), E_(linear_workspace),
};
