/*
 * test_fp8_capture.c — `dsv3 fp8 analyze --data`: the activation/gradient
 * capture (train/fp8_capture.h) sees the right tensors and reports their FP8
 * error correctly.
 *   - For every weight, Σ over its captured (dY, X) call pairs of dYᵀ·X (in
 *     double, here) equals the weight gradient of a plain, uncaptured
 *     ds_model_backward (torch-parity-tested in test_backward_parity.c):
 *     an independent check of both capture sites.  The captured input of
 *     layer 0 q_a / kv_a is the ln1 of a plain forward, that of lm_head
 *     the final norm output, bit for bit.
 *   - The statistics in the JSON equal ds_quant_error (torch-tested in
 *     test_fp8_quant.c) recomputed here from ln1 and the head's dlogits of a
 *     plain forward/backward on the same tokens, read from the shard here.
 *   - CLI on TinyShakespeare shards: a record per linear and site, finite
 *     statistics; bad input gives one-line errors and no JSON.
 */
#include "test.h"

#include "base/base.h"
#include "io/fp8_analyze.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "io/shard.h"
#include "model/backward.h"
#include "model/model.h"
#include "model/presets.h"
#include "train/fp8_capture.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- in-process capture: copies of every tensor ------------------------------ */

typedef struct {
    int64_t rows, cols;
    float *x;
} call_copy;

typedef struct {
    int64_t nparams;
    call_copy *calls[2];   /* (nparams, MAXC) */
    int ncalls[2][4096];
} copies;
#define MAXC 4

static void keep(void *ctx, int64_t param, int site, const float *x, int64_t rows, int64_t cols) {
    copies *c = ctx;
    if (param >= c->nparams) return;
    int k = c->ncalls[site][param]; /* never concurrent for one param */
    if (k >= MAXC) return;
    call_copy *cc = &c->calls[site][param * MAXC + k];
    cc->rows = rows, cc->cols = cols;
    cc->x = malloc(sizeof(float) * (size_t)(rows * cols));
    memcpy(cc->x, x, sizeof(float) * (size_t)(rows * cols));
    c->ncalls[site][param] = k + 1;
}

/* A linear weight the model calls through linear_* / matmul_* (not the input embedding). */
static int is_linear(const ds_model *m, int64_t i) {
    const ds_param *p = &m->layout.p[i];
    return p->ndim == 2 && !(p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) && m->params + p->offset != m->embed;
}

