/* The ImageNet source (src/data/imagenet.c) behind the loader, on small
 * folders this test writes: JPEGs encoded here with libjpeg, packed with
 * md_shard_writer_*, classes.txt, sources.tsv and manifest.json as
 * imagenet_prep would write them.
 *
 *  - flat-colour images, each colour naming its (shard, record): every sample
 *    has the right label and the right pixels, in order, shuffled, cropped;
 *  - textured images: crops have the right size, validation is the centre
 *    window of side round(short * 224 / 256) resized, a training sample is the
 *    crop drawn from stream (seed, epoch, position) (recomputed here), ranks'
 *    slices concatenated are the one-rank batch and 1 and 3 threads agree, bit
 *    for bit; seek gives the same batches again; the ring goes through the
 *    memory hook;
 *  - a corrupted image byte fails its batch at md_loader_next with a message
 *    naming the shard, the record and the source file;
 *  - unfinished or inconsistent folders are refused with a message. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

#include "data/jpeg.h"
#include "mdenas/data.h"
#include "mdenas/shard.h"
#include "testutil.h"

#define SIZE 32 /* --image-size of the test */

static char scratch[64] = "test_imagenet_XXXXXX";

static void fatal(const char *what) {
    fprintf(stderr, "test_imagenet_source: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int message_has(const char *a, const char *b) {
    const char *m = md_error_message();
    return strstr(m, a) != NULL && (!b || strstr(m, b) != NULL);
}

/* ---- writing a folder ------------------------------------------------------------- */

static uint8_t *encode_jpeg(const uint8_t *rgb, int w, int h, unsigned long *size) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr       e;
    unsigned char              *buf = NULL;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &buf, size);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h;
    c.input_components = 3, c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return buf;
}

typedef struct {
    int w, h, label;
} image_spec;

/* The colour of a flat image: distinct per (shard, record), well inside 0..255. */
static void flat_colour(int shard, int rec, uint8_t col[3]) {
    col[0] = (uint8_t)(30 + 40 * shard);
    col[1] = (uint8_t)(30 + 20 * rec);
    col[2] = (uint8_t)(200 - 15 * rec);
}

static void textured(int shard, int rec, int w, int h, uint8_t *rgb) {
    md_rng r;
    md_rng_seed(&r, 77, (uint64_t)(shard * 100 + rec));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(255 * x / (w - 1));
            p[1] = (uint8_t)(255 * y / (h - 1));
            p[2] = (uint8_t)(((x / 8 + y / 8) & 1) ? 220 : 40);
        }
    for (int k = 0; k < 3; k++) { /* a bright block somewhere */
        int bx = (int)(md_rng_u32(&r) % (uint32_t)(w - 8)),
            by = (int)(md_rng_u32(&r) % (uint32_t)(h - 8));
        for (int y = by; y < by + 8; y++)
            for (int x = bx; x < bx + 8; x++)
                memset(rgb + ((size_t)y * w + x) * 3, 250, 3);
    }
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) fatal(p);
}

/* A shard of n images; flat or textured; labels (rec * 5 + shard) % 3; source id
 * 100 * (split number) + 10 * shard + rec. */
static void write_shard(const char *dir, const char *split, int split_no, int shard, int n,
                        int flat, FILE *tsv) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s-%05d.mds", dir, split, shard);
    md_shard_writer *w = NULL;
    CHECK_OK(md_shard_writer_open(path, (uint32_t)shard, (uint32_t)n, &w));
    if (!w) fatal("shard writer");
    for (int i = 0; i < n; i++) {
        int      iw = 40 + 13 * ((i + shard) % 4), ih = 72 - 9 * (i % 3);
        uint8_t *rgb = malloc((size_t)iw * ih * 3);
        if (!rgb) fatal("malloc");
        if (flat) {
            uint8_t col[3];
            flat_colour(shard, i, col);
            for (int p = 0; p < iw * ih; p++)
                memcpy(rgb + 3 * p, col, 3);
        } else {
            textured(shard, i, iw, ih, rgb);
        }
        unsigned long   size = 0;
        uint8_t        *jpg = encode_jpeg(rgb, iw, ih, &size);
        uint64_t        src = (uint64_t)(100 * split_no + 10 * shard + i);
        md_shard_record rec = {.label = (i * 5 + shard) % 3,
                               .width = (uint32_t)iw,
                               .height = (uint32_t)ih,
                               .flags = MD_SHARD_REENCODED,
                               .source = src};
        CHECK_OK(md_shard_writer_add(w, jpg, (uint32_t)size, &rec));
        fprintf(tsv, "%llu\t%s\tn0000000%d/img_%s_%d_%d.JPEG\tjpeg\trgb\t%d\t%d\tok\t\n",
                (unsigned long long)src, split, rec.label, split, shard, i, iw, ih);
        free(jpg);
        free(rgb);
    }
    uint32_t crc = 0;
    CHECK_OK(md_shard_writer_close(w, &crc));
}

