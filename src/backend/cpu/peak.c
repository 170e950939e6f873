/*
 * peak.c — measured FP32 FMA peak and streaming bandwidth (peak.h).
 */
#include "backend/cpu/peak.h"

#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu/cpu_isa.h"
#include "base/base.h"
#ifdef DS_X86_SIMD
#include <immintrin.h>
#endif

static double g_override; /* FLOP/s; 0: measure */

void ds_cpu_peak_set(double gflops) { g_override = gflops > 0 ? gflops * 1e9 : 0; }

/* 1M iterations of 12 (10) independent FMAs: ~1.5-3 ms a thread at 2 FMAs a
 * cycle, long against the team's start-up skew (a futex wake-up each with
 * OMP_WAIT_POLICY=passive) */
enum { ITERS = 1000000 };

#ifdef DS_X86_SIMD
/* FLOPs done; the chains' sum goes to *sink so nothing is optimized away */
DS_TARGET_AVX512 static double chains512(float *sink) {
    __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2), a3 = _mm512_set1_ps(3),
           a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5), a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7),
           a8 = _mm512_set1_ps(8), a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
    for (long k = 0; k < ITERS; k++) {
        a0 = _mm512_fmadd_ps(a0, b, c), a1 = _mm512_fmadd_ps(a1, b, c), a2 = _mm512_fmadd_ps(a2, b, c);
        a3 = _mm512_fmadd_ps(a3, b, c), a4 = _mm512_fmadd_ps(a4, b, c), a5 = _mm512_fmadd_ps(a5, b, c);
        a6 = _mm512_fmadd_ps(a6, b, c), a7 = _mm512_fmadd_ps(a7, b, c), a8 = _mm512_fmadd_ps(a8, b, c);
        a9 = _mm512_fmadd_ps(a9, b, c), a10 = _mm512_fmadd_ps(a10, b, c), a11 = _mm512_fmadd_ps(a11, b, c);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    *sink += _mm512_reduce_add_ps(s);
    return (double)ITERS * 12 * 16 * 2;
}
DS_TARGET_AVX2 static double chains256(float *sink) {
    __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1), a2 = _mm256_set1_ps(2), a3 = _mm256_set1_ps(3),
           a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5), a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7),
           a8 = _mm256_set1_ps(8), a9 = _mm256_set1_ps(9);
    for (long k = 0; k < ITERS; k++) {
        a0 = _mm256_fmadd_ps(a0, b, c), a1 = _mm256_fmadd_ps(a1, b, c), a2 = _mm256_fmadd_ps(a2, b, c);
        a3 = _mm256_fmadd_ps(a3, b, c), a4 = _mm256_fmadd_ps(a4, b, c), a5 = _mm256_fmadd_ps(a5, b, c);
        a6 = _mm256_fmadd_ps(a6, b, c), a7 = _mm256_fmadd_ps(a7, b, c), a8 = _mm256_fmadd_ps(a8, b, c);
        a9 = _mm256_fmadd_ps(a9, b, c);
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(a8, a9));
    float v[8];
    _mm256_storeu_ps(v, s);
    *sink += v[0];
    return (double)ITERS * 10 * 8 * 2;
}
#endif

static double chains_scalar(float *sink) {
    float a[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (long k = 0; k < ITERS; k++)
        for (int i = 0; i < 8; i++) a[i] = a[i] * 0.999999f + 1e-7f;
    *sink += a[0] + a[7];
    return (double)ITERS * 8 * 2;
}

double ds_cpu_fma_peak_measure(int threads) {
    static double cache[65];
    static int cache_isa[65];
    if (threads < 1) threads = 1;
    int slot = threads < 64 ? threads : 64, isa = ds_cpu_isa();
    if (cache[slot] > 0 && cache_isa[slot] == isa) return cache[slot];
    double best = 0;
    volatile float keep = 0;
    /* best of 5 after a warm-up (clocks ramp); the threads start together
     * after a barrier and a rep is timed from the first start to the last
     * end, so waking the team (before the barrier) is not counted */
    for (int rep = 0; rep < 6; rep++) {
        double flops = 0, t0 = 1e300, t1 = 0;
        float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops, sink) reduction(min : t0) reduction(max : t1)
        {
#pragma omp barrier
            t0 = ds_now();
#ifdef DS_X86_SIMD
            if (isa == DS_ISA_AVX512) flops += chains512(&sink);
            else if (isa == DS_ISA_AVX2) flops += chains256(&sink);
            else
#endif
                flops += chains_scalar(&sink);
            t1 = ds_now();
        }
        double dt = t1 - t0;
        keep += sink;
        if (rep > 0 && dt > 0 && flops / dt > best) best = flops / dt;
    }
    (void)keep;
    cache[slot] = best, cache_isa[slot] = isa;
    return best;
}

double ds_cpu_peak(int threads, char *how, size_t cap) {
    if (threads < 1) threads = 1;
    if (g_override <= 0) {
        const char *e = getenv("DS_PEAK_GFLOPS");
        double g = e ? atof(e) : 0;
        if (g > 0) g_override = g * 1e9;
    }
    if (g_override > 0) {
        if (how) snprintf(how, cap, "%.1f GFLOP/s (given by --peak-gflops)", g_override / 1e9);
        return g_override;
    }
    double p = ds_cpu_fma_peak_measure(threads);
    if (how)
        snprintf(how, cap, "%.1f GFLOP/s measured (%s FMA chains on %d thread%s; --peak-gflops to set)", p / 1e9,
                 ds_cpu_isa_name(ds_cpu_isa()), threads, threads == 1 ? "" : "s");
    return p;
}

double ds_cpu_stream_bw(int threads, double mb) {
    if (threads < 1) threads = 1;
    int64_t n = (int64_t)(mb * 1024 * 1024 / 4);
    if (n < 1024) n = 1024;
    float *a = ds_aligned_alloc((size_t)n * 4), *b = ds_aligned_alloc((size_t)n * 4),
          *c = ds_aligned_alloc((size_t)n * 4);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = 0, b[i] = 1, c[i] = 2; /* first touch by the same threads */
    double best = 0;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = ds_now();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < n; i++) a[i] = b[i] + 0.5f * c[i];
        double dt = ds_now() - t0;
        if (rep > 0 && dt > 0 && 12.0 * n / dt > best) best = 12.0 * n / dt;
    }
    ds_free_aligned(a), ds_free_aligned(b), ds_free_aligned(c);
    return best;
}
