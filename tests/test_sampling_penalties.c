/*
 * test_sampling_penalties.c — the sampler's repetition, presence and
 * frequency penalties, logit bias and min-p against their oracles
 * (tests/fixtures/sampling/penalties.safetensors, tools/make_sampling_fixtures.py):
 *  - greedy generation of the v3 fixture model with repetition_penalty 1.5
 *    gives transformers' generate ids; with logit_bias, repetition, presence
 *    and frequency penalties together it gives the ids of an oracle written
 *    from vLLM's order inside transformers' generate (every step's top-2
 *    margin there > 1e-4); both tables (cpu, ref) and `dsv3 generate`;
 *  - min-p after temperature, top-k and top-p: the distribution of
 *    transformers' warpers within 1e-6, same support;
 *  - the logits_adjust and probs_min_p entries against loops written here;
 *  - bad values fail with one line (library) or exit 2 (command line).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
#include "infer/infer.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test.h"

#define V3 "tests/fixtures/model/v3"
#define FIX "tests/fixtures/sampling/penalties.safetensors"

typedef struct {
    int32_t prompt[8], rep[64], pen[64];
    int64_t P, N;
    float logits[256], probs[16][256];
    double cases[16][4];
    int ncases;
} fixture;

static int64_t ints(const ds_st_file *f, const char *name, int32_t *out, int64_t cap) {
    const ds_st_tensor *t = ds_st_find(f, name);
    if (!t || t->numel > cap) return -1;
    float tmp[256];
    ds_st_to_f32(t, tmp);
    for (int64_t i = 0; i < t->numel; i++) out[i] = (int32_t)tmp[i];
    return t->numel;
}

static int fix_load(fixture *x) {
    ds_st_file f;
    if (ds_st_open(&f, FIX)) return -1;
    x->P = ints(&f, "prompt", x->prompt, 8);
    int64_t n1 = ints(&f, "rep_ids", x->rep, 64), n2 = ints(&f, "pen_ids", x->pen, 64);
    const ds_st_tensor *l = ds_st_find(&f, "minp_logits"), *p = ds_st_find(&f, "minp_probs"),
                       *c = ds_st_find(&f, "minp_cases");
    int ok = x->P == 8 && n1 == n2 && n1 > 8 && l && p && c && l->numel == 256 && p->ndim == 2 &&
             p->shape[0] <= 16 && p->shape[1] == 256 && c->numel == p->shape[0] * 4;
    if (ok) {
        x->N = n1 - x->P;
        x->ncases = (int)p->shape[0];
        ds_st_to_f32(l, x->logits);
        ds_st_to_f32(p, &x->probs[0][0]);
        float cs[64];
        ds_st_to_f32(c, cs);
        for (int i = 0; i < x->ncases * 4; i++) x->cases[i / 4][i % 4] = cs[i];
    }
    ds_st_close(&f);
    return ok ? 0 : -1;
}

static const ds_logit_bias BIAS[3] = {{7, 2.5f}, {105, -100.0f}, {200, 1.25f}};

TEST(sampling_penalties_match_transformers) {
    fixture x;
    if (!ds_file_exists(FIX)) SKIP("no %s (tools/make_sampling_fixtures.py)", FIX);
    CHECK(fix_load(&x) == 0);
    TEST_RETURN_IF_FAILED();
    ds_model m;
    CHECK_MSG(ds_model_load(&m, V3) == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    const struct ds_ops *tabs[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int t = 0; t < 2; t++)
        for (int which = 0; which < 2; which++) {
            ds_gen_opts o = {.max_tokens = x.N, .sp = {.temperature = 0, .top_p = 1}};
            if (which == 0) {
                o.sp.repetition_penalty = 1.5;
            } else {
                o.sp.repetition_penalty = 1.3, o.sp.presence_penalty = 0.4, o.sp.frequency_penalty = 0.6;
                o.sp.bias = BIAS, o.sp.nbias = 3;
            }
            int32_t out[64];
            int64_t n = 0;
            ds_gen_stats st;
            memset(&st, 0, sizeof st);
            CHECK_MSG(ds_generate(&m, tabs[t], x.prompt, x.P, &o, out, &n, NULL, NULL, &st) == 0, "%s", ds_errmsg());
            const int32_t *want = (which ? x.pen : x.rep) + x.P;
            int first = -1;
            for (int64_t i = 0; i < x.N && first < 0; i++)
                if (i >= n || out[i] != want[i]) first = (int)i;
            CHECK_MSG(n == x.N && first < 0, "%s, %s: %lld ids, first difference at %d (%d vs %d)", tabs[t]->name,
                      which ? "bias+penalties" : "repetition 1.5", (long long)n, first, first >= 0 ? out[first] : -1,
                      first >= 0 ? want[first] : -1);
        }
    /* speculative decoding draws as plain decoding does: the same ids */
    ds_gen_opts o = {.max_tokens = x.N, .speculative = 1,
                     .sp = {.temperature = 0, .top_p = 1, .repetition_penalty = 1.3, .presence_penalty = 0.4,
                            .frequency_penalty = 0.6, .bias = BIAS, .nbias = 3}};
    int32_t out[64];
    int64_t n = 0;
    ds_gen_stats st;
    CHECK(ds_generate(&m, &ds_ops_cpu, x.prompt, x.P, &o, out, &n, NULL, NULL, &st) == 0);
    CHECK_MSG(n == x.N && !memcmp(out, x.pen + x.P, (size_t)n * sizeof(int32_t)), "speculative with penalties: %lld ids",
              (long long)n);
    ds_model_free(&m);
}

