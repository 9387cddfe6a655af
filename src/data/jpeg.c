/* JPEG region decode, the PIL-style bilinear resize and the crop policy (see jpeg.h).
 *
 * Coordinates: a pixel k covers [k, k+1), its centre is k + 0.5. Decoding at
 * DCT scale M/8 turns every 8x8 block into an MxM one whose samples sit at the
 * centres of M equal parts of the block, so a source coordinate s lands at
 * s*M/8 in the scaled image. The resize is defined on the crop box in source
 * coordinates and evaluated on the scaled pixels that overlap the box; at M = 8
 * it is exactly PIL's resize of the cropped image. */
#include "data/jpeg.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#if defined(__SSE4_1__) || defined(__AVX__)
#include <immintrin.h>
#endif

/* PIL's fixed point for 8-bit images: coefficients carry 22 fractional bits, so
 * a sum of 255 * 2^22 stays inside an int32. */
#define RESAMPLE_BITS 22
/* Decoded columns and rows kept on each side of the box: jpeg_crop_scanline's
 * left and right edges (and the first rows after a skip) see the chroma
 * upsampler treat them as an image edge, which changes the outermost pixel. */
#define CROP_MARGIN 2
/* A larger image is refused rather than decoded (libjpeg's own limit is 65500). */
#define MAX_SIDE 65500
/* What an error calls an image whose caller gave no name. */
#define UNNAMED "(unnamed image)"

/* ---------------- crop policy ---------------- */

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Python's round(): halves go to the even neighbour (rint in the default mode). */
static int round_half_even(double v) {
    v = nearbyint(v);
    return v >= 0.0 && v <= 2147483647.0 ? (int)v : -1; /* NaN, nonsense: no crop takes -1 */
}

static int uniform_int(md_rng *r, int lo, int hi_inclusive) {
    uint32_t span = (uint32_t)(hi_inclusive - lo) + 1u;
    uint32_t reject_below = (uint32_t)(-span) % span; /* no modulo bias */
    for (;;) {
        uint32_t u = md_rng_u32(r);
        if (u >= reject_below) return lo + (int)(u % span);
    }
}

md_crop md_rrc_crop(int w, int h, const md_rrc_params *p, md_rng *r) {
    static const md_rrc_params defaults = MD_RRC_DEFAULT;
    md_crop                    c = {0, 0, w, h};
    if (!p) p = &defaults;
    if (w <= 0 || h <= 0) return c;
    double area = (double)w * h;
    double log_lo = log(p->ratio_lo), log_hi = log(p->ratio_hi);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target =
            area * (p->scale_lo + (p->scale_hi - p->scale_lo) * md_rng_uniform_double(r));
        double ratio = exp(log_lo + (log_hi - log_lo) * md_rng_uniform_double(r));
        int    cw = round_half_even(sqrt(target * ratio));
        int    ch = round_half_even(sqrt(target / ratio));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            c.y = uniform_int(r, 0, h - ch);
            c.x = uniform_int(r, 0, w - cw);
            c.w = cw, c.h = ch;
            return c;
        }
    }
    /* torchvision's fallback: the centre crop of the ratio nearest the image's. */
    double in_ratio = (double)w / h;
    double rmin = fmin(p->ratio_lo, p->ratio_hi), rmax = fmax(p->ratio_lo, p->ratio_hi);
    if (in_ratio < rmin) {
        c.w = w, c.h = clampi(round_half_even(w / rmin), 1, h);
    } else if (in_ratio > rmax) {
        c.h = h, c.w = clampi(round_half_even(h * rmax), 1, w);
    }
    c.y = (h - c.h) / 2;
    c.x = (w - c.w) / 2;
    return c;
}

md_crop md_center_crop(int w, int h, int size) {
    md_crop c;
    c.w = clampi(size, 1, w > 0 ? w : 1);
    c.h = clampi(size, 1, h > 0 ? h : 1);
    /* torchvision's center_crop: int(round((H - size) / 2)). */
    c.x = round_half_even((w - c.w) / 2.0);
    c.y = round_half_even((h - c.h) / 2.0);
    return c;
}

/* ---------------- resampling ---------------- */

/* One direction of the resize: output i reads in[start[i] .. start[i]+count[i])
 * with weights coef[i*stride ..]. */
typedef struct {
    int     *start, *count;
    int32_t *coef;
    int      stride;
} taps;

