/* test_safetensors.c — safetensors read/write against files written by the
 * Python safetensors / huggingface_hub libraries (tests/fixtures/io, made by
 * tools/make_io_fixtures.py; expected FP32 values computed by torch), and every
 * kind of bad input giving a one-line error that names the file. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX "tests/fixtures/io"

/* ---- expected values (expected.txt + expected.f32) ------------------------- */
typedef struct {
    char file[64], name[128], dtype[16];
    int ndim;
    int64_t shape[8];
    int64_t off;
} exp_line;

static exp_line *load_expected(int *n, float **vals) {
    size_t len;
    char *txt = ds_read_file(FIX "/expected.txt", &len);
    float *v = (float *)ds_read_file(FIX "/expected.f32", &len);
    if (!txt || !v) { free(txt); free(v); return NULL; }
    exp_line *e = calloc(256, sizeof *e);
    int k = 0;
    char *save = NULL;
    for (char *ln = strtok_r(txt, "\n", &save); ln && k < 256; ln = strtok_r(NULL, "\n", &save)) {
        exp_line *x = &e[k];
        int used = 0;
        if (sscanf(ln, "%63s %127s %15s %d%n", x->file, x->name, x->dtype, &x->ndim, &used) != 4) continue;
        char *p = ln + used;
        for (int i = 0; i < x->ndim; i++) x->shape[i] = strtoll(p, &p, 10);
        x->off = strtoll(p, &p, 10);
        k++;
    }
    free(txt);
    *n = k;
    *vals = v;
    return e;
}

/* Same float bit for bit (NaN matches any NaN). */
static int same_f32(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return memcmp(&a, &b, 4) == 0;
}

static int check_tensor(const ds_st_tensor *t, const exp_line *x, const float *want) {
    int bad = 0;
    CHECK_MSG(t != NULL, "%s missing", x->name);
    if (!t) return 1;
    CHECK_MSG(!strcmp(ds_dtype_table[t->dtype].st_name, x->dtype), "%s: dtype %s vs %s", x->name,
              ds_dtype_table[t->dtype].st_name, x->dtype);
    CHECK(t->ndim == x->ndim);
    int64_t numel = 1;
    for (int i = 0; i < x->ndim; i++) { CHECK(t->shape[i] == x->shape[i]); numel *= x->shape[i]; }
    CHECK(t->numel == numel);
    CHECK(t->nbytes == (size_t)numel * ds_dtype_table[t->dtype].size);
    float *got = malloc((size_t)(numel ? numel : 1) * 4);
    CHECK(ds_st_to_f32(t, got) == 0);
    for (int64_t i = 0; i < numel; i++)
        if (!same_f32(got[i], want[x->off + i])) {
            if (bad++ < 3) CHECK_MSG(0, "%s[%lld]: %.9g vs torch %.9g", x->name, (long long)i, got[i], want[x->off + i]);
        }
    free(got);
    return bad;
}

TEST(read_every_dtype_matches_torch) {
    int n;
    float *vals;
    exp_line *e = load_expected(&n, &vals);
    CHECK_MSG(e != NULL, "fixtures missing: run python3 tools/make_io_fixtures.py");
    if (!e) return;
    ds_st_file f;
    CHECK_MSG(ds_st_open(&f, FIX "/all_dtypes.safetensors") == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    int seen = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(e[i].file, "all_dtypes.safetensors")) continue;
        check_tensor(ds_st_find(&f, e[i].name), &e[i], vals);
        seen++;
    }
    CHECK(seen == f.n);
    CHECK(seen >= 20);
    /* __metadata__ {"format": "pt"} */
    CHECK(f.n_meta == 1 && !strcmp(f.meta_keys[0], "format") && !strcmp(f.meta_vals[0], "pt"));
    CHECK(ds_st_find(&f, "no.such.tensor") == NULL);
    ds_st_close(&f);
    free(e);
    free(vals);
}

