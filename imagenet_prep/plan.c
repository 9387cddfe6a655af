/* The plan: walk train/ and the validation folder, label every file, draw the
 * held-out split, cut every split into shards of a fixed number of sources. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdenas/rng.h"
#include "prep.h"

typedef struct {
    char **name;
    size_t n, cap;
} name_list;

static void names_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->name[i]);
    free(l->name);
    memset(l, 0, sizeof *l);
}

static int by_string(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of dir (not . and ..), sorted bytewise. */
static md_status list_dir(const char *dir, name_list *out) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return md_fail(MD_ERR_ARG, "cannot read folder '%s': %s", dir, strerror(errno));
    struct dirent *e;
    md_status      s = MD_OK;
    errno = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (out->n == out->cap) {
            size_t cap = out->cap ? out->cap * 2 : 256;
            char **nn = realloc(out->name, cap * sizeof *nn);
            if (!nn) {
                s = md_fail(MD_ERR_NOMEM, "listing '%s': %zu names", dir, cap);
                break;
            }
            out->name = nn, out->cap = cap;
        }
        if (!(out->name[out->n] = strdup(e->d_name))) {
            s = md_fail(MD_ERR_NOMEM, "listing '%s'", dir);
            break;
        }
        out->n++;
        errno = 0;
    }
    if (s == MD_OK && errno)
        s = md_fail(MD_ERR_IO, "reading folder '%s': %s", dir, strerror(errno));
    closedir(d);
    if (s != MD_OK) {
        names_free(out);
        return s;
    }
    if (out->n) qsort(out->name, out->n, sizeof *out->name, by_string);
    return MD_OK;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- building ---- */

typedef struct {
    prep_plan *p;
    size_t     cap;
} builder;

static md_status add_source(builder *b, char *path, int32_t label, int split, char *reject) {
    prep_plan *p = b->p;
    if (!path) {
        free(reject);
        return md_fail(MD_ERR_NOMEM, "plan: source names");
    }
    if (p->nsrc == UINT32_MAX - 1) {
        free(path);
        free(reject);
        return md_fail(MD_ERR_ARG, "the input tree holds more than %u files", UINT32_MAX - 1);
    }
    if (p->nsrc == b->cap) {
        size_t       cap = b->cap ? b->cap * 2 : 4096;
        prep_source *s = realloc(p->src, cap * sizeof *s);
        if (!s) {
            free(path);
            free(reject);
            return md_fail(MD_ERR_NOMEM, "plan: %zu sources", cap);
        }
        p->src = s, b->cap = cap;
    }
    p->src[p->nsrc++] = (prep_source){path, reject, label, (uint8_t)split};
    return MD_OK;
}

