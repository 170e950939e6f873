/*
 * test_json_guide.c — the JSON-object automaton (src/tokenizer/json_guide.c):
 *  - every prefix of random objects that cJSON writes (formatted and compact,
 *    escapes, UTF-8, numbers with fractions and exponents, nesting) is taken,
 *    and only the whole text is complete;
 *  - hand-written texts that are no prefix of any JSON object (RFC 8259) are
 *    refused at the byte where they stop being one;
 *  - with DeepSeek-V3's vocabulary (../shared/data): the allowed ids are the
 *    tokens whose bytes continue the text, added tokens never, the refused
 *    ids the rest; a walk that picks allowed tokens ends in text cJSON parses
 *    as an object;
 *  - generation under the guide (the sampler's mask through logits_adjust)
 *    gives objects cJSON parses and ends at the closing brace.
 */
#include <string.h>

#include "backend/ops.h"
#include "base/base.h"
#include "infer/infer.h"
#include "io/json.h"
#include "model/model.h"
#include "guide_cut.h"
#include "test.h"
#include "tokenizer/json_guide.h"
#include "tokenizer/tokenizer.h"

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(uint32_t n) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static cJSON *random_value(int depth) {
    static const char *const strs[] = {"", "plain", "quote \" and \\ slash /", "tab\tnew\nline\r", "ctl \x01\x1f",
                                       "é ü 中文 🌊", "<｜User｜>", "{\"not\": [json]}"};
    static const double nums[] = {0, -0.5, 3, -17, 1e-7, 6.02e23, 123456789012.0, 0.1, -1e300, 2.5e-300};
    switch (depth > 4 ? rnd(5) : rnd(7)) {
    case 0: return cJSON_CreateString(strs[rnd(8)]);
    case 1: return cJSON_CreateNumber(nums[rnd(10)]);
    case 2: return cJSON_CreateBool(rnd(2));
    case 3: return cJSON_CreateNull();
    case 4: return cJSON_CreateNumber((double)(int)rnd(100000) - 50000);
    case 5: {
        cJSON *a = cJSON_CreateArray();
        for (uint32_t i = 0, n = rnd(4); i < n; i++) cJSON_AddItemToArray(a, random_value(depth + 1));
        return a;
    }
    default: {
        cJSON *o = cJSON_CreateObject();
        for (uint32_t i = 0, n = rnd(4); i < n; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%u", i);
            cJSON_AddItemToObject(o, k, random_value(depth + 1));
        }
        return o;
    }
    }
}

TEST(json_guide_takes_every_prefix_of_objects) {
    int docs = 0;
    for (int d = 0; d < 300; d++) {
        cJSON *o = cJSON_CreateObject();
        for (uint32_t i = 0, n = rnd(5); i < n; i++) {
            char k[16];
            snprintf(k, sizeof k, "key %u", i);
            cJSON_AddItemToObject(o, k, random_value(1));
        }
        char *txt = d % 2 ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        ds_json_state s;
        ds_json_state_init(&s, NULL);
        size_t n = strlen(txt), bad = n;
        for (size_t i = 0; i < n && bad == n; i++) {
            if (ds_json_state_feed(&s, txt + i, 1)) bad = i;
            else if (i + 1 < n && ds_json_state_done(&s)) bad = i;
        }
        CHECK_MSG(bad == n && ds_json_state_done(&s), "doc %d refused at byte %zu: %s", d, bad, txt);
        /* fed in one piece: the same */
        ds_json_state_init(&s, NULL);
        CHECK(ds_json_state_feed(&s, txt, n) == 0 && ds_json_state_done(&s));
        free(txt);
        docs++;
    }
    CHECK(docs == 300);
}

TEST(json_guide_refuses_what_is_no_prefix) {
    static const struct { const char *text; int at; } c[] = {
        {"[1]", 0}, {"\"s\"", 0}, {"1", 0}, {"  x", 2}, {"{,", 1}, {"{\"a\" 1", 5}, {"{\"a\":01", 6},
        {"{\"a\":-}", 6}, {"{\"a\":1.}", 7}, {"{\"a\":1e}", 7}, {"{\"a\":1e+}", 8}, {"{\"a\":.5}", 5},
        {"{\"a\":+1}", 5}, {"{\"a\":tru }", 8}, {"{\"a\":nul}", 8}, {"{\"a\":True}", 5}, {"{\"\\x\"", 3},
        {"{\"\\u12g4\"", 6}, {"{\"a\nb\"", 3}, {"{\"a\":1,}", 7}, {"{\"a\":[1,]}", 8}, {"{\"a\":[1}", 7},
        {"{\"a\":{]}", 6}, {"{}}", 2}, {"{} ", 2}, {"{}x", 2}, {"{1:2}", 1}, {"{\"a\":1 2}", 7},
        {"{\"a\":\"\xff\"}", 6}, {"{\"a\":\"\xc3(\"}", 7}, {"{\"a\":\"\x80\"}", 6}, {"{'a':1}", 1},
        {"{\"a\":[[[1]]]]}", 12}, {"{\"a\":1}\n", 7},
        /* UTF-8 (RFC 3629): no surrogate, overlong form or code point past U+10FFFF */
        {"{\"\xed\xa0\x80\"", 3}, {"{\"\xe0\x80\x80\"", 3}, {"{\"\xf0\x80\x80\x80\"", 3}, {"{\"\xf4\x90\x80\x80\"", 3},
        {"{\"\xc1\xbf\"", 2}, {"{\"\xe2\x82\"", 4},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        ds_json_state s;
        ds_json_state_init(&s, NULL);
        int at = -1;
        for (size_t k = 0; c[i].text[k] && at < 0; k++)
            if (ds_json_state_feed(&s, c[i].text + k, 1)) at = (int)k;
        CHECK_MSG(at == c[i].at, "%s: refused at %d, want %d", ds_quote(c[i].text), at, c[i].at);
    }
    /* nesting past DS_JSON_MAX_DEPTH, whitespace past DS_JSON_MAX_WS */
    char deep[128] = "{\"a\":";
    for (int i = 0; i < DS_JSON_MAX_DEPTH; i++) strcat(deep, "[");
    ds_json_state s;
    ds_json_state_init(&s, NULL);
    CHECK(ds_json_state_feed(&s, deep, strlen(deep) - 1) == 0 && ds_json_state_feed(&s, "[", 1) == -1);
    char ws[64] = "{";
    memset(ws + 1, ' ', DS_JSON_MAX_WS);
    ds_json_state_init(&s, NULL);
    CHECK(ds_json_state_feed(&s, ws, 1 + DS_JSON_MAX_WS) == 0 && ds_json_state_feed(&s, " ", 1) == -1);
    ds_json_state_init(&s, NULL);
    CHECK(ds_json_state_feed(&s, ws, 1 + DS_JSON_MAX_WS) == 0 && ds_json_state_feed(&s, "}", 1) == 0 && ds_json_state_done(&s));
}

