/*
 * test_infer.c — the inference engine against its oracles:
 *  - transformers' greedy generation through its KV cache
 *    (tests/fixtures/model/<cfg>/generate.safetensors): same ids, per-step
 *    logits within 1e-5 of max|logit|;
 *  - the full-sequence forward pass (ds_model_forward, expanded MLA): the
 *    absorbed, cached, chunked prefill and decode logits at every position;
 *  - the MTP reference (reference.safetensors mtp_logits.1) for the MTP
 *    module run through its own cache;
 *  - speculative decoding gives exactly the plain greedy ids, and sampled
 *    with the same seed (penalties, bias too) the plain sampled ids.
 * Tolerance 1e-5 relative to max|ref|: both sides are FP32 and differ only
 * in summation order (absorbed vs expanded attention, online vs two-pass
 * softmax, BLAS blocking): measured ~1e-6; a wrong position, cache slot or
 * rope offset moves the logits by 1e-2 or more.
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "infer/infer.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test.h"

#define FIXDIR "tests/fixtures/model/"
#define TOL 1e-5

typedef struct {
    ds_model m;
    int64_t B, T, N, V;
    int32_t *gids;  /* (B, T+N) */
    float *glog;    /* (B, N, V) */
    float *mtp1;    /* (B, T-1, V) or NULL */
} fixture;

static int fix_load(fixture *f, const char *name) {
    char dir[256], p[300];
    memset(f, 0, sizeof *f);
    snprintf(dir, sizeof dir, FIXDIR "%s", name);
    snprintf(p, sizeof p, "%s/generate.safetensors", dir);
    if (!ds_file_exists(p)) return 1;
    if (ds_model_load(&f->m, dir)) {
        CHECK_MSG(0, "%s: %s", name, ds_errmsg());
        return -1;
    }
    ds_st_file g;
    CHECK(ds_st_open(&g, p) == 0);
    const ds_st_tensor *ti = ds_st_find(&g, "greedy_ids"), *tl = ds_st_find(&g, "greedy_logits");
    CHECK(ti && tl && ti->ndim == 2 && tl->ndim == 3);
    if (!ti || !tl) return -1;
    f->B = ti->shape[0];
    f->N = tl->shape[1];
    f->T = ti->shape[1] - f->N;
    f->V = f->m.cfg.vocab_size;
    CHECK(tl->shape[2] == f->V);
    float *tmp = ds_malloc((size_t)ti->numel * sizeof(float));
    ds_st_to_f32(ti, tmp);
    f->gids = ds_malloc((size_t)ti->numel * sizeof(int32_t));
    for (int64_t i = 0; i < ti->numel; i++) f->gids[i] = (int32_t)tmp[i];
    free(tmp);
    f->glog = ds_malloc((size_t)tl->numel * sizeof(float));
    ds_st_to_f32(tl, f->glog);
    ds_st_close(&g);
    snprintf(p, sizeof p, "%s/reference.safetensors", dir);
    ds_st_file r;
    if (f->m.cfg.num_nextn_predict_layers > 0 && ds_st_open(&r, p) == 0) {
        const ds_st_tensor *t = ds_st_find(&r, "mtp_logits.1");
        if (t && t->numel == f->B * (f->T - 1) * f->V) {
            f->mtp1 = ds_malloc((size_t)t->numel * sizeof(float));
            ds_st_to_f32(t, f->mtp1);
        }
        ds_st_close(&r);
    }
    return 0;
}

static void fix_free(fixture *f) {
    ds_model_free(&f->m);
    free(f->gids);
    free(f->glog);
    free(f->mtp1);
}

/* prompt rows (B, T) out of greedy_ids (B, T+N) */
static int32_t *prompt_of(const fixture *f) {
    int32_t *p = ds_malloc((size_t)(f->B * f->T) * sizeof(int32_t));
    for (int64_t b = 0; b < f->B; b++) memcpy(p + b * f->T, f->gids + b * (f->T + f->N), (size_t)f->T * sizeof(int32_t));
    return p;
}

/* HF greedy through the cache: B = 2 in lockstep, prefill (chunk) then N-1 single steps */
static void greedy_vs_hf_ops(const char *name, int64_t chunk, const struct ds_ops *ops) {
    fixture f;
    int r = fix_load(&f, name);
    if (r) {
        if (r > 0) SKIP("%s: no generate.safetensors", name);
        return;
    }
    const int64_t B = f.B, T = f.T, N = f.N, V = f.V;
    ds_engine e;
    CHECK(ds_engine_create(&e, &f.m, ops, B, T + N, chunk, 0) == 0);
    int32_t *prompt = prompt_of(&f);
    CHECK(ds_engine_prefill(&e, prompt, T) == 0);
    double worst = 0;
    int bad_ids = 0;
    for (int64_t s = 0; s < N; s++) {
        int32_t next[8];
        for (int64_t b = 0; b < B; b++) {
            const float *ref = f.glog + (b * N + s) * V, *got = e.logits + b * V;
            double err = ds_test_max_rel(got, ref, (size_t)V, 1e-30);
            worst = err > worst ? err : worst;
            ops->argmax_rows(&next[b], got, 1, V);
            bad_ids += next[b] != f.gids[b * (T + N) + T + s];
        }
        if (s + 1 < N) CHECK(ds_engine_step(&e, next, 1, 1) == 0);
    }
    fprintf(stderr, "  %s (chunk %lld, %s): %lld greedy steps, worst logits rel err %.3g\n", name, (long long)chunk,
            ops->name, (long long)N, worst);
    CHECK_MSG(bad_ids == 0, "%s: %d generated ids differ from transformers", name, bad_ids);
    CHECK_MSG(worst < TOL, "%s: step logits rel err %.3g", name, worst);
    CHECK(e.pos == T + N - 1);
    free(prompt);
    ds_engine_free(&e);
    fix_free(&f);
}

