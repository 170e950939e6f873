/*
 * layout.c — builds the parameter layout table (see layout.h) from a config.
 * Names and shapes follow doc §3 (per-expert keys, not the fused v5 keys) and
 * §7.3 for MTP.  Offsets are assigned in table order, 16-float aligned so every
 * tensor starts on a 64-byte boundary.
 */
#include "model/layout.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

typedef struct {
    ds_layout *lo;
    int64_t cap;
} builder;

static int64_t add(builder *b, int64_t layer, int flags, int64_t r, int64_t c, const char *fmt, ...)
    DS_PRINTF(6, 7);
static int64_t add(builder *b, int64_t layer, int flags, int64_t r, int64_t c, const char *fmt, ...) {
    ds_layout *lo = b->lo;
    if (lo->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 256;
        lo->p = ds_realloc(lo->p, (size_t)b->cap * sizeof(ds_param));
    }
    ds_param *p = &lo->p[lo->n];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = c > 0 ? 2 : 1;
    p->shape[0] = r;
    p->shape[1] = c > 0 ? c : 0;
    p->numel = c > 0 ? r * c : r;
    p->layer = layer;
    p->flags = flags;
    p->alias_of = -1;
    p->offset = lo->total;
    lo->total += (p->numel + 15) / 16 * 16;
    return lo->n++;
}

static void add_alias(builder *b, int64_t src, int64_t layer, int flags, const char *name) {
    ds_layout *lo = b->lo;
    int64_t save = lo->total;
    const ds_param s = lo->p[src];
    int64_t i = add(b, layer, flags | DS_PARAM_ALIAS, s.shape[0], s.ndim == 2 ? s.shape[1] : 0, "%s", name);
    lo->total = save;
    lo->p[i].offset = s.offset;
    lo->p[i].alias_of = src;
}

static void add_block(builder *b, const ds_config *c, int64_t l, int mtp) {
    const int64_t H = c->hidden_size, nh = c->num_attention_heads;
    const int64_t dq = ds_config_qk_head_dim(c), dn = c->qk_nope_head_dim, dv = c->v_head_dim;
    const int64_t dr = c->qk_rope_head_dim, rq = c->q_lora_rank, rkv = c->kv_lora_rank;
    const int m = mtp ? DS_PARAM_MTP : 0;
    char pre[64];
    snprintf(pre, sizeof pre, "model.layers.%lld.", (long long)l);
    add(b, l, m | DS_PARAM_NORM, H, 0, "%sinput_layernorm.weight", pre);
    if (rq > 0) {
        add(b, l, m, rq, H, "%sself_attn.q_a_proj.weight", pre);
        if (c->attention_bias) add(b, l, m | DS_PARAM_ZERO, rq, 0, "%sself_attn.q_a_proj.bias", pre);
        add(b, l, m | DS_PARAM_NORM, rq, 0, "%sself_attn.q_a_layernorm.weight", pre);
        add(b, l, m, nh * dq, rq, "%sself_attn.q_b_proj.weight", pre);
    } else {
        add(b, l, m, nh * dq, H, "%sself_attn.q_proj.weight", pre);
    }
    add(b, l, m, rkv + dr, H, "%sself_attn.kv_a_proj_with_mqa.weight", pre);
    if (c->attention_bias) add(b, l, m | DS_PARAM_ZERO, rkv + dr, 0, "%sself_attn.kv_a_proj_with_mqa.bias", pre);
    add(b, l, m | DS_PARAM_NORM, rkv, 0, "%sself_attn.kv_a_layernorm.weight", pre);
    add(b, l, m, nh * (dn + dv), rkv, "%sself_attn.kv_b_proj.weight", pre);
    add(b, l, m, H, nh * dv, "%sself_attn.o_proj.weight", pre);
    if (c->attention_bias) add(b, l, m | DS_PARAM_ZERO, H, 0, "%sself_attn.o_proj.bias", pre);
    add(b, l, m | DS_PARAM_NORM, H, 0, "%spost_attention_layernorm.weight", pre);
    if (ds_config_layer_is_moe(c, l)) {
        const int64_t E = c->n_routed_experts, Im = c->moe_intermediate_size;
        add(b, l, m, E, H, "%smlp.gate.weight", pre);
        if (c->topk_method == DS_TOPK_NOAUX_TC)
            add(b, l, m | DS_PARAM_ZERO | DS_PARAM_BUFFER, E, 0, "%smlp.gate.e_score_correction_bias", pre);
        for (int64_t e = 0; e < E; e++) {
            add(b, l, m | DS_PARAM_EXPERT, Im, H, "%smlp.experts.%lld.gate_proj.weight", pre, (long long)e);
            add(b, l, m | DS_PARAM_EXPERT, Im, H, "%smlp.experts.%lld.up_proj.weight", pre, (long long)e);
            add(b, l, m | DS_PARAM_EXPERT, H, Im, "%smlp.experts.%lld.down_proj.weight", pre, (long long)e);
        }
        if (c->n_shared_experts > 0) {
            const int64_t Is = Im * c->n_shared_experts;
            add(b, l, m, Is, H, "%smlp.shared_experts.gate_proj.weight", pre);
            add(b, l, m, Is, H, "%smlp.shared_experts.up_proj.weight", pre);
            add(b, l, m, H, Is, "%smlp.shared_experts.down_proj.weight", pre);
        }
    } else {
        const int64_t I = c->intermediate_size;
        add(b, l, m, I, H, "%smlp.gate_proj.weight", pre);
        add(b, l, m, I, H, "%smlp.up_proj.weight", pre);
        add(b, l, m, H, I, "%smlp.down_proj.weight", pre);
    }
}

