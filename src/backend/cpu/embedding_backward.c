/*
 * embedding_backward.c — backward of the token embedding gather:
 * dwte[ids[n], :] += dout[n, :].  Fast version: OpenMP over column chunks
 * (every thread walks all tokens for its own columns: no two threads write
 * the same float, and rows are added in token order as in the reference).
 */
#include "backend/cpu/backward.h"

void ds_embedding_backward_ref(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C) {
    for (int64_t n = 0; n < BT; n++)
        for (int64_t c = 0; c < C; c++) dwte[(int64_t)ids[n] * C + c] += dout[n * C + c];
}

void ds_embedding_backward(float *dwte, const float *dout, const int32_t *ids, int64_t BT, int64_t C) {
    const int64_t CH = 64, nch = (C + CH - 1) / CH;
#pragma omp parallel for schedule(static) if (BT * C > 65536)
    for (int64_t ch = 0; ch < nch; ch++) {
        int64_t c0 = ch * CH, c1 = c0 + CH < C ? c0 + CH : C;
        for (int64_t n = 0; n < BT; n++) {
            float *dst = dwte + (int64_t)ids[n] * C;
            const float *src = dout + n * C;
            for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}
