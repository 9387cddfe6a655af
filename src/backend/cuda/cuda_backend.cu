/* The CUDA backend: device memory, one stream, cuDNN convolutions and batch
 * norm, cuBLAS for the linear layer, and small kernels of our own for the
 * memory-bound ops. Semantics are the CPU backend's (backend.h); the op tests
 * compare the two. backend.c has validated shapes before any entry runs.
 *
 * Deviations from "cuDNN for everything", and why:
 * - Pooling runs on our kernels: PyTorch's max-pool backward sends the gradient
 *   to the FIRST maximum of a window and the vtable gives pool_backward x, not
 *   the forward output that cuDNN needs; a gather kernel does both exactly and
 *   deterministically.
 * - Cross-replica BN (md_bn_state.sync) runs on our kernels, since its sums go
 *   to the host between the passes; plain BN uses cuDNN.
 *
 * Buffers a CUDA graph may have captured (the convolution workspace, the
 * reduction buffers, the BN constants) are never freed or moved while a graph
 * lives: a reservation that must grow takes a new buffer and parks the old one
 * until the last graph is destroyed (release()). Everything, constants
 * included, is issued on the backend's one non-blocking stream.
 *
 * Convolution algorithms are chosen among cuDNN's deterministic ones unless
 * the backend was made with fastest = 1 (PyTorch's cudnn.deterministic), so a
 * resumed run repeats an uninterrupted one bit for bit. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/backend_impl.h"
#include "backend/cuda/cuda_data.h"
#include "mdenas/backend.h"
}

/* ---- errors ---------------------------------------------------------------------- */

static md_status cuda_fail(cudaError_t e, const char *what, const char *file, int line) {
    return md_fail_at(file, line, MD_ERR_BACKEND, "CUDA %s failed: %s", what,
                      cudaGetErrorString(e));
}
#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cuda_fail(e_, #call, __FILE__, __LINE__);                    \
    } while (0)
#define CUDNN_TRY(call)                                                                            \
    do {                                                                                           \
        cudnnStatus_t e_ = (call);                                                                 \
        if (e_ != CUDNN_STATUS_SUCCESS)                                                            \
            return md_fail_at(__FILE__, __LINE__, MD_ERR_BACKEND, "cuDNN %s failed: %s", #call,   \
                              cudnnGetErrorString(e_));                                            \
    } while (0)
#define CUBLAS_TRY(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t e_ = (call);                                                                \
        if (e_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return md_fail_at(__FILE__, __LINE__, MD_ERR_BACKEND, "cuBLAS %s failed: status %d",  \
                              #call, (int)e_);                                                     \
    } while (0)
/* Kernel launches report configuration errors at once, execution errors later. */
#define LAUNCH_TRY() CUDA_TRY(cudaGetLastError())

/* ---- the backend ------------------------------------------------------------------- */

typedef struct {
    void *p;
    int   pinned; /* cudaFreeHost, else cudaFree */
} cu_parked;

typedef struct {
    md_backend     base;
    int            device;
    int            allow_tf32;
    cudaStream_t   stream;
    cudnnHandle_t  dnn;
    cublasHandle_t blas;
    void          *workspace; /* shared by every convolution */
    size_t         ws_bytes, ws_limit;
    double        *red_dev; /* reductions: partial sums, results */
    size_t         red_cap;  /* doubles */
    double        *red_host; /* pinned */
    float         *ones, *zeros; /* [C] for non-affine BN on cuDNN */
    float         *dummy;        /* [2C] dgamma/dbeta sink */
    int            ones_cap;
    void          *blas_ws;   /* cuBLAS workspace */
    float         *mask_host; /* pinned, dropout masks */
    size_t         mask_cap;
    int            fastest;     /* 0: deterministic convolution algorithms only */
    int            live_graphs; /* graphs instantiated and not yet destroyed */
    cu_parked     *parked; /* buffers outgrown while a graph lived: freed when none does */
    int nparked, parked_cap;
} cuda_backend;

static cuda_backend *cb_of(md_backend *be) {
    return (cuda_backend *)be;
}

static unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 8u ? 65535u * 8u : (b ? b : 1));
}

static void free_now(void *p, int pinned) {
    if (!p) return;
    if (pinned) cudaFreeHost(p);
    else cudaFree(p);
}

/* Room to park k more buffers, made before anything is released. */
static md_status park_room(cuda_backend *cb, int k) {
    if (cb->nparked + k <= cb->parked_cap) return MD_OK;
    int cap = cb->parked_cap ? cb->parked_cap : 16;
    while (cap < cb->nparked + k) cap *= 2;
    void *q = realloc(cb->parked, sizeof *cb->parked * (size_t)cap);
    if (!q) return md_fail(MD_ERR_NOMEM, "cuda backend: list of outgrown buffers");
    cb->parked = (cu_parked *)q, cb->parked_cap = cap;
    return MD_OK;
}

/* Free a buffer this backend outgrew, or, while a graph that may have captured
 * its address lives, park it (park_room made space). */
static void release(cuda_backend *cb, void *p, int pinned) {
    if (!p) return;
    if (cb->live_graphs > 0 && cb->nparked < cb->parked_cap) {
        cb->parked[cb->nparked].p = p, cb->parked[cb->nparked].pinned = pinned;
        cb->nparked++;
        return;
    }
    free_now(p, pinned);
}

static md_status red_reserve(cuda_backend *cb, size_t doubles) {
    if (doubles <= cb->red_cap) return MD_OK;
    size_t n = doubles < 4096 ? 4096 : doubles;
    double *dev = NULL, *host = NULL;
    MD_TRY(park_room(cb, 2));
    CUDA_TRY(cudaMalloc((void **)&dev, n * sizeof(double)));
    cudaError_t e = cudaMallocHost((void **)&host, n * sizeof(double));
    if (e != cudaSuccess) {
        cudaFree(dev);
        return cuda_fail(e, "cudaMallocHost (reduction buffer)", __FILE__, __LINE__);
    }
    release(cb, cb->red_dev, 0), release(cb, cb->red_host, 1);
    cb->red_dev = dev, cb->red_host = host, cb->red_cap = n;
    return MD_OK;
}

/* ---- memory ------------------------------------------------------------------------- */

static md_status cu_alloc(md_backend *be, size_t bytes, void **out) {
    void *p = NULL;
    CUDA_TRY(cudaMalloc(&p, bytes ? bytes : 64));
    cudaError_t e = cudaMemsetAsync(p, 0, bytes ? bytes : 64, cb_of(be)->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cb_of(be)->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        return cuda_fail(e, "cudaMemset", __FILE__, __LINE__);
    }
    *out = p;
    return MD_OK;
}

static md_status cu_alloc_shared(md_backend *be, size_t bytes, void **out) {
    void *p = NULL;
    CUDA_TRY(cudaMallocManaged(&p, bytes ? bytes : 64, cudaMemAttachGlobal));
    memset(p, 0, bytes ? bytes : 64); /* first touch on the host; pages move on use */
    (void)be;
    *out = p;
    return MD_OK;
}

static void cu_free(md_backend *be, void *p) {
    (void)be;
    if (p) cudaFree(p);
}

/* Page-locked: the loader's batch ring, copied to the GPU without staging. */
static md_status cu_alloc_host(md_backend *be, size_t bytes, void **out) {
    void *p = NULL;
    (void)be;
    CUDA_TRY(cudaMallocHost(&p, bytes ? bytes : 64));
    memset(p, 0, bytes ? bytes : 64);
    *out = p;
    return MD_OK;
}

static void cu_free_host(md_backend *be, void *p) {
    (void)be;
    if (p) cudaFreeHost(p);
}

static md_status cu_upload(md_backend *be, void *dst, const void *host, size_t bytes) {
    CUDA_TRY(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, cb_of(be)->stream));
    CUDA_TRY(cudaStreamSynchronize(cb_of(be)->stream));
    return MD_OK;
}

static md_status cu_download(md_backend *be, void *host, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, cb_of(be)->stream));
    CUDA_TRY(cudaStreamSynchronize(cb_of(be)->stream));
    return MD_OK;
}

static md_status cu_sync(md_backend *be) {
    CUDA_TRY(cudaStreamSynchronize(cb_of(be)->stream));
    return MD_OK;
}

