/* The search loop (MDENAS.md, "The learning loop"): set-up, sampling periods,
 * validation, the multinomial update, and what the run directory becomes. The
 * step is step.c, checkpoints checkpoint.c, the result files runfiles.c. */
#include "mdenas/search.h"

#include <signal.h>
#include <unistd.h>

#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

#include "mdenas/backend.h"
#include "mdenas/data.h"
#include "mdenas/runlog.h"
#include "train/search_impl.h"
#include "train/stop.h"


/* ---- run directory ------------------------------------------------------------ */

static md_status make_dirs(const char *path) {
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0777) && errno != EEXIST)
                return md_fail(MD_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
            *p = '/';
        }
    if (mkdir(tmp, 0777) && errno != EEXIST)
        return md_fail(MD_ERR_IO, "cannot create run directory %s: %s", tmp, strerror(errno));
    return MD_OK;
}

/* ---- the run ---------------------------------------------------------------------- */

typedef md_run run_t;

double md_run_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A line on the terminal and in the log, rank 0 only. */
void md_run_say(run_t *r, const char *fmt, ...) {
    if (r->rank != 0) return;
    char    line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fputs(line, stdout);
    fflush(stdout);
    if (r->log) {
        fputs(line, r->log);
        fflush(r->log);
    }
}

static FILE *open_in(const char *dir, const char *name, const char *mode) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    if (stat(p, &st) == 0 && !S_ISREG(st.st_mode)) { /* before open: a FIFO would block */
        md_fail(MD_ERR_IO, "%s is not a regular file", p);
        return NULL;
    }
    FILE *f = fopen(p, mode);
    if (!f) md_fail(MD_ERR_IO, "cannot open %s: %s", p, strerror(errno));
    return f;
}

static int data_threads(const md_search_config *c) {
    if (c->data_threads) return c->data_threads;
    if (strcmp(c->dataset, "imagenet")) return 1;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores >= 4 ? 4 : cores >= 1 ? (int)cores : 1;
}

/* The loaders' batch rings come from the backend: page-locked under CUDA. The
 * context is &r->be, the current backend: keep_saved_threads may replace a CPU
 * backend after the loaders exist (CPU host memory is plain memory, so the new
 * one frees what the old one made). */
static void *ring_alloc(void *be, size_t bytes) {
    void *p = NULL;
    return md_backend_alloc_host(*(md_backend **)be, bytes, &p) == MD_OK ? p : NULL;
}
static void ring_free(void *be, void *p) { md_backend_free_host(*(md_backend **)be, p); }

/* ImageNet: split `train` for the weights, `search_val` for the distribution's
 * validation (the real `val` is for evaluation only). */
static md_status load_imagenet(run_t *r) {
    const md_search_config *c = r->cfg;
    md_imagenet_config      ic = {.image_size = c->image_size, .train = 1,
                                  .scale_lo = c->crop_scale[0], .scale_hi = c->crop_scale[1],
                                  .flip = c->flip, .limit = c->subset};
    MD_TRY(md_source_imagenet(c->data_dir, "train", &ic, &r->train_src));
    ic.train = 0, ic.flip = 0, ic.limit = 0;
    /* Training a network: evaluated on the real validation split. */
    MD_TRY(md_source_imagenet(c->data_dir, c->train ? "val" : "search_val", &ic, &r->val_src));
    r->ntrain = md_source_describe(r->train_src)->n;
    r->nval = md_source_describe(r->val_src)->n;
    if (r->ntrain < c->batch)
        return md_fail(MD_ERR_ARG, "--batch %d is larger than the %s split (%d images)",
                       c->batch, c->train ? "training" : "search-train", r->ntrain);
    md_loader_config t = {.source = r->train_src, .batch = c->batch, .shuffle = 1,
                          .drop_last = 1, .seed = c->seed, .rank = r->rank, .world = r->world,
                          .threads = data_threads(c),
                          .mem = {ring_alloc, ring_free, &r->be}};
    MD_TRY(md_loader_create(&t, &r->train));
    md_loader_config v = t;
    v.source = r->val_src, v.shuffle = 0, v.drop_last = 0;
    return md_loader_create(&v, &r->val);
}

/* --device-data: an in-memory dataset held on the backend, each batch made there
 * by one op (src/train/devdata.c): auto, on a device backend that has the op;
 * on, wherever the op exists (the CPU backend too, which runs the same path);
 * off, the host loader. The validation (test) loader follows the training one,
 * so md_run_upload can tell from either. */
static md_status device_data(run_t *r, md_loader_config *t, md_loader_config *v) {
    const char *mode = r->cfg->device_data;
    int         can = md_backend_has_augment_u8(r->be);
    if (!strcmp(mode, "off") || (!strcmp(mode, "auto") && (!can || md_backend_is_host(r->be))))
        return MD_OK;
    if (!can)
        return md_fail(MD_ERR_ARG, "--device-data on: the %s backend has no batch op for "
                                   "in-memory datasets; use --device-data auto or off",
                       md_backend_name(r->be));
    int rows = (r->cfg->batch + r->world - 1) / r->world; /* the largest slice */
    MD_TRY(md_devset_create(&r->be, t->ds, &r->dev_ds));
    if (v->ds != t->ds) MD_TRY(md_devset_create(&r->be, v->ds, &r->dev_test));
    MD_TRY(md_devdata_create(r->dev_ds, t->n, rows, t->aug, &r->dev_train));
    MD_TRY(md_devdata_create(r->dev_test ? r->dev_test : r->dev_ds, v->n, rows, v->aug,
                             &r->dev_val));
    t->device = md_devdata_callbacks(r->dev_train);
    v->device = md_devdata_callbacks(r->dev_val);
    return MD_OK;
}

static md_status load_data(run_t *r) {
    const md_search_config *c = r->cfg;
    if (!strcmp(c->dataset, "imagenet")) return load_imagenet(r);
    if (!strcmp(c->dataset, "fashion-mnist"))
        MD_TRY(md_dataset_fashion_mnist(c->data_dir, 1, &r->ds));
    else if (!strcmp(c->dataset, "cifar10"))
        MD_TRY(md_dataset_cifar10(c->data_dir, 1, &r->ds));
    else
        MD_TRY(md_dataset_synthetic(c->subset ? c->subset : 4096, 3, 32, 32, 10, c->seed, &r->ds));
    int n = c->subset && c->subset < r->ds.n ? c->subset : r->ds.n;
    const md_dataset *vds = &r->ds;
    if (c->train) {
        /* A network is trained on the whole (subset of the) training set and
         * evaluated on the test split. */
        if (!strcmp(c->dataset, "fashion-mnist"))
            MD_TRY(md_dataset_fashion_mnist(c->data_dir, 0, &r->test_ds));
        else if (!strcmp(c->dataset, "cifar10"))
            MD_TRY(md_dataset_cifar10(c->data_dir, 0, &r->test_ds));
        else
            MD_TRY(md_dataset_synthetic(1024, 3, 32, 32, 10, c->seed + 0x7e57, &r->test_ds));
        int *none = NULL, nnone = 0;
        MD_TRY(md_dataset_split(n, 0.0, c->seed, &r->train_idx, &r->ntrain, &none, &nnone));
        r->nval = r->test_ds.n;
        if (!(r->val_idx = malloc((size_t)r->nval * sizeof *r->val_idx)))
            return md_fail(MD_ERR_NOMEM, "test split");
        for (int i = 0; i < r->nval; i++) r->val_idx[i] = i;
        vds = &r->test_ds;
    } else {
        MD_TRY(md_dataset_split(n, c->val_fraction, c->seed, &r->train_idx, &r->ntrain,
                                &r->val_idx, &r->nval));
    }
    if (r->ntrain < c->batch)
        return md_fail(MD_ERR_ARG, "--batch %d is larger than the %s split (%d images)",
                       c->batch, c->train ? "training" : "search-train", r->ntrain);
    md_loader_config t = {.ds = &r->ds, .idx = r->train_idx, .n = r->ntrain, .batch = c->batch,
                          .shuffle = 1, .drop_last = 1,
                          .aug = {.crop_pad = c->crop_pad, .flip = c->flip, .cutout = c->cutout},
                          .seed = c->seed, .rank = r->rank, .world = r->world,
                          .threads = data_threads(c),
                          .mem = {ring_alloc, ring_free, &r->be}};
    md_loader_config v = t;
    v.ds = vds, v.idx = r->val_idx, v.n = r->nval, v.shuffle = 0, v.drop_last = 0;
    v.aug = (md_augment){0, 0, 0};
    MD_TRY(device_data(r, &t, &v));
    MD_TRY(md_loader_create(&t, &r->train));
    return md_loader_create(&v, &r->val);
}

