#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int md_test_failures = 0;

int md_test_finish(const char *name) {
    if (md_test_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, md_test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

md_tensor md_tbuf(md_backend *be, int ndim, const int *dim) {
    md_tensor t = {0};
    t.ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        t.dim[i] = dim[i];
        n *= (size_t)dim[i];
    }
    void *p = NULL;
    if (md_backend_alloc(be, n * sizeof(float), &p) != MD_OK) {
        fprintf(stderr, "test allocation of %zu floats failed: %s\n", n, md_error_message());
        exit(2);
    }
    t.data = p;
    return t;
}

md_tensor md_tbuf4(md_backend *be, int n, int c, int h, int w) {
    int d[4] = {n, c, h, w};
    return md_tbuf(be, 4, d);
}
md_tensor md_tbuf2(md_backend *be, int rows, int cols) {
    int d[2] = {rows, cols};
    return md_tbuf(be, 2, d);
}
md_tensor md_tbuf1(md_backend *be, int n) {
    return md_tbuf(be, 1, &n);
}

void md_tbuf_free(md_backend *be, md_tensor *t) {
    md_backend_free(be, t->data);
    t->data = NULL;
}

void md_tbuf_set(md_backend *be, const md_tensor *t, const float *host) {
    if (md_backend_upload(be, t->data, host, md_tensor_numel(t) * sizeof(float)) != MD_OK) {
        fprintf(stderr, "upload failed: %s\n", md_error_message());
        exit(2);
    }
}

void md_tbuf_get(md_backend *be, const md_tensor *t, float *host) {
    if (md_backend_download(be, host, t->data, md_tensor_numel(t) * sizeof(float)) != MD_OK) {
        fprintf(stderr, "download failed: %s\n", md_error_message());
        exit(2);
    }
}

void md_fill_uniform(md_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * md_rng_uniform(r);
}

double md_norm_err(const float *a, const float *b, size_t n) {
    double maxdiff = 0.0, maxref = 1.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > maxdiff || isnan(d)) maxdiff = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > maxref) maxref = fabs((double)b[i]);
    }
    return maxdiff / maxref;
}

/* md_backend_alloc_host: zeroed, 64-byte aligned host memory, and an upload
 * from it arrives whole (CUDA: page-locked). */
void md_test_host_memory(md_backend *b) {
    float *h = NULL, *d = NULL;
    CHECK_OK(md_backend_alloc_host(b, 1000 * sizeof(float), (void **)&h));
    CHECK(h && ((uintptr_t)h & 63) == 0, "host memory %p not 64-byte aligned", (void *)h);
    if (!h) return;
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= h[i] == 0.0f, h[i] = (float)i;
    CHECK(zero, "host memory not zeroed");
    CHECK_OK(md_backend_alloc(b, 1000 * sizeof(float), (void **)&d));
    float back[1000] = {0};
    if (d) {
        CHECK_OK(md_backend_upload(b, d, h, sizeof back));
        CHECK_OK(md_backend_download(b, back, d, sizeof back));
        CHECK(back[999] == 999.0f && back[1] == 1.0f, "upload from host memory: %g", back[999]);
    }
    md_backend_free(b, d);
    md_backend_free_host(b, h);
}

uint8_t *md_test_read_file(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *b = NULL;
    long     size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (b = malloc((size_t)size + 1)) != NULL &&
        fread(b, 1, (size_t)size, f) != (size_t)size) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) *n = (size_t)size;
    return b;
}

double md_max_rel_err(const float *a, const float *b, size_t n, double floor) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / fmax(den, floor);
}
