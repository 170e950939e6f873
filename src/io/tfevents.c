/*
 * tfevents.c — TFRecord framing, CRC-32C and the hand-written Event protobuf
 * of tfevents.h.
 */
#include "io/tfevents.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"

static uint32_t g_crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        g_crc_table[i] = c;
    }
}

uint32_t ds_crc32c(uint32_t crc, const void *p, size_t n) {
    if (!g_crc_table[1]) crc_init(); /* idempotent: racing threads write the same table */
    const uint8_t *s = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = g_crc_table[(crc ^ s[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t ds_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* ---- protobuf wire format -------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int overflow;
} pb;

static void pb_byte(pb *b, uint8_t v) {
    if (b->n < b->cap) b->p[b->n] = v;
    else b->overflow = 1;
    b->n++;
}

static void pb_varint(pb *b, uint64_t v) {
    while (v >= 0x80) {
        pb_byte(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    pb_byte(b, (uint8_t)v);
}

static void pb_key(pb *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }

static void pb_fixed(pb *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) pb_byte(b, (uint8_t)(v >> (8 * i)));
}

static void pb_bytes(pb *b, int field, const void *s, size_t n) {
    pb_key(b, field, 2);
    pb_varint(b, n);
    for (size_t i = 0; i < n; i++) pb_byte(b, ((const uint8_t *)s)[i]);
}

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

static void pb_wall_step(pb *b, double wall_time, int64_t step) {
    uint64_t w;
    memcpy(&w, &wall_time, 8);
    pb_key(b, 1, 1); /* double wall_time = 1 (fixed64) */
    pb_fixed(b, w, 8);
    if (step) { /* int64 step = 2 (varint; proto3 leaves 0 out) */
        pb_key(b, 2, 0);
        pb_varint(b, (uint64_t)step);
    }
}

size_t ds_tfevents_encode_scalar(uint8_t *buf, size_t cap, double wall_time, int64_t step, const char *tag,
                                 float value) {
    pb b = {buf, 0, cap, 0};
    pb_wall_step(&b, wall_time, step);
    size_t tl = strlen(tag);
    size_t vlen = 1 + varint_len(tl) + tl + 1 + 4; /* Value: tag (1), simple_value (2, fixed32) */
    size_t slen = 1 + varint_len(vlen) + vlen;     /* Summary: value (1) */
    pb_key(&b, 5, 2);                              /* Summary summary = 5 */
    pb_varint(&b, slen);
    pb_key(&b, 1, 2);
    pb_varint(&b, vlen);
    pb_bytes(&b, 1, tag, tl);
    uint32_t f;
    memcpy(&f, &value, 4);
    pb_key(&b, 2, 5);
    pb_fixed(&b, f, 4);
    return b.overflow ? 0 : b.n;
}

size_t ds_tfevents_encode_version(uint8_t *buf, size_t cap, double wall_time) {
    pb b = {buf, 0, cap, 0};
    pb_wall_step(&b, wall_time, 0);
    static const char v[] = "brain.Event:2";
    pb_bytes(&b, 3, v, sizeof v - 1); /* string file_version = 3 */
    return b.overflow ? 0 : b.n;
}

/* ---- the file ---------------------------------------------------------------- */

struct ds_tfevents {
    FILE *f;
    char *path;
    int failed;
};

static int put_record(ds_tfevents *w, const uint8_t *data, size_t n) {
    uint8_t head[12];
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)((uint64_t)n >> (8 * i));
    uint32_t c = ds_crc32c_mask(ds_crc32c(0, head, 8));
    for (int i = 0; i < 4; i++) head[8 + i] = (uint8_t)(c >> (8 * i));
    uint32_t d = ds_crc32c_mask(ds_crc32c(0, data, n));
    uint8_t tail[4] = {(uint8_t)d, (uint8_t)(d >> 8), (uint8_t)(d >> 16), (uint8_t)(d >> 24)};
    if (fwrite(head, 1, 12, w->f) != 12 || fwrite(data, 1, n, w->f) != n || fwrite(tail, 1, 4, w->f) != 4) {
        w->failed = 1;
        return ds_err("%s: write failed", w->path);
    }
    return 0;
}

ds_tfevents *ds_tfevents_open(const char *dir, double wall_time) {
    if (ds_mkdir_p(dir)) return NULL;
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    char name[400];
    snprintf(name, sizeof name, "events.out.tfevents.%lld.%s.%d.dsv3", (long long)wall_time, host, (int)getpid());
    ds_tfevents *w = ds_calloc(1, sizeof *w);
    w->path = ds_path_join(dir, name);
    w->f = fopen(w->path, "wb");
    if (!w->f) {
        ds_err("%s: cannot open for writing", w->path);
        free(w->path), free(w);
        return NULL;
    }
    uint8_t buf[64];
    size_t n = ds_tfevents_encode_version(buf, sizeof buf, wall_time);
    if (put_record(w, buf, n) || ds_tfevents_flush(w)) {
        fclose(w->f);
        free(w->path), free(w);
        return NULL;
    }
    return w;
}

int ds_tfevents_scalar(ds_tfevents *w, const char *tag, int64_t step, double wall_time, float value) {
    uint8_t small[512], *buf = small;
    size_t need = strlen(tag) + 64;
    if (need > sizeof small) buf = ds_malloc(need);
    size_t n = ds_tfevents_encode_scalar(buf, need > sizeof small ? need : sizeof small, wall_time, step, tag, value);
    int rc = put_record(w, buf, n);
    if (buf != small) free(buf);
    return rc;
}

int ds_tfevents_flush(ds_tfevents *w) {
    if (fflush(w->f) != 0 || w->failed) return ds_err("%s: write failed", w->path);
    return 0;
}

const char *ds_tfevents_path(const ds_tfevents *w) { return w->path; }

int ds_tfevents_close(ds_tfevents *w) {
    if (!w) return 0;
    int rc = fclose(w->f) != 0 || w->failed ? ds_err("%s: write failed", w->path) : 0;
    free(w->path), free(w);
    return rc;
}
