#include "fixture.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define FX_MAX_BYTES (16L << 20) /* fixtures are kilobytes; anything this large is corrupt */

typedef struct {
    const unsigned char *p;
    size_t               len, pos;
} fx_cursor;

static int cursor_u32(fx_cursor *c, uint32_t *v) {
    if (c->len - c->pos < 4) return 0;
    const unsigned char *b = c->p + c->pos;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    c->pos += 4;
    return 1;
}

static md_status read_file(const char *path, unsigned char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return md_fail(MD_ERR_IO,
                       "fixture %s: cannot open: %s (regenerate with "
                       "/usr/bin/python3 tests/gen_fixtures.py)",
                       path, strerror(errno));
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || size > FX_MAX_BYTES || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return md_fail(MD_ERR_DATA, "fixture %s: cannot size the file or larger than 16 MiB", path);
    }
    unsigned char *data = malloc(size ? (size_t)size : 1);
    if (!data) {
        fclose(f);
        return md_fail(MD_ERR_NOMEM, "fixture %s: no memory for %ld bytes", path, size);
    }
    size_t n = fread(data, 1, (size_t)size, f);
    fclose(f);
    if (n != (size_t)size) {
        free(data);
        return md_fail(MD_ERR_IO, "fixture %s: read %zu of %ld bytes", path, n, size);
    }
    *buf = data;
    *len = n;
    return MD_OK;
}

static md_status parse_record(const md_fixture *fx, fx_cursor *c, int index, md_fx_tensor *t) {
    uint32_t name_len, ndim;
    if (!cursor_u32(c, &name_len) || name_len == 0 || name_len >= MD_FX_NAME_MAX ||
        c->len - c->pos < name_len)
        return md_fail(MD_ERR_DATA, "fixture %s: record %d: truncated or bad name", fx->path,
                       index);
    memcpy(t->name, c->p + c->pos, name_len);
    t->name[name_len] = '\0';
    c->pos += name_len;
    if (!cursor_u32(c, &ndim) || ndim > MD_MAX_DIMS)
        return md_fail(MD_ERR_DATA, "fixture %s: record %s: truncated or ndim > 4", fx->path,
                       t->name);
    t->ndim = (int)ndim;
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint32_t v;
        if (!cursor_u32(c, &v) || v == 0 || v > (1u << 24))
            return md_fail(MD_ERR_DATA, "fixture %s: record %s: truncated or bad dim %d", fx->path,
                           t->name, d);
        t->dim[d] = (int)v;
        t->numel *= v;
    }
    if ((c->len - c->pos) / 4 < t->numel)
        return md_fail(MD_ERR_DATA, "fixture %s: record %s: truncated data (%zu floats)", fx->path,
                       t->name, t->numel);
    t->data = malloc(t->numel * sizeof(float));
    if (!t->data) return md_fail(MD_ERR_NOMEM, "fixture %s: record %s", fx->path, t->name);
    for (size_t i = 0; i < t->numel; i++) {
        uint32_t bits = 0;
        cursor_u32(c, &bits);
        memcpy(&t->data[i], &bits, sizeof bits);
    }
    return MD_OK;
}

static md_status parse(md_fixture *fx, const unsigned char *buf, size_t len) {
    fx_cursor c = {buf, len, 0};
    uint32_t  version, count;
    if (len < 4 || memcmp(buf, "MDFX", 4) != 0)
        return md_fail(MD_ERR_DATA, "fixture %s: not a fixture file (magic)", fx->path);
    c.pos = 4;
    if (!cursor_u32(&c, &version) || version != 1 || !cursor_u32(&c, &count) || count > 100000)
        return md_fail(MD_ERR_DATA, "fixture %s: truncated header or unknown version", fx->path);
    fx->t = calloc(count ? count : 1, sizeof *fx->t);
    if (!fx->t) return md_fail(MD_ERR_NOMEM, "fixture %s: record table", fx->path);
    for (uint32_t i = 0; i < count; i++) {
        MD_TRY(parse_record(fx, &c, (int)i, &fx->t[i]));
        fx->count = (int)i + 1;
    }
    if (c.pos != len)
        return md_fail(MD_ERR_DATA, "fixture %s: %zu trailing bytes", fx->path, len - c.pos);
    return MD_OK;
}

md_status md_fixture_load(md_fixture *fx, const char *dir, const char *file) {
    memset(fx, 0, sizeof *fx);
    int n = snprintf(fx->path, sizeof fx->path, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= sizeof fx->path)
        return md_fail(MD_ERR_ARG, "fixture path too long: %s/%s", dir, file);
    unsigned char *buf = NULL;
    size_t         len = 0;
    MD_TRY(read_file(fx->path, &buf, &len));
    md_status s = parse(fx, buf, len);
    free(buf);
    if (s != MD_OK) md_fixture_free(fx);
    return s;
}

void md_fixture_free(md_fixture *fx) {
    if (fx->t) {
        for (int i = 0; i < fx->count; i++)
            free(fx->t[i].data);
        free(fx->t);
    }
    fx->t = NULL;
    fx->count = 0;
}

const md_fx_tensor *md_fixture_find(const md_fixture *fx, const char *name) {
    for (int i = 0; i < fx->count; i++)
        if (strcmp(fx->t[i].name, name) == 0) return &fx->t[i];
    return NULL;
}

const md_fx_tensor *md_fixture_need(const md_fixture *fx, const char *fmt, ...) {
    char    name[MD_FX_NAME_MAX * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const md_fx_tensor *t = md_fixture_find(fx, name);
    if (!t) {
        fprintf(stderr,
                "fixture %s: no record '%s' (stale fixtures? regenerate with "
                "/usr/bin/python3 tests/gen_fixtures.py)\n",
                fx->path, name);
        exit(2);
    }
    return t;
}

void md_fixture_load_or_exit(md_fixture *fx, const char *dir, const char *file) {
    if (md_fixture_load(fx, dir, file) != MD_OK) {
        fprintf(stderr, "%s\n", md_error_message());
        exit(2);
    }
}

int md_fx_int(const md_fx_tensor *t, size_t i) {
    if (i >= t->numel) {
        fprintf(stderr, "fixture record %s: index %zu out of %zu\n", t->name, i, t->numel);
        exit(2);
    }
    return (int)lrintf(t->data[i]);
}

double md_fx_value(const md_fx_tensor *t, size_t i) {
    if (i >= t->numel) {
        fprintf(stderr, "fixture record %s: index %zu out of %zu\n", t->name, i, t->numel);
        exit(2);
    }
    return (double)t->data[i];
}

md_tensor md_fx_upload(md_backend *be, const md_fx_tensor *t) {
    int       one = 1;
    md_tensor out = t->ndim ? md_tbuf(be, t->ndim, t->dim) : md_tbuf(be, 1, &one);
    md_tbuf_set(be, &out, t->data);
    return out;
}

int32_t *md_fx_upload_labels(md_backend *be, const md_fx_tensor *t) {
    int32_t *host = malloc(t->numel * sizeof *host);
    void    *dev = NULL;
    if (!host || md_backend_alloc(be, t->numel * sizeof *host, &dev) != MD_OK) {
        fprintf(stderr, "labels of %s: allocation failed: %s\n", t->name, md_error_message());
        exit(2);
    }
    for (size_t i = 0; i < t->numel; i++)
        host[i] = md_fx_int(t, i);
    if (md_backend_upload(be, dev, host, t->numel * sizeof *host) != MD_OK) {
        fprintf(stderr, "labels of %s: upload failed: %s\n", t->name, md_error_message());
        exit(2);
    }
    free(host);
    return dev;
}
