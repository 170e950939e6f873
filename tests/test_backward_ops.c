/*
 * test_backward_ops.c — every backward op against finite differences, and
 * every fast backward kernel against its scalar reference.
 *
 * Oracle: each test has its own double-precision forward of the op (plain
 * loops written from the equation in backend/cpu/backward.h), a random
 * projection L = Σ r ⊙ out, and central differences of L in double with
 * h = 1e-6: truncation error O(h²) ~ 1e-12, rounding ~1e-16/h ~ 1e-10, so
 * the FD gradient is exact to ~1e-9 relative.  The kernels under test run in
 * FP32 on the same inputs rounded to float; their error is FP32 rounding
 * (2^-24 ≈ 6e-8 per operation) grown by the reduction lengths (≤ ~100 here),
 * hence the tolerance max|a−b| / max|fd| < 1e-5 per gradient tensor.
 * Fast vs reference: same inputs, same 1e-5 (different summation orders).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/cpu/backward.h"
#include "test.h"

#define FD_TOL 1e-5
#define FAST_TOL 1e-5
#define DS_CE_IGNORE (-100)

typedef void (*fwd_fn)(double *out, const double *in, const void *ctx);

static ds_rng rng;

static void fill(float *f, double *d, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) {
        f[i] = scale * ds_rng_normal(&rng);
        if (d) d[i] = f[i];
    }
}

/* grad[i] = dL/din[i], L = Σ_j r_j out_j, central differences in double. */
static void fd(double *grad, fwd_fn f, const void *ctx, double *in, int64_t nin, const double *r, int64_t nout) {
    double *out = ds_malloc((size_t)nout * sizeof(double));
    const double h = 1e-6;
    for (int64_t i = 0; i < nin; i++) {
        double x0 = in[i], lp = 0, lm = 0;
        in[i] = x0 + h;
        f(out, in, ctx);
        for (int64_t j = 0; j < nout; j++) lp += r[j] * out[j];
        in[i] = x0 - h;
        f(out, in, ctx);
        for (int64_t j = 0; j < nout; j++) lm += r[j] * out[j];
        in[i] = x0;
        grad[i] = (lp - lm) / (2 * h);
    }
    free(out);
}

static double rel_err_fd(const float *got, const double *ref, int64_t n) {
    double mx = 0, md = 0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(ref[i]));
        md = fmax(md, fabs((double)got[i] - ref[i]));
    }
    return md / fmax(mx, 1e-30);
}

#define CHECK_FD(name, got, ref, n)                                                             \
    do {                                                                                        \
        double e_ = rel_err_fd((got), (ref), (n));                                              \
        CHECK_MSG(e_ < FD_TOL, "%s: rel err vs finite differences %.3g", (name), e_);           \
    } while (0)
#define CHECK_FAST(name, fast, ref, n)                                                          \
    do {                                                                                        \
        double e_ = ds_test_max_rel((fast), (ref), (size_t)(n), 1e-30);                          \
        CHECK_MSG(e_ < FAST_TOL, "%s: fast vs reference rel err %.3g", (name), e_);             \
    } while (0)

