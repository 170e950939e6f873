/*
 * run.c — scoring tasks with a ds_lm, as lm-evaluation-harness does:
 *   - pair encoding (lm-eval _encode_pair): trailing whitespace of the context moves to the
 *     continuation; cont = enc(ctx + cont)[len(enc(ctx)):]; an empty context becomes the
 *     prefix token; input (ctx + cont)[:-1] truncated from the left to max_length;
 *   - rolling windows (get_rolling_token_windows + make_disjoint_window);
 *   - metrics: mean and sample standard error over documents; corpus-weighted perplexities.
 * Documents are processed in order and requests are batched without reordering, so the
 * results do not depend on --batch.
 */
#include "eval/eval.h"
#include "base/base.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- statistics (lm-eval api/metrics.py mean, sample_stddev, mean_stderr) ---- */
double ds_mean(const double *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return n ? s / (double)n : NAN;
}

double ds_mean_stderr(const double *x, int64_t n) {
    if (n < 2) return NAN;
    double m = ds_mean(x, n), s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (double)(n - 1)) / sqrt((double)n);
}

/* ---- rolling windows ---------------------------------------------------------- */
int64_t ds_rolling_windows(int64_t n, int64_t max_len, int64_t stride, ds_window **out) {
    *out = NULL;
    if (n <= 0) return 0;
    if (stride <= 0 || stride > max_len) stride = max_len;
    int64_t context_len = max_len - stride + 1;
    int64_t pred_len = max_len - context_len + 1; /* = stride */
    int64_t cap = 1 + ds_ceil_div(n, pred_len), k = 0;
    ds_window *w = ds_malloc((size_t)cap * sizeof *w);
    int64_t first = n < max_len ? n : max_len;
    /* input [prefix] + tokens[:first-1], predicts tokens[:first]; disjoint context = [prefix] */
    w[k++] = (ds_window){-1, 0, first};
    int64_t predicted = first;
    while (predicted < n) {
        int64_t wpl = n - predicted < pred_len ? n - predicted : pred_len;
        int64_t end = predicted + wpl;
        /* input tokens[end - max_len - 1 : end - 1] (max_len tokens); disjoint: drop the
         * last wpl - 1 of them, which are predicted */
        w[k++] = (ds_window){end - max_len - 1, end - wpl, wpl};
        predicted += wpl;
    }
    *out = w;
    return k;
}

/* ---- pair encoding -------------------------------------------------------------- */
static int64_t enc_special(const ds_lm *lm, const char *s, size_t n, int mode, int32_t **ids) {
    int64_t k = lm->encode(lm->ctx, s, n, mode, ids);
    if (k < 0) return -1;
    return k;
}
/* as lm-eval's tok_encode(string): HFLM's default, or add_bos_token=True */
static int64_t enc(const ds_lm *lm, int add_bos, const char *s, size_t n, int32_t **ids) {
    return enc_special(lm, s, n, add_bos ? DS_LM_ENC_BOS : DS_LM_ENC_DEFAULT, ids);
}

