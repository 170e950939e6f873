/*
 * matmul_backward.c — backward of out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias:
 *   dinp = dout · weight        (N, C)
 *   dweight += doutᵀ · inp      (OC, C)
 *   dbias += Σ_n dout           (OC)
 * Fast path: OpenBLAS sgemm, cut into one slab per OpenMP thread (rows of
 * dinp, rows of dweight) with OpenBLAS single-threaded, as the forward does.
 * Without BLAS: OpenMP loops with contiguous inner loops the compiler
 * vectorises.  Reference: plain loops with double accumulators.
 */
#include "backend/cpu/matmul_bf16.h"
#include "backend/cpu/backward.h"
#include "backend/cpu/par.h"
#include "backend/cpu/smallm.h"

#include <string.h>
#ifdef DS_HAVE_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

void ds_matmul_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, int64_t N, int64_t C, int64_t OC, int acc) {
    if (dinp)
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                double s = acc ? dinp[n * C + c] : 0.0;
                for (int64_t o = 0; o < OC; o++) s += (double)dout[n * OC + o] * weight[o * C + c];
                dinp[n * C + c] = (float)s;
            }
    if (dweight)
        for (int64_t o = 0; o < OC; o++)
            for (int64_t c = 0; c < C; c++) {
                double s = 0;
                for (int64_t n = 0; n < N; n++) s += (double)dout[n * OC + o] * inp[n * C + c];
                dweight[o * C + c] += (float)s;
            }
    if (dbias)
        for (int64_t o = 0; o < OC; o++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += dout[n * OC + o];
            dbias[o] += (float)s;
        }
}

static int omp_in_parallel_safe(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return 0;
#endif
}

static int nthreads(int64_t work) {
#ifdef _OPENMP
    if (work < (1 << 15)) return 1;
    return omp_get_max_threads();
#else
    (void)work;
    return 1;
#endif
}

void ds_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, int64_t N, int64_t C, int64_t OC, int acc) {
    if (N <= 0) return;
    /* few rows (the routed experts of a small batch): the input gradient with
     * the weight read in place (smallm.c), the weight gradient below */
    if (dinp && ds_smallm_use(N, 1)) {
        ds_matmul_dinp_smallm(dinp, dout, weight, N, C, OC, acc);
        dinp = NULL;
        if (!dweight && !dbias) return;
    }
    int nt = nthreads(N * C * OC);
#ifdef _OPENMP
    if (omp_in_parallel()) nt = 1; /* called per expert from a parallel loop */
#endif
#ifdef DS_HAVE_OPENBLAS
    /* OpenBLAS single-threaded: we cut the work into slabs ourselves */
    if (!omp_in_parallel_safe() && openblas_get_num_threads() != 1) openblas_set_num_threads(1);
    if (nt == 1) { /* one thread (an expert's GEMMs in the MoE loop): no nested region to set up */
        if (dinp)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)OC, 1.0f, dout, (int)OC,
                        weight, (int)C, acc ? 1.0f : 0.0f, dinp, (int)C);
        if (dweight)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)C, (int)N, 1.0f, dout, (int)OC, inp,
                        (int)C, 1.0f, dweight, (int)C);
    } else {
        if (dinp) {
            /* dinp (N, C) = dout (N, OC) · weight (OC, C), cut as the forward
             * cuts its output (ds_par_slab): the LM head's input gradient
             * (256 x 512 over 32000) in column slabs packs half the weight a
             * thread, not all of it: 19.4 against 21.2 ms, 2 threads, alone;
             * within the noise in a whole step (docs/cpu.md) */
            int by_rows;
            const int64_t per = ds_par_slab(N, C, nt, &by_rows), len = by_rows ? N : C;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
            for (int s = 0; s < nt; s++) {
                int64_t a = s * per, n = len - a < per ? len - a : per;
                if (n <= 0) continue;
                if (by_rows)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)C, (int)OC, 1.0f,
                                dout + a * OC, (int)OC, weight, (int)C, acc ? 1.0f : 0.0f, dinp + a * C, (int)C);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)n, (int)OC, 1.0f, dout,
                                (int)OC, weight + a, (int)C, acc ? 1.0f : 0.0f, dinp + a, (int)C);
            }
        }
        if (dweight) {
            /* dweight (OC, C) += doutᵀ (OC, N) · inp (N, C): slabs of dweight rows */
            int64_t per = (OC + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
            for (int s = 0; s < nt; s++) {
                int64_t o0 = s * per, no = OC - o0 < per ? OC - o0 : per;
                if (no > 0)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)no, (int)C, (int)N, 1.0f, dout + o0,
                                (int)OC, inp, (int)C, 1.0f, dweight + o0 * C, (int)C);
            }
        }
    }
#else
    if (dinp) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t n = 0; n < N; n++) {
            float *d = dinp + n * C;
            if (!acc) memset(d, 0, (size_t)C * sizeof(float));
            for (int64_t o = 0; o < OC; o++) {
                float g = dout[n * OC + o];
                const float *w = weight + o * C;
                for (int64_t c = 0; c < C; c++) d[c] += g * w[c];
            }
        }
    }
    if (dweight) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t o = 0; o < OC; o++) {
            float *dw = dweight + o * C;
            for (int64_t n = 0; n < N; n++) {
                float g = dout[n * OC + o];
                const float *x = inp + n * C;
                for (int64_t c = 0; c < C; c++) dw[c] += g * x[c];
            }
        }
    }
#endif
    if (dbias) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t o = 0; o < OC; o++) {
            float s = 0;
            for (int64_t n = 0; n < N; n++) s += dout[n * OC + o];
            dbias[o] += s;
        }
    }
}
