/* Tensors: a non-owning view of float32 memory with up to 4 dimensions.
 * Activations are NCHW; matrices are (rows, cols); vectors are (n). The memory
 * lives where the backend that made it lives (host for CPU, device for CUDA). */
#ifndef MDENAS_TENSOR_H
#define MDENAS_TENSOR_H

#include <stddef.h>

#define MD_MAX_DIMS 4

typedef struct {
    float *data;
    int    ndim;
    int    dim[MD_MAX_DIMS];
} md_tensor;

md_tensor md_tensor_4d(float *data, int n, int c, int h, int w);
md_tensor md_tensor_2d(float *data, int rows, int cols);
md_tensor md_tensor_1d(float *data, int n);
size_t    md_tensor_numel(const md_tensor *t);
int       md_tensor_same_shape(const md_tensor *a, const md_tensor *b);
/* Writes "[2,3,8,8]" into buf (always terminated); returns buf. */
char     *md_tensor_shape_str(const md_tensor *t, char *buf, size_t len);

#endif
