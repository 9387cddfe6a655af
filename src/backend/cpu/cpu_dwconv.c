/* Depthwise convolution (groups = C_in = C_out) directly on NCHW planes.
 *
 * oneDNN 2.6 on AVX2 has no JIT kernel for the backward-weights pass of 5x5
 * depthwise kernels nor for dilated depthwise backward passes; its fallback
 * (im2col + GEMM) took 9 ms a call where this takes well under 1, and working
 * on plain NCHW drops the layout reorders around every call.
 *
 * Each plane is first copied into a zero-padded buffer (per thread), so the
 * loops carry no bounds checks: an output row is computed in one sweep over
 * its columns, all K*K taps accumulated in registers (the column loop is the
 * vector loop). Stride-1 backward-data is the same sweep with the kernel
 * flipped over the padded output gradient; strided backward-data scatters. */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_dwconv.h"

#include <omp.h>

/* Copy plane src (h x w) into dst ((h+2p) x (w+2p)) with a zero border of p. */
static void pad_plane(const float *src, int h, int w, int p, float *dst) {
    int wp = w + 2 * p;
    memset(dst, 0, (size_t)p * wp * sizeof(float));
    memset(dst + (size_t)(h + p) * wp, 0, (size_t)p * wp * sizeof(float));
    for (int i = 0; i < h; i++) {
        float *row = dst + (size_t)(i + p) * wp;
        memset(row, 0, (size_t)p * sizeof(float));
        memcpy(row + p, src + (size_t)i * w, (size_t)w * sizeof(float));
        memset(row + p + w, 0, (size_t)p * sizeof(float));
    }
}

/* out[oh][ow] (+)= sum_{ki,kj} k[ki][kj] * in[oh*s + ki*dl][ow*s + kj*dl]; in is padded,
 * width wp. With K a compile-time constant (3, 5: every DARTS kernel) the tap loops
 * unroll completely and the column loop, now innermost, vectorises with all taps
 * accumulated in registers (7: the mobile space's MBConv 7x7). Other K: tap by tap
 * over the row (which stays in L1). */
static inline void sweep_const(const float *in, int wp, const float *k, const int K, int s,
                               int dl, float *out, int OH, int OW, int accumulate) {
    for (int oh = 0; oh < OH; oh++) {
        float       *o = out + (size_t)oh * OW;
        const float *base = in + (size_t)oh * s * wp;
        if (s == 1) {
#pragma omp simd
            for (int ow = 0; ow < OW; ow++) {
                float acc = accumulate ? o[ow] : 0.0f;
                for (int ki = 0; ki < K; ki++)
                    for (int kj = 0; kj < K; kj++)
                        acc += k[ki * K + kj] * base[(size_t)ki * dl * wp + ow + kj * dl];
                o[ow] = acc;
            }
        } else {
            for (int ow = 0; ow < OW; ow++) {
                float acc = accumulate ? o[ow] : 0.0f;
                for (int ki = 0; ki < K; ki++)
                    for (int kj = 0; kj < K; kj++)
                        acc += k[ki * K + kj] * base[(size_t)ki * dl * wp + ow * s + kj * dl];
                o[ow] = acc;
            }
        }
    }
}

/* K = 7: 49 taps and their weights do not fit the vector registers at once
 * (they spill and run slower than the generic loop), so the output row takes one
 * pass per kernel row, each with its 7 taps unrolled. */
static void sweep_rows7(const float *in, int wp, const float *k, int s, int dl, float *out,
                        int OH, int OW, int accumulate) {
    for (int oh = 0; oh < OH; oh++) {
        float *o = out + (size_t)oh * OW;
        if (!accumulate) memset(o, 0, (size_t)OW * sizeof(float));
        for (int ki = 0; ki < 7; ki++) {
            const float *r = in + (size_t)(oh * s + ki * dl) * wp;
            const float *kr = k + ki * 7;
            if (s == 1) {
#pragma omp simd
                for (int ow = 0; ow < OW; ow++) {
                    float acc = o[ow];
                    for (int kj = 0; kj < 7; kj++) acc += kr[kj] * r[ow + kj * dl];
                    o[ow] = acc;
                }
            } else {
                for (int ow = 0; ow < OW; ow++) {
                    float acc = o[ow];
                    for (int kj = 0; kj < 7; kj++) acc += kr[kj] * r[ow * s + kj * dl];
                    o[ow] = acc;
                }
            }
        }
    }
}

