/*
 * fp8_analyze.c — FP8 quantization error of a model's weights (see
 * fp8_analyze.h): per tensor, per scaling and format, ds_quant_error; the
 * outliers by block-relative magnitude; a summary per kind and JSON.
 */
#include "io/fp8_analyze.h"

#include "base/base.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const ds_quant_gran ds_analyze_grans[DS_ANALYZE_NSCALE] = {DS_QUANT_TENSOR, DS_QUANT_ROW, DS_QUANT_TILE_1x128,
                                                           DS_QUANT_BLOCK_128x128};
static const ds_fp8_format fmts[2] = {DS_FP8_E4M3, DS_FP8_E5M2};
static const char *const fmt_names[2] = {"e4m3", "e5m2"};

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !memcmp(s + n - m, suf, m);
}

static const char *const kinds[] = {"q_a", "q_b", "q", "kv_a", "kv_b", "o", "dense", "expert",
                                    "shared", "router", "embed", "head", "eh_proj", "other"};
#define NKINDS ((int)(sizeof kinds / sizeof *kinds))

const char *ds_weight_kind(const char *name) {
    if (ends_with(name, "self_attn.q_a_proj.weight")) return "q_a";
    if (ends_with(name, "self_attn.q_b_proj.weight")) return "q_b";
    if (ends_with(name, "self_attn.q_proj.weight")) return "q";
    if (ends_with(name, "self_attn.kv_a_proj_with_mqa.weight")) return "kv_a";
    if (ends_with(name, "self_attn.kv_b_proj.weight")) return "kv_b";
    if (ends_with(name, "self_attn.o_proj.weight")) return "o";
    if (ends_with(name, "_proj.weight") && strstr(name, ".mlp.")) {
        if (strstr(name, ".mlp.shared_experts.")) return "shared";
        if (strstr(name, ".mlp.experts.")) return "expert";
        if (ends_with(name, ".mlp.gate_proj.weight") || ends_with(name, ".mlp.up_proj.weight") ||
            ends_with(name, ".mlp.down_proj.weight"))
            return "dense";
    }
    if (ends_with(name, ".mlp.gate.weight")) return "router";
    if (ends_with(name, "embed_tokens.weight")) return "embed";
    if (!strcmp(name, "lm_head.weight") || ends_with(name, "shared_head.head.weight")) return "head";
    if (ends_with(name, "eh_proj.weight")) return "eh_proj";
    return "other";
}

static int kind_index(const char *k) {
    for (int i = 0; i < NKINDS; i++)
        if (!strcmp(kinds[i], k)) return i;
    return NKINDS - 1;
}

/* Insert o into top (n_have of cap, sorted by ratio, largest first). */
static void top_insert(ds_outlier *top, int64_t *n_have, int64_t cap, const ds_outlier *o) {
    if (cap <= 0) return;
    if (*n_have == cap && !(o->ratio > top[cap - 1].ratio)) return;
    int64_t i = *n_have < cap ? (*n_have)++ : cap - 1;
    while (i > 0 && top[i - 1].ratio < o->ratio) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = *o;
}

int64_t ds_find_outliers(ds_outlier *top, int64_t n, const float *w, int64_t rows, int64_t cols) {
    int64_t have = 0;
    const int64_t G = DS_QUANT_GROUP;
    if (n <= 0) return 0;
    for (int64_t r0 = 0; r0 < rows; r0 += G)
        for (int64_t c0 = 0; c0 < cols; c0 += G) {
            int64_t r1 = r0 + G < rows ? r0 + G : rows, c1 = c0 + G < cols ? c0 + G : cols;
            double s = 0;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    if (isfinite(w[r * cols + c])) s += fabsf(w[r * cols + c]);
            float mean = (float)(s / (double)((r1 - r0) * (c1 - c0)));
            if (!(mean > 0)) continue;
            /* a candidate must beat the current n-th ratio: |w| > ratio_n * mean */
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) {
                    float a = fabsf(w[r * cols + c]);
                    if (!isfinite(a)) continue;
                    float ratio = a / mean;
                    if (have == n && !(ratio > top[n - 1].ratio)) continue;
                    ds_outlier o = {r, c, w[r * cols + c], mean, ratio};
                    top_insert(top, &have, n, &o);
                }
        }
    return have;
}

