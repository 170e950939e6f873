/* test_eval_parity.c — dsv3 eval against lm-evaluation-harness on the fixture model
 * (tests/fixtures/eval/model: tiny random DeepseekV3ForCausalLM + byte-level BPE), slices of
 * PIQA, ARC-Easy, HellaSwag, LAMBADA, WikiText-2 and two hand-checkable tasks built from the
 * model's own greedy continuations.  Oracle: tests/fixtures/eval/scores.json, made by
 * tools/make_eval_fixtures.py with lm-eval's HFLM.
 *
 * Tolerances: a choice's or target's summed log-likelihood within 1e-4 (2e-7 relative above
 * |ll| = 500: lm-eval adds the float32 log-probs in float32); a WikiText article's total
 * within 1e-4 per token (thousands of tokens);
 * token counts, greedy flags, predictions and accuracies identical; perplexities within a
 * relative 1e-4.
 *
 * eval_parity_with_lm_eval_harness runs `dsv3 eval` on the fixture model folder (the
 * binding in src/eval/lm_model.c); eval_parity_replay drives the whole pipeline with a replay of what a correct binding
 * answers (tests/fixtures/eval/replay.json: tokenizer.encode of each string, per-position
 * log-probabilities from the model in transformers, greedy continuations, decodes). */
#include "test.h"
#include "base/base.h"
#include "eval/eval.h"

#include <cJSON.h>

#define FIX "tests/fixtures/eval"

