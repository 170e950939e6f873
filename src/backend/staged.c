/*
 * staged.c — the host-staged ops table (backend/staged.h).
 */
#include "backend/staged.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static ds_devmem g_mem;
static const struct ds_ops *g_dev;      /* every entry but the GEMMs (the same in each precision) */
static const struct ds_ops *g_prec[3];  /* matmul/linear entries per precision */

static void *arena;
static size_t arena_n;
/* The model calls entries from OpenMP loops (experts in parallel): one call
 * at a time owns the arena, from go() to done(). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* One call's operands: host pointer, bytes, copied in and/or out. */
typedef struct {
    const void *h;
    size_t n;
    int in, out;
    void *d;
} slot;
typedef struct {
    slot s[16];
    int ns;
} stage;

/* Adds an operand (or merges it into the slot of the same host pointer);
 * returns its slot index. */
static int add(stage *st, const void *h, size_t n, int in, int out) {
    if (h)
        for (int i = 0; i < st->ns; i++)
            if (st->s[i].h == h) {
                if (n > st->s[i].n) st->s[i].n = n;
                st->s[i].in |= in;
                st->s[i].out |= out;
                return i;
            }
    DS_ASSERT(st->ns < 16);
    st->s[st->ns] = (slot){h, n, in, out, NULL};
    return st->ns++;
}

static size_t up256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Takes the lock, places the operands in the arena and copies the inputs in. */
static void go(stage *st) {
    pthread_mutex_lock(&lock);
    size_t total = 0;
    for (int i = 0; i < st->ns; i++) total += up256(st->s[i].n);
    if (total > arena_n) {
        if (arena) g_mem.free(arena);
        arena_n = total + total / 4;
        arena = g_mem.alloc(arena_n);
        if (!arena) {
            fprintf(stderr, "dsv3: staged ops: cannot allocate %zu device bytes\n", arena_n);
            abort();
        }
    }
    size_t off = 0;
    for (int i = 0; i < st->ns; i++) {
        slot *s = &st->s[i];
        if (!s->h) continue;
        s->d = (char *)arena + off;
        off += up256(s->n);
        if (s->in && s->n) g_mem.copy_h2d(s->d, s->h, s->n);
    }
}

/* Copies the outputs back (each copy_d2h returns with the data on the host)
 * and releases the lock. */
static void done(stage *st) {
    for (int i = 0; i < st->ns; i++)
        if (st->s[i].h && st->s[i].out && st->s[i].n) g_mem.copy_d2h((void *)st->s[i].h, st->s[i].d, st->s[i].n);
    pthread_mutex_unlock(&lock);
}

void ds_staged_release(void) {
    pthread_mutex_lock(&lock);
    if (arena) g_mem.free(arena);
    arena = NULL;
    arena_n = 0;
    pthread_mutex_unlock(&lock);
}

#define F(n) ((size_t)(n) * sizeof(float))
#define I32(n) ((size_t)(n) * sizeof(int32_t))
#define D(i, T) ((T)st.s[i].d)

/* rows of width C at stride ld: the bytes from the first to the last element */
static size_t rows_f(int64_t N, int64_t C, int64_t ld) { return N > 0 && C > 0 ? F((N - 1) * ld + C) : 0; }
static int64_t max_id(const int32_t *ids, int64_t n) {
    int64_t m = -1;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] > m) m = ids[i];
    return m;
}

/* ---- GEMM entries, kept per precision ------------------------------------------ */
typedef void (*mm_fwd_fn)(float *, const float *, const float *, const float *, int64_t, int64_t, int64_t);
typedef void (*mm_bwd_fn)(float *, float *, float *, const float *, const float *, const float *, int64_t, int64_t,
                          int64_t, int);

