/*
 * test_backward_parity.c — whole-model gradient parity with PyTorch: the
 * fixtures tests/fixtures/model/<cfg>/grads*.safetensors hold the loss, its
 * terms and every parameter's gradient from loss.backward() in transformers
 * (tools/make_fixtures.py; definitions in tests/fixtures/model/README.md).
 * We run forward + ds_model_backward on the same batch and compare:
 *   - the loss and each term: relative error < 1e-5;
 *   - every gradient tensor: max|a-b| / max|ref| < GRAD_TOL (per tensor);
 *     every trained parameter must have a reference gradient and vice versa.
 * GRAD_TOL = 2e-5: both sides compute in FP32 and differ only in summation
 * order; the forward alone already differs by up to ~1.4e-6 at the logits
 * (test_model_parity.c), and the backward passes through ~3x as many
 * reductions, some of them (softmax rows, router normalisation) with
 * cancellation: measured worst tensor 3.3e-6 over all fixtures (printed per
 * configuration), so 2e-5 leaves a factor 6.  A wrong formula (a missing
 * term, wrong eps, transposed weight) gives errors of 1e-2 or more.
 * Also: 3 AdamW steps with clipping vs torch.optim.AdamW (adamw.safetensors),
 * and a finite-difference spot check of the MTP gradient.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/model.h"
#include "train/adamw.h"
#include "train/optim.h"
#include "test.h"
#include "fixture_ids.h"

#define FIXDIR "tests/fixtures/model/"
#define GRAD_TOL 2e-5
#define LOSS_TOL 1e-5
#define ADAMW_TOL 5e-2
#define ADAMW_REL 1e-4


static int have(const char *fix, const char *file) {
    char p[256];
    snprintf(p, sizeof p, FIXDIR "%s/%s", fix, file);
    return ds_file_exists(p);
}

static double scalar(const ds_st_file *f, const char *name) {
    const ds_st_tensor *t = ds_st_find(f, name);
    if (!t || t->numel != 1) return NAN;
    float v;
    ds_st_to_f32(t, &v);
    return v;
}

static void check_term(const ds_st_file *f, const char *fix, const char *name, double got) {
    double ref = scalar(f, name);
    double rel = fabs(got - ref) / fmax(fabs(ref), 1e-30);
    CHECK_MSG(rel < LOSS_TOL, "%s: %s = %.9g, reference %.9g (rel %.3g)", fix, name, got, ref, rel);
}

/* Compare every grad.<name> of the file with g; returns the worst error and
 * its tensor name in worst_name. */
static double compare_grads(const ds_st_file *f, const ds_model *m, const ds_grads *g, int mtp, const char *fix,
                            char *worst_name) {
    double worst = 0;
    int64_t seen = 0, expected = 0;
    for (int64_t i = 0; i < m->layout.n; i++) {
        const ds_param *p = &m->layout.p[i];
        if (p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) continue;
        if ((p->flags & DS_PARAM_MTP) && !mtp) continue;
        expected++;
        char nm[160];
        snprintf(nm, sizeof nm, "grad.%s", p->name);
        const ds_st_tensor *t = ds_st_find(f, nm);
        CHECK_MSG(t && t->numel == p->numel, "%s: %s missing or wrong size in the reference", fix, nm);
        if (!t || t->numel != p->numel) continue;
        seen++;
        float *r = ds_malloc((size_t)p->numel * sizeof(float));
        ds_st_to_f32(t, r);
        double e = ds_test_max_rel(g->g + p->offset, r, (size_t)p->numel, 1e-30);
        free(r);
        CHECK_MSG(e < GRAD_TOL, "%s: %s rel err %.3g", fix, nm, e);
        if (!(e <= worst)) {
            worst = e;
            snprintf(worst_name, 160, "%s", p->name);
        }
    }
    int64_t in_file = 0;
    for (int64_t i = 0; i < f->n; i++) in_file += strncmp(f->tensors[i].name, "grad.", 5) == 0;
    CHECK_MSG(in_file == expected, "%s: reference has %lld gradients, model %lld", fix, (long long)in_file,
              (long long)expected);
    CHECK(seen == expected);
    return worst;
}

typedef struct {
    ds_model m;
    ds_acts a;
    ds_grads g;
    ds_bwd w;
    int32_t *ids;
    int64_t B, T;
} rig;

static int rig_open(rig *r, const char *fix, int mtp) {
    char dir[256], path[300];
    snprintf(dir, sizeof dir, FIXDIR "%s", fix);
    if (ds_model_load(&r->m, dir)) {
        CHECK_MSG(0, "%s: load failed: %s", fix, ds_errmsg());
        return -1;
    }
    snprintf(path, sizeof path, "%s/ids.txt", dir);
    r->ids = read_ids(path, &r->B, &r->T);
    CHECK(r->ids && r->B == 2 && r->T == 24);
    CHECK(ds_acts_create(&r->a, &r->m, r->B, r->T, mtp) == 0);
    CHECK(ds_grads_create(&r->g, &r->m) == 0);
    CHECK(ds_bwd_create(&r->w, &r->m, r->B, r->T) == 0);
    return 0;
}

