/* test_adamw.c — AdamW, clipping and LR schedule against torch (fixture made by
 * tools/make_train_fixtures.py) and against closed forms. */
#include "test.h"
#include "base/base.h"
#include "num/dtype.h"
#include "backend/ops.h"
#include "train/adamw.h"

static double next_val(char **s) {
    char *end;
    double v = strtod(*s, &end);
    *s = end;
    return v;
}

/* The `adamw` and `sumsq` entries of both tables (the fast CPU kernels and
 * the scalar references), with the clip coefficient folded in as gscale. */
static void adamw_vs_torch(const struct ds_ops *ops) {
    size_t len;
    char *txt = ds_read_file("tests/fixtures/train/adamw_unit.txt", &len);
    CHECK(txt != NULL);
    TEST_RETURN_IF_FAILED();
    char *s = txt;
    int n = (int)next_val(&s), steps = (int)next_val(&s);
    double lr = next_val(&s), b1 = next_val(&s), b2 = next_val(&s), eps = next_val(&s),
           wd = next_val(&s), max_norm = next_val(&s);
    ds_adamw_hparams h = {lr, b1, b2, eps, wd};
    float *p0 = malloc(n * 4), *pd = malloc(n * 4), *pn = malloc(n * 4), *pb = malloc(n * 4);
    float *g = malloc(n * 4), *ref = malloc(n * 4 * 3);
    float *md = calloc(n, 4), *vd = calloc(n, 4), *mn = calloc(n, 4), *vn = calloc(n, 4);
    uint16_t *m16 = calloc(n, 2), *v16 = calloc(n, 2);
    for (int i = 0; i < n; i++) p0[i] = (float)next_val(&s);
    memcpy(pd, p0, n * 4); memcpy(pn, p0, n * 4); memcpy(pb, p0, n * 4);
    ds_optim_seg dec = {0, n, 1}, nodec = {0, n, 0};
    for (int t = 1; t <= steps; t++) {
        for (int i = 0; i < n; i++) g[i] = (float)next_val(&s);
        for (int i = 0; i < 3 * n; i++) ref[i] = (float)next_val(&s);
        double norm = sqrt(ops->sumsq(g, n));
        CHECK(norm > 0);
        float gs = ds_clip_coef(norm, max_norm);
        ops->adamw(pd, g, md, vd, 0, &dec, 1, t, &h, gs);
        ops->adamw(pn, g, mn, vn, 0, &nodec, 1, t, &h, gs);
        ops->adamw(pb, g, m16, v16, 1, &dec, 1, t, &h, gs);
        /* same formula in float32: a few ulps of |p| (~1); measured: 1 ulp (6e-8) */
        double e1 = 0, e2 = 0, e3 = 0;
        for (int i = 0; i < n; i++) {
            e1 = fmax(e1, fabs(pd[i] - ref[i]));
            e2 = fmax(e2, fabs(pn[i] - ref[n + i]));
            e3 = fmax(e3, fabs(pb[i] - ref[2 * n + i]));
        }
        if (getenv("DS_TEST_VERBOSE")) fprintf(stderr, "  %s step %d errs %g %g %g\n", ops->name, t, e1, e2, e3);
        CHECK_MSG(e1 < 3e-7, "%s step %d decay: max abs err %g", ops->name, t, e1);
        CHECK_MSG(e2 < 3e-7, "%s step %d no decay: max abs err %g", ops->name, t, e2);
        CHECK_MSG(e3 < 1e-6, "%s step %d bf16 moments: max abs err %g", ops->name, t, e3);
    }
    free(txt); free(p0); free(pd); free(pn); free(pb); free(g); free(ref);
    free(md); free(vd); free(mn); free(vn); free(m16); free(v16);
}

TEST(adamw_matches_torch) { adamw_vs_torch(&ds_ops_cpu); }
TEST(adamw_ref_matches_torch) { adamw_vs_torch(&ds_ops_ref); }

TEST(clip_coef_scales_only_above_max) {
    float g[4] = {3, 4, 0, 0}; /* norm 5 */
    double n = sqrt(ds_ops_cpu.sumsq(g, 4));
    CHECK_NEAR(n, 5.0, 1e-12);
    CHECK(ds_clip_coef(n, 1.0) == (float)(1.0 / (5.0 + 1e-6))); /* torch: max / (norm + 1e-6) */
    CHECK(ds_clip_coef(0.5, 1.0) == 1.0f);                       /* below max: unchanged */
    CHECK(ds_clip_coef(5.0, 0) == 1.0f);                         /* no clipping */
    CHECK(ds_clip_coef(NAN, 1.0) == 1.0f);
}

TEST(lr_schedule_deepseek_shape) {
    ds_lr_schedule s = {2.2e-4, 2.2e-5, 7.3e-6, 100, 1000, 2000, 2500};
    CHECK_NEAR(ds_lr_at(&s, 0), 2.2e-6, 1e-15);          /* (0+1)/100 of peak */
    CHECK_NEAR(ds_lr_at(&s, 49), 1.1e-4, 1e-15);
    CHECK_NEAR(ds_lr_at(&s, 100), 2.2e-4, 1e-15);
    CHECK_NEAR(ds_lr_at(&s, 999), 2.2e-4, 1e-15);
    CHECK_NEAR(ds_lr_at(&s, 1000), 2.2e-4, 1e-15);        /* cosine starts at peak */
    CHECK_NEAR(ds_lr_at(&s, 1500), (2.2e-4 + 2.2e-5) / 2, 1e-12); /* half way */
    CHECK_NEAR(ds_lr_at(&s, 2000), 2.2e-5, 1e-15);
    CHECK_NEAR(ds_lr_at(&s, 2499), 2.2e-5, 1e-15);
    CHECK_NEAR(ds_lr_at(&s, 2500), 7.3e-6, 1e-15);
    /* monotone non-increasing after warmup */
    for (int64_t t = 100; t < 3000; t++) CHECK(ds_lr_at(&s, t + 1) <= ds_lr_at(&s, t) + 1e-18);
}

#include "train/balance.h"

TEST(balance_bias_update_and_stats) {
    /* loads 10, 30, 20, 20 (mean 20): expert 0 under, 1 over, 2-3 exact */
    int64_t load[4] = {10, 30, 20, 20};
    float b[4] = {0, 0, 0.5f, 0};
    ds_ops_cpu.bias_update(b, load, 4, 0.001f);
    CHECK(b[0] == 0.001f && b[1] == -0.001f && b[2] == 0.5f && b[3] == 0.0f);
    float br[4] = {0, 0, 0.5f, 0};
    ds_ops_ref.bias_update(br, load, 4, 0.001f);
    CHECK(!memcmp(b, br, sizeof b));
    ds_routing_stats s = ds_routing_stats_of(load, 4);
    CHECK_NEAR(s.maxvio, 0.5, 1e-12);          /* 30 / 20 - 1 */
    CHECK_NEAR(s.top_share, 0.375, 1e-12);     /* 30 / 80 */
    CHECK(s.busiest == 1 && s.idle == 0 && !s.collapsed);
    int64_t c[16] = {0};
    c[3] = 90; c[5] = 10;                      /* 14 of 16 idle, one expert has 90% */
    s = ds_routing_stats_of(c, 16);
    CHECK(s.collapsed && s.idle == 14);
    CHECK_NEAR(s.maxvio, 90 / (100.0 / 16) - 1, 1e-12);
}
