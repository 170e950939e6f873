/*
 * embedding.c — token embedding gather.
 * out[n, :] = wte[ids[n], :] (no scaling, doc §2); ids are range-checked by
 * the caller (model.c) before the forward.
 */
#include "backend/cpu/kernels.h"

#include <string.h>

void ds_embedding_forward_ref(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C) {
    for (int64_t n = 0; n < BT; n++)
        for (int64_t c = 0; c < C; c++) out[n * C + c] = wte[(int64_t)ids[n] * C + c];
}

void ds_embedding_forward(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C) {
#pragma omp parallel for schedule(static) if (BT * C > 65536)
    for (int64_t n = 0; n < BT; n++) memcpy(out + n * C, wte + (int64_t)ids[n] * C, (size_t)C * sizeof(float));
}