/* ---- aggregated errors ---------------------------------------------------------- */

const ds_quant_gran ds_capture_grans[DS_CAPTURE_NSCALE] = {DS_QUANT_TENSOR, DS_QUANT_ROW, DS_QUANT_TILE_1x128,
                                                           DS_QUANT_TILE_128x1, DS_QUANT_BLOCK_128x128};

void ds_err_sum_add(ds_err_sum *a, const ds_quant_err *q, double sx) {
    a->sae += q->mae * (double)q->n;
    a->se += q->rel_rms * q->rel_rms * sx;
    a->sx += sx;
    if (q->max_err > a->max_err) a->max_err = q->max_err;
    a->nclamp += q->frac_clamped * (double)q->n;
    a->nflush += q->frac_flushed * (double)q->n;
    a->nsub += q->frac_subnormal * (double)q->n;
    a->n += q->n;
}

void ds_err_sum_merge(ds_err_sum *a, const ds_err_sum *b) {
    a->sae += b->sae, a->se += b->se, a->sx += b->sx;
    if (b->max_err > a->max_err) a->max_err = b->max_err;
    a->nclamp += b->nclamp, a->nflush += b->nflush, a->nsub += b->nsub;
    a->n += b->n;
}

ds_quant_err ds_err_sum_result(const ds_err_sum *a) {
    double n = a->n > 0 ? (double)a->n : 1;
    return (ds_quant_err){a->sae / n, a->sx > 0 ? sqrt(a->se / a->sx) : 0, a->max_err, 0,
                          a->nclamp / n, a->nflush / n, a->nsub / n, a->n, 0};
}

/* e[f][g] for the ng scalings grans of x (rows, cols); 0 or -1.  Small
 * tensors: the cases side by side (one parallel region instead of one per
 * case inside ds_quant_error; barriers are costly when the cores are
 * shared); large ones: ds_quant_error's own threads.  Inside a parallel
 * region (routed experts) everything runs on the calling thread. */
static int analyze_cases(ds_quant_err e[2][DS_CAPTURE_NSCALE], const float *x, int64_t R, int64_t C,
                         const ds_quant_gran *grans, int ng) {
    int bad[2 * DS_CAPTURE_NSCALE] = {0};
    #pragma omp parallel for schedule(dynamic) if (R * C < (1 << 20))
    for (int fg = 0; fg < 2 * ng; fg++) {
        const int f = fg / ng, g = fg % ng;
        ds_quant_opts o = ds_quant_defaults(grans[g]);
        o.fmt = fmts[f];
        bad[fg] = ds_quant_error(&e[f][g], x, R, C, &o);
    }
    for (int fg = 0; fg < 2 * ng; fg++)
        if (bad[fg]) return -1;
    return 0;
}

static double sum_sq_finite(const float *x, int64_t n) {
    double sx = 0;
    for (int64_t j = 0; j < n; j++)
        if (isfinite(x[j])) sx += (double)x[j] * x[j];
    return sx;
}

/* Insert o into top (n_have of cap, sorted by ratio, largest first). */
static void rec_top_insert(ds_rec_outlier *top, int64_t *n_have, int64_t cap, const ds_rec_outlier *o) {
    if (cap <= 0) return;
    if (*n_have == cap && !(o->o.ratio > top[cap - 1].o.ratio)) return;
    int64_t i = *n_have < cap ? (*n_have)++ : cap - 1;
    while (i > 0 && top[i - 1].o.ratio < o->o.ratio) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = *o;
}

static int stats_check_cols(ds_tensor_stats *s, int64_t cols) {
    if (s->calls > 0 && s->cols != cols)
        return ds_err("fp8 analyze: a tensor of %lld columns after ones of %lld", (long long)cols, (long long)s->cols);
    s->cols = cols;
    return 0;
}

