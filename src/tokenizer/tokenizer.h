/*
 * tokenizer.h — dsv3's byte-level BPE tokenizer: loads and saves Hugging Face
 * tokenizer.json files (DeepSeek-V3, GPT-2, Llama-3 and Qwen style), encodes
 * exactly as Hugging Face `tokenizers` does, decodes (also as a stream), and
 * trains new vocabularies (ds_bpe_train, see below).
 *
 * Pipeline of one encode (each step as in `tokenizers`):
 *   text --added tokens (leftmost-longest)--> segments
 *        --normalizer (none or NFC)--> --pre-tokenizer chain (Split / Digits /
 *        ByteLevel, PCRE2 JIT)--> pre-tokens --BPE by merge rank--> ids
 * Text is bytes: invalid UTF-8 never crashes; such bytes are encoded as their
 * byte tokens, and decode gives the same bytes back.
 *
 * Thread safety: a loaded ds_tokenizer is read-only; encode may be called from
 * many threads at once (each thread has its own pre-token cache).
 */
#ifndef DS_TOKENIZER_H
#define DS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ds_tokenizer ds_tokenizer;

/* Load tokenizer.json.  path may be the file or a folder that holds it; a
 * tokenizer_config.json beside it (when present) gives bos/eos/add_bos.
 * NULL + ds_err("tokenizer.json: model.merges[12]: unknown token 'xy'") on failure. */
ds_tokenizer *ds_tokenizer_load(const char *path);
/* Load from tokenizer.json text in memory (name is used in messages). */
ds_tokenizer *ds_tokenizer_load_mem(const char *json, size_t len, const char *name);
void ds_tokenizer_free(ds_tokenizer *t);
/* Write tokenizer.json atomically (merges in the ["a","b"] form). 0 or -1. */
int ds_tokenizer_save(const ds_tokenizer *t, const char *path);

/* Encode len bytes of text.  allow_special: added tokens marked special are
 * recognized in the text (Hugging Face behaviour); 0 treats them as plain text
 * (added tokens not marked special are always recognized).  No BOS/EOS is
 * added (see ds_encode_opts.add_special).  Returns the count and a malloc'd
 * array in *ids_out (caller frees), or -1 with ds_err. */
int64_t ds_tokenizer_encode(const ds_tokenizer *t, const char *text, size_t len,
                            int allow_special, int32_t **ids_out);

/* Growable id buffer for bulk encoding (appends). */
typedef struct {
    int32_t *ids;
    int64_t n, cap;
} ds_ids;
void ds_ids_push(ds_ids *v, int32_t id);
void ds_ids_free(ds_ids *v);

typedef struct {
    int allow_special;   /* match special added tokens in the text */
    int add_special;     /* apply the post-processor template (BOS/EOS) */
    /* Token-boundary bias mitigation (DeepSeek-V3 §4.1, docs §9.3): with
     * probability p, a pre-token that joins punctuation with line breaks is
     * encoded as its two parts (punctuation, line breaks).  The choice is a
     * hash of (seed, byte offset of the piece), so serial and parallel
     * encoding agree. */
    double split_punct_nl_p;
    uint64_t seed;
} ds_encode_opts;

/* Encode and append to out.  Returns the number appended, or -1. */
int64_t ds_tokenizer_encode_ex(const ds_tokenizer *t, const char *text, size_t len,
                               const ds_encode_opts *o, ds_ids *out);
/* Encode ndocs documents in parallel (OpenMP over documents; a long document
 * is split at line boundaries into chunks that do not change the result).
 * out[i] receives document i's ids (appended).  0 or -1. */
int ds_tokenizer_encode_batch(const ds_tokenizer *t, int64_t ndocs, const char *const *texts,
                              const size_t *lens, const ds_encode_opts *o, ds_ids *out);
/* Encode one large text in parallel (256 KiB chunks cut where no pre-token
 * can cross: after a "\n" that follows a non-space byte and precedes an ASCII
 * letter or digit).  Gives exactly the serial result, whatever the thread
 * count; serial for tokenizers where such cuts are not known to be safe. */
int64_t ds_tokenizer_encode_parallel(const ds_tokenizer *t, const char *text, size_t len,
                                     const ds_encode_opts *o, ds_ids *out);

/* Decode to bytes (exact inverse of encode on the byte level; no lossy UTF-8
 * repair).  skip_special drops special added tokens.  Returns a malloc'd
 * NUL-terminated buffer and its length in *len, or NULL + ds_err on an id
 * out of range. */
char *ds_tokenizer_decode(const ds_tokenizer *t, const int32_t *ids, int64_t n,
                          int skip_special, size_t *len);
/* The bytes of one token (not NUL-terminated), or NULL when id is out of range. */
const char *ds_tokenizer_token_bytes(const ds_tokenizer *t, int32_t id, size_t *len);

/* Streaming decoder: feed ids one at a time; complete UTF-8 characters are
 * returned as soon as they are whole, a token that ends inside a character
 * waits for the next one.  Invalid sequences pass through as bytes. */
