/* `mdenas_mpi train` and `mdenas_mpi eval`: a fixed network (a DARTS genotype's
 * evaluation network, or a mobile net) trained from scratch on the whole
 * training set with the search's machinery (data parallel ranks, checkpoints,
 * signals, logs), evaluated on the test split every epoch, and exported with
 * the reference PyTorch code's names. */
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mdenas/plot.h"
#include "mdenas/rank.h"
#include "mdenas/safetensors.h"
#include "mdenas/supernet.h"
#include "train/search_impl.h"
#include "train/stop.h"

const char *md_run_finished_mark(const md_search_config *c) {
    return c->train ? "result.json" : "genotype.txt";
}

/* ---- --genotype ------------------------------------------------------------------ */

typedef enum { NET_DARTS, NET_MOBILE } net_kind;

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* What --genotype names: *text receives a Genotype(...) string or a name
 * (NET_DARTS), or a net config's JSON (NET_MOBILE); *what the file it came from. */
static md_status resolve_genotype(const char *arg, net_kind *kind, char **text, char *what,
                                  size_t what_len) {
    char path[1100];
    *text = NULL;
    snprintf(what, what_len, "--genotype");
    if (is_dir(arg)) {
        snprintf(path, sizeof path, "%s/net.config", arg);
        if (!is_file(path)) snprintf(path, sizeof path, "%s/genotype.json", arg);
        if (!is_file(path))
            return md_fail(MD_ERR_ARG, "--genotype %s: the directory holds neither net.config (a "
                                       "mobile search's) nor genotype.json (a DARTS search's): "
                                       "has its search finished?", arg);
        arg = path;
    }
    if (is_file(arg)) {
        snprintf(what, what_len, "%.*s", (int)(what_len > 1 ? what_len - 1 : 0), arg);
        char     *t = NULL;
        md_status s = md_read_file(arg, &t);
        if (s != MD_OK) return md_fail(MD_ERR_ARG, "--genotype: %s", md_error_message());
        const char *p = t;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p != '{') { /* a genotype.txt: the string itself */
            *kind = NET_DARTS, *text = t;
            return MD_OK;
        }
        md_jvalue v;
        s = md_json_parse(t, arg, &v);
        if (s != MD_OK) {
            free(t);
            return md_fail(MD_ERR_ARG, "--genotype: %s", md_error_message());
        }
        const md_jvalue *g = md_json_get(&v, "genotype");
        if (md_json_get(&v, "first_conv") && md_json_get(&v, "blocks")) {
            *kind = NET_MOBILE, *text = t; /* the net config's text, parsed again by its reader */
        } else if (g && g->type == MD_JSTR) {
            *kind = NET_DARTS;
            *text = strdup(g->str);
            free(t);
        } else {
            free(t);
            md_json_value_free(&v);
            return md_fail(MD_ERR_ARG, "--genotype %s: neither a DARTS genotype.json (a "
                                       "\"genotype\" string) nor a ProxylessNAS net config "
                                       "(first_conv, blocks); a mobile search's net.config is "
                                       "beside its genotype.json", arg);
        }
        md_json_value_free(&v);
        return *text ? MD_OK : md_fail(MD_ERR_NOMEM, "--genotype");
    }
    if (strchr(arg, '/') && !strstr(arg, "Genotype"))
        return md_fail(MD_ERR_ARG, "--genotype %s: no such file or directory", arg);
    *kind = NET_DARTS;
    *text = strdup(arg);
    return *text ? MD_OK : md_fail(MD_ERR_NOMEM, "--genotype");
}

static md_status darts_net_config(const md_search_config *c, const md_source_info *in,
                                  const char *text, const char *what, md_darts_net_config *d) {
    memset(d, 0, sizeof *d);
    MD_TRY(md_darts_genotype_parse(text, what, d));
    d->net.in_c = in->c, d->net.in_h = in->h, d->net.in_w = in->w, d->net.classes = in->classes;
    d->net.cells = c->cells, d->net.channels = c->channels;
    d->auxiliary = c->aux_weight > 0;
    d->aux_weight = (float)c->aux_weight;
    d->dropout = (float)c->dropout;
    return MD_OK;
}