int ds_tensor_stats_add(ds_tensor_stats *s, const float *x, int64_t rows, int64_t cols, int64_t top_n,
                        const char *weight) {
    if (rows < 0 || cols < 0) return ds_err("fp8 analyze: negative tensor shape");
    if (stats_check_cols(s, cols)) return -1;
    ds_quant_err e[2][DS_CAPTURE_NSCALE];
    if (analyze_cases(e, x, rows, cols, ds_capture_grans, DS_CAPTURE_NSCALE)) return -1;
    double sx = sum_sq_finite(x, rows * cols);
    for (int f = 0; f < 2; f++)
        for (int g = 0; g < DS_CAPTURE_NSCALE; g++) ds_err_sum_add(&s->e[f][g], &e[f][g], sx);
    if (top_n > 0) {
        if (!s->top) s->top = ds_calloc((size_t)top_n, sizeof *s->top);
        ds_outlier *o = ds_malloc(sizeof *o * (size_t)top_n);
        int64_t no = ds_find_outliers(o, top_n, x, rows, cols);
        for (int64_t j = 0; j < no; j++) {
            ds_rec_outlier r = {o[j], s->calls, weight};
            rec_top_insert(s->top, &s->ntop, top_n, &r);
        }
        free(o);
    }
    if (e[0][0].amax > s->amax) s->amax = e[0][0].amax;
    s->sx += sx;
    s->n += e[0][0].n;
    s->nonfinite += e[0][0].n_nonfinite;
    s->rows += rows;
    s->calls++;
    return 0;
}

int ds_tensor_stats_merge(ds_tensor_stats *dst, const ds_tensor_stats *src, int64_t top_n) {
    if (!src->calls) return 0;
    if (stats_check_cols(dst, src->cols)) return -1;
    for (int f = 0; f < 2; f++)
        for (int g = 0; g < DS_CAPTURE_NSCALE; g++) ds_err_sum_merge(&dst->e[f][g], &src->e[f][g]);
    if (top_n > 0 && src->ntop > 0) {
        if (!dst->top) dst->top = ds_calloc((size_t)top_n, sizeof *dst->top);
        for (int64_t j = 0; j < src->ntop; j++) rec_top_insert(dst->top, &dst->ntop, top_n, &src->top[j]);
    }
    if (src->amax > dst->amax) dst->amax = src->amax;
    dst->sx += src->sx;
    dst->n += src->n;
    dst->nonfinite += src->nonfinite;
    dst->rows += src->rows;
    dst->calls += src->calls;
    return 0;
}

void ds_tensor_stats_free(ds_tensor_stats *s) {
    free(s->top);
    memset(s, 0, sizeof *s);
}

void ds_capture_result_free(ds_capture_result *r) {
    for (int k = 0; k < 2; k++) {
        for (int64_t i = 0; i < r->nrec[k]; i++) ds_tensor_stats_free(&r->rec[k][i].s);
        free(r->rec[k]);
    }
    for (int64_t i = 0; i < r->nnames; i++) free(r->names[i]);
    free(r->names);
    memset(r, 0, sizeof *r);
}

/* Sums for the per-kind summary. */
typedef struct {
    int64_t tensors, params;
    ds_err_sum e[2][DS_CAPTURE_NSCALE];
} kind_sum;

/* A number, or null when it is not finite (strict JSON has no NaN/Infinity:
 * an inf weight makes its group's scale inf and the errors NaN). */
static void put_num(ds_sbuf *b, double v) {
    if (isfinite(v)) ds_json_put_double(b, v);
    else ds_sbuf_puts(b, "null");
}

static void put_err(ds_sbuf *b, const ds_quant_err *e) {
    ds_sbuf_puts(b, "{\"mae\": ");
    put_num(b, e->mae);
    ds_sbuf_puts(b, ", \"rel_rms\": ");
    put_num(b, e->rel_rms);
    ds_sbuf_puts(b, ", \"max_err\": ");
    put_num(b, e->max_err);
    ds_sbuf_puts(b, ", \"frac_clamped\": ");
    put_num(b, e->frac_clamped);
    ds_sbuf_puts(b, ", \"frac_flushed\": ");
    put_num(b, e->frac_flushed);
    ds_sbuf_puts(b, ", \"frac_subnormal\": ");
    put_num(b, e->frac_subnormal);
    ds_sbuf_puts(b, "}");
}

