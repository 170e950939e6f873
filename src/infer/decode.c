/*
 * decode.c — the decode engine: prefill and cached steps of a DeepSeek-V3
 * model with MLA in its absorbed form (doc §4.5, Appendix B; see infer.h),
 * MoE/MLP per token exactly as the forward pass (doc §2.2, §5.2), and MTP
 * module 1 with its own latent cache (doc §7.4).
 *
 * Cost of one step of n tokens at position t: the weights once per token
 * plus O(t·(rkv + dr)) per head and token for attention.  All scratch is
 * carved from one arena sized in ds_engine_create for B·chunk rows.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/gemv.h"
#include "infer/infer.h"
#include "num/quant.h"

typedef struct {
    float *base;
    size_t off;
} carver;

static void *carve(carver *cv, int64_t n) {
    void *p = cv->base ? (void *)(cv->base + cv->off) : NULL;
    cv->off += (size_t)((n + 15) / 16 * 16);
    return p;
}

static void carve_all(carver *cv, ds_engine *e) {
    const ds_config *c = &e->m->cfg;
    const int64_t N = e->B * e->chunk, H = c->hidden_size, V = c->vocab_size;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dv = c->v_head_dim;
    const int64_t dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, Im = c->moe_intermediate_size;
    int64_t Is = c->intermediate_size;
    if (c->moe_intermediate_size * c->n_shared_experts > Is) Is = c->moe_intermediate_size * c->n_shared_experts;
    e->cos_t = carve(cv, e->max_len * (dr / 2));
    e->sin_t = carve(cv, e->max_len * (dr / 2));
    e->x = carve(cv, N * H);
    e->ln = carve(cv, N * H);
    e->qa = carve(cv, N * (rq > 0 ? rq : 1));
    e->qan = carve(cv, N * (rq > 0 ? rq : 1));
    e->q = carve(cv, N * nh * dq);
    e->kva = carve(cv, N * (rkv + dr));
    e->qabs = carve(cv, N * nh * rkv);
    e->att = carve(cv, N * nh * dv);
    e->proj = carve(cv, N * H);
    e->ln2 = carve(cv, N * H);
    e->r_logits = carve(cv, N * (E > 0 ? E : 1));
    e->r_scores = carve(cv, N * (E > 0 ? E : 1));
    e->r_w = carve(cv, N * (K > 0 ? K : 1));
    e->r_idx = carve(cv, N * (K > 0 ? K : 1));
    e->order = carve(cv, N * (K > 0 ? K : 1));
    e->spos = carve(cv, N * (K > 0 ? K : 1));
    e->chunk_ids = carve(cv, N);
    e->counts = carve(cv, 2 * (E + 1));
    e->offsets = carve(cv, 2 * (E + 2));
    e->xs = carve(cv, N * K * H);
    e->eg = carve(cv, N * K * Im);
    e->eu = carve(cv, N * K * Im);
    e->ea = carve(cv, N * K * Im);
    e->eo = carve(cv, N * K * H);
    e->mlp = carve(cv, N * H);
    e->hg = carve(cv, N * Is);
    e->hu = carve(cv, N * Is);
    e->ha = carve(cv, N * Is);
    e->sc = carve(cv, (int64_t)e->nthreads * (e->max_len + rkv));
    e->hfinal = carve(cv, N * H);
    e->logits = carve(cv, N * V);
    e->m_emb = carve(cv, N * H);
    e->m_cat = carve(cv, N * 2 * H);
    e->m_hn = carve(cv, N * H);
    e->mtp_logits = e->mtp ? carve(cv, N * V) : NULL;
}

int ds_engine_create(ds_engine *e, const ds_model *m, const struct ds_ops *ops, int64_t B, int64_t max_len,
                     int64_t chunk, int mtp) {
    memset(e, 0, sizeof *e);
    const ds_config *c = &m->cfg;
    if (B <= 0 || max_len <= 0 || chunk <= 0)
        return ds_err("engine: batch, length and chunk must be positive (got %lld, %lld, %lld)", (long long)B,
                      (long long)max_len, (long long)chunk);
    if (max_len > c->max_position_embeddings)
        return ds_err("engine: %lld positions exceed max_position_embeddings (%lld)", (long long)max_len,
                      (long long)c->max_position_embeddings);
    if (mtp && c->num_nextn_predict_layers < 1)
        return ds_err("engine: the model has no MTP module (num_nextn_predict_layers = 0)");
    if (c->kv_lora_rank <= 0) return ds_err("engine: kv_lora_rank must be positive for the latent cache");
    if (chunk > max_len) chunk = max_len;
    e->m = m;
    e->ops = ops;
    e->B = B;
    e->max_len = max_len;
    e->chunk = chunk;
    e->mtp = mtp ? 1 : 0;
    e->nthreads = omp_get_max_threads();
    if (ds_kv_cache_create(&e->kc, c->num_hidden_layers + e->mtp, B, max_len, c->kv_lora_rank,
                           c->qk_rope_head_dim))
        return -1;
    carver cv = {NULL, 0};
    carve_all(&cv, e);
    /* the count saturates (ds_carve); checked before allocating */
    if (ds_mem_check(cv.off > (size_t)INT64_MAX / sizeof(float) ? -1 : (int64_t)(cv.off * sizeof(float)),
                     "the decode buffers")) {
        ds_kv_cache_free(&e->kc);
        return -1;
    }
    e->arena_floats = cv.off;
    e->arena = ds_aligned_alloc(cv.off * sizeof(float));
    memset(e->arena, 0, cv.off * sizeof(float));
    cv = (carver){e->arena, 0};
    carve_all(&cv, e);
    /* cos/sin tables (max_len, dr/2) exactly as the forward pass builds them (doc §4.3) */
    const int64_t h2 = c->qk_rope_head_dim / 2;
    for (int64_t t = 0; t < max_len; t++)
        for (int64_t i = 0; i < h2; i++) {
            float ang = (float)t * m->inv_freq[i];
            e->cos_t[t * h2 + i] = (float)cos((double)ang) * m->attn_factor;
            e->sin_t[t * h2 + i] = (float)sin((double)ang) * m->attn_factor;
        }
    return 0;
}

