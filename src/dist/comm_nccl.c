/* The communicator's NCCL path (comm_dev.h): MPI only to bootstrap (rank 0's
 * ncclUniqueId broadcast), NCCL for the gradient sum on the GPU. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/comm_dev.h"

struct md_nccl {
    ncclComm_t comm; /* NULL once aborted */
    int        device;
};

static md_status nccl_fail(ncclResult_t r, const char *what, ncclComm_t comm) {
    const char *last = comm ? ncclGetLastError(comm) : NULL;
    return md_fail(MD_ERR_BACKEND, "NCCL %s failed: %s%s%s", what, ncclGetErrorString(r),
                   last && last[0] ? ": " : "", last ? last : "");
}

int md_nccl_version(void) {
    int v = 0;
    return ncclGetVersion(&v) == ncclSuccess ? v : 0;
}

md_status md_nccl_create(MPI_Comm comm, int rank, int size, int device, md_nccl **out) {
    *out = NULL;
    /* Every rank's GPU first, agreed: a rank that cannot select its GPU must not
     * leave the others waiting in ncclCommInitRank. */
    cudaError_t e = cudaSetDevice(device);
    int         ok = e == cudaSuccess;
    if (size > 1 && MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS)
        return md_fail(MD_ERR_IO, "MPI allreduce before NCCL set-up failed");
    if (e != cudaSuccess)
        return md_fail(MD_ERR_BACKEND, "NCCL: cudaSetDevice(%d) failed: %s", device,
                       cudaGetErrorString(e));
    if (!ok) return md_fail(MD_ERR_BACKEND, "NCCL: another rank could not select its GPU");
    /* The id and whether rank 0 made one, in one broadcast: every rank learns
     * of a failure instead of waiting in ncclCommInitRank. */
    struct {
        ncclUniqueId id;
        int          ok;
    } boot;
    memset(&boot, 0, sizeof boot);
    ncclResult_t r = ncclSuccess;
    if (rank == 0) {
        r = ncclGetUniqueId(&boot.id);
        boot.ok = r == ncclSuccess;
    }
    if (size > 1 && MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, comm) != MPI_SUCCESS)
        return md_fail(MD_ERR_IO, "MPI bcast of the NCCL unique id failed");
    if (!boot.ok)
        return rank == 0 ? nccl_fail(r, "ncclGetUniqueId", NULL)
                         : md_fail(MD_ERR_BACKEND, "NCCL: rank 0 could not make a unique id");
    md_nccl *n = calloc(1, sizeof *n);
    if (!n) return md_fail(MD_ERR_NOMEM, "NCCL communicator");
    n->device = device;
    if ((r = ncclCommInitRank(&n->comm, size, boot.id, rank)) != ncclSuccess) {
        free(n);
        return nccl_fail(r, "ncclCommInitRank", NULL);
    }
    *out = n;
    return MD_OK;
}

void md_nccl_destroy(md_nccl *n) {
    if (!n) return;
    if (n->comm) ncclCommDestroy(n->comm);
    free(n);
}

md_status md_nccl_sum_f32(md_nccl *n, float *buf, size_t count, void *stream) {
    if (!n->comm) return md_fail(MD_ERR_BACKEND, "NCCL: the communicator was aborted");
    ncclResult_t r = ncclAllReduce(buf, buf, count, ncclFloat, ncclSum, n->comm,
                                   (cudaStream_t)stream);
    return r == ncclSuccess ? MD_OK : nccl_fail(r, "ncclAllReduce", n->comm);
}

md_status md_nccl_wait(void *nccl, void *stream) {
    md_nccl *n = nccl;
    for (;;) {
        cudaError_t e = cudaStreamQuery((cudaStream_t)stream);
        if (e == cudaSuccess) return MD_OK;
        if (e != cudaErrorNotReady)
            return md_fail(MD_ERR_BACKEND, "NCCL: the communicator's stream failed: %s",
                           cudaGetErrorString(e));
        ncclResult_t async = ncclSuccess;
        if (n->comm && ncclCommGetAsyncError(n->comm, &async) == ncclSuccess &&
            async != ncclSuccess && async != ncclInProgress) {
            md_status s = nccl_fail(async, "allreduce (asynchronous error)", n->comm);
            ncclCommAbort(n->comm);
            n->comm = NULL;
            return s;
        }
        struct timespec ts = {0, 20000}; /* 20 us: a step's reduction takes milliseconds */
        nanosleep(&ts, NULL);
    }
}
