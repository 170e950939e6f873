/*
 * backend.c — ds_backend_get / ds_backend_table (backend/backend.h).
 */
#include "backend/backend.h"

#include <string.h>

#include "base/base.h"

#include "backend/cpu/matmul_bf16.h"
#include "backend/cpu/matmul_fp8.h"
#include "backend/cpu/optim.h"

/* "ref" is left out on purpose: the scalar references are for tests, not a
 * --device of the CLI. */
const char *const ds_backend_devices[] = {"cpu", "cuda"};

/* backend/fakedev.c: the cpu kernels over memory the host cannot touch
 * (tests; like "ref", not a --device of the CLI) */
extern const struct ds_ops ds_ops_fakedev;
const int ds_backend_ndevices = 2;

const struct ds_ops *ds_backend_get(const char *device) {
    if (!device) device = "cpu";
    if (!strcmp(device, "cpu")) return &ds_ops_cpu;
    if (!strcmp(device, "ref")) return &ds_ops_ref;
    if (!strcmp(device, "fakedev")) return &ds_ops_fakedev;
    if (!strcmp(device, "cuda")) {
        ds_err("--device cuda: this dsv3 was built without CUDA");
        return NULL;
    }
    ds_err("--device %s: unknown device (cpu, cuda)", ds_quote(device));
    return NULL;
}

/* The linear entries are set as well as the matmul ones: the cpu table's
 * linear entries are FP32 functions of their own, not calls through
 * matmul_forward.  The ref table takes the scalar BF16 GEMMs (same bits);
 * FP8 has one implementation, scalar-exact, for both. */
int ds_backend_table(struct ds_ops *ops, const char *device, int precision) {
    const struct ds_ops *base = ds_backend_get(device);
    if (!base) return -1;
    if (precision != DS_PREC_FP32 && precision != DS_PREC_BF16 && precision != DS_PREC_FP8)
        return ds_err("precision %d: unknown (fp32, bf16, fp8)", precision);
    if (base == &ds_ops_fakedev && precision != DS_PREC_FP32) return ds_err("fakedev: FP32 only");
    *ops = *base;
    int ref = base == &ds_ops_ref;
    if (precision == DS_PREC_BF16) {
        ops->matmul_forward = ops->linear_forward = ref ? ds_matmul_forward_bf16_ref : ds_matmul_forward_bf16;
        ops->matmul_backward = ops->linear_backward = ref ? ds_matmul_backward_bf16_ref : ds_matmul_backward_bf16;
    }
    if (precision == DS_PREC_FP8) {
        ops->linear_forward = ds_linear_forward_fp8;
        ops->linear_backward = ds_linear_backward_fp8;
        ops->linear_workspace = ds_linear_workspace_fp8;
    }
    return 0;
}