void md_run_fmt_eta(char *buf, size_t len, double s) {
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
}


/* ---- signals: stop at the next step, checkpoint, exit MD_EXIT_STOPPED ---------- */

/* Taken by stop.c's thread, polled here at step and validation-batch bounds. */
void md_search_catch_stop_signals(void) {
    if (md_stop_catch() != 0)
        fprintf(stderr, "mdenas: warning: no thread for stop signals; a handler takes them\n");
}

/* Test hooks, "<step>[:<rank>]" (rank 0 by default), read once:
 * MDENAS_RAISE_AT_STEP: that rank raises SIGUSR1 on itself just before global
 * step <step>, a deterministic signal; MDENAS_FAIL_AT_STEP: that rank fails
 * there, as a broken disk or device would (the job must end, not hang). */
static void parse_hook(const char *name, long *at, int *rank) {
    const char *e = getenv(name);
    *at = -1, *rank = 0;
    if (!e || !*e) return;
    char *end = NULL;
    *at = strtol(e, &end, 10);
    if (*end == ':') *rank = (int)strtol(end + 1, NULL, 10);
}

md_status md_run_test_hooks(const run_t *r, long step) {
    static long raise_at = -2, fail_at = -2;
    static int  raise_rank, fail_rank;
    if (raise_at == -2) {
        parse_hook("MDENAS_RAISE_AT_STEP", &raise_at, &raise_rank);
        parse_hook("MDENAS_FAIL_AT_STEP", &fail_at, &fail_rank);
    }
    if (step == raise_at && r->rank == raise_rank) md_stop_send_self(SIGUSR1);
    if (step == fail_at && r->rank == fail_rank)
        return md_fail(MD_ERR_IO, "MDENAS_FAIL_AT_STEP: rank %d fails at step %ld (test hook)",
                       r->rank, step);
    return MD_OK;
}

/* MDENAS_NAN_AT_STEP: that rank's batch of global step <step> gets a NaN in its
 * first value (a broken sample, or a network that diverged there). */
static md_status nan_hook(const run_t *r, long step, const float *x, int rows) {
    static long at = -2;
    static int  rank;
    if (at == -2) parse_hook("MDENAS_NAN_AT_STEP", &at, &rank);
    if (step != at || r->rank != rank || rows == 0) return MD_OK;
    float nan = NAN;
    return md_backend_upload(r->be, (void *)x, &nan, sizeof nan);
}

/* ---- batches on the backend ------------------------------------------------------------- */

/* ---- checkpoints ------------------------------------------------------------------ */

/* The size of a log, made durable first: a checkpoint records it, and a log
 * shorter than its checkpoint says after a crash is a log that lost lines. */
static long durable_size(FILE *f) {
    struct stat st;
    if (!f || fflush(f) || fsync(fileno(f)) || fstat(fileno(f), &st)) return -1;
    return (long)st.st_size;
}

static md_ckpt_state ckpt_state(run_t *r) {
    return (md_ckpt_state){.space = r->space, .model = r->model, .mdl = &r->mdl, .pos = &r->pos, .world = r->world,
                           .uniform_threads = r->uniform_threads};
}

md_status md_run_save_checkpoint(run_t *r, const char *why) {
    md_loader_tell(r->train, &r->pos.train_epoch, &r->pos.train_batch);
    md_loader_tell(r->val, &r->pos.val_epoch, &r->pos.val_batch);
    r->last_ckpt_step = r->pos.step;
    if (r->rank != 0) return MD_OK;
    MD_TRY(md_backend_sync(r->be)); /* the arenas are read on the host */
    char   path[1024];
    size_t bytes = 0;
    double t = md_run_now();
    r->pos.metrics_bytes = durable_size(r->metrics);
    r->pos.history_bytes = durable_size(r->history);
    if (r->pos.metrics_bytes < 0 || r->pos.history_bytes < 0)
        return md_fail(MD_ERR_IO, "cannot flush and fsync metrics.jsonl/history.jsonl in %s: %s",
                       r->cfg->out, strerror(errno));
    md_ckpt_state cs = ckpt_state(r);
    MD_TRY(md_ckpt_save(r->cfg, &cs, path, sizeof path, &bytes));
    t = md_run_now() - t;
    md_run_say(r, "checkpoint %s (%s): %.2f MB in %.3f s\n", path, why, bytes / 1e6, t);
    return MD_OK;
}

/* Where the batches are made, for the log. */
static const char *data_note(const run_t *r) {
    if (md_loader_on_device(r->train))
        return "data: held on the device, each batch made there by one op (--device-data)";
    return md_backend_is_host(r->be) ? "data: host loader"
                                     : "data: host loader, each batch copied to the device";
}

/* ---- one sampling period ---------------------------------------------------------- */

/* A step whose loss or gradient norm is not finite made no update (the stepper
 * skips it on the backend): put the BN statistics its forward changed and the
 * loader back, save that last good state as a checkpoint, and stop. Every rank
 * sees the same reduced values and comes here together; the barrier keeps the
 * others from aborting the job while rank 0 writes. */
md_status md_run_diverged(run_t *r, long step, float loss, double norm, float lr, long at_epoch,
                          int at_batch) {
    const md_search_config *c = r->cfg;
    const char *what = isfinite(loss) ? "gradient norm" : "loss";
    double      value = isfinite(loss) ? norm : (double)loss;
    MD_TRY(md_stepper_undo_stats(&r->step));
    MD_TRY(md_loader_seek(r->train, at_epoch, at_batch));
    md_run_say(r, "step %ld: the %s is %g: no update was made; saving the last good state "
                  "(after step %ld)\n", step + 1, what, value, step);
    MD_TRY(md_run_save_checkpoint(r, "last good state before a non-finite step"));
    MD_TRY(md_comm_barrier(r->comm));
    return md_fail(MD_ERR_DATA,
                   "step %ld: the %s is %g, not a finite number: the %s diverged (lr %g, --clip "
                   "%g). The weights, momentum and BN statistics of step %ld, the last good "
                   "one, are the newest checkpoint in %s/checkpoints; nothing of step %ld was "
                   "applied. Rerunning the same command repeats the step: lower --lr (in a new "
                   "--out) or check the data",
                   step + 1, what, value, c->train ? "training" : "search", (double)lr, c->clip,
                   step, c->out, step + 1);
}

