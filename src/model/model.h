/*
 * model.h — a DeepSeek-V3 model in FP32 on CPU: parameters (one allocation,
 * carved by the layout table), the activation arena (one allocation sized
 * from (config, B, T) before the forward), and the forward pass of doc §2
 * (main model) and §7 (MTP modules).  The model calls kernels only through
 * a `struct ds_ops` (backend/ops.h).
 *
 * Forward semantics (parity target: transformers' DeepseekV3ForCausalLM /
 * DeepseekV2ForCausalLM in FP32, eager attention):
 *   x = Emb(ids); per layer: x += MLA(RMSNorm(x)); x += MLP|MoE(RMSNorm(x));
 *   h = RMSNorm(x); logits = h·lm_headᵀ.
 *   MTP module k = 1..D (tests/fixtures/model/README.md):
 *     x_i = eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h^{k-1}_i)]), i < T-k,
 *     h^k = Block_{L+k-1}(x) (causal, positions 0..T-k-1), h^0 = h,
 *     mtp_logits^k_i = shared_head.head(shared_head.norm(h^k_i)) predicts t_{i+k+1}.
 */
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend/ops.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/layout.h"

/* Parameter pointers of one decoder block (shapes: doc §3). */
typedef struct {
    int64_t layer;
    int moe;
    float *in_norm, *post_norm;              /* (H) */
    float *q_a, *q_a_bias, *q_a_norm, *q_b;  /* (rq,H), (rq), (rq), (nh*dq,rq); NULL without q_lora */
    float *q_proj;                           /* (nh*dq, H) without q_lora */
    float *kv_a, *kv_a_bias, *kv_a_norm;     /* (rkv+dr, H), (rkv+dr), (rkv) */
    float *kv_b;                             /* (nh*(dn+dv), rkv) */
    float *o_proj, *o_bias;                  /* (H, nh*dv), (H) */
    float *gate, *up, *down;                 /* dense MLP or shared experts: (Is,H),(Is,H),(H,Is) */
    int64_t inter;                           /* Is (0: no shared experts) */
    float *router, *router_bias;             /* (E, H), (E) or NULL */
    float **eg, **eu, **ed;                  /* routed expert e: (Im,H), (Im,H), (H,Im) */
    /* MTP module only */
    float *enorm, *hnorm, *eh_proj, *head_norm; /* (H), (H), (H, 2H), (H) */
    /* FP8-resident linears (model loaded with fp8_resident): the same
     * weights as E4M3 codes + 128x128 scales, NULL where FP32.  Where one is
     * set the FP32 pointer above is NULL, except kv_b (kept in FP32 too for
     * the decode engine's absorbed MLA). */
    const ds_fp8w *q_a8, *q_b8, *q_proj8, *kv_a8, *kv_b8, *o_proj8, *gate8, *up8, *down8;
    const ds_fp8w **eg8, **eu8, **ed8;       /* routed experts (E) or NULL */
    /* BF16-resident (b16 set) where the checkpoint stores them in BF16; the
     * linears above may be BF16-resident too (same descriptor, b16 set) */
    const ds_fp8w *router8, *eh_proj8;
} ds_block;

typedef struct {
    ds_config cfg;
    ds_layout layout;
    /* the table whose memory holds the weights (params, codes, scales, BF16
     * weights) and, after them, the arenas and gradients made for this model;
     * NULL: host memory (ds_aligned_alloc) */
    const struct ds_ops *mem;
    float *params;          /* layout.total floats */
    float *embed;           /* (V, H) */
    float *norm;            /* (H) */
    float *lm_head;         /* (V, H) (= embed when tied) */
    ds_block *blocks;       /* L main blocks, then D MTP modules */
    int64_t nblocks;
    float **expert_ptrs;    /* storage behind blocks[].eg/eu/ed */
    float *inv_freq;        /* (dr/2) YaRN-corrected inverse frequencies */
    float attn_factor;      /* multiplies cos and sin */
    float softmax_scale;    /* dq^-1/2 · mscale² */
    /* FP8-resident weights (ds_model_load_ex with fp8_resident; all NULL/0
     * otherwise): E4M3 codes and FP32 block scales of the layout entries
     * flagged DS_PARAM_FP8, one allocation each; fp8w (layout.n) describes
     * them (.q NULL for other entries); expert_fp8 backs blocks[].eg8/eu8/ed8. */
    uint8_t *fp8_codes;
    float *fp8_scales;
    int64_t fp8_numel, fp8_scale_numel;
    ds_fp8w *fp8w;
    const ds_fp8w **expert_fp8;
    /* BF16-resident weights (same load mode): the entries flagged
     * DS_PARAM_BF16, one allocation of bf16_numel u16, described by fp8w[i].b16.
     * embed8 / lm_head8 are set when the embedding / head is BF16-resident
     * (embed / lm_head are then NULL; a tied head shares the table). */
    uint16_t *bf16_w;
    int64_t bf16_numel;
    const ds_fp8w *embed8, *lm_head8;
    /* expert parallelism (model/moe_ep.h) while a training step runs, else NULL */
    struct ds_moe_ep *ep;
} ds_model;

