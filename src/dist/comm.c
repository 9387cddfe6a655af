/* The communicator: host MPI, and the device path of gradients (comm_dev.h). */
#include "mdenas/comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm_dev.h"

struct md_comm {
    MPI_Comm   comm;
    int        rank, size, mpi;
    int        local_rank, local_size;
    float     *pack; /* packed gradients + extras */
    size_t     pack_cap;
    size_t     grad_bytes;
    long       grad_calls;
    md_bn_sync bn;
    /* md_comm_select: the gradients' path; the device pack of a CUDA backend's
     * arena (either path) and the NCCL communicator (NCCL path) */
    md_comm_path path;
    md_backend  *dev_be;
    md_devpack  *pack_dev;
    md_nccl     *nccl;
};

/* Largest single MPI call: 16 Mi floats (64 MiB), well inside int counts. */
#define MD_COMM_CHUNK ((size_t)16 << 20)

static md_status mpi_check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return MD_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int  len = 0;
    MPI_Error_string(rc, msg, &len);
    return md_fail(MD_ERR_IO, "MPI %s failed: %s", what, msg);
}

static md_status bn_allreduce(void *ctx, double *buf, int n) {
    return md_comm_sum_f64(ctx, buf, (size_t)n);
}

static md_status make(int mpi, md_comm **out) {
    md_comm *c = calloc(1, sizeof *c);
    if (!c) return md_fail(MD_ERR_NOMEM, "communicator");
    c->mpi = mpi, c->rank = 0, c->size = 1, c->local_rank = 0, c->local_size = 1;
    c->bn.allreduce = bn_allreduce, c->bn.ctx = c;
    if (mpi) {
        c->comm = MPI_COMM_WORLD;
        MPI_Comm_rank(c->comm, &c->rank);
        MPI_Comm_size(c->comm, &c->size);
        MPI_Comm node;
        if (MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) ==
            MPI_SUCCESS) {
            MPI_Comm_rank(node, &c->local_rank);
            MPI_Comm_size(node, &c->local_size);
            MPI_Comm_free(&node);
        }
    }
    *out = c;
    return MD_OK;
}

md_status md_comm_create_world(md_comm **out) {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) return md_fail(MD_ERR_ARG, "communicator: MPI is not initialised");
    return make(1, out);
}

md_status md_comm_create_self(md_comm **out) {
    return make(0, out);
}

void md_comm_destroy(md_comm *c) {
    if (!c) return;
    md_devpack_destroy(c->pack_dev); /* waits for its stream, before NCCL goes */
    md_nccl_destroy(c->nccl);
    free(c->pack);
    free(c);
}

int md_comm_rank(const md_comm *c) {
    return c->rank;
}

int md_comm_size(const md_comm *c) {
    return c->size;
}

int md_comm_local_rank(const md_comm *c) {
    return c->local_rank;
}

int md_comm_local_size(const md_comm *c) {
    return c->local_size;
}

static md_status sum(md_comm *c, void *buf, size_t n, MPI_Datatype t, size_t elem) {
    if (c->size == 1) return MD_OK;
    for (size_t o = 0; o < n; o += MD_COMM_CHUNK) {
        size_t k = n - o < MD_COMM_CHUNK ? n - o : MD_COMM_CHUNK;
        MD_TRY(mpi_check(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + o * elem, (int)k, t, MPI_SUM,
                                       c->comm),
                         "allreduce"));
    }
    return MD_OK;
}

md_status md_comm_sum_f64(md_comm *c, double *buf, size_t n) {
    return sum(c, buf, n, MPI_DOUBLE, sizeof(double));
}

md_status md_comm_sum_f32(md_comm *c, float *buf, size_t n) {
    return sum(c, buf, n, MPI_FLOAT, sizeof(float));
}

md_status md_comm_bcast(md_comm *c, void *buf, size_t bytes, int root) {
    if (c->size == 1) return MD_OK;
    for (size_t o = 0; o < bytes; o += (size_t)INT_MAX / 2) {
        size_t k = bytes - o < (size_t)INT_MAX / 2 ? bytes - o : (size_t)INT_MAX / 2;
        MD_TRY(mpi_check(MPI_Bcast((char *)buf + o, (int)k, MPI_BYTE, root, c->comm), "bcast"));
    }
    return MD_OK;
}

