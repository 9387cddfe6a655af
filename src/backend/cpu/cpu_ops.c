/* The CPU backend's ops that are memory-bound loops: OpenMP over channels or
 * images, double accumulation for reductions. Shapes were checked by backend.c. */
#include <float.h>
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"

#define PAR_MIN 16384 /* below this many elements a parallel region costs more than it saves */

/* ---- batch norm ---------------------------------------------------------- */

/* Per channel c of x [N,C,H,W]: sum and sum of squared deviation from `mean`.
 * Each plane is summed in float by a vectorised reduction, planes in double. */
static void channel_sums(const md_tensor *x, int c, double mean, double *sum, double *sq) {
    int    n = x->dim[0], C = x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
    double s = 0.0, q = 0.0;
    float  m = (float)mean;
    for (int i = 0; i < n; i++) {
        const float *p = x->data + ((size_t)i * C + c) * hw;
        float        ps = 0.0f, pq = 0.0f;
#pragma omp simd reduction(+ : ps, pq)
        for (size_t j = 0; j < hw; j++) {
            float v = p[j] - m;
            ps += p[j];
            pq += v * v;
        }
        s += ps;
        q += pq;
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
    int     C = x->dim[1];
    double *red = malloc(sizeof(double) * (2 * (size_t)C + 1));
    if (!red) return md_fail(MD_ERR_NOMEM, "batch_norm: %d channels", C);
    /* Two passes (mean, then squared deviations: no cancellation), each
     * reduced over replicas when synced. */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double unused;
        channel_sums(x, c, 0.0, &red[c], &unused);
    }
    red[C] = (double)x->dim[0] * x->dim[2] * x->dim[3];
    md_status st = s->sync ? s->sync->allreduce(s->sync->ctx, red, C + 1) : MD_OK;
    if (st != MD_OK) {
        free(red);
        return st;
    }
    double m = red[C];
    for (int c = 0; c < C; c++) red[C + 1 + c] = red[c] / m; /* means */
    double *mean = red + C + 1;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double unused;
        channel_sums(x, c, mean[c], &unused, &red[c]);
    }
    if (s->sync) st = s->sync->allreduce(s->sync->ctx, red, C);
    if (st != MD_OK) {
        free(red);
        return st;
    }
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double var = red[c] / m;
        double invstd = 1.0 / sqrt(var + s->eps);
        float  g = s->gamma ? s->gamma->data[c] : 1.0f, b = s->beta ? s->beta->data[c] : 0.0f;
        float  a = (float)(invstd * g);
        channel_affine(x, y->data, c, a, (float)(b - mean[c] * invstd * g));
        s->save_mean->data[c] = (float)mean[c];
        s->save_invstd->data[c] = (float)invstd;
        if (s->running_mean) {
            double mo = s->momentum;
            s->running_mean->data[c] =
                (float)((1.0 - mo) * s->running_mean->data[c] + mo * mean[c]);
            s->running_var->data[c] =
                (float)((1.0 - mo) * s->running_var->data[c] + mo * var * m / (m - 1.0));
        }
    }
    free(red);
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

/* sum(dy) and sum(dy * (x - mean)) over channel c (float per plane, double across). */
static void channel_grad_sums(const md_tensor *x, const md_tensor *dy, int c, double mean,
                              double *sdy, double *sdyx) {
    int    n = x->dim[0], C = x->dim[1];
    size_t hw = (size_t)x->dim[2] * x->dim[3];
    double a = 0.0, b = 0.0;
    float  m = (float)mean;
    for (int i = 0; i < n; i++) {
        size_t       o = ((size_t)i * C + c) * hw;
        const float *p = x->data + o, *g = dy->data + o;
        float        pa = 0.0f, pb = 0.0f;
#pragma omp simd reduction(+ : pa, pb)
        for (size_t j = 0; j < hw; j++) {
            pa += g[j];
            pb += g[j] * (p[j] - m);
        }
        a += pa;
        b += pb;
    }
    *sdy = a;
    *sdyx = b;
}

