/* Small helpers: growing text, paths, whole files, UTF-8, the clock. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mdenas/runlog.h"
#include "prep.h"

static int reserve(prep_buf *b, size_t more) {
    if (b->failed) return -1;
    if (b->len + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->failed = 1;
        return -1;
    }
    b->s = s, b->cap = cap;
    return 0;
}

void prep_buf_put(prep_buf *b, const char *s, size_t n) {
    if (reserve(b, n)) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void prep_buf_add(prep_buf *b, const char *fmt, ...) {
    char    small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        prep_buf_put(b, small, (size_t)n);
        return;
    }
    if (reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void prep_buf_tsv(prep_buf *b, const char *s) {
    for (const char *p = s; *p; p++) {
        const char *esc = *p == '\t'   ? "\\t"
                          : *p == '\n' ? "\\n"
                          : *p == '\r' ? "\\r"
                          : *p == '\\' ? "\\\\"
                                       : NULL;
        if (esc)
            prep_buf_put(b, esc, 2);
        else
            prep_buf_put(b, p, 1);
    }
}

void prep_buf_free(prep_buf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

char *prep_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char  *s = malloc(na + nb + 2);
    if (!s) return NULL;
    memcpy(s, a, na);
    s[na] = '/';
    memcpy(s + na + 1, b, nb + 1);
    return s;
}

md_status prep_write_file(const char *path, const void *data, size_t len) {
    return md_atomic_write(path, data, len);
}

md_status prep_read_file(const char *path, char **text, size_t *len) {
    *text = NULL, *len = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return md_fail(MD_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return md_fail(MD_ERR_IO, "'%s' is not a regular file", path);
    }
    if ((unsigned long long)st.st_size > PREP_MAX_FILE_BYTES) {
        close(fd);
        return md_fail(MD_ERR_DATA, "'%s' is %lld bytes, too large", path, (long long)st.st_size);
    }
    size_t cap = (size_t)st.st_size, got = 0;
    char  *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return md_fail(MD_ERR_NOMEM, "reading '%s': %zu bytes", path, cap);
    }
    while (got < cap) {
        ssize_t k = read(fd, buf + got, cap - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (k == 0) break;
            md_status s = md_fail(MD_ERR_IO, "reading '%s': %s", path, strerror(errno));
            free(buf);
            close(fd);
            return s;
        }
        got += (size_t)k;
    }
    close(fd);
    buf[got] = '\0';
    *text = buf, *len = got;
    return MD_OK;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0. */
static int utf8_len(const unsigned char *p) {
    if (p[0] < 0x80) return 1;
    int n = p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC2 ? 2 : 0;
    if (p[0] >= 0xF5 || n == 0) return 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    unsigned cp = n == 2   ? (p[0] & 0x1Fu) << 6 | (p[1] & 0x3Fu)
                  : n == 3 ? (p[0] & 0x0Fu) << 12 | (p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu)
                           : (p[0] & 0x07u) << 18 | (p[1] & 0x3Fu) << 12 | (p[2] & 0x3Fu) << 6 |
                                 (p[3] & 0x3Fu);
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

char *prep_utf8_copy(const char *s) {
    char *out = strdup(s);
    if (!out) return NULL;
    for (unsigned char *p = (unsigned char *)out; *p;) {
        int n = utf8_len(p);
        if (n == 0)
            *p++ = '?';
        else
            p += n;
    }
    return out;
}

double prep_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

void prep_json_int(md_json *j, const char *key, long long v) {
    md_json_key(j, key);
    md_json_int(j, v);
}

void prep_json_text(md_json *j, const char *s) {
    char *u = prep_utf8_copy(s);
    md_json_string(j, u ? u : "?");
    free(u);
}
