/* Private to src/dist: the communicator's device side.
 *
 * md_devpack (comm_pack.cu; comm_pack_absent.c without CUDA) packs the active
 * gradient ranges of a device arena into one contiguous device buffer with one
 * gather kernel, the step's scalars in its tail, on a stream of its own that
 * events order against the backend's compute stream; then scatters the sums
 * back. Its buffers are sized once per range set and kept: the steady state
 * allocates nothing.
 *
 * md_nccl (comm_nccl.c; comm_nccl_absent.c without NCCL) is an NCCL
 * communicator bootstrapped over MPI: rank 0's ncclUniqueId broadcast, then
 * ncclCommInitRank on the rank's GPU. */
#ifndef MDENAS_DIST_COMM_DEV_H
#define MDENAS_DIST_COMM_DEV_H

#include <mpi.h>
#include <stddef.h>

#include "mdenas/backend.h"
#include "mdenas/optim.h"

typedef struct md_devpack md_devpack;

/* The UUID of GPU `device` (16 bytes): the same GPU has the same one whichever
 * devices a process sees (CUDA_VISIBLE_DEVICES, srun --gpus-per-task). */
md_status md_devpack_gpu_uuid(int device, unsigned char uuid[16]);
/* On CUDA backend be's device, ordered against its stream. */
md_status md_devpack_create(md_backend *be, md_devpack **out);
void      md_devpack_destroy(md_devpack *d);
/* The pack's stream (a cudaStream_t). */
void     *md_devpack_stream(md_devpack *d);
/* After the work issued so far on the compute stream: grads[ranges] into the
 * device buffer, then the n_extra host floats `extra` after them. host_copy: the
 * buffer will go through the host (md_devpack_to_host), so a pinned copy of it
 * is kept too. *buf, *n: the device buffer and its floats (ranges + extras). */
md_status md_devpack_gather(md_devpack *d, const float *grads, const md_range *ranges,
                            int nranges, const float *extra, int n_extra, int host_copy,
                            float **buf, size_t *n);
/* The whole buffer to its pinned host copy (waits for it) and back. */
md_status md_devpack_to_host(md_devpack *d, float **host);
md_status md_devpack_from_host(md_devpack *d);
/* The buffer back into grads[ranges] of the last gather and its extras to the
 * host; the compute stream waits for the scatter. Then md_devpack_extras waits
 * for the stream (`wait`, when given, is called to do it instead: NCCL's
 * watch for asynchronous errors) and copies the n_extra summed extras out. */
md_status md_devpack_scatter(md_devpack *d, float *grads);
md_status md_devpack_extras(md_devpack *d, float *extra, int n_extra,
                            md_status (*wait)(void *ctx, void *stream), void *ctx);

typedef struct md_nccl md_nccl;

/* NCCL's version code (ncclGetVersion: 22809 for 2.28.9), 0 when not built. */
int       md_nccl_version(void);
/* Collective over comm (size ranks; comm unused when size is 1) on GPU device. */
md_status md_nccl_create(MPI_Comm comm, int rank, int size, int device, md_nccl **out);
void      md_nccl_destroy(md_nccl *n);
/* In-place sum of n floats of device memory, enqueued on stream. */
md_status md_nccl_sum_f32(md_nccl *n, float *buf, size_t count, void *stream);
/* Wait for stream, polling NCCL for asynchronous errors (a peer that failed):
 * such an error aborts the NCCL communicator and is returned, never a hang. */
md_status md_nccl_wait(void *nccl, void *stream);

#endif
