/*
 * safetensors.h — read (mmap, bounds-checked) and write (atomic) safetensors.
 *
 * File layout:
 *   u64 little-endian N | N bytes JSON header | data
 *   header: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..],
 *            "data_offsets": [begin, end]}, ...}, offsets relative to data start.
 * Every offset and shape is checked against the file size and dtype; tensors
 * may not overlap.  A sharded model is a folder with model.safetensors.index.json
 * ({"weight_map": {name: file}}); ds_st_set opens either form.
 */
#ifndef DS_SAFETENSORS_H
#define DS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "num/dtype.h"

#define DS_ST_MAX_DIMS 8

typedef struct {
    char *name;
    ds_dtype dtype;
    int ndim;
    int64_t shape[DS_ST_MAX_DIMS];
    int64_t numel;
    const void *data;   /* points into the mapping */
    size_t nbytes;
} ds_st_tensor;

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    ds_st_tensor *tensors;
    int64_t n;
    char **meta_keys, **meta_vals; /* __metadata__ */
    int64_t n_meta;
} ds_st_file;

int ds_st_open(ds_st_file *f, const char *path);
void ds_st_close(ds_st_file *f);
/* Parse a safetensors image held in memory (tests, fuzzing); what names it in
 * messages; data must outlive f (close with ds_st_close). */
int ds_st_parse_buffer(ds_st_file *f, const void *data, size_t size, const char *what);
const ds_st_tensor *ds_st_find(const ds_st_file *f, const char *name);

/* A set of files: one model.safetensors or the shards named by an index. */
typedef struct {
    const ds_st_tensor *t;
    int file; /* index into files */
} ds_st_ref;
typedef struct {
    ds_st_file *files;
    int nfiles;
    ds_st_ref *refs;  /* every tensor of every file, sorted by name (for lookup) */
    int64_t nrefs;
} ds_st_set;
/* dir: a model folder (reads model.safetensors.index.json if present, else
 * model.safetensors), or a path to a single .safetensors file. */
int ds_st_set_open(ds_st_set *s, const char *dir);
void ds_st_set_close(ds_st_set *s);
/* Finds a tensor; *file_out (optional) gets the file path for messages. */
const ds_st_tensor *ds_st_set_find(const ds_st_set *s, const char *name, const char **file_out);

/* Copy a tensor into FP32 (converting bf16/f16/fp8/ints).  For F8 weights the
 * caller applies scale_inv (see ds_st_dequant_fp8_block). */
int ds_st_to_f32(const ds_st_tensor *t, float *out);
/* Its scalar reference, one element at a time (tests compare the two). */
int ds_st_to_f32_ref(const ds_st_tensor *t, float *out);
/* W[i,j] = fp8(W8[i,j]) * S[i/bs0, j/bs1], ragged edge blocks allowed. */
int ds_st_dequant_fp8_block(const ds_st_tensor *w, const ds_st_tensor *scale_inv,
                            int64_t bs0, int64_t bs1, float *out);

/* Load a tensor into FP32 with a shape check: a shape other than the
 * expected one is an error ("model.safetensors: model.norm.weight: shape
 * [32, 64], expected [32, 48]").  An F8 weight that has "<name>_scale_inv"
 * beside it is dequantized with 128x128 blocks. */
int ds_st_set_read_f32(const ds_st_set *s, const char *name, int ndim, const int64_t *shape, float *out);
/* Same for one file. */
int ds_st_read_f32(const ds_st_file *f, const char *name, int ndim, const int64_t *shape, float *out);

/* Writer: add tensors (data is copied by reference until ds_st_write). */
typedef struct {
    const char *name;
    ds_dtype dtype;
    int ndim;
    int64_t shape[DS_ST_MAX_DIMS];
    const void *data;
} ds_st_entry;
/* Writes atomically (tmp + fsync + rename), byte for byte as the Python
 * safetensors library (0.4+) does: data ordered by dtype (8-byte types first,
 * so every tensor stays aligned), then by name; header JSON without spaces,
 * listing "__metadata__" first and then the tensors in data order, padded
 * with spaces to a multiple of 8 bytes.  meta: NULL or pairs (key, value,
 * ..., NULL), written in key order (HF writes {"format": "pt"}).  Bad entries
 * (duplicate or empty names, negative shapes, NULL data) are errors and
 * nothing is written. */
int ds_st_write(const char *path, const ds_st_entry *entries, int64_t n, const char *const *meta);

/* Write a model folder's weights: model.safetensors when everything fits in
 * max_shard_bytes (<= 0: no limit), else shards model-00001-of-0000N.safetensors
 * (tensors in name order, a new shard when the next tensor would pass the
 * limit; a tensor larger than the limit gets a shard of its own) and
 * model.safetensors.index.json as transformers writes it (sorted keys,
 * metadata total_parameters / total_size).  Each file is written atomically,
 * the index last; weight files of an earlier save that the new one does not
 * use (other shard names, a single file replaced by shards or the reverse)
 * are removed afterwards. */
int ds_st_write_model(const char *dir, const ds_st_entry *entries, int64_t n, const char *const *meta,
                      int64_t max_shard_bytes);

#endif
