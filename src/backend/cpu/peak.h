/*
 * peak.h — the CPU's measured FP32 peak and streaming bandwidth, the
 * denominators of the MFU and bandwidth figures dsv3 prints.
 *
 * The peak is measured, not computed from a nominal clock: every thread runs
 * independent FMA chains (12 on AVX-512 zmm, 10 on AVX2 ymm: enough to cover
 * the FMA latency on two pipes) for 1.5-3 ms, all threads at once (released by a barrier, timed from the first start to the last end)
 * (so all-core clocks count), best of 5; the result is cached per thread
 * count for the life of the process.  --peak-gflops (or DS_PEAK_GFLOPS)
 * replaces it.  On a machine shared with other jobs the measurement is low
 * and MFU is then relative to what this process could get.
 */
#ifndef DS_PEAK_H
#define DS_PEAK_H

#include <stddef.h>

/* FLOP/s; `how` (may be NULL) gets a one-line description of where it came from. */
double ds_cpu_peak(int threads, char *how, size_t cap);
/* Use `gflops` (> 0) instead of measuring; 0 goes back to measuring. */
void ds_cpu_peak_set(double gflops);
/* The FMA-chain measurement itself (FLOP/s over `threads` threads, cached). */
double ds_cpu_fma_peak_measure(int threads);
/* Streaming bandwidth in bytes/s: a[i] = b[i] + s·c[i] over `mb` MB per
 * array, `threads` threads, best of 3 (12 bytes counted per element, as
 * STREAM's triad). */
double ds_cpu_stream_bw(int threads, double mb);

#endif
