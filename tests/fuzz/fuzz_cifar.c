/* libFuzzer harness for the CIFAR-10 reader (src/data/cifar10.c). Built with
 * FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the reader expects 3 records per
 * batch file instead of 10000, so that whole valid files (3 x 3073 bytes) fit
 * in an input. An input:
 *   byte 0     bit 0: the training set (data_batch_1..5.bin), else test_batch.bin
 *   test set   the rest is test_batch.bin
 *   train set  four 2-byte little-endian lengths, then files 1..4 of those
 *              lengths (cut to what is left) and file 5, the rest
 * Accepted data must equal the records' bytes: labels and CHW pixels. */
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "mdenas/data.h"

#define REC 3073

static void fail(const char *what) {
    fprintf(stderr, "fuzz_cifar: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int            train = data[0] & 1;
    const uint8_t *file[5];
    size_t         len[5];
    int            files = train ? 5 : 1;
    char           name[5][32];
    if (!train) {
        file[0] = data + 1, len[0] = size - 1;
        snprintf(name[0], sizeof name[0], "test_batch.bin");
    } else {
        if (size < 9) return 0;
        const uint8_t *p = data + 9;
        size_t         left = size - 9;
        for (int k = 0; k < 5; k++) {
            size_t n = k < 4 ? (size_t)data[1 + 2 * k] | (size_t)data[2 + 2 * k] << 8 : left;
            if (n > left) n = left;
            file[k] = p, len[k] = n;
            p += n, left -= n;
            snprintf(name[k], sizeof name[k], "data_batch_%d.bin", k + 1);
        }
    }
    for (int k = 0; k < files; k++)
        fuzz_write(name[k], file[k], len[k]);
    md_dataset ds;
    md_status  s = md_dataset_cifar10(fuzz_scratch(), train, &ds);
    for (int k = 0; k < files; k++)
        fuzz_remove(name[k]);
    if (s != MD_OK) {
        if (s != MD_ERR_DATA && s != MD_ERR_IO) fail("a failure other than MD_ERR_DATA/IO");
        if (ds.images || ds.labels || ds.n) fail("a failed load left data behind");
        return 0;
    }
    if (ds.c != 3 || ds.h != 32 || ds.w != 32 || ds.classes != 10 || ds.n % files) fail("shape");
    int per = ds.n / files;
    for (int k = 0; k < files; k++) {
        if (len[k] != (size_t)per * REC) fail("accepted a batch file of the wrong size");
        for (int i = 0; i < per; i++) {
            const uint8_t *r = file[k] + (size_t)i * REC;
            int            at = k * per + i;
            if (ds.labels[at] != r[0] || r[0] >= 10) fail("a label differs or is out of range");
            if (memcmp(ds.images + (size_t)at * 3072, r + 1, 3072) != 0) fail("pixels differ");
        }
    }
    md_dataset_free(&ds);
    return 0;
}
