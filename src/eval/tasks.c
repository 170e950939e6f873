/*
 * tasks.c — task SPEC parsing and the readers of evaluation data files:
 *   llm-foundry ICL JSONL   {"query", "choices", "gold"}            (mc)
 *                           {"context_options", "continuation", "gold"} (mc, several contexts)
 *   WinoGrande JSONL        {"sentence", "option1", "option2", "answer"} (mc, several contexts:
 *                           lm-eval's partial scoring, see winogrande_row)
 *                           {"context", "continuation"}              (ll, e.g. LAMBADA)
 *   HellaSwag 6-line text   label: ctx / gold / 4 endings             (mc, lm-eval preprocess)
 *   generation JSONL        {"prompt", "answer"} (or context/continuation) (gen)
 *   raw text                one document, one per line, or WikiText articles (lm)
 * A bad row is reported as "PATH:LINE: what"; with on_error = skip it is reported as a
 * warning and left out, otherwise loading stops.
 */
#include "io/json.h"
#include "eval/eval.h"
#include "base/base.h"
#include "base/suggest.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ds_eval_opts_default(ds_eval_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 1;
    o->on_error = DS_ON_ERROR_STOP;
}

/* ---- SPEC ------------------------------------------------------------------ */

/* option value with escapes \n \t \\ \, \| (unescaped '|' separates list items: *n_items) */
static char **unescape_list(const char *v, size_t len, int *n_items) {
    char **items = NULL;
    int n = 0;
    char *cur = ds_malloc(len + 1);
    size_t k = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || v[i] == '|') {
            cur[k] = 0;
            items = ds_realloc(items, (size_t)(n + 1) * sizeof *items);
            items[n++] = ds_strdup(cur);
            k = 0;
            continue;
        }
        if (v[i] == '\\' && i + 1 < len) {
            char c = v[++i];
            cur[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            cur[k++] = v[i];
        }
    }
    free(cur);
    *n_items = n;
    return items;
}

static int parse_i64(const char *v, size_t len, int64_t *out) {
    char buf[32];
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, v, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (*end || errno) return -1;
    *out = x;
    return 0;
}

static int apply_option(ds_task *t, const char *spec, const char *k, size_t kl, const char *v, size_t vl) {
#define KEY(s) (kl == strlen(s) && !strncmp(k, s, kl))
#define VAL(s) (vl == strlen(s) && !strncmp(v, s, vl))
    if (KEY("name")) {
        if (vl == 0 || vl >= sizeof t->name) return ds_err("task %s: name: empty or longer than 63 bytes", ds_quote(spec));
        memcpy(t->name, v, vl);
        t->name[vl] = 0;
    } else if (KEY("prompt")) {
        if (VAL("qa")) t->prompt_qa = 1;
        else if (VAL("raw")) t->prompt_qa = 0;
        else return ds_err("task %s: prompt: expected qa or raw", ds_quote(spec));
    } else if (KEY("delim")) {
        int n;
        char **l = unescape_list(v, vl, &n);
        free(t->delim);
        t->delim = l[0];
        for (int i = 1; i < n; i++) free(l[i]);
        free(l);
    } else if (KEY("stride")) {
        if (parse_i64(v, vl, &t->stride) || t->stride < 1) return ds_err("task %s: stride: expected a positive integer", ds_quote(spec));
    } else if (KEY("add_bos")) {
        if (VAL("1") || VAL("true")) t->add_bos = 1;
        else if (VAL("0") || VAL("false")) t->add_bos = 0;
        else return ds_err("task %s: add_bos: expected 1 or 0 (true or false)", ds_quote(spec));
    } else if (KEY("limit")) {
        if (parse_i64(v, vl, &t->limit) || t->limit < 1) return ds_err("task %s: limit: expected a positive integer", ds_quote(spec));
    } else if (KEY("max_new_tokens") || KEY("max_new")) { /* transformers' name; max_new kept as an alias */
        if (parse_i64(v, vl, &t->max_new) || t->max_new < 1)
            return ds_err("task %s: max_new_tokens: expected a positive integer", ds_quote(spec));
    } else if (KEY("docs")) {
        if (VAL("file")) t->docs_split = DS_DOCS_FILE;
        else if (VAL("lines")) t->docs_split = DS_DOCS_LINES;
        else if (VAL("wikitext")) t->docs_split = DS_DOCS_WIKITEXT;
        else return ds_err("task %s: docs: expected file, lines or wikitext", ds_quote(spec));
    } else if (KEY("detok")) {
        if (VAL("wikitext")) t->detok_wikitext = 1;
        else if (VAL("none")) t->detok_wikitext = 0;
        else return ds_err("task %s: detok: expected wikitext or none", ds_quote(spec));
    } else if (KEY("until")) {
        for (int i = 0; i < t->n_until; i++) free(t->until[i]);
        free(t->until);
        t->until = unescape_list(v, vl, &t->n_until);
        for (int i = 0; i < t->n_until; i++)
            if (!t->until[i][0]) return ds_err("task %s: until: empty stop sequence", ds_quote(spec));
    } else if (KEY("extract")) {
        if (VAL("none")) t->extract = DS_EXTRACT_NONE;
        else if (VAL("last_number")) t->extract = DS_EXTRACT_LAST_NUMBER;
        else if (VAL("first_word")) t->extract = DS_EXTRACT_FIRST_WORD;
        else return ds_err("task %s: extract: expected none, last_number or first_word", ds_quote(spec));
    } else {
        return ds_err("task %s: unknown option %s (name, prompt, delim, stride, docs, detok, until, max_new_tokens, extract, limit, add_bos)",
                      ds_quote(spec), ds_quote_n(k, kl));
    }
    return 0;
#undef KEY
#undef VAL
}

