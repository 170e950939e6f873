/*
 * server.c — the HTTP side of `dsv3 serve` (see serve.h): libmicrohttpd with
 * a thread per connection (a streaming response blocks in its reader until
 * the scheduler has more text), request validation into OpenAI-shaped JSON
 * errors, the completions / chat completions responses and their SSE
 * chunks, /v1/models, /health and /metrics.
 *
 * Limits: the body is capped (413 from the Content-Length before reading, or
 * once a chunked body passes the cap), idle connections time out (a client
 * that sends half a request and stalls is dropped after timeout_s), open
 * connections are bounded, the scheduler's queue is bounded (503 with
 * Retry-After), the API key is compared in constant time, and a client that
 * goes away cancels its request (streaming: the failed write ends the
 * response; otherwise the socket is polled while waiting).
 */
#define _GNU_SOURCE
#include "serve/serve.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "io/json.h"
#include "serve/responses.h"
#include "serve/tools.h"

#ifndef DS_HAVE_MICROHTTPD

int ds_serve_available(void) { return 0; }
int ds_serve_http(const ds_serve_cfg *cfg) {
    (void)cfg;
    return ds_err("this dsv3 was built without libmicrohttpd, so it has no server (install libmicrohttpd-dev and "
                  "rebuild: make deps && make)");
}

#else

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

int ds_serve_available(void) { return 1; }

/* a stored Responses API answer: its object, and its conversation (chat messages, the answer last) */
typedef struct {
    char id[48];
    char *json;
    cJSON *conv;
} rstored;

typedef struct {
    const ds_serve_cfg *cfg;
    ds_json_guide *guide; /* response_format json_object, forced tool calls' arguments */
    pthread_mutex_t rmu;  /* the responses kept (cfg->responses_store at most; the oldest first out) */
    rstored *rst;
    int nrst;
    pthread_mutex_t mu;
    uint64_t next_id, id_salt; /* ids: the count mixed with a salt drawn at start (kept responses' ids are not guessable) */
    uint64_t http[8]; /* responses by status class below */
    int inflight;
    volatile sig_atomic_t stopping;
} server;

static const int STATUS[8] = {200, 400, 401, 404, 405, 413, 500, 503};
static void count_status(server *S, int status) {
    pthread_mutex_lock(&S->mu);
    for (int i = 0; i < 8; i++)
        if (STATUS[i] == status) S->http[i]++;
    pthread_mutex_unlock(&S->mu);
}

/* ---- responses --------------------------------------------------------------------- */
static enum MHD_Result send_body(server *S, struct MHD_Connection *c, int status, const char *ctype, char *body,
                                 const char *hname, const char *hval) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (hname) MHD_add_response_header(r, hname, hval);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    count_status(S, status);
    return ret;
}

static enum MHD_Result send_error(server *S, struct MHD_Connection *c, int status, const char *type, const char *param,
                                  const char *code, const char *fmt, ...) DS_PRINTF(7, 8);
static enum MHD_Result send_error(server *S, struct MHD_Connection *c, int status, const char *type, const char *param,
                                  const char *code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{\"error\": {\"message\": ");
    ds_json_put_string(&b, msg);
    ds_sbuf_puts(&b, ", \"type\": ");
    ds_json_put_string(&b, type);
    ds_sbuf_puts(&b, ", \"param\": ");
    if (param) ds_json_put_string(&b, param);
    else ds_sbuf_puts(&b, "null");
    ds_sbuf_puts(&b, ", \"code\": ");
    if (code) ds_json_put_string(&b, code);
    else ds_sbuf_puts(&b, "null");
    ds_sbuf_puts(&b, "}}\n");
    return send_body(S, c, status, "application/json", ds_sbuf_take(&b), status == 503 ? "Retry-After" : NULL, "1");
}

/* ---- request parameters ----------------------------------------------------------------- */
typedef struct {
    int chat, stream, include_usage, echo, token_ids, ignore_eos, include_stop;
    int responses;        /* POST /v1/responses: a chat request answered as a response object or its events */
    int64_t min_tokens;   /* extension, as vLLM's */
    int json;             /* response_format json_object / json_schema: the answer is one JSON object */
    cJSON *schema;        /* ... held to this schema (response_format json_schema; a forced call's parameters) */
    char *regex;          /* the answer held to a regex as a whole (guided_regex, guided_choice: vLLM's) */
    cJSON *rreq;          /* POST /v1/responses: the request as sent (its fields echo in the response); NULL else */
    cJSON *conv;          /* ... the conversation without the instructions (chat messages), kept with the answer */
    int store;            /* ... the answer is kept (store not false, --responses-store > 0) */
    int32_t *stop_ids;    /* stop_token_ids: extension, as vLLM's */
    int nstop_ids;
    int n;              /* choices: each its own sequence in the batch */
    int64_t max_tokens; /* -1: not given */
    ds_sample_params sp;
    int logprobs, top_logprobs; /* logprobs: 0/1; top: alternatives */
    char *stop[DS_SREQ_MAX_STOP];
    int nstop;
    int32_t *ids;       /* the prompt being parsed, then moved to pids[np] (push_prompt) */
    int64_t P;
    char *echo_text;
    int np, nch;        /* prompts (completions: a list of them), choices (np x n, prompt-major) */
    int32_t *pids[DS_SERVE_MAX_PROMPTS];
    int64_t pP[DS_SERVE_MAX_PROMPTS];
    char *pecho[DS_SERVE_MAX_PROMPTS];
    int32_t *drafts;    /* tests only (DSV3_SERVE_TEST_DRAFTS set): forced speculative drafts */
    int64_t ndrafts;
    /* chat tools */
    cJSON *tools;       /* the definitions the template sees (NULL: none) */
    int tool_choice;    /* TOOL_*: NONE, the answer is text; else it is parsed for calls */
    char *tool_name;    /* TOOL_NAMED: the function */
    char *tool_prefix;  /* TOOL_REQUIRED / TOOL_NAMED: the answer's forced start (ds_tool_prefix) */
    int parallel_calls; /* parallel_tool_calls: 0 keeps the first call only */
    char err[512];
    const char *param;
    int status;
} greq;

static int bad(greq *g, const char *param, const char *fmt, ...) DS_PRINTF(3, 4);
static int bad(greq *g, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    g->param = param;
    g->status = 400;
    return -1;
}

static const cJSON *field(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}
static int get_bool(greq *g, const cJSON *j, const char *k, int *out) {
    const cJSON *v = field(j, k);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return bad(g, k, "'%s' must be a boolean, got %s", k, ds_json_type_name(v));
    *out = cJSON_IsTrue(v);
    return 0;
}
static int get_int(greq *g, const cJSON *j, const char *k, int64_t lo, int64_t hi, int64_t *out) {
    const cJSON *v = field(j, k);
    if (!v) return 0;
    int64_t x;
    if (!cJSON_IsNumber(v) || ds_json_int64(v, &x))
        return bad(g, k, "'%s' must be an integer, got %s", k, cJSON_IsNumber(v) ? "a fraction" : ds_json_type_name(v));
    if (x < lo || x > hi) return bad(g, k, "'%s' must be in [%lld, %lld], got %lld", k, (long long)lo, (long long)hi, (long long)x);
    *out = x;
    return 0;
}
static int get_num(greq *g, const cJSON *j, const char *k, double lo, double hi, int lo_open, double *out) {
    const cJSON *v = field(j, k);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return bad(g, k, "'%s' must be a number, got %s", k, ds_json_type_name(v));
    double x = v->valuedouble;
    if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
        return bad(g, k, "'%s' must be in %c%g, %g], got %g", k, lo_open ? '(' : '[', lo, hi, x);
    *out = x;
    return 0;
}

/* vLLM's guided decoding: guided_regex, guided_choice, guided_json, or structured_outputs with one of
 * regex, choice, json.  A regex or a choice holds the whole answer (re.fullmatch); json is response_format's
 * json_schema */
static int parse_guided(greq *g, const cJSON *j) {
    const cJSON *so = field(j, "structured_outputs"), *k;
    if (so && !cJSON_IsObject(so))
        return bad(g, "structured_outputs", "'structured_outputs' must be an object: {\"regex\": ...}, {\"choice\": [...]} or {\"json\": {...}}");
    cJSON_ArrayForEach(k, so)
        if (strcmp(k->string, "regex") && strcmp(k->string, "choice") && strcmp(k->string, "json") && !cJSON_IsNull(k))
            return bad(g, "structured_outputs", "'structured_outputs.%s' is not supported (regex, choice, json)", k->string);
    const struct {
        const char *name;
        const cJSON *v;
    } kinds[] = {{"guided_regex", field(j, "guided_regex")},         {"guided_choice", field(j, "guided_choice")},
                 {"guided_json", field(j, "guided_json")},           {"structured_outputs.regex", field(so, "regex")},
                 {"structured_outputs.choice", field(so, "choice")}, {"structured_outputs.json", field(so, "json")}};
    int given = 0, kind = 0;
    const char *name = NULL;
    const cJSON *v = NULL;
    for (int i = 0; i < 6; i++)
        if (kinds[i].v) given++, kind = i % 3, name = kinds[i].name, v = kinds[i].v;
    if (!given) return 0;
    if (given > 1 || g->json)
        return bad(g, name, "give one of 'response_format', 'guided_regex', 'guided_choice', 'guided_json' and 'structured_outputs'");
    if (kind == 2) { /* a schema (or its text) */
        cJSON *sch = cJSON_IsString(v) ? cJSON_Parse(v->valuestring) : cJSON_Duplicate(v, 1);
        if (!cJSON_IsObject(sch)) {
            cJSON_Delete(sch);
            return bad(g, name, "'%s' must be a JSON Schema (an object, or its text)", name);
        }
        ds_json_schema *c = ds_json_schema_compile(sch);
        if (!c) {
            cJSON_Delete(sch);
            return bad(g, name, "'%s': %s", name, ds_errmsg());
        }
        ds_json_schema_free(c);
        g->json = 1, g->schema = sch;
        return 0;
    }
    ds_sbuf b = {0};
    if (kind == 0) {
        if (!cJSON_IsString(v)) return bad(g, name, "'%s' must be a string (a regex), got %s", name, ds_json_type_name(v));
        ds_sbuf_puts(&b, v->valuestring);
    } else { /* the choices, each escaped, as alternatives */
        const cJSON *c;
        int i = 0;
        if (!cJSON_IsArray(v) || !cJSON_GetArraySize(v)) return bad(g, name, "'%s' must be a non-empty list of strings", name);
        cJSON_ArrayForEach(c, v) {
            if (!cJSON_IsString(c)) {
                free(b.p);
                return bad(g, name, "'%s'[%d] must be a string, got %s", name, i, ds_json_type_name(c));
            }
            i++;
            if (c != v->child) ds_sbuf_puts(&b, "|");
            for (const unsigned char *p = (const unsigned char *)c->valuestring; *p; p++) {
                const int plain = *p >= 0x80 || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z') || *p == ' ';
                if (!plain) ds_sbuf_puts(&b, "\\");
                ds_sbuf_put(&b, (const char *)p, 1);
            }
        }
    }
    char *pat = ds_sbuf_take(&b);
    ds_json_schema *c = ds_json_schema_regex(pat ? pat : "");
    if (!c) {
        free(pat);
        return bad(g, name, "'%s': %s", name, ds_errmsg());
    }
    ds_json_schema_free(c);
    g->regex = pat ? pat : ds_strdup("");
    return 0;
}

