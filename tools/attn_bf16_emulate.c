/*
 * attn_bf16_emulate.c — how far BF16 attention moves BF16 training, on the CPU
 * (docs/gpu.md, Speed item 5: the tensor-core attention of the BF16 and FP8
 * tables on the GPU).
 *
 * Trains `tiny` for 150 steps (B=4, T=64, TinyShakespeare bytes as token ids,
 * AdamW at a constant lr, 3e-3 or EMU_LR, clip 1.0) with the CPU's BF16 table
 * twice per seed (7, 8, ...): as it is (FP32 attention), and with q, k, v (and
 * dout in the backward) rounded before its attention entries, as the
 * tensor-core kernels round them to BF16 (P and dS are not rounded here);
 * `fp16` rounds to FP16 instead (after a power-of-two scaling), `bitsN` keeps
 * N mantissa bits of FP32: a control, a perturbation of that size alone.
 * Prints each seed's last-10 train loss and a validation loss (8 batches from
 * the last tenth), and the gaps of the seed means.  Measured 2026-12-06
 * (train / val gaps of the seed means):
 *   lr 3e-3, 3 seeds:  bf16 0.303% / 0.246%   bits22 0.207% / 0.064%   bits20 0.482% / 0.277%
 *   lr 3e-3, 12 seeds: bf16 0.100% / 0.127%   bits22 0.299% / 0.327%   fp16 0.092% / 0.179%
 *   lr 1e-3, 12 seeds: bf16 0.047% / 0.041%   bits22 0.066% / 0.019%   fp16 0.057% / 0.037%
 *   lr 3e-4, 6 seeds:  bf16 0.009% / 0.005%   bits22 0.011% / 0.000%
 * BF16 attention moves the run no further than rounding away FP32's last
 * bit does: at 3e-3 the run is chaotic and either lands near the 0.25% bound.
 *
 *   make && gcc -O1 -fopenmp -Isrc tools/attn_bf16_emulate.c build/libdsv3.a \
 *       $(make -s print-ldlibs | tail -1) -lm -o /tmp/attn_bf16_emulate
 *   [EMU_LR=1e-3] /tmp/attn_bf16_emulate [../shared/data/tinyshakespeare/input.txt] [bf16|fp16|bitsN] [seeds (3)]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/base.h"
#include "model/backward.h"
#include "model/config.h"
#include "model/model.h"
#include "num/dtype.h"
#include "train/adamw.h"
#include "train/optim.h"

int ds_preset(ds_config *c, const char *name);

static struct ds_ops base;
static unsigned char *text;
static long ntext;

/* how q, k, v, dout are rounded before the attention entries: BF16 (the
 * tensor-core kernels), FP16 (10 mantissa bits; the tensor scaled by a power
 * of two first so that its largest magnitude lands in [2^14, 2^15), then
 * scaled back), or FP32 with the mantissa rounded to `bits` (a control: how
 * far a rounding of that size alone moves the run) */
enum { MODE_BF16, MODE_FP16, MODE_BITS };
static int mode = MODE_BF16, bits = 16;
static float round_bits(float x, int keep) {
    uint32_t u;
    memcpy(&u, &x, 4);
    int drop = 23 - keep;
    uint32_t half = 1u << (drop - 1), mask = (1u << drop) - 1;
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u = (u + half - 1 + ((u >> drop) & 1)) & ~mask; /* to nearest, ties to even */
    memcpy(&x, &u, 4);
    return x;
}
static float *rounded(const float *x, int64_t n) {
    float *y = ds_malloc((size_t)n * sizeof(float));
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    int e = 0;
    if (amax > 0) frexpf(amax, &e); /* amax in [2^(e-1), 2^e) */
    float up = ldexpf(1.0f, 15 - e), down = ldexpf(1.0f, e - 15);
    for (int64_t i = 0; i < n; i++)
        y[i] = mode == MODE_BF16   ? ds_bf16_to_f32(ds_f32_to_bf16(x[i]))
               : mode == MODE_FP16 ? ds_f16_to_f32(ds_f32_to_f16(x[i] * up)) * down
                                   : round_bits(x[i], bits);
    return y;
}
static void fwd_bf16(float *out, float *lse, const float *q, const float *k, const float *v, int64_t B, int64_t T,
                     int64_t NH, int64_t DQ, int64_t DV, float scale) {
    int64_t nq = B * T * NH * DQ, nv = B * T * NH * DV;
    float *qr = rounded(q, nq), *kr = rounded(k, nq), *vr = rounded(v, nv);
    base.attention_forward(out, lse, qr, kr, vr, B, T, NH, DQ, DV, scale);
    free(qr), free(kr), free(vr);
}
static void bwd_bf16(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
                     const float *q, const float *k, const float *v, int64_t B, int64_t T, int64_t NH, int64_t DQ,
                     int64_t DV, float scale) {
    int64_t nq = B * T * NH * DQ, nv = B * T * NH * DV;
    float *qr = rounded(q, nq), *kr = rounded(k, nq), *vr = rounded(v, nv), *dr = rounded(dout, nv);
    base.attention_backward(dq, dk, dv, dr, out, lse, qr, kr, vr, B, T, NH, DQ, DV, scale);
    free(qr), free(kr), free(vr), free(dr);
}

