/*
 * test_chat_template.c — the Jinja subset against transformers'
 * apply_chat_template: tests/fixtures/chat/templates.json (made by
 * tools/make_chat_template_fixtures.py) holds DeepSeek-V3's, Llama-3's,
 * Qwen2's, Qwen2.5's (tools) and Mistral's templates and a template covering the rest of the
 * subset and one whose values contain themselves, each rendered by jinja2 for
 * a set of conversations (some with tool definitions, calls and results,
 * passed as apply_chat_template's tools=); every rendering
 * must match byte for byte, and where jinja2 raised (raise_exception) the
 * render must fail with the template's message.  Templates outside the subset
 * fail at parse time with the line.
 */
#include <string.h>

#include "base/base.h"
#include "io/json.h"
#include "test.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tok_config.h"

#define FIX "tests/fixtures/chat/templates.json"

/* a fixture file's templates (a JSON list), or NULL after a failed check */
static cJSON *load_fixture(const char *path) {
    size_t len;
    char *txt = ds_read_file(path, &len);
    CHECK_MSG(txt != NULL, "%s: %s", path, ds_errmsg());
    cJSON *root = txt ? ds_json_parse(txt, len, path) : NULL;
    free(txt);
    CHECK(cJSON_IsArray(root));
    return root;
}

/* transformers' error -> what dsv3's says, where the words differ */
static const char *const err_words[][2] = {
    {"are not compatible", "are not compatible"},
    {"empty conversation", "the conversation is empty"},
    {"has no \"content\" to continue", "has no \"content\" to continue"},
    {"does not appear in the chat", "does not appear in the chat"},
};

typedef struct { int templates, cases, errors, continued, kwargs; } fixture_counts;

/* every case of a fixture file rendered with its options (add_generation_prompt, tools,
 * continue_final_message, chat_template_kwargs) equals transformers' text byte for byte, or
 * fails where transformers raised (raise_exception's message, or err_words) */
static void check_fixture(const char *path, fixture_counts *n) {
    memset(n, 0, sizeof *n);
    cJSON *root = load_fixture(path);
    const cJSON *t;
    cJSON_ArrayForEach(t, root) {
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        const char *src = cJSON_GetObjectItem(t, "template")->valuestring;
        const cJSON *bos = cJSON_GetObjectItem(t, "bos_token"), *eos = cJSON_GetObjectItem(t, "eos_token");
        ds_jinja *j = ds_jinja_parse(src, strlen(src));
        CHECK_MSG(j != NULL, "%s: %s", name, ds_errmsg());
        if (!j) continue;
        n->templates++;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(t, "cases")) {
            const ds_chat_opts o = {.add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")),
                                    .continue_final_message = cJSON_IsTrue(cJSON_GetObjectItem(c, "continue_final_message")),
                                    .kwargs = cJSON_GetObjectItem(c, "chat_template_kwargs")};
            char *r = ds_chat_template_render(j, cJSON_GetObjectItem(c, "messages"), cJSON_GetObjectItem(c, "tools"), &o,
                                              cJSON_IsString(bos) ? bos->valuestring : NULL,
                                              cJSON_IsString(eos) ? eos->valuestring : NULL);
            const cJSON *want = cJSON_GetObjectItem(c, "rendered"), *err = cJSON_GetObjectItem(c, "error");
            n->cases++;
            n->continued += o.continue_final_message && want;
            n->kwargs += o.kwargs != NULL;
            if (want) {
                CHECK_MSG(r && !strcmp(r, want->valuestring), "%s case %d: got %s, want %s (%s)", name, n->cases,
                          r ? ds_quote(r) : "NULL", ds_quote(want->valuestring), r ? "" : ds_errmsg());
            } else {
                n->errors++;
                const char *m = strstr(err->valuestring, ": ");
                m = m ? m + 2 : err->valuestring;
                for (size_t k = 0; k < sizeof err_words / sizeof err_words[0]; k++)
                    if (strstr(err->valuestring, err_words[k][0])) m = err_words[k][1];
                CHECK_MSG(!r && strstr(ds_errmsg(), m), "%s case %d: want error %s, got %s", name, n->cases, m,
                          r ? ds_quote(r) : ds_errmsg());
            }
            free(r);
        }
        ds_jinja_free(j);
    }
    cJSON_Delete(root);
}

TEST(chat_template_matches_transformers) {
    fixture_counts n;
    check_fixture(FIX, &n);
    CHECK(n.templates == 8);
    CHECK(n.cases >= 130 && n.errors >= 10);
}

