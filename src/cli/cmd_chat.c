/*
 * cmd_chat.c — `dsv3 chat --model DIR` or `dsv3 chat --url http://HOST:PORT`:
 * an interactive chat in the terminal.  Each line read is a user turn; the
 * conversation is rendered with the model's chat template and the answer is
 * streamed as it is generated (greedy unless --temperature).  Commands:
 * /reset forgets the conversation, /system TEXT sets the system message (and
 * resets), /quit or end of input leaves.  Ctrl-C stops the current answer,
 * not the program.  With --url the turns go to a running `dsv3 serve` (or any
 * OpenAI-compatible server) as streaming /v1/chat/completions requests over
 * HTTP/1.0 (the answer is the server-sent events up to "data: [DONE]").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"
#include "infer/infer.h"
#include "io/json.h"
#include "model/model.h"
#include "serve/chat_cfg.h"
#include "tokenizer/tok_config.h"
#include "tokenizer/tokenizer.h"

static volatile sig_atomic_t g_interrupt;
static void on_sigint(int sig) { (void)sig; g_interrupt = 1; }

typedef struct {
    ds_decode_stream ds;
    ds_sbuf text;
    int failed;
} answer;

static int on_token(void *vctx, int32_t id) {
    answer *a = vctx;
    size_t len = 0;
    const char *b = ds_decode_stream_next(&a->ds, id, &len);
    if (!b) {
        a->failed = 1;
        return 1;
    }
    fwrite(b, 1, len, stdout);
    fflush(stdout);
    ds_sbuf_put(&a->text, b, len);
    return g_interrupt ? 1 : 0;
}

typedef struct {
    const char *model;
    ds_model m;
    ds_tokenizer *tok;
    ds_chat_cfg cc;
    const struct ds_ops *ops;
    int64_t eos[32];
    int neos;
    ds_gen_opts o;
    ds_gen_session gs; /* the cache of the conversation so far: a turn prefills only what it adds */
} local;

/* one answer from the local model; 0, or -1 with ds_err (the turn is dropped) */
static int answer_local(local *L, const cJSON *msgs, ds_sbuf *out) {
    char *text = ds_chat_template_apply(L->cc.tmpl, msgs, 1, L->cc.bos, L->cc.eos);
    if (!text) return -1;
    int32_t *ids = NULL;
    int64_t P = ds_tokenizer_encode(L->tok, text, strlen(text), 1, &ids);
    free(text);
    if (P < 0) return -1;
    const int64_t ctx = L->m.cfg.max_position_embeddings;
    if (P >= ctx) {
        free(ids);
        return ds_err("the conversation is %lld tokens, over the model's context of %lld (/reset starts again)",
                      (long long)P, (long long)ctx);
    }
    answer a;
    memset(&a, 0, sizeof a);
    ds_decode_stream_init(&a.ds, L->tok, 1);
    ds_gen_opts o = L->o;
    if (o.max_tokens > ctx - P) o.max_tokens = ctx - P;
    int32_t *gen = ds_malloc((size_t)(o.max_tokens + 1) * sizeof(int32_t));
    int64_t n = 0;
    ds_gen_stats st;
    int rc = ds_generate_session(&L->gs, &L->m, L->ops, ids, P, &o, gen, &n, on_token, &a, &st);
    if (!rc) ds_log(DS_LOG_DEBUG, "chat: %lld of %lld prompt tokens were cached", (long long)st.cached_tokens, (long long)P);
    size_t len = 0;
    const char *b = ds_decode_stream_flush(&a.ds, &len);
    if (b && len) fwrite(b, 1, len, stdout), ds_sbuf_put(&a.text, b, len);
    free(gen);
    free(ids);
    char *t = ds_sbuf_take(&a.text);
    /* the EOS token's own text is not part of the answer */
    ds_sbuf_puts(out, t);
    free(t);
    return rc || a.failed ? -1 : 0;
}

/* ---- --url: a streaming request to a server ---------------------------------------------------- */
typedef struct {
    char host[256], port[16], prefix[256];
    const char *api_key;
    ds_sample_params sp; /* the sampling fields sent with each request (the server's defaults where off) */
    long long max_tokens;
} remote;

