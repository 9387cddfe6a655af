/* In-memory datasets held on the backend (src/train/devdata.c, the loader's
 * device mode, md_backend_augment_u8): bound to the CPU backend, the device
 * mode's batches are the host loader's bit for bit (order, crops, flips,
 * cutouts, rank slices, the partial last batch, drop_last, seek/tell); the op's
 * argument checks; the CUDA kernel's split of a sample over a block's threads
 * (src/data/augment_inline.h's md_aug_pixels), run on the host. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend_impl.h"
#include "data/augment_inline.h"
#include "mdenas/data.h"
#include "testutil.h"
#include "train/devdata.h"

static int has(const char *a, const char *b) {
    const char *m = md_error_message();
    return strstr(m, a) && (!b || strstr(m, b));
}

/* The host loader and the device-mode loader of cfg side by side for `steps`
 * batches; then both seek to (seek_epoch, seek_batch) and compare `steps`
 * more. Returns the number of batches compared with a partial global batch. */
static int compare(md_devset *set, const md_loader_config *cfg, int steps,
                   long seek_epoch, int seek_batch, const char *what) {
    md_loader  *host = NULL, *dev = NULL;
    md_devdata *dd = NULL;
    int         partial = 0;
    size_t      chw = (size_t)cfg->ds->c * cfg->ds->h * cfg->ds->w;
    CHECK_OK(md_loader_create(cfg, &host));
    CHECK_OK(md_devdata_create(set, cfg->n, cfg->batch / cfg->world + 1, cfg->aug, &dd));
    md_loader_config dc = *cfg;
    if (dd) dc.device = md_devdata_callbacks(dd);
    CHECK_OK(md_loader_create(&dc, &dev));
    if (!host || !dev || !dd) goto out;
    CHECK(md_loader_on_device(dev) == 1 && md_loader_on_device(host) == 0, "%s: modes", what);
    CHECK(md_loader_batches(dev) == md_loader_batches(host), "%s: %d batches, host %d", what,
          md_loader_batches(dev), md_loader_batches(host));
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            CHECK_OK(md_loader_seek(host, seek_epoch, seek_batch));
            CHECK_OK(md_loader_seek(dev, seek_epoch, seek_batch));
        }
        for (int k = 0; k < steps; k++) {
            const float   *xh, *xd;
            const int32_t *yh, *yd;
            int            rh, rd, gh, gd;
            long           eh, ed;
            int            bh, bd;
            md_loader_tell(host, &eh, &bh);
            md_loader_tell(dev, &ed, &bd);
            CHECK(eh == ed && bh == bd, "%s: at (%ld, %d), host at (%ld, %d)", what, ed, bd, eh,
                  bh);
            CHECK_OK(md_loader_next(host, &xh, &yh, &rh, &gh));
            CHECK_OK(md_loader_next(dev, &xd, &yd, &rd, &gd));
            CHECK(rh == rd && gh == gd, "%s: batch %d: %d of %d rows, host %d of %d", what, k, rd,
                  gd, rh, gh);
            if (rh != rd) break;
            if (gh < cfg->batch) partial++;
            CHECK(memcmp(xh, xd, (size_t)rh * chw * sizeof(float)) == 0,
                  "%s: batch %d (epoch %ld, batch %d): the images differ", what, k, eh, bh);
            CHECK(memcmp(yh, yd, (size_t)rh * sizeof(int32_t)) == 0, "%s: batch %d: labels", what,
                  k);
            CHECK(memcmp(md_loader_labels_host(dev), yh, (size_t)rh * sizeof(int32_t)) == 0,
                  "%s: batch %d: host labels", what, k);
        }
    }
out:
    md_loader_destroy(dev);
    md_loader_destroy(host);
    md_devdata_destroy(dd);
    return partial;
}

/* Fashion-MNIST's shape (1x28x28) and a CIFAR-like 3x20x20 set; a seeded subset
 * of indices as the search uses; every augmentation; ranks; drop_last. */
