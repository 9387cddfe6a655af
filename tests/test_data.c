/* Datasets and the loader: the real Fashion-MNIST files, crafted IDX and
 * CIFAR-10 files (good and broken), the synthetic set, the train/validation
 * split, and the loader's epoch coverage, rank slicing, determinism, resume,
 * normalisation and augmentation. Scratch files go to a directory made in the
 * working directory (the build directory under CTest) and are removed. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "mdenas/data.h"
#include "testutil.h"

static char scratch[64] = "test_data_XXXXXX";

static void remove_scratch(void);

static void fatal(const char *what) {
    fprintf(stderr, "test_data: %s: %s\n", what, strerror(errno));
    remove_scratch();
    exit(2);
}

static const char *path_in(const char *sub, const char *name) {
    static char buf[4][512];
    static int  k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s%s%s", scratch, sub, *name ? "/" : "", name);
    return buf[k];
}

static void make_dir(const char *sub) {
    if (mkdir(path_in(sub, ""), 0755) != 0) fatal("mkdir in the scratch directory");
}

static void write_file(const char *path, const void *data, size_t len, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb1");
        if (!f || (len && gzwrite(f, data, (unsigned)len) != (int)len) || gzclose(f) != Z_OK)
            fatal("writing a gz file");
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) fatal("writing a file");
}

static int message_has(const char *a, const char *b) {
    const char *m = md_error_message();
    return strstr(m, a) != NULL && (!b || strstr(m, b) != NULL);
}

/* ---- Fashion-MNIST ---------------------------------------------------------------- */

/* Reference values read independently with Python from the Debian package's files:
 *   python3 -c "import gzip; l = gzip.open('train-labels-idx1-ubyte.gz').read();
 *               print(list(l[8:28]))"
 * and likewise for t10k and for the images (offset 16 + i*784, row 14 of image 0,
 * the byte sum of image 1, the mean of all bytes / 255). */
static const int32_t fm_train_labels[20] = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5,
                                            0, 9, 5, 5, 7, 9, 1, 0, 6, 4};
static const int32_t fm_test_labels[20] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7,
                                           4, 5, 7, 3, 4, 1, 2, 4, 8, 0};
static const uint8_t fm_train_row14[28] = {0,   0,   1,   4,   6,   7,   2,   0,   0,   0,
                                           0,   0,   237, 226, 217, 223, 222, 219, 222, 221,
                                           216, 223, 229, 215, 218, 255, 77,  0};
static const uint8_t fm_test_row14[28] = {0,   0,   0,   0,   0,   0,   2,   4,   1,   0,
                                          0,   0,   98,  136, 110, 109, 110, 162, 135, 144,
                                          149, 159, 167, 144, 158, 169, 119, 0};

