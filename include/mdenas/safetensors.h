/* safetensors files (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length, a JSON header naming every tensor's dtype,
 * shape and [begin, end) byte offsets into the data section that follows, and
 * "__metadata__" (string to string). Readable by PyTorch, JAX, NumPy and the
 * `safetensors` tools. We add "crc32c" (8 hex digits) to the metadata: the
 * CRC-32C of the data section followed by every other metadata key and value,
 * each NUL-terminated, in order. The reader checks it, so a flipped bit in a
 * weight or in a loop position is caught. */
#ifndef MDENAS_SAFETENSORS_H
#define MDENAS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/error.h"

typedef enum { MD_ST_F32, MD_ST_F64, MD_ST_I64 } md_st_dtype;

#define MD_ST_MAX_DIMS 4

typedef struct {
    const char *name;
    md_st_dtype dtype;
    int         ndim; /* 0: a scalar */
    int64_t     dim[MD_ST_MAX_DIMS];
    const void *data; /* prod(dim) elements */
} md_st_entry;

typedef struct {
    const char *key, *value;
} md_st_meta;

/* Write atomically (temp file, fsync, rename, directory fsync). Entries are laid
 * out in the order given. *bytes (may be NULL) receives the file size. */
md_status md_st_write(const char *path, const md_st_entry *t, int n, const md_st_meta *meta,
                      int nmeta, size_t *bytes);

typedef struct {
    char       *name;
    md_st_dtype dtype;
    int         ndim;
    int64_t     dim[MD_ST_MAX_DIMS];
    size_t      begin, bytes; /* in the data section */
} md_st_tensor;

typedef struct {
    char          *path;
    unsigned char *file; /* the whole file */
    size_t         size, data_start;
    md_st_tensor  *t;
    int            n;
    char         **mkey, **mval;
    int            nmeta;
} md_st_file;

/* Read and validate the whole file: header length, JSON, dtypes, shapes vs
 * byte counts, offsets that tile the data section exactly, the file size, and
 * the crc32c when present. Every failure is MD_ERR_DATA (MD_ERR_IO when the
 * file cannot be read) with a message naming the path and the problem. */
md_status           md_st_read(const char *path, md_st_file *out);
/* The same checks on a file already in memory (copied; name stands for the path in
 * messages and in f->path): for fuzzing, and for bytes that did not come from disk. */
md_status md_st_read_mem(const char *name, const void *data, size_t size, md_st_file *out);
void                md_st_free(md_st_file *f);
const md_st_tensor *md_st_find(const md_st_file *f, const char *name);
const void         *md_st_data(const md_st_file *f, const md_st_tensor *t);
const char         *md_st_meta_get(const md_st_file *f, const char *key); /* NULL if absent */
const char         *md_st_dtype_name(md_st_dtype d);                     /* "F32", ... */

#endif
