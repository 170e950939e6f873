/*
 * report.c — the HTML page of report.h: gathers what each run folder holds
 * into one JSON data block and wraps it with the page's style and script.
 */
#include "report/report.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/base.h"
#include "base/quote.h"
#include "io/json.h"

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* 1 when JSON text has no raw control byte inside a string and no NUL at
 * all: cJSON accepts those, the page's JSON.parse does not. */
static int json_text_ok(const char *s, size_t n) {
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0) return 0;
        if (in) {
            if (c < 0x20) return 0;
            if (c == '\\') i++;
            else if (c == '"') in = 0;
        } else if (c == '"') {
            in = 1;
        }
    }
    return 1;
}

/* JSON text (already validated) into the page: "</" becomes "<\/" so that no
 * string in it can end the <script> element (the same string to JSON.parse). */
static void put_embedded(ds_sbuf *b, const char *s, size_t n) {
    size_t from = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '<' && s[i + 1] == '/') {
            ds_sbuf_put(b, s + from, i + 1 - from);
            ds_sbuf_puts(b, "\\");
            from = i + 1;
        }
    ds_sbuf_put(b, s + from, n - from);
}

static const char *base_name(const char *p) {
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    static char buf[512];
    size_t s = n;
    while (s > 0 && p[s - 1] != '/') s--;
    snprintf(buf, sizeof buf, "%.*s", (int)(n - s), p + s);
    return buf;
}

/* A JSON file as an embedded value, or "null" when absent or invalid (a
 * warning for invalid). */
static void put_json_file(ds_sbuf *b, const char *path, int quiet) {
    size_t len;
    if (!ds_file_exists(path)) {
        ds_sbuf_puts(b, "null");
        return;
    }
    char *s = ds_read_file(path, &len);
    cJSON *j = s ? ds_json_parse(s, len, path) : NULL;
    if (j && !json_text_ok(s, len)) {
        cJSON_Delete(j);
        j = NULL;
        ds_err("%s: a control character inside a string", path);
    }
    if (!j) {
        if (!quiet) fprintf(stderr, "dsv3 report: warning: %s\n", ds_errmsg());
        ds_sbuf_puts(b, "null");
    } else {
        put_embedded(b, s, len);
    }
    cJSON_Delete(j);
    free(s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* What kind of results file a JSON object is: 'e' eval, 'f' fp8 analyze, 0 other. */
static int json_kind(const cJSON *j) {
    if (!cJSON_IsObject(j)) return 0;
    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "results"))) return 'e';
    if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "weights")) &&
        cJSON_GetObjectItemCaseSensitive(j, "summary"))
        return 'f';
    return 0;
}

/* {"file": NAME, "kind": "eval"|"fp8", "data": ...} for one file; 0 when it
 * is neither kind. */
static int put_result_file(ds_sbuf *b, const char *path, int *first, int quiet, int named) {
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) {
        if (named) return -1;
        return 0;
    }
    cJSON *j = ds_json_parse(s, len, path);
    if (j && !json_text_ok(s, len)) {
        cJSON_Delete(j);
        j = NULL;
        ds_err("%s: a control character inside a string", path);
    }
    int k = json_kind(j);
    if (!k && named) {
        free(s);
        if (!j) return -1;
        cJSON_Delete(j);
        return ds_err("%s: neither a `dsv3 eval --out` results file nor a `dsv3 fp8 analyze --json` file", path);
    }
    if (k) {
        ds_sbuf_puts(b, *first ? "{\"file\": " : ", {\"file\": ");
        *first = 0;
        ds_json_put_string(b, path);
        ds_sbuf_printf(b, ", \"kind\": \"%s\", \"data\": ", k == 'e' ? "eval" : "fp8");
        put_embedded(b, s, len);
        ds_sbuf_puts(b, "}");
    }
    (void)quiet;
    cJSON_Delete(j);
    free(s);
    return 0;
}

/* The results files at the top of a run folder, in name order. */
static void put_run_results(ds_sbuf *b, const char *run, int quiet) {
    DIR *d = opendir(run);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") || !strcmp(e->d_name, "run.json")) continue;
        if (n == cap) names = ds_realloc(names, (cap = cap ? 2 * cap : 8) * sizeof *names);
        names[n++] = ds_strdup(e->d_name);
    }
    if (d) closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    int first = 1;
    ds_sbuf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        char *p = ds_path_join(run, names[i]);
        put_result_file(b, p, &first, quiet, 0);
        free(p), free(names[i]);
    }
    free(names);
    ds_sbuf_puts(b, "]");
}

/* A copy of a log line without its "load" and "bias" members (arrays of
 * numbers), cut out of the text; NULL when the result would not be a JSON
 * object without them (then the line is kept whole). */
