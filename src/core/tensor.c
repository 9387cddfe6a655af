#include "mdenas/tensor.h"

#include <stdio.h>

md_tensor md_tensor_4d(float *data, int n, int c, int h, int w) {
    md_tensor t = {data, 4, {n, c, h, w}};
    return t;
}

md_tensor md_tensor_2d(float *data, int rows, int cols) {
    md_tensor t = {data, 2, {rows, cols, 0, 0}};
    return t;
}

md_tensor md_tensor_1d(float *data, int n) {
    md_tensor t = {data, 1, {n, 0, 0, 0}};
    return t;
}

size_t md_tensor_numel(const md_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)(t->dim[i] > 0 ? t->dim[i] : 0);
    return n;
}

int md_tensor_same_shape(const md_tensor *a, const md_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dim[i] != b->dim[i]) return 0;
    return 1;
}

char *md_tensor_shape_str(const md_tensor *t, char *buf, size_t len) {
    size_t pos = 0;
    if (len == 0) return buf;
    buf[0] = '\0';
    pos += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < t->ndim && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, i ? ",%d" : "%d", t->dim[i]);
    if (pos < len) snprintf(buf + pos, len - pos, "]");
    return buf;
}
