/* In-memory datasets on the backend: see devdata.h. */
#include "train/devdata.h"

#include <stdio.h>
#include <stdlib.h>

struct md_devset {
    md_backend *const *be;
    const md_dataset  *ds;
    uint8_t           *images; /* backend memory */
    int32_t           *labels;
    float             *lut; /* [c][256] */
};

struct md_devdata {
    md_devset       *set;
    md_augment       aug;
    int              n, max_rows;
    int32_t         *order; /* backend memory, n entries */
    float           *x;     /* backend memory, max_rows rows */
    int32_t         *y;
    md_loader_device cb;
};

void md_devset_destroy(md_devset *s) {
    if (!s) return;
    md_backend *be = *s->be;
    md_backend_free(be, s->images);
    md_backend_free(be, s->labels);
    md_backend_free(be, s->lut);
    free(s);
}

md_status md_devset_create(md_backend *const *be, const md_dataset *ds, md_devset **out) {
    *out = NULL;
    if (!be || !*be || !ds || !ds->images || !ds->labels || ds->n < 1 || ds->c < 1 || ds->c > 3)
        return md_fail(MD_ERR_ARG, "device data: no backend or no dataset (1..3 channels)");
    if (!md_backend_has_augment_u8(*be))
        return md_fail(MD_ERR_BACKEND, "device data: the %s backend has no batch op for "
                                       "in-memory datasets (augment_u8)",
                       md_backend_name(*be));
    md_devset *s = calloc(1, sizeof *s);
    if (!s) return md_fail(MD_ERR_NOMEM, "device data");
    s->be = be, s->ds = ds;
    size_t    bytes = (size_t)ds->n * ds->c * ds->h * ds->w;
    float     lut[3 * 256];
    md_status st = md_backend_alloc(*be, bytes, (void **)&s->images);
    if (st == MD_OK) st = md_backend_alloc(*be, (size_t)ds->n * sizeof(int32_t), (void **)&s->labels);
    if (st == MD_OK) st = md_backend_alloc(*be, sizeof lut, (void **)&s->lut);
    if (st == MD_OK) st = md_backend_upload(*be, s->images, ds->images, bytes);
    if (st == MD_OK)
        st = md_backend_upload(*be, s->labels, ds->labels, (size_t)ds->n * sizeof(int32_t));
    if (st == MD_OK) {
        md_dataset_lut(ds, lut);
        st = md_backend_upload(*be, s->lut, lut, (size_t)ds->c * 256 * sizeof(float));
    }
    if (st != MD_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", md_error_message());
        md_devset_destroy(s);
        return md_fail(st, "device data: %s (%d images, %.1f MiB) on the %s backend: %s",
                       ds->name, ds->n, (double)bytes / 1048576.0, md_backend_name(*be), msg);
    }
    *out = s;
    return MD_OK;
}

static md_status dev_epoch(void *ctx, const int32_t *order, int n) {
    md_devdata *d = ctx;
    if (n != d->n)
        return md_fail(MD_ERR_ARG, "device data: an order of %d positions, made for %d", n, d->n);
    return md_backend_upload(*d->set->be, d->order, order, (size_t)n * sizeof(int32_t));
}

static md_status dev_batch(void *ctx, long j0, int rows, uint64_t epoch_key, const float **x,
                           const int32_t **y) {
    md_devdata      *d = ctx;
    const md_devset *s = d->set;
    if (rows > d->max_rows)
        return md_fail(MD_ERR_ARG, "device data: a batch of %d rows in a buffer of %d", rows,
                       d->max_rows);
    md_u8_batch b = {.images = s->images, .labels = s->labels, .lut = s->lut, .order = d->order,
                     .n_images = s->ds->n, .c = s->ds->c, .h = s->ds->h, .w = s->ds->w,
                     .n = d->n, .j0 = j0, .rows = rows, .epoch_key = epoch_key,
                     .crop_pad = d->aug.crop_pad, .flip = d->aug.flip != 0,
                     .cutout = d->aug.cutout, .x = d->x, .y = d->y};
    MD_TRY(md_backend_augment_u8(*s->be, &b));
    *x = d->x, *y = d->y;
    return MD_OK;
}

void md_devdata_destroy(md_devdata *d) {
    if (!d) return;
    md_backend *be = *d->set->be;
    md_backend_free(be, d->order);
    md_backend_free(be, d->x);
    md_backend_free(be, d->y);
    free(d);
}

md_status md_devdata_create(md_devset *set, int n, int max_rows, md_augment aug,
                            md_devdata **out) {
    *out = NULL;
    if (!set || n < 1 || max_rows < 1)
        return md_fail(MD_ERR_ARG, "device data: %d positions, batches of %d rows", n, max_rows);
    md_devdata *d = calloc(1, sizeof *d);
    if (!d) return md_fail(MD_ERR_NOMEM, "device data");
    d->set = set, d->aug = aug, d->n = n, d->max_rows = max_rows;
    d->cb = (md_loader_device){.ctx = d, .epoch = dev_epoch, .batch = dev_batch};
    md_backend     *be = *set->be;
    const md_dataset *ds = set->ds;
    size_t            chw = (size_t)ds->c * ds->h * ds->w;
    md_status         st = md_backend_alloc(be, (size_t)n * sizeof(int32_t), (void **)&d->order);
    if (st == MD_OK) st = md_backend_alloc(be, (size_t)max_rows * chw * sizeof(float), (void **)&d->x);
    if (st == MD_OK) st = md_backend_alloc(be, (size_t)max_rows * sizeof(int32_t), (void **)&d->y);
    if (st != MD_OK) {
        md_devdata_destroy(d);
        return st;
    }
    *out = d;
    return MD_OK;
}

const md_loader_device *md_devdata_callbacks(const md_devdata *d) {
    return &d->cb;
}