/* ---- convolution: descriptors and algorithms once per shape ------------------------ */

typedef struct {
    cudnnTensorDescriptor_t      x, y;
    cudnnFilterDescriptor_t      w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t       fwd;
    cudnnConvolutionBwdDataAlgo_t   bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
} cu_conv;

static void conv_release(cu_conv *c) {
    if (c->x) cudnnDestroyTensorDescriptor(c->x);
    if (c->y) cudnnDestroyTensorDescriptor(c->y);
    if (c->w) cudnnDestroyFilterDescriptor(c->w);
    if (c->conv) cudnnDestroyConvolutionDescriptor(c->conv);
    free(c);
}

static md_status ws_reserve(cuda_backend *cb, size_t bytes) {
    if (bytes <= cb->ws_bytes) return MD_OK;
    void *p = NULL;
    MD_TRY(park_room(cb, 2));
    CUDA_TRY(cudaMalloc(&p, bytes));
    release(cb, cb->workspace, 0);
    cb->workspace = p, cb->ws_bytes = bytes;
    return MD_OK;
}

/* cuDNN's heuristic order, skipping what failed, what needs more workspace
 * than the limit, and (unless fastest) what is not deterministic. */
#define ALGO_OK(cb, perf)                                                                          \
    ((perf).status == CUDNN_STATUS_SUCCESS && (perf).memory <= (cb)->ws_limit &&                   \
     ((cb)->fastest || (perf).determinism == CUDNN_DETERMINISTIC))

/* The first algorithm by cuDNN's heuristics that ALGO_OK allows. */
static md_status pick_algos(cuda_backend *cb, cu_conv *c) {
    int n = 0;
    size_t need = 0, most = 0;
    const char *kind = cb->fastest ? "" : "deterministic ";
    cudnnConvolutionFwdAlgoPerf_t f[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(cb->dnn, c->x, c->w, c->conv, c->y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, f));
    int i = 0;
    while (i < n && !ALGO_OK(cb, f[i])) i++;
    if (i == n)
        return md_fail(MD_ERR_BACKEND, "cuDNN: no %sforward convolution algorithm fits", kind);
    c->fwd = f[i].algo;
    CUDNN_TRY(cudnnGetConvolutionForwardWorkspaceSize(cb->dnn, c->x, c->w, c->conv, c->y, c->fwd,
                                                      &need));
    most = need > most ? need : most;
    cudnnConvolutionBwdDataAlgoPerf_t d[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    CUDNN_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        cb->dnn, c->w, c->y, c->conv, c->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, d));
    for (i = 0; i < n && !ALGO_OK(cb, d[i]);) i++;
    if (i == n) return md_fail(MD_ERR_BACKEND, "cuDNN: no %sbackward-data algorithm fits", kind);
    c->bwd_data = d[i].algo;
    CUDNN_TRY(cudnnGetConvolutionBackwardDataWorkspaceSize(cb->dnn, c->w, c->y, c->conv, c->x,
                                                           c->bwd_data, &need));
    most = need > most ? need : most;
    cudnnConvolutionBwdFilterAlgoPerf_t w[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    CUDNN_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        cb->dnn, c->x, c->y, c->conv, c->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, w));
    for (i = 0; i < n && !ALGO_OK(cb, w[i]);) i++;
    if (i == n)
        return md_fail(MD_ERR_BACKEND, "cuDNN: no %sbackward-filter algorithm fits", kind);
    c->bwd_filter = w[i].algo;
    CUDNN_TRY(cudnnGetConvolutionBackwardFilterWorkspaceSize(cb->dnn, c->x, c->y, c->conv, c->w,
                                                             c->bwd_filter, &need));
    most = need > most ? need : most;
    return ws_reserve(cb, most);
}

static md_status cu_conv_create(md_backend *be, const md_conv_desc *d, void **impl) {
    cuda_backend *cb = cb_of(be);
    int oh = 0, ow = 0;
    MD_TRY(md_conv_out_hw(d, &oh, &ow));
    cu_conv *c = (cu_conv *)calloc(1, sizeof *c);
    if (!c) return md_fail(MD_ERR_NOMEM, "cuda conv");
    md_status s = MD_OK;
#define TRY_DNN(call)                                                                              \
    if (s == MD_OK && (call) != CUDNN_STATUS_SUCCESS)                                              \
    s = md_fail(MD_ERR_BACKEND, "cuDNN %s failed for conv %dx%d c_in=%d c_out=%d groups=%d", #call,\
                d->kh, d->kw, d->c_in, d->c_out, d->groups)
    TRY_DNN(cudnnCreateTensorDescriptor(&c->x));
    TRY_DNN(cudnnCreateTensorDescriptor(&c->y));
    TRY_DNN(cudnnCreateFilterDescriptor(&c->w));
    TRY_DNN(cudnnCreateConvolutionDescriptor(&c->conv));
    TRY_DNN(cudnnSetTensor4dDescriptor(c->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->n, d->c_in,
                                       d->h, d->w));
    TRY_DNN(cudnnSetTensor4dDescriptor(c->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->n, d->c_out,
                                       oh, ow));
    TRY_DNN(cudnnSetFilter4dDescriptor(c->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, d->c_out,
                                       d->c_in / d->groups, d->kh, d->kw));
    TRY_DNN(cudnnSetConvolution2dDescriptor(c->conv, d->pad, d->pad, d->stride, d->stride,
                                            d->dilation, d->dilation, CUDNN_CROSS_CORRELATION,
                                            CUDNN_DATA_FLOAT));
    TRY_DNN(cudnnSetConvolutionGroupCount(c->conv, d->groups));
    /* TF32 tensor cores for fp32 unless forbidden (PyTorch's default for convs). */
    TRY_DNN(cudnnSetConvolutionMathType(c->conv, cb->allow_tf32 ? CUDNN_DEFAULT_MATH
                                                                : CUDNN_FMA_MATH));
#undef TRY_DNN
    if (s == MD_OK) s = pick_algos(cb, c);
    if (s != MD_OK) {
        conv_release(c);
        return s;
    }
    *impl = c;
    return MD_OK;
}

static void cu_conv_destroy(md_backend *be, void *impl) {
    (void)be;
    conv_release((cu_conv *)impl);
}

static md_status cu_conv_forward(md_backend *be, void *impl, const float *x, const float *w,
                                 float *y) {
    cuda_backend *cb = cb_of(be);
    cu_conv *c = (cu_conv *)impl;
    float one = 1.0f, zero = 0.0f;
    CUDNN_TRY(cudnnConvolutionForward(cb->dnn, &one, c->x, x, c->w, w, c->conv, c->fwd,
                                      cb->workspace, cb->ws_bytes, &zero, c->y, y));
    return MD_OK;
}

/* Gradients accumulate (beta = 1), as the op contract says. */
static md_status cu_conv_backward(md_backend *be, void *impl, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw) {
    cuda_backend *cb = cb_of(be);
    cu_conv *c = (cu_conv *)impl;
    float one = 1.0f;
    if (dx)
        CUDNN_TRY(cudnnConvolutionBackwardData(cb->dnn, &one, c->w, w, c->y, dy, c->conv,
                                               c->bwd_data, cb->workspace, cb->ws_bytes, &one,
                                               c->x, dx));
    if (dw)
        CUDNN_TRY(cudnnConvolutionBackwardFilter(cb->dnn, &one, c->x, x, c->y, dy, c->conv,
                                                 c->bwd_filter, cb->workspace, cb->ws_bytes, &one,
                                                 c->w, dw));
    return MD_OK;
}

/* ---- batch norm -------------------------------------------------------------------- */

__global__ void k_fill(float *x, size_t n, float v);

/* Ones, zeros and a [2C] scratch for BN: filled on the backend's stream, so
 * the BN that follows on it sees them (the legacy default stream would not
 * order with a non-blocking stream). */
