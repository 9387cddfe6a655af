/* src/data/jpeg.c: the RandomResizedCrop policy, the region decode against a
 * full decode, the resize, mirroring and damaged input.
 *
 * Test images are compressed here with libjpeg from synthetic content (smooth
 * gradients, texture, hard edges) and, when mate-backgrounds is installed, from
 * a region of one of its photos.
 *
 * Tolerances of the region decode against "full-resolution decode, then
 * md_resize_rgb of the same crop":
 *  - at DCT scale 8/8 the two are the same computation on the same pixels
 *    (the decoded margin keeps the crop edges away from libjpeg's cropped-row
 *    edges), so they must be equal, byte for byte;
 *  - at M/8 < 1 the region decode resamples libjpeg's DCT-domain reduction
 *    instead of the full-resolution pixels. Both are low-pass filters of the
 *    same pixels around the same centres, so they differ by the difference of
 *    two filters' responses: small on smooth content, up to the local contrast
 *    at edges and in fine texture, and largest at 1/8 (8x8 block means on the
 *    JPEG's block grid, not centred on the crop). Measured worst cases: the
 *    photo region mean 0.51 and max 12 levels, the synthetic images (a 30-pixel
 *    sine texture of amplitude 100, speckles of +-64, hard edges) mean 5.3 and
 *    max 49. The bounds below leave about 1.5-3x room; the horizontal mapping
 *    shifted by half a scaled pixel already fails 30 of the 156 reduced-scale
 *    crops (6 of them on the photo). */
#define PHOTO_MEAN 1.5
#define PHOTO_MAX  32
#define SYN_MEAN   8.0
#define SYN_MAX    96

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "data/jpeg.h"
#include "testutil.h"

/* ---------------- helpers ---------------- */

typedef struct {
    uint8_t *bytes;
    size_t   n;
} blob;

typedef enum { SUB_420, SUB_422, SUB_444, SUB_GRAY, SUB_CMYK } subsampling;

/* Compress w x h RGB (or its gray / CMYK version) with libjpeg. */
static blob compress(const uint8_t *rgb, int w, int h, subsampling sub, int progressive,
                     int quality) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr       jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long  n = 0;
    jpeg_mem_dest(&ci, &out, &n);
    ci.image_width = (JDIMENSION)w, ci.image_height = (JDIMENSION)h;
    int comps = sub == SUB_GRAY ? 1 : sub == SUB_CMYK ? 4 : 3;
    ci.input_components = comps;
    ci.in_color_space = sub == SUB_GRAY ? JCS_GRAYSCALE : sub == SUB_CMYK ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    if (comps == 3) {
        ci.comp_info[0].h_samp_factor = sub == SUB_444 ? 1 : 2;
        ci.comp_info[0].v_samp_factor = sub == SUB_420 ? 2 : 1;
        ci.comp_info[1].h_samp_factor = ci.comp_info[1].v_samp_factor = 1;
        ci.comp_info[2].h_samp_factor = ci.comp_info[2].v_samp_factor = 1;
    }
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    uint8_t *row = malloc((size_t)w * comps);
    while (ci.next_scanline < ci.image_height) {
        const uint8_t *src = rgb + (size_t)ci.next_scanline * w * 3;
        for (int x = 0; x < w; x++) {
            const uint8_t *p = src + 3 * x;
            if (comps == 1)
                row[x] = (uint8_t)((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8);
            else if (comps == 4)
                for (int c = 0; c < 4; c++)
                    row[4 * x + c] = (uint8_t)(c < 3 ? 255 - p[c] : 0);
            else
                memcpy(row + 3 * x, p, 3);
        }
        JSAMPROW r = row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    free(row);
    return (blob){out, n};
}

/* A valid progressive JPEG of 1135 scans: DC, then every AC coefficient of every
 * component alone, first at 1/32 precision, then refined bit by bit. */
static blob compress_many_scans(const uint8_t *rgb, int w, int h) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr       jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    unsigned char *out = NULL;
    unsigned long  n = 0;
    jpeg_mem_dest(&ci, &out, &n);
    ci.image_width = (JDIMENSION)w, ci.image_height = (JDIMENSION)h;
    ci.input_components = 3, ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_scan_info *scans = calloc(1 + 3 * 63 * 6, sizeof *scans);
    int             k = 0;
    scans[k++] = (jpeg_scan_info){3, {0, 1, 2, 0}, 0, 0, 0, 0};
    for (int c = 0; c < 3; c++)
        for (int coef = 1; coef < 64; coef++) {
            scans[k++] = (jpeg_scan_info){1, {c, 0, 0, 0}, coef, coef, 0, 5};
            for (int al = 5; al > 0; al--)
                scans[k++] = (jpeg_scan_info){1, {c, 0, 0, 0}, coef, coef, al, al - 1};
        }
    ci.scan_info = scans, ci.num_scans = k;
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW r = (JSAMPROW)(rgb + (size_t)ci.next_scanline * w * 3);
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    free(scans);
    return (blob){out, n};
}

