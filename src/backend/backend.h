/*
 * backend.h — choosing an ops table (docs/engine.md §2.1): the code above the
 * backend gets its table here and never names a kernel or a table itself.
 *   ds_backend_get("cpu"|"ref"|"cuda")           the device's FP32 table
 *   ds_backend_table(&ops, device, DS_PREC_*)    a copy of it with the GEMM
 *                                                entries of a training precision
 * "ref" is the scalar references (tests). "cuda" is the CUDA backend
 * (backend/cuda/cuda.h), host-staged for now (backend/staged.h); it fails with
 * "built without CUDA" or "no CUDA device".
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

#endif
