/* The ImageNet source: one split of a folder that imagenet_prep wrote (see
 * docs/formats.md), read from mmapped shards (md_shard_open), one JPEG decoded
 * per sample by its worker's decoder, only the crop region and at the
 * smallest DCT scale that still covers the output (jpeg.h).
 *
 * Sample i is record i - first[k] of shard k, where first[] are the
 * cumulative record counts of the split's shards in name order. Training
 * samples get torchvision's RandomResizedCrop and a flip, drawn from the
 * sample's own stream in that order (crop box, then flip); validation samples
 * the centre crop that Resize(S * 256 / 224) + CenterCrop(S) would see,
 * i.e. the centre square of side round(short side * 224 / 256) of the stored
 * image, resized to S. Both are normalised with the ImageNet mean and std. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_impl.h"
#include "data/jpeg.h"
#include "mdenas/runlog.h"
#include "mdenas/shard.h"

#define MD_IMAGENET_MAX_SIZE 1024

typedef struct {
    md_source          base;
    char               dir[512], split[32];
    md_imagenet_config cfg;
    md_rrc_params      rrc;
    int                nshards;
    md_shard         **shard;
    long long         *first; /* nshards + 1 cumulative counts */
    float              mean[3], std[3];
} imagenet_source;

typedef struct {
    md_jpeg_decoder *dec;
    uint8_t         *rgb; /* image_size^2 * 3 */
} imagenet_worker;

/* ---- errors: the image's source file, from sources.tsv ---------------------------------- */

/* The path column of row `id` of <dir>/sources.tsv (id, split, path, ...), or "". Read only
 * when a sample fails, to name the original file. */
static void source_path(const imagenet_source *s, uint64_t id, char *out, size_t len) {
    char p[700];
    snprintf(p, sizeof p, "%s/sources.tsv", s->dir);
    out[0] = '\0';
    FILE *f = fopen(p, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(line, &end, 10);
        if (end == line || *end != '\t' || errno || v != id) continue;
        char *split = end + 1, *path = strchr(split, '\t');
        if (!path) break;
        path++;
        size_t n = strcspn(path, "\t\r\n");
        snprintf(out, len, "%.*s", (int)n, path);
        break;
    }
    fclose(f);
}

/* Re-record the current error with the sample's source file added. */
static md_status with_source(const imagenet_source *s, const md_shard_record *rec, md_status st) {
    char inner[1024], path[1024];
    snprintf(inner, sizeof inner, "%s", md_error_message());
    source_path(s, rec->source, path, sizeof path);
    return md_fail(st, "%s (source image %llu: %s, per %s/sources.tsv)", inner,
                   (unsigned long long)rec->source, path[0] ? path : "not listed", s->dir);
}

/* ---- one sample -------------------------------------------------------------------------- */

static md_status imagenet_worker_create(md_source *src, void **out) {
    const imagenet_source *s = (const imagenet_source *)src;
    imagenet_worker       *w = calloc(1, sizeof *w);
    size_t                 side = (size_t)s->cfg.image_size;
    if (!w || !(w->rgb = malloc(side * side * 3))) {
        free(w);
        return md_fail(MD_ERR_NOMEM, "imagenet: a decode thread's buffer");
    }
    md_status st = md_jpeg_decoder_create(&w->dec);
    if (st != MD_OK) {
        free(w->rgb);
        free(w);
        return st;
    }
    *out = w;
    return MD_OK;
}

static void imagenet_worker_destroy(md_source *src, void *worker) {
    (void)src;
    imagenet_worker *w = worker;
    md_jpeg_decoder_destroy(w->dec);
    free(w->rgb);
    free(w);
}

static int shard_of(const imagenet_source *s, long long i) {
    int lo = 0, hi = s->nshards - 1; /* the last k with first[k] <= i */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->first[mid] <= i)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static md_crop pick_crop(const imagenet_source *s, int w, int h, md_rng *r, int *mirror) {
    *mirror = 0;
    if (s->cfg.train) {
        md_crop c = md_rrc_crop(w, h, &s->rrc, r);
        if (s->cfg.flip) *mirror = (int)(md_rng_u32(r) >> 31);
        return c;
    }
    int side = w < h ? w : h;
    int win = (int)nearbyint(side * 224.0 / 256.0); /* half to even, as Python round() */
    return md_center_crop(w, h, win < 1 ? 1 : win);
}