md_status md_run_upload(run_t *r, const float **x, const int32_t **y, int rows) {
    if (md_loader_on_device(r->train)) return MD_OK; /* made on the backend (--device-data) */
    const md_source_info *in = md_loader_describe(r->train);
    return md_stepper_upload(&r->step, x, y, rows, (size_t)in->c * in->h * in->w);
}

/* Train the rest of a sampling period, from r->pos.step to its end. *stop = 1
 * when every rank has agreed to stop (the flag rides on the gradient allreduce). */
md_status md_run_train_steps(run_t *r, const int *a, const schedule *sc, int *stop) {
    const md_search_config *c = r->cfg;
    md_run_pos             *ps = &r->pos;
    double                  t_iv = md_run_now();
    long                    seen_here = 0; /* images since t_iv in this process */
    long                    end = sc->step + sc->period_len;
    /* Time spent waiting for batches (data_wait_s in every interval line): when
     * ImageNet's decode is the bottleneck the progress line says so too. */
    int    report_wait = !strcmp(c->dataset, "imagenet");
    double wait0 = md_loader_wait_s(r->train);
    *stop = 0;
    while (ps->step < end) {
        long step = ps->step;
        MD_TRY(md_run_test_hooks(r, step));
        long           epoch = step / sc->steps_per_epoch;
        float          lr = md_lr_cosine((float)c->lr, (float)c->lr_min, epoch, c->epochs);
        const float   *x;
        const int32_t *y;
        int            rows, grows, at_batch;
        long           at_epoch;
        md_loader_tell(r->train, &at_epoch, &at_batch); /* where this step's batch is */
        MD_TRY(md_loader_next(r->train, &x, &y, &rows, &grows));
        MD_TRY(md_run_upload(r, &x, &y, rows));
        MD_TRY(nan_hook(r, step, x, rows));
        md_plan *p;
        MD_TRY(md_stepper_plan(&r->step, a, rows, &p));
        if (md_plan_has_noise(p)) /* drop-path, dropout: masks of this step, this rank's rows */
            MD_TRY(md_plan_set_noise(p, sc->drop_path, c->seed ^ 0xd509a7c4ULL, (uint64_t)step,
                                     (long)r->rank * grows / r->world));
        md_step_result res;
        MD_TRY(md_stepper_train(&r->step, p, x, y, rows, grows, lr, md_stop_requested(), &res));
        float  gloss = res.loss;
        double norm = res.norm;
        if (!isfinite(gloss) || !isfinite(norm))
            return md_run_diverged(r, step, gloss, norm, lr, at_epoch, at_batch);
        long  gcorrect = res.correct;
        ps->step++;
        ps->period_loss += gloss, ps->iv_loss += gloss;
        ps->period_correct += gcorrect, ps->iv_correct += gcorrect;
        ps->period_seen += grows, ps->iv_seen += grows;
        ps->iv_steps++;
        seen_here += grows;
        if ((step + 1) % c->log_every == 0 || ps->step == end) {
            double t = md_run_now(), ips = seen_here / fmax(t - t_iv, 1e-9);
            double per_step = (t - r->t0) / (double)(ps->step - r->step0);
            char   eta[32];
            md_run_fmt_eta(eta, sizeof eta, per_step * (double)(sc->total_steps - ps->step));
            double mloss = ps->iv_loss / (double)ps->iv_steps;
            double macc = ps->iv_correct / fmax((double)ps->iv_seen, 1);
            double wait_now = md_loader_wait_s(r->train), wait = wait_now - wait0;
            char   wait_text[48] = "";
            if (report_wait)
                snprintf(wait_text, sizeof wait_text, " | data wait %.0f%%",
                         100.0 * wait / fmax(t - t_iv, 1e-9));
            if (c->train)
                md_run_say(r,
                           "epoch %ld/%ld | step %ld/%ld | loss %.4f | acc %5.1f%% | lr %.5f | "
                           "%.0f img/s%s | ETA %s\n",
                           epoch + 1, (long)c->epochs, step + 1, sc->total_steps, mloss,
                           100.0 * macc, lr, ips, wait_text, eta);
            else
                md_run_say(r,
                           "period %ld/%ld | epoch %ld | step %ld/%ld | loss %.4f | acc %5.1f%% | "
                           "lr %.5f | %.0f img/s%s | ETA %s\n",
                           sc->period + 1, sc->periods, epoch + 1, step + 1, sc->total_steps,
                           mloss, 100.0 * macc, lr, ips, wait_text, eta);
            if (r->rank == 0) {
                md_json j;
                md_json_init(&j);
                md_json_begin_object(&j);
                md_json_key(&j, "type"), md_json_string(&j, "interval");
                md_json_key(&j, "step"), md_json_int(&j, step + 1);
                md_json_key(&j, "epoch"), md_json_int(&j, epoch + 1);
                md_json_key(&j, "period"), md_json_int(&j, sc->period + 1);
                md_json_key(&j, "loss"), md_json_double(&j, mloss);
                md_json_key(&j, "acc"), md_json_double(&j, macc);
                md_json_key(&j, "lr"), md_json_double(&j, lr);
                md_json_key(&j, "img_per_s"), md_json_double(&j, ips);
                md_json_key(&j, "data_wait_s"), md_json_double(&j, wait);
                md_json_end_object(&j);
                md_status s = md_json_line(r->metrics, &j);
                md_json_free(&j);
                MD_TRY(s);
                MD_TRY(md_tb_scalar(r->tb, "train/loss", step + 1, (float)mloss));
                MD_TRY(md_tb_scalar(r->tb, "train/acc", step + 1, (float)macc));
                MD_TRY(md_tb_scalar(r->tb, "train/lr", step + 1, lr));
            }
            ps->iv_loss = 0, ps->iv_correct = 0, ps->iv_seen = 0, ps->iv_steps = 0;
            seen_here = 0, t_iv = md_run_now(), wait0 = wait_now;
        }
        if (res.stop) {
            *stop = 1;
            return MD_OK;
        }
        if (c->ckpt_every && ps->step % c->ckpt_every == 0 && ps->step < end)
            MD_TRY(md_run_save_checkpoint(r, "every --ckpt-every steps"));
    }
    return MD_OK;
}

/* Validation batches per period: --val-batches, at most one pass over the split. */
static int val_batches(const run_t *r) {
    int all = md_loader_batches(r->val), want = r->cfg->val_batches;
    return want && want < all ? want : all;
}

/* Test hook MDENAS_RAISE_IN_VAL=<period>[:<rank>]: that rank raises SIGTERM on
 * itself during the second validation batch of that period (0-based). */
static void val_hook(const run_t *r, long period, int batch) {
    static long at = -2;
    static int  rank;
    if (at == -2) parse_hook("MDENAS_RAISE_IN_VAL", &at, &rank);
    if (period == at && batch == 1 && r->rank == rank) md_stop_send_self(SIGTERM);
}

