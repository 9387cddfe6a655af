/* The CPU backend's ops that are memory-bound loops: OpenMP over channels or
 * images, double accumulation for reductions. Shapes were checked by backend.c. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

#define PAR_MIN 16384 /* below this many elements a parallel region costs more than it saves */

/* ---- batch norm ---------------------------------------------------------- */

/* Per channel c of x [N,C,H,W]: sum and sum of squared deviation from `mean`. */
static void channel_sums(const md_tensor *x, int c, double mean, double *sum, double *sq) {
    int    n = x->dim[0], C = x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
    double s = 0.0, q = 0.0;
    for (int i = 0; i < n; i++) {
        const float *p = x->data + ((size_t)i * C + c) * hw;
        for (size_t j = 0; j < hw; j++) {
            double v = p[j] - mean;
            s += p[j];
            q += v * v;
        }
    }
    *sum = s;
    *sq = q;
}

/* y = x * a[c] + b[c] */
static void channel_affine(const md_tensor *x, float *y, int c, float a, float b) {
    int    n = x->dim[0], C = x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
    for (int i = 0; i < n; i++) {
        const float *p = x->data + ((size_t)i * C + c) * hw;
        float       *q = y + ((size_t)i * C + c) * hw;
        for (size_t j = 0; j < hw; j++) q[j] = p[j] * a + b;
    }
}

md_status md_cpu_bn_forward_train(md_backend *be, const md_tensor *x, const md_tensor *y,
                                  const md_bn_state *s) {
    (void)be;
    int    C = x->dim[1];
    double m = (double)x->dim[0] * x->dim[2] * x->dim[3];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double sum, sq, dummy;
        channel_sums(x, c, 0.0, &sum, &dummy);
        double mean = sum / m;
        channel_sums(x, c, mean, &dummy, &sq); /* two passes: no cancellation */
        double var = sq / m;
        double invstd = 1.0 / sqrt(var + s->eps);
        float  g = s->gamma ? s->gamma->data[c] : 1.0f, b = s->beta ? s->beta->data[c] : 0.0f;
        float  a = (float)(invstd * g);
        channel_affine(x, y->data, c, a, (float)(b - mean * invstd * g));
        s->save_mean->data[c] = (float)mean;
        s->save_invstd->data[c] = (float)invstd;
        if (s->running_mean) {
            double mo = s->momentum;
            s->running_mean->data[c] = (float)((1.0 - mo) * s->running_mean->data[c] + mo * mean);
            s->running_var->data[c] =
                (float)((1.0 - mo) * s->running_var->data[c] + mo * var * m / (m - 1.0));
        }
    }
    return MD_OK;
}

md_status md_cpu_bn_forward_eval(md_backend *be, const md_tensor *x, const md_tensor *y,
                                 const md_bn_state *s) {
    (void)be;
    int C = x->dim[1];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double invstd = 1.0 / sqrt((double)s->running_var->data[c] + s->eps);
        double g = s->gamma ? s->gamma->data[c] : 1.0, b = s->beta ? s->beta->data[c] : 0.0;
        channel_affine(x, y->data, c, (float)(invstd * g),
                       (float)(b - s->running_mean->data[c] * invstd * g));
    }
    return MD_OK;
}

/* sum(dy) and sum(dy * (x - mean)) over channel c. */
static void channel_grad_sums(const md_tensor *x, const md_tensor *dy, int c, double mean,
                              double *sdy, double *sdyx) {
    int    n = x->dim[0], C = x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
    double a = 0.0, b = 0.0;
    for (int i = 0; i < n; i++) {
        size_t       o = ((size_t)i * C + c) * hw;
        const float *p = x->data + o, *g = dy->data + o;
        for (size_t j = 0; j < hw; j++) {
            a += g[j];
            b += g[j] * (p[j] - mean);
        }
    }
    *sdy = a;
    *sdyx = b;
}