static void greedy_vs_hf(const char *name, int64_t chunk) { greedy_vs_hf_ops(name, chunk, &ds_ops_cpu); }

TEST(greedy_matches_transformers_reference_ops) { greedy_vs_hf_ops("v3", 24, &ds_ops_ref); }
TEST(greedy_matches_transformers_v3) { greedy_vs_hf("v3", 24); }
TEST(greedy_matches_transformers_v2lite) { greedy_vs_hf("v2lite", 24); }
TEST(greedy_matches_transformers_v2group) { greedy_vs_hf("v2group", 24); }
TEST(greedy_matches_transformers_norope) { greedy_vs_hf("norope", 24); }
TEST(greedy_matches_transformers_chunked_prefill) { greedy_vs_hf("v3", 5); }

/* every cached position's logits (chunked prefill with all logits, then
 * single steps) equal the full forward of the whole sequence */
static void cached_vs_forward(const char *name) {
    fixture f;
    if (fix_load(&f, name)) return;
    const int64_t B = f.B, TT = f.T + f.N, V = f.V;
    ds_acts a;
    CHECK(ds_acts_create(&a, &f.m, B, TT, 0) == 0);
    CHECK(ds_model_forward(&f.m, &a, &ds_ops_cpu, f.gids) == 0);
    ds_engine e;
    const int64_t chunk = 7;
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, B, TT, chunk, 0) == 0);
    double worst = 0;
    int32_t tmp[64];
    for (int64_t s = 0; s < TT;) {
        int64_t n = s < f.T ? (f.T - s < chunk ? f.T - s : chunk) : 1; /* prompt in chunks, then decode steps */
        for (int64_t b = 0; b < B; b++) memcpy(tmp + b * n, f.gids + b * TT + s, (size_t)n * sizeof(int32_t));
        CHECK(ds_engine_step(&e, tmp, n, 0) == 0);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n; i++) {
                double err = ds_test_max_rel(e.logits + (b * n + i) * V, a.logits + (b * TT + s + i) * V, (size_t)V, 1e-30);
                worst = err > worst ? err : worst;
            }
        s += n;
    }
    fprintf(stderr, "  %s: %lld positions, cached vs full forward worst rel err %.3g\n", name, (long long)TT, worst);
    CHECK_MSG(worst < TOL, "%s: rel err %.3g", name, worst);
    ds_engine_free(&e);
    ds_acts_free(&a);
    fix_free(&f);
}

TEST(cached_equals_forward_v3) { cached_vs_forward("v3"); }
TEST(cached_equals_forward_v2lite) { cached_vs_forward("v2lite"); }
TEST(cached_equals_forward_v2group) { cached_vs_forward("v2group"); }
TEST(cached_equals_forward_norope) { cached_vs_forward("norope"); }

/* MTP module 1 through its own cache vs the MTP reference (tools/mtp_reference.py) */
static void mtp_vs_reference(const char *name) {
    fixture f;
    if (fix_load(&f, name)) return;
    CHECK(f.mtp1 != NULL);
    if (!f.mtp1) {
        fix_free(&f);
        return;
    }
    const int64_t B = f.B, T = f.T, V = f.V, H = f.m.cfg.hidden_size;
    ds_engine e;
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, B, T, T, 1) == 0);
    int32_t *prompt = prompt_of(&f);
    CHECK(ds_engine_step(&e, prompt, T, 0) == 0);
    /* state i with token i+1, i = 0..T-2; fed in two pieces to exercise the cache */
    float *h = ds_malloc((size_t)(B * T * H) * sizeof(float));
    int32_t nx[64];
    int64_t cut = 10, done = 0;
    double worst = 0;
    while (done < T - 1) {
        int64_t n = done == 0 ? cut : T - 1 - cut;
        for (int64_t b = 0; b < B; b++) {
            memcpy(h + b * n * H, e.hfinal + (b * T + done) * H, (size_t)(n * H) * sizeof(float));
            memcpy(nx + b * n, prompt + b * T + done + 1, (size_t)n * sizeof(int32_t));
        }
        CHECK(ds_engine_mtp_step(&e, h, nx, n, 0) == 0);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n; i++) {
                double err = ds_test_max_rel(e.mtp_logits + (b * n + i) * V, f.mtp1 + (b * (T - 1) + done + i) * V,
                                             (size_t)V, 1e-30);
                worst = err > worst ? err : worst;
            }
        done += n;
    }
    fprintf(stderr, "  %s: MTP module 1 cached vs reference worst rel err %.3g\n", name, worst);
    CHECK_MSG(worst < TOL, "%s: mtp rel err %.3g", name, worst);
    free(h);
    free(prompt);
    ds_engine_free(&e);
    fix_free(&f);
}

TEST(mtp_cached_matches_reference_v3) { mtp_vs_reference("v3"); }
TEST(mtp_cached_matches_reference_norope) { mtp_vs_reference("norope"); }

