/*
 * rx.c — a regular expression (Python's re syntax, the subset rx.h lists) as
 * a DFA over code points: parsed into a tree, built into a Thompson NFA,
 * determinized over the code-point intervals its edges split the range into,
 * and pruned to the states from which a match can still end.  An optional
 * length table (bit k of a state: a match ends after exactly k more code
 * points) holds matches to minLength / maxLength.
 */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "tokenizer/rx.h"

#define CP_MAX 0x10FFFFu
#define MAX_NFA 100000
#define MAX_REPEAT 1000
#define MAX_NEST 100

typedef struct {
    uint32_t lo, hi;
} rng;
typedef struct {
    rng *r;
    int n, cap;
} rset;

static void rs_add(rset *s, uint32_t lo, uint32_t hi) {
    if (s->n == s->cap) s->r = ds_realloc(s->r, (size_t)(s->cap = s->cap ? 2 * s->cap : 8) * sizeof *s->r);
    s->r[s->n++] = (rng){lo, hi};
}
static int rng_cmp(const void *a, const void *b) {
    const rng *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}
/* sorted, disjoint, adjacent ranges merged */
static void rs_norm(rset *s) {
    if (s->n < 2) return;
    qsort(s->r, (size_t)s->n, sizeof *s->r, rng_cmp);
    int m = 0;
    for (int i = 1; i < s->n; i++) {
        if (s->r[i].lo <= s->r[m].hi + 1) {
            if (s->r[i].hi > s->r[m].hi) s->r[m].hi = s->r[i].hi;
        } else {
            s->r[++m] = s->r[i];
        }
    }
    s->n = m + 1;
}
/* the complement over [0, CP_MAX] of a normalized set */
static void rs_neg(rset *s) {
    rset o = {0};
    uint32_t at = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->r[i].lo > at) rs_add(&o, at, s->r[i].lo - 1);
        at = s->r[i].hi + 1;
    }
    if (at <= CP_MAX) rs_add(&o, at, CP_MAX);
    free(s->r);
    *s = o;
}

/* ---- parsing into a tree ------------------------------------------------------------------ */
enum { A_SET, A_CAT, A_ALT, A_REP, A_EMPTY };
typedef struct {
    int type, a, b, set, min, max; /* max -1: no bound */
    int univ;                      /* a set: the tail any-character loop of search mode (after it, anything matches) */
} anode;

typedef struct {
    const char *pat, *p;
    anode *n;
    int nn, ncap;
    rset *sets;
    int ns, scap;
    int mode, depth, failed;
} parser;

static int fail(parser *P, const char *msg) {
    if (!P->failed) ds_err("regex: %s at offset %d", msg, (int)(P->p - P->pat));
    P->failed = 1;
    return -1;
}

static int node(parser *P, int type, int a, int b) {
    if (P->nn == P->ncap) P->n = ds_realloc(P->n, (size_t)(P->ncap = P->ncap ? 2 * P->ncap : 32) * sizeof *P->n);
    P->n[P->nn] = (anode){type, a, b, -1, 0, 0, 0};
    return P->nn++;
}
static int new_set(parser *P, rset *s) {
    if (P->ns == P->scap) P->sets = ds_realloc(P->sets, (size_t)(P->scap = P->scap ? 2 * P->scap : 16) * sizeof *P->sets);
    rs_norm(s);
    P->sets[P->ns] = *s;
    const int k = node(P, A_SET, -1, -1);
    P->n[k].set = P->ns++;
    return k;
}
static int set_of(parser *P, uint32_t lo, uint32_t hi) {
    rset s = {0};
    rs_add(&s, lo, hi);
    return new_set(P, &s);
}
static int cat(parser *P, int a, int b) {
    if (P->n[a].type == A_EMPTY) return b;
    if (P->n[b].type == A_EMPTY) return a;
    return node(P, A_CAT, a, b);
}