static cJSON *load_json(const char *path) {
    char *s = ds_read_file(path, NULL);
    if (!s) return NULL;
    cJSON *j = cJSON_Parse(s);
    free(s);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* the i-th sample line of a task */
static cJSON *sample_of(cJSON **samples, int n, const char *task, int doc) {
    for (int i = 0; i < n; i++) {
        const cJSON *t = cJSON_GetObjectItem(samples[i], "task");
        if (t && !strcmp(t->valuestring, task) && (int)num(samples[i], "doc") == doc) return samples[i];
    }
    return NULL;
}

/* Count the mismatches between dsv3's samples/results and the lm-eval fixture. */
#define MIS(c, ...) do { if (!(c)) { bad++; if (verbose) { fprintf(stderr, "  mismatch: "); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } } while (0)
static int compare(const cJSON *fix, cJSON **samples, int ns, const cJSON *res, int verbose) {
    int bad = 0;
    double max_pair = 0, max_lm = 0; /* largest |ll difference| (choices/targets; per token of an article) */
    cJSON *task;
    cJSON_ArrayForEach(task, cJSON_GetObjectItem(fix, "tasks")) {
        const char *name = task->string, *kind = cJSON_GetObjectItem(task, "kind")->valuestring;
        int d = 0;
        cJSON *ex;
        cJSON_ArrayForEach(ex, cJSON_GetObjectItem(task, "examples")) {
            cJSON *sm = sample_of(samples, ns, name, d);
            MIS(sm != NULL, "%s: no sample for example %d", name, d);
            if (!sm) { d++; continue; }
            if (!strcmp(kind, "mc") || !strcmp(kind, "ll")) {
                cJSON *ll = cJSON_GetObjectItem(ex, "ll"), *gr = cJSON_GetObjectItem(ex, "greedy"),
                      *ids = cJSON_GetObjectItem(ex, "ids");
                int mc = !strcmp(kind, "mc"), n = mc ? cJSON_GetArraySize(ll) : 1;
                for (int i = 0; i < n; i++) {
                    double want = mc ? cJSON_GetArrayItem(ll, i)->valuedouble : ll->valuedouble;
                    int wg = cJSON_IsTrue(mc ? cJSON_GetArrayItem(gr, i) : gr);
                    const cJSON *pair = mc ? cJSON_GetArrayItem(ids, i) : ids;
                    int wtok = cJSON_GetArraySize(cJSON_GetArrayItem(pair, 1));
                    const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(sm, "ll"), i);
                    double got = g ? g->valuedouble : NAN;
                    /* lm-eval sums a continuation's float32 log-probs in float32: for a long one
                     * (|ll| ~ 700, 100+ tokens) that sum alone is off by ~1e-5..1e-4 */
                    double tol = fmax(1e-4, 2e-7 * fabs(want));
                    MIS(fabs(got - want) <= tol, "%s ex %d choice %d: ll %.6f vs lm-eval %.6f", name, d, i, got, want);
                    if (fabs(got - want) > max_pair) max_pair = fabs(got - want);
                    MIS(cJSON_IsTrue(cJSON_GetArrayItem(cJSON_GetObjectItem(sm, "greedy"), i)) == wg,
                        "%s ex %d choice %d: is_greedy differs", name, d, i);
                    g = cJSON_GetArrayItem(cJSON_GetObjectItem(sm, "tokens"), i);
                    MIS(g && (int)g->valuedouble == wtok, "%s ex %d choice %d: continuation tokens differ", name, d, i);
                }
                if (mc) {
                    MIS(num(sm, "pred") == num(ex, "pred"), "%s ex %d: pred", name, d);
                    MIS(num(sm, "pred_norm") == num(ex, "pred_norm"), "%s ex %d: pred_norm", name, d);
                    MIS(num(sm, "pred_bytes") == num(ex, "pred_bytes"), "%s ex %d: pred_bytes", name, d);
                }
            } else if (!strcmp(kind, "lm")) {
                const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(sm, "ll"), 0);
                double want = num(ex, "ll"), got = g ? g->valuedouble : NAN, toks = num(ex, "tokens");
                MIS(fabs(got - want) <= 1e-4 * toks, "%s doc %d: ll %.4f vs lm-eval %.4f", name, d, got, want);
                if (fabs(got - want) / toks > max_lm) max_lm = fabs(got - want) / toks;
                g = cJSON_GetArrayItem(cJSON_GetObjectItem(sm, "tokens"), 0);
                MIS(g && g->valuedouble == toks, "%s doc %d: token count", name, d);
                MIS(num(sm, "bytes") == num(ex, "bytes") && num(sm, "words") == num(ex, "words"), "%s doc %d: bytes/words", name, d);
            } else {
                const cJSON *g = cJSON_GetObjectItem(sm, "generated");
                const char *want = cJSON_GetObjectItem(ex, "generated")->valuestring;
                MIS(cJSON_IsString(g) && !strcmp(g->valuestring, want), "%s ex %d: generated '%s' vs lm-eval '%s'", name, d,
                    cJSON_IsString(g) ? g->valuestring : "?", want);
                MIS(cJSON_IsTrue(cJSON_GetObjectItem(sm, "exact_match")) == (num(ex, "exact_match") == 1.0), "%s ex %d: exact_match", name, d);
            }
            d++;
        }
        const cJSON *mine = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "results"), name), "metrics");
        MIS(mine != NULL, "%s: not in results.json", name);
        cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItem(task, "metrics")) {
            double want = num(m, "value"), got = num(cJSON_GetObjectItem(mine, m->string), "value");
            int exact = !strncmp(m->string, "acc", 3) || !strcmp(m->string, "exact_match");
            double tol = exact ? 1e-12 : 1e-4 * fabs(want);
            MIS(fabs(got - want) <= tol, "%s %s: %.9g vs lm-eval %.9g", name, m->string, got, want);
            if (exact && cJSON_IsNumber(cJSON_GetObjectItem(m, "stderr")))
                MIS(fabs(num(cJSON_GetObjectItem(mine, m->string), "stderr") - num(m, "stderr")) <= 1e-12,
                    "%s %s: stderr", name, m->string);
        }
    }
    if (verbose) fprintf(stderr, "  parity: max |ll - lm-eval| %.3g per choice/target, %.3g per token of an article\n", max_pair, max_lm);
    return bad;
}

