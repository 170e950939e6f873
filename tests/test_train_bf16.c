/*
 * test_train_bf16.c — `--precision bf16`: the BF16-input linear layer
 * (backend/cpu/matmul_bf16.h) against (a) its _ref version, bit for bit, and (b)
 * an independent scalar oracle: inputs rounded to BF16 with
 * ds_f32_to_bf16 (tested against torch in test_fp8_codec.c), products summed
 * in double; tolerance 1e-5 relative (FP32 sums over K <= 300 terms, ~K·2^-24).
 * And a short training run in bf16 stays within 2% of the FP32 run's loss
 * (measured 0.5% after 30 steps of tiny).
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/cpu/matmul_bf16.h"
#include "backend/cpu/wcache.h"
#include "backend/ops.h"
#include "num/dtype.h"
#include "train/adamw.h"
#include "train/trainer.h"
#include "test.h"

static float rb(float x) { return ds_bf16_to_f32(ds_f32_to_bf16(x)); }

static float *randv(ds_rng *r, int64_t n) {
    float *v = ds_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = ds_rng_normal(r);
    return v;
}

TEST(matmul_bf16_forward_backward_vs_oracle) {
    ds_rng r;
    ds_rng_seed(&r, 11);
    /* the last: 600 outputs (three column tiles: A packed once per call), K blocks of 128 plus a tail */
    const int64_t shapes[][3] = {{7, 33, 5}, {64, 128, 96}, {130, 300, 17}, {1, 1, 1}, {200, 300, 600}};
    for (int s = 0; s < 5; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = randv(&r, N * C), *w = randv(&r, OC * C), *b = randv(&r, OC), *dy = randv(&r, N * OC);
        float *y = ds_malloc((size_t)(N * OC) * 4), *y2 = ds_malloc((size_t)(N * OC) * 4);
        float *yo = ds_malloc((size_t)(N * OC) * 4);
        ds_matmul_forward_bf16(y, x, w, b, N, C, OC);
        ds_matmul_forward_bf16_ref(y2, x, w, b, N, C, OC);
        CHECK(memcmp(y, y2, (size_t)(N * OC) * 4) == 0);
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OC; o++) {
                double acc = 0;
                for (int64_t c = 0; c < C; c++) acc += (double)rb(x[n * C + c]) * rb(w[o * C + c]);
                yo[n * OC + o] = (float)(acc + b[o]);
            }
        CHECK_MSG(ds_test_max_rel(y, yo, (size_t)(N * OC), 1e-3) < 1e-5, "forward %lld,%lld,%lld", (long long)N,
                  (long long)C, (long long)OC);
        /* backward: dinp added to a nonzero start (acc = 1), dweight and dbias accumulate */
        float *dx = randv(&r, N * C), *dw = randv(&r, OC * C), *db = randv(&r, OC);
        float *dx2 = ds_malloc((size_t)(N * C) * 4), *dw2 = ds_malloc((size_t)(OC * C) * 4), *db2 = ds_malloc((size_t)OC * 4);
        float *dxo = ds_malloc((size_t)(N * C) * 4), *dwo = ds_malloc((size_t)(OC * C) * 4), *dbo = ds_malloc((size_t)OC * 4);
        memcpy(dx2, dx, (size_t)(N * C) * 4), memcpy(dw2, dw, (size_t)(OC * C) * 4), memcpy(db2, db, (size_t)OC * 4);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                double acc = dx[n * C + c];
                for (int64_t o = 0; o < OC; o++) acc += (double)rb(dy[n * OC + o]) * rb(w[o * C + c]);
                dxo[n * C + c] = (float)acc;
            }
        for (int64_t o = 0; o < OC; o++) {
            double sb = db[o];
            for (int64_t n = 0; n < N; n++) sb += dy[n * OC + o];
            dbo[o] = (float)sb;
            for (int64_t c = 0; c < C; c++) {
                double acc = dw[o * C + c];
                for (int64_t n = 0; n < N; n++) acc += (double)rb(dy[n * OC + o]) * rb(x[n * C + c]);
                dwo[o * C + c] = (float)acc;
            }
        }
        ds_matmul_backward_bf16(dx, dw, db, dy, x, w, N, C, OC, 1);
        ds_matmul_backward_bf16_ref(dx2, dw2, db2, dy, x, w, N, C, OC, 1);
        CHECK(memcmp(dx, dx2, (size_t)(N * C) * 4) == 0);
        CHECK(memcmp(dw, dw2, (size_t)(OC * C) * 4) == 0);
        CHECK(memcmp(db, db2, (size_t)OC * 4) == 0);
        CHECK(ds_test_max_rel(dx, dxo, (size_t)(N * C), 1e-3) < 1e-5);
        CHECK(ds_test_max_rel(dw, dwo, (size_t)(OC * C), 1e-3) < 1e-5);
        CHECK(ds_test_max_rel(db, dbo, (size_t)OC, 1e-3) < 1e-5);
        /* acc = 0 overwrites dinp */
        ds_matmul_backward_bf16(dx, NULL, NULL, dy, x, w, N, C, OC, 0);
        for (int64_t i = 0; i < N * C; i++) dxo[i] = 0;
        ds_matmul_backward_bf16_ref(dxo, NULL, NULL, dy, x, w, N, C, OC, 1);
        CHECK(memcmp(dx, dxo, (size_t)(N * C) * 4) == 0);
        free(x), free(w), free(b), free(dy), free(y), free(y2), free(yo);
        free(dx), free(dw), free(db), free(dx2), free(dw2), free(db2), free(dxo), free(dwo), free(dbo);
    }
}