/* one UTF-8 character of the pattern */
static int utf8_char(parser *P, uint32_t *out) {
    const unsigned char *s = (const unsigned char *)P->p;
    uint32_t c = s[0];
    int n = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : -1;
    if (n < 0) return fail(P, "invalid UTF-8");
    if (n) c &= 0x3F >> n;
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80) return fail(P, "invalid UTF-8");
        c = c << 6 | (s[i] & 0x3F);
    }
    if ((n == 2 && c < 0x800) || (n == 3 && (c < 0x10000 || c > CP_MAX)) || (c >= 0xD800 && c <= 0xDFFF))
        return fail(P, "invalid UTF-8");
    P->p += n + 1;
    *out = c;
    return 0;
}

static int hexn(parser *P, int n, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        const char c = P->p[i];
        const int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
        if (d < 0) return fail(P, "incomplete hex escape");
        v = v << 4 | (uint32_t)d;
    }
    if (v > CP_MAX) return fail(P, "escape past U+10FFFF");
    P->p += n;
    *out = v;
    return 0;
}

static const uint32_t SPACE[][2] = {{0x09, 0x0D}, {0x1C, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680},
                                    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}};

/* a shorthand class into s: exact for \s \S; for \d \w their ASCII members, \D \W the ASCII
 * characters outside them; over (inside a negated class) adds every non-ASCII character to \d \w \D \W,
 * so that what the complement keeps is never more than Python's */
static void shorthand(rset *s, char k, int over) {
    rset t = {0};
    const char l = (char)(k | 0x20);
    if (l == 's') {
        for (size_t i = 0; i < sizeof SPACE / sizeof SPACE[0]; i++) rs_add(&t, SPACE[i][0], SPACE[i][1]);
    } else {
        rs_add(&t, '0', '9');
        if (l == 'w') rs_add(&t, 'A', 'Z'), rs_add(&t, 'a', 'z'), rs_add(&t, '_', '_');
    }
    rs_norm(&t);
    if (k != l) { /* \D \W \S */
        rs_neg(&t);
        if (l != 's') { /* the ASCII part */
            int m = 0;
            for (int i = 0; i < t.n; i++)
                if (t.r[i].lo < 0x80) t.r[m] = t.r[i], t.r[m].hi = t.r[m].hi < 0x7F ? t.r[m].hi : 0x7F, m++;
            t.n = m;
        }
    }
    if (over && l != 's') rs_add(&t, 0x80, CP_MAX);
    for (int i = 0; i < t.n; i++) rs_add(s, t.r[i].lo, t.r[i].hi);
    free(t.r);
}

/* after a backslash: a shorthand class (into s, returns 1) or one code point (into *c, returns 0) */
static int escape(parser *P, rset *s, uint32_t *c, int in_class, int over) {
    const char e = *P->p;
    if (!e) return fail(P, "a pattern ends in a backslash");
    if (strchr("dDwWsS", e)) {
        P->p++;
        shorthand(s, e, over);
        return 1;
    }
    if (e >= '0' && e <= '9') return fail(P, "backreferences and octal escapes are not supported");
    if (e == 'b' && in_class) return P->p++, *c = 8, 0;
    if (strchr("bBAZ", e)) return fail(P, "\\b, \\B, \\A and \\Z are not supported");
    static const char from[] = "tnrfva", to[] = "\t\n\r\f\v\a";
    const char *k = strchr(from, e);
    if (k) return P->p++, *c = (unsigned char)to[k - from], 0;
    if (e == 'x' || e == 'u' || e == 'U') return P->p++, hexn(P, e == 'x' ? 2 : e == 'u' ? 4 : 8, c) ? -1 : 0;
    if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) return fail(P, "bad escape");
    return utf8_char(P, c) ? -1 : 0; /* an escaped non-alphanumeric character is itself */
}

