/* Shared by the harnesses: a private scratch directory (under $TMPDIR, else
 * /dev/shm, else /tmp) made once per process and removed at exit, and a
 * whole-buffer write. The readers of datasets take a directory, so their
 * harnesses write each input there first. */
#ifndef MDENAS_FUZZ_UTIL_H
#define MDENAS_FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir[512];

static void fuzz_dir_remove(void) {
    static const char *const names[] = {"t10k-images-idx3-ubyte.gz",
                                        "t10k-labels-idx1-ubyte.gz",
                                        "train-images-idx3-ubyte.gz",
                                        "train-labels-idx1-ubyte.gz",
                                        "test_batch.bin",
                                        "data_batch_1.bin",
                                        "data_batch_2.bin",
                                        "data_batch_3.bin",
                                        "data_batch_4.bin",
                                        "data_batch_5.bin"};
    char                     p[600];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir, names[i]);
        unlink(p);
    }
    rmdir(fuzz_dir);
}

static const char *fuzz_scratch(void) {
    if (fuzz_dir[0]) return fuzz_dir;
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (!base || !*base)
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/mdenas_fuzz_XXXXXX", base);
    if (!mkdtemp(fuzz_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_dir_remove);
    return fuzz_dir;
}

static void fuzz_write(const char *name, const void *data, size_t len) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", fuzz_scratch(), name);
    FILE *f = fopen(p, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror("fuzz: writing a scratch file");
        abort();
    }
}

static void fuzz_remove(const char *name) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", fuzz_scratch(), name);
    unlink(p);
}

#endif
