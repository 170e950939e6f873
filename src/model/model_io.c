/*
 * model_io.c — load a model folder (config.json + safetensors, single or
 * sharded) into the FP32 parameter allocation, and save one.  The loop is over
 * the layout table: every owned tensor must be present with the shape the
 * config implies; BF16/F16 are widened, F8_E4M3 weights are dequantised with
 * their `<name>_scale_inv` 128x128 block scales (doc §8.2).  Alias entries
 * (MTP copies of the shared embedding/head, a tied lm_head) are not read:
 * their storage is the source tensor's.
 */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static int load_tensors(ds_model *m, const ds_st_set *s, const char *dir) {
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
    }
    return 0;
}

int ds_model_load(ds_model *m, const char *dir) {
    memset(m, 0, sizeof *m);
    char *cpath = ds_path_join(dir, "config.json");
    ds_config c;
    int rc = ds_config_load(&c, cpath);
    if (!rc) rc = ds_config_validate(&c, cpath);
    free(cpath);
    if (rc) return -1;
    if (ds_model_create(m, &c)) return -1;
    ds_st_set s;
    if (ds_st_set_open(&s, dir)) {
        ds_model_free(m);
        return -1;
    }
    rc = load_tensors(m, &s, dir);
    ds_st_set_close(&s);
    if (rc) ds_model_free(m);
    return rc;
}

int ds_model_save(const ds_model *m, const char *dir) {
    if (ds_mkdir_p(dir)) return -1;
    ds_st_entry *e = ds_calloc((size_t)m->layout.n, sizeof *e);
    for (int64_t i = 0; i < m->layout.n; i++) {
        const ds_param *p = &m->layout.p[i];
        e[i].name = p->name;
        e[i].dtype = DS_F32;
        e[i].ndim = p->ndim;
        e[i].shape[0] = p->shape[0];
        e[i].shape[1] = p->shape[1];
        e[i].data = m->params + p->offset;
    }
    /* a tied lm_head is not written (HF leaves it out) */
    int64_t n = 0;
    for (int64_t i = 0; i < m->layout.n; i++)
        if (!(m->cfg.tie_word_embeddings && !strcmp(e[i].name, "lm_head.weight"))) e[n++] = e[i];
    /* shards of at most 5 GB, as transformers' save_pretrained does by default */
    static const char *const meta[] = {"format", "pt", NULL};
    int rc = ds_st_write_model(dir, e, n, meta, (int64_t)5000000000LL);
    free(e);
    if (rc) return -1;
    char *cpath = ds_path_join(dir, "config.json");
    rc = ds_config_save(&m->cfg, cpath);
    free(cpath);
    return rc;
}