/* Smooth gradients, a sine texture and hard-edged rectangles. */
static uint8_t *synthetic(int w, int h, uint32_t seed) {
    uint8_t *p = malloc((size_t)w * h * 3);
    md_rng   r;
    md_rng_seed(&r, seed, 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double   t = sin(x * 0.21 + y * 0.07) * sin(y * 0.13 - x * 0.05);
            int      block = ((x / 23) + (y / 17)) % 3;
            uint8_t *o = p + ((size_t)y * w + x) * 3;
            o[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
            o[1] = (uint8_t)(128 + 100 * t);
            o[2] = (uint8_t)(block == 0 ? 30 : block == 1 ? 140 : 230);
            if ((md_rng_u32(&r) & 31) == 0) o[1] ^= 0x40; /* speckles */
        }
    return p;
}


/* A w x h region of a mate-backgrounds photo at (ox, oy), or NULL when absent. */
static uint8_t *photo_region(md_jpeg_decoder *d, int ox, int oy, int w, int h) {
    size_t   n;
    uint8_t *jpg = md_test_read_file("/usr/share/backgrounds/mate/nature/FreshFlower.jpg", &n);
    if (!jpg) return NULL;
    uint8_t  *full = NULL;
    int       fw, fh;
    md_status s = md_jpeg_decode_full(d, jpg, n, &full, &fw, &fh, "FreshFlower.jpg");
    free(jpg);
    if (s != MD_OK || fw < ox + w || fh < oy + h) {
        free(full);
        return NULL;
    }
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        memcpy(p + (size_t)y * w * 3, full + ((size_t)(oy + y) * fw + ox) * 3, (size_t)w * 3);
    free(full);
    return p;
}

typedef struct {
    double mean, max;
} diff;

static diff compare(const uint8_t *a, const uint8_t *b, size_t n) {
    diff   d = {0, 0};
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        int e = abs((int)a[i] - (int)b[i]);
        sum += e;
        if (e > d.max) d.max = e;
    }
    d.mean = n ? sum / n : 0;
    return d;
}

/* ---------------- crop policy ---------------- */

static int crop_inside(md_crop c, int w, int h) {
    return c.w > 0 && c.h > 0 && c.x >= 0 && c.y >= 0 && c.x + c.w <= w && c.y + c.h <= h;
}

static void test_rrc_bounds(void) {
    static const int shapes[][2] = {{1, 1},     {3, 4000},  {4000, 3}, {2, 2},
                                    {5, 7},     {1, 100},   {100, 1},  {224, 224},
                                    {500, 375}, {375, 500}, {17, 3},   {65500, 2}};
    md_rrc_params    p = MD_RRC_DEFAULT;
    int              bad = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (uint64_t seed = 0; seed < 2000; seed++) {
            md_rng r;
            md_rng_seed(&r, seed, s);
            int     w = shapes[s][0], h = shapes[s][1];
            md_crop c = md_rrc_crop(w, h, &p, &r);
            if (!crop_inside(c, w, h)) {
                if (bad++ < 5)
                    fprintf(stderr, "crop %dx%d at (%d,%d) outside %dx%d (seed %llu)\n", c.w, c.h,
                            c.x, c.y, w, h, (unsigned long long)seed);
            }
        }
    CHECK(bad == 0, "%d crops outside their image", bad);
    /* Nonsense parameters still give a crop inside the image. */
    md_rrc_params nonsense[] = {{NAN, 1, 0.75, 1.33}, {0.08, 1, -1, 0}, {5, 9, 1e300, 1e301}};
    for (size_t k = 0; k < sizeof nonsense / sizeof nonsense[0]; k++) {
        md_rng r;
        md_rng_seed(&r, k, 5);
        md_crop c = md_rrc_crop(300, 200, &nonsense[k], &r);
        CHECK(crop_inside(c, 300, 200), "nonsense parameters %zu: crop %dx%d at (%d,%d)", k, c.w,
              c.h, c.x, c.y);
    }
}

/* Area fraction uniform in [lo, hi], log-ratio uniform, position uniform: on a
 * square image with hi = 0.5 every first try fits, so the samples are the
 * policy's draws up to rounding w and h to integers. */