static int parse_class(parser *P) {
    const int neg = *P->p == '^';
    if (neg) P->p++;
    rset s = {0};
    int first = 1;
    while (first || *P->p != ']') {
        if (!*P->p) {
            free(s.r);
            return fail(P, "unterminated character set");
        }
        first = 0;
        uint32_t lo, hi;
        int r = 0;
        if (*P->p == '\\') {
            P->p++;
            r = escape(P, &s, &lo, 1, neg);
        } else {
            r = utf8_char(P, &lo);
        }
        if (r < 0) {
            free(s.r);
            return -1;
        }
        if (r == 1) { /* a shorthand: no range starts at it */
            if (P->p[0] == '-' && P->p[1] && P->p[1] != ']') {
                free(s.r);
                return fail(P, "bad character range");
            }
            continue;
        }
        hi = lo;
        if (P->p[0] == '-' && P->p[1] && P->p[1] != ']') {
            P->p++;
            if (*P->p == '\\') {
                P->p++;
                r = escape(P, &s, &hi, 1, neg);
            } else {
                r = utf8_char(P, &hi);
            }
            if (r != 0 || hi < lo) {
                free(s.r);
                return r < 0 ? -1 : fail(P, "bad character range");
            }
        }
        rs_add(&s, lo, hi);
    }
    P->p++;
    rs_norm(&s);
    if (neg) rs_neg(&s);
    return new_set(P, &s);
}

static int parse_alt(parser *P, int top);

static int parse_group(parser *P) {
    if (++P->depth > MAX_NEST) return fail(P, "groups nest too deep");
    if (*P->p == '?') {
        const char *q = P->p + 1;
        if (*q == ':') {
            P->p += 2;
        } else if ((*q == 'P' && q[1] == '<') || (*q == '<' && q[1] != '=' && q[1] != '!')) { /* a named group */
            const char *e = strchr(q, '>');
            if (!e) return fail(P, "unterminated group name");
            P->p = e + 1;
        } else if (*q == '=' || *q == '!' || *q == '<') {
            return fail(P, "lookarounds are not supported");
        } else if (*q == 'P') {
            return fail(P, "backreferences are not supported");
        } else {
            return fail(P, "inline flags and other (?...) groups are not supported");
        }
    }
    const int a = parse_alt(P, 0);
    if (a < 0) return -1;
    if (*P->p != ')') return fail(P, "missing ), unterminated subpattern");
    P->p++;
    P->depth--;
    return a;
}

/* "{n}", "{n,}", "{,m}", "{n,m}", "{,}" at p (Python's: anything else is a literal "{"): its length, or 0 */
static int brace(const char *p, int *mn, int *mx) {
    const char *q = p + 1;
    long a = -1, b = -1;
    if (*q >= '0' && *q <= '9') a = strtol(q, (char **)&q, 10);
    int comma = *q == ',';
    if (comma) {
        q++;
        if (*q >= '0' && *q <= '9') b = strtol(q, (char **)&q, 10);
    }
    if (*q != '}' || (a < 0 && !comma)) return 0;
    *mn = a < 0 ? 0 : a > 1000000 ? 1000000 : (int)a;
    *mx = !comma ? *mn : b < 0 ? -1 : b > 1000000 ? 1000000 : (int)b;
    return (int)(q + 1 - p);
}

static int parse_atom(parser *P) {
    const char c = *P->p;
    int mn, mx;
    if (c == '(') return P->p++, parse_group(P);
    if (c == '[') return P->p++, parse_class(P);
    if (c == '.') {
        P->p++;
        rset s = {0};
        rs_add(&s, 0, '\n' - 1), rs_add(&s, '\n' + 1, CP_MAX);
        return new_set(P, &s);
    }
    if (c == '*' || c == '+' || c == '?' || (c == '{' && brace(P->p, &mn, &mx))) return fail(P, "nothing to repeat");
    uint32_t cp;
    if (c == '\\') {
        P->p++;
        rset s = {0};
        const int r = escape(P, &s, &cp, 0, 0);
        if (r < 0) return free(s.r), -1;
        if (r == 1) return new_set(P, &s);
    } else if (utf8_char(P, &cp)) {
        return -1;
    }
    return set_of(P, cp, cp);
}