/* speculative (MTP draft, 2-token verify) gives the plain greedy ids */
static void speculative_vs_greedy(const char *name) {
    fixture f;
    if (fix_load(&f, name)) return;
    const int64_t T = f.T, NG = 24;
    for (int64_t b = 0; b < f.B; b++) {
        const int32_t *prompt = f.gids + b * (T + f.N);
        ds_gen_opts o = {.max_tokens = NG, .sp = {.temperature = 0, .top_p = 1}};
        int32_t plain[64], spec[64], spec2[64];
        int64_t np = 0, ns = 0, ns2 = 0;
        ds_gen_stats sp, ss, ss2;
        CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, T, &o, plain, &np, NULL, NULL, &sp) == 0);
        o.speculative = 1;
        CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, T, &o, spec, &ns, NULL, NULL, &ss) == 0);
        CHECK(np == NG && ns == NG);
        for (int64_t i = 0; i < f.N && i < np; i++) CHECK(plain[i] == f.gids[b * (T + f.N) + T + i]);
        int diff = 0;
        for (int64_t i = 0; i < NG; i++) diff += plain[i] != spec[i];
        CHECK_MSG(diff == 0, "%s seq %lld: speculative differs from greedy at %d positions", name, (long long)b, diff);
        CHECK(ss.drafted > 0 && ss.accepted <= ss.drafted);
        CHECK(ss.steps < sp.steps || ss.accepted == 0);
        /* small chunks: the MTP prefill pairs states and tokens across chunk borders */
        ds_engine e;
        CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, 1, T + NG, 5, 1) == 0);
        o.max_tokens = NG;
        memset(&ss2, 0, sizeof ss2);
        CHECK(ds_generate_speculative(&e, prompt, T, &o, spec2, &ns2, NULL, NULL, &ss2) == 0);
        CHECK(ns2 == NG && memcmp(spec2, spec, (size_t)NG * sizeof(int32_t)) == 0);
        CHECK(ss2.accepted == ss.accepted);
        ds_engine_free(&e);
        fprintf(stderr, "  %s seq %lld: %lld tokens, %lld drafts, %lld accepted, main steps %lld (plain %lld)\n", name,
                (long long)b, (long long)NG, (long long)ss.drafted, (long long)ss.accepted, (long long)ss.steps,
                (long long)sp.steps);
    }
    fix_free(&f);
}

TEST(speculative_equals_greedy_v3) { speculative_vs_greedy("v3"); }
TEST(speculative_equals_greedy_norope) { speculative_vs_greedy("norope"); }

static int stop_at_3(void *ctx, int32_t id) {
    int *n = ctx;
    (void)id;
    return ++*n >= 3;
}

TEST(generate_stops_and_errors) {
    fixture f;
    if (fix_load(&f, "v3")) SKIP("no v3 fixture");
    const int64_t T = f.T;
    const int32_t *prompt = f.gids;
    int32_t out[128];
    int64_t n = 0;
    ds_gen_stats st;
    /* EOS: the 2nd greedy token as EOS stops after it (kept in the output) */
    int64_t eos = f.gids[T + 1];
    ds_gen_opts o = {.max_tokens = 8, .sp = {.temperature = 0, .top_p = 1}, .eos = &eos, .neos = 1};
    CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, T, &o, out, &n, NULL, NULL, &st) == 0);
    CHECK(st.stopped == 1 && n >= 2 && out[n - 1] == eos);
    o.speculative = 1;
    CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, T, &o, out, &n, NULL, NULL, &st) == 0);
    CHECK(st.stopped == 1 && n >= 2 && out[n - 1] == eos);
    /* callback stop */
    o.neos = 0;
    int cnt = 0;
    CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, T, &o, out, &n, stop_at_3, &cnt, &st) == 0);
    CHECK(n == 3 && st.stopped == 2);
    o.speculative = 0;
    /* errors */
    CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, 0, &o, out, &n, NULL, NULL, &st) == -1);
    CHECK(strstr(ds_errmsg(), "empty") != NULL);
    int32_t longp[64] = {0};
    CHECK(ds_generate(&f.m, &ds_ops_cpu, longp, 64, &o, out, &n, NULL, NULL, &st) == -1);
    CHECK(strstr(ds_errmsg(), "max_position_embeddings") != NULL);
    /* max tokens are clamped to the positions left */
    o.max_tokens = 100;
    CHECK(ds_generate(&f.m, &ds_ops_cpu, longp, 60, &o, out, &n, NULL, NULL, &st) == 0);
    CHECK(n == 4);
    int32_t plain4[4];
    memcpy(plain4, out, sizeof plain4);
    o.speculative = 1; /* the verify steps stay inside the clamped cache */
    CHECK(ds_generate(&f.m, &ds_ops_cpu, longp, 60, &o, out, &n, NULL, NULL, &st) == 0);
    CHECK(n == 4 && memcmp(out, plain4, sizeof plain4) == 0);
    o.sp.temperature = 0.7; /* sampled and speculative: the plain sampled tokens (speculative_sampling_equals_plain) */
    CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, T, &o, out, &n, NULL, NULL, &st) == 0);
    /* engine: cache full, bad id, no MTP */
    ds_engine e;
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, 1, 4, 4, 0) == 0);
    int32_t ids[5] = {1, 2, 3, 4, 5};
    CHECK(ds_engine_step(&e, ids, 5, 1) == -1);
    CHECK(ds_engine_step(&e, ids, 4, 1) == 0);
    CHECK(ds_engine_step(&e, ids, 1, 1) == -1 && strstr(ds_errmsg(), "cache full"));
    ds_engine_rewind(&e, 0);
    int32_t bad = (int32_t)f.V;
    CHECK(ds_engine_step(&e, &bad, 1, 1) == -1 && strstr(ds_errmsg(), "vocabulary"));
    CHECK(ds_engine_mtp_step(&e, e.hfinal, ids, 1, 1) == -1);
    ds_engine_free(&e);
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, 1, 65, 4, 0) == -1);
    fix_free(&f);
}

/* ---- sampler ---------------------------------------------------------------------- */

static const float LG[8] = {2.0f, 1.0f, 0.5f, 3.0f, -1.0f, 0.0f, 1.0f, 2.5f};

static void softmax_ref(double *p, const float *x, int64_t n, double T) {
    double mx = -1e300, s = 0;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++) s += (p[i] = exp((x[i] - mx) / T));
    for (int64_t i = 0; i < n; i++) p[i] /= s;
}

