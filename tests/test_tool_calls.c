/*
 * test_tool_calls.c — tool-call parsing (src/serve/tools.c) on completions
 * written by hand in DeepSeek-V3's and Hermes' formats, with the expected
 * content and calls written by hand from those formats' definitions (vLLM's
 * deepseek_v3 and hermes parsers: content is the text before the first
 * marker; Hermes arguments re-serialized as Python's json.dumps); the forced
 * prefixes; the streaming hold-back of a tail that may begin a marker; and
 * every prefix of a completion parsed without a crash or a call that was not
 * there.
 */
#include <string.h>

#include "base/base.h"
#include "serve/tools.h"
#include "test.h"

#define CB "<｜tool▁calls▁begin｜>"
#define CE "<｜tool▁calls▁end｜>"
#define B "<｜tool▁call▁begin｜>"
#define E "<｜tool▁call▁end｜>"
#define S "<｜tool▁sep｜>"

typedef struct {
    const char *prefix, *text, *forced;
    const char *content; /* NULL: none */
    int ncalls;
    const char *name[3], *args[3];
} tcase;

static void run(ds_tool_format f, const tcase *c, int i) {
    ds_tool_result r;
    ds_tool_parse(f, c->prefix, c->text, strlen(c->text), c->forced, &r);
    CHECK_MSG(r.ncalls == c->ncalls, "%s case %d: %d calls, want %d", ds_tool_format_name(f), i, r.ncalls, c->ncalls);
    CHECK_MSG(c->content ? r.content && !strcmp(r.content, c->content) : !r.content, "%s case %d: content %s, want %s",
              ds_tool_format_name(f), i, r.content ? r.content : "(none)", c->content ? c->content : "(none)");
    for (int k = 0; k < r.ncalls && k < c->ncalls; k++) {
        CHECK_MSG(!strcmp(r.calls[k].name, c->name[k]), "%s case %d call %d: name %s, want %s", ds_tool_format_name(f), i, k,
                  r.calls[k].name, c->name[k]);
        CHECK_MSG(!strcmp(r.calls[k].arguments, c->args[k]), "%s case %d call %d: arguments %s, want %s",
                  ds_tool_format_name(f), i, k, r.calls[k].arguments, c->args[k]);
    }
    ds_tool_result_free(&r);
}

TEST(tool_calls_deepseek_v3) {
    char *named = ds_tool_prefix(DS_TOOLS_DEEPSEEK_V3, "get_weather"), *any = ds_tool_prefix(DS_TOOLS_DEEPSEEK_V3, NULL);
    CHECK(!strcmp(named, CB B "function" S "get_weather\n```json\n"));
    CHECK(!strcmp(any, CB B "function" S));
    const tcase cases[] = {
        /* vLLM's documented example: two calls, the end markers after them */
        {NULL, CB B "function" S "get_current_weather\n```json\n{\"location\": \"Beijing\"}\n```" E "\n" B "function" S
               "get_current_weather\n```json\n{\"location\": \"Shanghai\"}\n```" E CE "<｜end▁of▁sentence｜>",
         NULL, NULL, 2, {"get_current_weather", "get_current_weather"}, {"{\"location\": \"Beijing\"}", "{\"location\": \"Shanghai\"}"}},
        /* content before the calls; arguments over several lines */
        {NULL, "Let me check.\n" CB B "function" S "get_weather\n```json\n{\n  \"city\": \"Paris\"\n}\n```" E CE, NULL,
         "Let me check.\n", 1, {"get_weather"}, {"{\n  \"city\": \"Paris\"\n}"}},
        {NULL, "Just text, no call.", NULL, "Just text, no call.", 0, {0}, {0}},
        {NULL, "", NULL, NULL, 0, {0}, {0}},
        /* a marker but no call that parses: all content */
        {NULL, "x" CB B "function" S "f\n{\"a\": 1}" E CE, NULL, "x" CB B "function" S "f\n{\"a\": 1}" E CE, 0, {0}, {0}},
        {NULL, CB B "function" S "f\n```json\n{\"a\": 1", NULL, CB B "function" S "f\n```json\n{\"a\": 1", 0, {0}, {0}},
        /* an empty name, or a type across lines, does not parse; the next call does */
        {NULL, CB B "function" S "\n```json\n{}\n```" E "\n" B "func\ntion" S "g\n```json\n{}\n```" E "\n" B "function" S
               "h\n```json\n[1]\n```" E CE,
         NULL, NULL, 1, {"h"}, {"[1]"}},
        /* a named tool_choice: the prefix is the model's, the rest generated */
        {named, "{\"city\": \"Oslo\"}\n```" E CE, "get_weather", NULL, 1, {"get_weather"}, {"{\"city\": \"Oslo\"}"}},
        /* ... cut short (max_tokens): the generated text is the arguments */
        {named, "{\"city\": \"Os", "get_weather", NULL, 1, {"get_weather"}, {"{\"city\": \"Os"}},
        /* tool_choice "required": any name */
        {any, "add\n```json\n{\"a\": 1, \"b\": 2}\n```" E CE, NULL, NULL, 1, {"add"}, {"{\"a\": 1, \"b\": 2}"}},
        {any, "add\n```js", NULL, "add\n```js", 0, {0}, {0}},
        /* ... left open at the arguments' close (a guided "required" call) */
        {any, "add\n```json\n{\"a\": 1}", NULL, NULL, 1, {"add"}, {"{\"a\": 1}"}},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) run(DS_TOOLS_DEEPSEEK_V3, &cases[i], i);
    free(named), free(any);
}

