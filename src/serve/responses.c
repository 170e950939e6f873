/*
 * responses.c — a Responses API request as a chat completions request (see
 * responses.h).
 */
#include "serve/responses.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "io/json.h"

typedef struct {
    char *err;
    size_t cap;
    const char **param;
} rctx;

static cJSON *fail(rctx *x, cJSON *a, cJSON *b, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, x->cap, fmt, ap);
    va_end(ap);
    *x->param = param;
    cJSON_Delete(a), cJSON_Delete(b);
    return NULL;
}

/* fields chat reads as they are (sampling, guides, dsv3's and vLLM's extensions) */
static const char *const PASS[] = {"model", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                                   "frequency_penalty", "repetition_penalty", "logit_bias", "stop", "stop_token_ids",
                                   "ignore_eos", "min_tokens", "parallel_tool_calls", "stream", "guided_regex",
                                   "guided_choice", "guided_json", "structured_outputs"};

/* content: a string, or a list of input_text / output_text (or text) parts -> chat's text parts */
static cJSON *content_of(rctx *x, const cJSON *c, const char *where) {
    if (cJSON_IsString(c)) return cJSON_CreateString(c->valuestring);
    if (!cJSON_IsArray(c)) return fail(x, NULL, NULL, "input", "%s.content must be a string or a list of text parts", where);
    cJSON *parts = cJSON_CreateArray();
    const cJSON *p;
    int k = 0;
    cJSON_ArrayForEach(p, c) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type"), *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
        const int text = cJSON_IsString(ty) && (!strcmp(ty->valuestring, "input_text") || !strcmp(ty->valuestring, "output_text") ||
                                                !strcmp(ty->valuestring, "text"));
        if (!text || !cJSON_IsString(tx))
            return fail(x, parts, NULL, "input", "%s.content[%d]: only input_text / output_text parts are supported%s%s", where, k,
                        cJSON_IsString(ty) ? ", got " : "", cJSON_IsString(ty) ? ds_quote(ty->valuestring) : "");
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "type", "text");
        cJSON_AddStringToObject(q, "text", tx->valuestring);
        cJSON_AddItemToArray(parts, q);
        k++;
    }
    return parts;
}

/* the input items as chat messages, appended to ms */
static int items(rctx *x, const cJSON *in, cJSON *ms) {
    const cJSON *it;
    int i = 0;
    cJSON *last_asst = NULL; /* function_call items join the assistant turn before them */
    cJSON_ArrayForEach(it, in) {
        char where[48];
        snprintf(where, sizeof where, "input[%d]", i++);
        if (!cJSON_IsObject(it)) return fail(x, NULL, NULL, "input", "%s must be an object", where), -1;
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(it, "type"), *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        const char *t = cJSON_IsString(ty) ? ty->valuestring : role ? "message" : "";
        if (!strcmp(t, "message")) {
            if (!cJSON_IsString(role)) return fail(x, NULL, NULL, "input", "%s.role must be a string", where), -1;
            cJSON *c = content_of(x, cJSON_GetObjectItemCaseSensitive(it, "content"), where);
            if (!c) return -1;
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", role->valuestring);
            cJSON_AddItemToObject(m, "content", c);
            cJSON_AddItemToArray(ms, m);
            last_asst = !strcmp(role->valuestring, "assistant") ? m : NULL;
        } else if (!strcmp(t, "function_call")) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "call_id"), *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *ar = cJSON_GetObjectItemCaseSensitive(it, "arguments");
            if (!cJSON_IsString(id) || !cJSON_IsString(nm) || !cJSON_IsString(ar))
                return fail(x, NULL, NULL, "input", "%s: a function_call needs string call_id, name and arguments", where), -1;
            if (!last_asst) {
                last_asst = cJSON_CreateObject();
                cJSON_AddStringToObject(last_asst, "role", "assistant");
                cJSON_AddNullToObject(last_asst, "content");
                cJSON_AddItemToArray(ms, last_asst);
            }
            cJSON *calls = cJSON_GetObjectItemCaseSensitive(last_asst, "tool_calls");
            if (!calls) calls = cJSON_AddArrayToObject(last_asst, "tool_calls");
            cJSON *c = cJSON_CreateObject(), *fn = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "id", id->valuestring);
            cJSON_AddStringToObject(c, "type", "function");
            cJSON_AddStringToObject(fn, "name", nm->valuestring);
            cJSON_AddStringToObject(fn, "arguments", ar->valuestring);
            cJSON_AddItemToObject(c, "function", fn);
            cJSON_AddItemToArray(calls, c);
        } else if (!strcmp(t, "function_call_output")) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "call_id"), *out = cJSON_GetObjectItemCaseSensitive(it, "output");
            if (!cJSON_IsString(id)) return fail(x, NULL, NULL, "input", "%s: a function_call_output needs a string call_id", where), -1;
            cJSON *c = content_of(x, out, where);
            if (!c) return -1;
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "tool");
            cJSON_AddStringToObject(m, "tool_call_id", id->valuestring);
            cJSON_AddItemToObject(m, "content", c);
            cJSON_AddItemToArray(ms, m);
            last_asst = NULL;
        } else if (!strcmp(t, "reasoning")) { /* a model's reasoning item sent back: nothing to render */
            continue;
        } else {
            return fail(x, NULL, NULL, "input", "%s.type: %s is not supported (message, function_call, function_call_output)", where,
                        cJSON_IsString(ty) ? ds_quote(ty->valuestring) : "missing"),
                   -1;
        }
    }
    return 0;
}

