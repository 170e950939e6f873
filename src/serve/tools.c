/*
 * tools.c — tool-call formats (see tools.h).
 */
#define _GNU_SOURCE
#include "serve/tools.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/json.h"
#include "tokenizer/jinja.h"

#define DS3_CALLS_BEGIN "<｜tool▁calls▁begin｜>"
#define DS3_CALL_BEGIN "<｜tool▁call▁begin｜>"
#define DS3_SEP "<｜tool▁sep｜>"
#define DS3_ARGS_OPEN "```json\n"
#define DS3_CALL_END "\n```<｜tool▁call▁end｜>"
#define HERMES_BEGIN "<tool_call>"
#define HERMES_END "</tool_call>"

static const char *const NAMES[] = {"none", "deepseek_v3", "hermes"};

int ds_tool_format_from_name(const char *name) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, NAMES[i])) return i;
    return -1;
}

const char *ds_tool_format_name(ds_tool_format f) { return NAMES[f]; }

ds_tool_format ds_tool_format_detect(const char *src) {
    if (!src) return DS_TOOLS_NONE;
    if (strstr(src, "tool▁call▁begin")) return DS_TOOLS_DEEPSEEK_V3;
    if (strstr(src, HERMES_BEGIN)) return DS_TOOLS_HERMES;
    return DS_TOOLS_NONE;
}

static const char *marker(ds_tool_format f) {
    return f == DS_TOOLS_DEEPSEEK_V3 ? DS3_CALLS_BEGIN : f == DS_TOOLS_HERMES ? HERMES_BEGIN : NULL;
}

static const char *find(const char *s, const char *end, const char *what) {
    return s < end ? memmem(s, (size_t)(end - s), what, strlen(what)) : NULL;
}

static void add_call(ds_tool_result *r, char *name, char *args) {
    r->calls = ds_realloc(r->calls, (size_t)(r->ncalls + 1) * sizeof *r->calls);
    r->calls[r->ncalls++] = (ds_tool_call){name, args};
}

static void drop_calls(ds_tool_result *r) {
    for (int i = 0; i < r->ncalls; i++) free(r->calls[i].name), free(r->calls[i].arguments);
    free(r->calls);
    r->calls = NULL;
    r->ncalls = 0;
}

/* DeepSeek-V3: each <｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
 * after the calls marker; TYPE and NAME on one line, NAME not empty */
/* a DeepSeek-V3 call's head after its begin marker p: TYPE<｜tool▁sep｜>NAME\n```json\n on one line
 * each; the arguments' start, *name and *nl (the name's end), or NULL */
static const char *ds3_head(const char *p, const char *end, const char **name, const char **nl) {
    const char *sep = find(p, end, DS3_SEP);
    *nl = sep ? memchr(sep, '\n', (size_t)(end - sep)) : NULL;
    if (!sep || !*nl || memchr(p, '\n', (size_t)(sep - p))) return NULL;
    *name = sep + strlen(DS3_SEP);
    const char *args = *nl + 1;
    if (*name == *nl || (size_t)(end - args) < strlen(DS3_ARGS_OPEN) || memcmp(args, DS3_ARGS_OPEN, strlen(DS3_ARGS_OPEN)))
        return NULL;
    return args + strlen(DS3_ARGS_OPEN);
}

static void parse_deepseek(const char *p, const char *end, ds_tool_result *r) {
    while ((p = find(p, end, DS3_CALL_BEGIN))) {
        p += strlen(DS3_CALL_BEGIN);
        const char *name, *nl, *args = ds3_head(p, end, &name, &nl);
        if (!args) continue;
        const char *close = find(args, end, DS3_CALL_END);
        if (!close) continue;
        add_call(r, ds_strndup(name, (size_t)(nl - name)), ds_strndup(args, (size_t)(close - args)));
        p = close + strlen(DS3_CALL_END);
    }
}

/* Hermes: <tool_call>JSON</tool_call>, the last one possibly unclosed; each
 * JSON an object with a string "name" and "arguments"; one that is not
 * makes the whole completion content (as vLLM) */
/* one Hermes body [p, end): a call, or -1 */
static int parse_hermes_body(const char *p, const char *end, ds_tool_result *r) {
    cJSON *j = cJSON_ParseWithLength(p, (size_t)(end - p));
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name"), *args = cJSON_GetObjectItemCaseSensitive(j, "arguments");
    char *a = cJSON_IsString(name) && args ? ds_json_dumps_py(args) : NULL;
    if (a) add_call(r, ds_strdup(name->valuestring), a);
    cJSON_Delete(j);
    return a ? 0 : -1;
}

static void parse_hermes(const char *p, const char *end, ds_tool_result *r) {
    while ((p = find(p, end, HERMES_BEGIN))) {
        p += strlen(HERMES_BEGIN);
        const char *close = find(p, end, HERMES_END);
        if (parse_hermes_body(p, close ? close : end, r)) {
            drop_calls(r);
            return;
        }
        if (!close) break;
        p = close + strlen(HERMES_END);
    }
}

/* A forced call the answer left open (a guided "required" call ends at its
 * arguments' close): DeepSeek-V3: the last call's name line and ```json,
 * its arguments to the end; Hermes: the last body with its object closed. */