static double triangle(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Grow *buf to hold `bytes`; MD_ERR_NOMEM when it cannot. */
static md_status grow(void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return MD_OK;
    size_t want = bytes + bytes / 2;
    void  *p = realloc(*buf, want);
    if (!p) return md_fail(MD_ERR_NOMEM, "JPEG decoder: no memory for %zu bytes of scratch", want);
    *buf = p, *cap = want;
    return MD_OK;
}

/* Scratch that md_resize_rgb and the decoder share. */
typedef struct {
    void  *tap_mem;
    size_t tap_cap;
    void  *tmp; /* horizontally resampled rows */
    size_t tmp_cap;
} resample_scratch;

/* The taps of resizing [lo, hi) of an axis of `in_size` samples to out_size:
 * PIL's triangle filter, support max(scale, 1), window clamped to the input. */
static void make_taps(double lo, double hi, int in_size, int out_size, taps *t) {
    double scale = (hi - lo) / out_size;
    double filterscale = scale > 1.0 ? scale : 1.0;
    double support = filterscale; /* the triangle's support is 1 */
    for (int i = 0; i < out_size; i++) {
        double   centre = lo + (i + 0.5) * scale;
        int      first = (int)(centre - support + 0.5);
        int      last = (int)(centre + support + 0.5);
        double   w[t->stride];
        double   total = 0.0;
        int32_t *k = t->coef + (size_t)i * t->stride;
        if (first < 0) first = 0;
        if (last > in_size) last = in_size;
        if (last <= first) { /* cannot happen for a box inside the input; stay defined */
            first = clampi((int)centre, 0, in_size - 1), last = first + 1;
        }
        int n = last - first;
        if (n > t->stride) n = t->stride;
        for (int j = 0; j < n; j++) {
            w[j] = triangle((first + j + 0.5 - centre) / filterscale);
            total += w[j];
        }
        for (int j = 0; j < n; j++) {
            double v = total > 0.0 ? w[j] / total : (j == 0);
            k[j] = (int32_t)(v * (1 << RESAMPLE_BITS) + (v < 0 ? -0.5 : 0.5));
        }
        t->start[i] = first, t->count[i] = n;
    }
    /* Widen every window to the longest one, inside the input: the added taps
     * lie outside the support and weigh 0, so the sums do not change, and every
     * output reads the same number of pixels (what the vector paths want). */
    int width = 0;
    for (int i = 0; i < out_size; i++)
        width = t->count[i] > width ? t->count[i] : width;
    for (int i = 0; i < out_size; i++) {
        int      first = t->start[i], n = t->count[i];
        int32_t *k = t->coef + (size_t)i * t->stride;
        if (n == width) continue;
        int wide = first < in_size - width ? first : in_size - width;
        memmove(k + (first - wide), k, (size_t)n * sizeof *k);
        for (int j = 0; j < first - wide; j++)
            k[j] = 0;
        for (int j = first - wide + n; j < width; j++)
            k[j] = 0;
        t->start[i] = wide, t->count[i] = width;
    }
}

static int tap_stride(double lo, double hi, int out_size) {
    double scale = (hi - lo) / out_size;
    return (int)ceil(scale > 1.0 ? scale : 1.0) * 2 + 1;
}

static inline uint8_t clip8(int32_t v) {
    v >>= RESAMPLE_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Outputs summed together in one vector by the horizontal pass: 4 pixels x 4
 * lanes with AVX-512, 2 x 4 with AVX2 (1: the per-pixel path only). */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX2__)
#define GROUP 4
#elif defined(__AVX2__)
#define GROUP 2
#else
#define GROUP 1
#endif

/* The horizontal pass of one resize, laid out in output order (mirroring
 * applied): output o reads `width` pixels from byte off[o] with the weights at
 * coef + src[o]*stride; group_coef holds each group of GROUP outputs' weights,
 * each broadcast to its pixel's 4 lanes. */
typedef struct {
    const taps *t;
    int         out_w;
    int        *off, *src;
    int32_t    *group_coef; /* (out_w / GROUP) x width x 4*GROUP */
    int         width;      /* taps of every output (make_taps makes them equal) */
    size_t      max_read;   /* bytes from `in` the vector paths may touch */
} row_plan;

static size_t row_plan_ints(int out_w, int stride) {
    return 2 * (size_t)out_w + (size_t)(out_w / GROUP) * stride * 4 * GROUP;
}

static void make_row_plan(const taps *t, int out_w, int mirror, int32_t *mem, row_plan *rp) {
    rp->t = t, rp->out_w = out_w;
    rp->off = mem, rp->src = mem + out_w;
    rp->group_coef = mem + 2 * out_w;
    for (int o = 0; o < out_w; o++) {
        int i = mirror ? out_w - 1 - o : o;
        rp->src[o] = i, rp->off[o] = t->start[i] * 3;
    }
    rp->width = t->count[0], rp->max_read = 0;
    for (int o = 0; o < out_w; o++) {
        size_t end = (size_t)rp->off[o] + 3 * (size_t)t->count[rp->src[o]] + 1;
        rp->max_read = end > rp->max_read ? end : rp->max_read;
    }
    int lanes = 4 * GROUP;
    for (int m = 0; m < out_w / GROUP; m++)
        for (int j = 0; j < rp->width; j++)
            for (int lane = 0; lane < lanes; lane++) {
                int i = rp->src[GROUP * m + lane / 4];
                rp->group_coef[((size_t)m * rp->width + j) * lanes + lane] =
                    t->coef[(size_t)i * t->stride + j];
            }
}

/* Output o of a row plan, one pixel at a time. With SSE4.1 the three channels
 * (and one byte beyond, weighted but dropped) share one vector, which reads 4
 * bytes per tap; `safe` says those reads stay inside the input. */
static inline void resample_px(const uint8_t *in, const row_plan *rp, int o, int safe, uint8_t *q) {
    const uint8_t *p = in + rp->off[o];
    const int32_t *k = rp->t->coef + (size_t)rp->src[o] * rp->t->stride;
    int            n = rp->t->count[rp->src[o]];
#if defined(__SSE4_1__)
    if (safe) {
        __m128i acc = _mm_set1_epi32(1 << (RESAMPLE_BITS - 1));
        for (int j = 0; j < n; j++) {
            int32_t px;
            memcpy(&px, p + 3 * j, 4);
            __m128i v = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(px));
            acc = _mm_add_epi32(acc, _mm_mullo_epi32(v, _mm_set1_epi32(k[j])));
        }
        acc = _mm_srai_epi32(acc, RESAMPLE_BITS);
        acc = _mm_packus_epi16(_mm_packs_epi32(acc, acc), acc); /* clamps to 0..255 */
        int32_t rgbx = _mm_cvtsi128_si32(acc);
        memcpy(q, &rgbx, 3);
        return;
    }
#else
    (void)safe;
#endif
    int32_t r = 1 << (RESAMPLE_BITS - 1), g = r, b = r;
    for (int j = 0; j < n; j++) {
        r += p[3 * j] * k[j];
        g += p[3 * j + 1] * k[j];
        b += p[3 * j + 2] * k[j];
    }
    q[0] = clip8(r), q[1] = clip8(g), q[2] = clip8(b);
}

