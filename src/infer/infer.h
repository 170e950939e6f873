/*
 * infer.h — the inference path: the decode engine (prefill + single-token
 * steps over the model's own forward, ds_model_forward_ex, with MLA in its
 * absorbed form over the latent cache model/kv_cache.h, doc §4.5 and
 * Appendix B), sampling, batch-1 generation and MTP speculative decoding
 * (doc §7.4).
 *
 * Absorbed attention for head h (W_UK_h = kv_b rows [h(dn+dv), h(dn+dv)+dn),
 * W_UV_h = the next dv rows, both (·, rkv)):
 *   q_abs = W_UK_hᵀ q_nope                       (rkv)
 *   s_j   = (q_abs·c_j + q_pe·k_pe_j) · scale     j = 0..t (causal)
 *   x     = Σ_j softmax(s)_j c_j                  (rkv)
 *   o_h   = W_UV_h x                              (dv), then o_proj.
 * The cache holds only c_j = kv_a_layernorm(latent) (rkv) and the rotated
 * k_pe_j (dr) per layer and position: (rkv + dr) floats per token per layer.
 *
 * Batch: B sequences advance in lockstep (same prompt length); speculative
 * decoding and ds_generate are batch 1.  Everything is allocated once in
 * ds_engine_create (caches sized for max_len); steps allocate nothing.
 */
#ifndef DS_INFER_H
#define DS_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "backend/ops.h"
#include "base/base.h"
#include "model/model.h"
#include "tokenizer/json_guide.h"

/* the latent cache: model/kv_cache.h (ds_kv_cache) */

/* ---- decode.c: the engine ----------------------------------------------------- */
typedef struct {
    const ds_model *m;
    const struct ds_ops *ops;
    int64_t B, max_len, chunk;  /* sequences, cache length, max tokens per step per sequence */
    int mtp;                    /* MTP module 1 has its own cache (layer L of kc) */
    int64_t pos, mtp_pos;       /* tokens cached per sequence: main model, MTP module */
    ds_kv_cache kc;             /* L layers (+1 for MTP) */
    ds_acts a;                  /* the model's inference activations (DS_ACTS_INFER, B x chunk rows) */
    int32_t *chunk_ids;         /* (B, chunk) prefill chunk gather (host) */
    float *hfinal;              /* (B, chunk, H) main model after model.norm (= a.hfinal) */
    float *logits;              /* (B, chunk, V) or (B, 1, V) with last_only (= a.logits) */
    float *mtp_logits;          /* (B, chunk, V) or (B, 1, V) (= a.mtp_logits[0]) */
    /* tests only: when set, the speculative loop proposes forced_drafts[i]
     * for output token i (i < n_forced) instead of the MTP argmax (the MTP
     * module still runs) or the n-gram lookup, to drive both the accept and
     * the reject path */
    const int32_t *forced_drafts;
    int64_t n_forced;
} ds_engine;

/* max_len: cache positions per sequence (≤ max_position_embeddings);
 * chunk: tokens per sequence one step may process (prefill is chunked);
 * mtp: also run MTP module 1 (needs num_nextn_predict_layers ≥ 1). */
int ds_engine_create(ds_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len,
                     int64_t chunk, int mtp);
void ds_engine_free(ds_engine *e);
/* Forget everything cached. */
void ds_engine_reset(ds_engine *e);
/* Process ids (B, n), n ≤ chunk, at positions pos..pos+n-1 of every sequence
 * and append them to the cache.  e->hfinal gets (B, n, H); e->logits gets
 * (B, n, V), or only the last position's (B, 1, V) with last_only.  0 or -1
 * (cache full, bad id: ds_err). */
int ds_engine_step(ds_engine *e, const int32_t *ids, int64_t n, int last_only);
/* Prefill a prompt of any length (chunks of e->chunk); e->logits holds the
 * last position's logits (B, 1, V) afterwards. */
int ds_engine_prefill(ds_engine *e, const int32_t *ids, int64_t P);
/* MTP module 1 on n positions p = mtp_pos..: input h (B, n, H) = the main
 * model's final-norm states at p and next (B, n) = the tokens at p+1; it
 * predicts the token at p+2.  e->mtp_logits (B, n, V) or (B, 1, V).  h may
 * be (rows of) e->hfinal: an MTP step leaves it unchanged. */