static void mm_fwd(mm_fwd_fn f, float *out, const float *inp, const float *w, const float *bias, int64_t N, int64_t C,
                   int64_t OC) {
    stage st = {0};
    int o = add(&st, out, F(N * OC), 0, 1), x = add(&st, inp, F(N * C), 1, 0), wi = add(&st, w, F(OC * C), 1, 0);
    int b = add(&st, bias, F(OC), 1, 0);
    go(&st);
    f(D(o, float *), D(x, const float *), D(wi, const float *), D(b, const float *), N, C, OC);
    done(&st);
}
static void mm_bwd(mm_bwd_fn f, float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                   const float *w, int64_t N, int64_t C, int64_t OC, int acc) {
    stage st = {0};
    int dx = add(&st, dinp, F(N * C), acc, 1), dwi = add(&st, dw, F(OC * C), 1, 1), db = add(&st, dbias, F(OC), 1, 1);
    int dy = add(&st, dout, F(N * OC), 1, 0), x = add(&st, inp, F(N * C), 1, 0), wi = add(&st, w, F(OC * C), 1, 0);
    go(&st);
    f(D(dx, float *), D(dwi, float *), D(db, float *), D(dy, const float *), D(x, const float *), D(wi, const float *),
      N, C, OC, acc);
    done(&st);
}

#define GEMM_WRAPPERS(P)                                                                                          \
    static void matmul_forward_##P(float *out, const float *inp, const float *w, const float *bias, int64_t N,    \
                                   int64_t C, int64_t OC) {                                                       \
        mm_fwd(g_prec[P]->matmul_forward, out, inp, w, bias, N, C, OC);                                           \
    }                                                                                                             \
    static void linear_forward_##P(float *out, const float *inp, const float *w, const float *bias, int64_t N,    \
                                   int64_t C, int64_t OC) {                                                       \
        mm_fwd(g_prec[P]->linear_forward, out, inp, w, bias, N, C, OC);                                           \
    }                                                                                                             \
    static void matmul_backward_##P(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,    \
                                    const float *w, int64_t N, int64_t C, int64_t OC, int acc) {                  \
        mm_bwd(g_prec[P]->matmul_backward, dinp, dw, dbias, dout, inp, w, N, C, OC, acc);                         \
    }                                                                                                             \
    static void linear_backward_##P(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,    \
                                    const float *w, int64_t N, int64_t C, int64_t OC, int acc) {                  \
        mm_bwd(g_prec[P]->linear_backward, dinp, dw, dbias, dout, inp, w, N, C, OC, acc);                         \
    }
GEMM_WRAPPERS(0)
GEMM_WRAPPERS(1)
GEMM_WRAPPERS(2)

/* ---- forward --------------------------------------------------------------------- */
static void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int64_t N, int64_t C,
                            int64_t ld_out, int64_t ld_in, float eps) {
    stage st = {0};
    int o = add(&st, out, rows_f(N, C, ld_out), ld_out != C, 1), r = add(&st, rstd, F(N), 0, 1);
    int x = add(&st, inp, rows_f(N, C, ld_in), 1, 0), wi = add(&st, w, F(C), 1, 0);
    go(&st);
    g_dev->rmsnorm_forward(D(o, float *), D(r, float *), D(x, const float *), D(wi, const float *), N, C, ld_out,
                           ld_in, eps);
    done(&st);
}

static size_t rope_bytes(int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr) {
    int64_t n = B * T * nv;
    return n > 0 && dr > 0 ? F((n - 1) * ld + off + dr) : 0;
}
static void rope_forward(float *x, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                         int64_t ld, int64_t off, int64_t dr, int halves) {
    stage st = {0};
    int xi = add(&st, x, rope_bytes(B, T, nv, ld, off, dr), 1, 1);
    int c = add(&st, cos_t, F(T * (dr / 2)), 1, 0), s = add(&st, sin_t, F(T * (dr / 2)), 1, 0);
    go(&st);
    g_dev->rope_forward(D(xi, float *), D(c, const float *), D(s, const float *), B, T, nv, ld, off, dr, halves);
    done(&st);
}

static void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B,
                              int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale) {
    stage st = {0};
    int64_t n = B * T * NH;
    int o = add(&st, out, F(n * DV), 0, 1), l = add(&st, lse, F(n), 0, 1);
    int qi = add(&st, q, F(n * DQ), 1, 0), ki = add(&st, k, F(n * DQ), 1, 0), vi = add(&st, v, F(n * DV), 1, 0);
    go(&st);
    g_dev->attention_forward(D(o, float *), D(l, float *), D(qi, const float *), D(ki, const float *),
                             D(vi, const float *), B, T, NH, DQ, DV, scale);
    done(&st);
}

static void swiglu_forward(float *out, const float *gate, const float *up, int64_t N, int64_t I) {
    stage st = {0};
    int o = add(&st, out, F(N * I), 0, 1), g = add(&st, gate, F(N * I), 1, 0), u = add(&st, up, F(N * I), 1, 0);
    go(&st);
    g_dev->swiglu_forward(D(o, float *), D(g, const float *), D(u, const float *), N, I);
    done(&st);
}