static void test_equal(md_backend **be) {
    md_dataset fm, cf;
    CHECK_OK(md_dataset_synthetic(1000, 1, 28, 28, 10, 5, &fm));
    CHECK_OK(md_dataset_synthetic(300, 3, 20, 20, 10, 6, &cf));
    if (!fm.images || !cf.images) return;
    md_devset *sf = NULL, *sc = NULL;
    CHECK_OK(md_devset_create(be, &fm, &sf));
    CHECK_OK(md_devset_create(be, &cf, &sc));
    int *tr = NULL, *va = NULL, nt = 0, nv = 0;
    CHECK_OK(md_dataset_split(fm.n, 0.3, 11, &tr, &nt, &va, &nv));
    if (!sf || !sc || !tr) goto out;
    const md_augment augs[4] = {{0, 0, 0}, {2, 1, 0}, {4, 1, 8}, {0, 1, 5}};
    /* nt = 700, batch 96: 7 full batches and one of 28 (no drop_last). */
    for (int a = 0; a < 4; a++)
        for (int world = 1; world <= 2; world++)
            for (int rank = 0; rank < world; rank++)
                for (int drop = 0; drop <= 1; drop++) {
                    md_loader_config c = {.ds = &fm, .idx = tr, .n = nt, .batch = 96,
                                          .shuffle = 1, .drop_last = drop, .aug = augs[a],
                                          .seed = 3, .rank = rank, .world = world,
                                          .threads = 2};
                    char what[96];
                    snprintf(what, sizeof what, "fashion-like aug %d world %d rank %d drop %d", a,
                             world, rank, drop);
                    /* 3 epochs and a bit (8 or 7 batches each), then mid-epoch 2 */
                    int partial = compare(sf, &c, drop ? 23 : 26, 2, 4, what);
                    CHECK(drop ? partial == 0 : partial >= 3, "%s: %d partial batches", what,
                          partial);
                }
    /* The validation loader's use: in order, no augmentation, odd world. */
    md_loader_config v = {.ds = &fm, .idx = va, .n = nv, .batch = 64, .seed = 3, .world = 3,
                          .rank = 2};
    CHECK(compare(sf, &v, 12, 0, 5, "validation-like") >= 2, "validation: no partial batch");
    /* Three channels (per-channel table), every sample in order of the set. */
    int idx[300];
    for (int i = 0; i < 300; i++)
        idx[i] = (i * 7) % 300;
    md_loader_config c3 = {.ds = &cf, .idx = idx, .n = 300, .batch = 32, .shuffle = 1,
                           .aug = {3, 1, 6}, .seed = 8, .world = 2, .rank = 1};
    CHECK(compare(sc, &c3, 25, 1, 10, "3 channels") >= 2, "3 channels: no partial batch");
    /* The end of an epoch is the start of the next. */
    compare(sc, &c3, 3, 0, 10, "seek to the end of epoch 0");
out:
    free(tr);
    free(va);
    md_devset_destroy(sf);
    md_devset_destroy(sc);
    md_dataset_free(&fm);
    md_dataset_free(&cf);
}

/* The device mode's batches are not just the host loader's: also what the
 * augmentation means (an independent check of one sample). With crop 0, flip
 * 0, cutout 0 the device batch is the normalised bytes in epoch order. */
