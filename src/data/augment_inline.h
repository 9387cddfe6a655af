/* The in-memory datasets' augmentation of one sample, shared by the host
 * loader (memory.c), the CPU backend's augment_u8 op and the CUDA kernel
 * (src/backend/cuda/cuda_data.cu): the padded random crop, the flip, the
 * normalisation through a per-channel table and DARTS's cutout. Pure inline
 * code over plain arguments (no dataset or backend types), so it compiles as
 * host C and as CUDA device code and the three give the same bits.
 *
 * The draws, in this order, from the sample's own stream: with crop padding
 * p > 0, dy then dx, each uniform in [-p, p]; with flip, the top bit of one
 * word; with cutout, the centre row then column, uniform over the image. The
 * pinned batches of tests/test_loader_pin.c hold this order. */
#ifndef MDENAS_AUGMENT_INLINE_H
#define MDENAS_AUGMENT_INLINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/philox_inline.h"

/* What one sample drew. */
typedef struct {
    int dy, dx; /* the crop window's offset in the zero-padded image */
    int mirror; /* 1: flipped left-right (after the crop) */
    int cy, cx; /* the cutout's centre; cy < 0: no cutout */
    int half;   /* half the cutout's side (rows [cy - half, cy + half) are cut) */
} md_aug_draw;

/* The draws of one sample of an h x w image from r (its own stream). */
static inline MD_HD md_aug_draw md_aug_draws(md_rng *r, int crop_pad, int flip, int cutout, int h,
                                             int w) {
    md_aug_draw d = {0, 0, 0, -1, -1, cutout / 2};
    if (crop_pad > 0) {
        d.dy = (int)md_rng_below(r, (uint32_t)(2 * crop_pad + 1)) - crop_pad;
        d.dx = (int)md_rng_below(r, (uint32_t)(2 * crop_pad + 1)) - crop_pad;
    }
    if (flip) d.mirror = (int)(md_rng_next_u32(r) >> 31);
    if (cutout > 0) {
        d.cy = (int)md_rng_below(r, (uint32_t)h);
        d.cx = (int)md_rng_below(r, (uint32_t)w);
    }
    return d;
}

/* Output pixel (ch, y, x) of a sample: src is its c x h x w bytes (NCHW), lut
 * [c][256] the normalised value of each byte per channel. The crop pads with
 * raw 0, normalised like any pixel; the cutout is 0 after normalisation. */
static inline MD_HD float md_aug_pixel(const uint8_t *src, const float *lut, int h, int w,
                                       const md_aug_draw *d, int ch, int y, int x) {
    if (d->cy >= 0 && y >= d->cy - d->half && y < d->cy + d->half && x >= d->cx - d->half &&
        x < d->cx + d->half)
        return 0.0f;
    const float *l = lut + (size_t)ch * 256;
    int          sy = y + d->dy, sx = (d->mirror ? w - 1 - x : x) + d->dx;
    if (sy < 0 || sy >= h || sx < 0 || sx >= w) return l[0];
    return l[src[((size_t)ch * h + sy) * w + sx]];
}

/* Pixels p = first, first + stride, ... (< c*h*w, NCHW order) of a sample whose
 * draws are d, into dst[p]: what thread `first` of a block of `stride` threads
 * writes in the CUDA kernel; first 0, stride 1 is the whole sample. */
static inline MD_HD void md_aug_pixels(const uint8_t *src, const float *lut, int c, int h, int w,
                                       const md_aug_draw *d, int first, int stride, float *dst) {
    int hw = h * w, chw = c * hw;
    for (int p = first; p < chw; p += stride) {
        int ch = p / hw, rem = p - ch * hw, y = rem / w;
        dst[p] = md_aug_pixel(src, lut, h, w, d, ch, y, rem - y * w);
    }
}

/* The stream key of the sample at position j of an epoch whose stream has key
 * epoch_key: the loader's child j + 1 (child 0 draws the order). */
static inline MD_HD uint64_t md_aug_sample_key(uint64_t epoch_key, long j) {
    return md_rng_key_split(epoch_key, (uint64_t)j + 1);
}

/* The whole sample: draws from r, then c*h*w floats into dst. */
static inline MD_HD void md_aug_image(const uint8_t *src, const float *lut, int c, int h, int w,
                                      int crop_pad, int flip, int cutout, md_rng *r, float *dst) {
    md_aug_draw d = md_aug_draws(r, crop_pad, flip, cutout, h, w);
    /* md_aug_pixels(..., 0, 1, dst) without its divisions: the host's loop */
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++, dst += w)
            for (int x = 0; x < w; x++) dst[x] = md_aug_pixel(src, lut, h, w, &d, ch, y, x);
}

#endif
