/*
 * test_serve.c — `dsv3 serve` end to end on the tiny v3 fixture model (a
 * 256-token byte-level tokenizer beside its weights, DeepSeek-V3's chat
 * template): greedy ids and log-probabilities equal transformers' greedy
 * generation (tests/fixtures/model/v3/generate.safetensors), streamed or not;
 * chat completions equal `dsv3 generate` on the rendered prompt and
 * `dsv3 chat`; stop strings, max_tokens capped by the context; each bad
 * request gets its status and an OpenAI-shaped error while the server keeps
 * serving; 32 concurrent streams equal sequential runs and were batched; the
 * official openai client works against it (skipped when not installed);
 * tool calls in DeepSeek-V3's and Hermes' formats (forced calls equal the
 * model's continuation of the forced prompt; histories with calls render as
 * transformers renders them); SIGTERM stops it with exit 0.  Skipped when the build has no server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/cuda/cuda.h"
#include "base/base.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "serve/chat_cfg.h"
#include "test.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tok_config.h"
#include "tokenizer/tokenizer.h"

#define V3 "tests/fixtures/model/v3"

static int32_t g_ref[64];
static int64_t g_nref;
static float g_ref_logits[8 * 256];

static int load_ref(void) {
    ds_st_file g;
    if (ds_st_open(&g, V3 "/generate.safetensors")) return -1;
    const ds_st_tensor *t = ds_st_find(&g, "greedy_ids"), *l = ds_st_find(&g, "greedy_logits");
    float tmp[256];
    if (!t || !l || t->numel > 256) return -1;
    ds_st_to_f32(t, tmp);
    g_nref = t->shape[1];
    for (int64_t i = 0; i < g_nref; i++) g_ref[i] = (int32_t)tmp[i];
    float *all = ds_malloc((size_t)l->numel * sizeof(float));
    ds_st_to_f32(l, all);
    memcpy(g_ref_logits, all, sizeof g_ref_logits); /* sequence 0: (8, 256) */
    free(all);
    ds_st_close(&g);
    return 0;
}

/* a model folder: byte-level tokenizer + the v3 weights + DeepSeek-V3's template */
static const char *make_model(void) {
    static char dir[600];
    snprintf(dir, sizeof dir, "%s/m", ds_test_tmpdir());
    char path[700], cwd[512], out[4096];
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    ds_tokenizer *t = ds_test_byte_tokenizer();
    if (!t) return NULL;
    ds_test_sh(out, sizeof out, "mkdir -p %s && ln -sf %s/" V3 "/config.json %s/ && ln -sf %s/" V3 "/model.safetensors %s/ && "
               "ln -sf %s/" V3 "/generation_config.json %s/", dir, cwd, dir, cwd, dir, cwd, dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int rc = ds_tokenizer_save(t, path);
    ds_tokenizer_free(t);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (rc || ds_tokenizer_config_write(path, NULL, NULL, 0, 64)) return NULL;
    return dir;
}

/* the same folder with 2048 positions (max_position_embeddings; the weights do
 * not depend on it): the byte-level tokenizer spends ~20 tokens on one of
 * DeepSeek-V3's markers, so tool-call prompts need more than 64 */
static const char *make_model_long(void) {
    const char *m = make_model();
    static char dir[700];
    char out[4096];
    if (!m) return NULL;
    snprintf(dir, sizeof dir, "%s-long", m);
    if (ds_test_sh(out, sizeof out, "mkdir -p %s && cp -P %s/* %s/ && rm %s/config.json && "
                   "sed 's/\"max_position_embeddings\": 64/\"max_position_embeddings\": 2048/' %s/config.json > %s/config.json",
                   dir, m, dir, dir, m, dir))
        return NULL;
    return dir;
}

/* ids of text under the folder's tokenizer, as "a b c " */
static int encode_ids(const char *dir, const char *text, char *buf, size_t cap, int32_t *ids, int max) {
    char path[700];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ds_tokenizer *t = ds_tokenizer_load(path);
    if (!t) return -1;
    int32_t *e = NULL;
    int64_t n = ds_tokenizer_encode(t, text, strlen(text), 1, &e);
    buf[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        snprintf(buf + strlen(buf), cap - strlen(buf), "%d ", e[i]);
        if (ids && i < max) ids[i] = e[i];
    }
    free(e);
    ds_tokenizer_free(t);
    return (int)n;
}

/* the bytes of token id under the folder's tokenizer */
static int token_text(const char *dir, const int32_t *ids, int n, char *buf, size_t cap) {
    char path[700];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ds_tokenizer *t = ds_tokenizer_load(path);
    if (!t) return -1;
    size_t len = 0;
    char *d = ds_tokenizer_decode(t, ids, n, 1, &len);
    int r = len < cap ? (int)len : -1;
    if (r >= 0) memcpy(buf, d, len);
    free(d);
    ds_tokenizer_free(t);
    return r;
}

/* `dsv3 generate --ids` on the ids in prompt ("1 2 3"), up to n new ids (64 at most) into ids; their count or -1 */
static int gen_ids_opts(const char *dir, const char *prompt, int n, const char *opts, int32_t *ids) {
    char out[4096];
    if (ds_test_sh(out, sizeof out, "$DSV3 generate --model %s --ids --prompt '%s' --max-new-tokens %d %s 2>/dev/null",
                   dir, prompt, n, opts) != 0)
        return -1;
    int k = 0;
    for (char *p = out, *e; k < 64; p = e) {
        long v = strtol(p, &e, 10);
        if (e == p) break;
        ids[k++] = (int32_t)v;
    }
    return k;
}

/* the same past EOS, with more options */
static int gen_ids(const char *dir, const char *prompt, int n, const char *extra, int32_t *ids) {
    char opts[512];
    snprintf(opts, sizeof opts, "--ignore-eos %s", extra);
    return gen_ids_opts(dir, prompt, n, opts, ids);
}

typedef struct { pid_t pid; int port; char log[700]; } server;

static int server_start(server *s, const char *dir, const char *extra) {
    memset(s, 0, sizeof *s);
    snprintf(s->log, sizeof s->log, "%s/serve-%d.log", ds_test_tmpdir(), (int)getpid());
    const char *bin = getenv("DSV3");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s serve --model %s --port 0 %s 2>%s", bin ? bin : "./dsv3", dir, extra, s->log);
    unlink(s->log);
    s->pid = fork();
    if (s->pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) { /* 15 s */
        size_t n;
        char *txt = ds_file_exists(s->log) ? ds_read_file(s->log, &n) : NULL;
        const char *p = txt ? strstr(txt, "listening on http://127.0.0.1:") : NULL;
        if (p) s->port = atoi(p + strlen("listening on http://127.0.0.1:"));
        free(txt);
        if (s->port) return 0;
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) return -1;
        usleep(50000);
    }
    return -1;
}

/* SIGTERM; the exit status (0 expected) */
static int server_stop(server *s) {
    kill(s->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 200; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(50000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    return -1;
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    const char *to = getenv("DSV3_TEST_HTTP_TIMEOUT"); /* tools/cudamock/run.sh: the stand-ins are slow */
    struct timeval tv = {.tv_sec = to && atoi(to) > 0 ? atoi(to) : 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* send raw bytes, read to close; the status, body in out (malloc'd) */
static int http_raw(int port, const char *req, size_t len, char **out) {
    *out = NULL;
    int fd = dial(port);
    if (fd < 0) return -1;
    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    ds_sbuf b = {0};
    char buf[8192];
    ssize_t r;
    while ((r = recv(fd, buf, sizeof buf, 0)) > 0) ds_sbuf_put(&b, buf, (size_t)r);
    close(fd);
    char *all = ds_sbuf_take(&b);
    int status = -1;
    if (sscanf(all, "HTTP/1.%*d %d", &status) != 1) status = -1;
    char *body = strstr(all, "\r\n\r\n");
    *out = ds_strdup(body ? body + 4 : "");
    free(all);
    return status;
}

static int http(int port, const char *method, const char *path, const char *auth, const char *json, char **out) {
    ds_sbuf b = {0};
    ds_sbuf_printf(&b, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", method, path);
    if (auth) ds_sbuf_printf(&b, "Authorization: Bearer %s\r\n", auth);
    if (json) ds_sbuf_printf(&b, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(json), json);
    else ds_sbuf_puts(&b, "\r\n");
    int st = http_raw(port, b.p, b.n, out);
    free(b.p);
    return st;
}

static int healthy(int port) {
    char *o;
    int st = http(port, "GET", "/health", NULL, NULL, &o);
    free(o);
    return st == 200;
}

/* the ids of the first 24 reference tokens as a JSON list */
static void prompt_json(char *buf, size_t cap, int n, int rot) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < n; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%d", i ? ", " : "", g_ref[(i + rot) % 24]);
    snprintf(buf + k, cap - k, "]");
}

static int ids_of(const cJSON *a, int32_t *ids, int max) {
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a) if (n < max) ids[n++] = (int32_t)x->valuedouble;
    return n;
}

/* SSE body: the concatenated token_ids of every chunk; *done when [DONE] came; finish reason */
static int sse_ids(const char *body, int32_t *ids, int max, int *done, char *finish, int *usage_tokens) {
    int n = 0;
    *done = 0;
    const char *p = body;
    while ((p = strstr(p, "data: "))) {
        p += 6;
        if (!strncmp(p, "[DONE]", 6)) { *done = 1; break; }
        const char *e = strstr(p, "\n\n");
        if (!e) break;
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(e - p));
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        n += ids_of(cJSON_GetObjectItem(ch, "token_ids"), ids + n, max - n);
        const cJSON *f = cJSON_GetObjectItem(ch, "finish_reason");
        if (cJSON_IsString(f)) strcpy(finish, f->valuestring);
        const cJSON *u = cJSON_GetObjectItem(j, "usage");
        if (cJSON_IsObject(u) && usage_tokens) *usage_tokens = (int)cJSON_GetObjectItem(u, "completion_tokens")->valuedouble;
        cJSON_Delete(j);
        p = e;
    }
    return n;
}

#define SETUP(extra) SETUP_IN(make_model(), extra)
#define SETUP_IN(folder, extra)                                                          \
    if (load_ref()) SKIP("no v3 fixture");                                               \
    char probe[4096];                                                                    \
    if (ds_test_sh(probe, sizeof probe, "$DSV3 serve --model /nonexistent") == 1 &&      \
        strstr(probe, "without libmicrohttpd"))                                          \
        SKIP("this dsv3 was built without libmicrohttpd");                               \
    const char *dir = folder;                                                            \
    CHECK(dir != NULL);                                                                  \
    if (!dir) return;                                                                    \
    server S;                                                                            \
    CHECK_MSG(server_start(&S, dir, extra) == 0, "the server did not start");            \
    if (!S.port) return;

TEST(serve_greedy_logprobs_stream_and_chat) {
    SETUP("--max-batch 4");
    char pj[512], req[2048], *o = NULL;
    prompt_json(pj, sizeof pj, 24, 0);
    /* completions: greedy ids and logprobs equal transformers' */
    snprintf(req, sizeof req, "{\"model\": \"m\", \"prompt\": %s, \"max_tokens\": 8, \"temperature\": 0, \"ignore_eos\": true, "
             "\"return_token_ids\": true, \"logprobs\": 3, \"unknown_field\": {\"x\": 1}}", pj);
    CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
    cJSON *j = cJSON_Parse(o);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    int32_t got[64];
    int n = ids_of(cJSON_GetObjectItem(ch, "token_ids"), got, 64);
    CHECK_MSG(n == 8 && !memcmp(got, g_ref + 24, 8 * sizeof(int32_t)), "%s", o);
    const cJSON *lp = cJSON_GetObjectItem(ch, "logprobs");
    const cJSON *tl = cJSON_GetObjectItem(lp, "token_logprobs"), *top = cJSON_GetObjectItem(lp, "top_logprobs");
    CHECK(cJSON_GetArraySize(tl) == 8 && cJSON_GetArraySize(top) == 8);
    double maxerr = 0;
    for (int i = 0; i < 8 && cJSON_GetArraySize(tl) == 8; i++) {
        const float *L = g_ref_logits + i * 256;
        double mx = L[0], s = 0;
        for (int k = 1; k < 256; k++) mx = L[k] > mx ? L[k] : mx;
        for (int k = 0; k < 256; k++) s += exp(L[k] - mx);
        double want = L[g_ref[24 + i]] - mx - log(s);
        double e = fabs(cJSON_GetArrayItem(tl, i)->valuedouble - want);
        maxerr = e > maxerr ? e : maxerr;
        const cJSON *t0 = cJSON_GetArrayItem(top, i);
        CHECK(cJSON_GetArraySize(t0) == 3);
        CHECK_NEAR(t0->child ? t0->child->valuedouble : 1, cJSON_GetArrayItem(tl, i)->valuedouble, 1e-6); /* best = greedy */
    }
    CHECK_MSG(maxerr < 2e-4, "logprobs differ from transformers' by %g", maxerr);
    fprintf(stderr, "  logprobs vs transformers: max abs diff %.2g\n", maxerr);
    CHECK(!strcmp(cJSON_GetObjectItem(ch, "finish_reason")->valuestring, "length"));
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valuedouble == 8);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valuedouble == 24);
    cJSON_Delete(j);
    free(o);
    /* the same streamed, with usage */
    snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": 8, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true, "
             "\"return_token_ids\": true, \"stream_options\": {\"include_usage\": true}}", pj);
    CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
    int done = 0, ut = -1;
    char fin[32] = "";
    n = sse_ids(o, got, 64, &done, fin, &ut);
    CHECK_MSG(n == 8 && !memcmp(got, g_ref + 24, 8 * sizeof(int32_t)) && done && !strcmp(fin, "length") && ut == 8, "%s", o);
    free(o);
    /* max_tokens beyond the context: capped (64 - 24 = 40 tokens) */
    snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": 1000000, \"temperature\": 0, \"ignore_eos\": true}", pj);
    CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
    j = cJSON_Parse(o);
    CHECK_MSG(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valuedouble == 40, "%s", o);
    cJSON_Delete(j);
    free(o);
    /* a stop string: the first generated token whose text is a printable byte stops the completion there */
    int k = 0;
    char first[8] = "";
    for (; k < 8; k++)
        if (token_text(dir, g_ref + 24 + k, 1, first, sizeof first) == 1 && first[0] > ' ' && first[0] < 127 &&
            first[0] != '"' && first[0] != '\\')
            break;
    CHECK(k < 8);
    if (k < 8) {
        first[1] = 0;
        snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": 8, \"temperature\": 0, \"ignore_eos\": true, "
                 "\"stop\": [\"zz\", \"%s\"]}", pj, first);
        CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
        j = cJSON_Parse(o);
        ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        CHECK_MSG(!strchr(cJSON_GetObjectItem(ch, "text")->valuestring, first[0]) &&
                  !strcmp(cJSON_GetObjectItem(ch, "finish_reason")->valuestring, "stop") &&
                  cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valuedouble == k + 1,
                  "stop %s at token %d: %s", first, k, o);
        char cut_text[256];
        snprintf(cut_text, sizeof cut_text, "%s", cJSON_GetObjectItem(ch, "text")->valuestring);
        cJSON_Delete(j);
        free(o);
        /* include_stop_str_in_output (vLLM's): the same text, then the stop string, streamed or not */
        for (int stream = 0; stream < 2; stream++) {
            snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": 8, \"temperature\": 0, \"ignore_eos\": true, "
                     "\"stop\": [\"zz\", \"%s\"], \"include_stop_str_in_output\": true%s}", pj, first,
                     stream ? ", \"stream\": true" : "");
            CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
            char text[512] = "", wantx[260];
            if (stream) {
                for (const char *p = o; (p = strstr(p, "data: {")) != NULL; p += 6) {
                    const char *e = strstr(p, "\n\n");
                    cJSON *ev = e ? cJSON_ParseWithLength(p + 6, (size_t)(e - p - 6)) : NULL;
                    const cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ev, "choices"), 0), "text");
                    if (cJSON_IsString(t)) strncat(text, t->valuestring, sizeof text - strlen(text) - 1);
                    cJSON_Delete(ev);
                }
            } else {
                j = cJSON_Parse(o);
                const cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "text");
                if (cJSON_IsString(t)) snprintf(text, sizeof text, "%s", t->valuestring);
                cJSON_Delete(j);
            }
            snprintf(wantx, sizeof wantx, "%s%s", cut_text, first);
            CHECK_MSG(!strcmp(text, wantx), "include_stop_str_in_output (stream %d): %s, want %s", stream, ds_quote(text),
                      ds_quote(wantx));
            free(o);
        }
    }
    /* chat: the template-rendered prompt; greedy ids equal dsv3 generate --ids on it */
    const char *creq = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                       "\"Hi\"}], \"max_tokens\": 12, \"temperature\": 0, \"return_token_ids\": true}";
    CHECK(http(S.port, "POST", "/v1/chat/completions", NULL, creq, &o) == 200);
    j = cJSON_Parse(o);
    ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    int32_t pids[64], cids[64];
    int np = ids_of(cJSON_GetObjectItem(ch, "prompt_token_ids"), pids, 64);
    int nc = ids_of(cJSON_GetObjectItem(ch, "token_ids"), cids, 64);
    char wbuf[2048];
    int32_t wids[64];
    int nw = encode_ids(dir, "Be brief.<｜User｜>Hi<｜Assistant｜>", wbuf, sizeof wbuf, wids, 64);
    CHECK_MSG(np == nw && !memcmp(pids, wids, (size_t)np * sizeof(int32_t)), "chat prompt has %d tokens, want %d", np, nw);
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "role")->valuestring, "assistant"));
    char ids[1024] = "", gout[4096];
    for (int i = 0; i < np; i++) snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%d ", pids[i]);
    CHECK(ds_test_sh(gout, sizeof gout, "$DSV3 generate --model %s --ids --prompt '%s' --max-new-tokens 12 2>/dev/null", dir,
                     ids) == 0);
    char want[1024] = "";
    for (int i = 0; i < nc; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%d ", cids[i]);
    CHECK_MSG(nc > 0 && !strncmp(gout, want, strlen(want)), "serve %s, generate %s", want, gout);
    cJSON_Delete(j);
    free(o);
    /* chat streamed: the same ids, first delta has the role */
    const char *sreq = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                       "\"Hi\"}], \"max_tokens\": 12, \"temperature\": 0, \"return_token_ids\": true, \"stream\": true}";
    CHECK(http(S.port, "POST", "/v1/chat/completions", NULL, sreq, &o) == 200);
    int32_t sids[64];
    int ns = sse_ids(o, sids, 64, &done, fin, NULL);
    CHECK(ns == nc && !memcmp(sids, cids, (size_t)nc * sizeof(int32_t)) && done);
    CHECK(strstr(o, "\"role\": \"assistant\"") != NULL);
    free(o);
    /* dsv3 chat --url prints the same answer text as the JSON content */
    char cout[4096];
    CHECK(ds_test_sh(cout, sizeof cout, "printf 'Hi\\n' | $DSV3 chat --url http://127.0.0.1:%d --system 'Be brief.' "
                     "--max-new-tokens 12 2>/dev/null", S.port) == 0);
    CHECK(http(S.port, "POST", "/v1/chat/completions", NULL,
               "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], "
               "\"max_tokens\": 12, \"temperature\": 0}", &o) == 200);
    j = cJSON_Parse(o);
    const char *content = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0),
                                                                   "message"), "content")->valuestring;
    CHECK_MSG(!strncmp(cout, content, strlen(content)) && cout[strlen(content)] == '\n', "chat --url printed %s",
              ds_quote(cout));
    char plain[256];
    snprintf(plain, sizeof plain, "%s", content);
    cJSON_Delete(j);
    free(o);
    /* the penalties reach the server from chat --url: it prints the answer of a request with them */
    CHECK(ds_test_sh(cout, sizeof cout, "printf 'Hi\\n' | $DSV3 chat --url http://127.0.0.1:%d --system 'Be brief.' "
                     "--max-new-tokens 12 --repetition-penalty 1.4 --presence-penalty 0.5 --frequency-penalty 0.3 "
                     "2>/dev/null", S.port) == 0);
    CHECK(http(S.port, "POST", "/v1/chat/completions", NULL,
               "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], "
               "\"max_tokens\": 12, \"temperature\": 0, \"repetition_penalty\": 1.4, \"presence_penalty\": 0.5, "
               "\"frequency_penalty\": 0.3}", &o) == 200);
    j = cJSON_Parse(o);
    const char *pc = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0),
                                                              "message"), "content")->valuestring;
    CHECK_MSG(!strncmp(cout, pc, strlen(pc)) && cout[strlen(pc)] == '\n' && strcmp(pc, plain),
              "chat --url printed %s, the request with penalties %s, without %s", ds_quote(cout), ds_quote(pc), ds_quote(plain));
    cJSON_Delete(j);
    free(o);
    /* models, metrics */
    CHECK(http(S.port, "GET", "/v1/models", NULL, NULL, &o) == 200);
    CHECK(strstr(o, "\"id\": \"m\"") != NULL);
    free(o);
    CHECK(http(S.port, "GET", "/metrics", NULL, NULL, &o) == 200);
    CHECK(strstr(o, "dsv3_generation_tokens_total") && strstr(o, "dsv3_time_to_first_token_seconds_count"));
    free(o);
    /* /tokenize of a conversation: the ids of its rendering by the DeepSeek-V3 template (no BOS token) */
    char tids[1024], got_ids[1024] = "";
    CHECK(encode_ids(dir, "<｜User｜>Hi<｜Assistant｜>", tids, sizeof tids, NULL, 0) > 0);
    CHECK(http(S.port, "POST", "/tokenize", NULL, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}", &o) == 200);
    j = cJSON_Parse(o);
    const cJSON *tk;
    cJSON_ArrayForEach(tk, cJSON_GetObjectItem(j, "tokens"))
        snprintf(got_ids + strlen(got_ids), sizeof got_ids - strlen(got_ids), "%d ", tk->valueint);
    CHECK_MSG(!strcmp(got_ids, tids), "/tokenize %s, want %s", got_ids, tids);
    cJSON_Delete(j);
    free(o);
    CHECK(server_stop(&S) == 0);
}

