/*
 * responses.h — OpenAI's Responses API (POST /v1/responses) over the chat
 * completions path: a request is read as the chat request it amounts to,
 * and the answer is written back as a response object or its stream of
 * events (server.c).
 *
 * Read: `input` (a string: one user turn; or a list of items: messages with
 * a role and string or input_text / output_text parts, function_call and
 * function_call_output items), `instructions` (a system turn first),
 * `max_output_tokens`, `temperature`, `top_p`, function `tools` (flat:
 * {type, name, description, parameters}), `tool_choice` (auto, none,
 * required, {type: function, name}), `parallel_tool_calls`,
 * `text.format` (text, json_object, json_schema: as response_format),
 * `stream`, and dsv3's sampling extensions as chat takes them (seed, top_k,
 * min_p, penalties, logit_bias, stop, ignore_eos, guided_*).  `metadata`,
 * `user`, `include`, `reasoning`, `truncation` ("disabled"), `service_tier`
 * are taken and change nothing; `conversation` and `background` get 400;
 * `previous_response_id` names a kept response whose conversation comes
 * first, and `store: false` keeps none (server.c keeps them).
 */
#ifndef DS_SERVE_RESPONSES_H
#define DS_SERVE_RESPONSES_H

#include <stddef.h>

#include <cJSON.h>

/* The chat completions request a Responses request amounts to, or NULL with
 * a one-line message in err and the field it is about in *param.  prev: the
 * conversation of the previous response (chat messages: its input and its
 * answer), or NULL; *conv: the conversation of this one without the
 * instructions (prev's, then input's messages; malloc'd). */
cJSON *ds_responses_to_chat(const cJSON *req, const cJSON *prev, char *err, size_t cap, const char **param, cJSON **conv);

#endif
