/*
 * rmsnorm_backward.c — backward of y = w ⊙ x · rstd, rstd = 1/sqrt(mean(x²) + eps):
 *   g = w ⊙ dy,  dx = rstd · (g − x̂ · mean(g ⊙ x̂)),  dw += Σ_n dy ⊙ x̂,  x̂ = x·rstd.
 * Fast version: OpenMP over rows for dx; dw is reduced per thread into a
 * private row and then added in a fixed order (deterministic for a given
 * thread count).
 */
#include "kernels/backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static inline float row_rstd(const float *x, int64_t C, float eps) {
    float ss = 0;
    for (int64_t c = 0; c < C; c++) ss += x[c] * x[c];
    return 1.0f / sqrtf(ss / (float)C + eps);
}

void ds_rmsnorm_backward_ref(float *dinp, float *dweight, const float *dout, const float *inp,
                             const float *weight, const float *rstd, int64_t N, int64_t C, int64_t ld_din,
                             int64_t ld_dout, int64_t ld_in, float eps) {
    for (int64_t n = 0; n < N; n++) {
        const float *x = inp + n * ld_in, *dy = dout + n * ld_dout;
        double r = rstd ? rstd[n] : row_rstd(x, C, eps);
        double dot = 0;
        for (int64_t c = 0; c < C; c++) dot += (double)weight[c] * dy[c] * x[c] * r;
        dot /= (double)C;
        for (int64_t c = 0; c < C; c++) {
            double xh = x[c] * r;
            if (dinp) dinp[n * ld_din + c] += (float)(r * ((double)weight[c] * dy[c] - xh * dot));
            if (dweight) dweight[c] += (float)(dy[c] * xh);
        }
    }
}

void ds_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                         const float *rstd, int64_t N, int64_t C, int64_t ld_din, int64_t ld_dout, int64_t ld_in,
                         float eps) {
    int nt = 1;
#ifdef _OPENMP
    if (N * C > 16384) nt = omp_get_max_threads();
#endif
    float *part = dweight ? ds_calloc((size_t)nt * (size_t)C, sizeof(float)) : NULL;
#pragma omp parallel num_threads(nt)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *dw = part ? part + (size_t)tid * (size_t)C : NULL;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + n * ld_in, *dy = dout + n * ld_dout;
            float r = rstd ? rstd[n] : row_rstd(x, C, eps);
            float dot = 0;
            for (int64_t c = 0; c < C; c++) dot += weight[c] * dy[c] * x[c];
            dot *= r / (float)C;
            float *dx = dinp ? dinp + n * ld_din : NULL;
            if (dx)
                for (int64_t c = 0; c < C; c++) dx[c] += r * (weight[c] * dy[c] - x[c] * r * dot);
            if (dw)
                for (int64_t c = 0; c < C; c++) dw[c] += dy[c] * x[c] * r;
        }
    }
    if (dweight) {
        for (int t = 0; t < nt; t++)
            for (int64_t c = 0; c < C; c++) dweight[c] += part[(size_t)t * (size_t)C + c];
        free(part);
    }
}