/* Top-1 accuracy of the sampled network on the held-out split, BN on batch
 * statistics, counts summed over ranks. A stop signal is taken at the next
 * batch, not at the end (a long validation would outlive the job's signal lead
 * time): then *stopped = 1, no accuracy, and the validation loader is back
 * where this validation began, so a resumed run validates the period again. */
static md_status validate(run_t *r, const int *a, long period, double *acc, int *stopped) {
    int    batches = val_batches(r);
    double counts[3] = {0, 0, 0}; /* correct, seen, stop */
    long   epoch0;
    int    batch0;
    /* With synced BN every batch is a collective, so ranks agree on the stop
     * at each batch; otherwise each leaves on its own and they agree below. */
    int agree_each = r->cfg->sync_bn && r->world > 1;
    if (!r->cfg->val_batches) MD_TRY(md_loader_seek(r->val, 0, 0));
    md_loader_tell(r->val, &epoch0, &batch0);
    *stopped = 0;
    for (int b = 0; b < batches; b++) {
        val_hook(r, period, b);
        int stop = md_stop_requested();
        if (agree_each) MD_TRY(md_comm_max_int(r->comm, &stop));
        if (stop) {
            counts[2] = 1;
            break;
        }
        const float   *x;
        const int32_t *y;
        int            rows, grows;
        MD_TRY(md_loader_next(r->val, &x, &y, &rows, &grows));
        md_plan *p;
        if (rows == 0) {
            /* This rank's slice of a short last batch is empty: with synced BN it
             * still takes part in the statistics the others compute. */
            if (agree_each && grows > 0) {
                MD_TRY(md_stepper_plan(&r->step, a,
                                       r->step.plans[0] ? md_plan_rows(r->step.plans[0]) : 1, &p));
                MD_TRY(md_plan_forward_absent(p, MD_MODE_EVAL_BATCH_STATS));
            }
            continue;
        }
        MD_TRY(md_run_upload(r, &x, &y, rows));
        MD_TRY(md_stepper_plan(&r->step, a, rows, &p));
        float loss;
        int   ok = 0;
        MD_TRY(md_plan_forward(p, x, MD_MODE_EVAL_BATCH_STATS));
        MD_TRY(md_plan_loss(p, y, &loss, &ok));
        counts[0] += ok, counts[1] += rows;
    }
    MD_TRY(md_comm_sum_f64(r->comm, counts, 3));
    *acc = counts[0] / fmax(counts[1], 1);
    if (counts[2] > 0) {
        *stopped = 1;
        return md_loader_seek(r->val, epoch0, batch0);
    }
    return MD_OK;
}

/* Rank 0 applies the multinomial update and broadcasts p, H^e, H^a. */
static md_status update_distribution(run_t *r, const int *choice, double val_acc) {
    md_mdl *m = &r->mdl;
    if (r->rank == 0) {
        MD_TRY(md_mdl_record(m, choice, val_acc));
        MD_TRY(md_mdl_update(m));
    }
    if (r->world == 1) return MD_OK;
    size_t  n = (size_t)m->edges * m->k;
    double *buf = malloc((3 * n + 1) * sizeof *buf);
    if (!buf) return md_fail(MD_ERR_NOMEM, "broadcast of the distribution");
    memcpy(buf, m->p, n * sizeof *buf);
    memcpy(buf + n, m->he, n * sizeof *buf);
    memcpy(buf + 2 * n, m->ha, n * sizeof *buf);
    buf[3 * n] = m->periods;
    md_status s = md_comm_bcast(r->comm, buf, (3 * n + 1) * sizeof *buf, 0);
    if (s == MD_OK && r->rank != 0)
        s = md_mdl_restore(m, (int)buf[3 * n], buf, buf + n, buf + 2 * n, NULL, NULL, NULL);
    free(buf);
    return s;
}

static md_status record_period(run_t *r, const int *a, const schedule *sc, double val_acc,
                               double secs, double allreduce_bytes) {
    MD_TRY(update_distribution(r, a, val_acc));
    if (r->rank != 0) return MD_OK;
    const md_space_info *in = md_space_describe(r->space);
    double train_acc = r->pos.period_correct / fmax((double)r->pos.period_seen, 1);
    double train_loss = r->pos.period_loss / fmax(sc->period_len, 1);
    char   genotype[4096];
    MD_TRY(md_runfiles_state(r->cfg->out, r->space, &r->mdl, genotype, sizeof genotype));
    MD_TRY(md_runfiles_heatmap(r->cfg->out, r->space, &r->mdl));
    double h[8] = {0};
    int    ng = in->ngroups < 8 ? in->ngroups : 8;
    for (int g = 0; g < ng; g++) h[g] = md_group_entropy(&r->mdl, &in->groups[g]);
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "type"), md_json_string(&j, "period");
    md_json_key(&j, "period"), md_json_int(&j, sc->period + 1);
    md_json_key(&j, "epoch"), md_json_int(&j, (sc->step + sc->period_len - 1) / sc->steps_per_epoch + 1);
    md_json_key(&j, "step"), md_json_int(&j, sc->step + sc->period_len);
    md_json_key(&j, "train_loss"), md_json_double(&j, train_loss);
    md_json_key(&j, "train_acc"), md_json_double(&j, train_acc);
    md_json_key(&j, "val_acc"), md_json_double(&j, val_acc);
    md_json_key(&j, "period_time_s"), md_json_double(&j, secs);
    for (int g = 0; g < ng; g++) {
        char key[64];
        snprintf(key, sizeof key, "entropy_%s", in->groups[g].key);
        md_json_key(&j, key), md_json_double(&j, h[g]);
    }
    md_json_key(&j, "world_size"), md_json_int(&j, r->world);
    md_json_key(&j, "allreduce_bytes_per_step"), md_json_double(&j, allreduce_bytes);
    md_json_key(&j, "supernet_grad_bytes"),
        md_json_int(&j, (long long)(r->model->params.numel * sizeof(float)));
    md_json_key(&j, "arch"), md_arch_json(&j, r->space, a);
    md_json_end_object(&j);
    md_status s = md_json_line(r->metrics, &j);
    md_json_free(&j);
    MD_TRY(s);
    MD_TRY(md_history_line(r->history, r->space, sc->period, val_acc, a, &r->mdl, r->mdl.p,
                           r->mdl.he, r->mdl.ha));
    long step = sc->step + sc->period_len;
    MD_TRY(md_tb_scalar(r->tb, "val/acc", step, (float)val_acc));
    MD_TRY(md_tb_scalar(r->tb, "period/train_acc", step, (float)train_acc));
    char ent[160] = "";
    for (int g = 0; g < ng; g++) {
        char tag[64];
        snprintf(tag, sizeof tag, "entropy/%s", in->groups[g].key);
        MD_TRY(md_tb_scalar(r->tb, tag, step, (float)h[g]));
        size_t used = strlen(ent);
        snprintf(ent + used, sizeof ent - used, "%s%.3f", g ? "/" : "", h[g]);
    }
    MD_TRY(md_tb_flush(r->tb));
    md_run_say(r, "period %ld/%ld done | train acc %.1f%% | val acc %.1f%% | %.1f s | entropy %s | %s\n",
        sc->period + 1, sc->periods, 100 * train_acc, 100 * val_acc, secs, ent, genotype);
    return MD_OK;
}

