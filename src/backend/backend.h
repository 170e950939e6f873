/*
 * backend.h — choosing an ops table (docs/engine.md §2.1): the code above the
 * backend gets its table here and never names a kernel or a table itself.
 *   ds_backend_get("cpu"|"ref"|"cuda")           the device's FP32 table
 *   ds_backend_table(&ops, device, DS_PREC_*)    a copy of it with the GEMM
 *                                                entries of a training precision
 *   ds_backend_peak_flops / ds_backend_set_peak  the FP32 peak behind MFU
 *   ds_backend_uses_blas                         whether GEMMs go through BLAS
 * "ref" is the scalar references (tests). "cuda" is the CUDA backend
 * (backend/cuda/cuda.h), host-staged (backend/staged.h) for code that still
 * holds host pointers, the device table itself through the _resident
 * functions; it fails with "built without CUDA" or "no CUDA device".
 */
#ifndef DS_BACKEND_H
#define DS_BACKEND_H

#include "backend/ops.h"

/* Training/GEMM precisions of a table. */
enum { DS_PREC_FP32 = 0, DS_PREC_BF16 = 1, DS_PREC_FP8 = 2 };

/* The devices --device accepts, for ds_cli_check_choice and --help. */
extern const char *const ds_backend_devices[];
extern const int ds_backend_ndevices;

/* The FP32 table of `device`, or NULL with ds_err for an unknown device or
 * one this dsv3 was built without. */
const struct ds_ops *ds_backend_get(const char *device);

/* *ops = the table of `device` that computes in `precision`:
 *   DS_PREC_BF16  the matmul AND linear entries (forward and backward) take
 *                 BF16-rounded inputs with FP32 sums: every GEMM (the linear
 *                 layers, lm_head, router, MTP eh_proj);
 *   DS_PREC_FP8   the linear entries (attention and MLP/expert projections)
 *                 run E4M3 GEMMs (1x128 / 128x128 scaling, FP32 promotion);
 *                 lm_head, router and eh_proj stay FP32, as in DeepSeek-V3.
 * Returns 0, or -1 with ds_err (unknown device or precision, no CUDA). */
int ds_backend_table(struct ds_ops *ops, const char *device, int precision);

/* The FP32 peak in FLOP/s over `threads` threads, the denominator of the MFU
 * dsv3 prints (backend/cpu/peak.h: FMA chains measured once per thread
 * count, or the figure of ds_backend_set_peak); on "cuda" once the device is
 * up, the GPU's FP32 peak (ds_backend_peak_flops_prec).  `how` (may be NULL)
 * gets a one-line description of where the figure came from. */
double ds_backend_peak_flops(const char *device, int threads, char *how, size_t cap);
/* The same for a training precision: on "cuda" (once the device is up) the
 * GPU's dense peak for that precision's GEMMs (ds_cuda_peak_flops: FP32 on
 * CUDA cores, BF16/FP8 on tensor cores), unless --peak-gflops set one figure;
 * the host CPU's FP32 peak otherwise. */
double ds_backend_peak_flops_prec(const char *device, int precision, int threads, char *how, size_t cap);
/* --peak-gflops: `gflops` (> 0) instead of measuring; 0 goes back to measuring. */
void ds_backend_set_peak(double gflops);

/* 1 when `device`'s FP32 GEMMs go through a BLAS library: "cpu" (and
 * "fakedev") in a build with OpenBLAS, "cuda" (cuBLAS/cuBLASLt); 0 for "ref"
 * and a cpu build without BLAS.  NULL is "cpu". */
int ds_backend_uses_blas(const char *device);

/* ds_backend_get / ds_backend_table for code whose buffers all come from the table's alloc and whose
 * host reads go through copy_d2h (docs/engine.md §2.5 lists those paths):
 * for "cuda" the device table itself (host_visible 0, no staging); for the
 * other devices what ds_backend_get / ds_backend_table give. */
const struct ds_ops *ds_backend_get_resident(const char *device);
int ds_backend_table_resident(struct ds_ops *ops, const char *device, int precision);

#endif