static int parse_common(server *S, greq *g, const cJSON *j) {
    const cJSON *m = field(j, "model");
    if (m && !cJSON_IsString(m)) return bad(g, "model", "'model' must be a string, got %s", ds_json_type_name(m));
    int64_t n = 1, seed = -1, top_k = 0;
    double temp = 1.0, top_p = 1.0;
    g->max_tokens = -1;
    if (get_int(g, j, "n", 1, DS_SERVE_MAX_N, &n)) return -1;
    g->n = (int)n;
    if (get_int(g, j, "max_tokens", 0, INT64_C(1) << 40, &g->max_tokens)) return -1;
    if (get_int(g, j, "max_completion_tokens", 0, INT64_C(1) << 40, &g->max_tokens)) return -1;
    if (get_num(g, j, "temperature", 0, 2, 0, &temp)) return -1;
    if (get_num(g, j, "top_p", 0, 1, 1, &top_p)) return -1;
    if (get_int(g, j, "top_k", -1, INT64_C(1) << 31, &top_k)) return -1;
    if (get_int(g, j, "seed", INT64_MIN / 2, INT64_MAX / 2, &seed)) return -1;
    if (get_bool(g, j, "stream", &g->stream)) return -1;
    if (get_bool(g, j, "return_token_ids", &g->token_ids)) return -1;
    if (get_bool(g, j, "ignore_eos", &g->ignore_eos)) return -1; /* extension, as vLLM's */
    if (get_bool(g, j, "include_stop_str_in_output", &g->include_stop)) return -1; /* vLLM's: keep the stop string */
    if (get_int(g, j, "min_tokens", 0, INT64_C(1) << 40, &g->min_tokens)) return -1; /* extension, as vLLM's */
    if (g->max_tokens >= 0 && g->min_tokens > g->max_tokens)
        return bad(g, "min_tokens", "'min_tokens' (%lld) is more than 'max_tokens' (%lld)", (long long)g->min_tokens,
                   (long long)g->max_tokens);
    const cJSON *rf = field(j, "response_format");
    if (rf) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsObject(rf) || !cJSON_IsString(ty))
            return bad(g, "response_format", "'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}");
        if (!strcmp(ty->valuestring, "json_object")) {
            g->json = 1;
        } else if (!strcmp(ty->valuestring, "json_schema")) {
            const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
            const cJSON *sch = cJSON_GetObjectItemCaseSensitive(js, "schema");
            if (!cJSON_IsObject(js) || !sch)
                return bad(g, "response_format", "'response_format' json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}");
            ds_json_schema *c = ds_json_schema_compile(sch);
            if (!c) return bad(g, "response_format", "'response_format' json_schema: %s", ds_errmsg());
            ds_json_schema_free(c);
            g->json = 1;
            g->schema = cJSON_Duplicate(sch, 1);
        } else if (strcmp(ty->valuestring, "text")) {
            return bad(g, "response_format", "'response_format': unknown type %s (text, json_object, json_schema)",
                       ds_quote(ty->valuestring));
        }
    }
    if (parse_guided(g, j)) return -1;
    const cJSON *si = field(j, "stop_token_ids"); /* extension, as vLLM's */
    if (si) {
        if (!cJSON_IsArray(si)) return bad(g, "stop_token_ids", "'stop_token_ids' must be a list of token ids, got %s", ds_json_type_name(si));
        const int n = cJSON_GetArraySize(si);
        if (n > DS_SREQ_MAX_STOP_IDS) return bad(g, "stop_token_ids", "'stop_token_ids' takes at most %d ids, got %d", DS_SREQ_MAX_STOP_IDS, n);
        g->stop_ids = ds_malloc((size_t)(n + 1) * sizeof(int32_t));
        const cJSON *x;
        cJSON_ArrayForEach(x, si) {
            int64_t v;
            if (!cJSON_IsNumber(x) || ds_json_int64(x, &v) || v < 0 || v >= S->cfg->vocab)
                return bad(g, "stop_token_ids", "'stop_token_ids'[%d] is not a token id of the vocabulary [0, %lld)", g->nstop_ids,
                           (long long)S->cfg->vocab);
            g->stop_ids[g->nstop_ids++] = (int32_t)v;
        }
    }
    const cJSON *fd = getenv("DSV3_SERVE_TEST_DRAFTS") ? field(j, "dsv3_test_drafts") : NULL;
    if (cJSON_IsArray(fd)) { /* tests: the draft proposed for output token i (speculative serving) */
        g->drafts = ds_malloc((size_t)(cJSON_GetArraySize(fd) + 1) * sizeof(int32_t));
        const cJSON *x;
        cJSON_ArrayForEach(x, fd) g->drafts[g->ndrafts++] = cJSON_IsNumber(x) ? (int32_t)x->valuedouble : 0;
    }
    const cJSON *so = field(j, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return bad(g, "stream_options", "'stream_options' must be an object");
        if (get_bool(g, so, "include_usage", &g->include_usage)) return -1;
    }
    double min_p = 0, rep = 1, pres = 0, freq = 0;
    if (get_num(g, j, "min_p", 0, 1, 0, &min_p)) return -1;                     /* extension, as vLLM's */
    if (get_num(g, j, "repetition_penalty", 0, 100, 1, &rep)) return -1;        /* extension, as vLLM's */
    if (get_num(g, j, "presence_penalty", -2, 2, 0, &pres)) return -1;
    if (get_num(g, j, "frequency_penalty", -2, 2, 0, &freq)) return -1;
    const cJSON *lb = field(j, "logit_bias");
    if (lb) {
        if (!cJSON_IsObject(lb)) return bad(g, "logit_bias", "'logit_bias' must be an object of token ids to numbers, got %s", ds_json_type_name(lb));
        const int n = cJSON_GetArraySize(lb);
        if (n > DS_MAX_LOGIT_BIAS) return bad(g, "logit_bias", "'logit_bias' takes at most %d tokens, got %d", DS_MAX_LOGIT_BIAS, n);
        ds_logit_bias *lbs = ds_malloc((size_t)(n + 1) * sizeof *lbs); /* owned through sp.bias (greq_free) */
        g->sp.bias = lbs;
        const cJSON *x;
        cJSON_ArrayForEach(x, lb) {
            const char *k = x->string;
            char *end = NULL;
            long long id = k[0] >= '0' && k[0] <= '9' ? strtoll(k, &end, 10) : -1;
            if (id < 0 || *end || id >= S->cfg->vocab)
                return bad(g, "logit_bias", "'logit_bias': key %s is not a token id of the vocabulary [0, %lld)", ds_quote(k),
                           (long long)S->cfg->vocab);
            if (!cJSON_IsNumber(x) || !(x->valuedouble >= -100 && x->valuedouble <= 100))
                return bad(g, "logit_bias", "'logit_bias': the bias of token %lld must be a number in [-100, 100]", id);
            lbs[g->sp.nbias++] = (ds_logit_bias){(int32_t)id, (float)x->valuedouble};
        }
    }
    g->sp.min_p = min_p, g->sp.repetition_penalty = rep, g->sp.presence_penalty = pres, g->sp.frequency_penalty = freq;
    g->sp.temperature = temp;
    g->sp.top_p = top_p;
    g->sp.top_k = top_k < 0 ? 0 : top_k;
    if (seed == -1) {
        pthread_mutex_lock(&S->mu);
        seed = (int64_t)(ds_now() * 1e6) ^ (int64_t)(S->next_id * 0x9E3779B97F4A7C15ULL);
        pthread_mutex_unlock(&S->mu);
    }
    g->sp.seed = (uint64_t)seed;
    const cJSON *st = field(j, "stop");
    if (st) {
        if (cJSON_IsString(st)) {
            if (*st->valuestring) g->stop[g->nstop++] = ds_strdup(st->valuestring);
        } else if (cJSON_IsArray(st)) {
            const cJSON *x;
            cJSON_ArrayForEach(x, st) {
                if (!cJSON_IsString(x)) return bad(g, "stop", "'stop' must be a string or a list of strings");
                if (g->nstop == DS_SREQ_MAX_STOP) return bad(g, "stop", "'stop' takes at most %d strings", DS_SREQ_MAX_STOP);
                if (*x->valuestring) g->stop[g->nstop++] = ds_strdup(x->valuestring);
            }
        } else {
            return bad(g, "stop", "'stop' must be a string or a list of strings, got %s", ds_json_type_name(st));
        }
    }
    if (g->chat) {
        if (get_bool(g, j, "logprobs", &g->logprobs)) return -1;
        int64_t k = 0;
        if (get_int(g, j, "top_logprobs", 0, DS_SREQ_MAX_TOP, &k)) return -1;
        if (k > 0 && !g->logprobs) return bad(g, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        g->top_logprobs = (int)k;
    } else {
        const cJSON *lp = field(j, "logprobs");
        if (lp) {
            int64_t k = 0;
            if (cJSON_IsBool(lp)) k = cJSON_IsTrue(lp) ? 0 : -1;
            else if (get_int(g, j, "logprobs", 0, 5, &k)) return -1;
            g->logprobs = k >= 0;
            g->top_logprobs = k > 0 ? (int)k : 0;
        }
        if (get_bool(g, j, "echo", &g->echo)) return -1;
    }
    return 0;
}

/* tools, tool_choice, parallel_tool_calls (chat) */
enum { TOOL_NONE, TOOL_AUTO, TOOL_REQUIRED, TOOL_NAMED };
static int parse_tools(server *S, greq *g, const cJSON *j) {
    const cJSON *tl = field(j, "tools"), *tc = field(j, "tool_choice"), *t;
    g->parallel_calls = 1;
    if (get_bool(g, j, "parallel_tool_calls", &g->parallel_calls)) return -1;
    int nt = 0;
    if (tl) {
        if (!cJSON_IsArray(tl))
            return bad(g, "tools", "'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\": ...}}, got %s",
                       ds_json_type_name(tl));
        if ((nt = cJSON_GetArraySize(tl)) > DS_SERVE_MAX_TOOLS)
            return bad(g, "tools", "'tools' holds %d tools, at most %d", nt, DS_SERVE_MAX_TOOLS);
        int i = 0;
        cJSON_ArrayForEach(t, tl) {
            const cJSON *ty = cJSON_GetObjectItemCaseSensitive(t, "type"), *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name"), *d = field(fn, "description"), *pa = field(fn, "parameters");
            if (!cJSON_IsObject(t) || !cJSON_IsString(ty) || strcmp(ty->valuestring, "function"))
                return bad(g, "tools", "tools[%d] must be an object with \"type\": \"function\"", i);
            if (!cJSON_IsObject(fn) || !cJSON_IsString(nm) || !*nm->valuestring || strlen(nm->valuestring) > 256 ||
                strpbrk(nm->valuestring, "\n\r"))
                return bad(g, "tools", "tools[%d].function.name must be a name of 1 to 256 characters on one line", i);
            if (d && !cJSON_IsString(d)) return bad(g, "tools", "tools[%d].function.description must be a string", i);
            if (pa && !cJSON_IsObject(pa)) return bad(g, "tools", "tools[%d].function.parameters must be a JSON Schema object", i);
            i++;
        }
    }
    int choice = nt ? TOOL_AUTO : TOOL_NONE;
    const char *name = NULL;
    if (tc) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function"), *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "none")) choice = TOOL_NONE;
        else if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "auto")) choice = TOOL_AUTO;
        else if (cJSON_IsString(tc) && !strcmp(tc->valuestring, "required")) choice = TOOL_REQUIRED;
        else if (cJSON_IsObject(tc) && cJSON_IsString(nm)) choice = TOOL_NAMED, name = nm->valuestring;
        else
            return bad(g, "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                                         "\"function\": {\"name\": ...}}");
        if (choice != TOOL_NONE && !nt) return bad(g, "tool_choice", "'tool_choice' other than \"none\" needs 'tools'");
        int found = !name;
        cJSON_ArrayForEach(t, tl) {
            const cJSON *tn = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
            found |= name && !strcmp(tn->valuestring, name);
        }
        if (!found) return bad(g, "tool_choice", "'tool_choice' names %s, which is not one of 'tools'", ds_quote(name));
    }
    if (choice != TOOL_NONE && S->cfg->tool_format == DS_TOOLS_NONE)
        return bad(g, "tools", "this server reads no tool calls: its chat template names no tool-call format it knows "
                               "(start it with --tool-parser deepseek_v3 or hermes), or send 'tool_choice': \"none\"");
    if (choice == TOOL_NONE) return 0; /* the template does not see the tools (as vLLM) */
    if (g->regex && choice != TOOL_AUTO)
        return bad(g, "tool_choice", "a forced tool call ('tool_choice' \"required\" or a function) beside a regex or choice answer");
    g->tools = cJSON_Duplicate(tl, 1);
    g->tool_choice = choice;
    if (name) {
        g->tool_name = ds_strdup(name);
        /* the forced call's arguments follow the function's parameters where dsv3 can hold them to it */
        const cJSON *t2;
        cJSON_ArrayForEach(t2, tl) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t2, "function"), *pa = field(fn, "parameters");
            if (!pa || strcmp(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, name) || g->schema) continue;
            ds_json_schema *c = ds_json_schema_compile(pa);
            if (c) g->schema = cJSON_Duplicate(pa, 1);
            ds_json_schema_free(c);
        }
    }
    if (choice != TOOL_AUTO) g->tool_prefix = ds_tool_prefix(S->cfg->tool_format, name);
    return 0;
}

/* tool_choice "required": the guide's choice among the tools — each name and
 * what follows it in the call's format, then that tool's parameters; NULL
 * (no guide) past DS_JSON_MAX_MEMBERS tools or for a name Hermes would escape */
static ds_json_schema *required_choice(server *S, const greq *g) {
    const char *texts[DS_JSON_MAX_MEMBERS];
    const cJSON *schemas[DS_JSON_MAX_MEMBERS], *t;
    int k = 0, ok = cJSON_GetArraySize(g->tools) <= DS_JSON_MAX_MEMBERS;
    cJSON_ArrayForEach(t, g->tools) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const char *name = cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring;
        for (const unsigned char *c = (const unsigned char *)name; ok && *c; c++) ok = *c >= 0x20 && *c != '"' && *c != '\\';
        if (!ok) break;
        ds_sbuf b = {0};
        ds_sbuf_printf(&b, S->cfg->tool_format == DS_TOOLS_HERMES ? "%s\", \"arguments\": " : "%s\n```json\n", name);
        texts[k] = ds_sbuf_take(&b);
        schemas[k++] = field(fn, "parameters");
    }
    ds_json_schema *c = ok ? ds_json_schema_choice(texts, schemas, k) : NULL;
    for (int i = 0; i < k; i++) free((char *)texts[i]);
    return c;
}

/* an assistant turn's tool_calls, checked, with the arguments in the form the
 * server's format renders: DeepSeek-V3's template concatenates strings, Hermes
 * templates print objects with tojson (as vLLM hands them) */