static void parse_open(ds_tool_format f, const char *all, const char *end, ds_tool_result *r) {
    const char *m = f == DS_TOOLS_DEEPSEEK_V3 ? DS3_CALL_BEGIN : HERMES_BEGIN, *p = NULL;
    for (const char *q = all; (q = find(q, end, m)); q += strlen(m)) p = q;
    if (!p) return;
    p += strlen(m);
    if (f == DS_TOOLS_HERMES) {
        ds_sbuf b = {0};
        ds_sbuf_put(&b, p, (size_t)(end - p));
        ds_sbuf_puts(&b, "}");
        parse_hermes_body(b.p, b.p + b.n, r);
        free(b.p);
        return;
    }
    const char *name, *nl, *args = ds3_head(p, end, &name, &nl);
    if (args) add_call(r, ds_strndup(name, (size_t)(nl - name)), ds_strndup(args, (size_t)(end - args)));
}

/* prefix (NULL: none) then text[0, n), malloc'd and NUL-terminated */
static char *joined(const char *prefix, const char *text, size_t n) {
    const size_t np = prefix ? strlen(prefix) : 0;
    char *all = ds_malloc(np + n + 1);
    if (np) memcpy(all, prefix, np);
    if (n) memcpy(all + np, text, n);
    all[np + n] = 0;
    return all;
}

void ds_tool_parse(ds_tool_format f, const char *prefix, const char *text, size_t n, const char *forced_name,
                   ds_tool_result *out) {
    memset(out, 0, sizeof *out);
    const size_t np = prefix ? strlen(prefix) : 0;
    char *all = joined(prefix, text, n);
    const char *end = all + np + n, *m = marker(f) ? find(all, end, marker(f)) : NULL;
    if (m) {
        if (f == DS_TOOLS_DEEPSEEK_V3) parse_deepseek(m + strlen(marker(f)), end, out);
        else parse_hermes(m, end, out);
    }
    if (!out->ncalls && np && !forced_name && m) parse_open(f, all, end, out);
    if (out->ncalls) {
        if (m > all) out->content = ds_strndup(all, (size_t)(m - all));
    } else if (forced_name) { /* an unfinished forced call: what was generated is its arguments */
        add_call(out, ds_strdup(forced_name), ds_strndup(text, n));
    } else if (n) { /* no call: the completion is content (without a forced prefix) */
        out->content = ds_strndup(text, n);
    }
    free(all);
}

void ds_tool_result_free(ds_tool_result *r) {
    drop_calls(r);
    free(r->content);
    memset(r, 0, sizeof *r);
}

char *ds_tool_prefix(ds_tool_format f, const char *name) {
    ds_sbuf b = {0};
    if (f == DS_TOOLS_DEEPSEEK_V3) {
        ds_sbuf_puts(&b, DS3_CALLS_BEGIN DS3_CALL_BEGIN "function" DS3_SEP);
        if (name) ds_sbuf_printf(&b, "%s\n" DS3_ARGS_OPEN, name);
    } else if (f == DS_TOOLS_HERMES) {
        ds_sbuf_puts(&b, HERMES_BEGIN "\n{\"name\": ");
        if (!name) ds_sbuf_puts(&b, "\"");
        else {
            ds_json_put_string(&b, name);
            ds_sbuf_puts(&b, ", \"arguments\": ");
        }
    } else {
        return NULL;
    }
    return ds_sbuf_take(&b);
}

/* the bytes of [p, end) short of a tail that could begin `what` */
static size_t short_of(const char *p, const char *end, const char *what) {
    const size_t n = (size_t)(end - p), k = strlen(what);
    for (size_t hold = k - 1 < n ? k - 1 : n; hold > 0; hold--)
        if (!memcmp(end - hold, what, hold)) return n - hold;
    return n;
}

void ds_tool_parse_partial(ds_tool_format f, const char *prefix, const char *text, size_t n, ds_tool_result *out, int *open) {
    memset(out, 0, sizeof *out);
    *open = 0;
    const size_t np = prefix ? strlen(prefix) : 0;
    char *all = joined(prefix, text, n);
    const char *end = all + np + n, *p = marker(f) ? find(all, end, marker(f)) : NULL;
    if (p && f == DS_TOOLS_DEEPSEEK_V3) {
        p += strlen(DS3_CALLS_BEGIN);
        while ((p = find(p, end, DS3_CALL_BEGIN))) {
            p += strlen(DS3_CALL_BEGIN);
            const char *name, *nl, *args = ds3_head(p, end, &name, &nl);
            if (!args) break; /* its name line is not complete yet (or not a call: the end tells) */
            const char *close = find(args, end, DS3_CALL_END);
            add_call(out, ds_strndup(name, (size_t)(nl - name)), ds_strndup(args, close ? (size_t)(close - args) : short_of(args, end, DS3_CALL_END)));
            if (!close) {
                *open = 1;
                break;
            }
            p = close + strlen(DS3_CALL_END);
        }
    } else if (p) { /* Hermes: each call once it closes (its arguments are re-serialized) */
        while ((p = find(p, end, HERMES_BEGIN))) {
            p += strlen(HERMES_BEGIN);
            const char *close = find(p, end, HERMES_END);
            if (!close || parse_hermes_body(p, close, out)) break;
            p = close + strlen(HERMES_END);
        }
    }
    free(all);
}

size_t ds_tool_content_ready(ds_tool_format f, const char *text, size_t n) {
    const char *m = marker(f);
    if (!m) return n;
    const char *at = find(text, text + n, m);
    return at ? (size_t)(at - text) : short_of(text, text + n, m);
}