void ds_engine_free(ds_engine *e) {
    ds_kv_cache_free(&e->kc);
    ds_free_aligned(e->arena);
    memset(e, 0, sizeof *e);
}

void ds_engine_reset(ds_engine *e) { e->pos = e->mtp_pos = 0; }

/* out (N, OC) = inp · weightᵀ (+ bias), weight FP32 (w), FP8-resident (w8,
 * then inp is quantized 1x128 first, linear_fp8w.h) or BF16-resident (w8->b16):
 * the few-row kernels for decode steps with the fast CPU ops, the ops table
 * otherwise (prefill, reference runs) */
static void mm(const ds_engine *e, float *out, const float *inp, const float *w, const ds_fp8w *w8, const float *bias,
               int64_t N, int64_t C, int64_t OC) {
    const int few = N <= DS_GEMV_MAX_ROWS && e->ops == &ds_ops_cpu;
    if (w8) {
        if (few && w8->b16) ds_gemv_bf16w_forward(out, inp, w8, bias, N, C, OC);
        else if (few) ds_gemv_fp8w_forward(out, inp, w8, bias, N, C, OC);
        else ds_linear_any(e->ops, out, inp, NULL, w8, bias, N, C, OC);
    } else if (few) {
        ds_gemv_forward(out, inp, w, bias, N, C, OC);
    } else {
        e->ops->matmul_forward(out, inp, w, bias, N, C, OC);
    }
}

/* Absorbed MLA for B sequences of n new tokens at positions pos..pos+n-1
 * (doc §4.5): att (B·n, nh·dv) from q (B·n, nh, dq) (rope applied) and the
 * cache layer (ckv (B, max_len, rkv), kpe (B, max_len, dr), filled up to
 * pos+n).  qabs (B·n, nh, rkv) is scratch. */
