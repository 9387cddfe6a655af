/* Compute backends and the op table.
 *
 * A backend owns memory and runs ops on it: the CPU backend on oneDNN and
 * OpenMP, later a CUDA backend on cuDNN. Handles are opaque; no type of the
 * underlying library appears here. Every op checks its shapes before it runs
 * and fails with MD_ERR_ARG and a message naming the op and the shapes.
 *
 * Conventions, the same for every op:
 * - Activations are NCHW float32; tensors passed in live in the backend's memory.
 * - Forward ops overwrite their outputs (md_add is the one that accumulates).
 * - Backward ops ACCUMULATE into input gradients and parameter gradients
 *   (dx += ..., dw += ...), as autograd does when a tensor feeds several ops.
 *   Pass NULL for a gradient that is not wanted. The caller zeroes buffers.
 * - Semantics follow PyTorch (torch.nn.functional) unless stated.
 */
#ifndef MDENAS_BACKEND_H
#define MDENAS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/error.h"
#include "mdenas/rng.h"
#include "mdenas/tensor.h"

typedef struct md_backend md_backend;

/* ---- backend lifetime and memory -------------------------------------- */

/* threads <= 0: the OpenMP default; at most MD_MAX_THREADS. */
#define MD_MAX_THREADS 1024
md_status   md_backend_cpu_create(int threads, md_backend **out);
/* The OpenMP threads a CPU backend computes with; 0 for other backends. */
int         md_backend_cpu_threads(const md_backend *be);
/* The CUDA backend on GPU (device mod the device count): cuDNN, cuBLAS, own
 * kernels. allow_tf32: TF32 tensor-core math for fp32 convolutions and GEMMs
 * (PyTorch's default for convolutions). fastest: any convolution algorithm
 * (cuDNN's heuristic first choice); 0 keeps to deterministic ones, so runs
 * repeat bit for bit (PyTorch's cudnn.deterministic). MD_ERR_BACKEND with a
 * message when the build has no CUDA backend or the machine no GPU. */
md_status   md_backend_cuda_create(int device, int allow_tf32, int fastest, md_backend **out);
/* 1 when this build has the CUDA backend (a GPU may still be absent). */
int         md_backend_cuda_built(void);
/* A CUDA backend's stream (a cudaStream_t) and device ordinal, for code that
 * issues its own work in order with the backend's (the NCCL communicator);
 * NULL and -1 for any other backend. */
void       *md_backend_cuda_stream(md_backend *be);
int         md_backend_cuda_device(const md_backend *be);
/* Bytes of the GPU in use now (cudaMemGetInfo: total - free, every process and
 * the CUDA context included); 0 for any other backend. Benchmarks take the rise
 * above a baseline as the backend's own memory. */
size_t      md_backend_cuda_used_bytes(md_backend *be);
void        md_backend_destroy(md_backend *be);
const char *md_backend_name(const md_backend *be);
/* A line describing the backend and its library versions, for logs. */
const char *md_backend_describe(const md_backend *be);

md_status md_backend_alloc(md_backend *be, size_t bytes, void **out); /* zeroed, 64-byte aligned */
void      md_backend_free(md_backend *be, void *p);
/* Memory the host and the backend both address, zeroed (CPU: host memory; CUDA:
 * managed memory). Call md_backend_sync before the host reads what ops wrote. */
md_status md_backend_alloc_shared(md_backend *be, size_t bytes, void **out);
void      md_backend_free_shared(md_backend *be, void *p);
/* Host memory that uploads read fastest, zeroed, 64-byte aligned (CPU: plain
 * memory; CUDA: page-locked, so copies to the GPU need no staging and can be
 * asynchronous): the loader's batch ring. */
md_status md_backend_alloc_host(md_backend *be, size_t bytes, void **out);
void      md_backend_free_host(md_backend *be, void *p);
/* 1 when host pointers can be passed to ops directly (the CPU backend). */
int       md_backend_is_host(const md_backend *be);
md_status md_backend_upload(md_backend *be, void *dst, const void *host, size_t bytes);
md_status md_backend_download(md_backend *be, void *host, const void *src, size_t bytes);
md_status md_backend_sync(md_backend *be);

