/* Fashion-MNIST: gzipped IDX files (big-endian header, then raw bytes). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/data_impl.h"

#define IDX_MAGIC_IMAGES 2051u /* 0x00000803: unsigned byte, 3 dims */
#define IDX_MAGIC_LABELS 2049u /* 0x00000801: unsigned byte, 1 dim */
#define FMNIST_SIDE      28
#define FMNIST_CLASSES   10
#define FMNIST_HINT                                                                                \
    "the Debian package dataset-fashion-mnist provides it: apt-get install dataset-fashion-mnist"

typedef struct {
    gzFile f;
    char   path[4096];
} idx_file;

static md_status idx_open(idx_file *in, const char *dir, const char *name) {
    int len = snprintf(in->path, sizeof in->path, "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= sizeof in->path)
        return md_fail(MD_ERR_ARG, "fashion-mnist: directory name too long: %s", dir);
    errno = 0;
    in->f = gzopen(in->path, "rb");
    if (!in->f)
        return md_fail(MD_ERR_IO, "fashion-mnist: cannot open %s: %s (%s)", in->path,
                       errno ? strerror(errno) : "out of memory", FMNIST_HINT);
    return MD_OK;
}

/* Read exactly len bytes; a short read is a truncated or corrupt file. */
static md_status idx_read(idx_file *in, void *buf, size_t len, const char *what) {
    unsigned char *p = buf;
    size_t         done = 0;
    while (done < len) {
        size_t   left = len - done;
        unsigned chunk = left > (1u << 30) ? (1u << 30) : (unsigned)left;
        int      got = gzread(in->f, p + done, chunk);
        if (got < 0) {
            int         zerr = 0;
            const char *msg = gzerror(in->f, &zerr);
            if (zerr == Z_ERRNO)
                return md_fail(MD_ERR_IO, "fashion-mnist: %s: reading %s: %s", in->path, what,
                               strerror(errno));
            return md_fail(MD_ERR_DATA,
                           "fashion-mnist: %s: corrupt or truncated in %s (%zu of "
                           "%zu bytes read): %s",
                           in->path, what, done, len, msg);
        }
        if (got == 0)
            return md_fail(MD_ERR_DATA, "fashion-mnist: %s: truncated in %s (%zu of %zu bytes)",
                           in->path, what, done, len);
        done += (size_t)got;
    }
    return MD_OK;
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads the magic number and ndims sizes into dims. */
static md_status idx_header(idx_file *in, uint32_t magic, int ndims, uint32_t *dims) {
    unsigned char hdr[16];
    MD_TRY(idx_read(in, hdr, 4 * (size_t)(1 + ndims), "the header"));
    uint32_t got = be32(hdr);
    if (got != magic)
        return md_fail(MD_ERR_DATA,
                       "fashion-mnist: %s: bad magic number 0x%08x (expected 0x%08x, "
                       "an IDX %s file)",
                       in->path, got, magic, magic == IDX_MAGIC_IMAGES ? "image" : "label");
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(hdr + 4 * (i + 1));
    return MD_OK;
}

static md_status idx_expect_end(idx_file *in) {
    unsigned char extra;
    int           got = gzread(in->f, &extra, 1);
    if (got != 0)
        return md_fail(MD_ERR_DATA, "fashion-mnist: %s: %s after the last item", in->path,
                       got > 0 ? "trailing bytes" : "corrupt data");
    return MD_OK;
}

static md_status load(idx_file *im, idx_file *lb, md_dataset *out) {
    uint32_t idim[3] = {0}, ldim[1] = {0};
    MD_TRY(idx_header(im, IDX_MAGIC_IMAGES, 3, idim));
    MD_TRY(idx_header(lb, IDX_MAGIC_LABELS, 1, ldim));
    if (idim[1] != FMNIST_SIDE || idim[2] != FMNIST_SIDE)
        return md_fail(MD_ERR_DATA, "fashion-mnist: %s: images are %ux%u (expected 28x28)",
                       im->path, idim[1], idim[2]);
    if (idim[0] != ldim[0])
        return md_fail(MD_ERR_DATA, "fashion-mnist: %s holds %u images but %s holds %u labels",
                       im->path, idim[0], lb->path, ldim[0]);
    if (idim[0] == 0 || idim[0] > INT_MAX / (FMNIST_SIDE * FMNIST_SIDE))
        return md_fail(MD_ERR_DATA, "fashion-mnist: %s: implausible image count %u", im->path,
                       idim[0]);
    int n = (int)idim[0];
    MD_TRY(md_data_alloc(out, "fashion-mnist", n, 1, FMNIST_SIDE, FMNIST_SIDE, FMNIST_CLASSES));
    /* Labels go through the image buffer's head before widening to int32. */
    md_status s = idx_read(lb, out->images, (size_t)n, "the labels");
    for (int i = 0; s == MD_OK && i < n; i++) {
        if (out->images[i] >= FMNIST_CLASSES)
            s = md_fail(MD_ERR_DATA, "fashion-mnist: %s: label %d of item %d is not in [0, %d)",
                        lb->path, out->images[i], i, FMNIST_CLASSES);
        out->labels[i] = out->images[i];
    }
    if (s == MD_OK) s = idx_expect_end(lb);
    if (s == MD_OK)
        s = idx_read(im, out->images, (size_t)n * FMNIST_SIDE * FMNIST_SIDE, "the images");
    if (s == MD_OK) s = idx_expect_end(im);
    if (s != MD_OK) {
        md_dataset_free(out);
        return s;
    }
    /* Statistics of x/255 over the 60000 training images. */
    out->mean[0] = 0.2860f;
    out->std[0] = 0.3530f;
    return MD_OK;
}

md_status md_dataset_fashion_mnist(const char *dir, int train, md_dataset *out) {
    memset(out, 0, sizeof *out);
    const char *prefix = train ? "train" : "t10k";
    char        name[64];
    idx_file    im = {0}, lb = {0};
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
    md_status s = idx_open(&im, dir, name);
    if (s == MD_OK) {
        snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", prefix);
        s = idx_open(&lb, dir, name);
    }
    if (s == MD_OK) s = load(&im, &lb, out);
    if (im.f) gzclose(im.f);
    if (lb.f) gzclose(lb.f);
    return s;
}