static char *strip_arrays(const char *line, size_t n) {
    char *t = ds_malloc(n + 1);
    memcpy(t, line, n);
    t[n] = 0;
    static const char *const keys[] = {", \"load\": [", ", \"bias\": ["};
    for (int k = 0; k < 2; k++) {
        char *a = strstr(t, keys[k]);
        if (!a) continue;
        char *q = a + strlen(keys[k]);
        int depth = 1;
        for (; *q && depth; q++) depth += *q == '[' ? 1 : *q == ']' ? -1 : 0;
        if (depth) {
            free(t);
            return NULL;
        }
        memmove(a, q, strlen(q) + 1);
    }
    cJSON *j = cJSON_Parse(t);
    int ok = cJSON_IsObject(j) && !cJSON_GetObjectItemCaseSensitive(j, "load") && !cJSON_GetObjectItemCaseSensitive(j, "bias");
    cJSON_Delete(j);
    if (!ok) {
        free(t);
        return NULL;
    }
    return t;
}

/* The valid records of train_log.jsonl as a JSON array, and the skipped
 * lines as [{"line": N, "why": "..."}]. */
static int put_log(ds_sbuf *b, const char *run, const char *label, int quiet) {
    char *path = ds_path_join(run, "train_log.jsonl");
    if (!ds_file_exists(path)) {
        free(path);
        return ds_err("%s: no train_log.jsonl (not a run folder of `dsv3 train`)", run);
    }
    size_t len;
    char *s = ds_read_file(path, &len);
    if (!s) {
        free(path);
        return -1;
    }
    /* per-expert arrays (load, bias) of at most MAX_ROUTING records, evenly
     * spaced, stay in the page: a long run of a large MoE would otherwise
     * make it hundreds of MB; every scalar of every record stays */
    enum { MAX_ROUTING = 500 };
    int64_t nload = 0;
    for (const char *q = s; (q = strstr(q, "\"load\": [")); q++) nload++;
    int64_t stride = nload > MAX_ROUTING ? (nload + MAX_ROUTING - 1) / MAX_ROUTING : 1, kload = 0, thinned = 0;
    ds_sbuf sk = {0};
    ds_sbuf_puts(b, ", \"records\": [");
    int64_t nrec = 0, nskip = 0, lineno = 0;
    for (size_t at = 0; at < len;) {
        char *nl = memchr(s + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - s) : len, ll = end - at;
        lineno++;
        const char *line = s + at;
        at = nl ? end + 1 : len;
        size_t k = 0;
        while (k < ll && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
        if (k == ll) continue; /* blank */
        char what[64];
        snprintf(what, sizeof what, "line %lld", (long long)lineno);
        cJSON *j = ds_json_parse(line, ll, what);
        const char *why = NULL;
        char whybuf[256];
        if (!j) {
            snprintf(whybuf, sizeof whybuf, "%s%s", ds_errmsg(), nl ? "" : " (the last line, cut short)");
            why = whybuf;
        } else if (!json_text_ok(line, ll)) {
            snprintf(whybuf, sizeof whybuf, "line %lld: a control character inside a string", (long long)lineno);
            why = whybuf;
        } else if (!cJSON_IsObject(j)) {
            snprintf(whybuf, sizeof whybuf, "line %lld: a JSON %s, not an object", (long long)lineno,
                     ds_json_type_name(j));
            why = whybuf;
        }
        char *thin = NULL;
        if (!why && cJSON_GetObjectItemCaseSensitive(j, "load")) {
            if (stride > 1 && kload % stride != 0 && kload != nload - 1) {
                thin = strip_arrays(line, ll); /* the rest of the text as written: the same numbers */
                thinned++;
            }
            kload++;
        }
        cJSON_Delete(j);
        if (why) {
            if (nskip < 1000) {
                ds_sbuf_printf(&sk, "%s{\"line\": %lld, \"why\": ", nskip ? ", " : "", (long long)lineno);
                ds_json_put_string(&sk, why);
                ds_sbuf_puts(&sk, "}");
            }
            if (!quiet && nskip < 5) fprintf(stderr, "dsv3 report: %s: %s: skipped\n", path, why);
            nskip++;
            continue;
        }
        if (nrec++) ds_sbuf_puts(b, ",\n");
        if (thin) put_embedded(b, thin, strlen(thin));
        else put_embedded(b, line, ll);
        free(thin);
    }
    if (!quiet && nskip > 5) fprintf(stderr, "dsv3 report: %s: %lld lines skipped in all\n", path, (long long)nskip);
    if (!quiet && nrec == 0) fprintf(stderr, "dsv3 report: %s: no valid records (run %s)\n", path, label);
    ds_sbuf_printf(b, "], \"routing_every\": %lld, \"skipped_total\": %lld, \"skipped\": [", (long long)stride,
                   (long long)nskip);
    (void)thinned;
    char *t = ds_sbuf_take(&sk);
    if (t) ds_sbuf_puts(b, t);
    free(t);
    ds_sbuf_puts(b, "]");
    free(s), free(path);
    return 0;
}

int ds_report_write(const char *const *runs, int n, const ds_report_opts *o, const char *out) {
    static const ds_report_opts none = {0};
    if (!o) o = &none;
    if (n < 1) return ds_err("no run folder given");
    for (int i = 0; i < n; i++)
        if (!is_dir(runs[i])) return ds_err("%s: no such run folder", runs[i]);
    int baseline = -1;
    if (o->baseline) {
        for (int i = 0; i < n && baseline < 0; i++) {
            const char *lab = o->labels && o->labels[i] ? o->labels[i] : base_name(runs[i]);
            if (!strcmp(o->baseline, runs[i]) || !strcmp(o->baseline, lab)) baseline = i;
        }
        if (baseline < 0) return ds_err("--baseline %s: not one of the runs given", ds_quote(o->baseline));
    }
    ds_sbuf b = {0};
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    ds_sbuf_puts(&b, "{\"title\": ");
    ds_json_put_string(&b, o->title ? o->title : "dsv3 report");
    ds_sbuf_printf(&b, ", \"generated\": \"%s\", \"dsv3_version\": \"%s\", \"baseline\": %d, \"fp8_gap_line\": 0.25",
                   when, DS_VERSION, baseline);
    ds_sbuf_puts(&b, ",\n\"ablation\": ");
    if (o->ablation_json) put_embedded(&b, o->ablation_json, strlen(o->ablation_json));
    else ds_sbuf_puts(&b, "null");
    ds_sbuf_puts(&b, ",\n\"files\": [");
    int first = 1;
    for (int i = 0; i < o->n_extra; i++)
        if (put_result_file(&b, o->extra_json[i], &first, o->quiet, 1)) {
            free(ds_sbuf_take(&b));
            return -1;
        }
    ds_sbuf_puts(&b, "],\n\"runs\": [");
    for (int i = 0; i < n; i++) {
        const char *lab = o->labels && o->labels[i] ? o->labels[i] : base_name(runs[i]);
        ds_sbuf_puts(&b, i ? ",\n{\"label\": " : "\n{\"label\": ");
        ds_json_put_string(&b, lab);
        ds_sbuf_puts(&b, ", \"path\": ");
        ds_json_put_string(&b, runs[i]);
        if (put_log(&b, runs[i], lab, o->quiet)) {
            free(ds_sbuf_take(&b));
            return -1;
        }
        char *p = ds_path_join(runs[i], "run.json");
        ds_sbuf_puts(&b, ",\n \"info\": ");
        put_json_file(&b, p, o->quiet);
        free(p);
        p = ds_path_join(runs[i], "latest/config.json");
        ds_sbuf_puts(&b, ",\n \"config\": ");
        put_json_file(&b, p, o->quiet);
        free(p);
        ds_sbuf_puts(&b, ",\n \"files\": ");
        put_run_results(&b, runs[i], o->quiet);
        ds_sbuf_puts(&b, "}");
    }
    ds_sbuf_puts(&b, "]}");
    char *data = ds_sbuf_take(&b);

    ds_sbuf h = {0};
    ds_sbuf_puts(&h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    const char *title = o->title ? o->title : "dsv3 report";
    for (const char *c = title; *c; c++) {
        if (*c == '<') ds_sbuf_puts(&h, "&lt;");
        else if (*c == '&') ds_sbuf_puts(&h, "&amp;");
        else ds_sbuf_put(&h, c, 1);
    }
    ds_sbuf_puts(&h, "</title>\n<style>\n");
    ds_sbuf_puts(&h, ds_report_css);
    ds_sbuf_puts(&h, "</style></head>\n<body>\n<div id=\"app\"><noscript>This report draws its charts with "
                     "JavaScript; the numbers are in the data block of the page source.</noscript></div>\n"
                     "<script type=\"application/json\" id=\"dsv3-data\">\n");
    ds_sbuf_puts(&h, data);
    ds_sbuf_puts(&h, "\n</script>\n<script>\n");
    ds_sbuf_puts(&h, ds_report_js);
    ds_sbuf_puts(&h, "</script>\n</body></html>\n");
    free(data);
    char *html = ds_sbuf_take(&h);
    int rc = ds_write_file_atomic(out, html, strlen(html));
    free(html);
    return rc;
}
