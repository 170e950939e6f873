/*
 * model_io.c — load a model folder (config.json + safetensors, single or
 * sharded) into the FP32 parameter allocation, and save one.  The loop is over
 * the layout table: every owned tensor must be present with the shape the
 * config implies; BF16/F16 are widened, F8_E4M3 weights are dequantised with
 * their `<name>_scale_inv` 128x128 block scales (doc §8.2).  Alias entries
 * (MTP copies of the shared embedding/head, a tied lm_head) are not read:
 * their storage is the source tensor's.
 *
 * Resident loading (ds_load_opts.fp8_resident): the F8_E4M3 linear
 * weights are copied as codes with their scales (checked: present, float,
 * (ceil(rows/128), ceil(cols/128))) into the model's FP8 allocations instead,
 * and the BF16 2-D matmul weights (linears, router, embedding, lm_head,
 * eh_proj) as BF16 bits into its BF16 allocation.
 */
#include "model/model.h"
#include "model/expert_shard.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "num/quant.h"
#include "tokenizer/tok_config.h"

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* Codes and scales of FP8-resident entry i (weight t in file). */
static int load_fp8_resident(ds_model *m, int64_t i, const ds_st_tensor *t, const ds_st_set *s, const char *file) {
    const ds_param *p = &m->layout.p[i];
    char sname[128];
    snprintf(sname, sizeof sname, "%s_scale_inv", p->name);
    const char *sfile = NULL;
    const ds_st_tensor *sc = ds_st_set_find(s, sname, &sfile);
    if (!sc) return ds_err("%s: tensor %s is F8_E4M3 but %s is missing", file, p->name, sname);
    int64_t want[2];
    ds_quant_scale_shape(DS_QUANT_BLOCK_128x128, p->shape[0], p->shape[1], want);
    if (!ds_dtype_table[sc->dtype].is_float)
        return ds_err("%s: tensor %s: scale dtype %s, expected a float type", sfile, sname,
                      ds_dtype_table[sc->dtype].st_name);
    if (sc->ndim != 2 || sc->shape[0] != want[0] || sc->shape[1] != want[1]) {
        char a[96], b[64];
        shape_str(a, sizeof a, sc->ndim, sc->shape);
        shape_str(b, sizeof b, 2, want);
        return ds_err("%s: tensor %s: shape %s, expected %s for the 128x128 blocks of %s [%lld, %lld]", sfile, sname, a,
                      b, p->name, (long long)p->shape[0], (long long)p->shape[1]);
    }
    ds_fp8w *w = &m->fp8w[i];
    memcpy((uint8_t *)w->q, t->data, (size_t)p->numel); /* host: io */
    if (ds_st_to_f32(sc, (float *)w->scale)) return ds_err_prefix("%s: tensor %s", sfile, sname);
    return 0;
}

/* A linear weight the forward runs through linear_forward (attention
 * projections, dense / shared / routed expert MLP): the FP8-resident kind. */
static int is_fp8_linear(const ds_param *p) {
    if (p->ndim != 2 || (p->flags & DS_PARAM_ALIAS)) return 0;
    if (!strstr(p->name, ".self_attn.") && !strstr(p->name, ".mlp.")) return 0;
    size_t n = strlen(p->name);
    static const char *const suf[] = {"_proj.weight", "_proj_with_mqa.weight"};
    for (int k = 0; k < 2; k++) {
        size_t ns = strlen(suf[k]);
        if (n > ns && !strcmp(p->name + n - ns, suf[k])) return 1;
    }
    return 0;
}

/* A 2-D matmul weight outside those linears that may stay BF16-resident: the
 * router, the embedding table, lm_head, the MTP eh_proj. */
static int is_bf16_matmul(const ds_param *p) {
    if (p->ndim != 2 || (p->flags & DS_PARAM_ALIAS)) return 0;
    size_t n = strlen(p->name);
    static const char *const suf[] = {".mlp.gate.weight", "embed_tokens.weight", "lm_head.weight", "eh_proj.weight",
                                      "shared_head.head.weight"};
    for (int k = 0; k < 5; k++) {
        size_t ns = strlen(suf[k]);
        if (n >= ns && !strcmp(p->name + n - ns, suf[k])) return 1;
    }
    return 0;
}