static void test_rrc_distribution(void) {
    const int     W = 1000, H = 1000, N = 20000;
    md_rrc_params p = {0.08, 0.5, 3.0 / 4.0, 4.0 / 3.0};
    md_rng        r;
    md_rng_seed(&r, 7, 0);
    double sum_a = 0, sum_lr = 0, sum_pos = 0;
    int    bins[10] = {0};
    int    pos_n = 0;
    for (int i = 0; i < N; i++) {
        md_crop c = md_rrc_crop(W, H, &p, &r);
        double  a = (double)c.w * c.h / ((double)W * H);
        sum_a += a;
        sum_lr += log((double)c.w / c.h);
        int b = (int)((a - p.scale_lo) / (p.scale_hi - p.scale_lo) * 10);
        bins[b < 0 ? 0 : b > 9 ? 9 : b]++;
        if (c.w < W) sum_pos += (double)c.x / (W - c.w), pos_n++;
    }
    /* Standard errors of the means; rounding moves an area fraction by at most
     * (w + h)/2 / (W*H) <= 0.001 and a log-ratio by at most 1/w_min ~ 0.004. */
    double sd_a = (p.scale_hi - p.scale_lo) / sqrt(12.0);
    double sd_lr = (log(p.ratio_hi) - log(p.ratio_lo)) / sqrt(12.0);
    double mean_a = sum_a / N, mean_lr = sum_lr / N, mean_pos = sum_pos / pos_n;
    double tol_a = 5 * sd_a / sqrt(N) + 0.001, tol_lr = 5 * sd_lr / sqrt(N) + 0.004;
    double tol_pos = 5 * (1 / sqrt(12.0)) / sqrt(pos_n);
    CHECK(fabs(mean_a - 0.29) < tol_a, "mean area fraction %.5f, want 0.29 +- %.5f", mean_a, tol_a);
    CHECK(fabs(mean_lr) < tol_lr, "mean log-ratio %.5f, want 0 +- %.5f", mean_lr, tol_lr);
    CHECK(fabs(mean_pos - 0.5) < tol_pos, "mean position %.4f, want 0.5 +- %.4f", mean_pos,
          tol_pos);
    /* Each tenth of the area range holds N/10 +- 5 binomial sigmas. */
    double sd_bin = sqrt(N * 0.1 * 0.9);
    for (int b = 0; b < 10; b++)
        CHECK(fabs(bins[b] - N / 10.0) < 5 * sd_bin + 0.002 * N, "area bin %d holds %d of %d", b,
              bins[b], N);
    /* The default policy on a 4:3 image: sometimes retried, never outside. */
    md_rrc_params def = MD_RRC_DEFAULT;
    double        sum_full = 0;
    for (int i = 0; i < N; i++) {
        md_crop c = md_rrc_crop(400, 300, &def, &r);
        sum_full += (double)c.w * c.h / (400.0 * 300.0);
    }
    /* Larger crops are rejected more often, so the mean falls below (0.08+1)/2. */
    CHECK(sum_full / N > 0.40 && sum_full / N < 0.54, "default mean area fraction %.4f",
          sum_full / N);
}

static void expect_crop(md_crop c, int x, int y, int w, int h, const char *what) {
    CHECK(c.x == x && c.y == y && c.w == w && c.h == h,
          "%s: got %dx%d at (%d,%d), want %dx%d at (%d,%d)", what, c.w, c.h, c.x, c.y, w, h, x, y);
}

/* torchvision's fallback, worked by hand: no try can fit, so every seed gives it. */
static void test_rrc_fallback(void) {
    md_rrc_params def = MD_RRC_DEFAULT;
    md_rrc_params wide = {0.08, 1.0, 0.4, 2.5};
    int           mism = 0;
    for (uint64_t seed = 0; seed < 500; seed++) {
        md_rng r;
        md_rng_seed(&r, seed, 99);
        md_crop a = md_rrc_crop(3, 4000, &def, &r);  /* w=3, h=round(3/0.75)=4, y=(4000-4)//2 */
        md_crop b = md_rrc_crop(4000, 3, &def, &r);  /* h=3, w=round(3*4/3)=4 */
        md_crop c = md_rrc_crop(7, 5000, &def, &r);  /* h=round(9.33)=9, y=2495 */
        md_crop e = md_rrc_crop(5000, 5, &wide, &r); /* w=round(12.5)=12 (half to even) */
        md_crop f = md_rrc_crop(5000, 3, &wide, &r); /* w=round(7.5)=8 */
        md_crop g = md_rrc_crop(1, 1, &def, &r);     /* the whole pixel either way */
        if (seed == 0) {
            expect_crop(a, 0, 1998, 3, 4, "3x4000");
            expect_crop(b, 1998, 0, 4, 3, "4000x3");
            expect_crop(c, 0, 2495, 7, 9, "7x5000");
            expect_crop(e, 2494, 0, 12, 5, "5000x5 ratio 2.5");
            expect_crop(f, 2496, 0, 8, 3, "5000x3 ratio 2.5");
            expect_crop(g, 0, 0, 1, 1, "1x1");
        }
        mism += !(a.y == 1998 && a.h == 4 && b.x == 1998 && b.w == 4 && c.h == 9 && e.w == 12 &&
                  f.w == 8 && g.w == 1 && g.h == 1);
    }
    CHECK(mism == 0, "%d seeds left the fallback", mism);
    /* Centre crops as torchvision.transforms.CenterCrop places them. */
    expect_crop(md_center_crop(500, 375, 224), 138, 76, 224, 224,
                "centre 500x375"); /* round(75.5)=76 */
    expect_crop(md_center_crop(501, 377, 224), 138, 76, 224, 224,
                "centre 501x377"); /* round(138.5)=138 */
    expect_crop(md_center_crop(100, 50, 224), 0, 0, 100, 50, "centre clamped");
}