static ds_json_schema *schema_of(const char *txt);

TEST(json_guide_vocabulary) {
    const char *path = ds_test_shared("data/deepseek_v3_tokenizer/tokenizer.json");
    if (!path) SKIP("no ../shared/data/deepseek_v3_tokenizer");
    ds_tokenizer *t = ds_tokenizer_load(path);
    CHECK(t != NULL);
    if (!t) return;
    const int64_t V = ds_tokenizer_vocab_size(t);
    ds_json_guide *g = ds_json_guide_new(t, V);
    int32_t *ok = ds_malloc((size_t)V * sizeof(int32_t));
    char *on = ds_calloc((size_t)V, 1);
    /* in a string value: the allowed ids are exactly the tokens (not added) that continue it */
    const char *pre = "{\"city\": \"Par";
    ds_json_state s;
    ds_json_state_init(&s, NULL);
    CHECK(ds_json_state_feed(&s, pre, strlen(pre)) == 0);
    double t0 = ds_now();
    int64_t n = ds_json_guide_allowed(g, &s, ok);
    double dt = ds_now() - t0;
    for (int64_t i = 0; i < n; i++) on[ok[i]] = 1;
    int64_t want = 0, mismatch = from_scratch(g, NULL, pre, on, V, &want);
    const int32_t user = ds_tokenizer_token_to_id(t, "<｜User｜>"), eos = ds_tokenizer_eos_id(t);
    CHECK_MSG(mismatch == 0 && want == n && n > 100000, "%lld allowed, %lld continue, %lld differ", (long long)n,
              (long long)want, (long long)mismatch);
    CHECK(user >= 0 && !on[user] && eos >= 0 && !on[eos]);
    fprintf(stderr, "  %lld of %lld ids allowed in a string; one mask over the vocabulary: %.1f ms\n", (long long)n, (long long)V,
            dt * 1e3);
    /* a string with a maxLength: the ids allowed are those whose text, fed from scratch, still fits */
    ds_json_schema *ml = schema_of("{\"properties\": {\"city\": {\"type\": \"string\", \"maxLength\": 5}}}");
    CHECK(ml != NULL);
    ds_json_state_init(&s, ml);
    CHECK(ds_json_state_feed(&s, pre, strlen(pre)) == 0);
    n = ds_json_guide_allowed(g, &s, ok);
    memset(on, 0, (size_t)V);
    for (int64_t i = 0; i < n; i++) on[ok[i]] = 1;
    mismatch = from_scratch(g, ml, pre, on, V, &want);
    CHECK_MSG(mismatch == 0 && want == n && n > 1000 && n < 100000, "maxLength: %lld allowed, %lld fit, %lld differ",
              (long long)n, (long long)want, (long long)mismatch);
    ds_json_schema_free(ml);
    /* after a key's colon: no '}' and no ','; '"' and digits yes */
    memset(on, 0, (size_t)V);
    ds_json_state_init(&s, NULL);
    CHECK(ds_json_state_feed(&s, "{\"a\": ", 6) == 0);
    t0 = ds_now();
    n = ds_json_guide_allowed(g, &s, ok);
    fprintf(stderr, "  %lld ids allowed for a value: %.2f ms\n", (long long)n, (ds_now() - t0) * 1e3);
    /* the refused ids are the rest */
    int32_t *no = ds_malloc((size_t)V * sizeof(int32_t));
    int64_t nr = ds_json_guide_refused(g, &s, NULL, 0, no);
    char *seen = ds_calloc((size_t)V, 1);
    for (int64_t i = 0; i < n; i++) seen[ok[i]]++;
    for (int64_t i = 0; i < nr; i++) seen[no[i]]++;
    int64_t once = 0;
    for (int64_t i = 0; i < V; i++) once += seen[i] == 1;
    CHECK(n + nr == V && once == V);
    free(no), free(seen);
    for (int64_t i = 0; i < n; i++) on[ok[i]] = 1;
    const int32_t close = ds_tokenizer_token_to_id(t, "}"), quote = ds_tokenizer_token_to_id(t, "\""), one = ds_tokenizer_token_to_id(t, "1");
    CHECK(close >= 0 && quote >= 0 && one >= 0 && !on[close] && on[quote] && on[one]);
    /* a walk: the first allowed token of a few preferred ones, else the last allowed: ends as an object cJSON reads */
    ds_json_state_init(&s, NULL);
    ds_sbuf txt = {0};
    const char *prefer[] = {"\"", "}", "1", ":", ",", "x"};
    for (int step = 0; step < 200 && !ds_json_state_done(&s); step++) {
        n = ds_json_guide_allowed(g, &s, ok);
        CHECK(n > 0);
        if (!n) break;
        int32_t pick = ok[(step * 7919) % n];
        for (size_t k = 0; k < 6 && step > 20; k++) {
            int32_t id = ds_tokenizer_token_to_id(t, prefer[k]);
            for (int64_t i = 0; i < n && id >= 0; i++)
                if (ok[i] == id) pick = id, k = 6, i = n;
        }
        size_t len = 0;
        const char *b = ds_tokenizer_token_bytes(t, pick, &len);
        CHECK(ds_json_state_feed(&s, b, len) == 0);
        ds_sbuf_put(&txt, b, len);
    }
    CHECK(ds_json_state_done(&s) && ds_json_guide_allowed(g, &s, ok) == 0);
    cJSON *j = txt.p ? cJSON_Parse(txt.p) : NULL;
    CHECK_MSG(cJSON_IsObject(j), "walk: %s", txt.p ? txt.p : "");
    cJSON_Delete(j);
    free(txt.p), free(ok), free(on);
    ds_json_guide_free(g);
    ds_tokenizer_free(t);
}