static void rig_close(rig *r) {
    ds_bwd_free(&r->w);
    ds_grads_free(&r->g);
    ds_acts_free(&r->a);
    free(r->ids);
    ds_model_free(&r->m);
}

static void run_fixture_ops(const char *fix, const char *file, const ds_loss_opts *o, int mtp,
                            const struct ds_ops *ops) {
    if (!have(fix, file)) SKIP("tests/fixtures/model/%s/%s absent (make fixtures)", fix, file);
    rig r;
    if (rig_open(&r, fix, mtp)) return;
    CHECK(ds_model_forward(&r.m, &r.a, ops, r.ids) == 0);
    ds_loss_terms t;
    CHECK(ds_model_backward(&r.m, &r.a, ops, &r.g, &r.w, NULL, o, &t) == 0);
    char path[300];
    snprintf(path, sizeof path, FIXDIR "%s/%s", fix, file);
    ds_st_file f;
    CHECK(ds_st_open(&f, path) == 0);
    check_term(&f, fix, "loss", t.loss);
    if (ds_st_find(&f, "loss_ce")) check_term(&f, fix, "loss_ce", t.ce);
    if (o->balance == DS_BAL_SEQ) {
        check_term(&f, fix, "loss_bal", t.bal);
        for (int64_t l = 0; l < r.m.cfg.num_hidden_layers; l++) {
            char nm[64];
            snprintf(nm, sizeof nm, "loss_bal.%lld", (long long)l);
            if (ds_st_find(&f, nm)) check_term(&f, fix, nm, t.bal_layer[l]);
        }
    }
    if (o->balance == DS_BAL_V2) {
        check_term(&f, fix, "loss_expert", t.bal_expert);
        check_term(&f, fix, "loss_device", t.bal_device);
        check_term(&f, fix, "loss_comm", t.bal_comm);
    }
    if (mtp) {
        check_term(&f, fix, "loss_mtp", t.mtp);
        check_term(&f, fix, "loss_mtp.1", t.mtp_ce[0]);
    }
    char worst_name[160] = "";
    double worst = compare_grads(&f, &r.m, &r.g, mtp, fix, worst_name);
    fprintf(stderr, "  %s/%s [%s]: loss %.7f (ref %.7f), worst gradient rel err %.3g on %s\n", fix, file, ops->name,
            t.loss, scalar(&f, "loss"), worst, worst_name);
    CHECK(ds_grads_check_finite(&r.g, &r.m, &ds_ops_cpu) == NULL);
    /* the correction bias only selects experts: its gradient slot stays 0 */
    for (int64_t i = 0; i < r.m.layout.n; i++) {
        const ds_param *p = &r.m.layout.p[i];
        if (!(p->flags & DS_PARAM_BUFFER)) continue;
        int64_t nz = 0;
        for (int64_t j = 0; j < p->numel; j++) nz += r.g.g[p->offset + j] != 0;
        CHECK_MSG(nz == 0, "%s: %s has a non-zero gradient", fix, p->name);
    }
    ds_st_close(&f);
    rig_close(&r);
}

static void run_fixture(const char *fix, const char *file, const ds_loss_opts *o, int mtp) {
    run_fixture_ops(fix, file, o, mtp, &ds_ops_cpu);
}

TEST(grads_v3_ce) {
    ds_loss_opts o = ds_loss_opts_default();
    run_fixture("v3", "grads.safetensors", &o, 0);
}
TEST(grads_v2lite_ce) {
    ds_loss_opts o = ds_loss_opts_default();
    run_fixture("v2lite", "grads.safetensors", &o, 0);
}
TEST(grads_v2group_ce) {
    ds_loss_opts o = ds_loss_opts_default();
    run_fixture("v2group", "grads.safetensors", &o, 0);
}
TEST(grads_norope_ce) {
    ds_loss_opts o = ds_loss_opts_default();
    run_fixture("norope", "grads.safetensors", &o, 0);
}
TEST(grads_v3_seqaux) {
    ds_loss_opts o = ds_loss_opts_default();
    o.balance = DS_BAL_SEQ;
    o.alpha = 0.01;
    run_fixture("v3", "grads_seqaux.safetensors", &o, 0);
}
TEST(grads_v3_v2aux) {
    ds_loss_opts o = ds_loss_opts_default();
    o.balance = DS_BAL_V2;
    o.a1 = 0.01, o.a2 = 0.05, o.a3 = 0.02;
    run_fixture("v3", "grads_v2aux.safetensors", &o, 0);
}
TEST(grads_v2group_v2aux) {
    ds_loss_opts o = ds_loss_opts_default();
    o.balance = DS_BAL_V2;
    o.a1 = 0.01, o.a2 = 0.05, o.a3 = 0.02;
    run_fixture("v2group", "grads_v2aux.safetensors", &o, 0);
}
TEST(grads_v3_mtp) {
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.3;
    run_fixture("v3", "grads_mtp.safetensors", &o, 1);
}

