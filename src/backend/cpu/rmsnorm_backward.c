/*
 * rmsnorm_backward.c — backward of y = w ⊙ x · rstd, rstd = 1/sqrt(mean(x²) + eps):
 *   g = w ⊙ dy,  dx = rstd · (g − x̂ · mean(g ⊙ x̂)),  dw += Σ_n dy ⊙ x̂,  x̂ = x·rstd.
 * Fast version: OpenMP over rows for dx, then over column chunks for dw
 * (no scratch memory; deterministic).  With rstd NULL the second pass
 * recomputes each row's rstd per chunk (O(N·C·chunks): meant for small
 * tensors; the model passes saved or precomputed rstd on its hot paths).
 */
#include "backend/cpu/backward.h"

#include <math.h>

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
    const int par = N * C > 16384;
    /* pass 1, rows: dx */
    if (dinp) {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t n = 0; n < N; n++) {
            const float *x = inp + n * ld_in, *dy = dout + n * ld_dout;
            float r = rstd ? rstd[n] : row_rstd(x, C, eps);
            float dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < C; c++) dot += weight[c] * dy[c] * x[c];
            dot *= r / (float)C;
            float *dx = dinp + n * ld_din;
            for (int64_t c = 0; c < C; c++) dx[c] += r * (weight[c] * dy[c] - x[c] * r * dot);
        }
    }
    /* pass 2, column chunks: dw (each thread owns its columns; rows summed in
     * order, so the result does not depend on the thread count) */
    if (dweight) {
        const int64_t CH = 32, nch = (C + CH - 1) / CH;
#pragma omp parallel for schedule(static) if (par)
        for (int64_t ch = 0; ch < nch; ch++) {
            int64_t c0 = ch * CH, c1 = c0 + CH < C ? c0 + CH : C;
            float acc[32] = {0};
            for (int64_t n = 0; n < N; n++) {
                const float *x = inp + n * ld_in, *dy = dout + n * ld_dout;
                float r = rstd ? rstd[n] : row_rstd(x, C, eps);
                for (int64_t c = c0; c < c1; c++) acc[c - c0] += dy[c] * x[c] * r;
            }
            for (int64_t c = c0; c < c1; c++) dweight[c] += acc[c - c0];
        }
    }
}