/* train: shards of 5 and 7 images; search_val: one of 4. */
static void write_folder(const char *name, int flat) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/%s", scratch, name);
    if (mkdir(dir, 0755) != 0) fatal("mkdir");
    write_text(dir, "classes.txt", "n00000000\nn00000001\nn00000002\n");
    char tsv_path[256];
    snprintf(tsv_path, sizeof tsv_path, "%s/sources.tsv", dir);
    FILE *tsv = fopen(tsv_path, "w");
    if (!tsv) fatal("sources.tsv");
    fprintf(tsv, "id\tsplit\tpath\tformat\tcolour\twidth\theight\tstatus\treason\n");
    write_shard(dir, "train", 0, 0, 5, flat, tsv);
    write_shard(dir, "train", 0, 1, 7, flat, tsv);
    write_shard(dir, "search_val", 1, 0, 4, flat, tsv);
    fclose(tsv);
    write_text(dir, "manifest.json",
               "{\"format\": 1, \"splits\": {\"train\": {\"shards\": [{\"file\": "
               "\"train-00000.mds\", \"count\": 5}, {\"file\": \"train-00001.mds\", \"count\": "
               "7}]}, \"search_val\": {\"shards\": [{\"file\": \"search_val-00000.mds\", "
               "\"count\": 4}]}}}\n");
}

static const char *folder(const char *name) {
    static char buf[4][128];
    static int  k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", scratch, name);
    return buf[k];
}

static md_source *open_source(const char *name, const char *split, int train) {
    md_imagenet_config c = {.image_size = SIZE, .train = train, .flip = train};
    md_source         *s = NULL;
    md_status          st = md_source_imagenet(folder(name), split, &c, &s);
    if (st != MD_OK) {
        fprintf(stderr, "md_source_imagenet(%s, %s): %s\n", name, split, md_error_message());
        exit(1);
    }
    return s;
}

static md_loader *make_loader(const md_loader_config *cfg) {
    md_loader *l = NULL;
    if (md_loader_create(cfg, &l) != MD_OK) {
        fprintf(stderr, "md_loader_create: %s\n", md_error_message());
        exit(1);
    }
    return l;
}

/* ---- flat images: labels and pixels per record -------------------------------------- */

#define CHW (3 * SIZE * SIZE)

/* Which (shard, record) of the train split sample x is, from its colour; -1 if none. */
static int identify(const float *x, int shards, const int *counts, int *worst) {
    static const float mean[3] = MD_IMAGENET_MEAN, std[3] = MD_IMAGENET_STD;
    for (int s = 0; s < shards; s++)
        for (int r = 0; r < counts[s]; r++) {
            uint8_t col[3];
            flat_colour(s, r, col);
            int bad = 0, dev = 0;
            for (int ch = 0; ch < 3 && !bad; ch++)
                for (int p = 0; p < SIZE * SIZE; p++) {
                    int v = (int)lrintf((x[ch * SIZE * SIZE + p] * std[ch] + mean[ch]) * 255.0f);
                    int d = abs(v - col[ch]);
                    if (d > 3) {
                        bad = 1;
                        break;
                    }
                    if (d > dev) dev = d;
                }
            if (!bad) {
                if (dev > *worst) *worst = dev;
                return s * 100 + r;
            }
        }
    return -1;
}