static void mla_absorbed(ds_engine *e, float *att, float *qabs, const float *q, const float *ckv, const float *kpe,
                         const float *kv_b, int64_t pos, int64_t n) {
    const ds_config *c = &e->m->cfg;
    const int64_t B = e->B, N = B * n, nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c);
    const int64_t dn = c->qk_nope_head_dim, dv = c->v_head_dim, dr = c->qk_rope_head_dim, rkv = c->kv_lora_rank;
    const int64_t Lmax = e->max_len;
    const float scale = e->m->softmax_scale;
    /* q_abs[r,h,:] = Σ_d q_nope[r,h,d] · W_UK_h[d,:]  (W_UK_h (dn, rkv) rows of kv_b) */
#pragma omp parallel for schedule(static) if (N * nh * dn * rkv > 65536)
    for (int64_t rh = 0; rh < N * nh; rh++) {
        const int64_t h = rh % nh;
        const float *qn = q + rh * dq;
        const float *w = kv_b + h * (dn + dv) * rkv;
        float *qa = qabs + rh * rkv;
        for (int64_t j = 0; j < rkv; j++) qa[j] = 0;
        for (int64_t d = 0; d < dn; d++) ds_axpy_f32(qa, qn[d], w + d * rkv, rkv);
    }
    /* per (sequence, head, query): scores over the cached positions 0..t, softmax, latent mix, W_UV */
    const int64_t work = B * nh * n;
#pragma omp parallel for schedule(dynamic, 1) if (work > 1 && (pos + n) * work * rkv > 32768)
    for (int64_t w = 0; w < work; w++) {
        const int64_t b = w / (nh * n), h = (w / n) % nh, i = w % n, t = pos + i, r = b * n + i;
        float *s = e->sc + (int64_t)omp_get_thread_num() * (Lmax + rkv), *ctx = s + Lmax;
        const float *qa = qabs + (r * nh + h) * rkv, *qpe = q + (r * nh + h) * dq + dn;
        const float *C = ckv + b * Lmax * rkv, *KP = kpe + b * Lmax * dr;
        float mx = -INFINITY;
        for (int64_t j = 0; j <= t; j++) {
            const float *cj = C + j * rkv, *kj = KP + j * dr;
            float v = (ds_dot_f32(qa, cj, rkv) + ds_dot_f32(qpe, kj, dr)) * scale;
            s[j] = v;
            if (v > mx) mx = v;
        }
        float sum = 0;
        for (int64_t j = 0; j <= t; j++) {
            float ev = expf(s[j] - mx);
            s[j] = ev;
            sum += ev;
        }
        for (int64_t k = 0; k < rkv; k++) ctx[k] = 0;
        for (int64_t j = 0; j <= t; j++) ds_axpy_f32(ctx, s[j], C + j * rkv, rkv);
        const float inv = 1.0f / sum;
        for (int64_t k = 0; k < rkv; k++) ctx[k] *= inv;
        /* o_h = W_UV_h · x   (W_UV_h (dv, rkv)) */
        const float *wv = kv_b + (h * (dn + dv) + dn) * rkv;
        float *o = att + r * nh * dv + h * dv;
        for (int64_t v = 0; v < dv; v++) o[v] = ds_dot_f32(wv + v * rkv, ctx, rkv);
    }
}

/* x (n, C) <- dequant(act_quant(x)) in place (1x128 tiles).  With an
 * FP8-resident kv_b the forward runs kv_b on the quantized latent; caching the
 * latent after the same round trip makes the absorbed attention compute what
 * the FP8 forward computes (up to FP32 rounding).  (DeepSeek's absorb mode
 * caches the unquantized latent: a difference of one activation quantization.) */
