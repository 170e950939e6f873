/*
 * chat_cfg.h — what `dsv3 serve` and `dsv3 chat` need beside the model: the
 * chat template of tokenizer_config.json (a string, or the "default" entry
 * of a list of {name, template}) or of a --chat-template file, parsed and
 * test-rendered at start-up on a one-message conversation so a template
 * outside the supported subset fails before serving; its bos_token /
 * eos_token strings; and the stop ids (generation_config.json, config.json,
 * the tokenizer's EOS), as `dsv3 generate` gathers them.
 */
#ifndef DS_CHAT_CFG_H
#define DS_CHAT_CFG_H

#include <stdint.h>

#include "model/model.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    ds_jinja *tmpl; /* NULL: none */
    char *bos, *eos;
    char *where;    /* the file the template came from */
    int tool_format; /* ds_tool_format the template writes tool calls in (DS_TOOLS_NONE: none it names) */
} ds_chat_cfg;

/* tokenizer_config: path of tokenizer_config.json (may not exist: no template);
 * template_file: a file holding the template text, or NULL.  0 or -1 (ds_err). */
int ds_chat_cfg_load(ds_chat_cfg *c, const char *tokenizer_config, const char *template_file);
void ds_chat_cfg_free(ds_chat_cfg *c);

/* The stop ids of a model folder; *n their count (≤ max).  0 or -1. */
int ds_model_stop_ids(const char *model_dir, const ds_model *m, const ds_tokenizer *tok, int64_t *eos, int max, int *n);

#endif
