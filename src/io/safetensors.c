/*
 * safetensors.c — safetensors read (mmap, every header field bounds-checked),
 * sharded sets (model.safetensors.index.json), FP32 conversion, FP8 block
 * dequantization, and the atomic writer.
 *
 * File layout (all offsets in bytes):
 *
 *   0        8                 8+N                              size
 *   | N: u64 | header: N bytes  | data: size-8-N bytes           |
 *              JSON, UTF-8,      tensor i occupies data[begin_i, end_i)
 *              may end in spaces
 *
 * Checks on read, each a one-line error naming the file: size >= 8; N <= size-8
 * and N <= 100 MB (the Python library's limit); header valid UTF-8 and a JSON
 * object; each tensor an object with a known "dtype", a "shape" of at most
 * DS_ST_MAX_DIMS non-negative integers whose product (times the element size)
 * does not overflow, and "data_offsets" [begin, end] with begin <= end <= data
 * size and end - begin == numel * element size; no two tensors overlap; no
 * name twice.  Gaps between tensors are allowed on read (the Python library
 * refuses them; they are harmless here), never written.
 */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "base/base.h"
#include "io/json.h"

#define ST_MAX_HEADER 100000000ULL

/* ---- helpers ---------------------------------------------------------------- */
static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* numel and bytes of a shape, or -1 on overflow (size_t and int64). */
static int shape_bytes(int ndim, const int64_t *shape, size_t esize, int64_t *numel, size_t *nbytes) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (__builtin_mul_overflow(n, shape[i], &n)) return -1;
    }
    size_t b;
    if (__builtin_mul_overflow((size_t)n, esize, &b)) return -1;
    if (b > (size_t)INT64_MAX) return -1;
    *numel = n;
    *nbytes = b;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const ds_st_tensor *)a)->name, ((const ds_st_tensor *)b)->name);
}

