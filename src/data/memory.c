/* The in-memory source: a subset of a dataset held whole in memory (uint8
 * NCHW), with the padded random crop, the flip and the normalisation of
 * md_augment (src/data/augment_inline.h, which the backends' augment_u8 op
 * shares). Its draws are the loader's before the source interface, in the
 * same order, so its batches are bit for bit those of earlier versions
 * (tests/test_loader_pin.c). */
#include <stdlib.h>
#include <string.h>

#include "data/augment_inline.h"
#include "data/data_impl.h"

typedef struct {
    md_source         base;
    const md_dataset *ds;
    int              *idx;
    md_augment        aug;
    size_t            chw;
    float             lut[3][256]; /* normalised value of each byte, per channel */
} memory_source;

static md_status memory_get(md_source *s, void *worker, int i, md_rng *r, float *x, int32_t *y) {
    (void)worker;
    const memory_source *m = (const memory_source *)s;
    int                  src = m->idx[i];
    md_aug_image(m->ds->images + (size_t)src * m->chw, &m->lut[0][0], m->ds->c, m->ds->h,
                 m->ds->w, m->aug.crop_pad, m->aug.flip, m->aug.cutout, r, x);
    *y = m->ds->labels[src];
    return MD_OK;
}

static void memory_destroy(md_source *s) {
    memory_source *m = (memory_source *)s;
    free(m->idx);
    free(m);
}

static const md_source_ops memory_ops = {
    .get = memory_get,
    .destroy = memory_destroy,
};

static md_status check_memory(const md_dataset *ds, const int *idx, int n, md_augment aug) {
    if (!ds || !ds->images || !ds->labels || ds->n < 1)
        return md_fail(MD_ERR_ARG, "loader: no dataset");
    if (ds->c < 1 || ds->c > 3 || ds->h < 1 || ds->w < 1)
        return md_fail(MD_ERR_ARG, "loader: %s images are %dx%dx%d (1..3 channels)", ds->name,
                       ds->c, ds->h, ds->w);
    for (int ch = 0; ch < ds->c; ch++)
        if (!(ds->std[ch] > 0.0f))
            return md_fail(MD_ERR_ARG, "loader: %s channel %d has std %g", ds->name, ch,
                           ds->std[ch]);
    if (!idx || n < 1) return md_fail(MD_ERR_ARG, "loader: %d samples (must be >= 1)", n);
    if (aug.crop_pad < 0 || aug.crop_pad > 4096)
        return md_fail(MD_ERR_ARG, "loader: crop padding %d", aug.crop_pad);
    if (aug.cutout < 0 || aug.cutout > 4096)
        return md_fail(MD_ERR_ARG, "loader: cutout side %d", aug.cutout);
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= ds->n)
            return md_fail(MD_ERR_ARG, "loader: index %d at position %d is outside %s's %d samples",
                           idx[i], i, ds->name, ds->n);
    return MD_OK;
}

void md_dataset_lut(const md_dataset *ds, float *lut) {
    for (int ch = 0; ch < ds->c; ch++)
        for (int v = 0; v < 256; v++)
            lut[ch * 256 + v] = (float)((v / 255.0 - ds->mean[ch]) / ds->std[ch]);
}

md_status md_source_memory(const md_dataset *ds, const int *idx, int n, md_augment aug,
                           md_source **out) {
    *out = NULL;
    MD_TRY(check_memory(ds, idx, n, aug));
    memory_source *m = calloc(1, sizeof *m);
    int           *copy = malloc((size_t)n * sizeof(int));
    if (!m || !copy) {
        free(m);
        free(copy);
        return md_fail(MD_ERR_NOMEM, "loader: an index of %d samples", n);
    }
    memcpy(copy, idx, (size_t)n * sizeof(int));
    m->base.ops = &memory_ops;
    md_source_info *info = &m->base.info;
    snprintf(info->name, sizeof info->name, "%s", ds->name);
    info->n = n, info->c = ds->c, info->h = ds->h, info->w = ds->w, info->classes = ds->classes;
    m->ds = ds, m->idx = copy, m->aug = aug;
    m->chw = (size_t)ds->c * ds->h * ds->w;
    md_dataset_lut(ds, &m->lut[0][0]);
    *out = &m->base;
    return MD_OK;
}
