/*
 * test_backend_cuda.c — the CUDA backend (backend/cuda/cuda.h), in the manner
 * of ggml's test-backend-ops: every entry of the CUDA table runs on inputs
 * uploaded to the device, its outputs are downloaded and compared with the
 * CPU table's (ds_ops_cpu, itself tested against scalar references and
 * PyTorch) on odd shapes, forward and backward, with a bound per op on the
 * normalized error NMSE = ‖gpu − cpu‖² / ‖cpu‖²:
 *   copies and gathers (embedding, permute, K/V split, RoPE tables): equal bits
 *   FP32 element and row ops, reductions, attention:             NMSE ≤ 1e-10
 *     (FP32 with another summation order: ~1e-14; a wrong index or a
 *     missing term is ≥ 1e-4)
 *   GEMMs FP32 and BF16 (cuBLASLt vs OpenBLAS / dsv3's BF16 GEMM): 1e-10
 *   FP8 on dsv3's own kernel: equal bits (same codes, scales and block order);
 *   FP8 on cuBLASLt's block-scaled GEMM: NMSE ≤ 1e-6 (a wrong scale layout
 *     gives ~1)
 * Then whole models through ds_backend_get("cuda") (host-staged,
 * backend/staged.h) and on the device-resident table (the model in device
 * memory) against the CPU: logits within 1e-5 and every gradient
 * within 1e-4 relative (FP32), 20 training steps with equal losses (1e-4),
 * BF16 and FP8 runs within DeepSeek's 0.25% of the CPU's BF16 run.
 *
 * Without a GPU (or without CUDA in the build) each of those tests SKIPS with
 * a "no GPU" line; tools/cudamock/run.sh runs them on the CPU over stand-in
 * CUDA runtime and cuBLASLt libraries.  The staging itself is checked on every machine: the
 * staged table over the CPU kernels, with "device" memory that is separate
 * host memory filled with NaN, gives the CPU's bits on a whole model.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda.h"
#include "backend/staged.h"
#include "base/base.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/presets.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemv.h"
#include "num/dtype.h"
#include "num/quant.h"
#include "test.h"

#define NEED_GPU()                                                                 \
    do {                                                                           \
        if (!ds_cuda_built()) SKIP("no GPU: this dsv3 was built without CUDA");    \
        if (ds_cuda_init()) SKIP("no GPU: %s", ds_errmsg());                       \
    } while (0)

/* ---- device buffers ------------------------------------------------------------ */
static void *up(const void *h, size_t n) {
    void *d = ds_cuda_alloc(n ? n : 4);
    DS_ASSERT(d);
    if (n) ds_cuda_copy_h2d(d, h, n);
    return d;
}
static float *upf(const float *h, int64_t n) { return up(h, (size_t)n * sizeof(float)); }
static int32_t *upi(const int32_t *h, int64_t n) { return up(h, (size_t)n * sizeof(int32_t)); }
/* a device buffer of n floats filled with NaN (rows an entry fails to write show) */
static float *nanbuf(int64_t n) {
    float *d = ds_cuda_alloc((size_t)(n ? n : 1) * sizeof(float));
    ds_cuda_memset(d, 0xff, (size_t)(n ? n : 1) * sizeof(float));
    return d;
}
static float *down(const float *d, int64_t n) {
    float *h = ds_malloc((size_t)(n ? n : 1) * sizeof(float));
    ds_cuda_copy_d2h(h, d, (size_t)n * sizeof(float));
    return h;
}

static float *randv(ds_rng *r, int64_t n, float scale) {
    float *v = ds_malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = scale * ds_rng_normal(r);
    return v;
}
static float *copyv(const float *x, int64_t n) {
    float *v = ds_malloc((size_t)(n ? n : 1) * sizeof(float));
    memcpy(v, x, (size_t)n * sizeof(float));
    return v;
}

/* ‖a − b‖² / ‖b‖² (0 when both are 0; infinite on a NaN in a) */
static double nmse(const float *a, const float *b, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) return INFINITY;
        if (isnan(a[i])) continue;
        double d = (double)a[i] - b[i];
        e += d * d;
        s += (double)b[i] * b[i];
    }
    return s > 0 ? e / s : e > 0 ? INFINITY : 0;
}

/* gpu's device buffer (n floats) against the CPU's result */
static void check_dev(const char *op, const char *shape, const float *dgot, const float *ref, int64_t n, double bound) {
    float *got = down(dgot, n);
    double e = nmse(got, ref, n);
    if (bound == 0)
        CHECK_MSG(!memcmp(got, ref, (size_t)n * sizeof(float)), "%s %s: not the CPU's bits (nmse %.3g)", op, shape, e);
    else
        CHECK_MSG(e <= bound, "%s %s: nmse %.3g > %.3g", op, shape, e, bound);
    free(got);
}

#define TOL 1e-10

/* |a − b| within tol relative (doubles the device sums in the CPU's order, FMA contraction aside) */
static int close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) || a == b; }

/* ---- norms and rotations ---------------------------------------------------------- */
TEST(cuda_ops_rmsnorm_rope) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 1);
    /* 300 rows: the dweight column sums in chunks of 64 rows (more than 256 rows) */
    const int64_t shapes[][2] = {{1, 1}, {7, 33}, {130, 257}, {3, 1100}, {300, 65}};
    for (int s = 0; s < 5; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1], ld = C + 3; /* strided rows */
        char sh[64];
        snprintf(sh, sizeof sh, "N=%lld C=%lld", (long long)N, (long long)C);
        float *x = randv(&r, N * ld, 1), *w = randv(&r, C, 1), *dy = randv(&r, N * ld, 1);
        float *y = randv(&r, N * ld, 1), *rs = ds_malloc((size_t)N * 4);
        float *dx = randv(&r, N * ld, 1), *dw = randv(&r, C, 1);
        float *dx0 = copyv(dx, N * ld), *dw0 = copyv(dw, C);
        float *dX = upf(x, N * ld), *dW = upf(w, C), *dY = upf(y, N * ld), *dRs = nanbuf(N), *dDy = upf(dy, N * ld);
        c->rmsnorm_forward(y, rs, x, w, N, C, ld, ld, 1e-6f);
        g->rmsnorm_forward(dY, dRs, dX, dW, N, C, ld, ld, 1e-6f);
        check_dev("rmsnorm_forward", sh, dY, y, N * ld, TOL);
        check_dev("rmsnorm_forward rstd", sh, dRs, rs, N, TOL);
        for (int saved = 0; saved < 2; saved++) {
            float *ddx = upf(dx0, N * ld), *ddw = upf(dw0, C);
            memcpy(dx, dx0, (size_t)(N * ld) * 4), memcpy(dw, dw0, (size_t)C * 4);
            c->rmsnorm_backward(dx, dw, dy, x, w, saved ? rs : NULL, N, C, ld, ld, ld, 1e-6f);
            g->rmsnorm_backward(ddx, ddw, dDy, dX, dW, saved ? dRs : NULL, N, C, ld, ld, ld, 1e-6f);
            check_dev("rmsnorm_backward dinp", sh, ddx, dx, N * ld, TOL);
            check_dev("rmsnorm_backward dweight", sh, ddw, dw, C, TOL);
            ds_cuda_free(ddx), ds_cuda_free(ddw);
        }
        ds_cuda_free(dX), ds_cuda_free(dW), ds_cuda_free(dY), ds_cuda_free(dRs), ds_cuda_free(dDy);
        free(x), free(w), free(dy), free(y), free(rs), free(dx), free(dw), free(dx0), free(dw0);
    }
    /* RoPE on (B, T, nv, ld) at offset off, both pair layouts; tables equal bits */
    const int64_t rshapes[][5] = {{1, 1, 1, 2, 0}, {2, 37, 3, 8, 5}, {1, 64, 16, 64, 128}};
    for (int s = 0; s < 3; s++) {
        int64_t B = rshapes[s][0], T = rshapes[s][1], nv = rshapes[s][2], dr = rshapes[s][3], off = rshapes[s][4];
        int64_t ld = off + dr + 1, n = B * T * nv * ld, h2 = dr / 2;
        char sh[80];
        snprintf(sh, sizeof sh, "B=%lld T=%lld nv=%lld dr=%lld", (long long)B, (long long)T, (long long)nv,
                 (long long)dr);
        float *inv = ds_malloc((size_t)h2 * 4), *ct = ds_malloc((size_t)(T * h2) * 4), *st = ds_malloc((size_t)(T * h2) * 4);
        for (int64_t i = 0; i < h2; i++) inv[i] = powf(10000.0f, -(float)(2 * i) / (float)dr);
        c->rope_tables(ct, st, inv, 1.1f, T, h2);
        float *dCt = nanbuf(T * h2), *dSt = nanbuf(T * h2);
        g->rope_tables(dCt, dSt, inv, 1.1f, T, h2); /* inv_freq is host memory */
        check_dev("rope_tables cos", sh, dCt, ct, T * h2, 0);
        check_dev("rope_tables sin", sh, dSt, st, T * h2, 0);
        for (int halves = 0; halves < 2; halves++)
            for (int bwd = 0; bwd < 2; bwd++) {
                float *x = randv(&r, n, 1), *dX = upf(x, n);
                if (bwd) c->rope_backward(x, ct, st, B, T, nv, ld, off, dr, halves);
                else c->rope_forward(x, ct, st, B, T, nv, ld, off, dr, halves);
                if (bwd) g->rope_backward(dX, dCt, dSt, B, T, nv, ld, off, dr, halves);
                else g->rope_forward(dX, dCt, dSt, B, T, nv, ld, off, dr, halves);
                check_dev(bwd ? "rope_backward" : "rope_forward", sh, dX, x, n, TOL);
                ds_cuda_free(dX), free(x);
            }
        ds_cuda_free(dCt), ds_cuda_free(dSt), free(inv), free(ct), free(st);
    }
}

/* ---- element and row ops ------------------------------------------------------------- */
TEST(cuda_ops_rows) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 2);
    const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 3}, {130, 257, 8}}; /* N, width, K */
    for (int s = 0; s < 3; s++) {
        int64_t N = shapes[s][0], H = shapes[s][1], K = shapes[s][2], n = N * H, V = 2 * N + 3;
        char sh[64];
        snprintf(sh, sizeof sh, "N=%lld H=%lld K=%lld", (long long)N, (long long)H, (long long)K);
        float *a = randv(&r, n, 2), *b = randv(&r, n, 1), *d = randv(&r, n, 1), *o = ds_malloc((size_t)n * 4);
        float *o2 = ds_malloc((size_t)n * 4);
        float *dA = upf(a, n), *dB = upf(b, n), *dD = upf(d, n), *dO = nanbuf(n), *dO2 = nanbuf(n);
        /* SwiGLU forward and backward, residual */
        c->swiglu_forward(o, a, b, N, H);
        g->swiglu_forward(dO, dA, dB, N, H);
        check_dev("swiglu_forward", sh, dO, o, n, TOL);
        c->swiglu_backward(o, o2, d, a, b, N, H);
        g->swiglu_backward(dO, dO2, dD, dA, dB, N, H);
        check_dev("swiglu_backward dgate", sh, dO, o, n, TOL);
        check_dev("swiglu_backward dup", sh, dO2, o2, n, TOL);
        c->residual_forward(o, a, b, n);
        g->residual_forward(dO, dA, dB, n);
        check_dev("residual_forward", sh, dO, o, n, 0);
        /* embedding: ids repeat (the backward sums them in row order) */
        int32_t *ids = ds_malloc((size_t)N * 4);
        for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)(N / 2 + 1));
        float *wte = randv(&r, V * H, 1), *dwte = randv(&r, V * H, 1);
        int32_t *dIds = upi(ids, N);
        float *dWte = upf(wte, V * H), *dDwte = upf(dwte, V * H);
        c->embedding_forward(o, ids, wte, N, H);
        g->embedding_forward(dO, dIds, dWte, N, H);
        check_dev("embedding_forward", sh, dO, o, n, 0);
        c->embedding_backward(dwte, d, ids, N, H);
        g->embedding_backward(dDwte, dD, dIds, N, H);
        check_dev("embedding_backward", sh, dDwte, dwte, V * H, 0);
        /* MoE permute / combine over a routing of N tokens to K of E = K + 2 experts */
        int64_t E = K + 2, S = N * K;
        int32_t *idx = ds_malloc((size_t)S * 4), *order = ds_malloc((size_t)S * 4), *pos = ds_malloc((size_t)S * 4);
        int64_t *cnt = ds_malloc((size_t)E * 8), *offs = ds_malloc((size_t)(E + 1) * 8);
        for (int64_t t = 0; t < N; t++) {
            int64_t k = 0;
            for (int64_t e = 0; e < E && k < K; e++)
                if ((int64_t)ds_rng_below(&r, (uint64_t)(E - e)) < K - k) idx[t * K + k++] = (int32_t)e;
        }
        ds_moe_sort(cnt, offs, order, pos, idx, N, K, E);
        float *xs = ds_malloc((size_t)(S * H) * 4), *eo = randv(&r, S * H, 1), *wk = randv(&r, S, 1);
        float *dwk = ds_malloc((size_t)S * 4);
        int32_t *dOrder = upi(order, S), *dPos = upi(pos, S);
        float *dXs = nanbuf(S * H), *dEo = upf(eo, S * H), *dWk = upf(wk, S), *dDwk = nanbuf(S);
        c->moe_permute(xs, a, order, N, K, H);
        g->moe_permute(dXs, dA, dOrder, N, K, H);
        check_dev("moe_permute", sh, dXs, xs, S * H, 0);
        c->moe_combine_forward(o, eo, wk, pos, N, K, H);
        g->moe_combine_forward(dO, dEo, dWk, dPos, N, K, H);
        check_dev("moe_combine_forward", sh, dO, o, n, TOL);
        c->moe_combine_backward(xs, dwk, d, eo, wk, pos, N, K, H);
        g->moe_combine_backward(dXs, dDwk, dD, dEo, dWk, dPos, N, K, H);
        check_dev("moe_combine_backward de_out", sh, dXs, xs, S * H, TOL);
        check_dev("moe_combine_backward dw", sh, dDwk, dwk, S, TOL);
        /* MLA K/V split: nh = K heads, dn = 3, dv = 2, rkv = 5, dr = 4 */
        int64_t nh = K, dn = 3, dv = 2, rkv = 5, dr = 4;
        float *kv = randv(&r, N * nh * (dn + dv), 1), *kva = randv(&r, N * (rkv + dr), 1);
        float *kk = ds_malloc((size_t)(N * nh * (dn + dr)) * 4), *vv = ds_malloc((size_t)(N * nh * dv) * 4);
        float *dKv = upf(kv, N * nh * (dn + dv)), *dKva = upf(kva, N * (rkv + dr));
        float *dK = nanbuf(N * nh * (dn + dr)), *dV = nanbuf(N * nh * dv);
        c->mla_kv_assemble(kk, vv, kv, kva, N, nh, dn, dv, rkv, dr);
        g->mla_kv_assemble(dK, dV, dKv, dKva, N, nh, dn, dv, rkv, dr);
        check_dev("mla_kv_assemble k", sh, dK, kk, N * nh * (dn + dr), 0);
        check_dev("mla_kv_assemble v", sh, dV, vv, N * nh * dv, 0);
        /* cross-entropy: V = H columns, one target ignored, dlogits in place of the logits */
        int32_t *tg = ds_malloc((size_t)N * 4);
        for (int64_t i = 0; i < N; i++) tg[i] = i == N / 2 && N > 1 ? -100 : (int32_t)ds_rng_below(&r, (uint64_t)H);
        int32_t *dTg = upi(tg, N);
        float *loss = ds_malloc((size_t)N * 4), *dLoss = nanbuf(N), *z = copyv(a, n), *dZ = upf(a, n);
        int64_t cc = -1, cg = -2;
        double tc = c->cross_entropy(z, loss, &cc, z, tg, N, H, -100, 0.5f);
        double tgpu = g->cross_entropy(dZ, dLoss, &cg, dZ, dTg, N, H, -100, 0.5f);
        CHECK_MSG(cc == cg && fabs(tc - tgpu) <= 1e-5 * fabs(tc) + 1e-6, "cross_entropy %s: %.9g (%lld) vs cpu %.9g (%lld)",
                  sh, tgpu, (long long)cg, tc, (long long)cc);
        check_dev("cross_entropy dlogits", sh, dZ, z, n, TOL);
        check_dev("cross_entropy losses", sh, dLoss, loss, N, TOL);
        ds_cuda_free(dA), ds_cuda_free(dB), ds_cuda_free(dD), ds_cuda_free(dO), ds_cuda_free(dO2), ds_cuda_free(dIds);
        ds_cuda_free(dWte), ds_cuda_free(dDwte), ds_cuda_free(dOrder), ds_cuda_free(dPos), ds_cuda_free(dXs);
        ds_cuda_free(dEo), ds_cuda_free(dWk), ds_cuda_free(dDwk), ds_cuda_free(dKv), ds_cuda_free(dKva);
        ds_cuda_free(dK), ds_cuda_free(dV), ds_cuda_free(dTg), ds_cuda_free(dLoss), ds_cuda_free(dZ);
        free(a), free(b), free(d), free(o), free(o2), free(ids), free(wte), free(dwte), free(idx), free(order);
        free(pos), free(cnt), free(offs), free(xs), free(eo), free(wk), free(dwk), free(kv), free(kva), free(kk);
        free(vv), free(tg), free(loss), free(z);
    }
}