static int cmp_ptr_data(const void *a, const void *b) {
    const ds_st_tensor *x = *(const ds_st_tensor *const *)a, *y = *(const ds_st_tensor *const *)b;
    const char *p = x->data, *q = y->data;
    if (p != q) return p < q ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static void file_free(ds_st_file *f) {
    if (f->tensors)
        for (int64_t i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int64_t i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->meta_keys);
    free(f->meta_vals);
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---- header parsing ------------------------------------------------------------ */
static int parse_tensor(ds_st_file *f, ds_st_tensor *t, const cJSON *v, const char *base, size_t data_size) {
    const char *P = f->path, *name = ds_esc(t->name); /* from the file */
    if (!cJSON_IsObject(v)) return ds_err("%s: %s: expected an object, got %s", P, name, ds_json_type_name(v));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(v, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(v, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(v, "data_offsets");
    if (!dt) return ds_err("%s: %s: dtype: missing", P, name);
    if (!cJSON_IsString(dt)) return ds_err("%s: %s: dtype: expected a string, got %s", P, name, ds_json_type_name(dt));
    int d = ds_dtype_from_st_name(dt->valuestring);
    if (d < 0) return ds_err("%s: %s: unknown dtype %s", P, name, ds_dquote(dt->valuestring));
    t->dtype = (ds_dtype)d;
    if (!sh) return ds_err("%s: %s: shape: missing", P, name);
    if (!cJSON_IsArray(sh)) return ds_err("%s: %s: shape: expected an array, got %s", P, name, ds_json_type_name(sh));
    int nd = cJSON_GetArraySize(sh);
    if (nd > DS_ST_MAX_DIMS) return ds_err("%s: %s: shape has %d dimensions (at most %d)", P, name, nd, DS_ST_MAX_DIMS);
    t->ndim = nd;
    for (int i = 0; i < nd; i++) {
        const cJSON *e = cJSON_GetArrayItem(sh, i);
        if (ds_json_int64(e, &t->shape[i]) != 0 || t->shape[i] < 0)
            return ds_err("%s: %s: shape: dimension %d is not a non-negative integer", P, name, i);
    }
    size_t esize = ds_dtype_table[d].size;
    char ss[128];
    shape_str(ss, sizeof ss, nd, t->shape);
    if (shape_bytes(nd, t->shape, esize, &t->numel, &t->nbytes) != 0)
        return ds_err("%s: %s: shape %s overflows", P, name, ss);
    if (!off) return ds_err("%s: %s: data_offsets: missing", P, name);
    int64_t b, e;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || ds_json_int64(cJSON_GetArrayItem(off, 0), &b) ||
        ds_json_int64(cJSON_GetArrayItem(off, 1), &e))
        return ds_err("%s: %s: data_offsets: expected [begin, end] integers", P, name);
    if (b < 0 || e < b)
        return ds_err("%s: %s: data_offsets [%lld, %lld] are not an increasing pair", P, name, (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return ds_err("%s: %s: data_offsets [%lld, %lld] out of range (data section has %zu bytes)", P, name,
                      (long long)b, (long long)e, data_size);
    if ((uint64_t)(e - b) != t->nbytes)
        return ds_err("%s: %s: dtype/shape mismatch: %s %s needs %zu bytes, data_offsets give %lld", P, name,
                      ds_dtype_table[d].st_name, ss, t->nbytes, (long long)(e - b));
    t->data = base + b;
    return 0;
}

static int parse_header(ds_st_file *f, const char *hdr, size_t n, const char *base, size_t data_size) {
    const char *P = f->path;
    size_t bad;
    if (!ds_utf8_valid((const unsigned char *)hdr, n, &bad))
        return ds_err("%s: header is not valid UTF-8 (byte %zu)", P, bad);
    char what[600];
    snprintf(what, sizeof what, "%s: header", P);
    cJSON *root = ds_json_parse_keep_dups(hdr, n, what); /* a repeated tensor name is refused below */
    if (!root) return -1;
    if (!cJSON_IsObject(root)) {
        ds_err("%s: header: expected a JSON object, got %s", P, ds_json_type_name(root));
        cJSON_Delete(root);
        return -1;
    }
    int64_t cnt = 0;
    for (const cJSON *it = root->child; it; it = it->next) cnt++;
    f->tensors = ds_calloc((size_t)(cnt ? cnt : 1), sizeof *f->tensors);
    int rc = 0;
    for (const cJSON *it = root->child; it && !rc; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (f->meta_keys) { rc = ds_err("%s: __metadata__ appears twice", P); break; }
            if (cJSON_IsNull(it)) continue;
            if (!cJSON_IsObject(it)) { rc = ds_err("%s: __metadata__: expected an object, got %s", P, ds_json_type_name(it)); break; }
            int64_t m = 0;
            for (const cJSON *kv = it->child; kv; kv = kv->next) m++;
            f->meta_keys = ds_calloc((size_t)(m ? m : 1), sizeof(char *));
            f->meta_vals = ds_calloc((size_t)(m ? m : 1), sizeof(char *));
            for (const cJSON *kv = it->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv)) {
                    rc = ds_err("%s: __metadata__: %s: expected a string, got %s", P, ds_esc(kv->string), ds_json_type_name(kv));
                    break;
                }
                f->meta_keys[f->n_meta] = ds_strdup(kv->string);
                f->meta_vals[f->n_meta] = ds_strdup(kv->valuestring);
                f->n_meta++;
            }
            continue;
        }
        ds_st_tensor *t = &f->tensors[f->n];
        t->name = ds_strdup(it->string);
        f->n++;
        rc = parse_tensor(f, t, it, base, data_size);
    }
    cJSON_Delete(root);
    if (rc) return -1;
    /* names unique (cJSON keeps duplicate keys) */
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_tensor_name);
    for (int64_t i = 1; i < f->n; i++)
        if (!strcmp(f->tensors[i].name, f->tensors[i - 1].name))
            return ds_err("%s: tensor %s appears twice in the header", P, ds_dquote(f->tensors[i].name));
    /* no overlap: sort by start, each must begin at or after the previous end */
    if (f->n > 1) {
        const ds_st_tensor **by = ds_malloc((size_t)f->n * sizeof *by);
        for (int64_t i = 0; i < f->n; i++) by[i] = &f->tensors[i];
        qsort(by, (size_t)f->n, sizeof *by, cmp_ptr_data);
        for (int64_t i = 1; i < f->n; i++) {
            const ds_st_tensor *a = by[i - 1], *b = by[i];
            if (a->nbytes && b->nbytes && (const char *)b->data < (const char *)a->data + a->nbytes) {
                ds_err("%s: tensors %s and %s overlap (data_offsets [%lld, %lld] and [%lld, %lld])", P, ds_dquote(a->name),
                       ds_dquote(b->name), (long long)((const char *)a->data - base),
                       (long long)((const char *)a->data - base + (int64_t)a->nbytes),
                       (long long)((const char *)b->data - base),
                       (long long)((const char *)b->data - base + (int64_t)b->nbytes));
                free(by);
                return -1;
            }
        }
        free(by);
    }
    return 0;
}

/* Parse an in-memory image (used by ds_st_open and the fuzz target). */
static int st_parse_image(ds_st_file *f, const unsigned char *p, size_t size) {
    const char *P = f->path;
    if (size < 8) return ds_err("%s: truncated: %zu bytes, a safetensors file has at least 8", P, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    if (n > size - 8)
        return ds_err("%s: header length %llu runs past the end of the file (%zu bytes)", P, (unsigned long long)n, size);
    if (n > ST_MAX_HEADER)
        return ds_err("%s: header length %llu exceeds the limit of %llu bytes", P, (unsigned long long)n, ST_MAX_HEADER);
    return parse_header(f, (const char *)p + 8, (size_t)n, (const char *)p + 8 + n, size - 8 - (size_t)n);
}

int ds_st_parse_buffer(ds_st_file *f, const void *data, size_t size, const char *what) {
    memset(f, 0, sizeof *f);
    f->path = ds_strdup(what);
    if (st_parse_image(f, data, size) != 0) { file_free(f); return -1; }
    return 0;
}

int ds_st_open(ds_st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = ds_strdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        ds_err("%s: %s", path, strerror(errno));
        file_free(f);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ds_err("%s: not a regular file", path);
        close(fd);
        file_free(f);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    if (size >= 8) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            ds_err("%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            file_free(f);
            return -1;
        }
        f->map = m;
        f->map_size = size;
    }
    close(fd);
    if (st_parse_image(f, f->map, size) != 0) { file_free(f); return -1; }
    return 0;
}

void ds_st_close(ds_st_file *f) { file_free(f); }

const ds_st_tensor *ds_st_find(const ds_st_file *f, const char *name) {
    int64_t lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (!c) return &f->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

/* ---- sets: one file or an index with shards ------------------------------------ */
static int cmp_ref(const void *a, const void *b) {
    return strcmp(((const ds_st_ref *)a)->t->name, ((const ds_st_ref *)b)->t->name);
}

static int set_build_refs(ds_st_set *s) {
    int64_t n = 0;
    for (int i = 0; i < s->nfiles; i++) n += s->files[i].n;
    s->refs = ds_malloc((size_t)(n ? n : 1) * sizeof *s->refs);
    s->nrefs = 0;
    for (int i = 0; i < s->nfiles; i++)
        for (int64_t k = 0; k < s->files[i].n; k++) s->refs[s->nrefs++] = (ds_st_ref){&s->files[i].tensors[k], i};
    qsort(s->refs, (size_t)s->nrefs, sizeof *s->refs, cmp_ref);
    for (int64_t i = 1; i < s->nrefs; i++)
        if (!strcmp(s->refs[i].t->name, s->refs[i - 1].t->name))
            return ds_err("%s: tensor %s is also in %s", s->files[s->refs[i].file].path, ds_dquote(s->refs[i].t->name),
                          s->files[s->refs[i - 1].file].path);
    return 0;
}

static int shard_name_ok(const char *f) {
    if (!f[0] || f[0] == '/') return 0;
    if (!strcmp(f, "..") || !strncmp(f, "../", 3) || strstr(f, "/../") ||
        (strlen(f) >= 3 && !strcmp(f + strlen(f) - 3, "/..")))
        return 0;
    return 1;
}

static int set_open_index(ds_st_set *s, const char *dir, const char *ipath) {
    size_t len;
    char *text = ds_read_file(ipath, &len);
    if (!text) return -1;
    cJSON *root = ds_json_parse(text, len, ipath);
    free(text);
    if (!root) return -1;
    int rc = 0;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root)) rc = ds_err("%s: expected a JSON object", ipath);
    else if (!wm) rc = ds_err("%s: weight_map: missing", ipath);
    else if (!cJSON_IsObject(wm)) rc = ds_err("%s: weight_map: expected an object, got %s", ipath, ds_json_type_name(wm));
    /* distinct shard names, in order of first appearance */
    char **names = NULL;
    int nn = 0, cap = 0;
    for (const cJSON *it = rc ? NULL : wm->child; it; it = it->next) {
        if (!cJSON_IsString(it)) { rc = ds_err("%s: weight_map: %s: expected a file name", ipath, ds_esc(it->string)); break; }
        if (!shard_name_ok(it->valuestring)) {
            rc = ds_err("%s: weight_map: %s: shard name %s must be a relative path inside the folder", ipath,
                        ds_esc(it->string), ds_dquote(it->valuestring));
            break;
        }
        int k = 0;
        for (; k < nn; k++) if (!strcmp(names[k], it->valuestring)) break;
        if (k == nn) {
            if (nn == cap) { cap = cap ? 2 * cap : 8; names = ds_realloc(names, (size_t)cap * sizeof *names); }
            names[nn++] = it->valuestring;
        }
    }
    if (!rc && nn == 0) rc = ds_err("%s: weight_map is empty", ipath);
    if (!rc) {
        s->files = ds_calloc((size_t)nn, sizeof *s->files);
        for (int k = 0; k < nn && !rc; k++) {
            char *p = ds_path_join(dir, names[k]);
            if (ds_st_open(&s->files[k], p) != 0) {
                if (!ds_file_exists(p)) ds_err("%s: shard %s is missing (%s)", ipath, ds_dquote(names[k]), ds_esc(p));
                rc = -1;
            } else {
                s->nfiles++;
            }
            free(p);
        }
    }
    /* every tensor the index names is in the shard it names */
    for (const cJSON *it = rc ? NULL : wm->child; it; it = it->next) {
        int k = 0;
        for (; k < nn; k++) if (!strcmp(names[k], it->valuestring)) break;
        if (!ds_st_find(&s->files[k], it->string)) {
            rc = ds_err("%s: tensor %s is not in shard %s as the index says", ipath, ds_dquote(it->string), ds_esc(names[k]));
            break;
        }
    }
    free(names);
    cJSON_Delete(root);
    return rc;
}