md_status md_cpu_bn_backward_train(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                   const md_tensor *dx, const md_tensor *dgamma,
                                   const md_tensor *dbeta, const md_bn_state *s) {
    (void)be;
    int    n = x->dim[0], C = x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
    double m = (double)n * hw;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double mean = s->save_mean->data[c], invstd = s->save_invstd->data[c];
        double sdy, sdyx;
        channel_grad_sums(x, dy, c, mean, &sdy, &sdyx);
        if (dgamma) dgamma->data[c] += (float)(sdyx * invstd);
        if (dbeta) dbeta->data[c] += (float)sdy;
        if (!dx) continue;
        double g = s->gamma ? s->gamma->data[c] : 1.0;
        /* dx = g*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)) */
        float k = (float)(g * invstd), mdy = (float)(sdy / m);
        float kx = (float)(sdyx * invstd * invstd / m);
        for (int i = 0; i < n; i++) {
            size_t       o = ((size_t)i * C + c) * hw;
            const float *p = x->data + o, *gy = dy->data + o;
            float       *q = dx->data + o;
            for (size_t j = 0; j < hw; j++)
                q[j] += k * (gy[j] - mdy - (p[j] - (float)mean) * kx);
        }
    }
    return MD_OK;
}

md_status md_cpu_bn_backward_eval(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                  const md_tensor *dx, const md_tensor *dgamma,
                                  const md_tensor *dbeta, const md_bn_state *s) {
    (void)be;
    int    n = x->dim[0], C = x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double invstd = 1.0 / sqrt((double)s->running_var->data[c] + s->eps);
        double mean = s->running_mean->data[c];
        if (dgamma || dbeta) {
            double sdy, sdyx;
            channel_grad_sums(x, dy, c, mean, &sdy, &sdyx);
            if (dgamma) dgamma->data[c] += (float)(sdyx * invstd);
            if (dbeta) dbeta->data[c] += (float)sdy;
        }
        if (!dx) continue;
        float k = (float)((s->gamma ? s->gamma->data[c] : 1.0) * invstd);
        for (int i = 0; i < n; i++) {
            size_t o = ((size_t)i * C + c) * hw;
            for (size_t j = 0; j < hw; j++) dx->data[o + j] += k * dy->data[o + j];
        }
    }
    return MD_OK;
}

/* ---- elementwise ------------------------------------------------------------ */

md_status md_cpu_act_forward(md_backend *be, md_act act, const float *x, float *y, size_t n) {
    (void)be;
    float cap = act == MD_ACT_RELU6 ? 6.0f : FLT_MAX;
    /* Comparisons, not fminf/fmaxf: those are libm calls without -ffast-math. */
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float v = x[i] > 0.0f ? x[i] : 0.0f;
        y[i] = v < cap ? v : cap;
    }
    return MD_OK;
}

md_status md_cpu_act_backward(md_backend *be, md_act act, const float *y, const float *dy,
                              float *dx, size_t n) {
    (void)be;
    float cap = act == MD_ACT_RELU6 ? 6.0f : FLT_MAX;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) dx[i] += (y[i] > 0.0f && y[i] < cap) ? dy[i] : 0.0f;
    return MD_OK;
}

md_status md_cpu_add(md_backend *be, const float *x, float *y, size_t n) {
    (void)be;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
    return MD_OK;
}

md_status md_cpu_mul_add(md_backend *be, const float *a, const float *b, float *y, size_t n) {
    (void)be;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += a[i] * b[i];
    return MD_OK;
}

md_status md_cpu_copy(md_backend *be, const float *x, float *y, size_t n) {
    (void)be;
    if (x != y) memmove(y, x, n * sizeof(float));
    return MD_OK;
}

md_status md_cpu_zero(md_backend *be, float *y, size_t n) {
    (void)be;
    memset(y, 0, n * sizeof(float));
    return MD_OK;
}

/* ---- pooling ------------------------------------------------------------------ */

