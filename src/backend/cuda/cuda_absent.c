/* Builds without the CUDA backend (no nvcc or cuDNN at configure time, or
 * -DMDENAS_CUDA=OFF): the entry point says so. */
#include "mdenas/backend.h"

md_status md_backend_cuda_create(int device, int allow_tf32, int fastest, md_backend **out) {
    (void)device, (void)allow_tf32, (void)fastest;
    *out = NULL;
    return md_fail(MD_ERR_BACKEND, "this build of mdenas has no CUDA backend: configure with "
                                   "-DMDENAS_CUDA=ON where nvcc and cuDNN are installed");
}

int md_backend_cuda_built(void) {
    return 0;
}

void *md_backend_cuda_stream(md_backend *be) {
    (void)be;
    return NULL;
}

int md_backend_cuda_device(const md_backend *be) {
    (void)be;
    return -1;
}

size_t md_backend_cuda_used_bytes(md_backend *be) {
    (void)be;
    return 0;
}
