/* Private helpers shared by the dataset readers, the split and the loader. */
#ifndef MDENAS_DATA_IMPL_H
#define MDENAS_DATA_IMPL_H

#include <stdint.h>

#include "mdenas/data.h"
#include "mdenas/rng.h"

/* Uniform in [0, bound) without modulo bias; bound >= 1. */
uint32_t md_data_below(md_rng *r, uint32_t bound);
/* Fisher-Yates shuffle of a[0..n) in place. */
void md_data_shuffle(int *a, int n, md_rng *r);
/* Allocate images (n*c*h*w bytes) and labels for a dataset; fills the shape. */
md_status md_data_alloc(md_dataset *ds, const char *name, int n, int c, int h, int w, int classes);

#endif
