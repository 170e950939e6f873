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
const ds_st_tensor *ds_st_find(const ds_st_file *f, const char *name);

/* A set of files: one model.safetensors or the shards named by an index. */
typedef struct {
    ds_st_file *files;
    int nfiles;
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
/* W[i,j] = fp8(W8[i,j]) * S[i/bs0, j/bs1], ragged edge blocks allowed. */
int ds_st_dequant_fp8_block(const ds_st_tensor *w, const ds_st_tensor *scale_inv,
                            int64_t bs0, int64_t bs1, float *out);

/* Writer: add tensors (data is copied by reference until ds_st_write). */
typedef struct {
    const char *name;
    ds_dtype dtype;
    int ndim;
    int64_t shape[DS_ST_MAX_DIMS];
    const void *data;
} ds_st_entry;
/* Writes atomically (tmp + fsync + rename); tensors sorted by name, 8-byte
 * aligned header as HF does.  meta: NULL or pairs (key, value, ..., NULL). */
int ds_st_write(const char *path, const ds_st_entry *entries, int64_t n, const char *const *meta);

#endif