/* The fixture rewritten in dsv3's samples/results format (what a perfect run writes). */
static int fixture_as_output(const cJSON *fix, cJSON **samples, int cap, cJSON **res) {
    int ns = 0;
    *res = cJSON_CreateObject();
    cJSON *all = cJSON_AddObjectToObject(*res, "results");
    cJSON *task;
    cJSON_ArrayForEach(task, cJSON_GetObjectItem(fix, "tasks")) {
        const char *kind = cJSON_GetObjectItem(task, "kind")->valuestring;
        int d = 0;
        cJSON *ex;
        cJSON_ArrayForEach(ex, cJSON_GetObjectItem(task, "examples")) {
            if (ns == cap) break;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "task", task->string);
            cJSON_AddNumberToObject(o, "doc", d++);
            if (!strcmp(kind, "gen")) {
                cJSON_AddItemToObject(o, "generated", cJSON_Duplicate(cJSON_GetObjectItem(ex, "generated"), 1));
                cJSON_AddBoolToObject(o, "exact_match", num(ex, "exact_match") == 1.0);
            } else {
                cJSON *ll = cJSON_GetObjectItem(ex, "ll"), *gr = cJSON_GetObjectItem(ex, "greedy");
                cJSON *ol = cJSON_AddArrayToObject(o, "ll"), *og = cJSON_AddArrayToObject(o, "greedy"),
                      *ot = cJSON_AddArrayToObject(o, "tokens");
                if (!strcmp(kind, "mc")) {
                    for (int i = 0; i < cJSON_GetArraySize(ll); i++) {
                        cJSON_AddItemToArray(ol, cJSON_CreateNumber(cJSON_GetArrayItem(ll, i)->valuedouble));
                        cJSON_AddItemToArray(og, cJSON_CreateBool(cJSON_IsTrue(cJSON_GetArrayItem(gr, i))));
                        cJSON_AddItemToArray(ot, cJSON_CreateNumber(cJSON_GetArraySize(
                            cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ex, "ids"), i), 1))));
                    }
                    cJSON_AddNumberToObject(o, "pred", num(ex, "pred"));
                    cJSON_AddNumberToObject(o, "pred_norm", num(ex, "pred_norm"));
                    cJSON_AddNumberToObject(o, "pred_bytes", num(ex, "pred_bytes"));
                } else if (!strcmp(kind, "ll")) {
                    cJSON_AddItemToArray(ol, cJSON_CreateNumber(ll->valuedouble));
                    cJSON_AddItemToArray(og, cJSON_CreateBool(cJSON_IsTrue(gr)));
                    cJSON_AddItemToArray(ot, cJSON_CreateNumber(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetObjectItem(ex, "ids"), 1))));
                } else {
                    cJSON_AddItemToArray(ol, cJSON_CreateNumber(ll->valuedouble));
                    cJSON_AddItemToArray(og, cJSON_CreateFalse());
                    cJSON_AddItemToArray(ot, cJSON_CreateNumber(num(ex, "tokens")));
                    cJSON_AddNumberToObject(o, "bytes", num(ex, "bytes"));
                    cJSON_AddNumberToObject(o, "words", num(ex, "words"));
                }
            }
            samples[ns++] = o;
        }
        cJSON *t = cJSON_AddObjectToObject(all, task->string);
        cJSON_AddItemToObject(t, "metrics", cJSON_Duplicate(cJSON_GetObjectItem(task, "metrics"), 1));
    }
    return ns;
}

/* The checker itself: it accepts the oracle and catches a 2e-4 change, a flipped greedy flag
 * and a changed accuracy (runs without a model binding). */
