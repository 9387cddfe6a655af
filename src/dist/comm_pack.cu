/* The communicator's gradient pack on a GPU (comm_dev.h): one gather kernel
 * over a device table of the active ranges, cached per range set, on a stream
 * of its own ordered against the backend's stream by events. */
#include <cuda_runtime.h>
#include <mpi.h> /* outside extern "C": its C++ part (comm_dev.h includes it) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "dist/comm_dev.h"
}

/* One range: source offset in the arena, destination offset in the pack (the
 * floats before it). The table has one more entry whose dst is the total. */
typedef struct {
    unsigned long long src, dst;
} pack_span;

struct md_devpack {
    int          device;
    cudaStream_t compute, stream;
    cudaEvent_t  ready, done;
    float       *buf; /* device: ranges then extras */
    size_t       cap;
    pack_span   *table; /* device copy of spans */
    int          table_cap;
    md_range    *ranges; /* the range set the table holds */
    int          nranges, ranges_cap;
    size_t       grads_n; /* floats of the ranges */
    int          n_extra;
    float       *host; /* pinned: the extras, or the whole buffer (host_copy) */
    size_t       host_cap;
    int          host_whole; /* host holds the whole buffer (extras after the ranges) */
    float       *graddst; /* grads of the last gather, for the scatter */
};

static md_status cu_fail(cudaError_t e, const char *what, const char *file, int line) {
    return md_fail_at(file, line, MD_ERR_BACKEND, "communicator: %s failed: %s", what,
                      cudaGetErrorString(e));
}

#define CU_TRY(call)                                                                               \
    do {                                                                                           \
        cudaError_t cu_e_ = (call);                                                                \
        if (cu_e_ != cudaSuccess) return cu_fail(cu_e_, #call, __FILE__, __LINE__);               \
    } while (0)

/* *buf holds at least `want` floats (device memory, or pinned host memory):
 * a larger one after the pack's stream has drained, the old one freed. */
static md_status grow(md_devpack *d, float **buf, size_t *cap, size_t want, int pinned) {
    if (want <= *cap) return MD_OK;
    CU_TRY(cudaStreamSynchronize(d->stream));
    if (pinned) cudaFreeHost(*buf);
    else cudaFree(*buf);
    *buf = NULL, *cap = 0;
    CU_TRY(pinned ? cudaMallocHost((void **)buf, sizeof(float) * want)
                  : cudaMalloc((void **)buf, sizeof(float) * want));
    *cap = want;
    return MD_OK;
}

/* The span of float i: the last entry with dst <= i (empty ranges share a dst
 * with the next, which this picks). */
__device__ static int span_of(const pack_span *t, int nr, unsigned long long i) {
    int lo = 0, hi = nr - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (t[mid].dst <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

__global__ static void k_pack(float *grads, float *buf, const pack_span *t, int nr,
                              unsigned long long n, int to_pack) {
    unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += step) {
        int                k = span_of(t, nr, i);
        unsigned long long g = t[k].src + (i - t[k].dst);
        if (to_pack) buf[i] = grads[g];
        else grads[g] = buf[i];
    }
}

static unsigned pack_blocks(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b > 4096 ? 4096 : b ? b : 1);
}

extern "C" md_status md_devpack_gpu_uuid(int device, unsigned char uuid[16]) {
    cudaDeviceProp prop;
    CU_TRY(cudaGetDeviceProperties(&prop, device));
    memcpy(uuid, prop.uuid.bytes, 16);
    return MD_OK;
}

extern "C" md_status md_devpack_create(md_backend *be, md_devpack **out) {
    *out = NULL;
    int device = md_backend_cuda_device(be);
    if (device < 0)
        return md_fail(MD_ERR_ARG, "communicator: a device pack needs the CUDA backend");
    md_devpack *d = (md_devpack *)calloc(1, sizeof *d);
    if (!d) return md_fail(MD_ERR_NOMEM, "communicator: device pack");
    d->device = device, d->compute = (cudaStream_t)md_backend_cuda_stream(be);
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&d->ready, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&d->done, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        md_devpack_destroy(d);
        return cu_fail(e, "creating the communicator's stream and events", __FILE__, __LINE__);
    }
    *out = d;
    return MD_OK;
}

extern "C" void md_devpack_destroy(md_devpack *d) {
    if (!d) return;
    if (d->stream) cudaStreamSynchronize(d->stream);
    cudaFree(d->buf);
    cudaFree(d->table);
    cudaFreeHost(d->host);
    if (d->ready) cudaEventDestroy(d->ready);
    if (d->done) cudaEventDestroy(d->done);
    if (d->stream) cudaStreamDestroy(d->stream);
    free(d->ranges);
    free(d);
}

extern "C" void *md_devpack_stream(md_devpack *d) {
    return (void *)d->stream;
}

/* The table, buffer and pinned copy for this range set (only when it changed:
 * a plan's set stays for a sampling period). Buffers only grow. */
