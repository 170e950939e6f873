/*
 * test_eval_batch.c — the model binding's batched scoring (src/eval/lm_model.c): the
 * requests of one loglik call run, longest first, in right-padded batched forwards.
 * Oracle: the same requests scored one per call (B = 1, no padding), and, for the
 * log-softmax rows, a direct softmax over the full logits of a B = 1 forward.
 * Padding after a row's last position must not change its logits (causal attention,
 * per-token MoE routing): log-likelihoods agree within float rounding of the GEMM
 * blocking (1e-5 relative) and the greedy flags are identical.
 */
#include "test.h"
#include "base/base.h"
#include "eval/lm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/eval/model"

TEST(eval_batched_loglik_matches_one_request_per_call) {
    FILE *f = fopen(FIX "/config.json", "r");
    if (!f) SKIP(FIX " not found");
    fclose(f);
    ds_lm lm;
    CHECK(ds_lm_from_model_dir(&lm, FIX, 128) == 0);
    if (!lm.ctx) return;
    /* requests of mixed lengths: two sharing a context (a document's choices), others of
     * other lengths, so that rows are padded by 0, 1 and many positions */
    ds_rng rng;
    ds_rng_seed(&rng, 7);
    enum { NR = 9 };
    static const int64_t nctx[NR] = {5, 5, 1, 17, 3, 40, 2, 9, 9};
    static const int64_t ncont[NR] = {3, 7, 1, 4, 12, 2, 1, 5, 5};
    int32_t ids[NR][64];
    ds_lm_request a[NR], b[NR];
    float lpa[NR][16], lpb[NR][16];
    uint8_t ga[NR][16], gb[NR][16];
    for (int r = 0; r < NR; r++) {
        for (int i = 0; i < 64; i++) ids[r][i] = (int32_t)(ds_rng_u64(&rng) % 500);
        const int32_t *ctx = (r == 1 || r == 8) ? ids[r - 1] : ids[r]; // shared contexts
        a[r] = (ds_lm_request){ctx, nctx[r], ids[r] + nctx[r], ncont[r], lpa[r], ga[r]};
        b[r] = (ds_lm_request){ctx, nctx[r], ids[r] + nctx[r], ncont[r], lpb[r], gb[r]};
    }
    CHECK(lm.loglik(lm.ctx, a, NR) == 0); // batched
    for (int r = 0; r < NR; r++) CHECK(lm.loglik(lm.ctx, &b[r], 1) == 0); // one per call
    double worst = 0;
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < ncont[r]; j++) {
            double d = fabs((double)lpa[r][j] - lpb[r][j]);
            if (d > worst) worst = d;
            CHECK_MSG(d <= 1e-5 * (1 + fabs((double)lpb[r][j])), "request %d token %d: %.9g vs %.9g", r, j, lpa[r][j], lpb[r][j]);
            CHECK_MSG(ga[r][j] == gb[r][j], "request %d token %d: greedy differs", r, j);
        }
    printf("batched vs one per call: max |ll diff| %.3g\n", worst);
    /* a bad token id in the middle of a batch: an error, not a crash */
    int32_t bad[3] = {1, 2, 100000};
    ds_lm_request q[2] = {a[0], {bad, 2, bad + 2, 1, lpa[0], ga[0]}};
    CHECK(lm.loglik(lm.ctx, q, 2) != 0);
    lm.free(lm.ctx);
}

/* ds_lm_score_rows against a direct float softmax of each row */
TEST(eval_score_rows_matches_direct_softmax) {
    enum { T = 4, V = 37 };
    float logits[T * V];
    ds_rng rng;
    ds_rng_seed(&rng, 3);
    for (int i = 0; i < T * V; i++) logits[i] = (float)((double)(ds_rng_u64(&rng) % 2000) / 100.0 - 10.0);
    logits[2 * V + 5] = 40; // a clear argmax
    int32_t ctx[2] = {0, 1}, cont[3] = {9, 5, 36};
    float lp[3];
    uint8_t gr[3];
    ds_lm_request q = {ctx, 2, cont, 3, lp, gr};
    CHECK(ds_lm_score_rows(logits, V, &q) == 0);
    for (int j = 0; j < 3; j++) {
        const float *row = logits + (1 + j) * V;
        double s = 0;
        int am = 0;
        for (int v = 0; v < V; v++) {
            s += exp((double)row[v]);
            if (row[v] > row[am]) am = v;
        }
        CHECK_NEAR(lp[j], (double)row[cont[j]] - log(s), 1e-5);
        CHECK(gr[j] == (am == cont[j]));
    }
    CHECK(gr[1] == 1);
    cont[0] = V; // outside the vocabulary
    CHECK(ds_lm_score_rows(logits, V, &q) != 0);
}

