/*
 * jinja.c — a Jinja2 subset for chat templates (see jinja.h).  Three parts:
 * a lexer that turns the source into text and tag tokens (applying the
 * whitespace rules: "-" strips, lstrip_blocks, trim_blocks, no trailing
 * newline), a recursive-descent parser with Jinja's precedence (or < and <
 * not < comparisons/in < + - < ~ < * / // % < ** < unary < postfix, filters
 * and tests), and a tree-walking renderer.  Values live in an arena freed
 * after each render; scopes follow Jinja's (a for body is a scope, if is not,
 * so templates use namespace() to carry state out of loops).
 */
#include "tokenizer/jinja.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/base.h"
#include "io/json.h"

/* ---- arena ------------------------------------------------------------------ */
typedef struct ablock { struct ablock *next; size_t used, cap; char mem[]; } ablock;
typedef struct { ablock *head; size_t total; } arena;

static void *aalloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 65536 ? n : 65536;
        ablock *b = ds_malloc(sizeof(ablock) + cap);
        b->next = a->head, b->used = 0, b->cap = cap;
        a->head = b;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += n;
    a->total += n;
    return p;
}
static void afree(arena *a) {
    while (a->head) {
        ablock *n = a->head->next;
        free(a->head);
        a->head = n;
    }
}
static char *astrndup(arena *a, const char *s, size_t n) {
    char *p = aalloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- values ------------------------------------------------------------------ */
enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT };
typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct {
    int t;
    int64_t i;     /* BOOL, INT */
    double f;      /* FLOAT */
    const char *s; /* STR (NUL-terminated, n bytes) */
    size_t n;
    jlist *l;
    jdict *d;
} jv;
struct jlist { int n, cap; jv *v; };
struct jdict { int n, cap, ns; const char **k; jv *v; };

static jv v_undef(void) { return (jv){.t = V_UNDEF}; }
static jv v_none(void) { return (jv){.t = V_NONE}; }
static jv v_bool(int b) { return (jv){.t = V_BOOL, .i = !!b}; }
static jv v_int(int64_t i) { return (jv){.t = V_INT, .i = i}; }
static jv v_float(double f) { return (jv){.t = V_FLOAT, .f = f}; }
static jv v_strn(arena *a, const char *s, size_t n) { return (jv){.t = V_STR, .s = astrndup(a, s, n), .n = n}; }
static jv v_str(arena *a, const char *s) { return v_strn(a, s, strlen(s)); }

static jlist *list_new(arena *a) {
    jlist *l = aalloc(a, sizeof *l);
    memset(l, 0, sizeof *l);
    return l;
}
static void list_push(arena *a, jlist *l, jv v) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        jv *nv = aalloc(a, sizeof(jv) * (size_t)cap);
        if (l->n) memcpy(nv, l->v, sizeof(jv) * (size_t)l->n);
        l->v = nv, l->cap = cap;
    }
    l->v[l->n++] = v;
}
static jdict *dict_new(arena *a) {
    jdict *d = aalloc(a, sizeof *d);
    memset(d, 0, sizeof *d);
    return d;
}
static jv *dict_get(const jdict *d, const char *k) {
    for (int i = 0; i < d->n; i++)
        if (!strcmp(d->k[i], k)) return &d->v[i];
    return NULL;
}
static void dict_set(arena *a, jdict *d, const char *k, jv v) {
    jv *p = dict_get(d, k);
    if (p) { *p = v; return; }
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 8;
        const char **nk = aalloc(a, sizeof(char *) * (size_t)cap);
        jv *nv = aalloc(a, sizeof(jv) * (size_t)cap);
        if (d->n) memcpy(nk, d->k, sizeof(char *) * (size_t)d->n), memcpy(nv, d->v, sizeof(jv) * (size_t)d->n);
        d->k = nk, d->v = nv, d->cap = cap;
    }
    d->k[d->n] = astrndup(a, k, strlen(k));
    d->v[d->n++] = v;
}

static jv from_json(arena *a, const cJSON *j) {
    if (!j || cJSON_IsNull(j)) return v_none();
    if (cJSON_IsBool(j)) return v_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double x = j->valuedouble;
        if (x == floor(x) && fabs(x) < 9e15) return v_int((int64_t)x);
        return v_float(x);
    }
    if (cJSON_IsString(j)) return v_str(a, j->valuestring);
    if (cJSON_IsArray(j)) {
        jv v = {.t = V_LIST, .l = list_new(a)};
        const cJSON *x;
        cJSON_ArrayForEach(x, j) list_push(a, v.l, from_json(a, x));
        return v;
    }
    if (cJSON_IsObject(j)) {
        jv v = {.t = V_DICT, .d = dict_new(a)};
        const cJSON *x;
        cJSON_ArrayForEach(x, j) dict_set(a, v.d, x->string, from_json(a, x));
        return v;
    }
    return v_none();
}

static int truthy(jv v) {
    switch (v.t) {
    case V_BOOL: case V_INT: return v.i != 0;
    case V_FLOAT: return v.f != 0;
    case V_STR: return v.n > 0;
    case V_LIST: return v.l->n > 0;
    case V_DICT: return v.d->n > 0;
    default: return 0;
    }
}
static const char *type_name(jv v) {
    static const char *const n[] = {"undefined", "none", "bool", "int", "float", "str", "list", "dict"};
    return n[v.t];
}
/* Python's name of the type */
static const char *py_type_name(jv v) {
    static const char *const n[] = {"Undefined", "NoneType", "bool", "int", "float", "str", "list", "dict"};
    return n[v.t];
}

/* The containers being printed or compared, innermost first: a namespace
 * can hold itself ({% set ns.me = ns %}), so a walk meets its own ancestors;
 * and a loop can nest a list as deep as it runs ({% set ns.x = [ns.x] %}), so
 * a walk stops past JINJA_MAX_NEST containers (Python: RecursionError) */
#define JINJA_MAX_NEST 500
typedef struct path { const void *p, *q; const struct path *up; int depth; } path;
static int on_path(const path *w, const void *p, const void *q) {
    for (; w; w = w->up)
        if (w->p == p && w->q == q) return 1;
    return 0;
}
static path step(const path *up, const void *p, const void *q) { return (path){p, q, up, up ? up->depth + 1 : 1}; }
static const char NEST_ERR[] = "a value nested more than 500 deep";
/* Python's str() (repr inside containers); -1 past JINJA_MAX_NEST */
static int put_value_at(ds_sbuf *b, jv v, int repr, const path *up);
static int put_value(ds_sbuf *b, jv v, int repr) { return put_value_at(b, v, repr, NULL); }
static void put_repr_str(ds_sbuf *b, const char *s, size_t n) {
    int dq = memchr(s, '\'', n) && !memchr(s, '"', n);
    char q = dq ? '"' : '\'';
    ds_sbuf_put(b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\') ds_sbuf_puts(b, "\\\\");
        else if (c == '\n') ds_sbuf_puts(b, "\\n");
        else if (c == '\t') ds_sbuf_puts(b, "\\t");
        else if (c == '\r') ds_sbuf_puts(b, "\\r");
        else if (c == q) ds_sbuf_printf(b, "\\%c", c);
        else ds_sbuf_put(b, &c, 1);
    }
    ds_sbuf_put(b, &q, 1);
}
/* a container inside itself prints as [...] or {...}, as Python's repr */
static int put_value_at(ds_sbuf *b, jv v, int repr, const path *up) {
    const void *c = v.t == V_LIST ? (const void *)v.l : v.t == V_DICT ? (const void *)v.d : NULL;
    const char *ns = v.t == V_DICT && v.d->ns ? "<Namespace " : "";
    if (c && on_path(up, c, NULL)) {
        ds_sbuf_printf(b, "%s%s%s", ns, v.t == V_LIST ? "[...]" : "{...}", *ns ? ">" : "");
        return 0;
    }
    const path here = step(up, c, NULL);
    if (here.depth > JINJA_MAX_NEST) return -1;
    switch (v.t) {
    case V_UNDEF: break;
    case V_NONE: ds_sbuf_puts(b, "None"); break;
    case V_BOOL: ds_sbuf_puts(b, v.i ? "True" : "False"); break;
    case V_INT: ds_sbuf_printf(b, "%lld", (long long)v.i); break;
    case V_FLOAT: ds_json_put_double(b, v.f); break;
    case V_STR:
        if (repr) put_repr_str(b, v.s, v.n);
        else ds_sbuf_put(b, v.s, v.n);
        break;
    case V_LIST:
        ds_sbuf_puts(b, "[");
        for (int i = 0; i < v.l->n; i++) {
            if (i) ds_sbuf_puts(b, ", ");
            if (put_value_at(b, v.l->v[i], 1, &here)) return -1;
        }
        ds_sbuf_puts(b, "]");
        break;
    case V_DICT: /* a namespace as Jinja's repr of it: <Namespace {...}> */
        ds_sbuf_printf(b, "%s{", ns);
        for (int i = 0; i < v.d->n; i++) {
            if (i) ds_sbuf_puts(b, ", ");
            put_repr_str(b, v.d->k[i], strlen(v.d->k[i]));
            ds_sbuf_puts(b, ": ");
            if (put_value_at(b, v.d->v[i], 1, &here)) return -1;
        }
        ds_sbuf_puts(b, *ns ? "}>" : "}");
        break;
    }
    return 0;
}

/* json.dumps(v, ensure_ascii=False) as transformers' tojson filter (indent < 0:
 * None, one line); -1 for a container inside itself (json.dumps: "Circular
 * reference detected") or past JINJA_MAX_NEST, -2 for a namespace (not JSON
 * serializable, as in Python; a cycle passes through one) */
static int put_json(ds_sbuf *b, jv v, int indent, int depth, const path *up) {
    switch (v.t) {
    case V_UNDEF: case V_NONE: ds_sbuf_puts(b, "null"); return 0;
    case V_BOOL: ds_sbuf_puts(b, v.i ? "true" : "false"); return 0;
    case V_INT: ds_sbuf_printf(b, "%lld", (long long)v.i); return 0;
    case V_FLOAT: ds_json_put_double(b, v.f); return 0;
    case V_STR: {
        ds_sbuf_puts(b, "\"");
        for (size_t i = 0; i < v.n; i++) {
            unsigned char c = (unsigned char)v.s[i];
            if (c == '"') ds_sbuf_puts(b, "\\\"");
            else if (c == '\\') ds_sbuf_puts(b, "\\\\");
            else if (c == '\n') ds_sbuf_puts(b, "\\n");
            else if (c == '\r') ds_sbuf_puts(b, "\\r");
            else if (c == '\t') ds_sbuf_puts(b, "\\t");
            else if (c == '\b') ds_sbuf_puts(b, "\\b");
            else if (c == '\f') ds_sbuf_puts(b, "\\f");
            else if (c < 0x20) ds_sbuf_printf(b, "\\u%04x", c);
            else ds_sbuf_put(b, (const char *)&c, 1);
        }
        ds_sbuf_puts(b, "\"");
        return 0;
    }
    case V_LIST: case V_DICT: {
        const void *c = v.t == V_LIST ? (const void *)v.l : (const void *)v.d;
        if (v.t == V_DICT && v.d->ns) return -2;
        const path here = step(up, c, NULL);
        if (on_path(up, c, NULL) || here.depth > JINJA_MAX_NEST) return -1;
        int n = v.t == V_LIST ? v.l->n : v.d->n;
        ds_sbuf_puts(b, v.t == V_LIST ? "[" : "{");
        for (int i = 0; i < n; i++) {
            if (i) ds_sbuf_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0) ds_sbuf_printf(b, "\n%*s", indent * (depth + 1), "");
            if (v.t == V_DICT) {
                put_json(b, (jv){.t = V_STR, .s = v.d->k[i], .n = strlen(v.d->k[i])}, indent, depth + 1, &here);
                ds_sbuf_puts(b, ": ");
                int rc = put_json(b, v.d->v[i], indent, depth + 1, &here);
                if (rc) return rc;
            } else {
                int rc = put_json(b, v.l->v[i], indent, depth + 1, &here);
                if (rc) return rc;
            }
        }
        if (indent >= 0 && n) ds_sbuf_printf(b, "\n%*s", indent * depth, "");
        ds_sbuf_puts(b, v.t == V_LIST ? "]" : "}");
        return 0;
    }
    }
    return 0;
}