/* Re-write every tensor of a file written by Python and compare the bytes. */
static void rewrite_and_compare(const char *src) {
    ds_st_file f;
    CHECK_MSG(ds_st_open(&f, src) == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    ds_st_entry *en = calloc((size_t)f.n + 1, sizeof *en);
    for (int64_t i = 0; i < f.n; i++) {
        const ds_st_tensor *t = &f.tensors[i];
        en[i].name = t->name;
        en[i].dtype = t->dtype;
        en[i].ndim = t->ndim;
        memcpy(en[i].shape, t->shape, sizeof t->shape);
        en[i].data = t->data;
    }
    const char *meta[2 * 8 + 1] = {0};
    for (int64_t i = 0; i < f.n_meta && i < 8; i++) { meta[2 * i] = f.meta_keys[i]; meta[2 * i + 1] = f.meta_vals[i]; }
    char *out = ds_path_join(ds_test_tmpdir(), "rewrite.safetensors");
    CHECK_MSG(ds_st_write(out, en, f.n, f.n_meta ? meta : NULL) == 0, "%s", ds_errmsg());
    size_t na, nb;
    char *a = ds_read_file(src, &na), *b = ds_read_file(out, &nb);
    CHECK(a && b);
    CHECK_MSG(na == nb, "%s: size %zu vs python %zu", src, nb, na);
    if (a && b && na == nb) {
        size_t k = 0;
        while (k < na && a[k] == b[k]) k++;
        CHECK_MSG(k == na, "%s: first differing byte at %zu", src, k);
    }
    free(a); free(b); free(out); free(en);
    ds_st_close(&f);
}

TEST(write_is_byte_identical_to_python_safetensors) {
    rewrite_and_compare(FIX "/all_dtypes.safetensors");
    rewrite_and_compare(FIX "/sharded/model-00001-of-00002.safetensors");
    rewrite_and_compare(FIX "/sharded/model-00002-of-00002.safetensors");
}

TEST(write_empty_and_scalar_like_python) {
    /* the Python library writes {} padded to 8 bytes for an empty dict */
    char *p = ds_path_join(ds_test_tmpdir(), "empty.safetensors");
    CHECK(ds_st_write(p, NULL, 0, NULL) == 0);
    size_t n;
    char *d = ds_read_file(p, &n);
    CHECK(d && n == 16 && !memcmp(d, "\x08\0\0\0\0\0\0\0{}      ", 16));
    free(d);
    ds_st_file f;
    CHECK(ds_st_open(&f, p) == 0 && f.n == 0);
    ds_st_close(&f);
    free(p);
}

TEST(sharded_set_and_fp8_block_dequant_match_torch) {
    int n;
    float *vals;
    exp_line *e = load_expected(&n, &vals);
    CHECK(e != NULL);
    if (!e) return;
    ds_st_set s;
    CHECK_MSG(ds_st_set_open(&s, FIX "/sharded") == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    CHECK(s.nfiles == 2);
    int seen = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(e[i].file, "sharded")) continue;
        char *at = strchr(e[i].name, '@');
        if (at) {
            /* FP8 weight dequantized with its weight_scale_inv, 128x128 blocks, ragged edges */
            *at = 0;
            int64_t M = e[i].shape[0], N = e[i].shape[1];
            float *w = malloc((size_t)(M * N) * 4);
            CHECK_MSG(ds_st_set_read_f32(&s, e[i].name, 2, e[i].shape, w) == 0, "%s", ds_errmsg());
            int bad = 0;
            for (int64_t k = 0; k < M * N; k++) bad += !same_f32(w[k], vals[e[i].off + k]);
            CHECK_MSG(bad == 0, "%d dequantized values differ from torch", bad);
            free(w);
            continue;
        }
        const char *file = NULL;
        const ds_st_tensor *t = ds_st_set_find(&s, e[i].name, &file);
        check_tensor(t, &e[i], vals);
        CHECK(file && strstr(file, "model-0000"));
        seen++;
    }
    CHECK(seen == 6 && s.nrefs == 6);
    /* the big FP8 weight is alone in shard 1 (the index says so) */
    const char *file = NULL;
    CHECK(ds_st_set_find(&s, "model.layers.0.mlp.gate_proj.weight", &file) && strstr(file, "model-00001-of-00002"));
    ds_st_set_close(&s);
    free(e);
    free(vals);
}