static md_status bn_consts(cuda_backend *cb, int C) {
    if (C <= cb->ones_cap) return MD_OK;
    size_t n = (size_t)C < 64 ? 64 : (size_t)C;
    float *ones = NULL, *zeros = NULL, *dummy = NULL;
    MD_TRY(park_room(cb, 3));
    cudaError_t e = cudaMalloc((void **)&ones, sizeof(float) * n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&zeros, sizeof(float) * n);
    if (e == cudaSuccess) e = cudaMalloc((void **)&dummy, 2 * sizeof(float) * n);
    if (e == cudaSuccess) {
        k_fill<<<blocks_for(n, 256), 256, 0, cb->stream>>>(ones, n, 1.0f);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemsetAsync(zeros, 0, sizeof(float) * n, cb->stream);
    if (e != cudaSuccess) {
        cudaFree(ones), cudaFree(zeros), cudaFree(dummy);
        return cuda_fail(e, "bn constants", __FILE__, __LINE__);
    }
    release(cb, cb->ones, 0), release(cb, cb->zeros, 0), release(cb, cb->dummy, 0);
    cb->ones = ones, cb->zeros = zeros, cb->dummy = dummy, cb->ones_cap = (int)n;
    return MD_OK;
}

/* Per channel: sums over (n, h, w) of x - shift (and of its square), in double. */
__global__ void k_channel_sums(const float *x, int n, int C, int hw, const double *shift,
                               double *sum, double *sq) {
    int c = blockIdx.x;
    double s = 0.0, q = 0.0, m = shift ? shift[c] : 0.0;
    for (int i = 0; i < n; i++) {
        const float *p = x + ((size_t)i * C + c) * hw;
        for (int j = threadIdx.x; j < hw; j += blockDim.x) {
            double v = (double)p[j] - m;
            s += v;
            q += v * v;
        }
    }
    __shared__ double ss[256], sq2[256];
    ss[threadIdx.x] = s, sq2[threadIdx.x] = q;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) ss[threadIdx.x] += ss[threadIdx.x + k], sq2[threadIdx.x] += sq2[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (sum) sum[c] = ss[0];
        if (sq) sq[c] = sq2[0];
    }
}

/* Per channel: sum dy and sum dy*(x - mean). */
__global__ void k_channel_grad_sums(const float *x, const float *dy, int n, int C, int hw,
                                    const float *mean, double *sdy, double *sdyx) {
    int c = blockIdx.x;
    double a = 0.0, b = 0.0;
    float m = mean[c];
    for (int i = 0; i < n; i++) {
        size_t o = ((size_t)i * C + c) * hw;
        for (int j = threadIdx.x; j < hw; j += blockDim.x) {
            a += dy[o + j];
            b += (double)dy[o + j] * (x[o + j] - m);
        }
    }
    __shared__ double sa[256], sb[256];
    sa[threadIdx.x] = a, sb[threadIdx.x] = b;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sa[threadIdx.x] += sa[threadIdx.x + k], sb[threadIdx.x] += sb[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) sdy[c] = sa[0], sdyx[c] = sb[0];
}

/* y = x * a[c] + b[c]. */
__global__ void k_channel_affine(const float *x, float *y, size_t total, int C, int hw,
                                 const float *a, const float *b) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i / hw % C);
        y[i] = x[i] * a[c] + b[c];
    }
}

/* From reduced sums: mean/invstd (saved), the affine coefficients, running stats. */
__global__ void k_bn_finish(int C, double m, const double *sum, const double *sq, float eps,
                            const float *gamma, const float *beta, float *save_mean,
                            float *save_invstd, float *rm, float *rv, float momentum, float *ca,
                            float *cbias) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double mean = sum[c] / m, var = sq[c] / m;
    double invstd = 1.0 / sqrt(var + eps);
    double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
    save_mean[c] = (float)mean, save_invstd[c] = (float)invstd;
    ca[c] = (float)(invstd * g), cbias[c] = (float)(b - mean * invstd * g);
    if (rm) {
        rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mean);
        rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * var * m / (m - 1.0));
    }
}

__global__ void k_bn_backward_apply(const float *x, const float *dy, float *dx, size_t total,
                                    int C, int hw, const float *mean, const float *invstd,
                                    const float *gamma, const double *sdy, const double *sdyx,
                                    double m) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i / hw % C);
        float is = invstd[c], k = (gamma ? gamma[c] : 1.0f) * is;
        float mdy = (float)(sdy[c] / m), kx = (float)(sdyx[c] * is * is / m);
        dx[i] += k * (dy[i] - mdy - (x[i] - mean[c]) * kx);
    }
}

__global__ void k_param_grads(int C, const double *sdy, const double *sdyx, const float *invstd,
                              float *dgamma, float *dbeta) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    if (dgamma) dgamma[c] += (float)(sdyx[c] * invstd[c]);
    if (dbeta) dbeta[c] += (float)sdy[c];
}

__global__ void k_set_count(double *dst, double v) {
    *dst = v;
}

__global__ void k_div(const double *x, int n, double d, double *y) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] / d;
}

/* Reduce n doubles on the host through the sync callback (device -> host ->
 * device). The pinned buffer is written by the host only after the stream has
 * drained (so no earlier upload from it is still reading), and read by the
 * upload that follows. */
static md_status host_allreduce(cuda_backend *cb, const md_bn_sync *sync, double *dev, int n) {
    CUDA_TRY(cudaMemcpyAsync(cb->red_host, dev, sizeof(double) * n, cudaMemcpyDeviceToHost, cb->stream));
    CUDA_TRY(cudaStreamSynchronize(cb->stream));
    MD_TRY(sync->allreduce(sync->ctx, cb->red_host, n));
    CUDA_TRY(cudaMemcpyAsync(dev, cb->red_host, sizeof(double) * n, cudaMemcpyHostToDevice, cb->stream));
    return MD_OK;
}

/* Batch statistics on our kernels, reduced over replicas between the passes. */
static md_status bn_train_sync(cuda_backend *cb, const md_tensor *x, const md_tensor *y,
                               const md_bn_state *s) {
    int n = x->dim[0], C = x->dim[1], hw = x->dim[2] * x->dim[3];
    size_t total = md_tensor_numel(x);
    MD_TRY(red_reserve(cb, 4 * (size_t)C + 2));
    double *sum = cb->red_dev, *sq = sum + C + 1, *mean = sq + C + 1;
    MD_TRY(bn_consts(cb, C));
    /* The count rides with the sums: [sum_0 .. sum_C-1, n*h*w]. */
    k_channel_sums<<<C, 256, 0, cb->stream>>>(x->data, n, C, hw, NULL, sum, NULL);
    LAUNCH_TRY();
    k_set_count<<<1, 1, 0, cb->stream>>>(sum + C, (double)n * hw);
    LAUNCH_TRY();
    MD_TRY(host_allreduce(cb, s->sync, sum, C + 1));
    double m = cb->red_host[C]; /* the host copy of the reduced sums */
    /* The global mean on the device from the global sums (the host's pinned
     * copy is not touched while uploads from it may be in flight). */
    k_div<<<(C + 127) / 128, 128, 0, cb->stream>>>(sum, C, m, mean);
    LAUNCH_TRY();
    k_channel_sums<<<C, 256, 0, cb->stream>>>(x->data, n, C, hw, mean, NULL, sq);
    LAUNCH_TRY();
    MD_TRY(host_allreduce(cb, s->sync, sq, C));
    /* sum (global sums), sq (global squared deviations) and m: mean = sum/m, var = sq/m. */
    float *ca = cb->dummy, *cbias = cb->dummy + C;
    k_bn_finish<<<(C + 127) / 128, 128, 0, cb->stream>>>(
        C, m, sum, sq, s->eps, s->gamma ? s->gamma->data : NULL, s->beta ? s->beta->data : NULL,
        s->save_mean->data, s->save_invstd->data,
        s->running_mean ? s->running_mean->data : NULL,
        s->running_var ? s->running_var->data : NULL, s->momentum, ca, cbias);
    LAUNCH_TRY();
    k_channel_affine<<<blocks_for(total, 256), 256, 0, cb->stream>>>(x->data, y->data, total, C,
                                                                       hw, ca, cbias);
    LAUNCH_TRY();
    return MD_OK;
}