TEST(tool_calls_hermes) {
    char *named = ds_tool_prefix(DS_TOOLS_HERMES, "add"), *any = ds_tool_prefix(DS_TOOLS_HERMES, NULL);
    CHECK(!strcmp(named, "<tool_call>\n{\"name\": \"add\", \"arguments\": "));
    CHECK(!strcmp(any, "<tool_call>\n{\"name\": \""));
    const tcase cases[] = {
        /* arguments come back as json.dumps(arguments, ensure_ascii=False) writes them */
        {NULL, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":[2, 3.5,true,null],\"c\":\"é\\n\"}}\n</tool_call>", NULL,
         NULL, 1, {"add"}, {"{\"a\": 1, \"b\": [2, 3.5, true, null], \"c\": \"é\\n\"}"}},
        /* content first; the last call unclosed but whole */
        {NULL, "Two calls.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n<tool_call>{\"name\": \"g\", \"arguments\": \"s\"}",
         NULL, "Two calls.\n", 2, {"f", "g"}, {"{}", "\"s\""}},
        /* one bad call: all content */
        {NULL, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"g\", \"arguments\": {</tool_call>",
         NULL, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"g\", \"arguments\": {</tool_call>",
         0, {0}, {0}},
        {NULL, "<tool_call>{\"name\": \"f\"}</tool_call>", NULL, "<tool_call>{\"name\": \"f\"}</tool_call>", 0, {0}, {0}},
        {NULL, "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>", NULL, "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>",
         0, {0}, {0}},
        {NULL, "no call", NULL, "no call", 0, {0}, {0}},
        {named, "{\"a\": 2, \"b\": 3}}\n</tool_call>", "add", NULL, 1, {"add"}, {"{\"a\": 2, \"b\": 3}"}},
        {named, "{\"a\": 2, \"b\"", "add", NULL, 1, {"add"}, {"{\"a\": 2, \"b\""}},
        {any, "mul\", \"arguments\": {\"x\": -0.5}}</tool_call>", NULL, NULL, 1, {"mul"}, {"{\"x\": -0.5}"}},
        {any, "mul\", \"arguments\": {\"x\": [1]}", NULL, NULL, 1, {"mul"}, {"{\"x\": [1]}"}},
        {any, "mul\", \"arguments\": {\"x\"", NULL, "mul\", \"arguments\": {\"x\"", 0, {0}, {0}},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) run(DS_TOOLS_HERMES, &cases[i], i);
    free(named), free(any);
}

