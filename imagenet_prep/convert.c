/* One source file: read it (never blocking on a FIFO, never following it into a
 * device), tell its format by its bytes (not its name), decode, resize, encode. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdenas/image.h"
#include "mdenas/shard.h"
#include "prep.h"

void prep_reject(prep_result *r, const char *code, const char *fmt, ...) {
    char    detail[224];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    r->accepted = 0;
    snprintf(r->reason, sizeof r->reason, "%s: %s", code, detail);
}

void prep_result_free(prep_result *r) {
    free(r->jpeg);
    r->jpeg = NULL;
}

static const char *file_kind(mode_t m) {
    return S_ISDIR(m)    ? "a folder"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISSOCK(m) ? "a socket"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
                         : "not a regular file";
}

/* The whole file into *buf; a problem with it is a reject (MD_OK), no memory fails. */
static md_status read_source(const char *path, prep_result *r, uint8_t **buf, size_t *len) {
    *buf = NULL, *len = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            prep_reject(r, "not_a_file", "a symbolic link loop");
        else if (e == ENOENT)
            prep_reject(r, "missing", "gone, or a dangling symbolic link");
        else if (e == ENXIO)
            prep_reject(r, "not_a_file", "a socket or device without a reader");
        else
            prep_reject(r, "unreadable", "%s", strerror(e));
        return MD_OK;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        prep_reject(r, "unreadable", "%s", strerror(errno));
        close(fd);
        return MD_OK;
    }
    if (!S_ISREG(st.st_mode)) {
        prep_reject(r, "not_a_file", "%s", file_kind(st.st_mode));
        close(fd);
        return MD_OK;
    }
    if (st.st_size == 0) {
        prep_reject(r, "empty", "0 bytes");
        close(fd);
        return MD_OK;
    }
    if ((unsigned long long)st.st_size > PREP_MAX_FILE_BYTES) {
        prep_reject(r, "too_large", "%lld bytes, over the %llu-byte limit", (long long)st.st_size,
                    PREP_MAX_FILE_BYTES);
        close(fd);
        return MD_OK;
    }
    size_t   want = (size_t)st.st_size;
    uint8_t *b = malloc(want);
    if (!b) {
        close(fd);
        return md_fail(MD_ERR_NOMEM, "reading '%s': %zu bytes", path, want);
    }
    size_t got = 0;
    while (got < want) {
        ssize_t k = read(fd, b + got, want - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            prep_reject(r, "unreadable", "read failed after %zu bytes: %s", got, strerror(errno));
            free(b);
            close(fd);
            return MD_OK;
        }
        if (k == 0) break; /* shrank while we read: what is there is what we judge */
        got += (size_t)k;
    }
    close(fd);
    if (got == 0) {
        free(b);
        prep_reject(r, "empty", "0 bytes");
        return MD_OK;
    }
    *buf = b, *len = got;
    return MD_OK;
}

typedef enum { FMT_JPEG, FMT_PNG, FMT_OTHER, FMT_UNKNOWN } sniffed;

static sniffed sniff(const uint8_t *b, size_t n, prep_result *r) {
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const char          *other = NULL;
    if (n >= 2 && b[0] == 0xFF && b[1] == 0xD8 && (n == 2 || b[2] == 0xFF)) {
        strcpy(r->format, "jpeg");
        return FMT_JPEG;
    }
    if (n >= 8 && !memcmp(b, png, 8)) {
        strcpy(r->format, "png");
        return FMT_PNG;
    }
    if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6)))
        other = "gif";
    else if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        other = "webp";
    else if (n >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4)))
        other = "tiff";
    else if (n >= 2 && b[0] == 'B' && b[1] == 'M')
        other = "bmp";
    else if (n >= 12 && !memcmp(b + 4, "ftyp", 4))
        other = "heif/avif/mp4";
    else if (n >= 12 && !memcmp(b, "\0\0\0\x0cjP  ", 8))
        other = "jpeg2000";
    if (other) {
        snprintf(r->format, sizeof r->format, "%s", other);
        prep_reject(r, "unsupported", "a %s image (only JPEG and PNG are converted)", other);
        return FMT_OTHER;
    }
    strcpy(r->format, "unknown");
    prep_reject(r, "not_an_image", "%zu bytes, neither JPEG nor PNG (starts %02x %02x %02x %02x)",
                n, n > 0 ? b[0] : 0, n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, n > 3 ? b[3] : 0);
    return FMT_UNKNOWN;
}

/* Round(long * side / short) without overflow, at least 1. */
static uint32_t scaled_long(uint32_t lng, uint32_t shrt, uint32_t side) {
    uint64_t v = ((uint64_t)lng * side * 2 + shrt) / (2ull * shrt);
    return v < 1 ? 1 : (uint32_t)(v > 0xFFFFFFFFull ? 0xFFFFFFFFull : v);
}