static void test_plain(md_backend **be) {
    md_dataset ds;
    CHECK_OK(md_dataset_synthetic(40, 1, 6, 6, 4, 2, &ds));
    if (!ds.images) return;
    int idx[40];
    for (int i = 0; i < 40; i++)
        idx[i] = 39 - i;
    md_devset  *set = NULL;
    md_devdata *dd = NULL;
    md_loader  *l = NULL;
    CHECK_OK(md_devset_create(be, &ds, &set));
    if (set) CHECK_OK(md_devdata_create(set, 40, 16, (md_augment){0, 0, 0}, &dd));
    if (!dd) goto out;
    md_loader_config c = {.ds = &ds, .idx = idx, .n = 40, .batch = 16, .seed = 1, .world = 1,
                          .device = md_devdata_callbacks(dd)};
    CHECK_OK(md_loader_create(&c, &l));
    if (!l) goto out;
    const float   *x;
    const int32_t *y;
    int            rows, g;
    CHECK_OK(md_loader_seek(l, 0, 2)); /* the last, partial batch: positions 32..39 */
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    CHECK(rows == 8 && g == 8, "last batch: %d of %d rows", rows, g);
    for (int i = 0; i < rows && i < 8; i++) {
        int src = idx[32 + i], bad = 0;
        for (int p = 0; p < 36; p++) {
            float want = (float)((ds.images[src * 36 + p] / 255.0 - ds.mean[0]) / ds.std[0]);
            bad += x[i * 36 + p] != want;
        }
        CHECK(bad == 0 && y[i] == ds.labels[src], "row %d: %d pixels differ, label %d want %d", i,
              bad, y[i], ds.labels[src]);
    }
    long e;
    int  b;
    md_loader_tell(l, &e, &b);
    CHECK(e == 1 && b == 0, "after the last batch: (%ld, %d)", e, b);
out:
    md_loader_destroy(l);
    md_devdata_destroy(dd);
    md_devset_destroy(set);
    md_dataset_free(&ds);
}

/* A failing batch callback: the loader stays at that batch and the error is
 * the callback's; the next call makes it. */
typedef struct {
    const md_loader_device *inner;
    int                     fail_next;
} flaky;
static md_status flaky_epoch(void *ctx, const int32_t *order, int n) {
    flaky *f = ctx;
    return f->inner->epoch(f->inner->ctx, order, n);
}
static md_status flaky_batch(void *ctx, long j0, int rows, uint64_t key, const float **x,
                             const int32_t **y) {
    flaky *f = ctx;
    if (f->fail_next) {
        f->fail_next = 0;
        return md_fail(MD_ERR_BACKEND, "flaky: batch at %ld fails", j0);
    }
    return f->inner->batch(f->inner->ctx, j0, rows, key, x, y);
}

static void test_loader_device_errors(md_backend **be) {
    md_dataset ds;
    CHECK_OK(md_dataset_synthetic(50, 1, 8, 8, 3, 4, &ds));
    if (!ds.images) return;
    int idx[50];
    for (int i = 0; i < 50; i++)
        idx[i] = i;
    md_devset  *set = NULL;
    md_devdata *dd = NULL;
    md_loader  *l = NULL, *h = NULL;
    CHECK_OK(md_devset_create(be, &ds, &set));
    if (set) CHECK_OK(md_devdata_create(set, 50, 10, (md_augment){1, 1, 2}, &dd));
    if (!dd) goto out;
    flaky            f = {md_devdata_callbacks(dd), 0};
    md_loader_device cb = {.ctx = &f, .epoch = flaky_epoch, .batch = flaky_batch};
    md_loader_config c = {.ds = &ds, .idx = idx, .n = 50, .batch = 10, .shuffle = 1, .seed = 2,
                          .world = 1, .aug = {1, 1, 2}, .device = &cb};
    /* device mode needs both callbacks and an in-memory dataset */
    md_loader_device half = {.ctx = &f, .epoch = flaky_epoch};
    md_loader_config bad = c;
    bad.device = &half;
    CHECK(md_loader_create(&bad, &l) == MD_ERR_ARG && !l && has("device mode", "callbacks"),
          "a device mode without a batch callback: %s", md_error_message());
    CHECK_OK(md_loader_create(&c, &l));
    md_loader_config hc = c;
    hc.device = NULL;
    CHECK_OK(md_loader_create(&hc, &h));
    if (!l || !h) goto out;
    const float   *x, *xh;
    const int32_t *y, *yh;
    int            rows, g;
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    CHECK_OK(md_loader_next(h, &xh, &yh, &rows, &g));
    f.fail_next = 1;
    CHECK(md_loader_next(l, &x, &y, &rows, &g) == MD_ERR_BACKEND && has("flaky", "at 10"),
          "the callback's error: %s", md_error_message());
    long e;
    int  b;
    md_loader_tell(l, &e, &b);
    CHECK(e == 0 && b == 1, "after a failed batch the loader is at (%ld, %d), not (0, 1)", e, b);
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    CHECK_OK(md_loader_next(h, &xh, &yh, &rows, &g));
    CHECK(memcmp(x, xh, (size_t)rows * 64 * sizeof(float)) == 0, "batch 1 after the retry");
    CHECK(md_loader_wait_s(l) == 0.0, "device mode waits for nothing");
    /* a loader over another number of samples than the device side holds */
    md_loader_config other = c;
    other.n = 40, other.device = md_devdata_callbacks(dd);
    md_loader *o = NULL;
    CHECK_OK(md_loader_create(&other, &o));
    if (o)
        CHECK(md_loader_next(o, &x, &y, &rows, &g) == MD_ERR_ARG &&
                  has("order of 40 positions", "made for 50"),
              "a wrong order length: %s", md_error_message());
    md_loader_destroy(o);
out:
    md_loader_destroy(l);
    md_loader_destroy(h);
    md_devdata_destroy(dd);
    md_devset_destroy(set);
    md_dataset_free(&ds);
}

