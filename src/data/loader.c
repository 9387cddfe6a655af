/* The batch loader: a pool of worker threads fills a ring of batch buffers
 * from a source while the caller trains on the batch it holds.
 *
 * Batches are numbered k = 0, 1, ... from the last seek; batch k lives in
 * slot k % depth. The caller holds batch consumed - 1, so workers may set up
 * batches up to consumed + depth - 2 and never write the slot it reads. A
 * batch set up is handed out to the workers in chunks of rows; it is ready
 * when every row is done. Set-up happens in batch order under the lock, which
 * is where the epoch's permutation is drawn (once per epoch).
 *
 * Everything random is keyed, not sequential: epoch e's order comes from
 * stream (seed, e), and the augmentation of the sample at position j of that
 * order from a child stream of it, keyed by j + 1. A batch is therefore a pure
 * function of (config, epoch, batch), whatever the world size, the thread
 * count or the timing. A row that fails records its error in its slot; the
 * caller gets the error of the batch's first failing row, so even the message
 * does not depend on the timing.
 *
 * Device mode (cfg.device, in-memory data only) has no workers and no ring:
 * md_loader_next hands the epoch's order to the callbacks once per epoch and
 * asks them for this rank's rows of the batch, with the same positions and
 * streams as a worker would use, so the batches are the same bits. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/philox_inline.h"
#include "data/data_impl.h"

#define MD_PERM_STREAM_ID     0 /* child of the epoch stream; sample j uses id j + 1 */
#define MD_LOADER_MAX_THREADS 256

typedef struct {
    float    *x;
    int32_t  *y;
    int      *items; /* source sample of each row */
    int       rows, global_rows;
    long      epoch;
    int       batch;
    long      first_pos; /* position in the epoch's order of row 0 */
    int       claimed, done;
    md_status status; /* of the first failing row, err_row */
    int       err_row;
    char      err[1024];
} md_slot;

struct md_loader {
    md_loader_config cfg;
    md_source       *src;
    md_source       *own_src; /* made from cfg.ds when no source was given */
    md_source_info   info;
    int              batches; /* global batches per epoch */
    int              depth, nthreads;
    size_t           chw, max_rows;
    md_loader_mem    mem;

    /* Guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t  wake_worker, wake_consumer;
    int            *perm;
    long            perm_epoch; /* the epoch perm holds, -1 none */
    md_slot        *slot;
    long            consumed, setup; /* batches taken by the caller / set up, since the seek */
    long            next_epoch;      /* the position of batch `setup` */
    int             next_batch;
    unsigned long   generation; /* bumped by seek: work begun before is discarded */
    int             busy, stop;
    int             sync_ready, started; /* for a partial teardown */
    pthread_t      *thread;
    void          **worker;
    double          wait_s;

    /* Owned by the caller: where the next md_loader_next reads. */
    long           cur_epoch;
    int            cur_batch;
    const int32_t *labels_host; /* of the batch last handed out */

