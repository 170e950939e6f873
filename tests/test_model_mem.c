/*
 * test_model_mem.c — the model's memory through its table (docs/engine.md
 * step 6): weights, arenas, gradients and backward buffers come from the
 * table's alloc and go back through its free; a table that says its memory
 * is not host-visible gets initialisation, load, save and the gradient dump
 * through host staging and copies.  The table here is the cpu table with
 * counting memory entries and host_visible = 0 (its memory is still host
 * memory, so the kernels run): every result must equal the host model's bit
 * for bit, and the counters show the paths taken.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/ops.h"
#include "base/base.h"
#include "model/backward.h"
#include "model/presets.h"
#include "fixture_ids.h"
#include "fakedev_pair.h"
#include "test.h"

static struct ds_ops dev;
static int live, allocs, h2d, d2h;
static void *dev_alloc(size_t n) { return live++, allocs++, ds_ops_cpu.alloc(n); }
static void dev_free(void *p) { live--, ds_ops_cpu.free(p); }
static void dev_h2d(void *d, const void *s, size_t n) { h2d++, memcpy(d, s, n); }
static void dev_d2h(void *d, const void *s, size_t n) { d2h++, memcpy(d, s, n); }

static void dev_init(void) {
    dev = ds_ops_cpu;
    dev.name = "counted";
    dev.host_visible = 0;
    dev.alloc = dev_alloc, dev.free = dev_free, dev.copy_h2d = dev_h2d, dev.copy_d2h = dev_d2h;
    live = allocs = h2d = d2h = 0;
}

static int same(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

static int files_equal(const char *a, const char *b) {
    char out[256];
    return ds_test_sh(out, sizeof out, "cmp -s %s %s", a, b) == 0;
}

/* tiny preset, random init: host model vs the same on the counting table —
 * init, forward, backward, gradient dump and save all equal; the weights, the
 * arenas and the gradients are the table's allocations; the forward copies
 * each MoE layer's load counts to the host */
TEST(model_mem_through_table) {
    dev_init();
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    c.num_hidden_layers = 3;
    ds_model h, d;
    CHECK(ds_model_create(&h, &c) == 0 && ds_model_create_on(&d, &c, NULL, &dev) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK(allocs == 1 && live == 1 && d.mem == &dev && h.mem == NULL);
    ds_model_init_random(&h, 5);
    h2d = 0;
    ds_model_init_random(&d, 5);
    CHECK_MSG(h2d > 10, "init: %d host-to-device copies", h2d);
    CHECK(same(h.params, d.params, (size_t)h.layout.total * sizeof(float)));
    const int64_t B = 2, T = 9, N = B * T;
    int32_t ids[18];
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)((i * 7919 + 13) % c.vocab_size);
    ds_acts ah, ad;
    ds_grads gh, gd;
    ds_bwd wh, wd;
    CHECK(ds_acts_create(&ah, &h, B, T, 1) == 0 && ds_acts_create(&ad, &d, B, T, 1) == 0);
    CHECK(ds_grads_create(&gh, &h) == 0 && ds_grads_create(&gd, &d) == 0);
    CHECK(ds_bwd_create(&wh, &h, B, T) == 0 && ds_bwd_create(&wd, &d, B, T) == 0);
    TEST_RETURN_IF_FAILED();
    CHECK_MSG(live == 4 && ad.mem == &dev && gd.mem == &dev && wd.mem == &dev, "live %d", live);
    int moe = 0;
    for (int64_t l = 0; l < d.nblocks; l++) moe += d.blocks[l].moe;
    CHECK(moe >= 2);
    d2h = 0;
    CHECK(ds_model_forward(&h, &ah, &ds_ops_cpu, ids) == 0 && ds_model_forward(&d, &ad, &dev, ids) == 0);
    CHECK_MSG(d2h == 2 * moe, "forward: %d device-to-host copies for %d MoE layers", d2h, moe);
    CHECK(same(ah.logits, ad.logits, (size_t)(N * c.vocab_size) * sizeof(float)));
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.3;
    CHECK(ds_loss_opts_parse_balance(&o, "seq:0.01") == 0);
    ds_loss_terms th, td;
    d2h = 0;
    CHECK(ds_model_backward(&h, &ah, &ds_ops_cpu, &gh, &wh, NULL, &o, &th) == 0);
    CHECK(ds_model_backward(&d, &ad, &dev, &gd, &wd, NULL, &o, &td) == 0);
    CHECK_MSG(d2h == 1, "backward: %d device-to-host copies (the ids for the targets)", d2h);
    CHECK(th.loss == td.loss && th.bal > 0 && th.mtp > 0);
    CHECK(same(gh.g, gd.g, (size_t)gh.n * sizeof(float)));
    CHECK(ds_grads_check_finite(&gd, &d, &dev) == NULL);
    /* dump and save: the device ones are staged through copy_d2h */
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/gh.safetensors", ds_test_tmpdir());
    snprintf(p2, sizeof p2, "%s/gd.safetensors", ds_test_tmpdir());
    d2h = 0;
    CHECK(ds_grads_write(p1, &h, &gh, &th, 1, DS_BAL_SEQ) == 0 && ds_grads_write(p2, &d, &gd, &td, 1, DS_BAL_SEQ) == 0);
    CHECK(d2h == 1 && files_equal(p1, p2));
    snprintf(p1, sizeof p1, "%s/mh", ds_test_tmpdir());
    snprintf(p2, sizeof p2, "%s/md", ds_test_tmpdir());
    d2h = 0;
    CHECK(ds_model_save(&h, p1) == 0 && ds_model_save(&d, p2) == 0);
    CHECK(d2h == 1);
    strcat(p1, "/model.safetensors"), strcat(p2, "/model.safetensors");
    CHECK(files_equal(p1, p2));
    ds_grads_zero(&gd);
    CHECK(ds_ops_cpu.sumsq(gd.g, gd.n) == 0);
    ds_bwd_free(&wh), ds_bwd_free(&wd), ds_grads_free(&gh), ds_grads_free(&gd);
    ds_acts_free(&ah), ds_acts_free(&ad);
    ds_model_free(&h), ds_model_free(&d);
    CHECK_MSG(live == 0, "%d allocations of the table left after the frees", live);
}