static void put_err_block(ds_sbuf *b, ds_quant_err e[2][DS_CAPTURE_NSCALE], const ds_quant_gran *grans, int ng,
                          const char *ind) {
    ds_sbuf_puts(b, "{");
    for (int f = 0; f < 2; f++) {
        ds_sbuf_printf(b, "%s\n%s  \"%s\": {", f ? "," : "", ind, fmt_names[f]);
        for (int g = 0; g < ng; g++) {
            ds_sbuf_printf(b, "%s\n%s    \"%s\": ", g ? "," : "", ind, ds_quant_gran_name(grans[g]));
            put_err(b, &e[f][g]);
        }
        ds_sbuf_printf(b, "\n%s  }", ind);
    }
    ds_sbuf_printf(b, "\n%s}", ind);
}

static void put_outlier(ds_sbuf *b, const char *name, const ds_outlier *o) {
    ds_sbuf_puts(b, "{");
    if (name) {
        ds_sbuf_puts(b, "\"name\": ");
        ds_json_put_string(b, name);
        ds_sbuf_puts(b, ", ");
    }
    ds_sbuf_printf(b, "\"row\": %lld, \"col\": %lld, \"value\": ", (long long)o->row, (long long)o->col);
    ds_json_put_double(b, o->value);
    ds_sbuf_puts(b, ", \"block_mean_abs\": ");
    ds_json_put_double(b, o->block_mean_abs);
    ds_sbuf_puts(b, ", \"ratio\": ");
    ds_json_put_double(b, o->ratio);
    ds_sbuf_puts(b, "}");
}

typedef struct {
    ds_outlier o;
    const char *name;
} named_outlier;

/* Per-kind summary of the records at one capture site into ks. */
static void rec_kind_sums(kind_sum *ks, const ds_tensor_rec *rec, int64_t nrec) {
    memset(ks, 0, sizeof(kind_sum) * NKINDS);
    for (int64_t i = 0; i < nrec; i++) {
        kind_sum *k = &ks[kind_index(rec[i].kind)];
        k->tensors++;
        k->params += rec[i].s.rows * rec[i].s.cols;
        for (int f = 0; f < 2; f++)
            for (int g = 0; g < DS_CAPTURE_NSCALE; g++) ds_err_sum_merge(&k->e[f][g], &rec[i].s.e[f][g]);
    }
}

static void put_summary(ds_sbuf *b, const kind_sum *ks, const ds_quant_gran *grans, int ng, const char *count_key) {
    int first = 1;
    for (int ki = 0; ki < NKINDS; ki++) {
        const kind_sum *k = &ks[ki];
        if (!k->tensors) continue;
        ds_quant_err agg[2][DS_CAPTURE_NSCALE];
        for (int f = 0; f < 2; f++)
            for (int g = 0; g < ng; g++) agg[f][g] = ds_err_sum_result(&k->e[f][g]);
        ds_sbuf_printf(b, "%s\n    \"%s\": {\"tensors\": %lld, \"%s\": %lld, \"error\": ", first ? "" : ",", kinds[ki],
                       (long long)k->tensors, count_key, (long long)k->params);
        first = 0;
        put_err_block(b, agg, grans, ng, "    ");
        ds_sbuf_puts(b, "}");
    }
}

