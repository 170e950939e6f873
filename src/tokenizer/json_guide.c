/*
 * json_guide.c — JSON-object constrained decoding (see json_guide.h).
 */
#include "tokenizer/json_guide.h"

#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/json.h"
#include "tokenizer/jinja.h"
#include "tokenizer/rx.h"

enum {
    M_START,          /* before the top-level object: whitespace, '{' */
    M_KEY_OR_CLOSE,   /* after '{': a key or '}' */
    M_KEY,            /* after ',' in an object: a key */
    M_COLON,          /* after a key */
    M_VALUE,          /* after ':' or ',' in an array */
    M_VALUE_OR_CLOSE, /* after '[': a value or ']' */
    M_AFTER,          /* after a value in a container: ',' or its close */
    M_STRING,         /* in a string (key: a key); sub: escape state */
    M_NUMBER,         /* in a number; sub: where */
    M_LITERAL,        /* in true / false / null */
    M_ENUM,           /* in a value held to an enum's members (cand, pos) */
    M_ALT,            /* in one of a choice's literal texts (cand, pos) */
    M_RAW,            /* in text held to a regex (the root's rx, state rq) */
    M_DONE            /* the top-level value is complete */
};
enum { E_NONE, E_BACKSLASH, E_HEX1, E_HEX2, E_HEX3, E_HEX4 };
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };
enum { T_OBJ = 1, T_ARR = 2, T_STR = 4, T_NUM = 8, T_INT = 16, T_BOOL = 32, T_NULL = 64 };

/* ---- schemas -------------------------------------------------------------------- */
struct ds_json_node {
    unsigned types;          /* T_* bits; 0: any */
    int nprops;
    char **names;            /* property names (no character that needs an escape) */
    size_t *nlen;
    ds_json_node **props;
    uint64_t required;
    int addl;                /* keys beyond the properties allowed */
    ds_json_node *addl_node; /* their values' schema (NULL: any) */
    ds_json_node *items;     /* NULL: any */
    int unique;              /* uniqueItems (items an enum: each member at most once) */
    uint64_t *same;          /* ... per member, the members equal to it as JSON values (1 and 1.0): taken together */
    int nenum;
    char **enums;            /* the members as json.dumps writes them */
    size_t *elen;
    uint64_t enum_num;       /* bit k: member k is a number (it ends at the next delimiter) */
    int nany;                /* anyOf / oneOf: alternatives told apart by their first byte */
    ds_json_node **any;
    uint8_t first[32];       /* the bytes a value of this schema can start with (a bitset) */
    int nalt;                /* a choice (the root only): literal texts, each followed by an object of its schema */
    char **alts;
    size_t *alen;
    ds_json_node **aroot;    /* NULL: any object */
    /* bounds (-1: none): characters of a string (code points, as Python's len of the decoded string),
     * items of an array, properties of an object */
    int64_t min_len, max_len, min_items, max_items, min_props, max_props;
    int nbound;              /* number bounds given: minimum / maximum / exclusive*; numbers then have no exponent */
    double lo, hi;           /* -inf / +inf when absent; compared as doubles, as a Python validator does */
    int lo_ex, hi_ex;
    int64_t mult;            /* multipleOf (integers, by a whole number; 0: none): such an integer has at most 15 digits */
    ds_rx *rx;               /* "pattern" (a string's characters, as re.search); the root of ds_json_schema_regex: the
                              * whole text (re.fullmatch), raw = 1 */
    int raw;
};

struct ds_json_schema {
    ds_json_node **all;
    int n, cap;
    ds_json_node *root;
    const cJSON *doc;        /* the schema being compiled: "$ref" looks up "#/$defs/..." in it */
    const cJSON **ref_src;   /* definitions compiled so far (a "$ref" cycle meets its own node) */
    ds_json_node **ref_node;
    int nref;
};

static const char *const ANNOTATIONS[] = {"title", "description", "default", "examples", "format", "$schema", "$id",
                                          "$comment", "deprecated", "readOnly", "writeOnly", "$defs", "definitions"};

static ds_json_node *node_new(ds_json_schema *sc) {
    if (sc->n == sc->cap) sc->all = ds_realloc(sc->all, (size_t)(sc->cap = sc->cap ? 2 * sc->cap : 16) * sizeof *sc->all);
    ds_json_node *n = sc->all[sc->n++] = ds_calloc(1, sizeof(ds_json_node));
    n->min_len = n->max_len = n->min_items = n->max_items = n->min_props = n->max_props = -1;
    n->lo = -INFINITY, n->hi = INFINITY;
    return n;
}

/* a bound keyword's value: a whole number ≥ 0 (lengths, counts) */
static int count_kw(const cJSON *k, const char *at, int64_t *out) {
    if (!cJSON_IsNumber(k) || k->valuedouble < 0 || k->valuedouble > 1e9 || k->valuedouble != floor(k->valuedouble))
        return ds_err("%s: %s must be a whole number from 0 to 1e9", at, ds_quote(k->string));
    *out = (int64_t)k->valuedouble;
    return 0;
}

static int type_bit(const cJSON *t) {
    static const char *const n[] = {"object", "array", "string", "number", "integer", "boolean", "null"};
    for (int i = 0; cJSON_IsString(t) && i < 7; i++)
        if (!strcmp(t->valuestring, n[i])) return 1 << i;
    return 0;
}

static void first_set(uint8_t *f, unsigned c) { f[c >> 3] |= (uint8_t)(1u << (c & 7)); }
static int first_has(const uint8_t *f, unsigned c) { return f[c >> 3] >> (c & 7) & 1; }

/* the bytes a value of n can start with */
static void first_bytes(ds_json_node *n) {
    memset(n->first, 0, sizeof n->first);
    if (n->nenum) {
        for (int k = 0; k < n->nenum; k++) first_set(n->first, (unsigned char)n->enums[k][0]);
        return;
    }
    if (n->nany) {
        for (int k = 0; k < n->nany; k++)
            for (int b = 0; b < 32; b++) n->first[b] |= n->any[k]->first[b];
        return;
    }
    const unsigned t = n->types ? n->types : ~0u;
    if (t & T_OBJ) first_set(n->first, '{');
    if (t & T_ARR) first_set(n->first, '[');
    if (t & T_STR) first_set(n->first, '"');
    if (t & (T_NUM | T_INT)) {
        first_set(n->first, '-');
        for (unsigned c = '0'; c <= '9'; c++) first_set(n->first, c);
    }
    if (t & T_BOOL) first_set(n->first, 't'), first_set(n->first, 'f');
    if (t & T_NULL) first_set(n->first, 'n');
}

static ds_json_node *compile_(ds_json_schema *sc, const cJSON *j, const char *path, int depth);

/* "$ref": "#/$defs/NAME" (or "#/definitions/NAME") of the schema being compiled; the same definition is one node */
static ds_json_node *compile_ref(ds_json_schema *sc, const char *ref, const char *at, int depth) {
    const char *name = !strncmp(ref, "#/$defs/", 8) ? ref + 8 : !strncmp(ref, "#/definitions/", 14) ? ref + 14 : NULL;
    const cJSON *defs = name ? cJSON_GetObjectItemCaseSensitive(sc->doc, ref[2] == '$' ? "$defs" : "definitions") : NULL;
    const cJSON *d = defs ? cJSON_GetObjectItemCaseSensitive(defs, name) : NULL;
    if (!d) return ds_err("%s: '$ref' %s: only \"#/$defs/NAME\" of this schema is supported, and it must exist", at, ds_quote(ref)), NULL;
    for (int i = 0; i < sc->nref; i++)
        if (sc->ref_src[i] == d) return sc->ref_node[i];
    char sub[512];
    snprintf(sub, sizeof sub, "%s", ref + 2);
    return compile_(sc, d, sub, depth + 1);
}

