/*
 * fp8_capture.c — capture of the activations and output gradients of every
 * linear layer through a wrapped ops table, and their FP8 quantization
 * error on real tokens (see fp8_capture.h).
 */
#include "train/fp8_capture.h"

#include "backend/backend.h"
#include "base/base.h"
#include "model/backward.h"
#include "train/loader.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- the wrapped ops table ------------------------------------------------------ */

/* File-scope state: the ops entries have no context argument.  Written by
 * ds_capture_begin/end only, read-only while a pass runs. */
static struct {
    int active;
    struct ds_ops base;
    const ds_model *m;
    ds_capture_fn fn;
    void *ctx;
    int64_t *off, *idx, n; /* (n) offsets of the owning 2-D entries, ascending; their layout index */
} cap;

static int64_t param_of(const float *w) {
    const ds_model *m = cap.m;
    if (!w || w < m->params || w >= m->params + m->layout.total) return -1;
    int64_t o = w - m->params, lo = 0, hi = cap.n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cap.off[mid] == o) return cap.idx[mid];
        if (cap.off[mid] < o) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static void report(const float *weight, int site, const float *x, int64_t rows, int64_t cols) {
    if (rows <= 0) return;
    int64_t p = param_of(weight);
    if (p < 0) return;
    if (cap.base.host_visible) {
        cap.fn(cap.ctx, p, site, x, rows, cols);
        return;
    }
    /* a device-resident model: the tensor to the host for the statistics */
    const size_t n = (size_t)(rows * cols) * sizeof(float);
    float *h = ds_malloc(n ? n : 1);
    cap.base.copy_d2h(h, x, n);
    cap.fn(cap.ctx, p, site, h, rows, cols);
    free(h);
}

// out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias
static void cap_linear_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                               int64_t C, int64_t OC) {
    cap.base.linear_forward(out, inp, weight, bias, N, C, OC);
    report(weight, DS_CAPTURE_INPUT, inp, N, C);
}

static void cap_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int64_t N,
                               int64_t C, int64_t OC) {
    cap.base.matmul_forward(out, inp, weight, bias, N, C, OC);
    report(weight, DS_CAPTURE_INPUT, inp, N, C);
}

// dout (N, OC), inp (N, C), weight (OC, C)
static void cap_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                const float *weight, int64_t N, int64_t C, int64_t OC, int acc) {
    cap.base.linear_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC, acc);
    report(weight, DS_CAPTURE_GRAD_OUTPUT, dout, N, OC);
}

static void cap_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                const float *weight, int64_t N, int64_t C, int64_t OC, int acc) {
    cap.base.matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC, acc);
    report(weight, DS_CAPTURE_GRAD_OUTPUT, dout, N, OC);
}

static const ds_layout *sort_lo;
static int cmp_off(const void *a, const void *b) {
    int64_t x = sort_lo->p[*(const int64_t *)a].offset, y = sort_lo->p[*(const int64_t *)b].offset;
    return (x > y) - (x < y);
}

int ds_capture_begin(struct ds_ops *ops, const struct ds_ops *base, const ds_model *m, ds_capture_fn fn, void *ctx) {
    if (cap.active) return ds_err("fp8 capture: a capture is already active");
    const ds_layout *lo = &m->layout;
    int64_t *idx = ds_malloc(sizeof(int64_t) * (size_t)(lo->n > 0 ? lo->n : 1)), n = 0;
    for (int64_t i = 0; i < lo->n; i++)
        if (!(lo->p[i].flags & DS_PARAM_ALIAS) && lo->p[i].ndim == 2 && lo->p[i].numel > 0) idx[n++] = i;
    sort_lo = lo;
    qsort(idx, (size_t)n, sizeof *idx, cmp_off);
    cap.off = ds_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) cap.off[i] = lo->p[idx[i]].offset;
    cap.idx = idx, cap.n = n;
    cap.base = *base, cap.m = m, cap.fn = fn, cap.ctx = ctx, cap.active = 1;
    *ops = *base;
    ops->linear_forward = cap_linear_forward;
    ops->linear_backward = cap_linear_backward;
    ops->matmul_forward = cap_matmul_forward;
    ops->matmul_backward = cap_matmul_backward;
    return 0;
}

void ds_capture_end(void) {
    free(cap.off);
    free(cap.idx);
    memset(&cap, 0, sizeof cap);
}

/* ---- analysis ------------------------------------------------------------------- */

ds_fp8_capture_opts ds_fp8_capture_defaults(void) {
    ds_fp8_capture_opts o;
    memset(&o, 0, sizeof o);
    o.split = "train";
    o.batches = 1;
    o.mtp_lambda = 0.3;
    o.top_n = 10;
    return o;
}