static float *fa(int64_t n) { return ds_calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static double *da(int64_t n) { return ds_calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

/* ---- matmul ------------------------------------------------------------------------ */
typedef struct { int64_t N, C, OC; } mm_ctx;
static void mm_fwd(double *out, const double *in, const void *vc) {
    const mm_ctx *c = vc;
    const double *x = in, *w = in + c->N * c->C, *b = w + c->OC * c->C;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t o = 0; o < c->OC; o++) {
            double s = b[o];
            for (int64_t k = 0; k < c->C; k++) s += x[n * c->C + k] * w[o * c->C + k];
            out[n * c->OC + o] = s;
        }
}
TEST(matmul_backward_fd_and_fast) {
    ds_rng_seed(&rng, 11);
    mm_ctx c = {37, 29, 23};
    int64_t nx = c.N * c.C, nw = c.OC * c.C, nin = nx + nw + c.OC, nout = c.N * c.OC;
    float *in = fa(nin), *dout = fa(nout);
    double *din = da(nin), *r = da(nout), *g = da(nin);
    fill(in, din, nin, 1.0f);
    fill(dout, r, nout, 1.0f);
    fd(g, mm_fwd, &c, din, nin, r, nout);
    float *dx = fa(nx), *dw = fa(nw), *db = fa(c.OC), *dx2 = fa(nx), *dw2 = fa(nw), *db2 = fa(c.OC);
    ds_matmul_backward_ref(dx, dw, db, dout, in, in + nx, c.N, c.C, c.OC, 0);
    CHECK_FD("matmul dinp", dx, g, nx);
    CHECK_FD("matmul dweight", dw, g + nx, nw);
    CHECK_FD("matmul dbias", db, g + nx + nw, c.OC);
    ds_matmul_backward(dx2, dw2, db2, dout, in, in + nx, c.N, c.C, c.OC, 0);
    CHECK_FAST("matmul dinp", dx2, dx, nx);
    CHECK_FAST("matmul dweight", dw2, dw, nw);
    CHECK_FAST("matmul dbias", db2, db, c.OC);
    /* accumulation: acc = 1 adds dinp; dweight/dbias always add */
    ds_matmul_backward(dx2, dw2, db2, dout, in, in + nx, c.N, c.C, c.OC, 1);
    for (int64_t i = 0; i < nx; i++) dx[i] *= 2;
    for (int64_t i = 0; i < nw; i++) dw[i] *= 2;
    CHECK_FAST("matmul dinp acc", dx2, dx, nx);
    CHECK_FAST("matmul dweight acc", dw2, dw, nw);
    /* a larger shape that takes the threaded BLAS path */
    mm_ctx b = {300, 128, 96};
    float *X = fa(b.N * b.C), *W = fa(b.OC * b.C), *DY = fa(b.N * b.OC);
    fill(X, NULL, b.N * b.C, 1.0f);
    fill(W, NULL, b.OC * b.C, 1.0f);
    fill(DY, NULL, b.N * b.OC, 1.0f);
    float *a1 = fa(b.N * b.C), *a2 = fa(b.N * b.C), *w1 = fa(b.OC * b.C), *w2 = fa(b.OC * b.C);
    ds_matmul_backward_ref(a1, w1, NULL, DY, X, W, b.N, b.C, b.OC, 0);
    ds_matmul_backward(a2, w2, NULL, DY, X, W, b.N, b.C, b.OC, 0);
    CHECK_FAST("matmul large dinp", a2, a1, b.N * b.C);
    CHECK_FAST("matmul large dweight", w2, w1, b.OC * b.C);
    /* wider than tall (C > N): the input gradient in column slabs of 16s
     * (112 + 88 here), stored and added (acc = 1) */
    mm_ctx h = {64, 200, 96};
    float *HX = fa(h.N * h.C), *HW = fa(h.OC * h.C), *HDY = fa(h.N * h.OC);
    fill(HX, NULL, h.N * h.C, 1.0f);
    fill(HW, NULL, h.OC * h.C, 1.0f);
    fill(HDY, NULL, h.N * h.OC, 1.0f);
    float *h1 = fa(h.N * h.C), *h2 = fa(h.N * h.C), *hw = fa(h.OC * h.C);
    for (int64_t i = 0; i < h.N * h.C; i++) h1[i] = h2[i] = 0.5f * (float)(i % 3);
    ds_matmul_backward_ref(h1, hw, NULL, HDY, HX, HW, h.N, h.C, h.OC, 1);
    ds_matmul_backward(h2, NULL, NULL, HDY, HX, HW, h.N, h.C, h.OC, 1);
    CHECK_FAST("matmul wide dinp acc", h2, h1, h.N * h.C);
    ds_matmul_backward_ref(h1, hw, NULL, HDY, HX, HW, h.N, h.C, h.OC, 0);
    ds_matmul_backward(h2, NULL, NULL, HDY, HX, HW, h.N, h.C, h.OC, 0);
    CHECK_FAST("matmul wide dinp", h2, h1, h.N * h.C);
    free(HX); free(HW); free(HDY); free(h1); free(h2); free(hw);
    free(in); free(dout); free(din); free(r); free(g); free(dx); free(dw); free(db); free(dx2); free(dw2); free(db2);
    free(X); free(W); free(DY); free(a1); free(a2); free(w1); free(w2);
}

/* ---- rmsnorm ----------------------------------------------------------------------- */
typedef struct { int64_t N, C; double eps; } rn_ctx;
static void rn_fwd(double *out, const double *in, const void *vc) {
    const rn_ctx *c = vc;
    const double *x = in, *w = in + c->N * c->C;
    for (int64_t n = 0; n < c->N; n++) {
        double ss = 0;
        for (int64_t k = 0; k < c->C; k++) ss += x[n * c->C + k] * x[n * c->C + k];
        double rs = 1.0 / sqrt(ss / c->C + c->eps);
        for (int64_t k = 0; k < c->C; k++) out[n * c->C + k] = w[k] * x[n * c->C + k] * rs;
    }
}
TEST(rmsnorm_backward_fd_and_fast) {
    ds_rng_seed(&rng, 12);
    rn_ctx c = {19, 48, 1e-5};
    int64_t nx = c.N * c.C, nin = nx + c.C;
    float *in = fa(nin), *dout = fa(nx), *rstd = fa(c.N), *y = fa(nx);
    double *din = da(nin), *r = da(nx), *g = da(nin);
    fill(in, din, nin, 1.0f);
    fill(dout, r, nx, 1.0f);
    fd(g, rn_fwd, &c, din, nin, r, nx);
    ds_rmsnorm_forward_ref(y, rstd, in, in + nx, c.N, c.C, c.C, c.C, (float)c.eps);
    float *dx = fa(nx), *dw = fa(c.C), *dx2 = fa(nx), *dw2 = fa(c.C), *dx3 = fa(nx), *dw3 = fa(c.C);
    ds_rmsnorm_backward_ref(dx, dw, dout, in, in + nx, rstd, c.N, c.C, c.C, c.C, c.C, (float)c.eps);
    CHECK_FD("rmsnorm dinp", dx, g, nx);
    CHECK_FD("rmsnorm dweight", dw, g + nx, c.C);
    ds_rmsnorm_backward(dx2, dw2, dout, in, in + nx, rstd, c.N, c.C, c.C, c.C, c.C, (float)c.eps);
    CHECK_FAST("rmsnorm dinp", dx2, dx, nx);
    CHECK_FAST("rmsnorm dweight", dw2, dw, c.C);
    /* rstd recomputed (NULL) and strided rows: the same numbers */
    float *dout_s = fa(c.N * 2 * c.C), *in_s = fa(c.N * 3 * c.C), *dx_s = fa(c.N * 2 * c.C);
    for (int64_t n = 0; n < c.N; n++) {
        memcpy(dout_s + n * 2 * c.C + c.C, dout + n * c.C, (size_t)c.C * sizeof(float));
        memcpy(in_s + n * 3 * c.C, in + n * c.C, (size_t)c.C * sizeof(float));
    }
    ds_rmsnorm_backward(dx_s, dw3, dout_s + c.C, in_s, in + nx, NULL, c.N, c.C, 2 * c.C, 2 * c.C, 3 * c.C,
                        (float)c.eps);
    for (int64_t n = 0; n < c.N; n++) memcpy(dx3 + n * c.C, dx_s + n * 2 * c.C, (size_t)c.C * sizeof(float));
    CHECK_FAST("rmsnorm strided, rstd recomputed", dx3, dx, nx);
    CHECK_FAST("rmsnorm strided dweight", dw3, dw, c.C);
    free(in); free(dout); free(rstd); free(y); free(din); free(r); free(g); free(dx); free(dw); free(dx2); free(dw2);
    free(dx3); free(dw3); free(dout_s); free(in_s); free(dx_s);
}

/* ---- rope ---------------------------------------------------------------------------- */
typedef struct { int64_t B, T, nv, ld, off, dr; int halves; const float *cs, *sn; } rp_ctx;
static void rp_fwd(double *out, const double *in, const void *vc) {
    const rp_ctx *c = vc;
    int64_t h = c->dr / 2, n = c->B * c->T * c->nv * c->ld;
    memcpy(out, in, (size_t)n * sizeof(double));
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < c->T; t++)
            for (int64_t v = 0; v < c->nv; v++) {
                double *x = out + ((b * c->T + t) * c->nv + v) * c->ld + c->off;
                for (int64_t i = 0; i < h; i++) {
                    int64_t i0 = c->halves ? i : 2 * i, i1 = c->halves ? i + h : 2 * i + 1;
                    double cc = c->cs[t * h + i], ss = c->sn[t * h + i], x0 = x[i0], x1 = x[i1];
                    x[i0] = cc * x0 - ss * x1;
                    x[i1] = ss * x0 + cc * x1;
                }
            }
}
TEST(rope_backward_fd_and_fast) {
    for (int halves = 0; halves <= 1; halves++) {
        ds_rng_seed(&rng, 13 + halves);
        rp_ctx c = {2, 7, 3, 12, 4, 8, halves, NULL, NULL};
        int64_t h = c.dr / 2, n = c.B * c.T * c.nv * c.ld;
        float *cs = fa(c.T * h), *sn = fa(c.T * h);
        for (int64_t t = 0; t < c.T; t++)
            for (int64_t i = 0; i < h; i++) {
                double a = t * pow(10000.0, -2.0 * i / c.dr);
                cs[t * h + i] = (float)(1.1 * cos(a)); /* attention_factor 1.1 folded in */
                sn[t * h + i] = (float)(1.1 * sin(a));
            }
        c.cs = cs, c.sn = sn;
        float *dout = fa(n), *dx = fa(n), *dx2 = fa(n);
        double *x = da(n), *r = da(n), *g = da(n);
        fill(dout, r, n, 1.0f);
        for (int64_t i = 0; i < n; i++) x[i] = ds_rng_normal(&rng);
        fd(g, rp_fwd, &c, x, n, r, n);
        memcpy(dx, dout, (size_t)n * sizeof(float));
        memcpy(dx2, dout, (size_t)n * sizeof(float));
        ds_rope_backward_ref(dx, cs, sn, c.B, c.T, c.nv, c.ld, c.off, c.dr, halves);
        CHECK_FD(halves ? "rope (halves)" : "rope (interleaved)", dx, g, n);
        ds_rope_backward(dx2, cs, sn, c.B, c.T, c.nv, c.ld, c.off, c.dr, halves);
        CHECK_FAST("rope", dx2, dx, n);
        free(cs); free(sn); free(dout); free(dx); free(dx2); free(x); free(r); free(g);
    }
}

