/*
 * kernels.c — in-process A/B timings of CPU kernels (bench/bench_kernels.sh):
 * each pair (before, after) runs alternately in the same process, best of
 * REPS, so a busy machine slows both alike and the ratio stays meaningful.
 *   attention forward / backward: the per-row / per-pair kernels dsv3 had
 *     (bench/attn_old.c) against the GEMM form (attention.c), per ISA path;
 *   cross-entropy row: libm expf/logf loop against the vector exp (vmath.h);
 *   GEMM on the small preset's shapes: OpenBLAS sgemm (FP32) against the
 *     blocked GEMM (BF16 and FP32 inputs) on its AVX-512 and AVX2 kernels;
 *   FP32 peak (FMA chains) and streaming bandwidth.
 * Prints one JSON object.   kernels [REPS]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/backward.h"
#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/gemm_blocked.h"
#include "num/dtype.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/peak.h"
#include "backend/cpu/vmath.h"
#include "base/base.h"

void old_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B,
                           int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
void old_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                            const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH,
                            int64_t DQ, int64_t DV, float scale);

static float *randn(ds_rng *r, int64_t n) {
    float *x = ds_malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) x[i] = ds_rng_normal(r);
    return x;
}

static int g_reps = 5;
typedef void (*thunk)(void *);
/* best seconds of a and b, run alternately */
static void ab(thunk a, thunk b, void *ctx, double *ta, double *tb) {
    *ta = *tb = 1e30;
    for (int r = 0; r < g_reps; r++) {
        double t0 = ds_now();
        a(ctx);
        double t1 = ds_now();
        b(ctx);
        double t2 = ds_now();
        if (t1 - t0 < *ta) *ta = t1 - t0;
        if (t2 - t1 < *tb) *tb = t2 - t1;
    }
}

typedef struct {
    int64_t B, T, NH, DQ, DV;
    float *q, *k, *v, *o, *lse, *dout, *dq, *dk, *dv;
} att;
static void af_old(void *c) { att *a = c; old_attention_forward(a->o, a->lse, a->q, a->k, a->v, a->B, a->T, a->NH, a->DQ, a->DV, 0.1f); }
static void af_new(void *c) { att *a = c; ds_attention_forward(a->o, a->lse, a->q, a->k, a->v, a->B, a->T, a->NH, a->DQ, a->DV, 0.1f); }
static void ab_old(void *c) {
    att *a = c;
    old_attention_backward(a->dq, a->dk, a->dv, a->dout, a->o, a->lse, a->q, a->k, a->v, a->B, a->T, a->NH, a->DQ, a->DV, 0.1f);
}
static void ab_new(void *c) {
    att *a = c;
    ds_attention_backward(a->dq, a->dk, a->dv, a->dout, a->o, a->lse, a->q, a->k, a->v, a->B, a->T, a->NH, a->DQ, a->DV, 0.1f);
}

typedef struct { int64_t N, V; float *z, *dz, *loss; int32_t *t; } cectx;
static void ce_old(void *c) {
    cectx *e = c;
    for (int64_t n = 0; n < e->N; n++) {
        const float *z = e->z + n * e->V;
        float *dz = e->dz + n * e->V, mx = -INFINITY, s = 0;
        for (int64_t v = 0; v < e->V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int64_t v = 0; v < e->V; v++) s += expf(z[v] - mx);
        float lse = mx + logf(s);
        e->loss[n] = lse - z[e->t[n]];
        for (int64_t v = 0; v < e->V; v++) dz[v] = expf(z[v] - lse);
    }
}
static void ce_new(void *c) {
    cectx *e = c;
    int64_t cnt;
    int nt = ds_threads();
    ds_set_threads(1); /* same single thread as the old loop */
    ds_cross_entropy(e->dz, e->loss, &cnt, e->z, e->t, e->N, e->V, -1, 1.0f);
    ds_set_threads(nt);
}

#ifdef DS_HAVE_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
#endif
typedef struct { int64_t M, N, K; float *a, *b, *c; uint16_t *ah, *bh; } gctx;
static void g_blas(void *p) {
    gctx *g = p;
#ifdef DS_HAVE_OPENBLAS
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->M, (int)g->N, (int)g->K, 1.0f, g->a, (int)g->K, g->b,
                (int)g->K, 0.0f, g->c, (int)g->N);
