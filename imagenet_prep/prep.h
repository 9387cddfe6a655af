/* imagenet_prep internals: the options, the plan (every source file, its split
 * and label, which shard it goes to), one file's conversion, one shard's
 * making, and the files of the output folder.
 *
 * The output does not depend on how the work is split: sources are sorted,
 * the splits are drawn from the seed, and shard k of a split holds sources
 * [k*P, (k+1)*P) of that split's order (P = --images-per-shard), minus the
 * rejected ones. Ranks take whole shards; threads take files inside a shard
 * and the shard is written in source order. */
#ifndef IMAGENET_PREP_PREP_H
#define IMAGENET_PREP_PREP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mdenas/error.h"
#include "mdenas/runlog.h"

/* Exit status. */
enum { PREP_EXIT_OK = 0, PREP_EXIT_FAIL = 1, PREP_EXIT_USAGE = 2 };

enum { SPLIT_TRAIN, SPLIT_SEARCH_VAL, SPLIT_VAL, NSPLITS };
extern const char *const prep_split_names[NSPLITS];

/* Files kept in OUT while a prep is unfinished (removed when manifest.json is written). */
#define PREP_WORK_DIR ".imagenet_prep"
/* A source file larger than this is refused without reading it. */
#define PREP_MAX_FILE_BYTES (1ull << 30)

typedef struct {
    char     *in, *out;       /* input root, output folder (as given) */
    char     *val_dir;        /* NULL: IN/val */
    char     *val_labels;     /* labels file of a flat validation folder */
    char     *val_id_map;     /* ILSVRC2012 id -> wnid, for the devkit's ground truth */
    int       short_side;     /* train: short side at most this */
    int       val_short_side; /* val: short side exactly this */
    int       quality;        /* JPEG quality of the stored images */
    int       search_val_per_class;
    int       images_per_shard; /* source files per shard */
    uint64_t  seed;
    long long max_pixels;      /* sources with more pixels are refused */
    int       min_side;        /* sources with a shorter side are refused */
    double    max_aspect;      /* long side / short side beyond this is refused */
    int       accept_warnings; /* decoder warnings do not reject a file */
    int       threads;         /* per rank; 0: OpenMP's default */
    int       quiet;           /* no progress line */
} prep_options;

/* Parse argv. Returns PREP_EXIT_OK to go on, or the exit status to end with
 * (help printed: *done = 1 and 0). Messages go to stderr when `loud`. */
int  prep_parse_args(int argc, char **argv, prep_options *o, int loud, int *done);
void prep_usage(FILE *f);
void prep_options_free(prep_options *o);
/* The options that decide the output, as a JSON object (manifest.json, run.json). */
void prep_options_json(const prep_options *o, md_json *j);

/* ---- the plan ---- */

typedef struct {
    char *path;   /* as shown in sources.tsv: "train/<wnid>/<file>", "val/[<wnid>/]<file>" */
    char *reject; /* known before reading (no label, unknown class...): "code: detail"; else NULL */
    int32_t label; /* line of classes.txt, -1 none */
    uint8_t split;
} prep_source;

typedef struct {
    uint8_t  split;
    uint32_t number;       /* the NNNNN of its name */
    uint32_t first, count; /* its sources: order[first .. first + count) */
} prep_shard;

typedef struct {
    prep_source *src; /* sorted by path; the index is the source id */
    uint32_t     nsrc;
    char       **classes; /* sorted; the index is the label */
    uint32_t     nclasses;
    uint32_t    *order; /* source ids to convert, shard after shard */
    uint32_t     norder;
    prep_shard  *shards; /* train shards, then search_val, then val */
    uint32_t     nshards;
    uint32_t     tree_crc; /* CRC-32C of the serialised plan (what the tree and labels gave) */
    /* rank 0 only, for report.json */
    char **notes;
    int    nnotes;
    char  *train_dir, *val_dir, *val_labels, *val_id_map; /* absolute */
} prep_plan;

/* Walk the tree, read the labels, choose the splits and the shards (rank 0).
 * MD_ERR_ARG / MD_ERR_DATA: a bad tree or labels file (exit 2). */
md_status prep_plan_build(const prep_options *o, prep_plan *p);
void      prep_plan_free(prep_plan *p);
/* The plan as bytes, and back (for the other ranks). */
md_status prep_plan_serialize(const prep_plan *p, uint8_t **buf, size_t *len);
md_status prep_plan_deserialize(const uint8_t *buf, size_t len, prep_plan *p);
/* The file a source is read from. */
md_status prep_source_disk_path(const prep_plan *p, uint32_t id, char **out);
void      prep_shard_name(const prep_shard *s, char *buf, size_t n); /* "train-00000.mds" */
/* The wnid of a validation file named in a labels file (labels.c). */
typedef struct prep_labels prep_labels;
md_status   prep_labels_load(const char *path, const char *id_map, prep_labels **out);
const char *prep_labels_find(prep_labels *l, const char *file_name); /* NULL: no label */
size_t      prep_labels_unused(const prep_labels *l);                /* entries no file asked for */
void        prep_labels_free(prep_labels *l);

/* ---- one file ---- */

