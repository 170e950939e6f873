/*
 * chat_cfg.c — chat template and stop ids for serve and chat (chat_cfg.h).
 */
#include "serve/chat_cfg.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/json.h"
#include "serve/tools.h"
#include "tokenizer/tok_config.h"

static char *token_str(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? ds_strdup(v->valuestring) : NULL;
}

int ds_chat_cfg_load(ds_chat_cfg *c, const char *tokenizer_config, const char *template_file) {
    memset(c, 0, sizeof *c);
    char *src = NULL;
    if (tokenizer_config && ds_file_exists(tokenizer_config)) {
        size_t n;
        char *txt = ds_read_file(tokenizer_config, &n);
        if (!txt) return -1;
        cJSON *cfg = ds_json_parse(txt, n, tokenizer_config);
        free(txt);
        if (!cfg) return -1;
        c->bos = token_str(cfg, "bos_token");
        c->eos = token_str(cfg, "eos_token");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsString(t)) src = ds_strdup(t->valuestring);
        else if (cJSON_IsArray(t)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, t) {
                const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
                if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default") && cJSON_IsString(tt)) src = ds_strdup(tt->valuestring);
            }
        } else if (t && !cJSON_IsNull(t)) {
            cJSON_Delete(cfg);
            ds_chat_cfg_free(c);
            return ds_err("%s: chat_template must be a string or a list of {name, template}", tokenizer_config);
        }
        cJSON_Delete(cfg);
        if (src) c->where = ds_strdup(tokenizer_config);
    }
    if (template_file) {
        size_t n;
        free(src);
        src = ds_read_file(template_file, &n);
        if (!src) {
            ds_chat_cfg_free(c);
            return -1;
        }
        free(c->where);
        c->where = ds_strdup(template_file);
    }
    if (!src) return 0;
    c->tool_format = ds_tool_format_detect(src);
    c->tmpl = ds_jinja_parse(src, strlen(src));
    free(src);
    if (!c->tmpl) {
        ds_err_prefix("%s", c->where);
        ds_chat_cfg_free(c);
        return -1;
    }
    /* a trial render: a template that cannot render one user message is refused now */
    cJSON *msgs = cJSON_CreateArray(), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", "Hello");
    cJSON_AddItemToArray(msgs, m);
    char *r = ds_chat_template_apply(c->tmpl, msgs, 1, c->bos, c->eos);
    cJSON_Delete(msgs);
    if (!r) {
        ds_err_prefix("%s (rendering a one-message conversation)", c->where);
        ds_chat_cfg_free(c);
        return -1;
    }
    free(r);
    return 0;
}

void ds_chat_cfg_free(ds_chat_cfg *c) {
    ds_jinja_free(c->tmpl);
    free(c->bos), free(c->eos), free(c->where);
    memset(c, 0, sizeof *c);
}

static void add_id(int64_t *eos, int *n, int cap, int64_t id) {
    if (id < 0) return;
    for (int i = 0; i < *n; i++)
        if (eos[i] == id) return;
    if (*n < cap) eos[(*n)++] = id;
}

int ds_model_stop_ids(const char *model_dir, const ds_model *m, const ds_tokenizer *tok, int64_t *eos, int max, int *n) {
    int64_t geos[8];
    int ng = 0;
    *n = 0;
    if (ds_generation_config_eos(model_dir, geos, 8, &ng)) return -1;
    for (int i = 0; i < ng; i++) add_id(eos, n, max, geos[i]);
    const ds_config *c = &m->cfg;
    for (int i = 0; i < c->n_eos_token_ids; i++) add_id(eos, n, max, c->eos_token_ids[i]);
    if (c->n_eos_token_ids <= 1) add_id(eos, n, max, c->eos_token_id);
    if (tok) add_id(eos, n, max, ds_tokenizer_eos_id(tok));
    return 0;
}