static void check_fashion(int train) {
    md_dataset ds;
    md_status  s = md_dataset_fashion_mnist(MD_FASHION_MNIST_DIR, train, &ds);
    CHECK(s == MD_OK, "loading %s Fashion-MNIST from %s: %s", train ? "train" : "test",
          MD_FASHION_MNIST_DIR, md_error_message());
    if (s != MD_OK) return;
    int want_n = train ? 60000 : 10000;
    CHECK(ds.n == want_n && ds.c == 1 && ds.h == 28 && ds.w == 28 && ds.classes == 10,
          "shape n=%d c=%d h=%d w=%d classes=%d", ds.n, ds.c, ds.h, ds.w, ds.classes);
    CHECK(strcmp(ds.name, "fashion-mnist") == 0, "name '%s'", ds.name);
    const int32_t *labels = train ? fm_train_labels : fm_test_labels;
    for (int i = 0; i < 20; i++)
        CHECK(ds.labels[i] == labels[i], "label %d: %d, want %d", i, ds.labels[i], labels[i]);
    const uint8_t *row = train ? fm_train_row14 : fm_test_row14;
    CHECK(memcmp(ds.images + 14 * 28, row, 28) == 0, "row 14 of image 0 differs");
    long sum1 = 0, hist[10] = {0};
    for (int i = 0; i < 784; i++)
        sum1 += ds.images[784 + i];
    CHECK(sum1 == (train ? 84598 : 100994), "byte sum of image 1: %ld", sum1);
    double total = 0.0;
    for (size_t i = 0; i < (size_t)ds.n * 784; i++)
        total += ds.images[i];
    double mean = total / ((double)ds.n * 784) / 255.0;
    CHECK(fabs(mean - (train ? 0.2860406 : 0.2868493)) < 1e-6, "pixel mean %.7f", mean);
    for (int i = 0; i < ds.n; i++)
        hist[ds.labels[i]]++;
    for (int k = 0; k < 10; k++) /* both sets are balanced */
        CHECK(hist[k] == ds.n / 10, "class %d has %ld samples", k, hist[k]);
    CHECK(ds.mean[0] == 0.2860f && ds.std[0] == 0.3530f, "mean %g std %g", ds.mean[0], ds.std[0]);
    md_dataset_free(&ds);
    CHECK(ds.images == NULL && ds.labels == NULL && ds.n == 0, "free must clear the dataset");
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A t10k pair in scratch/sub: n images of rows x cols (pixel = 3*i + j), n_labels labels. */
static void write_idx(const char *sub, uint32_t img_magic, int n, int rows, int cols, int n_labels,
                      int bad_label_at, int trailing) {
    make_dir(sub);
    size_t   len = 16 + (size_t)n * rows * cols + (size_t)trailing;
    uint8_t *b = calloc(len, 1);
    if (!b) fatal("calloc");
    be32(b, img_magic), be32(b + 4, (uint32_t)n), be32(b + 8, (uint32_t)rows);
    be32(b + 12, (uint32_t)cols);
    for (size_t j = 16; j < len; j++)
        b[j] = (uint8_t)(3 * ((j - 16) / 784) + (j - 16) % 784);
    write_file(path_in(sub, "t10k-images-idx3-ubyte.gz"), b, len, 1);
    uint8_t lb[8 + 16] = {0};
    be32(lb, 2049), be32(lb + 4, (uint32_t)n_labels);
    for (int i = 0; i < n_labels; i++)
        lb[8 + i] = (uint8_t)(i == bad_label_at ? 10 : 7 - i);
    write_file(path_in(sub, "t10k-labels-idx1-ubyte.gz"), lb, 8 + (size_t)n_labels, 1);
    free(b);
}

/* Expect failure `want` with a message naming the file and the problem. */
static void expect_fashion_fail(const char *sub, md_status want, const char *file,
                                const char *problem) {
    md_dataset ds;
    md_status  s = md_dataset_fashion_mnist(path_in(sub, ""), 0, &ds);
    CHECK(s == want, "%s: status %s, want %s (%s)", sub, md_status_name(s), md_status_name(want),
          md_error_message());
    CHECK(message_has(path_in(sub, file), problem), "%s: message '%s' should name %s and '%s'", sub,
          md_error_message(), file, problem);
    CHECK(ds.images == NULL && ds.labels == NULL, "%s: failed load left data behind", sub);
    if (s == MD_OK) md_dataset_free(&ds);
}

static void test_fashion_files(void) {
    const char *img = "t10k-images-idx3-ubyte.gz", *lab = "t10k-labels-idx1-ubyte.gz";
    /* A well-formed pair of 3 images loads byte for byte. */
    write_idx("fm_ok", 2051, 3, 28, 28, 3, -1, 0);
    md_dataset ds;
    CHECK_OK(md_dataset_fashion_mnist(path_in("fm_ok", ""), 0, &ds));
    if (ds.images) {
        CHECK(ds.n == 3 && ds.labels[0] == 7 && ds.labels[2] == 5, "n %d labels %d %d", ds.n,
              ds.labels[0], ds.labels[2]);
        CHECK(ds.images[0] == 0 && ds.images[783] == 783 % 256 && ds.images[784] == 3 &&
                  ds.images[2 * 784 + 10] == 16,
              "pixels %d %d %d %d", ds.images[0], ds.images[783], ds.images[784],
              ds.images[2 * 784 + 10]);
        md_dataset_free(&ds);
    }
    expect_fashion_fail("missing", MD_ERR_IO, "", "apt-get install dataset-fashion-mnist");
    CHECK(message_has("missing/t10k-images-idx3-ubyte.gz", "dataset-fashion-mnist"), "message '%s'",
          md_error_message());
    write_idx("fm_magic", 2049, 3, 28, 28, 3, -1, 0);
    expect_fashion_fail("fm_magic", MD_ERR_DATA, img, "magic");
    write_idx("fm_dims", 2051, 3, 27, 28, 3, -1, 0);
    expect_fashion_fail("fm_dims", MD_ERR_DATA, img, "27x28");
    write_idx("fm_count", 2051, 3, 28, 28, 2, -1, 0);
    expect_fashion_fail("fm_count", MD_ERR_DATA, lab, "2 labels");
    write_idx("fm_label", 2051, 3, 28, 28, 3, 1, 0);
    expect_fashion_fail("fm_label", MD_ERR_DATA, lab, "label 10 of item 1");
    write_idx("fm_trail", 2051, 3, 28, 28, 3, -1, 5);
    expect_fashion_fail("fm_trail", MD_ERR_DATA, img, "trailing");
    /* The header promises 3 images, the file holds 2.5: an intact gzip stream too short. */
    make_dir("fm_short");
    write_idx("fm_short2", 2051, 3, 28, 28, 3, -1, 0);
    uint8_t hdr[16 + 2 * 784 + 392] = {0};
    be32(hdr, 2051), be32(hdr + 4, 3), be32(hdr + 8, 28), be32(hdr + 12, 28);
    write_file(path_in("fm_short", img), hdr, sizeof hdr, 1);
    rename(path_in("fm_short2", lab), path_in("fm_short", lab));
    expect_fashion_fail("fm_short", MD_ERR_DATA, img, "truncated");
    /* Found by tests/fuzz/fuzz_idx: a header claiming 2 739 137 images (the most the
     * reader takes, 2 GiB) in a file of one image is refused before allocating,
     * with the count and the size in human units; gzip or plain. */
    for (int gz = 0; gz <= 1; gz++) {
        const char *sub = gz ? "fm_huge_gz" : "fm_huge";
        make_dir(sub);
        uint8_t big[16 + 784] = {0}, bl[8 + 1] = {0};
        be32(big, 2051), be32(big + 4, 2739137), be32(big + 8, 28), be32(big + 12, 28);
        be32(bl, 2049), be32(bl + 4, 2739137);
        write_file(path_in(sub, img), big, sizeof big, gz);
        write_file(path_in(sub, lab), bl, sizeof bl, gz);
        expect_fashion_fail(sub, MD_ERR_DATA, lab, "2739137 labels");
    }
    {
        /* With labels that fit, the images file is the one refused. */
        make_dir("fm_huge_img");
        uint8_t big[16 + 784] = {0};
        be32(big, 2051), be32(big + 4, 2739137), be32(big + 8, 28), be32(big + 12, 28);
        write_file(path_in("fm_huge_img", img), big, sizeof big, 1);
        uint8_t *bl = calloc(8 + 2739137, 1);
        if (!bl) fatal("calloc");
        be32(bl, 2049), be32(bl + 4, 2739137);
        write_file(path_in("fm_huge_img", lab), bl, 8 + 2739137, 1);
        free(bl);
        expect_fashion_fail("fm_huge_img", MD_ERR_DATA, img, "2739137 images");
        CHECK(message_has("2.0 GiB", NULL), "message '%s' lacks the size", md_error_message());
    }
    /* A gzip file of two members (gzip's ISIZE then covers only the last): read through
     * once to check its size, rewound, loaded. */
    write_idx("fm_members", 2051, 3, 28, 28, 3, -1, 0);
    {
        uint8_t two[16 + 3 * 784] = {0};
        be32(two, 2051), be32(two + 4, 3), be32(two + 8, 28), be32(two + 12, 28);
        for (size_t j = 16; j < sizeof two; j++)
            two[j] = (uint8_t)(3 * ((j - 16) / 784) + (j - 16) % 784);
        gzFile g = gzopen(path_in("fm_members", img), "wb1");
        if (!g || gzwrite(g, two, 1000) != 1000 || gzclose(g) != Z_OK) fatal("gz member 1");
        g = gzopen(path_in("fm_members", img), "ab1");
        if (!g || gzwrite(g, two + 1000, sizeof two - 1000) != (int)(sizeof two - 1000) ||
            gzclose(g) != Z_OK)
            fatal("gz member 2");
        CHECK_OK(md_dataset_fashion_mnist(path_in("fm_members", ""), 0, &ds));
        if (ds.images) {
            CHECK(ds.n == 3 && ds.images[2 * 784 + 10] == 16, "two members: n %d", ds.n);
            md_dataset_free(&ds);
        }
    }
    /* The real test images cut off in the middle of the compressed stream. */
    make_dir("fm_cut");
    FILE   *f = fopen(MD_FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz", "rb");
    uint8_t part[100000];
    if (f && fread(part, 1, sizeof part, f) == sizeof part) {
        write_file(path_in("fm_cut", img), part, sizeof part, 0);
        FILE  *g = fopen(MD_FASHION_MNIST_DIR "/t10k-labels-idx1-ubyte.gz", "rb");
        size_t got = g ? fread(part, 1, sizeof part, g) : 0;
        write_file(path_in("fm_cut", lab), part, got, 0);
        if (g) fclose(g);
        expect_fashion_fail("fm_cut", MD_ERR_DATA, img, "truncated");
    } else {
        CHECK(0, "cannot read %s/t10k-images-idx3-ubyte.gz", MD_FASHION_MNIST_DIR);
    }
    if (f) fclose(f);
}

/* ---- CIFAR-10 --------------------------------------------------------------------- */

#define CIFAR_REC 3073

static uint8_t cifar_pixel(int i, int c, int y, int x) {
    return (uint8_t)(i * 7 + c * 50 + y * 3 + x);
}

static void expect_cifar_fail(const char *sub, int train, md_status want, const char *file,
                              const char *problem) {
    md_dataset ds;
    md_status  s = md_dataset_cifar10(path_in(sub, ""), train, &ds);
    CHECK(s == want, "%s: status %s, want %s (%s)", sub, md_status_name(s), md_status_name(want),
          md_error_message());
    CHECK(message_has(path_in(sub, file), problem), "%s: message '%s' should name %s and '%s'", sub,
          md_error_message(), file, problem);
    CHECK(ds.images == NULL, "%s: failed load left data behind", sub);
    if (s == MD_OK) md_dataset_free(&ds);
}

static void test_cifar(void) {
    size_t   len = (size_t)10000 * CIFAR_REC;
    uint8_t *b = malloc(len);
    if (!b) fatal("malloc");
    for (int i = 0; i < 10000; i++) {
        uint8_t *r = b + (size_t)i * CIFAR_REC;
        r[0] = (uint8_t)(i % 10);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    r[1 + c * 1024 + y * 32 + x] = cifar_pixel(i, c, y, x);
    }
    make_dir("cifar");
    char test_batch[512];
    snprintf(test_batch, sizeof test_batch, "%s", path_in("cifar", "test_batch.bin"));
    write_file(test_batch, b, len, 0);
    md_dataset ds;
    CHECK_OK(md_dataset_cifar10(path_in("cifar", ""), 0, &ds));
    if (ds.images) {
        CHECK(ds.n == 10000 && ds.c == 3 && ds.h == 32 && ds.w == 32 && ds.classes == 10,
              "shape n=%d c=%d h=%d w=%d", ds.n, ds.c, ds.h, ds.w);
        CHECK(ds.labels[0] == 0 && ds.labels[9999] == 9 && ds.labels[1234] == 4, "labels");
        CHECK(ds.images[0] == cifar_pixel(0, 0, 0, 0) &&
                  ds.images[(size_t)777 * 3072 + 2 * 1024 + 5 * 32 + 9] ==
                      cifar_pixel(777, 2, 5, 9) &&
                  ds.images[(size_t)9999 * 3072 + 3071] == cifar_pixel(9999, 2, 31, 31),
              "pixels");
        CHECK(ds.mean[1] == 0.4822f && ds.std[2] == 0.2616f, "mean/std");
        md_dataset_free(&ds);
    }
    /* Training set: five links to the same file, so batch k repeats batch 1. */
    char name[32];
    for (int k = 1; k <= 5; k++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", k);
        if (link(test_batch, path_in("cifar", name)) != 0) fatal("link");
    }
    CHECK_OK(md_dataset_cifar10(path_in("cifar", ""), 1, &ds));
    if (ds.images) {
        CHECK(ds.n == 50000, "train n %d", ds.n);
        CHECK(ds.labels[40003] == 3 && memcmp(ds.images + (size_t)40003 * 3072,
                                              b + (size_t)3 * CIFAR_REC + 1, 3072) == 0,
              "record 40003 should equal record 3");
        md_dataset_free(&ds);
    }
    for (int k = 1; k <= 5; k++) {
        snprintf(name, sizeof name, "data_batch_%d.bin", k);
        unlink(path_in("cifar", name));
    }
    expect_cifar_fail("cifar", 1, MD_ERR_IO, "data_batch_1.bin", "No such file");
    expect_cifar_fail("nothing", 0, MD_ERR_IO, "test_batch.bin", "cifar-10-binary");
    b[(size_t)5 * CIFAR_REC] = 10;
    write_file(test_batch, b, len, 0);
    expect_cifar_fail("cifar", 0, MD_ERR_DATA, "test_batch.bin", "record 5 has label 10");
    write_file(test_batch, b, len - CIFAR_REC, 0);
    expect_cifar_fail("cifar", 0, MD_ERR_DATA, "test_batch.bin", "9999 records");
    write_file(test_batch, b, len - 1, 0);
    expect_cifar_fail("cifar", 0, MD_ERR_DATA, "test_batch.bin", "3073-byte records");
    free(b);
}

/* ---- synthetic -------------------------------------------------------------------- */

/* Nearest class mean, means from the first half, accuracy on the second half. */
static double nearest_mean_accuracy(const md_dataset *ds) {
    size_t  chw = (size_t)ds->c * ds->h * ds->w;
    double *mean = calloc((size_t)ds->classes * chw, sizeof *mean);
    int    *count = calloc((size_t)ds->classes, sizeof *count);
    if (!mean || !count) fatal("calloc");
    int half = ds->n / 2, correct = 0;
    for (int i = 0; i < half; i++) {
        count[ds->labels[i]]++;
        for (size_t j = 0; j < chw; j++)
            mean[ds->labels[i] * chw + j] += ds->images[i * chw + j];
    }
    for (int k = 0; k < ds->classes; k++)
        for (size_t j = 0; j < chw; j++)
            mean[k * chw + j] /= count[k] ? count[k] : 1;
    for (int i = half; i < ds->n; i++) {
        int    best = -1;
        double best_d = INFINITY;
        for (int k = 0; k < ds->classes; k++) {
            double d = 0.0;
            for (size_t j = 0; j < chw; j++) {
                double e = ds->images[i * chw + j] - mean[k * chw + j];
                d += e * e;
            }
            if (d < best_d) best_d = d, best = k;
        }
        correct += best == ds->labels[i];
    }
    free(mean);
    free(count);
    return (double)correct / (ds->n - half);
}

static void test_synthetic(void) {
    md_dataset a, b, c;
    CHECK_OK(md_dataset_synthetic(400, 3, 16, 16, 10, 7, &a));
    CHECK_OK(md_dataset_synthetic(300, 3, 16, 16, 10, 7, &b));
    CHECK_OK(md_dataset_synthetic(300, 3, 16, 16, 10, 8, &c));
    if (!a.images || !b.images || !c.images) return;
    size_t chw = 3 * 16 * 16;
    CHECK(memcmp(a.images, b.images, 300 * chw) == 0 &&
              memcmp(a.labels, b.labels, 300 * sizeof(int32_t)) == 0,
          "sample i must depend on (seed, i) only");
    CHECK(memcmp(b.images, c.images, 300 * chw) != 0, "another seed gave the same images");
    int hist[10] = {0}, bad = 0;
    for (int i = 0; i < a.n; i++) {
        if (a.labels[i] < 0 || a.labels[i] >= 10)
            bad++;
        else
            hist[a.labels[i]]++;
    }
    CHECK(bad == 0, "%d labels out of range", bad);
    for (int k = 0; k < 10; k++)
        CHECK(hist[k] >= 20, "class %d has %d of 400 samples", k, hist[k]);
    double s = 0.0;
    for (int i = 0; i < a.n; i++)
        for (int j = 0; j < 256; j++)
            s += a.images[i * chw + 256 + j];
    CHECK(fabs(s / (a.n * 256.0) / 255.0 - a.mean[1]) < 1e-5 && a.std[1] > 0.1f && a.std[1] < 0.5f,
          "channel 1 mean %g (data %g), std %g", a.mean[1], s / (a.n * 256.0) / 255.0, a.std[1]);
    double acc = nearest_mean_accuracy(&a);
    printf("synthetic 3x16x16, 10 classes: nearest-class-mean accuracy %.3f\n", acc);
    CHECK(acc > 0.9, "the class should be visible in the pixels: accuracy %.3f", acc);
    md_dataset_free(&a);
    md_dataset_free(&b);
    md_dataset_free(&c);
    CHECK(md_dataset_synthetic(10, 1, 28, 28, 1, 0, &a) == MD_ERR_ARG && a.images == NULL,
          "one class accepted");
    CHECK(md_dataset_synthetic(10, 4, 28, 28, 10, 0, &a) == MD_ERR_ARG, "4 channels accepted");
    CHECK(md_dataset_synthetic(10, 1, 1, 1, 3, 0, &a) == MD_ERR_ARG,
          "3 classes from 1 pixel accepted");
}

/* ---- split ------------------------------------------------------------------------ */

static void test_split(void) {
    int *tr = NULL, *va = NULL, *tr2 = NULL, *va2 = NULL, nt = 0, nv = 0, nt2 = 0, nv2 = 0;
    CHECK_OK(md_dataset_split(1000, 0.1, 5, &tr, &nt, &va, &nv));
    CHECK_OK(md_dataset_split(1000, 0.1, 5, &tr2, &nt2, &va2, &nv2));
    if (!tr || !va || !tr2 || !va2) return;
    CHECK(nt == 900 && nv == 100, "sizes %d %d", nt, nv);
    int seen[1000] = {0}, twice = 0, missing = 0;
    for (int i = 0; i < nt; i++)
        seen[tr[i]]++;
    for (int i = 0; i < nv; i++)
        seen[va[i]]++;
    for (int i = 0; i < 1000; i++)
        twice += seen[i] > 1, missing += seen[i] == 0;
    CHECK(twice == 0 && missing == 0, "%d indices twice, %d missing", twice, missing);
    CHECK(nt == nt2 && memcmp(tr, tr2, sizeof(int) * nt) == 0 &&
              memcmp(va, va2, sizeof(int) * nv) == 0,
          "same seed, different split");
    int in_order = 1;
    for (int i = 1; i < nt; i++)
        in_order &= tr[i] > tr[i - 1];
    CHECK(!in_order, "the split is not shuffled");
    free(tr2), free(va2);
    CHECK_OK(md_dataset_split(1000, 0.1, 6, &tr2, &nt2, &va2, &nv2));
    CHECK(va2 && memcmp(va, va2, sizeof(int) * nv) != 0, "another seed, same split");
    free(tr), free(va), free(tr2), free(va2);
    CHECK_OK(md_dataset_split(7, 0.0, 1, &tr, &nt, &va, &nv));
    CHECK(nt == 7 && nv == 0 && va == NULL, "fraction 0: %d and %d", nt, nv);
    free(tr);
    CHECK(md_dataset_split(10, 1.0, 1, &tr, &nt, &va, &nv) == MD_ERR_ARG && tr == NULL,
          "fraction 1 accepted");
    CHECK(md_dataset_split(10, -0.1, 1, &tr, &nt, &va, &nv) == MD_ERR_ARG, "fraction < 0");
    CHECK(md_dataset_split(10, NAN, 1, &tr, &nt, &va, &nv) == MD_ERR_ARG, "NaN fraction");
    CHECK(md_dataset_split(100, 0.001, 1, &tr, &nt, &va, &nv) == MD_ERR_ARG &&
              message_has("0 validation", NULL),
          "empty validation split accepted: '%s'", md_error_message());
    CHECK(md_dataset_split(1, 0.5, 1, &tr, &nt, &va, &nv) == MD_ERR_ARG, "empty train split");
    CHECK(md_dataset_split(0, 0.0, 1, &tr, &nt, &va, &nv) == MD_ERR_ARG, "n = 0 accepted");
}

/* ---- loader ----------------------------------------------------------------------- */

/* A dataset whose image i holds i in its first two bytes, with mean 0 and std 1
 * so that x * 255 gives the bytes back exactly. */
static void make_indexed(md_dataset *ds, int n, int c, int h, int w, uint64_t seed) {
    memset(ds, 0, sizeof *ds);
    snprintf(ds->name, sizeof ds->name, "indexed");
    ds->n = n, ds->c = c, ds->h = h, ds->w = w, ds->classes = 10;
    size_t chw = (size_t)c * h * w;
    ds->images = malloc((size_t)n * chw);
    ds->labels = malloc((size_t)n * sizeof(int32_t));
    if (!ds->images || !ds->labels) fatal("malloc");
    md_rng r;
    md_rng_seed(&r, seed, 0);
    for (size_t j = 0; j < (size_t)n * chw; j++)
        ds->images[j] = (uint8_t)md_rng_u32(&r);
    for (int i = 0; i < n; i++) {
        ds->images[i * chw] = (uint8_t)(i & 255);
        ds->images[i * chw + 1] = (uint8_t)(i >> 8);
        ds->labels[i] = i % 10;
    }
    for (int k = 0; k < 3; k++)
        ds->mean[k] = 0.0f, ds->std[k] = 1.0f;
}

static int decode_index(const float *x) {
    return (int)lrintf(x[0] * 255.0f) + 256 * (int)lrintf(x[1] * 255.0f);
}

static md_loader *make_loader(const md_loader_config *cfg) {
    md_loader *l = NULL;
    md_status  s = md_loader_create(cfg, &l);
    if (s != MD_OK) {
        fprintf(stderr, "md_loader_create: %s\n", md_error_message());
        exit(1);
    }
    return l;
}

static void test_loader_coverage(void) {
    md_dataset ds;
    make_indexed(&ds, 300, 1, 4, 4, 1);
    int *sub = NULL, *rest = NULL, nsub = 0, nrest = 0;
    CHECK_OK(md_dataset_split(300, 0.5, 3, &sub, &nsub, &rest, &nrest));
    if (!sub) return;
    md_loader_config cfg = {.ds = &ds,
                            .idx = rest,
                            .n = nrest,
                            .batch = 32,
                            .shuffle = 1,
                            .seed = 11,
                            .rank = 0,
                            .world = 1};
    md_loader       *l = make_loader(&cfg);
    CHECK(md_loader_batches(l) == 5, "150 samples in batches of 32: %d", md_loader_batches(l));
    int order[2][150];
    for (int e = 0; e < 2; e++) {
        int seen[300] = {0}, pos = 0;
        for (int b = 0; b < 5; b++) {
            long           te;
            int            tb, rows, grows;
            const float   *x;
            const int32_t *y;
            md_loader_tell(l, &te, &tb);
            CHECK(te == e && tb == b, "tell (%ld, %d), want (%d, %d)", te, tb, e, b);
            CHECK_OK(md_loader_next(l, &x, &y, &rows, &grows));
            CHECK(rows == grows && grows == (b < 4 ? 32 : 22), "batch %d: %d rows of %d", b, rows,
                  grows);
            for (int i = 0; i < rows && pos < 150; i++) {
                int k = decode_index(x + i * 16);
                CHECK(k >= 0 && k < 300 && y[i] == k % 10, "row %d: index %d label %d", i, k, y[i]);
                if (k >= 0 && k < 300) seen[k]++;
                order[e][pos++] = k;
            }
        }
        int bad = 0;
        for (int i = 0; i < 300; i++)
            bad += seen[i] != 0;
        for (int i = 0; i < nrest; i++)
            bad -= seen[rest[i]] == 1;
        CHECK(bad == 0 && pos == 150, "epoch %d does not visit the subset exactly once", e);
    }
    CHECK(memcmp(order[0], order[1], sizeof order[0]) != 0, "epochs 0 and 1 in the same order");
    md_loader_destroy(l);

    /* In order, and with the last partial batch dropped. */
    cfg.shuffle = 0;
    cfg.drop_last = 1;
    l = make_loader(&cfg);
    CHECK(md_loader_batches(l) == 4, "drop_last: %d batches", md_loader_batches(l));
    int mismatch = 0;
    for (int b = 0; b < 5; b++) {
        const float   *x;
        const int32_t *y;
        int            rows, grows;
        CHECK_OK(md_loader_next(l, &x, &y, &rows, &grows));
        CHECK(grows == 32, "drop_last: batch of %d", grows);
        for (int i = 0; i < rows; i++)
            mismatch += decode_index(x + i * 16) != rest[(b % 4) * 32 + i];
    }
    CHECK(mismatch == 0, "unshuffled order differs from idx in %d rows", mismatch);
    long te;
    int  tb;
    md_loader_tell(l, &te, &tb);
    CHECK(te == 1 && tb == 1, "after 5 of 4 batches: tell (%ld, %d)", te, tb);
    md_loader_destroy(l);
    free(sub), free(rest);
    md_dataset_free(&ds);
}

/* Ranks' slices laid end to end are the world-size-1 batch, augmentation included. */
static void test_loader_ranks(void) {
    md_dataset ds;
    CHECK_OK(md_dataset_synthetic(200, 3, 12, 12, 10, 4, &ds));
    if (!ds.images) return;
    int idx[200];
    for (int i = 0; i < 200; i++)
        idx[i] = 199 - i;
    md_loader_config cfg = {.ds = &ds,
                            .idx = idx,
                            .n = 200,
                            .batch = 32,
                            .shuffle = 1,
                            .aug = {.crop_pad = 3, .flip = 1},
                            .seed = 9,
                            .rank = 0,
                            .world = 1};
    md_loader       *one = make_loader(&cfg);
    size_t           chw = 3 * 12 * 12;
    float           *cat = malloc(32 * chw * sizeof(float));
    int32_t          ycat[32];
    if (!cat) fatal("malloc");
    static const int worlds[3] = {2, 3, 12};
    md_loader       *part[12];
    for (int wi = 0; wi < 3; wi++) {
        int W = worlds[wi];
        cfg.world = W;
        for (int r = 0; r < W; r++) {
            cfg.rank = r;
            part[r] = make_loader(&cfg);
        }
        md_loader_seek(one, 0, 0);
        int zero_rows = 0;
        for (int b = 0; b < 10; b++) { /* 7 batches per epoch: crosses into epoch 1 */
            const float   *x1, *x;
            const int32_t *y1, *y;
            int            rows1, g1, rows, g, at = 0;
            CHECK_OK(md_loader_next(one, &x1, &y1, &rows1, &g1));
            for (int r = 0; r < W; r++) {
                CHECK_OK(md_loader_next(part[r], &x, &y, &rows, &g));
                CHECK(g == g1 && at + rows <= g1, "world %d rank %d batch %d: %d rows of %d", W, r,
                      b, rows, g);
                if (g != g1 || at + rows > g1) break;
                zero_rows += rows == 0;
                memcpy(cat + at * chw, x, rows * chw * sizeof(float));
                memcpy(ycat + at, y, rows * sizeof(int32_t));
                at += rows;
            }
            CHECK(at == g1 && memcmp(cat, x1, g1 * chw * sizeof(float)) == 0 &&
                      memcmp(ycat, y1, g1 * sizeof(int32_t)) == 0,
                  "world %d batch %d: ranks' slices differ from the whole batch", W, b);
        }
        if (W == 12) CHECK(zero_rows > 0, "8-row batch over 12 ranks should leave ranks empty");
        for (int r = 0; r < W; r++)
            md_loader_destroy(part[r]);
    }
    free(cat);
    md_loader_destroy(one);
    md_dataset_free(&ds);
}

typedef struct {
    float  *x;
    int32_t y[16];
    int     rows;
} saved_batch;

static void test_loader_resume(void) {
    md_dataset ds;
    CHECK_OK(md_dataset_synthetic(100, 1, 8, 8, 10, 2, &ds));
    if (!ds.images) return;
    int idx[100];
    for (int i = 0; i < 100; i++)
        idx[i] = i;
    md_loader_config cfg = {.ds = &ds,
                            .idx = idx,
                            .n = 100,
                            .batch = 16,
                            .shuffle = 1,
                            .aug = {.crop_pad = 2, .flip = 1},
                            .seed = 21,
                            .world = 1};
    md_loader       *a = make_loader(&cfg), *b = make_loader(&cfg);
    saved_batch      rec[21];
    size_t           bytes = 16 * 64 * sizeof(float);
    int              same = 1;
    for (int k = 0; k < 21; k++) { /* 7 batches per epoch: three epochs */
        const float   *x, *xb;
        const int32_t *y, *yb;
        int            g, rows_b;
        rec[k].x = calloc(16 * 64, sizeof(float));
        if (!rec[k].x) fatal("calloc");
        CHECK_OK(md_loader_next(a, &x, &y, &rec[k].rows, &g));
        memcpy(rec[k].x, x, rec[k].rows * 64 * sizeof(float));
        memcpy(rec[k].y, y, rec[k].rows * sizeof(int32_t));
        CHECK_OK(md_loader_next(b, &xb, &yb, &rows_b, &g));
        same &= rows_b == rec[k].rows && memcmp(xb, rec[k].x, rows_b * 64 * sizeof(float)) == 0;
    }
    CHECK(same, "two loaders with the same config gave different batches");
    CHECK(rec[1].rows == 16 && rec[6].rows == 4, "rows %d %d", rec[1].rows, rec[6].rows);
    CHECK(memcmp(rec[0].x, rec[7].x, bytes) != 0, "epoch 1 repeats epoch 0");
    /* Seek to epoch 1, batch 5 (position 12), then again mid-stream, back to the start. */
    CHECK_OK(md_loader_seek(b, 1, 5));
    long te;
    int  tb;
    md_loader_tell(b, &te, &tb);
    CHECK(te == 1 && tb == 5, "tell after seek: (%ld, %d)", te, tb);
    for (int k = 12; k < 21; k++) {
        const float   *x;
        const int32_t *y;
        int            rows, g;
        CHECK_OK(md_loader_next(b, &x, &y, &rows, &g));
        CHECK(rows == rec[k].rows && memcmp(x, rec[k].x, rows * 64 * sizeof(float)) == 0 &&
                  memcmp(y, rec[k].y, rows * sizeof(int32_t)) == 0,
              "batch %d after seek differs", k);
    }
    for (int round = 0; round < 20; round++) { /* seeks racing the prefetch thread */
        const float   *x;
        const int32_t *y;
        int            rows, g;
        CHECK_OK(md_loader_seek(b, round % 3, round % 7));
        int k = (round % 3) * 7 + round % 7;
        CHECK_OK(md_loader_next(b, &x, &y, &rows, &g));
        CHECK(rows == rec[k].rows && memcmp(x, rec[k].x, rows * 64 * sizeof(float)) == 0,
              "round %d: batch %d after seek differs", round, k);
    }
    CHECK_OK(md_loader_seek(b, 0, 7)); /* the end of epoch 0 is the start of epoch 1 */
    md_loader_tell(b, &te, &tb);
    CHECK(te == 1 && tb == 0, "seek(0, 7): tell (%ld, %d)", te, tb);
    CHECK(md_loader_seek(b, 0, 8) == MD_ERR_ARG, "seek past the epoch accepted");
    CHECK(md_loader_seek(b, -1, 0) == MD_ERR_ARG, "negative epoch accepted");
    md_loader_destroy(b);
    cfg.seed = 22;
    b = make_loader(&cfg);
    const float   *x;
    const int32_t *y;
    int            rows, g;
    CHECK_OK(md_loader_next(b, &x, &y, &rows, &g));
    CHECK(memcmp(x, rec[0].x, bytes) != 0, "another seed gave the same first batch");
    md_loader_destroy(b);
    md_loader_destroy(a);
    for (int k = 0; k < 21; k++)
        free(rec[k].x);
    md_dataset_free(&ds);
}

static void test_loader_normalise(void) {
    md_dataset ds;
    make_indexed(&ds, 5, 3, 2, 2, 3);
    static const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    memcpy(ds.mean, mean, sizeof mean);
    memcpy(ds.std, std, sizeof std);
    ds.images[4] = 255; /* image 0, channel 1, pixel (0, 0) */
    ds.images[8] = 0;   /* image 0, channel 2 */
    int              idx[5] = {0, 1, 2, 3, 4};
    md_loader_config cfg = {.ds = &ds, .idx = idx, .n = 5, .batch = 5, .world = 1};
    md_loader       *l = make_loader(&cfg);
    const float     *x;
    const int32_t   *y;
    int              rows, g, exact = 1;
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    for (int i = 0; i < 5 * 12; i++) {
        int c = i / 4 % 3;
        exact &= x[i] == (float)((ds.images[i] / 255.0 - mean[c]) / std[c]);
    }
    CHECK(exact, "without augmentation the batch must be the normalised source");
    /* By hand: (1 - 0.4822) / 0.2435 = 2.126489; (0 - 0.4465) / 0.2616 = -1.706804. */
    CHECK(fabsf(x[4] - 2.126489f) < 1e-5f && fabsf(x[8] + 1.706804f) < 1e-5f, "%.6f %.6f", x[4],
          x[8]);
    md_loader_destroy(l);
    md_dataset_free(&ds);
}

/* Does out equal src shifted by (dy, dx), optionally mirrored, zeros outside? */
static int is_shift(const float *out, const uint8_t *src, int c, int h, int w, int dy, int dx,
                    int mirror) {
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int sy = y + dy, sx = (mirror ? w - 1 - x : x) + dx;
                int v = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[(ch * h + sy) * w + sx] : 0;
                if (lrintf(out[(ch * h + y) * w + x] * 255.0f) != v) return 0;
            }
    return 1;
}

static void test_loader_augment(void) {
    md_dataset ds;
    make_indexed(&ds, 64, 2, 6, 7, 5);
    int idx[64];
    for (int i = 0; i < 64; i++)
        idx[i] = i;
    size_t           chw = 2 * 6 * 7;
    md_loader_config cfg = {.ds = &ds, .idx = idx, .n = 64, .batch = 64, .world = 1, .seed = 3};
    for (int mode = 0; mode < 3; mode++) { /* flip, crop, both */
        cfg.aug.flip = mode != 1;
        cfg.aug.crop_pad = mode == 0 ? 0 : 2;
        md_loader     *l = make_loader(&cfg);
        const float   *x;
        const int32_t *y;
        int            rows, g, unexplained = 0, mirrored = 0, shifted = 0;
        CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
        for (int i = 0; i < rows; i++) {
            int found = 0;
            for (int m = 0; m <= cfg.aug.flip && !found; m++)
                for (int dy = -cfg.aug.crop_pad; dy <= cfg.aug.crop_pad && !found; dy++)
                    for (int dx = -cfg.aug.crop_pad; dx <= cfg.aug.crop_pad && !found; dx++)
                        if (is_shift(x + i * chw, ds.images + i * chw, 2, 6, 7, dy, dx, m)) {
                            found = 1;
                            mirrored += m;
                            shifted += dy != 0 || dx != 0;
                        }
            unexplained += !found;
        }
        CHECK(unexplained == 0, "mode %d: %d images are no crop/mirror of their source", mode,
              unexplained);
        if (cfg.aug.flip)
            CHECK(mirrored > 16 && mirrored < 48, "mode %d: %d of 64 mirrored", mode, mirrored);
        if (cfg.aug.crop_pad)
            CHECK(shifted > 40, "mode %d: only %d of 64 shifted", mode, shifted);
        else
            CHECK(shifted == 0, "mode %d: shifted without crop", mode);
        md_loader_destroy(l);
    }
    md_dataset_free(&ds);
}

static void test_loader_errors(void) {
    md_dataset ds;
    make_indexed(&ds, 10, 1, 4, 4, 1);
    int              idx[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    md_loader_config good = {.ds = &ds, .idx = idx, .n = 10, .batch = 4, .world = 2, .rank = 1};
    md_loader       *l = NULL;
    md_loader_config c = good;
    c.rank = 2;
    CHECK(md_loader_create(&c, &l) == MD_ERR_ARG && l == NULL && message_has("rank 2", NULL),
          "rank 2 of world 2 accepted: '%s'", md_error_message());
    c = good;
    c.batch = 0;
    CHECK(md_loader_create(&c, &l) == MD_ERR_ARG, "batch 0 accepted");
    c = good;
    c.batch = 11;
    c.drop_last = 1;
    CHECK(md_loader_create(&c, &l) == MD_ERR_ARG, "no full batch with drop_last accepted");
    idx[3] = 10;
    CHECK(md_loader_create(&good, &l) == MD_ERR_ARG && message_has("index 10 at position 3", NULL),
          "out-of-range index accepted: '%s'", md_error_message());
    idx[3] = 3;
    CHECK_OK(md_loader_create(&good, &l));
    idx[2] = 9; /* the loader keeps its own copy of idx */
    const float   *x;
    const int32_t *y;
    int            rows, g;
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &g));
    CHECK(rows == 2 && g == 4 && decode_index(x) == 2, "rank 1: %d rows, first index %d", rows,
          decode_index(x));
    md_loader_destroy(l);
    md_dataset_free(&ds);
}