static int parse_url(remote *R, const char *url) {
    if (strncmp(url, "http://", 7)) return ds_err("--url: %s: only http:// URLs are supported", ds_quote(url));
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    char hp[300];
    if (hl == 0 || hl >= sizeof hp) return ds_err("--url: %s: no host", ds_quote(url));
    memcpy(hp, h, hl);
    hp[hl] = 0;
    char *colon = hp[0] == '[' ? strstr(hp, "]:") : strrchr(hp, ':');
    if (colon && hp[0] == '[') colon++;
    snprintf(R->port, sizeof R->port, "%s", colon ? colon + 1 : "80");
    if (colon) *colon = 0;
    char *host = hp;
    if (host[0] == '[') {
        host++;
        char *e = strchr(host, ']');
        if (e) *e = 0;
    }
    snprintf(R->host, sizeof R->host, "%s", host);
    snprintf(R->prefix, sizeof R->prefix, "%s", slash ? slash : "");
    size_t pl = strlen(R->prefix);
    while (pl && R->prefix[pl - 1] == '/') R->prefix[--pl] = 0;
    if (pl >= 3 && !strcmp(R->prefix + pl - 3, "/v1")) R->prefix[pl - 3] = 0;
    return 0;
}

static int connect_to(const remote *R) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    int e = getaddrinfo(R->host, R->port, &hints, &res);
    if (e) return ds_err("%s:%s: %s", R->host, R->port, gai_strerror(e));
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen)) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return ds_err("cannot connect to %s:%s: %s", R->host, R->port, strerror(errno));
    return fd;
}

static int answer_remote(const remote *R, const cJSON *msgs, ds_sbuf *out) {
    cJSON *req = cJSON_CreateObject();
    cJSON_AddItemToObject(req, "messages", cJSON_Duplicate(msgs, 1));
    cJSON_AddBoolToObject(req, "stream", 1);
    const ds_sample_params *p = &R->sp;
    cJSON_AddNumberToObject(req, "temperature", p->temperature);
    if (p->top_p < 1) cJSON_AddNumberToObject(req, "top_p", p->top_p);
    if (p->top_k > 0) cJSON_AddNumberToObject(req, "top_k", (double)p->top_k);
    if (p->min_p > 0) cJSON_AddNumberToObject(req, "min_p", p->min_p);
    if (p->repetition_penalty != 1) cJSON_AddNumberToObject(req, "repetition_penalty", p->repetition_penalty);
    if (p->presence_penalty != 0) cJSON_AddNumberToObject(req, "presence_penalty", p->presence_penalty);
    if (p->frequency_penalty != 0) cJSON_AddNumberToObject(req, "frequency_penalty", p->frequency_penalty);
    if (p->temperature > 0) cJSON_AddNumberToObject(req, "seed", (double)p->seed);
    if (R->max_tokens > 0) cJSON_AddNumberToObject(req, "max_tokens", (double)R->max_tokens);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    int fd = connect_to(R);
    if (fd < 0) {
        free(body);
        return -1;
    }
    ds_sbuf h = {0};
    ds_sbuf_printf(&h, "POST %s/v1/chat/completions HTTP/1.0\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n", R->prefix, R->host, R->port, strlen(body));
    if (R->api_key) ds_sbuf_printf(&h, "Authorization: Bearer %s\r\n", R->api_key);
    ds_sbuf_printf(&h, "\r\n%s", body);
    free(body);
    int rc = 0;
    for (size_t off = 0; off < h.n && !rc;) {
        ssize_t w = send(fd, h.p + off, h.n - off, MSG_NOSIGNAL);
        if (w <= 0) rc = ds_err("sending the request: %s", strerror(errno));
        else off += (size_t)w;
    }
    free(h.p);
    /* read: status line + headers, then SSE lines (HTTP/1.0: the body ends at close) */
    ds_sbuf in = {0};
    size_t scan = 0, body_at = 0;
    int status = 0, done = 0;
    char buf[4096];
    while (!rc && !done) {
        if (g_interrupt) break;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        ds_sbuf_put(&in, buf, (size_t)r);
        if (!body_at) {
            char *e = memmem(in.p, in.n, "\r\n\r\n", 4);
            if (!e) continue;
            body_at = (size_t)(e - in.p) + 4;
            if (sscanf(in.p, "HTTP/%*s %d", &status) != 1) rc = ds_err("not an HTTP response from %s:%s", R->host, R->port);
            scan = body_at;
            if (status != 200) continue;
        }
        if (status != 200) continue;
        for (;;) {
            char *nl = memchr(in.p + scan, '\n', in.n - scan);
            if (!nl) break;
            size_t ll = (size_t)(nl - (in.p + scan));
            char *line = in.p + scan;
            scan += ll + 1;
            if (ll < 6 || strncmp(line, "data: ", 6)) continue;
            if (ll >= 12 && !strncmp(line + 6, "[DONE]", 6)) {
                done = 1;
                break;
            }
            cJSON *ev = cJSON_ParseWithLength(line + 6, ll - 6);
            const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(ev, "choices"), 0);
            const cJSON *ct = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content");
            const cJSON *err = cJSON_GetObjectItem(ev, "error");
            if (cJSON_IsString(ct)) {
                fputs(ct->valuestring, stdout);
                fflush(stdout);
                ds_sbuf_puts(out, ct->valuestring);
            } else if (err) {
                const cJSON *m = cJSON_GetObjectItem(err, "message");
                rc = ds_err("server: %s", cJSON_IsString(m) ? m->valuestring : "error");
            }
            cJSON_Delete(ev);
        }
    }
    if (!rc && status != 200 && body_at) {
        cJSON *j = cJSON_ParseWithLength(in.p + body_at, in.n - body_at);
        const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message");
        rc = ds_err("server answered %d: %s", status, cJSON_IsString(m) ? m->valuestring : "(no message)");
        cJSON_Delete(j);
    } else if (!rc && !done && !g_interrupt) {
        rc = ds_err("the server closed the connection before the end of the answer");
    }
    free(in.p);
    close(fd);
    return rc;
}