TEST(sampler_greedy_and_low_temperature) {
    ds_sampler s;
    ds_sample_params p = {.temperature = 0, .top_p = 1, .seed = 1};
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == 0);
    CHECK(ds_sample(&s, LG) == 3);
    ds_sampler_free(&s);
    p.temperature = 1e-3; /* gap 0.5 / 1e-3: the runner-up has probability e^-500 */
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == 0);
    for (int i = 0; i < 100; i++) CHECK(ds_sample(&s, LG) == 3);
    ds_sampler_free(&s);
    float tie[4] = {1, 5, 5, 0};
    int32_t am[2];
    ds_ops_cpu.argmax_rows(&am[0], tie, 1, 4);
    ds_ops_ref.argmax_rows(&am[1], tie, 1, 4);
    CHECK(am[0] == 1 && am[1] == 1);
    p.temperature = -1;
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == -1);
    p.temperature = 1;
    p.top_p = 0;
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == -1);
    p.top_p = 1.5;
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == -1);
    p.top_p = 1;
    p.top_k = -2;
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == -1);
}

TEST(sampler_top_p_keeps_smallest_set) {
    double ref[8];
    softmax_ref(ref, LG, 8, 1.0);
    /* sorted: 3 (0.363), 7 (0.220), 0 (0.134), 1/6 (0.049 each), ... */
    int order[8] = {3, 7, 0, 1, 6, 2, 5, 4};
    for (double tp = 0.05; tp <= 1.0; tp += 0.05) {
        ds_sampler s;
        ds_sample_params p = {.temperature = 1, .top_p = tp, .seed = 1};
        CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == 0);
        float prob[8];
        ds_sampler_probs(&s, prob, LG);
        int k = 0;
        double cum = 0;
        while (cum < tp - 1e-12 && k < 8) cum += ref[order[k++]];
        double kept = 0;
        for (int i = 0; i < k; i++) kept += ref[order[i]];
        for (int i = 0; i < 8; i++) {
            double want = i < k ? ref[order[i]] / kept : 0;
            CHECK_NEAR(prob[order[i]], want, 1e-6);
        }
        ds_sampler_free(&s);
    }
}

TEST(sampler_top_k_and_frequencies) {
    /* temperature 0.7, top-k 4: expected distribution from a float64 softmax over the 4 largest */
    double T = 0.7, ref[8], sub[4];
    float top[4];
    int ids[4] = {3, 7, 0, 1}; /* 1 and 6 tie at 1.0: the lower id is kept */
    for (int i = 0; i < 4; i++) top[i] = LG[ids[i]];
    softmax_ref(sub, top, 4, T);
    memset(ref, 0, sizeof ref);
    for (int i = 0; i < 4; i++) ref[ids[i]] = sub[i];
    ds_sampler s;
    ds_sample_params p = {.temperature = T, .top_k = 4, .top_p = 1, .seed = 42};
    CHECK(ds_sampler_init(&s, &ds_ops_cpu, &p, 8) == 0);
    float prob[8];
    ds_sampler_probs(&s, prob, LG);
    for (int i = 0; i < 8; i++) CHECK_NEAR(prob[i], ref[i], 1e-6);
    const int n = 200000;
    int cnt[8] = {0};
    for (int i = 0; i < n; i++) cnt[ds_sample(&s, LG)]++;
    for (int i = 0; i < 8; i++) {
        double sd = sqrt(n * ref[i] * (1 - ref[i]));
        CHECK_MSG(fabs(cnt[i] - n * ref[i]) <= 5 * sd + (ref[i] == 0 ? 0 : 1), "token %d: %d draws, expected %.1f", i,
                  cnt[i], n * ref[i]);
    }
    ds_sampler_free(&s);
    /* no filter: plain softmax frequencies; the same seed gives the same draws */
    double full[8];
    softmax_ref(full, LG, 8, 1.3);
    ds_sample_params q = {.temperature = 1.3, .top_p = 1, .seed = 7};
    ds_sampler a, b;
    CHECK(ds_sampler_init(&a, &ds_ops_cpu, &q, 8) == 0 && ds_sampler_init(&b, &ds_ops_cpu, &q, 8) == 0);
    int ca[8] = {0}, same = 1;
    for (int i = 0; i < n; i++) {
        int32_t x = ds_sample(&a, LG), y = ds_sample(&b, LG);
        same &= x == y;
        ca[x]++;
    }
    CHECK(same);
    for (int i = 0; i < 8; i++) {
        double sd = sqrt(n * full[i] * (1 - full[i]));
        CHECK_MSG(fabs(ca[i] - n * full[i]) <= 5 * sd, "token %d: %d draws, expected %.1f", i, ca[i], n * full[i]);
    }
    ds_sampler_free(&a);
    ds_sampler_free(&b);
}

/* Drafts forced right or wrong (the fixtures' random MTP modules are rarely
 * right): the output stays the greedy one, and afterwards both caches (main
 * layers and the MTP layer) equal those of a fresh one-shot pass over the
 * final sequence — so accept, reject and rewind keep the caches exact. */