static md_status mobile_net_config(const md_search_config *c, const md_source_info *in,
                                   const char *text, const char *what, md_mobile_config *m) {
    if (in->h != in->w)
        return md_fail(MD_ERR_ARG, "a mobile net takes square images, the data are %dx%d", in->h,
                       in->w);
    md_jvalue v;
    MD_TRY(md_json_parse(text, what, &v));
    int       choice[MD_MOBILE_MAX_BLOCKS], n = 0;
    md_status s = md_mobile_from_net_config(&v, what, in->h, m, choice, &n);
    md_json_value_free(&v);
    MD_TRY(s);
    m->in_c = in->c, m->in_h = in->h, m->in_w = in->w, m->classes = in->classes;
    m->dropout = c->dropout;
    m->nfixed = n;
    memcpy(m->fixed, choice, (size_t)n * sizeof *choice);
    return MD_OK;
}

md_status md_train_make_space(const md_search_config *c, const md_source_info *in,
                              md_space **out) {
    net_kind  kind = NET_DARTS;
    char     *text = NULL, what[1200];
    md_status s = resolve_genotype(c->genotype, &kind, &text, what, sizeof what);
    if (s == MD_OK && kind == NET_DARTS) {
        if (strcmp(c->space, "darts"))
            s = md_fail(MD_ERR_ARG, "--genotype %s is a DARTS cell: drop --space %s", c->genotype,
                        c->space);
        md_darts_net_config d;
        if (s == MD_OK) s = darts_net_config(c, in, text, what, &d);
        if (s == MD_OK) s = md_space_darts_net_create(&d, out);
    } else if (s == MD_OK) {
        if (c->aux_weight > 0 || c->drop_path > 0)
            s = md_fail(MD_ERR_ARG, "--aux-weight and --drop-path are DARTS parts; a mobile net "
                                    "(%s) has neither: set them to 0 (--preset "
                                    "imagenet-mobile-final does)", what);
        md_mobile_config m;
        if (s == MD_OK) s = mobile_net_config(c, in, text, what, &m);
        if (s == MD_OK) s = md_space_mobile_create(&m, out);
    }
    free(text);
    return s;
}

/* ---- evaluation on the test split ---------------------------------------------------- */

typedef struct {
    double loss, top1, top5, seen;
} eval_counts;

/* Rows of logits z [rows, k] against labels: summed loss, top-1 (the first
 * maximum, as md_top1_correct), top-5 (the label among the 5 largest; ties
 * ranked by index). */
static void score(const float *z, const int32_t *y, int rows, int k, eval_counts *e) {
    for (int n = 0; n < rows; n++) {
        const float *r = z + (size_t)n * k;
        int          label = y[n], rank = 0;
        float        zmax = r[0];
        for (int j = 1; j < k; j++) zmax = r[j] > zmax ? r[j] : zmax;
        double se = 0;
        for (int j = 0; j < k; j++) {
            se += exp((double)r[j] - zmax);
            rank += r[j] > r[label] || (r[j] == r[label] && j < label);
        }
        e->loss += zmax + log(se) - r[label];
        e->top1 += rank == 0;
        e->top5 += rank < 5;
        e->seen += 1;
    }
}

/* Test hook MDENAS_RAISE_IN_EVAL=<epoch>[:<rank>]: that rank raises SIGTERM on
 * itself during the second test batch of that epoch (0-based). */
static void eval_hook(const md_run *r, int batch) {
    const char *e = getenv("MDENAS_RAISE_IN_EVAL");
    if (!e || !*e || batch != 1) return;
    char *end = NULL;
    long  at = strtol(e, &end, 10);
    int   rank = *end == ':' ? (int)strtol(end + 1, NULL, 10) : 0;
    if (at == r->pos.period && r->rank == rank) md_stop_send_self(SIGTERM);
}

/* The network on the test split, BN on running statistics; counts summed over
 * ranks. A stop signal is taken at the next batch: *stopped = 1, no result. */
