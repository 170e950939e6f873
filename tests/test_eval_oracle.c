/* test_eval_oracle.c — whole datasets (PIQA, ARC-Easy, HellaSwag, LAMBADA, WikiText-2 with
 * rolling and strided windows) through dsv3's task readers, prompts, pair encoding,
 * truncation, windows and metrics, against lm-eval's own TemplateLM code path with the same
 * analytic model (tests/fixtures/eval/positional_oracle.json, tools/make_eval_fixtures.py):
 * byte tokens; token t at position p of the truncated sequence has log-probability
 * float32(-ln 256 - 0.01 * ((p + t) % 5)) and is greedy when t is the smallest id with
 * (p + t) % 5 == 0.  Both sides add the same float32 values in the same order, so the
 * predictions and accuracies must be identical and the sums agree to rounding. */
#include "test.h"
#include "base/base.h"
#include "eval/eval.h"

#include <cJSON.h>

static int pos_loglik(void *ctx, ds_lm_request *reqs, int64_t n) {
    (void)ctx;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < reqs[r].n_cont; j++) {
            int64_t p = reqs[r].n_ctx + j, t = reqs[r].cont[j];
            reqs[r].logprobs[j] = (float)(-log(256.0) - 0.01 * (double)((p + t) % 5));
            reqs[r].greedy[j] = t == (5 - p % 5) % 5;
        }
    return 0;
}

static int64_t pos_encode(void *ctx, const char *s, size_t n, int add_special, int32_t **ids) {
    (void)ctx;
    (void)add_special;
    *ids = malloc((n ? n : 1) * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) (*ids)[i] = (unsigned char)s[i];
    return (int64_t)n;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Run SPEC with the positional model and compare with the oracle entry `key`. */
static void check_task(const cJSON *oracle, const char *key, const char *spec) {
    const cJSON *want = cJSON_GetObjectItem(cJSON_GetObjectItem(oracle, "tasks"), key);
    CHECK_MSG(want != NULL, "%s not in the oracle", key);
    if (!want) return;
    ds_lm lm = {0};
    lm.name = "positional";
    lm.max_length = (int64_t)num(want, "max_length");
    lm.prefix_id = 0;
    lm.eos_id = 0;
    lm.loglik = pos_loglik;
    lm.encode = pos_encode;
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.batch = 16;
    char dd[1024];
    snprintf(dd, sizeof dd, "%s", ds_test_shared("data"));
    o.data_dir = dd;
    ds_task t;
    ds_task_result r;
    CHECK_MSG(ds_task_load(&t, spec, &o) == 0, "%s: %s", spec, ds_errmsg());
    CHECK_MSG(ds_task_run(&t, &lm, &o, NULL, &r) == 0, "%s: %s", spec, ds_errmsg());
    TEST_RETURN_IF_FAILED();
    const cJSON *preds[3] = {cJSON_GetObjectItem(want, "preds"), cJSON_GetObjectItem(want, "preds_norm"),
                             cJSON_GetObjectItem(want, "preds_bytes")};
    if (preds[0]) {
        CHECK_MSG((int64_t)strlen(preds[0]->valuestring) == r.n, "%s: %lld docs vs %zu", key, (long long)r.n,
                  strlen(preds[0]->valuestring));
        int64_t diff[3] = {0, 0, 0};
        for (int64_t d = 0; d < r.n && d < (int64_t)strlen(preds[0]->valuestring); d++) {
            diff[0] += r.docs[d].pred != preds[0]->valuestring[d] - '0';
            diff[1] += r.docs[d].pred_norm != preds[1]->valuestring[d] - '0';
            diff[2] += r.docs[d].pred_bytes != preds[2]->valuestring[d] - '0';
        }
        CHECK_MSG(diff[0] == 0 && diff[1] == 0 && diff[2] == 0, "%s: predictions differ in %lld/%lld/%lld docs", key,
                  (long long)diff[0], (long long)diff[1], (long long)diff[2]);
    }
    const cJSON *dl = cJSON_GetObjectItem(want, "doc_ll");
    if (dl) {
        CHECK(cJSON_GetArraySize(dl) == r.n);
        for (int64_t d = 0; d < r.n && d < cJSON_GetArraySize(dl); d++) {
            double w = cJSON_GetArrayItem(dl, (int)d)->valuedouble;
            CHECK_MSG(fabs(r.docs[d].ll[0] - w) <= 1e-9 * fabs(w), "%s doc %lld: %.10f vs %.10f", key, (long long)d,
                      r.docs[d].ll[0], w);
        }
    }
    if (cJSON_GetObjectItem(want, "ll_sum")) {
        double s = 0;
        for (int64_t d = 0; d < r.n; d++) s += r.docs[d].ll[0];
        CHECK_NEAR(s, num(want, "ll_sum"), 1e-9 * fabs(num(want, "ll_sum")));
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(want, "metrics")) {
        const ds_metric *x = ds_result_metric(&r, m->string);
        CHECK_MSG(x != NULL, "%s: no metric %s", key, m->string);
        if (!x) continue;
        double w = num(m, "value");
        int exact = !strncmp(m->string, "acc", 3);
        CHECK_MSG(fabs(x->value - w) <= (exact ? 1e-12 : 1e-9 * fabs(w)), "%s %s: %.12g vs lm-eval %.12g", key,
                  m->string, x->value, w);
        if (cJSON_IsNumber(cJSON_GetObjectItem(m, "stderr")))
            CHECK_NEAR(x->stderr_, num(m, "stderr"), 1e-12);
    }
    ds_task_result_free(&r);
    ds_task_free(&t);
}

static cJSON *oracle_or_skip(void) {
    char *s = ds_read_file("tests/fixtures/eval/positional_oracle.json", NULL);
    if (!s) return NULL;
    cJSON *j = cJSON_Parse(s);
    free(s);
    return j;
}

#define ORACLE_TEST(name_, key_, spec_, data_)                                              \
    TEST(name_) {                                                                           \
        if (!ds_test_shared(data_)) SKIP("../shared/%s not found", data_);                  \
        cJSON *j = oracle_or_skip();                                                        \
        CHECK_MSG(j != NULL, "tests/fixtures/eval/positional_oracle.json missing");         \
        if (!j) return;                                                                     \
        check_task(j, key_, spec_);                                                         \
        cJSON_Delete(j);                                                                    \
    }

ORACLE_TEST(oracle_piqa_full, "piqa", "piqa", "data/llm_foundry_icl/piqa.jsonl")
ORACLE_TEST(oracle_arc_easy_full, "arc_easy", "arc_easy", "data/llm_foundry_icl/arc_easy.jsonl")
ORACLE_TEST(oracle_hellaswag_full, "hellaswag", "hellaswag", "data/hellaswag/hellaswag_val_full.txt")
ORACLE_TEST(oracle_lambada_truncated, "lambada", "lambada", "data/llm_foundry_icl/lambada_openai.jsonl")
ORACLE_TEST(oracle_wikitext2_rolling, "wikitext2", "wikitext2", "data/wikitext2/wiki.test.raw")
ORACLE_TEST(oracle_wikitext2_strided, "wikitext2_stride", "wikitext2#stride=64", "data/wikitext2/wiki.test.raw")