    /* Device mode: the callbacks, the subset, the order handed over. */
    int              device;
    md_loader_device dev;
    int32_t         *dev_idx;    /* cfg.idx: dataset index of each sample */
    int32_t         *dev_order;  /* dataset index of each position of dev_epoch */
    long             dev_epoch;  /* the epoch whose order the callbacks hold, -1 none */
    int32_t         *dev_labels; /* host copy of the last batch's labels */
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void advance(const md_loader *l, long *epoch, int *batch) {
    if (++*batch >= l->batches) {
        *batch = 0;
        ++*epoch;
    }
}

static void ensure_perm(md_loader *l, long epoch) {
    if (l->perm_epoch == epoch) return;
    int n = l->info.n;
    for (int i = 0; i < n; i++)
        l->perm[i] = i;
    if (l->cfg.shuffle) {
        md_rng e, r;
        md_rng_seed(&e, l->cfg.seed, (uint64_t)epoch);
        r = md_rng_split(&e, MD_PERM_STREAM_ID);
        md_data_shuffle(l->perm, n, &r);
    }
    l->perm_epoch = epoch;
}

/* Global batch `batch`: its first position, its rows g and this rank's slice
 * [lo, hi) of them. */
static void batch_slice(const md_loader *l, int batch, long *start, long *g, long *lo, long *hi) {
    const md_loader_config *c = &l->cfg;
    *start = (long)batch * c->batch;
    *g = l->info.n - *start < c->batch ? l->info.n - *start : c->batch;
    *lo = c->rank * *g / c->world, *hi = (c->rank + 1) * *g / c->world;
}

/* Under mu: batch `setup` into its slot, this rank's rows of the global batch. */
static void setup_batch(md_loader *l) {
    md_slot *s = &l->slot[l->setup % l->depth];
    long     epoch = l->next_epoch;
    int      batch = l->next_batch;
    ensure_perm(l, epoch);
    long start, g, lo, hi;
    batch_slice(l, batch, &start, &g, &lo, &hi);
    for (long i = lo; i < hi; i++)
        s->items[i - lo] = l->perm[start + i];
    s->rows = (int)(hi - lo);
    s->global_rows = (int)g;
    s->epoch = epoch;
    s->batch = batch;
    s->first_pos = start + lo;
    s->claimed = s->done = 0;
    s->status = MD_OK;
    s->err_row = s->rows;
    s->err[0] = '\0';
    l->setup++;
    advance(l, &l->next_epoch, &l->next_batch);
}

/* Under mu: a chunk of rows to fill, or NULL when there is nothing to do yet. */
static md_slot *claim(md_loader *l, int *first, int *count) {
    for (;;) {
        for (long k = l->consumed; k < l->setup; k++) {
            md_slot *s = &l->slot[k % l->depth];
            if (s->claimed >= s->rows) continue;
            int chunk =
                l->nthreads == 1 ? s->rows : (s->rows + 4 * l->nthreads - 1) / (4 * l->nthreads);
            *first = s->claimed;
            *count = s->rows - s->claimed < chunk ? s->rows - s->claimed : chunk;
            s->claimed += *count;
            return s;
        }
        if (l->setup >= l->consumed + l->depth - 1) return NULL;
        setup_batch(l);
        if (l->slot[(l->setup - 1) % l->depth].rows == 0)
            pthread_cond_broadcast(&l->wake_consumer); /* an empty slice is ready at once */
    }
}

/* Outside mu: rows [first, first + count) of slot s. */
static void fill_rows(md_loader *l, void *worker, md_slot *s, int first, int count, md_status *st,
                      int *bad_row, char *err) {
    md_rng ep;
    md_rng_seed(&ep, l->cfg.seed, (uint64_t)s->epoch);
    *st = MD_OK;
    for (int i = first; i < first + count; i++) {
        md_rng    r = md_rng_split(&ep, (uint64_t)(s->first_pos + i) + 1);
        md_status e =
            l->src->ops->get(l->src, worker, s->items[i], &r, s->x + (size_t)i * l->chw, s->y + i);
        if (e != MD_OK) { /* keep the first row's error; go on, the batch fails anyway */
            if (*st == MD_OK) {
                *st = e, *bad_row = i;
                snprintf(err, sizeof s->err, "%s", md_error_message());
            }
        }
    }
}

typedef struct {
    md_loader *l;
    int        id;
} worker_arg;

static void *worker_main(void *arg) {
    md_loader *l = ((worker_arg *)arg)->l;
    void      *worker = l->worker[((worker_arg *)arg)->id];
    free(arg);
    char *err = malloc(sizeof((md_slot *)0)->err);
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int      first = 0, count = 0;
        md_slot *s = NULL;
        while (!l->stop && !(s = claim(l, &first, &count)))
            pthread_cond_wait(&l->wake_worker, &l->mu);
        if (l->stop) break;
        unsigned long gen = l->generation;
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        md_status st = MD_OK;
        int       bad = 0;
        if (err)
            fill_rows(l, worker, s, first, count, &st, &bad, err);
        else /* no scratch for a message: a status still tells the caller */
            st = MD_ERR_NOMEM, bad = first;
        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (gen == l->generation) {
            s->done += count;
            if (st != MD_OK && bad < s->err_row) {
                s->status = st, s->err_row = bad;
                snprintf(s->err, sizeof s->err, "%s",
                         err ? err : "loader: no memory for a worker's error message");
            }
        }
        pthread_cond_broadcast(&l->wake_consumer);
    }
    pthread_mutex_unlock(&l->mu);
    free(err);
    return NULL;
}