static int only_annotations_beside(const cJSON *j, const char *kw) {
    const cJSON *k;
    cJSON_ArrayForEach(k, j) {
        int ann = !strcmp(k->string, kw);
        for (size_t i = 0; i < sizeof ANNOTATIONS / sizeof *ANNOTATIONS; i++) ann |= !strcmp(k->string, ANNOTATIONS[i]);
        if (!ann) return 0;
    }
    return 1;
}

static ds_json_node *compile(ds_json_schema *sc, const cJSON *j, const char *path, int depth) {
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(j, "$ref");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(j, "allOf");
    if (all) { /* one schema (as older Pydantic wraps a "$ref" to give it a description): that schema */
        char atb[160]; /* the path as a message shows it (names escaped, long ones cut) */
        snprintf(atb, sizeof atb, "%s", *path ? ds_esc(path) : "the schema");
        const char *at = atb;
        if (!cJSON_IsArray(all) || cJSON_GetArraySize(all) != 1)
            return ds_err("%s: 'allOf' of more than one schema is not supported", at), NULL;
        if (!only_annotations_beside(j, "allOf")) return ds_err("%s: 'allOf' beside other keywords is not supported", at), NULL;
        if (depth > DS_JSON_MAX_DEPTH) return ds_err("%s: nested deeper than %d", at, DS_JSON_MAX_DEPTH), NULL;
        char sub[512];
        snprintf(sub, sizeof sub, "%s%sallOf.0", path, *path ? "." : "");
        return compile(sc, cJSON_GetArrayItem(all, 0), sub, depth + 1);
    }
    if (!ref) {
        ds_json_node *n = compile_(sc, j, path, depth);
        return n;
    }
    char atb[160]; /* the path as a message shows it (names escaped, long ones cut) */
    snprintf(atb, sizeof atb, "%s", *path ? ds_esc(path) : "the schema");
    const char *at = atb;
    const cJSON *k;
    cJSON_ArrayForEach(k, j) {
        int ann = !strcmp(k->string, "$ref");
        for (size_t i = 0; i < sizeof ANNOTATIONS / sizeof *ANNOTATIONS; i++) ann |= !strcmp(k->string, ANNOTATIONS[i]);
        if (!ann) return ds_err("%s: %s beside '$ref' is not supported", at, ds_quote(k->string)), NULL;
    }
    if (!cJSON_IsString(ref)) return ds_err("%s: '$ref' must be a string", at), NULL;
    if (depth > DS_JSON_MAX_DEPTH) return ds_err("%s: nested deeper than %d", at, DS_JSON_MAX_DEPTH), NULL;
    return compile_ref(sc, ref->valuestring, at, depth);
}

static int utf8_byte(ds_json_state *s, unsigned c);

/* 'pattern' beside 'enum' / 'const': the string members the pattern (and the lengths) do not take are
 * dropped (a validator checks both); other members stay.  -1 when none is left */
static int enum_by_pattern(ds_json_node *n) {
    int m = 0;
    uint64_t num = 0;
    for (int k = 0; k < n->nenum; k++) {
        cJSON *v = n->enums[k][0] == '"' ? cJSON_Parse(n->enums[k]) : NULL;
        int keep = 1;
        if (cJSON_IsString(v)) {
            int32_t q = ds_rx_start(n->rx);
            int64_t len = 0;
            ds_json_state u; /* the automaton's UTF-8 reader: a code point at each character's end */
            memset(&u, 0, sizeof u);
            for (const unsigned char *c = (const unsigned char *)v->valuestring; *c && q >= 0; c++) {
                const int r = utf8_byte(&u, *c);
                if (r < 0) q = -1;
                else if (r) q = ds_rx_step(n->rx, q, u.cp), len++;
            }
            keep = q >= 0 && ds_rx_accepts(n->rx, q, len);
        }
        cJSON_Delete(v);
        if (!keep) {
            free(n->enums[k]);
            continue;
        }
        if (n->enum_num & (UINT64_C(1) << k)) num |= UINT64_C(1) << m;
        n->enums[m] = n->enums[k], n->elen[m++] = n->elen[k];
    }
    n->nenum = m, n->enum_num = num;
    return m ? 0 : -1;
}