enum { B = 4, T = 64, STEPS = 150 };
static void batch(int32_t *ids, ds_rng *r, long lo, long hi) {
    for (int b = 0; b < B; b++) {
        long off = lo + (long)ds_rng_below(r, (uint64_t)(hi - lo - T - 1));
        for (int i = 0; i < T; i++) ids[b * T + i] = text[off + i];
    }
}
/* the last-10 train loss mean; *val the validation loss */
static double train(const struct ds_ops *ops, int seed, double *val) {
    ds_config c;
    ds_preset(&c, "tiny");
    ds_model m;
    ds_acts a;
    ds_grads g;
    ds_bwd w;
    if (ds_model_create_on(&m, &c, NULL, NULL) || ds_acts_create(&a, &m, B, T, 1) || ds_grads_create(&g, &m) ||
        ds_bwd_create(&w, &m, B, T))
        exit(1);
    ds_model_init_random(&m, (uint64_t)seed);
    float *mom = calloc((size_t)g.n, 4), *vel = calloc((size_t)g.n, 4);
    ds_loss_opts o = ds_loss_opts_default();
    ds_loss_terms t;
    ds_adamw_hparams h = ds_adamw_default(getenv("EMU_LR") ? atof(getenv("EMU_LR")) : 3e-3);
    ds_rng r;
    ds_rng_seed(&r, (uint64_t)(100 + seed));
    int32_t ids[B * T];
    long split = ntext * 9 / 10;
    double last = 0;
    for (int s = 0; s < STEPS; s++) {
        batch(ids, &r, 0, split);
        ds_grads_zero(&g);
        ds_model_forward(&m, &a, ops, ids);
        ds_model_backward(&m, &a, ops, &g, &w, NULL, &o, &t);
        ds_model_adamw_step(ops, &m, &g, mom, vel, 0, s + 1, &h, ds_clip_coef(sqrt(ops->sumsq(g.g, g.n)), 1.0), 0);
        if (s >= STEPS - 10) last += t.loss / 10;
    }
    ds_rng vr;
    ds_rng_seed(&vr, 7);
    *val = 0;
    for (int k = 0; k < 8; k++) {
        batch(ids, &vr, split, ntext);
        ds_model_forward(&m, &a, ops, ids);
        ds_model_backward(&m, &a, ops, &g, &w, NULL, &o, &t);
        *val += t.loss / 8;
    }
    free(mom), free(vel);
    ds_bwd_free(&w), ds_grads_free(&g), ds_acts_free(&a), ds_model_free(&m);
    return last;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "../shared/data/tinyshakespeare/input.txt";
    const char *how = argc > 2 ? argv[2] : "bf16";
    if (!strcmp(how, "fp16")) mode = MODE_FP16;
    else if (!strncmp(how, "bits", 4) && atoi(how + 4) >= 8 && atoi(how + 4) <= 22) mode = MODE_BITS, bits = atoi(how + 4);
    else if (strcmp(how, "bf16")) return fprintf(stderr, "attn_bf16_emulate: rounding %s: bf16, fp16 or bitsN (8..22)\n", how), 2;
    FILE *f = fopen(path, "rb");
    if (!f) return fprintf(stderr, "attn_bf16_emulate: cannot open %s\n", path), 2;
    fseek(f, 0, SEEK_END);
    ntext = ftell(f);
    rewind(f);
    text = malloc((size_t)ntext);
    if (fread(text, 1, (size_t)ntext, f) != (size_t)ntext) return fprintf(stderr, "attn_bf16_emulate: short read\n"), 2;
    fclose(f);
    if (ds_backend_table(&base, "cpu", DS_PREC_BF16)) return 1;
    struct ds_ops mod = base;
    mod.attention_forward = fwd_bf16, mod.attention_backward = bwd_bf16;
    const int nseed = argc > 3 ? atoi(argv[3]) : 3;
    if (nseed < 1 || nseed > 64) return fprintf(stderr, "attn_bf16_emulate: seeds %s: 1..64\n", argv[3]), 2;
    double ta = 0, tb = 0, va = 0, vb = 0;
    for (int seed = 7; seed < 7 + nseed; seed++) {
        double v1, v2, l1 = train(&base, seed, &v1), l2 = train(&mod, seed, &v2);
        printf("seed %d: train %.5f vs %.5f, val %.5f vs %.5f (%.3f%%)\n", seed, l1, l2, v1, v2,
               100 * fabs(v2 - v1) / v1);
        ta += l1 / nseed, tb += l2 / nseed, va += v1 / nseed, vb += v2 / nseed;
    }
    printf("%s: seed means: train %.3f%%, val %.3f%% apart\n", how, 100 * fabs(tb - ta) / ta, 100 * fabs(vb - va) / va);
    return 0;
}
