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
#include <sys/resource.h>
#include <unistd.h>

#include "base/base.h"

/* Two passes over the same code: a dry one (dry = 1) that only counts the
 * entries and the floats, with overflow-checked int64 arithmetic, then the
 * real one into a table allocated once the sizes are known to fit. */
typedef struct {
    ds_layout *lo;
    int64_t cap;
    int dry;
    int overflow;
} builder;

static int64_t add(builder *b, int64_t layer, int flags, int64_t r, int64_t c, const char *fmt, ...)
    DS_PRINTF(6, 7);
static int64_t add(builder *b, int64_t layer, int flags, int64_t r, int64_t c, const char *fmt, ...) {
    ds_layout *lo = b->lo;
    int64_t numel = r, padded, total;
    if ((c > 0 && __builtin_mul_overflow(r, c, &numel)) || numel < 0 || __builtin_add_overflow(numel, 15, &padded) ||
        __builtin_add_overflow(lo->total, padded / 16 * 16, &total)) {
        b->overflow = 1;
        return lo->n++;
    }
    if (b->dry) {
        lo->total = total;
        return lo->n++;
    }
    DS_ASSERT(lo->n < b->cap);
    ds_param *p = &lo->p[lo->n];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = c > 0 ? 2 : 1;
    p->shape[0] = r;
    p->shape[1] = c > 0 ? c : 0;
    p->numel = numel;
    p->layer = layer;
    p->flags = flags;
    p->alias_of = -1;
    p->offset = lo->total;
    lo->total = total;
    return lo->n++;
}

static void add_alias(builder *b, int64_t src, int64_t layer, int flags, const char *name) {
    ds_layout *lo = b->lo;
    if (b->dry) { /* owns no floats */
        lo->n++;
        return;
    }
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

static void build_all(builder *b, const ds_config *c) {
    const int64_t H = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    int64_t emb = add(b, -1, 0, V, H, "model.embed_tokens.weight");
    for (int64_t l = 0; l < L; l++) add_block(b, c, l, 0);
    add(b, -1, DS_PARAM_NORM, H, 0, "model.norm.weight");
    int64_t head;
    if (c->tie_word_embeddings) {
        add_alias(b, emb, -1, 0, "lm_head.weight");
        head = emb;
    } else {
        head = add(b, -1, 0, V, H, "lm_head.weight");
    }
    for (int64_t k = 1; k <= c->num_nextn_predict_layers; k++) {
        int64_t l = L + k - 1;
        char pre[64], nm[112];
        snprintf(pre, sizeof pre, "model.layers.%lld.", (long long)l);
        snprintf(nm, sizeof nm, "%sembed_tokens.weight", pre);
        add_alias(b, emb, l, DS_PARAM_MTP, nm);
        add(b, l, DS_PARAM_MTP | DS_PARAM_NORM, H, 0, "%senorm.weight", pre);
        add(b, l, DS_PARAM_MTP | DS_PARAM_NORM, H, 0, "%shnorm.weight", pre);
        add(b, l, DS_PARAM_MTP, H, 2 * H, "%seh_proj.weight", pre);
        add_block(b, c, l, 1);
        add(b, l, DS_PARAM_MTP | DS_PARAM_NORM, H, 0, "%sshared_head.norm.weight", pre);
        snprintf(nm, sizeof nm, "%sshared_head.head.weight", pre);
        add_alias(b, head, l, DS_PARAM_MTP, nm);
    }
}

int ds_layout_size(const ds_config *c, int64_t *entries, int64_t *floats) {
    *entries = *floats = 0;
    if (c->hidden_size <= 0 || c->vocab_size <= 0 || c->num_hidden_layers < 0 || c->num_nextn_predict_layers < 0)
        return ds_err("config: hidden_size, vocab_size and layer counts must be positive");
    /* ds_config_validate bounds the sizes far lower; these bounds hold for a
     * config that skipped it: the counting pass is linear in layers x experts,
     * and products of two sizes formed before add() stay inside int64 */
    const int64_t g = (int64_t)1 << 30;
    struct { const char *key; int64_t v, max; } lim[] = {
        {"num_hidden_layers", c->num_hidden_layers, DS_MAX_LAYERS},
        {"num_nextn_predict_layers", c->num_nextn_predict_layers, DS_MAX_MTP_LAYERS},
        {"n_routed_experts", c->n_routed_experts, DS_MAX_ROUTED_EXPERTS},
        {"hidden_size", c->hidden_size, g}, {"vocab_size", c->vocab_size, g},
        {"intermediate_size", c->intermediate_size, g}, {"moe_intermediate_size", c->moe_intermediate_size, g},
        {"n_shared_experts", c->n_shared_experts, g}, {"num_attention_heads", c->num_attention_heads, g},
        {"q_lora_rank", c->q_lora_rank, g}, {"kv_lora_rank", c->kv_lora_rank, g},
        {"qk_nope_head_dim", c->qk_nope_head_dim, g}, {"qk_rope_head_dim", c->qk_rope_head_dim, g},
        {"v_head_dim", c->v_head_dim, g},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++)
        if (lim[i].v > lim[i].max || lim[i].v < 0)
            return ds_err("config: %s: %lld is out of range for the parameter layout (0 to %lld)", lim[i].key,
                          (long long)lim[i].v, (long long)lim[i].max);
    ds_layout lo;
    memset(&lo, 0, sizeof lo);
    builder b = {&lo, 0, 1, 0};
    build_all(&b, c);
    if (b.overflow) return ds_err("config: the parameter count overflows 64-bit integers (sizes too large)");
    *entries = lo.n;
    *floats = lo.total;
    return 0;
}

int ds_layout_build(ds_layout *lo, const ds_config *c) {
    memset(lo, 0, sizeof *lo);
    int64_t n, floats, table;
    if (ds_layout_size(c, &n, &floats)) return -1;
    if (__builtin_mul_overflow(n, (int64_t)sizeof(ds_param), &table)) table = -1;
    if (ds_mem_check(table, "the parameter table")) return -1;
    builder b = {lo, n, 0, 0};
    lo->p = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof(ds_param));
    build_all(&b, c);
    DS_ASSERT(!b.overflow && lo->n == n && lo->total == floats);
    return 0;
}