static void speculative_forced(const char *name, int every) {
    fixture f;
    if (fix_load(&f, name)) return;
    const int64_t T = f.T, NG = 20, V = f.V, H = f.m.cfg.hidden_size, L = f.m.cfg.num_hidden_layers;
    const int32_t *prompt = f.gids;
    ds_gen_opts o = {.max_tokens = NG, .sp = {.temperature = 0, .top_p = 1}};
    int32_t plain[64], spec[64], forced[64];
    int64_t np = 0, ns = 0;
    ds_gen_stats st;
    CHECK(ds_generate(&f.m, &ds_ops_cpu, prompt, T, &o, plain, &np, NULL, NULL, &st) == 0);
    for (int64_t i = 0; i < NG; i++) forced[i] = (every && i % every == every - 1) ? (plain[i] + 1) % (int32_t)V : plain[i];
    ds_engine e;
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, 1, T + NG, 6, 1) == 0);
    e.forced_drafts = forced;
    e.n_forced = NG;
    o.speculative = 1;
    CHECK(ds_generate_speculative(&e, prompt, T, &o, spec, &ns, NULL, NULL, &st) == 0);
    CHECK(ns == NG && memcmp(spec, plain, (size_t)NG * sizeof(int32_t)) == 0);
    fprintf(stderr, "  %s (every %d-th draft wrong): %lld drafts, %lld accepted, %lld main steps\n", name, every,
            (long long)st.drafted, (long long)st.accepted, (long long)st.steps);
    CHECK(st.accepted > 0 && (every == 0 ? st.accepted == st.drafted : st.accepted < st.drafted));
    /* one-shot reference over the sequence prompt + out */
    int32_t seq[128];
    memcpy(seq, prompt, (size_t)T * sizeof(int32_t));
    memcpy(seq + T, spec, (size_t)NG * sizeof(int32_t));
    ds_engine r;
    CHECK(ds_engine_create(&r, &f.m, &ds_ops_cpu, 1, T + NG, T + NG, 1) == 0);
    CHECK(ds_engine_step(&r, seq, e.pos, 0) == 0);
    CHECK(e.mtp_pos <= e.pos);
    float *h = ds_malloc((size_t)((T + NG) * H) * sizeof(float));
    memcpy(h, r.hfinal, (size_t)(e.mtp_pos * H) * sizeof(float));
    CHECK(ds_engine_mtp_step(&r, h, seq + 1, e.mtp_pos, 0) == 0);
    double worst = 0;
    for (int64_t l = 0; l <= L; l++) {
        int64_t npos = l < L ? e.pos : e.mtp_pos;
        double a = ds_test_max_rel(e.kc.ckv[l], r.kc.ckv[l], (size_t)(npos * e.kc.rkv), 1e-30);
        double b = ds_test_max_rel(e.kc.kpe[l], r.kc.kpe[l], (size_t)(npos * e.kc.dr), 1e-30);
        worst = a > worst ? a : worst;
        worst = b > worst ? b : worst;
    }
    double ml = ds_test_max_rel(e.mtp_logits, r.mtp_logits + (e.mtp_pos - 1) * V, (size_t)V, 1e-30);
    fprintf(stderr, "  %s: caches vs one-shot worst rel err %.3g, last MTP logits %.3g\n", name, worst, ml);
    CHECK(worst < TOL && ml < TOL);
    free(h);
    ds_engine_free(&r);
    ds_engine_free(&e);
    fix_free(&f);
}

/* Sampled (temperature, top-k/p, min-p, penalties, bias) and speculative:
 * the tokens of plain decoding with the same seed, drafts forced right, some
 * forced wrong, or the MTP module's own */
static void speculative_sampled(const char *name, const ds_sample_params *sp, int every) {
    fixture f;
    if (fix_load(&f, name)) return;
    const int64_t T = f.T, NG = 20, V = f.V;
    ds_gen_opts o = {.max_tokens = NG, .sp = *sp};
    int32_t plain[64], spec[64], forced[64];
    int64_t np = 0, ns = 0;
    ds_gen_stats st;
    CHECK(ds_generate(&f.m, &ds_ops_cpu, f.gids, T, &o, plain, &np, NULL, NULL, &st) == 0);
    for (int64_t i = 0; i < NG; i++) forced[i] = (every && i % every == every - 1) ? (plain[i] + 1) % (int32_t)V : plain[i];
    ds_engine e;
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, 1, T + NG, 6, 1) == 0);
    if (every >= 0) e.forced_drafts = forced, e.n_forced = NG;
    o.speculative = 1;
    CHECK(ds_generate_speculative(&e, f.gids, T, &o, spec, &ns, NULL, NULL, &st) == 0);
    int first = -1;
    for (int64_t i = 0; i < NG && first < 0; i++)
        if (i >= ns || spec[i] != plain[i]) first = (int)i;
    CHECK_MSG(ns == np && first < 0, "%s (T %.2g, every %d): first difference at %d", name, sp->temperature, every, first);
    CHECK(every < 0 || (st.accepted > 0 && (every == 0 ? st.accepted == st.drafted : st.accepted < st.drafted)));
    ds_engine_free(&e);
    fix_free(&f);
}

TEST(speculative_sampling_equals_plain) {
    static const ds_logit_bias bias[2] = {{7, 1.5f}, {30, -2.0f}};
    const ds_sample_params sp[3] = {
        {.temperature = 1.2, .top_k = 40, .top_p = 0.9, .seed = 3},
        {.temperature = 0.8, .top_p = 1, .min_p = 0.05, .repetition_penalty = 1.3, .presence_penalty = 0.4,
         .frequency_penalty = 0.2, .bias = bias, .nbias = 2, .seed = 11},
        {.temperature = 0, .top_p = 1, .repetition_penalty = 1.5},
    };
    for (int k = 0; k < 3; k++) {
        speculative_sampled("v3", &sp[k], 0);
        speculative_sampled("v3", &sp[k], 3);
        speculative_sampled("v3", &sp[k], -1); /* the MTP module's drafts */
    }
    speculative_sampled("norope", &sp[0], 2);
}

TEST(speculative_forced_drafts_all_right) { speculative_forced("v3", 0); }
TEST(speculative_forced_drafts_some_wrong) {
    speculative_forced("v3", 3);
    speculative_forced("norope", 2);
}

/* ---- n-gram speculative decoding (prompt lookup) ------------------------------------ */

static void draft_is(const int32_t *h, int64_t nh, int nmin, int nmax, int64_t kmax, const int32_t *want, int64_t nwant) {
    int32_t d[16];
    const int64_t k = ds_ngram_draft(h, nh, nmin, nmax, kmax, d);
    int same = k == nwant;
    for (int64_t i = 0; same && i < k; i++) same = d[i] == want[i];
    CHECK_MSG(same, "n-gram draft over %lld tokens (n %d..%d, at most %lld): %lld tokens, want %lld", (long long)nh, nmin,
              nmax, (long long)kmax, (long long)k, (long long)nwant);
}