/* ds_generate with a guide on the v3 fixture model (a 256-byte vocabulary):
 * sampled with five seeds and greedily, the output is one object cJSON reads,
 * and generation ends at its closing brace (no stop id given) */
TEST(json_guide_generate) {
    ds_model m;
    if (ds_model_load(&m, "tests/fixtures/model/v3")) SKIP("no v3 fixture: %s", ds_errmsg());
    ds_tokenizer *t = ds_test_byte_tokenizer();
    CHECK(t != NULL);
    if (!t) return ds_model_free(&m);
    ds_json_guide *g = ds_json_guide_new(t, m.cfg.vocab_size);
    /* '"' and '}' up, whitespace down: the random model closes what it opens within the 64-position context */
    ds_logit_bias bias[6] = {{-1, 4}, {-1, 3}, {-1, -3}, {-1, -3}, {-1, -3}, {-1, -3}};
    static const char want[6] = {'"', '}', ' ', '\t', '\n', '\r'};
    for (int32_t i = 0; i < 256; i++) {
        size_t len = 0;
        const char *b = ds_tokenizer_token_bytes(t, i, &len);
        for (int k = 0; k < 6; k++)
            if (b && len == 1 && b[0] == want[k]) bias[k].id = i;
    }
    for (int k = 0; k < 6; k++) CHECK(bias[k].id >= 0);
    const int32_t prompt[4] = {5, 6, 7, 8};
    for (int k = 0; k < 6; k++) {
        ds_gen_opts go = {.max_tokens = 60, .sp = {.temperature = k ? 1.1 : 0, .top_p = 1, .seed = (uint64_t)k, .guide = g,
                                                  .bias = bias, .nbias = 6}};
        int32_t out[256];
        int64_t n = 0;
        ds_gen_stats st;
        memset(&st, 0, sizeof st);
        CHECK_MSG(ds_generate(&m, &ds_ops_cpu, prompt, 4, &go, out, &n, NULL, NULL, &st) == 0, "%s", ds_errmsg());
        size_t len = 0;
        char *txt = ds_tokenizer_decode(t, out, n, 0, &len);
        cJSON *j = txt ? cJSON_Parse(txt) : NULL;
        CHECK_MSG(cJSON_IsObject(j) && st.stopped == 1 && n < 60 && txt[len - 1] == '}', "seed %d: %lld tokens, stopped %d: %s", k,
                  (long long)n, st.stopped, txt ? txt : "");
        cJSON_Delete(j);
        free(txt);
    }
    ds_json_guide_free(g);
    ds_tokenizer_free(t);
    ds_model_free(&m);
}

/* ---- schemas ---- */
static const char SCHEMA_A[] =
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"a city\"}, "
    "\"unit\": {\"enum\": [\"celsius\", \"fahrenheit\"]}, \"days\": {\"type\": \"integer\"}, "
    "\"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}, \"ok\": {\"type\": \"boolean\"}, "
    "\"x\": {\"type\": [\"number\", \"null\"]}}, \"required\": [\"city\", \"unit\"], \"additionalProperties\": false}";
static const char SCHEMA_B[] =
    "{\"properties\": {\"p\": {\"type\": \"object\", \"properties\": {\"q\": {\"const\": 3}}, \"required\": [\"q\"]}}, "
    "\"additionalProperties\": {\"type\": \"integer\"}, \"title\": \"B\"}";

