/*
 * test_eval_ops.c — the model binding scores through its ops table
 * (eval/lm_model.c, eval/lm_logits.c; docs/engine.md §2.6): under the fakedev
 * table (backend/fakedev.c: its memory PROT_NONE outside its entries) the
 * logits stay in device memory and the log-softmax runs in the table's
 * token_logprobs entry; a direct host read of the arena would fault.  Oracle:
 * the same requests through the host ("cpu") binding, bit for bit (the fakedev
 * entries are the cpu kernels).
 */
#include "test.h"
#include "backend/backend.h"
#include "base/base.h"
#include "eval/lm.h"
#include "model/model.h"

#include <stdio.h>
#include <string.h>

#define FIX "tests/fixtures/eval/model"

TEST(eval_loglik_through_fakedev_table) {
    FILE *f = fopen(FIX "/config.json", "r");
    if (!f) SKIP(FIX " not found");
    fclose(f);
    const struct ds_ops *fd = ds_backend_get("fakedev");
    CHECK(fd != NULL && fd->host_visible == 0);
    TEST_RETURN_IF_FAILED();
    ds_lm h, d;
    ds_load_opts o = {.mem = fd};
    CHECK(ds_lm_from_model_dir_ex(&h, FIX, NULL, 128, NULL, NULL) == 0);
    CHECK(ds_lm_from_model_dir_ex(&d, FIX, NULL, 128, &o, fd) == 0);
    TEST_RETURN_IF_FAILED();
    enum { NR = 4 };
    static const int64_t nctx[NR] = {5, 5, 12, 1}, ncont[NR] = {3, 6, 2, 4};
    int32_t ids[NR][24];
    ds_rng rng;
    ds_rng_seed(&rng, 11);
    ds_lm_request a[NR], b[NR];
    float lpa[NR][8], lpb[NR][8];
    uint8_t ga[NR][8], gb[NR][8];
    for (int r = 0; r < NR; r++) {
        for (int i = 0; i < 24; i++) ids[r][i] = (int32_t)(ds_rng_u64(&rng) % 500);
        a[r] = (ds_lm_request){ids[r], nctx[r], ids[r] + nctx[r], ncont[r], lpa[r], ga[r]};
        b[r] = (ds_lm_request){ids[r], nctx[r], ids[r] + nctx[r], ncont[r], lpb[r], gb[r]};
    }
    CHECK(h.loglik(h.ctx, a, NR) == 0);
    CHECK(d.loglik(d.ctx, b, NR) == 0);
    for (int r = 0; r < NR; r++) {
        CHECK_MSG(!memcmp(lpa[r], lpb[r], (size_t)ncont[r] * sizeof(float)), "request %d: log-probs differ", r);
        CHECK_MSG(!memcmp(ga[r], gb[r], (size_t)ncont[r]), "request %d: greedy flags differ", r);
    }
    /* a bad token id: the host check names it before the entry runs */
    int32_t bad[3] = {1, 2, 100000};
    ds_lm_request q = {bad, 2, bad + 2, 1, lpb[0], gb[0]};
    CHECK(d.loglik(d.ctx, &q, 1) != 0 && strstr(ds_errmsg(), "100000"));
    h.free(h.ctx);
    d.free(d.ctx);
}