/* One RGB row resampled horizontally into out (out_w pixels, and one byte
 * after them may be overwritten). `in_bytes` is how many bytes may be read from `in`. The sums are
 * PIL's, in the same int32 arithmetic, so every path gives the same bytes. */
static void resample_row(const uint8_t *in, size_t in_bytes, const row_plan *rp, uint8_t *out) {
    const taps *t = rp->t;
    int         o = 0;
    /* All windows have `width` taps; a row whose last reads would pass the end
     * of the input (a caller's last row) takes the per-pixel path. */
#if GROUP == 4
    const __m512i half = _mm512_set1_epi32(1 << (RESAMPLE_BITS - 1));
    const __m128i rgb_only = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    for (; rp->max_read <= in_bytes && o + 3 < rp->out_w; o += 4) {
        const uint8_t *p0 = in + rp->off[o], *p1 = in + rp->off[o + 1];
        const uint8_t *p2 = in + rp->off[o + 2], *p3 = in + rp->off[o + 3];
        const int32_t *k = rp->group_coef + (size_t)(o / 4) * rp->width * 16;
        __m512i        acc = half;
        for (int j = 0; j < rp->width; j++) {
            int32_t a, b, c, d;
            memcpy(&a, p0 + 3 * j, 4), memcpy(&b, p1 + 3 * j, 4);
            memcpy(&c, p2 + 3 * j, 4), memcpy(&d, p3 + 3 * j, 4);
            __m512i v = _mm512_cvtepu8_epi32(_mm_setr_epi32(a, b, c, d));
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(v, _mm512_loadu_si512(k + 16 * j)));
        }
        acc = _mm512_max_epi32(_mm512_srai_epi32(acc, RESAMPLE_BITS), _mm512_setzero_si512());
        __m128i px = _mm_shuffle_epi8(_mm512_cvtusepi32_epi8(acc), rgb_only);
        memcpy(out + (size_t)o * 3, &px, 12);
    }