static md_status evaluate(md_run *r, eval_counts *out, int *stopped) {
    int batches = md_loader_batches(r->val), want = r->cfg->val_batches;
    if (want && want < batches) batches = want;
    int     k = md_loader_describe(r->val)->classes;
    double  c[5] = {0, 0, 0, 0, 0};
    float  *z = NULL;
    size_t  cap = 0;
    *stopped = 0;
    MD_TRY(md_loader_seek(r->val, 0, 0));
    md_status s = MD_OK;
    for (int b = 0; b < batches && s == MD_OK; b++) {
        eval_hook(r, b);
        if (md_stop_requested()) {
            c[4] = 1;
            break;
        }
        const float   *x;
        const int32_t *y, *yh;
        int            rows, grows;
        md_plan       *p;
        if ((s = md_loader_next(r->val, &x, &y, &rows, &grows)) != MD_OK) break;
        if (rows == 0) continue;
        yh = md_loader_labels_host(r->val); /* y may be on the device */
        if ((s = md_run_upload(r, &x, &y, rows)) != MD_OK) break;
        if ((s = md_stepper_plan(&r->step, r->choice, rows, &p)) != MD_OK) break;
        if ((s = md_plan_forward(p, x, MD_MODE_EVAL)) != MD_OK) break;
        size_t n = (size_t)rows * k;
        if (n > cap) {
            float *nz = realloc(z, n * sizeof *z);
            if (!nz) {
                s = md_fail(MD_ERR_NOMEM, "evaluation logits");
                break;
            }
            z = nz, cap = n;
        }
        if ((s = md_plan_logits(p, z, n)) != MD_OK) break;
        eval_counts e = {0, 0, 0, 0};
        score(z, yh, rows, k, &e);
        c[0] += e.loss, c[1] += e.top1, c[2] += e.top5, c[3] += e.seen;
    }
    free(z);
    MD_TRY(s);
    MD_TRY(md_comm_sum_f64(r->comm, c, 5));
    if (c[4] > 0) {
        *stopped = 1;
        return MD_OK;
    }
    double seen = fmax(c[3], 1);
    *out = (eval_counts){c[0] / seen, c[1] / seen, c[2] / seen, c[3]};
    return MD_OK;
}

/* ---- an epoch's record --------------------------------------------------------------- */

static md_status record_epoch(md_run *r, const schedule *sc, const eval_counts *e, double secs) {
    if (r->rank != 0) return MD_OK;
    const md_search_config *c = r->cfg;
    double train_acc = r->pos.period_correct / fmax((double)r->pos.period_seen, 1);
    double train_loss = r->pos.period_loss / fmax(sc->period_len, 1);
    float  lr = md_lr_cosine((float)c->lr, (float)c->lr_min, sc->period, c->epochs);
    long   step = sc->step + sc->period_len;
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "type"), md_json_string(&j, "epoch");
    md_json_key(&j, "epoch"), md_json_int(&j, sc->period + 1);
    md_json_key(&j, "step"), md_json_int(&j, step);
    md_json_key(&j, "train_loss"), md_json_double(&j, train_loss);
    md_json_key(&j, "train_acc"), md_json_double(&j, train_acc);
    md_json_key(&j, "test_loss"), md_json_double(&j, e->loss);
    md_json_key(&j, "test_top1"), md_json_double(&j, e->top1);
    md_json_key(&j, "test_top5"), md_json_double(&j, e->top5);
    md_json_key(&j, "test_images"), md_json_int(&j, (long long)e->seen);
    md_json_key(&j, "lr"), md_json_double(&j, lr);
    md_json_key(&j, "drop_path"), md_json_double(&j, sc->drop_path);
    md_json_key(&j, "epoch_time_s"), md_json_double(&j, secs);
    md_json_key(&j, "world_size"), md_json_int(&j, r->world);
    md_json_end_object(&j);
    md_status s = md_json_line(r->metrics, &j);
    md_json_free(&j);
    MD_TRY(s);
    MD_TRY(md_tb_scalar(r->tb, "test/top1", step, (float)e->top1));
    MD_TRY(md_tb_scalar(r->tb, "test/top5", step, (float)e->top5));
    MD_TRY(md_tb_scalar(r->tb, "test/loss", step, (float)e->loss));
    MD_TRY(md_tb_scalar(r->tb, "epoch/train_acc", step, (float)train_acc));
    MD_TRY(md_tb_scalar(r->tb, "epoch/train_loss", step, (float)train_loss));
    MD_TRY(md_tb_flush(r->tb));
    md_run_say(r, "epoch %ld/%d done | train loss %.4f acc %.1f%% | test loss %.4f top-1 %.2f%% "
                  "top-5 %.2f%% | %.1f s\n",
               sc->period + 1, c->epochs, train_loss, 100 * train_acc, e->loss, 100 * e->top1,
               100 * e->top5, secs);
    return MD_OK;
}

/* ---- the run's results ------------------------------------------------------------------ */

static md_status net_counts(const md_run *r, double *params, double *params_inference,
                            double *madds) {
    double all_madds;
    MD_TRY(md_space_count(r->space, r->choice, params, &all_madds));
    return md_space_count_inference(r->space, r->choice, params_inference, madds);
}