static int norm_tool_calls(server *S, greq *g, cJSON *m, const char *where) {
    cJSON *tcs = cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), *tc;
    if (!tcs || cJSON_IsNull(tcs)) return 0;
    if (!cJSON_IsArray(tcs)) return bad(g, "messages", "%s.tool_calls must be a list", where);
    int k = 0;
    cJSON_ArrayForEach(tc, tcs) {
        cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsObject(tc) || !cJSON_IsObject(fn) || !cJSON_IsString(nm) || !(cJSON_IsString(args) || cJSON_IsObject(args)))
            return bad(g, "messages", "%s.tool_calls[%d] must be {\"type\": \"function\", \"function\": {\"name\": ..., "
                                      "\"arguments\": ...}}", where, k);
        if (!cJSON_GetObjectItemCaseSensitive(tc, "type")) cJSON_AddStringToObject(tc, "type", "function");
        cJSON *conv = NULL;
        if (cJSON_IsObject(args) && S->cfg->tool_format != DS_TOOLS_HERMES) {
            char *s = ds_json_dumps_py(args);
            if (s) conv = cJSON_CreateString(s);
            free(s);
        } else if (cJSON_IsString(args) && S->cfg->tool_format == DS_TOOLS_HERMES) {
            conv = cJSON_Parse(args->valuestring); /* arguments that are not JSON stay a string */
        }
        if (conv) cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", conv);
        k++;
    }
    return 0;
}

static int tokenize(server *S, greq *g, const char *text, int add_bos, const char *param) {
    int32_t *enc = NULL;
    int64_t n = ds_tokenizer_encode(S->cfg->tok, text, strlen(text), 1, &enc);
    if (n < 0) return bad(g, param, "cannot tokenize the %s: %s", param, ds_errmsg());
    int bos = add_bos && ds_tokenizer_bos_id(S->cfg->tok) >= 0;
    g->ids = ds_malloc((size_t)(n + 1) * sizeof(int32_t));
    g->P = 0;
    if (bos) g->ids[g->P++] = ds_tokenizer_bos_id(S->cfg->tok);
    memcpy(g->ids + g->P, enc, (size_t)n * sizeof(int32_t));
    g->P += n;
    free(enc);
    for (int64_t i = 0; i < g->P; i++)
        if (g->ids[i] < 0 || g->ids[i] >= S->cfg->vocab)
            return bad(g, param, "the tokenizer gives id %d, beyond the model's vocabulary of %lld", g->ids[i],
                       (long long)S->cfg->vocab);
    return 0;
}

/* the prompt just parsed (ids, P, echo text) becomes prompt np */
static void push_prompt(greq *g) {
    g->pids[g->np] = g->ids, g->pP[g->np] = g->P, g->pecho[g->np] = g->echo_text;
    g->np++;
    g->ids = NULL, g->P = 0, g->echo_text = NULL;
}

/* one prompt: a string or a list of token ids */
static int parse_one_prompt(server *S, greq *g, const cJSON *p) {
    if (cJSON_IsString(p)) {
        if (!*p->valuestring) return bad(g, "prompt", "'prompt' is empty");
        if (g->echo) g->echo_text = ds_strdup(p->valuestring);
        if (tokenize(S, g, p->valuestring, S->cfg->add_bos, "prompt")) return -1;
        push_prompt(g);
        return 0;
    }
    int n = cJSON_GetArraySize(p);
    if (n == 0) return bad(g, "prompt", "'prompt' is empty");
    g->ids = ds_malloc((size_t)n * sizeof(int32_t));
    const cJSON *x;
    cJSON_ArrayForEach(x, p) {
        int64_t v;
        if (!cJSON_IsNumber(x) || ds_json_int64(x, &v))
            return bad(g, "prompt", "'prompt' must be a string, a list of token ids, or a list of those");
        if (v < 0 || v >= S->cfg->vocab)
            return bad(g, "prompt", "token id %lld is outside the vocabulary [0, %lld)", (long long)v, (long long)S->cfg->vocab);
        g->ids[g->P++] = (int32_t)v;
    }
    if (g->echo) {
        size_t len;
        g->echo_text = ds_tokenizer_decode(S->cfg->tok, g->ids, g->P, 0, &len);
    }
    push_prompt(g);
    return 0;
}

/* 'prompt': a string, a list of token ids, or a list of strings and token-id lists (a batch) */
static int parse_prompt(server *S, greq *g, const cJSON *j) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    if (!p) return bad(g, "prompt", "'prompt' is required");
    if (cJSON_IsString(p)) return parse_one_prompt(S, g, p);
    if (!cJSON_IsArray(p))
        return bad(g, "prompt", "'prompt' must be a string, a list of token ids, or a list of those, got %s",
                   ds_json_type_name(p));
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    if (!first || cJSON_IsNumber(first)) return parse_one_prompt(S, g, p);
    int np = cJSON_GetArraySize(p);
    if (np > DS_SERVE_MAX_PROMPTS) return bad(g, "prompt", "'prompt' holds %d prompts, at most %d", np, DS_SERVE_MAX_PROMPTS);
    const cJSON *x;
    cJSON_ArrayForEach(x, p) {
        if (!cJSON_IsString(x) && !cJSON_IsArray(x))
            return bad(g, "prompt", "'prompt' must be a string, a list of token ids, or a list of those");
        if (parse_one_prompt(S, g, x)) return -1;
    }
    return 0;
}

/* vLLM's chat options for the template: add_generation_prompt (default true),
 * continue_final_message (the answer continues the final message; then
 * add_generation_prompt defaults to false, and both true is refused, as
 * transformers refuses it) and chat_template_kwargs (more template variables) */
static int parse_chat_opts(greq *g, const cJSON *j, ds_chat_opts *o) {
    int agp = 1, cont = 0;
    if (get_bool(g, j, "add_generation_prompt", &agp) || get_bool(g, j, "continue_final_message", &cont)) return -1;
    if (cont && agp && field(j, "add_generation_prompt"))
        return bad(g, "continue_final_message", "'continue_final_message' and 'add_generation_prompt' cannot both be true "
                   "(continue the final message, or start a new assistant message)");
    if (cont && g->tool_prefix)
        return bad(g, "continue_final_message", "'continue_final_message' cannot go with a forced tool call "
                   "(tool_choice 'required' or a named function starts a new answer)");
    const cJSON *kw = field(j, "chat_template_kwargs"), *e;
    if (kw && !cJSON_IsObject(kw))
        return bad(g, "chat_template_kwargs", "'chat_template_kwargs' must be an object, got %s", ds_json_type_name(kw));
    static const char *const own[] = {"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"};
    if (kw) cJSON_ArrayForEach(e, kw)
        for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
            if (!strcmp(e->string, own[i]))
                return bad(g, "chat_template_kwargs", "chat_template_kwargs.%s: the request sets '%s' itself", own[i], own[i]);
    *o = (ds_chat_opts){.add_generation_prompt = cont ? 0 : agp, .continue_final_message = cont, .kwargs = kw};
    return 0;
}

static int parse_messages(server *S, greq *g, const cJSON *j) {
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "messages");
    ds_chat_opts copts;
    if (parse_chat_opts(g, j, &copts)) return -1;
    if (!ms) return bad(g, "messages", "'messages' is required");
    if (!cJSON_IsArray(ms)) return bad(g, "messages", "'messages' must be a list, got %s", ds_json_type_name(ms));
    if (cJSON_GetArraySize(ms) == 0) return bad(g, "messages", "'messages' is empty");
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    cJSON *norm = cJSON_CreateArray();
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        char where[64];
        snprintf(where, sizeof where, "messages[%d]", i);
        if (!cJSON_IsObject(m)) {
            cJSON_Delete(norm);
            return bad(g, "messages", "%s must be an object, got %s", where, ds_json_type_name(m));
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role"), *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        int known = 0;
        for (int k = 0; k < 5 && cJSON_IsString(role); k++) known |= !strcmp(role->valuestring, roles[k]);
        if (!known) {
            cJSON_Delete(norm);
            if (!cJSON_IsString(role)) return bad(g, "messages", "%s.role must be a string", where);
            return bad(g, "messages", "%s.role: unknown role %s (known: system, user, assistant, tool, developer)",
                       where, ds_quote(role->valuestring));
        }
        cJSON *nm = cJSON_Duplicate(m, 1);
        if (cJSON_IsArray(content)) { /* a list of {"type": "text", "text": ...} parts: joined with newlines */
            ds_sbuf b = {0};
            const cJSON *part;
            int k = 0;
            cJSON_ArrayForEach(part, content) {
                const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type"), *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
                    free(b.p);
                    cJSON_Delete(nm), cJSON_Delete(norm);
                    return bad(g, "messages", "%s.content[%d]: only {\"type\": \"text\", \"text\": ...} parts are supported", where, k);
                }
                if (k++) ds_sbuf_puts(&b, "\n");
                ds_sbuf_puts(&b, tx->valuestring);
            }
            char *s = ds_sbuf_take(&b);
            cJSON_ReplaceItemInObjectCaseSensitive(nm, "content", cJSON_CreateString(s));
            free(s);
        } else if (content && !cJSON_IsString(content) && !cJSON_IsNull(content)) {
            cJSON_Delete(nm), cJSON_Delete(norm);
            return bad(g, "messages", "%s.content must be a string, a list of text parts or null, got %s", where,
                       ds_json_type_name(content));
        } else if (!content && strcmp(role->valuestring, "assistant")) {
            cJSON_Delete(nm), cJSON_Delete(norm);
            return bad(g, "messages", "%s.content is required", where);
        } else if (!content) { /* an assistant turn of tool calls: content null, as OpenAI's clients send it */
            cJSON_AddNullToObject(nm, "content");
        }
        if (!strcmp(role->valuestring, "assistant") && norm_tool_calls(S, g, nm, where)) {
            cJSON_Delete(nm), cJSON_Delete(norm);
            return -1;
        }
        cJSON_AddItemToArray(norm, nm);
        i++;
    }
    if (!S->cfg->tmpl) {
        cJSON_Delete(norm);
        return bad(g, "messages", "this model has no chat template (tokenizer_config.json chat_template); use /v1/completions");
    }
    char *text = ds_chat_template_render(S->cfg->tmpl, norm, g->tools, &copts, S->cfg->bos, S->cfg->eos);
    cJSON_Delete(norm);
    if (!text) return bad(g, "messages", "%s", ds_errmsg());
    if (g->tool_prefix) { /* a forced call: the answer starts with it */
        char *t = ds_malloc(strlen(text) + strlen(g->tool_prefix) + 1);
        strcat(strcpy(t, text), g->tool_prefix);
        free(text);
        text = t;
    }
    int rc = tokenize(S, g, text, 0, "messages");
    free(text);
    if (!rc && g->P == 0) return bad(g, "messages", "the rendered conversation is empty");
    if (!rc) push_prompt(g);
    return rc;
}

/* ---- output --------------------------------------------------------------------------- */
static void put_lp(ds_sbuf *b, float v) {
    if (!isfinite(v)) v = -9999.0f;
    ds_json_put_double(b, (double)v);
}
static void put_token_str(server *S, ds_sbuf *b, int32_t id, int with_bytes) {
    size_t len = 0;
    const char *t = ds_tokenizer_token_bytes(S->cfg->tok, id, &len);
    char *s = ds_malloc(len + 1);
    if (t) memcpy(s, t, len);
    s[t ? len : 0] = 0;
    ds_json_put_string(b, s);
    if (with_bytes) {
        ds_sbuf_puts(b, ", \"bytes\": [");
        for (size_t i = 0; t && i < len; i++) ds_sbuf_printf(b, "%s%u", i ? ", " : "", (unsigned char)t[i]);
        ds_sbuf_puts(b, "]");
    }
    free(s);
}

/* [{token, logprob, bytes, top_logprobs: K of {token, logprob, bytes}}, ...] of output tokens [a, e):
 * chat's logprobs.content, and the Responses API's output_text logprobs */
static void put_lp_entries(server *S, ds_sbuf *b, const ds_sreq *r, int K, int64_t a, int64_t e) {
    ds_sbuf_puts(b, "[");
    for (int64_t i = a; i < e; i++) {
        ds_sbuf_puts(b, i > a ? ", {\"token\": " : "{\"token\": ");
        put_token_str(S, b, r->out[i], 0);
        ds_sbuf_puts(b, ", \"logprob\": ");
        put_lp(b, r->lp[i]);
        ds_sbuf_puts(b, ", \"bytes\": [");
        size_t len = 0;
        const char *t = ds_tokenizer_token_bytes(S->cfg->tok, r->out[i], &len);
        for (size_t k = 0; t && k < len; k++) ds_sbuf_printf(b, "%s%u", k ? ", " : "", (unsigned char)t[k]);
        ds_sbuf_puts(b, "], \"top_logprobs\": [");
        for (int k = 0; k < K; k++) {
            ds_sbuf_puts(b, k ? ", {\"token\": " : "{\"token\": ");
            put_token_str(S, b, r->top_id[i * DS_SREQ_MAX_TOP + k], 1);
            ds_sbuf_puts(b, ", \"logprob\": ");
            put_lp(b, r->top_lp[i * DS_SREQ_MAX_TOP + k]);
            ds_sbuf_puts(b, "}");
        }
        ds_sbuf_puts(b, "]}");
    }
    ds_sbuf_puts(b, "]");
}

/* logprobs of tokens [a, b) in the completions or the chat shape; with_prompt
 * (completions, echo with logprobs): the prompt's tokens before them */