/* Descriptors of x and of the per-channel parameters; the caller destroys both. */
static md_status bn_descs(const md_tensor *x, cudnnTensorDescriptor_t *xd,
                          cudnnTensorDescriptor_t *pd) {
    CUDNN_TRY(cudnnCreateTensorDescriptor(xd));
    cudnnStatus_t st = cudnnCreateTensorDescriptor(pd);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnSetTensor4dDescriptor(*xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, x->dim[0],
                                        x->dim[1], x->dim[2], x->dim[3]);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnSetTensor4dDescriptor(*pd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, x->dim[1], 1, 1);
    if (st != CUDNN_STATUS_SUCCESS) {
        cudnnDestroyTensorDescriptor(*xd);
        if (*pd) cudnnDestroyTensorDescriptor(*pd);
        return md_fail(MD_ERR_BACKEND, "cuDNN batch norm descriptors: %s", cudnnGetErrorString(st));
    }
    return MD_OK;
}

static md_status cu_bn_forward_train(md_backend *be, const md_tensor *x, const md_tensor *y,
                                     const md_bn_state *s) {
    cuda_backend *cb = cb_of(be);
    if (s->sync) return bn_train_sync(cb, x, y, s);
    int C = x->dim[1];
    MD_TRY(bn_consts(cb, C));
    cudnnTensorDescriptor_t xd = NULL, pd = NULL;
    MD_TRY(bn_descs(x, &xd, &pd));
    float one = 1.0f, zero = 0.0f;
    /* cuDNN's running variance is the unbiased one, as PyTorch's. */
    cudnnStatus_t st = cudnnBatchNormalizationForwardTraining(
        cb->dnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, x->data, xd, y->data, pd,
        s->gamma ? s->gamma->data : cb->ones, s->beta ? s->beta->data : cb->zeros, s->momentum,
        s->running_mean ? s->running_mean->data : NULL,
        s->running_var ? s->running_var->data : NULL, s->eps, s->save_mean->data,
        s->save_invstd->data);
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(pd);
    if (st != CUDNN_STATUS_SUCCESS)
        return md_fail(MD_ERR_BACKEND, "cuDNN batch norm forward failed: %s", cudnnGetErrorString(st));
    return MD_OK;
}

static md_status cu_bn_forward_eval(md_backend *be, const md_tensor *x, const md_tensor *y,
                                    const md_bn_state *s) {
    cuda_backend *cb = cb_of(be);
    int C = x->dim[1];
    MD_TRY(bn_consts(cb, C));
    cudnnTensorDescriptor_t xd = NULL, pd = NULL;
    MD_TRY(bn_descs(x, &xd, &pd));
    float one = 1.0f, zero = 0.0f;
    cudnnStatus_t st = cudnnBatchNormalizationForwardInference(
        cb->dnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, xd, x->data, xd, y->data, pd,
        s->gamma ? s->gamma->data : cb->ones, s->beta ? s->beta->data : cb->zeros,
        s->running_mean->data, s->running_var->data, s->eps);
    cudnnDestroyTensorDescriptor(xd);
    cudnnDestroyTensorDescriptor(pd);
    if (st != CUDNN_STATUS_SUCCESS)
        return md_fail(MD_ERR_BACKEND, "cuDNN batch norm inference failed: %s", cudnnGetErrorString(st));
    return MD_OK;
}

/* Backward on our kernels for both modes: local sums (the replica's dgamma,
 * dbeta), reduced over replicas when synced, then dx. */
static md_status bn_backward(cuda_backend *cb, const md_tensor *x, const md_tensor *dy,
                             const md_tensor *dx, const md_tensor *dgamma, const md_tensor *dbeta,
                             const md_bn_state *s, const float *mean, const float *invstd,
                             int train) {
    int n = x->dim[0], C = x->dim[1], hw = x->dim[2] * x->dim[3];
    size_t total = md_tensor_numel(x);
    MD_TRY(red_reserve(cb, 2 * (size_t)C + 1));
    double *sdy = cb->red_dev, *sdyx = sdy + C;
    k_channel_grad_sums<<<C, 256, 0, cb->stream>>>(x->data, dy->data, n, C, hw, mean, sdy, sdyx);
    LAUNCH_TRY();
    k_param_grads<<<(C + 127) / 128, 128, 0, cb->stream>>>(
        C, sdy, sdyx, invstd, dgamma ? dgamma->data : NULL, dbeta ? dbeta->data : NULL);
    LAUNCH_TRY();
    double m = (double)n * hw;
    /* Every replica reduces, dx or not, as the CPU backend does: the sequence of
     * collectives must not depend on what a replica's plan needs. */
    if (train && s->sync) {
        k_set_count<<<1, 1, 0, cb->stream>>>(sdy + 2 * C, m);
        LAUNCH_TRY();
        MD_TRY(host_allreduce(cb, s->sync, sdy, 2 * C + 1));
        m = cb->red_host[2 * C];
    }
    if (!dx) return MD_OK;
    /* Eval mode: dx = k * dy, i.e. the train formula with both sums dropped. */
    if (!train) CUDA_TRY(cudaMemsetAsync(sdy, 0, sizeof(double) * 2 * C, cb->stream));
    k_bn_backward_apply<<<blocks_for(total, 256), 256, 0, cb->stream>>>(
        x->data, dy->data, dx->data, total, C, hw, mean, invstd,
        s->gamma ? s->gamma->data : NULL, sdy, sdyx, m);
    LAUNCH_TRY();
    return MD_OK;
}

static md_status cu_bn_backward_train(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                      const md_tensor *dx, const md_tensor *dgamma,
                                      const md_tensor *dbeta, const md_bn_state *s) {
    return bn_backward(cb_of(be), x, dy, dx, dgamma, dbeta, s, s->save_mean->data,
                       s->save_invstd->data, 1);
}

__global__ void k_invstd(int C, const float *var, float eps, float *out) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < C) out[c] = (float)(1.0 / sqrt((double)var[c] + eps));
}

static md_status cu_bn_backward_eval(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                     const md_tensor *dx, const md_tensor *dgamma,
                                     const md_tensor *dbeta, const md_bn_state *s) {
    cuda_backend *cb = cb_of(be);
    int C = x->dim[1];
    MD_TRY(bn_consts(cb, C));
    k_invstd<<<(C + 127) / 128, 128, 0, cb->stream>>>(C, s->running_var->data, s->eps, cb->dummy);
    LAUNCH_TRY();
    return bn_backward(cb, x, dy, dx, dgamma, dbeta, s, s->running_mean->data, cb->dummy, 0);
}

/* ---- elementwise --------------------------------------------------------------------- */

#define GRID_LOOP(i, n)                                                                            \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

__global__ void k_act_fwd(const float *x, float *y, size_t n, float cap) {
    GRID_LOOP(i, n) y[i] = fminf(fmaxf(x[i], 0.0f), cap);
}
__global__ void k_act_bwd(const float *y, const float *dy, float *dx, size_t n, float cap) {
    GRID_LOOP(i, n) dx[i] += (y[i] > 0.0f && y[i] < cap) ? dy[i] : 0.0f;
}
__global__ void k_add(const float *x, float *y, size_t n) {
    GRID_LOOP(i, n) y[i] += x[i];
}
__global__ void k_mul_add(const float *a, const float *b, float *y, size_t n) {
    GRID_LOOP(i, n) y[i] += a[i] * b[i];
}
__global__ void k_row_scale(const float *x, const float *s, float *y, size_t n, size_t inner,
                            int accumulate) {
    GRID_LOOP(i, n) {
        float v = x[i] * s[i / inner];
        y[i] = accumulate ? y[i] + v : v;
    }
}
__global__ void k_fill(float *x, size_t n, float v) {
    GRID_LOOP(i, n) x[i] = v;
}
__global__ void k_scale(float *x, size_t n, float f) {
    GRID_LOOP(i, n) x[i] *= f;
}
__global__ void k_sgd(float *w, const float *g, float *v, size_t n, float lr, float mu, float wd,
                      int nesterov, const double *guard) {
    if (guard && !isfinite(*guard)) return;
    GRID_LOOP(i, n) {
        float d = g[i] + wd * w[i];
        if (mu != 0.0f) {
            v[i] = mu * v[i] + d;
            d = nesterov ? d + mu * v[i] : v[i];
        }
        w[i] -= lr * d;
    }
}

