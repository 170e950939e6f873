/*
 * cmd_fp8.c — `dsv3 fp8 study`: the accumulation study (FP8 GEMM error vs K,
 * with DeepSeek's promotion every 128 and with an emulated limited tensor-core
 * accumulator); `dsv3 fp8 bench`: FP8 / BF16 / FP32 GEMM throughput;
 * `dsv3 fp8 analyze` is in cmd_fp8_analyze.c.
 */
#include "cli/cli.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/gemm_fp8.h"
#include "num/dtype.h"
#include "num/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef DS_HAVE_OPENBLAS
#include <cblas.h>
#endif

/* Parse "a,b,c" into up to max positive integers; returns the count or -1. */
static int parse_list(const char *s, int64_t *v, int max) {
    int n = 0;
    while (*s) {
        char *end;
        long long x = strtoll(s, &end, 10);
        if (end == s || x <= 0 || n >= max) return -1;
        v[n++] = x;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return n;
}

/* ---- the accumulation study --------------------------------------------------- */
typedef struct { double rel_rms, max_rel_norm, max_rel_elem, diff; } err_stats;

/* C against ref (float64): relative RMS, max|C-ref|/max|ref|, the largest
 * elementwise |C-ref|/|ref| over elements with |ref| >= 0.1 rms(ref) (tiny
 * sums have unbounded relative error), and DeepGEMM's 1 - 2 sum xy / sum(x^2+y^2). */
static err_stats errors(const float *c, const double *ref, int64_t n) {
    double se = 0, sr = 0, me = 0, mr = 0, sxy = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = c[i] - ref[i];
        se += e * e;
        sr += ref[i] * ref[i];
        if (fabs(e) > me) me = fabs(e);
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
        sxy += c[i] * ref[i];
        s2 += (double)c[i] * c[i] + ref[i] * ref[i];
    }
    double rms = sqrt(sr / (n > 0 ? n : 1)), mel = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(ref[i]) >= 0.1 * rms && fabs(ref[i]) > 0) {
            double r = fabs(c[i] - ref[i]) / fabs(ref[i]);
            if (r > mel) mel = r;
        }
    return (err_stats){sr > 0 ? sqrt(se / sr) : 0, mr > 0 ? me / mr : 0, mel, s2 > 0 ? 1 - 2 * sxy / s2 : 0};
}

static double *gemm_f64_nt(const float *a, const float *b, int64_t M, int64_t N, int64_t K) {
    double *c = ds_malloc(sizeof(double) * (size_t)(M * N));
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)a[m * K + k] * b[n * K + k];
            c[m * N + n] = s;
        }
    return c;
}