md_status md_comm_barrier(md_comm *c) {
    if (c->size == 1) return MD_OK;
    return mpi_check(MPI_Barrier(c->comm), "barrier");
}

md_status md_comm_max_int(md_comm *c, int *v) {
    if (c->size == 1) return MD_OK;
    return mpi_check(MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_INT, MPI_MAX, c->comm), "allreduce");
}

md_status md_comm_allreduce_grads(md_comm *c, float *grads, const md_range *ranges, int nranges,
                                  float *extra, int n_extra) {
    if (c->size == 1) return MD_OK;
    size_t n = (size_t)n_extra;
    for (int i = 0; i < nranges; i++) n += ranges[i].count;
    if (n > c->pack_cap) {
        float *p = realloc(c->pack, n * sizeof *p);
        if (!p) return md_fail(MD_ERR_NOMEM, "allreduce: %zu floats of packed gradients", n);
        c->pack = p, c->pack_cap = n;
    }
    /* Pack, one reduction, unpack. */
    size_t o = 0;
    for (int i = 0; i < nranges; i++) {
        memcpy(c->pack + o, grads + ranges[i].offset, ranges[i].count * sizeof(float));
        o += ranges[i].count;
    }
    memcpy(c->pack + o, extra, (size_t)n_extra * sizeof *extra);
    MD_TRY(md_comm_sum_f32(c, c->pack, n));
    o = 0;
    for (int i = 0; i < nranges; i++) {
        memcpy(grads + ranges[i].offset, c->pack + o, ranges[i].count * sizeof(float));
        o += ranges[i].count;
    }
    memcpy(extra, c->pack + o, (size_t)n_extra * sizeof *extra);
    c->grad_bytes += n * sizeof(float);
    c->grad_calls += (long)((n + MD_COMM_CHUNK - 1) / MD_COMM_CHUNK);
    return MD_OK;
}

size_t md_comm_grad_bytes(const md_comm *c) {
    return c->grad_bytes;
}

long md_comm_grad_calls(const md_comm *c) {
    return c->grad_calls;
}

const md_bn_sync *md_comm_bn_sync(md_comm *c) {
    return &c->bn;
}

/* ---- the gradients' path ---------------------------------------------------------- */

int md_comm_nccl_version(void) {
    return md_nccl_version();
}

md_comm_path md_comm_get_path(const md_comm *c) {
    return c->path;
}

/* The distinct GPUs that the ranks of this node are on, by UUID: ranks that
 * each see only their own GPU (srun --gpus-per-task=1: device 0 everywhere)
 * count one each, ranks that share one count once. Collective over the node;
 * every rank takes part whatever its backend. */
static md_status node_gpus(const md_comm *c, md_backend *be, int *gpus) {
    unsigned char id[16] = {0};
    int           device = md_backend_cuda_device(be);
    md_status     s = device >= 0 ? md_devpack_gpu_uuid(device, id) : MD_OK;
    *gpus = device >= 0 && s == MD_OK;
    if (!c->mpi || c->local_size == 1) return s;
    MPI_Comm node;
    if (MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) !=
        MPI_SUCCESS)
        return md_fail(MD_ERR_IO, "communicator: MPI_Comm_split_type failed");
    /* A rank counts its GPU unless a lower local rank is on it too. */
    int first = *gpus, rc = MPI_SUCCESS;
    for (int j = 0; j < c->local_size && rc == MPI_SUCCESS; j++) {
        unsigned char other[16];
        if (j == c->local_rank) memcpy(other, id, sizeof other);
        rc = MPI_Bcast(other, (int)sizeof other, MPI_BYTE, j, node);
        if (rc == MPI_SUCCESS && j < c->local_rank && *gpus && !memcmp(other, id, sizeof id))
            first = 0;
    }
    if (rc == MPI_SUCCESS) rc = MPI_Allreduce(&first, gpus, 1, MPI_INT, MPI_SUM, node);
    MPI_Comm_free(&node);
    if (rc != MPI_SUCCESS) return md_fail(MD_ERR_IO, "communicator: the node's GPUs: MPI failed");
    return s;
}

