/* Synthetic images: each class has its own pattern of bright and dark blocks
 * (a 4x4 grid per channel); a sample is its class's pattern plus per-pixel
 * noise. The blocks are a quarter of the image wide, so the class survives a
 * few pixels of random crop. Sample i depends only on (seed, i), not on n, and
 * the label is drawn uniformly per sample. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_impl.h"

#define SYN_GRID      4
#define SYN_MID       128
#define SYN_AMPLITUDE 32    /* pattern: SYN_MID +- this */
#define SYN_NOISE     0.35f /* noise: (a + b - 255) * this, a and b uniform bytes; std ~37 */

/* One bit per (channel, block row, block col); classes get distinct patterns. */
static void class_patterns(md_rng *r, int classes, int bits, uint64_t *pat) {
    uint64_t mask = bits == 64 ? ~0ull : (1ull << bits) - 1;
    for (int k = 0; k < classes; k++) {
        int fresh;
        do {
            pat[k] = ((uint64_t)md_rng_u32(r) << 32 | md_rng_u32(r)) & mask;
            fresh = 1;
            for (int j = 0; j < k; j++)
                fresh &= pat[j] != pat[k];
        } while (!fresh);
    }
}

static uint8_t noisy(int base, uint32_t two_bytes) {
    int   a = (int)(two_bytes & 0xFF), b = (int)(two_bytes >> 8 & 0xFF);
    float v = (float)base + (float)(a + b - 255) * SYN_NOISE;
    return (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v + 0.5f);
}

static void make_sample(const md_rng *base, int i, const uint64_t *pat, md_dataset *ds, int gh,
                        int gw) {
    md_rng   r = md_rng_split(base, (uint64_t)i + 1);
    int      label = (int)md_data_below(&r, (uint32_t)ds->classes);
    size_t   chw = (size_t)ds->c * ds->h * ds->w;
    uint8_t *img = ds->images + (size_t)i * chw;
    uint32_t word = 0;
    size_t   p = 0;
    for (int ch = 0; ch < ds->c; ch++)
        for (int y = 0; y < ds->h; y++)
            for (int x = 0; x < ds->w; x++, p++) {
                int bit = (ch * gh + y * gh / ds->h) * gw + x * gw / ds->w;
                int base_px =
                    pat[label] >> bit & 1 ? SYN_MID + SYN_AMPLITUDE : SYN_MID - SYN_AMPLITUDE;
                if ((p & 1) == 0) word = md_rng_u32(&r);
                img[p] = noisy(base_px, (p & 1) ? word >> 16 : word);
            }
    ds->labels[i] = label;
}

static void channel_stats(md_dataset *ds) {
    size_t hw = (size_t)ds->h * ds->w;
    for (int ch = 0; ch < ds->c; ch++) {
        double s = 0.0, s2 = 0.0;
        for (int i = 0; i < ds->n; i++) {
            const uint8_t *p = ds->images + ((size_t)i * ds->c + ch) * hw;
            for (size_t j = 0; j < hw; j++) {
                double v = p[j] / 255.0;
                s += v;
                s2 += v * v;
            }
        }
        double cnt = (double)ds->n * hw, mean = s / cnt, var = s2 / cnt - mean * mean;
        ds->mean[ch] = (float)mean;
        ds->std[ch] = (float)(var > 1e-12 ? sqrt(var) : 1.0);
    }
}

md_status md_dataset_synthetic(int n, int c, int h, int w, int classes, uint64_t seed,
                               md_dataset *out) {
    memset(out, 0, sizeof *out);
    if (n < 1 || c < 1 || c > 3 || h < 1 || w < 1 || h > 4096 || w > 4096)
        return md_fail(MD_ERR_ARG,
                       "synthetic: %d images of %dx%dx%d (need n >= 1, 1..3 channels, sides "
                       "1..4096)",
                       n, c, h, w);
    int gh = h < SYN_GRID ? h : SYN_GRID, gw = w < SYN_GRID ? w : SYN_GRID, bits = c * gh * gw;
    if (classes < 2 || (bits < 20 && classes > (1 << bits)))
        return md_fail(MD_ERR_ARG,
                       "synthetic: %d classes (need >= 2 and at most %d distinct "
                       "patterns for %dx%dx%d images)",
                       classes, bits < 20 ? 1 << bits : 1 << 20, c, h, w);
    if (classes > (1 << 20)) return md_fail(MD_ERR_ARG, "synthetic: %d classes", classes);
    uint64_t *pat = malloc((size_t)classes * sizeof *pat);
    if (!pat) return md_fail(MD_ERR_NOMEM, "synthetic: %d class patterns", classes);
    md_status s = md_data_alloc(out, "synthetic", n, c, h, w, classes);
    if (s == MD_OK) {
        md_rng base;
        md_rng_seed(&base, seed, 0);
        class_patterns(&base, classes, bits, pat);
        for (int i = 0; i < n; i++)
            make_sample(&base, i, pat, out, gh, gw);
        channel_stats(out);
    }
    free(pat);
    return s;
}