/* The same 30 steps of tiny in fp32 and bf16 (synthetic corpus): the final
 * training loss differs by < 2% relative, and the bf16 run is not bit-identical
 * to fp32 (the BF16 path really ran). */
/* The weights' BF16 copies (ds_wcache_epoch): same bits as the
 * converting path (the _ref, which never keeps copies); a weight changed within
 * an epoch is not seen (the copy is in use), a new epoch or no epoch sees it;
 * weights used from a parallel loop (the experts) each get their own copy. */
TEST(matmul_bf16_weight_copies_per_epoch) {
    ds_test_linear t;
    ds_test_linear_init(&t, 12, 37, 129, 45, 6);
    const int64_t N = t.N, C = t.C, OC = t.OC, NW = t.nw;
    float *x = t.x, *dy = t.dy, **w = t.w, *y = t.y, *yr = t.yr, *dx = t.dx, *dxr = t.dxr;
    ds_rng r;
    ds_rng_seed(&r, 13);
    ds_wcache_epoch(0);
    for (int rep = 0; rep < 2; rep++) { /* the second pass reads the copies */
        ds_matmul_forward_bf16(y, x, w[0], NULL, N, C, OC);
        ds_matmul_forward_bf16_ref(yr, x, w[0], NULL, N, C, OC);
        CHECK(memcmp(y, yr, (size_t)(N * OC) * 4) == 0);
        ds_matmul_backward_bf16(dx, NULL, NULL, dy, x, w[0], N, C, OC, 0);
        ds_matmul_backward_bf16_ref(dxr, NULL, NULL, dy, x, w[0], N, C, OC, 0);
        CHECK(memcmp(dx, dxr, (size_t)(N * C) * 4) == 0);
    }
    float *old = ds_malloc((size_t)(N * OC) * 4);
    memcpy(old, yr, (size_t)(N * OC) * 4);
    for (int64_t i = 0; i < OC * C; i++) w[0][i] *= -2.0f; /* within the epoch: the copy stays */
    ds_matmul_forward_bf16(y, x, w[0], NULL, N, C, OC);
    CHECK(memcmp(y, old, (size_t)(N * OC) * 4) == 0);
    ds_wcache_epoch(1); /* a new epoch converts again */
    ds_matmul_forward_bf16(y, x, w[0], NULL, N, C, OC);
    ds_matmul_forward_bf16_ref(yr, x, w[0], NULL, N, C, OC);
    CHECK(memcmp(y, yr, (size_t)(N * OC) * 4) == 0 && memcmp(y, old, (size_t)(N * OC) * 4) != 0);
#pragma omp parallel for schedule(dynamic, 1)
    for (int k = 0; k < NW; k++) ds_matmul_forward_bf16(y + k * N * OC, x, w[k], NULL, N, C, OC);
    for (int k = 0; k < NW; k++) ds_matmul_forward_bf16_ref(yr + k * N * OC, x, w[k], NULL, N, C, OC);
    CHECK(memcmp(y, yr, (size_t)(NW * N * OC) * 4) == 0);
    { /* a weight over several column tiles (240) and K blocks (128), both directions */
        const int64_t N2 = 50, C2 = 260, OC2 = 301;
        float *x2 = randv(&r, N2 * C2), *w2 = randv(&r, OC2 * C2), *dy2 = randv(&r, N2 * OC2);
        float *y2 = ds_malloc((size_t)(N2 * OC2) * 4), *y2r = ds_malloc((size_t)(N2 * OC2) * 4);
        float *d2 = randv(&r, N2 * C2), *d2r = ds_malloc((size_t)(N2 * C2) * 4);
        for (int64_t i = 0; i < OC2 * C2; i += 7) /* ties of the BF16 rounding (to even: down, up) */
            w2[i] = (i / 7) % 2 ? 1.0f + 3.0f / 256.0f : -(1.0f + 1.0f / 256.0f);
        memcpy(d2r, d2, (size_t)(N2 * C2) * 4);
        for (int rep = 0; rep < 2; rep++) {
            ds_matmul_forward_bf16(y2, x2, w2, NULL, N2, C2, OC2);
            ds_matmul_forward_bf16_ref(y2r, x2, w2, NULL, N2, C2, OC2);
            CHECK(memcmp(y2, y2r, (size_t)(N2 * OC2) * 4) == 0);
            ds_matmul_backward_bf16(d2, NULL, NULL, dy2, x2, w2, N2, C2, OC2, 1); /* dinp accumulated */
            ds_matmul_backward_bf16_ref(d2r, NULL, NULL, dy2, x2, w2, N2, C2, OC2, 1);
            CHECK(memcmp(d2, d2r, (size_t)(N2 * C2) * 4) == 0);
        }
        free(x2), free(w2), free(dy2), free(y2), free(y2r), free(d2), free(d2r);
    }
    ds_wcache_epoch(-1); /* no epoch: every call converts */
    for (int64_t i = 0; i < OC * C; i++) w[0][i] *= 0.5f;
    ds_matmul_forward_bf16(y, x, w[0], NULL, N, C, OC);
    ds_matmul_forward_bf16_ref(yr, x, w[0], NULL, N, C, OC);
    CHECK(memcmp(y, yr, (size_t)(N * OC) * 4) == 0);
    ds_test_linear_free(&t);
    free(old);
}