/* ---- the MoE router ------------------------------------------------------------------- */
/* The embedding's weight gradient with ids over three bytes (the host's
 * grouping sorts them a byte at a time) that repeat out of order, and
 * addends of many magnitudes (a sum in another order would differ): the
 * CPU's bits, the rows of each id added in token order. */
TEST(cuda_ops_embedding_backward_ids) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 41);
    const int64_t N = 600, H = 5, V = 70001;
    int32_t *ids = ds_malloc((size_t)N * 4);
    for (int64_t i = 0; i < N; i++) { /* 40 ids, from 0 to 70,000, each about 15 times */
        const int64_t k = (int64_t)ds_rng_below(&r, 40);
        ids[i] = (int32_t)(k == 0 ? 0 : k == 39 ? V - 1 : (k * 1777 + (k % 3) * 256) % V);
    }
    float *d = randv(&r, N * H, 1), *dwte = randv(&r, V * H, 1);
    for (int64_t i = 0; i < N * H; i++) d[i] *= ldexpf(1.0f, (int)ds_rng_below(&r, 40) - 20);
    float *dD = upf(d, N * H), *dDwte = upf(dwte, V * H);
    int32_t *dIds = upi(ids, N);
    c->embedding_backward(dwte, d, ids, N, H);
    g->embedding_backward(dDwte, dD, dIds, N, H);
    check_dev("embedding_backward", "N=600 H=5 V=70001", dDwte, dwte, V * H, 0);
    ds_cuda_free(dD), ds_cuda_free(dDwte), ds_cuda_free(dIds);
    free(ids), free(d), free(dwte);
}

TEST(cuda_ops_moe_route) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 3);
    /* V3-like (sigmoid, 4 groups keep 2, top-2 sum, normalised), softmax without groups */
    ds_route_params ps[2] = {{16, 4, 4, 2, 1, 1, 1, 2.5f}, {7, 2, 1, 1, 0, 0, 0, 1.0f}};
    for (int s = 0; s < 2; s++) {
        const ds_route_params *p = &ps[s];
        int64_t N = 129, E = p->E, K = p->K;
        char sh[64];
        snprintf(sh, sizeof sh, "E=%lld K=%lld sigmoid=%d", (long long)E, (long long)K, p->sigmoid);
        float *lg = randv(&r, N * E, 2), *bias = randv(&r, E, 0.1f), *w = ds_malloc((size_t)(N * K) * 4);
        float *sc = ds_malloc((size_t)(N * E) * 4);
        int32_t *idx = ds_malloc((size_t)(N * K) * 4), *gidx = ds_malloc((size_t)(N * K) * 4);
        float *dLg = upf(lg, N * E), *dBias = upf(bias, E), *dW = nanbuf(N * K), *dSc = nanbuf(N * E);
        int32_t *dIdx = (int32_t *)nanbuf(N * K);
        c->moe_route_forward(w, idx, sc, lg, bias, p, N);
        g->moe_route_forward(dW, dIdx, dSc, dLg, dBias, p, N);
        ds_cuda_copy_d2h(gidx, dIdx, (size_t)(N * K) * 4);
        int64_t diff = 0;
        for (int64_t i = 0; i < N * K; i++) diff += gidx[i] != idx[i];
        CHECK_MSG(diff == 0, "moe_route_forward %s: %lld of %lld picks differ", sh, (long long)diff, (long long)(N * K));
        check_dev("moe_route_forward weights", sh, dW, w, N * K, TOL);
        check_dev("moe_route_forward scores", sh, dSc, sc, N * E, TOL);
        float *dw = randv(&r, N * K, 1), *dsc = randv(&r, N * E, 1), *dl = ds_malloc((size_t)(N * E) * 4);
        float *dDw = upf(dw, N * K), *dDsc = upf(dsc, N * E), *dDl = nanbuf(N * E);
        for (int with = 0; with < 2; with++) {
            c->moe_route_backward(dl, dw, with ? dsc : NULL, sc, idx, p, N);
            g->moe_route_backward(dDl, dDw, with ? dDsc : NULL, dSc, dIdx, p, N);
            check_dev("moe_route_backward", sh, dDl, dl, N * E, TOL);
        }
        ds_cuda_free(dLg), ds_cuda_free(dBias), ds_cuda_free(dW), ds_cuda_free(dSc), ds_cuda_free(dIdx);
        ds_cuda_free(dDw), ds_cuda_free(dDsc), ds_cuda_free(dDl);
        free(lg), free(bias), free(w), free(sc), free(idx), free(gidx), free(dw), free(dsc), free(dl);
    }
}

/* ---- attention ----------------------------------------------------------------------- */
TEST(cuda_ops_attention) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 4);
    /* B, T, NH, DQ, DV: one token; ragged tiles; DeepSeek-V3's head dims; tiny dims */
    const int64_t shapes[][5] = {{1, 1, 1, 1, 1}, {2, 37, 3, 24, 16}, {1, 100, 2, 192, 128}, {2, 65, 1, 5, 3}};
    for (int s = 0; s < 4; s++) {
        int64_t B = shapes[s][0], T = shapes[s][1], NH = shapes[s][2], DQ = shapes[s][3], DV = shapes[s][4];
        int64_t nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
        float scale = 1.0f / sqrtf((float)DQ);
        char sh[96];
        snprintf(sh, sizeof sh, "B=%lld T=%lld NH=%lld DQ=%lld DV=%lld", (long long)B, (long long)T, (long long)NH,
                 (long long)DQ, (long long)DV);
        float *q = randv(&r, nq, 1), *k = randv(&r, nq, 1), *v = randv(&r, nv, 1), *dy = randv(&r, nv, 1);
        float *o = ds_malloc((size_t)nv * 4), *l = ds_malloc((size_t)nl * 4);
        float *dq = ds_malloc((size_t)nq * 4), *dk = ds_malloc((size_t)nq * 4), *dv = ds_malloc((size_t)nv * 4);
        float *dQ = upf(q, nq), *dK = upf(k, nq), *dV = upf(v, nv), *dDy = upf(dy, nv), *dO = nanbuf(nv), *dL = nanbuf(nl);
        float *dDq = nanbuf(nq), *dDk = nanbuf(nq), *dDv = nanbuf(nv);
        c->attention_forward(o, l, q, k, v, B, T, NH, DQ, DV, scale);
        g->attention_forward(dO, dL, dQ, dK, dV, B, T, NH, DQ, DV, scale);
        check_dev("attention_forward out", sh, dO, o, nv, TOL);
        check_dev("attention_forward lse", sh, dL, l, nl, TOL);
        /* the backward from the CPU's forward outputs on both sides */
        float *dOc = upf(o, nv), *dLc = upf(l, nl);
        c->attention_backward(dq, dk, dv, dy, o, l, q, k, v, B, T, NH, DQ, DV, scale);
        g->attention_backward(dDq, dDk, dDv, dDy, dOc, dLc, dQ, dK, dV, B, T, NH, DQ, DV, scale);
        check_dev("attention_backward dq", sh, dDq, dq, nq, TOL);
        check_dev("attention_backward dk", sh, dDk, dk, nq, TOL);
        check_dev("attention_backward dv", sh, dDv, dv, nv, TOL);
        ds_cuda_free(dQ), ds_cuda_free(dK), ds_cuda_free(dV), ds_cuda_free(dDy), ds_cuda_free(dO), ds_cuda_free(dL);
        ds_cuda_free(dDq), ds_cuda_free(dDk), ds_cuda_free(dDv), ds_cuda_free(dOc), ds_cuda_free(dLc);
        free(q), free(k), free(v), free(dy), free(o), free(l), free(dq), free(dk), free(dv);
    }
}

/* The BF16 table's attention (the default; DSV3_CUDA_ATTN=fp32 turns it off): on the tensor cores where the head dims are
 * multiples of 16 (q, k, v, dout rounded to BF16, FP32 sums, the
 * probabilities and dS rounded to BF16 for their products), against the
 * CPU's FP32 attention on the BF16-rounded inputs: what is left is the
 * rounding of P and dS (NMSE bound 1e-5; the log-sum-exp, from FP32 sums,
 * within 1e-10); and far from the unrounded inputs' result (the path ran).
 * Other dims fall back to the FP32 kernels: the CPU's within 1e-10. */
/* n floats on the device at off floats past an allocation (off 1: 4 bytes past a 16-byte
 * boundary); free with ds_cuda_free(p - off) */
static float *upf_at(const float *h, int64_t n, int off) {
    float *t = ds_malloc((size_t)(n + off) * sizeof(float));
    memset(t, 0, (size_t)off * sizeof(float));
    memcpy(t + off, h, (size_t)n * sizeof(float));
    float *d = upf(t, n + off);
    free(t);
    return d + off;
}
static float *bf16_rounded(const float *x, int64_t n) {
    float *y = ds_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) y[i] = ds_bf16_to_f32(ds_f32_to_bf16(x[i]));
    return y;
}
TEST(cuda_ops_attention_bf16) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_BF16), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 5);
    int was = ds_cuda_attention_tc_set(1); /* the default (DSV3_CUDA_ATTN=fp32 turns it off) */
    CHECK_MSG(was == 1, "the tensor-core attention is off (DSV3_CUDA_ATTN=fp32, or its self-check failed)");
    /* B, T, NH, DQ, DV, tensor cores: one token; ragged tiles of 64 rows; DeepSeek-V3's head dims;
     * `small`'s (96, 64); DV above 128 (O too wide for the forward's registers: its WMMA kernel);
     * dims not multiples of 16 (the FP32 kernels).  The tensor-core shapes in the variants the
     * kernels pick (the forward's O in registers up to DV 128; key/query tiles of 64 or 32, the
     * backward's accumulators in registers at (192, 128)), then in each variant forced: tiles of
     * 32 and 64, accumulators in shared memory and in registers; last, inputs 4 bytes past a
     * 16-byte boundary (the tiles' scalar loads). */
    const int64_t shapes[][6] = {{1, 1, 1, 16, 16, 1},      {2, 70, 3, 32, 16, 1}, {1, 130, 2, 192, 128, 1},
                                 {1, 65, 1, 96, 64, 1},     {2, 45, 4, 48, 32, 1}, {1, 50, 1, 32, 144, 1},
                                 {2, 37, 3, 24, 16, 0}};
    for (int run = 0; run < 7 + 4 * 4 + 1; run++) {
        const int mis = run == 7 + 4 * 4;
        const int s = run < 7 ? run : mis ? 1 : 1 + (run - 7) % 4, var = run < 7 || mis ? -1 : (run - 7) / 4;
        const int tile = var < 0 ? 0 : var % 2 ? 64 : 32, regs = var < 0 ? -1 : var / 2;
        int64_t B = shapes[s][0], T = shapes[s][1], NH = shapes[s][2], DQ = shapes[s][3], DV = shapes[s][4];
        const int tc = (int)shapes[s][5];
        int64_t nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
        float scale = 1.0f / sqrtf((float)DQ);
        char sh[96];
        ds_cuda_attention_tc_tile(tile);
        ds_cuda_attention_tc_regs(regs);
        snprintf(sh, sizeof sh, "bf16 B=%lld T=%lld NH=%lld DQ=%lld DV=%lld tile=%d regs=%d%s", (long long)B,
                 (long long)T, (long long)NH, (long long)DQ, (long long)DV, tile, regs, mis ? " misaligned" : "");
        float *q = randv(&r, nq, 1), *k = randv(&r, nq, 1), *v = randv(&r, nv, 1), *dy = randv(&r, nv, 1);
        float *qr = tc ? bf16_rounded(q, nq) : q, *kr = tc ? bf16_rounded(k, nq) : k;
        float *vr = tc ? bf16_rounded(v, nv) : v, *dyr = tc ? bf16_rounded(dy, nv) : dy;
        float *o = ds_malloc((size_t)nv * 4), *l = ds_malloc((size_t)nl * 4), *o32 = ds_malloc((size_t)nv * 4);
        float *dq = ds_malloc((size_t)nq * 4), *dk = ds_malloc((size_t)nq * 4), *dv = ds_malloc((size_t)nv * 4);
        float *dQ = upf_at(q, nq, mis), *dK = upf_at(k, nq, mis), *dV = upf_at(v, nv, mis), *dDy = upf_at(dy, nv, mis);
        float *dO = nanbuf(nv), *dL = nanbuf(nl), *dDq = nanbuf(nq), *dDk = nanbuf(nq), *dDv = nanbuf(nv);
        c->attention_forward(o, l, qr, kr, vr, B, T, NH, DQ, DV, scale);
        c->attention_forward(o32, NULL, q, k, v, B, T, NH, DQ, DV, scale);
        g->attention_forward(dO, dL, dQ, dK, dV, B, T, NH, DQ, DV, scale);
        check_dev("attention_forward out", sh, dO, o, nv, tc ? 1e-5 : TOL);
        check_dev("attention_forward lse", sh, dL, l, nl, TOL);
        if (tc && T > 1) { /* the BF16 path ran: not the unrounded inputs' result */
            float *got = down(dO, nv);
            CHECK_MSG(nmse(got, o32, nv) > 1e-9, "attention_forward %s: the unrounded FP32 result", sh);
            free(got);
        }
        /* the backward from the CPU's forward outputs on both sides (delta = rowsum(dout ∘ out) in FP32
         * from the unrounded dout on the GPU, from the rounded one on the CPU: within the bound) */
        float *dOc = upf(o, nv), *dLc = upf(l, nl);
        c->attention_backward(dq, dk, dv, dyr, o, l, qr, kr, vr, B, T, NH, DQ, DV, scale);
        g->attention_backward(dDq, dDk, dDv, dDy, dOc, dLc, dQ, dK, dV, B, T, NH, DQ, DV, scale);
        if (T > 1) {
            check_dev("attention_backward dq", sh, dDq, dq, nq, tc ? 1e-5 : TOL);
            check_dev("attention_backward dk", sh, dDk, dk, nq, tc ? 1e-5 : TOL);
        } else { /* one key: dS = p (dP − Δ) is 0 exactly; the rounded dP and the FP32 Δ leave a residue */
            float *gq = down(dDq, nq), *gk = down(dDk, nq);
            for (int64_t i = 0; i < nq; i++)
                CHECK_MSG(fabsf(gq[i]) <= 1e-2f && fabsf(gk[i]) <= 1e-2f, "attention_backward %s: dq %g dk %g, not ~0",
                          sh, gq[i], gk[i]);
            free(gq), free(gk);
        }
        check_dev("attention_backward dv", sh, dDv, dv, nv, tc ? 1e-5 : TOL);
        ds_cuda_free(dQ - mis), ds_cuda_free(dK - mis), ds_cuda_free(dV - mis), ds_cuda_free(dDy - mis);
        ds_cuda_free(dO), ds_cuda_free(dL);
        ds_cuda_free(dDq), ds_cuda_free(dDk), ds_cuda_free(dDv), ds_cuda_free(dOc), ds_cuda_free(dLc);
        if (tc) free(qr), free(kr), free(vr), free(dyr);
        free(q), free(k), free(v), free(dy), free(o), free(o32), free(l), free(dq), free(dk), free(dv);
    }
    ds_cuda_attention_tc_tile(0);
    ds_cuda_attention_tc_regs(-1);
    /* every variant passed its self-check (one left out would let the others pass the runs above) */
    for (int kern = 0; kern < 3; kern++)
        CHECK_MSG(ds_cuda_attention_tc_off(kern) == 0, "attention kernel %d: variants %#x failed the self-check", kern,
                  ds_cuda_attention_tc_off(kern));
    /* turned off: the FP32 kernels, the CPU's result within 1e-10 */
    ds_cuda_attention_tc_set(0);
    {
        int64_t B = 1, T = 70, NH = 2, DQ = 32, DV = 16, nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
        float *q = randv(&r, nq, 1), *k = randv(&r, nq, 1), *v = randv(&r, nv, 1);
        float *o = ds_malloc((size_t)nv * 4), *l = ds_malloc((size_t)nl * 4);
        float *dQ = upf(q, nq), *dK = upf(k, nq), *dV = upf(v, nv), *dO = nanbuf(nv), *dL = nanbuf(nl);
        c->attention_forward(o, l, q, k, v, B, T, NH, DQ, DV, 0.25f);
        g->attention_forward(dO, dL, dQ, dK, dV, B, T, NH, DQ, DV, 0.25f);
        check_dev("attention_forward out", "bf16 table, tensor cores off", dO, o, nv, TOL);
        ds_cuda_free(dQ), ds_cuda_free(dK), ds_cuda_free(dV), ds_cuda_free(dO), ds_cuda_free(dL);
        free(q), free(k), free(v), free(o), free(l);
    }
    ds_cuda_attention_tc_set(was);
}

