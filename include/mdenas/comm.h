/* The communicator of a data-parallel run: every rank holds a replica of the
 * supernet and trains on its slice of each global batch; gradients of the
 * active weights are averaged by allreduce, statistics and control flags ride
 * along. Gradients go over host MPI (CPU ranks, ranks sharing a GPU) or, when
 * every rank has a GPU of its own, over NCCL on the GPUs (md_comm_select);
 * statistics and control always over host MPI. With one rank every call
 * returns at once without touching MPI (the NCCL path, when forced, still runs
 * its one-rank allreduce). */
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

/* ---- the path of the gradients (DESIGN.md, the communicator) --------------- */

typedef enum { MD_COMM_MPI = 0, MD_COMM_NCCL = 1 } md_comm_path;
typedef enum { MD_COMM_WANT_AUTO = 0, MD_COMM_WANT_MPI, MD_COMM_WANT_NCCL } md_comm_want;

/* "auto", "mpi" or "nccl" (--comm); MD_ERR_ARG naming --comm otherwise. */
md_status md_comm_want_parse(const char *text, md_comm_want *out);

/* What one rank knows when the path is chosen. */
typedef struct {
    md_comm_want want;
    int          cuda;         /* the backend is CUDA */
    int          nccl_version; /* ncclGetVersion's code (22809: 2.28.9); 0: not built */
    int          world;        /* ranks */
    int          local_size;   /* ranks on this node */
    int          gpus;         /* distinct GPUs this node's ranks are on (each rank takes
                                  its local rank mod the GPUs it sees) */
} md_comm_facts;

/* The path of one rank's facts, and a line for the log in note ("comm: NCCL
 * 2.28.9, 8 ranks, one GPU each", "comm: host MPI: 2 ranks share 1 GPU (NCCL
 * refuses two ranks on one GPU)", "comm: host MPI: CPU backend"). auto takes
 * NCCL for CUDA ranks that each own a GPU (local_size == gpus), with NCCL built,
 * from 2 ranks; nccl forces it, one rank included, and is MD_ERR_ARG naming
 * --comm (the reason also in note) where it cannot be. Pure: no MPI, no CUDA. */
md_status md_comm_choose(const md_comm_facts *f, md_comm_path *path, char *note, size_t cap);

/* Collective: every rank chooses with md_comm_choose on its own facts (be: the
 * rank's backend) and all take one path: NCCL only where every rank may (auto),
 * an error on every rank where one cannot (nccl). On NCCL, the NCCL communicator
 * is made (bootstrapped over this communicator). note: rank's line for the log. */
md_status md_comm_select(md_comm *c, md_backend *be, md_comm_want want, char *note, size_t cap);
md_comm_path md_comm_get_path(const md_comm *c);
/* ncclGetVersion's code of the NCCL this build links, 0 when built without. */
int          md_comm_nccl_version(void);
/* A version code as "2.28.9". */
void         md_comm_nccl_version_text(int code, char *buf, size_t cap);

/* md_comm_allreduce_grads for an arena in be's memory: host memory as above;
 * device memory of a CUDA backend packed on the GPU (one gather kernel) and
 * summed by one ncclAllReduce (NCCL path) or through pinned host memory by MPI
 * (host path), ordered against be's stream. `extra` is host memory on both. */
md_status md_comm_allreduce_grads_on(md_comm *c, md_backend *be, float *grads,
                                     const md_range *ranges, int nranges, float *extra,
                                     int n_extra);

#endif
