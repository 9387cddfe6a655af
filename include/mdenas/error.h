/* Errors: every library call that can fail returns md_status and records one
 * message (file:line, the operation, what was wrong) in a thread-local slot.
 * The application prints it and aborts the MPI job; tests inspect it. */
#ifndef MDENAS_ERROR_H
#define MDENAS_ERROR_H

typedef enum {
    MD_OK = 0,
    MD_ERR_ARG,     /* bad argument or shape from the caller */
    MD_ERR_NOMEM,   /* allocation failed */
    MD_ERR_IO,      /* file or system call failed */
    MD_ERR_BACKEND, /* the compute library (oneDNN, cuDNN) refused */
    MD_ERR_DATA     /* malformed input file */
} md_status;

/* Record an error; returns `status` so callers can `return md_fail(...)`. */
md_status md_fail_at(const char *file, int line, md_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define md_fail(status, ...) md_fail_at(__FILE__, __LINE__, (status), __VA_ARGS__)

const char *md_error_message(void); /* last recorded message, "" if none */
void        md_error_clear(void);
/* Put back a message saved earlier (after cleanup that may have recorded others). */
void        md_error_restore(const char *msg);
const char *md_status_name(md_status s);

/* Propagate a failing status unchanged. */
#define MD_TRY(expr)                                                                               \
    do {                                                                                           \
        md_status md_try_s_ = (expr);                                                              \
        if (md_try_s_ != MD_OK) return md_try_s_;                                                  \
    } while (0)

#endif