/* ---- lexer ---------------------------------------------------------------------- */
enum {
    T_EOF, T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP
};
typedef struct {
    int t, line;
    const char *s; /* TEXT/NAME/STR: text (arena); OP: the operator */
    size_t n;
    int64_t i;
    double f;
} jtok;

struct ds_jinja {
    arena a;        /* the tree */
    struct jnode *root;
    int mentions_content; /* the source has "content" (continue_final_message needs the template to read it) */
};

#define PY_SPACE " \t\n\r\f\v" /* what Python's str.strip() takes off (ASCII) */
static int py_space(char c) { return c && strchr(PY_SPACE, c); }

/* the last occurrence of w (wn bytes) in s (n bytes), or NULL */
static const char *last_of(const char *s, size_t n, const char *w, size_t wn) {
    for (size_t i = n >= wn ? n - wn + 1 : 0; i-- > 0;)
        if (!memcmp(s + i, w, wn)) return s + i;
    return NULL;
}

typedef struct {
    arena *a;
    jtok *tok;
    int n, cap, pos;
    char err[256];
} lexer;

static void push_tok(lexer *L, jtok t) {
    if (L->n == L->cap) {
        L->cap = L->cap ? L->cap * 2 : 256;
        L->tok = ds_realloc(L->tok, sizeof(jtok) * (size_t)L->cap);
    }
    L->tok[L->n++] = t;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int lex_fail(lexer *L, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char m[200];
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    snprintf(L->err, sizeof L->err, "line %d: %s", line, m);
    return -1;
}

/* src[i..) starts with s (within len) */
static int at(const char *src, size_t len, size_t i, const char *s) {
    size_t n = strlen(s);
    return i + n <= len && !memcmp(src + i, s, n);
}

static const char *const OPS[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ".", ",", ":",
                                  "|", "~", "+", "-", "*", "/", "%", "<", ">", "="};

/* Lex the inside of a tag starting at *p until its end marker; kind T_VEND or T_BEND. */
static int lex_tag(lexer *L, const char *src, size_t len, size_t *p, int *line, int endkind, int *strip_after,
                   int *no_trim) {
    const char *end = endkind == T_VEND ? "}}" : "%}";
    size_t i = *p;
    for (;;) {
        while (i < len && is_space(src[i])) {
            if (src[i] == '\n') (*line)++;
            i++;
        }
        if (i >= len) return lex_fail(L, *line, "unclosed tag");
        if ((src[i] == '-' || src[i] == '+') && at(src, len, i + 1, end)) {
            if (src[i] == '-') *strip_after = 1;
            else *no_trim = 1;
            i += 3;
            break;
        }
        if (at(src, len, i, end)) {
            i += 2;
            break;
        }
        jtok t = {.line = *line};
        char c = src[i];
        if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            size_t s = i;
            while (i < len && (src[i] == '_' || (src[i] >= 'a' && src[i] <= 'z') || (src[i] >= 'A' && src[i] <= 'Z') ||
                               (src[i] >= '0' && src[i] <= '9')))
                i++;
            t.t = T_NAME, t.s = astrndup(L->a, src + s, i - s), t.n = i - s;
        } else if (c >= '0' && c <= '9') {
            size_t s = i;
            int isf = 0;
            while (i < len && ((src[i] >= '0' && src[i] <= '9') || src[i] == '_')) i++;
            if (i + 1 < len && src[i] == '.' && src[i + 1] >= '0' && src[i + 1] <= '9') {
                isf = 1;
                i++;
                while (i < len && src[i] >= '0' && src[i] <= '9') i++;
            }
            char num[64];
            size_t k = 0;
            for (size_t j = s; j < i && k < 63; j++)
                if (src[j] != '_') num[k++] = src[j];
            num[k] = 0;
            if (isf) t.t = T_FLOAT, t.f = strtod(num, NULL);
            else t.t = T_INT, t.i = strtoll(num, NULL, 10);
        } else if (c == '\'' || c == '"') {
            ds_sbuf b = {0};
            i++;
            while (i < len && src[i] != c) {
                char d = src[i];
                if (d == '\n') (*line)++;
                if (d == '\\' && i + 1 < len) {
                    char e = src[++i];
                    switch (e) {
                    case 'n': ds_sbuf_put(&b, "\n", 1); break;
                    case 't': ds_sbuf_put(&b, "\t", 1); break;
                    case 'r': ds_sbuf_put(&b, "\r", 1); break;
                    case '\\': ds_sbuf_put(&b, "\\", 1); break;
                    case '\'': ds_sbuf_put(&b, "'", 1); break;
                    case '"': ds_sbuf_put(&b, "\"", 1); break;
                    case '\n': (*line)++; break;
                    case 'x': case 'u': case 'U': {
                        int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                        uint32_t cp = 0;
                        for (int k = 0; k < nd; k++) {
                            char h = i + 1 < len ? src[++i] : 0;
                            int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                  : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                            if (v < 0) {
                                free(b.p);
                                return lex_fail(L, *line, "bad \\%c escape in a string", e);
                            }
                            cp = cp * 16 + (uint32_t)v;
                        }
                        char u[4];
                        int un;
                        if (cp < 0x80) u[0] = (char)cp, un = 1;
                        else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 63)), un = 2;
                        else if (cp < 0x10000)
                            u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 63)),
                            u[2] = (char)(0x80 | (cp & 63)), un = 3;
                        else
                            u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 63)),
                            u[2] = (char)(0x80 | ((cp >> 6) & 63)), u[3] = (char)(0x80 | (cp & 63)), un = 4;
                        ds_sbuf_put(&b, u, (size_t)un);
                        break;
                    }
                    default: ds_sbuf_put(&b, "\\", 1), ds_sbuf_put(&b, &e, 1); break;
                    }
                    i++;
                    continue;
                }
                ds_sbuf_put(&b, &d, 1);
                i++;
            }
            if (i >= len) {
                free(b.p);
                return lex_fail(L, t.line, "unterminated string");
            }
            i++;
            t.t = T_STR, t.n = b.n, t.s = astrndup(L->a, b.p ? b.p : "", b.n);
            free(b.p);
        } else {
            int k = 0, nops = (int)(sizeof OPS / sizeof OPS[0]);
            for (; k < nops; k++)
                if (at(src, len, i, OPS[k])) break;
            if (k == nops) return lex_fail(L, *line, "unexpected character %s", ds_quote_n(src + i, 1));
            t.t = T_OP, t.s = OPS[k], t.n = strlen(OPS[k]);
            i += t.n;
        }
        push_tok(L, t);
    }
    push_tok(L, (jtok){.t = endkind, .line = *line});
    *p = i;
    return 0;
}

static int lex(lexer *L, const char *src, size_t len) {
    if (len && src[len - 1] == '\n') len--; /* keep_trailing_newline=False */
    size_t p = 0;
    int line = 1, strip_next = 0, trim_next = 0;
    while (p <= len) {
        /* the next tag */
        size_t q = p;
        int kind = 0;
        while (q + 1 < len) {
            if (src[q] == '{' && (src[q + 1] == '{' || src[q + 1] == '%' || src[q + 1] == '#')) {
                kind = src[q + 1];
                break;
            }
            q++;
        }
        if (!kind) q = len;
        size_t ts = p, te = q;
        if (strip_next) while (ts < te && is_space(src[ts])) ts++;
        else if (trim_next && ts < te && src[ts] == '\n') ts++;
        else if (trim_next && ts + 1 < te && src[ts] == '\r' && src[ts + 1] == '\n') ts += 2;
        strip_next = trim_next = 0;
        char mod = kind && q + 2 < len ? src[q + 2] : 0;
        if (kind && mod == '-') {
            while (te > ts && is_space(src[te - 1])) te--;
        } else if ((kind == '%' || kind == '#') && mod != '+') { /* lstrip_blocks */
            size_t k = te;
            while (k > ts && (src[k - 1] == ' ' || src[k - 1] == '\t')) k--;
            if (k == 0 || src[k - 1] == '\n' || (k == ts && ts > 0 && src[ts - 1] == '\n') || (k == ts && ts == 0))
                te = k;
        }
        int tl = line;
        for (size_t k = p; k < q; k++)
            if (src[k] == '\n') line++;
        if (te > ts) push_tok(L, (jtok){.t = T_TEXT, .line = tl, .s = astrndup(L->a, src + ts, te - ts), .n = te - ts});
        if (!kind) break;
        p = q + 2 + (mod == '-' || mod == '+');
        if (kind == '#') {
            const char *e = NULL;
            for (size_t k = p; k + 1 < len; k++)
                if (src[k] == '#' && src[k + 1] == '}') { e = src + k; break; }
            if (!e) return lex_fail(L, line, "unclosed comment");
            for (const char *k = src + p; k < e; k++)
                if (*k == '\n') line++;
            if (e > src + p && e[-1] == '-') strip_next = 1;
            else if (!(e > src + p && e[-1] == '+')) trim_next = 1;
            p = (size_t)(e - src) + 2;
            continue;
        }
        int sa = 0, nt = 0;
        push_tok(L, (jtok){.t = kind == '{' ? T_VBEGIN : T_BBEGIN, .line = line});
        if (lex_tag(L, src, len, &p, &line, kind == '{' ? T_VEND : T_BEND, &sa, &nt)) return -1;
        if (sa) strip_next = 1;
        else if (kind == '%' && !nt) trim_next = 1;
    }
    push_tok(L, (jtok){.t = T_EOF, .line = line});
    return 0;
}

/* ---- tree ------------------------------------------------------------------------ */
enum {
    /* statements */
    N_BODY, N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_BREAK, N_CONTINUE,
    /* expressions */
    E_LIT, E_NAME, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_NEG, E_POS, E_NOT, E_AND, E_OR,
    E_COND, E_LIST, E_DICT, E_KWARG, E_NONE_SLOT
};
typedef struct jnode {
    int kind, line, neg;
    const char *s;   /* name, operator, attribute, filter/test name */
    jv lit;
    struct jnode **kid;
    int nkid, cap;
    int height; /* the longest path down to a leaf: the renderer recurses that deep */
} jnode;

/* The parser recurses once per nested expression, unary operator or block,
 * the renderer once per level of the tree: both bounded (a template is
 * input), as Python's recursion limit bounds Jinja's */
#define JINJA_MAX_PARSE_NEST 100
#define JINJA_MAX_HEIGHT 500
typedef struct {
    lexer *L;
    arena *a;
    char err[256];
    int nest; /* nesting of p_expr, p_stmt, and of p_not and p_unary on an operator, now */
} parser;

