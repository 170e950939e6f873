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