/* The stored size of r->width x r->height, or a reject (returns 0). Train and
 * search_val: short side at most --short-side; val: exactly --val-short-side. */
static int geometry(const prep_options *o, int split, prep_result *r) {
    uint32_t w = r->width, h = r->height;
    uint32_t shrt = w < h ? w : h, lng = w < h ? h : w;
    if ((long long)w * h > o->max_pixels) {
        prep_reject(r, "too_large", "%ux%u is %.1f megapixels, over --max-pixels %lld", w, h,
                    (double)w * h / 1e6, o->max_pixels);
        return 0;
    }
    if (shrt < (uint32_t)o->min_side) {
        prep_reject(r, "too_small", "%ux%u has a side under --min-side %d", w, h, o->min_side);
        return 0;
    }
    if ((double)lng > o->max_aspect * shrt) {
        prep_reject(r, "bad_aspect",
                    "%ux%u: long side %.1f times the short one, over "
                    "--max-aspect %g",
                    w, h, (double)lng / shrt, o->max_aspect);
        return 0;
    }
    uint32_t side = (uint32_t)(split == SPLIT_VAL ? o->val_short_side : o->short_side);
    int      keep = split != SPLIT_VAL && shrt <= side; /* stored at its own size */
    uint32_t nl = keep ? lng : scaled_long(lng, shrt, side);
    if (nl > 8192) {
        prep_reject(r, "bad_aspect", "%ux%u would be stored with a long side of %u, over 8192", w,
                    h, nl);
        return 0;
    }
    if (keep) {
        r->out_w = w, r->out_h = h;
        return 1;
    }
    r->out_w = w < h ? side : nl;
    r->out_h = w < h ? nl : side;
    return 1;
}

/* The conversion kinds of an accepted image, for sources.tsv ("cmyk+gray", "-"). */
static void name_kinds(prep_result *r, const char *warning) {
    char k[64] = "";
    if (r->flags & MD_SHARD_FROM_CMYK)
        strcat(k, !strncmp(r->colour, "ycck", 4) ? "+ycck" : "+cmyk");
    if (r->flags & MD_SHARD_FROM_PNG) strcat(k, "+png");
    if (r->flags & MD_SHARD_FROM_GRAY) strcat(k, "+gray");
    if (warning && *warning) {
        strcat(k, "+warning");
        snprintf(r->reason, sizeof r->reason, "%s: %.180s", k + 1, warning);
        return;
    }
    snprintf(r->reason, sizeof r->reason, "%s", k[0] ? k + 1 : "-");
}

md_status prep_convert_file(const char *disk_path, int split, const prep_options *o,
                            prep_result *r) {
    memset(r, 0, sizeof *r);
    strcpy(r->format, "-");
    strcpy(r->colour, "-");
    uint8_t *buf;
    size_t   len;
    MD_TRY(read_source(disk_path, r, &buf, &len));
    if (!buf) return MD_OK;
    sniffed   kind = sniff(buf, len, r);
    uint8_t  *rgb = NULL;
    uint32_t  w = 0, h = 0;
    md_status s = MD_OK;
    if (kind == FMT_JPEG || kind == FMT_PNG) r->reason[0] = '\0';
    if (kind == FMT_JPEG)
        s = prep_decode_jpeg(buf, len, o, split, geometry, r, &rgb, &w, &h);
    else if (kind == FMT_PNG)
        s = prep_decode_png(buf, len, o, split, geometry, r, &rgb, &w, &h);
    free(buf);
    if (s != MD_OK || !rgb) {
        free(rgb);
        return s;
    }
    /* The decoders left any accepted warning in r->reason. */
    char warning[256];
    snprintf(warning, sizeof warning, "%s", r->reason);
    uint8_t *out = rgb;
    if (w != r->out_w || h != r->out_h) {
        out = malloc((size_t)r->out_w * r->out_h * 3);
        if (!out)
            s = md_fail(MD_ERR_NOMEM, "'%s': %ux%u pixels", disk_path, r->out_w, r->out_h);
        else
            s = md_resize_rgb(rgb, (int)w, (int)h, (md_crop){0, 0, (int)w, (int)h}, (int)r->out_w,
                              (int)r->out_h, 0, out);
        free(rgb);
    }
    if (s == MD_OK)
        s = prep_encode_jpeg(out, r->out_w, r->out_h, o->quality, &r->jpeg, &r->jpeg_size);
    free(out);
    if (s != MD_OK) return s;
    r->accepted = 1;
    r->flags |= MD_SHARD_REENCODED;
    if (r->out_w != r->width || r->out_h != r->height) r->flags |= MD_SHARD_RESIZED;
    name_kinds(r, warning);
    return MD_OK;
}