/* load onto the table (FP32 fixture and the FP8/BF16-resident one): the same
 * logits as the host load; the weights moved by ds_model_to, the host copies
 * gone */
TEST(model_mem_load_onto_table) {
    static const char *const dirs[] = {"tests/fixtures/model/v3", "fp8"};
    for (int k = 0; k < 2; k++) {
        dev_init();
        char dir[600];
        int resident = k == 1;
        if (resident) {
            snprintf(dir, sizeof dir, "%s/fp8model", ds_test_tmpdir());
            if (ds_test_sh(NULL, 0, "mkdir -p %s && cp tests/fixtures/convert/expected_fp8.safetensors "
                           "%s/model.safetensors && cp tests/fixtures/convert/expected_fp8_config.json %s/config.json",
                           dir, dir, dir) != 0)
                SKIP("tests/fixtures/convert absent");
        } else {
            snprintf(dir, sizeof dir, "%s", dirs[k]);
            if (!ds_file_exists("tests/fixtures/model/v3/model.safetensors")) SKIP("tests/fixtures/model/v3 absent");
        }
        ds_load_opts oh = {.fp8_resident = resident}, od = {.fp8_resident = resident, .mem = &dev};
        ds_model h, d;
        CHECK(ds_model_load_ex(&h, dir, &oh) == 0 && ds_model_load_ex(&d, dir, &od) == 0);
        TEST_RETURN_IF_FAILED();
        CHECK(d.mem == &dev && (d.fp8w != NULL) == resident);
        CHECK_MSG(live == (resident ? 4 : 1) && h2d == live, "%s: %d live allocations, %d copies", dir, live, h2d);
        const int64_t B = 2, T = 7;
        int32_t ids[14];
        for (int i = 0; i < 14; i++) ids[i] = (int32_t)((i * 31 + 3) % h.cfg.vocab_size);
        ds_acts ah, ad;
        CHECK(ds_acts_create(&ah, &h, B, T, 0) == 0 && ds_acts_create(&ad, &d, B, T, 0) == 0);
        CHECK(ds_model_forward(&h, &ah, &ds_ops_cpu, ids) == 0 && ds_model_forward(&d, &ad, &dev, ids) == 0);
        const size_t nl = (size_t)(B * T * h.cfg.vocab_size) * sizeof(float);
        CHECK_MSG(same(ah.logits, ad.logits, nl), "%s: logits differ after the load onto the table", dir);
        float s = 0;
        for (int64_t i = 0; i < B * T * h.cfg.vocab_size; i++) s += ah.logits[i] * ah.logits[i];
        CHECK(s > 0);
        ds_acts_free(&ah), ds_acts_free(&ad);
        ds_model_free(&h), ds_model_free(&d);
        CHECK(live == 0);
    }
}

