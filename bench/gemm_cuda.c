/* gemm_cuda.c — GPU GEMM benchmark (tools/gpu_check.sh): TFLOPS of the CUDA
 * backend's FP8 block-scaled GEMM (1x128 activations x 128x128 weights, E4M3,
 * FP32 out: cuBLASLt, dsv3's CUDA-core kernel and its tensor-core kernel)
 * against cuBLASLt BF16 (FP32 accumulation and output) and FP32 on
 * DeepSeek-V3's shapes, M = 4096 tokens: N x K = 7168x2048, 2048x7168,
 * 24576x1536, 7168x16384; then the routed experts' products, one cuBLASLt GEMM
 * an expert against one tensor-core launch for all (its fragments by ldmatrix
 * and by 32-bit loads); then attention's forward and backward (the FP32
 * kernels and the tensor-core variants).  Prints one JSON object.
 *   gemm_cuda [--probe] [--iters N] [--m M] [--json FILE]
 * --json FILE writes the JSON there (stdout otherwise; the progress lines go
 * to stderr either way).  The GEMM rows also time cuBLASLt tuned (the fastest
 * of its heuristic's first 8 algorithms, ds_cuda_lt_tune) for FP8 and BF16.
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
    const char *json = NULL;
    int64_t M = 4096;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--probe")) probe = 1;
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--m") && i + 1 < argc) M = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else {
            fprintf(stderr, "usage: gemm_cuda [--probe] [--iters N] [--m M] [--json FILE]\n");
            return 2;
        }
    }
    if (json && !freopen(json, "w", stdout)) {
        fprintf(stderr, "gemm_cuda: cannot write %s\n", json);
        return 2;
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
    static const char *kinds[] = {"fp8", "fp8-own", "bf16", "fp32", "fp8-mma", "fp8-tuned", "bf16-tuned"};
    enum { NK = 7 };
    printf("{\"gpu\": true, \"device\": ");
    json_str(ds_cuda_device_name());
    printf(", \"M\": %lld, \"iters\": %d, \"peak_tflops\": {\"fp8\": %g, \"bf16\": %g, \"fp32\": %g}, \"results\": [",
           (long long)M, iters, PEAK_FP8, PEAK_BF16, PEAK_FP32);
    int rc = 0;
    for (int s = 0; s < 4; s++) {
        int64_t N = shapes[s][0], K = shapes[s][1];
        double t[NK] = {0};
        const char *path[NK] = {""};
        static char pbuf[NK][128];
        for (int k = 0; k < NK; k++) {
            path[k] = "";
            /* the CUDA-core kernel and FP32 are slow: fewer launches */
            int it = k == 1 || k == 3 ? (iters + 9) / 10 : iters;
            if (ds_cuda_gemm_bench(kinds[k], M, N, K, it, &t[k], &path[k])) {
                fprintf(stderr, "gemm_cuda: %s %lldx%lldx%lld: %s\n", kinds[k], (long long)M, (long long)N,
                        (long long)K, ds_errmsg());
                rc = 1;
            }
            snprintf(pbuf[k], sizeof pbuf[k], "%s", path[k]); /* the tuned kinds' text is reused */
            path[k] = pbuf[k];
        }
        printf("%s\n  {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"fp8_tflops\": %.1f, \"fp8_path\": \"%s\", "
               "\"fp8_own_tflops\": %.1f, \"fp8_mma_tflops\": %.1f, \"bf16_tflops\": %.1f, \"fp32_tflops\": %.1f, "
               "\"fp8_over_bf16\": %.2f, \"fp8_of_peak\": %.3f, \"bf16_of_peak\": %.3f, ",
               s ? "," : "", (long long)M, (long long)N, (long long)K, t[0], path[0], t[1], t[4], t[2], t[3],
               t[2] > 0 ? t[0] / t[2] : 0.0, t[0] / PEAK_FP8, t[2] / PEAK_BF16);
        printf("\"fp8_tuned_tflops\": %.1f, \"fp8_tuned_path\": ", t[5]);
        json_str(path[5]);
        printf(", \"bf16_tuned_tflops\": %.1f, \"bf16_tuned_path\": ", t[6]);
        json_str(path[6]);
        printf(", \"fp8_tuned_over_bf16_tuned\": %.2f}", t[6] > 0 ? t[5] / t[6] : 0.0);
        fprintf(stderr, "M=%lld N=%lld K=%lld: fp8 %.1f TFLOPS (%s), fp8 CUDA cores %.1f, fp8 tensor-core kernel %.1f, "
                        "bf16 %.1f, fp32 %.1f; tuned: fp8 %.1f (%s), bf16 %.1f (%s)\n",
                (long long)M, (long long)N, (long long)K, t[0], path[0], t[1], t[4], t[2], t[3], t[5], path[5], t[6],
                path[6]);
    }
    /* the routed experts' FP8 forward products: one cuBLASLt GEMM each against
     * one launch of the tensor-core kernel (G experts of `rows` rows; the ~1B
     * preset's gate/up and down, then DeepSeek-V3's with 32 experts a GPU) */
    static const int64_t ex[][4] = {{32, 768, 512, 1536}, {32, 768, 1536, 512}, {32, 512, 2048, 7168}, {32, 512, 7168, 2048}};
    printf("\n], \"experts\": [");
    for (int s = 0; s < 4; s++) {
        double lt = 0, mm = 0, mp = 0;
        const char *pl = "", *pm = "", *pp = "";
        if (ds_cuda_gemm_bench_experts("lt", ex[s][0], ex[s][1], ex[s][2], ex[s][3], iters, &lt, &pl) ||
            ds_cuda_gemm_bench_experts("mma", ex[s][0], ex[s][1], ex[s][2], ex[s][3], iters, &mm, &pm) ||
            ds_cuda_gemm_bench_experts("mma-plain", ex[s][0], ex[s][1], ex[s][2], ex[s][3], iters, &mp, &pp)) {
            fprintf(stderr, "gemm_cuda: experts %lld x %lld rows, %lldx%lld: %s\n", (long long)ex[s][0],
                    (long long)ex[s][1], (long long)ex[s][2], (long long)ex[s][3], ds_errmsg());
            rc = 1;
        }
        printf("%s\n  {\"G\": %lld, \"rows\": %lld, \"N\": %lld, \"K\": %lld, \"lt_tflops\": %.1f, \"lt_path\": \"%s\", "
               "\"mma_tflops\": %.1f, \"mma_over_lt\": %.2f, \"mma_plain_tflops\": %.1f}",
               s ? "," : "", (long long)ex[s][0], (long long)ex[s][1], (long long)ex[s][2], (long long)ex[s][3], lt, pl,
               mm, lt > 0 ? mm / lt : 0.0, mp);
        fprintf(stderr, "experts %lld x %lld rows, N=%lld K=%lld: one cuBLASLt GEMM each %.1f TFLOPS (%s), "
                        "one tensor-core launch %.1f (ldmatrix), %.1f (32-bit fragment loads)\n",
                (long long)ex[s][0], (long long)ex[s][1], (long long)ex[s][2], (long long)ex[s][3], lt, pl, mm, mp);
    }
    /* attention forward and backward, causal: the FP32 kernels against the
     * tensor-core ones in the variants they pick, at a tile of 64 everywhere,
     * and with every accumulator in shared memory (the WMMA kernels) (`small`'s head
     * dims, the ~1B preset's and DeepSeek-V3's at 8 x 512, and at 4096 tokens) */
    static const int64_t at[][5] = {{8, 512, 8, 96, 64}, {8, 512, 12, 192, 128}, {1, 4096, 16, 192, 128}};
    static const char *hows[] = {"fp32", "tc", "tc-tile64", "tc-smem"};
    printf("\n], \"attention\": [");
    for (int s = 0; s < 3; s++) {
        double f[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
        for (int h = 0; h < 4; h++)
            if (ds_cuda_attention_bench(hows[h], at[s][0], at[s][1], at[s][2], at[s][3], at[s][4],
                                        h ? iters : (iters + 9) / 10, &f[h], &b[h])) {
                fprintf(stderr, "gemm_cuda: attention %s B=%lld T=%lld NH=%lld dims (%lld, %lld): %s\n", hows[h],
                        (long long)at[s][0], (long long)at[s][1], (long long)at[s][2], (long long)at[s][3],
                        (long long)at[s][4], ds_errmsg());
                rc = 1;
            }
        printf("%s\n  {\"B\": %lld, \"T\": %lld, \"NH\": %lld, \"DQ\": %lld, \"DV\": %lld", s ? "," : "",
               (long long)at[s][0], (long long)at[s][1], (long long)at[s][2], (long long)at[s][3], (long long)at[s][4]);
        for (int h = 0; h < 4; h++) printf(", \"%s_fwd_tflops\": %.1f, \"%s_bwd_tflops\": %.1f", hows[h], f[h], hows[h], b[h]);
        printf("}");
        fprintf(stderr, "attention B=%lld T=%lld NH=%lld dims (%lld, %lld), TFLOPS fwd / bwd: fp32 %.1f / %.1f, "
                        "tensor cores %.1f / %.1f, tile 64 %.1f / %.1f, shared accumulators %.1f / %.1f\n",
                (long long)at[s][0], (long long)at[s][1], (long long)at[s][2], (long long)at[s][3], (long long)at[s][4],
                f[0], b[0], f[1], b[1], f[2], b[2], f[3], b[3]);
    }
    printf("\n]}\n");
    return rc;
}
