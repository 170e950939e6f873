/*
 * smallm.c — FP32 linear forward and input gradient for few rows (17 to
 * DS_SMALLM_MAX_ROWS: the routed experts of a training step, ~32 rows each at
 * B=1 T=256), without packing the weight (smallm.h).
 *
 * A BLAS sgemm packs the whole weight on every call; with ~32 rows that costs
 * about as much as the multiply (the expert GEMMs ran at ~55% of the FMA peak
 * through OpenBLAS).  Here the weight is read in place:
 *   forward  outᵀ (OC, N) = W (OC, C) · xᵀ (C, N): 6 weight rows are broadcast
 *            element by element against xᵀ packed [C][N rounded to 16] (the
 *            only pack: N·C floats), 6 x 32 AVX-512 tiles;
 *   dinp     dinpᵀ (C, N) = Wᵀ (C, OC) · doutᵀ (OC, N): 6 adjacent columns of
 *            a weight row broadcast against doutᵀ packed the same way.
 * The CPU table uses them on the AVX-512 path only (ds_smallm_use); elsewhere
 * the tiles are plain C (correct, for tests and odd builds).  Each output
 * element is one FMA chain over the inner index in order, so the result does
 * not depend on the thread count or on the other rows.
 */
#include "backend/cpu/smallm.h"

#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/gemv.h"
#include "backend/cpu/par.h"
#include "backend/cpu/transpose8.h"
#include "base/base.h"
#ifdef DS_X86_SIMD
#include <immintrin.h>
#endif

enum { MR = 6, NW = 32 };

/* tile t[MR][NW] = Σ_k A(i, k) · B(k, j) for i < mr, j < nw (nw ≤ NW; rows
 * i ≥ mr and columns j ≥ nw are left unspecified); A(i, k) = a[i·lda + k·ak],
 * B(k, j) = b[k·ldb + j] */
static void tile_scalar(float t[MR][NW], const float *a, int64_t lda, int64_t ak, int mr, const float *b, int64_t ldb,
                        int nw, int64_t K) {
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nw; j++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++) s = fmaf(a[i * lda + k * ak], b[k * ldb + j], s);
            t[i][j] = s;
        }
}