static void set_name_from_path(ds_task *t, const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strcspn(b, ".");
    if (n == 0) n = strlen(b);
    if (n >= sizeof t->name) n = sizeof t->name - 1;
    memcpy(t->name, b, n);
    t->name[n] = 0;
}

/* lm-eval's names first; the last two are the names dsv3 used before (aliases, results keep the name given) */
static const struct { const char *name, *rel; ds_task_kind kind; int qa, wiki; } NAMED[] = {
    {"lambada_openai", "llm_foundry_icl/lambada_openai.jsonl", DS_TASK_LL, 0, 0},
    {"wikitext", "wikitext2/wiki.test.raw", DS_TASK_LM, 0, 1},
    {"arc_easy", "llm_foundry_icl/arc_easy.jsonl", DS_TASK_MC, 1, 0},
    {"arc_challenge", "llm_foundry_icl/arc_challenge.jsonl", DS_TASK_MC, 1, 0},
    {"winogrande", "llm_foundry_icl/winogrande.jsonl", DS_TASK_MC, 0, 0},
    {"hellaswag", "hellaswag/hellaswag_val_full.txt", DS_TASK_MC, 0, 0},
    {"piqa", "llm_foundry_icl/piqa.jsonl", DS_TASK_MC, 1, 0},
    {"lambada_gen", "llm_foundry_icl/lambada_openai.jsonl", DS_TASK_GEN, 0, 0},
    {"lambada", "llm_foundry_icl/lambada_openai.jsonl", DS_TASK_LL, 0, 0},
    {"wikitext2", "wikitext2/wiki.test.raw", DS_TASK_LM, 0, 1},
};
enum { N_NAMED = sizeof NAMED / sizeof *NAMED };