static void embedding_forward(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C) {
    stage st = {0};
    int o = add(&st, out, F(BT * C), 0, 1), i = add(&st, ids, I32(BT), 1, 0);
    int w = add(&st, wte, F((max_id(ids, BT) + 1) * C), 1, 0);
    go(&st);
    g_dev->embedding_forward(D(o, float *), D(i, const int32_t *), D(w, const float *), BT, C);
    done(&st);
}

static void residual_forward(float *out, const float *a, const float *b, int64_t n) {
    stage st = {0};
    int o = add(&st, out, F(n), 0, 1), ai = add(&st, a, F(n), 1, 0), bi = add(&st, b, F(n), 1, 0);
    go(&st);
    g_dev->residual_forward(D(o, float *), D(ai, const float *), D(bi, const float *), n);
    done(&st);
}

static void moe_route_forward(float *w, int32_t *idx, float *scores, const float *logits, const float *bias,
                              const ds_route_params *p, int64_t N) {
    stage st = {0};
    int wi = add(&st, w, F(N * p->K), 0, 1), ii = add(&st, idx, I32(N * p->K), 0, 1);
    int s = add(&st, scores, F(N * p->E), 0, 1), l = add(&st, logits, F(N * p->E), 1, 0);
    int b = add(&st, bias, F(p->E), 1, 0);
    go(&st);
    g_dev->moe_route_forward(D(wi, float *), D(ii, int32_t *), D(s, float *), D(l, const float *), D(b, const float *),
                             p, N);
    done(&st);
}

static void linear_fp8w_forward(float *out, const float *inp, const ds_fp8w *w, const float *bias, int64_t N,
                                int64_t C, int64_t OC) {
    stage st = {0};
    int64_t nq = w->rows * w->cols, ns = ds_ceil_div(w->rows, 128) * ds_ceil_div(w->cols, 128);
    int o = add(&st, out, F(N * OC), 0, 1), x = add(&st, inp, F(N * C), 1, 0), b = add(&st, bias, F(OC), 1, 0);
    int q = add(&st, w->q, (size_t)nq, 1, 0), s = add(&st, w->scale, F(ns), 1, 0);
    int b16 = add(&st, w->b16, (size_t)nq * sizeof(uint16_t), 1, 0);
    go(&st);
    ds_fp8w dw = *w;
    dw.q = D(q, const uint8_t *);
    dw.scale = D(s, const float *);
    dw.b16 = D(b16, const uint16_t *);
    g_dev->linear_fp8w_forward(D(o, float *), D(x, const float *), &dw, D(b, const float *), N, C, OC);
    done(&st);
}

static void moe_permute(float *xs, const float *x, const int32_t *order, int64_t N, int64_t K, int64_t H) {
    stage st = {0};
    int o = add(&st, xs, F(N * K * H), 0, 1), xi = add(&st, x, F(N * H), 1, 0), r = add(&st, order, I32(N * K), 1, 0);
    go(&st);
    g_dev->moe_permute(D(o, float *), D(xi, const float *), D(r, const int32_t *), N, K, H);
    done(&st);
}

static void moe_combine_forward(float *y, const float *e_out, const float *w, const int32_t *pos, int64_t N, int64_t K,
                                int64_t H) {
    stage st = {0};
    int o = add(&st, y, F(N * H), 0, 1), e = add(&st, e_out, F(N * K * H), 1, 0), wi = add(&st, w, F(N * K), 1, 0);
    int p = add(&st, pos, I32(N * K), 1, 0);
    go(&st);
    g_dev->moe_combine_forward(D(o, float *), D(e, const float *), D(wi, const float *), D(p, const int32_t *), N, K,
                               H);
    done(&st);
}

static void mla_kv_assemble(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh, int64_t dn,
                            int64_t dv, int64_t rkv, int64_t dr) {
    stage st = {0};
    int ki = add(&st, k, F(N * nh * (dn + dr)), 0, 1), vi = add(&st, v, F(N * nh * dv), 0, 1);
    int a = add(&st, kv, F(N * nh * (dn + dv)), 1, 0), b = add(&st, kva, F(N * (rkv + dr)), 1, 0);
    go(&st);
    g_dev->mla_kv_assemble(D(ki, float *), D(vi, float *), D(a, const float *), D(b, const float *), N, nh, dn, dv, rkv,
                           dr);
    done(&st);
}

