/*
 * vmath.h — vectorized exp, log, tanh, sigmoid over arrays (AVX-512 or
 * AVX2+FMA chosen at run time, cpu_isa.h; a scalar loop elsewhere).  Every
 * path returns the same bits (vmath_simd.h).  Error against the correctly
 * rounded result, over all FP32 inputs (tests/test_vmath.c measures it
 * against libm in double on every 997th bit pattern, dense sweeps where the
 * formulas switch, and the special values; measured maximum in brackets):
 *   exp      ≤ 1.5 ulp [0.98]; subnormal results on the subnormal grid;
 *            +inf above 88.72283 (as expf), 0 below −103.97
 *   log      ≤ 1.5 ulp [0.77]; log ±0 = −inf, log(x < 0) = NaN, log(+inf) = +inf
 *   tanh     ≤ 2 ulp [1.32]; ±1 at ±inf, −0 stays −0
 *   sigmoid  ≤ 3 ulp [2.18], relative in both tails (σ(−100) ≈ 3.7e−44, not 0)
 * NaN in gives NaN out; ±inf give the limits.  y may alias x.
 */
#ifndef DS_VMATH_H
#define DS_VMATH_H

#include <stdint.h>

void ds_vexp(float *y, const float *x, int64_t n);
void ds_vlog(float *y, const float *x, int64_t n);
void ds_vtanh(float *y, const float *x, int64_t n);
void ds_vsigmoid(float *y, const float *x, int64_t n);
/* y[i] = exp(x[i] − shift) (y may be NULL: not stored); returns Σ y[i]
 * (FP32 lanes, summed in a fixed order for a given n and ISA width). */
float ds_vexp_sum(float *y, const float *x, float shift, int64_t n);
/* max x[i] (−inf for n = 0; NaNs are skipped). */
float ds_vmax(const float *x, int64_t n);

/* Scalar versions (the same arithmetic as the vector lanes). */
float ds_expf_fast(float x);
float ds_logf_fast(float x);
float ds_tanhf_fast(float x);
float ds_sigmoidf_fast(float x);

#endif