/* Allocate a model for a validated config (parameters zero).  0 or -1. */
int ds_model_create(ds_model *m, const ds_config *c);
void ds_model_free(ds_model *m);
/* HF init: linears, embeddings, router ~ N(0, initializer_range), norms 1,
 * biases 0. */
void ds_model_init_random(ds_model *m, uint64_t seed);
/* Load config.json + safetensors from a model folder.  FP8 (F8_E4M3 with
 * `<name>_scale_inv`), BF16 and F16 tensors are converted to FP32.  Errors
 * name the file, the tensor and the expected/actual shape; a weight holding
 * NaN or infinity is an error too (see ds_load_opts.allow_nonfinite). */
int ds_model_load(ds_model *m, const char *dir);

typedef struct ds_load_opts {
    /* resident load: keep F8_E4M3 linear weights (attention q_a/q_b/q/kv_a/
     * kv_b/o, dense, shared and routed expert gate/up/down) in FP8: codes +
     * the checkpoint's 128x128 weight_scale_inv; and keep the 2-D matmul
     * weights stored in BF16 (those linears, the router gate.weight,
     * embed_tokens, lm_head, MTP eh_proj) in BF16.  They own no FP32 storage
     * (kv_b also gets an FP32 copy for the absorbed MLA).  Other F8 tensors
     * are dequantized, F16 and F32 ones stay FP32, norms and biases FP32.
     * Such a model runs forward and decode only (backward, save refuse). */
    int fp8_resident;
    /* load weights holding NaN or infinity (by default, and unless
     * $DSV3_ALLOW_NONFINITE is set to something other than 0, such a tensor
     * is an error naming it and its first bad element) */
    int allow_nonfinite;
    /* the table whose memory the weights go to (ds_model_to after the load
     * on the host); NULL: host memory */
    const struct ds_ops *mem;
    /* ep_size > 1: load only shard ep_rank of the routed experts
     * (model/expert_shard.h; ds_model_create_shard); FP32 only */
    int ep_size, ep_rank;
    /* a pipeline stage's part only (model/expert_shard.h ds_stage_keep; its
     * experts split over ep_size >= 1); NULL: the whole model */
    const struct ds_stage_keep_s *stage;
} ds_load_opts;
int ds_model_load_ex(ds_model *m, const char *dir, const ds_load_opts *o);
/* Values of ds_model_create_ex's per-entry residency array. */
enum { DS_RESIDENT_F32 = 0, DS_RESIDENT_FP8 = 1, DS_RESIDENT_BF16 = 2 };
/* Allocate a model whose 2-D layout entries with res[i] = DS_RESIDENT_FP8 /
 * DS_RESIDENT_BF16 are FP8- / BF16-resident (as ds_model_create otherwise;
 * codes, scales and BF16 weights zero). */
int ds_model_create_ex(ds_model *m, const ds_config *c, const uint8_t *res);
/* The same with the weights in the memory of table mem (its alloc; NULL: host
 * memory); the model's arenas, gradients and backward buffers follow it. */
int ds_model_create_on(ds_model *m, const ds_config *c, const uint8_t *res, const struct ds_ops *mem);
/* Allocate shard ep_rank of ep_size of a model (model/expert_shard.h: the
 * replicated tensors and this shard's routed experts; FP32, host memory;
 * parameters zero).  ds_model_init_random then gives each kept tensor the
 * whole model's values.  0 or -1 with ds_err (experts that do not split). */
int ds_model_create_shard(ds_model *m, const ds_config *c, int ep_size, int ep_rank);
/* Move the weights of m into the memory of mem (alloc, copy, free the old;
 * pointers rebound): a loaded or initialised host model onto a device.  Make
 * the arenas after the move.  0, or -1 with ds_err (the model unchanged
 * where the first allocation failed). */