/* hand-made histories, the drafts worked out by hand */
TEST(ngram_draft_lookup) {
    const int32_t a[] = {1, 2, 3, 9, 1, 2, 3}, wa[] = {9, 1, 2, 3};
    draft_is(a, 7, 1, 3, 5, wa, 4);
    draft_is(a, 7, 1, 3, 2, wa, 2); /* at most kmax */
    const int32_t b[] = {5, 6, 7, 5, 6, 8, 5, 6}, wb[] = {8, 5, 6}; /* the latest earlier copy of (5 6) */
    draft_is(b, 8, 1, 2, 5, wb, 3);
    const int32_t c[] = {1, 2, 3, 4, 9, 3, 4, 2, 3, 4}, wc3[] = {9, 3}, wc2[] = {2, 3, 4};
    draft_is(c, 10, 1, 3, 2, wc3, 2); /* (2 3 4) recurs: the longest suffix wins over the later (3 4) */
    draft_is(c, 10, 1, 2, 5, wc2, 3);
    const int32_t d[] = {7, 1, 2, 8, 2}, wd[] = {8, 2};
    draft_is(d, 5, 1, 3, 4, wd, 2); /* only the last token recurs */
    draft_is(d, 5, 2, 3, 4, NULL, 0);
    const int32_t e[] = {4, 4, 4, 4}, we[] = {4};
    draft_is(e, 4, 1, 3, 5, we, 1); /* the copy may overlap the suffix */
    const int32_t f[] = {1, 2, 3, 4}, g[] = {1, 2, 1, 2};
    draft_is(f, 4, 1, 3, 5, NULL, 0);
    draft_is(f, 1, 1, 3, 5, NULL, 0);
    draft_is(g, 4, 1, 3, 0, NULL, 0);
    draft_is(g, 4, 1, 3, 5, g, 2);
}

/* n-gram speculative decoding on engine e (chunk K+1 at least): the tokens
 * of plain decoding (greedy or sampled with the same seed) with the lookup's
 * own drafts (every < 0) or drafts forced right (0) or every every-th wrong;
 * afterwards the cache equals a one-shot pass over the sequence.  The drafts
 * proposed (natural lookups) go to *drafted. */
static void ngram_vs_plain(const char *name, const ds_sample_params *sp, int every, int K, int64_t *drafted) {
    fixture f;
    if (fix_load(&f, name)) return;
    const int64_t T = f.T, NG = 20, V = f.V, L = f.m.cfg.num_hidden_layers;
    ds_gen_opts o = {.max_tokens = NG, .sp = *sp};
    int32_t plain[64], spec[64], forced[64], seq[128];
    int64_t np = 0, ns = 0;
    ds_gen_stats st;
    CHECK(ds_generate(&f.m, &ds_ops_cpu, f.gids, T, &o, plain, &np, NULL, NULL, &st) == 0);
    for (int64_t i = 0; i < NG; i++) forced[i] = (every && i % every == every - 1) ? (plain[i] + 1) % (int32_t)V : plain[i];
    ds_engine e;
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, 1, T + NG, K + 1, 0) == 0);
    if (every >= 0) e.forced_drafts = forced, e.n_forced = NG;
    o.speculative = DS_SPEC_NGRAM, o.draft_max = K, o.ngram_min = 1;
    CHECK(ds_generate_ngram(&e, f.gids, T, 0, &o, spec, &ns, NULL, NULL, &st) == 0);
    int first = -1;
    for (int64_t i = 0; i < NG && first < 0; i++)
        if (i >= ns || spec[i] != plain[i]) first = (int)i;
    CHECK_MSG(ns == np && first < 0, "%s (T %.2g, K %d, every %d): first difference at %d", name, sp->temperature, K,
              every, first);
    CHECK(st.accepted <= st.drafted);
    if (every == 0) /* every draft kept: each step gives K+1 tokens (fewer at the end) */
        CHECK_MSG(st.accepted == st.drafted && st.steps == (NG - 1 + K) / (K + 1), "%s K %d: %lld steps, %lld/%lld kept",
                  name, K, (long long)st.steps, (long long)st.accepted, (long long)st.drafted);
    if (every > 0) CHECK(st.accepted > 0 && st.accepted < st.drafted);
    if (every < 0) *drafted += st.drafted;
    /* the cache after accepts and rewinds: a one-shot pass over prompt + output */
    memcpy(seq, f.gids, (size_t)T * sizeof(int32_t));
    memcpy(seq + T, spec, (size_t)ns * sizeof(int32_t));
    CHECK(e.pos == T + ns - 1);
    ds_engine r;
    CHECK(ds_engine_create(&r, &f.m, &ds_ops_cpu, 1, T + NG, T + NG, 0) == 0);
    CHECK(ds_engine_step(&r, seq, e.pos, 0) == 0);
    double worst = 0;
    for (int64_t l = 0; l < L; l++) {
        double a = ds_test_max_rel(e.kc.ckv[l], r.kc.ckv[l], (size_t)(e.pos * e.kc.rkv), 1e-30);
        double b = ds_test_max_rel(e.kc.kpe[l], r.kc.kpe[l], (size_t)(e.pos * e.kc.dr), 1e-30);
        worst = a > worst ? a : worst;
        worst = b > worst ? b : worst;
    }
    CHECK_MSG(worst < TOL, "%s K %d every %d: cache vs one-shot rel err %.3g", name, K, every, worst);
    fprintf(stderr, "  %s T %.2g K %d every %2d: %lld drafts, %lld kept, %lld steps for %lld tokens\n", name,
            sp->temperature, K, every, (long long)st.drafted, (long long)st.accepted, (long long)st.steps, (long long)ns);
    ds_engine_free(&r);
    ds_engine_free(&e);
    fix_free(&f);
}

