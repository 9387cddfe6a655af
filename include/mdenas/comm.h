/* The communicator of a data-parallel run: every rank holds a replica of the
 * supernet and trains on its slice of each global batch; gradients of the
 * active weights are averaged by allreduce, statistics and control flags ride
 * along. Host MPI for now (CPU ranks); a device path (NCCL) plugs in here.
 * With one rank every call returns at once without touching MPI. */
#ifndef MDENAS_COMM_H
#define MDENAS_COMM_H

#include <stddef.h>

#include "mdenas/backend.h"
#include "mdenas/error.h"
#include "mdenas/optim.h"

typedef struct md_comm md_comm;

/* Wrap MPI_COMM_WORLD (MPI must be initialised). */
md_status md_comm_create_world(md_comm **out);
/* A communicator of one rank that never calls MPI (library tests). */
md_status md_comm_create_self(md_comm **out);
void      md_comm_destroy(md_comm *c);
int       md_comm_rank(const md_comm *c);
int       md_comm_size(const md_comm *c);
/* Rank among, and number of, the ranks on this node (shared memory). */
int       md_comm_local_rank(const md_comm *c);
int       md_comm_local_size(const md_comm *c);

/* In-place sums over ranks. */
md_status md_comm_sum_f64(md_comm *c, double *buf, size_t n);
md_status md_comm_sum_f32(md_comm *c, float *buf, size_t n);
/* Rank `root`'s buffer to every rank. */
md_status md_comm_bcast(md_comm *c, void *buf, size_t bytes, int root);
md_status md_comm_barrier(md_comm *c);
/* The maximum of an int over ranks (agreement on flags and error codes). */
md_status md_comm_max_int(md_comm *c, int *v);

/* Sum the gradients in `ranges` of arena `grads` over ranks (each rank holds
 * its part of the global batch's gradient, see md_plan_scale_loss_grad): packed
 * into one buffer, reduced in as few MPI calls as its size allows (one up to
 * 64 MiB), unpacked. `extra` (n_extra floats, e.g. loss sum, correct count, a
 * stop flag) rides in the same call and comes back summed. Bytes reduced are
 * added to the counter below. */
md_status md_comm_allreduce_grads(md_comm *c, float *grads, const md_range *ranges, int nranges,
                                  float *extra, int n_extra);
/* Bytes passed to MPI_Allreduce by md_comm_allreduce_grads so far, and calls. */
size_t md_comm_grad_bytes(const md_comm *c);
long   md_comm_grad_calls(const md_comm *c);

/* Cross-replica batch norm: a md_bn_sync whose reductions go over this communicator. */
const md_bn_sync *md_comm_bn_sync(md_comm *c);

#endif
