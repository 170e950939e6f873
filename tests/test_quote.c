/*
 * test_quote.c — echoed input in error messages: ds_quote's escaping and
 * bounds, and one-line errors without raw control bytes for tokenizer.json,
 * config.json and eval files whose strings hold newlines and ESC (library
 * and CLI), and for tokenizer.json with invalid UTF-8 in vocab, merges and
 * added tokens.
 */
#include "test.h"
#include "base/base.h"
#include "base/quote.h"
#include "tokenizer/tokenizer.h"

/* exactly one line (ending in '\n' for CLI output, none for ds_errmsg), no
 * control byte, no invalid UTF-8 */
static int clean_line(const char *m, int cli) {
    size_t n = strlen(m);
    if (cli) {
        if (n == 0 || m[n - 1] != '\n') return 0;
        n--;
        /* a usage error (exit 2) may add the hint line "try 'dsv3 CMD --help'" */
        const char *hint = n ? memchr(m, '\n', n) : NULL;
        if (hint && !strncmp(hint + 1, "try 'dsv3 ", 10) && !memchr(hint + 1, '\n', n - (size_t)(hint + 1 - m)))
            n = (size_t)(hint - m);
    }
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)m[i];
        if (c < 0x20 || c == 0x7F) return 0;
    }
    /* invalid UTF-8 or C1 would show up as these bytes */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)m[i] == 0xC2 && i + 1 < n && (unsigned char)m[i + 1] < 0xA0) return 0;
    return 1;
}

TEST(quote_escapes_and_bounds) {
    CHECK(!strcmp(ds_quote("abc"), "'abc'"));
    CHECK(!strcmp(ds_quote("a\nb\tc\rd"), "'a\\nb\\tc\\rd'"));
    CHECK(!strcmp(ds_quote("\x1b[31mred"), "'\\x1B[31mred'"));
    CHECK(!strcmp(ds_quote("it's a\\b"), "'it\\'s a\\\\b'"));
    CHECK(!strcmp(ds_dquote("say \"hi\"'"), "\"say \\\"hi\\\"'\""));
    CHECK(!strcmp(ds_quote("x\x7f\x01"), "'x\\x7F\\x01'"));
    /* valid UTF-8 stays, invalid bytes and truncated sequences are \xNN */
    CHECK(!strcmp(ds_quote("\xe4\xb8\xad\xe6\x96\x87"), "'\xe4\xb8\xad\xe6\x96\x87'"));
    CHECK(!strcmp(ds_quote("a\xff" "b\xe4\xb8"), "'a\\xFFb\\xE4\\xB8'"));
    CHECK(!strcmp(ds_quote("\xed\xa0\x80"), "'\\xED\\xA0\\x80'")); /* a surrogate */
    /* C1 controls, line and paragraph separators, bidi overrides */
    CHECK(!strcmp(ds_quote("a\xc2\x85" "b\xe2\x80\xa8" "c\xe2\x80\xae"), "'a\\u0085b\\u2028c\\u202E'"));
    /* NUL bytes inside a counted string */
    CHECK(!strcmp(ds_quote_n("a\0b", 3), "'a\\x00b'"));
    CHECK(!strcmp(ds_quote(NULL), "(null)"));
    /* long input: cut with "...", bounded, never inside an escape or a character */
    char big[1000];
    for (int i = 0; i < 999; i++) big[i] = i % 3 ? 'x' : '\n';
    big[999] = 0;
    const char *q = ds_quote(big);
    size_t ql = strlen(q);
    CHECK_MSG(ql <= DS_QUOTE_MAX + 8 && ql > 40, "length %zu", ql);
    CHECK(!strcmp(q + ql - 4, "...'"));
    CHECK(q[ql - 5] != '\\');
    for (int i = 0; i < 300; i++) memcpy(big + 3 * i, "\xe4\xb8\xad", 3);
    q = ds_quote(big);
    ql = strlen(q);
    CHECK(!strcmp(q + ql - 4, "...'") && (ql - 5) % 3 == 0); /* whole characters only */
    /* several quotes in one message */
    char m[256];
    snprintf(m, sizeof m, "%s %s %s", ds_quote("a"), ds_quote("b\n"), ds_quote("c"));
    CHECK(!strcmp(m, "'a' 'b\\n' 'c'"));
}

static void expect_clean_error(const char *json, const char *needle) {
    ds_err_clear();
    ds_tokenizer *t = ds_tokenizer_load_mem(json, strlen(json), "tok.json");
    CHECK_MSG(t == NULL, "loaded, expected an error with '%s'", needle);
    ds_tokenizer_free(t);
    const char *m = ds_errmsg();
    CHECK_MSG(clean_line(m, 0), "not one clean line: %s", ds_quote(m));
    CHECK_MSG(strstr(m, needle) != NULL, "message %s lacks '%s'", ds_quote(m), needle);
    CHECK(strstr(m, "tok.json") != NULL);
}

#define TOK(pre, vocab, merges, added)                                                                  \
    "{\"added_tokens\":" added ",\"normalizer\":null,\"pre_tokenizer\":" pre ",\"decoder\":null,"      \
    "\"model\":{\"type\":\"BPE\",\"vocab\":" vocab ",\"merges\":" merges "}}"
#define BL "{\"type\":\"ByteLevel\",\"use_regex\":false}"
#define V "{\"a\":0,\"b\":1,\"ab\":2}"

/* tokenizer.json strings with newlines and ESC are quoted; invalid UTF-8 in
 * the vocabulary, merges and added tokens is a one-line error naming the entry */
