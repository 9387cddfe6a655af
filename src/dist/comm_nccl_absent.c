/* Builds without NCCL (no CUDA backend, nccl.h or libnccl at configure time, or
 * -DMDENAS_NCCL=OFF): the communicator stays on host MPI. */
#include "dist/comm_dev.h"

int md_nccl_version(void) {
    return 0;
}

md_status md_nccl_create(MPI_Comm comm, int rank, int size, int device, md_nccl **out) {
    (void)comm, (void)rank, (void)size, (void)device;
    *out = NULL;
    return md_fail(MD_ERR_ARG, "this build of mdenas has no NCCL: configure with -DMDENAS_NCCL=ON "
                               "where nccl.h and libnccl are installed");
}

void md_nccl_destroy(md_nccl *n) {
    (void)n;
}

md_status md_nccl_sum_f32(md_nccl *n, float *buf, size_t count, void *stream) {
    (void)n, (void)buf, (void)count, (void)stream;
    return md_fail(MD_ERR_ARG, "this build of mdenas has no NCCL");
}

md_status md_nccl_wait(void *nccl, void *stream) {
    (void)nccl, (void)stream;
    return md_fail(MD_ERR_ARG, "this build of mdenas has no NCCL");
}