TEST(serve_chat_cli_matches_generate) {
    if (load_ref()) SKIP("no v3 fixture");
    const char *dir = make_model();
    CHECK(dir != NULL);
    if (!dir) return;
    /* the conversation "Hi" renders to these bytes (the DeepSeek-V3 template, no BOS token) */
    char ids[1024] = "", cout[4096];
    CHECK(encode_ids(dir, "<｜User｜>Hi<｜Assistant｜>", ids, sizeof ids, NULL, 0) > 0);
    int32_t gen[64];
    int ng = gen_ids_opts(dir, ids, 10, "", gen);
    CHECK(ng >= 0);
    char want[256];
    ng = token_text(dir, gen, ng, want, sizeof want);
    /* two turns with a reset between: the answer after /reset is the first answer again */
    CHECK(ds_test_sh(cout, sizeof cout, "printf 'Hi\\n/reset\\nHi\\n' | $DSV3 chat --model %s --max-new-tokens 10 2>/dev/null",
                     dir) == 0);
    CHECK_MSG(ng > 0 && !memcmp(cout, want, (size_t)ng) && cout[ng] == '\n', "chat printed %s", ds_quote(cout));
    CHECK(!memcmp(cout + ng + 1, want, (size_t)ng));
    CHECK(ds_test_sh(cout, sizeof cout, "$DSV3 chat --model %s --url http://x 2>&1", dir) == 2);
}

TEST(serve_bad_requests) {
    SETUP("--api-key sekrit --max-body 4096 --timeout 1");
    char *o = NULL;
    const char *K = "sekrit";
    static const struct { const char *path, *body, *want; int status; } cases[] = {
        {"/v1/completions", "{\"prompt\": ", "invalid JSON", 400},
        {"/v1/completions", "[1, 2]", "JSON object", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"max_tokens\": \"ten\"}", "'max_tokens' must be an integer", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"max_tokens\": -1}", "'max_tokens' must be in", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"temperature\": 5}", "'temperature' must be in", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"stream\": \"yes\"}", "'stream' must be a boolean", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"n\": 17}", "'n' must be in", 400},
        {"/v1/completions", "{\"prompt\": 42}", "'prompt' must be", 400},
        {"/v1/completions", "{\"prompt\": \"\"}", "'prompt' is empty", 400},
        {"/v1/completions", "{\"prompt\": [1, 300]}", "outside the vocabulary", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"stop\": 3}", "'stop' must be", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"include_stop_str_in_output\": 1}", "must be a boolean", 400},
        {"/v1/completions", "{\"max_tokens\": 3}", "'prompt' is required", 400},
        {"/v1/chat/completions", "{\"messages\": []}", "'messages' is empty", 400},
        {"/v1/chat/completions", "{\"messages\": \"hi\"}", "'messages' must be a list", 400},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", "unknown role 'wizard'", 400},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 7}]}", "content must be", 400},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}", "needs 'logprobs'", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"logit_bias\": [1]}", "'logit_bias' must be an object", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"logit_bias\": {\"x\": 1}}", "key 'x' is not a token id", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"logit_bias\": {\"300\": 1}}", "not a token id of the vocabulary", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"logit_bias\": {\"3\": 101}}", "in [-100, 100]", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"logit_bias\": {\"3\": \"up\"}}", "in [-100, 100]", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"presence_penalty\": 3}", "'presence_penalty' must be in", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"frequency_penalty\": \"a\"}", "'frequency_penalty' must be a number", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"repetition_penalty\": 0}", "'repetition_penalty' must be in", 400},
        {"/v1/completions", "{\"prompt\": \"hi\", \"min_p\": 1.5}", "'min_p' must be in", 400},
        {"/v1/nothing", "{}", "no such endpoint", 404},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = http(S.port, "POST", cases[i].path, K, cases[i].body, &o);
        cJSON *j = cJSON_Parse(o);
        const cJSON *e = cJSON_GetObjectItem(j, "error"), *m = cJSON_GetObjectItem(e, "message");
        CHECK_MSG(st == cases[i].status && cJSON_IsString(m) && strstr(m->valuestring, cases[i].want) &&
                      cJSON_IsString(cJSON_GetObjectItem(e, "type")),
                  "%s %s: %d %s", cases[i].path, cases[i].body, st, o);
        cJSON_Delete(j);
        free(o);
        CHECK(healthy(S.port));
    }
    /* the prompt over the context: 400 with the numbers */
    char big[2048] = "{\"prompt\": [";
    for (int i = 0; i < 70; i++) strcat(big, i ? ", 5" : "5");
    strcat(big, "]}");
    CHECK(http(S.port, "POST", "/v1/completions", K, big, &o) == 400);
    CHECK_MSG(strstr(o, "64 tokens") && strstr(o, "70 tokens") && strstr(o, "context_length_exceeded"), "%s", o);
    free(o);
    /* GET on a POST endpoint */
    CHECK(http(S.port, "GET", "/v1/completions", K, NULL, &o) == 405);
    free(o);
    /* API key: wrong, missing -> 401; /health needs none */
    CHECK(http(S.port, "POST", "/v1/completions", "wrong", "{\"prompt\": \"hi\"}", &o) == 401);
    CHECK(strstr(o, "invalid_api_key") != NULL);
    free(o);
    CHECK(http(S.port, "POST", "/v1/completions", "sekri", "{\"prompt\": \"hi\"}", &o) == 401);
    free(o);
    CHECK(http(S.port, "GET", "/v1/models", NULL, NULL, &o) == 401);
    free(o);
    CHECK(http(S.port, "POST", "/v1/completions", K, "{\"prompt\": \"hi\", \"max_tokens\": 2}", &o) == 200);
    free(o);
    /* an oversized body: 413 from the Content-Length, before reading it */
    char *huge = ds_malloc(8200);
    memset(huge, ' ', 8199);
    huge[0] = '{', huge[8198] = '}', huge[8199] = 0;
    CHECK(http(S.port, "POST", "/v1/completions", K, huge, &o) == 413);
    CHECK(strstr(o, "4096") != NULL);
    free(o);
    free(huge);
    CHECK(healthy(S.port));
    /* a stalled half request: the server drops it after --timeout 1 and serves others meanwhile */
    int fd = dial(S.port);
    const char *half = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekrit\r\nContent-Length: 100\r\n\r\n{\"pro";
    CHECK(send(fd, half, strlen(half), MSG_NOSIGNAL) == (ssize_t)strlen(half));
    CHECK(healthy(S.port));
    double t0 = ds_now();
    char buf[256];
    ssize_t r = recv(fd, buf, sizeof buf, 0); /* returns when the server closes it */
    double dt = ds_now() - t0;
    CHECK_MSG(r <= 0 && dt < 10, "the stalled connection lasted %.1f s (recv %zd)", dt, r);
    close(fd);
    /* a client that disconnects mid-stream: its request is cancelled, the server goes on */
    char pj[512], req[1024];
    prompt_json(pj, sizeof pj, 8, 0);
    snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekrit\r\nContent-Length: %zu\r\n\r\n",
             strlen(pj) + 200);
    char body[700];
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 50, \"ignore_eos\": true, \"stream\": true}", pj);
    snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekrit\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    fd = dial(S.port);
    CHECK(send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req));
    r = recv(fd, buf, sizeof buf, 0);
    CHECK(r > 0 && strstr(buf, "200") != NULL);
    close(fd);
    CHECK(healthy(S.port));
    CHECK(http(S.port, "POST", "/v1/completions", K, "{\"prompt\": \"hi\", \"max_tokens\": 2}", &o) == 200);
    free(o);
    CHECK(server_stop(&S) == 0);
}

typedef struct { int port, rot, plen; int32_t ids[64]; int n, done; } client;
static void *stream_client(void *arg) {
    client *c = arg;
    char pj[512], req[1024], *o = NULL, fin[32];
    prompt_json(pj, sizeof pj, c->plen ? c->plen : 16, c->rot);
    snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true, "
             "\"return_token_ids\": true}", pj, c->plen ? 8 : 16);
    if (http(c->port, "POST", "/v1/completions", NULL, req, &o) == 200) c->n = sse_ids(o, c->ids, 64, &c->done, fin, NULL);
    free(o);
    return NULL;
}

TEST(serve_concurrent_streams_batch_and_match_sequential) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "2", 1);
    SETUP("--max-batch 32 --max-queue 64");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    enum { NC = 32 };
    client cl[NC];
    pthread_t th[NC];
    double t0 = ds_now();
    for (int i = 0; i < NC; i++) {
        cl[i] = (client){.port = S.port, .rot = i % 8};
        pthread_create(&th[i], NULL, stream_client, &cl[i]);
    }
    for (int i = 0; i < NC; i++) pthread_join(th[i], NULL);
    double dt = ds_now() - t0;
    /* sequential runs of the same prompts */
    for (int i = 0; i < 8; i++) {
        client one = {.port = S.port, .rot = i};
        stream_client(&one);
        for (int k = i; k < NC; k += 8)
            CHECK_MSG(one.n == 16 && cl[k].n == 16 && cl[k].done && !memcmp(one.ids, cl[k].ids, 16 * sizeof(int32_t)),
                      "client %d: %d ids (sequential %d)", k, cl[k].n, one.n);
    }
    char *o;
    CHECK(http(S.port, "GET", "/metrics", NULL, NULL, &o) == 200);
    const char *p = strstr(o, "\ndsv3_batch_size_max ");
    int bmax = p ? atoi(p + 21) : 0;
    CHECK_MSG(bmax >= 8 && bmax <= 32, "dsv3_batch_size_max %d", bmax);
    fprintf(stderr, "  %d concurrent streams in %.2f s, batch size up to %d\n", NC, dt, bmax);
    free(o);
    CHECK(server_stop(&S) == 0);
}

TEST(serve_openai_client) {
    char out[8192];
    if (ds_test_sh(out, sizeof out, "python3 -c 'import openai'") != 0) SKIP("python3 'openai' package not installed (pip install openai)");
    setenv("DSV3_SERVE_STEP_DELAY_MS", "2", 1); /* each step's tokens reach a stream on their own (the check counts deltas) */
    SETUP_IN(make_model_long(), "--api-key k1 --model-name m");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    char pj[512], want[512] = "";
    prompt_json(pj, sizeof pj, 24, 0);
    for (int i = 24; i < 32; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i > 24 ? "," : "", g_ref[i]);
    int rc = ds_test_sh(out, sizeof out, "python3 tests/serve_openai_check.py %d k1 '%s' '%s'", S.port, pj, want);
    CHECK_MSG(rc == 0 && strstr(out, "openai client: ok"), "%s", out);
    CHECK(server_stop(&S) == 0);
}

TEST(serve_startup_errors) {
    char out[4096];
    char probe[4096];
    if (ds_test_sh(probe, sizeof probe, "$DSV3 serve --model /nonexistent") == 1 && strstr(probe, "without libmicrohttpd"))
        SKIP("this dsv3 was built without libmicrohttpd");
    const char *dir = make_model();
    CHECK(dir != NULL);
    if (!dir) return;
    /* a template outside the subset is refused at start-up, with its file and line */
    char tf[700];
    snprintf(tf, sizeof tf, "%s/bad.jinja", ds_test_tmpdir());
    const char *bt = "{% for m in messages %}\n{{ m.content | wordwrap }}{% endfor %}";
    CHECK(ds_write_file_atomic(tf, bt, strlen(bt)) == 0);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --port 0 --chat-template %s", dir, tf) == 1);
    CHECK_MSG(strstr(out, "bad.jinja") && strstr(out, "line 2") && strstr(out, "wordwrap") && !strchr(strchr(out, '\n') + 1, '\n'),
              "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --port 0 --ctx 100", dir) == 1);
    CHECK(strstr(out, "max_position_embeddings") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --host 'not-an-ip' --port 0", dir) == 1);
    CHECK(strstr(out, "--host") != NULL);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --port 70000", dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --speculative eagle", dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --speculative ngram --draft-max 16", dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --draft-max 4", dir) == 2);
    CHECK_MSG(strstr(out, "go with --speculative ngram") != NULL, "%s", out);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model %s --speculative ngram --ngram-min 4 --ngram-max 3", dir) == 2);
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 serve --model " V3 "/../nomtp --tokenizer %s --port 0 --speculative mtp", dir) == 1);
    CHECK_MSG(strstr(out, "--speculative mtp needs a model with an MTP module") != NULL, "%s", out);
}

static int metric(int port, const char *name) {
    char *o;
    int v = -1;
    if (http(port, "GET", "/metrics", NULL, NULL, &o) == 200) {
        char key[128];
        snprintf(key, sizeof key, "\n%s ", name);
        const char *p = strstr(o, key);
        if (p) v = atoi(p + strlen(key));
    }
    free(o);
    return v;
}

typedef struct { int port; int status; char *body; } bg_req;
static void *bg_stream(void *arg) {
    bg_req *b = arg;
    char pj[512], req[1024];
    prompt_json(pj, sizeof pj, 8, 0);
    snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true}", pj);
    b->status = http(b->port, "POST", "/v1/completions", NULL, req, &b->body);
    return NULL;
}

/* a full queue answers 503 with Retry-After; SIGTERM lets the running stream finish, then exits 0 */
TEST(serve_queue_full_and_shutdown) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "20", 1);
    SETUP("--max-batch 1 --max-queue 1 --shutdown-grace 20");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    bg_req a = {.port = S.port}, b = {.port = S.port};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, bg_stream, &a);
    for (int i = 0; i < 100 && metric(S.port, "dsv3_batch_size") < 1; i++) usleep(20000);
    pthread_create(&tb, NULL, bg_stream, &b);
    for (int i = 0; i < 100 && metric(S.port, "dsv3_queue_depth") < 1; i++) usleep(20000);
    CHECK(metric(S.port, "dsv3_queue_depth") == 1);
    char raw[512], *o;
    snprintf(raw, sizeof raw, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 33\r\n\r\n"
             "{\"prompt\": \"hi\", \"max_tokens\": 2}");
    int fd = dial(S.port);
    CHECK(send(fd, raw, strlen(raw), MSG_NOSIGNAL) > 0);
    char buf[2048];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_WAITALL);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    CHECK_MSG(strstr(buf, " 503 ") && strstr(buf, "Retry-After: 1") && strstr(buf, "\"error\""), "%s", buf);
    (void)o;
    /* SIGTERM while both run: the grace period lets them finish */
    CHECK(server_stop(&S) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK_MSG(a.status == 200 && strstr(a.body, "\"finish_reason\": \"length\"") && strstr(a.body, "data: [DONE]"), "%s", a.body);
    CHECK_MSG(b.status == 200 && strstr(b.body, "data: [DONE]"), "%s", b.body);
    free(a.body), free(b.body);
}

/* ds_rows_engine_step (the scheduler's batched step: sequences at different
 * positions in one step) gives each sequence bit for bit the logits of
 * batch-1 ds_engine_step at the same positions: FP32 weights (the v3
 * fixture), FP8-resident and BF16-resident weights (the convert fixture's FP8
 * folder, and that folder converted to BF16).  16 sequences of different
 * lengths, started at different steps, so positions differ within a step. */
#include "infer/infer.h"
#include "model/model.h"
static void rows_vs_single(const char *dir, int resident) {
    ds_model m;
    ds_load_opts lo = {.fp8_resident = resident};
    CHECK_MSG(ds_model_load_ex(&m, dir, &lo) == 0, "%s: %s", dir, ds_errmsg());
    if (ds_test_fails) return;
    const struct ds_ops *ops = &ds_ops_cpu;
    enum { NS = 16, T = 12 }; /* NS = DS_LINEAR_ROWWISE_MAX: the row-wise linears' whole range */
    const int64_t V = m.cfg.vocab_size;
    ds_rows_engine batch;
    ds_engine one[NS];
    CHECK(ds_rows_engine_create(&batch, &m, ops, NS, 32) == 0);
    for (int s = 0; s < NS; s++) CHECK(ds_engine_create(&one[s], &m, ops, 1, 32, 2, 0) == 0);
    int64_t pos[NS] = {0}, rows[NS];
    int32_t ids[NS];
    double maxd = 0;
    for (int step = 0; step < T + NS; step++) {
        int n = 0;
        for (int s = 0; s < NS; s++) {
            if (step < s || pos[s] >= T + s) continue; /* sequence s starts at step s, runs T + s tokens */
            ids[n] = (int32_t)((s * 37 + pos[s] * 11 + 3) % V);
            rows[n] = s;
            n++;
        }
        int64_t pp[NS];
        for (int k = 0; k < n; k++) pp[k] = pos[rows[k]];
        if (!n) continue;
        CHECK(ds_rows_engine_step(&batch, ids, rows, pp, n) == 0);
        for (int k = 0; k < n; k++) {
            int s = (int)rows[k];
            CHECK(ds_engine_step(&one[s], &ids[k], 1, 1) == 0);
            for (int64_t v = 0; v < V; v++) {
                double d = fabs((double)batch.logits[k * V + v] - (double)one[s].logits[v]);
                if (d > maxd) maxd = d;
            }
            pos[s]++;
        }
    }
    CHECK_MSG(maxd == 0, "%s (resident %d): batched logits differ from batch-1 by %g", dir, resident, maxd);
    ds_rows_engine_free(&batch);
    for (int s = 0; s < NS; s++) ds_engine_free(&one[s]);
    ds_model_free(&m);
}

TEST(serve_batched_step_equals_single_steps) {
    rows_vs_single(V3, 1);
    char out[2048], dir[600];
    snprintf(dir, sizeof dir, "%s/fp8m", ds_test_tmpdir());
    if (ds_test_sh(out, sizeof out, "mkdir -p %s && cp tests/fixtures/convert/expected_fp8.safetensors %s/model.safetensors && "
                   "cp tests/fixtures/convert/expected_fp8_config.json %s/config.json", dir, dir, dir) != 0)
        SKIP("no convert fixture");
    rows_vs_single(dir, 1); /* FP8-resident: the FP8 gemv in groups of 4 rows */
    char b16[640];
    snprintf(b16, sizeof b16, "%s/bf16m", ds_test_tmpdir());
    CHECK(ds_test_sh(out, sizeof out, "$DSV3 convert --to bf16 %s %s", dir, b16) == 0);
    rows_vs_single(b16, 1); /* BF16-resident */
}

/* 6 concurrent streaming clients with the same 24-token prompt: each gets
 * transformers' 8 greedy ids */
static void six_streams_match_transformers(int port) {
    enum { NC = 6 };
    client cl[NC];
    pthread_t th[NC];
    for (int i = 0; i < NC; i++) {
        cl[i] = (client){.port = port, .rot = 0, .plen = 24};
        pthread_create(&th[i], NULL, stream_client, &cl[i]);
    }
    for (int i = 0; i < NC; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NC; i++)
        CHECK_MSG(cl[i].n == 8 && cl[i].done && !memcmp(cl[i].ids, g_ref + 24, 8 * sizeof(int32_t)), "client %d: %d ids", i,
                  cl[i].n);
}

/* chunked prefill (--prefill-chunk 5: a 24-token prompt in 5 steps, several
 * prompts sharing an iteration) interleaved with decoding: 6 concurrent
 * requests still give transformers' greedy ids */
TEST(serve_chunked_prefill_matches_transformers) {
    SETUP("--max-batch 4 --prefill-chunk 5");
    six_streams_match_transformers(S.port);
    CHECK(server_stop(&S) == 0);
}

/* dsv3 chat --url: Ctrl-C (SIGINT) stops the current answer, not the
 * program: the next line is answered and the chat exits 0 at end of input */
TEST(serve_chat_ctrl_c_stops_the_answer) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "40", 1);
    SETUP("--max-batch 2");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    char out[8192], log[700];
    snprintf(log, sizeof log, "%s/chat.log", ds_test_tmpdir());
    /* the first answer (40 tokens at most, ~1.6 s) is interrupted 0.1 s after it starts; the second runs to its end */
    int rc = ds_test_sh(out, sizeof out,
                        "( echo Hi; sleep 1.5; echo /reset; echo Hi ) | $DSV3 chat --url http://127.0.0.1:%d --max-new-tokens 40 "
                        "> %s 2>&1 & p=$!; for i in $(seq 200); do [ $(wc -c < %s) -gt 2 ] && break; sleep 0.02; done; "
                        "sleep 0.1; kill -INT $p; wait $p; echo rc=$?; cat %s",
                        S.port, log, log, log);
    CHECK(rc == 0);
    CHECK_MSG(strstr(out, "rc=0") && strstr(out, "(answer stopped)"), "%s", out);
    CHECK(server_stop(&S) == 0);
}

