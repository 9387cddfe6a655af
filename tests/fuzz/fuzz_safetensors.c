/* libFuzzer harness for the checkpoint reader (src/io/safetensors.c): the
 * input is a whole file, read with md_st_read_mem (the same checks as
 * md_st_read, without the disk). What it accepts must hold together: every
 * tensor inside the data section, the tensors tiling it, sizes matching dtype
 * and shape, names found again by md_st_find, metadata by md_st_meta_get. All
 * data bytes are read (through memcpy: md_st_data is not promised to be
 * aligned for the dtype), so ASan sees any pointer that strays. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdenas/safetensors.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_safetensors: accepted file breaks an invariant: %s\n", what);
    abort();
}

static int cmp_size(const void *a, const void *b) {
    const size_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    md_st_file f;
    md_status  s = md_st_read_mem("fuzz.safetensors", data, size, &f);
    if (s != MD_OK) {
        if (s != MD_ERR_DATA) fail("a failure other than MD_ERR_DATA");
        if (f.file || f.t || f.path || f.n) fail("a failed read left memory behind");
        return 0;
    }
    if (f.size != size || f.data_start < 10 || f.data_start > size) fail("sizes");
    /* The header is JSON text that starts with '{' (the format says so), all of
     * it: a NUL would hide what follows it from the JSON reader. */
    if (data[8] != '{' || memchr(data + 8, 0, f.data_start - 8)) fail("header not all JSON");
    size_t data_len = size - f.data_start, *span = malloc(2 * sizeof(size_t) * ((size_t)f.n + 1));
    if (!span) abort();
    static const size_t    elem[3] = {4, 8, 8};
    volatile unsigned char sink = 0;
    for (int i = 0; i < f.n; i++) {
        const md_st_tensor *t = &f.t[i];
        if ((unsigned)t->dtype > MD_ST_I64 || t->ndim < 0 || t->ndim > MD_ST_MAX_DIMS)
            fail("dtype or rank");
        size_t n = elem[t->dtype];
        for (int k = 0; k < t->ndim; k++) {
            if (t->dim[k] < 0) fail("negative dimension");
            n *= (size_t)t->dim[k];
        }
        if (n != t->bytes) fail("bytes differ from dtype x shape");
        if (t->begin > data_len || t->bytes > data_len - t->begin) fail("outside the data section");
        if (md_st_find(&f, t->name) != t) fail("md_st_find");
        const unsigned char *p = md_st_data(&f, t);
        for (size_t b = 0; b < t->bytes; b += 8) {
            unsigned char word[8] = {0};
            memcpy(word, p + b, t->bytes - b < 8 ? t->bytes - b : 8);
            sink ^= word[0] ^ word[7];
        }
        span[2 * i] = t->begin, span[2 * i + 1] = t->bytes;
    }
    qsort(span, (size_t)f.n, 2 * sizeof(size_t), cmp_size);
    size_t at = 0;
    for (int i = 0; i < f.n; i++) {
        if (span[2 * i] != at) fail("gap or overlap");
        at += span[2 * i + 1];
    }
    if (at != data_len) fail("tensors do not cover the data section");
    free(span);
    for (int i = 0; i < f.nmeta; i++) {
        const char *v = md_st_meta_get(&f, f.mkey[i]);
        if (!v || strcmp(v, f.mval[i]) != 0) fail("md_st_meta_get");
    }
    (void)sink;
    md_st_free(&f);
    return 0;
}