/* The tensor-core attention's self-check (first use) leaves out the kernel
 * variants that give wrong sums and turns the path off where a kernel has
 * none left.  cudamock's WMMA told to read B transposed
 * (CUDAMOCK_WMMA_BROKEN=1) fails the variants with accumulators in shared
 * memory; its mma.sync told to swap its output rows (CUDAMOCK_MMA_BROKEN=1)
 * the ones with accumulators in registers: with one of the two broken the
 * other variants run (the BF16 result); with both, the BF16 table runs the
 * FP32 kernels (the CPU's result on the unrounded inputs).  Only under
 * tools/cudamock. */
TEST(cuda_attention_tc_selfcheck) {
    NEED_GPU();
    if (strncmp(ds_cuda_device_name(), "cudamock", 8)) {
        SKIP("needs tools/cudamock (a GPU runs the self-check at first use instead)");
        return;
    }
    const struct ds_ops *g = ds_cuda_table(DS_PREC_BF16), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 6);
    int was = ds_cuda_attention_tc_set(0);
    const int64_t B = 1, T = 70, NH = 2, DQ = 32, DV = 16, nq = B * T * NH * DQ, nv = B * T * NH * DV, nl = B * NH * T;
    float *q = randv(&r, nq, 1), *k = randv(&r, nq, 1), *v = randv(&r, nv, 1);
    float *o = ds_malloc((size_t)nv * 4), *l = ds_malloc((size_t)nl * 4);
    float *dQ = upf(q, nq), *dK = upf(k, nq), *dV = upf(v, nv), *dO = nanbuf(nv), *dL = nanbuf(nl);
    c->attention_forward(o, l, q, k, v, B, T, NH, DQ, DV, 0.25f);
    /* broken: bit 1 WMMA, bit 0 mma.sync */
    for (int broken = 3; broken >= 0; broken--) {
        if (broken & 2) setenv("CUDAMOCK_WMMA_BROKEN", "1", 1);
        else unsetenv("CUDAMOCK_WMMA_BROKEN");
        if (broken & 1) setenv("CUDAMOCK_MMA_BROKEN", "1", 1);
        else unsetenv("CUDAMOCK_MMA_BROKEN");
        ds_cuda_attention_tc_set(0);
        ds_cuda_attention_tc_set(1); /* checked again at its next use */
        g->attention_forward(dO, dL, dQ, dK, dV, B, T, NH, DQ, DV, 0.25f);
        float *got = down(dO, nv);
        double e = nmse(got, o, nv);
        free(got);
        if (broken == 3)
            CHECK_MSG(e <= TOL, "broken tensor cores: NMSE %g from the FP32 result (the self-check let it run)", e);
        else CHECK_MSG(e > 1e-9 && e <= 1e-3, "broken %d: NMSE %g from the FP32 result (not the BF16 path?)", broken, e);
        /* left out, per kernel: tiles 64 and 32 in shared memory (bits 0, 2) where WMMA is broken,
         * in registers (bits 1, 3) where mma.sync is */
        const int off = (broken & 2 ? 0x5 : 0) | (broken & 1 ? 0xa : 0);
        for (int kern = 0; kern < 3; kern++)
            CHECK_MSG(ds_cuda_attention_tc_off(kern) == (broken == 3 ? 0 : off), "broken %d: kernel %d variants off %#x",
                      broken, kern, ds_cuda_attention_tc_off(kern));
        CHECK(ds_cuda_attention_tc_set(1) == (broken != 3));
    }
    ds_cuda_free(dQ), ds_cuda_free(dK), ds_cuda_free(dV), ds_cuda_free(dO), ds_cuda_free(dL);
    free(q), free(k), free(v), free(o), free(l);
    ds_cuda_attention_tc_set(was);
}

/* ---- GEMMs ------------------------------------------------------------------------------ */
/* The matmul (or linear) entries of precision prec on GPU against the CPU's
 * table of the same precision: forward with bias, backward with acc 0 and 1. */
static void gemm_case(int prec, int linear, int64_t N, int64_t C, int64_t OC, ds_rng *r, double bound) {
    struct ds_ops cpu;
    DS_ASSERT(ds_backend_table(&cpu, "cpu", prec) == 0);
    const struct ds_ops *g = ds_cuda_table(prec);
    char sh[96];
    snprintf(sh, sizeof sh, "prec %d %s N=%lld C=%lld OC=%lld", prec, linear ? "linear" : "matmul", (long long)N,
             (long long)C, (long long)OC);
    float *x = randv(r, N * C, 1), *w = randv(r, OC * C, 1), *b = randv(r, OC, 1), *dy = randv(r, N * OC, 1);
    for (int64_t i = 0; i < N * C; i += 37) x[i] *= 30; /* outliers: the 1x128 tiles matter */
    float *y = ds_malloc((size_t)(N * OC) * 4), *dx = randv(r, N * C, 1), *dw = randv(r, OC * C, 1);
    float *db = randv(r, OC, 1);
    float *dX = upf(x, N * C), *dW = upf(w, OC * C), *dB = upf(b, OC), *dDy = upf(dy, N * OC), *dY = nanbuf(N * OC);
    (linear ? cpu.linear_forward : cpu.matmul_forward)(y, x, w, b, N, C, OC);
    (linear ? g->linear_forward : g->matmul_forward)(dY, dX, dW, dB, N, C, OC);
    check_dev("forward", sh, dY, y, N * OC, bound);
    for (int acc = 0; acc < 2; acc++) {
        float *ddx = upf(dx, N * C), *ddw = upf(dw, OC * C), *ddb = upf(db, OC);
        (linear ? cpu.linear_backward : cpu.matmul_backward)(dx, dw, db, dy, x, w, N, C, OC, acc);
        (linear ? g->linear_backward : g->matmul_backward)(ddx, ddw, ddb, dDy, dX, dW, N, C, OC, acc);
        check_dev(acc ? "backward dinp (acc)" : "backward dinp", sh, ddx, dx, N * C, bound);
        check_dev("backward dweight", sh, ddw, dw, OC * C, bound);
        check_dev("backward dbias", sh, ddb, db, OC, bound ? TOL : 0);
        ds_cuda_free(ddx), ds_cuda_free(ddw), ds_cuda_free(ddb);
    }
    ds_cuda_free(dX), ds_cuda_free(dW), ds_cuda_free(dB), ds_cuda_free(dDy), ds_cuda_free(dY);
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
}

static const int64_t gemm_shapes[][3] = {{1, 1, 1}, {7, 33, 5}, {130, 300, 17}, {64, 128, 96}, {256, 512, 384},
                                         {200, 257, 129}};

TEST(cuda_ops_gemm_fp32_bf16) {
    NEED_GPU();
    ds_rng r;
    ds_rng_seed(&r, 5);
    for (int s = 0; s < 6; s++)
        for (int prec = DS_PREC_FP32; prec <= DS_PREC_BF16; prec++)
            gemm_case(prec, s & 1, gemm_shapes[s][0], gemm_shapes[s][1], gemm_shapes[s][2], &r, TOL);
}

/* FP8: dsv3's own kernel gives the CPU's bits; cuBLASLt (where it takes the
 * shape) is within 1e-6 NMSE.  The FP8 table's matmul entries stay FP32. */
TEST(cuda_ops_gemm_fp8) {
    NEED_GPU();
    ds_rng r;
    ds_rng_seed(&r, 6);
    int prev = ds_cuda_fp8_force_own(1);
    for (int s = 0; s < 6; s++) gemm_case(DS_PREC_FP8, 1, gemm_shapes[s][0], gemm_shapes[s][1], gemm_shapes[s][2], &r, 0);
    ds_cuda_fp8_force_own(0);
    int64_t lt0, own0, lt1, own1;
    ds_cuda_fp8_counts(&lt0, &own0);
    for (int s = 0; s < 6; s++)
        gemm_case(DS_PREC_FP8, 1, gemm_shapes[s][0], gemm_shapes[s][1], gemm_shapes[s][2], &r, 1e-6);
    ds_cuda_fp8_counts(&lt1, &own1);
    fprintf(stderr, "  fp8 GEMMs: %lld on cuBLASLt block scaling, %lld on the own kernel\n", (long long)(lt1 - lt0),
            (long long)(own1 - own0));
    CHECK_MSG(lt1 > lt0, "cuBLASLt took none of the FP8 GEMMs (K %% 16 == 0 shapes included)");
    ds_cuda_fp8_force_own(prev);
    gemm_case(DS_PREC_FP8, 0, 64, 128, 96, &r, TOL); /* matmul entries: FP32 */
}

/* FP8- and BF16-resident weights (linear_fp8w_forward) against the CPU's */
/* FP8 block-scaled GEMMs on DeepSeek-V3 shapes (gemm_cuda's N x K, 256 rows)
 * against the CPU's FP8 linear (the same 1x128 / 128x128 codes and scales):
 * fprop, dgrad and wgrad within a normalized error of 1e-6 (FP32 sums of the
 * same products in another order) */
TEST(cuda_ops_gemm_fp8_deepseek_shapes) {
    NEED_GPU();
    ds_rng r;
    ds_rng_seed(&r, 16);
    gemm_case(DS_PREC_FP8, 1, 256, 2048, 7168, &r, 1e-6); /* N x K = 7168 x 2048 */
    gemm_case(DS_PREC_FP8, 1, 256, 7168, 2048, &r, 1e-6); /* 2048 x 7168 */
}

TEST(cuda_ops_linear_fp8w) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32);
    ds_rng r;
    ds_rng_seed(&r, 7);
    const int64_t shapes[][3] = {{1, 64, 32}, {5, 300, 130}, {33, 512, 256}};
    int64_t j0, j1;
    int mma = ds_cuda_fp8_mma_set(1);
    ds_cuda_fp8_mma_counts(&j0, NULL);
    for (int s = 0; s < 3; s++)
        for (int own = 1; own >= 0; own--) {
            int64_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2], ns = ds_ceil_div(OC, 128) * ds_ceil_div(C, 128);
            char sh[80];
            snprintf(sh, sizeof sh, "N=%lld C=%lld OC=%lld own=%d", (long long)N, (long long)C, (long long)OC, own);
            float *x = randv(&r, N * C, 1), *w = randv(&r, OC * C, 0.05f), *b = randv(&r, OC, 1);
            float *y = ds_malloc((size_t)(N * OC) * 4), *sc = ds_malloc((size_t)ns * 4);
            uint8_t *q = ds_malloc((size_t)(OC * C));
            uint16_t *b16 = ds_malloc((size_t)(OC * C) * 2);
            ds_quant_opts o = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
            DS_ASSERT(ds_quantize(q, sc, w, OC, C, &o) == 0);
            ds_f32_to_bf16_n(b16, w, OC * C);
            ds_fp8w hw = {q, sc, OC, C, NULL}, hb = {NULL, NULL, OC, C, b16};
            ds_fp8w dw = {up(q, (size_t)(OC * C)), upf(sc, ns), OC, C, NULL};
            ds_fp8w db = {NULL, NULL, OC, C, up(b16, (size_t)(OC * C) * 2)};
            float *dX = upf(x, N * C), *dB = upf(b, OC), *dY = nanbuf(N * OC);
            int prev = ds_cuda_fp8_force_own(own);
            ds_ops_cpu.linear_fp8w_forward(y, x, &hw, b, N, C, OC);
            g->linear_fp8w_forward(dY, dX, &dw, dB, N, C, OC);
            /* the own kernel gives the CPU's bits where the CPU runs its block GEMM; up to
             * DS_LINEAR_ROWWISE_MAX rows the CPU's row-wise GEMVs sum in another order */
            check_dev("linear_fp8w_forward fp8", sh, dY, y, N * OC, own && N > DS_LINEAR_ROWWISE_MAX ? 0 : own ? TOL : 1e-6);
            ds_ops_cpu.linear_fp8w_forward(y, x, &hb, b, N, C, OC);
            g->linear_fp8w_forward(dY, dX, &db, dB, N, C, OC);
            check_dev("linear_fp8w_forward bf16", sh, dY, y, N * OC, TOL);
            ds_cuda_fp8_force_own(prev);
            ds_cuda_free((void *)dw.q), ds_cuda_free((void *)dw.scale), ds_cuda_free((void *)db.b16);
            ds_cuda_free(dX), ds_cuda_free(dB), ds_cuda_free(dY);
            free(x), free(w), free(b), free(y), free(sc), free(q), free(b16);
        }
    /* C = 300: codes 300 bytes a row, which cuBLASLt refuses; the tensor-core kernel runs it */
    ds_cuda_fp8_mma_counts(&j1, NULL);
    CHECK_MSG(j1 > j0, "no FP8 GEMM fell back to the tensor-core kernel");
    ds_cuda_fp8_mma_set(mma);
}