int ds_eval_encode_pair(const ds_lm *lm, int add_bos, const char *ctx, const char *cont,
                        int32_t **ctx_ids, int64_t *n_ctx, int32_t **cont_ids, int64_t *n_cont) {
    *ctx_ids = *cont_ids = NULL;
    size_t lc = strlen(ctx), ln = strlen(cont);
    if (lc == 0) {
        int32_t *c;
        int64_t k = enc_special(lm, cont, ln, DS_LM_ENC_PLAIN, &c); /* lm-eval: add_special_tokens=False */
        if (k < 0) return -1;
        if (k == 0) { free(c); return ds_err("empty continuation"); }
        if (lm->prefix_id < 0) { free(c); return ds_err("empty context and the model has no BOS/EOS token"); }
        if (c[0] != lm->prefix_id) {
            *ctx_ids = ds_malloc(sizeof(int32_t));
            (*ctx_ids)[0] = lm->prefix_id;
            *n_ctx = 1;
            *cont_ids = c;
            *n_cont = k;
        } else { /* the continuation starts with the prefix token: it becomes the context */
            if (k < 2) { free(c); return ds_err("continuation is only the prefix token"); }
            *ctx_ids = ds_malloc(sizeof(int32_t));
            (*ctx_ids)[0] = c[0];
            *n_ctx = 1;
            *cont_ids = ds_malloc((size_t)(k - 1) * sizeof(int32_t));
            memcpy(*cont_ids, c + 1, (size_t)(k - 1) * sizeof(int32_t));
            *n_cont = k - 1;
            free(c);
        }
        return 0;
    }
    /* move trailing whitespace of the context to the continuation */
    size_t keep = ds_py_rstrip_len(ctx, lc);
    char *whole = ds_malloc(lc + ln + 1);
    memcpy(whole, ctx, lc);
    memcpy(whole + lc, cont, ln + 1);
    int32_t *w, *c;
    int64_t nw = enc(lm, add_bos, whole, lc + ln, &w);
    free(whole);
    if (nw < 0) return -1;
    int64_t nc = enc(lm, add_bos, ctx, keep, &c);
    if (nc < 0) { free(w); return -1; }
    if (keep == 0) { /* an all-whitespace context: lm-eval would assert; say so */
        free(w);
        free(c);
        return ds_err("context is only whitespace");
    }
    if (nw <= nc) {
        free(w);
        free(c);
        return ds_err("continuation is empty after tokenization");
    }
    *ctx_ids = c;
    *n_ctx = nc;
    *cont_ids = ds_malloc((size_t)(nw - nc) * sizeof(int32_t));
    memcpy(*cont_ids, w + nc, (size_t)(nw - nc) * sizeof(int32_t));
    *n_cont = nw - nc;
    free(w);
    return 0;
}

/* ---- progress bar ---------------------------------------------------------------- */
typedef struct { const char *name; int64_t total; double t0, last; int on; } progress;

