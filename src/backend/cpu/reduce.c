/*
 * reduce.c — the sum of squares entry (gradient finite check, clip norm):
 * accumulated in double, so the sum of finite squares stays finite and a
 * non-finite result means exactly that x holds a NaN or an infinity.
 */
#include "backend/cpu/kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

double ds_sumsq_ref(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* per-thread partial sums over static chunks, added in thread order: the
 * result depends on the thread count, not on scheduling */
double ds_sumsq(const float *x, int64_t n) {
    if (n <= 65536) return ds_sumsq_ref(x, n);
    double part[256] = {0};
    int nt = 1;
#pragma omp parallel
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#pragma omp single
        nt = omp_get_num_threads() < 256 ? omp_get_num_threads() : 256;
#endif
        if (t < nt) {
            int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
            double s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
            part[t] = s;
        }
    }
    double s = 0;
    for (int i = 0; i < nt; i++) s += part[i];
    return s;
}