/* ---- the run directory: fresh, resumed, or restarted ------------------------------- */

enum { RUN_FRESH = 1, RUN_RESUME, RUN_RESTART, RUN_FINISHED };

/* A checkpoint of another space (a --space-file whose contents changed, other
 * candidates) is this run's options error, not a corrupt file: it is refused
 * before anything is read, and nothing is renamed. Checkpoints written before
 * the space was recorded hold DARTS, whose settings are all options. */
static md_status check_space(run_t *r, const md_st_file *f) {
    const char *saved = md_st_meta_get(f, "space");
    if (!saved) return MD_OK;
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_space_config_json(r->space, &j);
    md_json_end_object(&j);
    md_status s = j.failed ? md_fail(MD_ERR_NOMEM, "space settings") : MD_OK;
    if (s != MD_OK || !strcmp(saved, j.buf)) {
        md_json_free(&j);
        return s;
    }
    char      keys[256] = "";
    md_jvalue a, b;
    if (md_json_parse(saved, f->path, &a) == MD_OK) {
        if (md_json_parse(j.buf, "this run's space", &b) == MD_OK) {
            for (int i = 0; i < b.count && b.type == MD_JOBJ; i++)
                if (!md_json_equal(md_json_get(&a, b.keys[i]), &b.items[i])) {
                    size_t used = strlen(keys);
                    snprintf(keys + used, sizeof keys - used, "%s%s", used ? ", " : "", b.keys[i]);
                }
            md_json_value_free(&b);
        }
        md_json_value_free(&a);
    }
    md_json_free(&j);
    return md_fail(MD_ERR_ARG,
                   "%s was written for another search space than this run's (it differs in: %s): "
                   "the space file's contents, --candidates or --width-mult changed. Rerun with "
                   "the run's space, or choose another --out; nothing was changed",
                   f->path, keys[0] ? keys : "its settings");
}

static md_status accept_checkpoint(void *ctx, const md_st_file *f) {
    MD_TRY(check_space(ctx, f));
    md_ckpt_state cs = ckpt_state(ctx);
    md_status     s = md_ckpt_load(&cs, f);
    return s == MD_ERR_ARG ? MD_ERR_DATA : s; /* a bad value in the file */
}