/* The whole forward and backward through the scalar references (ds_ops_ref):
 * checks the reference kernels themselves against transformers. */
TEST(grads_v3_mtp_reference_ops) {
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.3;
    run_fixture_ops("v3", "grads_mtp.safetensors", &o, 1, &ds_ops_ref);
}
TEST(grads_v2group_v2aux_reference_ops) {
    ds_loss_opts o = ds_loss_opts_default();
    o.balance = DS_BAL_V2;
    o.a1 = 0.01, o.a2 = 0.05, o.a3 = 0.02;
    run_fixture_ops("v2group", "grads_v2aux.safetensors", &o, 0, &ds_ops_ref);
}
TEST(grads_v2lite_reference_ops) {
    ds_loss_opts o = ds_loss_opts_default();
    run_fixture_ops("v2lite", "grads.safetensors", &o, 0, &ds_ops_ref);
}

/* 3 AdamW steps (lr 1e-3, β 0.9/0.95, eps 1e-8, wd 0.1 on ndim ≥ 2, clip 1.0)
 * on the CE loss vs torch.optim.AdamW: loss and gradient norm before each
 * step (rel < 1e-5) and every parameter after each step, two ways:
 *   - max|a-b| < 0.05·lr: the step-1 update is lr·g/(|g|+eps), so where |g|
 *     is ~1e-8 (comparable to eps) a gradient difference of 1e-10 (1e-6 of the
 *     tensor's max, the FP32 summation-order noise above) moves it by ~0.01 lr
 *     (measured worst 0.011 lr, 0.016 lr in the sanitizer build whose
 *     vectorisation differs).  A sign or bias-correction mistake moves
 *     parameters by ~1 lr, and decaying a 1-D norm weight (p ≈ 1) that must
 *     not decay moves it by lr·wd = 0.1 lr;
 *   - max|a-b| / max|ref| < 1e-4 (measured 1.7e-5, 3.4e-5 under the
 *     sanitizers, from the same near-eps elements).
 * AdamW's own arithmetic is tested against torch in test_adamw.c. */
static void adamw_three_steps(int bf16, double tol_lr, double tol_rel) {
    if (!have("v3", "adamw.safetensors")) SKIP("tests/fixtures/model/v3/adamw.safetensors absent (make fixtures)");
    rig r;
    if (rig_open(&r, "v3", 0)) return;
    ds_st_file f;
    CHECK(ds_st_open(&f, FIXDIR "v3/adamw.safetensors") == 0);
    float *mom = ds_calloc((size_t)r.g.n, sizeof(float)), *vel = ds_calloc((size_t)r.g.n, sizeof(float));
    uint16_t *m16 = ds_calloc((size_t)r.g.n, sizeof(uint16_t)), *v16 = ds_calloc((size_t)r.g.n, sizeof(uint16_t));
    ds_adamw_hparams h = ds_adamw_default(1e-3);
    ds_loss_opts o = ds_loss_opts_default();
    double worst = 0, worst_rel = 0;
    char worst_name[160] = "";
    for (int s = 1; s <= 3; s++) {
        ds_grads_zero(&r.g);
        CHECK(ds_model_forward(&r.m, &r.a, &ds_ops_cpu, r.ids) == 0);
        ds_loss_terms t;
        CHECK(ds_model_backward(&r.m, &r.a, &ds_ops_cpu, &r.g, &r.w, NULL, &o, &t) == 0);
        char nm[160];
        snprintf(nm, sizeof nm, "loss.%d", s);
        check_term(&f, "v3 adamw", nm, t.loss);
        double norm = ds_clip_grad_norm(r.g.g, r.g.n, 1.0);
        snprintf(nm, sizeof nm, "grad_norm.%d", s);
        check_term(&f, "v3 adamw", nm, norm);
        if (bf16) ds_model_adamw_step(&r.m, &r.g, NULL, NULL, m16, v16, s, &h, 0);
        else ds_model_adamw_step(&r.m, &r.g, mom, vel, NULL, NULL, s, &h, 0);
        for (int64_t i = 0; i < r.m.layout.n; i++) {
            const ds_param *p = &r.m.layout.p[i];
            if (p->flags & (DS_PARAM_ALIAS | DS_PARAM_MTP)) continue;
            snprintf(nm, sizeof nm, "step%d.%s", s, p->name);
            const ds_st_tensor *tt = ds_st_find(&f, nm);
            if (p->flags & DS_PARAM_BUFFER) continue; /* not a parameter: never changes */
            CHECK_MSG(tt && tt->numel == p->numel, "adamw: %s missing", nm);
            if (!tt || tt->numel != p->numel) continue;
            float *ref = ds_malloc((size_t)p->numel * sizeof(float));
            ds_st_to_f32(tt, ref);
            double e = 0, rel = ds_test_max_rel(r.m.params + p->offset, ref, (size_t)p->numel, 1e-30);
            for (int64_t j = 0; j < p->numel; j++) e = fmax(e, fabs((double)r.m.params[p->offset + j] - ref[j]));
            e /= h.lr; /* in units of the step size */
            free(ref);
            CHECK_MSG(e < tol_lr, "adamw: %s max abs err %.3g lr", nm, e);
            CHECK_MSG(rel < tol_rel, "adamw: %s rel err %.3g", nm, rel);
            worst_rel = fmax(worst_rel, rel);
            if (!(e <= worst)) worst = e, snprintf(worst_name, sizeof worst_name, "%s", nm);
        }
    }
    fprintf(stderr, "  v3 adamw (%s moments): 3 steps, worst parameter abs err %.3g lr on %s, worst rel err %.3g\n",
            bf16 ? "BF16" : "FP32", worst, worst_name, worst_rel);
    free(m16);
    free(v16);
    free(mom);
    free(vel);
    ds_st_close(&f);
    rig_close(&r);
}