static void put_logprobs(server *S, ds_sbuf *b, const ds_sreq *r, const greq *g, int64_t a, int64_t e, int with_prompt,
                         size_t off0) {
    if (!g->logprobs) {
        ds_sbuf_puts(b, "null");
        return;
    }
    int K = g->top_logprobs;
    if (g->chat) {
        ds_sbuf_puts(b, "{\"content\": ");
        put_lp_entries(S, b, r, K, a, e);
        ds_sbuf_puts(b, "}");
        return;
    }
    /* echo with logprobs: the prompt's tokens first, the first one without a log-probability (null) */
    const int64_t np = r->prompt_logprobs && with_prompt ? r->P : 0, n = np + (e - a);
#define TOK(i) ((i) < np ? r->prompt[i] : r->out[a + (i) - np])
    ds_sbuf_puts(b, "{\"tokens\": [");
    for (int64_t i = 0; i < n; i++) {
        if (i) ds_sbuf_puts(b, ", ");
        put_token_str(S, b, TOK(i), 0);
    }
    ds_sbuf_puts(b, "], \"token_logprobs\": [");
    for (int64_t i = 0; i < n; i++) {
        if (i) ds_sbuf_puts(b, ", ");
        if (i == 0 && np) ds_sbuf_puts(b, "null");
        else put_lp(b, i < np ? r->p_lp[i] : r->lp[a + i - np]);
    }
    ds_sbuf_puts(b, "], \"top_logprobs\": [");
    for (int64_t i = 0; i < n; i++) {
        if (i) ds_sbuf_puts(b, ", ");
        if (i == 0 && np) {
            ds_sbuf_puts(b, "null");
            continue;
        }
        const int32_t *tid = i < np ? r->p_top_id + i * DS_SREQ_MAX_TOP : r->top_id + (a + i - np) * DS_SREQ_MAX_TOP;
        const float *tlp = i < np ? r->p_top_lp + i * DS_SREQ_MAX_TOP : r->top_lp + (a + i - np) * DS_SREQ_MAX_TOP;
        ds_sbuf_puts(b, "{");
        for (int k = 0; k < K; k++) {
            if (k) ds_sbuf_puts(b, ", ");
            put_token_str(S, b, tid[k], 0);
            ds_sbuf_puts(b, ": ");
            put_lp(b, tlp[k]);
        }
        ds_sbuf_puts(b, "}");
    }
    ds_sbuf_puts(b, "], \"text_offset\": [");
    size_t off = np ? 0 : off0; /* the prompt's tokens from 0; the completion's from the echoed text's end */
    for (int64_t i = 0; i < n; i++) {
        size_t len = 0;
        if (i == np && np) off = off0;
        ds_tokenizer_token_bytes(S->cfg->tok, TOK(i), &len);
        ds_sbuf_printf(b, "%s%zu", i ? ", " : "", off);
        off += len;
    }
#undef TOK
    ds_sbuf_puts(b, "]}");
}

/* the prompts' tokens, each prompt once */
static int64_t prompt_tokens(const greq *g) {
    int64_t n = 0;
    for (int i = 0; i < g->np; i++) n += g->pP[i];
    return n;
}

/* usage: the prompt counted once, the completion tokens of every choice;
 * cached: the prompt tokens found in the prefix cache (each prompt's first choice) */
static void put_usage(ds_sbuf *b, int64_t P, int64_t nout, int64_t cached) {
    ds_sbuf_printf(b,
                   "{\"prompt_tokens\": %lld, \"completion_tokens\": %lld, \"total_tokens\": %lld, "
                   "\"prompt_tokens_details\": {\"cached_tokens\": %lld}}",
                   (long long)P, (long long)nout, (long long)(P + nout), (long long)cached);
}

static void put_head(server *S, ds_sbuf *b, const char *id, long created, const char *object) {
    ds_sbuf_printf(b, "{\"id\": \"%s\", \"object\": \"%s\", \"created\": %ld, \"model\": ", id, object, created);
    ds_json_put_string(b, S->cfg->model_name);
    ds_sbuf_puts(b, ", \"system_fingerprint\": \"dsv3\", \"choices\": [");
}

static const char *finish_of(const ds_sreq *r) {
    return !strcmp(r->finish, "stop") ? "stop" : "length";
}

/* the content and calls of a chat answer when the request has tools */
static void answer_calls(server *S, const greq *g, const ds_sreq *r, ds_tool_result *tr) {
    ds_tool_parse(S->cfg->tool_format, g->tool_prefix, r->text, r->ntext, g->tool_choice == TOOL_NAMED ? g->tool_name : NULL, tr);
    for (; !g->parallel_calls && tr->ncalls > 1; tr->ncalls--) free(tr->calls[tr->ncalls - 1].name), free(tr->calls[tr->ncalls - 1].arguments);
}

/* call k of choice j: {id, type, function: {name, arguments}} (indexed: with "index", as stream deltas) */
static void put_call(ds_sbuf *b, const ds_tool_call *c, const char *id, int j, int k, int indexed) {
    const char *hex = strchr(id, '-') ? strchr(id, '-') : strchr(id, '_');
    ds_sbuf_puts(b, "{");
    if (indexed) ds_sbuf_printf(b, "\"index\": %d, ", k);
    ds_sbuf_printf(b, "\"id\": \"call_%s%02x%02x\", \"type\": \"function\", \"function\": {\"name\": ", hex ? hex + 1 : id, j, k);
    ds_json_put_string(b, c->name);
    ds_sbuf_puts(b, ", \"arguments\": ");
    ds_json_put_string(b, c->arguments);
    ds_sbuf_puts(b, "}}");
}

/* tool_calls: [{id, type, function: {name, arguments}}, ...] */
static void put_tool_calls(ds_sbuf *b, const ds_tool_result *tr, const char *id, int j, int indexed) {
    ds_sbuf_puts(b, "[");
    for (int k = 0; k < tr->ncalls; k++) {
        if (k) ds_sbuf_puts(b, ", ");
        put_call(b, &tr->calls[k], id, j, k, indexed);
    }
    ds_sbuf_puts(b, "]");
}

static const char *finish_calls(const ds_sreq *r, const ds_tool_result *tr) {
    return tr->ncalls && !strcmp(finish_of(r), "stop") ? "tool_calls" : finish_of(r);
}

/* ---- the Responses API's objects ---------------------------------------------------------- */
/* a field of the request as sent, or def (JSON text) */
static void echo_field(ds_sbuf *b, const greq *g, const char *k, const char *def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(g->rreq, k);
    char *t = v && !cJSON_IsNull(v) ? cJSON_PrintUnformatted(v) : NULL;
    ds_sbuf_printf(b, "\"%s\": %s", k, t ? t : def);
    free(t);
}

/* the output_text logprobs of tokens [a, e) of r as the Responses API shows them: the
 * list when the request asked (include message.output_text.logprobs, top_logprobs) and
 * the text is the tokens' own (no tool calls parsed out of it), else [] */
static void put_text_lp(server *S, ds_sbuf *b, const greq *g, const ds_sreq *r, int64_t a, int64_t e) {
    if (r && g->logprobs && !g->tool_choice) put_lp_entries(S, b, r, g->top_logprobs, a, e);
    else ds_sbuf_puts(b, "[]");
}

/* a message item: text (NULL: no content part yet) with the logprobs of r's tokens (r NULL: none) */
static void put_msg_item(server *S, ds_sbuf *b, const greq *g, const ds_sreq *r, const char *id, const char *text,
                         const char *status) {
    ds_sbuf_printf(b, "{\"id\": \"msg_%s\", \"type\": \"message\", \"status\": \"%s\", \"role\": \"assistant\", \"content\": [",
                   strchr(id, '_') + 1, status);
    if (text) {
        ds_sbuf_puts(b, "{\"type\": \"output_text\", \"text\": ");
        ds_json_put_string(b, text);
        ds_sbuf_puts(b, ", \"annotations\": [], \"logprobs\": ");
        put_text_lp(S, b, g, r, 0, r ? r->nout : 0);
        ds_sbuf_puts(b, "}");
    }
    ds_sbuf_puts(b, "]}");
}

/* a function_call item (its call_id is what chat's put_call names the call) */
static void put_fc_item(ds_sbuf *b, const char *id, int k, const char *name, const char *args, const char *status) {
    const char *hex = strchr(id, '_') + 1;
    ds_sbuf_printf(b, "{\"id\": \"fc_%s%02x\", \"type\": \"function_call\", \"status\": \"%s\", \"call_id\": \"call_%s00%02x\", "
                   "\"name\": ", hex, k, status, hex, k);
    ds_json_put_string(b, name);
    ds_sbuf_puts(b, ", \"arguments\": ");
    ds_json_put_string(b, args);
    ds_sbuf_puts(b, "}");
}

/* a response object: in progress (r NULL: no output yet), or r's answer: a message item with its text
 * (when there is text, or no call) and a function_call item per call */
static void put_response(server *S, ds_sbuf *b, const greq *g, const ds_sreq *r, const char *id, long created) {
    const int incomplete = r && strcmp(r->finish, "stop");
    ds_sbuf_printf(b, "{\"id\": \"%s\", \"object\": \"response\", \"created_at\": %ld, \"status\": \"%s\", \"error\": null, "
                   "\"incomplete_details\": %s, ", id, created, !r ? "in_progress" : incomplete ? "incomplete" : "completed",
                   incomplete ? "{\"reason\": \"max_output_tokens\"}" : "null");
    echo_field(b, g, "instructions", "null");
    ds_sbuf_puts(b, ", ");
    echo_field(b, g, "max_output_tokens", "null");
    ds_sbuf_puts(b, ", \"model\": ");
    ds_json_put_string(b, S->cfg->model_name);
    ds_sbuf_puts(b, ", \"output\": [");
    if (r) {
        ds_tool_result tr;
        memset(&tr, 0, sizeof tr);
        if (g->tool_choice) answer_calls(S, g, r, &tr);
        const char *text = g->tool_choice ? tr.content : r->text ? r->text : "";
        const char *st = incomplete ? "incomplete" : "completed";
        const int msg = (text && *text) || !tr.ncalls;
        if (msg) put_msg_item(S, b, g, r, id, text ? text : "", st);
        for (int k = 0; k < tr.ncalls; k++) {
            if (k || msg) ds_sbuf_puts(b, ", ");
            put_fc_item(b, id, k, tr.calls[k].name, tr.calls[k].arguments, st);
        }
        ds_tool_result_free(&tr);
    }
    ds_sbuf_printf(b, "], \"parallel_tool_calls\": %s, \"previous_response_id\": null, \"reasoning\": {\"effort\": null, "
                   "\"summary\": null}, \"store\": false, ", g->parallel_calls || !g->tools ? "true" : "false");
    echo_field(b, g, "temperature", "1.0");
    ds_sbuf_puts(b, ", \"text\": ");
    const cJSON *tx = cJSON_GetObjectItemCaseSensitive(g->rreq, "text");
    char *t = cJSON_IsObject(tx) ? cJSON_PrintUnformatted(tx) : NULL;
    ds_sbuf_puts(b, t ? t : "{\"format\": {\"type\": \"text\"}}");
    free(t);
    ds_sbuf_puts(b, ", ");
    echo_field(b, g, "tool_choice", "\"auto\"");
    ds_sbuf_puts(b, ", ");
    echo_field(b, g, "tools", "[]");
    ds_sbuf_puts(b, ", ");
    echo_field(b, g, "top_p", "1.0");
    ds_sbuf_puts(b, ", \"truncation\": \"disabled\", ");
    echo_field(b, g, "metadata", "{}");
    ds_sbuf_puts(b, ", \"usage\": ");
    if (r)
        ds_sbuf_printf(b, "{\"input_tokens\": %lld, \"input_tokens_details\": {\"cached_tokens\": %lld}, \"output_tokens\": %lld, "
                       "\"output_tokens_details\": {\"reasoning_tokens\": 0}, \"total_tokens\": %lld}",
                       (long long)r->P, (long long)r->cached, (long long)r->nout, (long long)(r->P + r->nout));
    else
        ds_sbuf_puts(b, "null");
    ds_sbuf_puts(b, "}");
}

/* ---- the responses kept ------------------------------------------------------------------- */
/* text as the response shows it (invalid UTF-8 as U+FFFD): a string item */
static cJSON *shown(const char *text) {
    ds_sbuf b = {0};
    ds_json_put_string(&b, text);
    cJSON *v = cJSON_Parse(b.p);
    free(b.p);
    return v;
}

/* the answer of r as a chat message, as the response shows it: its text, and its calls named as it names them */
static cJSON *answer_message(server *S, const greq *g, const ds_sreq *r, const char *id) {
    ds_tool_result tr;
    memset(&tr, 0, sizeof tr);
    if (g->tool_choice) answer_calls(S, g, r, &tr);
    const char *text = g->tool_choice ? tr.content : r->text ? r->text : "";
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    if (text && *text) cJSON_AddItemToObject(m, "content", shown(text));
    else if (tr.ncalls) cJSON_AddNullToObject(m, "content");
    else cJSON_AddStringToObject(m, "content", "");
    if (tr.ncalls) {
        cJSON *calls = cJSON_AddArrayToObject(m, "tool_calls");
        for (int k = 0; k < tr.ncalls; k++) {
            char cid[64];
            snprintf(cid, sizeof cid, "call_%s00%02x", strchr(id, '_') + 1, k);
            cJSON *c = cJSON_CreateObject(), *fn = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "id", cid);
            cJSON_AddStringToObject(c, "type", "function");
            cJSON_AddItemToObject(fn, "name", shown(tr.calls[k].name));
            cJSON_AddItemToObject(fn, "arguments", shown(tr.calls[k].arguments));
            cJSON_AddItemToObject(c, "function", fn);
            cJSON_AddItemToArray(calls, c);
        }
    }
    ds_tool_result_free(&tr);
    return m;
}