void ds_capture_record_name(char *buf, size_t capn, const ds_param *p, int is_embed) {
    if (is_embed) {
        snprintf(buf, capn, "lm_head");
        return;
    }
    const char *name = p->name, *ex = strstr(name, ".mlp.experts.");
    size_t n = strlen(name);
    if (n > 7 && !strcmp(name + n - 7, ".weight")) n -= 7;
    if (ex && (p->flags & DS_PARAM_EXPERT)) {
        const char *rest = ex + strlen(".mlp.experts.");
        while (*rest >= '0' && *rest <= '9') rest++;
        snprintf(buf, capn, "%.*s.mlp.experts.*%.*s", (int)(ex - name), name, (int)(name + n - rest), rest);
    } else {
        snprintf(buf, capn, "%.*s", (int)n, name);
    }
}

typedef struct {
    const ds_model *m;
    ds_tensor_stats *st;  /* (layout.n, 2) */
    int64_t top_n;
    atomic_int failed;    /* set from the expert GEMMs' threads */
} cap_ctx;

static void on_tensor(void *vctx, int64_t param, int site, const float *x, int64_t rows, int64_t cols) {
    cap_ctx *c = vctx;
    if (ds_tensor_stats_add(&c->st[param * 2 + site], x, rows, cols, c->top_n, c->m->layout.p[param].name)) {
        atomic_store(&c->failed, 1);
    }
}

static int is_embed_entry(const ds_model *m, int64_t i) { return m->params + m->layout.p[i].offset == m->embed; }

/* Merge the per-weight statistics into records (layout order). */
static void build_records(ds_capture_result *res, const ds_model *m, ds_tensor_stats *st, int64_t top_n) {
    const ds_layout *lo = &m->layout;
    res->names = ds_calloc((size_t)(lo->n > 0 ? lo->n : 1), sizeof(char *));
    for (int64_t i = 0; i < lo->n; i++) {
        if (!st[2 * i].calls && !st[2 * i + 1].calls) continue;
        char *copy = ds_strdup(lo->p[i].name);
        res->names[res->nnames++] = copy;
        for (int k = 0; k < 2; k++)
            for (int64_t j = 0; j < st[2 * i + k].ntop; j++) st[2 * i + k].top[j].weight = copy;
    }
    for (int k = 0; k < 2; k++) {
        int64_t cap_rec = 16, n = 0;
        ds_tensor_rec *rec = ds_calloc((size_t)cap_rec, sizeof *rec);
        int64_t *layer = ds_malloc(sizeof(int64_t) * (size_t)cap_rec);
        for (int64_t i = 0; i < lo->n; i++) {
            const ds_tensor_stats *s = &st[2 * i + k];
            if (!s->calls) continue;
            char base[160], name[176];
            ds_capture_record_name(base, sizeof base, &lo->p[i], is_embed_entry(m, i));
            snprintf(name, sizeof name, "%s%s", base, k == DS_CAPTURE_INPUT ? ":input" : ":grad_output");
            int64_t r = -1;
            for (int64_t j = n - 1; j >= 0 && layer[j] == lo->p[i].layer; j--)
                if (!strcmp(rec[j].name, name)) { r = j; break; }
            if (r < 0) {
                if (n == cap_rec) {
                    cap_rec *= 2;
                    rec = ds_realloc(rec, sizeof *rec * (size_t)cap_rec);
                    layer = ds_realloc(layer, sizeof(int64_t) * (size_t)cap_rec);
                }
                r = n++;
                memset(&rec[r], 0, sizeof rec[r]);
                snprintf(rec[r].name, sizeof rec[r].name, "%s", name);
                char wname[176];
                snprintf(wname, sizeof wname, "%s.weight", base);
                rec[r].kind = ds_weight_kind(wname);
                layer[r] = lo->p[i].layer;
            }
            rec[r].weights++;
            ds_tensor_stats_merge(&rec[r].s, s, top_n); /* cols agree: the weight's shape fixes them */
        }
        free(layer);
        res->rec[k] = rec, res->nrec[k] = n;
    }
}