/* Every entry the CPU table has, the CUDA tables have (the missing ones are named). */
TEST(cuda_table_complete) {
    NEED_GPU();
    for (int prec = DS_PREC_FP32; prec <= DS_PREC_FP8; prec++) {
        const struct ds_ops *g = ds_cuda_table(prec);
        CHECK(g && !strcmp(g->name, "cuda"));
        if (!g) continue;
        CHECK(g->host_visible == 0);
        const void *const *cp = (const void *const *)&ds_ops_cpu, *const *gp = (const void *const *)g;
        const size_t hv = offsetof(struct ds_ops, host_visible) / sizeof(void *); /* an int, not an entry */
        for (size_t i = 1; i < sizeof(struct ds_ops) / sizeof(void *); i++)
            CHECK_MSG(i == hv || !cp[i] || gp[i], "precision %d: entry %zu of struct ds_ops has no CUDA kernel", prec, i);
    }
}

/* ---- the engine entries (engine.cu): optimizer, memory, MoE sort and grouped
 * GEMMs, backward row moves, FP8 tiles, casts, decode, sampling, balance ---- */
static int dev_same(const struct ds_ops *g, const void *d, const void *h, size_t n) {
    void *t = ds_malloc(n ? n : 1);
    g->copy_d2h(t, d, n);
    int r = !memcmp(t, h, n);
    free(t);
    return r;
}

/* The grouped expert linears of precision prec against the CPU's, rows
 * sorted by expert as moe_sort leaves them (counts from a random routing,
 * expert 1 without rows): forward, backward with the input gradient written
 * (acc 0) and added to (acc 1). */
static void grouped_case(int prec, int64_t N, int64_t E, int64_t C, int64_t OC, ds_rng *r, double bound) {
    struct ds_ops cb;
    DS_ASSERT(ds_backend_table(&cb, "cpu", prec) == 0);
    const struct ds_ops *gb = ds_cuda_table(prec);
    int64_t *cnt = ds_malloc((size_t)E * 8), *offs = ds_malloc((size_t)(E + 1) * 8);
    for (int64_t e = 0; e < E; e++) cnt[e] = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t e = (int64_t)ds_rng_below(r, (uint64_t)E);
        cnt[e == 1 ? 0 : e]++;
    }
    offs[0] = 0;
    for (int64_t e = 0; e < E; e++) offs[e + 1] = offs[e] + cnt[e];
    char sh[96];
    snprintf(sh, sizeof sh, "prec %d N=%lld E=%lld C=%lld OC=%lld", prec, (long long)N, (long long)E, (long long)C,
             (long long)OC);
    float *x = randv(r, N * C, 1), *dy = randv(r, N * OC, 1), *o = ds_malloc((size_t)(N * OC) * 4);
    for (int64_t i = 0; i < N * C; i += 37) x[i] *= 30; /* outliers: the tiles matter */
    float *dx = randv(r, N * C, 1), **w = ds_malloc((size_t)E * sizeof(float *)), **dw = ds_malloc((size_t)E * sizeof(float *));
    float **gw = ds_malloc((size_t)E * sizeof(float *)), **gdw = ds_malloc((size_t)E * sizeof(float *));
    for (int64_t e = 0; e < E; e++) {
        w[e] = randv(r, OC * C, 0.3f), dw[e] = randv(r, OC * C, 0.1f);
        gw[e] = upf(w[e], OC * C), gdw[e] = upf(dw[e], OC * C);
    }
    float *dX = upf(x, N * C), *dDy = upf(dy, N * OC), *dO = nanbuf(N * OC), *dDx = upf(dx, N * C);
    cb.grouped_linear_forward(&cb, o, x, (const float *const *)w, NULL, cnt, offs, E, C, OC);
    gb->grouped_linear_forward(gb, dO, dX, (const float *const *)gw, NULL, cnt, offs, E, C, OC);
    check_dev("grouped_linear_forward", sh, dO, o, N * OC, bound);
    for (int acc = 0; acc < 2; acc++) {
        cb.grouped_linear_backward(&cb, dx, dw, dy, x, (const float *const *)w, cnt, offs, E, C, OC, acc);
        gb->grouped_linear_backward(gb, dDx, gdw, dDy, dX, (const float *const *)gw, cnt, offs, E, C, OC, acc);
        check_dev(acc ? "grouped_linear_backward dinp (acc)" : "grouped_linear_backward dinp", sh, dDx, dx, N * C, bound);
        for (int64_t e = 0; e < E; e++) check_dev("grouped_linear_backward dw", sh, gdw[e], dw[e], OC * C, bound);
    }
    for (int64_t e = 0; e < E; e++) ds_cuda_free(gw[e]), ds_cuda_free(gdw[e]), free(w[e]), free(dw[e]);
    ds_cuda_free(dX), ds_cuda_free(dDy), ds_cuda_free(dO), ds_cuda_free(dDx);
    free(cnt), free(offs), free(x), free(dy), free(o), free(dx), free(w), free(dw), free(gw), free(gdw);
}

/* several 128-row bands an expert, ragged 1x128 tiles and 128x128 blocks */
TEST(cuda_ops_grouped_linear) {
    NEED_GPU();
    ds_rng r;
    ds_rng_seed(&r, 31);
    grouped_case(DS_PREC_FP32, 700, 4, 150, 130, &r, TOL);
    /* BF16: strided-batched cuBLASLt calls, one per class of row counts (two
     * classes here: expert 0 holds expert 1's rows too), and without them */
    int64_t b0 = ds_cuda_batched_calls();
    grouped_case(DS_PREC_BF16, 700, 4, 150, 130, &r, TOL);
    CHECK(ds_cuda_batched_calls() >= b0 + 2 * 3);
    grouped_case(DS_PREC_BF16, 90, 5, 33, 70, &r, TOL); /* few rows: classes of 16, 32, ... */
    /* decode-sized (fewer than 16 rows an expert on average): the forward in one launch of the
     * few-rows kernel (an expert with more rows than it stages at once, slices of C with a ragged
     * one, experts without rows), or with it off the loop */
    int64_t f0 = ds_cuda_fewrows_calls();
    grouped_case(DS_PREC_FP32, 40, 4, 600, 70, &r, TOL);
    grouped_case(DS_PREC_BF16, 40, 4, 600, 70, &r, TOL);
    grouped_case(DS_PREC_FP32, 20, 8, 33, 130, &r, TOL);
    CHECK_MSG(ds_cuda_fewrows_calls() == f0 + 3, "few-rows launches: %lld", (long long)(ds_cuda_fewrows_calls() - f0));
    int few = ds_cuda_fewrows_set(0);
    CHECK(few == 1);
    f0 = ds_cuda_fewrows_calls();
    grouped_case(DS_PREC_FP32, 40, 4, 600, 70, &r, TOL);
    CHECK(ds_cuda_fewrows_calls() == f0);
    ds_cuda_fewrows_set(few);
    int was = ds_cuda_batched_set(0);
    b0 = ds_cuda_batched_calls();
    grouped_case(DS_PREC_BF16, 700, 4, 150, 130, &r, TOL);
    CHECK(ds_cuda_batched_calls() == b0);
    ds_cuda_batched_set(was);
    /* FP8: every expert's product in one launch of the tensor-core kernel (a
     * launch for the forward, two for each backward), or one GEMM each */
    int64_t j0, l0, j1, l1;
    int mma = ds_cuda_fp8_mma_set(1);
    ds_cuda_fp8_mma_counts(&j0, &l0);
    grouped_case(DS_PREC_FP8, 700, 4, 150, 130, &r, 1e-6);
    ds_cuda_fp8_mma_counts(&j1, &l1);
    fprintf(stderr, "  fp8 experts: %lld products in %lld tensor-core launches\n", (long long)(j1 - j0),
            (long long)(l1 - l0));
    CHECK_MSG(l1 == l0 + 5 && j1 == j0 + 5 * 3, "FP8 experts: %lld launches, %lld products on the tensor-core kernel",
              (long long)(l1 - l0), (long long)(j1 - j0));
    ds_cuda_fp8_mma_set(0);
    grouped_case(DS_PREC_FP8, 300, 3, 200, 70, &r, 1e-6);
    ds_cuda_fp8_mma_counts(&j0, &l0);
    CHECK(l0 == l1 && j0 == j1);
    ds_cuda_fp8_mma_set(mma);
}

/* gemm_cuda's benchmarks (tools/gpu_check.sh) run every kind and the three
 * expert paths on small shapes, on the path they name */
TEST(cuda_gemm_bench_kinds) {
    NEED_GPU();
    static const char *kinds[] = {"fp8", "fp8-mma", "fp8-own", "bf16", "fp32"};
    static const char *paths[] = {"cublaslt", "mma", "own", "cublaslt", "cublaslt"};
    for (int k = 0; k < 5; k++) {
        double t = 0;
        const char *path = "";
        CHECK_MSG(ds_cuda_gemm_bench(kinds[k], 128, 128, 256, 1, &t, &path) == 0, "%s: %s", kinds[k], ds_errmsg());
        CHECK_MSG(t > 0 && !strcmp(path, paths[k]), "%s: %g TFLOPS on %s", kinds[k], t, path);
    }
    double t = 0;
    const char *path = "";
    CHECK(ds_cuda_gemm_bench("fp9", 128, 128, 128, 1, &t, &path) != 0);
    static const char *how[] = {"lt", "mma", "mma-plain"}, *ran[] = {"cublaslt", "mma", "mma-plain"};
    for (int m = 0; m < 3; m++) {
        CHECK_MSG(ds_cuda_gemm_bench_experts(how[m], 3, 40, 128, 256, 1, &t, &path) == 0, "%s", ds_errmsg());
        CHECK_MSG(t > 0 && !strcmp(path, ran[m]), "experts %s: %g TFLOPS on %s", how[m], t, path);
    }
    CHECK_MSG(ds_cuda_fp8_mma_loads() == 1, "the benchmark left the fragment loads at %d", ds_cuda_fp8_mma_loads());
    CHECK(ds_cuda_gemm_bench_experts("mma-fast", 3, 40, 128, 256, 1, &t, &path) != 0);
    static const char *att[] = {"fp32", "tc", "tc-tile64", "tc-smem"};
    for (int h = 0; h < 4; h++) {
        double f = 0, b = 0;
        CHECK_MSG(ds_cuda_attention_bench(att[h], 1, 40, 1, 32, 16, 1, &f, &b) == 0, "attention %s: %s", att[h],
                  ds_errmsg());
        CHECK_MSG(f > 0 && b > 0, "attention %s: %g / %g TFLOPS", att[h], f, b);
    }
    double f = 0, b = 0;
    CHECK(ds_cuda_attention_bench("tc", 1, 40, 1, 24, 16, 1, &f, &b) != 0); /* dims not multiples of 16 */
    CHECK(ds_cuda_attention_bench("tc-fast", 1, 40, 1, 32, 16, 1, &f, &b) != 0);
}

/* cuBLASLt's algorithm tuned (ds_cuda_lt_tune): each class of problems timed
 * over the heuristic's candidates, the fastest kept.  The products stay the
 * CPU's (the backward's acc = 1 included: the timed launches must not add
 * into dweight or dinp), every search of a class is tuned, and the benchmark
 * names the winner.  Under tools/cudamock the heuristic gives 3 candidates
 * (CUDAMOCK_LT_ALGOS=3) and the first runs slower (CUDAMOCK_LT_SLOW_FIRST=1):
 * the second must win, and be the one the benchmark reports. */
TEST(cuda_lt_tune) {
    NEED_GPU();
    const int mock = !strncmp(ds_cuda_device_name(), "cudamock", 8);
    if (mock) setenv("CUDAMOCK_LT_ALGOS", "3", 1), setenv("CUDAMOCK_LT_SLOW_FIRST", "1", 1);
    const int was = ds_cuda_lt_tune(1);
    int64_t t0, m0, t1, m1;
    ds_cuda_lt_tune_stats(&t0, &m0, NULL);
    ds_rng r;
    ds_rng_seed(&r, 31);
    /* shapes of their own (the cache is per class: tuned answers apart from untuned) */
    gemm_case(DS_PREC_FP32, 0, 96, 160, 48, &r, TOL);
    gemm_case(DS_PREC_BF16, 1, 40, 192, 80, &r, TOL);
    ds_cuda_lt_tune_info last;
    ds_cuda_lt_tune_stats(&t1, &m1, &last);
    CHECK_MSG(t1 >= t0 + 4, "%lld tuned searches for two forward, dgrad and wgrad shapes", (long long)(t1 - t0));
    CHECK_MSG(last.candidates >= 1 && last.best >= 0 && last.best < last.candidates && last.best_ms > 0 &&
                  last.best_ms <= last.first_ms,
              "last tuned search: #%d of %d, %g ms against the first's %g", last.best, last.candidates, last.best_ms,
              last.first_ms);
    if (mock) {
        CHECK_MSG(last.candidates == 3 && last.best == 1, "the slower first algorithm won: #%d of %d", last.best,
                  last.candidates);
        CHECK_MSG(m1 - m0 == t1 - t0, "%lld of %lld tuned searches moved off the first", (long long)(m1 - m0),
                  (long long)(t1 - t0));
    }
    ds_cuda_lt_tune(0);
    for (int k = 0; k < 2; k++) {
        double t = 0;
        const char *path = "", *kind = k ? "bf16-tuned" : "fp8-tuned";
        CHECK_MSG(ds_cuda_gemm_bench(kind, 128, 256, 384, 1, &t, &path) == 0, "%s: %s", kind, ds_errmsg());
        CHECK_MSG(t > 0 && !strncmp(path, "cublaslt tuned: #", 17), "%s: %g TFLOPS on %s", kind, t, path);
        if (mock) CHECK_MSG(!strncmp(path, "cublaslt tuned: #1 of 3", 23), "%s: %s", kind, path);
    }
    CHECK_MSG(ds_cuda_lt_tune(was) == 0, "the benchmark left tuning on");
    if (mock) unsetenv("CUDAMOCK_LT_ALGOS"), unsetenv("CUDAMOCK_LT_SLOW_FIRST");
}

