/*
 * test_backend.c — backend/backend.h: the tables ds_backend_table builds for
 * cpu/ref x fp32/bf16/fp8 (their GEMM entries against double oracles and the
 * kernels they must be; every other entry the device's own), the errors of an
 * unknown device and of cuda without a GPU (a build without CUDA, or one
 * with CUDA on a machine with no device), and --device on the commands that
 * take it (one line, before anything is loaded).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/matmul_bf16.h"
#include "backend/cpu/matmul_fp8.h"
#include "backend/cuda/cuda.h"
#include "base/base.h"
#include "num/dtype.h"
#include "test.h"

/* What --device cuda says where there is no GPU to run on. */
static const char *no_cuda_msg(void) {
    return ds_cuda_built() ? "--device cuda: no CUDA device" : "--device cuda: this dsv3 was built without CUDA";
}

static float rb(float x) { return ds_bf16_to_f32(ds_f32_to_bf16(x)); }

/* Inputs with bits below BF16's precision, so that FP32 and BF16 GEMMs differ
 * from each other's oracle by far more than the tolerance. */
static float *randv(ds_rng *r, int64_t n) {
    float *v = ds_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = ds_rng_normal(r);
    return v;
}

/* out (N, OC) = x (N, C) . w (OC, C)^T in double, inputs BF16-rounded or not. */
static void oracle(float *out, const float *x, const float *w, int64_t N, int64_t C, int64_t OC, int bf16) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) {
            double acc = 0;
            for (int64_t c = 0; c < C; c++)
                acc += bf16 ? (double)rb(x[n * C + c]) * rb(w[o * C + c]) : (double)x[n * C + c] * w[o * C + c];
            out[n * OC + o] = (float)acc;
        }
}

typedef void (*fwd_fn)(float *, const float *, const float *, const float *, int64_t, int64_t, int64_t);
typedef void (*bwd_fn)(float *, float *, float *, const float *, const float *, const float *, int64_t, int64_t,
                       int64_t, int);

TEST(backend_tables) {
    ds_rng r;
    ds_rng_seed(&r, 11);
    const int64_t N = 7, C = 256, OC = 130; /* C: two FP8 blocks of 128 */
    float *x = randv(&r, N * C), *w = randv(&r, OC * C), *y = ds_malloc((size_t)(N * OC) * 4),
          *y2 = ds_malloc((size_t)(N * OC) * 4), *o32 = ds_malloc((size_t)(N * OC) * 4),
          *o16 = ds_malloc((size_t)(N * OC) * 4);
    oracle(o32, x, w, N, C, OC, 0);
    oracle(o16, x, w, N, C, OC, 1);
    const char *devs[] = {"cpu", "ref"};
    const struct ds_ops *bases[] = {&ds_ops_cpu, &ds_ops_ref};
    for (int d = 0; d < 2; d++)
        for (int prec = DS_PREC_FP32; prec <= DS_PREC_FP8; prec++) {
            struct ds_ops ops;
            memset(&ops, 0xa5, sizeof ops);
            CHECK_MSG(ds_backend_table(&ops, devs[d], prec) == 0, "%s %d: %s", devs[d], prec, ds_errmsg());
            CHECK(ds_backend_get(devs[d]) == bases[d]);
            CHECK(!strcmp(ops.name, devs[d]));
            /* the GEMM entries against the oracle of their precision */
            for (int e = 0; e < 2; e++) {
                fwd_fn f = e ? ops.linear_forward : ops.matmul_forward;
                f(y, x, w, NULL, N, C, OC);
                int rounded = prec == DS_PREC_BF16 || (prec == DS_PREC_FP8 && e);
                double e32 = ds_test_max_rel(y, o32, (size_t)(N * OC), 1e-3);
                double e16 = ds_test_max_rel(y, o16, (size_t)(N * OC), 1e-3);
                if (!rounded)
                    CHECK_MSG(e32 < 1e-5 && e16 > 1e-4, "%s prec %d %s: %.3g from the FP32 oracle, %.3g from BF16",
                              devs[d], prec, e ? "linear" : "matmul", e32, e16);
                else if (prec == DS_PREC_BF16)
                    CHECK_MSG(e16 < 1e-5 && e32 > 1e-4, "%s bf16 %s: %.3g from the BF16 oracle, %.3g from FP32",
                              devs[d], e ? "linear" : "matmul", e16, e32);
                else /* fp8: E4M3 inputs, a few percent off FP32 */
                    CHECK_MSG(e32 > 1e-3 && e32 < 0.2, "%s fp8 linear: %.3g from the FP32 oracle", devs[d], e32);
            }
            /* the kernels the precision names, bit for bit */
            if (prec == DS_PREC_FP8) {
                ops.linear_forward(y, x, w, NULL, N, C, OC);
                ds_linear_forward_fp8(y2, x, w, NULL, N, C, OC);
                CHECK_MSG(!memcmp(y, y2, (size_t)(N * OC) * 4), "%s fp8: linear_forward is not ds_linear_forward_fp8",
                          devs[d]);
                CHECK(ops.linear_backward == (bwd_fn)ds_linear_backward_fp8);
            }
            if (d == 1) {
                ops.matmul_forward(y, x, w, NULL, N, C, OC);
                (prec == DS_PREC_BF16 ? ds_matmul_forward_bf16_ref : ds_matmul_forward_ref)(y2, x, w, NULL, N, C, OC);
                CHECK_MSG(!memcmp(y, y2, (size_t)(N * OC) * 4), "ref prec %d: matmul_forward is not the scalar "
                          "reference", prec);
            }
            /* every other entry is the device's own */
            struct ds_ops rest = ops;
            rest.matmul_forward = bases[d]->matmul_forward, rest.matmul_backward = bases[d]->matmul_backward;
            rest.linear_forward = bases[d]->linear_forward, rest.linear_backward = bases[d]->linear_backward;
            /* the FP8 linears need quantized copies: their workspace size goes with them */
            rest.linear_workspace = bases[d]->linear_workspace;
            if (prec == DS_PREC_FP8) CHECK(ops.linear_workspace != bases[d]->linear_workspace);
            /* the BF16 and FP8 linears' per-step weight copies go with them (the cpu table's; the ref
             * converts always) */
            rest.weights_epoch = bases[d]->weights_epoch;
            CHECK_MSG((ops.weights_epoch != NULL) == (prec != DS_PREC_FP32 && bases[d] == &ds_ops_cpu),
                      "%s prec %d: weights_epoch", devs[d], prec);
            CHECK_MSG(!memcmp(&rest, bases[d], sizeof rest), "%s prec %d: an entry besides the GEMMs differs",
                      devs[d], prec);
            if (prec == DS_PREC_FP32) CHECK(!memcmp(&ops, bases[d], sizeof ops));
        }
    struct ds_ops ops;
    ds_err_clear();
    CHECK(ds_backend_table(&ops, "tpu", DS_PREC_FP32) == -1);
    CHECK_MSG(strstr(ds_errmsg(), "tpu") && strstr(ds_errmsg(), "unknown device"), "%s", ds_errmsg());
    CHECK(ds_backend_get("tpu") == NULL);
    ds_err_clear();
    if (ds_cuda_built() && ds_cuda_init() == 0) {
        fprintf(stderr, "  note: a GPU is present (%s): the no-CUDA errors are not checked\n", ds_cuda_device_name());
    } else {
        CHECK(ds_backend_table(&ops, "cuda", DS_PREC_BF16) == -1);
        CHECK_MSG(strstr(ds_errmsg(), no_cuda_msg()) != NULL, "%s", ds_errmsg());
        CHECK(ds_backend_get("cuda") == NULL);
    }
    ds_err_clear();
    CHECK(ds_backend_table(&ops, "cpu", 7) == -1);
    CHECK_MSG(strstr(ds_errmsg(), "precision") != NULL, "%s", ds_errmsg());
    free(x), free(w), free(y), free(y2), free(o32), free(o16);
}