static void test_labels(void) {
    static const int counts[2] = {5, 7};
    for (int train = 0; train <= 1; train++) {
        md_source            *src = open_source("flat", "train", train);
        const md_source_info *in = md_source_describe(src);
        CHECK(in->n == 12 && in->c == 3 && in->h == SIZE && in->w == SIZE && in->classes == 3,
              "train split: n %d, %dx%dx%d, %d classes", in->n, in->c, in->h, in->w, in->classes);
        md_loader_config cfg = {
            .source = src, .batch = 5, .shuffle = train, .seed = 3, .world = 1, .threads = 2};
        md_loader *l = make_loader(&cfg);
        int        seen[2][7] = {{0}}, worst = 0, unknown = 0, wrong = 0, pos = 0;
        for (int b = 0; b < 3; b++) {
            const float   *x;
            const int32_t *y;
            int            rows, g;
            CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
            for (int i = 0; i < rows; i++, pos++) {
                int id = identify(x + (size_t)i * CHW, 2, counts, &worst);
                if (id < 0) {
                    unknown++;
                    continue;
                }
                int s = id / 100, r = id % 100;
                seen[s][r]++;
                wrong += y[i] != (r * 5 + s) % 3;
                if (!train) /* in order: sample pos is record pos - first[shard] */
                    wrong += pos != (s ? 5 + r : r);
            }
        }
        int twice = 0;
        for (int s = 0; s < 2; s++)
            for (int r = 0; r < counts[s]; r++)
                twice += seen[s][r] != 1;
        CHECK(unknown == 0 && wrong == 0 && twice == 0 && pos == 12,
              "%s: %d samples of unknown colour, %d with the wrong label or place, %d not seen "
              "exactly once, %d rows",
              train ? "train" : "centre crop", unknown, wrong, twice, pos);
        printf("flat %s: 12 samples, labels right, colour within %d/255\n",
               train ? "RandomResizedCrop" : "centre crop", worst);
        md_loader_destroy(l);
        md_source_destroy(src);
    }
    md_source            *v = open_source("flat", "search_val", 0);
    const md_source_info *vi = md_source_describe(v);
    CHECK(vi->n == 4 && strstr(vi->name, "search_val"), "search_val: n %d name %s", vi->n,
          vi->name);
    md_source_destroy(v);
    md_imagenet_config c = {.image_size = SIZE, .limit = 7};
    md_source         *s = NULL;
    CHECK_OK(md_source_imagenet(folder("flat"), "train", &c, &s));
    CHECK(s && md_source_describe(s)->n == 7, "limit 7: n %d", s ? md_source_describe(s)->n : -1);
    md_source_destroy(s);
}

/* ---- textured images: geometry, keys, ranks, threads, resume ------------------------------- */

static const float imean[3] = MD_IMAGENET_MEAN, istd[3] = MD_IMAGENET_STD;

/* Sample `pos` of the train split as the source should make it at epoch `epoch`
 * (shuffle off: position = sample), from the shard read here. */
static void expected_sample(int pos, long epoch, uint64_t seed, int train, float *x) {
    int  shard = pos < 5 ? 0 : 1, rec = pos < 5 ? pos : pos - 5;
    char path[256];
    snprintf(path, sizeof path, "%s/train-%05d.mds", folder("tex"), shard);
    md_shard *sh = NULL;
    CHECK_OK(md_shard_open(path, &sh));
    if (!sh) return;
    const uint8_t         *jpg;
    uint32_t               n;
    const md_shard_record *r = md_shard_record_at(sh, (uint32_t)rec);
    CHECK_OK(md_shard_image(sh, (uint32_t)rec, &jpg, &n));
    int     w = (int)r->width, h = (int)r->height, mirror = 0;
    md_crop c;
    if (train) {
        md_rng ep, rr;
        md_rng_seed(&ep, seed, (uint64_t)epoch);
        rr = md_rng_split(&ep, (uint64_t)pos + 1);
        md_rrc_params p = MD_RRC_DEFAULT;
        c = md_rrc_crop(w, h, &p, &rr);
        mirror = (int)(md_rng_u32(&rr) >> 31);
    } else {
        int side = w < h ? w : h;
        c = md_center_crop(w, h, (int)lround(side * 224.0 / 256.0));
    }
    md_jpeg_decoder *d = NULL;
    CHECK_OK(md_jpeg_decoder_create(&d));
    uint8_t rgb[SIZE * SIZE * 3];
    CHECK_OK(md_jpeg_decode_crop(d, jpg, n, c, SIZE, SIZE, mirror, rgb, "expected"));
    md_rgb_to_chw_normalized(rgb, SIZE, SIZE, imean, istd, x);
    md_jpeg_decoder_destroy(d);
    md_shard_close(sh);
}

