/*
 * model_convert.c — `dsv3 convert`: model folder FP32 / BF16 / FP8 (see
 * model_convert.h).  One pass builds every output tensor in memory (tensors
 * that keep their dtype point into the input mapping), then the weights are
 * written with ds_st_write_model, then config.json, then the other files.
 */
#include "model/model_convert.h"

#include "base/base.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "num/convert.h"
#include "num/fp8.h"
#include "num/quant.h"

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int ds_ckpt_format_from_name(const char *name) {
    if (!strcmp(name, "fp32")) return DS_CKPT_FP32;
    if (!strcmp(name, "bf16")) return DS_CKPT_BF16;
    if (!strcmp(name, "fp8")) return DS_CKPT_FP8;
    return -1;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !memcmp(s + n - m, suf, m);
}

int ds_weight_is_fp8_linear(const char *name) {
    static const char pre[] = "model.layers.";
    if (strncmp(name, pre, sizeof pre - 1)) return 0;
    const char *p = name + sizeof pre - 1;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (*p++ != '.') return 0;
    static const char *const attn[] = {"q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"};
    static const char *const mlp[] = {"gate_proj", "up_proj", "down_proj"};
    char leaf[64];
    if (!strncmp(p, "self_attn.", 10)) {
        for (size_t i = 0; i < sizeof attn / sizeof *attn; i++) {
            snprintf(leaf, sizeof leaf, "%s.weight", attn[i]);
            if (!strcmp(p + 10, leaf)) return 1;
        }
        return 0;
    }
    if (strncmp(p, "mlp.", 4)) return 0;
    p += 4;
    if (!strncmp(p, "shared_experts.", 15)) p += 15;
    else if (!strncmp(p, "experts.", 8)) {
        p += 8;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9') p++;
        if (*p++ != '.') return 0;
    }
    for (size_t i = 0; i < sizeof mlp / sizeof *mlp; i++) {
        snprintf(leaf, sizeof leaf, "%s.weight", mlp[i]);
        if (!strcmp(p, leaf)) return 1;
    }
    return 0;
}

int ds_fp8_block_cast(uint8_t *q, float *scale, const float *w, int64_t rows, int64_t cols, int64_t b, int ue8m0) {
    if (rows < 0 || cols < 0) return ds_err("fp8 block cast: negative shape (%lld, %lld)", (long long)rows, (long long)cols);
    if (b < 1) return ds_err("fp8 block cast: block size %lld is not positive", (long long)b);
    const int64_t rb = ds_ceil_div(rows, b), cb = ds_ceil_div(cols, b);
    // W (rows, cols) -> q (rows, cols), scale (rb, cb): per block s = max(amax, 1e-4) / 448
    #pragma omp parallel for schedule(dynamic) if (rows * cols > (1 << 16))
    for (int64_t bi = 0; bi < rb; bi++) {
        const int64_t r0 = bi * b, r1 = r0 + b < rows ? r0 + b : rows;
        for (int64_t bj = 0; bj < cb; bj++) {
            const int64_t c0 = bj * b, nc = c0 + b < cols ? b : cols - c0;
            float a = 0.0f;
            for (int64_t r = r0; r < r1; r++) a = fmaxf(a, ds_f32_amax(w + r * cols + c0, nc));
            if (a < DS_QUANT_AMAX_FLOOR) a = DS_QUANT_AMAX_FLOOR;
            float s = a / 448.0f;
            if (ue8m0) s = ds_quant_ue8m0_ceil(s);
            scale[bi * cb + bj] = s;
            for (int64_t r = r0; r < r1; r++) ds_fp8_encode_div_sat(q + r * cols + c0, w + r * cols + c0, nc, s, DS_FP8_E4M3);
        }
    }
    return 0;
}

/* One output tensor; buf is owned (NULL when data points into the input). */
typedef struct {
    ds_st_entry e;
    void *buf;
    char *name_buf;
} out_tensor;

typedef struct {
    out_tensor *v;
    int64_t n, cap;
} out_list;

static out_tensor *out_push(out_list *l) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = ds_realloc(l->v, sizeof *l->v * (size_t)l->cap);
    }
    out_tensor *o = &l->v[l->n++];
    memset(o, 0, sizeof *o);
    return o;
}

static void out_free(out_list *l) {
    for (int64_t i = 0; i < l->n; i++) { free(l->v[i].buf); free(l->v[i].name_buf); }
    free(l->v);
}