#elif GROUP == 2
    const __m256i half = _mm256_set1_epi32(1 << (RESAMPLE_BITS - 1));
    for (; rp->max_read <= in_bytes && o + 1 < rp->out_w; o += 2) {
        const uint8_t *p0 = in + rp->off[o], *p1 = in + rp->off[o + 1];
        const int32_t *k = rp->group_coef + (size_t)(o / 2) * rp->width * 8;
        __m256i        acc = half;
        for (int j = 0; j < rp->width; j++) {
            uint32_t a, b;
            memcpy(&a, p0 + 3 * j, 4);
            memcpy(&b, p1 + 3 * j, 4);
            __m256i v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)((uint64_t)b << 32 | a)));
            acc = _mm256_add_epi32(
                acc, _mm256_mullo_epi32(v, _mm256_loadu_si256((const void *)(k + 8 * j))));
        }
        acc = _mm256_srai_epi32(acc, RESAMPLE_BITS);
        acc = _mm256_packus_epi16(_mm256_packs_epi32(acc, acc), acc); /* per 128-bit half */
        int32_t x0 = _mm_cvtsi128_si32(_mm256_castsi256_si128(acc));
        int32_t x1 = _mm_cvtsi128_si32(_mm256_extracti128_si256(acc, 1));
        memcpy(out + (size_t)o * 3, &x0, 4);     /* the 4th bytes are overwritten next */
        memcpy(out + (size_t)o * 3 + 3, &x1, 4); /* (out has a byte of slack) */
    }
#endif
    for (; o < rp->out_w; o++) {
        int safe = (size_t)rp->off[o] + 3 * (size_t)t->count[rp->src[o]] + 1 <= in_bytes;
        resample_px(in, rp, o, safe, out + (size_t)o * 3);
    }
}

/* Lay out the x and y tap tables and the row plan's memory (*plan_mem). */
static md_status alloc_taps(resample_scratch *s, int out_w, int sx, int out_h, int sy, taps *tx,
                            taps *ty, int32_t **plan_mem) {
    size_t ints = 2 * (size_t)out_w + 2 * (size_t)out_h;
    size_t coefs = (size_t)out_w * sx + (size_t)out_h * sy;
    MD_TRY(grow(&s->tap_mem, &s->tap_cap,
                (ints + coefs + row_plan_ints(out_w, sx)) * sizeof(int32_t)));
    int32_t *p = s->tap_mem;
    tx->start = (int *)p, tx->count = (int *)p + out_w, tx->stride = sx;
    ty->start = (int *)p + 2 * out_w, ty->count = (int *)p + 2 * out_w + out_h, ty->stride = sy;
    tx->coef = p + ints;
    ty->coef = tx->coef + (size_t)out_w * sx;
    *plan_mem = ty->coef + (size_t)out_h * sy;
    return MD_OK;
}

/* The vertical pass over rows of `row_bytes` bytes, stride row_bytes: each
 * output byte is PIL's int32 sum over its column, 16 columns per vector with
 * AVX-512, 8 with AVX2 (the sums stay in registers across the taps). */
static void resample_columns(const uint8_t *in, size_t row_bytes, const taps *t, int out_h,
                             uint8_t *out) {
    for (int i = 0; i < out_h; i++) {
        const int32_t *k = t->coef + (size_t)i * t->stride;
        const uint8_t *p = in + (size_t)t->start[i] * row_bytes;
        int            n = t->count[i];
        uint8_t       *o = out + (size_t)i * row_bytes;
        size_t         x = 0;
#if GROUP == 4
        for (; x + 16 <= row_bytes; x += 16) {
            __m512i acc = _mm512_set1_epi32(1 << (RESAMPLE_BITS - 1));
            for (int j = 0; j < n; j++) {
                __m128i v16 = _mm_loadu_si128((const void *)(p + (size_t)j * row_bytes + x));
                acc = _mm512_add_epi32(
                    acc, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(v16), _mm512_set1_epi32(k[j])));
            }
            acc = _mm512_max_epi32(_mm512_srai_epi32(acc, RESAMPLE_BITS), _mm512_setzero_si512());
            _mm_storeu_si128((void *)(o + x), _mm512_cvtusepi32_epi8(acc)); /* clamps to 255 */
        }
#endif
#if defined(__AVX2__)
        for (; x + 8 <= row_bytes; x += 8) {
            __m256i acc = _mm256_set1_epi32(1 << (RESAMPLE_BITS - 1));
            for (int j = 0; j < n; j++) {
                __m128i v8 = _mm_loadl_epi64((const void *)(p + (size_t)j * row_bytes + x));
                acc = _mm256_add_epi32(
                    acc, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(v8), _mm256_set1_epi32(k[j])));
            }
            acc = _mm256_srai_epi32(acc, RESAMPLE_BITS);
            __m128i w16 =
                _mm_packs_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
            _mm_storel_epi64((void *)(o + x), _mm_packus_epi16(w16, w16)); /* clamps to 0..255 */
        }
#endif
        for (; x < row_bytes; x++) {
            int32_t acc = 1 << (RESAMPLE_BITS - 1);
            for (int j = 0; j < n; j++)
                acc += p[(size_t)j * row_bytes + x] * k[j];
            o[x] = clip8(acc);
        }
    }
}

static md_status check_out_size(int out_w, int out_h) {
    if (out_w <= 0 || out_h <= 0 || out_w > 8192 || out_h > 8192)
        return md_fail(MD_ERR_ARG, "resize: output size %dx%d is not in 1..8192", out_w, out_h);
    return MD_OK;
}

