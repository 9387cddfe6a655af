/* Private to the CUDA backend: the kernels of src/backend/cuda/cuda_data.cu,
 * callable from cuda_backend.cu with the backend's stream. */
#ifndef MDENAS_CUDA_DATA_H
#define MDENAS_CUDA_DATA_H

#include "mdenas/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* md_backend_augment_u8 (validated by backend.c, rows >= 1) queued on stream (a
 * cudaStream_t): one block per row, no allocation, no synchronisation. */
md_status md_cuda_augment_u8(void *stream, const md_u8_batch *b);

#ifdef __cplusplus
}
#endif

#endif
