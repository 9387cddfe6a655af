#include "mdenas/runlog.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/atomic_file.h"

#define JSON_MAX_DEPTH ((int)(sizeof(((md_json *)0)->state) / sizeof(int)))

/* state[d]: what was last written at level d (LEVEL_STATUS bits), and whether
 * level d is an object. */
enum { LEVEL_EMPTY = 0, LEVEL_VALUE = 1, LEVEL_KEY = 2, LEVEL_STATUS = 3, LEVEL_OBJECT = 4 };
enum { FAIL_NOMEM = 1, FAIL_NESTING = 2 };

void md_json_init(md_json *j) {
    memset(j, 0, sizeof *j);
}

void md_json_free(md_json *j) {
    free(j->buf);
    memset(j, 0, sizeof *j);
}

void md_json_reset(md_json *j) {
    int    indent = j->indent;
    char  *buf = j->buf;
    size_t cap = j->cap;
    memset(j, 0, sizeof *j);
    j->buf = buf;
    j->cap = cap;
    j->indent = indent;
    if (buf) buf[0] = '\0';
}

static void put(md_json *j, const char *s, size_t n) {
    if (j->failed == FAIL_NOMEM) return;
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (cap < j->len + n + 1)
            cap *= 2;
        char *b = realloc(j->buf, cap);
        if (!b) {
            j->failed = FAIL_NOMEM;
            return;
        }
        j->buf = b;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

static void puts_(md_json *j, const char *s) {
    put(j, s, strlen(s));
}

static void newline_indent(md_json *j, int depth) {
    static const char spaces[] = "                                ";
    put(j, "\n", 1);
    for (int n = depth * j->indent; n > 0; n -= 32)
        put(j, spaces, n < 32 ? (size_t)n : 32);
}

static void set_status(md_json *j, int status) {
    j->state[j->depth] = (j->state[j->depth] & LEVEL_OBJECT) | status;
}

/* Separator before a value or a key at the current level; flags a key outside
 * an object, or a value in an object without its key. */
static void before_item(md_json *j, int is_key) {
    int st = j->state[j->depth] & LEVEL_STATUS, in_object = j->state[j->depth] & LEVEL_OBJECT;
    if (is_key ? !in_object || st == LEVEL_KEY : in_object && st != LEVEL_KEY)
        j->failed = FAIL_NESTING;
    if (st == LEVEL_KEY) return;
    if (j->depth == 0) {
        if (st == LEVEL_VALUE) put(j, "\n", 1); /* the next JSON Lines record */
        return;
    }
    if (st == LEVEL_VALUE) put(j, ",", 1);
    if (j->indent > 0) newline_indent(j, j->depth);
}

static void after_value(md_json *j) {
    set_status(j, LEVEL_VALUE);
}

static void begin(md_json *j, int object) {
    before_item(j, 0);
    put(j, object ? "{" : "[", 1);
    if (j->depth + 1 >= JSON_MAX_DEPTH) {
        j->failed = FAIL_NESTING;
        return;
    }
    j->depth++;
    j->state[j->depth] = object ? LEVEL_OBJECT : 0;
}

static void end(md_json *j, int object) {
    int st = j->state[j->depth];
    if (j->depth == 0 || (st & LEVEL_STATUS) == LEVEL_KEY || !(st & LEVEL_OBJECT) != !object) {
        j->failed = FAIL_NESTING; /* unbalanced, mismatched, or a key without its value */
        return;
    }
    j->depth--;
    if ((st & LEVEL_STATUS) != LEVEL_EMPTY && j->indent > 0) newline_indent(j, j->depth);
    put(j, object ? "}" : "]", 1);
    after_value(j);
}

void md_json_begin_object(md_json *j) {
    begin(j, 1);
}
void md_json_end_object(md_json *j) {
    end(j, 1);
}
void md_json_begin_array(md_json *j) {
    begin(j, 0);
}
void md_json_end_array(md_json *j) {
    end(j, 0);
}

static void put_escaped(md_json *j, const char *s) {
    static const char hex[] = "0123456789abcdef";
    put(j, "\"", 1);
    const char *run = s; /* bytes copied as they are, UTF-8 included */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(j, run, (size_t)(s - run));
        run = s + 1;
        switch (c) {
        case '"':
            puts_(j, "\\\"");
            break;
        case '\\':
            puts_(j, "\\\\");
            break;
        case '\b':
            puts_(j, "\\b");
            break;
        case '\f':
            puts_(j, "\\f");
            break;
        case '\n':
            puts_(j, "\\n");
            break;
        case '\r':
            puts_(j, "\\r");
            break;
        case '\t':
            puts_(j, "\\t");
            break;
        default: {
            char u[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], '\0'};
            puts_(j, u);
        }
        }
    }
    put(j, run, (size_t)(s - run));
    put(j, "\"", 1);
}