TEST(fp8_capture_sites_give_weight_gradients) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    c.vocab_size = 512;
    ds_model m;
    CHECK(ds_model_create(&m, &c) == 0);
    ds_model_init_random(&m, 7);
    CHECK(m.layout.n <= 4096);
    /* N·K = 512 >= 64·E: the experts run in the parallel loop in forward and backward */
    const int64_t B = 4, T = 64, N = B * T;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
    ds_rng r;
    ds_rng_seed(&r, 3);
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)ds_rng_below(&r, 512);
    ds_loss_opts lo = ds_loss_opts_default();
    lo.mtp_lambda = 0.3;
    /* plain forward/backward */
    ds_acts a0, a1;
    ds_grads g0, g1;
    ds_bwd w;
    ds_loss_terms t0, t1;
    CHECK(ds_acts_create(&a0, &m, B, T, 1) == 0 && ds_acts_create(&a1, &m, B, T, 1) == 0);
    ds_grads_create(&g0, &m);
    ds_grads_create(&g1, &m);
    CHECK(ds_bwd_create(&w, &m, B, T) == 0);
    CHECK(ds_model_forward(&m, &a0, &ds_ops_cpu, ids) == 0);
    CHECK(ds_model_backward(&m, &a0, &ds_ops_cpu, &g0, &w, NULL, &lo, &t0) == 0);
    /* captured */
    static copies cp;
    memset(&cp, 0, sizeof cp);
    cp.nparams = m.layout.n;
    for (int k = 0; k < 2; k++) cp.calls[k] = calloc((size_t)(m.layout.n * MAXC), sizeof(call_copy));
    struct ds_ops ops, ops2;
    CHECK(ds_capture_begin(&ops, &ds_ops_cpu, &m, keep, &cp) == 0);
    CHECK(ds_capture_begin(&ops2, &ds_ops_cpu, &m, keep, &cp) == -1); /* one at a time */
    CHECK(ds_model_forward(&m, &a1, &ops, ids) == 0);
    CHECK(ds_model_backward(&m, &a1, &ops, &g1, &w, NULL, &lo, &t1) == 0);
    ds_capture_end();
    CHECK(t0.loss == t1.loss);
    CHECK(ds_test_max_rel(g1.g, g0.g, (size_t)g0.n, 1e-30) == 0); /* the wrappers change nothing */

    /* Σ dYᵀ·X per weight = its gradient; every linear with tokens is seen at both sites */
    int64_t nlin = 0, nseen = 0, nexpert_seen = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int64_t i = 0; i < m.layout.n; i++) {
        if (!is_linear(&m, i)) {
            CHECK_MSG(!cp.ncalls[0][i] && !cp.ncalls[1][i], "%s captured", m.layout.p[i].name);
            continue;
        }
        nlin++;
        const ds_param *p = &m.layout.p[i];
        const int64_t OC = p->shape[0], C = p->shape[1];
        const float *gw = g0.g + p->offset;
        int nin = cp.ncalls[0][i], nout = cp.ncalls[1][i];
        CHECK_MSG(nin == nout, "%s: %d inputs, %d output gradients", p->name, nin, nout);
        if (nin == 0) { /* a routed expert that got no token: its gradient is zero */
            CHECK_MSG(p->flags & DS_PARAM_EXPERT, "%s: never called", p->name);
            for (int64_t j = 0; j < OC * C; j++) CHECK(gw[j] == 0);
            continue;
        }
        nseen++;
        if (p->flags & DS_PARAM_EXPERT) nexpert_seen++;
        if (nin != nout) continue;
        double *acc = calloc((size_t)(OC * C), sizeof(double));
        for (int k = 0; k < nin; k++) { /* the backward runs the calls in reverse order */
            const call_copy *x = &cp.calls[0][i * MAXC + k], *dy = &cp.calls[1][i * MAXC + nin - 1 - k];
            CHECK_MSG(x->rows == dy->rows && x->cols == C && dy->cols == OC, "%s call %d: X (%lld, %lld), dY (%lld, %lld)",
                      p->name, k, (long long)x->rows, (long long)x->cols, (long long)dy->rows, (long long)dy->cols);
            if (x->rows != dy->rows || x->cols != C || dy->cols != OC) continue;
            for (int64_t n = 0; n < x->rows; n++)
                for (int64_t o = 0; o < OC; o++) {
                    double d = dy->x[n * OC + o];
                    if (d == 0) continue;
                    for (int64_t cc = 0; cc < C; cc++) acc[o * C + cc] += d * x->x[n * C + cc];
                }
        }
        double mx = 0, err = 0;
        for (int64_t j = 0; j < OC * C; j++) {
            if (fabs(acc[j]) > mx) mx = fabs(acc[j]);
            if (fabs(acc[j] - gw[j]) > err) err = fabs(acc[j] - gw[j]);
        }
        double rel = err / (mx > 0 ? mx : 1);
        if (rel > worst) worst = rel, worst_name = p->name;
        CHECK_MSG(mx > 0, "%s: zero gradient", p->name);
        free(acc);
    }
    CHECK_MSG(worst < 1e-5, "worst max rel error %.3g at %s", worst, worst_name);
    printf("  %lld linear weights, %lld called (%lld routed experts); worst Σ dYᵀX vs grad rel error %.2g (%s)\n",
           (long long)nlin, (long long)nseen, (long long)nexpert_seen, worst, worst_name);
    CHECK(nexpert_seen >= 2 * 3 * 4); /* most of the 2 x 8 experts of the MoE layers (+ MTP) got tokens */
    /* lm_head: the main head and the MTP head (shared weights) */
    int64_t ih = ds_layout_find(&m.layout, "lm_head.weight");
    CHECK(ih >= 0 && cp.ncalls[0][ih] == 2 && cp.ncalls[1][ih] == 2);
    if (ih >= 0 && cp.ncalls[0][ih] == 2) {
        CHECK(cp.calls[0][ih * MAXC].rows == N && cp.calls[0][ih * MAXC + 1].rows == B * (T - 1));
        CHECK(!memcmp(cp.calls[0][ih * MAXC].x, a0.hfinal, sizeof(float) * (size_t)(N * c.hidden_size)));
    }
    /* layer 0 q_a and kv_a see ln1 of the plain forward */
    const char *l0[] = {"model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"};
    for (int k = 0; k < 2; k++) {
        int64_t i = ds_layout_find(&m.layout, l0[k]);
        CHECK(i >= 0 && cp.ncalls[0][i] == 1);
        if (i < 0 || cp.ncalls[0][i] != 1) continue;
        const call_copy *x = &cp.calls[0][i * MAXC];
        CHECK(x->rows == N && x->cols == c.hidden_size);
        CHECK(!memcmp(x->x, a0.blk[0].ln1, sizeof(float) * (size_t)(N * c.hidden_size)));
    }
    for (int k = 0; k < 2; k++) {
        for (int64_t i = 0; i < m.layout.n * MAXC; i++) free(cp.calls[k][i].x);
        free(cp.calls[k]);
    }
    ds_bwd_free(&w);
    ds_grads_free(&g0);
    ds_grads_free(&g1);
    ds_acts_free(&a0);
    ds_acts_free(&a1);
    ds_model_free(&m);
    free(ids);
}