static md_status check_config(const md_loader_config *c) {
    if (!c->source && (!c->idx || c->n < 1 || c->batch < 1))
        return md_fail(MD_ERR_ARG, "loader: %d samples in batches of %d (both must be >= 1)", c->n,
                       c->batch);
    if (c->batch < 1) return md_fail(MD_ERR_ARG, "loader: batches of %d (must be >= 1)", c->batch);
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return md_fail(MD_ERR_ARG, "loader: rank %d of world %d", c->rank, c->world);
    if (c->threads < 0 || c->threads > MD_LOADER_MAX_THREADS)
        return md_fail(MD_ERR_ARG, "loader: %d threads (0..%d)", c->threads, MD_LOADER_MAX_THREADS);
    if (c->depth < 0 || c->depth == 1 || c->depth > 64)
        return md_fail(MD_ERR_ARG, "loader: a ring of %d batches (2..64, or 0 for 3)", c->depth);
    if (!c->mem.alloc != !c->mem.free)
        return md_fail(MD_ERR_ARG, "loader: a memory hook needs both alloc and free");
    if (c->device && (c->source || !c->device->epoch || !c->device->batch))
        return md_fail(MD_ERR_ARG, "loader: device mode needs an in-memory dataset (ds, not a "
                                   "source) and both callbacks (epoch, batch)");
    return MD_OK;
}

static md_status check_source(const md_loader *l) {
    const md_source_info *in = &l->info;
    if (in->n < 1 || in->c < 1 || in->h < 1 || in->w < 1)
        return md_fail(MD_ERR_ARG, "loader: source %s has %d samples of %dx%dx%d", in->name, in->n,
                       in->c, in->h, in->w);
    if (l->cfg.drop_last && in->n < l->cfg.batch)
        return md_fail(MD_ERR_ARG, "loader: %d samples make no full batch of %d (drop_last)", in->n,
                       l->cfg.batch);
    return MD_OK;
}

static void *host_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

static void host_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static md_status alloc_buffers(md_loader *l) {
    const md_loader_config *c = &l->cfg;
    size_t rows = (size_t)(c->batch + c->world - 1) / c->world; /* the largest slice */
    if (rows == 0) rows = 1;
    l->max_rows = rows;
    l->perm = malloc((size_t)l->info.n * sizeof(int));
    l->slot = calloc((size_t)l->depth, sizeof *l->slot);
    l->thread = calloc((size_t)l->nthreads, sizeof *l->thread);
    l->worker = calloc((size_t)l->nthreads, sizeof *l->worker);
    if (!l->perm || !l->slot || !l->thread || !l->worker)
        return md_fail(MD_ERR_NOMEM, "loader: an order of %d samples", l->info.n);
    for (int k = 0; k < l->depth; k++) {
        md_slot *s = &l->slot[k];
        s->x = l->mem.alloc(l->mem.ctx, rows * l->chw * sizeof(float));
        s->y = l->mem.alloc(l->mem.ctx, rows * sizeof(int32_t));
        s->items = malloc(rows * sizeof(int));
        if (!s->x || !s->y || !s->items) {
            char h[32];
            return md_fail(MD_ERR_NOMEM,
                           "loader: a ring of %d batches of %zu rows of %zu floats "
                           "(%s each)",
                           l->depth, rows, l->chw,
                           md_data_human_bytes(rows * l->chw * sizeof(float), h));
        }
    }
    return MD_OK;
}

/* Device mode's host state: the subset and the order as dataset indices, the labels. */
static md_status alloc_device(md_loader *l, const int *idx) {
    size_t n = (size_t)l->info.n;
    l->perm = malloc(n * sizeof(int));
    l->dev_idx = malloc(n * sizeof(int32_t));
    l->dev_order = malloc(n * sizeof(int32_t));
    l->dev_labels = malloc(((size_t)l->cfg.batch / l->cfg.world + 1) * sizeof(int32_t));
    if (!l->perm || !l->dev_idx || !l->dev_order || !l->dev_labels)
        return md_fail(MD_ERR_NOMEM, "loader: an order of %d samples", l->info.n);
    for (size_t i = 0; i < n; i++)
        l->dev_idx[i] = idx[i];
    return MD_OK;
}

