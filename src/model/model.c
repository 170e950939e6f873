/*
 * model.c — model creation, random init, activation arena and the FP32
 * forward pass (doc §2, §4, §5, §7).  Load/save: model_io.c.
 */
#include "model/model.h"
#include "model/expert_shard.h"

#include "model/moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "model/mla.h"
#include "num/quant.h"

/* ---- RoPE frequencies and scales (doc §4.4, transformers' _compute_yarn_parameters) */

static double yarn_mscale(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * log(s) + 1.0; }

void ds_rope_setup(const ds_config *c, float *inv_freq, float *attn_factor_out, float *softmax_scale_out) {
    int64_t d = c->qk_rope_head_dim, h = d / 2;
    double base = c->rope_theta;
    float attn_factor = 1.0f;
    double scale = 1.0 / sqrt((double)ds_config_qk_head_dim(c));
    if (c->rope_type == DS_ROPE_YARN) {
        double f = c->rope_factor;
        if (f <= 0 && c->rope_original_max_position_embeddings > 0)
            f = (double)c->max_position_embeddings / (double)c->rope_original_max_position_embeddings;
        /* absent original length: transformers uses max_position_embeddings */
        double L0 = (double)(c->rope_original_max_position_embeddings > 0 ? c->rope_original_max_position_embeddings
                                                                           : c->max_position_embeddings);
        double bf = c->rope_beta_fast > 0 ? c->rope_beta_fast : 32, bs = c->rope_beta_slow > 0 ? c->rope_beta_slow : 1;
        double low = d * log(L0 / (bf * 2 * M_PI)) / (2 * log(base));
        double high = d * log(L0 / (bs * 2 * M_PI)) / (2 * log(base));
        if (c->rope_truncate) { low = floor(low); high = ceil(high); }
        if (low < 0) low = 0;
        if (high > d - 1) high = (double)(d - 1);
        if (low == high) high += 0.001;
        for (int64_t i = 0; i < h; i++) {
            float pf = powf((float)base, (float)(2 * i) / (float)d);
            float extra = 1.0f / pf, inter = 1.0f / ((float)f * pf);
            float ramp = (float)(((double)i - low) / (high - low));
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float wext = 1.0f - ramp;
            inv_freq[i] = inter * (1.0f - wext) + extra * wext;
        }
        if (c->rope_attention_factor > 0) attn_factor = (float)c->rope_attention_factor;
        else if (c->rope_mscale != 0 && c->rope_mscale_all_dim != 0)
            attn_factor = (float)(yarn_mscale(f, c->rope_mscale) / yarn_mscale(f, c->rope_mscale_all_dim));
        else attn_factor = (float)yarn_mscale(f, 1.0);
        if (c->rope_mscale_all_dim != 0) {
            double ms = yarn_mscale(c->rope_factor > 0 ? c->rope_factor : f, c->rope_mscale_all_dim);
            scale *= ms * ms;
        }
    } else {
        for (int64_t i = 0; i < h; i++) inv_freq[i] = 1.0f / powf((float)base, (float)(2 * i) / (float)d);
    }
    *attn_factor_out = attn_factor;
    *softmax_scale_out = (float)scale;
}

/* ---- creation ------------------------------------------------------------ */

static float *P(ds_model *m, const char *fmt, long long l, long long e) {
    char name[112];
    if (e >= 0) snprintf(name, sizeof name, fmt, l, e);
    else snprintf(name, sizeof name, fmt, l);
    int64_t i = ds_layout_find(&m->layout, name);
    return i < 0 || m->layout.p[i].offset < 0 ? NULL : m->params + m->layout.p[i].offset;
}

/* the FP8-resident descriptor of a tensor, or NULL */
static const ds_fp8w *P8(ds_model *m, const char *fmt, long long l, long long e) {
    if (!m->fp8w) return NULL;
    char name[112];
    if (e >= 0) snprintf(name, sizeof name, fmt, l, e);
    else snprintf(name, sizeof name, fmt, l);
    int64_t i = ds_layout_find(&m->layout, name);
    return i < 0 || (!m->fp8w[i].q && !m->fp8w[i].b16) ? NULL : &m->fp8w[i];
}

/* Bytes of the weight allocations of m (its layout set up), overflow-checked:
 * -1 when they overflow. */
static int64_t weight_bytes(const ds_model *m) {
    int64_t f32, s, b, t;
    if (__builtin_mul_overflow(m->layout.total, (int64_t)sizeof(float), &f32) ||
        __builtin_mul_overflow(m->fp8_scale_numel, (int64_t)sizeof(float), &s) ||
        __builtin_mul_overflow(m->bf16_numel, (int64_t)sizeof(uint16_t), &b) ||
        __builtin_add_overflow(f32, s, &t) || __builtin_add_overflow(t, b, &t) ||
        __builtin_add_overflow(t, m->fp8_numel, &t))
        return -1;
    return t;
}

/* The weights need more memory than the machine has: -1 with a message. */
static int check_weight_mem(const ds_model *m) {
    int64_t params = 0;
    for (int64_t i = 0; i < m->layout.n; i++)
        if (!(m->layout.p[i].flags & DS_PARAM_ALIAS)) params += m->layout.p[i].numel;
    char what[96];
    snprintf(what, sizeof what, "model weights (%lld parameters)", (long long)params);
    return ds_mem_check(weight_bytes(m), what);
}

/* Flag the FP8- and BF16-resident entries, re-offset the FP32 allocation
 * without them (kv_b keeps its floats: the absorbed MLA reads it in FP32) and
 * carve the code, scale and BF16 allocations (after checking that they and
 * the FP32 allocation fit in memory: -1 with nothing allocated). */
static int setup_fp8(ds_model *m, const uint8_t *res) {
    ds_layout *lo = &m->layout;
    int64_t total = 0, nq = 0, ns = 0, nb = 0;
    for (int64_t i = 0; i < lo->n; i++) {
        ds_param *p = &lo->p[i];
        if (p->flags & DS_PARAM_ALIAS) continue;
        int keep_f32 = 1;
        if (res[i] == DS_RESIDENT_FP8 && p->ndim == 2) {
            p->flags |= DS_PARAM_FP8;
            keep_f32 = strstr(p->name, "kv_b_proj.weight") != NULL;
            nq += p->numel;
            ns += ds_quant_scale_count(DS_QUANT_BLOCK_128x128, p->shape[0], p->shape[1]);
        } else if (res[i] == DS_RESIDENT_BF16 && p->ndim == 2) {
            p->flags |= DS_PARAM_BF16;
            keep_f32 = strstr(p->name, "kv_b_proj.weight") != NULL;
            nb += (p->numel + 15) / 16 * 16; /* 32-byte aligned rows of the allocation */
        }
        p->offset = keep_f32 ? total : -1;
        if (keep_f32) total += (p->numel + 15) / 16 * 16;
    }
    for (int64_t i = 0; i < lo->n; i++)
        if (lo->p[i].flags & DS_PARAM_ALIAS) lo->p[i].offset = lo->p[lo->p[i].alias_of].offset;
    lo->total = total;
    m->fp8_numel = nq;
    m->fp8_scale_numel = ns;
    m->bf16_numel = nb;
    if (check_weight_mem(m)) return -1;
    m->fp8w = ds_calloc((size_t)lo->n, sizeof(ds_fp8w));
    return 0;
}

