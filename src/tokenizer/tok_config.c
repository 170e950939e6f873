/*
 * tok_config.c — tokenizer_config.json and generation_config.json (see
 * tok_config.h).  The chat template below is DeepSeek-V3's, copied verbatim
 * from its tokenizer_config.json (../shared/data/deepseek_v3_tokenizer) and
 * written as a C literal.
 */
#include "tokenizer/tok_config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "base/base.h"
#include "io/json.h"
#include "tokenizer/tokenizer.h"

const char ds_deepseek_v3_chat_template[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% end"
    "if %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_pro"
    "mpt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'syste"
    "m' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content"
    "'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt"
    " + '\n\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.syst"
    "em_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_"
    "tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == '"
    "assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in "
    "message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool"
    "▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json"
    "' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is"
    "_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' "
    "+ tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' +"
    " '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- e"
    "ndfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not no"
    "ne %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentenc"
    "e｜>'}}{%- set ns.is_tool = false -%}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<"
    "｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns"
    ".is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begi"
    "n｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%"
    "- else %}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endi"
    "f %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% i"
    "f add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";

static int write_json(const char *path, cJSON *root) {
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    if (!s) return ds_err("%s: out of memory", path);
    size_t n = strlen(s);
    char *t = ds_malloc(n + 2);
    memcpy(t, s, n);
    t[n] = '\n';
    cJSON_free(s);
    int rc = ds_write_file_atomic(path, t, n + 1);
    free(t);
    return rc;
}

static void put_token(cJSON *root, const char *key, const char *tok) {
    if (tok) cJSON_AddStringToObject(root, key, tok);
    else cJSON_AddNullToObject(root, key);
}

int ds_tokenizer_config_write(const char *path, const char *bos, const char *eos, int add_bos,
                              int64_t model_max_length) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "add_bos_token", add_bos && bos);
    cJSON_AddBoolToObject(r, "add_eos_token", 0);
    put_token(r, "bos_token", bos);
    put_token(r, "eos_token", eos);
    put_token(r, "pad_token", eos); /* as DeepSeek-V3: padding with EOS */
    cJSON_AddNullToObject(r, "unk_token");
    cJSON_AddBoolToObject(r, "clean_up_tokenization_spaces", 0);
    cJSON_AddBoolToObject(r, "legacy", 1);
    cJSON_AddNumberToObject(r, "model_max_length", (double)(model_max_length > 0 ? model_max_length : 131072));
    cJSON_AddStringToObject(r, "tokenizer_class", "PreTrainedTokenizerFast");
    cJSON_AddStringToObject(r, "chat_template", ds_deepseek_v3_chat_template);
    return write_json(path, r);
}

char *ds_tokenizer_config_path_of(const char *tokenizer_path) {
    struct stat st;
    if (stat(tokenizer_path, &st) == 0 && S_ISDIR(st.st_mode)) return ds_path_join(tokenizer_path, "tokenizer_config.json");
    const char *sl = strrchr(tokenizer_path, '/');
    if (!sl) return ds_strdup("tokenizer_config.json");
    char *dir = ds_strdup(tokenizer_path);
    dir[sl - tokenizer_path] = 0;
    char *p = ds_path_join(*dir ? dir : "/", "tokenizer_config.json");
    free(dir);
    return p;
}