int ds_st_set_open(ds_st_set *s, const char *dir) {
    memset(s, 0, sizeof *s);
    struct stat st;
    if (stat(dir, &st) != 0) return ds_err("%s: %s", dir, strerror(errno));
    int rc;
    if (S_ISDIR(st.st_mode)) {
        char *ipath = ds_path_join(dir, "model.safetensors.index.json");
        char *spath = ds_path_join(dir, "model.safetensors");
        if (ds_file_exists(ipath)) {
            rc = set_open_index(s, dir, ipath);
        } else if (ds_file_exists(spath)) {
            s->files = ds_calloc(1, sizeof *s->files);
            rc = ds_st_open(&s->files[0], spath);
            if (!rc) s->nfiles = 1;
        } else {
            rc = ds_err("%s: no model.safetensors or model.safetensors.index.json in this folder", dir);
        }
        free(ipath);
        free(spath);
    } else {
        s->files = ds_calloc(1, sizeof *s->files);
        rc = ds_st_open(&s->files[0], dir);
        if (!rc) s->nfiles = 1;
    }
    if (!rc) rc = set_build_refs(s);
    if (rc) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", ds_errmsg());
        ds_st_set_close(s);
        ds_err("%s", keep);
    }
    return rc;
}

void ds_st_set_close(ds_st_set *s) {
    for (int i = 0; i < s->nfiles; i++) ds_st_close(&s->files[i]);
    free(s->files);
    free(s->refs);
    memset(s, 0, sizeof *s);
}