static ds_json_schema *schema_of(const char *txt) {
    cJSON *j = cJSON_Parse(txt);
    ds_json_schema *s = j ? ds_json_schema_compile(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* schemas that must fail to compile, each with a piece of its message */
static void refused_at_compile(const char *const (*bad)[2], size_t n) {
    for (size_t i = 0; i < n; i++) {
        ds_json_schema *s = schema_of(bad[i][0]);
        CHECK_MSG(!s && strstr(ds_errmsg(), bad[i][1]), "%s: %s", bad[i][0], s ? "compiled" : ds_errmsg());
        ds_json_schema_free(s);
    }
}

/* text with a '|' where it stops being a prefix of an accepted document (none: the whole is one) */
static void expect(const ds_json_schema *sc, const char *marked) { guide_cut(sc, marked, 1); }

TEST(json_guide_schema) {
    ds_json_schema *a = schema_of(SCHEMA_A), *b = schema_of(SCHEMA_B);
    CHECK_MSG(a && b, "%s", ds_errmsg());
    if (!a || !b) return;
    expect(a, "{\"city\":\"Oslo\",\"unit\":\"celsius\"}");
    expect(a, "{ \"unit\": \"fahrenheit\" , \"city\" : \"\" , \"days\": -3, \"tags\": [\"a\", \"b\"], \"ok\": true, \"x\": null }");
    expect(a, "{\"city\":\"é\",\"unit\":\"celsius\",\"x\":1.5e3,\"tags\":[]}");
    expect(a, "{|}");
    expect(a, "{\"city\":\"Oslo\"|}");
    expect(a, "{\"t|o");
    expect(a, "{\"city\":|1");
    expect(a, "{\"city\":\"a\",\"unit\":\"|kelvin\"}");
    expect(a, "{\"city\":\"a\",\"|city\":\"b\"}");
    expect(a, "{\"city\":\"a\",\"unit\":\"celsius\",\"days\":1|.5}");
    expect(a, "{\"city\":\"a\",\"unit\":\"celsius\",\"ok\":|1}");
    expect(a, "{\"city\":\"a\",\"unit\":\"celsius\",\"tags\":[|3]}");
    expect(a, "{\"city\":\"a\",\"unit\":\"celsius\",\"x\":|\"1\"}");
    expect(a, "{\"city\":\"a\",\"unit\":\"celsius\",\"days\":1,\"tags\":[],\"ok\":false,\"x\":2|,");
    expect(a, "{\"city|x\":1}");
    expect(b, "{\"p\":{\"q\":3},\"other\":7}");
    expect(b, "{\"p\":{\"q\":3,\"extra\":[1,{\"a\":null}]}}");
    expect(b, "{\"other\":|\"x\"}");
    expect(b, "{\"p\":{\"q\":3|0}}");
    expect(b, "{\"p\":{|}}");
    expect(b, "{\"p\":{\"q\":|4}}");
    expect(b, "{}");
    ds_json_schema_free(a), ds_json_schema_free(b);
    /* refused at compile time, with where and what */
    static const char *const bad[][2] = {
        {"{\"type\": \"string\"}", "the top-level value must be an object"},
        {"{\"type\": \"object\", \"properties\": {\"a\": {\"uniqueItems\": true}}}", "properties.a: 'uniqueItems' is supported for items given by 'enum'"},
        {"{\"properties\": {\"a\": {\"items\": {\"type\": \"string\"}, \"uniqueItems\": true}}}", "'uniqueItems' is supported for items given by 'enum'"},
        {"{\"properties\": {\"a\": {\"items\": {\"enum\": [1, 1.0, 2]}, \"uniqueItems\": true, \"minItems\": 3}}}", "more than the 2 distinct members"},
        {"{\"properties\": {\"a\": {\"items\": {\"enum\": [1]}, \"uniqueItems\": 1}}}", "'uniqueItems' must be true or false"},
        {"{\"properties\": {\"a\": {}}, \"properties\": {\"b\": {}}}", "the schema: 'properties' given twice"},
        {"{\"properties\": {\"a\": {\"x\\u00ffy\": 1}}}", "properties.a: 'x\u00ffy' is not supported"},
        {"{\"properties\": {}, \"required\": [\"zz\"]}", "'required' names 'zz'"},
        {"{\"type\": \"bogus\"}", "'type' must name JSON types"},
        {"{\"properties\": {\"a\": {\"items\": [{}]}}}", "'items' as a list"},
        {"{\"properties\": {\"a\\\"b\": {}}}", "needs an escape"},
        {"{\"allOf\": [{}, {}]}", "'allOf' of more than one schema"},
        {"{\"properties\": {\"a\": {\"allOf\": [{}], \"type\": \"string\"}}}", "'allOf' beside other keywords"},
        {"{\"properties\": {\"a\": {\"maxLength\": -1}}}", "properties.a: 'maxLength' must be a whole number"},
        {"{\"properties\": {\"a\": {\"minimum\": \"3\"}}}", "properties.a: 'minimum' must be a number"},
        {"{\"properties\": {\"a\": {\"contains\": {}}}}", "properties.a: 'contains' is not supported"},
        {"{\"properties\": {\"a\": {\"multipleOf\": 2}}}", "properties.a: 'multipleOf' is supported with \"type\": \"integer\" only"},
        {"{\"properties\": {\"a\": {\"type\": \"integer\", \"multipleOf\": 0.5}}}", "'multipleOf' is supported as a whole number"},
        {"{\"properties\": {\"a\": {\"minLength\": 3, \"maxLength\": 2}}}", "properties.a: a 'min' bound above its 'max'"},
        {"{\"properties\": {\"a\": {\"minimum\": 1, \"exclusiveMaximum\": 1}}}", "properties.a: 'minimum' / 'exclusiveMinimum' above"},
        {"{\"properties\": {\"a\": {}, \"b\": {}}, \"required\": [\"a\", \"b\"], \"maxProperties\": 1}", "more 'required'"},
        {"{\"properties\": {\"a\": {\"enum\": []}}}", "'enum' must be a non-empty list"},
        {"3", "a schema must be an object or true"},
    };
    refused_at_compile(bad, sizeof bad / sizeof bad[0]);
}

/* random documents that satisfy schema A, written by cJSON: every prefix taken, the whole complete */
TEST(json_guide_schema_random_documents) {
    ds_json_schema *a = schema_of(SCHEMA_A);
    CHECK(a != NULL);
    if (!a) return;
    static const char *const strs[] = {"", "Oslo", "quote \" back \\", "é 中文 🌊", "\n\t"};
    for (int d = 0; d < 200; d++) {
        cJSON *o = cJSON_CreateObject();
        int order[6] = {0, 1, 2, 3, 4, 5};
        for (int i = 5; i > 0; i--) {
            int k = (int)rnd((uint32_t)i + 1), t = order[i];
            order[i] = order[k], order[k] = t;
        }
        for (int i = 0; i < 6; i++) {
            switch (order[i]) {
            case 0: cJSON_AddStringToObject(o, "city", strs[rnd(5)]); break;
            case 1: cJSON_AddStringToObject(o, "unit", rnd(2) ? "celsius" : "fahrenheit"); break;
            case 2: if (rnd(2)) cJSON_AddNumberToObject(o, "days", (double)(int)rnd(2000) - 1000); break;
            case 3:
                if (rnd(2)) {
                    cJSON *t = cJSON_AddArrayToObject(o, "tags");
                    for (uint32_t k = 0, n = rnd(3); k < n; k++) cJSON_AddItemToArray(t, cJSON_CreateString(strs[rnd(5)]));
                }
                break;
            case 4: if (rnd(2)) cJSON_AddBoolToObject(o, "ok", rnd(2)); break;
            default:
                if (rnd(2)) cJSON_AddItemToObject(o, "x", rnd(2) ? cJSON_CreateNull() : cJSON_CreateNumber(rnd(2) ? 0.25 : -7e-9));
            }
        }
        char *txt = d % 2 ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        ds_json_state s;
        ds_json_state_init(&s, a);
        size_t n = strlen(txt), bad = n;
        for (size_t i = 0; i < n && bad == n; i++)
            if (ds_json_state_feed(&s, txt + i, 1) || (i + 1 < n && ds_json_state_done(&s))) bad = i;
        CHECK_MSG(bad == n && ds_json_state_done(&s), "refused at %zu: %s", bad, txt);
        free(txt);
    }
    ds_json_schema_free(a);
}

/* `dsv3 generate --json-schema FILE`: the text after the prompt is an object
 * of the schema (checked by hand); a schema outside the subset, or no
 * tokenizer, fails with one line */
TEST(json_guide_generate_cli) {
    ds_tokenizer *t = ds_test_byte_tokenizer();
    char tok[600], sch[600], bad[600], out[8192];
    snprintf(tok, sizeof tok, "%s/bytes.json", ds_test_tmpdir());
    snprintf(sch, sizeof sch, "%s/schema.json", ds_test_tmpdir());
    snprintf(bad, sizeof bad, "%s/bad.json", ds_test_tmpdir());
    CHECK(t && ds_tokenizer_save(t, tok) == 0);
    char ws[128] = ""; /* whitespace down: the random model fits its answer in the 64-position context */
    for (int32_t i = 0; t && i < 256; i++) {
        size_t len = 0;
        const char *b = ds_tokenizer_token_bytes(t, i, &len);
        if (b && len == 1 && strchr(" \t\n\r", b[0]) && b[0]) snprintf(ws + strlen(ws), sizeof ws - strlen(ws), " %d:-4", i);
    }
    ds_tokenizer_free(t);
    FILE *f = fopen(sch, "w");
    CHECK(f && fputs("{\"type\": \"object\", \"properties\": {\"u\": {\"enum\": [\"C\", \"F\"]}, \"t\": {\"type\": \"integer\"}}, "
                     "\"required\": [\"u\", \"t\"], \"additionalProperties\": false}", f) >= 0 && fclose(f) == 0);
    f = fopen(bad, "w");
    CHECK(f && fputs("{\"properties\": {\"u\": {\"contains\": {}}}}", f) >= 0 && fclose(f) == 0);
    for (int seed = 1; seed <= 3; seed++) {
        CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model tests/fixtures/model/v3 --tokenizer %s --prompt 'J:' "
                         "--json-schema %s --ignore-eos --temperature 0.9 --seed %d --max-new-tokens 60 --logit-bias%s 2>/dev/null",
                         tok, sch, seed, ws) == 0);
        cJSON *j = !strncmp(out, "J:", 2) ? cJSON_Parse(out + 2) : NULL;
        const cJSON *u = cJSON_GetObjectItem(j, "u"), *tt = cJSON_GetObjectItem(j, "t");
        CHECK_MSG(cJSON_GetArraySize(j) == 2 && cJSON_IsString(u) && (!strcmp(u->valuestring, "C") || !strcmp(u->valuestring, "F")) &&
                      cJSON_IsNumber(tt) && floor(tt->valuedouble) == tt->valuedouble,
                  "seed %d: %s", seed, out);
        cJSON_Delete(j);
    }
    /* bounds: lengths, counts and number ranges hold in what the model writes */
    f = fopen(sch, "w");
    CHECK(f && fputs("{\"properties\": {\"n\": {\"type\": \"integer\", \"minimum\": 3, \"maximum\": 7}, "
                     "\"s\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 3}, \"a\": {\"type\": \"array\", "
                     "\"items\": {\"type\": \"integer\", \"minimum\": -2, \"exclusiveMaximum\": 2}, \"minItems\": 1, "
                     "\"maxItems\": 2}}, \"required\": [\"n\", \"s\", \"a\"], \"additionalProperties\": false}", f) >= 0 &&
          fclose(f) == 0);
    for (int seed = 1; seed <= 4; seed++) {
        CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model tests/fixtures/model/v3 --tokenizer %s --prompt 'J:' "
                         "--json-schema %s --ignore-eos --temperature 1 --seed %d --max-new-tokens 60 --logit-bias%s 2>/dev/null",
                         tok, sch, seed, ws) == 0);
        cJSON *j = !strncmp(out, "J:", 2) ? cJSON_Parse(out + 2) : NULL;
        const cJSON *nn = cJSON_GetObjectItem(j, "n"), *ss = cJSON_GetObjectItem(j, "s"), *aa = cJSON_GetObjectItem(j, "a"), *x;
        int ok = cJSON_GetArraySize(j) == 3 && cJSON_IsNumber(nn) && nn->valuedouble >= 3 && nn->valuedouble <= 7 &&
                 cJSON_IsString(ss) && cJSON_IsArray(aa) && cJSON_GetArraySize(aa) >= 1 && cJSON_GetArraySize(aa) <= 2;
        size_t chars = 0; /* code points (no surrogate pair here: cJSON writes them as UTF-8) */
        for (const unsigned char *c = ok ? (const unsigned char *)ss->valuestring : (const unsigned char *)""; *c; c++)
            chars += (*c & 0xC0) != 0x80;
        ok &= chars >= 1 && chars <= 3;
        cJSON_ArrayForEach(x, aa) ok &= cJSON_IsNumber(x) && x->valuedouble >= -2 && x->valuedouble < 2 &&
                                        x->valuedouble == floor(x->valuedouble);
        CHECK_MSG(ok, "seed %d: %s", seed, out);
        cJSON_Delete(j);
    }
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model tests/fixtures/model/v3 --tokenizer %s --prompt x --json-schema %s",
                     tok, bad) == 1);
    CHECK_MSG(strstr(out, "bad.json: properties.u: 'contains' is not supported"), "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 generate --model tests/fixtures/model/v3 --ids --prompt '1 2' --json-object") == 1);
    CHECK_MSG(strstr(out, "need the tokenizer"), "%s", out);
}