static void test_geometry(void) {
    for (int train = 0; train <= 1; train++) {
        md_source       *src = open_source("tex", "train", train);
        md_loader_config cfg = {.source = src, .batch = 12, .seed = 5, .world = 1, .threads = 3};
        md_loader       *l = make_loader(&cfg);
        float           *want = malloc(CHW * sizeof(float));
        if (!want) fatal("malloc");
        for (long e = 0; e < 2; e++) {
            const float   *x;
            const int32_t *y;
            int            rows, g, same = 0;
            CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
            CHECK(rows == 12 && g == 12, "%d rows of %d", rows, g);
            for (int i = 0; i < rows; i++) {
                expected_sample(i, e, 5, train, want);
                same += memcmp(want, x + (size_t)i * CHW, CHW * sizeof(float)) == 0;
            }
            CHECK(same == 12,
                  "%s epoch %ld: %d of 12 samples as recomputed from (seed, epoch, "
                  "position)",
                  train ? "train" : "centre crop", e, same);
        }
        free(want);
        md_loader_destroy(l);
        md_source_destroy(src);
    }
    /* Training crops differ between epochs and from the centre crop. */
    md_source       *t = open_source("tex", "train", 1), *v = open_source("tex", "train", 0);
    md_loader_config ct = {.source = t, .batch = 12, .seed = 5, .world = 1};
    md_loader_config cv = ct;
    cv.source = v;
    md_loader     *lt = make_loader(&ct), *lv = make_loader(&cv);
    const float   *x0, *xv;
    const int32_t *y;
    int            rows, g;
    float         *e0 = malloc(12 * CHW * sizeof(float));
    if (!e0) fatal("malloc");
    CHECK_OK(md_loader_next(lt, &x0, &y, &rows, &g));
    memcpy(e0, x0, 12 * CHW * sizeof(float));
    CHECK_OK(md_loader_next(lt, &x0, &y, &rows, &g));
    CHECK_OK(md_loader_next(lv, &xv, &y, &rows, &g));
    int differ_epoch = 0, differ_val = 0;
    for (int i = 0; i < 12; i++) {
        differ_epoch += memcmp(e0 + i * CHW, x0 + i * CHW, CHW * sizeof(float)) != 0;
        differ_val += memcmp(e0 + i * CHW, xv + i * CHW, CHW * sizeof(float)) != 0;
    }
    CHECK(differ_epoch >= 10 && differ_val >= 10,
          "training crops: %d of 12 differ between epochs, %d from the centre crop", differ_epoch,
          differ_val);
    free(e0);
    md_loader_destroy(lt);
    md_loader_destroy(lv);
    md_source_destroy(t);
    md_source_destroy(v);
}