static md_status start_workers(md_loader *l) {
    for (int t = 0; t < l->nthreads; t++)
        if (l->src->ops->worker_create) MD_TRY(l->src->ops->worker_create(l->src, &l->worker[t]));
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake_worker, NULL);
    pthread_cond_init(&l->wake_consumer, NULL);
    l->sync_ready = 1;
    for (int t = 0; t < l->nthreads; t++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) return md_fail(MD_ERR_NOMEM, "loader: a worker thread");
        a->l = l, a->id = t;
        int err = pthread_create(&l->thread[t], NULL, worker_main, a);
        if (err != 0) {
            free(a);
            return md_fail(MD_ERR_IO, "loader: cannot start worker thread %d of %d: %s", t + 1,
                           l->nthreads, strerror(err));
        }
        l->started++;
    }
    return MD_OK;
}

md_status md_loader_create(const md_loader_config *cfg, md_loader **out) {
    *out = NULL;
    MD_TRY(check_config(cfg));
    md_loader *l = calloc(1, sizeof *l);
    if (!l) return md_fail(MD_ERR_NOMEM, "loader");
    l->cfg = *cfg;
    l->cfg.idx = NULL; /* the memory source keeps its own copy */
    l->depth = cfg->depth ? cfg->depth : 3;
    l->nthreads = cfg->threads ? cfg->threads : 1;
    l->mem = cfg->mem.alloc ? cfg->mem : (md_loader_mem){host_alloc, host_free, NULL};
    l->perm_epoch = -1;
    l->dev_epoch = -1;
    if (cfg->device) l->device = 1, l->dev = *cfg->device;
    md_status s = MD_OK;
    if (cfg->source)
        l->src = cfg->source;
    else if ((s = md_source_memory(cfg->ds, cfg->idx, cfg->n, cfg->aug, &l->own_src)) == MD_OK)
        l->src = l->own_src;
    if (s == MD_OK) {
        l->info = l->src->info;
        l->chw = (size_t)l->info.c * l->info.h * l->info.w;
        l->batches =
            cfg->drop_last ? l->info.n / cfg->batch : (l->info.n + cfg->batch - 1) / cfg->batch;
        s = check_source(l);
    }
    if (s == MD_OK && l->device) s = alloc_device(l, cfg->idx);
    if (s == MD_OK && !l->device) s = alloc_buffers(l);
    if (s == MD_OK && !l->device) s = start_workers(l);
    if (s != MD_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", md_error_message());
        md_loader_destroy(l);
        md_error_restore(msg);
        return s;
    }
    *out = l;
    return MD_OK;
}

void md_loader_destroy(md_loader *l) {
    if (!l) return;
    if (l->sync_ready) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->wake_worker);
        pthread_mutex_unlock(&l->mu);
    }
    for (int t = 0; t < l->started; t++)
        pthread_join(l->thread[t], NULL);
    if (l->sync_ready) {
        pthread_cond_destroy(&l->wake_consumer);
        pthread_cond_destroy(&l->wake_worker);
        pthread_mutex_destroy(&l->mu);
    }
    if (l->worker && l->src && l->src->ops->worker_destroy)
        for (int t = 0; t < l->nthreads; t++)
            if (l->worker[t]) l->src->ops->worker_destroy(l->src, l->worker[t]);
    if (l->slot)
        for (int k = 0; k < l->depth; k++) {
            if (l->slot[k].x) l->mem.free(l->mem.ctx, l->slot[k].x);
            if (l->slot[k].y) l->mem.free(l->mem.ctx, l->slot[k].y);
            free(l->slot[k].items);
        }
    free(l->slot);
    free(l->thread);
    free(l->worker);
    free(l->perm);
    free(l->dev_idx);
    free(l->dev_order);
    free(l->dev_labels);
    md_source_destroy(l->own_src);
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
    if (l->device) {
        l->cur_epoch = epoch;
        l->cur_batch = batch;
        return MD_OK;
    }
    pthread_mutex_lock(&l->mu);
    l->generation++;
    while (l->busy)
        pthread_cond_wait(&l->wake_consumer, &l->mu);
    l->consumed = l->setup = 0;
    l->next_epoch = epoch;
    l->next_batch = batch;
    pthread_cond_broadcast(&l->wake_worker);
    pthread_mutex_unlock(&l->mu);
    l->cur_epoch = epoch;
    l->cur_batch = batch;
    return MD_OK;
}