/* The FP8 tensor-core kernel's self-check turns it off when the instruction
 * gives wrong sums: cudamock's stand-in told to swap its output rows
 * (CUDAMOCK_MMA_BROKEN=1); the experts then run one GEMM each, still right.
 * Where only ldmatrix is wrong (CUDAMOCK_LDSM_BROKEN=1: two of its matrices
 * swapped), the kernel stays on with 32-bit fragment loads.  Only under
 * tools/cudamock (a GPU's instructions cannot be broken). */
TEST(cuda_fp8_mma_selfcheck) {
    NEED_GPU();
    if (strncmp(ds_cuda_device_name(), "cudamock", 8)) {
        SKIP("needs tools/cudamock (a GPU runs the self-check at first use instead)");
        return;
    }
    ds_rng r;
    ds_rng_seed(&r, 32);
    int mma = ds_cuda_fp8_mma_set(0);
    setenv("CUDAMOCK_MMA_BROKEN", "1", 1);
    ds_cuda_fp8_mma_set(1); /* checked again at its next use */
    int64_t j0, l0, j1, l1;
    ds_cuda_fp8_mma_counts(&j0, &l0);
    grouped_case(DS_PREC_FP8, 300, 3, 200, 70, &r, 1e-6);
    ds_cuda_fp8_mma_counts(&j1, &l1);
    /* the ldmatrix build's check, then the 32-bit loads' */
    CHECK_MSG(l1 == l0 + 2, "the self-checks' launches alone: %lld launches", (long long)(l1 - l0));
    CHECK(ds_cuda_fp8_mma_loads() == -1);
    unsetenv("CUDAMOCK_MMA_BROKEN");
    /* ldmatrix broken alone: the kernel stays on with 32-bit fragment loads */
    CHECK(ds_cuda_fp8_mma_set(1) == 0);
    setenv("CUDAMOCK_LDSM_BROKEN", "1", 1);
    ds_cuda_fp8_mma_counts(&j0, &l0);
    grouped_case(DS_PREC_FP8, 300, 3, 200, 70, &r, 1e-6);
    ds_cuda_fp8_mma_counts(&j1, &l1);
    CHECK_MSG(l1 == l0 + 2 + 5, "two checks and the products on 32-bit loads: %lld launches", (long long)(l1 - l0));
    CHECK(ds_cuda_fp8_mma_loads() == 0);
    unsetenv("CUDAMOCK_LDSM_BROKEN");
    ds_cuda_fp8_mma_set(0);
    ds_cuda_fp8_mma_set(1);
    ds_cuda_fp8_mma_counts(&j0, &l0);
    grouped_case(DS_PREC_FP8, 300, 3, 200, 70, &r, 1e-6);
    ds_cuda_fp8_mma_counts(&j1, &l1);
    CHECK_MSG(l1 == l0 + 1 + 5, "checked again and on: %lld launches", (long long)(l1 - l0));
    CHECK(ds_cuda_fp8_mma_loads() == 1);
    ds_cuda_fp8_mma_set(mma);
}

TEST(cuda_ops_engine) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 21);
    /* memory: alloc zero-fills, memset, d2d */
    {
        uint8_t z[300], h[300];
        memset(z, 0, sizeof z);
        uint8_t *d = g->alloc(300), *d2 = g->alloc(300);
        CHECK(d && dev_same(g, d, z, 300));
        g->memset(d, 0x5a, 300);
        g->copy_d2d(d2, d, 300);
        g->sync();
        memset(h, 0x5a, 300);
        CHECK(dev_same(g, d2, h, 300));
        g->free(d), g->free(d2);
    }
    /* sumsq: the CPU's blocks and lanes, so the CPU's bits (n over three blocks) */
    {
        int64_t n = 2 * 8192 + 77;
        float *x = randv(&r, n, 3);
        float *dx = upf(x, n);
        double a = c->sumsq(x, n), b = g->sumsq(dx, n);
        CHECK_MSG(a == b, "sumsq %.17g vs cpu %.17g", b, a);
        x[5000] = NAN;
        ds_cuda_copy_h2d(dx, x, (size_t)n * 4);
        CHECK(!isfinite(g->sumsq(dx, n)));
        ds_cuda_free(dx), free(x);
    }
    /* AdamW over two segments, FP32 and BF16 moments, gscale 0.5 */
    for (int bf = 0; bf <= 1; bf++) {
        int64_t n = 1000;
        ds_optim_seg seg[2] = {{0, 600, 1}, {600, 400, 0}};
        ds_adamw_hparams hp = {1e-2, 0.9, 0.95, 1e-8, 0.1};
        float *p = randv(&r, n, 1), *gr = randv(&r, n, 1), *m = randv(&r, n, 0.1f), *v = randv(&r, n, 0.1f);
        for (int64_t i = 0; i < n; i++) v[i] = v[i] * v[i];
        size_t mb = (size_t)n * (bf ? 2 : 4);
        void *mh = ds_malloc(mb), *vh = ds_malloc(mb);
        if (bf) ds_cast_f32_bf16(mh, m, n), ds_cast_f32_bf16(vh, v, n);
        else memcpy(mh, m, mb), memcpy(vh, v, mb);
        float *dp = upf(p, n), *dg = upf(gr, n);
        void *dm = up(mh, mb), *dv = up(vh, mb);
        c->adamw(p, gr, mh, vh, bf, seg, 2, 3, &hp, 0.5f);
        g->adamw(dp, dg, dm, dv, bf, seg, 2, 3, &hp, 0.5f);
        check_dev(bf ? "adamw p (bf16 moments)" : "adamw p", "n=1000", dp, p, n, TOL);
        if (!bf) {
            check_dev("adamw m", "n=1000", dm, mh, n, TOL);
            check_dev("adamw v", "n=1000", dv, vh, n, TOL);
        } else { /* BF16 moments: a last-bit FP32 difference may flip a rounding: count */
            uint16_t *gm = ds_malloc(mb);
            ds_cuda_copy_d2h(gm, dm, mb);
            int64_t off = 0;
            for (int64_t i = 0; i < n; i++) off += gm[i] != ((uint16_t *)mh)[i];
            CHECK_MSG(off <= n / 100, "adamw bf16 m: %lld of %lld differ", (long long)off, (long long)n);
            free(gm);
        }
        ds_cuda_free(dp), ds_cuda_free(dg), ds_cuda_free(dm), ds_cuda_free(dv);
        free(p), free(gr), free(m), free(v), free(mh), free(vh);
    }
    /* bias_update: equal bits */
    {
        int64_t E = 9, load[9] = {3, 0, 7, 5, 5, 1, 9, 4, 2};
        float *b = randv(&r, E, 0.1f), *db = upf(b, E);
        c->bias_update(b, load, E, 0.001f);
        g->bias_update(db, load, E, 0.001f);
        check_dev("bias_update", "E=9", db, b, E, 0);
        ds_cuda_free(db), free(b);
    }
    /* moe_sort, grouped linears (through the table's own linear entries), permute backward */
    {
        int64_t N = 37, K = 3, E = 6, C = 20, OC = 13, S = N * K;
        int32_t *idx = ds_malloc((size_t)S * 4);
        for (int64_t t = 0; t < N; t++) {
            int64_t k = 0;
            for (int64_t e = 0; e < E && k < K; e++)
                if ((int64_t)ds_rng_below(&r, (uint64_t)(E - e)) < K - k) idx[t * K + k++] = (int32_t)e;
        }
        int64_t cnt[6], offs[7], gcnt[6], goffs[7];
        int32_t *order = ds_malloc((size_t)S * 4), *pos = ds_malloc((size_t)S * 4);
        c->moe_sort(cnt, offs, order, pos, idx, N, K, E);
        int32_t *dIdx = upi(idx, S), *dOrder = g->alloc((size_t)S * 4), *dPos = g->alloc((size_t)S * 4);
        int64_t *dCnt = g->alloc(sizeof cnt), *dOffs = g->alloc(sizeof offs);
        g->moe_sort(dCnt, dOffs, dOrder, dPos, dIdx, N, K, E);
        g->copy_d2h(gcnt, dCnt, sizeof cnt), g->copy_d2h(goffs, dOffs, sizeof offs);
        CHECK(!memcmp(gcnt, cnt, sizeof cnt) && !memcmp(goffs, offs, sizeof offs));
        CHECK(dev_same(g, dOrder, order, (size_t)S * 4) && dev_same(g, dPos, pos, (size_t)S * 4));
        float *x = randv(&r, S * C, 1), *dy = randv(&r, S * OC, 1), *o = ds_malloc((size_t)(S * OC) * 4);
        float *dxh = ds_malloc((size_t)(S * C) * 4);
        float *w[6], *dw[6], *gw[6], *gdw[6];
        for (int e = 0; e < E; e++) {
            w[e] = randv(&r, OC * C, 0.3f), dw[e] = randv(&r, OC * C, 0.1f);
            gw[e] = upf(w[e], OC * C), gdw[e] = upf(dw[e], OC * C);
        }
        float *dX = upf(x, S * C), *dDy = upf(dy, S * OC), *dO = nanbuf(S * OC), *dDx = nanbuf(S * C);
        /* FP32, BF16 and FP8 (one grouped call, or the operands quantized
         * once for all experts; the per-expert loop where cuBLAS refuses);
         * the input gradient written, then added to */
        const int precs[3] = {DS_PREC_FP32, DS_PREC_BF16, DS_PREC_FP8};
        for (int pi = 0; pi < 3; pi++) {
            struct ds_ops cb;
            DS_ASSERT(ds_backend_table(&cb, "cpu", precs[pi]) == 0);
            const struct ds_ops *gb = ds_cuda_table(precs[pi]);
            const char *what = pi == 0 ? "E=6 fp32" : pi == 1 ? "E=6 bf16" : "E=6 fp8";
            const double bound = pi == 2 ? 1e-6 : TOL;
            cb.grouped_linear_forward(&cb, o, x, (const float *const *)w, NULL, cnt, offs, E, C, OC);
            gb->grouped_linear_forward(gb, dO, dX, (const float *const *)gw, NULL, cnt, offs, E, C, OC);
            check_dev("grouped_linear_forward", what, dO, o, S * OC, bound);
            cb.grouped_linear_backward(&cb, dxh, dw, dy, x, (const float *const *)w, cnt, offs, E, C, OC, pi > 0);
            gb->grouped_linear_backward(gb, dDx, gdw, dDy, dX, (const float *const *)gw, cnt, offs, E, C, OC, pi > 0);
            check_dev("grouped_linear_backward dinp", what, dDx, dxh, S * C, bound);
            for (int e = 0; e < E; e++) check_dev("grouped_linear_backward dw", what, gdw[e], dw[e], OC * C, bound);
        }
        /* moe_permute_backward: dx (N, C) += the K slots' rows */
        float *px = randv(&r, N * C, 1), *dPx = upf(px, N * C);
        c->moe_permute_backward(px, x, pos, N, K, C);
        g->moe_permute_backward(dPx, dX, dPos, N, K, C);
        check_dev("moe_permute_backward", "N=37", dPx, px, N * C, TOL);
        for (int e = 0; e < E; e++) ds_cuda_free(gw[e]), ds_cuda_free(gdw[e]), free(w[e]), free(dw[e]);
        ds_cuda_free(dIdx), ds_cuda_free(dOrder), ds_cuda_free(dPos), ds_cuda_free(dCnt), ds_cuda_free(dOffs);
        ds_cuda_free(dX), ds_cuda_free(dDy), ds_cuda_free(dO), ds_cuda_free(dDx), ds_cuda_free(dPx);
        free(idx), free(order), free(pos), free(x), free(dy), free(o), free(dxh), free(px);
    }
    /* embedding from a BF16 table, casts, gather_rows, argmax: equal bits */
    {
        int64_t N = 11, C = 37, V = 19, n = V * C;
        float *f = randv(&r, n, 2);
        f[3] = NAN, f[4] = INFINITY;
        uint16_t *hb = ds_malloc((size_t)n * 2);
        c->cast_f32_bf16(hb, f, n);
        float *dF = upf(f, n);
        uint16_t *dB = g->alloc((size_t)n * 2);
        g->cast_f32_bf16(dB, dF, n);
        CHECK_MSG(dev_same(g, dB, hb, (size_t)n * 2), "cast_f32_bf16: not the CPU's bits");
        float *wide = ds_malloc((size_t)n * 4), *dW = nanbuf(n);
        c->cast_bf16_f32(wide, hb, n);
        g->cast_bf16_f32(dW, dB, n);
        CHECK(dev_same(g, dW, wide, (size_t)n * 4));
        int32_t ids[11];
        for (int i = 0; i < N; i++) ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)V);
        int32_t *dIds = upi(ids, N);
        float *o = ds_malloc((size_t)(N * C) * 4), *dO = nanbuf(N * C);
        c->embedding_bf16_forward(o, ids, hb, N, C);
        g->embedding_bf16_forward(dO, dIds, dB, N, C);
        CHECK(dev_same(g, dO, o, (size_t)(N * C) * 4));
        c->gather_rows(o, f, ids, N, C);
        g->gather_rows(dO, dF, ids, N, C); /* idx [host] */
        CHECK(dev_same(g, dO, o, (size_t)(N * C) * 4));
        /* argmax: ties (first wins), a NaN in a row, a NaN first */
        float *a = randv(&r, n, 1);
        a[C + 5] = a[C + 30] = 9.0f;
        a[2 * C + 1] = NAN;
        a[3 * C] = NAN;
        float *dA = upf(a, n);
        int32_t ac[19], ag[19];
        c->argmax_rows(ac, a, V, C);
        g->argmax_rows(ag, dA, V, C);
        CHECK_MSG(!memcmp(ac, ag, sizeof ac), "argmax_rows: row 1 %d vs cpu %d", ag[1], ac[1]);
        ds_cuda_free(dF), ds_cuda_free(dB), ds_cuda_free(dW), ds_cuda_free(dIds), ds_cuda_free(dO), ds_cuda_free(dA);
        free(f), free(hb), free(wide), free(o), free(a);
    }
    /* FP8 1x128 tiles: the CPU's codes and scales (C = 300: a partial last tile) */
    {
        int64_t R = 5, C = 300, KB = 3;
        float *x = randv(&r, R * C, 4);
        for (int64_t i = 0; i < C; i++) x[2 * C + i] = 0; /* an all-zero row: the floor */
        uint8_t *q = ds_malloc((size_t)(R * C));
        float *s = ds_malloc((size_t)(R * KB) * 4), *back = ds_malloc((size_t)(R * C) * 4);
        c->act_quant_1x128(q, s, x, R, C);
        c->act_dequant_1x128(back, q, s, R, C);
        float *dX = upf(x, R * C), *dS = nanbuf(R * KB), *dBack = nanbuf(R * C);
        uint8_t *dQ = g->alloc((size_t)(R * C));
        g->act_quant_1x128(dQ, dS, dX, R, C);
        CHECK_MSG(dev_same(g, dQ, q, (size_t)(R * C)), "act_quant_1x128: codes differ");
        check_dev("act_quant_1x128 scales", "5x300", dS, s, R * KB, 0);
        g->act_dequant_1x128(dBack, dQ, dS, R, C);
        check_dev("act_dequant_1x128", "5x300", dBack, back, R * C, 0);
        ds_cuda_free(dX), ds_cuda_free(dS), ds_cuda_free(dBack), ds_cuda_free(dQ);
        free(x), free(q), free(s), free(back);
    }
    /* MLA: backward of the K/V split; the latent cache append and absorbed attention */
    {
        int64_t N = 7, nh = 3, dn = 5, dv = 4, rkv = 6, dr = 4, dq = dn + dr;
        float *dk = randv(&r, N * nh * dq, 1), *dvv = randv(&r, N * nh * dv, 1);
        float *dkv = ds_malloc((size_t)(N * nh * (dn + dv)) * 4), *dkva = ds_malloc((size_t)(N * (rkv + dr)) * 4);
        c->mla_kv_assemble_backward(dkv, dkva, dk, dvv, N, nh, dn, dv, rkv, dr);
        float *gDk = upf(dk, N * nh * dq), *gDv = upf(dvv, N * nh * dv);
        float *gDkv = nanbuf(N * nh * (dn + dv)), *gDkva = nanbuf(N * (rkv + dr));
        g->mla_kv_assemble_backward(gDkv, gDkva, gDk, gDv, N, nh, dn, dv, rkv, dr);
        check_dev("mla_kv_assemble_backward dkv", "N=7", gDkv, dkv, N * nh * (dn + dv), 0);
        check_dev("mla_kv_assemble_backward dkva", "N=7", gDkva, dkva, N * (rkv + dr), TOL);
        /* decode: B = 2 sequences, 3 new positions at pos = 4 of Lmax = 9 */
        int64_t B = 2, n = 3, pos = 4, Lmax = 9, Nn = B * n;
        float *ckv = randv(&r, B * Lmax * rkv, 1), *kpe = randv(&r, B * Lmax * dr, 1);
        float *cc = randv(&r, Nn * rkv, 1), *kva = randv(&r, Nn * (rkv + dr), 1);
        float *gCkv = upf(ckv, B * Lmax * rkv), *gKpe = upf(kpe, B * Lmax * dr), *gC = upf(cc, Nn * rkv);
        float *gKva = upf(kva, Nn * (rkv + dr));
        c->kv_append(ckv, kpe, cc, kva, B, n, pos, Lmax, rkv, dr, NULL, NULL);
        g->kv_append(gCkv, gKpe, gC, gKva, B, n, pos, Lmax, rkv, dr, NULL, NULL);
        check_dev("kv_append ckv", "B=2", gCkv, ckv, B * Lmax * rkv, 0);
        check_dev("kv_append kpe", "B=2", gKpe, kpe, B * Lmax * dr, 0);
        float *q = randv(&r, Nn * nh * dq, 1), *kvb = randv(&r, nh * (dn + dv) * rkv, 0.5f);
        float *att = ds_malloc((size_t)(Nn * nh * dv) * 4);
        float *gQ = upf(q, Nn * nh * dq), *gKvb = upf(kvb, nh * (dn + dv) * rkv), *gAtt = nanbuf(Nn * nh * dv);
        c->mla_absorbed_attention(att, q, ckv, kpe, kvb, B, n, pos, Lmax, nh, dn, dv, dr, rkv, 0.3f, NULL, NULL);
        g->mla_absorbed_attention(gAtt, gQ, gCkv, gKpe, gKvb, B, n, pos, Lmax, nh, dn, dv, dr, rkv, 0.3f, NULL, NULL);
        check_dev("mla_absorbed_attention", "B=2 n=3 pos=4", gAtt, att, Nn * nh * dv, TOL);
        /* continuous batching: sequence b at its own position and cache row */
        const int64_t pb[2] = {1, 5}, rb[2] = {1, 0};
        c->kv_append(ckv, kpe, cc, kva, B, n, 0, Lmax, rkv, dr, pb, rb);
        g->kv_append(gCkv, gKpe, gC, gKva, B, n, 0, Lmax, rkv, dr, pb, rb);
        check_dev("kv_append pos_b/row_b", "B=2", gCkv, ckv, B * Lmax * rkv, 0);
        check_dev("kv_append pos_b/row_b kpe", "B=2", gKpe, kpe, B * Lmax * dr, 0);
        c->mla_absorbed_attention(att, q, ckv, kpe, kvb, B, n, 0, Lmax, nh, dn, dv, dr, rkv, 0.3f, pb, rb);
        g->mla_absorbed_attention(gAtt, gQ, gCkv, gKpe, gKvb, B, n, 0, Lmax, nh, dn, dv, dr, rkv, 0.3f, pb, rb);
        check_dev("mla_absorbed_attention pos_b/row_b", "B=2 n=3", gAtt, att, Nn * nh * dv, TOL);
        /* rope at per-sequence positions over q (B, n, nh, dq): the rope tail of each head */
        float *ct = randv(&r, 16 * (dr / 2), 1), *st = randv(&r, 16 * (dr / 2), 1);
        float *gCt = upf(ct, 16 * (dr / 2)), *gSt = upf(st, 16 * (dr / 2));
        c->rope_pos_forward(q, ct, st, pb, B, n, nh, dq, dn, dr, 0);
        g->rope_pos_forward(gQ, gCt, gSt, pb, B, n, nh, dq, dn, dr, 0);
        check_dev("rope_pos_forward", "B=2 n=3", gQ, q, Nn * nh * dq, TOL);
        ds_cuda_free(gCt), ds_cuda_free(gSt), free(ct), free(st);
        ds_cuda_free(gDk), ds_cuda_free(gDv), ds_cuda_free(gDkv), ds_cuda_free(gDkva), ds_cuda_free(gCkv);
        ds_cuda_free(gKpe), ds_cuda_free(gC), ds_cuda_free(gKva), ds_cuda_free(gQ), ds_cuda_free(gKvb), ds_cuda_free(gAtt);
        free(dk), free(dvv), free(dkv), free(dkva), free(ckv), free(kpe), free(cc), free(kva), free(q), free(kvb), free(att);
    }
    /* sampling: top-k / top-p distribution and the pick */
    {
        int64_t V = 50;
        float *lg = randv(&r, V, 2), *pc = ds_malloc((size_t)V * 4);
        int32_t *sc = ds_malloc((size_t)V * 4);
        c->sample_probs(pc, sc, lg, V, 0.8, 10, 0.9);
        float *gL = upf(lg, V), *gP = nanbuf(V);
        int32_t *gS = g->alloc((size_t)V * 4);
        g->sample_probs(gP, gS, gL, V, 0.8, 10, 0.9);
        check_dev("sample_probs", "V=50", gP, pc, V, 0);
        CHECK(g->sample_pick(gP, V, 0.37) == c->sample_pick(pc, V, 0.37));
        /* min-p on that distribution (one block over V), then the penalties at distinct host ids */
        c->probs_min_p(pc, V, 0.3);
        g->probs_min_p(gP, V, 0.3);
        check_dev("probs_min_p", "V=50", gP, pc, V, TOL);
        const int32_t ids[5] = {49, 0, 17, 3, 8};
        const float pre[5] = {1, 0, -100, 0.5f, 0}, rep[5] = {1.3f, 1, 2, 1.3f, 0.5f}, post[5] = {0, -0.4f, 0, -1.2f, 0.25f};
        c->logits_adjust(lg, V, ids, pre, rep, post, 5);
        g->logits_adjust(gL, V, ids, pre, rep, post, 5);
        check_dev("logits_adjust", "V=50 n=5", gL, lg, V, 0);
        ds_cuda_free(gL), ds_cuda_free(gP), ds_cuda_free(gS), free(lg), free(pc), free(sc);
    }
    /* balance losses of one sequence */
    {
        int64_t T = 9, E = 8, K = 2;
        float *sc = randv(&r, T * E, 1), *ds = randv(&r, T * E, 0.1f), *coef = ds_malloc((size_t)E * 4);
        for (int64_t i = 0; i < T * E; i++) sc[i] = fabsf(sc[i]);
        int32_t idx[18];
        for (int64_t t = 0; t < T; t++) idx[2 * t] = (int32_t)(t % E), idx[2 * t + 1] = (int32_t)((t + 3) % E);
        uint8_t *sel = ds_malloc((size_t)(T * E));
        float *gSc = upf(sc, T * E), *gDs = upf(ds, T * E), *gCoef = nanbuf(E);
        int32_t *gIdx = upi(idx, T * K);
        uint8_t *gSel = g->alloc((size_t)(T * E));
        ds_balance_terms tc, tg;
        c->balance_loss(ds, coef, sel, sc, idx, T, E, K, 4, 2, 1, 0.003, 0.05, 0.02, 0.5, &tc);
        g->balance_loss(gDs, gCoef, gSel, gSc, gIdx, T, E, K, 4, 2, 1, 0.003, 0.05, 0.02, 0.5, &tg);
        check_dev("balance_loss dscores", "T=9 E=8", gDs, ds, T * E, TOL);
        CHECK(close_rel(tg.expert, tc.expert, 1e-12) && close_rel(tg.device, tc.device, 1e-12) &&
              close_rel(tg.comm, tc.comm, 1e-12));
        ds_cuda_free(gSc), ds_cuda_free(gDs), ds_cuda_free(gCoef), ds_cuda_free(gIdx), ds_cuda_free(gSel);
        free(sc), free(ds), free(coef), free(sel);
    }
    /* token_logprobs: log-softmax at the target in double, greedy flag (a tie: first maximum) */
    {
        int64_t N = 6, V = 77;
        float *x = randv(&r, N * V, 3);
        x[2 * V + 10] = x[2 * V + 40] = 20.0f;
        int32_t tg[6] = {0, 76, 40, 10, 33, 5};
        float lc[6], lg[6];
        uint8_t gc[6], gg[6];
        c->token_logprobs(lc, gc, x, tg, N, V);
        float *gX = upf(x, N * V);
        g->token_logprobs(lg, gg, gX, tg, N, V);
        CHECK_MSG(nmse(lg, lc, N) <= TOL && !memcmp(gc, gg, sizeof gc), "token_logprobs: nmse %.3g, greedy %d%d%d vs %d%d%d",
                  nmse(lg, lc, N), gg[0], gg[2], gg[3], gc[0], gc[2], gc[3]);
        ds_cuda_free(gX), free(x);
    }
    CHECK(g->linear_workspace(64, 128, 256) == 0);
}