TEST(eval_parity_checker_self_test) {
    cJSON *fix = load_json(FIX "/scores.json");
    CHECK(fix != NULL);
    if (!fix) return;
    static cJSON *samples[1024];
    cJSON *res;
    int ns = fixture_as_output(fix, samples, 1024, &res);
    CHECK(ns > 80);
    CHECK(compare(fix, samples, ns, res, 1) == 0);
    cJSON *piqa0 = sample_of(samples, ns, "piqa", 0);
    cJSON *ll = cJSON_GetArrayItem(cJSON_GetObjectItem(piqa0, "ll"), 1);
    double keep = ll->valuedouble;
    cJSON_SetNumberValue(ll, keep + 2e-4);
    CHECK(compare(fix, samples, ns, res, 0) == 1);
    cJSON_SetNumberValue(ll, keep);
    cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(sample_of(samples, ns, "lambada", 3), "greedy"), 0);
    g->type = cJSON_IsTrue(g) ? cJSON_False : cJSON_True;
    CHECK(compare(fix, samples, ns, res, 0) == 1);
    g->type = cJSON_IsTrue(g) ? cJSON_False : cJSON_True;
    cJSON *acc = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(
        cJSON_GetObjectItem(res, "results"), "hellaswag"), "metrics"), "acc_norm"), "value");
    cJSON_SetNumberValue(acc, acc->valuedouble + 0.05);
    CHECK(compare(fix, samples, ns, res, 0) == 1);
    for (int i = 0; i < ns; i++) cJSON_Delete(samples[i]);
    cJSON_Delete(res);
    cJSON_Delete(fix);
}

TEST(eval_parity_with_lm_eval_harness) {
    if (!ds_test_shared("data/llm_foundry_icl/piqa.jsonl") || !ds_test_shared("data/hellaswag/hellaswag_val_full.txt") ||
        !ds_test_shared("data/wikitext2/wiki.test.raw"))
        SKIP("../shared/data (llm_foundry_icl, hellaswag, wikitext2) not found");
    cJSON *fix = load_json(FIX "/scores.json");
    CHECK_MSG(fix != NULL, "%s", FIX "/scores.json missing or malformed");
    if (!fix) return;
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    const char *dir = ds_test_tmpdir();
    const char *shared = getenv("DS_SHARED") ? getenv("DS_SHARED") : "../shared";
    int limit = (int)num(fix, "limit"), max_len = (int)num(fix, "max_length");
    static char out[65536];
    int rc = ds_test_sh(out, sizeof out,
                        "%s eval --model " FIX "/model --max-length %d --limit %d --data %s/data --no-progress "
                        "--task piqa arc_easy hellaswag lambada 'wikitext2#limit=%d' "
                        "'mc:" FIX "/greedy_mc.jsonl#delim=,name=greedy_mc' "
                        "'gen:" FIX "/greedy_gen.jsonl#until=\\n,max_new=8,name=greedy_gen' "
                        "--samples %s/samples.jsonl --out %s/results.json",
                        bin, max_len, limit, shared, (int)num(cJSON_GetObjectItem(cJSON_GetObjectItem(fix, "tasks"), "wikitext2"), "n"),
                        dir, dir);
    CHECK_MSG(rc == 0, "dsv3 eval failed: %s", out);
    if (rc) { cJSON_Delete(fix); return; }
    char path[1024];
    snprintf(path, sizeof path, "%s/samples.jsonl", dir);
    char *s = ds_read_file(path, NULL);
    CHECK(s != NULL);
    static cJSON *samples[1024];
    int ns = 0;
    for (char *line = s ? strtok(s, "\n") : NULL; line && ns < 1024; line = strtok(NULL, "\n"))
        samples[ns++] = cJSON_Parse(line);
    free(s);
    snprintf(path, sizeof path, "%s/results.json", dir);
    cJSON *res = load_json(path);
    CHECK(res != NULL);
    if (res) CHECK(compare(fix, samples, ns, res, 1) == 0);
    cJSON_Delete(res);
    for (int i = 0; i < ns; i++) cJSON_Delete(samples[i]);
    cJSON_Delete(fix);
}

/* ---- the replay model ------------------------------------------------------------------- */
typedef struct {
    cJSON *root;
    int n_enc, n_seq, n_dec, n_gen;
    const cJSON **enc, **seq, **dec, **gen; /* [key, value...] entries */
} replay;

static int ids_equal(const cJSON *arr, const int32_t *ids, int64_t n) {
    if (cJSON_GetArraySize(arr) != n) return 0;
    int64_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) if ((int32_t)v->valuedouble != ids[i++]) return 0;
    return 1;
}

static const cJSON *find_ids(const cJSON **list, int n, const int32_t *ids, int64_t len) {
    for (int i = 0; i < n; i++)
        if (ids_equal(cJSON_GetArrayItem(list[i], 0), ids, len)) return list[i];
    return NULL;
}