TEST(tool_calls_format_names_and_detection) {
    CHECK(ds_tool_format_from_name("deepseek_v3") == DS_TOOLS_DEEPSEEK_V3);
    CHECK(ds_tool_format_from_name("hermes") == DS_TOOLS_HERMES);
    CHECK(ds_tool_format_from_name("none") == DS_TOOLS_NONE);
    CHECK(ds_tool_format_from_name("auto") == -1 && ds_tool_format_from_name("") == -1);
    CHECK(ds_tool_format_detect("{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] }}") == DS_TOOLS_DEEPSEEK_V3);
    CHECK(ds_tool_format_detect("{{- '\\n<tool_call>\\n{\"name\": \"' }}") == DS_TOOLS_HERMES);
    CHECK(ds_tool_format_detect("{{ messages[0]['content'] }}") == DS_TOOLS_NONE);
    CHECK(ds_tool_format_detect(NULL) == DS_TOOLS_NONE);
    CHECK(ds_tool_prefix(DS_TOOLS_NONE, "f") == NULL);
}

TEST(tool_calls_stream_holds_back_a_marker) {
    static const struct { int f; const char *text; size_t want; } c[] = {
        {DS_TOOLS_DEEPSEEK_V3, "abc", 3},
        {DS_TOOLS_DEEPSEEK_V3, "abc<", 3},
        {DS_TOOLS_DEEPSEEK_V3, "abc<｜tool▁cal", 3},
        {DS_TOOLS_DEEPSEEK_V3, "abc<x", 5},
        {DS_TOOLS_DEEPSEEK_V3, "abc<｜tool▁call▁begin｜>", 3 + strlen("<｜tool▁call▁begin｜>")}, /* not the calls marker */
        {DS_TOOLS_DEEPSEEK_V3, "hello" CB B "function" S "f", 5},
        {DS_TOOLS_HERMES, "hi <tool_c", 3},
        {DS_TOOLS_HERMES, "hi <tool_call>{", 3},
        {DS_TOOLS_HERMES, "<tool", 0},
        {DS_TOOLS_HERMES, "a < b", 5},
        {DS_TOOLS_NONE, "<tool_call>", 11},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t got = ds_tool_content_ready((ds_tool_format)c[i].f, c[i].text, strlen(c[i].text));
        CHECK_MSG(got == c[i].want, "case %zu (%s): %zu, want %zu", i, c[i].text, got, c[i].want);
    }
}

/* Every prefix of a completion with two calls: no crash; the content that
 * streaming let out is a prefix of the parsed content; calls only once both
 * markers of a call are there. */
TEST(tool_calls_every_prefix) {
    const char *full[2] = {
        "Sure. " CB B "function" S "f\n```json\n{\"a\": [1, 2]}\n```" E "\n" B "function" S "g\n```json\n{}\n```" E CE,
        "Sure. <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}</tool_call>\n<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>",
    };
    const ds_tool_format fs[2] = {DS_TOOLS_DEEPSEEK_V3, DS_TOOLS_HERMES};
    for (int k = 0; k < 2; k++) {
        const size_t n = strlen(full[k]);
        int most = 0;
        for (size_t m = 0; m <= n; m++) {
            ds_tool_result r;
            ds_tool_parse(fs[k], NULL, full[k], m, NULL, &r);
            size_t ready = ds_tool_content_ready(fs[k], full[k], m);
            const char *content = r.content ? r.content : "";
            CHECK_MSG(ready <= strlen(content) && !memcmp(content, full[k], ready), "%s prefix %zu: ready %zu",
                      ds_tool_format_name(fs[k]), m, ready);
            CHECK(r.ncalls >= most || (fs[k] == DS_TOOLS_HERMES && r.ncalls == 0)); /* hermes: an unclosed bad call is content */
            if (r.ncalls > most) most = r.ncalls;
            for (int i = 0; i < r.ncalls; i++) CHECK(!strcmp(r.calls[i].name, i ? "g" : "f"));
            ds_tool_result_free(&r);
        }
        CHECK(most == 2);
    }
}