int ds_model_to(ds_model *m, const struct ds_ops *mem);
/* Rebind the blocks' parameter pointers after m->params or m->layout changed
 * (model/expert_shard.h). */
void ds_model_rebind(ds_model *m);
/* Allocation in the memory of a table (NULL: host memory; zero-filled, at
 * least one byte), and its release (NULL pointers ignored). */
void *ds_model_mem_alloc(const struct ds_ops *mem, size_t bytes);
void ds_model_mem_free(const struct ds_ops *mem, void *p);

/* Resident weight memory. */
typedef struct {
    int64_t fp8_params;     /* FP8-resident parameters (1 byte each) */
    int64_t fp8_bytes;      /* their codes */
    int64_t scale_bytes;    /* their FP32 block scales */
    int64_t bf16_params;    /* BF16-resident parameters */
    int64_t bf16_bytes;     /* their 2 bytes each */
    int64_t f32_bytes;      /* the FP32 parameter allocation */
    int64_t total_bytes;    /* fp8 + scale + bf16 + f32 bytes */
    int64_t params;         /* parameters owned (aliases counted once) */
    int64_t f32_equiv_bytes, bf16_equiv_bytes; /* the same model all in FP32 / BF16 */
} ds_weight_mem;
void ds_model_weight_mem(const ds_model *m, ds_weight_mem *w);
/* One line: "resident weights: FP8 … + scales … + BF16 … + FP32 … = … (FP32 model …, BF16 …)". */
void ds_weight_mem_str(const ds_weight_mem *w, char *buf, size_t cap);
/* That line on stderr: always for a resident (FP8/BF16) model, with --verbose otherwise. */
void ds_model_log_weight_mem(const ds_model *m);
/* -1 with ds_err naming what when m holds FP8/BF16-resident weights (backward,
 * training, save need FP32 parameters). */
int ds_model_require_f32(const ds_model *m, const char *what);

/* The resident-weight linear dispatch of the forward and the decode engine:
 * ops->linear_fp8w_forward when w8 is set (FP8 or BF16), else
 * ops->linear_forward (every entry of a table is set). */
static inline void ds_linear_any(const struct ds_ops *ops, float *out, const float *inp, const float *w,
                                 const ds_fp8w *w8, const float *bias, int64_t N, int64_t C, int64_t OC) {
    if (w8) ops->linear_fp8w_forward(out, inp, w8, bias, N, C, OC);
    else ops->linear_forward(out, inp, w, bias, N, C, OC);
}
/* The same for the matmuls that stay FP32 in FP8 training (router, lm_head,
 * eh_proj): ops->matmul_forward when w8 is NULL. */
static inline void ds_matmul_any(const struct ds_ops *ops, float *out, const float *inp, const float *w,
                                 const ds_fp8w *w8, int64_t N, int64_t C, int64_t OC) {
    if (w8) ops->linear_fp8w_forward(out, inp, w8, NULL, N, C, OC);
    else ops->matmul_forward(out, inp, w, NULL, N, C, OC);
}
/* Token embeddings out (N, H) of ids (N): the FP32 table through
 * ops->embedding_forward, or the BF16-resident one through
 * ops->embedding_bf16_forward (widened per row). */
static inline void ds_embed_any(const struct ds_ops *ops, float *out, const int32_t *ids, const float *embed,
                                const ds_fp8w *embed8, int64_t N, int64_t H) {
    if (embed8) ops->embedding_bf16_forward(out, ids, embed8->b16, N, H);
    else ops->embedding_forward(out, ids, embed, N, H);
}
/* Write config.json, generation_config.json and model.safetensors (FP32, HF
 * names, MTP copies of the shared embedding/head included; transformers-style
 * shards + index beyond 5 GB) into dir (created). */
int ds_model_save(const ds_model *m, const char *dir);
/* dir/generation_config.json: config.json's bos_token_id and eos_token_id(s). */
int ds_model_save_generation_config(const ds_config *c, const char *dir);

/* A saved activation in FP8 (--fp8-cache): E4M3 codes (rows, cols) and
 * 1x128 tile scales (rows, ceil(cols/128)), the same codes the forward GEMM
 * quantizes (num/quant.h, DS_QUANT_TILE_1x128); q == NULL: not cached. */
