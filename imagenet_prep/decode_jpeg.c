/* JPEG sources with libjpeg-turbo. libjpeg's errors come back here by longjmp
 * (its default exits the process); its warnings (premature end, corrupt data)
 * are counted and make the file damaged unless --accept-warnings. A large
 * image is decoded at DCT scale M/8 (M = 1, 2, 4, 8: the smallest that keeps
 * at least twice the stored size, as Pillow's reducing_gap=2 does), so memory
 * follows the stored size, not the source's. CMYK and YCCK come out of libjpeg
 * as CMYK and are turned into RGB here (Adobe files store inverted CMYK). */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
/* jpeglib.h first: jerror.h builds on its types */
#include <jerror.h>

#include "mdenas/shard.h"
#include "prep.h"

/* A progressive file can hold any number of scans, each a pass over the whole
 * image; real ones have about ten. */
#define MAX_SCANS 1000

typedef struct {
    struct jpeg_error_mgr    pub;
    struct jpeg_progress_mgr progress;
    jmp_buf                  jump;
    int                      code; /* libjpeg's message code of the error, -1: too many scans */
    char                     msg[JMSG_LENGTH_MAX];
    int                      warnings, saw_eof;
    char                     warning[JMSG_LENGTH_MAX]; /* the first one */
} errors;

/* The decoder state lives on the heap: nothing the longjmp skips over is a local. */
typedef struct {
    struct jpeg_decompress_struct ci;
    errors                        err;
    uint8_t                      *pixels;
} decoder;

static void on_error(j_common_ptr c) {
    errors *e = (errors *)c->err;
    e->code = c->err->msg_code;
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
}

static void on_message(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace output */
    errors *e = (errors *)c->err;
    c->err->num_warnings++;
    if (c->err->msg_code == JWRN_JPEG_EOF) e->saw_eof = 1;
    if (e->warnings++ == 0) c->err->format_message(c, e->warning);
}

static void on_output(j_common_ptr c) {
    (void)c; /* nothing goes to stderr */
}