TEST(ngram_speculative_equals_plain) {
    static const ds_logit_bias bias[2] = {{7, 1.5f}, {30, -2.0f}};
    const ds_sample_params sp[3] = {
        {.temperature = 0, .top_p = 1},
        {.temperature = 1.2, .top_k = 40, .top_p = 0.9, .seed = 3},
        {.temperature = 0.8, .top_p = 1, .min_p = 0.05, .repetition_penalty = 1.3, .presence_penalty = 0.4,
         .frequency_penalty = 0.2, .bias = bias, .nbias = 2, .seed = 11},
    };
    int64_t drafted = 0;
    for (int k = 0; k < 3; k++)
        for (int K = 1; K <= DS_NGRAM_DRAFT_CAP; K += 7) { /* 1, 8, 15 */
            ngram_vs_plain("v3", &sp[k], -1, K, &drafted);
            ngram_vs_plain("v3", &sp[k], 0, K, &drafted);
            ngram_vs_plain("v3", &sp[k], 3, K, &drafted);
        }
    ngram_vs_plain("norope", &sp[0], -1, 4, &drafted);
    ngram_vs_plain("norope", &sp[1], 2, 4, &drafted);
    CHECK_MSG(drafted > 0, "the lookups never drafted a token");
    /* through ds_generate with the defaults, and with a prompt shorter than a verify step */
    fixture f;
    if (fix_load(&f, "v3")) return;
    for (int pi = 0; pi < 2; pi++) {
        const int64_t P = pi ? f.T : 3;
        ds_gen_opts o = {.max_tokens = 16, .sp = {.temperature = 0, .top_p = 1}};
        int32_t plain[32], spec[32];
        int64_t np = 0, ns = 0;
        ds_gen_stats st;
        CHECK(ds_generate(&f.m, &ds_ops_cpu, f.gids, P, &o, plain, &np, NULL, NULL, &st) == 0);
        o.speculative = DS_SPEC_NGRAM;
        CHECK(ds_generate(&f.m, &ds_ops_cpu, f.gids, P, &o, spec, &ns, NULL, NULL, &st) == 0);
        CHECK(ns == np && memcmp(spec, plain, (size_t)np * sizeof(int32_t)) == 0);
        o.draft_max = DS_NGRAM_DRAFT_CAP + 1; /* refused */
        CHECK(ds_generate(&f.m, &ds_ops_cpu, f.gids, P, &o, spec, &ns, NULL, NULL, &st) == -1);
        CHECK(strstr(ds_errmsg(), "ngram") != NULL);
        o.draft_max = 0, o.ngram_min = 3, o.ngram_max = 2;
        CHECK(ds_generate(&f.m, &ds_ops_cpu, f.gids, P, &o, spec, &ns, NULL, NULL, &st) == -1);
    }
    fix_free(&f);
}

/* the decode GEMV against the scalar matmul reference (backend/cpu/matmul.c) */
#include "backend/cpu/gemv.h"
TEST(gemv_matches_reference) {
    ds_rng r;
    ds_rng_seed(&r, 5);
    const int64_t shapes[][3] = {{1, 512, 1536}, {2, 37, 5}, {3, 129, 64}, {4, 8, 33}, {1, 1, 1}, {2, 2048, 96}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = ds_malloc((size_t)(N * C) * sizeof(float)), *w = ds_malloc((size_t)(OC * C) * sizeof(float));
        float *b = ds_malloc((size_t)OC * sizeof(float)), *o1 = ds_malloc((size_t)(N * OC) * sizeof(float));
        float *o2 = ds_malloc((size_t)(N * OC) * sizeof(float));
        for (int64_t i = 0; i < N * C; i++) x[i] = ds_rng_normal(&r);
        for (int64_t i = 0; i < OC * C; i++) w[i] = ds_rng_normal(&r);
        for (int64_t i = 0; i < OC; i++) b[i] = ds_rng_normal(&r);
        for (int bias = 0; bias < 2; bias++) {
            ds_gemv_forward(o1, x, w, bias ? b : NULL, N, C, OC);
            ds_matmul_forward_ref(o2, x, w, bias ? b : NULL, N, C, OC);
            /* FP32 sums of C products in another order: error ~ sqrt(C)·eps relative to the row scale */
            double e = ds_test_max_rel(o1, o2, (size_t)(N * OC), 1e-30);
            CHECK_MSG(e < 1e-5, "N=%lld C=%lld OC=%lld bias=%d: rel err %.3g", (long long)N, (long long)C,
                      (long long)OC, bias, e);
        }
        free(x), free(w), free(b), free(o1), free(o2);
    }
}

/* ds_model_forward_ex's checks: a cache needs the inference activations, the
 * positions must fit the cache, n the activations, ids the vocabulary; one
 * line each, nothing cached moves */
TEST(forward_ex_checks_cache_positions_ids) {
    fixture f;
    if (fix_load(&f, "v3")) return;
    ds_engine e;
    CHECK(ds_engine_create(&e, &f.m, &ds_ops_cpu, 1, 8, 4, 0) == 0);
    ds_acts a;
    CHECK(ds_acts_create(&a, &f.m, 1, 4, 0) == 0);
    int32_t ids[5] = {1, 2, 3, 4, 5};
    ds_fwd_opts o = {.kv = &e.kc, .pos = 0, .n = 4};
    CHECK(ds_model_forward_ex(&f.m, &a, &ds_ops_cpu, ids, &o) == -1 && strstr(ds_errmsg(), "inference activations"));
    o.pos = 6;
    CHECK(ds_model_forward_ex(&f.m, &e.a, &ds_ops_cpu, ids, &o) == -1 && strstr(ds_errmsg(), "positions 6..9"));
    o.pos = 0, o.n = 5;
    CHECK(ds_model_forward_ex(&f.m, &e.a, &ds_ops_cpu, ids, &o) == -1 && strstr(ds_errmsg(), "5 tokens per sequence"));
    o.n = 2, o.pos = 3;
    ids[1] = (int32_t)f.V;
    CHECK(ds_model_forward_ex(&f.m, &e.a, &ds_ops_cpu, ids, &o) == -1 &&
          strstr(ds_errmsg(), "at sequence 0, position 4 is outside the vocabulary"));
    ids[1] = 2;
    CHECK(ds_model_forward_ex(&f.m, &e.a, &ds_ops_cpu, ids, &o) == 0);
    CHECK(e.pos == 0); /* the engine's count is the engine's business */
    ds_acts_free(&a);
    ds_engine_free(&e);
    fix_free(&f);
}