/* --speculative mtp: every running sequence verifies its MTP draft in a
 * batched two-token step (9 sequences: groups of 8 and 1).  8 concurrent greedy streams (different prompts
 * and lengths) equal `dsv3 generate` without speculation; half of them get
 * forced drafts (the generate output with every third draft wrong, through
 * the tests-only DSV3_SERVE_TEST_DRAFTS hook) so both the accept and the
 * reject path run inside one batch; two sampled requests (one with forced
 * drafts) equal `dsv3 generate` with their seed (the verify step draws as
 * plain decoding does); /metrics counts the drafts and the accepted ones. */
typedef struct { int port; char body[2048]; int32_t ids[64]; int n, done; } spec_client;
static void *spec_stream(void *arg) {
    spec_client *c = arg;
    char *o = NULL, fin[32];
    if (http(c->port, "POST", "/v1/completions", NULL, c->body, &o) == 200) c->n = sse_ids(o, c->ids, 64, &c->done, fin, NULL);
    free(o);
    return NULL;
}

/* method: the server's options; name: the method as its log names it */
static void spec_serve(const char *method, const char *name) {
    setenv("DSV3_SERVE_TEST_DRAFTS", "1", 1);
    setenv("DSV3_SERVE_STEP_DELAY_MS", "10", 1);
    char opts[256];
    snprintf(opts, sizeof opts, "--max-batch 12 %s", method);
    SETUP(opts);
    unsetenv("DSV3_SERVE_TEST_DRAFTS");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    enum { NC = 9, NEW = 16 };
    spec_client cl[NC];
    int32_t want[NC][64];
    pthread_t th[NC];
    for (int i = 0; i < NC; i++) {
        int plen = 4 + 2 * i; /* different lengths: the sequences sit at different positions in each step */
        char pj[512], ptxt[512] = "", drafts[512] = "";
        prompt_json(pj, sizeof pj, plen, i);
        for (int k = 0; k < plen; k++) snprintf(ptxt + strlen(ptxt), sizeof ptxt - strlen(ptxt), "%d ", g_ref[(k + i) % 24]);
        const int sampled = i >= NC - 2;
        CHECK(gen_ids(dir, ptxt, NEW, sampled ? "--temperature 0.8 --seed 7" : "", want[i]) == NEW);
        if (i % 2 == 1) { /* forced drafts: right except every third */
            strcpy(drafts, ", \"dsv3_test_drafts\": [");
            for (int k = 0; k < NEW; k++)
                snprintf(drafts + strlen(drafts), sizeof drafts - strlen(drafts), "%s%d", k ? ", " : "",
                         k % 3 == 2 ? (want[i][k] + 1) % 256 : want[i][k]);
            strcat(drafts, "]");
        }
        cl[i] = (spec_client){.port = S.port};
        snprintf(cl[i].body, sizeof cl[i].body,
                 "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": %s, \"ignore_eos\": true, \"stream\": true, "
                 "\"return_token_ids\": true%s}", pj, NEW, sampled ? "0.8, \"seed\": 7" : "0", drafts);
    }
    for (int i = 0; i < NC; i++) pthread_create(&th[i], NULL, spec_stream, &cl[i]);
    for (int i = 0; i < NC; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NC; i++)
        CHECK_MSG(cl[i].n == NEW && cl[i].done && !memcmp(cl[i].ids, want[i], NEW * sizeof(int32_t)),
                  "client %d: %d ids, first %d (generate %d)", i, cl[i].n, cl[i].n ? cl[i].ids[0] : -1, want[i][0]);
    int drafted = metric(S.port, "dsv3_spec_drafts_total"), accepted = metric(S.port, "dsv3_spec_accepted_total");
    CHECK_MSG(drafted > 0 && accepted > 0 && accepted < drafted, "drafts %d, accepted %d", drafted, accepted);
    int bmax = metric(S.port, "dsv3_batch_size_max");
    CHECK_MSG(bmax > 8, "batch size up to %d: the verify step was never split", bmax); /* 9 sequences: verify groups */
    fprintf(stderr, "  speculative %s: %d drafts, %d accepted, batch up to %d\n", name, drafted, accepted, bmax);
    CHECK(server_stop(&S) == 0);
    char log[4096];
    size_t ln;
    char *lt = ds_read_file(S.log, &ln);
    snprintf(log, sizeof log, "%s", lt ? lt : "");
    free(lt);
    char want_log[64];
    snprintf(want_log, sizeof want_log, "speculative %s:", name);
    CHECK_MSG(strstr(log, want_log) && strstr(log, "acceptance"), "%s", log);
}

TEST(serve_speculative_mtp_matches_generate) { spec_serve("--speculative mtp", "mtp"); }

/* --speculative ngram: the same clients; the forced drafts are several tokens
 * a step (every third wrong), the others the lookup's own over their text,
 * verified in groups of at most 16 rows, shorter drafts padded */
TEST(serve_speculative_ngram_matches_generate) {
    spec_serve("--speculative ngram --draft-max 4 --ngram-min 1", "ngram");
    spec_serve("--speculative ngram --draft-max 15", "ngram");
}

/* logit_bias, repetition, presence and frequency penalties in a request:
 * the ids of tests/fixtures/sampling/penalties.safetensors (transformers'
 * generate with an oracle of vLLM's order, tools/make_sampling_fixtures.py),
 * two requests in one batch on a --speculative mtp server: their drafts are
 * verified against the penalized draws, so the ids are still the fixture's */
TEST(serve_penalties_match_fixture) {
    const char *fix = "tests/fixtures/sampling/penalties.safetensors";
    if (!ds_file_exists(fix)) SKIP("no %s", fix);
    SETUP("--max-batch 4 --speculative mtp");
    ds_st_file f;
    CHECK(ds_st_open(&f, fix) == 0);
    TEST_RETURN_IF_FAILED();
    const ds_st_tensor *tp = ds_st_find(&f, "prompt"), *tr = ds_st_find(&f, "rep_ids"), *tq = ds_st_find(&f, "pen_ids");
    float prompt[8], want[2][64];
    CHECK(tp && tr && tq && tp->numel == 8 && tr->numel == tq->numel && tr->numel <= 64);
    if (!tp || !tr || !tq || tp->numel != 8 || tr->numel > 64) return;
    ds_st_to_f32(tp, prompt), ds_st_to_f32(tr, want[0]), ds_st_to_f32(tq, want[1]);
    const int N = (int)tr->numel - 8;
    ds_st_close(&f);
    char pj[256] = "[";
    for (int i = 0; i < 8; i++) snprintf(pj + strlen(pj), sizeof pj - strlen(pj), "%s%d", i ? ", " : "", (int)prompt[i]);
    strcat(pj, "]");
    static const char *const extra[2] = {
        "\"repetition_penalty\": 1.5",
        "\"repetition_penalty\": 1.3, \"presence_penalty\": 0.4, \"frequency_penalty\": 0.6, "
        "\"logit_bias\": {\"7\": 2.5, \"105\": -100, \"200\": 1.25}"};
    spec_client cl[2];
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
        cl[k] = (spec_client){.port = S.port};
        snprintf(cl[k].body, sizeof cl[k].body,
                 "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true, "
                 "\"return_token_ids\": true, %s}", pj, N, extra[k]);
        pthread_create(&th[k], NULL, spec_stream, &cl[k]);
    }
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
        int same = cl[k].n == N && cl[k].done;
        for (int i = 0; i < N && same; i++) same = cl[k].ids[i] == (int32_t)want[k][8 + i];
        CHECK_MSG(same, "request %d: %d ids, first %d (fixture %d)", k, cl[k].n, cl[k].n ? cl[k].ids[0] : -1, (int)want[k][8]);
    }
    CHECK(metric(S.port, "dsv3_spec_drafts_total") > 0);
    /* stop_token_ids [X, Y] (with the model's EOS): transformers' eos_token_id [1, X, Y] ends at X, and
     * with min_tokens (min_new_tokens) on to Y; streamed and not; the first on the speculative path */
    f = (ds_st_file){0};
    CHECK(ds_st_open(&f, fix) == 0);
    TEST_RETURN_IF_FAILED();
    const ds_st_tensor *ts = ds_st_find(&f, "stop_ids"), *tm = ds_st_find(&f, "minlen_ids"), *tc = ds_st_find(&f, "stop_cfg");
    float ws[64], wm[64], cfg[3];
    CHECK(ts && tm && tc && ts->numel <= 64 && tm->numel <= 64 && tc->numel == 3);
    if (!ts || !tm || !tc || ts->numel > 64 || tm->numel > 64 || tc->numel != 3) return;
    ds_st_to_f32(ts, ws), ds_st_to_f32(tm, wm), ds_st_to_f32(tc, cfg);
    const int ns = (int)ts->numel - 8, nm = (int)tm->numel - 8;
    ds_st_close(&f);
    for (int k = 0; k < 4; k++) {
        const int with_min = k & 1, stream = k >> 1;
        char body[1024], mt[64] = "", *o = NULL, fin[32] = "";
        if (with_min) snprintf(mt, sizeof mt, ", \"min_tokens\": %d", (int)cfg[2]);
        snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 24, \"temperature\": 0, \"stop_token_ids\": [%d, %d], "
                 "\"return_token_ids\": true, \"stream\": %s%s}", pj, (int)cfg[0], (int)cfg[1], stream ? "true" : "false", mt);
        int32_t ids[64];
        int n = 0, done = 1;
        CHECK(http(S.port, "POST", "/v1/completions", NULL, body, &o) == 200);
        if (stream) {
            n = sse_ids(o ? o : "", ids, 64, &done, fin, NULL);
        } else {
            cJSON *j = cJSON_Parse(o);
            const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
            n = ids_of(cJSON_GetObjectItem(ch, "token_ids"), ids, 64);
            const cJSON *fr = cJSON_GetObjectItem(ch, "finish_reason");
            snprintf(fin, sizeof fin, "%s", cJSON_IsString(fr) ? fr->valuestring : "");
            cJSON_Delete(j);
        }
        free(o);
        const float *w = with_min ? wm : ws;
        int same = done && n == (with_min ? nm : ns) && !strcmp(fin, "stop");
        for (int i = 0; i < n && same; i++) same = ids[i] == (int32_t)w[8 + i];
        CHECK_MSG(same, "stop ids%s%s: %d ids (want %d), last %d, finish %s", with_min ? " + min_tokens" : "",
                  stream ? ", streamed" : "", n, with_min ? nm : ns, n ? ids[n - 1] : -1, fin);
    }
    static const struct { const char *body, *want; } bad[] = {
        {"{\"prompt\": \"ab\", \"max_tokens\": 3, \"min_tokens\": 4}", "'min_tokens' (4) is more than 'max_tokens' (3)"},
        {"{\"prompt\": \"ab\", \"min_tokens\": -1}", "'min_tokens' must be in"},
        {"{\"prompt\": \"ab\", \"stop_token_ids\": 3}", "'stop_token_ids' must be a list"},
        {"{\"prompt\": \"ab\", \"stop_token_ids\": [3, 256]}", "'stop_token_ids'[1] is not a token id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *o = NULL;
        CHECK_MSG(http(S.port, "POST", "/v1/completions", NULL, bad[i].body, &o) == 400 && o && strstr(o, bad[i].want), "%s: %s",
                  bad[i].body, o ? o : "");
        free(o);
    }
    CHECK(server_stop(&S) == 0);
}

/* the eval fixture model (tests/fixtures/eval/model) behind a server, and
 * lm-eval's results on it (scores.json): why not, or NULL */
static const char *eval_serve_skip(void) {
    static char probe[4096];
    if (!ds_file_exists("tests/fixtures/eval/scores.json")) return "no tests/fixtures/eval/scores.json";
    if (ds_test_sh(probe, sizeof probe, "$DSV3 serve --model /nonexistent") == 1 && strstr(probe, "without libmicrohttpd"))
        return "this dsv3 was built without libmicrohttpd";
    return NULL;
}
/* the parsed scores.json with the server started (NULL after a failed check) */
static cJSON *eval_serve_start(server *S, const char *extra) {
    size_t flen;
    char *ft = ds_read_file("tests/fixtures/eval/scores.json", &flen);
    cJSON *sc = ft ? cJSON_ParseWithLength(ft, flen) : NULL;
    free(ft);
    CHECK(sc != NULL);
    if (!sc) return NULL;
    CHECK_MSG(server_start(S, "tests/fixtures/eval/model", extra) == 0, "the server did not start");
    if (!S->port) {
        cJSON_Delete(sc);
        return NULL;
    }
    return sc;
}

/* Scoring through /v1/completions as lm-evaluation-harness's local-completions
 * model does (prompt = a list of token-id lists, echo, logprobs 1, max_tokens
 * 1; a continuation's log-likelihood = Σ token_logprobs[ctxlen:-1], greedy =
 * each of those equals the top alternative's): the log-likelihoods and greedy
 * flags lm-eval's HF model gave on the eval fixture model
 * (tests/fixtures/eval/scores.json, tools/make_eval_fixtures.py), for every
 * choice of piqa, arc_easy, hellaswag and greedy_mc that fits the context. */
TEST(serve_echo_logprobs_match_lm_eval) {
    const char *why = eval_serve_skip();
    if (why) SKIP("%s", why);
    server S;
    cJSON *sc = eval_serve_start(&S, "--max-batch 4");
    if (!sc) return;
    static const char *const tasks[] = {"piqa", "arc_easy", "hellaswag", "greedy_mc"};
    /* every choice that fits (context + continuation + the one generated token within 128) */
    typedef struct { const cJSON *cx, *ct, *e; int k; const char *task; } item;
    item *it = ds_malloc(1024 * sizeof *it);
    int nit = 0;
    for (size_t t = 0; t < sizeof tasks / sizeof *tasks; t++) {
        const cJSON *ex = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(sc, "tasks"), tasks[t]), "examples");
        const cJSON *e;
        cJSON_ArrayForEach(e, ex) {
            const cJSON *ids = cJSON_GetObjectItem(e, "ids");
            for (int k = 0; k < cJSON_GetArraySize(ids) && nit < 1024; k++) {
                const cJSON *pair = cJSON_GetArrayItem(ids, k);
                const cJSON *cx = cJSON_GetArrayItem(pair, 0), *ct = cJSON_GetArrayItem(pair, 1);
                if (cJSON_GetArraySize(cx) + cJSON_GetArraySize(ct) <= 126) it[nit++] = (item){cx, ct, e, k, tasks[t]};
            }
        }
    }
    enum { BATCH = 6 };
    int checked = 0, greedy_true = 0, bad = 0;
    double maxerr = 0;
    for (int b0 = 0; b0 < nit; b0 += BATCH) { /* a batch of prompts a request, as lm-eval's batch_size */
        const int nb = nit - b0 < BATCH ? nit - b0 : BATCH;
        ds_sbuf b = {0};
        ds_sbuf_puts(&b, "{\"model\": \"m\", \"prompt\": [");
        for (int q = 0; q < nb; q++) {
            ds_sbuf_puts(&b, q ? ", [" : "[");
            int first = 1;
            for (int h = 0; h < 2; h++) {
                const cJSON *x, *arr = h ? it[b0 + q].ct : it[b0 + q].cx;
                cJSON_ArrayForEach(x, arr) {
                    ds_sbuf_printf(&b, "%s%d", first ? "" : ", ", x->valueint);
                    first = 0;
                }
            }
            ds_sbuf_puts(&b, "]");
        }
        ds_sbuf_puts(&b, "], \"temperature\": 0, \"max_tokens\": 1, \"logprobs\": 1, \"seed\": 1234, \"echo\": true}");
        char *o = NULL;
        int st = http(S.port, "POST", "/v1/completions", NULL, b.p, &o);
        free(b.p);
        cJSON *j = cJSON_Parse(o);
        const cJSON *chs = cJSON_GetObjectItem(j, "choices");
        CHECK_MSG(st == 200 && cJSON_GetArraySize(chs) == nb, "status %d, %s", st, o ? o : "");
        for (int q = 0; q < nb && cJSON_GetArraySize(chs) == nb; q++) {
            const item *x = &it[b0 + q];
            const cJSON *ch = cJSON_GetArrayItem(chs, q);
            const cJSON *lp = cJSON_GetObjectItem(ch, "logprobs");
            const cJSON *tl = cJSON_GetObjectItem(lp, "token_logprobs"), *top = cJSON_GetObjectItem(lp, "top_logprobs");
            const int nc = cJSON_GetArraySize(x->cx), nt = cJSON_GetArraySize(x->ct);
            int ok = cJSON_GetObjectItem(ch, "index")->valueint == q && cJSON_GetArraySize(tl) == nc + nt + 1 &&
                     cJSON_GetArraySize(top) == nc + nt + 1 && cJSON_IsNull(cJSON_GetArrayItem(tl, 0));
            double ll = 0;
            int greedy = 1;
            for (int i = nc; ok && i < nc + nt; i++) { /* lm-eval: token_logprobs[ctxlen:-1] */
                const double v = cJSON_GetArrayItem(tl, i)->valuedouble;
                const cJSON *tp = cJSON_GetArrayItem(top, i);
                ok = cJSON_GetArraySize(tp) == 1;
                ll += v;
                if (ok && v != tp->child->valuedouble) greedy = 0;
            }
            const double want = cJSON_GetArrayItem(cJSON_GetObjectItem(x->e, "ll"), x->k)->valuedouble;
            const int wg = cJSON_IsTrue(cJSON_GetArrayItem(cJSON_GetObjectItem(x->e, "greedy"), x->k));
            const double margin = cJSON_GetObjectItem(x->e, "margin")->valuedouble;
            /* FP32 on both sides, here through the absorbed-MLA cache path: measured under 1e-4 over
             * 100-token continuations */
            const double err = fabs(ll - want);
            maxerr = err > maxerr ? err : maxerr;
            if ((!ok || err > fmax(1e-3, 1e-5 * fabs(want)) || (margin > 1e-3 && greedy != wg)) && bad++ < 5)
                CHECK_MSG(0, "%s choice %d: ll %.6f vs lm-eval %.6f, greedy %d vs %d (margin %.3g), shape ok %d", x->task,
                          x->k, ll, want, greedy, wg, margin, ok);
            checked++, greedy_true += greedy;
        }
        cJSON_Delete(j);
        free(o);
    }
    free(it);
    fprintf(stderr, "  %d choices scored, %d greedy, max |ll - lm-eval| %.3g\n", checked, greedy_true, maxerr);
    CHECK_MSG(!bad && checked > 150 && greedy_true >= 5, "%d bad of %d, %d greedy", bad, checked, greedy_true);
    /* max_tokens 0: the prompt scored alone (4 tokens, the first null), nothing generated */
    char *o0 = NULL;
    CHECK(http(S.port, "POST", "/v1/completions", NULL, "{\"prompt\": [5, 6, 7, 8], \"max_tokens\": 0, \"echo\": true, \"logprobs\": 1}",
               &o0) == 200);
    cJSON *j0 = cJSON_Parse(o0);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j0, "choices"), 0);
    const cJSON *tl0 = cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "logprobs"), "token_logprobs");
    CHECK_MSG(cJSON_GetArraySize(tl0) == 4 && cJSON_IsNull(cJSON_GetArrayItem(tl0, 0)) &&
                  cJSON_IsNumber(cJSON_GetArrayItem(tl0, 3)) &&
                  cJSON_GetObjectItem(cJSON_GetObjectItem(j0, "usage"), "completion_tokens")->valueint == 0,
              "%s", o0 ? o0 : "");
    cJSON_Delete(j0), free(o0);
    /* a batch over the limits is refused (echo + logprobs streamed: serve_echo_logprobs_streamed) */
    char *o = NULL;
    CHECK(http(S.port, "POST", "/v1/completions", NULL, "{\"prompt\": [[1, 2], [3]], \"n\": 16, \"max_tokens\": 1}", &o) == 200);
    free(o), o = NULL;
    CHECK(http(S.port, "POST", "/v1/completions", NULL, "{\"prompt\": [[1, 2], [3], [4], [5], [6]], \"n\": 16}", &o) == 400);
    CHECK(o && strstr(o, "choices, at most"));
    free(o), o = NULL;
    CHECK(http(S.port, "POST", "/v1/completions", NULL, "{\"prompt\": [[1, 2], 3]}", &o) == 400);
    CHECK(o && strstr(o, "'prompt' must be"));
    free(o), o = NULL;
    /* an empty logit_bias is no bias (it once freed the request's bias twice: found by an HTTP fuzz run) */
    CHECK(http(S.port, "POST", "/v1/completions", NULL, "{\"prompt\": [1, 2], \"n\": 2, \"max_tokens\": 1, \"logit_bias\": {}}",
               &o) == 200);
    free(o), o = NULL;
    CHECK(http(S.port, "GET", "/health", NULL, NULL, &o) == 200);
    free(o);
    CHECK(server_stop(&S) == 0);
    cJSON_Delete(sc);
}

/* POST /tokenize and /detokenize (vLLM's shapes) on the eval fixture model:
 * each task context's ids are those lm-eval's HF tokenizer gave
 * (tests/fixtures/eval/scores.json), and /detokenize gives the text back;
 * chat messages render through the template; bad input answers 400; the
 * API key guards both */