static md_status prepare(md_devpack *d, const md_range *r, int nr, int n_extra, int host_copy) {
    int same = nr == d->nranges && d->table &&
               (nr == 0 || !memcmp(r, d->ranges, sizeof *r * (size_t)nr));
    if (!same) {
        if (nr > d->ranges_cap) {
            md_range *q = (md_range *)realloc(d->ranges, sizeof *q * (size_t)nr);
            if (!q) return md_fail(MD_ERR_NOMEM, "communicator: %d ranges", nr);
            d->ranges = q, d->ranges_cap = nr;
        }
        pack_span *t = (pack_span *)malloc(sizeof *t * (size_t)(nr + 1));
        if (!t) return md_fail(MD_ERR_NOMEM, "communicator: range table");
        size_t o = 0;
        for (int i = 0; i < nr; i++) {
            t[i].src = r[i].offset, t[i].dst = o;
            o += r[i].count;
        }
        t[nr].src = 0, t[nr].dst = o;
        cudaError_t e = cudaSuccess;
        if (nr + 1 > d->table_cap) {
            CU_TRY(cudaStreamSynchronize(d->stream)); /* the old table may be in use */
            cudaFree(d->table);
            d->table = NULL, d->table_cap = 0;
            e = cudaMalloc((void **)&d->table, sizeof *t * (size_t)(nr + 1));
            if (e == cudaSuccess) d->table_cap = nr + 1;
        }
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(d->table, t, sizeof *t * (size_t)(nr + 1), cudaMemcpyHostToDevice,
                                d->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(d->stream); /* t is freed next */
        free(t);
        if (e != cudaSuccess) return cu_fail(e, "uploading the range table", __FILE__, __LINE__);
        if (nr) memcpy(d->ranges, r, sizeof *r * (size_t)nr);
        d->nranges = nr, d->grads_n = o;
    }
    size_t total = d->grads_n + (size_t)n_extra;
    MD_TRY(grow(d, &d->buf, &d->cap, total, 0));
    MD_TRY(grow(d, &d->host, &d->host_cap, host_copy ? total : (size_t)n_extra, 1));
    d->n_extra = n_extra, d->host_whole = host_copy;
    return MD_OK;
}

/* Where the extras stand in the pinned copy: after the ranges when it holds
 * the whole buffer, else at its start. */
static float *host_extras(md_devpack *d) {
    return d->host_whole ? d->host + d->grads_n : d->host;
}

extern "C" md_status md_devpack_gather(md_devpack *d, const float *grads, const md_range *ranges,
                                       int nranges, const float *extra, int n_extra,
                                       int host_copy, float **buf, size_t *n) {
    if (nranges < 0 || n_extra < 0)
        return md_fail(MD_ERR_ARG, "communicator: %d ranges, %d extras", nranges, n_extra);
    CU_TRY(cudaSetDevice(d->device));
    MD_TRY(prepare(d, ranges, nranges, n_extra, host_copy));
    CU_TRY(cudaEventRecord(d->ready, d->compute));
    CU_TRY(cudaStreamWaitEvent(d->stream, d->ready, 0));
    if (d->grads_n) {
        k_pack<<<pack_blocks(d->grads_n), 256, 0, d->stream>>>(
            (float *)grads, d->buf, d->table, d->nranges, d->grads_n, 1);
        CU_TRY(cudaGetLastError());
    }
    if (n_extra) {
        /* The pinned copy is free: the previous step waited for its stream. */
        float *he = host_extras(d);
        memcpy(he, extra, sizeof(float) * (size_t)n_extra);
        CU_TRY(cudaMemcpyAsync(d->buf + d->grads_n, he, sizeof(float) * (size_t)n_extra,
                               cudaMemcpyHostToDevice, d->stream));
    }
    d->graddst = (float *)grads;
    *buf = d->buf, *n = d->grads_n + (size_t)n_extra;
    return MD_OK;
}

extern "C" md_status md_devpack_to_host(md_devpack *d, float **host) {
    size_t n = d->grads_n + (size_t)d->n_extra;
    if (!d->host_whole) return md_fail(MD_ERR_ARG, "communicator: gathered without a host copy");
    CU_TRY(cudaMemcpyAsync(d->host, d->buf, sizeof(float) * n, cudaMemcpyDeviceToHost, d->stream));
    CU_TRY(cudaStreamSynchronize(d->stream));
    *host = d->host;
    return MD_OK;
}

extern "C" md_status md_devpack_from_host(md_devpack *d) {
    size_t n = d->grads_n + (size_t)d->n_extra;
    if (!d->host_whole) return md_fail(MD_ERR_ARG, "communicator: gathered without a host copy");
    CU_TRY(cudaMemcpyAsync(d->buf, d->host, sizeof(float) * n, cudaMemcpyHostToDevice, d->stream));
    return MD_OK;
}

extern "C" md_status md_devpack_scatter(md_devpack *d, float *grads) {
    if (grads != d->graddst)
        return md_fail(MD_ERR_ARG, "communicator: scatter into another arena than the gather's");
    if (d->grads_n) {
        k_pack<<<pack_blocks(d->grads_n), 256, 0, d->stream>>>(grads, d->buf, d->table,
                                                               d->nranges, d->grads_n, 0);
        CU_TRY(cudaGetLastError());
    }
    if (d->n_extra)
        CU_TRY(cudaMemcpyAsync(host_extras(d), d->buf + d->grads_n,
                               sizeof(float) * (size_t)d->n_extra, cudaMemcpyDeviceToHost,
                               d->stream));
    CU_TRY(cudaEventRecord(d->done, d->stream));
    CU_TRY(cudaStreamWaitEvent(d->compute, d->done, 0));
    return MD_OK;
}

extern "C" md_status md_devpack_extras(md_devpack *d, float *extra, int n_extra,
                                       md_status (*wait)(void *ctx, void *stream), void *ctx) {
    if (n_extra != d->n_extra)
        return md_fail(MD_ERR_ARG, "communicator: %d extras asked, %d gathered", n_extra,
                       d->n_extra);
    if (wait) MD_TRY(wait(ctx, (void *)d->stream));
    else CU_TRY(cudaStreamSynchronize(d->stream));
    if (n_extra) memcpy(extra, host_extras(d), sizeof(float) * (size_t)n_extra);
    return MD_OK;
}