static char *format_reason(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format_reason(const char *fmt, ...) {
    char    buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return strdup(buf);
}

static md_status add_note(prep_plan *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static md_status add_note(prep_plan *p, const char *fmt, ...) {
    char    buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(p->notes, (size_t)(p->nnotes + 1) * sizeof *n);
    if (!n) return md_fail(MD_ERR_NOMEM, "plan: notes");
    p->notes = n;
    if (!(n[p->nnotes] = strdup(buf))) return md_fail(MD_ERR_NOMEM, "plan: notes");
    p->nnotes++;
    return MD_OK;
}

/* A class name becomes a line of classes.txt: no control characters. */
static md_status check_class_name(const char *dir, const char *name) {
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return md_fail(MD_ERR_ARG, "class folder '%s/%s' has a control character in its name",
                           dir, name);
    return MD_OK;
}

static int32_t class_index(const prep_plan *p, const char *wnid) {
    char *const *hit = bsearch(&wnid, p->classes, p->nclasses, sizeof *p->classes, by_string);
    return hit ? (int32_t)(hit - p->classes) : -1;
}

/* The files of one class folder (`shown` is its path in sources.tsv). */
static md_status add_folder(builder *b, const char *dir, const char *shown, int32_t label,
                            int split, const char *unknown_wnid) {
    name_list files;
    MD_TRY(list_dir(dir, &files));
    md_status s = MD_OK;
    for (size_t i = 0; i < files.n && s == MD_OK; i++) {
        char *reject =
            unknown_wnid
                ? format_reason("unknown_class: '%s' is not a class folder of train/", unknown_wnid)
                : NULL;
        if (unknown_wnid && !reject)
            s = md_fail(MD_ERR_NOMEM, "plan");
        else
            s = add_source(b, prep_join(shown, files.name[i]), label, split, reject);
    }
    names_free(&files);
    return s;
}

static md_status walk_train(builder *b, const char *train_dir) {
    prep_plan *p = b->p;
    name_list  top;
    MD_TRY(list_dir(train_dir, &top));
    md_status s = MD_OK;
    /* Classes first (sorted, as listed), so labels are known when files are added. */
    for (size_t i = 0; i < top.n && s == MD_OK; i++) {
        char *full = prep_join(train_dir, top.name[i]);
        if (!full)
            s = md_fail(MD_ERR_NOMEM, "plan");
        else if (is_dir(full)) {
            s = check_class_name(train_dir, top.name[i]);
            if (s == MD_OK) {
                char **c = realloc(p->classes, (p->nclasses + 1) * sizeof *c);
                if (!c)
                    s = md_fail(MD_ERR_NOMEM, "plan: classes");
                else {
                    p->classes = c;
                    c[p->nclasses++] = top.name[i];
                    top.name[i] = NULL;
                }
            }
        } else {
            s = add_source(b, prep_join("train", top.name[i]), -1, SPLIT_TRAIN,
                           format_reason("no_class: not inside a class folder of train/"));
        }
        free(full);
    }
    for (size_t i = 0; i < top.n; i++)
        free(top.name[i]);
    free(top.name);
    if (s == MD_OK && p->nclasses == 0)
        s = md_fail(MD_ERR_ARG, "'%s' holds no class folders (expected train/<wnid>/<images>)",
                    train_dir);
    for (uint32_t c = 0; c < p->nclasses && s == MD_OK; c++) {
        char *dir = prep_join(train_dir, p->classes[c]);
        char *shown = prep_join("train", p->classes[c]);
        if (!dir || !shown)
            s = md_fail(MD_ERR_NOMEM, "plan");
        else
            s = add_folder(b, dir, shown, (int32_t)c, SPLIT_TRAIN, NULL);
        free(dir);
        free(shown);
    }
    return s;
}

static md_status walk_val_folders(builder *b, const char *val_dir) {
    prep_plan *p = b->p;
    name_list  top;
    MD_TRY(list_dir(val_dir, &top));
    md_status s = MD_OK;
    size_t    folders = 0, files = 0;
    for (size_t i = 0; i < top.n && s == MD_OK; i++) {
        char *full = prep_join(val_dir, top.name[i]);
        if (!full) {
            s = md_fail(MD_ERR_NOMEM, "plan");
        } else if (is_dir(full)) {
            folders++;
            int32_t label = class_index(p, top.name[i]);
            char   *shown = prep_join("val", top.name[i]);
            if (!shown)
                s = md_fail(MD_ERR_NOMEM, "plan");
            else
                s = add_folder(b, full, shown, label, SPLIT_VAL, label < 0 ? top.name[i] : NULL);
            if (s == MD_OK && label < 0)
                s = add_note(p, "val/%s is not a class of train/: its files are rejected",
                             top.name[i]);
            free(shown);
        } else {
            files++;
            s = add_source(b, prep_join("val", top.name[i]), -1, SPLIT_VAL,
                           format_reason("no_class: not inside a class folder of val/"));
        }
        free(full);
    }
    names_free(&top);
    if (s == MD_OK && folders == 0 && files > 0)
        s = md_fail(MD_ERR_ARG,
                    "validation folder '%s' holds %zu files but no class folders: give their "
                    "labels with --val-labels FILE",
                    val_dir, files);
    return s;
}

static md_status walk_val_flat(builder *b, const char *val_dir, prep_labels *labels) {
    prep_plan *p = b->p;
    name_list  top;
    MD_TRY(list_dir(val_dir, &top));
    md_status s = MD_OK;
    for (size_t i = 0; i < top.n && s == MD_OK; i++) {
        const char *wnid = prep_labels_find(labels, top.name[i]);
        int32_t     label = wnid ? class_index(p, wnid) : -1;
        char       *reject = NULL;
        if (!wnid)
            reject = format_reason("no_label: not in %s", p->val_labels);
        else if (label < 0)
            reject =
                format_reason("unknown_class: labelled '%s', not a class folder of train/", wnid);
        if (label < 0 && !reject)
            s = md_fail(MD_ERR_NOMEM, "plan");
        else
            s = add_source(b, prep_join("val", top.name[i]), label, SPLIT_VAL, reject);
    }
    names_free(&top);
    size_t unused = s == MD_OK ? prep_labels_unused(labels) : 0;
    if (unused)
        s = add_note(p, "%zu entries of %s name no file of the validation folder", unused,
                     p->val_labels);
    return s;
}

static int by_path(const void *a, const void *b) {
    return strcmp(((const prep_source *)a)->path, ((const prep_source *)b)->path);
}

/* j uniform in [0, n): a draw with 53 random bits, scaled (bias below 2^-20 for n < 2^32). */
static uint32_t draw_below(md_rng *r, uint32_t n) {
    uint32_t j = (uint32_t)(md_rng_uniform_double(r) * n);
    return j < n ? j : n - 1;
}

static void shuffle(uint32_t *v, uint32_t n, uint64_t seed, uint64_t stream) {
    md_rng r;
    md_rng_seed(&r, seed, stream);
    for (uint32_t i = 0; i + 1 < n; i++) {
        uint32_t j = i + draw_below(&r, n - i);
        uint32_t t = v[i];
        v[i] = v[j], v[j] = t;
    }
}

/* Streams of the seed: one per class for the held-out draw (keyed by its name,
 * so adding a class leaves the others' draws alone), two for shard orders. */
#define STREAM_ORDER_TRAIN      0x7472616eull /* "tran" */
#define STREAM_ORDER_SEARCH_VAL 0x7376616cull /* "sval" */

static md_status hold_out(prep_plan *p, const prep_options *o) {
    /* The train files of each class, in id order (a counting sort by label). */
    uint32_t *start = calloc((size_t)p->nclasses + 1, sizeof *start);
    uint32_t *ids = malloc(((size_t)p->nsrc + 1) * sizeof *ids);
    md_status s = MD_OK;
    if (!start || !ids) s = md_fail(MD_ERR_NOMEM, "plan: %u ids", p->nsrc);
    for (uint32_t i = 0; s == MD_OK && i < p->nsrc; i++)
        if (p->src[i].split == SPLIT_TRAIN && p->src[i].label >= 0) start[p->src[i].label + 1]++;
    for (uint32_t c = 0; s == MD_OK && c < p->nclasses; c++)
        start[c + 1] += start[c];
    for (uint32_t i = 0, *fill = start; s == MD_OK && i < p->nsrc; i++)
        if (p->src[i].split == SPLIT_TRAIN && p->src[i].label >= 0)
            ids[fill[p->src[i].label]++] = i;
    /* fill[] moved each start to the next class's: class c is [start[c-1], start[c]). */
    for (uint32_t c = 0; s == MD_OK && c < p->nclasses; c++) {
        uint32_t  first = c ? start[c - 1] : 0, n = start[c] - first;
        uint32_t *mine = ids + first;
        uint32_t  k = (uint32_t)o->search_val_per_class;
        if (k > n / 2) {
            if (n > 0)
                s = add_note(p, "class %s has %u files: %u held out for search_val, not %u",
                             p->classes[c], n, n / 2, k);
            k = n / 2;
        }
        if (n == 0 && s == MD_OK) s = add_note(p, "class %s has no files", p->classes[c]);
        shuffle(mine, n, o->seed, md_crc32c(p->classes[c], strlen(p->classes[c])));
        for (uint32_t i = 0; i < k; i++)
            p->src[mine[i]].split = SPLIT_SEARCH_VAL;
    }
    free(start);
    free(ids);
    return s;
}

static md_status cut_shards(prep_plan *p, const prep_options *o) {
    p->order = malloc(((size_t)p->nsrc + 1) * sizeof *p->order);
    size_t max_shards = (size_t)p->nsrc + NSPLITS;
    p->shards = malloc(max_shards * sizeof *p->shards);
    if (!p->order || !p->shards) return md_fail(MD_ERR_NOMEM, "plan: shards");
    uint32_t P = (uint32_t)o->images_per_shard;
    for (int split = 0; split < NSPLITS; split++) {
        uint32_t first = p->norder;
        for (uint32_t i = 0; i < p->nsrc; i++)
            if (p->src[i].split == split && !p->src[i].reject) p->order[p->norder++] = i;
        uint32_t n = p->norder - first;
        if (split == SPLIT_TRAIN) shuffle(p->order + first, n, o->seed, STREAM_ORDER_TRAIN);
        if (split == SPLIT_SEARCH_VAL)
            shuffle(p->order + first, n, o->seed, STREAM_ORDER_SEARCH_VAL);
        for (uint32_t k = 0; k * (uint64_t)P < n; k++) {
            uint32_t cnt = n - k * P < P ? n - k * P : P;
            p->shards[p->nshards++] = (prep_shard){(uint8_t)split, k, first + k * P, cnt};
        }
    }
    return MD_OK;
}

static char *absolute(const char *path) {
    char *r = realpath(path, NULL);
    return r;
}

static md_status walk_val(builder *b, const prep_options *o, const char *in) {
    prep_plan *p = b->p;
    char      *val = o->val_dir ? strdup(o->val_dir) : prep_join(in, "val");
    if (!val) return md_fail(MD_ERR_NOMEM, "plan");
    md_status s = MD_OK;
    if (!is_dir(val)) {
        if (o->val_dir || o->val_labels)
            s = md_fail(MD_ERR_ARG, "validation folder '%s': %s", val,
                        access(val, F_OK) == 0 ? "not a folder" : "no such folder");
        else
            s = add_note(p, "no validation folder (%s): no val split", val);
        free(val);
        return s;
    }
    p->val_dir = absolute(val);
    free(val);
    if (!p->val_dir) return md_fail(MD_ERR_ARG, "validation folder: %s", strerror(errno));
    if (!o->val_labels) return walk_val_folders(b, p->val_dir);
    if (!(p->val_labels = absolute(o->val_labels)))
        return md_fail(MD_ERR_ARG, "--val-labels '%s': %s", o->val_labels, strerror(errno));
    if (o->val_id_map && !(p->val_id_map = absolute(o->val_id_map)))
        return md_fail(MD_ERR_ARG, "--val-id-map '%s': %s", o->val_id_map, strerror(errno));
    prep_labels *labels;
    MD_TRY(prep_labels_load(p->val_labels, p->val_id_map, &labels));
    s = walk_val_flat(b, p->val_dir, labels);
    prep_labels_free(labels);
    return s;
}

md_status prep_plan_build(const prep_options *o, prep_plan *p) {
    memset(p, 0, sizeof *p);
    builder b = {p, 0};
    if (!is_dir(o->in))
        return md_fail(MD_ERR_ARG, "input folder '%s': %s", o->in,
                       access(o->in, F_OK) == 0 ? "not a folder" : "no such folder");
    char *train = prep_join(o->in, "train");
    if (!train) return md_fail(MD_ERR_NOMEM, "plan");
    if (!is_dir(train)) {
        md_status s = md_fail(MD_ERR_ARG,
                              "'%s' is not a folder: IN must hold train/<wnid>/<images> (the "
                              "ImageNet layout)",
                              train);
        free(train);
        return s;
    }
    p->train_dir = absolute(train);
    free(train);
    if (!p->train_dir) return md_fail(MD_ERR_ARG, "train folder: %s", strerror(errno));
    md_status s = walk_train(&b, p->train_dir);
    uint32_t in_classes = 0;
    for (uint32_t i = 0; s == MD_OK && i < p->nsrc; i++) in_classes += p->src[i].label >= 0;
    if (s == MD_OK && in_classes == 0)
        s = md_fail(MD_ERR_ARG, "the class folders of '%s' hold no files", p->train_dir);
    if (s == MD_OK) s = walk_val(&b, o, o->in);
    if (s == MD_OK) {
        if (p->nsrc) qsort(p->src, p->nsrc, sizeof *p->src, by_path);
        s = hold_out(p, o);
    }
    if (s == MD_OK) s = cut_shards(p, o);
    uint8_t *blob = NULL;
    size_t   len = 0;
    if (s == MD_OK) s = prep_plan_serialize(p, &blob, &len);
    if (s == MD_OK) p->tree_crc = md_crc32c(blob, len);
    free(blob);
    return s;
}

void prep_plan_free(prep_plan *p) {
    for (uint32_t i = 0; i < p->nsrc; i++) {
        free(p->src[i].path);
        free(p->src[i].reject);
    }
    for (uint32_t i = 0; i < p->nclasses; i++)
        free(p->classes[i]);
    for (int i = 0; i < p->nnotes; i++)
        free(p->notes[i]);
    free(p->src);
    free(p->classes);
    free(p->order);
    free(p->shards);
    free(p->notes);
    free(p->train_dir);
    free(p->val_dir);
    free(p->val_labels);
    free(p->val_id_map);
    memset(p, 0, sizeof *p);
}

md_status prep_source_disk_path(const prep_plan *p, uint32_t id, char **out) {
    const char *shown = p->src[id].path;
    if (!strncmp(shown, "train/", 6))
        *out = prep_join(p->train_dir, shown + 6);
    else if (!strncmp(shown, "val/", 4) && p->val_dir)
        *out = prep_join(p->val_dir, shown + 4);
    else
        return md_fail(MD_ERR_ARG, "plan: source %u '%s' has no folder", id, shown);
    return *out ? MD_OK : md_fail(MD_ERR_NOMEM, "plan: a path");
}

void prep_shard_name(const prep_shard *s, char *buf, size_t n) {
    snprintf(buf, n, "%s-%05u.mds", prep_split_names[s->split], s->number);
}

/* ---- the plan as bytes (rank 0 to the others) ---- */

typedef struct {
    uint8_t *b;
    size_t   len, cap;
    int      failed;
} wbuf;

static void put(wbuf *w, const void *d, size_t n) {
    if (w->failed || n == 0) return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 1 << 16;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *b = realloc(w->b, cap);
        if (!b) {
            w->failed = 1;
            return;
        }
        w->b = b, w->cap = cap;
    }
    memcpy(w->b + w->len, d, n);
    w->len += n;
}
static void put_u32(wbuf *w, uint32_t v) {
    put(w, &v, 4);
}
static void put_str(wbuf *w, const char *s) {
    uint32_t n = s ? (uint32_t)strlen(s) : 0;
    put_u32(w, n);
    put(w, s, n);
}

md_status prep_plan_serialize(const prep_plan *p, uint8_t **buf, size_t *len) {
    wbuf w = {0};
    put_u32(&w, p->nclasses);
    for (uint32_t i = 0; i < p->nclasses; i++)
        put_str(&w, p->classes[i]);
    put_str(&w, p->train_dir);
    put_str(&w, p->val_dir);
    put_u32(&w, p->nsrc);
    for (uint32_t i = 0; i < p->nsrc; i++) {
        const prep_source *s = &p->src[i];
        uint8_t            flags[2] = {s->split, s->reject != NULL};
        put(&w, &s->label, 4);
        put(&w, flags, 2);
        put_str(&w, s->path);
    }
    put_u32(&w, p->norder);
    put(&w, p->order, (size_t)p->norder * 4);
    put_u32(&w, p->nshards);
    for (uint32_t i = 0; i < p->nshards; i++) {
        const prep_shard *s = &p->shards[i];
        uint32_t          v[4] = {s->split, s->number, s->first, s->count};
        put(&w, v, sizeof v);
    }
    if (w.failed) {
        free(w.b);
        return md_fail(MD_ERR_NOMEM, "plan: %zu bytes to send", w.cap);
    }
    *buf = w.b, *len = w.len;
    return MD_OK;
}

typedef struct {
    const uint8_t *b;
    size_t         len, at;
    int            bad;
} rbuf;

static void get(rbuf *r, void *d, size_t n) {
    if (r->bad || n > r->len - r->at) {
        r->bad = 1;
        memset(d, 0, n);
        return;
    }
    memcpy(d, r->b + r->at, n);
    r->at += n;
}
static uint32_t get_u32(rbuf *r) {
    uint32_t v;
    get(r, &v, 4);
    return v;
}
/* NULL for an empty string (and on failure, with r->bad set when it was no memory). */
static char *get_str(rbuf *r) {
    uint32_t n = get_u32(r);
    if (r->bad || n > r->len - r->at) {
        r->bad = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        r->bad = 1;
        return NULL;
    }
    memcpy(s, r->b + r->at, n);
    s[n] = '\0';
    r->at += n;
    return s;
}

md_status prep_plan_deserialize(const uint8_t *buf, size_t len, prep_plan *p) {
    memset(p, 0, sizeof *p);
    rbuf r = {buf, len, 0, 0};
    p->nclasses = get_u32(&r);
    if (!r.bad && p->nclasses > len / 4) r.bad = 1;
    if (!r.bad && !(p->classes = calloc(p->nclasses + 1, sizeof *p->classes))) r.bad = 1;
    for (uint32_t i = 0; i < p->nclasses && !r.bad; i++)
        p->classes[i] = get_str(&r);
    p->train_dir = get_str(&r);
    char *val = get_str(&r);
    p->val_dir = val && *val ? val : (free(val), NULL);
    uint32_t nsrc = get_u32(&r);
    if (!r.bad && nsrc > len / 10) r.bad = 1;
    if (!r.bad && !(p->src = calloc((size_t)nsrc + 1, sizeof *p->src))) r.bad = 1;
    for (uint32_t i = 0; i < nsrc && !r.bad; i++) {
        uint8_t flags[2];
        get(&r, &p->src[i].label, 4);
        get(&r, flags, 2);
        p->src[i].split = flags[0];
        p->src[i].path = get_str(&r); /* the reject reasons stay on rank 0 */
        p->nsrc = i + 1;
    }
    p->norder = get_u32(&r);
    if (!r.bad && p->norder > nsrc) r.bad = 1;
    if (!r.bad && !(p->order = malloc(((size_t)p->norder + 1) * 4))) r.bad = 1;
    if (!r.bad) get(&r, p->order, (size_t)p->norder * 4);
    p->nshards = get_u32(&r);
    if (!r.bad && p->nshards > (size_t)nsrc + NSPLITS) r.bad = 1;
    if (!r.bad && !(p->shards = malloc(((size_t)p->nshards + 1) * sizeof *p->shards))) r.bad = 1;
    for (uint32_t i = 0; i < p->nshards && !r.bad; i++) {
        uint32_t v[4];
        get(&r, v, sizeof v);
        p->shards[i] = (prep_shard){(uint8_t)v[0], v[1], v[2], v[3]};
    }
    if (r.bad || r.at != len) {
        prep_plan_free(p);
        return md_fail(MD_ERR_NOMEM, "plan: could not unpack the %zu bytes rank 0 sent", len);
    }
    p->tree_crc = md_crc32c(buf, len);
    return MD_OK;
}