static void fp8_roundtrip(float *x, int64_t n, int64_t C) {
    uint8_t *q;
    float *s;
    ds_fp8w_workspace(n, C, &q, &s);
    ds_quant_opts o = ds_quant_defaults(DS_QUANT_TILE_1x128);
    (void)ds_quantize(q, s, x, n, C, &o);
    (void)ds_dequantize(x, q, s, n, C, DS_FP8_E4M3, DS_QUANT_TILE_1x128);
}

/* One decoder block on x (B·n, H) in place: x += MLA(RMSNorm(x)); x += MLP|MoE(RMSNorm(x)).
 * cl: cache layer; positions pos..pos+n-1. */
static void layer_step(ds_engine *e, const ds_block *p, int64_t cl, float *x, int64_t pos, int64_t n) {
    const ds_model *m = e->m;
    const ds_config *c = &m->cfg;
    const struct ds_ops *ops = e->ops;
    const int64_t B = e->B, N = B * n, H = c->hidden_size, Lmax = e->max_len;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dn = c->qk_nope_head_dim;
    const int64_t dv = c->v_head_dim, dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const int64_t h2 = dr / 2;
    const float eps = (float)c->rms_norm_eps, eps_lat = 1e-6f; /* latent norms: HF default eps (doc §1.2) */
    const int halves = !c->rope_interleave;
    float *ckv = e->kc.ckv[cl], *kpe = e->kc.kpe[cl];

    ops->rmsnorm_forward(e->ln, NULL, x, p->in_norm, N, H, H, H, eps);
    if (rq > 0) {
        mm(e, e->qa, e->ln, p->q_a, p->q_a8, p->q_a_bias, N, H, rq);
        ops->rmsnorm_forward(e->qan, NULL, e->qa, p->q_a_norm, N, rq, rq, rq, eps_lat);
        mm(e, e->q, e->qan, p->q_b, p->q_b8, NULL, N, rq, nh * dq);
    } else {
        mm(e, e->q, e->ln, p->q_proj, p->q_proj8, NULL, N, H, nh * dq);
    }
    ops->rope_forward(e->q, e->cos_t + pos * h2, e->sin_t + pos * h2, B, n, nh, dq, dn, dr, halves);
    mm(e, e->kva, e->ln, p->kv_a, p->kv_a8, p->kv_a_bias, N, H, rkv + dr); /* [latent | k_pe] */
    for (int64_t b = 0; b < B; b++)
        ops->rmsnorm_forward(ckv + (b * Lmax + pos) * rkv, NULL, e->kva + b * n * (rkv + dr), p->kv_a_norm, n, rkv,
                             rkv, rkv + dr, eps_lat);
    if (p->kv_b8 && p->kv_b8->q) /* FP8, not BF16 */
        for (int64_t b = 0; b < B; b++) fp8_roundtrip(ckv + (b * Lmax + pos) * rkv, n, rkv);
    ops->rope_forward(e->kva, e->cos_t + pos * h2, e->sin_t + pos * h2, B, n, 1, rkv + dr, rkv, dr, halves);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++)
            memcpy(kpe + (b * Lmax + pos + i) * dr, e->kva + (b * n + i) * (rkv + dr) + rkv, (size_t)dr * sizeof(float));
    mla_absorbed(e, e->att, e->qabs, e->q, ckv, kpe, p->kv_b, pos, n);
    mm(e, e->proj, e->att, p->o_proj, p->o_proj8, p->o_bias, N, nh * dv, H);
    ops->residual_forward(x, x, e->proj, N * H);

    /* MLP or MoE, per token (doc §2.2, §5.2) */
    ops->rmsnorm_forward(e->ln2, NULL, x, p->post_norm, N, H, H, H, eps);
    if (p->moe) {
        const int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, Im = c->moe_intermediate_size;
        ds_route_params rp = ds_route_params_of(c);
        mm(e, e->r_logits, e->ln2, p->router, p->router8, NULL, N, H, E);
        ops->moe_route_forward(e->r_w, e->r_idx, e->r_scores, e->r_logits, p->router_bias, &rp, N);
        ds_moe_sort(e->counts, e->offsets, e->order, e->spos, e->r_idx, N, K, E);
        for (int64_t s = 0; s < N * K; s++) memcpy(e->xs + s * H, e->ln2 + (e->order[s] / K) * H, (size_t)H * sizeof(float));
        const int64_t *off = e->offsets, *cnt = e->counts;
        int par = N * K >= 64 * E;
#pragma omp parallel for schedule(dynamic, 1) if (par)
        for (int64_t ex = 0; ex < E; ex++) {
            if (!cnt[ex]) continue;
            mm(e, e->eg + off[ex] * Im, e->xs + off[ex] * H, p->eg[ex], p->eg8 ? p->eg8[ex] : NULL, NULL, cnt[ex], H, Im);
            mm(e, e->eu + off[ex] * Im, e->xs + off[ex] * H, p->eu[ex], p->eu8 ? p->eu8[ex] : NULL, NULL, cnt[ex], H, Im);
        }
        ops->swiglu_forward(e->ea, e->eg, e->eu, N * K, Im);
#pragma omp parallel for schedule(dynamic, 1) if (par)
        for (int64_t ex = 0; ex < E; ex++) {
            if (!cnt[ex]) continue;
            mm(e, e->eo + off[ex] * H, e->ea + off[ex] * Im, p->ed[ex], p->ed8 ? p->ed8[ex] : NULL, NULL, cnt[ex], Im, H);
        }
        /* mlp[r] = Σ_k w[r,k] · expert_k(ln2[r])  (+ shared experts) */
        for (int64_t r = 0; r < N; r++) {
            float *y = e->mlp + r * H;
            for (int64_t i = 0; i < H; i++) y[i] = 0;
            for (int64_t k = 0; k < K; k++) {
                const float *src = e->eo + (int64_t)e->spos[r * K + k] * H;
                const float wk = e->r_w[r * K + k];
                for (int64_t i = 0; i < H; i++) y[i] += wk * src[i];
            }
        }
        if (p->inter > 0) {
            mm(e, e->hg, e->ln2, p->gate, p->gate8, NULL, N, H, p->inter);
            mm(e, e->hu, e->ln2, p->up, p->up8, NULL, N, H, p->inter);
            ops->swiglu_forward(e->ha, e->hg, e->hu, N, p->inter);
            mm(e, e->proj, e->ha, p->down, p->down8, NULL, N, p->inter, H);
            ops->residual_forward(e->mlp, e->mlp, e->proj, N * H);
        }
    } else {
        mm(e, e->hg, e->ln2, p->gate, p->gate8, NULL, N, H, p->inter);
        mm(e, e->hu, e->ln2, p->up, p->up8, NULL, N, H, p->inter);
        ops->swiglu_forward(e->ha, e->hg, e->hu, N, p->inter);
        mm(e, e->mlp, e->ha, p->down, p->down8, NULL, N, p->inter, H);
    }
    ops->residual_forward(x, x, e->mlp, N * H);
}

