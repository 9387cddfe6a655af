/* safetensors writer and validating reader. */
#include "mdenas/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/atomic_file.h"
#include "mdenas/runlog.h"

static const char *const dtype_names[] = {"F32", "F64", "I64"};
static const size_t      dtype_size[] = {4, 8, 8};

const char *md_st_dtype_name(md_st_dtype d) {
    return (unsigned)d < 3 ? dtype_names[d] : "?";
}

static size_t entry_bytes(md_st_dtype d, int ndim, const int64_t *dim) {
    size_t n = dtype_size[d];
    for (int i = 0; i < ndim; i++) n *= (size_t)dim[i];
    return n;
}

/* The checksum covers the data section, then every other metadata key and
 * value (each NUL-terminated) in order: a flipped digit in a loop position is
 * caught as surely as one in a weight. */
static uint32_t meta_crc(uint32_t crc, const char *key, const char *value) {
    crc = md_crc32c_extend(crc, key, strlen(key) + 1);
    return md_crc32c_extend(crc, value, strlen(value) + 1);
}

/* ---- writing ----------------------------------------------------------------- */

md_status md_st_write(const char *path, const md_st_entry *t, int n, const md_st_meta *meta,
                      int nmeta, size_t *bytes) {
    uint32_t crc = 0;
    size_t   total = 0;
    for (int i = 0; i < n; i++) {
        if ((unsigned)t[i].dtype > MD_ST_I64 || t[i].ndim < 0 || t[i].ndim > MD_ST_MAX_DIMS)
            return md_fail(MD_ERR_ARG, "safetensors %s: tensor '%s' has a bad dtype or rank", path,
                           t[i].name);
        size_t b = entry_bytes(t[i].dtype, t[i].ndim, t[i].dim);
        crc = md_crc32c_extend(crc, t[i].data, b);
        total += b;
    }
    for (int i = 0; i < nmeta; i++) crc = meta_crc(crc, meta[i].key, meta[i].value);
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "__metadata__");
    md_json_begin_object(&j);
    for (int i = 0; i < nmeta; i++) md_json_key(&j, meta[i].key), md_json_string(&j, meta[i].value);
    char hex[16];
    snprintf(hex, sizeof hex, "%08" PRIx32, crc);
    md_json_key(&j, "crc32c"), md_json_string(&j, hex);
    md_json_end_object(&j);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t b = entry_bytes(t[i].dtype, t[i].ndim, t[i].dim);
        md_json_key(&j, t[i].name);
        md_json_begin_object(&j);
        md_json_key(&j, "dtype"), md_json_string(&j, dtype_names[t[i].dtype]);
        md_json_key(&j, "shape");
        md_json_begin_array(&j);
        for (int k = 0; k < t[i].ndim; k++) md_json_int(&j, t[i].dim[k]);
        md_json_end_array(&j);
        md_json_key(&j, "data_offsets");
        md_json_begin_array(&j);
        md_json_int(&j, (long long)off), md_json_int(&j, (long long)(off + b));
        md_json_end_array(&j);
        md_json_end_object(&j);
        off += b;
    }
    md_json_end_object(&j);
    if (j.failed) {
        md_json_free(&j);
        return md_fail(MD_ERR_NOMEM, "safetensors %s: header", path);
    }
    /* The data section starts 8-byte aligned: pad the header with spaces. */
    size_t hlen = (j.len + 7) / 8 * 8;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    md_atomic_file a;
    md_status      s = md_atomic_open(&a, path);
    if (s != MD_OK) {
        md_json_free(&j);
        return s;
    }
    int ok = fwrite(len8, 1, 8, a.f) == 8 && fwrite(j.buf, 1, j.len, a.f) == j.len;
    for (size_t i = j.len; ok && i < hlen; i++) ok = fputc(' ', a.f) != EOF;
    md_json_free(&j);
    for (int i = 0; ok && i < n; i++) {
        size_t b = entry_bytes(t[i].dtype, t[i].ndim, t[i].dim);
        ok = fwrite(t[i].data, 1, b, a.f) == b;
    }
    if (!ok) {
        int err = errno;
        md_atomic_abort(&a);
        return md_fail(MD_ERR_IO, "cannot write %s: %s", path, strerror(err));
    }
    MD_TRY(md_atomic_commit(&a));
    if (bytes) *bytes = 8 + hlen + total;
    return MD_OK;
}

/* ---- reading ------------------------------------------------------------------ */