#else
    (void)g;
#endif
}
static void g_bf16(void *p) {
    gctx *g = p;
    ds_gemm_op_ a = {g->ah, DS_GEMM_BF16, 0, NULL, DS_QUANT_TENSOR}, b = {g->bh, DS_GEMM_BF16, 0, NULL, DS_QUANT_TENSOR};
    ds_gemm_blocked_(g->c, &a, &b, g->M, g->N, g->K, 0);
}
static void g_f32(void *p) {
    gctx *g = p;
    ds_gemm_op_ a = {g->a, DS_GEMM_F32, 0, NULL, DS_QUANT_TENSOR}, b = {g->b, DS_GEMM_F32, 0, NULL, DS_QUANT_TENSOR};
    ds_gemm_blocked_(g->c, &a, &b, g->M, g->N, g->K, 0);
}

int main(int argc, char **argv) {
    if (argc > 1) g_reps = atoi(argv[1]) > 0 ? atoi(argv[1]) : 5;
    ds_rng r;
    ds_rng_seed(&r, 1);
    int th = ds_threads();
    printf("{\"threads\": %d, \"isa\": \"%s\", \"avx512bf16\": %d", th, ds_cpu_isa_name(ds_cpu_isa()),
           ds_cpu_has_avx512bf16());
    printf(", \"fma_peak_gflops\": %.1f", ds_cpu_fma_peak_measure(th) / 1e9);
    if (ds_cpu_isa_max() >= DS_ISA_AVX512) {
        int p = ds_cpu_isa_set(DS_ISA_AVX2);
        printf(", \"fma_peak_avx2_gflops\": %.1f", ds_cpu_fma_peak_measure(th) / 1e9);
        ds_cpu_isa_set(p);
    }
    printf(", \"stream_gbps\": %.1f", ds_cpu_stream_bw(th, 64) / 1e9);
    /* attention at the small preset's head sizes */
    const int64_t shapes[][2] = {{1, 256}, {8, 512}};
    printf(", \"attention\": [");
    for (int s = 0; s < 2; s++) {
        att a = {shapes[s][0], shapes[s][1], 8, 96, 64};
        int64_t nq = a.B * a.T * a.NH * a.DQ, nv = a.B * a.T * a.NH * a.DV;
        a.q = randn(&r, nq), a.k = randn(&r, nq), a.v = randn(&r, nv), a.dout = randn(&r, nv);
        a.o = ds_malloc((size_t)nv * 4), a.lse = ds_malloc((size_t)(a.B * a.NH * a.T) * 4);
        a.dq = ds_malloc((size_t)nq * 4), a.dk = ds_malloc((size_t)nq * 4), a.dv = ds_malloc((size_t)nv * 4);
        double flops_f = 2.0 * a.B * a.NH * (a.T * (a.T + 1) / 2.0) * (a.DQ + a.DV); /* causal: half the pairs */
        for (int isa = ds_cpu_isa_max(); isa >= DS_ISA_AVX2; isa--) {
            int p = ds_cpu_isa_set(isa);
            double fo, fn, bo, bn;
            ab(af_old, af_new, &a, &fo, &fn);
            ab(ab_old, ab_new, &a, &bo, &bn);
            ds_cpu_isa_set(p);
            printf("%s{\"B\": %lld, \"T\": %lld, \"isa\": \"%s\", \"fwd_old_s\": %.6f, \"fwd_new_s\": %.6f, "
                   "\"fwd_speedup\": %.2f, \"fwd_new_gflops\": %.1f, \"bwd_old_s\": %.6f, \"bwd_new_s\": %.6f, "
                   "\"bwd_speedup\": %.2f, \"bwd_new_gflops\": %.1f}",
                   s || isa != ds_cpu_isa_max() ? ", " : "", (long long)a.B, (long long)a.T, ds_cpu_isa_name(isa), fo,
                   fn, fo / fn, flops_f / fn / 1e9, bo, bn, bo / bn, 2.5 * flops_f / bn / 1e9);
            fflush(stdout);
        }
        free(a.q), free(a.k), free(a.v), free(a.dout), free(a.o), free(a.lse), free(a.dq), free(a.dk), free(a.dv);
    }
    printf("]");
    /* cross-entropy over the small vocabulary, one thread */
    cectx e = {64, 32000};
    e.z = randn(&r, e.N * e.V), e.dz = ds_malloc((size_t)(e.N * e.V) * 4), e.loss = ds_malloc((size_t)e.N * 4);
    e.t = ds_malloc((size_t)e.N * 4);
    for (int64_t n = 0; n < e.N; n++) e.t[n] = (int32_t)(n * 97 % e.V);
    double co, cn;
    ab(ce_old, ce_new, &e, &co, &cn);
    printf(", \"cross_entropy\": {\"N\": 64, \"V\": 32000, \"libm_s\": %.6f, \"vmath_s\": %.6f, \"speedup\": %.2f}", co,
           cn, co / cn);
    /* GEMMs: OpenBLAS sgemm vs the blocked kernels (the same threads: OpenBLAS
     * gets them through its own pool, the blocked driver through OpenMP) */
#ifdef DS_HAVE_OPENBLAS
    openblas_set_num_threads(th);
#endif
    const int64_t gs[][3] = {{512, 1536, 512}, {512, 512, 1536}, {512, 512, 512}, {512, 256, 512}, {512, 32000, 512}};
    printf(", \"gemm\": [");
    for (int s = 0; s < 5; s++) {
        gctx g = {gs[s][0], gs[s][1], gs[s][2]};
        g.a = randn(&r, g.M * g.K), g.b = randn(&r, g.N * g.K), g.c = ds_malloc((size_t)(g.M * g.N) * 4);
        g.ah = ds_malloc((size_t)(g.M * g.K) * 2), g.bh = ds_malloc((size_t)(g.N * g.K) * 2);
        for (int64_t i = 0; i < g.M * g.K; i++) g.ah[i] = ds_f32_to_bf16(g.a[i]);
        for (int64_t i = 0; i < g.N * g.K; i++) g.bh[i] = ds_f32_to_bf16(g.b[i]);
        double fl = 2.0 * g.M * g.N * g.K, tb, t16, t16b, t32, t32b;
        printf("%s{\"M\": %lld, \"N\": %lld, \"K\": %lld", s ? ", " : "", (long long)g.M, (long long)g.N, (long long)g.K);
        double best_blas = 1e30;
        /* BF16: vdpbf16ps (AVX512_BF16), then the FP32 kernels on decoded BF16; FP32 blocked */
        for (int isa = ds_cpu_isa_max(), bf = 1; isa >= DS_ISA_AVX2; bf ? (void)(bf = 0) : (void)(isa--, bf = 1)) {
            int p = ds_cpu_isa_set(isa), pb = ds_cpu_bf16_set(bf);
            if (bf && !ds_cpu_has_avx512bf16()) {
                ds_cpu_bf16_set(pb), ds_cpu_isa_set(p);
                continue;
            }
            const char *nm = bf ? "avx512bf16" : isa == DS_ISA_AVX512 ? "avx512" : "avx2";
            ab(g_blas, g_bf16, &g, &tb, &t16);
            best_blas = tb < best_blas ? tb : best_blas;
            printf(", \"%s_bf16_gflops\": %.1f", nm, fl / t16 / 1e9);
            if (!bf) {
                ab(g_blas, g_f32, &g, &t32b, &t32);
                best_blas = t32b < best_blas ? t32b : best_blas;
                printf(", \"%s_f32_gflops\": %.1f", nm, fl / t32 / 1e9);
            }
            ds_cpu_bf16_set(pb), ds_cpu_isa_set(p);
        }
        (void)t16b;
        printf(", \"blas_fp32_gflops\": %.1f", fl / best_blas / 1e9);
        printf("}");
        fflush(stdout);
        free(g.a), free(g.b), free(g.c), free(g.ah), free(g.bh);
    }
    printf("]");
    printf("}\n");
    return 0;
}