const ds_st_tensor *ds_st_set_find(const ds_st_set *s, const char *name, const char **file_out) {
    int64_t lo = 0, hi = s->nrefs - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->refs[mid].t->name, name);
        if (!c) {
            if (file_out) *file_out = s->files[s->refs[mid].file].path;
            return s->refs[mid].t;
        }
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

/* ---- conversion ------------------------------------------------------------------ */
/* Element i of a tensor of any dtype as float (unaligned-safe). */
static inline float elem_f32(ds_dtype d, const unsigned char *p, int64_t i) {
    switch (d) {
    case DS_F32: { float v; memcpy(&v, p + 4 * i, 4); return v; }
    case DS_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return ds_f16_to_f32(h); }
    case DS_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return ds_bf16_to_f32(h); }
    case DS_F8_E4M3: return ds_e4m3_to_f32(p[i]);
    case DS_F8_E5M2: return ds_e5m2_to_f32(p[i]);
    case DS_F64: { double v; memcpy(&v, p + 8 * i, 8); return (float)v; }
    case DS_I8: return (float)(int8_t)p[i];
    case DS_U8: return (float)p[i];
    case DS_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); return (float)v; }
    case DS_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return (float)v; }
    case DS_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return (float)v; }
    case DS_BOOL: return p[i] ? 1.0f : 0.0f;
    default: return 0.0f;
    }
}

/* Fast bulk conversions; elem_f32 above is their scalar reference (tests
 * compare the two over every bit pattern).  Chunks of 64K elements per thread. */
#define CONV_CHUNK ((int64_t)1 << 16)

static void bf16_to_f32_run(const unsigned char *p, int64_t n, float *out) {
    int64_t i = 0;
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(out + i, _mm256_castsi256_ps(w));
    }
#endif
    for (; i < n; i++) out[i] = elem_f32(DS_BF16, p, i);
}

static void f16_to_f32_run(const unsigned char *p, int64_t n, float *out) {
    int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
#endif
    for (; i < n; i++) out[i] = elem_f32(DS_F16, p, i);
}

static void fp8_table(ds_dtype d, float lut[256]) {
    for (int v = 0; v < 256; v++) lut[v] = d == DS_F8_E4M3 ? ds_e4m3_to_f32((uint8_t)v) : ds_e5m2_to_f32((uint8_t)v);
}