/* keep a finished response (its object json) and its conversation; the oldest goes when full */
static void store_put(server *S, const greq *g, const ds_sreq *r, const char *id, const char *json) {
    const int cap = S->cfg->responses_store;
    if (!g->store || cap <= 0 || !g->conv) return;
    cJSON *conv = cJSON_Duplicate(g->conv, 1);
    cJSON_AddItemToArray(conv, answer_message(S, g, r, id));
    pthread_mutex_lock(&S->rmu);
    if (S->nrst == cap) {
        free(S->rst[0].json), cJSON_Delete(S->rst[0].conv);
        memmove(S->rst, S->rst + 1, (size_t)(cap - 1) * sizeof *S->rst);
        S->nrst--;
    }
    if (!S->rst) S->rst = ds_calloc((size_t)cap, sizeof *S->rst);
    rstored *e = &S->rst[S->nrst++];
    snprintf(e->id, sizeof e->id, "%s", id);
    e->json = ds_strdup(json), e->conv = conv;
    pthread_mutex_unlock(&S->rmu);
}

/* the kept response id: a copy of its object (json) or of its conversation (conv), or NULL; del: drop it */
static void *store_get(server *S, const char *id, int conv, int del) {
    void *out = NULL;
    pthread_mutex_lock(&S->rmu);
    for (int i = 0; i < S->nrst; i++) {
        if (strcmp(S->rst[i].id, id)) continue;
        out = conv ? (void *)cJSON_Duplicate(S->rst[i].conv, 1) : (void *)ds_strdup(S->rst[i].json);
        if (del) {
            free(S->rst[i].json), cJSON_Delete(S->rst[i].conv);
            memmove(S->rst + i, S->rst + i + 1, (size_t)(S->nrst - i - 1) * sizeof *S->rst);
            S->nrst--;
        }
        break;
    }
    pthread_mutex_unlock(&S->rmu);
    return out;
}

/* the whole response of finished requests, one choice each (scheduler mutex held) */
static char *full_response(server *S, ds_sreq *const *rs, const greq *g, const char *id, long created) {
    ds_sbuf b = {0};
    if (g->responses) {
        put_response(S, &b, g, rs[0], id, created);
        store_put(S, g, rs[0], id, b.p);
        ds_sbuf_puts(&b, "\n");
        return ds_sbuf_take(&b);
    }
    put_head(S, &b, id, created, g->chat ? "chat.completion" : "text_completion");
    int64_t ntok = 0, cached = 0;
    for (int j = 0; j < g->nch; j++) {
        const ds_sreq *r = rs[j];
        const char *echo = g->pecho[j / g->n];
        ntok += r->nout;
        if (j % g->n == 0) cached += r->cached;
        ds_sbuf_printf(&b, "%s{\"index\": %d, ", j ? ", " : "", j);
        const char *finish = finish_of(r);
        if (g->chat && g->tool_choice) {
            ds_tool_result tr;
            answer_calls(S, g, r, &tr);
            ds_sbuf_puts(&b, "\"message\": {\"role\": \"assistant\", \"content\": ");
            if (tr.content) ds_json_put_string(&b, tr.content);
            else ds_sbuf_puts(&b, "null");
            if (tr.ncalls) {
                ds_sbuf_puts(&b, ", \"tool_calls\": ");
                put_tool_calls(&b, &tr, id, j, 0);
            }
            ds_sbuf_puts(&b, "}, \"logprobs\": ");
            put_logprobs(S, &b, r, g, 0, r->nout, 0, 0);
            finish = finish_calls(r, &tr);
            ds_tool_result_free(&tr);
        } else if (g->chat) {
            ds_sbuf_puts(&b, "\"message\": {\"role\": \"assistant\", \"content\": ");
            ds_json_put_string(&b, r->text ? r->text : "");
            ds_sbuf_puts(&b, "}, \"logprobs\": ");
            put_logprobs(S, &b, r, g, 0, r->nout, 0, 0);
        } else {
            ds_sbuf t = {0};
            if (echo) ds_sbuf_puts(&t, echo);
            ds_sbuf_put(&t, r->text ? r->text : "", r->ntext);
            char *s = ds_sbuf_take(&t);
            ds_sbuf_puts(&b, "\"text\": ");
            ds_json_put_string(&b, s);
            free(s);
            ds_sbuf_puts(&b, ", \"logprobs\": ");
            put_logprobs(S, &b, r, g, 0, r->nout, 1, echo ? strlen(echo) : 0);
        }
        if (g->token_ids) { /* extension (as vLLM's return_token_ids): the prompt's and the completion's ids */
            ds_sbuf_puts(&b, ", \"prompt_token_ids\": [");
            for (int64_t i = 0; i < r->P; i++) ds_sbuf_printf(&b, "%s%d", i ? ", " : "", r->prompt[i]);
            ds_sbuf_puts(&b, "], \"token_ids\": [");
            for (int64_t i = 0; i < r->nout; i++) ds_sbuf_printf(&b, "%s%d", i ? ", " : "", r->out[i]);
            ds_sbuf_puts(&b, "]");
        }
        ds_sbuf_printf(&b, ", \"finish_reason\": \"%s\"}", finish);
    }
    ds_sbuf_puts(&b, "], \"usage\": ");
    put_usage(&b, prompt_tokens(g), ntok, cached);
    ds_sbuf_puts(&b, "}\n");
    return ds_sbuf_take(&b);
}

/* ---- streaming ---------------------------------------------------------------------------- */
typedef struct {
    ds_sreq *r;
    size_t sent_text, text_off;
    int64_t sent_tok;
    int started, finished;
    const char *finish; /* chat with tools: the finish reason once the calls are sent */
    int call_open;      /* a named call: its name is sent, its arguments stream */
    int calls_sent;     /* tools auto / required: the calls begun in the stream (their names sent) */
    size_t args_sent;   /* ... and the bytes of the last one's arguments sent */
    size_t calls_read;  /* ... the text they were read from so far */
} choice;
typedef struct {
    server *S;
    choice ch[DS_SERVE_MAX_CHOICES]; /* g.nch of them */
    greq g;
    char id[48];
    long created;
    int finished;
    ds_sbuf pend;
    size_t pend_off;
    /* POST /v1/responses: its events' state (one choice) */
    int seq, nitems, msg_item;  /* events sent; output items begun; the message item's index (-1: none open) */
    ds_sbuf msg_text;           /* the open message's text so far */
    int ncalls, call_item[DS_SERVE_MAX_CALLS];
    char *call_name[DS_SERVE_MAX_CALLS];
    ds_sbuf call_args[DS_SERVE_MAX_CALLS];
} stream;

/* one Responses API event: its type, then the fields in body (JSON members, no braces) */
static void rev(stream *st, const char *type, const char *body) {
    ds_sbuf_printf(&st->pend, "event: %s\ndata: {\"type\": \"%s\", \"sequence_number\": %d, %s}\n\n", type, type, st->seq++, body);
}

static void rev_response(stream *st, const char *type, const ds_sreq *r) {
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "\"response\": ");
    put_response(st->S, &b, &st->g, r, st->id, st->created);
    rev(st, type, b.p);
    free(b.p);
}

/* close the open message item: its text and part done, the item done */
static void rev_close_msg(stream *st, const char *status) {
    if (st->msg_item < 0) return;
    ds_sbuf b = {0};
    const char *hex = strchr(st->id, '_') + 1, *text = st->msg_text.p ? st->msg_text.p : "";
    ds_sbuf_printf(&b, "\"item_id\": \"msg_%s\", \"output_index\": %d, \"content_index\": 0, \"text\": ", hex, st->msg_item);
    const ds_sreq *r = st->ch[0].r; /* the Responses API: one choice */
    ds_json_put_string(&b, text);
    ds_sbuf_puts(&b, ", \"logprobs\": ");
    put_text_lp(st->S, &b, &st->g, r, 0, r->nout);
    rev(st, "response.output_text.done", b.p);
    b.n = 0;
    ds_sbuf_printf(&b, "\"item_id\": \"msg_%s\", \"output_index\": %d, \"content_index\": 0, \"part\": {\"type\": \"output_text\", "
                   "\"text\": ", hex, st->msg_item);
    ds_json_put_string(&b, text);
    ds_sbuf_puts(&b, ", \"annotations\": [], \"logprobs\": ");
    put_text_lp(st->S, &b, &st->g, r, 0, r->nout);
    ds_sbuf_puts(&b, "}");
    rev(st, "response.content_part.done", b.p);
    b.n = 0;
    ds_sbuf_printf(&b, "\"output_index\": %d, \"item\": ", st->msg_item);
    put_msg_item(st->S, &b, &st->g, r, st->id, text, status);
    rev(st, "response.output_item.done", b.p);
    free(b.p);
    st->msg_item = -1;
}

/* what chunk_delta would send for chat, as Responses API events: the response created (first), text as
 * output_text deltas of a message item, calls (chat's tool_calls deltas) as function_call items and their
 * arguments' deltas; at the finish every open item done, then response.completed (or .incomplete) */
static void rev_delta(stream *st, int j, const char *text, size_t n, const char *tool_calls, int64_t ta, int64_t tb,
                      const char *finish) {
    choice *ch = &st->ch[j];
    const char *hex = strchr(st->id, '_') + 1;
    ds_sbuf b = {0};
    if (!ch->started) {
        st->msg_item = -1;
        rev_response(st, "response.created", NULL);
        rev_response(st, "response.in_progress", NULL);
        ch->started = 1;
    }
    if (n) {
        if (st->msg_item < 0) {
            st->msg_item = st->nitems++;
            ds_sbuf_printf(&b, "\"output_index\": %d, \"item\": ", st->msg_item);
            put_msg_item(st->S, &b, &st->g, NULL, st->id, NULL, "in_progress");
            rev(st, "response.output_item.added", b.p);
            b.n = 0;
            ds_sbuf_printf(&b, "\"item_id\": \"msg_%s\", \"output_index\": %d, \"content_index\": 0, \"part\": {\"type\": "
                           "\"output_text\", \"text\": \"\", \"annotations\": [], \"logprobs\": []}", hex, st->msg_item);
            rev(st, "response.content_part.added", b.p);
            b.n = 0;
        }
        ds_sbuf_put(&st->msg_text, text, n);
        ds_sbuf_printf(&b, "\"item_id\": \"msg_%s\", \"output_index\": %d, \"content_index\": 0, \"delta\": ", hex, st->msg_item);
        char *t = ds_strndup(text, n);
        ds_json_put_string(&b, t);
        free(t);
        ds_sbuf_puts(&b, ", \"logprobs\": ");
        put_text_lp(st->S, &b, &st->g, ch->r, ta, tb);
        rev(st, "response.output_text.delta", b.p);
        b.n = 0;
    }
    cJSON *calls = tool_calls ? cJSON_Parse(tool_calls) : NULL, *c;
    cJSON_ArrayForEach(c, calls) {
        const int k = cJSON_GetObjectItem(c, "index")->valueint;
        const cJSON *fn = cJSON_GetObjectItem(c, "function"), *nm = cJSON_GetObjectItem(fn, "name");
        const char *args = cJSON_GetObjectItem(fn, "arguments")->valuestring;
        if (k >= DS_SERVE_MAX_CALLS) continue;
        if (cJSON_IsString(nm) && k == st->ncalls) { /* a new call: its item */
            rev_close_msg(st, "completed");
            st->call_item[k] = st->nitems++;
            st->call_name[k] = ds_strdup(nm->valuestring);
            st->ncalls++;
            ds_sbuf_printf(&b, "\"output_index\": %d, \"item\": ", st->call_item[k]);
            put_fc_item(&b, st->id, k, nm->valuestring, "", "in_progress");
            rev(st, "response.output_item.added", b.p);
            b.n = 0;
        }
        if (k >= st->ncalls || !*args) continue;
        ds_sbuf_puts(&st->call_args[k], args);
        ds_sbuf_printf(&b, "\"item_id\": \"fc_%s%02x\", \"output_index\": %d, \"delta\": ", hex, k, st->call_item[k]);
        ds_json_put_string(&b, args);
        rev(st, "response.function_call_arguments.delta", b.p);
        b.n = 0;
    }
    cJSON_Delete(calls);
    if (finish) {
        const int incomplete = strcmp(ch->r->finish, "stop") != 0;
        const char *status = incomplete ? "incomplete" : "completed";
        if (!st->ncalls && st->msg_item < 0) { /* no text at all: an empty message, as the whole response has */
            st->msg_item = st->nitems++;
            ds_sbuf_printf(&b, "\"output_index\": %d, \"item\": ", st->msg_item);
            put_msg_item(st->S, &b, &st->g, NULL, st->id, NULL, "in_progress");
            rev(st, "response.output_item.added", b.p);
            b.n = 0;
        }
        rev_close_msg(st, status);
        for (int k = 0; k < st->ncalls; k++) {
            const char *a = st->call_args[k].p ? st->call_args[k].p : "";
            ds_sbuf_printf(&b, "\"item_id\": \"fc_%s%02x\", \"output_index\": %d, \"arguments\": ", hex, k, st->call_item[k]);
            ds_json_put_string(&b, a);
            rev(st, "response.function_call_arguments.done", b.p);
            b.n = 0;
            ds_sbuf_printf(&b, "\"output_index\": %d, \"item\": ", st->call_item[k]);
            put_fc_item(&b, st->id, k, st->call_name[k], a, status);
            rev(st, "response.output_item.done", b.p);
            b.n = 0;
        }
        ds_sbuf o = {0}; /* the response: the last event's, and the one kept */
        put_response(st->S, &o, &st->g, ch->r, st->id, st->created);
        store_put(st->S, &st->g, ch->r, st->id, o.p);
        b.n = 0;
        ds_sbuf_puts(&b, "\"response\": ");
        ds_sbuf_puts(&b, o.p);
        rev(st, incomplete ? "response.incomplete" : "response.completed", b.p);
        free(o.p);
    }
    free(b.p);
}

