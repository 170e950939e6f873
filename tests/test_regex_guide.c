/*
 * test_regex_guide.c — regexes in the guide (src/tokenizer/rx.c through
 * json_guide.c): JSON Schema's "pattern" and whole answers held to a regex.
 *
 * The oracle is Python's re, saved by tools/make_regex_fixtures.py: for each
 * pattern, every string over a small alphabet up to a length, and whether a
 * validator takes it (re.search, with minLength / maxLength where given) and
 * whether re.fullmatch does.  Each string is fed to the guide as a JSON
 * string value (escaped as json.dumps writes it, and again with every
 * character as a \u escape) and as raw text; after each character the guide
 * must still take the text iff some listed match starts with it (the
 * refusing side checked only for prefixes shorter than max_len - slack), and
 * at the end the string must close (the text may stop) iff it matches.
 */
#include <omp.h>
#include <string.h>

#include "base/base.h"
#include "io/json.h"
#include "guide_cut.h"
#include "test.h"
#include "tokenizer/json_guide.h"
#include "tokenizer/rx.h"
#include "tokenizer/tokenizer.h"

#define FIX "tests/fixtures/regex/cases.json"
#define MAXA 8
#define MAXL 8

static int bit_of(const char *hex, int64_t i) {
    const char *h = hex + 2 * (i >> 3);
    const int v = (h[0] >= 'a' ? h[0] - 'a' + 10 : h[0] - '0') << 4 | (h[1] >= 'a' ? h[1] - 'a' + 10 : h[1] - '0');
    return v >> (i & 7) & 1;
}

/* shortlex: strings of length n start at off[n]; a string's digits (alphabet indices) count in base na */
typedef struct {
    int na, L;
    int64_t off[MAXL + 2];
} listing;

static int64_t index_of(const listing *e, const int *d, int n) {
    int64_t v = 0;
    for (int j = 0; j < n; j++) v = v * e->na + d[j];
    return e->off[n] + v;
}

/* viable[i]: some string the bitmap marks starts with string i */
static uint8_t *viable_of(const listing *e, const char *hex) {
    uint8_t *v = ds_calloc((size_t)e->off[e->L + 1], 1);
    int d[MAXL];
    for (int n = 0; n <= e->L; n++) {
        memset(d, 0, sizeof d);
        for (int64_t k = 0; k < e->off[n + 1] - e->off[n]; k++) {
            if (bit_of(hex, e->off[n] + k))
                for (int m = 0; m <= n; m++) v[index_of(e, d, m)] = 1;
            for (int j = n - 1; j >= 0 && ++d[j] == e->na; j--) d[j] = 0;
        }
    }
    return v;
}

static uint32_t cp_of(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) return u[0];
    const int n = u[0] >= 0xF0 ? 3 : u[0] >= 0xE0 ? 2 : 1;
    uint32_t c = u[0] & (0x3F >> n);
    for (int i = 1; i <= n; i++) c = c << 6 | (u[i] & 0x3F);
    return c;
}

/* a character as a JSON string writes it: mode 0 as json.dumps(ensure_ascii=False), 1 as a \u escape */
static void json_char(const char *ch, int mode, char *out) {
    const uint32_t c = cp_of(ch);
    if (mode == 1 && c < 0x10000) snprintf(out, 8, c & 1 ? "\\u%04X" : "\\u%04x", c);
    else if (c == '"' || c == '\\') snprintf(out, 8, "\\%c", (char)c);
    else if (c == '\n') strcpy(out, "\\n");
    else if (c == '\t') strcpy(out, "\\t");
    else if (c < 0x20) snprintf(out, 8, "\\u%04x", c);
    else strcpy(out, ch);
}

typedef struct {
    const char *pat;
    int slack, bad;
} ctx;

/* one string (digits d, n characters) through state s (already past any opening), its characters
 * written by enc; checks against viable / whole; returns the state after, or -1 where it was refused */
