/* The CUDA side of in-memory datasets held on the GPU: a batch made by one
 * kernel from the dataset's bytes, the epoch order and the sample streams,
 * through the same inline code as the host loader (src/data/augment_inline.h,
 * src/core/philox_inline.h), so its floats are the host loader's bit for bit.
 *
 * One block per row: thread 0 draws the row's crop, flip and cutout (a few
 * Philox blocks, in the host's order) into shared memory, then the block's
 * threads write the row's c*h*w pixels, consecutive threads consecutive
 * pixels (coalesced stores; the loads are byte gathers from one image, which
 * stays in L1/L2). */
#include <cuda_runtime.h>

extern "C" {
#include "backend/cuda/cuda_data.h"
#include "mdenas/error.h"
}
#include "data/augment_inline.h"

#define MD_AUG_THREADS 256

__global__ void k_augment_u8(const uint8_t *images, const int32_t *labels, const float *lut,
                             const int32_t *order, int c, int h, int w, long j0,
                             uint64_t epoch_key, int crop_pad, int flip, int cutout, float *x,
                             int32_t *y) {
    __shared__ md_aug_draw d;
    __shared__ int         src;
    int                    row = blockIdx.x;
    long                   j = j0 + row;
    if (threadIdx.x == 0) {
        md_rng r = md_rng_at_key(md_aug_sample_key(epoch_key, j));
        d = md_aug_draws(&r, crop_pad, flip, cutout, h, w);
        src = order[j];
        y[row] = labels[src];
    }
    __syncthreads();
    size_t      chw = (size_t)c * h * w;
    md_aug_draw dl = d;
    md_aug_pixels(images + (size_t)src * chw, lut, c, h, w, &dl, (int)threadIdx.x,
                  (int)blockDim.x, x + (size_t)row * chw);
}

extern "C" md_status md_cuda_augment_u8(void *stream, const md_u8_batch *b) {
    if (b->rows <= 0) return MD_OK;
    k_augment_u8<<<b->rows, MD_AUG_THREADS, 0, (cudaStream_t)stream>>>(
        b->images, b->labels, b->lut, b->order, b->c, b->h, b->w, b->j0, b->epoch_key,
        b->crop_pad, b->flip, b->cutout, b->x, b->y);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return md_fail(MD_ERR_BACKEND,
                       "CUDA augment_u8 kernel launch (%d rows of %dx%dx%d) failed: %s", b->rows,
                       b->c, b->h, b->w, cudaGetErrorString(e));
    return MD_OK;
}