/* ---- attention -------------------------------------------------------------------------- */
typedef struct { int64_t B, T, NH, DQ, DV; double scale; } at_ctx;
static void at_fwd(double *out, const double *in, const void *vc) {
    const at_ctx *c = vc;
    const int64_t nq = c->B * c->T * c->NH * c->DQ;
    const double *q = in, *k = in + nq, *v = in + 2 * nq;
    double p[64];
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->NH; h++)
            for (int64_t i = 0; i < c->T; i++) {
                double mx = -1e300, s = 0;
                for (int64_t j = 0; j <= i; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < c->DQ; e++)
                        d += q[((b * c->T + i) * c->NH + h) * c->DQ + e] * k[((b * c->T + j) * c->NH + h) * c->DQ + e];
                    p[j] = c->scale * d;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j <= i; j++) s += (p[j] = exp(p[j] - mx));
                for (int64_t e = 0; e < c->DV; e++) {
                    double o = 0;
                    for (int64_t j = 0; j <= i; j++) o += p[j] / s * v[((b * c->T + j) * c->NH + h) * c->DV + e];
                    out[((b * c->T + i) * c->NH + h) * c->DV + e] = o;
                }
            }
}
TEST(attention_backward_fd_and_fast) {
    ds_rng_seed(&rng, 14);
    at_ctx c = {2, 9, 3, 6, 5, 0.4};
    int64_t nq = c.B * c.T * c.NH * c.DQ, nv = c.B * c.T * c.NH * c.DV, nin = 2 * nq + nv;
    float *in = fa(nin), *dout = fa(nv), *out = fa(nv), *lse = fa(c.B * c.NH * c.T);
    double *din = da(nin), *r = da(nv), *g = da(nin);
    fill(in, din, nin, 1.0f);
    fill(dout, r, nv, 1.0f);
    fd(g, at_fwd, &c, din, nin, r, nv);
    ds_attention_forward_ref(out, lse, in, in + nq, in + 2 * nq, c.B, c.T, c.NH, c.DQ, c.DV, (float)c.scale);
    float *dq = fa(nq), *dk = fa(nq), *dv = fa(nv), *dq2 = fa(nq), *dk2 = fa(nq), *dv2 = fa(nv);
    ds_attention_backward_ref(dq, dk, dv, dout, out, lse, in, in + nq, in + 2 * nq, c.B, c.T, c.NH, c.DQ, c.DV,
                              (float)c.scale);
    CHECK_FD("attention dq", dq, g, nq);
    CHECK_FD("attention dk", dk, g + nq, nq);
    CHECK_FD("attention dv", dv, g + 2 * nq, nv);
    ds_attention_backward(dq2, dk2, dv2, dout, out, lse, in, in + nq, in + 2 * nq, c.B, c.T, c.NH, c.DQ, c.DV,
                          (float)c.scale);
    CHECK_FAST("attention dq", dq2, dq, nq);
    CHECK_FAST("attention dk", dk2, dk, nq);
    CHECK_FAST("attention dv", dv2, dv, nv);
    free(in); free(dout); free(out); free(lse); free(din); free(r); free(g);
    free(dq); free(dk); free(dv); free(dq2); free(dk2); free(dv2);
}