static md_status check_crop(md_crop c, int w, int h, const char *what) {
    if (c.w <= 0 || c.h <= 0 || c.x < 0 || c.y < 0 || c.x > w - c.w || c.y > h - c.h)
        return md_fail(MD_ERR_ARG, "%s: crop %dx%d at (%d,%d) is not inside the %dx%d image", what,
                       c.w, c.h, c.x, c.y, w, h);
    return MD_OK;
}

md_status md_resize_rgb(const uint8_t *src, int sw, int sh, md_crop c, int out_w, int out_h,
                        int mirror, uint8_t *rgb) {
    MD_TRY(check_out_size(out_w, out_h));
    MD_TRY(check_crop(c, sw, sh, "resize"));
    resample_scratch s = {0};
    taps             tx, ty;
    int              sx = tap_stride(0, c.w, out_w), sy = tap_stride(0, c.h, out_h);
    int32_t         *plan_mem;
    row_plan         rp;
    md_status        st = alloc_taps(&s, out_w, sx, out_h, sy, &tx, &ty, &plan_mem);
    if (st == MD_OK) st = grow(&s.tmp, &s.tmp_cap, (size_t)c.h * out_w * 3 + 1);
    if (st == MD_OK) {
        make_taps(0, c.w, c.w, out_w, &tx);
        make_taps(0, c.h, c.h, out_h, &ty);
        make_row_plan(&tx, out_w, mirror, plan_mem, &rp);
        uint8_t *tmp = s.tmp;
        for (int y = 0; y < c.h; y++)
            resample_row(src + ((size_t)(c.y + y) * sw + c.x) * 3,
                         ((size_t)(sh - c.y - y) * sw - c.x) * 3, &rp, tmp + (size_t)y * out_w * 3);
        resample_columns(tmp, (size_t)out_w * 3, &ty, out_h, rgb);
    }
    free(s.tap_mem);
    free(s.tmp);
    return st;
}

void md_rgb_to_chw_normalized(const uint8_t *rgb, int w, int h, const float mean[3],
                              const float std[3], float *chw) {
    float  lut[3][256];
    size_t plane = (size_t)w * h;
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c]; /* ToTensor, then Normalize */
    size_t i = 0;
#if defined(__AVX512F__)
    /* Sixteen pixels at a time: the three channels pulled out of 48 bytes with
     * byte shuffles, then the same two divisions and a subtraction as the table
     * (IEEE single, so the same bits), and one 64-byte store per channel. */
    {
        __m128i m[3][3];
        for (int c = 0; c < 3; c++)
            for (int s = 0; s < 3; s++) {
                uint8_t idx[16];
                for (int k = 0; k < 16; k++) {
                    int b = 3 * k + c - 16 * s;
                    idx[k] = (uint8_t)(b >= 0 && b < 16 ? b : 0x80);
                }
                m[c][s] = _mm_loadu_si128((const void *)idx);
            }
        const __m512 v255 = _mm512_set1_ps(255.0f);
        for (; i + 16 <= plane; i += 16) {
            const uint8_t *p = rgb + 3 * i;
            __m128i a = _mm_loadu_si128((const void *)p), b = _mm_loadu_si128((const void *)(p + 16)),
                    d = _mm_loadu_si128((const void *)(p + 32));
            for (int c = 0; c < 3; c++) {
                __m128i ch = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(a, m[c][0]),
                                                       _mm_shuffle_epi8(b, m[c][1])),
                                          _mm_shuffle_epi8(d, m[c][2]));
                __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(ch));
                f = _mm512_div_ps(_mm512_sub_ps(_mm512_div_ps(f, v255), _mm512_set1_ps(mean[c])),
                                  _mm512_set1_ps(std[c]));
                _mm512_storeu_ps(chw + c * plane + i, f);
            }
        }
    }
#endif
#if defined(__AVX__)
    /* Eight lookups a store: the scalar loop is bound by its 4-byte stores. */
    for (; i + 8 <= plane; i += 8) {
        const uint8_t *p = rgb + 3 * i;
        for (int c = 0; c < 3; c++) {
            const float *l = lut[c];
            __m256 v = _mm256_setr_ps(l[p[c]], l[p[3 + c]], l[p[6 + c]], l[p[9 + c]], l[p[12 + c]],
                                      l[p[15 + c]], l[p[18 + c]], l[p[21 + c]]);
            _mm256_storeu_ps(chw + c * plane + i, v);
        }
    }
#endif
    for (; i < plane; i++) {
        chw[i] = lut[0][rgb[3 * i]];
        chw[plane + i] = lut[1][rgb[3 * i + 1]];
        chw[2 * plane + i] = lut[2][rgb[3 * i + 2]];
    }
}