/* "unknown task 'x'; did you mean a or b? ..." (the nearest names by base/suggest) */
static int unknown_task(const char *spec, size_t head) {
    char word[64];
    snprintf(word, sizeof word, "%.*s", (int)(head < 63 ? head : 63), spec);
    const char *names[N_NAMED], *best[3];
    for (int k = 0; k < N_NAMED; k++) names[k] = NAMED[k].name;
    int nb = head < 64 ? ds_suggest(word, names, N_NAMED, best, 3) : 0;
    char hint[256] = "";
    if (nb > 0) {
        size_t n = (size_t)snprintf(hint, sizeof hint, "; did you mean ");
        for (int j = 0; j < nb; j++)
            n += (size_t)snprintf(hint + n, sizeof hint - n, "%s%s", j ? (j + 1 < nb ? ", " : " or ") : "", best[j]);
        snprintf(hint + n, sizeof hint - n, "?");
    }
    return ds_err("unknown task %s%s (tasks: lambada_openai, wikitext, arc_easy, arc_challenge, winogrande, hellaswag, "
                  "piqa, lambada_gen; aliases lambada, wikitext2; or mc:FILE, ll:FILE, lm:FILE, gen:FILE)",
                  ds_quote_n(spec, head), hint);
}

int ds_task_add_bos(const ds_task *t, const ds_eval_opts *o) { return t->add_bos >= 0 ? t->add_bos : o->add_bos; }

int ds_task_parse_spec(ds_task *t, const char *spec, const char *data_dir) {
    memset(t, 0, sizeof *t);
    t->delim = ds_strdup(" ");
    t->max_new = 256;
    t->add_bos = -1;
    const char *colon = strchr(spec, ':');
    const char *hash = colon ? strchr(colon, '#') : strchr(spec, '#');
    size_t head = hash ? (size_t)(hash - spec) : strlen(spec);
    if (!colon || (size_t)(colon - spec) > head) {
        size_t k;
        for (k = 0; k < N_NAMED; k++)
            if (strlen(NAMED[k].name) == head && !strncmp(spec, NAMED[k].name, head)) break;
        if (k == N_NAMED) return unknown_task(spec, head);
        snprintf(t->name, sizeof t->name, "%s", NAMED[k].name);
        t->kind = NAMED[k].kind;
        t->prompt_qa = NAMED[k].qa;
        if (NAMED[k].wiki) { t->docs_split = DS_DOCS_WIKITEXT; t->detok_wikitext = 1; }
        char *dir = ds_strdup(data_dir ? data_dir : "../shared/data");
        t->path = ds_path_join(dir, NAMED[k].rel);
        free(dir);
    } else {
        size_t kl = (size_t)(colon - spec);
        if (kl == 2 && !strncmp(spec, "mc", 2)) t->kind = DS_TASK_MC;
        else if (kl == 2 && !strncmp(spec, "ll", 2)) t->kind = DS_TASK_LL;
        else if (kl == 2 && !strncmp(spec, "lm", 2)) t->kind = DS_TASK_LM;
        else if (kl == 3 && !strncmp(spec, "gen", 3)) t->kind = DS_TASK_GEN;
        else return ds_err("task %s: unknown kind %s (mc, ll, lm, gen)", ds_quote(spec), ds_quote_n(spec, kl));
        size_t pl = head - kl - 1;
        if (pl == 0) return ds_err("task %s: missing file path", ds_quote(spec));
        t->path = ds_malloc(pl + 1);
        memcpy(t->path, colon + 1, pl);
        t->path[pl] = 0;
        set_name_from_path(t, t->path);
    }
    if (t->kind == DS_TASK_GEN) {
        t->until = ds_malloc(sizeof *t->until);
        t->until[0] = ds_strdup("\n\n");
        t->n_until = 1;
        if (!strcmp(t->name, "lambada_gen")) { /* the last word by greedy generation */
            t->until[0][1] = 0; /* "\n" */
            t->max_new = 16;
            t->extract = DS_EXTRACT_FIRST_WORD;
        }
    }
    if (hash) {
        const char *p = hash + 1;
        while (*p) {
            /* option up to an unescaped ',' */
            const char *e = p;
            while (*e && *e != ',') e += (*e == '\\' && e[1]) ? 2 : 1;
            const char *eq = memchr(p, '=', (size_t)(e - p));
            if (!eq) return ds_err("task %s: option %s needs a value (opt=value)", ds_quote(spec), ds_quote_n(p, (size_t)(e - p)));
            if (apply_option(t, spec, p, (size_t)(eq - p), eq + 1, (size_t)(e - eq - 1))) return -1;
            p = *e ? e + 1 : e;
        }
    }
    return 0;
}