int ds_st_to_f32(const ds_st_tensor *t, float *out) {
    if ((unsigned)t->dtype >= DS_DTYPE_COUNT) return ds_err("%s: invalid dtype", ds_esc(t->name));
    const unsigned char *p = t->data;
    const ds_dtype d = t->dtype;
    const int64_t n = t->numel;
    float lut[256];
    if (d == DS_F8_E4M3 || d == DS_F8_E5M2) fp8_table(d, lut);
    const int64_t nchunks = ds_ceil_div(n, CONV_CHUNK);
    #pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t i0 = c * CONV_CHUNK, m = n - i0 < CONV_CHUNK ? n - i0 : CONV_CHUNK;
        const size_t es = ds_dtype_table[d].size;
        switch (d) {
        case DS_F32: memcpy(out + i0, p + 4 * i0, (size_t)m * 4); break;
        case DS_BF16: bf16_to_f32_run(p + es * i0, m, out + i0); break;
        case DS_F16: f16_to_f32_run(p + es * i0, m, out + i0); break;
        case DS_F8_E4M3:
        case DS_F8_E5M2:
            for (int64_t i = 0; i < m; i++) out[i0 + i] = lut[p[i0 + i]];
            break;
        default:
            for (int64_t i = 0; i < m; i++) out[i0 + i] = elem_f32(d, p + es * i0, i);
        }
    }
    return 0;
}

/* The scalar reference of ds_st_to_f32 (for tests). */
int ds_st_to_f32_ref(const ds_st_tensor *t, float *out) {
    if ((unsigned)t->dtype >= DS_DTYPE_COUNT) return ds_err("%s: invalid dtype", ds_esc(t->name));
    for (int64_t i = 0; i < t->numel; i++) out[i] = elem_f32(t->dtype, t->data, i);
    return 0;
}

int ds_st_dequant_fp8_block(const ds_st_tensor *w, const ds_st_tensor *s, int64_t bs0, int64_t bs1, float *out) {
    if (w->dtype != DS_F8_E4M3 && w->dtype != DS_F8_E5M2)
        return ds_err("%s: expected an F8_E4M3 or F8_E5M2 weight for block dequantization, got %s", ds_esc(w->name),
                      ds_dtype_table[w->dtype].st_name);
    if (w->ndim != 2) return ds_err("%s: block-scaled F8 weight must be 2-D, got %d dimensions", ds_esc(w->name), w->ndim);
    if (bs0 < 1 || bs1 < 1) return ds_err("%s: block size %lldx%lld is not positive", ds_esc(w->name), (long long)bs0, (long long)bs1);
    if (!ds_dtype_table[s->dtype].is_float)
        return ds_err("%s: scale must be a float tensor, got %s", ds_esc(s->name), ds_dtype_table[s->dtype].st_name);
    int64_t M = w->shape[0], N = w->shape[1];
    int64_t sm = ds_ceil_div(M, bs0), sn = ds_ceil_div(N, bs1);
    if (s->ndim != 2 || s->shape[0] != sm || s->shape[1] != sn) {
        char a[128], b[128];
        shape_str(a, sizeof a, s->ndim, s->shape);
        int64_t want[2] = {sm, sn};
        shape_str(b, sizeof b, 2, want);
        return ds_err("%s: shape %s, expected %s for weight %s [%lld, %lld] in %lldx%lld blocks", ds_esc(s->name), a, b, ds_esc(w->name),
                      (long long)M, (long long)N, (long long)bs0, (long long)bs1);
    }
    const unsigned char *q = w->data;
    const unsigned char *sp = s->data;
    ds_dtype sd = s->dtype;
    float lut[256];
    fp8_table(w->dtype, lut);
    // W (M, N) = W8 (M, N) * S (ceil(M/bs0), ceil(N/bs1)) broadcast per block
    #pragma omp parallel for schedule(static) if (M * N > (1 << 16))
    for (int64_t i = 0; i < M; i++) {
        const int64_t srow = (i / bs0) * sn;
        for (int64_t j0 = 0; j0 < N; j0 += bs1) {
            float sc = elem_f32(sd, sp, srow + j0 / bs1);
            int64_t j1 = j0 + bs1 < N ? j0 + bs1 : N;
            for (int64_t j = j0; j < j1; j++) out[i * N + j] = lut[q[i * N + j]] * sc;
        }
    }
    return 0;
}

static int read_f32_common(const ds_st_tensor *t, const ds_st_tensor *scale, const char *file, const char *name,
                           int ndim, const int64_t *shape, float *out) {
    if (!t) return ds_err("%s: tensor \"%s\" not found", file, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, shape);
        return ds_err("%s: %s: shape %s, expected %s", file, name, a, b);
    }
    if (scale && (t->dtype == DS_F8_E4M3 || t->dtype == DS_F8_E5M2)) {
        if (ds_st_dequant_fp8_block(t, scale, 128, 128, out) != 0) return ds_err_prefix("%s", file);
        return 0;
    }
    return ds_st_to_f32(t, out);
}