static void put_records(ds_sbuf *b, const ds_tensor_rec *rec, int64_t nrec) {
    for (int64_t i = 0; i < nrec; i++) {
        const ds_tensor_rec *r = &rec[i];
        const ds_tensor_stats *st = &r->s;
        ds_sbuf_puts(b, i ? ",\n    {\"name\": " : "\n    {\"name\": ");
        ds_json_put_string(b, r->name);
        ds_sbuf_printf(b, ", \"kind\": \"%s\", \"weights\": %lld, \"calls\": %lld, \"shape\": [%lld, %lld], \"amax\": ",
                       r->kind, (long long)r->weights, (long long)st->calls, (long long)st->rows, (long long)st->cols);
        put_num(b, st->amax);
        ds_sbuf_puts(b, ", \"rms\": ");
        put_num(b, st->n > 0 ? sqrt(st->sx / (double)st->n) : 0.0);
        ds_sbuf_printf(b, ", \"nonfinite\": %lld", (long long)st->nonfinite);
        ds_sbuf_puts(b, ",\n     \"error\": ");
        ds_quant_err e[2][DS_CAPTURE_NSCALE];
        for (int f = 0; f < 2; f++)
            for (int g = 0; g < DS_CAPTURE_NSCALE; g++) e[f][g] = ds_err_sum_result(&st->e[f][g]);
        put_err_block(b, e, ds_capture_grans, DS_CAPTURE_NSCALE, "     ");
        ds_sbuf_puts(b, ",\n     \"outliers\": [");
        for (int64_t j = 0; j < st->ntop; j++) {
            const ds_rec_outlier *o = &st->top[j];
            ds_sbuf_puts(b, j ? ", {\"weight\": " : "{\"weight\": ");
            ds_json_put_string(b, o->weight ? o->weight : "");
            ds_sbuf_printf(b, ", \"call\": %lld, ", (long long)o->call);
            ds_sbuf_printf(b, "\"row\": %lld, \"col\": %lld, \"value\": ", (long long)o->o.row, (long long)o->o.col);
            ds_json_put_double(b, o->o.value);
            ds_sbuf_puts(b, ", \"block_mean_abs\": ");
            ds_json_put_double(b, o->o.block_mean_abs);
            ds_sbuf_puts(b, ", \"ratio\": ");
            ds_json_put_double(b, o->o.ratio);
            ds_sbuf_puts(b, "}");
        }
        ds_sbuf_puts(b, "]}");
    }
}

/* The terminal table of one set of kind sums. */
static void print_table(FILE *table, const kind_sum *ks, const ds_quant_gran *grans, int ng, const char *what,
                        const char *count_col) {
    for (int f = 0; f < 2; f++) {
        fprintf(table, "\n%s, %s: relative RMS error ||q(x) - x|| / ||x|| and %% of nonzero values flushed to zero\n",
                what, f ? "E5M2" : "E4M3");
        fprintf(table, "%-8s %7s %11s |", "kind", "tensors", count_col);
        for (int g = 0; g < ng; g++) fprintf(table, " %9s", ds_quant_gran_name(grans[g]));
        fprintf(table, " |");
        for (int g = 0; g < ng; g++) fprintf(table, " %8s", ds_quant_gran_name(grans[g]));
        fprintf(table, "\n");
        for (int ki = 0; ki < NKINDS; ki++) {
            const kind_sum *k = &ks[ki];
            if (!k->tensors) continue;
            fprintf(table, "%-8s %7lld %11lld |", kinds[ki], (long long)k->tensors, (long long)k->params);
            for (int g = 0; g < ng; g++) {
                const ds_err_sum *a = &k->e[f][g];
                fprintf(table, " %9.3e", a->sx > 0 ? sqrt(a->se / a->sx) : 0.0);
            }
            fprintf(table, " |");
            for (int g = 0; g < ng; g++) {
                const ds_err_sum *a = &k->e[f][g];
                fprintf(table, " %7.3f%%", a->n ? 100.0 * a->nflush / (double)a->n : 0.0);
            }
            fprintf(table, "\n");
        }
    }
}

int ds_fp8_analyze_model(const char *dir, int64_t top_n, const char *json_path, FILE *table) {
    return ds_fp8_analyze_report(dir, top_n, NULL, json_path, table);
}