/* ---------------- resize and region decode ---------------- */

typedef struct {
    const char *name;
    subsampling sub;
    int         progressive;
    int         w, h;
    double      tol_mean, tol_max; /* at a reduced DCT scale (see the top of the file) */
} image_case;

typedef struct {
    int    exact_cases, scaled_cases;
    double worst_mean, worst_max;
} decode_stats;

/* Decode crop c to ow x oh both ways and compare; also the mirrored decode. */
static void check_crop(md_jpeg_decoder *d, const blob *jpg, const uint8_t *full, int fw, int fh,
                       md_crop c, int ow, int oh, const image_case *ic, decode_stats *st) {
    const char *name = ic->name;
    size_t      n = (size_t)ow * oh * 3;
    uint8_t    *ref = malloc(n), *got = malloc(n), *mir = malloc(n);
    CHECK_OK(md_resize_rgb(full, fw, fh, c, ow, oh, 0, ref));
    CHECK_OK(md_jpeg_decode_crop(d, jpg->bytes, jpg->n, c, ow, oh, 0, got, name));
    CHECK_OK(md_jpeg_decode_crop(d, jpg->bytes, jpg->n, c, ow, oh, 1, mir, name));
    /* Scale 8/8 exactly when 4/8 does not cover the output (jpeg.c uses M = 1, 2, 4, 8). */
    int  exact = !((long)c.w * 4 >= 8L * ow && (long)c.h * 4 >= 8L * oh);
    diff e = compare(got, ref, n);
    if (exact) {
        st->exact_cases++;
        CHECK(e.max == 0,
              "%s crop %dx%d@(%d,%d) -> %dx%d at 8/8: max diff %.0f (mean %.3f), want 0", name, c.w,
              c.h, c.x, c.y, ow, oh, e.max, e.mean);
    } else {
        st->scaled_cases++;
        if (e.mean > st->worst_mean) st->worst_mean = e.mean;
        if (e.max > st->worst_max) st->worst_max = e.max;
        if (getenv("MD_JPEG_VERBOSE"))
            printf("scaled %s %dx%d@(%d,%d)->%dx%d mean %.3f max %.0f\n", name, c.w, c.h, c.x, c.y,
                   ow, oh, e.mean, e.max);
        CHECK(e.mean <= ic->tol_mean && e.max <= ic->tol_max,
              "%s crop %dx%d@(%d,%d) -> %dx%d scaled: mean %.3f max %.0f", name, c.w, c.h, c.x, c.y,
              ow, oh, e.mean, e.max);
    }
    int flipped_bad = 0;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++)
            flipped_bad += memcmp(mir + ((size_t)y * ow + x) * 3,
                                  got + ((size_t)y * ow + (ow - 1 - x)) * 3, 3) != 0;
    CHECK(flipped_bad == 0, "%s: mirrored decode differs from the flipped one at %d pixels", name,
          flipped_bad);
    free(ref), free(got), free(mir);
}