typedef struct {
    uint8_t *q;
    float *s;
} ds_fp8_act;

/* Saved activations of one block (what the backward pass will need).
 * With DS_ACTS_FP8_CACHE, ln1, qa_n, ckv, h_act, xs, e_act and (dense
 * layers) ln2 — inputs of FP8 linears that the backward needs only for the
 * weight-gradient GEMM — point into a shared FP32 staging buffer that lives
 * only while the forward (or the backward) uses them; what is kept is the
 * FP8 copy in fp8_* below. */
typedef struct {
    float *ln1, *ln1_rstd;        /* (B,T,H), (B,T) */
    float *qa, *qa_n, *qa_rstd;   /* (B,T,rq) x2, (B,T) */
    float *q;                     /* (B,T,nh,dq) after RoPE */
    float *kva;                   /* (B,T,rkv+dr), k_pe part after RoPE */
    float *ckv, *ckv_rstd;        /* (B,T,rkv) normalised latent, (B,T) */
    float *kv;                    /* (B,T,nh,dn+dv) */
    float *k, *v;                 /* (B,T,nh,dq), (B,T,nh,dv) */
    float *att, *lse;             /* (B,T,nh*dv), (B,nh,T) */
    float *attn_proj;             /* (B,T,H) o_proj output */
    float *x_mid;                 /* (B,T,H) residual after attention */
    float *ln2, *ln2_rstd;        /* (B,T,H), (B,T) */
    float *h_gate, *h_up, *h_act; /* (B,T,Is) dense MLP or shared experts */
    float *mlp_out;               /* (B,T,H) */
    /* MoE */
    float *r_logits, *r_scores;   /* (B,T,E) */
    float *r_w;                   /* (B,T,K) gate weights */
    int32_t *r_idx;               /* (B,T,K) expert ids, ascending per token */
    int32_t *order, *pos;         /* (B*T*K) slot ids sorted by expert; inverse */
    int64_t *counts, *offsets;    /* (E) tokens per expert (load), (E+1) */
    int64_t *counts_h, *offsets_h; /* [host] copies of counts, offsets (the GEMM sizes) */
    float *xs;                    /* (B*T*K, H) inputs gathered in expert order */
    float *e_gate, *e_up, *e_act; /* (B*T*K, Im) */
    float *e_out;                 /* (B*T*K, H) */
    float *out;                   /* (B,T,H) block output */
    /* MTP module input */
    float *m_emb, *m_cat, *m_x;   /* (B,T,H), (B,T,2H) = [enorm(emb) | hnorm(h)], (B,T,H) */
    float *m_e_rstd, *m_h_rstd;   /* (B,T) rstd of enorm and hnorm */
    float *m_hn, *m_hn_rstd;      /* (B,T,H) shared_head.norm output, (B,T) */
    /* FP8 cache (DS_ACTS_FP8_CACHE), else all q == NULL */
    ds_fp8_act fp8_ln1, fp8_qa_n, fp8_ckv; /* (B,T,H), (B,T,rq), (B,T,rkv) */
    ds_fp8_act fp8_ln2, fp8_h_act;         /* (B,T,H) dense layers only, (B,T,Is) */
    ds_fp8_act fp8_xs, fp8_e_act;          /* (B*T*K, H), (B*T*K, Im) */
    /* DS_ACTS_INFER with an FP8-resident kv_b: the cached latent's 1x128
     * round trip (codes (B*T, rkv), scales), else NULL */
    ds_fp8_act lat8;
} ds_block_acts;

typedef struct {
    int64_t B, T;
    int mtp;                      /* run the MTP modules */
    const struct ds_ops *mem;     /* the model's: where the arena lives (NULL: host) */
    float *arena;
    size_t arena_floats;
    float *cos_t, *sin_t;         /* (T, dr/2) */
    float *emb;                   /* (B,T,H) hidden_states.0 */
    ds_block_acts *blk;           /* nblocks */
    float *hfinal, *hfinal_rstd;  /* (B,T,H) after model.norm, (B,T) */
    float *logits;                /* (B,T,V) */
    float **mtp_logits;           /* D x (B,T-k,V) */
    int32_t *ids;                 /* (B,T) */
    int64_t *host;                /* [host] allocation behind the blocks' counts_h, offsets_h */
    int flags;                    /* DS_ACTS_* */
    float *stage, *stage2;        /* FP32 staging of the cached inputs (DS_ACTS_FP8_CACHE) */
    /* DS_ACTS_INFER: cos/sin cover rope_len positions (built by the first
     * forward, rope_ready), last_rows (B) host row indices of the head */
    int64_t rope_len;
    int rope_ready;
    int32_t *last_rows;
    /* pipeline stage (ds_acts_create_stage): the main layers [l0, l1) whose
     * activations are carved; the final norm, head and logits only when
     * l1 = L (the last stage).  Other sets: 0, L. */
    int64_t l0, l1;
    int64_t max_rows;             /* ds_acts_create_infer_rows: B·n ≤ max_rows per forward (0: B·T) */
} ds_acts;

