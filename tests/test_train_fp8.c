/*
 * test_train_fp8.c — `--precision fp8`: the FP8 linear layer
 * (backend/cpu/matmul_fp8.h) installed as ops.linear_forward / linear_backward,
 * against an independent scalar composition: each operand quantized and
 * dequantized with ds_quantize / ds_dequantize (tested against torch in
 * test_fp8_quant.c) at DeepSeek's granularity (X, dY 1x128; W 128x128; dY and
 * X 128x1 for the weight gradient), then a plain double-precision GEMM of the
 * dequantized values.  Tolerance 1e-5 relative (the kernel sums each block of
 * 128 in FP32 and promotes with the scales, ~K·2^-24).
 * And FP8 training fidelity (DeepSeek-V3's criterion): the same run of `tiny`
 * on TinyShakespeare in bf16 and fp8 ends within 0.25% relative loss.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
#include "backend/cpu/matmul_fp8.h"
#include "backend/cpu/wcache.h"
#include "num/quant.h"
#include "test.h"

static float *randv(ds_rng *r, int64_t n) {
    float *v = ds_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = ds_rng_normal(r);
    return v;
}

/* x (rows, cols) quantized at gran and dequantized back (the oracle's operand) */
static float *qdq(const float *x, int64_t rows, int64_t cols, ds_quant_gran gran) {
    uint8_t *q = ds_malloc((size_t)(rows * cols) + 1);
    float *s = ds_malloc((size_t)ds_quant_scale_count(gran, rows, cols) * sizeof(float) + 4);
    float *y = ds_malloc((size_t)(rows * cols) * sizeof(float) + 4);
    ds_quant_opts o = ds_quant_defaults(gran);
    DS_ASSERT(ds_quantize(q, s, x, rows, cols, &o) == 0);
    DS_ASSERT(ds_dequantize(y, q, s, rows, cols, DS_FP8_E4M3, gran) == 0);
    free(q), free(s);
    return y;
}