static jnode *node(parser *P, int kind, int line) {
    jnode *n = aalloc(P->a, sizeof *n);
    memset(n, 0, sizeof *n);
    n->kind = kind, n->line = line;
    return n;
}
static jnode *pfail(parser *P, const char *fmt, ...);
static void add_kid(parser *P, jnode *n, jnode *k) {
    if (k->height >= n->height) n->height = k->height + 1;
    if (n->height > JINJA_MAX_HEIGHT) pfail(P, "the template nests more than %d levels deep", JINJA_MAX_HEIGHT);
    if (n->nkid == n->cap) {
        int cap = n->cap ? n->cap * 2 : 4;
        jnode **nk = aalloc(P->a, sizeof(jnode *) * (size_t)cap);
        if (n->nkid) memcpy(nk, n->kid, sizeof(jnode *) * (size_t)n->nkid);
        n->kid = nk, n->cap = cap;
    }
    n->kid[n->nkid++] = k;
}

static jtok *peek(parser *P) { return &P->L->tok[P->L->pos]; }
static jtok *next(parser *P) {
    jtok *t = &P->L->tok[P->L->pos];
    if (t->t != T_EOF) P->L->pos++;
    return t;
}
static int is_op(parser *P, const char *op) { jtok *t = peek(P); return t->t == T_OP && !strcmp(t->s, op); }
static int is_name(parser *P, const char *nm) { jtok *t = peek(P); return t->t == T_NAME && !strcmp(t->s, nm); }
static jnode *pfail(parser *P, const char *fmt, ...) {
    if (P->err[0]) return NULL;
    va_list ap;
    va_start(ap, fmt);
    char m[200];
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    snprintf(P->err, sizeof P->err, "line %d: %s", peek(P)->line, m);
    return NULL;
}
/* around a parse function that may recurse: P->nest bounded by JINJA_MAX_PARSE_NEST */
static int nest_enter(parser *P) {
    if (++P->nest <= JINJA_MAX_PARSE_NEST) return 0;
    P->nest--;
    pfail(P, "expressions or blocks nested more than %d deep", JINJA_MAX_PARSE_NEST);
    return -1;
}
static jnode *nest_leave(parser *P, jnode *r) {
    P->nest--;
    return r;
}
static int expect_op(parser *P, const char *op) {
    if (!is_op(P, op)) {
        pfail(P, "expected '%s'", op);
        return -1;
    }
    next(P);
    return 0;
}

static const char *const FILTERS[] = {"trim", "length", "count", "upper", "lower", "title", "capitalize", "default",
                                      "d", "first", "last", "join", "string", "int", "float", "list", "tojson", "safe",
                                      "replace", "items", "reverse", "abs", "e", "escape", "unique", "sum", "wordcount",
                                      "select", "reject", "selectattr", "rejectattr", "map", "dictsort"};
static const char *const TESTS[] = {"defined", "undefined", "none", "string", "number", "integer", "float", "mapping",
                                    "iterable", "sequence", "boolean", "true", "false", "even", "odd", "divisibleby",
                                    "equalto", "eq", "==", "ne", "!=", "in", "lower", "upper", "callable"};
static const char *const FUNCS[] = {"namespace", "raise_exception", "range", "dict", "strftime_now"};
static int in_list(const char *s, const char *const *l, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, l[i])) return 1;
    return 0;
}
#define IN(s, l) in_list((s), (l), sizeof(l) / sizeof((l)[0]))

static jnode *p_expr(parser *P);
static jnode *p_unary(parser *P, int with_filter);

static int p_args(parser *P, jnode *call) {
    /* after '(' */
    while (!is_op(P, ")")) {
        jtok *t = peek(P);
        if (t->t == T_NAME && P->L->tok[P->L->pos + 1].t == T_OP && !strcmp(P->L->tok[P->L->pos + 1].s, "=")) {
            jnode *kw = node(P, E_KWARG, t->line);
            kw->s = t->s;
            next(P), next(P);
            jnode *v = p_expr(P);
            if (!v) return -1;
            add_kid(P, kw, v);
            add_kid(P, call, kw);
        } else {
            jnode *v = p_expr(P);
            if (!v) return -1;
            add_kid(P, call, v);
        }
        if (is_op(P, ",")) next(P);
        else if (!is_op(P, ")")) return pfail(P, "expected ',' or ')' in an argument list"), -1;
    }
    next(P);
    return 0;
}

static jnode *p_primary(parser *P) {
    jtok *t = next(P);
    jnode *n;
    switch (t->t) {
    case T_NAME:
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) { n = node(P, E_LIT, t->line); n->lit = v_bool(1); return n; }
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) { n = node(P, E_LIT, t->line); n->lit = v_bool(0); return n; }
        if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) { n = node(P, E_LIT, t->line); n->lit = v_none(); return n; }
        n = node(P, E_NAME, t->line);
        n->s = t->s;
        return n;
    case T_STR: {
        n = node(P, E_LIT, t->line);
        ds_sbuf b = {0};
        ds_sbuf_put(&b, t->s, t->n);
        while (peek(P)->t == T_STR) { /* adjacent literals concatenate */
            jtok *u = next(P);
            ds_sbuf_put(&b, u->s, u->n);
        }
        n->lit = v_strn(P->a, b.p ? b.p : "", b.n);
        free(b.p);
        return n;
    }
    case T_INT: n = node(P, E_LIT, t->line); n->lit = v_int(t->i); return n;
    case T_FLOAT: n = node(P, E_LIT, t->line); n->lit = v_float(t->f); return n;
    case T_OP:
        if (!strcmp(t->s, "(")) {
            jnode *e = p_expr(P);
            if (!e) return NULL;
            if (is_op(P, ",")) return pfail(P, "tuples are not supported");
            if (expect_op(P, ")")) return NULL;
            return e;
        }
        if (!strcmp(t->s, "[")) {
            n = node(P, E_LIST, t->line);
            while (!is_op(P, "]")) {
                jnode *e = p_expr(P);
                if (!e) return NULL;
                add_kid(P, n, e);
                if (is_op(P, ",")) next(P);
                else if (!is_op(P, "]")) return pfail(P, "expected ',' or ']'");
            }
            next(P);
            return n;
        }
        if (!strcmp(t->s, "{")) {
            n = node(P, E_DICT, t->line);
            while (!is_op(P, "}")) {
                jnode *k = p_expr(P);
                if (!k || expect_op(P, ":")) return NULL;
                jnode *v = p_expr(P);
                if (!v) return NULL;
                add_kid(P, n, k), add_kid(P, n, v);
                if (is_op(P, ",")) next(P);
                else if (!is_op(P, "}")) return pfail(P, "expected ',' or '}'");
            }
            next(P);
            return n;
        }
        P->L->pos--;
        return pfail(P, "unexpected '%s'", t->s);
    default:
        P->L->pos -= t->t != T_EOF;
        return pfail(P, "expected an expression");
    }
}

static jnode *p_postfix(parser *P, jnode *n) {
    for (;;) {
        jtok *t = peek(P);
        if (is_op(P, ".")) {
            next(P);
            jtok *a = next(P);
            if (a->t != T_NAME && a->t != T_INT) return pfail(P, "expected an attribute name after '.'");
            jnode *m = node(P, a->t == T_NAME ? E_ATTR : E_INDEX, t->line);
            add_kid(P, m, n);
            if (a->t == T_NAME) m->s = a->s;
            else {
                jnode *ix = node(P, E_LIT, a->line);
                ix->lit = v_int(a->i);
                add_kid(P, m, ix);
            }
            n = m;
        } else if (is_op(P, "[")) {
            next(P);
            jnode *parts[3] = {0};
            int np = 0, slice = 0;
            for (;;) {
                if (is_op(P, ":")) {
                    next(P);
                    slice = 1;
                    if (++np > 2) return pfail(P, "bad slice");
                    continue;
                }
                if (is_op(P, "]")) break;
                if (parts[np]) return pfail(P, "expected ']'");
                parts[np] = p_expr(P);
                if (!parts[np]) return NULL;
            }
            next(P);
            jnode *m = node(P, slice ? E_SLICE : E_INDEX, t->line);
            add_kid(P, m, n);
            if (!slice && !parts[0]) return pfail(P, "empty subscript");
            for (int k = 0; k < (slice ? 3 : 1); k++) add_kid(P, m, parts[k] ? parts[k] : node(P, E_NONE_SLOT, t->line));
            n = m;
        } else if (is_op(P, "(")) {
            next(P);
            if (n->kind == E_NAME && !IN(n->s, FUNCS)) return pfail(P, "unsupported function '%s'", n->s);
            if (n->kind != E_NAME && n->kind != E_ATTR) return pfail(P, "only functions and methods can be called");
            jnode *c = node(P, E_CALL, t->line);
            add_kid(P, c, n);
            if (p_args(P, c)) return NULL;
            n = c;
        } else {
            return n;
        }
    }
}

static jnode *p_filter_expr(parser *P, jnode *n) {
    for (;;) {
        if (is_op(P, "|")) {
            next(P);
            jtok *f = next(P);
            if (f->t != T_NAME) return pfail(P, "expected a filter name after '|'");
            if (!IN(f->s, FILTERS)) return pfail(P, "unsupported filter '%s'", f->s);
            jnode *m = node(P, E_FILTER, f->line);
            m->s = f->s;
            add_kid(P, m, n);
            if (is_op(P, "(")) {
                next(P);
                if (p_args(P, m)) return NULL;
            }
            n = p_postfix(P, m);
            if (!n) return NULL;
        } else if (is_name(P, "is")) {
            next(P);
            jnode *m = node(P, E_TEST, peek(P)->line);
            if (is_name(P, "not")) next(P), m->neg = 1;
            jtok *f = next(P);
            const char *nm = f->t == T_NAME ? f->s : f->t == T_OP ? f->s : NULL;
            if (!nm) return pfail(P, "expected a test name after 'is'");
            if (!strcmp(nm, "none") || !strcmp(nm, "None")) nm = "none";
            if (!strcmp(nm, "true") || !strcmp(nm, "True")) nm = "true";
            if (!strcmp(nm, "false") || !strcmp(nm, "False")) nm = "false";
            if (!IN(nm, TESTS)) return pfail(P, "unsupported test '%s'", nm);
            m->s = nm;
            add_kid(P, m, n);
            if (is_op(P, "(")) {
                next(P);
                if (p_args(P, m)) return NULL;
            } else {
                jtok *a = peek(P);
                /* `is divisibleby 3`, `is equalto x`: one argument without parentheses */
                if (a->t == T_STR || a->t == T_INT || a->t == T_FLOAT ||
                    (a->t == T_NAME && strcmp(a->s, "and") && strcmp(a->s, "or") && strcmp(a->s, "else") &&
                     strcmp(a->s, "if") && strcmp(a->s, "in") && strcmp(a->s, "is") && strcmp(a->s, "not"))) {
                    jnode *arg = p_unary(P, 0);
                    if (!arg) return NULL;
                    add_kid(P, m, arg);
                }
            }
            n = m;
        } else {
            return n;
        }
    }
}