static void test_region_decode_image(md_jpeg_decoder *d, const uint8_t *rgb, const image_case *ic,
                                     decode_stats *st) {
    blob     jpg = compress(rgb, ic->w, ic->h, ic->sub, ic->progressive, 90);
    uint8_t *full = NULL;
    int      fw = 0, fh = 0;
    CHECK_OK(md_jpeg_decode_full(d, jpg.bytes, jpg.n, &full, &fw, &fh, ic->name));
    CHECK(fw == ic->w && fh == ic->h, "%s: decoded %dx%d", ic->name, fw, fh);
    int iw, ih;
    CHECK_OK(md_jpeg_info(jpg.bytes, jpg.n, &iw, &ih, ic->name));
    CHECK(iw == ic->w && ih == ic->h, "%s: info says %dx%d", ic->name, iw, ih);
    if (ic->sub == SUB_GRAY && full) {
        int gray = 1;
        for (size_t i = 0; i < (size_t)fw * fh; i++)
            gray &= full[3 * i] == full[3 * i + 1] && full[3 * i] == full[3 * i + 2];
        CHECK(gray, "%s: grayscale did not come out as equal R, G, B", ic->name);
    }
    if (!full) {
        free(jpg.bytes);
        return;
    }
    int     W = ic->w, H = ic->h;
    md_crop fixed[] = {
        {0, 0, W, H},                  /* whole image */
        {0, 0, W / 3 + 1, H / 4 + 3},  /* top-left corner */
        {W - 37, H - 29, 37, 29},      /* bottom-right corner, image edge */
        {13, 7, W / 2 + 5, H / 2 - 3}, /* not on any MCU boundary */
        {W / 2 - 1, 1, 9, H - 2},      /* narrow and tall */
        {1, H / 3, W - 2, 5},          /* wide and short */
        {W - 1, H - 1, 1, 1},          /* one pixel */
    };
    static const int outs[][2] = {{224, 224}, {64, 48}, {17, 31}, {9, 5}};
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
        for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++)
            check_crop(d, &jpg, full, fw, fh, fixed[k], outs[o][0], outs[o][1], ic, st);
    md_rrc_params p = MD_RRC_DEFAULT;
    md_rng        r;
    md_rng_seed(&r, 3, (uint64_t)ic->w);
    for (int i = 0; i < 12; i++) {
        md_crop c = md_rrc_crop(W, H, &p, &r);
        int     o = i % 4;
        check_crop(d, &jpg, full, fw, fh, c, outs[o][0], outs[o][1], ic, st);
    }
    free(full);
    free(jpg.bytes);
}

static void test_region_decode(md_jpeg_decoder *d) {
    static const image_case cases[] = {
        {"synthetic 4:2:0 301x217", SUB_420, 0, 301, 217, SYN_MEAN, SYN_MAX},
        {"synthetic 4:2:2 257x263", SUB_422, 0, 257, 263, SYN_MEAN, SYN_MAX},
        {"synthetic 4:4:4 203x151", SUB_444, 0, 203, 151, SYN_MEAN, SYN_MAX},
        {"synthetic progressive 4:2:0 333x199", SUB_420, 1, 333, 199, SYN_MEAN, SYN_MAX},
        {"synthetic grayscale 181x243", SUB_GRAY, 0, 181, 243, SYN_MEAN, SYN_MAX},
        {"synthetic 4:2:0 1x1", SUB_420, 0, 1, 1, SYN_MEAN, SYN_MAX},
        {"synthetic 4:2:0 900x611", SUB_420, 0, 900, 611, SYN_MEAN, SYN_MAX},
    };
    decode_stats st = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const image_case *ic = &cases[i];
        uint8_t          *rgb = synthetic(ic->w, ic->h, (uint32_t)i);
        if (ic->w == 1) { /* a 1x1 image has only the one-pixel crop */
            blob     jpg = compress(rgb, 1, 1, ic->sub, 0, 90);
            uint8_t *full = NULL;
            int      fw, fh;
            CHECK_OK(md_jpeg_decode_full(d, jpg.bytes, jpg.n, &full, &fw, &fh, ic->name));
            if (full) check_crop(d, &jpg, full, fw, fh, (md_crop){0, 0, 1, 1}, 7, 3, ic, &st);
            free(full), free(jpg.bytes);
        } else {
            test_region_decode_image(d, rgb, ic, &st);
        }
        free(rgb);
    }
    static const image_case photo[] = {
        {"FreshFlower 4:2:0 611x427", SUB_420, 0, 611, 427, PHOTO_MEAN, PHOTO_MAX},
        {"FreshFlower progressive 4:2:2 611x427", SUB_422, 1, 611, 427, PHOTO_MEAN, PHOTO_MAX},
        {"FreshFlower 4:4:4 611x427", SUB_444, 0, 611, 427, PHOTO_MEAN, PHOTO_MAX},
    };
    uint8_t *rgb = photo_region(d, 401, 333, 611, 427);
    if (rgb) {
        for (size_t i = 0; i < sizeof photo / sizeof photo[0]; i++)
            test_region_decode_image(d, rgb, &photo[i], &st);
        free(rgb);
    } else {
        printf("test_jpeg: mate-backgrounds not installed; synthetic images only\n");
    }
    printf("test_jpeg: region decode: %d crops at 8/8 (equal), %d scaled (worst mean %.3f, max "
           "%.0f)\n",
           st.exact_cases, st.scaled_cases, st.worst_mean, st.worst_max);
    CHECK(st.scaled_cases > 20, "only %d crops were decoded at a reduced DCT scale",
          st.scaled_cases);
}