TEST(linear_fp8_ops_entries_vs_quantize_dequantize_oracle) {
    /* the defaults are the FP32 matmul, so FP32 training is unchanged */
    CHECK(ds_ops_cpu.linear_forward == ds_ops_cpu.matmul_forward);
    CHECK(ds_ops_cpu.linear_backward == ds_ops_cpu.matmul_backward);
    CHECK(ds_ops_ref.linear_forward == ds_ops_ref.matmul_forward);
    CHECK(ds_ops_ref.linear_backward == ds_ops_ref.matmul_backward);
    struct ds_ops ops = ds_ops_cpu;
    ops.linear_forward = ds_linear_forward_fp8;
    ops.linear_backward = ds_linear_backward_fp8;
    ds_rng r;
    ds_rng_seed(&r, 21);
    /* N tokens, C inner, OC outputs; ragged edges on every dimension */
    const int64_t shapes[][3] = {{7, 33, 5}, {64, 128, 96}, {130, 300, 17}, {200, 257, 129}, {1, 1, 1}};
    for (int s = 0; s < 5; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = randv(&r, N * C), *w = randv(&r, OC * C), *b = randv(&r, OC), *dy = randv(&r, N * OC);
        for (int64_t i = 0; i < N * C; i += 37) x[i] *= 30; /* outliers */
        float *y = ds_malloc((size_t)(N * OC) * 4), *yo = ds_malloc((size_t)(N * OC) * 4);
        float *y32 = ds_malloc((size_t)(N * OC) * 4);
        ops.linear_forward(y, x, w, b, N, C, OC);
        ds_ops_cpu.matmul_forward(y32, x, w, b, N, C, OC);
        float *xq = qdq(x, N, C, DS_QUANT_TILE_1x128), *wq = qdq(w, OC, C, DS_QUANT_BLOCK_128x128);
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) {
                double acc = 0;
                for (int64_t c = 0; c < C; c++) acc += (double)xq[n * C + c] * wq[o * C + c];
                yo[n * OC + o] = (float)(acc + b[o]);
            }
        CHECK_MSG(ds_test_max_rel(y, yo, (size_t)(N * OC), 1e-3) < 1e-5, "forward %lld,%lld,%lld: %g",
                  (long long)N, (long long)C, (long long)OC, ds_test_max_rel(y, yo, (size_t)(N * OC), 1e-3));
        if (N * C > 1) /* really quantized: differs from FP32 by E4M3's ~2^-4 relative steps */
            CHECK(ds_test_max_rel(y, y32, (size_t)(N * OC), 1e-3) > 1e-3);
        /* backward: dinp added to a nonzero start (acc = 1), dweight and dbias accumulate */
        float *dx = randv(&r, N * C), *dw = randv(&r, OC * C), *db = randv(&r, OC);
        float *dxo = ds_malloc((size_t)(N * C) * 4), *dwo = ds_malloc((size_t)(OC * C) * 4);
        float *dbo = ds_malloc((size_t)OC * 4);
        float *dyq = qdq(dy, N, OC, DS_QUANT_TILE_1x128);
        float *dyt = qdq(dy, N, OC, DS_QUANT_TILE_128x1), *xt = qdq(x, N, C, DS_QUANT_TILE_128x1);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                double acc = dx[n * C + c];
                for (int64_t o = 0; o < OC; o++) acc += (double)dyq[n * OC + o] * wq[o * C + c];
                dxo[n * C + c] = (float)acc;
            }
        for (int64_t o = 0; o < OC; o++) {
            double sb = db[o];
            for (int64_t n = 0; n < N; n++) sb += dy[n * OC + o]; /* bias gradient stays FP32 */
            dbo[o] = (float)sb;
            for (int64_t c = 0; c < C; c++) {
                double acc = dw[o * C + c];
                for (int64_t n = 0; n < N; n++) acc += (double)dyt[n * OC + o] * xt[n * C + c];
                dwo[o * C + c] = (float)acc;
            }
        }
        ops.linear_backward(dx, dw, db, dy, x, w, N, C, OC, 1);
        CHECK_MSG(ds_test_max_rel(dx, dxo, (size_t)(N * C), 1e-3) < 1e-5, "dinp %lld,%lld,%lld", (long long)N,
                  (long long)C, (long long)OC);
        CHECK_MSG(ds_test_max_rel(dw, dwo, (size_t)(OC * C), 1e-3) < 1e-5, "dweight %lld,%lld,%lld",
                  (long long)N, (long long)C, (long long)OC);
        CHECK(ds_test_max_rel(db, dbo, (size_t)OC, 1e-3) < 1e-5);
        /* acc = 0 overwrites dinp; NULL dweight / dbias are skipped */
        ops.linear_backward(dx, NULL, NULL, dy, x, w, N, C, OC, 0);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                double acc = 0;
                for (int64_t o = 0; o < OC; o++) acc += (double)dyq[n * OC + o] * wq[o * C + c];
                dxo[n * C + c] = (float)acc;
            }
        CHECK(ds_test_max_rel(dx, dxo, (size_t)(N * C), 1e-3) < 1e-5);
        free(x), free(w), free(b), free(dy), free(y), free(yo), free(y32), free(xq), free(wq);
        free(dx), free(dw), free(db), free(dxo), free(dwo), free(dbo), free(dyq), free(dyt), free(xt);
    }
}

/* Mean of the last n training losses (total_loss: CE + λ·MTP, the objective)
 * and the final validation loss of a train_log.jsonl. */