static ds_json_node *compile_(ds_json_schema *sc, const cJSON *j, const char *path, int depth) {
    char atb[160]; /* the path as a message shows it (names escaped, long ones cut) */
    snprintf(atb, sizeof atb, "%s", *path ? ds_esc(path) : "the schema");
    const char *at = atb;
    if (depth > DS_JSON_MAX_DEPTH) return ds_err("%s: nested deeper than %d", at, DS_JSON_MAX_DEPTH), NULL;
    ds_json_node *n = node_new(sc);
    sc->ref_src = ds_realloc(sc->ref_src, (size_t)(sc->nref + 1) * sizeof *sc->ref_src); /* a "$ref" back here finds n */
    sc->ref_node = ds_realloc(sc->ref_node, (size_t)(sc->nref + 1) * sizeof *sc->ref_node);
    sc->ref_src[sc->nref] = j, sc->ref_node[sc->nref++] = n;
    if (cJSON_IsTrue(j)) return first_bytes(n), n;
    if (!cJSON_IsObject(j)) return ds_err("%s: a schema must be an object or true", at), NULL;
    n->addl = 1;
    const cJSON *k, *req = NULL;
    char sub[512];
    cJSON_ArrayForEach(k, j) {
        const char *key = k->string;
        for (const cJSON *e = j->child; e != k; e = e->next) /* a JSON text may repeat a key; a schema may not */
            if (!strcmp(e->string, key)) return ds_err("%s: %s given twice", at, ds_quote(key)), NULL;
        int ann = 0;
        for (size_t i = 0; i < sizeof ANNOTATIONS / sizeof *ANNOTATIONS; i++) ann |= !strcmp(key, ANNOTATIONS[i]);
        if (ann) continue;
        if (!strcmp(key, "type")) {
            const cJSON *t;
            if (cJSON_IsString(k)) n->types = (unsigned)type_bit(k);
            else cJSON_ArrayForEach(t, k) n->types |= (unsigned)type_bit(t);
            int ok = n->types != 0;
            if (cJSON_IsArray(k)) cJSON_ArrayForEach(t, k) ok &= type_bit(t) != 0;
            if (!ok) return ds_err("%s: 'type' must name JSON types (object, array, string, number, integer, boolean, null)", at), NULL;
        } else if (!strcmp(key, "properties")) {
            if (!cJSON_IsObject(k)) return ds_err("%s: 'properties' must be an object", at), NULL;
            const int np = cJSON_GetArraySize(k);
            if (np > DS_JSON_MAX_MEMBERS) return ds_err("%s: more than %d properties", at, DS_JSON_MAX_MEMBERS), NULL;
            n->names = ds_calloc((size_t)np + 1, sizeof(char *));
            n->nlen = ds_calloc((size_t)np + 1, sizeof(size_t));
            n->props = ds_calloc((size_t)np + 1, sizeof(ds_json_node *));
            const cJSON *p;
            cJSON_ArrayForEach(p, k) {
                for (const unsigned char *c = (const unsigned char *)p->string; *c; c++)
                    if (*c == '"' || *c == '\\' || *c < 0x20)
                        return ds_err("%s: property name %s needs an escape (not supported)", at, ds_quote(p->string)), NULL;
                snprintf(sub, sizeof sub, "%s%sproperties.%s", path, *path ? "." : "", p->string);
                ds_json_node *c = compile(sc, p, sub, depth + 1);
                if (!c) return NULL;
                n->names[n->nprops] = ds_strdup(p->string);
                n->nlen[n->nprops] = strlen(p->string);
                n->props[n->nprops++] = c;
            }
        } else if (!strcmp(key, "required")) {
            req = k;
        } else if (!strcmp(key, "additionalProperties")) {
            if (cJSON_IsBool(k)) {
                n->addl = cJSON_IsTrue(k);
            } else {
                snprintf(sub, sizeof sub, "%s%sadditionalProperties", path, *path ? "." : "");
                if (!(n->addl_node = compile(sc, k, sub, depth + 1))) return NULL;
            }
        } else if (!strcmp(key, "uniqueItems")) {
            if (!cJSON_IsBool(k)) return ds_err("%s: 'uniqueItems' must be true or false", at), NULL;
            n->unique = cJSON_IsTrue(k);
        } else if (!strcmp(key, "items")) {
            snprintf(sub, sizeof sub, "%s%sitems", path, *path ? "." : "");
            if (cJSON_IsArray(k)) return ds_err("%s: 'items' as a list (tuples) is not supported", at), NULL;
            if (!(n->items = compile(sc, k, sub, depth + 1))) return NULL;
        } else if (!strcmp(key, "enum") || !strcmp(key, "const")) {
            const int isenum = key[0] == 'e';
            if (isenum && (!cJSON_IsArray(k) || !cJSON_GetArraySize(k))) return ds_err("%s: 'enum' must be a non-empty list", at), NULL;
            const int ne = isenum ? cJSON_GetArraySize(k) : 1;
            if (ne > DS_JSON_MAX_MEMBERS) return ds_err("%s: 'enum' has more than %d members", at, DS_JSON_MAX_MEMBERS), NULL;
            for (int i = 0; i < n->nenum; i++) free(n->enums[i]);
            free(n->enums), free(n->elen);
            n->enums = ds_calloc((size_t)ne, sizeof(char *));
            n->elen = ds_calloc((size_t)ne, sizeof(size_t));
            n->nenum = 0, n->enum_num = 0;
            for (int i = 0; i < ne; i++) {
                const cJSON *m = isenum ? cJSON_GetArrayItem(k, i) : k;
                char *t = ds_json_dumps_py(m);
                if (!t) return NULL;
                if (cJSON_IsNumber(m)) n->enum_num |= UINT64_C(1) << n->nenum;
                n->enums[n->nenum] = t;
                n->elen[n->nenum++] = strlen(t);
            }
        } else if (!strcmp(key, "anyOf") || !strcmp(key, "oneOf")) {
            const int na = cJSON_GetArraySize(k);
            if (!cJSON_IsArray(k) || !na || na > DS_JSON_MAX_MEMBERS)
                return ds_err("%s: %s must be a list of 1 to %d schemas", at, ds_quote(key), DS_JSON_MAX_MEMBERS), NULL;
            n->any = ds_calloc((size_t)na, sizeof(ds_json_node *));
            const cJSON *a;
            cJSON_ArrayForEach(a, k) {
                snprintf(sub, sizeof sub, "%s%s%s.%d", path, *path ? "." : "", key, n->nany);
                ds_json_node *c = compile(sc, a, sub, depth + 1);
                if (!c) return NULL;
                for (int i = 0; i < n->nany; i++)
                    for (int b = 0; b < 32; b++)
                        if (n->any[i]->first[b] & c->first[b])
                            return ds_err("%s: %s alternatives %d and %d can start alike (dsv3 takes alternatives that differ "
                                          "in their first character, such as a type and null)", at, ds_quote(key), i, n->nany), NULL;
                n->any[n->nany++] = c;
            }
        } else if (!strcmp(key, "minLength") || !strcmp(key, "maxLength") || !strcmp(key, "minItems") ||
                   !strcmp(key, "maxItems") || !strcmp(key, "minProperties") || !strcmp(key, "maxProperties")) {
            int64_t v = 0;
            if (count_kw(k, at, &v)) return NULL;
            const int mx = key[1] == 'a';
            const char what = key[3];
            int64_t *dst = what == 'L' ? (mx ? &n->max_len : &n->min_len)
                         : what == 'I' ? (mx ? &n->max_items : &n->min_items) : (mx ? &n->max_props : &n->min_props);
            *dst = v;
        } else if (!strcmp(key, "multipleOf")) {
            if (!cJSON_IsNumber(k) || !(k->valuedouble >= 1 && k->valuedouble <= 1e9) || k->valuedouble != floor(k->valuedouble))
                return ds_err("%s: 'multipleOf' is supported as a whole number from 1 to 1e9", at), NULL;
            n->mult = (int64_t)k->valuedouble;
            n->nbound = 1;
        } else if (!strcmp(key, "pattern")) {
            if (!cJSON_IsString(k)) return ds_err("%s: 'pattern' must be a string", at), NULL;
            ds_rx_free(n->rx);
            if (!(n->rx = ds_rx_compile(k->valuestring, DS_RX_SEARCH))) return ds_err_prefix("%s: 'pattern'", at), NULL;
        } else if (!strcmp(key, "minimum") || !strcmp(key, "maximum") || !strcmp(key, "exclusiveMinimum") ||
                   !strcmp(key, "exclusiveMaximum")) {
            if (!cJSON_IsNumber(k) || !isfinite(k->valuedouble)) return ds_err("%s: %s must be a number", at, ds_quote(key)), NULL;
            const int ex = key[0] == 'e', mx = ex ? key[9] == 'M' && key[10] == 'a' : key[1] == 'a';
            const double v = k->valuedouble;
            if (mx && (v < n->hi || (v == n->hi && ex))) n->hi = v, n->hi_ex = ex;
            if (!mx && (v > n->lo || (v == n->lo && ex))) n->lo = v, n->lo_ex = ex;
            n->nbound = 1;
        } else {
            return ds_err("%s: %s is not supported (dsv3 takes type, properties, required, additionalProperties, items, "
                          "enum, const, $ref to $defs, anyOf / oneOf of alternatives that start differently, allOf of one "
                          "schema, minLength / maxLength, pattern, minItems / maxItems, minProperties / maxProperties, "
                          "minimum / maximum / exclusiveMinimum / exclusiveMaximum, multipleOf of integers)", at, ds_quote(key)), NULL;
        }
    }
    const cJSON *r;
    cJSON_ArrayForEach(r, req) {
        int idx = -1;
        for (int i = 0; cJSON_IsString(r) && i < n->nprops; i++)
            if (!strcmp(n->names[i], r->valuestring)) idx = i;
        if (idx < 0)
            return ds_err("%s: 'required' names %s, which is not one of 'properties'", at,
                          cJSON_IsString(r) ? ds_quote(r->valuestring) : "a non-string"), NULL;
        n->required |= UINT64_C(1) << idx;
    }
    if (req && !cJSON_IsArray(req)) return ds_err("%s: 'required' must be a list of property names", at), NULL;
    if (n->unique && (!n->items || !n->items->nenum))
        return ds_err("%s: 'uniqueItems' is supported for items given by 'enum' or 'const' (each member at most once; "
                      "items of any string or number are not)", at), NULL;
    if (n->unique) { /* members equal as JSON values (as a validator compares them) are one member */
        const ds_json_node *it = n->items;
        n->same = ds_calloc((size_t)it->nenum, sizeof(uint64_t));
        int distinct = 0;
        for (int a = 0; a < it->nenum; a++) {
            cJSON *va = cJSON_Parse(it->enums[a]);
            for (int b = 0; b < it->nenum; b++) {
                cJSON *vb = b == a ? NULL : cJSON_Parse(it->enums[b]);
                if (b == a || (va && vb && cJSON_IsBool(va) == cJSON_IsBool(vb) && cJSON_Compare(va, vb, 1)))
                    n->same[a] |= UINT64_C(1) << b;
                cJSON_Delete(vb);
            }
            cJSON_Delete(va);
            distinct += !(n->same[a] & ((UINT64_C(1) << a) - 1)); /* the first of its kind */
        }
        if (n->min_items > distinct)
            return ds_err("%s: 'minItems' %lld is more than the %d distinct members 'uniqueItems' allows", at,
                          (long long)n->min_items, distinct), NULL;
    }
    if (n->nany && (n->types || n->nprops || n->nenum || n->items || req))
        return ds_err("%s: 'anyOf' / 'oneOf' beside other keywords is not supported", at), NULL;
    /* bounds no value meets: refused here rather than leaving the model at a dead end */
    if ((n->max_len >= 0 && n->min_len > n->max_len) || (n->max_items >= 0 && n->min_items > n->max_items) ||
        (n->max_props >= 0 && n->min_props > n->max_props))
        return ds_err("%s: a 'min' bound above its 'max' (no value meets them)", at), NULL;
    if (!n->addl && !n->addl_node && n->min_props > n->nprops)
        return ds_err("%s: 'minProperties' above the properties an object may have", at), NULL;
    if (n->max_props >= 0 && __builtin_popcountll(n->required) > n->max_props)
        return ds_err("%s: more 'required' properties than 'maxProperties'", at), NULL;
    if (n->rx && (n->min_len >= 0 || n->max_len >= 0) && ds_rx_lengths(n->rx, n->min_len, n->max_len))
        return ds_err_prefix("%s: 'pattern' with 'minLength' / 'maxLength'", at), NULL;
    if (n->rx && n->nenum && enum_by_pattern(n)) return ds_err("%s: no member of 'enum' / 'const' matches 'pattern'", at), NULL;
    if (n->mult && n->types != T_INT) return ds_err("%s: 'multipleOf' is supported with \"type\": \"integer\" only", at), NULL;
    if (n->lo > n->hi || (n->lo == n->hi && (n->lo_ex || n->hi_ex)))
        return ds_err("%s: 'minimum' / 'exclusiveMinimum' above 'maximum' / 'exclusiveMaximum' (no number meets them)", at), NULL;
    first_bytes(n);
    return n;
}