static int check_ids(const ds_engine *e, const int32_t *ids, int64_t n, int64_t pos, const char *what) {
    const int64_t V = e->m->cfg.vocab_size;
    if (n <= 0 || n > e->chunk)
        return ds_err("%s: %lld tokens per step, the engine takes 1..%lld", what, (long long)n, (long long)e->chunk);
    if (pos + n > e->max_len)
        return ds_err("%s: cache full (%lld + %lld tokens > %lld positions)", what, (long long)pos, (long long)n,
                      (long long)e->max_len);
    for (int64_t i = 0; i < e->B * n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return ds_err("%s: token id %lld is outside the vocabulary [0, %lld)", what, (long long)ids[i], (long long)V);
    return 0;
}

/* logits of the rows (B, n, H) in hs: all rows, or each sequence's last one */
static void head(ds_engine *e, float *logits, const float *hs, const float *norm, int64_t n, int last_only) {
    const ds_config *c = &e->m->cfg;
    const int64_t B = e->B, H = c->hidden_size, V = c->vocab_size;
    (void)norm;
    if (!last_only) {
        mm(e, logits, hs, e->m->lm_head, e->m->lm_head8, NULL, B * n, H, V);
        return;
    }
    if (B == 1) {
        mm(e, logits, hs + (n - 1) * H, e->m->lm_head, e->m->lm_head8, NULL, 1, H, V);
        return;
    }
    for (int64_t b = 0; b < B; b++) memcpy(e->proj + b * H, hs + (b * n + n - 1) * H, (size_t)H * sizeof(float));
    mm(e, logits, e->proj, e->m->lm_head, e->m->lm_head8, NULL, B, H, V);
}

int ds_engine_step(ds_engine *e, const int32_t *ids, int64_t n, int last_only) {
    const ds_model *m = e->m;
    const ds_config *c = &m->cfg;
    if (check_ids(e, ids, n, e->pos, "decode")) return -1;
    const int64_t N = e->B * n, H = c->hidden_size;
    ds_embed_any(e->ops, e->x, ids, m->embed, m->embed8, N, H);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) layer_step(e, &m->blocks[l], l, e->x, e->pos, n);
    e->ops->rmsnorm_forward(e->hfinal, NULL, e->x, m->norm, N, H, H, H, (float)c->rms_norm_eps);
    head(e, e->logits, e->hfinal, m->norm, n, last_only);
    e->pos += n;
    return 0;
}