static int parse_quant(parser *P, int a) {
    int mn, mx, k;
    const char c = *P->p;
    if (c == '*') mn = 0, mx = -1, k = 1;
    else if (c == '+') mn = 1, mx = -1, k = 1;
    else if (c == '?') mn = 0, mx = 1, k = 1;
    else if (c != '{' || !(k = brace(P->p, &mn, &mx))) return a;
    P->p += k;
    if (mx >= 0 && mx < mn) return fail(P, "min repeat greater than max repeat");
    if (mn > MAX_REPEAT || mx > MAX_REPEAT) return fail(P, "repeat counts above 1000 are not supported");
    if (*P->p == '?') P->p++; /* lazy: the same language */
    else if (*P->p == '+') return fail(P, "possessive quantifiers are not supported");
    if (*P->p == '*' || *P->p == '+' || *P->p == '?' || (*P->p == '{' && brace(P->p, &k, &k))) return fail(P, "multiple repeat");
    const int r = node(P, A_REP, a, -1);
    P->n[r].min = mn, P->n[r].max = mx;
    return r;
}

/* one alternative; at the top level a leading "^" and a trailing "$" are its anchors */
static int parse_cat(parser *P, int top, int *a0, int *a1) {
    int x = node(P, A_EMPTY, -1, -1);
    *a0 = *a1 = 0;
    if (top && *P->p == '^') P->p++, *a0 = 1;
    while (*P->p && *P->p != '|' && *P->p != ')') {
        if (*P->p == '$' && top && (!P->p[1] || P->p[1] == '|')) {
            P->p++, *a1 = 1;
            break;
        }
        if (*P->p == '^' || *P->p == '$') return fail(P, "'^' and '$' are supported only at the start and end of the pattern");
        int a = parse_atom(P);
        if (a >= 0) a = parse_quant(P, a);
        if (a < 0) return -1;
        x = cat(P, x, a);
    }
    return x;
}

/* wrap an alternative as its anchors and the mode say (search: what comes before / after) */
static int anchor(parser *P, int x, int a0, int a1) {
    if (P->mode == DS_RX_FULL) return x;
    if (!a0) {
        const int any = node(P, A_REP, set_of(P, 0, CP_MAX), -1);
        P->n[any].min = 0, P->n[any].max = -1;
        x = cat(P, any, x);
    }
    const int tail = node(P, A_REP, a1 ? set_of(P, '\n', '\n') : set_of(P, 0, CP_MAX), -1);
    P->n[P->n[tail].a].univ = !a1;
    P->n[tail].min = 0, P->n[tail].max = a1 ? 1 : -1; /* "$" also matches before a final newline */
    return cat(P, x, tail);
}

static int parse_alt(parser *P, int top) {
    int a0, a1;
    int x = parse_cat(P, top, &a0, &a1);
    if (x < 0) return -1;
    if (top) x = anchor(P, x, a0, a1);
    while (*P->p == '|') {
        P->p++;
        int y = parse_cat(P, top, &a0, &a1);
        if (y < 0) return -1;
        if (top) y = anchor(P, y, a0, a1);
        x = node(P, A_ALT, x, y);
    }
    return x;
}

/* ---- the NFA ------------------------------------------------------------------------------ */
typedef struct {
    int set, o1, o2; /* set ≥ 0: an edge on the set to o1; -1: ε edges (o1, o2; -1 none); -2: the match */
    int univ;        /* the edge of a tail any-character loop: a closure holding it matches whatever follows */
} nst;
typedef struct {
    nst *s;
    int n, cap, failed, match;
} nfa;
typedef struct {
    int s, e; /* start; the end, an ε state whose o1 is still open */
} frag;

static int nnew(nfa *N, int set, int o1) {
    if (N->n >= MAX_NFA) {
        if (!N->failed) ds_err("regex: the pattern is too large (more than %d NFA states)", MAX_NFA);
        N->failed = 1;
        N->n = 0; /* keep building into the first states; the result is thrown away */
    }
    if (N->n == N->cap) N->s = ds_realloc(N->s, (size_t)(N->cap = N->cap ? 2 * N->cap : 64) * sizeof *N->s);
    N->s[N->n] = (nst){set, o1, -1, 0};
    return N->n++;
}