typedef struct {
    int h0, h1, w0, w1; /* window clamped to the input: [h0,h1) x [w0,w1) */
} window;

static window pool_window(const md_pool_desc *p, int i, int j, int H, int W) {
    window v;
    v.h0 = i * p->stride - p->pad;
    v.w0 = j * p->stride - p->pad;
    v.h1 = v.h0 + p->k < H ? v.h0 + p->k : H;
    v.w1 = v.w0 + p->k < W ? v.w0 + p->k : W;
    if (v.h0 < 0) v.h0 = 0;
    if (v.w0 < 0) v.w0 = 0;
    return v;
}

/* Index within the plane of the first maximum of the window. */
static int window_argmax(const float *plane, int W, window v) {
    int   best = v.h0 * W + v.w0;
    float m = plane[best];
    for (int h = v.h0; h < v.h1; h++)
        for (int w = v.w0; w < v.w1; w++)
            if (plane[h * W + w] > m) {
                m = plane[h * W + w];
                best = h * W + w;
            }
    return best;
}

static float window_sum(const float *plane, int W, window v) {
    float s = 0.0f;
    for (int h = v.h0; h < v.h1; h++)
        for (int w = v.w0; w < v.w1; w++) s += plane[h * W + w];
    return s;
}

md_status md_cpu_pool_forward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                              const md_tensor *y) {
    (void)be;
    int planes = x->dim[0] * x->dim[1], H = x->dim[2], W = x->dim[3];
    int OH = y->dim[2], OW = y->dim[3];
#pragma omp parallel for schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x->data + (size_t)pl * H * W;
        float       *yp = y->data + (size_t)pl * OH * OW;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                window v = pool_window(p, i, j, H, W);
                yp[i * OW + j] = p->kind == MD_POOL_MAX
                                     ? xp[window_argmax(xp, W, v)]
                                     : window_sum(xp, W, v) / (float)((v.h1 - v.h0) * (v.w1 - v.w0));
            }
    }
    return MD_OK;
}

md_status md_cpu_pool_backward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                               const md_tensor *dy, const md_tensor *dx) {
    (void)be;
    int planes = x->dim[0] * x->dim[1], H = x->dim[2], W = x->dim[3];
    int OH = dy->dim[2], OW = dy->dim[3];
#pragma omp parallel for schedule(static)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x->data + (size_t)pl * H * W, *gp = dy->data + (size_t)pl * OH * OW;
        float       *dp = dx->data + (size_t)pl * H * W;
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                window v = pool_window(p, i, j, H, W);
                float  g = gp[i * OW + j];
                if (p->kind == MD_POOL_MAX) {
                    dp[window_argmax(xp, W, v)] += g;
                    continue;
                }
                g /= (float)((v.h1 - v.h0) * (v.w1 - v.w0));
                for (int h = v.h0; h < v.h1; h++)
                    for (int w = v.w0; w < v.w1; w++) dp[h * W + w] += g;
            }
    }
    return MD_OK;
}

md_status md_cpu_gap_forward(md_backend *be, const md_tensor *x, const md_tensor *y) {
    (void)be;
    int    planes = x->dim[0] * x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
#pragma omp parallel for schedule(static) if (planes * hw > PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x->data + (size_t)pl * hw;
        double       s = 0.0;
        for (size_t j = 0; j < hw; j++) s += xp[j];
        y->data[pl] = (float)(s / (double)hw);
    }
    return MD_OK;
}

md_status md_cpu_gap_backward(md_backend *be, const md_tensor *dy, const md_tensor *dx) {
    (void)be;
    int    planes = dx->dim[0] * dx->dim[1];
    size_t hw = (size_t)dx->dim[2] * dx->dim[3];
#pragma omp parallel for schedule(static) if (planes * hw > PAR_MIN)
    for (int pl = 0; pl < planes; pl++) {
        float  g = dy->data[pl] / (float)hw;
        float *dp = dx->data + (size_t)pl * hw;
        for (size_t j = 0; j < hw; j++) dp[j] += g;
    }
    return MD_OK;
}