/* What `eval` needs to rebuild the network: net.json. */
static void net_json(md_json *j, const md_run *r) {
    const md_search_config *c = r->cfg;
    const md_source_info   *in = md_loader_describe(r->train);
    const md_space_info    *si = md_space_describe(r->space);
    md_json_begin_object(j);
    md_json_key(j, "format"), md_json_string(j, "mdenas-net-1");
    md_json_key(j, "dataset"), md_json_string(j, c->dataset);
    md_json_key(j, "data_dir"), md_json_string(j, c->data_dir);
    md_json_key(j, "image_size"), md_json_int(j, c->image_size);
    md_json_key(j, "input");
    md_json_begin_array(j);
    md_json_int(j, in->c), md_json_int(j, in->h), md_json_int(j, in->w);
    md_json_end_array(j);
    md_json_key(j, "classes"), md_json_int(j, in->classes);
    md_json_key(j, "seed"), md_json_int(j, (long long)c->seed);
    md_json_key(j, "choice");
    md_json_begin_array(j);
    for (int d = 0; d < si->dists; d++) md_json_int(j, r->choice[d]);
    md_json_end_array(j);
    md_json_key(j, "net");
    md_json_begin_object(j);
    md_space_config_json(r->space, j);
    md_json_end_object(j);
    md_json_key(j, "weights"), md_json_string(j, "weights.safetensors");
    md_json_end_object(j);
}

static md_status write_results(md_run *r, const eval_counts *e) {
    const md_search_config *c = r->cfg;
    char                    p[700], summary[4096];
    MD_TRY(md_backend_sync(r->be));
    md_path_in(p, sizeof p, c->out, "weights.safetensors");
    MD_TRY(md_space_export_weights(r->space, r->model, r->choice, p));
    md_json j;
    md_json_init(&j);
    net_json(&j, r);
    md_path_in(p, sizeof p, c->out, "net.json");
    md_status s = md_json_write_file(&j, p);
    md_json_free(&j);
    MD_TRY(s);
    double params, params_inf, madds;
    MD_TRY(net_counts(r, &params, &params_inf, &madds));
    MD_TRY(md_space_summary(r->space, r->mdl.p, summary, sizeof summary));
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "test_top1"), md_json_double(&j, e->top1);
    md_json_key(&j, "test_top5"), md_json_double(&j, e->top5);
    md_json_key(&j, "test_loss"), md_json_double(&j, e->loss);
    md_json_key(&j, "test_images"), md_json_int(&j, (long long)e->seen);
    md_json_key(&j, "epochs"), md_json_int(&j, c->epochs);
    md_json_key(&j, "params"), md_json_int(&j, (long long)params_inf);
    md_json_key(&j, "params_training"), md_json_int(&j, (long long)params);
    md_json_key(&j, "madds"), md_json_int(&j, (long long)madds);
    md_json_key(&j, "network"), md_json_string(&j, summary);
    md_json_key(&j, "train_time_s"), md_json_double(&j, md_run_now() - r->t0);
    md_json_end_object(&j);
    md_path_in(p, sizeof p, c->out, "result.json"); /* last: the mark of a finished run */
    s = md_json_write_file(&j, p);
    md_json_free(&j);
    return s;
}

/* ---- the epochs ----------------------------------------------------------------------------- */