static void remove_scratch(void) {
    static const char *const subs[] = {"fm_ok",    "fm_magic", "fm_dims",   "fm_count", "fm_label",
                                       "fm_trail", "fm_short", "fm_short2", "fm_cut",   "cifar"};
    static const char *const files[] = {
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "test_batch.bin",
        "data_batch_1.bin",          "data_batch_2.bin",          "data_batch_3.bin",
        "data_batch_4.bin",          "data_batch_5.bin"};
    for (size_t s = 0; s < sizeof subs / sizeof *subs; s++) {
        for (size_t f = 0; f < sizeof files / sizeof *files; f++)
            unlink(path_in(subs[s], files[f]));
        rmdir(path_in(subs[s], ""));
    }
    if (rmdir(scratch) != 0) fprintf(stderr, "test_data: could not remove %s\n", scratch);
}

int main(void) {
    if (!mkdtemp(scratch)) fatal("mkdtemp in the working directory");
    check_fashion(1);
    check_fashion(0);
    test_fashion_files();
    test_cifar();
    test_synthetic();
    test_split();
    test_loader_coverage();
    test_loader_ranks();
    test_loader_resume();
    test_loader_normalise();
    test_loader_augment();
    test_loader_errors();
    remove_scratch();
    return md_test_finish("test_data");
}