static int ready(const md_loader *l) {
    if (l->consumed >= l->setup) return 0;
    const md_slot *s = &l->slot[l->consumed % l->depth];
    return s->done >= s->rows;
}

/* Device mode's md_loader_next: the order once per epoch, then the batch op. On
 * failure the loader stays at this batch. */
static md_status device_next(md_loader *l, const float **x, const int32_t **y, int *rows,
                             int *global_rows) {
    long epoch = l->cur_epoch;
    if (l->dev_epoch != epoch) {
        ensure_perm(l, epoch);
        for (int j = 0; j < l->info.n; j++)
            l->dev_order[j] = l->dev_idx[l->perm[j]];
        l->dev_epoch = -1;
        MD_TRY(l->dev.epoch(l->dev.ctx, l->dev_order, l->info.n));
        l->dev_epoch = epoch;
    }
    long start, g, lo, hi;
    batch_slice(l, l->cur_batch, &start, &g, &lo, &hi);
    uint64_t key = md_rng_key_seed(l->cfg.seed, (uint64_t)epoch); /* fill_rows's stream */
    MD_TRY(l->dev.batch(l->dev.ctx, start + lo, (int)(hi - lo), key, x, y));
    for (long i = lo; i < hi; i++)
        l->dev_labels[i - lo] = l->cfg.ds->labels[l->dev_order[start + i]];
    l->labels_host = l->dev_labels;
    *rows = (int)(hi - lo);
    *global_rows = (int)g;
    advance(l, &l->cur_epoch, &l->cur_batch);
    return MD_OK;
}

md_status md_loader_next(md_loader *l, const float **x, const int32_t **y, int *rows,
                         int *global_rows) {
    if (l->device) return device_next(l, x, y, rows, global_rows);
    pthread_mutex_lock(&l->mu);
    if (!ready(l)) {
        double t = now_s();
        pthread_cond_broadcast(&l->wake_worker); /* a worker may wait for a batch to set up */
        while (!ready(l))
            pthread_cond_wait(&l->wake_consumer, &l->mu);
        l->wait_s += now_s() - t;
    }
    const md_slot *s = &l->slot[l->consumed % l->depth];
    if (s->status != MD_OK) { /* stay at this batch: the next call fails the same way */
        md_status st = s->status;
        md_error_restore(s->err);
        pthread_mutex_unlock(&l->mu);
        return st;
    }
    l->consumed++;
    pthread_cond_broadcast(&l->wake_worker);
    pthread_mutex_unlock(&l->mu);
    /* The workers leave this slot alone until the next call takes another. */
    *x = s->x;
    *y = s->y;
    l->labels_host = s->y;
    *rows = s->rows;
    *global_rows = s->global_rows;
    l->cur_epoch = s->epoch;
    l->cur_batch = s->batch;
    advance(l, &l->cur_epoch, &l->cur_batch);
    return MD_OK;
}

const int32_t *md_loader_labels_host(const md_loader *l) {
    return l->labels_host;
}

int md_loader_on_device(const md_loader *l) {
    return l->device;
}

void md_loader_tell(const md_loader *l, long *epoch, int *batch) {
    *epoch = l->cur_epoch;
    *batch = l->cur_batch;
}

const md_source_info *md_loader_describe(const md_loader *l) {
    return &l->info;
}

double md_loader_wait_s(const md_loader *l) {
    if (l->device) return 0.0; /* the batch op is queued, never waited for */
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    double t = l->wait_s;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
    return t;
}

void md_source_destroy(md_source *s) {
    if (s) s->ops->destroy(s);
}

const md_source_info *md_source_describe(const md_source *s) {
    return &s->info;
}
