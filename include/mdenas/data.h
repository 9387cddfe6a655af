/* Datasets, sources and the batch loader.
 *
 * A source is what the loader reads samples from: sample i of n as normalised
 * floats (c x h x w) and a label, augmented from a random stream the loader
 * hands it. Two kinds sit behind the one interface: in-memory datasets
 * (Fashion-MNIST 47 MB, CIFAR-10 150 MB, synthetic; uint8 NCHW images held
 * whole, random crop with zero padding, flip, normalisation) and ImageNet
 * shards (mmapped JPEG shards, region decode, RandomResizedCrop or centre
 * crop; src/data/imagenet.c). The training set of an in-memory dataset is
 * split into search-train and validation by a seeded permutation; ImageNet
 * comes split by imagenet_prep.
 *
 * The loader turns a source into batches, one epoch at a time in a
 * permutation drawn from (seed, epoch), with a pool of threads filling a ring
 * of batch buffers ahead of the caller. The batch size is GLOBAL: under data
 * parallelism rank r of W takes its contiguous slice of every global batch, so
 * results do not depend on which rank read what, nor on the thread count. */
#ifndef MDENAS_DATA_H
#define MDENAS_DATA_H

#include <stddef.h>
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
/* The normalised value of each byte of each channel, lut[ch * 256 + v] =
 * (v / 255 - mean[ch]) / std[ch]: what every in-memory augmentation reads. */
void      md_dataset_lut(const md_dataset *ds, float *lut);

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
    int cutout;   /* DARTS's Cutout, after normalisation: a square of this side (clipped
                     at the borders) centred on a uniform pixel is set to 0; 0: off */
} md_augment;

/* ---- sources ---------------------------------------------------------------------- */

typedef struct md_source md_source;

typedef struct {
    char name[32]; /* "fashion-mnist", "imagenet/train", ... for messages */
    int  n;        /* samples */
    int  c, h, w;  /* shape of one sample as the loader delivers it */
    int  classes;
} md_source_info;

/* Samples idx[0..n) of ds (idx copied, each checked against ds->n), with aug.
 * ds must outlive the source. */
md_status md_source_memory(const md_dataset *ds, const int *idx, int n, md_augment aug,
                           md_source **out);

#define MD_IMAGENET_MEAN {0.485f, 0.456f, 0.406f}
#define MD_IMAGENET_STD {0.229f, 0.224f, 0.225f}

typedef struct {
    int    image_size;         /* output is image_size x image_size (e.g. 224; 64 for tests) */
    int    train;              /* 1: RandomResizedCrop (+ flip); 0: centre crop */
    double scale_lo, scale_hi; /* RandomResizedCrop area fraction (0 0: 0.08 1) */
    int    flip;               /* train: random horizontal flip, probability 1/2 */
    int    limit;              /* the first `limit` samples only (0: all) */
} md_imagenet_config;

/* Split `split` (train, search_val, val) of a folder that imagenet_prep wrote:
 * classes.txt, <split>-NNNNN.mds shards (mmapped, never read whole) and
 * manifest.json, without which the folder is refused as unfinished. Sample i
 * is the i-th record of the shards in name order. See docs/usage.md
 * ("ImageNet") for the crops. Errors name the folder and the file. */
md_status md_source_imagenet(const char *dir, const char *split, const md_imagenet_config *cfg,
                             md_source **out);
void                  md_source_destroy(md_source *s);
const md_source_info *md_source_describe(const md_source *s);

/* ---- the loader ----------------------------------------------------------------------- */

/* Where the loader's batch ring lives: a device backend can page-lock it.
 * alloc returns NULL on failure; both called from md_loader_create/destroy. */
typedef struct {
    void *(*alloc)(void *ctx, size_t bytes);
    void (*free)(void *ctx, void *p);
    void *ctx;
} md_loader_mem;

/* The device mode of an in-memory loader: no worker threads and no ring; each
 * batch is made where the network runs by one backend op (md_backend_augment_u8,
 * bound by src/train/devdata.c, since src/data knows no backend). The loader
 * keeps the order, the positions, the rank slices and the streams, exactly as
 * in host mode, so the batches are the same bits.
 * epoch: the order of an epoch, order[j] the index into md_loader_config.ds of
 *   position j (n entries); called before the epoch's first batch.
 * batch: rows [j0, j0 + rows) of that order (rows may be 0), sample j augmented
 *   from the child j + 1 of the epoch stream whose key is epoch_key; *x, *y are
 *   where it put them (backend memory, valid until the next call). */
typedef struct {
    void *ctx;
    md_status (*epoch)(void *ctx, const int32_t *order, int n);
    md_status (*batch)(void *ctx, long j0, int rows, uint64_t epoch_key, const float **x,
                       const int32_t **y);
} md_loader_device;

typedef struct {
    md_source *source; /* read from it (not owned; must outlive the loader); if NULL, from
                          ds, idx, n and aug below */
    const md_dataset *ds;
    const int        *idx; /* the subset to iterate, n entries (copied) */
    int               n;
    int               batch;     /* global batch size */
    int               shuffle;   /* permute each epoch (else in order) */
    int               drop_last; /* skip the final partial global batch */
    md_augment        aug;       /* all zero: no augmentation */
    uint64_t          seed;
    int               rank, world;
    int               threads; /* worker threads filling batches (0: 1) */
    int               depth;   /* batches in the ring, the caller's included (0: 3; >= 2) */
    md_loader_mem     mem;     /* all NULL: 64-byte aligned host memory */
    const md_loader_device *device; /* NULL: host mode; else device mode (ds only, no source;
                                       threads, depth and mem unused); copied */
} md_loader_config;

typedef struct md_loader md_loader;

/* Starts the worker threads. The source (or ds) must outlive the loader. Rank
 * r of W takes rows [r*g/W, (r+1)*g/W) of every global batch of g rows. The
 * order of epoch e comes from stream (seed, e); each sample's augmentation from
 * a stream keyed by (seed, e, its position in that order), so the batches
 * depend neither on the world size nor on the thread count. Use a loader from
 * one thread only. */
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
 * (the last one may be partial), *rows this rank's share (may be 0). A sample the source could
 * not read (a damaged image) fails the batch: its error (of the first such row) is returned
 * here with the source's message, and the loader stays at that batch. */
md_status md_loader_next(md_loader *l, const float **x, const int32_t **y, int *rows,
                         int *global_rows);
/* The labels of the batch the last md_loader_next gave, in host memory (its y in
 * host mode; a host copy in device mode, where y is backend memory). */
const int32_t *md_loader_labels_host(const md_loader *l);
/* 1 when the loader is in device mode (its batches are in backend memory). */
int md_loader_on_device(const md_loader *l);
/* Where the next call will read from (for checkpoints). */
void md_loader_tell(const md_loader *l, long *epoch, int *batch);
/* The shape and size of what the loader delivers. */
const md_source_info *md_loader_describe(const md_loader *l);
/* Seconds md_loader_next has spent waiting for batches since the loader was made
 * (the input pipeline's share of the step time). */
double md_loader_wait_s(const md_loader *l);

#endif