int ds_engine_mtp_step(ds_engine *e, const float *h, const int32_t *next, int64_t n, int last_only);
/* Drop cached positions ≥ pos (speculative rejection). */
static inline void ds_engine_rewind(ds_engine *e, int64_t pos) { if (pos < e->pos) e->pos = pos; }
static inline void ds_engine_mtp_rewind(ds_engine *e, int64_t pos) { if (pos < e->mtp_pos) e->mtp_pos = pos; }

/* ---- decode_rows.c: continuous batching (serve) ----------------------------------- */
/* B cache rows, each sequence at its own position, one new token each per
 * step: host bookkeeping over ds_model_forward_ex (ds_fwd_opts.B, pos_b,
 * rows) with a latent cache of B rows; the layers are the model's. */
typedef struct {
    const ds_model *m;
    const struct ds_ops *ops;
    int64_t B, max_len, T;           /* T: tokens per sequence one step takes */
    int64_t R;                       /* cache rows (≥ B: rows beyond the step's sequences keep prefixes) */
    int mtp;                         /* MTP module 1 has its own cache layer (L) */
    ds_kv_cache kc;                  /* B rows of max_len positions (L layers, +1 with mtp) */
    ds_acts a;                       /* inference activations, B sequences of T tokens */
    float *logits;                   /* (n, V) after a step; (n, T, V) after ds_rows_engine_step_n */
    float *hfinal;                   /* (n, T, H) final-norm states after a step (= a.hfinal) */
    float *mtp_logits;               /* (n, T, V) after ds_rows_engine_mtp_step (= a.mtp_logits[0]) */
    /* prefill of several prompts in one forward (ds_rows_engine_prefill_init) */
    ds_acts pa;                      /* up to B sequences, `chunk` tokens in all */
    int64_t pchunk;
    float *p_logits;                 /* (n, V): each sequence's last position */
    float *p_mtp_logits;             /* (n, V) after ds_rows_engine_prefill_mtp */
} ds_rows_engine;
int ds_rows_engine_create(ds_rows_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len);
/* T tokens per sequence per step (speculative verify: 2); mtp: also MTP module 1 */
int ds_rows_engine_create_ex(ds_rows_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len,
                             int64_t T, int mtp);
/* R ≥ B cache rows: a step still takes at most B sequences, in any of them */
int ds_rows_engine_create_rows(ds_rows_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t R,
                               int64_t max_len, int64_t T, int mtp);
void ds_rows_engine_free(ds_rows_engine *e);
/* One new token for each of n ≤ B sequences: sequence i is cache row rows[i]
 * (distinct) at position pos[i], its token ids[i]; e->logits gets (n, V).
 * On the CPU table each sequence's numbers equal a batch-1 decode step's at
 * that position (n ≤ DS_LINEAR_ROWWISE_MAX; docs/serve.md).  0 or -1. */
int ds_rows_engine_step(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos, int64_t n);
/* t ≤ T tokens for each of n sequences (ids (n, t)) at positions
 * pos[i]..pos[i]+t-1 of row rows[i]; e->logits (n, t, V), e->hfinal (n, t, H). */
int ds_rows_engine_step_n(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos, int64_t n,
                          int64_t t);
/* MTP module 1 on n sequences of t states h (n, t, H) (may be e->hfinal) with
 * the next tokens next (n, t), at MTP positions pos[i].. of row rows[i];
 * e->mtp_logits (n, t, V). */
int ds_rows_engine_mtp_step(ds_rows_engine *e, const float *h, const int32_t *next, const int64_t *rows,
                            const int64_t *pos, int64_t n, int64_t t);
/* The same on rows hrow (n·t, host) of e->hfinal (sequence i's states are
 * hrow[i·t..]), gathered first; only each sequence's last state goes
 * through the head: e->mtp_logits (n, V). */
int ds_rows_engine_mtp_step_rows(ds_rows_engine *e, const int32_t *hrow, const int32_t *next, const int64_t *rows,
                                 const int64_t *pos, int64_t n, int64_t t);
