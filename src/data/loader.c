/* The batch loader. A prefetch thread fills one of two slots while the caller
 * holds the other. Batch k after a seek goes to slot k % 2; the producer may
 * fill batch k only once the caller has taken batch k - 1, so the slot it
 * writes is never the one the caller is reading.
 *
 * Everything random is keyed, not sequential: epoch e's order comes from
 * stream (seed, e), and the augmentation of the sample at position j of that
 * order from a child stream of it, keyed by j. A batch is therefore a pure
 * function of (config, epoch, batch), whatever the world size or the thread
 * timing. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_impl.h"

#define MD_PERM_STREAM_ID 0 /* child of the epoch stream; sample j uses id j + 1 */

typedef struct {
    float   *x;
    int32_t *y;
    int      rows, global_rows;
    long     epoch;
    int      batch;
} md_slot;

struct md_loader {
    md_loader_config cfg; /* cfg.idx points at our own copy */
    int             *idx;
    int              batches; /* global batches per epoch */
    size_t           chw;
    float            lut[3][256]; /* normalised value of each byte, per channel */

    /* Owned by the producer thread. */
    int *perm;
    long perm_epoch; /* the epoch perm holds, -1 none */

    /* Guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t  wake_producer, wake_consumer;
    md_slot         slot[2];
    long            produced, consumed; /* batches since the last seek */
    long            next_epoch;         /* the producer's cursor */
    int             next_batch;
    unsigned long   generation; /* bumped by seek: work begun before is discarded */
    int             busy, stop;
    int             sync_ready, thread_started; /* for a partial teardown */
    pthread_t       thread;

    /* Owned by the caller: where the next md_loader_next reads. */
    long cur_epoch;
    int  cur_batch;
};

static void advance(const md_loader *l, long *epoch, int *batch) {
    if (++*batch >= l->batches) {
        *batch = 0;
        ++*epoch;
    }
}

static void ensure_perm(md_loader *l, long epoch) {
    if (l->perm_epoch == epoch) return;
    for (int i = 0; i < l->cfg.n; i++)
        l->perm[i] = i;
    if (l->cfg.shuffle) {
        md_rng e, r;
        md_rng_seed(&e, l->cfg.seed, (uint64_t)epoch);
        r = md_rng_split(&e, MD_PERM_STREAM_ID);
        md_data_shuffle(l->perm, l->cfg.n, &r);
    }
    l->perm_epoch = epoch;
}

/* Crop (zero padding of the raw image, then a window offset by dy, dx in
 * [0, 2 * pad]), then an optional mirror, then normalisation. */