static void test_ranks_threads(void) {
    md_source       *src = open_source("tex", "train", 1);
    md_loader_config cfg = {
        .source = src, .batch = 5, .shuffle = 1, .seed = 8, .world = 1, .threads = 1};
    md_loader *one = make_loader(&cfg);
    cfg.threads = 3;
    md_loader *three = make_loader(&cfg);
    cfg.world = 2, cfg.threads = 2;
    md_loader *r0 = make_loader(&cfg);
    cfg.rank = 1, cfg.threads = 1, cfg.depth = 2;
    md_loader *r1 = make_loader(&cfg);
    float     *cat = malloc(5 * CHW * sizeof(float));
    if (!cat) fatal("malloc");
    int same_threads = 0, same_ranks = 0, batches = 8; /* 3 per epoch: into epoch 2 */
    for (int b = 0; b < batches; b++) {
        const float   *x1, *x3, *xa, *xb;
        const int32_t *y1, *y3, *ya, *yb;
        int            n1, n3, na, nb, g1, g3, ga, gb;
        CHECK_OK(md_loader_next(one, &x1, &y1, &n1, &g1));
        CHECK_OK(md_loader_next(three, &x3, &y3, &n3, &g3));
        CHECK_OK(md_loader_next(r0, &xa, &ya, &na, &ga));
        CHECK_OK(md_loader_next(r1, &xb, &yb, &nb, &gb));
        same_threads += n1 == n3 && memcmp(x1, x3, (size_t)n1 * CHW * sizeof(float)) == 0 &&
                        memcmp(y1, y3, (size_t)n1 * sizeof(int32_t)) == 0;
        int32_t ycat[5];
        if (na + nb == n1 && ga == g1 && gb == g1) {
            memcpy(cat, xa, (size_t)na * CHW * sizeof(float));
            memcpy(cat + (size_t)na * CHW, xb, (size_t)nb * CHW * sizeof(float));
            memcpy(ycat, ya, (size_t)na * sizeof(int32_t));
            memcpy(ycat + na, yb, (size_t)nb * sizeof(int32_t));
            same_ranks += memcmp(cat, x1, (size_t)n1 * CHW * sizeof(float)) == 0 &&
                          memcmp(ycat, y1, (size_t)n1 * sizeof(int32_t)) == 0;
        }
    }
    CHECK(same_threads == batches, "1 and 3 threads agree on %d of %d batches", same_threads,
          batches);
    CHECK(same_ranks == batches, "2 ranks concatenated equal 1 rank on %d of %d batches",
          same_ranks, batches);
    printf("ranks and threads: %d batches identical (1 vs 3 threads, 2 ranks vs 1)\n", batches);
    free(cat);
    md_loader_destroy(one);
    md_loader_destroy(three);
    md_loader_destroy(r0);
    md_loader_destroy(r1);
    md_source_destroy(src);
}

static void test_resume(void) {
    md_source       *src = open_source("tex", "train", 1);
    md_loader_config cfg = {.source = src,
                            .batch = 4,
                            .shuffle = 1,
                            .drop_last = 1,
                            .seed = 2,
                            .world = 1,
                            .threads = 3};
    md_loader       *a = make_loader(&cfg);
    enum { K = 9 }; /* 3 batches per epoch, three epochs */
    float  *rec = malloc((size_t)K * 4 * CHW * sizeof(float));
    int32_t ry[K][4];
    if (!rec) fatal("malloc");
    for (int k = 0; k < K; k++) {
        const float   *x;
        const int32_t *y;
        int            rows, g;
        CHECK_OK(md_loader_next(a, &x, &y, &rows, &g));
        memcpy(rec + (size_t)k * 4 * CHW, x, 4 * CHW * sizeof(float));
        memcpy(ry[k], y, sizeof ry[k]);
    }
    md_loader_destroy(a);
    /* A new loader (a resumed run) at epoch 1 batch 2, then seeks racing the workers. */
    md_loader *b = make_loader(&cfg);
    CHECK_OK(md_loader_seek(b, 1, 2));
    int same = 0, checks = 0;
    for (int k = 5; k < K; k++, checks++) {
        const float   *x;
        const int32_t *y;
        int            rows, g;
        CHECK_OK(md_loader_next(b, &x, &y, &rows, &g));
        same += memcmp(x, rec + (size_t)k * 4 * CHW, 4 * CHW * sizeof(float)) == 0 &&
                memcmp(y, ry[k], sizeof ry[k]) == 0;
    }
    for (int round = 0; round < 12; round++, checks++) {
        const float   *x;
        const int32_t *y;
        int            rows, g, k = (round * 5) % K;
        CHECK_OK(md_loader_seek(b, k / 3, k % 3));
        CHECK_OK(md_loader_next(b, &x, &y, &rows, &g));
        same += memcmp(x, rec + (size_t)k * 4 * CHW, 4 * CHW * sizeof(float)) == 0;
    }
    CHECK(same == checks, "after seeks, %d of %d batches as the first time", same, checks);
    long e;
    int  bt;
    md_loader_tell(b, &e, &bt);
    CHECK(e == 0 && bt == 2, "tell after the last seek (0, 1) and a batch: (%ld, %d)", e, bt);
    md_loader_destroy(b);
    free(rec);
    md_source_destroy(src);
}