/* Streaming calls (ds_tool_parse_partial) on every prefix of completions, against ds_tool_parse of the
 * whole completion (itself checked above): the calls so far are the whole completion's first ones, with
 * the same names and arguments that are prefixes of theirs, never fewer than on a shorter prefix nor
 * with shorter arguments; on the whole completion they are its calls.  DeepSeek-V3's arguments grow
 * with the text (held back only where the call's end may begin); a Hermes call comes whole, once closed. */
TEST(tool_calls_partial_every_prefix) {
    char *any_ds = ds_tool_prefix(DS_TOOLS_DEEPSEEK_V3, NULL), *any_h = ds_tool_prefix(DS_TOOLS_HERMES, NULL);
    const struct {
        ds_tool_format f;
        const char *prefix, *text;
        int ncalls, grows; /* grows: arguments seen partly on some prefix */
    } c[] = {
        {DS_TOOLS_DEEPSEEK_V3, NULL,
         "Sure. " CB B "function" S "f\n```json\n{\"a\": [1, 2], \"s\": \"x\\n```\"}\n```" E "\n" B "function" S "g\n```json\n{}\n```" E CE,
         2, 1},
        {DS_TOOLS_DEEPSEEK_V3, any_ds, "add\n```json\n{\"a\": 1, \"b\": 2}\n```" E CE, 1, 1},
        {DS_TOOLS_DEEPSEEK_V3, any_ds, "add\n```json\n{\"a\": 1}", 1, 1}, /* a guided call, left open */
        {DS_TOOLS_HERMES, NULL,
         "Sure. <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1,2]}}</tool_call>\n<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>",
         2, 0},
        {DS_TOOLS_HERMES, any_h, "mul\", \"arguments\": {\"x\": -0.5}}</tool_call>", 1, 0},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        const size_t n = strlen(c[k].text);
        ds_tool_result whole;
        ds_tool_parse(c[k].f, c[k].prefix, c[k].text, n, NULL, &whole);
        CHECK_MSG(whole.ncalls == c[k].ncalls, "case %zu: %d calls", k, whole.ncalls);
        int last_calls = 0, grew = 0;
        size_t last_args = 0;
        for (size_t m = 0; m <= n; m++) {
            ds_tool_result p;
            int open;
            ds_tool_parse_partial(c[k].f, c[k].prefix, c[k].text, m, &p, &open);
            int ok = p.ncalls <= whole.ncalls && p.ncalls >= last_calls;
            for (int i = 0; ok && i < p.ncalls; i++) {
                const size_t na = strlen(p.calls[i].arguments);
                ok = !strcmp(p.calls[i].name, whole.calls[i].name) && !strncmp(p.calls[i].arguments, whole.calls[i].arguments, na) &&
                     (i + 1 < p.ncalls || p.ncalls > last_calls || na >= last_args);
                if (i + 1 == p.ncalls) {
                    grew |= na > 0 && na < strlen(whole.calls[i].arguments);
                    last_args = na;
                }
            }
            if (m == n) /* whole: the same calls */
                for (int i = 0; ok && i < whole.ncalls; i++) ok = p.ncalls == whole.ncalls && !strcmp(p.calls[i].arguments, whole.calls[i].arguments);
            CHECK_MSG(ok, "case %zu, prefix %zu: %d calls%s%s", k, m, p.ncalls, p.ncalls ? ", last arguments " : "",
                      p.ncalls ? p.calls[p.ncalls - 1].arguments : "");
            last_calls = p.ncalls;
            ds_tool_result_free(&p);
        }
        CHECK_MSG(last_calls == whole.ncalls, "case %zu: %d calls at the end", k, last_calls);
        CHECK_MSG(grew == c[k].grows, "case %zu: arguments %s", k, grew ? "grew" : "came whole");
        ds_tool_result_free(&whole);
    }
    free(any_ds), free(any_h);
}
