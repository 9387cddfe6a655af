/* The in-memory source: a subset of a dataset held whole in memory (uint8
 * NCHW), with the padded random crop, the flip and the normalisation of
 * md_augment. Its draws are the loader's before the source interface, in the
 * same order, so its batches are bit for bit those of earlier versions
 * (tests/test_loader_pin.c). */
#include <stdlib.h>
#include <string.h>

#include "data/data_impl.h"

typedef struct {
    md_source         base;
    const md_dataset *ds;
    int              *idx;
    md_augment        aug;
    size_t            chw;
    float             lut[3][256]; /* normalised value of each byte, per channel */
} memory_source;

/* Cutout as DARTS (utils.Cutout): rows [cy - L/2, cy + L/2) and the same
 * columns, clipped to the image, are zero in every channel. */
static void cutout(float *x, int c, int h, int w, int cy, int cx, int side) {
    int y0 = cy - side / 2, y1 = cy + side / 2, x0 = cx - side / 2, x1 = cx + side / 2;
    y0 = y0 < 0 ? 0 : y0, x0 = x0 < 0 ? 0 : x0;
    y1 = y1 > h ? h : y1, x1 = x1 > w ? w : x1;
    for (int ch = 0; ch < c; ch++)
        for (int y = y0; y < y1; y++)
            for (int xx = x0; xx < x1; xx++) x[((size_t)ch * h + y) * w + xx] = 0.0f;
}

/* Crop (zero padding of the raw image, then a window offset by dy, dx in
 * [-pad, pad]), then an optional mirror, then normalisation. */
static void make_image(const memory_source *m, const uint8_t *src, md_rng *r, float *dst) {
    const md_dataset *ds = m->ds;
    int               pad = m->aug.crop_pad, dy = 0, dx = 0, mirror = 0;
    if (pad > 0) {
        dy = (int)md_data_below(r, (uint32_t)(2 * pad + 1)) - pad;
        dx = (int)md_data_below(r, (uint32_t)(2 * pad + 1)) - pad;
    }
    if (m->aug.flip) mirror = (int)(md_rng_u32(r) >> 31);
    int h = ds->h, w = ds->w;
    int cy = -1, cx = -1; /* the cutout's centre: drawn after the crop and flip */
    if (m->aug.cutout > 0) {
        cy = (int)md_data_below(r, (uint32_t)h);
        cx = (int)md_data_below(r, (uint32_t)w);
    }
    float *image = dst;
    for (int ch = 0; ch < ds->c; ch++) {
        const float   *lut = m->lut[ch];
        const uint8_t *plane = src + (size_t)ch * h * w;
        for (int y = 0; y < h; y++, dst += w) {
            int sy = y + dy;
            if (sy < 0 || sy >= h) {
                for (int x = 0; x < w; x++)
                    dst[x] = lut[0];
                continue;
            }
            const uint8_t *row = plane + (size_t)sy * w;
            for (int x = 0; x < w; x++) {
                int sx = (mirror ? w - 1 - x : x) + dx;
                dst[x] = lut[sx >= 0 && sx < w ? row[sx] : 0];
            }
        }
    }
    if (cy >= 0) cutout(image, ds->c, h, w, cy, cx, m->aug.cutout);
}

static md_status memory_get(md_source *s, void *worker, int i, md_rng *r, float *x, int32_t *y) {
    (void)worker;
    const memory_source *m = (const memory_source *)s;
    int                  src = m->idx[i];
    make_image(m, m->ds->images + (size_t)src * m->chw, r, x);
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
    for (int ch = 0; ch < ds->c; ch++)
        for (int v = 0; v < 256; v++)
            m->lut[ch][v] = (float)((v / 255.0 - ds->mean[ch]) / ds->std[ch]);
    *out = &m->base;
    return MD_OK;
}