static md_status cu_act_forward(md_backend *be, md_act act, const float *x, float *y, size_t n) {
    k_act_fwd<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(
        x, y, n, act == MD_ACT_RELU6 ? 6.0f : INFINITY);
    LAUNCH_TRY();
    return MD_OK;
}
static md_status cu_act_backward(md_backend *be, md_act act, const float *y, const float *dy,
                                 float *dx, size_t n) {
    k_act_bwd<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(
        y, dy, dx, n, act == MD_ACT_RELU6 ? 6.0f : INFINITY);
    LAUNCH_TRY();
    return MD_OK;
}
static md_status cu_add(md_backend *be, const float *x, float *y, size_t n) {
    k_add<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(x, y, n);
    LAUNCH_TRY();
    return MD_OK;
}
static md_status cu_mul_add(md_backend *be, const float *a, const float *b, float *y, size_t n) {
    k_mul_add<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(a, b, y, n);
    LAUNCH_TRY();
    return MD_OK;
}
static md_status cu_row_scale(md_backend *be, const float *x, const float *s, float *y,
                              size_t rows, size_t inner, int accumulate) {
    size_t n = rows * inner;
    k_row_scale<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(x, s, y, n, inner, accumulate);
    LAUNCH_TRY();
    return MD_OK;
}
static md_status cu_copy(md_backend *be, const float *x, float *y, size_t n) {
    CUDA_TRY(cudaMemcpyAsync(y, x, n * sizeof(float), cudaMemcpyDeviceToDevice, cb_of(be)->stream));
    return MD_OK;
}
static md_status cu_zero(md_backend *be, float *y, size_t n) {
    CUDA_TRY(cudaMemsetAsync(y, 0, n * sizeof(float), cb_of(be)->stream));
    return MD_OK;
}
static md_status cu_scale(md_backend *be, float *x, size_t n, float f) {
    k_scale<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(x, n, f);
    LAUNCH_TRY();
    return MD_OK;
}
static md_status cu_sgd_update(md_backend *be, float *w, const float *g, float *v, size_t n,
                               float lr, float momentum, float weight_decay, int nesterov,
                               const double *guard) {
    k_sgd<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(w, g, v, n, lr, momentum,
                                                              weight_decay, nesterov, guard);
    LAUNCH_TRY();
    return MD_OK;
}

/* Deterministic sum of squares: fixed per-block partials, then one block in order. */
__global__ void k_sumsq_partial(const float *x, size_t n, double *part) {
    double s = 0.0;
    GRID_LOOP(i, n) s += (double)x[i] * x[i];
    __shared__ double sh[256];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}
/* *out = (or += with accumulate) the sum of part[0..n), in a fixed order. */
__global__ void k_sum_doubles(const double *part, int n, double *out, int accumulate) {
    __shared__ double sh[256];
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = accumulate ? *out + sh[0] : sh[0];
}

static md_status cu_sumsq(md_backend *be, const float *x, size_t n, double *out) {
    cuda_backend *cb = cb_of(be);
    const unsigned blocks = 1024;
    MD_TRY(red_reserve(cb, blocks + 1));
    k_sumsq_partial<<<blocks, 256, 0, cb->stream>>>(x, n, cb->red_dev);
    LAUNCH_TRY();
    k_sum_doubles<<<1, 256, 0, cb->stream>>>(cb->red_dev, blocks, cb->red_dev + blocks, 0);
    LAUNCH_TRY();
    CUDA_TRY(cudaMemcpyAsync(cb->red_host, cb->red_dev + blocks, sizeof(double),
                             cudaMemcpyDeviceToHost, cb->stream));
    CUDA_TRY(cudaStreamSynchronize(cb->stream));
    *out += cb->red_host[0]; /* accumulates, as the op contract says */
    return MD_OK;
}

/* ---- pooling: exact PyTorch semantics, gather-form backward (deterministic) --------- */

__global__ void k_pool_fwd(const float *x, float *y, int N, int C, int H, int W, int OH, int OW,
                           int k, int st, int pad, int is_max) {
    size_t total = (size_t)N * C * OH * OW;
    GRID_LOOP(i, total) {
        int ow = (int)(i % OW), oh = (int)(i / OW % OH);
        size_t plane = i / ((size_t)OH * OW);
        const float *p = x + plane * H * W;
        int h0 = oh * st - pad, w0 = ow * st - pad;
        float best = -INFINITY, sum = 0.0f;
        int cnt = 0;
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++) {
                int h = h0 + a, w = w0 + b;
                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                float v = p[h * W + w];
                if (v > best) best = v;
                sum += v, cnt++;
            }
        y[i] = is_max ? best : sum / (float)cnt;
    }
}

/* dx[h, w] += sum over the windows that hold (h, w) of dy, for max only where
 * (h, w) is the window's first maximum. */
__global__ void k_pool_bwd(const float *x, const float *dy, float *dx, int N, int C, int H, int W,
                           int OH, int OW, int k, int st, int pad, int is_max) {
    size_t total = (size_t)N * C * H * W;
    GRID_LOOP(i, total) {
        int w = (int)(i % W), h = (int)(i / W % H);
        size_t plane = i / ((size_t)H * W);
        const float *p = x + plane * H * W;
        const float *g = dy + plane * OH * OW;
        float acc = 0.0f;
        int oh_lo = (h + pad - k + st) / st, ow_lo = (w + pad - k + st) / st;
        if (h + pad - k + 1 < 0) oh_lo = 0;
        if (w + pad - k + 1 < 0) ow_lo = 0;
        for (int oh = oh_lo; oh < OH && oh * st - pad <= h; oh++)
            for (int ow = ow_lo; ow < OW && ow * st - pad <= w; ow++) {
                int h0 = oh * st - pad, w0 = ow * st - pad;
                if (h < h0 || h >= h0 + k || w < w0 || w >= w0 + k) continue;
                if (is_max) {
                    /* first maximum in row-major window order */
                    int bh = -1, bw = -1;
                    float best = -INFINITY;
                    for (int a = 0; a < k; a++)
                        for (int b = 0; b < k; b++) {
                            int hh = h0 + a, ww = w0 + b;
                            if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
                            float v = p[hh * W + ww];
                            if (v > best || bh < 0) best = v, bh = hh, bw = ww;
                        }
                    if (bh == h && bw == w) acc += g[oh * OW + ow];
                } else {
                    int hs = max(h0, 0), he = min(h0 + k, H), ws = max(w0, 0), we = min(w0 + k, W);
                    acc += g[oh * OW + ow] / (float)((he - hs) * (we - ws));
                }
            }
        dx[i] += acc;
    }
}

static md_status cu_pool_forward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                                 const md_tensor *y) {
    size_t total = md_tensor_numel(y);
    k_pool_fwd<<<blocks_for(total, 256), 256, 0, cb_of(be)->stream>>>(
        x->data, y->data, x->dim[0], x->dim[1], x->dim[2], x->dim[3], y->dim[2], y->dim[3], p->k,
        p->stride, p->pad, p->kind == MD_POOL_MAX);
    LAUNCH_TRY();
    return MD_OK;
}

static md_status cu_pool_backward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                                  const md_tensor *dy, const md_tensor *dx) {
    size_t total = md_tensor_numel(x);
    k_pool_bwd<<<blocks_for(total, 256), 256, 0, cb_of(be)->stream>>>(
        x->data, dy->data, dx->data, x->dim[0], x->dim[1], x->dim[2], x->dim[3], dy->dim[2],
        dy->dim[3], p->k, p->stride, p->pad, p->kind == MD_POOL_MAX);
    LAUNCH_TRY();
    return MD_OK;
}

__global__ void k_gap_fwd(const float *x, float *y, size_t planes, int hw) {
    GRID_LOOP(i, planes) {
        const float *p = x + i * hw;
        float s = 0.0f;
        for (int j = 0; j < hw; j++) s += p[j];
        y[i] = s / (float)hw;
    }
}
__global__ void k_gap_bwd(const float *dy, float *dx, size_t total, int hw) {
    GRID_LOOP(i, total) dx[i] += dy[i / hw] / (float)hw;
}

static md_status cu_gap_forward(md_backend *be, const md_tensor *x, const md_tensor *y) {
    size_t planes = (size_t)x->dim[0] * x->dim[1];
    k_gap_fwd<<<blocks_for(planes, 128), 128, 0, cb_of(be)->stream>>>(x->data, y->data, planes,
                                                                       x->dim[2] * x->dim[3]);
    LAUNCH_TRY();
    return MD_OK;
}
static md_status cu_gap_backward(md_backend *be, const md_tensor *dy, const md_tensor *dx) {
    size_t total = md_tensor_numel(dx);
    k_gap_bwd<<<blocks_for(total, 256), 256, 0, cb_of(be)->stream>>>(dy->data, dx->data, total,
                                                                      dx->dim[2] * dx->dim[3]);
    LAUNCH_TRY();
    return MD_OK;
}

