/*
 * optim.h — the optimizer entries of the CPU backend (backend/ops.h
 * `sumsq`, `adamw`, `bias_update`): the fast versions and their scalar
 * references (`*_ref`, the oracle of tests/test_optim_ops.c).
 *
 * The fast versions are one streaming pass each over the flat buffers,
 * threaded over a FIXED decomposition into blocks (DS_OPTIM_BLOCK elements
 * from the start of the buffer, resp. of each segment): a block's arithmetic
 * does not depend on which thread runs it, and ds_sumsq adds the blocks'
 * partial sums in block order, so results are bit-identical for any thread
 * count.  optim.c is compiled with -O3 -fno-math-errno (Makefile), so the
 * element loops vectorize (vsqrtps, FMA) for the -march of the build.
 */
#ifndef DS_CPU_OPTIM_H
#define DS_CPU_OPTIM_H

#include "backend/ops.h"

#define DS_OPTIM_BLOCK 8192

/* Σ x² in double.  ref: one double accumulator in element order.  Fast: per
 * block 32 double lanes (fixed order), blocks summed in order. */
double ds_sumsq_ref(const float *x, int64_t n);
double ds_sumsq(const float *x, int64_t n);

/* AdamW over segments (backend/ops.h `adamw`).  m, v: float * or, when
 * bf16_moments, uint16_t * (BF16 bits, rounded to nearest even on store). */
void ds_adamw_ref(float *p, const float *g, void *m, void *v, int bf16_moments, const ds_optim_seg *seg,
                  int64_t nseg, int64_t t, const ds_adamw_hparams *h, float gscale);
void ds_adamw(float *p, const float *g, void *m, void *v, int bf16_moments, const ds_optim_seg *seg,
              int64_t nseg, int64_t t, const ds_adamw_hparams *h, float gscale);

/* bias[i] += gamma * sign(mean(load) - load[i]) (E experts; scalar, E is
 * small: the same function serves both tables). */
void ds_bias_update(float *bias, const int64_t *load, int64_t E, float gamma);

/* ---- linear_workspace.c: the `linear_workspace` entry ----
 * none: the FP32 and BF16 linears allocate nothing per thread (0);
 * fp8: ds_fp8_linear_workspace (the quantized operands and scales) plus the
 * FP32 input gradient the backward accumulates from. */
size_t ds_linear_workspace_none(int64_t N, int64_t C, int64_t OC);
size_t ds_linear_workspace_fp8(int64_t N, int64_t C, int64_t OC);

#endif