static int one_line(const char *s) {
    const char *nl = strchr(s, '\n');
    return nl && !nl[1];
}

/* A usage error: its one line, then the "try 'dsv3 CMD --help'" hint. */
static int usage_line(const char *s) {
    const char *nl = strchr(s, '\n');
    return nl && !strncmp(nl + 1, "try '", 5) && one_line(nl + 1);
}

/* --device cuda without a GPU: exit 1 with one line, before the model (here
 * a folder that does not exist) is looked at; an unknown device is a usage
 * error (exit 2) with "did you mean". */
TEST(backend_device_cli) {
    char out[4096];
    int gpu = ds_cuda_built() && ds_cuda_init() == 0;
    const char *cmds[] = {
        "forward --model /nonexistent/m --ids /nonexistent/ids --out /nonexistent/o.safetensors",
        "generate --model /nonexistent/m --prompt hi",
        "eval --model /nonexistent/m --task hellaswag",
        "train --config tiny --data /nonexistent/d --out /nonexistent/r --steps 1",
        "bench-train --config tiny --random 1,8",
        "bench-decode --config tiny --batch 2",
        "chat --model /nonexistent/m",
        "serve --model /nonexistent/m",
        "fp8 analyze --model /nonexistent/m --data /nonexistent/d",
        "ablate --data /nonexistent/d --what mtp --steps 1 --out /nonexistent/a",
    };
    for (int i = 0; i < (int)(sizeof cmds / sizeof cmds[0]); i++) {
        int rc;
        if (!gpu) {
            rc = ds_test_sh(out, sizeof out, "$DSV3 %s --device cuda", cmds[i]);
            CHECK_MSG(rc == 1 && one_line(out) && strstr(out, no_cuda_msg()), "%s --device cuda: rc %d: %s", cmds[i],
                      rc, out);
            CHECK_MSG(!strstr(out, "nonexistent"), "%s: loaded before checking --device: %s", cmds[i], out);
        }
        rc = ds_test_sh(out, sizeof out, "$DSV3 %s --device gpu", cmds[i]);
        CHECK_MSG(rc == 2 && usage_line(out) && strstr(out, "did you mean") && strstr(out, "'gpu'"),
                  "%s --device gpu: rc %d: %s", cmds[i], rc, out);
    }
    /* --device cpu is the default and runs */
    int rc = ds_test_sh(out, sizeof out, "$DSV3 forward --config tiny --random 1,8 --iters 1 --device cpu");
    CHECK_MSG(rc == 0 && strstr(out, "\"tokens_per_s\""), "rc %d: %s", rc, out);
}