/* The FP8/BF16 descriptors of the resident entries over the code, scale and
 * BF16 allocations (again after they moved, ds_model_to). */
static void describe_fp8(ds_model *m) {
    const ds_layout *lo = &m->layout;
    int64_t oq = 0, os = 0, ob = 0;
    for (int64_t i = 0; i < lo->n; i++) {
        const ds_param *p = &lo->p[i];
        if (p->flags & DS_PARAM_FP8) {
            m->fp8w[i] = (ds_fp8w){m->fp8_codes + oq, m->fp8_scales + os, p->shape[0], p->shape[1], NULL};
            oq += p->numel;
            os += ds_quant_scale_count(DS_QUANT_BLOCK_128x128, p->shape[0], p->shape[1]);
        } else if (p->flags & DS_PARAM_BF16) {
            m->fp8w[i] = (ds_fp8w){NULL, NULL, p->shape[0], p->shape[1], m->bf16_w + ob};
            ob += (p->numel + 15) / 16 * 16;
        }
    }
    /* aliases (tied head, MTP copies) describe their source's weight */
    for (int64_t i = 0; i < lo->n; i++)
        if (lo->p[i].flags & DS_PARAM_ALIAS) m->fp8w[i] = m->fp8w[lo->p[i].alias_of];
}

/* ---- weight memory: the table's (m->mem), or host memory when there is none */

void *ds_model_mem_alloc(const struct ds_ops *mem, size_t bytes) {
    return mem ? mem->alloc(bytes ? bytes : 1) : ds_aligned_alloc(bytes ? bytes : 1);
}

void ds_model_mem_free(const struct ds_ops *mem, void *p) {
    if (!p) return;
    if (mem) mem->free(p);
    else ds_free_aligned(p);
}

/* The weight allocations (zero-filled): FP32 parameters, and for a resident
 * model its codes, scales and BF16 weights.  -1 (nothing left allocated)
 * when the table's alloc fails. */
static int alloc_weights(ds_model *m) {
    m->params = ds_model_mem_alloc(m->mem, (size_t)m->layout.total * sizeof(float));
    if (m->fp8w) {
        m->fp8_codes = ds_model_mem_alloc(m->mem, (size_t)m->fp8_numel);
        m->fp8_scales = ds_model_mem_alloc(m->mem, (size_t)m->fp8_scale_numel * sizeof(float));
        m->bf16_w = ds_model_mem_alloc(m->mem, (size_t)m->bf16_numel * sizeof(uint16_t));
    }
    if (m->params && (!m->fp8w || (m->fp8_codes && m->fp8_scales && m->bf16_w))) return 0;
    ds_model_mem_free(m->mem, m->params);
    ds_model_mem_free(m->mem, m->fp8_codes);
    ds_model_mem_free(m->mem, m->fp8_scales);
    ds_model_mem_free(m->mem, m->bf16_w);
    m->params = NULL, m->fp8_codes = NULL, m->fp8_scales = NULL, m->bf16_w = NULL;
    return -1;
}

int ds_model_create(ds_model *m, const ds_config *c) { return ds_model_create_ex(m, c, NULL); }

int ds_model_create_ex(ds_model *m, const ds_config *c, const uint8_t *res) {
    return ds_model_create_on(m, c, res, NULL);
}

/* The parameter pointers of the blocks, the head and the experts (from
 * m->params and m->fp8w; again after the weights moved, ds_model_to). */
static void bind(ds_model *m) {
    const ds_config *c = &m->cfg;
    const int64_t L = c->num_hidden_layers, E = c->n_routed_experts;
    m->embed = P(m, "model.embed_tokens.weight", 0, -1);
    m->norm = P(m, "model.norm.weight", 0, -1);
    m->lm_head = P(m, "lm_head.weight", 0, -1);
    m->embed8 = P8(m, "model.embed_tokens.weight", 0, -1);
    m->lm_head8 = P8(m, "lm_head.weight", 0, -1);
    for (int64_t l = 0; l < m->nblocks; l++) {
        ds_block *b = &m->blocks[l];
        long long ll = (long long)l;
        b->layer = l;
        b->moe = ds_config_layer_is_moe(c, l);
        b->in_norm = P(m, "model.layers.%lld.input_layernorm.weight", ll, -1);
        b->post_norm = P(m, "model.layers.%lld.post_attention_layernorm.weight", ll, -1);
        b->q_a = P(m, "model.layers.%lld.self_attn.q_a_proj.weight", ll, -1);
        b->q_a_bias = P(m, "model.layers.%lld.self_attn.q_a_proj.bias", ll, -1);
        b->q_a_norm = P(m, "model.layers.%lld.self_attn.q_a_layernorm.weight", ll, -1);
        b->q_b = P(m, "model.layers.%lld.self_attn.q_b_proj.weight", ll, -1);
        b->q_proj = P(m, "model.layers.%lld.self_attn.q_proj.weight", ll, -1);
        b->kv_a = P(m, "model.layers.%lld.self_attn.kv_a_proj_with_mqa.weight", ll, -1);
        b->kv_a_bias = P(m, "model.layers.%lld.self_attn.kv_a_proj_with_mqa.bias", ll, -1);
        b->kv_a_norm = P(m, "model.layers.%lld.self_attn.kv_a_layernorm.weight", ll, -1);
        b->kv_b = P(m, "model.layers.%lld.self_attn.kv_b_proj.weight", ll, -1);
        b->o_proj = P(m, "model.layers.%lld.self_attn.o_proj.weight", ll, -1);
        b->o_bias = P(m, "model.layers.%lld.self_attn.o_proj.bias", ll, -1);
        b->q_a8 = P8(m, "model.layers.%lld.self_attn.q_a_proj.weight", ll, -1);
        b->q_b8 = P8(m, "model.layers.%lld.self_attn.q_b_proj.weight", ll, -1);
        b->q_proj8 = P8(m, "model.layers.%lld.self_attn.q_proj.weight", ll, -1);
        b->kv_a8 = P8(m, "model.layers.%lld.self_attn.kv_a_proj_with_mqa.weight", ll, -1);
        b->kv_b8 = P8(m, "model.layers.%lld.self_attn.kv_b_proj.weight", ll, -1);
        b->o_proj8 = P8(m, "model.layers.%lld.self_attn.o_proj.weight", ll, -1);
        if (b->moe) {
            b->router = P(m, "model.layers.%lld.mlp.gate.weight", ll, -1);
            b->router8 = P8(m, "model.layers.%lld.mlp.gate.weight", ll, -1);
            b->router_bias = P(m, "model.layers.%lld.mlp.gate.e_score_correction_bias", ll, -1);
            b->eg = m->expert_ptrs + 3 * E * l;
            b->eu = b->eg + E;
            b->ed = b->eu + E;
            for (int64_t e = 0; e < E; e++) {
                b->eg[e] = P(m, "model.layers.%lld.mlp.experts.%lld.gate_proj.weight", ll, (long long)e);
                b->eu[e] = P(m, "model.layers.%lld.mlp.experts.%lld.up_proj.weight", ll, (long long)e);
                b->ed[e] = P(m, "model.layers.%lld.mlp.experts.%lld.down_proj.weight", ll, (long long)e);
            }
            if (m->expert_fp8) {
                b->eg8 = m->expert_fp8 + 3 * E * l;
                b->eu8 = b->eg8 + E;
                b->ed8 = b->eu8 + E;
                for (int64_t e = 0; e < E; e++) {
                    b->eg8[e] = P8(m, "model.layers.%lld.mlp.experts.%lld.gate_proj.weight", ll, (long long)e);
                    b->eu8[e] = P8(m, "model.layers.%lld.mlp.experts.%lld.up_proj.weight", ll, (long long)e);
                    b->ed8[e] = P8(m, "model.layers.%lld.mlp.experts.%lld.down_proj.weight", ll, (long long)e);
                }
            }
            b->gate = P(m, "model.layers.%lld.mlp.shared_experts.gate_proj.weight", ll, -1);
            b->up = P(m, "model.layers.%lld.mlp.shared_experts.up_proj.weight", ll, -1);
            b->down = P(m, "model.layers.%lld.mlp.shared_experts.down_proj.weight", ll, -1);
            b->gate8 = P8(m, "model.layers.%lld.mlp.shared_experts.gate_proj.weight", ll, -1);
            b->up8 = P8(m, "model.layers.%lld.mlp.shared_experts.up_proj.weight", ll, -1);
            b->down8 = P8(m, "model.layers.%lld.mlp.shared_experts.down_proj.weight", ll, -1);
            b->inter = b->gate || b->gate8 ? c->moe_intermediate_size * c->n_shared_experts : 0;
        } else {
            b->gate = P(m, "model.layers.%lld.mlp.gate_proj.weight", ll, -1);
            b->up = P(m, "model.layers.%lld.mlp.up_proj.weight", ll, -1);
            b->down = P(m, "model.layers.%lld.mlp.down_proj.weight", ll, -1);
            b->gate8 = P8(m, "model.layers.%lld.mlp.gate_proj.weight", ll, -1);
            b->up8 = P8(m, "model.layers.%lld.mlp.up_proj.weight", ll, -1);
            b->down8 = P8(m, "model.layers.%lld.mlp.down_proj.weight", ll, -1);
            b->inter = c->intermediate_size;
        }
        if (l >= L) {
            b->enorm = P(m, "model.layers.%lld.enorm.weight", ll, -1);
            b->hnorm = P(m, "model.layers.%lld.hnorm.weight", ll, -1);
            b->eh_proj = P(m, "model.layers.%lld.eh_proj.weight", ll, -1);
            b->eh_proj8 = P8(m, "model.layers.%lld.eh_proj.weight", ll, -1);
            b->head_norm = P(m, "model.layers.%lld.shared_head.norm.weight", ll, -1);
        }
    }
}