TEST(fp8_capture_record_names) {
    ds_param p;
    memset(&p, 0, sizeof p);
    char b[160];
    snprintf(p.name, sizeof p.name, "model.layers.3.mlp.experts.17.gate_proj.weight");
    p.flags = DS_PARAM_EXPERT;
    ds_capture_record_name(b, sizeof b, &p, 0);
    CHECK_MSG(!strcmp(b, "model.layers.3.mlp.experts.*.gate_proj"), "%s", b);
    snprintf(p.name, sizeof p.name, "model.layers.3.self_attn.kv_b_proj.weight");
    p.flags = 0;
    ds_capture_record_name(b, sizeof b, &p, 0);
    CHECK_MSG(!strcmp(b, "model.layers.3.self_attn.kv_b_proj"), "%s", b);
    snprintf(p.name, sizeof p.name, "model.embed_tokens.weight");
    ds_capture_record_name(b, sizeof b, &p, 1);
    CHECK(!strcmp(b, "lm_head"));
}

/* ---- CLI on real data ------------------------------------------------------------ */

/* Tokenizer + shards of TinyShakespeare and a tiny model in dir; 0 on success. */
static int prepare(const char *dir, const char *ts) {
    char out[4096];
    int rc = ds_test_sh(out, sizeof out,
                        "$DSV3 tokenizer train --input %s --vocab-size 400 --special-tokens '<|bos|>' '<|eos|>' "
                        "--out %s/tok.json && $DSV3 data prepare --tokenizer %s/tok.json --input %s --out %s/data "
                        "--docs line --val-fraction 0.05 && $DSV3 init --config tiny --out %s/m --seed 5",
                        ts, dir, dir, ts, dir, dir);
    if (rc) fprintf(stderr, "  prepare: %s\n", out);
    return rc;
}

static cJSON *load_json(const char *path) {
    size_t n;
    char *t = ds_read_file(path, &n);
    cJSON *j = t ? ds_json_parse(t, n, path) : NULL;
    free(t);
    return j;
}

static const cJSON *record(const cJSON *j, const char *arr, const char *name) {
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, arr)) {
        const cJSON *n = cJSON_GetObjectItem(r, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name)) return r;
    }
    return NULL;
}

static const char *const fmtn[2] = {"e4m3", "e5m2"};

/* Every number of an error block is finite. */
static int block_finite(const cJSON *err) {
    for (int f = 0; f < 2; f++)
        for (int g = 0; g < DS_CAPTURE_NSCALE; g++) {
            const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(err, fmtn[f]), ds_quant_gran_name(ds_capture_grans[g]));
            const char *keys[] = {"mae", "rel_rms", "max_err", "frac_clamped", "frac_flushed", "frac_subnormal"};
            for (int k = 0; k < 6; k++) {
                const cJSON *v = cJSON_GetObjectItem(e, keys[k]);
                if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return 0;
            }
        }
    return 1;
}