static char *scale_name(const char *name) {
    size_t n = strlen(name);
    char *p = ds_malloc(n + 11);
    memcpy(p, name, n);
    memcpy(p + n, "_scale_inv", 11);
    return p;
}

int ds_st_set_read_f32(const ds_st_set *s, const char *name, int ndim, const int64_t *shape, float *out) {
    const char *file = NULL;
    const ds_st_tensor *t = ds_st_set_find(s, name, &file);
    if (!t) {
        const char *where = s->nfiles == 1 ? s->files[0].path : "model folder";
        return ds_err("%s: tensor \"%s\" not found", s->nfiles ? where : "(empty set)", name);
    }
    char *sn = scale_name(name);
    const ds_st_tensor *sc = ds_st_set_find(s, sn, NULL);
    free(sn);
    return read_f32_common(t, sc, file, name, ndim, shape, out);
}

int ds_st_read_f32(const ds_st_file *f, const char *name, int ndim, const int64_t *shape, float *out) {
    char *sn = scale_name(name);
    const ds_st_tensor *sc = ds_st_find(f, sn);
    free(sn);
    return read_f32_common(ds_st_find(f, name), sc, f->path, name, ndim, shape, out);
}

/* ---- writer ----------------------------------------------------------------------- */
/* Order of dtypes in the data section: the Python library sorts by its dtype
 * enum, descending (widest first), then by name. */
static int dtype_rank(ds_dtype d) {
    switch (d) {
    case DS_I64: return 0;
    case DS_F64: return 1;
    case DS_F32: return 2;
    case DS_I32: return 3;
    case DS_BF16: return 4;
    case DS_F16: return 5;
    case DS_I16: return 6;
    case DS_F8_E4M3: return 7;
    case DS_F8_E5M2: return 8;
    case DS_I8: return 9;
    case DS_U8: return 10;
    case DS_BOOL: return 11;
    default: return 12;
    }
}

typedef struct {
    int rank;
    const char *name;
    int64_t idx;
} entry_key;
static int cmp_key_name(const void *a, const void *b) {
    return strcmp(((const entry_key *)a)->name, ((const entry_key *)b)->name);
}
static int cmp_key_order(const void *a, const void *b) {
    const entry_key *x = a, *y = b;
    if (x->rank != y->rank) return x->rank - y->rank;
    return strcmp(x->name, y->name);
}

/* JSON string as serde_json writes it: only '"', '\\' and control characters
 * escaped; UTF-8 written as is. */
static void put_str_raw(ds_sbuf *b, const char *s) {
    ds_sbuf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': ds_sbuf_puts(b, "\\\""); break;
        case '\\': ds_sbuf_puts(b, "\\\\"); break;
        case '\n': ds_sbuf_puts(b, "\\n"); break;
        case '\r': ds_sbuf_puts(b, "\\r"); break;
        case '\t': ds_sbuf_puts(b, "\\t"); break;
        case '\b': ds_sbuf_puts(b, "\\b"); break;
        case '\f': ds_sbuf_puts(b, "\\f"); break;
        default:
            if (c < 0x20) ds_sbuf_printf(b, "\\u%04x", c);
            else ds_sbuf_put(b, (const char *)&c, 1);
        }
    }
    ds_sbuf_put(b, "\"", 1);
}

