/*
 * tok_config.h — the JSON files that travel with tokenizer.json so that
 * transformers reads a dsv3 tokenizer or model folder as dsv3 does:
 *   tokenizer_config.json   bos/eos (and pad) tokens, add_bos_token,
 *                           model_max_length, DeepSeek-V3's chat template
 *   generation_config.json  bos_token_id / eos_token_id (generate stops at EOS)
 */
#ifndef DS_TOK_CONFIG_H
#define DS_TOK_CONFIG_H

#include <stdint.h>

/* DeepSeek-V3's default BOS / EOS tokens and its chat template (the
 * chat_template string of deepseek-ai/DeepSeek-V3's tokenizer_config.json,
 * embedded verbatim). */
#define DS_DEEPSEEK_BOS "<｜begin▁of▁sentence｜>"
#define DS_DEEPSEEK_EOS "<｜end▁of▁sentence｜>"
extern const char ds_deepseek_v3_chat_template[];

/* Write tokenizer_config.json at path (atomically).  bos/eos may be NULL
 * (written as null); model_max_length <= 0 writes DeepSeek-V3's 131072. */
int ds_tokenizer_config_write(const char *path, const char *bos, const char *eos, int add_bos,
                              int64_t model_max_length);

/* The tokenizer_config.json beside a tokenizer.json path (or in a folder);
 * malloc'd, whether it exists or not. */
char *ds_tokenizer_config_path_of(const char *tokenizer_path);

/* Put tokenizer.json (the exact bytes of tokenizer_path: a file or a folder
 * holding one) and a tokenizer_config.json into the folder dir: the one beside
 * the source with model_max_length set to the model's context when > 0 (and
 * DeepSeek-V3's chat template added when it has none), or,
 * when there is none, one made from the bos/eos the tokenizer itself names.
 * Every file is written atomically. */
int ds_folder_write_tokenizer(const char *dir, const char *tokenizer_path, int64_t model_max_length);

/* dir/generation_config.json with bos_token_id and eos_token_id (one id, or a
 * list when neos > 1); a negative id is written as null. */
int ds_generation_config_write(const char *dir, int64_t bos, const int64_t *eos, int neos);

/* eos_token_id of dir/generation_config.json (an integer or a list) into
 * eos[0..max); *n = 0 when the file or the key is absent.  0, or -1 with
 * ds_err on malformed JSON. */
int ds_generation_config_eos(const char *dir, int64_t *eos, int max, int *n);

#endif