/* ---- the ring's memory hook ------------------------------------------------------------------ */

typedef struct {
    int allocs, frees;
} counts_t;

static void *count_alloc(void *ctx, size_t bytes) {
    ((counts_t *)ctx)->allocs++;
    return malloc(bytes);
}

static void count_free(void *ctx, void *p) {
    ((counts_t *)ctx)->frees++;
    free(p);
}

static void test_mem_hook(void) {
    md_source       *src = open_source("tex", "search_val", 0);
    counts_t         n = {0, 0};
    md_loader_config cfg = {
        .source = src, .batch = 4, .world = 1, .depth = 4, .mem = {count_alloc, count_free, &n}};
    md_loader     *l = make_loader(&cfg);
    const float   *x;
    const int32_t *y;
    int            rows, g;
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    CHECK(rows == 4, "rows %d", rows);
    md_loader_destroy(l);
    CHECK(n.allocs == 8 && n.frees == 8, "a ring of 4: %d allocations, %d frees (want 8, 8)",
          n.allocs, n.frees);
    md_source_destroy(src);
}

/* ---- damage --------------------------------------------------------------------------------- */

static void copy_file(const char *from, const char *to, long flip_at) {
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    if (!f || !g) fatal("copy");
    int  c;
    long at = 0;
    while ((c = fgetc(f)) != EOF) {
        if (at++ == flip_at) c ^= 0x20;
        fputc(c, g);
    }
    fclose(f);
    if (fclose(g) != 0) fatal("copy");
}

static void test_corrupt(void) {
    /* "bad": tex with one byte of train-00001.mds record 3 flipped. */
    static const char *const files[] = {"classes.txt", "sources.tsv", "manifest.json",
                                        "train-00000.mds", "search_val-00000.mds"};
    char                     from[256], to[256];
    if (mkdir(folder("bad"), 0755) != 0) fatal("mkdir");
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(from, sizeof from, "%s/%s", folder("tex"), files[i]);
        snprintf(to, sizeof to, "%s/%s", folder("bad"), files[i]);
        copy_file(from, to, -1);
    }
    snprintf(from, sizeof from, "%s/train-00001.mds", folder("tex"));
    md_shard *sh = NULL;
    CHECK_OK(md_shard_open(from, &sh));
    if (!sh) return;
    const md_shard_record *r3 = md_shard_record_at(sh, 3);
    long                   at = (long)(r3->offset + r3->size / 2);
    md_shard_close(sh);
    snprintf(to, sizeof to, "%s/train-00001.mds", folder("bad"));
    copy_file(from, to, at);

    md_source       *src = open_source("bad", "train", 1); /* the index is intact */
    md_loader_config cfg = {.source = src, .batch = 4, .world = 1, .threads = 3};
    md_loader       *l = make_loader(&cfg);
    const float     *x;
    const int32_t   *y;
    int              rows, g;
    /* Samples 0-3, then 4-7 (5 + 3 = 8 is in the third batch). */
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    md_error_clear();
    md_status s = md_loader_next(l, &x, &y, &rows, &g);
    CHECK(s == MD_ERR_DATA, "the damaged record's batch: status %s", md_status_name(s));
    CHECK(message_has("train-00001.mds", "record 3") && message_has("img_train_1_3.JPEG", NULL),
          "message '%s' should name the shard, the record and the source file", md_error_message());
    printf("damaged image: %s\n", md_error_message());
    s = md_loader_next(l, &x, &y, &rows, &g);
    CHECK(s == MD_ERR_DATA && message_has("record 3", NULL),
          "the loader should stay at the "
          "failed batch: %s",
          md_error_message());
    long e;
    int  b;
    md_loader_tell(l, &e, &b);
    CHECK(e == 0 && b == 2, "tell after the failure: (%ld, %d)", e, b);
    md_loader_destroy(l);
    md_source_destroy(src);
}

static void expect_refused(const char *name, const char *split, const char *a, const char *b) {
    md_imagenet_config c = {.image_size = SIZE};
    md_source         *s = NULL;
    md_status          st = md_source_imagenet(folder(name), split, &c, &s);
    CHECK(st != MD_OK && s == NULL && message_has(a, b),
          "%s/%s: status %s, message '%s' should "
          "have '%s' and '%s'",
          name, split, md_status_name(st), md_error_message(), a, b ? b : "");
    if (s) md_source_destroy(s);
}