/* a choice (tool_choice "required"): one of the texts, at once, then that text's object */
TEST(json_guide_choice) {
    cJSON *p_add = cJSON_Parse("{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}, \"required\": [\"a\"], "
                               "\"additionalProperties\": false}");
    cJSON *p_bad = cJSON_Parse("{\"type\": \"object\", \"properties\": {\"s\": {\"propertyNames\": {}}}}");
    const char *texts[3] = {"add\n```json\n", "addx\n```json\n", "free\n```json\n"};
    const cJSON *schemas[3] = {p_add, NULL, p_bad}; /* NULL, and one outside the subset: any object */
    ds_json_schema *c = ds_json_schema_choice(texts, schemas, 3);
    CHECK(c != NULL);
    if (!c) return;
    expect(c, "add\n```json\n{\"a\": 1}");
    expect(c, "addx\n```json\n{\"z\": [true]}");
    expect(c, "free\n```json\n {\"s\": 3}");
    expect(c, "|\nadd");
    expect(c, "ad|x");
    expect(c, "add|y");
    expect(c, "add\n```json\n{\"|b\": 1}");
    expect(c, "add\n```json\n{\"a\": 1|.5}");
    expect(c, "addx\n```json\n|[1]");
    expect(c, "add\n```json\n{\"a\": 1}|}");
    ds_json_schema_free(c);
    cJSON_Delete(p_add), cJSON_Delete(p_bad);
}