TEST(read_f32_checks_expected_shape) {
    ds_st_set s;
    CHECK_MSG(ds_st_set_open(&s, FIX "/all_dtypes.safetensors") == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    float buf[64];
    int64_t good[2] = {6, 4}, bad[2] = {6, 3};
    CHECK(ds_st_set_read_f32(&s, "model.layers.0.self_attn.q_a_proj.weight", 2, good, buf) == 0);
    CHECK(ds_st_set_read_f32(&s, "model.layers.0.self_attn.q_a_proj.weight", 2, bad, buf) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "all_dtypes.safetensors: model.layers.0.self_attn.q_a_proj.weight: shape [6, 4], expected [6, 3]"),
              "%s", ds_errmsg());
    CHECK(ds_st_set_read_f32(&s, "model.layers.9.mlp.gate.weight", 2, good, buf) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "model.layers.9.mlp.gate.weight") && strstr(ds_errmsg(), "not found"), "%s", ds_errmsg());
    CHECK(ds_st_read_f32(&s.files[0], "scalar", 0, NULL, buf) == 0 && buf[0] == 3.25f);
    ds_st_set_close(&s);
}

/* Fast conversions against the scalar reference: every dtype, lengths that
 * leave SIMD tails, and sizes spanning several thread chunks. */
TEST(to_f32_fast_matches_reference) {
    ds_rng r;
    ds_rng_seed(&r, 3);
    const int64_t sizes[] = {1, 7, 8, 9, 1000, 200003};
    for (int d = 0; d < DS_DTYPE_COUNT; d++) {
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int64_t n = sizes[k];
            size_t es = ds_dtype_table[d].size;
            unsigned char *buf = malloc((size_t)n * es + 1);
            for (size_t i = 0; i < (size_t)n * es + 1; i++) buf[i] = (unsigned char)ds_rng_u64(&r);
            /* odd address: the mapping gives no alignment guarantee */
            ds_st_tensor t = {.name = "t", .dtype = (ds_dtype)d, .ndim = 1, .shape = {n}, .numel = n,
                              .data = buf + 1, .nbytes = (size_t)n * es};
            float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
            CHECK(ds_st_to_f32(&t, a) == 0);
            CHECK(ds_st_to_f32_ref(&t, b) == 0);
            int64_t bad = 0;
            for (int64_t i = 0; i < n; i++) bad += !same_f32(a[i], b[i]);
            CHECK_MSG(bad == 0, "%s n=%lld: %lld differ", ds_dtype_table[d].st_name, (long long)n, (long long)bad);
            free(a); free(b); free(buf);
        }
    }
    /* the references themselves, spot values */
    CHECK(ds_bf16_to_f32(0x3fc0) == 1.5f && ds_f16_to_f32(0x3e00) == 1.5f && ds_e4m3_to_f32(0x7e) == 448.0f);
}

/* ---- dequant: scalar reference over varied block sizes and ragged edges ------ */
TEST(fp8_block_dequant_matches_reference_loop) {
    int64_t M = 7, N = 11;
    uint8_t w8[7 * 11];
    float sc[3 * 3], out[7 * 11];
    for (int i = 0; i < M * N; i++) w8[i] = (uint8_t)(i * 37 + 11);
    for (int i = 0; i < 9; i++) sc[i] = 0.5f + 0.25f * (float)i;
    ds_st_tensor w = {.name = "w", .dtype = DS_F8_E4M3, .ndim = 2, .shape = {M, N}, .numel = M * N, .data = w8};
    ds_st_tensor s = {.name = "w_scale_inv", .dtype = DS_F32, .ndim = 2, .shape = {3, 3}, .numel = 9, .data = sc};
    CHECK(ds_st_dequant_fp8_block(&w, &s, 3, 4, out) == 0);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float want = ds_e4m3_to_f32(w8[i * N + j]) * sc[(i / 3) * 3 + j / 4];
            CHECK(same_f32(out[i * N + j], want));
        }
    /* wrong scale shape: an error naming both tensors and the expected shape */
    s.shape[1] = 2;
    CHECK(ds_st_dequant_fp8_block(&w, &s, 3, 4, out) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "w_scale_inv: shape [3, 2], expected [3, 3]"), "%s", ds_errmsg());
    /* not an FP8 weight */
    s.shape[1] = 3;
    w.dtype = DS_BF16;
    CHECK(ds_st_dequant_fp8_block(&w, &s, 3, 4, out) != 0 && strstr(ds_errmsg(), "F8"));
}