/* ---- convolution (no bias): dense, depthwise, pointwise, dilated ------ */

typedef struct {
    int n, c_in, h, w; /* input shape */
    int c_out;         /* output channels */
    int kh, kw;        /* kernel */
    int stride, pad, dilation, groups; /* same in both spatial dims */
} md_conv_desc;

typedef struct md_conv md_conv;

/* Output spatial size; returns MD_ERR_ARG (with message) for an impossible desc. */
md_status md_conv_out_hw(const md_conv_desc *d, int *oh, int *ow);
/* Handles are cached per desc inside the backend: creating the same desc
 * twice is cheap and shares the compiled primitives. */
md_status md_conv_create(md_backend *be, const md_conv_desc *d, md_conv **out);
void      md_conv_destroy(md_conv *c);
const md_conv_desc *md_conv_get_desc(const md_conv *c);
/* w: [c_out, c_in/groups, kh, kw]. */
md_status md_conv_forward(md_conv *c, const md_tensor *x, const md_tensor *w, const md_tensor *y);
md_status md_conv_backward(md_conv *c, const md_tensor *x, const md_tensor *w, const md_tensor *dy,
                           const md_tensor *dx, const md_tensor *dw);

/* ---- batch normalisation ---------------------------------------------- */

/* Cross-replica batch norm (--sync-bn): per-channel sums are reduced over the
 * replicas of a data-parallel run, so every replica normalises with the
 * statistics of the global batch. allreduce sums n doubles in place on every
 * replica. Protocol, which md_bn_sync_absent replays for a replica with no rows:
 * forward (batch statistics) reduces [sum_c x, count] (C + 1), then
 * [sum_c (x - mean)^2] (C); backward reduces [sum_c dy, sum_c dy*(x - mean), count]
 * (2C + 1). With one replica the results equal those without sync, bit for bit.
 * dy must be the gradient of the loss of the GLOBAL batch (each replica's mean
 * loss scaled by its rows / the global rows); dgamma and dbeta receive this
 * replica's part, for the gradient allreduce to sum. */
typedef struct {
    md_status (*allreduce)(void *ctx, double *buf, int n);
    void *ctx;
} md_bn_sync;

typedef struct {
    const md_tensor *gamma, *beta;               /* [C]; both NULL when affine = false */
    const md_tensor *running_mean, *running_var; /* [C]; may be NULL in training */
    const md_tensor *save_mean, *save_invstd;    /* [C]; written by forward_train */
    float momentum;                              /* running = (1-m)*running + m*batch; 0.1 */
    float eps;                                   /* 1e-5 */
    const md_bn_sync *sync;                      /* NULL: statistics of this batch only */
} md_bn_state;

/* Batch statistics; running_var is updated with the unbiased variance. */
md_status md_bn_forward_train(md_backend *be, const md_tensor *x, const md_tensor *y,
                              const md_bn_state *s);
/* Running statistics. */
md_status md_bn_forward_eval(md_backend *be, const md_tensor *x, const md_tensor *y,
                             const md_bn_state *s);
md_status md_bn_backward_train(md_backend *be, const md_tensor *x, const md_tensor *dy,
                               const md_tensor *dx, const md_tensor *dgamma,
                               const md_tensor *dbeta, const md_bn_state *s);
/* Take part in the forward reductions of a synced BN over C channels with no
 * rows of one's own (a replica whose slice of the last batch is empty). */
md_status md_bn_sync_absent(const md_bn_sync *sync, int C);
md_status md_bn_backward_eval(md_backend *be, const md_tensor *x, const md_tensor *dy,
                              const md_tensor *dx, const md_tensor *dgamma,
                              const md_tensor *dbeta, const md_bn_state *s);

/* ---- elementwise -------------------------------------------------------- */

typedef enum { MD_ACT_RELU, MD_ACT_RELU6 } md_act;

/* y may alias x. */
md_status md_act_forward(md_backend *be, md_act act, const md_tensor *x, const md_tensor *y);
/* From the forward OUTPUT y (so in-place forward is allowed): dx += dy * [0 < y < cap]. */
md_status md_act_backward(md_backend *be, md_act act, const md_tensor *y, const md_tensor *dy,
                          const md_tensor *dx);
