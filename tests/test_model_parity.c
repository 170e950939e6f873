/*
 * test_model_parity.c — model-level parity with Hugging Face transformers
 * (the oracle): the fixtures in tests/fixtures/model/<name>/ were produced by
 * tools/make_fixtures.py from DeepseekV3ForCausalLM / DeepseekV2ForCausalLM in
 * FP32 with eager attention (MTP logits from tools/mtp_reference.py, a separate
 * code path written from the MTP equations).  We load each folder, run the
 * forward on ids.txt and compare logits, every hidden state, the MTP logits and
 * the routed experts of every MoE layer.
 *
 * Tolerance: max|a-b| / max|ref| < 1e-5 for every tensor.  Both sides compute in
 * FP32; only the summation order differs (BLAS blocking vs PyTorch's kernels,
 * online vs two-pass softmax), which gives ~1e-7 per op and ~1e-6 at the logits
 * after a few layers (measured: 2e-7 .. 1.4e-6).  Routing decisions are
 * identical because the fixture generator only keeps seeds whose top-K and
 * top-group margins exceed 1e-4, far above that noise.  A real mistake (wrong
 * eps, rope pairing, softmax scale, split order, router rule) moves the logits
 * by 1e-3 or more, so 1e-5 separates the two with room on both sides.
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test.h"
#include "fixture_ids.h"

#define FIXDIR "tests/fixtures/model/"


static double cmp(const ds_st_file *ref, const char *name, const float *got, int64_t n, const char *fix) {
    const ds_st_tensor *t = ds_st_find(ref, name);
    if (!t) {
        fprintf(stderr, "  %s: %s missing in reference\n", fix, name);
        return INFINITY;
    }
    if (t->numel != n) {
        fprintf(stderr, "  %s: %s has %lld elements, forward gave %lld\n", fix, name, (long long)t->numel, (long long)n);
        return INFINITY;
    }
    float *r = ds_malloc((size_t)n * sizeof(float));
    ds_st_to_f32(t, r);
    double e = ds_test_max_rel(got, r, (size_t)n, 1e-30);
    free(r);
    return e;
}

/* Runs one fixture through `ops`; returns the number of tensors compared. */
static int parity(const char *fix, const struct ds_ops *ops, double tol) {
    char dir[256], path[300];
    snprintf(dir, sizeof dir, FIXDIR "%s", fix);
    ds_model m;
    if (ds_model_load(&m, dir)) {
        CHECK_MSG(0, "%s: load failed: %s", fix, ds_errmsg());
        return 0;
    }
    snprintf(path, sizeof path, "%s/ids.txt", dir);
    int64_t B = 0, T = 0;
    int32_t *ids = read_ids(path, &B, &T);
    CHECK(ids && B == 2 && T == 24);
    if (!ids || B <= 0 || T <= 0) {
        ds_model_free(&m);
        return 0;
    }
    ds_acts a;
    CHECK(ds_acts_create(&a, &m, B, T, 1) == 0);
    CHECK(ds_model_forward(&m, &a, ops, ids) == 0);
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    ds_st_file ref;
    CHECK(ds_st_open(&ref, path) == 0);
    const ds_config *c = &m.cfg;
    int64_t V = c->vocab_size, H = c->hidden_size, L = c->num_hidden_layers, K = c->num_experts_per_tok;
    int ncmp = 0;
    double worst = 0;
    double e = cmp(&ref, "logits", a.logits, B * T * V, fix);
    CHECK_MSG(e < tol, "%s [%s]: logits rel err %.3g", fix, ops->name, e);
    fprintf(stderr, "  %s [%s]: logits rel err %.3g\n", fix, ops->name, e);
    ncmp++;
    for (int64_t i = 0; i <= L; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "hidden_states.%lld", (long long)i);
        e = cmp(&ref, nm, ds_acts_hidden(&a, &m, i), B * T * H, fix);
        CHECK_MSG(e < tol, "%s [%s]: %s rel err %.3g", fix, ops->name, nm, e);
        worst = e > worst ? e : worst;
        ncmp++;
    }
    fprintf(stderr, "  %s [%s]: hidden states (%lld) worst rel err %.3g\n", fix, ops->name, (long long)L + 1, worst);
    for (int64_t k = 1; k <= c->num_nextn_predict_layers; k++) {
        char nm[64];
        snprintf(nm, sizeof nm, "mtp_logits.%lld", (long long)k);
        e = cmp(&ref, nm, a.mtp_logits[k - 1], B * (T - k) * V, fix);
        CHECK_MSG(e < tol, "%s [%s]: %s rel err %.3g", fix, ops->name, nm, e);
        fprintf(stderr, "  %s [%s]: %s rel err %.3g\n", fix, ops->name, nm, e);
        ncmp++;
    }
    /* routed experts (sorted ascending in both) for every main MoE layer */
    for (int64_t l = 0; l < L; l++) {
        if (!m.blocks[l].moe) continue;
        char nm[64];
        snprintf(nm, sizeof nm, "routed_experts.%lld", (long long)l);
        const ds_st_tensor *t = ds_st_find(&ref, nm);
        CHECK_MSG(t && t->dtype == DS_I64 && t->numel == B * T * K, "%s: %s", fix, nm);
        if (!t || t->dtype != DS_I64 || t->numel != B * T * K) continue;
        int64_t diff = 0;
        for (int64_t i = 0; i < B * T * K; i++) {
            int64_t r;
            memcpy(&r, (const char *)t->data + 8 * i, 8);
            diff += r != a.blk[l].r_idx[i];
        }
        CHECK_MSG(diff == 0, "%s [%s]: layer %lld: %lld routed expert ids differ", fix, ops->name, (long long)l,
                  (long long)diff);
        ncmp++;
    }
    ds_st_close(&ref);
    ds_acts_free(&a);
    free(ids);
    ds_model_free(&m);
    return ncmp;
}

static int have(const char *fix) {
    char p[256];
    snprintf(p, sizeof p, FIXDIR "%s/reference.safetensors", fix);
    return ds_file_exists(p);
}

TEST(parity_v3) {
    if (!have("v3")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    CHECK(parity("v3", &ds_ops_cpu, 1e-5) >= 6);
}
TEST(parity_v2lite) {
    if (!have("v2lite")) SKIP("tests/fixtures/model/v2lite absent (make fixtures)");
    CHECK(parity("v2lite", &ds_ops_cpu, 1e-5) >= 4);
}
TEST(parity_v2group) {
    if (!have("v2group")) SKIP("tests/fixtures/model/v2group absent (make fixtures)");
    CHECK(parity("v2group", &ds_ops_cpu, 1e-5) >= 4);
}
TEST(parity_norope_mtp2) {
    if (!have("norope")) SKIP("tests/fixtures/model/norope absent (make fixtures)");
    CHECK(parity("norope", &ds_ops_cpu, 1e-5) >= 6);
}
/* The same model run entirely through the scalar references (ds_ops_ref):
 * checks the references themselves against transformers. */
TEST(parity_v3_reference_ops) {
    if (!have("v3")) SKIP("tests/fixtures/model/v3 absent (make fixtures)");
    CHECK(parity("v3", &ds_ops_ref, 1e-5) >= 6);
}
TEST(parity_v2group_reference_ops) {
    if (!have("v2group")) SKIP("tests/fixtures/model/v2group absent (make fixtures)");
    CHECK(parity("v2group", &ds_ops_ref, 1e-5) >= 4);
}
