/* The stored images: baseline JPEG (SOF0, what every decoder reads and what
 * the ImageNet source's region decode expects), YCbCr 4:2:0, the given
 * quality, Huffman tables optimised per image (smaller files, still baseline),
 * a JFIF header and nothing else: no EXIF, ICC or comments. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>

#include "prep.h"

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf               jump;
    char                  msg[JMSG_LENGTH_MAX];
} errors;

typedef struct {
    struct jpeg_compress_struct ci;
    errors                      err;
    unsigned char              *out;
    unsigned long               size;
} encoder;

static void on_error(j_common_ptr c) {
    errors *e = (errors *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
}

const char *prep_encoder_name(void) {
    static char name[48];
    snprintf(name, sizeof name, "libjpeg-turbo %d.%d.%d", LIBJPEG_TURBO_VERSION_NUMBER / 1000000,
             LIBJPEG_TURBO_VERSION_NUMBER / 1000 % 1000, LIBJPEG_TURBO_VERSION_NUMBER % 1000);
    return name;
}

md_status prep_encode_jpeg(const uint8_t *rgb, uint32_t w, uint32_t h, int quality, uint8_t **out,
                           size_t *size) {
    *out = NULL, *size = 0;
    encoder *e = calloc(1, sizeof *e);
    if (!e) return md_fail(MD_ERR_NOMEM, "JPEG encoder");
    e->ci.err = jpeg_std_error(&e->err.pub);
    e->err.pub.error_exit = on_error;
    if (setjmp(e->err.jump)) {
        /* Only running out of memory can fail on pixels we made ourselves. */
        md_status s = md_fail(MD_ERR_NOMEM, "JPEG encoder (%ux%u): libjpeg: %s", w, h, e->err.msg);
        jpeg_destroy_compress(&e->ci);
        free(e->out);
        free(e);
        return s;
    }
    jpeg_create_compress(&e->ci);
    jpeg_mem_dest(&e->ci, &e->out, &e->size);
    e->ci.image_width = w;
    e->ci.image_height = h;
    e->ci.input_components = 3;
    e->ci.in_color_space = JCS_RGB;
    jpeg_set_defaults(&e->ci);               /* YCbCr, Y 2x2 and chroma 1x1: 4:2:0, JFIF header */
    jpeg_set_quality(&e->ci, quality, TRUE); /* TRUE: 8-bit tables, so SOF0 */
    e->ci.optimize_coding = TRUE;
    e->ci.dct_method = JDCT_ISLOW;
    jpeg_start_compress(&e->ci, TRUE);
    size_t stride = (size_t)w * 3;
    while (e->ci.next_scanline < h) {
        JSAMPROW row = (JSAMPROW)(rgb + stride * e->ci.next_scanline);
        jpeg_write_scanlines(&e->ci, &row, 1);
    }
    jpeg_finish_compress(&e->ci);
    jpeg_destroy_compress(&e->ci);
    *out = e->out, *size = e->size;
    free(e);
    return MD_OK;
}