static int read_losses(const char *path, int n, double *train_mean, double *val) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    double ring[64] = {0};
    int64_t cnt = 0;
    char line[4096];
    *val = NAN;
    while (fgets(line, sizeof line, f)) {
        char *p;
        if ((p = strstr(line, "\"val_loss\": "))) *val = atof(p + 12);
        else if ((p = strstr(line, "\"total_loss\": "))) ring[cnt++ % n] = atof(p + 14);
    }
    fclose(f);
    if (cnt < n) return -1;
    double s = 0;
    for (int i = 0; i < n; i++) s += ring[i];
    *train_mean = s / n;
    return 0;
}

/* The weights' FP8 blocks kept per epoch (backend/cpu/wcache.h): the FP8
 * linear's forward and input gradient read W's 128x128-block codes from the
 * copy; the same bits as quantizing at every call, a copy kept within an
 * epoch even when the weight changes (the caller's promise), quantized again
 * in a new epoch; experts from a parallel loop.  Oracle: the same linear with
 * no epoch (quantizing W at every call, as the quantize-dequantize test above
 * checks).  And a 30-step fp8 run against DS_WEIGHT_COPIES=0, checkpoint bytes. */
TEST(fp8_weight_blocks_per_epoch) {
    ds_test_linear t;
    ds_test_linear_init(&t, 23, 37, 260, 150, 5);
    const int64_t N = t.N, C = t.C, OC = t.OC, NW = t.nw;
    float *x = t.x, *dy = t.dy, **w = t.w, *y = t.y, *yr = t.yr, *dx = t.dx, *dxr = t.dxr;
    ds_wcache_epoch(-1);
    ds_linear_forward_fp8(yr, x, w[0], NULL, N, C, OC);
    ds_linear_backward_fp8(dxr, NULL, NULL, dy, x, w[0], N, C, OC, 0);
    ds_wcache_epoch(0);
    for (int rep = 0; rep < 2; rep++) { /* the second pass reads the copy */
        ds_linear_forward_fp8(y, x, w[0], NULL, N, C, OC);
        CHECK(memcmp(y, yr, (size_t)(N * OC) * 4) == 0);
        ds_linear_backward_fp8(dx, NULL, NULL, dy, x, w[0], N, C, OC, 0);
        CHECK(memcmp(dx, dxr, (size_t)(N * C) * 4) == 0);
    }
    for (int64_t i = 0; i < OC * C; i++) w[0][i] *= -3.0f; /* within the epoch: the copy stays */
    ds_linear_forward_fp8(y, x, w[0], NULL, N, C, OC);
    CHECK(memcmp(y, yr, (size_t)(N * OC) * 4) == 0);
    ds_wcache_epoch(1); /* a new epoch quantizes again */
    ds_linear_forward_fp8(y, x, w[0], NULL, N, C, OC);
    CHECK(memcmp(y, yr, (size_t)(N * OC) * 4) != 0);
    ds_wcache_epoch(-1);
    ds_linear_forward_fp8(yr, x, w[0], NULL, N, C, OC);
    CHECK(memcmp(y, yr, (size_t)(N * OC) * 4) == 0);
    for (int k = 0; k < NW; k++) ds_linear_forward_fp8(yr + k * N * OC, x, w[k], NULL, N, C, OC);
    ds_wcache_epoch(2);
#pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < NW; k++) ds_linear_forward_fp8(y + k * N * OC, x, w[k], NULL, N, C, OC);
    CHECK(memcmp(y, yr, (size_t)(NW * N * OC) * 4) == 0);
    ds_wcache_epoch(-1);
    ds_test_linear_free(&t);

    const char *tmp = ds_test_tmpdir();
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    char corpus[600], out[8192];
    snprintf(corpus, sizeof corpus, "%s/c.txt", tmp);
    ds_test_write_word_salad(corpus, 23, 600);
    int rc = ds_test_sh(out, sizeof out,
                        "%s tokenizer train --input %s --vocab-size 280 --special-tokens '<|bos|>' --out %s/tok.json && "
                        "%s data prepare --tokenizer %s/tok.json --input %s --out %s/data --docs line && "
                        "%s --threads 1 train --config tiny --data %s/data --out %s/w --steps 30 --batch 4 --seq 32 "
                        "--eval-every 0 --log-every 0 --precision fp8 && "
                        "DS_WEIGHT_COPIES=0 %s --threads 1 train --config tiny --data %s/data --out %s/nw --steps 30 "
                        "--batch 4 --seq 32 --eval-every 0 --log-every 0 --precision fp8 && "
                        "for f in $(cd %s/w/latest && ls *.safetensors); do cmp %s/w/latest/$f %s/nw/latest/$f || exit 1; done",
                        bin, corpus, tmp, bin, tmp, corpus, tmp, bin, tmp, tmp, bin, tmp, tmp, tmp, tmp, tmp);
    CHECK_MSG(rc == 0, "fp8 with and without the weight copies: %s", out);
}