static int create(ds_model *m, const ds_config *c, const uint8_t *res, const struct ds_ops *mem, int ep_size,
                  int ep_rank, const ds_stage_keep *keep) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->mem = mem;
    if (ds_layout_build(&m->layout, c)) return -1;
    if (ep_size > 1 || keep) ds_layout_shard_stage(&m->layout, c->n_routed_experts, ep_size, ep_rank, keep);
    int any = 0;
    for (int64_t i = 0; res && i < m->layout.n; i++) any |= res[i] != DS_RESIDENT_F32;
    if (any ? setup_fp8(m, res) : check_weight_mem(m)) {
        free(m->fp8w);
        ds_layout_free(&m->layout);
        return -1;
    }
    if (alloc_weights(m)) {
        free(m->fp8w);
        ds_layout_free(&m->layout);
        return ds_err("model weights: the %s device could not allocate them", mem ? mem->name : "host");
    }
    if (m->fp8w) describe_fp8(m);
    const int64_t L = c->num_hidden_layers, D = c->num_nextn_predict_layers, E = c->n_routed_experts;
    m->nblocks = L + D;
    m->blocks = ds_calloc((size_t)(m->nblocks > 0 ? m->nblocks : 1), sizeof(ds_block));
    m->expert_ptrs = ds_calloc((size_t)(3 * E * m->nblocks + 1), sizeof(float *));
    if (m->fp8w) m->expert_fp8 = ds_calloc((size_t)(3 * E * m->nblocks + 1), sizeof(ds_fp8w *));
    bind(m);
    m->inv_freq = ds_calloc((size_t)(c->qk_rope_head_dim / 2 + 1), sizeof(float));
    ds_rope_setup(c, m->inv_freq, &m->attn_factor, &m->softmax_scale);
    return 0;
}

void ds_model_rebind(ds_model *m) { bind(m); }

int ds_model_create_on(ds_model *m, const ds_config *c, const uint8_t *res, const struct ds_ops *mem) {
    return create(m, c, res, mem, 0, 0, NULL);
}

int ds_model_create_shard(ds_model *m, const ds_config *c, int ep_size, int ep_rank) {
    if (ep_size < 1 || c->n_routed_experts <= 0 || c->n_routed_experts % ep_size || ep_rank < 0 || ep_rank >= ep_size)
        return ds_err("--ep %d does not divide the model's %lld routed experts", ep_size, (long long)c->n_routed_experts);
    return create(m, c, NULL, NULL, ep_size, ep_rank, NULL);
}

int ds_model_create_stage(ds_model *m, const ds_config *c, int ep_size, int ep_rank, const ds_stage_keep *k) {
    if (ep_size < 1 || (c->n_routed_experts > 0 && c->n_routed_experts % ep_size) || ep_rank < 0 || ep_rank >= ep_size)
        return ds_err("--ep %d does not divide the model's %lld routed experts", ep_size, (long long)c->n_routed_experts);
    return create(m, c, NULL, NULL, ep_size, ep_rank, k);
}

/* one allocation of n bytes from m->mem to a fresh one of mem: *p replaced */
static int move_alloc(void **p, size_t n, const struct ds_ops *from, const struct ds_ops *to) {
    void *q = ds_model_mem_alloc(to, n);
    if (!q) return -1;
    if (n) {
        if (!from) to->copy_h2d(q, *p, n);
        else if (from->host_visible) to->copy_h2d(q, *p, n);
        else if (to->host_visible) from->copy_d2h(q, *p, n);
        else { /* between two devices: through the host */
            void *h = ds_malloc(n);
            from->copy_d2h(h, *p, n);
            to->copy_h2d(q, h, n);
            free(h);
        }
    }
    ds_model_mem_free(from, *p);
    *p = q;
    return 0;
}

int ds_model_to(ds_model *m, const struct ds_ops *mem) {
    if (mem == m->mem) return 0;
    const struct ds_ops *from = m->mem;
    if (move_alloc((void **)&m->params, (size_t)m->layout.total * sizeof(float), from, mem)) goto fail;
    if (m->fp8w && (move_alloc((void **)&m->fp8_codes, (size_t)m->fp8_numel, from, mem) ||
                    move_alloc((void **)&m->fp8_scales, (size_t)m->fp8_scale_numel * sizeof(float), from, mem) ||
                    move_alloc((void **)&m->bf16_w, (size_t)m->bf16_numel * sizeof(uint16_t), from, mem)))
        goto fail;
    m->mem = mem;
    if (m->fp8w) describe_fp8(m);
    bind(m);
    return 0;
fail:
    return ds_err("model weights: the %s device could not allocate them", mem ? mem->name : "host");
}

