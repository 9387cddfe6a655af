/* Checkpoint-restart of a search: safetensors files in <out>/checkpoints/. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mdenas/backend.h"
#include "mdenas/version.h"
#include "train/search_impl.h"

#define CKPT_FORMAT "mdenas-checkpoint-1"

static const char *const arena_prefix[3] = {"param/", "momentum/", "bn/"};

static md_arena *arena_of(md_model *m, int which) {
    return which == 0 ? &m->params : which == 1 ? &m->momentum : &m->stats;
}

/* "ckpt-<digits>.safetensors" -> step; -1 for any other name. */
static long ckpt_step(const char *name) {
    if (strncmp(name, "ckpt-", 5)) return -1;
    char *end = NULL;
    errno = 0;
    long step = strtol(name + 5, &end, 10);
    if (errno || end == name + 5 || step < 0 || strcmp(end, ".safetensors")) return -1;
    return step;
}

typedef struct {
    long step;
    char name[256];
} ckpt_name;

static int by_step_desc(const void *a, const void *b) {
    const ckpt_name *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

/* The checkpoints in dir, newest first; *n = 0 when dir does not exist. With
 * remove_tmp, leftover "*.tmp" files (a write cut short) are deleted. */
static md_status list_ckpts(const char *dir, ckpt_name **out, int *n, int *corrupt,
                            int remove_tmp) {
    *out = NULL, *n = 0, *corrupt = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return MD_OK;
        return md_fail(MD_ERR_IO, "cannot read %s: %s", dir, strerror(errno));
    }
    int            cap = 0;
    struct dirent *e;
    md_status      s = MD_OK;
    while ((e = readdir(d)) && s == MD_OK) {
        size_t len = strlen(e->d_name);
        if (len > 8 && !strcmp(e->d_name + len - 8, ".corrupt")) (*corrupt)++;
        if (remove_tmp && len > 4 && !strcmp(e->d_name + len - 4, ".tmp") &&
            !strncmp(e->d_name, "ckpt-", 5)) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            remove(p);
            continue;
        }
        long step = ckpt_step(e->d_name);
        if (step < 0 || len >= sizeof((ckpt_name *)0)->name) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            ckpt_name *m = realloc(*out, (size_t)cap * sizeof *m);
            if (!m) {
                s = md_fail(MD_ERR_NOMEM, "listing %s", dir);
                free(*out);
                *out = NULL, *n = 0;
                break;
            }
            *out = m;
        }
        (*out)[*n].step = step;
        snprintf((*out)[*n].name, sizeof(*out)[*n].name, "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    if (s == MD_OK && *n) qsort(*out, (size_t)*n, sizeof **out, by_step_desc);
    return s;
}

static void ckpt_dir(const md_search_config *c, char *buf, size_t len) {
    snprintf(buf, len, "%s/checkpoints", c->out);
}


/* ---- save -------------------------------------------------------------------------------- */

/* The metadata of a checkpoint: key, formatted value, side by side. */
typedef struct {
    md_st_meta m[24];
    char       text[24][64];
    int        n;
} meta_list;

static void meta_put(meta_list *l, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void meta_put(meta_list *l, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->text[l->n], sizeof l->text[l->n], fmt, ap);
    va_end(ap);
    l->m[l->n] = (md_st_meta){key, l->text[l->n]};
    l->n++;
}

