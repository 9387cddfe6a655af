/* JPEG region decode and the ImageNet crop policy (private to src/data; the
 * ImageNet source builds on it).
 *
 * A training image is a JPEG from a shard. The source picks a crop box with
 * md_rrc_crop (training) or md_center_crop (validation) and asks
 * md_jpeg_decode_crop for that box resized to the network's input size. The
 * decoder never decodes more than it must: it uses libjpeg-turbo's DCT scaling
 * (M/8 with the smallest M of 1, 2, 4, 8 whose scaled crop still covers the
 * output in both directions; libjpeg-turbo's other scales are slower than 8/8),
 * skips the rows above the crop, stops after its last row, and crops the
 * columns to the iMCU columns the box touches. Images with chroma subsampled in
 * one direction only (4:2:2, 4:4:0) are not reduced below 4/8: libjpeg-turbo's
 * smaller scales blur their chroma badly. The resize is PIL's
 * Image.resize(BILINEAR): a separable triangle filter whose support widens with
 * the reduction factor (antialiasing), mapped in full-resolution source
 * coordinates, so the result approximates resizing the full-resolution crop.
 * Tolerances against that reference are stated in tests/test_jpeg.c.
 *
 * Every failure is MD_ERR_DATA (damaged or unsupported image: truncated,
 * corrupt, CMYK, a decoder warning, over 1000 progressive scans or 1 GiB of
 * libjpeg memory) or MD_ERR_ARG/MD_ERR_NOMEM, with a message that names the
 * image (`what`). */
#ifndef MDENAS_DATA_JPEG_H
#define MDENAS_DATA_JPEG_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/error.h"
#include "mdenas/image.h" /* md_crop, md_resize_rgb */
#include "mdenas/rng.h"


typedef struct {
    double scale_lo, scale_hi; /* area fraction, default 0.08, 1 */
    double ratio_lo, ratio_hi; /* aspect ratio w/h, default 3/4, 4/3 */
} md_rrc_params;

/* torchvision's RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3)). */
#define MD_RRC_DEFAULT ((md_rrc_params){0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0})

/* torchvision RandomResizedCrop.get_params: up to 10 tries of target area uniform in [lo,hi]*W*H
 * and aspect ratio log-uniform in [ratio_lo, ratio_hi]; w = round(sqrt(area*ratio)), h =
 * round(sqrt(area/ratio)); accept if 0<w<=W and 0<h<=H, position uniform; else the fallback centre
 * crop (ratio clamped). */
md_crop md_rrc_crop(int w, int h, const md_rrc_params *p, md_rng *r);
/* Validation: the centre size x size window (clamped to the image). */
md_crop md_center_crop(int w, int h, int size);

/* The image's width and height from its header (no decode). */
md_status md_jpeg_info(const uint8_t *jpg, size_t n, int *w, int *h, const char *what);

/* One per decode thread: libjpeg state + scratch. */
typedef struct md_jpeg_decoder md_jpeg_decoder;

md_status md_jpeg_decoder_create(md_jpeg_decoder **out);
void      md_jpeg_decoder_destroy(md_jpeg_decoder *d);

/* Decode crop c of the JPEG, resized to out_w x out_h, mirrored if mirror, into rgb (HWC uint8,
 * out_h*out_w*3). Decodes at the smallest DCT scale M/8 (M = 1, 2, 4 or 8, see above) whose scaled
 * crop still covers the output size in both directions, and only the crop's rows
 * (jpeg_skip_scanlines) and columns (jpeg_crop_scanline). Resize: bilinear with antialiasing as
 * PIL's Image.resize(BILINEAR) does when reducing (triangle filter, support scaled by the factor),
 * separable. `what` names the image in errors. The rows below the crop are never decoded, so a
 * file that does not end with the end-of-image marker (as every JPEG libjpeg writes,
 * imagenet_prep's included, does) is refused as truncated. */
md_status md_jpeg_decode_crop(md_jpeg_decoder *d, const uint8_t *jpg, size_t n, md_crop c,
                              int out_w, int out_h, int mirror, uint8_t *rgb, const char *what);

/* The whole image at full resolution (no DCT scaling) into a buffer the caller
 * frees (HWC RGB uint8, *w x *h). For tests and tools. */
md_status md_jpeg_decode_full(md_jpeg_decoder *d, const uint8_t *jpg, size_t n, uint8_t **rgb,
                              int *w, int *h, const char *what);


/* HWC uint8 RGB to CHW float, (x/255 - mean[c]) / std[c] (ToTensor + Normalize). */
void md_rgb_to_chw_normalized(const uint8_t *rgb, int w, int h, const float mean[3],
                              const float std[3], float *chw);

#endif
