/*
 * ops.h — the ops table (DESIGN.md "Model code"): model code calls kernels
 * only through a `struct ds_ops`, so a backend (cpu now, cuda later) or the
 * scalar references can be swapped in without touching src/model/.
 *   ds_ops_cpu — the fast CPU kernels (OpenMP, BLAS, SIMD)
 *   ds_ops_ref — the scalar references (slow; tests run whole models with it)
 * Signatures and shapes: kernels/kernels.h.
 */
#ifndef DS_OPS_H
#define DS_OPS_H

#include "kernels/kernels.h"

struct ds_ops {
    const char *name;
    void (*matmul_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int64_t N, int64_t C, int64_t OC);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight,
                            int64_t N, int64_t C, int64_t ld_out, int64_t ld_in, float eps);
    void (*rope_forward)(float *x, const float *cos_t, const float *sin_t,
                         int64_t B, int64_t T, int64_t nv, int64_t ld, int64_t off, int64_t dr, int halves);
    void (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v,
                              int64_t B, int64_t T, int64_t NH, int64_t DQ, int64_t DV, float scale);
    void (*swiglu_forward)(float *out, const float *gate, const float *up, int64_t N, int64_t I);
    void (*embedding_forward)(float *out, const int32_t *ids, const float *wte, int64_t BT, int64_t C);
    void (*residual_forward)(float *out, const float *a, const float *b, int64_t n);
    void (*moe_route_forward)(float *weights, int32_t *idx, float *scores, const float *logits,
                              const float *bias, const ds_route_params *p, int64_t N);
};

extern const struct ds_ops ds_ops_cpu;
extern const struct ds_ops ds_ops_ref;

#endif