static void make_image(const md_loader *l, const uint8_t *src, md_rng *r, float *dst) {
    const md_dataset *ds = l->cfg.ds;
    int               pad = l->cfg.aug.crop_pad, dy = 0, dx = 0, mirror = 0;
    if (pad > 0) {
        dy = (int)md_data_below(r, (uint32_t)(2 * pad + 1)) - pad;
        dx = (int)md_data_below(r, (uint32_t)(2 * pad + 1)) - pad;
    }
    if (l->cfg.aug.flip) mirror = (int)(md_rng_u32(r) >> 31);
    int h = ds->h, w = ds->w;
    for (int ch = 0; ch < ds->c; ch++) {
        const float   *lut = l->lut[ch];
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
}

/* This rank's rows of global batch (epoch, batch). */
static void fill_slot(md_loader *l, md_slot *s, long epoch, int batch) {
    const md_loader_config *c = &l->cfg;
    ensure_perm(l, epoch);
    long   start = (long)batch * c->batch;
    long   g = c->n - start < c->batch ? c->n - start : c->batch;
    long   lo = c->rank * g / c->world, hi = (c->rank + 1) * g / c->world;
    int    augment = c->aug.crop_pad > 0 || c->aug.flip;
    md_rng ep;
    md_rng_seed(&ep, c->seed, (uint64_t)epoch);
    for (long i = lo; i < hi; i++) {
        long   j = start + i;
        int    src = l->idx[l->perm[j]];
        md_rng r = augment ? md_rng_split(&ep, (uint64_t)j + 1) : ep;
        make_image(l, c->ds->images + (size_t)src * l->chw, &r, s->x + (size_t)(i - lo) * l->chw);
        s->y[i - lo] = c->ds->labels[src];
    }
    s->rows = (int)(hi - lo);
    s->global_rows = (int)g;
    s->epoch = epoch;
    s->batch = batch;
}

static void *producer_main(void *arg) {
    md_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->produced > l->consumed)
            pthread_cond_wait(&l->wake_producer, &l->mu);
        if (l->stop) break;
        unsigned long gen = l->generation;
        long          epoch = l->next_epoch;
        int           batch = l->next_batch;
        md_slot      *s = &l->slot[l->produced % 2];
        l->busy = 1;
        pthread_mutex_unlock(&l->mu);
        fill_slot(l, s, epoch, batch);
        pthread_mutex_lock(&l->mu);
        l->busy = 0;
        if (gen == l->generation) {
            l->produced++;
            advance(l, &l->next_epoch, &l->next_batch);
        }
        pthread_cond_broadcast(&l->wake_consumer);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static md_status check_config(const md_loader_config *c) {
    const md_dataset *ds = c->ds;
    if (!ds || !ds->images || !ds->labels || ds->n < 1)
        return md_fail(MD_ERR_ARG, "loader: no dataset");
    if (ds->c < 1 || ds->c > 3 || ds->h < 1 || ds->w < 1)
        return md_fail(MD_ERR_ARG, "loader: %s images are %dx%dx%d (1..3 channels)", ds->name,
                       ds->c, ds->h, ds->w);
    for (int ch = 0; ch < ds->c; ch++)
        if (!(ds->std[ch] > 0.0f))
            return md_fail(MD_ERR_ARG, "loader: %s channel %d has std %g", ds->name, ch,
                           ds->std[ch]);
    if (!c->idx || c->n < 1 || c->batch < 1)
        return md_fail(MD_ERR_ARG, "loader: %d samples in batches of %d (both must be >= 1)", c->n,
                       c->batch);
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return md_fail(MD_ERR_ARG, "loader: rank %d of world %d", c->rank, c->world);
    if (c->aug.crop_pad < 0 || c->aug.crop_pad > 4096)
        return md_fail(MD_ERR_ARG, "loader: crop padding %d", c->aug.crop_pad);
    if (c->drop_last && c->n < c->batch)
        return md_fail(MD_ERR_ARG, "loader: %d samples make no full batch of %d (drop_last)", c->n,
                       c->batch);
    for (int i = 0; i < c->n; i++)
        if (c->idx[i] < 0 || c->idx[i] >= ds->n)
            return md_fail(MD_ERR_ARG, "loader: index %d at position %d is outside %s's %d samples",
                           c->idx[i], i, ds->name, ds->n);
    return MD_OK;
}

static void build_lut(md_loader *l) {
    const md_dataset *ds = l->cfg.ds;
    for (int ch = 0; ch < ds->c; ch++)
        for (int v = 0; v < 256; v++)
            l->lut[ch][v] = (float)((v / 255.0 - ds->mean[ch]) / ds->std[ch]);
}

static md_status alloc_buffers(md_loader *l) {
    const md_loader_config *c = &l->cfg;
    size_t rows = (size_t)(c->batch + c->world - 1) / c->world; /* the largest slice */
    if (rows == 0) rows = 1;
    l->idx = malloc((size_t)c->n * sizeof(int));
    l->perm = malloc((size_t)c->n * sizeof(int));
    int ok = l->idx && l->perm;
    for (int k = 0; k < 2; k++) {
        l->slot[k].x = malloc(rows * l->chw * sizeof(float));
        l->slot[k].y = malloc(rows * sizeof(int32_t));
        ok = ok && l->slot[k].x && l->slot[k].y;
    }
    if (!ok)
        return md_fail(MD_ERR_NOMEM, "loader: buffers for %zu rows of %zu floats", rows, l->chw);
    return MD_OK;
}

md_status md_loader_create(const md_loader_config *cfg, md_loader **out) {
    *out = NULL;
    MD_TRY(check_config(cfg));
    md_loader *l = calloc(1, sizeof *l);
    if (!l) return md_fail(MD_ERR_NOMEM, "loader");
    l->cfg = *cfg;
    l->chw = (size_t)cfg->ds->c * cfg->ds->h * cfg->ds->w;
    l->batches = cfg->drop_last ? cfg->n / cfg->batch : (cfg->n + cfg->batch - 1) / cfg->batch;
    l->perm_epoch = -1;
    md_status s = alloc_buffers(l);
    if (s != MD_OK) {
        md_loader_destroy(l);
        return s;
    }
    memcpy(l->idx, cfg->idx, (size_t)cfg->n * sizeof(int));
    l->cfg.idx = l->idx;
    build_lut(l);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake_producer, NULL);
    pthread_cond_init(&l->wake_consumer, NULL);
    l->sync_ready = 1;
    int err = pthread_create(&l->thread, NULL, producer_main, l);
    if (err != 0) {
        md_loader_destroy(l);
        return md_fail(MD_ERR_IO, "loader: cannot start the prefetch thread: %s", strerror(err));
    }
    l->thread_started = 1;
    *out = l;
    return MD_OK;
}