TEST(serve_tokenize_endpoints) {
    const char *why = eval_serve_skip();
    if (why) SKIP("%s", why);
    server S;
    cJSON *sc = eval_serve_start(&S, "--api-key k9");
    if (!sc) return;
    int checked = 0;
    static const char *const tasks[] = {"piqa", "arc_easy", "hellaswag"};
    for (size_t t = 0; t < 3; t++) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(sc, "tasks"), tasks[t]), "examples")) {
            const char *ctx = cJSON_GetObjectItem(e, "context")->valuestring;
            const cJSON *want = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(e, "ids"), 0), 0);
            cJSON *rq = cJSON_CreateObject();
            cJSON_AddStringToObject(rq, "prompt", ctx);
            cJSON_AddBoolToObject(rq, "add_special_tokens", 0);
            char *body = cJSON_PrintUnformatted(rq), *o = NULL;
            cJSON_Delete(rq);
            int st = http(S.port, "POST", "/tokenize", "k9", body, &o);
            free(body);
            cJSON *j = cJSON_Parse(o);
            const cJSON *tk = cJSON_GetObjectItem(j, "tokens");
            int same = st == 200 && cJSON_GetArraySize(tk) == cJSON_GetArraySize(want) &&
                       cJSON_GetObjectItem(j, "count")->valueint == cJSON_GetArraySize(want);
            for (int i = 0; same && i < cJSON_GetArraySize(want); i++)
                same = cJSON_GetArrayItem(tk, i)->valueint == cJSON_GetArrayItem(want, i)->valueint;
            CHECK_MSG(same, "%s: /tokenize %s", tasks[t], o ? o : "");
            /* and back */
            char *ids = cJSON_PrintUnformatted(tk), req[16384];
            snprintf(req, sizeof req, "{\"tokens\": %s}", ids ? ids : "[]");
            free(ids), free(o), o = NULL;
            cJSON_Delete(j);
            st = http(S.port, "POST", "/detokenize", "k9", req, &o);
            j = cJSON_Parse(o);
            const cJSON *pt = cJSON_GetObjectItem(j, "prompt");
            CHECK_MSG(st == 200 && cJSON_IsString(pt) && !strcmp(pt->valuestring, ctx), "%s: /detokenize %s", tasks[t], o ? o : "");
            cJSON_Delete(j), free(o);
            checked++;
        }
    }
    CHECK(checked == 60);
    char *o = NULL;
    static const struct { const char *path, *body, *want; int status; } bad[] = {
        {"/tokenize", "{\"prompt\": 3}", "'prompt' (a string) or 'messages' is required", 400},
        {"/tokenize", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "no chat template", 400},
        {"/tokenize", "[1]", "JSON object", 400},
        {"/detokenize", "{\"tokens\": [1, 512]}", "'tokens'[1] is not a token id", 400},
        {"/detokenize", "{\"tokens\": \"ab\"}", "'tokens' (a list of token ids) is required", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_MSG(http(S.port, "POST", bad[i].path, "k9", bad[i].body, &o) == bad[i].status && o && strstr(o, bad[i].want),
                  "%s %s: %s", bad[i].path, bad[i].body, o ? o : "");
        free(o), o = NULL;
    }
    CHECK(http(S.port, "POST", "/tokenize", NULL, "{\"prompt\": \"a\"}", &o) == 401);
    free(o), o = NULL;
    CHECK(http(S.port, "GET", "/tokenize", "k9", NULL, &o) == 405);
    free(o);
    CHECK(server_stop(&S) == 0);
    cJSON_Delete(sc);
}

/* lm-evaluation-harness's own client (LocalCompletionsAPI, `lm_eval --model
 * local-completions`) through the server: tools/check_serve_lmeval.py, the same
 * choices as above; needs lm-eval with its api extras (DSV3_LMEVAL_PYTHON: a
 * python that has it, e.g. a venv's; python3 by default) */
TEST(serve_lm_eval_local_completions) {
    const char *py = getenv("DSV3_LMEVAL_PYTHON") ? getenv("DSV3_LMEVAL_PYTHON") : "python3";
    char out[8192];
    if (ds_test_sh(out, sizeof out, "%s -c 'import lm_eval, tenacity' 2>&1", py) != 0)
        SKIP("lm-eval with its api extras is not installed for %s (pip install 'lm-eval[api]'; DSV3_LMEVAL_PYTHON)", py);
    if (ds_test_sh(out, sizeof out, "$DSV3 serve --model /nonexistent") == 1 && strstr(out, "without libmicrohttpd"))
        SKIP("this dsv3 was built without libmicrohttpd");
    server S;
    CHECK_MSG(server_start(&S, "tests/fixtures/eval/model", "--max-batch 4") == 0, "the server did not start");
    if (!S.port) return;
    int rc = ds_test_sh(out, sizeof out, "%s tools/check_serve_lmeval.py --url http://127.0.0.1:%d 2>/dev/null", py, S.port);
    CHECK_MSG(rc == 0 && strstr(out, "\"n_bad\": 0") && strstr(out, "\"choices\": 232") && strstr(out, "\"gen_bad\": []"),
              "rc %d: %s", rc, out);
    CHECK(server_stop(&S) == 0);
}

/* Batched prefill (ds_rows_engine_prefill: several prompts in one forward,
 * each at its own position in its own cache row, shorter chunks padded):
 * within the row-wise linears' range (4 prompts x 4 tokens = 16 rows) each
 * prompt's last logits equal a batch-1 prefill's of its real tokens bit for
 * bit, over two chunks of different lengths (the second starting where each
 * prompt's real tokens ended, over the first chunk's padding); then decode
 * steps from those rows equal batch-1 steps too. */
TEST(serve_batched_prefill_equals_single_prefill) {
    ds_model m;
    ds_load_opts lo = {.fp8_resident = 1};
    CHECK_MSG(ds_model_load_ex(&m, V3, &lo) == 0, "%s", ds_errmsg());
    if (ds_test_fails) return;
    const struct ds_ops *ops = &ds_ops_cpu;
    enum { NS = 4, T = 4 };
    static const int64_t len[2][NS] = {{4, 3, 2, 4}, {4, 1, 3, 2}};
    const int64_t V = m.cfg.vocab_size;
    ds_rows_engine batch;
    ds_engine one[NS];
    CHECK(ds_rows_engine_create(&batch, &m, ops, NS + 2, 32) == 0);
    CHECK(ds_rows_engine_prefill_init(&batch, NS * T) == 0);
    for (int s = 0; s < NS; s++) CHECK(ds_engine_create(&one[s], &m, ops, 1, 32, T, 0) == 0);
    int32_t ids[NS * T];
    int64_t rows[NS], pos[NS] = {0}, last[NS];
    double maxd = 0;
    for (int c = 0; c < 2; c++) {
        for (int s = 0; s < NS; s++) {
            rows[s] = NS + 1 - s; /* rows out of order */
            last[s] = len[c][s] - 1;
            for (int j = 0; j < T; j++) ids[s * T + j] = j < len[c][s] ? (int32_t)((s * 41 + (pos[s] + j) * 13 + 5) % V) : 7;
        }
        CHECK(ds_rows_engine_prefill(&batch, ids, rows, pos, last, NS, T) == 0);
        for (int s = 0; s < NS; s++) {
            CHECK(ds_engine_step(&one[s], ids + s * T, len[c][s], 1) == 0);
            for (int64_t v = 0; v < V; v++) {
                double d = fabs((double)batch.p_logits[s * V + v] - (double)one[s].logits[v]);
                if (d > maxd) maxd = d;
            }
            pos[s] += len[c][s];
        }
    }
    for (int step = 0; step < 3; step++) {
        for (int s = 0; s < NS; s++) ids[s] = (int32_t)((s * 7 + step * 3 + 1) % V);
        CHECK(ds_rows_engine_step(&batch, ids, rows, pos, NS) == 0);
        for (int s = 0; s < NS; s++) {
            CHECK(ds_engine_step(&one[s], &ids[s], 1, 1) == 0);
            for (int64_t v = 0; v < V; v++) {
                double d = fabs((double)batch.logits[s * V + v] - (double)one[s].logits[v]);
                if (d > maxd) maxd = d;
            }
            pos[s]++;
        }
    }
    CHECK_MSG(maxd == 0, "batched prefill/decode logits differ from batch-1 by %g", maxd);
    /* more tokens than the prefill activations hold, or a last token past the chunk: errors, not overruns */
    CHECK(ds_rows_engine_prefill(&batch, ids, rows, pos, NULL, NS, T + 1) == -1);
    last[1] = T;
    CHECK(ds_rows_engine_prefill(&batch, ids, rows, pos, last, NS, T) == -1);
    ds_rows_engine_free(&batch);
    for (int s = 0; s < NS; s++) ds_engine_free(&one[s]);
    ds_model_free(&m);
}

/* Requests arriving together are prefilled in one forward (dsv3_prefill_batch_max
 * > 1), mixed prompt lengths (shorter chunks padded); every greedy result
 * equals `dsv3 generate`'s. */
TEST(serve_batched_prefill_matches_generate) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "30", 1);
    SETUP("--max-batch 16");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    enum { NC = 14, NEW = 8 };
    spec_client cl[NC];
    int32_t want[NC][64];
    pthread_t th[NC];
    for (int i = 0; i < NC; i++) {
        int plen = i < 8 ? 12 : 7 + i % 6; /* eight of one length, six others (padded into groups) */
        char pj[512], ptxt[512] = "";
        prompt_json(pj, sizeof pj, plen, i);
        for (int k = 0; k < plen; k++) snprintf(ptxt + strlen(ptxt), sizeof ptxt - strlen(ptxt), "%d ", g_ref[(k + i) % 24]);
        CHECK(gen_ids(dir, ptxt, NEW, "", want[i]) == NEW);
        cl[i] = (spec_client){.port = S.port};
        snprintf(cl[i].body, sizeof cl[i].body,
                 "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true, "
                 "\"return_token_ids\": true}", pj, NEW);
    }
    for (int i = 0; i < NC; i++) pthread_create(&th[i], NULL, spec_stream, &cl[i]);
    for (int i = 0; i < NC; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < NC; i++)
        CHECK_MSG(cl[i].n == NEW && cl[i].done && !memcmp(cl[i].ids, want[i], NEW * sizeof(int32_t)),
                  "client %d: %d ids, first %d (generate %d)", i, cl[i].n, cl[i].n ? cl[i].ids[0] : -1, want[i][0]);
    int pmax = metric(S.port, "dsv3_prefill_batch_max"), psteps = metric(S.port, "dsv3_prefill_steps_total");
    CHECK_MSG(pmax >= 4 && psteps < NC, "prefill: %d forwards, up to %d prompts in one", psteps, pmax);
    /* the time-to-first-token histogram counts every request in its +Inf bucket */
    CHECK(metric(S.port, "dsv3_time_to_first_token_seconds_bucket{le=\"+Inf\"}") == NC);
    CHECK(metric(S.port, "dsv3_time_to_first_token_seconds_count") == NC);
    fprintf(stderr, "  %d prompts in %d prefill forwards, up to %d in one\n", NC, psteps, pmax);
    CHECK(server_stop(&S) == 0);
}

/* n > 1: each choice is its own sequence in the batch; choice j samples with
 * seed + j and equals `dsv3 generate --seed` (seed + j); greedy choices are
 * the greedy ids; streamed chunks carry each choice's index; usage counts
 * the prompt once and every choice's tokens; n over 16 is a 400. */
TEST(serve_n_choices) {
    SETUP("--max-batch 4");
    char pj[512], ptxt[512] = "", req[1024], *o = NULL;
    prompt_json(pj, sizeof pj, 6, 0);
    for (int k = 0; k < 6; k++) snprintf(ptxt + strlen(ptxt), sizeof ptxt - strlen(ptxt), "%d ", g_ref[k]);
    enum { NEW = 6 };
    int32_t want[3][64], greedy[64];
    for (int j = 0; j < 3; j++) {
        char ex[64];
        snprintf(ex, sizeof ex, "--temperature 0.9 --seed %d", 11 + j);
        CHECK(gen_ids(dir, ptxt, NEW, ex, want[j]) == NEW);
    }
    CHECK(gen_ids(dir, ptxt, NEW, "", greedy) == NEW);
    snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": %d, \"n\": 3, \"temperature\": 0.9, \"seed\": 11, "
             "\"ignore_eos\": true, \"return_token_ids\": true}", pj, NEW);
    CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
    cJSON *j = cJSON_Parse(o);
    const cJSON *ch = cJSON_GetObjectItem(j, "choices");
    CHECK_MSG(cJSON_GetArraySize(ch) == 3, "%s", o);
    for (int k = 0; k < 3 && cJSON_GetArraySize(ch) == 3; k++) {
        const cJSON *c = cJSON_GetArrayItem(ch, k);
        int32_t ids[64];
        int n = ids_of(cJSON_GetObjectItem(c, "token_ids"), ids, 64);
        CHECK((int)cJSON_GetObjectItem(c, "index")->valuedouble == k);
        CHECK_MSG(n == NEW && !memcmp(ids, want[k], NEW * sizeof(int32_t)), "choice %d differs from generate --seed %d", k, 11 + k);
    }
    CHECK(memcmp(want[0], want[1], NEW * sizeof(int32_t)) != 0); /* the seeds differ, so do the samples */
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    CHECK(u && (int)cJSON_GetObjectItem(u, "completion_tokens")->valuedouble == 3 * NEW &&
          (int)cJSON_GetObjectItem(u, "prompt_tokens")->valuedouble == 6);
    cJSON_Delete(j);
    free(o);
    /* streaming, greedy: each choice's chunks by index */
    snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": %d, \"n\": 2, \"temperature\": 0, \"ignore_eos\": true, "
             "\"stream\": true, \"return_token_ids\": true, \"stream_options\": {\"include_usage\": true}}", pj, NEW);
    CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
    int32_t got[2][64];
    int ng[2] = {0, 0}, fin[2] = {0, 0}, usage = -1, done = 0;
    for (const char *p = o; (p = strstr(p, "data: ")); ) {
        p += 6;
        if (!strncmp(p, "[DONE]", 6)) { done = 1; break; }
        const char *e = strstr(p, "\n\n");
        if (!e) break;
        cJSON *c = cJSON_ParseWithLength(p, (size_t)(e - p));
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "choices")) {
            int k = (int)cJSON_GetObjectItem(x, "index")->valuedouble;
            if (k < 0 || k > 1) continue;
            ng[k] += ids_of(cJSON_GetObjectItem(x, "token_ids"), got[k] + ng[k], 64 - ng[k]);
            fin[k] += cJSON_IsString(cJSON_GetObjectItem(x, "finish_reason"));
        }
        const cJSON *uu = cJSON_GetObjectItem(c, "usage");
        if (cJSON_IsObject(uu)) usage = (int)cJSON_GetObjectItem(uu, "completion_tokens")->valuedouble;
        cJSON_Delete(c);
        p = e;
    }
    for (int k = 0; k < 2; k++)
        CHECK_MSG(ng[k] == NEW && fin[k] == 1 && !memcmp(got[k], greedy, NEW * sizeof(int32_t)), "streamed choice %d: %d ids", k, ng[k]);
    CHECK(done && usage == 2 * NEW);
    free(o);
    CHECK(http(S.port, "POST", "/v1/chat/completions", NULL,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 17}", &o) == 400);
    CHECK(strstr(o, "\"param\": \"n\"") != NULL);
    free(o);
    CHECK(server_stop(&S) == 0);
}

/* --prefill-batch 2: prompts that wait together are prefilled two per
 * forward (not more), and the outputs are the same as alone */
TEST(serve_prefill_batch_cap) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "30", 1);
    SETUP("--max-batch 8 --prefill-batch 2");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    six_streams_match_transformers(S.port);
    CHECK(metric(S.port, "dsv3_prefill_batch_max") == 2);
    CHECK(server_stop(&S) == 0);
}

/* serve and chat on the device-resident path (docs/engine.md §2.5): under the
 * test device fakedev (memory the host cannot touch) the weights, both KV
 * caches, the sampler and the logits stay in the table's memory; the answers
 * (greedy with log-probabilities, sampled, chat) equal --device cpu's. */
static char *serve_answers(const char *dir, const char *device) {
    char extra[64];
    snprintf(extra, sizeof extra, "--max-batch 3 --device %s", device);
    server S;
    if (server_start(&S, dir, extra) || !S.port) return NULL;
    char pj[512], req[2048], *o = NULL;
    ds_sbuf all = {0};
    prompt_json(pj, sizeof pj, 20, 1);
    const char *bodies[6] = {
        "{\"prompt\": %s, \"max_tokens\": 6, \"temperature\": 0, \"ignore_eos\": true, \"return_token_ids\": true, \"logprobs\": 2}",
        "{\"prompt\": %s, \"max_tokens\": 6, \"temperature\": 0.9, \"top_p\": 0.8, \"seed\": 5, \"ignore_eos\": true, "
        "\"return_token_ids\": true}",
        "{\"prompt\": %s, \"max_tokens\": 6, \"temperature\": 0.8, \"min_p\": 0.1, \"repetition_penalty\": 1.2, "
        "\"presence_penalty\": 0.3, \"frequency_penalty\": 0.2, \"logit_bias\": {\"5\": 3}, \"seed\": 9, "
        "\"ignore_eos\": true, \"return_token_ids\": true, \"logprobs\": 1}",
        "{\"prompt\": [%s], \"max_tokens\": 2, \"temperature\": 0, \"echo\": true, \"logprobs\": 2, \"ignore_eos\": true}",
        "{\"prompt\": %s, \"max_tokens\": 12, \"temperature\": 0.7, \"seed\": 3, \"ignore_eos\": true, \"return_token_ids\": true, "
        "\"response_format\": {\"type\": \"json_object\"}}",
        NULL};
    for (int i = 0; bodies[i]; i++) {
        snprintf(req, sizeof req, bodies[i], pj);
        if (http(S.port, "POST", "/v1/completions", NULL, req, &o) != 200) break;
        cJSON *j = cJSON_Parse(o);
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        char *p = cJSON_PrintUnformatted(ch); /* the choice: ids, text, logprobs (no ids or times) */
        ds_sbuf_printf(&all, "%s\n", p);
        free(p), cJSON_Delete(j), free(o), o = NULL;
    }
    const char *creq = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 8, \"temperature\": 0}";
    if (http(S.port, "POST", "/v1/chat/completions", NULL, creq, &o) == 200) {
        cJSON *j = cJSON_Parse(o);
        char *p = cJSON_PrintUnformatted(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0));
        ds_sbuf_printf(&all, "%s\n", p);
        free(p), cJSON_Delete(j);
    }
    free(o);
    if (server_stop(&S) != 0) ds_sbuf_puts(&all, "(server exit status not 0)");
    return ds_sbuf_take(&all);
}

TEST(serve_device_resident_fakedev) {
    SETUP("--max-batch 1");
    CHECK(server_stop(&S) == 0);
    char *a = serve_answers(dir, "cpu"), *b = serve_answers(dir, "fakedev");
    CHECK_MSG(a && b && strstr(a, "token_logprobs") && strstr(a, "\"message\"") && !strcmp(a, b),
              "serve: cpu\n%s\nvs fakedev\n%s", a ? a : "(none)", b ? b : "(none)");
    free(a), free(b);
}

/* the same answers with --device cuda: the tokens and text equal, the
 * log-probabilities within 1e-4 (the GPU sums in its own order); skips
 * without a GPU, and tools/cudamock/run.sh runs it over the stand-ins */
TEST(serve_cuda_device_resident) {
    if (!ds_cuda_built()) SKIP("no GPU: this dsv3 was built without CUDA");
    if (ds_cuda_init()) SKIP("no GPU: %s", ds_errmsg());
    SETUP("--max-batch 1");
    CHECK(server_stop(&S) == 0);
    char *a = serve_answers(dir, "cpu"), *b = serve_answers(dir, "cuda"), why[256] = "";
    CHECK_MSG(a && b && strstr(a, "token_logprobs") && ds_test_same_up_to_reals(a, b, 1e-4, why, sizeof why),
              "serve: %s\ncpu\n%s\nvs cuda\n%s", why, a ? a : "(none)", b ? b : "(none)");
    free(a), free(b);
}

TEST(chat_device_resident_fakedev) {
    if (load_ref()) SKIP("no v3 fixture");
    const char *dir = make_model();
    CHECK(dir != NULL);
    if (!dir) return;
    const char *modes[3] = {"", "--temperature 0.9 --top-k 5 --seed 3",
                            "--temperature 0.9 --min-p 0.2 --repetition-penalty 1.3 --frequency-penalty 0.4 --seed 3"};
    for (int i = 0; i < 3; i++) {
        char a[4096], b[4096];
        const char *cmd = "printf 'Hi\\n/reset\\nHo\\n' | $DSV3 chat --model %s --max-new-tokens 8 %s --device %s 2>/dev/null";
        int ra = ds_test_sh(a, sizeof a, cmd, dir, modes[i], "cpu"), rb = ds_test_sh(b, sizeof b, cmd, dir, modes[i], "fakedev");
        CHECK_MSG(ra == 0 && rb == 0 && strlen(a) > 4 && !strcmp(a, b), "chat %s: cpu (rc %d) %s vs fakedev (rc %d) %s", modes[i],
                  ra, ds_quote(a), rb, ds_quote(b));
    }
}

/* ---- tool calls ------------------------------------------------------------------------- */
#define TOOLS_JSON                                                                                                    \
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Current weather in a city.\", " \
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"], " \
    "\"additionalProperties\": false}}}, " \
    "{\"type\": \"function\", \"function\": {\"name\": \"add\"}}]"
#define ASK "\"messages\": [{\"role\": \"user\", \"content\": \"What's the weather in Paris?\"}]"
/* get_weather's parameters as a response_format (a forced call's arguments are held to them), and a bias
 * on '"' (1) and '}' (92) in this folder's byte-level vocabulary so the random model closes them */