/* DeepSeek-V3's FP8 fidelity criterion on a fixed short run: `tiny` (hidden
 * 128; the 64-wide LoRA ranks and expert width give ragged 1x128 tiles), 150
 * steps of 4 x 64 tokens of TinyShakespeare (BPE 512 trained on its first
 * 300 KB), bf16 and fp8 from the same seed, one thread each (deterministic),
 * for six seeds, at a peak learning rate of 1e-3 (cosine to 1e-4).
 * Why not `train`'s default 3e-3: there the run is chaotic, and a last-bit
 * difference grows to the size of the bound.  tools/parity_noise.sh measured
 * (2026-12-06, 12 seeds) the BF16 run on the AVX2 kernels (the same
 * arithmetic summed in another order, as on another machine) against the
 * AVX-512 one: at 3e-3 0.22% apart on the 3-seed val-loss mean, 0.52% on a
 * seed, as far as FP8 moved it (0.54% on a seed); at 1e-3 0.00-0.05% on the
 * means, 0.15% on a seed, so the bound measures FP8 rather than chance.
 * Measured at 1e-3 (AVX-512 Zen 4, dev build), seeds 7-12:
 *   val loss gap per seed  0.272% 0.057% 0.136% 0.019% 0.017% 0.026%
 *   means: val loss 0.063%, last-10 train loss 0.026%
 *   with DS_CPU_ISA=avx2: means 0.005% and 0.010%
 * fp8 with --fp8-cache (third run per seed, same margins asserted):
 *   val loss gap per seed  0.188% 0.023% 0.146% 0.027% 0.101% 0.046%
 *   means: val loss 0.081%, last-10 train loss 0.030% (AVX2: 0.023%, 0.071%)
 * (At 3e-3 the seed means had been 0.04-0.24%, one ASan+UBSan build 0.269%
 * with three seeds.)  Asserted: DeepSeek's 0.25% on the seed means of the
 * training loss (the paper's criterion); the val-loss mean within 0.4% and
 * each seed within 1%; and fp8 != bf16 (the FP8 path really ran). */