static void chunk_begin(stream *st, ds_sbuf *b) {
    ds_sbuf_puts(b, "data: ");
    put_head(st->S, b, st->id, st->created, st->g.chat ? "chat.completion.chunk" : "text_completion");
}

/* one chunk of choice j: text (or, chat, tool_calls: a rendered list of them),
 * the logprobs of tokens [ta, tb) (with_prompt: the prompt's before them), the
 * finish reason or NULL */
static void chunk_delta(stream *st, int j, const char *text, size_t n, const char *tool_calls, int64_t ta, int64_t tb,
                        int with_prompt, const char *finish) {
    if (st->g.responses) {
        rev_delta(st, j, text, n, tool_calls, ta, tb, finish);
        return;
    }
    ds_sbuf *b = &st->pend;
    choice *ch = &st->ch[j];
    chunk_begin(st, b);
    char *s = ds_malloc(n + 1);
    memcpy(s, text, n);
    s[n] = 0;
    if (st->g.chat) {
        ds_sbuf_printf(b, "{\"index\": %d, \"delta\": {", j);
        if (!ch->started) ds_sbuf_puts(b, "\"role\": \"assistant\", ");
        if (tool_calls) {
            ds_sbuf_puts(b, "\"tool_calls\": ");
            ds_sbuf_puts(b, tool_calls);
        } else {
            ds_sbuf_puts(b, "\"content\": ");
            ds_json_put_string(b, s);
        }
        ds_sbuf_puts(b, "}, \"logprobs\": ");
    } else {
        ds_sbuf_printf(b, "{\"index\": %d, \"text\": ", j);
        ds_json_put_string(b, s);
        ds_sbuf_puts(b, ", \"logprobs\": ");
    }
    free(s);
    if (tb > ta || with_prompt) put_logprobs(st->S, b, ch->r, &st->g, ta, tb, with_prompt, ch->text_off);
    else ds_sbuf_puts(b, "null");
    for (int64_t i = ta; i < tb; i++) {
        size_t len = 0;
        ds_tokenizer_token_bytes(st->S->cfg->tok, ch->r->out[i], &len);
        ch->text_off += len;
    }
    if (st->g.token_ids) {
        ds_sbuf_puts(b, ", \"token_ids\": [");
        for (int64_t i = ta; i < tb; i++) ds_sbuf_printf(b, "%s%d", i > ta ? ", " : "", ch->r->out[i]);
        ds_sbuf_puts(b, "]");
    }
    if (finish) ds_sbuf_printf(b, ", \"finish_reason\": \"%s\"}]", finish);
    else ds_sbuf_puts(b, ", \"finish_reason\": null}]");
    if (st->g.include_usage) ds_sbuf_puts(b, ", \"usage\": null");
    ds_sbuf_puts(b, "}\n\n");
    ch->started = 1;
}

static void chunk_text(stream *st, int j, const char *text, size_t n, int64_t ta, int64_t tb, const char *finish) {
    chunk_delta(st, j, text, n, NULL, ta, tb, 0, finish);
}

/* a named call's arguments as they grow: the first delta names the call, the
 * next ones carry the arguments' new text (the whole answer is the
 * arguments: the call's start was forced, and the guide ends it at their close) */
static void stream_named_args(stream *st, int j, const char *text, size_t n) {
    choice *ch = &st->ch[j];
    ds_sbuf b = {0};
    char *s = ds_strndup(text, n);
    if (!ch->call_open) {
        ds_tool_result one = {.calls = &(ds_tool_call){st->g.tool_name, s}, .ncalls = 1};
        put_tool_calls(&b, &one, st->id, j, 1);
        ch->call_open = 1;
    } else {
        ds_sbuf_puts(&b, "[{\"index\": 0, \"function\": {\"arguments\": ");
        ds_json_put_string(&b, s);
        ds_sbuf_puts(&b, "}}]");
    }
    chunk_delta(st, j, "", 0, b.p, ch->sent_tok, ch->r->nout, 0, NULL);
    ch->sent_tok = ch->r->nout;
    free(s), free(b.p);
}

/* the deltas that bring choice j's streamed calls up to tr's (calls as far as they are sure, or the
 * final ones): the rest of the last call begun, then each new call with its arguments so far; one chunk */
static void stream_calls(stream *st, int j, const ds_tool_result *tr) {
    choice *ch = &st->ch[j];
    const int n = !st->g.parallel_calls && tr->ncalls > 1 ? 1 : tr->ncalls;
    ds_sbuf b = {0};
    int parts = 0;
    ds_sbuf_puts(&b, "[");
    for (int k = ch->calls_sent ? ch->calls_sent - 1 : 0; k < n; k++) {
        const char *a = tr->calls[k].arguments;
        const size_t na = strlen(a);
        if (k < ch->calls_sent) { /* begun: the rest of its arguments */
            if (na <= ch->args_sent) continue;
            ds_sbuf_printf(&b, "%s{\"index\": %d, \"function\": {\"arguments\": ", parts++ ? ", " : "", k);
            ds_json_put_string(&b, a + ch->args_sent);
            ds_sbuf_puts(&b, "}}");
        } else {
            if (parts++) ds_sbuf_puts(&b, ", ");
            put_call(&b, &tr->calls[k], st->id, j, k, 1);
            ch->calls_sent = k + 1;
        }
        ch->args_sent = na;
    }
    ds_sbuf_puts(&b, "]");
    if (parts) {
        chunk_delta(st, j, "", 0, b.p, ch->sent_tok, ch->r->nout, 0, NULL);
        ch->sent_tok = ch->r->nout;
    }
    free(b.p);
}

/* chat with tools: content as far as no call marker can start in it, then each call as far as it is sure
 * (ds_tool_parse_partial: DeepSeek-V3's arguments as they grow, a Hermes call once it closes); at the end,
 * the rest, so the stream adds up to the answer without streaming (but for an answer that ends inside a
 * call: the call is then content there, after its first deltas here).  A named call streams its
 * arguments as they grow (stream_named_args). */
static void produce_tools(stream *st, int j) {
    choice *ch = &st->ch[j];
    ds_sreq *r = ch->r;
    if (!r->done && st->g.tool_choice == TOOL_NAMED) {
        if (!ch->call_open || r->text_ready > ch->sent_text) stream_named_args(st, j, r->text + ch->sent_text, r->text_ready - ch->sent_text);
        ch->sent_text = r->text_ready;
        return;
    }
    if (!r->done) {
        size_t ready = st->g.tool_prefix ? 0 : ds_tool_content_ready(st->S->cfg->tool_format, r->text, r->text_ready);
        if (ready > ch->sent_text) {
            chunk_text(st, j, r->text + ch->sent_text, ready - ch->sent_text, ch->sent_tok, r->nout, NULL);
            ch->sent_text = ready, ch->sent_tok = r->nout;
        }
        if (r->text_ready == ch->calls_read) return; /* no new text: no new call or arguments */
        ch->calls_read = r->text_ready;
        ds_tool_result part;
        int open;
        ds_tool_parse_partial(st->S->cfg->tool_format, st->g.tool_prefix, r->text, r->text_ready, &part, &open);
        if (part.ncalls) stream_calls(st, j, &part);
        ds_tool_result_free(&part);
        return;
    }
    if (ch->finish || (strcmp(r->finish, "stop") && strcmp(r->finish, "length"))) return;
    ds_tool_result tr;
    answer_calls(st->S, &st->g, r, &tr);
    if (ch->call_open) { /* a named call streamed so far: the rest of its arguments */
        const char *a = tr.ncalls ? tr.calls[0].arguments : "";
        if (strlen(a) > ch->sent_text && !strncmp(a, r->text, ch->sent_text))
            stream_named_args(st, j, a + ch->sent_text, strlen(a) - ch->sent_text);
        ch->finish = finish_calls(r, &tr);
        ds_tool_result_free(&tr);
        return;
    }
    const size_t nc = tr.content ? strlen(tr.content) : 0;
    if (nc > ch->sent_text || (!tr.ncalls && r->nout > ch->sent_tok)) {
        chunk_text(st, j, nc > ch->sent_text ? tr.content + ch->sent_text : "", nc > ch->sent_text ? nc - ch->sent_text : 0,
                   ch->sent_tok, r->nout, NULL);
        ch->sent_text = nc, ch->sent_tok = r->nout;
    }
    if (tr.ncalls >= ch->calls_sent) stream_calls(st, j, &tr);
    ch->finish = finish_calls(r, &tr);
    ds_tool_result_free(&tr);
}

/* scheduler mutex held: the events that are ready, choice by choice; after
 * the last choice's end, the usage chunk and [DONE] */