/* ---- memory limit -------------------------------------------------------------- */
static int64_t parse_bytes(const char *s) {
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024.0, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    else if (*end == 'T' || *end == 't') mul = 1024.0 * 1024 * 1024 * 1024, end++;
    if (end == s || *end || !(v >= 0) || v * mul > 9.0e18) return -1;
    return (int64_t)(v * mul);
}

int64_t ds_mem_available(void) {
    const char *env = getenv("DSV3_MEM_LIMIT");
    if (env && *env) {
        int64_t v = parse_bytes(env);
        if (v >= 0) return v;
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    int64_t mem = pages > 0 && psz > 0 ? (int64_t)pages * (int64_t)psz : INT64_MAX;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (int64_t)rl.rlim_cur < mem)
        mem = (int64_t)rl.rlim_cur;
    return mem;
}

static void human(char *buf, size_t cap, int64_t b) {
    double v = (double)b;
    if (v >= 1099511627776.0) snprintf(buf, cap, "%.1f TiB", v / 1099511627776.0);
    else if (v >= 1073741824.0) snprintf(buf, cap, "%.1f GiB", v / 1073741824.0);
    else snprintf(buf, cap, "%.1f MiB", v / 1048576.0);
}

int ds_mem_check(int64_t bytes, const char *what) {
    if (bytes < 0) return ds_err("%s: the size overflows 64-bit integers", what);
    int64_t avail = ds_mem_available();
    if (bytes <= avail) return 0;
    char a[32], b[32];
    human(a, sizeof a, bytes);
    human(b, sizeof b, avail);
    return ds_err("%s: %lld bytes (%s) needed, more than the %lld bytes (%s) of memory available%s", what,
                  (long long)bytes, a, (long long)avail, b,
                  getenv("DSV3_MEM_LIMIT") && *getenv("DSV3_MEM_LIMIT") ? " (DSV3_MEM_LIMIT)" : "");
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