/* Batched prefill: room for up to `chunk` prompt tokens per step in all. */
int ds_rows_engine_prefill_init(ds_rows_engine *e, int64_t chunk);
/* t tokens of each of n prompts in one forward (n·t ≤ chunk): ids (n, t),
 * sequence i at positions pos[i].. of cache row rows[i], its last real
 * token at row last[i] < t (the rest padding, written past it and
 * overwritten later; last NULL: t-1); e->p_logits gets each sequence's last
 * token's logits (n, V).  Then, with mtp, ds_rows_engine_prefill_mtp runs
 * MTP module 1 on that step's states with the tokens after them next (n, t)
 * at the same positions; e->p_mtp_logits (n, V) from each last state. */
int ds_rows_engine_prefill(ds_rows_engine *e, const int32_t *ids, const int64_t *rows, const int64_t *pos,
                           const int64_t *last, int64_t n, int64_t t);
/* The same for one prompt's t tokens with every position through the head:
 * e->p_logits (t, V), row i the logits after token i (prompt log-probabilities). */
int ds_rows_engine_prefill_all(ds_rows_engine *e, const int32_t *ids, int64_t row, int64_t pos, int64_t t);
int ds_rows_engine_prefill_mtp(ds_rows_engine *e, const int32_t *next, const int64_t *rows, const int64_t *pos,
                               const int64_t *last, int64_t n, int64_t t);
/* cache row dst's positions 0..n-1 := row src's, every layer (the MTP module's
 * too): a prompt prefix another sequence has cached (serve's prefix cache) */
void ds_rows_engine_copy_prefix(ds_rows_engine *e, int64_t dst, int64_t src, int64_t n);

/* ---- sampling.c ----------------------------------------------------------------- */
typedef struct {
    int32_t id;
    float bias;
} ds_logit_bias;
#define DS_MAX_LOGIT_BIAS 1024 /* entries a request or a command line may give */
/* Zero-initialised fields are "off" (repetition_penalty 0 reads as 1). */
typedef struct {
    double temperature;  /* ≤ 0: greedy (argmax) */
    int64_t top_k;       /* 0: off */
    double top_p;        /* ≥ 1: off; else keep the smallest most-probable set with mass ≥ top_p */
    uint64_t seed;
    double min_p;        /* 0: off; else drop tokens below min_p times the top token's probability (after top-p) */
    double repetition_penalty; /* 1 (or 0): off; a logit of a token in the prompt or output: / r if > 0, else * r */
    double presence_penalty;   /* subtracted once from the logit of each token already in the output */
    double frequency_penalty;  /* subtracted per occurrence in the output */
    const ds_logit_bias *bias; /* nbias entries added to their logits (ds_sampler_init copies them) */
    int nbias;
    int64_t min_tokens;        /* > 0: the stop ids cannot be drawn before this many output tokens */
    const int32_t *stop_ids;   /* the ids that end the answer (EOS, stop ids): min_tokens holds them back, a guide
                                * allows only them once its object is closed (ds_sampler_init copies them) */
    int nstop_ids;
    const struct ds_json_guide *guide; /* non-NULL: the output is JSON (json_guide.h): one object, */
    const struct ds_json_schema *schema; /* held to this schema when non-NULL */
} ds_sample_params;
/* 1 when p picks the argmax of the raw logits (greedy, no penalty, no bias): what MTP speculative decoding needs */
int ds_sample_params_argmax(const ds_sample_params *p);
/* 1 when p adjusts logits (penalties, bias, min_tokens, a guide) before the choice */
int ds_sample_params_adjusts(const ds_sample_params *p);
typedef struct {
    ds_sample_params p;
    int64_t V;
    const struct ds_ops *ops;   /* the table that holds the logits */
    ds_rng rng;
    float *prob;    /* (V) [dev]: ops->alloc */
    int32_t *idx;   /* (V) [dev]: ops->alloc */
    /* penalties and bias (ds_sample_params_adjusts): the adjusted copy of the logits and the history */
    float *work;    /* (V) [dev] */
    int32_t *count; /* (V) host: occurrences in the output */
    int32_t *slot;  /* (V) host: 1 + the index of the id in ids, 0 when not there */
    int32_t *ids;   /* host: the distinct ids adjusted (biased, seen), n of them */
    float *pre, *rep, *post;
    int64_t n, cap;
    /* min_tokens: the held-back ids' slots and their own pre (bias), and the tokens drawn */
    int32_t *held;
    float *held_pre;
    int nheld;
    int64_t drawn;
    /* a guide: the automaton's state, the stop ids, and per step the ids it refuses */
    ds_json_state gstate;
    int32_t *gstop;
    int ngstop;
    int32_t *gids;
} ds_sampler;
int ds_sampler_init(ds_sampler *s, const struct ds_ops *ops, const ds_sample_params *p, int64_t V);
void ds_sampler_free(ds_sampler *s);
/* The prompt's P ids (the repetition penalty counts them; call once, before the first ds_sample). */
void ds_sampler_prompt(ds_sampler *s, const int32_t *ids, int64_t P);
/* The distribution the sampler draws from: prob (V, the table's memory) after temperature,
 * top-k, top-p, min-p and renormalisation (greedy: one-hot on the argmax).  logits: as
 * ds_sample sees them (after ds_sampler_adjust when the params adjust). */