static void sweep(const float *in, int wp, const float *k, int K, int s, int dl, float *out,
                  int OH, int OW, int accumulate) {
    if (K == 3) {
        sweep_const(in, wp, k, 3, s, dl, out, OH, OW, accumulate);
        return;
    }
    if (K == 5) {
        sweep_const(in, wp, k, 5, s, dl, out, OH, OW, accumulate);
        return;
    }
    if (K == 7) { /* MBConv 7x7 (the mobile space) */
        sweep_rows7(in, wp, k, s, dl, out, OH, OW, accumulate);
        return;
    }
    for (int oh = 0; oh < OH; oh++) {
        float       *o = out + (size_t)oh * OW;
        const float *base = in + (size_t)oh * s * wp;
        if (!accumulate) memset(o, 0, (size_t)OW * sizeof(float));
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const float  wv = k[ki * K + kj];
                const float *src = base + (size_t)ki * dl * wp + kj * dl;
                if (s == 1) {
#pragma omp simd
                    for (int ow = 0; ow < OW; ow++) o[ow] += wv * src[ow];
                } else {
                    for (int ow = 0; ow < OW; ow++) o[ow] += wv * src[ow * s];
                }
            }
    }
}

size_t md_dwconv_scratch_floats(const md_dwconv *d) {
    size_t span = (size_t)(d->k - 1) * d->dilation;
    size_t fwd = (size_t)(d->h + 2 * d->pad) * (d->w + 2 * d->pad);
    size_t bwd = (d->h + span) * (d->w + span);
    return (fwd > bwd ? fwd : bwd) * (size_t)omp_get_max_threads();
}

/* Thread t's plane of the scratch. */
static float *plane_of(float *scratch, const md_dwconv *d) {
    return scratch + (size_t)omp_get_thread_num() * (md_dwconv_scratch_floats(d) /
                                                      (size_t)omp_get_max_threads());
}

void md_dwconv_forward(const md_dwconv *d, const float *x, const float *w, float *y,
                       float *scratch) {
    const int p = d->pad, wp = d->w + 2 * p, planes = d->n * d->c;
#pragma omp parallel
    {
        float *buf = plane_of(scratch, d);
#pragma omp for schedule(static)
        for (int pl = 0; pl < planes; pl++) {
            pad_plane(x + (size_t)pl * d->h * d->w, d->h, d->w, p, buf);
            sweep(buf, wp, w + (size_t)(pl % d->c) * d->k * d->k, d->k, d->stride, d->dilation,
                  y + (size_t)pl * d->oh * d->ow, d->oh, d->ow, 0);
        }
    }
}

/* Strided backward data: scatter each output gradient over its window. */
static void scatter_plane(const md_dwconv *d, const float *gp, const float *wp, float *dp) {
    const int K = d->k, s = d->stride, p = d->pad, dl = d->dilation;
    for (int oh = 0; oh < d->oh; oh++)
        for (int ow = 0; ow < d->ow; ow++) {
            float g = gp[(size_t)oh * d->ow + ow];
            for (int ki = 0; ki < K; ki++) {
                int ih = oh * s - p + ki * dl;
                if (ih < 0 || ih >= d->h) continue;
                for (int kj = 0; kj < K; kj++) {
                    int iw = ow * s - p + kj * dl;
                    if (iw >= 0 && iw < d->w) dp[(size_t)ih * d->w + iw] += wp[ki * K + kj] * g;
                }
            }
        }
}

/* dst ((H + (K-1)*dl) x (W + (K-1)*dl)), zeroed, with dy[oh][ow] placed at
 * (q + oh*s, q + ow*s): the output gradient with zeros inserted between strided
 * positions and padded by q = (K-1)*dl - pad, so that dx is a stride-1 sweep of
 * it with the flipped kernel, for any stride. */
static void spread_plane(const float *dy, const md_dwconv *d, int q, float *dst, int hp, int wp) {
    memset(dst, 0, (size_t)hp * wp * sizeof(float));
    for (int oh = 0; oh < d->oh; oh++) {
        float       *row = dst + (size_t)(q + oh * d->stride) * wp + q;
        const float *g = dy + (size_t)oh * d->ow;
        if (d->stride == 1)
            memcpy(row, g, (size_t)d->ow * sizeof(float));
        else
            for (int ow = 0; ow < d->ow; ow++) row[ow * d->stride] = g[ow];
    }
}