md_status md_train_loop(md_run *r, int *stopped) {
    const md_search_config *c = r->cfg;
    md_space_argmax(r->space, r->mdl.p, r->choice); /* the network's only ops */
    schedule sc = {0};
    sc.steps_per_epoch = md_loader_batches(r->train);
    sc.total_steps = sc.steps_per_epoch * c->epochs;
    sc.periods = c->epochs;
    double params, params_inf, madds;
    char   summary[4096];
    MD_TRY(net_counts(r, &params, &params_inf, &madds));
    MD_TRY(md_space_summary(r->space, r->mdl.p, summary, sizeof summary));
    md_run_say(r, "mdenas train: %s, %d training / %d test images, %s network (%.3f M parameters, "
                  "%.1f M multiply-adds per image; %.3f M while training), batch %d over %d "
                  "rank(s), %d epochs, %s\nnetwork: %s\n",
               c->dataset, r->ntrain, r->nval, md_space_describe(r->space)->name, params_inf / 1e6,
               madds / 1e6, params / 1e6, c->batch, r->world, c->epochs,
               md_backend_describe(r->be), summary);
    r->t0 = md_run_now();
    r->step0 = r->pos.step;
    eval_counts last = {0, 0, 0, 0};
    md_status   s = MD_OK;
    for (long e = r->pos.period; e < c->epochs && s == MD_OK; e++) {
        sc.period = e;
        sc.step = e * sc.steps_per_epoch;
        sc.period_len = (int)sc.steps_per_epoch;
        sc.drop_path = (float)(c->drop_path * (double)e / c->epochs); /* DARTS's linear ramp */
        if (r->pos.step < sc.step || r->pos.step > sc.step + sc.period_len)
            return md_fail(MD_ERR_DATA, "checkpoint position: step %ld is outside epoch %ld",
                           r->pos.step, e + 1);
        double t = md_run_now();
        int    stop = 0;
        s = md_run_train_steps(r, r->choice, &sc, &stop);
        if (s == MD_OK && !stop) s = evaluate(r, &last, &stop);
        if (s == MD_OK && stop) {
            /* Stopped in the epoch, or trained and not evaluated: the resumed run
             * goes on from the checkpoint's step (and evaluates this epoch). */
            s = md_run_save_checkpoint(r, "stop signal");
            if (s == MD_OK) s = md_comm_barrier(r->comm);
            *stopped = 1;
            break;
        }
        if (s == MD_OK) s = record_epoch(r, &sc, &last, md_run_now() - t);
        if (s == MD_OK) {
            r->pos.period = e + 1;
            r->pos.period_correct = 0, r->pos.period_seen = 0, r->pos.period_loss = 0;
            s = md_run_save_checkpoint(r, "epoch end");
        }
        int late = md_stop_requested();
        if (s == MD_OK) s = md_comm_max_int(r->comm, &late);
        if (s == MD_OK && late && e + 1 < c->epochs) {
            s = md_comm_barrier(r->comm);
            *stopped = 1;
            break;
        }
    }
    MD_TRY(s);
    if (*stopped) {
        md_run_say(r, "\nstopped by a signal at step %ld: checkpoint written in %s/checkpoints; "
                      "run the same command again to resume (exit status %d)\n",
                   r->pos.step, c->out, MD_EXIT_STOPPED);
        return MD_OK;
    }
    if (r->pos.period >= c->epochs && last.seen == 0) {
        /* Resumed after the last epoch's checkpoint: evaluate the final weights. */
        int stop = 0;
        MD_TRY(evaluate(r, &last, &stop));
        if (stop) {
            *stopped = 1;
            return MD_OK;
        }
    }
    if (r->rank == 0) {
        MD_TRY(write_results(r, &last));
        md_run_say(r, "\ntraining finished in %.1f s: test top-1 %.2f%%, top-5 %.2f%% (%d "
                      "images)\nrun directory %s: config.json, train.log, metrics.jsonl, tb/, "
                      "checkpoints/, weights.safetensors (%s names), net.json, result.json\n",
                   md_run_now() - r->t0, 100 * last.top1, 100 * last.top5, (int)last.seen, c->out,
                   strcmp(md_space_describe(r->space)->name, "mobile") ? "DARTS NetworkCIFAR"
                                                                        : "ProxylessNAS");
    }
    return MD_OK;
}

/* ---- mdenas_mpi eval --------------------------------------------------------------------- */

static int jint(const md_jvalue *o, const char *key, int lo, int hi, int *out) {
    const md_jvalue *v = md_json_get(o, key);
    if (!v || v->type != MD_JNUM || v->num != floor(v->num) || v->num < lo || v->num > hi)
        return -1;
    *out = (int)v->num;
    return 0;
}

static const char *jstr(const md_jvalue *o, const char *key) {
    const md_jvalue *v = md_json_get(o, key);
    return v && v->type == MD_JSTR ? v->str : NULL;
}