int ds_engine_prefill(ds_engine *e, const int32_t *ids, int64_t P) {
    if (P <= 0) return ds_err("prefill: empty prompt");
    if (e->pos + P > e->max_len)
        return ds_err("prefill: %lld prompt tokens do not fit the cache (%lld positions, %lld used)", (long long)P,
                      (long long)e->max_len, (long long)e->pos);
    if (e->B == 1) {
        for (int64_t s = 0; s < P; s += e->chunk) {
            int64_t n = P - s < e->chunk ? P - s : e->chunk;
            if (ds_engine_step(e, ids + s, n, 1)) return -1;
        }
        return 0;
    }
    int32_t *tmp = e->chunk_ids;
    int rc = 0;
    for (int64_t s = 0; s < P && !rc; s += e->chunk) {
        int64_t n = P - s < e->chunk ? P - s : e->chunk;
        for (int64_t b = 0; b < e->B; b++) memcpy(tmp + b * n, ids + b * P + s, (size_t)n * sizeof(int32_t));
        rc = ds_engine_step(e, tmp, n, 1);
    }
    return rc;
}

int ds_engine_mtp_step(ds_engine *e, const float *h, const int32_t *next, int64_t n, int last_only) {
    const ds_model *m = e->m;
    const ds_config *c = &m->cfg;
    if (!e->mtp) return ds_err("mtp: the engine was created without the MTP module");
    if (check_ids(e, next, n, e->mtp_pos, "mtp")) return -1;
    const int64_t N = e->B * n, H = c->hidden_size, L = c->num_hidden_layers;
    const float eps = (float)c->rms_norm_eps;
    const ds_block *p = &m->blocks[L];
    /* x_i = eh_proj([enorm(Emb(t_{i+1})) ; hnorm(h_i)])  (doc §7.1) */
    ds_embed_any(e->ops, e->m_emb, next, m->embed, m->embed8, N, H);
    e->ops->rmsnorm_forward(e->m_cat, NULL, e->m_emb, p->enorm, N, H, 2 * H, H, eps);
    e->ops->rmsnorm_forward(e->m_cat + H, NULL, h, p->hnorm, N, H, 2 * H, H, eps);
    mm(e, e->x, e->m_cat, p->eh_proj, p->eh_proj8, NULL, N, 2 * H, H);
    layer_step(e, p, L, e->x, e->mtp_pos, n);
    e->ops->rmsnorm_forward(e->m_hn, NULL, e->x, p->head_norm, N, H, H, H, eps);
    head(e, e->mtp_logits, e->m_hn, NULL, n, last_only);
    e->mtp_pos += n;
    return 0;
}