md_status md_cpu_bn_backward_train(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                   const md_tensor *dx, const md_tensor *dgamma,
                                   const md_tensor *dbeta, const md_bn_state *s) {
    (void)be;
    int     n = x->dim[0], C = x->dim[1];
    size_t  hw = (size_t)x->dim[2] * x->dim[3];
    double *red = malloc(sizeof(double) * (2 * (size_t)C + 1));
    if (!red) return md_fail(MD_ERR_NOMEM, "batch_norm backward: %d channels", C);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        channel_grad_sums(x, dy, c, s->save_mean->data[c], &red[c], &red[C + c]);
        /* dgamma, dbeta from this replica's rows: the gradient allreduce sums them. */
        if (dgamma) dgamma->data[c] += (float)(red[C + c] * s->save_invstd->data[c]);
        if (dbeta) dbeta->data[c] += (float)red[c];
    }
    red[2 * C] = (double)n * hw;
    if (s->sync) {
        md_status st = s->sync->allreduce(s->sync->ctx, red, 2 * C + 1);
        if (st != MD_OK) {
            free(red);
            return st;
        }
    }
    double m = red[2 * C];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double mean = s->save_mean->data[c], invstd = s->save_invstd->data[c];
        double sdy = red[c], sdyx = red[C + c];
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
    free(red);
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

md_status md_cpu_row_scale(md_backend *be, const float *x, const float *s, float *y, size_t rows,
                           size_t inner, int accumulate) {
    (void)be;
    size_t n = rows * inner;
    if (inner == 1) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) y[i] = (accumulate ? y[i] : 0.0f) + x[i] * s[i];
        return MD_OK;
    }
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * inner;
        float       *yr = y + r * inner, f = s[r];
        if (accumulate)
            for (size_t i = 0; i < inner; i++) yr[i] += xr[i] * f;
        else
            for (size_t i = 0; i < inner; i++) yr[i] = xr[i] * f;
    }
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

/* 3x3, stride 1, pad 1 (every pool of a normal cell): separable, no window loops.
 * Row pass: r[w] = op(x[w-1], x[w], x[w+1]) within bounds; column pass likewise. */
static int pool_is_3x3s1(const md_pool_desc *p) {
    return p->k == 3 && p->stride == 1 && p->pad == 1;
}

static void row3(const float *x, float *r, int W, int is_max) {
    if (W == 1) {
        r[0] = x[0];
        return;
    }
    if (is_max) {
        r[0] = x[0] > x[1] ? x[0] : x[1];
        for (int w = 1; w < W - 1; w++) {
            float m = x[w - 1] > x[w] ? x[w - 1] : x[w];
            r[w] = m > x[w + 1] ? m : x[w + 1];
        }
        r[W - 1] = x[W - 2] > x[W - 1] ? x[W - 2] : x[W - 1];
    } else {
        r[0] = x[0] + x[1];
        for (int w = 1; w < W - 1; w++) r[w] = x[w - 1] + x[w] + x[w + 1];
        r[W - 1] = x[W - 2] + x[W - 1];
    }
}

/* One plane: y = pool3x3(x) (avg: divided by the in-bounds count). rows: 3 x W scratch. */
static void pool3_plane(const float *x, float *y, int H, int W, int is_max, float *rows) {
    for (int h = 0; h < H; h++) {
        const float *a = h > 0 ? rows + (size_t)((h - 1) % 3) * W : NULL;
        float       *b = rows + (size_t)(h % 3) * W;
        if (h == 0) row3(x, b, W, is_max);
        float *c = h + 1 < H ? rows + (size_t)((h + 1) % 3) * W : NULL;
        if (c) row3(x + (size_t)(h + 1) * W, c, W, is_max);
        float *o = y + (size_t)h * W;
        float  rc = (float)((a ? 1 : 0) + 1 + (c ? 1 : 0));
        for (int w = 0; w < W; w++) {
            float v = b[w];
            if (is_max) {
                if (a && a[w] > v) v = a[w];
                if (c && c[w] > v) v = c[w];
                o[w] = v;
            } else {
                v += (a ? a[w] : 0.0f) + (c ? c[w] : 0.0f);
                float cc = (float)((w > 0) + 1 + (w + 1 < W));
                o[w] = v / (rc * cc);
            }
        }
    }
}