/* first-byte sets through "$ref" cycles (a node's set can depend on one still being compiled): recomputed
 * to a fixed point, then every anyOf's alternatives checked again for a shared first byte */
static int settle(ds_json_schema *sc) {
    for (int changed = 1, round = 0; changed && round < 64; round++) {
        changed = 0;
        for (int i = 0; i < sc->n; i++) {
            uint8_t old[32];
            memcpy(old, sc->all[i]->first, sizeof old);
            first_bytes(sc->all[i]);
            changed |= memcmp(old, sc->all[i]->first, sizeof old) != 0;
        }
    }
    for (int i = 0; i < sc->n; i++) {
        const ds_json_node *n = sc->all[i];
        for (int a = 0; a < n->nany; a++)
            for (int b = a + 1; b < n->nany; b++)
                for (int k = 0; k < 32; k++)
                    if (n->any[a]->first[k] & n->any[b]->first[k])
                        return ds_err("the schema: anyOf / oneOf alternatives that can start alike (through a '$ref')");
    }
    return 0;
}

ds_json_schema *ds_json_schema_compile(const cJSON *schema) {
    ds_json_schema *sc = ds_calloc(1, sizeof *sc);
    sc->doc = schema;
    sc->root = compile(sc, schema, "", 0);
    if (sc->root && settle(sc)) sc->root = NULL;
    if (sc->root && ((sc->root->types && !(sc->root->types & T_OBJ)) || sc->root->nenum)) {
        ds_err("the schema: the top-level value must be an object (\"type\": \"object\")");
        sc->root = NULL;
    }
    if (!sc->root) {
        ds_json_schema_free(sc);
        return NULL;
    }
    return sc;
}

ds_json_schema *ds_json_schema_choice(const char *const *texts, const cJSON *const *schemas, int k) {
    if (k < 1 || k > DS_JSON_MAX_MEMBERS) return ds_err("a choice of %d texts (1 to %d)", k, DS_JSON_MAX_MEMBERS), NULL;
    ds_json_schema *sc = ds_calloc(1, sizeof *sc);
    ds_json_node *r = sc->root = node_new(sc);
    r->alts = ds_calloc((size_t)k, sizeof(char *));
    r->alen = ds_calloc((size_t)k, sizeof(size_t));
    r->aroot = ds_calloc((size_t)k, sizeof(ds_json_node *));
    for (int i = 0; i < k; i++) {
        r->alts[i] = ds_strdup(texts[i]);
        r->alen[i] = strlen(texts[i]);
        r->nalt++;
        if (schemas[i]) {
            sc->doc = schemas[i];
            ds_json_node *c = compile(sc, schemas[i], "", 0);
            if (c && ((c->types && !(c->types & T_OBJ)) || c->nenum)) c = NULL; /* the value must be an object */
            if (!c) ds_err_clear();                                             /* any object, then */
            r->aroot[i] = c;
        }
    }
    if (settle(sc)) ds_err_clear(); /* alternatives that start alike: the first one that fits is taken */
    return sc;
}

ds_json_schema *ds_json_schema_regex(const char *pattern) {
    ds_rx *rx = ds_rx_compile(pattern, DS_RX_FULL);
    if (!rx) return NULL;
    ds_json_schema *sc = ds_calloc(1, sizeof *sc);
    sc->root = node_new(sc);
    sc->root->rx = rx, sc->root->raw = 1;
    return sc;
}

void ds_json_schema_free(ds_json_schema *sc) {
    if (!sc) return;
    for (int i = 0; i < sc->n; i++) {
        ds_json_node *n = sc->all[i];
        for (int k = 0; k < n->nprops; k++) free(n->names[k]);
        for (int k = 0; k < n->nenum; k++) free(n->enums[k]);
        for (int k = 0; k < n->nalt; k++) free(n->alts[k]);
        free(n->alts), free(n->alen), free(n->aroot), free(n->any);
        free(n->names), free(n->nlen), free(n->props), free(n->enums), free(n->elen);
        free(n->same);
        ds_rx_free(n->rx);
        free(n);
    }
    free(sc->all), free(sc->ref_src), free(sc->ref_node);
    free(sc);
}

/* ---- the automaton ---------------------------------------------------------------- */
void ds_json_state_init(ds_json_state *s, const ds_json_schema *schema) {
    memset(s, 0, sizeof *s);
    s->want = schema ? schema->root : NULL;
    if (s->want && s->want->raw) { /* text held to a regex: it starts at once; nothing may follow a final state */
        s->rq = ds_rx_start(s->want->rx);
        s->mode = ds_rx_final(s->want->rx, s->rq) ? M_DONE : M_RAW;
    }
}

int ds_json_state_done(const ds_json_state *s) { return s->mode == M_DONE; }

