/* bpe_train.c — placeholder */
#include "tokenizer/tok_internal.h"
#include "base/base.h"
ds_tokenizer *ds_bpe_train(const char *const *files, int nfiles, const ds_bpe_train_opts *o) { ds_err("not yet"); return NULL; }
ds_tokenizer *ds_bpe_train_texts(const char *const *texts, const size_t *lens, int ntexts, const ds_bpe_train_opts *o) { ds_err("not yet"); return NULL; }