int ds_fp8_analyze_report(const char *dir, int64_t top_n, const ds_capture_result *cap, const char *json_path,
                          FILE *table) {
    if (top_n < 0) return ds_err("fp8 analyze: --top %lld must not be negative", (long long)top_n);
    ds_st_set s;
    if (ds_st_set_open(&s, dir)) return -1;
    kind_sum ks[NKINDS];
    memset(ks, 0, sizeof ks);
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{\n  \"model\": ");
    ds_json_put_string(&b, dir);
    ds_sbuf_puts(&b, ",\n  \"amax_floor\": ");
    ds_json_put_double(&b, DS_QUANT_AMAX_FLOOR);
    ds_sbuf_puts(&b, ",\n  \"formats\": [\"e4m3\", \"e5m2\"],\n  \"scalings\": [\"tensor\", \"row\", \"1x128\", \"128x128\"],\n"
                     "  \"outlier_ratio\": \"|w| / mean |w| of its 128x128 block\",\n  \"weights\": [");
    ds_outlier *top = ds_malloc(sizeof *top * (size_t)(top_n > 0 ? top_n : 1));
    named_outlier *all = ds_malloc(sizeof *all * (size_t)(top_n > 0 ? top_n : 1));
    int64_t nall = 0, nw = 0;
    int rc = 0;
    for (int64_t i = 0; i < s.nrefs && !rc; i++) {
        const ds_st_tensor *t = s.refs[i].t;
        if (t->ndim != 2 || !ds_dtype_table[t->dtype].is_float || ends_with(t->name, "_scale_inv")) continue;
        const char *file = s.files[s.refs[i].file].path;
        const int64_t R = t->shape[0], C = t->shape[1];
        float *w = ds_malloc(sizeof(float) * (size_t)(R * C > 0 ? R * C : 1));
        if (ds_st_set_read_f32(&s, t->name, 2, t->shape, w)) {
            free(w);
            rc = -1;
            break;
        }
        ds_quant_err e[2][DS_CAPTURE_NSCALE];
        if (analyze_cases(e, w, R, C, ds_analyze_grans, DS_ANALYZE_NSCALE)) {
            rc = ds_err_prefix("%s: %s", file, ds_esc(t->name));
            free(w);
            break;
        }
        double sx = sum_sq_finite(w, R * C);
        int64_t nt = ds_find_outliers(top, top_n, w, R, C);
        free(w);
        const char *kind = ds_weight_kind(t->name);
        kind_sum *k = &ks[kind_index(kind)];
        k->tensors++;
        k->params += R * C;
        for (int f = 0; f < 2; f++)
            for (int g = 0; g < DS_ANALYZE_NSCALE; g++) ds_err_sum_add(&k->e[f][g], &e[f][g], sx);
        for (int64_t j = 0; j < nt; j++) { /* the overall top list (names live while s is open) */
            named_outlier no = {top[j], t->name};
            if (nall == top_n && !(no.o.ratio > all[top_n - 1].o.ratio)) break;
            int64_t p = nall < top_n ? nall++ : top_n - 1;
            while (p > 0 && all[p - 1].o.ratio < no.o.ratio) { all[p] = all[p - 1]; p--; }
            all[p] = no;
        }
        ds_sbuf_puts(&b, nw++ ? ",\n    {\"name\": " : "\n    {\"name\": ");
        ds_json_put_string(&b, t->name);
        ds_sbuf_printf(&b, ", \"kind\": \"%s\", \"shape\": [%lld, %lld], \"dtype\": \"%s\", \"amax\": ", kind,
                       (long long)R, (long long)C, ds_dtype_table[t->dtype].st_name);
        put_num(&b, e[0][0].amax);
        ds_sbuf_puts(&b, ", \"rms\": ");
        put_num(&b, R * C > 0 ? sqrt(sx / (double)(R * C)) : 0.0);
        ds_sbuf_printf(&b, ", \"nonfinite\": %lld", (long long)e[0][0].n_nonfinite);
        ds_sbuf_puts(&b, ",\n     \"error\": ");
        put_err_block(&b, e, ds_analyze_grans, DS_ANALYZE_NSCALE, "     ");
        ds_sbuf_puts(&b, ",\n     \"outliers\": [");
        for (int64_t j = 0; j < nt; j++) {
            ds_sbuf_puts(&b, j ? ", " : "");
            put_outlier(&b, NULL, &top[j]);
        }
        ds_sbuf_puts(&b, "]}");
    }
    kind_sum cks[2][NKINDS];
    if (cap)
        for (int k = 0; k < 2; k++) rec_kind_sums(cks[k], cap->rec[k], cap->nrec[k]);
    if (!rc) {
        ds_sbuf_puts(&b, "\n  ],\n  \"summary\": {");
        put_summary(&b, ks, ds_analyze_grans, DS_ANALYZE_NSCALE, "params");
        ds_sbuf_puts(&b, "\n  },\n  \"top_outliers\": [");
        for (int64_t j = 0; j < nall; j++) {
            ds_sbuf_puts(&b, j ? ",\n    " : "\n    ");
            put_outlier(&b, all[j].name, &all[j].o);
        }
        if (!cap) {
            ds_sbuf_puts(&b, "\n  ],\n  \"activations\": [],\n  \"gradients\": []\n}\n");
        } else {
            ds_sbuf_puts(&b, "\n  ],\n  \"capture\": {\"data\": ");
            ds_json_put_string(&b, cap->data ? cap->data : "");
            ds_sbuf_puts(&b, ", \"split\": ");
            ds_json_put_string(&b, cap->split ? cap->split : "");
            ds_sbuf_printf(&b, ", \"batch\": %lld, \"seq\": %lld, \"batches\": %lld, \"mtp_lambda\": ",
                           (long long)cap->batch, (long long)cap->seq, (long long)cap->batches);
            ds_json_put_double(&b, cap->mtp_lambda);
            ds_sbuf_puts(&b, ", \"loss\": ");
            put_num(&b, cap->loss);
            ds_sbuf_puts(&b, ",\n    \"scalings\": [\"tensor\", \"row\", \"1x128\", \"128x1\", \"128x128\"]},\n"
                             "  \"activations\": [");
            put_records(&b, cap->rec[DS_CAPTURE_INPUT], cap->nrec[DS_CAPTURE_INPUT]);
            ds_sbuf_puts(&b, "\n  ],\n  \"gradients\": [");
            put_records(&b, cap->rec[DS_CAPTURE_GRAD_OUTPUT], cap->nrec[DS_CAPTURE_GRAD_OUTPUT]);
            ds_sbuf_puts(&b, "\n  ],\n  \"activation_summary\": {");
            put_summary(&b, cks[DS_CAPTURE_INPUT], ds_capture_grans, DS_CAPTURE_NSCALE, "elements");
            ds_sbuf_puts(&b, "\n  },\n  \"gradient_summary\": {");
            put_summary(&b, cks[DS_CAPTURE_GRAD_OUTPUT], ds_capture_grans, DS_CAPTURE_NSCALE, "elements");
            ds_sbuf_puts(&b, "\n  }\n}\n");
        }
        if (nw == 0) rc = ds_err("%s: no 2-D float weights to analyze", dir);
    }
    char *text = ds_sbuf_take(&b);
    if (!rc && json_path) rc = ds_write_file_atomic(json_path, text, strlen(text));
    if (!rc && table) {
        print_table(table, ks, ds_analyze_grans, DS_ANALYZE_NSCALE, "weights", "params");
        if (nall) {
            fprintf(table, "\ntop %lld outliers (|w| / mean |w| of its 128x128 block):\n", (long long)nall);
            for (int64_t j = 0; j < nall; j++)
                fprintf(table, "  %8.1f  %-50s [%lld, %lld] = %.6g (block mean |w| %.3g)\n", all[j].o.ratio, all[j].name,
                        (long long)all[j].o.row, (long long)all[j].o.col, all[j].o.value, all[j].o.block_mean_abs);
        }
        if (cap) {
            print_table(table, cks[DS_CAPTURE_INPUT], ds_capture_grans, DS_CAPTURE_NSCALE,
                        "activations X (input of each linear)", "elements");
            print_table(table, cks[DS_CAPTURE_GRAD_OUTPUT], ds_capture_grans, DS_CAPTURE_NSCALE,
                        "gradients dY (output gradient of each linear)", "elements");
        }
    }
    free(text);
    free(top);
    free(all);
    ds_st_set_close(&s);
    return rc;
}