int ds_json_state_can_stop(const ds_json_state *s) {
    return s->mode == M_DONE || (s->mode == M_RAW && !s->utf8 && ds_rx_accepts(s->want->rx, s->rq, 0));
}

/* a copy of the state with only the open containers' frames */
static void copy_state(ds_json_state *d, const ds_json_state *s) {
    memcpy(d, s, offsetof(ds_json_state, stack) + (size_t)s->depth * sizeof(ds_json_frame));
}

static int is_ws(unsigned c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }
static int is_hex(unsigned c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static uint64_t bit(int k) { return UINT64_C(1) << k; }
static uint64_t all_of(int n) { return n >= 64 ? ~UINT64_C(0) : bit(n) - 1; }

static ds_json_frame *top(ds_json_state *s) { return &s->stack[s->depth - 1]; }

/* a value ended (string, number, literal, enum member, or a container closed) */
static void value_done(ds_json_state *s) { s->mode = s->depth ? M_AFTER : M_DONE; }

static int push_open(ds_json_state *s, char c, const ds_json_node *node) {
    if (s->depth == DS_JSON_MAX_DEPTH) return -1;
    s->stack[s->depth++] = (ds_json_frame){node, 0, -1, c, 0, 0};
    s->mode = c == '{' ? M_KEY_OR_CLOSE : M_VALUE_OR_CLOSE;
    if (c == '[') s->want = node ? node->items : NULL;
    return 0;
}

static int pop_close(ds_json_state *s) {
    s->depth--;
    value_done(s);
    return 0;
}

/* an object frame: may it close now, may another key come */
static int can_close(const ds_json_frame *f) {
    return !f->node || (!(f->node->required & ~f->seen) && (int64_t)f->count >= f->node->min_props);
}
static int key_possible(const ds_json_frame *f) {
    if (f->node && f->node->max_props >= 0 && (int64_t)f->count >= f->node->max_props) return 0;
    return !f->node || f->node->addl || (all_of(f->node->nprops) & ~f->seen);
}
/* an array frame: may it close now, may another item come */
static int items_close(const ds_json_frame *f) { return !f->node || (int64_t)f->count >= f->node->min_items; }
static int item_possible(const ds_json_frame *f) {
    if (f->node && f->node->unique && !(all_of(f->node->items->nenum) & ~f->used)) return 0; /* every member taken */
    return !f->node || f->node->max_items < 0 || (int64_t)f->count < f->node->max_items;
}

/* the array of uniqueItems whose item is the enum value w being read (NULL: none) */
static ds_json_frame *unique_frame(ds_json_state *s, const ds_json_node *w) {
    ds_json_frame *f = s->depth ? top(s) : NULL;
    return f && f->kind == '[' && f->node && f->node->unique && f->node->items == w ? f : NULL;
}

/* ---- number bounds: is x in them; can an interval of reachable values meet them */
static int in_bounds(const ds_json_node *w, double x) {
    return (x > w->lo || (x == w->lo && !w->lo_ex)) && (x < w->hi || (x == w->hi && !w->hi_ex));
}

/* the interval from a to b (ends included when a_in / b_in) meets the bounds; integer: at an integer */
static int meets(const ds_json_node *w, int integer, double a, int a_in, double b, int b_in) {
    double L = a, U = b;
    int Li = a_in, Ui = b_in;
    if (w->lo > L) L = w->lo, Li = !w->lo_ex;
    else if (w->lo == L) Li = Li && !w->lo_ex;
    if (w->hi < U) U = w->hi, Ui = !w->hi_ex;
    else if (w->hi == U) Ui = Ui && !w->hi_ex;
    if (integer) {
        double l = Li ? ceil(L) : floor(L) + 1, u = Ui ? floor(U) : ceil(U) - 1;
        if (w->mult > 1 && isfinite(l) && fabs(l) < 1e16) { /* the first multiple from l (exact: |l| < 2^53) */
            const int64_t li = (int64_t)l;
            int64_t q = li / w->mult;
            if (q * w->mult < li) q++;
            l = (double)(q * w->mult);
        }
        return l <= u;
    }
    return L < U || (L == U && Li && Ui);
}

/* the decimal text d (digits with at most one '.') with its last digit one up, carried ("1.9" -> "2.0",
 * "99" -> "100"), into out; the interval a continuation of d reaches ends there.  As strtod reads both
 * texts exactly rounded, the ends compare with the bounds as Python's floats would. */
static void dec_next(const char *d, char *out) {
    const size_t n = strlen(d);
    memcpy(out + 1, d, n + 1);
    out[0] = '0';
    for (size_t i = n; i > 0; i--) {
        char *c = out + i;
        if (*c == '.') continue;
        if (*c != '9') { ++*c; break; }
        *c = '0';
        if (i == 1) out[0] = '1';
    }
}

/* some continuation of the number text s->num (no exponent) meets the bounds of w */
static int number_feasible(const ds_json_state *s, const ds_json_node *w) {
    const char *t = s->num;
    const int neg = t[0] == '-', integer = s->is_int;
    const char *d = t + neg, *dot = strchr(d, '.');
    if (!*d) return meets(w, integer, -INFINITY, 1, 0, 1); /* "-": any value ≤ 0 (-0 is 0) */
    char buf[432], nx[432];
    if (dot || (d[0] == '0' && !integer)) { /* the digits so far, then any: [v, next) */
        snprintf(buf, sizeof buf, "%s%s", d, dot && !dot[1] ? "0" : ""); /* "3." reaches [3.0, 3.1)... and 3.9.. : [3, 4) */
        if (dot && !dot[1]) buf[strlen(buf) - 2] = 0;                    /* "3." -> "3" */
        dec_next(buf, nx);
        const double v = strtod(buf, NULL), e = strtod(nx, NULL);
        return neg ? meets(w, integer, -e, 0, -v, 1) : meets(w, integer, v, 1, e, 0);
    }
    if (d[0] == '0') return meets(w, integer, 0, 1, 0, 1); /* an integer 0 (or -0) */
    /* an integer part d followed by m more digits (and, unless integer, any fraction): [d·10^m, (d+1)·10^m) */
    const size_t n = strlen(d);
    memcpy(buf, d, n + 1);
    dec_next(d, nx);
    size_t lb = n, lx = strlen(nx);
    /* the intervals whose far end stays short of the bound on the near side (lo, or hi for a negative
     * number) cannot meet it: start a digit before the first that can (no 300 steps to reach 1e300) */
    const double near = neg ? -w->hi : w->lo;
    if (near > 0 && isfinite(near)) {
        const double skip = floor(log10(near)) - (double)n - 1;
        if (skip > 0 && lx + (size_t)skip + 2 < sizeof nx) {
            memset(buf + lb, '0', (size_t)skip), memset(nx + lx, '0', (size_t)skip);
            lb += (size_t)skip, lx += (size_t)skip;
            buf[lb] = nx[lx] = 0;
        }
    }
    while (lx + 2 < sizeof nx && (!w->mult || lb <= 15)) {
        const double a = strtod(buf, NULL), b = strtod(nx, NULL);
        if (!isfinite(a)) break;
        if (neg ? meets(w, integer, -b, 0, -a, 1) : meets(w, integer, a, 1, b, 0)) return 1;
        if (neg ? -a < w->lo : a > w->hi) break;
        buf[lb++] = '0', nx[lx++] = '0';
        buf[lb] = nx[lx] = 0;
    }
    return 0;
}

/* a number under bounds: append c to its text and check that it can still meet them */
static int number_text(ds_json_state *s, unsigned c) {
    if (s->nlen + 1 >= (int)sizeof s->num) return -1;
    s->num[s->nlen++] = (char)c;
    s->num[s->nlen] = 0;
    return number_feasible(s, s->want) ? 0 : -1;
}

static int start_key(ds_json_state *s) {
    ds_json_frame *f = top(s);
    if (!key_possible(f)) return -1;
    f->count++;
    s->mode = M_STRING, s->key = 1, s->sub = E_NONE, s->utf8 = 0, s->pos = 0;
    s->cand = f->node ? all_of(f->node->nprops) : 0;
    return 0;
}

static int enum_byte(ds_json_state *s, unsigned c);

/* the first byte of a value of schema s->want */
static int value(ds_json_state *s, unsigned c) {
    const ds_json_node *w = s->want;
    if (w && w->nany) { /* the alternative this byte starts (they start differently) */
        for (int k = 0; k < w->nany; k++)
            if (first_has(w->any[k]->first, c)) {
                s->want = w->any[k];
                return value(s, c);
            }
        return -1;
    }
    if (w && w->nenum) {
        const ds_json_frame *u = unique_frame(s, w);
        s->mode = M_ENUM, s->cand = all_of(w->nenum) & ~(u ? u->used : 0), s->pos = 0;
        return enum_byte(s, c);
    }
    const unsigned t = w ? w->types : 0;
#define TYPE_OK(bits) (!t || (t & (bits)))
    if (c == '{' && TYPE_OK(T_OBJ)) return push_open(s, '{', w);
    if (c == '[' && TYPE_OK(T_ARR)) return push_open(s, '[', w);
    if (c == '"' && TYPE_OK(T_STR)) {
        s->mode = M_STRING, s->key = 0, s->sub = E_NONE, s->utf8 = 0, s->slen = 0, s->hi_sur = 0;
        s->rq = w && w->rx ? ds_rx_start(w->rx) : 0;
        return 0;
    }
    if ((c == '-' || is_digit(c)) && TYPE_OK(T_NUM | T_INT)) {
        s->mode = M_NUMBER, s->is_int = t && !(t & T_NUM);
        s->sub = c == '-' ? N_MINUS : c == '0' ? N_ZERO : N_INT;
        s->nlen = 0;
        return w && w->nbound ? number_text(s, c) : 0;
    }
    static const char *const lits[3] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++)
        if (c == (unsigned char)lits[i][0] && TYPE_OK(i < 2 ? T_BOOL : T_NULL)) return s->mode = M_LITERAL, s->lit = lits[i] + 1, 0;
#undef TYPE_OK
    return -1;
}