static void progress_show(progress *p, int64_t done, int final) {
    if (!p->on) return;
    double now = ds_now();
    if (!final && now - p->last < 0.25) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    char bar[31];
    int fill = p->total ? (int)(30 * done / p->total) : 30;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    int64_t e = (int64_t)(final ? el : eta);
    fprintf(stderr, "\r%-12s [%s] %lld/%lld  %.1f ex/s  %s %lld:%02lld:%02lld ", p->name, bar,
            (long long)done, (long long)p->total, rate, final ? "took" : "ETA",
            (long long)(e / 3600), (long long)(e / 60 % 60), (long long)(e % 60));
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

/* ---- scoring ----------------------------------------------------------------------- */
static void add_metric(ds_task_result *r, const char *name, double v, double se) {
    DS_ASSERT(r->n_metrics < 8);
    r->metrics[r->n_metrics++] = (ds_metric){name, v, se, !isnan(se)};
}

const ds_metric *ds_result_metric(const ds_task_result *r, const char *name) {
    for (int i = 0; i < r->n_metrics; i++)
        if (!strcmp(r->metrics[i].name, name)) return &r->metrics[i];
    return NULL;
}

static int argmax_div(const double *ll, const double *len, int n) {
    int best = 0;
    double bv = len ? ll[0] / len[0] : ll[0];
    for (int i = 1; i < n; i++) {
        double v = len ? ll[i] / len[i] : ll[i];
        if (v > bv || (isnan(v) && !isnan(bv))) { bv = v; best = i; }
        if (isnan(bv)) break; /* numpy argmax returns the first NaN */
    }
    return best;
}

typedef struct {
    int32_t *ctx, *cont;
    int64_t n_ctx, n_cont;
} pair_ids;

/* Score documents [d0, d1) of an MC or LL task in one loglik call. */
static int score_pairs(const ds_task *t, const ds_lm *lm, int add_bos, int64_t d0, int64_t d1, ds_task_result *r) {
    int64_t nreq = 0;
    for (int64_t d = d0; d < d1; d++) nreq += t->docs[d].n;
    pair_ids *ids = ds_calloc((size_t)nreq, sizeof *ids);
    ds_lm_request *req = ds_calloc((size_t)nreq, sizeof *req);
    int64_t ntok = 0, k = 0;
    int rc = 0;
    for (int64_t d = d0; d < d1 && !rc; d++) {
        const ds_eval_doc *doc = &t->docs[d];
        for (int i = 0; i < doc->n; i++, k++) {
            pair_ids *p = &ids[k];
            if (ds_eval_encode_pair(lm, add_bos, doc->ctx[i], doc->cont[i], &p->ctx, &p->n_ctx, &p->cont, &p->n_cont)) {
                rc = ds_err_prefix("%s:%lld: choice %d", t->path, (long long)doc->line, i);
                break;
            }
            if (p->n_cont > lm->max_length) {
                rc = ds_err("%s:%lld: choice %d: continuation of %lld tokens does not fit the context window (%lld)",
                            t->path, (long long)doc->line, i, (long long)p->n_cont, (long long)lm->max_length);
                break;
            }
            /* (ctx + cont)[-(max_length + 1):][:-1]: drop tokens from the left of the context */
            int64_t drop = p->n_ctx + p->n_cont - lm->max_length - 1;
            if (drop < 0) drop = 0;
            req[k] = (ds_lm_request){p->ctx + drop, p->n_ctx - drop, p->cont, p->n_cont, NULL, NULL};
            /* same context as the previous choice of this document: share the array */
            if (i > 0 && req[k - 1].n_ctx == req[k].n_ctx &&
                !memcmp(req[k - 1].ctx, req[k].ctx, (size_t)req[k].n_ctx * sizeof(int32_t)))
                req[k].ctx = req[k - 1].ctx;
            ntok += p->n_cont;
        }
    }
    float *lp = NULL;
    uint8_t *gr = NULL;
    if (!rc) {
        lp = ds_malloc((size_t)ntok * sizeof *lp);
        gr = ds_malloc((size_t)ntok);
        int64_t off = 0;
        for (k = 0; k < nreq; k++) {
            req[k].logprobs = lp + off;
            req[k].greedy = gr + off;
            off += req[k].n_cont;
        }
        if (lm->loglik(lm->ctx, req, nreq)) rc = ds_err_prefix("%s: model", t->name);
    }
    if (!rc) {
        k = 0;
        for (int64_t d = d0; d < d1; d++) {
            const ds_eval_doc *doc = &t->docs[d];
            ds_doc_result *dr = &r->docs[d];
            dr->ll = ds_calloc((size_t)doc->n, sizeof(double));
            dr->greedy = ds_calloc((size_t)doc->n, 1);
            dr->n_tokens = ds_calloc((size_t)doc->n, sizeof(int64_t));
            for (int i = 0; i < doc->n; i++, k++) {
                double s = 0;
                int g = 1;
                for (int64_t j = 0; j < req[k].n_cont; j++) {
                    s += req[k].logprobs[j];
                    g &= req[k].greedy[j] != 0;
                }
                dr->ll[i] = s;
                dr->greedy[i] = (uint8_t)g;
                dr->n_tokens[i] = req[k].n_cont;
            }
            dr->pred = argmax_div(dr->ll, NULL, doc->n);
            dr->pred_norm = argmax_div(dr->ll, doc->len_chars, doc->n);
            dr->pred_bytes = argmax_div(dr->ll, doc->len_bytes, doc->n);
        }
    }
    for (k = 0; k < nreq; k++) { free(ids[k].ctx); free(ids[k].cont); }
    free(ids);
    free(req);
    free(lp);
    free(gr);
    return rc;
}

/* Rolling log-likelihood of one LM document; windows are scored `batch` at a time. */
static int score_rolling(const ds_task *t, const ds_lm *lm, int add_bos, int64_t d, int64_t batch, ds_task_result *r) {
    const ds_eval_doc *doc = &t->docs[d];
    ds_doc_result *dr = &r->docs[d];
    dr->ll = ds_calloc(1, sizeof(double));
    dr->greedy = ds_calloc(1, 1);
    dr->n_tokens = ds_calloc(1, sizeof(int64_t));
    int32_t *tok;
    int64_t n = enc(lm, add_bos, doc->text, strlen(doc->text), &tok);
    if (n < 0) return ds_err_prefix("%s:%lld", t->path, (long long)doc->line);
    dr->n_tokens[0] = n;
    if (n > 0 && lm->prefix_id < 0) { free(tok); return ds_err("%s: rolling windows need a BOS/EOS token and the model has none", t->name); }
    ds_window *w;
    int64_t nw = ds_rolling_windows(n, lm->max_length, t->stride, &w);
    int32_t prefix = lm->prefix_id;
    float *lp = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof *lp);
    uint8_t *gr = ds_malloc((size_t)(n > 0 ? n : 1));
    ds_lm_request *req = ds_calloc((size_t)(nw > 0 ? nw : 1), sizeof *req);
    for (int64_t i = 0; i < nw; i++) {
        req[i].ctx = w[i].ctx_start < 0 ? &prefix : tok + w[i].ctx_start;
        req[i].n_ctx = w[i].ctx_start < 0 ? 1 : w[i].pred_start - w[i].ctx_start;
        req[i].cont = tok + w[i].pred_start;
        req[i].n_cont = w[i].pred_len;
        req[i].logprobs = lp + w[i].pred_start; /* windows are disjoint: each token once */
        req[i].greedy = gr + w[i].pred_start;
    }
    int rc = 0;
    for (int64_t i = 0; i < nw && !rc; i += batch) {
        int64_t m = nw - i < batch ? nw - i : batch;
        if (lm->loglik(lm->ctx, req + i, m)) rc = ds_err_prefix("%s: model", t->name);
    }
    double s = 0;
    for (int64_t i = 0; i < n && !rc; i++) s += lp[i];
    dr->ll[0] = s;
    free(req);
    free(w);
    free(lp);
    free(gr);
    free(tok);
    return rc;
}

