/* libFuzzer harness for the JPEG region decode (src/data/jpeg.c). Input: 6 bytes of parameters (crop
 * x, y, w, h as fractions of the image /255, output side 1..64, flags: bit 0
 * mirror), then the JPEG. Any input must give MD_OK or MD_ERR_DATA with a
 * message naming the image; never a crash, a sanitizer report or a leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/jpeg.h"

static void check(md_status s, const char *op) {
    if (s == MD_OK) return;
    if (s != MD_ERR_DATA || !strstr(md_error_message(), "fuzz.jpg")) {
        fprintf(stderr, "fuzz_jpeg: %s gave %s: %s\n", op, md_status_name(s), md_error_message());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static md_jpeg_decoder *d;
    if (!d && md_jpeg_decoder_create(&d) != MD_OK) abort();
    if (size < 6) return 0;
    const uint8_t *jpg = data + 6;
    size_t         n = size - 6;
    int            w, h;
    md_status      s = md_jpeg_info(jpg, n, &w, &h, "fuzz.jpg");
    check(s, "info");
    if (s != MD_OK) return 0;
    if ((long)w * h > 4L << 20) return 0; /* keep each run small */
    md_crop c;
    c.w = 1 + data[2] * (w - 1) / 255, c.h = 1 + data[3] * (h - 1) / 255;
    c.x = data[0] * (w - c.w) / 255, c.y = data[1] * (h - c.h) / 255;
    int      side = 1 + data[4] % 64;
    uint8_t *rgb = malloc((size_t)side * side * 3);
    check(md_jpeg_decode_crop(d, jpg, n, c, side, side, data[5] & 1, rgb, "fuzz.jpg"), "crop");
    free(rgb);
    uint8_t *full = NULL;
    s = md_jpeg_decode_full(d, jpg, n, &full, &w, &h, "fuzz.jpg");
    check(s, "full");
    free(full);
    return 0;
}