TEST(sampling_penalties_generate_cli) {
    fixture x;
    if (!ds_file_exists(FIX)) SKIP("no %s (tools/make_sampling_fixtures.py)", FIX);
    CHECK(fix_load(&x) == 0);
    TEST_RETURN_IF_FAILED();
    char prompt[256] = "", want[2][512] = {"", ""}, out[8192];
    for (int64_t i = 0; i < x.P; i++) snprintf(prompt + strlen(prompt), sizeof prompt - strlen(prompt), "%d ", x.prompt[i]);
    for (int64_t i = x.P; i < x.P + x.N; i++) {
        snprintf(want[0] + strlen(want[0]), sizeof want[0] - strlen(want[0]), "%d ", x.rep[i]);
        snprintf(want[1] + strlen(want[1]), sizeof want[1] - strlen(want[1]), "%d ", x.pen[i]);
    }
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " V3 " --ids --prompt '%s' --max-new-tokens %lld "
                     "--ignore-eos --repetition-penalty 1.5 2>/dev/null", prompt, (long long)x.N) == 0);
    CHECK_MSG(!strncmp(out, want[0], strlen(want[0])), "got '%s', want '%s'", out, want[0]);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " V3 " --ids --prompt '%s' --max-new-tokens %lld "
                     "--ignore-eos --repetition-penalty 1.3 --presence-penalty 0.4 --frequency-penalty 0.6 "
                     "--logit-bias 7:2.5 105:-100 200:1.25 2>/dev/null", prompt, (long long)x.N) == 0);
    CHECK_MSG(!strncmp(out, want[1], strlen(want[1])), "got '%s', want '%s'", out, want[1]);
    /* usage errors: exit 2, one line naming the option */
    static const char *const bad[] = {"--logit-bias 3:x", "--logit-bias 3", "--logit-bias -1:2", "--logit-bias 3:inf",
                                      "--min-p 1.5", "--repetition-penalty 0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(ds_test_sh(out, sizeof out, "$DSV3 generate --model " V3 " --ids --prompt '1 2' %s", bad[i]) == 2,
                  "%s: %s", bad[i], out);
        CHECK_MSG(strstr(out, "dsv3 generate:") != NULL, "%s: %s", bad[i], out);
    }
    /* a token id beyond the vocabulary: known only once the model is read */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " V3 " --ids --prompt '1 2' --logit-bias 256:1") == 1);
    CHECK_MSG(strstr(out, "outside the vocabulary") != NULL, "%s", out);
}

TEST(sampling_min_p_matches_transformers) {
    fixture x;
    if (!ds_file_exists(FIX)) SKIP("no %s (tools/make_sampling_fixtures.py)", FIX);
    CHECK(fix_load(&x) == 0);
    TEST_RETURN_IF_FAILED();
    const struct ds_ops *tabs[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int t = 0; t < 2; t++)
        for (int c = 0; c < x.ncases; c++) {
            ds_sample_params p = {.temperature = x.cases[c][0], .top_k = (int64_t)x.cases[c][1], .top_p = x.cases[c][2],
                                  .min_p = x.cases[c][3], .seed = 1};
            ds_sampler s;
            CHECK(ds_sampler_init(&s, tabs[t], &p, 256) == 0);
            float prob[256];
            ds_sampler_probs(&s, prob, x.logits);
            double e = 0;
            int support = 1;
            for (int i = 0; i < 256; i++) {
                e = fmax(e, fabs(prob[i] - x.probs[c][i]));
                support &= (prob[i] > 0) == (x.probs[c][i] > 0);
            }
            CHECK_MSG(e <= 1e-6 && support, "%s case %d (T %g k %g p %g min_p %g): max err %.3g, same support %d",
                      tabs[t]->name, c, x.cases[c][0], x.cases[c][1], x.cases[c][2], x.cases[c][3], e, support);
            ds_sampler_free(&s);
        }
}

