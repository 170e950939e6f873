/*
 * tools.h — tool (function) calls in chat completions: the formats models
 * write them in, told from the chat template; a completion split into its
 * content and its calls; the assistant-turn prefix that forces a call
 * (tool_choice "required" or a named function); and, for streaming, how much
 * of a growing completion is surely content.
 *
 * Formats:
 *   deepseek_v3  DeepSeek-V3's: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
 *                ```json / ARGS / ```<｜tool▁call▁end｜> ... <｜tool▁calls▁end｜>
 *   hermes       Hermes / Qwen2.5's: <tool_call>{"name": NAME, "arguments": {...}}</tool_call>
 *
 * Parsing follows vLLM's deepseek_v3 and hermes parsers (the content is the
 * text before the first call marker; a completion whose calls do not parse
 * is all content), with two differences: a DeepSeek-V3 call's arguments may
 * span lines, and a marker with no call that parses leaves the whole text as
 * content instead of dropping it.
 */
#ifndef DS_SERVE_TOOLS_H
#define DS_SERVE_TOOLS_H

#include <stddef.h>

typedef enum { DS_TOOLS_NONE = 0, DS_TOOLS_DEEPSEEK_V3, DS_TOOLS_HERMES } ds_tool_format;

/* "none", "deepseek_v3", "hermes" -> the format; -1 for another name */
int ds_tool_format_from_name(const char *name);
const char *ds_tool_format_name(ds_tool_format f);
/* the format a chat template writes calls in (its text names the markers), or DS_TOOLS_NONE */
ds_tool_format ds_tool_format_detect(const char *template_src);

typedef struct {
    char *name, *arguments; /* arguments: JSON text, as the model wrote it (hermes: re-serialized as json.dumps) */
} ds_tool_call;

typedef struct {
    char *content; /* the text outside the calls; NULL when empty */
    ds_tool_call *calls;
    int ncalls;
} ds_tool_result;

/* Split a completion.  prefix: the forced assistant-turn text the completion
 * continues (ds_tool_prefix; "" or NULL: none), parsed as prefix + text.
 * forced_name: the function a named tool_choice forced, or NULL; when the
 * completion has no call that parses (it stopped at max_tokens, say), the
 * result is still one call to it whose arguments are the generated text.
 * With a prefix and no name (tool_choice "required"), a last call left open
 * is taken too: DeepSeek-V3's arguments to the end, Hermes' body with its
 * object closed (a guided call ends at its arguments' close).
 * Always succeeds; free with ds_tool_result_free. */
void ds_tool_parse(ds_tool_format f, const char *prefix, const char *text, size_t n, const char *forced_name,
                   ds_tool_result *out);
void ds_tool_result_free(ds_tool_result *r);

/* The text that starts the assistant's answer to force a call to `name`, or
 * to some tool when name is NULL.  malloc'd; NULL for DS_TOOLS_NONE. */
char *ds_tool_prefix(ds_tool_format f, const char *name);

/* Streaming: the calls of a growing completion (prefix as ds_tool_parse) as
 * far as they are sure.  DeepSeek-V3: each call whose name line is complete,
 * with its arguments so far short of a tail that could begin the call's end;
 * *open = 1 when the last one has not ended.  Hermes: each call once it
 * closes (its arguments are re-serialized, so they cannot grow).  No content.
 * What a finished completion parses to (ds_tool_parse) continues these
 * calls, unless it ends inside one (an unfinished call is then content, as
 * without streaming). */
void ds_tool_parse_partial(ds_tool_format f, const char *prefix, const char *text, size_t n, ds_tool_result *out, int *open);

/* Streaming: the bytes of text[0, n) that are content whatever comes next:
 * up to the first call marker, and short of a tail that could begin one. */
size_t ds_tool_content_ready(ds_tool_format f, const char *text, size_t n);

#endif