static int32_t *ids_of(const cJSON *arr, int64_t *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)(*n ? *n : 1) * sizeof *ids);
    int64_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) ids[i++] = (int32_t)v->valuedouble;
    return ids;
}

static int replay_loglik(void *ctx, ds_lm_request *reqs, int64_t n) {
    replay *r = ctx;
    for (int64_t q = 0; q < n; q++) {
        int64_t T = reqs[q].n_ctx + reqs[q].n_cont;
        int32_t *full = malloc((size_t)T * sizeof *full);
        memcpy(full, reqs[q].ctx, (size_t)reqs[q].n_ctx * sizeof *full);
        memcpy(full + reqs[q].n_ctx, reqs[q].cont, (size_t)reqs[q].n_cont * sizeof *full);
        const cJSON *e = find_ids(r->seq, r->n_seq, full, T);
        free(full);
        if (!e) return ds_err("replay: lm-eval never scored this sequence (%lld tokens)", (long long)T);
        const char *lp = cJSON_GetArrayItem(e, 1)->valuestring, *gr = cJSON_GetArrayItem(e, 2)->valuestring;
        char *p = (char *)lp;
        for (int64_t i = 0; i < reqs[q].n_ctx - 1; i++) strtod(p, &p);
        for (int64_t j = 0; j < reqs[q].n_cont; j++) {
            reqs[q].logprobs[j] = (float)strtod(p, &p);
            reqs[q].greedy[j] = gr[reqs[q].n_ctx - 1 + j] == '1';
        }
    }
    return 0;
}

static int64_t replay_encode(void *ctx, const char *s, size_t n, int add_special, int32_t **ids) {
    replay *r = ctx;
    (void)add_special; /* the fixture tokenizer adds nothing by default (eval runs without add_bos) */
    for (int i = 0; i < r->n_enc; i++) {
        const char *t = cJSON_GetArrayItem(r->enc[i], 0)->valuestring;
        if (strlen(t) == n && !memcmp(t, s, n)) {
            int64_t k;
            *ids = ids_of(cJSON_GetArrayItem(r->enc[i], 1), &k);
            return k;
        }
    }
    *ids = NULL;
    return ds_err("replay: lm-eval never encoded '%.60s'", s);
}

static int64_t replay_decode(void *ctx, const int32_t *ids, int64_t n, char **text) {
    replay *r = ctx;
    const cJSON *e = find_ids(r->dec, r->n_dec, ids, n);
    *text = NULL;
    if (!e) return ds_err("replay: no decode of %lld tokens", (long long)n);
    *text = ds_strdup(cJSON_GetArrayItem(e, 1)->valuestring);
    return (int64_t)strlen(*text);
}

static int replay_generate(void *ctx, const int32_t *ids, int64_t n, int64_t max_new, ds_lm_stop_fn stop, void *user,
                           int32_t *out, int64_t *n_out) {
    replay *r = ctx;
    const cJSON *e = find_ids(r->gen, r->n_gen, ids, n);
    if (!e) return ds_err("replay: lm-eval never generated after this prompt (%lld tokens)", (long long)n);
    int64_t k;
    int32_t *g = ids_of(cJSON_GetArrayItem(e, 1), &k);
    *n_out = 0;
    for (int64_t i = 0; i < k && i < max_new; i++) {
        out[(*n_out)++] = g[i];
        if (stop(user, out, *n_out)) break;
    }
    free(g);
    return 0;
}

static int replay_load(replay *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->root = load_json(path);
    if (!r->root) return -1;
    static const char *keys[4] = {"encode", "seq", "decode", "generate"};
    const cJSON ***lists[4] = {&r->enc, &r->seq, &r->dec, &r->gen};
    int *counts[4] = {&r->n_enc, &r->n_seq, &r->n_dec, &r->n_gen};
    for (int k = 0; k < 4; k++) {
        const cJSON *a = cJSON_GetObjectItem(r->root, keys[k]), *e;
        *counts[k] = cJSON_GetArraySize(a);
        *lists[k] = malloc((size_t)(*counts[k] + 1) * sizeof **lists[k]);
        int i = 0;
        cJSON_ArrayForEach(e, a)(*lists[k])[i++] = e;
    }
    return 0;
}