TEST(adamw_v3_three_steps) { adamw_three_steps(0, ADAMW_TOL, ADAMW_REL); }
/* BF16 moments (DeepSeek-V3) against torch's FP32-moment run: m and v are
 * rounded to 8 significant bits after each update, so each update moves by
 * up to ~2^-8 of its size (~0.004 lr) on top of the noise above: same
 * tolerances (measured: as FP32 within 1e-4 lr). */
TEST(adamw_v3_three_steps_bf16_moments) { adamw_three_steps(1, ADAMW_TOL, ADAMW_REL); }

/* ---- MTP gradient by finite differences --------------------------------------
 * Total loss CE + 0.3·CE_1 of v3 as a function of single parameters (the
 * largest-gradient element of each MTP tensor, the shared embedding and
 * head): central differences in FP32 with h = 1e-3.  The loss is summed in
 * double but the logits are FP32, so the FD estimate has an absolute noise of
 * ~1e-5 plus O(h²) curvature (measured agreement 0.06% or better on the
 * largest elements): tolerance 1% of |g| + 1e-4.  A perturbation
 * that changes any routing decision is not used (the loss has a kink there). */
static double total_loss_t(rig *r, const ds_loss_opts *o, ds_grads *scratch, const int32_t *targets) {
    ds_loss_terms t;
    ds_model_forward(&r->m, &r->a, &ds_ops_cpu, r->ids);
    ds_model_backward(&r->m, &r->a, &ds_ops_cpu, scratch, &r->w, targets, o, &t);
    return t.loss;
}
static double total_loss(rig *r, const ds_loss_opts *o, ds_grads *scratch) { return total_loss_t(r, o, scratch, NULL); }

static int routing_equal(const rig *r, const int32_t *ref, int64_t n_per, int64_t nb) {
    for (int64_t l = 0; l < nb; l++)
        if (r->a.blk[l].r_idx && memcmp(r->a.blk[l].r_idx, ref + l * n_per, (size_t)n_per * sizeof(int32_t)))
            return 0;
    return 1;
}