/* The network net.json describes. */
static md_status eval_space(const md_jvalue *o, const char *what, md_space **out) {
    const md_jvalue *net = md_json_get(o, "net"), *in = md_json_get(o, "input");
    int              classes, dims[3];
    if (!net || net->type != MD_JOBJ || !in || in->type != MD_JARR || in->count != 3 ||
        jint(o, "classes", 2, 1 << 20, &classes))
        return md_fail(MD_ERR_DATA, "%s: not a net.json of mdenas_mpi train (net, input, classes)",
                       what);
    for (int i = 0; i < 3; i++) {
        const md_jvalue *d = &in->items[i];
        if (d->type != MD_JNUM || d->num != floor(d->num) || d->num < 1 || d->num > 8192)
            return md_fail(MD_ERR_DATA, "%s: 'input' must be three integers", what);
        dims[i] = (int)d->num;
    }
    const char *space = jstr(net, "space");
    if (space && !strcmp(space, "mobile")) {
        md_mobile_config mc;
        md_mobile_config_default(&mc);
        MD_TRY(md_mobile_config_parse(net, what, 0, &mc));
        mc.in_c = dims[0], mc.in_h = dims[1], mc.in_w = dims[2], mc.classes = classes;
        md_status s = md_space_mobile_create(&mc, out);
        return s == MD_ERR_ARG ? md_fail(MD_ERR_DATA, "%s: %s", what, md_error_message()) : s;
    }
    const char *g = jstr(net, "genotype");
    if (!space || strcmp(space, "darts_net") || !g)
        return md_fail(MD_ERR_DATA, "%s: 'net' must be a darts_net (with its genotype) or a "
                                    "mobile network", what);
    md_darts_net_config d;
    memset(&d, 0, sizeof d);
    md_status s = md_darts_genotype_parse(g, what, &d);
    const md_jvalue *aux = md_json_get(net, "auxiliary"), *aw = md_json_get(net, "aux_weight"),
                    *dr = md_json_get(net, "dropout");
    if (s == MD_OK && (jint(net, "cells", 1, 256, &d.net.cells) ||
                       jint(net, "channels", 2, 1 << 16, &d.net.channels) || !aux ||
                       aux->type != MD_JBOOL || !aw || aw->type != MD_JNUM || !dr ||
                       dr->type != MD_JNUM))
        s = md_fail(MD_ERR_DATA, "%s: the network needs cells, channels, auxiliary, aux_weight "
                                 "and dropout", what);
    if (s != MD_OK) return s == MD_ERR_ARG ? md_fail(MD_ERR_DATA, "%s", md_error_message()) : s;
    d.net.in_c = dims[0], d.net.in_h = dims[1], d.net.in_w = dims[2], d.net.classes = classes;
    d.auxiliary = aux->num != 0, d.aux_weight = (float)aw->num, d.dropout = (float)dr->num;
    s = md_space_darts_net_create(&d, out);
    return s == MD_ERR_ARG ? md_fail(MD_ERR_DATA, "%s: %s", what, md_error_message()) : s;
}

typedef struct {
    md_dataset ds;
    md_source *src;
    int       *idx;
    md_loader *loader;
} eval_data;

static md_status eval_data_open(const md_jvalue *o, const char *what, eval_data *e) {
    const char *dataset = jstr(o, "dataset"), *dir = jstr(o, "data_dir");
    int         seed = 1, size = 224;
    if (!dataset || !dir)
        return md_fail(MD_ERR_DATA, "%s: 'dataset' and 'data_dir' are missing", what);
    jint(o, "seed", 0, 1 << 30, &seed);
    jint(o, "image_size", 8, 1024, &size);
    md_loader_config lc = {.batch = 250, .seed = 1, .world = 1};
    if (!strcmp(dataset, "imagenet")) {
        md_imagenet_config ic = {.image_size = size, .train = 0};
        MD_TRY(md_source_imagenet(dir, "val", &ic, &e->src));
        lc.source = e->src;
    } else {
        if (!strcmp(dataset, "fashion-mnist")) MD_TRY(md_dataset_fashion_mnist(dir, 0, &e->ds));
        else if (!strcmp(dataset, "cifar10")) MD_TRY(md_dataset_cifar10(dir, 0, &e->ds));
        else if (!strcmp(dataset, "synthetic"))
            MD_TRY(md_dataset_synthetic(1024, 3, 32, 32, 10, (uint64_t)seed + 0x7e57, &e->ds));
        else
            return md_fail(MD_ERR_DATA, "%s: unknown dataset '%s'", what, dataset);
        if (!(e->idx = malloc((size_t)e->ds.n * sizeof *e->idx)))
            return md_fail(MD_ERR_NOMEM, "test split");
        for (int i = 0; i < e->ds.n; i++) e->idx[i] = i;
        lc.ds = &e->ds, lc.idx = e->idx, lc.n = e->ds.n;
    }
    return md_loader_create(&lc, &e->loader);
}

static void eval_data_close(eval_data *e) {
    md_loader_destroy(e->loader);
    md_source_destroy(e->src);
    md_dataset_free(&e->ds);
    free(e->idx);
}