static void produce(stream *st) {
    int nfin = 0, failed = 0;
    int64_t ntok = 0, cached = 0;
    for (int j = 0; j < st->g.nch; j++) {
        choice *ch = &st->ch[j];
        ds_sreq *r = ch->r;
        const char *echo = st->g.pecho[j / st->g.n];
        /* echo with logprobs: the echo waits for the prompt's log-probabilities (the prefill); none if it failed */
        const int lp_wait = r->prompt_logprobs && r->nout == 0 &&
                            (!r->done || (strcmp(r->finish, "stop") && strcmp(r->finish, "length")));
        if (!ch->started && echo && lp_wait && !r->done) continue;
        if (!ch->started && echo && !lp_wait) {
            chunk_delta(st, j, echo, strlen(echo), NULL, 0, 0, r->prompt_logprobs, NULL);
            ch->text_off = strlen(echo);
        } else if (!ch->started && st->g.chat) {
            chunk_text(st, j, "", 0, 0, 0, NULL);
        }
        if (st->g.tool_choice) {
            produce_tools(st, j);
        } else if (r->text_ready > ch->sent_text || ((r->done || st->g.token_ids) && r->nout > ch->sent_tok)) {
            /* with return_token_ids, new ids go out at once even when their text is not ready
             * (a partial UTF-8 character, a tail a stop string may take back) */
            int64_t tb = r->nout;
            chunk_text(st, j, r->text ? r->text + ch->sent_text : "", r->text_ready - ch->sent_text, ch->sent_tok, tb, NULL);
            ch->sent_text = r->text_ready;
            ch->sent_tok = tb;
        }
        if (r->done && !ch->finished) {
            if (!strcmp(r->finish, "cancelled") || !strcmp(r->finish, "error")) failed = 1;
            else chunk_text(st, j, "", 0, 0, 0, ch->finish ? ch->finish : finish_of(r));
            ch->finished = 1;
        }
        nfin += ch->finished;
        ntok += r->nout;
        if (j % st->g.n == 0) cached += r->cached;
    }
    if (st->finished || (nfin < st->g.nch && !failed)) return;
    if (failed && st->g.responses) {
        rev(st, "error", "\"code\": \"server_error\", \"message\": \"the request was cancelled (server shutting down or an internal "
                         "error)\", \"param\": null");
    } else if (failed) {
        ds_sbuf_puts(&st->pend, "data: {\"error\": {\"message\": \"the request was cancelled (server shutting down or an "
                                "internal error)\", \"type\": \"server_error\", \"param\": null, \"code\": null}}\n\n");
    } else if (st->g.include_usage) {
        chunk_begin(st, &st->pend);
        ds_sbuf_puts(&st->pend, "], \"usage\": ");
        put_usage(&st->pend, prompt_tokens(&st->g), ntok, cached);
        ds_sbuf_puts(&st->pend, "}\n\n");
    }
    if (!st->g.responses) ds_sbuf_puts(&st->pend, "data: [DONE]\n\n"); /* the Responses API's stream ends at its last event */
    st->finished = 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    ds_sched *sc = st->S->cfg->sched;
    for (;;) {
        if (st->pend_off < st->pend.n) {
            size_t n = st->pend.n - st->pend_off;
            if (n > max) n = max;
            memcpy(buf, st->pend.p + st->pend_off, n);
            st->pend_off += n;
            return (ssize_t)n;
        }
        st->pend.n = 0;
        st->pend_off = 0;
        if (st->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        ds_sched_lock(sc);
        produce(st);
        if (st->pend.n == 0) ds_sched_wait(sc, 100);
        ds_sched_unlock(sc);
    }
}

static void greq_free(greq *g) {
    free(g->ids);
    free(g->echo_text);
    for (int i = 0; i < g->np; i++) free(g->pids[i]), free(g->pecho[i]);
    free(g->drafts);
    free((void *)g->sp.bias);
    for (int i = 0; i < g->nstop; i++) free(g->stop[i]);
    cJSON_Delete(g->tools);
    cJSON_Delete(g->schema);
    cJSON_Delete(g->rreq), cJSON_Delete(g->conv);
    free(g->regex);
    free(g->stop_ids);
    free(g->tool_name), free(g->tool_prefix);
}

static void stream_free(void *cls) {
    stream *st = cls;
    for (int j = 0; j < st->g.nch; j++) ds_sched_release(st->S->cfg->sched, st->ch[j].r); /* cancels it when the client left early */
    pthread_mutex_lock(&st->S->mu);
    st->S->inflight--;
    pthread_mutex_unlock(&st->S->mu);
    free(st->pend.p);
    free(st->msg_text.p);
    for (int k = 0; k < st->ncalls; k++) free(st->call_name[k]), free(st->call_args[k].p);
    greq_free(&st->g);
    free(st);
}

/* the client closed its side (or the socket failed) */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* kind: 0 completions, 1 chat completions, 2 the Responses API (read as the chat request it amounts to) */
static enum MHD_Result generate(server *S, struct MHD_Connection *c, const char *body, size_t len, int kind) {
    const ds_serve_cfg *cfg = S->cfg;
    const int chat = kind > 0;
    greq g;
    memset(&g, 0, sizeof g);
    g.chat = chat;
    cJSON *j = ds_json_parse(body, len, "request body");
    if (!j) return send_error(S, c, 400, "invalid_request_error", NULL, NULL, "%s", ds_errmsg());
    if (kind == 2) {
        const char *param = NULL;
        const cJSON *pid = cJSON_GetObjectItemCaseSensitive(j, "previous_response_id");
        cJSON *prev = NULL;
        if (pid && !cJSON_IsNull(pid)) { /* a kept response: its conversation comes first */
            if (!cJSON_IsString(pid) || !(prev = store_get(S, pid->valuestring, 1, 0))) {
                enum MHD_Result ret = send_error(S, c, cJSON_IsString(pid) ? 404 : 400, "invalid_request_error", "previous_response_id",
                                                 NULL, "previous response %s not found (this server keeps the last %d; "
                                                 "--responses-store)", cJSON_IsString(pid) ? ds_quote(pid->valuestring) : "id",
                                                 cfg->responses_store);
                cJSON_Delete(j);
                return ret;
            }
        }
        cJSON *cj = ds_responses_to_chat(j, prev, g.err, sizeof g.err, &param, &g.conv);
        cJSON_Delete(prev);
        if (!cj) {
            cJSON_Delete(j);
            return send_error(S, c, 400, "invalid_request_error", param, NULL, "%s", g.err);
        }
        g.responses = 1, g.rreq = j;
        g.store = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "store")) && cfg->responses_store > 0;
        j = cj;
    }
    int rc;
    if (!cJSON_IsObject(j)) rc = bad(&g, NULL, "the request body must be a JSON object, got %s", ds_json_type_name(j));
    else rc = parse_common(S, &g, j);
    if (!rc && chat) rc = parse_tools(S, &g, j);
    if (!rc) rc = chat ? parse_messages(S, &g, j) : parse_prompt(S, &g, j);
    cJSON_Delete(j);
    for (int i = 0; !rc && i < g.np; i++)
        if (g.pP[i] >= cfg->ctx) {
            char which[32] = "";
            if (g.np > 1) snprintf(which, sizeof which, " %d", i);
            rc = bad(&g, chat ? "messages" : "prompt",
                     "this model's context is %lld tokens (--ctx) and the prompt%s has %lld tokens, leaving no room for a "
                     "completion", (long long)cfg->ctx, which, (long long)g.pP[i]);
        }
    g.nch = g.np * g.n;
    if (!rc && g.nch > DS_SERVE_MAX_CHOICES)
        rc = bad(&g, "n", "%d prompts x n = %d choices, at most %d", g.np, g.n, DS_SERVE_MAX_CHOICES);
    /* echo with logprobs: the prompt tokens' log-probabilities too (as lm-evaluation-harness's
     * local-completions reads them: token_logprobs[ctxlen:-1]) */
    const int prompt_lp = !chat && g.echo && g.logprobs;
    if (rc && g.responses && g.param) { /* the Responses API's names for the fields chat read */
        static const char *const as[][2] = {{"messages", "input"}, {"max_tokens", "max_output_tokens"}, {"response_format", "text"}};
        for (int i = 0; i < 3; i++)
            if (!strcmp(g.param, as[i][0])) g.param = as[i][1];
    }
    if (rc) {
        enum MHD_Result ret = send_error(S, c, g.status, "invalid_request_error", g.param,
                                         strstr(g.err, "context is") ? "context_length_exceeded" : NULL, "%s", g.err);
        greq_free(&g);
        return ret;
    }
    /* one sequence per choice, prompt-major (choice c = prompt c / n, its (c % n)-th sample);
     * choice j of a prompt samples with seed + j */
    ds_sreq *rs[DS_SERVE_MAX_CHOICES];
    for (int c = 0; c < g.nch; c++) {
        const int pi = c / g.n, j = c % g.n;
        const int64_t P = g.pP[pi], room = cfg->ctx - P;
        int64_t maxt = g.max_tokens < 0 ? (chat ? room : 16) : g.max_tokens;
        if (maxt > room) maxt = room;
        ds_sreq *r = rs[c] = ds_sreq_new();
        r->prompt = ds_malloc((size_t)P * sizeof(int32_t));
        memcpy(r->prompt, g.pids[pi], (size_t)P * sizeof(int32_t));
        r->P = P;
        r->max_tokens = maxt;
        r->prompt_logprobs = prompt_lp;
        r->sp = g.sp;
        if (g.regex) { /* the answer held to a regex */
            r->sp.guide = S->guide;
            r->sp.schema = r->schema = ds_json_schema_regex(g.regex); /* compiled once already */
        } else if (g.json || g.tool_choice == TOOL_NAMED) { /* JSON answers; a forced call's arguments: one JSON object */
            r->sp.guide = S->guide;
            if (g.schema) r->sp.schema = r->schema = ds_json_schema_compile(g.schema); /* compiled once already */
        } else if (g.tool_choice == TOOL_REQUIRED && (r->schema = required_choice(S, &g))) { /* a tool's name, its arguments */
            r->sp.guide = S->guide;
            r->sp.schema = r->schema;
        }
        r->sp.seed = g.sp.seed + (uint64_t)j;
        r->sp.bias = NULL; /* the request's own copy (it frees it): the scheduler reads it when it admits the request */
        if (g.sp.nbias) {
            ds_logit_bias *b = ds_malloc((size_t)g.sp.nbias * sizeof *b);
            memcpy(b, g.sp.bias, (size_t)g.sp.nbias * sizeof *b);
            r->sp.bias = b;
        }
        r->top_logprobs = g.logprobs ? g.top_logprobs : -1;
        r->ignore_eos = g.ignore_eos;
        r->min_tokens = g.min_tokens;
        if (g.nstop_ids) {
            r->stop_ids = ds_malloc((size_t)g.nstop_ids * sizeof(int32_t));
            memcpy(r->stop_ids, g.stop_ids, (size_t)g.nstop_ids * sizeof(int32_t));
            r->nstop_ids = g.nstop_ids;
        }
        r->stream = g.stream;
        if (g.ndrafts) {
            r->forced_drafts = ds_malloc((size_t)g.ndrafts * sizeof(int32_t));
            memcpy(r->forced_drafts, g.drafts, (size_t)g.ndrafts * sizeof(int32_t));
            r->nforced = g.ndrafts;
        }
        for (int i = 0; i < g.nstop; i++) r->stop[i] = ds_strdup(g.stop[i]);
        r->nstop = g.nstop;
        r->include_stop = g.include_stop;
    }
    if (S->stopping || ds_sched_submit_n(cfg->sched, rs, g.nch)) {
        for (int c = 0; c < g.nch; c++) ds_sched_release(cfg->sched, rs[c]);
        greq_free(&g);
        return send_error(S, c, 503, "server_error", NULL, NULL,
                          S->stopping ? "the server is shutting down" : "the server is busy (the queue is full); retry later");
    }
    pthread_mutex_lock(&S->mu);
    S->inflight++;
    uint64_t idn = ++S->next_id;
    pthread_mutex_unlock(&S->mu);
    char id[48];
    snprintf(id, sizeof id, "%s%016llx", g.responses ? "resp_" : chat ? "chatcmpl-" : "cmpl-", (unsigned long long)((idn ^ S->id_salt) * 0x9E3779B97F4A7C15ULL));
    long created = (long)time(NULL);
    if (g.stream) {
        stream *st = ds_calloc(1, sizeof *st);
        st->S = S, st->g = g, st->created = created;
        for (int c = 0; c < g.nch; c++) st->ch[c].r = rs[c];
        snprintf(st->id, sizeof st->id, "%s", id);
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free);
        if (!resp) {
            stream_free(st);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        count_status(S, 200);
        return ret;
    }
    ds_sched *sc = cfg->sched;
    ds_sched_lock(sc);
    int gone = 0, done = 0, failed = 0;
    for (;;) {
        done = 1;
        for (int c = 0; c < g.nch; c++) done &= rs[c]->done;
        if (done) break;
        ds_sched_wait(sc, 100);
        if (client_gone(c)) {
            gone = 1;
            break;
        }
    }
    char *out = NULL;
    for (int c = 0; c < g.nch && done; c++) failed |= !strcmp(rs[c]->finish, "cancelled") || !strcmp(rs[c]->finish, "error");
    if (done && !failed) out = full_response(S, rs, &g, id, created);
    ds_sched_unlock(sc);
    for (int c = 0; c < g.nch; c++) ds_sched_release(sc, rs[c]);
    pthread_mutex_lock(&S->mu);
    S->inflight--;
    pthread_mutex_unlock(&S->mu);
    greq_free(&g);
    if (gone) return MHD_NO;
    if (failed) return send_error(S, c, 500, "server_error", NULL, NULL, "the request was cancelled (server shutting down or an internal error)");
    return send_body(S, c, 200, "application/json", out, NULL, NULL);
}

/* POST /tokenize, as vLLM's: {"prompt": TEXT, "add_special_tokens": true} or {"messages": [...]}
 * (rendered with the chat template and the generation prompt, or as add_generation_prompt,
 * continue_final_message and chat_template_kwargs ask) -> {"count", "max_model_len", "tokens"} */
static enum MHD_Result tokenize_ep(server *S, struct MHD_Connection *c, const char *body, size_t len) {
    greq g;
    memset(&g, 0, sizeof g);
    cJSON *j = ds_json_parse(body, len, "request body");
    if (!j) return send_error(S, c, 400, "invalid_request_error", NULL, NULL, "%s", ds_errmsg());
    int rc = 0, add = 1;
    if (!cJSON_IsObject(j)) {
        rc = bad(&g, NULL, "the request body must be a JSON object, got %s", ds_json_type_name(j));
    } else if (cJSON_GetObjectItemCaseSensitive(j, "messages")) {
        g.chat = 1;
        rc = parse_tools(S, &g, j);
        if (!rc) rc = parse_messages(S, &g, j);
    } else {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
        rc = get_bool(&g, j, "add_special_tokens", &add);
        if (!rc && !cJSON_IsString(p))
            rc = bad(&g, "prompt", "'prompt' (a string) or 'messages' is required%s%s", p ? ", got " : "",
                     p ? ds_json_type_name(p) : "");
        if (!rc) rc = tokenize(S, &g, p->valuestring, add && S->cfg->add_bos, "prompt");
        if (!rc) push_prompt(&g);
    }
    cJSON_Delete(j);
    if (rc && g.responses && g.param) { /* the Responses API's names for the fields chat read */
        static const char *const as[][2] = {{"messages", "input"}, {"max_tokens", "max_output_tokens"}, {"response_format", "text"}};
        for (int i = 0; i < 3; i++)
            if (!strcmp(g.param, as[i][0])) g.param = as[i][1];
    }
    if (rc) {
        enum MHD_Result ret = send_error(S, c, g.status, "invalid_request_error", g.param, NULL, "%s", g.err);
        greq_free(&g);
        return ret;
    }
    ds_sbuf b = {0};
    ds_sbuf_printf(&b, "{\"count\": %lld, \"max_model_len\": %lld, \"tokens\": [", (long long)g.pP[0], (long long)S->cfg->ctx);
    for (int64_t i = 0; i < g.pP[0]; i++) ds_sbuf_printf(&b, "%s%d", i ? ", " : "", g.pids[0][i]);
    ds_sbuf_puts(&b, "]}\n");
    greq_free(&g);
    return send_body(S, c, 200, "application/json", ds_sbuf_take(&b), NULL, NULL);
}

/* POST /detokenize, as vLLM's: {"tokens": [ids]} -> {"prompt": TEXT} (special tokens kept) */
static enum MHD_Result detokenize_ep(server *S, struct MHD_Connection *c, const char *body, size_t len) {
    cJSON *j = ds_json_parse(body, len, "request body");
    if (!j) return send_error(S, c, 400, "invalid_request_error", NULL, NULL, "%s", ds_errmsg());
    const cJSON *t = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "tokens") : NULL;
    if (!cJSON_IsArray(t)) {
        cJSON_Delete(j);
        return send_error(S, c, 400, "invalid_request_error", "tokens", NULL, "'tokens' (a list of token ids) is required");
    }
    const int n = cJSON_GetArraySize(t);
    int32_t *ids = ds_malloc((size_t)(n + 1) * sizeof(int32_t));
    int k = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, t) {
        int64_t v;
        if (!cJSON_IsNumber(x) || ds_json_int64(x, &v) || v < 0 || v >= S->cfg->vocab) {
            free(ids);
            cJSON_Delete(j);
            return send_error(S, c, 400, "invalid_request_error", "tokens", NULL,
                              "'tokens'[%d] is not a token id of the vocabulary [0, %lld)", k, (long long)S->cfg->vocab);
        }
        ids[k++] = (int32_t)v;
    }
    cJSON_Delete(j);
    size_t tl = 0;
    char *text = ds_tokenizer_decode(S->cfg->tok, ids, k, 0, &tl);
    free(ids);
    if (!text) return send_error(S, c, 400, "invalid_request_error", "tokens", NULL, "%s", ds_errmsg());
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{\"prompt\": ");
    ds_json_put_string(&b, text);
    ds_sbuf_puts(&b, "}\n");
    free(text);
    return send_body(S, c, 200, "application/json", ds_sbuf_take(&b), NULL, NULL);
}

