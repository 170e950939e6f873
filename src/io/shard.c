/*
 * shard.c — token shard read (mmap, validated) and atomic streaming write.
 * Format: see shard.h.
 */
#include "io/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

int ds_shard_open(ds_shard *s, const char *path, uint64_t expect_hash) {
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ds_err("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return ds_err("%s: %s", path, strerror(errno)); }
    size_t size = (size_t)st.st_size;
    if (size < DS_SHARD_HEADER) {
        close(fd);
        return ds_err("%s: truncated shard (%zu bytes, header needs %d)", path, size, DS_SHARD_HEADER);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ds_err("%s: mmap failed: %s", path, strerror(errno));
    const uint8_t *h = map;
    const char *why = NULL;
    char buf[160];
    uint32_t version = rd32(h + 8), width = rd32(h + 12);
    uint64_t n = rd64(h + 16);
    if (memcmp(h, DS_SHARD_MAGIC, 8) != 0) why = "not a dsv3 token shard (bad magic)";
    else if (version != DS_SHARD_VERSION) {
        snprintf(buf, sizeof buf, "unsupported shard version %u (this build reads %d)", version, DS_SHARD_VERSION);
        why = buf;
    } else if (width != 2 && width != 4) {
        snprintf(buf, sizeof buf, "bad token width %u (2 or 4)", width);
        why = buf;
    } else if (n > (size - DS_SHARD_HEADER) / width || DS_SHARD_HEADER + n * width != size) {
        snprintf(buf, sizeof buf, "truncated or oversized shard: header says %llu tokens of %u bytes, file has %zu bytes",
                 (unsigned long long)n, width, size);
        why = buf;
    } else if (expect_hash && rd64(h + 24) != expect_hash) {
        why = "shard was made with another tokenizer (tokenizer hash differs); re-run 'dsv3 data prepare'";
    }
    if (why) {
        munmap(map, size);
        return ds_err("%s: %s", path, why);
    }
    s->path = ds_strdup(path);
    s->map = map;
    s->map_size = size;
    s->tokens = h + DS_SHARD_HEADER;
    s->width = width;
    s->n_tokens = n;
    s->tokenizer_hash = rd64(h + 24);
    s->vocab_size = rd32(h + 32);
    memcpy(&s->sep_id, h + 36, 4);
    s->n_docs = rd64(h + 40);
    /* every token id must be inside the vocabulary */
    for (uint64_t i = 0; i < n; i++) {
        int32_t t = ds_shard_token(s, i);
        if (t < 0 || (uint32_t)t >= s->vocab_size) {
            ds_err("%s: token %lld at position %llu is outside the vocabulary (%u)", path, (long long)t,
                   (unsigned long long)i, s->vocab_size);
            ds_shard_close(s);
            return -1;
        }
    }
    return 0;
}

void ds_shard_close(ds_shard *s) {
    if (s->map) munmap(s->map, s->map_size);
    free(s->path);
    memset(s, 0, sizeof *s);
}

int ds_shard_writer_open(ds_shard_writer *w, const char *path, uint32_t vocab_size,
                         int32_t sep_id, uint64_t tokenizer_hash) {
    memset(w, 0, sizeof *w);
    w->width = vocab_size <= 65536 ? 2 : 4;
    w->vocab_size = vocab_size;
    w->sep_id = sep_id;
    w->tokenizer_hash = tokenizer_hash;
    if (ds_afile_open(&w->af, path) != 0) return -1;
    uint8_t zero[DS_SHARD_HEADER] = {0};
    if (fwrite(zero, 1, sizeof zero, w->af.f) != sizeof zero) {
        ds_err("%s: write failed: %s", path, strerror(errno));
        ds_afile_abort(&w->af);
        return -1;
    }
    return 0;
}

static int put_tokens(ds_shard_writer *w, const int32_t *ids, int64_t n) {
    uint8_t buf[4096 * 4];
    int64_t i = 0;
    while (i < n) {
        int64_t k = 0;
        for (; i < n && k < 4096; i++, k++) {
            int32_t t = ids[i];
            if (t < 0 || (uint32_t)t >= w->vocab_size)
                return ds_err("%s: token id %d outside the vocabulary (%u)", w->af.final_path, t, w->vocab_size);
            if (w->width == 2) { uint16_t v = (uint16_t)t; memcpy(buf + 2 * k, &v, 2); }
            else { uint32_t v = (uint32_t)t; memcpy(buf + 4 * k, &v, 4); }
        }
        if (fwrite(buf, w->width, (size_t)k, w->af.f) != (size_t)k)
            return ds_err("%s: write failed: %s", w->af.final_path, strerror(errno));
    }
    w->n_tokens += (uint64_t)n;
    return 0;
}

int ds_shard_writer_doc(ds_shard_writer *w, const int32_t *ids, int64_t n) {
    if (w->failed) return -1;
    int32_t sep = w->sep_id;
    if ((sep >= 0 && put_tokens(w, &sep, 1) != 0) || put_tokens(w, ids, n) != 0) {
        w->failed = 1;
        return -1;
    }
    w->n_docs++;
    return 0;
}

int ds_shard_writer_commit(ds_shard_writer *w) {
    if (w->failed) { ds_afile_abort(&w->af); return -1; }
    uint8_t h[DS_SHARD_HEADER] = {0};
    uint32_t version = DS_SHARD_VERSION;
    memcpy(h, DS_SHARD_MAGIC, 8);
    memcpy(h + 8, &version, 4);
    memcpy(h + 12, &w->width, 4);
    memcpy(h + 16, &w->n_tokens, 8);
    memcpy(h + 24, &w->tokenizer_hash, 8);
    memcpy(h + 32, &w->vocab_size, 4);
    memcpy(h + 36, &w->sep_id, 4);
    memcpy(h + 40, &w->n_docs, 8);
    if (fseek(w->af.f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->af.f) != sizeof h) {
        ds_err("%s: write failed: %s", w->af.final_path, strerror(errno));
        ds_afile_abort(&w->af);
        return -1;
    }
    return ds_afile_commit(&w->af);
}

void ds_shard_writer_abort(ds_shard_writer *w) { ds_afile_abort(&w->af); }
