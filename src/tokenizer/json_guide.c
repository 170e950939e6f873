/*
 * json_guide.c — JSON-object constrained decoding (see json_guide.h).
 */
#include "tokenizer/json_guide.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

enum {
    M_START,        /* before the object: whitespace, '{' */
    M_KEY_OR_CLOSE, /* after '{': a key or '}' */
    M_KEY,          /* after ',' in an object: a key */
    M_COLON,        /* after a key */
    M_VALUE,        /* after ':' or ',' in an array */
    M_VALUE_OR_CLOSE, /* after '[': a value or ']' */
    M_AFTER,        /* after a value in a container: ',' or its close */
    M_STRING,       /* in a string (key: a key); sub: escape state */
    M_NUMBER,       /* in a number; sub: where */
    M_LITERAL,      /* in true / false / null */
    M_DONE          /* the object is closed */
};
enum { E_NONE, E_BACKSLASH, E_HEX1, E_HEX2, E_HEX3, E_HEX4 };
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

void ds_json_state_init(ds_json_state *s) { memset(s, 0, sizeof *s); }

int ds_json_state_done(const ds_json_state *s) { return s->mode == M_DONE; }

static int is_ws(unsigned c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }
static int is_hex(unsigned c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* a value ended (string, number, literal, or a container closed) */
static void value_done(ds_json_state *s) { s->mode = s->depth ? M_AFTER : M_DONE; }

static int push_open(ds_json_state *s, char c) {
    if (s->depth == DS_JSON_MAX_DEPTH) return -1;
    s->stack[s->depth++] = c;
    s->mode = c == '{' ? M_KEY_OR_CLOSE : M_VALUE_OR_CLOSE;
    return 0;
}

static int pop_close(ds_json_state *s, char c) {
    if (!s->depth || s->stack[s->depth - 1] != (c == '}' ? '{' : '[')) return -1;
    s->depth--;
    value_done(s);
    return 0;
}

/* the first byte of a value */
static int value(ds_json_state *s, unsigned c) {
    if (c == '{' || c == '[') return push_open(s, (char)c);
    if (c == '"') return s->mode = M_STRING, s->key = 0, s->sub = E_NONE, 0;
    if (c == '-') return s->mode = M_NUMBER, s->sub = N_MINUS, 0;
    if (is_digit(c)) return s->mode = M_NUMBER, s->sub = c == '0' ? N_ZERO : N_INT, 0;
    static const char *const lits[3] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++)
        if (c == (unsigned char)lits[i][0]) return s->mode = M_LITERAL, s->lit = lits[i] + 1, 0;
    return -1;
}

static int string_byte(ds_json_state *s, unsigned c) {
    if (s->utf8) { /* inside a multi-byte character */
        if ((c & 0xC0) != 0x80) return -1;
        s->utf8--;
        return 0;
    }
    switch (s->sub) {
    case E_BACKSLASH:
        if (c == 'u') return s->sub = E_HEX1, 0;
        if (!strchr("\"\\/bfnrt", (int)c) || !c) return -1;
        s->sub = E_NONE;
        return 0;
    case E_HEX1: case E_HEX2: case E_HEX3: case E_HEX4:
        if (!is_hex(c)) return -1;
        s->sub = s->sub == E_HEX4 ? E_NONE : (uint8_t)(s->sub + 1);
        return 0;
    default: break;
    }
    if (c == '"') {
        if (s->key) s->mode = M_COLON;
        else value_done(s);
        return 0;
    }
    if (c == '\\') return s->sub = E_BACKSLASH, 0;
    if (c < 0x20) return -1;
    if (c < 0x80) return 0;
    if (c >= 0xC2 && c <= 0xDF) return s->utf8 = 1, 0;
    if (c >= 0xE0 && c <= 0xEF) return s->utf8 = 2, 0;
    if (c >= 0xF0 && c <= 0xF4) return s->utf8 = 3, 0;
    return -1;
}