/* The resize on exactly known input: a constant stays constant, a ramp
 * reduced by 2 is the mean of pixel pairs, a 1:1 resize is the identity. */
static void test_resize_known(void) {
    enum { W = 16, H = 4 };
    uint8_t src[H][W][3], out[H][W][3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            src[y][x][0] = (uint8_t)(10 * x), src[y][x][1] = 77, src[y][x][2] = (uint8_t)(y * 50);
    md_crop all = {0, 0, W, H};
    CHECK_OK(md_resize_rgb(&src[0][0][0], W, H, all, W, H, 0, &out[0][0][0]));
    CHECK(memcmp(src, out, sizeof src) == 0, "1:1 resize is not the identity");
    uint8_t half[H][W / 2][3];
    CHECK_OK(md_resize_rgb(&src[0][0][0], W, H, all, W / 2, H, 0, &half[0][0][0]));
    /* Reducing by 2: output i has centre 2i+1 and support 2, so it reads pixels
     * 2i-1 .. 2i+2 with weights 1/8, 3/8, 3/8, 1/8: on the ramp 10x that is 20i+5. */
    for (int i = 1; i < W / 2 - 1; i++) {
        CHECK(half[1][i][0] == 20 * i + 5, "ramp/2 at %d: %d, want %d", i, half[1][i][0],
              20 * i + 5);
        CHECK(half[2][i][1] == 77, "constant channel changed: %d", half[2][i][1]);
    }
    /* Mirror of a ramp: the output is the ramp reversed. */
    CHECK_OK(md_resize_rgb(&src[0][0][0], W, H, all, W, H, 1, &out[0][0][0]));
    CHECK(out[0][0][0] == 150 && out[0][W - 1][0] == 0, "mirror: %d .. %d", out[0][0][0],
          out[0][W - 1][0]);
    /* Bad arguments are refused. */
    md_crop outside = {10, 0, 7, 4};
    CHECK(md_resize_rgb(&src[0][0][0], W, H, outside, 4, 4, 0, &out[0][0][0]) == MD_ERR_ARG,
          "a crop outside the image was accepted");
    CHECK(md_resize_rgb(&src[0][0][0], W, H, all, 0, 4, 0, &out[0][0][0]) == MD_ERR_ARG,
          "output width 0 was accepted");
}

/* Every vector path (16 and 8 pixels) and the scalar tail against the formula
 * computed here in single precision: the same operations, so the same bits. */
static void test_normalize_paths(void) {
    enum { W = 37, H = 5 };
    static uint8_t rgb[W * H * 3];
    static float   chw[3 * W * H];
    float          mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 97 + (i >> 2) * 13);
    rgb[0] = 0, rgb[1] = 255, rgb[5] = 255;
    md_rgb_to_chw_normalized(rgb, W, H, mean, std, chw);
    int bad = 0;
    for (int i = 0; i < W * H; i++)
        for (int c = 0; c < 3; c++) {
            volatile float v = (float)rgb[3 * i + c] / 255.0f;
            float          want = (v - mean[c]) / std[c];
            if (chw[c * W * H + i] != want && bad++ < 5)
                CHECK(0, "pixel %d channel %d: %.9g, want %.9g", i, c, chw[c * W * H + i], want);
        }
    CHECK(bad == 0, "%d of %d values differ from the formula", bad, 3 * W * H);
}