typedef struct { const ds_lm *lm; char *const *until; int n_until; } stop_ctx;

static int stop_on_sequences(void *user, const int32_t *out, int64_t n) {
    stop_ctx *s = user;
    char *text = NULL;
    if (s->lm->decode(s->lm->ctx, out, n, &text) < 0) { free(text); return 1; }
    int hit = 0;
    for (int i = 0; i < s->n_until && !hit; i++) hit = strstr(text, s->until[i]) != NULL;
    free(text);
    return hit;
}

static int score_generation(const ds_task *t, const ds_lm *lm, int add_bos, int64_t d, ds_task_result *r) {
    const ds_eval_doc *doc = &t->docs[d];
    ds_doc_result *dr = &r->docs[d];
    if (!lm->generate) return ds_err("%s: this model cannot generate", t->name);
    if (t->max_new >= lm->max_length)
        return ds_err("%s: max_new (%lld) must be less than the context window (%lld)", t->name,
                      (long long)t->max_new, (long long)lm->max_length);
    int32_t *ids;
    int64_t n = enc(lm, add_bos, doc->ctx[0], strlen(doc->ctx[0]), &ids);
    if (n < 0) return ds_err_prefix("%s:%lld", t->path, (long long)doc->line);
    int64_t keep = lm->max_length - t->max_new, drop = n > keep ? n - keep : 0;
    int32_t *out = ds_malloc((size_t)t->max_new * sizeof *out);
    int64_t n_out = 0;
    stop_ctx sc = {lm, t->until, t->n_until};
    int rc = lm->generate(lm->ctx, ids + drop, n - drop, t->max_new, stop_on_sequences, &sc, out, &n_out);
    free(ids);
    if (rc) { free(out); return ds_err_prefix("%s: model", t->name); }
    char *text = NULL;
    if (lm->decode(lm->ctx, out, n_out, &text) < 0) { free(out); free(text); return ds_err_prefix("%s: decode", t->name); }
    free(out);
    /* cut at each stop sequence in turn (lm-eval postprocess: s = s.split(term)[0]) */
    for (int i = 0; i < t->n_until; i++) {
        char *c = strstr(text, t->until[i]);
        if (c) *c = 0;
    }
    dr->generated = text;
    char *pred, *ref;
    if (t->extract == DS_EXTRACT_LAST_NUMBER) {
        char *x = ds_extract_last_number(text);
        dr->extracted = x ? x : ds_strdup("[invalid]");
        pred = ds_normalize_answer(dr->extracted);
        ref = ds_normalize_answer(doc->answer);
        dr->correct = x != NULL && !strcmp(pred, ref);
    } else if (t->extract == DS_EXTRACT_FIRST_WORD) {
        dr->extracted = ds_extract_first_word(text);
        pred = ds_strdup(dr->extracted);
        ref = ds_extract_first_word(doc->answer);
        dr->correct = pred[0] && !strcmp(pred, ref);
    } else {
        size_t b = 0, e = strlen(text), rb = 0, re_ = strlen(doc->answer);
        while (b < e && strchr(" \t\n\r\f\v", text[b])) b++;
        e = b + ds_py_rstrip_len(text + b, e - b);
        while (rb < re_ && strchr(" \t\n\r\f\v", doc->answer[rb])) rb++;
        re_ = rb + ds_py_rstrip_len(doc->answer + rb, re_ - rb);
        pred = ds_malloc(e - b + 1);
        memcpy(pred, text + b, e - b);
        pred[e - b] = 0;
        ref = ds_malloc(re_ - rb + 1);
        memcpy(ref, doc->answer + rb, re_ - rb);
        ref[re_ - rb] = 0;
        dr->extracted = ds_strdup(pred);
        dr->correct = !strcmp(pred, ref);
    }
    free(pred);
    free(ref);
    dr->ll = ds_calloc(1, sizeof(double));
    dr->greedy = ds_calloc(1, 1);
    dr->n_tokens = ds_calloc(1, sizeof(int64_t));
    dr->n_tokens[0] = n_out;
    return 0;
}