void ds_model_free(ds_model *m) {
    ds_model_mem_free(m->mem, m->params);
    free(m->blocks);
    free(m->expert_ptrs);
    free(m->inv_freq);
    ds_model_mem_free(m->mem, m->fp8_codes);
    ds_model_mem_free(m->mem, m->fp8_scales);
    ds_model_mem_free(m->mem, m->bf16_w);
    free(m->fp8w);
    free(m->expert_fp8);
    ds_layout_free(&m->layout);
    memset(m, 0, sizeof *m);
}

void ds_model_init_random(ds_model *m, uint64_t seed) {
    ds_rng r;
    ds_rng_seed(&r, seed);
    float std = (float)m->cfg.initializer_range;
    /* filled on the host: in place when the weights are host-visible, else
     * per tensor into a staging buffer copied to the device */
    const int staged = m->mem && !m->mem->host_visible;
    float *stage = NULL;
    for (int64_t i = 0; i < m->layout.n; i++) {
        const ds_param *p = &m->layout.p[i];
        if (p->flags & DS_PARAM_REMOTE) { /* another shard's or stage's tensor: its draws, discarded */
            if (p->flags & (DS_PARAM_NORM | DS_PARAM_ZERO)) continue;
            stage = ds_realloc(stage, (size_t)p->numel * sizeof(float));
            ds_rng_fill_normal(&r, stage, p->numel, std);
            continue;
        }
        if ((p->flags & DS_PARAM_ALIAS) || p->offset < 0) continue; /* FP8-resident: no FP32 storage */
        float *x = staged ? (stage = ds_realloc(stage, (size_t)p->numel * sizeof(float))) : m->params + p->offset;
        if (p->flags & DS_PARAM_NORM) ds_fill_f32(x, p->numel, 1.0f);
        else if (p->flags & DS_PARAM_ZERO) ds_fill_f32(x, p->numel, 0.0f);
        else ds_rng_fill_normal(&r, x, p->numel, std);
        if (staged) m->mem->copy_h2d(m->params + p->offset, x, (size_t)p->numel * sizeof(float));
    }
    free(stage);
}

/* Router settings of a config (doc §5.2): greedy is group-limited selection
 * with a single group. */
ds_route_params ds_route_params_of(const ds_config *c) {
    ds_route_params rp = {
        .E = c->n_routed_experts, .K = c->num_experts_per_tok, .G = c->n_group, .Gk = c->topk_group,
        .sigmoid = c->scoring_func == DS_SCORE_SIGMOID,
        .group_top2_sum = c->topk_method == DS_TOPK_NOAUX_TC,
        .norm_topk = c->norm_topk_prob,
        .scaling = (float)c->routed_scaling_factor,
    };
    if (c->topk_method == DS_TOPK_GREEDY) rp.G = rp.Gk = 1;
    return rp;
}

/* ---- activations ----------------------------------------------------------- */

typedef ds_carver carver; /* base.h */
#define carve ds_carve
/* int32 / int64 arrays carved in float-sized units */
#define CARVE_F(ptr, n) (ptr) = carve(cv, (n))
#define CARVE_I32(ptr, n) (ptr) = carve(cv, (n))
#define CARVE_I64(ptr, n) (ptr) = carve(cv, 2 * (n))
/* an FP8-cached activation (rows, cols): codes (bytes) and 1x128 scales;
 * its FP32 pointer goes to the staging buffer */
#define CARVE_Q(c, ptr, stg, rows, cols)                                                        \
    do {                                                                                       \
        (c).q = carve(cv, ((rows) * (cols) + 3) / 4);                                          \
        (c).s = carve(cv, ds_quant_scale_count(DS_QUANT_TILE_1x128, (rows), (cols)));          \
        (ptr) = (stg);                                                                         \
    } while (0)