/* DS_ACTS_FP8_CACHE (`dsv3 train --precision fp8 --fp8-cache`): keep the
 * inputs of FP8 linears that only the weight gradient needs as E4M3 1x128
 * tiles (ds_fp8_act) instead of FP32; the backward dequantizes them into the
 * staging buffers and the FP8 weight-gradient GEMM re-quantizes them to 128x1
 * tiles.  Inputs also needed in FP32 elsewhere stay FP32: att (attention
 * backward), ln2 of MoE layers (the FP32 router's weight gradient).
 * Staging: stage (B*T*max(H, Is, K*H, K*Im)) holds ln1, dense ln2, h_act,
 * xs, e_act; stage2 (B*T*max(rq, rkv)) holds qa_n, ckv. */
enum { DS_ACTS_FP8_CACHE = 1 };
/* DS_ACTS_INFER (ds_acts_create_infer, the decode engine): one set of block
 * buffers sized for B x T rows (T = the engine's chunk) that every block
 * points at, nothing kept for a backward; the expanded-attention buffers
 * (kv, k, v, lse) are left out: such a set runs ds_model_forward_ex with a
 * latent cache only.  cos/sin tables cover max_len positions. */
enum { DS_ACTS_INFER = 2 };

/* Size and allocate the arena for (B, T); mtp = 0 skips the MTP modules. */
int ds_acts_create(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int mtp);
/* The same with flags (DS_ACTS_*). */
int ds_acts_create_ex(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int mtp, int flags);
/* An inference set (DS_ACTS_INFER) for B sequences of up to `chunk` tokens per
 * forward and positions < max_len; mtp: room for the MTP modules' inputs. */
int ds_acts_create_infer(ds_acts *a, const ds_model *m, int64_t B, int64_t chunk, int64_t max_len, int mtp);
/* A pipeline stage's training set: the activations of main layers [l0, l1)
 * only (a->emb is the stage's input: the embedding on the first stage, the
 * received hidden state on the others), the final norm, head and MTP
 * modules (mtp) only when l1 = L.  ds_model_forward_stage /
 * ds_model_backward_stage run it. */
int ds_acts_create_stage(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int mtp, int flags, int64_t l0, int64_t l1);
size_t ds_acts_stage_bytes(const ds_model *m, int64_t B, int64_t T, int mtp, int flags, int64_t l0, int64_t l1);
/* Bytes of all activation arenas allocated now in this process (created,
 * not yet freed): the trainer's count of its peak activation memory. */
size_t ds_acts_live_bytes(void);
/* An inference set for up to B sequences of up to T tokens, at most `rows`
 * tokens in all per forward (continuous batching's prefill of several
 * prompts: the arena is that of `rows` tokens, not B x T). */
int ds_acts_create_infer_rows(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int64_t rows, int64_t max_len, int mtp);
/* Bytes of the arena ds_acts_create_ex would allocate (the same sizing code). */
size_t ds_acts_arena_bytes(const ds_model *m, int64_t B, int64_t T, int mtp, int flags);
/* Cache an activation: quantize x (rows, cols) into c (no-op when c->q is
 * NULL); restore: x = dequantize(c) (no-op when c->q is NULL); through
 * ops->act_quant_1x128 / act_dequant_1x128. */
void ds_fp8_act_store(const struct ds_ops *ops, const ds_fp8_act *c, const float *x, int64_t rows, int64_t cols);
void ds_fp8_act_load(const struct ds_ops *ops, float *x, const ds_fp8_act *c, int64_t rows, int64_t cols);
void ds_acts_free(ds_acts *a);
/* hidden_states.i as in transformers' output_hidden_states: 0 = embeddings,
 * i = 1..L-1 output of layer i-1, L = after the final norm. */