static jnode *p_unary(parser *P, int with_filter) {
    jnode *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        jtok *t = next(P);
        n = node(P, t->s[0] == '-' ? E_NEG : E_POS, t->line);
        jnode *k = nest_enter(P) ? NULL : nest_leave(P, p_unary(P, 0));
        if (!k) return NULL;
        add_kid(P, n, k);
    } else {
        n = p_primary(P);
        if (n) n = p_postfix(P, n);
    }
    if (n && with_filter) n = p_filter_expr(P, n);
    return n;
}

static jnode *bin(parser *P, const char *op, jnode *a, jnode *b, int line) {
    if (!a || !b) return NULL;
    jnode *n = node(P, E_BIN, line);
    n->s = op;
    add_kid(P, n, a), add_kid(P, n, b);
    return n;
}
static jnode *p_pow(parser *P) {
    jnode *a = p_unary(P, 1);
    while (a && is_op(P, "**")) {
        int l = next(P)->line;
        a = bin(P, "**", a, p_unary(P, 1), l);
    }
    return a;
}
static jnode *p_math2(parser *P) {
    jnode *a = p_pow(P);
    while (a && (is_op(P, "*") || is_op(P, "/") || is_op(P, "//") || is_op(P, "%"))) {
        jtok *t = next(P);
        a = bin(P, t->s, a, p_pow(P), t->line);
    }
    return a;
}
static jnode *p_concat(parser *P) {
    jnode *a = p_math2(P);
    while (a && is_op(P, "~")) {
        int l = next(P)->line;
        a = bin(P, "~", a, p_math2(P), l);
    }
    return a;
}
static jnode *p_math1(parser *P) {
    jnode *a = p_concat(P);
    while (a && (is_op(P, "+") || is_op(P, "-"))) {
        jtok *t = next(P);
        a = bin(P, t->s, a, p_concat(P), t->line);
    }
    return a;
}
static jnode *p_compare(parser *P) {
    jnode *a = p_math1(P);
    for (;;) {
        if (!a) return NULL;
        jtok *t = peek(P);
        if (t->t == T_OP && (!strcmp(t->s, "==") || !strcmp(t->s, "!=") || !strcmp(t->s, "<") || !strcmp(t->s, ">") ||
                             !strcmp(t->s, "<=") || !strcmp(t->s, ">="))) {
            next(P);
            a = bin(P, t->s, a, p_math1(P), t->line);
        } else if (is_name(P, "in")) {
            next(P);
            a = bin(P, "in", a, p_math1(P), t->line);
        } else if (is_name(P, "not") && P->L->tok[P->L->pos + 1].t == T_NAME && !strcmp(P->L->tok[P->L->pos + 1].s, "in")) {
            next(P), next(P);
            a = bin(P, "notin", a, p_math1(P), t->line);
        } else {
            return a;
        }
    }
}
static jnode *p_not(parser *P) {
    if (is_name(P, "not")) {
        jnode *n = node(P, E_NOT, next(P)->line);
        jnode *k = nest_enter(P) ? NULL : nest_leave(P, p_not(P));
        if (!k) return NULL;
        add_kid(P, n, k);
        return n;
    }
    return p_compare(P);
}
static jnode *p_and(parser *P) {
    jnode *a = p_not(P);
    while (a && is_name(P, "and")) {
        jnode *n = node(P, E_AND, next(P)->line);
        jnode *b = p_not(P);
        if (!b) return NULL;
        add_kid(P, n, a), add_kid(P, n, b);
        a = n;
    }
    return a;
}
static jnode *p_or(parser *P) {
    jnode *a = p_and(P);
    while (a && is_name(P, "or")) {
        jnode *n = node(P, E_OR, next(P)->line);
        jnode *b = p_and(P);
        if (!b) return NULL;
        add_kid(P, n, a), add_kid(P, n, b);
        a = n;
    }
    return a;
}
static jnode *p_expr_in(parser *P) {
    jnode *a = p_or(P);
    while (a && is_name(P, "if")) {
        jnode *n = node(P, E_COND, next(P)->line);
        jnode *c = p_or(P);
        if (!c) return NULL;
        jnode *b = NULL;
        if (is_name(P, "else")) {
            next(P);
            b = p_expr(P);
            if (!b) return NULL;
        }
        add_kid(P, n, c), add_kid(P, n, a), add_kid(P, n, b ? b : node(P, E_NONE_SLOT, n->line));
        a = n;
    }
    return a;
}
static jnode *p_expr(parser *P) {
    return nest_enter(P) ? NULL : nest_leave(P, p_expr_in(P));
}

/* statements: parse until one of the end tags (names) appears as {% name; returns the body */
static jnode *p_body(parser *P, const char *const *ends, int nends, const char **which);

static int end_block(parser *P) {
    if (peek(P)->t != T_BEND) return pfail(P, "expected the end of the tag"), -1;
    next(P);
    return 0;
}

static jnode *p_stmt_in(parser *P) {
    jtok *kw = next(P);
    if (kw->t != T_NAME) return pfail(P, "expected a statement name");
    const char *w = kw->s;
    if (!strcmp(w, "if")) {
        jnode *n = node(P, N_IF, kw->line);
        for (;;) {
            jnode *c = p_expr(P);
            if (!c || end_block(P)) return NULL;
            static const char *const ends[] = {"elif", "else", "endif"};
            const char *which = NULL;
            jnode *b = p_body(P, ends, 3, &which);
            if (!b) return NULL;
            add_kid(P, n, c), add_kid(P, n, b);
            if (!strcmp(which, "elif")) continue;
            if (!strcmp(which, "else")) {
                if (end_block(P)) return NULL;
                static const char *const e2[] = {"endif"};
                jnode *eb = p_body(P, e2, 1, &which);
                if (!eb) return NULL;
                add_kid(P, n, eb);
            }
            return end_block(P) ? NULL : n;
        }
    }
    if (!strcmp(w, "for")) {
        jnode *n = node(P, N_FOR, kw->line), *tg = node(P, E_LIST, kw->line);
        for (;;) {
            jtok *t = next(P);
            if (t->t != T_NAME) return pfail(P, "expected a loop variable");
            jnode *nm = node(P, E_NAME, t->line);
            nm->s = t->s;
            add_kid(P, tg, nm);
            if (is_op(P, ",")) { next(P); continue; }
            break;
        }
        if (!is_name(P, "in")) return pfail(P, "expected 'in'");
        next(P);
        jnode *it = p_or(P), *cond = NULL; /* no conditional expression here: `if` filters */
        if (!it) return NULL;
        if (is_name(P, "if")) {
            next(P);
            cond = p_expr(P);
            if (!cond) return NULL;
        }
        if (is_name(P, "recursive")) return pfail(P, "recursive loops are not supported");
        if (end_block(P)) return NULL;
        static const char *const ends[] = {"else", "endfor"};
        const char *which = NULL;
        jnode *b = p_body(P, ends, 2, &which), *eb = NULL;
        if (!b) return NULL;
        if (!strcmp(which, "else")) {
            if (end_block(P)) return NULL;
            static const char *const e2[] = {"endfor"};
            eb = p_body(P, e2, 1, &which);
            if (!eb) return NULL;
        }
        if (end_block(P)) return NULL;
        add_kid(P, n, tg), add_kid(P, n, it), add_kid(P, n, b);
        add_kid(P, n, eb ? eb : node(P, E_NONE_SLOT, kw->line));
        add_kid(P, n, cond ? cond : node(P, E_NONE_SLOT, kw->line));
        return n;
    }
    if (!strcmp(w, "set")) {
        jnode *n = node(P, N_SET, kw->line);
        jtok *t = next(P);
        if (t->t != T_NAME) return pfail(P, "expected a name after 'set'");
        jnode *tg = node(P, E_NAME, t->line);
        tg->s = t->s;
        if (is_op(P, ".")) {
            next(P);
            jtok *a = next(P);
            if (a->t != T_NAME) return pfail(P, "expected an attribute name");
            jnode *at = node(P, E_ATTR, a->line);
            at->s = a->s;
            add_kid(P, at, tg);
            tg = at;
        }
        if (is_op(P, ",")) return pfail(P, "tuple assignment is not supported");
        if (!is_op(P, "=")) return pfail(P, "block 'set' is not supported");
        next(P);
        jnode *v = p_expr(P);
        if (!v || end_block(P)) return NULL;
        add_kid(P, n, tg), add_kid(P, n, v);
        return n;
    }
    if (!strcmp(w, "break") || !strcmp(w, "continue")) {
        jnode *n = node(P, w[0] == 'b' ? N_BREAK : N_CONTINUE, kw->line);
        return end_block(P) ? NULL : n;
    }
    return pfail(P, "unsupported tag '%s'", w);
}
static jnode *p_stmt(parser *P) {
    return nest_enter(P) ? NULL : nest_leave(P, p_stmt_in(P));
}

static jnode *p_body(parser *P, const char *const *ends, int nends, const char **which) {
    jnode *body = node(P, N_BODY, peek(P)->line);
    for (;;) {
        jtok *t = peek(P);
        if (t->t == T_EOF) {
            if (!nends) return body;
            return pfail(P, "missing {%% %s %%}", ends[nends - 1]);
        }
        if (t->t == T_TEXT) {
            next(P);
            jnode *n = node(P, N_TEXT, t->line);
            n->lit = (jv){.t = V_STR, .s = t->s, .n = t->n};
            add_kid(P, body, n);
        } else if (t->t == T_VBEGIN) {
            next(P);
            jnode *n = node(P, N_OUT, t->line), *e = p_expr(P);
            if (!e) return NULL;
            if (peek(P)->t != T_VEND) return pfail(P, "expected '}}'");
            next(P);
            add_kid(P, n, e);
            add_kid(P, body, n);
        } else if (t->t == T_BBEGIN) {
            jtok *kw = &P->L->tok[P->L->pos + 1];
            if (kw->t == T_NAME)
                for (int i = 0; i < nends; i++)
                    if (!strcmp(kw->s, ends[i])) {
                        P->L->pos += 2;
                        *which = ends[i];
                        return body;
                    }
            if (kw->t == T_NAME && (!strncmp(kw->s, "end", 3) || !strcmp(kw->s, "elif") || !strcmp(kw->s, "else")))
                return pfail(P, "unexpected '%s'", kw->s);
            next(P);
            jnode *s = p_stmt(P);
            if (!s) return NULL;
            add_kid(P, body, s);
        } else {
            return pfail(P, "unexpected token");
        }
    }
}

ds_jinja *ds_jinja_parse(const char *src, size_t len) {
    ds_jinja *t = ds_calloc(1, sizeof *t);
    lexer L = {.a = &t->a};
    if (lex(&L, src, len)) {
        ds_err("chat template: %s", L.err);
        free(L.tok);
        ds_jinja_free(t);
        return NULL;
    }
    parser P = {.L = &L, .a = &t->a};
    t->mentions_content = last_of(src, len, "content", 7) != NULL;
    t->root = p_body(&P, NULL, 0, NULL);
    free(L.tok);
    if (!t->root || P.err[0]) {
        ds_err("chat template: %s", P.err);
        ds_jinja_free(t);
        return NULL;
    }
    return t;
}

void ds_jinja_free(ds_jinja *t) {
    if (!t) return;
    afree(&t->a);
    free(t);
}

/* ---- renderer ---------------------------------------------------------------------- */
typedef struct scope { jdict *vars; struct scope *up; } scope;
typedef struct {
    arena a;
    ds_sbuf out;
    scope *sc;
    char err[512];
    int failed;
    int brk; /* 1 break, 2 continue */
    int64_t work; /* statements and loop iterations so far (bounded: a template cannot run away) */
} rctx;