static void carve_all(carver *cv, ds_acts *a, const ds_model *m) {
    const ds_config *c = &m->cfg;
    const int64_t B = a->B, T = a->T, N = B * T, H = c->hidden_size, V = c->vocab_size;
    const int64_t nh = c->num_attention_heads, dq = ds_config_qk_head_dim(c), dn = c->qk_nope_head_dim;
    const int64_t dv = c->v_head_dim, dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const int64_t E = c->n_routed_experts, K = c->num_experts_per_tok, Im = c->moe_intermediate_size;
    const int64_t L = c->num_hidden_layers, D = c->num_nextn_predict_layers;
    const int infer = (a->flags & DS_ACTS_INFER) != 0;
    const int cache = !infer && (a->flags & DS_ACTS_FP8_CACHE) != 0;
    const int64_t TR = infer ? a->rope_len : T; /* rope table rows */
    CARVE_F(a->cos_t, TR * (dr / 2));
    CARVE_F(a->sin_t, TR * (dr / 2));
    CARVE_I32(a->ids, N);
    CARVE_F(a->emb, N * H);
    int64_t nb = a->mtp ? L + D : L;
    const int64_t l0 = a->l0, l1 = a->l1; /* a pipeline stage's main layers */
    if (cache) {
        /* FP32 staging of the cached inputs: one block at a time, one of
         * {ln1, dense ln2, h_act, xs, e_act} and one of {qa_n, ckv} live */
        int64_t s1 = H, s2 = rq > rkv ? rq : rkv;
        for (int64_t l = 0; l < nb; l++) {
            const ds_block *b = &m->blocks[l];
            if (b->inter > s1) s1 = b->inter;
            if (b->moe && K * H > s1) s1 = K * H;
            if (b->moe && K * Im > s1) s1 = K * Im;
        }
        CARVE_F(a->stage, N * s1);
        CARVE_F(a->stage2, N * s2);
    }
    /* DS_ACTS_INFER: one set shaped for every block (MoE if any is, the widest
     * dense/shared MLP, the MTP inputs), shared by all blocks below */
    ds_block shape;
    memset(&shape, 0, sizeof shape);
    int lat8 = 0;
    for (int64_t l = 0; infer && l < nb; l++) {
        const ds_block *b = &m->blocks[l];
        shape.moe |= b->moe;
        if (b->inter > shape.inter) shape.inter = b->inter;
        lat8 |= b->kv_b8 && b->kv_b8->q;
    }
    for (int64_t l = 0; l < (infer ? (nb > 0) : nb); l++) {
        if (!infer && l < L && (l < l0 || l >= l1)) continue; /* another stage's layer */
        ds_block_acts *x = &a->blk[l];
        const ds_block *b = infer ? &shape : &m->blocks[l];
        if (l >= L || (infer && a->mtp)) {
            CARVE_F(x->m_emb, N * H);
            CARVE_F(x->m_cat, N * 2 * H);
            CARVE_F(x->m_x, N * H);
            CARVE_F(x->m_e_rstd, N);
            CARVE_F(x->m_h_rstd, N);
            CARVE_F(x->m_hn, N * H);
            CARVE_F(x->m_hn_rstd, N);
        }
        if (cache) CARVE_Q(x->fp8_ln1, x->ln1, a->stage, N, H);
        else CARVE_F(x->ln1, N * H);
        CARVE_F(x->ln1_rstd, N);
        if (rq > 0) {
            CARVE_F(x->qa, N * rq);
            if (cache) CARVE_Q(x->fp8_qa_n, x->qa_n, a->stage2, N, rq);
            else CARVE_F(x->qa_n, N * rq);
            CARVE_F(x->qa_rstd, N);
        }
        CARVE_F(x->q, N * nh * dq);
        CARVE_F(x->kva, N * (rkv + dr));
        if (cache) CARVE_Q(x->fp8_ckv, x->ckv, a->stage2, N, rkv);
        else CARVE_F(x->ckv, N * rkv);
        CARVE_F(x->ckv_rstd, N);
        if (!infer) { /* the expanded attention's buffers */
            CARVE_F(x->kv, N * nh * (dn + dv));
            CARVE_F(x->k, N * nh * dq);
            CARVE_F(x->v, N * nh * dv);
            CARVE_F(x->lse, N * nh);
        } else if (lat8) {
            x->lat8.q = carve(cv, (N * rkv + 3) / 4);
            x->lat8.s = carve(cv, ds_quant_scale_count(DS_QUANT_TILE_1x128, N, rkv));
        }
        CARVE_F(x->att, N * nh * dv);
        CARVE_F(x->attn_proj, N * H);
        CARVE_F(x->x_mid, N * H);
        if (cache && !b->moe) CARVE_Q(x->fp8_ln2, x->ln2, a->stage, N, H);
        else CARVE_F(x->ln2, N * H); /* MoE: also the FP32 router's input */
        CARVE_F(x->ln2_rstd, N);
        if (b->inter > 0) {
            CARVE_F(x->h_gate, N * b->inter);
            CARVE_F(x->h_up, N * b->inter);
            if (cache) CARVE_Q(x->fp8_h_act, x->h_act, a->stage, N, b->inter);
            else CARVE_F(x->h_act, N * b->inter);
        }
        CARVE_F(x->mlp_out, N * H);
        if (b->moe) {
            CARVE_F(x->r_logits, N * E);
            CARVE_F(x->r_scores, N * E);
            CARVE_F(x->r_w, N * K);
            CARVE_I32(x->r_idx, N * K);
            CARVE_I32(x->order, N * K);
            CARVE_I32(x->pos, N * K);
            CARVE_I64(x->counts, E);
            CARVE_I64(x->offsets, E + 1);
            if (cache) CARVE_Q(x->fp8_xs, x->xs, a->stage, N * K, H);
            else CARVE_F(x->xs, N * K * H);
            CARVE_F(x->e_gate, N * K * Im);
            CARVE_F(x->e_up, N * K * Im);
            if (cache) CARVE_Q(x->fp8_e_act, x->e_act, a->stage, N * K, Im);
            else CARVE_F(x->e_act, N * K * Im);
            CARVE_F(x->e_out, N * K * H);
        }
        CARVE_F(x->out, N * H);
    }
    for (int64_t l = 1; infer && l < nb; l++) a->blk[l] = a->blk[0];
    if (l1 < L) return; /* a stage before the last: no final norm, head, MTP */
    CARVE_F(a->hfinal, N * H);
    CARVE_F(a->hfinal_rstd, N);
    CARVE_F(a->logits, N * V);
    for (int64_t k = 1; a->mtp && k <= D; k++) /* inference: all B x T rows of any step */
        CARVE_F(a->mtp_logits[k - 1], B * (infer ? T : T - k > 0 ? T - k : 0) * V);
}

int ds_acts_create(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int mtp) {
    return ds_acts_create_ex(a, m, B, T, mtp, 0);
}

static int acts_create(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int64_t rope_len, int mtp, int flags,
                       int64_t l0, int64_t l1);
static size_t acts_live; /* bytes of the arenas allocated now (ds_acts_live_bytes) */

int ds_acts_create_ex(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int mtp, int flags) {
    return acts_create(a, m, B, T, T, mtp, flags & ~DS_ACTS_INFER, 0, m->cfg.num_hidden_layers);
}

int ds_acts_create_infer(ds_acts *a, const ds_model *m, int64_t B, int64_t chunk, int64_t max_len, int mtp) {
    if (max_len < chunk) max_len = chunk;
    return acts_create(a, m, B, chunk, max_len, mtp, DS_ACTS_INFER, 0, m->cfg.num_hidden_layers);
}

int ds_acts_create_stage(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int mtp, int flags, int64_t l0, int64_t l1) {
    const int64_t L = m->cfg.num_hidden_layers;
    if (l0 < 0 || l1 <= l0 || l1 > L)
        return ds_err("pipeline stage: layers [%lld, %lld) are not a range of the %lld layers", (long long)l0,
                      (long long)l1, (long long)L);
    return acts_create(a, m, B, T, T, l1 == L && mtp, flags & ~DS_ACTS_INFER, l0, l1);
}

int ds_acts_create_infer_rows(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int64_t rows, int64_t max_len, int mtp) {
    if (B < 1 || T < 1 || rows < T)
        return ds_err("forward: %lld sequences of up to %lld tokens in %lld rows", (long long)B, (long long)T, (long long)rows);
    if (max_len < rows) max_len = rows;
    if (acts_create(a, m, 1, rows, max_len, mtp, DS_ACTS_INFER, 0, m->cfg.num_hidden_layers)) return -1;
    free(a->last_rows);
    a->last_rows = ds_calloc((size_t)B, sizeof(int32_t));
    a->B = B, a->T = T, a->max_rows = rows;
    return 0;
}

static int acts_create(ds_acts *a, const ds_model *m, int64_t B, int64_t T, int64_t rope_len, int mtp, int flags,
                       int64_t l0, int64_t l1) {
    memset(a, 0, sizeof *a);
    a->l0 = l0, a->l1 = l1;
    if (B <= 0 || T <= 0) return ds_err("forward: batch and sequence length must be positive (got B=%lld, T=%lld)",
                                        (long long)B, (long long)T);
    /* B*T tokens times any product of two config sizes (each bounded by
     * ds_config_validate, products < 2^28) stays inside int64 */
    int64_t N;
    if (__builtin_mul_overflow(B, T, &N) || N > ((int64_t)1 << 32))
        return ds_err("forward: batch %lld x sequence length %lld is too many tokens", (long long)B, (long long)T);
    a->B = B;
    a->T = T;
    a->rope_len = rope_len;
    a->flags = flags;
    a->mtp = mtp && m->cfg.num_nextn_predict_layers > 0;
    a->blk = ds_calloc((size_t)(m->nblocks > 0 ? m->nblocks : 1), sizeof(ds_block_acts));
    a->last_rows = ds_calloc((size_t)B, sizeof(int32_t));
    a->mtp_logits = ds_calloc((size_t)(m->cfg.num_nextn_predict_layers + 1), sizeof(float *));
    carver cv = {NULL, 0};
    carve_all(&cv, a, m);
    /* the arena beside the weights must fit in memory (cv.off saturates) */
    int64_t bytes = cv.off > (size_t)INT64_MAX / sizeof(float) ? -1 : (int64_t)(cv.off * sizeof(float));
    int64_t wb = weight_bytes(m);
    if (bytes >= 0 && (wb < 0 || __builtin_add_overflow(bytes, wb, &wb))) bytes = -1;
    char what[128];
    snprintf(what, sizeof what, "activations for %lld x %lld tokens, with the weights", (long long)B, (long long)T);
    if (ds_mem_check(bytes < 0 ? -1 : wb, what)) {
        ds_acts_free(a);
        return -1;
    }
    a->arena_floats = cv.off;
    a->mem = m->mem;
    a->arena = ds_model_mem_alloc(a->mem, cv.off * sizeof(float));
    if (!a->arena) {
        ds_acts_free(a);
        return ds_err("%s: the %s device could not allocate them", what, m->mem ? m->mem->name : "host");
    }
    acts_live += cv.off * sizeof(float);
    cv = (carver){a->arena, 0};
    carve_all(&cv, a, m);
    /* the host side of each MoE layer: its load counts and offsets */
    const int64_t E = m->cfg.n_routed_experts;
    a->host = ds_calloc((size_t)(m->nblocks * (2 * E + 1) + 1), sizeof(int64_t));
    for (int64_t l = 0; l < m->nblocks; l++) {
        a->blk[l].counts_h = a->host + l * (2 * E + 1);
        a->blk[l].offsets_h = a->blk[l].counts_h + E;
    }
    return 0;
}