/* ---- shape ops ------------------------------------------------------------------ */

md_status md_cpu_concat_forward(md_backend *be, const md_tensor *const *xs, int k,
                                const md_tensor *y) {
    (void)be;
    int    N = y->dim[0];
    size_t hw = (size_t)y->dim[2] * y->dim[3], ystride = (size_t)y->dim[1] * hw;
#pragma omp parallel for schedule(static) if (N * ystride > PAR_MIN)
    for (int n = 0; n < N; n++) {
        size_t off = 0;
        for (int i = 0; i < k; i++) {
            size_t block = (size_t)xs[i]->dim[1] * hw;
            memcpy(y->data + n * ystride + off, xs[i]->data + n * block, block * sizeof(float));
            off += block;
        }
    }
    return MD_OK;
}

md_status md_cpu_concat_backward(md_backend *be, const md_tensor *dy, const md_tensor *const *dxs,
                                 int k) {
    (void)be;
    int    N = dy->dim[0];
    size_t hw = (size_t)dy->dim[2] * dy->dim[3], ystride = (size_t)dy->dim[1] * hw;
#pragma omp parallel for schedule(static) if (N * ystride > PAR_MIN)
    for (int n = 0; n < N; n++) {
        size_t off = 0;
        for (int i = 0; i < k; i++) {
            size_t       block = (size_t)dxs[i]->dim[1] * hw;
            const float *src = dy->data + n * ystride + off;
            float       *dst = dxs[i]->data + n * block;
            for (size_t j = 0; j < block; j++) dst[j] += src[j];
            off += block;
        }
    }
    return MD_OK;
}

md_status md_cpu_slice_forward(md_backend *be, const md_tensor *x, int oh, int ow,
                               const md_tensor *y) {
    (void)be;
    int planes = x->dim[0] * x->dim[1], H = x->dim[2], W = x->dim[3], h = y->dim[2], w = y->dim[3];
#pragma omp parallel for schedule(static) if ((size_t)planes * h * w > PAR_MIN)
    for (int pl = 0; pl < planes; pl++)
        for (int i = 0; i < h; i++)
            memcpy(y->data + ((size_t)pl * h + i) * w, x->data + ((size_t)pl * H + i + oh) * W + ow,
                   (size_t)w * sizeof(float));
    return MD_OK;
}

md_status md_cpu_slice_backward(md_backend *be, const md_tensor *dy, int oh, int ow,
                                const md_tensor *dx) {
    (void)be;
    int planes = dx->dim[0] * dx->dim[1], H = dx->dim[2], W = dx->dim[3];
    int h = dy->dim[2], w = dy->dim[3];
#pragma omp parallel for schedule(static) if ((size_t)planes * h * w > PAR_MIN)
    for (int pl = 0; pl < planes; pl++)
        for (int i = 0; i < h; i++) {
            const float *src = dy->data + ((size_t)pl * h + i) * w;
            float       *dst = dx->data + ((size_t)pl * H + i + oh) * W + ow;
            for (int j = 0; j < w; j++) dst[j] += src[j];
        }
    return MD_OK;
}

/* ---- classifier, loss --------------------------------------------------------------- */

md_status md_cpu_linear_forward(md_backend *be, const md_tensor *x, const md_tensor *w,
                                const md_tensor *b, const md_tensor *y) {
    (void)be;
    int N = x->dim[0], in = x->dim[1], out = w->dim[0];
    DNNL_TRY(dnnl_sgemm('N', 'T', N, out, in, 1.0f, x->data, in, w->data, in, 0.0f, y->data, out));
    if (b)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < out; o++) y->data[(size_t)n * out + o] += b->data[o];
    return MD_OK;
}

