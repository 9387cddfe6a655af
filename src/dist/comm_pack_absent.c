/* Builds without the CUDA backend: no device pack (every model is in host
 * memory, so the communicator never asks for one). */
#include "dist/comm_dev.h"

md_status md_devpack_gpu_uuid(int device, unsigned char uuid[16]) {
    (void)device, (void)uuid;
    return md_fail(MD_ERR_BACKEND, "communicator: this build has no CUDA backend");
}

md_status md_devpack_create(md_backend *be, md_devpack **out) {
    (void)be;
    *out = NULL;
    return md_fail(MD_ERR_BACKEND, "communicator: this build has no CUDA backend");
}

void md_devpack_destroy(md_devpack *d) {
    (void)d;
}

void *md_devpack_stream(md_devpack *d) {
    (void)d;
    return NULL;
}

md_status md_devpack_gather(md_devpack *d, const float *grads, const md_range *ranges,
                            int nranges, const float *extra, int n_extra, int host_copy,
                            float **buf, size_t *n) {
    (void)d, (void)grads, (void)ranges, (void)nranges, (void)extra, (void)n_extra;
    (void)host_copy, (void)buf, (void)n;
    return md_fail(MD_ERR_BACKEND, "communicator: this build has no CUDA backend");
}

md_status md_devpack_to_host(md_devpack *d, float **host) {
    (void)d, (void)host;
    return md_fail(MD_ERR_BACKEND, "communicator: this build has no CUDA backend");
}

md_status md_devpack_from_host(md_devpack *d) {
    (void)d;
    return md_fail(MD_ERR_BACKEND, "communicator: this build has no CUDA backend");
}

md_status md_devpack_scatter(md_devpack *d, float *grads) {
    (void)d, (void)grads;
    return md_fail(MD_ERR_BACKEND, "communicator: this build has no CUDA backend");
}

md_status md_devpack_extras(md_devpack *d, float *extra, int n_extra,
                            md_status (*wait)(void *ctx, void *stream), void *ctx) {
    (void)d, (void)extra, (void)n_extra, (void)wait, (void)ctx;
    return md_fail(MD_ERR_BACKEND, "communicator: this build has no CUDA backend");
}
