/*
 * jinja.h — the subset of Jinja2 that chat templates use, rendered as
 * transformers' apply_chat_template renders them (an environment with
 * trim_blocks and lstrip_blocks, loop controls, raise_exception, namespace,
 * tojson).  Covered: text with {{ }}, {% %} and {# #} tags and the -/+
 * whitespace controls; if/elif/else, for (with loop.*, tuple targets, else,
 * an if filter), set (names and namespace attributes), break/continue;
 * expressions with literals (strings, numbers, lists, dicts), attribute,
 * item and slice access, calls, filters, tests, arithmetic, ~, comparisons,
 * in, and/or/not and the conditional expression; the filters trim, length,
 * upper/lower/title/capitalize, default, first/last, join, string/int/float,
 * list, tojson, replace, items, reverse, abs, unique, sum, select/reject,
 * selectattr/rejectattr, map, dictsort; the usual tests; the functions
 * namespace, raise_exception, range, dict, strftime_now.  Anything else (macros,
 * blocks, include, an unknown filter, test or function) is refused when the
 * template is parsed, so a server finds out at start-up.
 */
#ifndef DS_JINJA_H
#define DS_JINJA_H

#include <stddef.h>

#include <cJSON.h>

typedef struct ds_jinja ds_jinja;

/* Parse a template.  NULL with ds_err("chat template: line L: ...") when it
 * uses anything outside the subset. */
ds_jinja *ds_jinja_parse(const char *src, size_t len);
void ds_jinja_free(ds_jinja *t);
/* Render with the variables of a JSON object (NULL: none).  malloc'd text, or
 * NULL with ds_err ("chat template: line L: ..."; raise_exception's message
 * as "chat template: <message>"). */
char *ds_jinja_render(const ds_jinja *t, const cJSON *vars);

/* apply_chat_template(messages, add_generation_prompt=...): messages is a
 * JSON array of {role, content, ...}; bos/eos may be NULL (undefined). */
char *ds_chat_template_apply(const ds_jinja *t, const cJSON *messages, int add_generation_prompt, const char *bos,
                             const char *eos);
/* The same with apply_chat_template's tools=: a JSON array of tool
 * definitions ({"type": "function", "function": {...}}), or NULL (the
 * template sees tools = none, as in transformers). */
char *ds_chat_template_apply_tools(const ds_jinja *t, const cJSON *messages, const cJSON *tools, int add_generation_prompt,
                                   const char *bos, const char *eos);

/* apply_chat_template's options beyond tools */
typedef struct {
    int add_generation_prompt;  /* end with the header of a new assistant message */
    int continue_final_message; /* end inside the final message, after its content (not with
                                 * add_generation_prompt): the answer continues it */
    const cJSON *kwargs;        /* more template variables (an object; over bos_token/eos_token), or NULL */
} ds_chat_opts;
/* The same with those options, as transformers renders them: the final
 * message continued by rendering it with a tag after its content and cutting
 * the text at the tag (where the template trimmed the content, trailing
 * whitespace cut too); errors as transformers raises them (an empty
 * conversation, a final message with no string content, a template that
 * drops it). */
char *ds_chat_template_render(const ds_jinja *t, const cJSON *messages, const cJSON *tools, const ds_chat_opts *o,
                              const char *bos, const char *eos);

/* json.dumps(v, ensure_ascii=False) as Python writes it (", " and ": "
 * separators; integral numbers as integers).  malloc'd, or NULL with ds_err. */
char *ds_json_dumps_py(const cJSON *v);

#endif