TEST(sampling_adjust_entries_and_bad_params) {
    /* logits_adjust: x + pre, then / rep when > 0 else * rep, then + post, at the listed ids only */
    const float x0[8] = {1.5f, -2.0f, 0.0f, 3.0f, -0.5f, 4.0f, 0.25f, -1.0f};
    const int32_t ids[5] = {6, 0, 1, 2, 4};
    const float pre[5] = {-1.0f, 0, 0, 0.5f, 2.0f}, rep[5] = {2.0f, 2.0f, 2.0f, 1.0f, 4.0f}, post[5] = {0, -0.5f, 1, 0, -3};
    /* by hand: 6: 0.25-1 = -0.75 -> *2 = -1.5; 0: 1.5/2 - 0.5 = 0.25; 1: -2*2 + 1 = -3; 2: 0.5;
     * 4: -0.5+2 = 1.5 -> /4 = 0.375 -> -2.625; 3, 5, 7 untouched */
    const float want[8] = {0.25f, -3.0f, 0.5f, 3.0f, -2.625f, 4.0f, -1.5f, -1.0f};
    const struct ds_ops *tabs[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int t = 0; t < 2; t++) {
        float x[8];
        memcpy(x, x0, sizeof x);
        tabs[t]->logits_adjust(x, 8, ids, pre, rep, post, 5);
        for (int i = 0; i < 8; i++) CHECK_MSG(x[i] == want[i], "%s: x[%d] = %g, want %g", tabs[t]->name, i, x[i], want[i]);
        /* min-p 0.5 of the top 0.4: 0.2 stays (not below), 0.1 and 0.05 go, the rest renormalised */
        float p[6] = {0.1f, 0.4f, 0.2f, 0.05f, 0.25f, 0.0f};
        tabs[t]->probs_min_p(p, 6, 0.5);
        const double z = 0.4 + 0.2 + 0.25;
        const double wp[6] = {0, 0.4 / z, 0.2 / z, 0, 0.25 / z, 0};
        for (int i = 0; i < 6; i++) CHECK_MSG(fabs(p[i] - wp[i]) < 1e-7, "%s: p[%d] = %g, want %g", tabs[t]->name, i, p[i], wp[i]);
    }
    /* a sampler's history: presence and frequency count output tokens only, repetition the prompt too */
    ds_sample_params sp = {.temperature = 0, .top_p = 1, .presence_penalty = 1, .frequency_penalty = 0.5,
                           .repetition_penalty = 2};
    ds_sampler s;
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &sp, 4) == 0);
    const int32_t pr[2] = {1, 1};
    ds_sampler_prompt(&s, pr, 2);
    const float lg[4] = {1.0f, 3.0f, 2.0f, -1.0f};
    /* step 1: 1 -> 3/2 = 1.5 (prompt: repetition only); argmax 2 (2.0) */
    CHECK(ds_sample(&s, lg) == 2);
    /* step 2: 2 -> 2/2 - 1 - 0.5 = -0.5; 1 -> 1.5; argmax 1 */
    CHECK(ds_sample(&s, lg) == 1);
    const float *a = ds_sampler_adjust(&s, lg);
    /* now 1: 1.5 - 1.5 = 0, 2: -0.5, 0: 1 -> argmax 0 */
    CHECK(a[0] == 1.0f && a[1] == 0.0f && a[2] == -0.5f && a[3] == -1.0f);
    CHECK(lg[1] == 3.0f); /* the raw logits stay as they were (log-probabilities read them) */
    ds_sampler_free(&s);
    CHECK(!ds_sample_params_argmax(&sp) && ds_sample_params_adjusts(&sp));
    ds_sample_params plain = {.temperature = 0, .top_p = 1};
    CHECK(ds_sample_params_argmax(&plain) && !ds_sample_params_adjusts(&plain));
    /* bad values: one line each */
    const struct { ds_sample_params p; const char *what; } bad[] = {
        {{.top_p = 1, .min_p = -0.1}, "min-p"},
        {{.top_p = 1, .min_p = 1.5}, "min-p"},
        {{.top_p = 1, .repetition_penalty = -1}, "repetition"},
        {{.top_p = 1, .presence_penalty = NAN}, "presence"},
        {{.top_p = 1, .frequency_penalty = INFINITY}, "frequency"},
        {{.top_p = 1, .bias = (const ds_logit_bias[]){{4, 1}}, .nbias = 1}, "outside the vocabulary"},
        {{.top_p = 1, .bias = (const ds_logit_bias[]){{1, NAN}}, .nbias = 1}, "not finite"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(ds_sampler_init(&s, &ds_ops_cpu, &bad[i].p, 4) == -1, "case %zu accepted", i);
        CHECK_MSG(strstr(ds_errmsg(), bad[i].what) != NULL, "case %zu: %s", i, ds_errmsg());
    }
}