static char *with_suffix(const char *name, const char *suf) {
    size_t n = strlen(name), m = strlen(suf);
    char *p = ds_malloc(n + m + 1);
    memcpy(p, name, n);
    memcpy(p + n, suf, m + 1);
    return p;
}

/* The tensor t (of file) as FP32 in a new buffer, dequantizing F8 with its scale. */
static float *to_f32(const ds_st_set *s, const ds_st_tensor *t, const char *file, int64_t bs0, int64_t bs1) {
    float *x = ds_malloc(sizeof(float) * (size_t)(t->numel > 0 ? t->numel : 1));
    if (t->dtype == DS_F8_E4M3 || t->dtype == DS_F8_E5M2) {
        char *sn = with_suffix(t->name, "_scale_inv");
        const ds_st_tensor *sc = ds_st_set_find(s, sn, NULL);
        int rc;
        if (!sc)
            rc = ds_err("%s: %s: %s weight without %s (an FP8 checkpoint needs its block scales)", file, ds_esc(t->name),
                        ds_dtype_table[t->dtype].st_name, sn);
        else if ((rc = ds_st_dequant_fp8_block(t, sc, bs0, bs1, x)) != 0)
            ds_err_prefix("%s", file);
        free(sn);
        if (rc) { free(x); return NULL; }
        return x;
    }
    if (ds_st_to_f32(t, x)) {
        ds_err_prefix("%s: %s", file, ds_esc(t->name));
        free(x);
        return NULL;
    }
    return x;
}