/* ---- swiglu ----------------------------------------------------------------------------- */
typedef struct { int64_t n; } sw_ctx;
static void sw_fwd(double *out, const double *in, const void *vc) {
    const sw_ctx *c = vc;
    for (int64_t i = 0; i < c->n; i++) out[i] = in[i] / (1 + exp(-in[i])) * in[c->n + i];
}
TEST(swiglu_backward_fd_and_fast) {
    ds_rng_seed(&rng, 15);
    sw_ctx c = {7 * 13};
    float *in = fa(2 * c.n), *dout = fa(c.n), *dg = fa(c.n), *du = fa(c.n), *dg2 = fa(c.n), *du2 = fa(c.n);
    double *din = da(2 * c.n), *r = da(c.n), *g = da(2 * c.n);
    fill(in, din, 2 * c.n, 2.0f);
    fill(dout, r, c.n, 1.0f);
    fd(g, sw_fwd, &c, din, 2 * c.n, r, c.n);
    ds_swiglu_backward_ref(dg, du, dout, in, in + c.n, 7, 13);
    CHECK_FD("swiglu dgate", dg, g, c.n);
    CHECK_FD("swiglu dup", du, g + c.n, c.n);
    ds_swiglu_backward(dg2, du2, dout, in, in + c.n, 7, 13);
    CHECK_FAST("swiglu dgate", dg2, dg, c.n);
    CHECK_FAST("swiglu dup", du2, du, c.n);
    free(in); free(dout); free(dg); free(du); free(dg2); free(du2); free(din); free(r); free(g);
}