static frag build(nfa *N, const parser *P, int k) {
    const anode *a = &P->n[k];
    frag f, g;
    switch (a->type) {
    case A_SET: {
        const int e = nnew(N, -1, -1), s = nnew(N, a->set, e);
        N->s[s].univ = a->univ;
        return (frag){s, e};
    }
    case A_CAT:
        f = build(N, P, a->a), g = build(N, P, a->b);
        N->s[f.e].o1 = g.s;
        return (frag){f.s, g.e};
    case A_ALT: {
        f = build(N, P, a->a), g = build(N, P, a->b);
        const int s = nnew(N, -1, f.s), e = nnew(N, -1, -1);
        N->s[s].o2 = g.s;
        N->s[f.e].o1 = e, N->s[g.e].o1 = e;
        return (frag){s, e};
    }
    case A_REP: {
        const int e0 = nnew(N, -1, -1);
        f = (frag){e0, e0};
        for (int i = 0; i < a->min && !N->failed; i++) {
            g = build(N, P, a->a);
            N->s[f.e].o1 = g.s, f.e = g.e;
        }
        if (a->max < 0) {
            const int l = nnew(N, -1, -1);
            g = build(N, P, a->a);
            const int e = nnew(N, -1, -1);
            N->s[l].o1 = g.s, N->s[l].o2 = e, N->s[g.e].o1 = l;
            N->s[f.e].o1 = l, f.e = e;
        }
        for (int i = a->min; i < a->max && !N->failed; i++) {
            g = build(N, P, a->a);
            const int s = nnew(N, -1, g.s), e = nnew(N, -1, -1);
            N->s[s].o2 = e, N->s[g.e].o1 = e;
            N->s[f.e].o1 = s, f.e = e;
        }
        return f;
    }
    default: {
        const int e = nnew(N, -1, -1);
        return (frag){e, e};
    }
    }
}

/* ---- the DFA ------------------------------------------------------------------------------ */
struct ds_rx {
    int32_t n, start;
    int32_t *ts;   /* state q's transitions are [ts[q], ts[q + 1]) */
    uint32_t *lo, *hi;
    int32_t *to;
    uint8_t *acc;
    /* the length table (lmin / lmax -1: none; K 0 and len NULL when neither) */
    int64_t lmin, lmax, K, W;
    uint64_t *len;
};

/* the subset construction's work space */
typedef struct {
    const nfa *N;
    int *stack, *seen, *buf; /* the closure being taken, and the states it visited (their marks cleared after) */
    uint8_t *mark;
    int *pool;               /* the DFA states' closures, one after another */
    size_t pn, pcap;
    size_t *koff;            /* DFA state k's closure: pool[koff[k] .. koff[k] + klen[k]) */
    int *klen, nk;
    int32_t *table;          /* open addressing: closure -> DFA state */
    int hsize;
} dctx;

static int int_cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* the ε-closure of the n states v into D->buf (the edge and match states, sorted): their count */
static int closure(dctx *D, const int *v, int n) {
    const nfa *N = D->N;
    int sp = 0, m = 0, ns = 0;
    for (int i = 0; i < n; i++)
        if (!D->mark[v[i]]) D->mark[v[i]] = 1, D->stack[sp++] = D->seen[ns++] = v[i];
    while (sp) {
        const int k = D->stack[--sp];
        const nst *s = &N->s[k];
        if (s->set != -1) {
            D->buf[m++] = k;
            continue;
        }
        if (s->o1 >= 0 && !D->mark[s->o1]) D->mark[s->o1] = 1, D->stack[sp++] = D->seen[ns++] = s->o1;
        if (s->o2 >= 0 && !D->mark[s->o2]) D->mark[s->o2] = 1, D->stack[sp++] = D->seen[ns++] = s->o2;
    }
    for (int i = 0; i < ns; i++) D->mark[D->seen[i]] = 0;
    int u = -1;
    for (int i = 0; i < m; i++)
        if (N->s[D->buf[i]].univ && (u < 0 || D->buf[i] < u)) u = D->buf[i];
    if (u >= 0) { /* everything matches from here: one state for all such closures, whatever else they hold */
        D->buf[0] = u < N->match ? u : N->match, D->buf[1] = u < N->match ? N->match : u;
        return 2;
    }
    qsort(D->buf, (size_t)m, sizeof *D->buf, int_cmp);
    return m;
}

