/* Host-MPI communicator. */
#include "mdenas/comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

struct md_comm {
    MPI_Comm   comm;
    int        rank, size, mpi;
    int        local_rank, local_size;
    float     *pack; /* packed gradients + extras */
    size_t     pack_cap;
    size_t     grad_bytes;
    long       grad_calls;
    md_bn_sync bn;
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