/* ---- bad input -------------------------------------------------------------------- */
/* Write u64 header length (hlen, or strlen(header) when hlen < 0), the header,
 * and ndata zero bytes; returns the path (static per call). */
static const char *craft(const char *name, const char *header, int64_t hlen, size_t ndata) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", ds_test_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    uint64_t n = hlen < 0 ? strlen(header) : (uint64_t)hlen;
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(n >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < ndata; i++) fputc(0, f);
    fclose(f);
    return path;
}

/* Opening fails with one line containing the path and every given phrase. */
static void expect_open_error(const char *path, const char *phrase) {
    ds_st_file f;
    int rc = ds_st_open(&f, path);
    CHECK_MSG(rc != 0, "%s opened, expected error with '%s'", path, phrase);
    if (rc == 0) { ds_st_close(&f); return; }
    const char *m = ds_errmsg();
    CHECK_MSG(strstr(m, path) != NULL, "message does not name the file: %s", m);
    CHECK_MSG(strstr(m, phrase) != NULL, "expected '%s' in: %s", phrase, m);
    CHECK_MSG(strchr(m, '\n') == NULL, "not one line: %s", m);
}

TEST(bad_truncated_files) {
    /* copies of a valid file cut at several points */
    size_t n;
    char *d = ds_read_file(FIX "/all_dtypes.safetensors", &n);
    CHECK(d != NULL);
    if (!d) return;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)d[i];
    struct { size_t cut; const char *phrase; } cuts[] = {
        {0, "truncated"}, {5, "truncated"}, {8, "runs past the end"}, {8 + hlen / 2, "runs past the end"},
        {8 + hlen, "out of range"}, {n - 1, "out of range"},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char *p = ds_path_join(ds_test_tmpdir(), "cut.safetensors");
        CHECK(ds_write_file_atomic(p, d, cuts[i].cut) == 0);
        expect_open_error(p, cuts[i].phrase);
        free(p);
    }
    free(d);
}

TEST(bad_header_length_past_end) {
    expect_open_error(craft("long.st", "{}", 1000, 0), "header length 1000 runs past the end of the file (10 bytes)");
    expect_open_error(craft("huge.st", "{}", INT64_MAX, 0), "runs past the end");
}

