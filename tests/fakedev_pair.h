/*
 * fakedev_pair.h — one tiny MoE+MTP model twice, for the tests that compare a
 * run on the fakedev table (memory the host cannot touch) with the host run:
 * layer 0 dense, 1-2 MoE, then the MTP module; vocabulary 512 (few pages:
 * every fakedev entry call re-protects them all).  h on host memory, d on fd;
 * both initialised from `seed`; activations, gradients and backward buffers
 * for (B, T) with MTP.  0, or -1 when any step fails.
 */
#ifndef DS_TEST_FAKEDEV_PAIR_H
#define DS_TEST_FAKEDEV_PAIR_H

#include "backend/ops.h"
#include "model/backward.h"
#include "model/presets.h"

typedef struct {
    ds_config c;
    ds_model h, d;
    ds_acts ah, ad;
    ds_grads gh, gd;
    ds_bwd wh, wd;
} ds_fakedev_pair;

static inline int ds_fakedev_pair_create(ds_fakedev_pair *p, const struct ds_ops *fd, uint64_t seed, int64_t B,
                                         int64_t T) {
    if (ds_preset(&p->c, "tiny")) return -1;
    p->c.num_hidden_layers = 3;
    p->c.vocab_size = 512;
    p->c.bos_token_id = 1, p->c.eos_token_ids[0] = 2;
    if (ds_config_validate(&p->c, "tiny")) return -1;
    if (ds_model_create(&p->h, &p->c) || ds_model_create_on(&p->d, &p->c, NULL, fd)) return -1;
    ds_model_init_random(&p->h, seed);
    ds_model_init_random(&p->d, seed);
    if (ds_acts_create(&p->ah, &p->h, B, T, 1) || ds_acts_create(&p->ad, &p->d, B, T, 1)) return -1;
    if (ds_grads_create(&p->gh, &p->h) || ds_grads_create(&p->gd, &p->d)) return -1;
    if (ds_bwd_create(&p->wh, &p->h, B, T) || ds_bwd_create(&p->wd, &p->d, B, T)) return -1;
    return 0;
}

#endif