TEST(tokenizer_errors_quote_input) {
    expect_clean_error("{\"model\":{\"type\":\"BPE\\n\\u001b[31mX\",\"vocab\":{}}}", "model.type 'BPE\\n\\x1B[31mX' is not supported");
    expect_clean_error(TOK("{\"type\":\"Split\\r\\n\",\"pattern\":{\"String\":\"a\"}}", V, "[]", "[]"),
                       "pre-tokenizer type 'Split\\r\\n' is not supported");
    expect_clean_error(TOK("{\"type\":\"Split\",\"pattern\":{\"String\":\"a\"},\"behavior\":\"\\u001bx\\n\"}", V, "[]", "[]"),
                       "behavior '\\x1Bx\\n' is not supported");
    expect_clean_error(TOK(BL, V, "[\"a\\n\\u001b b\"]", "[]"), "model.merges[0]: unknown token 'a\\n\\x1B'");
    expect_clean_error(TOK(BL, V, "[\"a\\u0085b\"]", "[]"), "model.merges[0]: 'a\\u0085b' is not \"a b\"");
    expect_clean_error("{\"normalizer\":{\"type\":\"N\\nFKC\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                       "normalizer 'N\\nFKC' is not supported");
    expect_clean_error("{\"decoder\":{\"type\":\"\\u2028\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                       "decoder '\\u2028' is not supported");
    expect_clean_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\\nb\":-1},\"merges\":[]}}", "model.vocab['a\\nb']");
    /* invalid UTF-8, raw in the JSON text */
    expect_clean_error(TOK(BL, "{\"a\":0,\"b\xff\":1}", "[]", "[]"), "model.vocab['b\\xFF']: token is not valid UTF-8");
    expect_clean_error(TOK(BL, "{\"a\":0,\"\xe4\xb8\":1}", "[]", "[]"), "model.vocab['\\xE4\\xB8']: token is not valid UTF-8");
    expect_clean_error(TOK(BL, V, "[\"a \xc0\x80\"]", "[]"), "model.merges[0]: 'a' '\\xC0\\x80': not valid UTF-8");
    expect_clean_error(TOK(BL, V, "[[\"a\\u0000\", \"\xed\xa0\x80\"]]", "[]"), "model.merges[0]: 'a' '\\xED\\xA0\\x80': not valid UTF-8");
    expect_clean_error(TOK(BL, V, "[]", "[{\"id\":3,\"content\":\"<s\xff>\"}]"), "added_tokens[0].content '<s\\xFF>': not valid UTF-8");
    /* the valid file loads */
    const char *ok = TOK(BL, V, "[\"a b\"]", "[{\"id\":3,\"content\":\"<s>\"}]");
    ds_tokenizer *t = ds_tokenizer_load_mem(ok, strlen(ok), "tok.json");
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    ds_tokenizer_free(t);
}

/* CLI: malformed tokenizer.json, config.json and eval files whose strings hold
 * newlines and ESC give exactly one line on stderr, without raw control bytes */
TEST(cli_errors_one_clean_line) {
    const char *dir = ds_test_tmpdir();
    char out[4096];
    int rc = ds_test_sh(out, sizeof out,
                        "printf '{\"model\":{\"type\":\"BPE\\\\n\\\\u001b[2J\\\\u001b[31mX\",\"vocab\":{}}}' > %s/t.json && "
                        "printf x | $DSV3 tokenizer encode --tokenizer %s/t.json", dir, dir);
    CHECK_MSG(rc == 1 && clean_line(out, 1) && strstr(out, "\\x1B[2J"), "rc %d: %s", rc, ds_quote(out));
    /* config.json: a model_type with a newline and ESC */
    rc = ds_test_sh(out, sizeof out,
                    "mkdir -p %s/m && printf '{\"model_type\": \"deepseek_v3\\\\n\\\\u001b[31m\"}' > %s/m/config.json && "
                    "$DSV3 inspect %s/m", dir, dir, dir);
    CHECK_MSG(rc != 0 && clean_line(out, 1) && strstr(out, "model_type"), "rc %d: %s", rc, ds_quote(out));
    /* eval: a HellaSwag-format file whose gold label line holds ESC and CR */
    rc = ds_test_sh(out, sizeof out,
                    "printf 'ctx\\n\\033[31m1\\r\\na\\nb\\nc\\nd\\n' > %s/hs.txt && "
                    "$DSV3 eval --model builtin:uniform-bytes --no-progress --task mc:%s/hs.txt", dir, dir);
    CHECK_MSG(rc != 0 && clean_line(out, 1) && strstr(out, "gold label '\\x1B[31m1\\r'"), "rc %d: %s", rc, ds_quote(out));
    /* eval: a task spec (a CLI argument) with a newline */
    rc = ds_test_sh(out, sizeof out, "$DSV3 eval --model builtin:uniform-bytes --no-progress --task \"$(printf 'qq\\n\\033x')\"");
    CHECK_MSG(rc != 0 && clean_line(out, 1) && strstr(out, "unknown task 'qq\\n\\x1Bx'"), "rc %d: %s", rc, ds_quote(out));
    /* eval: a JSONL file with a raw ESC inside a string and a broken row */
    rc = ds_test_sh(out, sizeof out,
                    "printf '{\"query\": \"q\\033[31m\", \"choices\": [\"a\\\\n\"], \"gold\": 5}\\n' > %s/mc.jsonl && "
                    "$DSV3 eval --model builtin:uniform-bytes --no-progress --task mc:%s/mc.jsonl", dir, dir);
    CHECK_MSG(rc != 0 && clean_line(out, 1), "rc %d: %s", rc, ds_quote(out));
}