/* what a Pydantic model's strict schema holds (the openai client sends these for
 * response_format=Model): "$defs" with "$ref", a recursive definition, anyOf
 * for an optional field */
static const char SCHEMA_P[] =
    "{\"$defs\": {\"Step\": {\"type\": \"object\", \"properties\": {\"explanation\": {\"type\": \"string\", \"title\": \"E\"}, "
    "\"output\": {\"type\": \"string\"}}, \"required\": [\"explanation\", \"output\"], \"additionalProperties\": false, \"title\": \"Step\"}, "
    "\"Node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": \"integer\"}, \"kids\": {\"type\": \"array\", \"items\": "
    "{\"$ref\": \"#/$defs/Node\"}}}, \"required\": [\"v\"], \"additionalProperties\": false}}, "
    "\"type\": \"object\", \"properties\": {\"steps\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/Step\"}}, "
    "\"final\": {\"type\": \"string\"}, \"note\": {\"anyOf\": [{\"type\": \"string\"}, {\"type\": \"null\"}], \"default\": null}, "
    "\"tree\": {\"$ref\": \"#/$defs/Node\", \"description\": \"a tree\"}}, \"required\": [\"steps\", \"final\"], "
    "\"additionalProperties\": false, \"title\": \"Math\"}";

TEST(json_guide_schema_refs_and_any_of) {
    ds_json_schema *p = schema_of(SCHEMA_P);
    CHECK_MSG(p != NULL, "%s", ds_errmsg());
    if (!p) return;
    expect(p, "{\"steps\":[{\"explanation\":\"a\",\"output\":\"b\"}],\"final\":\"x\",\"note\":null}");
    expect(p, "{\"steps\":[],\"final\":\"\",\"note\":\"n\",\"tree\":{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[{\"v\":-4}]}]}}");
    expect(p, "{\"steps\":[{\"explanation\":\"a\"|}]}");
    expect(p, "{\"steps\":[{\"output\":\"a\",\"explanation\":\"b\"|,");
    expect(p, "{\"steps\":[],\"final\":\"x\",\"note\":|1}");
    expect(p, "{\"steps\":[],\"final\":\"x\",\"tree\":{\"v\":1,\"kids\":[{\"|w\":1}]}}");
    expect(p, "{\"steps\":[],\"final\":\"x\",\"tree\":{\"kids\":[]|}}");
    ds_json_schema_free(p);
    static const char *const bad[][2] = {
        {"{\"type\": \"object\", \"properties\": {\"a\": {\"$ref\": \"#/$defs/Nope\"}}}", "properties.a: '$ref' '#/$defs/Nope'"},
        {"{\"properties\": {\"a\": {\"anyOf\": [{\"type\": \"string\"}, {\"enum\": [\"x\"]}]}}}", "can start alike"},
        {"{\"$defs\": {\"X\": {}}, \"properties\": {\"a\": {\"$ref\": \"#/$defs/X\", \"type\": \"string\"}}}", "'type' beside '$ref'"},
        {"{\"properties\": {\"a\": {\"anyOf\": [{\"type\": \"object\"}], \"type\": \"object\"}}}", "beside other keywords"},
        {"{\"properties\": {\"a\": {\"$ref\": \"http://x/s.json\"}}}", "only \"#/$defs/NAME\""},
    };
    refused_at_compile(bad, sizeof bad / sizeof bad[0]);
}

/* minLength / maxLength (code points of the decoded string, as Python's len:
 * the expected cuts were checked with json.loads), minItems / maxItems,
 * minProperties / maxProperties, allOf of one schema */