md_status md_cpu_linear_backward(md_backend *be, const md_tensor *x, const md_tensor *w,
                                 const md_tensor *dy, const md_tensor *dx, const md_tensor *dw,
                                 const md_tensor *db) {
    (void)be;
    int N = x->dim[0], in = x->dim[1], out = w->dim[0];
    if (dx)
        DNNL_TRY(dnnl_sgemm('N', 'N', N, in, out, 1.0f, dy->data, out, w->data, in, 1.0f, dx->data,
                            in));
    if (dw)
        DNNL_TRY(dnnl_sgemm('T', 'N', out, in, N, 1.0f, dy->data, out, x->data, in, 1.0f, dw->data,
                            in));
    if (db)
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += dy->data[(size_t)n * out + o];
            db->data[o] += (float)s;
        }
    return MD_OK;
}

md_status md_cpu_dropout_forward(md_backend *be, float p, md_rng *rng, const md_tensor *x,
                                 const md_tensor *mask, const md_tensor *y) {
    (void)be;
    size_t n = md_tensor_numel(x);
    float  keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) mask->data[i] = md_rng_uniform(rng) < p ? 0.0f : keep;
    for (size_t i = 0; i < n; i++) y->data[i] = x->data[i] * mask->data[i];
    return MD_OK;
}

static md_status check_labels(const char *op, const int32_t *labels, int N, int K) {
    for (int n = 0; n < N; n++)
        if (labels[n] < 0 || labels[n] >= K)
            return md_fail(MD_ERR_ARG, "%s: label %d of row %d is outside [0, %d)", op, labels[n],
                           n, K);
    return MD_OK;
}

md_status md_cpu_softmax_ce(md_backend *be, const md_tensor *logits, const int32_t *labels,
                            float *loss, const md_tensor *dlogits) {
    (void)be;
    int N = logits->dim[0], K = logits->dim[1];
    MD_TRY(check_labels("softmax_cross_entropy", labels, N, K));
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *z = logits->data + (size_t)n * K;
        float        zmax = z[0];
        for (int k = 1; k < K; k++) zmax = z[k] > zmax ? z[k] : zmax;
        double se = 0.0;
        for (int k = 0; k < K; k++) se += exp((double)z[k] - zmax);
        double lse = zmax + log(se);
        total += lse - z[labels[n]];
        if (!dlogits) continue;
        float *d = dlogits->data + (size_t)n * K;
        for (int k = 0; k < K; k++)
            d[k] += (float)((exp((double)z[k] - lse) - (k == labels[n] ? 1.0 : 0.0)) / N);
    }
    *loss = (float)(total / N);
    return MD_OK;
}

md_status md_cpu_top1_correct(md_backend *be, const md_tensor *logits, const int32_t *labels,
                              int *correct) {
    (void)be;
    int N = logits->dim[0], K = logits->dim[1], c = 0;
    MD_TRY(check_labels("top1_correct", labels, N, K));
    for (int n = 0; n < N; n++) {
        const float *z = logits->data + (size_t)n * K;
        int          best = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > z[best]) best = k;
        c += best == labels[n];
    }
    *correct = c;
    return MD_OK;
}

/* ---- optimiser primitives -------------------------------------------------------------- */

md_status md_cpu_sgd_update(md_backend *be, float *w, const float *g, float *v, size_t n, float lr,
                            float momentum, float weight_decay) {
    (void)be;
    if (momentum == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) w[i] -= lr * (g[i] + weight_decay * w[i]);
        return MD_OK;
    }
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] + (g[i] + weight_decay * w[i]);
        w[i] -= lr * v[i];
    }
    return MD_OK;
}

md_status md_cpu_sumsq(md_backend *be, const float *x, size_t n, double *out) {
    (void)be;
    double s = 0.0;
#pragma omp parallel for simd reduction(+ : s) schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    *out += s;
    return MD_OK;
}

md_status md_cpu_scale(md_backend *be, float *x, size_t n, float factor) {
    (void)be;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= factor;
    return MD_OK;
}
