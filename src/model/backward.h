/*
 * backward.h — gradients of a DeepSeek-V3 model: the gradient buffer (one
 * allocation mirroring the parameter layout), the training losses and the
 * backward pass of the main model and the MTP modules.
 *
 * Losses (tests/fixtures/model/README.md, docs/deepseek-v3.md §5-§7):
 *   CE      mean over the counted targets of −log softmax(logits_t)[y_t]
 *           (position t of a sequence predicts y_t = ids[t+1]; the last
 *           position and targets equal to `ignore` are not counted);
 *   MTP     (λ/D) Σ_k CE_k, CE_k the mean over depth k's counted targets
 *           (position i of module k predicts y_{i+k});
 *   balance per main-model MoE layer and sequence (every position counts),
 *           averaged over the sequences, summed over layers:
 *           seq  α Σ_i f_i P_i (V3 complementary sequence-wise loss, s' =
 *                normalised affinities);
 *           v2   α1 Σ_i f_i P_i + α2 Σ_d f'_d P'_d + α3 Σ_d f''_d P''_d with
 *                devices = the n_group expert groups and M = topk_group.
 * Gradient accumulation: every parameter gradient is added (+=) to the
 * buffer, so micro-batches accumulate; the means use the given global
 * denominators (ce_denom, mtp_denom, seq_denom) when set, which makes A
 * micro-batches of B/A sequences the same sum as one batch of B (equal to
 * float rounding: the terms are added in another order).
 */
#ifndef DS_BACKWARD_H
#define DS_BACKWARD_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#define DS_IGNORE_INDEX (-100)
#define DS_MAX_MTP 16
#define DS_MAX_BAL_LAYERS 128

typedef struct {
    float *g;             /* layout.total floats, same offsets as ds_model.params */
    int64_t n;
    const struct ds_ops *mem; /* the model's: where g lives (NULL: host) */
} ds_grads;

int ds_grads_create(ds_grads *g, const ds_model *m);
void ds_grads_free(ds_grads *g);
void ds_grads_zero(ds_grads *g);
/* Gradient of a parameter pointer of m (NULL stays NULL). */
static inline float *ds_grad_of(const ds_grads *g, const ds_model *m, const float *param) {
    return param ? g->g + (param - m->params) : NULL;
}
/* Name of the first parameter whose gradient holds a NaN or Inf (layout
 * order, aliases and buffers skipped), or NULL when all are finite: one
 * ops->sumsq per tensor (non-finite iff an element is).  The trainer calls it
 * only to name the tensor once the global sumsq came out non-finite. */
const char *ds_grads_check_finite(const ds_grads *g, const ds_model *m, const struct ds_ops *ops);

enum { DS_BAL_NONE = 0, DS_BAL_SEQ = 1, DS_BAL_V2 = 2 };

typedef struct {
    int32_t ignore;          /* ignore id of the targets (DS_IGNORE_INDEX) */
    double mtp_lambda;       /* 0: no MTP loss */
    int balance;             /* DS_BAL_* */
    double alpha;            /* DS_BAL_SEQ */
    double a1, a2, a3;       /* DS_BAL_V2 */
    /* global denominators for gradient accumulation; 0 = this batch's own */
    double ce_denom;         /* counted CE targets */
    double mtp_denom[DS_MAX_MTP]; /* counted targets of MTP depth k (index k-1) */
    double seq_denom;        /* sequences (balance losses) */
} ds_loss_opts;

ds_loss_opts ds_loss_opts_default(void);
/* "seq:ALPHA" or "v2:A1,A2,A3" (weights >= 0) into o->balance and the
 * weights; "none" clears it.  0 or -1 with ds_err naming the problem. */
int ds_loss_opts_parse_balance(ds_loss_opts *o, const char *spec);

typedef struct {
    double loss;                  /* total that was differentiated */
    double ce;                    /* main-model CE */
    int64_t ce_count;             /* counted targets */
    double mtp;                   /* λ/D Σ_k CE_k */
    double mtp_ce[DS_MAX_MTP];    /* CE_k (before λ/D) */
    int64_t mtp_count[DS_MAX_MTP];
    double bal;                   /* Σ of the balance terms (after α) */
    double bal_expert, bal_device, bal_comm; /* after α (seq: expert only) */
    double bal_layer[DS_MAX_BAL_LAYERS]; /* per main layer (after α; first DS_MAX_BAL_LAYERS layers) */
} ds_loss_terms;