#ifdef DS_X86_SIMD
DS_TARGET_AVX512 static void tile_avx512(float t[MR][NW], const float *a, int64_t lda, int64_t ak, int mr,
                                         const float *b, int64_t ldb, int nw, int64_t K) {
    int64_t o[MR]; /* A(i, k) = p[o[i]] with p = a + k·ak */
    for (int i = 0; i < MR; i++) o[i] = (i < mr ? i : 0) * lda;
    const float *p = a;
    const __mmask16 m0 = nw >= 16 ? 0xffff : (__mmask16)((1u << nw) - 1);
    const __mmask16 m1 = nw >= 32 ? 0xffff : nw <= 16 ? 0 : (__mmask16)((1u << (nw - 16)) - 1);
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    if (m1) {
#pragma GCC unroll 4
        for (int64_t k = 0; k < K; k++, p += ak) {
            const float *bk = b + k * ldb;
            __m512 b0 = _mm512_maskz_loadu_ps(m0, bk), b1 = _mm512_maskz_loadu_ps(m1, bk + 16), x;
            x = _mm512_set1_ps(p[o[0]]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
            x = _mm512_set1_ps(p[o[1]]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
            x = _mm512_set1_ps(p[o[2]]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
            x = _mm512_set1_ps(p[o[3]]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
            x = _mm512_set1_ps(p[o[4]]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
            x = _mm512_set1_ps(p[o[5]]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
        }
    } else {
#pragma GCC unroll 4
        for (int64_t k = 0; k < K; k++, p += ak) {
            __m512 b0 = _mm512_maskz_loadu_ps(m0, b + k * ldb);
            c00 = _mm512_fmadd_ps(_mm512_set1_ps(p[o[0]]), b0, c00);
            c10 = _mm512_fmadd_ps(_mm512_set1_ps(p[o[1]]), b0, c10);
            c20 = _mm512_fmadd_ps(_mm512_set1_ps(p[o[2]]), b0, c20);
            c30 = _mm512_fmadd_ps(_mm512_set1_ps(p[o[3]]), b0, c30);
            c40 = _mm512_fmadd_ps(_mm512_set1_ps(p[o[4]]), b0, c40);
            c50 = _mm512_fmadd_ps(_mm512_set1_ps(p[o[5]]), b0, c50);
        }
    }
    _mm512_storeu_ps(t[0], c00), _mm512_storeu_ps(t[0] + 16, c01);
    _mm512_storeu_ps(t[1], c10), _mm512_storeu_ps(t[1] + 16, c11);
    _mm512_storeu_ps(t[2], c20), _mm512_storeu_ps(t[2] + 16, c21);
    _mm512_storeu_ps(t[3], c30), _mm512_storeu_ps(t[3] + 16, c31);
    _mm512_storeu_ps(t[4], c40), _mm512_storeu_ps(t[4] + 16, c41);
    _mm512_storeu_ps(t[5], c50), _mm512_storeu_ps(t[5] + 16, c51);
}

#endif

static void tile(float t[MR][NW], const float *a, int64_t lda, int64_t ak, int mr, const float *b, int64_t ldb,
                 int nw, int64_t K) {
#ifdef DS_X86_SIMD
    const int isa = ds_cpu_isa();
    if (isa >= DS_ISA_AVX512) {
        tile_avx512(t, a, lda, ak, mr, b, ldb, nw, K);
        return;
    }
#endif
    tile_scalar(t, a, lda, ak, mr, b, ldb, nw, K);
}

/* per-thread scratch for xᵀ (doutᵀ) */
static _Thread_local void *xt_buf;
static _Thread_local size_t xt_cap;

static float *xt_scratch(size_t n) { return ds_scratch(&xt_buf, &xt_cap, n * sizeof(float)); }

#ifdef DS_X86_SIMD
/* xt[c·ld + n0 + j] = x[(n0 + j)·C + c0 + i] for the 8x8 block at (n0, c0);
 * rows n0 + j ≥ N read as zero */
DS_TARGET_AVX2 static void pack8x8(float *xt, int64_t ld, const float *x, int64_t N, int64_t C, int64_t n0,
                                   int64_t c0) {
    __m256 r[8];
    for (int j = 0; j < 8; j++) r[j] = n0 + j < N ? _mm256_loadu_ps(x + (n0 + j) * C + c0) : _mm256_setzero_ps();
    ds_transpose8x8_store(xt + c0 * ld + n0, ld, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
}
#endif

/* xt [C][ld] = xᵀ, zero in the columns N..ld-1 (ld: N rounded up to 16) */
static void pack_xt(float *xt, int64_t ld, const float *x, int64_t N, int64_t C) {
    int64_t c0 = 0;
#ifdef DS_X86_SIMD
    if (ds_cpu_isa() >= DS_ISA_AVX2)
        for (; c0 + 8 <= C; c0 += 8)
            for (int64_t n0 = 0; n0 < ld; n0 += 8) pack8x8(xt, ld, x, N, C, n0, c0);
#endif
    for (int64_t c = c0; c < C; c++) {
        float *row = xt + c * ld;
        for (int64_t n = 0; n < N; n++) row[n] = x[n * C + c];
        for (int64_t n = N; n < ld; n++) row[n] = 0;
    }
}

int ds_smallm_use(int64_t N, int dinp) {
    if (N <= DS_LINEAR_ROWWISE_MAX || N > (dinp ? DS_SMALLM_DINP_MAX_ROWS : DS_SMALLM_MAX_ROWS)) return 0;
#ifdef DS_X86_SIMD
    return ds_cpu_isa() >= DS_ISA_AVX512;
#else
    return 0;
#endif
}

/* out (N rows, row stride R) [+]= (A · Bᵀ)ᵀ + bias, where A has R rows,
 * A(r, k) = a[r·lda + k·ak], and bt = Bᵀ packed [K][ld] by pack_xt (B: the N
 * rows of the few-row operand): A's rows in blocks of MR (over the threads),
 * the N columns in panels of NW, each tile written back transposed */
static void product_t(float *out, int64_t R, const float *a, int64_t lda, int64_t ak, const float *bt, int64_t ld,
                      int64_t N, int64_t K, const float *bias, int acc) {
    const int64_t nrb = (R + MR - 1) / MR;
    const int nt = ds_par_threads_top(2.0 * N * K * R, DS_PAR_MIN_FLOPS);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t rb = 0; rb < nrb; rb++) {
        const int64_t r0 = rb * MR;
        const int mr = R - r0 < MR ? (int)(R - r0) : MR;
        _Alignas(64) float t[MR][NW];
        for (int64_t j0 = 0; j0 < N; j0 += NW) {
            const int nw = N - j0 < NW ? (int)(N - j0) : NW;
            if (K > 0) tile(t, a + r0 * lda, lda, ak, mr, bt + j0, ld, nw, K);
            else memset(t, 0, sizeof t);
            for (int j = 0; j < nw; j++) {
                float *o = out + (j0 + j) * R + r0;
                for (int i = 0; i < mr; i++) {
                    float v = acc ? o[i] + t[i][j] : t[i][j];
                    o[i] = bias ? v + bias[r0 + i] : v;
                }
            }
        }
    }
}

void ds_matmul_forward_smallm(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                              int64_t C, int64_t OC) {
    if (N <= 0 || OC <= 0) return;
    /* outᵀ (OC, N) = W (OC, C) · xᵀ (C, N): 6 weight rows broadcast per k */
    const int64_t ld = (N + 15) / 16 * 16;
    float *xt = xt_scratch((size_t)(C > 0 ? C : 1) * (size_t)ld);
    pack_xt(xt, ld, inp, N, C);
    product_t(out, OC, weight, C, 1, xt, ld, N, C, bias, 0);
}

void ds_matmul_dinp_smallm(float *dinp, const float *dout, const float *weight, int64_t N, int64_t C, int64_t OC,
                           int acc) {
    if (N <= 0 || C <= 0) return;
    /* dinpᵀ (C, N) = Wᵀ (C, OC) · doutᵀ (OC, N): 6 adjacent columns of a weight
     * row broadcast per k (one cache line), doutᵀ packed like xᵀ (W read in
     * place by 32-column panels at a row stride of C conflicted in L1) */
    const int64_t ld = (N + 15) / 16 * 16;
    float *dt = xt_scratch((size_t)(OC > 0 ? OC : 1) * (size_t)ld);
    pack_xt(dt, ld, dout, N, OC);
    product_t(dinp, C, weight, 1, C, dt, ld, N, OC, NULL, acc);
}