/* ---- documents ------------------------------------------------------------- */

static ds_eval_doc *new_doc(ds_task *t, int64_t line, int n) {
    t->docs = ds_realloc(t->docs, (size_t)(t->n_docs + 1) * sizeof *t->docs);
    ds_eval_doc *d = &t->docs[t->n_docs++];
    memset(d, 0, sizeof *d);
    d->line = line;
    d->n = n;
    d->ctx = ds_calloc((size_t)n, sizeof *d->ctx);
    d->cont = ds_calloc((size_t)n, sizeof *d->cont);
    d->len_chars = ds_calloc((size_t)n, sizeof(double));
    d->len_bytes = ds_calloc((size_t)n, sizeof(double));
    return d;
}

static void free_doc(const ds_task *t, ds_eval_doc *d) {
    for (int i = 0; i < d->n; i++) {
        if (i == 0 || d->ctx[i] != d->ctx[0]) free(d->ctx[i]);
        free(d->cont[i]);
    }
    (void)t;
    free(d->ctx);
    free(d->cont);
    free(d->len_chars);
    free(d->len_bytes);
    free(d->text);
    free(d->answer);
}

void ds_task_free(ds_task *t) {
    for (int64_t i = 0; i < t->n_docs; i++) free_doc(t, &t->docs[i]);
    free(t->docs);
    for (int i = 0; i < t->n_until; i++) free(t->until[i]);
    free(t->until);
    free(t->delim);
    free(t->path);
    memset(t, 0, sizeof *t);
}

static char *concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *r = ds_malloc(la + lb + 1);
    memcpy(r, a, la);
    memcpy(r + la, b, lb + 1);
    return r;
}

/* the lm-eval context of an MC query */
static char *mc_context(const ds_task *t, const char *query) {
    if (!t->prompt_qa) return ds_strdup(query);
    size_t n = strlen(query);
    while (n && query[n - 1] == '\n') n--;
    char *r = ds_malloc(n + 9);
    memcpy(r, query, n);
    memcpy(r + n, "\nAnswer:", 9);
    return r;
}