TEST(mtp_grad_finite_differences) {
    if (!have("v3", "model.safetensors")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    rig r;
    if (rig_open(&r, "v3", 1)) return;
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.3;
    ds_grads scratch;
    ds_grads_create(&scratch, &r.m);
    total_loss(&r, &o, &r.g);
    const int64_t nb = r.m.nblocks, n_per = r.B * r.T * r.m.cfg.num_experts_per_tok;
    int32_t *route = ds_calloc((size_t)(nb * n_per), sizeof(int32_t));
    for (int64_t l = 0; l < nb; l++)
        if (r.a.blk[l].r_idx) memcpy(route + l * n_per, r.a.blk[l].r_idx, (size_t)n_per * sizeof(int32_t));
    const char *names[] = {"model.layers.3.enorm.weight", "model.layers.3.hnorm.weight", "model.layers.3.eh_proj.weight",
                           "model.layers.3.shared_head.norm.weight", "model.layers.3.self_attn.q_a_proj.weight",
                           "model.layers.3.self_attn.kv_b_proj.weight", "model.layers.3.mlp.gate.weight",
                           "model.layers.3.mlp.shared_experts.down_proj.weight", "model.embed_tokens.weight",
                           "lm_head.weight", "model.norm.weight"};
    int used = 0;
    for (size_t q = 0; q < sizeof names / sizeof *names; q++) {
        int64_t i = ds_layout_find(&r.m.layout, names[q]);
        CHECK_MSG(i >= 0, "%s not in layout", names[q]);
        if (i < 0) continue;
        const ds_param *p = &r.m.layout.p[i];
        int64_t j = 0;
        for (int64_t e = 1; e < p->numel; e++)
            if (fabsf(r.g.g[p->offset + e]) > fabsf(r.g.g[p->offset + j])) j = e;
        float *x = r.m.params + p->offset + j, x0 = *x;
        const float h = 1e-3f;
        *x = x0 + h;
        double lp = total_loss(&r, &o, &scratch);
        int ok = routing_equal(&r, route, n_per, nb);
        *x = x0 - h;
        double lm = total_loss(&r, &o, &scratch);
        ok = ok && routing_equal(&r, route, n_per, nb);
        *x = x0;
        double fd = (lp - lm) / (double)((x0 + h) - (x0 - h)), an = r.g.g[p->offset + j];
        fprintf(stderr, "  %s[%lld]: analytic %.6g, finite difference %.6g%s\n", names[q], (long long)j, an, fd,
                ok ? "" : " (routing changed: not used)");
        if (!ok) continue;
        used++;
        CHECK_MSG(fabs(fd - an) < 0.01 * fabs(an) + 1e-4, "%s: analytic %.6g vs finite difference %.6g", names[q], an,
                  fd);
    }
    CHECK(used >= 8);
    free(route);
    ds_grads_free(&scratch);
    rig_close(&r);
}

/* Partly ignored targets (every third target and the whole second half of
 * sequence 1 set to -100) on v2lite: the loss is the mean over the remaining
 * targets; gradient of a few parameters by central differences as above. */
TEST(ignored_targets_finite_differences) {
    if (!have("v2lite", "model.safetensors")) SKIP("tests/fixtures/model/v2lite absent (make fixtures)");
    rig r;
    if (rig_open(&r, "v2lite", 0)) return;
    ds_loss_opts o = ds_loss_opts_default();
    int32_t *tg = ds_malloc((size_t)(r.B * r.T) * sizeof(int32_t));
    ds_targets_from_ids(tg, r.ids, r.B, r.T, o.ignore);
    for (int64_t i = 0; i < r.B * r.T; i++)
        if (i % 3 == 0 || i >= r.T + r.T / 2) tg[i] = DS_IGNORE_INDEX;
    ds_grads scratch;
    ds_grads_create(&scratch, &r.m);
    ds_loss_terms t;
    CHECK(ds_model_forward(&r.m, &r.a, &ds_ops_cpu, r.ids) == 0);
    CHECK(ds_model_backward(&r.m, &r.a, &ds_ops_cpu, &r.g, &r.w, tg, &o, &t) == 0);
    CHECK(t.ce_count == ds_count_targets(tg, r.B, r.T, 0, o.ignore) && t.ce_count > 0 && t.ce_count < r.B * (r.T - 1));
    const int64_t nb = r.m.nblocks, n_per = r.B * r.T * r.m.cfg.num_experts_per_tok;
    int32_t *route = ds_calloc((size_t)(nb * n_per), sizeof(int32_t));
    for (int64_t l = 0; l < nb; l++)
        if (r.a.blk[l].r_idx) memcpy(route + l * n_per, r.a.blk[l].r_idx, (size_t)n_per * sizeof(int32_t));
    const char *names[] = {"model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.1.mlp.gate.weight", "model.layers.1.post_attention_layernorm.weight"};
    int used = 0;
    for (size_t q = 0; q < sizeof names / sizeof *names; q++) {
        int64_t i = ds_layout_find(&r.m.layout, names[q]);
        CHECK(i >= 0);
        if (i < 0) continue;
        const ds_param *p = &r.m.layout.p[i];
        int64_t j = 0;
        for (int64_t e = 1; e < p->numel; e++)
            if (fabsf(r.g.g[p->offset + e]) > fabsf(r.g.g[p->offset + j])) j = e;
        float *x = r.m.params + p->offset + j, x0 = *x;
        const float h = 1e-3f;
        *x = x0 + h;
        double lp = total_loss_t(&r, &o, &scratch, tg);
        int ok = routing_equal(&r, route, n_per, nb);
        *x = x0 - h;
        double lm = total_loss_t(&r, &o, &scratch, tg);
        ok = ok && routing_equal(&r, route, n_per, nb);
        *x = x0;
        double fd = (lp - lm) / (double)((x0 + h) - (x0 - h)), an = r.g.g[p->offset + j];
        if (!ok) continue;
        used++;
        CHECK_MSG(fabs(fd - an) < 0.01 * fabs(an) + 1e-4, "%s: analytic %.6g vs finite difference %.6g", names[q], an,
                  fd);
    }
    CHECK(used >= 4);
    free(route);
    free(tg);
    ds_grads_free(&scratch);
    rig_close(&r);
}

/* ---- gradient accumulation ----------------------------------------------------
 * 2 micro-batches of 1 sequence (global denominators: CE and MTP target
 * counts of the whole batch, 2 sequences for the balance loss) vs one batch
 * of 2, with CE + MTP (λ 0.3) + sequence-wise balance loss.  The sums are the
 * same math; only the order of the additions into each parameter gradient
 * differs (sequence 0's tokens, then sequence 1's, instead of one GEMM over
 * both), so the results agree to FP32 rounding (< 1e-5 relative per tensor),
 * not bit for bit.  Without the global denominators each micro-batch would
 * take the mean over its own targets, a different loss when counts differ. */
TEST(grad_accumulation_matches_big_batch) {
    if (!have("v3", "model.safetensors")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    rig r;
    if (rig_open(&r, "v3", 1)) return;
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.3;
    o.balance = DS_BAL_SEQ;
    o.alpha = 0.01;
    ds_loss_terms big;
    CHECK(ds_model_forward(&r.m, &r.a, &ds_ops_cpu, r.ids) == 0);
    CHECK(ds_model_backward(&r.m, &r.a, &ds_ops_cpu, &r.g, &r.w, NULL, &o, &big) == 0);

    const int64_t T = r.T;
    int32_t *tg = ds_malloc((size_t)(r.B * T) * sizeof(int32_t));
    ds_targets_from_ids(tg, r.ids, r.B, T, o.ignore);
    ds_loss_opts om = o;
    om.ce_denom = (double)ds_count_targets(tg, r.B, T, 0, o.ignore);
    om.mtp_denom[0] = (double)ds_count_targets(tg, r.B, T, 1, o.ignore);
    om.seq_denom = (double)r.B;
    ds_acts a1;
    ds_bwd w1;
    ds_grads g1;
    CHECK(ds_acts_create(&a1, &r.m, 1, T, 1) == 0);
    CHECK(ds_bwd_create(&w1, &r.m, 1, T) == 0);
    ds_grads_create(&g1, &r.m);
    double loss = 0;
    for (int64_t b = 0; b < r.B; b++) {
        ds_loss_terms t;
        CHECK(ds_model_forward(&r.m, &a1, &ds_ops_cpu, r.ids + b * T) == 0);
        CHECK(ds_model_backward(&r.m, &a1, &ds_ops_cpu, &g1, &w1, tg + b * T, &om, &t) == 0);
        loss += t.loss;
    }
    CHECK_MSG(fabs(loss - big.loss) < 1e-6 * big.loss, "accumulated loss %.9g vs %.9g", loss, big.loss);
    double worst = 0;
    for (int64_t i = 0; i < r.m.layout.n; i++) {
        const ds_param *p = &r.m.layout.p[i];
        if (p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)) continue;
        double e = ds_test_max_rel(g1.g + p->offset, r.g.g + p->offset, (size_t)p->numel, 1e-30);
        CHECK_MSG(e < 1e-5, "%s: accumulated vs big batch rel err %.3g", p->name, e);
        worst = fmax(worst, e);
    }
    fprintf(stderr, "  2 x B=1 vs B=2: loss %.9g vs %.9g, worst gradient rel err %.3g\n", loss, big.loss, worst);
    ds_grads_free(&g1);
    ds_bwd_free(&w1);
    ds_acts_free(&a1);
    free(tg);
    rig_close(&r);
}

/* ---- bad input -------------------------------------------------------------------- */

/* Every target ignored: CE (and MTP CE) of no tokens is defined as 0 with no
 * gradient (a warning is printed); nothing is NaN. */
TEST(all_targets_ignored) {
    if (!have("v3", "model.safetensors")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    rig r;
    if (rig_open(&r, "v3", 1)) return;
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.3;
    int32_t *tg = ds_malloc((size_t)(r.B * r.T) * sizeof(int32_t));
    for (int64_t i = 0; i < r.B * r.T; i++) tg[i] = DS_IGNORE_INDEX;
    ds_loss_terms t;
    CHECK(ds_model_forward(&r.m, &r.a, &ds_ops_cpu, r.ids) == 0);
    CHECK(ds_model_backward(&r.m, &r.a, &ds_ops_cpu, &r.g, &r.w, tg, &o, &t) == 0);
    CHECK(t.loss == 0 && t.ce == 0 && t.mtp == 0 && t.ce_count == 0);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < r.g.n; i++) nonzero += r.g.g[i] != 0;
    CHECK_MSG(nonzero == 0, "%lld non-zero gradient values", (long long)nonzero);
    CHECK(ds_grads_check_finite(&r.g, &r.m, &ds_ops_cpu) == NULL);
    /* a target outside the vocabulary that is not the ignore id is an error */
    tg[5] = (int32_t)r.m.cfg.vocab_size;
    CHECK(ds_model_backward(&r.m, &r.a, &ds_ops_cpu, &r.g, &r.w, tg, &o, &t) == -1);
    CHECK(strstr(ds_errmsg(), "position 5") != NULL);
    /* MTP loss without MTP activations is an error, not a crash */
    ds_acts a0;
    CHECK(ds_acts_create(&a0, &r.m, r.B, r.T, 0) == 0);
    CHECK(ds_model_forward(&r.m, &a0, &ds_ops_cpu, r.ids) == 0);
    CHECK(ds_model_backward(&r.m, &a0, &ds_ops_cpu, &r.g, &r.w, NULL, &o, &t) == -1);
    CHECK(strstr(ds_errmsg(), "MTP") != NULL);
    ds_acts_free(&a0);
    free(tg);
    rig_close(&r);
}

/* A NaN in a gradient is found and named by ds_grads_check_finite: injected
 * directly, and arising from a NaN parameter through forward + backward. */
TEST(nan_gradient_detected) {
    if (!have("v3", "model.safetensors")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    rig r;
    if (rig_open(&r, "v3", 0)) return;
    ds_loss_opts o = ds_loss_opts_default();
    ds_loss_terms t;
    CHECK(ds_model_forward(&r.m, &r.a, &ds_ops_cpu, r.ids) == 0);
    CHECK(ds_model_backward(&r.m, &r.a, &ds_ops_cpu, &r.g, &r.w, NULL, &o, &t) == 0);
    CHECK(ds_grads_check_finite(&r.g, &r.m, &ds_ops_cpu) == NULL);
    int64_t i = ds_layout_find(&r.m.layout, "model.layers.2.mlp.experts.3.down_proj.weight");
    CHECK(i >= 0);
    r.g.g[r.m.layout.p[i].offset + 7] = NAN;
    const char *bad = ds_grads_check_finite(&r.g, &r.m, &ds_ops_cpu);
    CHECK(bad && strcmp(bad, "model.layers.2.mlp.experts.3.down_proj.weight") == 0);
    r.g.g[r.m.layout.p[i].offset + 7] = INFINITY;
    bad = ds_grads_check_finite(&r.g, &r.m, &ds_ops_cpu);
    CHECK(bad && strcmp(bad, "model.layers.2.mlp.experts.3.down_proj.weight") == 0);
    /* a NaN parameter in the last norm poisons the head gradient */
    ds_grads_zero(&r.g);
    i = ds_layout_find(&r.m.layout, "model.norm.weight");
    r.m.params[r.m.layout.p[i].offset] = NAN;
    CHECK(ds_model_forward(&r.m, &r.a, &ds_ops_cpu, r.ids) == 0);
    CHECK(ds_model_backward(&r.m, &r.a, &ds_ops_cpu, &r.g, &r.w, NULL, &o, &t) == 0);
    bad = ds_grads_check_finite(&r.g, &r.m, &ds_ops_cpu);
    CHECK(bad != NULL);
    CHECK(isnan(t.loss));
    if (bad) fprintf(stderr, "  first non-finite gradient: %s\n", bad);
    rig_close(&r);
}

/* ---- CLI: dsv3 forward --grads ------------------------------------------------------------ */

static const char *dsv3_bin(void) {
    const char *b = getenv("DSV3");
    return b ? b : "./dsv3";
}

/* The written file vs a fixture: same key set (plus loss_ce), loss terms within 1e-5,
 * gradients within GRAD_TOL. */
static void cli_vs_fixture(const char *fix, const char *file, const char *extra) {
    if (!have(fix, file)) SKIP("tests/fixtures/model/%s/%s absent (make fixtures)", fix, file);
    char out[4096], path[512];
    snprintf(path, sizeof path, "%s/g.safetensors", ds_test_tmpdir());
    int rc = ds_test_sh(out, sizeof out, "%s forward --model " FIXDIR "%s --ids " FIXDIR "%s/ids.txt --grads %s %s",
                        dsv3_bin(), fix, fix, path, extra);
    CHECK_MSG(rc == 0, "dsv3 forward --grads failed: %s", out);
    if (rc) return;
    ds_st_file got, ref;
    char rpath[300];
    snprintf(rpath, sizeof rpath, FIXDIR "%s/%s", fix, file);
    CHECK(ds_st_open(&got, path) == 0);
    CHECK(ds_st_open(&ref, rpath) == 0);
    /* grads.safetensors has `loss` only; dsv3 always writes `loss_ce` too */
    int64_t extra_n = ds_st_find(&ref, "loss_ce") ? 0 : 1;
    CHECK_MSG(got.n == ref.n + extra_n, "%s: %lld tensors written, reference has %lld", fix, (long long)got.n,
              (long long)ref.n);
    CHECK(ds_st_find(&got, "loss_ce") != NULL);
    double worst = 0;
    for (int64_t i = 0; i < ref.n; i++) {
        const ds_st_tensor *r = &ref.tensors[i], *g = ds_st_find(&got, r->name);
        CHECK_MSG(g && g->numel == r->numel && g->dtype == DS_F32, "%s: %s missing or different", fix, r->name);
        if (!g || g->numel != r->numel) continue;
        float *a = ds_malloc((size_t)r->numel * sizeof(float)), *b = ds_malloc((size_t)r->numel * sizeof(float));
        ds_st_to_f32(g, a);
        ds_st_to_f32(r, b);
        double e = ds_test_max_rel(a, b, (size_t)r->numel, 1e-30);
        double tol = strncmp(r->name, "grad.", 5) == 0 ? GRAD_TOL : LOSS_TOL;
        CHECK_MSG(e < tol, "%s: %s rel err %.3g", fix, r->name, e);
        worst = fmax(worst, e);
        free(a);
        free(b);
    }
    fprintf(stderr, "  dsv3 forward --grads %s (%s): %lld tensors, worst rel err %.3g\n", extra, fix, (long long)ref.n,
            worst);
    ds_st_close(&got);
    ds_st_close(&ref);
}

TEST(cli_grads_v2lite_ce) { cli_vs_fixture("v2lite", "grads.safetensors", ""); }
TEST(cli_grads_v3_mtp) { cli_vs_fixture("v3", "grads_mtp.safetensors", "--mtp-lambda 0.3"); }
TEST(cli_grads_v3_seqaux) { cli_vs_fixture("v3", "grads_seqaux.safetensors", "--balance-loss seq:0.01"); }
TEST(cli_grads_v2group_v2aux) {
    cli_vs_fixture("v2group", "grads_v2aux.safetensors", "--balance-loss v2:0.01,0.05,0.02");
}

/* Bad options: one line naming the problem, exit 2, nothing written. */
TEST(cli_grads_bad_options) {
    if (!have("v3", "model.safetensors")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    char out[4096], path[512];
    snprintf(path, sizeof path, "%s/g.safetensors", ds_test_tmpdir());
    const char *cases[][2] = {
        {"--balance-loss seq:abc", "seq:ALPHA"},
        {"--balance-loss v2:0.1,0.2", "v2:A1,A2,A3"},
        {"--balance-loss foo:1", "expected seq:ALPHA"},
        {"--balance-loss seq:-1", "seq:ALPHA"},
        {"--mtp-lambda 0.3 --no-mtp", "drop --no-mtp"},
        {"--mtp-lambda -1", "allowed: [0, inf)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = ds_test_sh(out, sizeof out, "%s forward --model " FIXDIR "v3 --ids " FIXDIR "v3/ids.txt --grads %s %s",
                            dsv3_bin(), path, cases[i][0]);
        CHECK_MSG(rc == 2, "'%s': exit %d (%s)", cases[i][0], rc, out);
        CHECK_MSG(strstr(out, cases[i][1]) != NULL, "'%s': message '%s'", cases[i][0], out);
        CHECK(!ds_file_exists(path));
    }
    /* --mtp-lambda without --grads */
    int rc = ds_test_sh(out, sizeof out, "%s forward --model " FIXDIR "v3 --ids " FIXDIR "v3/ids.txt --out %s --mtp-lambda 1",
                        dsv3_bin(), path);
    CHECK(rc == 2 && strstr(out, "need --grads"));
    /* a model without MTP modules cannot have an MTP loss */
    if (have("v2lite", "model.safetensors")) {
        rc = ds_test_sh(out, sizeof out, "%s forward --model " FIXDIR "v2lite --ids " FIXDIR "v2lite/ids.txt --grads %s "
                        "--mtp-lambda 0.3", dsv3_bin(), path);
        CHECK_MSG(rc == 1 && strstr(out, "no MTP modules"), "v2lite --mtp-lambda: exit %d: %s", rc, out);
        CHECK(!ds_file_exists(path));
    }
}

/* One token per sequence: no next-token target at all.  The CLI still writes
 * the file, with loss 0 and all-zero gradients, and warns on stderr. */
TEST(cli_grads_no_targets) {
    if (!have("v3", "model.safetensors")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    char out[4096], path[512], ids[512];
    snprintf(path, sizeof path, "%s/g.safetensors", ds_test_tmpdir());
    snprintf(ids, sizeof ids, "%s/ids.txt", ds_test_tmpdir());
    FILE *f = fopen(ids, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("5\n7\n", f);
    fclose(f);
    int rc = ds_test_sh(out, sizeof out, "%s forward --model " FIXDIR "v3 --ids %s --grads %s --mtp-lambda 0.3",
                        dsv3_bin(), ids, path);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, out);
    CHECK_MSG(strstr(out, "no counted targets") != NULL, "no warning: %s", out);
    ds_st_file g;
    if (ds_st_open(&g, path)) {
        CHECK_MSG(0, "%s not written: %s", path, ds_errmsg());
        return;
    }
    CHECK(scalar(&g, "loss") == 0 && scalar(&g, "loss_ce") == 0 && scalar(&g, "loss_mtp") == 0);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < g.n; i++) {
        const ds_st_tensor *t = &g.tensors[i];
        float *x = ds_malloc((size_t)t->numel * sizeof(float));
        ds_st_to_f32(t, x);
        for (int64_t j = 0; j < t->numel; j++) nonzero += x[j] != 0;
        free(x);
    }
    CHECK_MSG(nonzero == 0, "%lld non-zero values", (long long)nonzero);
    ds_st_close(&g);
}