md_status md_train_eval(const char *dir, FILE *out) {
    char path[1100], wpath[1100];
    snprintf(path, sizeof path, "%s/net.json", dir);
    snprintf(wpath, sizeof wpath, "%s/weights.safetensors", dir);
    if (!is_file(path))
        return md_fail(MD_ERR_ARG, "%s: no net.json: not the directory of a finished `mdenas_mpi "
                                   "train` run", dir);
    md_jvalue o;
    MD_TRY(md_read_json(path, &o));
    md_status   s;
    md_space   *space = NULL;
    md_model   *model = NULL;
    md_backend *be = NULL;
    md_plan    *plan = NULL;
    eval_data   data;
    memset(&data, 0, sizeof data);
    int  *choice = NULL;
    float *z = NULL;
    s = eval_space(&o, path, &space);
    const md_jvalue *ch = md_json_get(&o, "choice");
    if (s == MD_OK) {
        const md_space_info *si = md_space_describe(space);
        if (!ch || ch->type != MD_JARR || ch->count != si->dists)
            s = md_fail(MD_ERR_DATA, "%s: 'choice' must list an op per distribution (%d)", path,
                        si->dists);
        else if (!(choice = calloc((size_t)si->dists, sizeof *choice)))
            s = md_fail(MD_ERR_NOMEM, "architecture");
        for (int d = 0; s == MD_OK && d < si->dists; d++) choice[d] = (int)ch->items[d].num;
    }
    if (s == MD_OK) s = md_space_model_create(space, 1, NULL, &model);
    if (s == MD_OK) s = md_space_import_weights(space, model, choice, wpath);
    if (s == MD_OK) s = eval_data_open(&o, path, &data);
    if (s == MD_OK) s = md_backend_cpu_create(0, &be);
    eval_counts e = {0, 0, 0, 0};
    const md_source_info *in = s == MD_OK ? md_loader_describe(data.loader) : NULL;
    if (s == MD_OK && !(z = malloc((size_t)250 * in->classes * sizeof *z)))
        s = md_fail(MD_ERR_NOMEM, "logits");
    for (int b = 0; s == MD_OK && b < md_loader_batches(data.loader); b++) {
        const float   *x;
        const int32_t *y;
        int            rows, grows;
        if ((s = md_loader_next(data.loader, &x, &y, &rows, &grows)) != MD_OK) break;
        if (!plan || md_plan_rows(plan) != rows) {
            md_plan_destroy(plan);
            plan = NULL;
            if ((s = md_space_plan(space, model, be, choice, rows, &plan)) != MD_OK) break;
        }
        if ((s = md_plan_forward(plan, x, MD_MODE_EVAL)) != MD_OK) break;
        if ((s = md_plan_logits(plan, z, (size_t)rows * in->classes)) != MD_OK) break;
        score(z, y, rows, in->classes, &e);
    }
    double params = 0, madds = 0;
    if (s == MD_OK) s = md_space_count_inference(space, choice, &params, &madds);
    if (s == MD_OK) {
        double n = fmax(e.seen, 1);
        fprintf(out, "%s: test top-1 %.2f%%, top-5 %.2f%%, loss %.4f on %d images (%s); %.3f M "
                     "parameters, %.1f M multiply-adds per image\n",
                dir, 100 * e.top1 / n, 100 * e.top5 / n, e.loss / n, (int)e.seen, in->name,
                params / 1e6, madds / 1e6);
        fprintf(out, "{\"test_top1\": %.6f, \"test_top5\": %.6f, \"test_loss\": %.6f, "
                     "\"test_images\": %d, \"params\": %.0f, \"madds\": %.0f}\n",
                e.top1 / n, e.top5 / n, e.loss / n, (int)e.seen, params, madds);
    }
    free(z);
    md_plan_destroy(plan);
    eval_data_close(&data);
    md_backend_destroy(be);
    md_model_destroy(model);
    md_space_destroy(space);
    free(choice);
    md_json_value_free(&o);
    return s;
}

/* ---- mdenas_mpi rankcheck ------------------------------------------------------------- */