size_t ds_acts_arena_bytes(const ds_model *m, int64_t B, int64_t T, int mtp, int flags) {
    return ds_acts_stage_bytes(m, B, T, mtp, flags, 0, m->cfg.num_hidden_layers);
}

size_t ds_acts_stage_bytes(const ds_model *m, int64_t B, int64_t T, int mtp, int flags, int64_t l0, int64_t l1) {
    int64_t N;
    if (B <= 0 || T <= 0) return 0;
    if (__builtin_mul_overflow(B, T, &N) || N > ((int64_t)1 << 32)) return SIZE_MAX;
    ds_acts a;
    memset(&a, 0, sizeof a);
    a.B = B, a.T = T, a.rope_len = T, a.flags = flags & ~DS_ACTS_INFER;
    a.mtp = mtp && m->cfg.num_nextn_predict_layers > 0 && l1 == m->cfg.num_hidden_layers;
    a.l0 = l0, a.l1 = l1;
    a.blk = ds_calloc((size_t)(m->nblocks > 0 ? m->nblocks : 1), sizeof(ds_block_acts));
    a.mtp_logits = ds_calloc((size_t)(m->cfg.num_nextn_predict_layers + 1), sizeof(float *));
    carver cv = {NULL, 0};
    carve_all(&cv, &a, m);
    free(a.blk);
    free(a.mtp_logits);
    return cv.off * sizeof(float);
}

void ds_fp8_act_store(const struct ds_ops *ops, const ds_fp8_act *c, const float *x, int64_t rows, int64_t cols) {
    if (!c->q || rows <= 0) return;
    ops->act_quant_1x128(c->q, c->s, x, rows, cols);
}

void ds_fp8_act_load(const struct ds_ops *ops, float *x, const ds_fp8_act *c, int64_t rows, int64_t cols) {
    if (!c->q || rows <= 0) return;
    ops->act_dequant_1x128(x, c->q, c->s, rows, cols);
}

size_t ds_acts_live_bytes(void) { return acts_live; }

void ds_acts_free(ds_acts *a) {
    if (a->arena) acts_live -= a->arena_floats * sizeof(float);
    ds_model_mem_free(a->mem, a->arena);
    free(a->host);
    free(a->blk);
    free(a->mtp_logits);
    free(a->last_rows);
    memset(a, 0, sizeof *a);
}

const float *ds_acts_hidden(const ds_acts *a, const ds_model *m, int64_t i) {
    int64_t L = m->cfg.num_hidden_layers;
    if (i == 0) return L == 0 ? a->hfinal : a->emb;
    if (i == L) return a->hfinal;
    return a->blk[i - 1].out;
}

/* ---- forward ------------------------------------------------------------------ */

/* a block's linear W (FP32 p->W or FP8-resident p->W8) */
#define LIN(out, inp, W, bias, N_, C_, OC_) ds_linear_any(ops, out, inp, p->W, p->W##8, bias, N_, C_, OC_)

/* Decoder block (doc §2): out = x_mid + MLP(RMSNorm(x_mid)), x_mid = inp + MLA(RMSNorm(inp)).
 * out (B,T,H), inp (B,T,H) (out may be inp); kv: the latent cache layer or NULL (mla.h). */
static void block_forward(float *out, ds_block_acts *a, const float *inp, const ds_block *p, const ds_model *m,
                          const struct ds_ops *ops, const float *cos_t, const float *sin_t, int64_t B, int64_t T,
                          const ds_mla_cache *kv) {
    const ds_config *c = &m->cfg;
    const int64_t N = B * T, H = c->hidden_size;
    const float eps = (float)c->rms_norm_eps;

    /* MLA (doc §4.2, §4.5; mla.c) */
    ds_mla_forward(a, inp, p, m, ops, cos_t, sin_t, B, T, kv);

    /* MLP or MoE (doc §2.2, §5) */
    ops->rmsnorm_forward(a->ln2, a->ln2_rstd, a->x_mid, p->post_norm, N, H, H, H, eps);
    if (p->moe) {
        ds_moe_forward(a, p, m, ops, N); /* moe.c */
    } else {
        LIN(a->h_gate, a->ln2, gate, NULL, N, H, p->inter);
        LIN(a->h_up, a->ln2, up, NULL, N, H, p->inter);
        ds_fp8_act_store(ops, &a->fp8_ln2, a->ln2, N, H); /* before h_act reuses the staging */
        ops->swiglu_forward(a->h_act, a->h_gate, a->h_up, N, p->inter);
        LIN(a->mlp_out, a->h_act, down, NULL, N, p->inter, H);
        ds_fp8_act_store(ops, &a->fp8_h_act, a->h_act, N, p->inter);
    }
    ops->residual_forward(out, a->x_mid, a->mlp_out, N * H);
}

/* the cache layer cl for n tokens at o->pos, or NULL without a cache */
static const ds_mla_cache *cache_layer(ds_mla_cache *buf, const ds_fwd_opts *o, int64_t cl) {
    if (!o || !o->kv) return NULL;
    *buf = (ds_mla_cache){o->kv->ckv[cl], o->kv->kpe[cl], o->pos, o->kv->max_len, o->pos_b, o->rows};
    return buf;
}

/* logits (rows, V) of the final states hs (B, n, H): every row, or each sequence's last one (B, V) */
static void lm_head(const ds_model *m, ds_acts *a, const struct ds_ops *ops, float *logits, float *hs, float *tmp,
                    int64_t B, int64_t n, int last_only, const int64_t *last_b) {
    const int64_t H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    const float *x = hs;
    int64_t rows = B * n;
    if (last_only && n > 1) {
        if (B == 1) {
            x = hs + (last_b ? last_b[0] : n - 1) * H;
        } else {
            for (int64_t b = 0; b < B; b++) a->last_rows[b] = (int32_t)(b * n + (last_b ? last_b[b] : n - 1));
            ops->gather_rows(tmp, hs, a->last_rows, B, H);
            x = tmp;
        }
        rows = B;
    }
    ds_matmul_any(ops, logits, x, m->lm_head, m->lm_head8, rows, H, V);
}

