/* What a run writes besides checkpoints: JSON text, metrics JSON lines,
 * TensorBoard event files, and a heatmap picture of how p evolved.
 * Nothing here knows about the search; callers pass numbers and names. */
#ifndef MDENAS_RUNLOG_H
#define MDENAS_RUNLOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mdenas/error.h"

/* ---- JSON writer: a growable buffer, commas and escaping handled ------------ */

/* Strings pass UTF-8 through and escape '"', '\\' and control characters.
 * Doubles print in the shortest of %.15g/%.16g/%.17g that reads back to the
 * same double (0.1 -> "0.1"); NaN and infinities become null. Several values
 * at the top level are written one per line: JSON Lines. */
typedef struct {
    char  *buf; /* NUL-terminated text, len bytes */
    size_t len, cap;
    int    indent; /* spaces per nesting level; 0 (the default) writes one line */
    int    depth;
    int    state[32]; /* per level: last thing written, and object or array */
    int    failed;    /* 1: allocation failed, 2: keys/values/closes out of place */
} md_json;

void md_json_init(md_json *j);
void md_json_free(md_json *j);
void md_json_reset(md_json *j); /* empty the text, keep the buffer and indent */
void md_json_begin_object(md_json *j);
void md_json_end_object(md_json *j);
void md_json_begin_array(md_json *j);
void md_json_end_array(md_json *j);
void md_json_key(md_json *j, const char *key);  /* inside an object, before a value */
void md_json_string(md_json *j, const char *s); /* NULL writes null */
void md_json_int(md_json *j, long long v);
void md_json_double(md_json *j, double v);
void md_json_bool(md_json *j, int v);
void md_json_null(md_json *j);
/* Write the text to path atomically (path.tmp, fsync, rename, fsync the directory). */
md_status md_json_write_file(const md_json *j, const char *path);
/* Any file written so that readers see the old or the whole new contents, never a
 * torn one: "<path>.tmp", fsynced, renamed, the directory fsynced. */
md_status md_atomic_write(const char *path, const void *data, size_t len);
/* Append the text and a newline to path (created if absent) with one write():
 * a line of metrics.jsonl. */
md_status md_json_append_file(const md_json *j, const char *path);

/* ---- minimal JSON reader (config files, genotype.json) ---------------------- */

typedef enum { MD_JNULL, MD_JBOOL, MD_JNUM, MD_JSTR, MD_JARR, MD_JOBJ } md_jtype;

typedef struct md_jvalue md_jvalue;
struct md_jvalue {
    md_jtype   type;
    double     num;  /* MD_JNUM, MD_JBOOL */
    char      *str;  /* MD_JSTR */
    char     **keys; /* MD_JOBJ: keys[i] names items[i] */
    md_jvalue *items;
    int        count; /* MD_JARR, MD_JOBJ */
};

/* Parse text (strict RFC 8259; a leading UTF-8 BOM is skipped). On error `out`
 * is zeroed and the message reads "<source>:<line>:<column>: what". Duplicate
 * keys and "\u0000" are refused. */
md_status        md_json_parse(const char *text, const char *source, md_jvalue *out);
void             md_json_value_free(md_jvalue *v);
const md_jvalue *md_json_get(const md_jvalue *obj, const char *key); /* NULL if absent */
/* Same type and value, arrays and objects element by element (NULL equals nothing). */
int              md_json_equal(const md_jvalue *a, const md_jvalue *b);
const char      *md_json_type_name(md_jtype t);                      /* "number", ... */
/* Write a parsed value back out (e.g. to echo a config into the run directory). */
void md_json_value(md_json *j, const md_jvalue *v);

/* ---- TensorBoard event file (scalars) ------------------------------------------ */

typedef struct md_tb md_tb;

/* Creates dir (one level) if needed and dir/events.out.tfevents.<unix time>.<host>
 * (".1", ".2", ... appended if that name is taken) with a file_version record.
 * Records are TFRecord-framed Event protos, as TensorFlow writes them. */
md_status   md_tb_open(const char *dir, md_tb **out);
const char *md_tb_path(const md_tb *tb);
/* One Event with one simple_value; the tag is at most 256 bytes of UTF-8. */
md_status md_tb_scalar(md_tb *tb, const char *tag, long step, float value);
md_status md_tb_flush(md_tb *tb); /* fflush, so a running TensorBoard sees the records */
md_status md_tb_close(md_tb *tb); /* flushes and frees (also on error); NULL is fine */
/* CRC-32C (Castagnoli), as TFRecord uses; exposed for tests. */
uint32_t md_crc32c(const void *data, size_t len);
/* The CRC-32C of a message continued by data: extend(crc(a), b) == crc(a || b). */
uint32_t md_crc32c_extend(uint32_t crc, const void *data, size_t len);

/* ---- heatmap of p over periods -------------------------------------------------- */

/* An SVG a browser opens directly: one panel per distribution group (e.g.
 * "normal", "reduce"), rows = edges, columns = ops, one small multiple per
 * period is too much, so each cell shows p after the LAST period as colour
 * and a sparkline of p over all periods. hist[t][e][k] = p of op k on edge e
 * after period t, for e in [0, edges). */
typedef struct {
    const char        *title;
    const char *const *op_names; /* k names */
    int                k;
    int                groups;      /* panels */
    const char *const *group_names; /* groups names */
    int                edges_per_group;
    int                periods;
    const double      *hist;       /* periods * groups * edges_per_group * k */
    const char *const *edge_names; /* groups * edges_per_group row labels, or NULL: "edge i" */
} md_heatmap;

/* Colour runs from white (p = 0) to dark blue (p = the largest p in hist); the
 * largest final p of each edge is outlined. Cells are <rect class="cell">.
 * Written atomically, like md_json_write_file. */
md_status md_heatmap_write_svg(const md_heatmap *h, const char *path);

#endif