/* md_backend_augment_u8's checks, and a backend without the op. */
static void test_op_checks(md_backend *be) {
    uint8_t     img[2 * 16];
    int32_t     lab[2] = {1, 0}, ord[2] = {1, 0}, y[2] = {-1, -1};
    float       lut[256], x[2 * 16];
    for (int i = 0; i < 32; i++)
        img[i] = (uint8_t)(i * 9);
    for (int v = 0; v < 256; v++)
        lut[v] = (float)v - 100.0f;
    md_u8_batch ok = {.images = img, .labels = lab, .lut = lut, .order = ord, .n_images = 2,
                      .c = 1, .h = 4, .w = 4, .n = 2, .j0 = 0, .rows = 2, .epoch_key = 77,
                      .x = x, .y = y};
    CHECK(md_backend_has_augment_u8(be) == 1, "the CPU backend has augment_u8");
    CHECK_OK(md_backend_augment_u8(be, &ok));
    /* no augmentation: row i is image order[i] through the table */
    int bad = 0;
    for (int i = 0; i < 2; i++)
        for (int p = 0; p < 16; p++)
            bad += x[i * 16 + p] != (float)img[ord[i] * 16 + p] - 100.0f;
    CHECK(bad == 0 && y[0] == 0 && y[1] == 1, "plain batch: %d values differ, labels %d %d", bad,
          y[0], y[1]);
    md_u8_batch b = ok;
    b.rows = -1;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("augment_u8", "rows [0, -1)"),
          "rows -1: %s", md_error_message());
    b = ok, b.j0 = 1, b.rows = 2;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("rows [1, 3)", "of 2 positions"),
          "j0 + rows beyond n: %s", md_error_message());
    b = ok, b.j0 = -1;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("augment_u8", "[-1, 1)"),
          "j0 -1: %s", md_error_message());
    b = ok, b.lut = NULL;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("augment_u8", "lut is NULL"),
          "NULL lut: %s", md_error_message());
    b = ok, b.x = NULL;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("augment_u8", "x is NULL"),
          "NULL x: %s", md_error_message());
    CHECK(md_backend_augment_u8(be, NULL) == MD_ERR_ARG && has("augment_u8", "no batch"),
          "NULL batch: %s", md_error_message());
    b = ok, b.c = 4;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("4x4x4", "1..3 channels"),
          "4 channels: %s", md_error_message());
    b = ok, b.cutout = 5000;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("cutout 5000", NULL),
          "cutout 5000: %s", md_error_message());
    b = ok, b.flip = 2;
    CHECK(md_backend_augment_u8(be, &b) == MD_ERR_ARG && has("flip 2", NULL), "flip 2: %s",
          md_error_message());
    /* rows 0 (a rank's empty slice) writes nothing */
    y[0] = y[1] = -7;
    b = ok, b.j0 = 2, b.rows = 0;
    CHECK(md_backend_augment_u8(be, &b) == MD_OK && y[0] == -7, "rows 0: %s",
          md_error_message());
    /* a backend whose table has no augment_u8 (the CUDA backend until it is bound) */
    const md_backend_vtable *vt = be->vt;
    md_backend_vtable        none = *vt;
    none.augment_u8 = NULL;
    be->vt = &none;
    CHECK(md_backend_has_augment_u8(be) == 0, "has_augment_u8 without the entry");
    CHECK(md_backend_augment_u8(be, &ok) == MD_ERR_BACKEND &&
              has("the cpu backend has no batch op", "--device-data off"),
          "no entry: %s", md_error_message());
    md_devset *set = NULL;
    md_dataset ds;
    CHECK_OK(md_dataset_synthetic(4, 1, 4, 4, 2, 1, &ds));
    CHECK(md_devset_create(&be, &ds, &set) == MD_ERR_BACKEND && !set && has("augment_u8", NULL),
          "a device set on a backend without the op: %s", md_error_message());
    md_dataset_free(&ds);
    be->vt = vt;
}