/* The entries that order, count and choose (select.cu) on shapes that cross
 * the kernels' tiles and chunks, against the CPU table (the scalar order of
 * backend/cpu/: counting sort, balance loops, qsort + softmax, cumulative draw). */

TEST(cuda_ops_select) {
    NEED_GPU();
    const struct ds_ops *g = ds_cuda_table(DS_PREC_FP32), *c = &ds_ops_cpu;
    ds_rng r;
    ds_rng_seed(&r, 33);
    /* moe_sort: skewed routing over 8 tiles (E = 20), and more experts than threads (E = 300) */
    for (int v = 0; v < 2; v++) {
        int64_t N = v ? 50 : 300, K = v ? 8 : 6, E = v ? 300 : 20, S = N * K;
        int32_t *idx = ds_malloc((size_t)S * 4), *order = ds_malloc((size_t)S * 4), *pos = ds_malloc((size_t)S * 4);
        for (int64_t t = 0; t < N; t++)
            for (int64_t k = 0; k < K; k++) /* distinct per token; expert 3 and its neighbours favoured */
                idx[t * K + k] = (int32_t)((k == 0 && t % 3 ? 3 : (int64_t)ds_rng_below(&r, 5) + 7 * k + t % 2) % E);
        int64_t *cnt = ds_malloc((size_t)E * 8), *offs = ds_malloc((size_t)(E + 1) * 8);
        c->moe_sort(cnt, offs, order, pos, idx, N, K, E);
        int32_t *dIdx = upi(idx, S), *dOrder = g->alloc((size_t)S * 4), *dPos = g->alloc((size_t)S * 4);
        int64_t *dCnt = g->alloc((size_t)E * 8), *dOffs = g->alloc((size_t)(E + 1) * 8);
        g->moe_sort(dCnt, dOffs, dOrder, dPos, dIdx, N, K, E);
        CHECK_MSG(dev_same(g, dCnt, cnt, (size_t)E * 8) && dev_same(g, dOffs, offs, (size_t)(E + 1) * 8),
                  "moe_sort E=%lld: counts/offsets differ", (long long)E);
        CHECK_MSG(dev_same(g, dOrder, order, (size_t)S * 4) && dev_same(g, dPos, pos, (size_t)S * 4),
                  "moe_sort E=%lld: order/pos differ", (long long)E);
        g->free(dIdx), g->free(dOrder), g->free(dPos), g->free(dCnt), g->free(dOffs);
        free(idx), free(order), free(pos), free(cnt), free(offs);
    }
    /* balance_loss: T over several blocks, sigmoid (normalized) and softmax scores */
    for (int nz = 0; nz <= 1; nz++) {
        int64_t T = 300, E = 16, K = 3, G = 4, M = 2;
        float *sc = randv(&r, T * E, 1), *ds = randv(&r, T * E, 0.1f), *coef = ds_malloc((size_t)E * 4);
        for (int64_t i = 0; i < T * E; i++) sc[i] = fabsf(sc[i]) + 0.01f;
        int32_t *idx = ds_malloc((size_t)(T * K) * 4);
        for (int64_t t = 0; t < T; t++)
            for (int64_t k = 0; k < K; k++) idx[t * K + k] = (int32_t)((t * 7 + k * 5 + (t % 4 == 0 ? 0 : k)) % E);
        uint8_t *sel = ds_malloc((size_t)(T * E));
        float *gSc = upf(sc, T * E), *gDs = upf(ds, T * E), *gCoef = nanbuf(E);
        int32_t *gIdx = upi(idx, T * K);
        uint8_t *gSel = g->alloc((size_t)(T * E));
        g->memset(gSel, 0x77, (size_t)(T * E));
        ds_balance_terms tc, tg;
        c->balance_loss(ds, coef, sel, sc, idx, T, E, K, G, M, nz, 0.003, 0.05, 0.02, 0.25, &tc);
        g->balance_loss(gDs, gCoef, gSel, gSc, gIdx, T, E, K, G, M, nz, 0.003, 0.05, 0.02, 0.25, &tg);
        check_dev("balance_loss dscores", nz ? "T=300 normalized" : "T=300", gDs, ds, T * E, TOL);
        check_dev("balance_loss coef", "E=16", gCoef, coef, E, TOL);
        CHECK_MSG(dev_same(g, gSel, sel, (size_t)(T * E)), "balance_loss sel differs");
        CHECK_MSG(close_rel(tg.expert, tc.expert, 1e-12) && close_rel(tg.device, tc.device, 1e-12) &&
                      close_rel(tg.comm, tc.comm, 1e-12),
                  "balance_loss terms %.17g %.17g %.17g vs cpu %.17g %.17g %.17g", tg.expert, tg.device, tg.comm,
                  tc.expert, tc.device, tc.comm);
        g->free(gSc), g->free(gDs), g->free(gCoef), g->free(gIdx), g->free(gSel);
        free(sc), free(ds), free(coef), free(idx), free(sel);
    }
    /* sample_probs over a vocabulary of 3001 (chunks of 12 per thread), with ties
     * (equal logits, −0 and +0): the same sorted ids, kept set and values; sample_pick */
    {
        const int64_t V = 3001;
        float *lg = randv(&r, V, 2), *pc = ds_malloc((size_t)V * 4), *pg = ds_malloc((size_t)V * 4);
        lg[17] = lg[2000] = lg[2999] = 5.5f; /* a tie at the top */
        lg[40] = lg[41] = 4.25f;
        lg[700] = 0.0f, lg[12] = -0.0f;
        int32_t *sc = ds_malloc((size_t)V * 4), *sg = ds_malloc((size_t)V * 4);
        float *gL = upf(lg, V), *gP = nanbuf(V);
        int32_t *gS = g->alloc((size_t)V * 4);
        const struct { double t; int64_t k; double p; } cs[] = {
            {0, 0, 1}, {0.7, 0, 1}, {0.8, 40, 1}, {1.0, 0, 0.9}, {0.6, 25, 0.8}, {1.3, 3001, 0.5}, {2.0, 1, 1}};
        const double us[] = {0, 1e-3, 0.37, 0.5, 0.93, 0.999999};
        for (size_t q = 0; q < sizeof cs / sizeof cs[0]; q++) {
            c->sample_probs(pc, sc, lg, V, cs[q].t, cs[q].k, cs[q].p);
            g->sample_probs(gP, gS, gL, V, cs[q].t, cs[q].k, cs[q].p);
            g->copy_d2h(pg, gP, (size_t)V * 4);
            int64_t kept_c = 0, kept_g = 0, same_set = 1;
            for (int64_t i = 0; i < V; i++) {
                kept_c += pc[i] > 0, kept_g += pg[i] > 0;
                same_set &= (pc[i] > 0) == (pg[i] > 0);
            }
            CHECK_MSG(same_set, "sample_probs T=%g k=%lld p=%g: kept %lld vs cpu %lld", cs[q].t, (long long)cs[q].k,
                      cs[q].p, (long long)kept_g, (long long)kept_c);
            CHECK_MSG(nmse(pg, pc, V) <= TOL, "sample_probs T=%g k=%lld p=%g: nmse %.3g", cs[q].t, (long long)cs[q].k,
                      cs[q].p, nmse(pg, pc, V));
            if (cs[q].t > 0 && ((cs[q].k > 0 && cs[q].k < V) || cs[q].p < 1)) { /* the sorted ids: the CPU's order */
                g->copy_d2h(sg, gS, (size_t)V * 4);
                CHECK_MSG(!memcmp(sg, sc, (size_t)V * 4), "sample_probs T=%g: sorted ids differ (first %d vs %d)",
                          cs[q].t, sg[0], sc[0]);
            }
            for (size_t j = 0; j < sizeof us / sizeof us[0]; j++) {
                int32_t a = c->sample_pick(pc, V, us[j]), b = g->sample_pick(gP, V, us[j]);
                CHECK_MSG(a == b, "sample_pick T=%g u=%g: %d vs cpu %d", cs[q].t, us[j], b, a);
            }
        }
        /* the pick's fallbacks: no mass (argmax: 0), and u at the very end (the last kept token) */
        memset(pc, 0, (size_t)V * 4);
        g->copy_h2d(gP, pc, (size_t)V * 4);
        CHECK(g->sample_pick(gP, V, 0.5) == c->sample_pick(pc, V, 0.5));
        pc[2500] = 1e-30f, pc[9] = 1e-30f;
        g->copy_h2d(gP, pc, (size_t)V * 4);
        CHECK(g->sample_pick(gP, V, 0.9999999999) == c->sample_pick(pc, V, 0.9999999999));
        g->free(gL), g->free(gP), g->free(gS);
        free(lg), free(pc), free(pg), free(sc), free(sg);
    }
}