#define JINJA_MAX_WORK 10000000
#define JINJA_MAX_OUT ((size_t)64 << 20)

static jv rfail(rctx *R, const jnode *n, const char *fmt, ...) {
    if (!R->failed) {
        va_list ap;
        va_start(ap, fmt);
        char m[400];
        vsnprintf(m, sizeof m, fmt, ap);
        va_end(ap);
        if (n) snprintf(R->err, sizeof R->err, "line %d: %s", n->line, m);
        else snprintf(R->err, sizeof R->err, "%s", m);
        R->failed = 1;
    }
    return v_undef();
}

static jv lookup(rctx *R, const char *name) {
    for (scope *s = R->sc; s; s = s->up) {
        jv *v = dict_get(s->vars, name);
        if (v) return *v;
    }
    return v_undef();
}

static jv eval(rctx *R, const jnode *n);

static int num(jv v, double *d) {
    if (v.t == V_INT || v.t == V_BOOL) { *d = (double)v.i; return 1; }
    if (v.t == V_FLOAT) { *d = v.f; return 1; }
    return 0;
}

/* Python's ==; a pair of containers met again inside their own comparison
 * (a namespace holding itself) is equal there, as Python's identity rule
 * answers for the same object */
static int equal_at(jv a, jv b, const path *up, int *deep) {
    double x = 0, y = 0;
    if (num(a, &x) && num(b, &y)) return x == y;
    if (a.t != b.t) return 0;
    switch (a.t) {
    case V_UNDEF: case V_NONE: return 1;
    case V_STR: return a.n == b.n && !memcmp(a.s, b.s, a.n);
    case V_LIST: case V_DICT: {
        const void *p = a.t == V_LIST ? (const void *)a.l : (const void *)a.d;
        const void *q = b.t == V_LIST ? (const void *)b.l : (const void *)b.d;
        if (p == q || on_path(up, p, q)) return 1;
        const path here = step(up, p, q);
        if (here.depth > JINJA_MAX_NEST) return *deep = 1, 0;
        if (a.t == V_LIST) {
            if (a.l->n != b.l->n) return 0;
            for (int i = 0; i < a.l->n; i++)
                if (!equal_at(a.l->v[i], b.l->v[i], &here, deep)) return 0;
            return 1;
        }
        if (a.d->n != b.d->n) return 0;
        for (int i = 0; i < a.d->n; i++) {
            jv *o = dict_get(b.d, a.d->k[i]);
            if (!o || !equal_at(a.d->v[i], *o, &here, deep)) return 0;
        }
        return 1;
    }
    }
    return 0;
}
static int equal(rctx *R, const jnode *n, jv a, jv b) {
    int deep = 0, r = equal_at(a, b, NULL, &deep);
    if (deep) rfail(R, n, "cannot compare %s", NEST_ERR);
    return r;
}

static jv to_str(rctx *R, jv v) {
    if (v.t == V_STR) return v;
    ds_sbuf b = {0};
    int rc = put_value(&b, v, 0);
    jv s = v_strn(&R->a, b.p ? b.p : "", b.n);
    free(b.p);
    if (rc) return rfail(R, NULL, "cannot print %s", NEST_ERR);
    return s;
}

static int contains(rctx *R, const jnode *n, jv hay, jv x) {
    if (hay.t == V_STR) {
        if (x.t != V_STR) return rfail(R, n, "'in <string>' requires a string on the left, not %s", type_name(x)), 0;
        if (!x.n) return 1;
        for (size_t i = 0; i + x.n <= hay.n; i++)
            if (!memcmp(hay.s + i, x.s, x.n)) return 1;
        return 0;
    }
    if (hay.t == V_LIST) {
        for (int i = 0; i < hay.l->n; i++)
            if (equal(R, n, hay.l->v[i], x)) return 1;
        return 0;
    }
    if (hay.t == V_DICT) return x.t == V_STR && dict_get(hay.d, x.s) != NULL;
    rfail(R, n, "argument of type '%s' is not iterable", type_name(hay));
    return 0;
}

/* items to iterate: lists as they are, dicts by key, strings by character */
static jlist *iter_list(rctx *R, const jnode *n, jv v) {
    if (v.t == V_LIST) return v.l;
    jlist *l = list_new(&R->a);
    if (v.t == V_DICT) {
        for (int i = 0; i < v.d->n; i++) list_push(&R->a, l, v_str(&R->a, v.d->k[i]));
    } else if (v.t == V_STR) {
        for (size_t i = 0; i < v.n;) {
            size_t k = 1;
            unsigned char c = (unsigned char)v.s[i];
            if (c >= 0xF0) k = 4;
            else if (c >= 0xE0) k = 3;
            else if (c >= 0xC0) k = 2;
            if (i + k > v.n) k = v.n - i;
            list_push(&R->a, l, v_strn(&R->a, v.s + i, k));
            i += k;
        }
    } else if (v.t != V_UNDEF) {
        rfail(R, n, "'%s' object is not iterable", type_name(v));
    }
    return l;
}

static int64_t py_mod(int64_t a, int64_t b) {
    int64_t r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

static jv binop(rctx *R, const jnode *n, const char *op, jv a, jv b) {
    if (!strcmp(op, "~")) {
        jv x = to_str(R, a), y = to_str(R, b);
        if (x.n + y.n > JINJA_MAX_OUT) return rfail(R, n, "string too long");
        char *s = aalloc(&R->a, x.n + y.n + 1);
        memcpy(s, x.s, x.n), memcpy(s + x.n, y.s, y.n), s[x.n + y.n] = 0;
        return (jv){.t = V_STR, .s = s, .n = x.n + y.n};
    }
    if (!strcmp(op, "==")) return v_bool(equal(R, n, a, b));
    if (!strcmp(op, "!=")) return v_bool(!equal(R, n, a, b));
    if (!strcmp(op, "in")) return v_bool(contains(R, n, b, a));
    if (!strcmp(op, "notin")) return v_bool(!contains(R, n, b, a));
    if (a.t == V_UNDEF || b.t == V_UNDEF) return rfail(R, n, "an undefined value in '%s'", op);
    double x = 0, y = 0;
    int nums = num(a, &x) && num(b, &y);
    int ints = nums && a.t != V_FLOAT && b.t != V_FLOAT;
    if (op[0] == '<' || op[0] == '>') {
        int c;
        if (nums) c = x < y ? -1 : x > y;
        else if (a.t == V_STR && b.t == V_STR) {
            c = memcmp(a.s, b.s, a.n < b.n ? a.n : b.n);
            if (!c) c = a.n < b.n ? -1 : a.n > b.n;
        } else return rfail(R, n, "'%s' not supported between %s and %s", op, type_name(a), type_name(b));
        if (!strcmp(op, "<")) return v_bool(c < 0);
        if (!strcmp(op, ">")) return v_bool(c > 0);
        if (!strcmp(op, "<=")) return v_bool(c <= 0);
        return v_bool(c >= 0);
    }
    if (!strcmp(op, "+")) {
        if (a.t == V_STR && b.t == V_STR) return binop(R, n, "~", a, b);
        if (a.t == V_LIST && b.t == V_LIST) {
            if (a.l->n + b.l->n > (1 << 20)) return rfail(R, n, "list too long");
            jv r = {.t = V_LIST, .l = list_new(&R->a)};
            for (int i = 0; i < a.l->n; i++) list_push(&R->a, r.l, a.l->v[i]);
            for (int i = 0; i < b.l->n; i++) list_push(&R->a, r.l, b.l->v[i]);
            return r;
        }
        if (nums) return ints ? v_int(a.i + b.i) : v_float(x + y);
        if ((a.t == V_STR || a.t == V_LIST) && b.t != V_UNDEF) /* Python's words */
            return rfail(R, n, "can only concatenate %s (not \"%s\") to %s", py_type_name(a), py_type_name(b), py_type_name(a));
    } else if (!strcmp(op, "-")) {
        if (nums) return ints ? v_int(a.i - b.i) : v_float(x - y);
    } else if (!strcmp(op, "*")) {
        if (nums) return ints ? v_int(a.i * b.i) : v_float(x * y);
        if (a.t == V_STR && (b.t == V_INT)) {
            if (b.i > 0 && a.n * (size_t)(b.i < 1 << 30 ? b.i : 1 << 30) > JINJA_MAX_OUT) return rfail(R, n, "string too long");
            ds_sbuf s = {0};
            for (int64_t i = 0; i < b.i; i++) ds_sbuf_put(&s, a.s, a.n);
            jv r = v_strn(&R->a, s.p ? s.p : "", s.n);
            free(s.p);
            return r;
        }
    } else if (!strcmp(op, "/")) {
        if (nums) return y == 0 ? rfail(R, n, "division by zero") : v_float(x / y);
    } else if (!strcmp(op, "//")) {
        if (nums) {
            if (y == 0) return rfail(R, n, "division by zero");
            return ints ? v_int((a.i - py_mod(a.i, b.i)) / b.i) : v_float(floor(x / y));
        }
    } else if (!strcmp(op, "%")) {
        if (ints) return b.i == 0 ? rfail(R, n, "modulo by zero") : v_int(py_mod(a.i, b.i));
        if (nums) return v_float(x - y * floor(x / y));
        if (a.t == V_STR) return rfail(R, n, "string formatting with '%%' is not supported");
    } else if (!strcmp(op, "**")) {
        if (ints && b.i >= 0) {
            int64_t r = 1;
            for (int64_t i = 0; i < b.i; i++) r *= a.i;
            return v_int(r);
        }
        if (nums) return v_float(pow(x, y));
    }
    return rfail(R, n, "unsupported operand types for %s: %s and %s", op, type_name(a), type_name(b));
}

static jv getitem(rctx *R, const jnode *n, jv o, jv k) {
    if (o.t == V_DICT) {
        if (k.t != V_STR) return v_undef();
        jv *v = dict_get(o.d, k.s);
        return v ? *v : v_undef();
    }
    if (o.t == V_LIST || o.t == V_STR) {
        if (k.t != V_INT) return v_undef();
        int64_t len = o.t == V_LIST ? o.l->n : (int64_t)o.n, i = k.i < 0 ? k.i + len : k.i;
        if (i < 0 || i >= len) return v_undef();
        return o.t == V_LIST ? o.l->v[i] : v_strn(&R->a, o.s + i, 1);
    }
    if (o.t == V_UNDEF) return rfail(R, n, "an undefined value has no items");
    return v_undef();
}

static jv slice(rctx *R, const jnode *n, jv o, jv a, jv b, jv c) {
    int64_t len = o.t == V_LIST ? o.l->n : o.t == V_STR ? (int64_t)o.n : -1;
    if (len < 0) return rfail(R, n, "'%s' object is not subscriptable", type_name(o));
    int64_t step = c.t == V_INT ? c.i : 1;
    if (step == 0) return rfail(R, n, "slice step cannot be zero");
    int64_t lo, hi;
    if (step > 0) {
        lo = a.t == V_INT ? (a.i < 0 ? a.i + len : a.i) : 0;
        hi = b.t == V_INT ? (b.i < 0 ? b.i + len : b.i) : len;
        if (lo < 0) lo = 0;
        if (hi > len) hi = len;
    } else {
        lo = a.t == V_INT ? (a.i < 0 ? a.i + len : a.i) : len - 1;
        hi = b.t == V_INT ? (b.i < 0 ? b.i + len : b.i) : -1;
        if (lo > len - 1) lo = len - 1;
        if (hi < -1) hi = -1;
    }
    jlist *l = list_new(&R->a);
    ds_sbuf s = {0};
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) {
        if (o.t == V_LIST) list_push(&R->a, l, o.l->v[i]);
        else ds_sbuf_put(&s, o.s + i, 1);
    }
    if (o.t == V_LIST) return (jv){.t = V_LIST, .l = l};
    jv r = v_strn(&R->a, s.p ? s.p : "", s.n);
    free(s.p);
    return r;
}