int ds_layout_build(ds_layout *lo, const ds_config *c) {
    memset(lo, 0, sizeof *lo);
    if (c->hidden_size <= 0 || c->vocab_size <= 0 || c->num_hidden_layers < 0 || c->num_nextn_predict_layers < 0)
        return ds_err("config: hidden_size, vocab_size and layer counts must be positive");
    builder b = {lo, 0};
    const int64_t H = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    int64_t emb = add(&b, -1, 0, V, H, "model.embed_tokens.weight");
    for (int64_t l = 0; l < L; l++) add_block(&b, c, l, 0);
    add(&b, -1, DS_PARAM_NORM, H, 0, "model.norm.weight");
    int64_t head;
    if (c->tie_word_embeddings) {
        add_alias(&b, emb, -1, 0, "lm_head.weight");
        head = emb;
    } else {
        head = add(&b, -1, 0, V, H, "lm_head.weight");
    }
    for (int64_t k = 1; k <= c->num_nextn_predict_layers; k++) {
        int64_t l = L + k - 1;
        char pre[64], nm[112];
        snprintf(pre, sizeof pre, "model.layers.%lld.", (long long)l);
        snprintf(nm, sizeof nm, "%sembed_tokens.weight", pre);
        add_alias(&b, emb, l, DS_PARAM_MTP, nm);
        add(&b, l, DS_PARAM_MTP | DS_PARAM_NORM, H, 0, "%senorm.weight", pre);
        add(&b, l, DS_PARAM_MTP | DS_PARAM_NORM, H, 0, "%shnorm.weight", pre);
        add(&b, l, DS_PARAM_MTP, H, 2 * H, "%seh_proj.weight", pre);
        add_block(&b, c, l, 1);
        add(&b, l, DS_PARAM_MTP | DS_PARAM_NORM, H, 0, "%sshared_head.norm.weight", pre);
        snprintf(nm, sizeof nm, "%sshared_head.head.weight", pre);
        add_alias(&b, head, l, DS_PARAM_MTP, nm);
    }
    return 0;
}

void ds_layout_free(ds_layout *lo) {
    free(lo->p);
    memset(lo, 0, sizeof *lo);
}

int64_t ds_layout_find(const ds_layout *lo, const char *name) {
    for (int64_t i = 0; i < lo->n; i++)
        if (!strcmp(lo->p[i].name, name)) return i;
    return -1;
}

void ds_layout_count(ds_param_counts *pc, const ds_layout *lo, const ds_config *c) {
    memset(pc, 0, sizeof *pc);
    int64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
    int64_t expert_main = 0;
    for (int64_t i = 0; i < lo->n; i++) {
        const ds_param *p = &lo->p[i];
        if (p->flags & DS_PARAM_ALIAS) continue;
        if (p->flags & DS_PARAM_BUFFER) { pc->buffers += p->numel; continue; }
        if (p->flags & DS_PARAM_MTP) { pc->mtp += p->numel; continue; }
        pc->total += p->numel;
        if (p->flags & DS_PARAM_EXPERT) expert_main += p->numel;
    }
    /* per token: everything except the routed experts, plus K of E of them */
    pc->activated = pc->total - expert_main + (E > 0 ? expert_main / E * K : 0);
}
