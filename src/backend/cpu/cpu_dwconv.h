/* Private: depthwise convolution on NCHW planes (see cpu_dwconv.c). */
#ifndef MDENAS_CPU_DWCONV_H
#define MDENAS_CPU_DWCONV_H

typedef struct {
    int n, c, h, w, oh, ow;
    int k, stride, pad, dilation; /* square kernel, k <= 11 */
} md_dwconv;

#include <stddef.h>

/* Every call takes a scratch of md_dwconv_scratch_floats(d) floats (a padded
 * plane per OpenMP thread), which the caller allocates and so can fail on. */
size_t md_dwconv_scratch_floats(const md_dwconv *d);
void   md_dwconv_forward(const md_dwconv *d, const float *x, const float *w, float *y,
                         float *scratch);
/* dx += ... and dw += ... */
void md_dwconv_backward_data(const md_dwconv *d, const float *dy, const float *w, float *dx,
                             float *scratch);
void md_dwconv_backward_weights(const md_dwconv *d, const float *x, const float *dy, float *dw,
                                float *scratch);

#endif