typedef struct {
    const ds_tokenizer *t;
    int skip_special;
    unsigned char pend[8];
    int npend;
    char out[4096 + 8];
} ds_decode_stream;
void ds_decode_stream_init(ds_decode_stream *s, const ds_tokenizer *t, int skip_special);
/* Returns bytes ready to print (valid until the next call) and their length,
 * or NULL + ds_err for a bad id.  Tokens longer than 4 KiB are returned whole
 * from an internal buffer too. */
const char *ds_decode_stream_next(ds_decode_stream *s, int32_t id, size_t *len);
/* Whatever is still pending (an incomplete character at the end). */
const char *ds_decode_stream_flush(ds_decode_stream *s, size_t *len);

/* ---- vocabulary ----------------------------------------------------------- */
int64_t ds_tokenizer_vocab_size(const ds_tokenizer *t); /* max id + 1 (model + added) */
/* The token's string as in tokenizer.json (byte-level mapped), or NULL. */
const char *ds_tokenizer_id_to_token(const ds_tokenizer *t, int32_t id);
/* Id of a token string (model vocab or added token), or -1. */
int32_t ds_tokenizer_token_to_id(const ds_tokenizer *t, const char *token);
int32_t ds_tokenizer_bos_id(const ds_tokenizer *t); /* -1 when none */
int32_t ds_tokenizer_eos_id(const ds_tokenizer *t); /* -1 when none */
int ds_tokenizer_add_bos(const ds_tokenizer *t);    /* tokenizer_config add_bos_token */
int ds_tokenizer_has_template(const ds_tokenizer *t); /* tokenizer.json has a TemplateProcessing post-processor */
int ds_tokenizer_is_special(const ds_tokenizer *t, int32_t id);
/* out[i] for i < n: the number of text bytes token i decodes to; 0 for
 * special tokens and ids the tokenizer lacks (the bytes of bits per byte). */
void ds_tokenizer_byte_lengths(const ds_tokenizer *t, int64_t *out, int64_t n);
/* One-line descriptions for `dsv3 tokenizer info`. */
int64_t ds_tokenizer_num_merges(const ds_tokenizer *t);
int64_t ds_tokenizer_num_added(const ds_tokenizer *t);
/* the id of added token i < ds_tokenizer_num_added */
int32_t ds_tokenizer_added_id(const ds_tokenizer *t, int64_t i);
/* Pre-tokenizer chain, e.g. "Split(Regex,Isolated) > ByteLevel(use_regex=0)";
 * written into buf (cap bytes). */
void ds_tokenizer_describe(const ds_tokenizer *t, char *buf, size_t cap);

/* Run only the pre-tokenizer chain on text (no added-token matching, no
 * normalizer); calls fn for each piece (bytes before the byte-level map). */
typedef void (*ds_pretok_fn)(void *ctx, const char *piece, size_t len);
int ds_tokenizer_pretokenize(const ds_tokenizer *t, const char *text, size_t len, ds_pretok_fn fn, void *ctx);

/* ---- training --------------------------------------------------------------- */
typedef enum {
    DS_TIE_HF = 0,  /* tokenizers' BpeTrainer: equal counts -> smaller (id_a, id_b) */
    DS_TIE_LEX = 1, /* CS336: equal counts -> lexicographically greater (bytes_a, bytes_b) */
} ds_tie_break;

typedef enum { DS_PRETOK_DEEPSEEK_V3 = 0, DS_PRETOK_GPT2 = 1, DS_PRETOK_LLAMA3 = 2 } ds_pretok_kind;

typedef struct {
    int64_t vocab_size;          /* including special tokens */
    const char *const *special;  /* special tokens, ids 0..nspecial-1 in this order */
    int nspecial;
    ds_pretok_kind pretok;
    ds_tie_break tie;
    /* 1: each line (with its "\n") is a sequence, as tokenizers' train_from_files;
     * 0: each file is one sequence (split at special tokens), as CS336. */
    int split_lines;
    int64_t min_frequency;
    int verbose;
    /* one of special, or NULL: the post-processor adds it in front of every
     * sequence (TemplateProcessing), as tokenizer_config's add_bos_token does */
    const char *bos;
} ds_bpe_train_opts;

/* Train on the given files; returns a tokenizer (ByteLevel BPE with the
 * chosen pre-tokenizer) or NULL + ds_err. */
ds_tokenizer *ds_bpe_train(const char *const *files, int nfiles, const ds_bpe_train_opts *o);
/* Train on texts in memory (same rules as the file version). */
ds_tokenizer *ds_bpe_train_texts(const char *const *texts, const size_t *lens, int ntexts,
                                 const ds_bpe_train_opts *o);
/* Merge i as its two token strings (tokenizer.json alphabet); 0 or -1. */
int ds_tokenizer_merge(const ds_tokenizer *t, int64_t i, const char **a, const char **b);

/* The byte <-> unicode map of byte-level BPE (GPT-2): byte b is written as the
 * codepoint ds_byte_to_cp(b). */
uint32_t ds_byte_to_cp(uint8_t b);

#endif
