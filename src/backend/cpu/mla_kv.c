/*
 * mla_kv.c — the MLA K/V split (model.c, doc §4.2): each head's key is its
 * k_nope (from kv_b's output) followed by the k_pe shared by all heads (the
 * rotated tail of kv_a's output); its value is the rest of kv_b's output.
 * A scalar reference (`*_ref`, the oracle of tests/test_backend_ops.c) and an
 * OpenMP version over the tokens; both only copy, so they agree bit for bit.
 */
#include "backend/cpu/backward.h"

#include <string.h>

void ds_mla_kv_assemble_ref(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh,
                            int64_t dn, int64_t dv, int64_t rkv, int64_t dr) {
    const int64_t dq = dn + dr;
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < nh; h++) {
            const float *src = kv + (n * nh + h) * (dn + dv), *pe = kva + n * (rkv + dr) + rkv;
            float *kd = k + (n * nh + h) * dq, *vd = v + (n * nh + h) * dv;
            for (int64_t i = 0; i < dn; i++) kd[i] = src[i];
            for (int64_t i = 0; i < dr; i++) kd[dn + i] = pe[i];
            for (int64_t i = 0; i < dv; i++) vd[i] = src[dn + i];
        }
}

void ds_mla_kv_assemble(float *k, float *v, const float *kv, const float *kva, int64_t N, int64_t nh,
                        int64_t dn, int64_t dv, int64_t rkv, int64_t dr) {
    const int64_t dq = dn + dr;
#pragma omp parallel for schedule(static) if (N * nh * dq > 65536)
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < nh; h++) {
            const float *src = kv + (n * nh + h) * (dn + dv);
            float *kd = k + (n * nh + h) * dq;
            memcpy(kd, src, (size_t)dn * sizeof(float));
            memcpy(kd + dn, kva + n * (rkv + dr) + rkv, (size_t)dr * sizeof(float));
            memcpy(v + (n * nh + h) * dv, src + dn, (size_t)dv * sizeof(float));
        }
}

void ds_mla_kv_assemble_backward_ref(float *dkv, float *dkva, const float *dk, const float *dv, int64_t N,
                                     int64_t nh, int64_t dn, int64_t dv_, int64_t rkv, int64_t dr) {
    const int64_t dq = dn + dr;
    for (int64_t n = 0; n < N; n++) {
        float *kp = dkva + n * (rkv + dr);
        for (int64_t i = 0; i < rkv + dr; i++) kp[i] = 0;
        for (int64_t h = 0; h < nh; h++) {
            const float *src = dk + (n * nh + h) * dq;
            float *dst = dkv + (n * nh + h) * (dn + dv_);
            for (int64_t i = 0; i < dn; i++) dst[i] = src[i];
            for (int64_t i = 0; i < dv_; i++) dst[dn + i] = dv[(n * nh + h) * dv_ + i];
            for (int64_t j = 0; j < dr; j++) kp[rkv + j] += src[dn + j];
        }
    }
}

void ds_mla_kv_assemble_backward(float *dkv, float *dkva, const float *dk, const float *dv, int64_t N, int64_t nh,
                                 int64_t dn, int64_t dv_, int64_t rkv, int64_t dr) {
    const int64_t dq = dn + dr;
#pragma omp parallel for schedule(static) if (N * nh * dq > 65536)
    for (int64_t n = 0; n < N; n++) {
        float *kp = dkva + n * (rkv + dr);
        memset(kp, 0, (size_t)(rkv + dr) * sizeof(float));
        for (int64_t h = 0; h < nh; h++) {
            const float *src = dk + (n * nh + h) * dq;
            float *dst = dkv + (n * nh + h) * (dn + dv_);
            memcpy(dst, src, (size_t)dn * sizeof(float));
            memcpy(dst + dn, dv + (n * nh + h) * dv_, (size_t)dv_ * sizeof(float));
            for (int64_t j = 0; j < dr; j++) kp[rkv + j] += src[dn + j];
        }
    }
}
