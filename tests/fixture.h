/* Reader for the PyTorch reference fixtures written by tests/gen_fixtures.py.
 *
 * File format (little-endian), one file per group of ops:
 *   char magic[4] = "MDFX"; u32 version = 1; u32 count;
 *   count records: u32 name_len; char name[name_len] (no NUL, < 96 bytes);
 *                  u32 ndim (0..4, 0 = scalar); i32 dim[ndim]; f32 data[prod(dim)].
 * Record names are "<case>/<tensor>"; integers (labels, shapes) are exact floats.
 * Regenerate with: /usr/bin/python3 tests/gen_fixtures.py
 */
#ifndef MDENAS_TEST_FIXTURE_H
#define MDENAS_TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/backend.h"
#include "mdenas/error.h"
#include "mdenas/tensor.h"

#define MD_FX_NAME_MAX 96

typedef struct {
    char   name[MD_FX_NAME_MAX];
    int    ndim; /* 0 for a scalar */
    int    dim[MD_MAX_DIMS];
    size_t numel;
    float *data; /* host memory, owned by the fixture */
} md_fx_tensor;

typedef struct {
    char          path[512];
    md_fx_tensor *t;
    int           count;
} md_fixture;

/* Load dir/file. MD_ERR_IO (missing, unreadable) or MD_ERR_DATA (bad magic,
 * truncated, bad record) with a message naming the file; *fx is then empty. */
md_status md_fixture_load(md_fixture *fx, const char *dir, const char *file);
void      md_fixture_free(md_fixture *fx);
/* The record called `name`, or NULL. */
const md_fx_tensor *md_fixture_find(const md_fixture *fx, const char *name);

/* For tests, where a missing record means the fixtures are stale: the record
 * named by the printf-style format, or exit(2) with the file and the name. */
const md_fx_tensor *md_fixture_need(const md_fixture *fx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Load or exit(2) with the message. */
void md_fixture_load_or_exit(md_fixture *fx, const char *dir, const char *file);

/* A scalar record (or the first value of any record) as int / double. */
int    md_fx_int(const md_fx_tensor *t, size_t i);
double md_fx_value(const md_fx_tensor *t, size_t i);

/* A zeroed backend tensor of the record's shape (a scalar becomes [1]) holding its data. */
md_tensor md_fx_upload(md_backend *be, const md_fx_tensor *t);
/* Labels (exact floats in the fixture) as int32 in backend memory; free with md_backend_free. */
int32_t *md_fx_upload_labels(md_backend *be, const md_fx_tensor *t);

#endif
