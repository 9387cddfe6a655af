/* The in-memory datasets' batches, pinned: FNV-1a checksums of the floats and
 * labels the loader gave before it read through the source interface
 * (recorded with the two-slot prefetch loader of commit 34a8123). A change to
 * the order, the augmentation draws or the normalisation changes them. Run
 * with 1 and 3 loader threads: the batches must not depend on the count. */
#include <stdlib.h>
#include <string.h>

#include "mdenas/data.h"
#include "testutil.h"

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Checksum of `batches` batches of loader cfg (rows and global rows included). */
static uint64_t batches_hash(const md_loader_config *cfg, int batches, size_t chw) {
    md_loader *l = NULL;
    if (md_loader_create(cfg, &l) != MD_OK) {
        fprintf(stderr, "md_loader_create: %s\n", md_error_message());
        md_test_failures++;
        return 0;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    for (int b = 0; b < batches; b++) {
        const float   *x;
        const int32_t *y;
        int            rows, g;
        md_status      s = md_loader_next(l, &x, &y, &rows, &g);
        CHECK(s == MD_OK, "batch %d: %s", b, md_error_message());
        if (s != MD_OK) break;
        h = fnv(h, &rows, sizeof rows);
        h = fnv(h, &g, sizeof g);
        h = fnv(h, x, (size_t)rows * chw * sizeof(float));
        h = fnv(h, y, (size_t)rows * sizeof(int32_t));
    }
    md_loader_destroy(l);
    return h;
}

static void pin_synthetic(int threads) {
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
                            .world = 1,
                            .threads = threads};
    uint64_t         h1 = batches_hash(&cfg, 10, 3 * 12 * 12);
    cfg.world = 3, cfg.rank = 1;
    uint64_t h3 = batches_hash(&cfg, 10, 3 * 12 * 12);
    cfg.world = 1, cfg.rank = 0, cfg.aug = (md_augment){0, 0, 0}, cfg.shuffle = 0;
    uint64_t hp = batches_hash(&cfg, 8, 3 * 12 * 12);
    printf("synthetic, %d thread(s): %016llx %016llx %016llx\n", threads, (unsigned long long)h1,
           (unsigned long long)h3, (unsigned long long)hp);
    CHECK(h1 == 0x66029022066a6c03ull, "synthetic world 1: %016llx", (unsigned long long)h1);
    CHECK(h3 == 0x8c852302c22399caull, "synthetic world 3 rank 1: %016llx", (unsigned long long)h3);
    CHECK(hp == 0x2bb6882c0a0ba33dull, "synthetic in order, no augmentation: %016llx",
          (unsigned long long)hp);
    md_dataset_free(&ds);
}

/* The search's own use: Fashion-MNIST split in half, crop 2 + flip, drop_last. */
static void pin_fashion(int threads) {
    md_dataset ds;
    md_status  s = md_dataset_fashion_mnist(MD_FASHION_MNIST_DIR, 1, &ds);
    CHECK(s == MD_OK, "Fashion-MNIST: %s", md_error_message());
    if (s != MD_OK) return;
    int *tr = NULL, *va = NULL, nt = 0, nv = 0;
    CHECK_OK(md_dataset_split(ds.n, 0.5, 1, &tr, &nt, &va, &nv));
    md_loader_config t = {.ds = &ds,
                          .idx = tr,
                          .n = nt,
                          .batch = 64,
                          .shuffle = 1,
                          .drop_last = 1,
                          .aug = {.crop_pad = 2, .flip = 1},
                          .seed = 1,
                          .world = 2,
                          .rank = 1,
                          .threads = threads};
    uint64_t         ht = batches_hash(&t, 5, 784);
    md_loader_config v = t;
    v.idx = va, v.n = nv, v.shuffle = 0, v.drop_last = 0, v.aug = (md_augment){0, 0, 0};
    v.world = 1, v.rank = 0;
    uint64_t hv = batches_hash(&v, 3, 784);
    printf("fashion-mnist, %d thread(s): %016llx %016llx\n", threads, (unsigned long long)ht,
           (unsigned long long)hv);
    CHECK(ht == 0xd851926acf883f02ull, "fashion-mnist train: %016llx", (unsigned long long)ht);
    CHECK(hv == 0xc11c38712666785dull, "fashion-mnist validation: %016llx", (unsigned long long)hv);
    free(tr);
    free(va);
    md_dataset_free(&ds);
}

int main(void) {
    for (int threads = 1; threads <= 3; threads += 2) {
        pin_synthetic(threads);
        pin_fashion(threads);
    }
    return md_test_finish("test_loader_pin");
}
