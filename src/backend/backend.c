/*
 * backend.c — ds_backend_get / ds_backend_table (backend/backend.h).
 */
#include "backend/backend.h"

#include <string.h>

#include "base/base.h"

#include "backend/cpu/kernels.h"
#include "backend/cpu/matmul_bf16.h"
#include "backend/cpu/matmul_fp8.h"
#include "backend/cpu/optim.h"
#include "backend/cpu/peak.h"
#include "backend/cpu/wcache.h"
#include "backend/cuda/cuda.h"
#include "backend/staged.h"

/* "ref" is left out on purpose: the scalar references are for tests, not a
 * --device of the CLI. */
const char *const ds_backend_devices[] = {"cpu", "cuda"};

/* backend/fakedev.c: the cpu kernels over memory the host cannot touch
 * (tests; like "ref", not a --device of the CLI) */
extern const struct ds_ops ds_ops_fakedev;
const int ds_backend_ndevices = 2;

/* The CUDA tables for code that holds host pointers: host-staged over the
 * device tables (backend/staged.h); code that allocates through the table
 * takes ds_cuda_table itself (ds_backend_get_resident).  NULL with ds_err
 * when there is no device or no CUDA build. */
static const struct ds_ops *cuda_tables(int precision) {
    static struct ds_ops staged[3];
    if (ds_cuda_init()) return NULL;
    if (!staged[precision].name) {
        ds_devmem mem = {ds_cuda_alloc, ds_cuda_free, ds_cuda_copy_h2d, ds_cuda_copy_d2h};
        ds_staged_table(&staged[precision], ds_cuda_table(precision), precision, &mem);
    }
    return &staged[precision];
}

const struct ds_ops *ds_backend_get(const char *device) {
    if (!device) device = "cpu";
    if (!strcmp(device, "cpu")) return &ds_ops_cpu;
    if (!strcmp(device, "ref")) return &ds_ops_ref;
    if (!strcmp(device, "fakedev")) return &ds_ops_fakedev;
    if (!strcmp(device, "cuda")) return cuda_tables(DS_PREC_FP32);
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
    if (device && !strcmp(device, "cuda")) {
        *ops = *cuda_tables(precision); /* its GEMM entries are the device's own */
        return 0;
    }
    *ops = *base;
    int ref = base == &ds_ops_ref;
    if (precision == DS_PREC_BF16) {
        ops->matmul_forward = ops->linear_forward = ref ? ds_matmul_forward_bf16_ref : ds_matmul_forward_bf16;
        ops->matmul_backward = ops->linear_backward = ref ? ds_matmul_backward_bf16_ref : ds_matmul_backward_bf16;
        if (!ref) ops->weights_epoch = ds_wcache_epoch;
    }
    if (precision == DS_PREC_FP8) {
        ops->linear_forward = ds_linear_forward_fp8;
        ops->linear_backward = ds_linear_backward_fp8;
        ops->linear_workspace = ds_linear_workspace_fp8;
        if (!ref) ops->weights_epoch = ds_wcache_epoch; /* the weights' FP8 blocks, once per epoch */
    }
    return 0;
}

static int g_peak_set; /* --peak-gflops: that figure on every device */

double ds_backend_peak_flops_prec(const char *device, int precision, int threads, char *how, size_t cap) {
    if (device && !strcmp(device, "cuda") && !g_peak_set) {
        double p = ds_cuda_peak_flops(precision, how, cap); /* 0 before the device is up, or unknown */
        if (p > 0) return p;
    }
    return ds_cpu_peak(threads, how, cap);
}

double ds_backend_peak_flops(const char *device, int threads, char *how, size_t cap) {
    return ds_backend_peak_flops_prec(device, DS_PREC_FP32, threads, how, cap);
}

void ds_backend_set_peak(double gflops) {
    g_peak_set = gflops > 0;
    ds_cpu_peak_set(gflops);
}

int ds_backend_uses_blas(const char *device) {
    if (!device || !strcmp(device, "cpu") || !strcmp(device, "fakedev")) return ds_matmul_uses_blas();
    return !strcmp(device, "cuda");
}

const struct ds_ops *ds_backend_get_resident(const char *device) {
    if (device && !strcmp(device, "cuda")) return ds_cuda_init() ? NULL : ds_cuda_table(DS_PREC_FP32);
    return ds_backend_get(device);
}

int ds_backend_table_resident(struct ds_ops *ops, const char *device, int precision) {
    if (!device || strcmp(device, "cuda")) return ds_backend_table(ops, device, precision);
    if (precision != DS_PREC_FP32 && precision != DS_PREC_BF16 && precision != DS_PREC_FP8)
        return ds_err("precision %d: unknown (fp32, bf16, fp8)", precision);
    if (ds_cuda_init()) return -1;
    *ops = *ds_cuda_table(precision); /* its GEMM entries are the device's own */
    return 0;
}