/* The binding's tokenization against lm-eval's HFLM.tok_encode (tests/fixtures/eval/bos_cases.json,
 * tools/make_eval_fixtures.py bos_cases): the fixture tokenizer under several post-processors and
 * tokenizer_config.json add_bos_token values, HFLM's default and add_bos_token=True.  Under
 * transformers 5.x only tokenizer.json's template counts by default; add_bos_token=True makes it
 * "BOS $A"; a text starting with the BOS text gets no special tokens. */
#include <cJSON.h>
TEST(eval_encode_bos_as_lm_eval_hflm) {
    char *js = ds_read_file("tests/fixtures/eval/bos_cases.json", NULL), *tj = ds_read_file(FIX "/tokenizer.json", NULL);
    if (!js || !tj) { free(js); free(tj); SKIP("tests/fixtures/eval/bos_cases.json or " FIX " not found"); }
    cJSON *fix = cJSON_Parse(js), *tok = cJSON_Parse(tj);
    free(js);
    free(tj);
    CHECK(fix && tok);
    TEST_RETURN_IF_FAILED();
    const cJSON *texts = cJSON_GetObjectItem(fix, "texts"), *v;
    int nvar = 0;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(fix, "variants")) {
        char dir[1024], p[1100];
        snprintf(dir, sizeof dir, "%s/%s", ds_test_tmpdir(), v->string);
        CHECK(ds_mkdir_p(dir) == 0);
        cJSON_ReplaceItemInObject(tok, "post_processor", cJSON_Duplicate(cJSON_GetObjectItem(v, "post_processor"), 1));
        char *s = cJSON_Print(tok);
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        CHECK(ds_write_file_atomic(p, s, strlen(s)) == 0);
        free(s);
        s = cJSON_Print(cJSON_GetObjectItem(v, "tokenizer_config"));
        snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
        CHECK(ds_write_file_atomic(p, s, strlen(s)) == 0);
        free(s);
        ds_lm lm;
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        CHECK_MSG(ds_lm_from_model_dir_ex(&lm, FIX, p, 128, NULL, NULL) == 0, "%s: %s", v->string, ds_errmsg());
        if (ds_test_fails) break;
        static const char *const keys[2] = {"default", "add_bos"};
        for (int m = 0; m < 2; m++) {
            int i = 0;
            const cJSON *want, *text;
            cJSON_ArrayForEach(want, cJSON_GetObjectItem(v, keys[m])) {
                text = cJSON_GetArrayItem(texts, i++);
                int32_t *ids = NULL;
                int64_t n = lm.encode(lm.ctx, text->valuestring, strlen(text->valuestring), m ? DS_LM_ENC_BOS : DS_LM_ENC_DEFAULT, &ids);
                int same = n == cJSON_GetArraySize(want);
                for (int64_t k = 0; same && k < n; k++) same = ids[k] == (int32_t)cJSON_GetArrayItem(want, (int)k)->valuedouble;
                CHECK_MSG(same, "%s %s '%s': %lld ids, first %d", v->string, keys[m], text->valuestring, (long long)n, n > 0 ? ids[0] : -1);
                free(ids);
            }
        }
        /* the continuation of an empty context: no special tokens in any variant */
        int32_t *ids = NULL;
        int64_t n = lm.encode(lm.ctx, "Hello world", 11, DS_LM_ENC_PLAIN, &ids);
        CHECK(n == 6 && ids[0] != 0 && ids[n - 1] != 0);
        free(ids);
        lm.free(lm.ctx);
        nvar++;
    }
    CHECK(nvar == 5);
    cJSON_Delete(tok);
    cJSON_Delete(fix);
}
