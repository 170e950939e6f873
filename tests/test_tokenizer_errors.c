/*
 * test_tokenizer_errors.c — bad tokenizer.json input: each case is a one-line
 * error that says what and where, never a crash; the CLI exits non-zero and
 * writes nothing.
 */
#include "test.h"
#include "base/base.h"
#include "tokenizer/tokenizer.h"

/* a minimal valid file, with pieces replaced per case */
#define VOCAB "{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3}"
static const char *mk(char *buf, size_t cap, const char *pre, const char *model_extra, const char *merges) {
    snprintf(buf, cap,
             "{\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":%s,\"decoder\":{\"type\":\"ByteLevel\"},"
             "\"model\":{\"type\":\"BPE\",%s\"vocab\":" VOCAB ",\"merges\":%s}}",
             pre, model_extra, merges);
    return buf;
}

static void expect_fail(const char *json, const char *needle) {
    ds_err_clear();
    ds_tokenizer *t = ds_tokenizer_load_mem(json, strlen(json), "tok.json");
    CHECK_MSG(t == NULL, "loaded, expected an error with '%s'", needle);
    ds_tokenizer_free(t);
    const char *m = ds_errmsg();
    CHECK_MSG(strstr(m, needle) != NULL, "message '%s' lacks '%s'", m, needle);
    CHECK_MSG(strchr(m, '\n') == NULL, "message has more than one line: '%s'", m);
    CHECK(strstr(m, "tok.json") != NULL);
}