/* ---------------- libjpeg glue ---------------- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf               jump;
    char                  msg[JMSG_LENGTH_MAX];
} error_mgr;

/* libjpeg's default error_exit calls exit(): jump back to the guarded call instead. */
static void on_error(j_common_ptr cinfo) {
    error_mgr *e = (error_mgr *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* A warning (corrupt data, premature end) means a damaged image: fail like an error. */
static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) on_error(cinfo);
}

/* A progressive file may hold any number of scans, each a pass over the whole
 * coefficient buffer: a small file with thousands of them takes seconds. Real
 * ones have about ten. */
#define MAX_SCANS 1000

static void on_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number <= MAX_SCANS) return;
    error_mgr *e = (error_mgr *)cinfo->err;
    snprintf(e->msg, sizeof e->msg, "more than %d progressive scans", MAX_SCANS);
    longjmp(e->jump, 1);
}

/* libjpeg's memory for one image (mostly a progressive file's coefficients,
 * 2 bytes a sample): beyond it the image is refused, not swapped. */
#define MAX_DECODER_MEMORY (1024L * 1024 * 1024)

static void init_errors(error_mgr *e) {
    jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error;
    e->pub.emit_message = on_message;
    e->msg[0] = '\0';
}

struct md_jpeg_decoder {
    struct jpeg_decompress_struct cinfo;
    error_mgr                     err;
    struct jpeg_progress_mgr      progress;
    resample_scratch              rs;
    void                         *rows; /* decoded scanlines */
    size_t                        rows_cap;
};

md_status md_jpeg_decoder_create(md_jpeg_decoder **out) {
    *out = NULL;
    md_jpeg_decoder *d = calloc(1, sizeof *d);
    if (!d) return md_fail(MD_ERR_NOMEM, "JPEG decoder: no memory");
    init_errors(&d->err);
    d->cinfo.err = &d->err.pub;
    if (setjmp(d->err.jump)) {
        md_status s = md_fail(MD_ERR_NOMEM, "JPEG decoder: libjpeg setup failed: %s", d->err.msg);
        free(d);
        return s;
    }
    jpeg_create_decompress(&d->cinfo);
    d->progress.progress_monitor = on_progress;
    d->cinfo.progress = &d->progress;
    d->cinfo.mem->max_memory_to_use = MAX_DECODER_MEMORY;
    *out = d;
    return MD_OK;
}

void md_jpeg_decoder_destroy(md_jpeg_decoder *d) {
    if (!d) return;
    jpeg_destroy_decompress(&d->cinfo);
    free(d->rs.tap_mem);
    free(d->rs.tmp);
    free(d->rows);
    free(d);
}

/* After jpeg_read_header: refuse what we do not decode, ask for RGB. */
static md_status setup_colour(struct jpeg_decompress_struct *ci, const char *what) {
    if (ci->image_width > MAX_SIDE || ci->image_height > MAX_SIDE)
        return md_fail(MD_ERR_DATA, "JPEG %s: %ux%u is larger than %d pixels a side", what,
                       ci->image_width, ci->image_height, MAX_SIDE);
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        return md_fail(MD_ERR_DATA,
                       "JPEG %s: CMYK/YCCK colour is not supported (imagenet_prep converts it)",
                       what);
    default:
        return md_fail(MD_ERR_DATA, "JPEG %s: unknown colour space (%d components)", what,
                       ci->num_components);
    }
    ci->out_color_space = JCS_RGB; /* grayscale is expanded by libjpeg-turbo */
    ci->dct_method = JDCT_ISLOW;   /* what PIL and tjbench decode with */
    return MD_OK;
}

typedef md_status (*guarded_fn)(md_jpeg_decoder *d, void *ctx);

/* Run fn with libjpeg errors turned into MD_ERR_DATA naming `what`; the
 * decompressor is reset afterwards either way, ready for the next image. */
static md_status guarded(md_jpeg_decoder *d, const uint8_t *jpg, size_t n, const char *what,
                         guarded_fn fn, void *ctx) {
    if (!jpg || n == 0) return md_fail(MD_ERR_DATA, "JPEG %s: empty (0 bytes)", what);
    if (setjmp(d->err.jump)) {
        jpeg_abort_decompress(&d->cinfo);
        return md_fail(MD_ERR_DATA, "JPEG %s: damaged (%zu bytes): %s", what, n, d->err.msg);
    }
    jpeg_mem_src(&d->cinfo, jpg, (unsigned long)n);
    md_status s = fn(d, ctx);
    jpeg_abort_decompress(&d->cinfo);
    return s;
}

typedef struct {
    const char *what;
    int         w, h;
} info_ctx;