static void test_normalize(void) {
    uint8_t rgb[2 * 3] = {0, 128, 255, 10, 20, 30};
    float   mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    float   chw[6];
    md_rgb_to_chw_normalized(rgb, 2, 1, mean, std, chw);
    /* CHW: channel c of pixel i at c*2 + i. */
    float want[6] = {(0.0f - mean[0]) / std[0],         (10 / 255.0f - mean[0]) / std[0],
                     (128 / 255.0f - mean[1]) / std[1], (20 / 255.0f - mean[1]) / std[1],
                     (1.0f - mean[2]) / std[2],         (30 / 255.0f - mean[2]) / std[2]};
    for (int i = 0; i < 6; i++)
        CHECK(fabsf(chw[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 1e-7f, "chw[%d] %g want %g", i,
              chw[i], want[i]);
}

/* ---------------- damaged input ---------------- */

static void expect_data_error(md_status s, const char *what, const char *op) {
    CHECK(s == MD_ERR_DATA, "%s on %s: got %s, want MD_ERR_DATA", op, what, md_status_name(s));
    CHECK(strstr(md_error_message(), what) != NULL, "%s on %s: message does not name it: %s", op,
          what, md_error_message());
}

static void try_all(md_jpeg_decoder *d, const uint8_t *b, size_t n, const char *what,
                    int must_fail) {
    uint8_t   out[32 * 24 * 3];
    uint8_t  *full = NULL;
    int       w, h;
    md_crop   c = {0, 0, 40, 30};
    md_status s1 = md_jpeg_decode_crop(d, b, n, c, 32, 24, 0, out, what);
    if (must_fail) expect_data_error(s1, what, "decode_crop");
    md_status s2 = md_jpeg_decode_full(d, b, n, &full, &w, &h, what);
    if (must_fail) expect_data_error(s2, what, "decode_full");
    CHECK(s2 == MD_OK || full == NULL, "%s: failed decode left a buffer", what);
    free(full);
    md_status s3 = md_jpeg_info(b, n, &w, &h, what);
    if (s3 != MD_OK) expect_data_error(s3, what, "info");
}

static void test_damaged(md_jpeg_decoder *d) {
    uint8_t *rgb = synthetic(64, 48, 5);
    blob     good = compress(rgb, 64, 48, SUB_420, 0, 90);
    blob     prog = compress(rgb, 64, 48, SUB_420, 1, 90);
    char     what[64];
    /* Truncated at many points, the header included. */
    size_t cuts[] = {1, 2, 3, 20, 100, good.n / 3, good.n / 2, good.n - 10, good.n - 2, good.n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(what, sizeof what, "truncated-%zu-of-%zu.jpg", cuts[i], good.n);
        try_all(d, good.bytes, cuts[i], what, 1);
        snprintf(what, sizeof what, "truncated-progressive-%zu.jpg", cuts[i]);
        try_all(d, prog.bytes, cuts[i] < prog.n ? cuts[i] : prog.n - 1, what, 1);
    }
    try_all(d, good.bytes, 0, "empty.jpg", 1);
    uint8_t zeros[4096] = {0};
    try_all(d, zeros, sizeof zeros, "zeros.jpg", 1);
    md_rng r;
    md_rng_seed(&r, 11, 0);
    uint8_t noise[4096];
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (uint8_t)md_rng_u32(&r);
    try_all(d, noise, sizeof noise, "random.jpg", 1);
    /* Random bytes after a valid header: fails or decodes, never crashes. */
    uint8_t *mangled = malloc(good.n);
    for (int t = 0; t < 40; t++) {
        memcpy(mangled, good.bytes, good.n);
        for (size_t i = good.n / 3; i < good.n - 2; i++)
            if ((md_rng_u32(&r) & 7) == 0) mangled[i] = (uint8_t)md_rng_u32(&r);
        snprintf(what, sizeof what, "mangled-%d.jpg", t);
        try_all(d, mangled, good.n, what, 0);
    }
    free(mangled);
    blob cmyk = compress(rgb, 64, 48, SUB_CMYK, 0, 90);
    try_all(d, cmyk.bytes, cmyk.n, "cmyk.jpg", 1);
    CHECK(strstr(md_error_message(), "CMYK") != NULL, "CMYK message: %s", md_error_message());
    /* A scan bomb: valid, but far more progressive scans than any real file. */
    blob bomb = compress_many_scans(rgb, 64, 48);
    try_all(d, bomb.bytes, bomb.n, "scans.jpg", 1);
    CHECK(strstr(md_error_message(), "scans") != NULL, "scan limit message: %s",
          md_error_message());
    free(bomb.bytes);
    /* Crops outside the image and bad output sizes are argument errors. */
    uint8_t out[8 * 8 * 3];
    CHECK(md_jpeg_decode_crop(d, good.bytes, good.n, (md_crop){60, 0, 5, 5}, 8, 8, 0, out,
                              "g.jpg") == MD_ERR_ARG,
          "a crop past the right edge was accepted");
    CHECK(strstr(md_error_message(), "g.jpg") != NULL, "crop message: %s", md_error_message());
    CHECK(md_jpeg_decode_crop(d, good.bytes, good.n, (md_crop){0, 0, 0, 5}, 8, 8, 0, out,
                              "g.jpg") == MD_ERR_ARG,
          "an empty crop was accepted");
    CHECK(md_jpeg_decode_crop(d, good.bytes, good.n, (md_crop){0, 0, 8, 8}, 0, 8, 0, out,
                              "g.jpg") == MD_ERR_ARG,
          "output width 0 was accepted");
    /* After all that the decoder still decodes, to the same pixels. */
    uint8_t          a[16 * 12 * 3], b[16 * 12 * 3];
    md_jpeg_decoder *fresh;
    CHECK_OK(md_jpeg_decoder_create(&fresh));
    CHECK_OK(
        md_jpeg_decode_crop(d, good.bytes, good.n, (md_crop){3, 5, 50, 40}, 16, 12, 0, a, "g"));
    CHECK_OK(
        md_jpeg_decode_crop(fresh, good.bytes, good.n, (md_crop){3, 5, 50, 40}, 16, 12, 0, b, "g"));
    CHECK(memcmp(a, b, sizeof a) == 0, "a decoder that saw errors decodes differently");
    md_jpeg_decoder_destroy(fresh);
    free(cmyk.bytes), free(good.bytes), free(prog.bytes), free(rgb);
}

/* ---------------- command-line helpers for tests/jpeg_pil_check.py ---------------- */

static int write_ppm(const char *path, const uint8_t *rgb, int w, int h) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    fwrite(rgb, 1, (size_t)w * h * 3, f);
    return fclose(f) != 0;
}

static uint8_t *read_ppm(const char *path, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    int maxv;
    if (fscanf(f, "P6 %d %d %d", w, h, &maxv) != 3 || maxv != 255 || fgetc(f) == EOF) {
        fclose(f);
        return NULL;
    }
    uint8_t *p = malloc((size_t)*w * *h * 3);
    size_t   got = fread(p, 1, (size_t)*w * *h * 3, f);
    fclose(f);
    if (got != (size_t)*w * *h * 3) {
        free(p);
        return NULL;
    }
    return p;
}

/* test_jpeg resize IN.ppm x y w h ow oh mirror OUT.ppm
 * test_jpeg decode IN.jpg OUT.ppm
 * test_jpeg crop IN.jpg x y w h ow oh mirror OUT.ppm */
static int tool(int argc, char **argv) {
    int      v[7] = {0};
    uint8_t *out = NULL;
    int      rc = 1;
    if (!strcmp(argv[1], "resize") && argc == 11) {
        for (int i = 0; i < 7; i++)
            v[i] = atoi(argv[3 + i]);
        int      w, h;
        uint8_t *in = read_ppm(argv[2], &w, &h);
        out = malloc((size_t)v[4] * v[5] * 3 + 1);
        if (in && md_resize_rgb(in, w, h, (md_crop){v[0], v[1], v[2], v[3]}, v[4], v[5], v[6],
                                out) == MD_OK)
            rc = write_ppm(argv[10], out, v[4], v[5]);
        free(in);
    } else if ((!strcmp(argv[1], "decode") && argc == 4) ||
               (!strcmp(argv[1], "crop") && argc == 11)) {
        size_t           n;
        uint8_t         *jpg = md_test_read_file(argv[2], &n);
        md_jpeg_decoder *d;
        if (!jpg || md_jpeg_decoder_create(&d) != MD_OK) return 1;
        int w, h;
        if (!strcmp(argv[1], "decode")) {
            if (md_jpeg_decode_full(d, jpg, n, &out, &w, &h, argv[2]) == MD_OK)
                rc = write_ppm(argv[3], out, w, h);
        } else {
            for (int i = 0; i < 7; i++)
                v[i] = atoi(argv[3 + i]);
            out = malloc((size_t)v[4] * v[5] * 3 + 1);
            if (md_jpeg_decode_crop(d, jpg, n, (md_crop){v[0], v[1], v[2], v[3]}, v[4], v[5], v[6],
                                    out, argv[2]) == MD_OK)
                rc = write_ppm(argv[10], out, v[4], v[5]);
        }
        md_jpeg_decoder_destroy(d);
        free(jpg);
    } else {
        fprintf(stderr,
                "usage: test_jpeg [resize IN.ppm x y w h ow oh mirror OUT.ppm | decode IN.jpg "
                "OUT.ppm | crop IN.jpg x y w h ow oh mirror OUT.ppm]\n");
        return 2;
    }
    if (rc) fprintf(stderr, "test_jpeg %s failed: %s\n", argv[1], md_error_message());
    free(out);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1) return tool(argc, argv);
    test_rrc_bounds();
    test_rrc_distribution();
    test_rrc_fallback();
    test_resize_known();
    test_normalize();
    test_normalize_paths();
    md_jpeg_decoder *d = NULL;
    CHECK_OK(md_jpeg_decoder_create(&d));
    if (d) {
        test_region_decode(d);
        test_damaged(d);
    }
    md_jpeg_decoder_destroy(d);
    return md_test_finish("test_jpeg");
}