/* Scratch of the backward pass, allocated once for (model, B, T). */
typedef struct {
    int64_t B, T;
    const struct ds_ops *mem;    /* the model's: where the arena lives (NULL: host) */
    float *arena;
    size_t arena_floats;
    /* main stream */
    float *dlogits;              /* (B,T,V), reused for the MTP logits */
    float *dx, *dx2;             /* (B,T,H) residual stream gradients */
    float **dh;                  /* D+1 x (B,T,H): gradient of h^k (h^0 = final norm output) */
    /* one block (reused) */
    float *dln1, *dqa, *dqa_n, *dq, *dkva, *dckv, *dkv, *dk, *dv, *datt;
    float *dxmid, *dln2, *dh_gate, *dh_up, *dh_act, *dtmp;
    float *dscores, *dr_logits, *dw;
    float *dxs, *de_gate, *de_up, *de_act, *de_out;
    float *coef;                 /* (E) */
    uint8_t *sel;                /* (T, E) */
    int32_t *targets;            /* (B,T) */
    int32_t *mtp_targets;        /* (B,T) */
    float *dm_cat;               /* (B,T,2H) */
    float *row_loss;             /* (B,T) per-token CE losses */
    float **expert_grads;        /* [host] 3E: the gradients of one MoE layer's gate, up, down experts */
    int32_t *targets_h;          /* [host] (B,T) the targets */
    int32_t *ids_h;              /* [host] (B,T) the ids, then an MTP depth's targets (staging) */
} ds_bwd;

int ds_bwd_create(ds_bwd *w, const ds_model *m, int64_t B, int64_t T);
void ds_bwd_free(ds_bwd *w);

/* Default targets: targets[b,t] = ids[b,t+1], targets[b,T-1] = ignore. */
void ds_targets_from_ids(int32_t *targets, const int32_t *ids, int64_t B, int64_t T, int32_t ignore);

/* Number of counted targets of depth k (0 = main model: positions 0..T-1;
 * depth k: position i < T-k uses targets[b, i+k]). */
int64_t ds_count_targets(const int32_t *targets, int64_t B, int64_t T, int64_t k, int32_t ignore);

/* Losses and backward after ds_model_forward(m, a, ...) on the same batch,
 * through the backward entries of ops (the run's table, backend/backend.h).
 * targets (B,T) or NULL (= ds_targets_from_ids).  The MTP loss needs acts
 * created with mtp = 1 (mtp_lambda > 0 otherwise is an error).  Adds every
 * parameter's gradient into g; writes the loss terms.  A batch with no
 * counted target has CE 0 and contributes no CE gradient (a warning is
 * logged).  Returns 0 or -1 with ds_err (bad targets, bad options). */
int ds_model_backward(const ds_model *m, ds_acts *a, const struct ds_ops *ops, ds_grads *g, ds_bwd *w,
                      const int32_t *targets,                      const ds_loss_opts *o, ds_loss_terms *terms);

/* The backward of a pipeline stage (a from ds_acts_create_stage, forward by
 * ds_model_forward_stage): the last stage (a->l1 = L) starts from the losses
 * (targets, o as above; dout NULL), the others from dout (B, T, H) [host],
 * the gradient of their output.  The first stage (a->l0 = 0) ends in the
 * embedding's gradient; the others write the gradient of their input into
 * dinp (B, T, H) [host].  Gradients of the stage's parameters accumulate
 * into g; t gets the stage's loss terms (CE, MTP on the last stage, the
 * balance terms of its layers).  0 or -1 with ds_err. */
int ds_model_backward_stage(const ds_model *m, ds_acts *a, const struct ds_ops *ops, ds_grads *g, ds_bwd *w,
                            const int32_t *targets, const ds_loss_opts *o, ds_loss_terms *t, const float *dout,
                            float *dinp);

/* Write `loss`, the loss terms and `grad.<HF name>` for every trained
 * parameter (no aliases, no buffers; MTP parameters only when mtp) as F32
 * safetensors. */
int ds_grads_write(const char *path, const ds_model *m, const ds_grads *g, const ds_loss_terms *t, int mtp,
                   int balance);

#endif