/* The test top-1 of each epoch of a finished train run, from its metrics.jsonl. */
static md_status epoch_accuracies(const char *dir, int epochs, double *acc) {
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return md_fail(MD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    for (int e = 0; e < epochs; e++) acc[e] = NAN;
    char     *line = NULL;
    size_t    cap = 0;
    md_status s = MD_OK;
    while (s == MD_OK && getline(&line, &cap, f) > 0) {
        md_jvalue v;
        if (md_json_parse(line, path, &v) != MD_OK) continue; /* not ours to judge */
        const char *type = jstr(&v, "type");
        int         ep = 0;
        const md_jvalue *a = md_json_get(&v, "test_top1");
        if (type && !strcmp(type, "epoch") && !jint(&v, "epoch", 1, epochs, &ep) && a &&
            a->type == MD_JNUM)
            acc[ep - 1] = a->num;
        md_json_value_free(&v);
    }
    free(line);
    fclose(f);
    for (int e = 0; e < epochs; e++)
        if (!isfinite(acc[e]))
            return md_fail(MD_ERR_DATA, "%s has no test accuracy for epoch %d", path, e + 1);
    return MD_OK;
}

static md_status rankcheck_report(const md_search_config *c, char (*genotypes)[1024],
                                  const double *acc) {
    int     k = c->archs, e = c->epochs;
    double *tau = malloc((size_t)e * sizeof *tau), *ep = malloc((size_t)e * sizeof *ep);
    if (!tau || !ep) {
        free(tau), free(ep);
        return md_fail(MD_ERR_NOMEM, "rankcheck");
    }
    md_status s = md_rank_tau_by_epoch(acc, k, e, tau);
    md_json   j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "archs"), md_json_int(&j, k);
    md_json_key(&j, "epochs"), md_json_int(&j, e);
    md_json_key(&j, "kendall_tau_b_vs_last");
    md_json_begin_array(&j);
    for (int i = 0; i < e; i++) {
        if (isfinite(tau[i])) md_json_double(&j, tau[i]);
        else md_json_null(&j);
    }
    md_json_end_array(&j);
    md_json_key(&j, "architectures");
    md_json_begin_array(&j);
    for (int a = 0; a < k; a++) {
        md_json_begin_object(&j);
        md_json_key(&j, "genotype"), md_json_string(&j, genotypes[a]);
        md_json_key(&j, "test_top1");
        md_json_begin_array(&j);
        for (int i = 0; i < e; i++) md_json_double(&j, acc[(size_t)a * e + i]);
        md_json_end_array(&j);
        md_json_end_object(&j);
    }
    md_json_end_array(&j);
    md_json_end_object(&j);
    char path[700];
    if (s == MD_OK) {
        md_path_in(path, sizeof path, c->out, "rankcheck.json");
        s = md_json_write_file(&j, path);
    }
    md_json_free(&j);
    for (int i = 0; i < e; i++) ep[i] = i + 1;
    char title[160];
    snprintf(title, sizeof title, "Kendall tau-b of each epoch's ranking with the last (%d "
                                  "architectures, %s)", k, c->dataset);
    if (s == MD_OK) {
        md_path_in(path, sizeof path, c->out, "rankcheck.svg");
        s = md_svg_line_plot(path, title, "epoch", "Kendall tau-b", ep, tau, e, -1.0, 1.0);
    }
    if (s == MD_OK) {
        printf("\nrankcheck: %d architectures, %d epochs; Kendall tau-b of each epoch's test "
               "top-1 ranking with the last epoch's:\n", k, e);
        for (int i = 0; i < e; i++) printf("  epoch %3d: %6.3f\n", i + 1, tau[i]);
        printf("written: %s/rankcheck.json, %s/rankcheck.svg\n", c->out, c->out);
    }
    free(tau), free(ep);
    return s;
}

md_status md_rankcheck_run(const md_search_config *c, md_comm *comm, int *stopped) {
    md_search_config base = *c;
    *stopped = 0;
    MD_TRY(md_search_config_resolve(&base));
    int rank = md_comm_rank(comm), k = base.archs, e = base.epochs;
    char (*genotypes)[1024] = calloc((size_t)k, sizeof *genotypes);
    double *acc = calloc((size_t)k * e, sizeof *acc);
    md_status s = genotypes && acc ? MD_OK : md_fail(MD_ERR_NOMEM, "rankcheck");
    if (s == MD_OK && rank == 0 && mkdir(base.out, 0777) && errno != EEXIST)
        s = md_fail(MD_ERR_ARG, "--out %s: cannot create it: %s", base.out, strerror(errno));
    for (int a = 0; s == MD_OK && a < k; a++) {
        md_search_config    t = base;
        md_darts_net_config d;
        memset(&d, 0, sizeof d);
        md_darts_genotype_random(base.seed * 1000003ULL + (uint64_t)a, base.nodes, &d);
        s = md_darts_genotype_format(&d, genotypes[a], sizeof genotypes[a]);
        t.archs = 0;
        snprintf(t.genotype, sizeof t.genotype, "%s", genotypes[a]);
        snprintf(t.out, sizeof t.out, "%.490s/arch-%03d", base.out, a % 1000);
        if (rank == 0) printf("\nrankcheck: architecture %d of %d in %s\n", a + 1, k, t.out);
        if (s == MD_OK) s = md_search_run(&t, comm, stopped);
        if (s == MD_OK && *stopped) break;
        if (s == MD_OK && rank == 0) s = epoch_accuracies(t.out, e, acc + (size_t)a * e);
    }
    if (s == MD_OK && !*stopped && rank == 0) s = rankcheck_report(&base, genotypes, acc);
    free(genotypes), free(acc);
    return s;
}