static jv strip_str(rctx *R, jv s, const char *chars, int left, int right) {
    size_t a = 0, b = s.n;
    const char *ws = chars ? chars : PY_SPACE;
    while (left && a < b && strchr(ws, s.s[a]) && s.s[a]) a++;
    while (right && b > a && strchr(ws, s.s[b - 1]) && s.s[b - 1]) b--;
    return v_strn(&R->a, s.s + a, b - a);
}

/* evaluated arguments of a call/filter/test node starting at kid `from` */
typedef struct { jv pos[8]; int npos; const char *kwn[8]; jv kwv[8]; int nkw; } args;
static int eval_args(rctx *R, const jnode *n, int from, args *A) {
    memset(A, 0, sizeof *A);
    for (int i = from; i < n->nkid; i++) {
        const jnode *k = n->kid[i];
        if (k->kind == E_KWARG) {
            if (A->nkw == 8) return rfail(R, n, "too many arguments"), -1;
            A->kwn[A->nkw] = k->s;
            A->kwv[A->nkw++] = eval(R, k->kid[0]);
        } else {
            if (A->npos == 8) return rfail(R, n, "too many arguments"), -1;
            A->pos[A->npos++] = eval(R, k);
        }
    }
    return R->failed ? -1 : 0;
}
static jv arg(const args *A, int i, const char *name, jv dflt) {
    if (i >= 0 && i < A->npos) return A->pos[i];
    for (int k = 0; k < A->nkw; k++)
        if (name && !strcmp(A->kwn[k], name)) return A->kwv[k];
    return dflt;
}

static jv call_method(rctx *R, const jnode *n, jv o, const char *m, const args *A) {
    if (o.t == V_STR) {
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            jv c = arg(A, 0, "chars", v_none());
            return strip_str(R, o, c.t == V_STR ? c.s : NULL, m[0] != 'r', m[0] != 'l');
        }
        if (!strcmp(m, "upper") || !strcmp(m, "lower")) {
            jv r = v_strn(&R->a, o.s, o.n);
            for (size_t i = 0; i < r.n; i++) {
                char c = r.s[i];
                ((char *)r.s)[i] = m[0] == 'u' ? (c >= 'a' && c <= 'z' ? c - 32 : c) : (c >= 'A' && c <= 'Z' ? c + 32 : c);
            }
            return r;
        }
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            jv x = arg(A, 0, NULL, v_undef());
            if (x.t != V_STR) return rfail(R, n, "%s() takes a string", m);
            if (x.n > o.n) return v_bool(0);
            return v_bool(!memcmp(m[0] == 's' ? o.s : o.s + o.n - x.n, x.s, x.n));
        }
        if (!strcmp(m, "split")) {
            jv sep = arg(A, 0, "sep", v_none());
            jlist *l = list_new(&R->a);
            if (sep.t == V_STR && sep.n) {
                size_t s = 0;
                for (size_t i = 0; i + sep.n <= o.n;) {
                    if (!memcmp(o.s + i, sep.s, sep.n)) {
                        list_push(&R->a, l, v_strn(&R->a, o.s + s, i - s));
                        i += sep.n, s = i;
                    } else i++;
                }
                list_push(&R->a, l, v_strn(&R->a, o.s + s, o.n - s));
            } else {
                size_t i = 0;
                while (i < o.n) {
                    while (i < o.n && is_space(o.s[i])) i++;
                    size_t s = i;
                    while (i < o.n && !is_space(o.s[i])) i++;
                    if (i > s) list_push(&R->a, l, v_strn(&R->a, o.s + s, i - s));
                }
            }
            return (jv){.t = V_LIST, .l = l};
        }
        if (!strcmp(m, "replace")) {
            jv a = arg(A, 0, NULL, v_undef()), b = arg(A, 1, NULL, v_undef());
            if (a.t != V_STR || b.t != V_STR || !a.n) return rfail(R, n, "replace() takes two strings");
            ds_sbuf s = {0};
            for (size_t i = 0; i < o.n;) {
                if (i + a.n <= o.n && !memcmp(o.s + i, a.s, a.n)) ds_sbuf_put(&s, b.s, b.n), i += a.n;
                else ds_sbuf_put(&s, o.s + i, 1), i++;
            }
            jv r = v_strn(&R->a, s.p ? s.p : "", s.n);
            free(s.p);
            return r;
        }
    } else if (o.t == V_DICT) {
        if (!strcmp(m, "get")) {
            jv k = arg(A, 0, NULL, v_undef());
            jv *v = k.t == V_STR ? dict_get(o.d, k.s) : NULL;
            return v ? *v : arg(A, 1, NULL, v_none());
        }
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            jlist *l = list_new(&R->a);
            for (int i = 0; i < o.d->n; i++) {
                jv k = v_str(&R->a, o.d->k[i]);
                if (m[0] == 'k') list_push(&R->a, l, k);
                else if (m[0] == 'v') list_push(&R->a, l, o.d->v[i]);
                else {
                    jv p = {.t = V_LIST, .l = list_new(&R->a)};
                    list_push(&R->a, p.l, k), list_push(&R->a, p.l, o.d->v[i]);
                    list_push(&R->a, l, p);
                }
            }
            return (jv){.t = V_LIST, .l = l};
        }
    }
    return rfail(R, n, "'%s' object has no method '%s'", type_name(o), m);
}

static jv call(rctx *R, const jnode *n) {
    const jnode *f = n->kid[0];
    args A;
    if (f->kind == E_ATTR) {
        jv o = eval(R, f->kid[0]);
        if (R->failed || eval_args(R, n, 1, &A)) return v_undef();
        return call_method(R, n, o, f->s, &A);
    }
    if (eval_args(R, n, 1, &A)) return v_undef();
    if (!strcmp(f->s, "raise_exception")) {
        jv m = to_str(R, arg(&A, 0, NULL, v_str(&R->a, "")));
        R->failed = 1;
        size_t bad = 0;
        int clean = ds_utf8_valid((const unsigned char *)m.s, m.n, &bad);
        for (size_t i = 0; clean && i < m.n; i++) clean = (unsigned char)m.s[i] >= 0x20 && m.s[i] != 0x7f;
        snprintf(R->err, sizeof R->err, "%s", clean ? m.s : ds_quote_n(m.s, m.n));
        return v_undef();
    }
    if (!strcmp(f->s, "namespace") || !strcmp(f->s, "dict")) {
        jv d = {.t = V_DICT, .d = dict_new(&R->a)};
        d.d->ns = f->s[0] == 'n';
        for (int i = 0; i < A.nkw; i++) dict_set(&R->a, d.d, A.kwn[i], A.kwv[i]);
        return d;
    }
    if (!strcmp(f->s, "strftime_now")) { /* transformers' global: the local time, strftime-formatted */
        jv fmt = arg(&A, 0, NULL, v_undef());
        if (fmt.t != V_STR) return rfail(R, n, "strftime_now() takes a format string");
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        char buf[256];
        size_t k = strftime(buf, sizeof buf, fmt.s, &tmv);
        return v_strn(&R->a, buf, k);
    }
    if (!strcmp(f->s, "range")) {
        int64_t lo = 0, hi, st = 1;
        for (int i = 0; i < A.npos; i++)
            if (A.pos[i].t != V_INT) return rfail(R, n, "range() takes integers");
        if (A.npos == 1) hi = A.pos[0].i;
        else if (A.npos >= 2) lo = A.pos[0].i, hi = A.pos[1].i, st = A.npos > 2 ? A.pos[2].i : 1;
        else return rfail(R, n, "range() takes 1 to 3 arguments");
        if (st == 0) return rfail(R, n, "range() step must not be zero");
        jv l = {.t = V_LIST, .l = list_new(&R->a)};
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
            if (l.l->n > 100000) return rfail(R, n, "range() too long");
            list_push(&R->a, l.l, v_int(i));
        }
        return l;
    }
    return rfail(R, n, "unsupported function '%s'", f->s);
}

static jv run_test(rctx *R, const jnode *n, const char *t, jv v, const args *A);
static jv run_filter(rctx *R, const jnode *n, const char *f, jv v, args *A);

static jv filter(rctx *R, const jnode *n) {
    jv v = eval(R, n->kid[0]);
    args A;
    if (R->failed || eval_args(R, n, 1, &A)) return v_undef();
    return run_filter(R, n, n->s, v, &A);
}

/* the arguments after the first k positional ones */
static args shift_args(const args *A, int k) {
    args B = *A;
    B.npos = A->npos > k ? A->npos - k : 0;
    for (int i = 0; i < B.npos; i++) B.pos[i] = A->pos[i + k];
    return B;
}

/* item.attr (dict key), for selectattr/map */
static jv attr_of(jv item, jv name) {
    if (item.t != V_DICT || name.t != V_STR) return v_undef();
    jv *x = dict_get(item.d, name.s);
    return x ? *x : v_undef();
}

