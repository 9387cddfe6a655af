/* libFuzzer harness for the Fashion-MNIST reader (src/data/fashion_mnist.c).
 * The reader takes a directory holding an images and a labels file, so an
 * input is split in two and written to a scratch directory:
 *   byte 0      bit 0: the train pair (train-*), else the test pair (t10k-*)
 *   bytes 1-2   L, little-endian: the labels file is the next min(L, rest) bytes
 *   the rest    the images file
 * Each file may be gzip or plain: zlib reads a file without the gzip magic as
 * it is, which lets the fuzzer work on the IDX bytes directly. Accepted data
 * must have the 28x28 shape, labels below 10 and, for a plain images file,
 * exactly its pixels. libFuzzer's -malloc_limit_mb catches a header whose
 * claims make the reader allocate far more than the input could hold. */
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "mdenas/data.h"

static void fail(const char *what) {
    fprintf(stderr, "fuzz_idx: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int    train = data[0] & 1;
    size_t L = (size_t)data[1] | (size_t)data[2] << 8, rest = size - 3;
    if (L > rest) L = rest;
    const uint8_t *lab = data + 3, *img = lab + L;
    size_t         nimg = rest - L;
    const char    *ni = train ? "train-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte.gz";
    const char    *nl = train ? "train-labels-idx1-ubyte.gz" : "t10k-labels-idx1-ubyte.gz";
    fuzz_write(ni, img, nimg);
    fuzz_write(nl, lab, L);
    md_dataset ds;
    md_status  s = md_dataset_fashion_mnist(fuzz_scratch(), train, &ds);
    fuzz_remove(ni);
    fuzz_remove(nl);
    if (s != MD_OK) {
        if (s != MD_ERR_DATA && s != MD_ERR_IO) fail("a failure other than MD_ERR_DATA/IO");
        if (ds.images || ds.labels || ds.n) fail("a failed load left data behind");
        return 0;
    }
    if (ds.n < 1 || ds.c != 1 || ds.h != 28 || ds.w != 28 || ds.classes != 10) fail("shape");
    for (int i = 0; i < ds.n; i++)
        if (ds.labels[i] < 0 || ds.labels[i] >= 10) fail("a label out of range");
    int plain = nimg < 2 || img[0] != 0x1f || img[1] != 0x8b;
    if (plain && (nimg != 16 + (size_t)ds.n * 784 || memcmp(ds.images, img + 16, nimg - 16) != 0))
        fail("the pixels differ from the plain file's");
    volatile uint8_t last = ds.images[(size_t)ds.n * 784 - 1];
    (void)last;
    md_dataset_free(&ds);
    return 0;
}
