/* gemm_cuda.c — GPU GEMM benchmark (tools/gpu_check.sh): TFLOPS of the CUDA
 * backend's FP8 block-scaled GEMM (1x128 activations x 128x128 weights, E4M3,
 * FP32 out: cuBLASLt, and dsv3's own kernel) against cuBLASLt BF16 (FP32
 * accumulation and output) and FP32 on DeepSeek-V3's shapes, M = 4096 tokens:
 * N x K = 7168x2048, 2048x7168, 24576x1536, 7168x16384.  Prints one JSON object.
 *   gemm_cuda [--probe] [--iters N] [--m M]
 * --probe prints {"gpu": true|false, ...} and exits 0 (GPU) or 3 (none).
 * Exit 3 without a GPU, with {"gpu": false, "error": "..."}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda.h"
#include "base/base.h"

/* H200 SXM dense peaks (TFLOPS): FP8 1979, BF16 989, FP32 (CUDA cores) 67 */
static const double PEAK_FP8 = 1979, PEAK_BF16 = 989, PEAK_FP32 = 67;

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
        else putchar(*s);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    int probe = 0, iters = 20;
    int64_t M = 4096;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--probe")) probe = 1;
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--m") && i + 1 < argc) M = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: gemm_cuda [--probe] [--iters N] [--m M]\n");
            return 2;
        }
    }
    if (!ds_cuda_built() || ds_cuda_init()) {
        printf("{\"gpu\": false, \"cuda_built\": %s, \"error\": ", ds_cuda_built() ? "true" : "false");
        json_str(ds_errmsg());
        printf("}\n");
        return 3;
    }
    if (probe) {
        printf("{\"gpu\": true, \"device\": ");
        json_str(ds_cuda_device_name());
        printf("}\n");
        return 0;
    }
    static const int64_t shapes[][2] = {{7168, 2048}, {2048, 7168}, {24576, 1536}, {7168, 16384}};
    static const char *kinds[] = {"fp8", "fp8-own", "bf16", "fp32"};
    printf("{\"gpu\": true, \"device\": ");
    json_str(ds_cuda_device_name());
    printf(", \"M\": %lld, \"iters\": %d, \"peak_tflops\": {\"fp8\": %g, \"bf16\": %g, \"fp32\": %g}, \"results\": [",
           (long long)M, iters, PEAK_FP8, PEAK_BF16, PEAK_FP32);
    int rc = 0;
    for (int s = 0; s < 4; s++) {
        int64_t N = shapes[s][0], K = shapes[s][1];
        double t[4] = {0, 0, 0, 0};
        const char *path[4] = {"", "", "", ""};
        for (int k = 0; k < 4; k++) {
            /* the own kernel and FP32 are slow: fewer launches */
            int it = k == 0 || k == 2 ? iters : (iters + 9) / 10;
            if (ds_cuda_gemm_bench(kinds[k], M, N, K, it, &t[k], &path[k])) {
                fprintf(stderr, "gemm_cuda: %s %lldx%lldx%lld: %s\n", kinds[k], (long long)M, (long long)N,
                        (long long)K, ds_errmsg());
                rc = 1;
            }
        }
        printf("%s\n  {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"fp8_tflops\": %.1f, \"fp8_path\": \"%s\", "
               "\"fp8_own_tflops\": %.1f, \"bf16_tflops\": %.1f, \"fp32_tflops\": %.1f, \"fp8_over_bf16\": %.2f, "
               "\"fp8_of_peak\": %.3f, \"bf16_of_peak\": %.3f}",
               s ? "," : "", (long long)M, (long long)N, (long long)K, t[0], path[0], t[1], t[2], t[3],
               t[2] > 0 ? t[0] / t[2] : 0.0, t[0] / PEAK_FP8, t[2] / PEAK_BF16);
        fprintf(stderr, "M=%lld N=%lld K=%lld: fp8 %.1f TFLOPS (%s), fp8 own %.1f, bf16 %.1f, fp32 %.1f\n",
                (long long)M, (long long)N, (long long)K, t[0], path[0], t[1], t[2], t[3]);
    }
    printf("\n]}\n");
    return rc;
}