md_status md_add(md_backend *be, const md_tensor *x, const md_tensor *y); /* y += x */
md_status md_copy(md_backend *be, const md_tensor *x, const md_tensor *y); /* y = x */
md_status md_zero(md_backend *be, const md_tensor *y);                    /* y = 0 */

/* ---- pooling ------------------------------------------------------------ */

typedef enum { MD_POOL_MAX, MD_POOL_AVG } md_pool_kind;

typedef struct {
    md_pool_kind kind;
    int          k, stride, pad; /* avg excludes padding from the count */
} md_pool_desc;

md_status md_pool_forward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                          const md_tensor *y);
/* Max pooling routes to the first maximum of each window, recomputed from x. */
md_status md_pool_backward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                           const md_tensor *dy, const md_tensor *dx);
/* Global average pool: x [N,C,H,W] -> y [N,C]. */
md_status md_gap_forward(md_backend *be, const md_tensor *x, const md_tensor *y);
md_status md_gap_backward(md_backend *be, const md_tensor *dy, const md_tensor *dx);

/* ---- shape ops ------------------------------------------------------------ */

/* Channel concat of k NCHW tensors of equal N, H, W into y. */
md_status md_concat_forward(md_backend *be, const md_tensor *const *xs, int k, const md_tensor *y);
md_status md_concat_backward(md_backend *be, const md_tensor *dy, const md_tensor *const *dxs,
                             int k);
/* y = x[:, :, oh:oh+Hy, ow:ow+Wy] (FactorizedReduce's one-pixel shift is oh = ow = 1). */
md_status md_slice_forward(md_backend *be, const md_tensor *x, int oh, int ow, const md_tensor *y);
md_status md_slice_backward(md_backend *be, const md_tensor *dy, int oh, int ow,
                            const md_tensor *dx);

/* ---- classifier, loss, regularisation ----------------------------------- */

/* y[N,out] = x[N,in] w[out,in]^T + b[out]; b may be NULL. */
md_status md_linear_forward(md_backend *be, const md_tensor *x, const md_tensor *w,
                            const md_tensor *b, const md_tensor *y);
md_status md_linear_backward(md_backend *be, const md_tensor *x, const md_tensor *w,
                             const md_tensor *dy, const md_tensor *dx, const md_tensor *dw,
                             const md_tensor *db);
/* Inverted dropout with probability p: mask holds 0 or 1/(1-p); y = x * mask. */
md_status md_dropout_forward(md_backend *be, float p, md_rng *rng, const md_tensor *x,
                             const md_tensor *mask, const md_tensor *y);
md_status md_dropout_backward(md_backend *be, const md_tensor *mask, const md_tensor *dy,
                              const md_tensor *dx);
/* Rows of x scaled: y[r, ...] = x[r, ...] * s[r] over the dim[0] rows of x (s: dim[0]
 * floats in backend memory); accumulate = 1 adds instead (y += x * s, what the
 * backward of y = x * s is with x the output gradient). Drop-path is this with one
 * scale per image (0 or 1/keep); dropout with one per element (x viewed as 1-D). */
md_status md_row_scale(md_backend *be, const md_tensor *x, const float *s, const md_tensor *y,
                       int accumulate);
/* Mean softmax cross-entropy over the batch. labels: N int32 in backend memory,
 * each in [0, K). *loss is written on the host. dlogits (may be NULL) += d(loss)/d(logits). */
md_status md_softmax_ce(md_backend *be, const md_tensor *logits, const int32_t *labels,
                        float *loss, const md_tensor *dlogits);
/* Number of rows whose arg-max (first on ties) equals the label. */
md_status md_top1_correct(md_backend *be, const md_tensor *logits, const int32_t *labels,
                          int *correct);

/* ---- optimiser primitives over flat ranges (arena offsets) --------------- */

/* torch.optim.SGD (dampening 0, no nesterov): v = mu*v + (g + wd*w); w -= lr*v. */
md_status md_sgd_update(md_backend *be, float *w, const float *g, float *v, size_t n, float lr,
                        float momentum, float weight_decay);
/* The same with nesterov = 1 as torch.optim.SGD(nesterov=True):
 * d = g + wd*w; v = mu*v + d; w -= lr*(d + mu*v). */
