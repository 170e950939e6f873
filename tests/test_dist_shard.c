/*
 * test_dist_shard.c — the expert shard of a model (model/expert_shard.h):
 * what a rank of an expert-parallel group keeps, counted independently from
 * the layout's entries, and the copies between shard and whole-model
 * vectors.  The multi-process runs are in test_dist.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/config.h"
#include "model/expert_shard.h"
#include "model/model.h"
#include "model/presets.h"
#include "test.h"

/* floats of the routed experts in a whole layout (padded to 16, like every entry) */
static int64_t expert_floats(const ds_layout *lo) {
    int64_t x = 0;
    for (int64_t i = 0; i < lo->n; i++)
        if (strstr(lo->p[i].name, ".mlp.experts.")) x += (lo->p[i].numel + 15) / 16 * 16;
    return x;
}

/* tiny at EP 2 and 4, every group rank: the shard holds the replicated
 * floats and 1/E of the expert floats; its tensors hold the whole model's
 * values, and so does a shard created and initialized alone; the other
 * shards' experts have no pointer; a shard vector copied
 * into a whole-model vector lands on the same elements */
TEST(ep_shard_keeps_own_experts) {
    ds_config c;
    CHECK(ds_preset(&c, "tiny") == 0);
    ds_model full;
    CHECK(ds_model_create(&full, &c) == 0);
    TEST_RETURN_IF_FAILED();
    ds_model_init_random(&full, 11);
    const int64_t F = full.layout.total, X = expert_floats(&full.layout), E = c.n_routed_experts;
    CHECK(X > 0 && E % 4 == 0);
    float *back = ds_malloc((size_t)F * sizeof(float));
    for (int ep = 2; ep <= 4; ep += 2)
        for (int r = 0; r < ep; r++) {
            ds_model m;
            CHECK(ds_model_create(&m, &c) == 0);
            TEST_RETURN_IF_FAILED();
            memcpy(m.params, full.params, (size_t)F * sizeof(float));
            CHECK(ds_model_shard(&m, ep, r) == 0);
            CHECK_MSG(m.layout.total == F - X + X / ep && m.layout.rep == F - X,
                      "ep %d rank %d: %lld floats (rep %lld), expected %lld (rep %lld)", ep, r, (long long)m.layout.total,
                      (long long)m.layout.rep, (long long)(F - X + X / ep), (long long)(F - X));
            for (int64_t i = 0; i < m.layout.n; i++) {
                const ds_param *p = &m.layout.p[i], *q = &full.layout.p[i];
                CHECK(!strcmp(p->name, q->name));
                const char *ex = strstr(p->name, ".mlp.experts.");
                int64_t e = ex ? atoll(ex + 13) : -1;
                int local = e < 0 || (e >= r * E / ep && e < (r + 1) * E / ep);
                if (!local) CHECK_MSG(p->offset < 0 && (p->flags & DS_PARAM_REMOTE), "%s kept by rank %d", p->name, r);
                else CHECK_MSG(p->offset >= 0 && !memcmp(m.params + p->offset, full.params + q->offset,
                                                          (size_t)p->numel * sizeof(float)), "%s differs", p->name);
            }
            for (int64_t l = 0; l < m.nblocks; l++) {
                if (!m.blocks[l].moe) continue;
                for (int64_t e = 0; e < E; e++) {
                    int local = e >= r * E / ep && e < (r + 1) * E / ep;
                    CHECK(local ? m.blocks[l].eg[e] && m.blocks[l].ed[e] : !m.blocks[l].eu[e]);
                }
                CHECK(!memcmp(m.blocks[l].router, full.blocks[l].router, (size_t)(E * c.hidden_size) * sizeof(float)));
            }
            /* created as a shard and initialized: the same floats */
            ds_model cs;
            CHECK(ds_model_create_shard(&cs, &c, ep, r) == 0);
            TEST_RETURN_IF_FAILED();
            ds_model_init_random(&cs, 11);
            CHECK_MSG(cs.layout.total == m.layout.total &&
                      !memcmp(cs.params, m.params, (size_t)m.layout.total * sizeof(float)),
                      "ep %d rank %d: ds_model_create_shard + init differs from the whole model's shard", ep, r);
            ds_model_free(&cs);
            memset(back, 0, (size_t)F * sizeof(float));
            ds_shard_copy(&full.layout, &m.layout, m.params, back, 0, m.layout.total, 4, 1);
            for (int64_t i = 0; i < full.layout.n; i++) {
                const ds_param *q = &full.layout.p[i];
                if (q->flags & DS_PARAM_ALIAS) continue;
                int remote = (m.layout.p[i].flags & DS_PARAM_REMOTE) != 0;
                for (int64_t k = 0; k < q->numel; k++)
                    if (back[q->offset + k] != (remote ? 0.0f : full.params[q->offset + k])) {
                        CHECK_MSG(0, "ep %d rank %d: %s[%lld] copied back wrong", ep, r, q->name, (long long)k);
                        break;
                    }
            }
            ds_model_free(&m);
        }
    free(back);
    ds_model_free(&full);
}