/* Under the fakedev table (backend/fakedev.c: device memory PROT_NONE
 * outside its entries) the model's init, forward, backward, finite check,
 * gradient dump and save touch device memory only through the table: any
 * direct host access would fault.  The results equal the host model's. */
TEST(model_mem_fakedev) {
    const struct ds_ops *fd = ds_backend_get("fakedev");
    CHECK(fd != NULL && fd->host_visible == 0);
    TEST_RETURN_IF_FAILED();
    ds_fakedev_pair fp;
    CHECK(ds_fakedev_pair_create(&fp, fd, 9, 2, 8) == 0);
    TEST_RETURN_IF_FAILED();
    const int64_t B = 2, T = 8, N = B * T, V = fp.c.vocab_size;
    int32_t ids[16];
    for (int64_t i = 0; i < N; i++) ids[i] = (int32_t)((i * 104729 + 7) % V);
    CHECK(ds_model_forward(&fp.h, &fp.ah, &ds_ops_cpu, ids) == 0 && ds_model_forward(&fp.d, &fp.ad, fd, ids) == 0);
    float *lg = malloc((size_t)(N * V) * sizeof(float)), *gg = malloc((size_t)fp.gh.n * sizeof(float));
    fd->copy_d2h(lg, fp.ad.logits, (size_t)(N * V) * sizeof(float));
    CHECK(same(lg, fp.ah.logits, (size_t)(N * V) * sizeof(float)));
    ds_loss_opts o = ds_loss_opts_default();
    o.mtp_lambda = 0.5;
    CHECK(ds_loss_opts_parse_balance(&o, "v2:0.003,0.05,0.02") == 0);
    ds_loss_terms th, td;
    CHECK(ds_model_backward(&fp.h, &fp.ah, &ds_ops_cpu, &fp.gh, &fp.wh, NULL, &o, &th) == 0);
    CHECK(ds_model_backward(&fp.d, &fp.ad, fd, &fp.gd, &fp.wd, NULL, &o, &td) == 0);
    CHECK(th.loss == td.loss && th.bal_comm > 0);
    fd->copy_d2h(gg, fp.gd.g, (size_t)fp.gh.n * sizeof(float));
    CHECK(same(gg, fp.gh.g, (size_t)fp.gh.n * sizeof(float)));
    CHECK(ds_grads_check_finite(&fp.gd, &fp.d, fd) == NULL);
    char p1[600], p2[600];
    snprintf(p1, sizeof p1, "%s/fh", ds_test_tmpdir());
    snprintf(p2, sizeof p2, "%s/fd", ds_test_tmpdir());
    CHECK(ds_model_save(&fp.h, p1) == 0 && ds_model_save(&fp.d, p2) == 0);
    strcat(p1, "/model.safetensors"), strcat(p2, "/model.safetensors");
    CHECK(files_equal(p1, p2));
    /* the given targets path too (copied in from the host) */
    int32_t tg[16];
    for (int64_t i = 0; i < N; i++) tg[i] = i % 5 == 4 ? DS_IGNORE_INDEX : ids[(i + 3) % N];
    ds_grads_zero(&fp.gh), ds_grads_zero(&fp.gd);
    CHECK(ds_model_backward(&fp.h, &fp.ah, &ds_ops_cpu, &fp.gh, &fp.wh, tg, &o, &th) == 0);
    CHECK(ds_model_backward(&fp.d, &fp.ad, fd, &fp.gd, &fp.wd, tg, &o, &td) == 0);
    fd->copy_d2h(gg, fp.gd.g, (size_t)fp.gh.n * sizeof(float));
    CHECK(th.loss == td.loss && same(gg, fp.gh.g, (size_t)fp.gh.n * sizeof(float)));
    free(lg), free(gg);
    ds_bwd_free(&fp.wh), ds_bwd_free(&fp.wd), ds_grads_free(&fp.gh), ds_grads_free(&fp.gd);
    ds_acts_free(&fp.ah), ds_acts_free(&fp.ad);
    ds_model_free(&fp.h), ds_model_free(&fp.d);
}