static void set_choice_len(ds_eval_doc *d, int i, const char *choice) {
    d->len_chars[i] = (double)ds_utf8_chars(choice, strlen(choice));
    d->len_bytes[i] = (double)strlen(choice);
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* WinoGrande as lm-eval's winogrande task scores it (partial evaluation): with i = the index
 * of the first "_" in sentence, option k is the context sentence[:i] + option_k, and the
 * continuation (the same for both) is " " + sentence[i+1:].strip(); answer "1" or "2"; acc. */
static int winogrande_row(ds_task *t, const cJSON *o, int64_t line) {
    const char *sent = json_str(o, "sentence"), *opt[2] = {json_str(o, "option1"), json_str(o, "option2")};
    if (!sent) return ds_err("sentence: not a string");
    for (int k = 0; k < 2; k++) {
        if (!opt[k]) return ds_err("option%d: missing or not a string", k + 1);
        if (!opt[k][0]) return ds_err("option%d: empty answer choice", k + 1);
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "answer");
    int g = -1;
    if (cJSON_IsString(a) && (!strcmp(a->valuestring, "1") || !strcmp(a->valuestring, "2"))) g = a->valuestring[0] - '1';
    else if (cJSON_IsNumber(a) && (a->valuedouble == 1 || a->valuedouble == 2)) g = (int)a->valuedouble - 1;
    if (g < 0) return ds_err("answer: expected \"1\" or \"2\"");
    const char *blank = strchr(sent, '_');
    if (!blank) return ds_err("sentence: no '_' blank");
    if (t->n_docs && !t->multi_ctx) return ds_err("a WinoGrande row in a query/choices file");
    t->multi_ctx = 1;
    size_t pre = (size_t)(blank - sent);
    char *target = ds_py_strip(blank + 1);
    ds_eval_doc *d = new_doc(t, line, 2);
    for (int k = 0; k < 2; k++) {
        size_t lo = strlen(opt[k]);
        d->ctx[k] = ds_malloc(pre + lo + 1);
        memcpy(d->ctx[k], sent, pre);
        memcpy(d->ctx[k] + pre, opt[k], lo + 1);
        d->cont[k] = concat(t->delim, target);
        set_choice_len(d, k, target);
    }
    d->gold = g;
    free(target);
    return 0;
}

/* Parse one JSONL row into a document; returns 0, or -1 with ds_err("what"). */
static int jsonl_row(ds_task *t, const cJSON *o, int64_t line) {
    if (!cJSON_IsObject(o)) return ds_err("not a JSON object");
    const cJSON *gold = cJSON_GetObjectItemCaseSensitive(o, "gold");
    if (t->kind == DS_TASK_GEN) {
        const char *p = json_str(o, "prompt"), *a = json_str(o, "answer");
        if (!p) p = json_str(o, "context");
        if (!a) a = json_str(o, "continuation");
        const cJSON *an = cJSON_GetObjectItemCaseSensitive(o, "answer");
        char num[64];
        if (!a && cJSON_IsNumber(an)) { snprintf(num, sizeof num, "%.17g", an->valuedouble); a = num; }
        if (!p) return ds_err("prompt: missing or not a string");
        if (!a) return ds_err("answer: missing or not a string");
        ds_eval_doc *d = new_doc(t, line, 1);
        d->ctx[0] = ds_strdup(p);
        d->answer = ds_strdup(a);
        return 0;
    }
    if (t->kind == DS_TASK_MC && cJSON_GetObjectItemCaseSensitive(o, "sentence")) return winogrande_row(t, o, line);
    const char *ctx = json_str(o, "context"), *cont = json_str(o, "continuation");
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(o, "choices");
    const cJSON *copts = cJSON_GetObjectItemCaseSensitive(o, "context_options");
    if (t->kind == DS_TASK_LL || (t->kind == DS_TASK_MC && ctx && !choices && !copts)) {
        if (t->kind == DS_TASK_MC) {
            if (t->n_docs) return ds_err("a context/continuation row in a multiple-choice file");
            t->kind = DS_TASK_LL; /* the llm-foundry language-modelling format */
        }
        if (!ctx) return ds_err("context: missing or not a string");
        if (!cont) return ds_err("continuation: missing or not a string");
        ds_eval_doc *d = new_doc(t, line, 1);
        d->ctx[0] = ds_strdup(ctx);
        d->cont[0] = concat(t->delim, cont);
        set_choice_len(d, 0, cont);
        return 0;
    }
    if (t->kind != DS_TASK_MC) return ds_err("internal: JSONL for an lm task");
    const cJSON *list = choices ? choices : copts;
    if (!list) return ds_err("choices: missing (expected query + choices + gold, or context_options + continuation + gold)");
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1)
        return ds_err("%s: not a non-empty array", choices ? "choices" : "context_options");
    int n = cJSON_GetArraySize(list);
    for (int i = 0; i < n; i++) {
        if (!cJSON_IsString(cJSON_GetArrayItem(list, i)))
            return ds_err("%s[%d]: not a string", choices ? "choices" : "context_options", i);
        if (!cJSON_GetArrayItem(list, i)->valuestring[0])
            return ds_err("%s[%d]: empty answer choice", choices ? "choices" : "context_options", i);
    }
    if (!gold) return ds_err("gold: missing");
    if (!cJSON_IsNumber(gold) || gold->valuedouble != (double)(int)gold->valuedouble)
        return ds_err("gold: not an integer");
    int g = (int)gold->valuedouble;
    if (g < 0 || g >= n) return ds_err("gold: %d out of range (%d choices)", g, n);
    if (choices) {
        const char *q = json_str(o, "query");
        if (!q) return ds_err("query: missing or not a string");
        if (t->n_docs && t->multi_ctx) return ds_err("a query/choices row in a context_options file");
        ds_eval_doc *d = new_doc(t, line, n);
        char *c = mc_context(t, q);
        for (int i = 0; i < n; i++) {
            const char *ch = cJSON_GetArrayItem(list, i)->valuestring;
            d->ctx[i] = c;
            d->cont[i] = concat(t->delim, ch);
            set_choice_len(d, i, ch);
        }
        d->gold = g;
    } else {
        if (!cont) return ds_err("continuation: missing or not a string");
        if (t->n_docs && !t->multi_ctx) return ds_err("a context_options row in a query/choices file");
        t->multi_ctx = 1;
        ds_eval_doc *d = new_doc(t, line, n);
        for (int i = 0; i < n; i++) {
            d->ctx[i] = ds_strdup(cJSON_GetArrayItem(list, i)->valuestring);
            d->cont[i] = concat(t->delim, cont);
            set_choice_len(d, i, cont);
        }
        d->gold = g;
    }
    return 0;
}