/* ---- shape ops ------------------------------------------------------------------------ */

/* Copy (or accumulate) a [N, c, hw] block between tensors of C1 and C2 channels
 * at channel offsets o1 and o2. */
__global__ void k_chan_copy(const float *src, int Cs, int os, float *dst, int Cd, int od, int N,
                            int c, int hw, int accumulate) {
    size_t total = (size_t)N * c * hw;
    GRID_LOOP(i, total) {
        int j = (int)(i % hw), ch = (int)(i / hw % c), n = (int)(i / ((size_t)hw * c));
        float v = src[((size_t)n * Cs + os + ch) * hw + j];
        float *d = dst + ((size_t)n * Cd + od + ch) * hw + j;
        *d = accumulate ? *d + v : v;
    }
}

static md_status cu_concat_forward(md_backend *be, const md_tensor *const *xs, int k,
                                   const md_tensor *y) {
    int off = 0, hw = y->dim[2] * y->dim[3];
    for (int i = 0; i < k; i++) {
        int c = xs[i]->dim[1];
        k_chan_copy<<<blocks_for((size_t)y->dim[0] * c * hw, 256), 256, 0, cb_of(be)->stream>>>(
            xs[i]->data, c, 0, y->data, y->dim[1], off, y->dim[0], c, hw, 0);
        LAUNCH_TRY();
        off += c;
    }
    return MD_OK;
}

static md_status cu_concat_backward(md_backend *be, const md_tensor *dy,
                                    const md_tensor *const *dxs, int k) {
    int off = 0, hw = dy->dim[2] * dy->dim[3];
    for (int i = 0; i < k; i++) {
        int c = dxs[i] ? dxs[i]->dim[1] : 0;
        if (dxs[i]) {
            k_chan_copy<<<blocks_for((size_t)dy->dim[0] * c * hw, 256), 256, 0,
                          cb_of(be)->stream>>>(dy->data, dy->dim[1], off, dxs[i]->data, c, 0,
                                               dy->dim[0], c, hw, 1);
            LAUNCH_TRY();
        }
        off += c;
    }
    return MD_OK;
}

__global__ void k_slice(const float *x, int H, int W, int oh, int ow, float *y, int Hy, int Wy,
                        size_t planes, int backward) {
    size_t total = planes * Hy * Wy;
    GRID_LOOP(i, total) {
        int w = (int)(i % Wy), h = (int)(i / Wy % Hy);
        size_t p = i / ((size_t)Hy * Wy);
        size_t xi = (p * H + h + oh) * W + w + ow;
        if (backward) ((float *)x)[xi] += y[i];
        else y[i] = x[xi];
    }
}

static md_status cu_slice_forward(md_backend *be, const md_tensor *x, int oh, int ow,
                                  const md_tensor *y) {
    size_t planes = (size_t)y->dim[0] * y->dim[1];
    k_slice<<<blocks_for(md_tensor_numel(y), 256), 256, 0, cb_of(be)->stream>>>(
        x->data, x->dim[2], x->dim[3], oh, ow, y->data, y->dim[2], y->dim[3], planes, 0);
    LAUNCH_TRY();
    return MD_OK;
}

/* Each dy element lands on its own dx element: no races. */
static md_status cu_slice_backward(md_backend *be, const md_tensor *dy, int oh, int ow,
                                   const md_tensor *dx) {
    size_t planes = (size_t)dy->dim[0] * dy->dim[1];
    k_slice<<<blocks_for(md_tensor_numel(dy), 256), 256, 0, cb_of(be)->stream>>>(
        dx->data, dx->dim[2], dx->dim[3], oh, ow, dy->data, dy->dim[2], dy->dim[3], planes, 1);
    LAUNCH_TRY();
    return MD_OK;
}

/* ---- linear (cuBLAS, column-major view of row-major matrices) ------------------------ */

__global__ void k_bias(float *y, const float *b, int N, int out) {
    GRID_LOOP(i, (size_t)N * out) y[i] += b[i % out];
}
__global__ void k_bias_grad(const float *dy, float *db, int N, int out) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++) s += dy[(size_t)n * out + o];
    db[o] += s;
}

static md_status cu_linear_forward(md_backend *be, const md_tensor *x, const md_tensor *w,
                                   const md_tensor *b, const md_tensor *y) {
    cuda_backend *cb = cb_of(be);
    int N = x->dim[0], in = x->dim[1], out = w->dim[0];
    float one = 1.0f, zero = 0.0f;
    /* y^T (out x N) = w (out x in) . x^T (in x N) */
    CUBLAS_TRY(cublasSgemm(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, &one, w->data, in,
                           x->data, in, &zero, y->data, out));
    if (b) {
        k_bias<<<blocks_for((size_t)N * out, 256), 256, 0, cb->stream>>>(y->data, b->data, N, out);
        LAUNCH_TRY();
    }
    return MD_OK;
}

static md_status cu_linear_backward(md_backend *be, const md_tensor *x, const md_tensor *w,
                                    const md_tensor *dy, const md_tensor *dx, const md_tensor *dw,
                                    const md_tensor *db) {
    cuda_backend *cb = cb_of(be);
    int N = x->dim[0], in = x->dim[1], out = w->dim[0];
    float one = 1.0f;
    if (dx) /* dx^T (in x N) += w^T (in x out) . dy^T (out x N) */
        CUBLAS_TRY(cublasSgemm(cb->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, &one, w->data, in,
                               dy->data, out, &one, dx->data, in));
    if (dw) /* dw^T (in x out) += x^T (in x N) . dy (N x out) */
        CUBLAS_TRY(cublasSgemm(cb->blas, CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, &one, x->data, in,
                               dy->data, out, &one, dw->data, in));
    if (db) {
        k_bias_grad<<<(out + 127) / 128, 128, 0, cb->stream>>>(dy->data, db->data, N, out);
        LAUNCH_TRY();
    }
    return MD_OK;
}

/* The mask comes from the same host RNG stream as on the CPU: same bits. */
static md_status cu_dropout_forward(md_backend *be, float p, md_rng *rng, const md_tensor *x,
                                    const md_tensor *mask, const md_tensor *y) {
    cuda_backend *cb = cb_of(be);
    size_t n = md_tensor_numel(x);
    CUDA_TRY(cudaStreamSynchronize(cb->stream)); /* the previous mask may still be in flight */
    if (n > cb->mask_cap) {
        float *m = NULL;
        CUDA_TRY(cudaMallocHost((void **)&m, n * sizeof(float)));
        free_now(cb->mask_host, 1); /* no graph reads it: dropout is never recorded */
        cb->mask_host = m, cb->mask_cap = n;
    }
    float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) cb->mask_host[i] = md_rng_uniform(rng) < p ? 0.0f : keep;
    CUDA_TRY(cudaMemcpyAsync(mask->data, cb->mask_host, n * sizeof(float), cudaMemcpyHostToDevice,
                             cb->stream));
    CUDA_TRY(cudaMemsetAsync(y->data, 0, n * sizeof(float), cb->stream));
    k_mul_add<<<blocks_for(n, 256), 256, 0, cb->stream>>>(x->data, mask->data, y->data, n);
    LAUNCH_TRY();
    return MD_OK;
}

/* ---- loss ------------------------------------------------------------------------------ */

/* *bad = the number of labels outside [0, K). */
__global__ void k_count_bad_labels(const int32_t *labels, int N, int K, int *bad) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N && (labels[n] < 0 || labels[n] >= K)) atomicAdd(bad, 1);
}

/* One thread per row (K is the class count: small); the row losses are summed
 * in a fixed order by a second kernel. Nothing is written when a label is bad
 * (k_count_bad_labels ran first): the CPU backend checks before it changes
 * anything, and so does this. */
