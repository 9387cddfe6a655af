/* Shared test helpers: checks that count failures, host buffers on a backend,
 * random fills, error norms. A test's main returns md_test_finish(). */
#ifndef MDENAS_TESTUTIL_H
#define MDENAS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mdenas/backend.h"
#include "mdenas/rng.h"
#include "mdenas/tensor.h"

extern int md_test_failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            md_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        md_status chk_s_ = (expr);                                                                 \
        if (chk_s_ != MD_OK) {                                                                     \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,                   \
                    md_error_message());                                                           \
            md_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

int md_test_finish(const char *name);

/* A tensor in backend memory, zeroed. Freed by md_tbuf_free. */
md_tensor md_tbuf(md_backend *be, int ndim, const int *dim);
md_tensor md_tbuf4(md_backend *be, int n, int c, int h, int w);
md_tensor md_tbuf2(md_backend *be, int rows, int cols);
md_tensor md_tbuf1(md_backend *be, int n);
void      md_tbuf_free(md_backend *be, md_tensor *t);
void      md_tbuf_set(md_backend *be, const md_tensor *t, const float *host);
void      md_tbuf_get(md_backend *be, const md_tensor *t, float *host);
void      md_fill_uniform(md_rng *r, float *x, size_t n, float lo, float hi);
/* max |a-b| / max(1, max |b|): the normalised error used by every op test. */
double    md_norm_err(const float *a, const float *b, size_t n);
/* max |a - b| over max(max |b|, floor): whole-network gradients against a reference. */
double    md_max_rel_err(const float *a, const float *b, size_t n, double floor);

/* md_backend_alloc_host on b: zeroed, 64-byte aligned, uploads from it arrive whole. */
void      md_test_host_memory(md_backend *b);
/* The whole file, malloc'ed (free it), *n its size; NULL if it cannot be read. */
uint8_t  *md_test_read_file(const char *path, size_t *n);

#endif