/* One rank's facts: its backend, this build, the node. */
static md_status facts_of(const md_comm *c, md_backend *be, md_comm_want want,
                          md_comm_facts *f) {
    f->want = want;
    f->cuda = md_backend_cuda_device(be) >= 0;
    f->nccl_version = md_nccl_version();
    f->world = c->size, f->local_size = c->local_size;
    return node_gpus(c, be, &f->gpus);
}

/* Every rank learns whether any failed (its message says why); all leave together. */
static md_status agree(md_comm *c, md_status s, const char *what) {
    int failed = s != MD_OK ? (int)s : 0;
    MD_TRY(md_comm_max_int(c, &failed));
    if (s != MD_OK) return s;
    if (failed)
        return md_fail((md_status)failed, "%s: another rank failed (its message says why)", what);
    return MD_OK;
}

md_status md_comm_select(md_comm *c, md_backend *be, md_comm_want want, char *note, size_t cap) {
    md_comm_facts f;
    MD_TRY(agree(c, facts_of(c, be, want, &f), "the node's GPUs"));
    md_comm_path path = MD_COMM_MPI;
    MD_TRY(agree(c, md_comm_choose(&f, &path, note, cap), "--comm nccl"));
    /* auto: NCCL only when every rank may take it */
    int host = path != MD_COMM_NCCL;
    MD_TRY(md_comm_max_int(c, &host));
    if (host && path == MD_COMM_NCCL)
        snprintf(note, cap, "comm: host MPI: not every rank has a GPU of its own");
    c->path = host ? MD_COMM_MPI : MD_COMM_NCCL;
    /* A CUDA backend's gradients live in device memory: either path packs them
     * there (with one rank and host MPI nothing is reduced). A pack is made per
     * run: it waits on that run's backend stream. */
    md_status s = MD_OK;
    md_devpack_destroy(c->pack_dev);
    c->pack_dev = NULL, c->dev_be = NULL;
    if (f.cuda && (c->size > 1 || c->path == MD_COMM_NCCL))
        s = md_devpack_create(be, &c->pack_dev);
    if (s == MD_OK) c->dev_be = be;
    MD_TRY(agree(c, s, "communicator"));
    if (c->path == MD_COMM_NCCL && !c->nccl)
        MD_TRY(agree(c, md_nccl_create(c->comm, c->rank, c->size, md_backend_cuda_device(be),
                                       &c->nccl),
                     "NCCL set-up"));
    return MD_OK;
}

/* The device arena's sum: packed on the GPU, reduced by NCCL there or by MPI
 * through the pinned copy, unpacked on the GPU. */
static md_status allreduce_dev(md_comm *c, float *grads, const md_range *ranges, int nranges,
                               float *extra, int n_extra) {
    int    nccl = c->path == MD_COMM_NCCL;
    float *buf;
    size_t n;
    MD_TRY(md_devpack_gather(c->pack_dev, grads, ranges, nranges, extra, n_extra, !nccl, &buf,
                             &n));
    if (nccl) {
        MD_TRY(md_nccl_sum_f32(c->nccl, buf, n, md_devpack_stream(c->pack_dev)));
        c->grad_calls++;
    } else {
        float *host;
        MD_TRY(md_devpack_to_host(c->pack_dev, &host));
        MD_TRY(md_comm_sum_f32(c, host, n));
        MD_TRY(md_devpack_from_host(c->pack_dev));
        c->grad_calls += (long)((n + MD_COMM_CHUNK - 1) / MD_COMM_CHUNK);
    }
    MD_TRY(md_devpack_scatter(c->pack_dev, grads));
    MD_TRY(md_devpack_extras(c->pack_dev, extra, n_extra, nccl ? md_nccl_wait : NULL, c->nccl));
    c->grad_bytes += n * sizeof(float);
    return MD_OK;
}

md_status md_comm_allreduce_grads_on(md_comm *c, md_backend *be, float *grads,
                                     const md_range *ranges, int nranges, float *extra,
                                     int n_extra) {
    if (c->path != MD_COMM_NCCL && (c->size == 1 || !be || md_backend_is_host(be)))
        return md_comm_allreduce_grads(c, grads, ranges, nranges, extra, n_extra);
    if (!c->pack_dev || be != c->dev_be)
        return md_fail(MD_ERR_ARG, "communicator: gradients in the memory of backend %s, which "
                                   "md_comm_select was not given", md_backend_name(be));
    return allreduce_dev(c, grads, ranges, nranges, extra, n_extra);
}