__global__ void k_softmax_ce(const float *z, const int32_t *labels, int N, int K, float *dz,
                             double *row_loss, const int *bad) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float *r = z + (size_t)n * K;
    int y = labels[n];
    if (*bad) {
        row_loss[n] = 0.0;
        return;
    }
    float zmax = r[0];
    for (int k = 1; k < K; k++) zmax = fmaxf(zmax, r[k]);
    double se = 0.0;
    for (int k = 0; k < K; k++) se += exp((double)r[k] - zmax);
    double lse = zmax + log(se);
    row_loss[n] = lse - r[y];
    if (!dz) return;
    float *d = dz + (size_t)n * K;
    for (int k = 0; k < K; k++) d[k] += (float)((exp((double)r[k] - lse) - (k == y ? 1.0 : 0.0)) / N);
}

__global__ void k_top1(const float *z, const int32_t *labels, int N, int K, double *hit) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return; /* labels were counted by k_count_bad_labels */
    const float *r = z + (size_t)n * K;
    int best = 0;
    for (int k = 1; k < K; k++)
        if (r[k] > r[best]) best = k;
    hit[n] = best == labels[n] ? 1.0 : 0.0;
}

static md_status cu_softmax_ce(md_backend *be, const md_tensor *logits, const int32_t *labels,
                               float *loss, const md_tensor *dlogits) {
    cuda_backend *cb = cb_of(be);
    int N = logits->dim[0], K = logits->dim[1];
    MD_TRY(red_reserve(cb, (size_t)N + 2));
    int *bad = (int *)(cb->red_dev + N + 1);
    CUDA_TRY(cudaMemsetAsync(bad, 0, sizeof(int), cb->stream));
    k_count_bad_labels<<<(N + 127) / 128, 128, 0, cb->stream>>>(labels, N, K, bad);
    LAUNCH_TRY();
    k_softmax_ce<<<(N + 127) / 128, 128, 0, cb->stream>>>(logits->data, labels, N, K,
                                                          dlogits ? dlogits->data : NULL,
                                                          cb->red_dev, bad);
    LAUNCH_TRY();
    k_sum_doubles<<<1, 256, 0, cb->stream>>>(cb->red_dev, N, cb->red_dev + N, 0);
    LAUNCH_TRY();
    CUDA_TRY(cudaMemcpyAsync(cb->red_host, cb->red_dev + N, 2 * sizeof(double),
                             cudaMemcpyDeviceToHost, cb->stream));
    CUDA_TRY(cudaStreamSynchronize(cb->stream));
    int nbad;
    memcpy(&nbad, cb->red_host + 1, sizeof nbad);
    if (nbad)
        return md_fail(MD_ERR_ARG, "softmax_cross_entropy: %d label(s) outside [0, %d); nothing "
                       "was changed", nbad, K);
    *loss = (float)(cb->red_host[0] / N);
    return MD_OK;
}

static md_status cu_top1_correct(md_backend *be, const md_tensor *logits, const int32_t *labels,
                                 int *correct) {
    cuda_backend *cb = cb_of(be);
    int N = logits->dim[0], K = logits->dim[1];
    MD_TRY(red_reserve(cb, (size_t)N + 2));
    int *bad = (int *)(cb->red_dev + N + 1);
    CUDA_TRY(cudaMemsetAsync(bad, 0, sizeof(int), cb->stream));
    k_count_bad_labels<<<(N + 127) / 128, 128, 0, cb->stream>>>(labels, N, K, bad);
    LAUNCH_TRY();
    k_top1<<<(N + 127) / 128, 128, 0, cb->stream>>>(logits->data, labels, N, K, cb->red_dev);
    LAUNCH_TRY();
    k_sum_doubles<<<1, 256, 0, cb->stream>>>(cb->red_dev, N, cb->red_dev + N, 0);
    LAUNCH_TRY();
    CUDA_TRY(cudaMemcpyAsync(cb->red_host, cb->red_dev + N, 2 * sizeof(double),
                             cudaMemcpyDeviceToHost, cb->stream));
    CUDA_TRY(cudaStreamSynchronize(cb->stream));
    int nbad;
    memcpy(&nbad, cb->red_host + 1, sizeof nbad);
    if (nbad) /* as the CPU backend: a bad label is refused, not counted as a miss */
        return md_fail(MD_ERR_ARG, "top1_correct: %d label(s) outside [0, %d)", nbad, K);
    *correct = (int)llround(cb->red_host[0]);
    return MD_OK;
}

/* ---- the device-side step: no host round trips, so it can be captured ------------------ */

/* One block: each thread takes rows n = t, t + 256, ...; loss and correct
 * counts are reduced in a fixed order (deterministic). */
__global__ void k_loss_dev(const float *z, const int32_t *labels, int N, int K, float eps,
                           float *dz, float *out) {
    double loss = 0.0, hit = 0.0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        const float *r = z + (size_t)n * K;
        int y = labels[n];
        y = y < 0 ? 0 : y >= K ? K - 1 : y; /* labels were checked when the data loaded */
        float zmax = r[0];
        int best = 0;
        for (int k = 1; k < K; k++) {
            zmax = fmaxf(zmax, r[k]);
            if (r[k] > r[best]) best = k;
        }
        double se = 0.0;
        for (int k = 0; k < K; k++) se += exp((double)r[k] - zmax);
        double lse = zmax + log(se), mean = 0.0;
        for (int k = 0; k < K; k++) mean += r[k];
        loss += lse - r[y] + eps * (r[y] - mean / K);
        hit += best == y;
        if (dz) {
            float *d = dz + (size_t)n * K;
            for (int k = 0; k < K; k++)
                d[k] += (float)((exp((double)r[k] - lse) - (1.0 - eps) * (k == y ? 1.0 : 0.0) -
                                 eps / K) / N);
        }
    }
    __shared__ double sl[256], sh[256];
    sl[threadIdx.x] = loss, sh[threadIdx.x] = hit;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sl[threadIdx.x] += sl[threadIdx.x + k], sh[threadIdx.x] += sh[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = (float)(sl[0] / N), out[1] = (float)sh[0];
}

static md_status cu_loss_dev(md_backend *be, const md_tensor *logits, const int32_t *labels,
                             float smoothing, float *out, const md_tensor *dlogits) {
    k_loss_dev<<<1, 256, 0, cb_of(be)->stream>>>(logits->data, labels, logits->dim[0],
                                                 logits->dim[1], smoothing,
                                                 dlogits ? dlogits->data : NULL, out);
    LAUNCH_TRY();
    return MD_OK;
}

/* Uses the first 1024 doubles of the reduction buffer, reserved when the backend
 * is made (no allocation here: this may be recorded in a graph). */
static md_status cu_sumsq_dev(md_backend *be, const float *x, size_t n, double *acc) {
    cuda_backend *cb = cb_of(be);
    k_sumsq_partial<<<1024, 256, 0, cb->stream>>>(x, n, cb->red_dev);
    LAUNCH_TRY();
    k_sum_doubles<<<1, 256, 0, cb->stream>>>(cb->red_dev, 1024, acc, 1);
    LAUNCH_TRY();
    return MD_OK;
}

__global__ void k_clip_scale(float *x, size_t n, const double *acc, float max_norm) {
    double coef = max_norm / (sqrt(*acc) + 1e-6);
    if (!(coef < 1.0)) return; /* also when the norm is not finite: no update follows */
    float c = (float)coef;
    GRID_LOOP(i, n) x[i] *= c;
}

static md_status cu_clip_scale_dev(md_backend *be, float *x, size_t n, const double *acc,
                                   float max_norm) {
    k_clip_scale<<<blocks_for(n, 256), 256, 0, cb_of(be)->stream>>>(x, n, acc, max_norm);
    LAUNCH_TRY();
    return MD_OK;
}

/* Graphs: stream capture of everything issued on the backend's stream. */
static md_status cu_graph_begin(md_backend *be) {
    CUDA_TRY(cudaStreamBeginCapture(cb_of(be)->stream, cudaStreamCaptureModeThreadLocal));
    return MD_OK;
}

static md_status cu_graph_end(md_backend *be, void **impl) {
    cudaGraph_t g = NULL;
    CUDA_TRY(cudaStreamEndCapture(cb_of(be)->stream, &g));
    cudaGraphExec_t exec = NULL;
    cudaError_t     e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return cuda_fail(e, "cudaGraphInstantiate", __FILE__, __LINE__);
    *impl = exec;
    cb_of(be)->live_graphs++;
    return MD_OK;
}