/* a byte of UTF-8 text: 1 when it completes a character (its code point in s->cp), 0 when the character
 * goes on (s->utf8 bytes to come), -1 when invalid (an overlong form, a surrogate, past U+10FFFF) */
static int utf8_byte(ds_json_state *s, unsigned c) {
    if (s->utf8) {
        if (c < (s->u8lo ? s->u8lo : 0x80) || c > (s->u8hi ? s->u8hi : 0xBF)) return -1;
        s->utf8--, s->u8lo = s->u8hi = 0;
        s->cp = s->cp << 6 | (c & 0x3F);
        return !s->utf8;
    }
    if (c < 0x80) return s->cp = c, 1;
    if (c >= 0xC2 && c <= 0xDF) return s->utf8 = 1, s->cp = c & 0x1F, 0;
    if (c >= 0xE0 && c <= 0xEF)
        return s->utf8 = 2, s->cp = c & 0x0F, s->u8lo = c == 0xE0 ? 0xA0 : 0, s->u8hi = c == 0xED ? 0x9F : 0, 0;
    if (c >= 0xF0 && c <= 0xF4)
        return s->utf8 = 3, s->cp = c & 0x07, s->u8lo = c == 0xF0 ? 0x90 : 0, s->u8hi = c == 0xF4 ? 0x8F : 0, 0;
    return -1;
}

/* the code points a character begun in UTF-8 (s->utf8 bytes to come) can still be: [*lo, *hi] */
static void utf8_span(const ds_json_state *s, uint32_t *lo, uint32_t *hi) {
    const int r = 6 * (s->utf8 - 1);
    const uint32_t a = (s->u8lo ? s->u8lo : 0x80) & 0x3F, b = (s->u8hi ? s->u8hi : 0xBF) & 0x3F;
    *lo = (s->cp << 6 | a) << r;
    *hi = (s->cp << 6 | b) << r | ((1u << r) - 1);
}

/* a byte inside a string but its closing quote: 0, or -1 */
static int string_char(ds_json_state *s, unsigned c) {
    if (s->utf8) return utf8_byte(s, c) < 0 ? -1 : 0; /* inside a multi-byte character */
    switch (s->sub) {
    case E_BACKSLASH:
        if (c == 'u') return s->sub = E_HEX1, 0;
        if (!c || !strchr("\"\\/bfnrt", (int)c)) return -1;
        s->sub = E_NONE;
        return 0;
    case E_HEX1: case E_HEX2: case E_HEX3: case E_HEX4:
        if (!is_hex(c)) return -1;
        s->sub = s->sub == E_HEX4 ? E_NONE : (uint8_t)(s->sub + 1);
        return 0;
    default: break;
    }
    if (c == '\\') return s->sub = E_BACKSLASH, 0;
    if (c < 0x20 || c == '"') return -1;
    return utf8_byte(s, c) < 0 ? -1 : 0;
}

static int closes_string(const ds_json_state *s, unsigned c) { return c == '"' && !s->utf8 && s->sub == E_NONE; }

static unsigned hex_val(unsigned c) { return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10; }

/* a byte of a string value (not a key): a valid string byte, its characters held to the schema's
 * minLength / maxLength as Python counts them (an escape is one character; a high-surrogate \u escape
 * and the low-surrogate one right after it are one together) */
static int value_string_byte(ds_json_state *s, unsigned c) {
    const ds_json_node *w = s->want;
    if (closes_string(s, c)) return w && (int64_t)s->slen < w->min_len ? -1 : (value_done(s), 0);
    const uint8_t sub0 = s->sub, u0 = s->utf8;
    if (string_char(s, c)) return -1;
    int add;
    if (u0) add = 0;                                   /* a continuation byte */
    else if (sub0 == E_NONE) add = c != '\\';         /* an ASCII character or a lead byte; a backslash waits */
    else if (sub0 == E_BACKSLASH) add = c != 'u', s->hex = 0;
    else {                                             /* a \u escape's hex digit */
        s->hex = (uint16_t)(s->hex << 4 | hex_val(c));
        if (sub0 != E_HEX4) return 0;
        const unsigned v = s->hex;
        const int low = v >= 0xDC00 && v <= 0xDFFF, high = v >= 0xD800 && v <= 0xDBFF;
        add = !(low && s->hi_sur);
        s->hi_sur = (uint8_t)(add && high);
        goto count;
    }
    if (add) s->hi_sur = 0;
count:
    if (add && w && w->max_len >= 0 && (int64_t)s->slen + 1 > w->max_len) return -1;
    s->slen += (uint32_t)add;
    return 0;
}

/* a code point of a string held to a pattern: the DFA moves on, to a state that can still end a match of
 * an allowed length */
static int rx_char(ds_json_state *s, const ds_rx *rx, uint32_t c) {
    const int32_t t = ds_rx_step(rx, s->rq, c);
    if (t < 0 || !ds_rx_ok(rx, t, (int64_t)s->slen + 1)) return -1;
    s->rq = t, s->slen++;
    return 0;
}