void ds_sampler_probs(ds_sampler *s, float *prob, const float *logits);
/* logits with the penalties and bias applied: s->work (the raw logits when nothing adjusts). */
const float *ds_sampler_adjust(ds_sampler *s, const float *logits);
/* Draw one token from logits (V), and count it in the history. */
int32_t ds_sample(ds_sampler *s, const float *logits);
/* 1 when a guide's object is closed and no stop id can end the answer: the caller ends it */
int ds_sampler_done(const ds_sampler *s);

/* ---- generate.c / speculative.c: batch-1 generation ------------------------------ */
/* Called with each new token; a non-zero return stops generation (stop string). */
typedef int (*ds_token_fn)(void *ctx, int32_t id);
typedef struct {
    int64_t max_tokens;
    ds_sample_params sp;
    const int64_t *eos; /* stop ids: the EOS is kept in out and passed to the callback, then generation stops */
    int neos;
    int speculative;    /* DS_SPEC_MTP or DS_SPEC_NGRAM (0: plain decoding) */
    int draft_max;      /* ngram: most tokens drafted per verify step (0: DS_NGRAM_DRAFT) */
    int ngram_min, ngram_max; /* ngram: suffix lengths looked up, longest first (0: DS_NGRAM_MIN / _MAX) */
} ds_gen_opts;
#define DS_SPEC_MTP 1   /* MTP module 1 drafts one token, a 2-token verify step (speculative.c) */
#define DS_SPEC_NGRAM 2 /* prompt lookup: the tokens after the context's latest earlier copy of its own
                         * last n tokens drafted, up to draft_max, verified in one step (speculative.c) */
#define DS_NGRAM_DRAFT 5
#define DS_NGRAM_MIN 2
#define DS_NGRAM_MAX 4
#define DS_NGRAM_DRAFT_CAP 15 /* a verify step's rows stay within DS_LINEAR_ROWWISE_MAX (16): on the CPU
                               * each row's numbers are a one-token step's */
/* The n-gram options with their defaults for 0 (a --ngram-max under the
 * default minimum lowers the minimum; a --ngram-min over the default maximum
 * raises the maximum); the draft length capped at DS_NGRAM_DRAFT_CAP. */
static inline void ds_ngram_resolve(int *draft_max, int *nmin, int *nmax) {
    if (*draft_max <= 0) *draft_max = DS_NGRAM_DRAFT;
    if (*draft_max > DS_NGRAM_DRAFT_CAP) *draft_max = DS_NGRAM_DRAFT_CAP;
    if (*nmin <= 0) *nmin = *nmax > 0 && *nmax < DS_NGRAM_MIN ? *nmax : DS_NGRAM_MIN;
    if (*nmax < *nmin) *nmax = *nmin > DS_NGRAM_MAX ? *nmin : DS_NGRAM_MAX;
}
typedef struct {
    int64_t prompt_tokens, new_tokens;
    double prefill_s, decode_s;
    int64_t steps;              /* main-model decode steps */
    int64_t drafted, accepted;  /* draft tokens checked, draft tokens accepted */
    int stopped;                /* 1: EOS, 2: callback */
    int64_t cached_tokens;      /* ds_generate_session: prompt tokens the cache already held */
} ds_gen_stats;
/* Generates up to max_tokens ids after prompt (P ids) into out; *nout the
 * count.  Errors: empty prompt, prompt + max_tokens beyond the model's
 * max_position_embeddings, speculative without MTP or with sampling. */
