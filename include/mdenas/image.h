/* RGB images in memory: a crop box and the PIL-style resize that the JPEG
 * region decode (src/data/jpeg.c) approximates and imagenet_prep stores with. */
#ifndef MDENAS_IMAGE_H
#define MDENAS_IMAGE_H

#include <stdint.h>

#include "mdenas/error.h"

typedef struct {
    int x, y, w, h; /* in source pixels, inside the image */
} md_crop;

/* The same PIL-style resize on an RGB buffer already in memory: src (sw x sh,
 * HWC uint8) region c resized to out_w x out_h (mirrored if mirror). The
 * reference md_jpeg_decode_crop (src/data/jpeg.h) approximates. */
md_status md_resize_rgb(const uint8_t *src, int sw, int sh, md_crop c, int out_w, int out_h,
                        int mirror, uint8_t *rgb);

#endif