TEST(fp8_capture_cli_records_every_linear) {
    const char *ts = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!ts) SKIP("../shared/data/tinyshakespeare/input.txt not found");
    const char *d = ds_test_tmpdir();
    if (prepare(d, ts)) {
        CHECK(0);
        return;
    }
    char out[8192], js[1100];
    snprintf(js, sizeof js, "%s/a.json", d);
    int rc = ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/data --batch 2 --seq 64 --top 3 --json %s",
                        d, d, js);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK_MSG(strstr(out, "activations X") && strstr(out, "gradients dY"), "%s", out);
    cJSON *j = load_json(js);
    CHECK(j != NULL);
    if (!j) return;
    const cJSON *capj = cJSON_GetObjectItem(j, "capture");
    CHECK(capj && cJSON_GetObjectItem(capj, "batch")->valuedouble == 2 && cJSON_GetObjectItem(capj, "seq")->valuedouble == 64);
    CHECK(capj && isfinite(cJSON_GetObjectItem(capj, "loss")->valuedouble));
    /* one record per linear and site */
    char mdir[1100];
    snprintf(mdir, sizeof mdir, "%s/m", d);
    ds_model m;
    CHECK(ds_model_load(&m, mdir) == 0);
    int64_t nrec = 0;
    for (int64_t i = 0; i < m.layout.n; i++) {
        if (!is_linear(&m, i)) continue;
        char base[160], name[200];
        ds_capture_record_name(base, sizeof base, &m.layout.p[i], 0);
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "%s%s", base, k ? ":grad_output" : ":input");
            const cJSON *r = record(j, k ? "gradients" : "activations", name);
            CHECK_MSG(r != NULL, "no record %s", name);
            if (!r) continue;
            CHECK_MSG(block_finite(cJSON_GetObjectItem(r, "error")), "%s: non-finite statistics", name);
            CHECK(cJSON_GetObjectItem(r, "calls")->valuedouble >= 1);
            CHECK(isfinite(cJSON_GetObjectItem(r, "amax")->valuedouble) && cJSON_GetObjectItem(r, "amax")->valuedouble > 0);
            const cJSON *sh = cJSON_GetObjectItem(r, "shape");
            CHECK(cJSON_GetArrayItem(sh, 1)->valuedouble == (double)m.layout.p[i].shape[k ? 0 : 1]);
            nrec++;
        }
    }
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "activations")) + cJSON_GetArraySize(cJSON_GetObjectItem(j, "gradients")) >=
          (int)(nrec / 8)); /* experts share records */
    /* routed experts: one record per layer and projection, all 8 experts */
    const cJSON *ex = record(j, "activations", "model.layers.1.mlp.experts.*.down_proj:input");
    CHECK(ex && cJSON_GetObjectItem(ex, "weights")->valuedouble >= 6);
    const cJSON *hd = record(j, "gradients", "lm_head:grad_output");
    CHECK(hd && cJSON_GetObjectItem(hd, "calls")->valuedouble == 2); /* main head and MTP */
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "gradient_summary"), "expert") != NULL);
    ds_model_free(&m);
    cJSON_Delete(j);
}

/* The first B windows of T+1 tokens of the train shard, in file order (the
 * loader's order without shuffling): ids (B, T) and targets (B, T). */
static int first_batch(const char *data, int64_t B, int64_t T, int32_t *ids, int32_t *tgt) {
    char p[1100];
    snprintf(p, sizeof p, "%s/train_000.bin", data);
    ds_shard s;
    if (ds_shard_open(&s, p, 0)) return -1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            ids[b * T + t] = ds_shard_token(&s, (uint64_t)(b * T + t));
            tgt[b * T + t] = ds_shard_token(&s, (uint64_t)(b * T + t + 1));
        }
    ds_shard_close(&s);
    return 0;
}

