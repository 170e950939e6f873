/* test_json.c — JSON helpers: number printing against Python's json.dumps
 * (tests/fixtures/io/float_repr.txt from tools/make_io_fixtures.py), string
 * escaping against Python's ensure_ascii output, UTF-8 validation. */
#include "test.h"
#include "base/base.h"
#include "io/json.h"

#include <stdint.h>

TEST(double_printing_matches_python_repr) {
    size_t n;
    char *txt = ds_read_file("tests/fixtures/io/float_repr.txt", &n);
    CHECK_MSG(txt != NULL, "fixtures missing: run python3 tools/make_io_fixtures.py");
    if (!txt) return;
    int lines = 0, bad = 0;
    char *save = NULL;
    for (char *ln = strtok_r(txt, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        unsigned long long bits;
        char want[64];
        if (sscanf(ln, "%llx %63s", &bits, want) != 2) continue;
        double v;
        uint64_t b = bits;
        memcpy(&v, &b, 8);
        ds_sbuf s = {0};
        ds_json_put_double(&s, v);
        char *got = ds_sbuf_take(&s);
        if (strcmp(got, want)) {
            if (bad++ < 5) CHECK_MSG(0, "%016llx: got %s, python %s", bits, got, want);
        }
        free(got);
        lines++;
    }
    CHECK(lines > 500);
    CHECK(bad == 0);
    free(txt);
}

TEST(string_escaping_like_python_ensure_ascii) {
    /* json.dumps("a\"b\\c\n\t\x01é€😀") == "\"a\\\"b\\\\c\\n\\t\\u0001\\u00e9\\u20ac\\ud83d\\ude00\"" */
    ds_sbuf s = {0};
    ds_json_put_string(&s, "a\"b\\c\n\t\x01\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    char *got = ds_sbuf_take(&s);
    CHECK_MSG(!strcmp(got, "\"a\\\"b\\\\c\\n\\t\\u0001\\u00e9\\u20ac\\ud83d\\ude00\""), "%s", got);
    free(got);
}

TEST(utf8_validation) {
    size_t at = 0;
    CHECK(ds_utf8_valid((const unsigned char *)"abc \xc3\xa9 \xf0\x9f\x98\x80", 11, &at));
    CHECK(!ds_utf8_valid((const unsigned char *)"ab\xc0\xaf", 4, &at) && at == 2);       /* overlong */
    CHECK(!ds_utf8_valid((const unsigned char *)"\xed\xa0\x80", 3, &at) && at == 0);     /* surrogate */
    CHECK(!ds_utf8_valid((const unsigned char *)"x\xf4\x90\x80\x80", 5, &at) && at == 1); /* > U+10FFFF */
    CHECK(!ds_utf8_valid((const unsigned char *)"xy\xe2\x82", 4, &at) && at == 2);       /* truncated */
    CHECK(!ds_utf8_valid((const unsigned char *)"\x80", 1, &at) && at == 0);             /* lone continuation */
}

TEST(parse_errors_have_positions) {
    cJSON *j = ds_json_parse("{\n  \"a\": [1, 2,\n}", 17, "x.json");
    CHECK(j == NULL);
    CHECK_MSG(strstr(ds_errmsg(), "x.json: invalid JSON at line 3"), "%s", ds_errmsg());
    /* length-limited: text after len is not read */
    j = ds_json_parse("{\"a\": 1}garbage", 8, "y.json");
    CHECK(j != NULL && cJSON_GetObjectItem(j, "a")->valueint == 1);
    cJSON_Delete(j);
    int64_t v;
    cJSON *num = cJSON_CreateNumber(3.5);
    CHECK(ds_json_int64(num, &v) != 0);
    num->valuedouble = 1e17;
    CHECK(ds_json_int64(num, &v) != 0);
    num->valuedouble = -42;
    CHECK(ds_json_int64(num, &v) == 0 && v == -42);
    cJSON_Delete(num);
}

/* A repeated key keeps its last value (Python's json.loads: {"a": 1, "a": 2}
 * is {"a": 2}), at the position of the first, in nested objects and in big
 * ones (expected text: Python's json.dumps(json.loads(t), separators=(",",
 * ":"))); ds_json_parse_keep_dups keeps them all. */
TEST(json_duplicate_keys_last_wins) {
    const char *t = "{\"a\": 1, \"b\": {\"x\": [1], \"x\": {\"y\": 1, \"y\": 3}}, \"a\": 2, \"c\": [{\"k\": 0, \"k\": 5}]}";
    cJSON *j = ds_json_parse(t, strlen(t), "t.json");
    CHECK(j != NULL);
    if (!j) return;
    char *s = cJSON_PrintUnformatted(j);
    CHECK_MSG(!strcmp(s, "{\"a\":2,\"b\":{\"x\":{\"y\":3}},\"c\":[{\"k\":5}]}"), "%s", s);
    free(s);
    cJSON_Delete(j);
    j = ds_json_parse_keep_dups(t, strlen(t), "t.json");
    CHECK(j && cJSON_GetArraySize(j) == 4);
    cJSON_Delete(j);
    /* 20000 members, every key twice: 10000 remain with the second values */
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{");
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 10000; i++) ds_sbuf_printf(&b, "%s\"k%d\": %d", r || i ? ", " : "", i, i + r * 100000);
    ds_sbuf_puts(&b, "}");
    char *big = ds_sbuf_take(&b);
    j = ds_json_parse(big, strlen(big), "big.json");
    CHECK(j && cJSON_GetArraySize(j) == 10000);
    CHECK(j && cJSON_GetObjectItemCaseSensitive(j, "k0")->valueint == 100000);
    CHECK(j && cJSON_GetObjectItemCaseSensitive(j, "k9999")->valueint == 109999);
    cJSON_Delete(j);
    free(big);
}