/* ---- embedding ----------------------------------------------------------------------------- */
typedef struct { int64_t BT, C; const int32_t *ids; } em_ctx;
static void em_fwd(double *out, const double *in, const void *vc) {
    const em_ctx *c = vc;
    for (int64_t n = 0; n < c->BT; n++)
        for (int64_t k = 0; k < c->C; k++) out[n * c->C + k] = in[(int64_t)c->ids[n] * c->C + k];
}
TEST(embedding_backward_fd_and_fast) {
    ds_rng_seed(&rng, 16);
    const int64_t V = 11, C = 70, BT = 25; /* repeated ids: gradients add */
    int32_t ids[25];
    for (int i = 0; i < BT; i++) ids[i] = (int32_t)ds_rng_below(&rng, V);
    em_ctx c = {BT, C, ids};
    float *wte = fa(V * C), *dout = fa(BT * C), *dw = fa(V * C), *dw2 = fa(V * C);
    double *dwte = da(V * C), *r = da(BT * C), *g = da(V * C);
    fill(wte, dwte, V * C, 1.0f);
    fill(dout, r, BT * C, 1.0f);
    fd(g, em_fwd, &c, dwte, V * C, r, BT * C);
    ds_embedding_backward_ref(dw, dout, ids, BT, C);
    CHECK_FD("embedding", dw, g, V * C);
    ds_embedding_backward(dw2, dout, ids, BT, C);
    CHECK_FAST("embedding", dw2, dw, V * C);
    free(wte); free(dout); free(dw); free(dw2); free(dwte); free(r); free(g);
}