TEST(tokenizer_error_cases) {
    char b[4096];
    const char *bl = "{\"type\":\"ByteLevel\",\"use_regex\":false}";
    /* the minimal file itself loads */
    mk(b, sizeof b, bl, "", "[\"a b\"]");
    ds_tokenizer *t = ds_tokenizer_load_mem(b, strlen(b), "tok.json");
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    if (t) {
        int32_t *ids;
        CHECK(ds_tokenizer_encode(t, "ab", 2, 1, &ids) == 1 && ids[0] == 2);
        free(ids);
    }
    ds_tokenizer_free(t);
    expect_fail("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}", "malformed JSON");
    expect_fail("", "malformed JSON");
    expect_fail("[1, 2]", "not a JSON object");
    expect_fail("{\"version\":\"1.0\"}", "model: missing");
    expect_fail("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", "model.vocab: missing");
    expect_fail("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "model.type 'WordPiece' is not supported");
    expect_fail(mk(b, sizeof b, "{\"type\":\"Whitespace\"}", "", "[]"), "pre-tokenizer type 'Whitespace' is not supported");
    expect_fail(mk(b, sizeof b, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Metaspace\"}]}", "", "[]"),
                "pre_tokenizer.pretokenizers[0]: pre-tokenizer type 'Metaspace'");
    expect_fail(mk(b, sizeof b, bl, "", "[\"a c\"]"), "model.merges[0]: unknown token 'c'");
    expect_fail(mk(b, sizeof b, bl, "", "[\"a b\", [\"b\", \"zz\"]]"), "model.merges[1]: unknown token 'zz'");
    expect_fail(mk(b, sizeof b, bl, "", "[\"b a\"]"), "merged token 'ba' is not in the vocab");
    expect_fail(mk(b, sizeof b, bl, "", "[\"ab\"]"), "is not \"a b\"");
    expect_fail(mk(b, sizeof b, bl, "", "[[\"a\"]]"), "model.merges[0]: neither");
    expect_fail(mk(b, sizeof b, bl, "", "{}"), "model.merges: not an array");
    expect_fail(mk(b, sizeof b, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":\"Isolated\"}", "", "[]"),
                "regex does not compile");
    expect_fail(mk(b, sizeof b, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}", "", "[]"),
                "behavior 'Sideways' is not supported");
    expect_fail(mk(b, sizeof b, "{\"type\":\"Split\",\"behavior\":\"Isolated\"}", "", "[]"), "pattern: missing");
    expect_fail(mk(b, sizeof b, bl, "\"unk_token\":\"<unk>\",", "[]"), "model.unk_token '<unk>' is not in the vocab");
    expect_fail(mk(b, sizeof b, bl, "\"dropout\":0.1,", "[]"), "dropout");
    expect_fail("{\"normalizer\":{\"type\":\"NFKC\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                "normalizer 'NFKC' is not supported");
    expect_fail("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "model.vocab['a']: id is not an integer");
    expect_fail("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", "model.vocab['a']");
    expect_fail("{\"added_tokens\":[{\"id\":5}],\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                "added_tokens[0].content: missing");
    expect_fail("{\"post_processor\":{\"type\":\"BertProcessing\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                "post-processor type 'BertProcessing' is not supported");
    expect_fail("{\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}}],"
                "\"special_tokens\":{}},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                "special_tokens: '<s>' missing");
    expect_fail("{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                "decoder 'WordPiece' is not supported");
}

/* A truncated copy of DeepSeek-V3's file fails cleanly, at every cut tried. */
TEST(tokenizer_error_truncated_file) {
    const char *p = ds_test_shared("data/deepseek_v3_tokenizer/tokenizer.json");
    if (!p) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    size_t n;
    char *d = ds_read_file(p, &n);
    size_t cuts[] = {0, 1, 100, 5000, n / 3, n / 2, n - 2};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        ds_tokenizer *t = ds_tokenizer_load_mem(d, cuts[i], "tokenizer.json");
        CHECK(t == NULL && strstr(ds_errmsg(), "malformed JSON"));
        ds_tokenizer_free(t);
    }
    free(d);
    CHECK(ds_tokenizer_load("/no/such/dir") == NULL && strstr(ds_errmsg(), "/no/such/dir/tokenizer.json"));
}

/* A folder: tokenizer.json + tokenizer_config.json; a broken config is an error that names it. */
TEST(tokenizer_folder_and_config) {
    const char *dir = ds_test_tmpdir();
    char out[2048];
    int rc = ds_test_sh(out, sizeof out, "cp tests/fixtures/tokenizer/llama3_style.json %s/tokenizer.json && "
                        "printf '{\"bos_token\": {\"content\": \"<|end_of_text|>\"}, \"add_bos_token\": true}' > %s/tokenizer_config.json",
                        dir, dir);
    CHECK(rc == 0);
    ds_tokenizer *t = ds_tokenizer_load(dir);
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    if (t) CHECK(ds_tokenizer_bos_id(t) == ds_tokenizer_token_to_id(t, "<|end_of_text|>") && ds_tokenizer_add_bos(t));
    ds_tokenizer_free(t);
    rc = ds_test_sh(out, sizeof out, "printf '{\"bos_token\": ' > %s/tokenizer_config.json", dir);
    t = ds_tokenizer_load(dir);
    CHECK(t == NULL && strstr(ds_errmsg(), "tokenizer_config.json: malformed JSON"));
    ds_tokenizer_free(t);
    /* a file whose name does not end in .json loads as a file */
    rc = ds_test_sh(out, sizeof out, "rm %s/tokenizer_config.json && cp tests/fixtures/tokenizer/llama3_style.json %s/tok.bin", dir, dir);
    char *p = ds_path_join(dir, "tok.bin");
    t = ds_tokenizer_load(p);
    CHECK_MSG(t != NULL, "%s", ds_errmsg());
    ds_tokenizer_free(t);
    free(p);
}

/* Decoding an id out of range is an error, not a read past the table. */
TEST(tokenizer_error_decode_bad_id) {
    ds_tokenizer *t = ds_tokenizer_load("tests/fixtures/tokenizer/llama3_style.json");
    CHECK(t != NULL);
    if (!t) return;
    int32_t ids[] = {5, -1};
    size_t l;
    CHECK(ds_tokenizer_decode(t, ids, 2, 0, &l) == NULL && strstr(ds_errmsg(), "id -1 at position 1"));
    ids[1] = 1 << 30;
    CHECK(ds_tokenizer_decode(t, ids, 2, 0, &l) == NULL && strstr(ds_errmsg(), "out of range"));
    ds_tokenizer_free(t);
}

/* CLI: one line on stderr, non-zero exit, no output file. */
TEST(tokenizer_cli_errors) {
    const char *dir = ds_test_tmpdir();
    char out[4096];
    int rc = ds_test_sh(out, sizeof out, "printf '{\"model\": [' > %s/bad.json && printf x | $DSV3 tokenizer encode --tokenizer %s/bad.json", dir, dir);
    CHECK_MSG(rc == 1 && strstr(out, "malformed JSON") && strchr(out, '\n') == strrchr(out, '\n'), "rc %d: %s", rc, out);
    rc = ds_test_sh(out, sizeof out, "echo '1 2 x' | $DSV3 tokenizer decode --tokenizer tests/fixtures/tokenizer/llama3_style.json");
    CHECK_MSG(rc == 1 && strstr(out, "not a token id"), "rc %d: %s", rc, out);
    rc = ds_test_sh(out, sizeof out, "echo '1 99999999' | $DSV3 tokenizer decode --tokenizer tests/fixtures/tokenizer/llama3_style.json");
    CHECK_MSG(rc == 1 && strstr(out, "out of range"), "rc %d: %s", rc, out);
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer encode");
    CHECK(rc == 2 && strstr(out, "--tokenizer is required"));
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer frobnicate");
    CHECK(rc == 2);
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer encode --tokenizer tests/fixtures/tokenizer/llama3_style.json /no/such/file");
    CHECK(rc == 1 && strstr(out, "/no/such/file"));
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer train --input %s/bad.json --vocab-size 100 --out %s/o.json", dir, dir);
    CHECK(rc == 2 && strstr(out, "vocab-size"));
}

/* CLI encode/decode/info on the Llama-3-style fixture: ids equal the library's, tokens shown. */
TEST(tokenizer_cli_encode_decode_info) {
    char out[8192];
    const char *tk = "tests/fixtures/tokenizer/llama3_style.json";
    int rc = ds_test_sh(out, sizeof out, "printf 'To be, or not to be' | $DSV3 tokenizer encode --tokenizer %s", tk);
    ds_tokenizer *t = ds_tokenizer_load(tk);
    CHECK(t != NULL);
    if (!t) return;
    int32_t *ids;
    int64_t n = ds_tokenizer_encode(t, "To be, or not to be", 19, 1, &ids);
    char exp[1024] = {0};
    size_t o = 0;
    for (int64_t i = 0; i < n; i++) o += (size_t)snprintf(exp + o, sizeof exp - o, "%s%d", i ? " " : "", ids[i]);
    snprintf(exp + o, sizeof exp - o, "\n");
    CHECK_MSG(rc == 0 && !strcmp(out, exp), "got '%s' expected '%s'", out, exp);
    rc = ds_test_sh(out, sizeof out, "printf 'To be' | $DSV3 tokenizer encode --tokens --add-special --tokenizer %s", tk);
    CHECK_MSG(rc == 0 && !strncmp(out, "<|begin_of_text|> ", 18), "%s", out);
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer info --tokenizer %s", tk);
    CHECK(rc == 0 && strstr(out, "vocab_size: 3000") && strstr(out, "ByteLevel") && strstr(out, "bos: 0"));
    free(ids);
    ds_tokenizer_free(t);
}

/* CLI --split-punct-nl: more tokens with P = 1, same text back, bad P is a usage error. */
TEST(tokenizer_cli_boundary_bias) {
    const char *p = ds_test_shared("data/deepseek_v3_tokenizer");
    if (!p) SKIP("../shared/data/deepseek_v3_tokenizer absent");
    const char *dir = ds_test_tmpdir();
    char out[4096], out2[4096];
    int rc = ds_test_sh(out, sizeof out, "printf 'a.\\nb!\\n\\nc' | $DSV3 tokenizer encode --tokenizer %s | wc -w", p);
    int rc2 = ds_test_sh(out2, sizeof out2, "printf 'a.\\nb!\\n\\nc' | $DSV3 tokenizer encode --split-punct-nl 1 --tokenizer %s "
                                           "> %s/ids && wc -w < %s/ids", p, dir, dir);
    CHECK(rc == 0 && rc2 == 0 && atoi(out2) > atoi(out));
    rc = ds_test_sh(out, sizeof out, "$DSV3 tokenizer decode --tokenizer %s %s/ids", p, dir);
    CHECK(rc == 0 && !strcmp(out, "a.\nb!\n\nc"));
    rc = ds_test_sh(out, sizeof out, "echo x | $DSV3 tokenizer encode --split-punct-nl 2 --tokenizer %s", p);
    CHECK(rc == 2);
}