/* Average-pool backward for one plane: dx += boxsum3x3(dy / count). */
static void avgpool3_backward_plane(const float *dy, float *dx, int H, int W, float *g,
                                    float *rows) {
    for (int h = 0; h < H; h++) {
        float rc = (float)((h > 0) + 1 + (h + 1 < H));
        for (int w = 0; w < W; w++)
            g[(size_t)h * W + w] = dy[(size_t)h * W + w] / (rc * (float)((w > 0) + 1 + (w + 1 < W)));
    }
    for (int h = 0; h < H; h++) {
        float *b = rows;
        row3(g + (size_t)h * W, b, W, 0);
        for (int d = -1; d <= 1; d += 2) {
            int hh = h + d;
            if (hh < 0 || hh >= H) continue;
            float *t = rows + W;
            row3(g + (size_t)hh * W, t, W, 0);
            for (int w = 0; w < W; w++) b[w] += t[w];
        }
        float *o = dx + (size_t)h * W;
        for (int w = 0; w < W; w++) o[w] += b[w];
    }
}

/* Max-pool backward, 3x3/s1/p1, routing each gradient to the first maximum of
 * its window in row-major order (PyTorch's rule), without branches: recompute
 * the window maxima y over a -inf padded copy, then visit the 9 taps in order;
 * a tap takes the gradient where it equals y and no earlier tap did. Every pass
 * is a contiguous, vectorisable loop (a branchy argmax mispredicts on nearly
 * every window of real data). scratch: 4 * (H+2) * (W+2) floats. */
static void maxpool3_backward_plane(const float *x, const float *dy, float *dx, int H, int W,
                                    float *scratch) {
    const int wp = W + 2, hp = H + 2;
    float    *xp = scratch, *y = xp + (size_t)hp * wp, *taken = y + (size_t)H * W;
    float    *dxp = taken + (size_t)H * W;
    for (int i = 0; i < hp * wp; i++) xp[i] = -INFINITY;
    for (int h = 0; h < H; h++) memcpy(xp + (size_t)(h + 1) * wp + 1, x + (size_t)h * W, (size_t)W * sizeof(float));
    memset(dxp, 0, (size_t)hp * wp * sizeof(float));
    memset(taken, 0, (size_t)H * W * sizeof(float));
    for (int h = 0; h < H; h++) {
        float *yr = y + (size_t)h * W;
        for (int w = 0; w < W; w++) yr[w] = -INFINITY;
        for (int t = 0; t < 9; t++) {
            const float *src = xp + (size_t)(h + t / 3) * wp + t % 3;
#pragma omp simd
            for (int w = 0; w < W; w++) yr[w] = src[w] > yr[w] ? src[w] : yr[w];
        }
    }
    for (int t = 0; t < 9; t++)
        for (int h = 0; h < H; h++) {
            const float *src = xp + (size_t)(h + t / 3) * wp + t % 3;
            const float *yr = y + (size_t)h * W, *g = dy + (size_t)h * W;
            float       *tk = taken + (size_t)h * W, *d = dxp + (size_t)(h + t / 3) * wp + t % 3;
#pragma omp simd
            for (int w = 0; w < W; w++) {
                float hit = (float)((src[w] == yr[w]) & (tk[w] == 0.0f)); /* no && : no branch */
                d[w] += hit * g[w];
                tk[w] += hit;
            }
        }
    for (int h = 0; h < H; h++) {
        const float *src = dxp + (size_t)(h + 1) * wp + 1;
        float       *d = dx + (size_t)h * W;
#pragma omp simd
        for (int w = 0; w < W; w++) d[w] += src[w];
    }
}

