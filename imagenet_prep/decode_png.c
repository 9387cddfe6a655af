/* PNG sources (ImageNet has a PNG named .JPEG) with libspng: palette, gray,
 * 16-bit and interlaced images all come out as 8-bit RGB; alpha is dropped
 * (as Pillow's convert("RGB") does). A PNG has no reduced decode, so its
 * memory is bounded by --max-pixels, checked on the header. The file must be
 * whole up to IEND: a cut-off one is truncated even when its pixels decode. */
#include <stdlib.h>
#include <string.h>

#include <spng.h>

#include "mdenas/shard.h"
#include "prep.h"

static const char *colour_name(uint8_t t) {
    switch (t) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
        return "gray";
    case SPNG_COLOR_TYPE_TRUECOLOR:
        return "rgb";
    case SPNG_COLOR_TYPE_INDEXED:
        return "palette";
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
        return "gray-alpha";
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
        return "rgba";
    default:
        return "unknown";
    }
}

static void reject_spng(prep_result *r, int err, const char *when) {
    int cut = err == SPNG_IO_EOF || err == SPNG_EOF || err == SPNG_EIDAT_TOO_SHORT ||
              err == SPNG_EIDAT_STREAM;
    prep_reject(r, cut ? "truncated" : "corrupt", "libspng %s: %s", when, spng_strerror(err));
}

md_status prep_decode_png(const uint8_t *buf, size_t n, const prep_options *o, int split,
                          prep_geometry_fn geometry, prep_result *r, uint8_t **rgb, uint32_t *w,
                          uint32_t *h) {
    *rgb = NULL, *w = 0, *h = 0;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return md_fail(MD_ERR_NOMEM, "PNG decoder");
    /* Text and other side chunks: at most 16 MiB each, 64 MiB in all. */
    spng_set_chunk_limits(ctx, 16u << 20, 64u << 20);
    spng_set_png_buffer(ctx, buf, n);
    struct spng_ihdr ihdr;
    int              err = spng_get_ihdr(ctx, &ihdr);
    if (err) {
        reject_spng(r, err, "header");
        spng_ctx_free(ctx);
        return MD_OK;
    }
    r->width = ihdr.width, r->height = ihdr.height;
    snprintf(r->colour, sizeof r->colour, "%s%s", colour_name(ihdr.color_type),
             ihdr.bit_depth == 16 ? "-16bit" : "");
    if (ihdr.interlace_method) strcpy(r->format, "png-interlaced");
    if (!geometry(o, split, r)) {
        spng_ctx_free(ctx);
        return MD_OK;
    }
    size_t    size = 0;
    uint8_t  *px = NULL;
    md_status s = MD_OK;
    err = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &size);
    if (!err && !(px = malloc(size)))
        s = md_fail(MD_ERR_NOMEM, "PNG decoder: %ux%u pixels", ihdr.width, ihdr.height);
    if (!err && px) err = spng_decode_image(ctx, px, size, SPNG_FMT_RGB8, 0);
    if (!err && px) err = spng_decode_chunks(ctx); /* the rest of the file, to IEND */
    if (err && s == MD_OK) {
        reject_spng(r, err, "decode");
        free(px);
        px = NULL;
    }
    spng_ctx_free(ctx);
    if (!px) return s;
    r->flags |= MD_SHARD_FROM_PNG;
    if (ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE ||
        ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA)
        r->flags |= MD_SHARD_FROM_GRAY;
    *rgb = px, *w = ihdr.width, *h = ihdr.height;
    return MD_OK;
}