/* 1: c continues the number; 0: the number ended before c (c still to read); -1: invalid */
static int number_byte(ds_json_state *s, unsigned c) {
    const int d = is_digit(c);
    switch (s->sub) {
    case N_MINUS: if (!d) return -1; s->sub = c == '0' ? N_ZERO : N_INT; return 1;
    case N_ZERO: if (c == '.') return s->sub = N_DOT, 1; if (c == 'e' || c == 'E') return s->sub = N_E, 1; return d ? -1 : 0;
    case N_INT: if (d) return 1; if (c == '.') return s->sub = N_DOT, 1; if (c == 'e' || c == 'E') return s->sub = N_E, 1; return 0;
    case N_DOT: if (!d) return -1; s->sub = N_FRAC; return 1;
    case N_FRAC: if (d) return 1; if (c == 'e' || c == 'E') return s->sub = N_E, 1; return 0;
    case N_E: if (c == '+' || c == '-') return s->sub = N_ESIGN, 1; if (!d) return -1; s->sub = N_EXP; return 1;
    case N_ESIGN: if (!d) return -1; s->sub = N_EXP; return 1;
    case N_EXP: return d ? 1 : 0;
    }
    return -1;
}

static int feed1(ds_json_state *s, unsigned c) {
    if (s->mode == M_STRING) return string_byte(s, c);
    if (s->mode == M_LITERAL) {
        if (c != (unsigned char)*s->lit) return -1;
        if (!*++s->lit) value_done(s);
        return 0;
    }
    if (s->mode == M_NUMBER) {
        int r = number_byte(s, c);
        if (r) return r < 0 ? -1 : 0;
        value_done(s); /* a number is always inside a container: c must go on from M_AFTER */
    }
    if (is_ws(c)) {
        if (s->mode == M_DONE || s->ws == DS_JSON_MAX_WS) return -1;
        s->ws++;
        return 0;
    }
    s->ws = 0;
    switch (s->mode) {
    case M_START: return c == '{' ? push_open(s, '{') : -1;
    case M_KEY_OR_CLOSE: if (c == '}') return pop_close(s, '}'); /* fall through */
    case M_KEY: if (c != '"') return -1; s->mode = M_STRING, s->key = 1, s->sub = E_NONE; return 0;
    case M_COLON: if (c != ':') return -1; s->mode = M_VALUE; return 0;
    case M_VALUE_OR_CLOSE: if (c == ']') return pop_close(s, ']'); /* fall through */
    case M_VALUE: return value(s, c);
    case M_AFTER:
        if (c == '}' || c == ']') return pop_close(s, (char)c);
        if (c != ',') return -1;
        s->mode = s->stack[s->depth - 1] == '{' ? M_KEY : M_VALUE;
        return 0;
    default: return -1; /* M_DONE */
    }
}

int ds_json_state_feed(ds_json_state *s, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (feed1(s, (unsigned char)b[i])) return -1;
    return 0;
}

struct ds_json_guide {
    int64_t V;
    const char **bytes; /* per id; NULL: never allowed (added or special tokens, ids the tokenizer lacks) */
    size_t *len;
    float *neg, *one, *zero; /* logits_adjust's terms that refuse an id */
    int32_t *by_first;  /* the allowed-ever ids grouped by their first byte: group b is [start[b], start[b + 1]) */
    int64_t start[257];
    int32_t *never;     /* the ids never allowed */
    int64_t nnever;
};