/* Build the output tensors of s for target o.  0 or -1. */
static int build(out_list *out, const ds_st_set *s, const ds_config *cin, const ds_convert_opts *o) {
    const int64_t bs0 = cin->quant_fp8 ? cin->quant_block[0] : 128, bs1 = cin->quant_fp8 ? cin->quant_block[1] : 128;
    for (int64_t i = 0; i < s->nrefs; i++) {
        const ds_st_tensor *t = s->refs[i].t;
        const char *file = s->files[s->refs[i].file].path;
        if (ends_with(t->name, "_scale_inv")) {
            size_t n = strlen(t->name) - 10;
            char *wn = ds_malloc(n + 1);
            memcpy(wn, t->name, n);
            wn[n] = 0;
            const ds_st_tensor *w = ds_st_set_find(s, wn, NULL);
            int bad = !w || (w->dtype != DS_F8_E4M3 && w->dtype != DS_F8_E5M2);
            free(wn);
            if (bad) return ds_err("%s: %s: a block scale without an FP8 weight beside it", file, ds_esc(t->name));
            continue; /* consumed with its weight */
        }
        const int is_f8 = t->dtype == DS_F8_E4M3 || t->dtype == DS_F8_E5M2;
        if (!ds_dtype_table[t->dtype].is_float) { /* integer tensors: copied */
            out_tensor *ot = out_push(out);
            ot->e = (ds_st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
            memcpy(ot->e.shape, t->shape, sizeof t->shape);
            if (!t->data || t->nbytes == 0) ot->e.data = ot->buf = ds_malloc(1);
            continue;
        }
        const int fp8_out = o->to == DS_CKPT_FP8 && ds_weight_is_fp8_linear(t->name);
        if (fp8_out && t->ndim != 2)
            return ds_err("%s: %s: a linear weight must be 2-D, got %d dimensions", file, ds_esc(t->name), t->ndim);
        if (is_f8 && !fp8_out && t->ndim != 2)
            return ds_err("%s: %s: block-scaled F8 weight must be 2-D, got %d dimensions", file, ds_esc(t->name), t->ndim);
        ds_dtype want = fp8_out ? DS_F8_E4M3
                        : ends_with(t->name, "e_score_correction_bias") ? DS_F32
                        : o->to == DS_CKPT_FP32 ? DS_F32 : DS_BF16;
        out_tensor *ot = out_push(out);
        ot->e = (ds_st_entry){t->name, want, t->ndim, {0}, NULL};
        memcpy(ot->e.shape, t->shape, sizeof t->shape);
        if (fp8_out && t->dtype == DS_F8_E4M3 && bs0 == o->block && bs1 == o->block) {
            /* already in the target format (E4M3, same blocks, F32 scales of the
             * right shape, powers of two if ue8m0 is asked for): kept as it is,
             * never re-quantized (a published checkpoint's scales need not be
             * amax / 448) */
            char *sn = with_suffix(t->name, "_scale_inv");
            const ds_st_tensor *sc = ds_st_set_find(s, sn, NULL);
            int keep = sc && sc->dtype == DS_F32 && sc->ndim == 2 && sc->shape[0] == ds_ceil_div(t->shape[0], bs0) &&
                       sc->shape[1] == ds_ceil_div(t->shape[1], bs1);
            for (int64_t j = 0; keep && o->ue8m0 && j < sc->numel; j++) {
                uint32_t u;
                memcpy(&u, (const char *)sc->data + 4 * j, 4);
                keep = (u & 0x807fffffu) == 0 && ((u >> 23) & 0xff) >= 1 && ((u >> 23) & 0xff) <= 254;
            }
            if (keep) {
                ot->e.data = t->data && t->nbytes ? t->data : (ot->buf = ds_malloc(1));
                out_tensor *os = out_push(out);
                os->name_buf = sn;
                os->e = (ds_st_entry){os->name_buf, DS_F32, 2, {sc->shape[0], sc->shape[1]}, sc->data};
                if (!sc->data || sc->nbytes == 0) os->e.data = os->buf = ds_malloc(1);
                continue;
            }
            free(sn);
        }
        if (!fp8_out && t->dtype == want) { /* unchanged: straight from the input mapping */
            ot->e.data = t->data && t->nbytes ? t->data : (ot->buf = ds_malloc(1));
            continue;
        }
        float *x = to_f32(s, t, file, bs0, bs1);
        if (!x) return -1;
        if (fp8_out) {
            const int64_t R = t->shape[0], C = t->shape[1], b = o->block;
            uint8_t *q = ds_malloc((size_t)(R * C > 0 ? R * C : 1));
            int64_t sh[2] = {ds_ceil_div(R, b), ds_ceil_div(C, b)};
            float *sc = ds_malloc(sizeof(float) * (size_t)(sh[0] * sh[1] > 0 ? sh[0] * sh[1] : 1));
            int rc = ds_fp8_block_cast(q, sc, x, R, C, b, o->ue8m0);
            free(x);
            ot->e.data = ot->buf = q;
            if (rc) { free(sc); return -1; }
            out_tensor *os = out_push(out);
            os->name_buf = with_suffix(t->name, "_scale_inv");
            os->e = (ds_st_entry){os->name_buf, DS_F32, 2, {sh[0], sh[1]}, sc};
            os->buf = sc;
            continue;
        }
        size_t nb = ds_dtype_table[want].size * (size_t)(t->numel > 0 ? t->numel : 1);
        ot->e.data = ot->buf = ds_malloc(nb);
        int rc = ds_convert(ot->buf, want, x, DS_F32, t->numel);
        free(x);
        if (rc) return ds_err_prefix("%s: %s", file, ds_esc(t->name));
    }
    return 0;
}

static int skip_file(const char *name) {
    return name[0] == '.' || ends_with(name, ".safetensors") || !strcmp(name, "model.safetensors.index.json") ||
           !strcmp(name, "config.json");
}

/* Copy the regular files of in_dir that are neither weights nor config.json. */
static int copy_others(const char *in_dir, const char *out_dir) {
    DIR *d = opendir(in_dir);
    if (!d) return ds_err("%s: cannot list the folder", in_dir);
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (skip_file(de->d_name)) continue;
        char *src = ds_path_join(in_dir, de->d_name);
        struct stat st;
        if (stat(src, &st) == 0 && S_ISREG(st.st_mode)) {
            size_t n;
            char *text = ds_read_file(src, &n);
            char *dst = ds_path_join(out_dir, de->d_name);
            rc = !text || ds_write_file_atomic(dst, text, n) ? -1 : 0;
            free(text);
            free(dst);
        }
        free(src);
    }
    closedir(d);
    return rc;
}

/* ---- config.json: edited in place, every other byte kept ------------------------
 * The top-level members are located by a scanner (the text is valid JSON:
 * ds_config_load parsed it); quantization_config is dropped or replaced,
 * "dtype" / "torch_dtype" get the new value, and a new quantization_config
 * goes before the first key that sorts after it (sorted files stay sorted).
 * Indentation follows the file's own (transformers: two spaces). */
typedef struct {
    size_t key0, key1, val0, val1; /* key string [key0, key1) with quotes, value [val0, val1) */
} member;