/* AdamW rewrites the BF16 copies of the weights it updates (ds_adamw ->
 * ds_wcache_refresh): a copy rewritten whole is used in the next epoch
 * without converting again, and must hold the updated weights' bits; a copy
 * rewritten in part (the rest written by someone else, as ZeRO's gather does)
 * must be converted again.  Oracle: the _ref linear on the current weights.
 * Weights: four in one flat buffer, each over several AdamW blocks, the
 * third inside the second (the same memory keyed twice). */
TEST(matmul_bf16_copies_refreshed_by_adamw) {
    ds_rng r;
    ds_rng_seed(&r, 13);
    const int64_t N = 19, C = 300, OC = 70, W = OC * C; /* 21000 > DS_OPTIM_BLOCK: blocks cross weights */
    float *p = randv(&r, 4 * W), *g = randv(&r, 4 * W), *x = randv(&r, N * C);
    float *m = ds_calloc((size_t)(4 * W), 4), *v = ds_calloc((size_t)(4 * W), 4);
    float *y = ds_malloc((size_t)(N * OC) * 4), *yr = ds_malloc((size_t)(N * OC) * 4);
    const float *wt[4] = {p, p + W, p + W + 35 * C, p + 3 * W}; /* wt[2]: rows 35.. of wt[1], 35 rows */
    const int64_t oc[4] = {OC, OC, 35, OC};
    ds_adamw_hparams h = ds_adamw_default(1e-2);
    ds_optim_seg seg[1] = {{0, 4 * W, 1}};
    for (int ep = 0; ep < 4; ep++) {
        ds_wcache_epoch(ep);
        for (int k = 0; k < 4; k++) { /* every copy against the current weights */
            ds_matmul_forward_bf16(y, x, wt[k], NULL, N, C, oc[k]);
            ds_matmul_forward_bf16_ref(yr, x, wt[k], NULL, N, C, oc[k]);
            CHECK_MSG(memcmp(y, yr, (size_t)(N * oc[k]) * 4) == 0, "epoch %d weight %d", ep, k);
        }
        if (ep == 2) { /* half the buffer by AdamW, the rest by hand: weight 1 partly, 3 wholly */
            ds_optim_seg half[1] = {{0, W + W / 2, 1}};
            ds_ops_cpu.adamw(p, g, m, v, 0, half, 1, ep + 1, &h, 1.0f);
            for (int64_t i = W + W / 2; i < 4 * W; i++) p[i] *= -1.5f;
        } else {
            ds_ops_cpu.adamw(p, g, m, v, 0, seg, 1, ep + 1, &h, 1.0f);
        }
    }
    ds_wcache_epoch(-1);
    free(p), free(g), free(x), free(m), free(v), free(y), free(yr);
}

