#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox_inline.h"
#include "data/data_impl.h"

/* The split's own stream, so that it never coincides with a loader epoch. */
#define MD_SPLIT_STREAM 0x73706C6974ull /* "split" */

uint32_t md_data_below(md_rng *r, uint32_t bound) {
    return md_rng_below(r, bound);
}

void md_data_shuffle(int *a, int n, md_rng *r) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)md_data_below(r, (uint32_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

md_status md_data_alloc(md_dataset *ds, const char *name, int n, int c, int h, int w, int classes) {
    memset(ds, 0, sizeof *ds);
    size_t bytes = (size_t)n * c * h * w;
    snprintf(ds->name, sizeof ds->name, "%s", name);
    ds->n = n, ds->c = c, ds->h = h, ds->w = w, ds->classes = classes;
    ds->images = malloc(bytes ? bytes : 1);
    ds->labels = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!ds->images || !ds->labels) {
        md_dataset_free(ds);
        return md_fail(MD_ERR_NOMEM, "%s: %d images of %dx%dx%d (%zu bytes)", name, n, c, h, w,
                       bytes);
    }
    return MD_OK;
}

void md_dataset_free(md_dataset *ds) {
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

md_status md_dataset_split(int n, double val_fraction, uint64_t seed, int **train_idx, int *ntrain,
                           int **val_idx, int *nval) {
    *train_idx = *val_idx = NULL;
    *ntrain = *nval = 0;
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return md_fail(MD_ERR_ARG, "split: validation fraction %g must be in [0, 1)", val_fraction);
    long nv = lround(n * val_fraction), nt = n - nv;
    if (n < 1 || nt < 1 || (val_fraction > 0.0 && nv < 1))
        return md_fail(MD_ERR_ARG,
                       "split: %d samples with validation fraction %g give %ld train and %ld "
                       "validation samples (each must be >= 1)",
                       n, val_fraction, nt, nv);
    int *perm = malloc((size_t)n * sizeof(int));
    int *val = nv ? malloc((size_t)nv * sizeof(int)) : NULL;
    if (!perm || (nv && !val)) {
        free(perm);
        free(val);
        return md_fail(MD_ERR_NOMEM, "split: %d indices", n);
    }
    md_rng r;
    md_rng_seed(&r, seed, MD_SPLIT_STREAM);
    for (int i = 0; i < n; i++)
        perm[i] = i;
    md_data_shuffle(perm, n, &r);
    if (nv) memcpy(val, perm + nt, (size_t)nv * sizeof(int));
    int *train = realloc(perm, (size_t)nt * sizeof(int)); /* shrinking: keeps the head */
    *train_idx = train ? train : perm;
    *ntrain = (int)nt;
    *val_idx = val;
    *nval = (int)nv;
    return MD_OK;
}