void md_json_key(md_json *j, const char *key) {
    before_item(j, 1);
    put_escaped(j, key ? key : "");
    puts_(j, j->indent > 0 ? ": " : ":");
    set_status(j, LEVEL_KEY);
}

void md_json_string(md_json *j, const char *s) {
    if (!s) {
        md_json_null(j);
        return;
    }
    before_item(j, 0);
    put_escaped(j, s);
    after_value(j);
}

void md_json_int(md_json *j, long long v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    before_item(j, 0);
    puts_(j, b);
    after_value(j);
}

void md_json_double(md_json *j, double v) {
    if (!isfinite(v)) {
        md_json_null(j);
        return;
    }
    char b[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, v);
        if (strtod(b, NULL) == v) break;
    }
    before_item(j, 0);
    puts_(j, b);
    after_value(j);
}

void md_json_bool(md_json *j, int v) {
    before_item(j, 0);
    puts_(j, v ? "true" : "false");
    after_value(j);
}

void md_json_null(md_json *j) {
    before_item(j, 0);
    puts_(j, "null");
    after_value(j);
}

void md_json_value(md_json *j, const md_jvalue *v) {
    switch (v->type) {
    case MD_JNULL:
        md_json_null(j);
        break;
    case MD_JBOOL:
        md_json_bool(j, v->num != 0.0);
        break;
    case MD_JNUM:
        /* Integers read from text go back out as integers, 2^53 and beyond included. */
        if (v->num == floor(v->num) && fabs(v->num) <= 9223372036854775807.0 &&
            v->num != 9223372036854775808.0 && !(v->num == 0 && signbit(v->num)))
            md_json_int(j, (long long)v->num);
        else
            md_json_double(j, v->num);
        break;
    case MD_JSTR:
        md_json_string(j, v->str);
        break;
    case MD_JARR:
        md_json_begin_array(j);
        for (int i = 0; i < v->count; i++)
            md_json_value(j, &v->items[i]);
        md_json_end_array(j);
        break;
    case MD_JOBJ:
        md_json_begin_object(j);
        for (int i = 0; i < v->count; i++) {
            md_json_key(j, v->keys[i]);
            md_json_value(j, &v->items[i]);
        }
        md_json_end_object(j);
        break;
    }
}

static md_status check_complete(const md_json *j, const char *path) {
    if (j->failed == FAIL_NOMEM)
        return md_fail(MD_ERR_NOMEM, "json: out of memory building the text for '%s'", path);
    if (j->failed)
        return md_fail(MD_ERR_ARG,
                       "json: text for '%s' is malformed (a close that does not match its "
                       "open, a key/value out of place, or nesting deeper than %d)",
                       path, JSON_MAX_DEPTH - 1);
    if (j->depth != 0)
        return md_fail(MD_ERR_ARG, "json: text for '%s' has %d unclosed object(s)/array(s)", path,
                       j->depth);
    return MD_OK;
}

md_status md_json_write_file(const md_json *j, const char *path) {
    MD_TRY(check_complete(j, path));
    return md_atomic_write(path, j->buf ? j->buf : "", j->len);
}

md_status md_json_append_file(const md_json *j, const char *path) {
    MD_TRY(check_complete(j, path));
    if (j->len == 0) return md_fail(MD_ERR_ARG, "json: empty line for '%s'", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return md_fail(MD_ERR_IO, "cannot open '%s' to append: %s", path, strerror(errno));
    /* One writev() per line keeps lines whole even if the run dies mid-way. */
    struct iovec iov[2] = {{j->buf, j->len}, {"\n", 1}};
    ssize_t      w = writev(fd, iov, 2);
    int          err = errno;
    md_status    s = MD_OK;
    if (w != (ssize_t)(j->len + 1))
        s = md_fail(MD_ERR_IO, "appending to '%s' failed: %s", path,
                    w < 0 ? strerror(err) : "short write (disk full?)");
    if (close(fd) != 0 && s == MD_OK)
        s = md_fail(MD_ERR_IO, "closing '%s' failed: %s", path, strerror(errno));
    return s;
}