cJSON *ds_responses_to_chat(const cJSON *req, const cJSON *prev, char *err, size_t cap, const char **param, cJSON **conv) {
    rctx x = {err, cap, param};
    *param = NULL;
    *conv = NULL;
    if (!cJSON_IsObject(req)) return fail(&x, NULL, NULL, NULL, "the request body must be a JSON object");
    const cJSON *cv = cJSON_GetObjectItemCaseSensitive(req, "conversation");
    if (cv && !cJSON_IsNull(cv))
        return fail(&x, NULL, NULL, "conversation", "'conversation' is not supported: chain responses with 'previous_response_id', or "
                                                   "send the whole conversation in 'input'");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "background")))
        return fail(&x, NULL, NULL, "background", "'background' is not supported");
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(req, "truncation");
    if (cJSON_IsString(tr) && strcmp(tr->valuestring, "disabled"))
        return fail(&x, NULL, NULL, "truncation", "'truncation' %s is not supported (\"disabled\": a prompt over the context gets 400)",
                    ds_quote(tr->valuestring));
    cJSON *chat = cJSON_CreateObject(), *ms = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof PASS / sizeof *PASS; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, PASS[i]);
        if (v) cJSON_AddItemToObject(chat, PASS[i], cJSON_Duplicate(v, 1));
    }
    const cJSON *mo = cJSON_GetObjectItemCaseSensitive(req, "max_output_tokens");
    if (mo && !cJSON_IsNull(mo)) cJSON_AddItemToObject(chat, "max_tokens", cJSON_Duplicate(mo, 1));
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(req, "instructions");
    if (ins && !cJSON_IsNull(ins)) {
        if (!cJSON_IsString(ins)) return fail(&x, chat, ms, "instructions", "'instructions' must be a string, got %s", ds_json_type_name(ins));
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", ins->valuestring);
        cJSON_AddItemToArray(ms, m);
    }
    const int nins = cJSON_GetArraySize(ms); /* the instructions' turn: not part of the conversation kept */
    const cJSON *pm;
    cJSON_ArrayForEach(pm, prev) cJSON_AddItemToArray(ms, cJSON_Duplicate(pm, 1));
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(req, "input");
    if (!in) return fail(&x, chat, ms, "input", "'input' is required");
    if (cJSON_IsString(in)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", in->valuestring);
        cJSON_AddItemToArray(ms, m);
    } else if (!cJSON_IsArray(in)) {
        return fail(&x, chat, ms, "input", "'input' must be a string or a list of items, got %s", ds_json_type_name(in));
    } else if (items(&x, in, ms)) {
        cJSON_Delete(chat), cJSON_Delete(ms);
        return NULL;
    }
    cJSON_AddItemToObject(chat, "messages", ms);
    /* tools: {type: function, name, description, parameters, strict} -> chat's {type, function: {...}} */
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(req, "tools"), *t;
    if (tl && !cJSON_IsNull(tl)) {
        if (!cJSON_IsArray(tl)) return fail(&x, chat, NULL, "tools", "'tools' must be a list, got %s", ds_json_type_name(tl));
        cJSON *ct = cJSON_AddArrayToObject(chat, "tools");
        int i = 0;
        cJSON_ArrayForEach(t, tl) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(t, "type"), *nm = cJSON_GetObjectItemCaseSensitive(t, "name");
            if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "function"))
                return fail(&x, chat, NULL, "tools", "tools[%d]: only function tools are supported%s%s", i,
                            cJSON_IsString(ty) ? ", got " : "", cJSON_IsString(ty) ? ds_quote(ty->valuestring) : "");
            if (!cJSON_IsString(nm)) return fail(&x, chat, NULL, "tools", "tools[%d].name must be a string", i);
            cJSON *fn = cJSON_CreateObject(), *w = cJSON_CreateObject();
            static const char *const keep[] = {"name", "description", "parameters", "strict"};
            for (int k = 0; k < 4; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, keep[k]);
                if (v && !cJSON_IsNull(v)) cJSON_AddItemToObject(fn, keep[k], cJSON_Duplicate(v, 1));
            }
            cJSON_AddStringToObject(w, "type", "function");
            cJSON_AddItemToObject(w, "function", fn);
            cJSON_AddItemToArray(ct, w);
            i++;
        }
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(req, "tool_choice");
    if (cJSON_IsObject(tc)) { /* {type: function, name} -> {type: function, function: {name}} */
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(tc, "name");
        if (!cJSON_IsString(nm)) return fail(&x, chat, NULL, "tool_choice", "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}");
        cJSON *w = cJSON_CreateObject(), *fn = cJSON_CreateObject();
        cJSON_AddStringToObject(w, "type", "function");
        cJSON_AddStringToObject(fn, "name", nm->valuestring);
        cJSON_AddItemToObject(w, "function", fn);
        cJSON_AddItemToObject(chat, "tool_choice", w);
    } else if (tc && !cJSON_IsNull(tc)) {
        cJSON_AddItemToObject(chat, "tool_choice", cJSON_Duplicate(tc, 1));
    }
    /* include ["message.output_text.logprobs"] and top_logprobs -> chat's logprobs and top_logprobs */
    const cJSON *inc = cJSON_GetObjectItemCaseSensitive(req, "include"), *e;
    int want_lp = 0;
    if (inc && !cJSON_IsNull(inc) && !cJSON_IsArray(inc))
        return fail(&x, chat, NULL, "include", "'include' must be a list of strings, got %s", ds_json_type_name(inc));
    cJSON_ArrayForEach(e, inc) {
        if (!cJSON_IsString(e)) return fail(&x, chat, NULL, "include", "'include' must be a list of strings");
        want_lp |= !strcmp(e->valuestring, "message.output_text.logprobs");
    }
    const cJSON *tlp = cJSON_GetObjectItemCaseSensitive(req, "top_logprobs");
    if (tlp && !cJSON_IsNull(tlp)) {
        cJSON_AddItemToObject(chat, "top_logprobs", cJSON_Duplicate(tlp, 1));
        want_lp = 1;
    }
    if (want_lp) cJSON_AddBoolToObject(chat, "logprobs", 1);
    /* text.format -> response_format */
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(req, "text"), "format");
    if (fmt && !cJSON_IsNull(fmt)) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(fmt, "type");
        if (!cJSON_IsString(ty)) return fail(&x, chat, NULL, "text", "'text.format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}");
        cJSON *rf = cJSON_CreateObject();
        cJSON_AddStringToObject(rf, "type", ty->valuestring);
        if (!strcmp(ty->valuestring, "json_schema")) { /* flat here: {type, name, schema, strict} */
            cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
            static const char *const keep[] = {"name", "schema", "strict", "description"};
            for (int k = 0; k < 4; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(fmt, keep[k]);
                if (v) cJSON_AddItemToObject(js, keep[k], cJSON_Duplicate(v, 1));
            }
        }
        cJSON_AddItemToObject(chat, "response_format", rf);
    }
    *conv = cJSON_CreateArray();
    for (int i = nins; i < cJSON_GetArraySize(ms); i++) cJSON_AddItemToArray(*conv, cJSON_Duplicate(cJSON_GetArrayItem(ms, i), 1));
    return chat;
}