static md_status imagenet_get(md_source *src, void *worker, int i, md_rng *r, float *x,
                              int32_t *y) {
    const imagenet_source *s = (const imagenet_source *)src;
    imagenet_worker       *wk = worker;
    int                    k = shard_of(s, i);
    uint32_t               at = (uint32_t)(i - s->first[k]);
    const md_shard_record *rec = md_shard_record_at(s->shard[k], at);
    const uint8_t         *jpg;
    uint32_t               n;
    md_status              st = md_shard_image(s->shard[k], at, &jpg, &n);
    if (st != MD_OK) return with_source(s, rec, st);
    char what[700];
    snprintf(what, sizeof what, "%s record %u", md_shard_path(s->shard[k]), at);
    int w = 0, h = 0;
    st = md_jpeg_info(jpg, n, &w, &h, what);
    if (st != MD_OK) return with_source(s, rec, st);
    if ((uint32_t)w != rec->width || (uint32_t)h != rec->height) {
        md_fail(MD_ERR_DATA, "%s: the JPEG is %dx%d, its index record says %ux%u", what, w, h,
                rec->width, rec->height);
        return with_source(s, rec, MD_ERR_DATA);
    }
    int     mirror;
    md_crop c = pick_crop(s, w, h, r, &mirror);
    int     side = s->cfg.image_size;
    st = md_jpeg_decode_crop(wk->dec, jpg, n, c, side, side, mirror, wk->rgb, what);
    if (st != MD_OK) return with_source(s, rec, st);
    md_rgb_to_chw_normalized(wk->rgb, side, side, s->mean, s->std, x);
    *y = rec->label;
    return MD_OK;
}

static void imagenet_destroy(md_source *src) {
    imagenet_source *s = (imagenet_source *)src;
    for (int k = 0; k < s->nshards; k++)
        md_shard_close(s->shard[k]);
    free(s->shard);
    free(s->first);
    free(s);
}

static const md_source_ops imagenet_ops = {
    .worker_create = imagenet_worker_create,
    .worker_destroy = imagenet_worker_destroy,
    .get = imagenet_get,
    .destroy = imagenet_destroy,
};

/* ---- opening the folder --------------------------------------------------------------------- */