#define BIAS_CLOSE ", \"logit_bias\": {\"1\": 4, \"92\": 3}"
#define WEATHER_RF                                                                                                    \
    ", \"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"p\", \"schema\": {\"type\": \"object\", " \
    "\"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"], \"additionalProperties\": false}}}" BIAS_CLOSE

static cJSON *post(int port, const char *path, const char *body, int *status) {
    char *o = NULL;
    *status = http(port, "POST", path, NULL, body, &o);
    cJSON *j = o ? cJSON_Parse(o) : NULL;
    free(o);
    return j;
}

/* the prompt ids /tokenize gives for a body, as a JSON list (malloc'd, or NULL) */
static char *prompt_ids(int port, const char *body) {
    int st;
    cJSON *t = post(port, "/tokenize", body, &st);
    char *ids = st == 200 ? cJSON_PrintUnformatted(cJSON_GetObjectItem(t, "tokens")) : NULL;
    cJSON_Delete(t);
    return ids;
}

/* the text a chat request's prompt holds: /tokenize of the body, /detokenize of its ids (malloc'd, or NULL) */
static char *prompt_text(int port, const char *body) {
    int st;
    char *ids = prompt_ids(port, body);
    if (!ids) return NULL;
    ds_sbuf b = {0};
    ds_sbuf_printf(&b, "{\"tokens\": %s}", ids);
    free(ids);
    cJSON *t = post(port, "/detokenize", b.p, &st);
    free(b.p);
    const cJSON *pt = cJSON_GetObjectItem(t, "prompt");
    char *r = st == 200 && cJSON_IsString(pt) ? ds_strdup(pt->valuestring) : NULL;
    cJSON_Delete(t);
    return r;
}

/* 1 when s ends with tail */
static int ends_with(const char *s, const char *tail) {
    return s && strlen(s) >= strlen(tail) && !strcmp(s + strlen(s) - strlen(tail), tail);
}

/* the greedy completion (max_tokens n; extra: more request members, as
 * ", \"response_format\": ...", or "") of the prompt /tokenize gives for chat
 * fields (ignore_eos: this folder's EOS is the '"' byte, which JSON needs) */
static char *completion_of_chat(int port, const char *fields, int n, const char *extra, char *finish) {
    char req[4096];
    snprintf(req, sizeof req, "{%s}", fields);
    int st;
    char *ids = prompt_ids(port, req);
    if (!ids) return NULL;
    ds_sbuf b = {0};
    ds_sbuf_printf(&b, "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true%s}", ids, n, extra);
    free(ids);
    cJSON *c = post(port, "/v1/completions", b.p, &st);
    free(b.p);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0);
    const cJSON *tx = cJSON_GetObjectItem(ch, "text"), *f = cJSON_GetObjectItem(ch, "finish_reason");
    char *r = st == 200 && cJSON_IsString(tx) ? ds_strdup(tx->valuestring) : NULL;
    if (cJSON_IsString(f)) strcpy(finish, f->valuestring);
    cJSON_Delete(c);
    return r;
}

typedef struct {
    char content[4096], name[4][64], args[4][4096], id[4][64], finish[32];
    int ncalls, content_null, role_first, call_chunks;
} answer;

/* a chat answer, from the response or from the sum of its stream's deltas */
static int chat_answer(int port, const char *fields, int stream, answer *a) {
    memset(a, 0, sizeof *a);
    char req[4096], *o = NULL;
    snprintf(req, sizeof req, "{%s, \"temperature\": 0%s}", fields, stream ? ", \"stream\": true" : "");
    int st = http(port, "POST", "/v1/chat/completions", NULL, req, &o);
    if (st != 200 || !o) {
        free(o);
        return st;
    }
    const char *p = o;
    int nchunks = 0;
    while (stream ? (p = strstr(p, "data: ")) != NULL : nchunks == 0) {
        const char *body = stream ? p + 6 : o, *e = stream ? strstr(body, "\n\n") : o + strlen(o);
        if (!e || !strncmp(body, "[DONE]", 6)) break;
        cJSON *j = cJSON_ParseWithLength(body, (size_t)(e - body));
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        const cJSON *m = cJSON_GetObjectItem(ch, stream ? "delta" : "message"), *f = cJSON_GetObjectItem(ch, "finish_reason");
        const cJSON *c = cJSON_GetObjectItem(m, "content"), *tc;
        if (nchunks == 0) a->role_first = cJSON_IsString(cJSON_GetObjectItem(m, "role"));
        if (cJSON_IsString(c)) strncat(a->content, c->valuestring, sizeof a->content - strlen(a->content) - 1);
        if (!stream) a->content_null = cJSON_IsNull(c);
        int k = 0;
        a->call_chunks += cJSON_GetArraySize(cJSON_GetObjectItem(m, "tool_calls")) > 0;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItem(m, "tool_calls")) {
            const cJSON *ix = cJSON_GetObjectItem(tc, "index"), *fn = cJSON_GetObjectItem(tc, "function");
            int i = stream ? (cJSON_IsNumber(ix) ? ix->valueint : -1) : k++;
            if (i < 0 || i > 3) continue;
            const cJSON *nm = cJSON_GetObjectItem(fn, "name"), *ar = cJSON_GetObjectItem(fn, "arguments"), *id = cJSON_GetObjectItem(tc, "id");
            if (cJSON_IsString(nm)) snprintf(a->name[i], sizeof a->name[i], "%s", nm->valuestring);
            if (cJSON_IsString(ar)) strncat(a->args[i], ar->valuestring, sizeof a->args[i] - strlen(a->args[i]) - 1);
            if (cJSON_IsString(id) && !strcmp(cJSON_GetObjectItem(tc, "type")->valuestring, "function"))
                snprintf(a->id[i], sizeof a->id[i], "%s", id->valuestring);
            if (i + 1 > a->ncalls) a->ncalls = i + 1;
        }
        if (cJSON_IsString(f)) snprintf(a->finish, sizeof a->finish, "%s", f->valuestring);
        cJSON_Delete(j);
        nchunks++;
        if (stream) p = e;
    }
    free(o);
    return st;
}

/* tools on the v3 fixture (DeepSeek-V3's template, so DeepSeek-V3's format):
 * a named tool_choice forces the call's start, and the model's greedy
 * continuation of that prompt (the /v1/completions answer to the same ids)
 * is the call's arguments; "required" forces the marker and, the model
 * writing no call that parses, the answer is that continuation as content;
 * "auto" answers as without tools; streamed answers add up to the same;
 * a conversation holding calls and results renders as transformers renders
 * it; bad tool fields get 400 */
TEST(serve_tool_calls) {
    /* each step's tokens reach a stream on their own (a fast machine would otherwise send a short call's
     * deltas joined, and the streamed-call checks count deltas) */
    setenv("DSV3_SERVE_STEP_DELAY_MS", "2", 1);
    SETUP_IN(make_model_long(), "");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    char finish[32] = "";
    size_t ln;
    char *log = ds_read_file(S.log, &ln);
    CHECK_MSG(log && strstr(log, "tool calls in the deepseek_v3 format (the chat template's"), "%s", log ? log : "");
    free(log);
    /* named */
    const char *named = ASK ", \"tools\": " TOOLS_JSON ", \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}, "
                        "\"ignore_eos\": true" BIAS_CLOSE;
    char fields[4096];
    snprintf(fields, sizeof fields, "%s, \"max_tokens\": 300", named);
    char *want = completion_of_chat(S.port, named, 300, WEATHER_RF, finish);
    CHECK(want && *want && !strcmp(finish, "stop"));
    cJSON *wj = want ? cJSON_Parse(want) : NULL; /* get_weather's parameters: {"city": a string}, nothing else */
    CHECK_MSG(cJSON_IsObject(wj) && cJSON_GetArraySize(wj) == 1 && cJSON_IsString(cJSON_GetObjectItem(wj, "city")), "%s",
              want ? want : "");
    cJSON_Delete(wj);
    answer a, s;
    CHECK(chat_answer(S.port, fields, 0, &a) == 200);
    CHECK_MSG(a.ncalls == 1 && !strcmp(a.name[0], "get_weather") && want && !strcmp(a.args[0], want) && a.content_null &&
                  !strcmp(a.finish, "tool_calls") && !strncmp(a.id[0], "call_", 5),
              "named: %d calls, %s(%s), finish %s; want arguments %s", a.ncalls, a.name[0], a.args[0], a.finish, want ? want : "");
    CHECK(chat_answer(S.port, fields, 1, &s) == 200);
    CHECK_MSG(s.ncalls == 1 && !strcmp(s.name[0], "get_weather") && !strcmp(s.args[0], a.args[0]) && !*s.content &&
                  !strcmp(s.finish, "tool_calls") && s.role_first && *s.id[0] && s.call_chunks > 2,
              "named, streamed: %d calls, %s(%s), content %s, finish %s, %d chunks", s.ncalls, s.name[0], s.args[0], s.content,
              s.finish, s.call_chunks); /* the arguments stream as they grow */
    free(want);
    /* cut short by max_tokens: the generated text is still the arguments */
    snprintf(fields, sizeof fields, "%s, \"max_tokens\": 2", named);
    want = completion_of_chat(S.port, named, 2, WEATHER_RF, finish);
    CHECK(chat_answer(S.port, fields, 0, &a) == 200);
    CHECK_MSG(want && a.ncalls == 1 && !strcmp(a.args[0], want) && !strcmp(a.finish, "length"), "%s / %s", a.args[0], a.finish);
    free(want);
    /* the prompt ends with the forced start */
    int st;
    char req[4096];
    snprintf(req, sizeof req, "{%s}", named);
    char *pt = prompt_text(S.port, req);
    CHECK_MSG(ends_with(pt, "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"),
              "%s", pt ? pt : "");
    free(pt);
    /* required: the guide picks among the tools' names, then holds the arguments to that tool's parameters */
    const char *req_f = ASK ", \"tools\": " TOOLS_JSON ", \"tool_choice\": \"required\", \"ignore_eos\": true" BIAS_CLOSE;
    for (int seed = 0; seed < 3; seed++) {
        snprintf(fields, sizeof fields, "%s, \"max_tokens\": 300, \"seed\": %d%s", req_f, seed, seed ? ", \"temperature\": 1" : "");
        CHECK(chat_answer(S.port, fields, 0, &a) == 200);
        cJSON *aj = a.ncalls == 1 ? cJSON_Parse(a.args[0]) : NULL;
        const int weather = !strcmp(a.name[0], "get_weather"), add = !strcmp(a.name[0], "add");
        CHECK_MSG(a.ncalls == 1 && (weather || add) && cJSON_IsObject(aj) && !strcmp(a.finish, "tool_calls") && a.content_null &&
                      (!weather || (cJSON_GetArraySize(aj) == 1 && cJSON_IsString(cJSON_GetObjectItem(aj, "city")))),
                  "required, seed %d: %d calls, %s(%s), finish %s", seed, a.ncalls, a.name[0], a.args[0], a.finish);
        cJSON_Delete(aj);
        CHECK(chat_answer(S.port, fields, 1, &s) == 200);
        CHECK_MSG(s.ncalls == 1 && !strcmp(s.name[0], a.name[0]) && !strcmp(s.args[0], a.args[0]) && !strcmp(s.finish, "tool_calls") &&
                      !strncmp(s.id[0], "call_", 5) && !*s.content && s.call_chunks > 2,
                  "required, streamed, seed %d: %d calls, %s(%s), finish %s, %d chunks", seed, s.ncalls, s.name[0], s.args[0],
                  s.finish, s.call_chunks); /* the name once its line is whole, then the arguments as they grow */
    }
    /* auto: as without tools (DeepSeek-V3's template does not print them) */
    answer plain;
    CHECK(chat_answer(S.port, ASK ", \"max_tokens\": 10", 0, &plain) == 200);
    CHECK(chat_answer(S.port, ASK ", \"tools\": " TOOLS_JSON ", \"max_tokens\": 10", 0, &a) == 200);
    CHECK(chat_answer(S.port, ASK ", \"tools\": " TOOLS_JSON ", \"tool_choice\": \"auto\", \"max_tokens\": 10", 1, &s) == 200);
    CHECK_MSG(a.ncalls == 0 && s.ncalls == 0 && *plain.content && !strcmp(a.content, plain.content) && !strcmp(s.content, plain.content) &&
                  !strcmp(a.finish, plain.finish) && !strcmp(s.finish, plain.finish),
              "auto: %s / %s, want %s", a.content, s.content, plain.content);
    /* tool_choice none: the same */
    CHECK(chat_answer(S.port, ASK ", \"tools\": " TOOLS_JSON ", \"tool_choice\": \"none\", \"max_tokens\": 10", 0, &a) == 200);
    CHECK(a.ncalls == 0 && !strcmp(a.content, plain.content));
    /* parallel_tool_calls false keeps one call; n > 1 gives each choice its own */
    snprintf(fields, sizeof fields, "%s, \"max_tokens\": 4, \"parallel_tool_calls\": false, \"n\": 2", named);
    CHECK(chat_answer(S.port, fields, 0, &a) == 200 && a.ncalls == 1);
    /* a conversation with calls and results: the fixture's rendering by transformers (less its BOS: this folder has none) */
    size_t fl;
    char *fx = ds_read_file("tests/fixtures/chat/templates.json", &fl);
    cJSON *root = fx ? cJSON_Parse(fx) : NULL, *tmpl;
    free(fx);
    int rendered = 0;
    cJSON_ArrayForEach(tmpl, root) {
        if (strcmp(cJSON_GetObjectItem(tmpl, "name")->valuestring, "deepseek_v3")) continue;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(tmpl, "cases")) {
            const cJSON *msgs = cJSON_GetObjectItem(c, "messages"), *r = cJSON_GetObjectItem(c, "rendered");
            if (!cJSON_GetObjectItem(c, "tools") || !cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")) || !r ||
                !strstr(r->valuestring, "tool▁calls▁begin"))
                continue;
            cJSON *rq = cJSON_CreateObject();
            cJSON_AddItemToObject(rq, "messages", cJSON_Duplicate(msgs, 1));
            cJSON_AddItemToObject(rq, "tools", cJSON_Duplicate(cJSON_GetObjectItem(c, "tools"), 1));
            char *body = cJSON_PrintUnformatted(rq);
            cJSON_Delete(rq);
            pt = prompt_text(S.port, body);
            free(body);
            const char *w = r->valuestring + strlen("<｜begin▁of▁sentence｜>");
            CHECK_MSG(pt && !strcmp(pt, w), "rendered %s, want %s", pt ? pt : "", w);
            free(pt);
            rendered++;
        }
    }
    cJSON_Delete(root);
    CHECK(rendered == 2);
    /* bad tool fields */
    static const struct { const char *body, *want; } bad[] = {
        {ASK ", \"tools\": {}", "'tools' must be a list"},
        {ASK ", \"tools\": [{\"function\": {\"name\": \"f\"}}]", "tools[0] must be an object with"},
        {ASK ", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"\"}}]", "tools[0].function.name must be"},
        {ASK ", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": 3}}]", "parameters must be"},
        {ASK ", \"tools\": " TOOLS_JSON ", \"tool_choice\": \"sometimes\"", "'tool_choice' must be"},
        {ASK ", \"tools\": " TOOLS_JSON ", \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"nope\"}}",
         "names 'nope', which is not one of 'tools'"},
        {ASK ", \"tool_choice\": \"required\"", "needs 'tools'"},
        {ASK ", \"tools\": " TOOLS_JSON ", \"parallel_tool_calls\": 1", "'parallel_tool_calls' must be a boolean"},
        {"\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": 1}}]}]",
         "messages[1].tool_calls[0] must be"},
        {"\"messages\": [{\"role\": \"assistant\", \"tool_calls\": {}}]", "messages[0].tool_calls must be a list"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *o = NULL;
        snprintf(req, sizeof req, "{%s}", bad[i].body);
        st = http(S.port, "POST", "/v1/chat/completions", NULL, req, &o);
        CHECK_MSG(st == 400 && o && strstr(o, bad[i].want), "%s: %d %s", bad[i].body, st, o ? o : "");
        free(o);
    }
    CHECK(healthy(S.port));
    CHECK(server_stop(&S) == 0);
    /* a server that reads no tool calls refuses tools (unless tool_choice is none) */
    CHECK(server_start(&S, dir, "--tool-parser none") == 0);
    char *o = NULL;
    st = http(S.port, "POST", "/v1/chat/completions", NULL, "{" ASK ", \"tools\": " TOOLS_JSON "}", &o);
    CHECK_MSG(st == 400 && o && strstr(o, "reads no tool calls"), "%d %s", st, o ? o : "");
    free(o), o = NULL;
    st = http(S.port, "POST", "/v1/chat/completions", NULL, "{" ASK ", \"tools\": " TOOLS_JSON ", \"tool_choice\": \"none\", \"max_tokens\": 2}", &o);
    CHECK(st == 200);
    free(o);
    CHECK(server_stop(&S) == 0);
}

/* the template of that name in the chat-template fixture, and its case i (or NULL) */
static char *fixture_template(const char *name, cJSON **root) {
    size_t fl;
    char *fx = ds_read_file("tests/fixtures/chat/templates.json", &fl);
    *root = fx ? cJSON_Parse(fx) : NULL;
    free(fx);
    const cJSON *t;
    cJSON_ArrayForEach(t, *root) if (!strcmp(cJSON_GetObjectItem(t, "name")->valuestring, name))
        return ds_strdup(cJSON_GetObjectItem(t, "template")->valuestring);
    return NULL;
}

/* the cases of one template in tests/fixtures/chat/options.json through
 * /tokenize: each rendering (less BOS, which this folder lacks; given as a
 * template variable where the template prints it) is the prompt, and where
 * transformers raised the request gets 400; a case continuing the final
 * message also without add_generation_prompt (the default then flips) */
static int options_cases(int port, const cJSON *tmpl, int add_bos_kw) {
    const char *bos = cJSON_IsString(cJSON_GetObjectItem(tmpl, "bos_token")) ? cJSON_GetObjectItem(tmpl, "bos_token")->valuestring : "";
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(tmpl, "cases")) {
        const cJSON *r = cJSON_GetObjectItem(c, "rendered"), *kw = cJSON_GetObjectItem(c, "chat_template_kwargs");
        const int cfm = cJSON_IsTrue(cJSON_GetObjectItem(c, "continue_final_message"));
        for (int implicit = 0; implicit <= cfm; implicit++) {
            cJSON *rq = cJSON_CreateObject();
            cJSON_AddItemToObject(rq, "messages", cJSON_Duplicate(cJSON_GetObjectItem(c, "messages"), 1));
            if (!implicit) cJSON_AddItemToObject(rq, "add_generation_prompt", cJSON_Duplicate(cJSON_GetObjectItem(c, "add_generation_prompt"), 1));
            cJSON_AddBoolToObject(rq, "continue_final_message", cfm);
            cJSON *k = kw ? cJSON_Duplicate(kw, 1) : cJSON_CreateObject();
            if (add_bos_kw && !cJSON_GetObjectItem(k, "bos_token")) cJSON_AddStringToObject(k, "bos_token", bos);
            cJSON_AddItemToObject(rq, "chat_template_kwargs", k);
            char *body = cJSON_PrintUnformatted(rq);
            cJSON_Delete(rq);
            int st;
            cJSON *t = post(port, "/tokenize", body, &st);
            cJSON_Delete(t);
            if (r) {
                char *pt = prompt_text(port, body);
                const char *w = !add_bos_kw && !strncmp(r->valuestring, bos, strlen(bos)) ? r->valuestring + strlen(bos) : r->valuestring;
                CHECK_MSG(st == 200 && pt && !strcmp(pt, w), "%s: rendered %s, want %s", body, pt ? ds_quote(pt) : "", ds_quote(w));
                free(pt);
            } else if (!implicit) { /* the explicit both-true case: refused; implicit, the default flips */
                CHECK_MSG(st == 400, "%s: %d, want 400 (%s)", body, st, cJSON_GetObjectItem(c, "error")->valuestring);
            }
            free(body);
            n++;
        }
    }
    return n;
}

/* vLLM's chat options: continue_final_message, add_generation_prompt,
 * chat_template_kwargs, against transformers' renderings under DeepSeek-V3's
 * template (this folder's) and a template reading variables (given with
 * --chat-template); a continued answer is the greedy completion of the
 * continued prompt; bad values get 400 */