md_status md_ckpt_save(const md_search_config *c, const md_ckpt_state *cs, char *path,
                       size_t path_len, size_t *bytes) {
    char dir[700];
    ckpt_dir(c, dir, sizeof dir);
    if (mkdir(dir, 0777) && errno != EEXIST)
        return md_fail(MD_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    cs->pos->periods_done = cs->mdl->periods;

    int ntensor = 0, cap = 8;
    for (int a = 0; a < 3; a++) cap += arena_of(cs->model, a)->count;
    md_st_entry *t = calloc((size_t)cap, sizeof *t);
    char        *names = malloc((size_t)cap * (MD_NAME_MAX + 16));
    if (!t || !names) {
        free(t), free(names);
        return md_fail(MD_ERR_NOMEM, "checkpoint of %d tensors", cap);
    }
    for (int a = 0; a < 3; a++) {
        const md_arena *ar = arena_of(cs->model, a);
        for (int i = 0; i < ar->count; i++, ntensor++) {
            const md_param *p = &ar->table[i];
            char           *nm = names + (size_t)ntensor * (MD_NAME_MAX + 16);
            snprintf(nm, MD_NAME_MAX + 16, "%s%s", arena_prefix[a], p->name);
            md_st_entry *e = &t[ntensor];
            e->name = nm, e->dtype = MD_ST_F32, e->ndim = p->ndim, e->data = ar->data + p->offset;
            for (int k = 0; k < p->ndim; k++) e->dim[k] = p->dim[k];
        }
    }
    const md_mdl *m = cs->mdl;
    const double *state[3] = {m->p, m->he, m->ha}, *hist[3] = {m->hist_p, m->hist_he, m->hist_ha};
    static const char *const sn[3] = {"mdl/p", "mdl/he", "mdl/ha"};
    static const char *const hn[3] = {"mdl/hist_p", "mdl/hist_he", "mdl/hist_ha"};
    for (int k = 0; k < 3; k++)
        t[ntensor++] = (md_st_entry){.name = sn[k], .dtype = MD_ST_F64, .ndim = 2,
                                     .dim = {m->edges, m->k}, .data = state[k]};
    for (int k = 0; k < 3 && m->periods > 0; k++)
        t[ntensor++] = (md_st_entry){.name = hn[k], .dtype = MD_ST_F64, .ndim = 3,
                                     .dim = {m->periods, m->edges, m->k}, .data = hist[k]};

    md_json cj;
    md_json_init(&cj);
    md_search_config_json(&cj, c, cs->world, 0);
    const md_run_pos *ps = cs->pos;
    meta_list         ml = {.n = 0};
    char              created[32];
    time_t            now = time(NULL);
    struct tm         tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    meta_put(&ml, "format", "%s", CKPT_FORMAT);
    meta_put(&ml, "mdenas_version", "%s", MDENAS_VERSION);
    meta_put(&ml, "step", "%ld", ps->step);
    meta_put(&ml, "period", "%ld", ps->period);
    meta_put(&ml, "periods_done", "%d", ps->periods_done);
    meta_put(&ml, "world_size", "%d", cs->world);
    meta_put(&ml, "threads", "%d", cs->uniform_threads);
    meta_put(&ml, "config_hash", "%08" PRIx32, md_crc32c(cj.buf, cj.len));
    meta_put(&ml, "train_epoch", "%ld", ps->train_epoch);
    meta_put(&ml, "train_batch", "%d", ps->train_batch);
    meta_put(&ml, "val_epoch", "%ld", ps->val_epoch);
    meta_put(&ml, "val_batch", "%d", ps->val_batch);
    meta_put(&ml, "period_correct", "%ld", ps->period_correct);
    meta_put(&ml, "period_seen", "%ld", ps->period_seen);
    meta_put(&ml, "period_loss", "%.17g", ps->period_loss);
    meta_put(&ml, "metrics_bytes", "%ld", ps->metrics_bytes);
    meta_put(&ml, "history_bytes", "%ld", ps->history_bytes);
    meta_put(&ml, "created", "%s", created);
    meta_put(&ml, "interval", "%ld %ld %ld %.17g", ps->iv_steps, ps->iv_correct, ps->iv_seen,
             ps->iv_loss);
    ml.m[ml.n++] = (md_st_meta){"config", cj.buf}; /* long: not copied */
    md_json sj; /* the space, for inspect */
    md_json_init(&sj);
    md_json_begin_object(&sj);
    md_space_config_json(cs->space, &sj);
    md_json_end_object(&sj);
    ml.m[ml.n++] = (md_st_meta){"space", sj.buf};
    snprintf(path, path_len, "%s/ckpt-%09ld.safetensors", dir, ps->step);
    md_status s = cj.failed || sj.failed ? md_fail(MD_ERR_NOMEM, "checkpoint config")
                                         : md_st_write(path, t, ntensor, ml.m, ml.n, bytes);
    md_json_free(&cj);
    md_json_free(&sj);
    free(t), free(names);
    MD_TRY(s);

    /* Keep the newest K. */
    ckpt_name *list;
    int        n, corrupt;
    MD_TRY(list_ckpts(dir, &list, &n, &corrupt, 0));
    for (int i = c->keep; i < n; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, list[i].name);
        if (remove(p)) /* the run goes on: a stale old checkpoint costs only disk */
            fprintf(stderr, "mdenas: warning: cannot remove old checkpoint %s: %s\n", p,
                    strerror(errno));
    }
    free(list);
    return MD_OK;
}

