/*
 * shard.h — token shard files: the output of `dsv3 data prepare`, the input of
 * the training loader.
 *
 * Layout (all little-endian), 64-byte header then the tokens:
 *
 *   off size  field
 *     0    8  magic "DSV3TOK\0"
 *     8    4  u32 version (1)
 *    12    4  u32 token width in bytes (2 or 4)
 *    16    8  u64 number of tokens N
 *    24    8  u64 tokenizer hash (ds_hash64 of the tokenizer.json bytes)
 *    32    4  u32 vocab size
 *    36    4  i32 document separator id (BOS/EOS written before each document)
 *    40    8  u64 number of documents
 *    48   16  reserved, zero
 *    64  N*w  tokens (u16 or u32)
 *
 * The file size must be exactly 64 + N*w; every token must be < vocab size.
 */
#ifndef DS_SHARD_H
#define DS_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

#define DS_SHARD_MAGIC "DSV3TOK"
#define DS_SHARD_VERSION 1
#define DS_SHARD_HEADER 64

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    const uint8_t *tokens;  /* start of the token area */
    uint32_t width;         /* 2 or 4 */
    uint64_t n_tokens, n_docs, tokenizer_hash;
    uint32_t vocab_size;
    int32_t sep_id;
} ds_shard;

/* Opens and validates a shard.  expect_hash != 0 must equal the stored hash
 * ("shard made with another tokenizer"). */
int ds_shard_open(ds_shard *s, const char *path, uint64_t expect_hash);
void ds_shard_close(ds_shard *s);
static inline int32_t ds_shard_token(const ds_shard *s, uint64_t i) {
    if (s->width == 2) {
        uint16_t v;
        __builtin_memcpy(&v, s->tokens + 2 * i, 2);
        return v;
    }
    uint32_t v;
    __builtin_memcpy(&v, s->tokens + 4 * i, 4);
    return (int32_t)v;
}

/* Streaming writer: tokens are appended, the header is completed at commit,
 * and the file appears atomically (nothing is left on failure). */
typedef struct {
    ds_afile af;
    uint32_t width, vocab_size;
    int32_t sep_id;
    uint64_t n_tokens, n_docs, tokenizer_hash;
    int failed;
} ds_shard_writer;

int ds_shard_writer_open(ds_shard_writer *w, const char *path, uint32_t vocab_size,
                         int32_t sep_id, uint64_t tokenizer_hash);
/* Appends one document: the separator, then the tokens. */
int ds_shard_writer_doc(ds_shard_writer *w, const int32_t *ids, int64_t n);
int ds_shard_writer_commit(ds_shard_writer *w);
void ds_shard_writer_abort(ds_shard_writer *w);

#endif