static char *metrics_text(server *S) {
    ds_sched_stats st;
    ds_sched_get_stats(S->cfg->sched, &st);
    ds_sbuf b = {0};
#define METRIC(name, type, help, fmt, ...)                                                   \
    ds_sbuf_printf(&b, "# HELP " name " " help "\n# TYPE " name " " type "\n" name " " fmt "\n", __VA_ARGS__)
    METRIC("dsv3_requests_total", "counter", "Generation requests accepted.", "%llu", (unsigned long long)st.requests);
    METRIC("dsv3_requests_cancelled_total", "counter", "Requests cancelled (client gone or shutdown).", "%llu",
           (unsigned long long)st.cancelled);
    METRIC("dsv3_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", "%llu",
           (unsigned long long)st.prompt_tokens);
    METRIC("dsv3_generation_tokens_total", "counter", "Tokens generated.", "%llu", (unsigned long long)st.gen_tokens);
    METRIC("dsv3_queue_depth", "gauge", "Requests waiting for a slot.", "%d", st.queued);
    METRIC("dsv3_batch_size", "gauge", "Sequences running now.", "%d", st.active);
    METRIC("dsv3_batch_size_max", "gauge", "Most sequences that ran at once.", "%d", st.max_active);
    METRIC("dsv3_decode_steps_total", "counter", "Scheduler iterations that decoded.", "%llu", (unsigned long long)st.steps);
    METRIC("dsv3_decode_batch_sum", "counter", "Sequences decoded, summed over iterations (mean batch = this / steps).",
           "%llu", (unsigned long long)st.batch_sum);
    ds_sbuf_puts(&b, "# HELP dsv3_time_to_first_token_seconds Time from arrival to the first token.\n"
                     "# TYPE dsv3_time_to_first_token_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < DS_TTFT_BUCKETS; i++) {
        cum += st.ttft_bucket[i];
        if (i < DS_TTFT_BUCKETS - 1) ds_sbuf_printf(&b, "dsv3_time_to_first_token_seconds_bucket{le=\"%g\"} %llu\n", ds_ttft_bounds[i], (unsigned long long)cum);
        else ds_sbuf_printf(&b, "dsv3_time_to_first_token_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    ds_sbuf_printf(&b, "dsv3_time_to_first_token_seconds_sum %.6f\ndsv3_time_to_first_token_seconds_count %llu\n",
                   st.ttft_sum, (unsigned long long)st.ttft_count);
    METRIC("dsv3_generation_tokens_per_second", "gauge", "Tokens generated per second of scheduler work.", "%.3f",
           st.decode_s > 0 ? (double)st.gen_tokens / st.decode_s : 0.0);
    METRIC("dsv3_prefill_steps_total", "counter", "Prefill forwards (each up to --prefill-chunk prompt tokens).", "%llu",
           (unsigned long long)st.prefill_steps);
    METRIC("dsv3_prefill_batch_sum", "counter", "Prompts prefilled, summed over prefill forwards.", "%llu",
           (unsigned long long)st.prefill_seqs);
    METRIC("dsv3_prefill_batch_max", "gauge", "Most prompts in one prefill forward.", "%d", st.prefill_batch_max);
    METRIC("dsv3_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", "%llu",
           (unsigned long long)st.prefix_queries);
    METRIC("dsv3_prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache (not prefilled again).",
           "%llu", (unsigned long long)st.prefix_hits);
    METRIC("dsv3_spec_drafts_total", "counter", "Speculative decoding: draft tokens verified (MTP or n-gram; 0 without --speculative).", "%llu",
           (unsigned long long)st.drafted);
    METRIC("dsv3_spec_accepted_total", "counter", "Speculative decoding: draft tokens accepted.", "%llu",
           (unsigned long long)st.accepted);
    METRIC("dsv3_spec_acceptance_rate", "gauge", "Speculative decoding: accepted / verified drafts.", "%.4f",
           st.drafted ? (double)st.accepted / (double)st.drafted : 0.0);
    ds_sbuf_puts(&b, "# HELP dsv3_http_responses_total HTTP responses by status.\n# TYPE dsv3_http_responses_total counter\n");
    pthread_mutex_lock(&S->mu);
    for (int i = 0; i < 8; i++)
        ds_sbuf_printf(&b, "dsv3_http_responses_total{code=\"%d\"} %llu\n", STATUS[i], (unsigned long long)S->http[i]);
    pthread_mutex_unlock(&S->mu);
#undef METRIC
    return ds_sbuf_take(&b);
}

/* ---- the request handler --------------------------------------------------------------------- */
typedef struct {
    char *body;
    size_t n, cap;
    int too_big;
} conn;

static int key_ok(const char *given, const char *key) {
    /* constant time in the given value: every byte of the key is compared */
    size_t gn = given ? strlen(given) : 0, kn = strlen(key);
    unsigned char d = (unsigned char)(gn != kn);
    for (size_t i = 0; i < kn; i++) d |= (unsigned char)((unsigned char)key[i] ^ (i < gn ? (unsigned char)given[i] : 0));
    return d == 0;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    server *S = cls;
    const ds_serve_cfg *cfg = S->cfg;
    conn *k = *con_cls;
    int post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    const int tok_ep = !strcmp(url, "/tokenize") || !strcmp(url, "/detokenize");
    int is_v1 = !strncmp(url, "/v1/", 4) || tok_ep; /* the API key guards these too */
    if (!k) { /* headers only: refuse early what needs no body */
        k = ds_calloc(1, sizeof *k);
        *con_cls = k;
        if (is_v1 && cfg->api_key) {
            const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
            const char *tok = auth && !strncmp(auth, "Bearer ", 7) ? auth + 7 : NULL;
            if (!key_ok(tok, cfg->api_key))
                return send_error(S, c, 401, "invalid_request_error", NULL, "invalid_api_key",
                                  "incorrect or missing API key (send 'Authorization: Bearer KEY')");
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > (unsigned long long)cfg->max_body)
            return send_error(S, c, 413, "invalid_request_error", NULL, NULL,
                              "the request body is %s bytes; the limit is %lld (--max-body)", cl, (long long)cfg->max_body);
        return MHD_YES;
    }
    if (*upload_size) {
        if (k->n + *upload_size > (size_t)cfg->max_body) k->too_big = 1;
        if (!k->too_big) {
            if (k->n + *upload_size + 1 > k->cap) {
                k->cap = (k->n + *upload_size + 1) * 2;
                k->body = ds_realloc(k->body, k->cap);
            }
            memcpy(k->body + k->n, upload, *upload_size);
            k->n += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (k->too_big)
        return send_error(S, c, 413, "invalid_request_error", NULL, NULL, "the request body is over the limit of %lld bytes (--max-body)",
                          (long long)cfg->max_body);
    if (!strcmp(url, "/health") || !strcmp(url, "/v1/health")) {
        if (!get) return send_error(S, c, 405, "invalid_request_error", NULL, NULL, "%s takes GET", url);
        return send_body(S, c, S->stopping ? 503 : 200, "application/json",
                         ds_strdup(S->stopping ? "{\"status\": \"shutting down\"}\n" : "{\"status\": \"ok\"}\n"), NULL, NULL);
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) return send_error(S, c, 405, "invalid_request_error", NULL, NULL, "%s takes GET", url);
        return send_body(S, c, 200, "text/plain; version=0.0.4", metrics_text(S), NULL, NULL);
    }
    if (!strcmp(url, "/v1/models")) {
        if (!get) return send_error(S, c, 405, "invalid_request_error", NULL, NULL, "%s takes GET", url);
        ds_sbuf b = {0};
        ds_sbuf_puts(&b, "{\"object\": \"list\", \"data\": [{\"id\": ");
        ds_json_put_string(&b, cfg->model_name);
        ds_sbuf_printf(&b, ", \"object\": \"model\", \"created\": %ld, \"owned_by\": \"dsv3\", \"max_model_len\": %lld}]}\n",
                       (long)time(NULL), (long long)cfg->ctx);
        return send_body(S, c, 200, "application/json", ds_sbuf_take(&b), NULL, NULL);
    }
    if (tok_ep) {
        if (!post) return send_error(S, c, 405, "invalid_request_error", NULL, NULL, "%s takes POST", url);
        return url[1] == 't' ? tokenize_ep(S, c, k->body ? k->body : "", k->n) : detokenize_ep(S, c, k->body ? k->body : "", k->n);
    }
    if (!strncmp(url, "/v1/responses/", 14) && url[14]) { /* a kept response: GET it, DELETE it */
        const int del = !strcmp(method, "DELETE");
        if (!get && !del) return send_error(S, c, 405, "invalid_request_error", NULL, NULL, "%s takes GET or DELETE", url);
        char *o = store_get(S, url + 14, 0, del);
        if (!o)
            return send_error(S, c, 404, "invalid_request_error", NULL, "not_found", "response %s not found (this server keeps the "
                              "last %d; --responses-store)", ds_quote(url + 14), cfg->responses_store);
        if (del) {
            free(o);
            ds_sbuf b = {0};
            ds_sbuf_puts(&b, "{\"id\": ");
            ds_json_put_string(&b, url + 14);
            ds_sbuf_puts(&b, ", \"object\": \"response\", \"deleted\": true}\n");
            o = ds_sbuf_take(&b);
        }
        return send_body(S, c, 200, "application/json", o, NULL, NULL);
    }
    const int kind = !strcmp(url, "/v1/chat/completions") ? 1 : !strcmp(url, "/v1/responses") ? 2 : !strcmp(url, "/v1/completions") ? 0 : -1;
    if (kind >= 0) {
        if (!post) return send_error(S, c, 405, "invalid_request_error", NULL, NULL, "%s takes POST", url);
        return generate(S, c, k->body ? k->body : "", k->n, kind);
    }
    return send_error(S, c, 404, "invalid_request_error", NULL, "not_found",
                      "no such endpoint: %s %s (known: POST /v1/completions, POST /v1/chat/completions, POST /v1/responses, "
                      "GET /v1/models, POST /tokenize, POST /detokenize, GET /health, GET /metrics)", method, ds_quote(url));
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    conn *k = *con_cls;
    if (k) {
        free(k->body);
        free(k);
        *con_cls = NULL;
    }
}

static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

int ds_serve_http(const ds_serve_cfg *cfg) {
    server S;
    memset(&S, 0, sizeof S);
    S.cfg = cfg;
    pthread_mutex_init(&S.mu, NULL);
    pthread_mutex_init(&S.rmu, NULL);
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&S.id_salt, sizeof S.id_salt, 1, ur) != 1) S.id_salt = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    if (ur) fclose(ur);
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *sa;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
    const char *host = !strcmp(cfg->host, "localhost") ? "127.0.0.1" : cfg->host;
    memset(&a4, 0, sizeof a4), memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)cfg->port);
        sa = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        return ds_err("--host: %s is not an IPv4 or IPv6 address", ds_quote(cfg->host));
    }
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = on_signal;
    sigaction(SIGINT, &act, NULL);
    sigaction(SIGTERM, &act, NULL);
    signal(SIGPIPE, SIG_IGN);
    S.guide = ds_json_guide_new(cfg->tok, cfg->vocab); /* before the first request can come */
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, handler, &S, MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_conn, MHD_OPTION_NOTIFY_COMPLETED,
        completed, NULL, MHD_OPTION_END);
    if (!d) {
        ds_json_guide_free(S.guide);
        return ds_err("cannot listen on %s port %d (in use, or not an address of this machine)", cfg->host, cfg->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : cfg->port;
    fprintf(stderr, "dsv3 serve: listening on http://%s%s%s:%d (model %s, context %lld, batch %d)\n",
            sa->sa_family == AF_INET6 ? "[" : "", cfg->host, sa->sa_family == AF_INET6 ? "]" : "", port,
            cfg->model_name, (long long)cfg->ctx, cfg->max_batch);
    fflush(stderr);
    while (!g_signal) usleep(50000);
    /* shutdown: stop accepting, let running requests finish within the grace period, cancel the rest */
    fprintf(stderr, "dsv3 serve: %s: shutting down\n", g_signal == SIGINT ? "SIGINT" : "SIGTERM");
    S.stopping = 1;
    MHD_socket ls = MHD_quiesce_daemon(d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    double t0 = ds_now();
    for (;;) {
        pthread_mutex_lock(&S.mu);
        int n = S.inflight;
        pthread_mutex_unlock(&S.mu);
        if (!n || ds_now() - t0 > cfg->shutdown_grace_s) break;
        usleep(20000);
    }
    ds_sched_cancel_all(cfg->sched);
    MHD_stop_daemon(d);
    ds_json_guide_free(S.guide);
    pthread_mutex_destroy(&S.mu);
    pthread_mutex_destroy(&S.rmu);
    for (int i = 0; i < S.nrst; i++) free(S.rst[i].json), cJSON_Delete(S.rst[i].conv);
    free(S.rst);
    fprintf(stderr, "dsv3 serve: stopped\n");
    return 0;
}

#endif