static void write_sample(FILE *f, const ds_task *t, int64_t d, const ds_doc_result *dr) {
    const ds_eval_doc *doc = &t->docs[d];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task", t->name);
    cJSON_AddNumberToObject(o, "doc", (double)d);
    cJSON_AddNumberToObject(o, "line", (double)doc->line);
    if (t->kind == DS_TASK_GEN) {
        cJSON_AddStringToObject(o, "generated", dr->generated);
        cJSON_AddStringToObject(o, "extracted", dr->extracted);
        cJSON_AddStringToObject(o, "answer", doc->answer);
        cJSON_AddBoolToObject(o, "exact_match", dr->correct);
    } else {
        cJSON *ll = cJSON_AddArrayToObject(o, "ll"), *g = cJSON_AddArrayToObject(o, "greedy"),
              *nt = cJSON_AddArrayToObject(o, "tokens");
        for (int i = 0; i < doc->n; i++) {
            cJSON_AddItemToArray(ll, cJSON_CreateNumber(dr->ll[i]));
            cJSON_AddItemToArray(g, cJSON_CreateBool(dr->greedy[i]));
            cJSON_AddItemToArray(nt, cJSON_CreateNumber((double)dr->n_tokens[i]));
        }
        if (t->kind == DS_TASK_MC) {
            cJSON_AddNumberToObject(o, "gold", doc->gold);
            cJSON_AddNumberToObject(o, "pred", dr->pred);
            cJSON_AddNumberToObject(o, "pred_norm", dr->pred_norm);
            cJSON_AddNumberToObject(o, "pred_bytes", dr->pred_bytes);
        }
        if (t->kind == DS_TASK_LM) {
            cJSON_AddNumberToObject(o, "bytes", (double)doc->bytes);
            cJSON_AddNumberToObject(o, "words", (double)doc->words);
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n", s);
    free(s);
    cJSON_Delete(o);
}

static void compute_metrics(const ds_task *t, ds_task_result *r) {
    int64_t n = r->n;
    double *x = ds_malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    if (t->kind == DS_TASK_MC) {
        for (int64_t i = 0; i < n; i++) x[i] = r->docs[i].pred == t->docs[i].gold;
        add_metric(r, "acc", ds_mean(x, n), ds_mean_stderr(x, n));
        if (!t->multi_ctx) {
            for (int64_t i = 0; i < n; i++) x[i] = r->docs[i].pred_norm == t->docs[i].gold;
            add_metric(r, "acc_norm", ds_mean(x, n), ds_mean_stderr(x, n));
            for (int64_t i = 0; i < n; i++) x[i] = r->docs[i].pred_bytes == t->docs[i].gold;
            add_metric(r, "acc_bytes", ds_mean(x, n), ds_mean_stderr(x, n));
        }
    } else if (t->kind == DS_TASK_LL) {
        for (int64_t i = 0; i < n; i++) x[i] = r->docs[i].ll[0];
        double m = ds_mean(x, n), ppl = exp(-m);
        /* lm-eval bootstraps this stderr; here the delta method: se(exp(-m)) = exp(-m) se(m) */
        add_metric(r, "perplexity", ppl, ppl * ds_mean_stderr(x, n));
        for (int64_t i = 0; i < n; i++) x[i] = r->docs[i].greedy[0];
        add_metric(r, "acc", ds_mean(x, n), ds_mean_stderr(x, n));
    } else if (t->kind == DS_TASK_LM) {
        double ll = 0, w = 0, b = 0, tk = 0;
        for (int64_t i = 0; i < n; i++) {
            ll += r->docs[i].ll[0];
            w += (double)t->docs[i].words;
            b += (double)t->docs[i].bytes;
            tk += (double)r->docs[i].n_tokens[0];
        }
        add_metric(r, "bits_per_byte", -ll / (b * log(2.0)), NAN);
        add_metric(r, "byte_perplexity", exp(-ll / b), NAN);
        add_metric(r, "word_perplexity", exp(-ll / w), NAN);
        add_metric(r, "token_perplexity", exp(-ll / tk), NAN);
    } else {
        for (int64_t i = 0; i < n; i++) x[i] = r->docs[i].correct;
        add_metric(r, "exact_match", ds_mean(x, n), ds_mean_stderr(x, n));
    }
    free(x);
}

int ds_task_run(const ds_task *t, const ds_lm *lm, const ds_eval_opts *o, FILE *samples, ds_task_result *r) {
    memset(r, 0, sizeof *r);
    if (!lm->loglik || !lm->encode) return ds_err("model: no loglik/encode function");
    if (t->kind == DS_TASK_GEN && !lm->decode) return ds_err("model: no decode function");
    if (t->kind == DS_TASK_LM && t->stride > lm->max_length)
        return ds_err("%s: stride %lld is larger than the context window %lld", t->name, (long long)t->stride,
                      (long long)lm->max_length);
    int64_t batch = o->batch > 0 ? o->batch : 1;
    int add_bos = ds_task_add_bos(t, o);
    r->docs = ds_calloc((size_t)t->n_docs, sizeof *r->docs);
    progress pg = {t->name, t->n_docs, ds_now(), 0, o->progress && ds_log_level >= DS_LOG_INFO};
    double t0 = ds_now();
    clock_t c0 = clock();
    int rc = 0;
    int64_t d = 0;
    while (d < t->n_docs && !rc) {
        int64_t d1 = d + 1;
        if (t->kind == DS_TASK_MC || t->kind == DS_TASK_LL) {
            int64_t nreq = t->docs[d].n;
            while (d1 < t->n_docs && nreq + t->docs[d1].n <= batch) nreq += t->docs[d1++].n;
            rc = score_pairs(t, lm, add_bos, d, d1, r);
        } else if (t->kind == DS_TASK_LM) {
            rc = score_rolling(t, lm, add_bos, d, batch, r);
        } else {
            rc = score_generation(t, lm, add_bos, d, r);
        }
        if (!rc && samples)
            for (int64_t k = d; k < d1; k++) write_sample(samples, t, k, &r->docs[k]);
        r->n = rc ? d : d1;
        d = d1;
        progress_show(&pg, r->n, 0);
    }
    if (rc) {
        if (pg.on) fputc('\n', stderr);
        r->n = d; /* results of documents before the failing batch may be partial: free all */
        return -1;
    }
    progress_show(&pg, r->n, 1);
    r->seconds = ds_now() - t0;
    r->cpu_seconds = (double)(clock() - c0) / CLOCKS_PER_SEC;
    compute_metrics(t, r);
    return 0;
}

void ds_task_result_free(ds_task_result *r) {
    if (r->docs)
        for (int64_t i = 0; i < r->n; i++) {
            free(r->docs[i].ll);
            free(r->docs[i].greedy);
            free(r->docs[i].n_tokens);
            free(r->docs[i].generated);
            free(r->docs[i].extracted);
        }
    free(r->docs);
    memset(r, 0, sizeof *r);
}