static md_status read_text(const char *path, char **out) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return md_fail(MD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return md_fail(MD_ERR_DATA, "%s is not a regular file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return md_fail(MD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char  *buf = malloc((size_t)st.st_size + 1);
    size_t got = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    int    bad = ferror(f);
    fclose(f);
    if (!buf) return md_fail(MD_ERR_NOMEM, "%s (%lld bytes)", path, (long long)st.st_size);
    if (bad || got != (size_t)st.st_size) {
        free(buf);
        return md_fail(MD_ERR_IO, "cannot read %s", path);
    }
    buf[got] = '\0';
    *out = buf;
    return MD_OK;
}

/* Lines of classes.txt: one name per line, none empty. */
static md_status count_classes(const char *dir, int *classes) {
    char path[700], *text;
    snprintf(path, sizeof path, "%s/classes.txt", dir);
    MD_TRY(read_text(path, &text));
    int         n = 0;
    const char *p = text;
    md_status   st = MD_OK;
    while (*p && st == MD_OK) {
        size_t len = strcspn(p, "\n");
        if (len == 0 || (len == 1 && p[0] == '\r'))
            st =
                md_fail(MD_ERR_DATA, "%s: line %d is empty (one class name per line)", path, n + 1);
        n++;
        p += len + (p[len] == '\n');
    }
    free(text);
    MD_TRY(st);
    if (n < 2) return md_fail(MD_ERR_DATA, "%s names %d class(es); at least 2 are needed", path, n);
    *classes = n;
    return MD_OK;
}

/* "<split>-<digits>.mds" */
static int is_shard_name(const char *name, const char *split) {
    size_t ls = strlen(split), ln = strlen(name);
    if (ln < ls + 6 || strncmp(name, split, ls) || name[ls] != '-') return 0;
    if (strcmp(name + ln - 4, ".mds")) return 0;
    for (size_t i = ls + 1; i < ln - 4; i++)
        if (name[i] < '0' || name[i] > '9') return 0;
    return 1;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static md_status list_shards(const char *dir, const char *split, char ***out, int *count) {
    *out = NULL, *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return md_fail(MD_ERR_IO, "cannot open the dataset folder %s: %s", dir, strerror(errno));
    char         **names = NULL;
    int            n = 0, cap = 0;
    struct dirent *e;
    md_status      st = MD_OK;
    while (st == MD_OK && (e = readdir(d))) {
        if (!is_shard_name(e->d_name, split)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **more = realloc(names, (size_t)cap * sizeof *names);
            if (!more)
                st = md_fail(MD_ERR_NOMEM, "%s: a list of %d shards", dir, cap);
            else
                names = more;
        }
        if (st == MD_OK && !(names[n++] = strdup(e->d_name)))
            st = md_fail(MD_ERR_NOMEM, "%s: a shard name", dir);
    }
    closedir(d);
    if (st != MD_OK) {
        free_names(names, n);
        return st;
    }
    if (n == 0)
        return md_fail(MD_ERR_DATA,
                       "%s holds no %s-NNNNN.mds shards (is it a folder that "
                       "imagenet_prep wrote?)",
                       dir, split);
    qsort(names, (size_t)n, sizeof *names, by_name);
    *out = names, *count = n;
    return MD_OK;
}

typedef struct {
    const char *name;
    double      count; /* -1: not given */
} listed_shard;

static const char *shard_base(const md_jvalue *v, const char *split) {
    if (!v || v->type != MD_JSTR) return NULL;
    const char *base = strrchr(v->str, '/');
    base = base ? base + 1 : v->str;
    return is_shard_name(base, split) ? base : NULL;
}

/* Every string in the manifest that names one of this split's shards, with the
 * count of the object that holds it as "file" (imagenet_prep's layout:
 * {"file": "train-00000.mds", "count": 1251, ...}). */
static void manifest_shards(const md_jvalue *v, const char *split, listed_shard *found, int *n,
                            int cap) {
    const char *base = shard_base(v, split);
    if (base) {
        if (*n < cap) found[(*n)++] = (listed_shard){base, -1};
        return;
    }
    if (v->type == MD_JOBJ && (base = shard_base(md_json_get(v, "file"), split))) {
        const md_jvalue *c = md_json_get(v, "count");
        if (*n < cap) found[(*n)++] = (listed_shard){base, c && c->type == MD_JNUM ? c->num : -1};
        return;
    }
    if (v->type == MD_JARR || v->type == MD_JOBJ)
        for (int i = 0; i < v->count; i++)
            manifest_shards(&v->items[i], split, found, n, cap);
}

/* The folder is finished (manifest.json), and the shards on disk are the ones it
 * lists; want[k]: the image count it gives for names[k] (-1: none). */
static md_status check_manifest(const char *dir, const char *split, char **names, int n,
                                double *want) {
    char path[700], *text;
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return md_fail(MD_ERR_DATA,
                       "%s: no manifest.json, so imagenet_prep did not finish "
                       "this folder; run it again",
                       dir);
    MD_TRY(read_text(path, &text));
    md_jvalue m;
    md_status s = md_json_parse(text, path, &m);
    free(text);
    MD_TRY(s);
    int           cap = n + 64, listed = 0;
    listed_shard *found = malloc((size_t)cap * sizeof *found);
    if (!found) {
        md_json_value_free(&m);
        return md_fail(MD_ERR_NOMEM, "%s", path);
    }
    manifest_shards(&m, split, found, &listed, cap);
    for (int i = 0; i < listed && s == MD_OK; i++) {
        int on_disk = 0;
        for (int k = 0; k < n && !on_disk; k++)
            on_disk = !strcmp(found[i].name, names[k]);
        if (!on_disk)
            s = md_fail(MD_ERR_DATA, "%s lists shard %s, which is missing from %s", path,
                        found[i].name, dir);
    }
    for (int k = 0; k < n && s == MD_OK; k++) {
        int in_list = 0;
        want[k] = -1;
        for (int i = 0; i < listed && !in_list; i++)
            if ((in_list = !strcmp(found[i].name, names[k]))) want[k] = found[i].count;
        if (listed == 0) continue;
        if (!in_list)
            s = md_fail(MD_ERR_DATA, "%s/%s is not listed in %s (a leftover of another run?)", dir,
                        names[k], path);
    }
    free(found);
    md_json_value_free(&m);
    return s;
}

static md_status check_config(const char *dir, const char *split, const md_imagenet_config *c) {
    if (!dir || !dir[0]) return md_fail(MD_ERR_ARG, "imagenet: no dataset folder given (--data)");
    if (strlen(dir) >= 512) return md_fail(MD_ERR_ARG, "imagenet: folder name too long: %s", dir);
    if (!split || !split[0] || strlen(split) >= 32 || strchr(split, '/'))
        return md_fail(MD_ERR_ARG, "imagenet: split '%s'", split ? split : "");
    if (c->image_size < 8 || c->image_size > MD_IMAGENET_MAX_SIZE)
        return md_fail(MD_ERR_ARG, "--image-size %d must be in 8..%d", c->image_size,
                       MD_IMAGENET_MAX_SIZE);
    if (c->scale_lo != 0 || c->scale_hi != 0)
        if (!(c->scale_lo > 0 && c->scale_lo <= c->scale_hi && c->scale_hi <= 1))
            return md_fail(MD_ERR_ARG, "--crop-scale %g,%g: need 0 < LO <= HI <= 1", c->scale_lo,
                           c->scale_hi);
    if (c->limit < 0) return md_fail(MD_ERR_ARG, "imagenet: a limit of %d samples", c->limit);
    return MD_OK;
}

/* Open the shards, add up their counts (each as the manifest gives it, if it
 * does), check every label against classes. */
static md_status open_shards(imagenet_source *s, char **names, const double *want, int n,
                             int classes) {
    s->shard = calloc((size_t)n, sizeof *s->shard);
    s->first = calloc((size_t)n + 1, sizeof *s->first);
    if (!s->shard || !s->first) return md_fail(MD_ERR_NOMEM, "%s: %d shards", s->dir, n);
    for (int k = 0; k < n; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", s->dir, names[k]);
        MD_TRY(md_shard_open(path, &s->shard[k]));
        s->nshards = k + 1;
        uint32_t cnt = md_shard_count(s->shard[k]);
        if (want[k] >= 0 && want[k] != (double)cnt)
            return md_fail(MD_ERR_DATA, "%s holds %u images, %s/manifest.json says %.0f", path, cnt,
                           s->dir, want[k]);
        for (uint32_t i = 0; i < cnt; i++) {
            const md_shard_record *r = md_shard_record_at(s->shard[k], i);
            if (r->label < 0 || r->label >= classes)
                return md_fail(MD_ERR_DATA,
                               "%s record %u: label %d, but %s/classes.txt names "
                               "%d classes",
                               path, i, r->label, s->dir, classes);
        }
        s->first[k + 1] = s->first[k] + cnt;
    }
    if (s->first[n] < 1)
        return md_fail(MD_ERR_DATA, "%s: the %s shards hold no images", s->dir, s->split);
    if (s->first[n] > 0x7fffffff)
        return md_fail(MD_ERR_DATA, "%s: %lld %s images, more than this reader indexes", s->dir,
                       s->first[n], s->split);
    return MD_OK;
}

md_status md_source_imagenet(const char *dir, const char *split, const md_imagenet_config *cfg,
                             md_source **out) {
    *out = NULL;
    MD_TRY(check_config(dir, split, cfg));
    int classes = 0;
    MD_TRY(count_classes(dir, &classes));
    char **names;
    int    n;
    MD_TRY(list_shards(dir, split, &names, &n));
    double          *want = malloc((size_t)n * sizeof *want);
    md_status        st = want ? check_manifest(dir, split, names, n, want)
                               : md_fail(MD_ERR_NOMEM, "%s: %d shards", dir, n);
    imagenet_source *s = st == MD_OK ? calloc(1, sizeof *s) : NULL;
    if (st == MD_OK && !s) st = md_fail(MD_ERR_NOMEM, "imagenet source");
    if (st == MD_OK) {
        s->base.ops = &imagenet_ops;
        snprintf(s->dir, sizeof s->dir, "%s", dir);
        snprintf(s->split, sizeof s->split, "%s", split);
        s->cfg = *cfg;
        s->rrc = MD_RRC_DEFAULT;
        if (cfg->scale_lo > 0) s->rrc.scale_lo = cfg->scale_lo, s->rrc.scale_hi = cfg->scale_hi;
        static const float mean[3] = MD_IMAGENET_MEAN, std[3] = MD_IMAGENET_STD;
        memcpy(s->mean, mean, sizeof mean);
        memcpy(s->std, std, sizeof std);
        st = open_shards(s, names, want, n, classes);
    }
    free(want);
    free_names(names, n);
    if (st != MD_OK) {
        if (s) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", md_error_message());
            imagenet_destroy(&s->base);
            md_error_restore(msg);
        }
        return st;
    }
    md_source_info *info = &s->base.info;
    long long       total = s->first[s->nshards];
    snprintf(info->name, sizeof info->name, "imagenet/%.20s", split);
    info->n = (int)(cfg->limit && cfg->limit < total ? cfg->limit : total);
    info->c = 3, info->h = info->w = cfg->image_size;
    info->classes = classes;
    *out = &s->base;
    return MD_OK;
}