static void replay_free(replay *r) {
    free(r->enc); free(r->seq); free(r->dec); free(r->gen);
    cJSON_Delete(r->root);
}

TEST(eval_parity_replay) {
    if (!ds_test_shared("data/llm_foundry_icl/piqa.jsonl") || !ds_test_shared("data/hellaswag/hellaswag_val_full.txt") ||
        !ds_test_shared("data/wikitext2/wiki.test.raw"))
        SKIP("../shared/data (llm_foundry_icl, hellaswag, wikitext2) not found");
    cJSON *fix = load_json(FIX "/scores.json");
    replay rp;
    CHECK(fix != NULL);
    CHECK(replay_load(&rp, FIX "/replay.json") == 0);
    TEST_RETURN_IF_FAILED();
    ds_lm lm = {0};
    lm.ctx = &rp;
    lm.name = "replay";
    lm.max_length = (int64_t)num(rp.root, "max_length");
    lm.prefix_id = (int32_t)num(rp.root, "prefix_id");
    lm.eos_id = 0;
    lm.loglik = replay_loglik;
    lm.generate = replay_generate;
    lm.encode = replay_encode;
    lm.decode = replay_decode;
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.limit = (int64_t)num(fix, "limit");
    o.batch = 3;
    char dd[1024];
    snprintf(dd, sizeof dd, "%s", ds_test_shared("data"));
    o.data_dir = dd;
    static const char *specs[] = {"piqa", "arc_easy", "hellaswag", "lambada", "wikitext2",
                                  "mc:" FIX "/greedy_mc.jsonl#delim=,name=greedy_mc",
                                  "gen:" FIX "/greedy_gen.jsonl#until=\\n,max_new=8,name=greedy_gen"};
    enum { NT = sizeof specs / sizeof *specs };
    ds_task tasks[NT];
    ds_task_result res[NT];
    memset(res, 0, sizeof res);
    char sp[1024];
    snprintf(sp, sizeof sp, "%s/samples.jsonl", ds_test_tmpdir());
    FILE *f = fopen(sp, "w");
    int n = 0;
    for (; n < NT; n++) {
        /* the fixture's slices: its limit, and its number of WikiText articles */
        o.limit = !strcmp(specs[n], "wikitext2") ? (int64_t)num(cJSON_GetObjectItem(cJSON_GetObjectItem(fix, "tasks"), "wikitext2"), "n")
                                                  : (int64_t)num(fix, "limit");
        CHECK_MSG(ds_task_load(&tasks[n], specs[n], &o) == 0, "%s: %s", specs[n], ds_errmsg());
        CHECK_MSG(ds_task_run(&tasks[n], &lm, &o, f, &res[n]) == 0, "%s: %s", specs[n], ds_errmsg());
        if (ds_test_fails) { n++; break; }
    }
    fclose(f);
    if (!ds_test_fails) {
        char rp_path[1024];
        snprintf(rp_path, sizeof rp_path, "%s/results.json", ds_test_tmpdir());
        CHECK(ds_eval_write_json(rp_path, &lm, "replay", &o, tasks, res, n, NULL) == 0);
        char *s = ds_read_file(sp, NULL);
        static cJSON *samples[1024];
        int ns = 0;
        for (char *line = s ? strtok(s, "\n") : NULL; line && ns < 1024; line = strtok(NULL, "\n"))
            samples[ns++] = cJSON_Parse(line);
        free(s);
        cJSON *rj = load_json(rp_path);
        CHECK(rj != NULL && ns > 80);
        if (rj) CHECK(compare(fix, samples, ns, rj, 1) == 0);
        cJSON_Delete(rj);
        for (int i = 0; i < ns; i++) cJSON_Delete(samples[i]);
    }
    for (int i = 0; i < n; i++) { ds_task_result_free(&res[i]); ds_task_free(&tasks[i]); }
    replay_free(&rp);
    cJSON_Delete(fix);
}