/* inv_freq is host memory in the contract: passed through */
static void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, float attn_factor, int64_t T, int64_t h2) {
    stage st = {0};
    int c = add(&st, cos_t, F(T * h2), 0, 1), s = add(&st, sin_t, F(T * h2), 0, 1);
    go(&st);
    g_dev->rope_tables(D(c, float *), D(s, float *), inv_freq, attn_factor, T, h2);
    done(&st);
}

/* ---- backward ---------------------------------------------------------------------- */
static void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                             const float *rstd, int64_t N, int64_t C, int64_t ld_din, int64_t ld_dout, int64_t ld_in,
                             float eps) {
    stage st = {0};
    int dx = add(&st, dinp, rows_f(N, C, ld_din), 1, 1), dwi = add(&st, dw, F(C), 1, 1);
    int dy = add(&st, dout, rows_f(N, C, ld_dout), 1, 0), x = add(&st, inp, rows_f(N, C, ld_in), 1, 0);
    int wi = add(&st, w, F(C), 1, 0), r = add(&st, rstd, F(N), 1, 0);
    go(&st);
    g_dev->rmsnorm_backward(D(dx, float *), D(dwi, float *), D(dy, const float *), D(x, const float *),
                            D(wi, const float *), D(r, const float *), N, C, ld_din, ld_dout, ld_in, eps);
    done(&st);
}

static void rope_backward(float *dx, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t nv,
                          int64_t ld, int64_t off, int64_t dr, int halves) {
    stage st = {0};
    int xi = add(&st, dx, rope_bytes(B, T, nv, ld, off, dr), 1, 1);
    int c = add(&st, cos_t, F(T * (dr / 2)), 1, 0), s = add(&st, sin_t, F(T * (dr / 2)), 1, 0);
    go(&st);
    g_dev->rope_backward(D(xi, float *), D(c, const float *), D(s, const float *), B, T, nv, ld, off, dr, halves);
    done(&st);
}

static void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                               const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH,
                               int64_t DQ, int64_t DV, float scale) {
    stage st = {0};
    int64_t n = B * T * NH;
    int a = add(&st, dq, F(n * DQ), 0, 1), b = add(&st, dk, F(n * DQ), 0, 1), c = add(&st, dv, F(n * DV), 0, 1);
    int dy = add(&st, dout, F(n * DV), 1, 0), o = add(&st, out, F(n * DV), 1, 0), l = add(&st, lse, F(n), 1, 0);
    int qi = add(&st, q, F(n * DQ), 1, 0), ki = add(&st, k, F(n * DQ), 1, 0), vi = add(&st, v, F(n * DV), 1, 0);
    go(&st);
    g_dev->attention_backward(D(a, float *), D(b, float *), D(c, float *), D(dy, const float *), D(o, const float *),
                              D(l, const float *), D(qi, const float *), D(ki, const float *), D(vi, const float *), B,
                              T, NH, DQ, DV, scale);
    done(&st);
}

static void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int64_t N,
                            int64_t I) {
    stage st = {0};
    int a = add(&st, dgate, F(N * I), 0, 1), b = add(&st, dup, F(N * I), 0, 1), d = add(&st, dout, F(N * I), 1, 0);
    int g = add(&st, gate, F(N * I), 1, 0), u = add(&st, up, F(N * I), 1, 0);
    go(&st);
    g_dev->swiglu_backward(D(a, float *), D(b, float *), D(d, const float *), D(g, const float *), D(u, const float *),
                           N, I);
    done(&st);
}

static void embedding_backward(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C) {
    stage st = {0};
    int w = add(&st, dwte, F((max_id(ids, BT) + 1) * C), 1, 1), d = add(&st, dout, F(BT * C), 1, 0);
    int i = add(&st, ids, I32(BT), 1, 0);
    go(&st);
    g_dev->embedding_backward(D(w, float *), D(d, const float *), D(i, const int32_t *), BT, C);
    done(&st);
}