/* ---- whole models -------------------------------------------------------------------------- */
typedef struct {
    ds_model m;
    ds_acts a;
    ds_grads g;
    ds_bwd w;
    ds_loss_terms t;
    int32_t ids[90];
} run;

/* a tiny random model with non-uniform routing (as test_model.c's), B = 2, T <= 45, MTP on */
/* mem: the table whose memory holds the model (NULL: host) */
static void run_model_cfg(run *x, const char *preset, int64_t B, const struct ds_ops *ops, int64_t T,
                          const struct ds_ops *mem) {
    ds_config c;
    ds_preset(&c, preset);
    DS_ASSERT(B * T <= 90);
    c.initializer_range = 0.1;
    CHECK(ds_model_create_on(&x->m, &c, NULL, mem) == 0);
    ds_model_init_random(&x->m, 11);
    ds_rng r;
    ds_rng_seed(&r, 5);
    float bias[64];
    DS_ASSERT(c.n_routed_experts <= 64);
    for (int64_t l = 0; l < x->m.nblocks; l++)
        if (x->m.blocks[l].router_bias) {
            for (int64_t e = 0; e < c.n_routed_experts; e++) bias[e] = 0.05f * (float)ds_rng_uniform(&r);
            if (mem) mem->copy_h2d(x->m.blocks[l].router_bias, bias, (size_t)c.n_routed_experts * sizeof(float));
            else memcpy(x->m.blocks[l].router_bias, bias, (size_t)c.n_routed_experts * sizeof(float));
        }
    for (int i = 0; i < B * T; i++) x->ids[i] = (int32_t)ds_rng_below(&r, (uint64_t)c.vocab_size);
    CHECK(ds_acts_create(&x->a, &x->m, B, T, 1) == 0);
    CHECK(ds_grads_create(&x->g, &x->m) == 0);
    CHECK(ds_bwd_create(&x->w, &x->m, B, T) == 0);
    ds_loss_opts o = ds_loss_opts_default();
    CHECK(ds_model_forward(&x->m, &x->a, ops, x->ids) == 0);
    CHECK(ds_model_backward(&x->m, &x->a, ops, &x->g, &x->w, NULL, &o, &x->t) == 0);
}
static void run_model_on(run *x, const struct ds_ops *ops, int64_t T, const struct ds_ops *mem) {
    run_model_cfg(x, "tiny", 2, ops, T, mem);
}
static void run_model(run *x, const struct ds_ops *ops, int64_t T) { run_model_on(x, ops, T, NULL); }
static void run_free(run *x) {
    ds_bwd_free(&x->w);
    ds_grads_free(&x->g);
    ds_acts_free(&x->a);
    ds_model_free(&x->m);
}

/* "device" memory for the staging check: separate host memory, filled with NaN */
static void *fake_alloc(size_t n) {
    void *p = malloc(n);
    if (p) memset(p, 0xff, n);
    return p;
}
static void fake_free(void *p) { free(p); }
static void fake_copy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

/* No GPU needed: the staged table over the CPU kernels gives the CPU's bits on
 * a whole model, forward and backward (every operand's size and direction in
 * backend/staged.c is right, or NaN or stale data shows). */
TEST(cuda_staged_table_over_cpu_kernels) {
    ds_devmem mem = {fake_alloc, fake_free, fake_copy, fake_copy};
    ds_set_threads(1); /* concurrent calls: below */
    /* fp32 and fp8: the matmul and linear entries of two precision slots */
    for (int prec = DS_PREC_FP32; prec <= DS_PREC_FP8; prec += 2) {
        struct ds_ops cpu, staged;
        DS_ASSERT(ds_backend_table(&cpu, "cpu", prec) == 0);
        ds_staged_table(&staged, &cpu, prec, &mem);
        run a, b;
        run_model(&a, &cpu, 20);
        run_model(&b, &staged, 20);
        TEST_RETURN_IF_FAILED();
        int64_t nl = 2 * 20 * a.m.cfg.vocab_size;
        CHECK_MSG(!memcmp(a.a.logits, b.a.logits, (size_t)nl * 4), "prec %d: staged logits differ", prec);
        CHECK_MSG(!memcmp(a.g.g, b.g.g, (size_t)a.m.layout.total * 4), "prec %d: staged gradients differ (%.3g)", prec,
                  ds_test_max_rel(b.g.g, a.g.g, (size_t)a.m.layout.total, 1e-30));
        CHECK(a.t.loss == b.t.loss);
        run_free(&a), run_free(&b);
        ds_staged_release();
    }
}

/* The model calls entries from parallel expert loops: staged calls from four
 * threads at once (each its own operands) give each thread the CPU's result. */
TEST(cuda_staged_table_concurrent_calls) {
    ds_devmem mem = {fake_alloc, fake_free, fake_copy, fake_copy};
    struct ds_ops staged;
    ds_staged_table(&staged, &ds_ops_cpu, DS_PREC_FP32, &mem);
    enum { NT = 4, N = 64, C = 255, OC = 129, REP = 100 };
    ds_rng r;
    ds_rng_seed(&r, 9);
    float *x[NT], *w[NT], *y[NT], *ref[NT];
    for (int t = 0; t < NT; t++) {
        x[t] = randv(&r, N * C, 1), w[t] = randv(&r, OC * C, 1);
        y[t] = ds_malloc(N * OC * 4), ref[t] = ds_malloc(N * OC * 4);
        ds_matmul_forward_ref(ref[t], x[t], w[t], NULL, N, C, OC);
    }
    int bad = 0;
#pragma omp parallel for num_threads(NT) reduction(+ : bad)
    for (int t = 0; t < NT; t++)
        for (int k = 0; k < REP; k++) {
            memset(y[t], 0, N * OC * 4);
            staged.matmul_forward(y[t], x[t], w[t], NULL, N, C, OC);
            bad += ds_test_max_rel(y[t], ref[t], N * OC, 1e-30) > 1e-5;
        }
    CHECK_MSG(bad == 0, "%d of %d concurrent staged calls returned another call's result", bad, NT * REP);
    /* an entry the device table lacks is the CPU's (host operands under staging) */
    struct ds_ops partial = ds_ops_cpu, st2;
    partial.swiglu_forward = NULL;
    ds_staged_table(&st2, &partial, DS_PREC_FP32, &mem);
    CHECK(st2.swiglu_forward == ds_ops_cpu.swiglu_forward && st2.residual_forward != ds_ops_cpu.residual_forward);
    for (int t = 0; t < NT; t++) free(x[t]), free(w[t]), free(y[t]), free(ref[t]);
    ds_staged_release();
}

TEST(cuda_model_logits_grads_vs_cpu) {
    NEED_GPU();
    /* the CPU's BF16 and FP8 tables keep attention in FP32: so do the GPU's
     * here, so that the rest of the model is held to their bounds (the
     * tensor-core attention, the GPU's default, rounds q, k, v to BF16, which
     * alone moves `tiny`'s logits ~0.3 through routing flips; its own test is
     * cuda_ops_attention_bf16, and cuda_train_vs_cpu trains with it) */
    int tc = ds_cuda_attention_tc_set(0);
    for (int prec = DS_PREC_FP32; prec <= DS_PREC_FP8; prec++) {
        struct ds_ops cpu, gpu;
        DS_ASSERT(ds_backend_table(&cpu, "cpu", prec) == 0);
        CHECK(ds_backend_table(&gpu, "cuda", prec) == 0);
        TEST_RETURN_IF_FAILED();
        run a, b;
        run_model(&a, &cpu, 45);
        run_model(&b, &gpu, 45);
        TEST_RETURN_IF_FAILED();
        int64_t nl = 2 * 45 * a.m.cfg.vocab_size;
        double el = ds_test_max_rel(b.a.logits, a.a.logits, (size_t)nl, 1e-30);
        double eg = ds_test_max_rel(b.g.g, a.g.g, (size_t)a.m.layout.total, 1e-30);
        double ls = fabs(b.t.loss - a.t.loss) / fabs(a.t.loss);
        fprintf(stderr, "  prec %d: logits %.3g, gradients %.3g, loss %.3g relative to the CPU\n", prec, el, eg, ls);
        if (prec == DS_PREC_FP32) { /* cudamock: logits 1.3e-6, gradients 1.4e-6 */
            CHECK_MSG(el < 1e-5 && eg < 1e-4 && ls < 1e-5, "fp32: logits %.3g gradients %.3g loss %.3g", el, eg, ls);
        } else if (prec == DS_PREC_BF16) {
            /* the same roundings of the same inputs, sums in another order: the
             * inputs that land on the other side of a BF16 rounding move by a
             * step (2^-8); measured under tools/cudamock (double sums): logits
             * 3.6e-3, gradients 4.9e-3, loss 1.6e-5 */
            CHECK_MSG(el < 2e-2 && ls < 2.5e-4, "bf16: logits %.3g loss %.3g", el, ls);
        } else {
            /* FP8 (E4M3 steps of 6%): a code that flips moves its product by a
             * step; the loss stays within DeepSeek's 0.25%.  Measured under
             * cudamock: logits 5.1e-7, gradients 7.2e-4, loss 1.4e-8 (the experts one
             * cuBLASLt GEMM each); 5.1e-7, 2.3e-4, 2.8e-9 (the tensor-core kernel) */
            CHECK_MSG(el < 0.1 && ls < 2.5e-3, "fp8: logits %.3g loss %.3g", el, ls);
        }
        run_free(&a), run_free(&b);
    }
    ds_cuda_attention_tc_set(tc);
}

/* b (device-resident, its logits and gradients read back through mem) against
 * the CPU's a over `rows` token rows: logits within 1e-5 and every gradient
 * within 1e-4 (largest difference over the largest magnitude), the loss
 * within 1e-5 */
static void check_resident_fp32(const run *a, const run *b, const struct ds_ops *mem, int64_t rows, const char *what) {
    int64_t nl = rows * a->m.cfg.vocab_size, ng = a->m.layout.total;
    float *lg = ds_malloc((size_t)nl * sizeof(float)), *gg = ds_malloc((size_t)ng * sizeof(float));
    mem->copy_d2h(lg, b->a.logits, (size_t)nl * sizeof(float));
    mem->copy_d2h(gg, b->g.g, (size_t)ng * sizeof(float));
    double el = ds_test_max_rel(lg, a->a.logits, (size_t)nl, 1e-30), eg = ds_test_max_rel(gg, a->g.g, (size_t)ng, 1e-30);
    double ls = fabs(b->t.loss - a->t.loss) / fabs(a->t.loss);
    fprintf(stderr, "  %s: logits %.3g, gradients %.3g, loss %.3g relative to the CPU\n", what, el, eg, ls);
    CHECK_MSG(el < 1e-5 && eg < 1e-4 && ls < 1e-5, "%s: logits %.3g gradients %.3g loss %.3g", what, el, eg, ls);
    free(lg), free(gg);
}