/* ---- DeepSeek-V3's tokenizer, both BOS settings ------------------------------------------- */
/* tests/fixtures/eval/scores_dsv3tok.json: lm-eval's HFLM on a tiny BF16 model with DeepSeek-V3's
 * 129,280-token vocabulary and tokenizer (../shared/data/deepseek_v3_tokenizer, whose
 * tokenizer_config.json says add_bos_token: true), as HFLM(pretrained=DIR) ("default": no BOS
 * under transformers 5.x) and HFLM(..., add_bos_token=True) ("add_bos").  Tasks under lm-eval's
 * names; arc_challenge and winogrande on tests/fixtures/eval/{arc_challenge,winogrande}.jsonl. */

/* the tasks of one setting, each renamed NAME + suffix (and only those in keep, if given) */
static cJSON *setting_tasks(const cJSON *fix, const char *setting, const char *suffix, const char *const *keep) {
    cJSON *src = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(fix, "settings"), setting), "tasks");
    cJSON *o = cJSON_CreateObject(), *tasks = cJSON_AddObjectToObject(o, "tasks"), *t;
    cJSON_ArrayForEach(t, src) {
        int k = !keep;
        for (int i = 0; keep && keep[i]; i++) k |= !strcmp(keep[i], t->string);
        if (!k) continue;
        char name[96];
        snprintf(name, sizeof name, "%s%s", t->string, suffix);
        cJSON_AddItemToObject(tasks, name, cJSON_Duplicate(t, 1));
    }
    return o;
}

static int read_samples(const char *path, cJSON **samples, int cap) {
    char *s = ds_read_file(path, NULL);
    int ns = 0;
    for (char *line = s ? strtok(s, "\n") : NULL; line && ns < cap; line = strtok(NULL, "\n")) samples[ns++] = cJSON_Parse(line);
    free(s);
    return ns;
}