static int study(int argc, char **argv) {
    const char *ks = "128,256,512,1024,2048,4096,8192,16384", *dist = "normal", *json = NULL, *scaling = "fine";
    long long m = 64, n = 64, bits = 14, chunk = 32, seed = 1234;
    ds_opt opts[] = {
        {"--k", DS_OPT_STR, &ks, "LIST  inner sizes (default 128,...,16384)"},
        {"--m", DS_OPT_INT, &m, "N     rows of A (default 64)", DS_RANGE(1, 4096)},
        {"--n", DS_OPT_INT, &n, "N     rows of B (default 64)", DS_RANGE(1, 4096)},
        {"--bits", DS_OPT_INT, &bits, "N     limited accumulator: significant bits kept (default 14)", DS_RANGE(1, 40)},
        {"--chunk", DS_OPT_INT, &chunk, "N     limited accumulator: products aligned together (default 32)", DS_RANGE(1, 256)},
        {"--dist", DS_OPT_STR, &dist, "D     normal (default) or uniform (in [0, 1): all sums grow)"},
        {"--scaling", DS_OPT_STR, &scaling, "S     fine (A 1x128, B 128x128; default) or tensor (one scale each)"},
        {"--seed", DS_OPT_INT, &seed, "N     random seed (default 1234)", DS_MIN(0)},
        {"--json", DS_OPT_STR, &json, "FILE  also write the results as JSON"},
    };
    ds_cli_parse("fp8 study", "[options]", argc, argv, opts, sizeof opts / sizeof *opts, NULL, 0, NULL);
    int64_t kv[64];
    int nk = parse_list(ks, kv, 64);
    if (nk <= 0) ds_cli_usage_error("fp8 study", "--k needs a comma list of positive integers, got %s", ds_quote(ks));
    if (m <= 0 || n <= 0 || m > 4096 || n > 4096) ds_cli_usage_error("fp8 study", "--m and --n must be in 1..4096");
    if (bits < 1 || bits > 40) ds_cli_usage_error("fp8 study", "--bits must be in 1..40");
    if (chunk < 1 || chunk > 256) ds_cli_usage_error("fp8 study", "--chunk must be in 1..256");
    static const char *const dists[] = {"normal", "uniform"}, *const scalings[] = {"fine", "tensor"};
    ds_cli_check_choice("fp8 study", "--dist: unknown value", dist, dists, 2);
    ds_cli_check_choice("fp8 study", "--scaling: unknown value", scaling, scalings, 2);
    int uniform = !strcmp(dist, "uniform");
    int per_tensor = !strcmp(scaling, "tensor");
    const ds_quant_gran ga = per_tensor ? DS_QUANT_TENSOR : DS_QUANT_TILE_1x128;
    const ds_quant_gran gb = per_tensor ? DS_QUANT_TENSOR : DS_QUANT_BLOCK_128x128;
    const char *gdesc = per_tensor ? "per-tensor scales" : "A 1x128, B 128x128";

    ds_afile af = {0};
    if (json && ds_afile_open(&af, json)) return ds_cli_fail("fp8 study");
    FILE *jf = json ? af.f : NULL;
    if (jf)
        fprintf(jf, "{\n  \"what\": \"FP8 E4M3 GEMM error vs K: A (%lld, K), B (%lld, K), %s; "
                    "reference: float64 GEMM of the dequantized inputs\",\n"
                    "  \"dist\": \"%s\", \"scaling\": \"%s\", \"seed\": %lld, \"limited_bits\": %lld, \"limited_chunk\": %lld,\n  \"rows\": [\n",
                m, n, gdesc, dist, scaling, seed, bits, chunk);
    printf("FP8 E4M3 GEMM, A (%lld, K), B (%lld, K), %s, %s data; error against a float64 GEMM\n"
           "of the dequantized inputs.  promoted: FP32 promotion every 128 (DeepSeek); limited: whole-K\n"
           "accumulation keeping %lld bits, aligned per %lld products (H800-like, no promotion).\n"
           "rel_rms = ||C-ref|| / ||ref||; max_rel = max |C-ref| / |ref| over |ref| >= 0.1 rms; quant = promoted vs the unquantized inputs.\n\n",
           m, n, gdesc, dist, bits, chunk);
    printf("%7s | %11s %11s %11s | %11s %11s %11s | %11s\n", "K", "prom rel_rms", "prom max_rel", "prom diff",
           "lim rel_rms", "lim max_rel", "lim diff", "quant diff");
    ds_rng r;
    ds_rng_seed(&r, (uint64_t)seed);
    for (int t = 0; t < nk; t++) {
        int64_t K = kv[t];
        float *a = ds_malloc(sizeof(float) * (size_t)(m * K)), *b = ds_malloc(sizeof(float) * (size_t)(n * K));
        for (int64_t i = 0; i < m * K; i++) a[i] = uniform ? (float)ds_rng_uniform(&r) : ds_rng_normal(&r);
        for (int64_t i = 0; i < n * K; i++) b[i] = uniform ? (float)ds_rng_uniform(&r) : ds_rng_normal(&r);
        uint8_t *aq = ds_malloc((size_t)(m * K)), *bq = ds_malloc((size_t)(n * K));
        float *as = ds_malloc(sizeof(float) * (size_t)ds_quant_scale_count(ga, m, K));
        float *bs = ds_malloc(sizeof(float) * (size_t)ds_quant_scale_count(gb, n, K));
        ds_quant_opts qa = ds_quant_defaults(ga), qb = ds_quant_defaults(gb);
        ds_fp8_operand A = {aq, as, ga, 0, DS_FP8_E4M3}, B = {bq, bs, gb, 0, DS_FP8_E4M3};
        float *ad = ds_malloc(sizeof(float) * (size_t)(m * K)), *bd = ds_malloc(sizeof(float) * (size_t)(n * K));
        float *cp = ds_malloc(sizeof(float) * (size_t)(m * n)), *cl = ds_malloc(sizeof(float) * (size_t)(m * n));
        ds_fp8_gemm_opts lim = {.acc = DS_FP8_ACC_LIMITED, .acc_bits = (int)bits, .acc_chunk = (int)chunk};
        if (ds_quantize(aq, as, a, m, K, &qa) || ds_quantize(bq, bs, b, n, K, &qb) ||
            ds_dequantize(ad, aq, as, m, K, DS_FP8_E4M3, ga) || ds_dequantize(bd, bq, bs, n, K, DS_FP8_E4M3, gb) ||
            ds_fp8_gemm_ex(cp, &A, &B, m, n, K, NULL) || ds_fp8_gemm_ex(cl, &A, &B, m, n, K, &lim)) {
            if (json) ds_afile_abort(&af);
            return ds_cli_fail("fp8 study");
        }
        double *ref = gemm_f64_nt(ad, bd, m, n, K), *ref0 = gemm_f64_nt(a, b, m, n, K);
        err_stats p = errors(cp, ref, m * n), l = errors(cl, ref, m * n), q = errors(cp, ref0, m * n);
        printf("%7lld | %11.3e %11.3e %11.3e | %11.3e %11.3e %11.3e | %11.3e\n", (long long)K, p.rel_rms,
               p.max_rel_elem, p.diff, l.rel_rms, l.max_rel_elem, l.diff, q.diff);
        if (jf)
            fprintf(jf,
                    "    {\"K\": %lld, \"promoted\": {\"rel_rms\": %.6e, \"max_rel\": %.6e, \"max_rel_norm\": %.6e, \"diff\": %.6e},\n"
                    "     \"limited\": {\"rel_rms\": %.6e, \"max_rel\": %.6e, \"max_rel_norm\": %.6e, \"diff\": %.6e},\n"
                    "     \"promoted_vs_unquantized\": {\"rel_rms\": %.6e, \"max_rel\": %.6e, \"diff\": %.6e}}%s\n",
                    (long long)K, p.rel_rms, p.max_rel_elem, p.max_rel_norm, p.diff, l.rel_rms, l.max_rel_elem,
                    l.max_rel_norm, l.diff, q.rel_rms, q.max_rel_elem, q.diff, t + 1 < nk ? "," : "");
        free(a); free(b); free(aq); free(bq); free(as); free(bs); free(ad); free(bd);
        free(cp); free(cl); free(ref); free(ref0);
    }
    if (jf) {
        fprintf(jf, "  ]\n}\n");
        if (ds_afile_commit(&af)) return ds_cli_fail("fp8 study");
    }
    return 0;
}