/* a character not complete yet (UTF-8 bytes or an escape to come): 0 when one in [lo, hi] can still come */
static int rx_can(const ds_json_state *s, const ds_rx *rx, uint32_t lo, uint32_t hi) {
    return ds_rx_any(rx, s->rq, lo, hi, (int64_t)s->slen) ? 0 : -1;
}

/* a byte of a string value held to a pattern: each decoded character (UTF-8, or an escape) moves the
 * pattern's DFA; a character begun must be able to end as one the DFA takes; \u escapes of surrogates
 * are refused (ds_rx_any counts no surrogate; a character past U+FFFF is written as UTF-8) */
static int pattern_string_byte(ds_json_state *s, unsigned c) {
    const ds_rx *rx = s->want->rx;
    if (closes_string(s, c)) return ds_rx_accepts(rx, s->rq, (int64_t)s->slen) ? (value_done(s), 0) : -1;
    const uint8_t sub0 = s->sub, u0 = s->utf8;
    if (string_char(s, c)) return -1;
    if (u0 || (sub0 == E_NONE && c != '\\')) { /* text: a character complete, or one begun */
        if (!s->utf8) return rx_char(s, rx, s->cp);
        uint32_t lo, hi;
        utf8_span(s, &lo, &hi);
        return rx_can(s, rx, lo, hi);
    }
    if (sub0 == E_NONE) return rx_can(s, rx, 0, 0xFFFF); /* a backslash: an escape's character comes */
    if (sub0 == E_BACKSLASH) {
        if (c == 'u') return s->hex = 0, rx_can(s, rx, 0, 0xFFFF);
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        return rx_char(s, rx, (unsigned char)to[strchr(from, (int)c) - from]);
    }
    s->hex = (uint16_t)(s->hex << 4 | hex_val(c)); /* a \u escape's digit */
    if (sub0 != E_HEX4) {
        const int r = 4 * (E_HEX4 - sub0);
        return rx_can(s, rx, (uint32_t)s->hex << r, ((uint32_t)s->hex << r) | ((1u << r) - 1));
    }
    return rx_char(s, rx, s->hex); /* never a surrogate: the first three digits' checks leave none */
}

/* a byte of text held to a regex (the whole answer): UTF-8, each character moving the DFA; a final state
 * (nothing can follow) completes the text */
static int raw_byte(ds_json_state *s, unsigned c) {
    const ds_rx *rx = s->want->rx;
    const int r = utf8_byte(s, c);
    if (r < 0) return -1;
    if (!r) {
        uint32_t lo, hi;
        utf8_span(s, &lo, &hi);
        return ds_rx_any(rx, s->rq, lo, hi, 0) ? 0 : -1;
    }
    const int32_t t = ds_rx_step(rx, s->rq, s->cp);
    if (t < 0) return -1;
    s->rq = t;
    if (ds_rx_final(rx, t)) s->mode = M_DONE;
    return 0;
}

/* a key's byte: a valid string byte that keeps it one of the names not yet
 * given, or (keys beyond the properties allowed) any name but a given one */
static int key_byte(ds_json_state *s, unsigned c) {
    ds_json_frame *f = top(s);
    const ds_json_node *n = f->node;
    if (!closes_string(s, c)) {
        if (string_char(s, c)) return -1;
        if (n && n->nprops) {
            uint64_t keep = 0;
            for (int k = 0; k < n->nprops; k++)
                if ((s->cand & bit(k)) && s->pos < n->nlen[k] && (unsigned char)n->names[k][s->pos] == c) keep |= bit(k);
            s->cand = keep;
            s->pos++;
            if (!n->addl && !(keep & ~f->seen)) return -1;
        }
        return 0;
    }
    int idx = -1;
    for (int k = 0; n && k < n->nprops; k++)
        if ((s->cand & bit(k)) && n->nlen[k] == s->pos) idx = k;
    if (idx >= 0 && (f->seen & bit(idx))) return -1; /* a key given twice */
    if (idx < 0 && n && !n->addl) return -1;
    f->cur = (int8_t)idx;
    if (idx >= 0) f->seen |= bit(idx);
    s->want = idx >= 0 ? n->props[idx] : n ? n->addl_node : NULL;
    s->mode = M_COLON;
    return 0;
}