TEST(eval_parity_deepseek_v3_tokenizer_both_bos_settings) {
    if (!ds_test_shared("data/deepseek_v3_tokenizer/tokenizer.json") || !ds_test_shared("data/llm_foundry_icl/piqa.jsonl") ||
        !ds_test_shared("data/hellaswag/hellaswag_val_full.txt") || !ds_test_shared("data/wikitext2/wiki.test.raw"))
        SKIP("../shared/data (deepseek_v3_tokenizer, llm_foundry_icl, hellaswag, wikitext2) not found");
    cJSON *fix = load_json(FIX "/scores_dsv3tok.json");
    CHECK_MSG(fix != NULL, "%s", FIX "/scores_dsv3tok.json missing or malformed");
    if (!fix) return;
    const char *bin = getenv("DSV3") ? getenv("DSV3") : "./dsv3";
    const char *dir = ds_test_tmpdir();
    char tokdir[1024], shared[1024];
    snprintf(tokdir, sizeof tokdir, "%s", ds_test_shared("data/deepseek_v3_tokenizer"));
    snprintf(shared, sizeof shared, "%s", ds_test_shared("data"));
    static char out[65536];
    /* a data folder for the named tasks: ../shared/data plus the ARC-Challenge and WinoGrande fixtures */
    int rc = ds_test_sh(out, sizeof out,
                        "set -e; cd %s; D=%s/data; mkdir -p $D/llm_foundry_icl; S=$(cd %s && pwd); "
                        "for f in piqa arc_easy lambada_openai; do ln -sf $S/llm_foundry_icl/$f.jsonl $D/llm_foundry_icl/; done; "
                        "ln -sf $S/hellaswag $S/wikitext2 $D/; ln -sf $(pwd)/" FIX "/arc_challenge.jsonl $(pwd)/" FIX "/winogrande.jsonl $D/llm_foundry_icl/",
                        ".", dir, shared);
    CHECK_MSG(rc == 0, "%s", out);
    int limit = (int)num(fix, "limit"), max_len = (int)num(fix, "max_length"), wdocs = (int)num(fix, "wikitext_docs");
    /* 1: the fixture folder has no tokenizer.json (as one made by dsv3 init): --tokenizer; every task
     * in the default setting and again with the task option add_bos=1 */
    rc = ds_test_sh(out, sizeof out,
                    "%s eval --model " FIX "/dsv3tok --tokenizer %s/tokenizer.json --max-length %d --limit %d --data %s/data "
                    "--no-progress --task piqa arc_easy arc_challenge hellaswag winogrande lambada_openai 'wikitext#limit=%d' "
                    "'piqa#add_bos=1,name=piqa_bos' 'arc_easy#add_bos=1,name=arc_easy_bos' "
                    "'arc_challenge#add_bos=1,name=arc_challenge_bos' 'hellaswag#add_bos=1,name=hellaswag_bos' "
                    "'winogrande#add_bos=1,name=winogrande_bos' 'lambada_openai#add_bos=1,name=lambada_openai_bos' "
                    "'wikitext#add_bos=1,name=wikitext_bos,limit=%d' --samples %s/s1.jsonl --out %s/r1.json",
                    bin, tokdir, max_len, limit, dir, wdocs, wdocs, dir, dir);
    CHECK_MSG(rc == 0, "dsv3 eval failed: %s", out);
    static cJSON *samples[1024];
    char path[1024];
    if (!rc) {
        snprintf(path, sizeof path, "%s/s1.jsonl", dir);
        int ns = read_samples(path, samples, 1024);
        snprintf(path, sizeof path, "%s/r1.json", dir);
        cJSON *res = load_json(path);
        CHECK(res != NULL && ns > 90);
        cJSON *def = setting_tasks(fix, "default", "", NULL), *bos = setting_tasks(fix, "add_bos", "_bos", NULL);
        fprintf(stderr, "\n  default:");
        if (res) CHECK(compare(def, samples, ns, res, 1) == 0);
        fprintf(stderr, "  add_bos=1:");
        if (res) CHECK(compare(bos, samples, ns, res, 1) == 0);
        /* the two settings are several nats apart: each fixture separates them */
        cJSON *swapped = setting_tasks(fix, "add_bos", "", NULL);
        if (res) CHECK(compare(swapped, samples, ns, res, 0) > 20);
        cJSON_Delete(swapped);
        cJSON_Delete(def);
        cJSON_Delete(bos);
        cJSON_Delete(res);
        for (int i = 0; i < ns; i++) cJSON_Delete(samples[i]);
    }
    /* 2: a model folder with the tokenizer files in it, and --add-bos for the whole run */
    rc = ds_test_sh(out, sizeof out,
                    "set -e; M=%s/m; mkdir -p $M; cp " FIX "/dsv3tok/config.json " FIX "/dsv3tok/model.safetensors $M/; "
                    "T=$(cd %s && pwd); ln -sf $T/tokenizer.json $T/tokenizer_config.json $M/; "
                    "%s eval --model $M --add-bos --max-length %d --limit %d --data %s/data --no-progress --task piqa winogrande "
                    "--samples %s/s2.jsonl --out %s/r2.json",
                    dir, tokdir, bin, max_len, limit, dir, dir, dir);
    CHECK_MSG(rc == 0, "dsv3 eval --add-bos failed: %s", out);
    if (!rc) {
        snprintf(path, sizeof path, "%s/s2.jsonl", dir);
        int ns = read_samples(path, samples, 1024);
        snprintf(path, sizeof path, "%s/r2.json", dir);
        cJSON *res = load_json(path);
        static const char *const keep[] = {"piqa", "winogrande", NULL};
        cJSON *bos = setting_tasks(fix, "add_bos", "", keep);
        fprintf(stderr, "  --add-bos:");
        if (res) CHECK(compare(bos, samples, ns, res, 1) == 0);
        CHECK(res && cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "config"), "add_bos")));
        cJSON_Delete(bos);
        cJSON_Delete(res);
        for (int i = 0; i < ns; i++) cJSON_Delete(samples[i]);
    }
    cJSON_Delete(fix);
}