/* With no graph left, the buffers parked for graphs can go. */
static void free_parked(cuda_backend *cb) {
    for (int i = 0; i < cb->nparked; i++) free_now(cb->parked[i].p, cb->parked[i].pinned);
    cb->nparked = 0;
}

static md_status cu_graph_launch(md_backend *be, void *impl) {
    CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)impl, cb_of(be)->stream));
    return MD_OK;
}

static void cu_graph_destroy(md_backend *be, void *impl) {
    cuda_backend *cb = cb_of(be);
    if (!impl) return;
    cudaGraphExecDestroy((cudaGraphExec_t)impl);
    if (cb->live_graphs > 0 && --cb->live_graphs == 0) free_parked(cb);
}

/* ---- in-memory datasets (cuda_data.cu) ---------------------------------------------- */

static md_status cu_augment_u8(md_backend *be, const md_u8_batch *b) {
    return md_cuda_augment_u8(cb_of(be)->stream, b);
}

/* ---- lifetime --------------------------------------------------------------------------- */

static void cu_destroy(md_backend *be) {
    cuda_backend *cb = cb_of(be);
    if (cb->stream) cudaStreamSynchronize(cb->stream);
    free_parked(cb);
    free(cb->parked);
    if (cb->workspace) cudaFree(cb->workspace);
    if (cb->blas_ws) cudaFree(cb->blas_ws);
    if (cb->red_dev) cudaFree(cb->red_dev);
    if (cb->red_host) cudaFreeHost(cb->red_host);
    if (cb->mask_host) cudaFreeHost(cb->mask_host);
    cudaFree(cb->ones), cudaFree(cb->zeros), cudaFree(cb->dummy);
    if (cb->blas) cublasDestroy(cb->blas);
    if (cb->dnn) cudnnDestroy(cb->dnn);
    if (cb->stream) cudaStreamDestroy(cb->stream);
    free(cb);
}

static md_backend_vtable make_vtable(void) {
    md_backend_vtable v;
    memset(&v, 0, sizeof v);
    v.name = "cuda";
    v.destroy = cu_destroy;
    v.alloc = cu_alloc;
    v.free = cu_free;
    v.alloc_shared = cu_alloc_shared;
    v.free_shared = cu_free;
    v.alloc_host = cu_alloc_host;
    v.free_host = cu_free_host;
    v.host = 0;
    v.upload = cu_upload;
    v.download = cu_download;
    v.sync = cu_sync;
    v.conv_create = cu_conv_create;
    v.conv_destroy = cu_conv_destroy;
    v.conv_forward = cu_conv_forward;
    v.conv_backward = cu_conv_backward;
    v.bn_forward_train = cu_bn_forward_train;
    v.bn_forward_eval = cu_bn_forward_eval;
    v.bn_backward_train = cu_bn_backward_train;
    v.bn_backward_eval = cu_bn_backward_eval;
    v.act_forward = cu_act_forward;
    v.act_backward = cu_act_backward;
    v.add = cu_add;
    v.copy = cu_copy;
    v.zero = cu_zero;
    v.pool_forward = cu_pool_forward;
    v.pool_backward = cu_pool_backward;
    v.gap_forward = cu_gap_forward;
    v.gap_backward = cu_gap_backward;
    v.concat_forward = cu_concat_forward;
    v.concat_backward = cu_concat_backward;
    v.slice_forward = cu_slice_forward;
    v.slice_backward = cu_slice_backward;
    v.linear_forward = cu_linear_forward;
    v.linear_backward = cu_linear_backward;
    v.dropout_forward = cu_dropout_forward;
    v.mul_add = cu_mul_add;
    v.row_scale = cu_row_scale;
    v.softmax_ce = cu_softmax_ce;
    v.top1_correct = cu_top1_correct;
    v.sgd_update = cu_sgd_update;
    v.sumsq = cu_sumsq;
    v.scale = cu_scale;
    v.loss_dev = cu_loss_dev;
    v.sumsq_dev = cu_sumsq_dev;
    v.clip_scale_dev = cu_clip_scale_dev;
    v.graph_begin = cu_graph_begin;
    v.graph_end = cu_graph_end;
    v.graph_launch = cu_graph_launch;
    v.graph_destroy = cu_graph_destroy;
    v.augment_u8 = cu_augment_u8;
    return v;
}

static md_backend_vtable cuda_vtable = make_vtable();

extern "C" md_status md_backend_cuda_create(int device, int allow_tf32, int fastest,
                                            md_backend **out) {
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
        return md_fail(MD_ERR_BACKEND, "cuda backend: no CUDA device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
    if (device < 0) device = 0;
    device %= count; /* local rank mod device count */
    CUDA_TRY(cudaSetDevice(device));
    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) return md_fail(MD_ERR_NOMEM, "cuda backend");
    cb->base.vt = &cuda_vtable;
    cb->device = device;
    cb->allow_tf32 = allow_tf32;
    cb->fastest = fastest;
    cb->ws_limit = (size_t)256 << 20;
    md_status s = MD_OK;
    if ((e = cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking)) != cudaSuccess)
        s = cuda_fail(e, "cudaStreamCreate", __FILE__, __LINE__);
    if (s == MD_OK && cudnnCreate(&cb->dnn) != CUDNN_STATUS_SUCCESS)
        s = md_fail(MD_ERR_BACKEND, "cudnnCreate failed");
    if (s == MD_OK && cudnnSetStream(cb->dnn, cb->stream) != CUDNN_STATUS_SUCCESS)
        s = md_fail(MD_ERR_BACKEND, "cudnnSetStream failed");
    if (s == MD_OK && cublasCreate(&cb->blas) != CUBLAS_STATUS_SUCCESS)
        s = md_fail(MD_ERR_BACKEND, "cublasCreate failed");
    if (s == MD_OK && cublasSetStream(cb->blas, cb->stream) != CUBLAS_STATUS_SUCCESS)
        s = md_fail(MD_ERR_BACKEND, "cublasSetStream failed");
    if (s == MD_OK &&
        cublasSetMathMode(cb->blas, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) !=
            CUBLAS_STATUS_SUCCESS)
        s = md_fail(MD_ERR_BACKEND, "cublasSetMathMode failed");
    if (s == MD_OK) s = red_reserve(cb, 4096);
    /* cuBLAS gets its workspace up front: it must not allocate inside a graph capture. */
    if (s == MD_OK && (e = cudaMalloc(&cb->blas_ws, (size_t)32 << 20)) != cudaSuccess)
        s = cuda_fail(e, "cudaMalloc (cuBLAS workspace)", __FILE__, __LINE__);
    if (s == MD_OK && cublasSetWorkspace(cb->blas, cb->blas_ws, (size_t)32 << 20) !=
                          CUBLAS_STATUS_SUCCESS)
        s = md_fail(MD_ERR_BACKEND, "cublasSetWorkspace failed");
    if (s != MD_OK) {
        cu_destroy(&cb->base);
        return s;
    }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, device);
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    snprintf(cb->base.describe, sizeof cb->base.describe,
             "cuda: %s (device %d of %d, sm_%d%d), CUDA runtime %d.%d, cuDNN %zu, TF32 %s, "
             "convolution algorithms %s",
             prop.name, device, count, prop.major, prop.minor, rt / 1000, rt % 1000 / 10,
             (size_t)cudnnGetVersion(), allow_tf32 ? "allowed" : "off",
             fastest ? "fastest (not bit-reproducible)" : "deterministic");
    *out = &cb->base;
    return MD_OK;
}

extern "C" int md_backend_cuda_built(void) {
    return 1;
}

extern "C" void *md_backend_cuda_stream(md_backend *be) {
    return be && be->vt == &cuda_vtable ? (void *)cb_of(be)->stream : NULL;
}

extern "C" int md_backend_cuda_device(const md_backend *be) {
    return be && be->vt == &cuda_vtable ? ((const cuda_backend *)be)->device : -1;
}

extern "C" size_t md_backend_cuda_used_bytes(md_backend *be) {
    size_t free_b = 0, total = 0;
    if (!be || be->vt != &cuda_vtable) return 0;
    if (cudaSetDevice(cb_of(be)->device) != cudaSuccess ||
        cudaMemGetInfo(&free_b, &total) != cudaSuccess)
        return 0;
    return total - free_b;
}