TEST(train_bf16_tracks_fp32) {
    const char *tmp = ds_test_tmpdir();
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    char corpus[600], out[8192];
    snprintf(corpus, sizeof corpus, "%s/c.txt", tmp);
    FILE *f = fopen(corpus, "w");
    ds_rng r;
    ds_rng_seed(&r, 9);
    static const char *w[] = {"a", "lamb", "ate", "the", "green", "grass", "by", "still", "waters", "and", "slept"};
    for (int l = 0; l < 1200; l++) {
        for (int i = 0; i < 8; i++) fprintf(f, "%s ", w[ds_rng_below(&r, 11)]);
        fputs("\n", f);
    }
    fclose(f);
    int rc = ds_test_sh(out, sizeof out,
                        "%s tokenizer train --input %s --vocab-size 280 --special-tokens '<|bos|>' --out %s/tok.json && "
                        "%s data prepare --tokenizer %s/tok.json --input %s --out %s/data --docs line",
                        bin, corpus, tmp, bin, tmp, corpus, tmp);
    CHECK_MSG(rc == 0, "%s", out);
    TEST_RETURN_IF_FAILED();
    double loss[2];
    const char *prec[2] = {"fp32", "bf16"};
    for (int i = 0; i < 2; i++) {
        rc = ds_test_sh(out, sizeof out,
                        "%s --threads 1 train --config tiny --data %s/data --out %s/%s --steps 30 --batch 4 --seq 32 "
                        "--eval-every 0 --log-every 0 --precision %s && grep -o '\"loss\": [0-9.]*' %s/%s/train_log.jsonl | tail -1",
                        bin, tmp, tmp, prec[i], prec[i], tmp, prec[i]);
        CHECK_MSG(rc == 0, "%s", out);
        char *p = strstr(out, "\"loss\": ");
        loss[i] = p ? atof(p + 8) : NAN;
    }
    fprintf(stderr, "  final loss fp32 %.5f, bf16 %.5f\n", loss[0], loss[1]);
    CHECK(fabs(loss[1] - loss[0]) < 0.02 * loss[0]);
    CHECK(loss[0] != loss[1]);
    /* the weights' BF16 copies kept per step (ops.h weights_epoch) against
     * converting at every GEMM: the same run, bit for bit (a copy kept past
     * an optimizer step would train on stale weights) */
    rc = ds_test_sh(out, sizeof out,
                    "DS_BF16_WEIGHT_COPIES=0 %s --threads 1 train --config tiny --data %s/data --out %s/bf16nc --steps 30 "
                    "--batch 4 --seq 32 --eval-every 0 --log-every 0 --precision bf16 && "
                    "for f in $(cd %s/bf16/latest && ls *.safetensors); do cmp %s/bf16/latest/$f %s/bf16nc/latest/$f || exit 1; done",
                    bin, tmp, tmp, tmp, tmp, tmp);
    CHECK_MSG(rc == 0, "bf16 with and without the weight copies: %s", out);
}

/* The table `train --precision bf16` (and bench-train) runs on: both the
 * matmul entries (lm_head, router, eh_proj) and the linear entries (attention,
 * MLP and expert projections) must round their inputs to BF16.  Oracle: the
 * BF16-rounded inputs summed in double, as above.  Inputs with bits below
 * BF16's precision make an FP32 GEMM differ from the oracle by far more than
 * the tolerance (checked: the fp32 table must miss it). */
TEST(train_bf16_table_rounds_every_gemm) {
    ds_rng r;
    ds_rng_seed(&r, 5);
    const int64_t N = 9, C = 64, OC = 11;
    float *x = randv(&r, N * C), *w = randv(&r, OC * C), *y = ds_malloc((size_t)(N * OC) * 4),
          *yo = ds_malloc((size_t)(N * OC) * 4);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OC; o++) {
            double acc = 0;
            for (int64_t c = 0; c < C; c++) acc += (double)rb(x[n * C + c]) * rb(w[o * C + c]);
            yo[n * OC + o] = (float)acc;
        }
    for (int prec = DS_PREC_FP32; prec <= DS_PREC_BF16; prec++) {
        struct ds_ops ops;
        CHECK(ds_backend_table(&ops, "cpu", prec) == 0);
        for (int e = 0; e < 2; e++) {
            (e ? ops.linear_forward : ops.matmul_forward)(y, x, w, NULL, N, C, OC);
            double err = ds_test_max_rel(y, yo, (size_t)(N * OC), 1e-3);
            if (prec == DS_PREC_BF16)
                CHECK_MSG(err < 1e-5, "bf16 table, %s entry: %.3g from the BF16 oracle", e ? "linear" : "matmul", err);
            else
                CHECK_MSG(err > 1e-4, "fp32 table, %s entry: %.3g, expected FP32 sums of unrounded inputs", e ? "linear" : "matmul", err);
        }
    }
    free(x), free(w), free(y), free(yo);
}