static void on_progress(j_common_ptr c) {
    j_decompress_ptr d = (j_decompress_ptr)c;
    errors          *e = (errors *)c->err;
    if (d->input_scan_number > MAX_SCANS) {
        e->code = -1;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

static void reject_error(prep_result *r, const errors *e) {
    switch (e->code) {
    case JERR_SOF_UNSUPPORTED:
    case JERR_BAD_PRECISION:
    case JERR_CONVERSION_NOTIMPL:
    case JERR_NOT_COMPILED:
    case JERR_ARITH_NOTIMPL:
        prep_reject(r, "unsupported", "libjpeg: %s", e->msg);
        return;
    case JERR_NO_BACKING_STORE:
    case JERR_OUT_OF_MEMORY:
    case JERR_IMAGE_TOO_BIG:
    case JERR_WIDTH_OVERFLOW:
        prep_reject(r, "too_large", "libjpeg: %s (the decoder's memory limit)", e->msg);
        return;
    case JERR_INPUT_EOF:
    case JERR_INPUT_EMPTY:
        prep_reject(r, "truncated", "libjpeg: %s", e->msg);
        return;
    default:
        break;
    }
    if (e->saw_eof)
        prep_reject(r, "truncated", "libjpeg: %s; %s", e->warning, e->msg);
    else
        prep_reject(r, "corrupt", "libjpeg: %s", e->msg);
}

/* "4:2:0" and friends, from the sampling factors of Y and Cb. */
static const char *subsampling(const struct jpeg_decompress_struct *ci) {
    if (ci->num_components < 3) return "";
    int h = ci->comp_info[0].h_samp_factor / ci->comp_info[1].h_samp_factor;
    int v = ci->comp_info[0].v_samp_factor / ci->comp_info[1].v_samp_factor;
    if (ci->comp_info[0].h_samp_factor % ci->comp_info[1].h_samp_factor ||
        ci->comp_info[0].v_samp_factor % ci->comp_info[1].v_samp_factor)
        return "-other";
    if (h == 1 && v == 1) return "-444";
    if (h == 2 && v == 1) return "-422";
    if (h == 2 && v == 2) return "-420";
    if (h == 1 && v == 2) return "-440";
    if (h == 4 && v == 1) return "-411";
    return "-other";
}

/* Fill format and colour from the header; 0 if libjpeg cannot give RGB or CMYK. */
static int describe(const struct jpeg_decompress_struct *ci, prep_result *r) {
    r->width = ci->image_width, r->height = ci->image_height;
    snprintf(r->format, sizeof r->format, "jpeg%s%s", ci->progressive_mode ? "-progressive" : "",
             ci->arith_code ? "-arithmetic" : "");
    const char *name = NULL;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
        name = "gray";
        break;
    case JCS_YCbCr:
        name = "ycbcr";
        break;
    case JCS_RGB:
        name = "rgb";
        break;
    case JCS_CMYK:
        name = "cmyk";
        break;
    case JCS_YCCK:
        name = "ycck";
        break;
    default:
        break;
    }
    if (!name) {
        snprintf(r->colour, sizeof r->colour, "unknown-%d", ci->num_components);
        prep_reject(r, "unsupported", "a JPEG of %d components in no known colour space",
                    ci->num_components);
        return 0;
    }
    snprintf(r->colour, sizeof r->colour, "%s%s", name,
             ci->jpeg_color_space == JCS_YCbCr || ci->jpeg_color_space == JCS_YCCK ? subsampling(ci)
                                                                                   : "");
    return 1;
}

/* The smallest M in {1, 2, 4, 8} whose scaled image keeps twice the stored size. */
static unsigned pick_scale(uint32_t w, uint32_t h, uint32_t out_w, uint32_t out_h) {
    for (unsigned m = 1; m < 8; m *= 2)
        if ((uint64_t)w * m >= 16ull * out_w && (uint64_t)h * m >= 16ull * out_h) return m;
    return 8;
}

/* CMYK (4 bytes a pixel) to RGB (3) in place. Adobe files (and libjpeg's YCCK
 * output) store 255 - ink, so there R = C * K / 255 on the stored values. */
static void cmyk_to_rgb(uint8_t *p, size_t pixels, int inverted) {
    for (size_t i = 0; i < pixels; i++) {
        unsigned c = p[4 * i], m = p[4 * i + 1], y = p[4 * i + 2], k = p[4 * i + 3];
        if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        p[3 * i] = (uint8_t)((c * k + 127) / 255);
        p[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
        p[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
    }
}

static void finish(decoder *d) {
    jpeg_destroy_decompress(&d->ci);
    free(d->pixels);
    free(d);
}

md_status prep_decode_jpeg(const uint8_t *buf, size_t n, const prep_options *o, int split,
                           prep_geometry_fn geometry, prep_result *r, uint8_t **rgb, uint32_t *w,
                           uint32_t *h) {
    *rgb = NULL, *w = 0, *h = 0;
    decoder *d = calloc(1, sizeof *d);
    if (!d) return md_fail(MD_ERR_NOMEM, "JPEG decoder");
    d->ci.err = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit = on_error;
    d->err.pub.emit_message = on_message;
    d->err.pub.output_message = on_output;
    if (setjmp(d->err.jump)) {
        reject_error(r, &d->err);
        finish(d);
        return MD_OK;
    }
    jpeg_create_decompress(&d->ci);
    /* Whole-image buffers (progressive and multi-scan files) stay within what
     * --max-pixels allows: 4:4:4 coefficients are 6 bytes a pixel. */
    d->ci.mem->max_memory_to_use = (long)(o->max_pixels * 8 + (64l << 20));
    d->err.progress.progress_monitor = on_progress;
    d->ci.progress = &d->err.progress;
    jpeg_mem_src(&d->ci, buf, (unsigned long)n);
    jpeg_read_header(&d->ci, TRUE);
    if (!describe(&d->ci, r) || !geometry(o, split, r)) {
        finish(d);
        return MD_OK;
    }
    int cmyk = d->ci.jpeg_color_space == JCS_CMYK || d->ci.jpeg_color_space == JCS_YCCK;
    if (r->out_w < r->width || r->out_h < r->height) {
        d->ci.scale_num = pick_scale(r->width, r->height, r->out_w, r->out_h);
        d->ci.scale_denom = 8;
    }
    d->ci.dct_method = JDCT_ISLOW;
    d->ci.out_color_space = cmyk ? JCS_CMYK : JCS_RGB; /* libjpeg-turbo expands grayscale */
    jpeg_start_decompress(&d->ci);
    size_t stride = (size_t)d->ci.output_width * (size_t)d->ci.output_components;
    d->pixels = malloc(stride * d->ci.output_height);
    if (!d->pixels) {
        md_status s = md_fail(MD_ERR_NOMEM, "JPEG decoder: %ux%u pixels", d->ci.output_width,
                              d->ci.output_height);
        finish(d);
        return s;
    }
    while (d->ci.output_scanline < d->ci.output_height) {
        JSAMPROW row = d->pixels + stride * d->ci.output_scanline;
        if (jpeg_read_scanlines(&d->ci, &row, 1) != 1) {
            prep_reject(r, "corrupt", "libjpeg returned no rows at row %u", d->ci.output_scanline);
            finish(d);
            return MD_OK;
        }
    }
    jpeg_finish_decompress(&d->ci);
    if (d->err.warnings && !o->accept_warnings) {
        prep_reject(r, d->err.saw_eof ? "truncated" : "corrupt", "libjpeg: %s%s", d->err.warning,
                    d->err.warnings > 1 ? " (and more warnings)" : "");
        finish(d);
        return MD_OK;
    }
    if (d->err.warnings) snprintf(r->reason, sizeof r->reason, "%s", d->err.warning);
    if (cmyk) {
        cmyk_to_rgb(d->pixels, (size_t)d->ci.output_width * d->ci.output_height,
                    d->ci.saw_Adobe_marker);
        r->flags |= MD_SHARD_FROM_CMYK;
    }
    if (d->ci.jpeg_color_space == JCS_GRAYSCALE) r->flags |= MD_SHARD_FROM_GRAY;
    *rgb = d->pixels, *w = d->ci.output_width, *h = d->ci.output_height;
    d->pixels = NULL;
    finish(d);
    return MD_OK;
}