static long count_lines(const char *path) {
    FILE *f = fopen(path, "rb");
    long  n = 0;
    int   ch;
    if (!f) return 0;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

/* A directory that holds a run's results (history, state, genotype) but no
 * checkpoint lost its checkpoints (a scratch purge, a quota clean-up):
 * starting it again would overwrite those results, so it is refused. A run
 * makes checkpoints/ when it starts; a run killed between recording its first
 * period and committing that period's checkpoint has it, empty, and one
 * history line: that one starts again. */
static md_status refuse_lost_checkpoints(const char *out) {
    static const char *const results[] = {"history.jsonl", "state.json", "genotype.json"};
    char                     held[128] = "", p[700];
    for (size_t i = 0; i < sizeof results / sizeof *results; i++) {
        struct stat st;
        md_path_in(p, sizeof p, out, results[i]);
        if (stat(p, &st) == 0 && st.st_size > 0) {
            size_t used = strlen(held);
            snprintf(held + used, sizeof held - used, "%s%s", used ? ", " : "", results[i]);
        }
    }
    if (!held[0]) return MD_OK;
    md_path_in(p, sizeof p, out, "history.jsonl");
    long periods = count_lines(p);
    if (md_file_exists(out, "checkpoints") && periods <= 1) return MD_OK;
    return md_fail(MD_ERR_ARG,
                   "%s holds the results of a run (%s; %ld period(s) recorded) but no checkpoint "
                   "(was %s/checkpoints removed?): starting it again would overwrite them, so "
                   "nothing was changed. Restore its checkpoints to resume it, or move the "
                   "directory aside (or choose another --out) to start again",
                   out, held, periods, out);
}

/* Rank 0, once the network exists: what to do with --out (which it locks);
 * a checkpoint to resume from is loaded into r. */
static md_status decide_run_dir(run_t *r, char *ck_path, size_t ck_len, int *verdict) {
    const md_search_config *c = r->cfg;
    /* A directory this run may not use is refused before anything is written
     * into it (the lock included): another's files, or another run's options. */
    char path[700], *text = NULL;
    md_path_in(path, sizeof path, c->out, "config.json");
    if (md_file_exists(c->out, "config.json")) {
        MD_TRY(md_read_file(path, &text));
        md_status cs = md_ckpt_check_config(c, text, path);
        free(text);
        MD_TRY(cs);
        /* genotype.txt is written last, by a finished run only: nothing to do,
         * and nothing is touched (the directory may be read-only, archived). */
        if (md_file_exists(c->out, md_run_finished_mark(c))) {
            *verdict = RUN_FINISHED;
            return MD_OK;
        }
    }
    MD_TRY(md_rundir_check_out(c->out));
    if (!md_file_exists(c->out, "config.json")) MD_TRY(md_rundir_check_empty(c->out));
    md_status s = make_dirs(c->out);
    if (s != MD_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", md_error_message());
        return md_fail(MD_ERR_ARG, "--out: %s", why);
    }
    MD_TRY(md_rundir_lock(c->out, &r->lock_fd));
    /* Under the lock, look again: another run may have come and gone. */
    if (md_rundir_check_empty(c->out) == MD_OK) {
        *verdict = RUN_FRESH;
        return MD_OK;
    }
    int found = 0;
    MD_TRY(md_ckpt_find(c, accept_checkpoint, r, ck_path, ck_len, &found));
    if (found) {
        *verdict = RUN_RESUME;
        return MD_OK;
    }
    if (!md_file_exists(c->out, "config.json")) return md_rundir_check_empty(c->out); /* refusal */
    MD_TRY(refuse_lost_checkpoints(c->out));
    /* A run of ours that stopped before its first checkpoint: start it again. */
    MD_TRY(md_read_file(path, &text));
    s = md_ckpt_check_config(c, text, path);
    free(text);
    MD_TRY(s);
    *verdict = RUN_RESTART;
    return MD_OK;
}

static md_status open_outputs(run_t *r, int verdict, const char *resumed_from) {
    const md_search_config *c = r->cfg;
    if (r->rank != 0) return MD_OK;
    char p[700];
    if (verdict == RUN_FRESH) {
        MD_TRY(md_rundir_check_empty(c->out)); /* again: it may have changed while data loaded */
        MD_TRY(make_dirs(c->out));
    } else {
        /* Lines written after the checkpoint are dropped: the run redoes those steps. */
        long keep[2] = {verdict == RUN_RESUME ? r->pos.metrics_bytes : 0,
                        verdict == RUN_RESUME ? r->pos.history_bytes : 0};
        static const char *const names[2] = {"metrics.jsonl", "history.jsonl"};
        for (int i = 0; i < 2; i++) {
            md_path_in(p, sizeof p, c->out, names[i]);
            MD_TRY(md_runfiles_trim_log(p, i == 1, keep[i], r->space, &r->mdl));
        }
    }
    md_json j;
    md_json_init(&j);
    md_search_config_json(&j, c, r->world, 1);
    md_path_in(p, sizeof p, c->out, "config.json");
    md_status s = md_json_write_file(&j, p);
    md_json_free(&j);
    MD_TRY(s);
    md_path_in(p, sizeof p, c->out, "checkpoints"); /* from the start: see refuse_lost_checkpoints */
    MD_TRY(make_dirs(p));
    if (!(r->log = open_in(c->out, c->train ? "train.log" : "search.log", "a"))) return MD_ERR_IO;
    if (!(r->metrics = open_in(c->out, "metrics.jsonl", "a"))) return MD_ERR_IO;
    if (!(r->history = open_in(c->out, "history.jsonl", "a"))) return MD_ERR_IO;
    md_path_in(p, sizeof p, c->out, "tb");
    MD_TRY(make_dirs(p));
    MD_TRY(md_tb_open(p, &r->tb));
    if (verdict == RUN_RESUME)
        md_run_say(r, "resuming from %s: %s %ld, step %ld (written by %d rank(s)%s)\n",
            resumed_from, c->train ? "epoch" : "period", r->pos.period + 1, r->pos.step, r->pos.saved_world,
            r->pos.saved_world == r->world ? ""
            : r->cfg->sync_bn ? "; the batch is global and BN is synced, so the run goes on as it "
                                "would have"
                              : "; the batch is global, but BN statistics are per rank, so "
                                "the run now differs from one on the original ranks");
    else if (verdict == RUN_RESTART)
        md_run_say(r, "%s holds this run but no checkpoint yet: starting it again from step 0\n", c->out);
    return MD_OK;
}

static void close_run(run_t *r) {
    md_stepper_free(&r->step);
    md_loader_destroy(r->train);
    md_loader_destroy(r->val);
    md_devdata_destroy(r->dev_train);
    md_devdata_destroy(r->dev_val);
    md_devset_destroy(r->dev_ds);
    md_devset_destroy(r->dev_test);
    md_source_destroy(r->train_src);
    md_source_destroy(r->val_src);
    free(r->train_idx);
    free(r->val_idx);
    md_dataset_free(&r->ds);
    free(r->choice);
    md_model_destroy(r->model);
    md_space_destroy(r->space);
    md_mdl_free(&r->mdl);
    md_backend_destroy(r->be);
    if (r->log) fclose(r->log);
    if (r->metrics) fclose(r->metrics);
    if (r->history) fclose(r->history);
    md_tb_close(r->tb);
    md_rundir_unlock(r->lock_fd); /* last: every file of the run is closed */
    r->lock_fd = -1;
}

/* Rank 0's checkpoint (already loaded into it) to every rank. */
static md_status share_checkpoint(run_t *r) {
    if (r->world == 1) return MD_OK;
    md_arena *ar[3] = {&r->model->params, &r->model->momentum, &r->model->stats};
    for (int i = 0; i < 3; i++)
        MD_TRY(md_comm_bcast(r->comm, ar[i]->data, ar[i]->numel * sizeof(float), 0));
    MD_TRY(md_comm_bcast(r->comm, &r->pos, sizeof r->pos, 0));
    md_mdl *m = &r->mdl;
    size_t  n = (size_t)m->edges * m->k;
    double *st[3] = {m->p, m->he, m->ha};
    for (int i = 0; i < 3; i++) MD_TRY(md_comm_bcast(r->comm, st[i], n * sizeof(double), 0));
    if (r->rank != 0)
        MD_TRY(md_mdl_restore(m, r->pos.periods_done, m->p, m->he, m->ha, NULL, NULL, NULL));
    return MD_OK;
}

/* OpenMP threads per rank: --threads, else OMP_NUM_THREADS, else the CPUs this
 * rank may run on shared among the ranks of its node. */
static int threads_per_rank(const run_t *r) {
    if (r->cfg->threads > 0 || getenv("OMP_NUM_THREADS")) return r->cfg->threads;
    int local = md_comm_local_size(r->comm);
    if (local <= 1) return 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int  t = (int)(cpus / local);
    return t < 1 ? 1 : t;
}

/* A resumed run computes with the thread count of the run that saved it (the
 * reductions in oneDNN's kernels depend on it, and a requeue may land on a
 * node with another core count), unless --threads or OMP_NUM_THREADS says
 * otherwise. */
static md_status keep_saved_threads(run_t *r) {
    int saved = r->pos.saved_threads;
    if (saved <= 0 || r->threads <= 0 || saved == r->threads) return MD_OK;
    if (r->cfg->threads > 0 || getenv("OMP_NUM_THREADS")) {
        md_run_say(r, "note: resuming with %d thread(s) per rank (--threads or OMP_NUM_THREADS) where "
               "the run had %d: the last bits of the result may differ from an uninterrupted "
               "run\n", r->threads, saved);
        return MD_OK;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    md_run_say(r, "note: resuming with the run's %d thread(s) per rank (this node's default is %d; "
           "--threads N overrides)%s\n", saved, r->threads,
        cpus > 0 && (long)saved * md_comm_local_size(r->comm) > cpus
            ? "; that is more threads than this node has CPUs, which is slow" : "");
    md_stepper_free(&r->step);
    md_backend_destroy(r->be); /* CPU: the network and batches are host memory */
    r->be = r->step.be = NULL;
    MD_TRY(md_backend_cpu_create(saved, &r->be));
    r->threads = r->uniform_threads = md_backend_cpu_threads(r->be);
    r->step.be = r->be;
    return md_stepper_init(&r->step);
}

/* --device: cpu, cuda (GPU = local rank mod the GPUs), or auto (cuda when this
 * build has it and a GPU answers, else cpu). */
static md_status make_backend(run_t *r) {
    const md_search_config *c = r->cfg;
    if (!strcmp(c->device, "cuda"))
        return md_backend_cuda_create(md_comm_local_rank(r->comm), c->tf32, !c->deterministic,
                                      &r->be);
    if (!strcmp(c->device, "auto")) {
        /* Every rank on the same kind of backend, or none on CUDA. */
        int failed = md_backend_cuda_create(md_comm_local_rank(r->comm), c->tf32,
                                            !c->deterministic, &r->be) != MD_OK;
        MD_TRY(md_comm_max_int(r->comm, &failed));
        if (!failed) return MD_OK;
        md_backend_destroy(r->be);
        r->be = NULL;
    }
    return md_backend_cpu_create(threads_per_rank(r), &r->be);
}

/* The margins of the final architecture, on the terminal and in search.log. */
static void report_margins(run_t *r) {
    char  *text = NULL;
    size_t len = 0;
    FILE  *f = open_memstream(&text, &len);
    if (!f) return; /* only a report */
    md_margins_report(f, r->space, r->mdl.p, r->mdl.he);
    if (fclose(f) == 0 && text) { /* longer than say's line */
        printf("\n%s", text);
        fflush(stdout);
        if (r->log) fprintf(r->log, "\n%s", text), fflush(r->log);
    }
    free(text);
}

/* The space of the options, for the input the data gives. */
static md_status make_space(const md_search_config *c, const md_source_info *in,
                            md_space **out) {
    if (!strcmp(c->space, "mobile")) {
        md_mobile_config mc;
        MD_TRY(md_search_mobile_config(c, &mc));
        mc.in_c = in->c, mc.in_h = in->h, mc.in_w = in->w, mc.classes = in->classes;
        return md_space_mobile_create(&mc, out);
    }
    md_darts_config dc = {.in_c = in->c, .in_h = in->h, .in_w = in->w, .classes = in->classes,
                          .cells = c->cells, .channels = c->channels, .nodes = c->nodes};
    return md_space_darts_create(&dc, out);
}

static const char *space_text(const md_search_config *c) {
    static char t[700];
    if (!strcmp(c->space, "mobile"))
        snprintf(t, sizeof t, "mobile space (width x%g%s%s)", c->width_mult,
                 c->space_file[0] ? ", " : "", c->space_file);
    else
        snprintf(t, sizeof t, "%d cells, C=%d", c->cells, c->channels);
    return t;
}

static md_status search(run_t *r, int *stopped) {
    const md_search_config *c = r->cfg;
    MD_TRY(md_search_config_check(c));
    if (c->batch < r->world)
        return md_fail(MD_ERR_ARG, "--batch %d is the global batch and must be at least the "
                                   "number of ranks (%d)", c->batch, r->world);
    md_status s = make_backend(r);
    if (s == MD_OK) r->threads = md_backend_cpu_threads(r->be);

    if (s == MD_OK && (s = load_data(r)) != MD_OK && s != MD_ERR_NOMEM)
        s = MD_ERR_ARG; /* a missing or malformed dataset is bad input: exit 2 */
    const md_source_info *in = s == MD_OK ? md_loader_describe(r->train) : NULL;
    if (s == MD_OK) s = c->train ? md_train_make_space(c, in, &r->space) : make_space(c, in, &r->space);
    if (s == MD_OK) {
        s = md_space_model_create(r->space, c->seed, md_backend_is_host(r->be) ? NULL : r->be,
                                  &r->model);
        if (s == MD_ERR_NOMEM) {
            char why[512];
            snprintf(why, sizeof why, "%s", md_error_message());
            if (!strcmp(c->space, "mobile"))
                md_fail(s, "the mobile search network (--width-mult %g%s%s) does not fit in "
                           "memory (%s); choose a smaller --width-mult or --image-size",
                        c->width_mult, c->space_file[0] ? ", --space-file " : "", c->space_file,
                        why);
            else
                md_fail(s, "the search network of --cells %d --channels %d --nodes %d does not "
                           "fit in memory (%s); choose fewer --cells or --channels",
                        c->cells, c->channels, c->nodes, why);
        }
    }
    if (s == MD_OK) {
        const md_space_info *si = md_space_describe(r->space);
        s = md_mdl_init(&r->mdl, si->dists, si->k, c->alpha, c->rule);
        if (s == MD_OK) s = md_mdl_set_mask(&r->mdl, si->allowed);
        if (s == MD_OK && !(r->choice = calloc((size_t)si->dists, sizeof *r->choice)))
            s = md_fail(MD_ERR_NOMEM, "architecture");
    }
    if (s == MD_OK) {
        r->step = (md_stepper){.be = r->be, .comm = r->comm, .world = r->world,
                               .space = r->space, .model = r->model,
                               .momentum = (float)c->momentum,
                               .weight_decay = (float)c->weight_decay, .clip = (float)c->clip,
                               .smoothing = (float)c->label_smoothing, .nesterov = c->nesterov,
                               .bn_no_decay = !c->bn_decay, .sync_bn = c->sync_bn,
                               .graphs = c->cuda_graphs};
        s = md_stepper_init(&r->step);
    }
    /* Every rank learns whether any failed to set up, and all leave together
     * (a rank that left alone would leave the others waiting in a collective). */
    if (s == MD_OK) {
        long at;
        int  rank;
        parse_hook("MDENAS_FAIL_SETUP", &at, &rank); /* "<rank>": that rank's input is bad */
        if (at >= 0 && r->rank == (int)at)
            s = md_fail(MD_ERR_ARG, "MDENAS_FAIL_SETUP: rank %d refuses its input (test hook)",
                        r->rank);
    }
    if (s == MD_ERR_ARG && r->rank != 0) /* rank 0 prints its own; this one is only here */
        fprintf(stderr, "mdenas_mpi %s (rank %d of %d): %s\n", c->train ? "train" : "search",
                r->rank, r->world, md_error_message());
    int failed = s != MD_OK ? (int)s : 0;
    md_status as = md_comm_max_int(r->comm, &failed);
    if (as != MD_OK) return as;
    if (s == MD_OK && failed)
        s = md_fail((md_status)failed, "another rank failed while setting up (its message "
                                       "says why)");
    MD_TRY(s);
    /* The gradients' path, now that every rank is here to agree on it. */
    char         comm_note[200] = "";
    md_comm_want want = MD_COMM_WANT_AUTO;
    s = md_comm_want_parse(c->comm, &want);
    if (s == MD_OK) s = md_comm_select(r->comm, r->be, want, comm_note, sizeof comm_note);
    if (s == MD_ERR_ARG && r->rank != 0)
        fprintf(stderr, "mdenas_mpi %s (rank %d of %d): %s\n", c->train ? "train" : "search",
                r->rank, r->world, md_error_message());
    MD_TRY(s);
    /* A checkpoint records the thread count only when every rank has the same
     * one (ranks on unlike nodes may not): a resume then keeps it. */
    int tmax = r->threads, tneg = -r->threads;
    MD_TRY(md_comm_max_int(r->comm, &tmax));
    MD_TRY(md_comm_max_int(r->comm, &tneg));
    r->uniform_threads = tmax == -tneg ? r->threads : 0;
    /* A stop signal while the data loaded: leave before anything is written. */
    int early = md_stop_requested();
    MD_TRY(md_comm_max_int(r->comm, &early));
    if (early) {
        md_run_say(r, "stopped by a signal before the run began: nothing was written (exit status %d)\n",
            MD_EXIT_STOPPED);
        *stopped = 1;
        return MD_OK;
    }
    /* Rank 0 decides what to do with the run directory (loading a checkpoint to
     * resume); every rank follows. Nothing has been written yet. */
    int       verdict = 0;
    md_status vs = MD_OK;
    char      ck_path[1024] = "";
    if (r->rank == 0) {
        vs = decide_run_dir(r, ck_path, sizeof ck_path, &verdict);
        if (vs != MD_OK) verdict = -(int)vs;
    }
    s = md_comm_bcast(r->comm, &verdict, sizeof verdict, 0);
    if (s == MD_OK && verdict < 0)
        s = r->rank == 0 ? vs
                         : md_fail((md_status)-verdict, "rank 0 refused the run directory %s",
                                   c->out);
    MD_TRY(s);
    r->past_verdict = 1;
    if (verdict == RUN_FINISHED && c->train) {
        if (r->rank == 0)
            printf("the training run in %s has finished (it holds result.json); nothing to do\n",
                   c->out);
        return MD_OK;
    }
    if (verdict == RUN_FINISHED) {
        char  gp[700], *g = NULL;
        md_path_in(gp, sizeof gp, c->out, "genotype.txt");
        if (r->rank == 0 && md_read_file(gp, &g) == MD_OK)
            printf("the run in %s has finished (it holds genotype.txt); nothing to do\n"
                   "genotype: %s", c->out, g);
        free(g);
        return MD_OK;
    }
    if (verdict == RUN_RESUME) {
        MD_TRY(share_checkpoint(r));
        MD_TRY(keep_saved_threads(r));
        MD_TRY(md_loader_seek(r->train, r->pos.train_epoch, r->pos.train_batch));
        MD_TRY(md_loader_seek(r->val, r->pos.val_epoch, r->pos.val_batch));
    }
    if (c->train) {
        MD_TRY(open_outputs(r, verdict, ck_path));
        md_run_say(r, "%s\n%s\n", comm_note, data_note(r));
        return md_train_loop(r, stopped);
    }
    schedule sc = {0};
    sc.steps_per_epoch = md_loader_batches(r->train);
    sc.total_steps = sc.steps_per_epoch * c->epochs;
    long plen = c->period_steps ? c->period_steps : sc.steps_per_epoch;
    sc.periods = (sc.total_steps + plen - 1) / plen;
    if (verdict == RUN_RESUME && r->pos.period >= sc.periods) {
        /* Nothing left to do: say so and leave the run directory as it is. */
        char g[4096];
        MD_TRY(md_space_summary(r->space, r->mdl.p, g, sizeof g));
        /* A stop after the last period's checkpoint may have come before the
         * genotype files were written. */
        if (r->rank == 0 && !md_file_exists(c->out, "genotype.txt"))
            MD_TRY(md_runfiles_genotype(c->out, r->space, &r->mdl, g, sizeof g));
        if (r->rank == 0)
            printf("the run in %s has finished (%ld periods, checkpoint %s); nothing to do\n"
                   "genotype: %s\n", c->out, sc.periods, ck_path, g);
        return MD_OK;
    }
    MD_TRY(open_outputs(r, verdict, ck_path)); /* only now: bad input has written nothing */
    md_run_say(r, "mdenas search: %s, %d search-train / %d validation images (%s), %s, "
           "batch %d over %d rank(s)%s, %ld periods of %ld steps, %s\n",
        c->dataset, r->ntrain, r->nval, md_loader_describe(r->train)->name, space_text(c),
        c->batch, r->world,
        c->sync_bn ? " with synced BN" : "", sc.periods, plen, md_backend_describe(r->be));
    md_run_say(r, "%s\n%s\n", comm_note, data_note(r));
    md_rng root;
    md_rng_seed(&root, c->seed, 0x5a3b1e);
    r->t0 = md_run_now();
    r->step0 = r->pos.step;
    char genotype[4096] = "";
    int *choice = r->choice;
    s = MD_OK;
    for (sc.period = r->pos.period; sc.period < sc.periods && s == MD_OK; sc.period++) {
        sc.step = sc.period * plen;
        sc.period_len = (int)(sc.step + plen <= sc.total_steps ? plen : sc.total_steps - sc.step);
        if (r->pos.step < sc.step || r->pos.step > sc.step + sc.period_len) {
            s = md_fail(MD_ERR_DATA, "checkpoint position: step %ld is outside period %ld",
                        r->pos.step, sc.period + 1);
            break;
        }
        md_rng rng = md_rng_split(&root, (uint64_t)sc.period);
        md_mdl_sample(&r->mdl, &rng, choice);
        double t = md_run_now(), vacc;
        size_t b0 = md_comm_grad_bytes(r->comm);
        long   s0 = r->pos.step;
        int    stop = 0;
        s = md_run_train_steps(r, choice, &sc, &stop);
        double ar_bytes = (double)(md_comm_grad_bytes(r->comm) - b0) / fmax(r->pos.step - s0, 1);
        if (s == MD_OK && stop) {
            s = md_run_save_checkpoint(r, "stop signal");
            /* No rank exits before rank 0's checkpoint is on disk: launchers may
             * kill the others once the first one exits. */
            if (s == MD_OK) s = md_comm_barrier(r->comm);
            *stopped = 1;
            break;
        }
        if (s == MD_OK) s = validate(r, choice, sc.period, &vacc, &stop);
        if (s == MD_OK && stop) {
            /* Trained, not validated: the checkpoint is at the period's last
             * step, and the resumed run validates this period again. */
            s = md_run_save_checkpoint(r, "stop signal during validation");
            if (s == MD_OK) s = md_comm_barrier(r->comm);
            *stopped = 1;
            break;
        }
        if (s == MD_OK) s = record_period(r, choice, &sc, vacc, md_run_now() - t, ar_bytes);
        if (s == MD_OK) {
            r->pos.period = sc.period + 1;
            r->pos.period_correct = 0, r->pos.period_seen = 0, r->pos.period_loss = 0;
            s = md_run_save_checkpoint(r, "period end");
        }
        md_stepper_free_plans(&r->step);
        /* A signal that came after the last validation batch: stop here. */
        int late = md_stop_requested();
        if (s == MD_OK) s = md_comm_max_int(r->comm, &late);
        if (s == MD_OK && late && sc.period + 1 < sc.periods) {
            s = md_comm_barrier(r->comm);
            *stopped = 1;
            break;
        }
    }
    MD_TRY(s);
    if (*stopped) {
        md_run_say(r, "\nstopped by a signal at step %ld: checkpoint written in %s/checkpoints; run the "
               "same command again to resume (exit status %d)\n", r->pos.step, c->out,
            MD_EXIT_STOPPED);
        return MD_OK;
    }
    if (r->rank == 0) {
        /* state.json already holds the final p: it was written after the last period. */
        MD_TRY(md_runfiles_genotype(c->out, r->space, &r->mdl, genotype, sizeof genotype));
        report_margins(r);
        md_run_say(r, "\nsearch finished in %.1f s\ngenotype: %s\nrun directory %s: config.json, "
               "search.log, metrics.jsonl, history.jsonl, state.json, genotype.json, "
               "genotype.txt, p_heatmap.svg, tb/, checkpoints/\n",
            md_run_now() - r->t0, genotype, c->out);
    }
    return MD_OK;
}

md_status md_search_run(const md_search_config *c, md_comm *comm, int *stopped) {
    md_search_config resolved = *c;
    *stopped = 0;
    MD_TRY(md_search_config_resolve(&resolved));
    run_t r;
    memset(&r, 0, sizeof r);
    r.cfg = &resolved, r.comm = comm, r.lock_fd = -1;
    r.rank = md_comm_rank(comm), r.world = md_comm_size(comm);
    /* From the start (or from the program's start, when it caught them before
     * MPI_Init): a signal while data loads stops the run before it writes. */
    /* From the start (or from the program's start, when main caught them before
     * MPI_Init): a signal while data loads stops the run before it writes. */
    md_search_catch_stop_signals();
    md_status s = search(&r, stopped);
    /* Stopped: a further stop signal must not turn exit 75 (what job scripts
     * requeue on) into death by that signal. Otherwise they act as before. */
    if (*stopped)
        md_stop_ignore_further();
    else
        md_stop_release();
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", md_error_message());
    close_run(&r);
    if (s != MD_OK) md_error_restore(saved);
    /* After rank 0's verdict every error is this rank's alone: the others may be
     * waiting in a collective, so it must end the job (exit 1, MPI_Abort), not
     * exit 2 quietly. */
    if (s == MD_ERR_ARG && r.past_verdict && r.world > 1) s = MD_ERR_IO;
    return s;
}

