/* The stored images: baseline JPEG (SOF0, what every decoder reads and what
 * the ImageNet source's region decode expects), YCbCr 4:2:0, the given
 * quality, Huffman tables optimised per image (smaller files, still baseline),
 * a JFIF header and nothing else: no EXIF, ICC or comments. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>
#include <jerror.h>

#include "prep.h"

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf               jump;
    char                  msg[JMSG_LENGTH_MAX];
} errors;

/* Our own destination: one buffer that we grow and always know, so that an
 * error part way frees exactly what exists (jpeg_mem_dest frees and replaces
 * the buffer it handed back when it grows it, behind the caller's pointer). */
typedef struct {
    struct jpeg_destination_mgr pub;
    unsigned char              *buf;
    size_t                      cap;
} dest;

typedef struct {
    struct jpeg_compress_struct ci;
    errors                      err;
    dest                        dst;
} encoder;

static void dest_init(j_compress_ptr c) {
    dest *d = (dest *)c->dest;
    d->pub.next_output_byte = d->buf;
    d->pub.free_in_buffer = d->cap;
}

static boolean dest_grow(j_compress_ptr c) {
    dest          *d = (dest *)c->dest;
    size_t         cap = d->cap * 2;
    unsigned char *b = realloc(d->buf, cap);
    if (!b) ERREXIT1(c, JERR_OUT_OF_MEMORY, 0);
    d->pub.next_output_byte = b + d->cap; /* libjpeg asks only when the buffer is full */
    d->pub.free_in_buffer = cap - d->cap;
    d->buf = b, d->cap = cap;
    return TRUE;
}

static void dest_term(j_compress_ptr c) { (void)c; }

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
    e->dst.cap = (size_t)w * h / 4 + 65536; /* about the size at quality 90; grown if not */
    e->dst.buf = malloc(e->dst.cap);
    if (!e->dst.buf) {
        free(e);
        return md_fail(MD_ERR_NOMEM, "JPEG encoder (%ux%u): output buffer", w, h);
    }
    if (setjmp(e->err.jump)) {
        /* Out of memory, or an image libjpeg cannot hold (the callers keep
         * sides at most 8192, well inside its 65500). */
        int       oom = e->err.pub.msg_code == JERR_OUT_OF_MEMORY;
        md_status s = md_fail(oom ? MD_ERR_NOMEM : MD_ERR_DATA, "JPEG encoder (%ux%u): libjpeg: %s",
                              w, h, e->err.msg);
        jpeg_destroy_compress(&e->ci);
        free(e->dst.buf);
        free(e);
        return s;
    }
    jpeg_create_compress(&e->ci);
    e->dst.pub.init_destination = dest_init;
    e->dst.pub.empty_output_buffer = dest_grow;
    e->dst.pub.term_destination = dest_term;
    e->ci.dest = &e->dst.pub;
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
    *out = e->dst.buf, *size = e->dst.cap - e->dst.pub.free_in_buffer;
    jpeg_destroy_compress(&e->ci);
    free(e);
    return MD_OK;
}