int ds_fp8_capture_analyze(ds_capture_result *res, const char *dir, const ds_fp8_capture_opts *o) {
    memset(res, 0, sizeof *res);
    if (!o->data) return ds_err("fp8 analyze: no data folder given");
    if (o->batch < 0 || o->seq < 0 || o->batches <= 0 || o->top_n < 0 || !(o->mtp_lambda >= 0))
        return ds_err("fp8 analyze: --batch, --seq must be >= 0 (0 = default), --batches > 0, --mtp-lambda >= 0");
    /* device-resident: the model, arenas and gradients in the table's memory;
     * each captured tensor is copied to the host for its statistics */
    const struct ds_ops *base = ds_backend_get_resident(o->device);
    if (!base) return -1;
    ds_model m;
    ds_load_opts lopt = {.mem = base->host_visible ? NULL : base};
    if (ds_model_load_ex(&m, dir, &lopt)) return -1;
    const ds_config *c = &m.cfg;
    const int64_t V = c->vocab_size, D = c->num_nextn_predict_layers;
    const int64_t B = o->batch > 0 ? o->batch : 4;
    const int64_t T = o->seq > 0 ? o->seq : (c->max_position_embeddings < 256 ? c->max_position_embeddings : 256);
    const char *split = o->split ? o->split : "train";
    int rc = 0;
    ds_loader l;
    if (ds_loader_open(&l, o->data, split, B, T, 1234, 0, 0, 1, 0)) {
        ds_model_free(&m);
        return -1;
    }
    if (l.nbatches < o->batches) {
        rc = ds_err("%s: the %s split has %lld batches of %lld x %lld tokens, %lld requested", o->data, split,
                    (long long)l.nbatches, (long long)B, (long long)(T + 1), (long long)o->batches);
        ds_loader_close(&l);
        ds_model_free(&m);
        return rc;
    }
    const int mtp = o->mtp_lambda > 0 && D > 0;
    ds_acts a;
    ds_grads g;
    ds_bwd w;
    if (ds_acts_create(&a, &m, B, T, mtp)) {
        ds_loader_close(&l);
        ds_model_free(&m);
        return -1;
    }
    ds_grads_create(&g, &m);
    if (ds_bwd_create(&w, &m, B, T)) {
        ds_grads_free(&g);
        ds_acts_free(&a);
        ds_loader_close(&l);
        ds_model_free(&m);
        return -1;
    }
    int32_t *ids = ds_malloc(sizeof(int32_t) * (size_t)(B * T)), *tgt = ds_malloc(sizeof(int32_t) * (size_t)(B * T));
    cap_ctx ctx = {&m, ds_calloc((size_t)(2 * (m.layout.n > 0 ? m.layout.n : 1)), sizeof(ds_tensor_stats)), o->top_n,
                   0};
    ds_loss_opts lo = ds_loss_opts_default();
    lo.mtp_lambda = mtp ? o->mtp_lambda : 0;
    struct ds_ops ops;
    rc = ds_capture_begin(&ops, base, &m, on_tensor, &ctx);
    const int began = !rc;
    double loss = 0;
    for (int64_t bi = 0; bi < o->batches && !rc; bi++) {
        ds_loader_next_batch(&l, ids, tgt);
        for (int64_t i = 0; i < B * T && !rc; i++) { /* host: ids */
            int bad_id = ids[i] < 0 || ids[i] >= V, bad_tgt = tgt[i] < 0 || tgt[i] >= V;
            if (bad_id || bad_tgt) /* window position i % T (the input) or i % T + 1 (its target) */
                rc = ds_err("%s: token id %d (batch %lld, sequence %lld, position %lld) is outside the model's "
                            "vocabulary [0, %lld)",
                            o->data, bad_id ? ids[i] : tgt[i], (long long)bi, (long long)(i / T),
                            (long long)(i % T + !bad_id), (long long)V);
        }
        if (!rc) rc = ds_model_forward(&m, &a, &ops, ids);
        ds_loss_terms terms;
        if (!rc) rc = ds_model_backward(&m, &a, &ops, &g, &w, tgt, &lo, &terms);
        if (!rc && atomic_load(&ctx.failed)) rc = ds_err_prefix("fp8 analyze: capture");
        if (!rc) loss += terms.loss;
    }
    if (began) ds_capture_end();
    if (!rc) {
        build_records(res, &m, ctx.st, o->top_n);
        res->data = o->data, res->split = split;
        res->batch = B, res->seq = T, res->batches = o->batches;
        res->mtp_lambda = lo.mtp_lambda;
        res->loss = loss / (double)o->batches;
        if (res->nrec[0] == 0) rc = ds_err("%s: the model has no linear layers to capture", dir);
    }
    for (int64_t i = 0; i < 2 * m.layout.n; i++) ds_tensor_stats_free(&ctx.st[i]);
    free(ctx.st);
    if (rc) ds_capture_result_free(res);

    free(ids);
    free(tgt);
    ds_bwd_free(&w);
    ds_grads_free(&g);
    ds_acts_free(&a);
    ds_loader_close(&l);
    ds_model_free(&m);
    return rc;
}