/* Continuous batching through the model's forward (ds_fwd_opts.B, pos_b,
 * rows): two of the fixture's sequences, two tokens per call, at positions
 * two apart in swapped rows of a 3-row cache (one step with one sequence
 * only), give every position's logits of the full forward and, for the
 * generated positions, transformers' greedy logits; cpu and ref tables.
 * Then the host checks: pos_b/rows without a cache, a row outside the cache,
 * two sequences on one row, a sequence's positions past the cache, too many
 * sequences. */
static void rows_positions(const struct ds_ops *ops) {
    fixture f;
    if (fix_load(&f, "v3")) return;
    const int64_t TT = f.T + f.N, V = f.V, s1 = f.B > 1 ? 1 : 0;
    ds_acts full, a;
    CHECK(ds_acts_create(&full, &f.m, f.B, TT, 0) == 0);
    CHECK(ds_model_forward(&f.m, &full, ops, f.gids) == 0);
    ds_kv_cache kc;
    CHECK(ds_kv_cache_create(&kc, f.m.cfg.num_hidden_layers, 3, TT, f.m.cfg.kv_lora_rank, f.m.cfg.qk_rope_head_dim) == 0);
    CHECK(ds_acts_create_infer(&a, &f.m, 2, 2, TT, 0) == 0);
    const int64_t seq[2] = {0, s1}, rows[2] = {2, 0};
    int64_t pos[2] = {0, 0};
    double worst = 0, worst_hf = 0;
    /* sequence 1 alone first (rows + 1: its row), then both, then sequence 0 alone */
    while (pos[0] < TT) {
        int64_t first = pos[1] < 2 ? 1 : 0, last = pos[1] + 2 <= TT ? 1 : 0, nb = last - first + 1;
        int32_t ids[4];
        int64_t pb[2], rb[2];
        for (int64_t k = 0; k < nb; k++) {
            const int64_t q = first + k, n = TT - pos[q] < 2 ? TT - pos[q] : 2;
            CHECK(n == 2 || TT % 2);
            for (int64_t i = 0; i < 2; i++) ids[k * 2 + i] = f.gids[seq[q] * TT + (pos[q] + i < TT ? pos[q] + i : 0)];
            pb[k] = pos[q], rb[k] = rows[q];
        }
        if (pos[0] + 2 > TT) break; /* an odd tail: not for this step size */
        const ds_fwd_opts o = {.kv = &kc, .n = 2, .B = nb, .pos_b = pb, .rows = rb};
        CHECK_MSG(ds_model_forward_ex(&f.m, &a, ops, ids, &o) == 0, "%s", ds_errmsg());
        TEST_RETURN_IF_FAILED();
        for (int64_t k = 0; k < nb; k++) {
            const int64_t q = first + k;
            for (int64_t i = 0; i < 2; i++) {
                const int64_t t = pos[q] + i;
                const float *got = a.logits + (k * 2 + i) * V;
                double e = ds_test_max_rel(got, full.logits + (seq[q] * TT + t) * V, (size_t)V, 1e-30);
                worst = e > worst ? e : worst;
                if (t >= f.T - 1 && t < TT - 1) {
                    e = ds_test_max_rel(got, f.glog + (seq[q] * f.N + t - (f.T - 1)) * V, (size_t)V, 1e-30);
                    worst_hf = e > worst_hf ? e : worst_hf;
                }
            }
            pos[q] += 2;
        }
        if (pos[1] >= TT) pos[1] = TT; /* done: only sequence 0 steps from here */
    }
    fprintf(stderr, "  %s: per-sequence positions vs full forward %.3g, vs transformers %.3g\n", ops->name, worst, worst_hf);
    CHECK_MSG(worst < TOL && worst_hf < 1e-4, "%s: rel err %.3g (full forward), %.3g (transformers)", ops->name, worst,
              worst_hf);
    if (ops == &ds_ops_cpu) {
        int32_t ids[4] = {1, 2, 3, 4};
        int64_t pb[2] = {0, 0}, rb[2] = {0, 1};
        ds_fwd_opts o = {.n = 1, .B = 2, .pos_b = pb, .rows = rb};
        CHECK(ds_model_forward_ex(&f.m, &full, ops, ids, &o) == -1 && strstr(ds_errmsg(), "need a latent cache"));
        o.kv = &kc;
        rb[1] = 3;
        CHECK(ds_model_forward_ex(&f.m, &a, ops, ids, &o) == -1 &&
              strstr(ds_errmsg(), "cache row 3 of sequence 1 is outside [0, 3)"));
        rb[1] = 0;
        CHECK(ds_model_forward_ex(&f.m, &a, ops, ids, &o) == -1 && strstr(ds_errmsg(), "sequences 0 and 1 share cache row 0"));
        rb[1] = 1, pb[1] = TT;
        CHECK(ds_model_forward_ex(&f.m, &a, ops, ids, &o) == -1 && strstr(ds_errmsg(), "of sequence 1 are beyond the cache"));
        pb[1] = 0, o.B = 3;
        CHECK(ds_model_forward_ex(&f.m, &a, ops, ids, &o) == -1 && strstr(ds_errmsg(), "3 sequences, the activations take 1..2"));
    }
    ds_acts_free(&a);
    ds_acts_free(&full);
    ds_kv_cache_free(&kc);
    fix_free(&f);
}
TEST(forward_ex_per_sequence_positions_rows) { rows_positions(&ds_ops_cpu); }
TEST(forward_ex_per_sequence_positions_rows_reference_ops) { rows_positions(&ds_ops_ref); }