static size_t skip_ws(const char *t, size_t i) {
    while (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r') i++;
    return i;
}
static size_t skip_string(const char *t, size_t i) { /* t[i] == '"' */
    for (i++; t[i] && t[i] != '"'; i++)
        if (t[i] == '\\' && t[i + 1]) i++;
    return t[i] ? i + 1 : i;
}
static size_t skip_value(const char *t, size_t i) {
    if (t[i] == '"') return skip_string(t, i);
    if (t[i] == '{' || t[i] == '[') {
        int depth = 0;
        while (t[i]) {
            if (t[i] == '"') { i = skip_string(t, i); continue; }
            if (t[i] == '{' || t[i] == '[') depth++;
            else if ((t[i] == '}' || t[i] == ']') && --depth == 0) return i + 1;
            i++;
        }
        return i;
    }
    while (t[i] && t[i] != ',' && t[i] != '}' && t[i] != ']' && t[i] != ' ' && t[i] != '\n' && t[i] != '\r' && t[i] != '\t') i++;
    return i;
}
static int key_is(const char *t, const member *m, const char *k) {
    size_t n = strlen(k);
    return m->key1 - m->key0 == n + 2 && !memcmp(t + m->key0 + 1, k, n);
}

static char *edit_config(const char *t, const ds_convert_opts *o, const char *path) {
    size_t i = skip_ws(t, 0), cap = 16, n = 0;
    if (t[i] != '{') { ds_err("%s: not a JSON object", path); return NULL; }
    const size_t open = i;
    member *m = ds_malloc(sizeof *m * cap);
    i = skip_ws(t, i + 1);
    while (t[i] == '"') {
        if (n == cap) m = ds_realloc(m, sizeof *m * (cap *= 2));
        m[n].key0 = i;
        m[n].key1 = i = skip_string(t, i);
        i = skip_ws(t, i);
        if (t[i] != ':') break;
        m[n].val0 = i = skip_ws(t, i + 1);
        m[n].val1 = i = skip_value(t, i);
        n++;
        i = skip_ws(t, i);
        if (t[i] != ',') break;
        i = skip_ws(t, i + 1);
    }
    if (t[i] != '}') { free(m); ds_err("%s: cannot edit (unexpected text at offset %zu)", path, i); return NULL; }
    const size_t close = i;
    /* indentation: the whitespace before the first key (or "\n  ") */
    char ws[64] = "\n  ";
    if (n) {
        size_t w = m[0].key0 - open - 1;
        if (w < sizeof ws) { memcpy(ws, t + open + 1, w); ws[w] = 0; }
    }
    const char *ind = strrchr(ws, '\n') ? strrchr(ws, '\n') + 1 : NULL; /* NULL: compact file */
    ds_sbuf q = {0};
    if (o->to == DS_CKPT_FP8) {
        const char *nl = ind ? "\n" : "", *sp = ind ? " " : "";
        char in1[80], in2[80];
        snprintf(in1, sizeof in1, "%s%s", ind ? ind : "", ind ? ind : "");
        snprintf(in2, sizeof in2, "%s%s", in1, ind ? ind : "");
        ds_sbuf_printf(&q, "\"quantization_config\":%s{%s%s\"activation_scheme\":%s\"dynamic\",%s%s\"fmt\":%s\"e4m3\",%s%s"
                           "\"quant_method\":%s\"fp8\",", sp, nl, in1, sp, nl, in1, sp, nl, in1, sp);
        if (o->ue8m0) ds_sbuf_printf(&q, "%s%s\"scale_fmt\":%s\"ue8m0\",", nl, in1, sp);
        ds_sbuf_printf(&q, "%s%s\"weight_block_size\":%s[%s%s%lld,%s%s%lld%s%s]%s%s}", nl, in1, sp, nl, in2,
                       (long long)o->block, nl, in2, (long long)o->block, nl, in1, nl, ind ? ind : "");
    }
    char *qtext = ds_sbuf_take(&q);
    const char *dtype = o->to == DS_CKPT_FP32 ? "\"float32\"" : "\"bfloat16\"";
    ds_sbuf b = {0};
    ds_sbuf_put(&b, t, open + 1);
    int first = 1, placed = o->to != DS_CKPT_FP8, have_dtype = 0;
    for (size_t k = 0; k <= n; k++) {
        /* the new quantization_config goes before the first key that sorts after it */
        if (!placed && (k == n || strncmp(t + m[k].key0 + 1, "quantization_config\"", 20) > 0)) {
            ds_sbuf_puts(&b, first ? "" : ",");
            ds_sbuf_puts(&b, ws);
            ds_sbuf_puts(&b, qtext);
            placed = 1;
            first = 0;
        }
        if (k == n) break;
        if (key_is(t, &m[k], "quantization_config")) continue; /* dropped, or replaced above */
        ds_sbuf_puts(&b, first ? "" : ",");
        ds_sbuf_puts(&b, ws);
        first = 0;
        ds_sbuf_put(&b, t + m[k].key0, m[k].val0 - m[k].key0);
        if (key_is(t, &m[k], "dtype") || key_is(t, &m[k], "torch_dtype")) {
            ds_sbuf_puts(&b, dtype);
            have_dtype = 1;
        } else
            ds_sbuf_put(&b, t + m[k].val0, m[k].val1 - m[k].val0);
    }
    if (!have_dtype) ds_sbuf_printf(&b, "%s%s\"dtype\":%s%s", first ? "" : ",", ws, ind ? " " : "", dtype);
    /* the closing part: the whitespace before '}' as in the input, then the rest */
    if (n) { /* keep the whitespace between the last value and '}' */
        size_t w0 = m[n - 1].val1;
        ds_sbuf_put(&b, t + w0, close - w0);
    } else
        ds_sbuf_puts(&b, ind ? "\n" : "");
    ds_sbuf_puts(&b, t + close);
    free(qtext);
    free(m);
    return ds_sbuf_take(&b);
}

int ds_model_convert(const char *in_dir, const char *out_dir, const ds_convert_opts *o) {
    if (o->to != DS_CKPT_FP32 && o->to != DS_CKPT_BF16 && o->to != DS_CKPT_FP8)
        return ds_err("convert: unknown target format %d (fp8, bf16 or fp32)", (int)o->to);
    if (o->to == DS_CKPT_FP8 && (o->block < 1 || o->block > 65536))
        return ds_err("convert: block size %lld must be in 1..65536", (long long)o->block);
    char rin[PATH_MAX], rout[PATH_MAX];
    if (realpath(in_dir, rin) && realpath(out_dir, rout) && !strcmp(rin, rout))
        return ds_err("convert: %s: the output folder must differ from the input folder", out_dir);
    char *cpath = ds_path_join(in_dir, "config.json");
    ds_config c;
    size_t clen;
    char *ctext_in = ds_read_file(cpath, &clen);
    int rc = !ctext_in ? -1 : strlen(ctext_in) != clen ? ds_err("%s: contains a NUL byte", cpath)
                                                     : ds_config_parse(&c, ctext_in, cpath);
    ds_st_set s;
    if (rc || ds_st_set_open(&s, in_dir)) {
        free(ctext_in);
        free(cpath);
        return -1;
    }
    out_list out = {0};
    rc = build(&out, &s, &c, o);
    if (!rc) {
        int64_t shard = o->max_shard_bytes;
        if (shard < 0) {
            shard = 0;
            if (s.nfiles > 1)
                for (int i = 0; i < s.nfiles; i++)
                    if ((int64_t)s.files[i].map_size > shard) shard = (int64_t)s.files[i].map_size;
        }
        ds_st_entry *e = ds_malloc(sizeof *e * (size_t)(out.n > 0 ? out.n : 1));
        for (int64_t i = 0; i < out.n; i++) e[i] = out.v[i].e;
        static const char *const meta[] = {"format", "pt", NULL};
        /* the config first in memory: a bad one stops us before any write */
        char *opath = ds_path_join(out_dir, "config.json");
        char *ctext = edit_config(ctext_in, o, cpath);
        ds_config chk;
        rc = !ctext || ds_config_parse(&chk, ctext, opath) || ds_config_validate(&chk, opath) ? -1 : 0;
        if (!rc && (o->to == DS_CKPT_FP8) != (chk.quant_fp8 != 0))
            rc = ds_err("%s: quantization_config could not be edited", cpath);
        if (!rc) rc = ds_mkdir_p(out_dir);
        if (!rc) rc = ds_st_write_model(out_dir, e, out.n, meta, shard);
        if (!rc) rc = ds_write_file_atomic(opath, ctext, strlen(ctext));
        if (!rc) rc = copy_others(in_dir, out_dir);
        free(opath);
        free(ctext);
        free(e);
    }
    out_free(&out);
    ds_st_set_close(&s);
    free(ctext_in);
    free(cpath);
    return rc;
}