/* checks of ds_model_forward_ex / ds_model_mtp_forward_ex; *n the tokens per
 * sequence, *B the sequences */
static int check_opts(const ds_model *m, const ds_acts *a, const ds_fwd_opts *o, int64_t cl, int64_t *n, int64_t *B) {
    *n = o->n ? o->n : a->T;
    *B = o->B ? o->B : a->B;
    if (*n < 1 || *n > a->T)
        return ds_err("forward: %lld tokens per sequence, the activations take 1..%lld", (long long)*n, (long long)a->T);
    if (*B < 1 || *B > a->B)
        return ds_err("forward: %lld sequences, the activations take 1..%lld", (long long)*B, (long long)a->B);
    if (a->max_rows && *B * *n > a->max_rows)
        return ds_err("forward: %lld x %lld tokens, the activations take %lld", (long long)*B, (long long)*n, (long long)a->max_rows);
    for (int64_t b = 0; o->last_b && b < *B; b++)
        if (o->last_b[b] < 0 || o->last_b[b] >= *n)
            return ds_err("forward: last token %lld of sequence %lld is outside [0, %lld)", (long long)o->last_b[b],
                          (long long)b, (long long)*n);
    if (!o->kv) {
        if (o->pos_b || o->rows) return ds_err("forward: per-sequence positions or cache rows need a latent cache");
        return 0;
    }
    if (!(a->flags & DS_ACTS_INFER)) return ds_err("forward: a latent cache needs inference activations");
    if ((!o->rows && o->kv->B != a->B) || cl >= o->kv->nlayers || o->kv->rkv != m->cfg.kv_lora_rank)
        return ds_err("forward: the cache (batch %lld, %lld layers) does not fit the model and batch %lld",
                      (long long)o->kv->B, (long long)o->kv->nlayers, (long long)a->B);
    for (int64_t b = 0; b < *B; b++) {
        const int64_t p = o->pos_b ? o->pos_b[b] : o->pos;
        if (p < 0 || p + *n > o->kv->max_len || p + *n > a->rope_len)
            return ds_err("forward: positions %lld..%lld of sequence %lld are beyond the cache (%lld positions)",
                          (long long)p, (long long)(p + *n - 1), (long long)b, (long long)o->kv->max_len);
        if (!o->rows) continue;
        if (o->rows[b] < 0 || o->rows[b] >= o->kv->B)
            return ds_err("forward: cache row %lld of sequence %lld is outside [0, %lld)", (long long)o->rows[b],
                          (long long)b, (long long)o->kv->B);
        for (int64_t j = 0; j < b; j++)
            if (o->rows[j] == o->rows[b])
                return ds_err("forward: sequences %lld and %lld share cache row %lld", (long long)j, (long long)b,
                              (long long)o->rows[b]);
    }
    return 0;
}

/* the cos/sin rows of position pos: an inference set builds its tables once
 * (rope_len positions); a training set per forward for its T positions */
static void rope_rows(const ds_model *m, ds_acts *a, const struct ds_ops *ops, int64_t pos, const float **cs,
                      const float **sn) {
    const int64_t h2 = m->cfg.qk_rope_head_dim / 2;
    if (!(a->flags & DS_ACTS_INFER) || !a->rope_ready) {
        /* cos/sin tables: angle = float(pos)·θ'_i in FP32, × attention_factor (doc §4.3) */
        ops->rope_tables(a->cos_t, a->sin_t, m->inv_freq, m->attn_factor, a->rope_len, h2);
        a->rope_ready = 1;
    }
    *cs = a->cos_t + pos * h2;
    *sn = a->sin_t + pos * h2;
}

/* MTP module k (doc §7, tests/fixtures/model/README.md) on B sequences of n
 * rows: x_i = eh_proj([enorm(Emb(ids_i)) ; hnorm(h_i)]), ids row b at
 * ids + b*ids_ld, states row b at h + b*h_ld*H; then its block and head. */
static void mtp_module(const ds_model *m, ds_acts *a, const struct ds_ops *ops, int64_t k, const int32_t *ids,
                       int64_t ids_ld, const float *h, int64_t h_ld, int64_t B, int64_t n, const float *cs,
                       const float *sn, const ds_mla_cache *kv, int last_only,
                       const int64_t *last_b) {
    const ds_config *c = &m->cfg;
    const int64_t H = c->hidden_size, L = c->num_hidden_layers, Nk = B * n;
    const float eps = (float)c->rms_norm_eps;
    ds_block_acts *x2 = &a->blk[L + k - 1];
    const ds_block *p = &m->blocks[L + k - 1];
    for (int64_t b = 0; b < B; b++) {
        ds_embed_any(ops, x2->m_emb + b * n * H, ids + b * ids_ld, m->embed, m->embed8, n, H);
        ops->rmsnorm_forward(x2->m_cat + b * n * 2 * H, x2->m_e_rstd + b * n, x2->m_emb + b * n * H, p->enorm, n, H,
                             2 * H, H, eps);
        ops->rmsnorm_forward(x2->m_cat + b * n * 2 * H + H, x2->m_h_rstd + b * n, h + b * h_ld * H, p->hnorm, n, H,
                             2 * H, H, eps);
    }
    ds_matmul_any(ops, x2->m_x, x2->m_cat, p->eh_proj, p->eh_proj8, Nk, 2 * H, H);
    block_forward(x2->out, x2, x2->m_x, p, m, ops, cs, sn, B, n, kv);
    ops->rmsnorm_forward(x2->m_hn, x2->m_hn_rstd, x2->out, p->head_norm, Nk, H, H, H, eps);
    lm_head(m, a, ops, a->mtp_logits[k - 1], x2->m_hn, x2->attn_proj, B, n, last_only, last_b);
}

int ds_model_forward(const ds_model *m, ds_acts *a, const struct ds_ops *ops, const int32_t *ids) {
    const ds_fwd_opts o = {0};
    return ds_model_forward_ex(m, a, ops, ids, &o);
}

/* MTP modules (training form): module k on positions i < T-k, with tokens
 * t_{i+k} and the previous depth's states h^{k-1} (T-k+1 rows per sequence,
 * h^0 = h, the final norm's output) */
static void mtp_train_forward(const ds_model *m, ds_acts *a, const struct ds_ops *ops, const int32_t *ids, int64_t B,
                              int64_t T, const float *cs, const float *sn) {
    const int64_t L = m->cfg.num_hidden_layers, D = m->cfg.num_nextn_predict_layers;
    const float *hprev = a->hfinal;
    for (int64_t k = 1; k <= D; k++) {
        int64_t Tk = T - k, Tp = T - k + 1;
        if (Tk <= 0) break;
        mtp_module(m, a, ops, k, ids + k, T, hprev, Tp, B, Tk, cs, sn, NULL, 0, NULL);
        hprev = a->blk[L + k - 1].out;
    }
}