static jv run_filter(rctx *R, const jnode *n, const char *f, jv v, args *pA) {
    args A = *pA;
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr")) {
        const int byattr = !strcmp(f, "selectattr") || !strcmp(f, "rejectattr"), keep = f[0] == 's';
        jlist *l = iter_list(R, n, v), *out = list_new(&R->a);
        jv tname = arg(&A, byattr, NULL, v_undef());
        if (tname.t != V_UNDEF && tname.t != V_STR) return rfail(R, n, "%s: the test name must be a string", f);
        args B = shift_args(&A, byattr + 1);
        for (int i = 0; i < l->n && !R->failed; i++) {
            jv x = byattr ? attr_of(l->v[i], arg(&A, 0, NULL, v_undef())) : l->v[i];
            int ok = tname.t == V_STR ? truthy(run_test(R, n, tname.s, x, &B)) : truthy(x);
            if (ok == keep) list_push(&R->a, out, l->v[i]);
        }
        return (jv){.t = V_LIST, .l = out};
    }
    if (!strcmp(f, "map")) {
        jlist *l = iter_list(R, n, v), *out = list_new(&R->a);
        jv at = arg(&A, -1, "attribute", v_undef());
        jv fname = arg(&A, 0, NULL, v_undef());
        if (at.t == V_UNDEF && fname.t != V_STR) return rfail(R, n, "map: give a filter name or attribute=");
        args B = shift_args(&A, 1);
        B.nkw = 0;
        for (int i = 0; i < l->n && !R->failed; i++) {
            if (at.t != V_UNDEF) {
                jv x = attr_of(l->v[i], at);
                list_push(&R->a, out, x.t == V_UNDEF ? arg(&A, -1, "default", v_undef()) : x);
            } else {
                list_push(&R->a, out, run_filter(R, n, fname.s, l->v[i], &B));
            }
        }
        return (jv){.t = V_LIST, .l = out};
    }
    if (!strcmp(f, "dictsort")) {
        if (v.t != V_DICT) return rfail(R, n, "dictsort needs a dict");
        jv items = call_method(R, n, v, "items", &(args){0});
        jlist *l = items.l;
        for (int i = 1; i < l->n; i++) /* insertion sort by key (case-insensitive, as Jinja) */
            for (int k = i; k > 0 && strcasecmp(l->v[k - 1].l->v[0].s, l->v[k].l->v[0].s) > 0; k--) {
                jv t = l->v[k];
                l->v[k] = l->v[k - 1];
                l->v[k - 1] = t;
            }
        return items;
    }
    if (!strcmp(f, "safe") || !strcmp(f, "e") || !strcmp(f, "escape")) return v; /* no autoescape */
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jv b = arg(&A, 1, "boolean", v_bool(0));
        if (v.t == V_UNDEF || (truthy(b) && !truthy(v))) return arg(&A, 0, "default_value", v_str(&R->a, ""));
        return v;
    }
    if (v.t == V_UNDEF && strcmp(f, "string") && strcmp(f, "tojson") && strcmp(f, "length") && strcmp(f, "count"))
        return rfail(R, n, "filter '%s' on an undefined value", f);
    if (!strcmp(f, "trim")) {
        jv c = arg(&A, 0, "chars", v_none());
        return strip_str(R, to_str(R, v), c.t == V_STR ? c.s : NULL, 1, 1);
    }
    if (!strcmp(f, "upper") || !strcmp(f, "lower")) return call_method(R, n, to_str(R, v), f, &A);
    if (!strcmp(f, "replace")) return call_method(R, n, to_str(R, v), f, &A);
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        if (v.t == V_STR) {
            int64_t c = 0;
            for (size_t i = 0; i < v.n; i++) c += ((unsigned char)v.s[i] & 0xC0) != 0x80;
            return v_int(c);
        }
        if (v.t == V_LIST) return v_int(v.l->n);
        if (v.t == V_DICT) return v_int(v.d->n);
        if (v.t == V_UNDEF) return v_int(0);
        return rfail(R, n, "object of type '%s' has no len()", type_name(v));
    }
    if (!strcmp(f, "wordcount")) {
        jv l = call_method(R, n, to_str(R, v), "split", &(args){0});
        return v_int(l.l ? l.l->n : 0);
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        jlist *l = iter_list(R, n, v);
        if (!l->n) return v_undef();
        return l->v[f[0] == 'f' ? 0 : l->n - 1];
    }
    if (!strcmp(f, "reverse")) {
        if (v.t == V_STR) return slice(R, n, v, v_none(), v_none(), v_int(-1));
        jlist *l = iter_list(R, n, v), *r = list_new(&R->a);
        for (int i = l->n - 1; i >= 0; i--) list_push(&R->a, r, l->v[i]);
        return (jv){.t = V_LIST, .l = r};
    }
    if (!strcmp(f, "list")) return (jv){.t = V_LIST, .l = iter_list(R, n, v)};
    if (!strcmp(f, "unique")) {
        jlist *l = iter_list(R, n, v), *r = list_new(&R->a);
        for (int i = 0; i < l->n; i++) {
            int seen = 0;
            for (int k = 0; k < r->n && !seen; k++) seen = equal(R, n, r->v[k], l->v[i]);
            if (!seen) list_push(&R->a, r, l->v[i]);
        }
        return (jv){.t = V_LIST, .l = r};
    }
    if (!strcmp(f, "join")) {
        jv sep = arg(&A, 0, "d", v_str(&R->a, ""));
        jlist *l = iter_list(R, n, v);
        ds_sbuf s = {0};
        int rc = 0;
        for (int i = 0; i < l->n && !rc; i++) rc = (i && put_value(&s, sep, 0)) || put_value(&s, l->v[i], 0);
        jv r = v_strn(&R->a, s.p ? s.p : "", s.n);
        free(s.p);
        if (rc) return rfail(R, n, "join: cannot print %s", NEST_ERR);
        return r;
    }
    if (!strcmp(f, "sum")) {
        jlist *l = iter_list(R, n, v);
        jv acc = v_int(0);
        for (int i = 0; i < l->n && !R->failed; i++) acc = binop(R, n, "+", acc, l->v[i]);
        return acc;
    }
    if (!strcmp(f, "string")) return to_str(R, v);
    if (!strcmp(f, "int") || !strcmp(f, "float")) {
        double d;
        if (v.t == V_STR) d = strtod(v.s, NULL);
        else if (!num(v, &d)) d = 0;
        return f[0] == 'i' ? v_int((int64_t)d) : v_float(d);
    }
    if (!strcmp(f, "abs")) {
        if (v.t == V_INT) return v_int(v.i < 0 ? -v.i : v.i);
        if (v.t == V_FLOAT) return v_float(fabs(v.f));
        return rfail(R, n, "bad operand type for abs(): '%s'", type_name(v));
    }
    if (!strcmp(f, "title") || !strcmp(f, "capitalize")) {
        jv r = v_strn(&R->a, to_str(R, v).s, to_str(R, v).n);
        char *s = (char *)r.s;
        int start = 1;
        for (size_t i = 0; i < r.n; i++) {
            char c = s[i];
            int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
            if (start && c >= 'a' && c <= 'z') s[i] = (char)(c - 32);
            else if (!start && c >= 'A' && c <= 'Z') s[i] = (char)(c + 32);
            if (f[0] == 't') start = !alpha;
            else start = 0;
        }
        return r;
    }
    if (!strcmp(f, "items")) return call_method(R, n, v, "items", &A);
    if (!strcmp(f, "tojson")) {
        jv ind = arg(&A, 0, "indent", v_none());
        if (ind.t == V_INT && ind.i > 1000) return rfail(R, n, "tojson: indent %lld is over 1000", (long long)ind.i);
        ds_sbuf s = {0};
        /* json.dumps: indent None is one line; an int, even 0 or negative, puts items on lines of their own */
        int rc = put_json(&s, v, ind.t == V_INT ? (ind.i < 0 ? 0 : (int)ind.i) : -1, 0, NULL);
        jv r = v_strn(&R->a, s.p ? s.p : "", s.n);
        free(s.p);
        if (rc == -2) return rfail(R, n, "tojson: Object of type TemplateNamespace is not JSON serializable");
        if (rc) return rfail(R, n, "tojson: Circular reference detected, or %s", NEST_ERR);
        return r;
    }
    return rfail(R, n, "unsupported filter %s", ds_quote(f));
}

static jv test(rctx *R, const jnode *n) {
    jv v = eval(R, n->kid[0]);
    args A;
    if (R->failed || eval_args(R, n, 1, &A)) return v_undef();
    jv r = run_test(R, n, n->s, v, &A);
    return R->failed ? r : v_bool(n->neg ? !truthy(r) : truthy(r));
}

static jv run_test(rctx *R, const jnode *n, const char *t, jv v, const args *pA) {
    const args *A = pA;
    args Aa = *pA;
    int r = 0;
    double d;
    if (!strcmp(t, "defined")) r = v.t != V_UNDEF;
    else if (!strcmp(t, "undefined")) r = v.t == V_UNDEF;
    else if (!strcmp(t, "none")) r = v.t == V_NONE;
    else if (!strcmp(t, "string")) r = v.t == V_STR;
    else if (!strcmp(t, "number")) r = v.t == V_INT || v.t == V_FLOAT;
    else if (!strcmp(t, "integer")) r = v.t == V_INT;
    else if (!strcmp(t, "float")) r = v.t == V_FLOAT;
    else if (!strcmp(t, "mapping")) r = v.t == V_DICT;
    else if (!strcmp(t, "iterable") || !strcmp(t, "sequence")) r = v.t == V_LIST || v.t == V_STR || v.t == V_DICT;
    else if (!strcmp(t, "boolean")) r = v.t == V_BOOL;
    else if (!strcmp(t, "true")) r = v.t == V_BOOL && v.i;
    else if (!strcmp(t, "false")) r = v.t == V_BOOL && !v.i;
    else if (!strcmp(t, "callable")) r = 0;
    else if (!strcmp(t, "even") || !strcmp(t, "odd")) {
        if (v.t != V_INT) return rfail(R, n, "'%s' test needs an integer", t);
        r = py_mod(v.i, 2) == (t[0] == 'o');
    } else if (!strcmp(t, "divisibleby")) {
        jv k = arg(A, 0, "num", v_undef());
        if (v.t != V_INT || k.t != V_INT || !k.i) return rfail(R, n, "'divisibleby' needs integers");
        r = py_mod(v.i, k.i) == 0;
    } else if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==")) r = equal(R, n, v, arg(A, 0, NULL, v_undef()));
    else if (!strcmp(t, "ne") || !strcmp(t, "!=")) r = !equal(R, n, v, arg(A, 0, NULL, v_undef()));
    else if (!strcmp(t, "in")) r = contains(R, n, arg(A, 0, NULL, v_undef()), v);
    else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        r = v.t == V_STR;
        for (size_t i = 0; r && i < v.n; i++)
            if (t[0] == 'l' ? (v.s[i] >= 'A' && v.s[i] <= 'Z') : (v.s[i] >= 'a' && v.s[i] <= 'z')) r = 0;
    } else return rfail(R, n, "unsupported test %s", ds_quote(t));
    (void)d;
    (void)Aa;
    return v_bool(r);
}

static jv eval(rctx *R, const jnode *n) {
    if (R->failed) return v_undef();
    switch (n->kind) {
    case E_LIT: return n->lit;
    case E_NONE_SLOT: return v_none();
    case E_NAME: return lookup(R, n->s);
    case E_ATTR: {
        jv o = eval(R, n->kid[0]);
        if (o.t == V_UNDEF) return rfail(R, n, "'%s' of an undefined value", n->s);
        if (o.t == V_DICT) {
            jv *v = dict_get(o.d, n->s);
            return v ? *v : v_undef();
        }
        return v_undef();
    }
    case E_INDEX: return getitem(R, n, eval(R, n->kid[0]), eval(R, n->kid[1]));
    case E_SLICE: {
        jv o = eval(R, n->kid[0]), a = eval(R, n->kid[1]), b = eval(R, n->kid[2]), c = eval(R, n->kid[3]);
        return R->failed ? v_undef() : slice(R, n, o, a, b, c);
    }
    case E_CALL: return call(R, n);
    case E_FILTER: return filter(R, n);
    case E_TEST: return test(R, n);
    case E_BIN: {
        jv a = eval(R, n->kid[0]), b = eval(R, n->kid[1]);
        return R->failed ? v_undef() : binop(R, n, n->s, a, b);
    }
    case E_NEG: case E_POS: {
        jv a = eval(R, n->kid[0]);
        if (a.t == V_INT) return v_int(n->kind == E_NEG ? -a.i : a.i);
        if (a.t == V_FLOAT) return v_float(n->kind == E_NEG ? -a.f : a.f);
        return rfail(R, n, "bad operand type for unary -: '%s'", type_name(a));
    }
    case E_NOT: return v_bool(!truthy(eval(R, n->kid[0])));
    case E_AND: {
        jv a = eval(R, n->kid[0]);
        return truthy(a) ? eval(R, n->kid[1]) : a;
    }
    case E_OR: {
        jv a = eval(R, n->kid[0]);
        return truthy(a) ? a : eval(R, n->kid[1]);
    }
    case E_COND: {
        if (truthy(eval(R, n->kid[0]))) return eval(R, n->kid[1]);
        return n->kid[2]->kind == E_NONE_SLOT ? v_undef() : eval(R, n->kid[2]);
    }
    case E_LIST: {
        jv l = {.t = V_LIST, .l = list_new(&R->a)};
        for (int i = 0; i < n->nkid; i++) list_push(&R->a, l.l, eval(R, n->kid[i]));
        return l;
    }
    case E_DICT: {
        jv d = {.t = V_DICT, .d = dict_new(&R->a)};
        for (int i = 0; i + 1 < n->nkid; i += 2) {
            jv k = eval(R, n->kid[i]);
            if (k.t != V_STR) return rfail(R, n, "dict keys must be strings");
            dict_set(&R->a, d.d, k.s, eval(R, n->kid[i + 1]));
        }
        return d;
    }
    }
    return rfail(R, n, "internal: bad expression node");
}

