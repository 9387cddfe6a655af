/* Image shards: the files imagenet_prep writes and the ImageNet source reads.
 * The format is specified in docs/formats.md ("Image shards"); in short, all
 * little-endian:
 *
 *   header (64 bytes)   magic "MDSHARD\0", version 1, sizes, record count,
 *                       offsets, CRC-32C of the index, CRC-32C of the header
 *   index  (count x 40) one record per image: offset, size, label, width,
 *                       height, CRC-32C of its bytes, flags, source id
 *   data                the encoded images (baseline JPEG), back to back
 *
 * A shard is written whole to "<path>.tmp", fsynced and renamed; a reader
 * checks the header and index checksums on open, and an image's own checksum
 * when it reads it. Every error names the file (and the record). */
#ifndef MDENAS_SHARD_H
#define MDENAS_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/error.h"

#define MD_SHARD_MAGIC "MDSHARD"    /* 8 bytes with its NUL */
#define MD_SHARD_VERSION 1
#define MD_SHARD_HEADER_SIZE 64
#define MD_SHARD_RECORD_SIZE 40

/* Record flags: how the stored image was made from its source (informational). */
#define MD_SHARD_FROM_CMYK 0x1u   /* CMYK or YCCK JPEG converted to RGB */
#define MD_SHARD_FROM_PNG 0x2u    /* a PNG (whatever its name) */
#define MD_SHARD_FROM_GRAY 0x4u   /* grayscale expanded to RGB */
#define MD_SHARD_RESIZED 0x8u     /* downscaled (short side above the limit) */
#define MD_SHARD_REENCODED 0x10u  /* re-encoded (always, in imagenet_prep) */

typedef struct {
    uint64_t offset; /* of the image bytes, from the start of the file */
    uint32_t size;
    int32_t  label;
    uint32_t width, height;
    uint32_t crc;    /* CRC-32C of the image bytes */
    uint32_t flags;
    uint64_t source; /* the image's row in the prep's source table (sources.tsv) */
} md_shard_record;

/* ---- writing ---- */
typedef struct md_shard_writer md_shard_writer;

/* Start "<path>.tmp" for a shard that will hold exactly `count` images. */
md_status md_shard_writer_open(const char *path, uint32_t shard_id, uint32_t count,
                               md_shard_writer **out);
/* Append the next image; rec's offset, size and crc are filled in here. */
md_status md_shard_writer_add(md_shard_writer *w, const void *bytes, uint32_t size,
                              const md_shard_record *rec);
/* After `count` adds: index and header written, file fsynced, renamed to path,
 * directory fsynced. *file_crc: CRC-32C of the whole file (for a manifest). */
md_status md_shard_writer_close(md_shard_writer *w, uint32_t *file_crc);
/* Give up: the .tmp file is removed. */
void      md_shard_writer_abort(md_shard_writer *w);

/* ---- reading ---- */
typedef struct md_shard md_shard;

/* Map the file and check header, version, sizes, index checksum and that every
 * record lies inside the data section. */
md_status md_shard_open(const char *path, md_shard **out);
void      md_shard_close(md_shard *s);
uint32_t  md_shard_count(const md_shard *s);
uint32_t  md_shard_id(const md_shard *s);
const char *md_shard_path(const md_shard *s);
/* Record i (0 <= i < count). */
const md_shard_record *md_shard_record_at(const md_shard *s, uint32_t i);
/* The bytes of image i, checked against its CRC-32C (MD_ERR_DATA naming the
 * shard and the record if they differ). Valid until md_shard_close. Safe to
 * call from several threads at once. */
md_status md_shard_image(const md_shard *s, uint32_t i, const uint8_t **bytes, uint32_t *size);
/* CRC-32C of the whole file (reads it all). */
md_status md_shard_file_crc(const md_shard *s, uint32_t *crc);

#endif