md_status md_cpu_pool_forward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                              const md_tensor *y) {
    (void)be;
    int planes = x->dim[0] * x->dim[1], H = x->dim[2], W = x->dim[3];
    int OH = y->dim[2], OW = y->dim[3];
    if (pool_is_3x3s1(p)) {
        float *scratch = NULL;
        int    nthr = omp_get_max_threads();
        MD_TRY(md_cpu_scratch(be, (size_t)nthr * 3 * W, &scratch));
#pragma omp parallel for schedule(static)
        for (int pl = 0; pl < planes; pl++)
            pool3_plane(x->data + (size_t)pl * H * W, y->data + (size_t)pl * H * W, H, W,
                        p->kind == MD_POOL_MAX, scratch + (size_t)omp_get_thread_num() * 3 * W);
        return MD_OK;
    }
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
    if (pool_is_3x3s1(p)) {
        float *scratch = NULL;
        int    nthr = omp_get_max_threads();
        size_t per = 4 * (size_t)(H + 2) * (W + 2);
        MD_TRY(md_cpu_scratch(be, (size_t)nthr * per, &scratch));
#pragma omp parallel for schedule(static)
        for (int pl = 0; pl < planes; pl++) {
            size_t o = (size_t)pl * H * W;
            float *mine = scratch + (size_t)omp_get_thread_num() * per;
            if (p->kind == MD_POOL_MAX)
                maxpool3_backward_plane(x->data + o, dy->data + o, dx->data + o, H, W, mine);
            else
                avgpool3_backward_plane(dy->data + o, dx->data + o, H, W, mine, mine + (size_t)H * W);
        }
        return MD_OK;
    }
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
                            float momentum, float weight_decay, int nesterov, const double *guard) {
    (void)be;
    if (guard && !isfinite(*guard)) return MD_OK;
    if (momentum == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) w[i] -= lr * (g[i] + weight_decay * w[i]);
        return MD_OK;
    }
    if (nesterov) {
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
        for (size_t i = 0; i < n; i++) {
            float d = g[i] + weight_decay * w[i];
            v[i] = momentum * v[i] + d;
            w[i] -= lr * (d + momentum * v[i]);
        }
        return MD_OK;
    }
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        v[i] = momentum * v[i] + (g[i] + weight_decay * w[i]);
        w[i] -= lr * v[i];
    }
    return MD_OK;
}

/* Sums of fixed blocks added in block order: the same bits for any thread count
 * (so replicas with different threads agree on the clip coefficient). */
#define SUMSQ_BLOCK 8192
md_status md_cpu_sumsq(md_backend *be, const float *x, size_t n, double *out) {
    (void)be;
    size_t  nb = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    double  stack[64], *part = nb <= 64 ? stack : malloc(nb * sizeof *part);
    if (!part) return md_fail(MD_ERR_NOMEM, "sumsq: %zu partial sums", nb);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * SUMSQ_BLOCK, hi = lo + SUMSQ_BLOCK < n ? lo + SUMSQ_BLOCK : n;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
        part[b] = s;
    }
    for (size_t b = 0; b < nb; b++) *out += part[b];
    if (part != stack) free(part);
    return MD_OK;
}

md_status md_cpu_scale(md_backend *be, float *x, size_t n, float factor) {
    (void)be;
#pragma omp parallel for simd schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= factor;
    return MD_OK;
}

/* ---- the device-side step ops: on the CPU, backend memory is host memory ------------------ */

/* Label smoothing on top of the plain loss: the smoothed loss is
 * CE + eps * mean_n(z[y] - mean_k z), its gradient the plain one plus
 * eps * (onehot - 1/K) / N. */
static void smooth(const md_tensor *logits, const int32_t *labels, float eps, float *loss,
                   const md_tensor *dlogits) {
    int    N = logits->dim[0], K = logits->dim[1];
    double extra = 0.0;
    for (int n = 0; n < N; n++) {
        const float *z = logits->data + (size_t)n * K;
        double       mean = 0.0;
        for (int k = 0; k < K; k++) mean += z[k];
        extra += z[labels[n]] - mean / K;
        if (!dlogits) continue;
        float *d = dlogits->data + (size_t)n * K;
        for (int k = 0; k < K; k++)
            d[k] += (float)(eps * ((k == labels[n] ? 1.0 : 0.0) - 1.0 / K) / N);
    }
    *loss = (float)(*loss + eps * extra / N);
}

md_status md_cpu_loss_dev(md_backend *be, const md_tensor *logits, const int32_t *labels,
                          float smoothing, float *out, const md_tensor *dlogits) {
    int correct = 0;
    MD_TRY(md_cpu_softmax_ce(be, logits, labels, &out[0], dlogits));
    MD_TRY(md_cpu_top1_correct(be, logits, labels, &correct));
    if (smoothing > 0.0f) smooth(logits, labels, smoothing, &out[0], dlogits);
    out[1] = (float)correct;
    return MD_OK;
}

md_status md_cpu_sumsq_dev(md_backend *be, const float *x, size_t n, double *acc) {
    return md_cpu_sumsq(be, x, n, acc);
}

md_status md_cpu_clip_scale_dev(md_backend *be, float *x, size_t n, const double *acc,
                                float max_norm) {
    double coef = max_norm / (sqrt(*acc) + 1e-6);
    return coef < 1.0 ? md_cpu_scale(be, x, n, (float)coef) : MD_OK;
}