static md_status info_fn(md_jpeg_decoder *d, void *vctx) {
    info_ctx *c = vctx;
    jpeg_read_header(&d->cinfo, TRUE);
    MD_TRY(setup_colour(&d->cinfo, c->what));
    c->w = (int)d->cinfo.image_width, c->h = (int)d->cinfo.image_height;
    return MD_OK;
}

md_status md_jpeg_info(const uint8_t *jpg, size_t n, int *w, int *h, const char *what) {
    if (!what) what = UNNAMED;
    /* A decompressor of its own, so a caller needs no decoder for a header. */
    md_jpeg_decoder *d;
    *w = 0, *h = 0;
    MD_TRY(md_jpeg_decoder_create(&d));
    info_ctx  ctx = {what, 0, 0};
    md_status s = guarded(d, jpg, n, what, info_fn, &ctx);
    md_jpeg_decoder_destroy(d);
    if (s == MD_OK) *w = ctx.w, *h = ctx.h;
    return s;
}

/* ---------------- full decode ---------------- */

typedef struct {
    const char *what;
    uint8_t   **rgb;
    int        *w, *h;
} full_ctx;

static md_status full_fn(md_jpeg_decoder *d, void *vctx) {
    full_ctx                      *c = vctx;
    struct jpeg_decompress_struct *ci = &d->cinfo;
    jpeg_read_header(ci, TRUE);
    MD_TRY(setup_colour(ci, c->what));
    jpeg_start_decompress(ci);
    size_t   stride = (size_t)ci->output_width * 3;
    uint8_t *out = malloc(stride * ci->output_height);
    if (!out)
        return md_fail(MD_ERR_NOMEM, "JPEG %s: no memory for %ux%u pixels", c->what,
                       ci->output_width, ci->output_height);
    *c->rgb = out; /* owned by the caller from here, also if a later row fails */
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW row = out + stride * ci->output_scanline;
        jpeg_read_scanlines(ci, &row, 1);
    }
    jpeg_finish_decompress(ci);
    *c->w = (int)ci->output_width, *c->h = (int)ci->output_height;
    return MD_OK;
}

md_status md_jpeg_decode_full(md_jpeg_decoder *d, const uint8_t *jpg, size_t n, uint8_t **rgb,
                              int *w, int *h, const char *what) {
    if (!what) what = UNNAMED;
    *rgb = NULL, *w = 0, *h = 0;
    full_ctx  ctx = {what, rgb, w, h};
    md_status s = guarded(d, jpg, n, what, full_fn, &ctx);
    if (s != MD_OK) {
        free(*rgb);
        *rgb = NULL, *w = 0, *h = 0;
    }
    return s;
}

/* ---------------- region decode ---------------- */

typedef struct {
    const char *what;
    md_crop     c;
    int         out_w, out_h, mirror;
    uint8_t    *rgb;
} crop_ctx;

/* The smallest M of 1, 2, 4, 8 (at least min_m) with the crop at M/8 at least
 * the output in both directions. Only the powers of two: libjpeg-turbo's
 * 3/8, 5/8, 6/8 and 7/8 IDCTs are plain C, slower than its SIMD 8/8 one (tjbench
 * on a 405x256 4:2:0 image: 7/8 at 0.57x the 8/8 rate, 6/8 0.75x, 5/8 0.84x,
 * 3/8 0.98x; 4/8 1.44x, 2/8 1.33x, 1/8 1.76x), and a larger M is also closer
 * to the full-resolution result. */
static int pick_scale(md_crop c, int out_w, int out_h, int min_m) {
    for (int m = min_m; m < 8; m *= 2)
        if ((long)c.w * m >= 8L * out_w && (long)c.h * m >= 8L * out_h) return m;
    return 8;
}

/* libjpeg-turbo reduces chroma subsampled in one direction only (4:2:2, 4:4:0)
 * poorly below 4/8: on textured content its chroma is off by a mean of 8-15
 * levels at 1/8 and 2/8 against a box filter of the full decode (1 level for
 * 4:2:0 and 4:4:4), so those images are not decoded below 4/8. */
static int min_scale(const struct jpeg_decompress_struct *ci) {
    for (int i = 0; i < ci->num_components; i++) {
        const jpeg_component_info *k = &ci->comp_info[i];
        if (ci->max_h_samp_factor * k->v_samp_factor != ci->max_v_samp_factor * k->h_samp_factor)
            return 4;
    }
    return 1;
}