TEST(serve_chat_template_options) {
    const char *fix = "tests/fixtures/chat/options.json";
    size_t fl;
    char *fx = ds_read_file(fix, &fl);
    cJSON *root = fx ? cJSON_Parse(fx) : NULL;
    free(fx);
    CHECK(root != NULL);
    const cJSON *ds = NULL, *kwt = NULL, *t;
    cJSON_ArrayForEach(t, root) {
        if (!strcmp(cJSON_GetObjectItem(t, "name")->valuestring, "deepseek_v3")) ds = t;
        if (!strcmp(cJSON_GetObjectItem(t, "name")->valuestring, "kwargs")) kwt = t;
    }
    CHECK(ds && kwt);
    if (!ds || !kwt) {
        cJSON_Delete(root);
        return;
    }
    SETUP("");
    CHECK(options_cases(S.port, ds, 0) >= 20);
    /* a continued assistant message: the answer is the continuation, as /v1/completions gives it */
#define CONT "\"messages\": [{\"role\": \"user\", \"content\": \"What is 2+2?\"}, {\"role\": \"assistant\", \"content\": \"The answer is\"}], " \
             "\"continue_final_message\": true, \"add_generation_prompt\": false, \"max_tokens\": 6, \"ignore_eos\": true"
    char finish[32] = "";
    char *want = completion_of_chat(S.port, CONT, 6, "", finish);
    answer a;
    CHECK(chat_answer(S.port, CONT, 0, &a) == 200);
    CHECK_MSG(want && *want && !strcmp(a.content, want), "continued %s, completion %s", ds_quote(a.content), want ? ds_quote(want) : "");
    CHECK(chat_answer(S.port, CONT, 1, &a) == 200 && want && !strcmp(a.content, want));
    free(want);
    static const struct { const char *body, *want; } badopt[] = {
        {ASK ", \"chat_template_kwargs\": 3", "'chat_template_kwargs' must be an object"},
        {ASK ", \"chat_template_kwargs\": {\"messages\": []}", "chat_template_kwargs.messages"},
        {ASK ", \"continue_final_message\": \"yes\"", "'continue_final_message' must be a boolean"},
        {ASK ", \"add_generation_prompt\": 1", "'add_generation_prompt' must be a boolean"},
        {ASK ", \"continue_final_message\": true, \"add_generation_prompt\": true", "cannot both be true"},
        {ASK ", \"continue_final_message\": true, \"tools\": " TOOLS_JSON ", \"tool_choice\": \"required\"", "forced tool call"},
        {"\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": "
         "[{\"id\": \"c\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]}], \"continue_final_message\": true",
         "no \\\"content\\\" to continue"},
    };
    for (size_t i = 0; i < sizeof badopt / sizeof *badopt; i++) {
        char req[4096], *o = NULL;
        snprintf(req, sizeof req, "{%s}", badopt[i].body);
        int st = http(S.port, "POST", "/v1/chat/completions", NULL, req, &o);
        CHECK_MSG(st == 400 && o && strstr(o, badopt[i].want), "%s: %d %s", badopt[i].body, st, o ? o : "");
        free(o);
    }
    CHECK(healthy(S.port));
    CHECK(server_stop(&S) == 0);
    /* a template that reads variables */
    char path[700];
    snprintf(path, sizeof path, "%s/kwargs.jinja", ds_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(cJSON_GetObjectItem(kwt, "template")->valuestring, f) >= 0 && fclose(f) == 0);
    char extra[800];
    snprintf(extra, sizeof extra, "--chat-template %s", path);
    CHECK(server_start(&S, dir, extra) == 0);
    CHECK(options_cases(S.port, kwt, 1) >= 20);
    CHECK(server_stop(&S) == 0);
    cJSON_Delete(root);
}

/* Hermes' format, told from a Qwen2.5-style template given with
 * --chat-template: the tools are in the prompt; a call in the history whose
 * arguments are a JSON string renders as transformers renders the same call
 * with an arguments object (the fixture); a named tool_choice forces
 * <tool_call> {"name": ..., "arguments": and the model's continuation is the
 * arguments */
TEST(serve_tool_calls_hermes) {
    cJSON *root = NULL;
    char *tmpl = fixture_template("qwen25", &root);
    CHECK(tmpl != NULL);
    char path[700];
    snprintf(path, sizeof path, "%s/qwen25.jinja", ds_test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(tmpl ? tmpl : "", f) >= 0 && fclose(f) == 0);
    free(tmpl);
    char extra[800];
    snprintf(extra, sizeof extra, "--chat-template %s", path);
    SETUP_IN(make_model_long(), extra);
    size_t ln;
    char *log = ds_read_file(S.log, &ln);
    CHECK_MSG(log && strstr(log, "tool calls in the hermes format"), "%s", log ? log : "");
    free(log);
    /* the history: the fixture's conversation with an arguments object, sent as OpenAI sends it (a string) */
    const cJSON *t, *c;
    int rendered = 0;
    cJSON_ArrayForEach(t, root) {
        if (strcmp(cJSON_GetObjectItem(t, "name")->valuestring, "qwen25")) continue;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(t, "cases")) {
            const cJSON *r = cJSON_GetObjectItem(c, "rendered");
            if (!cJSON_GetObjectItem(c, "tools") || !cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt")) || !r ||
                !strstr(r->valuestring, "\"arguments\": {\"city\": \"Oslo\""))
                continue;
            cJSON *rq = cJSON_CreateObject(), *msgs = cJSON_Duplicate(cJSON_GetObjectItem(c, "messages"), 1), *m;
            cJSON_ArrayForEach(m, msgs) {
                cJSON *tc;
                cJSON_ArrayForEach(tc, cJSON_GetObjectItem(m, "tool_calls")) {
                    cJSON *fn = cJSON_GetObjectItem(tc, "function");
                    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(fn, "arguments"));
                    cJSON_ReplaceItemInObject(fn, "arguments", cJSON_CreateString(s));
                    free(s);
                }
            }
            cJSON_AddItemToObject(rq, "messages", msgs);
            cJSON_AddItemToObject(rq, "tools", cJSON_Duplicate(cJSON_GetObjectItem(c, "tools"), 1));
            char *body = cJSON_PrintUnformatted(rq);
            cJSON_Delete(rq);
            char *pt = prompt_text(S.port, body);
            free(body);
            CHECK_MSG(pt && !strcmp(pt, r->valuestring), "rendered %s, want %s", pt ? pt : "", r->valuestring);
            free(pt);
            rendered++;
        }
    }
    CHECK(rendered == 1);
    cJSON_Delete(root);
    /* a named call */
    const char *named = "\"messages\": [{\"role\": \"user\", \"content\": \"Oslo?\"}], \"tools\": "
                        "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}], "
                        "\"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}, \"ignore_eos\": true"
                        BIAS_CLOSE;
    char finish[32] = "", fields[2048];
    char *want = completion_of_chat(S.port, named, 300, ", \"response_format\": {\"type\": \"json_object\"}" BIAS_CLOSE, finish);
    snprintf(fields, sizeof fields, "%s, \"max_tokens\": 300", named);
    answer a;
    CHECK(chat_answer(S.port, fields, 0, &a) == 200);
    CHECK_MSG(want && a.ncalls == 1 && !strcmp(a.name[0], "get_weather") && !strcmp(a.args[0], want) && a.content_null &&
                  !strcmp(a.finish, "tool_calls"),
              "%d calls, %s(%s), finish %s, want arguments %s", a.ncalls, a.name[0], a.args[0], a.finish, want ? want : "");
    free(want);
    char req[2048];
    snprintf(req, sizeof req, "{%s}", named);
    char *pt = prompt_text(S.port, req);
    CHECK_MSG(pt && strstr(pt, "<tools>\n{\"type\": \"function\"") &&
                  ends_with(pt, "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "),
              "%s", pt ? pt : "");
    free(pt);
    CHECK(server_stop(&S) == 0);
}

/* the logprobs lists of a completions choice appended to acc's (tokens, token_logprobs, top_logprobs, text_offset) */
static void lp_append(cJSON *acc, const cJSON *lp) {
    static const char *const keys[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    for (int k = 0; k < 4; k++) {
        cJSON *dst = cJSON_GetObjectItem(acc, keys[k]);
        if (!dst) cJSON_AddItemToObject(acc, keys[k], dst = cJSON_CreateArray());
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(lp, keys[k])) cJSON_AddItemToArray(dst, cJSON_Duplicate(x, 1));
    }
}

/* echo with logprobs, streamed: the first chunk holds the prompt and its
 * tokens' log-probabilities (after the prefill), the chunks add up to the
 * unstreamed answer (itself checked against lm-eval's scores above) */
TEST(serve_echo_logprobs_streamed) {
    SETUP("--max-batch 2");
    char pj[512];
    prompt_json(pj, sizeof pj, 12, 0);
    for (int max = 0; max <= 3; max += 3) {
        char req[2048], *o = NULL;
        snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, \"echo\": true, "
                 "\"logprobs\": 2}", pj, max);
        CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
        cJSON *full = cJSON_Parse(o);
        free(o), o = NULL;
        const cJSON *fc = cJSON_GetArrayItem(cJSON_GetObjectItem(full, "choices"), 0);
        const cJSON *flp = cJSON_GetObjectItem(fc, "logprobs");
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(flp, "tokens")) == 12 + max);
        snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, \"echo\": true, "
                 "\"logprobs\": 2, \"stream\": true}", pj, max);
        CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
        cJSON *acc = cJSON_CreateObject();
        ds_sbuf text = {0};
        char finish[32] = "";
        int chunks = 0, first_has_prompt = 0;
        for (const char *p = o ? o : ""; (p = strstr(p, "data: ")) && strncmp(p + 6, "[DONE]", 6); chunks++) {
            const char *e = strstr(p, "\n\n");
            if (!e) break;
            cJSON *j = cJSON_ParseWithLength(p + 6, (size_t)(e - p - 6));
            const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), *lp = cJSON_GetObjectItem(ch, "logprobs");
            const cJSON *tx = cJSON_GetObjectItem(ch, "text"), *fr = cJSON_GetObjectItem(ch, "finish_reason");
            if (chunks == 0) first_has_prompt = cJSON_GetArraySize(cJSON_GetObjectItem(lp, "tokens")) == 12;
            if (cJSON_IsString(tx)) ds_sbuf_puts(&text, tx->valuestring);
            if (cJSON_IsObject(lp)) lp_append(acc, lp);
            if (cJSON_IsString(fr)) snprintf(finish, sizeof finish, "%s", fr->valuestring);
            cJSON_Delete(j);
            p = e;
        }
        const cJSON *ft = cJSON_GetObjectItem(fc, "text");
        CHECK_MSG(first_has_prompt && cJSON_IsString(ft) && text.p && !strcmp(text.p, ft->valuestring), "max_tokens %d: %s", max, o);
        static const char *const keys[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
        for (int k = 0; k < 4; k++) {
            char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(acc, keys[k])), *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(flp, keys[k]));
            CHECK_MSG(a && b && !strcmp(a, b), "max_tokens %d, %s: streamed %s, whole %s", max, keys[k], a ? a : "", b ? b : "");
            free(a), free(b);
        }
        CHECK(!strcmp(finish, "length"));
        free(text.p), free(o);
        cJSON_Delete(acc), cJSON_Delete(full);
    }
    CHECK(server_stop(&S) == 0);
}

/* response_format json_object: every answer (greedy and sampled, chat and
 * completions, streamed or not) is text cJSON reads as one object, ended by
 * the EOS (or, with ignore_eos, by the closing brace itself); bad formats 400 */
TEST(serve_json_object) {
    SETUP_IN(make_model_long(), "");
    int st;
    /* this folder's EOS (1) is a byte token ('"'): the requests ignore it and end, where they do, with the
     * token of byte 0xFF (never in UTF-8 text, so never inside the object) as a stop id; a bias on '"' and
     * '}' lets the random model close its strings and objects within max_tokens */
    char path[800];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ds_tokenizer *tok = ds_tokenizer_load(path);
    int ff = -1, quote = -1, brace = -1;
    for (int32_t i = 0; tok && i < 256; i++) {
        size_t len = 0;
        const char *b = ds_tokenizer_token_bytes(tok, i, &len);
        if (b && len == 1 && (unsigned char)b[0] == 0xFF) ff = i;
        if (b && len == 1 && b[0] == '"') quote = i;
        if (b && len == 1 && b[0] == '}') brace = i;
    }
    ds_tokenizer_free(tok);
    CHECK(ff >= 0 && quote >= 0 && brace >= 0);
    char bias[96];
    snprintf(bias, sizeof bias, "\"logit_bias\": {\"%d\": 4, \"%d\": 3}", quote, brace);
    for (int k = 0; k < 6; k++) {
        const int chat = k % 2;
        char req[1024], stop[160];
        snprintf(stop, sizeof stop, ", %s", bias);
        if (k < 4) snprintf(stop + strlen(stop), sizeof stop - strlen(stop), ", \"stop_token_ids\": [%d]", ff);
        snprintf(req, sizeof req, "{%s, \"max_tokens\": 400, \"temperature\": %s, \"seed\": %d, \"return_token_ids\": true, "
                 "\"response_format\": {\"type\": \"json_object\"}, \"ignore_eos\": true%s}",
                 chat ? "\"messages\": [{\"role\": \"user\", \"content\": \"Reply in JSON.\"}]" : "\"prompt\": \"JSON: \"",
                 k < 2 ? "0" : "1.2", k, stop);
        cJSON *j = post(S.port, chat ? "/v1/chat/completions" : "/v1/completions", req, &st);
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        const cJSON *tx = chat ? cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "content") : cJSON_GetObjectItem(ch, "text");
        const cJSON *ids = cJSON_GetObjectItem(ch, "token_ids"), *fr = cJSON_GetObjectItem(ch, "finish_reason");
        cJSON *obj = cJSON_IsString(tx) ? cJSON_Parse(tx->valuestring) : NULL;
        const int n = cJSON_GetArraySize(ids), last = n ? cJSON_GetArrayItem(ids, n - 1)->valueint : -1;
        CHECK_MSG(st == 200 && cJSON_IsObject(obj) && cJSON_IsString(fr) && !strcmp(fr->valuestring, "stop") &&
                      (k >= 4 ? last != ff : last == ff),
                  "case %d: %d, %s, finish %s, last id %d", k, st, cJSON_IsString(tx) ? tx->valuestring : "", 
                  cJSON_IsString(fr) ? fr->valuestring : "", last);
        cJSON_Delete(obj), cJSON_Delete(j);
    }
    /* greedy, streamed: the same answer */
    answer a, s;
    char f[512];
    snprintf(f, sizeof f, "\"messages\": [{\"role\": \"user\", \"content\": \"Reply in JSON.\"}], \"max_tokens\": 400, "
             "\"ignore_eos\": true, \"response_format\": {\"type\": \"json_object\"}, %s", bias);
    CHECK(chat_answer(S.port, f, 0, &a) == 200 && chat_answer(S.port, f, 1, &s) == 200);
    CHECK_MSG(*a.content && !strcmp(a.content, s.content) && !strcmp(a.finish, s.finish), "%s / %s", a.content, s.content);
    /* json_schema: the answers satisfy it (checked here by hand: the keys, their types, the enum, required) */
    const char *sch = "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"w\", \"strict\": true, \"schema\": "
                      "{\"type\": \"object\", \"properties\": {\"unit\": {\"enum\": [\"C\", \"F\", 7]}, \"n\": {\"type\": "
                      "\"integer\"}, \"ok\": {\"type\": \"boolean\"}}, \"required\": [\"unit\", \"ok\"], \"additionalProperties\": false}}}";
    for (int k = 0; k < 5; k++) {
        char req[1400];
        snprintf(req, sizeof req, "{\"prompt\": \"JSON: \", \"max_tokens\": 300, \"temperature\": %s, \"seed\": %d, "
                 "\"ignore_eos\": true, \"response_format\": %s, %s}", k ? "1.0" : "0", k, sch, bias);
        cJSON *j = post(S.port, "/v1/completions", req, &st);
        const cJSON *tx = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "text");
        cJSON *o = cJSON_IsString(tx) ? cJSON_Parse(tx->valuestring) : NULL;
        const cJSON *u = cJSON_GetObjectItem(o, "unit"), *nn = cJSON_GetObjectItem(o, "n"), *ok = cJSON_GetObjectItem(o, "ok");
        int keys = 0, good = cJSON_IsObject(o) && cJSON_IsBool(ok) &&
                             ((cJSON_IsString(u) && (!strcmp(u->valuestring, "C") || !strcmp(u->valuestring, "F"))) ||
                              (cJSON_IsNumber(u) && u->valuedouble == 7)) &&
                             (!nn || (cJSON_IsNumber(nn) && floor(nn->valuedouble) == nn->valuedouble));
        const cJSON *x;
        cJSON_ArrayForEach(x, o) keys++;
        CHECK_MSG(st == 200 && good && keys == 2 + (nn != NULL), "json_schema case %d: %s", k, cJSON_IsString(tx) ? tx->valuestring : "");
        cJSON_Delete(o), cJSON_Delete(j);
    }
    static const struct { const char *rf, *want; } bad[] = {
        {"\"json\"", "'response_format' must be"},
        {"{\"type\": \"json_schema\", \"json_schema\": {}}", "needs {"},
        {"{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": {\"properties\": {\"a\": {\"contains\": {}}}}}}",
         "properties.a: 'contains' is not supported"},
        {"{\"type\": \"yaml\"}", "unknown type 'yaml'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char req[512], *o = NULL;
        snprintf(req, sizeof req, "{\"prompt\": \"x\", \"response_format\": %s}", bad[i].rf);
        st = http(S.port, "POST", "/v1/completions", NULL, req, &o);
        CHECK_MSG(st == 400 && o && strstr(o, bad[i].want), "%s: %d %s", bad[i].rf, st, o ? o : "");
        free(o);
    }
    CHECK(server_stop(&S) == 0);
}

/* the answer of a request (completions, or chat when the body has "messages"): its text, finish reason */
static char *answer_text(int port, const char *body, int *status, char *finish) {
    const int chat = strstr(body, "\"messages\"") != NULL;
    cJSON *j = post(port, chat ? "/v1/chat/completions" : "/v1/completions", body, status);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *tx = chat ? cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "content") : cJSON_GetObjectItem(ch, "text");
    const cJSON *fr = cJSON_GetObjectItem(ch, "finish_reason");
    snprintf(finish, 32, "%s", cJSON_IsString(fr) ? fr->valuestring : "");
    char *s = ds_strdup(cJSON_IsString(tx) ? tx->valuestring : "(none)");
    cJSON_Delete(j);
    return s;
}

/* "[0-9]{3}-[a-z]{2}( ok)?" as a whole, checked by hand */
static int code_ok(const char *a) {
    const size_t n = strlen(a);
    int ok = n == 6 || (n == 9 && !strcmp(a + 6, " ok"));
    for (int i = 0; i < 6 && ok; i++) ok = i < 3 ? a[i] >= '0' && a[i] <= '9' : i == 3 ? a[i] == '-' : a[i] >= 'a' && a[i] <= 'z';
    return ok;
}

/* vLLM's guided decoding: guided_regex / guided_choice / guided_json and structured_outputs hold the whole
 * answer (greedy and sampled, chat and completions, streamed or not); a stop id may end it where the regex
 * matches, and without one it goes on until nothing can follow; bad requests 400 */