int ds_generate(const ds_model *m, const struct ds_ops *ops, const int32_t *prompt, int64_t P, const ds_gen_opts *o,
                int32_t *out, int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st);
/* A conversation's engine (`dsv3 chat`): one cache of max_position_embeddings
 * positions kept between calls; each call reuses the longest prefix of its
 * prompt the cache holds (the earlier turns and answers) and prefills the
 * rest (at least the prompt's last token), then decodes as ds_generate.
 * Plain decoding or n-gram drafts (not MTP).  Zero-initialise; free with
 * ds_gen_session_free. */
typedef struct {
    ds_engine e;
    int32_t *tok; /* the tokens at the cached positions 0..e.pos-1 */
} ds_gen_session;
int ds_generate_session(ds_gen_session *g, const ds_model *m, const struct ds_ops *ops, const int32_t *prompt,
                        int64_t P, const ds_gen_opts *o, int32_t *out, int64_t *nout, ds_token_fn fn, void *ctx,
                        ds_gen_stats *st);
void ds_gen_session_free(ds_gen_session *g);
/* Internal to generate.c/speculative.c: append id to out, call fn; returns
 * 1 (EOS), 2 (fn asked to stop) or 0. */
int ds_gen_emit(const ds_gen_opts *o, int32_t id, int32_t *out, int64_t *n, ds_token_fn fn, void *ctx);
/* Speculative pieces shared with continuous batching (src/serve/sched.c):
 * one prefill chunk prompt[s, s+n) of a P-token prompt through the main
 * model and MTP module 1 (state i paired with token i+1; the prompt's last
 * state waits for the first new token); and a verify step's draws. */
int ds_spec_prefill_chunk(ds_engine *e, const int32_t *prompt, int64_t P, int64_t s, int64_t n);
/* The tokens a verify step yields: g[0] drawn by s from logits row 0 (V, the
 * token after the last one); when it is the draft, g[1] drawn from row 1 (the
 * token after the draft).  2 when the draft was kept, else 1.  With the same
 * sampler state this draws what plain decoding draws, one uniform a token. */
int64_t ds_spec_verify(ds_sampler *s, const float *logits, int32_t draft, int32_t g[2]);
/* The n-gram draft (prompt lookup): for n from nmax down to nmin, the latest
 * earlier place where h's last n tokens (h: the n_h tokens so far) also
 * occur; the tokens that follow it there, at most kmax, go to draft.  Their
 * count (0: no n-gram recurs). */
int64_t ds_ngram_draft(const int32_t *h, int64_t n_h, int nmin, int nmax, int64_t kmax, int32_t *draft);
/* The tests' forced drafts (forced[i]: the draft for output token i, n_forced of them): those for
 * output tokens nout.. into draft, at most kmax; their count. */
int64_t ds_forced_draft(const int32_t *forced, int64_t n_forced, int64_t nout, int64_t kmax, int32_t *draft);
/* The n-gram speculative loop (speculative.c) on a batch-1 engine whose chunk
 * takes 1 + o->draft_max tokens and whose cache holds prompt[0..L) (L < P;
 * 0: empty): prefill the rest, then each step verifies [last token,
 * drafts...] and keeps the drafts up to the first one the sampler does not
 * draw (one uniform a token, so the output is plain decoding's with the same
 * seed).  Afterwards the cache holds the prompt and the output but its last
 * token, as plain decoding leaves it. */
int ds_generate_ngram(ds_engine *e, const int32_t *prompt, int64_t P, int64_t L, const ds_gen_opts *o, int32_t *out,
                      int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st);
/* The speculative loop (speculative.c); e was created with mtp = 1, batch 1. */
int ds_generate_speculative(ds_engine *e, const int32_t *prompt, int64_t P, const ds_gen_opts *o, int32_t *out,
                            int64_t *nout, ds_token_fn fn, void *ctx, ds_gen_stats *st);

#endif