static double cross_entropy(float *dlogits, float *losses, int64_t *count, const float *logits, const int32_t *targets,
                            int64_t N, int64_t V, int32_t ignore, float dscale) {
    stage st = {0};
    int dz = add(&st, dlogits, F(N * V), 0, 1), l = add(&st, losses, F(N), 0, 1);
    int z = add(&st, logits, F(N * V), 1, 0), t = add(&st, targets, I32(N), 1, 0);
    go(&st);
    double r = g_dev->cross_entropy(D(dz, float *), D(l, float *), count, D(z, const float *), D(t, const int32_t *), N,
                                    V, ignore, dscale);
    done(&st);
    return r;
}

static void moe_route_backward(float *dlogits, const float *dw, const float *dscores, const float *scores,
                               const int32_t *idx, const ds_route_params *p, int64_t N) {
    stage st = {0};
    int dz = add(&st, dlogits, F(N * p->E), 0, 1), w = add(&st, dw, F(N * p->K), 1, 0);
    int ds = add(&st, dscores, F(N * p->E), 1, 0), s = add(&st, scores, F(N * p->E), 1, 0);
    int i = add(&st, idx, I32(N * p->K), 1, 0);
    go(&st);
    g_dev->moe_route_backward(D(dz, float *), D(w, const float *), D(ds, const float *), D(s, const float *),
                              D(i, const int32_t *), p, N);
    done(&st);
}

static void moe_combine_backward(float *de_out, float *dw, const float *dy, const float *e_out, const float *w,
                                 const int32_t *pos, int64_t N, int64_t K, int64_t H) {
    stage st = {0};
    int de = add(&st, de_out, F(N * K * H), 0, 1), dwi = add(&st, dw, F(N * K), 0, 1);
    int g = add(&st, dy, F(N * H), 1, 0), e = add(&st, e_out, F(N * K * H), 1, 0), wi = add(&st, w, F(N * K), 1, 0);
    int p = add(&st, pos, I32(N * K), 1, 0);
    go(&st);
    g_dev->moe_combine_backward(D(de, float *), D(dwi, float *), D(g, const float *), D(e, const float *),
                                D(wi, const float *), D(p, const int32_t *), N, K, H);
    done(&st);
}

void ds_staged_table(struct ds_ops *out, const struct ds_ops *dev, int precision, const ds_devmem *mem) {
    DS_ASSERT(precision >= 0 && precision <= 2);
    g_mem = *mem;
    g_dev = dev;
    g_prec[precision] = dev;
    memset(out, 0, sizeof *out);
    out->name = dev->name;
#define SET(e) out->e = dev->e ? e : NULL
    SET(rmsnorm_forward);
    SET(rope_forward);
    SET(attention_forward);
    SET(swiglu_forward);
    SET(embedding_forward);
    SET(residual_forward);
    SET(moe_route_forward);
    SET(rmsnorm_backward);
    SET(rope_backward);
    SET(attention_backward);
    SET(swiglu_backward);
    SET(embedding_backward);
    SET(cross_entropy);
    SET(moe_route_backward);
    SET(moe_combine_backward);
    SET(linear_fp8w_forward);
    SET(moe_permute);
    SET(moe_combine_forward);
    SET(mla_kv_assemble);
    SET(rope_tables);
#undef SET
    static mm_fwd_fn const mf[3] = {matmul_forward_0, matmul_forward_1, matmul_forward_2};
    static mm_fwd_fn const lf[3] = {linear_forward_0, linear_forward_1, linear_forward_2};
    static mm_bwd_fn const mb[3] = {matmul_backward_0, matmul_backward_1, matmul_backward_2};
    static mm_bwd_fn const lb[3] = {linear_backward_0, linear_backward_1, linear_backward_2};
    out->matmul_forward = mf[precision];
    out->linear_forward = lf[precision];
    out->matmul_backward = mb[precision];
    out->linear_backward = lb[precision];
    /* every entry left empty (one the device or this file has no wrapper for
     * yet) runs on the CPU: under staging the operands are host memory */
    out->host_visible = 1; /* staged: the callers' buffers are host memory (the one non-pointer slot, set first) */
    _Static_assert(sizeof(struct ds_ops) % sizeof(void *) == 0, "struct ds_ops: pointer-sized slots");
    const void **o = (const void **)out;
    const void *const *c = (const void *const *)&ds_ops_cpu;
    for (size_t i = 1; i < sizeof(struct ds_ops) / sizeof(void *); i++)
        if (!o[i]) o[i] = c[i];
}