/* report a bad row: stop (return -1) or warn and go on (return 0) */
static int bad_row(ds_task *t, const ds_eval_opts *o, int64_t line) {
    ds_err_prefix("%s:%lld", t->path, (long long)line);
    if (o->on_error == DS_ON_ERROR_SKIP) {
        fprintf(stderr, "dsv3 eval: warning: %s (skipped)\n", ds_errmsg());
        t->n_skipped++;
        return 0;
    }
    return -1;
}

static int full(const ds_task *t, const ds_eval_opts *o) {
    int64_t lim = t->limit > 0 ? t->limit : o->limit;
    return lim > 0 && t->n_docs >= lim;
}

static int load_jsonl(ds_task *t, const char *buf, size_t len, const ds_eval_opts *o) {
    int64_t line = 0;
    for (size_t p = 0; p < len && !full(t, o);) {
        const char *nl = memchr(buf + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - buf) : len;
        line++;
        const char *s = buf + p;
        size_t n = e - p;
        p = e + 1;
        size_t k = 0;
        while (k < n && isspace((unsigned char)s[k])) k++;
        if (k == n) continue; /* blank line */
        size_t bad;
        if (!ds_utf8_valid((const unsigned char *)s, n, &bad)) {
            ds_err("invalid UTF-8 at column %zu", bad + 1);
            if (bad_row(t, o, line)) return -1;
            continue;
        }
        cJSON *j = cJSON_ParseWithLength(s, n);
        if (!j) {
            ds_err("malformed JSON");
            if (bad_row(t, o, line)) return -1;
            continue;
        }
        int rc = jsonl_row(t, j, line);
        cJSON_Delete(j);
        if (rc && bad_row(t, o, line)) return -1;
    }
    return 0;
}

/* HellaSwag in llama.cpp's 6-line format: "label: ctx", gold, four endings. */
static int load_hellaswag(ds_task *t, const char *buf, size_t len, const ds_eval_opts *o) {
    size_t bad;
    if (!ds_utf8_valid((const unsigned char *)buf, len, &bad)) return ds_err("%s: invalid UTF-8 at byte %zu", t->path, bad);
    int64_t line = 0;
    size_t p = 0;
    while (p < len && !full(t, o)) {
        char *l[6];
        int got = 0;
        int64_t first = line + 1;
        for (; got < 6 && p < len; got++) {
            const char *nl = memchr(buf + p, '\n', len - p);
            size_t e = nl ? (size_t)(nl - buf) : len;
            l[got] = ds_malloc(e - p + 1);
            memcpy(l[got], buf + p, e - p);
            l[got][e - p] = 0;
            p = e + 1;
            line++;
        }
        int rc = 0;
        char *end = NULL;
        long g = got >= 2 ? strtol(l[1], &end, 10) : -1;
        if (got < 6) rc = ds_err("truncated item (%d of 6 lines)", got);
        else if (!l[1][0] || *end || g < 0 || g > 3) rc = ds_err("gold label %s (line %lld) is not 0..3", ds_quote(l[1]), (long long)first + 1);
        for (int i = 0; i < 4 && !rc; i++)
            if (!l[2 + i][strspn(l[2 + i], " \t\r")])
                rc = ds_err("ending %d (line %lld): empty answer choice", i, (long long)first + 2 + i);
        if (!rc) {
            ds_eval_doc *d = new_doc(t, first, 4);
            char *c = ds_hellaswag_preprocess(l[0]);
            for (int i = 0; i < 4; i++) {
                char *ch = ds_hellaswag_preprocess(l[2 + i]);
                d->ctx[i] = c;
                d->cont[i] = concat(t->delim, ch);
                set_choice_len(d, i, ch);
                free(ch);
            }
            d->gold = (int)g;
        }
        for (int i = 0; i < got; i++) free(l[i]);
        if (rc && bad_row(t, o, first)) return -1;
    }
    return 0;
}