int ds_folder_write_tokenizer(const char *dir, const char *tokenizer_path, int64_t model_max_length) {
    struct stat st;
    char *src = (stat(tokenizer_path, &st) == 0 && S_ISDIR(st.st_mode)) ? ds_path_join(tokenizer_path, "tokenizer.json")
                                                                      : ds_strdup(tokenizer_path);
    char *cfgsrc = ds_tokenizer_config_path_of(tokenizer_path);
    char *dst = ds_path_join(dir, "tokenizer.json"), *cfgdst = ds_path_join(dir, "tokenizer_config.json");
    size_t n;
    char *data = ds_read_file(src, &n);
    int rc = data ? ds_write_file_atomic(dst, data, n) : -1;
    free(data);
    if (!rc && ds_file_exists(cfgsrc)) {
        char *txt = ds_read_file(cfgsrc, &n);
        cJSON *cfg = txt ? cJSON_ParseWithLength(txt, n) : NULL;
        free(txt);
        if (!cfg || !cJSON_IsObject(cfg)) {
            cJSON_Delete(cfg);
            rc = ds_err("%s: malformed JSON", cfgsrc);
        } else {
            /* a model folder chats: DeepSeek-V3's template when the source has none */
            const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
            if (!ct || cJSON_IsNull(ct)) {
                cJSON_DeleteItemFromObjectCaseSensitive(cfg, "chat_template");
                cJSON_AddStringToObject(cfg, "chat_template", ds_deepseek_v3_chat_template);
            }
            if (model_max_length > 0) {
                cJSON_DeleteItemFromObjectCaseSensitive(cfg, "model_max_length");
                cJSON_AddNumberToObject(cfg, "model_max_length", (double)model_max_length);
            }
            rc = write_json(cfgdst, cfg);
        }
    } else if (!rc) {
        ds_tokenizer *t = ds_tokenizer_load(src);
        if (!t) rc = -1;
        else {
            int32_t b = ds_tokenizer_bos_id(t), e = ds_tokenizer_eos_id(t);
            rc = ds_tokenizer_config_write(cfgdst, b >= 0 ? ds_tokenizer_id_to_token(t, b) : NULL,
                                           e >= 0 ? ds_tokenizer_id_to_token(t, e) : NULL, ds_tokenizer_add_bos(t),
                                           model_max_length);
            ds_tokenizer_free(t);
        }
    }
    free(src), free(cfgsrc), free(dst), free(cfgdst);
    return rc;
}

int ds_generation_config_write(const char *dir, int64_t bos, const int64_t *eos, int neos) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddBoolToObject(r, "_from_model_config", 1);
    if (bos >= 0) cJSON_AddNumberToObject(r, "bos_token_id", (double)bos);
    else cJSON_AddNullToObject(r, "bos_token_id");
    if (neos > 1) {
        cJSON *a = cJSON_AddArrayToObject(r, "eos_token_id");
        for (int i = 0; i < neos; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)eos[i]));
    } else if (neos == 1 && eos[0] >= 0) {
        cJSON_AddNumberToObject(r, "eos_token_id", (double)eos[0]);
    } else {
        cJSON_AddNullToObject(r, "eos_token_id");
    }
    char *p = ds_path_join(dir, "generation_config.json");
    int rc = write_json(p, r);
    free(p);
    return rc;
}

int ds_generation_config_eos(const char *dir, int64_t *eos, int max, int *n) {
    *n = 0;
    char *p = ds_path_join(dir, "generation_config.json");
    if (!ds_file_exists(p)) {
        free(p);
        return 0;
    }
    size_t len;
    char *txt = ds_read_file(p, &len);
    cJSON *r = txt ? cJSON_ParseWithLength(txt, len) : NULL;
    free(txt);
    int rc = 0;
    if (!r || !cJSON_IsObject(r)) {
        rc = ds_err("%s: malformed JSON", p);
    } else {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "eos_token_id"), *x;
        if (cJSON_IsNumber(e)) {
            if (max > 0 && e->valuedouble >= 0) eos[(*n)++] = (int64_t)e->valuedouble;
        } else if (cJSON_IsArray(e)) {
            cJSON_ArrayForEach(x, e) {
                if (!cJSON_IsNumber(x) || x->valuedouble < 0) {
                    rc = ds_err("%s: eos_token_id: expected non-negative integers", p);
                    break;
                }
                if (*n < max) eos[(*n)++] = (int64_t)x->valuedouble;
            }
        } else if (e && !cJSON_IsNull(e)) {
            rc = ds_err("%s: eos_token_id: expected an integer, a list of integers or null", p);
        }
    }
    cJSON_Delete(r);
    free(p);
    return rc;
}