static md_status crop_fn(md_jpeg_decoder *d, void *vctx) {
    crop_ctx                      *x = vctx;
    struct jpeg_decompress_struct *ci = &d->cinfo;
    md_crop                        c = x->c;
    jpeg_read_header(ci, TRUE);
    MD_TRY(setup_colour(ci, x->what));
    MD_TRY(check_crop(c, (int)ci->image_width, (int)ci->image_height, x->what));
    int m = pick_scale(c, x->out_w, x->out_h, min_scale(ci));
    ci->scale_num = (unsigned)m, ci->scale_denom = 8;
    jpeg_start_decompress(ci);
    int    sw = (int)ci->output_width, sh = (int)ci->output_height;
    double f = m / 8.0;
    /* The box in scaled pixels and the scaled pixels that overlap it. */
    double bx0 = c.x * f, bx1 = (c.x + c.w) * f, by0 = c.y * f, by1 = (c.y + c.h) * f;
    int    kx0 = (int)floor(bx0), kx1 = clampi((int)ceil(bx1), kx0 + 1, sw);
    int    ky0 = (int)floor(by0), ky1 = clampi((int)ceil(by1), ky0 + 1, sh);
    int    nkx = kx1 - kx0, nky = ky1 - ky0;

    /* Columns: libjpeg aligns the offset down to an iMCU and may widen the span. */
    JDIMENSION xoff = (JDIMENSION)(kx0 > CROP_MARGIN ? kx0 - CROP_MARGIN : 0);
    JDIMENSION xend = (JDIMENSION)(kx1 + CROP_MARGIN < sw ? kx1 + CROP_MARGIN : sw);
    JDIMENSION xw = xend - xoff;
    if (xoff > 0 || xw < (JDIMENSION)sw) jpeg_crop_scanline(ci, &xoff, &xw);
    size_t row_bytes = (size_t)ci->output_width * 3; /* the cropped width */
    size_t col0 = ((size_t)kx0 - xoff) * 3;

    taps     tx, ty;
    row_plan rp;
    int32_t *plan_mem;
    int      stx = tap_stride(0, bx1 - bx0, x->out_w), sty = tap_stride(0, by1 - by0, x->out_h);
    MD_TRY(alloc_taps(&d->rs, x->out_w, stx, x->out_h, sty, &tx, &ty, &plan_mem));
    make_taps(bx0 - kx0, bx1 - kx0, nkx, x->out_w, &tx);
    make_taps(by0 - ky0, by1 - ky0, nky, x->out_h, &ty);
    make_row_plan(&tx, x->out_w, x->mirror, plan_mem, &rp);
    size_t tmp_row = (size_t)x->out_w * 3;
    MD_TRY(grow(&d->rs.tmp, &d->rs.tmp_cap, tmp_row * nky + 1));
    MD_TRY(grow(&d->rows, &d->rows_cap, row_bytes * 4 + 16)); /* slack for 4-byte loads */

    int first = ky0 > CROP_MARGIN ? ky0 - CROP_MARGIN : 0;
    if (first > 0) jpeg_skip_scanlines(ci, (JDIMENSION)first);
    uint8_t *tmp = d->rs.tmp;
    while ((int)ci->output_scanline < ky1) {
        JSAMPROW rows[4];
        int      want = ky1 - (int)ci->output_scanline;
        int      y0 = (int)ci->output_scanline;
        if (want > 4) want = 4;
        for (int i = 0; i < want; i++)
            rows[i] = (uint8_t *)d->rows + row_bytes * i;
        JDIMENSION got = jpeg_read_scanlines(ci, rows, (JDIMENSION)want);
        if (got == 0)
            return md_fail(MD_ERR_DATA, "JPEG %s: decoder returned no rows at row %d", x->what, y0);
        for (int i = 0; i < (int)got; i++)
            if (y0 + i >= ky0)
                resample_row(rows[i] + col0, row_bytes * (4 - i) + 16 - col0, &rp,
                             tmp + tmp_row * (y0 + i - ky0));
    }
    resample_columns(tmp, tmp_row, &ty, x->out_h, x->rgb);
    return MD_OK; /* the rows below the box are never decoded (guarded() aborts) */
}

md_status md_jpeg_decode_crop(md_jpeg_decoder *d, const uint8_t *jpg, size_t n, md_crop c,
                              int out_w, int out_h, int mirror, uint8_t *rgb, const char *what) {
    if (!what) what = UNNAMED;
    MD_TRY(check_out_size(out_w, out_h));
    /* The rows below the crop are not read, so a cut-off tail would go unseen:
     * every JPEG libjpeg writes (all of imagenet_prep's) ends with EOI. */
    if (jpg && n >= 2 && (jpg[n - 2] != 0xFF || jpg[n - 1] != 0xD9))
        return md_fail(MD_ERR_DATA,
                       "JPEG %s: truncated or damaged (%zu bytes, no end-of-image marker at the "
                       "end)",
                       what, n);
    crop_ctx ctx = {what, c, out_w, out_h, mirror != 0, rgb};
    return guarded(d, jpg, n, what, crop_fn, &ctx);
}