int ds_st_write(const char *path, const ds_st_entry *e, int64_t n, const char *const *meta) {
    if (n < 0) return ds_err("%s: negative tensor count", path);
    size_t *nbytes = ds_malloc((size_t)(n ? n : 1) * sizeof *nbytes);
    int64_t *ord = ds_malloc((size_t)(n ? n : 1) * sizeof *ord);
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i++) {
        ord[i] = i;
        const ds_st_entry *t = &e[i];
        if (!t->name || !t->name[0]) { rc = ds_err("%s: tensor %lld has no name", path, (long long)i); break; }
        size_t bad;
        if (!ds_utf8_valid((const unsigned char *)t->name, strlen(t->name), &bad))
            rc = ds_err("%s: tensor name %s is not valid UTF-8", path, ds_dquote(t->name));
        else if (!strcmp(t->name, "__metadata__")) rc = ds_err("%s: \"__metadata__\" is not a tensor name", path);
        else if ((unsigned)t->dtype >= DS_DTYPE_COUNT) rc = ds_err("%s: %s: invalid dtype", path, ds_esc(t->name));
        else if (t->ndim < 0 || t->ndim > DS_ST_MAX_DIMS)
            rc = ds_err("%s: %s: %d dimensions (0 to %d)", path, ds_esc(t->name), t->ndim, DS_ST_MAX_DIMS);
        else {
            int64_t numel;
            if (shape_bytes(t->ndim, t->shape, ds_dtype_table[t->dtype].size, &numel, &nbytes[i]) != 0)
                rc = ds_err("%s: %s: shape is negative or overflows", path, ds_esc(t->name));
            else if (nbytes[i] && !t->data)
                rc = ds_err("%s: %s: no data", path, ds_esc(t->name));
        }
    }
    if (!rc && n > 1) {
        entry_key *keys = ds_malloc((size_t)n * sizeof *keys);
        for (int64_t i = 0; i < n; i++) keys[i] = (entry_key){dtype_rank(e[i].dtype), e[i].name, i};
        qsort(keys, (size_t)n, sizeof *keys, cmp_key_name);
        for (int64_t i = 1; i < n && !rc; i++)
            if (!strcmp(keys[i].name, keys[i - 1].name)) rc = ds_err("%s: tensor %s given twice", path, ds_dquote(keys[i].name));
        qsort(keys, (size_t)n, sizeof *keys, cmp_key_order);
        for (int64_t i = 0; i < n; i++) ord[i] = keys[i].idx;
        free(keys);
    }
    int64_t nmeta = 0;
    if (!rc && meta) {
        while (meta[2 * nmeta]) {
            if (!meta[2 * nmeta + 1]) { rc = ds_err("%s: metadata key %s has no value", path, ds_dquote(meta[2 * nmeta])); break; }
            nmeta++;
        }
    }
    if (rc) { free(nbytes); free(ord); return -1; }

    ds_sbuf h = {0};
    ds_sbuf_puts(&h, "{");
    int first = 1;
    if (meta && nmeta) {
        int64_t *mo = ds_malloc((size_t)nmeta * sizeof *mo);
        for (int64_t i = 0; i < nmeta; i++) mo[i] = i;
        /* insertion sort by key (few keys) */
        for (int64_t i = 1; i < nmeta; i++)
            for (int64_t k = i; k > 0 && strcmp(meta[2 * mo[k]], meta[2 * mo[k - 1]]) < 0; k--) {
                int64_t tmp = mo[k]; mo[k] = mo[k - 1]; mo[k - 1] = tmp;
            }
        ds_sbuf_puts(&h, "\"__metadata__\":{");
        for (int64_t i = 0; i < nmeta; i++) {
            if (i) ds_sbuf_puts(&h, ",");
            put_str_raw(&h, meta[2 * mo[i]]);
            ds_sbuf_puts(&h, ":");
            put_str_raw(&h, meta[2 * mo[i] + 1]);
        }
        ds_sbuf_puts(&h, "}");
        free(mo);
        first = 0;
    }
    uint64_t off = 0;
    for (int64_t k = 0; k < n; k++) {
        const ds_st_entry *t = &e[ord[k]];
        if (!first) ds_sbuf_puts(&h, ",");
        first = 0;
        put_str_raw(&h, t->name);
        ds_sbuf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", ds_dtype_table[t->dtype].st_name);
        for (int d = 0; d < t->ndim; d++) ds_sbuf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        ds_sbuf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                       (unsigned long long)(off + nbytes[ord[k]]));
        off += nbytes[ord[k]];
    }
    ds_sbuf_puts(&h, "}");
    while (h.n % 8) ds_sbuf_puts(&h, " ");
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));

    ds_afile af;
    if (ds_afile_open(&af, path) != 0) { free(h.p); free(nbytes); free(ord); return -1; }
    int bad = fwrite(len8, 1, 8, af.f) != 8 || fwrite(h.p, 1, h.n, af.f) != h.n;
    for (int64_t k = 0; k < n && !bad; k++) {
        size_t b = nbytes[ord[k]];
        if (b && fwrite(e[ord[k]].data, 1, b, af.f) != b) bad = 1;
    }
    free(h.p);
    free(nbytes);
    free(ord);
    if (bad) {
        ds_err("%s: write failed: %s (nothing was replaced)", path, ds_write_strerror(errno));
        ds_afile_abort(&af);
        return -1;
    }
    return ds_afile_commit(&af);
}

/* ---- model folder writer (single file or shards + index) -------------------------- */
static int cmp_entry_ptr_name(const void *a, const void *b) {
    return strcmp((*(const ds_st_entry *const *)a)->name, (*(const ds_st_entry *const *)b)->name);
}

/* "model-00001-of-00004.safetensors" */
static int is_shard_name(const char *s) {
    unsigned a, b;
    char tail[32];
    return strlen(s) == 32 && sscanf(s, "model-%5u-of-%5u%31s", &a, &b, tail) == 3 && !strcmp(tail, ".safetensors");
}