typedef struct {
    char     format[32];    /* "jpeg", "jpeg-progressive", "png", "gif", "unknown", "-" */
    char     colour[24];    /* "ycbcr", "rgb", "gray", "cmyk", "ycck", "rgba", ... or "-" */
    uint32_t width, height; /* of the source; 0 when unknown */
    int      accepted;
    char     reason[256]; /* rejected: "code: detail"; accepted: conversion kinds or "-" */
    uint32_t flags;       /* MD_SHARD_* */
    uint32_t out_w, out_h;
    uint8_t *jpeg; /* the stored image (malloc'ed), when accepted */
    size_t   jpeg_size;
} prep_result;

/* Read, check, convert and re-encode one source. A bad file is MD_OK with
 * accepted = 0 and the reason; only running out of memory fails. */
md_status prep_convert_file(const char *disk_path, int split, const prep_options *o,
                            prep_result *r);
void      prep_result_free(prep_result *r);

/* Decoders (decode_jpeg.c, decode_png.c): fill r's format, colour, size and
 * (when it fails) reason; on success *rgb holds *w x *h RGB pixels, already
 * reduced when the image is much larger than `want_w x want_h` (JPEG DCT
 * scaling). geometry() gives the stored size for the source size, or rejects. */
typedef int (*prep_geometry_fn)(const prep_options *o, int split, prep_result *r);
md_status prep_decode_jpeg(const uint8_t *buf, size_t n, const prep_options *o, int split,
                           prep_geometry_fn geometry, prep_result *r, uint8_t **rgb, uint32_t *w,
                           uint32_t *h);
md_status prep_decode_png(const uint8_t *buf, size_t n, const prep_options *o, int split,
                          prep_geometry_fn geometry, prep_result *r, uint8_t **rgb, uint32_t *w,
                          uint32_t *h);
/* Baseline JPEG, 4:2:0, optimised Huffman tables, no metadata. */
md_status prep_encode_jpeg(const uint8_t *rgb, uint32_t w, uint32_t h, int quality, uint8_t **out,
                           size_t *size);
/* "libjpeg-turbo 2.1.5": the encoder (part of a prep's identity: it decides the bytes). */
const char *prep_encoder_name(void);
/* Set r to rejected with "code: detail" (printf-style detail). */
void prep_reject(prep_result *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- shards and the output folder ---- */

typedef struct prep_progress prep_progress;
prep_progress               *prep_progress_start(uint64_t files, int world, int enabled);
void                         prep_progress_add(prep_progress *p, uint64_t files); /* any thread */
void                         prep_progress_tick(prep_progress *p); /* one thread: print when due */
void                         prep_progress_end(prep_progress *p);

/* Convert shard k's sources and write the shard and its record (OUT/.imagenet_prep/<name>.tsv). */
md_status prep_make_shard(const prep_plan *p, const prep_options *o, uint32_t k, uint32_t run_crc,
                          prep_progress *prog);
/* 1 when shard k and its record are there and agree (whole-file CRC), else 0. */
int prep_shard_is_done(const prep_plan *p, const prep_options *o, uint32_t k, uint32_t run_crc);

/* Shard sh's record (rank 0, at the end): its whole text (header line, then
 * the sources.tsv rows), and the shard's image count, file size and CRC. */
md_status prep_record_load(const prep_options *o, const prep_shard *sh, uint32_t run_crc,
                           char **text, uint32_t *images, uint64_t *bytes, uint32_t *crc);

/* The identity of this prep: {"options": ..., "input": ...} as canonical JSON text. */
md_status prep_identity(const prep_options *o, const prep_plan *p, char **text);
/* Look at OUT before starting (rank 0): create it, or resume the same prep, or
 * refuse (message; exit 2). *complete = 1: a finished prep of this identity. */
int prep_outdir_claim(const prep_options *o, const char *identity, int *complete);
/* After every shard (rank 0): classes.txt, sources.tsv, report.json, then
 * manifest.json; then the work files go. Prints the summary. */
md_status prep_outdir_finish(const prep_options *o, const prep_plan *p, const char *identity,
                             uint32_t run_crc);
/* Remove the work folder (after a finished prep). */
void prep_outdir_cleanup(const prep_options *o);

/* ---- helpers (util.c) ---- */

/* A growing text; on no memory `failed` is set and later adds do nothing. */
typedef struct {
    char  *s;
    size_t len, cap;
    int    failed;
} prep_buf;
void prep_buf_add(prep_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void prep_buf_put(prep_buf *b, const char *s, size_t n);
/* s as one TSV field: tab, newline, carriage return and backslash as \t \n \r \\. */
void prep_buf_tsv(prep_buf *b, const char *s);
void prep_buf_free(prep_buf *b);

char     *prep_join(const char *a, const char *b); /* "a/b", NULL on no memory */
md_status prep_write_file(const char *path, const void *data, size_t len); /* tmp, fsync, rename */
md_status prep_read_file(const char *path, char **text, size_t *len);      /* NUL-terminated */
/* A copy of s with every byte that is not part of valid UTF-8 replaced by '?'. */
char  *prep_utf8_copy(const char *s);
double prep_now(void);                                          /* monotonic seconds */
void   prep_json_int(md_json *j, const char *key, long long v); /* "key": v */
void   prep_json_text(md_json *j, const char *s);               /* a string, invalid UTF-8 as '?' */

#endif