/* ---- non-finite weights --------------------------------------------------------
 * A NaN or infinity in a weight makes every logit NaN downstream; the load
 * refuses it, naming the tensor and the first bad element.  The scans are
 * branch-free per 4096-element block (they vectorize; blocks in parallel) and
 * locate the element only in a block that has one. */
#define DEF_FIRST_BAD(fn, T, BAD)                                                        \
    static int64_t fn(const T *x, int64_t n) {                                          \
        const int64_t nb = (n + 4095) / 4096;                                           \
        int64_t first = INT64_MAX;                                                      \
        _Pragma("omp parallel for schedule(static) reduction(min : first) if (nb > 16)") \
        for (int64_t k = 0; k < nb; k++) {                                              \
            const int64_t i = k * 4096, e = n - i < 4096 ? n : i + 4096;                \
            int bad = 0;                                                                \
            for (int64_t j = i; j < e; j++) bad |= BAD(x[j]);                           \
            if (bad)                                                                    \
                for (int64_t j = i; j < e; j++)                                         \
                    if (BAD(x[j])) {                                                    \
                        if (j < first) first = j;                                       \
                        break;                                                          \
                    }                                                                   \
        }                                                                               \
        return first == INT64_MAX ? -1 : first;                                         \
    }
#define BAD_F32(v) (!(fabsf(v) <= FLT_MAX))
#define BAD_BF16(v) (((v) & 0x7f80) == 0x7f80) /* exponent all ones */
#define BAD_E4M3(v) (((v) & 0x7f) == 0x7f)     /* S.1111.111 is NaN (E4M3 has no infinity) */
DEF_FIRST_BAD(first_bad_f32, float, BAD_F32)
DEF_FIRST_BAD(first_bad_bf16, uint16_t, BAD_BF16)
DEF_FIRST_BAD(first_bad_e4m3, uint8_t, BAD_E4M3)

static int nonfinite_err(const char *file, const char *name, const ds_param *p, int64_t at, const char *what) {
    if (p->ndim == 2)
        return ds_err("%s: tensor %s: non-finite %s at [%lld, %lld] (flat index %lld); refusing to load the model "
                      "(DSV3_ALLOW_NONFINITE=1 loads it anyway)",
                      file, name, what, (long long)(at / p->shape[1]), (long long)(at % p->shape[1]), (long long)at);
    return ds_err("%s: tensor %s: non-finite %s at [%lld]; refusing to load the model (DSV3_ALLOW_NONFINITE=1 loads "
                  "it anyway)", file, name, what, (long long)at);
}

/* Entry i as loaded (FP32 floats, FP8 codes and scales, BF16 bits) holds only
 * finite values, else -1 with the message above. */