static void exec_body(rctx *R, const jnode *b);

static void set_var(rctx *R, const char *name, jv v) { dict_set(&R->a, R->sc->vars, name, v); }

static void exec_for(rctx *R, const jnode *n) {
    const jnode *tg = n->kid[0], *body = n->kid[2], *els = n->kid[3], *cond = n->kid[4];
    jv it = eval(R, n->kid[1]);
    if (R->failed) return;
    jlist *all = iter_list(R, n, it);
    if (R->failed) return;
    /* the `if` filter selects items before loop.* counts them */
    jlist *l = all;
    scope sc = {.vars = dict_new(&R->a), .up = R->sc};
    R->sc = &sc;
    if (cond->kind != E_NONE_SLOT) {
        l = list_new(&R->a);
        for (int i = 0; i < all->n && !R->failed; i++) {
            for (int k = 0; k < tg->nkid; k++)
                set_var(R, tg->kid[k]->s, tg->nkid == 1 ? all->v[i] : getitem(R, n, all->v[i], v_int(k)));
            if (truthy(eval(R, cond))) list_push(&R->a, l, all->v[i]);
        }
    }
    for (int i = 0; i < l->n && !R->failed; i++) {
        if (++R->work > JINJA_MAX_WORK || R->a.total > 4 * JINJA_MAX_OUT) {
            rfail(R, n, "the template runs too long (over %d steps or %zu MiB of values)", JINJA_MAX_WORK,
                  (4 * JINJA_MAX_OUT) >> 20);
            break;
        }
        sc.vars = dict_new(&R->a);
        jv loop = {.t = V_DICT, .d = dict_new(&R->a)};
        dict_set(&R->a, loop.d, "index", v_int(i + 1));
        dict_set(&R->a, loop.d, "index0", v_int(i));
        dict_set(&R->a, loop.d, "revindex", v_int(l->n - i));
        dict_set(&R->a, loop.d, "revindex0", v_int(l->n - i - 1));
        dict_set(&R->a, loop.d, "first", v_bool(i == 0));
        dict_set(&R->a, loop.d, "last", v_bool(i == l->n - 1));
        dict_set(&R->a, loop.d, "length", v_int(l->n));
        dict_set(&R->a, loop.d, "previtem", i > 0 ? l->v[i - 1] : v_undef());
        dict_set(&R->a, loop.d, "nextitem", i + 1 < l->n ? l->v[i + 1] : v_undef());
        set_var(R, "loop", loop);
        if (tg->nkid == 1) set_var(R, tg->kid[0]->s, l->v[i]);
        else {
            jv item = l->v[i];
            if (item.t != V_LIST || item.l->n != tg->nkid) {
                rfail(R, n, "cannot unpack %s into %d loop variables", type_name(item), tg->nkid);
                break;
            }
            for (int k = 0; k < tg->nkid; k++) set_var(R, tg->kid[k]->s, item.l->v[k]);
        }
        exec_body(R, body);
        if (R->brk == 1) { R->brk = 0; break; }
        R->brk = 0;
    }
    R->sc = sc.up;
    if (!l->n && els->kind != E_NONE_SLOT && !R->failed) exec_body(R, els);
}

static void exec_stmt(rctx *R, const jnode *n) {
    switch (n->kind) {
    case N_TEXT: ds_sbuf_put(&R->out, n->lit.s, n->lit.n); return;
    case N_OUT: {
        jv v = eval(R, n->kid[0]);
        if (!R->failed && put_value(&R->out, v, 0)) rfail(R, n, "cannot print %s", NEST_ERR);
        return;
    }
    case N_IF:
        for (int i = 0; i + 1 < n->nkid; i += 2) {
            if (truthy(eval(R, n->kid[i]))) {
                if (!R->failed) exec_body(R, n->kid[i + 1]);
                return;
            }
            if (R->failed) return;
        }
        if (n->nkid % 2) exec_body(R, n->kid[n->nkid - 1]);
        return;
    case N_FOR: exec_for(R, n); return;
    case N_SET: {
        jv v = eval(R, n->kid[1]);
        if (R->failed) return;
        const jnode *tg = n->kid[0];
        if (tg->kind == E_NAME) set_var(R, tg->s, v);
        else {
            jv o = lookup(R, tg->kid[0]->s);
            if (o.t != V_DICT || !o.d->ns) {
                rfail(R, n, "cannot assign attribute '%s' on a non-namespace object", tg->s);
                return;
            }
            dict_set(&R->a, o.d, tg->s, v);
        }
        return;
    }
    case N_BREAK: R->brk = 1; return;
    case N_CONTINUE: R->brk = 2; return;
    case N_BODY: exec_body(R, n); return;
    }
}

static void exec_body(rctx *R, const jnode *b) {
    for (int i = 0; i < b->nkid && !R->failed && !R->brk; i++) {
        if (++R->work > JINJA_MAX_WORK || R->out.n > JINJA_MAX_OUT || R->a.total > 4 * JINJA_MAX_OUT) {
            rfail(R, b->kid[i], "the template runs too long (over %d steps, %zu MiB of output or %zu MiB of values)",
                  JINJA_MAX_WORK, JINJA_MAX_OUT >> 20, (4 * JINJA_MAX_OUT) >> 20);
            return;
        }
        exec_stmt(R, b->kid[i]);
    }
}

char *ds_jinja_render(const ds_jinja *t, const cJSON *vars) {
    rctx R;
    memset(&R, 0, sizeof R);
    scope g = {.vars = dict_new(&R.a)};
    R.sc = &g;
    const cJSON *x;
    if (vars) cJSON_ArrayForEach(x, vars) dict_set(&R.a, g.vars, x->string, from_json(&R.a, x));
    exec_body(&R, t->root);
    char *out = NULL;
    if (R.failed) ds_err("chat template: %s", R.err);
    else out = ds_sbuf_take(&R.out);
    free(R.out.p);
    if (R.failed) R.out.p = NULL;
    afree(&R.a);
    return out;
}

#define CONTINUE_TAG "CONTINUE_FINAL_MESSAGE_TAG "

char *ds_chat_template_render(const ds_jinja *t, const cJSON *messages, const cJSON *tools, const ds_chat_opts *o,
                              const char *bos, const char *eos) {
    const int cont = o && o->continue_final_message;
    if (cont && o->add_generation_prompt) {
        ds_err("chat template: continue_final_message and add_generation_prompt are not compatible (continue the final "
               "message, or start a new assistant message)");
        return NULL;
    }
    cJSON *v = cJSON_CreateObject();
    cJSON *msgs = cJSON_Duplicate(messages, 1);
    char *final = NULL; /* the final message's content, stripped (Python's str.strip) */
    if (cont) {
        cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
        const cJSON *c = last ? cJSON_GetObjectItemCaseSensitive(last, "content") : NULL;
        const char *why = !last ? "the conversation is empty"
                          : !cJSON_IsString(c) ? "the final message has no \"content\" to continue"
                          : !t->mentions_content ? "the chat template does not read \"content\""
                          : NULL;
        if (why) {
            ds_err("chat template: continue_final_message is set but %s", why);
            cJSON_Delete(msgs), cJSON_Delete(v);
            return NULL;
        }
        /* as transformers: a tag after the content, found again in the text and cut there */
        const char *fa = c->valuestring, *fb = fa + strlen(fa);
        while (fa < fb && py_space(*fa)) fa++;
        while (fb > fa && py_space(fb[-1])) fb--;
        final = ds_strndup(fa, (size_t)(fb - fa));
        char *tagged = ds_malloc(strlen(c->valuestring) + sizeof CONTINUE_TAG);
        strcat(strcpy(tagged, c->valuestring), CONTINUE_TAG);
        cJSON_ReplaceItemInObjectCaseSensitive(last, "content", cJSON_CreateString(tagged));
        free(tagged);
    }
    /* the template's variables: transformers' special tokens, then chat_template_kwargs over them, then the
     * conversation's own (tools and documents always, None when not given) */
    if (bos) cJSON_AddStringToObject(v, "bos_token", bos);
    if (eos) cJSON_AddStringToObject(v, "eos_token", eos);
    const cJSON *kw;
    if (o && o->kwargs) cJSON_ArrayForEach(kw, o->kwargs) {
        cJSON_DeleteItemFromObjectCaseSensitive(v, kw->string);
        cJSON_AddItemToObject(v, kw->string, cJSON_Duplicate(kw, 1));
    }
    cJSON_AddItemToObject(v, "messages", msgs);
    cJSON_AddItemToObject(v, "tools", tools ? cJSON_Duplicate(tools, 1) : cJSON_CreateNull());
    cJSON_AddNullToObject(v, "documents");
    cJSON_AddBoolToObject(v, "add_generation_prompt", o ? o->add_generation_prompt : 0);
    char *r = ds_jinja_render(t, v);
    cJSON_Delete(v);
    if (!r || !cont) return free(final), r;
    const size_t n = strlen(r);
    const char *tag = last_of(r, n, CONTINUE_TAG, sizeof CONTINUE_TAG - 2); /* the tag less its space */
    const int found = tag && (!*final || last_of(r, n, final, strlen(final)));
    free(final);
    if (!found) {
        ds_err("chat template: continue_final_message is set but the final message does not appear in the chat after "
               "applying the chat template (the template deletes portions of it)");
        free(r);
        return NULL;
    }
    size_t cut = (size_t)(tag - r);
    if (strncmp(tag, CONTINUE_TAG, sizeof CONTINUE_TAG - 1)) /* the template trimmed the content: trim it all */
        while (cut > 0 && py_space(r[cut - 1])) cut--;
    r[cut] = 0;
    return r;
}

char *ds_chat_template_apply_tools(const ds_jinja *t, const cJSON *messages, const cJSON *tools, int add_generation_prompt,
                                   const char *bos, const char *eos) {
    const ds_chat_opts o = {.add_generation_prompt = add_generation_prompt};
    return ds_chat_template_render(t, messages, tools, &o, bos, eos);
}

char *ds_chat_template_apply(const ds_jinja *t, const cJSON *messages, int add_generation_prompt, const char *bos,
                             const char *eos) {
    return ds_chat_template_apply_tools(t, messages, NULL, add_generation_prompt, bos, eos);
}

char *ds_json_dumps_py(const cJSON *v) {
    arena a;
    memset(&a, 0, sizeof a);
    ds_sbuf b = {0};
    int rc = put_json(&b, from_json(&a, v), -1, 0, NULL);
    afree(&a);
    if (rc) {
        free(b.p);
        ds_err("json: a value nested deeper than %d", JINJA_MAX_NEST);
        return NULL;
    }
    return ds_sbuf_take(&b);
}