/* ---- configuration check -------------------------------------------------------------- */

static void value_text(const md_jvalue *v, char *buf, size_t len) {
    if (!v) snprintf(buf, len, "(absent)");
    else if (v->type == MD_JSTR) snprintf(buf, len, "'%s'", v->str);
    else if (v->type == MD_JNUM) snprintf(buf, len, "%.15g", v->num);
    else if (v->type == MD_JBOOL) snprintf(buf, len, "%s", v->num ? "true" : "false");
    else snprintf(buf, len, "(%s)", md_json_type_name(v->type));
}

static int same_value(const md_jvalue *a, const md_jvalue *b) {
    if (!a || !b || a->type != b->type) return 0;
    if (a->type == MD_JSTR) return !strcmp(a->str, b->str);
    return a->num == b->num;
}

/* MD_ERR_ARG naming every option whose value in `saved_text` (JSON of a
 * configuration) differs from c's. `what` names the saved source. */
md_status md_ckpt_check_config(const md_search_config *c, const char *saved_text,
                               const char *what) {
    md_json cj;
    md_json_init(&cj);
    md_search_config_json(&cj, c, 1, 0);
    md_jvalue now, saved;
    md_status s = md_json_parse(cj.buf, "current options", &now);
    md_json_free(&cj);
    MD_TRY(s);
    if (md_json_parse(saved_text, what, &saved) != MD_OK || saved.type != MD_JOBJ) {
        md_json_value_free(&now);
        if (saved.type != MD_JOBJ) md_json_value_free(&saved);
        return md_fail(MD_ERR_DATA, "%s: the saved configuration is not a JSON object", what);
    }
    char diff[2048] = "";
    int  ndiff = 0;
    for (int i = 0; i < now.count; i++) {
        const md_jvalue *b = md_json_get(&saved, now.keys[i]);
        if (same_value(&now.items[i], b)) continue;
        char opt[64], a_text[128], b_text[128];
        snprintf(opt, sizeof opt, "--%s", now.keys[i]);
        for (char *q = opt + 2; *q; q++)
            if (*q == '_') *q = '-';
        value_text(&now.items[i], a_text, sizeof a_text);
        value_text(b, b_text, sizeof b_text);
        size_t used = strlen(diff);
        snprintf(diff + used, sizeof diff - used, "%s%s %s now, %s in the run", ndiff ? "; " : "",
                 opt, a_text, b_text);
        ndiff++;
    }
    /* Options listed only when not at their default: a run saved with one set
     * differs from this one when this one leaves it at the default. */
    static const char *const optional[] = {"label_smoothing", "nesterov",   "bn_decay",
                                           "space",           "space_file", "width_mult",
                                           "candidates",      "train",      "genotype",
                                           "aux_weight",      "drop_path",  "dropout",
                                           "cutout",          "archs"};
    md_search_config def;
    md_jvalue        dv;
    md_search_config_preset(&def, "");
    md_json_init(&cj);
    md_search_config_json(&cj, &def, 1, 1);
    s = md_json_parse(cj.buf, "default options", &dv);
    md_json_free(&cj);
    for (size_t i = 0; s == MD_OK && i < sizeof optional / sizeof *optional; i++) {
        const md_jvalue *b = md_json_get(&saved, optional[i]), *d = md_json_get(&dv, optional[i]);
        if (md_json_get(&now, optional[i]) || !b || same_value(b, d)) continue;
        char opt[64], a_text[128], b_text[128];
        snprintf(opt, sizeof opt, "--%s", optional[i]);
        for (char *q = opt + 2; *q; q++)
            if (*q == '_') *q = '-';
        value_text(d, a_text, sizeof a_text);
        value_text(b, b_text, sizeof b_text);
        size_t used = strlen(diff);
        snprintf(diff + used, sizeof diff - used, "%s%s %s now, %s in the run", ndiff ? "; " : "",
                 opt, a_text, b_text);
        ndiff++;
    }
    if (s == MD_OK) md_json_value_free(&dv);
    md_json_value_free(&now);
    md_json_value_free(&saved);
    MD_TRY(s);
    if (!ndiff) return MD_OK;
    return md_fail(MD_ERR_ARG,
                   "%s was written with different options, so this run cannot resume it: %s. "
                   "Rerun with the run's options, or choose another --out; nothing was changed",
                   what, diff);
}