void md_loader_destroy(md_loader *l) {
    if (!l) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->wake_producer);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    if (l->sync_ready) {
        pthread_cond_destroy(&l->wake_consumer);
        pthread_cond_destroy(&l->wake_producer);
        pthread_mutex_destroy(&l->mu);
    }
    for (int k = 0; k < 2; k++) {
        free(l->slot[k].x);
        free(l->slot[k].y);
    }
    free(l->perm);
    free(l->idx);
    free(l);
}

int md_loader_batches(const md_loader *l) {
    return l->batches;
}

md_status md_loader_seek(md_loader *l, long epoch, int batch) {
    if (epoch < 0 || batch < 0 || batch > l->batches)
        return md_fail(MD_ERR_ARG, "loader: seek to epoch %ld batch %d (%d batches per epoch)",
                       epoch, batch, l->batches);
    if (batch == l->batches) { /* the end of an epoch is the start of the next */
        batch = 0;
        epoch++;
    }
    pthread_mutex_lock(&l->mu);
    l->generation++;
    while (l->busy)
        pthread_cond_wait(&l->wake_consumer, &l->mu);
    l->produced = l->consumed = 0;
    l->next_epoch = epoch;
    l->next_batch = batch;
    pthread_cond_broadcast(&l->wake_producer);
    pthread_mutex_unlock(&l->mu);
    l->cur_epoch = epoch;
    l->cur_batch = batch;
    return MD_OK;
}

md_status md_loader_next(md_loader *l, const float **x, const int32_t **y, int *rows,
                         int *global_rows) {
    pthread_mutex_lock(&l->mu);
    while (l->produced <= l->consumed)
        pthread_cond_wait(&l->wake_consumer, &l->mu);
    const md_slot *s = &l->slot[l->consumed % 2];
    l->consumed++;
    pthread_cond_broadcast(&l->wake_producer);
    pthread_mutex_unlock(&l->mu);
    /* The producer leaves this slot alone until the next call takes the other. */
    *x = s->x;
    *y = s->y;
    *rows = s->rows;
    *global_rows = s->global_rows;
    l->cur_epoch = s->epoch;
    l->cur_batch = s->batch;
    advance(l, &l->cur_epoch, &l->cur_batch);
    return MD_OK;
}

void md_loader_tell(const md_loader *l, long *epoch, int *batch) {
    *epoch = l->cur_epoch;
    *batch = l->cur_batch;
}