/* The JSON statistics of record name equal ds_quant_error of x (rows, cols). */
static void check_stats(const cJSON *j, const char *arr, const char *name, const float *x, int64_t rows, int64_t cols) {
    const cJSON *r = record(j, arr, name);
    CHECK_MSG(r != NULL, "no record %s", name);
    if (!r) return;
    CHECK(cJSON_GetObjectItem(r, "calls")->valuedouble == 1);
    CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "shape"), 0)->valuedouble == (double)rows);
    double amax = 0, sx = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
        sx += (double)x[i] * x[i];
    }
    CHECK(cJSON_GetObjectItem(r, "amax")->valuedouble == amax);
    CHECK_NEAR(cJSON_GetObjectItem(r, "rms")->valuedouble, sqrt(sx / (double)(rows * cols)), 1e-9 * sqrt(sx / (double)(rows * cols)));
    const cJSON *err = cJSON_GetObjectItem(r, "error");
    for (int f = 0; f < 2; f++)
        for (int g = 0; g < DS_CAPTURE_NSCALE; g++) {
            ds_quant_opts o = ds_quant_defaults(ds_capture_grans[g]);
            o.fmt = f ? DS_FP8_E5M2 : DS_FP8_E4M3;
            ds_quant_err q;
            CHECK(ds_quant_error(&q, x, rows, cols, &o) == 0);
            const cJSON *e = cJSON_GetObjectItem(cJSON_GetObjectItem(err, fmtn[f]), ds_quant_gran_name(ds_capture_grans[g]));
            const double want[6] = {q.mae, q.rel_rms, q.max_err, q.frac_clamped, q.frac_flushed, q.frac_subnormal};
            const char *keys[6] = {"mae", "rel_rms", "max_err", "frac_clamped", "frac_flushed", "frac_subnormal"};
            for (int k = 0; k < 6; k++) {
                const cJSON *v = cJSON_GetObjectItem(e, keys[k]);
                double got = v ? v->valuedouble : NAN;
                CHECK_MSG(fabs(got - want[k]) <= 1e-12 * fabs(want[k]) + 1e-300, "%s %s %s %s: %.17g vs %.17g", name,
                          fmtn[f], ds_quant_gran_name(ds_capture_grans[g]), keys[k], got, want[k]);
            }
        }
}

TEST(fp8_capture_json_stats_equal_quant_error) {
    const char *ts = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!ts) SKIP("../shared/data/tinyshakespeare/input.txt not found");
    const char *d = ds_test_tmpdir();
    if (prepare(d, ts)) {
        CHECK(0);
        return;
    }
    const int64_t B = 3, T = 48, N = B * T;
    char out[8192], js[1100], data[1100], mdir[1100];
    snprintf(js, sizeof js, "%s/a.json", d);
    snprintf(data, sizeof data, "%s/data", d);
    snprintf(mdir, sizeof mdir, "%s/m", d);
    /* no MTP loss: the head has one call, its dY is the main dlogits */
    int rc = ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s --data %s --batch %lld --seq %lld --mtp-lambda 0 --json %s",
                        mdir, data, (long long)B, (long long)T, js);
    CHECK_MSG(rc == 0, "%s", out);
    cJSON *j = load_json(js);
    CHECK(j != NULL);
    if (!j) return;
    /* the same batch, forward/backward without capture */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N), *tgt = malloc(sizeof(int32_t) * (size_t)N);
    CHECK(first_batch(data, B, T, ids, tgt) == 0);
    ds_model m;
    CHECK(ds_model_load(&m, mdir) == 0);
    ds_acts a;
    ds_grads g;
    ds_bwd w;
    ds_loss_terms t;
    ds_loss_opts lo = ds_loss_opts_default();
    CHECK(ds_acts_create(&a, &m, B, T, 0) == 0);
    ds_grads_create(&g, &m);
    CHECK(ds_bwd_create(&w, &m, B, T) == 0);
    CHECK(ds_model_forward(&m, &a, &ds_ops_cpu, ids) == 0);
    CHECK(ds_model_backward(&m, &a, &ds_ops_cpu, &g, &w, tgt, &lo, &t) == 0);
    CHECK_NEAR(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "capture"), "loss")->valuedouble, t.loss, 1e-6 * t.loss);
    const int64_t H = m.cfg.hidden_size, V = m.cfg.vocab_size;
    check_stats(j, "activations", "model.layers.0.self_attn.q_a_proj:input", a.blk[0].ln1, N, H);
    check_stats(j, "activations", "model.layers.0.self_attn.kv_a_proj_with_mqa:input", a.blk[0].ln1, N, H);
    check_stats(j, "activations", "lm_head:input", a.hfinal, N, H);
    check_stats(j, "gradients", "lm_head:grad_output", w.dlogits, N, V);
    CHECK(record(j, "activations", "model.layers.3.eh_proj:input") == NULL); /* MTP off */
    ds_bwd_free(&w);
    ds_grads_free(&g);
    ds_acts_free(&a);
    ds_model_free(&m);
    free(ids);
    free(tgt);
    cJSON_Delete(j);
}