/* ---- GEMM throughput -------------------------------------------------------------- */
/* Cheap deterministic fill in [-1, 1), in parallel (the DeepSeek shapes are large). */
static void fill(float *x, int64_t n, uint64_t seed) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = (uint64_t)i * 0x9e3779b97f4a7c15ULL + seed;
        h ^= h >> 31; h *= 0xbf58476d1ce4e5b9ULL; h ^= h >> 29;
        x[i] = (float)((double)(h >> 40) / 8388608.0 - 1.0);
    }
}

static const int64_t small_shapes[][3] = {{512, 768, 768}, {512, 512, 768}, {512, 768, 512}, {512, 256, 768}};
static const int64_t ds_shapes[][3] = {{256, 2048, 7168}, {1024, 2048, 7168}, {256, 7168, 2048}, {256, 18432, 7168}};

static int bench(int argc, char **argv) {
    const char *preset = "all", *shapes = NULL, *json = NULL;
    long long reps = 2;
    ds_opt opts[] = {
        {"--preset", DS_OPT_STR, &preset, "P     small (~100M model), deepseek (V3 expert and dense), all (default)"},
        {"--shapes", DS_OPT_STR, &shapes, "LIST  M,N,K[;M,N,K...] instead of a preset"},
        {"--reps", DS_OPT_INT, &reps, "N     timed runs per GEMM, best kept (default 2, after one warm-up)", DS_RANGE(1, 100)},
        {"--json", DS_OPT_STR, &json, "FILE  write the results as JSON"},
    };
    ds_cli_parse("fp8 bench", "[options]", argc, argv, opts, sizeof opts / sizeof *opts, NULL, 0, NULL);
    int64_t sh[64][3];
    int ns = 0;
    if (shapes) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", shapes);
        for (char *tok = strtok(buf, ";"); tok; tok = strtok(NULL, ";")) {
            if (ns >= 64 || parse_list(tok, sh[ns], 3) != 3)
                ds_cli_usage_error("fp8 bench", "--shapes needs M,N,K[;M,N,K...], got %s", ds_quote(shapes));
            ns++;
        }
    } else {
        static const char *const presets[] = {"small", "deepseek", "all"};
        ds_cli_check_choice("fp8 bench", "--preset: unknown value", preset, presets, 3);
        int sm = !strcmp(preset, "small") || !strcmp(preset, "all"), dsp = !strcmp(preset, "deepseek") || !strcmp(preset, "all");
        if (!sm && !dsp) ds_cli_usage_error("fp8 bench", "--preset must be small, deepseek or all");
        if (sm) for (int i = 0; i < 4; i++, ns++) memcpy(sh[ns], small_shapes[i], sizeof sh[ns]);
        if (dsp) for (int i = 0; i < 4; i++, ns++) memcpy(sh[ns], ds_shapes[i], sizeof sh[ns]);
    }
    if (reps < 1 || reps > 100) ds_cli_usage_error("fp8 bench", "--reps must be in 1..100");

    ds_afile af = {0};
    if (json && ds_afile_open(&af, json)) return ds_cli_fail("fp8 bench");
    FILE *jf = json ? af.f : NULL;
    if (jf)
        fprintf(jf, "{\n  \"bench\": \"gemm\", \"unit\": \"GFLOP/s (2MNK / best time)\", \"threads\": %d, \"isa\": \"%s\",\n"
                    "  \"note\": \"C (M,N) = A (M,K) . B (N,K)^T in FP32; fp8: E4M3 1x128 x 128x128 pre-quantized, promotion every 128; "
                    "bf16: BF16 inputs, FP32 accumulate; fp32: OpenBLAS cblas_sgemm\",\n  \"results\": [\n",
                ds_threads(), ds_fp8_gemm_isa());
    printf("GEMM C (M,N) = A (M,K) . B (N,K)^T, %d threads, kernel %s; GFLOP/s, best of %lld\n", ds_threads(),
           ds_fp8_gemm_isa(), reps);
    printf("%6s %6s %6s | %9s %9s %9s | %9s\n", "M", "N", "K", "fp8", "bf16", "fp32-blas", "fp8/blas");
    for (int s = 0; s < ns; s++) {
        int64_t M = sh[s][0], N = sh[s][1], K = sh[s][2];
        float *a = ds_malloc(sizeof(float) * (size_t)(M * K)), *b = ds_malloc(sizeof(float) * (size_t)(N * K));
        float *c = ds_malloc(sizeof(float) * (size_t)(M * N));
        fill(a, M * K, 1 + (uint64_t)s);
        fill(b, N * K, 1000 + (uint64_t)s);
        uint8_t *aq = ds_malloc((size_t)(M * K)), *bq = ds_malloc((size_t)(N * K));
        float *as = ds_malloc(sizeof(float) * (size_t)ds_quant_scale_count(DS_QUANT_TILE_1x128, M, K));
        float *bs = ds_malloc(sizeof(float) * (size_t)ds_quant_scale_count(DS_QUANT_BLOCK_128x128, N, K));
        ds_quant_opts qa = ds_quant_defaults(DS_QUANT_TILE_1x128), qb = ds_quant_defaults(DS_QUANT_BLOCK_128x128);
        double tq = ds_now();
        if (ds_quantize(aq, as, a, M, K, &qa) || ds_quantize(bq, bs, b, N, K, &qb)) return ds_cli_fail("fp8 bench");
        tq = ds_now() - tq;
        uint16_t *ah = ds_malloc(2 * (size_t)(M * K)), *bh = ds_malloc(2 * (size_t)(N * K));
        ds_f32_to_bf16_n(ah, a, M * K);
        ds_f32_to_bf16_n(bh, b, N * K);
        double flop = 2.0 * M * N * K, best[3] = {0, 0, 0};
        for (int kind = 0; kind < 3; kind++) {
#ifndef DS_HAVE_OPENBLAS
            if (kind == 2) break;
#endif
            for (int rep = 0; rep <= reps; rep++) {
                double t = ds_now();
                if (kind == 0) ds_fp8_gemm(c, aq, as, bq, bs, M, N, K, NULL);
                else if (kind == 1) ds_bf16_gemm(c, ah, 0, bh, 0, M, N, K, 0);
#ifdef DS_HAVE_OPENBLAS
                else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, a, (int)K, b,
                                 (int)K, 0.0f, c, (int)N);
#endif
                t = ds_now() - t;
                if (rep > 0 && flop / t / 1e9 > best[kind]) best[kind] = flop / t / 1e9;
            }
        }
        printf("%6lld %6lld %6lld | %9.1f %9.1f %9.1f | %9.2f\n", (long long)M, (long long)N, (long long)K, best[0],
               best[1], best[2], best[2] > 0 ? best[0] / best[2] : 0.0);
        if (jf)
            fprintf(jf, "    {\"M\": %lld, \"N\": %lld, \"K\": %lld, \"fp8\": %.2f, \"bf16\": %.2f, \"fp32_blas\": %.2f, "
                        "\"fp8_quantize_s\": %.4f}%s\n",
                    (long long)M, (long long)N, (long long)K, best[0], best[1], best[2], tq, s + 1 < ns ? "," : "");
        free(a); free(b); free(c); free(aq); free(bq); free(as); free(bs); free(ah); free(bh);
    }
    if (jf) {
        fprintf(jf, "  ]\n}\n");
        if (ds_afile_commit(&af)) return ds_cli_fail("fp8 bench");
    }
    return 0;
}

int ds_cmd_fp8_analyze(int argc, char **argv); /* cmd_fp8_analyze.c */

static int cmd_fp8(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: dsv3 fp8 <study|bench|analyze> [options]\n"
                   "  study   FP8 GEMM error vs K with and without promotion (table, --json FILE)\n"
                   "  bench   FP8 / BF16 / FP32 GEMM GFLOP/s (table, --json FILE)\n"
                   "  analyze quantization error of a model's weights per scaling and format (table, --json FILE)\n");
        ds_cli_print_examples(f, "fp8");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "study")) return study(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench")) return bench(argc - 1, argv + 1);
    if (!strcmp(argv[1], "analyze")) return ds_cmd_fp8_analyze(argc - 1, argv + 1);
    static const char *const subs[] = {"study", "bench", "analyze"};
    ds_cli_check_choice("fp8", "unknown subcommand", argv[1], subs, 3);
    return 2;
}
DS_COMMAND("fp8", "FP8 tools: accumulation study, GEMM bench, weight analysis", cmd_fp8)