int ds_st_write_model(const char *dir, const ds_st_entry *e, int64_t n, const char *const *meta, int64_t max_shard) {
    if (n < 0) return ds_err("%s: negative tensor count", dir);
    const ds_st_entry **by = ds_malloc((size_t)(n ? n : 1) * sizeof *by);
    size_t *nb = ds_malloc((size_t)(n ? n : 1) * sizeof *nb);
    for (int64_t i = 0; i < n; i++) {
        by[i] = &e[i];
        if (!e[i].name || !e[i].name[0]) {
            free(by); free(nb);
            return ds_err("%s: tensor %lld has no name", dir, (long long)i);
        }
    }
    qsort(by, (size_t)n, sizeof *by, cmp_entry_ptr_name);
    for (int64_t i = 1; i < n; i++)
        if (!strcmp(by[i]->name, by[i - 1]->name)) {
            char nm[256];
            snprintf(nm, sizeof nm, "%s", by[i]->name);
            free(by); free(nb);
            return ds_err("%s: tensor %s given twice", dir, ds_dquote(nm));
        }
    int64_t total_bytes = 0, total_params = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t numel = 0;
        nb[i] = 0;
        if ((unsigned)by[i]->dtype < DS_DTYPE_COUNT && by[i]->ndim >= 0 && by[i]->ndim <= DS_ST_MAX_DIMS)
            shape_bytes(by[i]->ndim, by[i]->shape, ds_dtype_table[by[i]->dtype].size, &numel, &nb[i]);
        total_bytes += (int64_t)nb[i];
        total_params += numel;
    }
    /* shard boundaries: first[k] = index of shard k's first tensor */
    int64_t *first = ds_malloc((size_t)(n + 2) * sizeof *first);
    int64_t ns = 0, cur = 0;
    first[ns++] = 0;
    for (int64_t i = 0; i < n; i++) {
        if (max_shard > 0 && i > first[ns - 1] && cur + (int64_t)nb[i] > max_shard) { first[ns++] = i; cur = 0; }
        cur += (int64_t)nb[i];
    }
    first[ns] = n;
    int rc = 0;
    char name[64];
    if (ns == 1) {
        char *p = ds_path_join(dir, "model.safetensors");
        ds_st_entry *tmp = ds_malloc((size_t)(n ? n : 1) * sizeof *tmp);
        for (int64_t i = 0; i < n; i++) tmp[i] = *by[i];
        rc = ds_st_write(p, tmp, n, meta);
        free(tmp);
        free(p);
    } else {
        ds_sbuf idx = {0};
        ds_sbuf_printf(&idx, "{\n  \"metadata\": {\n    \"total_parameters\": %lld,\n    \"total_size\": %lld\n  },\n"
                             "  \"weight_map\": {\n", (long long)total_params, (long long)total_bytes);
        for (int64_t k = 0; k < ns && !rc; k++) {
            snprintf(name, sizeof name, "model-%05lld-of-%05lld.safetensors", (long long)k + 1, (long long)ns);
            int64_t m = first[k + 1] - first[k];
            ds_st_entry *tmp = ds_malloc((size_t)(m ? m : 1) * sizeof *tmp);
            for (int64_t i = 0; i < m; i++) tmp[i] = *by[first[k] + i];
            char *p = ds_path_join(dir, name);
            rc = ds_st_write(p, tmp, m, meta);
            free(p);
            free(tmp);
        }
        /* weight_map in name order (= shard order) */
        for (int64_t k = 0; k < ns && !rc; k++) {
            snprintf(name, sizeof name, "model-%05lld-of-%05lld.safetensors", (long long)k + 1, (long long)ns);
            for (int64_t i = first[k]; i < first[k + 1]; i++) {
                ds_sbuf_puts(&idx, "    ");
                ds_json_put_string(&idx, by[i]->name);
                ds_sbuf_printf(&idx, ": \"%s\"%s\n", name, i + 1 < n ? "," : "");
            }
        }
        ds_sbuf_puts(&idx, "  }\n}\n");
        if (!rc) {
            char *ip = ds_path_join(dir, "model.safetensors.index.json");
            rc = ds_write_file_atomic(ip, idx.p, idx.n);
            free(ip);
        }
        free(idx.p);
    }
    /* remove weight files of an earlier save that this one does not use */
    if (!rc) {
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            int stale = 0;
            if (ns == 1) stale = is_shard_name(de->d_name) || !strcmp(de->d_name, "model.safetensors.index.json");
            else if (!strcmp(de->d_name, "model.safetensors")) stale = 1;
            else if (is_shard_name(de->d_name)) {
                unsigned a = 0, b = 0;
                sscanf(de->d_name, "model-%5u-of-%5u", &a, &b);
                stale = (int64_t)b != ns || a < 1 || (int64_t)a > ns;
            }
            if (stale) {
                char *p = ds_path_join(dir, de->d_name);
                unlink(p);
                free(p);
            }
        }
        if (d) closedir(d);
    }
    free(first);
    free(nb);
    free(by);
    return rc;
}