/* stop ids and min_new_tokens: transformers' greedy generate with eos_token_id
 * [1, X, Y] ends at X; with min_new_tokens the ids are held back (-inf) until
 * then, and it runs on to Y (fixture stop_ids, minlen_ids, stop_cfg) */
TEST(sampling_min_tokens_match_transformers) {
    if (!ds_file_exists(FIX)) SKIP("no %s (tools/make_sampling_fixtures.py)", FIX);
    ds_st_file f;
    CHECK(ds_st_open(&f, FIX) == 0);
    TEST_RETURN_IF_FAILED();
    int32_t prompt[8], stop_ids[64], minlen[64], cfg[3];
    int64_t P = ints(&f, "prompt", prompt, 8), ns = ints(&f, "stop_ids", stop_ids, 64), nm = ints(&f, "minlen_ids", minlen, 64);
    CHECK(ints(&f, "stop_cfg", cfg, 3) == 3 && P == 8 && ns > P && nm > ns);
    ds_st_close(&f);
    TEST_RETURN_IF_FAILED();
    ds_model m;
    CHECK_MSG(ds_model_load(&m, V3) == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    const int64_t eos[3] = {1, cfg[0], cfg[1]};
    const int32_t held[3] = {1, cfg[0], cfg[1]};
    const struct ds_ops *tabs[2] = {&ds_ops_cpu, &ds_ops_ref};
    for (int t = 0; t < 2; t++)
        for (int with_min = 0; with_min < 2; with_min++) {
            ds_gen_opts o = {.max_tokens = 24, .sp = {.temperature = 0, .top_p = 1}, .eos = eos, .neos = 3};
            if (with_min) o.sp.min_tokens = cfg[2], o.sp.stop_ids = held, o.sp.nstop_ids = 3;
            int32_t out[64];
            int64_t n = 0;
            ds_gen_stats st;
            memset(&st, 0, sizeof st);
            CHECK_MSG(ds_generate(&m, tabs[t], prompt, P, &o, out, &n, NULL, NULL, &st) == 0, "%s", ds_errmsg());
            const int32_t *want = (with_min ? minlen : stop_ids) + P;
            const int64_t nw = (with_min ? nm : ns) - P;
            CHECK_MSG(n == nw && !memcmp(out, want, (size_t)nw * sizeof(int32_t)) && st.stopped == 1,
                      "%s, min_tokens %d: %lld ids (want %lld), last %d (want %d)", tabs[t]->name, with_min ? cfg[2] : 0,
                      (long long)n, (long long)nw, n ? out[n - 1] : -1, want[nw - 1]);
        }
    /* a held-back id outside the vocabulary, a negative min_tokens: one line each */
    ds_sampler s;
    const int32_t far[1] = {256};
    ds_sample_params p = {.top_p = 1, .min_tokens = 2, .stop_ids = far, .nstop_ids = 1};
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 256) == -1 && strstr(ds_errmsg(), "stop id 256 outside the vocabulary"));
    p.min_tokens = -1, p.nstop_ids = 0;
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 256) == -1 && strstr(ds_errmsg(), "min_tokens"));
    ds_model_free(&m);
}

/* `dsv3 generate --min-new-tokens`: the model's EOS (1) held back; usage errors exit 2 */
TEST(sampling_min_new_tokens_cli) {
    char out[8192];
    CHECK_MSG(ds_test_sh(out, sizeof out, "$DSV3 generate --model " V3 " --ids --prompt '1 2' --min-new-tokens -1") == 2 &&
                  strstr(out, "dsv3 generate: --min-new-tokens"), "%s", out);
    char spec[8192];
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " V3 " --ids --prompt '4 5 6' --max-new-tokens 12 "
                     "--logit-bias 1:100 --min-new-tokens 5 --temperature 0.9 --seed 4 2>/dev/null") == 0);
    CHECK(ds_test_sh(spec, sizeof spec, "$DSV3 generate --model " V3 " --ids --prompt '4 5 6' --max-new-tokens 12 "
                     "--logit-bias 1:100 --min-new-tokens 5 --temperature 0.9 --seed 4 --speculative mtp 2>/dev/null") == 0);
    CHECK_MSG(!strcmp(out, spec), "plain '%s', speculative '%s'", out, spec);
    /* a bias that forces the EOS: it still cannot come before 5 tokens, then it ends the answer */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model " V3 " --ids --prompt '4 5 6' --max-new-tokens 12 "
                     "--logit-bias 1:100 --min-new-tokens 5 2>/dev/null") == 0);
    int ids[32], n = 0;
    for (char *p = out, *e; n < 32; p = e) {
        long v = strtol(p, &e, 10);
        if (e == p) break;
        ids[n++] = (int)v;
    }
    CHECK_MSG(n == 6 && ids[5] == 1, "got '%s'", out);
    for (int i = 0; i < n - 1; i++) CHECK(ids[i] != 1);
}