/* The CUDA kernel's work split (cuda_data.cu: thread t of a block of T writes
 * pixels t, t + T, ...), run here: for any T the union is the whole sample,
 * bit for bit, and a pixel is written by its own thread only. */
static void test_kernel_split(void) {
    md_dataset ds;
    CHECK_OK(md_dataset_synthetic(3, 3, 9, 7, 2, 3, &ds));
    if (!ds.images) return;
    float lut[3 * 256];
    md_dataset_lut(&ds, lut);
    enum { CHW = 3 * 9 * 7 };
    float want[CHW], got[CHW];
    const int threads[4] = {1, 5, 64, 256};
    for (int s = 0; s < 3; s++) {
        for (long j = 0; j < 6; j++) {
            uint64_t key = md_aug_sample_key(0x1234567ull + (uint64_t)s, j);
            md_rng   r = md_rng_at_key(key);
            md_aug_image(ds.images + s * CHW, lut, 3, 9, 7, 3, 1, 4, &r, want);
            for (int k = 0; k < 4; k++) {
                for (int p = 0; p < CHW; p++)
                    got[p] = 1e30f;
                md_rng      r2 = md_rng_at_key(key);
                md_aug_draw d = md_aug_draws(&r2, 3, 1, 4, 9, 7);
                for (int t = 0; t < threads[k]; t++)
                    md_aug_pixels(ds.images + s * CHW, lut, 3, 9, 7, &d, t, threads[k], got);
                CHECK(memcmp(want, got, sizeof want) == 0, "sample %d j %ld: %d threads", s, j,
                      threads[k]);
            }
        }
    }
    /* The key is the loader's: child j + 1 of the epoch stream. */
    md_rng ep, child;
    md_rng_seed(&ep, 5, 2);
    child = md_rng_split(&ep, 8);
    CHECK(md_aug_sample_key(ep.key, 7) == child.key, "sample key of position 7");
    md_dataset_free(&ds);
}

int main(void) {
    md_backend *be = NULL;
    CHECK_OK(md_backend_cpu_create(2, &be));
    if (!be) return md_test_finish("test_devdata");
    test_op_checks(be);
    test_kernel_split();
    test_plain(&be);
    test_loader_device_errors(&be);
    test_equal(&be);
    md_backend_destroy(be);
    return md_test_finish("test_devdata");
}
