/*
 * json.c — cJSON parse with positioned errors; text builder; Python-style
 * number and string printing for the JSON writers.
 */
#include "io/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

static uint64_t key_hash(const char *k) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *k; k++) h = (h ^ (unsigned char)*k) * 1099511628211ULL;
    return h;
}

/* Duplicate keys: the last value wins at the place of the first, as in
 * Python's json module (a dict keeps the first insertion's position) and so
 * in transformers, which reads config.json with it.  cJSON keeps every member
 * and its lookups find the first, so each repeated member replaces the first
 * one of its key here, in every object of the tree. */
static void keep_last_keys(cJSON *node) {
    int64_t n = 0;
    for (cJSON *c = node->child; c; c = c->next) {
        if (cJSON_IsObject(c) || cJSON_IsArray(c)) keep_last_keys(c);
        n++;
    }
    if (!cJSON_IsObject(node) || n < 2) return;
    size_t cap = 4;
    while (cap < 2 * (size_t)n) cap *= 2;
    cJSON **seen = ds_calloc(cap, sizeof *seen);
    for (cJSON *c = node->child, *next; c; c = next) {
        next = c->next;
        const char *key = c->string ? c->string : "";
        size_t h = (size_t)key_hash(key) & (cap - 1);
        for (; seen[h]; h = (h + 1) & (cap - 1))
            if (!strcmp(seen[h]->string ? seen[h]->string : "", key)) break;
        if (!seen[h]) {
            seen[h] = c;
            continue;
        }
        cJSON_DetachItemViaPointer(node, c);
        cJSON_ReplaceItemViaPointer(node, seen[h], c); /* frees the earlier member */
        seen[h] = c;
    }
    free(seen);
}

static cJSON *parse(const char *text, size_t len, const char *what, int last_wins);

cJSON *ds_json_parse(const char *text, size_t len, const char *what) { return parse(text, len, what, 1); }

cJSON *ds_json_parse_keep_dups(const char *text, size_t len, const char *what) { return parse(text, len, what, 0); }

static cJSON *parse(const char *text, size_t len, const char *what, int last_wins) {
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) i++;
    if (i == len) { ds_err("%s: empty (expected a JSON object)", what); return NULL; }
    size_t bad;
    if (!ds_utf8_valid((const unsigned char *)text, len, &bad)) {
        ds_err("%s: not valid UTF-8 (byte %zu)", what, bad);
        return NULL;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (j) {
        /* only whitespace may follow the value */
        size_t k = (size_t)(end - text);
        while (k < len && (text[k] == ' ' || text[k] == '\t' || text[k] == '\n' || text[k] == '\r' || text[k] == 0)) k++;
        if (k == len) {
            if (last_wins) keep_last_keys(j);
            return j;
        }
        cJSON_Delete(j);
        end = text + k;
    }
    size_t pos = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    int64_t line = 1, col = 1;
    for (size_t k = 0; k < pos; k++) {
        if (text[k] == '\n') { line++; col = 1; } else col++;
    }
    ds_err("%s: invalid JSON at line %lld, column %lld", what, (long long)line, (long long)col);
    return NULL;
}

const char *ds_json_type_name(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    return "invalid";
}

int ds_json_int64(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0)) return -1;
    if (d != floor(d)) return -1;
    *out = (int64_t)d;
    return 0;
}

/* ---- text builder -------------------------------------------------------- */
void ds_sbuf_put(ds_sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        b->p = ds_realloc(b->p, c);
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void ds_sbuf_puts(ds_sbuf *b, const char *s) { ds_sbuf_put(b, s, strlen(s)); }

void ds_sbuf_printf(ds_sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) { ds_sbuf_put(b, tmp, (size_t)n); return; }
    char *big = ds_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    ds_sbuf_put(b, big, (size_t)n);
    free(big);
}

char *ds_sbuf_take(ds_sbuf *b) {
    if (!b->p) ds_sbuf_put(b, "", 0);
    char *p = b->p;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

/* Decode one UTF-8 sequence at s (n bytes left); returns its length, or 0 if
 * invalid (overlong, surrogate, out of range, truncated). */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if ((c & 0xe0) == 0xc0) { len = 2; v = c & 0x1f; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { len = 3; v = c & 0x0f; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

int ds_utf8_valid(const unsigned char *s, size_t n, size_t *bad_at) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int len = utf8_decode(s + i, n - i, &cp);
        if (!len) { if (bad_at) *bad_at = i; return 0; }
        i += (size_t)len;
    }
    return 1;
}

void ds_json_put_string(ds_sbuf *b, const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    ds_sbuf_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c == '"') { ds_sbuf_puts(b, "\\\""); i++; continue; }
        if (c == '\\') { ds_sbuf_puts(b, "\\\\"); i++; continue; }
        if (c == '\n') { ds_sbuf_puts(b, "\\n"); i++; continue; }
        if (c == '\r') { ds_sbuf_puts(b, "\\r"); i++; continue; }
        if (c == '\t') { ds_sbuf_puts(b, "\\t"); i++; continue; }
        if (c == '\b') { ds_sbuf_puts(b, "\\b"); i++; continue; }
        if (c == '\f') { ds_sbuf_puts(b, "\\f"); i++; continue; }
        if (c < 0x20) { ds_sbuf_printf(b, "\\u%04x", c); i++; continue; }
        if (c < 0x80) { ds_sbuf_put(b, (const char *)s + i, 1); i++; continue; }
        uint32_t cp;
        int len = utf8_decode(s + i, n - i, &cp);
        if (!len) { cp = 0xfffd; len = 1; }
        if (cp >= 0x10000) {
            uint32_t v = cp - 0x10000;
            ds_sbuf_printf(b, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        } else {
            ds_sbuf_printf(b, "\\u%04x", cp);
        }
        i += (size_t)len;
    }
    ds_sbuf_put(b, "\"", 1);
}

void ds_json_put_double(ds_sbuf *b, double v) {
    if (isnan(v)) { ds_sbuf_puts(b, "NaN"); return; }
    if (isinf(v)) { ds_sbuf_puts(b, v > 0 ? "Infinity" : "-Infinity"); return; }
    if (v == 0) { ds_sbuf_puts(b, signbit(v) ? "-0.0" : "0.0"); return; }
    /* shortest digit string that reads back exactly (like Python's repr) */
    char e[40];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    /* split "-d.ddde[+-]XX" into sign, digits, exponent */
    char digits[24];
    int nd = 0, neg = e[0] == '-';
    const char *q = e + neg;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    digits[nd] = 0;
    int exp10 = atoi(q + 1);
    char out[64];
    int k = 0;
    if (neg) out[k++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            out[k++] = '0'; out[k++] = '.';
            for (int i = 0; i < -exp10 - 1; i++) out[k++] = '0';
            for (int i = 0; i < nd; i++) out[k++] = digits[i];
        } else {
            for (int i = 0; i <= exp10; i++) out[k++] = i < nd ? digits[i] : '0';
            out[k++] = '.';
            if (nd > exp10 + 1) for (int i = exp10 + 1; i < nd; i++) out[k++] = digits[i];
            else out[k++] = '0';
        }
        out[k] = 0;
    } else {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = digits[i];
        }
        k += snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    ds_sbuf_puts(b, out);
}