const float *ds_acts_hidden(const ds_acts *a, const ds_model *m, int64_t i);

/* The router settings of a config (selection rule, groups, scoring, scaling). */
ds_route_params ds_route_params_of(const ds_config *c);

/* Forward pass; ids (B, T) must be < vocab_size (checked: -1 with ds_err). */
int ds_model_forward(const ds_model *m, ds_acts *a, const struct ds_ops *ops, const int32_t *ids);

/* The forward of a pipeline stage (a from ds_acts_create_stage, layers
 * [a->l0, a->l1)): ids (B, T) [host] the micro-batch's tokens (every stage
 * gets them: the first embeds them, the last feeds the MTP modules); x_in
 * (B, T, H) the previous stage's output when a->l0 > 0 (copied into
 * a->emb), else NULL.  A stage before the last ends with its output in
 * ds_acts_stage_out(a); the last runs the final norm, head and MTP modules. */
int ds_model_forward_stage(const ds_model *m, ds_acts *a, const struct ds_ops *ops, const int32_t *ids, const float *x_in);
static inline float *ds_acts_stage_out(const ds_acts *a) { return a->blk[a->l1 - 1].out; }

/* Options of ds_model_forward_ex (zero: ds_model_forward). */
typedef struct {
    /* the latent cache (model/kv_cache.h): main layer l uses cache layer l,
     * MTP module k layer L+k-1.  NULL: the training form (expanded MLA over
     * the B x n tokens alone).  With a cache, `a` must be a DS_ACTS_INFER set
     * and the tokens sit at positions pos..pos+n-1 of every sequence: their
     * latents are appended and MLA runs absorbed over cache rows 0..pos+i. */
    ds_kv_cache *kv;
    int64_t pos;
    int64_t n;          /* tokens per sequence, 1..a->T (0: a->T) */
    int last_only;      /* logits of each sequence's last token only: a->logits (B, V) */
    /* continuous batching (with a cache): B sequences, 1..a->B (0: a->B);
     * sequence b's tokens at positions pos_b[b]..pos_b[b]+n-1 (pos_b NULL:
     * o->pos) of cache row rows[b] (rows NULL: b), attending to that row's
     * prefix.  pos_b, rows [host] (B). */
    int64_t B;
    const int64_t *pos_b, *rows;
    /* with last_only: sequence b's last token is row last_b[b] < n, not n-1
     * (a prompt padded to the step's n tokens; the padding's latents are
     * written past its end and overwritten later) [host] (B); NULL: n-1 */
    const int64_t *last_b;
} ds_fwd_opts;
/* The forward of ids (B, n) with options (B = o->B or a->B); the blocks are those of training.
 * Rows are (b, i) -> b*n + i in a->hfinal and a->logits.  The MTP modules run
 * (training form, a->mtp) only without a cache.  0 or -1 (bad id, a cache
 * without an inference set, positions beyond the cache: ds_err). */
int ds_model_forward_ex(const ds_model *m, ds_acts *a, const struct ds_ops *ops, const int32_t *ids,
                        const ds_fwd_opts *o);
/* MTP module k on given states: h (B, n, H) = the main model's final-norm
 * states at positions p = o->pos.. and next (B, n) the tokens at p+k; its
 * logits (predicting p+k+1) in a->mtp_logits[k-1] ((B, n, V), or (B, V) with
 * last_only).  Needs a->mtp; with o->kv the module's cache layer is L+k-1. */
int ds_model_mtp_forward_ex(const ds_model *m, ds_acts *a, const struct ds_ops *ops, int64_t k, const float *h,
                            const int32_t *next, const ds_fwd_opts *o);

/* RoPE setup (doc §4.4, transformers' _compute_yarn_parameters): inv_freq
 * (dr/2) YaRN-corrected (or plain) inverse frequencies, the cos/sin factor
 * (attention_factor) and the softmax scale dq^-1/2 · mscale(s, mscale_all_dim)². */
void ds_rope_setup(const ds_config *c, float *inv_freq, float *attn_factor, float *softmax_scale);

/* Forward FLOPs: 2·(activated matmul parameters, input embedding excluded)·B·T
 * + causal attention (q·k and p·v over T(T+1)/2 pairs per head and layer),
 * plus the MTP modules on T-k tokens each when mtp. */
double ds_model_forward_flops(const ds_model *m, int64_t B, int64_t T, int mtp);

#endif
