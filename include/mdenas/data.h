/* Datasets and the batch loader.
 *
 * A dataset is held whole in memory as uint8 NCHW images and int32 labels
 * (Fashion-MNIST 47 MB, CIFAR-10 150 MB). The training set is split into
 * search-train and validation by a seeded permutation. The loader turns a list
 * of indices into float batches (random crop with zero padding, horizontal
 * flip, per-channel normalisation), one epoch at a time in a permutation drawn
 * from (seed, epoch), with a prefetch thread preparing the next batch while
 * the current one trains. The batch size is GLOBAL: under data parallelism
 * rank r of W takes its contiguous slice of every global batch, so results
 * do not depend on which rank read what. */
#ifndef MDENAS_DATA_H
#define MDENAS_DATA_H

#include <stdint.h>

#include "mdenas/error.h"

#define MD_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct {
    char     name[32];
    int      n, c, h, w, classes;
    uint8_t *images;          /* n * c * h * w bytes, NCHW */
    int32_t *labels;          /* n, each in [0, classes) */
    float    mean[3], std[3]; /* per-channel normalisation of x/255 */
} md_dataset;

/* Fashion-MNIST from gzipped IDX files (Debian package dataset-fashion-mnist):
 * {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz in dir. A missing file is
 * MD_ERR_IO; a wrong magic, size, count or label, or a truncated file, is
 * MD_ERR_DATA; the message names the file. On failure *out is left empty. */
md_status md_dataset_fashion_mnist(const char *dir, int train, md_dataset *out);
/* CIFAR-10 binary version: data_batch_1..5.bin (train) or test_batch.bin in dir;
 * each file must hold exactly 10000 records of 3073 bytes. */
md_status md_dataset_cifar10(const char *dir, int train, md_dataset *out);
/* Deterministic synthetic data whose class is learnable from the pixels: each
 * class is a pattern of bright and dark blocks (4x4 per channel) plus noise.
 * Sample i depends only on (seed, i). 1..3 channels, classes >= 2; mean/std
 * are measured on the generated images. */
md_status md_dataset_synthetic(int n, int c, int h, int w, int classes, uint64_t seed,
                               md_dataset *out);
void      md_dataset_free(md_dataset *ds);

/* A seeded permutation of [0, n): the first n - round(n * val_fraction) indices
 * are search-train, the rest validation. 0 <= val_fraction < 1, and neither part
 * may be empty unless val_fraction is 0 (then *val_idx is NULL, *nval 0).
 * Arrays are malloc'ed; free() them. */
md_status md_dataset_split(int n, double val_fraction, uint64_t seed, int **train_idx, int *ntrain,
                           int **val_idx, int *nval);

typedef struct {
    int crop_pad; /* random crop after zero padding by this many pixels; 0: off.
                     The padding is raw 0 (black), normalised like any pixel. */
    int flip;     /* random horizontal flip (after the crop), probability 1/2 */
} md_augment;

typedef struct {
    const md_dataset *ds;
    const int        *idx; /* the subset to iterate, n entries (copied) */
    int               n;
    int               batch;     /* global batch size */
    int               shuffle;   /* permute each epoch (else in order) */
    int               drop_last; /* skip the final partial global batch */
    md_augment        aug;       /* all zero: no augmentation */
    uint64_t          seed;
    int               rank, world;
} md_loader_config;

typedef struct md_loader md_loader;

/* Starts the prefetch thread. ds must outlive the loader. Rank r of W takes
 * rows [r*g/W, (r+1)*g/W) of every global batch of g rows. The order of epoch
 * e comes from stream (seed, e); each sample's augmentation from a stream
 * keyed by (seed, e, its position in that order), so the batches do not
 * depend on the world size. Use a loader from one thread only. */
md_status md_loader_create(const md_loader_config *cfg, md_loader **out);
void      md_loader_destroy(md_loader *l);
/* Global batches per epoch. */
int md_loader_batches(const md_loader *l);
/* Position the loader at batch `batch` of epoch `epoch` (resume); batch may be
 * md_loader_batches(), which means batch 0 of epoch + 1. */
md_status md_loader_seek(md_loader *l, long epoch, int batch);
/* The next batch of this rank: x [rows, c, h, w] normalised floats, y [rows].
 * Pointers stay valid until the next md_loader_next or md_loader_seek. At the end of an epoch the
 * loader moves on to the next epoch by itself. *global_rows is the size of the whole global batch
 * (the last one may be partial), *rows this rank's share (may be 0). */
md_status md_loader_next(md_loader *l, const float **x, const int32_t **y, int *rows,
                         int *global_rows);
/* Where the next call will read from (for checkpoints). */
void md_loader_tell(const md_loader *l, long *epoch, int *batch);

#endif
