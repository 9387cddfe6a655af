/* Fashion-MNIST: gzipped IDX files (big-endian header, then raw bytes). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data_impl.h"

#define IDX_MAGIC_IMAGES 2051u /* 0x00000803: unsigned byte, 3 dims */
#define IDX_MAGIC_LABELS 2049u /* 0x00000801: unsigned byte, 1 dim */
#define FMNIST_SIDE      28
#define FMNIST_CLASSES   10
#define FMNIST_HINT                                                                                \
    "the Debian package dataset-fashion-mnist provides it: apt-get install dataset-fashion-mnist"

/* Deflate cannot shrink data by more than this (a length-258 match in two bits):
 * a gzip file of B bytes holds at most B * 1032 bytes uncompressed. */
#define DEFLATE_MAX_RATIO 1032

typedef struct {
    gzFile    f;
    int       fd;    /* the file gzdopen reads; pread()s of the trailer leave its offset alone */
    long long bytes; /* size on disk */
    char      path[4096];
} idx_file;

static md_status idx_open(idx_file *in, const char *dir, const char *name) {
    in->fd = -1;
    int len = snprintf(in->path, sizeof in->path, "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= sizeof in->path)
        return md_fail(MD_ERR_ARG, "fashion-mnist: directory name too long: %s", dir);
    in->fd = open(in->path, O_RDONLY | O_CLOEXEC);
    if (in->fd < 0)
        return md_fail(MD_ERR_IO, "fashion-mnist: cannot open %s: %s (%s)", in->path,
                       strerror(errno), FMNIST_HINT);
    struct stat st;
    if (fstat(in->fd, &st) != 0)
        return md_fail(MD_ERR_IO, "fashion-mnist: cannot stat %s: %s", in->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return md_fail(MD_ERR_DATA, "fashion-mnist: %s is not a regular file", in->path);
    in->bytes = (long long)st.st_size;
    in->f = gzdopen(in->fd, "rb");
    if (!in->f) return md_fail(MD_ERR_NOMEM, "fashion-mnist: opening %s", in->path);
    return MD_OK;
}

static void idx_close(idx_file *in) {
    if (in->f)
        gzclose(in->f); /* closes fd too */
    else if (in->fd >= 0)
        close(in->fd);
    in->f = NULL, in->fd = -1;
}

/* Read exactly len bytes (buf NULL: read and drop them); a short read is a
 * truncated or corrupt file. */
static md_status idx_read(idx_file *in, void *buf, size_t len, const char *what) {
    unsigned char *p = buf, scratch[16384];
    size_t         done = 0;
    while (done < len) {
        size_t   left = len - done;
        unsigned chunk = left > (1u << 30) ? (1u << 30) : (unsigned)left;
        if (!p && chunk > sizeof scratch) chunk = sizeof scratch;
        int got = gzread(in->f, p ? p + done : scratch, chunk);
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

/* Before anything is allocated for it: can the file hold the `total` bytes
 * (header included) that its header claims, `n` items? A plain file is measured
 * on disk. A gzip file must be big enough for that at deflate's best ratio, and
 * then its trailer's uncompressed size (ISIZE, exact below 4 GiB for a file of
 * one member, which is what gzip writes) settles it; when that disagrees (several
 * members, data after the stream, a short file) the stream is read through once
 * without keeping it, and rewound. */
static md_status idx_holds(idx_file *in, uint64_t total, size_t header, uint32_t n,
                           const char *what) {
    char need[32], have[32];
    md_data_human_bytes(total, need);
    md_data_human_bytes((uint64_t)in->bytes, have);
    if (gzdirect(in->f)) {
        if ((uint64_t)in->bytes < total)
            return md_fail(MD_ERR_DATA, "fashion-mnist: %s: truncated: its header claims %u %s, "
                                        "%s with the header, but the file holds %s",
                           in->path, n, what, need, have);
        return MD_OK; /* anything more is refused as trailing bytes once read */
    }
    if (total / DEFLATE_MAX_RATIO > (uint64_t)in->bytes)
        return md_fail(MD_ERR_DATA, "fashion-mnist: %s: truncated or not an IDX file: its header "
                                    "claims %u %s, %s uncompressed, more than a gzip file of %s "
                                    "can hold",
                       in->path, n, what, need, have);
    unsigned char isize[4];
    if (in->bytes >= 4 && pread(in->fd, isize, 4, (off_t)(in->bytes - 4)) == 4 &&
        ((uint32_t)isize[0] | (uint32_t)isize[1] << 8 | (uint32_t)isize[2] << 16 |
         (uint32_t)isize[3] << 24) == (uint32_t)total)
        return MD_OK;
    char part[64];
    snprintf(part, sizeof part, "the %u %s its header claims", n, what);
    MD_TRY(idx_read(in, NULL, (size_t)(total - header), part));
    if (gzrewind(in->f) != 0)
        return md_fail(MD_ERR_IO, "fashion-mnist: %s: cannot rewind", in->path);
    return idx_read(in, NULL, header, "the header");
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
    int      n = (int)idim[0];
    uint64_t pixels = (uint64_t)n * FMNIST_SIDE * FMNIST_SIDE;
    MD_TRY(idx_holds(lb, 8 + (uint64_t)n, 8, idim[0], "labels"));
    MD_TRY(idx_holds(im, 16 + pixels, 16, idim[0], "images"));
    if (md_data_alloc(out, "fashion-mnist", n, 1, FMNIST_SIDE, FMNIST_SIDE, FMNIST_CLASSES) !=
        MD_OK) {
        char all[32], img[32], lab[32];
        md_data_human_bytes(pixels + 4 * (uint64_t)n, all);
        return md_fail(MD_ERR_NOMEM, "fashion-mnist: %s holds %d images of 28x28: loading them "
                                     "needs %s of memory (%s of pixels, %s of labels), which "
                                     "could not be allocated. Give the process more memory (the "
                                     "job's memory request, ulimit -v) or use a smaller file",
                       im->path, n, all, md_data_human_bytes(pixels, img),
                       md_data_human_bytes(4 * (uint64_t)n, lab));
    }
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
    idx_file    im = {.fd = -1}, lb = {.fd = -1};
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
    md_status s = idx_open(&im, dir, name);
    if (s == MD_OK) {
        snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", prefix);
        s = idx_open(&lb, dir, name);
    }
    if (s == MD_OK) s = load(&im, &lb, out);
    idx_close(&im);
    idx_close(&lb);
    return s;
}