/* continue_final_message (with and without add_generation_prompt) and
 * chat_template_kwargs: tests/fixtures/chat/options.json, rendered by
 * transformers' apply_chat_template with them (the same script) */
TEST(chat_template_options_match_transformers) {
    fixture_counts n;
    check_fixture("tests/fixtures/chat/options.json", &n);
    CHECK_MSG(n.templates == 6 && n.cases >= 70 && n.errors >= 20 && n.continued >= 25 && n.kwargs >= 20,
              "%d templates, %d cases, %d errors, %d continued, %d with kwargs", n.templates, n.cases, n.errors, n.continued,
              n.kwargs);
}

TEST(chat_template_unsupported_fails_at_parse) {
    static const char *const bad[][2] = {
        {"{% macro m() %}x{% endmacro %}", "unsupported tag 'macro'"},
        {"{{ x | wordwrap }}", "unsupported filter 'wordwrap'"},
        {"{{ frobnicate(1) }}", "unsupported function 'frobnicate'"},
        {"{% if x %}open", "missing {% endif %}"},
        {"hi\n{{ x is frobbable }}", "line 2: unsupported test 'frobbable'"},
        {"{{ 'unterminated }}", "unterminated string"},
        {"{% endfor %}", "unexpected 'endfor'"},
        {"{{ x", "unclosed tag"},
        {"{% include 'x' %}", "unsupported tag 'include'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_jinja *j = ds_jinja_parse(bad[i][0], strlen(bad[i][0]));
        CHECK_MSG(j == NULL && strstr(ds_errmsg(), bad[i][1]) && strstr(ds_errmsg(), "chat template: line"),
                  "%s: got %s", bad[i][0], j ? "parsed" : ds_errmsg());
        ds_jinja_free(j);
    }
    /* a runaway template stops with a message (bounded steps and memory) */
    const char *loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    ds_jinja *lj = ds_jinja_parse(loop, strlen(loop));
    char *lr = lj ? ds_jinja_render(lj, NULL) : NULL;
    CHECK(lj && !lr && strstr(ds_errmsg(), "runs too long"));
    free(lr);
    ds_jinja_free(lj);
    const char *big = "{% set s = namespace(v='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}";
    lj = ds_jinja_parse(big, strlen(big));
    lr = lj ? ds_jinja_render(lj, NULL) : NULL;
    CHECK(lj && !lr && (strstr(ds_errmsg(), "too long") || strstr(ds_errmsg(), "runs too long")));
    free(lr);
    ds_jinja_free(lj);
    /* render-time errors: undefined arithmetic, namespace misuse */
    const char *src = "{{ nothing + 'x' }}";
    ds_jinja *j = ds_jinja_parse(src, strlen(src));
    CHECK(j != NULL);
    char *r = j ? ds_jinja_render(j, NULL) : NULL;
    CHECK(r == NULL && strstr(ds_errmsg(), "undefined"));
    free(r);
    ds_jinja_free(j);
}

/* src repeated n times between head and tail (NUL-terminated, freed by the caller) */
static char *repeat(const char *head, const char *src, int n, const char *tail) {
    size_t h = strlen(head), k = strlen(src), t = strlen(tail);
    char *s = ds_malloc(h + k * (size_t)n + t + 1), *p = s;
    memcpy(p, head, h), p += h;
    for (int i = 0; i < n; i++) memcpy(p, src, k), p += k;
    memcpy(p, tail, t + 1);
    return s;
}

/* parse (and render, if it parses) src: NULL and a message holding want, or
 * the rendering when want is NULL */
static char *try_template(char *src, const char *want, const char *what) {
    ds_jinja *j = ds_jinja_parse(src, strlen(src));
    char *r = j ? ds_jinja_render(j, NULL) : NULL;
    if (want) CHECK_MSG(!r && strstr(ds_errmsg(), want), "%s: got %s", what, r ? "a rendering" : ds_errmsg());
    else CHECK_MSG(r != NULL, "%s: %s", what, ds_errmsg());
    ds_jinja_free(j);
    free(src);
    return r;
}

/* Input that would recurse without bound (the fuzzer's stack overflows):
 * nested expressions and blocks, a long operator chain, values nested by a
 * loop: each fails with a one-line message; just inside the bounds works. */
TEST(chat_template_deep_input_fails_cleanly) {
    const char *nest = "nested more than 100 deep", *tall = "nests more than 500 levels deep";
    free(try_template(repeat("{{ ", "(", 5000, "1 }}"), nest, "5000 parentheses"));
    free(try_template(repeat("{{ ", "[", 5000, "1 }}"), nest, "5000 brackets"));
    free(try_template(repeat("{{ ", "not ", 5000, "1 }}"), nest, "5000 nots"));
    free(try_template(repeat("{{ ", "- ", 5000, "1 }}"), nest, "5000 minus signs"));
    free(try_template(repeat("", "{% if true %}", 1000, "x"), nest, "1000 nested ifs"));
    free(try_template(repeat("{{ 1", " + 1", 5000, " }}"), tall, "a chain of 5000 additions"));
    char *src = repeat("{{ ", "(", 90, "1");
    size_t n = strlen(src);
    src = ds_realloc(src, n + 90 + 4);
    memset(src + n, ')', 90), memcpy(src + n + 90, " }}", 4);
    char *r = try_template(src, NULL, "90 parentheses");
    CHECK(r && !strcmp(r, "1"));
    free(r);
    r = try_template(repeat("{{ 0", " + 1", 400, " }}"), NULL, "a chain of 400 additions");
    CHECK(r && !strcmp(r, "400"));
    free(r);
    /* a loop nests a list as deep as it runs: printing, comparing and tojson stop at 500 */
    const char *deep = "{% set ns = namespace(x=1, y=1) %}{% for i in range(2000) %}"
                       "{% set ns.x = [ns.x] %}{% set ns.y = [ns.y] %}{% endfor %}";
    char *body[][2] = {{"{{ ns.x }}", "cannot print a value nested more than 500 deep"},
                       {"{{ ns.x | string }}", "cannot print"},
                       {"{{ [ns.x] | join(',') }}", "join: cannot print"},
                       {"{{ ns.x == ns.y }}", "cannot compare a value nested"},
                       {"{{ ns.x | tojson }}", "tojson: Circular reference detected, or a value nested"}};
    for (size_t i = 0; i < sizeof body / sizeof body[0]; i++)
        free(try_template(repeat(deep, body[i][0], 1, ""), body[i][1], body[i][0]));
    r = try_template(repeat("{% set ns = namespace(x=1) %}{% for i in range(400) %}{% set ns.x = [ns.x] %}{% endfor %}",
                            "{{ ns.x | tojson | length }} {{ ns.x == ns.x }}", 1, ""),
                     NULL, "a list 400 deep");
    CHECK(r && !strcmp(r, "801 True"));
    free(r);
}

/* dsv3 init with a tokenizer whose tokenizer_config.json has no chat template:
 * the model folder gets DeepSeek-V3's, so it chats; serve/chat load it. */
TEST(chat_template_init_writes_one) {
    const char *dir = ds_test_tmpdir();
    char out[8192], path[600];
    snprintf(path, sizeof path, "%s/tok/corpus.txt", dir);
    CHECK(ds_test_sh(out, sizeof out, "mkdir -p %s/tok && printf 'hello world, hello chat\\n%%.0s' $(seq 50) > %s", dir, path) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 tokenizer train --input %s --vocab-size 300 --out %s/tok/tokenizer.json", path, dir) == 0);
    /* the same config without its chat_template */
    char cfgp[600];
    snprintf(cfgp, sizeof cfgp, "%s/tok/tokenizer_config.json", dir);
    size_t n;
    char *txt = ds_read_file(cfgp, &n);
    CHECK(txt != NULL);
    if (!txt) return;
    cJSON *cfg = cJSON_Parse(txt);
    free(txt);
    cJSON_DeleteItemFromObject(cfg, "chat_template");
    char *s = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    CHECK(ds_write_file_atomic(cfgp, s, strlen(s)) == 0);
    free(s);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 init --config tiny --tokenizer %s/tok --out %s/model", dir, dir) == 0);
    snprintf(cfgp, sizeof cfgp, "%s/model/tokenizer_config.json", dir);
    txt = ds_read_file(cfgp, &n);
    cfg = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    const cJSON *ct = cJSON_GetObjectItem(cfg, "chat_template");
    CHECK(cJSON_IsString(ct) && !strcmp(ct->valuestring, ds_deepseek_v3_chat_template));
    cJSON_Delete(cfg);
    /* and it renders a conversation */
    CHECK(ds_test_sh(out, sizeof out, "printf 'hello\\n' | $DSV3 chat --model %s/model --max-new-tokens 3", dir) == 0);
}