/* the DFA state of the closure in D->buf (m states): found or added; -1 when there would be too many */
static int intern(dctx *D, int m) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < m; i++) h = (h ^ (uint64_t)D->buf[i]) * 1099511628211ULL;
    int slot = (int)(h % (uint64_t)D->hsize);
    for (; D->table[slot] >= 0; slot = (slot + 1) % D->hsize) {
        const int k = D->table[slot];
        if (D->klen[k] == m && !memcmp(D->pool + D->koff[k], D->buf, (size_t)m * sizeof(int))) return k;
    }
    if (D->nk == DS_RX_MAX_STATES) return -1;
    while (D->pn + (size_t)m > D->pcap) D->pool = ds_realloc(D->pool, (D->pcap *= 2) * sizeof *D->pool);
    memcpy(D->pool + D->pn, D->buf, (size_t)m * sizeof(int));
    D->koff[D->nk] = D->pn, D->klen[D->nk] = m;
    D->pn += (size_t)m;
    return D->table[slot] = D->nk++;
}

typedef struct {
    uint32_t lo, hi;
    int to;
} edge;
static int u32_cmp(const void *a, const void *b) {
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* add transition [lo, hi] -> to of the state being filled (from transition index first on), merged
 * with the one before when they meet */
static void add_trans(ds_rx *r, size_t *tn, size_t *tcap, size_t first, uint32_t lo, uint32_t hi, int to) {
    if (*tn > first && r->to[*tn - 1] == to && r->hi[*tn - 1] + 1 == lo) {
        r->hi[*tn - 1] = hi;
        return;
    }
    if (*tn == *tcap) {
        *tcap *= 2;
        r->lo = ds_realloc(r->lo, *tcap * sizeof *r->lo), r->hi = ds_realloc(r->hi, *tcap * sizeof *r->hi);
        r->to = ds_realloc(r->to, *tcap * sizeof *r->to);
    }
    r->lo[*tn] = lo, r->hi[*tn] = hi, r->to[*tn] = to, (*tn)++;
}

/* keep only the transitions into states from which a match can end; 0 when the start is one */
static int prune(ds_rx *r) {
    uint8_t *live = ds_calloc((size_t)r->n, 1);
    for (int q = 0; q < r->n; q++) live[q] = r->acc[q];
    for (int changed = 1; changed;) {
        changed = 0;
        for (int q = r->n - 1; q >= 0; q--)
            for (int32_t t = r->ts[q]; !live[q] && t < r->ts[q + 1]; t++)
                if (live[r->to[t]]) live[q] = 1, changed = 1;
    }
    size_t w = 0;
    for (int q = 0; q < r->n; q++) {
        const int32_t a = r->ts[q], e = r->ts[q + 1];
        r->ts[q] = (int32_t)w;
        for (int32_t t = a; t < e; t++)
            if (live[r->to[t]]) r->lo[w] = r->lo[t], r->hi[w] = r->hi[t], r->to[w] = r->to[t], w++;
    }
    r->ts[r->n] = (int32_t)w;
    const int ok = live[r->start];
    free(live);
    return ok ? 0 : ds_err("regex: the pattern matches no text");
}

/* the subset construction: DFA states in the order they are found, each state's transitions over
 * the code-point intervals that its NFA edges' bounds cut [0, CP_MAX] into */
static ds_rx *determinize(const parser *P, const nfa *N, int start) {
    dctx D = {.N = N, .pcap = 256, .hsize = 4 * DS_RX_MAX_STATES};
    D.stack = ds_malloc((size_t)N->n * sizeof(int)), D.seen = ds_malloc((size_t)N->n * sizeof(int));
    D.buf = ds_malloc((size_t)N->n * sizeof(int));
    D.mark = ds_calloc((size_t)N->n, 1);
    D.pool = ds_malloc(D.pcap * sizeof(int));
    D.koff = ds_malloc(DS_RX_MAX_STATES * sizeof *D.koff), D.klen = ds_malloc(DS_RX_MAX_STATES * sizeof(int));
    D.table = ds_malloc((size_t)D.hsize * sizeof(int32_t));
    for (int i = 0; i < D.hsize; i++) D.table[i] = -1;
    ds_rx *r = ds_calloc(1, sizeof *r);
    r->lmin = r->lmax = -1;
    size_t tn = 0, tcap = 64;
    r->lo = ds_malloc(tcap * sizeof *r->lo), r->hi = ds_malloc(tcap * sizeof *r->hi), r->to = ds_malloc(tcap * sizeof *r->to);
    r->ts = ds_malloc((DS_RX_MAX_STATES + 1) * sizeof *r->ts);
    r->acc = ds_calloc(DS_RX_MAX_STATES, 1);
    int ecap = 64, *tgt = ds_malloc((size_t)N->n * sizeof *tgt);
    edge *ed = ds_malloc((size_t)ecap * sizeof *ed);
    uint32_t *bound = ds_malloc((size_t)ecap * 2 * sizeof *bound);
    r->start = intern(&D, closure(&D, &start, 1));
    int err = 0;
    for (int q = 0; q < D.nk && !err; q++) {
        r->ts[q] = (int32_t)tn;
        int ne = 0;
        for (int i = 0; i < D.klen[q]; i++) {
            const nst *s = &N->s[D.pool[D.koff[q] + (size_t)i]];
            if (s->set == -2) {
                r->acc[q] = 1;
                continue;
            }
            const rset *cs = &P->sets[s->set];
            for (int j = 0; j < cs->n; j++) {
                if (ne == ecap) {
                    ecap *= 2;
                    ed = ds_realloc(ed, (size_t)ecap * sizeof *ed), bound = ds_realloc(bound, (size_t)ecap * 2 * sizeof *bound);
                }
                ed[ne++] = (edge){cs->r[j].lo, cs->r[j].hi, s->o1};
            }
        }
        int nb = 0;
        for (int i = 0; i < ne; i++) bound[nb++] = ed[i].lo, bound[nb++] = ed[i].hi + 1;
        qsort(bound, (size_t)nb, sizeof *bound, u32_cmp);
        for (int b = 0; b + 1 < nb && !err; b++) {
            if (bound[b] == bound[b + 1]) continue;
            const uint32_t lo = bound[b], hi = bound[b + 1] - 1;
            int nt = 0;
            for (int i = 0; i < ne; i++)
                if (ed[i].lo <= lo && lo <= ed[i].hi) tgt[nt++] = ed[i].to;
            if (!nt) continue;
            const int id = intern(&D, closure(&D, tgt, nt));
            if (id < 0) err = ds_err("regex: the pattern needs more than %d DFA states", DS_RX_MAX_STATES);
            else add_trans(r, &tn, &tcap, (size_t)r->ts[q], lo, hi, id);
        }
    }
    r->n = D.nk;
    r->ts[D.nk] = (int32_t)tn;
    free(D.stack), free(D.seen), free(D.buf), free(D.mark), free(D.pool), free(D.koff), free(D.klen), free(D.table);
    free(tgt), free(ed), free(bound);
    if (err || prune(r)) {
        ds_rx_free(r);
        return NULL;
    }
    return r;
}

ds_rx *ds_rx_compile(const char *pattern, int mode) {
    parser P = {.pat = pattern, .p = pattern, .mode = mode};
    int root = parse_alt(&P, 1);
    if (root >= 0 && *P.p) root = fail(&P, "unbalanced parenthesis");
    nfa N = {0};
    ds_rx *r = NULL;
    if (root >= 0) {
        const frag f = build(&N, &P, root);
        N.s[f.e].set = -2; /* the match */
        N.match = f.e;
        if (!N.failed) r = determinize(&P, &N, f.s);
    }
    for (int i = 0; i < P.ns; i++) free(P.sets[i].r);
    free(P.sets), free(P.n), free(N.s);
    return r;
}

void ds_rx_free(ds_rx *r) {
    if (!r) return;
    free(r->ts), free(r->lo), free(r->hi), free(r->to), free(r->acc), free(r->len);
    free(r);
}

int32_t ds_rx_start(const ds_rx *r) { return r->start; }

int32_t ds_rx_step(const ds_rx *r, int32_t q, uint32_t c) {
    int32_t a = r->ts[q], b = r->ts[q + 1];
    while (a < b) { /* the first transition with hi ≥ c */
        const int32_t m = a + (b - a) / 2;
        if (r->hi[m] < c) a = m + 1;
        else b = m;
    }
    return a < r->ts[q + 1] && r->lo[a] <= c ? r->to[a] : -1;
}

int ds_rx_final(const ds_rx *r, int32_t q) { return r->ts[q] == r->ts[q + 1]; }

int ds_rx_accepts(const ds_rx *r, int32_t q, int64_t n) {
    return r->acc[q] && (r->lmin < 0 || n >= r->lmin) && (r->lmax < 0 || n <= r->lmax);
}

int ds_rx_ok(const ds_rx *r, int32_t q, int64_t n) {
    if (!r->len) return 1; /* every state kept can reach a match */
    int64_t a = r->lmin > n ? r->lmin - n : 0, b = r->lmax >= 0 ? r->lmax - n : a + r->n;
    if (b > r->K) b = r->K;
    const uint64_t *v = r->len + (size_t)q * (size_t)r->W;
    for (int64_t k = a; k <= b; k++) {
        if (!(k & 63) && k + 63 <= b) { /* a whole word */
            if (v[k >> 6]) return 1;
            k += 63;
            continue;
        }
        if (v[k >> 6] >> (k & 63) & 1) return 1;
    }
    return 0;
}

int ds_rx_any(const ds_rx *r, int32_t q, uint32_t lo, uint32_t hi, int64_t n) {
    for (int32_t t = r->ts[q]; t < r->ts[q + 1] && r->lo[t] <= hi; t++) {
        const uint32_t a = r->lo[t] > lo ? r->lo[t] : lo, b = r->hi[t] < hi ? r->hi[t] : hi;
        if (a > b || (a >= 0xD800 && b <= 0xDFFF)) continue; /* no overlap, or surrogates only */
        if (ds_rx_ok(r, r->to[t], n + 1)) return 1;
    }
    return 0;
}

int ds_rx_lengths(ds_rx *r, int64_t lo, int64_t hi) {
    free(r->len), r->len = NULL;
    r->lmin = lo, r->lmax = hi;
    if (lo < 0 && hi < 0) return 0;
    const int64_t K = hi >= 0 ? hi : lo + r->n, W = (K + 64) / 64, T = r->ts[r->n];
    if ((double)r->n * (double)W > (1 << 17) || (double)K * (double)(T + r->n) > 1e8)
        return ds_err("regex: a pattern of %d states with a length bound of %lld needs too large a table", r->n,
                      (long long)K);
    r->K = K, r->W = W;
    r->len = ds_calloc((size_t)(r->n * W), sizeof *r->len);
    /* bit k of state q: a match ends after exactly k more code points */
    for (int q = 0; q < r->n; q++) r->len[(size_t)q * (size_t)W] = r->acc[q];
    for (int64_t k = 1; k <= K; k++)
        for (int q = 0; q < r->n; q++) {
            uint64_t *v = r->len + (size_t)q * (size_t)W;
            for (int32_t t = r->ts[q]; t < r->ts[q + 1]; t++)
                if (r->len[(size_t)r->to[t] * (size_t)W + (size_t)((k - 1) >> 6)] >> ((k - 1) & 63) & 1) {
                    v[k >> 6] |= UINT64_C(1) << (k & 63);
                    break;
                }
        }
    if (!ds_rx_ok(r, r->start, 0))
        return hi < 0 ? ds_err("regex: no text the pattern matches has %lld characters or more", (long long)lo)
                      : ds_err("regex: no text the pattern matches has from %lld to %lld characters", (long long)(lo < 0 ? 0 : lo),
                               (long long)hi);
    return 0;
}
