#include "mdenas/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char md_err_buf[1024];

md_status md_fail_at(const char *file, int line, md_status status, const char *fmt, ...) {
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(md_err_buf, sizeof md_err_buf, "%s:%d: ", base, line);
    if (n < 0 || (size_t)n >= sizeof md_err_buf) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(md_err_buf + n, sizeof md_err_buf - (size_t)n, fmt, ap);
    va_end(ap);
    return status;
}

const char *md_error_message(void) {
    return md_err_buf;
}

void md_error_restore(const char *msg) {
    snprintf(md_err_buf, sizeof md_err_buf, "%s", msg);
}

void md_error_clear(void) {
    md_err_buf[0] = '\0';
}

const char *md_status_name(md_status s) {
    switch (s) {
    case MD_OK: return "ok";
    case MD_ERR_ARG: return "invalid argument";
    case MD_ERR_NOMEM: return "out of memory";
    case MD_ERR_IO: return "I/O error";
    case MD_ERR_BACKEND: return "backend error";
    case MD_ERR_DATA: return "malformed data";
    }
    return "unknown error";
}
