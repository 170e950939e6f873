/*
 * hd.h — DS_HD: a function in a header shared by the CPU backend (compiled
 * as C) and the CUDA backend (compiled by nvcc for the host and the device),
 * so both run one piece of arithmetic or logic (backend/cpu/route_select.h,
 * backend/cpu/optim_step.h).
 */
#ifndef DS_HD_H
#define DS_HD_H

#if defined(__CUDACC__)
#define DS_HD static __host__ __device__ inline
#else
#define DS_HD static inline
#endif

#endif