/* ---- find and load ------------------------------------------------------------------- */

md_status md_ckpt_find(const md_search_config *c, md_ckpt_accept accept, void *ctx,
                       char *path, size_t path_len, int *found) {
    char dir[700];
    ckpt_dir(c, dir, sizeof dir);
    *found = 0;
    ckpt_name *list;
    int        n, corrupt;
    MD_TRY(list_ckpts(dir, &list, &n, &corrupt, 1));
    md_status s = MD_OK;
    char      bad[1024] = "";
    for (int i = 0; i < n && !*found && s == MD_OK; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, list[i].name);
        md_st_file f;
        md_status  rs = md_st_read(p, &f);
        if (rs != MD_OK && rs != MD_ERR_DATA) {
            s = rs; /* cannot read (permissions, memory): not the file's fault */
            break;
        }
        const char *fmt = rs == MD_OK ? md_st_meta_get(&f, "format") : NULL;
        const char *cfg = rs == MD_OK ? md_st_meta_get(&f, "config") : NULL;
        if (rs == MD_OK && (!fmt || strcmp(fmt, CKPT_FORMAT) || !cfg ||
                            !md_st_meta_get(&f, "crc32c"))) {
            char shown[64]; /* the file's strings go with it */
            snprintf(shown, sizeof shown, "%s", fmt ? fmt : "(none)");
            md_st_free(&f);
            rs = md_fail(MD_ERR_DATA, "%s: not an mdenas checkpoint (format '%s', expected '%s', "
                                      "with a crc32c)", p, shown, CKPT_FORMAT);
        }
        if (rs == MD_OK) {
            s = md_ckpt_check_config(c, cfg, p); /* other options: refused, not corrupt */
            if (s == MD_OK) rs = accept(ctx, &f);
            md_st_free(&f);
            if (s != MD_OK) break;
            if (rs != MD_OK && rs != MD_ERR_DATA) {
                s = rs;
                break;
            }
        }
        if (rs == MD_OK) {
            *found = 1;
            snprintf(path, path_len, "%s", p);
            break;
        }
        /* Report, keep the file under another name, try the one before. */
        char moved[1100];
        snprintf(moved, sizeof moved, "%s.corrupt", p);
        fprintf(stderr, "mdenas: checkpoint %s cannot be used: %s\nmdenas: renamed it to %s "
                        "and trying the previous checkpoint\n", p, md_error_message(), moved);
        if (rename(p, moved)) s = md_fail(MD_ERR_IO, "cannot rename %s: %s", p, strerror(errno));
        size_t used = strlen(bad);
        snprintf(bad + used, sizeof bad - used, "%s%s", used ? ", " : "", list[i].name);
        corrupt++;
    }
    free(list);
    MD_TRY(s);
    if (!*found && corrupt)
        return md_fail(MD_ERR_DATA, "%s holds no usable checkpoint (%s%s*.corrupt): the run cannot "
                                    "resume. Inspect them with `mdenas_mpi inspect`, or move the "
                                    "run directory aside to start again",
                       dir, bad, bad[0] ? "; " : "");
    return MD_OK;
}

static md_status meta_long(const md_st_file *f, const char *key, long *out) {
    const char *v = md_st_meta_get(f, key);
    char       *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < 0)
        return md_fail(MD_ERR_DATA, "%s: metadata '%s' is missing or not a count", f->path, key);
    *out = x;
    return MD_OK;
}

static md_status get_tensor(const md_st_file *f, const char *name, md_st_dtype dt, int ndim,
                            const int64_t *dim, const void **data) {
    const md_st_tensor *t = md_st_find(f, name);
    if (!t) return md_fail(MD_ERR_DATA, "%s lacks tensor '%s' (another version or network?)",
                           f->path, name);
    int ok = t->dtype == dt && t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = t->dim[k] == dim[k];
    if (!ok) return md_fail(MD_ERR_DATA, "%s: tensor '%s' has dtype %s and another shape than "
                                         "this network's", f->path, name, md_st_dtype_name(t->dtype));
    *data = md_st_data(f, t);
    return MD_OK;
}