void md_dwconv_backward_data(const md_dwconv *d, const float *dy, const float *w, float *dx,
                             float *scratch) {
    const int K = d->k, dl = d->dilation, planes = d->n * d->c;
    const int q = (K - 1) * dl - d->pad, span = (K - 1) * dl;
    const int hp = d->h + span, wp = d->w + span;
    /* The spread array must hold the last strided position: q + (OH-1)*s < hp. */
    const int sweepable = q >= 0 && q + (d->oh - 1) * d->stride < hp && q + (d->ow - 1) * d->stride < wp;
#pragma omp parallel
    {
        float *buf = sweepable ? plane_of(scratch, d) : NULL;
        float  flip[121];
#pragma omp for schedule(static)
        for (int pl = 0; pl < planes; pl++) {
            const float *gp = dy + (size_t)pl * d->oh * d->ow;
            const float *kp = w + (size_t)(pl % d->c) * K * K;
            float       *dp = dx + (size_t)pl * d->h * d->w;
            if (!buf) {
                scatter_plane(d, gp, kp, dp);
                continue;
            }
            for (int i = 0; i < K * K; i++) flip[i] = kp[K * K - 1 - i];
            spread_plane(gp, d, q, buf, hp, wp);
            sweep(buf, wp, flip, K, 1, dl, dp, d->h, d->w, 1);
        }
    }
}

/* dw[ki][kj] += sum_{oh,ow} g[oh][ow] * in[oh*s + ki*dl][ow*s + kj*dl] over one padded
 * plane. For each kernel row ki, K accumulators of VW lanes run over every output
 * column block of every row and are summed once at the end: no horizontal reduction
 * per row (what dominated: an output row is only 8 to 64 wide). The columns
 * past the last whole block of VW go through a scalar loop into the same lanes. */
enum { VW = 16 };
static inline void wgrad_const(const float *in, int wp, const float *g, int OH, int OW,
                               const int K, int s, int dl, double *acc) {
    for (int ki = 0; ki < K; ki++) {
        float a[11][VW];
        for (int kj = 0; kj < K; kj++)
            for (int v = 0; v < VW; v++) a[kj][v] = 0.0f;
        for (int oh = 0; oh < OH; oh++) {
            const float *gr = g + (size_t)oh * OW;
            const float *row = in + (size_t)(oh * s + ki * dl) * wp;
            int          ow0 = 0;
            for (; ow0 + VW <= OW; ow0 += VW)
                for (int kj = 0; kj < K; kj++) {
                    const float *r = row + (size_t)ow0 * s + kj * dl;
#pragma omp simd
                    for (int v = 0; v < VW; v++) a[kj][v] += gr[ow0 + v] * r[v * s];
                }
            for (int ow = ow0; ow < OW; ow++)
                for (int kj = 0; kj < K; kj++) a[kj][ow - ow0] += gr[ow] * row[ow * s + kj * dl];
        }
        for (int kj = 0; kj < K; kj++) {
            float t = 0.0f;
            for (int v = 0; v < VW; v++) t += a[kj][v];
            acc[ki * K + kj] += t;
        }
    }
}

static void wgrad(const float *in, int wp, const float *g, int OH, int OW, int K, int s, int dl,
                  double *acc) {
    if (K == 3) wgrad_const(in, wp, g, OH, OW, 3, s, dl, acc);
    else if (K == 5) wgrad_const(in, wp, g, OH, OW, 5, s, dl, acc);
    else if (K == 7) wgrad_const(in, wp, g, OH, OW, 7, s, dl, acc);
    else wgrad_const(in, wp, g, OH, OW, K, s, dl, acc);
}

void md_dwconv_backward_weights(const md_dwconv *d, const float *x, const float *dy, float *dw,
                                float *scratch) {
    const int K = d->k, s = d->stride, dl = d->dilation, p = d->pad, C = d->c;
    const int wp = d->w + 2 * p, OH = d->oh, OW = d->ow;
#pragma omp parallel
    {
        float *buf = plane_of(scratch, d);
#pragma omp for schedule(static)
        for (int c = 0; c < C; c++) {
            double acc[121] = {0};
            for (int n = 0; n < d->n; n++) {
                pad_plane(x + ((size_t)n * C + c) * d->h * d->w, d->h, d->w, p, buf);
                wgrad(buf, wp, dy + ((size_t)n * C + c) * OH * OW, OH, OW, K, s, dl, acc);
            }
            float *wq = dw + (size_t)c * K * K;
            for (int i = 0; i < K * K; i++) wq[i] += (float)acc[i];
        }
    }
}