TEST(bad_header_json) {
    expect_open_error(craft("j1.st", "{\"a\":{\"dtype\":\"F32\",", -1, 0), "invalid JSON");
    expect_open_error(craft("j2.st", "[1,2]", -1, 0), "expected a JSON object");
    expect_open_error(craft("j3.st", "", -1, 0), "empty");
    expect_open_error(craft("j4.st", "{\"a\": 3}", -1, 0), "a: expected an object, got number");
    expect_open_error(craft("j5.st", "{} x", -1, 0), "invalid JSON");
    expect_open_error(craft("j6.st", "{\"\xff\": 1}", -1, 0), "not valid UTF-8");
    expect_open_error(craft("j7.st", "{\"__metadata__\": {\"k\": 1}}", -1, 0), "__metadata__: k: expected a string");
    expect_open_error(craft("j8.st", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4), "a: dtype: missing");
    expect_open_error(craft("j9.st", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", -1, 4), "a: shape: missing");
    expect_open_error(craft("j10.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", -1, 4), "a: data_offsets: missing");
    expect_open_error(craft("j11.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", -1, 4),
                      "expected [begin, end]");
}

TEST(bad_offsets_out_of_range) {
    expect_open_error(craft("o1.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 4),
                      "a: data_offsets [0, 8] out of range (data section has 4 bytes)");
    expect_open_error(craft("o2.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", -1, 4),
                      "not an increasing pair");
    expect_open_error(craft("o3.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", -1, 4),
                      "not an increasing pair");
    expect_open_error(craft("o4.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", -1, 4),
                      "expected [begin, end] integers");
}

TEST(bad_overlapping_tensors) {
    expect_open_error(craft("ov.st",
                            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", -1, 12),
                      "tensors \"a\" and \"b\" overlap");
    /* same range twice */
    expect_open_error(craft("ov2.st",
                            "{\"a\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                            "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", -1, 4),
                      "overlap");
    /* touching is fine, and so is a gap */
    ds_st_file f;
    CHECK(ds_st_open(&f, craft("ok.st",
                               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                               "\"c\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                               "\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", -1, 16)) == 0);
    CHECK(f.n == 4);
    ds_st_close(&f);
    expect_open_error(craft("dup.st",
                            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", -1, 8),
                      "\"a\" appears twice");
}

TEST(bad_dtype_shape_byte_length) {
    expect_open_error(craft("m1.st", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", -1, 24),
                      "w: dtype/shape mismatch: BF16 [2, 3] needs 12 bytes, data_offsets give 24");
    expect_open_error(craft("m2.st", "{\"w\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", -1, 1),
                      "w: unknown dtype \"F4\"");
    expect_open_error(craft("m3.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", -1, 4),
                      "dimension 0 is not a non-negative integer");
    expect_open_error(craft("m4.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", -1, 4),
                      "overflows");
    expect_open_error(craft("m5.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", -1, 4),
                      "9 dimensions");
    expect_open_error(craft("m6.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", -1, 4),
                      "not a non-negative integer");
    expect_open_error(craft("m7.st", "{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4),
                      "dtype: expected a string, got number");
}

TEST(bad_missing_file_and_folder) {
    ds_st_file f;
    CHECK(ds_st_open(&f, "/no/such/model.safetensors") != 0);
    CHECK(strstr(ds_errmsg(), "/no/such/model.safetensors") != NULL);
    ds_st_set s;
    CHECK(ds_st_set_open(&s, ds_test_tmpdir()) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "no model.safetensors"), "%s", ds_errmsg());
    CHECK(ds_st_set_open(&s, "/no/such/dir") != 0 && strstr(ds_errmsg(), "/no/such/dir"));
}

/* A copy of the sharded fixture in tmp with an edited index. */
static char *sharded_copy(const char *index_text, int drop_shard2) {
    char *dir = ds_path_join(ds_test_tmpdir(), "sh");
    ds_mkdir_p(dir);
    const char *names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (int i = 0; i < 2 - drop_shard2; i++) {
        char src[256];
        snprintf(src, sizeof src, FIX "/sharded/%s", names[i]);
        size_t n;
        char *d = ds_read_file(src, &n);
        char *p = ds_path_join(dir, names[i]);
        if (d) ds_write_file_atomic(p, d, n);
        free(d); free(p);
    }
    char *ip = ds_path_join(dir, "model.safetensors.index.json");
    ds_write_file_atomic(ip, index_text, strlen(index_text));
    free(ip);
    return dir;
}

TEST(bad_index_missing_shard) {
    size_t n;
    char *idx = ds_read_file(FIX "/sharded/model.safetensors.index.json", &n);
    CHECK(idx != NULL);
    if (!idx) return;
    char *dir = sharded_copy(idx, 1);
    ds_st_set s;
    CHECK(ds_st_set_open(&s, dir) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "model.safetensors.index.json: shard \"model-00002-of-00002.safetensors\" is missing"),
              "%s", ds_errmsg());
    free(dir);
    /* index names a tensor the shard does not hold */
    dir = sharded_copy("{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}", 0);
    CHECK(ds_st_set_open(&s, dir) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "\"lm_head.weight\" is not in shard model-00001-of-00002.safetensors"), "%s", ds_errmsg());
    free(dir);
    /* a shard path leaving the folder */
    dir = sharded_copy("{\"weight_map\": {\"x\": \"../x.safetensors\"}}", 0);
    CHECK(ds_st_set_open(&s, dir) != 0 && strstr(ds_errmsg(), "relative path inside the folder"));
    free(dir);
    /* malformed index */
    dir = sharded_copy("{\"weight_map\": [", 0);
    CHECK(ds_st_set_open(&s, dir) != 0 && strstr(ds_errmsg(), "model.safetensors.index.json: invalid JSON"));
    free(dir);
    dir = sharded_copy("{\"metadata\": {}}", 0);
    CHECK(ds_st_set_open(&s, dir) != 0 && strstr(ds_errmsg(), "weight_map: missing"));
    free(dir);
    free(idx);
}

TEST(bad_writer_input_writes_nothing) {
    float x[2] = {1, 2};
    ds_st_entry e[2] = {{"a", DS_F32, 1, {2}, x}, {"a", DS_F32, 1, {2}, x}};
    char *p = ds_path_join(ds_test_tmpdir(), "w.safetensors");
    CHECK(ds_st_write(p, e, 2, NULL) != 0 && strstr(ds_errmsg(), "\"a\" given twice"));
    CHECK(!ds_file_exists(p));
    e[1].name = "b";
    e[1].shape[0] = -2;
    CHECK(ds_st_write(p, e, 2, NULL) != 0 && strstr(ds_errmsg(), "b: shape is negative"));
    e[1].shape[0] = 2;
    e[1].data = NULL;
    CHECK(ds_st_write(p, e, 2, NULL) != 0 && strstr(ds_errmsg(), "b: no data"));
    CHECK(!ds_file_exists(p));
    e[1].data = x;
    const char *meta[] = {"format", "pt", NULL};
    CHECK(ds_st_write(p, e, 2, meta) == 0);
    ds_st_file f;
    CHECK(ds_st_open(&f, p) == 0 && f.n == 2 && f.n_meta == 1);
    ds_st_close(&f);
    /* an unwritable destination leaves no temp file behind */
    CHECK(ds_st_write("/no/such/dir/w.safetensors", e, 2, NULL) != 0);
    free(p);
}

/* Random byte edits of a valid header: every outcome is a clean error or a
 * file that passes all checks (ASan/UBSan in `make SAN=1 test`). */
TEST(mutated_headers_never_crash) {
    size_t n;
    char *d = ds_read_file(FIX "/sharded/model-00002-of-00002.safetensors", &n);
    CHECK(d != NULL);
    if (!d) return;
    ds_rng r;
    ds_rng_seed(&r, 7);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)d[i];
    char *m = malloc(n);
    int ok = 0, err = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(m, d, n);
        int edits = 1 + (int)ds_rng_below(&r, 4);
        for (int k = 0; k < edits; k++) {
            size_t at = (size_t)ds_rng_below(&r, 8 + hlen);
            const char pool[] = "0123456789-[]{}\":,eE. \xff";
            m[at] = ds_rng_below(&r, 2) ? pool[ds_rng_below(&r, sizeof pool - 1)] : (char)ds_rng_u64(&r);
        }
        ds_st_file f;
        if (ds_st_parse_buffer(&f, m, n, "mutant") == 0) {
            /* whatever parsed must lie inside the buffer */
            for (int64_t i = 0; i < f.n; i++) {
                const char *p = f.tensors[i].data;
                CHECK(p >= m && p + f.tensors[i].nbytes <= m + n);
            }
            ds_st_close(&f);
            ok++;
        } else {
            CHECK(strstr(ds_errmsg(), "mutant") != NULL);
            err++;
        }
    }
    CHECK(ok > 0 && err > 0);
    free(m);
    free(d);
}

/* Model folder writer: shards + index (read back by the set reader), single
 * file, and removal of the other form's stale files. */
TEST(write_model_sharded_and_single) {
    ds_st_file f;
    CHECK_MSG(ds_st_open(&f, FIX "/all_dtypes.safetensors") == 0, "%s", ds_errmsg());
    TEST_RETURN_IF_FAILED();
    ds_st_entry *en = calloc((size_t)f.n, sizeof *en);
    int64_t total = 0, params = 0;
    for (int64_t i = 0; i < f.n; i++) {
        const ds_st_tensor *t = &f.tensors[f.n - 1 - i]; /* reverse order: the writer sorts */
        en[i] = (ds_st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(en[i].shape, t->shape, sizeof t->shape);
        total += (int64_t)t->nbytes;
        params += t->numel;
    }
    char *dir = ds_path_join(ds_test_tmpdir(), "model");
    ds_mkdir_p(dir);
    const char *meta[] = {"format", "pt", NULL};
    CHECK_MSG(ds_st_write_model(dir, en, f.n, meta, 8192) == 0, "%s", ds_errmsg());
    char *ip = ds_path_join(dir, "model.safetensors.index.json");
    size_t n;
    char *idx = ds_read_file(ip, &n);
    CHECK(idx != NULL);
    char want[128];
    snprintf(want, sizeof want, "{\n  \"metadata\": {\n    \"total_parameters\": %lld,\n    \"total_size\": %lld\n  },\n",
             (long long)params, (long long)total);
    CHECK_MSG(idx && strstr(idx, want) == idx, "%s", idx);
    CHECK(idx && strstr(idx, "\"bf16.all_bits\": \"model-00001-of-"));
    free(idx);
    ds_st_set s;
    CHECK_MSG(ds_st_set_open(&s, dir) == 0, "%s", ds_errmsg());
    if (!ds_test_fails) {
        CHECK(s.nfiles > 3 && s.nrefs == f.n);
        for (int64_t i = 0; i < f.n; i++) {
            const ds_st_tensor *a = &f.tensors[i], *b = ds_st_set_find(&s, a->name, NULL);
            CHECK(b && b->dtype == a->dtype && b->nbytes == a->nbytes && !memcmp(a->data, b->data, a->nbytes));
        }
        /* every shard but one oversized tensor's stays within the limit */
        for (int k = 0; k < s.nfiles; k++) {
            size_t sum = 0;
            for (int64_t i = 0; i < s.files[k].n; i++) sum += s.files[k].tensors[i].nbytes;
            CHECK(sum <= 8192 || s.files[k].n == 1);
        }
        ds_st_set_close(&s);
    }
    /* now a single file: the index and shards go */
    CHECK(ds_st_write_model(dir, en, f.n, meta, 0) == 0);
    CHECK(!ds_file_exists(ip));
    char *one = ds_path_join(dir, "model-00001-of-00002.safetensors");
    CHECK(!ds_file_exists(one));
    char *single = ds_path_join(dir, "model.safetensors");
    CHECK(ds_file_exists(single));
    /* identical to what the Python library wrote for the same tensors */
    size_t na, nb;
    char *a = ds_read_file(FIX "/all_dtypes.safetensors", &na), *b = ds_read_file(single, &nb);
    CHECK(a && b && na == nb && !memcmp(a, b, na));
    free(a); free(b);
    /* and back to shards: the single file goes */
    CHECK(ds_st_write_model(dir, en, f.n, meta, 30000) == 0);
    CHECK(!ds_file_exists(single) && ds_file_exists(ip));
    /* duplicate names are refused */
    en[1].name = en[0].name;
    CHECK(ds_st_write_model(dir, en, f.n, meta, 30000) != 0 && strstr(ds_errmsg(), "given twice"));
    free(one); free(single); free(ip); free(dir); free(en);
    ds_st_close(&f);
}