static md_status read_position(const md_st_file *f, md_run_pos *ps) {
    long v[12];
    static const char *const keys[12] = {
        "step",      "period",    "periods_done",   "train_epoch", "train_batch",   "val_epoch",
        "val_batch", "period_correct", "period_seen", "metrics_bytes", "history_bytes",
        "world_size"};
    for (int i = 0; i < 12; i++) MD_TRY(meta_long(f, keys[i], &v[i]));
    if (v[2] > INT32_MAX || v[11] > INT32_MAX || v[4] > INT32_MAX || v[6] > INT32_MAX)
        return md_fail(MD_ERR_DATA, "%s: metadata counts out of range", f->path);
    ps->step = v[0], ps->period = v[1], ps->periods_done = (int)v[2];
    ps->train_epoch = v[3], ps->train_batch = (int)v[4];
    ps->val_epoch = v[5], ps->val_batch = (int)v[6];
    ps->period_correct = v[7], ps->period_seen = v[8];
    ps->metrics_bytes = v[9], ps->history_bytes = v[10], ps->saved_world = (int)v[11];
    const char *loss = md_st_meta_get(f, "period_loss");
    char       *end = NULL;
    ps->period_loss = loss ? strtod(loss, &end) : 0;
    if (!loss || *end) return md_fail(MD_ERR_DATA, "%s: metadata 'period_loss' is missing", f->path);
    const char *iv = md_st_meta_get(f, "interval");
    if (iv && (sscanf(iv, "%ld %ld %ld %lf", &ps->iv_steps, &ps->iv_correct, &ps->iv_seen,
                      &ps->iv_loss) != 4 || ps->iv_steps < 0))
        return md_fail(MD_ERR_DATA, "%s: metadata 'interval' is malformed", f->path);
    if (!iv) ps->iv_steps = ps->iv_correct = ps->iv_seen = 0, ps->iv_loss = 0;
    /* Threads: absent before it was recorded; a value this build cannot use
     * counts as unknown (a hint for the resume, not part of the state). */
    long threads = 0;
    if (md_st_meta_get(f, "threads") && meta_long(f, "threads", &threads) != MD_OK) threads = 0;
    ps->saved_threads = threads > 0 && threads <= MD_MAX_THREADS ? (int)threads : 0;
    return MD_OK;
}

static md_status read_distribution(const md_mdl *m, const md_st_file *f, int periods,
                                   const void **st, const void **hi) {
    int64_t                  d2[2] = {m->edges, m->k}, d3[3] = {periods, m->edges, m->k};
    static const char *const sn[3] = {"mdl/p", "mdl/he", "mdl/ha"};
    static const char *const hn[3] = {"mdl/hist_p", "mdl/hist_he", "mdl/hist_ha"};
    for (int k = 0; k < 3; k++) {
        MD_TRY(get_tensor(f, sn[k], MD_ST_F64, 2, d2, &st[k]));
        if (periods > 0) MD_TRY(get_tensor(f, hn[k], MD_ST_F64, 3, d3, &hi[k]));
    }
    return MD_OK;
}

/* Every check first, then the copy: a checkpoint that fails any check leaves
 * the live arenas, the distribution and the position as they were. */
md_status md_ckpt_load(const md_ckpt_state *cs, const md_st_file *f) {
    int n = 0;
    for (int a = 0; a < 3; a++) n += arena_of(cs->model, a)->count;
    const void **src = calloc((size_t)n + 1, sizeof *src);
    if (!src) return md_fail(MD_ERR_NOMEM, "checkpoint of %d tensors", n);
    md_status st = MD_OK;
    for (int a = 0, t = 0; a < 3 && st == MD_OK; a++) {
        const md_arena *ar = arena_of(cs->model, a);
        for (int i = 0; i < ar->count && st == MD_OK; i++, t++) {
            const md_param *p = &ar->table[i];
            char            name[MD_NAME_MAX + 16];
            int64_t         dim[MD_MAX_DIMS];
            for (int k = 0; k < p->ndim; k++) dim[k] = p->dim[k];
            snprintf(name, sizeof name, "%s%s", arena_prefix[a], p->name);
            st = get_tensor(f, name, MD_ST_F32, p->ndim, dim, &src[t]);
        }
    }
    md_run_pos pos = *cs->pos;
    const void *dist[3], *hi[3] = {NULL, NULL, NULL};
    if (st == MD_OK) st = read_position(f, &pos);
    if (st == MD_OK) st = read_distribution(cs->mdl, f, pos.periods_done, dist, hi);
    /* The distribution is checked (masks, sums) on a copy before it replaces the live one. */
    md_mdl trial;
    memset(&trial, 0, sizeof trial);
    if (st == MD_OK) st = md_mdl_clone_empty(cs->mdl, &trial);
    if (st == MD_OK)
        st = md_mdl_restore(&trial, pos.periods_done, dist[0], dist[1], dist[2], hi[0], hi[1],
                            hi[2]);
    if (st == MD_OK) {
        for (int a = 0, t = 0; a < 3; a++) {
            md_arena *ar = arena_of(cs->model, a);
            for (int i = 0; i < ar->count; i++, t++)
                memcpy(ar->data + ar->table[i].offset, src[t], ar->table[i].numel * sizeof(float));
        }
        md_mdl_free(cs->mdl);
        *cs->mdl = trial;
        memset(&trial, 0, sizeof trial);
        *cs->pos = pos;
    }
    md_mdl_free(&trial);
    free(src);
    return st;
}

