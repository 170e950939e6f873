/*
 * serve.h — `dsv3 serve`: an OpenAI-compatible HTTP server on libmicrohttpd
 * (Debian's libmicrohttpd-dev: a maintained, small C HTTP/1.1 server library
 * that parses requests, enforces connection timeouts and limits and streams
 * responses from a callback, so dsv3 has no HTTP parser of its own).
 * Endpoints: POST /v1/completions, POST /v1/chat/completions (with
 * "stream": true as server-sent events ending in "data: [DONE]"),
 * GET /v1/models, GET /health, GET /metrics (Prometheus text).
 * Generation runs on the continuous-batching scheduler (sched.h).
 * Without libmicrohttpd the build leaves the server out and ds_serve_http
 * says so.
 */
#ifndef DS_SERVE_H
#define DS_SERVE_H

/* choices per prompt at most (`n`); prompts in one /v1/completions request, and
 * choices in all (prompts x n) */
#define DS_SERVE_MAX_N 16
#define DS_SERVE_MAX_PROMPTS 64
#define DS_SERVE_MAX_TOOLS 128 /* tool definitions in one request */
#define DS_SERVE_MAX_CHOICES 64
#define DS_SERVE_MAX_CALLS 16 /* the calls of one answer a Responses API stream follows */

#include <signal.h>
#include <stdint.h>

#include "serve/sched.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    const char *host;        /* IPv4 or IPv6 address (default 127.0.0.1) */
    int port;                /* 0: any free port (printed) */
    const char *api_key;     /* NULL: none; else "Authorization: Bearer KEY" on the /v1/ endpoints */
    int64_t max_body;        /* request body cap, bytes */
    int timeout_s;           /* idle connection timeout (a stalled half request is dropped) */
    int max_conn;            /* open connections at most */
    double shutdown_grace_s; /* on SIGINT/SIGTERM: time for running requests to finish before they are cancelled */
    const char *model_name;  /* the id /v1/models reports */
    ds_sched *sched;
    const ds_tokenizer *tok;
    const ds_jinja *tmpl;    /* NULL: no chat template (chat requests get 400) */
    const char *bos, *eos;   /* the template's bos_token / eos_token (may be NULL) */
    int add_bos;             /* completions: BOS before the prompt */
    int tool_format;         /* ds_tool_format of tool calls in chat answers (DS_TOOLS_NONE: requests with tools get 400) */
    int64_t ctx, vocab;
    int max_batch;
    int responses_store;     /* POST /v1/responses: the responses kept for previous_response_id and GET (0: none) */
} ds_serve_cfg;

/* 1 when this build has the server. */
int ds_serve_available(void);
/* Serve until SIGINT or SIGTERM; 0, or -1 with ds_err (cannot bind, ...). */
int ds_serve_http(const ds_serve_cfg *cfg);

#endif
