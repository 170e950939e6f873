/*
 * gemm_fp8.c — block-scaled FP8 GEMM (promotion every 128 of K, through the
 * blocked driver of gemm_blocked.c) and the limited-accumulator emulation.
 */
#include "backend/cpu/gemm_fp8.h"
#include "backend/cpu/gemm_blocked.h"
#include "base/base.h"

#include <math.h>

const char *ds_fp8_gemm_isa(void) { return ds_gemm_isa_(); }

static int to_op(ds_gemm_op_ *o, const ds_fp8_operand *f, const char *what) {
    if (f->fmt != DS_FP8_E4M3 && f->fmt != DS_FP8_E5M2) return ds_err("%s: unknown fp8 format %d", what, (int)f->fmt);
    if (!f->scale) return ds_err("%s: no scales", what);
    *o = (ds_gemm_op_){f->q, f->fmt == DS_FP8_E4M3 ? DS_GEMM_E4M3 : DS_GEMM_E5M2, f->trans ? 1 : 0, f->scale, f->gran};
    return ds_gemm_check_op_(what, o);
}

static int prepare(ds_gemm_op_ *a, ds_gemm_op_ *b, const ds_fp8_operand *A, const ds_fp8_operand *B,
                   int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *o) {
    if (M < 0 || N < 0 || K < 0)
        return ds_err("fp8 gemm: negative size (M=%lld, N=%lld, K=%lld)", (long long)M, (long long)N, (long long)K);
    if (o && o->acc != DS_FP8_ACC_PROMOTE && o->acc != DS_FP8_ACC_LIMITED)
        return ds_err("fp8 gemm: unknown accumulation mode %d", (int)o->acc);
    if (o && (o->acc_bits < 0 || o->acc_bits > 40 || o->acc_chunk < 0))
        return ds_err("fp8 gemm: acc_bits must be in 1..40 and acc_chunk positive");
    if (to_op(a, A, "fp8 gemm: A") || to_op(b, B, "fp8 gemm: B")) return -1;
    return 0;
}

/* One element of the limited accumulator: see gemm_fp8.h. */
static float limited_dot(const ds_gemm_op_ *A, const ds_gemm_op_ *B, int64_t m, int64_t n,
                         int64_t M, int64_t N, int64_t K, int bits, int chunk) {
    double acc = 0.0, t[256];
    for (int64_t k0 = 0; k0 < K; k0 += chunk) {
        int64_t nk = K - k0 < chunk ? K - k0 : chunk;
        double amax = fabs(acc);
        for (int64_t i = 0; i < nk; i++) {
            int64_t k = k0 + i, kb = k / DS_GEMM_KB;
            double s = (double)ds_gemm_op_scale_(A, m, kb, M, K) * ds_gemm_op_scale_(B, n, kb, N, K);
            t[i] = (double)ds_gemm_op_at_(A, m, k, M, K) * ds_gemm_op_at_(B, n, k, N, K) * s;
            if (fabs(t[i]) > amax) amax = fabs(t[i]);
        }
        if (!(amax > 0) || !isfinite(amax)) {
            if (!isfinite(amax)) acc = NAN;
            continue;
        }
        /* the largest addend has its leading bit at 2^e; keep bits down to 2^(e-bits+1) */
        double q = ldexp(1.0, ilogb(amax) - bits + 1);
        double sum = trunc(acc / q) * q;
        for (int64_t i = 0; i < nk; i++) sum += trunc(t[i] / q) * q;   /* exact: few bits */
        acc = sum;
    }
    return (float)acc;
}

static void limited_gemm(float *C, const ds_gemm_op_ *A, const ds_gemm_op_ *B,
                         int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *o) {
    int bits = o->acc_bits ? o->acc_bits : 14, chunk = o->acc_chunk ? o->acc_chunk : 32;
    if (chunk > 256) chunk = 256;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float v = limited_dot(A, B, m, n, M, N, K, bits, chunk);
            C[m * N + n] = o->accumulate ? C[m * N + n] + v : v;
        }
}

static int run(float *C, const ds_fp8_operand *A, const ds_fp8_operand *B, int64_t M, int64_t N,
               int64_t K, const ds_fp8_gemm_opts *o, int ref) {
    ds_gemm_op_ a, b;
    if (prepare(&a, &b, A, B, M, N, K, o)) return -1;
    ds_fp8_gemm_opts d = {0};
    if (!o) o = &d;
    if (o->acc == DS_FP8_ACC_LIMITED) limited_gemm(C, &a, &b, M, N, K, o);
    else if (ref) ds_gemm_blocked_ref_(C, &a, &b, M, N, K, o->accumulate);
    else ds_gemm_blocked_(C, &a, &b, M, N, K, o->accumulate);
    return 0;
}

int ds_fp8_gemm_ex(float *C, const ds_fp8_operand *A, const ds_fp8_operand *B,
                   int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts) {
    return run(C, A, B, M, N, K, opts, 0);
}
int ds_fp8_gemm_ex_ref(float *C, const ds_fp8_operand *A, const ds_fp8_operand *B,
                       int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts) {
    return run(C, A, B, M, N, K, opts, 1);
}

int ds_fp8_gemm(float *C, const uint8_t *A_q, const float *A_s, const uint8_t *B_q,
                const float *B_s, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts) {
    ds_fp8_operand A = {A_q, A_s, DS_QUANT_TILE_1x128, 0, DS_FP8_E4M3};
    ds_fp8_operand B = {B_q, B_s, DS_QUANT_BLOCK_128x128, 0, DS_FP8_E4M3};
    return run(C, &A, &B, M, N, K, opts, 0);
}
int ds_fp8_gemm_ref(float *C, const uint8_t *A_q, const float *A_s, const uint8_t *B_q,
                    const float *B_s, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts) {
    ds_fp8_operand A = {A_q, A_s, DS_QUANT_TILE_1x128, 0, DS_FP8_E4M3};
    ds_fp8_operand B = {B_q, B_s, DS_QUANT_BLOCK_128x128, 0, DS_FP8_E4M3};
    return run(C, &A, &B, M, N, K, opts, 1);
}

int ds_fp8_gemm_dgrad(float *dX, const uint8_t *dY_q, const float *dY_s, const uint8_t *W_q,
                      const float *W_s, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts) {
    /* output (M, K), inner N: A = dY stored (M, N); B rows are the K columns
     * of W, stored (N, K) = (inner, rows) */
    ds_fp8_operand A = {dY_q, dY_s, DS_QUANT_TILE_1x128, 0, DS_FP8_E4M3};
    ds_fp8_operand B = {W_q, W_s, DS_QUANT_BLOCK_128x128, 1, DS_FP8_E4M3};
    return run(dX, &A, &B, M, K, N, opts, 0);
}

int ds_fp8_gemm_wgrad(float *dW, const uint8_t *dY_q, const float *dY_s, const uint8_t *X_q,
                      const float *X_s, int64_t M, int64_t N, int64_t K, const ds_fp8_gemm_opts *opts) {
    /* output (N, K), inner M: A = dY^T, B = X^T, both stored (M, rows) */
    ds_fp8_operand A = {dY_q, dY_s, DS_QUANT_TILE_128x1, 1, DS_FP8_E4M3};
    ds_fp8_operand B = {X_q, X_s, DS_QUANT_TILE_128x1, 1, DS_FP8_E4M3};
    return run(dW, &A, &B, N, K, M, opts, 0);
}