static int check_finite(const ds_model *m, int64_t i, const char *file) {
    const ds_param *p = &m->layout.p[i];
    int64_t at;
    if (p->offset >= 0 && (at = first_bad_f32(m->params + p->offset, p->numel)) >= 0) {
        char what[48];
        float v = m->params[p->offset + at];
        snprintf(what, sizeof what, "value %s", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return nonfinite_err(file, p->name, p, at, what);
    }
    if (p->flags & DS_PARAM_BF16 && (at = first_bad_bf16(m->fp8w[i].b16, p->numel)) >= 0)
        return nonfinite_err(file, p->name, p, at, "BF16 value");
    if (p->flags & DS_PARAM_FP8) {
        const ds_fp8w *w = &m->fp8w[i];
        if ((at = first_bad_e4m3(w->q, p->numel)) >= 0) return nonfinite_err(file, p->name, p, at, "FP8 code (NaN)");
        int64_t ns = ds_quant_scale_count(DS_QUANT_BLOCK_128x128, p->shape[0], p->shape[1]);
        if ((at = first_bad_f32(w->scale, ns)) >= 0)
            return ds_err("%s: tensor %s_scale_inv: non-finite scale at flat index %lld; refusing to load the model "
                          "(DSV3_ALLOW_NONFINITE=1 loads it anyway)", file, p->name, (long long)at);
    }
    return 0;
}

static int load_tensors(ds_model *m, const ds_st_set *s, const char *dir, int check) {
    const ds_config *c = &m->cfg;
    int64_t b0 = c->quant_block[0] > 0 ? c->quant_block[0] : 128, b1 = c->quant_block[1] > 0 ? c->quant_block[1] : 128;
    for (int64_t i = 0; i < m->layout.n; i++) {
        const ds_param *p = &m->layout.p[i];
        if (p->flags & DS_PARAM_ALIAS) continue;
        const char *file = NULL;
        const ds_st_tensor *t = ds_st_set_find(s, p->name, &file);
        if (!t) return ds_err("%s: tensor %s: missing (the config implies it)", dir, p->name);
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            char want[64], got[96];
            shape_str(want, sizeof want, p->ndim, p->shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            return ds_err("%s: tensor %s: shape %s, config.json implies %s", file, p->name, got, want);
        }
        if (p->flags & DS_PARAM_REMOTE) continue; /* another expert shard's */
        if (p->flags & DS_PARAM_FP8) {
            if (load_fp8_resident(m, i, t, s, file)) return -1;
            if (p->offset < 0) {
                if (check && check_finite(m, i, file)) return -1;
                continue; /* else (kv_b) also dequantized below */
            }
        }
        if (p->flags & DS_PARAM_BF16) {
            /* the bits as stored (little-endian u16, like the host) */
            memcpy((uint16_t *)m->fp8w[i].b16, t->data, (size_t)p->numel * sizeof(uint16_t)); /* host: io */
            if (p->offset < 0) {
                if (check && check_finite(m, i, file)) return -1;
                continue; /* else (kv_b) also widened below */
            }
        }
        float *dst = m->params + p->offset;
        if (t->dtype == DS_F32 || t->dtype == DS_BF16 || t->dtype == DS_F16) {
            if (ds_st_to_f32(t, dst)) return ds_err_prefix("%s: tensor %s", file, p->name);
        } else if (t->dtype == DS_F8_E4M3) {
            char sname[128];
            snprintf(sname, sizeof sname, "%s_scale_inv", p->name);
            const char *sfile = NULL;
            const ds_st_tensor *sc = ds_st_set_find(s, sname, &sfile);
            if (!sc) return ds_err("%s: tensor %s is F8_E4M3 but %s is missing", file, p->name, sname);
            if (ds_st_dequant_fp8_block(t, sc, b0, b1, dst)) return ds_err_prefix("%s: tensor %s", file, p->name);
        } else {
            return ds_err("%s: tensor %s: dtype %s is not a supported weight type (F32, BF16, F16, F8_E4M3)", file,
                          p->name, ds_dtype_table[t->dtype].st_name);
        }
        if (check && check_finite(m, i, file)) return -1;
    }
    return 0;
}

int ds_model_load(ds_model *m, const char *dir) { return ds_model_load_ex(m, dir, NULL); }

int ds_model_load_ex(ds_model *m, const char *dir, const ds_load_opts *o) {
    memset(m, 0, sizeof *m);
    char *cpath = ds_path_join(dir, "config.json");
    ds_config c;
    int rc = ds_config_load(&c, cpath);
    if (!rc) rc = ds_config_validate(&c, cpath);
    free(cpath);
    if (rc) return -1;
    ds_st_set s;
    if (ds_st_set_open(&s, dir)) return -1;
    /* transformers writes num_nextn_predict_layers (default 1) but never the MTP
     * weights: with none of model.layers.<L>.* present the model loads without MTP
     * (said once the load succeeded) */
    int64_t mtp_dropped = 0;
    char mtp_pre[48];
    if (c.num_nextn_predict_layers > 0) {
        int n = snprintf(mtp_pre, sizeof mtp_pre, "model.layers.%lld.", (long long)c.num_hidden_layers), any = 0;
        for (int64_t i = 0; i < s.nrefs && !any; i++) any = !strncmp(s.refs[i].t->name, mtp_pre, (size_t)n);
        if (!any) {
            mtp_dropped = c.num_nextn_predict_layers;
            c.num_nextn_predict_layers = 0;
        }
    }
    uint8_t *fp8 = NULL;
    /* FP8 residency needs DeepSeek's 128x128 weight blocks (other block sizes are dequantized) */
    int blk128 = (c.quant_block[0] <= 0 || c.quant_block[0] == 128) && (c.quant_block[1] <= 0 || c.quant_block[1] == 128);
    if (o && o->fp8_resident) {
        ds_layout lo;
        if (ds_layout_build(&lo, &c)) {
            ds_st_set_close(&s);
            return -1;
        }
        fp8 = ds_calloc((size_t)(lo.n > 0 ? lo.n : 1), 1);
        for (int64_t i = 0; i < lo.n; i++) {
            const int lin = is_fp8_linear(&lo.p[i]);
            const ds_st_tensor *t = lin || is_bf16_matmul(&lo.p[i]) ? ds_st_set_find(&s, lo.p[i].name, NULL) : NULL;
            int same = t && t->ndim == 2 && t->shape[0] == lo.p[i].shape[0] && t->shape[1] == lo.p[i].shape[1];
            /* a wrong shape is reported by the load loop */
            if (same && lin && blk128 && t->dtype == DS_F8_E4M3) fp8[i] = DS_RESIDENT_FP8;
            else if (same && t->dtype == DS_BF16) fp8[i] = DS_RESIDENT_BF16;
        }
        ds_layout_free(&lo);
    }
    if (o && (o->ep_size > 1 || o->stage) && fp8) {
        free(fp8);
        ds_st_set_close(&s);
        return ds_err("%s: an expert shard is loaded in FP32 only", dir);
    }
    rc = o && o->stage   ? ds_model_create_stage(m, &c, o->ep_size > 1 ? o->ep_size : 1, o->ep_rank, o->stage)
         : o && o->ep_size > 1 ? ds_model_create_shard(m, &c, o->ep_size, o->ep_rank)
                               : ds_model_create_ex(m, &c, fp8);
    free(fp8);
    if (rc) {
        ds_st_set_close(&s);
        return -1;
    }
    const char *allow = getenv("DSV3_ALLOW_NONFINITE");
    int check = !(o && o->allow_nonfinite) && !(allow && *allow && strcmp(allow, "0"));
    double t0 = ds_now();
    rc = load_tensors(m, &s, dir, check);
    ds_log(DS_LOG_DEBUG, "loaded %s in %.3f s%s", dir, ds_now() - t0, check ? " (finite-checked)" : "");
    ds_st_set_close(&s);
    /* loaded on the host; then onto the caller's table */
    if (!rc && o && o->mem) rc = ds_model_to(m, o->mem);
    if (rc) ds_model_free(m);
    else if (mtp_dropped)
        ds_log(DS_LOG_INFO, "%s: config.json has num_nextn_predict_layers %lld but the folder holds no MTP weights "
               "(%s*); loaded without MTP", dir, (long long)mtp_dropped, mtp_pre);
    return rc;
}

int ds_model_require_f32(const ds_model *m, const char *what) {
    if (!m->fp8w) return 0;
    return ds_err("%s needs FP32 parameters, but the model holds FP8-resident or BF16-resident weights (load it "
                  "dequantized: --dequant)", what);
}

void ds_model_weight_mem(const ds_model *m, ds_weight_mem *w) {
    memset(w, 0, sizeof *w);
    for (int64_t i = 0; i < m->layout.n; i++) {
        const ds_param *p = &m->layout.p[i];
        if (p->flags & DS_PARAM_ALIAS) continue;
        w->params += p->numel;
        if (p->flags & DS_PARAM_FP8) w->fp8_params += p->numel;
        if (p->flags & DS_PARAM_BF16) w->bf16_params += p->numel;
    }
    w->fp8_bytes = m->fp8_numel;
    w->scale_bytes = m->fp8_scale_numel * (int64_t)sizeof(float);
    w->bf16_bytes = m->bf16_numel * (int64_t)sizeof(uint16_t);
    w->f32_bytes = m->layout.total * (int64_t)sizeof(float);
    w->total_bytes = w->fp8_bytes + w->scale_bytes + w->bf16_bytes + w->f32_bytes;
    w->f32_equiv_bytes = w->params * 4;
    w->bf16_equiv_bytes = w->params * 2;
}

static double mib(int64_t b) { return (double)b / (1024.0 * 1024.0); }

void ds_weight_mem_str(const ds_weight_mem *w, char *buf, size_t cap) {
    snprintf(buf, cap,
             "resident weights: FP8 %.2f MiB (%lld params) + scales %.1f KiB + BF16 %.2f MiB (%lld params) + "
             "FP32 %.2f MiB = %.2f MiB (all-FP32 model %.2f MiB, all-BF16 %.2f MiB)",
             mib(w->fp8_bytes), (long long)w->fp8_params, (double)w->scale_bytes / 1024.0, mib(w->bf16_bytes),
             (long long)w->bf16_params, mib(w->f32_bytes), mib(w->total_bytes),
             mib(w->f32_equiv_bytes), mib(w->bf16_equiv_bytes));
}

void ds_model_log_weight_mem(const ds_model *m) {
    ds_weight_mem w;
    ds_model_weight_mem(m, &w);
    char buf[400];
    ds_weight_mem_str(&w, buf, sizeof buf);
    ds_log(m->fp8w ? DS_LOG_INFO : DS_LOG_DEBUG, "%s", buf);
}

int ds_model_save(const ds_model *m, const char *dir) {
    if (ds_model_require_f32(m, "save")) return -1;
    if (ds_mkdir_p(dir)) return -1;
    /* weights on a device: written from a host copy */
    const float *params = m->params;
    float *staged = NULL;
    if (m->mem && !m->mem->host_visible) {
        params = staged = ds_malloc((size_t)(m->layout.total > 0 ? m->layout.total : 1) * sizeof(float));
        m->mem->copy_d2h(staged, m->params, (size_t)m->layout.total * sizeof(float));
    }
    ds_st_entry *e = ds_calloc((size_t)m->layout.n, sizeof *e);
    for (int64_t i = 0; i < m->layout.n; i++) {
        const ds_param *p = &m->layout.p[i];
        e[i].name = p->name;
        e[i].dtype = DS_F32;
        e[i].ndim = p->ndim;
        e[i].shape[0] = p->shape[0];
        e[i].shape[1] = p->shape[1];
        e[i].data = params + p->offset;
    }
    /* a tied lm_head is not written (HF leaves it out) */
    int64_t n = 0;
    for (int64_t i = 0; i < m->layout.n; i++)
        if (!(m->cfg.tie_word_embeddings && !strcmp(e[i].name, "lm_head.weight"))) e[n++] = e[i];
    /* shards of at most 5 GB, as transformers' save_pretrained does by default */
    static const char *const meta[] = {"format", "pt", NULL};
    int rc = ds_st_write_model(dir, e, n, meta, (int64_t)5000000000LL);
    free(e);
    free(staged);
    if (rc) return -1;
    char *cpath = ds_path_join(dir, "config.json");
    rc = ds_config_save(&m->cfg, cpath);
    free(cpath);
    if (!rc) rc = ds_model_save_generation_config(&m->cfg, dir);
    return rc;
}

int ds_model_save_generation_config(const ds_config *c, const char *dir) {
    int64_t eos[8];
    int neos = 0;
    for (int i = 0; i < c->n_eos_token_ids && neos < 8; i++) eos[neos++] = c->eos_token_ids[i];
    if (neos == 0 && c->eos_token_id >= 0) eos[neos++] = c->eos_token_id;
    return ds_generation_config_write(dir, c->bos_token_id, eos, neos);
}