static void add_lm_doc(ds_task *t, const char *s, size_t n, int64_t line) {
    ds_eval_doc *d = new_doc(t, line, 1);
    char *orig = ds_malloc(n + 1);
    memcpy(orig, s, n);
    orig[n] = 0;
    d->bytes = (int64_t)n;
    d->words = ds_py_word_count(orig, n);
    if (t->detok_wikitext) {
        d->text = ds_wikitext_detokenize(orig);
        free(orig);
    } else {
        d->text = orig;
    }
}

/* a top-level WikiText heading line: " = Title = " (Title not starting with '=') */
static int wikitext_heading(const char *s, size_t n) {
    return n >= 7 && !strncmp(s, " = ", 3) && s[3] != '=' && !strncmp(s + n - 3, " = ", 3);
}

static int load_text(ds_task *t, const char *buf, size_t len, const ds_eval_opts *o) {
    size_t bad;
    if (!ds_utf8_valid((const unsigned char *)buf, len, &bad)) {
        int64_t line = 1;
        for (size_t i = 0; i < bad; i++) line += buf[i] == '\n';
        return ds_err("%s: invalid UTF-8 at byte %zu (line %lld)", t->path, bad, (long long)line);
    }
    if (t->docs_split == DS_DOCS_FILE) {
        if (len) add_lm_doc(t, buf, len, 1);
        return 0;
    }
    int64_t line = 0, doc_line = 0;
    size_t doc_start = 0;
    int in_doc = 0;
    for (size_t p = 0; p < len && !full(t, o);) {
        const char *nl = memchr(buf + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - buf) : len;
        size_t next = nl ? e + 1 : len;
        line++;
        if (t->docs_split == DS_DOCS_LINES) {
            if (ds_py_rstrip_len(buf + p, e - p) > 0) add_lm_doc(t, buf + p, e - p, line);
        } else if (wikitext_heading(buf + p, e - p)) {
            if (in_doc) add_lm_doc(t, buf + doc_start, p - doc_start, doc_line);
            in_doc = 1;
            doc_start = p;
            doc_line = line;
        }
        p = next;
    }
    if (t->docs_split == DS_DOCS_WIKITEXT && in_doc && !full(t, o))
        add_lm_doc(t, buf + doc_start, len - doc_start, doc_line);
    return 0;
}

int ds_task_load_buffer(ds_task *t, const char *buf, size_t len, const ds_eval_opts *o) {
    int rc;
    size_t pl = strlen(t->path);
    if (t->kind == DS_TASK_LM) rc = load_text(t, buf, len, o);
    else if (t->kind == DS_TASK_MC && pl > 4 && !strcmp(t->path + pl - 4, ".txt")) rc = load_hellaswag(t, buf, len, o);
    else rc = load_jsonl(t, buf, len, o);
    if (rc) return -1;
    if (t->n_docs == 0) {
        if (t->n_skipped) return ds_err("%s: no valid examples (%lld skipped)", t->path, (long long)t->n_skipped);
        return ds_err("%s: no examples (empty file)", t->path);
    }
    return 0;
}

int ds_task_load(ds_task *t, const char *spec, const ds_eval_opts *o) {
    if (ds_task_parse_spec(t, spec, o->data_dir)) return -1;
    size_t len;
    char *buf = ds_read_file(t->path, &len);
    if (!buf) return ds_err_prefix("task %s", t->name);
    int rc = ds_task_load_buffer(t, buf, len, o);
    free(buf);
    return rc;
}