static int walk(const ctx *x, const listing *e, const char *const *alpha, const int *d, int n, const uint8_t *viable,
                ds_json_state *s, int mode, const char *what) {
    for (int j = 0; j < n; j++) {
        char b[16];
        if (mode < 0) strcpy(b, alpha[d[j]]);
        else json_char(alpha[d[j]], mode, b);
        const int ok = !ds_json_state_feed(s, b, strlen(b));
        const int want = viable[index_of(e, d, j + 1)];
        if (ok != want && (want || j + 1 <= e->L - x->slack)) {
            char txt[64] = "";
            for (int k = 0; k <= j; k++) strcat(txt, alpha[d[k]]);
            CHECK_MSG(0, "%s %s: the prefix %s was %s", x->pat, what, ds_quote(txt), ok ? "taken" : "refused");
            return -1;
        }
        if (!ok) return -1;
    }
    return 0;
}

TEST(regex_guide_against_python_re) {
    size_t len;
    char *txt = ds_read_file(FIX, &len);
    CHECK(txt != NULL);
    if (!txt) return;
    cJSON *root = ds_json_parse(txt, len, FIX);
    free(txt);
    int ncase = 0;
    int64_t nstr = 0, nmatch = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        ctx x = {cJSON_GetObjectItem(c, "pattern")->valuestring, (int)cJSON_GetObjectItem(c, "slack")->valuedouble, 0};
        const char *alpha[MAXA];
        listing e = {cJSON_GetArraySize(cJSON_GetObjectItem(c, "alphabet")), (int)cJSON_GetObjectItem(c, "max_len")->valuedouble, {0}};
        CHECK(e.na <= MAXA && e.L <= MAXL);
        for (int i = 0; i < e.na; i++) alpha[i] = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "alphabet"), i)->valuestring;
        for (int n = 0, p = 1; n <= e.L; n++, p *= e.na) e.off[n + 1] = e.off[n] + p;
        /* the schema: {"k": string held to the pattern (and the lengths)} */
        cJSON *sj = cJSON_CreateObject(), *props = cJSON_AddObjectToObject(sj, "properties");
        cJSON *k = cJSON_AddObjectToObject(props, "k");
        cJSON_AddStringToObject(k, "type", "string");
        cJSON_AddStringToObject(k, "pattern", x.pat);
        const cJSON *mn = cJSON_GetObjectItem(c, "minLength"), *mx = cJSON_GetObjectItem(c, "maxLength");
        if (mn) cJSON_AddNumberToObject(k, "minLength", mn->valuedouble);
        if (mx) cJSON_AddNumberToObject(k, "maxLength", mx->valuedouble);
        ds_json_schema *sc = ds_json_schema_compile(sj);
        cJSON_Delete(sj);
        const cJSON *fullj = cJSON_GetObjectItem(c, "full");
        ds_json_schema *raw = fullj ? ds_json_schema_regex(x.pat) : NULL;
        CHECK_MSG(sc && (!fullj || raw), "%s: %s", x.pat, ds_errmsg());
        if (!sc || (fullj && !raw)) {
            ds_json_schema_free(sc);
            continue;
        }
        const char *srch = cJSON_GetObjectItem(c, "search")->valuestring;
        uint8_t *vs = viable_of(&e, srch), *vf = fullj ? viable_of(&e, fullj->valuestring) : NULL;
        int d[MAXL];
        for (int n = 0; n <= e.L; n++) {
            memset(d, 0, sizeof d);
            for (int64_t i = e.off[n]; i < e.off[n + 1]; i++) {
                nstr++;
                const int want = bit_of(srch, i);
                nmatch += want;
                for (int mode = 0; mode < 2; mode++) {
                    ds_json_state s;
                    ds_json_state_init(&s, sc);
                    CHECK(!ds_json_state_feed(&s, "{\"k\":\"", 6));
                    if (walk(&x, &e, alpha, d, n, vs, &s, mode, mode ? "(\\u escapes)" : "(JSON string)")) continue;
                    const int closed = !ds_json_state_feed(&s, "\"}", 2) && ds_json_state_done(&s);
                    CHECK_MSG(closed == want, "%s: the string of %d characters #%lld %s", x.pat, n, (long long)i,
                              want ? "did not close" : "closed");
                }
                if (fullj) {
                    const int wf = bit_of(fullj->valuestring, i);
                    ds_json_state s;
                    ds_json_state_init(&s, raw);
                    if (!walk(&x, &e, alpha, d, n, vf, &s, -1, "(whole text)"))
                        CHECK_MSG(ds_json_state_can_stop(&s) == wf, "%s: the text #%lld %s", x.pat, (long long)i,
                                  wf ? "may not stop" : "may stop");
                }
                for (int j = n - 1; j >= 0 && ++d[j] == e.na; j--) d[j] = 0;
            }
        }
        free(vs), free(vf);
        ds_json_schema_free(sc), ds_json_schema_free(raw);
        ncase++;
    }
    cJSON_Delete(root);
    CHECK_MSG(ncase == 30 && nmatch > 3000, "%d patterns, %lld strings, %lld matches", ncase, (long long)nstr, (long long)nmatch);
}