/* ---- inspect ---------------------------------------------------------------------------- */

md_status md_ckpt_inspect(const char *path, FILE *out) {
    md_st_file f;
    MD_TRY(md_st_read(path, &f));
    const char *fmt = md_st_meta_get(&f, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT)) {
        md_st_free(&f);
        return md_fail(MD_ERR_DATA, "%s is a safetensors file but not an mdenas checkpoint "
                                    "(format '%s')", path, fmt ? fmt : "(none)");
    }
    size_t count[4] = {0}, bytes[4] = {0};
    for (int i = 0; i < f.n; i++) {
        int g = 3;
        for (int a = 0; a < 3; a++)
            if (!strncmp(f.t[i].name, arena_prefix[a], strlen(arena_prefix[a]))) g = a;
        count[g]++, bytes[g] += f.t[i].bytes;
    }
    /* md_st_read verifies the checksum when the file has one. */
    fprintf(out, "%s: mdenas checkpoint, %zu bytes, %s\n", path, f.size,
            md_st_meta_get(&f, "crc32c") ? "checksum ok"
                                         : "NO CHECKSUM (not verified; a run would refuse it)");
    static const char *const shown[] = {"format",      "mdenas_version", "created",
                                        "step",        "period",         "periods_done",
                                        "world_size",  "threads",        "train_epoch",    "train_batch",
                                        "val_epoch",   "val_batch",      "config_hash",
                                        "crc32c",      "config"};
    for (size_t i = 0; i < sizeof shown / sizeof *shown; i++) {
        const char *v = md_st_meta_get(&f, shown[i]);
        fprintf(out, "  %-15s %s\n", shown[i], v ? v : "(absent)");
    }
    static const char *const group[4] = {"weights (param/)", "momentum (momentum/)",
                                         "BN statistics (bn/)", "distribution (mdl/)"};
    for (int g = 0; g < 4; g++)
        fprintf(out, "  %-22s %6zu tensors, %10zu bytes\n", group[g], count[g], bytes[g]);
    /* The genotype that the saved distribution derives to. */
    const md_st_tensor *p = md_st_find(&f, "mdl/p");
    /* The space: its own metadata, or (written before spaces had names) DARTS
     * of the configuration's "nodes". */
    const char *sp_text = md_st_meta_get(&f, "space");
    md_jvalue   sv;
    md_space   *space = NULL;
    if (p && p->dtype == MD_ST_F64 && p->ndim == 2 &&
        md_json_parse(sp_text ? sp_text : md_st_meta_get(&f, "config"), path, &sv) == MD_OK) {
        if (sv.type == MD_JOBJ && md_space_from_json(&sv, path, &space) != MD_OK) space = NULL;
        md_json_value_free(&sv);
    }
    const md_space_info *in = space ? md_space_describe(space) : NULL;
    if (in && p->dim[0] == in->dists && p->dim[1] == in->k) {
        /* A copy: the file need not place its doubles on 8-byte boundaries. */
        char    g[4096];
        double *pd = malloc(p->bytes);
        if (pd) {
            memcpy(pd, md_st_data(&f, p), p->bytes);
            if (md_space_summary(space, pd, g, sizeof g) == MD_OK)
                fprintf(out, "  space           %s\n  genotype        %s\n", in->name, g);
            free(pd);
        }
    }
    md_space_destroy(space);
    md_status s = MD_OK;
    md_st_free(&f);
    return s;
}