TEST(json_guide_schema_lengths_and_counts) {
    ds_json_schema *a = schema_of("{\"properties\": {\"s\": {\"type\": \"string\", \"minLength\": 2, \"maxLength\": 4}, "
                                  "\"a\": {\"type\": \"array\", \"items\": {\"type\": \"integer\"}, \"minItems\": 1, \"maxItems\": 2}, "
                                  "\"o\": {\"allOf\": [{\"$ref\": \"#/$defs/O\"}], \"description\": \"d\"}}, "
                                  "\"additionalProperties\": false, \"$defs\": {\"O\": {\"minProperties\": 1, \"maxProperties\": 2}}}");
    CHECK_MSG(a, "%s", ds_errmsg());
    if (!a) return;
    expect(a, "{\"s\":\"ab\"}");
    expect(a, "{\"s\":\"a|\"}");
    expect(a, "{\"s\":\"abcd|e\"}");
    expect(a, "{\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9ex\"}");         /* é € 𝄞 x: 4 */
    expect(a, "{\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9ex|\xc3\xa9\"}"); /* a fifth */
    expect(a, "{\"s\":\"\\u00e9\\n\\ud83d\\ude00x\"}");                    /* é, newline, one pair, x: 4 */
    expect(a, "{\"s\":\"\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00|x\"}");
    expect(a, "{\"s\":\"\\ud83d\\ud83d\\ude00\"}");                        /* a lone high surrogate, then a pair: 2 */
    expect(a, "{\"s\":\"\\ude00\\ud83d\"}");                               /* low then high: 2 */
    expect(a, "{\"s\":\"\\ud83dabc|d\"}");
    expect(a, "{\"s\":\"\\u00e9|\"}");
    expect(a, "{\"a\":[|]}");
    expect(a, "{\"a\":[1]}");
    expect(a, "{\"a\":[ 1 , 2 ]}");
    expect(a, "{\"a\":[1,2|,3]}");
    expect(a, "{\"o\":{|}}");
    expect(a, "{\"o\":{\"x\":1}}");
    expect(a, "{\"o\":{\"x\":1,\"y\":[]}}");
    expect(a, "{\"o\":{\"x\":1,\"y\":[]|,\"z\":2}}");
    ds_json_schema_free(a);
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* some text in the sorted list starts with p */
static int has_prefix(char **v, int n, const char *p) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (strcmp(v[mid], p) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && !strncmp(v[lo], p, strlen(p));
}

/* minimum / maximum / exclusive* (and multipleOf of integers): against every number text in a range.  The
 * oracle: a prefix is taken iff some text whose value (strtod, a double as
 * Python's json reads it) meets the bounds starts with it; a text is whole
 * iff its value meets them.  Integers in [-1200, 1200] for integer schemas;
 * numbers of up to 3 decimals in [-60, 60] for number schemas (the bounds
 * have one decimal and lie inside the enumerated ranges, so longer texts
 * add nothing to the prefixes tried: those of up to 2 decimals) */
TEST(json_guide_schema_number_bounds) {
    static const char *const ints[] = {
        "{\"minimum\": -3, \"maximum\": 17}", "{\"exclusiveMinimum\": 0, \"maximum\": 100}", "{\"minimum\": 5, \"maximum\": 500}",
        "{\"maximum\": -7, \"minimum\": -500}", "{\"minimum\": -250, \"exclusiveMaximum\": -20}", "{\"minimum\": 150, \"maximum\": 160}",
        "{\"minimum\": 2.5, \"maximum\": 9.5}", "{\"minimum\": 0, \"maximum\": 0}",
        "{\"minimum\": 1000, \"maximum\": 1100}", "{\"maximum\": -1000, \"minimum\": -1150}",
        "{\"multipleOf\": 7, \"minimum\": -500, \"maximum\": 500}", "{\"multipleOf\": 25, \"minimum\": -130, \"exclusiveMaximum\": 990}",
        "{\"multipleOf\": 1000, \"exclusiveMinimum\": 0, \"maximum\": 1100}", "{\"multipleOf\": 3, \"maximum\": -1000, \"minimum\": -1150}",
        "{\"multipleOf\": 400, \"minimum\": 1001, \"maximum\": 1199}", "{\"multipleOf\": 1, \"minimum\": 4, \"maximum\": 6}",
        "{\"multipleOf\": 11, \"minimum\": 1100, \"maximum\": 1200}"};
    static const char *const nums[] = {
        "{\"minimum\": -2.5, \"maximum\": 7.3}", "{\"exclusiveMinimum\": 0, \"exclusiveMaximum\": 1}",
        "{\"minimum\": 0.5, \"maximum\": 50}", "{\"maximum\": -0.5, \"minimum\": -50}", "{\"minimum\": 12.3, \"maximum\": 12.4}",
        "{\"exclusiveMinimum\": -1.5, \"exclusiveMaximum\": -1.4}"};
    for (int kind = 0; kind < 2; kind++) {
        const int nb = kind ? (int)(sizeof nums / sizeof *nums) : (int)(sizeof ints / sizeof *ints);
        /* the texts: integers, or numbers with 0 to 3 decimals */
        int nt = 0, cap = kind ? 121 * 1111 * 2 : 2401 + 1;
        char **all = ds_malloc((size_t)cap * sizeof(char *));
        if (!kind) {
            for (int v = -1200; v <= 1200; v++) all[nt] = ds_malloc(8), snprintf(all[nt++], 8, "%d", v);
            all[nt++] = ds_strdup("-0");
        } else {
            for (int ip = 0; ip <= 60; ip++)
                for (int neg = 0; neg < 2; neg++) {
                    char b[32];
                    snprintf(b, sizeof b, "%s%d", neg ? "-" : "", ip);
                    all[nt++] = ds_strdup(b);
                    for (int nd = 1; nd <= 3; nd++)
                        for (int f = 0; f < (nd == 1 ? 10 : nd == 2 ? 100 : 1000); f++) {
                            snprintf(b, sizeof b, "%s%d.%0*d", neg ? "-" : "", ip, nd, f);
                            all[nt++] = ds_strdup(b);
                        }
                }
        }
        for (int bi = 0; bi < nb; bi++) {
            const char *bounds = kind ? nums[bi] : ints[bi]; /* an object: its members go into v's schema */
            char sch[256];
            snprintf(sch, sizeof sch, "{\"properties\": {\"v\": {\"type\": \"%s\", %.*s}}, \"additionalProperties\": false}",
                     kind ? "number" : "integer", (int)strlen(bounds) - 2, bounds + 1);
            ds_json_schema *sc = schema_of(sch);
            CHECK_MSG(sc, "%s: %s", sch, ds_errmsg());
            if (!sc) continue;
            cJSON *bj = cJSON_Parse(bounds);
            const cJSON *mn = cJSON_GetObjectItem(bj, "minimum"), *mx = cJSON_GetObjectItem(bj, "maximum");
            const cJSON *emn = cJSON_GetObjectItem(bj, "exclusiveMinimum"), *emx = cJSON_GetObjectItem(bj, "exclusiveMaximum");
            const cJSON *mo = cJSON_GetObjectItem(bj, "multipleOf");
            char **good = ds_malloc((size_t)nt * sizeof(char *));
            int ng = 0;
            for (int i = 0; i < nt; i++) {
                const double x = strtod(all[i], NULL);
                if ((!mn || x >= mn->valuedouble) && (!mx || x <= mx->valuedouble) && (!emn || x > emn->valuedouble) &&
                    (!emx || x < emx->valuedouble) && (!mo || fmod(x, mo->valuedouble) == 0))
                    good[ng++] = all[i];
            }
            qsort(good, (size_t)ng, sizeof *good, cmp_str);
            int wrong = 0;
            char first[96] = "";
            for (int i = 0; i < nt && wrong < 5; i++) {
                const char *t = all[i], *dot = strchr(t, '.');
                if (dot && strlen(dot + 1) > 2) continue;
                ds_json_state st;
                ds_json_state_init(&st, sc);
                ds_json_state_feed(&st, "{\"v\":", 5);
                for (size_t k = 1; k <= strlen(t); k++) {
                    char p[32];
                    memcpy(p, t, k), p[k] = 0;
                    ds_json_state u;
                    memcpy(&u, &st, sizeof u);
                    const int got = !ds_json_state_feed(&u, p, k), want = has_prefix(good, ng, p);
                    if (got != want && !wrong++) snprintf(first, sizeof first, "prefix %s: taken %d, want %d", p, got, want);
                }
                ds_json_state u;
                memcpy(&u, &st, sizeof u);
                const int whole = !ds_json_state_feed(&u, t, strlen(t)) && !ds_json_state_feed(&u, "}", 1);
                const int want = bsearch(&t, good, (size_t)ng, sizeof *good, cmp_str) != NULL;
                if (whole != want && !wrong++) snprintf(first, sizeof first, "%s}: complete %d, want %d", t, whole, want);
            }
            CHECK_MSG(!wrong, "%s: %d wrong, first %s", sch, wrong, first);
            /* no exponent under bounds */
            ds_json_state u;
            ds_json_state_init(&u, sc);
            CHECK(ds_json_state_feed(&u, kind ? "{\"v\":1e" : "{\"v\":1.", 7) != 0);
            free(good);
            cJSON_Delete(bj);
            ds_json_schema_free(sc);
        }
        for (int i = 0; i < nt; i++) free(all[i]);
        free(all);
    }
    /* multipleOf without bounds: any prefix goes on to a multiple; at most 15 digits */
    ds_json_schema *m7 = schema_of("{\"properties\": {\"m\": {\"type\": \"integer\", \"multipleOf\": 7}}}");
    CHECK_MSG(m7, "%s", ds_errmsg());
    if (!m7) return;
    expect(m7, "{\"m\":700000000000000}");
    expect(m7, "{\"m\":-14 }");
    expect(m7, "{\"m\":0}");
    expect(m7, "{\"m\":15|}");
    expect(m7, "{\"m\":700000000000000|0}"); /* a 16th digit */
    expect(m7, "{\"m\":10000000000000|0}");  /* 15 digits: 1e14 is no multiple of 7 */
    expect(m7, "{\"m\":7|.0}");
    ds_json_schema_free(m7);
}

/* the arrays {"v": [...]} of up to maxn items drawn from cand (member[i]: cand[i] is one of the enum's
 * members, each written as json.dumps writes it, all distinct) against schema sch: a doc is valid iff
 * every item is a member, no two are the same and there are at most maxitems (-1: any); the guide must
 * take exactly the prefixes of valid docs (it stops at the first byte no valid doc continues with) and
 * complete exactly the valid ones */
static void unique_universe(const char *sch, const char *const *cand, const int *member, int nc, int maxn, int maxitems) {
    ds_json_schema *sc = schema_of(sch);
    CHECK_MSG(sc, "%s", ds_errmsg());
    if (!sc) return;
    int cap = 0;
    for (int n = 0, p = 1; n <= maxn; n++, p *= nc) cap += p;
    char **all = ds_malloc((size_t)cap * sizeof(char *)), **good = ds_malloc((size_t)cap * sizeof(char *));
    int nall = 0, ngood = 0;
    for (int n = 0; n <= maxn; n++) {
        int idx[8] = {0};
        for (;;) {
            char doc[160] = "{\"v\":[";
            int valid = maxitems < 0 || n <= maxitems;
            for (int i = 0; i < n; i++) {
                if (i) strcat(doc, ",");
                strcat(doc, cand[idx[i]]);
                valid &= member[idx[i]];
                for (int j = 0; j < i; j++) valid &= idx[j] != idx[i];
            }
            strcat(doc, "]}");
            all[nall++] = ds_strdup(doc);
            if (valid) good[ngood++] = all[nall - 1];
            int k = n - 1;
            while (k >= 0 && ++idx[k] == nc) idx[k--] = 0;
            if (k < 0) break;
        }
    }
    qsort(good, (size_t)ngood, sizeof *good, cmp_str);
    int wrong = 0;
    for (int d = 0; d < nall && wrong < 5; d++) {
        const char *t = all[d];
        const size_t len = strlen(t);
        size_t cut = 0; /* the longest prefix some valid doc starts with */
        char p[160];
        while (cut < len) {
            memcpy(p, t, cut + 1), p[cut + 1] = 0;
            if (!has_prefix(good, ngood, p)) break;
            cut++;
        }
        ds_json_state st;
        ds_json_state_init(&st, sc);
        size_t got = 0;
        while (got < len && !ds_json_state_feed(&st, t + got, 1)) got++;
        const int done = got == len && ds_json_state_done(&st);
        if (got != cut || done != (cut == len)) {
            CHECK_MSG(0, "%s: taken up to byte %zu (complete %d), want %zu", t, got, done, cut);
            wrong++;
        }
    }
    fprintf(stderr, "  %d arrays, %d valid\n", nall, ngood);
    CHECK(ngood > 1 && nall > 2 * ngood);
    for (int i = 0; i < nall; i++) free(all[i]);
    free(all), free(good);
    ds_json_schema_free(sc);
}

/* uniqueItems over enum items: two strings where one is a prefix of the other, two numbers likewise,
 * 1.0 (written "1": one value with 1, taken together), true (unlike 1), and 4 non-members, at most 4
 * items; then two members and no maxItems, so that a full array takes no ',' */
TEST(json_guide_schema_unique_items) {
    static const char *const c1[] = {"\"a\"", "\"ab\"", "1", "12", "true", "\"b\"", "2", "false", "null"};
    static const int m1[] = {1, 1, 1, 1, 1, 0, 0, 0, 0};
    unique_universe("{\"properties\": {\"v\": {\"type\": \"array\", \"items\": {\"enum\": [\"a\", \"ab\", 1, 12, 1.0, true]}, "
                    "\"uniqueItems\": true, \"maxItems\": 4}}, \"additionalProperties\": false}", c1, m1, 9, 5, 4);
    static const char *const c2[] = {"\"x\"", "\"y\"", "\"z\""};
    static const int m2[] = {1, 1, 0};
    unique_universe("{\"properties\": {\"v\": {\"items\": {\"$ref\": \"#/$defs/E\"}, \"uniqueItems\": true}}, "
                    "\"$defs\": {\"E\": {\"enum\": [\"x\", \"y\"]}}}", c2, m2, 3, 4, -1);
}