/* patterns refused, with what the message says */
TEST(regex_guide_refuses) {
    static const char *const bad[][2] = {
        {"(?=a)b", "lookarounds"},         {"(?<!a)b", "lookarounds"},         {"(a)\\1", "backreferences"},
        {"a**", "multiple repeat"},        {"(ab", "missing )"},               {"ab)", "unbalanced parenthesis"},
        {"[ab", "unterminated character set"}, {"a{3,1}", "min repeat greater than max"}, {"\\bx", "\\b, \\B"},
        {"(?i)a", "inline flags"},         {"a*+", "possessive"},              {"x^y", "'^' and '$'"},
        {"(a$)", "'^' and '$'"},           {"\\q", "bad escape"},              {"[z-a]", "bad character range"},
        {"a{1001}", "above 1000"},         {"*a", "nothing to repeat"},        {"a.{12}", "more than 4096 DFA states"},
        {"[^\\s\\S]", "matches no text"},  {"\\", "ends in a backslash"},      {"\xff", "invalid UTF-8"},
        {"[\\d-z]", "bad character range"}, {"\\x4", "incomplete hex escape"}, {"(?P=n)", "backreferences"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_rx *r = ds_rx_compile(bad[i][0], DS_RX_SEARCH);
        CHECK_MSG(!r && strstr(ds_errmsg(), bad[i][1]), "%s: %s", bad[i][0], r ? "compiled" : ds_errmsg());
        ds_rx_free(r);
    }
    static const char *const schemas[][2] = {
        {"{\"properties\": {\"k\": {\"pattern\": 5}}}", "properties.k: 'pattern' must be a string"},
        {"{\"properties\": {\"k\": {\"pattern\": \"(a\"}}}", "properties.k: 'pattern': regex: missing )"},
        {"{\"properties\": {\"k\": {\"pattern\": \"^a{5}$\", \"maxLength\": 3}}}", "from 0 to 3 characters"},
        {"{\"properties\": {\"k\": {\"pattern\": \"^(abc)+$\", \"minLength\": 5, \"maxLength\": 5}}}", "from 5 to 5"},
        {"{\"properties\": {\"k\": {\"pattern\": \"^a?$\", \"minLength\": 3}}}", "3 characters or more"},
        {"{\"properties\": {\"k\": {\"enum\": [\"a\", \"ba\"], \"pattern\": \"^c\"}}}", "properties.k: no member of 'enum'"},
    };
    for (size_t i = 0; i < sizeof schemas / sizeof schemas[0]; i++) {
        cJSON *j = cJSON_Parse(schemas[i][0]);
        ds_json_schema *s = ds_json_schema_compile(j);
        cJSON_Delete(j);
        CHECK_MSG(!s && strstr(ds_errmsg(), schemas[i][1]), "%s: %s", schemas[i][0], s ? "compiled" : ds_errmsg());
        ds_json_schema_free(s);
    }
    /* a whole answer: refused alike; a regex matching only the empty text is complete at once */
    CHECK(!ds_json_schema_regex("(?=x)") && strstr(ds_errmsg(), "lookarounds"));
    ds_json_schema *e = ds_json_schema_regex("");
    ds_json_state s;
    ds_json_state_init(&s, e);
    CHECK(e && ds_json_state_done(&s) && ds_json_state_can_stop(&s) && ds_json_state_feed(&s, "a", 1));
    ds_json_schema_free(e);
}

/* text fed byte by byte to a fresh state of sc: refused at the byte after '|' (none: all taken) */
static void cut_at(const ds_json_schema *sc, const char *marked) { guide_cut(sc, marked, 0); }

/* a character begun (UTF-8 lead bytes, a backslash, a \u escape's first digits) is taken only when
 * some character it can still become continues a match: a token that ends inside a character never
 * leaves the model at a dead end */
TEST(regex_guide_partial_characters) {
    cJSON *j = cJSON_Parse("{\"properties\": {\"a\": {\"pattern\": \"^[a-z]+$\"}, \"e\": {\"pattern\": \"^\\u00e9+$\"}, "
                           "\"n\": {\"pattern\": \"^\\\\n\\\"?$\", \"maxLength\": 1}, \"d\": {\"pattern\": \"^.$\"}, "
                           "\"m\": {\"enum\": [\"a\", \"ba\", 3, \"bb\", \"bbb\"], \"pattern\": \"^b.\", \"maxLength\": 2}}}");
    ds_json_schema *sc = ds_json_schema_compile(j), *raw = ds_json_schema_regex("\xc3\xa9|\xf0\x9f\x8c\x8a!");
    cJSON_Delete(j);
    CHECK_MSG(sc && raw, "%s", ds_errmsg());
    if (!sc || !raw) return;
    cut_at(sc, "{\"a\":\"ab|\xc3");
    cut_at(sc, "{\"a\":\"ab\\u0067");   /* 'g' is taken */
    cut_at(sc, "{\"a\":\"ab\\u007|b");  /* '{' is not */
    cut_at(sc, "{\"a\":\"ab\\u00|8");   /* no \u008x is a-z */
    cut_at(sc, "{\"a\":\"ab\\|t");      /* a tab is not */
    cut_at(sc, "{\"a\":\"|\"");         /* at least one */
    cut_at(sc, "{\"e\":\"\xc3|\xa8");   /* è: the lead byte could still be é */
    cut_at(sc, "{\"e\":\"|\xc4");
    cut_at(sc, "{\"e\":\"\\u0|1");
    cut_at(sc, "{\"e\":\"\\u00e|a");
    cut_at(sc, "{\"e\":\"\\u00E9\xc3\xa9\\u00e9\\u|d83d");
    cut_at(sc, "{\"d\":\"\\ud|83d\\ude00"); /* no surrogate escape under a pattern */
    cut_at(sc, "{\"d\":\"\\ud7ff\"}");
    cut_at(sc, "{\"n\":\"\\n\"}");
    cut_at(sc, "{\"n\":\"\\n|\\\"\"}");     /* maxLength 1: the quote may not follow */
    cut_at(sc, "{\"m\":\"|a\"}"); /* enum members the pattern does not take are dropped: "a", "bbb" */
    cut_at(sc, "{\"m\":\"bb|b\"}");
    cut_at(sc, "{\"m\":3}");
    cut_at(sc, "{\"m\":\"ba\"}");
    cut_at(raw, "\xf0\x9f\x8c|\x8b");     /* U+1F30A, not U+1F30B */
    cut_at(raw, "\xf0\x9f\x8c\x8a!|!");
    cut_at(raw, "\xf0\x9f|\x8d");
    ds_json_schema_free(sc), ds_json_schema_free(raw);
}

/* over DeepSeek-V3's vocabulary: under a pattern (inside a JSON string) and a whole-text regex, the
 * allowed ids are exactly the tokens whose bytes, fed after the text from scratch, keep it a prefix;
 * where the text may stop, the stop ids are not refused */
TEST(regex_guide_vocabulary) {
    const char *path = ds_test_shared("data/deepseek_v3_tokenizer/tokenizer.json");
    if (!path) SKIP("no ../shared/data/deepseek_v3_tokenizer");
    ds_tokenizer *t = ds_tokenizer_load(path);
    CHECK(t != NULL);
    if (!t) return;
    const int64_t V = ds_tokenizer_vocab_size(t);
    ds_json_guide *g = ds_json_guide_new(t, V);
    int32_t *ok = ds_malloc((size_t)V * sizeof(int32_t));
    char *on = ds_malloc((size_t)V);
    cJSON *j = cJSON_Parse("{\"properties\": {\"id\": {\"type\": \"string\", \"pattern\": \"^[A-Z]{2}-\\\\d{3,5}( \\\\w+)?$\", "
                           "\"maxLength\": 14}}}");
    ds_json_schema *sc = ds_json_schema_compile(j), *raw = ds_json_schema_regex("(yes|no|[Mm]aybe), because \\w{1,8}\\.");
    cJSON_Delete(j);
    CHECK_MSG(sc && raw, "%s", ds_errmsg());
    const struct {
        const ds_json_schema *sc;
        const char *pre;
        int64_t lo, hi; /* the allowed count's range (not empty, not everything) */
    } at[] = {{sc, "{\"id\": \"", 10, 2000}, {sc, "{\"id\": \"AB-12", 10, 2000}, {sc, "{\"id\": \"AB-1234 ab", 10, 50000},
              {raw, "", 3, 100},           {raw, "maybe, because ", 100, 60000}};
    for (size_t c = 0; c < sizeof at / sizeof at[0] && sc && raw; c++) {
        ds_json_state s;
        ds_json_state_init(&s, at[c].sc);
        CHECK(!ds_json_state_feed(&s, at[c].pre, strlen(at[c].pre)));
        const double t0 = ds_now();
        const int64_t n = ds_json_guide_allowed(g, &s, ok);
        const double dt = ds_now() - t0;
        memset(on, 0, (size_t)V);
        for (int64_t i = 0; i < n; i++) on[ok[i]] = 1;
        int64_t want = 0, differ = from_scratch(g, at[c].sc, at[c].pre, on, V, &want);
        CHECK_MSG(differ == 0 && want == n && n >= at[c].lo && n <= at[c].hi, "%s: %lld allowed, %lld continue, %lld differ",
                  at[c].pre, (long long)n, (long long)want, (long long)differ);
        /* the groups tried on one thread give the same list, in the same order */
        const int th = omp_get_max_threads();
        omp_set_num_threads(1);
        int32_t *one = ds_malloc((size_t)V * sizeof(int32_t));
        const int64_t n1 = ds_json_guide_allowed(g, &s, one);
        omp_set_num_threads(th);
        CHECK(n1 == n && !memcmp(one, ok, (size_t)n * sizeof(int32_t)));
        free(one);
        fprintf(stderr, "  after %s: %lld of %lld ids allowed, one mask %.1f ms\n", ds_quote(at[c].pre), (long long)n, (long long)V,
                dt * 1e3);
    }
    /* "yes|no|yes!+": after "ye" the text may not stop (the stop id refused); after "yes" it may stop or
     * go on with "!"; "no" is complete: nothing but the stop id */
    const int32_t eos = ds_tokenizer_eos_id(t);
    int32_t *no = ds_malloc((size_t)V * sizeof(int32_t));
    ds_json_schema *yn = ds_json_schema_regex("yes|no|yes!+");
    ds_json_state s;
    ds_json_state_init(&s, yn);
    CHECK(yn && !ds_json_state_feed(&s, "ye", 2) && !ds_json_state_can_stop(&s));
    int64_t nr = ds_json_guide_refused(g, &s, &eos, 1, no), hit = 0;
    for (int64_t i = 0; i < nr; i++) hit += no[i] == eos;
    CHECK(hit == 1 && nr < V);
    CHECK(!ds_json_state_feed(&s, "s", 1) && ds_json_state_can_stop(&s) && !ds_json_state_done(&s));
    nr = ds_json_guide_refused(g, &s, &eos, 1, no), hit = 0;
    for (int64_t i = 0; i < nr; i++) hit += no[i] == eos;
    const int32_t bang = ds_tokenizer_token_to_id(t, "!");
    int bang_ok = 1;
    for (int64_t i = 0; i < nr; i++) bang_ok &= no[i] != bang;
    CHECK_MSG(hit == 0 && bang >= 0 && bang_ok && nr < V - 1, "after 'yes': %lld refused", (long long)nr);
    ds_json_state_init(&s, yn);
    CHECK(!ds_json_state_feed(&s, "no", 2) && ds_json_state_done(&s));
    CHECK(ds_json_guide_refused(g, &s, &eos, 1, no) == V - 1);
    ds_json_schema_free(yn);
    free(no), free(ok), free(on);
    ds_json_schema_free(sc), ds_json_schema_free(raw);
    ds_json_guide_free(g);
    ds_tokenizer_free(t);
}

/* `dsv3 generate --regex` on the v3 fixture model (a byte-level vocabulary; EOS is id 1, '"'): sampled answers
 * match "[0-9]{3}-[a-z]{2}( ok)?" as a whole (checked character by character here).  With EOS, an answer
 * may end after the letters; with --ignore-eos (no stop id) it goes on until nothing can follow, so it
 * takes " ok".  A regex refused, or two guides at once, is a usage error */
TEST(regex_guide_generate_cli) {
    ds_tokenizer *t = ds_test_byte_tokenizer();
    char tok[600], out[8192];
    snprintf(tok, sizeof tok, "%s/bytes_rx.json", ds_test_tmpdir());
    CHECK(t && ds_tokenizer_save(t, tok) == 0);
    ds_tokenizer_free(t);
    int with_ok[2] = {0, 0};
    for (int run = 0; run < 12; run++) {
        const int seed = run % 6 + 1, noeos = run >= 6;
        CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model tests/fixtures/model/v3 --tokenizer %s --prompt 'J:' "
                         "--regex '[0-9]{3}-[a-z]{2}( ok)?' %s --temperature 1 --seed %d --max-new-tokens 30 2>/dev/null",
                         tok, noeos ? "--ignore-eos" : "", seed) == 0);
        const char *a = !strncmp(out, "J:", 2) ? out + 2 : "";
        size_t n = strlen(a);
        while (n && a[n - 1] == '\n') n--; /* generate ends its output with a newline */
        if (!noeos && n && a[n - 1] == '"') n--; /* EOS, id 1, is the byte '"' here: printed as text */
        int ok = n == 6 || (n == 9 && !strncmp(a + 6, " ok", 3));
        for (int i = 0; i < 6 && ok; i++) ok = i < 3 ? a[i] >= '0' && a[i] <= '9' : i == 3 ? a[i] == '-' : a[i] >= 'a' && a[i] <= 'z';
        with_ok[noeos] += n == 9;
        CHECK_MSG(ok, "seed %d%s: %s", seed, noeos ? " --ignore-eos" : "", out);
    }
    fprintf(stderr, "  answers that took the optional ' ok': %d of 6 with EOS, %d of 6 without\n", with_ok[0], with_ok[1]);
    CHECK(with_ok[0] < 6 && with_ok[1] == 6);
    CHECK_MSG(ds_test_sh(out, sizeof out, "$DSV3 generate --model tests/fixtures/model/v3 --tokenizer %s --prompt x --regex '(a'", tok) == 2 &&
                  strstr(out, "--regex: regex: missing ), unterminated subpattern at offset 2"),
              "%s", out);
    CHECK_MSG(ds_test_sh(out, sizeof out, "$DSV3 generate --model tests/fixtures/model/v3 --tokenizer %s --prompt x --regex a --json-object",
                         tok) == 2 && strstr(out, "give one of --json-object, --json-schema and --regex"),
              "%s", out);
}