TEST(serve_guided_regex) {
    SETUP_IN(make_model_long(), "");
    int st;
    char path[800], finish[32];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ds_tokenizer *tok = ds_tokenizer_load(path);
    int ff = -1; /* the token of byte 0xFF (never in UTF-8 text) as the stop id; this folder's EOS is the byte '"' */
    for (int32_t i = 0; tok && i < 256; i++) {
        size_t len = 0;
        const char *b = ds_tokenizer_token_bytes(tok, i, &len);
        if (b && len == 1 && (unsigned char)b[0] == 0xFF) ff = i;
    }
    ds_tokenizer_free(tok);
    CHECK(ff >= 0);
    int took_ok[2] = {0, 0};
    for (int k = 0; k < 8; k++) {
        const int chat = k % 2, stop = k < 4;
        char req[1024], stops[64] = "";
        if (stop) snprintf(stops, sizeof stops, ", \"stop_token_ids\": [%d]", ff);
        snprintf(req, sizeof req, "{%s, \"max_tokens\": 40, \"temperature\": %s, \"seed\": %d, \"ignore_eos\": true, "
                 "\"%s\": \"[0-9]{3}-[a-z]{2}( ok)?\"%s%s}",
                 chat ? "\"messages\": [{\"role\": \"user\", \"content\": \"A code?\"}]" : "\"prompt\": \"Code: \"", k ? "1.0" : "0", k,
                 k == 2 ? "structured_outputs\": {\"regex" : "guided_regex", k == 2 ? "}" : "", stops);
        char *a = answer_text(S.port, req, &st, finish);
        CHECK_MSG(st == 200 && code_ok(a) && !strcmp(finish, "stop"), "case %d: %d %s (%s)", k, st, ds_quote(a), finish);
        took_ok[!stop] += strlen(a) == 9;
        free(a);
    }
    CHECK_MSG(took_ok[1] == 4, "without a stop id the answer goes on until nothing can follow: %d of 4 took ' ok'", took_ok[1]);
    /* greedy, streamed: the same answer */
    answer x, y;
    const char *f = "\"messages\": [{\"role\": \"user\", \"content\": \"A code?\"}], \"max_tokens\": 40, \"ignore_eos\": true, "
                    "\"guided_regex\": \"[0-9]{3}-[a-z]{2}( ok)?\"";
    CHECK(chat_answer(S.port, f, 0, &x) == 200 && chat_answer(S.port, f, 1, &y) == 200);
    CHECK_MSG(code_ok(x.content) && !strcmp(x.content, y.content), "%s / %s", x.content, y.content);
    /* choices (escaped: '.' and '|' are themselves), and guided_json */
    static const char *const choice[] = {"\"guided_choice\": [\"Paris\", \"Lyon\", \"a.b\", \"c|d\"]",
                                         "\"structured_outputs\": {\"choice\": [\"Paris\", \"Lyon\", \"a.b\", \"c|d\"]}"};
    for (int k = 0; k < 6; k++) {
        char req[1024];
        snprintf(req, sizeof req, "{%s, \"max_tokens\": 20, \"temperature\": 1.5, \"seed\": %d, \"ignore_eos\": true, %s}",
                 k % 2 ? "\"messages\": [{\"role\": \"user\", \"content\": \"Where?\"}]" : "\"prompt\": \"Where: \"", k, choice[k % 2]);
        char *a = answer_text(S.port, req, &st, finish);
        CHECK_MSG(st == 200 && (!strcmp(a, "Paris") || !strcmp(a, "Lyon") || !strcmp(a, "a.b") || !strcmp(a, "c|d")),
                  "choice %d: %d %s", k, st, ds_quote(a));
        free(a);
    }
    char *a = answer_text(S.port, "{\"prompt\": \"J: \", \"max_tokens\": 60, \"ignore_eos\": true, \"logit_bias\": {\"0\": -100}, "
                          "\"guided_json\": {\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\", \"minimum\": 1, "
                          "\"maximum\": 9}}, \"required\": [\"n\"], \"additionalProperties\": false}}", &st, finish);
    cJSON *o = cJSON_Parse(a);
    const cJSON *nn = cJSON_GetObjectItem(o, "n");
    CHECK_MSG(st == 200 && cJSON_GetArraySize(o) == 1 && cJSON_IsNumber(nn) && nn->valuedouble >= 1 && nn->valuedouble <= 9,
              "guided_json: %d %s", st, ds_quote(a));
    cJSON_Delete(o), free(a);
    static const struct { const char *f, *want; } bad[] = {
        {"\"guided_regex\": \"(a\"", "'guided_regex': regex: missing ), unterminated subpattern at offset 2"},
        {"\"guided_regex\": 5", "'guided_regex' must be a string"},
        {"\"guided_choice\": []", "'guided_choice' must be a non-empty list of strings"},
        {"\"guided_choice\": [\"a\", 1]", "'guided_choice'[1] must be a string, got number"},
        {"\"guided_regex\": \"a\", \"guided_choice\": [\"b\"]", "give one of"},
        {"\"guided_regex\": \"a\", \"response_format\": {\"type\": \"json_object\"}", "give one of"},
        {"\"structured_outputs\": {\"grammar\": \"root ::= x\"}", "'structured_outputs.grammar' is not supported"},
        {"\"structured_outputs\": 3", "'structured_outputs' must be an object"},
        {"\"guided_json\": {\"type\": \"object\", \"properties\": {\"a\": {\"contains\": {}}}}", "'contains' is not supported"},
        {"\"guided_regex\": \"[ab]*a[ab]{12}\"", "more than 4096 DFA states"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char req[512], *out = NULL;
        snprintf(req, sizeof req, "{\"prompt\": \"x\", %s}", bad[i].f);
        st = http(S.port, "POST", "/v1/completions", NULL, req, &out);
        CHECK_MSG(st == 400 && out && strstr(out, bad[i].want), "%s: %d %s", bad[i].f, st, out ? out : "");
        free(out);
    }
    CHECK(server_stop(&S) == 0);
}

/* ---- the Responses API -------------------------------------------------------------------- */
typedef struct {
    char text[4096], status[32], name[64], args[1024], fc_type[32];
    int input_tokens, output_tokens, nitems, events, seq_ok, deltas, arg_deltas;
} resp_answer;

/* POST /v1/responses {fields} (streamed or not): the output text, status, a function call, usage; streamed, from
 * the events (text: the output_text deltas joined; args: the arguments deltas joined; the final response's usage) */
static int responses_of(int port, const char *fields, int stream, resp_answer *a) {
    memset(a, 0, sizeof *a);
    char req[8192], *o = NULL;
    snprintf(req, sizeof req, "{%s%s}", fields, stream ? ", \"stream\": true" : "");
    int st = http(port, "POST", "/v1/responses", NULL, req, &o);
    if (st != 200 || !o) {
        free(o);
        return st;
    }
    cJSON *final = NULL;
    if (!stream) {
        final = cJSON_Parse(o);
    } else {
        a->seq_ok = 1;
        const char *last = "";
        for (const char *p = o; (p = strstr(p, "data: ")); ) {
            const char *e = strstr(p, "\n\n");
            if (!e) break;
            cJSON *ev = cJSON_ParseWithLength(p + 6, (size_t)(e - p - 6));
            const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "type"));
            a->seq_ok &= ty && cJSON_GetObjectItem(ev, "sequence_number")->valueint == a->events;
            if (a->events == 0) a->seq_ok &= ty && !strcmp(ty, "response.created");
            if (ty && !strcmp(ty, "response.output_text.delta"))
                strncat(a->text, cJSON_GetStringValue(cJSON_GetObjectItem(ev, "delta")), sizeof a->text - strlen(a->text) - 1), a->deltas++;
            if (ty && !strcmp(ty, "response.function_call_arguments.delta"))
                strncat(a->args, cJSON_GetStringValue(cJSON_GetObjectItem(ev, "delta")), sizeof a->args - strlen(a->args) - 1), a->arg_deltas++;
            if (ty && (!strcmp(ty, "response.completed") || !strcmp(ty, "response.incomplete"))) {
                cJSON_Delete(final);
                final = cJSON_Duplicate(cJSON_GetObjectItem(ev, "response"), 1);
            }
            last = ty ? (strcmp(ty, "response.completed") ? "other" : "completed") : "";
            a->events++;
            cJSON_Delete(ev);
            p = e;
        }
        a->seq_ok &= final != NULL && (!strcmp(last, "completed") || !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(final, "status")), "incomplete"));
    }
    const cJSON *out = cJSON_GetObjectItem(final, "output"), *it;
    snprintf(a->status, sizeof a->status, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(final, "status")) ? cJSON_GetStringValue(cJSON_GetObjectItem(final, "status")) : "");
    cJSON_ArrayForEach(it, out) {
        const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(it, "type"));
        a->nitems++;
        if (ty && !strcmp(ty, "message") && !stream) {
            const cJSON *part = cJSON_GetArrayItem(cJSON_GetObjectItem(it, "content"), 0);
            snprintf(a->text, sizeof a->text, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(part, "text")));
        }
        if (ty && !strcmp(ty, "function_call")) {
            snprintf(a->fc_type, sizeof a->fc_type, "%s", ty);
            snprintf(a->name, sizeof a->name, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(it, "name")));
            if (!stream) snprintf(a->args, sizeof a->args, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(it, "arguments")));
            else if (strcmp(a->args, cJSON_GetStringValue(cJSON_GetObjectItem(it, "arguments")))) a->seq_ok = 0;
        }
    }
    const cJSON *u = cJSON_GetObjectItem(final, "usage");
    a->input_tokens = cJSON_GetObjectItem(u, "input_tokens") ? cJSON_GetObjectItem(u, "input_tokens")->valueint : -1;
    a->output_tokens = cJSON_GetObjectItem(u, "output_tokens") ? cJSON_GetObjectItem(u, "output_tokens")->valueint : -1;
    cJSON_Delete(final);
    free(o);
    return st;
}

/* the chat request's usage.prompt_tokens and completion_tokens */
static void chat_usage(int port, const char *fields, int *prompt, int *completion) {
    char req[8192];
    snprintf(req, sizeof req, "{%s}", fields);
    int st;
    cJSON *j = post(port, "/v1/chat/completions", req, &st);
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    *prompt = st == 200 ? cJSON_GetObjectItem(u, "prompt_tokens")->valueint : -1;
    *completion = st == 200 ? cJSON_GetObjectItem(u, "completion_tokens")->valueint : -1;
    cJSON_Delete(j);
}

/* POST /v1/responses answers as chat completions does for the conversation it amounts to (instructions as
 * the system turn, input items as messages, function_call / function_call_output items as the assistant's
 * tool_calls and tool turns, flat function tools, text.format as response_format): the same greedy text and
 * calls, the same token counts; streamed, the events add up to the same and end with response.completed;
 * bad requests 400 with the field */
/* the Responses API's output_text logprobs (include message.output_text.logprobs, top_logprobs): the
 * entries of chat's logprobs.content for the same conversation; streamed, the deltas' logprobs joined,
 * the text's done event and the completed response's item hold them too; without asking: [] */
TEST(serve_responses_logprobs) {
    SETUP_IN(make_model_long(), "--no-prefix-cache"); /* every prompt prefilled whole: the same numbers each time */
    int st;
    cJSON *c = post(S.port, "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 6, "
                    "\"temperature\": 0, \"logprobs\": true, \"top_logprobs\": 2}", &st);
    const cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0), "logprobs"), "content");
    char *want = st == 200 && cJSON_GetArraySize(lc) == 6 ? cJSON_PrintUnformatted(lc) : NULL;
    CHECK_MSG(want != NULL, "chat: %d", st);
    cJSON_Delete(c);
    const char *rq = "{\"input\": \"Hi\", \"max_output_tokens\": 6, \"temperature\": 0, \"include\": [\"message.output_text.logprobs\"], "
                     "\"top_logprobs\": 2%s}";
    char body[512];
    snprintf(body, sizeof body, rq, "");
    cJSON *r = post(S.port, "/v1/responses", body, &st);
    const cJSON *part = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "output"), 0), "content"), 0);
    char *got = cJSON_PrintUnformatted(cJSON_GetObjectItem(part, "logprobs"));
    CHECK_MSG(st == 200 && want && got && !strcmp(got, want), "responses logprobs %s, chat %s", got ? got : "", want ? want : "");
    free(got);
    cJSON_Delete(r);
    /* streamed */
    snprintf(body, sizeof body, rq, ", \"stream\": true");
    char *o = NULL;
    CHECK(http(S.port, "POST", "/v1/responses", NULL, body, &o) == 200);
    cJSON *joined = cJSON_CreateArray();
    char *done = NULL, *completed = NULL;
    for (const char *p = o; p && (p = strstr(p, "data: {")) != NULL; p += 6) {
        const char *e = strstr(p, "\n\n");
        cJSON *ev = e ? cJSON_ParseWithLength(p + 6, (size_t)(e - p - 6)) : NULL;
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "type"));
        const cJSON *lp = cJSON_GetObjectItem(ev, "logprobs"), *x;
        if (type && !strcmp(type, "response.output_text.delta")) cJSON_ArrayForEach(x, lp) cJSON_AddItemToArray(joined, cJSON_Duplicate(x, 1));
        if (type && !strcmp(type, "response.output_text.done")) done = cJSON_PrintUnformatted(lp);
        if (type && (!strcmp(type, "response.completed") || !strcmp(type, "response.incomplete"))) {
            const cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "response"), "output"), 0);
            completed = cJSON_PrintUnformatted(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(it, "content"), 0), "logprobs"));
        }
        cJSON_Delete(ev);
    }
    free(o);
    char *j = cJSON_PrintUnformatted(joined);
    cJSON_Delete(joined);
    CHECK_MSG(want && j && !strcmp(j, want), "streamed deltas' logprobs %s, want %s", j ? j : "", want ? want : "");
    CHECK_MSG(want && done && completed && !strcmp(done, want) && !strcmp(completed, want), "done %s, completed %s", done ? done : "",
              completed ? completed : "");
    free(j), free(done), free(completed);
    free(want);
    /* not asked: [] */
    r = post(S.port, "/v1/responses", "{\"input\": \"Hi\", \"max_output_tokens\": 3}", &st);
    part = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "output"), 0), "content"), 0);
    CHECK(st == 200 && cJSON_IsArray(cJSON_GetObjectItem(part, "logprobs")) && cJSON_GetArraySize(cJSON_GetObjectItem(part, "logprobs")) == 0);
    cJSON_Delete(r);
    static const struct { const char *body, *want; } bad[] = {
        {"{\"input\": \"Hi\", \"include\": 3}", "'include' must be a list of strings"},
        {"{\"input\": \"Hi\", \"include\": [1]}", "'include' must be a list of strings"},
        {"{\"input\": \"Hi\", \"top_logprobs\": 21}", "top_logprobs"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        o = NULL;
        st = http(S.port, "POST", "/v1/responses", NULL, bad[i].body, &o);
        CHECK_MSG(st == 400 && o && strstr(o, bad[i].want), "%s: %d %s", bad[i].body, st, o ? o : "");
        free(o);
    }
    CHECK(server_stop(&S) == 0);
}

TEST(serve_responses_api) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "2", 1); /* each step's tokens reach a stream on their own (deltas are counted) */
    SETUP_IN(make_model_long(), "");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    answer c;
    resp_answer r, s;
    int cp, cc;
    /* text, with instructions; cut by max_output_tokens: incomplete */
    CHECK(chat_answer(S.port, "\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], "
                      "\"max_tokens\": 6", 0, &c) == 200);
    chat_usage(S.port, "\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], "
               "\"max_tokens\": 6, \"temperature\": 0", &cp, &cc);
    const char *f1 = "\"instructions\": \"Be brief.\", \"input\": \"Hi\", \"max_output_tokens\": 6, \"temperature\": 0";
    CHECK(responses_of(S.port, f1, 0, &r) == 200 && responses_of(S.port, f1, 1, &s) == 200);
    CHECK_MSG(!strcmp(r.text, c.content) && !strcmp(r.status, strcmp(c.finish, "length") ? "completed" : "incomplete") &&
                  r.input_tokens == cp && r.output_tokens == cc && r.nitems == 1,
              "text: %s (%s, %d + %d tokens), chat %s (%s, %d + %d)", r.text, r.status, r.input_tokens, r.output_tokens, c.content,
              c.finish, cp, cc);
    CHECK_MSG(!strcmp(s.text, r.text) && !strcmp(s.status, r.status) && s.seq_ok && s.deltas >= 1 && s.input_tokens == cp,
              "streamed: %s (%s), %d events, order %d, %d deltas, %d tokens; want %s, %d tokens", s.text, s.status, s.events, s.seq_ok, s.deltas, s.input_tokens, r.text, cp);
    /* a conversation of items: parts, a call and its output */
    const char *chat_conv =
        "\"messages\": [{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, {\"role\": \"assistant\", \"content\": null, "
        "\"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": "
        "\"{\\\"city\\\": \\\"Paris\\\"}\"}}]}, {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"12C\"}], "
        "\"tools\": " TOOLS_JSON ", \"max_tokens\": 5, \"temperature\": 0";
    const char *resp_conv =
        "\"input\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_text\", \"text\": \"Weather in Paris?\"}]}, "
        "{\"type\": \"function_call\", \"call_id\": \"call_1\", \"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}, "
        "{\"type\": \"function_call_output\", \"call_id\": \"call_1\", \"output\": \"12C\"}], \"tools\": [{\"type\": \"function\", "
        "\"name\": \"get_weather\", \"description\": \"Current weather in a city.\", \"parameters\": {\"type\": \"object\", "
        "\"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"], \"additionalProperties\": false}}, "
        "{\"type\": \"function\", \"name\": \"add\"}], \"max_output_tokens\": 5, \"temperature\": 0";
    chat_usage(S.port, chat_conv, &cp, &cc);
    CHECK(chat_answer(S.port, chat_conv, 0, &c) == 200);
    CHECK(responses_of(S.port, resp_conv, 0, &r) == 200);
    CHECK_MSG(cp > 40 && r.input_tokens == cp && !strcmp(r.text, c.content), "items: %d input tokens, chat %d; %s / %s", r.input_tokens,
              cp, r.text, c.content);
    /* tool_choice required: a function_call item, the call chat makes; streamed, its arguments in deltas */
    char f2[4096], f3[4096];
    snprintf(f2, sizeof f2, "%s, \"tool_choice\": \"required\", \"ignore_eos\": true, \"max_tokens\": 300" BIAS_CLOSE, ASK ", \"tools\": " TOOLS_JSON);
    CHECK(chat_answer(S.port, f2, 0, &c) == 200);
    snprintf(f3, sizeof f3, "\"input\": \"What's the weather in Paris?\", \"tools\": [{\"type\": \"function\", \"name\": \"get_weather\", "
             "\"description\": \"Current weather in a city.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": "
             "{\"type\": \"string\"}}, \"required\": [\"city\"], \"additionalProperties\": false}}, {\"type\": \"function\", \"name\": "
             "\"add\"}], \"tool_choice\": \"required\", \"ignore_eos\": true, \"max_output_tokens\": 300, \"temperature\": 0" BIAS_CLOSE);
    CHECK(responses_of(S.port, f3, 0, &r) == 200 && responses_of(S.port, f3, 1, &s) == 200);
    CHECK_MSG(c.ncalls == 1 && r.nitems == 1 && !strcmp(r.fc_type, "function_call") && !strcmp(r.name, c.name[0]) &&
                  !strcmp(r.args, c.args[0]) && !strcmp(r.status, "completed"),
              "required: %s(%s) %s, chat %s(%s)", r.name, r.args, r.status, c.name[0], c.args[0]);
    CHECK_MSG(!strcmp(s.name, r.name) && !strcmp(s.args, r.args) && s.arg_deltas > 1 && s.seq_ok, "required, streamed: %s(%s), %d deltas",
              s.name, s.args, s.arg_deltas);
    /* text.format json_schema: response_format's answer */
    snprintf(f2, sizeof f2, "\"messages\": [{\"role\": \"user\", \"content\": \"JSON?\"}], \"max_tokens\": 300, \"ignore_eos\": true, "
             "\"temperature\": 0" WEATHER_RF);
    CHECK(chat_answer(S.port, f2, 0, &c) == 200);
    CHECK(responses_of(S.port, "\"input\": \"JSON?\", \"max_output_tokens\": 300, \"ignore_eos\": true, \"temperature\": 0, \"text\": "
                       "{\"format\": {\"type\": \"json_schema\", \"name\": \"p\", \"schema\": {\"type\": \"object\", \"properties\": "
                       "{\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"], \"additionalProperties\": false}}}" BIAS_CLOSE, 0, &r) == 200);
    cJSON *o = cJSON_Parse(r.text);
    CHECK_MSG(cJSON_IsString(cJSON_GetObjectItem(o, "city")) && !strcmp(r.text, c.content), "json_schema: %s / %s", r.text, c.content);
    cJSON_Delete(o);
    /* kept responses: previous_response_id puts the kept conversation first, as sending it whole does; GET and DELETE */
    char id1[64], body[4096], *o1 = NULL;
    int st1 = http(S.port, "POST", "/v1/responses", NULL, "{\"instructions\": \"Be brief.\", \"input\": \"Hi\", \"max_output_tokens\": 6, "
                   "\"temperature\": 0}", &o1);
    cJSON *j1 = st1 == 200 ? cJSON_Parse(o1) : NULL;
    snprintf(id1, sizeof id1, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(j1, "id")) ? cJSON_GetStringValue(cJSON_GetObjectItem(j1, "id")) : "");
    const char *t1 = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j1, "output"), 0), "content"), 0), "text"));
    CHECK(st1 == 200 && !strncmp(id1, "resp_", 5) && t1);
    cJSON *t1j = cJSON_CreateString(t1 ? t1 : "");
    char *t1q = cJSON_PrintUnformatted(t1j);
    snprintf(body, sizeof body, "\"instructions\": \"Be brief.\", \"previous_response_id\": \"%s\", \"input\": \"More?\", "
             "\"max_output_tokens\": 6, \"temperature\": 0", id1);
    resp_answer chained, whole;
    CHECK(responses_of(S.port, body, 0, &chained) == 200);
    snprintf(body, sizeof body, "\"instructions\": \"Be brief.\", \"input\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": "
             "\"assistant\", \"content\": [{\"type\": \"output_text\", \"text\": %s}]}, {\"role\": \"user\", \"content\": \"More?\"}], "
             "\"max_output_tokens\": 6, \"temperature\": 0", t1q);
    CHECK(responses_of(S.port, body, 0, &whole) == 200);
    CHECK_MSG(chained.input_tokens == whole.input_tokens && chained.input_tokens > 60 && !strcmp(chained.text, whole.text),
              "chained: %d tokens, %s; whole: %d, %s", chained.input_tokens, chained.text, whole.input_tokens, whole.text);
    free(t1q), cJSON_Delete(t1j);
    char path[128], *got = NULL;
    snprintf(path, sizeof path, "/v1/responses/%s", id1);
    CHECK(http(S.port, "GET", path, NULL, NULL, &got) == 200 && got && !strncmp(got, o1, strlen(o1) - 1));
    free(got), got = NULL;
    CHECK(http(S.port, "DELETE", path, NULL, NULL, &got) == 200 && got && strstr(got, "\"deleted\": true"));
    free(got), got = NULL;
    CHECK(http(S.port, "GET", path, NULL, NULL, &got) == 404);
    free(got), got = NULL;
    snprintf(body, sizeof body, "{\"previous_response_id\": \"%s\", \"input\": \"x\"}", id1);
    CHECK(http(S.port, "POST", "/v1/responses", NULL, body, &got) == 404 && got && strstr(got, "\"param\": \"previous_response_id\""));
    free(got), got = NULL;
    cJSON_Delete(j1), free(o1), o1 = NULL;
    /* a call kept, then its output sent back on it: as the whole conversation with the call */
    CHECK(http(S.port, "POST", "/v1/responses", NULL, "{\"input\": \"Hi\", \"max_output_tokens\": 2, \"store\": false}", &o1) == 200);
    j1 = cJSON_Parse(o1);
    snprintf(path, sizeof path, "/v1/responses/%s", cJSON_GetStringValue(cJSON_GetObjectItem(j1, "id")));
    CHECK(http(S.port, "GET", path, NULL, NULL, &got) == 404); /* store: false */
    free(got), got = NULL;
    cJSON_Delete(j1), free(o1), o1 = NULL;
    snprintf(body, sizeof body, "{%s, \"stream\": true}", f3);
    CHECK(http(S.port, "POST", "/v1/responses", NULL, body, &o1) == 200 && o1);
    const char *idp = o1 ? strstr(o1, "\"id\": \"resp_") : NULL;
    char id3[64] = "";
    if (idp) snprintf(id3, sizeof id3, "%.*s", 21, idp + 7); /* resp_ and 16 hex digits */
    free(o1), o1 = NULL;
    snprintf(path, sizeof path, "/v1/responses/%s", id3);
    CHECK(http(S.port, "GET", path, NULL, NULL, &got) == 200); /* a streamed answer is kept too */
    cJSON *j3 = got ? cJSON_Parse(got) : NULL;
    const cJSON *fc = cJSON_GetArrayItem(cJSON_GetObjectItem(j3, "output"), 0);
    const char *cid = cJSON_GetStringValue(cJSON_GetObjectItem(fc, "call_id")), *fargs = cJSON_GetStringValue(cJSON_GetObjectItem(fc, "arguments"));
    CHECK(cid && fargs && !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(fc, "type")), "function_call"));
    free(got), got = NULL;
    if (cid && fargs) {
        cJSON *aj = cJSON_CreateString(fargs);
        char *aq = cJSON_PrintUnformatted(aj);
        snprintf(body, sizeof body, "\"previous_response_id\": \"%s\", \"input\": [{\"type\": \"function_call_output\", \"call_id\": \"%s\", "
                 "\"output\": \"12C\"}], \"tools\": " "[{\"type\": \"function\", \"name\": \"get_weather\"}], \"max_output_tokens\": 4, \"temperature\": 0",
                 id3, cid);
        CHECK(responses_of(S.port, body, 0, &chained) == 200);
        snprintf(body, sizeof body, "\"input\": [{\"role\": \"user\", \"content\": \"What's the weather in Paris?\"}, {\"type\": \"function_call\", "
                 "\"call_id\": \"%s\", \"name\": \"%s\", \"arguments\": %s}, {\"type\": \"function_call_output\", \"call_id\": \"%s\", "
                 "\"output\": \"12C\"}], \"tools\": [{\"type\": \"function\", \"name\": \"get_weather\"}], \"max_output_tokens\": 4, "
                 "\"temperature\": 0", cid, cJSON_GetStringValue(cJSON_GetObjectItem(fc, "name")), aq, cid);
        CHECK(responses_of(S.port, body, 0, &whole) == 200);
        CHECK_MSG(chained.input_tokens == whole.input_tokens && !strcmp(chained.text, whole.text), "call chained: %d %s; whole: %d %s",
                  chained.input_tokens, chained.text, whole.input_tokens, whole.text);
        free(aq), cJSON_Delete(aj);
    }
    cJSON_Delete(j3);
    static const struct { const char *body, *want; } bad[] = {
        {"{\"input\": \"x\", \"previous_response_id\": 7}", "\"param\": \"previous_response_id\""},
        {"{\"input\": \"x\", \"conversation\": \"c1\"}", "\"param\": \"conversation\""},
        {"{\"instructions\": \"x\"}", "'input' is required"},
        {"{\"input\": 3}", "'input' must be a string or a list of items"},
        {"{\"input\": [{\"type\": \"image\"}]}", "input[0].type: 'image' is not supported"},
        {"{\"input\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_image\", \"image_url\": \"x\"}]}]}", "only input_text"},
        {"{\"input\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "\"param\": \"input\""},
        {"{\"input\": \"x\", \"tools\": [{\"type\": \"web_search\"}]}", "only function tools"},
        {"{\"input\": \"x\", \"max_output_tokens\": -1}", "\"param\": \"max_output_tokens\""},
        {"{\"input\": \"x\", \"text\": {\"format\": {\"type\": \"json_schema\", \"name\": \"p\", \"schema\": {\"properties\": {\"a\": "
         "{\"contains\": {}}}}}}}", "'contains' is not supported"},
        {"[1]", "must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out = NULL;
        const int st = http(S.port, "POST", "/v1/responses", NULL, bad[i].body, &out);
        CHECK_MSG(st == 400 && out && strstr(out, bad[i].want), "%s: %d %s", bad[i].body, st, out ? out : "");
        free(out);
    }
    CHECK(healthy(S.port));
    CHECK(server_stop(&S) == 0);
}