int ds_model_forward_ex(const ds_model *m, ds_acts *a, const struct ds_ops *ops, const int32_t *ids,
                        const ds_fwd_opts *o) {
    const ds_config *c = &m->cfg;
    const int64_t L = c->num_hidden_layers;
    int64_t n, B;
    if (check_opts(m, a, o, L > 0 ? L - 1 : 0, &n, &B)) return -1;
    const int64_t T = n, N = B * T, H = c->hidden_size, V = c->vocab_size;
    const float eps = (float)c->rms_norm_eps;
    for (int64_t i = 0; i < N; i++) /* host: ids */
        if (ids[i] < 0 || ids[i] >= V)
            return ds_err("token id %lld at sequence %lld, position %lld is outside the vocabulary [0, %lld)",
                          (long long)ids[i], (long long)(i / T),
                          (long long)((o->pos_b ? o->pos_b[i / T] : o->pos) + i % T), (long long)V);
    ops->copy_h2d(a->ids, ids, (size_t)N * sizeof(int32_t));
    const float *cs, *sn;
    rope_rows(m, a, ops, o->pos_b ? 0 : o->pos, &cs, &sn); /* pos_b: the whole tables (rope_pos_forward) */
    ds_embed_any(ops, a->emb, a->ids, m->embed, m->embed8, N, H); /* the table's copy: ids is host memory */
    const float *x = a->emb;
    ds_mla_cache kvl;
    for (int64_t l = 0; l < L; l++) {
        block_forward(a->blk[l].out, &a->blk[l], x, &m->blocks[l], m, ops, cs, sn, B, T, cache_layer(&kvl, o, l));
        x = a->blk[l].out;
    }
    ops->rmsnorm_forward(a->hfinal, a->hfinal_rstd, x, m->norm, N, H, H, H, eps);
    /* last_only gathers into the (free by now) o_proj scratch of block 0 */
    lm_head(m, a, ops, a->logits, a->hfinal, a->blk[0].attn_proj, B, T, o->last_only, o->last_b);
    if (!a->mtp || o->kv) return 0;

    mtp_train_forward(m, a, ops, a->ids, B, T, cs, sn);
    return 0;
}

int ds_model_forward_stage(const ds_model *m, ds_acts *a, const struct ds_ops *ops, const int32_t *ids, const float *x_in) {
    const ds_config *c = &m->cfg;
    const int64_t L = c->num_hidden_layers;
    const int64_t B = a->B, T = a->T, N = B * T, H = c->hidden_size, V = c->vocab_size;
    const float eps = (float)c->rms_norm_eps;
    if (a->flags & DS_ACTS_INFER) return ds_err("forward of a stage: needs a training set (ds_acts_create_stage)");
    if (a->l0 > 0 && !x_in) return ds_err("forward of a stage from layer %lld: no input state", (long long)a->l0);
    for (int64_t i = 0; i < N; i++) /* host: ids */
        if (ids[i] < 0 || ids[i] >= V)
            return ds_err("token id %lld at sequence %lld, position %lld is outside the vocabulary [0, %lld)",
                          (long long)ids[i], (long long)(i / T), (long long)(i % T), (long long)V);
    ops->copy_h2d(a->ids, ids, (size_t)N * sizeof(int32_t));
    const float *cs, *sn;
    rope_rows(m, a, ops, 0, &cs, &sn);
    if (a->l0 == 0) ds_embed_any(ops, a->emb, a->ids, m->embed, m->embed8, N, H);
    else ops->copy_h2d(a->emb, x_in, (size_t)(N * H) * sizeof(float));
    const float *x = a->emb;
    for (int64_t l = a->l0; l < a->l1; l++) {
        block_forward(a->blk[l].out, &a->blk[l], x, &m->blocks[l], m, ops, cs, sn, B, T, NULL);
        x = a->blk[l].out;
    }
    if (a->l1 < L) return 0;
    ops->rmsnorm_forward(a->hfinal, a->hfinal_rstd, x, m->norm, N, H, H, H, eps);
    lm_head(m, a, ops, a->logits, a->hfinal, NULL, B, T, 0, NULL);
    if (!a->mtp) return 0;
    mtp_train_forward(m, a, ops, a->ids, B, T, cs, sn);
    return 0;
}

int ds_model_mtp_forward_ex(const ds_model *m, ds_acts *a, const struct ds_ops *ops, int64_t k, const float *h,
                            const int32_t *next, const ds_fwd_opts *o) {
    const ds_config *c = &m->cfg;
    const int64_t L = c->num_hidden_layers, V = c->vocab_size;
    if (!a->mtp || k < 1 || k > c->num_nextn_predict_layers)
        return ds_err("mtp: module %lld is not part of these activations", (long long)k);
    int64_t n, B;
    if (check_opts(m, a, o, L + k - 1, &n, &B)) return -1;
    for (int64_t i = 0; i < B * n; i++)
        if (next[i] < 0 || next[i] >= V)
            return ds_err("mtp: token id %lld is outside the vocabulary [0, %lld)", (long long)next[i], (long long)V);
    ops->copy_h2d(a->ids, next, (size_t)(B * n) * sizeof(int32_t)); /* the embedding reads the table's copy */
    const float *cs, *sn;
    rope_rows(m, a, ops, o->pos_b ? 0 : o->pos, &cs, &sn);
    ds_mla_cache kvl;
    mtp_module(m, a, ops, k, a->ids, n, h, n, B, n, cs, sn, cache_layer(&kvl, o, L + k - 1), o->last_only, o->last_b);
    return 0;
}

double ds_model_forward_flops(const ds_model *m, int64_t B, int64_t T, int mtp) {
    const ds_config *c = &m->cfg;
    ds_param_counts pc;
    ds_layout_count(&pc, &m->layout, c);
    /* matmul parameters: the input embedding is a gather, norms are O(H) */
    double mm = (double)pc.activated - (double)c->vocab_size * c->hidden_size * (c->tie_word_embeddings ? 0 : 1);
    double N = (double)B * T;
    double nh = (double)c->num_attention_heads, dq = (double)ds_config_qk_head_dim(c), dv = (double)c->v_head_dim;
    double att1 = 2.0 * B * nh * (dq + dv); /* per causal (query, key) pair and layer */
    double f = 2.0 * mm * N + att1 * ((double)T * (T + 1) / 2) * c->num_hidden_layers;
    if (mtp) {
        /* per MTP module: its own weights (K of E experts) + the shared head, on T-k tokens */
        int64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
        for (int64_t k = 1; k <= c->num_nextn_predict_layers && k < T; k++) { /* host: meta */
            double w = (double)c->vocab_size * c->hidden_size;
            for (int64_t i = 0; i < m->layout.n; i++) {
                const ds_param *p = &m->layout.p[i];
                if (p->layer != c->num_hidden_layers + k - 1 || (p->flags & (DS_PARAM_ALIAS | DS_PARAM_BUFFER)))
                    continue;
                w += (p->flags & DS_PARAM_EXPERT) ? (double)p->numel * K / E : (double)p->numel;
            }
            double Tk = (double)(T - k);
            f += 2.0 * w * B * Tk + att1 * (Tk * (Tk + 1) / 2);
        }
    }
    return f;
}