/* 1: c continues the number; 0: the number ended before c (c still to read); -1: invalid */
static int number_byte(ds_json_state *s, unsigned c) {
    const int d = is_digit(c);
    if (s->is_int && (c == '.' || c == 'e' || c == 'E')) return -1;
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

static int feed1(ds_json_state *s, unsigned c);

/* a byte of a value held to an enum: it continues a member; a member that
 * is a number ends at the first byte that does not continue it */
static int enum_byte(ds_json_state *s, unsigned c) {
    const ds_json_node *w = s->want;
    uint64_t keep = 0;
    for (int k = 0; k < w->nenum; k++)
        if ((s->cand & bit(k)) && s->pos < w->elen[k] && (unsigned char)w->enums[k][s->pos] == c) keep |= bit(k);
    ds_json_frame *u = unique_frame(s, w); /* uniqueItems: the member given is taken */
    if (!keep) {
        for (int k = 0; k < w->nenum; k++)
            if ((s->cand & bit(k)) && (w->enum_num & bit(k)) && w->elen[k] == s->pos) {
                if (u) u->used |= u->node->same[k];
                value_done(s);
                return feed1(s, c);
            }
        return -1;
    }
    s->cand = keep;
    s->pos++;
    for (int k = 0; k < w->nenum; k++) /* a string, literal or container member cannot go on once whole */
        if ((keep & bit(k)) && !(w->enum_num & bit(k)) && w->elen[k] == s->pos) {
            if (u) u->used |= u->node->same[k];
            value_done(s);
        }
    return 0;
}

/* a byte of a choice's literal text: it continues one of them; one complete, its object comes next */
static int alt_byte(ds_json_state *s, unsigned c) {
    const ds_json_node *r = s->want;
    uint64_t keep = 0;
    for (int k = 0; k < r->nalt; k++)
        if ((s->cand & bit(k)) && s->pos < r->alen[k] && (unsigned char)r->alts[k][s->pos] == c) keep |= bit(k);
    if (!keep) return -1;
    s->cand = keep;
    s->pos++;
    for (int k = 0; k < r->nalt; k++)
        if ((keep & bit(k)) && r->alen[k] == s->pos) s->mode = M_START, s->want = r->aroot[k];
    return 0;
}

static int feed1(ds_json_state *s, unsigned c) {
    if (s->mode == M_START && s->want && s->want->nalt) { /* a choice: its text comes first, at once */
        s->mode = M_ALT, s->cand = all_of(s->want->nalt), s->pos = 0;
        return alt_byte(s, c);
    }
    switch (s->mode) {
    case M_ALT: return alt_byte(s, c);
    case M_STRING:
        if (s->key) return key_byte(s, c);
        if (s->want && s->want->rx) return pattern_string_byte(s, c);
        return value_string_byte(s, c);
    case M_RAW: return raw_byte(s, c);
    case M_ENUM: return enum_byte(s, c);
    case M_LITERAL:
        if (c != (unsigned char)*s->lit) return -1;
        if (!*++s->lit) value_done(s);
        return 0;
    case M_NUMBER: {
        const ds_json_node *w = s->want;
        const int bounded = w && w->nbound;
        if (bounded && (c == 'e' || c == 'E')) return -1; /* no exponent under bounds */
        int r = number_byte(s, c);
        if (r) return r < 0 ? -1 : bounded ? number_text(s, c) : 0;
        if (bounded && (!in_bounds(w, strtod(s->num, NULL)) || (w->mult && fmod(strtod(s->num, NULL), (double)w->mult) != 0)))
            return -1;
        value_done(s); /* a number is always inside a container: c goes on from M_AFTER */
        break;
    }
    default: break;
    }
    if (is_ws(c)) {
        if (s->mode == M_DONE || s->ws == DS_JSON_MAX_WS) return -1;
        s->ws++;
        return 0;
    }
    s->ws = 0;
    switch (s->mode) {
    case M_START: return c == '{' ? value(s, c) : -1;
    case M_KEY_OR_CLOSE:
        if (c == '}') return can_close(top(s)) ? pop_close(s) : -1;
        return c == '"' ? start_key(s) : -1;
    case M_KEY: return c == '"' ? start_key(s) : -1;
    case M_COLON: if (c != ':') return -1; s->mode = M_VALUE; return 0;
    case M_VALUE_OR_CLOSE:
        if (c == ']') return items_close(top(s)) ? pop_close(s) : -1;
        if (!item_possible(top(s))) return -1;
        top(s)->count++;
        return value(s, c);
    case M_VALUE: return value(s, c);
    case M_AFTER: {
        ds_json_frame *f = top(s);
        if (f->kind == '{') {
            if (c == '}') return can_close(f) ? pop_close(s) : -1;
            if (c != ',' || !key_possible(f)) return -1;
            s->mode = M_KEY;
            return 0;
        }
        if (c == ']') return items_close(f) ? pop_close(s) : -1;
        if (c != ',' || !item_possible(f)) return -1;
        f->count++;
        s->mode = M_VALUE, s->want = f->node ? f->node->items : NULL;
        return 0;
    }
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
    uint8_t *pure;      /* 1: the token is string text (no quote, control character or unfinished escape or
                         * character), so inside a string's text it is allowed as it is */
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
    g->pure = ds_calloc((size_t)V, 1);
    for (int64_t i = 0; i < V; i++) {
        ds_json_state t;
        memset(&t, 0, sizeof t);
        t.mode = M_STRING, t.depth = 1; /* a value's text inside an array */
        t.stack[0].kind = '[';
        g->pure[i] = g->bytes[i] && !ds_json_state_feed(&t, g->bytes[i], g->len[i]) && t.mode == M_STRING && t.sub == E_NONE &&
                     !t.utf8;
    }
    g->neg = ds_malloc((size_t)V * sizeof(float)), g->one = ds_malloc((size_t)V * sizeof(float));
    g->zero = ds_calloc((size_t)V, sizeof(float));
    for (int64_t i = 0; i < V; i++) g->neg[i] = -INFINITY, g->one[i] = 1;
    return g;
}

int64_t ds_json_guide_vocab(const ds_json_guide *g, const float **pre, const float **rep, const float **post) {
    *pre = g->neg, *rep = g->one, *post = g->zero;
    return g->V;
}

/* the ids of first byte b allowed next from s (allowed = 1), or refused (0), into dst: their count.  A
 * byte the state refuses refuses its group at once; inside a string's text (text), a token that is text
 * itself (g->pure) and fits the room left (room, -1: no bound) is allowed without a trial */
static int64_t scan_group(const ds_json_guide *g, const ds_json_state *s, int b, int allowed, int text, int64_t room,
                          int32_t *dst) {
    const int64_t a = g->start[b], e = g->start[b + 1];
    if (a == e) return 0;
    ds_json_state t;
    const char c = (char)b;
    copy_state(&t, s);
    if (ds_json_state_feed(&t, &c, 1)) { /* the first byte already fails */
        if (allowed) return 0;
        memcpy(dst, g->by_first + a, (size_t)(e - a) * sizeof(int32_t));
        return e - a;
    }
    int64_t m = 0;
    for (int64_t k = a; k < e; k++) {
        const int32_t id = g->by_first[k];
        int ok = text && g->pure[id] && (room < 0 || (int64_t)g->len[id] <= room);
        if (!ok) {
            ds_json_state u;
            copy_state(&u, &t);
            ok = !ds_json_state_feed(&u, g->bytes[id] + 1, g->len[id] - 1);
        }
        if (ok == allowed) dst[m++] = id;
    }
    return m;
}

/* the ids allowed next from s (allowed = 1), or refused (0, with the ids never allowed), into out; their
 * count, by first byte, then id.  With threads, the groups are tried in parallel, each into its own
 * stretch of out (its ids' places in by_first, after the never-allowed ones: out holds V), then moved
 * down in order: the same list. */
static int64_t scan(const ds_json_guide *g, const ds_json_state *s, int allowed, int32_t *out) {
    int64_t n = 0;
    if (!allowed) {
        memcpy(out, g->never, (size_t)g->nnever * sizeof(int32_t));
        n = g->nnever;
    }
    const int text = s->mode == M_STRING && !s->key && s->sub == E_NONE && !s->utf8 && !(s->want && s->want->rx);
    /* characters a string may still take (-1: no bound); a plain-text token adds at most its length */
    const int64_t room = text && s->want && s->want->max_len >= 0 ? s->want->max_len - (int64_t)s->slen : -1;
    if (omp_get_max_threads() < 2 || g->start[256] < 20000) {
        for (int b = 0; b < 256; b++) n += scan_group(g, s, b, allowed, text, room, out + n);
        return n;
    }
    int32_t *grp = out + n; /* group b's stretch: grp + start[b], and it only moves down (n ≤ start[b] then) */
    int64_t cnt[256];
#pragma omp parallel for schedule(dynamic, 8)
    for (int b = 0; b < 256; b++) cnt[b] = scan_group(g, s, b, allowed, text, room, grp + g->start[b]);
    for (int b = 0; b < 256; b++) {
        memmove(out + n, grp + g->start[b], (size_t)cnt[b] * sizeof(int32_t));
        n += cnt[b];
    }
    return n;
}

int64_t ds_json_guide_refused(const ds_json_guide *g, const ds_json_state *s, const int32_t *stop, int n, int32_t *out) {
    if (s->mode != M_DONE) {
        int64_t nd = scan(g, s, 0, out);
        if (nd < g->V) { /* something is allowed; where the text may also end here (a regex), so are the stop ids */
            if (ds_json_state_can_stop(s)) {
                int64_t m = 0;
                for (int64_t i = 0; i < nd; i++) {
                    int keep = 1;
                    for (int k = 0; k < n; k++) keep &= stop[k] != out[i];
                    if (keep) out[m++] = out[i];
                }
                nd = m;
            }
            return nd;
        }
    }
    int64_t nd = 0; /* complete, or a dead end: the stop ids only */
    for (int64_t i = 0; i < g->V; i++) {
        int keep = 0;
        for (int k = 0; k < n; k++) keep |= stop[k] == i;
        if (!keep) out[nd++] = (int32_t)i;
    }
    return nd;
}

void ds_json_guide_free(ds_json_guide *g) {
    if (!g) return;
    free(g->bytes), free(g->len), free(g->neg), free(g->one), free(g->zero), free(g->by_first), free(g->never), free(g->pure);
    free(g);
}

const char *ds_json_guide_token(const ds_json_guide *g, int32_t id, size_t *len) {
    if (id < 0 || id >= g->V || !g->bytes[id]) return NULL;
    *len = g->len[id];
    return g->bytes[id];
}

int64_t ds_json_guide_allowed(const ds_json_guide *g, const ds_json_state *s, int32_t *out) {
    return s->mode == M_DONE ? 0 : scan(g, s, 1, out);
}