/* exactly one line of output, containing want */
static void check_one_line(const char *out, const char *want) {
    CHECK_MSG(strstr(out, want) != NULL, "expected '%s' in: %s", want, out);
    const char *nl = strchr(out, '\n');
    CHECK_MSG(!nl || !nl[1], "more than one line: %s", out);
}

TEST(fp8_capture_bad_input) {
    const char *d = ds_test_tmpdir();
    char out[8192], js[1100], p[1100];
    snprintf(js, sizeof js, "%s/x.json", d);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 init --config tiny --out %s/m --seed 1 >/dev/null", d) == 0);
    /* missing data folder */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/nodata --json %s", d, d, js) == 1);
    check_one_line(out, "nodata");
    CHECK(!ds_file_exists(js));
    /* shards whose token ids reach beyond the model's vocabulary (8192) */
    snprintf(p, sizeof p, "%s/big", d);
    ds_mkdir_p(p);
    snprintf(p, sizeof p, "%s/big/train_000.bin", d);
    ds_shard_writer sw;
    CHECK(ds_shard_writer_open(&sw, p, 9000, 0, 0) == 0);
    int32_t toks[600];
    for (int i = 0; i < 600; i++) toks[i] = i == 77 ? 8500 : i % 300;
    CHECK(ds_shard_writer_doc(&sw, toks, 600) == 0 && ds_shard_writer_commit(&sw) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/big --batch 2 --seq 64 --json %s", d, d, js) == 1);
    check_one_line(out, "token id 8500 (batch 0, sequence 1, position 14)");
    CHECK(!ds_file_exists(js));
    /* too little data for the batches asked for */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/big --batch 2 --seq 64 --batches 50", d, d) == 1);
    check_one_line(out, "50 requested");
    /* no val split */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/big --split val", d, d) == 1);
    check_one_line(out, "no val_*.bin shards");
    /* a model folder without its linear weights */
    CHECK(ds_test_sh(out, sizeof out, "mkdir -p %s/nolin && cp %s/m/config.json %s/nolin/", d, d, d) == 0);
    static float nw[128];
    for (int i = 0; i < 128; i++) nw[i] = 1;
    ds_st_entry e = {"model.norm.weight", DS_F32, 1, {128}, nw};
    snprintf(p, sizeof p, "%s/nolin/model.safetensors", d);
    CHECK(ds_st_write(p, &e, 1, NULL) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/nolin --data %s/big --json %s", d, d, js) == 1);
    check_one_line(out, "nolin");
    CHECK(!ds_file_exists(js));
    /* usage errors */
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/big --batches 0", d, d) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/big --split dev", d, d) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/big --mtp-lambda -1", d, d) == 2);
}

/* The capture on the device-resident path (docs/engine.md §2.5): under the
 * test device fakedev (memory the host cannot touch) the model, arenas and
 * gradients stay in the table's memory and each captured tensor is copied to
 * the host; the analysis equals --device cpu's byte for byte. */
TEST(fp8_capture_device_resident_fakedev) {
    const char *ts = ds_test_shared("data/tinyshakespeare/input.txt");
    if (!ts) SKIP("../shared/data/tinyshakespeare/input.txt not found");
    const char *d = ds_test_tmpdir();
    if (prepare(d, ts)) {
        CHECK(0);
        return;
    }
    char out[8192];
    const char *dev[2] = {"cpu", "fakedev"};
    for (int i = 0; i < 2; i++) {
        int rc = ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/data --batch 1 --seq 16 --top 3 "
                            "--json %s/r_%s.json --device %s > %s/r_%s.txt", d, d, d, dev[i], dev[i], d, dev[i]);
        CHECK_MSG(rc == 0, "--device %s: %s", dev[i], out);
    }
    CHECK_MSG(ds_test_sh(out, sizeof out, "cmp %s/r_cpu.json %s/r_fakedev.json && cmp %s/r_cpu.txt %s/r_fakedev.txt", d, d, d,
                         d) == 0, "the analysis differs between cpu and fakedev: %s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 fp8 analyze --model %s/m --data %s/data --device tpu", d, d) == 2);
}