md_status md_sgd_update_nesterov(md_backend *be, float *w, const float *g, float *v, size_t n,
                                 float lr, float momentum, float weight_decay, int nesterov);
/* The same, made only when *guard (a double in backend memory, e.g. the clip's
 * sum of squares of the gradients) is finite; otherwise w and v stay as they
 * are. Decided on the backend, so a recorded step needs no host round trip. */
md_status md_sgd_update_guarded(md_backend *be, float *w, const float *g, float *v, size_t n,
                                float lr, float momentum, float weight_decay, int nesterov,
                                const double *guard);
/* *out += sum of squares of x[0..n) (accumulated in double). */
/* ---- a training step without host round trips (what a CUDA graph captures) -- */

/* md_softmax_ce and md_top1_correct with the results left in backend memory:
 * out[0] = the mean loss, out[1] = the correct rows (as a float). Labels are
 * not range-checked here (the datasets check them when they load). */
md_status md_loss_dev(md_backend *be, const md_tensor *logits, const int32_t *labels, float *out,
                      const md_tensor *dlogits);
/* With label smoothing eps as torch.nn.CrossEntropyLoss(label_smoothing=eps):
 * the target is (1 - eps) * onehot + eps / K; out[0] is that loss. */
md_status md_loss_dev_smoothed(md_backend *be, const md_tensor *logits, const int32_t *labels,
                               float smoothing, float *out, const md_tensor *dlogits);
/* *acc (backend memory, one double) += sum of x[i]^2. */
md_status md_sumsq_dev(md_backend *be, const float *x, size_t n, double *acc);
/* x *= min(1, max_norm / (sqrt(*acc) + 1e-6)): clip_grad_norm's coefficient
 * computed where the gradients are. */
md_status md_clip_scale_dev(md_backend *be, float *x, size_t n, const double *acc,
                            float max_norm);

/* ---- in-memory datasets on the backend (src/train/devdata.c) -------------- */

/* One batch of an in-memory dataset made where the network runs: row i is the
 * sample order[j0 + i], augmented as the host loader does (src/data/augment_inline.h)
 * from the child j0 + i + 1 of the epoch stream with key epoch_key, normalised
 * through lut. Every pointer is backend memory. Dataset indices in order are not
 * range-checked here (the loader checks them). */
typedef struct {
    const uint8_t *images;  /* [n_images, c, h, w] bytes, NCHW */
    const int32_t *labels;  /* [n_images] */
    const float   *lut;     /* [c][256]: the normalised value of each byte per channel */
    const int32_t *order;   /* [n]: the dataset index of each position of the epoch */
    int            n_images, c, h, w;
    long           n;    /* positions in order */
    long           j0;   /* the position of row 0 */
    int            rows; /* 0 <= rows, j0 + rows <= n */
    uint64_t       epoch_key;
    int            crop_pad, flip, cutout; /* md_augment's fields (data.h) */
    float         *x;                      /* out: [rows, c, h, w] */
    int32_t       *y;                      /* out: [rows] */
} md_u8_batch;

/* 1 when the backend has augment_u8. */
int       md_backend_has_augment_u8(const md_backend *be);
/* Queued like any op: no allocation, no synchronisation (a graph may record it). */
md_status md_backend_augment_u8(md_backend *be, const md_u8_batch *b);

/* Graphs: between capture_begin and capture_end the backend records ops
 * instead of running them; launch replays them. Only a backend with graphs
 * (md_backend_has_graphs: CUDA) supports this; ops that need the host (readbacks,
 * allocations, cross-replica BN) must not be recorded. */
typedef struct md_graph md_graph;
int       md_backend_has_graphs(const md_backend *be);
md_status md_graph_capture_begin(md_backend *be);
md_status md_graph_capture_end(md_backend *be, md_graph **out);
md_status md_graph_launch(md_graph *g);
void      md_graph_destroy(md_graph *g);

/* *out (host) += sum of x[i]^2, in double. */
md_status md_sumsq(md_backend *be, const float *x, size_t n, double *out);
md_status md_scale(md_backend *be, float *x, size_t n, float factor); /* x *= factor */

#endif