static cJSON *message(const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    return m;
}

static int run(int argc, char **argv) {
    const char *model = NULL, *url = NULL, *system = NULL, *tokp = NULL, *tmplf = NULL, *api_key = NULL;
    const char *device = "cpu", *spec = NULL;
    long long max_new = 512, top_k = 0, seed = 1234, draft_max = 0, ngram_min = 0, ngram_max = 0;
    double temperature = 0, top_p = 1, min_p = 0, rep_pen = 1, pres_pen = 0, freq_pen = 0;
    const ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR  chat with this model folder (in this process)"},
        {"--url", DS_OPT_STR, &url, "URL  chat with a running server instead (http://HOST:PORT)"},
        {"--system", DS_OPT_STR, &system, "TEXT  the system message (also /system TEXT)"},
        {"--max-new-tokens", DS_OPT_INT, &max_new, "N  tokens per answer at most (default 512)", DS_MIN(1)},
        {"--temperature", DS_OPT_FLOAT, &temperature, "T  sampling temperature (default 0 = greedy)", DS_RANGE(0, 100)},
        {"--top-p", DS_OPT_FLOAT, &top_p, "P  nucleus sampling mass (default 1 = off)", DS_RANGE_OPEN_MIN(0, 1)},
        {"--top-k", DS_OPT_INT, &top_k, "K  sample among the K most likely (default 0 = off)", DS_MIN(0)},
        {"--min-p", DS_OPT_FLOAT, &min_p, "P  drop tokens below P times the top token's probability (default 0 = off)", DS_RANGE(0, 1)},
        {"--repetition-penalty", DS_OPT_FLOAT, &rep_pen, "R  logits of prompt and output tokens / R when > 0, * R else (default 1 = off)", DS_RANGE_OPEN_MIN(0, 100)},
        {"--presence-penalty", DS_OPT_FLOAT, &pres_pen, "X  subtracted once from each output token's logit (default 0)", DS_RANGE(-2, 2)},
        {"--frequency-penalty", DS_OPT_FLOAT, &freq_pen, "X  subtracted per occurrence in the output (default 0)", DS_RANGE(-2, 2)},
        {"--seed", DS_OPT_INT, &seed, "S  sampling seed (default 1234)"},
        {"--tokenizer", DS_OPT_STR, &tokp, "PATH  tokenizer.json or its folder (default: the model folder's)"},
        {"--chat-template", DS_OPT_STR, &tmplf, "FILE  a Jinja chat template replacing tokenizer_config.json's"},
        {"--api-key", DS_OPT_STR, &api_key, "KEY  with --url: the server's API key (default: $DSV3_API_KEY)"},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP},
        {"--speculative", DS_OPT_STR, &spec, "ngram  with --model: n-gram drafts (the tokens after an earlier copy of the "
                                              "conversation's last n-gram), verified in one step; the same answers"},
        DS_CLI_NGRAM_OPTS(draft_max, ngram_min, ngram_max),
    };
    const char *usage = "--model DIR | --url http://HOST:PORT [--system TEXT] [--max-new-tokens N] [--temperature T] "
                        "[--speculative ngram]";
    ds_cli_parse("chat", usage, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, NULL);
    if (!model == !url) ds_cli_usage_error("chat", "give one of --model DIR or --url URL");
    const int spec_kind = ds_cli_speculative("chat", spec, draft_max, ngram_min, ngram_max);
    if (spec_kind == DS_SPEC_MTP) ds_cli_usage_error("chat", "--speculative mtp: a conversation takes n-gram drafts only");
    if (spec && url) ds_cli_usage_error("chat", "--speculative goes with --model (a server decodes as it was started)");
    const ds_sample_params sp = {.temperature = temperature, .top_k = top_k, .top_p = top_p, .seed = (uint64_t)seed,
                                 .min_p = min_p, .repetition_penalty = rep_pen, .presence_penalty = pres_pen,
                                 .frequency_penalty = freq_pen};
    local L;
    memset(&L, 0, sizeof L);
    remote R;
    memset(&R, 0, sizeof R);
    if (url) {
        if (parse_url(&R, url)) ds_cli_usage_error("chat", "%s", ds_errmsg());
        R.api_key = api_key ? api_key : getenv("DSV3_API_KEY");
        R.sp = sp;
        R.max_tokens = max_new;
    } else {
        /* device-resident: the weights, arenas and KV cache in the table's memory */
        L.ops = ds_cli_device_resident("chat", device);
        char *tp = tokp ? ds_strdup(tokp) : ds_path_join(model, "tokenizer.json");
        L.tok = ds_tokenizer_load(tp);
        char *tcfg = ds_tokenizer_config_path_of(tp);
        free(tp);
        int rc = L.tok ? ds_chat_cfg_load(&L.cc, tcfg, tmplf) : -1;
        if (!rc && !L.cc.tmpl) rc = ds_err("%s has no chat_template (give one with --chat-template FILE)", tcfg);
        free(tcfg);
        ds_load_opts lopt = {.fp8_resident = 1, .mem = L.ops->host_visible ? NULL : L.ops};
        if (!rc) rc = ds_model_load_ex(&L.m, model, &lopt);
        if (!rc && ds_model_stop_ids(model, &L.m, L.tok, L.eos, 32, &L.neos)) {
            ds_model_free(&L.m);
            rc = -1;
        }
        if (rc) {
            ds_chat_cfg_free(&L.cc);
            ds_tokenizer_free(L.tok);
            return ds_cli_fail("chat");
        }
        L.o = (ds_gen_opts){.max_tokens = max_new,
                            .sp = sp,
                            .eos = L.eos, .neos = L.neos,
                            .speculative = spec_kind, .draft_max = (int)draft_max, .ngram_min = (int)ngram_min,
                            .ngram_max = (int)ngram_max};
    }
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = on_sigint; /* no SA_RESTART: a read at the prompt returns */
    sigaction(SIGINT, &act, NULL);
    int tty = isatty(0);
    if (tty) fprintf(stderr, "dsv3 chat: /reset, /system TEXT, /quit; Ctrl-C stops an answer\n");
    cJSON *msgs = cJSON_CreateArray();
    char *sys = system ? ds_strdup(system) : NULL;
    if (sys) cJSON_AddItemToArray(msgs, message("system", sys));
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        if (tty) fputs("> ", stderr), fflush(stderr);
        g_interrupt = 0;
        errno = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            if (errno == EINTR && g_interrupt) { clearerr(stdin); fputc('\n', stderr); continue; }
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strcmp(line, "/reset") || !strncmp(line, "/system", 7)) {
            if (!strncmp(line, "/system", 7)) {
                free(sys);
                const char *t = line + 7;
                while (*t == ' ') t++;
                sys = *t ? ds_strdup(t) : NULL;
            }
            cJSON_Delete(msgs);
            msgs = cJSON_CreateArray();
            if (sys) cJSON_AddItemToArray(msgs, message("system", sys));
            fprintf(stderr, "dsv3 chat: %s\n", line[1] == 'r' ? "conversation reset" : sys ? "system message set" : "system message cleared");
            continue;
        }
        if (line[0] == '/') {
            fprintf(stderr, "dsv3 chat: unknown command %s (known: /reset, /system TEXT, /quit)\n", ds_quote(line));
            continue;
        }
        cJSON_AddItemToArray(msgs, message("user", line));
        ds_sbuf ans = {0};
        int r = url ? answer_remote(&R, msgs, &ans) : answer_local(&L, msgs, &ans);
        fputc('\n', stdout);
        fflush(stdout);
        char *a = ds_sbuf_take(&ans);
        if (r) {
            fprintf(stderr, "dsv3 chat: %s\n", ds_errmsg());
            cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1);
            rc = 1;
        } else {
            if (g_interrupt) fprintf(stderr, "dsv3 chat: (answer stopped)\n");
            cJSON_AddItemToArray(msgs, message("assistant", a));
        }
        free(a);
    }
    free(line);
    free(sys);
    cJSON_Delete(msgs);
    if (!url) {
        ds_gen_session_free(&L.gs);
        ds_model_free(&L.m);
        ds_chat_cfg_free(&L.cc);
        ds_tokenizer_free(L.tok);
    }
    return rc && !tty ? 1 : 0;
}
DS_COMMAND("chat", "interactive chat with a model folder (--model) or a running server (--url)", run)
