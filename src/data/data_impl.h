/* Private helpers shared by the dataset readers, the split and the loader. */
#ifndef MDENAS_DATA_IMPL_H
#define MDENAS_DATA_IMPL_H

#include <stdint.h>
#include <stdio.h>

#include "mdenas/data.h"
#include "mdenas/rng.h"

/* Uniform in [0, bound) without modulo bias; bound >= 1. */
uint32_t md_data_below(md_rng *r, uint32_t bound);
/* Fisher-Yates shuffle of a[0..n) in place. */
void md_data_shuffle(int *a, int n, md_rng *r);
/* Allocate images (n*c*h*w bytes) and labels for a dataset; fills the shape. */
md_status md_data_alloc(md_dataset *ds, const char *name, int n, int c, int h, int w, int classes);

/* ---- the source interface (data.h's md_source) ---- */

typedef struct {
    /* Per-thread state (a JPEG decoder, scratch); optional: NULL means none. */
    md_status (*worker_create)(md_source *s, void **worker);
    void (*worker_destroy)(md_source *s, void *worker);
    /* Sample i (0 <= i < info.n): c*h*w normalised floats into x, its label into *y.
     * r is this sample's own stream (keyed by seed, epoch and position): draw every
     * random choice from it. Called from several threads at once, each with its own
     * worker. On failure, an error naming the sample's file and record. */
    md_status (*get)(md_source *s, void *worker, int i, md_rng *r, float *x, int32_t *y);
    void (*destroy)(md_source *s);
} md_source_ops;

struct md_source {
    const md_source_ops *ops;
    md_source_info       info;
};

/* A byte count in human units for messages: "812 bytes", "46.0 MiB", "2.0 GiB". */
static inline const char *md_data_human_bytes(uint64_t bytes, char buf[32]) {
    static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB"};
    double x = (double)bytes;
    int    u = -1;
    while (x >= 1024.0 && u < 3)
        x /= 1024.0, u++;
    if (u < 0)
        snprintf(buf, 32, "%llu bytes", (unsigned long long)bytes);
    else
        snprintf(buf, 32, "%.1f %s", x, unit[u]);
    return buf;
}

#endif
