/*
 * tfevents.h — TensorBoard event files without a protobuf dependency.
 *
 * A file is a sequence of TFRecords:
 *   uint64 length (little-endian), uint32 masked_crc32c(length bytes),
 *   length bytes of data, uint32 masked_crc32c(data)
 * where masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 with c the
 * CRC-32C (Castagnoli) of x.  Each data is an `Event` protobuf
 * (tensorflow/core/util/event.proto), encoded here by hand:
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; }
 * The first record carries file_version "brain.Event:2", as TensorFlow's writer
 * and tensorboard's EventFileWriter write it.  File name:
 * DIR/events.out.tfevents.<unix seconds>.<hostname>.<pid>.dsv3
 */
#ifndef DS_TFEVENTS_H
#define DS_TFEVENTS_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli, reflected, polynomial 0x82F63B78) of n bytes,
 * continuing from crc (start with 0). */
uint32_t ds_crc32c(uint32_t crc, const void *p, size_t n);
/* TFRecord's mask of a CRC-32C. */
uint32_t ds_crc32c_mask(uint32_t crc);

/* The Event protobuf of one scalar (tag, simple_value at step) into buf
 * (cap bytes); returns its length, or 0 when it does not fit. */
size_t ds_tfevents_encode_scalar(uint8_t *buf, size_t cap, double wall_time, int64_t step, const char *tag,
                                 float value);
/* The first Event of a file (wall_time, file_version). */
size_t ds_tfevents_encode_version(uint8_t *buf, size_t cap, double wall_time);

typedef struct ds_tfevents ds_tfevents;
/* Creates DIR (and parents) and a new event file in it with its version
 * record.  NULL with ds_err on failure. */
ds_tfevents *ds_tfevents_open(const char *dir, double wall_time);
/* Appends one scalar.  -1 with ds_err on a write error. */
int ds_tfevents_scalar(ds_tfevents *w, const char *tag, int64_t step, double wall_time, float value);
/* Flushes to the file (tensorboard reads a running job's files). */
int ds_tfevents_flush(ds_tfevents *w);
const char *ds_tfevents_path(const ds_tfevents *w);
/* Flushes and closes; -1 with ds_err when the last writes failed. */
int ds_tfevents_close(ds_tfevents *w);

#endif