/* The device-resident table (ds_backend_table_resident: the CUDA table itself,
 * host_visible 0): the model, arenas and gradients in device memory, FP32 —
 * logits and gradients (read back with copy_d2h) against the host model on
 * the CPU, the bounds of the staged check above. */
TEST(cuda_model_resident_vs_cpu) {
    NEED_GPU();
    struct ds_ops cpu, gpu;
    DS_ASSERT(ds_backend_table(&cpu, "cpu", DS_PREC_FP32) == 0);
    CHECK(ds_backend_table_resident(&gpu, "cuda", DS_PREC_FP32) == 0 && gpu.host_visible == 0);
    TEST_RETURN_IF_FAILED();
    const struct ds_ops *mem = ds_backend_get_resident("cuda");
    run a, b;
    run_model(&a, &cpu, 45);
    run_model_on(&b, &gpu, 45, mem);
    TEST_RETURN_IF_FAILED();
    check_resident_fp32(&a, &b, mem, 2 * 45, "resident fp32");
    run_free(&a), run_free(&b);
}

/* `dsv3 train --device cuda` against --device cpu on TinyShakespeare (or,
 * without the shared data, a generated corpus): FP32, 20 steps, equal losses
 * (1e-4); BF16 and FP8 on the GPU against the CPU's BF16 run, 150 steps,
 * test_train_fp8.c's runs and criterion over its three seeds (one run is
 * chaotic at the last bits: a single seed's FP8 run has been 0.31% off): the
 * seed means of the last 10 training losses within DeepSeek's 0.25%, of the
 * validation loss within 0.4%, each seed's validation loss within 1%. */
static int losses(const char *path, double *v, int cap, double *val) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    *val = NAN;
    while (fgets(line, sizeof line, f)) {
        char *p;
        if ((p = strstr(line, "\"val_loss\": "))) *val = atof(p + 12);
        else if ((p = strstr(line, "\"total_loss\": ")) && n < cap) v[n++] = atof(p + 14);
    }
    fclose(f);
    return n;
}

/* the `small` preset (104M parameters, 32 experts, MTP) device-resident in
 * FP32 against the CPU: one sequence of 80 tokens, logits and every gradient
 * (largest difference over the largest magnitude) within the issue's 1e-5 /
 * 1e-4, the loss within 1e-5 */
TEST(cuda_model_small_vs_cpu) {
    NEED_GPU();
    struct ds_ops cpu, gpu;
    DS_ASSERT(ds_backend_table(&cpu, "cpu", DS_PREC_FP32) == 0);
    CHECK(ds_backend_table_resident(&gpu, "cuda", DS_PREC_FP32) == 0);
    TEST_RETURN_IF_FAILED();
    const struct ds_ops *mem = ds_backend_get_resident("cuda");
    const int64_t T = 80;
    run a, b;
    run_model_cfg(&a, "small", 1, &cpu, T, NULL);
    run_model_cfg(&b, "small", 1, &gpu, T, mem);
    TEST_RETURN_IF_FAILED();
    check_resident_fp32(&a, &b, mem, T, "small fp32");
    run_free(&a), run_free(&b);
}

static const char *cli_bin(void) { return getenv("DSV3") ? getenv("DSV3") : "./dsv3"; }

TEST(cuda_train_vs_cpu) {
    NEED_GPU();
    const char *tmp = ds_test_tmpdir(), *bin = cli_bin();
    char out[8192];
    int rc = ds_test_prepare_corpus(out, sizeof out, 300000, 512, 6000, 0);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    /* run i of seed s: the CPU's and the GPU's FP32 (seed 7 only), then per
     * seed the CPU's BF16 and the GPU's BF16 and FP8, those three at once */
    const char *dev[5] = {"cpu", "cuda", "cpu", "cuda", "cuda"}, *prec[5] = {"fp32", "fp32", "bf16", "bf16", "fp8"};
    /* the BF16/FP8 runs at test_train_fp8.c's peak lr of 1e-3 (at train's
     * default 3e-3 a change of summation order alone moves a run 0.2-0.5%:
     * tools/parity_noise.sh) */
    const char *lr[5] = {"", "", "--lr 1e-3 --min-lr 1e-4", "--lr 1e-3 --min-lr 1e-4", "--lr 1e-3 --min-lr 1e-4"};
    const int steps[5] = {20, 20, 150, 150, 150}, seeds[3] = {7, 8, 9};
    double l[5][160], val[3][5], tail[5] = {0}, vmean[5] = {0}, worst_val = 0;
    for (int k = 0; k < 3; k++) {
        char cmd[5][1200];
        for (int i = k ? 2 : 0; i < 5; i++)
            snprintf(cmd[i], sizeof cmd[i],
                     "%s --threads 1 train --config tiny --data %s/data --out %s/run%d_%d --steps %d --batch 4 "
                     "--seq 64 --eval-every %d --eval-batches 0 --log-every 1 --precision %s --device %s --seed %d %s "
                     "> %s/log%d.txt 2>&1",
                     bin, tmp, tmp, i, seeds[k], steps[i], steps[i], prec[i], dev[i], seeds[k], lr[i], tmp, i);
        if (!k) {
            rc = ds_test_sh(out, sizeof out, "%s && %s || { tail -3 %s/log0.txt %s/log1.txt; exit 1; }", cmd[0], cmd[1],
                            tmp, tmp);
            CHECK_MSG(rc == 0, "fp32: %s", out);
            TEST_RETURN_IF_FAILED();
        }
        rc = ds_test_sh(out, sizeof out,
                        "%s & a=$!; %s & b=$!; %s & c=$!; wait $a && wait $b && wait $c || "
                        "{ tail -3 %s/log2.txt %s/log3.txt %s/log4.txt; exit 1; }",
                        cmd[2], cmd[3], cmd[4], tmp, tmp, tmp);
        CHECK_MSG(rc == 0, "seed %d: %s", seeds[k], out);
        TEST_RETURN_IF_FAILED();
        for (int i = k ? 2 : 0; i < 5; i++) {
            char path[600];
            snprintf(path, sizeof path, "%s/run%d_%d/train_log.jsonl", tmp, i, seeds[k]);
            int n = losses(path, l[i], 160, &val[k][i]);
            CHECK_MSG(n == steps[i] && isfinite(val[k][i]), "%s: %d losses, val loss %g", path, n, val[k][i]);
            TEST_RETURN_IF_FAILED();
        }
        if (!k) {
            double worst = 0;
            for (int s = 0; s < 20; s++) worst = fmax(worst, fabs(l[1][s] - l[0][s]) / l[0][s]);
            fprintf(stderr, "  fp32, 20 steps: worst loss difference %.3g\n", worst);
            CHECK(worst < 1e-4);
        }
        for (int i = 2; i < 5; i++) {
            for (int s = 140; s < 150; s++) tail[i] += l[i][s] / 30;
            vmean[i] += val[k][i] / 3;
        }
        for (int i = 3; i < 5; i++) worst_val = fmax(worst_val, fabs(val[k][i] - val[k][2]) / val[k][2]);
        fprintf(stderr, "  seed %d: val loss CPU bf16 %.5f, GPU bf16 %.5f, GPU fp8 %.5f\n", seeds[k], val[k][2],
                val[k][3], val[k][4]);
    }
    /* test_train_fp8.c's criterion: the seed means of the last-10 training
     * loss within DeepSeek's 0.25%, of the validation loss within 0.4%, each
     * seed's validation loss within 1% */
    for (int i = 3; i < 5; i++) {
        double gv = fabs(vmean[i] - vmean[2]) / vmean[2], gt = fabs(tail[i] - tail[2]) / tail[2];
        fprintf(stderr, "  %s on the GPU, seed means: val loss %.5f vs CPU bf16 %.5f (%.3f%%); last-10 train %.5f vs %.5f "
                        "(%.3f%%)\n", prec[i], vmean[i], vmean[2], 100 * gv, tail[i], tail[2], 100 * gt);
        CHECK(gv < 0.004 && gt < 0.0025);
    }
    fprintf(stderr, "  worst single-seed val loss gap %.3f%%\n", 100 * worst_val);
    CHECK(worst_val < 0.01);
}

/* `dsv3 generate --device cuda` (device-resident: weights and latent KV cache
 * in device memory) against --device cpu on the v3 fixture: greedy tokens
 * and MTP-speculative tokens equal (FP32 logits within ~1e-6 of the CPU's;
 * the fixture's greedy margins are far wider) */
TEST(cuda_generate_vs_cpu) {
    NEED_GPU();
    const char *bin = cli_bin();
    if (!ds_file_exists("tests/fixtures/model/v3/config.json")) SKIP("tests/fixtures/model/v3 absent");
    const char *modes[2] = {"", "--speculative mtp"};
    for (int i = 0; i < 2; i++) {
        char a[4096], b[4096];
        const char *cmd = "%s generate --model tests/fixtures/model/v3 --ids --prompt '204 147 0 183 4 106' "
                          "--max-new-tokens 12 --ignore-eos %s --device %s 2>/dev/null";
        int ra = ds_test_sh(a, sizeof a, cmd, bin, modes[i], "cpu");
        int rb = ds_test_sh(b, sizeof b, cmd, bin, modes[i], "cuda");
        CHECK_MSG(ra == 0 && rb == 0 && !strcmp(a, b), "generate %s: cpu (rc %d) '%s' vs cuda (rc %d) '%s'", modes[i],
                  ra, a, rb, b);
    }
}

/* ---- the CLI on the device-resident CUDA table ----------------------------------
 * test_device_resident.c's checks (there on the fakedev table, byte for byte)
 * with --device cuda against --device cpu: token ids, counts and all text
 * equal, real numbers within a relative 1e-4 or one unit of their last printed
 * digit (ds_test_same_up_to_reals), the GPU summing in its own order.
 * tools/cudamock/run.sh runs them with a dsv3 linked against the stand-ins
 * (cli_bin: $DSV3, as make test and the mock set it). */
/* bench-decode: serve's batching engine, its cache, logits and argmax on the
 * GPU; row 0's greedy tokens those of the CPU at batch 1 */
TEST(cuda_cli_bench_decode_vs_cpu) {
    NEED_GPU();
    const char *cmd = "%s --threads 1 bench-decode --config tiny --batch %d --prompt 9 --new 6 --device %s 2>/dev/null | "
                      "grep -o '\"row0_ids\": \\[[0-9, ]*\\]'";
    char a[4096], b[4096], c[4096];
    int ra = ds_test_sh(a, sizeof a, cmd, cli_bin(), 1, "cpu");
    int rb = ds_test_sh(b, sizeof b, cmd, cli_bin(), 1, "cuda");
    int rc = ds_test_sh(c, sizeof c, cmd, cli_bin(), 5, "cuda");
    CHECK_MSG(ra == 0 && rb == 0 && rc == 0 && strstr(a, "row0_ids") && !strcmp(a, b) && !strcmp(a, c),
              "bench-decode: cpu batch 1 (rc %d) %s; cuda batch 1 (rc %d) %s; cuda batch 5 (rc %d) %s", ra, a, rb, b, rc, c);
}

/* bench-train: weights, arenas, gradients and the AdamW moments (FP32, BF16)
 * in device memory; FP32 and BF16 GEMMs; the last of three steps' loss (BF16:
 * attention on the FP32 kernels, as the CPU's BF16 table has it) */
TEST(cuda_cli_bench_train_vs_cpu) {
    NEED_GPU();
    const char *extra[3] = {"", "--bf16-moments", "--precision bf16"};
    const double rtol[3] = {1e-4, 1e-4, 1e-3}; /* BF16: an operand near a rounding boundary may round the other way */
    for (int i = 0; i < 3; i++) {
        char a[4096], b[4096], why[256];
        const char *cmd = "%s --threads 1 bench-train --config tiny --random 2,16 --iters 2 %s --device %s 2>/dev/null | "
                          "grep -o '\"last_loss\": [0-9.]*'";
        int ra = ds_test_sh(a, sizeof a, cmd, cli_bin(), extra[i], "cpu");
        char bin[600];
        snprintf(bin, sizeof bin, "%s%s", i == 2 ? "DSV3_CUDA_ATTN=fp32 " : "", cli_bin());
        int rb = ds_test_sh(b, sizeof b, cmd, bin, extra[i], "cuda");
        CHECK_MSG(ra == 0 && rb == 0 && strstr(a, "last_loss") && ds_test_same_up_to_reals(a, b, rtol[i], why, sizeof why),
                  "bench-train %s: cpu (rc %d) %s vs cuda (rc %d) %s: %s", extra[i], ra, a, rb, b, why);
    }
}

/* eval: rolling and multiple-choice log-likelihoods (the logits through
 * copy_d2h) and greedy generation, the same table as the CPU's */
TEST(cuda_cli_eval_vs_cpu) {
    NEED_GPU();
    char a[8192], b[8192], why[256] = "";
    int ra = ds_test_eval_fixture(a, sizeof a, "cpu");
    if (ra == -1) SKIP("tests/fixtures/eval/model absent");
    int rb = ds_test_eval_fixture(b, sizeof b, "cuda");
    CHECK_MSG(ra == 0 && rb == 0 && strstr(a, "exact_match") && ds_test_same_up_to_reals(a, b, 1e-4, why, sizeof why),
              "eval: %s\ncpu (rc %d)\n%s\ncuda (rc %d)\n%s", why, ra, a, rb, b);
}

/* train (one process) on the GPU: validation, checkpoints (the moments
 * through the host), a resume and the closing samples; the log's losses,
 * learning rates and gradient norms those of the CPU's run, the samples'
 * tokens equal (the experts' loads and biases are left out: a token whose two
 * best scores tie within the summation's rounding may route either way) */
TEST(cuda_cli_train_resume_vs_cpu) {
    NEED_GPU();
    const char *tmp = ds_test_tmpdir();
    char out[8192];
    int rc = ds_test_prepare_corpus(out, sizeof out, 60000, 300, 300, 1);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    const char *dev[2] = {"cpu", "cuda"};
    char samples[2][4096], logs[2][16384], why[256] = "";
    for (int i = 0; i < 2; i++) {
        rc = ds_test_train_resume(out, sizeof out, dev[i]);
        CHECK_MSG(rc == 0, "train --device %s: %s", dev[i], out);
        snprintf(samples[i], sizeof samples[i], "%s", out);
        rc = ds_test_sh(logs[i], sizeof logs[i],
                        "grep -o '\"\\(step\\|loss\\|mtp_loss\\|total_loss\\|lr\\|grad_norm\\|val_loss\\|val_bpb\\)\": "
                        "[0-9.e+-]*' %s/run_%s/train_log.jsonl",
                        tmp, dev[i]);
        CHECK_MSG(rc == 0 && strstr(logs[i], "\"val_loss\""), "%s/run_%s/train_log.jsonl: %s", tmp, dev[i], logs[i]);
    }
    TEST_RETURN_IF_FAILED();
    CHECK_MSG(!strcmp(samples[0], samples[1]), "samples: cpu '%s' vs cuda '%s'", samples[0], samples[1]);
    CHECK_MSG(ds_test_same_up_to_reals(logs[0], logs[1], 1e-4, why, sizeof why), "train logs: %s\ncpu\n%s\ncuda\n%s", why,
              logs[0], logs[1]);
}