ds_json_guide *ds_json_guide_new(const ds_tokenizer *t, int64_t V) {
    ds_json_guide *g = ds_calloc(1, sizeof *g);
    g->V = V;
    g->bytes = ds_calloc((size_t)V, sizeof *g->bytes);
    g->len = ds_calloc((size_t)V, sizeof *g->len);
    for (int64_t i = 0; i < V && i <= INT32_MAX; i++) {
        size_t n = 0;
        const char *b = ds_tokenizer_token_bytes(t, (int32_t)i, &n);
        if (b && n) g->bytes[i] = b, g->len[i] = n;
    }
    for (int64_t k = 0; k < ds_tokenizer_num_added(t); k++) { /* markers, not text */
        const int32_t id = ds_tokenizer_added_id(t, k);
        if (id >= 0 && id < V) g->bytes[id] = NULL;
    }
    /* group the ids by first byte: a byte the state refuses refuses its whole group at once */
    g->by_first = ds_malloc((size_t)V * sizeof(int32_t));
    g->never = ds_malloc((size_t)V * sizeof(int32_t));
    int64_t count[256] = {0};
    for (int64_t i = 0; i < V; i++)
        if (g->bytes[i]) count[(unsigned char)g->bytes[i][0]]++;
        else g->never[g->nnever++] = (int32_t)i;
    for (int b = 0; b < 256; b++) g->start[b + 1] = g->start[b] + count[b];
    int64_t fill[256];
    memcpy(fill, g->start, sizeof fill);
    for (int64_t i = 0; i < V; i++)
        if (g->bytes[i]) g->by_first[fill[(unsigned char)g->bytes[i][0]]++] = (int32_t)i;
    g->neg = ds_malloc((size_t)V * sizeof(float)), g->one = ds_malloc((size_t)V * sizeof(float));
    g->zero = ds_calloc((size_t)V, sizeof(float));
    for (int64_t i = 0; i < V; i++) g->neg[i] = -INFINITY, g->one[i] = 1;
    return g;
}

int64_t ds_json_guide_vocab(const ds_json_guide *g, const float **pre, const float **rep, const float **post) {
    *pre = g->neg, *rep = g->one, *post = g->zero;
    return g->V;
}

int64_t ds_json_guide_refused(const ds_json_guide *g, const ds_json_state *s, const int32_t *stop, int n, int32_t *out) {
    int64_t nd = 0;
    if (s->mode != M_DONE) {
        memcpy(out, g->never, (size_t)g->nnever * sizeof(int32_t));
        nd = g->nnever;
        for (int b = 0; b < 256; b++) {
            const int64_t a = g->start[b], e = g->start[b + 1];
            ds_json_state t = *s;
            const char c = (char)b;
            if (a == e) continue;
            if (ds_json_state_feed(&t, &c, 1)) { /* the first byte already fails */
                memcpy(out + nd, g->by_first + a, (size_t)(e - a) * sizeof(int32_t));
                nd += e - a;
                continue;
            }
            for (int64_t k = a; k < e; k++) {
                const int32_t id = g->by_first[k];
                ds_json_state u = t;
                if (ds_json_state_feed(&u, g->bytes[id] + 1, g->len[id] - 1)) out[nd++] = id;
            }
        }
        if (nd < g->V) return nd; /* something is allowed */
    }
    nd = 0;                   /* closed, or a dead end: the stop ids only */
    for (int64_t i = 0; i < g->V; i++) {
        int keep = 0;
        for (int k = 0; k < n; k++) keep |= stop[k] == i;
        if (!keep) out[nd++] = (int32_t)i;
    }
    return nd;
}

void ds_json_guide_free(ds_json_guide *g) {
    if (!g) return;
    free(g->bytes), free(g->len), free(g->neg), free(g->one), free(g->zero), free(g->by_first), free(g->never);
    free(g);
}

const char *ds_json_guide_token(const ds_json_guide *g, int32_t id, size_t *len) {
    if (id < 0 || id >= g->V || !g->bytes[id]) return NULL;
    *len = g->len[id];
    return g->bytes[id];
}

int64_t ds_json_guide_allowed(const ds_json_guide *g, const ds_json_state *s, int32_t *out) {
    int64_t n = 0;
    if (s->mode == M_DONE) return 0;
    for (int b = 0; b < 256; b++) {
        ds_json_state t = *s;
        const char c = (char)b;
        if (g->start[b] == g->start[b + 1] || ds_json_state_feed(&t, &c, 1)) continue;
        for (int64_t k = g->start[b]; k < g->start[b + 1]; k++) {
            const int32_t id = g->by_first[k];
            ds_json_state u = t;
            if (!ds_json_state_feed(&u, g->bytes[id] + 1, g->len[id] - 1)) out[n++] = id;
        }
    }
    return n;
}