/* ---- the prefix cache --------------------------------------------------------------------- */
typedef struct { int32_t ids[64]; int n, cached, status; float lp[256]; } pc_answer;

/* a greedy completion of the ids p[0..n) (max_tokens new, EOS ignored): its ids, log-probabilities, cached tokens */
static pc_answer pc_complete(int port, const int32_t *p, int n, int max_tokens, const char *extra) {
    pc_answer a = {.status = -1};
    ds_sbuf b = {0};
    ds_sbuf_puts(&b, "{\"prompt\": [");
    for (int i = 0; i < n; i++) ds_sbuf_printf(&b, "%s%d", i ? ", " : "", p[i]);
    ds_sbuf_printf(&b, "], \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, \"logprobs\": 0, "
                       "\"return_token_ids\": true%s}", max_tokens, extra ? extra : "");
    char *o = NULL;
    a.status = http(port, "POST", "/v1/completions", NULL, b.p, &o);
    free(b.p);
    cJSON *j = cJSON_Parse(o);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    a.n = ids_of(cJSON_GetObjectItem(ch, "token_ids"), a.ids, 64);
    const cJSON *lp = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "token_logprobs"), *x;
    int k = 0;
    cJSON_ArrayForEach(x, lp) if (k < 256) a.lp[k++] = cJSON_IsNumber(x) ? (float)x->valuedouble : NAN;
    const cJSON *d = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens_details"),
                                         "cached_tokens");
    a.cached = cJSON_IsNumber(d) ? (int)d->valuedouble : -1;
    cJSON_Delete(j);
    free(o);
    return a;
}

/* dsv3 generate's greedy ids for the ids p[0..n) (the oracle: no prefix cache) */
static int pc_generate(const char *dir, const int32_t *p, int n, int new_tokens, int32_t *ids) {
    char txt[4096] = "";
    for (int i = 0; i < n; i++) snprintf(txt + strlen(txt), sizeof txt - strlen(txt), "%d ", p[i]);
    return gen_ids(dir, txt, new_tokens, "", ids);
}

static void pc_rand(uint32_t *st, int32_t *p, int n) {
    for (int i = 0; i < n; i++) {
        *st = *st * 1664525u + 1013904223u;
        p[i] = (int32_t)(3 + (*st >> 8) % 247);
    }
}

typedef struct { int port; int32_t p[64]; int n; pc_answer a; } pc_client;
static void *pc_bg(void *arg) {
    pc_client *c = arg;
    c->a = pc_complete(c->port, c->p, c->n, 24, NULL);
    return NULL;
}

/* A conversation's turns start from the cache row of the one before (the
 * prompt, then the answer but its last token, which is not cached yet); a
 * prompt sharing a prefix with a running request copies that row; every
 * answer is the greedy tokens of `dsv3 generate` on the whole prompt, and
 * its log-probabilities those of scoring the whole text in one prefill
 * (echo: no reuse) up to FP32 rounding.  Speculative: the prefix stops a
 * token earlier (the MTP module's entry pairs a state with the next token). */
static void prefix_cache_checks(const char *dir, int port, int spec) {
    enum { NEW = 8 };
    uint32_t st = 12345 + (uint32_t)spec;
    int32_t conv[200], want[64], tail[16];
    int n = 40;
    pc_rand(&st, conv, n);
    int expect = 0, hits = 0;
    for (int turn = 0; turn < 3; turn++) {
        pc_answer a = pc_complete(port, conv, n, NEW, NULL);
        CHECK(a.status == 200 && a.n == NEW);
        CHECK(pc_generate(dir, conv, n, NEW, want) == NEW);
        CHECK_MSG(!memcmp(a.ids, want, NEW * sizeof(int32_t)), "turn %d: the answer differs from generate's", turn);
        CHECK_MSG(a.cached == expect, "turn %d: %d tokens cached, expected %d", turn, a.cached, expect);
        hits += a.cached;
        if (turn == 2) { /* the same text scored in one prefill: the answer's log-probabilities */
            int32_t all[200];
            memcpy(all, conv, (size_t)n * sizeof(int32_t));
            memcpy(all + n, a.ids, NEW * sizeof(int32_t));
            pc_answer e = pc_complete(port, all, n + NEW, 0, ", \"echo\": true");
            CHECK(e.status == 200 && e.cached == 0);
            for (int k = 0; k < NEW; k++)
                CHECK_MSG(fabsf(e.lp[n + k] - a.lp[k]) < 1e-4f, "token %d: %g cached, %g scored", k, a.lp[k], e.lp[n + k]);
        }
        memcpy(conv + n, a.ids, NEW * sizeof(int32_t));
        expect = n + NEW - 1 - spec;
        n += NEW;
        pc_rand(&st, conv + n, 10);
        n += 10;
    }
    /* a prompt sharing 30 tokens with a running one: copied from its row */
    pc_client c = {.port = port, .n = 40};
    pc_rand(&st, c.p, c.n);
    pthread_t th;
    pthread_create(&th, NULL, pc_bg, &c);
    usleep(400000); /* its prefill is done (steps take 20 ms) */
    int32_t q[48];
    memcpy(q, c.p, 30 * sizeof(int32_t));
    pc_rand(&st, tail, 6);
    memcpy(q + 30, tail, 6 * sizeof(int32_t));
    pc_answer b = pc_complete(port, q, 36, NEW, NULL);
    pthread_join(th, NULL);
    CHECK(c.a.status == 200 && c.a.n == 24 && c.a.cached == 0);
    CHECK(pc_generate(dir, q, 36, NEW, want) == NEW);
    CHECK_MSG(b.status == 200 && b.n == NEW && !memcmp(b.ids, want, NEW * sizeof(int32_t)), "the copied prefix's answer differs");
    CHECK_MSG(b.cached == 30 - spec, "%d tokens cached from the running request's row, expected %d", b.cached, 30 - spec);
    hits += b.cached;
    CHECK(metric(port, "dsv3_prefix_cache_hits_total") == hits);
    /* n = 3 choices of a new prompt: the first is prefilled, the other two wait for it and copy its row */
    int32_t p3[40];
    pc_rand(&st, p3, 40);
    CHECK(pc_generate(dir, p3, 40, NEW, want) == NEW);
    ds_sbuf rq = {0};
    ds_sbuf_puts(&rq, "{\"prompt\": [");
    for (int i = 0; i < 40; i++) ds_sbuf_printf(&rq, "%s%d", i ? ", " : "", p3[i]);
    ds_sbuf_printf(&rq, "], \"n\": 3, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, \"return_token_ids\": true}",
                   (int)NEW);
    char *o = NULL;
    CHECK(http(port, "POST", "/v1/completions", NULL, rq.p, &o) == 200);
    free(rq.p);
    cJSON *j = cJSON_Parse(o);
    const cJSON *ch = cJSON_GetObjectItem(j, "choices"), *x;
    int nc = 0, same = 1;
    cJSON_ArrayForEach(x, ch) {
        int32_t ids[64];
        same &= ids_of(cJSON_GetObjectItem(x, "token_ids"), ids, 64) == NEW && !memcmp(ids, want, NEW * sizeof(int32_t));
        nc++;
    }
    CHECK_MSG(nc == 3 && same, "%d choices; all generate's: %d", nc, same);
    cJSON_Delete(j);
    free(o);
    CHECK_MSG(metric(port, "dsv3_prefix_cache_hits_total") == hits + 2 * 39, "hits %d, want %d",
              metric(port, "dsv3_prefix_cache_hits_total"), hits + 2 * 39);
}

TEST(serve_prefix_cache) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "20", 1);
    SETUP_IN(make_model_long(), "--max-batch 4");
    prefix_cache_checks(dir, S.port, 0);
    CHECK(server_stop(&S) == 0);
    server S2;
    CHECK(server_start(&S2, dir, "--max-batch 4 --speculative mtp") == 0);
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    if (!S2.port) return;
    prefix_cache_checks(dir, S2.port, 1);
    CHECK(server_stop(&S2) == 0);
    /* --no-prefix-cache: the same conversation, nothing reused */
    server S3;
    CHECK(server_start(&S3, dir, "--max-batch 2 --no-prefix-cache") == 0);
    if (!S3.port) return;
    int32_t p[64];
    uint32_t st = 99;
    pc_rand(&st, p, 40);
    pc_answer a = pc_complete(S3.port, p, 40, 4, NULL), b = pc_complete(S3.port, p, 40, 4, NULL);
    CHECK(a.status == 200 && b.status == 200 && a.cached == 0 && b.cached == 0 && !memcmp(a.ids, b.ids, 4 * sizeof(int32_t)));
    CHECK(metric(S3.port, "dsv3_prefix_cache_hits_total") == 0);
    CHECK(server_stop(&S3) == 0);
}

/* --cache-rows: rows beyond --max-batch keep more prompts' prefixes.  One
 * sequence at a time and 3 rows: three conversations' first turns, then
 * each one's second turn (the last conversation first) starts from its own
 * row; with 1 row only the last conversation's prefix is left; the answers
 * are generate's */
static int pc_turns(const char *dir, int port, int *cached) {
    enum { NEW = 6 };
    int32_t conv[3][80], want[64];
    uint32_t st = 777;
    for (int c = 0; c < 3; c++) {
        pc_rand(&st, conv[c], 40);
        pc_answer a = pc_complete(port, conv[c], 40, NEW, NULL);
        CHECK(a.status == 200 && a.n == NEW);
        memcpy(conv[c] + 40, a.ids, NEW * sizeof(int32_t));
        pc_rand(&st, conv[c] + 40 + NEW, 8);
    }
    int same = 1;
    for (int c = 2; c >= 0; c--) { /* the last conversation first */
        pc_answer a = pc_complete(port, conv[c], 40 + NEW + 8, NEW, NULL);
        CHECK(pc_generate(dir, conv[c], 40 + NEW + 8, NEW, want) == NEW);
        same &= a.status == 200 && a.n == NEW && !memcmp(a.ids, want, NEW * sizeof(int32_t));
        cached[c] = a.cached;
    }
    return same;
}

TEST(serve_prefix_cache_rows) {
    SETUP_IN(make_model_long(), "--max-batch 1 --cache-rows 3");
    int cached[3];
    CHECK_MSG(pc_turns(dir, S.port, cached), "an answer differs from generate's");
    for (int c = 0; c < 3; c++) CHECK_MSG(cached[c] == 40 + 6 - 1, "conversation %d: %d cached", c, cached[c]);
    CHECK(server_stop(&S) == 0);
    server S1;
    CHECK(server_start(&S1, dir, "--max-batch 1") == 0);
    if (!S1.port) return;
    CHECK(pc_turns(dir, S1.port, cached));
    CHECK_MSG(cached[2] == 40 + 6 - 1 && cached[1] == 0 && cached[0] == 0, "one row: %d %d %d cached", cached[0], cached[1],
              cached[2]);
    CHECK(server_stop(&S1) == 0);
}

/* with return_token_ids a streamed id goes out in the step that made it,
 * even while its text waits (here: a stop string of 8 bytes holds back the
 * last 7 bytes of text); the ids still add up to the unstreamed answer's */
TEST(serve_stream_ids_at_once) {
    setenv("DSV3_SERVE_STEP_DELAY_MS", "40", 1);
    SETUP("--max-batch 2");
    unsetenv("DSV3_SERVE_STEP_DELAY_MS");
    enum { NEW = 8 };
    char pj[512], req[1024], *o = NULL;
    prompt_json(pj, sizeof pj, 6, 0);
    snprintf(req, sizeof req, "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true, "
             "\"stop\": \"\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\u0008\", \"return_token_ids\": true}",
             pj, NEW);
    CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
    cJSON *j = cJSON_Parse(o);
    int32_t want[64], got[64];
    const int nw = ids_of(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "token_ids"), want, 64);
    cJSON_Delete(j);
    free(o);
    CHECK(nw == NEW);
    req[strlen(req) - 1] = 0;
    strcat(req, ", \"stream\": true}");
    CHECK(http(S.port, "POST", "/v1/completions", NULL, req, &o) == 200);
    int n = 0, chunks = 0, early = 0;
    for (const char *p = o; (p = strstr(p, "data: ")); ) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e || !strncmp(p, "[DONE]", 6)) break;
        cJSON *c = cJSON_ParseWithLength(p, (size_t)(e - p));
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0);
        const int k = ids_of(cJSON_GetObjectItem(ch, "token_ids"), got + n, 64 - n);
        const cJSON *t = cJSON_GetObjectItem(ch, "text");
        chunks += k > 0;
        early += k > 0 && n + k < NEW && cJSON_IsString(t) && !t->valuestring[0]; /* ids before their text */
        n += k;
        cJSON_Delete(c);
        p = e;
    }
    free(o);
    CHECK_MSG(n == NEW && !memcmp(got, want, NEW * sizeof(int32_t)), "%d streamed ids", n);
    CHECK_MSG(chunks >= NEW - 2 && early >= 4, "%d chunks with ids, %d of them before any text", chunks, early);
    CHECK(server_stop(&S) == 0);
}

/* `dsv3 chat --model`: the second turn starts from the first's cache (the
 * prompt and the answer but its last token; --verbose says how many tokens)
 * and answers as `dsv3 generate` on the whole rendered conversation */
TEST(chat_cli_reuses_the_conversation) {
    if (load_ref()) SKIP("no v3 fixture");
    const char *dir = make_model_long();
    CHECK(dir != NULL);
    if (!dir) return;
    char cfgp[800], ids[8192], cout[8192], err[700];
    snprintf(cfgp, sizeof cfgp, "%s/tokenizer_config.json", dir);
    ds_chat_cfg cc = {0};
    CHECK(ds_chat_cfg_load(&cc, cfgp, NULL) == 0);
    if (!cc.tmpl) return;
    /* turn 1: "Hi" */
    cJSON *msgs = cJSON_CreateArray();
    cJSON *u = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "role", "user"), cJSON_AddStringToObject(u, "content", "Hi");
    cJSON_AddItemToArray(msgs, u);
    char *text = ds_chat_template_apply(cc.tmpl, msgs, 1, cc.bos, cc.eos);
    const int P1 = encode_ids(dir, text, ids, sizeof ids, NULL, 0);
    free(text);
    int32_t gen[64];
    int ng = gen_ids_opts(dir, ids, 10, "", gen);
    CHECK(ng >= 0);
    char a1[256], a2[256];
    const int n1 = token_text(dir, gen, ng, a1, sizeof a1 - 1);
    CHECK(n1 > 0 && ng == 10);
    a1[n1 > 0 ? n1 : 0] = 0;
    /* turn 2: the history with the first answer, then "How are you" */
    cJSON *as = cJSON_CreateObject();
    cJSON_AddStringToObject(as, "role", "assistant"), cJSON_AddStringToObject(as, "content", a1);
    cJSON_AddItemToArray(msgs, as);
    u = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "role", "user"), cJSON_AddStringToObject(u, "content", "How are you");
    cJSON_AddItemToArray(msgs, u);
    text = ds_chat_template_apply(cc.tmpl, msgs, 1, cc.bos, cc.eos);
    const int P2 = encode_ids(dir, text, ids, sizeof ids, NULL, 0);
    free(text);
    cJSON_Delete(msgs);
    ds_chat_cfg_free(&cc);
    ng = gen_ids_opts(dir, ids, 10, "", gen);
    CHECK(ng >= 0);
    const int n2 = token_text(dir, gen, ng, a2, sizeof a2);
    snprintf(err, sizeof err, "%s/chat-err.txt", ds_test_tmpdir());
    CHECK(ds_test_sh(cout, sizeof cout, "printf 'Hi\\nHow are you\\n' | $DSV3 --verbose chat --model %s --max-new-tokens 10 2>%s",
                     dir, err) == 0);
    CHECK_MSG(n1 > 0 && n2 > 0 && !memcmp(cout, a1, (size_t)n1) && cout[n1] == '\n' && !memcmp(cout + n1 + 1, a2, (size_t)n2),
              "chat printed %s", ds_quote(cout));
    size_t len;
    char *log = ds_read_file(err, &len), want[128];
    snprintf(want, sizeof want, "chat: %d of %d prompt tokens were cached", P1 + 9, P2); /* the first answer's last token is not cached */
    CHECK_MSG(log && strstr(log, want), "wanted '%s' in %s", want, log ? log : "(none)");
    free(log);
    /* --speculative ngram: the same answers, the same cache reuse (the n-gram steps leave the cache as plain ones) */
    char sout[8192];
    CHECK(ds_test_sh(sout, sizeof sout, "printf 'Hi\\nHow are you\\n' | $DSV3 --verbose chat --model %s --max-new-tokens 10 "
                     "--speculative ngram --draft-max 3 2>%s", dir, err) == 0);
    CHECK_MSG(!strcmp(sout, cout), "chat --speculative ngram printed %s, plain %s", ds_quote(sout), ds_quote(cout));
    log = ds_read_file(err, &len);
    CHECK_MSG(log && strstr(log, want), "wanted '%s' in %s", want, log ? log : "(none)");
    free(log);
    CHECK(ds_test_sh(sout, sizeof sout, "$DSV3 chat --model %s --speculative mtp </dev/null", dir) == 2);
    CHECK(ds_test_sh(sout, sizeof sout, "$DSV3 chat --url http://127.0.0.1:1 --speculative ngram </dev/null") == 2);
}