/* ---- cross-entropy --------------------------------------------------------------------------- */
typedef struct { int64_t N, V; const int32_t *t; } ce_ctx;
static void ce_fwd(double *out, const double *in, const void *vc) {
    const ce_ctx *c = vc;
    double total = 0;
    for (int64_t n = 0; n < c->N; n++) {
        if (c->t[n] == DS_CE_IGNORE) continue;
        double mx = -1e300, s = 0;
        for (int64_t v = 0; v < c->V; v++) mx = fmax(mx, in[n * c->V + v]);
        for (int64_t v = 0; v < c->V; v++) s += exp(in[n * c->V + v] - mx);
        total += mx + log(s) - in[n * c->V + c->t[n]];
    }
    out[0] = total;
}
TEST(cross_entropy_fd_and_fast) {
    ds_rng_seed(&rng, 17);
    const int64_t N = 9, V = 31;
    int32_t t[9] = {3, -100, 30, 0, 7, 7, -100, 12, 29};
    ce_ctx c = {N, V, t};
    float *z = fa(N * V), *dz = fa(N * V), *dz2 = fa(N * V);
    double *dzd = da(N * V), *g = da(N * V), one = 1.0;
    fill(z, dzd, N * V, 3.0f);
    fd(g, ce_fwd, &c, dzd, N * V, &one, 1);
    double ref_loss;
    ce_fwd(&ref_loss, dzd, &c);
    int64_t cnt = 0, cnt2 = 0;
    float *rl = fa(N), *rl2 = fa(N);
    double l1 = ds_cross_entropy_ref(dz, rl, &cnt, z, t, N, V, -100, 1.0f);
    CHECK(cnt == 7);
    CHECK_NEAR(l1, ref_loss, 1e-6 * fabs(ref_loss));
    CHECK_FD("cross-entropy dlogits", dz, g, N * V);
    for (int64_t i = 0; i < V; i++) CHECK(dz[1 * V + i] == 0 && dz[6 * V + i] == 0); /* ignored rows */
    double l2 = ds_cross_entropy(dz2, rl2, &cnt2, z, t, N, V, -100, 1.0f);
    CHECK_FAST("cross-entropy row losses", rl2, rl, N);
    CHECK(rl2[1] == 0 && rl2[6] == 0);
    CHECK(cnt2 == 7);
    CHECK_NEAR(l2, ref_loss, 1e-6 * fabs(ref_loss));
    CHECK_FAST("cross-entropy dlogits", dz2, dz, N * V);
    /* dscale scales the gradient; no logits buffer needed for the loss alone */
    CHECK_NEAR(ds_cross_entropy(NULL, rl2, NULL, z, t, N, V, -100, 0.5f), l2, 1e-12);
    ds_cross_entropy(dz2, rl2, NULL, z, t, N, V, -100, 0.25f);
    for (int64_t i = 0; i < N * V; i++) CHECK_NEAR(dz2[i], 0.25 * dz[i], 1e-6);
    free(z); free(dz); free(dz2); free(dzd); free(g); free(rl); free(rl2);
}