void md_st_free(md_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) free(f->mkey[i]), free(f->mval[i]);
    free(f->t), free(f->mkey), free(f->mval), free(f->file), free(f->path);
    memset(f, 0, sizeof *f);
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char  *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int cmp_begin(const void *a, const void *b) {
    const md_st_tensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* A JSON number that is a non-negative integer below 2^53. */
static int as_size(const md_jvalue *v, size_t *out) {
    if (!v || v->type != MD_JNUM || v->num < 0 || v->num > 9007199254740992.0 ||
        v->num != (double)(uint64_t)v->num)
        return 0;
    *out = (size_t)v->num;
    return 1;
}

static md_status parse_tensor(md_st_file *f, const char *name, const md_jvalue *v,
                              md_st_tensor *t, size_t data_len) {
    const char *p = f->path;
    if (v->type != MD_JOBJ) return md_fail(MD_ERR_DATA, "%s: tensor '%s' is not an object", p, name);
    const md_jvalue *dt = md_json_get(v, "dtype"), *sh = md_json_get(v, "shape"),
                    *off = md_json_get(v, "data_offsets");
    if (!dt || dt->type != MD_JSTR)
        return md_fail(MD_ERR_DATA, "%s: tensor '%s' has no dtype", p, name);
    int d = -1;
    for (int k = 0; k < 3; k++)
        if (!strcmp(dt->str, dtype_names[k])) d = k;
    if (d < 0)
        return md_fail(MD_ERR_DATA, "%s: tensor '%s' has dtype %s (this reader knows F32, F64, "
                                    "I64)", p, name, dt->str);
    t->dtype = (md_st_dtype)d;
    if (!sh || sh->type != MD_JARR || sh->count > MD_ST_MAX_DIMS)
        return md_fail(MD_ERR_DATA, "%s: tensor '%s' has no shape of at most %d dims", p, name,
                       MD_ST_MAX_DIMS);
    t->ndim = sh->count;
    for (int k = 0; k < sh->count; k++) {
        size_t x;
        if (!as_size(&sh->items[k], &x))
            return md_fail(MD_ERR_DATA, "%s: tensor '%s' has a bad dimension", p, name);
        t->dim[k] = (int64_t)x;
    }
    size_t b, e;
    if (!off || off->type != MD_JARR || off->count != 2 || !as_size(&off->items[0], &b) ||
        !as_size(&off->items[1], &e) || e < b || e > data_len)
        return md_fail(MD_ERR_DATA, "%s: tensor '%s' has bad data_offsets (data section is %zu "
                                    "bytes: truncated file?)", p, name, data_len);
    t->begin = b, t->bytes = e - b;
    size_t need = dtype_size[t->dtype];
    for (int k = 0; k < t->ndim; k++) {
        if (t->dim[k] && need > SIZE_MAX / (size_t)t->dim[k])
            return md_fail(MD_ERR_DATA, "%s: tensor '%s' has a shape too large to address", p, name);
        need *= (size_t)t->dim[k];
    }
    if (t->bytes != need)
        return md_fail(MD_ERR_DATA, "%s: tensor '%s' holds %zu bytes, its dtype and shape need %zu",
                       p, name, t->bytes, entry_bytes(t->dtype, t->ndim, t->dim));
    return (t->name = dup_str(name)) ? MD_OK : md_fail(MD_ERR_NOMEM, "%s", p);
}

static md_status parse(md_st_file *f) {
    const char *p = f->path;
    if (f->size < 8)
        return md_fail(MD_ERR_DATA, "%s is %zu bytes: not a safetensors file (truncated?)", p,
                       f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->file[i];
    if (hlen < 2 || hlen > f->size - 8 || hlen > ((uint64_t)100 << 20))
        return md_fail(MD_ERR_DATA, "%s: header length %" PRIu64 " does not fit a file of %zu "
                                    "bytes: not a safetensors file, or truncated", p, hlen, f->size);
    f->data_start = 8 + (size_t)hlen;
    size_t data_len = f->size - f->data_start;
    /* The format: the header starts with '{' (padding is allowed after it only).
     * A NUL would end the text early for the JSON reader, hiding what follows. */
    if (f->file[8] != '{' || memchr(f->file + 8, '\0', (size_t)hlen))
        return md_fail(MD_ERR_DATA, "%s: the header %s: not a safetensors file", p,
                       f->file[8] != '{' ? "does not start with '{'" : "holds a NUL byte");
    char  *text = malloc((size_t)hlen + 1);
    if (!text) return md_fail(MD_ERR_NOMEM, "%s: header", p);
    memcpy(text, f->file + 8, (size_t)hlen);
    text[hlen] = '\0';
    md_jvalue v;
    char      src[600];
    snprintf(src, sizeof src, "%s (header)", p);
    md_status s = md_json_parse(text, src, &v);
    free(text);
    MD_TRY(s);
    if (v.type != MD_JOBJ) {
        md_json_value_free(&v);
        return md_fail(MD_ERR_DATA, "%s: the header is not a JSON object", p);
    }
    f->t = calloc((size_t)v.count + 1, sizeof *f->t);
    f->mkey = calloc((size_t)v.count + 1, sizeof *f->mkey);
    f->mval = calloc((size_t)v.count + 1, sizeof *f->mval);
    if (!f->t || !f->mkey || !f->mval) s = md_fail(MD_ERR_NOMEM, "%s: header", p);
    for (int i = 0; i < v.count && s == MD_OK; i++) {
        const md_jvalue *it = &v.items[i];
        if (strcmp(v.keys[i], "__metadata__")) {
            s = parse_tensor(f, v.keys[i], it, &f->t[f->n], data_len);
            if (s == MD_OK) f->n++;
            continue;
        }
        if (it->type != MD_JOBJ) {
            s = md_fail(MD_ERR_DATA, "%s: __metadata__ is not an object", p);
            break;
        }
        free(f->mkey), free(f->mval);
        f->mkey = calloc((size_t)it->count + 1, sizeof *f->mkey);
        f->mval = calloc((size_t)it->count + 1, sizeof *f->mval);
        if (!f->mkey || !f->mval) s = md_fail(MD_ERR_NOMEM, "%s: metadata", p);
        for (int k = 0; k < it->count && s == MD_OK; k++) {
            if (it->items[k].type != MD_JSTR) {
                s = md_fail(MD_ERR_DATA, "%s: metadata '%s' is not a string", p, it->keys[k]);
                break;
            }
            f->mkey[k] = dup_str(it->keys[k]);
            f->mval[k] = dup_str(it->items[k].str);
            f->nmeta = k + 1;
            if (!f->mkey[k] || !f->mval[k]) s = md_fail(MD_ERR_NOMEM, "%s: metadata", p);
        }
    }
    md_json_value_free(&v);
    MD_TRY(s);
    /* The tensors must tile the data section: no gaps, no overlaps, nothing after. */
    md_st_tensor *sorted = malloc(sizeof *sorted * ((size_t)f->n + 1));
    if (!sorted) return md_fail(MD_ERR_NOMEM, "%s", p);
    memcpy(sorted, f->t, sizeof *sorted * (size_t)f->n);
    qsort(sorted, (size_t)f->n, sizeof *sorted, cmp_begin);
    size_t at = 0;
    for (int i = 0; i < f->n && s == MD_OK; i++) {
        if (sorted[i].begin != at)
            s = md_fail(MD_ERR_DATA, "%s: tensor '%s' starts at byte %zu of the data, expected %zu",
                        p, sorted[i].name, sorted[i].begin, at);
        at += sorted[i].bytes;
    }
    free(sorted);
    MD_TRY(s);
    if (at != data_len)
        return md_fail(MD_ERR_DATA, "%s: the tensors cover %zu bytes but the data section holds "
                                    "%zu (truncated or extended file)", p, at, data_len);
    const char *crc = md_st_meta_get(f, "crc32c");
    if (crc) {
        char     hex[16];
        uint32_t c = md_crc32c(f->file + f->data_start, data_len);
        for (int i = 0; i < f->nmeta; i++)
            if (strcmp(f->mkey[i], "crc32c")) c = meta_crc(c, f->mkey[i], f->mval[i]);
        snprintf(hex, sizeof hex, "%08" PRIx32, c);
        if (strcmp(hex, crc))
            return md_fail(MD_ERR_DATA, "%s: checksum mismatch (crc32c of the data and metadata "
                                        "is %s, the header says %s): the file is corrupt",
                           p, hex, crc);
    }
    return MD_OK;
}

md_status md_st_read(const char *path, md_st_file *out) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) /* before open: a FIFO would block */
        return md_fail(MD_ERR_DATA, "%s is not a regular file", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return md_fail(MD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    md_status s = MD_OK;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode))
        s = md_fail(MD_ERR_DATA, "%s is not a regular file", path);
    out->path = dup_str(path);
    out->size = s == MD_OK ? (size_t)st.st_size : 0;
    out->file = malloc(out->size + 1);
    if (s == MD_OK && (!out->path || !out->file)) s = md_fail(MD_ERR_NOMEM, "reading %s", path);
    if (s == MD_OK && fread(out->file, 1, out->size, fp) != out->size)
        s = md_fail(MD_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    fclose(fp);
    if (s == MD_OK) s = parse(out);
    if (s != MD_OK) md_st_free(out);
    return s;
}

md_status md_st_read_mem(const char *name, const void *data, size_t size, md_st_file *out) {
    memset(out, 0, sizeof *out);
    if (!name) name = "<memory>";
    out->path = dup_str(name);
    out->size = size;
    out->file = malloc(size + 1);
    md_status s = out->path && out->file ? MD_OK : md_fail(MD_ERR_NOMEM, "reading %s", name);
    if (s == MD_OK) {
        if (size) memcpy(out->file, data, size);
        s = parse(out);
    }
    if (s != MD_OK) md_st_free(out);
    return s;
}

const md_st_tensor *md_st_find(const md_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const void *md_st_data(const md_st_file *f, const md_st_tensor *t) {
    return f->file + f->data_start + t->begin;
}

const char *md_st_meta_get(const md_st_file *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->mkey[i], key)) return f->mval[i];
    return NULL;
}
