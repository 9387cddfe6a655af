/* CIFAR-10, binary version: files of 10000 records, each a label byte and a
 * 32x32 image as three 1024-byte planes (R, G, B), which is already CHW. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_impl.h"

#define CIFAR_SIDE     32
#define CIFAR_CLASSES  10
#define CIFAR_IMAGE    (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD   (1 + CIFAR_IMAGE)
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define CIFAR_PER_FILE 3 /* fuzz builds only (tests/fuzz): whole files fit in an input */
#else
#define CIFAR_PER_FILE 10000
#endif
#define CIFAR_HINT     "the binary version is https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"

/* Reads one batch file into images/labels starting at record `first`. */
static md_status read_batch(const char *path, md_dataset *ds, int first) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return md_fail(MD_ERR_IO, "cifar10: cannot open %s: %s (%s)", path, strerror(errno),
                       CIFAR_HINT);
    /* The size of the file opened, not of whatever the name meant a moment before. */
    struct stat st;
    md_status   s = MD_OK;
    long long   size = 0;
    if (fstat(fileno(f), &st) != 0)
        s = md_fail(MD_ERR_IO, "cifar10: cannot stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        s = md_fail(MD_ERR_DATA, "cifar10: %s is not a regular file", path);
    else if ((size = (long long)st.st_size) % CIFAR_RECORD != 0)
        s = md_fail(MD_ERR_DATA,
                    "cifar10: %s: size %lld bytes is not a whole number of %d-byte records", path,
                    size, CIFAR_RECORD);
    else if (size / CIFAR_RECORD != CIFAR_PER_FILE)
        s = md_fail(MD_ERR_DATA, "cifar10: %s: holds %lld records (expected %d)", path,
                    size / CIFAR_RECORD, CIFAR_PER_FILE);
    if (s != MD_OK) {
        fclose(f);
        return s;
    }
    for (int i = 0; i < CIFAR_PER_FILE && s == MD_OK; i++) {
        int      k = first + i;
        uint8_t *img = ds->images + (size_t)k * CIFAR_IMAGE;
        int      label = fgetc(f);
        if (label == EOF || fread(img, 1, CIFAR_IMAGE, f) != CIFAR_IMAGE)
            s = md_fail(MD_ERR_IO, "cifar10: %s: read failed at record %d: %s", path, i,
                        ferror(f) ? strerror(errno) : "unexpected end of file");
        else if (label >= CIFAR_CLASSES)
            s = md_fail(MD_ERR_DATA, "cifar10: %s: record %d has label %d (not in [0, %d))", path,
                        i, label, CIFAR_CLASSES);
        else
            ds->labels[k] = label;
    }
    fclose(f);
    return s;
}

md_status md_dataset_cifar10(const char *dir, int train, md_dataset *out) {
    memset(out, 0, sizeof *out);
    int files = train ? 5 : 1, n = files * CIFAR_PER_FILE;
    if (md_data_alloc(out, "cifar10", n, 3, CIFAR_SIDE, CIFAR_SIDE, CIFAR_CLASSES) != MD_OK) {
        char need[32];
        md_data_human_bytes((uint64_t)n * (CIFAR_IMAGE + 4), need);
        return md_fail(MD_ERR_NOMEM, "cifar10: the %s set in %s, %d images of 3x32x32, needs %s "
                                     "of memory, which could not be allocated. Give the process "
                                     "more memory (the job's memory request, ulimit -v)",
                       train ? "training" : "test", dir, n, need);
    }
    md_status s = MD_OK;
    for (int i = 0; i < files && s == MD_OK; i++) {
        char path[4096];
        int  len = train ? snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, i + 1)
                         : snprintf(path, sizeof path, "%s/test_batch.bin", dir);
        if (len < 0 || (size_t)len >= sizeof path)
            s = md_fail(MD_ERR_ARG, "cifar10: directory name too long: %s", dir);
        else
            s = read_batch(path, out, i * CIFAR_PER_FILE);
    }
    if (s != MD_OK) {
        md_dataset_free(out);
        return s;
    }
    /* Statistics of x/255 over the 50000 training images. */
    static const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    memcpy(out->mean, mean, sizeof mean);
    memcpy(out->std, std, sizeof std);
    return MD_OK;
}