TEST(train_fp8_within_quarter_percent_of_bf16) {
    const char *txt = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!txt) SKIP("../shared/data/tinyshakespeare/input.txt not found");
    const char *tmp = ds_test_tmpdir();
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    char out[8192];
    int rc = ds_test_sh(out, sizeof out,
                        "head -c 300000 '%s' > %s/head.txt && "
                        "%s tokenizer train --input %s/head.txt --vocab-size 512 --no-special-tokens --special-tokens '<|bos|>' "
                        "--out %s/tok.json && "
                        "%s data prepare --tokenizer %s/tok.json --input '%s' --out %s/data --docs blank",
                        txt, tmp, bin, tmp, tmp, bin, tmp, txt, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    /* run 2: fp8 with --fp8-cache (model/model.h DS_ACTS_FP8_CACHE), same seeds */
    const char *prec[3] = {"bf16", "fp8", "fp8"}, *extra[3] = {"", "", "--fp8-cache"}, *tag[3] = {"bf16", "fp8", "fp8c"};
    enum { NSEED = 6 };
    const int seeds[NSEED] = {7, 8, 9, 10, 11, 12};
    double tr[3] = {0, 0, 0}, va[3] = {0, 0, 0}, worst = 0, worstc = 0;
    int differ = 0, differc = 0;
    for (int k = 0; k < NSEED; k++) {
        /* the three runs at once (two cores), one thread each */
        char cmd[3][1200];
        for (int i = 0; i < 3; i++)
            snprintf(cmd[i], sizeof cmd[i],
                     "%s --threads 1 train --config tiny --data %s/data --out %s/run_%s_%d --steps 150 --batch 4 "
                     "--seq 64 --eval-every 150 --eval-batches 0 --log-every 0 --lr 1e-3 --min-lr 1e-4 --precision %s %s "
                     "--seed %d > %s/log_%s.txt 2>&1",
                     bin, tmp, tmp, tag[i], seeds[k], prec[i], extra[i], seeds[k], tmp, tag[i]);
        rc = ds_test_sh(out, sizeof out,
                        "%s & a=$!; %s & b=$!; %s & c=$!; wait $a && wait $b && wait $c || { tail -3 %s/log_*.txt; exit 1; }",
                        cmd[0], cmd[1], cmd[2], tmp);
        CHECK_MSG(rc == 0, "%s", out);
        TEST_RETURN_IF_FAILED();
        double t[3], v[3];
        for (int i = 0; i < 3; i++) {
            char path[700];
            snprintf(path, sizeof path, "%s/run_%s_%d/train_log.jsonl", tmp, tag[i], seeds[k]);
            CHECK_MSG(read_losses(path, 10, &t[i], &v[i]) == 0, "%s: unreadable", path);
            TEST_RETURN_IF_FAILED();
            CHECK(isfinite(v[i]) && isfinite(t[i]));
            tr[i] += t[i] / NSEED, va[i] += v[i] / NSEED;
        }
        double g = fabs(v[1] - v[0]) / v[0], gc = fabs(v[2] - v[0]) / v[0];
        worst = g > worst ? g : worst;
        worstc = gc > worstc ? gc : worstc;
        differ += v[0] != v[1];
        differc += v[2] != v[1];
        fprintf(stderr, "  seed %d: val loss bf16 %.5f fp8 %.5f (%.3f%%) fp8+cache %.5f (%.3f%%)\n", seeds[k], v[0],
                v[1], 100 * g, v[2], 100 * gc);
    }
    double rvc = fabs(va[2] - va[0]) / va[0], rtc = fabs(tr[2] - tr[0]) / tr[0];
    fprintf(stderr, "  fp8 --fp8-cache means: val loss %.5f (%.3f%%); last-10 train loss %.5f (%.3f%%)\n", va[2],
            100 * rvc, tr[2], 100 * rtc);
    CHECK(rtc < 0.0025);
    CHECK(rvc < 0.004);
    CHECK(worstc < 0.01);
    CHECK(differc == NSEED); /* the cache changes the weight gradients, so the runs differ */
    /* `dsv3 train` prints the memory report, with the cache in use */
    rc = ds_test_sh(out, sizeof out, "grep -c 'memory: activation arena' %s/log_fp8c.txt && "
                    "grep -q 'fp8 cache: linear inputs' %s/log_fp8c.txt", tmp, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    double rv = fabs(va[1] - va[0]) / va[0], rt = fabs(tr[1] - tr[0]) / tr[0];
    fprintf(stderr, "  means: val loss bf16 %.5f fp8 %.5f (%.3f%%); last-10 train loss bf16 %.5f fp8 %.5f (%.3f%%)\n",
            va[0], va[1], 100 * rv, tr[0], tr[1], 100 * rt);
    CHECK(rt < 0.0025);
    CHECK(rv < 0.004);
    CHECK(worst < 0.01);
    CHECK(differ == NSEED);
}