/* ---- MoE router weights ---------------------------------------------------------------
 * Outputs [w (N,K) ; s (N,E)] of the logits z with the selection idx held
 * fixed (it is a discrete choice: no gradient); L = r_w·w + r_s·s, so dw =
 * r_w and dscores = r_s drive the backward. */
typedef struct { int64_t N; const ds_route_params *p; const int32_t *idx; } rt_ctx;
static void rt_fwd(double *out, const double *in, const void *vc) {
    const rt_ctx *c = vc;
    const int64_t E = c->p->E, K = c->p->K;
    double *w = out, *s = out + c->N * K;
    for (int64_t n = 0; n < c->N; n++) {
        const double *z = in + n * E;
        double *sn = s + n * E;
        if (c->p->sigmoid) {
            for (int64_t i = 0; i < E; i++) sn[i] = 1 / (1 + exp(-z[i]));
        } else {
            double mx = -1e300, sum = 0;
            for (int64_t i = 0; i < E; i++) mx = fmax(mx, z[i]);
            for (int64_t i = 0; i < E; i++) sum += (sn[i] = exp(z[i] - mx));
            for (int64_t i = 0; i < E; i++) sn[i] /= sum;
        }
        double S = c->p->norm_topk ? 1e-20 : 1;
        if (c->p->norm_topk)
            for (int64_t k = 0; k < K; k++) S += sn[c->idx[n * K + k]];
        for (int64_t k = 0; k < K; k++) w[n * K + k] = c->p->scaling * sn[c->idx[n * K + k]] / S;
    }
}
TEST(moe_route_backward_fd_and_fast) {
    for (int variant = 0; variant < 3; variant++) {
        ds_rng_seed(&rng, 18 + variant);
        ds_route_params p = {.E = 8, .K = 3, .G = 4, .Gk = 2, .sigmoid = 1, .group_top2_sum = 1, .norm_topk = 1,
                             .scaling = 2.5f};
        if (variant == 1) p = (ds_route_params){.E = 8, .K = 3, .G = 1, .Gk = 1, .sigmoid = 0, .scaling = 16.0f};
        if (variant == 2) p = (ds_route_params){.E = 8, .K = 2, .G = 1, .Gk = 1, .sigmoid = 0, .norm_topk = 1,
                                                .scaling = 1.0f};
        const int64_t N = 10, E = p.E, K = p.K, nout = N * K + N * E;
        float *z = fa(N * E), *bias = fa(E), *w = fa(N * K), *s = fa(N * E), *rw = fa(N * K), *rs = fa(N * E);
        int32_t *idx = ds_calloc((size_t)(N * K), sizeof(int32_t));
        double *zd = da(N * E), *r = da(nout), *g = da(N * E);
        fill(z, zd, N * E, 1.0f);
        fill(bias, NULL, E, 0.1f);
        ds_moe_route_forward_ref(w, idx, s, z, p.sigmoid ? bias : NULL, &p, N);
        fill(rw, r, N * K, 1.0f);
        fill(rs, r + N * K, N * E, 1.0f);
        rt_ctx c = {N, &p, idx};
        fd(g, rt_fwd, &c, zd, N * E, r, nout);
        float *dz = fa(N * E), *dz2 = fa(N * E);
        ds_moe_route_backward_ref(dz, rw, rs, s, idx, &p, N);
        CHECK_FD(variant == 0 ? "router (sigmoid, norm_topk)" : variant == 1 ? "router (softmax)" : "router (softmax, norm)",
                 dz, g, N * E);
        ds_moe_route_backward(dz2, rw, rs, s, idx, &p, N);
        CHECK_FAST("router", dz2, dz, N * E);
        /* without the direct score gradient: only the weights' path */
        for (int64_t i = 0; i < N * E; i++) r[N * K + i] = 0;
        fd(g, rt_fwd, &c, zd, N * E, r, nout);
        ds_moe_route_backward(dz2, rw, NULL, s, idx, &p, N);
        CHECK_FD("router, dscores NULL", dz2, g, N * E);
        free(z); free(bias); free(w); free(s); free(rw); free(rs); free(idx); free(zd); free(r); free(g); free(dz);
        free(dz2);
    }
}

