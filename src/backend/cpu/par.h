/*
 * par.h — the thread policy for small ops: how many threads a kernel's work
 * is worth.  Waking a team costs ~5-50 µs per parallel region (a futex wake
 * per worker with OMP_WAIT_POLICY=passive, which dsv3 sets; far more when the
 * machine is oversubscribed and a worker is descheduled), and a decode step
 * is a hundred small GEMVs: forking for each made 2 threads slower than 1.
 * So a region forks only when every thread gets at least ~50 µs of work:
 * DS_PAR_MIN_BYTES streamed (memory-bound ops, e.g. GEMV weights) or
 * DS_PAR_MIN_FLOPS (compute-bound ops, e.g. GEMM).  Use as
 *     int nt = ds_par_threads(bytes, DS_PAR_MIN_BYTES);
 *     #pragma omp parallel for num_threads(nt) if (nt > 1)
 */
#ifndef DS_PAR_H
#define DS_PAR_H

#include "base/base.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define DS_PAR_MIN_BYTES (1024.0 * 1024.0)
#define DS_PAR_MIN_FLOPS (2.0e6)

static inline int ds_par_threads(double work, double min_per_thread) {
    int t = ds_threads();
    double w = work / min_per_thread;
    if (w < 2.0 || t <= 1) return 1;
    return w < (double)t ? (int)w : t;
}

/* The same for a kernel that may also be called from a parallel loop (the
 * experts' GEMMs): one thread there, since a nested region would not fork. */
static inline int ds_par_threads_top(double work, double min_per_thread) {
#ifdef _OPENMP
    if (omp_in_parallel()) return 1;
#endif
    return ds_par_threads(work, min_per_thread);
}

/* How a threaded sgemm of an output of `rows` x `cols` is cut into one slab
 * per thread (each slab's call packs its whole share of both operands, so
 * cut the larger side): *by_rows, and the slab length, whole rows or columns
 * in multiples of 16.  Used by the FP32 forward (output: tokens x weight rows)
 * and input gradient (tokens x weight columns). */
static inline int64_t ds_par_slab(int64_t rows, int64_t cols, int nt, int *by_rows) {
    *by_rows = rows > cols || cols < 32 * (int64_t)nt;
    const int64_t len = *by_rows ? rows : cols;
    int64_t per = (len + nt - 1) / nt;
    return *by_rows ? per : (per + 15) / 16 * 16;
}

#endif