static void test_folders(void) {
    expect_refused("nothing", "train", "nothing", "classes.txt");
    expect_refused("tex", "val", "no val-NNNNN.mds", NULL);
    /* Unfinished: no manifest. */
    char p[256], q[256];
    snprintf(p, sizeof p, "%s/manifest.json", folder("tex"));
    snprintf(q, sizeof q, "%s/manifest.json.keep", folder("tex"));
    if (rename(p, q) != 0) fatal("rename");
    expect_refused("tex", "train", "no manifest.json", "did not finish");
    if (rename(q, p) != 0) fatal("rename");
    /* A shard the manifest lists is missing; one it does not list is there. */
    snprintf(p, sizeof p, "%s/train-00001.mds", folder("tex"));
    snprintf(q, sizeof q, "%s/train-00009.mds", folder("tex"));
    if (rename(p, q) != 0) fatal("rename");
    expect_refused("tex", "train", "lists shard train-00001.mds", "missing");
    if (rename(q, p) != 0) fatal("rename");
    /* A shard on disk that the manifest does not list. */
    snprintf(p, sizeof p, "%s/train-00000.mds", folder("tex"));
    snprintf(q, sizeof q, "%s/train-00002.mds", folder("tex"));
    if (link(p, q) != 0) fatal("link");
    expect_refused("tex", "train", "train-00002.mds is not listed", "manifest.json");
    unlink(q);
    /* A count that differs from the manifest's. */
    snprintf(p, sizeof p, "%s/manifest.json", folder("tex"));
    snprintf(q, sizeof q, "%s/manifest.json.keep", folder("tex"));
    if (rename(p, q) != 0) fatal("rename");
    write_text(folder("tex"), "manifest.json",
               "{\"splits\": {\"train\": {\"shards\": [{\"file\": \"train-00000.mds\", "
               "\"count\": 5}, {\"file\": \"train-00001.mds\", \"count\": 8}]}}}\n");
    expect_refused("tex", "train", "train-00001.mds holds 7 images", "says 8");
    if (rename(q, p) != 0) fatal("rename");
    /* Labels beyond classes.txt. */
    write_text(folder("flat"), "classes.txt", "n00000000\nn00000001\n");
    expect_refused("flat", "train", "label 2", "names 2 classes");
    write_text(folder("flat"), "classes.txt", "n00000000\n\nn00000001\n");
    expect_refused("flat", "train", "classes.txt: line 2 is empty", NULL);
    md_imagenet_config c = {.image_size = 4};
    md_source         *s = NULL;
    CHECK(md_source_imagenet(folder("tex"), "train", &c, &s) == MD_ERR_ARG &&
              message_has("--image-size 4", NULL),
          "image size 4 accepted: '%s'", md_error_message());
    c = (md_imagenet_config){.image_size = SIZE, .scale_lo = 0.5, .scale_hi = 0.2};
    CHECK(md_source_imagenet(folder("tex"), "train", &c, &s) == MD_ERR_ARG &&
              message_has("--crop-scale", NULL),
          "crop scale 0.5,0.2 accepted: '%s'", md_error_message());
}

static void remove_tree(const char *name) {
    static const char *const files[] = {"classes.txt",     "sources.tsv",
                                        "manifest.json",   "train-00000.mds",
                                        "train-00001.mds", "search_val-00000.mds"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", folder(name), files[i]);
        unlink(p);
    }
    rmdir(folder(name));
}

int main(void) {
    if (!mkdtemp(scratch)) fatal("mkdtemp in the working directory");
    write_folder("flat", 1);
    write_folder("tex", 0);
    test_labels();
    test_geometry();
    test_ranks_threads();
    test_resume();
    test_mem_hook();
    test_corrupt();
    test_folders();
    remove_tree("flat");
    remove_tree("tex");
    remove_tree("bad");
    if (rmdir(scratch) != 0)
        fprintf(stderr, "test_imagenet_source: could not remove %s\n", scratch);
    return md_test_finish("test_imagenet_source");
}