/* ---- MoE combine and gather ------------------------------------------------------------
 * y[n] = Σ_k w[n,k]·e_out[pos[n,k]], inputs [w ; e_out]; and the gather
 * xs[pos[n,k]] = x[n], input x. */
typedef struct { int64_t N, K, H; const int32_t *pos; } cb_ctx;
static void cb_fwd(double *out, const double *in, const void *vc) {
    const cb_ctx *c = vc;
    const double *w = in, *eo = in + c->N * c->K;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t i = 0; i < c->H; i++) {
            double y = 0;
            for (int64_t k = 0; k < c->K; k++) y += w[n * c->K + k] * eo[(int64_t)c->pos[n * c->K + k] * c->H + i];
            out[n * c->H + i] = y;
        }
}
static void ga_fwd(double *out, const double *in, const void *vc) {
    const cb_ctx *c = vc;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t k = 0; k < c->K; k++)
            memcpy(out + (int64_t)c->pos[n * c->K + k] * c->H, in + n * c->H, (size_t)c->H * sizeof(double));
}
TEST(moe_combine_gather_backward_fd_and_fast) {
    ds_rng_seed(&rng, 21);
    const int64_t N = 6, K = 3, H = 10, NK = N * K;
    int32_t pos[18];
    for (int64_t i = 0; i < NK; i++) pos[i] = (int32_t)i;
    for (int64_t i = NK - 1; i > 0; i--) { /* random permutation: slot -> sorted position */
        int64_t j = (int64_t)ds_rng_below(&rng, (uint64_t)i + 1);
        int32_t t = pos[i]; pos[i] = pos[j]; pos[j] = t;
    }
    cb_ctx c = {N, K, H, pos};
    int64_t nin = NK + NK * H;
    float *in = fa(nin), *dy = fa(N * H), *deo = fa(NK * H), *dw = fa(NK), *deo2 = fa(NK * H), *dw2 = fa(NK);
    double *din = da(nin), *r = da(N * H), *g = da(nin);
    fill(in, din, nin, 1.0f);
    fill(dy, r, N * H, 1.0f);
    fd(g, cb_fwd, &c, din, nin, r, N * H);
    ds_moe_combine_backward_ref(deo, dw, dy, in + NK, in, pos, N, K, H);
    CHECK_FD("combine dw", dw, g, NK);
    CHECK_FD("combine de_out", deo, g + NK, NK * H);
    ds_moe_combine_backward(deo2, dw2, dy, in + NK, in, pos, N, K, H);
    CHECK_FAST("combine dw", dw2, dw, NK);
    CHECK_FAST("combine de_out", deo2, deo, NK * H);
    /* gather: dx[n] += Σ_k dxs[pos[n,k]] */
    float *dxs = fa(NK * H), *dx = fa(N * H);
    double *rx = da(NK * H), *xd = da(N * H), *gx = da(N * H);
    fill(dxs, rx, NK * H, 1.0f);
    fd(gx, ga_fwd, &c, xd, N * H, rx, NK * H);
    ds_moe_permute_backward(dx, dxs, pos, N, K, H);
    CHECK_FD("gather dx", dx, gx, N * H);
    free(in); free(dy); free(deo); free(dw); free(deo2); free(dw2); free(din); free(r); free(g);
    free(dxs); free(dx); free(rx); free(xd); free(gx);
}
